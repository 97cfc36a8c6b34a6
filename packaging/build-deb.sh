#!/usr/bin/env bash
# Builds twnode's Debian package: target/debian/twnode_<version>_<arch>.deb
#
#   packaging/build-deb.sh                        # cargo build --release, then package it
#   TWNODE_BIN=target/debug/twnode packaging/build-deb.sh   # package a binary already built
#   TWNODE_DEB_DIR=/tmp/out packaging/build-deb.sh          # write the .deb elsewhere
#
# It holds /usr/bin/twnode (stripped), the systemd unit (/lib/systemd/system/twnode.service,
# its Exec paths rewritten from the source install's /usr/local/bin to /usr/bin), the
# example config (/usr/share/doc/twnode/examples/), man pages for every command
# (`twnode man`) and bash, zsh and fish completions (`twnode completions`), all made by
# the binary being packaged so they match it. The package does not enable or start the
# service: a node needs its lines first (`systemctl enable --now twnode`).
#
# Why a script around dpkg-deb and not cargo-deb: cargo-deb is one more tool to install
# (and to build from source here), while dpkg-deb is on every Debian system; the man
# pages and completions come from running the binary anyway, which cargo-deb would need a
# build script for; and the script can package any build (the tests package their debug
# build instead of compiling a release one). Needs: dpkg-deb, strip, gzip, objdump.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
arch=$(dpkg --print-architecture)
bin=${TWNODE_BIN:-}
if [[ -z $bin ]]; then
    (cd "$root" && cargo build --release --locked)
    bin=$root/target/release/twnode
fi
[[ -x $bin ]] || { echo "build-deb: $bin is not an executable twnode binary" >&2; exit 1; }
out=${TWNODE_DEB_DIR:-$root/target/debian}
mkdir -p "$out"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg=$stage/pkg
install -d -m 0755 "$pkg" "$pkg/DEBIAN"

install -D -m 0755 "$bin" "$pkg/usr/bin/twnode"
strip --strip-unneeded "$pkg/usr/bin/twnode"

install -d -m 0755 "$pkg/lib/systemd/system"
sed 's|/usr/local/bin/twnode|/usr/bin/twnode|g' "$root/packaging/twnode.service" \
    >"$pkg/lib/systemd/system/twnode.service"
chmod 0644 "$pkg/lib/systemd/system/twnode.service"

doc=$pkg/usr/share/doc/twnode
install -D -m 0644 "$root/packaging/twnode.toml.example" "$doc/examples/twnode.toml.example"
install -m 0644 "$root/README.md" "$doc/README.md"
gzip -9n "$doc/README.md"
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: twnode

Files: *
License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
chmod 0644 "$doc/copyright"

man=$pkg/usr/share/man/man1
install -d -m 0755 "$man"
"$pkg/usr/bin/twnode" man "$man" >/dev/null
chmod 0644 "$man"/*.1
gzip -9n "$man"/*.1

install -d -m 0755 "$pkg/usr/share/bash-completion/completions" \
    "$pkg/usr/share/zsh/vendor-completions" "$pkg/usr/share/fish/vendor_completions.d"
"$pkg/usr/bin/twnode" completions bash >"$pkg/usr/share/bash-completion/completions/twnode"
"$pkg/usr/bin/twnode" completions zsh >"$pkg/usr/share/zsh/vendor-completions/_twnode"
"$pkg/usr/bin/twnode" completions fish >"$pkg/usr/share/fish/vendor_completions.d/twnode.fish"
chmod 0644 "$pkg"/usr/share/*/*completion*/* "$pkg"/usr/share/zsh/vendor-completions/*

# The newest glibc symbol version the binary needs.
glibc=$(objdump -T "$pkg/usr/bin/twnode" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f 1)
cat >"$pkg/DEBIAN/control" <<EOF
Package: twnode
Version: $version
Architecture: $arch
Maintainer: twnode developers <twnode@localhost>
Installed-Size: $size
Depends: libc6 (>= ${glibc:-2.17}), libgcc-s1
Recommends: wireguard-tools
Section: net
Priority: optional
Description: userspace point-to-point VPN node (WireGuard and IP tunnels on TUN)
 twnode builds tunnels ("lines": WireGuard, IPIP, GRE, SIT, IPv6 tunnels, GRE
 over userspace ESP) on TUN devices, entirely in userspace, and stacks them into
 multi-hop relays. A daemon with a TOML config, a CLI, a systemd unit, WireGuard's
 UAPI for wg show and wg set, and optional Prometheus metrics.
EOF
cat >"$pkg/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
# The unit is new or changed; it is not enabled: a node needs its lines first.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
EOF
cat >"$pkg/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop twnode.service >/dev/null 2>&1 || true
fi
EOF
cat >"$pkg/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
EOF
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"

deb=$out/twnode_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
