#!/usr/bin/env bash
# End-to-end throughput harness: twnode WireGuard next to wireguard-go and plain veth,
# measured in one run, interleaved round by round, between two network namespaces.
#
# Run (as root, from anywhere in the repository):
#
#   sudo benches/throughput.sh                      # 5 rounds of 10 s tests
#   sudo ROUNDS=3 DURATION=5 benches/throughput.sh  # a quicker run
#
# Needs: cargo, iproute2, iperf3, ping, python3, wireguard-go, wg (wireguard-tools).
# Environment:
#   ROUNDS=5      rounds; every round measures every variant (order rotates per round)
#   DURATION=10   seconds per iperf3 test
#   PINGS=20      pings per RTT measurement (at -i 0.05)
#   OUT=bench-results   where the CSV and JSON go (gitignored)
#   NO_BUILD=1    skip `cargo build --release`
#   PERF=1        after the rounds, profile both twnode daemons with `perf record` during
#                 one more single-stream test; top symbols printed, data in $OUT
#
# Topology: namespace A (203.0.113.10/24) and B (198.51.100.20/24) on one veth, each
# with a default route to the other, as tests/common's seed_pair. Variants:
#   veth         iperf3 A -> B over the underlay (the ceiling)
#   twnode       a twnode WireGuard line, MTU 1420: server on A, pasted client on B,
#                VIPs 10.0.0.1 / 10.0.0.2
#   wireguard-go wireguard-go on both sides, MTU 1420, VIPs 10.0.1.1 / 10.0.1.2
# Each round starts the daemons afresh, waits for the handshake, idles 3 s (idle RSS),
# then runs iperf3 with one TCP stream (throughput and the sender's retransmits) and with
# 4 streams (A sends, B receives, TCP congestion control pinned to the namespace's
# default, which is printed) and 20 pings,
# and reads CPU seconds (utime+stime delta over those tests) and peak RSS (VmHWM) of
# every daemon from /proc. Ends with one table (median and min-max per metric, and the
# ratio twnode / wireguard-go) and writes $OUT/throughput-<time>.{csv,json}.
# Everything it creates (namespaces, daemons, wireguard-go sockets, temp files) is
# removed on exit, also on Ctrl-C.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
PINGS=${PINGS:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/bench-results}
TWNODE=$ROOT/target/release/twnode

if [[ $(id -u) != 0 ]]; then
    echo "benches/throughput.sh: run as root (it creates network namespaces)" >&2
    exit 1
fi
for tool in ip iperf3 ping python3 wireguard-go wg; do
    command -v "$tool" >/dev/null || {
        echo "benches/throughput.sh: $tool not found; install it (scripts/deps.sh)" >&2
        exit 1
    }
done

if [[ -z ${NO_BUILD:-} ]]; then
    echo "==> cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
fi

TAG=$$
NS_A=twb-a-$TAG
NS_B=twb-b-$TAG
WG_IF=twbwg$((TAG % 1000000)) # wireguard-go's socket path is global: unique name
WORK=$(mktemp -d /tmp/twnode-bench.XXXXXX)
RAW=$WORK/raw.csv
PIDS=()

cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    done
    ip netns del "$NS_A" 2>/dev/null
    ip netns del "$NS_B" 2>/dev/null
    rm -f "/var/run/wireguard/$WG_IF.sock"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

a() { ip netns exec "$NS_A" "$@"; }
b() { ip netns exec "$NS_B" "$@"; }

# Starts a background process, remembered for teardown; its pid in $STARTED.
start_bg() {
    local log=$1
    shift
    "$@" </dev/null >"$log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

# Stops a process we started (SIGTERM, then SIGKILL after 5 s).
stop_pid() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local kept=()
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

# Waits until `$@` succeeds, up to $1 tenths of a second.
wait_for() {
    local tenths=$1
    shift
    for _ in $(seq "$tenths"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

record() { # variant round metric value
    echo "$1,$2,$3,$4" >>"$RAW"
}

cpu_ticks() { # pid -> utime+stime in clock ticks
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

status_kib() { # pid field -> KiB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# --- the underlay ---------------------------------------------------------------
ip netns add "$NS_A"
ip netns add "$NS_B"
ip -n "$NS_A" link set lo up
ip -n "$NS_B" link set lo up
ip -n "$NS_A" link add eth0 type veth peer name eth0 netns "$NS_B"
ip -n "$NS_A" addr add 203.0.113.10/24 dev eth0
ip -n "$NS_B" addr add 198.51.100.20/24 dev eth0
ip -n "$NS_A" link set eth0 up
ip -n "$NS_B" link set eth0 up
ip -n "$NS_A" route add default via 198.51.100.20 dev eth0 onlink
ip -n "$NS_B" route add default via 203.0.113.10 dev eth0 onlink

CC=$(a sysctl -n net.ipv4.tcp_congestion_control)
CLK=$(getconf CLK_TCK)
start_bg "$WORK/iperf3.log" ip netns exec "$NS_B" iperf3 -s
wait_for 50 b bash -c 'ss -ltn | grep -q ":5201 "'

echo "==> $(nproc) CPUs, kernel $(uname -r), congestion control in the namespaces: $CC"
echo "==> load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the host skews results)"
echo "==> $ROUNDS rounds, iperf3 -t $DURATION -C $CC, $PINGS pings at -i 0.05"
echo "variant,round,metric,value" >"$RAW"

# --- the variants ---------------------------------------------------------------
# Each up_<variant> sets TARGET (B's address) and DAEMONS ("A:pid B:pid" or empty);
# each down_<variant> removes what up made.

up_veth() {
    TARGET=198.51.100.20
    DAEMONS=""
}
down_veth() { :; }

tw() { # ns-runner node args...
    local run=$1 node=$2
    shift 2
    $run "$TWNODE" --config "$WORK/$node/twnode.toml" --control "$WORK/$node/control.sock" "$@"
}

up_twnode() {
    rm -rf "$WORK/twa" "$WORK/twb"
    mkdir -p "$WORK/twa" "$WORK/twb"
    start_bg "$WORK/twa/daemon.log" ip netns exec "$NS_A" "$TWNODE" daemon \
        --config "$WORK/twa/twnode.toml" --control "$WORK/twa/control.sock"
    local pa=$STARTED
    start_bg "$WORK/twb/daemon.log" ip netns exec "$NS_B" "$TWNODE" daemon \
        --config "$WORK/twb/twnode.toml" --control "$WORK/twb/control.sock"
    local pb=$STARTED
    wait_for 100 tw a twa line list || { cat "$WORK/twa/daemon.log"; return 1; }
    wait_for 100 tw b twb line list || { cat "$WORK/twb/daemon.log"; return 1; }
    tw a twa line create eth0 198.51.100.20 10.0.0.2 10.0.0.1 tunnel_base \
        --type wireguard --mode server --listen-port 51820 --mtu 1420 >/dev/null
    local peer
    peer=$(tw a twa line show-peer tunnel_base 2>/dev/null)
    peer=${peer/<parent>/eth0}
    peer=${peer#twnode }
    # The peer command quotes its keys for a shell; eval reads them as one would.
    eval "tw b twb $peer --mtu 1420" >/dev/null
    wait_for 100 bash -c "ip netns exec $NS_A ping -c1 -W1 10.0.0.2" ||
        { echo "twnode line did not come up"; cat "$WORK"/tw?/daemon.log; return 1; }
    TARGET=10.0.0.2
    DAEMONS="$pa $pb"
}

down_twnode() {
    local pid
    for pid in $DAEMONS; do stop_pid "$pid"; done
}

up_wggo() {
    local ka kb
    ka=$(wg genkey)
    kb=$(wg genkey)
    echo "$ka" >"$WORK/wga.key"
    echo "$kb" >"$WORK/wgb.key"
    chmod 600 "$WORK"/wg?.key
    # Different names per side: the control socket's path is not per namespace.
    start_bg "$WORK/wga.log" ip netns exec "$NS_A" env WG_PROCESS_FOREGROUND=1 \
        wireguard-go -f "${WG_IF}a"
    local pa=$STARTED
    start_bg "$WORK/wgb.log" ip netns exec "$NS_B" env WG_PROCESS_FOREGROUND=1 \
        wireguard-go -f "${WG_IF}b"
    local pb=$STARTED
    wait_for 100 a wg show "${WG_IF}a"
    wait_for 100 b wg show "${WG_IF}b"
    a wg set "${WG_IF}a" private-key "$WORK/wga.key" listen-port 51821 \
        peer "$(echo "$kb" | wg pubkey)" allowed-ips 0.0.0.0/0
    b wg set "${WG_IF}b" private-key "$WORK/wgb.key" \
        peer "$(echo "$ka" | wg pubkey)" endpoint 203.0.113.10:51821 \
        allowed-ips 0.0.0.0/0 persistent-keepalive 25
    a ip addr add 10.0.1.1/32 peer 10.0.1.2 dev "${WG_IF}a"
    b ip addr add 10.0.1.2/32 peer 10.0.1.1 dev "${WG_IF}b"
    for side in a b; do
        $side ip link set "${WG_IF}$side" mtu 1420 up
    done
    wait_for 100 bash -c "ip netns exec $NS_A ping -c1 -W1 10.0.1.2" ||
        { echo "wireguard-go tunnel did not come up"; cat "$WORK"/wg?.log; return 1; }
    TARGET=10.0.1.2
    DAEMONS="$pa $pb"
}

down_wggo() {
    local pid
    for pid in $DAEMONS; do stop_pid "$pid"; done
    rm -f "/var/run/wireguard/${WG_IF}a.sock" "/var/run/wireguard/${WG_IF}b.sock"
}

iperf() { # streams -> "<bits per second received> <retransmitted segments>"
    local json
    json=$(a iperf3 -c "$TARGET" -t "$DURATION" -C "$CC" -P "$1" -J)
    python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]; print(int(e["sum_received"]["bits_per_second"]), e["sum_sent"].get("retransmits", 0))' <<<"$json"
}

measure() { # variant round
    local variant=$1 round=$2
    "up_$variant"
    local pids sides=(a b) i
    read -ra pids <<<"$DAEMONS"
    if ((${#pids[@]})); then
        sleep 3
        # The server side, A, with its one line (twnode) or interface (wireguard-go).
        record "$variant" "$round" idle_rss_kib "$(status_kib "${pids[0]}" VmRSS)"
    fi
    local before=()
    for i in "${!pids[@]}"; do before[i]=$(cpu_ticks "${pids[i]}"); done

    local single multi rtt retrans
    read -r single retrans <<<"$(iperf 1)"
    read -r multi _ <<<"$(iperf 4)"
    rtt=$(a ping -q -c "$PINGS" -i 0.05 "$TARGET" | awk -F/ '/^rtt|^round-trip/ { print $5 }')
    record "$variant" "$round" tcp1_gbps "$(python3 -c "print($single/1e9)")"
    record "$variant" "$round" tcp1_retrans "$retrans"
    record "$variant" "$round" tcp4_gbps "$(python3 -c "print($multi/1e9)")"
    record "$variant" "$round" rtt_ms "$rtt"

    for i in "${!pids[@]}"; do
        local ticks=$(($(cpu_ticks "${pids[i]}") - before[i]))
        record "$variant" "$round" "cpu_s_${sides[i]}" "$(python3 -c "print($ticks/$CLK)")"
        record "$variant" "$round" "peak_rss_kib_${sides[i]}" "$(status_kib "${pids[i]}" VmHWM)"
    done
    "down_$variant"
    printf '    %-12s 1 stream %6.2f Gbit/s   4 streams %6.2f Gbit/s   rtt %s ms\n' \
        "$variant" "$(python3 -c "print($single/1e9)")" "$(python3 -c "print($multi/1e9)")" "$rtt"
}

VARIANTS=(veth twnode wggo)
for round in $(seq "$ROUNDS"); do
    echo "==> round $round/$ROUNDS"
    # Rotate the order so no variant always runs first (or last) in a round.
    for k in "${!VARIANTS[@]}"; do
        measure "${VARIANTS[(k + round - 1) % ${#VARIANTS[@]}]}" "$round"
    done
done

echo "==> load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$OUT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)

# --- the profile (PERF=1) -------------------------------------------------------
if [[ -n ${PERF:-} ]]; then
    command -v perf >/dev/null || { echo "PERF=1 needs perf (apt-get install linux-perf)" >&2; exit 1; }
    echo "==> perf: twnode, one TCP stream for $DURATION s"
    up_twnode
    read -r pid_a pid_b <<<"$DAEMONS"
    start_bg "$WORK/perf-a.log" perf record -F 999 -g -p "$pid_a" -o "$OUT/perf-twnode-A-$STAMP.data"
    perf_a=$STARTED
    start_bg "$WORK/perf-b.log" perf record -F 999 -g -p "$pid_b" -o "$OUT/perf-twnode-B-$STAMP.data"
    perf_b=$STARTED
    sleep 0.5
    read -r single _ <<<"$(iperf 1)"
    echo "    $(python3 -c "print($single/1e9)") Gbit/s under perf"
    kill -INT "$perf_a" "$perf_b"
    wait "$perf_a" "$perf_b" 2>/dev/null || true
    down_twnode
    for side in A B; do
        echo "--- twnode $side ($([[ $side == A ]] && echo sender || echo receiver)): top symbols, self time"
        data=$OUT/perf-twnode-$side-$STAMP.data
        perf report -i "$data" --stdio --no-children -g none --sort dso 2>/dev/null |
            grep '%' | grep -v '^#' | head -4 || true
        perf report -i "$data" --stdio --no-children -g none --sort dso,sym 2>/dev/null |
            grep '%' | grep -v '^#' | head -20 || true
    done
fi

# --- the table ------------------------------------------------------------------
python3 - "$RAW" "$OUT/throughput-$STAMP" "$CC" "$ROUNDS" "$DURATION" <<'EOF'
import csv, json, statistics, sys, os, platform

raw, base, cc, rounds, duration = sys.argv[1:]
rows = list(csv.DictReader(open(raw)))
variants = ["veth", "twnode", "wggo"]
names = {"veth": "plain veth", "twnode": "twnode WG", "wggo": "wireguard-go"}
metrics = [
    ("tcp1_gbps", "TCP 1 stream, Gbit/s"),
    ("tcp1_retrans", "TCP 1 stream, retransmits"),
    ("tcp4_gbps", "TCP 4 streams, Gbit/s"),
    ("rtt_ms", "ping RTT avg, ms"),
    ("cpu_s_a", "CPU s, daemon A (sender)"),
    ("cpu_s_b", "CPU s, daemon B (receiver)"),
    ("peak_rss_kib_a", "peak RSS A, MiB"),
    ("peak_rss_kib_b", "peak RSS B, MiB"),
    ("idle_rss_kib", "idle RSS A (1 line), MiB"),
]
scale = {m: (1 / 1024 if m.endswith("kib") or "rss_kib" in m else 1) for m, _ in metrics}

summary = {}
for m, _ in metrics:
    for v in variants:
        vals = [float(r["value"]) * scale[m] for r in rows if r["variant"] == v and r["metric"] == m]
        if vals:
            summary[(m, v)] = {
                "median": statistics.median(vals), "min": min(vals), "max": max(vals),
                "n": len(vals), "values": vals,
            }

def cell(m, v):
    s = summary.get((m, v))
    if not s:
        return "-"
    f = {"rtt_ms": "{:.3f}", "tcp1_retrans": "{:.0f}"}.get(m, "{:.2f}")
    return f"{f.format(s['median'])} ({f.format(s['min'])}–{f.format(s['max'])})"

def ratio(m):
    t, w = summary.get((m, "twnode")), summary.get((m, "wggo"))
    if not t or not w or w["median"] == 0:
        return "-"
    return f"{t['median'] / w['median']:.2f}x"

header = ["metric (median, min–max)"] + [names[v] for v in variants] + ["twnode/wg-go"]
table = [header] + [[label] + [cell(m, v) for v in variants] + [ratio(m)] for m, label in metrics]
widths = [max(len(r[i]) for r in table) for i in range(len(header))]
print()
print(f"twnode throughput harness: {rounds} rounds, iperf3 -t {duration} -C {cc}, MTU 1420, "
      f"{os.cpu_count()} CPUs, kernel {platform.release()}")
for i, r in enumerate(table):
    print("  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip())
    if i == 0:
        print("  ".join("-" * w for w in widths))

with open(base + ".csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["metric", "variant", "median", "min", "max", "n", "values"])
    for (m, v), s in summary.items():
        w.writerow([m, v, s["median"], s["min"], s["max"], s["n"], " ".join(map(str, s["values"]))])
with open(base + ".json", "w") as f:
    json.dump({
        "rounds": int(rounds), "duration_s": int(duration), "congestion_control": cc,
        "cpus": os.cpu_count(), "kernel": platform.release(), "mtu": 1420,
        "labels": dict(metrics), "rss_unit": "MiB",
        "results": {m: {v: summary[(m, v)] for v in variants if (m, v) in summary} for m, _ in metrics},
        "ratio_twnode_wireguard_go": {
            m: summary[(m, "twnode")]["median"] / summary[(m, "wggo")]["median"]
            for m, _ in metrics
            if (m, "twnode") in summary and (m, "wggo") in summary and summary[(m, "wggo")]["median"]
        },
        "raw": rows,
    }, f, indent=2)
print(f"\nwritten: {base}.csv {base}.json")
EOF
