//! Bad input gets a clear error and changes nothing (issue 2): every refusal exits
//! non-zero with one `twnode: ` line on stderr that names the problem and what to do,
//! and leaves the config file byte for byte, the daemon's lines and the host's links,
//! addresses, routes and rules as they were.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::node::{seed_pair, twnode_bin, Node, SERVER_CREATE};
use common::{dump_state, require_root_and_tools, wait_for_log, Netns};

/// A 31-byte key: valid base64, one byte short.
const SHORT_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";

/// Asserts that `out` is a refusal: non-zero exit and stderr exactly one line starting
/// with `twnode: ` that contains every needle. Returns that line.
fn assert_refused(out: &Output, needles: &[&str]) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a refusal, got success\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr must be one line:\n{stderr}");
    assert!(lines[0].starts_with("twnode: "), "{stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    lines[0].to_string()
}

/// What a refused command must leave alone.
#[derive(Debug, PartialEq)]
struct Snapshot {
    config: Option<Vec<u8>>,
    config_mode: Option<u32>,
    /// `line list --json` without the counters, which move on their own.
    lines: Vec<serde_json::Value>,
    host: String,
}

fn snapshot(node: &Node) -> Snapshot {
    let lines = node
        .lines()
        .as_array()
        .expect("line list --json is an array")
        .iter()
        .map(|l| {
            serde_json::json!({
                "name": l["name"],
                "parent": l["parent"],
                "type": l["type"],
                "mode": l["mode"],
                "peer_ip": l["peer_ip"],
                "peer_vip": l["peer_vip"],
                "local_vip": l["local_vip"],
                "listen_port": l["listen_port"],
                "public_key": l["public_key"],
                "peer_public_key": l["peer_public_key"],
            })
        })
        .collect();
    Snapshot {
        config: std::fs::read(node.config()).ok(),
        config_mode: std::fs::metadata(node.config())
            .ok()
            .map(|m| m.permissions().mode() & 0o7777),
        lines,
        host: dump_state(node.ns),
    }
}

/// A running daemon on host A of the seed pair with one server line, `tunnel_base`.
fn server_with_line(a: &Netns) -> Node<'_> {
    let node = Node::start(a);
    node.cli_ok(SERVER_CREATE);
    node
}

/// Runs `twnode daemon` in the foreground for the node's files; it must exit by itself
/// (a refused start), so it runs under `timeout`.
fn start_daemon_expecting_failure(node: &Node) -> Output {
    let config = node.config();
    let socket = node.socket();
    let state = node.state_dir();
    node.ns.exec(&[
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
    ])
}

/// 1-based line and column of the first occurrence of `needle` in `text`, plus
/// `column_offset` characters.
fn position_of(text: &str, needle: &str, column_offset: usize) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} in {text}"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, at - line_start + 1 + column_offset)
}

/// Writes a config made by a real `line create` for `node` (daemon stopped afterwards),
/// and returns its text.
fn write_valid_config(node: &mut Node) -> String {
    node.start_daemon();
    node.cli_ok(SERVER_CREATE);
    node.stop_daemon();
    node.config_text()
}

fn edit_config(node: &Node, from: &str, to: &str) -> String {
    let text = node.config_text();
    assert!(text.contains(from), "{from:?} in\n{text}");
    let edited = text.replacen(from, to, 1);
    std::fs::write(node.config(), &edited).unwrap();
    edited
}

#[test]
fn daemon_refuses_malformed_toml_naming_file_line_column_and_key() {
    if !require_root_and_tools(&["ip", "timeout"]) {
        return;
    }
    let (a, _b) = seed_pair("btoml");
    let mut node = Node::new(&a);
    write_valid_config(&mut node);
    let before_host = dump_state(&a);
    // A typo: a second value where one port belongs.
    let edited = edit_config(&node, "listen_port = 51820", "listen_port = 51820 51821");
    let (line, column) = position_of(&edited, "listen_port = 51820 51821", 20);

    let out = start_daemon_expecting_failure(&node);
    let location = format!("{}:{line}:{column}:", node.config().display());
    assert_refused(&out, &[&location, "line[0].wireguard.listen_port"]);
    assert_eq!(node.config_text(), edited, "the config file is untouched");
    assert!(!node.socket().exists(), "no control socket left behind");
    assert_eq!(dump_state(&a), before_host, "nothing installed on the host");
}

#[test]
fn daemon_refuses_unknown_config_key_naming_it() {
    if !require_root_and_tools(&["ip", "timeout"]) {
        return;
    }
    let (a, _b) = seed_pair("bunk");
    let mut node = Node::new(&a);
    write_valid_config(&mut node);
    let before_host = dump_state(&a);
    let edited = edit_config(
        &node,
        "type = \"wireguard\"\n",
        "type = \"wireguard\"\ncolour = \"red\"\n",
    );
    let (line, column) = position_of(&edited, "colour", 0);

    let out = start_daemon_expecting_failure(&node);
    let location = format!("{}:{line}:{column}:", node.config().display());
    assert_refused(
        &out,
        &[&location, "line[0].colour", "unknown field `colour`"],
    );
    assert_eq!(node.config_text(), edited);
    assert_eq!(dump_state(&a), before_host);
}

#[test]
fn daemon_refuses_a_config_whose_lines_clash_naming_the_file_and_key() {
    if !require_root_and_tools(&["ip", "timeout"]) {
        return;
    }
    let (a, _b) = seed_pair("bclash");
    let mut node = Node::new(&a);
    let text = write_valid_config(&mut node);
    let before_host = dump_state(&a);
    // The same [[line]] twice, as a careless copy and paste leaves it.
    let block = &text[text.find("[[line]]").unwrap()..];
    let edited = format!("{text}\n{block}");
    std::fs::write(node.config(), &edited).unwrap();

    let out = start_daemon_expecting_failure(&node);
    let file = node.config().display().to_string();
    assert_refused(
        &out,
        &[&file, "line[1] (\"tunnel_base\").name", "already exists"],
    );
    assert_eq!(node.config_text(), edited);
    assert_eq!(dump_state(&a), before_host);
}

#[test]
fn daemon_refuses_world_readable_config_with_private_keys_saying_chmod_600() {
    if !require_root_and_tools(&["ip", "timeout"]) {
        return;
    }
    let (a, _b) = seed_pair("bperm");
    let mut node = Node::new(&a);
    let text = write_valid_config(&mut node);
    let before_host = dump_state(&a);
    std::fs::set_permissions(node.config(), std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = start_daemon_expecting_failure(&node);
    let chmod = format!("chmod 600 {}", node.config().display());
    assert_refused(&out, &[&chmod, "0644", "private keys"]);
    assert_eq!(node.config_text(), text);
    let mode = std::fs::metadata(node.config())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644, "the daemon does not change the mode itself");
    assert_eq!(dump_state(&a), before_host);
}

#[test]
fn malformed_config_on_reload_or_sighup_keeps_the_running_lines_up() {
    if !require_root_and_tools(&["ip", "ping"]) {
        return;
    }
    let (a, b) = seed_pair("breload");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    na.cli_ok(SERVER_CREATE);
    nb.paste(&na.cli_ok(&["line", "show-peer", "tunnel_base"]), "eth0");
    na.wait_state("tunnel_base", "up", 10);
    let before = snapshot(&na);

    // `twnode reload` with a syntax error: refused, naming the spot.
    let edited = edit_config(&na, "listen_port = 51820", "listen_port = 51820 51821");
    let (line, column) = position_of(&edited, "listen_port = 51820 51821", 20);
    let location = format!("{}:{line}:{column}:", na.config().display());
    let out = na.cli(&["reload"]);
    assert_refused(
        &out,
        &["reload refused", &location, "line[0].wireguard.listen_port"],
    );
    assert_eq!(
        na.config_text(),
        edited,
        "the daemon did not rewrite the file"
    );
    na.wait_state("tunnel_base", "up", 1);
    a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.2"]);

    // SIGHUP with an unknown key: refused in the log, the line stays up.
    let original = String::from_utf8(before.config.clone().unwrap()).unwrap();
    std::fs::write(na.config(), &original).unwrap();
    let edited = edit_config(
        &na,
        "type = \"wireguard\"\n",
        "type = \"wireguard\"\ncolour = \"red\"\n",
    );
    let (line, column) = position_of(&edited, "colour", 0);
    na.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    let wanted = format!("{}:{line}:{column}: line[0].colour", na.config().display());
    while !(na.log().contains("reload refused") && na.log().contains(&wanted)) {
        assert!(
            Instant::now() < deadline,
            "no refused reload naming {wanted} in the log:\n{}",
            na.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(na.config_text(), edited);
    na.wait_state("tunnel_base", "up", 1);
    a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.2"]);

    std::fs::write(na.config(), &original).unwrap();
    assert_eq!(snapshot(&na), before, "lines and host as before");
}

/// `--af-xdp` where it cannot apply: under a parent line (whose packets go into that
/// line's TUN device, not an Ethernet device) and on a WireGuard line (UDP sockets).
#[test]
fn af_xdp_where_it_cannot_apply_is_refused() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("bxdp");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    let out = node.cli(&[
        "line",
        "create",
        "tunnel_base",
        "10.0.0.2",
        "172.16.0.2",
        "172.16.0.1",
        "inner",
        "--type",
        "ipip",
        "--af-xdp",
    ]);
    assert_refused(
        &out,
        &[
            "ip_tunnel.af_xdp",
            "AF_XDP sends on an Ethernet device, but the parent tunnel_base is a line",
            "--af-xdp",
        ],
    );
    assert_eq!(snapshot(&node), before, "after --af-xdp under a line");
    let out = node.cli(&[
        "line",
        "create",
        "eth0",
        "198.51.100.20",
        "10.0.1.2",
        "10.0.1.1",
        "wg1",
        "--type",
        "wireguard",
        "--mode",
        "server",
        "--listen-port",
        "51821",
        "--af-xdp",
    ]);
    assert_refused(
        &out,
        &["--af-xdp apply to the IP tunnel types", "not to wireguard"],
    );
    assert_eq!(snapshot(&node), before, "after --af-xdp on wireguard");
}

#[test]
fn line_create_on_a_missing_parent_interface_is_refused() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("bparent");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    let out = node.cli(&[
        "line",
        "create",
        "eth9",
        "198.51.100.20",
        "10.0.1.2",
        "10.0.1.1",
        "tunnel_two",
        "--type",
        "wireguard",
        "--mode",
        "server",
        "--listen-port",
        "51821",
    ]);
    assert_refused(&out, &["eth9", "does not exist", "ip link"]);
    assert_eq!(snapshot(&node), before);
}

#[test]
fn duplicate_line_name_is_refused() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("bdup");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    // Everything else differs: only the name clashes.
    let out = node.cli(&[
        "line",
        "create",
        "eth0",
        "198.51.100.20",
        "10.0.1.2",
        "10.0.1.1",
        "tunnel_base",
        "--type",
        "wireguard",
        "--mode",
        "server",
        "--listen-port",
        "51821",
    ]);
    assert_refused(&out, &["tunnel_base", "already exists", "another name"]);
    assert_eq!(snapshot(&node), before);
}

#[test]
fn vip_in_use_on_the_host_or_by_another_line_is_refused() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("bvip");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    let create = |peer_vip: &str, local_vip: &str| {
        node.cli(&[
            "line",
            "create",
            "eth0",
            "198.51.100.20",
            peer_vip,
            local_vip,
            "tunnel_two",
            "--type",
            "wireguard",
            "--mode",
            "server",
            "--listen-port",
            "51821",
        ])
    };
    // The host's own underlay address.
    assert_refused(
        &create("10.0.1.2", "203.0.113.10"),
        &["203.0.113.10", "already", "choose another VIP"],
    );
    assert_eq!(snapshot(&node), before);
    // tunnel_base's local VIP, then its peer VIP.
    assert_refused(
        &create("10.0.1.2", "10.0.0.1"),
        &["10.0.0.1", "tunnel_base", "unique"],
    );
    assert_eq!(snapshot(&node), before);
    assert_refused(
        &create("10.0.0.2", "10.0.1.1"),
        &["10.0.0.2", "tunnel_base", "unique"],
    );
    assert_eq!(snapshot(&node), before);
}

#[test]
fn listen_port_in_use_by_a_line_or_another_process_is_refused() {
    if !require_root_and_tools(&["ip", "python3"]) {
        return;
    }
    let (a, _b) = seed_pair("bport");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    let create = |port: &str| {
        node.cli(&[
            "line",
            "create",
            "eth0",
            "198.51.100.20",
            "10.0.1.2",
            "10.0.1.1",
            "tunnel_two",
            "--type",
            "wireguard",
            "--mode",
            "server",
            "--listen-port",
            port,
        ])
    };
    assert_refused(&create("51820"), &["51820", "eth0", "tunnel_base"]);
    assert_eq!(snapshot(&node), before);

    let holder = a.spawn(&[
        "python3",
        "-c",
        "import socket,sys,time\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('203.0.113.10',51830))\n\
         print('bound',flush=True)\n\
         time.sleep(60)\n",
    ]);
    wait_for_log(
        || holder.log(),
        "bound",
        10,
        Duration::from_millis(20),
        "python never bound",
    );
    assert_refused(
        &create("51830"),
        &["203.0.113.10:51830", "in use", "choose another"],
    );
    assert_eq!(
        snapshot(&node),
        before,
        "no TUN device or route left behind"
    );
}

#[test]
fn malformed_keys_are_refused_naming_the_flag() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("bkey");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    let good = node.cli_ok(&["genkey"]);
    let good = good.trim();
    let public = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    let create = |private: &str, peer_public: &str| {
        node.cli(&[
            "line",
            "create",
            "eth0",
            "198.51.100.20",
            "10.0.1.2",
            "10.0.1.1",
            "tunnel_two",
            "--type",
            "wireguard",
            "--mode",
            "client",
            "--private-key",
            private,
            "--peer-pubkey",
            peer_public,
            "--peer-port",
            "51820",
        ])
    };
    assert_refused(
        &create("not-base64", public),
        &["--private-key", "base64", "wg genkey"],
    );
    assert_refused(
        &create(SHORT_KEY, public),
        &["--private-key", "31 bytes", "32"],
    );
    assert_refused(
        &create(good, SHORT_KEY),
        &["--peer-pubkey", "31 bytes", "32"],
    );
    assert_refused(&create(good, "%%%"), &["--peer-pubkey", "base64"]);
    assert_eq!(snapshot(&node), before);
}

#[test]
fn peer_ip_that_is_not_an_address_is_refused() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("bpeerip");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    let out = node.cli(&[
        "line",
        "create",
        "eth0",
        "198.51.100",
        "10.0.1.2",
        "10.0.1.1",
        "tunnel_two",
        "--type",
        "wireguard",
        "--mode",
        "server",
        "--listen-port",
        "51821",
    ]);
    assert_refused(&out, &["<peer_ip>", "\"198.51.100\"", "not an IP address"]);
    assert_eq!(snapshot(&node), before);
}

#[test]
fn client_without_peer_port_is_refused() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("bpport");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    let key = node.cli_ok(&["genkey"]);
    let out = node.cli(&[
        "line",
        "create",
        "eth0",
        "198.51.100.20",
        "10.0.1.2",
        "10.0.1.1",
        "tunnel_two",
        "--type",
        "wireguard",
        "--mode",
        "client",
        "--private-key",
        key.trim(),
        "--peer-pubkey",
        "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
    ]);
    assert_refused(&out, &["--peer-port", "required", "listen port"]);
    assert_eq!(snapshot(&node), before);
}

/// Sends raw bytes on the control socket, as a twnode of another version (or anything
/// else) would, and returns the daemon's one-line answer parsed.
fn raw_request(socket: &Path, bytes: &[u8]) -> serde_json::Value {
    let mut stream = UnixStream::connect(socket).expect("connect to the control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(answer.matches('\n').count(), 1, "one line: {answer:?}");
    serde_json::from_str(answer.trim_end()).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

fn error_message(answer: &serde_json::Value) -> String {
    assert_eq!(answer["body"]["response"], "error", "{answer}");
    let message = answer["body"]["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    message
}

#[test]
fn control_requests_of_another_version_or_malformed_get_an_error_and_the_daemon_keeps_serving() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("bproto");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    let socket = node.socket();
    // A connection that never sends anything must not hold the others up.
    let _silent = UnixStream::connect(&socket).unwrap();

    for (theirs, request) in [
        ("2", &br#"{"protocol":2,"body":{"request":"status"}}"#[..]),
        ("0", br#"{"protocol":0,"body":{"request":"list_lines"}}"#),
        (
            "2",
            br#"{"protocol":2,"body":{"request":"delete_line","name":"tunnel_base","cascade":true,"force":true}}"#,
        ),
    ] {
        let mut bytes = request.to_vec();
        bytes.push(b'\n');
        let message = error_message(&raw_request(&socket, &bytes));
        for needle in ["protocol mismatch", "version 1", "matches the running daemon"] {
            assert!(message.contains(needle), "{needle:?} in {message}");
        }
        assert!(
            message.contains(&format!("other side {theirs}")),
            "{message}"
        );
    }

    let message = error_message(&raw_request(
        &socket,
        b"{\"protocol\":1,\"body\":{\"request\":\"nope\"}}\n",
    ));
    assert!(
        message.contains("malformed") && message.contains("nope"),
        "{message}"
    );
    for garbage in [
        &b"\x00\xff\xfe garbage \x01\n"[..],
        b"hello\n",
        b"",
        b"{\"protocol\":1}\n",
    ] {
        let message = error_message(&raw_request(&socket, garbage));
        assert!(message.contains("malformed"), "{garbage:?}: {message}");
    }
    let message = error_message(&raw_request(&socket, &vec![b'x'; 70_000]));
    assert!(message.contains("larger than"), "{message}");

    assert_eq!(
        snapshot(&node),
        before,
        "the daemon still serves, unchanged"
    );
}

#[test]
fn commands_without_a_daemon_say_it_is_not_running_and_how_to_start_it() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let a = Netns::new("bnodaemon");
    let node = Node::new(&a);
    let socket = node.socket().display().to_string();
    let create: Vec<&str> = SERVER_CREATE.to_vec();
    for args in [
        &["line", "list"][..],
        &create,
        &["line", "delete", "tunnel_base"],
        &["line", "show-peer", "tunnel_base"],
        &["reload"],
    ] {
        let out = node.cli(args);
        assert_refused(&out, &["not running", &socket, "twnode daemon"]);
    }
    assert!(!node.config().exists(), "no config file written");

    // A daemon that crashed leaves its socket file behind: still "not running".
    let mut node = Node::start(&a);
    node.kill_daemon();
    assert!(node.socket().exists(), "a crash leaves the socket file");
    let socket = node.socket().display().to_string();
    let out = node.cli(&["line", "list"]);
    assert_refused(&out, &["not running", &socket, "twnode daemon"]);
}

#[test]
fn pubkey_refuses_garbage_and_matches_wg_pubkey() {
    if !require_root_and_tools(&["wg"]) {
        return;
    }
    let pubkey = |input: &str| {
        let mut child = Command::new(twnode_bin())
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert_refused(&pubkey("garbage\n"), &["private key", "stdin", "base64"]);
    assert_refused(&pubkey(&format!("{SHORT_KEY}\n")), &["31 bytes", "32"]);
    assert_refused(&pubkey(""), &["private key", "stdin"]);

    for _ in 0..3 {
        let genkey = Command::new(twnode_bin()).arg("genkey").output().unwrap();
        assert!(genkey.status.success());
        let private = String::from_utf8(genkey.stdout).unwrap();
        assert_eq!(private.trim().len(), 44, "{private}");
        let ours = pubkey(&private);
        assert!(ours.status.success(), "{ours:?}");
        let mut wg = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        wg.stdin
            .take()
            .unwrap()
            .write_all(private.as_bytes())
            .unwrap();
        let theirs = wg.wait_with_output().unwrap();
        assert!(theirs.status.success(), "wg pubkey accepts twnode genkey");
        assert_eq!(
            String::from_utf8(ours.stdout).unwrap(),
            String::from_utf8(theirs.stdout).unwrap()
        );
    }
}

#[test]
fn line_delete_of_an_unknown_line_is_refused() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("bdel");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    let out = node.cli(&["line", "delete", "tunnel_nope"]);
    assert_refused(&out, &["tunnel_nope", "line list"]);
    let out = node.cli(&["line", "delete", "tunnel_nope", "--cascade"]);
    assert_refused(&out, &["tunnel_nope", "line list"]);
    assert_eq!(snapshot(&node), before);
}

#[test]
fn create_and_delete_refuse_to_overwrite_hand_edits_not_yet_reloaded() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("hand");
    let node = server_with_line(&a);
    let edited = edit_config(&node, "listen_port = 51820", "listen_port = 51899");
    let second = [
        "line",
        "create",
        "eth0",
        "198.51.100.21",
        "10.0.1.2",
        "10.0.1.1",
        "second",
        "--type",
        "wireguard",
        "--mode",
        "server",
        "--listen-port",
        "51821",
    ];
    assert_refused(&node.cli(&second), &["twnode reload"]);
    assert_refused(
        &node.cli(&["line", "delete", "tunnel_base"]),
        &["twnode reload"],
    );
    assert_eq!(node.config_text(), edited, "the hand edit survives");
    node.cli_ok(&["reload"]);
    node.cli_ok(&second);
    let text = node.config_text();
    assert!(text.contains("51899") && text.contains("second"), "{text}");
}

/// Issue 22, item 6: the list of supported types that a mistyped `--type` prints names
/// every type `--type` accepts, ipsec included.
#[test]
fn mistyped_type_lists_every_supported_type_ipsec_included() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("btype");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    let out = node.cli(&[
        "line",
        "create",
        "eth0",
        "198.51.100.20",
        "10.0.1.2",
        "10.0.1.1",
        "tunnel_two",
        "--type",
        "wirguard",
    ]);
    assert_refused(
        &out,
        &["--type", "\"wirguard\"", "wireguard", "gre6", "ipsec"],
    );
    assert_eq!(snapshot(&node), before);
}

/// Issue 22, item 7: a `line create` refused because of another line names that line
/// by its name and the setting by its argument, never by the config file's
/// `line[N] ("name").key` paths.
#[test]
fn create_errors_name_other_lines_by_name_not_by_config_paths() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("bnames");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    let create = |peer_vip: &str, local_vip: &str, port: &str| {
        node.cli(&[
            "line",
            "create",
            "eth0",
            "198.51.100.20",
            peer_vip,
            local_vip,
            "tunnel_two",
            "--type",
            "wireguard",
            "--mode",
            "server",
            "--listen-port",
            port,
        ])
    };
    for (out, needles) in [
        (
            create("10.0.1.2", "10.0.0.2", "51821"),
            &["<local_vip>: 10.0.0.2 is already the peer VIP of line tunnel_base"][..],
        ),
        (
            create("10.0.0.1", "10.0.1.1", "51821"),
            &["<peer_vip>: 10.0.0.1 is already the local VIP of line tunnel_base"],
        ),
        (
            create("10.0.1.2", "10.0.1.1", "51820"),
            &["--listen-port: ", "51820", "line tunnel_base"],
        ),
    ] {
        let line = assert_refused(&out, needles);
        assert!(!line.contains("line["), "config-file path in {line}");
        assert_eq!(snapshot(&node), before);
    }
}

/// Issue 22, item 7: a VIP the host already has is refused naming the interface that
/// holds it, not its index.
#[test]
fn vip_already_on_the_host_names_the_interface() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("bifname");
    let node = server_with_line(&a);
    let before = snapshot(&node);
    let out = node.cli(&[
        "line",
        "create",
        "eth0",
        "198.51.100.20",
        "10.0.1.2",
        "203.0.113.10",
        "tunnel_two",
        "--type",
        "wireguard",
        "--mode",
        "server",
        "--listen-port",
        "51821",
    ]);
    let line = assert_refused(
        &out,
        &["local VIP 203.0.113.10", "on eth0", "choose another VIP"],
    );
    assert!(!line.contains("index"), "{line}");
    assert_eq!(snapshot(&node), before);
}
