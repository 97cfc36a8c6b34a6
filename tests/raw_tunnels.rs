//! IP tunnel lines (ipip, gre, sit, ip6ip6, ipip6, gre6) between two twnode hosts in
//! network namespaces, created as a user would: `line create` on A, `show-peer`, paste
//! on B. tshark, an independent decoder, reads what went over the wire.

mod common;

use std::time::{Duration, Instant};

use common::node::{seed_pair, tcp_transfer, Node};
use common::raw::{add_ipv6_underlay, block_protocols, tshark_fields, unblock, Capture, A6, B6};
use common::{dump_state, require_root_and_tools, Netns};

const A4: &str = "203.0.113.10";
const B4: &str = "198.51.100.20";

/// One tunnel type under test.
struct Case {
    kind: &'static str,
    /// The underlay is IPv6.
    v6: bool,
    /// The type carries IPv4 (its VIPs are then IPv4).
    carries_v4: bool,
    /// The type carries IPv6.
    carries_v6: bool,
    /// What tshark's `frame.protocols` must contain for an IPv4 / IPv6 ping.
    stack_v4: &'static str,
    stack_v6: &'static str,
}

const CASES: [Case; 6] = [
    Case {
        kind: "ipip",
        v6: false,
        carries_v4: true,
        carries_v6: false,
        stack_v4: "eth:ethertype:ip:ip:icmp",
        stack_v6: "",
    },
    Case {
        kind: "gre",
        v6: false,
        carries_v4: true,
        carries_v6: true,
        stack_v4: "eth:ethertype:ip:gre:ip:icmp",
        stack_v6: "eth:ethertype:ip:gre:ipv6:icmpv6",
    },
    Case {
        kind: "sit",
        v6: false,
        carries_v4: true,
        carries_v6: true,
        stack_v4: "eth:ethertype:ip:ip:icmp",
        stack_v6: "eth:ethertype:ip:ipv6:icmpv6",
    },
    Case {
        kind: "ip6ip6",
        v6: true,
        carries_v4: false,
        carries_v6: true,
        stack_v4: "",
        stack_v6: "eth:ethertype:ipv6:ipv6:icmpv6",
    },
    Case {
        kind: "ipip6",
        v6: true,
        carries_v4: true,
        carries_v6: false,
        stack_v4: "eth:ethertype:ipv6:ip:icmp",
        stack_v6: "",
    },
    Case {
        kind: "gre6",
        v6: true,
        carries_v4: true,
        carries_v6: true,
        stack_v4: "eth:ethertype:ipv6:gre:ip:icmp",
        stack_v6: "eth:ethertype:ipv6:gre:ipv6:icmpv6",
    },
];

fn case(kind: &str) -> &'static Case {
    CASES.iter().find(|c| c.kind == kind).expect("known type")
}

/// Two hosts with daemons, an IPv6 underlay beside the seed's IPv4 one.
fn hosts(prefix: &str) -> (Netns, Netns) {
    let (a, b) = seed_pair(prefix);
    add_ipv6_underlay(&a, &b);
    (a, b)
}

/// Creates `name` on A toward B (`line create`), then pastes the printed peer command
/// on B. Returns the peer command.
fn create_pair(
    na: &Node,
    nb: &Node,
    c: &Case,
    name: &str,
    vips: (&str, &str),
    options: &[&str],
) -> String {
    let peer_ip = if c.v6 { B6 } else { B4 };
    let mut args = vec![
        "line", "create", "eth0", peer_ip, vips.1, vips.0, name, "--type", c.kind,
    ];
    args.extend_from_slice(options);
    let created = na.cli_ok(&args);
    let peer = na.cli_ok(&["line", "show-peer", name]);
    let local = if c.v6 { A6 } else { A4 };
    assert!(
        peer.starts_with(&format!(
            "twnode line create <parent> {local} {} {} {name} --type {}",
            vips.0, vips.1, c.kind
        )),
        "{peer}"
    );
    assert!(
        created.contains(peer.trim()),
        "create prints the peer command:\n{created}"
    );
    nb.paste(&peer, "eth0");
    peer
}

fn ping(ns: &Netns, dst: &str) {
    ns.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", dst]);
}

/// Adds an IPv6 address on each end of a line that carries IPv6 but has IPv4 VIPs.
fn add_inner_ipv6(a: &Netns, b: &Netns, line: &str) {
    a.ip(&["-6", "addr", "add", "fd00:77::1/64", "dev", line, "nodad"]);
    b.ip(&["-6", "addr", "add", "fd00:77::2/64", "dev", line, "nodad"]);
}

/// `line show --json`'s drop counter `reason`.
fn drops(n: &Node, line: &str, reason: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&n.cli_ok(&["line", "show", line, "--json"])).expect("json");
    v["drops"]
        .as_array()
        .expect("drops")
        .iter()
        .find(|d| d[0] == reason)
        .and_then(|d| d[1].as_u64())
        .unwrap_or(0)
}

fn line_json(n: &Node, line: &str) -> serde_json::Value {
    serde_json::from_str(&n.cli_ok(&["line", "show", line, "--json"])).expect("json")
}

/// Ping both ways over every family the type carries, a 4 MB TCP transfer with
/// matching checksum, and tshark reading the capture as the expected stack.
fn carries_ping_and_tcp(kind: &str) {
    if !require_root_and_tools(&["ip", "ping", "python3", "tshark"]) {
        return;
    }
    let c = case(kind);
    let (a, b) = hosts(&kind[..3.min(kind.len())]);
    let before_a = dump_state(&a);
    let before_b = dump_state(&b);
    let mut na = Node::start(&a);
    let mut nb = Node::start(&b);
    let vips = if c.carries_v4 {
        ("10.0.0.1", "10.0.0.2")
    } else {
        ("fd00::1", "fd00::2")
    };
    create_pair(&na, &nb, c, "t1", vips, &[]);
    // The offload path (TSO reads split into segments, GRO-coalesced writes) is the
    // one under test here; scale_lines.rs covers the path without offloads.
    for n in [&na, &nb] {
        let log = n.log();
        assert!(
            log.lines()
                .any(|l| l.contains("ip tunnel line started") && l.contains("tso=true")),
            "{kind}: the line's TUN device should have offloads (IFF_VNET_HDR + TSO):\n{log}"
        );
    }
    // Without keepalive the line is up as soon as the data plane runs, and says that
    // liveness is unknown.
    let l = line_json(&na, "t1");
    assert_eq!(l["state"], "up", "{l}");
    assert!(
        l["reason"].as_str().unwrap_or("").contains("no keepalive"),
        "{l}"
    );
    if c.carries_v6 && c.carries_v4 {
        add_inner_ipv6(&a, &b, "t1");
    }
    let v6_dst = if c.carries_v4 { "fd00:77::2" } else { vips.1 };

    let dir = tempfile::tempdir().expect("tempdir");
    let capture = Capture::start(&b, "eth0", 3, dir.path());
    if c.carries_v4 {
        ping(&a, vips.1);
        ping(&b, vips.0);
    }
    if c.carries_v6 {
        ping(&a, v6_dst);
    }
    let file = capture.finish();
    for (carried, stack, icmp) in [
        (c.carries_v4, c.stack_v4, "icmp.type == 8"),
        (c.carries_v6, c.stack_v6, "icmpv6.type == 128"),
    ] {
        if !carried {
            continue;
        }
        let seen = tshark_fields(&file, icmp, &["frame.protocols"]);
        assert!(
            !seen.is_empty() && seen.iter().all(|p| p.starts_with(stack)),
            "{kind}: tshark read {seen:?}, expected {stack}"
        );
    }

    let (sent, got) = tcp_transfer(&a, &b, vips.1, 5001, 4 << 20);
    assert_eq!(sent, got, "{kind}: 4 MB transfer checksum");
    let l = line_json(&na, "t1");
    assert!(l["tx_bytes"].as_u64().unwrap_or(0) > 4 << 20, "{l}");
    assert_eq!(l["drops"], serde_json::json!([]), "{kind}: no drops: {l}");

    // SIGTERM removes everything: links, addresses, routes, rules as before.
    na.stop_daemon();
    nb.stop_daemon();
    assert_eq!(dump_state(&a), before_a, "A's state after SIGTERM");
    assert_eq!(dump_state(&b), before_b, "B's state after SIGTERM");
}

#[test]
fn ipip_line_carries_ping_and_tcp() {
    carries_ping_and_tcp("ipip");
}

#[test]
fn gre_line_carries_ipv4_and_ipv6_ping_and_tcp() {
    carries_ping_and_tcp("gre");
}

#[test]
fn sit_line_carries_ipv6_and_ipv4_ping_and_tcp() {
    carries_ping_and_tcp("sit");
}

#[test]
fn ip6ip6_line_carries_ping_and_tcp() {
    carries_ping_and_tcp("ip6ip6");
}

#[test]
fn ipip6_line_carries_ping_and_tcp() {
    carries_ping_and_tcp("ipip6");
}

#[test]
fn gre6_line_carries_ipv4_and_ipv6_ping_and_tcp() {
    carries_ping_and_tcp("gre6");
}

/// `--key --seq --csum` end to end; tshark sees the key, increasing sequence numbers and
/// good checksums.
#[test]
fn gre_key_seq_and_csum_work_end_to_end_and_tshark_reads_them() {
    if !require_root_and_tools(&["ip", "ping", "python3", "tshark"]) {
        return;
    }
    let (a, b) = hosts("grks");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    let peer = create_pair(
        &na,
        &nb,
        case("gre"),
        "gks",
        ("10.0.0.1", "10.0.0.2"),
        &["--key", "1.2.3.4", "--seq", "--csum"],
    );
    // The key comes back as typed (issue 22, item 8), in the peer command, in `line
    // show` and in the file, on both ends.
    assert!(
        peer.trim_end().ends_with("--key 1.2.3.4 --seq --csum"),
        "the peer gets the same key, sequence numbers and checksums: {peer}"
    );
    for (n, name) in [(&na, "A"), (&nb, "B")] {
        let shown = n.cli_ok(&["line", "show", "gks"]);
        assert!(
            shown.contains("options:         --key 1.2.3.4 --seq --csum"),
            "{name}: {shown}"
        );
        let file = n.config_text();
        assert!(
            file.contains("ikey = \"1.2.3.4\"") && file.contains("okey = \"1.2.3.4\""),
            "{name}: {file}"
        );
    }
    let l = line_json(&na, "gks");
    assert_eq!(l["mtu"], 1500 - 20 - 16, "{l}");

    let dir = tempfile::tempdir().expect("tempdir");
    let capture = Capture::start(&b, "eth0", 3, dir.path());
    ping(&a, "10.0.0.2");
    let file = capture.finish();
    let rows = tshark_fields(
        &file,
        "gre && ip.src == 203.0.113.10",
        &["gre.key", "gre.sequence_number", "gre.checksum.status"],
    );
    assert!(rows.len() >= 3, "{rows:?}");
    let mut last = None;
    for row in &rows {
        let f: Vec<&str> = row.split('\t').collect();
        assert_eq!(f[0], "0x01020304", "key 1.2.3.4: {row}");
        assert_eq!(f[2], "1", "tshark's checksum status 1 = good: {row}");
        let seq: u64 = f[1].parse().expect("sequence number");
        if let Some(prev) = last {
            assert!(seq > prev, "increasing sequence numbers: {rows:?}");
        }
        last = Some(seq);
    }
    let (sent, got) = tcp_transfer(&a, &b, "10.0.0.2", 5002, 2 << 20);
    assert_eq!(sent, got);
    for (n, name) in [(&na, "A"), (&nb, "B")] {
        let l = line_json(n, "gks");
        assert_eq!(l["drops"], serde_json::json!([]), "{name}: {l}");
    }
}

/// `--seq` after one end restarts: its counter starts again at 0, far below what the
/// other end expects. The other end follows the new sequence after a few packets
/// instead of dropping everything as out of order until the counter catches up.
#[test]
fn gre_seq_follows_a_peer_that_restarted() {
    if !require_root_and_tools(&["ip", "ping"]) {
        return;
    }
    let (a, b) = hosts("grsr");
    let na = Node::start(&a);
    let mut nb = Node::start(&b);
    create_pair(
        &na,
        &nb,
        case("gre"),
        "gsr",
        ("10.0.0.1", "10.0.0.2"),
        &["--seq"],
    );
    // Both counters well above what a restarted end sends for a while.
    b.run_ok(&["ping", "-c", "300", "-i", "0.002", "-q", "10.0.0.1"]);
    nb.stop_daemon();
    nb.start_daemon();
    nb.wait_state("gsr", "up", 10);
    let out = b.exec(&["ping", "-c", "10", "-i", "0.2", "-W", "1", "10.0.0.1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let received: u32 = text
        .lines()
        .find_map(|l| {
            l.split(", ")
                .nth(1)?
                .strip_suffix(" received")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(
        received >= 6,
        "after B's restart A must follow B's new sequence numbers within a few packets; \
         {received} of 10 pings answered:\n{text}\n{}",
        na.cli_ok(&["line", "show", "gsr"])
    );
    assert!(
        drops(&na, "gsr", "out_of_order") <= 4,
        "{}",
        na.cli_ok(&["line", "show", "gsr"])
    );
}

/// A peer that sends another key: its packets are dropped and counted as wrong_key.
#[test]
fn gre_key_mismatch_drops_packets_and_counts_them() {
    if !require_root_and_tools(&["ip", "ping"]) {
        return;
    }
    let (a, b) = hosts("grkm");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    na.cli_ok(&[
        "line", "create", "eth0", B4, "10.0.0.2", "10.0.0.1", "gkm", "--type", "gre", "--key", "7",
    ]);
    // B sends key 8 where A expects 7 (and expects 7 from A, which A sends).
    nb.cli_ok(&[
        "line", "create", "eth0", A4, "10.0.0.1", "10.0.0.2", "gkm", "--type", "gre", "--ikey",
        "7", "--okey", "8",
    ]);
    let out = b.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.0.0.1"]);
    assert!(!out.status.success(), "no reply may come back");
    assert!(
        drops(&na, "gkm", "wrong_key") >= 3,
        "{}",
        na.cli_ok(&["line", "show", "gkm"])
    );
    let shown = na.cli_ok(&["line", "show", "gkm"]);
    assert!(shown.contains("wrong_key"), "{shown}");
}

/// Two GRE lines to the same peer, told apart by their keys.
#[test]
fn two_gre_lines_to_the_same_peer_with_different_keys_both_work() {
    if !require_root_and_tools(&["ip", "ping"]) {
        return;
    }
    let (a, b) = hosts("gr2");
    let mut na = Node::start(&a);
    let nb = Node::start(&b);
    let c = case("gre");
    create_pair(&na, &nb, c, "g1", ("10.1.0.1", "10.1.0.2"), &["--key", "1"]);
    create_pair(&na, &nb, c, "g2", ("10.2.0.1", "10.2.0.2"), &["--key", "2"]);
    ping(&a, "10.1.0.2");
    ping(&a, "10.2.0.2");
    ping(&b, "10.1.0.1");
    for line in ["g1", "g2"] {
        let l = line_json(&nb, line);
        assert!(l["rx_packets"].as_u64().unwrap_or(0) >= 3, "{line}: {l}");
        // Between A's `line create g2` and B's paste, A's kernel already talks IPv6
        // on g2 (key 2): B counts those as wrong_key on g1, its first line to A. Any
        // other drop is a failure.
        let other: Vec<_> = l["drops"]
            .as_array()
            .expect("drops")
            .iter()
            .filter(|d| d[0] != "wrong_key")
            .collect();
        assert!(other.is_empty(), "{line}: {l}");
    }
    // A third line with a key already used toward that peer is refused, nothing changes.
    let before = na.config_text();
    let out = na.cli(&[
        "line", "create", "eth0", B4, "10.3.0.2", "10.3.0.1", "g3", "--type", "gre", "--key", "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("key 2") && err.contains("g2"), "{err}");
    assert_eq!(na.config_text(), before);

    // A restarted daemon brings both lines back from its config.
    na.stop_daemon();
    na.start_daemon();
    ping(&a, "10.1.0.2");
    ping(&a, "10.2.0.2");
}

/// Silencing the peer (nft drops its tunnel protocol) marks the line down within
/// RETRIES + 1 intervals; lifting it brings the line up again.
fn keepalive_tracks_a_silenced_peer(kind: &str, protocol: u8) {
    if !require_root_and_tools(&["ip", "ping", "nft"]) {
        return;
    }
    let c = case(kind);
    let (a, b) = hosts(&format!("k{}", &kind[..3.min(kind.len())]));
    let na = Node::start(&a);
    let nb = Node::start(&b);
    let vips = if c.carries_v4 {
        ("10.0.0.1", "10.0.0.2")
    } else {
        ("fd00::1", "fd00::2")
    };
    let peer = create_pair(&na, &nb, c, "ka", vips, &["--keepalive", "1,2"]);
    assert!(peer.contains("--keepalive 1,2"), "{peer}");
    na.wait_state("ka", "up", 5);
    nb.wait_state("ka", "up", 5);
    // The peer's traffic (its probes, its kernel's first packets) may bring the line up
    // before A's next probe comes back; that reply follows within the interval.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut l = line_json(&na, "ka");
    while l["keepalive"]["replies"].as_u64().unwrap_or(0) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        l = line_json(&na, "ka");
    }
    assert!(l["keepalive"]["replies"].as_u64().unwrap_or(0) >= 1, "{l}");
    assert_eq!(l["reason"], serde_json::Value::Null, "{l}");

    block_protocols(&b, &[protocol]);
    let silenced = Instant::now();
    // RETRIES + 1 = 3 intervals of 1 s, plus the 250 ms tick and the 100 ms poll.
    na.wait_state("ka", "down", 4);
    let took = silenced.elapsed();
    assert!(took <= Duration::from_millis(3600), "down after {took:?}");
    let list = na.cli_ok(&["line", "list"]);
    assert!(list.contains("✗ down"), "{list}");
    let shown = na.cli_ok(&["line", "show", "ka"]);
    assert!(shown.contains("no reply to the last"), "{shown}");

    unblock(&b);
    na.wait_state("ka", "up", 3);
    ping(&a, vips.1);
}

/// Issue 22, item 8: a keepalive line whose first probe went out before the peer
/// existed is up as soon as the peer's traffic arrives, not at the next probe's reply
/// (here 30 s later).
#[test]
fn a_keepalive_line_is_up_as_soon_as_the_peers_traffic_arrives() {
    if !require_root_and_tools(&["ip", "ping"]) {
        return;
    }
    let (a, b) = seed_pair("kdata");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    na.cli_ok(&[
        "line",
        "create",
        "eth0",
        B4,
        "10.0.0.2",
        "10.0.0.1",
        "ka",
        "--type",
        "gre",
        "--key",
        "7",
        "--keepalive",
        "30",
    ]);
    // A's first probe is gone (B had no line yet). B without keepalive of its own, so
    // only its traffic (its kernel's first IPv6 packets, the ping) tells A that it is
    // there.
    let peer = na.cli_ok(&["line", "show-peer", "ka"]);
    assert!(peer.contains(" --keepalive 30"), "{peer}");
    nb.paste(&peer.replace(" --keepalive 30", ""), "eth0");
    b.run_ok(&["ping", "-c", "1", "-W", "2", "10.0.0.1"]);
    na.wait_state("ka", "up", 2);
    let l = line_json(&na, "ka");
    assert_eq!(l["keepalive"]["replies"], 0, "{l}");
    assert_eq!(l["reason"], serde_json::Value::Null, "{l}");
}

#[test]
fn gre_keepalive_marks_a_silenced_peer_down_and_up_again() {
    keepalive_tracks_a_silenced_peer("gre", 47);
}

#[test]
fn ipip6_keepalive_marks_a_silenced_peer_down_and_up_again() {
    // The probe of an IPv4-in-IPv6 line is IPv6 in IPv6 (next header 41), its reply an
    // empty IPv4-in-IPv6 packet (next header 4): silence both.
    keepalive_tracks_a_silenced_peer("ipip6", 41);
}

#[test]
fn sit_keepalive_marks_a_silenced_peer_down_and_up_again() {
    keepalive_tracks_a_silenced_peer("sit", 4);
}

/// Each bad `line create` gets one clear line naming the argument, exit status 1, and
/// leaves the config and the host as they were.
#[test]
fn bad_ip_tunnel_arguments_are_refused_with_one_clear_line() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = hosts("rbad");
    let before = dump_state(&a);
    let na = Node::start(&a);
    let cases: [(&[&str], &[&str]); 8] = [
        (
            &[
                "eth0",
                "2001:db8::b",
                "10.0.0.2",
                "10.0.0.1",
                "x",
                "--type",
                "gre",
            ],
            &["<peer_ip>", "IPv4", "gre6"],
        ),
        (
            &["eth0", B4, "10.0.0.2", "10.0.0.1", "x", "--type", "ip6ip6"],
            &["<peer_ip>", "IPv6"],
        ),
        (
            &[
                "eth0",
                B4,
                "10.0.0.2",
                "10.0.0.1",
                "x",
                "--type",
                "gre",
                "--key",
                "4294967296",
            ],
            &["--key", "4294967296"],
        ),
        (
            &[
                "eth0", B4, "10.0.0.2", "10.0.0.1", "x", "--type", "ipip", "--seq",
            ],
            &["--seq", "gre"],
        ),
        (
            &[
                "eth0", B4, "10.0.0.2", "10.0.0.1", "x", "--type", "sit", "--key", "1",
            ],
            &["--key", "gre"],
        ),
        (
            &[
                "eth0", B4, "10.0.0.2", "10.0.0.1", "x", "--type", "gre", "--mtu", "1200",
            ],
            &["--mtu", "1280"],
        ),
        (
            &["eth0", B4, "fd00::2", "fd00::1", "x", "--type", "ipip"],
            &["<local_vip>", "IPv6"],
        ),
        (
            &[
                "eth0",
                B4,
                "10.0.0.2",
                "10.0.0.1",
                "x",
                "--type",
                "gre",
                "--keepalive",
                "5,0",
            ],
            &["--keepalive", "retries"],
        ),
    ];
    for (args, words) in cases {
        let mut full = vec!["line", "create"];
        full.extend_from_slice(args);
        let out = na.cli(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        for w in words {
            assert!(err.contains(w), "{args:?}: {err:?} should name {w:?}");
        }
        assert!(
            na.config_text().is_empty(),
            "config unchanged after {args:?}"
        );
    }
    drop(na);
    assert_eq!(dump_state(&a), before, "the host is unchanged");
}

/// `line delete` takes the line down and closes its socket: a second line of the same
/// protocol can then come and go, and the host ends as it began.
#[test]
fn line_delete_leaves_nothing_behind() {
    if !require_root_and_tools(&["ip", "ping"]) {
        return;
    }
    let (a, b) = hosts("rdel");
    let before = dump_state(&a);
    let na = Node::start(&a);
    let nb = Node::start(&b);
    let c = case("ipip");
    create_pair(&na, &nb, c, "d1", ("10.0.0.1", "10.0.0.2"), &[]);
    ping(&a, "10.0.0.2");
    na.cli_ok(&["line", "delete", "d1"]);
    assert!(!na.config_text().contains("d1"));
    assert_eq!(dump_state(&a), before, "A after line delete");
    // The same line again: the socket reopens.
    na.cli_ok(&[
        "line", "create", "eth0", B4, "10.0.0.2", "10.0.0.1", "d1", "--type", "ipip",
    ]);
    ping(&a, "10.0.0.2");
    na.cli_ok(&["line", "delete", "d1"]);
    assert_eq!(dump_state(&a), before, "A after the second delete");
}
