//! Helpers for the IP tunnel tests: an IPv6 underlay next to the seed's IPv4 one,
//! packet captures read back by tshark, and nftables rules that silence a peer.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use super::{Netns, Spawned};

/// IPv6 underlay addresses (documentation prefix) of the seed pair's A and B.
pub const A6: &str = "2001:db8::a";
pub const B6: &str = "2001:db8::b";

/// Adds [`A6`] and [`B6`] (/64, no DAD) to both ends' `eth0`.
pub fn add_ipv6_underlay(a: &Netns, b: &Netns) {
    a.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{A6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    b.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{B6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    // The kernel adds the local and prefix routes of a new address a moment later; a
    // "before" snapshot taken in between would differ from every later one.
    for (ns, addr) in [(a, A6), (b, B6)] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let local = ns.ip(&["-6", "route", "show", "table", "local"]);
            let main = ns.ip(&["-6", "route", "show", "2001:db8::/64"]);
            if local.contains(addr) && !main.trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A running `tshark` capture on one interface of a namespace.
pub struct Capture {
    process: Spawned,
    pub file: PathBuf,
}

impl Capture {
    /// Starts capturing `ifname` for `secs` seconds into a file in `dir`, and waits
    /// until tshark is actually capturing.
    pub fn start(ns: &Netns, ifname: &str, secs: u32, dir: &Path) -> Capture {
        let file = dir.join(format!("{}-{ifname}.pcapng", ns.name()));
        let process = ns.spawn(&[
            "tshark",
            "-i",
            ifname,
            "-a",
            &format!("duration:{secs}"),
            "-w",
            file.to_str().expect("utf-8 path"),
        ]);
        super::wait_for_log(
            || process.log(),
            "Capturing on",
            10,
            Duration::from_millis(50),
            "tshark did not start",
        );
        // "Capturing on" is printed just before the capture loop starts.
        std::thread::sleep(Duration::from_millis(300));
        Capture { process, file }
    }

    /// Waits for the capture to end; returns the file.
    pub fn finish(mut self) -> PathBuf {
        let status = self.process.child.wait().expect("wait for tshark");
        assert!(status.success(), "tshark failed:\n{}", self.process.log());
        self.file
    }
}

/// `tshark -r FILE -Y FILTER -T fields -e F1 -e F2 ...`: one line per packet, fields
/// separated by tabs.
pub fn tshark_fields(file: &Path, filter: &str, fields: &[&str]) -> Vec<String> {
    let mut command = std::process::Command::new("tshark");
    command
        .args(["-r", file.to_str().expect("utf-8 path"), "-Y", filter])
        .args(["-T", "fields"]);
    for f in fields {
        command.args(["-e", f]);
    }
    let output: Output = command.output().expect("run tshark -r");
    assert!(
        output.status.success(),
        "tshark -r failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Drops every incoming packet of the given IP protocols in `ns` (table `inet twtest`).
pub fn block_protocols(ns: &Netns, protocols: &[u8]) {
    let set = protocols
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    ns.run_ok(&["nft", "add", "table", "inet", "twtest"]);
    ns.run_ok(&[
        "nft",
        "add chain inet twtest input { type filter hook input priority 0; }",
    ]);
    ns.run_ok(&[
        "nft",
        &format!("add rule inet twtest input meta l4proto {{ {set} }} drop"),
    ]);
}

/// Removes what [`block_protocols`] added.
pub fn unblock(ns: &Netns) {
    ns.run_ok(&["nft", "delete", "table", "inet", "twtest"]);
}
