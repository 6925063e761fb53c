#!/usr/bin/env bash
# Builds torchpool (release) and runs the benchmarks: round trips (arguments go to it),
# tensor transfer beside its baselines, the host's lag while tensors stream, host
# instructions per task (without and with tensors), and the fork server.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release
build/release/bench/torchpool-bench-roundtrip "$@"
build/release/bench/torchpool-bench-tensor-transfer
build/release/bench/torchpool-bench-tensor-lag
if command -v valgrind >/dev/null; then
    bench/instructions.sh build/release
    bench/instructions.sh build/release 300 900 4096
    bench/instructions.sh build/release 300 900 16777216
fi
exec build/release/bench/torchpool-bench-fork-server 256 16
