//! Host objects removed behind the daemon's back (an `ip rule del`, an `ip route del`,
//! a second daemon's purge) are put back by the next pass, and a pass with nothing
//! removed changes nothing and costs one dump of each kind.

use super::fake::Shared;
use super::{ip, name, protect_rule, setup, vip_rule, STACK, TWIN};
use crate::dataplane::RunningLine;
use crate::net::{Route, MAIN_TABLE, VIP_TABLE};

fn route_to(shared: &Shared, dst: &str) -> Route {
    shared
        .world()
        .routes
        .iter()
        .find(|r| r.dst == ip(dst))
        .cloned()
        .unwrap_or_else(|| panic!("no route to {dst}"))
}

#[tokio::test]
async fn rules_routes_and_addresses_removed_by_someone_else_are_put_back_by_the_next_pass() {
    let (mut sup, shared, _, _dir) = setup(&format!("{STACK}{TWIN}"));
    sup.reconcile().await;
    assert_eq!(sup.running.len(), 3);
    let installed = shared.world().sorted_snapshot();
    let b_index = sup.running[&name("b")].dataplane.ifindex();
    {
        // What `ip rule del pref 80`, `ip rule del pref 10 to 192.0.2.2`, `ip route del
        // 10.0.0.2 table 80` and `ip addr del 10.1.0.1 dev b` do.
        let mut world = shared.world();
        world.rules.retain(|r| *r != vip_rule());
        world
            .rules
            .retain(|r| *r != protect_rule("192.0.2.2", MAIN_TABLE));
        world.routes.retain(|r| r.dst != ip("10.0.0.2"));
        world.addrs.retain(|a| *a != (b_index, ip("10.1.0.1")));
        world.log.clear();
    }

    sup.reconcile().await;

    let world = shared.world();
    assert_eq!(world.sorted_snapshot(), installed);
    // Each put back once, the address before the routes that name it as source.
    let mut log = world.log.clone();
    log.sort();
    assert_eq!(
        log,
        [
            "add IPv4 rule pref 10 to 192.0.2.2/32 lookup 254",
            "add IPv4 rule pref 80 from all lookup 80",
            "add addr 10.1.0.1",
            "add route 10.0.0.2/32 table 80",
        ]
    );
    assert_eq!(world.log[0], "add addr 10.1.0.1");
    drop(world);
    // The shared rules keep their counts: three lines hold the VIP rule, a and e the
    // protection rule.
    assert_eq!(sup.rules.users(&vip_rule()), 3);
    assert_eq!(sup.rules.users(&protect_rule("192.0.2.2", MAIN_TABLE)), 2);
}

#[tokio::test]
async fn a_pass_with_nothing_removed_changes_nothing_and_dumps_each_kind_once() {
    let (mut sup, shared, _, _dir) = setup(&format!("{STACK}{TWIN}"));
    sup.reconcile().await;
    let log = shared.world().log.len();
    shared.world().dumps.clear();

    sup.reconcile().await;

    let world = shared.world();
    assert_eq!(world.log.len(), log, "{:#?}", &world.log[log..]);
    let dumps: Vec<(&str, usize)> = world.dumps.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(
        dumps,
        [("dump addresses", 1), ("dump routes", 1), ("dump rules", 1)]
    );
}

#[tokio::test]
async fn a_rule_that_predated_the_lines_and_was_put_back_is_removed_with_the_last_line() {
    let (mut sup, shared, _, _dir) = setup(TWIN);
    let preexisting = protect_rule("192.0.2.2", MAIN_TABLE);
    shared.world().rules.push(preexisting.clone());
    sup.reconcile().await;
    shared.world().rules.retain(|r| *r != preexisting);

    sup.reconcile().await;
    assert!(shared.world().rules.contains(&preexisting), "put back");

    // twnode installed it this time, so it is twnode's to remove.
    sup.shutdown().await;
    let world = shared.world();
    assert!(world.rules.is_empty(), "{:?}", world.rules);
    assert!(world.routes.is_empty());
}

#[tokio::test]
async fn an_object_that_cannot_be_put_back_is_tried_every_pass_until_it_can() {
    let (mut sup, shared, _, _dir) = setup(STACK);
    sup.reconcile().await;
    let child_protect = protect_rule("10.0.0.2", VIP_TABLE);
    {
        let mut world = shared.world();
        world.rules.retain(|r| *r != child_protect);
        world.refuse_rule = Some(child_protect.clone());
    }
    for _ in 0..2 {
        sup.reconcile().await;
        assert!(!shared.world().rules.contains(&child_protect));
        assert_eq!(sup.unrepaired.len(), 1);
    }
    shared.world().refuse_rule = None;
    sup.reconcile().await;
    assert!(shared.world().rules.contains(&child_protect));
    assert_eq!(sup.unrepaired.len(), 0);
    // The route the lines installed was never in question.
    assert_eq!(route_to(&shared, "10.0.0.2").table, VIP_TABLE);
}
