//! The IP tunnels' vocabulary, shared by the core ([`super::iptunnel`]) and the layers
//! under its outer header ([`super::gre`], [`super::ipip`]): the six tunnel types as
//! iproute2 names them, the inner packet's IP version, iproute2's `ttl` and `tos`, and
//! what a layer found after the outer header (`Layer`).
//!
//! Rules: plain values, no I/O; this file imports nothing of the tunnel room, so every
//! IP tunnel file can use it without a circle.

use std::fmt;

use crate::wire::{self, ipv4, ipv6, IpProtocol};

/// The six tunnel types, named as iproute2 names their modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelType {
    /// IPv4 in IPv4, protocol 4 (RFC 2003).
    Ipip,
    /// GRE over IPv4, carrying IPv4 and IPv6 (RFC 2784).
    Gre,
    /// IPv6 in IPv4, protocol 41 (RFC 4213); like Linux's sit, also IPv4 in IPv4.
    Sit,
    /// IPv6 in IPv6, next header 41 (RFC 2473).
    Ip6ip6,
    /// IPv4 in IPv6, next header 4 (RFC 2473).
    Ipip6,
    /// GRE over IPv6, carrying IPv4 and IPv6.
    Gre6,
}

impl TunnelType {
    /// Every type, in the order the CLI lists them.
    pub const ALL: [TunnelType; 6] = [
        TunnelType::Ipip,
        TunnelType::Gre,
        TunnelType::Sit,
        TunnelType::Ip6ip6,
        TunnelType::Ipip6,
        TunnelType::Gre6,
    ];

    /// The `--type` spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            TunnelType::Ipip => "ipip",
            TunnelType::Gre => "gre",
            TunnelType::Sit => "sit",
            TunnelType::Ip6ip6 => "ip6ip6",
            TunnelType::Ipip6 => "ipip6",
            TunnelType::Gre6 => "gre6",
        }
    }

    /// The type spelled `s`.
    pub fn from_name(s: &str) -> Option<TunnelType> {
        TunnelType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether the outer header (the underlay) is IPv6.
    pub const fn outer_ipv6(self) -> bool {
        matches!(
            self,
            TunnelType::Ip6ip6 | TunnelType::Ipip6 | TunnelType::Gre6
        )
    }

    /// Whether a GRE header sits between outer and inner packet.
    pub const fn is_gre(self) -> bool {
        matches!(self, TunnelType::Gre | TunnelType::Gre6)
    }

    /// Whether the line carries inner packets of this version.
    pub const fn carries(self, version: IpVersion) -> bool {
        match self {
            TunnelType::Ipip | TunnelType::Ipip6 => matches!(version, IpVersion::V4),
            TunnelType::Ip6ip6 => matches!(version, IpVersion::V6),
            TunnelType::Sit | TunnelType::Gre | TunnelType::Gre6 => true,
        }
    }

    /// Length of the outer IP header.
    pub const fn outer_len(self) -> usize {
        if self.outer_ipv6() {
            ipv6::HEADER_LEN
        } else {
            ipv4::HEADER_LEN
        }
    }

    /// The IP protocols whose packets belong to a line of this type. The first is the
    /// line's own: its keepalive replies come back with it, and a line that owns it is
    /// preferred when two lines to one peer could take a packet. The others are
    /// accepted too: a sit line takes IPv4 in IPv4 as Linux's sit does, and an ipip6 line
    /// takes IPv6 in IPv6 so that keepalive probes (IPv6 packets, as the underlay is
    /// IPv6) reach it.
    pub const fn protocols(self) -> &'static [IpProtocol] {
        match self {
            TunnelType::Ipip => &[IpProtocol::Ipip],
            TunnelType::Sit => &[IpProtocol::Ipv6, IpProtocol::Ipip],
            TunnelType::Ip6ip6 => &[IpProtocol::Ipv6],
            TunnelType::Ipip6 => &[IpProtocol::Ipip, IpProtocol::Ipv6],
            TunnelType::Gre | TunnelType::Gre6 => &[IpProtocol::Gre],
        }
    }

    /// The line's own protocol (see [`TunnelType::protocols`]).
    pub const fn protocol(self) -> IpProtocol {
        match self {
            TunnelType::Ipip | TunnelType::Ipip6 => IpProtocol::Ipip,
            TunnelType::Sit | TunnelType::Ip6ip6 => IpProtocol::Ipv6,
            TunnelType::Gre | TunnelType::Gre6 => IpProtocol::Gre,
        }
    }
}

impl fmt::Display for TunnelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inner packet's IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpVersion {
    /// The version of the packet starting with `first`, if 4 or 6.
    pub(super) fn of_first_byte(first: u8) -> Option<IpVersion> {
        match first >> 4 {
            4 => Some(IpVersion::V4),
            6 => Some(IpVersion::V6),
            _ => None,
        }
    }

    /// The outer protocol of an IP-in-IP packet carrying this version.
    pub(super) const fn ip_protocol(self) -> IpProtocol {
        match self {
            IpVersion::V4 => IpProtocol::Ipip,
            IpVersion::V6 => IpProtocol::Ipv6,
        }
    }

    /// The GRE protocol type of a packet of this version.
    pub(super) const fn gre_protocol(self) -> u16 {
        match self {
            IpVersion::V4 => wire::gre::PROTO_IPV4,
            IpVersion::V6 => wire::gre::PROTO_IPV6,
        }
    }
}

/// The outer TTL (IPv4) or hop limit (IPv6), iproute2's `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ttl {
    /// Copy the inner packet's TTL or hop limit.
    Inherit,
    /// A fixed value, 1-255.
    Fixed(u8),
}

impl Ttl {
    /// Linux's default: `inherit` over IPv4 (ip_tunnel's ttl 0), 64 over IPv6 (ip6_tunnel's
    /// default hop limit).
    pub const fn default_for(kind: TunnelType) -> Ttl {
        if kind.outer_ipv6() {
            Ttl::Fixed(64)
        } else {
            Ttl::Inherit
        }
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ttl::Inherit => f.write_str("inherit"),
            Ttl::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// The outer DSCP, iproute2's `tos` (IPv6: the traffic class). The ECN bits of the outer
/// header always follow RFC 6040, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tos {
    /// Copy the inner packet's DSCP.
    Inherit,
    /// A fixed type-of-service octet; its two ECN bits are ignored.
    Fixed(u8),
}

impl Default for Tos {
    fn default() -> Tos {
        Tos::Fixed(0)
    }
}

impl fmt::Display for Tos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tos::Inherit => f.write_str("inherit"),
            Tos::Fixed(n) => write!(f, "0x{n:02x}"),
        }
    }
}

/// What sits after the outer header, as the GRE or IP-in-IP layer reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layer {
    /// An inner packet of `version` starts `offset` bytes into the outer payload.
    Inner { offset: usize, version: IpVersion },
    /// One of our keepalive probes came back.
    KeepaliveReply,
}
