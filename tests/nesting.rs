//! Lines on lines: the seed's relay scenario (A -> B -> C), mixed and four-layer stacks
//! with their MTUs and path-MTU errors, and children through a parent going down and
//! coming back. Real daemons in network namespaces, driven by the seed's own commands;
//! tshark, an independent decoder, reads what crossed the relay and the physical links.

mod common;

use std::time::{Duration, Instant};

use common::node::{tcp_transfer, Node};
use common::raw::{tshark_fields, Capture};
use common::relay::{addresses, entry, line_pair, relay_hosts, A_IP, B_IP, C_IP};
use common::{require_root_and_tools, Netns};

const TOOLS: &[&str] = &["ip", "ping", "tshark", "python3"];

fn ping(ns: &Netns, dst: &str) -> String {
    ns.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", dst])
}

/// The seed's second scenario: tunnel_ab (A-B), tunnel_bc (B-C), and tunnel_ac from A
/// to C through B, made with the seed's commands. B forwards after `twnode init`, with
/// no route written by hand; the relay carries tunnel_ac's encrypted datagrams only,
/// and the physical links carry nothing but the underlay's own datagrams.
#[test]
fn relay_through_b_carries_only_encrypted_datagrams_of_the_end_to_end_line() {
    if !require_root_and_tools(TOOLS) {
        return;
    }
    let (a, b, c) = relay_hosts("relay");
    let (na, nb, nc) = (Node::start(&a), Node::new(&b), Node::start(&c));
    let mut nb = nb;
    assert_eq!(
        b.run_ok(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "0",
        "a new namespace does not forward"
    );
    nb.cli_ok(&["init"]);
    assert_eq!(
        b.run_ok(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    nb.start_daemon();
    let routes_before = b.ip(&["route", "show", "table", "all"]);

    #[rustfmt::skip]
    line_pair(&na, &nb, &["line", "create", "eth0", B_IP, "10.0.0.2", "10.0.0.1", "tunnel_ab",
        "--type", "wireguard", "--mode", "server", "--listen-port", "51820"], "eth0");
    #[rustfmt::skip]
    line_pair(&nb, &nc, &["line", "create", "eth0", C_IP, "10.0.1.2", "10.0.1.1", "tunnel_bc",
        "--type", "wireguard", "--mode", "server", "--listen-port", "51821"], "eth0");
    #[rustfmt::skip]
    line_pair(&na, &nc, &["line", "create", "tunnel_ab", "10.0.1.2", "172.16.0.2", "172.16.0.1",
        "tunnel_ac", "--type", "wireguard", "--mode", "server", "--listen-port", "51822"],
        "tunnel_bc");

    // The end points' routing: the relay route toward the far peer through the parent,
    // and the protection rule looking it up in table 80, not main.
    let route = a.run_ok(&["ip", "route", "get", "10.0.1.2"]);
    assert!(
        route.contains("dev tunnel_ab") && route.contains("src 10.0.0.1"),
        "A reaches C's tunnel_bc VIP through tunnel_ab: {route}"
    );
    let rules = a.ip(&["rule", "show", "pref", "10"]);
    assert!(
        rules.contains("to 10.0.1.2 lookup 80")
            && rules.contains(&format!("to {B_IP} lookup main")),
        "{rules}"
    );
    let route = c.run_ok(&["ip", "route", "get", "10.0.0.1"]);
    assert!(
        route.contains("dev tunnel_bc") && route.contains("src 10.0.1.2"),
        "{route}"
    );
    let ac = entry(&na, "tunnel_ac");
    assert_eq!(ac["parent"], "tunnel_ab", "{ac}");
    assert_eq!(ac["depth"], 1, "{ac}");
    assert_eq!(ac["local_ip"], "10.0.0.1", "{ac}");

    // B: forwarding only, nothing twnode did not install itself, nothing by hand.
    let routes_b = b.ip(&["route", "show", "table", "all"]);
    for line in routes_b.lines().filter(|l| !routes_before.contains(l)) {
        assert!(
            line.contains("proto 0x74") || line.contains("tunnel_"),
            "{line}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let wire = Capture::start(&b, "eth0", 4, dir.path());
    let everything = Capture::start(&b, "any", 4, dir.path());
    let out = ping(&a, "172.16.0.2");
    // End to end: the relay decrements the outer packet's TTL, not the inner one's.
    assert!(out.contains("ttl=64"), "{out}");
    ping(&c, "172.16.0.1");
    let (sent, got) = tcp_transfer(&a, &c, "172.16.0.2", 5201, 1 << 20);
    assert_eq!(sent, got, "1 MB through the relay");
    let wire = wire.finish();
    let everything = everything.finish();

    let all = addresses(&everything);
    assert!(
        !all.iter().any(|ip| ip.starts_with("172.16.0.")),
        "a 172.16.0.x packet in the clear on B: {all:?}"
    );
    // What B relayed: tunnel_ac's datagrams, on its TUN devices, between the VIPs.
    let relayed = tshark_fields(
        &everything,
        "udp.port == 51822 && ip.src == 10.0.0.1 && ip.dst == 10.0.1.2",
        &["frame.len"],
    );
    assert!(relayed.len() > 100, "B relayed {} datagrams", relayed.len());
    // The physical link: only the underlay's addresses, only the two outer lines' ports.
    let on_wire = addresses(&wire);
    assert_eq!(on_wire, [C_IP, B_IP, A_IP], "addresses on B's eth0");
    let other = tshark_fields(
        &wire,
        "ip && !(udp.port == 51820 || udp.port == 51821)",
        &["frame.number"],
    );
    assert!(
        other.is_empty(),
        "{} other packets on the wire",
        other.len()
    );

    // The check above catches a leak: a protection rule that sends tunnel_ac's peer to
    // the main table puts its datagrams on the physical link, in front of tunnel_ab, and
    // ping still works (B forwards them), so only the capture can tell.
    a.ip(&[
        "rule", "add", "pref", "9", "to", "10.0.1.2", "lookup", "main",
    ]);
    let wire = Capture::start(&b, "eth0", 2, dir.path());
    ping(&a, "172.16.0.2");
    let wire = wire.finish();
    a.ip(&[
        "rule", "del", "pref", "9", "to", "10.0.1.2", "lookup", "main",
    ]);
    let leaked = addresses(&wire);
    assert!(
        leaked.iter().any(|ip| ip == "10.0.0.1"),
        "the leak is visible: {leaked:?}"
    );
}

/// Polls `check` every 200 ms for up to `secs`.
fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}
