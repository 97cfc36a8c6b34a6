//! The control channel and the daemon's life cycle as an operator meets them: who may
//! talk to the daemon, which daemon a command talks to, a second daemon on a running
//! node, the running daemon putting back what someone removed, reloading a hand-edited
//! config without disturbing running lines, and deleting stacked lines.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::node::{
    create_and_paste, seed_pair, twnode_bin, Node, GRE_CREATE, SECURE_CREATE, SERVER_CREATE,
};
use common::raw::{tshark_fields, Capture};
use common::{dump_state, require_root_and_tools, Netns};

/// The system python, reachable by an unprivileged user (a pyenv shim under /root is not).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

fn stderr_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a refusal:\nstdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(lines[0].starts_with("twnode: "), "{stderr}");
    lines[0].to_string()
}

/// The interface index of `ifname`, to tell a line left alone from one recreated.
fn ifindex(ns: &Netns, ifname: &str) -> String {
    let out = ns.ip(&["-o", "link", "show", ifname]);
    out.split(':').next().unwrap().trim().to_string()
}

/// Server on A, client on B, made with create / show-peer / paste; both up.
fn base_line<'a>(a: &'a Netns, b: &'a Netns) -> (Node<'a>, Node<'a>) {
    let na = Node::start(a);
    let nb = Node::start(b);
    na.cli_ok(SERVER_CREATE);
    nb.paste(&na.cli_ok(&["line", "show-peer", "tunnel_base"]), "eth0");
    na.wait_state("tunnel_base", "up", 10);
    nb.wait_state("tunnel_base", "up", 10);
    (na, nb)
}

#[test]
fn control_socket_is_0600_and_refuses_non_root_peers_even_when_opened_up() {
    if !require_root_and_tools(&["ip", "cp", "setpriv", SYSTEM_PYTHON]) {
        return;
    }
    let a = Netns::new("csock");
    let node = Node::start(&a);
    let socket = node.socket();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode");

    // The twnode command run by an unprivileged user, from a copy it may execute.
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin_dir.path().join("twnode");
    // Copied by `cp`, not std::fs::copy: a process another test forks meanwhile would
    // inherit our write fd to the copy and make exec fail with ETXTBSY.
    let copied = Command::new("cp")
        .arg(twnode_bin())
        .arg(&bin)
        .status()
        .unwrap();
    assert!(copied.success());
    let as_nobody = || {
        let out = Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(&bin)
            .arg("--control")
            .arg(&socket)
            .args(["line", "list"])
            .output()
            .unwrap();
        stderr_line(&out)
    };

    // The directory is opened up, the socket is not: the file mode keeps them out.
    std::fs::set_permissions(node.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let line = as_nobody();
    assert!(
        line.contains("permission denied")
            && line.contains(socket.to_str().unwrap())
            && line.contains("as root"),
        "{line}"
    );

    // Open the socket too: the daemon's peer-credential check still refuses.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let line = as_nobody();
    assert!(
        line.contains("permission denied") && line.contains("65534") && line.contains("as root"),
        "{line}"
    );
    let before = node.config_text();
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            SYSTEM_PYTHON,
            "-c",
            "import os,socket,sys\n\
             print('uid', os.getuid(), file=sys.stderr)\n\
             s=socket.socket(socket.AF_UNIX)\n\
             s.connect(sys.argv[1])\n\
             s.sendall(b'{\"protocol\":1,\"body\":{\"request\":\"status\"}}\\n')\n\
             s.shutdown(socket.SHUT_WR)\n\
             data=b''\n\
             while True:\n \
                 chunk=s.recv(65536)\n \
                 if not chunk: break\n \
                 data+=chunk\n\
             sys.stdout.write(data.decode())\n",
            socket.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("uid 65534"), "ran unprivileged: {stderr}");
    let answer: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?} {stderr}"));
    assert_eq!(answer["body"]["response"], "error", "{answer}");
    let message = answer["body"]["message"].as_str().unwrap();
    assert!(
        message.contains("permission denied") && message.contains("65534"),
        "{message}"
    );
    assert!(message.contains("root"), "says what to do: {message}");
    assert!(!stdout.contains("\"config\""), "no status leaked: {stdout}");
    assert!(
        node.log().contains("refused control connection"),
        "{}",
        node.log()
    );

    // Root still gets through, nothing changed.
    node.cli_ok(&["line", "list"]);
    assert_eq!(node.config_text(), before);
}

#[test]
fn cli_config_other_than_the_daemons_is_refused_naming_both_paths() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("cconf");
    let node = Node::start(&a);
    node.cli_ok(SERVER_CREATE);
    let before_config = node.config_text();
    let before_state = dump_state(&a);
    let other = tempfile::tempdir().unwrap();
    let other_config = other.path().join("other.toml");
    let socket = node.socket();
    let ours = node.config().display().to_string();
    let theirs = other_config.display().to_string();
    for args in [
        &["line", "list"][..],
        &["line", "delete", "tunnel_base"],
        &[
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
            "51821",
        ],
    ] {
        let mut full = vec![
            twnode_bin(),
            "--config",
            other_config.to_str().unwrap(),
            "--control",
            socket.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        let line = stderr_line(&a.exec(&full));
        assert!(
            line.contains(&ours) && line.contains(&theirs) && line.contains("--control"),
            "{line}"
        );
    }
    assert!(!other_config.exists(), "the other config was not created");
    assert_eq!(node.config_text(), before_config);
    assert_eq!(dump_state(&a), before_state);
    assert_eq!(node.lines().as_array().unwrap().len(), 1);
}

#[test]
fn twnode_config_and_twnode_control_variables_stand_in_for_the_flags() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("cenv");
    let before = dump_state(&a);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("env.toml");
    let socket = dir.path().join("env.sock");
    // The daemon locks its state directory; the default is the host's.
    let state = dir.path().join("state");
    let with_env = |args: &[&str]| {
        let mut command = a.command(args);
        command
            .env("TWNODE_CONFIG", &config)
            .env("TWNODE_CONTROL", &socket)
            .env("TWNODE_STATE_DIR", &state);
        command
    };

    let log = dir.path().join("daemon.log");
    let mut daemon = with_env(&[twnode_bin(), "daemon"]);
    daemon
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut daemon = a.spawn_command(daemon);
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = with_env(&[twnode_bin(), "line", "list"]).output().unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemon started with TWNODE_CONFIG/TWNODE_CONTROL never answered on {}:\n{}\n{}",
            socket.display(),
            String::from_utf8_lossy(&out.stderr),
            daemon_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut create = vec![twnode_bin()];
    create.extend_from_slice(SERVER_CREATE);
    let out = with_env(&create).output().unwrap();
    assert!(out.status.success(), "{out:?}\n{}", daemon_log());
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("name = \"tunnel_base\""), "{text}");
    let out = with_env(&[twnode_bin(), "line", "list", "--json"])
        .output()
        .unwrap();
    let lines: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(lines[0]["name"], "tunnel_base", "{lines}");

    // TWNODE_CONFIG is read by the CLI too: another file is refused, naming both.
    let other = dir.path().join("other.toml");
    let out = with_env(&[twnode_bin(), "line", "list"])
        .env("TWNODE_CONFIG", &other)
        .output()
        .unwrap();
    let line = stderr_line(&out);
    assert!(
        line.contains(&other.display().to_string()) && line.contains(&config.display().to_string()),
        "{line}"
    );
    // A flag overrides the variable.
    let out = with_env(&[
        twnode_bin(),
        "--config",
        config.to_str().unwrap(),
        "line",
        "list",
    ])
    .env("TWNODE_CONFIG", &other)
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", daemon_log());
    assert!(!socket.exists(), "socket removed on exit");
    assert_eq!(dump_state(&a), before);
}

/// Appends a copy of the config's only `[[line]]` as `tunnel_two` with VIPs 10.0.1.x and
/// port 51822, as an operator would by hand.
fn add_second_line_by_hand(node: &Node, port_key: &str) {
    let text = node.config_text();
    let start = text.find("[[line]]").expect("a [[line]] table");
    let block = &text[start..];
    assert_eq!(block.matches("[[line]]").count(), 1, "{text}");
    let from_port = format!("{port_key} = 51820");
    assert!(block.contains(&from_port), "{block}");
    let copy = block
        .replace("name = \"tunnel_base\"", "name = \"tunnel_two\"")
        .replace("\"10.0.0.1\"", "\"10.0.1.1\"")
        .replace("\"10.0.0.2\"", "\"10.0.1.2\"")
        .replace(&from_port, &format!("{port_key} = 51822"));
    std::fs::write(node.config(), format!("{text}\n{copy}")).unwrap();
}

#[test]
fn reload_starts_an_added_line_without_a_lost_packet_on_the_unchanged_one() {
    if !require_root_and_tools(&["ip", "ping"]) {
        return;
    }
    let (a, b) = seed_pair("creload");
    let (na, nb) = base_line(&a, &b);
    let index_a = ifindex(&a, "tunnel_base");
    let index_b = ifindex(&b, "tunnel_base");
    add_second_line_by_hand(&na, "listen_port");
    add_second_line_by_hand(&nb, "peer_port");

    let mut ping = a.spawn(&["ping", "-i", "0.01", "-c", "300", "-W", "1", "10.0.0.2"]);
    std::thread::sleep(Duration::from_millis(500));
    // Both ways of asking: SIGHUP on A, `twnode reload` on B.
    na.signal(libc::SIGHUP);
    let reloaded = nb.cli_ok(&["reload"]);
    assert!(
        reloaded.contains("0 line(s) stopped, 1 started"),
        "{reloaded}"
    );
    let status = ping.child.wait().unwrap();
    let report = ping.log();
    assert!(
        status.success() && report.contains(" 300 received, 0% packet loss"),
        "ping over the unchanged line during the reload:\n{report}\nA:\n{}\nB:\n{}",
        na.log(),
        nb.log()
    );

    na.wait_state("tunnel_two", "up", 10);
    nb.wait_state("tunnel_two", "up", 10);
    a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.1.2"]);
    b.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.1.1"]);
    assert_eq!(
        ifindex(&a, "tunnel_base"),
        index_a,
        "A's tunnel_base untouched"
    );
    assert_eq!(
        ifindex(&b, "tunnel_base"),
        index_b,
        "B's tunnel_base untouched"
    );
    assert!(
        na.log().contains("configuration reloaded"),
        "SIGHUP reloaded A:\n{}",
        na.log()
    );
}

#[test]
fn deleting_a_parent_line_needs_cascade_which_removes_children_first() {
    if !require_root_and_tools(&["ip", "ping"]) {
        return;
    }
    let (a, b) = seed_pair("ccascade");
    let before_a = dump_state(&a);
    let before_b = dump_state(&b);
    let (na, nb) = base_line(&a, &b);

    create_and_paste(&na, &nb, SECURE_CREATE, "tunnel_base");
    na.wait_state("tunnel_secure", "up", 10);
    nb.wait_state("tunnel_secure", "up", 10);
    a.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "172.16.0.2"]);
    let route = a.run_ok(&["ip", "route", "get", "172.16.0.2"]);
    assert!(
        route.contains("dev tunnel_secure") && route.contains("src 172.16.0.1"),
        "{route}"
    );
    let secure = &na.lines()[1];
    assert_eq!(secure["parent"], "tunnel_base", "{secure}");
    assert_eq!(secure["depth"], 1, "{secure}");

    // Without --cascade: refused, nothing changes.
    let config = na.config_text();
    let state = dump_state(&a);
    let line = stderr_line(&na.cli(&["line", "delete", "tunnel_base"]));
    assert!(
        line.contains("tunnel_base")
            && line.contains("tunnel_secure")
            && line.contains("--cascade"),
        "{line}"
    );
    assert_eq!(na.config_text(), config);
    assert_eq!(dump_state(&a), state);
    assert_eq!(na.lines().as_array().unwrap().len(), 2);
    a.run_ok(&["ping", "-c", "1", "-W", "2", "172.16.0.2"]);

    // With --cascade: the child goes first, then the parent; the hosts are as before.
    for (node, ns, before) in [(&na, &a, &before_a), (&nb, &b, &before_b)] {
        let out = node.cli_ok(&["line", "delete", "tunnel_base", "--cascade"]);
        let secure_at = out.find("line tunnel_secure deleted");
        let base_at = out.find("line tunnel_base deleted");
        assert!(
            matches!((secure_at, base_at), (Some(s), Some(b)) if s < b),
            "children first: {out}"
        );
        assert!(node.lines().as_array().unwrap().is_empty());
        let text = node.config_text();
        assert!(
            !text.contains("tunnel_base") && !text.contains("tunnel_secure"),
            "{text}"
        );
        assert_eq!(&dump_state(ns), before, "{} after --cascade", ns.name());
    }
    assert!(Path::new(&na.config()).exists());
}

/// Opens `count` connections to the control socket, sends nothing, and waits up to
/// 20 s for the daemon to answer each; prints how many it answered with an error
/// naming the timeout.
const IDLE_CLIENTS: &str = r#"
import socket, sys, time
path, count = sys.argv[1], int(sys.argv[2])
conns = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX); s.connect(path); conns.append(s)
print("open", flush=True)
closed = 0
deadline = time.monotonic() + 20
for s in conns:
    s.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        data = s.recv(4096)
        if b"no request within" in data: closed += 1
    except OSError:
        pass
print(closed)
"#;

/// Clients that connect and never send a request are answered and closed after the
/// request timeout instead of holding a task each for ever, and do not keep the
/// command line from being served meanwhile.
#[test]
fn idle_control_connections_are_closed_and_do_not_block_commands() {
    if !require_root_and_tools(&["ip", "python3"]) {
        return;
    }
    let a = Netns::new("cidle");
    let node = Node::start(&a);
    let socket = node.socket();
    let clients = a.spawn(&[
        "python3",
        "-c",
        IDLE_CLIENTS,
        socket.to_str().unwrap(),
        "300",
    ]);
    common::wait_for_log(
        || clients.log(),
        "open",
        10,
        std::time::Duration::from_millis(50),
        "the idle clients did not connect",
    );
    node.cli_ok(&["line", "list"]);
    let mut clients = clients;
    let status = clients.child.wait().unwrap();
    assert!(status.success(), "{}", clients.log());
    let closed: u32 = clients
        .log()
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(
        closed,
        300,
        "idle connections answered and closed:\n{}",
        clients.log()
    );
    node.cli_ok(&["line", "list"]);
}

/// An IPIP line on `gre1` (A's side): the GRE line's child.
const GRE_CHILD_CREATE: &[&str] = &[
    "line",
    "create",
    "gre1",
    "10.9.0.2",
    "10.10.0.2",
    "10.10.0.1",
    "grekid",
    "--type",
    "ipip",
];

/// The peer VIPs A reaches through its four lines: WireGuard `tunnel_base` and its child
/// `tunnel_secure`, GRE `gre1` and its child `grekid`.
const FOUR_PEERS: [&str; 4] = ["10.0.0.2", "172.16.0.2", "10.9.0.2", "10.10.0.2"];

/// A WireGuard line and a GRE line between A and B, each with a child line; all up.
fn four_lines<'a>(a: &'a Netns, b: &'a Netns) -> (Node<'a>, Node<'a>) {
    let (na, nb) = base_line(a, b);
    create_and_paste(&na, &nb, SECURE_CREATE, "tunnel_base");
    create_and_paste(&na, &nb, GRE_CREATE, "eth0");
    create_and_paste(&na, &nb, GRE_CHILD_CREATE, "gre1");
    for line in ["tunnel_base", "tunnel_secure", "gre1", "grekid"] {
        na.wait_state(line, "up", 10);
        nb.wait_state(line, "up", 10);
    }
    for peer in FOUR_PEERS {
        a.run_ok(&["ping", "-c", "1", "-W", "2", peer]);
    }
    (na, nb)
}

/// Runs `twnode daemon` with these paths in `ns` and waits (10 s at most) for it to
/// exit; returns its exit status (`None` if it kept running, then it is killed) and
/// its stderr.
fn second_daemon(ns: &Netns, config: &Path, control: &Path, state: &Path) -> (Option<i32>, String) {
    let process = ns.spawn(&[
        twnode_bin(),
        "--config",
        config.to_str().unwrap(),
        "--control",
        control.to_str().unwrap(),
        "daemon",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let mut process = process;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = process.child.try_wait() {
            return (status.code(), process.log());
        }
        if Instant::now() > deadline {
            let _ = process.child.kill();
            let _ = process.child.wait();
            return (None, process.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 22, item 1: a second `twnode daemon` on a running node, started with the
/// running one's paths or with others (as the first refusal used to advise), refuses
/// before touching anything: the rules at pref 10 and 80, table 80 and the encrypted
/// path survive, and no ping toward the peer's VIPs leaves in clear meanwhile.
#[test]
fn a_second_daemon_refuses_naming_the_running_one_and_changes_nothing() {
    if !require_root_and_tools(&["ip", "ping", "tshark"]) {
        return;
    }
    let (a, b) = seed_pair("csecond");
    let (na, _nb) = four_lines(&a, &b);
    let before = dump_state(&a);
    let config_before = na.config_text();
    assert!(
        before.contains("10: from all to 198.51.100.20 lookup main proto"),
        "{before}"
    );
    assert!(before.contains("80: from all lookup 80 proto"), "{before}");

    let dir = tempfile::tempdir().unwrap();
    let wire = Capture::start(&b, "eth0", 6, dir.path());
    let pings: Vec<_> = FOUR_PEERS
        .iter()
        .map(|peer| a.spawn(&["ping", "-i", "0.1", "-c", "40", "-W", "1", peer]))
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let pid = na.daemon_pid();
    let other = tempfile::tempdir().unwrap();
    let other_config = other.path().join("other.toml");
    for (what, config, control, state) in [
        (
            "the running daemon's paths",
            na.config(),
            na.socket(),
            na.state_dir(),
        ),
        (
            "other --config, --control and --state-dir paths",
            other_config.clone(),
            other.path().join("other.sock"),
            other.path().join("state"),
        ),
    ] {
        let (code, log) = second_daemon(&a, &config, &control, &state);
        assert_eq!(dump_state(&a), before, "{what}: the host changed:\n{log}");
        assert_eq!(
            code,
            Some(1),
            "a second daemon with {what} must refuse:\n{log}"
        );
        let refusal = log.lines().last().unwrap_or_default();
        assert!(
            refusal.starts_with("twnode: another twnode daemon")
                && refusal.contains(&format!("(pid {pid})"))
                && refusal.contains("changed nothing"),
            "{what}: {log}"
        );
        assert!(
            !log.contains("stale") && !log.contains("deleted"),
            "{what}: it touched the host:\n{log}"
        );
    }
    assert!(!other_config.exists() && !other.path().join("other.sock").exists());

    for mut ping in pings {
        let status = ping.child.wait().unwrap();
        assert!(
            status.success() && ping.log().contains(" 0% packet loss"),
            "{}\n{}",
            ping.log(),
            na.log()
        );
    }
    let file = wire.finish();
    // Pings through the GRE lines show as ICMP inside GRE (and IPIP in GRE); through
    // WireGuard they are not ICMP at all. An ICMP packet right on the wire would be a
    // leak.
    let icmp = tshark_fields(&file, "icmp", &["frame.protocols"]);
    let clear: Vec<&String> = icmp
        .iter()
        .filter(|p| p.starts_with("eth:ethertype:ip:icmp"))
        .collect();
    assert!(clear.is_empty(), "ICMP in clear on B's wire: {clear:?}");
    assert!(
        icmp.iter().any(|p| p.contains(":gre:")),
        "the capture saw the GRE pings: {icmp:?}"
    );
    assert_eq!(dump_state(&a), before);
    assert_eq!(na.config_text(), config_before);
    assert!(!na.log().contains("stale"), "{}", na.log());
}

/// Issue 22, item 1: what the daemon installed and someone removes by hand (`ip rule
/// del`, `ip route del ... table 80`, `ip addr del`) is put back within a pass or two
/// (a pass every 2 s), and the daemon's log says what it put back.
#[test]
fn rules_routes_and_vips_removed_by_hand_are_put_back_and_logged() {
    if !require_root_and_tools(&["ip", "ping"]) {
        return;
    }
    let (a, b) = seed_pair("crepair");
    let (na, _nb) = four_lines(&a, &b);
    // Rules of one preference are listed in the order they were added; a rule put
    // back comes after its siblings (their destinations are disjoint, so the order
    // means nothing).
    let state = || {
        let mut lines: Vec<String> = dump_state(&a).lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let before = state();

    a.ip(&["rule", "del", "pref", "80"]);
    a.ip(&["rule", "del", "pref", "10", "to", "198.51.100.20"]);
    a.ip(&["route", "del", "10.9.0.2", "table", "80"]);
    a.ip(&["route", "del", "172.16.0.2", "table", "80"]);
    a.ip(&["addr", "del", "10.10.0.1/32", "dev", "grekid"]);
    assert_ne!(state(), before);

    let deadline = Instant::now() + Duration::from_secs(5);
    while state() != before {
        assert!(
            Instant::now() < deadline,
            "not put back within two passes:\n{:#?}\nbefore:\n{before:#?}\ndaemon log:\n{}",
            state(),
            na.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = na.log();
    for said in [
        "IPv4 rule pref 80 from all lookup 80",
        "IPv4 rule pref 10 to 198.51.100.20/32 lookup 254",
        "route 10.9.0.2/32 table 80",
        "route 172.16.0.2/32 table 80",
        "address=10.10.0.1",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("put back") && l.contains(said)),
            "the log does not say {said:?} was put back:\n{log}"
        );
    }
    for peer in FOUR_PEERS {
        a.run_ok(&["ping", "-c", "1", "-W", "2", peer]);
    }
}

/// Issue 22, item 4: a reload whose line cannot come up (a parent typed `eht0` in the
/// file) says so: `twnode reload` names the line and why and exits 1, and SIGHUP logs
/// it; the new configuration is in force all the same.
#[test]
fn a_reload_whose_line_cannot_come_up_names_it_and_exits_non_zero() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("creloadbad");
    let node = Node::start(&a);
    node.cli_ok(GRE_CREATE);
    node.wait_state("gre1", "up", 10);
    let good = node.config_text();
    assert!(good.contains("parent = \"eth0\""), "{good}");
    std::fs::write(
        node.config(),
        good.replace("parent = \"eth0\"", "parent = \"eht0\""),
    )
    .unwrap();

    let out = node.cli(&["reload"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), "reloaded: 1 line(s) stopped, 0 started");
    let line = stderr_line(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        line.contains("1 line(s) did not come up")
            && line.contains("gre1: parent interface eht0 does not exist"),
        "{line}"
    );
    let shown = node.lines();
    assert_eq!(
        shown[0]["parent"], "eht0",
        "the new config is in force: {shown}"
    );
    assert_eq!(shown[0]["state"], "down", "{shown}");

    // SIGHUP says it in the log.
    std::fs::write(node.config(), &good).unwrap();
    node.cli_ok(&["reload"]);
    std::fs::write(
        node.config(),
        good.replace("parent = \"eth0\"", "parent = \"eht0\""),
    )
    .unwrap();
    node.signal(libc::SIGHUP);
    common::wait_for_log(
        || node.log(),
        "reloaded, but the line did not come up; retrying line=gre1",
        10,
        Duration::from_millis(100),
        "SIGHUP's reload did not log the line that stayed down",
    );
}
