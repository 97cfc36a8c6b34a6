//! The ICMP errors that path-MTU discovery through tunnels needs: ICMPv4 destination
//! unreachable / fragmentation needed (RFC 792, next-hop MTU from RFC 1191) and ICMPv6
//! packet too big (RFC 4443 §3.2, RFC 8201).
//!
//! Both families share the message layout (type, code, checksum, four type-specific
//! bytes, then the quoted packet), so one `Packet` view serves both; the family comes
//! from the [`IpPair`] the message travels between, which the ICMPv6 checksum covers
//! (RFC 4443 §2.3) and the ICMPv4 checksum does not. ICMP has no length field: the
//! message is the whole buffer, so give the view exactly the IP payload.
//!
//! [`frag_needed_v4`] and [`packet_too_big_v6`] build a complete IP packet answering
//! an oversized one, and refuse ([`Error::IcmpForbidden`]) where RFC 1812 §4.3.2.7 and
//! RFC 4443 §2.4(e) forbid an error message.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::{
    checksum, ipv4, ipv6, read_u16, read_u32, Error, IpPair, IpProtocol, TrafficClass,
};

/// Length of the ICMP header, type-specific word included.
pub const HEADER_LEN: usize = 8;

/// ICMPv4 type: destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 0x03;
/// ICMPv4 destination-unreachable code: fragmentation needed and DF set.
pub const CODE_FRAG_NEEDED: u8 = 0x04;
/// ICMPv6 type: packet too big.
pub const TYPE_PACKET_TOO_BIG: u8 = 0x02;

/// Bytes of the original datagram's data quoted after its header in ICMPv4 (RFC 792).
pub const V4_QUOTED_DATA: usize = 8;
/// Hop limit / TTL of the errors twnode originates (the common host default).
pub const ERROR_HOP_LIMIT: u8 = 64;
/// ICMPv4 errors go out as internetwork control (CS6), as RFC 1812 §4.3.2.5 suggests.
const ERROR_TOS_V4: TrafficClass = TrafficClass(0xc0);

/// ICMPv4 types that are error messages (RFC 1122 §3.2.2): never answered with an error.
const ICMPV4_ERROR_TYPES: [u8; 5] = [0x03, 0x04, 0x05, 0x0b, 0x0c];
/// ICMPv6 types below this are error messages (RFC 4443 §2.1).
const ICMPV6_INFO_MIN: u8 = 0x80;

mod field {
    use crate::wire::{Field, Rest};

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// The type-specific word.
    pub const REST_OF_HEADER: Field = 4..8;
    /// ICMPv4 fragmentation needed: unused, then the next-hop MTU (RFC 1191).
    pub const UNUSED: Field = 4..6;
    pub const NEXT_HOP_MTU: Field = 6..8;
    /// ICMPv6 packet too big: the MTU.
    pub const MTU: Field = 4..8;
    pub const DATA: Rest = 8..;
}

/// A read/write view of an ICMPv4 or ICMPv6 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking it: getters may panic until `check_len` passes.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer after `check_len`.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensure the buffer holds the 8-byte header.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The message code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The type-specific word after the checksum.
    pub fn rest_of_header(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::REST_OF_HEADER])
    }

    /// The next-hop MTU of an ICMPv4 fragmentation-needed message (RFC 1191).
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::NEXT_HOP_MTU])
    }

    /// The MTU of an ICMPv6 packet-too-big message.
    pub fn mtu(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::MTU])
    }

    /// Whether the checksum is valid for a message between `pair`'s addresses: over
    /// the message for ICMPv4, over pseudo-header and message for ICMPv6.
    pub fn verify_checksum(&self, pair: &IpPair) -> bool {
        message_sum(self.buffer.as_ref(), pair) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The data after the header (for errors, the quoted packet), in the same buffer.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the message type.
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Set the message code.
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Set the next-hop MTU and zero the unused half-word before it.
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        self.buffer.as_mut()[field::UNUSED].fill(0);
        self.buffer.as_mut()[field::NEXT_HOP_MTU].copy_from_slice(&mtu.to_be_bytes());
    }

    /// Set the packet-too-big MTU.
    pub fn set_mtu(&mut self, mtu: u32) {
        self.buffer.as_mut()[field::MTU].copy_from_slice(&mtu.to_be_bytes());
    }

    /// Compute the checksum over the whole buffer (and the pseudo-header for ICMPv6)
    /// and store it.
    pub fn fill_checksum(&mut self, pair: &IpPair) {
        self.set_checksum(0);
        let sum = message_sum(self.buffer.as_ref(), pair);
        self.set_checksum(!sum);
    }

    /// The data after the header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The checksum sum of `message`: alone for ICMPv4, with the pseudo-header for ICMPv6.
fn message_sum(message: &[u8], pair: &IpPair) -> u16 {
    match pair {
        IpPair::V4 { .. } => checksum::sum(message),
        IpPair::V6 { .. } => {
            // An IPv6 payload is at most 65535 bytes (no jumbograms), so this fits.
            let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
            let pseudo = checksum::pseudo_header(pair, IpProtocol::Icmpv6, len);
            checksum::combine(&[pseudo, checksum::sum(message)])
        }
    }
}

/// The high-level value of the ICMP messages twnode handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repr<'a> {
    /// ICMPv4 destination unreachable, fragmentation needed and DF set (type 3 code 4).
    FragNeeded {
        /// The MTU of the next hop (RFC 1191).
        next_hop_mtu: u16,
        /// The start of the packet that did not fit.
        quote: &'a [u8],
    },
    /// ICMPv6 packet too big (type 2 code 0).
    PacketTooBig {
        /// The MTU of the next hop.
        mtu: u32,
        /// The start of the packet that did not fit.
        quote: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Read a message that travelled between `pair`'s addresses: the checksum must be
    /// valid, and the message one of the kinds above for that family (`Unsupported`
    /// otherwise).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&'a T>,
        pair: &IpPair,
    ) -> Result<Repr<'a>, Error> {
        packet.check_len()?;
        if !packet.verify_checksum(pair) {
            return Err(Error::BadChecksum);
        }
        match (pair, packet.msg_type(), packet.msg_code()) {
            (IpPair::V4 { .. }, TYPE_DEST_UNREACHABLE, CODE_FRAG_NEEDED) => Ok(Repr::FragNeeded {
                next_hop_mtu: packet.next_hop_mtu(),
                quote: packet.payload(),
            }),
            (IpPair::V6 { .. }, TYPE_PACKET_TOO_BIG, 0) => Ok(Repr::PacketTooBig {
                mtu: packet.mtu(),
                quote: packet.payload(),
            }),
            _ => Err(Error::Unsupported),
        }
    }

    /// The length of the message: header and quote.
    pub fn buffer_len(&self) -> usize {
        match self {
            Repr::FragNeeded { quote, .. } | Repr::PacketTooBig { quote, .. } => {
                HEADER_LEN + quote.len()
            }
        }
    }

    /// Write the message, quote and checksum included, into the first `buffer_len()`
    /// bytes of `packet`; bytes after those are left alone and are not part of the
    /// message, so size the IP payload to `buffer_len()`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        pair: &IpPair,
    ) -> Result<(), Error> {
        let len = self.buffer_len();
        let Some(message) = packet.buffer.as_mut().get_mut(..len) else {
            return Err(Error::BufferTooSmall);
        };
        let mut message = Packet::new_unchecked(message);
        match (*self, pair) {
            (
                Repr::FragNeeded {
                    next_hop_mtu,
                    quote,
                },
                IpPair::V4 { .. },
            ) => {
                message.set_msg_type(TYPE_DEST_UNREACHABLE);
                message.set_msg_code(CODE_FRAG_NEEDED);
                message.set_next_hop_mtu(next_hop_mtu);
                message.payload_mut().copy_from_slice(quote);
            }
            (Repr::PacketTooBig { mtu, quote }, IpPair::V6 { .. }) => {
                message.set_msg_type(TYPE_PACKET_TOO_BIG);
                message.set_msg_code(0);
                message.set_mtu(mtu);
                message.payload_mut().copy_from_slice(quote);
            }
            _ => return Err(Error::FamilyMismatch),
        }
        message.fill_checksum(pair);
        Ok(())
    }
}

/// Whether RFC 1812 §4.3.2.7 allows an ICMPv4 error about `orig`.
fn may_answer_v4<T: AsRef<[u8]> + ?Sized>(orig: &ipv4::Packet<&T>) -> bool {
    let src = orig.src_addr();
    let dst = orig.dst_addr();
    // A source that names no single host: zero, loopback, broadcast, multicast, class E.
    let bad_src = src.is_unspecified()
        || src.is_loopback()
        || src.is_broadcast()
        || src.is_multicast()
        || src.octets()[0] >= 240;
    if bad_src || dst.is_broadcast() || dst.is_multicast() || orig.frag_offset() != 0 {
        return false;
    }
    if orig.protocol() == IpProtocol::Icmp {
        // Never an error about an error; an ICMP packet too short to tell is refused.
        return matches!(orig.payload().first(), Some(t) if !ICMPV4_ERROR_TYPES.contains(t));
    }
    true
}

/// Whether RFC 4443 §2.4(e) allows an ICMPv6 packet-too-big about `orig`. Unlike other
/// errors, packet too big is sent for multicast destinations too (§2.4(e.3)).
fn may_answer_v6<T: AsRef<[u8]> + ?Sized>(orig: &ipv6::Packet<&T>) -> bool {
    let src = orig.src_addr();
    if src.is_unspecified() || src.is_multicast() {
        return false;
    }
    match upper_layer_v6(orig.next_header(), orig.payload()) {
        Some((IpProtocol::Icmpv6, data)) => {
            matches!(data.first(), Some(&t) if t >= ICMPV6_INFO_MIN)
        }
        _ => true,
    }
}

/// Walk the extension headers (hop-by-hop 0, routing 43, fragment 44, destination
/// options 60) to the upper-layer protocol and its data. `None` when they run past the
/// buffer or, for a non-first fragment, the upper layer is not in this packet.
fn upper_layer_v6(mut next: IpProtocol, mut data: &[u8]) -> Option<(IpProtocol, &[u8])> {
    // RFC 8200 §4.1 allows each extension header once (destination options twice), so
    // a handful of steps reaches the upper layer of any sane packet.
    for _ in 0..8 {
        let len = match next.number() {
            0x00 | 0x2b | 0x3c => (usize::from(*data.get(1)?) + 1) * 8,
            0x2c => {
                let offset = read_u16(data.get(2..4)?) & 0xfff8;
                if offset != 0 {
                    return None;
                }
                8
            }
            _ => return Some((next, data)),
        };
        next = IpProtocol::from(*data.first()?);
        data = data.get(len..)?;
    }
    None
}

/// Build an IPv4 packet from `from` carrying an ICMP "fragmentation needed and DF set"
/// about `orig`, quoting its header and the first 8 bytes of its data (RFC 792, RFC
/// 1191). Writes into `out` and returns the length written.
///
/// Fails with `IcmpForbidden` when no error may be sent about `orig`, with
/// `BufferTooSmall` when `out` is shorter than the answer, and as
/// [`ipv4::Packet::new_checked`] when `orig` is not an IPv4 packet.
pub fn frag_needed_v4(
    orig: &[u8],
    next_hop_mtu: u16,
    from: Ipv4Addr,
    out: &mut [u8],
) -> Result<usize, Error> {
    let packet = ipv4::Packet::new_checked(orig)?;
    if packet.version() != 4 {
        return Err(Error::BadVersion(packet.version()));
    }
    if !may_answer_v4(&packet) {
        return Err(Error::IcmpForbidden);
    }
    let quote_len = packet.header_len() + packet.payload().len().min(V4_QUOTED_DATA);
    let icmp = Repr::FragNeeded {
        next_hop_mtu,
        quote: &orig[..quote_len],
    };
    let ip = ipv4::Repr {
        src_addr: from,
        dst_addr: packet.src_addr(),
        protocol: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        ttl: ERROR_HOP_LIMIT,
        traffic_class: ERROR_TOS_V4,
        dont_frag: false,
        ident: 0,
    };
    let total = ip.total_len();
    let out = out.get_mut(..total).ok_or(Error::BufferTooSmall)?;
    let mut ip_packet = ipv4::Packet::new_unchecked(out);
    ip.emit(&mut ip_packet)?;
    let pair = IpPair::V4 {
        src: ip.src_addr,
        dst: ip.dst_addr,
    };
    icmp.emit(&mut Packet::new_unchecked(ip_packet.payload_mut()), &pair)?;
    Ok(total)
}

/// Build an IPv6 packet from `from` carrying an ICMPv6 "packet too big" about `orig`,
/// quoting as much of it as fits in the minimum MTU of 1280 bytes (RFC 4443 §3.2).
/// Writes into `out` and returns the length written. `mtu` is sent as given: RFC 8201
/// receivers treat values below 1280 as 1280.
///
/// Fails with `IcmpForbidden` when no error may be sent about `orig`, with
/// `BufferTooSmall` when `out` is shorter than the answer, and as
/// [`ipv6::Packet::new_checked`] when `orig` is not an IPv6 packet.
pub fn packet_too_big_v6(
    orig: &[u8],
    mtu: u32,
    from: Ipv6Addr,
    out: &mut [u8],
) -> Result<usize, Error> {
    let packet = ipv6::Packet::new_checked(orig)?;
    if packet.version() != 6 {
        return Err(Error::BadVersion(packet.version()));
    }
    if !may_answer_v6(&packet) {
        return Err(Error::IcmpForbidden);
    }
    let room = ipv6::MIN_MTU - ipv6::HEADER_LEN - HEADER_LEN;
    let quote_len = packet.total_len().min(room);
    let icmp = Repr::PacketTooBig {
        mtu,
        quote: &orig[..quote_len],
    };
    let ip = ipv6::Repr {
        src_addr: from,
        dst_addr: packet.src_addr(),
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: ERROR_HOP_LIMIT,
        traffic_class: TrafficClass::default(),
        flow_label: ipv6::FlowLabel::default(),
    };
    let total = ip.total_len();
    let out = out.get_mut(..total).ok_or(Error::BufferTooSmall)?;
    let mut ip_packet = ipv6::Packet::new_unchecked(out);
    ip.emit(&mut ip_packet)?;
    let pair = IpPair::V6 {
        src: ip.src_addr,
        dst: ip.dst_addr,
    };
    icmp.emit(&mut Packet::new_unchecked(ip_packet.payload_mut()), &pair)?;
    Ok(total)
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    /// A DNS query for example.com, 192.0.2.1:51820 -> 198.51.100.7:53, DF set.
    const IPV4_UDP_DNS: [u8; 57] = [
        0x45, 0x00, 0x00, 0x39, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x32, 0x32, 0xc0, 0x00, 0x02,
        0x01, 0xc6, 0x33, 0x64, 0x07, 0xca, 0x6c, 0x00, 0x35, 0x00, 0x25, 0x5f, 0x2d, 0x1a, 0x2b,
        0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x61, 0x6d,
        0x70, 0x6c, 0x65, 0x03, 0x63, 0x6f, 0x6d, 0x00, 0x00, 0x01, 0x00, 0x01,
    ];

    /// 203.0.113.1 -> 192.0.2.1: fragmentation needed, next-hop MTU 1400, quoting the
    /// header and 8 bytes (the UDP header) of `IPV4_UDP_DNS`. Checksums computed
    /// independently of this module.
    const FRAG_NEEDED: [u8; 56] = [
        0x45, 0xc0, 0x00, 0x38, 0x00, 0x00, 0x00, 0x00, 0x40, 0x01, 0x7c, 0x02, 0xcb, 0x00, 0x71,
        0x01, 0xc0, 0x00, 0x02, 0x01, 0x03, 0x04, 0xcd, 0x8f, 0x00, 0x00, 0x05, 0x78, 0x45, 0x00,
        0x00, 0x39, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x32, 0x32, 0xc0, 0x00, 0x02, 0x01, 0xc6,
        0x33, 0x64, 0x07, 0xca, 0x6c, 0x00, 0x35, 0x00, 0x25, 0x5f, 0x2d,
    ];

    /// A DNS query for example.com, [2001:db8::1]:51820 -> [2001:db8::53]:53.
    const IPV6_UDP_DNS: [u8; 77] = [
        0x60, 0x05, 0xf3, 0xa1, 0x00, 0x25, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x53, 0xca, 0x6c, 0x00, 0x35, 0x00,
        0x25, 0xef, 0xa3, 0x1a, 0x2b, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x63, 0x6f, 0x6d, 0x00, 0x00, 0x01,
        0x00, 0x01,
    ];

    /// Header of 2001:db8:ffff::1 -> 2001:db8::1: packet too big, MTU 1280, quoting
    /// all of `IPV6_UDP_DNS`. Checksum computed independently of this module.
    const PACKET_TOO_BIG_HEADERS: [u8; 48] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x55, 0x3a, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x38, 0x26, 0x00,
        0x00, 0x05, 0x00,
    ];

    fn router_v4() -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, 1)
    }

    fn router_v6() -> Ipv6Addr {
        "2001:db8:ffff::1".parse().unwrap()
    }

    fn host_v6() -> Ipv6Addr {
        "2001:db8::1".parse().unwrap()
    }

    fn icmp_pair_v4() -> IpPair {
        IpPair::V4 {
            src: router_v4(),
            dst: Ipv4Addr::new(192, 0, 2, 1),
        }
    }

    fn icmp_pair_v6() -> IpPair {
        IpPair::V6 {
            src: router_v6(),
            dst: host_v6(),
        }
    }

    #[test]
    fn frag_needed_matches_independent_bytes() {
        let mut out = [0u8; 576];
        let n = frag_needed_v4(&IPV4_UDP_DNS, 1400, router_v4(), &mut out).unwrap();
        assert_eq!(&out[..n], &FRAG_NEEDED[..]);
    }

    #[test]
    fn frag_needed_deconstructs_every_field() {
        let ip = ipv4::Packet::new_checked(&FRAG_NEEDED[..]).unwrap();
        assert!(ip.verify_checksum());
        let packet = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(packet.msg_type(), TYPE_DEST_UNREACHABLE);
        assert_eq!(packet.msg_code(), CODE_FRAG_NEEDED);
        assert_eq!(packet.checksum(), 0xcd8f);
        assert_eq!(packet.rest_of_header(), 1400);
        assert_eq!(packet.next_hop_mtu(), 1400);
        assert!(packet.verify_checksum(&icmp_pair_v4()));
        assert_eq!(packet.payload(), &IPV4_UDP_DNS[..28]);
        assert_eq!(
            Repr::parse(&packet, &icmp_pair_v4()),
            Ok(Repr::FragNeeded {
                next_hop_mtu: 1400,
                quote: &IPV4_UDP_DNS[..28],
            })
        );
    }

    #[test]
    fn packet_too_big_matches_independent_bytes() {
        let mut out = [0u8; 1280];
        let n = packet_too_big_v6(&IPV6_UDP_DNS, 1280, router_v6(), &mut out).unwrap();
        assert_eq!(n, 48 + IPV6_UDP_DNS.len());
        assert_eq!(&out[..48], &PACKET_TOO_BIG_HEADERS[..]);
        assert_eq!(&out[48..n], &IPV6_UDP_DNS[..]);
    }

    #[test]
    fn packet_too_big_deconstructs_every_field() {
        let mut out = [0u8; 1280];
        let n = packet_too_big_v6(&IPV6_UDP_DNS, 1280, router_v6(), &mut out).unwrap();
        let ip = ipv6::Packet::new_checked(&out[..n]).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::Icmpv6);
        assert_eq!(ip.src_addr(), router_v6());
        assert_eq!(ip.dst_addr(), host_v6());
        let packet = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(packet.msg_type(), TYPE_PACKET_TOO_BIG);
        assert_eq!(packet.msg_code(), 0);
        assert_eq!(packet.mtu(), 1280);
        assert!(packet.verify_checksum(&icmp_pair_v6()));
        assert_eq!(
            Repr::parse(&packet, &icmp_pair_v6()),
            Ok(Repr::PacketTooBig {
                mtu: 1280,
                quote: &IPV6_UDP_DNS[..],
            })
        );
    }

    #[test]
    fn packet_too_big_quote_stops_at_1280_bytes() {
        let mut orig = vec![0u8; 1500];
        let repr = ipv6::Repr {
            src_addr: host_v6(),
            dst_addr: "2001:db8::53".parse().unwrap(),
            next_header: IpProtocol::Udp,
            payload_len: 1460,
            hop_limit: 64,
            traffic_class: TrafficClass::default(),
            flow_label: ipv6::FlowLabel::default(),
        };
        repr.emit(&mut ipv6::Packet::new_unchecked(&mut orig[..]))
            .unwrap();
        let mut out = [0u8; 1500];
        let n = packet_too_big_v6(&orig, 1400, router_v6(), &mut out).unwrap();
        assert_eq!(n, ipv6::MIN_MTU);
        let ip = ipv6::Packet::new_checked(&out[..n]).unwrap();
        let packet = Packet::new_checked(ip.payload()).unwrap();
        assert!(packet.verify_checksum(&icmp_pair_v6()));
        assert_eq!(packet.payload(), &orig[..1232]);
    }

    #[test]
    fn truncated_message_is_rejected() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&FRAG_NEEDED[20..20 + len]).err(),
                Some(Error::Truncated)
            );
        }
    }

    #[test]
    fn builders_reject_truncated_originals() {
        let mut out = [0u8; 1280];
        assert_eq!(
            frag_needed_v4(&IPV4_UDP_DNS[..56], 1400, router_v4(), &mut out),
            Err(Error::Truncated)
        );
        assert_eq!(
            packet_too_big_v6(&IPV6_UDP_DNS[..76], 1280, router_v6(), &mut out),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn builders_reject_small_output_buffers() {
        let mut out = [0u8; 55];
        assert_eq!(
            frag_needed_v4(&IPV4_UDP_DNS, 1400, router_v4(), &mut out),
            Err(Error::BufferTooSmall)
        );
        let mut out = [0u8; 124];
        assert_eq!(
            packet_too_big_v6(&IPV6_UDP_DNS, 1280, router_v6(), &mut out),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn no_frag_needed_about_an_icmp_error() {
        let mut out = [0u8; 576];
        let mut error = FRAG_NEEDED;
        assert_eq!(
            frag_needed_v4(&error, 1400, router_v4(), &mut out),
            Err(Error::IcmpForbidden)
        );
        // An echo request is not an error and may be answered.
        error[20] = 0x08;
        assert!(frag_needed_v4(&error, 1400, router_v4(), &mut out).is_ok());
    }

    #[test]
    fn no_frag_needed_about_non_first_fragment() {
        let mut orig = IPV4_UDP_DNS;
        let mut packet = ipv4::Packet::new_unchecked(&mut orig[..]);
        packet.set_frag_offset(1480);
        packet.fill_checksum();
        let mut out = [0u8; 576];
        assert_eq!(
            frag_needed_v4(&orig, 1400, router_v4(), &mut out),
            Err(Error::IcmpForbidden)
        );
    }

    #[test]
    fn no_frag_needed_about_multicast_or_broadcast() {
        let mut out = [0u8; 576];
        for (src, dst) in [
            (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(224, 0, 0, 251)),
            (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::BROADCAST),
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(198, 51, 100, 7)),
            (Ipv4Addr::new(224, 0, 0, 1), Ipv4Addr::new(198, 51, 100, 7)),
        ] {
            let mut orig = IPV4_UDP_DNS;
            let mut packet = ipv4::Packet::new_unchecked(&mut orig[..]);
            packet.set_src_addr(src);
            packet.set_dst_addr(dst);
            assert_eq!(
                frag_needed_v4(&orig, 1400, router_v4(), &mut out),
                Err(Error::IcmpForbidden),
                "{src} -> {dst}"
            );
        }
    }

    #[test]
    fn no_packet_too_big_about_an_icmpv6_error() {
        let mut out = [0u8; 1280];
        let n = packet_too_big_v6(&IPV6_UDP_DNS, 1280, router_v6(), &mut out).unwrap();
        let error = out[..n].to_vec();
        assert_eq!(
            packet_too_big_v6(&error, 1280, router_v6(), &mut out),
            Err(Error::IcmpForbidden)
        );
    }

    #[test]
    fn no_packet_too_big_about_icmpv6_error_behind_extension_header() {
        // Hop-by-hop options (8 bytes, PadN) in front of an ICMPv6 destination
        // unreachable (type 1).
        let mut orig = [0u8; 56];
        let repr = ipv6::Repr {
            src_addr: host_v6(),
            dst_addr: router_v6(),
            next_header: IpProtocol::Unknown(0),
            payload_len: 16,
            hop_limit: 64,
            traffic_class: TrafficClass::default(),
            flow_label: ipv6::FlowLabel::default(),
        };
        repr.emit(&mut ipv6::Packet::new_unchecked(&mut orig[..]))
            .unwrap();
        orig[40..48].copy_from_slice(&[0x3a, 0x00, 0x01, 0x04, 0, 0, 0, 0]);
        orig[48] = 0x01;
        let mut out = [0u8; 1280];
        assert_eq!(
            packet_too_big_v6(&orig, 1280, router_v6(), &mut out),
            Err(Error::IcmpForbidden)
        );
        // The same with an echo request (type 128) behind it may be answered.
        orig[48] = 0x80;
        assert!(packet_too_big_v6(&orig, 1280, router_v6(), &mut out).is_ok());
    }

    #[test]
    fn packet_too_big_is_sent_for_multicast_destinations() {
        let mut orig = IPV6_UDP_DNS;
        let mut packet = ipv6::Packet::new_unchecked(&mut orig[..]);
        packet.set_dst_addr("ff02::fb".parse().unwrap());
        let mut out = [0u8; 1280];
        assert!(packet_too_big_v6(&orig, 1280, router_v6(), &mut out).is_ok());
        let mut packet = ipv6::Packet::new_unchecked(&mut orig[..]);
        packet.set_src_addr(Ipv6Addr::UNSPECIFIED);
        assert_eq!(
            packet_too_big_v6(&orig, 1280, router_v6(), &mut out),
            Err(Error::IcmpForbidden)
        );
    }

    #[test]
    fn builders_reject_the_other_family() {
        let mut out = [0u8; 1280];
        // Lengths consistent for the view, version from the other family.
        let mut v6_as_v4 = [0u8; 20];
        v6_as_v4[0] = 0x65;
        v6_as_v4[3] = 20;
        assert_eq!(
            frag_needed_v4(&v6_as_v4, 1400, router_v4(), &mut out),
            Err(Error::BadVersion(6))
        );
        let mut v4_as_v6 = [0u8; 40];
        v4_as_v6[0] = 0x45;
        assert_eq!(
            packet_too_big_v6(&v4_as_v6, 1280, router_v6(), &mut out),
            Err(Error::BadVersion(4))
        );
        // Real packets of the other family do not even pass the length checks.
        assert!(frag_needed_v4(&IPV6_UDP_DNS, 1400, router_v4(), &mut out).is_err());
        assert!(packet_too_big_v6(&IPV4_UDP_DNS, 1280, router_v6(), &mut out).is_err());
    }

    #[test]
    fn emit_with_wrong_family_fails() {
        let repr = Repr::FragNeeded {
            next_hop_mtu: 1400,
            quote: &[],
        };
        let mut bytes = [0u8; 8];
        let result = repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), &icmp_pair_v6());
        assert_eq!(result, Err(Error::FamilyMismatch));
    }

    #[test]
    fn other_messages_are_unsupported() {
        // Echo request, checksum valid.
        let mut bytes = [0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x00, 0x01];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum(&icmp_pair_v4());
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            Repr::parse(&packet, &icmp_pair_v4()),
            Err(Error::Unsupported)
        );
    }

    #[test]
    fn corrupted_message_fails_checksum() {
        let mut bytes = FRAG_NEEDED;
        bytes[27] ^= 0x01;
        let packet = Packet::new_checked(&bytes[20..]).unwrap();
        assert_eq!(
            Repr::parse(&packet, &icmp_pair_v4()),
            Err(Error::BadChecksum)
        );
    }

    fn arb_pair() -> impl Strategy<Value = IpPair> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(s, d)| IpPair::V4 {
                src: Ipv4Addr::from(s),
                dst: Ipv4Addr::from(d),
            }),
            (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(s, d)| IpPair::V6 {
                src: Ipv6Addr::from(s),
                dst: Ipv6Addr::from(d),
            }),
        ]
    }

    proptest! {
        #[test]
        fn new_checked_on_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            pair in arb_pair(),
        ) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.msg_type(), packet.msg_code(), packet.checksum());
                let _ = (packet.rest_of_header(), packet.next_hop_mtu(), packet.mtu());
                let _ = (packet.verify_checksum(&pair), packet.payload());
                let _ = Repr::parse(&packet, &pair);
            }
        }

        #[test]
        fn builders_on_arbitrary_originals_never_panic(
            orig in proptest::collection::vec(any::<u8>(), 0..1500),
            mtu in any::<u16>(),
        ) {
            let mut out = [0u8; 1500];
            if let Ok(n) = frag_needed_v4(&orig, mtu, router_v4(), &mut out) {
                let ip = ipv4::Packet::new_checked(&out[..n]).unwrap();
                prop_assert!(ipv4::Repr::parse(&ip).is_ok());
                let pair = IpPair::V4 { src: ip.src_addr(), dst: ip.dst_addr() };
                let icmp = Packet::new_checked(ip.payload()).unwrap();
                prop_assert!(Repr::parse(&icmp, &pair).is_ok());
            }
            if let Ok(n) = packet_too_big_v6(&orig, u32::from(mtu), router_v6(), &mut out) {
                prop_assert!(n <= ipv6::MIN_MTU);
                let ip = ipv6::Packet::new_checked(&out[..n]).unwrap();
                let pair = IpPair::V6 { src: ip.src_addr(), dst: ip.dst_addr() };
                let icmp = Packet::new_checked(ip.payload()).unwrap();
                prop_assert!(Repr::parse(&icmp, &pair).is_ok());
            }
        }

        #[test]
        fn repr_round_trips_through_emit_and_parse(
            v6 in any::<bool>(),
            mtu in any::<u32>(),
            quote in proptest::collection::vec(any::<u8>(), 0..128),
            pair in arb_pair(),
        ) {
            let (repr, pair) = match (v6, pair) {
                (false, pair @ IpPair::V4 { .. }) => (
                    Repr::FragNeeded { next_hop_mtu: mtu as u16, quote: &quote[..] }, pair),
                (true, pair @ IpPair::V6 { .. }) => (
                    Repr::PacketTooBig { mtu, quote: &quote[..] }, pair),
                _ => return Ok(()),
            };
            let mut bytes = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), &pair).unwrap();
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Repr::parse(&packet, &pair), Ok(repr));
        }
    }
}
