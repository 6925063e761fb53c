#!/usr/bin/env bash
# Sets everything up, builds torchpool (release) and runs the demo. Arguments go to the demo
# (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec build/release/apps/torchpool-demo "$@"
