#!/usr/bin/env bash
# Builds torchpool (release) and runs the round-trip benchmark. Arguments go to it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release
build/release/bench/torchpool-bench-roundtrip "$@"
if command -v valgrind >/dev/null; then
    bench/instructions.sh build/release
fi
exec build/release/bench/torchpool-bench-fork-server 256 16
