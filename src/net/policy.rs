//! The routes and rules of policy groups: a group's destinations in its own table,
//! through one exit line, several weighted ones (a multipath route, per-flow), or
//! unreachable when none of its lines runs; and the rule that sends a group's traffic
//! (from all, a source prefix or an input interface) to that table.
//!
//! Rules: as everything twnode installs, they carry protocol [`RTPROT_TWNODE`], so the
//! start-up purge removes what a crashed daemon left. A route changes by replacing it
//! (`NLM_F_REPLACE`): the kernel swaps it in one step, so a packet always finds either
//! the old exit or the new one, never no route (make-before-break).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteNextHop, RouteProtocol,
    RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};

use super::conn::Call;
use super::error::errno;
use super::route::table_of;
use super::{Family, NetError, Netlink, Object, Route, RTPROT_TWNODE};

/// Where a policy route sends its packets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Via {
    /// One exit: `dev <ifindex>`.
    Dev(u32),
    /// Several exits, the flows spread by the kernel's multipath hash: `(ifindex,
    /// weight)` in hash order. An exit may appear more than once.
    Multipath(Vec<(u32, u32)>),
    /// No exit runs: the packets are refused (ICMP unreachable), never handed to a
    /// later rule or the main table.
    Unreachable,
}

/// The metric of a group's fallback route: `unreachable` under the active one, so a
/// packet finds it when the active route goes with its device (a line restarting)
/// instead of falling through to the main table.
pub const FALLBACK_METRIC: u32 = u32::MAX;

/// `dst/prefix table <table> [metric <metric>] proto 116` through [`Via`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyRoute {
    pub dst: IpAddr,
    pub prefix: u8,
    pub table: u32,
    pub via: Via,
    /// 0 for the active route, [`FALLBACK_METRIC`] for the fallback.
    pub metric: u32,
}

impl PolicyRoute {
    /// The route as errors name it.
    fn object(&self) -> Object {
        Object::Route(Route {
            dst: self.dst,
            prefix: self.prefix,
            oif: match &self.via {
                Via::Dev(i) => *i,
                Via::Multipath(hops) => hops.first().map_or(0, |h| h.0),
                Via::Unreachable => 0,
            },
            table: self.table,
            src: None,
        })
    }

    fn family(&self) -> Family {
        Family::of(self.dst)
    }

    /// The RTM_NEWROUTE body (`delete`: only what identifies the route, so any kind of
    /// it goes).
    fn message(&self, delete: bool) -> RouteMessage {
        let family = self.family();
        let mut m = RouteMessage::default();
        m.header.address_family = family.address_family();
        m.header.destination_prefix_length = self.prefix;
        m.header.protocol = RouteProtocol::from(RTPROT_TWNODE);
        m.header.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        m.attributes.push(RouteAttribute::Table(self.table));
        m.attributes
            .push(RouteAttribute::Destination(self.dst.into()));
        if self.metric != 0 {
            m.attributes.push(RouteAttribute::Priority(self.metric));
        }
        if delete {
            // As `ip route del`: any scope, any type.
            m.header.scope = RouteScope::NoWhere;
            m.header.kind = RouteType::Unspec;
            return m;
        }
        m.header.kind = RouteType::Unicast;
        m.header.scope = match family {
            Family::V4 => RouteScope::Link,
            Family::V6 => RouteScope::Universe,
        };
        match &self.via {
            Via::Dev(oif) => m.attributes.push(RouteAttribute::Oif(*oif)),
            Via::Multipath(hops) => {
                let nexthops = hops
                    .iter()
                    .enumerate()
                    .map(|(k, &(oif, weight))| {
                        let mut nh = RouteNextHop::default();
                        nh.interface_index = oif;
                        nh.hops = u8::try_from(weight.clamp(1, 256) - 1).unwrap_or(u8::MAX);
                        if family == Family::V6 {
                            // IPv6 multipath takes gateway routes only, one per distinct
                            // gateway: a link-local one per next hop (a TUN device has no
                            // neighbours to resolve).
                            nh.attributes
                                .push(RouteAttribute::Gateway(IpAddr::V6(v6_gateway(k)).into()));
                        }
                        nh
                    })
                    .collect();
                m.attributes.push(RouteAttribute::MultiPath(nexthops));
            }
            Via::Unreachable => {
                m.header.kind = RouteType::Unreachable;
                m.header.scope = RouteScope::Universe;
            }
        }
        m
    }
}

/// The `k`th next hop's gateway on IPv6 (`fe80::7477:0:k+1`).
fn v6_gateway(k: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0x7477, 0, 0, k as u16 + 1)
}

impl fmt::Display for PolicyRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {}/{} table {}", self.dst, self.prefix, self.table)?;
        if self.metric != 0 {
            write!(f, " metric {}", self.metric)?;
        }
        Ok(())
    }
}

/// Which packets a policy rule takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleFrom {
    /// `from all`.
    All,
    /// `from <addr>/<prefix>`.
    Prefix(IpAddr, u8),
    /// `iif <name>`: packets that came in through that interface.
    Iif(String),
}

/// `pref <pref> <from> lookup <table> proto 116` in one family's rule list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyRule {
    pub pref: u32,
    pub family: Family,
    pub from: RuleFrom,
    pub table: u32,
    /// `suppress_prefixlength 0`: the table's routes except its default route (the main
    /// table's own subnets and specific routes, before the default exit).
    pub suppress_default: bool,
}

impl PolicyRule {
    fn message(&self) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = self.family.address_family();
        m.header.action = RuleAction::ToTable;
        m.header.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        m.attributes.push(RuleAttribute::Priority(self.pref));
        m.attributes.push(RuleAttribute::Table(self.table));
        match &self.from {
            RuleFrom::All => {}
            RuleFrom::Prefix(addr, prefix) => {
                m.header.src_len = *prefix;
                m.attributes.push(RuleAttribute::Source(*addr));
            }
            RuleFrom::Iif(name) => m.attributes.push(RuleAttribute::Iifname(name.clone())),
        }
        if self.suppress_default {
            m.attributes.push(RuleAttribute::SuppressPrefixLen(0));
        }
        m.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::from(RTPROT_TWNODE)));
        m
    }

    fn validate(&self) -> Result<(), NetError> {
        if let RuleFrom::Prefix(addr, prefix) = &self.from {
            if Family::of(*addr) != self.family || *prefix > self.family.max_prefix() {
                return Err(NetError::Invalid {
                    object: Object::Policy(self.to_string()),
                    reason: "the source prefix is not of the rule's IP version",
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = match self.family {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        };
        write!(f, "{version} rule pref {} ", self.pref)?;
        match &self.from {
            RuleFrom::All => f.write_str("from all")?,
            RuleFrom::Prefix(a, p) => write!(f, "from {a}/{p}")?,
            RuleFrom::Iif(i) => write!(f, "iif {i}")?,
        }
        write!(f, " lookup {}", self.table)?;
        if self.suppress_default {
            f.write_str(" suppress_prefixlength 0")?;
        }
        Ok(())
    }
}

impl PolicyRule {
    /// The policy rule a dumped rule of twnode's is, if it is of that form.
    fn from_message(message: &RuleMessage) -> Option<PolicyRule> {
        let header = &message.header;
        let family = if header.family == Family::V4.address_family() {
            Family::V4
        } else if header.family == Family::V6.address_family() {
            Family::V6
        } else {
            return None;
        };
        if header.action != RuleAction::ToTable || header.dst_len != 0 || header.tos != 0 {
            return None;
        }
        let (mut pref, mut table) = (0, u32::from(header.table));
        let (mut src, mut iif, mut suppress, mut ours) = (None, None, false, false);
        for attr in &message.attributes {
            match attr {
                RuleAttribute::Priority(p) => pref = *p,
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::Source(a) => src = Some(*a),
                RuleAttribute::Iifname(i) => iif = Some(i.clone()),
                RuleAttribute::SuppressPrefixLen(n) => suppress = *n == 0,
                RuleAttribute::Protocol(p) => ours = u8::from(*p) == RTPROT_TWNODE,
                RuleAttribute::SuppressIfGroup(_) | RuleAttribute::Other(_) => {}
                _ => return None,
            }
        }
        let from = match (src, iif) {
            (None, None) => RuleFrom::All,
            (Some(a), None) => RuleFrom::Prefix(a, header.src_len),
            (None, Some(i)) => RuleFrom::Iif(i),
            (Some(_), Some(_)) => return None,
        };
        ours.then_some(PolicyRule {
            pref,
            family,
            from,
            table,
            suppress_default: suppress,
        })
    }
}

impl Netlink {
    /// twnode's routes in `table` as (destination, prefix length, metric), of
    /// `families`, as the host has them now.
    pub async fn twnode_policy_routes(
        &self,
        table: u32,
        families: &[Family],
    ) -> Result<Vec<(IpAddr, u8, u32)>, NetError> {
        let mut out = Vec::new();
        for family in families {
            let routes = self.dump_routes(*family).await?;
            out.extend(
                routes
                    .iter()
                    .filter(|m| m.header.protocol == RouteProtocol::from(RTPROT_TWNODE))
                    .filter(|m| table_of(m) == table)
                    .map(|m| {
                        let mut dst = None;
                        let mut metric = 0;
                        for attr in &m.attributes {
                            match attr {
                                RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                                    dst = Some(IpAddr::V4(*a))
                                }
                                RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                                    dst = Some(IpAddr::V6(*a))
                                }
                                RouteAttribute::Priority(p) => metric = *p,
                                _ => {}
                            }
                        }
                        let dst = dst.unwrap_or(match family {
                            Family::V4 => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                        });
                        (dst, m.header.destination_prefix_length, metric)
                    }),
            );
        }
        Ok(out)
    }

    /// twnode's policy rules in the lists of `families`, as the host has them now.
    pub async fn twnode_policy_rules(
        &self,
        families: &[Family],
    ) -> Result<Vec<PolicyRule>, NetError> {
        let mut out = Vec::new();
        for family in families {
            let rules = self.dump_rules(*family).await?;
            out.extend(rules.iter().filter_map(PolicyRule::from_message));
        }
        Ok(out)
    }

    /// Installs the route, or replaces the one the table has for its destination in
    /// one step.
    pub async fn replace_route(&self, route: &PolicyRoute) -> Result<(), NetError> {
        let message = route.message(false);
        let call = Call::new("replace_route", "replace", route.object());
        self.request(call, |handle| {
            handle.route().add(message).replace().execute()
        })
        .await
    }

    /// Deletes twnode's route to the destination in the table, whatever it goes
    /// through; one already gone is not an error.
    pub async fn del_policy_route(&self, route: &PolicyRoute) -> Result<(), NetError> {
        let message = route.message(true);
        let call = Call::new("del_policy_route", "delete", route.object());
        self.request(call, |handle| async move {
            match handle.route().del(message).execute().await {
                Err(err)
                    if matches!(errno(&err), Some(libc::ESRCH | libc::ENOENT | libc::ENODEV)) =>
                {
                    Ok(())
                }
                other => other,
            }
        })
        .await
    }

    /// Adds the rule; [`NetError::Exists`] if twnode's identical rule is there.
    pub async fn add_policy_rule(&self, rule: &PolicyRule) -> Result<(), NetError> {
        rule.validate()?;
        let message = rule.message();
        let call = Call::new("add_policy_rule", "add", Object::Policy(rule.to_string()));
        self.request(call, |handle| {
            let mut request = handle.rule().add();
            *request.message_mut() = message;
            request.execute()
        })
        .await
    }

    /// Deletes twnode's rule; one that is not there is not an error.
    pub async fn del_policy_rule(&self, rule: &PolicyRule) -> Result<(), NetError> {
        rule.validate()?;
        let message = rule.message();
        let call = Call::new(
            "del_policy_rule",
            "delete",
            Object::Policy(rule.to_string()),
        );
        self.request(call, |handle| async move {
            match handle.rule().del(message).execute().await {
                Err(err) if errno(&err) == Some(libc::ENOENT) => Ok(()),
                other => other,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipath_message_carries_weights_and_v6_gateways() {
        let r = PolicyRoute {
            dst: "2001:db8::".parse().unwrap(),
            prefix: 32,
            table: 120,
            via: Via::Multipath(vec![(3, 30), (4, 15), (3, 15)]),
            metric: 0,
        };
        let m = r.message(false);
        assert_eq!(u8::from(m.header.protocol), RTPROT_TWNODE);
        assert_eq!(m.header.table, 120);
        let hops = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::MultiPath(h) => Some(h.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(hops.len(), 3);
        assert_eq!((hops[0].interface_index, hops[0].hops), (3, 29));
        assert!(hops[2]
            .attributes
            .contains(&RouteAttribute::Gateway(IpAddr::V6(v6_gateway(2)).into())));
    }

    #[test]
    fn delete_message_matches_any_kind_of_the_route() {
        let r = PolicyRoute {
            dst: "192.0.2.0".parse().unwrap(),
            prefix: 24,
            table: 1000,
            via: Via::Unreachable,
            metric: FALLBACK_METRIC,
        };
        assert_eq!(r.message(false).header.kind, RouteType::Unreachable);
        assert!(r
            .message(true)
            .attributes
            .contains(&RouteAttribute::Priority(FALLBACK_METRIC)));
        let d = r.message(true);
        assert_eq!(d.header.kind, RouteType::Unspec);
        assert_eq!(d.header.scope, RouteScope::NoWhere);
        assert!(d.attributes.contains(&RouteAttribute::Table(1000)));
    }

    #[test]
    fn a_dumped_rule_reads_back_as_the_same_policy_rule() {
        for from in [
            RuleFrom::All,
            RuleFrom::Prefix("10.1.0.0".parse().unwrap(), 16),
            RuleFrom::Iif("lan2".into()),
        ] {
            for suppress_default in [false, true] {
                let r = PolicyRule {
                    pref: 900,
                    family: Family::V4,
                    from: from.clone(),
                    table: 900,
                    suppress_default,
                };
                assert_eq!(PolicyRule::from_message(&r.message()), Some(r));
            }
        }
        // The kernel reports an unset suppress_prefixlength as all ones.
        let mut m = PolicyRule {
            pref: 100,
            family: Family::V6,
            from: RuleFrom::All,
            table: 100,
            suppress_default: false,
        }
        .message();
        m.attributes
            .push(RuleAttribute::SuppressPrefixLen(u32::MAX));
        assert!(!PolicyRule::from_message(&m).unwrap().suppress_default);
    }

    #[test]
    fn rule_reads_like_ip_rule() {
        let r = PolicyRule {
            pref: 100,
            family: Family::V4,
            from: RuleFrom::Prefix("10.1.0.0".parse().unwrap(), 16),
            table: 100,
            suppress_default: false,
        };
        assert_eq!(
            r.to_string(),
            "IPv4 rule pref 100 from 10.1.0.0/16 lookup 100"
        );
        assert_eq!(r.message().header.src_len, 16);
        let bad = PolicyRule {
            family: Family::V6,
            ..r
        };
        assert!(bad.validate().is_err());
    }
}
