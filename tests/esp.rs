//! GRE over ESP (issue 4) between hosts in network namespaces: on the underlay, on top
//! of a WireGuard line as in the seed's scenario 3, against scapy's independent ESP, and
//! under attack (tampering, replay, truncation, wrong SPI) and restarts (no sequence
//! number, so no nonce, twice on the wire). The tests of static keying's layout and
//! files (`--xfrm`, marks, scapy) run with `--esp-keying static`; the seed's scenario
//! and gre6 run with the default, epoch keying (tests/esp_epochs.rs tests epochs).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use common::node::{seed_pair, tcp_transfer, Node};
use common::raw::{tshark_fields, Capture};
use common::{dump_state, require_root_and_tools, Netns};

const A4: &str = "203.0.113.10";
const B4: &str = "198.51.100.20";
/// The seed's keys (scenario 3).
const ENC: &str = "0x9f8e7d6c5b4a39281716050403020100aabbccddeeff0011";
const AUTH: &str = "0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";
/// Debian's python3, where python3-scapy lives.
const SCAPY_PYTHON: &str = "/usr/bin/python3";

fn scapy_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("esp_scapy.py")
}

/// With CI=true a missing scapy fails the test; otherwise the test is skipped.
fn require_scapy() -> bool {
    let ok = std::process::Command::new(SCAPY_PYTHON)
        .args(["-c", "import scapy.layers.ipsec"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{SCAPY_PYTHON} cannot import scapy: install python3-scapy (scripts/deps.sh)");
        }
        eprintln!("skipped: {SCAPY_PYTHON} has no scapy (apt install python3-scapy)");
    }
    ok
}

fn scapy(ns: &Netns, args: &[&str]) -> String {
    let script = scapy_script();
    let mut all = vec![SCAPY_PYTHON, script.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    ns.run_ok(&all)
}

fn ping(ns: &Netns, dst: &str) {
    ns.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", dst]);
}

/// Waits until an epoch-keyed line agreed on keys with its peer (`up`) and returns its
/// drops then: nothing but `no_session`, what the kernel sent into the line before the
/// peer's end existed (an IPv6 router solicitation, say).
fn agreed(n: &Node, line: &str) -> serde_json::Value {
    n.wait_state(line, "up", 10);
    let drops = n.line_json(line)["drops"].clone();
    for d in drops.as_array().expect("drops") {
        assert_eq!(d[0], "no_session", "before agreeing: {drops}");
    }
    drops
}

/// One SA from `line show --xfrm`: (SPI, key||salt hex) of the state from `src`.
fn xfrm_sa(xfrm: &str, src: &str) -> (String, String) {
    let line = xfrm
        .lines()
        .find(|l| l.starts_with(&format!("ip xfrm state add src {src} ")))
        .unwrap_or_else(|| panic!("no state from {src} in:\n{xfrm}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |w: &str| words[words.iter().position(|x| *x == w).expect(w) + 1].to_string();
    let aead = words.iter().position(|x| *x == "aead").expect("aead");
    (after("spi"), words[aead + 2].to_string())
}

fn secret_free(text: &str) {
    for key in [ENC, AUTH] {
        assert!(
            !text.contains(&key[2..12]),
            "a key shows up where it must not:\n{text}"
        );
    }
}

/// Creates the encrypted line `sec` on A toward B, pastes `show-peer` on B.
fn encrypted_pair<'a>(a: &'a Netns, b: &'a Netns, extra: &[&str]) -> (Node<'a>, Node<'a>) {
    let na = Node::start(a);
    let nb = Node::start(b);
    let mut args = vec![
        "line",
        "create",
        "eth0",
        B4,
        "10.0.0.2",
        "10.0.0.1",
        "sec",
        "--type",
        "gre",
        "--encrypt",
        "--enc-key",
        ENC,
        "--auth-key",
        AUTH,
    ];
    args.extend_from_slice(extra);
    let created = na.cli_ok(&args);
    assert!(created.contains("protocol 50, ESP"), "{created}");
    let out = na.cli(&["line", "show-peer", "sec"]);
    assert!(out.status.success());
    let peer = String::from_utf8_lossy(&out.stdout).to_string();
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("ESP keys"),
        "show-peer says it is secret: {warning}"
    );
    assert!(
        peer.contains("--encrypt") && peer.contains(&format!("--enc-key {ENC} --auth-key {AUTH}")),
        "{peer}"
    );
    nb.paste(&peer, "eth0");
    (na, nb)
}

/// GRE over ESP straight on the underlay with static keys: ping both ways, 4 MB of TCP
/// with matching checksums, only ESP on the wire (tshark finds no GRE), the SPIs of
/// `--xfrm`, the exact ESP MTU, keys in no listing, nothing left after SIGTERM.
#[test]
fn gre_over_esp_on_the_underlay_carries_ping_and_tcp_and_the_wire_shows_only_esp() {
    if !require_root_and_tools(&["ip", "ping", "python3", "tshark"]) {
        return;
    }
    let (a, b) = seed_pair("espu");
    let before_a = dump_state(&a);
    let before_b = dump_state(&b);
    let (mut na, mut nb) = encrypted_pair(&a, &b, &["--esp-keying", "static"]);
    let l = na.line_json("sec");
    // 1500 - 20 (IPv4) - 16 (ESP header, IV) - 16 (ICV) = 1448 = GRE 4 + inner + 2,
    // already a multiple of 4: inner 1442.
    assert_eq!(l["mtu"], 1442, "{l}");
    assert_eq!(l["type"], "gre", "{l}");
    for text in [
        na.cli_ok(&["line", "list"]),
        na.cli_ok(&["line", "show", "sec"]),
        na.cli_ok(&["line", "list", "--json"]),
        na.cli_ok(&["line", "show", "sec", "--json"]),
        na.log(),
    ] {
        secret_free(&text);
    }
    let config = na.config_text();
    assert!(
        config.contains(ENC) && config.contains("encrypt = true"),
        "{config}"
    );
    let xfrm = na.cli_ok(&["line", "show", "sec", "--xfrm"]);
    assert!(xfrm.contains("rfc7539esp(chacha20,poly1305)"), "{xfrm}");
    let (spi_ab, _) = xfrm_sa(&xfrm, A4);
    let (spi_ba, _) = xfrm_sa(&xfrm, B4);
    assert_ne!(spi_ab, spi_ba);
    // B derived the same SAs: its --xfrm prints the same two states.
    let xfrm_b = nb.cli_ok(&["line", "show", "sec", "--xfrm"]);
    assert_eq!(xfrm_sa(&xfrm_b, A4), xfrm_sa(&xfrm, A4));
    assert_eq!(xfrm_sa(&xfrm_b, B4), xfrm_sa(&xfrm, B4));

    let dir = tempfile::tempdir().expect("tempdir");
    let capture = Capture::start(&b, "eth0", 3, dir.path());
    ping(&a, "10.0.0.2");
    ping(&b, "10.0.0.1");
    // A full-MTU packet with DF: 1442 inner bytes make an outer packet of exactly 1500.
    a.run_ok(&[
        "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1414", "10.0.0.2",
    ]);
    let file = capture.finish();
    assert!(tshark_fields(&file, "gre || icmp", &["frame.number"]).is_empty());
    let full = tshark_fields(
        &file,
        &format!("esp && ip.src == {A4} && ip.len == 1500"),
        &["ip.len"],
    );
    assert_eq!(full.len(), 1, "one 1500-byte ESP packet: {full:?}");
    let rows = tshark_fields(&file, &format!("esp && ip.src == {A4}"), &["esp.spi"]);
    assert!(rows.len() >= 6, "{rows:?}");
    let want = u32::from_str_radix(spi_ab.trim_start_matches("0x"), 16).expect("spi");
    for r in &rows {
        let got = u32::from_str_radix(r.trim().trim_start_matches("0x"), 16).expect("spi");
        assert_eq!(got, want, "{rows:?}");
    }

    let (sent, got) = tcp_transfer(&a, &b, "10.0.0.2", 5001, 4 << 20);
    assert_eq!(sent, got, "4 MB transfer checksum");
    // `line show` reports the ESP layer without keys: SPIs, counters, reservation.
    let e = &na.line_json("sec")["esp"];
    assert_eq!(e["spi_out"].as_u64(), Some(u64::from(want)), "{e}");
    assert_eq!(e["cipher"], "chacha20-poly1305", "{e}");
    assert_eq!(e["reserved_to"], 1 + (1 << 20), "{e}");
    assert!(e["next_seq"].as_u64().unwrap_or(0) > 2000, "{e}");
    assert!(e["highest_received"].as_u64().unwrap_or(0) > 100, "{e}");
    assert!(na
        .cli_ok(&["line", "show", "sec"])
        .contains("esp:             chacha20-poly1305, SPI out"));
    assert_eq!(e["keying"], "static", "{e}");
    for (n, name) in [(&na, "A"), (&nb, "B")] {
        let l = n.line_json("sec");
        assert_eq!(l["drops"], serde_json::json!([]), "{name}: {l}");
    }
    // The sequence-number mark is on disk, 0600.
    let marks: Vec<_> = std::fs::read_dir(na.state_dir())
        .expect("state dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seq"))
        .collect();
    assert_eq!(marks.len(), 1, "{marks:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = marks[0].metadata().expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    na.stop_daemon();
    nb.stop_daemon();
    assert_eq!(dump_state(&a), before_a, "A's state after SIGTERM");
    assert_eq!(dump_state(&b), before_b, "B's state after SIGTERM");
}

/// The seed's scenario 3, typed as the seed types it: a WireGuard line, then on it GRE
/// over IPsec with `--auth-key 0x... --enc-key 0x... --encrypt` (no `--type`) on both
/// ends (so epoch keying). Ping both ways and a TCP transfer with matching checksums;
/// once the ends agreed, no packet is dropped.
#[test]
fn seed_scenario_3_gre_over_esp_on_a_wireguard_line_carries_ping_and_tcp() {
    if !require_root_and_tools(&["ip", "ping", "python3"]) {
        return;
    }
    let (a, b) = seed_pair("esps3");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    na.cli_ok(&[
        "line",
        "create",
        "eth0",
        B4,
        "10.0.0.2",
        "10.0.0.1",
        "tunnel_wg",
        "--type",
        "wireguard",
        "--mode",
        "server",
        "--listen-port",
        "51820",
    ]);
    let peer = na.cli_ok(&["line", "show-peer", "tunnel_wg"]);
    nb.paste(&peer, "eth0");
    na.wait_state("tunnel_wg", "up", 10);
    nb.wait_state("tunnel_wg", "up", 10);
    na.cli_ok(&[
        "line",
        "create",
        "tunnel_wg",
        "10.0.0.2",
        "172.16.0.2",
        "172.16.0.1",
        "tunnel_gre",
        "--auth-key",
        AUTH,
        "--enc-key",
        ENC,
        "--encrypt",
    ]);
    nb.cli_ok(&[
        "line",
        "create",
        "tunnel_wg",
        "10.0.0.1",
        "172.16.0.1",
        "172.16.0.2",
        "tunnel_gre",
        "--auth-key",
        AUTH,
        "--enc-key",
        ENC,
        "--encrypt",
    ]);
    let base_a = agreed(&na, "tunnel_gre");
    let base_b = agreed(&nb, "tunnel_gre");
    let l = na.line_json("tunnel_gre");
    assert_eq!(l["type"], "gre", "{l}");
    assert_eq!(l["depth"], 1, "{l}");
    // tunnel_wg's MTU 1440 (1500 - 20 - 8 - 32): 1440 - 20 - 32 = 1388, a multiple
    // of 4, minus GRE 4 and ESP's 2 trailer bytes: 1382.
    assert_eq!(l["mtu"], 1382, "{l}");
    ping(&a, "172.16.0.2");
    ping(&b, "172.16.0.1");
    let (sent, got) = tcp_transfer(&a, &b, "172.16.0.2", 5003, 2 << 20);
    assert_eq!(
        sent, got,
        "2 MB transfer checksum through GRE, ESP and WireGuard"
    );
    // B received the 2 MB; A, the sender, its ACKs and the ping replies (with GRO on
    // B's TUN device, B's TCP acknowledges coalesced super-packets: a few dozen ACKs).
    for (n, name, min_bytes, base) in [(&na, "A", 1000, base_a), (&nb, "B", 2 << 20, base_b)] {
        let l = n.line_json("tunnel_gre");
        assert_eq!(l["drops"], base, "{name}: {l}");
        assert!(
            l["rx_bytes"].as_u64().unwrap_or(0) > min_bytes,
            "{name}: {l}"
        );
    }
}

/// scapy, an independent ESP implementation, decrypts what twnode sends with the SA
/// `line show --xfrm` prints (static keying), and twnode accepts what scapy encrypts
/// (AES-256-GCM here); then tampered, replayed, truncated and wrong-SPI packets are
/// dropped and counted, and the line keeps working.
#[test]
fn scapy_reads_twnode_esp_and_twnode_takes_scapy_esp_and_drops_forgeries() {
    scapy_interop("aes-256-gcm", "rfc4106(gcm(aes))", "espsc");
}

/// The same with ChaCha20-Poly1305 (RFC 7634), the default cipher.
#[test]
fn scapy_interop_with_chacha20_poly1305() {
    scapy_interop(
        "chacha20-poly1305",
        "rfc7539esp(chacha20,poly1305)",
        "espcc",
    );
}

fn scapy_interop(cipher: &str, xfrm_name: &str, prefix: &str) {
    if !require_root_and_tools(&["ip", "ping", "tshark"]) || !require_scapy() {
        return;
    }
    let (a, b) = seed_pair(prefix);
    let na = Node::start(&a);
    na.cli_ok(&[
        "line",
        "create",
        "eth0",
        B4,
        "10.0.0.2",
        "10.0.0.1",
        "sec",
        "--type",
        "ipsec",
        "--cipher",
        cipher,
        "--esp-keying",
        "static",
        "--enc-key",
        ENC,
        "--auth-key",
        AUTH,
    ]);
    let xfrm = na.cli_ok(&["line", "show", "sec", "--xfrm"]);
    assert!(xfrm.contains(xfrm_name), "{xfrm}");
    let (spi_out, key_out) = xfrm_sa(&xfrm, A4);
    let (spi_in, key_in) = xfrm_sa(&xfrm, B4);
    let dir = tempfile::tempdir().expect("tempdir");

    // twnode -> scapy: echo requests nobody answers (B runs no twnode).
    let capture = Capture::start(&b, "eth0", 3, dir.path());
    let _ = a.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.0.0.2"]);
    let file = capture.finish();
    let f = file.to_str().expect("utf-8");
    let out = scapy(&b, &["decrypt", f, A4, &spi_out, &key_out, cipher]);
    let requests: Vec<&str> = out.lines().filter(|l| l.contains("icmp=8")).collect();
    assert!(requests.len() >= 3, "{out}");
    for l in &requests {
        assert!(l.contains("next=47 inner=10.0.0.1>10.0.0.2"), "{out}");
    }

    // scapy -> twnode: one echo request A's kernel answers, through twnode.
    std::fs::remove_file(&file).expect("rm pcap");
    // Long enough for scapy's slow start on a busy machine.
    let capture = Capture::start(&b, "eth0", 10, dir.path());
    scapy(&b, &["send", B4, A4, &spi_in, &key_in, cipher, "ok:1"]);
    let file = capture.finish();
    let f = file.to_str().expect("utf-8");
    let out = scapy(&b, &["decrypt", f, A4, &spi_out, &key_out, cipher]);
    assert!(
        out.lines()
            .any(|l| l.contains("inner=10.0.0.1>10.0.0.2 icmp=0")),
        "A answered scapy's request over ESP: {out}"
    );
    assert_eq!(na.line_json("sec")["rx_packets"], 1);
    assert_eq!(na.line_json("sec")["drops"], serde_json::json!([]));

    // Forgeries: each is dropped under its own counter; then a good packet still passes.
    scapy(
        &b,
        &[
            "send", B4, A4, &spi_in, &key_in, cipher, "flip:2", "ok:1", "trunc:3", "badspi:4",
            "ok:5",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let shown = na.cli_ok(&["line", "show", "sec"]);
    assert_eq!(na.drops("sec", "bad_auth"), 1, "{shown}");
    assert_eq!(na.drops("sec", "replay"), 1, "{shown}");
    assert_eq!(na.drops("sec", "malformed"), 1, "{shown}");
    assert_eq!(na.drops("sec", "unknown_spi"), 1, "{shown}");
    assert_eq!(na.line_json("sec")["rx_packets"], 2, "{shown}");
}

/// Static keying: the sender restarts (SIGTERM, then SIGKILL as a crash) while a
/// capture runs: no (SPI, sequence number) and no IV appears twice on the wire, each IV
/// is its sequence number, and every restart jumps past the persisted mark. A captured packet replayed
/// on the wire, or tampered with, is dropped and counted; the line keeps working. Then
/// the receiver restarts, and captured packets are still refused (its replay floor).
#[test]
fn restarts_never_repeat_a_sequence_number_or_nonce_nor_reopen_replays() {
    if !require_root_and_tools(&["ip", "ping", "tshark"]) || !require_scapy() {
        return;
    }
    let (a, b) = seed_pair("esprs");
    let (mut na, mut nb) = encrypted_pair(&a, &b, &["--esp-keying", "static"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = Capture::start(&b, "eth0", 18, dir.path());
    ping(&a, "10.0.0.2");
    na.stop_daemon();
    na.start_daemon();
    ping(&a, "10.0.0.2");
    let e = na.line_json("sec")["esp"].clone();
    assert!(
        e["next_seq"].as_u64().unwrap_or(0) > 1 << 20,
        "began at the mark: {e}"
    );
    na.kill_daemon();
    na.start_daemon();
    ping(&a, "10.0.0.2");
    let file = capture.finish();
    let f = file.to_str().expect("utf-8");
    let rows = scapy(&b, &["ivs", f, A4]);
    let mut seen = HashSet::new();
    let mut seqs = Vec::new();
    for row in rows.lines() {
        let w: Vec<&str> = row.split_whitespace().collect();
        let seq: u64 = w[1].parse().expect("seq");
        assert!(
            seen.insert((w[0].to_string(), seq)),
            "sequence {seq} twice:\n{rows}"
        );
        assert_eq!(
            w[2],
            format!("{seq:016x}"),
            "the IV is the sequence number: {row}"
        );
        seqs.push(seq);
    }
    assert!(seqs.len() >= 9, "{rows}");
    // Three runs: 1.., then from the first mark (2^20 + 1) on, then from the second.
    let block = 1u64 << 20;
    assert!(seqs.iter().any(|&s| s < block), "{seqs:?}");
    assert!(
        seqs.iter().any(|&s| (block..2 * block).contains(&s)),
        "{seqs:?}"
    );
    assert!(seqs.iter().any(|&s| s >= 2 * block), "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "increasing: {seqs:?}");

    // An on-path attacker (scapy in A's namespace) sends the last captured packet
    // again, with a flipped sequence-number bit, and cut short.
    scapy(&a, &["replay", f, A4, "ok"]);
    scapy(&a, &["replay", f, A4, "flipseq"]);
    scapy(&a, &["replay", f, A4, "trunc"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let shown = nb.cli_ok(&["line", "show", "sec"]);
    assert_eq!(nb.drops("sec", "replay"), 1, "{shown}");
    assert_eq!(nb.drops("sec", "bad_auth"), 1, "{shown}");
    assert_eq!(nb.drops("sec", "malformed"), 1, "{shown}");
    ping(&a, "10.0.0.2");
    ping(&b, "10.0.0.1");

    // The receiver restarts: its replay floor comes back from disk, so packets it took
    // before the restart are refused, old ones as too old, the last ones as replays.
    nb.stop_daemon();
    nb.start_daemon();
    scapy(&a, &["replay", f, A4, "ok"]);
    scapy(&a, &["replay-first", f, A4]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let shown = nb.cli_ok(&["line", "show", "sec"]);
    assert_eq!(nb.drops("sec", "replay"), 1, "{shown}");
    assert_eq!(nb.drops("sec", "replay_too_old"), 1, "{shown}");
    ping(&a, "10.0.0.2");
    ping(&b, "10.0.0.1");
}

/// gre6 with ESP over an IPv6 underlay (AES-256-GCM, epoch keying: Hellos in IPv6 too):
/// ping both ways, ESP in IPv6 on the wire, MTU 1500 - 40 - 32 - 4 - 2 = 1422.
#[test]
fn gre6_over_esp_on_an_ipv6_underlay_carries_ping() {
    if !require_root_and_tools(&["ip", "ping", "tshark"]) {
        return;
    }
    let (a, b) = seed_pair("esp6");
    common::raw::add_ipv6_underlay(&a, &b);
    let na = Node::start(&a);
    let nb = Node::start(&b);
    na.cli_ok(&[
        "line",
        "create",
        "eth0",
        common::raw::B6,
        "10.0.0.2",
        "10.0.0.1",
        "sec6",
        "--type",
        "gre6",
        "--encrypt",
        "--cipher",
        "aes-256-gcm",
        "--enc-key",
        ENC,
        "--auth-key",
        AUTH,
    ]);
    let peer = na.cli_ok(&["line", "show-peer", "sec6"]);
    assert!(
        peer.contains("--type gre6") && peer.contains("--cipher aes-256-gcm"),
        "{peer}"
    );
    nb.paste(&peer, "eth0");
    let base_a = agreed(&na, "sec6");
    let base_b = agreed(&nb, "sec6");
    assert_eq!(na.line_json("sec6")["mtu"], 1422);
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = Capture::start(&b, "eth0", 3, dir.path());
    ping(&a, "10.0.0.2");
    ping(&b, "10.0.0.1");
    let file = capture.finish();
    assert!(tshark_fields(&file, "gre || icmp", &["frame.number"]).is_empty());
    let esp = tshark_fields(&file, "ipv6 && esp", &["esp.sequence"]);
    assert!(esp.len() >= 6, "{esp:?}");
    for (n, name, base) in [(&na, "A", base_a), (&nb, "B", base_b)] {
        let l = n.line_json("sec6");
        assert_eq!(l["drops"], base, "{name}: {l}");
    }
}
