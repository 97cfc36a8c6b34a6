//! The shipped systemd unit's sandbox, checked against what the daemon really does with
//! every feature on (not only `systemd-analyze verify`): no systemd runs here, so the
//! daemon runs under the unit's capability bounding set and `no_new_privs` (setpriv),
//! traced by strace, while it brings up WireGuard lines (one nested), a GRE-over-ESP
//! line, an IPIP line sending through AF_XDP, carries traffic on each, reloads and stops.
//! Then every syscall, socket family, written file and memory mapping it made is held
//! against the unit's `SystemCallFilter=`, `RestrictAddressFamilies=`, writable
//! directories, `DeviceAllow=`, `MemoryDenyWriteExecute=` and `RestrictNamespaces=`.
//! A feature the unit would block (AF_XDP once was) fails here with what to add.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::node::{create_and_paste, seed_pair, Node, SECURE_CREATE, SERVER_CREATE};
use common::require_root_and_tools;

const ENC: &str = "0x9f8e7d6c5b4a39281716050403020100aabbccddeeff0011";
const AUTH: &str = "0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";

/// The unit's settings: every `Key=value` of packaging/twnode.service (a key given
/// several times keeps every value, in order).
fn unit() -> BTreeMap<String, Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/twnode.service");
    let text = std::fs::read_to_string(&path).expect("packaging/twnode.service");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    out
}

fn setting<'a>(unit: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    unit.get(key)
        .and_then(|v| v.last())
        .map(String::as_str)
        .unwrap_or_else(|| panic!("packaging/twnode.service has no {key}="))
}

/// The syscalls a `SystemCallFilter=` group allows, groups expanded by systemd itself.
fn syscall_group(name: &str, seen: &mut BTreeSet<String>, into: &mut BTreeSet<String>) {
    if !seen.insert(name.to_string()) {
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", name])
        .output()
        .expect("systemd-analyze syscall-filter");
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {name}"
    );
    for entry in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let entry = entry.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        if entry.starts_with('@') {
            syscall_group(entry, seen, into);
        } else {
            into.insert(entry.to_string());
        }
    }
}

/// What strace saw the daemon do.
#[derive(Default)]
struct Trace {
    syscalls: BTreeSet<String>,
    /// `AF_*` of every socket() call.
    families: BTreeSet<String>,
    /// Files opened for writing, created, renamed, removed, or bound as unix sockets.
    written: BTreeSet<String>,
    /// Calls that asked for writable and executable memory, as strace printed them.
    wx: Vec<String>,
    /// Calls that created or entered a namespace.
    namespaces: Vec<String>,
}

/// The string arguments (`"..."`) of an strace line.
fn quoted(args: &str) -> Vec<String> {
    args.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn read_trace(path: &Path) -> Trace {
    let text = std::fs::read_to_string(path).expect("strace output");
    let mut t = Trace::default();
    for line in text.lines() {
        // `PID name(args) = result`; resumed calls and signals carry nothing new.
        let Some((_, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        if call.starts_with("<...") || call.starts_with("---") || call.starts_with("+++") {
            continue;
        }
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        t.syscalls.insert(name.to_string());
        match name {
            "socket" => {
                if let Some(f) = args.split([',', ')']).next() {
                    t.families.insert(f.trim().to_string());
                }
            }
            "open" | "openat" | "openat2"
                if args.contains("O_WRONLY")
                    || args.contains("O_RDWR")
                    || args.contains("O_CREAT") =>
            {
                t.written.extend(quoted(args).into_iter().take(1));
            }
            "rename" | "renameat" | "renameat2" | "unlink" | "unlinkat" | "mkdir" | "mkdirat"
            | "rmdir" | "creat" | "truncate" | "chmod" | "fchmodat" | "symlink" | "link" => {
                t.written.extend(quoted(args));
            }
            // An abstract name (`sun_path=@"..."`: the daemon's host lock) is no file,
            // and no file-system setting of the unit applies to it.
            "bind" if args.contains("AF_UNIX") && !args.contains("sun_path=@") => {
                t.written.extend(quoted(args).into_iter().take(1));
            }
            "mmap" | "mprotect" | "pkey_mprotect"
                if args.contains("PROT_WRITE") && args.contains("PROT_EXEC") =>
            {
                t.wx.push(line.to_string());
            }
            "unshare" | "setns" => t.namespaces.push(line.to_string()),
            "clone" | "clone3" if args.contains("CLONE_NEW") => t.namespaces.push(line.to_string()),
            _ => {}
        }
    }
    t
}

/// The pid of `n`'s daemon itself (strace, which started it, blocks fatal signals when
/// it writes to a file, so signals must go to the daemon).
fn daemon_pid(n: &Node) -> i32 {
    let socket = n.socket().to_string_lossy().into_owned();
    let exe = common::node::twnode_bin();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().map(String::as_str) == Some(exe)
            && args.iter().any(|a| a == "daemon")
            && args.contains(&socket)
        {
            return pid;
        }
    }
    panic!("no twnode daemon with control socket {socket} runs");
}

/// Waits until `line` on `n` says it sends through AF_XDP.
fn wait_af_xdp(n: &Node, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let shown: serde_json::Value =
            serde_json::from_str(&n.cli_ok(&["line", "show", line, "--json"])).expect("json");
        let t = shown["transmit"].as_str().unwrap_or("").to_string();
        if t.starts_with("AF_XDP on eth0") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "line {line} never sent through AF_XDP under the unit's sandbox (it says {t:?}); \
             the sandbox keeps --af-xdp from working\n{}",
            n.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_units_sandbox_allows_everything_the_daemon_does() {
    if !require_root_and_tools(&["ip", "ping", "setpriv", "strace", "systemd-analyze"]) {
        return;
    }
    let unit = unit();
    let caps: Vec<String> = setting(&unit, "CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    assert_eq!(setting(&unit, "NoNewPrivileges"), "yes");
    let (a, b) = seed_pair("sbx");
    let dir = tempfile::tempdir().expect("tempdir");
    let trace_file = dir.path().join("trace");
    let bounding = format!("--bounding-set=-all,{}", caps.join(","));
    let mut na = Node::new(&a);
    na.start_daemon_wrapped(
        &[
            "setpriv",
            "--no-new-privs",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            &bounding,
            "--",
            "strace",
            "-f",
            "-qq",
            "-s",
            "256",
            "-o",
            trace_file.to_str().unwrap(),
        ],
        &[],
    );
    let nb = Node::start(&b);

    // WireGuard, one line nested in another.
    create_and_paste(&na, &nb, SERVER_CREATE, "eth0");
    create_and_paste(&na, &nb, SECURE_CREATE, "tunnel_base");
    // GRE over ESP with static keys: sequence-number marks in the state directory.
    let esp = [
        "line",
        "create",
        "eth0",
        "198.51.100.20",
        "10.7.0.2",
        "10.7.0.1",
        "esp1",
        "--type",
        "ipsec",
        "--esp-keying",
        "static",
        "--enc-key",
        ENC,
        "--auth-key",
        AUTH,
    ];
    create_and_paste(&na, &nb, &esp, "eth0");
    // IPIP through AF_XDP (its TUN device also gets disable_ipv6 written).
    let xdp = [
        "line",
        "create",
        "eth0",
        "198.51.100.20",
        "10.8.0.2",
        "10.8.0.1",
        "xdp1",
        "--type",
        "ipip",
        "--af-xdp",
    ];
    create_and_paste(&na, &nb, &xdp, "eth0");
    for vip in ["10.0.0.2", "172.16.0.2", "10.7.0.2", "10.8.0.2"] {
        let out = a.exec(&["ping", "-c", "3", "-i", "0.3", "-W", "3", vip]);
        assert!(
            out.status.success(),
            "ping {vip} through the sandboxed daemon failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            na.log()
        );
    }
    wait_af_xdp(&na, "xdp1");
    a.run_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "3", "10.8.0.2"]);
    let pid = daemon_pid(&na);
    na.cli_ok(&["reload"]);
    // SAFETY: plain kill(2) on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(500));
    na.cli_ok(&["line", "delete", "xdp1"]);
    // SAFETY: as above. strace exits with the daemon's status, which stop_daemon checks.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    na.stop_daemon();

    let t = read_trace(&trace_file);
    assert!(
        t.syscalls.contains("sendmmsg") && t.families.contains("AF_XDP"),
        "the trace missed the data plane: {:?} {:?}",
        t.syscalls,
        t.families
    );

    // SystemCallFilter=
    let mut allowed = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for group in setting(&unit, "SystemCallFilter").split_whitespace() {
        if group.starts_with('@') {
            syscall_group(group, &mut seen, &mut allowed);
        } else {
            allowed.insert(group.to_string());
        }
    }
    let outside: Vec<&String> = t.syscalls.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "the daemon called {outside:?}, outside the unit's SystemCallFilter={} (they would \
         fail with EPERM): add them to packaging/twnode.service",
        setting(&unit, "SystemCallFilter")
    );

    // RestrictAddressFamilies=
    let families: BTreeSet<String> = setting(&unit, "RestrictAddressFamilies")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let blocked: Vec<&String> = t.families.difference(&families).collect();
    assert!(
        blocked.is_empty(),
        "the daemon opened sockets of {blocked:?}, which the unit's \
         RestrictAddressFamilies={} refuses: add them to packaging/twnode.service",
        setting(&unit, "RestrictAddressFamilies")
    );

    // Files: the test's config, state, control socket and UAPI sockets all live in the
    // node's directory, which stands for the unit's /etc/twnode, /var/lib/twnode,
    // /run/twnode and /run/wireguard (the daemon's default --uapi-dir,
    // /var/run/wireguard, is /run/wireguard).
    for (key, want) in [
        ("ConfigurationDirectory", "twnode"),
        ("StateDirectory", "twnode"),
        ("RuntimeDirectory", "twnode wireguard"),
    ] {
        assert_eq!(setting(&unit, key), want, "{key}");
    }
    assert_eq!(
        twnode::control::uapi_server::DEFAULT_UAPI_DIR,
        "/var/run/wireguard",
        "the unit's RuntimeDirectory=wireguard is the UAPI directory"
    );
    let uapi_socket = na.uapi_dir().join("tunnel_base.sock");
    assert!(
        t.written.contains(uapi_socket.to_str().unwrap()),
        "the UAPI socket was bound in the UAPI directory: {:?}",
        t.written
    );
    assert_eq!(setting(&unit, "ProtectSystem"), "strict");
    assert!(
        setting(&unit, "ReadWritePaths")
            .split_whitespace()
            .any(|p| p == "/etc/twnode"),
        "line create rewrites /etc/twnode/twnode.toml: ReadWritePaths=/etc/twnode"
    );
    let node_dir = na.dir.path().to_string_lossy().into_owned();
    let stray: Vec<&String> = t
        .written
        .iter()
        .filter(|p| {
            !(p.starts_with(&node_dir)
                || p.as_str() == "/dev/net/tun"
                || (p.starts_with("/proc/sys/net/ipv6/conf/") && p.ends_with("/disable_ipv6")))
        })
        .collect();
    assert!(
        stray.is_empty(),
        "the daemon wrote {stray:?}, outside its config, state and runtime directories: \
         ProtectSystem=strict makes those read-only under the unit"
    );
    assert!(
        setting(&unit, "DeviceAllow").starts_with("/dev/net/tun")
            && t.written.contains("/dev/net/tun"),
        "TUN devices come from /dev/net/tun: DeviceAllow=/dev/net/tun rw"
    );

    // MemoryDenyWriteExecute= and RestrictNamespaces=
    assert_eq!(setting(&unit, "MemoryDenyWriteExecute"), "yes");
    assert!(
        t.wx.is_empty(),
        "writable and executable memory: {:?}",
        t.wx
    );
    assert_eq!(setting(&unit, "RestrictNamespaces"), "yes");
    assert!(t.namespaces.is_empty(), "namespaces: {:?}", t.namespaces);
}
