"""Per-hop latency of pings through a WireGuard tunnel, from four captures.

Called by benches/ping_hops.sh with the capture directory, the tunnel device names on
A and B and a display filter for the outer packets. Echo requests and replies are found
by ICMP sequence number on the tunnel devices; the outer packet that carried each is the
first one matching the filter (WireGuard: UDP length 124, an 84-byte ping in 32 bytes of
WireGuard; GRE: `gre`) on the veth after the packet left the tunnel device."""

import bisect
import statistics
import subprocess
import sys

work, if_a, if_b, outer = sys.argv[1:5]


def fields(pcap, flt, *names):
    args = ["tshark", "-r", pcap, "-Y", flt, "-T", "fields"]
    for n in names:
        args += ["-e", n]
    out = subprocess.run(args, capture_output=True, text=True, check=False).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def icmp(pcap, typ):
    return {int(s): float(t) for t, s in fields(pcap, f"icmp.type=={typ}", "frame.time_epoch", "icmp.seq")}


def datagrams(pcap, src):
    return sorted(float(t) for (t,) in fields(pcap, f"{outer} && ip.src=={src}", "frame.time_epoch"))


def first_after(times, t):
    i = bisect.bisect_left(times, t)
    return times[i] if i < len(times) else None


req_a, rep_a = icmp(f"{work}/a-{if_a}.pcap", 8), icmp(f"{work}/a-{if_a}.pcap", 0)
req_b, rep_b = icmp(f"{work}/b-{if_b}.pcap", 8), icmp(f"{work}/b-{if_b}.pcap", 0)
out_a = datagrams(f"{work}/a-eth0.pcap", "203.0.113.10")
in_a = datagrams(f"{work}/a-eth0.pcap", "198.51.100.20")
in_b = datagrams(f"{work}/b-eth0.pcap", "203.0.113.10")
out_b = datagrams(f"{work}/b-eth0.pcap", "198.51.100.20")

hops = {k: [] for k in ["A out", "wire", "B in", "B kernel", "B out", "wire back", "A in", "total"]}
for seq, t_req in sorted(req_a.items()):
    if seq not in req_b or seq not in rep_b or seq not in rep_a:
        continue
    t = [first_after(out_a, t_req), first_after(in_b, t_req), first_after(out_b, rep_b[seq]), first_after(in_a, rep_b[seq])]
    if None in t:
        continue
    sent_a, got_b, sent_b, got_a = t
    for k, v in [
        ("A out", sent_a - t_req),
        ("wire", got_b - sent_a),
        ("B in", req_b[seq] - got_b),
        ("B kernel", rep_b[seq] - req_b[seq]),
        ("B out", sent_b - rep_b[seq]),
        ("wire back", got_a - sent_b),
        ("A in", rep_a[seq] - got_a),
        ("total", rep_a[seq] - t_req),
    ]:
        hops[k].append(v * 1e6)

n = len(hops["total"])
print(f"    {n} pings matched (of {len(req_a)} requests seen)")
for k, v in hops.items():
    if v:
        v.sort()
        print(f"    {k:10s} median {statistics.median(v):7.1f} us   p10 {v[len(v) // 10]:7.1f}   p90 {v[9 * len(v) // 10]:7.1f}")
