#!/usr/bin/env bash
# Installs everything the build, tests and demo need on a fresh Debian 12 machine.
# Idempotent: every step checks before it acts, so a second run takes a second.
set -euo pipefail

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: must run as root (apt-get, XDP and network namespaces need it)" >&2
        exit 1
    fi
}

APT_PACKAGES=(llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev iproute2 ethtool curl iputils-ping bpftool)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    need_root
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    echo "setup: adding rust-src to the nightly toolchain"
    rustup component add rust-src --toolchain nightly
fi

if ! command -v bpf-linker >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/bpf-linker" ]; then
    echo "setup: building bpf-linker against LLVM 22 (a few minutes, once)"
    LLVM_PREFIX=/usr/lib/llvm-22 cargo +stable install --locked bpf-linker --version "^0.13" \
        --no-default-features --features llvm-22
fi
