#!/usr/bin/env bash
# torchpool-serve's own instructions per infer request, counted by valgrind's callgrind in the
# server process (its workers are not counted): the counters are zeroed once the server is
# ready, N requests of one real Fashion-MNIST image are sent by 8 connections, and the
# count is dumped. Instruction counts do not drift with the machine's load as timings do, so
# this is the figure to compare before and after a change to the server's request path.
# Batching is off (--max-batch 1), so each request is one pool task, whatever the timing
# under valgrind.
#
# Usage: bench/serve_instructions.sh [BUILD_DIR] [N]   (default: build/release 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/serve_common.sh

build=${1:-build/release}
n=${2:-2000}
serve="$build/apps/torchpool-serve"
client="$build/bench/torchpool-bench-serve-client"
require_built serve_instructions.sh "$serve" "$client" "$build/bench/torchpool-bench-serve-bodies"
command -v valgrind >/dev/null || { echo "serve_instructions.sh: valgrind is missing" >&2; exit 1; }

work=${SERVE_INSTRUCTIONS_KEEP:-$(mktemp -d)}
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; [ -n "${SERVE_INSTRUCTIONS_KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

json_body="$work/sample.json"
plain_sample "$build/models/fashion_mnist.sample.json" "$json_body"
header_length=$("$build/bench/torchpool-bench-serve-bodies" "$json_body" "$work/binary.body")

start_server "$work/server.out" 120 \
    valgrind --tool=callgrind --callgrind-out-file="$work/serve.%p" "$serve" --port 0 --max-batch 1

count() {  # FORMAT CLIENT_ARGS...: instructions for N requests
    local format=$1
    shift
    callgrind_control -z "$server_pid" >/dev/null 2>&1
    "$client" "$url" "$@" --connections 8 --requests "$n" >"$work/client.out"
    grep -q "non-200 0 broken 0" "$work/client.out" || { cat "$work/client.out" >&2; exit 1; }
    callgrind_control -d "$format" "$server_pid" >/dev/null 2>&1
    local dump
    dump=$(ls -t "$work"/serve.* | head -1)
    sed -n 's/^summary: *//p; s/^totals: *//p' "$dump" | head -1
}

json=$(count json "$json_body")
binary=$(count binary "$work/binary.body" --header-length "$header_length")
echo "server instructions per infer request (one image, batching off, $n requests each):"
echo "  JSON:   $((json / n))"
echo "  binary: $((binary / n))"
