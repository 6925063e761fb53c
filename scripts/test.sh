#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: in the debug build, under
# AddressSanitizer + UndefinedBehaviorSanitizer, under ThreadSanitizer, built by Clang, and the
# fuzz targets (each over its checked-in corpus, then fuzzed for TORCHPOOL_FUZZ_SECONDS, 45 by
# default).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

for preset in dev asan tsan clang; do
    echo "== torchpool tests: $preset build"
    cmake --preset "$preset" >/dev/null
    cmake --build --preset "$preset"
    ctest --preset "$preset"
done

echo "== torchpool tests: fuzz targets"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
ctest --preset fuzz
scripts/fuzz.sh --all "${TORCHPOOL_FUZZ_SECONDS:-45}"
