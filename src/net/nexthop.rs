//! Next hops: where the kernel would send a packet, down to the Ethernet addresses.
//! An AF_XDP transmit path ([`crate::dataplane::xsk`]) hands frames to the device
//! itself, so it needs what the kernel's routing and neighbour layers would have
//! supplied: the output interface, its MAC, the MAC of the gateway or on-link peer, and
//! the path MTU.
//!
//! Read-only: asks the kernel (`ip route get <dst> from <src>`, then its neighbour
//! table) and never adds a neighbour entry. When there is none yet, the caller sends
//! through the kernel, which resolves it, and asks again later.

use std::fmt;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkLayerType};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteType, RouteVia,
};

use super::error::classify;
use super::{Family, Host, NetError, Object, Route};

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

impl Host {
    /// The Ethernet next hop of packets from `src` to `dst`, as the kernel would pick
    /// it now. `Ok(Err(why))` when there is none to use: the route is not a plain
    /// unicast one over an Ethernet device, or the neighbour is not resolved yet.
    pub async fn next_hop(
        &self,
        dst: IpAddr,
        src: IpAddr,
    ) -> Result<Result<NextHop, String>, NetError> {
        let family = Family::of(dst);
        let mut query = RouteMessage::default();
        query.header.address_family = family.address_family();
        query.header.destination_prefix_length = family.max_prefix();
        query.header.source_prefix_length = family.max_prefix();
        query
            .attributes
            .push(RouteAttribute::Destination(dst.into()));
        query.attributes.push(RouteAttribute::Source(src.into()));
        let object = || {
            Object::Route(Route {
                dst,
                prefix: family.max_prefix(),
                oif: 0,
                table: 0,
                src: Some(src),
            })
        };
        let answer: Option<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_next()
            .await
            .map_err(|err| classify("look up", object(), err))?;
        let Some(route) = answer else {
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
        let mut route_mtu = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(g) => gateway = ip_of(g),
                RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
                RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
                RouteAttribute::Metrics(metrics) => {
                    for m in metrics {
                        if let RouteMetric::Mtu(mtu) = m {
                            route_mtu = Some(*mtu);
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(ifindex) = oif else {
            return Ok(Err(format!("the route to {dst} names no output interface")));
        };
        let link = self.link(ifindex).await?;
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
            return Ok(Err(format!(
                "{dst} is reached through {ifname}, which is not an Ethernet device \
                 (a line's TUN device, say)"
            )));
        }
        let Some(src_mac) = src_mac else {
            return Ok(Err(format!("{ifname} has no MAC address")));
        };
        let gateway = gateway.filter(|g| *g != dst);
        let hop = gateway.unwrap_or(dst);
        let neighbours: Vec<_> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family.address_family())
            .execute()
            .try_collect()
            .await
            .map_err(|err| classify("list", Object::Dump("neighbours"), err))?;
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
            return Ok(Err(format!(
                "no resolved neighbour entry for {hop} on {ifname} yet (state {state})"
            )));
        };
        let mtu = match (link_mtu, route_mtu) {
            (Some(l), Some(r)) => l.min(r),
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => {
                return Ok(Err(format!("{ifname} reports no MTU")));
            }
        };
        Ok(Ok(NextHop {
            ifindex,
            ifname,
            src_mac,
            dst_mac,
            gateway,
            mtu,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_next_hop_reads_like_ip_neigh() {
        let hop = NextHop {
            ifindex: 2,
            ifname: "eth0".into(),
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 0xab],
            gateway: Some("198.51.100.1".parse().unwrap_or_else(|_| unreachable!())),
            mtu: 1500,
        };
        assert_eq!(
            hop.to_string(),
            "eth0 to 02:00:00:00:00:ab (via 198.51.100.1), mtu 1500"
        );
    }
}
