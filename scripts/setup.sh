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

APT_PACKAGES=(llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev iproute2 ethtool curl iputils-ping bpftool prometheus chromium wrk apache2-utils util-linux bird2 gobgpd)

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

# The eBPF crate builds core from source with nightly; lint runs clippy on both toolchains.
for want in "nightly rust-src" "nightly clippy" "stable clippy" "stable rustfmt"; do
    set -- $want
    if ! rustup component list --toolchain "$1" --installed 2>/dev/null | grep -q "^$2"; then
        echo "setup: adding $2 to the $1 toolchain"
        rustup component add "$2" --toolchain "$1"
    fi
done

if ! command -v bpf-linker >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/bpf-linker" ]; then
    echo "setup: building bpf-linker against LLVM 22 (a few minutes, once)"
    LLVM_PREFIX=/usr/lib/llvm-22 cargo +stable install --locked bpf-linker --version "^0.13" \
        --no-default-features --features llvm-22
fi
