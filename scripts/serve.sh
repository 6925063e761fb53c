#!/usr/bin/env bash
# Sets everything up, builds torchpool (release) and starts the inference server on the default
# Fashion-MNIST model. Arguments go to torchpool-serve (try --help). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec build/release/apps/torchpool-serve "$@"
