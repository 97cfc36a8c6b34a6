#!/usr/bin/env bash
# End-to-end throughput harness: twnode next to the userspace WireGuard peers and plain
# veth, measured in one run, interleaved round by round, between two network namespaces.
#
# Run (as root, from anywhere in the repository):
#
#   sudo benches/throughput.sh              # 3 rounds of 5 s tests, every variant (~10 min)
#   sudo QUICK=1 benches/throughput.sh      # 1 round of 3 s tests (~3 min)
#   sudo VARIANTS="veth twnode btun1" benches/throughput.sh   # a subset
#   sudo PERF=1 benches/throughput.sh       # plus a perf profile of both twnode daemons
#
# Needs: cargo, iproute2, iperf3, ping, python3, wireguard-go, wg (wireguard-tools).
# boringtun-cli and gotatun-cli are installed with `cargo install --locked` on first use
# (skipped with the reason in the table if that fails; BENCH_NO_INSTALL=1 never installs).
# Environment:
#   ROUNDS=3      rounds; every round measures every variant (order rotates per round)
#   DURATION=5    seconds per iperf3 test
#   PINGS=20      pings per RTT measurement
#   PING_INTERVAL=0.05  seconds between pings
#   PING_ONLY=1   measure ping only (no iperf3): for latency work, e.g.
#                 sudo PING_ONLY=1 ROUNDS=5 PINGS=100 VARIANTS="twnode btun1" benches/throughput.sh
#   QUICK=1       ROUNDS=1 DURATION=3 PINGS=10
#   VARIANTS=...  which variants, by key (default: all, see below)
#   OUT=bench-results   where the CSV and JSON go (gitignored)
#   NO_BUILD=1    skip `cargo build --release`
#   TWNODE_BIN=path   the twnode binary to measure (default target/release/twnode; with
#                 NO_BUILD=1, e.g. an older build to compare with)
#   TWNODE_OFFLOAD=0    passed to the twnode daemons: measure twnode without offloads
#   PERF=1        after the rounds, profile both twnode daemons with `perf record` during
#                 one more single-stream test; top symbols printed, data in $OUT
#   PERF_CG="--call-graph dwarf"   call graphs for PERF=1 (default -g: frame pointers)
#   PERF_VARIANT=twnode   which twnode variant PERF=1 profiles (twnode gre ipip grex ipipx wg2 wg3)
#
# Topology: namespace A (203.0.113.10/24) and B (198.51.100.20/24) on one veth, each
# with a default route to the other, as tests/common's seed_pair. Variants (key: what):
#   veth     iperf3 A -> B over the underlay (the ceiling), MTU 1500
#   twnode   a twnode WireGuard line, MTU 1420 (line create on A, pasted peer on B)
#   wggo     wireguard-go (Debian) on both sides, MTU 1420
#   btun     boringtun-cli at its defaults (4 threads), MTU 1420
#   btun1    boringtun-cli --threads 1, MTU 1420
#   gotatun  gotatun-cli at its defaults, MTU 1420
#   gre      a twnode GRE line (default MTU 1476)
#   ipip     a twnode IPIP line (default MTU 1480)
#   grex     a twnode GRE line with --af-xdp on both ends (AF_XDP transmit; iperf3
#            starts once both `line show`s say so)
#   ipipx    a twnode IPIP line with --af-xdp on both ends
#   wg2      twnode WireGuard on twnode WireGuard (seed scenario 1: tunnel_secure on
#            tunnel_base; MTU 1420 then the derived 1360), iperf3 over the inner line
#   wg3      a third WireGuard layer on top (derived MTU 1300)
#   rawmax   no tunnel: the kernel's ceiling for any userspace IP tunnel here, raw
#            protocol-47 sockets moving 1500-byte packets A -> B with sendmmsg and
#            recvmmsg of 64 and nothing else (examples/raw_ceiling.rs); 1-stream column
#            only
#   xdptx    as rawmax, but A sends the frames through an AF_XDP socket on its eth0
#            (examples/xdp_ceiling.rs): the ceiling for --af-xdp lines
# Each round starts the daemons afresh, waits for the tunnel, idles 2 s (idle RSS of A's
# daemon), then runs iperf3 with one TCP stream (throughput and the sender's
# retransmits) and with 4 streams (A sends, B receives, TCP congestion control pinned to
# bbr where the kernel has it, else the namespace's default; printed) and ping, and reads
# CPU seconds (utime+stime delta over those tests) and peak RSS (VmHWM) of every daemon
# from /proc. Ends with one table (median and min-max per metric), the ratios twnode
# needs to meet (issue 6), and writes $OUT/throughput-<time>.{csv,json}.
# Everything it creates (namespaces, daemons, UAPI sockets, temp files) is removed on
# exit, also on Ctrl-C.
set -euo pipefail

if [[ -n ${QUICK:-} ]]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-3}
    PINGS=${PINGS:-10}
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
PINGS=${PINGS:-20}
PING_INTERVAL=${PING_INTERVAL:-0.05}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/bench-results}
TWNODE=${TWNODE_BIN:-$ROOT/target/release/twnode}
RAW_CEILING=$ROOT/target/release/examples/raw_ceiling
XDP_CEILING=$ROOT/target/release/examples/xdp_ceiling
ALL_VARIANTS=(veth twnode wggo btun btun1 gotatun gre ipip grex ipipx rawmax xdptx wg2 wg3)
read -ra VARIANTS <<<"${VARIANTS:-${ALL_VARIANTS[*]}}"
export PATH=$PATH:${CARGO_HOME:-$HOME/.cargo}/bin

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
    (cd "$ROOT" && cargo build --release --quiet &&
        cargo build --release --quiet --example raw_ceiling --example xdp_ceiling)
fi

TAG=$$
NS_A=twb-a-$TAG
NS_B=twb-b-$TAG
WG_IF=twbwg$((TAG % 1000000)) # the UAPI socket path is global: unique names
WORK=$(mktemp -d /tmp/twnode-bench.XXXXXX)
RAW=$WORK/raw.csv
SKIPPED=$WORK/skipped.csv
PIDS=()
: >"$SKIPPED"

# --- the peers from crates.io (idempotent) -----------------------------------------
declare -A SKIP_WHY=()
install_crate() { # binary crate
    command -v "$1" >/dev/null && return 0
    [[ -n ${BENCH_NO_INSTALL:-} ]] && return 1
    echo "==> cargo install --locked $2 (first run only)"
    cargo install --locked --quiet "$2" >"$WORK/install-$2.log" 2>&1
}
want() { local v; for v in "${VARIANTS[@]}"; do [[ $v == "$1" ]] && return 0; done; return 1; }
if want btun || want btun1; then
    if ! install_crate boringtun-cli boringtun-cli; then
        why="boringtun-cli not installed: $(tail -1 "$WORK/install-boringtun-cli.log" 2>/dev/null || echo BENCH_NO_INSTALL)"
        SKIP_WHY[btun]=$why
        SKIP_WHY[btun1]=$why
    fi
fi
if want gotatun; then
    # The crate `gotatun` is a library only; its command line is the crate gotatun-cli.
    if ! install_crate gotatun gotatun-cli; then
        SKIP_WHY[gotatun]="gotatun-cli not installed: $(tail -1 "$WORK/install-gotatun-cli.log" 2>/dev/null || echo BENCH_NO_INSTALL)"
    fi
fi
if want rawmax && [[ ! -x $RAW_CEILING ]]; then
    SKIP_WHY[rawmax]="$RAW_CEILING not built: cargo build --release --example raw_ceiling"
fi
if want xdptx && [[ ! -x $XDP_CEILING || ! -x $RAW_CEILING ]]; then
    SKIP_WHY[xdptx]="$XDP_CEILING or raw_ceiling not built: cargo build --release --example xdp_ceiling --example raw_ceiling"
fi

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
    rm -f /var/run/wireguard/"$WG_IF"*.sock
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

if grep -qw bbr /proc/sys/net/ipv4/tcp_available_congestion_control 2>/dev/null ||
    a sysctl -q -w net.ipv4.tcp_congestion_control=bbr >/dev/null 2>&1; then
    CC=bbr
else
    CC=$(a sysctl -n net.ipv4.tcp_congestion_control)
fi
CLK=$(getconf CLK_TCK)
start_bg "$WORK/iperf3.log" ip netns exec "$NS_B" iperf3 -s
wait_for 50 b bash -c 'ss -ltn | grep -q ":5201 "'

echo "==> $(nproc) CPUs, kernel $(uname -r), congestion control pinned: $CC"
echo "==> load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the host skews results)"
echo "==> $ROUNDS rounds, iperf3 -t $DURATION -C $CC${PING_ONLY:+ (skipped: PING_ONLY)}, $PINGS pings at -i $PING_INTERVAL; variants: ${VARIANTS[*]}"
echo "==> twnode offloads: ${TWNODE_OFFLOAD:-on (TWNODE_OFFLOAD unset)}"
echo "variant,round,metric,value" >"$RAW"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the variants ---------------------------------------------------------------
# Each up_<variant> sets TARGET (B's address) and DAEMONS ("A-pid B-pid" or empty) and
# returns non-zero if the tunnel did not come up; each down_<variant> removes what up
# made.

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

# Starts a twnode daemon on each side; DAEMONS="A B".
tw_daemons() {
    rm -rf "$WORK/twa" "$WORK/twb"
    mkdir -p "$WORK/twa" "$WORK/twb"
    # Each daemon its own state directory: a daemon locks it (the default is the host's).
    start_bg "$WORK/twa/daemon.log" ip netns exec "$NS_A" "$TWNODE" daemon \
        --config "$WORK/twa/twnode.toml" --control "$WORK/twa/control.sock" \
        --state-dir "$WORK/twa/state"
    local pa=$STARTED
    start_bg "$WORK/twb/daemon.log" ip netns exec "$NS_B" "$TWNODE" daemon \
        --config "$WORK/twb/twnode.toml" --control "$WORK/twb/control.sock" \
        --state-dir "$WORK/twb/state"
    local pb=$STARTED
    DAEMONS="$pa $pb"
    wait_for 100 tw a twa line list || { cat "$WORK/twa/daemon.log"; return 1; }
    wait_for 100 tw b twb line list || { cat "$WORK/twb/daemon.log"; return 1; }
}

# A line created on A as the user would, its peer command pasted on B.
tw_line() { # parent peer_ip peer_vip local_vip name create-args...
    local parent=$1 peer_ip=$2 peer_vip=$3 local_vip=$4 name=$5
    shift 5
    tw a twa line create "$parent" "$peer_ip" "$peer_vip" "$local_vip" "$name" "$@" >/dev/null
    local peer
    peer=$(tw a twa line show-peer "$name" 2>/dev/null)
    peer=${peer/<parent>/$parent}
    peer=${peer#twnode }
    # The peer command quotes its keys for a shell; eval reads them as one would.
    # PEER_EXTRA: options of B's own choice that the peer command does not carry.
    eval "tw b twb $peer ${PEER_EXTRA:-}" >/dev/null
    wait_for 150 a ping -c1 -W1 "$peer_vip" ||
        { echo "twnode line $name did not come up"; cat "$WORK"/tw?/daemon.log; return 1; }
    TARGET=$peer_vip
}

up_twnode() {
    tw_daemons && tw_line eth0 198.51.100.20 10.0.0.2 10.0.0.1 tunnel_base \
        --type wireguard --mode server --listen-port 51820 --mtu 1420
}
up_wg2() {
    up_twnode && tw_line tunnel_base 10.0.0.2 172.16.0.2 172.16.0.1 tunnel_secure \
        --type wireguard --mode server --listen-port 51821
}
up_wg3() {
    up_wg2 && tw_line tunnel_secure 172.16.0.2 172.16.1.2 172.16.1.1 tunnel_third \
        --type wireguard --mode server --listen-port 51822
}
up_gre() { tw_daemons && tw_line eth0 198.51.100.20 10.0.5.2 10.0.5.1 gre5 --type gre; }
up_rawmax() { DAEMONS=""; }
down_rawmax() { :; }
up_ipip() { tw_daemons && tw_line eth0 198.51.100.20 10.0.6.2 10.0.6.1 ipip6 --type ipip; }
# AF_XDP transmit on both ends; iperf3 starts once both lines send through it.
xdp_ready() { # name
    wait_for 100 eval "tw a twa line show $1 | grep -q 'transmit: *AF_XDP' && tw b twb line show $1 | grep -q 'transmit: *AF_XDP'" ||
        { echo "line $1 does not send through AF_XDP:"; tw a twa line show "$1"; tw b twb line show "$1"; return 1; }
}
up_grex() {
    tw_daemons && PEER_EXTRA=--af-xdp tw_line eth0 198.51.100.20 10.0.7.2 10.0.7.1 grex7 --type gre --af-xdp &&
        xdp_ready grex7
}
up_ipipx() {
    tw_daemons && PEER_EXTRA=--af-xdp tw_line eth0 198.51.100.20 10.0.8.2 10.0.8.1 ipipx8 --type ipip --af-xdp &&
        xdp_ready ipipx8
}
up_xdptx() { DAEMONS=""; }
down_xdptx() { :; }

stop_daemons() {
    local pid
    for pid in $DAEMONS; do stop_pid "$pid"; done
}
down_twnode() { stop_daemons; }
down_wg2() { stop_daemons; }
down_wg3() { stop_daemons; }
down_gre() { stop_daemons; }
down_ipip() { stop_daemons; }
down_grex() { stop_daemons; }
down_ipipx() { stop_daemons; }

# A userspace WireGuard implementation driven through its UAPI socket with `wg`, like
# wireguard-go: interface <prefix><n>a on A, <n>b on B, VIPs 10.0.<n>.1 / .2.
up_uapi() { # n command...
    local n=$1
    shift
    local ka kb ifa=${WG_IF}${n}a ifb=${WG_IF}${n}b
    ka=$(wg genkey)
    kb=$(wg genkey)
    echo "$ka" >"$WORK/wg$n-a.key"
    echo "$kb" >"$WORK/wg$n-b.key"
    chmod 600 "$WORK"/wg"$n"-?.key
    start_bg "$WORK/wg$n-a.log" ip netns exec "$NS_A" env WG_PROCESS_FOREGROUND=1 WG_SUDO=1 \
        "$@" "$ifa"
    local pa=$STARTED
    start_bg "$WORK/wg$n-b.log" ip netns exec "$NS_B" env WG_PROCESS_FOREGROUND=1 WG_SUDO=1 \
        "$@" "$ifb"
    local pb=$STARTED
    DAEMONS="$pa $pb"
    wait_for 100 a wg show "$ifa" || { cat "$WORK/wg$n-a.log"; return 1; }
    wait_for 100 b wg show "$ifb" || { cat "$WORK/wg$n-b.log"; return 1; }
    a wg set "$ifa" private-key "$WORK/wg$n-a.key" listen-port $((51830 + n)) \
        peer "$(echo "$kb" | wg pubkey)" allowed-ips 0.0.0.0/0
    b wg set "$ifb" private-key "$WORK/wg$n-b.key" \
        peer "$(echo "$ka" | wg pubkey)" endpoint 203.0.113.10:$((51830 + n)) \
        allowed-ips 0.0.0.0/0 persistent-keepalive 25
    a ip addr add "10.0.$n.1/32" peer "10.0.$n.2" dev "$ifa"
    b ip addr add "10.0.$n.2/32" peer "10.0.$n.1" dev "$ifb"
    a ip link set "$ifa" mtu 1420 up
    b ip link set "$ifb" mtu 1420 up
    wait_for 100 a ping -c1 -W1 "10.0.$n.2" ||
        { echo "tunnel $* did not come up"; cat "$WORK"/wg"$n"-?.log; return 1; }
    TARGET=10.0.$n.2
}
down_uapi() { # n
    stop_daemons
    rm -f "/var/run/wireguard/${WG_IF}$1a.sock" "/var/run/wireguard/${WG_IF}$1b.sock"
}
up_wggo() { up_uapi 1 wireguard-go -f; }
down_wggo() { down_uapi 1; }
up_btun() { up_uapi 2 boringtun-cli -f --disable-drop-privileges -l "$WORK/btun.out"; }
down_btun() { down_uapi 2; }
up_btun1() { up_uapi 3 boringtun-cli -f --disable-drop-privileges -l "$WORK/btun1.out" --threads 1; }
down_btun1() { down_uapi 3; }
up_gotatun() { up_uapi 4 gotatun -f --disable-drop-privileges -l "$WORK/gotatun.out"; }
down_gotatun() { down_uapi 4; }

iperf() { # streams -> "<bits per second received> <retransmitted segments>"
    local json
    json=$(a iperf3 -c "$TARGET" -t "$DURATION" -C "$CC" -P "$1" -J) || { echo "0 0"; return; }
    python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]; print(int(e["sum_received"]["bits_per_second"]), e["sum_sent"].get("retransmits", 0))' <<<"$json"
}

measure() { # variant round
    local variant=$1 round=$2
    if [[ -n ${SKIP_WHY[$variant]:-} ]]; then
        return
    fi
    DAEMONS=""
    if ! "up_$variant" >"$WORK/up.log" 2>&1; then
        echo "    $variant did not come up (round $round); skipped:"
        sed 's/^/      /' "$WORK/up.log" | tail -5
        echo "$variant,round $round: did not come up" >>"$SKIPPED"
        "down_$variant" || true
        return
    fi
    local pids sides=(a b) i
    read -ra pids <<<"$DAEMONS"
    if ((${#pids[@]})); then
        sleep 2
        # The server side, A, with its line(s) (twnode) or interface.
        record "$variant" "$round" idle_rss_kib "$(status_kib "${pids[0]}" VmRSS)"
    fi
    local before=()
    for i in "${!pids[@]}"; do before[i]=$(cpu_ticks "${pids[i]}"); done

    local single multi rtt retrans
    if [[ $variant == rawmax || $variant == xdptx ]]; then
        local out=$WORK/$variant.out
        start_bg "$out" b "$RAW_CEILING" recv 198.51.100.20 "$DURATION"
        local receiver=$STARTED
        sleep 0.3
        if [[ $variant == rawmax ]]; then
            a "$RAW_CEILING" send 203.0.113.10 198.51.100.20 "$DURATION" 1500
        else
            a "$XDP_CEILING" send eth0 203.0.113.10 198.51.100.20 \
                "$(b cat /sys/class/net/eth0/address)" "$DURATION" 1500
        fi
        wait "$receiver" || true
        read -r single _ <"$out" || single=0
        record "$variant" "$round" tcp1_gbps "$(python3 -c "print(${single:-0}/1e9)")"
        printf '    %-8s ceiling %6.2f Gbit/s   load %s\n' "$variant" \
            "$(python3 -c "print(${single:-0}/1e9)")" "$(cut -d' ' -f1 /proc/loadavg)"
        return
    fi
    local throughput=""
    if [[ -z ${PING_ONLY:-} ]]; then
        read -r single retrans <<<"$(iperf 1)"
        read -r multi _ <<<"$(iperf 4)"
        single=$(python3 -c "print($single/1e9)")
        multi=$(python3 -c "print($multi/1e9)")
        record "$variant" "$round" tcp1_gbps "$single"
        record "$variant" "$round" tcp1_retrans "$retrans"
        record "$variant" "$round" tcp4_gbps "$multi"
        throughput=$(printf '1 stream %6.2f Gbit/s   4 streams %6.2f Gbit/s   ' "$single" "$multi")
    fi
    rtt=$(a ping -q -c "$PINGS" -i "$PING_INTERVAL" "$TARGET" | awk -F/ '/^rtt|^round-trip/ { print $5 }')
    record "$variant" "$round" rtt_ms "${rtt:-nan}"

    for i in "${!pids[@]}"; do
        local ticks=$(($(cpu_ticks "${pids[i]}") - before[i]))
        record "$variant" "$round" "cpu_s_${sides[i]}" "$(python3 -c "print($ticks/$CLK)")"
        record "$variant" "$round" "peak_rss_kib_${sides[i]}" "$(status_kib "${pids[i]}" VmHWM)"
    done
    "down_$variant"
    printf '    %-8s %srtt %s ms   load %s\n' "$variant" "$throughput" "$rtt" \
        "$(cut -d' ' -f1 /proc/loadavg)"
}

for v in "${!SKIP_WHY[@]}"; do
    echo "==> $v skipped: ${SKIP_WHY[$v]}"
    echo "$v,${SKIP_WHY[$v]}" >>"$SKIPPED"
done
for round in $(seq "$ROUNDS"); do
    echo "==> round $round/$ROUNDS"
    # Rotate the order so no variant always runs first (or last) in a round.
    for k in "${!VARIANTS[@]}"; do
        measure "${VARIANTS[(k + round - 1) % ${#VARIANTS[@]}]}" "$round"
    done
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
echo "==> load average at end: $LOAD_END"
mkdir -p "$OUT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)

# --- the profile (PERF=1) -------------------------------------------------------
if [[ -n ${PERF:-} ]]; then
    command -v perf >/dev/null || { echo "PERF=1 needs perf (apt-get install linux-perf)" >&2; exit 1; }
    PERF_VARIANT=${PERF_VARIANT:-twnode}
    case $PERF_VARIANT in
    twnode | gre | ipip | grex | ipipx | wg2 | wg3) ;;
    *) echo "PERF_VARIANT=$PERF_VARIANT: profiles only twnode, gre, ipip, grex, ipipx, wg2 or wg3" >&2; exit 1 ;;
    esac
    echo "==> perf: $PERF_VARIANT, one TCP stream for $DURATION s"
    "up_$PERF_VARIANT" >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; exit 1; }
    read -r pid_a pid_b <<<"$DAEMONS"
    # shellcheck disable=SC2086 # PERF_CG is a list of perf options
    start_bg "$WORK/perf-a.log" perf record -F 999 ${PERF_CG:--g} -p "$pid_a" -o "$OUT/perf-twnode-A-$STAMP.data"
    perf_a=$STARTED
    # shellcheck disable=SC2086
    start_bg "$WORK/perf-b.log" perf record -F 999 ${PERF_CG:--g} -p "$pid_b" -o "$OUT/perf-twnode-B-$STAMP.data"
    perf_b=$STARTED
    sleep 0.5
    read -r single _ <<<"$(iperf 1)"
    echo "    $(python3 -c "print($single/1e9)") Gbit/s under perf"
    kill -INT "$perf_a" "$perf_b"
    wait "$perf_a" "$perf_b" 2>/dev/null || true
    "down_$PERF_VARIANT"
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
python3 - "$RAW" "$OUT/throughput-$STAMP" "$CC" "$ROUNDS" "$DURATION" "$SKIPPED" \
    "$LOAD_START" "$LOAD_END" "${TWNODE_OFFLOAD:-on}" <<'PY'
import csv, json, statistics, sys, os, platform

raw, base, cc, rounds, duration, skipped, load_start, load_end, offload = sys.argv[1:]
rows = list(csv.DictReader(open(raw)))
skips = [l.rstrip("\n").split(",", 1) for l in open(skipped) if l.strip()]
variants = ["veth", "twnode", "wggo", "btun", "btun1", "gotatun", "gre", "ipip", "grex", "ipipx", "rawmax", "xdptx", "wg2", "wg3"]
names = {
    "veth": "plain veth", "twnode": "twnode WG", "wggo": "wireguard-go",
    "btun": "boringtun-cli", "btun1": "boringtun-cli -t1", "gotatun": "gotatun",
    "gre": "twnode GRE", "ipip": "twnode IPIP", "grex": "twnode GRE AF_XDP", "ipipx": "twnode IPIP AF_XDP",
    "rawmax": "raw socket ceiling", "xdptx": "AF_XDP tx ceiling", "wg2": "twnode WG x2", "wg3": "twnode WG x3",
}
metrics = [
    ("tcp1_gbps", "1 stream Gbit/s"),
    ("tcp4_gbps", "4 streams Gbit/s"),
    ("tcp1_retrans", "1-stream retr"),
    ("rtt_ms", "ping ms"),
    ("cpu_s_a", "CPU s A"),
    ("cpu_s_b", "CPU s B"),
    ("peak_rss_kib_a", "peak RSS A MiB"),
    ("peak_rss_kib_b", "peak RSS B MiB"),
    ("idle_rss_kib", "idle RSS A MiB"),
]
scale = {m: (1 / 1024 if "kib" in m else 1) for m, _ in metrics}

summary = {}
for m, _ in metrics:
    for v in variants:
        vals = [float(r["value"]) * scale[m] for r in rows
                if r["variant"] == v and r["metric"] == m and r["value"] not in ("", "nan")]
        if vals:
            summary[(m, v)] = {
                "median": statistics.median(vals), "min": min(vals), "max": max(vals),
                "n": len(vals), "values": vals,
            }

def fmt(m, x):
    return {"rtt_ms": "{:.3f}", "tcp1_retrans": "{:.0f}"}.get(m, "{:.2f}").format(x)

def cell(m, v):
    s = summary.get((m, v))
    if not s:
        return "-"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt(m, s["median"])
    return f"{fmt(m, s['median'])} ({fmt(m, s['min'])}–{fmt(m, s['max'])})"

present = [v for v in variants if any((m, v) in summary for m, _ in metrics)]
header = ["variant"] + [label for _, label in metrics]
table = [header] + [[names[v]] + [cell(m, v) for m, _ in metrics] for v in present]
widths = [max(len(r[i]) for r in table) for i in range(len(header))]
print()
print(f"twnode throughput harness: {rounds} rounds interleaved, iperf3 -t {duration} -C {cc}, "
      f"WireGuard MTU 1420, {os.cpu_count()} CPUs, kernel {platform.release()}, "
      f"load {load_start} -> {load_end}, twnode offloads {offload}")
print("median (min–max) over the rounds; CPU = utime+stime of each daemon over the tests")
for i, r in enumerate(table):
    print("  ".join(c.rjust(widths[j]) if j else c.ljust(widths[j]) for j, c in enumerate(r)).rstrip())
    if i == 0:
        print("  ".join("-" * w for w in widths))
for v, why in skips:
    print(f"not measured: {names.get(v, v)}: {why}")

def med(m, v):
    s = summary.get((m, v))
    return s["median"] if s else None

ratios = {}
def ratio(label, num, den, target=None, lower_is_better=False):
    if num is None or den is None or den == 0:
        return
    r = num / den
    ok = "" if target is None else ("  met" if (r <= target if lower_is_better else r >= target) else "  NOT met")
    ratios[label] = r
    tgt = "" if target is None else f"  (target {'<=' if lower_is_better else '>='} {target:g}x)"
    print(f"  {label:<52} {r:6.2f}x{tgt}{ok}")

print("\nratios (medians):")
peers = [p for p in ("wggo", "btun", "btun1", "gotatun") if med("tcp1_gbps", p)]
for p in peers:
    if p == "btun1":
        continue  # below, with its target
    ratio(f"twnode WG / {names[p]}, 1 stream", med("tcp1_gbps", "twnode"), med("tcp1_gbps", p))
    ratio(f"twnode WG / {names[p]}, 4 streams", med("tcp4_gbps", "twnode"), med("tcp4_gbps", p))
fastest = max(((med("tcp1_gbps", p), p) for p in peers if p != "btun1"), default=(None, None))
if fastest[0]:
    ratio(f"twnode WG / fastest default peer ({names[fastest[1]]})",
          med("tcp1_gbps", "twnode"), fastest[0], 3)
if med("tcp1_gbps", "btun1"):
    ratio("twnode WG / boringtun-cli -t1, 4 streams", med("tcp4_gbps", "twnode"), med("tcp4_gbps", "btun1"))
    ratio("twnode WG / boringtun-cli -t1, 1 stream", med("tcp1_gbps", "twnode"), med("tcp1_gbps", "btun1"), 3)
for v in ("twnode", "gre", "ipip", "grex", "ipipx"):
    ratio(f"{names[v]} / plain veth, 1 stream", med("tcp1_gbps", v), med("tcp1_gbps", "veth"),
          0.25 if v != "twnode" else None)
ratio("raw socket ceiling / plain veth", med("tcp1_gbps", "rawmax"), med("tcp1_gbps", "veth"))
ratio("AF_XDP tx ceiling / plain veth", med("tcp1_gbps", "xdptx"), med("tcp1_gbps", "veth"))
for v in ("gre", "ipip"):
    ratio(f"{names[v]} / raw socket ceiling, 1 stream", med("tcp1_gbps", v), med("tcp1_gbps", "rawmax"))
for v in ("grex", "ipipx"):
    ratio(f"{names[v]} / AF_XDP tx ceiling, 1 stream", med("tcp1_gbps", v), med("tcp1_gbps", "xdptx"))
    ratio(f"{names[v]} / {names[v[:-1]]}, 1 stream", med("tcp1_gbps", v), med("tcp1_gbps", v[:-1]))
ratio("twnode WG x2 / twnode WG, 1 stream", med("tcp1_gbps", "wg2"), med("tcp1_gbps", "twnode"), 0.5)
ratio("twnode WG x3 / twnode WG, 1 stream", med("tcp1_gbps", "wg3"), med("tcp1_gbps", "twnode"))
ratio("twnode WG ping / boringtun-cli ping", med("rtt_ms", "twnode"), med("rtt_ms", "btun"), 1, True)
ratio("twnode WG ping / wireguard-go ping", med("rtt_ms", "twnode"), med("rtt_ms", "wggo"))

with open(base + ".csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["metric", "variant", "median", "min", "max", "n", "values"])
    for (m, v), s in summary.items():
        w.writerow([m, v, s["median"], s["min"], s["max"], s["n"], " ".join(map(str, s["values"]))])
with open(base + ".json", "w") as f:
    json.dump({
        "rounds": int(rounds), "duration_s": int(duration), "congestion_control": cc,
        "cpus": os.cpu_count(), "kernel": platform.release(), "wireguard_mtu": 1420,
        "load_start": load_start, "load_end": load_end, "twnode_offload": offload,
        "variants": {v: names[v] for v in present}, "labels": dict(metrics), "rss_unit": "MiB",
        "results": {m: {v: summary[(m, v)] for v in present if (m, v) in summary} for m, _ in metrics},
        "ratios": ratios, "skipped": dict(skips), "raw": rows,
    }, f, indent=2)
print(f"\nwritten: {base}.csv {base}.json")
PY
