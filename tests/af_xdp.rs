//! AF_XDP transmit (`--af-xdp`): IP tunnel lines whose outer packets go to the next
//! hop's device through an AF_XDP socket, past the sending host's IP output path.
//! Between two twnode hosts in network namespaces; the receiving host's tshark reads
//! the frames, and the sender's kernel counters show its IP layer was skipped. With the
//! `fault-injection` feature, a failed wake-up sends no packet twice.

mod common;

use std::time::{Duration, Instant};

use common::node::{seed_pair, tcp_transfer, Node};
use common::raw::{add_ipv6_underlay, tshark_fields, Capture, B6};
use common::{dump_state, require_root_and_tools, Netns};

const B4: &str = "198.51.100.20";

/// `line show --json` parsed.
fn line_json(n: &Node, line: &str) -> serde_json::Value {
    serde_json::from_str(&n.cli_ok(&["line", "show", line, "--json"])).expect("json")
}

fn transmit(n: &Node, line: &str) -> String {
    line_json(n, line)["transmit"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Waits until `line` on `n` sends through AF_XDP to `mac`; returns what it says.
fn wait_af_xdp(n: &Node, line: &str, mac: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let t = transmit(n, line);
        if t.starts_with(&format!("AF_XDP on eth0 to {mac}")) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "line {line} does not send through AF_XDP to {mac}; it says {t:?}\n{}",
            n.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mac(ns: &Netns) -> String {
    ns.run_ok(&["cat", "/sys/class/net/eth0/address"])
        .trim()
        .to_string()
}

/// The kernel's count of IP packets that left through its output path: IPv4's
/// `OutTransmits` (Linux 6.3 and later; a raw socket's sends count there, not in
/// `OutRequests`), IPv6's `Ip6OutTransmits`.
fn out_transmits(ns: &Netns, v6: bool) -> u64 {
    if v6 {
        let snmp6 = ns.run_ok(&["cat", "/proc/net/snmp6"]);
        return snmp6
            .lines()
            .find_map(|l| l.strip_prefix("Ip6OutTransmits"))
            .and_then(|v| v.trim().parse().ok())
            .expect("Ip6OutTransmits in /proc/net/snmp6 (Linux 6.3 or later)");
    }
    let snmp = ns.run_ok(&["cat", "/proc/net/snmp"]);
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (
        ip.next().expect("Ip: names"),
        ip.next().expect("Ip: values"),
    );
    let at = names
        .split_whitespace()
        .position(|n| n == "OutTransmits")
        .expect("OutTransmits in /proc/net/snmp (Linux 6.3 or later)");
    values
        .split_whitespace()
        .nth(at)
        .expect("value")
        .parse()
        .expect("number")
}

/// A line of `kind` with `--af-xdp` on both ends: it sends through the kernel until
/// the neighbour is known, then through AF_XDP to the peer's MAC; ping and a 4 MB
/// transfer arrive intact (tshark on B reads well-formed frames) while A's IP output
/// path sees a fraction of the packets; SIGTERM leaves both hosts as they were.
fn af_xdp_line_carries_traffic_past_the_kernel(
    kind: &str,
    extra: &[&str],
    v6: bool,
    quiet_at_start: bool,
    (filter, stack): (&str, &str),
) {
    if !require_root_and_tools(&["ip", "ping", "python3", "tshark"]) {
        return;
    }
    let (a, b) = seed_pair(&format!("x{}", &kind[..3]));
    add_ipv6_underlay(&a, &b);
    let before_a = dump_state(&a);
    let before_b = dump_state(&b);
    let mut na = Node::start(&a);
    let mut nb = Node::start(&b);
    let peer_ip = if v6 { B6 } else { B4 };
    // Setting up the pair may have resolved B already; start without that entry.
    a.ip(&["neigh", "flush", "dev", "eth0"]);
    a.ip(&["-6", "neigh", "flush", "dev", "eth0"]);
    let mut create = vec![
        "line", "create", "eth0", peer_ip, "10.0.0.2", "10.0.0.1", "x1", "--type", kind, "--af-xdp",
    ];
    create.extend_from_slice(extra);
    na.cli_ok(&create);
    // No packet has gone to B yet, so the kernel has no neighbour entry for it: the
    // line says so and sends through the kernel, which resolves it. (A line that
    // carries IPv6 sends its TUN device's router solicitations at once, which resolve
    // B before anyone could look.)
    if quiet_at_start {
        let waiting = transmit(&na, "x1");
        assert!(
            waiting.starts_with("raw socket (AF_XDP waits: no resolved neighbour entry for"),
            "{waiting}"
        );
    }
    let peer = na.cli_ok(&["line", "show-peer", "x1"]);
    assert!(
        !peer.contains("--af-xdp"),
        "a choice of this host only: {peer}"
    );
    nb.paste(&format!("{} --af-xdp", peer.trim()), "eth0");
    let l = line_json(&na, "x1");
    assert!(
        l["options"]
            .as_array()
            .expect("options")
            .contains(&serde_json::json!("--af-xdp")),
        "{l}"
    );
    a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.2"]);
    let via = wait_af_xdp(&na, "x1", &mac(&b));
    assert!(via.ends_with(", mtu 1500"), "{via}");
    wait_af_xdp(&nb, "x1", &mac(&a));
    let shown = na.cli_ok(&["line", "show", "x1"]);
    assert!(
        shown.contains("transmit:        AF_XDP on eth0 to")
            && shown.contains("packets sent went through AF_XDP"),
        "{shown}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let capture = Capture::start(&b, "eth0", 3, dir.path());
    a.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.2"]);
    b.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.1"]);
    let file = capture.finish();
    let seen = tshark_fields(&file, filter, &["frame.protocols"]);
    assert!(
        seen.len() >= 3 && seen.iter().all(|p| p.starts_with(stack)),
        "{kind}: tshark on B read {seen:?}, expected {stack}"
    );

    let out_before = out_transmits(&a, v6);
    let before = line_json(&na, "x1");
    let tx_before = before["tx_packets"].as_u64().expect("tx_packets");
    let xdp_before = before["af_xdp_packets"].as_u64().expect("af_xdp_packets");
    let (sent, got) = tcp_transfer(&a, &b, "10.0.0.2", 5001, 4 << 20);
    assert_eq!(sent, got, "{kind}: 4 MB transfer checksum");
    let l = line_json(&na, "x1");
    let tx = l["tx_packets"].as_u64().expect("tx_packets") - tx_before;
    let out = out_transmits(&a, v6) - out_before;
    let xdp = l["af_xdp_packets"].as_u64().expect("af_xdp_packets") - xdp_before;
    // Through the raw socket every outer packet would count (out >= tx); what counts
    // now is the inner traffic (TSO super-packets into the TUN device) and the one
    // batch per supervisor pass that goes through the kernel.
    assert!(
        tx > 2000 && out * 3 < tx && xdp * 3 > tx * 2,
        "{kind}: {tx} packets sent, {xdp} through AF_XDP as the line counts them, {out} \
         through A's IP output path as the kernel does"
    );
    assert_eq!(l["drops"], serde_json::json!([]), "{kind}: no drops: {l}");
    assert!(
        transmit(&na, "x1").starts_with("AF_XDP on eth0"),
        "{}",
        na.log()
    );

    na.stop_daemon();
    nb.stop_daemon();
    assert_eq!(dump_state(&a), before_a, "A's state after SIGTERM");
    assert_eq!(dump_state(&b), before_b, "B's state after SIGTERM");
}

#[test]
fn gre_line_with_af_xdp_carries_traffic_past_the_kernel() {
    af_xdp_line_carries_traffic_past_the_kernel(
        "gre",
        &[],
        false,
        false,
        ("icmp.type == 8", "eth:ethertype:ip:gre:ip:icmp"),
    );
}

#[test]
fn ipip6_line_with_af_xdp_carries_traffic_past_the_kernel() {
    af_xdp_line_carries_traffic_past_the_kernel(
        "ipip6",
        &[],
        true,
        true,
        ("icmp.type == 8", "eth:ethertype:ipv6:ip:icmp"),
    );
}

/// GRE over ESP: the sealed packets take the same path (only ESP on the wire). Static
/// keying, which sends from the first packet (with epoch keying the line drops what its
/// kernel sends before the peer's end exists, and only its Hellos differ, which go
/// through the raw socket).
#[test]
fn encrypted_gre_line_with_af_xdp_carries_traffic_past_the_kernel() {
    af_xdp_line_carries_traffic_past_the_kernel(
        "ipsec",
        &[
            "--esp-keying",
            "static",
            "--enc-key",
            "0x9f8e7d6c5b4a39281716050403020100aabbccddeeff0011",
            "--auth-key",
            "0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f",
        ],
        false,
        false,
        ("esp && ip.src == 203.0.113.10", "eth:ethertype:ip:esp"),
    );
}

/// Issue 16 item 8: an AF_XDP wake-up that fails after a batch's frames are on the TX
/// ring (injected once with `fail-xdp-wake`) must not make the batch go out twice: the
/// frames on the ring are the kernel's to send with the port's next wake-up, so the line
/// counts them as sent and sends only the rest through the raw socket while it waits for
/// the next pass. A second line on the same device keeps the port open and wakes it
/// (with the port closed, what was on its ring would be dropped, not sent twice).
/// Numbered pings cross the fault; tshark on B sees every ICMP sequence number once.
#[test]
fn a_failed_af_xdp_wake_up_sends_no_packet_twice() {
    if !common::require_fault_injection(&["ip", "ping", "tshark"]) {
        return;
    }
    let (a, b) = seed_pair("xwake");
    let mut na = Node::new(&a);
    na.start_daemon_env(&["TWNODE_FAULT_INJECT=fail-xdp-wake:x1"]);
    let nb = Node::start(&b);
    // The capture covers the whole run. x1 is IPIP, which carries IPv4 only, so its
    // device sends nothing of its own (no IPv6 router solicitations): its first batch
    // through AF_XDP, the one whose wake-up fails, is a ping.
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = Capture::start(&b, "eth0", 14, dir.path());
    for (line, kind, peer_vip, local_vip) in [
        ("x1", "ipip", "10.0.0.2", "10.0.0.1"),
        ("x2", "gre", "10.0.1.2", "10.0.1.1"),
    ] {
        na.cli_ok(&[
            "line", "create", "eth0", B4, peer_vip, local_vip, line, "--type", kind, "--af-xdp",
        ]);
        nb.paste(&na.cli_ok(&["line", "show-peer", line]), "eth0");
    }
    let _x2 = a.spawn(&["ping", "-c", "80", "-i", "0.1", "10.0.1.2"]);
    let ping = a.exec(&["ping", "-c", "60", "-i", "0.1", "-W", "3", "10.0.0.2"]);
    let file = capture.finish();
    let log = na.log();
    assert!(
        log.contains("AF_XDP send on eth0 failed: wake-up failed (fault injected"),
        "the injected wake-up failure did not happen:\n{log}\n{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let xdp = line_json(&na, "x1")["af_xdp_packets"]
        .as_u64()
        .expect("af_xdp_packets");
    assert!(xdp > 0, "nothing went through AF_XDP:\n{log}");
    let seqs = tshark_fields(&file, "icmp.type == 8 && ip.src == 10.0.0.1", &["icmp.seq"]);
    let mut seen = std::collections::BTreeMap::new();
    for s in &seqs {
        *seen.entry(s.clone()).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "echo requests on B's wire more than once (sequence number, times): {twice:?}\n{log}"
    );
    assert!(
        seen.len() >= 58,
        "only {} of 60 echo requests reached B:\n{}",
        seen.len(),
        String::from_utf8_lossy(&ping.stdout)
    );
}
