//! Secrets and privileges: private keys never leave the config file (0600) and the peer
//! command meant for them, whatever the log level; the daemon keeps only the network
//! capabilities once started, still manages every kind of line with them, and SIGTERM
//! leaves the host exactly as it found it, nested and raw-tunnel lines included.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use common::node::{
    create_and_paste, seed_pair, twnode_bin, Node, GRE_CREATE, SECURE_CREATE, SERVER_CREATE,
};
use common::soak::{self, spawn_daemon_with_env};
use common::{dump_state, require_root_and_tools};

/// Every `... = "<base64>"` value of a `*private_key` line of a config.
fn private_keys_in(config: &str) -> Vec<String> {
    config
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("private_key =") || l.starts_with("peer_private_key ="))
        .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_key(what: &str, text: &str, keys: &[String]) {
    for key in keys {
        assert!(
            !text.contains(key.as_str()),
            "a private key appears in {what}:\n{text}"
        );
    }
}

/// `twnode args...` for `node`, with the CLI itself logging at trace level.
fn cli_traced(node: &Node, args: &[&str]) -> Output {
    let config = node.config();
    let socket = node.socket();
    let mut full = vec![
        twnode_bin(),
        "--config",
        config.to_str().unwrap(),
        "--control",
        socket.to_str().unwrap(),
    ];
    full.extend_from_slice(args);
    let mut command = node.ns.command(&full);
    command.env("TWNODE_LOG", "trace");
    command.output().expect("run twnode")
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn private_keys_never_appear_in_trace_logs_list_show_or_errors() {
    if !require_root_and_tools(&["ip", "ping", "env"]) {
        return;
    }
    let (a, b) = seed_pair("sec");
    let na = Node::new(&a);
    let nb = Node::new(&b);
    let trace = [("TWNODE_LOG", "trace")];
    let mut da = spawn_daemon_with_env(&na, &trace);
    let mut db = spawn_daemon_with_env(&nb, &trace);

    // The create report and show-peer print the client's key on purpose, and say so.
    let created = na.cli(SERVER_CREATE);
    assert!(created.status.success(), "{}", text(&created));
    let report = String::from_utf8_lossy(&created.stdout);
    assert!(
        report.contains("It carries the peer's private key"),
        "{report}"
    );
    let peer = na.cli(&["line", "show-peer", "tunnel_base"]);
    assert!(peer.status.success(), "{}", text(&peer));
    let note = String::from_utf8_lossy(&peer.stderr);
    assert!(
        note.contains("private key") && note.contains("do not store it where others can read it"),
        "show-peer warns on stderr: {note}"
    );
    let command = String::from_utf8_lossy(&peer.stdout).into_owned();
    // The client's line is made from the pasted command: its key travels in a request.
    nb.paste(&command, "eth0");
    na.wait_state("tunnel_base", "up", 10);
    nb.wait_state("tunnel_base", "up", 10);
    a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.2"]);

    // Where keys are stored: only the two 0600 config files.
    let mut keys = private_keys_in(&na.config_text());
    keys.extend(private_keys_in(&nb.config_text()));
    assert_eq!(
        keys.len(),
        3,
        "server, generated client and client's own copy"
    );
    assert!(command.contains(&keys[1]) || command.contains(&keys[0]));
    assert_eq!(mode(&na.config()), 0o600);
    assert_eq!(mode(&nb.config()), 0o600);
    for entry in std::fs::read_dir(na.dir.path()).unwrap().flatten() {
        let path = entry.path();
        if path.is_file() && std::fs::read_to_string(&path).is_ok_and(|t| t.contains(&keys[0])) {
            assert_eq!(mode(&path), 0o600, "{} holds a key", path.display());
        }
    }

    // list and show, table and JSON, on both ends.
    for node in [&na, &nb] {
        for args in [
            &["line", "list"][..],
            &["line", "list", "--json"],
            &["line", "show", "tunnel_base"],
            &["line", "show", "tunnel_base", "--json"],
        ] {
            let out = node.cli(args);
            assert!(out.status.success(), "{args:?}: {}", text(&out));
            assert_no_key(&format!("`twnode {}`", args.join(" ")), &text(&out), &keys);
        }
    }

    // Errors about requests that carry a key: the key is not echoed, not even by a CLI
    // logging at trace level.
    let client_key = keys[2].clone();
    let near_miss = format!("{}A", &client_key[..42]);
    let clash = [
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
        "not-a-key",
        "--peer-port",
        "51820",
    ];
    let mut errors = Vec::new();
    errors.push(cli_traced(&nb, &clash));
    let mut bad_pubkey = clash.to_vec();
    bad_pubkey[6] = "tunnel_two";
    bad_pubkey[4] = "10.0.1.1";
    bad_pubkey[5] = "10.0.1.2";
    errors.push(cli_traced(&nb, &bad_pubkey));
    let mut malformed = bad_pubkey.clone();
    malformed[12] = &near_miss;
    malformed[14] = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    errors.push(cli_traced(&nb, &malformed));
    for out in &errors {
        assert!(!out.status.success(), "refused: {}", text(out));
        assert_no_key("an error", &text(out), &keys);
        assert!(!text(out).contains(&near_miss), "{}", text(out));
    }
    // A config edited by hand with a broken key: the reload error names the key path,
    // not its value.
    let good = nb.config_text();
    std::fs::write(nb.config(), good.replace(&client_key, &near_miss)).unwrap();
    let out = nb.cli(&["reload"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("private_key"), "{}", text(&out));
    assert!(!text(&out).contains(&near_miss), "{}", text(&out));
    // Made readable by the group: refused with the fix; the line keeps running.
    std::fs::write(nb.config(), &good).unwrap();
    std::fs::set_permissions(nb.config(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = nb.cli(&["reload"]);
    let refused = text(&out);
    assert!(
        !out.status.success() && refused.contains(&format!("chmod 600 {}", nb.config().display())),
        "{refused}"
    );
    assert_no_key("the permission error", &refused, &keys);
    std::fs::set_permissions(nb.config(), std::fs::Permissions::from_mode(0o600)).unwrap();
    b.run_ok(&["ping", "-c", "1", "-W", "2", "10.0.0.1"]);

    // SIGHUP and a full stop at trace level, then the whole logs.
    soak::signal(&da, libc::SIGHUP);
    std::thread::sleep(std::time::Duration::from_millis(500));
    soak::stop(&mut da);
    soak::stop(&mut db);
    let (log_a, log_b) = (da.log(), db.log());
    assert!(
        log_a.contains("TRACE") || log_a.contains("DEBUG"),
        "the daemon logged at trace level:\n{log_a}"
    );
    assert!(log_b.contains("control request"), "{log_b}");
    assert_no_key("A's trace log", &log_a, &keys);
    assert_no_key("B's trace log", &log_b, &keys);
}

/// Capability numbers (linux/capability.h).
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

fn cap_mask(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{hex:?}: {e}"))
}

#[test]
fn daemon_keeps_only_network_capabilities_manages_lines_with_them_and_exits_clean() {
    if !require_root_and_tools(&["ip", "ping", "env"]) {
        return;
    }
    let (a, b) = seed_pair("caps");
    let before_a = dump_state(&a);
    let before_b = dump_state(&b);
    let na = Node::new(&a);
    let nb = Node::new(&b);
    let mut da = spawn_daemon_with_env(&na, &[]);
    let mut db = spawn_daemon_with_env(&nb, &[]);

    let want = (1u64 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW) | (1 << CAP_NET_BIND_SERVICE);
    let check_caps = |pid: u32| {
        for field in ["CapEff", "CapPrm", "CapBnd"] {
            for (tid, value) in soak::thread_status(pid, field) {
                assert_eq!(
                    cap_mask(&value),
                    want,
                    "{field} of thread {tid} of the daemon: {value}"
                );
            }
        }
        for field in ["CapInh", "CapAmb"] {
            assert_eq!(cap_mask(&soak::proc_status(pid, field)), 0, "{field}");
        }
        assert_eq!(soak::proc_status(pid, "NoNewPrivs"), "1");
    };
    check_caps(da.id());

    // Everything a daemon does later, with those capabilities only: WireGuard lines
    // (TUN, UDP, netlink), a line on a line, a GRE line (raw socket), reload, delete.
    na.cli_ok(SERVER_CREATE);
    nb.paste(&na.cli_ok(&["line", "show-peer", "tunnel_base"]), "eth0");
    na.wait_state("tunnel_base", "up", 10);
    create_and_paste(&na, &nb, SECURE_CREATE, "tunnel_base");
    create_and_paste(&na, &nb, GRE_CREATE, "eth0");
    na.wait_state("tunnel_secure", "up", 15);
    for dst in ["10.0.0.2", "172.16.0.2", "10.9.0.2"] {
        a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", dst]);
    }
    let reloaded = na.cli_ok(&["reload"]);
    assert!(
        reloaded.contains("0 line(s) stopped, 0 started"),
        "{reloaded}"
    );
    soak::signal(&da, libc::SIGHUP);
    na.cli_ok(&["line", "delete", "gre1"]);
    nb.cli_ok(&["line", "delete", "gre1"]);
    na.cli_ok(&[
        "line",
        "create",
        "eth0",
        "198.51.100.20",
        "10.9.0.2",
        "10.9.0.1",
        "ipip1",
        "--type",
        "ipip",
    ]);
    nb.paste(&na.cli_ok(&["line", "show-peer", "ipip1"]), "eth0");
    a.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.9.0.2"]);
    a.run_ok(&["ping", "-c", "1", "-W", "2", "172.16.0.2"]);
    check_caps(da.id());
    check_caps(db.id());
    assert!(
        da.log()
            .contains("kept=CAP_NET_ADMIN,CAP_NET_BIND_SERVICE,CAP_NET_RAW"),
        "{}",
        da.log()
    );

    // SIGTERM with a nested WireGuard line and a raw-tunnel line up: both hosts as before.
    soak::stop(&mut da);
    soak::stop(&mut db);
    assert_eq!(dump_state(&a), before_a, "A after SIGTERM");
    assert_eq!(dump_state(&b), before_b, "B after SIGTERM");
}
