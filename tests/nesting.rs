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
    let (na, mut nb, nc) = (Node::start(&a), Node::new(&b), Node::start(&c));
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
    // Counted in bytes: with offloads a captured frame may be many coalesced datagrams.
    let relayed_bytes = total_len(&relayed);
    assert!(
        relayed_bytes > 1 << 20,
        "B relayed {relayed_bytes} bytes of tunnel_ac in {} frames, less than the 1 MB sent",
        relayed.len()
    );
    // The physical link: only the underlay's addresses, only the two outer lines' ports.
    let on_wire = addresses(&wire);
    assert_eq!(on_wire, [C_IP, B_IP, A_IP], "addresses on B's eth0");
    let other = tshark_fields(
        &wire,
        "ip && !(udp.port == 51820 || udp.port == 51821)",
        &["frame.number", "ip.src", "ip.dst", "_ws.col.Info"],
    );
    assert!(
        other.is_empty(),
        "{} other packets on the wire (frame, source, destination, info):\n{}",
        other.len(),
        other.join("\n")
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

/// `ping -M do -c 1 -s SIZE dst` (DF set; IPv6 never fragments on the way): its
/// output, whether it succeeded or not.
fn ping_df(ns: &Netns, dst: &str, size: usize) -> (bool, String) {
    let family = if dst.contains(':') { "-6" } else { "-4" };
    let size = size.to_string();
    let out = ns.exec(&[
        "ping", family, "-M", "do", "-c", "1", "-W", "2", "-s", &size, dst,
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
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

/// Four layers, each type on another: WireGuard on eth0, GRE on WireGuard, WireGuard on
/// GRE, IPIP on WireGuard. Each layer's MTU is its parent's minus its exact overhead,
/// as `line list` shows; each layer's MTU holds exactly (`ping -M do`); a TCP transfer
/// through all four arrives intact; and eth0 carries nothing but the outer line's
/// datagrams between the two physical addresses (no nested layer leaks past its parent).
#[test]
fn four_mixed_layers_compute_mtu_per_layer_and_carry_a_transfer() {
    if !require_root_and_tools(TOOLS) {
        return;
    }
    let (a, b) = common::node::seed_pair("four");
    let (na, nb) = (Node::start(&a), Node::start(&b));
    #[rustfmt::skip]
    line_pair(&na, &nb, &["line", "create", "eth0", B_IP, "10.0.0.2", "10.0.0.1", "tunnel_base",
        "--type", "wireguard", "--mode", "server", "--listen-port", "51820"], "eth0");
    #[rustfmt::skip]
    line_pair(&na, &nb, &["line", "create", "tunnel_base", "10.0.0.2", "10.1.0.2", "10.1.0.1",
        "gre_l2", "--type", "gre", "--key", "7"], "tunnel_base");
    #[rustfmt::skip]
    line_pair(&na, &nb, &["line", "create", "gre_l2", "10.1.0.2", "172.16.0.2", "172.16.0.1",
        "wg_l3", "--type", "wireguard", "--mode", "server", "--listen-port", "51821"], "gre_l2");
    #[rustfmt::skip]
    line_pair(&na, &nb, &["line", "create", "wg_l3", "172.16.0.2", "172.17.0.2", "172.17.0.1",
        "ipip_l4", "--type", "ipip"], "wg_l3");

    // eth0 1500; WireGuard over IPv4 60 (20 + 8 + 32); GRE with a key 28 (20 + 4 + 4);
    // IPIP 20.
    let layers = [
        ("tunnel_base", "eth0", "10.0.0.2", 1440),
        ("gre_l2", "tunnel_base", "10.1.0.2", 1412),
        ("wg_l3", "gre_l2", "172.16.0.2", 1352),
        ("ipip_l4", "wg_l3", "172.17.0.2", 1332),
    ];
    for node in [&na, &nb] {
        for (depth, (name, parent, _, mtu)) in layers.iter().enumerate() {
            let e = entry(node, name);
            assert_eq!(e["mtu"], *mtu, "{e}");
            assert_eq!(e["depth"], depth, "{e}");
            assert_eq!(e["parent"], *parent, "{e}");
            let dev = a.ip(&["link", "show", name]);
            assert!(dev.contains(&format!("mtu {mtu} ")), "{dev}");
        }
    }
    let table = na.cli_ok(&["line", "list"]);
    for (depth, (name, _, _, mtu)) in layers.iter().enumerate() {
        let row = table
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} in\n{table}"));
        let indent = if depth == 0 {
            String::new()
        } else {
            format!("{}└ ", "  ".repeat(depth - 1))
        };
        assert!(row.starts_with(&format!("{indent}{name} ")), "{row}");
        assert!(row.contains(&format!(" {mtu} ")), "{row}");
    }

    for (name, _, vip, mtu) in layers {
        ping(&a, vip);
        // ICMP echo: 20 bytes of IP header and 8 of ICMP around the payload.
        let (ok, out) = ping_df(&a, vip, mtu - 28);
        assert!(
            ok,
            "{name}: a packet of exactly its MTU {mtu} passes:\n{out}"
        );
        let (ok, out) = ping_df(&a, vip, mtu - 27);
        assert!(
            !ok && out.contains(&format!("mtu={mtu}")) && out.contains("too long"),
            "{name}: one byte above its MTU {mtu} is refused:\n{out}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let wire = Capture::start(&a, "eth0", 8, dir.path());
    let (sent, got) = tcp_transfer(&a, &b, "172.17.0.2", 5201, 2 << 20);
    assert_eq!(sent, got, "2 MB through four layers");
    let wire = wire.finish();
    assert_eq!(
        addresses(&wire),
        [B_IP, A_IP],
        "only the physical addresses on eth0"
    );
    let other = tshark_fields(&wire, "ip && !udp.port == 51820", &["frame.number"]);
    assert!(
        other.is_empty(),
        "{} packets on eth0 outside tunnel_base",
        other.len()
    );
    // Counted in bytes: with offloads a captured frame may be many coalesced datagrams.
    let carried = tshark_fields(&wire, "udp.port == 51820", &["frame.len"]);
    let carried_bytes = total_len(&carried);
    assert!(
        carried_bytes > 2 << 20,
        "tunnel_base carried {carried_bytes} bytes in {} frames, less than the 2 MB sent",
        carried.len()
    );
}

/// Where the kernel cannot help: a line whose MTU was set above what its parent
/// carries (`--mtu`), or whose physical parent's MTU shrank. The kernel lets such a
/// packet into the TUN device; the line answers it with ICMP fragmentation needed,
/// carrying the MTU that fits, so path MTU discovery (ping's, TCP's) finds it.
#[test]
fn packets_too_big_for_the_parent_get_frag_needed_from_the_line() {
    if !require_root_and_tools(TOOLS) {
        return;
    }
    let (a, b) = common::node::seed_pair("pmtu");
    let (na, nb) = (Node::start(&a), Node::start(&b));
    #[rustfmt::skip]
    line_pair(&na, &nb, &["line", "create", "eth0", B_IP, "10.0.0.2", "10.0.0.1", "tunnel_base",
        "--type", "wireguard", "--mode", "server", "--listen-port", "51820"], "eth0");
    // Both 1440, like their parent: 24 and 60 bytes more than it carries.
    #[rustfmt::skip]
    line_pair(&na, &nb, &["line", "create", "tunnel_base", "10.0.0.2", "10.1.0.2", "10.1.0.1",
        "gre_big", "--type", "gre", "--mtu", "1440"], "tunnel_base");
    #[rustfmt::skip]
    line_pair(&na, &nb, &["line", "create", "tunnel_base", "10.0.0.2", "172.16.0.2", "172.16.0.1",
        "wg_big", "--type", "wireguard", "--mode", "server", "--listen-port", "51821",
        "--mtu", "1440"], "tunnel_base");
    for name in ["gre_big", "wg_big"] {
        assert_eq!(entry(&na, name)["mtu"], 1440, "--mtu is shown as set");
        assert_eq!(
            entry(&nb, name)["mtu"],
            1440,
            "the peer command carries --mtu"
        );
    }

    // TCP finds the path MTU from the line's errors: the transfer over GRE, which
    // cannot fragment its outer packet, only completes thanks to them.
    let (sent, got) = tcp_transfer(&a, &b, "10.1.0.2", 5202, 1 << 20);
    assert_eq!(sent, got, "1 MB over gre_big");
    assert!(
        drops(&na, "gre_big", "path_mtu") >= 1,
        "A's TCP learnt from A's line"
    );
    let (ok, out) = ping_df(&a, "10.1.0.2", 1400);
    assert!(!ok && out.contains("1416"), "{out}");
    let (ok, out) = ping_df(&a, "10.1.0.2", 1416 - 28);
    assert!(ok, "gre_big: 1416 bytes fit:\n{out}");

    // IPv6 inside the same GRE line: packet too big, with the same MTU.
    a.ip(&[
        "-6",
        "addr",
        "add",
        "fd00:77::1/64",
        "dev",
        "gre_big",
        "nodad",
    ]);
    b.ip(&[
        "-6",
        "addr",
        "add",
        "fd00:77::2/64",
        "dev",
        "gre_big",
        "nodad",
    ]);
    let (ok, out) = ping_df(&a, "fd00:77::2", 1380);
    assert!(
        !ok && out.contains("Packet too big") && out.contains("1416"),
        "{out}"
    );
    let (ok, out) = ping_df(&a, "fd00:77::2", 1416 - 48);
    assert!(ok, "{out}");

    // ping's own discovery, over WireGuard.
    let (ok, out) = ping_df(&a, "172.16.0.2", 1400);
    assert!(
        !ok && out.contains("Frag needed") && out.contains("mtu = 1380"),
        "wg_big answers with the MTU that fits:\n{out}"
    );
    assert!(
        drops(&na, "wg_big", "path_mtu") >= 1,
        "{}",
        na.cli_ok(&["line", "show", "wg_big"])
    );
    // Learnt: now the kernel refuses at once.
    let (ok, out) = ping_df(&a, "172.16.0.2", 1400);
    assert!(!ok && out.contains("mtu=1380"), "{out}");
    let (ok, out) = ping_df(&a, "172.16.0.2", 1380 - 28);
    assert!(ok, "wg_big: 1380 bytes fit:\n{out}");
    // Without DF, WireGuard's outer datagram is fragmented by the kernel and arrives.
    a.run_ok(&[
        "ping",
        "-M",
        "dont",
        "-c",
        "1",
        "-W",
        "2",
        "-s",
        "1400",
        "172.16.0.2",
    ]);

    // A physical parent whose MTU shrinks: tunnel_base (1440) now carries only 1340.
    a.ip(&["link", "set", "eth0", "mtu", "1400"]);
    eventually(10, "tunnel_base follows its parent's MTU", || {
        let (ok, out) = ping_df(&a, "10.0.0.2", 1400);
        !ok && out.contains("mtu = 1340")
    });
    let (ok, out) = ping_df(&a, "10.0.0.2", 1340 - 28);
    assert!(ok, "{out}");
}

/// A child follows its parent down and back up by itself: a GRE parent with keepalive
/// whose peer goes silent makes the WireGuard child on it show `parent down` on both
/// ends; when the peer answers again, the parent comes back and the child carries
/// traffic with no command run. A restarted peer daemon brings both layers back
/// parents first, and the stack works again.
#[test]
fn children_show_parent_down_and_recover_by_themselves() {
    if !require_root_and_tools(&["ip", "ping", "nft"]) {
        return;
    }
    let (a, b) = common::node::seed_pair("pdown");
    let (na, mut nb) = (Node::start(&a), Node::start(&b));
    #[rustfmt::skip]
    line_pair(&na, &nb, &["line", "create", "eth0", B_IP, "10.0.0.2", "10.0.0.1", "gre_base",
        "--type", "gre", "--keepalive", "1,2"], "eth0");
    #[rustfmt::skip]
    line_pair(&na, &nb, &["line", "create", "gre_base", "10.0.0.2", "172.16.0.2", "172.16.0.1",
        "tunnel_secure", "--type", "wireguard", "--mode", "server", "--listen-port", "51821"],
        "gre_base");
    ping(&a, "172.16.0.2");

    common::raw::block_protocols(&b, &[47]);
    for node in [&na, &nb] {
        node.wait_state("gre_base", "down", 10);
        node.wait_state("tunnel_secure", "parent_down", 5);
        let e = entry(node, "tunnel_secure");
        assert!(
            e["reason"]
                .as_str()
                .unwrap_or("")
                .contains("parent line gre_base is not up"),
            "{e}"
        );
        let table = node.cli_ok(&["line", "list"]);
        let row = table.lines().find(|l| l.contains("tunnel_secure")).unwrap();
        assert!(row.contains("✗ parent down"), "{table}");
    }
    let lost = a.exec(&["ping", "-c", "1", "-W", "1", "172.16.0.2"]);
    assert!(!lost.status.success(), "the peer is silenced");

    common::raw::unblock(&b);
    for node in [&na, &nb] {
        node.wait_state("gre_base", "up", 10);
        node.wait_state("tunnel_secure", "up", 10);
    }
    ping(&a, "172.16.0.2");

    // The peer's daemon restarts: it brings gre_base up, then tunnel_secure on it.
    nb.stop_daemon();
    nb.start_daemon();
    nb.wait_state("gre_base", "up", 10);
    nb.wait_state("tunnel_secure", "up", 15);
    eventually(10, "the stack carries traffic after the restart", || {
        a.exec(&["ping", "-c", "1", "-W", "1", "172.16.0.2"])
            .status
            .success()
    });
    ping(&b, "172.16.0.1");
}

/// Path MTU discovery through a relay: B's tunnel_bc is narrower (`--mtu 1320`) than
/// what A's GRE line toward C sends through it. B's kernel answers A's outer packets
/// with fragmentation needed; A's kernel learns the path MTU toward C's VIP; A's line
/// follows it and answers its own senders with the MTU that fits the inner packet. A
/// TCP transfer, whose DF segments would otherwise vanish at B (a GRE line cannot
/// fragment its outer packet), completes.
#[test]
fn path_mtu_discovery_works_through_a_narrower_relay() {
    if !require_root_and_tools(TOOLS) {
        return;
    }
    let (a, b, c) = relay_hosts("prelay");
    let (na, mut nb, nc) = (Node::start(&a), Node::new(&b), Node::start(&c));
    nb.cli_ok(&["init"]);
    nb.start_daemon();
    #[rustfmt::skip]
    line_pair(&na, &nb, &["line", "create", "eth0", B_IP, "10.0.0.2", "10.0.0.1", "tunnel_ab",
        "--type", "wireguard", "--mode", "server", "--listen-port", "51820"], "eth0");
    // Narrow on B's side only: C keeps the MTU its parent gives (the peer command's
    // --mtu is left out), so C's TCP advertises a segment size B cannot carry.
    #[rustfmt::skip]
    nb.cli_ok(&["line", "create", "eth0", C_IP, "10.0.1.2", "10.0.1.1", "tunnel_bc",
        "--type", "wireguard", "--mode", "server", "--listen-port", "51821", "--mtu", "1320"]);
    let peer = nb.cli_ok(&["line", "show-peer", "tunnel_bc"]);
    assert!(peer.trim_end().ends_with(" --mtu 1320"), "{peer}");
    nc.paste(peer.trim_end().trim_end_matches(" --mtu 1320"), "eth0");
    nb.wait_state("tunnel_bc", "up", 15);
    nc.wait_state("tunnel_bc", "up", 15);
    #[rustfmt::skip]
    line_pair(&na, &nc, &["line", "create", "tunnel_ab", "10.0.1.2", "10.2.0.2", "10.2.0.1",
        "gre_ac", "--type", "gre"], "tunnel_bc");
    assert_eq!(entry(&na, "gre_ac")["mtu"], 1416);
    ping(&a, "10.2.0.2");

    let (sent, got) = tcp_transfer(&a, &c, "10.2.0.2", 5203, 1 << 20);
    assert_eq!(sent, got, "1 MB from A to C over gre_ac");
    assert!(
        drops(&na, "gre_ac", "path_mtu") >= 1,
        "{}",
        na.cli_ok(&["line", "show", "gre_ac"])
    );
    assert!(
        na.log().contains("path MTU toward the peer changed"),
        "{}",
        na.log()
    );
    // 1320 through tunnel_bc, less GRE's 24 bytes.
    let (ok, out) = ping_df(&a, "10.2.0.2", 1300);
    assert!(!ok && out.contains("1296"), "{out}");
    let (ok, out) = ping_df(&a, "10.2.0.2", 1296 - 28);
    assert!(ok, "{out}");
}

/// The sum of tshark `frame.len` values.
fn total_len(lens: &[String]) -> usize {
    lens.iter()
        .filter_map(|len| len.trim().parse::<usize>().ok())
        .sum()
}
