//! Ten hosts: two clients behind a gateway G, three relays, two exits and a destination
//! D, every host's underlay on one switch (a namespace of its own) with a default route.
//!
//! ```text
//!   cl1 --lan1--\                  /-- r1 ==r1x1== x1 --\
//!                G ==gr1,gr2,gr3==+--- r2 ==r2x2== x2 ---+-- D (10.250-252.0.1)
//!   cl2 --lan2--/                  \-- r3 ---------------/
//!   G's nested lines: gx1 on gr1 to x1 (through r1), gx2 on gr2 to x2 (through r2)
//! ```
//!
//! On G: a failover group for cl1's LAN toward 10.250.0.0/24 through the nested lines
//! (gx1 preferred, gx2), a balancing group for what comes in on lan2 toward
//! 10.251.0.0/24 over the three relays (2:1:1), and the default exit (gr3, then gr2)
//! for the rest. The relays and exits masquerade what they forward to D, so D's
//! receivers see which host a datagram left through. Cutting x1 moves cl1's traffic to
//! x2 and back; cutting r3 moves r3's share of the balanced flows and the default exit,
//! nothing else; no datagram ever reaches D from a client's own address (in clear).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::node::Node;
use common::policy::{monotonic, nft_drop_from, plug, send_flows, switch, Arrival, Receiver};
use common::relay::line_pair;
use common::{require_root_and_tools, Netns};

const G: &str = "198.51.100.1";
const D: &str = "198.51.100.30";

fn underlay(host: &str) -> &'static str {
    match host {
        "r1" => "198.51.100.11",
        "r2" => "198.51.100.12",
        "r3" => "198.51.100.13",
        "x1" => "198.51.100.21",
        "x2" => "198.51.100.22",
        _ => panic!("{host}"),
    }
}

/// Which host a datagram left through, by its (masqueraded) source.
fn left_through(src: &str) -> &'static str {
    match src {
        "198.51.100.11" => "r1",
        "198.51.100.12" => "r2",
        "198.51.100.13" => "r3",
        "198.51.100.21" => "x1",
        "198.51.100.22" => "x2",
        _ => "elsewhere",
    }
}

/// Where most of `flow`'s datagrams left through over `[from, to)`.
fn main_exit(arrivals: &[Arrival], flow: u32, from: f64, to: f64) -> Option<&'static str> {
    let mut count: BTreeMap<&'static str, usize> = BTreeMap::new();
    for x in arrivals
        .iter()
        .filter(|x| x.flow == flow && x.t >= from && x.t < to)
    {
        *count.entry(left_through(&x.src)).or_default() += 1;
    }
    count.into_iter().max_by_key(|(_, n)| *n).map(|(h, _)| h)
}

/// Waits until flow 0 of `rx` arrives through `host` (up to `secs`).
fn wait_exit(rx: &Receiver, host: &str, secs: f64, what: &str) {
    let deadline = monotonic() + secs;
    loop {
        let now = monotonic();
        if main_exit(&rx.arrivals(), 0, now - 0.3, now) == Some(host) {
            return;
        }
        if now >= deadline {
            let arrivals = rx.arrivals();
            let last: Vec<&Arrival> = arrivals.iter().rev().take(3).collect();
            panic!("{what}: not through {host} after {secs} s; the latest datagrams: {last:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn masquerade(ns: &Netns) {
    ns.run_ok(&[
        "nft",
        "add table ip twnat; add chain ip twnat post { type nat hook postrouting priority 100; }; \
         add rule ip twnat post oifname \"eth0\" masquerade",
    ]);
}

/// A client on its own link to G: `cl` gets `addr/26` on eth0, G gets `gw/26` on `lan`.
fn client(g: &Netns, cl: &Netns, lan: &str, gw: &str, addr: &str) {
    g.ip(&[
        "link",
        "add",
        lan,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        cl.name(),
    ]);
    g.ip(&["addr", "add", &format!("{gw}/26"), "dev", lan]);
    g.ip(&["link", "set", lan, "up"]);
    cl.ip(&["addr", "add", &format!("{addr}/26"), "dev", "eth0"]);
    cl.ip(&["link", "set", "eth0", "up"]);
    cl.ip(&["route", "add", "default", "via", gw, "dev", "eth0"]);
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn ten_hosts_groups_failover_and_balancing_together() {
    if !require_root_and_tools(&["ip", "python3", "nft"]) {
        return;
    }
    let sw = switch("tps");
    let g = Netns::new("tpg");
    let cl1 = Netns::new("tpc1");
    let cl2 = Netns::new("tpc2");
    let d = Netns::new("tpd");
    let hosts: Vec<(&str, Netns)> = ["r1", "r2", "r3", "x1", "x2"]
        .into_iter()
        .map(|h| (h, Netns::new(&format!("tp{h}"))))
        .collect();
    let host = |name: &str| &hosts.iter().find(|(h, _)| *h == name).expect("host").1;
    plug(&sw, &g, "pg", G, D);
    plug(&sw, &d, "pd", D, G);
    for (h, ns) in &hosts {
        plug(&sw, ns, &format!("p{h}"), underlay(h), D);
        masquerade(ns);
    }
    for dest in ["10.250.0.1", "10.251.0.1", "10.252.0.1"] {
        d.ip(&["addr", "add", &format!("{dest}/32"), "dev", "lo"]);
    }
    client(&g, &cl1, "lan1", "192.0.2.1", "192.0.2.10");
    client(&g, &cl2, "lan2", "192.0.2.65", "192.0.2.70");

    let ng = Node::start(&g);
    ng.cli_ok(&["init"]);
    let nodes: Vec<(&str, Node)> = hosts
        .iter()
        .map(|(h, ns)| {
            let n = Node::start(ns);
            n.cli_ok(&["init"]);
            (*h, n)
        })
        .collect();
    let node = |name: &str| &nodes.iter().find(|(h, _)| *h == name).expect("node").1;

    // G to the relays: WireGuard, GRE, WireGuard (the relays serve; G dials).
    let wg = |parent: &str, peer: &str, peer_vip: &str, vip: &str, name: &str, port: &str| {
        let words = [
            "line",
            "create",
            parent,
            peer,
            peer_vip,
            vip,
            name,
            "--type",
            "wireguard",
            "--mode",
            "server",
            "--listen-port",
            port,
        ];
        words.map(String::from).to_vec()
    };
    let gre = |n: &Node, parent: &str, peer: &str, peer_vip: &str, vip: &str, name: &str| {
        n.cli_ok(&[
            "line", "create", parent, peer, peer_vip, vip, name, "--type", "gre",
        ]);
    };
    line_pair(
        node("r1"),
        &ng,
        &args(&wg("eth0", G, "10.11.0.1", "10.11.0.2", "gr1", "51820")),
        "eth0",
    );
    gre(node("r2"), "eth0", G, "10.12.0.1", "10.12.0.2", "gr2");
    gre(&ng, "eth0", underlay("r2"), "10.12.0.2", "10.12.0.1", "gr2");
    line_pair(
        node("r3"),
        &ng,
        &args(&wg("eth0", G, "10.13.0.1", "10.13.0.2", "gr3", "51820")),
        "eth0",
    );
    // The relays to the exits: WireGuard r1-x1, GRE r2-x2.
    let r1x1 = wg(
        "eth0",
        underlay("x1"),
        "10.21.0.2",
        "10.21.0.1",
        "r1x1",
        "51821",
    );
    line_pair(node("r1"), node("x1"), &args(&r1x1), "eth0");
    gre(
        node("r2"),
        "eth0",
        underlay("x2"),
        "10.22.0.2",
        "10.22.0.1",
        "r2x2",
    );
    gre(
        node("x2"),
        "eth0",
        underlay("r2"),
        "10.22.0.1",
        "10.22.0.2",
        "r2x2",
    );
    // Nested, the seed's relay scenario: G to x1 inside gr1 through r1 (WireGuard), G
    // to x2 inside gr2 through r2 (GRE).
    line_pair(
        &ng,
        node("x1"),
        &args(&wg(
            "gr1",
            "10.21.0.2",
            "172.16.1.2",
            "172.16.1.1",
            "gx1",
            "51822",
        )),
        "r1x1",
    );
    gre(&ng, "gr2", "10.22.0.2", "172.16.2.2", "172.16.2.1", "gx2");
    gre(
        node("x2"),
        "r2x2",
        "10.12.0.1",
        "172.16.2.1",
        "172.16.2.2",
        "gx2",
    );
    for line in ["gr1", "gr2", "gr3", "gx1", "gx2"] {
        ng.wait_state(line, "up", 15);
    }

    ng.cli_ok(&[
        "policy",
        "create",
        "cl1",
        "gx1,gx2",
        "--from",
        "192.0.2.0/26",
    ]);
    ng.cli_ok(&["policy", "add", "cl1", "10.250.0.0/24"]);
    ng.cli_ok(&[
        "policy",
        "create",
        "spread",
        "gr1:2,gr2:1,gr3:1",
        "--from",
        "lan2",
    ]);
    ng.cli_ok(&["policy", "add", "spread", "10.251.0.0/24"]);
    ng.cli_ok(&["policy", "default", "gr3"]);
    ng.cli_ok(&["policy", "failover", "default", "gr3,gr2"]);
    let dev = |args: &[&str]| {
        let out = g.ip(args);
        out.split_whitespace()
            .skip_while(|w| *w != "dev")
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(
        dev(&[
            "route",
            "get",
            "10.250.0.1",
            "from",
            "192.0.2.10",
            "iif",
            "lan1"
        ]),
        "gx1"
    );
    assert_eq!(
        dev(&[
            "route",
            "get",
            "10.252.0.1",
            "from",
            "192.0.2.10",
            "iif",
            "lan1"
        ]),
        "gr3"
    );
    // G's own underlay subnet stays on the underlay despite the default exit.
    assert_eq!(dev(&["route", "get", D]), "eth0");

    let rx_a = Receiver::start(&d, 9001);
    let rx_b = Receiver::start(&d, 9002);
    let rx_d = Receiver::start(&d, 9003);
    let secs = 45.0;
    let _fa = send_flows(&cl1, "10.250.0.1", 9001, 1, 50, secs);
    let flows = 60;
    let _fb = send_flows(&cl2, "10.251.0.1", 9002, flows, 10, secs);
    let _fd = send_flows(&cl1, "10.252.0.1", 9003, 1, 20, secs);
    wait_exit(
        &rx_a,
        "x1",
        10.0,
        "cl1's traffic through the nested line to x1",
    );
    wait_exit(&rx_d, "r3", 10.0, "the default exit through r3");
    std::thread::sleep(Duration::from_secs(2));
    let t = monotonic();
    std::thread::sleep(Duration::from_secs(2));
    let arrivals = rx_b.arrivals();
    let before: Vec<&str> = (0..flows)
        .map(|f| main_exit(&arrivals, f, t, t + 2.0).unwrap_or("silent"))
        .collect();
    let share = |h: &str| before.iter().filter(|x| **x == h).count();
    assert!(
        share("r1") > share("r2") && share("r1") > share("r3"),
        "{before:?}"
    );
    assert!(share("r2") > 0 && share("r3") > 0, "{before:?}");

    // x1 cut: cl1 moves to x2 and back; the balanced flows and the default exit stay.
    nft_drop_from(host("x1"), underlay("r1"), true);
    wait_exit(&rx_a, "x2", 5.0, "cl1's traffic failing over to x2");
    let now = monotonic();
    assert_eq!(main_exit(&rx_d.arrivals(), 0, now - 1.0, now), Some("r3"));
    nft_drop_from(host("x1"), underlay("r1"), false);
    wait_exit(&rx_a, "x1", 20.0, "cl1's traffic failing back to x1");

    // r3 cut: its share of the balanced flows moves, the rest stays; the default exit
    // moves to r2.
    nft_drop_from(host("r3"), G, true);
    wait_exit(&rx_d, "r2", 5.0, "the default exit failing over to r2");
    std::thread::sleep(Duration::from_secs(1));
    let t = monotonic();
    std::thread::sleep(Duration::from_secs(2));
    let arrivals = rx_b.arrivals();
    for f in 0..flows {
        let after = main_exit(&arrivals, f, t, t + 2.0);
        match before[f as usize] {
            "r3" => assert!(
                matches!(after, Some("r1" | "r2")),
                "flow {f} stayed on r3: {after:?}"
            ),
            h => assert_eq!(after, Some(h), "flow {f} moved off {h}"),
        }
    }
    nft_drop_from(host("r3"), G, false);
    wait_exit(&rx_d, "r3", 20.0, "the default exit back on r3");

    for rx in [&rx_a, &rx_b, &rx_d] {
        let arrivals = rx.arrivals();
        let leaks: Vec<&Arrival> = arrivals
            .iter()
            .filter(|x| left_through(&x.src) == "elsewhere")
            .take(3)
            .collect();
        assert!(
            leaks.is_empty(),
            "datagrams reached D other than through an exit: {leaks:?}"
        );
    }
    let status = ng.cli_ok(&["status"]);
    assert!(
        status.contains("cl1: gx1 -> gx2") && status.contains("cl1: gx2 -> gx1"),
        "{status}"
    );
}
