#!/usr/bin/env bash
# torchpool-serve's own instructions per infer request, counted by valgrind's callgrind in the
# server process (its workers are not counted): the counters are zeroed once the server is
# ready, N requests of one real Fashion-MNIST image are sent by 8 connections, and the
# count is dumped. Instruction counts do not drift with the machine's load as timings do, so
# this is the figure to compare before and after a change to the server's request path.
# Batching is off (--max-batch 1), so each request is one pool task, whatever the timing
# under valgrind. The floor is counted the same way: torchpool-bench-http-floor, an HTTP
# server of the same design with no model and no pool, answering the server's own responses.
# Then the server with HTTP on a thread of its own (--http-threads 1), counted per thread.
# Last, a large binary request (256 images, 784 KiB, N/10 of them), by the server alone: what
# the body's bytes cost on their way from the socket to a worker (compare builds with SERVE).
#
# Usage: [SERVE=PATH] bench/serve_instructions.sh [BUILD_DIR] [N]   (default: build/release 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/serve_common.sh

build=${1:-build/release}
n=${2:-2000}
serve=${SERVE:-$build/apps/torchpool-serve}  # SERVE=PATH: another build of the server, to compare
client="$build/bench/torchpool-bench-serve-client"
floor="$build/bench/torchpool-bench-http-floor"
require_built serve_instructions.sh "$serve" "$client" "$build/bench/torchpool-bench-serve-bodies" "$floor"
command -v valgrind >/dev/null || { echo "serve_instructions.sh: valgrind is missing" >&2; exit 1; }

work=${SERVE_INSTRUCTIONS_KEEP:-$(mktemp -d)}
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; [ -n "${SERVE_INSTRUCTIONS_KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

json_body="$work/sample.json"
plain_sample "$build/models/fashion_mnist.sample.json" "$json_body"
header_length=$("$build/bench/torchpool-bench-serve-bodies" "$json_body" "$work/binary.body")
large_length=$("$build/bench/torchpool-bench-serve-bodies" "$json_body" "$work/large.body" 256)
large_n=$(( (n + 9) / 10 ))

start_server "$work/server.out" 120 \
    valgrind --tool=callgrind --callgrind-out-file="$work/serve.%p" "$serve" --port 0 --max-batch 1
# The server's own answers, for the floor to send back (before the counts start).
curl -s -o "$work/json.response" -H "Content-Type: application/json" --data-binary "@$json_body" "$url"
curl -s -o "$work/binary.response" -H "Content-Type: application/octet-stream" \
    -H "Inference-Header-Content-Length: $header_length" --data-binary "@$work/binary.body" "$url"
curl -s -o "$work/large.response" -H "Content-Type: application/octet-stream" \
    -H "Inference-Header-Content-Length: $large_length" --data-binary "@$work/large.body" "$url"

measure() {  # FORMAT CLIENT_ARGS...: zeroes the counters, sends N requests (large: N/10), dumps the counts
    local format=$1 requests=$n
    shift
    [ "$format" = large ] && requests=$large_n
    callgrind_control -z "$server_pid" >/dev/null 2>&1
    "$client" "$url" "$@" --connections 8 --requests "$requests" >"$work/client.out"
    grep -q "non-200 0 broken 0" "$work/client.out" || { cat "$work/client.out" >&2; exit 1; }
    callgrind_control -d "$format" "$server_pid" >/dev/null 2>&1
}

count() {  # FORMAT CLIENT_ARGS...: instructions for N requests
    measure "$@"
    local dump
    dump=$(ls -t "$work"/serve.* "$work"/floor-* 2>/dev/null | grep -v '\.out$' | head -1)
    sed -n 's/^summary: *//p; s/^totals: *//p' "$dump" | head -1
}

json=$(count json "$json_body")
binary=$(count binary "$work/binary.body" --header-length "$header_length")
large=$(count large "$work/large.body" --header-length "$large_length")
[ -n "$json" ] && [ -n "$binary" ] && [ -n "$large" ] || { echo "serve_instructions.sh: a count failed" >&2; exit 1; }
kill -TERM "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=

floor_count() {  # FORMAT CLIENT_ARGS...: sets floor_total, the floor's instructions for N requests
    local format=$1
    shift
    start_server "$work/floor-$format.out" 60 \
        valgrind --tool=callgrind --callgrind-out-file="$work/floor-$format.%p" "$floor" \
        "$work/$format.response" --port 0
    floor_total=$(count "$format" "$@")
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    [ -n "$floor_total" ] || { echo "serve_instructions.sh: the floor's $format count failed" >&2; exit 1; }
}
floor_count json "$json_body"
floor_json=$floor_total
floor_count binary "$work/binary.body" --header-length "$header_length"
floor_binary=$floor_total
# The same requests with HTTP on a thread of its own (--http-threads 1), counted per thread:
# what the supervising thread (pools, batcher) and the HTTP thread (sessions, parsing,
# responses) each pay for a request.
per_thread() {  # FORMAT CLIENT_ARGS...: the instructions of each thread per request
    measure "$@"
    local main http
    main=$(sed -n 's/^totals: *//p; s/^summary: *//p' "$(ls -t "$work"/threads.*-01 | head -1)" | head -1)
    http=$(sed -n 's/^totals: *//p; s/^summary: *//p' "$(ls -t "$work"/threads.*-02 | head -1)" | head -1)
    echo "supervising thread $((main / n)), HTTP thread $((http / n))"
}
start_server "$work/threads.out" 120 \
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$work/threads.%p" \
    "$serve" --port 0 --max-batch 1 --http-threads 1
threads_json=$(per_thread json "$json_body")
threads_binary=$(per_thread binary "$work/binary.body" --header-length "$header_length")
kill -TERM "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", a / b }'; }
echo "instructions per infer request (one image, batching off, $n requests each):"
echo "  JSON:   server $((json / n)), floor $((floor_json / n)): $(ratio "$json" "$floor_json") the floor"
echo "  binary: server $((binary / n)), floor $((floor_binary / n)): $(ratio "$binary" "$floor_binary") the floor"
echo "with --http-threads 1, per request:"
echo "  JSON:   $threads_json"
echo "  binary: $threads_binary"
echo "a large binary request (256 images, 784 KiB; batching off, $large_n requests):"
echo "  server $((large / large_n))"
