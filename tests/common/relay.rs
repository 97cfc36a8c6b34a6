//! Three hosts as in the seed's second scenario: A (203.0.113.10) and C (192.0.2.30),
//! each with one `eth0`, both wired to B (198.51.100.20), whose one `eth0` is a bridge
//! over the two wires. Every host has a default route out of its `eth0` (A and C via B,
//! B via A), so a datagram that a wrong rule sends to the main table leaves on the
//! physical link instead of inside a tunnel, where a capture on B sees it.
//!
//! Also helpers to make a line pair the way a user does (create, show-peer, paste) and
//! to read a capture's IP addresses.

use std::path::Path;

use super::node::Node;
use super::raw::tshark_fields;
use super::Netns;

pub const A_IP: &str = "203.0.113.10";
pub const B_IP: &str = "198.51.100.20";
pub const C_IP: &str = "192.0.2.30";

/// The three hosts: A, B (the relay) and C. B's forwarding is left as a new namespace
/// has it (off): `twnode init` is what turns it on.
pub fn relay_hosts(prefix: &str) -> (Netns, Netns, Netns) {
    let a = Netns::new(&format!("{prefix}a"));
    let b = Netns::new(&format!("{prefix}b"));
    let c = Netns::new(&format!("{prefix}c"));
    // Without snooping: a snooping bridge joins 224.0.0.106 (RFC 4286's all-snoopers
    // group) and its kernel sends IGMPv3 reports for it on eth0, at times that can fall
    // inside a test's capture of "nothing but tunnel datagrams on the wire".
    b.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ]);
    b.ip(&["addr", "add", &format!("{B_IP}/24"), "dev", "eth0"]);
    b.ip(&["link", "set", "eth0", "up"]);
    for (host, addr, port) in [(&a, A_IP, "to_a"), (&c, C_IP, "to_c")] {
        b.ip(&[
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.name(),
        ]);
        b.ip(&["link", "set", port, "master", "eth0"]);
        b.ip(&["link", "set", port, "up"]);
        host.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        host.ip(&["link", "set", "eth0", "up"]);
        // onlink: the hosts sit in different subnets on one wire, as in the seed.
        host.ip(&[
            "route", "add", "default", "via", B_IP, "dev", "eth0", "onlink",
        ]);
        b.ip(&["route", "add", addr, "dev", "eth0", "scope", "link"]);
    }
    b.ip(&[
        "route", "add", "default", "via", A_IP, "dev", "eth0", "onlink",
    ]);
    (a, b, c)
}

/// Runs `create` (a `line create ...` argument list) on `server`, pastes the printed
/// peer command on `client` with `<parent>` replaced by `client_parent`, and waits until
/// both ends are up.
pub fn line_pair(server: &Node, client: &Node, create: &[&str], client_parent: &str) {
    let name = create[6];
    server.cli_ok(create);
    let peer = server.cli_ok(&["line", "show-peer", name]);
    client.paste(&peer, client_parent);
    server.wait_state(name, "up", 15);
    client.wait_state(name, "up", 15);
}

/// The distinct source and destination addresses of every IP header tshark finds in
/// the capture (outer and, where it can read them, inner), with the packet counts.
pub fn addresses(file: &Path) -> Vec<String> {
    let mut seen: Vec<String> = tshark_fields(file, "ip", &["ip.src", "ip.dst"])
        .iter()
        .flat_map(|l| l.split(['\t', ',']).map(str::to_owned).collect::<Vec<_>>())
        .filter(|a| !a.is_empty())
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

/// `line list --json`'s entry for `name`.
pub fn entry(node: &Node, name: &str) -> serde_json::Value {
    node.lines()
        .as_array()
        .expect("array")
        .iter()
        .find(|l| l["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no line {name} in line list"))
}
