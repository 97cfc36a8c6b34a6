//! twnode's ESP Hello: the message two twnode ends of an encrypted line exchange to
//! agree on a key epoch ([`crate::tunnel::esp`]'s epoch keying). It is not part of any
//! RFC: it rides in an IP packet of protocol 50 like ESP (RFC 4303), under an SPI that
//! RFC 4303 §2.1 leaves reserved (1-255) and so never names a real SA: [`HELLO_SPI`].
//! A kernel's ESP stack drops it as an unknown SPI; a twnode end running static keys
//! counts it as `unknown_spi`.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |                    SPI = 0x00000074 (Hello)                   |
//! |  Version = 1  |     Flags     |           Reserved            |
//! |                 Timestamp (ms, 64 bits)                       |
//! ~                 Sender's nonce (32 bytes)                     ~
//! ~                 Echo: the receiver's nonce (32 bytes)         ~
//! ~                 MAC: HMAC-SHA256 over bytes 0-79 (32 bytes)   ~
//! ```
//!
//! - Flags: bit 0 (0x01), *confirmed*: the sender runs the epoch made of its nonce and
//!   the echoed one. Other bits are sent as 0 and ignored.
//! - Timestamp: milliseconds since the sender started, strictly increasing from one
//!   Hello to the next of one sender: a Hello not newer than one seen before with the
//!   same nonce is a replay.
//! - Echo: all zeros until the sender has seen the receiver's nonce.
//! - The MAC is checked by the tunnel core (the key is per direction); this view only
//!   says where it is.
//!
//! Like ESP, the Hello has no length field: it is exactly [`HELLO_LEN`] bytes, the
//! whole outer IP payload.

use crate::wire::{read_u32, Error};

/// The SPI that marks a Hello: 0x74 ('t', and the protocol number twnode's routes
/// carry), in the range RFC 4303 §2.1 reserves, so no SA ever has it.
pub const HELLO_SPI: u32 = 0x74;
/// The only version this module reads and writes.
pub const VERSION: u8 = 1;
/// Length of a nonce and of its echo.
pub const NONCE_LEN: usize = 32;
/// Length of the MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;
/// A whole Hello.
pub const HELLO_LEN: usize = field::MAC.end;
/// The flag bit: the sender runs the epoch of its nonce and the echo.
pub const FLAG_CONFIRMED: u8 = 0x01;

mod field {
    use crate::wire::Field;

    pub const SPI: Field = 0..4;
    pub const VERSION: usize = 4;
    pub const FLAGS: usize = 5;
    pub const RESERVED: Field = 6..8;
    pub const TIMESTAMP: Field = 8..16;
    pub const NONCE: Field = 16..48;
    pub const ECHO: Field = 48..80;
    pub const MAC: Field = 80..112;
}

/// A read/write view of a Hello.
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

    /// Ensure the buffer is exactly one Hello: shorter is truncated, longer is malformed
    /// (the outer IP payload is the whole message).
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HELLO_LEN {
            Err(Error::Truncated)
        } else if len > HELLO_LEN {
            Err(Error::Malformed)
        } else {
            Ok(())
        }
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The SPI ([`HELLO_SPI`] in a Hello).
    pub fn spi(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SPI])
    }

    /// The version.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The flags octet.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The sender's timestamp in milliseconds.
    pub fn timestamp(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::TIMESTAMP]);
        u64::from_be_bytes(b)
    }

    /// The sender's nonce.
    pub fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&self.buffer.as_ref()[field::NONCE]);
        n
    }

    /// The receiver's nonce as the sender last saw it (zeros: not seen yet).
    pub fn echo(&self) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&self.buffer.as_ref()[field::ECHO]);
        n
    }

    /// The bytes the MAC covers: everything before it.
    pub fn authenticated(&self) -> &[u8] {
        &self.buffer.as_ref()[..field::MAC.start]
    }

    /// The MAC.
    pub fn mac(&self) -> &[u8] {
        &self.buffer.as_ref()[field::MAC]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the SPI.
    pub fn set_spi(&mut self, spi: u32) {
        self.buffer.as_mut()[field::SPI].copy_from_slice(&spi.to_be_bytes());
    }

    /// Set the version.
    pub fn set_version(&mut self, version: u8) {
        self.buffer.as_mut()[field::VERSION] = version;
    }

    /// Set the flags octet (and clear the reserved bytes).
    pub fn set_flags(&mut self, flags: u8) {
        let b = self.buffer.as_mut();
        b[field::FLAGS] = flags;
        b[field::RESERVED].fill(0);
    }

    /// Set the timestamp.
    pub fn set_timestamp(&mut self, ms: u64) {
        self.buffer.as_mut()[field::TIMESTAMP].copy_from_slice(&ms.to_be_bytes());
    }

    /// Set the sender's nonce.
    pub fn set_nonce(&mut self, nonce: &[u8; NONCE_LEN]) {
        self.buffer.as_mut()[field::NONCE].copy_from_slice(nonce);
    }

    /// Set the echo.
    pub fn set_echo(&mut self, echo: &[u8; NONCE_LEN]) {
        self.buffer.as_mut()[field::ECHO].copy_from_slice(echo);
    }

    /// The MAC's bytes, to write: `(covered, mac)`.
    pub fn authenticated_and_mac_mut(&mut self) -> (&[u8], &mut [u8]) {
        let (covered, rest) = self.buffer.as_mut().split_at_mut(field::MAC.start);
        (covered, &mut rest[..MAC_LEN])
    }
}

/// A Hello's fields, without the MAC (which needs a key: the tunnel core writes and
/// checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub confirmed: bool,
    pub timestamp: u64,
    pub nonce: [u8; NONCE_LEN],
    /// `None`: the sender has not seen the receiver's nonce yet (zeros on the wire).
    pub echo: Option<[u8; NONCE_LEN]>,
}

impl Repr {
    /// Read a checked Hello: the SPI must be [`HELLO_SPI`] and the version [`VERSION`].
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.spi() != HELLO_SPI {
            return Err(Error::Malformed);
        }
        if packet.version() != VERSION {
            return Err(Error::BadVersion(packet.version()));
        }
        let echo = packet.echo();
        Ok(Repr {
            confirmed: packet.flags() & FLAG_CONFIRMED != 0,
            timestamp: packet.timestamp(),
            nonce: packet.nonce(),
            echo: (echo != [0u8; NONCE_LEN]).then_some(echo),
        })
    }

    /// Bytes `emit` writes, and the Hello's length: the MAC's room included.
    pub const fn buffer_len(&self) -> usize {
        HELLO_LEN
    }

    /// Write everything but the MAC (left as it is); the buffer must hold at least
    /// [`Repr::buffer_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<(), Error> {
        if packet.buffer.as_ref().len() < self.buffer_len() {
            return Err(Error::BufferTooSmall);
        }
        packet.set_spi(HELLO_SPI);
        packet.set_version(VERSION);
        packet.set_flags(if self.confirmed { FLAG_CONFIRMED } else { 0 });
        packet.set_timestamp(self.timestamp);
        packet.set_nonce(&self.nonce);
        packet.set_echo(&self.echo.unwrap_or([0u8; NONCE_LEN]));
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;
    use proptest::prelude::*;

    /// A confirmed Hello at 1234 ms with nonce 0x11.., echo 0x22.. and MAC 0x33...
    fn fixture() -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..16].copy_from_slice(&[
            0x00, 0x00, 0x00, 0x74, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x04, 0xd2,
        ]);
        b[16..48].fill(0x11);
        b[48..80].fill(0x22);
        b[80..].fill(0x33);
        b
    }

    fn fixture_repr() -> Repr {
        Repr {
            confirmed: true,
            timestamp: 1234,
            nonce: [0x11; NONCE_LEN],
            echo: Some([0x22; NONCE_LEN]),
        }
    }

    #[test]
    fn deconstruct_reads_every_field() {
        let f = fixture();
        let p = Packet::new_checked(&f[..]).unwrap();
        assert_eq!(p.spi(), HELLO_SPI);
        assert_eq!((p.version(), p.flags(), p.timestamp()), (1, 1, 1234));
        assert_eq!(p.nonce(), [0x11; 32]);
        assert_eq!(p.echo(), [0x22; 32]);
        assert_eq!(p.authenticated(), &f[..80]);
        assert_eq!(p.mac(), &[0x33; 32]);
        assert_eq!(Repr::parse(&p).unwrap(), fixture_repr());
    }

    #[test]
    fn construct_writes_the_fixture_but_the_mac() {
        let mut buf = [0x33u8; HELLO_LEN];
        fixture_repr()
            .emit(&mut Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, fixture());
        let mut small = [0u8; HELLO_LEN - 1];
        assert_eq!(
            fixture_repr().emit(&mut Packet::new_unchecked(&mut small[..])),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn zero_echo_is_none_and_unknown_flags_are_ignored() {
        let mut f = fixture();
        f[48..80].fill(0);
        f[5] = 0xfe;
        let r = Repr::parse(&Packet::new_checked(&f[..]).unwrap()).unwrap();
        assert_eq!(r.echo, None);
        assert!(!r.confirmed);
    }

    #[test]
    fn truncated_long_wrong_spi_and_wrong_version_are_refused() {
        let f = fixture();
        assert_eq!(
            Packet::new_checked(&f[..HELLO_LEN - 1]).unwrap_err(),
            Error::Truncated
        );
        let mut long = f.to_vec();
        long.push(0);
        assert_eq!(
            Packet::new_checked(&long[..]).unwrap_err(),
            Error::Malformed
        );
        let mut spi = f;
        spi[3] = 0x75;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&spi[..]).unwrap()).unwrap_err(),
            Error::Malformed
        );
        let mut v = f;
        v[4] = 2;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&v[..]).unwrap()).unwrap_err(),
            Error::BadVersion(2)
        );
    }

    #[test]
    fn the_mac_is_writable_in_place() {
        let mut f = fixture();
        let mut p = Packet::new_unchecked(&mut f[..]);
        let (covered, mac) = p.authenticated_and_mac_mut();
        assert_eq!(covered.len(), 80);
        mac.fill(0x44);
        assert_eq!(p.mac(), &[0x44; 32]);
    }

    proptest! {
        #[test]
        fn new_checked_on_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..140),
        ) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.spi(), p.version(), p.flags(), p.timestamp(), p.nonce(), p.echo());
                let _ = (p.authenticated(), p.mac());
                let _ = Repr::parse(&p);
            }
        }

        #[test]
        fn repr_round_trips_through_emit_and_parse(
            confirmed in any::<bool>(), timestamp in any::<u64>(),
            nonce in any::<[u8; 32]>(), echo in any::<Option<[u8; 32]>>(),
        ) {
            let echo = echo.filter(|e| *e != [0u8; 32]);
            let repr = Repr { confirmed, timestamp, nonce, echo };
            let mut buf = [0u8; HELLO_LEN];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(), repr);
        }
    }
}
