#!/usr/bin/env bash
# GRE over ESP next to plain GRE, twnode WireGuard and the bare veth, in one run,
# between two network namespaces (issue 4's figures). A smaller sibling of
# throughput.sh: one twnode daemon per side carries all lines at once.
#
#   sudo benches/esp_throughput.sh                     # 3 rounds of 10 s tests
#   sudo ROUNDS=5 DURATION=5 benches/esp_throughput.sh
#
# Needs: cargo, iproute2, iperf3, ping. NO_BUILD=1 skips `cargo build --release`.
#
# Topology: A 203.0.113.10/24 and B 198.51.100.20/24 on one veth (tests' seed_pair).
# Lines (each A -> B, created on A, show-peer pasted on B), all on eth0:
#   wg          twnode WireGuard, VIPs 10.0.0.1/.2, MTU 1440
#   gre         plain GRE, VIPs 10.0.2.1/.2, MTU 1476
#   esp-chacha  GRE over ESP, ChaCha20-Poly1305, VIPs 10.0.3.1/.2, MTU 1442
#   esp-aes     GRE over ESP, AES-256-GCM (the esp-chacha line recreated), MTU 1442
# Per round and variant: iperf3 A -> B, one TCP stream and 4 streams, DURATION s each.
# Prints the median (min-max) per variant. Removes everything it created on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TWNODE=$ROOT/target/release/twnode

if [[ $(id -u) != 0 ]]; then
    echo "benches/esp_throughput.sh: run as root (it creates network namespaces)" >&2
    exit 1
fi
for tool in ip iperf3 ping python3; do
    command -v "$tool" >/dev/null || {
        echo "benches/esp_throughput.sh: $tool not found (scripts/deps.sh)" >&2
        exit 1
    }
done
if [[ -z ${NO_BUILD:-} ]]; then
    echo "==> cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
fi

TAG=$$
NS_A=twe-a-$TAG
NS_B=twe-b-$TAG
WORK=$(mktemp -d /tmp/twnode-esp-bench.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    done
    ip netns del "$NS_A" 2>/dev/null
    ip netns del "$NS_B" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

a() { ip netns exec "$NS_A" "$@"; }
b() { ip netns exec "$NS_B" "$@"; }
tw() { # side args...
    local side=$1
    shift
    ip netns exec "twe-$side-$TAG" "$TWNODE" --config "$WORK/$side.toml" \
        --control "$WORK/$side.sock" "$@"
}

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add eth0 netns "$NS_A" type veth peer name eth0 netns "$NS_B"
a ip addr add 203.0.113.10/24 dev eth0
b ip addr add 198.51.100.20/24 dev eth0
for s in a b; do
    $s ip link set lo up
    $s ip link set eth0 up
done
a ip route add default dev eth0
b ip route add default dev eth0

for side in a b; do
    ip netns exec "twe-$side-$TAG" "$TWNODE" daemon --config "$WORK/$side.toml" \
        --control "$WORK/$side.sock" --state-dir "$WORK/$side-state" \
        </dev/null >"$WORK/$side.log" 2>&1 &
    PIDS+=($!)
done
for side in a b; do
    for _ in $(seq 100); do tw "$side" line list >/dev/null 2>&1 && break; sleep 0.1; done
done

pair() { # name args... : create on A toward B, paste show-peer on B
    local name=$1
    shift
    tw a line create eth0 198.51.100.20 "$@" "$name" >/dev/null
    local peer
    peer=$(tw a line show-peer "$name" 2>/dev/null)
    peer=${peer/<parent>/eth0}
    peer=${peer//\'/}
    # shellcheck disable=SC2086
    tw b ${peer#twnode } >/dev/null
}

ENC=0x$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
AUTH=0x$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Positional: peer_vip local_vip (pair inserts the peer IP before them).
pair tunnel_wg 10.0.0.2 10.0.0.1 --type wireguard --mode server --listen-port 51820
pair gre1 10.0.2.2 10.0.2.1 --type gre
esp_line() { # cipher
    tw a line delete esp1 >/dev/null 2>&1 || true
    tw b line delete esp1 >/dev/null 2>&1 || true
    tw a line create eth0 198.51.100.20 10.0.3.2 10.0.3.1 esp1 --type ipsec --cipher "$1" \
        --enc-key "$ENC" --auth-key "$AUTH" >/dev/null
    tw b line create eth0 203.0.113.10 10.0.3.1 10.0.3.2 esp1 --type ipsec --cipher "$1" \
        --enc-key "$ENC" --auth-key "$AUTH" >/dev/null
    # Epoch keying (the default): the line carries traffic once both ends agreed on keys.
    for _ in $(seq 50); do
        tw a line show esp1 --json | grep -q '"state": "up"' && break
        sleep 0.1
    done
}
esp_line chacha20-poly1305
for _ in $(seq 100); do a ping -c 1 -W 1 10.0.0.2 >/dev/null 2>&1 && break; sleep 0.1; done

b iperf3 -s -D >/dev/null
sleep 0.3
measure() { # dst streams -> Mbit/s
    a iperf3 -c "$1" -t "$DURATION" -P "$2" -J 2>/dev/null |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))'
}

declare -A R1 R4
VARIANTS=(veth wg gre esp-chacha esp-aes)
dst_of() {
    case $1 in
    veth) echo 198.51.100.20 ;;
    wg) echo 10.0.0.2 ;;
    gre) echo 10.0.2.2 ;;
    esp-*) echo 10.0.3.2 ;;
    esac
}
echo "==> load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    for v in "${VARIANTS[@]}"; do
        case $v in
        esp-chacha) esp_line chacha20-poly1305 ;;
        esp-aes) esp_line aes-256-gcm ;;
        esac
        d=$(dst_of "$v")
        a ping -c 2 -W 1 "$d" >/dev/null
        one=$(measure "$d" 1)
        four=$(measure "$d" 4)
        R1[$v]+="$one "
        R4[$v]+="$four "
        echo "    round $round $v: 1 stream $one Mbit/s, 4 streams $four Mbit/s"
    done
done
echo "==> load after: $(cut -d' ' -f1-3 /proc/loadavg)"
summary() { # values...
    python3 -c 'import statistics,sys; v=sorted(map(int,sys.argv[1:])); print(f"{statistics.median(v):.0f} ({v[0]}-{v[-1]})")' "$@"
}
printf '\n%-12s %-22s %-22s\n' variant "1 stream Mbit/s" "4 streams Mbit/s"
for v in "${VARIANTS[@]}"; do
    # shellcheck disable=SC2086
    printf '%-12s %-22s %-22s\n' "$v" "$(summary ${R1[$v]})" "$(summary ${R4[$v]})"
done
echo
tw a line list
# The last ESP line's counters: drops (seq_not_reserved would mean the reservation task
# fell behind) and its sequence numbers.
tw a line show esp1 | grep -E "^(esp|drops):"
# The ESP sequence-number marks: past the first block (2^20 + 1 = 1048577 and up) when
# a run sent enough packets to need a second reservation.
for f in "$WORK"/*-state/*.seq; do echo "mark $(basename "$f"): $(cat "$f")"; done
