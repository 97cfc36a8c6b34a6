//! Routes: twnode's device routes (no gateway, scope link) and the start-up purge of the
//! ones a crashed run left behind.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use rtnetlink::packet_route::AddressFamily;

use super::conn::Call;
use super::error::errno;
use super::{Family, NetError, Netlink, Object, RTPROT_TWNODE};
use crate::wire::network;

/// A device route `dst/prefix dev <oif> table <table> [src <src>]`, installed with
/// protocol [`RTPROT_TWNODE`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination network address (no host bits beyond `prefix`).
    pub dst: IpAddr,
    /// Destination prefix length.
    pub prefix: u8,
    /// Output interface index.
    pub oif: u32,
    /// Routing table.
    pub table: u32,
    /// Preferred source address for locally generated packets; must be an address of
    /// this host, of the same family as `dst`.
    pub src: Option<IpAddr>,
}

impl Route {
    /// IP version of the route.
    pub fn family(&self) -> Family {
        Family::of(self.dst)
    }

    /// The route a dumped message describes, as far as a `Route` can say it (for logs
    /// and errors about routes found on the host).
    fn from_message(message: &RouteMessage) -> Route {
        let unspecified = match message.header.address_family {
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let mut route = Route {
            dst: unspecified,
            prefix: message.header.destination_prefix_length,
            oif: 0,
            table: table_of(message),
            src: None,
        };
        for attr in &message.attributes {
            match attr {
                RouteAttribute::Destination(dst) => route.dst = ip_of(dst).unwrap_or(route.dst),
                RouteAttribute::Oif(oif) => route.oif = *oif,
                RouteAttribute::PrefSource(src) => route.src = ip_of(src),
                _ => {}
            }
        }
        route
    }

    fn validate(&self) -> Result<(), NetError> {
        let invalid = |reason| NetError::Invalid {
            object: Object::Route(self.clone()),
            reason,
        };
        let family = self.family();
        if self.prefix > family.max_prefix() {
            return Err(invalid("prefix length is longer than the address"));
        }
        if network(self.dst, self.prefix) != self.dst {
            return Err(invalid("destination has host bits set beyond the prefix"));
        }
        if self.src.is_some_and(|src| Family::of(src) != family) {
            return Err(invalid(
                "source and destination are of different IP versions",
            ));
        }
        Ok(())
    }

    /// The RTM_NEWROUTE/RTM_DELROUTE body. The protocol is part of it, so a delete only
    /// ever removes twnode's route, never an administrator's identical one.
    fn message(&self) -> RouteMessage {
        let family = self.family();
        let mut message = RouteMessage::default();
        message.header.address_family = family.address_family();
        message.header.destination_prefix_length = self.prefix;
        message.header.protocol = RouteProtocol::from(RTPROT_TWNODE);
        // Like `ip route`: IPv6 ignores the scope and reports universe.
        message.header.scope = match family {
            Family::V4 => RouteScope::Link,
            Family::V6 => RouteScope::Universe,
        };
        message.header.kind = RouteType::Unicast;
        // The header holds 8 bits; RTA_TABLE holds any table and wins when present.
        message.header.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        message.attributes.push(RouteAttribute::Table(self.table));
        message
            .attributes
            .push(RouteAttribute::Destination(self.dst.into()));
        message.attributes.push(RouteAttribute::Oif(self.oif));
        if let Some(src) = self.src {
            message
                .attributes
                .push(RouteAttribute::PrefSource(src.into()));
        }
        message
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {}/{} table {}", self.dst, self.prefix, self.table)
    }
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Table of a dumped route: RTA_TABLE when present, else the 8-bit header field.
pub(super) fn table_of(message: &RouteMessage) -> u32 {
    message
        .attributes
        .iter()
        .find_map(|attr| match attr {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(message.header.table))
}

impl Netlink {
    /// Adds the route; [`NetError::Exists`] if the table already has one to `dst/prefix`.
    pub async fn add_route(&self, route: &Route) -> Result<(), NetError> {
        route.validate()?;
        let message = route.message();
        let call = Call::new("add_route", "add", Object::Route(route.clone()));
        self.request(call, |handle| handle.route().add(message).execute())
            .await
    }

    /// Deletes twnode's route. A route (or its interface) that is already gone is not an
    /// error.
    pub async fn del_route(&self, route: &Route) -> Result<(), NetError> {
        route.validate()?;
        let message = route.message();
        let call = Call::new("del_route", "delete", Object::Route(route.clone()));
        self.request(call, |handle| async move {
            match handle.route().del(message).execute().await {
                Err(err) if is_gone(&err) => Ok(()),
                other => other,
            }
        })
        .await
    }

    /// The path MTU the kernel learnt toward `dst` (from an ICMP fragmentation needed
    /// or packet too big, as `ip route get` shows it: `cache ... mtu N`), or the MTU set
    /// on the route it would use; `None` when neither (the interface's MTU applies).
    pub async fn route_mtu(&self, dst: IpAddr) -> Result<Option<u32>, NetError> {
        let answers = self.route_get("route_mtu", dst, None).await?;
        Ok(answers
            .iter()
            .flat_map(|m| m.attributes.iter())
            .filter_map(|attr| match attr {
                RouteAttribute::Metrics(metrics) => metrics.iter().find_map(|m| match m {
                    RouteMetric::Mtu(mtu) => Some(*mtu),
                    _ => None,
                }),
                _ => None,
            })
            .min())
    }

    /// `ip route get <dst> [from <src>]`: the kernel's answers (one, for a unicast
    /// destination); `call` names the method asking, for fault injection.
    pub(super) async fn route_get(
        &self,
        call: &'static str,
        dst: IpAddr,
        src: Option<IpAddr>,
    ) -> Result<Vec<RouteMessage>, NetError> {
        let family = Family::of(dst);
        let mut query = RouteMessage::default();
        query.header.address_family = family.address_family();
        query.header.destination_prefix_length = family.max_prefix();
        query
            .attributes
            .push(RouteAttribute::Destination(dst.into()));
        if let Some(src) = src {
            query.header.source_prefix_length = family.max_prefix();
            query.attributes.push(RouteAttribute::Source(src.into()));
        }
        let object = Object::Route(Route {
            dst,
            prefix: family.max_prefix(),
            oif: 0,
            table: 0,
            src,
        });
        self.request(Call::new(call, "look up", object), |handle| {
            handle.route().get(query).execute().try_collect()
        })
        .await
    }

    /// Every route of one family, all tables.
    pub(super) async fn dump_routes(&self, family: Family) -> Result<Vec<RouteMessage>, NetError> {
        let what = match family {
            Family::V4 => "IPv4 routes",
            Family::V6 => "IPv6 routes",
        };
        let mut query = RouteMessage::default();
        query.header.address_family = family.address_family();
        // Without strict checking the kernel ignores the table and dumps them all.
        query.header.table = RouteHeader::RT_TABLE_UNSPEC;
        self.request(
            Call::new("dump_routes", "list", Object::Dump(what)),
            |handle| handle.route().get(query).execute().try_collect(),
        )
        .await
    }

    /// twnode's routes (protocol [`RTPROT_TWNODE`]) in `table`, of `families`, as the
    /// host has them now.
    pub async fn twnode_routes(
        &self,
        table: u32,
        families: &[Family],
    ) -> Result<Vec<Route>, NetError> {
        let mut out = Vec::new();
        for family in families {
            let routes = self.dump_routes(*family).await?;
            out.extend(
                routes
                    .iter()
                    .filter(|m| m.header.protocol == RouteProtocol::from(RTPROT_TWNODE))
                    .filter(|m| table_of(m) == table)
                    .map(Route::from_message),
            );
        }
        Ok(out)
    }

    /// Deletes every route carrying [`RTPROT_TWNODE`] (all tables, both families);
    /// returns how many were deleted.
    pub(super) async fn purge_stale_routes(&self) -> Result<usize, NetError> {
        let mut purged = 0;
        for family in [Family::V4, Family::V6] {
            let stale = self
                .dump_routes(family)
                .await?
                .into_iter()
                .filter(|message| message.header.protocol == RouteProtocol::from(RTPROT_TWNODE));
            for message in stale {
                let route = Route::from_message(&message);
                // Sent back as it was dumped, like `ip route flush`: every attribute
                // the kernel matches on is there.
                let call = Call::new("del_route", "delete", Object::Route(route.clone()));
                let deleted = self
                    .request(call, |handle| async move {
                        match handle.route().del(message).execute().await {
                            Ok(()) => Ok(true),
                            Err(err) if is_gone(&err) => Ok(false),
                            Err(err) => Err(err),
                        }
                    })
                    .await?;
                if deleted {
                    tracing::info!(%route, "deleted stale twnode route");
                    purged += 1;
                }
            }
        }
        Ok(purged)
    }
}

/// ESRCH/ENOENT: no such route; ENODEV: its interface, and so the route, is gone.
fn is_gone(err: &rtnetlink::Error) -> bool {
    matches!(errno(err), Some(libc::ESRCH | libc::ENOENT | libc::ENODEV))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::VIP_TABLE;

    fn v4_route(dst: [u8; 4], prefix: u8) -> Route {
        Route {
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            prefix,
            oif: 3,
            table: VIP_TABLE,
            src: None,
        }
    }

    #[test]
    fn route_with_host_bits_is_invalid() {
        let err = v4_route([10, 0, 0, 1], 24).validate().unwrap_err();
        assert!(matches!(err, NetError::Invalid { .. }), "{err:?}");
    }

    #[test]
    fn host_route_and_default_route_are_valid() {
        v4_route([10, 0, 0, 1], 32).validate().unwrap();
        v4_route([0, 0, 0, 0], 0).validate().unwrap();
        let v6 = Route {
            dst: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            prefix: 0,
            ..v4_route([0, 0, 0, 0], 0)
        };
        v6.validate().unwrap();
    }

    #[test]
    fn route_mixing_families_is_invalid() {
        let route = Route {
            src: Some("2001:db8::1".parse().unwrap()),
            ..v4_route([10, 0, 0, 2], 32)
        };
        assert!(route.validate().is_err());
    }

    #[test]
    fn ipv4_route_message_is_scope_link_protocol_twnode() {
        let mut route = v4_route([10, 0, 0, 2], 32);
        route.src = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        let message = route.message();
        assert_eq!(message.header.scope, RouteScope::Link);
        assert_eq!(u8::from(message.header.protocol), RTPROT_TWNODE);
        assert_eq!(message.header.table, 80);
        assert_eq!(message.header.destination_prefix_length, 32);
        assert!(message
            .attributes
            .contains(&RouteAttribute::PrefSource(route.src.unwrap().into())));
        assert!(message.attributes.contains(&RouteAttribute::Oif(3)));
    }

    #[test]
    fn table_above_255_goes_in_rta_table_only() {
        let route = Route {
            table: 1000,
            ..v4_route([10, 0, 0, 2], 32)
        };
        let message = route.message();
        assert_eq!(message.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert_eq!(table_of(&message), 1000);
    }

    #[test]
    fn dumped_message_reads_back_as_the_same_route() {
        let route = Route {
            dst: "2001:db8:1::".parse().unwrap(),
            prefix: 48,
            oif: 9,
            table: 1000,
            src: Some("2001:db8::1".parse().unwrap()),
        };
        assert_eq!(Route::from_message(&route.message()), route);
    }

    #[test]
    fn network_clears_host_bits() {
        let addr: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert_eq!(network(addr, 64), "2001:db8::".parse::<IpAddr>().unwrap());
        assert_eq!(network(addr, 128), addr);
        assert_eq!(network(addr, 0), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
}
