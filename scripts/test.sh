#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: the debug build, then the same tests
# under AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

for preset in dev asan; do
    echo "== torchpool tests: $preset build"
    cmake --preset "$preset" >/dev/null
    cmake --build --preset "$preset"
    ctest --preset "$preset"
done
