#!/usr/bin/env bash
# The host's instruction count per no-op task (one outstanding, one worker), counted with
# valgrind's callgrind at two task counts: (total(N2) - total(N1)) / (N2 - N1). Instruction
# counts do not drift with the load of a shared machine as timings do, so this is the figure
# to compare before and after a change to the hot path.
#
# With BYTES, each task carries a float32 tensor of that size from pool::allocate (see
# bench/host_instructions.cpp): compare 4096 with 16777216 to see that a task's host cost does
# not depend on its tensor's size.
#
# With OWN=1 in the environment, the tensor is the caller's own bytes (tensor::data), the inline
# path below pool_params::shared_memory.inline_below (16 KiB).
#
# Usage: bench/instructions.sh [BUILD_DIR] [N1] [N2] [BYTES]   (default: build/release 2000 6000)
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build/release}
n1=${2:-2000}
n2=${3:-6000}
bytes=${4:-}
if [ -n "$bytes" ] && [ "${OWN:-0}" = 1 ]; then
    bytes="$bytes own"
fi
program="$build/bench/torchpool-bench-host-instructions"
if [ ! -x "$program" ]; then
    echo "instructions.sh: $program is missing; build it first (cmake --preset release &&" \
        "cmake --build --preset release)" >&2
    exit 1
fi
command -v valgrind >/dev/null || {
    echo "instructions.sh: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

total() {
    # Only the host is counted: valgrind does not follow the worker it starts.
    valgrind --tool=callgrind --callgrind-out-file="$out/$1.out" "$program" "$1" $bytes \
        >"$out/$1.log" 2>&1 || {
        cat "$out/$1.log" >&2
        exit 1
    }
    sed -n 's/^summary: *//p; s/^totals: *//p' "$out/$1.out" | head -1
}

i1=$(total "$n1")
i2=$(total "$n2")
per_task=$(( (i2 - i1) / (n2 - n1) ))
echo "host instructions: $i1 for $n1 tasks, $i2 for $n2 tasks"
if [ -n "$bytes" ]; then
    echo "host instructions per task with a $bytes-byte tensor: $per_task"
else
    echo "host instructions per no-op task: $per_task"
fi
