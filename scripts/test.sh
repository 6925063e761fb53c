#!/usr/bin/env bash
# Sets everything up and runs the whole test suite three times: in the debug build, under
# AddressSanitizer + UndefinedBehaviorSanitizer, and under ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

for preset in dev asan tsan; do
    echo "== torchpool tests: $preset build"
    cmake --preset "$preset" >/dev/null
    cmake --build --preset "$preset"
    ctest --preset "$preset"
done
