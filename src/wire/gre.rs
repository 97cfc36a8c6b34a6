//! GRE header, RFC 2784 with the key and sequence number extensions of RFC 2890.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |C| |K|S| Reserved0       | Ver |         Protocol Type         |
//! |      Checksum (optional)      |       Reserved1 (optional)    |
//! |                         Key (optional)                        |
//! |                 Sequence Number (optional)                    |
//! ```
//!
//! GRE has no length field: the payload runs to the end of the buffer, so the view
//! must be given exactly the GRE packet (the outer IP payload). `Repr::parse` follows
//! RFC 2784 §2.3.1: bits 1, 4 and 5 (RFC 1701's routing, strict source route and
//! recursion bits) make a packet unsupported, bits 6-12 are ignored, and only version 0
//! is accepted (version 1 is PPTP's enhanced GRE).

use crate::wire::{checksum, read_u16, read_u32, Error, Field};

/// Length of the header without optional fields.
pub const HEADER_LEN: usize = 4;
/// Length of the longest header: checksum, key and sequence number present.
pub const MAX_HEADER_LEN: usize = 16;

/// Protocol type of an IPv4 payload (an EtherType).
pub const PROTO_IPV4: u16 = 0x0800;
/// Protocol type of an IPv6 payload.
pub const PROTO_IPV6: u16 = 0x86dd;
/// Protocol type of an Ethernet frame (transparent Ethernet bridging, gretap).
pub const PROTO_TEB: u16 = 0x6558;
/// Protocol type of an MPLS unicast payload (RFC 4023).
pub const PROTO_MPLS: u16 = 0x8847;

/// Checksum present (RFC 2784).
const FLAG_C: u16 = 0x8000;
/// Key present (RFC 2890).
const FLAG_K: u16 = 0x2000;
/// Sequence number present (RFC 2890).
const FLAG_S: u16 = 0x1000;
/// Bits 1, 4 and 5: RFC 1701 routing present, strict source route, recursion high bit.
/// A receiver that does not implement RFC 1701 discards packets with any of them set.
const FLAGS_RFC1701: u16 = 0x4c00;
/// The version field, bits 13-15.
const VERSION_MASK: u16 = 0x0007;

mod field {
    use crate::wire::Field;

    pub const FLAGS: Field = 0..2;
    pub const PROTOCOL: Field = 2..4;
    /// Start of the optional fields; their offsets depend on the C and K bits.
    pub const OPTIONAL: usize = 4;
}

/// A GRE key (RFC 2890 §2.1): identifies a flow or tunnel between the same endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub u32);

/// A read/write view of a GRE packet.
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

    /// Ensure the buffer holds the fixed header and every optional field its C, K and S
    /// bits announce.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.header_len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The first 16 bits: flags, reserved bits and version.
    pub fn flags(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::FLAGS])
    }

    /// Whether the checksum field is present (C bit).
    pub fn checksum_present(&self) -> bool {
        self.flags() & FLAG_C != 0
    }

    /// Whether the key field is present (K bit).
    pub fn key_present(&self) -> bool {
        self.flags() & FLAG_K != 0
    }

    /// Whether the sequence number field is present (S bit).
    pub fn seq_present(&self) -> bool {
        self.flags() & FLAG_S != 0
    }

    /// Whether any RFC 1701 bit (routing, strict source route, recursion) is set.
    pub fn rfc1701_bits(&self) -> bool {
        self.flags() & FLAGS_RFC1701 != 0
    }

    /// The version field.
    pub fn version(&self) -> u8 {
        (self.flags() & VERSION_MASK) as u8
    }

    /// The protocol type of the payload (an EtherType, see the `PROTO_*` constants).
    pub fn protocol_type(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The header length in bytes, as the C, K and S bits make it.
    pub fn header_len(&self) -> usize {
        HEADER_LEN
            + 4 * usize::from(self.checksum_present())
            + 4 * usize::from(self.key_present())
            + 4 * usize::from(self.seq_present())
    }

    fn checksum_field(&self) -> Option<Field> {
        self.checksum_present()
            .then_some(field::OPTIONAL..field::OPTIONAL + 2)
    }

    fn key_field(&self) -> Option<Field> {
        let start = field::OPTIONAL + 4 * usize::from(self.checksum_present());
        self.key_present().then_some(start..start + 4)
    }

    fn seq_field(&self) -> Option<Field> {
        let start = field::OPTIONAL
            + 4 * usize::from(self.checksum_present())
            + 4 * usize::from(self.key_present());
        self.seq_present().then_some(start..start + 4)
    }

    /// The checksum field, if present.
    pub fn checksum(&self) -> Option<u16> {
        let range = self.checksum_field()?;
        self.buffer.as_ref().get(range).map(read_u16)
    }

    /// The key, if present.
    pub fn key(&self) -> Option<Key> {
        let range = self.key_field()?;
        self.buffer.as_ref().get(range).map(|b| Key(read_u32(b)))
    }

    /// The sequence number, if present.
    pub fn seq(&self) -> Option<u32> {
        let range = self.seq_field()?;
        self.buffer.as_ref().get(range).map(read_u32)
    }

    /// Whether the checksum, computed over header and payload, is valid; true when no
    /// checksum is present.
    pub fn verify_checksum(&self) -> bool {
        !self.checksum_present() || checksum::sum(self.buffer.as_ref()) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: everything after the header, in the same buffer.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the first 16 bits: flags, reserved bits and version. Changing C, K or S moves
    /// the optional fields: set the flags before the fields.
    pub fn set_flags(&mut self, flags: u16) {
        self.buffer.as_mut()[field::FLAGS].copy_from_slice(&flags.to_be_bytes());
    }

    /// Set the protocol type.
    pub fn set_protocol_type(&mut self, protocol: u16) {
        self.buffer.as_mut()[field::PROTOCOL].copy_from_slice(&protocol.to_be_bytes());
    }

    /// Write `bytes` into an optional field: `Malformed` if the flags say the field is
    /// absent, `Truncated` if the buffer is too short for it.
    fn write_optional(&mut self, range: Option<Field>, bytes: &[u8]) -> Result<(), Error> {
        let range = range.ok_or(Error::Malformed)?;
        let dst = self
            .buffer
            .as_mut()
            .get_mut(range)
            .ok_or(Error::Truncated)?;
        dst.copy_from_slice(bytes);
        Ok(())
    }

    /// Set the checksum field and zero Reserved1; needs the C bit.
    pub fn set_checksum(&mut self, value: u16) -> Result<(), Error> {
        let range = self.checksum_field().map(|r| r.start..r.start + 4);
        let mut bytes = [0u8; 4];
        bytes[..2].copy_from_slice(&value.to_be_bytes());
        self.write_optional(range, &bytes)
    }

    /// Set the key field; needs the K bit.
    pub fn set_key(&mut self, key: Key) -> Result<(), Error> {
        let range = self.key_field();
        self.write_optional(range, &key.0.to_be_bytes())
    }

    /// Set the sequence number field; needs the S bit.
    pub fn set_seq(&mut self, seq: u32) -> Result<(), Error> {
        let range = self.seq_field();
        self.write_optional(range, &seq.to_be_bytes())
    }

    /// Compute the checksum over header and payload (the whole buffer) and store it;
    /// needs the C bit.
    pub fn fill_checksum(&mut self) -> Result<(), Error> {
        self.set_checksum(0)?;
        let sum = checksum::sum(self.buffer.as_ref());
        self.set_checksum(!sum)
    }

    /// The payload, mutable: everything after the header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The high-level value of a GRE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Protocol type of the payload (see the `PROTO_*` constants).
    pub protocol: u16,
    /// The key, when the K bit is set.
    pub key: Option<Key>,
    /// The sequence number, when the S bit is set.
    pub seq: Option<u32>,
    /// Whether a checksum is present: verified by `parse`, computed by `emit`.
    pub checksum: bool,
}

impl Repr {
    /// Read a header: lengths, version 0, no RFC 1701 bits, a valid checksum if present.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.version() != 0 {
            return Err(Error::BadVersion(packet.version()));
        }
        if packet.rfc1701_bits() {
            return Err(Error::Unsupported);
        }
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        Ok(Repr {
            protocol: packet.protocol_type(),
            key: packet.key(),
            seq: packet.seq(),
            checksum: packet.checksum_present(),
        })
    }

    /// The number of bytes `emit` writes: the header with its optional fields.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
            + if self.checksum { 4 } else { 0 }
            + if self.key.is_some() { 4 } else { 0 }
            + if self.seq.is_some() { 4 } else { 0 }
    }

    /// Write the header at the start of `packet`. Everything after `buffer_len()` bytes
    /// is the payload, which must already be in place when a checksum is asked for.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<(), Error> {
        if packet.buffer.as_ref().len() < self.buffer_len() {
            return Err(Error::BufferTooSmall);
        }
        let mut flags = 0;
        if self.checksum {
            flags |= FLAG_C;
        }
        if self.key.is_some() {
            flags |= FLAG_K;
        }
        if self.seq.is_some() {
            flags |= FLAG_S;
        }
        packet.set_flags(flags);
        packet.set_protocol_type(self.protocol);
        if let Some(key) = self.key {
            packet.set_key(key)?;
        }
        if let Some(seq) = self.seq {
            packet.set_seq(seq)?;
        }
        if self.checksum {
            packet.fill_checksum()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    /// The first bytes of an inner IPv4 packet, standing in for any payload.
    const INNER: [u8; 8] = [0x45, 0x00, 0x00, 0x39, 0x1c, 0x46, 0x40, 0x00];

    /// RFC 2784 header without optional fields, IPv4 payload.
    const GRE_PLAIN: [u8; 12] = [
        0x00, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x39, 0x1c, 0x46, 0x40, 0x00,
    ];

    /// RFC 2890 header with key 1234 and sequence number 7, IPv4 payload.
    const GRE_KEY_SEQ: [u8; 20] = [
        0x30, 0x00, 0x08, 0x00, 0x00, 0x00, 0x04, 0xd2, 0x00, 0x00, 0x00, 0x07, 0x45, 0x00, 0x00,
        0x39, 0x1c, 0x46, 0x40, 0x00,
    ];

    /// Header with checksum, key 0xdeadbeef and sequence number 0xffffffff.
    const GRE_ALL: [u8; 24] = [
        0xb0, 0x00, 0x08, 0x00, 0x08, 0xe2, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff,
        0xff, 0x45, 0x00, 0x00, 0x39, 0x1c, 0x46, 0x40, 0x00,
    ];

    #[test]
    fn plain_gre_parses_fields() {
        let packet = Packet::new_checked(&GRE_PLAIN[..]).unwrap();
        assert_eq!(packet.flags(), 0);
        assert!(!packet.checksum_present());
        assert!(!packet.key_present());
        assert!(!packet.seq_present());
        assert_eq!(packet.version(), 0);
        assert_eq!(packet.protocol_type(), PROTO_IPV4);
        assert_eq!(packet.header_len(), 4);
        assert_eq!(packet.checksum(), None);
        assert_eq!(packet.key(), None);
        assert_eq!(packet.seq(), None);
        assert!(packet.verify_checksum());
        assert_eq!(packet.payload(), &INNER);
    }

    #[test]
    fn gre_with_key_and_seq_parses_fields() {
        let packet = Packet::new_checked(&GRE_KEY_SEQ[..]).unwrap();
        assert!(packet.key_present());
        assert!(packet.seq_present());
        assert!(!packet.checksum_present());
        assert_eq!(packet.header_len(), 12);
        assert_eq!(packet.key(), Some(Key(1234)));
        assert_eq!(packet.seq(), Some(7));
        assert_eq!(packet.payload(), &INNER);
        assert_eq!(
            Repr::parse(&packet),
            Ok(Repr {
                protocol: PROTO_IPV4,
                key: Some(Key(1234)),
                seq: Some(7),
                checksum: false,
            })
        );
    }

    #[test]
    fn gre_with_checksum_key_and_seq_parses_fields() {
        let packet = Packet::new_checked(&GRE_ALL[..]).unwrap();
        assert_eq!(packet.header_len(), 16);
        assert_eq!(packet.checksum(), Some(0x08e2));
        assert!(packet.verify_checksum());
        assert_eq!(packet.key(), Some(Key(0xdead_beef)));
        assert_eq!(packet.seq(), Some(u32::MAX));
        assert_eq!(packet.payload(), &INNER);
    }

    #[test]
    fn gre_with_checksum_over_ipv6_matches_capture() {
        // Checksum present, IPv6 payload: a 77-byte DNS-over-IPv6 packet sums so that
        // the GRE checksum is 0x944b (computed independently).
        let inner: [u8; 77] = [
            0x60, 0x05, 0xf3, 0xa1, 0x00, 0x25, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x53, 0xca, 0x6c,
            0x00, 0x35, 0x00, 0x25, 0xef, 0xa3, 0x1a, 0x2b, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x63,
            0x6f, 0x6d, 0x00, 0x00, 0x01, 0x00, 0x01,
        ];
        let mut bytes = [0u8; 85];
        bytes[8..].copy_from_slice(&inner);
        let repr = Repr {
            protocol: PROTO_IPV6,
            key: None,
            seq: None,
            checksum: true,
        };
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]))
            .unwrap();
        assert_eq!(
            &bytes[..8],
            &[0x80, 0x00, 0x86, 0xdd, 0x94, 0x4b, 0x00, 0x00]
        );
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Ok(repr));
    }

    #[test]
    fn key_and_seq_header_constructs_same_bytes_with_setters() {
        let mut bytes = [0xa5u8; 20];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_flags(FLAG_K | FLAG_S);
        packet.set_protocol_type(PROTO_IPV4);
        packet.set_key(Key(1234)).unwrap();
        packet.set_seq(7).unwrap();
        packet.payload_mut().copy_from_slice(&INNER);
        assert_eq!(bytes, GRE_KEY_SEQ);
    }

    #[test]
    fn repr_emits_fixture_bytes() {
        let cases = [
            (&GRE_PLAIN[..], None, None, false),
            (&GRE_KEY_SEQ[..], Some(Key(1234)), Some(7), false),
            (&GRE_ALL[..], Some(Key(0xdead_beef)), Some(u32::MAX), true),
        ];
        for (fixture, key, seq, checksum) in cases {
            let repr = Repr {
                protocol: PROTO_IPV4,
                key,
                seq,
                checksum,
            };
            let mut bytes = fixture.to_vec();
            bytes[..repr.buffer_len()].fill(0xff);
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]))
                .unwrap();
            assert_eq!(bytes, fixture);
        }
    }

    #[test]
    fn truncated_optional_fields_are_rejected() {
        for fixture in [&GRE_PLAIN[..4], &GRE_KEY_SEQ[..12], &GRE_ALL[..16]] {
            for len in 0..fixture.len() {
                assert_eq!(
                    Packet::new_checked(&fixture[..len]).err(),
                    Some(Error::Truncated),
                    "len {len} of {fixture:02x?}"
                );
            }
        }
    }

    #[test]
    fn corrupted_payload_fails_checksum() {
        let mut bytes = GRE_ALL;
        bytes[20] ^= 0x01;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert_eq!(Repr::parse(&packet), Err(Error::BadChecksum));
    }

    #[test]
    fn routing_bit_is_unsupported() {
        let mut bytes = GRE_PLAIN;
        bytes[0] = 0x40;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Err(Error::Unsupported));
    }

    #[test]
    fn reserved_bits_6_to_12_are_ignored() {
        let mut bytes = GRE_PLAIN;
        bytes[0] = 0x03;
        bytes[1] = 0xf8;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(Repr::parse(&packet).is_ok());
    }

    #[test]
    fn pptp_enhanced_gre_version_1_is_rejected() {
        let mut bytes = GRE_KEY_SEQ;
        bytes[1] = 0x01;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Err(Error::BadVersion(1)));
    }

    #[test]
    fn setting_absent_field_is_an_error() {
        let mut bytes = GRE_PLAIN;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        assert_eq!(packet.set_key(Key(1)), Err(Error::Malformed));
        assert_eq!(packet.set_seq(1), Err(Error::Malformed));
        assert_eq!(packet.fill_checksum(), Err(Error::Malformed));
        assert_eq!(bytes, GRE_PLAIN);
    }

    #[test]
    fn setting_flags_past_buffer_end_does_not_panic() {
        let mut bytes = [0u8; 4];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_flags(FLAG_C | FLAG_K | FLAG_S);
        assert_eq!(packet.key(), None);
        assert_eq!(packet.set_seq(1), Err(Error::Truncated));
        assert_eq!(packet.check_len(), Err(Error::Truncated));
    }

    #[test]
    fn emit_into_short_buffer_fails() {
        let repr = Repr {
            protocol: PROTO_IPV4,
            key: Some(Key(1)),
            seq: None,
            checksum: false,
        };
        let mut bytes = [0u8; 7];
        let result = repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(result, Err(Error::BufferTooSmall));
    }

    fn arb_repr() -> impl Strategy<Value = Repr> {
        (
            any::<u16>(),
            proptest::option::of(any::<u32>().prop_map(Key)),
            proptest::option::of(any::<u32>()),
            any::<bool>(),
        )
            .prop_map(|(protocol, key, seq, checksum)| Repr {
                protocol,
                key,
                seq,
                checksum,
            })
    }

    proptest! {
        #[test]
        fn new_checked_on_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.flags(), packet.version(), packet.protocol_type());
                let _ = (packet.checksum(), packet.key(), packet.seq());
                let _ = (packet.verify_checksum(), packet.rfc1701_bits(), packet.payload());
                prop_assert_eq!(packet.key().is_some(), packet.key_present());
                prop_assert_eq!(packet.seq().is_some(), packet.seq_present());
                let _ = Repr::parse(&packet);
            }
        }

        #[test]
        fn repr_round_trips_through_emit_and_parse(
            repr in arb_repr(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = vec![0u8; repr.buffer_len() + payload.len()];
            bytes[repr.buffer_len()..].copy_from_slice(&payload);
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..])).unwrap();
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Repr::parse(&packet), Ok(repr));
            prop_assert_eq!(packet.payload(), &payload[..]);
        }
    }
}
