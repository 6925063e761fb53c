#!/usr/bin/env bash
# Installs the Debian 12 packages torchpool needs, and nothing else.
# Unattended and idempotent: it runs `apt-get update` only when a package is missing, and is
# a no-op when everything is already installed.
set -euo pipefail

packages=(
    g++ cmake ninja-build pkg-config
    libboost1.81-dev libboost-json1.81-dev
    libcapnp-dev capnproto
    catch2
    libtorch-dev libopenblas0-openmp zlib1g-dev dataset-fashion-mnist
    libcli11-dev curl prometheus-cpp-dev wrk slowhttptest
    clang-14 libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "setup: installing missing Debian packages: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
