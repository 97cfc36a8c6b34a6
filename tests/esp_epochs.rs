//! ESP nonce safety that does not rest on one file (issue 16, item 2), between real
//! daemons in network namespaces.
//!
//! Epoch keying (the default): whatever happens to a node's state directory (a normal
//! restart, the directory deleted, an older copy restored), no (SPI, sequence number)
//! pair, so no (key, nonce) pair, appears twice on the wire, and the line carries ping
//! and a checksummed TCP transfer after each; a rekey every second keeps a transfer
//! intact. Static keying (kernel peers): a line whose mark file is gone refuses to come
//! up until told, and then its numbers do repeat (the receiver's replay floor catches
//! them). Both: a second daemon on one state directory refuses to start.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::node::{seed_pair, tcp_transfer, twnode_bin, Node};
use common::raw::{tshark_fields, Capture};
use common::{require_root_and_tools, Netns};

const B4: &str = "198.51.100.20";
const ENC: &str = "0x9f8e7d6c5b4a39281716050403020100aabbccddeeff0011";
const AUTH: &str = "0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";
/// The SPI of epoch Hellos (not encrypted, so no nonce to repeat).
const HELLO_SPI: &str = "0x00000074";

fn ping(ns: &Netns, dst: &str) {
    ns.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", dst]);
}

/// Creates the encrypted line `sec` on A toward B with `extra` options; B pastes the
/// peer command when `paste` says so.
fn encrypted_line<'a>(na: &Node<'a>, nb: &Node<'a>, extra: &[&str], paste: bool) {
    let mut args = vec![
        "line",
        "create",
        "eth0",
        B4,
        "10.0.0.2",
        "10.0.0.1",
        "sec",
        "--type",
        "ipsec",
        "--enc-key",
        ENC,
        "--auth-key",
        AUTH,
    ];
    args.extend_from_slice(extra);
    na.cli_ok(&args);
    if paste {
        let peer = na.cli_ok(&["line", "show-peer", "sec"]);
        nb.paste(&peer, "eth0");
    }
}

/// Every (SPI, sequence number) of the encrypted packets in `file`, both ways.
fn spi_seqs(file: &Path) -> Vec<(String, String, String)> {
    tshark_fields(file, "esp", &["ip.src", "esp.spi", "esp.sequence"])
        .into_iter()
        .filter_map(|row| {
            let w: Vec<&str> = row.split_whitespace().collect();
            (w.len() == 3 && w[1] != HELLO_SPI)
                .then(|| (w[0].to_string(), w[1].to_string(), w[2].to_string()))
        })
        .collect()
}

/// Ping both ways and 2 MB of TCP with matching checksums, while a capture on B runs;
/// returns the capture.
fn traffic_captured(a: &Netns, b: &Netns, dir: &Path, port: u16) -> PathBuf {
    let capture = Capture::start(b, "eth0", 8, dir);
    ping(a, "10.0.0.2");
    ping(b, "10.0.0.1");
    let (sent, got) = tcp_transfer(a, b, "10.0.0.2", port, 2 << 20);
    assert_eq!(sent, got, "2 MB transfer checksum (port {port})");
    let file = capture.finish();
    let renamed = dir.join(format!("phase-{port}.pcapng"));
    std::fs::rename(&file, &renamed).expect("rename capture");
    renamed
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// Epoch keying: before B exists, A's line waits for the peer's Hello, sends nothing
/// and says so. Then across a normal restart of A, a restart of B after its state
/// directory was deleted, and a restart of A from an older copy of its state directory
/// (taken before the first restart), no (SPI, sequence number) repeats on the wire,
/// each restart brings new SPIs, and ping and a checksummed TCP transfer pass after
/// each. `line show` gives the keying, the epoch's SPIs and the next rekey. (On static
/// keying, the deleted and the restored directory restart sequence numbers under the
/// same SPI: this test fails there.)
#[test]
fn epoch_keys_never_repeat_a_nonce_across_restarts_lost_or_restored_state() {
    if !require_root_and_tools(&["ip", "ping", "python3", "tshark"]) {
        return;
    }
    let (a, b) = seed_pair("epok");
    let mut na = Node::start(&a);
    let mut nb = Node::start(&b);
    encrypted_line(&na, &nb, &[], false);
    // B has no line yet: A waits, and what its kernel sends into the line is dropped.
    let _ = a.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.0.0.2"]);
    let l = na.line_json("sec");
    assert_eq!(l["state"], "connecting", "{l}");
    assert!(
        l["reason"]
            .as_str()
            .unwrap_or("")
            .contains("waiting for the peer's ESP Hello from 198.51.100.20"),
        "{l}"
    );
    assert_eq!(l["esp"]["keying"], "epoch", "{l}");
    assert_eq!(l["esp"]["epoch"]["epochs"], 0, "{l}");
    assert!(l["esp"]["spi_out"].is_null(), "{l}");
    assert!(na.drops("sec", "no_session") >= 2, "{l}");
    let shown = na.cli_ok(&["line", "show", "sec"]);
    assert!(
        shown.contains("keying:          epoch: waiting for the peer's Hello"),
        "{shown}"
    );
    let peer = na.cli_ok(&["line", "show-peer", "sec"]);
    assert!(
        !peer.contains("--esp-keying"),
        "epoch is the default: {peer}"
    );
    nb.paste(&peer, "eth0");
    na.wait_state("sec", "up", 10);

    let dir = tempfile::tempdir().expect("tempdir");
    let old_state = dir.path().join("old-state-a");
    copy_dir(&na.state_dir(), &old_state);
    let mut captures = vec![traffic_captured(&a, &b, dir.path(), 5101)];
    let l = na.line_json("sec");
    let e = &l["esp"];
    assert_eq!(e["epoch"]["epochs"], 1, "{l}");
    assert!(
        e["spi_out"].as_u64().is_some() && e["spi_in"].as_u64().is_some(),
        "{l}"
    );
    assert!(e["epoch"]["last_rekey_secs"].as_u64().is_some(), "{l}");
    assert!(
        e["epoch"]["packets_to_rekey"].as_u64().unwrap_or(0) > 1 << 30,
        "{l}"
    );
    assert_eq!(
        e["epoch"]["rekey_interval_secs"],
        3600 + 450,
        "A is the higher address: {l}"
    );
    assert!(e.get("reserved_to").is_none(), "no marks with epochs: {l}");
    let shown = na.cli_ok(&["line", "show", "sec"]);
    assert!(
        shown.contains("keying:          epoch 1, agreed "),
        "{shown}"
    );
    assert!(
        shown.contains("esp:             chacha20-poly1305, SPI out 0x"),
        "{shown}"
    );

    // A normal restart of A.
    na.stop_daemon();
    na.start_daemon();
    na.wait_state("sec", "up", 10);
    captures.push(traffic_captured(&a, &b, dir.path(), 5102));
    // B restarts after losing its state directory.
    nb.stop_daemon();
    std::fs::remove_dir_all(nb.state_dir()).expect("rm B's state");
    nb.start_daemon();
    nb.wait_state("sec", "up", 10);
    captures.push(traffic_captured(&a, &b, dir.path(), 5103));
    // A restarts from the copy of its state directory taken before the first restart.
    na.stop_daemon();
    std::fs::remove_dir_all(na.state_dir()).expect("rm A's state");
    copy_dir(&old_state, &na.state_dir());
    na.start_daemon();
    na.wait_state("sec", "up", 10);
    captures.push(traffic_captured(&a, &b, dir.path(), 5104));

    let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
    let mut spis_per_phase = Vec::new();
    for (phase, file) in captures.iter().enumerate() {
        let rows = spi_seqs(file);
        assert!(
            rows.len() > 100,
            "phase {phase}: {} ESP packets",
            rows.len()
        );
        let mut spis: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        spis.sort_unstable();
        spis.dedup();
        spis_per_phase.push(spis.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        for r in rows {
            if let Some(before) = seen.insert(r.clone(), phase) {
                panic!("{r:?} of phase {phase} was already on the wire in phase {before}");
            }
        }
    }
    for w in spis_per_phase.windows(2) {
        assert!(
            w[1].iter().all(|s| !w[0].contains(s)),
            "each restart brings new SPIs: {spis_per_phase:?}"
        );
    }
}

/// A second daemon on the state directory of a running one refuses to start, naming
/// the directory and the pid that holds it, and changes nothing; the first one goes on.
/// The second daemon runs in another network namespace (as two containers sharing a
/// volume would), where the host lock of the first does not stop it. (Before the lock,
/// the second daemon started.)
#[test]
fn a_second_daemon_on_the_same_state_directory_refuses_naming_it_and_its_holder() {
    if !require_root_and_tools(&["ip", "timeout"]) {
        return;
    }
    let (a, b) = seed_pair("eplk");
    let na = Node::start(&a);
    // The lock file names its holder: the first daemon.
    let pid = std::fs::read_to_string(na.state_dir().join("lock")).expect("lock file");
    let pid = pid.trim().to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("holder's cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&na.socket().display().to_string()),
        "pid {pid} is not the first daemon"
    );
    let other = tempfile::tempdir().expect("tempdir");
    let config = other.path().join("twnode.toml");
    let socket = other.path().join("control.sock");
    let state = na.state_dir();
    let out: Output = b.exec(&[
        "timeout",
        "10",
        twnode_bin(),
        "daemon",
        "--config",
        config.to_str().unwrap(),
        "--control",
        socket.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second daemon started:\n{stderr}"
    );
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("twnode: ")
            && last.contains(&format!("state directory {}", state.display()))
            && last.contains("in use by another twnode daemon")
            && last.contains("--state-dir"),
        "{stderr}"
    );
    assert!(last.contains(&format!("(pid {pid})")), "{stderr}");
    assert!(!socket.exists(), "the second daemon served a socket");
    na.cli_ok(&["line", "list"]);
}

/// A rekey every second (both ends, `--esp-rekey 1`) under a 192 MB TCP transfer: the
/// transfer arrives intact, and its full-size packets went out under at least two
/// epochs' SPIs (so a rekey happened in the middle of it); no (SPI, sequence) repeats.
#[test]
fn rekeys_every_second_keep_a_tcp_transfer_intact() {
    if !require_root_and_tools(&["ip", "ping", "python3", "tshark"]) {
        return;
    }
    let (a, b) = seed_pair("eprk");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    encrypted_line(&na, &nb, &["--esp-rekey", "1"], true);
    na.wait_state("sec", "up", 10);
    nb.wait_state("sec", "up", 10);
    let before = na.line_json("sec")["esp"]["epoch"]["epochs"]
        .as_u64()
        .expect("epochs");
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = Capture::start(&b, "eth0", 15, dir.path());
    let started = std::time::Instant::now();
    let (sent, got) = tcp_transfer(&a, &b, "10.0.0.2", 5105, 192 << 20);
    let took = started.elapsed();
    assert_eq!(sent, got, "192 MB transfer checksum across rekeys");
    let file = capture.finish();
    let l = na.line_json("sec");
    let after = l["esp"]["epoch"]["epochs"].as_u64().expect("epochs");
    assert!(after > before, "{before} -> {after} epochs: {l}");
    assert_eq!(l["esp"]["epoch"]["rekey_interval_secs"], 1, "{l}");
    // The transfer's segments: full-size ESP packets from A.
    let big = tshark_fields(
        &file,
        "esp && ip.src == 203.0.113.10 && frame.len > 1400",
        &["esp.spi"],
    );
    let mut spis = big.clone();
    spis.sort_unstable();
    spis.dedup();
    eprintln!(
        "transfer in {took:?}: {} full-size packets under {} SPIs",
        big.len(),
        spis.len()
    );
    assert!(
        big.len() > 10_000 && spis.len() >= 2,
        "the transfer ({took:?}, {} full-size packets) went out under {spis:?}",
        big.len()
    );
    let mut seen = std::collections::HashSet::new();
    for r in spi_seqs(&file) {
        assert!(seen.insert(r.clone()), "{r:?} twice");
    }
    for n in [&na, &nb] {
        let l = n.line_json("sec");
        for d in l["drops"].as_array().expect("drops") {
            assert!(d[0] != "bad_auth" && d[0] != "replay", "{l}");
        }
    }
}

/// Static keying: with its mark file gone, the line refuses to come up and says why
/// and what to do; `twnode daemon --esp-fresh-state sec` brings it up from sequence
/// number 1, which the peer's replay window then refuses, as it should: the numbers
/// repeat under the same key, the risk the refusal is about. (Before, the line came up
/// silently from 1.)
#[test]
fn a_static_line_without_its_mark_refuses_to_start_until_told_explicitly() {
    if !require_root_and_tools(&["ip", "ping"]) {
        return;
    }
    let (a, b) = seed_pair("epst");
    let mut na = Node::start(&a);
    let nb = Node::start(&b);
    encrypted_line(&na, &nb, &["--esp-keying", "static"], true);
    ping(&a, "10.0.0.2");
    let marks: Vec<PathBuf> = std::fs::read_dir(na.state_dir())
        .expect("state dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seq"))
        .collect();
    assert_eq!(marks.len(), 1, "{marks:?}");
    na.stop_daemon();
    std::fs::remove_file(&marks[0]).expect("rm mark");
    na.start_daemon();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let l = na.line_json("sec");
    let reason = l["reason"].as_str().unwrap_or("");
    assert_eq!(l["state"], "down", "{l}");
    assert!(
        reason.contains(&marks[0].display().to_string())
            && reason.contains("is missing")
            && reason.contains("could repeat nonces")
            && reason.contains("--esp-fresh-state sec"),
        "{reason}"
    );
    assert!(!marks[0].exists(), "nothing was written");
    assert!(na.log().contains("is missing"), "{}", na.log());
    na.stop_daemon();
    na.start_daemon_args(&["--esp-fresh-state", "sec"]);
    na.wait_state("sec", "up", 10);
    assert!(marks[0].exists(), "the new SA's mark is on disk");
    assert!(
        na.log().contains("start from sequence number 1"),
        "{}",
        na.log()
    );
    let _ = a.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.0.0.2"]);
    let refused = nb.drops("sec", "replay") + nb.drops("sec", "replay_too_old");
    assert!(
        refused >= 1,
        "B refuses the repeated numbers: {}",
        nb.line_json("sec")
    );
    // The permission was for one start: without it, a lost mark is refused again.
    na.stop_daemon();
    std::fs::remove_file(&marks[0]).expect("rm mark");
    na.start_daemon();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(na.line_json("sec")["state"], "down");
}
