#!/usr/bin/env bash
# Fuzzes torchpool's parsers with libFuzzer (tests/fuzz; the fuzz preset: Clang 14 with
# AddressSanitizer and UndefinedBehaviorSanitizer).
#
#   scripts/fuzz.sh TARGET [SECONDS]   fuzz one target for SECONDS (default 600)
#   scripts/fuzz.sh --all [SECONDS]    fuzz every target for SECONDS each, two at a time
#   scripts/fuzz.sh --list             the targets
#
# Each run starts from the checked-in seeds and reproducers (tests/fuzz/corpus/TARGET) and
# keeps what it finds in build/fuzz/runs/TARGET. A crash, leak, sanitizer report or failed
# check stops the target and leaves the input in build/fuzz/artifacts/; once it is fixed, copy
# that file into tests/fuzz/corpus/TARGET, where ctest --preset fuzz runs it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(serve_request_fuzz model_config_fuzz host_channel_fuzz fork_server_link_fuzz
         worker_channel_fuzz)

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

[ $# -ge 1 ] || usage
case "$1" in
    --list) printf '%s\n' "${targets[@]}"; exit 0 ;;
    --all) selected=("${targets[@]}") ;;
    -*) usage ;;
    *)
        if ! printf '%s\n' "${targets[@]}" | grep -qx "$1"; then
            echo "fuzz.sh: no fuzz target named '$1'; the targets are: ${targets[*]}" >&2
            exit 2
        fi
        selected=("$1")
        ;;
esac
seconds="${2:-600}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "fuzz.sh: SECONDS must be a whole number of seconds, not '$seconds'" >&2
    exit 2
fi

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz

build=build/fuzz
mkdir -p "$build/artifacts"

# Runs one target; prints one line of figures, or what it found.
run() {
    local t=$1 runs="$build/runs/$1" log="$build/runs/$1.log"
    mkdir -p "$runs"
    local dict=()
    [ -f "tests/fuzz/${t%_fuzz}.dict" ] && dict=(-dict="tests/fuzz/${t%_fuzz}.dict")
    if "$build/tests/fuzz/$t" -max_total_time="$seconds" -max_len=16384 -timeout=30 \
        -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
        "${dict[@]}" "$runs" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
        local execs cov corpus
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
        corpus=$(find "$runs" -type f | wc -l)
        echo "fuzz: $t: ${seconds} s, $execs executions, coverage $cov edges, corpus $corpus inputs, nothing found"
    else
        echo "fuzz: $t FOUND A PROBLEM; its report (from $log):" >&2
        grep -v -E '^#[0-9]+|NEW_FUNC|Uses:|^torchpool worker:' "$log" | tail -60 >&2
        echo "fuzz: the input is in $build/artifacts/ (prefix $t-); fix it, then copy it into tests/fuzz/corpus/$t" >&2
        return 1
    fi
}

failed=0
pids=()
for t in "${selected[@]}"; do
    run "$t" &
    pids+=($!)
    if [ ${#pids[@]} -ge 2 ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do
    wait "$p" || failed=1
done
exit $failed
