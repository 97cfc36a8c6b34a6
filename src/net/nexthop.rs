//! Next hops: where the kernel would send a packet, down to the Ethernet addresses.
//! An AF_XDP transmit path ([`crate::dataplane::xsk`]) hands frames to the device
//! itself, so it needs what the kernel's routing and neighbour layers would have
//! supplied: the output interface, its MAC, the MAC of the gateway or on-link peer, and
//! the path MTU.
//!
//! Read-only: asks the kernel (`ip route get <dst> from <src>`, then its neighbour
//! table) and never adds a neighbour entry. When there is none yet, the caller sends
//! through the kernel, which resolves it, and asks again later.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMetric, RouteType, RouteVia,
};

use super::conn::Call;
use super::{Family, NetError, Netlink, Object};

/// The link-layer next hop of packets from one local address to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// Output interface index.
    pub ifindex: u32,
    /// Its name, for logs and `line show`.
    pub ifname: String,
    /// Its MAC address (the frames' source).
    pub src_mac: [u8; 6],
    /// The gateway's MAC, or the peer's when it is on-link (the frames' destination).
    pub dst_mac: [u8; 6],
    /// The gateway, `None` when the peer is on-link (a route `via` the peer itself,
    /// as the seed's hosts have, is also on-link).
    pub gateway: Option<IpAddr>,
    /// The largest IP packet the path takes: the interface's MTU, or less where the
    /// route says so or the kernel learnt a smaller path MTU.
    pub mtu: u32,
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.dst_mac;
        write!(
            f,
            "{} to {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            self.ifname, m[0], m[1], m[2], m[3], m[4], m[5]
        )?;
        if let Some(g) = self.gateway {
            write!(f, " (via {g})")?;
        }
        write!(f, ", mtu {}", self.mtu)
    }
}

/// Whether a neighbour entry in `state` has an address the kernel itself would send to.
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
    )
}

fn mac(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl Netlink {
    /// The Ethernet next hop of packets from `src` to `dst` for each `(dst, src)`, as
    /// the kernel would pick it now: one route look-up per pair, the neighbour table
    /// and each output interface read once for all. An inner `Err(why)` when a pair has
    /// none to use: the route is not a plain unicast one over an Ethernet device, or the
    /// neighbour is not resolved yet.
    pub async fn next_hops(
        &self,
        pairs: &[(IpAddr, IpAddr)],
    ) -> Result<Vec<Result<NextHop, String>>, NetError> {
        let mut links: HashMap<u32, LinkMessage> = HashMap::new();
        let mut neighbours: HashMap<Family, Vec<NeighbourMessage>> = HashMap::new();
        let mut out = Vec::with_capacity(pairs.len());
        for &(dst, src) in pairs {
            let route = match self.route_to(dst, src).await? {
                Ok(r) => r,
                Err(why) => {
                    out.push(Err(why));
                    continue;
                }
            };
            if let std::collections::hash_map::Entry::Vacant(e) = links.entry(route.oif) {
                e.insert(self.link(route.oif).await?);
            }
            let family = Family::of(dst);
            if let std::collections::hash_map::Entry::Vacant(e) = neighbours.entry(family) {
                let call = Call::new("neighbours", "list", Object::Dump("neighbours"));
                e.insert(
                    self.request(call, |handle| {
                        handle
                            .neighbours()
                            .get()
                            .set_address_family(family.address_family())
                            .execute()
                            .try_collect()
                    })
                    .await?,
                );
            }
            out.push(resolve(
                dst,
                &route,
                &links[&route.oif],
                &neighbours[&family],
            ));
        }
        Ok(out)
    }

    /// `ip route get <dst> from <src>`: output interface, gateway, route MTU.
    async fn route_to(
        &self,
        dst: IpAddr,
        src: IpAddr,
    ) -> Result<Result<RouteTo, String>, NetError> {
        let Some(route) = self
            .route_get("next_hops", dst, Some(src))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(Err(format!("no route to {dst}")));
        };
        if route.header.kind != RouteType::Unicast {
            return Ok(Err(format!(
                "the route to {dst} is of type {:?}, not unicast",
                route.header.kind
            )));
        }
        let mut oif = None;
        let mut gateway = None;
        let mut mtu = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(g) => gateway = ip_of(g),
                RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
                RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
                RouteAttribute::Metrics(metrics) => {
                    for m in metrics {
                        if let RouteMetric::Mtu(m) = m {
                            mtu = Some(*m);
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(oif) = oif else {
            return Ok(Err(format!("the route to {dst} names no output interface")));
        };
        Ok(Ok(RouteTo {
            oif,
            // A route `via` the peer itself (as the seed's hosts have) is on-link.
            gateway: gateway.filter(|g| *g != dst),
            mtu,
        }))
    }
}

/// What `ip route get` said.
struct RouteTo {
    oif: u32,
    gateway: Option<IpAddr>,
    /// The route's MTU or the path MTU the kernel learnt.
    mtu: Option<u32>,
}

/// The next hop toward `dst` over `route`, from the output interface and the
/// neighbour table.
fn resolve(
    dst: IpAddr,
    route: &RouteTo,
    link: &LinkMessage,
    neighbours: &[NeighbourMessage],
) -> Result<NextHop, String> {
    let ifindex = route.oif;
    let mut ifname = format!("interface {ifindex}");
    let mut src_mac = None;
    let mut link_mtu = None;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(n) => ifname = n.clone(),
            LinkAttribute::Address(a) => src_mac = mac(a),
            LinkAttribute::Mtu(m) => link_mtu = Some(*m),
            _ => {}
        }
    }
    if link.header.link_layer_type != LinkLayerType::Ether {
        return Err(format!(
            "{dst} is reached through {ifname}, which is not an Ethernet device"
        ));
    }
    let Some(src_mac) = src_mac else {
        return Err(format!("{ifname} has no MAC address"));
    };
    let hop = route.gateway.unwrap_or(dst);
    let entry = neighbours.iter().find(|n| {
        n.header.ifindex == ifindex
            && n.attributes.iter().any(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    IpAddr::V4(*v4) == hop
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    IpAddr::V6(*v6) == hop
                }
                _ => false,
            })
    });
    let dst_mac = entry.filter(|n| usable(n.header.state)).and_then(|n| {
        n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(a) => mac(a),
            _ => None,
        })
    });
    let Some(dst_mac) = dst_mac else {
        let state = entry.map_or("none".to_string(), |n| {
            format!("{:?}", n.header.state).to_lowercase()
        });
        return Err(format!(
            "no resolved neighbour entry for {hop} on {ifname} yet (state {state})"
        ));
    };
    let mtu = match (link_mtu, route.mtu) {
        (Some(l), Some(r)) => l.min(r),
        (Some(m), None) | (None, Some(m)) => m,
        (None, None) => return Err(format!("{ifname} reports no MTU")),
    };
    Ok(NextHop {
        ifindex,
        ifname,
        src_mac,
        dst_mac,
        gateway: route.gateway,
        mtu,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PEER: &str = "198.51.100.20";
    const GATEWAY: &str = "203.0.113.1";
    const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x20];
    const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x01];
    const OWN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn eth0(kind: LinkLayerType) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = 2;
        link.header.link_layer_type = kind;
        link.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Address(OWN_MAC.to_vec()),
            LinkAttribute::Mtu(1500),
        ];
        link
    }

    fn neighbour(
        ifindex: u32,
        addr: &str,
        mac: [u8; 6],
        state: NeighbourState,
    ) -> NeighbourMessage {
        let mut n = NeighbourMessage::default();
        n.header.ifindex = ifindex;
        n.header.state = state;
        let IpAddr::V4(v4) = ip(addr) else {
            unreachable!()
        };
        n.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)),
            NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
        ];
        n
    }

    fn route(gateway: Option<&str>, mtu: Option<u32>) -> RouteTo {
        RouteTo {
            oif: 2,
            gateway: gateway.map(ip),
            mtu,
        }
    }

    #[test]
    fn an_on_link_peer_is_sent_to_its_own_mac_at_the_smaller_mtu() {
        let table = [neighbour(2, PEER, PEER_MAC, NeighbourState::Stale)];
        let hop = resolve(
            ip(PEER),
            &route(None, Some(1400)),
            &eth0(LinkLayerType::Ether),
            &table,
        )
        .unwrap();
        assert_eq!(
            hop,
            NextHop {
                ifindex: 2,
                ifname: "eth0".into(),
                src_mac: OWN_MAC,
                dst_mac: PEER_MAC,
                gateway: None,
                mtu: 1400,
            }
        );
        assert_eq!(hop.to_string(), "eth0 to 02:00:00:00:00:20, mtu 1400");
    }

    #[test]
    fn a_peer_behind_a_gateway_is_sent_to_the_gateways_mac() {
        let table = [
            neighbour(2, PEER, PEER_MAC, NeighbourState::Reachable),
            neighbour(2, GATEWAY, GATEWAY_MAC, NeighbourState::Reachable),
        ];
        let hop = resolve(
            ip(PEER),
            &route(Some(GATEWAY), None),
            &eth0(LinkLayerType::Ether),
            &table,
        )
        .unwrap();
        assert_eq!((hop.dst_mac, hop.mtu), (GATEWAY_MAC, 1500));
        assert_eq!(
            hop.to_string(),
            "eth0 to 02:00:00:00:00:01 (via 203.0.113.1), mtu 1500"
        );
    }

    #[test]
    fn an_unresolved_or_foreign_entry_says_why_there_is_no_next_hop() {
        let link = eth0(LinkLayerType::Ether);
        let incomplete = [neighbour(2, PEER, [0; 6], NeighbourState::Incomplete)];
        let why = resolve(ip(PEER), &route(None, None), &link, &incomplete).unwrap_err();
        assert_eq!(
            why,
            "no resolved neighbour entry for 198.51.100.20 on eth0 yet (state incomplete)"
        );
        let elsewhere = [neighbour(3, PEER, PEER_MAC, NeighbourState::Reachable)];
        let why = resolve(ip(PEER), &route(None, None), &link, &elsewhere).unwrap_err();
        assert!(why.ends_with("(state none)"), "{why}");
    }

    #[test]
    fn a_device_without_ethernet_headers_has_no_next_hop() {
        let table = [neighbour(2, PEER, PEER_MAC, NeighbourState::Reachable)];
        let why = resolve(
            ip(PEER),
            &route(None, None),
            &eth0(LinkLayerType::None),
            &table,
        )
        .unwrap_err();
        assert!(
            why.contains("eth0, which is not an Ethernet device"),
            "{why}"
        );
    }

    #[test]
    fn only_entries_the_kernel_would_use_count_as_resolved() {
        for s in [
            NeighbourState::Reachable,
            NeighbourState::Stale,
            NeighbourState::Delay,
            NeighbourState::Probe,
            NeighbourState::Permanent,
        ] {
            assert!(usable(s), "{s:?}");
        }
        for s in [
            NeighbourState::Incomplete,
            NeighbourState::Failed,
            NeighbourState::Noarp,
            NeighbourState::None,
        ] {
            assert!(!usable(s), "{s:?}");
        }
    }
}
