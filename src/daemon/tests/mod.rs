//! The supervisor against an in-memory host and data plane ([`fake`]): reconcile
//! order and retries, rollback of a failed create, shared rules, restart back-off
//! with a driven clock, and shutdown order. No root, no devices.

mod fake;
mod policy;
mod repair;
mod uapi;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::supervisor::Supervisor;
use crate::config::{self, LineName};
use crate::control::{IpTunnelArgs, LineSpec, LineState, Request, Response};
use crate::net::{Family, Rule, MAIN_TABLE, PROTECT_RULE_PREF, VIP_RULE_PREF, VIP_TABLE};
use fake::{FakeDataplane, FakeHost, Shared, World};

pub(super) type Sup = Supervisor<FakeHost, FakeDataplane>;

/// A gre line `a` on eth0, and an ipip line `b` over it (listed first: the file's order
/// is not the bring-up order).
pub(super) const STACK: &str = r#"
[[line]]
name = "b"
parent = "a"
peer_ip = "10.0.0.2"
peer_vip = "10.1.0.2"
local_vip = "10.1.0.1"
type = "ipip"

[[line]]
name = "a"
parent = "eth0"
peer_ip = "192.0.2.2"
peer_vip = "10.0.0.2"
local_vip = "10.0.0.1"
type = "gre"
"#;

/// A line whose parent interface is not there yet.
pub(super) const LATE: &str = r#"
[[line]]
name = "c"
parent = "eth1"
peer_ip = "198.51.100.2"
peer_vip = "10.2.0.2"
local_vip = "10.2.0.1"
type = "gre"
"#;

/// A second line to a's peer: it shares a's protection rule and the VIP rule.
pub(super) const TWIN: &str = r#"
[[line]]
name = "e"
parent = "eth0"
peer_ip = "192.0.2.2"
peer_vip = "10.3.0.2"
local_vip = "10.3.0.1"
type = "ipip"
"#;

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

pub(super) fn name(s: &str) -> LineName {
    s.parse().expect("a line name")
}

/// The host with eth0 (192.0.2.1, MTU 1500), a config file holding `toml`, and a
/// supervisor for them; the directory lives as long as the returned guard.
pub(super) fn setup(toml: &str) -> (Sup, Shared, PathBuf, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("twnode.toml");
    std::fs::write(&path, toml).expect("config written");
    // Private, as a config holding keys must be.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let config = config::load(&path).expect("the test config loads");
    let shared = Shared::default();
    shared.world().add_link("eth0", 1500, &[ip("192.0.2.1")]);
    let sup = Supervisor::new(
        FakeHost(shared.clone()),
        FakeDataplane(shared.clone()),
        path.clone(),
        config,
    )
    .with_state_dir(dir.path().join("state"));
    (sup, shared, path, dir)
}

pub(super) fn position(log: &[String], entry: &str) -> usize {
    log.iter()
        .position(|e| e == entry)
        .unwrap_or_else(|| panic!("{entry:?} is not in the log {log:#?}"))
}

pub(super) fn vip_rule() -> Rule {
    Rule::from_all(Family::V4, VIP_RULE_PREF, VIP_TABLE)
}

pub(super) fn protect_rule(peer: &str, table: u32) -> Rule {
    Rule::to_prefix(PROTECT_RULE_PREF, ip(peer), 32, table)
}

#[tokio::test]
async fn reconcile_brings_parents_up_before_children_and_retries_a_line_whose_parent_appears_later()
{
    let (mut sup, shared, _, _dir) = setup(&format!("{STACK}{LATE}"));
    sup.reconcile().await;
    {
        let world = shared.world();
        assert!(position(&world.log, "start a") < position(&world.log, "start b"));
        // b's peer is a's far end: no relay route, and its protection rule points at
        // the VIP table, where a's route carries it.
        assert!(world.rules.contains(&protect_rule("10.0.0.2", VIP_TABLE)));
        assert!(world.rules.contains(&protect_rule("192.0.2.2", MAIN_TABLE)));
        assert!(!world.log.iter().any(|e| e.contains("start c")));
    }
    let states = sup.states();
    assert_eq!(states["a"], LineState::Up);
    assert_eq!(states["b"], LineState::Up);
    assert_eq!(states["c"], LineState::Down);
    let reason = &sup.failed[&name("c")].reason;
    assert!(
        reason.starts_with("parent interface eth1 does not exist on this host"),
        "{reason}"
    );

    // Still missing: nothing changes.
    sup.reconcile().await;
    assert!(!sup.running.contains_key(&name("c")));

    shared.world().add_link("eth1", 1500, &[ip("198.51.100.1")]);
    sup.reconcile().await;
    assert!(sup.running.contains_key(&name("c")));
    assert!(!sup.failed.contains_key(&name("c")));
    assert_eq!(sup.states()["c"], LineState::Up);
    assert_eq!(sup.running[&name("c")].local_ip, ip("198.51.100.1"));
}

#[tokio::test]
async fn a_child_whose_parent_line_is_down_waits_for_it() {
    let (mut sup, shared, _, _dir) = setup(STACK);
    // a cannot come up: eth0 has no address toward its peer.
    shared.world().addrs.clear();
    sup.reconcile().await;
    assert!(sup.running.is_empty());
    assert!(sup.failed[&name("b")].parent_down);
    assert_eq!(sup.states()["b"], LineState::ParentDown);

    shared.world().addrs.push((101, ip("192.0.2.1")));
    sup.reconcile().await;
    assert_eq!(sup.running.len(), 2);
}

fn spec(name: &str, local_vip: &str, peer_vip: &str, peer_ip: &str) -> LineSpec {
    LineSpec {
        parent: "eth0".into(),
        peer_ip: ip(peer_ip),
        peer_vip: ip(peer_vip),
        local_vip: ip(local_vip),
        name: name.into(),
        kind: "gre".into(),
        mode: None,
        listen_port: None,
        peer_port: None,
        private_key: None,
        peer_pubkey: None,
        keepalive: None,
        mtu: None,
        keepalive_retries: None,
        ip_tunnel: IpTunnelArgs::default(),
        preshared_key: None,
    }
}

#[tokio::test]
async fn a_create_whose_rule_install_fails_midway_rolls_back_everything_and_keeps_the_config() {
    let (mut sup, shared, path, _dir) = setup(STACK);
    sup.reconcile().await;
    assert_eq!(sup.running.len(), 2);
    let file_before = std::fs::read(&path).expect("config file");
    let host_before = shared.world().snapshot();
    // An IPv6-over-IPv4 line: its address, its VIP route and a fresh IPv6 VIP rule go
    // in, then its protection rule is refused.
    let refused = protect_rule("203.0.113.2", MAIN_TABLE);
    shared.world().refuse_rule = Some(refused.clone());

    let answer = sup
        .handle(Request::CreateLine(Box::new(spec(
            "d",
            "fd00::1",
            "fd00::2",
            "203.0.113.2",
        ))))
        .await;

    let Response::Error { message } = answer else {
        panic!("the create was accepted: {answer:?}");
    };
    assert_eq!(message, World::refusal(&refused).to_string());
    let world = shared.world();
    for done in [
        "start d",
        "add addr fd00::1",
        "add route fd00::2/128 table 80",
        "add IPv6 rule pref 80 from all lookup 80",
    ] {
        position(&world.log, done);
    }
    // Undone, last first; the device's address went with the device.
    let undo = &world.log[position(&world.log, "add IPv6 rule pref 80 from all lookup 80") + 1..];
    assert_eq!(
        undo,
        [
            "del IPv6 rule pref 80 from all lookup 80",
            "del route fd00::2/128 table 80",
            "stop d"
        ]
    );
    assert_eq!(world.snapshot(), host_before);
    drop(world);
    assert_eq!(std::fs::read(&path).expect("config file"), file_before);
    assert_eq!(sup.configured(), 2);
    assert!(sup.config.line("d").is_none());
    assert_eq!(sup.rules.users(&vip_rule()), 2);
    // The failure is not remembered as a configured line's.
    assert!(!sup.failed.contains_key(&name("d")));
}

#[tokio::test]
async fn shared_rules_are_counted_and_a_rule_that_was_there_before_is_never_removed() {
    let (mut sup, shared, _, _dir) = setup(&format!("{STACK}{TWIN}"));
    // a's and e's protection rule is on the host already.
    let preexisting = protect_rule("192.0.2.2", MAIN_TABLE);
    shared.world().rules.push(preexisting.clone());
    sup.reconcile().await;
    assert_eq!(sup.running.len(), 3);
    assert_eq!(sup.rules.users(&vip_rule()), 3);
    assert_eq!(sup.rules.users(&preexisting), 2);
    assert!(!shared
        .world()
        .log
        .iter()
        .any(|e| e.contains("to 192.0.2.2/32")));

    let answer = sup
        .handle(Request::DeleteLine {
            force: false,
            name: "a".into(),
            cascade: true,
        })
        .await;
    assert!(
        matches!(&answer, Response::Deleted { names } if names == &["b", "a"]),
        "{answer:?}"
    );
    assert_eq!(sup.rules.users(&vip_rule()), 1);
    {
        let world = shared.world();
        assert!(world.rules.contains(&vip_rule()), "e still uses it");
        assert!(world.rules.contains(&preexisting));
        assert!(!world.rules.contains(&protect_rule("10.0.0.2", VIP_TABLE)));
    }

    let answer = sup
        .handle(Request::DeleteLine {
            force: false,
            name: "e".into(),
            cascade: false,
        })
        .await;
    assert!(matches!(answer, Response::Deleted { .. }), "{answer:?}");
    let world = shared.world();
    assert!(
        !world.rules.contains(&vip_rule()),
        "the last user removed it"
    );
    assert_eq!(world.rules, [preexisting]);
    assert!(!world.log.iter().any(|e| e.contains("to 192.0.2.2/32")));
    assert!(world.routes.is_empty());
}

#[tokio::test]
async fn a_line_whose_packet_path_keeps_stopping_is_restarted_after_0_4_8_16_32_and_60_seconds() {
    let (mut sup, shared, _, _dir) = setup(STACK);
    let a = name("a");
    let t0 = Instant::now();
    sup.reconcile_at(t0).await;
    assert_eq!(sup.running.len(), 2);

    // The first stop: restarted within the same pass (its child b keeps running).
    let mut now = t0 + Duration::from_secs(1);
    shared.world().stop_path("a");
    sup.reconcile_at(now).await;
    assert!(sup.running.contains_key(&a));
    assert_eq!(
        shared
            .world()
            .log
            .iter()
            .filter(|e| *e == "start a")
            .count(),
        2
    );

    for (count, delay) in [(2, 4), (3, 8), (4, 16), (5, 32), (6, 60), (7, 60)] {
        now += Duration::from_secs(1);
        shared.world().stop_path("a");
        sup.reconcile_at(now).await;
        assert!(!sup.running.contains_key(&a), "restart {count} waits");
        assert_eq!(
            sup.failed[&a].reason,
            format!(
                "line a outbound stopped after an internal error (a bug; the daemon's log \
                 has it); {count} times in a row; next try in {delay} s"
            )
        );
        sup.reconcile_at(now + Duration::from_secs(delay) - Duration::from_millis(1))
            .await;
        assert!(!sup.running.contains_key(&a), "restart {count} still waits");
        now += Duration::from_secs(delay);
        sup.reconcile_at(now).await;
        assert!(sup.running.contains_key(&a), "restart {count} came");
        assert!(sup.running.contains_key(&name("b")));
    }

    // A minute of running heals it: the next stop restarts it at once.
    now += Duration::from_secs(60);
    sup.reconcile_at(now).await;
    shared.world().stop_path("a");
    sup.reconcile_at(now).await;
    assert!(sup.running.contains_key(&a));
}

#[tokio::test]
async fn shutdown_removes_every_installed_object_children_first() {
    let (mut sup, shared, _, _dir) = setup(&format!("{STACK}{TWIN}"));
    let before = shared.world().snapshot();
    sup.reconcile().await;
    assert_eq!(sup.running.len(), 3);
    let installed = shared.world().log.len();

    sup.shutdown().await;

    assert!(sup.running.is_empty());
    let world = shared.world();
    assert_eq!(world.snapshot(), before);
    let teardown = &world.log[installed..];
    let stop_b = position(teardown, "stop b");
    for parents in [
        "del route 10.0.0.2/32 table 80",
        "del route 10.3.0.2/32 table 80",
        "stop a",
        "stop e",
    ] {
        assert!(
            stop_b < position(teardown, parents),
            "{parents} before the child b stopped: {teardown:#?}"
        );
    }
    assert!(position(teardown, "del route 10.1.0.2/32 table 80") < stop_b);
}

/// Issue 22, item 4: a reload whose lines cannot come up says which and why (and keeps
/// the new configuration, whose lines are retried every pass).
#[tokio::test]
async fn a_reload_reports_the_lines_it_started_that_did_not_come_up() {
    let (mut sup, _shared, path, _dir) = setup(STACK);
    sup.reconcile().await;
    assert_eq!(sup.running.len(), 2);
    let text = std::fs::read_to_string(&path).expect("config file");
    std::fs::write(
        &path,
        text.replace("parent = \"eth0\"", "parent = \"eht0\""),
    )
    .expect("config written");

    let answer = sup.handle(Request::Reload).await;

    let Response::Reloaded {
        stopped,
        started,
        not_up,
    } = answer
    else {
        panic!("{answer:?}");
    };
    assert_eq!(stopped, ["b", "a"]);
    assert!(started.is_empty(), "{started:?}");
    let names: Vec<&str> = not_up.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        not_up[0]
            .reason
            .starts_with("parent interface eht0 does not exist on this host"),
        "{not_up:?}"
    );
    assert_eq!(not_up[1].reason, "parent line a is not running");
    assert_eq!(
        sup.config.line("a").map(|l| l.parent.as_str()),
        Some("eht0")
    );

    // A reload where everything comes up reports nothing missing.
    std::fs::write(&path, text).expect("config written");
    let answer = sup.handle(Request::Reload).await;
    assert!(
        matches!(&answer, Response::Reloaded { started, not_up, .. }
            if started == &["a", "b"] && not_up.is_empty()),
        "{answer:?}"
    );
}

/// Issue 22, item 8: the peer command of a line on a line says that the peer's parent
/// is its own line (the far end of ours), and of a line on an interface, nothing.
#[tokio::test]
async fn a_child_lines_peer_command_names_the_parent_line() {
    let (mut sup, _shared, _, _dir) = setup(STACK);
    sup.reconcile().await;
    let peer = |r: Response| match r {
        Response::Peer(p) => p,
        other => panic!("{other:?}"),
    };
    let b = peer(sup.handle(Request::ShowPeer { name: "b".into() }).await);
    assert_eq!(
        b.parent_line,
        Some(crate::control::ParentLine {
            name: "a".into(),
            relay: false
        })
    );
    assert!(
        b.parent_hint().contains("its end of line a"),
        "{}",
        b.parent_hint()
    );
    let a = peer(sup.handle(Request::ShowPeer { name: "a".into() }).await);
    assert_eq!(a.parent_line, None);
}
