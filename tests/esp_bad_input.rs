//! Bad ESP input (issue 4) gets one clear `twnode: ` line and changes nothing: the
//! config file byte for byte, the daemon's lines and the host as they were. Keys never
//! show up in an error.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use common::node::{seed_pair, twnode_bin, Node};
use common::{dump_state, require_root_and_tools};

const ENC: &str = "0x9f8e7d6c5b4a39281716050403020100aabbccddeeff0011";
const AUTH: &str = "0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";
/// A good encrypted line `sec` from A (seed_pair) to B.
const SEC_CREATE: &[&str] = &[
    "line",
    "create",
    "eth0",
    "198.51.100.20",
    "10.0.0.2",
    "10.0.0.1",
    "sec",
    "--type",
    "ipsec",
    "--enc-key",
    ENC,
    "--auth-key",
    AUTH,
];

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
    for key in [ENC, AUTH] {
        assert!(
            !lines[0].contains(&key[2..12]),
            "the error shows a key: {stderr}"
        );
    }
    lines[0].to_string()
}

/// Runs `twnode daemon` in the foreground for the node's files; it must exit by itself
/// (a refused start), so it runs under `timeout`.
fn start_expecting_failure(node: &Node) -> Output {
    start_expecting_failure_with(node, &[])
}

/// [`start_expecting_failure`] with `extra` daemon arguments.
fn start_expecting_failure_with(node: &Node, extra: &[&str]) -> Output {
    let config = node.config();
    let socket = node.socket();
    let state = node.state_dir();
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    node.ns.exec(&args)
}

/// Config bytes and mode, the lines, the host.
fn snapshot(node: &Node) -> (Option<Vec<u8>>, Option<u32>, String, String) {
    let lines = node.cli_ok(&["line", "list", "--json"]);
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&lines)
        .expect("json")
        .as_array()
        .expect("array")
        .iter()
        .map(|l| format!("{} {} {}", l["name"], l["type"], l["options"]))
        .collect();
    (
        std::fs::read(node.config()).ok(),
        std::fs::metadata(node.config())
            .ok()
            .map(|m| m.permissions().mode() & 0o7777),
        names.join("\n"),
        dump_state(node.ns),
    )
}

#[test]
fn malformed_or_missing_esp_options_are_refused_naming_the_flag() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("besp");
    let node = Node::start(&a);
    // One good encrypted line, so "changes nothing" covers an existing one too.
    node.cli_ok(SEC_CREATE);
    let before = snapshot(&node);
    let create = |extra: &[&str]| {
        let mut args = vec![
            "line",
            "create",
            "eth0",
            "198.51.100.30",
            "10.0.3.2",
            "10.0.3.1",
            "sec2",
        ];
        args.extend_from_slice(extra);
        node.cli(&args)
    };
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--type", "gre", "--encrypt"],
            &["--enc-key", "--auth-key"],
        ),
        (
            &["--type", "gre", "--encrypt", "--enc-key", ENC],
            &["--auth-key"],
        ),
        (&["--type", "ipsec"], &["--enc-key", "--auth-key"]),
        (
            &[
                "--encrypt",
                "--enc-key",
                "0x9f8e7d6c5b4a39281716050403020100aabbccddeeff00zz",
                "--auth-key",
                AUTH,
            ],
            &["--enc-key", "'z'", "not a hex digit"],
        ),
        (
            &[
                "--encrypt",
                "--enc-key",
                ENC,
                "--auth-key",
                "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d",
            ],
            &["--auth-key", "is not hex", "0x"],
        ),
        (
            &[
                "--encrypt",
                "--enc-key",
                "my secret passphrase",
                "--auth-key",
                AUTH,
            ],
            &["--enc-key", "is not hex", "text keys are not accepted"],
        ),
        (
            &[
                "--encrypt",
                "--enc-key",
                "0x9f8e7d6c5b4a392817160504030201000",
                "--auth-key",
                AUTH,
            ],
            &["--enc-key", "even number"],
        ),
        (
            &["--encrypt", "--enc-key", "0x9f8e7d6c", "--auth-key", AUTH],
            &["--enc-key", "is 4 bytes", "16 to 64"],
        ),
        (
            &[
                "--type",
                "gre",
                "--enc-key",
                ENC,
                "--auth-key",
                AUTH,
                "--cipher",
                "aes-256-gcm",
            ],
            &["applies to encrypted lines only", "--encrypt"],
        ),
        (
            &["--type", "gre", "--auth-key", AUTH],
            &["--auth-key", "applies to encrypted lines only"],
        ),
        (
            &[
                "--encrypt",
                "--enc-key",
                ENC,
                "--auth-key",
                AUTH,
                "--cipher",
                "des-cbc",
            ],
            &["--cipher", "des-cbc", "chacha20-poly1305, aes-256-gcm"],
        ),
        (
            &[
                "--type",
                "ipip",
                "--encrypt",
                "--enc-key",
                ENC,
                "--auth-key",
                AUTH,
            ],
            &["--encrypt", "ipip cannot be encrypted", "gre"],
        ),
        (
            &[
                "--encrypt",
                "--enc-key",
                ENC,
                "--auth-key",
                AUTH,
                "--keepalive",
                "5",
            ],
            &["--encrypt", "keepalive"],
        ),
        (
            &[
                "--encrypt",
                "--enc-key",
                ENC,
                "--auth-key",
                AUTH,
                "--esp-keying",
                "ike",
            ],
            &["--esp-keying", "\"ike\"", "epoch, static"],
        ),
        (
            &[
                "--encrypt",
                "--enc-key",
                ENC,
                "--auth-key",
                AUTH,
                "--esp-keying",
                "static",
                "--esp-rekey",
                "60",
            ],
            &["--esp-rekey", "epoch keying only", "--esp-keying"],
        ),
        (
            &["--type", "gre", "--esp-keying", "static"],
            &["--esp-keying", "applies to encrypted lines only"],
        ),
        (
            &[
                "--type",
                "wireguard",
                "--mode",
                "server",
                "--listen-port",
                "51821",
                "--encrypt",
            ],
            &["--encrypt", "not to wireguard"],
        ),
    ];
    for (extra, needles) in cases {
        assert_refused(&create(extra), needles);
        assert_eq!(snapshot(&node), before, "after {extra:?}");
    }
    // A second encrypted line to the same peer on the same parent: its packets could
    // not be told apart from the first's.
    let out = node.cli(&[
        "line",
        "create",
        "eth0",
        "198.51.100.20",
        "10.0.4.2",
        "10.0.4.1",
        "sec3",
        "--type",
        "ipsec",
        "--enc-key",
        AUTH,
        "--auth-key",
        ENC,
    ]);
    assert_refused(&out, &["ESP", "198.51.100.20", "already receives"]);
    assert_eq!(snapshot(&node), before);
    // --xfrm on a line that is not encrypted, or on no line.
    assert_refused(
        &node.cli(&["line", "show", "nosuch", "--xfrm"]),
        &["no line named \"nosuch\""],
    );
    // --xfrm on a line with epoch keying (the default): a kernel cannot follow epochs.
    assert_refused(
        &node.cli(&["line", "show", "sec", "--xfrm"]),
        &["line sec", "epoch keying", "--esp-keying static"],
    );
}

#[test]
fn daemon_refuses_world_readable_config_with_esp_keys_and_malformed_toml_keys() {
    if !require_root_and_tools(&["ip", "timeout"]) {
        return;
    }
    let (a, _b) = seed_pair("bespc");
    let mut node = Node::new(&a);
    node.start_daemon();
    node.cli_ok(SEC_CREATE);
    node.stop_daemon();
    let text = node.config_text();
    let before_host = dump_state(&a);
    std::fs::set_permissions(node.config(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = start_expecting_failure(&node);
    let chmod = format!("chmod 600 {}", node.config().display());
    assert_refused(&out, &[&chmod, "0644", "ESP"]);
    assert_eq!(node.config_text(), text);
    assert_eq!(dump_state(&a), before_host);

    std::fs::set_permissions(node.config(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let bad = text.replace(
        &format!("enc_key = \"{ENC}\""),
        "enc_key = \"hunter2hunter2hunter2\"",
    );
    assert_ne!(bad, text, "{text}");
    std::fs::write(node.config(), &bad).unwrap();
    let out = start_expecting_failure(&node);
    assert_refused(&out, &["enc_key", "is not hex"]);
    assert_eq!(node.config_text(), bad);
    assert_eq!(dump_state(&a), before_host);
}

/// Issue 22, item 6: `type = "ipsec"` in the file means what `--type ipsec` means (gre
/// with ESP), and a file's missing ESP key is named by its key in the file, not by a
/// command-line flag.
#[test]
fn daemon_reads_type_ipsec_and_names_the_files_keys_when_one_is_missing() {
    if !require_root_and_tools(&["ip", "timeout"]) {
        return;
    }
    let (a, _b) = seed_pair("bespt");
    let mut node = Node::new(&a);
    let config = format!(
        "[[line]]\nname = \"sec\"\nparent = \"eth0\"\npeer_ip = \"198.51.100.20\"\n\
         peer_vip = \"10.0.0.2\"\nlocal_vip = \"10.0.0.1\"\ntype = \"ipsec\"\n\n\
         [line.ip_tunnel]\nenc_key = \"{ENC}\"\nauth_key = \"{AUTH}\"\n"
    );
    std::fs::write(node.config(), &config).unwrap();
    std::fs::set_permissions(node.config(), std::fs::Permissions::from_mode(0o600)).unwrap();
    node.start_daemon();
    let l: serde_json::Value =
        serde_json::from_str(&node.cli_ok(&["line", "show", "sec", "--json"])).expect("json");
    assert_eq!(l["type"], "gre", "{l}");
    let options = l["options"].to_string();
    assert!(options.contains("--encrypt"), "{l}");
    node.stop_daemon();

    let before_host = dump_state(&a);
    let bad = config.replace(&format!("auth_key = \"{AUTH}\"\n"), "");
    std::fs::write(node.config(), &bad).unwrap();
    let out = start_expecting_failure(&node);
    let line = assert_refused(
        &out,
        &["line[0] (\"sec\").ip_tunnel.auth_key", "ip_tunnel.enc_key"],
    );
    assert!(!line.contains("--"), "a file's error names no flag: {line}");
    assert_eq!(node.config_text(), bad);
    assert_eq!(dump_state(&a), before_host);
}

/// Issue 22, item 6: `line list` and `line show` say that an encrypted line is
/// encrypted; `--json` keeps `type` the encapsulation with `--encrypt` in its options.
#[test]
fn an_encrypted_line_is_listed_and_shown_as_encrypted() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, _b) = seed_pair("bespl");
    let node = Node::start(&a);
    node.cli_ok(SEC_CREATE);
    node.cli_ok(&[
        "line",
        "create",
        "eth0",
        "198.51.100.30",
        "10.0.3.2",
        "10.0.3.1",
        "plain",
        "--type",
        "gre",
    ]);
    let list = node.cli_ok(&["line", "list"]);
    let row = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in\n{list}"))
            .split_whitespace()
            .nth(2)
            .unwrap()
            .to_string()
    };
    assert_eq!(row("sec"), "GRE+ESP", "{list}");
    assert_eq!(row("plain"), "GRE", "{list}");
    let shown = node.cli_ok(&["line", "show", "sec"]);
    assert!(
        shown
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["type:", "gre+esp"]),
        "{shown}"
    );
    let l: serde_json::Value =
        serde_json::from_str(&node.cli_ok(&["line", "show", "sec", "--json"])).expect("json");
    assert_eq!(l["type"], "gre", "{l}");
    assert!(l["options"].to_string().contains("--encrypt"), "{l}");
}

/// `twnode daemon --esp-fresh-state LINE` is for static-keyed lines only: naming an
/// epoch-keyed line or no line refuses the start, saying why.
#[test]
fn esp_fresh_state_is_refused_for_lines_that_keep_no_state() {
    if !require_root_and_tools(&["ip", "timeout"]) {
        return;
    }
    let (a, _b) = seed_pair("besf");
    let mut node = Node::new(&a);
    node.start_daemon();
    node.cli_ok(SEC_CREATE);
    node.stop_daemon();
    let before_host = dump_state(&a);
    let out = start_expecting_failure_with(&node, &["--esp-fresh-state", "sec"]);
    assert_refused(
        &out,
        &[
            "--esp-fresh-state sec",
            "epoch keying",
            "--esp-keying static",
        ],
    );
    let out = start_expecting_failure_with(&node, &["--esp-fresh-state", "nosuch"]);
    assert_refused(&out, &["--esp-fresh-state nosuch", "no such line"]);
    assert_eq!(dump_state(&a), before_host);
}
