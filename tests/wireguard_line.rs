//! A WireGuard line between two twnode hosts in network namespaces, created exactly as a
//! user would: `line create` on the server, `show-peer`, paste on the client.

mod common;

use std::time::{Duration, Instant};

use common::node::{seed_pair, shell_words, tcp_transfer, Node, SERVER_CREATE};
use common::{dump_state, require_root_and_tools};

#[test]
fn line_made_with_create_and_pasted_peer_command_carries_ping_and_tcp() {
    if !require_root_and_tools(&["ip", "ping", "python3"]) {
        return;
    }
    let (a, b) = seed_pair("wg");
    let before_a = dump_state(&a);
    let before_b = dump_state(&b);
    let mut na = Node::start(&a);
    let mut nb = Node::start(&b);

    let created = na.cli_ok(SERVER_CREATE);
    assert!(
        created.contains("Local IP:   203.0.113.10 (from parent eth0)"),
        "{created}"
    );
    let peer = na.cli_ok(&["line", "show-peer", "tunnel_base"]);
    assert!(
        peer.starts_with("twnode line create <parent> 203.0.113.10 10.0.0.1 10.0.0.2 tunnel_base "),
        "{peer}"
    );
    assert_eq!(peer.trim().lines().count(), 1, "one shell command: {peer}");
    assert!(
        created.contains(peer.trim()),
        "create prints the same peer command"
    );
    nb.paste(&peer, "eth0");

    na.wait_state("tunnel_base", "up", 10);
    nb.wait_state("tunnel_base", "up", 10);
    let up = Instant::now();
    a.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.2"]);
    b.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.1"]);
    let route = a.run_ok(&["ip", "route", "get", "10.0.0.2"]);
    assert!(
        route.contains("dev tunnel_base") && route.contains("src 10.0.0.1"),
        "{route}"
    );

    let (sent, got) = tcp_transfer(&a, &b, "10.0.0.2", 5001, 10 << 20);
    assert_eq!(sent, got, "10 MB transfer checksum");

    let list = na.cli_ok(&["line", "list"]);
    assert!(
        list.contains("tunnel_base") && list.contains("✓ up"),
        "{list}"
    );
    let json = na.lines();
    let l = &json[0];
    assert!(l["rx_bytes"].as_u64().unwrap() > 0 && l["tx_bytes"].as_u64().unwrap() > 10 << 20);
    assert!(l["last_handshake_secs"].as_u64().is_some());

    // A warning means something is wrong: a healthy line logs none, also past
    // WireGuard's 5 s handshake retry (boringtun warned then, issue 22 item 3).
    std::thread::sleep(Duration::from_secs(7).saturating_sub(up.elapsed()));
    for (who, log) in [("server", na.log()), ("client", nb.log())] {
        assert!(
            !log.contains(" WARN "),
            "the {who} warns on a healthy line:\n{log}"
        );
    }

    // Restart: lines come back from the config, traffic flows again.
    na.stop_daemon();
    na.start_daemon();
    na.wait_state("tunnel_base", "up", 30);
    a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.2"]);

    // SIGTERM removes everything: links, addresses, routes, rules as before.
    na.stop_daemon();
    nb.stop_daemon();
    assert_eq!(dump_state(&a), before_a, "A's state after SIGTERM");
    assert_eq!(dump_state(&b), before_b, "B's state after SIGTERM");
}

#[test]
fn line_delete_leaves_nothing_behind_and_updates_the_config() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("del");
    let before = dump_state(&a);
    let na = Node::start(&a);
    na.cli_ok(SERVER_CREATE);
    assert!(na.config_text().contains("tunnel_base"));
    assert_ne!(dump_state(&a), before);
    let out = na.cli_ok(&["line", "delete", "tunnel_base"]);
    assert!(out.contains("tunnel_base"), "{out}");
    assert_eq!(dump_state(&a), before, "state after line delete");
    assert!(!na.config_text().contains("tunnel_base"));
    assert!(na.lines().as_array().unwrap().is_empty());
}

/// Issue 22 item 3: a client given a wrong `--peer-pubkey` says what is likely wrong
/// (its initiations go unanswered), so does the server (they fail authentication), and
/// every warning in either log names the line.
#[test]
fn a_wrong_peer_key_shows_its_likely_cause_and_every_warning_names_the_line() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, b) = seed_pair("wgkey");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    na.cli_ok(SERVER_CREATE);
    let peer = na.cli_ok(&["line", "show-peer", "tunnel_base"]);
    // The pasted command with another key where the server's public key belongs.
    let stranger = na.cli_ok(&["genkey"]);
    let mut words = shell_words(&peer.trim().replacen("<parent>", "eth0", 1));
    let at = words
        .iter()
        .position(|w| w == "--peer-pubkey")
        .expect("the peer command names the server's key");
    words[at + 1] = stranger.trim().to_string();
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    nb.cli_ok(&args);

    let reason = |n: &Node| -> String {
        let lines = n.lines();
        let line = lines
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "tunnel_base")
            .cloned()
            .unwrap();
        assert_ne!(line["state"], "up", "{line}");
        line["reason"].as_str().unwrap_or("").to_string()
    };
    let start = Instant::now();
    let (client, server) = loop {
        let (client, server) = (reason(&nb), reason(&na));
        if client.contains("no answer to") && server.contains("failed authentication") {
            break (client, server);
        }
        assert!(
            start.elapsed() < Duration::from_secs(16),
            "after {:?}: client says {client:?}, server {server:?}\nclient log:\n{}\nserver log:\n{}",
            start.elapsed(),
            nb.log(),
            na.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        client.contains("203.0.113.10:51820"),
        "names where the initiations went: {client}"
    );
    assert!(client.contains("--peer-pubkey"), "{client}");
    assert!(
        server.contains("198.51.100.20"),
        "names the peer's address: {server}"
    );
    let shown = nb.cli_ok(&["line", "show", "tunnel_base"]);
    assert!(shown.contains("no answer to"), "{shown}");

    // Give boringtun's 5 s retry a turn more, then read the logs.
    std::thread::sleep(Duration::from_secs(2));
    for (who, log) in [("client", nb.log()), ("server", na.log())] {
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        assert!(
            warnings
                .iter()
                .any(|l| l.contains("no answer to") || l.contains("failed authentication")),
            "the {who} warns about the line's problem:\n{log}"
        );
        for w in &warnings {
            assert!(
                w.contains("tunnel_base"),
                "a {who} warning without the line's name: {w}\n{log}"
            );
        }
        assert!(
            !log.contains("HANDSHAKE(REKEY_TIMEOUT)")
                || log
                    .lines()
                    .filter(|l| l.contains("HANDSHAKE("))
                    .all(|l| l.contains("tunnel_base")),
            "boringtun's messages name the line:\n{log}"
        );
    }
}
