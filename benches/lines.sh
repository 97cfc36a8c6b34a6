#!/usr/bin/env bash
# Scale benchmark: how long N WireGuard server lines in one daemon take to come up (TUN
# device up, VIP on it, the peer's route in place, for every line) and how much memory the
# daemon holds, for N = 1, 100, 1000 (LINES="1 100 1000"). Release build.
#
#   sudo benches/lines.sh                 # N = 1, 100, 1000
#   sudo LINES="1 1000" benches/lines.sh
#
# Per N: a fresh namespace with eth0 (203.0.113.10/24, a veth to a second namespace), a
# config of N server lines written at once (keys from `twnode genkey`), then
# `twnode daemon` is started and timed until `ip` shows every device, address and route.
# Printed: time to up, RSS right then and after 3 s idle, peak RSS (VmHWM), the time
# `line list` takes to answer, and the time SIGTERM takes to remove everything.
# Needs root, iproute2, python3.
# Issue 6's targets: 1000 lines up within 10 s and under 300 MiB; one idle line <= 8 MiB.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TWNODE=$ROOT/target/release/twnode
read -ra COUNTS <<<"${LINES:-1 100 1000}"
[[ $(id -u) == 0 ]] || { echo "benches/lines.sh: run as root" >&2; exit 1; }
if [[ -z ${NO_BUILD:-} ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi
TAG=$$
NS=twl-a-$TAG
NS_B=twl-b-$TAG
WORK=$(mktemp -d /tmp/twnode-lines.XXXXXX)
DAEMON=
cleanup() {
    set +e
    [[ -n $DAEMON ]] && kill -9 "$DAEMON" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    ip netns del "$NS_B" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
now() { date +%s.%N; }
kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

echo "==> $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%6s  %10s  %12s  %12s  %12s  %10s  %10s\n' lines "up (s)" "RSS up MiB" "RSS idle MiB" "peak MiB" "list (ms)" "stop (s)"
for n in "${COUNTS[@]}"; do
    ip netns add "$NS"
    ip netns add "$NS_B"
    ip -n "$NS" link set lo up
    ip -n "$NS" link add eth0 type veth peer name eth0 netns "$NS_B"
    ip -n "$NS" addr add 203.0.113.10/24 dev eth0
    ip -n "$NS" link set eth0 up
    ip -n "$NS_B" link set eth0 up
    ip -n "$NS" route add default via 198.51.100.20 dev eth0 onlink
    cfg=$WORK/twnode.toml
    : >"$cfg"
    chmod 600 "$cfg"
    for ((i = 0; i < n; i++)); do
        key=$("$TWNODE" genkey)
        peer=$("$TWNODE" genkey | "$TWNODE" pubkey)
        x=$((64 + i / 250)) y=$((i % 250))
        printf '[[line]]\nname = "s%d"\nparent = "eth0"\npeer_ip = "198.51.100.20"\npeer_vip = "10.%d.%d.2"\nlocal_vip = "10.%d.%d.1"\ntype = "wireguard"\n[line.wireguard]\nmode = "server"\nlisten_port = %d\nprivate_key = "%s"\npeer_public_key = "%s"\n\n' \
            "$i" "$x" "$y" "$x" "$y" $((20000 + i)) "$key" "$peer" >>"$cfg"
    done
    t0=$(now)
    ip netns exec "$NS" "$TWNODE" daemon --config "$cfg" --control "$WORK/control.sock" \
        --state-dir "$WORK/state" </dev/null >"$WORK/daemon.log" 2>&1 &
    DAEMON=$!
    while :; do
        links=$(ip -n "$NS" -o link show up 2>/dev/null | grep -cE '^[0-9]+: s[0-9]+:' || true)
        if ((links == n)); then
            addrs=$(ip -n "$NS" -o -4 addr show 2>/dev/null | grep -c ' inet 10\.' || true)
            routes=$(ip -n "$NS" route show table all 2>/dev/null | grep -cE '^10\.[0-9.]+ dev s[0-9]+ ' || true)
            ((addrs == n && routes >= n)) && break
        fi
        kill -0 "$DAEMON" 2>/dev/null || { echo "daemon died:"; cat "$WORK/daemon.log"; exit 1; }
        sleep 0.05
    done
    t1=$(now)
    rss_up=$(kib "$DAEMON" VmRSS)
    sleep 3
    rss_idle=$(kib "$DAEMON" VmRSS)
    l0=$(now)
    ip netns exec "$NS" "$TWNODE" --config "$cfg" --control "$WORK/control.sock" line list --json >/dev/null
    l1=$(now)
    peak=$(kib "$DAEMON" VmHWM)
    s0=$(now)
    kill "$DAEMON"
    wait "$DAEMON" || true
    s1=$(now)
    DAEMON=
    python3 -c 'import sys; n, t0, t1, up, idle, l0, l1, peak, s0, s1 = map(float, sys.argv[1:])
print(f"{int(n):6d}  {t1 - t0:10.2f}  {up / 1024:12.1f}  {idle / 1024:12.1f}  {peak / 1024:12.1f}  {(l1 - l0) * 1000:10.0f}  {s1 - s0:10.2f}")' \
        "$n" "$t0" "$t1" "$rss_up" "$rss_idle" "$l0" "$l1" "$peak" "$s0" "$s1"
    ip netns del "$NS"
    ip netns del "$NS_B"
done
