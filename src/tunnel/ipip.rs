//! IP in IP: IPv4 in IPv4 (RFC 2003, `ipip`), IPv6 in IPv4 (RFC 4213, `sit`, which also
//! carries IPv4 as Linux's sit device does), IPv6 and IPv4 in IPv6 (RFC 2473, `ip6ip6`
//! and `ipip6`).
//!
//! There is no header between the outer and the inner packet: the outer protocol (4 for
//! IPv4, 41 for IPv6) says what the inner packet is. The outer header, TTL/TOS, ECN and
//! keepalives are [`super::iptunnel`]'s; this file decides what an outer payload is.
//!
//! Keepalive replies: the peer reflects our probe back as an IP packet from its
//! underlay address to ours, of the line's first protocol, with an empty payload. No
//! tunnel packet is empty, so an empty payload is unambiguous.

use super::iptype::{IpVersion, Layer, TunnelType};
use super::DropReason;
use crate::wire::IpProtocol;

/// What the outer payload of protocol `protocol` holds for a line of type `kind`.
pub(super) fn decap(
    kind: TunnelType,
    protocol: IpProtocol,
    payload: &[u8],
) -> Result<Layer, DropReason> {
    let version = match protocol {
        IpProtocol::Ipip => IpVersion::V4,
        IpProtocol::Ipv6 => IpVersion::V6,
        _ => return Err(DropReason::WrongInnerVersion),
    };
    let protocols = kind.protocols();
    if !protocols.contains(&protocol) {
        return Err(DropReason::WrongInnerVersion);
    }
    if payload.is_empty() {
        return if protocols.first() == Some(&protocol) {
            Ok(Layer::KeepaliveReply)
        } else {
            Err(DropReason::Truncated)
        };
    }
    Ok(Layer::Inner { offset: 0, version })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;

    #[test]
    fn outer_protocol_says_the_inner_version() {
        let p = [0x45u8; 20];
        assert_eq!(
            decap(TunnelType::Sit, IpProtocol::Ipip, &p),
            Ok(Layer::Inner {
                offset: 0,
                version: IpVersion::V4
            })
        );
        assert_eq!(
            decap(TunnelType::Sit, IpProtocol::Ipv6, &p),
            Ok(Layer::Inner {
                offset: 0,
                version: IpVersion::V6
            })
        );
        assert_eq!(
            decap(TunnelType::Ipip, IpProtocol::Ipv6, &p),
            Err(DropReason::WrongInnerVersion)
        );
        assert_eq!(
            decap(TunnelType::Ip6ip6, IpProtocol::Gre, &p),
            Err(DropReason::WrongInnerVersion)
        );
    }

    #[test]
    fn empty_payload_of_the_first_protocol_is_a_keepalive_reply() {
        assert_eq!(
            decap(TunnelType::Sit, IpProtocol::Ipv6, &[]),
            Ok(Layer::KeepaliveReply)
        );
        assert_eq!(
            decap(TunnelType::Sit, IpProtocol::Ipip, &[]),
            Err(DropReason::Truncated)
        );
        assert_eq!(
            decap(TunnelType::Ipip6, IpProtocol::Ipip, &[]),
            Ok(Layer::KeepaliveReply)
        );
    }
}
