//! The files in `packaging/` stay usable: the example config loads with the daemon's own
//! parser and shows every key the parser accepts; systemd accepts the unit file.
//!
//! Neither test needs root or a network namespace. The unit test needs
//! `systemd-analyze`: without it, it says SKIPPED loudly, or fails under `CI=true`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use twnode::config::policy::{RawDefaultExit, RawFailover, RawGroup};
use twnode::config::raw::{IntOrText, RawConfig, RawIpTunnel, RawLine, RawWireGuard};
use twnode::config::{self, Mode, PrivateKey};

const INSTALLED_BINARY: &str = "/usr/local/bin/twnode";

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

#[test]
fn example_config_parses_and_validates() {
    let path = packaging("twnode.toml.example");
    let config = config::parse(&read(&path), &path).unwrap_or_else(|err| panic!("{err}"));

    let names: Vec<&str> = config.lines.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["tunnel_base", "tunnel_secure", "gre_backup", "gre_secure"]
    );
    let base = config.line("tunnel_base").expect("tunnel_base");
    let secure = config.line("tunnel_secure").expect("tunnel_secure");
    assert_eq!(base.parent.as_str(), "eth0");
    assert_eq!(secure.parent.as_str(), "tunnel_base");
    assert_eq!(
        config.depth("tunnel_secure"),
        1,
        "the second line is nested"
    );
    // The nested line dials its server through the first line: at its peer VIP.
    assert_eq!(secure.peer_ip, base.peer_vip);

    let server = base.wireguard().expect("tunnel_base is a WireGuard line");
    let client = secure
        .wireguard()
        .expect("tunnel_secure is a WireGuard line");
    assert_eq!(server.mode, Mode::Server);
    assert_eq!(client.mode, Mode::Client);
    // What `line show-peer` prints must be the client half of this very line.
    let peer_private = server
        .peer_private_key
        .as_ref()
        .expect("the server line keeps its client's key");
    assert_eq!(peer_private.public_key(), server.peer_public_key);
}

/// Every key the parser accepts, as `line.KEY` and `line.TABLE.KEY`. Built from a
/// raw config with every optional field set: a field added to the raw structs breaks
/// this struct literal, which is the reminder to document it in the example.
fn every_key() -> BTreeSet<String> {
    let key = PrivateKey::generate();
    let ip: IpAddr = "192.0.2.1".parse().expect("address");
    let raw = RawConfig {
        lines: vec![RawLine {
            name: "n".into(),
            parent: "p".into(),
            peer_ip: ip,
            peer_vip: ip,
            local_vip: ip,
            kind: "wireguard".into(),
            mtu: Some(1420),
            wireguard: Some(RawWireGuard {
                mode: "server".into(),
                listen_port: Some(1),
                peer_port: Some(1),
                private_key: key.clone(),
                peer_public_key: key.public_key(),
                peer_private_key: Some(key),
                persistent_keepalive: Some(1),
                preshared_key: Some(twnode::tunnel::keys::PresharedKey::generate()),
                allowed_ips: vec!["192.0.2.0/24".into()],
            }),
            ip_tunnel: Some(RawIpTunnel {
                ikey: Some(IntOrText::Int(1)),
                okey: Some(IntOrText::Int(1)),
                iseq: true,
                oseq: true,
                icsum: true,
                ocsum: true,
                ttl: Some(IntOrText::Int(64)),
                tos: Some(IntOrText::Text("inherit".into())),
                pmtudisc: Some(true),
                keepalive: Some(10),
                keepalive_retries: Some(3),
                encrypt: true,
                cipher: Some("aes-256-gcm".into()),
                enc_key: Some(
                    twnode::config::esp::EspKey::parse("0x00112233445566778899aabbccddeeff")
                        .expect("key"),
                ),
                auth_key: Some(
                    twnode::config::esp::EspKey::parse("0x00112233445566778899aabbccddeeff")
                        .expect("key"),
                ),
                esp_keying: Some("epoch".into()),
                esp_rekey: Some(3600),
                af_xdp: true,
            }),
        }],
        groups: vec![RawGroup {
            name: "g".into(),
            exits: vec!["n".into()],
            from: Some("all".into()),
            priority: 100,
            cidrs: vec!["192.0.2.0/24".into()],
            applied: false,
            targets: vec![ip],
        }],
        default_exit: Some(RawDefaultExit {
            exits: vec!["n".into()],
            applied: false,
            targets: vec![ip],
        }),
        failover: Some(RawFailover {
            interval_ms: Some(100),
            timeout_ms: Some(250),
            lost_probes: Some(3),
            window: Some(20),
            threshold: Some(5),
            confirmations: Some(3),
            cost: [("n".to_string(), 10)].into_iter().collect(),
        }),
        metrics: None,
    };
    let text = toml::to_string(&raw).expect("a raw config serializes");
    keys_of(&text)
}

/// The `line.KEY` and `line.TABLE.KEY` paths that some `[[line]]` of `text` sets, the
/// `policy.KEY` paths of its `[[policy]]` groups, and `default_exit.KEY`, `failover.KEY`
/// (`failover.cost` is a table of line names: its own key is what counts).
fn keys_of(text: &str) -> BTreeSet<String> {
    let value: toml::Table = toml::from_str(text).expect("TOML");
    let mut keys = BTreeSet::new();
    let lines = value
        .get("line")
        .and_then(toml::Value::as_array)
        .expect("[[line]] tables");
    for line in lines.iter().filter_map(toml::Value::as_table) {
        for (key, value) in line {
            match value.as_table() {
                Some(table) => keys.extend(table.keys().map(|k| format!("line.{key}.{k}"))),
                None => {
                    keys.insert(format!("line.{key}"));
                }
            }
        }
    }
    let groups = value.get("policy").and_then(toml::Value::as_array);
    for group in groups
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
    {
        keys.extend(group.keys().map(|k| format!("policy.{k}")));
    }
    for table in ["default_exit", "failover"] {
        if let Some(t) = value.get(table).and_then(toml::Value::as_table) {
            keys.extend(t.keys().map(|k| format!("{table}.{k}")));
        }
    }
    keys
}

#[test]
fn example_config_shows_every_key() {
    let shown = keys_of(&read(&packaging("twnode.toml.example")));
    let missing: Vec<String> = every_key().difference(&shown).cloned().collect();
    assert!(
        missing.is_empty(),
        "packaging/twnode.toml.example never sets {missing:?}; add them, with a comment"
    );
}

/// True when `tool` is on PATH. Otherwise prints a loud SKIPPED line and returns false,
/// or panics under `CI=true` (a CI run must never pass by skipping).
fn require_tool(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()));
    if found {
        return true;
    }
    let reason = format!("`{tool}` is not on PATH; install the `{package}` package");
    let ci = std::env::var("CI")
        .map(|value| value.eq_ignore_ascii_case("true") || value == "1")
        .unwrap_or(false);
    if ci {
        panic!("{reason}; CI=true, so this is a failure, not a skip");
    }
    // Straight to fd 2: libtest swallows the output of tests that pass.
    let _ = writeln!(
        std::io::stderr(),
        "\n**********\nSKIPPED: systemd_accepts_the_unit_file: {reason}\n**********\n"
    );
    false
}

#[test]
fn systemd_accepts_the_unit_file() {
    if !require_tool("systemd-analyze", "systemd") {
        return;
    }
    let unit = read(&packaging("twnode.service"));
    for directive in [
        "Type=notify",
        "ExecStart=/usr/local/bin/twnode daemon",
        "ExecStartPre=+/usr/local/bin/twnode init",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
    ] {
        assert!(
            unit.lines().any(|line| line.trim() == directive),
            "packaging/twnode.service lost `{directive}`"
        );
    }
    // systemd-analyze checks that every Exec* binary exists: point them at the one just
    // built.
    let built = env!("CARGO_BIN_EXE_twnode");
    let rewritten = unit.replace(INSTALLED_BINARY, built);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("twnode.service");
    std::fs::write(&path, rewritten).expect("write the unit");

    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "systemd-analyze verify {} failed ({}):\n{stderr}",
        path.display(),
        output.status
    );
    // Unknown keys and bad values are only warnings (exit 0): refuse them too.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("twnode.service") || line.contains(built))
        .collect();
    assert!(
        warnings.is_empty(),
        "systemd-analyze warns about the unit:\n{}",
        warnings.join("\n")
    );
}
