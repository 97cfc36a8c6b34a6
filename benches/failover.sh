#!/usr/bin/env bash
# Failover benchmark: how long traffic stops when an exit dies, and what a planned
# switch loses, at the default [failover] settings. Release build.
#
#   sudo benches/failover.sh              # 10 cuts of each kind, 10 rounds of planned switches
#   sudo CUTS=20 benches/failover.sh
#
# Five namespaces on one switch (tests/common/policy.rs's star): a client A with a
# WireGuard line to relay B1 and a GRE line to relay B2, a destination C behind both, a
# policy group on A sending C's prefix through b1 (preferred) or b2, and a flow of 100
# numbered UDP datagrams a second from A to C. B1 is cut CUTS times each way: an
# nftables drop of A's packets on B1, B1's link down at its switch port, B1's daemon
# killed with SIGKILL (each restored before the next: nftables rule deleted, link up,
# daemon restarted). For each cut the receiver on C gives the gap (the longest time
# without a datagram between the cut and traffic arriving through B2) and the
# datagrams lost; failback is the time from the restoration until traffic is back
# through B1. Then CUTS rounds of planned switches (`policy failover`, `line set-cost`
# twice, `policy set-priority`) and the datagrams they lost.
#
# It is the ignored test `failover_benchmark` in tests/failover.rs, run in release mode;
# it prints every cut, then the medians and worst cases. Needs root, iproute2, python3,
# nftables.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) == 0 ]] || { echo "benches/failover.sh: run as root" >&2; exit 1; }
cd "$ROOT"
echo "==> $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), CUTS=${CUTS:-10}"
CUTS=${CUTS:-10} CI=true cargo test --release --test failover -- --ignored --nocapture failover_benchmark
