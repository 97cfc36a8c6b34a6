//! Policy groups against the in-memory host: what a group installs and what revoke,
//! apply and delete undo; failover, failback and balancing on a driven clock with
//! probes the fake lines answer (or not); make-before-break order in the log; bad input
//! changing nothing.

use std::time::{Duration, Instant};

use super::fake::Shared;
use super::{ip, name, position, setup, Sup};
use crate::config::policy::DEFAULT_EXIT_PRIORITY;
use crate::control::{PolicyRequest, Request, Response};
use crate::net::{Family, PolicyRoute, PolicyRule, RuleFrom, Via};

/// Three GRE lines on eth0 to three relays, a failover group over b1 and b2, and a
/// balancing group over all three.
const RELAYS: &str = r#"
[[line]]
name = "b1"
parent = "eth0"
peer_ip = "192.0.2.11"
peer_vip = "10.1.0.2"
local_vip = "10.1.0.1"
type = "gre"

[[line]]
name = "b2"
parent = "eth0"
peer_ip = "192.0.2.12"
peer_vip = "10.2.0.2"
local_vip = "10.2.0.1"
type = "gre"

[[line]]
name = "b3"
parent = "eth0"
peer_ip = "192.0.2.13"
peer_vip = "10.3.0.2"
local_vip = "10.3.0.1"
type = "gre"
"#;

const FAILOVER: &str = r#"
[[policy]]
name = "g"
exits = ["b1", "b2"]
priority = 100
cidrs = ["198.18.0.0/15", "2001:db8:9::/48"]
"#;

const BALANCE: &str = r#"
[[policy]]
name = "spread"
exits = ["b1:2", "b2:1", "b3:1"]
priority = 120
cidrs = ["203.0.113.0/24"]
"#;

const STEP: Duration = Duration::from_millis(100);

fn ifindex(sup: &Sup, line: &str) -> u32 {
    use crate::dataplane::RunningLine;
    sup.running[&name(line)].dataplane.ifindex()
}

fn route_of(shared: &Shared, dst: &str, table: u32) -> Option<PolicyRoute> {
    shared
        .world()
        .policy_routes
        .iter()
        .find(|r| r.dst == ip(dst) && r.table == table && r.metric == 0)
        .cloned()
}

fn via(shared: &Shared, dst: &str, table: u32) -> Via {
    route_of(shared, dst, table)
        .unwrap_or_else(|| panic!("no route to {dst} in table {table}"))
        .via
}

/// Runs `n` probe intervals from `*t`.
async fn ticks(sup: &mut Sup, t: &mut Instant, n: usize) {
    for _ in 0..n {
        sup.policy_tick(*t).await;
        *t += STEP;
    }
}

/// Ticks until `done` holds; returns how many it took (panics after `max`).
async fn ticks_until(
    sup: &mut Sup,
    shared: &Shared,
    t: &mut Instant,
    max: usize,
    done: impl Fn(&Shared) -> bool,
) -> usize {
    for n in 1..=max {
        sup.policy_tick(*t).await;
        *t += STEP;
        if done(shared) {
            return n;
        }
    }
    panic!(
        "not done after {max} intervals:\n{}",
        shared.world().snapshot()
    );
}

async fn ask(sup: &mut Sup, p: PolicyRequest) -> Response {
    sup.handle(Request::Policy(p)).await
}

#[tokio::test]
async fn a_group_routes_its_destinations_through_its_first_exit_and_revoke_apply_delete_undo_it() {
    let (mut sup, shared, path, _dir) = setup(&format!("{RELAYS}{FAILOVER}"));
    sup.reconcile().await;
    let b1 = ifindex(&sup, "b1");
    assert_eq!(via(&shared, "198.18.0.0", 100), Via::Dev(b1));
    assert_eq!(via(&shared, "2001:db8:9::", 100), Via::Dev(b1));
    let rule = |family| PolicyRule {
        pref: 100,
        family,
        from: RuleFrom::All,
        table: 100,
        suppress_default: false,
    };
    assert_eq!(
        shared.world().policy_rules,
        [rule(Family::V4), rule(Family::V6)]
    );

    let answer = ask(
        &mut sup,
        PolicyRequest::Revoke {
            group: Some("g".into()),
        },
    )
    .await;
    assert!(matches!(answer, Response::Done { .. }), "{answer:?}");
    {
        let world = shared.world();
        assert!(world.policy_routes.is_empty() && world.policy_rules.is_empty());
        // The rules went before the routes: no packet meets an empty table.
        let revoked =
            &world.log[position(&world.log, "del IPv4 rule pref 100 from all lookup 100")..];
        assert!(revoked
            .iter()
            .any(|e| e == "del route 198.18.0.0/15 table 100"));
    }
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("applied = false"));

    ask(&mut sup, PolicyRequest::Apply { group: None }).await;
    assert_eq!(via(&shared, "198.18.0.0", 100), Via::Dev(b1));

    ask(&mut sup, PolicyRequest::Delete { group: "g".into() }).await;
    let world = shared.world();
    assert!(world.policy_routes.is_empty() && world.policy_rules.is_empty());
    assert!(!std::fs::read_to_string(&path)
        .unwrap()
        .contains("[[policy]]"));
}

#[tokio::test]
async fn a_dead_exit_is_left_within_half_a_second_and_taken_back_once_healthy_without_flapping() {
    let (mut sup, shared, _, _dir) = setup(&format!("{RELAYS}{FAILOVER}"));
    sup.reconcile().await;
    let (b1, b2) = (ifindex(&sup, "b1"), ifindex(&sup, "b2"));
    let mut t = Instant::now();
    ticks(&mut sup, &mut t, 30).await;
    assert_eq!(via(&shared, "198.18.0.0", 100), Via::Dev(b1));

    shared.world().silent.insert("b1".into());
    let n = ticks_until(&mut sup, &shared, &mut t, 20, |s| {
        via(s, "198.18.0.0", 100) == Via::Dev(b2)
    })
    .await;
    // Probes 100 ms apart, lost after 250 ms, three in a row.
    assert!(n <= 6, "took {n} intervals");
    let event = sup.policy.events.back().unwrap().clone();
    assert_eq!(
        (event.from.as_slice(), event.to.as_slice()),
        (&["b1".to_string()][..], &["b2".to_string()][..])
    );
    assert_eq!(event.reason, "b1 lost its last 3 probes");

    // Back: its window still holds the losses, so it waits, then takes the group back
    // once (confirmed), and nothing moves after that.
    shared.world().silent.clear();
    let n = ticks_until(&mut sup, &shared, &mut t, 60, |s| {
        via(s, "198.18.0.0", 100) == Via::Dev(b1)
    })
    .await;
    assert!((18..=30).contains(&n), "failback after {n} intervals");
    assert!(sup
        .policy
        .events
        .back()
        .unwrap()
        .reason
        .contains("preferred and healthy again"));
    let events = sup.policy.events.len();
    ticks(&mut sup, &mut t, 50).await;
    assert_eq!(sup.policy.events.len(), events, "{:#?}", sup.policy.events);
    assert_eq!(via(&shared, "198.18.0.0", 100), Via::Dev(b1));
}

#[tokio::test]
async fn a_flapping_exit_does_not_move_the_group_back_and_forth() {
    let (mut sup, shared, _, _dir) = setup(&format!("{RELAYS}{FAILOVER}"));
    sup.reconcile().await;
    let b2 = ifindex(&sup, "b2");
    let mut t = Instant::now();
    ticks(&mut sup, &mut t, 10).await;
    shared.world().silent.insert("b1".into());
    ticks_until(&mut sup, &shared, &mut t, 20, |s| {
        via(s, "198.18.0.0", 100) == Via::Dev(b2)
    })
    .await;
    let events = sup.policy.events.len();
    // b1 answers for 0.5 s, then is silent for 0.5 s, for 6 s.
    for round in 0..6 {
        shared.world().silent.clear();
        ticks(&mut sup, &mut t, 5).await;
        shared.world().silent.insert("b1".into());
        ticks(&mut sup, &mut t, 5).await;
        assert_eq!(
            via(&shared, "198.18.0.0", 100),
            Via::Dev(b2),
            "round {round}"
        );
    }
    assert_eq!(sup.policy.events.len(), events);
}

#[tokio::test]
async fn a_balancing_group_spreads_by_weight_and_a_dead_exit_leaves_only_its_own_share() {
    let (mut sup, shared, _, _dir) = setup(&format!("{RELAYS}{BALANCE}"));
    sup.reconcile().await;
    let (b1, b2, b3) = (
        ifindex(&sup, "b1"),
        ifindex(&sup, "b2"),
        ifindex(&sup, "b3"),
    );
    assert_eq!(
        via(&shared, "203.0.113.0", 120),
        Via::Multipath(vec![(b1, 30), (b2, 15), (b3, 15)])
    );
    assert_eq!(shared.world().multipath_hash, [1, 1]);
    let mut t = Instant::now();
    ticks(&mut sup, &mut t, 25).await;

    shared.world().silent.insert("b2".into());
    let n = ticks_until(&mut sup, &shared, &mut t, 20, |s| {
        matches!(via(s, "203.0.113.0", 120), Via::Multipath(h) if h.iter().all(|(i, _)| *i != b2))
    })
    .await;
    assert!(n <= 6, "took {n} intervals");
    // b2's 15 slots went 10/5 to b1 and b3, next to their own.
    assert_eq!(
        via(&shared, "203.0.113.0", 120),
        Via::Multipath(vec![(b1, 40), (b3, 20)])
    );

    shared.world().silent.clear();
    ticks_until(&mut sup, &shared, &mut t, 60, |s| {
        via(s, "203.0.113.0", 120) == Via::Multipath(vec![(b1, 30), (b2, 15), (b3, 15)])
    })
    .await;

    sup.shutdown().await;
    assert_eq!(shared.world().multipath_hash, [0, 0], "given back");
}

#[tokio::test]
async fn planned_changes_replace_routes_and_add_rules_before_removing_the_old_ones() {
    let (mut sup, shared, _, _dir) = setup(&format!("{RELAYS}{FAILOVER}"));
    sup.reconcile().await;
    let b2 = ifindex(&sup, "b2");
    let mut t = Instant::now();
    ticks(&mut sup, &mut t, 25).await;

    // A new list of candidates: b2 first. It takes over after the confirmations, by a
    // route replaced in place (never deleted).
    let start = shared.world().log.len();
    ask(
        &mut sup,
        PolicyRequest::Failover {
            group: "g".into(),
            exits: vec!["b2".into(), "b1".into()],
        },
    )
    .await;
    ticks_until(&mut sup, &shared, &mut t, 10, |s| {
        via(s, "198.18.0.0", 100) == Via::Dev(b2)
    })
    .await;
    assert!(
        !shared.world().log[start..]
            .iter()
            .any(|e| e.starts_with("del")),
        "{:#?}",
        &shared.world().log[start..]
    );

    // A cost on b2 large enough to lose more than the threshold: back to b1.
    let answer = sup
        .handle(Request::SetCost {
            line: "b2".into(),
            cost: 20,
        })
        .await;
    assert!(matches!(answer, Response::Done { .. }), "{answer:?}");
    let b1 = ifindex(&sup, "b1");
    ticks_until(&mut sup, &shared, &mut t, 10, |s| {
        via(s, "198.18.0.0", 100) == Via::Dev(b1)
    })
    .await;

    // A new priority: the new table and rule go in before the old rule and table go.
    let start = shared.world().log.len();
    ask(
        &mut sup,
        PolicyRequest::SetPriority {
            group: "g".into(),
            priority: 150,
        },
    )
    .await;
    let world = shared.world();
    let log = &world.log[start..];
    let new_route = position(
        log,
        &format!("replace route 198.18.0.0/15 table 150 via Dev({b1})"),
    );
    let new_rule = position(log, "add IPv4 rule pref 150 from all lookup 150");
    let old_rule = position(log, "del IPv4 rule pref 100 from all lookup 100");
    let old_route = position(log, "del route 198.18.0.0/15 table 100");
    assert!(
        new_route < new_rule && new_rule < old_rule && old_rule < old_route,
        "{log:#?}"
    );
}

#[tokio::test]
async fn deleting_a_line_a_group_uses_is_refused_or_moves_the_group_first_with_force() {
    let (mut sup, shared, path, _dir) = setup(&format!("{RELAYS}{FAILOVER}"));
    sup.reconcile().await;
    let file = std::fs::read_to_string(&path).unwrap();
    let host = shared.world().snapshot();
    let answer = sup
        .handle(Request::DeleteLine {
            name: "b1".into(),
            cascade: false,
            force: false,
        })
        .await;
    let Response::Error { message } = answer else {
        panic!("{answer:?}");
    };
    assert!(
        message.starts_with("policy groups use b1 (group g) as an exit"),
        "{message}"
    );
    assert!(!message.contains('\n'));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), file);
    assert_eq!(shared.world().snapshot(), host);

    let b2 = ifindex(&sup, "b2");
    let start = shared.world().log.len();
    let answer = sup
        .handle(Request::DeleteLine {
            name: "b1".into(),
            cascade: false,
            force: true,
        })
        .await;
    assert!(matches!(answer, Response::Deleted { .. }), "{answer:?}");
    let log = shared.world().log[start..].to_vec();
    assert!(
        position(
            &log,
            &format!("replace route 198.18.0.0/15 table 100 via Dev({b2})")
        ) < position(&log, "stop b1"),
        "{log:#?}"
    );
    assert_eq!(sup.config.policy.groups[0].exits.specs(), ["b2"]);

    // Its last exit cannot go, even with --force.
    let answer = sup
        .handle(Request::DeleteLine {
            name: "b2".into(),
            cascade: false,
            force: true,
        })
        .await;
    assert!(
        matches!(&answer, Response::Error { message } if message.starts_with("policy group g has no other exit")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn bad_policy_commands_are_one_line_and_change_nothing() {
    let (mut sup, shared, path, _dir) = setup(&format!("{RELAYS}{FAILOVER}"));
    sup.reconcile().await;
    let file = std::fs::read_to_string(&path).unwrap();
    let host = shared.world().snapshot();
    let create = |exits: &[&str], priority| PolicyRequest::Create {
        group: "h".into(),
        exits: exits.iter().map(|e| e.to_string()).collect(),
        from: None,
        priority,
    };
    let cases = [
        (
            create(&["nope"], None),
            "policy group h: nope is not a line of this node",
        ),
        (
            create(&["b1"], Some(900)),
            "policy group h: priority 900 is out of range 100-899",
        ),
        (
            create(&["b1"], Some(100)),
            "policy group h: priority 100 is taken by group g",
        ),
        (
            PolicyRequest::Add {
                group: "g".into(),
                cidrs: vec!["10.0.0.1/8".into()],
            },
            "policy group g: \"10.0.0.1/8\" has bits set beyond its /8; did you mean 10.0.0.0/8?",
        ),
        (
            PolicyRequest::Add {
                group: "g".into(),
                cidrs: vec!["192.0.2.0/24".into()],
            },
            "policy group g: 192.0.2.0/24 covers 192.0.2.11, the underlay peer of exit b1",
        ),
        (
            PolicyRequest::Add {
                group: "x".into(),
                cidrs: vec!["10.0.0.0/8".into()],
            },
            "no policy group named \"x\"",
        ),
        (PolicyRequest::UnsetDefault, "no default exit is set"),
        (
            PolicyRequest::SetPriority {
                group: "g".into(),
                priority: 80,
            },
            "policy group g: priority 80 is out of range",
        ),
    ];
    for (request, want) in cases {
        let answer = ask(&mut sup, request.clone()).await;
        let Response::Error { message } = answer else {
            panic!("{request:?} was accepted: {answer:?}");
        };
        assert!(message.starts_with(want), "{request:?}: {message}");
        assert!(!message.contains('\n'), "{message}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), file, "{request:?}");
        assert_eq!(shared.world().snapshot(), host, "{request:?}");
    }
    let answer = sup
        .handle(Request::SetCost {
            line: "b1".into(),
            cost: 101,
        })
        .await;
    assert!(
        matches!(&answer, Response::Error { message } if message.contains("cost 101 of line b1 is out of range 0-100")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn the_default_exit_is_table_900_and_a_group_without_a_running_exit_is_unreachable() {
    let (mut sup, shared, _, _dir) = setup(RELAYS);
    sup.reconcile().await;
    let b3 = ifindex(&sup, "b3");
    ask(&mut sup, PolicyRequest::Default { exit: "b3".into() }).await;
    assert_eq!(via(&shared, "0.0.0.0", DEFAULT_EXIT_PRIORITY), Via::Dev(b3));
    assert!(shared
        .world()
        .policy_rules
        .iter()
        .any(|r| r.pref == 900 && r.table == 900));

    // b3 stops (its line goes away): the default route does not fall back to the main
    // table, it refuses.
    sup.take_down(&name("b3")).await;
    let mut t = Instant::now();
    ticks(&mut sup, &mut t, 1).await;
    assert_eq!(
        via(&shared, "0.0.0.0", DEFAULT_EXIT_PRIORITY),
        Via::Unreachable
    );
    assert!(sup.policy.events.back().unwrap().to.is_empty());

    sup.shutdown().await;
    let world = shared.world();
    assert!(world.policy_routes.is_empty() && world.policy_rules.is_empty());
}

#[tokio::test]
async fn a_route_or_rule_someone_removed_is_put_back_within_a_pass() {
    let (mut sup, shared, _, _dir) = setup(&format!("{RELAYS}{FAILOVER}"));
    sup.reconcile().await;
    let (rules, routes) = {
        let world = shared.world();
        (world.policy_rules.clone(), world.policy_routes.clone())
    };
    {
        let mut world = shared.world();
        world.policy_rules.retain(|r| r.family != Family::V4);
        world.policy_routes.retain(|r| r.dst != ip("2001:db8:9::"));
    }
    sup.reconcile().await;
    let world = shared.world();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let strings = |v: &[PolicyRule]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    assert_eq!(
        sorted(strings(&world.policy_rules)),
        sorted(strings(&rules))
    );
    let dsts = |v: &[PolicyRoute]| {
        v.iter()
            .map(|r| format!("{r} {:?}", r.via))
            .collect::<Vec<_>>()
    };
    assert_eq!(sorted(dsts(&world.policy_routes)), sorted(dsts(&routes)));
}

#[tokio::test]
async fn a_reload_installs_changes_and_removes_groups_without_touching_the_lines() {
    let (mut sup, shared, path, _dir) = setup(RELAYS);
    sup.reconcile().await;
    let b2 = ifindex(&sup, "b2");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}{FAILOVER}").replace("[\"b1\", \"b2\"]", "[\"b2\"]"),
    )
    .unwrap();
    let start = shared.world().log.len();
    sup.reload().await.expect("reload");
    assert_eq!(via(&shared, "198.18.0.0", 100), Via::Dev(b2));
    std::fs::write(&path, &text).unwrap();
    sup.reload().await.expect("reload");
    let world = shared.world();
    assert!(world.policy_routes.is_empty() && world.policy_rules.is_empty());
    assert!(
        !world.log[start..]
            .iter()
            .any(|e| e.starts_with("start") || e.starts_with("stop")),
        "{:#?}",
        &world.log[start..]
    );
}
