//! ESP packet format, RFC 4303 §2, as the AEAD transforms of RFC 4106 (AES-GCM) and
//! RFC 7634 (ChaCha20-Poly1305) lay it out: an 8-byte explicit IV right after the
//! header, a 16-byte ICV at the end.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |               Security Parameters Index (SPI)                 |
//! |                      Sequence Number (low 32 bits)            |
//! |                      IV (8 bytes, explicit)                   |
//! ~      Payload Data | Padding | Pad Length | Next Header        ~  (encrypted)
//! |               Integrity Check Value (16 bytes)                |
//! ```
//!
//! ESP has no length field: the packet runs to the end of the outer IP payload, so the
//! view must be given exactly that. The high 32 bits of an extended sequence number
//! (RFC 4303 §2.2.1) are not on the wire; [`crate::tunnel::esp`] infers them.
//!
//! [`Trailer`] reads and writes the plaintext trailer (RFC 4303 §2.4-2.6): padding
//! 1, 2, 3... (the default monotonic pattern; a receiver that finds other bytes there
//! drops the packet), the pad length and the next-header octet.

use crate::wire::{read_u32, Error};

/// SPI and sequence number.
pub const HEADER_LEN: usize = 8;
/// The explicit IV of the AEAD transforms (RFC 4106 §3.1, RFC 7634 §2).
pub const IV_LEN: usize = 8;
/// The ICV (authentication tag) of both AEAD transforms.
pub const ICV_LEN: usize = 16;
/// Pad length and next header.
pub const TRAILER_LEN: usize = 2;
/// The ciphertext (payload, padding, pad length, next header) ends on a 4-byte
/// boundary (RFC 4303 §2.4); both AEADs are stream ciphers and need no more.
pub const ALIGN: usize = 4;
/// Smallest ESP packet with an AEAD transform: header, IV, trailer padded to 4, ICV.
pub const MIN_LEN: usize = HEADER_LEN + IV_LEN + ALIGN + ICV_LEN;
/// SPIs 1-255 are reserved by IANA, 0 is never sent (RFC 4303 §2.1).
pub const MIN_SPI: u32 = 0x100;

mod field {
    use crate::wire::Field;

    pub const SPI: Field = 0..4;
    pub const SEQ: Field = 4..8;
    pub const IV: Field = 8..16;
    pub const PAYLOAD: usize = 16;
}

/// A read/write view of an ESP packet with an 8-byte IV and a 16-byte ICV.
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

    /// Ensure the buffer holds header, IV, one aligned block of ciphertext and the ICV,
    /// and that the ciphertext ends on a 4-byte boundary.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < MIN_LEN {
            return Err(Error::Truncated);
        }
        if (len - HEADER_LEN - IV_LEN - ICV_LEN) % ALIGN != 0 {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The Security Parameters Index.
    pub fn spi(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SPI])
    }

    /// The low 32 bits of the sequence number.
    pub fn seq_low(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SEQ])
    }

    /// The explicit IV.
    pub fn iv(&self) -> [u8; IV_LEN] {
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&self.buffer.as_ref()[field::IV]);
        iv
    }

    /// The encrypted part (payload, padding, pad length, next header), without the ICV.
    pub fn ciphertext(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[field::PAYLOAD..b.len() - ICV_LEN]
    }

    /// The ICV.
    pub fn icv(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - ICV_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the SPI.
    pub fn set_spi(&mut self, spi: u32) {
        self.buffer.as_mut()[field::SPI].copy_from_slice(&spi.to_be_bytes());
    }

    /// Set the low 32 bits of the sequence number.
    pub fn set_seq_low(&mut self, seq: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    /// Set the explicit IV.
    pub fn set_iv(&mut self, iv: [u8; IV_LEN]) {
        self.buffer.as_mut()[field::IV].copy_from_slice(&iv);
    }
}

/// The fields of an ESP header that are on the wire before the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub spi: u32,
    /// Low 32 bits of the sequence number.
    pub seq_low: u32,
    pub iv: [u8; IV_LEN],
}

impl Repr {
    /// Read the header of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        Ok(Repr {
            spi: packet.spi(),
            seq_low: packet.seq_low(),
            iv: packet.iv(),
        })
    }

    /// Bytes `emit` writes: header and IV.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + IV_LEN
    }

    /// Write header and IV; the buffer must hold at least [`Repr::buffer_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<(), Error> {
        if packet.buffer.as_ref().len() < self.buffer_len() {
            return Err(Error::BufferTooSmall);
        }
        packet.set_spi(self.spi);
        packet.set_seq_low(self.seq_low);
        packet.set_iv(self.iv);
        Ok(())
    }
}

/// The plaintext trailer: how much padding follows the payload and what the payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Trailer {
    pub pad_len: u8,
    /// The payload's IP protocol number (47 for GRE).
    pub next_header: u8,
}

impl Trailer {
    /// The trailer for a payload of `payload_len` bytes: padding up to a 4-byte
    /// boundary counting the two trailer bytes.
    pub const fn for_payload(payload_len: usize, next_header: u8) -> Trailer {
        let rem = (payload_len + TRAILER_LEN) % ALIGN;
        let pad = if rem == 0 { 0 } else { ALIGN - rem };
        Trailer {
            pad_len: pad as u8,
            next_header,
        }
    }

    /// Padding plus the two trailer bytes.
    pub const fn len(&self) -> usize {
        self.pad_len as usize + TRAILER_LEN
    }

    /// Always false: a trailer has at least its two bytes.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Read the trailer at the end of a decrypted `plaintext`; returns it with the
    /// payload length. The padding must be RFC 4303's default 1, 2, 3...
    pub fn parse(plaintext: &[u8]) -> Result<(Trailer, usize), Error> {
        let n = plaintext.len();
        if n < TRAILER_LEN {
            return Err(Error::Truncated);
        }
        let pad_len = plaintext[n - 2];
        let next_header = plaintext[n - 1];
        let Some(payload_len) = (n - TRAILER_LEN).checked_sub(usize::from(pad_len)) else {
            return Err(Error::Malformed);
        };
        let padding = &plaintext[payload_len..n - TRAILER_LEN];
        if padding
            .iter()
            .enumerate()
            .any(|(i, &b)| usize::from(b) != i + 1)
        {
            return Err(Error::Malformed);
        }
        Ok((
            Trailer {
                pad_len,
                next_header,
            },
            payload_len,
        ))
    }

    /// Write padding and trailer into `buf`, which must be exactly [`Trailer::len`]
    /// bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        if buf.len() != self.len() {
            return Err(Error::BufferTooSmall);
        }
        let pad = usize::from(self.pad_len);
        for (i, b) in buf[..pad].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        buf[pad] = self.pad_len;
        buf[pad + 1] = self.next_header;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;
    use proptest::prelude::*;

    /// draft-mcgrew-gcm-test-01 §4, the AES-256 case: SPI 0x4a2cbfe3, sequence 2,
    /// IV 0102030405060708, 52 bytes of ciphertext, ICV.
    const GCM_CASE: [u8; 84] = [
        0x4a, 0x2c, 0xbf, 0xe3, 0x00, 0x00, 0x00, 0x02, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
        0x08, 0xff, 0x42, 0x5c, 0x9b, 0x72, 0x45, 0x99, 0xdf, 0x7a, 0x3b, 0xcd, 0x51, 0x01, 0x94,
        0xe0, 0x0d, 0x6a, 0x78, 0x10, 0x7f, 0x1b, 0x0b, 0x1c, 0xbf, 0x06, 0xef, 0xae, 0x9d, 0x65,
        0xa5, 0xd7, 0x63, 0x74, 0x8a, 0x63, 0x79, 0x85, 0x77, 0x1d, 0x34, 0x7f, 0x05, 0x45, 0x65,
        0x9f, 0x14, 0xe9, 0x9d, 0xef, 0x84, 0x2d, 0x8e, 0xb3, 0x35, 0xf4, 0xee, 0xcf, 0xdb, 0xf8,
        0x31, 0x82, 0x4b, 0x4c, 0x49, 0x15, 0x95, 0x6c, 0x96,
    ];

    fn fixture() -> &'static [u8] {
        &GCM_CASE
    }

    #[test]
    fn deconstruct_reads_spi_seq_iv_and_icv() {
        let p = Packet::new_checked(fixture()).unwrap();
        assert_eq!(p.spi(), 0x4a2c_bfe3);
        assert_eq!(p.seq_low(), 2);
        assert_eq!(p.iv(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(p.ciphertext().len(), 52);
        assert_eq!(&p.icv()[..4], &[0xb3, 0x35, 0xf4, 0xee]);
        assert_eq!(
            Repr::parse(&p).unwrap(),
            Repr {
                spi: 0x4a2c_bfe3,
                seq_low: 2,
                iv: [1, 2, 3, 4, 5, 6, 7, 8]
            }
        );
    }

    #[test]
    fn construct_writes_the_fixture_header() {
        let mut buf = fixture().to_vec();
        buf[..16].fill(0);
        let repr = Repr {
            spi: 0x4a2c_bfe3,
            seq_low: 2,
            iv: [1, 2, 3, 4, 5, 6, 7, 8],
        };
        repr.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(&buf[..], fixture());
    }

    #[test]
    fn truncated_and_unaligned_packets_are_refused() {
        assert_eq!(
            Packet::new_checked(&fixture()[..MIN_LEN - 1]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Packet::new_checked(&fixture()[..83]).unwrap_err(),
            Error::Malformed
        );
        assert!(Packet::new_checked(&fixture()[..MIN_LEN]).is_ok());
    }

    #[test]
    fn trailer_pads_to_four_bytes_with_one_two_three() {
        for (len, pad) in [(0, 2), (1, 1), (2, 0), (3, 3), (1446, 0), (1445, 1)] {
            let t = Trailer::for_payload(len, 47);
            assert_eq!(usize::from(t.pad_len), pad, "payload {len}");
            assert_eq!((len + t.len()) % ALIGN, 0);
        }
        let t = Trailer::for_payload(3, 47);
        let mut buf = [0xaa, 0xbb, 0xcc, 0, 0, 0, 0, 0];
        t.emit(&mut buf[3..]).unwrap();
        assert_eq!(buf, [0xaa, 0xbb, 0xcc, 1, 2, 3, 3, 47]);
        assert_eq!(Trailer::parse(&buf).unwrap(), (t, 3));
    }

    #[test]
    fn bad_padding_or_pad_length_past_the_start_is_malformed() {
        assert_eq!(
            Trailer::parse(&[0xaa, 1, 9, 2, 47]).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            Trailer::parse(&[1, 2, 5, 47]).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(Trailer::parse(&[47]).unwrap_err(), Error::Truncated);
    }

    proptest! {
        #[test]
        fn new_checked_on_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.spi(), p.seq_low(), p.iv(), p.ciphertext(), p.icv());
                let _ = Repr::parse(&p);
            }
            let _ = Trailer::parse(&bytes);
        }

        #[test]
        fn repr_round_trips_through_emit_and_parse(
            spi in any::<u32>(), seq_low in any::<u32>(), iv in any::<[u8; 8]>(),
            blocks in 1usize..8,
        ) {
            let repr = Repr { spi, seq_low, iv };
            let mut buf = vec![0u8; HEADER_LEN + IV_LEN + blocks * ALIGN + ICV_LEN];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(), repr);
        }

        #[test]
        fn trailer_round_trips(len in 0usize..2000, nh in any::<u8>()) {
            let t = Trailer::for_payload(len, nh);
            let mut buf = vec![0x55u8; len + t.len()];
            t.emit(&mut buf[len..]).unwrap();
            prop_assert_eq!(Trailer::parse(&buf).unwrap(), (t, len));
        }
    }
}
