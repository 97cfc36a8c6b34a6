//! Interoperability with a real WireGuard peer: wireguard-go (the reference userspace
//! implementation), configured with `wg` exactly as its users do, against twnode in the
//! other namespace. Both directions of the client/server split, roaming, and a server
//! that must not cross the handshake it just answered.
//!
//! wireguard-go's control sockets live in `/var/run/wireguard/<ifname>.sock`, which
//! network namespaces do not separate; each test therefore names its interface uniquely
//! (tests run in parallel, and other test processes may run wireguard-go too).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::node::{seed_pair, tcp_transfer, Node, SERVER_CREATE};
use common::{require_root_and_tools, Netns, Spawned};

const TOOLS: &[&str] = &["ip", "wg", "wireguard-go", "ping", "python3"];

/// A wireguard-go interface in a namespace, configured through `wg`.
///
/// Dropped before its namespace: stops wireguard-go with SIGTERM so it removes its
/// control socket (the namespace guard's SIGKILL would leave a stale one behind).
struct WireGuardGo<'a> {
    ns: &'a Netns,
    ifname: String,
    process: Spawned,
    dir: tempfile::TempDir,
}

impl<'a> WireGuardGo<'a> {
    /// Starts `wireguard-go -f <unique name>` in `ns` and waits until `wg` can reach it.
    fn start(ns: &'a Netns) -> WireGuardGo<'a> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // At most 15 characters: "wgo" + one digit + up to 7 pid digits.
        let ifname = format!(
            "wgo{}{}",
            NEXT.fetch_add(1, Ordering::Relaxed) % 10,
            std::process::id() % 10_000_000
        );
        // Rarely (about once in a hundred starts on a busy host) wireguard-go exits at
        // once with "Failed to listen on uapi socket: no such file or directory", a
        // race on the shared /var/run/wireguard outside this test; starting it again
        // is what a user would do.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let process = ns.spawn(&[
                "env",
                "WG_PROCESS_FOREGROUND=1",
                // Every handshake message in the log, for failure reports and checks.
                "LOG_LEVEL=verbose",
                "wireguard-go",
                "-f",
                &ifname,
            ]);
            let mut wg = WireGuardGo {
                ns,
                ifname: ifname.clone(),
                process,
                dir: tempfile::tempdir().expect("tempdir"),
            };
            match wg.wait_ready() {
                Ok(()) => return wg,
                Err(log) if attempts < 3 && log.contains("Failed to listen on uapi socket") => {
                    continue
                }
                Err(log) => panic!("wireguard-go did not start ({attempts} attempts):\n{log}"),
            }
        }
    }

    /// Waits (up to 10 s) until `wg` reaches the interface; the log if the process
    /// exited first or the time ran out.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ns.exec(&["wg", "show", &self.ifname]).status.success() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.process.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", self.process.log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not reachable within 10 s:\n{}",
                    self.ifname,
                    self.process.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ifname(&self) -> &str {
        &self.ifname
    }

    /// `wg set <ifname> private-key <file> args...`, the key written to a 0600 file as
    /// `wg` wants it.
    fn set_with_key(&self, private_key: &str, args: &[&str]) {
        let key_file = self.dir.path().join("private.key");
        write_secret(&key_file, private_key);
        let mut full = vec![
            "wg",
            "set",
            &self.ifname,
            "private-key",
            key_file.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        self.ns.run_ok(&full);
    }

    /// `wg set <ifname> args...`.
    fn set(&self, args: &[&str]) {
        let mut full = vec!["wg", "set", &self.ifname];
        full.extend_from_slice(args);
        self.ns.run_ok(&full);
    }

    /// Point-to-point address and link up, as a wg-quick user would.
    fn address(&self, local: &str, peer: &str) {
        self.ns.ip(&[
            "addr",
            "add",
            &format!("{local}/32"),
            "peer",
            peer,
            "dev",
            &self.ifname,
        ]);
        self.ns.ip(&["link", "set", &self.ifname, "up"]);
    }

    /// Seconds since the epoch of the last handshake with any peer, 0 for never.
    fn latest_handshake(&self) -> u64 {
        let out = self
            .ns
            .run_ok(&["wg", "show", &self.ifname, "latest-handshakes"]);
        out.lines()
            .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    }

    /// Waits up to `secs` for a handshake; panics with both sides' views otherwise.
    fn wait_handshake(&self, secs: u64, twnode: &Node) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.latest_handshake() == 0 {
            assert!(
                Instant::now() < deadline,
                "no handshake within {secs} s\n{}\nwireguard-go log:\n{}\ntwnode:\n{}\ndaemon log:\n{}",
                self.ns.run_ok(&["wg", "show", &self.ifname]),
                self.process.log(),
                twnode.cli_ok(&["line", "show", "tunnel_base"]),
                twnode.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Handshake initiations wireguard-go received so far (its verbose log).
    fn initiations_received(&self) -> usize {
        self.process
            .log()
            .matches("Received handshake initiation")
            .count()
    }

    /// The whole `wg show` output, for failure messages.
    fn show(&self) -> String {
        String::from_utf8_lossy(&self.ns.exec(&["wg", "show", &self.ifname]).stdout).into_owned()
    }
}

impl Drop for WireGuardGo<'_> {
    fn drop(&mut self) {
        let child = &mut self.process.child;
        // Not when it exited already: its pid may belong to a stranger by now.
        if let Ok(None) = child.try_wait() {
            // SAFETY: plain kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_file(
            Path::new("/var/run/wireguard").join(format!("{}.sock", self.ifname)),
        );
    }
}

fn write_secret(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
    writeln!(file, "{text}").unwrap();
}

/// The value after `flag` in a shell command line.
fn flag_value(words: &[String], flag: &str) -> String {
    let at = words
        .iter()
        .position(|w| w == flag)
        .unwrap_or_else(|| panic!("no {flag} in {words:?}"));
    words
        .get(at + 1)
        .unwrap_or_else(|| panic!("{flag} without a value in {words:?}"))
        .clone()
}

/// A twnode server line on A; returns (client private key, server public key) from
/// the peer command it prints.
fn twnode_server(na: &Node) -> (String, String) {
    na.cli_ok(SERVER_CREATE);
    let peer = na.cli_ok(&["line", "show-peer", "tunnel_base"]);
    let words = common::node::shell_words(peer.trim());
    assert_eq!(flag_value(&words, "--mode"), "client", "{peer}");
    assert_eq!(flag_value(&words, "--peer-port"), "51820", "{peer}");
    (
        flag_value(&words, "--private-key"),
        flag_value(&words, "--peer-pubkey"),
    )
}

/// A wireguard-go client on B that dials the twnode server on A.
fn wireguard_go_client<'a>(b: &'a Netns, private_key: &str, server_pub: &str) -> WireGuardGo<'a> {
    let wg = WireGuardGo::start(b);
    wg.set_with_key(
        private_key,
        &[
            "peer",
            server_pub,
            "endpoint",
            "203.0.113.10:51820",
            "allowed-ips",
            "0.0.0.0/0",
            "persistent-keepalive",
            "25",
        ],
    );
    wg.address("10.0.0.2", "10.0.0.1");
    wg
}

/// Three pings from `from` to `to`; on loss, panics with what both peers saw (twnode's
/// counters and drop reasons, wireguard-go's transfer figures, both TUN devices).
fn ping(from: &Netns, to: &str, twnode: &Node, wg: &WireGuardGo) {
    let out = from.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", to]);
    if out.status.success() {
        return;
    }
    let links = |ns: &Netns| {
        String::from_utf8_lossy(&ns.exec(&["ip", "-s", "link", "show"]).stdout).into_owned()
    };
    panic!(
        "ping {to} failed:\n{}\n--- twnode ---\n{}\n{}\n--- wireguard-go ---\n{}\n{}\n\
         --- links in {} ---\n{}\n--- links in {} ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        twnode.cli_ok(&["line", "show", "tunnel_base"]),
        twnode.log(),
        wg.show(),
        wg.process.log(),
        twnode.ns.name(),
        links(twnode.ns),
        wg.ns.name(),
        links(wg.ns),
    );
}

/// `line show tunnel_base --json`, parsed.
fn line_json(node: &Node) -> serde_json::Value {
    let text = node.cli_ok(&["line", "show", "tunnel_base", "--json"]);
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"))
}

#[test]
fn twnode_server_carries_ping_and_tcp_with_a_wireguard_go_client() {
    if !require_root_and_tools(TOOLS) {
        return;
    }
    let (a, b) = seed_pair("wgi1");
    let na = Node::start(&a);
    let (private_key, server_pub) = twnode_server(&na);
    let wg = wireguard_go_client(&b, &private_key, &server_pub);

    // The client speaks first (persistent keepalive); no ping needed.
    wg.wait_handshake(10, &na);
    na.wait_state("tunnel_base", "up", 10);
    ping(&a, "10.0.0.2", &na, &wg);
    ping(&b, "10.0.0.1", &na, &wg);

    let (sent, got) = tcp_transfer(&a, &b, "10.0.0.2", 5001, 10 << 20);
    assert_eq!(sent, got, "10 MB A->B transfer checksum");
    let (sent, got) = tcp_transfer(&b, &a, "10.0.0.1", 5002, 10 << 20);
    assert_eq!(sent, got, "10 MB B->A transfer checksum");

    let line = line_json(&na);
    assert_eq!(line["state"], "up", "{line}");
    assert_eq!(
        line["endpoint"].as_str(),
        Some(format!("198.51.100.20:{}", listen_port(&wg)).as_str()),
        "{line}"
    );
    assert!(line["rx_bytes"].as_u64().unwrap() > 10 << 20, "{line}");
    assert!(line["tx_bytes"].as_u64().unwrap() > 10 << 20, "{line}");
}

#[test]
fn twnode_server_with_a_packet_waiting_answers_without_a_crossing_handshake() {
    if !require_root_and_tools(TOOLS) {
        return;
    }
    let (a, b) = seed_pair("wgi4");
    let na = Node::start(&a);
    let (private_key, server_pub) = twnode_server(&na);
    // A packet for the peer before it ever called: it waits in the server's core.
    let early = a.exec(&["ping", "-c", "1", "-W", "1", "10.0.0.2"]);
    assert!(!early.status.success(), "no peer yet, so no reply");

    // The client's interface is up before it dials, so the waiting packet, delivered
    // right after the handshake, finds it ready.
    let wg = WireGuardGo::start(&b);
    wg.address("10.0.0.2", "10.0.0.1");
    wg.set_with_key(
        &private_key,
        &[
            "peer",
            &server_pub,
            "endpoint",
            "203.0.113.10:51820",
            "allowed-ips",
            "0.0.0.0/0",
            "persistent-keepalive",
            "25",
        ],
    );
    wg.wait_handshake(10, &na);
    // The server answered the client's handshake; starting one of its own now would
    // cross it (the kernel and wireguard-go wait REKEY_TIMEOUT). The waiting packet
    // goes out once the client confirms the session.
    let deadline = Instant::now() + Duration::from_secs(3);
    while link_packets(&b, wg.ifname(), "rx") == 0 {
        assert!(
            Instant::now() < deadline,
            "the packet queued before the handshake never reached the client\n{}\n{}",
            na.cli_ok(&["line", "show", "tunnel_base"]),
            wg.process.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ping(&b, "10.0.0.1", &na, &wg);
    ping(&a, "10.0.0.2", &na, &wg);
    assert_eq!(
        wg.initiations_received(),
        0,
        "the twnode server initiated right after answering:\n{}",
        wg.process.log()
    );
}

#[test]
fn twnode_client_handshakes_at_once_with_a_wireguard_go_server() {
    if !require_root_and_tools(TOOLS) {
        return;
    }
    let (a, b) = seed_pair("wgi2");
    let server_key = a.run_ok(&["wg", "genkey"]).trim().to_owned();
    let client_key = a.run_ok(&["wg", "genkey"]).trim().to_owned();
    let server_pub = pubkey(&a, &server_key);
    let client_pub = pubkey(&a, &client_key);

    let wg = WireGuardGo::start(&a);
    wg.set_with_key(
        &server_key,
        &[
            "listen-port",
            "51820",
            "peer",
            &client_pub,
            "allowed-ips",
            "0.0.0.0/0",
        ],
    );
    wg.address("10.0.0.1", "10.0.0.2");

    // Without IPv6 on the new TUN device the kernel sends nothing through it by itself
    // (no router solicitation, no MLD report), so a handshake can only come from the
    // client dialing on its own.
    b.run_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    let nb = Node::start(&b);
    nb.cli_ok(&[
        "line",
        "create",
        "eth0",
        "203.0.113.10",
        "10.0.0.1",
        "10.0.0.2",
        "tunnel_base",
        "--type",
        "wireguard",
        "--mode",
        "client",
        "--private-key",
        &client_key,
        "--peer-pubkey",
        &server_pub,
        "--peer-port",
        "51820",
    ]);

    // No traffic yet: the client must dial by itself.
    wg.wait_handshake(10, &nb);
    assert_eq!(
        tun_tx_packets(&b, "tunnel_base"),
        0,
        "the handshake came before any packet entered the client's TUN device"
    );
    nb.wait_state("tunnel_base", "up", 10);
    let shown = wg.show();
    assert!(
        shown.contains(&client_pub) && shown.contains("198.51.100.20:"),
        "wireguard-go learned the twnode client's endpoint:\n{shown}"
    );

    ping(&a, "10.0.0.2", &nb, &wg);
    ping(&b, "10.0.0.1", &nb, &wg);
    let (sent, got) = tcp_transfer(&b, &a, "10.0.0.1", 5001, 10 << 20);
    assert_eq!(sent, got, "10 MB B->A transfer checksum");
}

#[test]
fn twnode_server_follows_a_wireguard_go_client_to_its_new_port() {
    if !require_root_and_tools(TOOLS) {
        return;
    }
    let (a, b) = seed_pair("wgi3");
    let na = Node::start(&a);
    let (private_key, server_pub) = twnode_server(&na);
    let wg = wireguard_go_client(&b, &private_key, &server_pub);
    wg.wait_handshake(10, &na);
    ping(&b, "10.0.0.1", &na, &wg);
    let old = line_json(&na)["endpoint"].as_str().map(str::to_owned);
    assert_ne!(old.as_deref(), Some("198.51.100.20:40000"));

    wg.set(&["listen-port", "40000"]);
    assert_eq!(listen_port(&wg), 40000, "{}", wg.show());

    // The client's next datagrams come from port 40000; the server answers there.
    ping(&b, "10.0.0.1", &na, &wg);
    ping(&a, "10.0.0.2", &na, &wg);
    let line = line_json(&na);
    assert_eq!(
        line["endpoint"].as_str(),
        Some("198.51.100.20:40000"),
        "endpoint after the client moved from {old:?}: {line}"
    );
    let (sent, got) = tcp_transfer(&a, &b, "10.0.0.2", 5001, 1 << 20);
    assert_eq!(sent, got, "1 MB transfer after roaming");
}

fn pubkey(ns: &Netns, private_key: &str) -> String {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut command = ns.command(&["wg", "pubkey"]);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("wg pubkey");
    writeln!(child.stdin.take().unwrap(), "{private_key}").unwrap();
    let out = child.wait_with_output().expect("wg pubkey");
    assert!(out.status.success(), "wg pubkey: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// wireguard-go's UDP port, from `wg show <ifname> listen-port`.
fn listen_port(wg: &WireGuardGo) -> u16 {
    let out = wg.ns.run_ok(&["wg", "show", wg.ifname(), "listen-port"]);
    out.trim()
        .parse()
        .unwrap_or_else(|err| panic!("listen-port {out:?}: {err}"))
}

/// Packets the kernel routed into a TUN device (its TX counter), i.e. what the daemon
/// read from it.
fn tun_tx_packets(ns: &Netns, ifname: &str) -> u64 {
    link_packets(ns, ifname, "tx")
}

/// A link's packet counter, `direction` "rx" or "tx".
fn link_packets(ns: &Netns, ifname: &str, direction: &str) -> u64 {
    let out = ns.ip(&["-j", "-s", "link", "show", "dev", ifname]);
    let links: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|err| panic!("{err}: {out}"));
    links[0]["stats64"][direction]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no {direction} packet counter in {out}"))
}
