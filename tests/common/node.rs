//! A twnode host for integration tests: a daemon running in a test namespace with its
//! own config file and control socket, driven through the real `twnode` binary exactly
//! as a user would drive it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use super::{Netns, Spawned};

/// The `twnode` binary cargo built for this test run.
pub fn twnode_bin() -> &'static str {
    env!("CARGO_BIN_EXE_twnode")
}

/// The seed's first command on host A: a WireGuard server line `tunnel_base` toward B.
pub const SERVER_CREATE: &[&str] = &[
    "line",
    "create",
    "eth0",
    "198.51.100.20",
    "10.0.0.2",
    "10.0.0.1",
    "tunnel_base",
    "--type",
    "wireguard",
    "--mode",
    "server",
    "--listen-port",
    "51820",
];

/// The seed's second layer: `tunnel_secure` on `tunnel_base`, A's side.
pub const SECURE_CREATE: &[&str] = &[
    "line",
    "create",
    "tunnel_base",
    "10.0.0.2",
    "172.16.0.2",
    "172.16.0.1",
    "tunnel_secure",
    "--type",
    "wireguard",
    "--mode",
    "server",
    "--listen-port",
    "51821",
];

/// A GRE line with key 7 from A (seed_pair) to B, A's side.
pub const GRE_CREATE: &[&str] = &[
    "line",
    "create",
    "eth0",
    "198.51.100.20",
    "10.9.0.2",
    "10.9.0.1",
    "gre1",
    "--type",
    "gre",
    "--key",
    "7",
];

/// Runs `create` (a `line create`) on `a`, and pastes the peer command it prints on `b`
/// with `b_parent` as the parent.
pub fn create_and_paste(a: &Node, b: &Node, create: &[&str], b_parent: &str) {
    let name = create[6];
    a.cli_ok(create);
    b.paste(&a.cli_ok(&["line", "show-peer", name]), b_parent);
}

/// A twnode daemon in a namespace.
pub struct Node<'a> {
    pub ns: &'a Netns,
    pub dir: tempfile::TempDir,
    daemon: Option<Spawned>,
}

impl<'a> Node<'a> {
    /// Prepares a node (no daemon yet).
    pub fn new(ns: &'a Netns) -> Node<'a> {
        let dir = tempfile::tempdir().expect("tempdir");
        Node {
            ns,
            dir,
            daemon: None,
        }
    }

    /// Creates a node and starts its daemon.
    pub fn start(ns: &'a Netns) -> Node<'a> {
        let mut n = Node::new(ns);
        n.start_daemon();
        n
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("twnode.toml")
    }

    /// The daemon's state directory (ESP sequence-number marks), inside the node's
    /// temporary directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// The daemon's UAPI directory (`--uapi-dir`), inside the node's temporary
    /// directory, so nodes (and test runs) never share `/var/run/wireguard`.
    pub fn uapi_dir(&self) -> PathBuf {
        self.dir.path().join("wireguard")
    }

    /// Runs wireguard-tools' `wg args...` against this node's UAPI sockets, with `stdin`
    /// as its standard input, in the node's network namespace and a mount namespace of
    /// its own where `/var/run/wireguard` (where `wg` looks) is this node's
    /// [`Node::uapi_dir`].
    pub fn wg_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let script = format!(
            "mount -t tmpfs twnode-test /run && mkdir /run/wireguard && \
             mount --bind '{}' /run/wireguard && exec wg \"$@\"",
            self.uapi_dir().display()
        );
        let mut command = self.ns.command(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "wg",
        ]);
        command.args(args);
        output_with_stdin(command, stdin)
    }

    /// [`Node::wg_with_stdin`] without input, panicking with the output and the
    /// daemon's log on failure; returns stdout.
    pub fn wg(&self, args: &[&str]) -> String {
        let out = self.wg_with_stdin(args, b"");
        assert!(
            out.status.success(),
            "wg {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the daemon and waits until it answers on its control socket.
    pub fn start_daemon(&mut self) {
        self.start_daemon_env(&[]);
    }

    /// [`Node::start_daemon`] with `env` (`NAME=value` each) added to its environment.
    pub fn start_daemon_env(&mut self, env: &[&str]) {
        self.start_daemon_wrapped(&[], env);
    }

    /// [`Node::start_daemon`] with `extra` after `twnode daemon`'s own arguments.
    pub fn start_daemon_args(&mut self, extra: &[&str]) {
        self.start_daemon_full(&[], &[], extra);
    }

    /// [`Node::start_daemon_env`], the daemon run by `wrapper` (a command and its
    /// arguments, e.g. `setpriv ... --`, that execs what follows it).
    pub fn start_daemon_wrapped(&mut self, wrapper: &[&str], env: &[&str]) {
        self.start_daemon_full(wrapper, env, &[]);
    }

    fn start_daemon_full(&mut self, wrapper: &[&str], env: &[&str], extra: &[&str]) {
        assert!(self.daemon.is_none(), "daemon already running");
        let config = self.config();
        let socket = self.socket();
        let state = self.state_dir();
        let uapi = self.uapi_dir();
        let mut args = vec!["env"];
        args.extend_from_slice(env);
        args.extend_from_slice(wrapper);
        args.extend_from_slice(&[
            twnode_bin(),
            "daemon",
            "--config",
            config.to_str().unwrap(),
            "--control",
            socket.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--uapi-dir",
            uapi.to_str().unwrap(),
        ]);
        args.extend_from_slice(extra);
        let spawned = self.ns.spawn(&args);
        self.daemon = Some(spawned);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cli(&["line", "list"]).status.success() {
                return;
            }
            if let Some(d) = self.daemon.as_mut() {
                if let Ok(Some(status)) = d.child.try_wait() {
                    panic!("daemon exited with {status}:\n{}", d.log());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not answer within 10 s:\n{}", self.log());
    }

    /// The running daemon's pid.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("no daemon running").id()
    }

    /// Sends SIGTERM and asserts the daemon exits 0 within 10 s.
    pub fn stop_daemon(&mut self) {
        let mut d = self.daemon.take().expect("no daemon running");
        // SAFETY: plain kill(2) on a pid we own.
        unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = d.child.try_wait() {
                assert!(
                    status.success(),
                    "daemon exited with {status}:\n{}",
                    d.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon ignored SIGTERM:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the daemon with SIGKILL (a crash).
    pub fn kill_daemon(&mut self) {
        let mut d = self.daemon.take().expect("no daemon running");
        let _ = d.child.kill();
        let _ = d.child.wait();
    }

    /// Sends a signal to the running daemon.
    pub fn signal(&self, sig: i32) {
        let d = self.daemon.as_ref().expect("no daemon running");
        // SAFETY: plain kill(2) on a pid we own.
        unsafe { libc::kill(d.child.id() as i32, sig) };
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        self.daemon.as_ref().map(|d| d.log()).unwrap_or_default()
    }

    /// `twnode --config C --control S args...` in the namespace, not run yet.
    fn cli_command(&self, args: &[&str]) -> std::process::Command {
        let config = self.config();
        let socket = self.socket();
        let mut command = self.ns.command(&[
            twnode_bin(),
            "--config",
            config.to_str().unwrap(),
            "--control",
            socket.to_str().unwrap(),
        ]);
        command.args(args);
        command
    }

    /// Runs `twnode --config C --control S args...` in the namespace.
    pub fn cli(&self, args: &[&str]) -> Output {
        output_with_stdin(self.cli_command(args), b"")
    }

    /// Like [`Node::cli`], panicking with stdout, stderr and the daemon log on failure.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        if !out.status.success() {
            panic!(
                "twnode {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a pasted peer command (`twnode line create <parent> ...`) with the parent
    /// filled in, as a user would paste it into a shell (single-quoted keys; a
    /// preshared key piped in as `echo 'KEY' | twnode ... --preshared-key -`).
    pub fn paste(&self, command: &str, parent: &str) -> String {
        let command = command.trim().replacen("<parent>", parent, 1);
        let (stdin, command) = match command.strip_prefix("echo '") {
            Some(rest) => {
                let (key, command) = rest.split_once("' | ").expect("echo '...' | twnode");
                (format!("{key}\n"), command.to_string())
            }
            None => (String::new(), command),
        };
        let words = shell_words(&command);
        assert_eq!(
            words.first().map(String::as_str),
            Some("twnode"),
            "{command}"
        );
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        if stdin.is_empty() {
            return self.cli_ok(&args);
        }
        let out = self.cli_with_stdin(&args, stdin.as_bytes());
        assert!(
            out.status.success(),
            "twnode {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`Node::cli`] with `stdin` as its standard input.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        output_with_stdin(self.cli_command(args), stdin)
    }

    /// `line list --json` parsed.
    pub fn lines(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["line", "list", "--json"])).expect("json")
    }

    /// `line show LINE --json`.
    pub fn line_json(&self, line: &str) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["line", "show", line, "--json"])).expect("json")
    }

    /// How many of `line`'s packets were dropped for `reason` (as `line show` names it).
    pub fn drops(&self, line: &str, reason: &str) -> u64 {
        self.line_json(line)["drops"]
            .as_array()
            .expect("drops")
            .iter()
            .find(|d| d[0] == reason)
            .and_then(|d| d[1].as_u64())
            .unwrap_or(0)
    }

    /// Waits until `line` reports `state` (e.g. "up"), up to `secs`.
    pub fn wait_state(&self, line: &str, state: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let lines = self.lines();
            let found = lines
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["name"] == line)
                .map(|l| l["state"].as_str().unwrap_or("").to_string());
            if found.as_deref() == Some(state) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "line {line} is {found:?}, not {state:?}, after {secs} s\n{}\ndaemon log:\n{}",
                    self.cli_ok(&["line", "list"]),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.config()).unwrap_or_default()
    }
}

impl Drop for Node<'_> {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            // SAFETY: plain kill(2) on a pid we own.
            unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = d.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
    }
}

/// Runs `command` with `stdin` as its standard input; its output, whatever its status.
fn output_with_stdin(mut command: std::process::Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    if let Some(mut input) = child.stdin.take() {
        // A command that does not read its input closes the pipe: not an error here.
        let _ = input.write_all(stdin);
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

/// Splits a command line the way a POSIX shell does for words, single and double quotes
/// (enough for pasted peer commands).
pub fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    if n != '\n' {
                        cur.push(n);
                        in_word = true;
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Two hosts as in the seed: A 203.0.113.10 and B 198.51.100.20 on one veth (each side
/// named eth0), each with a default route to the other.
pub fn seed_pair(prefix: &str) -> (Netns, Netns) {
    let a = Netns::new(&format!("{prefix}a"));
    let b = Netns::new(&format!("{prefix}b"));
    super::veth_pair(
        &a,
        "eth0",
        "203.0.113.10/24",
        &b,
        "eth0",
        "198.51.100.20/24",
    );
    (a, b)
}

/// Runs a 10 MB checksummed TCP transfer from `from` to `to_ip:port` (served in `to`)
/// with python3; returns (sent sha256, received sha256).
pub fn tcp_transfer(
    from: &Netns,
    to: &Netns,
    to_ip: &str,
    port: u16,
    bytes: usize,
) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("received");
    let server = to.spawn(&[
        "python3",
        "-c",
        "import socket,hashlib,sys\n\
         s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind((sys.argv[1],int(sys.argv[2])));s.listen(1);s.settimeout(60)\n\
         c,_=s.accept();c.settimeout(60);h=hashlib.sha256()\n\
         while True:\n b=c.recv(65536)\n if not b: break\n h.update(b)\n\
         open(sys.argv[3]+'.tmp','w').write(h.hexdigest())\n\
         import os;os.rename(sys.argv[3]+'.tmp',sys.argv[3])\n",
        to_ip,
        &port.to_string(),
        out.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(400));
    let sent = from.run_ok(&[
        "python3",
        "-c",
        "import socket,hashlib,sys,os\n\
         data=os.urandom(int(sys.argv[3]))\n\
         s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=60)\n\
         s.sendall(data);s.shutdown(socket.SHUT_WR);s.recv(1);s.close()\n\
         print(hashlib.sha256(data).hexdigest())\n",
        to_ip,
        &port.to_string(),
        &bytes.to_string(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Path::new(&out).exists() {
        assert!(
            Instant::now() < deadline,
            "receiver never finished:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = std::fs::read_to_string(&out).unwrap();
    (sent.trim().to_string(), got.trim().to_string())
}
