//! Zero-copy views of the packet headers twnode reads and writes.
//!
//! Every format follows smoltcp's contract:
//!
//! - `Packet<T: AsRef<[u8]>>` is a view over bytes that the caller owns. `new_unchecked`
//!   wraps without looking; `new_checked` runs `check_len` first. Once `check_len` has
//!   passed, no getter panics, and no setter panics as long as it leaves the lengths
//!   alone. Untrusted input always goes through `new_checked`.
//! - `payload()` returns a slice of the same buffer, so an inner packet is parsed in place
//!   and nothing is copied or allocated per packet.
//! - A `Repr` is the checked, high-level value of a header: `Repr::parse` reads it,
//!   `Repr::emit` writes it, `Repr::buffer_len` says how many header bytes `emit` writes.
//!   `emit` never writes a payload the caller already placed after the header; where a
//!   checksum covers the payload, it is computed over what is in the buffer.
//!
//! [`ip_version`], [`ip_src`] and [`ip_dst`] look at a raw inner packet without building a
//! view: they are on the hot path that routes packets read from a TUN device, and they
//! never panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub mod checksum;
pub mod esp;
pub mod esp_hello;
pub mod gre;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod udp;

/// A field at a fixed offset: `mod field` in each format names these.
type Field = core::ops::Range<usize>;

/// Everything from an offset to the end of the packet.
type Rest = core::ops::RangeFrom<usize>;

/// Why bytes are not a packet of the expected format, or why one cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer ends before the fixed header, or before the length a header field claims.
    #[error("packet truncated: the buffer is shorter than the header or its length field")]
    Truncated,
    /// A length field contradicts the header itself (an IPv4 IHL below 5 words or past
    /// the total length, a UDP length below 8).
    #[error("malformed packet: a length field contradicts the header")]
    Malformed,
    /// The version field is not the one this format expects (IP version, GRE version).
    #[error("unexpected version {0} in the packet header")]
    BadVersion(u8),
    /// The checksum carried by the packet does not match its contents.
    #[error("checksum mismatch: the packet was corrupted or built wrong")]
    BadChecksum,
    /// The packet is valid on the wire but uses a feature this module does not handle
    /// (GRE routing from RFC 1701, an ICMP message other than the ones twnode builds).
    #[error("unsupported packet feature")]
    Unsupported,
    /// The packet is an IPv4 fragment: wire/ does not reassemble, a `Repr` describes
    /// whole datagrams only.
    #[error("IPv4 fragment: reassemble before parsing")]
    Fragmented,
    /// The output buffer cannot hold the header (and payload) that `emit` or a builder
    /// writes: give it a larger buffer.
    #[error("output buffer too small for the packet being written")]
    BufferTooSmall,
    /// A `Repr`'s length does not fit the header's length field (more than 65535 bytes).
    #[error("packet too long for its length field")]
    Oversized,
    /// IPv4 addresses were given for an IPv6-only message, or the reverse.
    #[error("address family does not match the message")]
    FamilyMismatch,
    /// RFC 1812 §4.3.2.7 / RFC 4443 §2.4(e) forbid sending an ICMP error about this
    /// packet: it is itself an ICMP error, a non-first fragment, or it has a source
    /// that names no single node. Drop it silently.
    #[error("no ICMP error may be sent about this packet")]
    IcmpForbidden,
}

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers"), the IPv4 protocol
/// field and the IPv6 next-header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// ICMP for IPv4 (RFC 792).
    Icmp,
    /// TCP.
    Tcp,
    /// UDP (RFC 768).
    Udp,
    /// IPv4 encapsulated in IP (RFC 2003).
    Ipip,
    /// IPv6 encapsulated in IP (RFC 4213, RFC 2473).
    Ipv6,
    /// GRE (RFC 2784).
    Gre,
    /// ESP (RFC 4303).
    Esp,
    /// ICMP for IPv6 (RFC 4443).
    Icmpv6,
    /// Any other number, carried unchanged.
    Unknown(u8),
}

impl IpProtocol {
    /// The number as it appears on the wire.
    pub const fn number(self) -> u8 {
        match self {
            IpProtocol::Icmp => 0x01,
            IpProtocol::Ipip => 0x04,
            IpProtocol::Tcp => 0x06,
            IpProtocol::Udp => 0x11,
            IpProtocol::Ipv6 => 0x29,
            IpProtocol::Gre => 0x2f,
            IpProtocol::Esp => 0x32,
            IpProtocol::Icmpv6 => 0x3a,
            IpProtocol::Unknown(n) => n,
        }
    }
}

impl From<u8> for IpProtocol {
    fn from(n: u8) -> Self {
        match n {
            0x01 => IpProtocol::Icmp,
            0x04 => IpProtocol::Ipip,
            0x06 => IpProtocol::Tcp,
            0x11 => IpProtocol::Udp,
            0x29 => IpProtocol::Ipv6,
            0x2f => IpProtocol::Gre,
            0x32 => IpProtocol::Esp,
            0x3a => IpProtocol::Icmpv6,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> u8 {
        p.number()
    }
}

/// ECN codepoint, the two low bits of the traffic class (RFC 3168 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Ecn {
    /// Not ECN-capable transport.
    #[default]
    NotEct,
    /// ECN-capable transport, ECT(1).
    Ect1,
    /// ECN-capable transport, ECT(0).
    Ect0,
    /// Congestion experienced.
    Ce,
}

impl Ecn {
    /// The two-bit codepoint.
    pub const fn bits(self) -> u8 {
        match self {
            Ecn::NotEct => 0b00,
            Ecn::Ect1 => 0b01,
            Ecn::Ect0 => 0b10,
            Ecn::Ce => 0b11,
        }
    }

    /// The codepoint in the two low bits of `bits`; higher bits are ignored.
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0b00 => Ecn::NotEct,
            0b01 => Ecn::Ect1,
            0b10 => Ecn::Ect0,
            _ => Ecn::Ce,
        }
    }
}

/// The IPv4 type-of-service octet, which is the same octet as the IPv6 traffic class:
/// a 6-bit DSCP (RFC 2474) above a 2-bit ECN field (RFC 3168). Tunnels copy it between
/// inner and outer headers (RFC 6040), hence one type for both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TrafficClass(pub u8);

impl TrafficClass {
    /// Build from a DSCP (only its low 6 bits are kept) and an ECN codepoint.
    pub const fn new(dscp: u8, ecn: Ecn) -> Self {
        TrafficClass(((dscp & 0x3f) << 2) | ecn.bits())
    }

    /// The differentiated services codepoint.
    pub const fn dscp(self) -> u8 {
        self.0 >> 2
    }

    /// The ECN codepoint.
    pub const fn ecn(self) -> Ecn {
        Ecn::from_bits(self.0)
    }

    /// The same DSCP with another ECN codepoint.
    pub const fn with_ecn(self, ecn: Ecn) -> Self {
        TrafficClass((self.0 & !0b11) | ecn.bits())
    }
}

/// The source and destination of an IP header, of one family by construction: the
/// addresses a pseudo-header checksum (UDP, ICMPv6) covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpPair {
    /// IPv4 source and destination.
    V4 {
        /// Source address.
        src: Ipv4Addr,
        /// Destination address.
        dst: Ipv4Addr,
    },
    /// IPv6 source and destination.
    V6 {
        /// Source address.
        src: Ipv6Addr,
        /// Destination address.
        dst: Ipv6Addr,
    },
}

impl IpPair {
    /// Pair two addresses; `None` if their families differ.
    pub fn new(src: IpAddr, dst: IpAddr) -> Option<Self> {
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Some(IpPair::V4 { src, dst }),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Some(IpPair::V6 { src, dst }),
            _ => None,
        }
    }

    /// The source address.
    pub fn src(&self) -> IpAddr {
        match *self {
            IpPair::V4 { src, .. } => IpAddr::V4(src),
            IpPair::V6 { src, .. } => IpAddr::V6(src),
        }
    }

    /// The destination address.
    pub fn dst(&self) -> IpAddr {
        match *self {
            IpPair::V4 { dst, .. } => IpAddr::V4(dst),
            IpPair::V6 { dst, .. } => IpAddr::V6(dst),
        }
    }
}

/// The IP version (4 or 6) of `buf`, if its first nibble says so and the fixed header of
/// that version fits in `buf`. Looks at nothing else: parse with `new_checked` before
/// trusting lengths or payload.
pub fn ip_version(buf: &[u8]) -> Option<u8> {
    match buf.first()? >> 4 {
        4 if buf.len() >= ipv4::HEADER_LEN => Some(4),
        6 if buf.len() >= ipv6::HEADER_LEN => Some(6),
        _ => None,
    }
}

/// The source address of the IPv4 or IPv6 packet in `buf`, under the same conditions as
/// [`ip_version`]. Never panics.
pub fn ip_src(buf: &[u8]) -> Option<IpAddr> {
    match ip_version(buf)? {
        4 => ipv4_at(buf.get(12..16)?).map(IpAddr::V4),
        _ => ipv6_at(buf.get(8..24)?).map(IpAddr::V6),
    }
}

/// The destination address of the IPv4 or IPv6 packet in `buf`, under the same
/// conditions as [`ip_version`]. Never panics.
pub fn ip_dst(buf: &[u8]) -> Option<IpAddr> {
    match ip_version(buf)? {
        4 => ipv4_at(buf.get(16..20)?).map(IpAddr::V4),
        _ => ipv6_at(buf.get(24..40)?).map(IpAddr::V6),
    }
}

/// `addr` with every bit beyond `prefix` cleared: the network a prefix names.
pub fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// Read a big-endian u16 from the first two bytes of `b` (callers pass a `Field`).
fn read_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Read a big-endian u32 from the first four bytes of `b` (callers pass a `Field`).
fn read_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// An IPv4 address from exactly four bytes.
fn ipv4_at(b: &[u8]) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = b.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

/// An IPv6 address from exactly sixteen bytes.
fn ipv6_at(b: &[u8]) -> Option<Ipv6Addr> {
    let octets: [u8; 16] = b.try_into().ok()?;
    Some(Ipv6Addr::from(octets))
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ip_dispatch_reads_ipv4_addresses() {
        let mut buf = [0u8; 20];
        buf[0] = 0x45;
        buf[12..16].copy_from_slice(&[192, 0, 2, 1]);
        buf[16..20].copy_from_slice(&[198, 51, 100, 7]);
        assert_eq!(ip_version(&buf), Some(4));
        assert_eq!(ip_src(&buf), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(ip_dst(&buf), Some("198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn ip_dispatch_reads_ipv6_addresses() {
        let mut buf = [0u8; 40];
        buf[0] = 0x60;
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        buf[8..24].copy_from_slice(&src.octets());
        buf[24..40].copy_from_slice(&dst.octets());
        assert_eq!(ip_version(&buf), Some(6));
        assert_eq!(ip_src(&buf), Some(IpAddr::V6(src)));
        assert_eq!(ip_dst(&buf), Some(IpAddr::V6(dst)));
    }

    #[test]
    fn ip_dispatch_rejects_short_or_unknown_version() {
        assert_eq!(ip_version(&[]), None);
        assert_eq!(ip_version(&[0x45; 19]), None);
        assert_eq!(ip_dst(&[0x60; 39]), None);
        assert_eq!(ip_src(&[0x50; 64]), None);
    }

    #[test]
    fn ip_protocol_numbers_match_iana() {
        let known = [
            (IpProtocol::Icmp, 1),
            (IpProtocol::Ipip, 4),
            (IpProtocol::Tcp, 6),
            (IpProtocol::Udp, 17),
            (IpProtocol::Ipv6, 41),
            (IpProtocol::Gre, 47),
            (IpProtocol::Esp, 50),
            (IpProtocol::Icmpv6, 58),
        ];
        for (proto, number) in known {
            assert_eq!(proto.number(), number);
            assert_eq!(IpProtocol::from(number), proto);
        }
        assert_eq!(IpProtocol::from(132), IpProtocol::Unknown(132));
    }

    #[test]
    fn traffic_class_splits_dscp_and_ecn() {
        let tc = TrafficClass(0xb9); // EF (46) with ECT(1)
        assert_eq!(tc.dscp(), 46);
        assert_eq!(tc.ecn(), Ecn::Ect1);
        assert_eq!(TrafficClass::new(46, Ecn::Ect1), tc);
        assert_eq!(tc.with_ecn(Ecn::Ce), TrafficClass(0xbb));
    }

    #[test]
    fn ip_pair_rejects_mixed_families() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(IpPair::new(v4, v6), None);
        let pair = IpPair::new(v4, v4).unwrap();
        assert_eq!((pair.src(), pair.dst()), (v4, v4));
    }

    proptest! {
        #[test]
        fn ip_dispatch_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let version = ip_version(&bytes);
            prop_assert_eq!(ip_src(&bytes).is_some(), version.is_some());
            prop_assert_eq!(ip_dst(&bytes).is_some(), version.is_some());
        }

        #[test]
        fn ip_protocol_number_round_trips(n in any::<u8>()) {
            prop_assert_eq!(IpProtocol::from(n).number(), n);
        }
    }
}
