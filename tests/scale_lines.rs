//! Many WireGuard lines in one daemon: 1000 server lines from one config file come up
//! (a TUN device each, with its VIP and its peer's route), the daemon keeps answering
//! its control socket, and SIGTERM removes every device. Also, with offloads turned off
//! (`TWNODE_OFFLOAD=0`), a WireGuard line and a GRE line still carry ping and
//! checksummed TCP transfers both ways.
//!
//! Only correctness is asserted; the time-to-up and RSS figures are printed (run with
//! `--nocapture`) and measured properly by `benches/lines.sh`. `TWNODE_SCALE_LINES=N`
//! changes the number of lines.

mod common;

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::node::{
    create_and_paste, seed_pair, tcp_transfer, twnode_bin, Node, GRE_CREATE, SERVER_CREATE,
};
use common::{require_root_and_tools, Netns, Spawned};
use twnode::config::PrivateKey;

/// The VIPs of line `i`: 10.(64 + i / 250).(i % 250).1 here, .2 at the peer.
fn vips(i: usize) -> (String, String) {
    let (a, b) = (64 + i / 250, i % 250);
    (format!("10.{a}.{b}.1"), format!("10.{a}.{b}.2"))
}

fn config(lines: usize) -> String {
    let mut text = String::new();
    for i in 0..lines {
        let key = PrivateKey::generate();
        let peer = PrivateKey::generate().public_key();
        let (local, remote) = vips(i);
        write!(
            text,
            "[[line]]\nname = \"s{i}\"\nparent = \"eth0\"\npeer_ip = \"198.51.100.20\"\n\
             peer_vip = \"{remote}\"\nlocal_vip = \"{local}\"\ntype = \"wireguard\"\n\
             [line.wireguard]\nmode = \"server\"\nlisten_port = {}\nprivate_key = \"{}\"\n\
             peer_public_key = \"{}\"\n\n",
            20000 + i,
            key.to_base64(),
            peer,
        )
        .expect("write to a String");
    }
    text
}

/// Starts `twnode daemon` on `node`'s files with extra environment variables; its output
/// goes to `daemon.log` in the node's directory.
fn spawn_daemon(ns: &Netns, node: &Node<'_>, env: &[(&str, &str)]) -> Spawned {
    let log = std::fs::File::create(node.dir.path().join("daemon.log")).expect("log file");
    let log2 = log.try_clone().expect("dup log fd");
    let config = node.config();
    let socket = node.socket();
    // Each daemon its own state directory: the default, /var/lib/twnode, is the host's,
    // and a daemon locks its directory (a second one on it refuses to start).
    let state = node.state_dir();
    let mut command = ns.command(&[
        twnode_bin(),
        "daemon",
        "--config",
        config.to_str().expect("utf-8 path"),
        "--control",
        socket.to_str().expect("utf-8 path"),
        "--state-dir",
        state.to_str().expect("utf-8 path"),
    ]);
    command
        .env("TWNODE_UAPI_DIR", node.uapi_dir())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    ns.spawn_command(command)
}

fn count_matching(text: &str, pred: impl Fn(&str) -> bool) -> usize {
    text.lines().filter(|l| pred(l)).count()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

fn stop(daemon: &mut Spawned) {
    // SAFETY: plain kill(2) on a pid we started and have not waited for.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            assert!(status.success(), "daemon exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("daemon did not exit within 60 s of SIGTERM");
}

#[test]
fn thousand_wireguard_lines_come_up_in_one_responsive_daemon_and_go_away() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let lines: usize = std::env::var("TWNODE_SCALE_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let (a, _b) = seed_pair("scale");
    let node = Node::new(&a);
    std::fs::write(node.config(), config(lines)).expect("write config");
    std::fs::set_permissions(
        node.config(),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod 600");

    let started = Instant::now();
    let mut daemon = spawn_daemon(&a, &node, &[]);
    let deadline = started + Duration::from_secs(180);
    let (mut addrs, mut routes) = (0, 0);
    loop {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("daemon exited with {status}");
        }
        let link_out = a.ip(&["-o", "link", "show"]);
        let links = count_matching(&link_out, |l| {
            l.split(": ").nth(1).is_some_and(|n| {
                n.strip_prefix('s')
                    .is_some_and(|d| d.bytes().all(|c| c.is_ascii_digit()))
                    && l.contains(",UP")
            })
        });
        if links == lines {
            let addr_out = a.ip(&["-o", "-4", "addr", "show"]);
            addrs = (0..lines)
                .filter(|&i| {
                    let ip = vips(i).0;
                    addr_out.contains(&format!("inet {ip} "))
                        || addr_out.contains(&format!("inet {ip}/"))
                })
                .count();
            let route_out = a.ip(&["route", "show", "table", "all"]);
            routes = (0..lines)
                .filter(|&i| route_out.contains(&format!("{} dev s{i} ", vips(i).1)))
                .count();
            if addrs == lines && routes == lines {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "after 180 s: {links}/{lines} TUN devices up, {addrs} addresses, {routes} routes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let up = started.elapsed();

    // Responsive: the control socket answers and knows every line.
    let asked = Instant::now();
    let list = node.lines();
    let answered = asked.elapsed();
    let listed = list.as_array().expect("line list is an array");
    assert_eq!(listed.len(), lines, "line list knows every line");
    assert!(listed
        .iter()
        .all(|l| l["name"].as_str().is_some_and(|n| n.starts_with('s'))));
    let shown = node.cli_ok(&["line", "show", &format!("s{}", lines - 1)]);
    assert!(shown.contains(&vips(lines - 1).0), "{shown}");
    eprintln!(
        "{lines} WireGuard lines: devices, addresses and routes in {:.2} s; daemon RSS {:.1} MiB; \
         line list answered in {} ms",
        up.as_secs_f64(),
        rss_mib(daemon.id()),
        answered.as_millis()
    );

    let stopping = Instant::now();
    stop(&mut daemon);
    eprintln!("SIGTERM to exit: {:.2} s", stopping.elapsed().as_secs_f64());
    let link_out = a.ip(&["-o", "link", "show"]);
    let left = count_matching(&link_out, |l| {
        l.split(": ").nth(1).is_some_and(|n| {
            n.starts_with('s') && n.as_bytes().get(1).is_some_and(u8::is_ascii_digit)
        })
    });
    assert_eq!(left, 0, "TUN devices left after SIGTERM:\n{link_out}");
    let sockets: Vec<_> = std::fs::read_dir(node.uapi_dir())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        sockets.is_empty(),
        "UAPI sockets left after SIGTERM: {sockets:?}"
    );
}

#[test]
fn line_without_offloads_carries_ping_and_tcp() {
    if !require_root_and_tools(&["ip", "ping", "python3"]) {
        return;
    }
    let (a, b) = seed_pair("nooff");
    let na = Node::new(&a);
    let nb = Node::new(&b);
    let off = [("TWNODE_OFFLOAD", "0"), ("RUST_LOG", "info")];
    let _da = spawn_daemon(&a, &na, &off);
    let _db = spawn_daemon(&b, &nb, &off);
    for n in [&na, &nb] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !n.cli(&["line", "list"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "daemon did not answer within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    na.cli_ok(SERVER_CREATE);
    let peer = na.cli_ok(&["line", "show-peer", "tunnel_base"]);
    nb.paste(&peer, "eth0");
    na.wait_state("tunnel_base", "up", 10);
    nb.wait_state("tunnel_base", "up", 10);
    for n in [&na, &nb] {
        let log = std::fs::read_to_string(n.dir.path().join("daemon.log")).unwrap_or_default();
        assert!(
            log.contains("without offloads")
                && log.contains("tso=false")
                && log.contains("udp_gso=false")
                && log.contains("udp_gro=false"),
            "TWNODE_OFFLOAD=0 turns every offload off:\n{log}"
        );
    }
    a.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.2"]);
    let (sent, got) = tcp_transfer(&a, &b, "10.0.0.2", 5001, 10 << 20);
    assert_eq!(sent, got, "10 MB transfer checksum without offloads");
    let (sent, got) = tcp_transfer(&b, &a, "10.0.0.1", 5002, 10 << 20);
    assert_eq!(sent, got, "10 MB transfer checksum without offloads, back");

    // An IP tunnel line: its TUN device without offloads too.
    create_and_paste(&na, &nb, GRE_CREATE, "eth0");
    for n in [&na, &nb] {
        let log = std::fs::read_to_string(n.dir.path().join("daemon.log")).unwrap_or_default();
        assert!(
            log.lines()
                .any(|l| l.contains("ip tunnel line started") && l.contains("tso=false")),
            "TWNODE_OFFLOAD=0: the GRE line's TUN device has no offloads:\n{log}"
        );
    }
    a.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.9.0.2"]);
    let (sent, got) = tcp_transfer(&a, &b, "10.9.0.2", 5003, 10 << 20);
    assert_eq!(sent, got, "10 MB over GRE without offloads");
    let (sent, got) = tcp_transfer(&b, &a, "10.9.0.1", 5004, 10 << 20);
    assert_eq!(sent, got, "10 MB over GRE without offloads, back");
}
