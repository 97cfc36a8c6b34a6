#!/usr/bin/env bash
# Installs what twnode's demo and tests need, idempotently: Debian packages first, then
# nothing else. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail

TWNODE_PACKAGES=(iproute2 iputils-ping wireguard-go wireguard-tools iperf3 tshark python3-scapy python3-prometheus-client nftables procps systemd strace binutils)

twnode_install_deps() {
    local missing=()
    for p in "${TWNODE_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "==> installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # tshark asks whether non-root users may capture; answer no, without a prompt.
        echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
}

twnode_require_root() {
    if [[ $(id -u) != 0 ]]; then
        echo "this needs root (network namespaces, TUN devices): run it with sudo" >&2
        exit 1
    fi
}
