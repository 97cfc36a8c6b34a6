//! UDP header, RFC 768; the IPv6 checksum rules of RFC 8200 §8.1.
//!
//! The checksum covers a pseudo-header, so it needs the IP addresses: they come in as
//! an [`IpPair`]. Over IPv4 a zero checksum means "not computed" and is accepted. Over
//! IPv6 a zero checksum is invalid (RFC 8200 §8.1) unless the tunnel was configured for
//! zero-checksum mode (RFC 6935/6936); such callers skip verification by passing `None`.

use crate::wire::{checksum, read_u16, Error, IpPair, IpProtocol};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// A read/write view of a UDP datagram.
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

    /// Ensure the buffer holds the header and the length field is between the header
    /// length and the buffer length. Bytes past the length field are ignored.
    pub fn check_len(&self) -> Result<(), Error> {
        let buffer_len = self.buffer.as_ref().len();
        if buffer_len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > buffer_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The length field: header and payload, in bytes.
    pub fn len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Whether the datagram carries no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Whether the checksum is valid for a datagram between `pair`'s addresses. A zero
    /// checksum is valid over IPv4 (not computed) and invalid over IPv6.
    pub fn verify_checksum(&self, pair: &IpPair) -> bool {
        if self.checksum() == 0 {
            return matches!(pair, IpPair::V4 { .. });
        }
        let len = self.len();
        let data = &self.buffer.as_ref()[..usize::from(len)];
        let pseudo = checksum::pseudo_header(pair, IpProtocol::Udp, u32::from(len));
        checksum::combine(&[pseudo, checksum::sum(data)]) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload, up to the length field, in the same buffer.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Set the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Set the length field.
    pub fn set_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Compute the checksum over the pseudo-header, header and payload, and store it.
    /// A computed zero is sent as `0xffff` (RFC 768), since zero means "none".
    pub fn fill_checksum(&mut self, pair: &IpPair) {
        self.set_checksum(0);
        let len = self.len();
        let data = &self.buffer.as_ref()[..usize::from(len)];
        let pseudo = checksum::pseudo_header(pair, IpProtocol::Udp, u32::from(len));
        let value = !checksum::combine(&[pseudo, checksum::sum(data)]);
        self.set_checksum(if value == 0 { 0xffff } else { value });
    }

    /// The payload, mutable, up to the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The high-level value of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in bytes (the length field minus the header).
    pub payload_len: usize,
}

impl Repr {
    /// Read a header. With `Some(pair)` the checksum is verified against the pair's
    /// pseudo-header; `None` skips it (checksum offloaded, or IPv6 zero-checksum mode).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&T>,
        verify: Option<&IpPair>,
    ) -> Result<Repr, Error> {
        packet.check_len()?;
        if let Some(pair) = verify {
            if !packet.verify_checksum(pair) {
                return Err(Error::BadChecksum);
            }
        }
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    /// The number of bytes `emit` writes: the header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus payload, the value of the length field.
    pub const fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Write the header at the start of `packet`, whose buffer holds the header and
    /// `payload_len` bytes of payload already in place. With `Some(pair)` the checksum
    /// is computed over that payload; `None` writes zero ("no checksum", IPv4 only
    /// unless RFC 6935 zero-checksum mode applies).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        checksum: Option<&IpPair>,
    ) -> Result<(), Error> {
        let len = u16::try_from(self.total_len()).map_err(|_| Error::Oversized)?;
        if packet.buffer.as_ref().len() < self.total_len() {
            return Err(Error::BufferTooSmall);
        }
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        match checksum {
            Some(pair) => packet.fill_checksum(pair),
            None => packet.set_checksum(0),
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A DNS query for example.com from port 51820 to 53; checksum for 192.0.2.1 ->
    /// 198.51.100.7.
    const UDP_DNS_V4: [u8; 37] = [
        0xca, 0x6c, 0x00, 0x35, 0x00, 0x25, 0x5f, 0x2d, 0x1a, 0x2b, 0x01, 0x00, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x63,
        0x6f, 0x6d, 0x00, 0x00, 0x01, 0x00, 0x01,
    ];

    /// The checksum of the same datagram for 2001:db8::1 -> 2001:db8::53.
    const UDP_DNS_V6_CHECKSUM: u16 = 0xefa3;

    fn pair_v4() -> IpPair {
        IpPair::V4 {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 7),
        }
    }

    fn pair_v6() -> IpPair {
        IpPair::V6 {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::53".parse().unwrap(),
        }
    }

    fn fixture_repr() -> Repr {
        Repr {
            src_port: 51820,
            dst_port: 53,
            payload_len: 29,
        }
    }

    #[test]
    fn dns_datagram_deconstructs_every_field() {
        let packet = Packet::new_checked(&UDP_DNS_V4[..]).unwrap();
        assert_eq!(packet.src_port(), 51820);
        assert_eq!(packet.dst_port(), 53);
        assert_eq!(packet.len(), 37);
        assert!(!packet.is_empty());
        assert_eq!(packet.checksum(), 0x5f2d);
        assert!(packet.verify_checksum(&pair_v4()));
        assert!(!packet.verify_checksum(&pair_v6()));
        assert_eq!(packet.payload(), &UDP_DNS_V4[8..]);
    }

    #[test]
    fn dns_datagram_constructs_same_bytes_with_setters() {
        let mut bytes = [0xa5u8; 37];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_src_port(51820);
        packet.set_dst_port(53);
        packet.set_len(37);
        packet.payload_mut().copy_from_slice(&UDP_DNS_V4[8..]);
        packet.fill_checksum(&pair_v4());
        assert_eq!(bytes, UDP_DNS_V4);
    }

    #[test]
    fn dns_datagram_parses_with_verified_checksum() {
        let packet = Packet::new_checked(&UDP_DNS_V4[..]).unwrap();
        assert_eq!(Repr::parse(&packet, Some(&pair_v4())), Ok(fixture_repr()));
        assert_eq!(
            Repr::parse(&packet, Some(&pair_v6())),
            Err(Error::BadChecksum)
        );
        assert_eq!(Repr::parse(&packet, None), Ok(fixture_repr()));
    }

    #[test]
    fn repr_emits_fixture_with_v4_and_v6_checksums() {
        let mut bytes = UDP_DNS_V4;
        bytes[..8].fill(0);
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        fixture_repr().emit(&mut packet, Some(&pair_v4())).unwrap();
        assert_eq!(bytes, UDP_DNS_V4);

        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        fixture_repr().emit(&mut packet, Some(&pair_v6())).unwrap();
        assert_eq!(packet.checksum(), UDP_DNS_V6_CHECKSUM);
        assert!(packet.verify_checksum(&pair_v6()));
    }

    #[test]
    fn truncated_datagram_is_rejected() {
        for len in 0..UDP_DNS_V4.len() {
            assert_eq!(
                Packet::new_checked(&UDP_DNS_V4[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn length_below_header_is_malformed() {
        let mut bytes = UDP_DNS_V4;
        bytes[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(Error::Malformed)
        );
    }

    #[test]
    fn zero_checksum_is_accepted_over_ipv4_only() {
        let mut bytes = UDP_DNS_V4;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        fixture_repr().emit(&mut packet, None).unwrap();
        assert_eq!(packet.checksum(), 0);
        assert!(packet.verify_checksum(&pair_v4()));
        assert!(!packet.verify_checksum(&pair_v6()));
    }

    #[test]
    fn computed_zero_checksum_is_sent_as_ffff() {
        // Find a payload word that makes the sum come out at 0xffff, then check the
        // field holds 0xffff (and still verifies) rather than 0.
        let pair = pair_v4();
        let mut bytes = [0u8; 10];
        let repr = Repr {
            src_port: 1,
            dst_port: 2,
            payload_len: 2,
        };
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), Some(&pair))
            .unwrap();
        let word = u16::from_be_bytes([bytes[6], bytes[7]]);
        // Moving the checksum value into the payload makes the remaining sum 0xffff.
        bytes[8..10].copy_from_slice(&word.to_be_bytes());
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum(&pair);
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum(&pair));
    }

    #[test]
    fn emit_into_short_buffer_fails() {
        let mut bytes = [0u8; 36];
        let result = fixture_repr().emit(&mut Packet::new_unchecked(&mut bytes[..]), None);
        assert_eq!(result, Err(Error::BufferTooSmall));
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
                let _ = (packet.src_port(), packet.dst_port(), packet.len());
                let _ = (packet.is_empty(), packet.checksum(), packet.payload());
                let _ = packet.verify_checksum(&pair);
                if let Ok(repr) = Repr::parse(&packet, Some(&pair)) {
                    prop_assert_eq!(repr.payload_len, packet.payload().len());
                }
            }
        }

        #[test]
        fn repr_round_trips_with_checksum(
            src_port in any::<u16>(),
            dst_port in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..256),
            pair in arb_pair(),
        ) {
            let repr = Repr { src_port, dst_port, payload_len: payload.len() };
            let mut bytes = vec![0u8; repr.total_len()];
            bytes[HEADER_LEN..].copy_from_slice(&payload);
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), Some(&pair)).unwrap();
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Repr::parse(&packet, Some(&pair)), Ok(repr));
            prop_assert_eq!(packet.payload(), &payload[..]);
        }
    }
}
