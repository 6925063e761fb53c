# Shared by the torchpool-serve benchmarks (sourced, not run).

# require_built SCRIPT FILE...: stops with a message naming the first file missing.
# The model's sample request as a plain infer request (all outputs as numbers): the sample
# asks for a classification, which the figures kept since before it existed did not.
plain_sample() {
    sed -E 's/, "outputs": \[\{"name": "logits", "parameters": \{"classification": [0-9]+\}\}\]\}$/}/' "$1" >"$2"
}

require_built() {
    local script=$1
    shift
    for f in "$@"; do
        [ -e "$f" ] || { echo "$script: $f is missing; build first (cmake --preset release && cmake --build --preset release)" >&2; exit 1; }
    done
}

# start_server OUT SECONDS COMMAND...: starts the server COMMAND (its output in OUT) and waits
# at most SECONDS for it to say where it listens; sets server_pid and url (the default
# model's infer endpoint). Exits, showing the output, if the server dies first.
start_server() {
    local out=$1 seconds=$2
    shift 2
    "$@" >"$out" 2>&1 &
    server_pid=$!
    for _ in $(seq $((seconds * 10))); do
        grep -q '^listening on' "$out" && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$out" >&2; exit 1; }
        sleep 0.1  # waiting for the server's workers to start (not a synchronization of results)
    done
    local port
    port=$(sed -n 's|^listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$out")
    [ -n "$port" ] || { echo "the server did not start within $seconds s:" >&2; cat "$out" >&2; exit 1; }
    url="http://127.0.0.1:$port/v2/models/fashion/infer"
}
