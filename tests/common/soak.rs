//! Helpers for the reliability tests (hostile traffic, faults, secrets): a daemon started
//! with its own environment, readings from /proc, nftables loss, and timing how long
//! traffic takes to come back.

use std::path::Path;
use std::time::{Duration, Instant};

use super::node::{twnode_bin, Node};
use super::{Netns, Spawned};

/// Starts `node`'s daemon (config and socket of `node`, which must have none running)
/// with extra environment variables, e.g. `TWNODE_LOG=trace`; waits until it answers.
/// The process is the daemon itself (`ip netns exec` and `env` exec into it).
pub fn spawn_daemon_with_env(node: &Node, env: &[(&str, &str)]) -> Spawned {
    let config = node.config();
    let socket = node.socket();
    let mut args: Vec<String> = vec!["env".into()];
    args.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    args.extend([
        twnode_bin().to_string(),
        "daemon".into(),
        "--config".into(),
        config.display().to_string(),
        "--control".into(),
        socket.display().to_string(),
        // Its own state directory: a daemon locks it, and the default is the host's.
        "--state-dir".into(),
        node.state_dir().display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut daemon = node.ns.spawn(&args);
    wait_answering(node, &mut daemon);
    daemon
}

/// Waits (10 s) until the daemon answers `line list`; panics with its log otherwise.
pub fn wait_answering(node: &Node, daemon: &mut Spawned) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if node.cli(&["line", "list"]).status.success() {
            return;
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("daemon exited with {status}:\n{}", daemon.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("daemon did not answer within 10 s:\n{}", daemon.log());
}

/// SIGTERM and wait (10 s) for exit status 0.
pub fn stop(daemon: &mut Spawned) {
    signal(daemon, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            assert!(
                status.success(),
                "daemon exited with {status}:\n{}",
                daemon.log()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "daemon ignored SIGTERM:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILL and reap.
pub fn kill(daemon: &mut Spawned) {
    let _ = daemon.child.kill();
    let _ = daemon.child.wait();
}

/// Sends `sig` to the process.
pub fn signal(daemon: &Spawned, sig: i32) {
    let pid = libc::pid_t::try_from(daemon.id()).expect("pid");
    // SAFETY: plain kill(2) on our own, not yet reaped, child.
    unsafe { libc::kill(pid, sig) };
}

/// A field of /proc/<pid>/status (`"VmRSS"`, `"CapEff"`...), value trimmed.
pub fn proc_status(pid: u32, field: &str) -> String {
    status_field(
        &Path::new("/proc").join(pid.to_string()).join("status"),
        field,
    )
}

/// The same field for every thread of the process: (tid, value).
pub fn thread_status(pid: u32, field: &str) -> Vec<(String, String)> {
    let dir = Path::new("/proc").join(pid.to_string()).join("task");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .expect("read /proc/<pid>/task")
        .flatten()
    {
        let tid = entry.file_name().to_string_lossy().into_owned();
        out.push((tid, status_field(&entry.path().join("status"), field)));
    }
    out
}

fn status_field(path: &Path, field: &str) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {field} in {}", path.display()))
        .trim()
        .to_string()
}

/// Resident memory of `pid` in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    let value = proc_status(pid, "VmRSS");
    value
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("VmRSS {value:?}"))
}

/// Whether the process still runs (not a zombie).
pub fn alive(daemon: &mut Spawned) -> bool {
    matches!(daemon.child.try_wait(), Ok(None))
}

/// Drops one packet in `one_in` at random entering `ns` through `ifname` (nftables
/// `numgen random mod N == 0 drop`, table `inet twloss`): underlay loss without netem.
pub fn add_loss(ns: &Netns, ifname: &str, one_in: u32) {
    ns.run_ok(&["nft", "add", "table", "inet", "twloss"]);
    ns.run_ok(&[
        "nft",
        "add chain inet twloss input { type filter hook input priority -10; }",
    ]);
    ns.run_ok(&[
        "nft",
        &format!("add rule inet twloss input iifname {ifname} numgen random mod {one_in} == 0 counter drop"),
    ]);
}

/// Packets [`add_loss`] dropped so far in `ns`.
pub fn loss_dropped(ns: &Netns) -> u64 {
    let listing = ns.run_ok(&["nft", "list", "table", "inet", "twloss"]);
    listing
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in:\n{listing}"))
}

/// Removes what [`add_loss`] added.
pub fn remove_loss(ns: &Netns) {
    ns.run_ok(&["nft", "delete", "table", "inet", "twloss"]);
}

/// Pings `dst` from `ns` once per 100 ms (1 s timeout each) until one answer comes or
/// `limit` passes; returns how long it took, or None.
pub fn time_until_ping(ns: &Netns, dst: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let out = ns.exec(&["ping", "-c", "1", "-W", "1", dst]);
        if out.status.success() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// `line show NAME --json`.
pub fn line_json(node: &Node, line: &str) -> serde_json::Value {
    serde_json::from_str(&node.cli_ok(&["line", "show", line, "--json"])).expect("json")
}

/// A drop counter of `line_json` output (0 when absent).
pub fn drops(line: &serde_json::Value, reason: &str) -> u64 {
    line["drops"]
        .as_array()
        .expect("drops")
        .iter()
        .find(|d| d[0] == reason)
        .and_then(|d| d[1].as_u64())
        .unwrap_or(0)
}

/// Every drop counter, for reports.
pub fn drops_text(line: &serde_json::Value) -> String {
    line["drops"].to_string()
}
