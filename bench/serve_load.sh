#!/usr/bin/env bash
# Load on torchpool-serve with wrk over loopback: batch-1 infer requests of one real
# Fashion-MNIST image, JSON and binary (Triton's extension), batching off and on, at several
# connection counts; beside the ceiling measured in the same run, the model's own batch-1
# forward in a tight in-process loop on one thread (bench/model_ceiling.cpp), and the floor: a
# minimal HTTP server of the same design with no model and no pool, answering the server's
# own responses (bench/http_floor.cpp), the most a server of this design can do here. Then the
# same floor with the hop every process-pool server pays (--hop 2): each request waits for a
# round trip over a pipe to one of 2 child processes that do nothing else (requests that wait
# go together, up to 32), the most a server with worker processes can do here (/hop). The
# client shares the machine with the server and its workers.
#
# With batching on, it also measures latency under a steady load: the unloaded p50 (one
# connection, one request at a time), then p99 with requests sent at half the saturation rate
# (the best images/s wrk reached above) on a fixed schedule by torchpool-bench-serve-client,
# which counts each request's latency from when it was due (no coordinated omission). That
# load is sent five times and the median p99 is the figure, since one run's p99 swings widely
# on a shared VM.
#
# The Python anchor (../shared/anchors/python-oip, or ANCHOR=DIR: aiohttp and a
# ProcessPoolExecutor of 2 workers, one forward per request) runs under the same client when
# Debian's python3-torch and python3-aiohttp are installed (they are not torchpool
# dependencies); each JSON row then gives its rate against the anchor's (/anchor).
#
# Batching on is measured with HTTP on the supervising thread (--http-threads 0, as before
# the server had HTTP threads) and with one HTTP thread of its own (HTTP_THREADS="0 1" by
# default). At 128 connections each row also says where the 2 cores went: the server's
# threads, its workers and the client, in CPU time over the run.
#
# Usage: bench/serve_load.sh [BUILD_DIR] [SECONDS]   (default: build/release 5)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/serve_common.sh

build=${1:-build/release}
seconds=${2:-5}
serve="$build/apps/torchpool-serve"
ceiling="$build/bench/torchpool-bench-model-ceiling"
model="$build/models/fashion_mnist.pt"
client="$build/bench/torchpool-bench-serve-client"
floor="$build/bench/torchpool-bench-http-floor"
require_built serve_load.sh "$serve" "$ceiling" "$model" "$build/bench/torchpool-bench-serve-bodies" "$client" "$floor"
command -v wrk >/dev/null || { echo "serve_load.sh: wrk is missing (scripts/setup.sh installs it)" >&2; exit 1; }

work=$(mktemp -d)
# wrk's latency text (e.g. 812.00us, 1.20ms, 1.02s) in milliseconds.
ms() { awk -v t="$1" 'BEGIN { v = t + 0; if (t ~ /us$/) v /= 1000; else if (t ~ /[0-9]s$/) v *= 1000; print v }'; }
# The value after NAME in a line of torchpool-bench-serve-client's output.
field() { echo "$1" | sed -n "s/.* $2 \([0-9.]*\).*/\1/p"; }
latency_lines=()
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# The request bodies: the model's sample (one real test image) as JSON, and the same image as
# binary data after a JSON header.
json_body="$work/sample.json"
plain_sample "$build/models/fashion_mnist.sample.json" "$json_body"
"$build/bench/torchpool-bench-serve-bodies" "$json_body" "$work/binary.body" >"$work/binary.length"
cp "$json_body" "$work/json.body"
cat >"$work/json.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$json_body", "rb"); wrk.body = f:read("*a"); f:close()
LUA
cat >"$work/binary.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "$(cat "$work/binary.length")"
local f = io.open("$work/binary.body", "rb"); wrk.body = f:read("*a"); f:close()
LUA

echo "== ceiling (same run)"
"$ceiling" "$model" 3 | tee "$work/ceiling"
ceiling_rate=$(sed -n 's/.*batch 1, 1 thread: \([0-9]*\) images.*/\1/p' "$work/ceiling")

# The floor: an HTTP server of the same design with no model (bench/http_floor.cpp), under the
# same client, answering each format with the very response the server gives for it.
start_server "$work/server.out" 60 "$serve" --port 0
curl -s -o "$work/json.response" -H "Content-Type: application/json" --data-binary "@$work/json.body" "$url"
curl -s -o "$work/binary.response" -H "Content-Type: application/octet-stream" \
    -H "Inference-Header-Content-Length: $(cat "$work/binary.length")" --data-binary "@$work/binary.body" "$url"
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=
declare -A floor_rate hop_rate
printf "\n%-34s %6s %10s %9s %9s\n" "floor (no model, no pool)" "conns" "requests/s" "p50 ms" "p99 ms"
for hop in "" "--hop 2"; do
    for format in json binary; do
        # shellcheck disable=SC2086  # $hop is an option and its value, or nothing
        start_server "$work/floor.out" 10 "$floor" "$work/$format.response" --port 0 $hop
        for conns in 1 8 32 128; do
            out=$(wrk -t1 -c"$conns" -d"${seconds}s" --latency -s "$work/$format.lua" "$url")
            rate=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
            if [ -z "$hop" ]; then
                floor_rate[$format-$conns]=$rate
                name="floor $format ($(wc -c <"$work/$format.response") B answers)"
            else
                hop_rate[$format-$conns]=$rate
                name="floor $format + worker hop"
            fi
            printf "%-34s %6d %10.0f %9.2f %9.2f\n" "$name" \
                "$conns" "$rate" "$(ms "$(echo "$out" | awk '$1=="50%"{print $2}')")" \
                "$(ms "$(echo "$out" | awk '$1=="99%"{print $2}')")"
        done
        kill -TERM "$server_pid"
        wait "$server_pid" || true
        server_pid=
    done
done

# The Python anchor, under the same client, with the same image (its input is [N, 784]).
anchor=${ANCHOR:-../shared/anchors/python-oip}
declare -A anchor_rate
if [ -f "$anchor/oip_server.py" ] && /usr/bin/python3 -c "import torch, aiohttp" 2>/dev/null; then
    sed -e 's/"name": "images"/"name": "input"/' -e 's/"shape": \[1, 1, 28, 28\]/"shape": [1, 784]/' \
        "$json_body" >"$work/anchor.body"
    sed "s|$json_body|$work/anchor.body|" "$work/json.lua" >"$work/anchor.lua"
    anchor_port=$(( (RANDOM % 20000) + 30000 ))
    /usr/bin/python3 "$anchor/oip_server.py" --port "$anchor_port" --workers 2 --model "$model" \
        --start-method forkserver >"$work/anchor.out" 2>&1 &
    server_pid=$!
    for _ in $(seq 600); do
        grep -q '"server": "ready"' "$work/anchor.out" && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/anchor.out" >&2; exit 1; }
        sleep 0.1  # waiting for the anchor's workers to load the model
    done
    printf "\n%-34s %6s %10s %9s %9s\n" "Python anchor (aiohttp + 2 processes)" "conns" "images/s" "p50 ms" "p99 ms"
    for conns in 1 8 32 128; do
        out=$(wrk -t1 -c"$conns" -d"${seconds}s" --latency -s "$work/anchor.lua" \
            "http://127.0.0.1:$anchor_port/v2/models/fashion/infer")
        rate=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
        errors=$(echo "$out" | sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p')
        anchor_rate[$conns]=$rate
        printf "%-34s %6d %10.0f %9.2f %9.2f%s\n" "anchor json" "$conns" "$rate" \
            "$(ms "$(echo "$out" | awk '$1=="50%"{print $2}')")" \
            "$(ms "$(echo "$out" | awk '$1=="99%"{print $2}')")" "${errors:+  ($errors non-2xx)}"
    done
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=
else
    printf "\n(no Python anchor: it needs %s/oip_server.py and Debian's python3-torch and python3-aiohttp)\n" "$anchor"
fi

# CPU time (user + system, in clock ticks) of the processes and threads named by /proc paths.
ticks() { cat "$@" 2>/dev/null | awk '{ sub(/.*\) /, ""); t += $12 + $13 } END { print t + 0 }'; }
# Where the cores went while COMMAND ran: the server's supervising thread, its HTTP threads,
# its workers (its children) and the client (COMMAND itself).
cpu_split() {
    local threads=(/proc/"$server_pid"/task/*) http=() children
    local main=/proc/$server_pid/task/$server_pid/stat
    for t in "${threads[@]}"; do
        grep -q "tp-serve-http" "$t/comm" 2>/dev/null && http+=("$t/stat")
    done
    children=$(pgrep -P "$server_pid" | sed 's|.*|/proc/&/stat|' | tr '\n' ' ')
    local m0 h0 w0 m1 h1 w1 client k0 k1
    # The machine's softirq time (loopback's packets, charged to no process) and idle time.
    k0=$(head -1 /proc/stat)
    m0=$(ticks "$main"); h0=$(ticks "${http[@]}" /dev/null); w0=$(ticks $children)
    client=$( { "$@" >"$work/split.out"; times; } | tail -1 | awk '{ split($1, u, /[ms]/); split($2, s, /[ms]/); print (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * 100 }')
    m1=$(ticks "$main"); h1=$(ticks "${http[@]}" /dev/null); w1=$(ticks $children)
    k1=$(head -1 /proc/stat)
    awk -v m=$((m1 - m0)) -v h=$((h1 - h0)) -v w=$((w1 - w0)) -v c="$client" -v k0="$k0" -v k1="$k1" 'BEGIN {
        split(k0, a); split(k1, b)
        for (i = 2; i <= 9; i++) total += b[i] - a[i]
        soft = b[7] + b[8] - a[7] - a[8]; idle = b[5] + b[6] - a[5] - a[6]
        printf "      cores: supervising thread %.0f%%, HTTP threads %.0f%%, workers %.0f%%, client %.0f%%, interrupts (softirq) %.0f%%, idle %.0f%%\n",
            100 * m / total, 100 * h / total, 100 * w / total, 100 * c / total, 100 * soft / total, 100 * idle / total }'
}

# tail_at FORMAT RATE: the unloaded p50 at $url (one connection, one request at a time), then
# requests at RATE on a fixed schedule over 64 connections, five times: their p99s, the
# median, and its ratio to the unloaded p50.
tail_at() {
    local format=$1 rate=$2 header=() unloaded loaded p99s=() sorted median p50
    [ "$format" = binary ] && header=(--header-length "$(cat "$work/binary.length")")
    unloaded=$("$client" "$url" "$work/$format.body" "${header[@]}" --connections 1 --requests 2000)
    # The p99 of one run swings 10x on this shared VM (a run that meets a busy neighbour
    # backs the queue up), so the load is sent five times and the median is the figure.
    for _ in 1 2 3 4 5; do
        loaded=$("$client" "$url" "$work/$format.body" "${header[@]}" --connections 64 \
            --rate "$rate" --seconds "$seconds")
        echo "$loaded" | awk -v f="$format" -v r="$rate" \
            '$4 != 0 || $6 != 0 { print f " at " r "/s: " $4 " non-200 answers, " $6 " connections broken" > "/dev/stderr" }'
        p99s+=("$(field "$loaded" p99_ms)")
    done
    sorted=$(printf "%s\n" "${p99s[@]}" | sort -g | tr '\n' ' ')
    median=$(echo "$sorted" | awk '{ print $3 }')
    p50=$(field "$unloaded" p50_ms)
    printf "unloaded p50 %.3f ms; at %s/s, p99 of 5 runs: %s ms; median %.3f ms = %.1fx" \
        "$p50" "$rate" "$sorted" "$median" "$(awk -v a="$median" -v b="$p50" 'BEGIN { print a / b }')"
}
floor_rates=()

printf "\n%-34s %6s %10s %9s %9s %9s %7s %7s %7s\n" "configuration" "conns" "images/s" "p50 ms" "p99 ms" "/ceiling" "/floor" "/hop" "/anchor"
configurations=("--max-batch 1")
for threads in ${HTTP_THREADS:-0 1}; do
    configurations+=("--max-batch 32 --batch-delay-us 500 --http-threads $threads")
done
# A row's name: "batch 1" or "batch 32 http N", then the format.
label() {
    case "$1" in
        "--max-batch 1") echo "batch 1" ;;
        *) echo "batch 32 http ${1##* }" ;;
    esac
}
for batching in "${configurations[@]}"; do
    # shellcheck disable=SC2086  # $batching is several options
    start_server "$work/server.out" 60 "$serve" --port 0 $batching
    for format in json binary; do
        best=0
        for conns in 1 8 32 128; do
            split=
            if [ "$conns" = 128 ]; then
                split=$(cpu_split wrk -t1 -c"$conns" -d"${seconds}s" --latency -s "$work/$format.lua" "$url")
                out=$(cat "$work/split.out")
            else
                out=$(wrk -t1 -c"$conns" -d"${seconds}s" --latency -s "$work/$format.lua" "$url")
            fi
            rate=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
            p50=$(echo "$out" | awk '$1=="50%"{print $2}')
            p99=$(echo "$out" | awk '$1=="99%"{print $2}')
            errors=$(echo "$out" | sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p')
            to_anchor=-
            [ "$format" = json ] && [ -n "${anchor_rate[$conns]:-}" ] &&
                to_anchor=$(awk -v a="$rate" -v b="${anchor_rate[$conns]}" 'BEGIN { printf "%.1fx", a / b }')
            printf "%-34s %6d %10.0f %9.2f %9.2f %8.2fx %6.2fx %6.2fx %7s%s\n" "$(label "$batching") $format" "$conns" "$rate" \
                "$(ms "$p50")" "$(ms "$p99")" "$(awk -v a="$rate" -v b="$ceiling_rate" 'BEGIN { print a / b }')" \
                "$(awk -v a="$rate" -v b="${floor_rate[$format-$conns]}" 'BEGIN { print a / b }')" \
                "$(awk -v a="$rate" -v b="${hop_rate[$format-$conns]}" 'BEGIN { print a / b }')" \
                "$to_anchor" "${errors:+  ($errors non-2xx)}"
            [ -n "$split" ] && echo "$split"
            best=$(awk -v a="$rate" -v b="$best" 'BEGIN { print (a > b) ? a : b }')
        done
        if [ "$batching" != "--max-batch 1" ]; then
            half=$(awk -v b="$best" 'BEGIN { printf "%.0f", b / 2 }')
            latency_lines+=("$(printf "%-6s %-18s %s" "$format" "$(label "$batching")" "$(tail_at "$format" "$half")") (half of $best)")
            floor_rates+=("$format $half")
        fi
    done
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=
done
# The floor under the same client at the same rates: the tail that the machine, loopback and
# the client give a server with no model and no pool.
for pair in "${floor_rates[@]}"; do
    read -r format rate <<<"$pair"
    start_server "$work/floor.out" 10 "$floor" "$work/$format.response" --port 0
    latency_lines+=("$(printf "%-6s %-18s %s" "$format" "floor" "$(tail_at "$format" "$rate")")")
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=
done
if [ ${#latency_lines[@]} -gt 0 ]; then
    printf "\nlatency with batching (target: p99 at half saturation <= 3x the unloaded p50), and\n"
    printf "the floor's at the same rates\n"
    printf "%s\n" "${latency_lines[@]}"
fi
