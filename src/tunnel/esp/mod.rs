//! ESP in transport mode (RFC 4303): the layer that `--encrypt` puts between a GRE
//! line's outer IP header and its GRE header. AEAD transforms only: ChaCha20-Poly1305
//! (RFC 7634) and AES-256-GCM (RFC 4106), both with the layout Linux xfrm uses for
//! `rfc7539esp(chacha20,poly1305)` and `rfc4106(gcm(aes))`: an 8-byte explicit IV after
//! the header, a 4-byte salt in front of it to make the 12-byte nonce, a 16-byte ICV.
//! Extended sequence numbers (64 bits, RFC 4303 §2.2.1) always.
//!
//! Rules: no I/O, no clock (`now` is a parameter), no randomness of its own (the caller
//! hands in fresh nonces), no allocation per packet; seal and open work in place in the
//! caller's buffer (ring's `LessSafeKey`).
//!
//! # Two keying modes ([`Keying`])
//!
//! The explicit IV is the 64-bit sequence number, so an AEAD nonce (salt || IV) is
//! unique as long as no sequence number is sent twice under one key. The two modes keep
//! that promise differently:
//!
//! - **Epoch** ([`EspCore::with_epochs`], the default between two twnode ends): no key
//!   outlives the process that agreed on it. At every start and every rekey both ends
//!   draw a 256-bit nonce, exchange them in authenticated Hellos, and derive the SAs of
//!   the epoch from both ([`kdf::EpochSecrets`], the protocol in [`epoch`]). Sequence
//!   numbers start at 1 in each epoch. Nothing on disk is needed, so no loss of local
//!   state (a deleted, rolled-back or shared state directory, a restored VM snapshot, a
//!   fresh container) can repeat a (key, nonce) pair, and no old packet can be accepted
//!   into a new epoch. No forward secrecy: the static keys derive every epoch's keys
//!   (no Diffie-Hellman; that is IKE's job).
//! - **Static** ([`EspCore::new`], `--esp-keying static`): the two SAs come from the
//!   static keys alone ([`derive`]), the layout a Linux kernel peer configured with `ip
//!   xfrm` uses. The core only sends numbers below a *limit* that its caller has made
//!   durable first (see `dataplane::seqstore`): [`EspCore::poll_reservation`] asks for
//!   a new limit half a block before the current one runs out, [`EspCore::handle_reserved`]
//!   takes it. A packet for which no number is reserved is dropped
//!   ([`DropReason::SeqNotReserved`]), never sent with a number that might repeat. So
//!   that a restart of the receiver does not reopen the door to old packets, the caller
//!   persists a floor of the highest accepted number ([`EspCore::poll_replay_floor`],
//!   every [`RESERVE_BLOCK`] packets, and exactly at a clean stop) and hands it back at
//!   start ([`EspCore::handle_replay_floor`]). This mode is only as safe as the state
//!   files: the data plane refuses to start a line whose mark is missing.
//!
//! # Anti-replay
//!
//! A window of [`REPLAY_WINDOW`] packets per inbound SA ([`replay`]), checked before the
//! ICV and updated only after it verified.

pub mod epoch;
pub mod kdf;
pub mod replay;

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ring::aead::{self, Aad, LessSafeKey, Nonce as AeadNonce, UnboundKey};

use super::DropReason;
use crate::wire::esp::{self, Packet, Repr, Trailer};
use crate::wire::esp_hello::NONCE_LEN;
use epoch::Epochs;
pub use epoch::{DEFAULT_REKEY_AFTER, REJECT_AFTER_PACKETS, REKEY_AFTER_PACKETS};
pub use kdf::{derive, KdfError, SaKeys, SaPair, KDF_LABEL};
use replay::ReplayWindow;

/// Bytes ESP puts in front of the protected payload: header and IV.
pub const PREFIX_LEN: usize = esp::HEADER_LEN + esp::IV_LEN;
/// Most bytes ESP puts after the payload: padding (up to 3), trailer, ICV.
pub const MAX_SUFFIX_LEN: usize = esp::ALIGN - 1 + esp::TRAILER_LEN + esp::ICV_LEN;
/// How many packets behind the highest accepted one are still accepted (once).
pub const REPLAY_WINDOW: u64 = (replay::WINDOW_WORDS as u64 - 1) * 64;
/// Static keying: sequence numbers reserved at a time (the caller writes one mark per
/// block).
pub const RESERVE_BLOCK: u64 = 1 << 20;

const KEY_LEN: usize = 32;
const SALT_LEN: usize = 4;

/// The AEAD suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Cipher {
    /// ChaCha20-Poly1305, RFC 7634 (the default: fast without AES instructions).
    #[default]
    ChaCha20Poly1305,
    /// AES-256-GCM with a 16-byte ICV, RFC 4106.
    Aes256Gcm,
}

impl Cipher {
    /// Every suite, in the order the CLI lists them.
    pub const ALL: [Cipher; 2] = [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm];

    /// The `--cipher` spelling (also the KDF's cipher name).
    pub const fn as_str(self) -> &'static str {
        match self {
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// The suite spelled `s`.
    pub fn from_name(s: &str) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The Linux crypto API name `ip xfrm state ... aead NAME` takes.
    pub const fn xfrm_name(self) -> &'static str {
        match self {
            Cipher::ChaCha20Poly1305 => "rfc7539esp(chacha20,poly1305)",
            Cipher::Aes256Gcm => "rfc4106(gcm(aes))",
        }
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an encrypted line gets its SAs (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Keying {
    /// Fresh SAs agreed with a twnode peer at every start and rekey (the default).
    #[default]
    Epoch,
    /// SAs from the static keys alone, as a Linux kernel peer (`ip xfrm`) uses them.
    Static,
}

impl Keying {
    /// Every mode, in the order the CLI lists them.
    pub const ALL: [Keying; 2] = [Keying::Epoch, Keying::Static];

    /// The `--esp-keying` spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Keying::Epoch => "epoch",
            Keying::Static => "static",
        }
    }

    /// The mode spelled `s`.
    pub fn from_name(s: &str) -> Option<Keying> {
        Keying::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Keying {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One end's 256-bit epoch nonce. Not secret (Hellos carry it in the clear), but it
/// must never repeat: the caller draws it from the system's random source.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce(pub [u8; NONCE_LEN]);

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// The nonce: salt || IV (RFC 4106 §4, RFC 7634 §2).
fn nonce(salt: &[u8; SALT_LEN], iv: [u8; esp::IV_LEN]) -> AeadNonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[..SALT_LEN].copy_from_slice(salt);
    n[SALT_LEN..].copy_from_slice(&iv);
    AeadNonce::assume_unique_for_key(n)
}

/// The AAD: SPI || seq-high || seq-low with ESN, SPI || seq-low without (RFC 4106 §5,
/// RFC 7634 §2.1). Returns the buffer and how much of it is used.
pub fn aad(spi: u32, seq: u64, esn: bool) -> ([u8; 12], usize) {
    let mut a = [0u8; 12];
    a[..4].copy_from_slice(&spi.to_be_bytes());
    if esn {
        a[4..].copy_from_slice(&seq.to_be_bytes());
        (a, 12)
    } else {
        a[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        (a, 8)
    }
}

/// An AEAD key with its salt: seals and opens ESP payloads in place.
#[derive(Clone)]
pub struct SaCrypto {
    key: LessSafeKey,
    salt: [u8; SALT_LEN],
    spi: u32,
}

impl fmt::Debug for SaCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SaCrypto {{ spi: {:#010x}, key: <redacted> }}", self.spi)
    }
}

impl SaCrypto {
    /// The crypto state of one SA.
    pub fn new(cipher: Cipher, sa: &SaKeys) -> Result<SaCrypto, KdfError> {
        // Both algorithms take 32-byte keys, which is what `SaKeys` holds.
        let key =
            UnboundKey::new(cipher.algorithm(), &sa.key).map_err(|_| KdfError::AeadKey(cipher))?;
        Ok(SaCrypto {
            key: LessSafeKey::new(key),
            salt: sa.salt,
            spi: sa.spi,
        })
    }

    /// The SPI.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Encrypts `plaintext` in place and writes the ICV into `icv`.
    pub fn seal(
        &self,
        seq: u64,
        iv: [u8; esp::IV_LEN],
        esn: bool,
        plaintext: &mut [u8],
        icv: &mut [u8],
    ) -> Result<(), DropReason> {
        let (a, n) = aad(self.spi, seq, esn);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(&self.salt, iv), Aad::from(&a[..n]), plaintext)
            .map_err(|_| DropReason::TooBig)?;
        if icv.len() != esp::ICV_LEN {
            return Err(DropReason::TooBig);
        }
        icv.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Decrypts `sealed` (ciphertext followed by the ICV) in place; returns the
    /// plaintext, a prefix of `sealed`.
    pub fn open<'a>(
        &self,
        seq: u64,
        iv: [u8; esp::IV_LEN],
        esn: bool,
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], DropReason> {
        let (a, n) = aad(self.spi, seq, esn);
        self.key
            .open_in_place(nonce(&self.salt, iv), Aad::from(&a[..n]), sealed)
            .map_err(|_| DropReason::BadAuth)
    }
}

/// An outbound SA with its sequence counter: nothing at or above `limit` is sent.
#[derive(Debug, Clone)]
struct Outbound {
    sa: SaCrypto,
    /// The next sequence number to send.
    next: u64,
    /// The first number that may not be sent.
    limit: u64,
}

impl Outbound {
    fn new(cipher: Cipher, keys: &SaKeys, start: u64, limit: u64) -> Result<Outbound, KdfError> {
        Ok(Outbound {
            sa: SaCrypto::new(cipher, keys)?,
            next: start.max(1),
            limit,
        })
    }

    /// See [`EspCore::encapsulate`]; [`DropReason::SeqNotReserved`] at the limit.
    fn seal(&mut self, buf: &mut [u8], len: usize, next_header: u8) -> Result<usize, DropReason> {
        if self.next >= self.limit {
            return Err(DropReason::SeqNotReserved);
        }
        let trailer = Trailer::for_payload(len, next_header);
        let plain_end = PREFIX_LEN + len + trailer.len();
        let total = plain_end + esp::ICV_LEN;
        let Some(buf) = buf.get_mut(..total) else {
            return Err(DropReason::TooBig);
        };
        trailer
            .emit(&mut buf[PREFIX_LEN + len..plain_end])
            .map_err(|_| DropReason::TooBig)?;
        let seq = self.next;
        let iv = seq.to_be_bytes();
        Repr {
            spi: self.sa.spi,
            seq_low: seq as u32,
            iv,
        }
        .emit(&mut Packet::new_unchecked(&mut *buf))
        .map_err(|_| DropReason::TooBig)?;
        let (plain, icv) = buf[PREFIX_LEN..].split_at_mut(plain_end - PREFIX_LEN);
        self.sa.seal(seq, iv, true, plain, icv)?;
        self.next = seq + 1;
        Ok(total)
    }
}

/// An inbound SA with its replay window.
#[derive(Debug, Clone)]
struct Inbound {
    sa: SaCrypto,
    window: ReplayWindow,
}

impl Inbound {
    fn new(cipher: Cipher, keys: &SaKeys) -> Result<Inbound, KdfError> {
        Ok(Inbound {
            sa: SaCrypto::new(cipher, keys)?,
            window: ReplayWindow::default(),
        })
    }

    fn spi(&self) -> u32 {
        self.sa.spi
    }

    /// Checks the window, opens `packet` (whose header says `low` and `iv`) in place,
    /// then moves the window; returns the next header and the payload.
    fn open<'a>(
        &mut self,
        packet: &'a mut [u8],
        low: u32,
        iv: [u8; esp::IV_LEN],
    ) -> Result<(u8, &'a mut [u8]), DropReason> {
        let seq = self.window.infer(low).ok_or(DropReason::ReplayTooOld)?;
        self.window.check(seq)?;
        let sealed = packet.get_mut(PREFIX_LEN..).ok_or(DropReason::Truncated)?;
        let plain = self.sa.open(seq, iv, true, sealed)?;
        self.window.update(seq);
        let (trailer, len) = Trailer::parse(plain).map_err(|_| DropReason::Malformed)?;
        Ok((trailer.next_header, &mut plain[..len]))
    }
}

/// SPI, low sequence number and IV of an ESP packet (the outer IP payload).
fn header(packet: &[u8]) -> Result<(u32, u32, [u8; esp::IV_LEN]), DropReason> {
    match Packet::new_checked(packet) {
        Ok(p) => Ok((p.spi(), p.seq_low(), p.iv())),
        Err(crate::wire::Error::Truncated) => Err(DropReason::Truncated),
        Err(_) => Err(DropReason::Malformed),
    }
}

/// What a received ESP packet was.
#[derive(Debug, PartialEq, Eq)]
pub enum Decap<'a> {
    /// Data: the payload of protocol `next_header`, a slice of the packet.
    Packet {
        next_header: u8,
        payload: &'a mut [u8],
    },
    /// An epoch Hello, consumed (a reply may be due: [`EspCore::wants_hello`]).
    Hello,
}

/// Static keying's state: one SA each way, the reservation and the replay floor.
#[derive(Debug, Clone)]
struct StaticSas {
    out: Outbound,
    inb: Inbound,
    /// The replay floor last made durable by the caller.
    floor_stored: u64,
}

// One per line: the static SAs stay inline (no pointer to follow per packet), the
// epoch state, which is larger still, is boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Keys {
    Static(StaticSas),
    Epoch(Box<Epochs>),
}

/// What epoch keying needs to start: the cipher, the static keys and the addresses
/// (which order the two ends), and how long an epoch may last.
#[derive(Clone, Copy)]
pub struct EpochParams<'a> {
    pub cipher: Cipher,
    pub enc_key: &'a [u8],
    pub auth_key: &'a [u8],
    pub local: IpAddr,
    pub peer: IpAddr,
    /// Rekey after this long (and before [`REKEY_AFTER_PACKETS`] packets).
    pub rekey_after: Duration,
}

/// A snapshot of the ESP layer for `line show` (no keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspStatus {
    pub keying: Keying,
    /// The SPI this end sends with; `None` while no epoch is agreed.
    pub spi_out: Option<u32>,
    /// The SPI this end accepts; `None` while no epoch is agreed.
    pub spi_in: Option<u32>,
    /// The next sequence number to send (in the current epoch).
    pub next_seq: u64,
    /// Static keying: numbers below this are reserved on disk.
    pub reserved_to: Option<u64>,
    /// The highest sequence number accepted (in the current epoch; 0: none).
    pub highest_received: u64,
    /// Epoch keying: the epochs.
    pub epoch: Option<EpochStatus>,
}

/// Epoch keying's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStatus {
    /// Epochs agreed since the line started (0: waiting for the peer's Hello).
    pub epochs: u64,
    /// How long ago the current epoch was agreed.
    pub since_agreed: Option<Duration>,
    /// Packets this end may still send before it rekeys.
    pub packets_to_rekey: Option<u64>,
    /// Time left before this end rekeys.
    pub time_to_rekey: Option<Duration>,
    /// The configured rekey interval (this end's timer: the end at the higher address
    /// waits an eighth longer, so the two do not start rekeys at once).
    pub rekey_after: Duration,
    /// A new epoch is proposed and not agreed yet.
    pub rekeying: bool,
    pub hellos_sent: u64,
    pub hellos_received: u64,
}

/// One line's ESP state.
#[derive(Debug, Clone)]
pub struct EspCore {
    keys: Keys,
}

impl EspCore {
    /// Static keying: a core sending from `start` (at least 1) with the numbers below
    /// `limit` reserved.
    pub fn new(cipher: Cipher, sas: &SaPair, start: u64, limit: u64) -> Result<EspCore, KdfError> {
        Ok(EspCore {
            keys: Keys::Static(StaticSas {
                out: Outbound::new(cipher, &sas.outbound, start, limit)?,
                inb: Inbound::new(cipher, &sas.inbound)?,
                floor_stored: 0,
            }),
        })
    }

    /// Epoch keying: a core that starts with this end's first nonce (fresh from the
    /// system's random source) and sends nothing until the peer agreed on an epoch.
    pub fn with_epochs(
        params: EpochParams<'_>,
        nonce: [u8; NONCE_LEN],
        now: Instant,
    ) -> Result<EspCore, KdfError> {
        Ok(EspCore {
            keys: Keys::Epoch(Box::new(Epochs::new(params, Nonce(nonce), now)?)),
        })
    }

    /// The keying mode.
    pub fn keying(&self) -> Keying {
        match self.keys {
            Keys::Static(_) => Keying::Static,
            Keys::Epoch(_) => Keying::Epoch,
        }
    }

    /// Static keying: a durable replay floor from before a restart; numbers up to it
    /// count as seen. Nothing with epoch keying (no old epoch's packet opens in a new
    /// one).
    pub fn handle_replay_floor(&mut self, floor: u64) {
        if let Keys::Static(s) = &mut self.keys {
            s.inb.window.raise_floor(floor);
            s.floor_stored = s.floor_stored.max(floor);
        }
    }

    /// Static keying: the highest accepted number, when it is a block past the floor
    /// last stored: the caller writes it, then calls
    /// [`EspCore::handle_replay_floor_stored`].
    pub fn poll_replay_floor(&self) -> Option<u64> {
        let Keys::Static(s) = &self.keys else {
            return None;
        };
        let top = s.inb.window.top();
        (top >= s.floor_stored.saturating_add(RESERVE_BLOCK)).then_some(top)
    }

    /// The caller has made `floor` durable.
    pub fn handle_replay_floor_stored(&mut self, floor: u64) {
        if let Keys::Static(s) = &mut self.keys {
            s.floor_stored = s.floor_stored.max(floor);
        }
    }

    /// Static keying: a new limit to make durable, when fewer than half a block of
    /// reserved numbers are left; the caller writes it, then calls
    /// [`EspCore::handle_reserved`].
    pub fn poll_reservation(&self) -> Option<u64> {
        let Keys::Static(s) = &self.keys else {
            return None;
        };
        let o = &s.out;
        (o.limit.saturating_sub(o.next) <= RESERVE_BLOCK / 2)
            .then(|| o.limit.max(o.next).saturating_add(RESERVE_BLOCK))
    }

    /// The caller has made `limit` durable: numbers below it may be sent.
    pub fn handle_reserved(&mut self, limit: u64) {
        if let Keys::Static(s) = &mut self.keys {
            s.out.limit = s.out.limit.max(limit);
        }
    }

    /// Static keying: the highest accepted number (what a clean stop stores as the
    /// replay floor); 0 with epoch keying, which keeps no floor.
    pub fn highest_received(&self) -> u64 {
        match &self.keys {
            Keys::Static(s) => s.inb.window.top(),
            Keys::Epoch(_) => 0,
        }
    }

    /// Epoch keying: a Hello to send now, written at the start of `buf` (at least
    /// [`crate::wire::esp_hello::HELLO_LEN`] bytes); returns its length. `fresh` gives a
    /// new nonce from the system's random source when the core starts a rekey (`None`:
    /// not now). Call a few times a second, and when [`EspCore::wants_hello`] says so.
    pub fn poll_hello(
        &mut self,
        now: Instant,
        fresh: impl FnOnce() -> Option<[u8; NONCE_LEN]>,
        buf: &mut [u8],
    ) -> Option<usize> {
        match &mut self.keys {
            Keys::Epoch(e) => e.poll_hello(now, fresh, buf),
            Keys::Static(_) => None,
        }
    }

    /// Whether a received Hello asks for an answer or a new nonce: the caller should
    /// call [`EspCore::poll_hello`] soon rather than at its next tick.
    pub fn wants_hello(&self) -> bool {
        match &self.keys {
            Keys::Epoch(e) => e.wants_hello(),
            Keys::Static(_) => false,
        }
    }

    /// A snapshot for `line show`.
    pub fn status(&self, now: Instant) -> EspStatus {
        match &self.keys {
            Keys::Static(s) => EspStatus {
                keying: Keying::Static,
                spi_out: Some(s.out.sa.spi),
                spi_in: Some(s.inb.sa.spi),
                next_seq: s.out.next,
                reserved_to: Some(s.out.limit),
                highest_received: s.inb.window.top(),
                epoch: None,
            },
            Keys::Epoch(e) => e.status(now),
        }
    }

    /// Bytes ESP adds around a payload of `len` bytes (padding included).
    pub const fn overhead_for(len: usize) -> usize {
        PREFIX_LEN + Trailer::for_payload(len, 0).len() + esp::ICV_LEN
    }

    /// Protects a payload in place. `buf` starts where the ESP header goes; the payload
    /// (of protocol `next_header`) is already at `buf[PREFIX_LEN..PREFIX_LEN + len]`.
    /// Returns the length of the ESP packet written at the start of `buf`.
    pub fn encapsulate(
        &mut self,
        buf: &mut [u8],
        len: usize,
        next_header: u8,
    ) -> Result<usize, DropReason> {
        match &mut self.keys {
            Keys::Static(s) => s.out.seal(buf, len, next_header),
            Keys::Epoch(e) => e.encapsulate(buf, len, next_header),
        }
    }

    /// Verifies and decrypts an ESP packet (the outer IP payload) in place, or takes a
    /// Hello (epoch keying).
    pub fn decapsulate<'a>(
        &mut self,
        packet: &'a mut [u8],
        now: Instant,
    ) -> Result<Decap<'a>, DropReason> {
        match &mut self.keys {
            Keys::Static(s) => {
                let (spi, low, iv) = header(packet)?;
                if spi != s.inb.spi() {
                    return Err(DropReason::UnknownSpi);
                }
                let (next_header, payload) = s.inb.open(packet, low, iv)?;
                Ok(Decap::Packet {
                    next_header,
                    payload,
                })
            }
            Keys::Epoch(e) => e.decapsulate(packet, now),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn sa(key: &str, salt: &str, spi: u32) -> SaKeys {
        SaKeys {
            spi,
            key: unhex(key).try_into().unwrap(),
            salt: unhex(salt).try_into().unwrap(),
        }
    }

    /// RFC 8439 §2.8.2 (the AEAD test of RFC 7539, which RFC 7634 builds on), read as
    /// an RFC 7634 ESP packet with ESN: salt 07000000 and IV 4041424344454647 make the
    /// nonce, the 12-byte AAD is SPI 0x50515253 || seq-high 0xc0c1c2c3 || seq-low
    /// 0xc4c5c6c7.
    #[test]
    fn chacha20_poly1305_matches_rfc8439_vector_in_rfc7634_layout() {
        let keys = sa(
            "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
            "07000000",
            0x5051_5253,
        );
        let c = SaCrypto::new(Cipher::ChaCha20Poly1305, &keys).unwrap();
        let iv: [u8; 8] = unhex("4041424344454647").try_into().unwrap();
        let seq = 0xc0c1_c2c3_c4c5_c6c7;
        let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let mut buf = plain.to_vec();
        let mut icv = [0u8; 16];
        c.seal(seq, iv, true, &mut buf, &mut icv).unwrap();
        assert_eq!(
            buf,
            unhex(
                "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6
                 3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36
                 92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
                 3ff4def08e4b7a9de576d26586cec64b6116"
            )
        );
        assert_eq!(icv.to_vec(), unhex("1ae10b594f09e26a7e902ecbd0600691"));
        buf.extend_from_slice(&icv);
        assert_eq!(c.open(seq, iv, true, &mut buf).unwrap(), &plain[..]);
        buf[0] ^= 1;
        assert_eq!(
            c.open(seq, iv, true, &mut buf).unwrap_err(),
            DropReason::BadAuth
        );
    }

    /// draft-mcgrew-gcm-test-01 §4, the AES-256 test case (RFC 4106 ESP without ESN:
    /// AAD = SPI || seq): key abbccdde..., salt 11223344, SPI 0x4a2cbfe3, seq 2.
    #[test]
    fn aes_256_gcm_matches_the_gcm_esp_test_case() {
        let keys = sa(
            "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
            "11223344",
            0x4a2c_bfe3,
        );
        let c = SaCrypto::new(Cipher::Aes256Gcm, &keys).unwrap();
        let iv: [u8; 8] = unhex("0102030405060708").try_into().unwrap();
        let plain = unhex(
            "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee000000000
             7002400020bf0000020405b40101040201020201",
        );
        let mut buf = plain.clone();
        let mut icv = [0u8; 16];
        c.seal(2, iv, false, &mut buf, &mut icv).unwrap();
        assert_eq!(
            buf,
            unhex(
                "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763
                 748a637985771d347f0545659f14e99def842d8e"
            )
        );
        assert_eq!(icv.to_vec(), unhex("b335f4eecfdbf831824b4c4915956c96"));
        buf.extend_from_slice(&icv);
        assert_eq!(c.open(2, iv, false, &mut buf).unwrap(), &plain[..]);
        // The trailer of that packet: padding 01 02, pad length 2.
        let (t, len) = Trailer::parse(&plain).unwrap();
        assert_eq!((t.pad_len, len), (2, 48));
    }

    /// Decapsulates a data packet; the payload as a vector.
    pub(super) fn open(core: &mut EspCore, pkt: &mut [u8]) -> Result<(u8, Vec<u8>), DropReason> {
        open_at(core, pkt, Instant::now())
    }

    /// [`open`] at `now`.
    pub(super) fn open_at(
        core: &mut EspCore,
        pkt: &mut [u8],
        now: Instant,
    ) -> Result<(u8, Vec<u8>), DropReason> {
        match core.decapsulate(pkt, now)? {
            Decap::Packet {
                next_header,
                payload,
            } => Ok((next_header, payload.to_vec())),
            Decap::Hello => panic!("a Hello where data was expected"),
        }
    }

    fn statics(core: &mut EspCore) -> &mut StaticSas {
        match &mut core.keys {
            Keys::Static(s) => s,
            Keys::Epoch(_) => panic!("static keying expected"),
        }
    }

    fn pair(cipher: Cipher) -> (EspCore, EspCore) {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let sa_a = derive(cipher, b"enc", b"auth", a, b).unwrap();
        let sa_b = derive(cipher, b"enc", b"auth", b, a).unwrap();
        (
            EspCore::new(cipher, &sa_a, 1, RESERVE_BLOCK).unwrap(),
            EspCore::new(cipher, &sa_b, 1, RESERVE_BLOCK).unwrap(),
        )
    }

    pub(super) fn send(core: &mut EspCore, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; PREFIX_LEN + payload.len() + MAX_SUFFIX_LEN];
        buf[PREFIX_LEN..PREFIX_LEN + payload.len()].copy_from_slice(payload);
        let n = core.encapsulate(&mut buf, payload.len(), 47).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn two_cores_back_to_back_carry_payloads_both_ways() {
        for cipher in Cipher::ALL {
            let (mut a, mut b) = pair(cipher);
            for len in [0usize, 1, 2, 3, 4, 100, 1442] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut pkt = send(&mut a, &payload);
                assert_eq!(pkt.len(), len + EspCore::overhead_for(len));
                assert_eq!((pkt.len() - 32) % 4, 0);
                let (nh, got) = open(&mut b, &mut pkt).unwrap();
                assert_eq!((nh, &got[..]), (47, &payload[..]));
                let mut back = send(&mut b, &payload);
                assert_eq!(open(&mut a, &mut back).unwrap().1, &payload[..]);
            }
        }
    }

    #[test]
    fn sequence_number_is_the_iv_and_counts_up() {
        let (mut a, _) = pair(Cipher::ChaCha20Poly1305);
        for want in 1u64..4 {
            let pkt = send(&mut a, b"xy");
            let p = Packet::new_checked(&pkt[..]).unwrap();
            assert_eq!(u64::from(p.seq_low()), want);
            assert_eq!(p.iv(), want.to_be_bytes());
        }
    }

    #[test]
    fn tampered_replayed_truncated_and_wrong_spi_packets_are_dropped() {
        let (mut a, mut b) = pair(Cipher::Aes256Gcm);
        let pkt = send(&mut a, b"hello gre");
        let mut flipped = pkt.clone();
        flipped[20] ^= 0x01;
        assert_eq!(open(&mut b, &mut flipped).unwrap_err(), DropReason::BadAuth);
        let mut wrong_spi = pkt.clone();
        wrong_spi[0] ^= 0x80;
        assert_eq!(
            open(&mut b, &mut wrong_spi).unwrap_err(),
            DropReason::UnknownSpi
        );
        let mut short = pkt[..pkt.len() - 3].to_vec();
        assert_eq!(open(&mut b, &mut short).unwrap_err(), DropReason::Malformed);
        let mut short_aligned = pkt[..pkt.len() - 4].to_vec();
        assert_eq!(
            open(&mut b, &mut short_aligned).unwrap_err(),
            DropReason::BadAuth
        );
        let mut tiny = pkt[..20].to_vec();
        assert_eq!(open(&mut b, &mut tiny).unwrap_err(), DropReason::Truncated);
        // The bad ones did not move the window: the genuine packet still passes once.
        let mut ok = pkt.clone();
        assert!(open(&mut b, &mut ok).is_ok());
        let mut again = pkt.clone();
        assert_eq!(open(&mut b, &mut again).unwrap_err(), DropReason::Replay);
    }

    #[test]
    fn packets_older_than_the_window_are_too_old_and_reordering_inside_is_fine() {
        let (mut a, mut b) = pair(Cipher::ChaCha20Poly1305);
        let first = send(&mut a, b"1");
        let mut held = Vec::new();
        for i in 0..REPLAY_WINDOW + 10 {
            let p = send(&mut a, b"x");
            if i % 500 == 0 {
                held.push(p);
            } else {
                open(&mut b, &mut p.clone()).unwrap();
            }
        }
        // Delivered late, in reverse: all inside the window except the oldest.
        let mut late = first.clone();
        assert_eq!(
            open(&mut b, &mut late).unwrap_err(),
            DropReason::ReplayTooOld
        );
        let n = held.len();
        for (i, p) in held.iter().rev().enumerate() {
            let mut c = p.clone();
            let r = open(&mut b, &mut c).map(|_| ());
            if i + 1 == n {
                // held[0] is sequence 2: as old as `first`.
                assert_eq!(r.unwrap_err(), DropReason::ReplayTooOld);
            } else {
                assert!(r.is_ok(), "held packet {i}");
            }
        }
    }

    #[test]
    fn esp_across_the_32_bit_wrap_authenticates_with_the_inferred_high_bits() {
        let (mut a, mut b) = pair(Cipher::ChaCha20Poly1305);
        let start = (1u64 << 32) - 2;
        statics(&mut a).out.next = start;
        statics(&mut a).out.limit = start + 10;
        statics(&mut b).inb.window.update(start - 1);
        for i in 0..4 {
            let mut p = send(&mut a, b"wrap");
            assert!(open(&mut b, &mut p).is_ok(), "packet {i}");
        }
        assert_eq!(b.highest_received(), start + 3);
    }

    #[test]
    fn nothing_is_sent_past_the_reserved_limit() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let sas = derive(Cipher::ChaCha20Poly1305, b"e", b"a", a, b).unwrap();
        let mut core = EspCore::new(Cipher::ChaCha20Poly1305, &sas, 7, 9).unwrap();
        assert_eq!(core.poll_reservation(), Some(9 + RESERVE_BLOCK));
        let mut buf = [0u8; 64];
        assert!(core.encapsulate(&mut buf, 4, 47).is_ok());
        assert!(core.encapsulate(&mut buf, 4, 47).is_ok());
        assert_eq!(
            core.encapsulate(&mut buf, 4, 47).unwrap_err(),
            DropReason::SeqNotReserved
        );
        core.handle_reserved(9 + RESERVE_BLOCK);
        assert_eq!(core.status(Instant::now()).next_seq, 9);
        assert!(core.encapsulate(&mut buf, 4, 47).is_ok());
        assert_eq!(core.poll_reservation(), None);
        // A stale (lower) reservation never lowers the limit.
        core.handle_reserved(5);
        assert_eq!(
            core.status(Instant::now()).reserved_to,
            Some(9 + RESERVE_BLOCK)
        );
    }

    #[test]
    fn a_replay_floor_from_before_a_restart_refuses_old_packets() {
        let (mut a, mut b) = pair(Cipher::ChaCha20Poly1305);
        let old: Vec<Vec<u8>> = (0..5).map(|_| send(&mut a, b"old")).collect();
        for p in &old {
            open(&mut b, &mut p.clone()).unwrap();
        }
        assert_eq!(b.poll_replay_floor(), None, "not a block yet");
        // The receiver restarts with the floor it stored (its highest, 5).
        let (_, mut fresh) = pair(Cipher::ChaCha20Poly1305);
        fresh.handle_replay_floor(b.highest_received());
        for p in &old {
            let mut c = p.clone();
            assert_eq!(
                open(&mut fresh, &mut c).map(|_| ()).unwrap_err(),
                DropReason::Replay
            );
        }
        // New ones pass, also out of order inside the floor's own 64-bit word.
        let n6 = send(&mut a, b"6");
        let n7 = send(&mut a, b"7");
        assert!(open(&mut fresh, &mut n7.clone()).is_ok());
        assert!(open(&mut fresh, &mut n6.clone()).is_ok());
        // A block later, the floor asks to be stored again.
        statics(&mut fresh).inb.window.update(5 + RESERVE_BLOCK);
        assert_eq!(fresh.poll_replay_floor(), Some(5 + RESERVE_BLOCK));
        fresh.handle_replay_floor_stored(5 + RESERVE_BLOCK);
        assert_eq!(fresh.poll_replay_floor(), None);
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let sas = derive(Cipher::Aes256Gcm, b"e", b"a", a, b).unwrap();
        let text = format!(
            "{sas:?} {:?}",
            EspCore::new(Cipher::Aes256Gcm, &sas, 1, 2).unwrap()
        );
        let hex: String = sas.outbound.key[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!text.contains(&hex), "{text}");
        assert!(text.contains("redacted"));
    }
}
