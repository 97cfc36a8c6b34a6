//! WireGuard's UAPI on twnode lines: wireguard-tools' own `wg show`, `wg show dump`,
//! `wg showconf` and `wg set` against a server and a client line, before and after
//! their handshake, each field checked against `line show --json` and the config file;
//! `wg set` changes the running line and the TOML (and survives a restart); what would
//! break a line's model, and malformed input on the raw socket, is answered with an
//! errno and changes nothing.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::node::{seed_pair, Node, SECURE_CREATE, SERVER_CREATE};
use common::require_root_and_tools;

/// `line show NAME --json`.
fn show(node: &Node, line: &str) -> serde_json::Value {
    serde_json::from_str(&node.cli_ok(&["line", "show", line, "--json"])).expect("json")
}

/// The public key of `node`'s peer on line `tunnel_base`, as `line show` says it.
fn peer_key(node: &Node) -> String {
    show(node, "tunnel_base")["peer_public_key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `wg show LINE dump`: the interface's fields and its one peer's.
fn dump(node: &Node, line: &str) -> (Vec<String>, Vec<String>) {
    let text = node.wg(&["show", line, "dump"]);
    let mut rows = text
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>());
    let device = rows.next().expect("interface row");
    let peer = rows.next().expect("peer row");
    assert!(rows.next().is_none(), "one peer: {text}");
    assert_eq!(device.len(), 4, "{text}");
    assert_eq!(peer.len(), 8, "{text}");
    (device, peer)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The private key stored in the node's config (first `private_key =`).
fn stored_private_key(node: &Node) -> String {
    let text = node.config_text();
    text.lines()
        .find_map(|l| l.strip_prefix("private_key = "))
        .map(|k| k.trim_matches('"').to_string())
        .expect("a private key in the config")
}

/// Checks `wg show LINE dump` against `line show LINE --json` and the config.
fn check_dump_against_line_show(node: &Node, line: &str) {
    let before = show(node, line);
    let (device, peer) = dump(node, line);
    let after = show(node, line);
    assert_eq!(device[0], stored_private_key(node), "private key");
    assert_eq!(
        device[1],
        after["public_key"].as_str().unwrap(),
        "public key"
    );
    assert_eq!(
        device[2],
        after["listen_port"].as_u64().unwrap().to_string(),
        "listen port"
    );
    assert_eq!(device[3], "off", "fwmark");
    assert_eq!(peer[0], after["peer_public_key"].as_str().unwrap());
    assert_eq!(peer[1], "(none)", "no preshared key");
    let endpoint = after["endpoint"].as_str().unwrap_or("(none)");
    assert_eq!(peer[2], endpoint, "endpoint");
    assert_eq!(
        peer[3],
        format!("{}/32", after["peer_vip"].as_str().unwrap()),
        "allowed ips"
    );
    match after["last_handshake_secs"].as_u64() {
        None => assert_eq!(peer[4], "0", "no handshake yet"),
        Some(age) => {
            // UNIX time, not an age (boringtun's UAPI writes the age).
            let at: u64 = peer[4].parse().unwrap();
            let expected = now_secs() - age;
            assert!(
                at.abs_diff(expected) <= 2,
                "latest handshake {at}, line show says {age} s ago (now {})",
                now_secs()
            );
        }
    }
    for (i, key) in [(5, "rx_bytes"), (6, "tx_bytes")] {
        let wg: u64 = peer[i].parse().unwrap();
        let (lo, hi) = (before[key].as_u64().unwrap(), after[key].as_u64().unwrap());
        assert!(lo <= wg && wg <= hi, "{key}: wg {wg}, line show {lo}..{hi}");
    }
    assert_eq!(peer[7], "25", "persistent keepalive");
}

#[test]
fn wg_show_dump_and_showconf_tell_the_truth_before_and_after_a_handshake() {
    if !require_root_and_tools(&["ip", "ping", "wg", "unshare", "nft"]) {
        return;
    }
    let (a, b) = seed_pair("uapi");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    na.cli_ok(SERVER_CREATE);

    // The directory and the socket are root's alone.
    let dir = std::fs::metadata(na.uapi_dir()).expect("UAPI dir");
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    let sock = std::fs::metadata(na.uapi_dir().join("tunnel_base.sock")).expect("socket");
    assert_eq!(sock.permissions().mode() & 0o777, 0o600);

    // Server, before any handshake.
    check_dump_against_line_show(&na, "tunnel_base");
    assert_eq!(na.wg(&["show", "interfaces"]).trim(), "tunnel_base");

    // Client, before any handshake: its datagrams to the server are dropped on B's way
    // out until the filter goes.
    let nft = |rule: &str| b.run_ok(&["nft", rule]);
    nft("add table inet uapitest");
    nft("add chain inet uapitest out { type filter hook output priority 0; }");
    nft("add rule inet uapitest out udp dport 51820 drop");
    let peer = na.cli_ok(&["line", "show-peer", "tunnel_base"]);
    nb.paste(&peer, "eth0");
    nb.wait_state("tunnel_base", "connecting", 5);
    check_dump_against_line_show(&nb, "tunnel_base");
    let (_, peer_row) = dump(&nb, "tunnel_base");
    assert_eq!(
        (peer_row[2].as_str(), peer_row[4].as_str()),
        ("203.0.113.10:51820", "0"),
        "the configured endpoint, no handshake yet"
    );
    nft("delete table inet uapitest");
    na.wait_state("tunnel_base", "up", 15);
    nb.wait_state("tunnel_base", "up", 15);
    a.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.2"]);

    // Server and client, after the handshake.
    check_dump_against_line_show(&na, "tunnel_base");
    check_dump_against_line_show(&nb, "tunnel_base");
    let (_, peer_row) = dump(&nb, "tunnel_base");
    assert_eq!(
        peer_row[2], "203.0.113.10:51820",
        "the client dials the server"
    );

    let human = na.wg(&["show"]);
    for said in [
        "interface: tunnel_base",
        "listening port: 51820",
        "endpoint: 198.51.100.20:",
        "allowed ips: 10.0.0.2/32",
        "latest handshake: ",
        "persistent keepalive: every 25 seconds",
    ] {
        assert!(human.contains(said), "{said:?} not in:\n{human}");
    }
    assert!(
        !human.contains("years"),
        "a UNIX time, not an age:\n{human}"
    );

    let conf = nb.wg(&["showconf", "tunnel_base"]);
    let line = show(&nb, "tunnel_base");
    for said in [
        "[Interface]".to_string(),
        format!("PrivateKey = {}", stored_private_key(&nb)),
        "[Peer]".to_string(),
        format!("PublicKey = {}", line["peer_public_key"].as_str().unwrap()),
        "AllowedIPs = 10.0.0.1/32".to_string(),
        "Endpoint = 203.0.113.10:51820".to_string(),
        "PersistentKeepalive = 25".to_string(),
    ] {
        assert!(conf.contains(&said), "{said:?} not in:\n{conf}");
    }

    // The socket goes with its line.
    na.cli_ok(&["line", "delete", "tunnel_base"]);
    assert!(!na.uapi_dir().join("tunnel_base.sock").exists());
}

#[test]
fn wg_set_changes_the_running_line_and_its_toml_and_survives_a_restart() {
    if !require_root_and_tools(&["ip", "ping", "wg", "unshare"]) {
        return;
    }
    let (a, b) = seed_pair("uapiset");
    let na = Node::start(&a);
    let mut nb = Node::start(&b);
    na.cli_ok(SERVER_CREATE);
    nb.paste(&na.cli_ok(&["line", "show-peer", "tunnel_base"]), "eth0");
    nb.wait_state("tunnel_base", "up", 10);
    let server_key = peer_key(&nb);

    // The client: keepalive and allowed-ips.
    nb.wg(&[
        "set",
        "tunnel_base",
        "peer",
        &server_key,
        "persistent-keepalive",
        "7",
        "allowed-ips",
        "10.0.0.1/32,192.0.2.0/24",
    ]);
    let config = nb.config_text();
    assert!(config.contains("persistent_keepalive = 7"), "{config}");
    assert!(
        config.contains("allowed_ips = [\"192.0.2.0/24\"]"),
        "{config}"
    );
    nb.wait_state("tunnel_base", "up", 10);
    let routes = b.run_ok(&["ip", "route", "show", "table", "80"]);
    assert!(routes.contains("192.0.2.0/24 dev tunnel_base"), "{routes}");
    let (_, peer) = dump(&nb, "tunnel_base");
    assert_eq!(peer[3], "10.0.0.1/32,192.0.2.0/24");
    assert_eq!(peer[7], "7");
    b.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.1"]);

    // The server moves to another port; the client follows with `wg set endpoint`.
    let client_key = peer_key(&na);
    na.wg(&["set", "tunnel_base", "listen-port", "51830"]);
    assert!(na.config_text().contains("listen_port = 51830"));
    assert_eq!(dump(&na, "tunnel_base").0[2], "51830");
    nb.wg(&[
        "set",
        "tunnel_base",
        "peer",
        &server_key,
        "endpoint",
        "203.0.113.10:51830",
    ]);
    assert!(nb.config_text().contains("peer_port = 51830"));
    na.wait_state("tunnel_base", "up", 10);
    nb.wait_state("tunnel_base", "up", 10);
    b.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.1"]);
    assert!(
        na.log().contains("wg set applied") && na.log().contains("listen_port 51830"),
        "{}",
        na.log()
    );
    let _ = client_key;

    // A restart reads the changes back from the TOML.
    nb.stop_daemon();
    nb.start_daemon();
    nb.wait_state("tunnel_base", "up", 15);
    let (_, peer) = dump(&nb, "tunnel_base");
    assert_eq!(peer[2], "203.0.113.10:51830");
    assert_eq!(peer[3], "10.0.0.1/32,192.0.2.0/24");
    assert_eq!(peer[7], "7");
    b.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.1"]);
}

#[test]
fn wg_set_refuses_what_would_break_the_line_and_changes_nothing() {
    if !require_root_and_tools(&["ip", "wg", "unshare"]) {
        return;
    }
    let (a, _b) = seed_pair("uapino");
    let na = Node::start(&a);
    na.cli_ok(SERVER_CREATE);
    let client_key = peer_key(&na);
    let config = na.config_text();
    let other = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    let key_file = na.dir.path().join("new.key");
    std::fs::write(&key_file, "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").unwrap();
    let conf_file = na.dir.path().join("wg.conf");
    std::fs::write(
        &conf_file,
        format!("[Peer]\nPublicKey = {client_key}\nAllowedIPs = 10.0.0.2/32\n"),
    )
    .unwrap();
    for (args, why) in [
        (
            vec!["peer", other, "allowed-ips", "10.7.0.0/24"],
            "would be a second one",
        ),
        (
            vec!["peer", &client_key, "remove"],
            "removing the line's only peer",
        ),
        (
            vec!["private-key", key_file.to_str().unwrap()],
            "the peer's key pair was made for this one",
        ),
        (vec!["fwmark", "42"], "fwmark 42"),
        (
            vec!["peer", &client_key, "allowed-ips", "192.0.2.0/24"],
            "must keep 10.0.0.2/32",
        ),
        (
            vec!["peer", &client_key, "endpoint", "198.51.100.20:4000"],
            "a server line learns its peer's endpoint",
        ),
        (
            vec![
                "peer",
                &client_key,
                "allowed-ips",
                "10.0.0.2/32,2001:db8::/64",
            ],
            "not of the line's VIP family",
        ),
    ] {
        let mut full = vec!["set", "tunnel_base"];
        full.extend(args.iter().copied());
        let out = na.wg_with_stdin(&full, b"");
        assert!(!out.status.success(), "wg {full:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Unable to modify interface"),
            "{full:?}: {stderr}"
        );
        assert!(na.log().contains(why), "{why:?} not logged:\n{}", na.log());
        assert_eq!(na.config_text(), config, "{full:?} changed the config");
    }
    // `wg setconf` replaces the peers: refused too.
    let out = na.wg_with_stdin(
        &["setconf", "tunnel_base", conf_file.to_str().unwrap()],
        b"",
    );
    assert!(!out.status.success());
    assert!(na.log().contains("replace_peers"));
    assert_eq!(na.config_text(), config);
    // Every refusal names the line.
    for l in na.log().lines().filter(|l| l.contains("wg set refused")) {
        assert!(l.contains("line=tunnel_base"), "{l}");
    }
    na.wait_state("tunnel_base", "connecting", 5);
}

/// One UAPI exchange on an open connection: sends `request`, reads until the blank line
/// that ends an answer (or the connection closes).
fn exchange(stream: &mut UnixStream, request: &[u8]) -> String {
    stream.write_all(request).unwrap();
    read_answer(stream)
}

fn read_answer(stream: &mut UnixStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n\n") {
        match stream.read(&mut byte) {
            Ok(0) | Err(_) => break,
            Ok(_) => got.push(byte[0]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn closed(stream: &mut UnixStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

#[test]
fn malformed_uapi_input_is_answered_with_an_errno_and_changes_nothing() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("uapibad");
    let na = Node::start(&a);
    na.cli_ok(SERVER_CREATE);
    let config = na.config_text();
    let path = na.uapi_dir().join("tunnel_base.sock");
    let connect = || {
        let s = UnixStream::connect(&path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s
    };

    // Several operations on one connection; a refused set leaves it usable.
    let mut s = connect();
    let got = exchange(&mut s, b"get=1\n\n");
    assert!(
        got.starts_with("private_key=") && got.ends_with("errno=0\n\n"),
        "{got}"
    );
    assert!(got.contains("listen_port=51820\n"), "{got}");
    for bad in [
        "set=1\nfrobnicate=1\n\n".to_string(),
        format!("set=1\nprivate_key={}\n\n", "zz".repeat(32)),
        format!("set=1\npublic_key={}\n\n", "ab".repeat(31)),
        "set=1\nlisten_port=70000\n\n".to_string(),
        "set=1\nlisten_port=51821\npublic_key=00\n\n".to_string(),
    ] {
        assert_eq!(exchange(&mut s, bad.as_bytes()), "errno=-22\n\n", "{bad:?}");
    }
    let again = exchange(&mut s, b"get=1\n\n");
    assert_eq!(again, got, "nothing changed");

    // A huge line: refused, connection closed.
    let mut s = connect();
    let mut huge = b"set=1\nlisten_port=".to_vec();
    huge.extend(std::iter::repeat_n(b'1', 100_000));
    huge.extend(b"\n\n");
    let _ = s.write_all(&huge);
    assert_eq!(read_answer(&mut s), "errno=-22\n\n");
    assert!(closed(&mut s));

    // Not an operation: refused, connection closed.
    let mut s = connect();
    assert_eq!(exchange(&mut s, b"hello=1\n"), "errno=-22\n\n");
    assert!(closed(&mut s));

    // A set that never finishes: timed out, nothing applied.
    let mut s = connect();
    s.write_all(b"set=1\nlisten_port=51825\n").unwrap();
    assert_eq!(read_answer(&mut s), "errno=-110\n\n", "{}", na.log());
    assert!(closed(&mut s));

    assert_eq!(na.config_text(), config);
    let got = exchange(&mut connect(), b"get=1\n\n");
    assert!(got.contains("listen_port=51820\n"), "{got}");
    let line = show(&na, "tunnel_base");
    assert_eq!(line["listen_port"], 51820);
}

#[test]
fn uapi_sockets_are_removed_at_sigterm_and_a_foreign_live_socket_is_kept() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("uapiterm");
    let mut na = Node::start(&a);
    // Another program's live socket under a line's name is never replaced.
    std::fs::create_dir_all(na.uapi_dir()).unwrap();
    let foreign = na.uapi_dir().join("tunnel_secure.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&foreign).unwrap();
    na.cli_ok(SERVER_CREATE);
    na.cli_ok(SECURE_CREATE);
    assert!(na.uapi_dir().join("tunnel_base.sock").exists());
    assert!(
        na.log().contains("no UAPI socket") && na.log().contains("in use by another program"),
        "{}",
        na.log()
    );
    na.stop_daemon();
    assert!(!na.uapi_dir().join("tunnel_base.sock").exists());
    assert!(foreign.exists(), "the foreign socket is kept");
}

/// The preshared key (`preshared_key = "..."`) in the node's config.
fn stored_psk(node: &Node) -> Option<String> {
    node.config_text().lines().find_map(|l| {
        l.strip_prefix("preshared_key = ")
            .map(|k| k.trim_matches('"').to_string())
    })
}

#[test]
fn a_preshared_key_goes_from_create_through_show_peer_to_both_ends_and_wg_set_changes_it() {
    if !require_root_and_tools(&["ip", "ping", "wg", "unshare"]) {
        return;
    }
    let (a, b) = seed_pair("uapipsk");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    let mut create = SERVER_CREATE.to_vec();
    create.extend(["--preshared-key", "generate"]);
    na.cli_ok(&create);
    let psk = stored_psk(&na).expect("the server stores its preshared key");
    let peer = na.cli_ok(&["line", "show-peer", "tunnel_base"]);
    assert!(
        peer.starts_with(&format!("echo '{psk}' | twnode line create <parent> "))
            && peer.trim().ends_with(" --preshared-key -"),
        "the key goes in on stdin, not argv: {peer}"
    );
    nb.paste(&peer, "eth0");
    assert_eq!(stored_psk(&nb).as_deref(), Some(psk.as_str()));
    na.wait_state("tunnel_base", "up", 10);
    nb.wait_state("tunnel_base", "up", 10);
    b.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.1"]);
    for n in [&na, &nb] {
        assert_eq!(
            dump(n, "tunnel_base").1[1],
            psk,
            "wg show dump's preshared key"
        );
        assert!(n.wg(&["show"]).contains("preshared key: (hidden)"));
    }

    // Another key on the client alone: its new handshakes fail...
    let other = "QmqmbLM5ZOa21/Q+9sPOS0CfYJ5EAU3v9fqWCtz5Jd8=";
    let file = nb.dir.path().join("psk");
    std::fs::write(&file, format!("{other}\n")).unwrap();
    let server_key = peer_key(&nb);
    nb.wg(&[
        "set",
        "tunnel_base",
        "peer",
        &server_key,
        "preshared-key",
        file.to_str().unwrap(),
    ]);
    assert_eq!(stored_psk(&nb).as_deref(), Some(other));
    std::thread::sleep(Duration::from_secs(3));
    let out = b.exec(&["ping", "-c", "1", "-W", "1", "10.0.0.1"]);
    assert!(
        !out.status.success(),
        "a handshake with another preshared key"
    );
    // ...until the server has it too.
    let client_key = peer_key(&na);
    let file_a = na.dir.path().join("psk");
    std::fs::write(&file_a, format!("{other}\n")).unwrap();
    na.wg(&[
        "set",
        "tunnel_base",
        "peer",
        &client_key,
        "preshared-key",
        file_a.to_str().unwrap(),
    ]);
    assert_eq!(stored_psk(&na).as_deref(), Some(other));
    nb.wait_state("tunnel_base", "up", 20);
    b.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.1"]);

    // Removed on both (`preshared-key /dev/null` is the all-zero key): no key, still up.
    for (n, key) in [(&na, &client_key), (&nb, &server_key)] {
        n.wg(&[
            "set",
            "tunnel_base",
            "peer",
            key,
            "preshared-key",
            "/dev/null",
        ]);
        assert_eq!(stored_psk(n), None);
    }
    nb.wait_state("tunnel_base", "up", 20);
    b.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.1"]);
    for n in [&na, &nb] {
        assert!(
            !n.log().contains(&psk) && !n.log().contains(other),
            "a key in the log"
        );
    }
}
