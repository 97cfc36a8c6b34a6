//! Hostile traffic: a third host floods host A with random and malformed datagrams at
//! the WireGuard port of one line (among them handshake initiations that pass the MAC1
//! check, a handshake flood) and with raw IP packets of protocols 4, 41, 47 and 50, some
//! with the lines' peer address as source, while a neighbouring WireGuard line of A
//! carries a TCP stream. The daemon must stay up with bounded memory, count the drops,
//! answer the handshake flood with cookies (WireGuard's under-load path), keep serving
//! its control socket and other lines, and the neighbour line must keep carrying data.
//! Its throughput before, during and after the flood is reported, not asserted.
//!
//! The short flood runs in CI; the 30 s one is
//! `cargo test --test hostile -- --ignored --nocapture`.

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use common::node::{create_and_paste, seed_pair, Node, GRE_CREATE, SERVER_CREATE};
use common::raw::{add_ipv6_underlay, A6, B6};
use common::soak::{self, drops, drops_text, line_json};
use common::{require_root_and_tools, wait_for_log, Netns};

/// The attacker: sends for `secs` seconds from pools of prepared packets, cycling
/// through four kinds of UDP payloads at the WireGuard port and raw packets of
/// protocols 4, 41, 47 and 50, with its own or the peer's address as source. Prints
/// how many of each it sent, as JSON.
const FLOOD: &str = r#"
import base64, hashlib, json, os, random, socket, struct, sys, time
target, port, pub, spoof, own, secs = sys.argv[1], int(sys.argv[2]), base64.b64decode(sys.argv[3]), sys.argv[4], sys.argv[5], float(sys.argv[6])
random.seed(5)
mac1_key = hashlib.blake2s(b"mac1----" + pub).digest()
def rnd(n): return os.urandom(n)
def ipv4(proto, src, payload):
    # The kernel fills in the checksum and total length of an IP_HDRINCL packet.
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, random.randrange(65536), 0, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(target)) + payload
def udp(src, payload):
    return ipv4(17, src, struct.pack("!HHHH", random.randrange(1024, 65535), port, 8 + len(payload), 0) + payload)
def wg_random(): return rnd(random.randrange(0, 1400))
def wg_typed():
    t = random.choice([1, 2, 3, 4, 4, 4, 5, 0])
    size = {1: 148, 2: 92, 3: 64}.get(t, 32 + 16 * random.randrange(0, 80))
    size = random.choice([size, size, size - 1, size + 1, 4, 5])
    return (bytes([t, 0, 0, 0]) + rnd(max(size, 4)))[:max(size, 1)]
def wg_init():
    msg = bytes([1, 0, 0, 0]) + rnd(4 + 32 + 48 + 28)
    return msg + hashlib.blake2s(msg, digest_size=16, key=mac1_key).digest() + bytes(16)
def gre():
    flags = random.choice([0x0000, 0x2000, 0x8000, 0x1000, 0xB000, 0xffff, 0x0007])
    ptype = random.choice([0x0800, 0x86DD, 0x6558, random.randrange(65536)])
    extra = rnd(4 * bin(flags & 0xB000).count("1"))
    if flags & 0x2000 and random.random() < 0.5:
        extra = struct.pack("!I", 7) + extra[4:]
    return (struct.pack("!HH", flags, ptype) + extra + inner())[:random.choice([2, 4, 8, 2000])]
def inner():
    v = random.choice([0x45, 0x60, 0x4f, 0x00, 0x46])
    return bytes([v]) + rnd(random.randrange(0, 1200))
def esp(): return rnd(random.randrange(0, 600))
raw = {4: inner, 41: inner, 47: gre, 50: esp}
kinds = ["wg_random", "wg_typed", "wg_init"] + ["raw%d" % p for p in raw]
pool = []
for i in range(6000):
    src = spoof if i % 3 == 0 else own
    k = kinds[i % len(kinds)]
    if k == "wg_random": pkt = udp(src, wg_random())
    elif k == "wg_typed": pkt = udp(src, wg_typed())
    elif k == "wg_init": pkt = udp(own, wg_init())
    else:
        p = int(k[3:])
        pkt = ipv4(p, src, raw[p]())
    pool.append((k, pkt))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
start = time.monotonic()
print("flooding", flush=True)
sent = dict.fromkeys(kinds, 0)
errors = 0
end = time.monotonic() + secs
i = 0
while True:
    if i % 512 == 0 and time.monotonic() > end: break
    k, pkt = pool[i % len(pool)]
    try:
        s.sendto(pkt, (target, 0))
        sent[k] += 1
    except OSError:
        errors += 1
    i += 1
print(json.dumps({"sent": sent, "errors": errors, "total": sum(sent.values()), "start": start, "end": time.monotonic()}))
"#;

const A_ATTACKED: &str = "192.0.2.1";
const ATTACKER: &str = "192.0.2.66";

/// A third host on a second link of A (A's eth1 192.0.2.1, attacker 192.0.2.66).
fn attacker(a: &Netns) -> Netns {
    let c = Netns::new("hostc");
    a.ip(&[
        "link",
        "add",
        "eth1",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        c.name(),
    ]);
    a.ip(&["addr", "add", &format!("{A_ATTACKED}/24"), "dev", "eth1"]);
    a.ip(&["link", "set", "eth1", "up"]);
    c.ip(&["addr", "add", &format!("{ATTACKER}/24"), "dev", "eth0"]);
    c.ip(&["link", "set", "eth0", "up"]);
    c.ip(&["route", "add", "default", "via", A_ATTACKED, "dev", "eth0"]);
    // The spoofed packets (the peer's address as source) arrive on eth1: no reverse
    // path filter, as on a host with asymmetric routes.
    for conf in ["all", "default", "eth1"] {
        a.run_ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{conf}.rp_filter=0"),
        ]);
    }
    c
}

/// The neighbour line's traffic: one TCP stream over it for the whole test, its
/// receiver noting (CLOCK_MONOTONIC seconds, bytes so far) every 0.1 s, so the rate
/// before, during and after the flood comes from the same connection.
const STREAM_RX: &str = r#"
import json, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(30)
c, _ = s.accept(); c.settimeout(30)
total = 0; samples = [(time.monotonic(), 0)]; last = samples[0][0]
while True:
    b = c.recv(262144)
    if not b: break
    total += len(b); now = time.monotonic()
    if now - last >= 0.1: samples.append((now, total)); last = now
samples.append((time.monotonic(), total))
print(json.dumps(samples))
"#;

const STREAM_TX: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
chunk = bytes(65536); end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end: s.sendall(chunk)
s.close()
"#;

/// Mbit/s of the stream between `from` and `to` (monotonic seconds), from the samples
/// inside that window.
fn rate(samples: &[(f64, u64)], from: f64, to: f64) -> f64 {
    let inside: Vec<&(f64, u64)> = samples
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .collect();
    match (inside.first(), inside.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) as f64 * 8.0 / (b.0 - a.0) / 1e6,
        _ => 0.0,
    }
}

/// `Udp: InDatagrams ... RcvbufErrors` of /proc/net/snmp in `ns`: (received by
/// sockets, dropped because a socket's buffer was full).
fn udp_snmp(ns: &Netns) -> (u64, u64) {
    let text = ns.run_ok(&["cat", "/proc/net/snmp"]);
    let mut rows = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (
        rows.next().expect("Udp header"),
        rows.next().expect("Udp values"),
    );
    let field = |name: &str| {
        let i = names
            .split_whitespace()
            .position(|n| n == name)
            .expect(name);
        values
            .split_whitespace()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .expect(name)
    };
    (field("InDatagrams"), field("RcvbufErrors"))
}

/// One flood at a time: two floods on 2 cores would measure each other.
static ONE_FLOOD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_flood() -> std::sync::MutexGuard<'static, ()> {
    ONE_FLOOD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn report(text: &str) {
    // Straight to fd 2: libtest swallows eprintln! of passing tests.
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn flood_while_a_line_carries_traffic(secs: u32) {
    if !require_root_and_tools(&["ip", "ping", "python3", "sysctl", "env"]) {
        return;
    }
    let _one = one_flood();
    let (a, b) = seed_pair("hostile");
    let c = attacker(&a);
    let na = Node::new(&a);
    let nb = Node::start(&b);
    let mut daemon = soak::spawn_daemon_with_env(&na, &[]);
    let pid = daemon.id();
    // tunnel_base is attacked at its port; tunnel_two, its neighbour on A, carries the
    // measured stream.
    na.cli_ok(SERVER_CREATE);
    nb.paste(&na.cli_ok(&["line", "show-peer", "tunnel_base"]), "eth0");
    na.cli_ok(&[
        "line",
        "create",
        "eth0",
        "198.51.100.20",
        "10.0.1.2",
        "10.0.1.1",
        "tunnel_two",
        "--type",
        "wireguard",
        "--mode",
        "server",
        "--listen-port",
        "51822",
    ]);
    nb.paste(&na.cli_ok(&["line", "show-peer", "tunnel_two"]), "eth0");
    na.wait_state("tunnel_base", "up", 10);
    na.wait_state("tunnel_two", "up", 10);
    // IP tunnel lines on A, so the raw packets reach their decapsulation: GRE with a
    // key (also on B, to ping over it), IPIP and SIT toward the same peer.
    create_and_paste(&na, &nb, GRE_CREATE, "eth0");
    for (name, kind, peer, local) in [
        ("ipip1", "ipip", "10.9.1.2", "10.9.1.1"),
        ("sit1", "sit", "10.9.2.2", "10.9.2.1"),
    ] {
        na.cli_ok(&[
            "line",
            "create",
            "eth0",
            "198.51.100.20",
            peer,
            local,
            name,
            "--type",
            kind,
        ]);
    }
    let public = line_json(&na, "tunnel_base")["public_key"]
        .as_str()
        .expect("public key")
        .to_string();

    // The neighbour line's stream, B -> A, from 2 s before the flood to after it.
    let mut rx = a.spawn(&["python3", "-c", STREAM_RX, "10.0.1.1", "5202"]);
    std::thread::sleep(Duration::from_millis(400));
    let mut tx = b.spawn(&[
        "python3",
        "-c",
        STREAM_TX,
        "10.0.1.1",
        "5202",
        &(secs + 5).to_string(),
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let rss_before = soak::rss_kib(pid);
    let before: Vec<serde_json::Value> = ["tunnel_base", "gre1", "ipip1", "sit1"]
        .iter()
        .map(|l| line_json(&na, l))
        .collect();

    let udp_before = udp_snmp(&a);
    let mut flood = c.spawn(&[
        "python3",
        "-c",
        FLOOD,
        "203.0.113.10",
        "51820",
        &public,
        "198.51.100.20",
        ATTACKER,
        &secs.to_string(),
    ]);
    // Let the attacker build its pools, then measure the line under the flood.
    wait_for_log(
        || flood.log(),
        "flooding",
        20,
        Duration::from_millis(50),
        "the flood never started",
    );
    let started = Instant::now();
    // During the flood: the control socket answers and the raw sockets are read (a
    // socket that never drains must not keep the runtime to itself).
    std::thread::sleep(Duration::from_secs(1));
    let during = line_json(&na, "gre1");
    let answered = started.elapsed().as_secs_f64();
    assert!(
        soak::alive(&mut flood),
        "the flood ({secs} s) ended before the daemon answered `line show` ({answered:.1} s)"
    );
    let measure = secs.saturating_sub(2).max(2);
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        let deadline = Instant::now() + Duration::from_secs(u64::from(measure) + 1);
        while Instant::now() < deadline {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(kib) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    peak = peak.max(kib);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        peak
    });
    let mut gre_ping = a.spawn(&[
        "ping",
        "-i",
        "0.2",
        "-w",
        &measure.to_string(),
        "-W",
        "1",
        "10.9.0.2",
    ]);
    let mut attacked_ping = a.spawn(&[
        "ping",
        "-i",
        "0.2",
        "-w",
        &measure.to_string(),
        "-W",
        "1",
        "10.0.0.2",
    ]);
    let _ = gre_ping.child.wait();
    let _ = attacked_ping.child.wait();
    let attacked_summary = attacked_ping
        .log()
        .lines()
        .find(|l| l.contains("packet loss"))
        .unwrap_or("no summary")
        .to_string();
    let gre_summary = gre_ping
        .log()
        .lines()
        .find(|l| l.contains("packet loss"))
        .unwrap_or("no summary")
        .to_string();
    let rss_peak = sampler.join().expect("sampler");
    // Still during the flood: the control socket answers and the raw sockets are read
    // (a socket that never drains must not keep the runtime to itself).
    let status = flood.child.wait().expect("wait for the flood");
    let flood_log = flood.log();
    assert!(status.success(), "the flood script failed:\n{flood_log}");
    let sent: serde_json::Value = serde_json::from_str(flood_log.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {flood_log}"));
    let flood_secs = sent["end"].as_f64().unwrap_or(0.0) - sent["start"].as_f64().unwrap_or(0.0);
    let tx_status = tx.child.wait().expect("wait for the stream's sender");
    let _ = rx.child.wait();
    let samples: Vec<(f64, u64)> = serde_json::from_str(rx.log().trim())
        .unwrap_or_else(|e| panic!("stream receiver ({e}):\n{}\n{}", rx.log(), tx.log()));
    assert!(
        tx_status.success(),
        "the neighbour line's TCP stream broke:\n{}",
        tx.log()
    );
    let (flood_start, flood_end) = (
        sent["start"].as_f64().unwrap_or(0.0),
        sent["end"].as_f64().unwrap_or(0.0),
    );
    let first = samples.first().map_or(0.0, |s| s.0);
    let last = samples.last().map_or(0.0, |s| s.0);
    let baseline = rate(&samples, first + 0.5, flood_start);
    let under_flood = rate(&samples, flood_start + 0.5, flood_end);
    let after_flood = rate(&samples, flood_end + 0.5, last);

    assert!(
        soak::alive(&mut daemon),
        "the daemon died under the flood:\n{}",
        daemon.log()
    );
    let rss_after = soak::rss_kib(pid);
    let udp_after = udp_snmp(&a);
    a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.2"]);
    a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.9.0.2"]);
    let after: Vec<serde_json::Value> = ["tunnel_base", "gre1", "ipip1", "sit1"]
        .iter()
        .map(|l| line_json(&na, l))
        .collect();
    let moved = |i: usize, reason: &str| drops(&after[i], reason) - drops(&before[i], reason);

    report(&format!(
        "hostile flood ({secs} s): attacker sent {} packets ({:.0}/s; {}), {} send errors\n\
         neighbour line tunnel_two B->A (one TCP stream): {:.1} Mbit/s before the flood, {:.1} Mbit/s \
         during it, {after_flood:.1} Mbit/s after\n\
         `line show` answered {answered:.1} s into the flood\n\
         ping over gre1 during the flood: {gre_summary}\n\
         ping over the attacked line tunnel_base during the flood: {attacked_summary}\n\
         A's UDP sockets took {} datagrams; the kernel dropped {} on full socket buffers\n\
         daemon RSS: {} KiB before, peak {} KiB during, {} KiB after\n\
         drops: tunnel_base {} | gre1 {} | ipip1 {} | sit1 {}",
        sent["total"],
        sent["total"].as_f64().unwrap_or(0.0) / flood_secs,
        sent["sent"],
        sent["errors"],
        baseline,
        under_flood,
        udp_after.0 - udp_before.0,
        udp_after.1 - udp_before.1,
        rss_before,
        rss_peak,
        rss_after,
        drops_text(&after[0]),
        drops_text(&after[1]),
        drops_text(&after[2]),
        drops_text(&after[3]),
    ));

    assert!(sent["total"].as_u64().unwrap_or(0) > 1000, "{flood_log}");
    assert!(
        under_flood > 0.0,
        "the line carried nothing during the flood"
    );
    // WireGuard's cookie path: initiations beyond 10 a second get a cookie reply.
    assert!(
        moved(0, "under_load") > 0,
        "the handshake flood never put the line under load: {}",
        drops_text(&after[0])
    );
    for reason in ["malformed", "unknown_session", "bad_auth"] {
        assert!(moved(0, reason) > 0, "{reason}: {}", drops_text(&after[0]));
    }
    // Spoofed raw packets from the peer's address reach the IP tunnel lines' checks,
    // also while the flood runs.
    let total = |v: &serde_json::Value| -> u64 {
        v["drops"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x[1].as_u64()).sum())
            .unwrap_or(0)
    };
    assert!(
        total(&during) > total(&before[1]),
        "gre1's raw socket was not read during the flood: {}",
        drops_text(&during)
    );
    for (i, name) in [(1, "gre1"), (2, "ipip1"), (3, "sit1")] {
        assert!(
            total(&after[i]) > total(&before[i]),
            "{name} counted no drop: {}",
            drops_text(&after[i])
        );
    }
    // Memory: bounded (buffers are per worker thread, nothing grows per packet).
    let bound = rss_before + 16 * 1024;
    assert!(
        rss_peak <= bound && rss_after <= bound,
        "RSS grew from {rss_before} KiB to peak {rss_peak} KiB / after {rss_after} KiB"
    );
    soak::stop(&mut daemon);
}

#[test]
fn flood_of_malformed_datagrams_and_raw_packets_leaves_the_daemon_up_and_the_line_working() {
    flood_while_a_line_carries_traffic(8);
}

#[test]
#[ignore = "30 s soak: cargo test --test hostile -- --ignored --nocapture"]
fn thirty_second_flood_leaves_the_daemon_up_and_the_line_working() {
    flood_while_a_line_carries_traffic(30);
}

/// With one runtime worker (`TOKIO_WORKER_THREADS=1`), a line's socket that the flood
/// never lets drain must still leave room for the control socket and the other lines.
#[test]
fn a_flooded_socket_does_not_starve_the_control_socket_or_other_lines_on_one_worker() {
    if !require_root_and_tools(&["ip", "python3", "sysctl", "env"]) {
        return;
    }
    let _one = one_flood();
    let (a, b) = seed_pair("starve");
    let c = attacker(&a);
    let na = Node::new(&a);
    let _nb = Node::new(&b);
    let mut daemon = soak::spawn_daemon_with_env(&na, &[("TOKIO_WORKER_THREADS", "1")]);
    na.cli_ok(SERVER_CREATE);
    na.cli_ok(&[
        "line",
        "create",
        "eth0",
        "198.51.100.20",
        "10.9.0.2",
        "10.9.0.1",
        "gre1",
        "--type",
        "gre",
        "--key",
        "7",
    ]);
    let public = line_json(&na, "tunnel_base")["public_key"]
        .as_str()
        .expect("public key")
        .to_string();
    let before = line_json(&na, "gre1");
    let mut flood = c.spawn(&[
        "python3",
        "-c",
        FLOOD,
        "203.0.113.10",
        "51820",
        &public,
        "198.51.100.20",
        ATTACKER,
        "8",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !flood.log().contains("flooding") {
        assert!(Instant::now() < deadline, "no flood:\n{}", flood.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let during = line_json(&na, "gre1");
    assert!(
        soak::alive(&mut flood),
        "the daemon answered `line show` only after the flood ended: the flooded socket \
         kept the only worker to itself"
    );
    let total = |v: &serde_json::Value| -> u64 {
        v["drops"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x[1].as_u64()).sum())
            .unwrap_or(0)
    };
    assert!(
        total(&during) > total(&before),
        "gre1's raw socket was not read during the flood: {}",
        drops_text(&during)
    );
    let _ = flood.child.wait();
    assert!(soak::alive(&mut daemon), "{}", daemon.log());
    soak::stop(&mut daemon);
}

/// The IPv6 side: raw packets of protocols 4, 41, 47 and 50 at the host's IPv6 address,
/// random and malformed, from the lines' peer's own address (so they reach the gre6,
/// ip6ip6 and ipip6 lines' checks, through the IPv6 receive path with its ancillary
/// data).
const FLOOD6: &str = r#"
import json, os, random, socket, struct, sys, time
target, secs = sys.argv[1], float(sys.argv[2])
random.seed(6)
protos = (4, 41, 47, 50)
socks = {p: socket.socket(socket.AF_INET6, socket.SOCK_RAW, p) for p in protos}
def payload(p):
    b = bytearray(os.urandom(random.choice([0, 1, 3, 4, 8, 20, 40, 41, 60, 200, 1200])))
    if p == 47 and len(b) >= 4:
        b[0:4] = struct.pack("!HH", random.choice([0, 0x2000, 0x8000, 0x1000, 0xB000, 0xffff]),
                             random.choice([0x0800, 0x86DD, 0x6558, 0x1234]))
        if len(b) >= 8 and random.random() < 0.5:
            b[4:8] = struct.pack("!I", 7)
    elif p in (4, 41) and len(b) >= 1:
        b[0] = random.choice([0x45, 0x60, 0x4f, 0x00, 0x46, 0x65])
    return bytes(b)
pool = [(protos[i % 4], payload(protos[i % 4])) for i in range(4000)]
print("flooding", flush=True)
sent = {str(p): 0 for p in protos}; errors = 0
end = time.monotonic() + secs; i = 0
while True:
    if i % 256 == 0 and time.monotonic() > end: break
    p, b = pool[i % len(pool)]
    try:
        socks[p].sendto(b, (target, 0)); sent[str(p)] += 1
    except OSError:
        errors += 1
    i += 1
print(json.dumps({"sent": sent, "errors": errors, "total": sum(sent.values())}))
"#;

#[test]
fn ipv6_raw_flood_from_the_peers_address_is_counted_and_the_lines_keep_working() {
    if !require_root_and_tools(&["ip", "ping", "python3", "env"]) {
        return;
    }
    let _one = one_flood();
    let (a, b) = seed_pair("hostile6");
    add_ipv6_underlay(&a, &b);
    let na = Node::new(&a);
    let nb = Node::start(&b);
    let mut daemon = soak::spawn_daemon_with_env(&na, &[]);
    let pid = daemon.id();
    na.cli_ok(&[
        "line", "create", "eth0", B6, "10.9.0.2", "10.9.0.1", "gre6l", "--type", "gre6", "--key",
        "7",
    ]);
    nb.paste(&na.cli_ok(&["line", "show-peer", "gre6l"]), "eth0");
    for (name, kind, peer, local) in [
        ("ip6ip6l", "ip6ip6", "fd00:9:3::2", "fd00:9:3::1"),
        ("ipip6l", "ipip6", "10.9.4.2", "10.9.4.1"),
    ] {
        na.cli_ok(&[
            "line", "create", "eth0", B6, peer, local, name, "--type", kind,
        ]);
    }
    a.run_ok(&["ping", "-c", "1", "-W", "2", "10.9.0.2"]);
    let names = ["gre6l", "ip6ip6l", "ipip6l"];
    let before: Vec<serde_json::Value> = names.iter().map(|l| line_json(&na, l)).collect();
    let rss_before = soak::rss_kib(pid);

    let mut flood = b.spawn(&["python3", "-c", FLOOD6, A6, "5"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !flood.log().contains("flooding") {
        assert!(Instant::now() < deadline, "no flood:\n{}", flood.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let ping = a.exec(&["ping", "-i", "0.2", "-w", "3", "-W", "1", "10.9.0.2"]);
    let during = line_json(&na, "gre6l");
    assert!(
        soak::alive(&mut flood),
        "the daemon answered `line show` only after the flood ended"
    );
    let status = flood.child.wait().expect("wait for the flood");
    let log = flood.log();
    assert!(status.success(), "{log}");
    let sent: serde_json::Value = serde_json::from_str(log.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {log}"));
    assert!(
        soak::alive(&mut daemon),
        "the daemon died:\n{}",
        daemon.log()
    );
    let rss_after = soak::rss_kib(pid);
    a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.9.0.2"]);
    let after: Vec<serde_json::Value> = names.iter().map(|l| line_json(&na, l)).collect();
    let ping_text = String::from_utf8_lossy(&ping.stdout);
    report(&format!(
        "IPv6 raw flood (5 s) from the peer's address: {} packets ({}), {} send errors\n\
         ping over gre6 during it: {}\n\
         daemon RSS {rss_before} KiB before, {rss_after} KiB after\n\
         drops: gre6l {} | ip6ip6l {} | ipip6l {}",
        sent["total"],
        sent["sent"],
        sent["errors"],
        ping_text
            .lines()
            .find(|l| l.contains("packet loss"))
            .unwrap_or("no summary"),
        drops_text(&after[0]),
        drops_text(&after[1]),
        drops_text(&after[2]),
    ));
    let total = |v: &serde_json::Value| -> u64 {
        v["drops"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x[1].as_u64()).sum())
            .unwrap_or(0)
    };
    assert!(sent["total"].as_u64().unwrap_or(0) > 1000, "{log}");
    assert!(
        total(&during) > total(&before[0]),
        "gre6l counted nothing during the flood: {}",
        drops_text(&during)
    );
    for (i, name) in names.iter().enumerate() {
        assert!(
            total(&after[i]) > total(&before[i]),
            "{name} counted no drop: {}",
            drops_text(&after[i])
        );
    }
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    soak::stop(&mut daemon);
}

/// Sends, from the attacker `c`, `count` IPIP packets to A with B's address as source:
/// keepalive probes as B's line would see them, nested `depth` times (1: a bare probe).
const SPOOFED_PROBES: &str = r#"
import sys
from scapy.all import IP, send, conf
conf.verb = 0
a, b, depth, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# On the wire to A: outer B->A; inside, what A would reflect to B (A->B), inside that
# what B would reflect to A (B->A)...
# The innermost layer carries nothing and says protocol 4, as a real IPIP probe does.
layers = [IP(src=b, dst=a)] + [IP(src=a, dst=b) if i % 2 == 0 else IP(src=b, dst=a) for i in range(depth)]
layers[-1].proto = 4
p = layers[0]
for l in layers[1:]:
    p = p / l
send([p] * count, inter=0.001)
"#;

/// Keepalive probes cannot be turned into an amplifier: a spoofed probe nested ten
/// times (IPIP needs no key) is not reflected at all, where each twnode end used to
/// peel one layer and send the rest back; a burst of spoofed bare probes is reflected
/// at most at the per-line rate. Counted on the wire between A and B.
#[test]
fn spoofed_nested_probes_are_not_amplified() {
    // Debian's python3, which has python3-scapy (not a python3 earlier on PATH).
    const SCAPY_PYTHON: &str = "/usr/bin/python3";
    if !require_root_and_tools(&["ip", "ping", SCAPY_PYTHON, "tshark"]) {
        return;
    }
    let (a, b) = seed_pair("probe");
    let c = attacker(&a);
    let na = Node::start(&a);
    let nb = Node::start(&b);
    let ipip = [
        "line",
        "create",
        "eth0",
        "198.51.100.20",
        "10.6.0.2",
        "10.6.0.1",
        "ip1",
        "--type",
        "ipip",
    ];
    create_and_paste(&na, &nb, &ipip, "eth0");
    a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.6.0.2"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ipip_between = "ip.proto == 4 && ((ip.src == 203.0.113.10 && ip.dst == 198.51.100.20) \
                        || (ip.src == 198.51.100.20 && ip.dst == 203.0.113.10))";

    let capture = common::raw::Capture::start(&b, "eth0", 3, dir.path());
    c.run_ok(&[
        SCAPY_PYTHON,
        "-c",
        SPOOFED_PROBES,
        "203.0.113.10",
        "198.51.100.20",
        "10",
        "1",
    ]);
    let nested = common::raw::tshark_fields(&capture.finish(), ipip_between, &["ip.len"]);
    assert!(
        nested.is_empty(),
        "one spoofed probe nested ten times made {} packets between A and B: {nested:?}\n{}",
        nested.len(),
        drops_text(&line_json(&na, "ip1"))
    );
    assert!(
        drops(&line_json(&na, "ip1"), "probe_refused") >= 1,
        "{}",
        drops_text(&line_json(&na, "ip1"))
    );

    let capture = common::raw::Capture::start(&b, "eth0", 3, dir.path());
    c.run_ok(&[
        SCAPY_PYTHON,
        "-c",
        SPOOFED_PROBES,
        "203.0.113.10",
        "198.51.100.20",
        "1",
        "50",
    ]);
    let bare = common::raw::tshark_fields(&capture.finish(), ipip_between, &["ip.len"]);
    assert!(
        !bare.is_empty() && bare.len() <= 10,
        "50 spoofed bare probes in 50 ms: A may reflect a burst of 4 and 4 a second, it \
         sent {} to B",
        bare.len()
    );
    // The line still works.
    a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.6.0.2"]);
}
