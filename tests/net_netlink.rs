//! `twnode::net` against a real kernel: every test builds its own network namespace,
//! drives `Netlink` from a thread moved into it, and checks the result with `ip`.

mod common;

use std::future::Future;
use std::net::IpAddr;

use common::{dump_state, require_root_and_tools, Netns};
use twnode::net::{
    Family, LinkId, NetError, Netlink, Route, Rule, MAIN_TABLE, PROTECT_RULE_PREF, VIP_RULE_PREF,
    VIP_TABLE,
};

/// Runs `body` with a `Netlink` connected inside `ns`, on a current-thread runtime built
/// after entering it (so the netlink socket is the namespace's).
fn with_host<F, Fut, T>(ns: &Netns, body: F) -> T
where
    F: FnOnce(Netlink) -> Fut,
    Fut: Future<Output = T>,
{
    let _inside = ns.enter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let host = Netlink::connect().expect("netlink connection in the test namespace");
        body(host).await
    })
}

/// Creates interface `tw0` (down) to hang addresses and routes on: a dummy if the kernel
/// has the module, else one end of a veth pair whose peer `tw0p` is up, so that `tw0`
/// gets carrier once it is up.
fn test_link(ns: &Netns) -> &'static str {
    let dummy = ns.exec(&["ip", "link", "add", "tw0", "type", "dummy"]);
    if !dummy.status.success() {
        ns.ip(&["link", "add", "tw0", "type", "veth", "peer", "name", "tw0p"]);
        ns.ip(&["link", "set", "tw0p", "up"]);
    }
    "tw0"
}

/// `test_link`, set up with `ip`, and its index.
fn up_test_link(ns: &Netns) -> u32 {
    let name = test_link(ns);
    ns.ip(&["link", "set", name, "up"]);
    with_host(ns, |host| async move { host.link_index(name).await })
        .expect("link_index")
        .expect("tw0 exists")
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

/// The lines of `ip rule` (or `ip -6 rule`) for one preference.
fn rules_at(ns: &Netns, family: Family, pref: u32) -> Vec<String> {
    let output = match family {
        Family::V4 => ns.ip(&["-4", "rule", "show"]),
        Family::V6 => ns.ip(&["-6", "rule", "show"]),
    };
    let prefix = format!("{pref}:");
    output
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn shows_twnode_protocol(line: &str) -> bool {
    line.ends_with("proto 116") || line.ends_with("proto 0x74")
}

#[test]
fn link_index_of_missing_interface_is_none() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("lidx");
    let (missing, too_long, lo) = with_host(&ns, |host| async move {
        (
            host.link_index("eth9").await,
            host.link_index("a-name-longer-than-ifnamsiz").await,
            host.link_index("lo").await,
        )
    });
    assert_eq!(missing.expect("look-up of eth9"), None);
    assert_eq!(too_long.expect("look-up of an impossible name"), None);
    assert_eq!(lo.expect("look-up of lo"), Some(1));
}

#[test]
fn require_link_names_the_missing_interface() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("rlink");
    let err = with_host(&ns, |host| async move { host.require_link("eth9").await })
        .expect_err("eth9 does not exist");
    assert!(
        matches!(&err, NetError::NoSuchInterface { link: LinkId::Name(name) } if name == "eth9"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "interface eth9 does not exist");
}

#[test]
fn set_link_up_and_mtu_show_in_ip_link() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("lmtu");
    let name = test_link(&ns);
    let mtu = with_host(&ns, |host| async move {
        let index = host.require_link(name).await?;
        host.set_link_up(index).await?;
        host.set_link_mtu(index, 1380).await?;
        host.link_mtu(index).await
    })
    .expect("link up and mtu");
    assert_eq!(mtu, 1380);
    let link = ns.ip(&["link", "show", "dev", name]);
    assert!(link.contains(",UP"), "tw0 not up: {link}");
    assert!(link.contains("mtu 1380 "), "mtu not set: {link}");
}

#[test]
fn link_mtu_of_missing_interface_names_its_index() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("lmiss");
    let err = with_host(&ns, |host| async move { host.link_mtu(4242).await })
        .expect_err("index 4242 does not exist");
    assert!(
        matches!(
            err,
            NetError::NoSuchInterface {
                link: LinkId::Index(4242)
            }
        ),
        "{err:?}"
    );
}

#[test]
fn ipv4_address_is_added_listed_and_deleted() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("addr4");
    let index = up_test_link(&ns);
    let vip = ip("192.0.2.1");
    let (on_link, everywhere) = with_host(&ns, |host| async move {
        host.add_addr(index, vip, 32).await?;
        Ok::<_, NetError>((host.link_addrs(index).await?, host.all_addrs().await?))
    })
    .expect("add and list");
    assert!(on_link.contains(&vip), "{on_link:?}");
    assert!(everywhere.contains(&(index, vip)), "{everywhere:?}");
    assert!(everywhere.contains(&(1, ip("127.0.0.1"))), "{everywhere:?}");
    assert!(ns
        .ip(&["-4", "addr", "show", "dev", "tw0"])
        .contains("inet 192.0.2.1/32 "));

    let after = with_host(&ns, |host| async move {
        host.del_addr(index, vip, 32).await?;
        // Already gone: still fine, so shutdown can be replayed.
        host.del_addr(index, vip, 32).await?;
        host.link_addrs(index).await
    })
    .expect("delete twice");
    assert!(!after.contains(&vip), "{after:?}");
    assert!(!ns.ip(&["-4", "addr", "show"]).contains("192.0.2.1"));
}

#[test]
fn ipv6_address_is_usable_at_once_without_dad() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("addr6");
    let index = up_test_link(&ns);
    let vip = ip("2001:db8:77::1");
    let bound = with_host(&ns, |host| async move {
        host.add_addr(index, vip, 64).await?;
        // With DAD the address would be tentative for about a second and bind would
        // fail with EADDRNOTAVAIL.
        let bound = std::net::UdpSocket::bind((vip, 0)).map(|_| ());
        Ok::<_, NetError>(bound)
    })
    .expect("add IPv6 address");
    bound.expect("bind to the new IPv6 address at once");
    let shown = ns.ip(&["-6", "addr", "show", "dev", "tw0"]);
    let line = shown
        .lines()
        .find(|line| line.contains("inet6 2001:db8:77::1/64 "))
        .unwrap_or_else(|| panic!("address not shown: {shown}"));
    assert!(line.contains(" nodad"), "{line}");
    assert!(!line.contains("tentative"), "{line}");

    let after = with_host(&ns, |host| async move {
        host.del_addr(index, vip, 64).await?;
        host.del_addr(index, vip, 64).await?;
        host.link_addrs(index).await
    })
    .expect("delete IPv6 address twice");
    assert!(!after.contains(&vip), "{after:?}");
}

#[test]
fn adding_an_address_twice_gives_exists() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("addrx");
    let index = up_test_link(&ns);
    let err = with_host(&ns, |host| async move {
        host.add_addr(index, ip("192.0.2.1"), 24).await?;
        host.add_addr(index, ip("192.0.2.1"), 24).await
    })
    .expect_err("second add");
    assert!(matches!(err, NetError::Exists { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("address 192.0.2.1/24 on interface with index {index} already exists")
    );
}

#[test]
fn ipv4_route_with_src_in_vip_table_is_added_and_deleted() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("rt4");
    let oif = up_test_link(&ns);
    let route = Route {
        dst: ip("192.0.2.2"),
        prefix: 32,
        oif,
        table: VIP_TABLE,
        src: Some(ip("192.0.2.1")),
    };
    let added = route.clone();
    with_host(&ns, |host| async move {
        host.add_addr(oif, ip("192.0.2.1"), 32).await?;
        host.add_route(&added).await
    })
    .expect("add route");
    let table = ns.ip(&["-4", "route", "show", "table", "80"]);
    assert_eq!(
        table.trim(),
        "192.0.2.2 dev tw0 proto 116 scope link src 192.0.2.1",
        "{table}"
    );

    let deleted = route.clone();
    with_host(&ns, |host| async move {
        host.del_route(&deleted).await?;
        host.del_route(&deleted).await
    })
    .expect("delete route twice");
    assert_eq!(ns.ip(&["-4", "route", "show", "table", "80"]).trim(), "");
}

#[test]
fn ipv6_route_with_src_in_vip_table_is_added_and_deleted() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("rt6");
    let oif = up_test_link(&ns);
    let route = Route {
        dst: ip("2001:db8:77::2"),
        prefix: 128,
        oif,
        table: VIP_TABLE,
        src: Some(ip("2001:db8:77::1")),
    };
    let added = route.clone();
    with_host(&ns, |host| async move {
        host.add_addr(oif, ip("2001:db8:77::1"), 128).await?;
        host.add_route(&added).await
    })
    .expect("add IPv6 route");
    let table = ns.ip(&["-6", "route", "show", "table", "80"]);
    assert!(
        table.starts_with("2001:db8:77::2 dev tw0 proto 116 src 2001:db8:77::1 "),
        "{table}"
    );

    let deleted = route.clone();
    with_host(&ns, |host| async move {
        host.del_route(&deleted).await?;
        host.del_route(&deleted).await
    })
    .expect("delete IPv6 route twice");
    assert_eq!(ns.ip(&["-6", "route", "show", "table", "80"]).trim(), "");
}

/// The supervisor's repair compares what it installed with these dumps, so they must
/// read back exactly the routes and rules twnode added (IPv4 and IPv6, with source
/// addresses), and nothing an administrator added.
#[test]
fn twnode_routes_and_rules_read_back_exactly_what_was_installed_and_nothing_else() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("dumps");
    let oif = up_test_link(&ns);
    let routes = vec![
        Route {
            dst: ip("10.77.0.2"),
            prefix: 32,
            oif,
            table: VIP_TABLE,
            src: Some(ip("10.77.0.1")),
        },
        Route {
            dst: ip("2001:db8:77::2"),
            prefix: 128,
            oif,
            table: VIP_TABLE,
            src: Some(ip("2001:db8:77::1")),
        },
        Route {
            dst: ip("198.51.100.9"),
            prefix: 32,
            oif,
            table: VIP_TABLE,
            src: None,
        },
    ];
    let rules = vec![
        Rule::from_all(Family::V4, VIP_RULE_PREF, VIP_TABLE),
        Rule::from_all(Family::V6, VIP_RULE_PREF, VIP_TABLE),
        Rule::to_prefix(PROTECT_RULE_PREF, ip("198.51.100.9"), 32, MAIN_TABLE),
        Rule::to_prefix(PROTECT_RULE_PREF, ip("2001:db8:9::9"), 128, VIP_TABLE),
    ];
    // An administrator's look-alikes: not twnode's.
    ns.ip(&["route", "add", "10.77.0.3", "dev", "tw0", "table", "80"]);
    ns.ip(&["rule", "add", "pref", "80", "lookup", "80"]);
    let (want_routes, want_rules) = (routes.clone(), rules.clone());
    let (got_routes, got_rules) = with_host(&ns, |host| async move {
        host.add_addr(oif, ip("10.77.0.1"), 32).await?;
        host.add_addr(oif, ip("2001:db8:77::1"), 128).await?;
        for r in &want_routes {
            host.add_route(r).await?;
        }
        for r in &want_rules {
            host.add_rule(r).await?;
        }
        let both = [Family::V4, Family::V6];
        Ok::<_, NetError>((
            host.twnode_routes(VIP_TABLE, &both).await?,
            host.twnode_rules(&both).await?,
        ))
    })
    .expect("add and dump");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let debug = |v: &[Route]| v.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>();
    assert_eq!(sorted(debug(&got_routes)), sorted(debug(&routes)));
    let debug = |v: &[Rule]| v.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>();
    assert_eq!(sorted(debug(&got_rules)), sorted(debug(&rules)));
}

#[test]
fn duplicate_route_gives_exists_naming_route_and_table() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("rtdup");
    let oif = up_test_link(&ns);
    let route = Route {
        dst: ip("192.0.2.0"),
        prefix: 28,
        oif,
        table: VIP_TABLE,
        src: None,
    };
    let err = with_host(&ns, |host| async move {
        host.add_route(&route).await?;
        host.add_route(&route).await
    })
    .expect_err("second add");
    assert!(matches!(err, NetError::Exists { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "route 192.0.2.0/28 table 80 already exists"
    );
}

#[test]
fn route_via_missing_interface_gives_no_such_interface() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("rtdev");
    let route = Route {
        dst: ip("2001:db8:77::2"),
        prefix: 128,
        oif: 4242,
        table: VIP_TABLE,
        src: None,
    };
    let err = with_host(&ns, |host| async move { host.add_route(&route).await })
        .expect_err("no interface 4242");
    assert!(
        matches!(
            err,
            NetError::NoSuchInterface {
                link: LinkId::Index(4242)
            }
        ),
        "{err:?}"
    );
}

#[test]
fn ipv4_route_via_a_down_interface_gives_link_down() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("rtdown");
    let name = test_link(&ns);
    let err = with_host(&ns, |host| async move {
        let oif = host.require_link(name).await?;
        let route = Route {
            dst: ip("192.0.2.2"),
            prefix: 32,
            oif,
            table: VIP_TABLE,
            src: None,
        };
        host.add_route(&route).await
    })
    .expect_err("tw0 is down");
    assert!(matches!(err, NetError::LinkDown { .. }), "{err:?}");
}

#[test]
fn route_with_host_bits_is_rejected_before_the_kernel() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("rtinv");
    let oif = up_test_link(&ns);
    let route = Route {
        dst: ip("192.0.2.1"),
        prefix: 24,
        oif,
        table: VIP_TABLE,
        src: None,
    };
    let err = with_host(&ns, |host| async move { host.add_route(&route).await })
        .expect_err("192.0.2.1/24 is not a network");
    assert!(matches!(err, NetError::Invalid { .. }), "{err:?}");
}

/// Adds the protect rule for `peer` and the VIP rule, checks `ip rule`, deletes both.
fn protect_and_vip_rules_round_trip(family: Family, peer: &str) {
    let ns = Netns::new("rule");
    let protect = Rule::to_prefix(PROTECT_RULE_PREF, ip(peer), family.max_prefix(), MAIN_TABLE);
    let vip = Rule::from_all(family, VIP_RULE_PREF, VIP_TABLE);
    let (p, v) = (protect.clone(), vip.clone());
    let exist = with_host(&ns, |host| async move {
        host.add_rule(&p).await?;
        host.add_rule(&v).await?;
        Ok::<_, NetError>((host.rule_exists(&p).await?, host.rule_exists(&v).await?))
    })
    .expect("add rules");
    assert_eq!(exist, (true, true));

    let protect_lines = rules_at(&ns, family, PROTECT_RULE_PREF);
    assert_eq!(protect_lines.len(), 1, "{protect_lines:?}");
    assert!(
        protect_lines[0].starts_with(&format!("10: from all to {peer} lookup main proto ")),
        "{protect_lines:?}"
    );
    assert!(
        shows_twnode_protocol(&protect_lines[0]),
        "{protect_lines:?}"
    );
    let vip_lines = rules_at(&ns, family, VIP_RULE_PREF);
    assert_eq!(vip_lines.len(), 1, "{vip_lines:?}");
    assert!(
        vip_lines[0].starts_with("80: from all lookup 80 proto "),
        "{vip_lines:?}"
    );
    assert!(shows_twnode_protocol(&vip_lines[0]), "{vip_lines:?}");

    let (p, v) = (protect.clone(), vip.clone());
    let exist = with_host(&ns, |host| async move {
        host.del_rule(&p).await?;
        host.del_rule(&v).await?;
        // Already gone: still fine.
        host.del_rule(&p).await?;
        Ok::<_, NetError>((host.rule_exists(&p).await?, host.rule_exists(&v).await?))
    })
    .expect("delete rules");
    assert_eq!(exist, (false, false));
    assert!(rules_at(&ns, family, PROTECT_RULE_PREF).is_empty());
    assert!(rules_at(&ns, family, VIP_RULE_PREF).is_empty());
}

#[test]
fn ipv4_protect_and_vip_rules_show_proto_116_and_go_away_after_del() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    protect_and_vip_rules_round_trip(Family::V4, "198.51.100.7");
}

#[test]
fn ipv6_protect_and_vip_rules_show_proto_116_and_go_away_after_del() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    protect_and_vip_rules_round_trip(Family::V6, "2001:db8:5::7");
}

#[test]
fn duplicate_rule_gives_exists() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("ruledup");
    let rule = Rule::from_all(Family::V4, VIP_RULE_PREF, VIP_TABLE);
    let err = with_host(&ns, |host| async move {
        host.add_rule(&rule).await?;
        host.add_rule(&rule).await
    })
    .expect_err("second add");
    assert!(matches!(err, NetError::Exists { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "IPv4 rule pref 80 from all lookup 80 already exists"
    );
}

#[test]
fn del_rule_leaves_an_identical_admin_rule_alone() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("ruleadm");
    ns.ip(&["-6", "rule", "add", "pref", "80", "lookup", "80"]);
    let rule = Rule::from_all(Family::V6, VIP_RULE_PREF, VIP_TABLE);
    let exists = with_host(&ns, |host| async move {
        host.del_rule(&rule).await?;
        host.rule_exists(&rule).await
    })
    .expect("delete twnode's (absent) rule");
    assert!(!exists, "the admin's rule is not twnode's");
    assert_eq!(
        rules_at(&ns, Family::V6, VIP_RULE_PREF),
        ["80: from all lookup 80"]
    );
}

#[test]
fn purge_stale_removes_exactly_twnode_rules_and_routes() {
    if !require_root_and_tools(&["ip"]) {
        return;
    }
    let ns = Netns::new("purge");
    let oif = up_test_link(&ns);
    // What an administrator set up, some of it identical to twnode's but for the
    // protocol: all of it must survive.
    ns.ip(&["-4", "rule", "add", "pref", "80", "lookup", "80"]);
    ns.ip(&[
        "-4",
        "rule",
        "add",
        "pref",
        "10",
        "to",
        "198.51.100.7",
        "lookup",
        "main",
    ]);
    ns.ip(&[
        "-4",
        "route",
        "add",
        "203.0.113.0/24",
        "dev",
        "tw0",
        "table",
        "80",
    ]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:99::/64",
        "dev",
        "tw0",
        "table",
        "80",
    ]);
    let before = dump_state(&ns);

    // A run of twnode that crashes: installs and never cleans up.
    let rules = [
        Rule::from_all(Family::V4, VIP_RULE_PREF, VIP_TABLE),
        Rule::from_all(Family::V6, VIP_RULE_PREF, VIP_TABLE),
        Rule::to_prefix(PROTECT_RULE_PREF, ip("198.51.100.7"), 32, MAIN_TABLE),
        Rule::to_prefix(PROTECT_RULE_PREF, ip("2001:db8:5::7"), 128, MAIN_TABLE),
    ];
    let routes = [
        Route {
            dst: ip("192.0.2.2"),
            prefix: 32,
            oif,
            table: VIP_TABLE,
            src: None,
        },
        Route {
            dst: ip("2001:db8:77::2"),
            prefix: 128,
            oif,
            table: VIP_TABLE,
            src: None,
        },
        Route {
            dst: ip("192.0.2.64"),
            prefix: 26,
            oif,
            table: MAIN_TABLE,
            src: None,
        },
        Route {
            dst: ip("192.0.2.128"),
            prefix: 25,
            oif,
            table: 1000,
            src: None,
        },
    ];
    let installed = rules.len() + routes.len();
    with_host(&ns, |host| async move {
        for rule in &rules {
            host.add_rule(rule).await?;
        }
        for route in &routes {
            host.add_route(route).await?;
        }
        Ok::<_, NetError>(())
    })
    .expect("install twnode state");
    assert_ne!(dump_state(&ns), before);

    // The next start, on a fresh connection.
    let (purged, again) = with_host(&ns, |host| async move {
        Ok::<_, NetError>((host.purge_stale().await?, host.purge_stale().await?))
    })
    .expect("purge");
    assert_eq!(purged, installed);
    assert_eq!(again, 0);
    assert_eq!(dump_state(&ns), before);
}

#[test]
fn connect_outside_a_tokio_runtime_is_an_error() {
    let err = Netlink::connect().err().expect("no runtime here");
    assert!(matches!(err, NetError::NoRuntime), "{err:?}");
}
