#!/usr/bin/env bash
# The twnode demo: two hosts in network namespaces on this machine, joined by a veth
# (the seed's addresses: A 203.0.113.10, B 198.51.100.20), each with a default route out
# of its eth0 as real servers have. The seed's two-layer stack is made with its own
# commands: tunnel_base (WireGuard on eth0), then tunnel_secure (WireGuard on
# tunnel_base); each is created on A with `line create` and the printed peer command
# is pasted on B. Then ping and a checksummed 10 MB TCP transfer go through the inner
# layer, each host's `line list` is shown, and everything is torn down.
# Exits 0 only if the traffic really went through both layers.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
twnode_require_root
twnode_install_deps

echo "==> building twnode (release)"
cargo build --release --quiet
TW=$PWD/target/release/twnode

A=twdemo-a-$$ B=twdemo-b-$$
WORK=$(mktemp -d /tmp/twnode-demo.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    ip netns del "$A" 2>/dev/null
    ip netns del "$B" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
on() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
tw() { local h=$1; shift; on "${!h}" "$TW" --config "$WORK/$h/twnode.toml" --control "$WORK/$h/control.sock" "$@"; }

step "two hosts: A (203.0.113.10) and B (198.51.100.20), joined by a veth"
ip netns add "$A"; ip netns add "$B"
on "$A" ip link set lo up; on "$B" ip link set lo up
ip link add eth0 netns "$A" type veth peer name eth0 netns "$B"
on "$A" ip addr add 203.0.113.10/24 dev eth0; on "$A" ip link set eth0 up
on "$B" ip addr add 198.51.100.20/24 dev eth0; on "$B" ip link set eth0 up
on "$A" ip route add default via 198.51.100.20 dev eth0 onlink
on "$B" ip route add default via 203.0.113.10 dev eth0 onlink

step "starting a twnode daemon on each host"
for h in A B; do
    mkdir -p "$WORK/$h"
    on "${!h}" "$TW" init --config "$WORK/$h/twnode.toml" >/dev/null
    # `ip netns exec` execs the daemon, so $! is the daemon itself (SIGTERM reaches it).
    # Each host its own state directory: a daemon locks it (the default is this host's).
    TWNODE_LOG=info ip netns exec "${!h}" "$TW" daemon --config "$WORK/$h/twnode.toml" \
        --control "$WORK/$h/control.sock" --state-dir "$WORK/$h/state" \
        2>"$WORK/$h/daemon.log" &
    PIDS+=($!)
done
for h in A B; do
    for _ in $(seq 50); do [[ -S $WORK/$h/control.sock ]] && break; sleep 0.1; done
done

step "A: twnode line create eth0 198.51.100.20 10.0.0.2 10.0.0.1 tunnel_base --type wireguard --mode server --listen-port 51820"
tw A line create eth0 198.51.100.20 10.0.0.2 10.0.0.1 tunnel_base --type wireguard --mode server --listen-port 51820

step "B: paste A's peer command, with <parent> replaced by eth0"
PEER_CMD=$(tw A line show-peer tunnel_base 2>/dev/null)
B_CMD=${PEER_CMD/<parent>/eth0}
echo "$B_CMD" | sed -E "s/(--private-key ')[^']+/\1<redacted>/"
eval "tw B ${B_CMD#twnode }"

step "A: twnode line create tunnel_base 10.0.0.2 172.16.0.2 172.16.0.1 tunnel_secure --type wireguard --mode server --listen-port 51821"
tw A line create tunnel_base 10.0.0.2 172.16.0.2 172.16.0.1 tunnel_secure --type wireguard --mode server --listen-port 51821 \
    | sed -n '/^\[Create/,/^✓ line/p'

step "B: paste A's peer command for tunnel_secure, with <parent> replaced by tunnel_base"
PEER_CMD=$(tw A line show-peer tunnel_secure 2>/dev/null)
B_CMD=${PEER_CMD/<parent>/tunnel_base}
echo "$B_CMD" | sed -E "s/(--private-key ')[^']+/\1<redacted>/"
eval "tw B ${B_CMD#twnode }" >/dev/null
for _ in $(seq 50); do tw A line list | grep -q 'tunnel_secure .*✓ up' && break; sleep 0.2; done

step "ping both layers: A -> 10.0.0.2 (tunnel_base) and A -> 172.16.0.2 (tunnel_secure), B -> 172.16.0.1"
on "$A" ping -c 3 -i 0.2 -W 2 10.0.0.2
on "$A" ping -c 3 -i 0.2 -W 2 172.16.0.2
on "$B" ping -c 3 -i 0.2 -W 2 172.16.0.1

step "a 10 MB TCP transfer from A to B through both layers (to 172.16.0.2), checksummed on both ends"
head -c 10M /dev/urandom >"$WORK/payload"
SENT=$(sha256sum <"$WORK/payload" | cut -d' ' -f1)
on "$B" python3 -c '
import socket, hashlib, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("172.16.0.2", 5001)); s.listen(1); s.settimeout(30)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
open(sys.argv[1], "w").write(h.hexdigest())
print(f"B received {n} bytes")
' "$WORK/received" &
RECV=$!
sleep 0.5
on "$A" python3 -c '
import socket, sys, time
data = open(sys.argv[1], "rb").read()
s = socket.create_connection(("172.16.0.2", 5001), timeout=30)
t = time.time(); s.sendall(data); s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
dt = time.time() - t
print(f"A sent {len(data)} bytes in {dt:.2f} s ({len(data) * 8 / dt / 1e6:.0f} Mbit/s)")
' "$WORK/payload"
wait $RECV
GOT=$(cat "$WORK/received")
echo "sha256 sent:     $SENT"
echo "sha256 received: $GOT"
[[ $SENT == "$GOT" ]] || { echo "checksum mismatch" >&2; exit 1; }

step "routing on A: ip route get 10.0.0.2 / 172.16.0.2, ip rule, table 80"
on "$A" ip route get 10.0.0.2
ROUTE=$(on "$A" ip route get 172.16.0.2); echo "$ROUTE"
[[ $ROUTE == *"dev tunnel_secure"* ]] || { echo "172.16.0.2 is not routed through tunnel_secure" >&2; exit 1; }
on "$A" ip rule show
on "$A" ip route show table 80
# The transfer went through both layers: tunnel_secure sent it, tunnel_base carried
# tunnel_secure's datagrams (at least as many bytes).
SECURE_TX=$(tw A line show tunnel_secure --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tx_bytes"])')
BASE_TX=$(tw A line show tunnel_base --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tx_bytes"])')
echo "tunnel_secure sent $SECURE_TX bytes, tunnel_base $BASE_TX bytes"
(( SECURE_TX >= 10485760 && BASE_TX >= SECURE_TX )) || { echo "the transfer did not go through both layers" >&2; exit 1; }

step "A: twnode line list"
tw A line list
step "B: twnode line list"
tw B line list

step "teardown: SIGTERM both daemons; their TUN devices, addresses, routes and rules go"
for p in "${PIDS[@]}"; do kill -TERM "$p"; done
for p in "${PIDS[@]}"; do wait "$p" || { echo "a daemon exited with status $? on SIGTERM" >&2; exit 1; }; done
PIDS=()
LEFT=$(on "$A" ip rule show | grep -c 'lookup 80\|proto 0x74' || true)
on "$A" ip -br link
[[ $LEFT == 0 ]] || { echo "rules left behind on A" >&2; exit 1; }
echo
echo "demo passed: two stacked lines carried ping and a 10 MB transfer with a matching checksum"
