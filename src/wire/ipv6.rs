//! IPv6 fixed header, RFC 8200.
//!
//! Only the 40-byte fixed header is described: `next_header` is the field as written,
//! extension headers (if any) are the start of `payload()`. Jumbograms (RFC 2675,
//! payload length 0 with a hop-by-hop option) are not supported: a zero payload length
//! means an empty payload.

use std::net::Ipv6Addr;

use crate::wire::{read_u16, read_u32, Error, IpProtocol, TrafficClass};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// The minimum link MTU every IPv6 path supports (RFC 8200 §5).
pub const MIN_MTU: usize = 1280;

mod field {
    use crate::wire::Field;

    /// Version (4 bits), traffic class (8 bits), flow label (20 bits).
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// A 20-bit flow label (RFC 6437).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowLabel(u32);

impl FlowLabel {
    /// The largest flow label.
    pub const MAX: u32 = 0x000f_ffff;

    /// A flow label, if `value` fits in 20 bits.
    pub const fn new(value: u32) -> Option<FlowLabel> {
        if value <= Self::MAX {
            Some(FlowLabel(value))
        } else {
            None
        }
    }

    /// The label's value.
    pub const fn value(self) -> u32 {
        self.0
    }
}

/// A read/write view of an IPv6 packet.
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

    /// Ensure the buffer holds the fixed header and the payload length it announces.
    /// Bytes past that (link padding) are ignored.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.total_len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn ver_tc_flow(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::VER_TC_FLOW])
    }

    /// The version field (6 for an IPv6 packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// The traffic class: DSCP and ECN.
    pub fn traffic_class(&self) -> TrafficClass {
        TrafficClass(((self.ver_tc_flow() >> 20) & 0xff) as u8)
    }

    /// The flow label.
    pub fn flow_label(&self) -> FlowLabel {
        FlowLabel(self.ver_tc_flow() & FlowLabel::MAX)
    }

    /// The payload length field: bytes after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Fixed header plus payload length: the packet's length on the wire.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// The next-header field: the first extension header or the upper-layer protocol.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        Ipv6Addr::from(octets)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        Ipv6Addr::from(octets)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload, extension headers included, in the same buffer.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_ver_tc_flow(&mut self, word: u32) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    }

    /// Set the version field.
    pub fn set_version(&mut self, version: u8) {
        let word = (self.ver_tc_flow() & 0x0fff_ffff) | (u32::from(version & 0x0f) << 28);
        self.set_ver_tc_flow(word);
    }

    /// Set the traffic class.
    pub fn set_traffic_class(&mut self, tc: TrafficClass) {
        let word = (self.ver_tc_flow() & 0xf00f_ffff) | (u32::from(tc.0) << 20);
        self.set_ver_tc_flow(word);
    }

    /// Set the flow label.
    pub fn set_flow_label(&mut self, label: FlowLabel) {
        let word = (self.ver_tc_flow() & !FlowLabel::MAX) | label.0;
        self.set_ver_tc_flow(word);
    }

    /// Set the payload length field.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Set the next-header field.
    pub fn set_next_header(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = protocol.number();
    }

    /// Set the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Set the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Set the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The high-level value of an IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// The next-header field (extension headers are not walked).
    pub next_header: IpProtocol,
    /// Payload length in bytes, extension headers included.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// DSCP and ECN.
    pub traffic_class: TrafficClass,
    /// Flow label.
    pub flow_label: FlowLabel,
}

impl Repr {
    /// Read a fixed header: lengths and version 6.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error::BadVersion(packet.version()));
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// The number of bytes `emit` writes: the fixed header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Fixed header plus payload.
    pub const fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Write the fixed header at the start of `packet`. The buffer must hold the header
    /// and `payload_len` bytes of payload; the payload is not touched.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<(), Error> {
        let payload_len = u16::try_from(self.payload_len).map_err(|_| Error::Oversized)?;
        if packet.buffer.as_ref().len() < self.total_len() {
            return Err(Error::BufferTooSmall);
        }
        packet.set_ver_tc_flow(0x6000_0000);
        packet.set_traffic_class(self.traffic_class);
        packet.set_flow_label(self.flow_label);
        packet.set_payload_len(payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    /// A DNS query for example.com, [2001:db8::1]:51820 -> [2001:db8::53]:53, flow label
    /// 0x5f3a1, hop limit 64.
    const IPV6_UDP_DNS: [u8; 77] = [
        0x60, 0x05, 0xf3, 0xa1, 0x00, 0x25, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x53, 0xca, 0x6c, 0x00, 0x35, 0x00,
        0x25, 0xef, 0xa3, 0x1a, 0x2b, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x63, 0x6f, 0x6d, 0x00, 0x00, 0x01,
        0x00, 0x01,
    ];

    fn src() -> Ipv6Addr {
        "2001:db8::1".parse().unwrap()
    }

    fn dst() -> Ipv6Addr {
        "2001:db8::53".parse().unwrap()
    }

    fn fixture_repr() -> Repr {
        Repr {
            src_addr: src(),
            dst_addr: dst(),
            next_header: IpProtocol::Udp,
            payload_len: 37,
            hop_limit: 64,
            traffic_class: TrafficClass(0),
            flow_label: FlowLabel::new(0x5f3a1).unwrap(),
        }
    }

    #[test]
    fn udp_dns_packet_deconstructs_every_field() {
        let packet = Packet::new_checked(&IPV6_UDP_DNS[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), TrafficClass(0));
        assert_eq!(packet.flow_label().value(), 0x5f3a1);
        assert_eq!(packet.payload_len(), 37);
        assert_eq!(packet.total_len(), 77);
        assert_eq!(packet.next_header(), IpProtocol::Udp);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src_addr(), src());
        assert_eq!(packet.dst_addr(), dst());
        assert_eq!(packet.payload(), &IPV6_UDP_DNS[40..]);
    }

    #[test]
    fn udp_dns_packet_constructs_same_bytes_with_setters() {
        let mut bytes = [0xa5u8; 77];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(6);
        packet.set_traffic_class(TrafficClass(0));
        packet.set_flow_label(FlowLabel::new(0x5f3a1).unwrap());
        packet.set_payload_len(37);
        packet.set_next_header(IpProtocol::Udp);
        packet.set_hop_limit(64);
        packet.set_src_addr(src());
        packet.set_dst_addr(dst());
        packet.payload_mut().copy_from_slice(&IPV6_UDP_DNS[40..]);
        assert_eq!(bytes, IPV6_UDP_DNS);
    }

    #[test]
    fn udp_dns_packet_parses_into_repr() {
        let packet = Packet::new_checked(&IPV6_UDP_DNS[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Ok(fixture_repr()));
    }

    #[test]
    fn repr_emits_fixture_header() {
        let mut bytes = IPV6_UDP_DNS;
        bytes[..40].fill(0xff);
        fixture_repr()
            .emit(&mut Packet::new_unchecked(&mut bytes[..]))
            .unwrap();
        assert_eq!(bytes, IPV6_UDP_DNS);
    }

    #[test]
    fn truncated_packet_is_rejected() {
        for len in 0..IPV6_UDP_DNS.len() {
            assert_eq!(
                Packet::new_checked(&IPV6_UDP_DNS[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn wrong_version_is_rejected_by_parse() {
        let mut bytes = IPV6_UDP_DNS;
        bytes[0] = 0x40;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Err(Error::BadVersion(4)));
    }

    #[test]
    fn traffic_class_and_flow_label_do_not_overlap() {
        let mut bytes = IPV6_UDP_DNS;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_traffic_class(TrafficClass(0xff));
        assert_eq!(packet.flow_label().value(), 0x5f3a1);
        assert_eq!(packet.version(), 6);
        packet.set_flow_label(FlowLabel::new(FlowLabel::MAX).unwrap());
        assert_eq!(packet.traffic_class(), TrafficClass(0xff));
        assert_eq!(&bytes[..4], &[0x6f, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn flow_label_rejects_values_above_20_bits() {
        assert_eq!(FlowLabel::new(0x10_0000), None);
        assert!(FlowLabel::new(FlowLabel::MAX).is_some());
    }

    #[test]
    fn emit_into_short_buffer_fails() {
        let mut bytes = [0u8; 76];
        let result = fixture_repr().emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(result, Err(Error::BufferTooSmall));
    }

    fn arb_repr() -> impl Strategy<Value = Repr> {
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u8>(),
            0usize..1500,
            any::<u8>(),
            any::<u8>(),
            0..=FlowLabel::MAX,
        )
            .prop_map(|(src, dst, nh, payload_len, hop_limit, tc, flow)| Repr {
                src_addr: Ipv6Addr::from(src),
                dst_addr: Ipv6Addr::from(dst),
                next_header: IpProtocol::from(nh),
                payload_len,
                hop_limit,
                traffic_class: TrafficClass(tc),
                flow_label: FlowLabel(flow),
            })
    }

    proptest! {
        #[test]
        fn new_checked_on_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.version(), packet.traffic_class(), packet.flow_label());
                let _ = (packet.payload_len(), packet.next_header(), packet.hop_limit());
                let _ = (packet.src_addr(), packet.dst_addr(), packet.payload());
                if let Ok(repr) = Repr::parse(&packet) {
                    prop_assert_eq!(repr.payload_len, packet.payload().len());
                }
            }
        }

        #[test]
        fn repr_round_trips_through_emit_and_parse(repr in arb_repr()) {
            let mut bytes = vec![0u8; repr.total_len()];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..])).unwrap();
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Repr::parse(&packet), Ok(repr));
        }
    }
}
