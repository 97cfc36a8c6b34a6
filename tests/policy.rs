//! Policy groups and the default exit on a real host: `ip route get` says each prefix
//! leaves through the line its group names; `policy revoke`, `apply`, `delete` and
//! `unset-default` undo exactly what they did; SIGTERM leaves the host as it was found
//! (the multipath hash setting too); a crashed daemon's rules are replaced, not
//! doubled; `line check` and `status` report loss, latency and score; every bad input
//! is one line on stderr and changes neither the config file nor the host.

mod common;

use common::node::{create_and_paste, seed_pair, Node, GRE_CREATE, SERVER_CREATE};
use common::{dump_state, require_root_and_tools};

/// A WireGuard line `tunnel_base` (A server, B client) and a GRE line `gre1`, both up.
fn lines(na: &Node, nb: &Node) {
    create_and_paste(na, nb, SERVER_CREATE, "eth0");
    create_and_paste(na, nb, GRE_CREATE, "eth0");
    na.wait_state("tunnel_base", "up", 15);
    na.wait_state("gre1", "up", 15);
}

/// The device `ip route get <args>` names, or `unreachable` when the host refuses.
fn dev_for(node: &Node, args: &[&str]) -> String {
    let mut full = vec!["ip", "route", "get"];
    full.extend_from_slice(args);
    let out = node.ns.exec(&full);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return "unreachable".into();
    }
    text.split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .unwrap_or_else(|| panic!("no dev in `ip route get {args:?}`: {text}"))
        .to_string()
}

/// Waits (up to 5 s) until `ip route get dst` names `dev`.
fn wait_dev(node: &Node, dst: &str, dev: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while dev_for(node, &[dst]) != dev {
        assert!(
            std::time::Instant::now() < deadline,
            "{dst} not through {dev}:\n{}",
            node.cli_ok(&["status"])
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Rules and routes (all tables, both families), sorted, without the random
/// link-local addresses of TUN devices, which are new with each device.
fn rules_and_routes(node: &Node) -> Vec<String> {
    let mut out: Vec<String> = ["-4", "-6"]
        .iter()
        .flat_map(|f| {
            let routes = node.ns.ip(&[f, "route", "show", "table", "all"]);
            let rules = node.ns.ip(&[f, "rule"]);
            format!("{routes}{rules}")
                .lines()
                .filter(|l| !l.contains("fe80"))
                .map(|l| format!("{f} {l}"))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

fn sysctl(node: &Node, path: &str) -> String {
    node.ns.run_ok(&["cat", path]).trim().to_string()
}

const HASH: &str = "/proc/sys/net/ipv4/fib_multipath_hash_policy";
/// An ESP key for the encrypted line (both keys; a test's own, never a real one).
const ENC_KEY: &str = "0x00112233445566778899aabbccddeeff";

#[test]
fn groups_and_the_default_exit_route_their_prefixes_and_every_undo_is_exact() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, b) = seed_pair("pol");
    let mut na = Node::start(&a);
    let nb = Node::start(&b);
    let found = dump_state(&a);
    let hash_found = sysctl(&na, HASH);
    lines(&na, &nb);
    let with_lines = dump_state(&a);
    let routes_with_lines = rules_and_routes(&na);

    na.cli_ok(&["policy", "create", "asia", "tunnel_base,gre1"]);
    na.cli_ok(&["policy", "add", "asia", "192.0.2.0/24", "2001:db8:a::/48"]);
    na.cli_ok(&["policy", "create", "lab", "gre1", "--from", "203.0.113.10"]);
    na.cli_ok(&["policy", "add", "lab", "198.18.0.0/15"]);
    na.cli_ok(&["policy", "create", "spread", "tunnel_base:2,gre1:1"]);
    na.cli_ok(&["policy", "add", "spread", "100.64.0.0/10"]);
    na.cli_ok(&["policy", "default", "gre1"]);

    assert_eq!(dev_for(&na, &["192.0.2.5"]), "tunnel_base");
    assert_eq!(dev_for(&na, &["2001:db8:a::1"]), "tunnel_base");
    assert_eq!(
        dev_for(&na, &["198.18.0.5", "from", "203.0.113.10"]),
        "gre1"
    );
    // The default exit takes what no group takes, the underlay peer stays protected,
    // the VIPs stay in table 80.
    assert_eq!(dev_for(&na, &["8.8.8.8"]), "gre1");
    assert_eq!(dev_for(&na, &["198.51.100.20"]), "eth0");
    assert_eq!(dev_for(&na, &["10.0.0.2"]), "tunnel_base");
    let rules = na.ns.ip(&["rule"]);
    for pref in ["100:", "101:", "102:", "900:"] {
        assert!(
            rules
                .lines()
                .any(|l| l.starts_with(pref) && l.contains("proto 116")),
            "{rules}"
        );
    }
    assert!(
        rules.contains("101:\tfrom 203.0.113.10 lookup 101"),
        "{rules}"
    );
    // Under every destination's route, a fallback that refuses rather than leaks while
    // the exit's device is gone (a line restarting).
    let asia = na.ns.ip(&["route", "show", "table", "100"]);
    assert!(
        asia.contains("unreachable 192.0.2.0/24 proto 116 metric 4294967295"),
        "{asia}"
    );
    let spread = na.ns.ip(&["route", "show", "table", "102"]);
    assert!(
        spread.contains("nexthop dev tunnel_base weight 40")
            && spread.contains("nexthop dev gre1 weight 20"),
        "{spread}"
    );
    assert_eq!(
        sysctl(&na, HASH),
        "1",
        "balancing hashes flows, not host pairs"
    );

    // Revoked: off the host, still in the config.
    na.cli_ok(&["policy", "revoke"]);
    assert_eq!(dump_state(&a), with_lines);
    assert!(na.config_text().contains("applied = false"));
    assert_eq!(sysctl(&na, HASH), hash_found);
    na.cli_ok(&["policy", "apply"]);
    assert_eq!(dev_for(&na, &["192.0.2.5"]), "tunnel_base");
    na.cli_ok(&["policy", "revoke", "asia"]);
    assert_eq!(
        dev_for(&na, &["192.0.2.5"]),
        "gre1",
        "the default exit takes it now"
    );
    na.cli_ok(&["policy", "apply", "asia"]);
    assert_eq!(dev_for(&na, &["192.0.2.5"]), "tunnel_base");

    // SIGTERM: the host as found, the multipath hash too; a restart puts it all back.
    na.stop_daemon();
    assert_eq!(dump_state(&a), found);
    assert_eq!(sysctl(&na, HASH), hash_found);
    na.start_daemon();
    // gre1 is up at once, tunnel_base once B's client has a session again: the group
    // starts on gre1 and fails back to its first exit.
    na.wait_state("tunnel_base", "up", 15);
    wait_dev(&na, "192.0.2.5", "tunnel_base");

    for cmd in [
        &["policy", "delete", "asia"][..],
        &["policy", "delete", "lab"],
        &["policy", "delete", "spread"],
        &["policy", "unset-default"],
    ] {
        na.cli_ok(cmd);
    }
    // (The restart made new TUN devices: compare what does not name their index.)
    assert_eq!(rules_and_routes(&na), routes_with_lines);
    assert!(!na.config_text().contains("[[policy]]"));
}

#[test]
fn a_killed_daemons_policy_rules_are_replaced_not_doubled() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, b) = seed_pair("polk");
    let mut na = Node::start(&a);
    let nb = Node::start(&b);
    lines(&na, &nb);
    na.cli_ok(&["policy", "create", "asia", "gre1"]);
    na.cli_ok(&["policy", "add", "asia", "192.0.2.0/24"]);
    na.cli_ok(&["policy", "default", "tunnel_base"]);
    let before = rules_and_routes(&na);
    na.kill_daemon();
    // The rules stay behind (the routes went with the devices).
    assert!(na.ns.ip(&["rule"]).contains("100:"));
    na.start_daemon();
    na.wait_state("tunnel_base", "up", 15);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while rules_and_routes(&na) != before {
        assert!(
            std::time::Instant::now() < deadline,
            "after the restart:\n{:#?}\nbefore the kill:\n{before:#?}",
            rules_and_routes(&na)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(na
        .log()
        .contains("removed routes and rules left by a previous twnode run"));
}

#[test]
fn line_check_and_status_report_loss_latency_and_score() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, b) = seed_pair("polc");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    lines(&na, &nb);
    let text = na.cli_ok(&["line", "check"]);
    for line in ["tunnel_base", "gre1"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(line) && l.contains("score 100") && l.contains("loss 0%")),
            "{text}"
        );
    }
    // Probes go through GRE over ESP too (once the two ends agreed on an epoch).
    create_and_paste(
        &na,
        &nb,
        &[
            "line",
            "create",
            "eth0",
            "198.51.100.20",
            "10.9.1.2",
            "10.9.1.1",
            "sec1",
            "--type",
            "ipsec",
            "--enc-key",
            ENC_KEY,
            "--auth-key",
            ENC_KEY,
        ],
        "eth0",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = na.cli_ok(&["line", "check", "sec1"]);
        if text.contains("score 100") && text.contains("loss 0%") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
    }
    // A target nobody answers: all lost.
    let json: serde_json::Value = serde_json::from_str(&na.cli_ok(&[
        "line",
        "check",
        "gre1",
        "10.9.0.2,192.0.2.99",
        "--json",
    ]))
    .expect("json");
    let targets = json[0]["targets"].as_array().expect("targets");
    assert_eq!(targets[0]["loss_percent"], 0.0, "{json:#}");
    assert!(targets[0]["latency_ms"].as_f64().expect("latency") < 100.0);
    assert_eq!(targets[1]["loss_percent"], 100.0, "{json:#}");
    assert_eq!(targets[1]["score"], 0.0);

    na.cli_ok(&["policy", "create", "asia", "gre1,tunnel_base"]);
    na.cli_ok(&["line", "set-cost", "tunnel_base", "10"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let status: serde_json::Value =
        serde_json::from_str(&na.cli_ok(&["status", "--json"])).expect("json");
    let group = &status["policy"]["groups"][0];
    assert_eq!(group["exits"][0]["active"], true, "{status:#}");
    assert_eq!(
        group["exits"][1]["health"]["score"], 95.0,
        "cost 10: 5 points off"
    );
    let base = status["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["line"]["name"] == "tunnel_base")
        .expect("tunnel_base");
    assert_eq!(base["cost"], 10);
    assert_eq!(base["health"][0]["target"], "10.0.0.2");
    let text = na.cli_ok(&["status"]);
    assert!(
        text.contains("* gre1") && text.contains("asia: - -> gre1: first choice"),
        "{text}"
    );

    // Someone removes the group's rule and route: put back within a pass.
    na.cli_ok(&["policy", "add", "asia", "192.0.2.0/24"]);
    assert_eq!(dev_for(&na, &["192.0.2.5"]), "gre1");
    na.ns.ip(&["rule", "del", "pref", "100"]);
    na.ns.ip(&[
        "route",
        "del",
        "192.0.2.0/24",
        "table",
        "100",
        "dev",
        "gre1",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while dev_for(&na, &["192.0.2.5"]) != "gre1" {
        assert!(
            std::time::Instant::now() < deadline,
            "not put back:\n{}",
            na.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(na.log().contains("was removed by someone else; put back"));
}

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let (a, b) = seed_pair("polb");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    lines(&na, &nb);
    na.cli_ok(&["policy", "create", "asia", "gre1", "--priority", "150"]);
    na.cli_ok(&["policy", "add", "asia", "192.0.2.0/24"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "# two prefixes\n198.18.0.0/15\n10.0.0.1/8\n").expect("write");
    let file = na.config_text();
    let host = dump_state(&a);
    let cases: &[(&[&str], &str)] = &[
        (
            &["policy", "create", "x", "nope"],
            "nope is not a line of this node",
        ),
        (
            &["policy", "create", "x", "gre1", "--priority", "99"],
            "priority 99 is out of range 100-899",
        ),
        (
            &["policy", "create", "x", "gre1", "--priority", "150"],
            "priority 150 is taken by group asia",
        ),
        (
            &["policy", "create", "asia", "gre1"],
            "a policy group named asia already exists",
        ),
        (
            &["policy", "add", "asia", "192.0.2.300/24"],
            "is not a CIDR",
        ),
        (
            &["policy", "add", "asia", "10.0.0.1/8"],
            "did you mean 10.0.0.0/8?",
        ),
        (
            &["policy", "add", "asia", "198.51.100.0/24"],
            "covers 198.51.100.20, the underlay peer of exit gre1",
        ),
        (
            &["policy", "import", "asia", list.to_str().expect("path")],
            "list.txt:3: ",
        ),
        (
            &["policy", "add", "nope", "10.0.0.0/8"],
            "no policy group named \"nope\"",
        ),
        (
            &["policy", "set-priority", "asia", "900"],
            "priority 900 is out of range",
        ),
        (
            &["policy", "failover", "asia", "gre1,nope"],
            "nope is not a line of this node",
        ),
        (
            &["policy", "failover", "asia", "gre1,gre1"],
            "exit gre1 is listed twice",
        ),
        (&["policy", "unset-default"], "no default exit is set"),
        (
            &["policy", "create", "x", "gre1", "--from", "10.0.0.1/8"],
            "did you mean 10.0.0.0/8?",
        ),
        (
            &["line", "delete", "gre1"],
            "policy groups use gre1 (group asia) as an exit",
        ),
        (
            &["line", "delete", "gre1", "--force"],
            "policy group asia has no other exit",
        ),
        (
            &["line", "set-cost", "gre1", "101"],
            "cost 101 of line gre1 is out of range 0-100",
        ),
        (&["line", "set-cost", "nope", "1"], "no line named \"nope\""),
        (&["line", "check", "nope"], "no line named \"nope\""),
    ];
    for (args, want) in cases {
        let out = na.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.starts_with("twnode: ") && stderr.contains(want),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert_eq!(na.config_text(), file, "{args:?} changed the config");
        assert_eq!(dump_state(&a), host, "{args:?} changed the host");
    }
}
