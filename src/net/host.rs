//! [`Host`]: the host operations the daemon needs, as a trait, so that its reconcile,
//! rollback and reference counting can run against an in-memory host in unit tests.
//! [`Netlink`] is the one real implementation.
//!
//! Rules: the trait has exactly what the daemon calls, with the contract of the
//! [`Netlink`] methods of the same names (adding fails with [`NetError::Exists`] if the
//! object is there; deleting what is gone succeeds). The futures are `Send`, so a
//! caller may move them to another task.

use std::future::Future;
use std::net::IpAddr;

use super::{Family, NetError, Netlink, NextHop, PolicyRoute, PolicyRule, Route, Rule};

/// The host side as the daemon sees it: links, addresses, routes and rules.
pub trait Host {
    /// Index of the interface called `name`, or `None` if there is none.
    fn link_index(&self, name: &str) -> impl Future<Output = Result<Option<u32>, NetError>> + Send;

    /// MTU of the interface.
    fn link_mtu(&self, index: u32) -> impl Future<Output = Result<u32, NetError>> + Send;

    /// Addresses configured on one interface (both families), in kernel order.
    fn link_addrs(&self, index: u32) -> impl Future<Output = Result<Vec<IpAddr>, NetError>> + Send;

    /// Every address on the host with the interface index it sits on.
    fn all_addrs(&self) -> impl Future<Output = Result<Vec<(u32, IpAddr)>, NetError>> + Send;

    /// Adds `addr/prefix` to the interface.
    fn add_addr(
        &self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
    ) -> impl Future<Output = Result<(), NetError>> + Send;

    /// Adds the route; [`NetError::Exists`] if the table already has one to its
    /// destination.
    fn add_route(&self, route: &Route) -> impl Future<Output = Result<(), NetError>> + Send;

    /// Deletes twnode's route; one already gone is not an error.
    fn del_route(&self, route: &Route) -> impl Future<Output = Result<(), NetError>> + Send;

    /// The path MTU the kernel learnt toward `dst`, or the MTU on the route it would
    /// use; `None` when neither.
    fn route_mtu(&self, dst: IpAddr) -> impl Future<Output = Result<Option<u32>, NetError>> + Send;

    /// Adds the rule; [`NetError::Exists`] if twnode's identical rule is there.
    fn add_rule(&self, rule: &Rule) -> impl Future<Output = Result<(), NetError>> + Send;

    /// Deletes twnode's rule; one that is not there is not an error.
    fn del_rule(&self, rule: &Rule) -> impl Future<Output = Result<(), NetError>> + Send;

    /// Whether twnode's rule is installed.
    fn rule_exists(&self, rule: &Rule) -> impl Future<Output = Result<bool, NetError>> + Send;

    /// twnode's routes (protocol 116) in `table`, of `families`, as the host has them.
    fn twnode_routes(
        &self,
        table: u32,
        families: &[Family],
    ) -> impl Future<Output = Result<Vec<Route>, NetError>> + Send;

    /// twnode's rules (protocol 116, of the form it installs), of `families`, as the
    /// host has them.
    fn twnode_rules(
        &self,
        families: &[Family],
    ) -> impl Future<Output = Result<Vec<Rule>, NetError>> + Send;

    /// The Ethernet next hop from `src` to `dst` for each `(dst, src)`, or why there is
    /// none.
    fn next_hops(
        &self,
        pairs: &[(IpAddr, IpAddr)],
    ) -> impl Future<Output = Result<Vec<Result<NextHop, String>>, NetError>> + Send;

    /// Installs a policy route or replaces the table's route to its destination in one
    /// step.
    fn replace_route(
        &self,
        route: &PolicyRoute,
    ) -> impl Future<Output = Result<(), NetError>> + Send;

    /// Deletes twnode's route to the policy route's destination in its table.
    fn del_policy_route(
        &self,
        route: &PolicyRoute,
    ) -> impl Future<Output = Result<(), NetError>> + Send;

    /// Adds a policy group's rule; [`NetError::Exists`] if it is there.
    fn add_policy_rule(
        &self,
        rule: &PolicyRule,
    ) -> impl Future<Output = Result<(), NetError>> + Send;

    /// Deletes a policy group's rule; one that is not there is not an error.
    fn del_policy_rule(
        &self,
        rule: &PolicyRule,
    ) -> impl Future<Output = Result<(), NetError>> + Send;

    /// twnode's routes in a policy group's `table` as (destination, prefix, metric).
    fn twnode_policy_routes(
        &self,
        table: u32,
        families: &[Family],
    ) -> impl Future<Output = Result<Vec<(IpAddr, u8, u32)>, NetError>> + Send;

    /// twnode's policy group rules (protocol 116, with a source, an input interface or
    /// neither) in the lists of `families`, as the host has them.
    fn twnode_policy_rules(
        &self,
        families: &[Family],
    ) -> impl Future<Output = Result<Vec<PolicyRule>, NetError>> + Send;

    /// Sets the IPv4 and IPv6 multipath hash policies (`fib_multipath_hash_policy`);
    /// returns what they were.
    fn set_multipath_hash(&self, value: [u8; 2]) -> std::io::Result<[u8; 2]>;
}

// Each method forwards to the inherent one of the same name (inherent methods win the
// path resolution), which carries the netlink details and its own docs.
impl Host for Netlink {
    fn link_index(&self, name: &str) -> impl Future<Output = Result<Option<u32>, NetError>> + Send {
        Netlink::link_index(self, name)
    }

    fn link_mtu(&self, index: u32) -> impl Future<Output = Result<u32, NetError>> + Send {
        Netlink::link_mtu(self, index)
    }

    fn link_addrs(&self, index: u32) -> impl Future<Output = Result<Vec<IpAddr>, NetError>> + Send {
        Netlink::link_addrs(self, index)
    }

    fn all_addrs(&self) -> impl Future<Output = Result<Vec<(u32, IpAddr)>, NetError>> + Send {
        Netlink::all_addrs(self)
    }

    fn add_addr(
        &self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
    ) -> impl Future<Output = Result<(), NetError>> + Send {
        Netlink::add_addr(self, index, addr, prefix)
    }

    fn add_route(&self, route: &Route) -> impl Future<Output = Result<(), NetError>> + Send {
        Netlink::add_route(self, route)
    }

    fn del_route(&self, route: &Route) -> impl Future<Output = Result<(), NetError>> + Send {
        Netlink::del_route(self, route)
    }

    fn route_mtu(&self, dst: IpAddr) -> impl Future<Output = Result<Option<u32>, NetError>> + Send {
        Netlink::route_mtu(self, dst)
    }

    fn add_rule(&self, rule: &Rule) -> impl Future<Output = Result<(), NetError>> + Send {
        Netlink::add_rule(self, rule)
    }

    fn del_rule(&self, rule: &Rule) -> impl Future<Output = Result<(), NetError>> + Send {
        Netlink::del_rule(self, rule)
    }

    fn rule_exists(&self, rule: &Rule) -> impl Future<Output = Result<bool, NetError>> + Send {
        Netlink::rule_exists(self, rule)
    }

    fn twnode_routes(
        &self,
        table: u32,
        families: &[Family],
    ) -> impl Future<Output = Result<Vec<Route>, NetError>> + Send {
        Netlink::twnode_routes(self, table, families)
    }

    fn twnode_rules(
        &self,
        families: &[Family],
    ) -> impl Future<Output = Result<Vec<Rule>, NetError>> + Send {
        Netlink::twnode_rules(self, families)
    }

    fn next_hops(
        &self,
        pairs: &[(IpAddr, IpAddr)],
    ) -> impl Future<Output = Result<Vec<Result<NextHop, String>>, NetError>> + Send {
        Netlink::next_hops(self, pairs)
    }

    fn replace_route(
        &self,
        route: &PolicyRoute,
    ) -> impl Future<Output = Result<(), NetError>> + Send {
        Netlink::replace_route(self, route)
    }

    fn del_policy_route(
        &self,
        route: &PolicyRoute,
    ) -> impl Future<Output = Result<(), NetError>> + Send {
        Netlink::del_policy_route(self, route)
    }

    fn add_policy_rule(
        &self,
        rule: &PolicyRule,
    ) -> impl Future<Output = Result<(), NetError>> + Send {
        Netlink::add_policy_rule(self, rule)
    }

    fn del_policy_rule(
        &self,
        rule: &PolicyRule,
    ) -> impl Future<Output = Result<(), NetError>> + Send {
        Netlink::del_policy_rule(self, rule)
    }

    fn twnode_policy_routes(
        &self,
        table: u32,
        families: &[Family],
    ) -> impl Future<Output = Result<Vec<(IpAddr, u8, u32)>, NetError>> + Send {
        Netlink::twnode_policy_routes(self, table, families)
    }

    fn twnode_policy_rules(
        &self,
        families: &[Family],
    ) -> impl Future<Output = Result<Vec<PolicyRule>, NetError>> + Send {
        Netlink::twnode_policy_rules(self, families)
    }

    /// The sysctls of the namespace the daemon runs in (its netlink connection's).
    fn set_multipath_hash(&self, value: [u8; 2]) -> std::io::Result<[u8; 2]> {
        super::sysctl::set_multipath_hash(value)
    }
}
