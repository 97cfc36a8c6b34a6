//! IPv4 header, RFC 791 (with the DS/ECN octet of RFC 2474 and RFC 3168).
//!
//! `check_len` validates the lengths only (buffer, IHL, total length); `Repr::parse`
//! also checks the version and the header checksum and refuses fragments, which a
//! `Repr` cannot describe. Options are kept in the buffer and skipped by `payload()`;
//! `Repr::emit` writes a 20-byte header without options.

use std::net::Ipv4Addr;

use crate::wire::{checksum, read_u16, Error, IpProtocol, TrafficClass};

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// The don't-fragment flag in the flags/fragment-offset word.
const FLAG_DF: u16 = 0x4000;
/// The more-fragments flag in the flags/fragment-offset word.
const FLAG_MF: u16 = 0x2000;
/// The fragment offset, in units of 8 bytes.
const FRAG_OFFSET_MASK: u16 = 0x1fff;

mod field {
    use crate::wire::Field;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// A read/write view of an IPv4 packet.
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

    /// Ensure every getter can read its field: the buffer holds the fixed header, the
    /// IHL is at least 5 words and within the total length, and the total length is
    /// within the buffer. Bytes past the total length (link padding) are ignored.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        let total_len = usize::from(self.total_len());
        if header_len < HEADER_LEN || header_len > total_len {
            return Err(Error::Malformed);
        }
        if total_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 for an IPv4 packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes, options included (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The type-of-service octet: DSCP and ECN.
    pub fn traffic_class(&self) -> TrafficClass {
        TrafficClass(self.buffer.as_ref()[field::DSCP_ECN])
    }

    /// The total length field: header and payload, in bytes.
    pub fn total_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::IDENT])
    }

    fn flags_offset(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::FLG_OFF])
    }

    /// The don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    /// The more-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// The fragment offset, in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & FRAG_OFFSET_MASK) * 8
    }

    /// Whether this packet is a fragment of a larger datagram (MF set or offset nonzero).
    pub fn is_fragment(&self) -> bool {
        self.flags_offset() & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// The time-to-live field.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The options between the fixed header and the payload (empty without options).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Whether the header checksum is valid.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: from the end of the header to the total length, in the same buffer.
    pub fn payload(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        &data[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the version field.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Set the header length in bytes; it is stored in 4-byte words, at most 60 bytes.
    pub fn set_header_len(&mut self, len: usize) {
        let words = ((len / 4) & 0x0f) as u8;
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | words;
    }

    /// Set the type-of-service octet.
    pub fn set_traffic_class(&mut self, tc: TrafficClass) {
        self.buffer.as_mut()[field::DSCP_ECN] = tc.0;
    }

    /// Set the total length field.
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Set the identification field.
    pub fn set_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    fn set_flags_offset(&mut self, word: u16) {
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&word.to_be_bytes());
    }

    /// Clear the three flag bits (reserved, DF, MF), keeping the fragment offset.
    pub fn clear_flags(&mut self) {
        let word = self.flags_offset() & FRAG_OFFSET_MASK;
        self.set_flags_offset(word);
    }

    /// Set or clear the don't-fragment flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        let word = self.flags_offset() & !FLAG_DF;
        self.set_flags_offset(if value { word | FLAG_DF } else { word });
    }

    /// Set or clear the more-fragments flag.
    pub fn set_more_frags(&mut self, value: bool) {
        let word = self.flags_offset() & !FLAG_MF;
        self.set_flags_offset(if value { word | FLAG_MF } else { word });
    }

    /// Set the fragment offset in bytes; it is stored in units of 8, the rest is dropped.
    pub fn set_frag_offset(&mut self, offset: u16) {
        let word = self.flags_offset() & !FRAG_OFFSET_MASK;
        self.set_flags_offset(word | (offset / 8));
    }

    /// Set the time-to-live field.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Set the protocol field.
    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.number();
    }

    /// Set the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Set the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Set the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Compute the header checksum over the header (options included) and store it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::sum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(!sum);
    }

    /// Decrement the TTL and patch the checksum incrementally (RFC 1624), as a
    /// forwarding hop does. Returns the new TTL; a TTL of 0 is left alone.
    pub fn decrement_ttl(&mut self) -> u8 {
        let ttl = self.ttl();
        if ttl == 0 {
            return 0;
        }
        let proto = self.buffer.as_ref()[field::PROTOCOL];
        let updated = checksum::update(self.checksum(), &[ttl, proto], &[ttl - 1, proto]);
        self.set_ttl(ttl - 1);
        self.set_checksum(updated);
        ttl - 1
    }

    /// The payload, mutable: from the end of the header to the total length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The high-level value of an IPv4 header without options, describing a whole
/// (unfragmented) datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Payload length in bytes (total length minus header length).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// DSCP and ECN.
    pub traffic_class: TrafficClass,
    /// The don't-fragment flag.
    pub dont_frag: bool,
    /// The identification field.
    pub ident: u16,
}

impl Repr {
    /// Read a header: lengths, version 4, a valid header checksum, not a fragment.
    /// Options are skipped.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.version() != 4 {
            return Err(Error::BadVersion(packet.version()));
        }
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        if packet.is_fragment() {
            return Err(Error::Fragmented);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            traffic_class: packet.traffic_class(),
            dont_frag: packet.dont_frag(),
            ident: packet.ident(),
        })
    }

    /// The number of bytes `emit` writes: a header without options.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header and payload length, the value of the total length field.
    pub const fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Write the header, checksum included, at the start of `packet`. The buffer must
    /// hold the header and `payload_len` bytes of payload; the payload is not touched.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<(), Error> {
        let total_len = u16::try_from(self.total_len()).map_err(|_| Error::Oversized)?;
        if packet.buffer.as_ref().len() < self.total_len() {
            return Err(Error::BufferTooSmall);
        }
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_traffic_class(self.traffic_class);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.set_flags_offset(if self.dont_frag { FLAG_DF } else { 0 });
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::Ecn;
    use proptest::prelude::*;

    /// A DNS query for example.com, 192.0.2.1:51820 -> 198.51.100.7:53, DF, TTL 64.
    const IPV4_UDP_DNS: [u8; 57] = [
        0x45, 0x00, 0x00, 0x39, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x32, 0x32, 0xc0, 0x00, 0x02,
        0x01, 0xc6, 0x33, 0x64, 0x07, 0xca, 0x6c, 0x00, 0x35, 0x00, 0x25, 0x5f, 0x2d, 0x1a, 0x2b,
        0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x61, 0x6d,
        0x70, 0x6c, 0x65, 0x03, 0x63, 0x6f, 0x6d, 0x00, 0x00, 0x01, 0x00, 0x01,
    ];

    fn fixture_repr() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(192, 0, 2, 1),
            dst_addr: Ipv4Addr::new(198, 51, 100, 7),
            protocol: IpProtocol::Udp,
            payload_len: 37,
            ttl: 64,
            traffic_class: TrafficClass(0),
            dont_frag: true,
            ident: 0x1c46,
        }
    }

    #[test]
    fn udp_dns_packet_deconstructs_every_field() {
        let packet = Packet::new_checked(&IPV4_UDP_DNS[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.traffic_class(), TrafficClass(0));
        assert_eq!(packet.total_len(), 57);
        assert_eq!(packet.ident(), 0x1c46);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), IpProtocol::Udp);
        assert_eq!(packet.checksum(), 0x3232);
        assert!(packet.verify_checksum());
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(198, 51, 100, 7));
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload(), &IPV4_UDP_DNS[20..]);
    }

    #[test]
    fn udp_dns_packet_constructs_same_bytes_with_setters() {
        let mut bytes = [0xa5u8; 57];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_traffic_class(TrafficClass(0));
        packet.set_total_len(57);
        packet.set_ident(0x1c46);
        packet.clear_flags();
        packet.set_dont_frag(true);
        packet.set_more_frags(false);
        packet.set_frag_offset(0);
        packet.set_ttl(64);
        packet.set_protocol(IpProtocol::Udp);
        packet.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
        packet.set_dst_addr(Ipv4Addr::new(198, 51, 100, 7));
        packet.fill_checksum();
        packet.payload_mut().copy_from_slice(&IPV4_UDP_DNS[20..]);
        assert_eq!(bytes, IPV4_UDP_DNS);
    }

    #[test]
    fn udp_dns_packet_parses_into_repr() {
        let packet = Packet::new_checked(&IPV4_UDP_DNS[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Ok(fixture_repr()));
    }

    #[test]
    fn repr_emits_fixture_header() {
        let mut bytes = IPV4_UDP_DNS;
        bytes[..20].fill(0);
        fixture_repr()
            .emit(&mut Packet::new_unchecked(&mut bytes[..]))
            .unwrap();
        assert_eq!(bytes, IPV4_UDP_DNS);
    }

    #[test]
    fn truncated_packet_is_rejected() {
        for len in 0..IPV4_UDP_DNS.len() {
            assert_eq!(
                Packet::new_checked(&IPV4_UDP_DNS[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn trailing_link_padding_is_outside_payload() {
        let mut padded = [0u8; 64];
        padded[..57].copy_from_slice(&IPV4_UDP_DNS);
        let packet = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload(), &IPV4_UDP_DNS[20..]);
    }

    #[test]
    fn ihl_below_five_words_is_malformed() {
        let mut bytes = IPV4_UDP_DNS;
        bytes[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(Error::Malformed)
        );
    }

    #[test]
    fn ihl_past_total_length_is_malformed() {
        let mut bytes = IPV4_UDP_DNS;
        bytes[2..4].copy_from_slice(&16u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(Error::Malformed)
        );
    }

    #[test]
    fn options_are_skipped_by_payload() {
        // Header with one 4-byte option (NOP NOP NOP EOL), 4 bytes of payload.
        let mut bytes = [0u8; 28];
        bytes[0] = 0x46;
        bytes[2..4].copy_from_slice(&28u16.to_be_bytes());
        bytes[8] = 64;
        bytes[9] = 0x11;
        bytes[20..24].copy_from_slice(&[1, 1, 1, 0]);
        bytes[24..28].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.options(), &[1, 1, 1, 0]);
        assert_eq!(packet.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(Repr::parse(&packet).unwrap().payload_len, 4);
    }

    #[test]
    fn wrong_version_is_rejected_by_parse() {
        let mut bytes = IPV4_UDP_DNS;
        bytes[0] = 0x65;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Err(Error::BadVersion(6)));
    }

    #[test]
    fn corrupted_header_fails_checksum() {
        let mut bytes = IPV4_UDP_DNS;
        bytes[8] = 63;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert_eq!(Repr::parse(&packet), Err(Error::BadChecksum));
    }

    #[test]
    fn fragment_is_refused_by_parse() {
        let mut bytes = IPV4_UDP_DNS;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_dont_frag(false);
        packet.set_more_frags(true);
        packet.fill_checksum();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.is_fragment());
        assert_eq!(Repr::parse(&packet), Err(Error::Fragmented));
    }

    #[test]
    fn frag_offset_is_in_bytes() {
        let mut bytes = IPV4_UDP_DNS;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_frag_offset(1480);
        assert_eq!(packet.frag_offset(), 1480);
        assert!(packet.dont_frag());
        assert!(packet.is_fragment());
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut bytes = IPV4_UDP_DNS;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        assert_eq!(packet.decrement_ttl(), 63);
        assert!(packet.verify_checksum());
        assert_eq!(packet.ttl(), 63);
    }

    #[test]
    fn emit_into_short_buffer_fails() {
        let mut bytes = [0u8; 56];
        let result = fixture_repr().emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(result, Err(Error::BufferTooSmall));
    }

    #[test]
    fn emit_of_oversized_payload_fails() {
        let repr = Repr {
            payload_len: 65_516,
            ..fixture_repr()
        };
        let mut bytes = vec![0u8; 70_000];
        let result = repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(result, Err(Error::Oversized));
    }

    fn arb_repr() -> impl Strategy<Value = Repr> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            0usize..1500,
            any::<u8>(),
            any::<u8>(),
            any::<bool>(),
            any::<u16>(),
        )
            .prop_map(|(src, dst, proto, payload_len, ttl, tc, df, ident)| Repr {
                src_addr: Ipv4Addr::from(src),
                dst_addr: Ipv4Addr::from(dst),
                protocol: IpProtocol::from(proto),
                payload_len,
                ttl,
                traffic_class: TrafficClass(tc),
                dont_frag: df,
                ident,
            })
    }

    proptest! {
        #[test]
        fn new_checked_on_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.version(), packet.traffic_class(), packet.ident());
                let _ = (packet.dont_frag(), packet.more_frags(), packet.frag_offset());
                let _ = (packet.ttl(), packet.protocol(), packet.checksum());
                let _ = (packet.src_addr(), packet.dst_addr(), packet.options());
                let _ = (packet.verify_checksum(), packet.payload());
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

        #[test]
        fn ecn_survives_round_trip(dscp in 0u8..64, ecn in 0u8..4) {
            let repr = Repr {
                traffic_class: TrafficClass::new(dscp, Ecn::from_bits(ecn)),
                ..fixture_repr()
            };
            let mut bytes = [0u8; 57];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..])).unwrap();
            let parsed = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
            prop_assert_eq!(parsed.traffic_class.dscp(), dscp);
            prop_assert_eq!(parsed.traffic_class.ecn().bits(), ecn);
        }
    }
}
