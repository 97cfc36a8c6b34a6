#!/usr/bin/env bash
# Where a ping's round trip goes, hop by hop: twnode's WireGuard line next to
# boringtun-cli, each between two network namespaces (A pings B over the tunnel).
#
#   sudo benches/ping_hops.sh                    # twnode and boringtun-cli --threads 1
#   sudo VARIANTS="twnode btun" PINGS=500 INTERVAL=0.01 benches/ping_hops.sh
#
# tcpdump records every packet on both ends of both daemons (the underlay veth and the
# tunnel device, in A and in B; kernel timestamps, one clock), then
# benches/ping_hops.py matches each echo request and reply to the encrypted datagram
# that carried it and prints per hop median, 10th and 90th percentile in microseconds:
#   A out      A's tunnel device sees the request -> A's veth sends the datagram
#   wire       A's veth -> B's veth
#   B in       B's veth receives -> B's tunnel device delivers the request
#   B kernel   request in -> reply out of B's tunnel device (B's ICMP)
#   B out      B's tunnel device sees the reply -> B's veth sends it
#   wire back, A in: the same on the way back; total = A's tunnel device, request -> reply
# "A out" and "B in" wake a daemon that was asleep; "B out" follows a TUN write at once.
#
# Needs root, iproute2, ping, tcpdump, tshark, python3, wg (wireguard-tools); boringtun-cli
# for the btun variants (benches/throughput.sh installs it). NO_BUILD=1 skips the build.
# Variants: twnode (a WireGuard line), gre (a twnode GRE line), btun1 (boringtun-cli
# --threads 1), btun (its default 4 threads).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TWNODE=$ROOT/target/release/twnode
PINGS=${PINGS:-300}
INTERVAL=${INTERVAL:-0.02}
read -ra VARIANTS <<<"${VARIANTS:-twnode btun1}"
export PATH=$PATH:${CARGO_HOME:-$HOME/.cargo}/bin

if [[ $(id -u) != 0 ]]; then
    echo "benches/ping_hops.sh: run as root (it creates network namespaces)" >&2
    exit 1
fi
for tool in ip ping tcpdump tshark python3 wg; do
    command -v "$tool" >/dev/null || {
        echo "benches/ping_hops.sh: $tool not found; install it (apt-get install $tool)" >&2
        exit 1
    }
done
[[ -n ${NO_BUILD:-} ]] || (cd "$ROOT" && cargo build --release --bin twnode)

WORK=$(mktemp -d /tmp/twnode-hops.XXXXXX)
NS_A=twhopA$$
NS_B=twhopB$$
cleanup() {
    set +e
    local pids
    pids="$(ip netns pids "$NS_A" 2>/dev/null) $(ip netns pids "$NS_B" 2>/dev/null)"
    # shellcheck disable=SC2086
    [[ -n ${pids// /} ]] && kill $pids 2>/dev/null
    sleep 0.3
    ip netns del "$NS_A" 2>/dev/null
    ip netns del "$NS_B" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
a() { ip netns exec "$NS_A" "$@"; }
b() { ip netns exec "$NS_B" "$@"; }

pair() {
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    ip link add eth0 netns "$NS_A" type veth peer name eth0 netns "$NS_B"
    ip -n "$NS_A" addr add 203.0.113.10/24 dev eth0
    ip -n "$NS_B" addr add 198.51.100.20/24 dev eth0
    for ns in "$NS_A" "$NS_B"; do
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
    done
    ip -n "$NS_A" route add default via 198.51.100.20 dev eth0 onlink
    ip -n "$NS_B" route add default via 203.0.113.10 dev eth0 onlink
}

tw() { # side args...
    local side=$1
    shift
    "$side" "$TWNODE" --config "$WORK/$side/twnode.toml" --control "$WORK/$side/control.sock" "$@"
}

up_twnode() {
    mkdir -p "$WORK/a" "$WORK/b"
    # Each daemon its own state directory: a daemon locks it (the default is the host's).
    a "$TWNODE" daemon --config "$WORK/a/twnode.toml" --control "$WORK/a/control.sock" \
        --state-dir "$WORK/a/state" >"$WORK/a.log" 2>&1 &
    b "$TWNODE" daemon --config "$WORK/b/twnode.toml" --control "$WORK/b/control.sock" \
        --state-dir "$WORK/b/state" >"$WORK/b.log" 2>&1 &
    for _ in $(seq 50); do tw a line list >/dev/null 2>&1 && tw b line list >/dev/null 2>&1 && break; sleep 0.1; done
    tw a line create eth0 198.51.100.20 10.0.0.2 10.0.0.1 hop0 "$@" >/dev/null
    local peer
    peer=$(tw a line show-peer hop0 2>/dev/null)
    peer=${peer/<parent>/eth0}
    peer=${peer#twnode }
    eval "tw b $peer" >/dev/null
    IF_A=hop0 IF_B=hop0 OUTER=${OUTER_FILTER:-udp.length==124}
}

up_btun() { # extra boringtun-cli args...
    local ka kb
    ka=$(wg genkey)
    kb=$(wg genkey)
    echo "$ka" >"$WORK/a.key"
    echo "$kb" >"$WORK/b.key"
    chmod 600 "$WORK"/?.key
    a env WG_PROCESS_FOREGROUND=1 WG_SUDO=1 boringtun-cli -f --disable-drop-privileges \
        -l "$WORK/a.out" "$@" hopa >"$WORK/a.log" 2>&1 &
    b env WG_PROCESS_FOREGROUND=1 WG_SUDO=1 boringtun-cli -f --disable-drop-privileges \
        -l "$WORK/b.out" "$@" hopb >"$WORK/b.log" 2>&1 &
    for _ in $(seq 50); do a wg show hopa >/dev/null 2>&1 && b wg show hopb >/dev/null 2>&1 && break; sleep 0.1; done
    a wg set hopa private-key "$WORK/a.key" listen-port 51833 \
        peer "$(echo "$kb" | wg pubkey)" allowed-ips 0.0.0.0/0
    b wg set hopb private-key "$WORK/b.key" peer "$(echo "$ka" | wg pubkey)" \
        endpoint 203.0.113.10:51833 allowed-ips 0.0.0.0/0 persistent-keepalive 25
    a ip addr add 10.0.0.1/32 peer 10.0.0.2 dev hopa
    b ip addr add 10.0.0.2/32 peer 10.0.0.1 dev hopb
    a ip link set hopa mtu 1420 up
    b ip link set hopb mtu 1420 up
    IF_A=hopa IF_B=hopb OUTER=udp.length==124
}

for v in "${VARIANTS[@]}"; do
    pair
    case $v in
    twnode) up_twnode --type wireguard --mode server --listen-port 51820 --mtu 1420 ;;
    gre) OUTER_FILTER=gre up_twnode --type gre ;;
    btun1) up_btun --threads 1 ;;
    btun) up_btun ;;
    *)
        echo "benches/ping_hops.sh: unknown variant $v (twnode gre btun1 btun)" >&2
        exit 1
        ;;
    esac
    ok=
    for _ in $(seq 100); do a ping -c1 -W1 10.0.0.2 >/dev/null 2>&1 && ok=1 && break; sleep 0.1; done
    [[ -n $ok ]] || { echo "$v: the tunnel did not come up" >&2; cat "$WORK"/?.log >&2; exit 1; }
    a ping -q -c 5 -i 0.05 10.0.0.2 >/dev/null
    caps=()
    for x in "a eth0" "a $IF_A" "b eth0" "b $IF_B"; do
        read -r side dev <<<"$x"
        "$side" tcpdump -Z root -i "$dev" -n -s 200 --time-stamp-precision=nano \
            -w "$WORK/$side-$dev.pcap" >/dev/null 2>&1 &
        caps+=($!)
    done
    sleep 1
    echo "==> $v: $PINGS pings at -i $INTERVAL, $(a ping -q -c "$PINGS" -i "$INTERVAL" 10.0.0.2 | tail -1)"
    sleep 0.5
    kill "${caps[@]}" 2>/dev/null || true
    wait "${caps[@]}" 2>/dev/null || true
    python3 "$ROOT/benches/ping_hops.py" "$WORK" "$IF_A" "$IF_B" "$OUTER"
    cleanup
    WORK=$(mktemp -d /tmp/twnode-hops.XXXXXX)
done
