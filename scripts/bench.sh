#!/usr/bin/env bash
# Builds torchpool (release) and runs the benchmarks: round trips (arguments go to it),
# tensor transfer beside its baselines, host instructions per task, and the fork server.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release
build/release/bench/torchpool-bench-roundtrip "$@"
build/release/bench/torchpool-bench-tensor-transfer
if command -v valgrind >/dev/null; then
    bench/instructions.sh build/release
fi
exec build/release/bench/torchpool-bench-fork-server 256 16
