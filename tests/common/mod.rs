//! Network-namespace harness shared by the integration tests.
//!
//! A test creates its own namespaces ([`Netns::new`]), wires them with veth pairs
//! ([`veth_pair`]) and runs commands, daemons or in-process code inside them
//! ([`Netns::exec`], [`Netns::spawn`], [`Netns::enter`]). Dropping a `Netns` kills the
//! processes registered with it and anything else still running inside (their children,
//! detached daemons), then deletes the namespace, also when the test panics.
//!
//! Rules:
//! - Nothing here changes the root namespace: every `ip` call is scoped to a test
//!   namespace (`ip -n`, `ip netns exec`), and veth ends are created directly inside them.
//! - Underlay addresses come from 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24 only.
//! - A test that cannot run says so loudly ([`require_root_and_tools`]); under `CI=true`
//!   it fails instead of skipping.

// Each test binary includes this file and uses a different part of it.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::io::Write as _;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

pub mod node;
pub mod policy;
pub mod raw;
pub mod relay;
pub mod soak;

/// Distinguishes the namespaces of one test process (tests run on parallel threads).
static NEXT_NS: AtomicUsize = AtomicUsize::new(0);

/// A network namespace owned by a test: `ip netns add` on creation, `ip netns del` on
/// drop, after killing every process still running in it.
pub struct Netns {
    name: String,
    children: Mutex<Vec<Registered>>,
}

/// A process started in the namespace that the guard kills on drop.
struct Registered {
    pid: u32,
    /// Refers to this very process even after its pid is reused, so the kill on drop can
    /// never hit a stranger. `None` on kernels without pidfd_open (< 5.3), and once the
    /// test disowned the process.
    pidfd: Option<OwnedFd>,
    disowned: bool,
    command: String,
    /// Where its stdout and stderr go, if the harness chose.
    log: Option<PathBuf>,
}

impl Netns {
    /// Creates `tw-<prefix>-<pid>-<n>` with `lo` up.
    pub fn new(prefix: &str) -> Netns {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(remove_orphaned_namespaces);
        let n = NEXT_NS.fetch_add(1, Ordering::Relaxed);
        let name = format!("tw-{prefix}-{}-{n}", std::process::id());
        run_checked(Command::new("ip").args(["netns", "add", &name]));
        // From here on, Drop removes the namespace whatever fails next.
        let ns = Netns {
            name,
            children: Mutex::new(Vec::new()),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME args...`, not run yet (to set stdio or environment).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(args);
        command
    }

    /// Runs `args` in the namespace and returns its output, whatever the exit status.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        command
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", describe(&command)))
    }

    /// Runs `args` in the namespace; panics with the command, its status, stdout and
    /// stderr unless it exits 0. Returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        run_checked(&mut self.command(args))
    }

    /// `ip -n NAME args...`, checked like [`Netns::run_ok`]; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        run_checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Starts `args` in the namespace with stdin from /dev/null and stdout and stderr
    /// to a log file ([`Spawned::log`]), so a chatty daemon never blocks on a full pipe.
    /// The guard kills it on drop unless [`Netns::disown`]ed, and prints its log if the
    /// test is failing.
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        let n = NEXT_NS.fetch_add(1, Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("{}-{n}.log", self.name));
        let file = File::create(&log)
            .unwrap_or_else(|err| panic!("cannot create log file {}: {err}", log.display()));
        let stderr = file
            .try_clone()
            .unwrap_or_else(|err| panic!("cannot duplicate log fd: {err}"));
        let mut command = self.command(args);
        command.stdin(Stdio::null()).stdout(file).stderr(stderr);
        self.register(command, Some(log))
    }

    /// Starts a command built with [`Netns::command`] (own stdio, environment...) and
    /// registers it like [`Netns::spawn`]; it has no log.
    pub fn spawn_command(&self, command: Command) -> Spawned {
        self.register(command, None)
    }

    /// Takes the process off the kill-on-drop list; the caller is now responsible for it.
    pub fn disown(&self, process: &Spawned) {
        let pid = process.child.id();
        let mut children = lock(&self.children);
        for registered in children.iter_mut().filter(|r| r.pid == pid) {
            registered.disowned = true;
            registered.pidfd = None;
        }
    }

    /// Moves the current thread into the namespace until the guard drops.
    ///
    /// Sockets the thread opens meanwhile, including those of a tokio current-thread
    /// runtime built after this call, live in the namespace; so do threads it starts.
    pub fn enter(&self) -> Entered<'_> {
        // thread-self, not self: setns moves one thread, and /proc/self is the main
        // thread's view.
        let original = File::open("/proc/thread-self/ns/net")
            .unwrap_or_else(|err| panic!("cannot open /proc/thread-self/ns/net: {err}"));
        let target_path = Path::new("/run/netns").join(&self.name);
        let target = File::open(&target_path)
            .unwrap_or_else(|err| panic!("cannot open {}: {err}", target_path.display()));
        setns(&target).unwrap_or_else(|err| panic!("cannot enter netns {}: {err}", self.name));
        Entered {
            original,
            name: &self.name,
            _not_send: PhantomData,
        }
    }

    fn register(&self, mut command: Command, log: Option<PathBuf>) -> Spawned {
        let described = describe(&command);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {described}: {err}"));
        let pidfd = pidfd_open(child.id());
        lock(&self.children).push(Registered {
            pid: child.id(),
            pidfd,
            disowned: false,
            command: described,
            log: log.clone(),
        });
        Spawned { child, log }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        let children = std::mem::take(&mut *lock(&self.children));
        for child in children.iter().filter(|child| !child.disowned) {
            kill_and_reap(child);
        }
        let disowned: Vec<u32> = children
            .iter()
            .filter(|child| child.disowned)
            .map(|child| child.pid)
            .collect();
        kill_stragglers(&self.name, &disowned);
        if failing {
            let mut report = format!("--- netns {} at the time of the failure ---\n", self.name);
            for child in &children {
                let _ = writeln!(report, "process {} `{}`", child.pid, child.command);
                if let Some(log) = &child.log {
                    let text = fs::read_to_string(log).unwrap_or_default();
                    let _ = writeln!(report, "{text}");
                }
            }
            report.push_str(&dump_state(self));
            eprintln!("{report}");
        }
        for log in children.iter().filter_map(|child| child.log.as_ref()) {
            let _ = fs::remove_file(log);
        }
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "warning: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(err) => eprintln!("warning: cannot run ip netns del {}: {err}", self.name),
        }
    }
}

/// A process started by [`Netns::spawn`]; the namespace guard kills it on drop.
///
/// Not a bare `Child`: the guard, not the test, is what waits for it, and clippy's
/// `zombie_processes` lint would flag every test holding an unwaited `Child`.
pub struct Spawned {
    /// The process (its `ip netns exec` wrapper execs into the command, so this is the
    /// command itself). Wait for it, signal it or read its pipes as needed.
    pub child: Child,
    /// Where stdout and stderr go, for [`Netns::spawn`].
    log: Option<PathBuf>,
}

impl Spawned {
    /// Process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stdout and stderr so far (processes from
    /// [`Netns::spawn`] only).
    pub fn log(&self) -> String {
        let Some(path) = &self.log else {
            panic!(
                "process {} was started with its own stdio; it has no log",
                self.id()
            );
        };
        fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("cannot read log {}: {err}", path.display()))
    }
}

/// The current thread is inside a test namespace; dropping it moves the thread back.
///
/// Not `Send`: it must be dropped on the thread it moved.
pub struct Entered<'a> {
    original: File,
    name: &'a str,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Err(err) = setns(&self.original) {
            let message = format!("cannot leave netns {}: {err}", self.name);
            if std::thread::panicking() {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// Creates a veth pair with one end in each namespace, addresses set (CIDR, IPv4 or
/// IPv6), links up, and in each namespace a default route via the other side, as a
/// server's default route out of its physical link.
pub fn veth_pair(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    for (ns, ifname, addr, peer) in [(a, a_if, a_addr, b_addr), (b, b_if, b_addr, a_addr)] {
        let v6 = addr.contains(':');
        if v6 {
            // Usable at once; DAD would hold the address "tentative" for a second.
            ns.ip(&["-6", "addr", "add", addr, "dev", ifname, "nodad"]);
        } else {
            ns.ip(&["addr", "add", addr, "dev", ifname]);
        }
        ns.ip(&["link", "set", ifname, "up"]);
        let gateway = host_part(peer);
        let family = if v6 { "-6" } else { "-4" };
        // onlink: the two ends may sit in different subnets, as the seed's hosts do
        // (203.0.113.10/24 and 198.51.100.20/24 on one wire).
        ns.ip(&[
            family, "route", "add", "default", "via", gateway, "dev", ifname, "onlink",
        ]);
    }
    wait_ipv6_settled(a, a_if);
    wait_ipv6_settled(b, b_if);
}

/// Polls `log()` every `every` until it contains `needle`; after `secs` seconds panics
/// with "`what`" and the log.
pub fn wait_for_log(
    log: impl Fn() -> String,
    needle: &str,
    secs: u64,
    every: std::time::Duration,
    what: &str,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !log().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} (no \"{needle}\" within {secs} s):\n{}",
            log()
        );
        std::thread::sleep(every);
    }
}

/// Waits (up to 5 s) until `ifname` in `ns` has no tentative IPv6 address, so the
/// link-local address and its route exist before a test takes a "before" snapshot.
pub fn wait_ipv6_settled(ns: &Netns, ifname: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let tentative = ns.ip(&["-6", "addr", "show", "dev", ifname, "tentative"]);
        let has_link_local = ns
            .ip(&["-6", "addr", "show", "dev", ifname])
            .contains("fe80::");
        if tentative.trim().is_empty() && has_link_local {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// True when the test can run: running as root and every tool found on PATH.
/// Otherwise prints a loud `SKIPPED` line and returns false, or panics when `CI` is set
/// to `true`/`1` (a CI run must never pass by skipping).
pub fn require_root_and_tools(tools: &[&str]) -> bool {
    require(missing(tools))
}

/// [`require_root_and_tools`], and the daemon built with the `fault-injection` feature,
/// which the tests that inject faults (`TWNODE_FAULT_INJECT`) need: `cargo test
/// --features fault-injection`, as `scripts/test.sh` runs them (cargo builds the
/// `twnode` binary the tests run with the same features).
pub fn require_fault_injection(tools: &[&str]) -> bool {
    let mut missing = missing(tools);
    if !cfg!(feature = "fault-injection") {
        missing
            .push("the `fault-injection` feature (cargo test --features fault-injection)".into());
    }
    require(missing)
}

/// What the test lacks of root and `tools`.
fn missing(tools: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (effective uid 0)".to_owned());
    }
    for tool in tools {
        if !on_path(tool) {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    missing
}

/// True when nothing is `missing`; else a loud skip, or a failure under `CI=true`.
fn require(missing: Vec<String>) -> bool {
    if missing.is_empty() {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    let reason = format!("{test} needs {}", missing.join(" and "));
    let ci = std::env::var("CI")
        .map(|value| value.eq_ignore_ascii_case("true") || value == "1")
        .unwrap_or(false);
    if ci {
        panic!("{reason}; CI=true, so this is a failure, not a skip");
    }
    // Straight to fd 2: libtest swallows eprintln! output of tests that pass, and a skip
    // must never look like a pass.
    let _ = writeln!(
        io::stderr(),
        "\n**********\nSKIPPED: {reason}\n**********\n"
    );
    false
}

/// The namespace's links, addresses, routes (all tables, both families), rules and the
/// multipath hash policies, with fields that change on their own (address lifetimes,
/// route expiry, DAD progress) removed, for before/after comparisons.
pub fn dump_state(ns: &Netns) -> String {
    const SECTIONS: [&[&str]; 6] = [
        &["-d", "link", "show"],
        &["addr", "show"],
        &["-4", "route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
        &["-4", "rule", "show"],
        &["-6", "rule", "show"],
    ];
    let mut dump = String::new();
    for args in SECTIONS {
        let _ = writeln!(dump, "## ip {}", args.join(" "));
        let output = Command::new("ip")
            .args(["-n", ns.name()])
            .args(args)
            .output();
        match output {
            Ok(output) => {
                dump.push_str(&normalize(&String::from_utf8_lossy(&output.stdout)));
                if !output.status.success() {
                    let _ = writeln!(
                        dump,
                        "(failed: {})",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
            }
            Err(err) => {
                let _ = writeln!(dump, "(cannot run ip: {err})");
            }
        }
    }
    // The namespace-wide settings twnode changes while it runs (balancing policy groups
    // set the multipath hash policies): put back as found, too.
    for path in [
        "/proc/sys/net/ipv4/fib_multipath_hash_policy",
        "/proc/sys/net/ipv6/fib_multipath_hash_policy",
    ] {
        let value = ns.exec(&["cat", path]);
        let _ = writeln!(
            dump,
            "## {path}\n{}",
            String::from_utf8_lossy(&value.stdout).trim()
        );
    }
    dump
}

/// One line per line of `ip` output, whitespace collapsed, volatile tokens dropped.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with("valid_lft") {
            continue;
        }
        let mut tokens = trimmed.split_whitespace();
        let mut kept = Vec::new();
        while let Some(token) = tokens.next() {
            match token {
                // `expires 297sec`: counts down.
                "expires" => {
                    tokens.next();
                }
                // DAD in progress: goes away by itself.
                "tentative" => {}
                _ => kept.push(token),
            }
        }
        if line.starts_with(char::is_whitespace) {
            out.push_str("    ");
        }
        out.push_str(&kept.join(" "));
        out.push('\n');
    }
    out
}

/// "203.0.113.10/24" -> "203.0.113.10".
fn host_part(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

fn on_path(tool: &str) -> bool {
    let executable = |path: &Path| {
        fs::metadata(path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if tool.contains('/') {
        return executable(Path::new(tool));
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| executable(&dir.join(tool))))
}

fn run_checked(command: &mut Command) -> String {
    let described = describe(command);
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {described}: {err}"));
    if !output.status.success() {
        panic!(
            "{described} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn describe(command: &Command) -> String {
    let mut text = format!("`{}", command.get_program().to_string_lossy());
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text.push('`');
    text
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not stop the cleanup.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn setns(ns: &File) -> io::Result<()> {
    // SAFETY: the fd is a valid, open namespace file for the duration of the call;
    // setns only changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Deletes the `tw-*-<pid>-<n>` namespaces of test processes that no longer run (killed
/// by a timeout before their guards could drop), once per test process.
fn remove_orphaned_namespaces() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("tw-") {
            continue;
        }
        let mut parts = name.rsplit('-');
        let (Some(n), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(_), Ok(pid)) = (n.parse::<usize>(), pid.parse::<u32>()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            kill_stragglers(&name, &[]);
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

/// SIGKILL whatever else still runs in the namespace (what registered processes forked,
/// daemons that detached), except the disowned processes and this test process. Repeats
/// while something is left, as a process may fork between listing and kill.
fn kill_stragglers(name: &str, spare: &[u32]) {
    let me = std::process::id();
    for _ in 0..20 {
        let Ok(output) = Command::new("ip").args(["netns", "pids", name]).output() else {
            return;
        };
        let pids: Vec<u32> = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .filter(|pid| *pid != me && !spare.contains(pid))
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill has no memory-safety preconditions; a pid that exited
                // meanwhile gives ESRCH.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!("warning: processes are still running in netns {name}");
}

/// SIGKILL the process and wait for it, so the namespace is empty before it is deleted
/// and its log is complete. A process the test already reaped is left alone.
fn kill_and_reap(child: &Registered) {
    let Some(pidfd) = &child.pidfd else {
        // Old kernel: the pid may only be trusted while nobody reaped it, which the test
        // could have done; better leave a stray process than kill a stranger.
        eprintln!(
            "warning: cannot kill process {} `{}` safely (no pidfd)",
            child.pid, child.command
        );
        return;
    };
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no siginfo, no
    // flags; ESRCH (already exited) is fine.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
    // SAFETY: siginfo_t is plain data, valid when zeroed.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waitid on our own child's pidfd with a valid siginfo pointer; ECHILD
        // (the test reaped it already) ends the loop.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if rc == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
}
