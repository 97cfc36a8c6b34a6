//! Key derivation for both keying modes (RFC 5869 HKDF-SHA256 over the two static keys).
//!
//! Static keying ([`derive`]): the two SAs of a line come from the static keys and the
//! two addresses alone, the layout `line show --xfrm` hands a Linux kernel peer:
//!
//! ```text
//! PRK  = HKDF-Extract(salt = "twnode-esp-v1", IKM = enc_key || auth_key)
//! info = "twnode-esp-v1" || cipher name || lower IP || higher IP || direction
//! OKM  = HKDF-Expand(PRK, info, 40) = key (32) || salt (4) || SPI (4, big-endian)
//! ```
//!
//! Epoch keying ([`EpochSecrets`]): another PRK from the same keys, from which come a
//! Hello MAC key per direction (fixed for the line's life) and, for each epoch, the two
//! SAs from both ends' nonces:
//!
//! ```text
//! PRK'  = HKDF-Extract(salt = "twnode-esp-epoch-v1", IKM = enc_key || auth_key)
//! hello = HKDF-Expand(PRK', "twnode-esp-epoch-v1" || "hello" || cipher name
//!                           || lower IP || higher IP || direction, 32)
//! SA    = HKDF-Expand(PRK', "twnode-esp-epoch-v1" || "sa" || cipher name
//!                           || lower IP || higher IP || R(lower) || R(higher)
//!                           || direction, 40) = key || salt || SPI
//! ```
//!
//! "lower" and "higher" order the two underlay addresses (IPv4 as 4 bytes, IPv6 as 16;
//! compared as numbers); R(lower) is the 32-byte nonce of the end at the lower address;
//! the direction is the ASCII text `lower->higher` or `higher->lower`. An SPI below
//! 0x100 (reserved, RFC 4303 §2.1) gets 0x100 added, so no SA ever has the Hello's SPI.
//! The cipher name is `chacha20-poly1305` or `aes-256-gcm`, so the two suites never
//! share a key. Each end sends with the SA of its own direction and receives with the
//! other: the directions never share a key, salt or SPI.

use std::fmt;
use std::net::IpAddr;

use ring::{digest, hkdf, hmac};

use super::{Cipher, Nonce, KEY_LEN, SALT_LEN};
use crate::wire::esp;
use crate::wire::esp_hello::MAC_LEN;

/// The HKDF salt and info prefix of static keying; changing it changes every SA.
pub const KDF_LABEL: &[u8] = b"twnode-esp-v1";
/// The HKDF salt and info prefix of epoch keying.
pub const EPOCH_LABEL: &[u8] = b"twnode-esp-epoch-v1";

/// One direction's keys: what `ip xfrm state` calls an SA (without the addresses).
#[derive(Clone, PartialEq, Eq)]
pub struct SaKeys {
    pub spi: u32,
    pub key: [u8; KEY_LEN],
    pub salt: [u8; SALT_LEN],
}

impl fmt::Debug for SaKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SaKeys {{ spi: {:#010x}, key: <redacted> }}", self.spi)
    }
}

impl SaKeys {
    /// Key and salt as one hex string, the way `ip xfrm state ... aead` takes them.
    pub fn xfrm_key_hex(&self) -> String {
        let mut s = String::from("0x");
        for b in self.key.iter().chain(self.salt.iter()) {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// A name for this SA that reveals nothing about the key: the first 8 bytes of
    /// SHA-256 over a label, the SPI, key and salt, in hex. Names the file that keeps
    /// the SA's sequence-number mark, so that renaming a line keeps its mark and new
    /// keys start afresh.
    pub fn fingerprint(&self) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"twnode-esp-seq-v1");
        ctx.update(&self.spi.to_be_bytes());
        ctx.update(&self.key);
        ctx.update(&self.salt);
        let d = ctx.finish();
        d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The two SAs of one end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaPair {
    /// What this end sends with.
    pub outbound: SaKeys,
    /// What this end accepts.
    pub inbound: SaKeys,
}

/// Why SAs cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KdfError {
    /// Both ends have the same address: the directions could not be told apart.
    #[error("local and peer address are both {0}; ESP needs two different addresses")]
    SameAddress(IpAddr),
    /// An empty key.
    #[error("the {0} is empty")]
    EmptyKey(&'static str),
    /// The AEAD refused a derived key (only a wrong key length can cause it).
    #[error("the {0} AEAD refused its key")]
    AeadKey(Cipher),
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn addr_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The PRK of `label` from the two keys, and whether `local` is the lower address with
/// both addresses' bytes in order.
struct Extracted {
    prk: hkdf::Prk,
    local_is_lower: bool,
    lower: Vec<u8>,
    higher: Vec<u8>,
}

fn extract(
    label: &[u8],
    enc_key: &[u8],
    auth_key: &[u8],
    local: IpAddr,
    peer: IpAddr,
) -> Result<Extracted, KdfError> {
    if enc_key.is_empty() {
        return Err(KdfError::EmptyKey("encryption key"));
    }
    if auth_key.is_empty() {
        return Err(KdfError::EmptyKey("authentication key"));
    }
    if local == peer {
        return Err(KdfError::SameAddress(local));
    }
    let mut ikm = Vec::with_capacity(enc_key.len() + auth_key.len());
    ikm.extend_from_slice(enc_key);
    ikm.extend_from_slice(auth_key);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, label).extract(&ikm);
    ikm.fill(0);
    let local_is_lower = local < peer;
    let (lower, higher) = if local_is_lower {
        (local, peer)
    } else {
        (peer, local)
    };
    Ok(Extracted {
        prk,
        local_is_lower,
        lower: addr_bytes(&lower),
        higher: addr_bytes(&higher),
    })
}

/// HKDF-Expand to `out` (at most 255 * 32 bytes, so it never fails for our lengths).
fn expand(prk: &hkdf::Prk, info: &[&[u8]], out: &mut [u8]) {
    if let Ok(o) = prk.expand(info, Len(out.len())) {
        let _ = o.fill(out);
    }
}

/// One SA from 40 bytes of OKM: key, salt, SPI (moved out of the reserved range).
fn sa_from(prk: &hkdf::Prk, info: &[&[u8]]) -> SaKeys {
    let mut okm = [0u8; KEY_LEN + SALT_LEN + 4];
    expand(prk, info, &mut okm);
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&okm[..KEY_LEN]);
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&okm[KEY_LEN..KEY_LEN + SALT_LEN]);
    let mut spi = u32::from_be_bytes([okm[36], okm[37], okm[38], okm[39]]);
    if spi < esp::MIN_SPI {
        spi += esp::MIN_SPI;
    }
    okm.fill(0);
    SaKeys { spi, key, salt }
}

const UP: &[u8] = b"lower->higher";
const DOWN: &[u8] = b"higher->lower";

/// This end's (outbound, inbound) of the two directions.
fn ours<T>(local_is_lower: bool, up: T, down: T) -> (T, T) {
    if local_is_lower {
        (up, down)
    } else {
        (down, up)
    }
}

/// Derives both directions' SAs for the end at `local` talking to `peer` with static
/// keying (see the module documentation). The peer, calling this with the addresses
/// swapped, gets the same two SAs the other way round.
pub fn derive(
    cipher: Cipher,
    enc_key: &[u8],
    auth_key: &[u8],
    local: IpAddr,
    peer: IpAddr,
) -> Result<SaPair, KdfError> {
    let x = extract(KDF_LABEL, enc_key, auth_key, local, peer)?;
    let (lo, hi) = (&x.lower[..], &x.higher[..]);
    let one = |direction: &[u8]| {
        sa_from(
            &x.prk,
            &[KDF_LABEL, cipher.as_str().as_bytes(), lo, hi, direction],
        )
    };
    let (outbound, inbound) = ours(x.local_is_lower, one(UP), one(DOWN));
    Ok(SaPair { outbound, inbound })
}

/// What epoch keying derives everything from: the PRK of the static keys, and the
/// Hello MAC keys of both directions. Holds secrets: its `Debug` shows none.
#[derive(Clone)]
pub struct EpochSecrets {
    prk: hkdf::Prk,
    cipher: Cipher,
    local_is_lower: bool,
    lower: Vec<u8>,
    higher: Vec<u8>,
    /// Signs the Hellos this end sends.
    hello_out: hmac::Key,
    /// Checks the Hellos the peer sends.
    hello_in: hmac::Key,
}

impl fmt::Debug for EpochSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EpochSecrets {{ cipher: {}, <redacted> }}", self.cipher)
    }
}

impl EpochSecrets {
    /// The secrets of the end at `local` talking to `peer`.
    pub fn new(
        cipher: Cipher,
        enc_key: &[u8],
        auth_key: &[u8],
        local: IpAddr,
        peer: IpAddr,
    ) -> Result<EpochSecrets, KdfError> {
        let x = extract(EPOCH_LABEL, enc_key, auth_key, local, peer)?;
        let hello = |direction: &[u8]| {
            let mut k = [0u8; MAC_LEN];
            expand(
                &x.prk,
                &[
                    EPOCH_LABEL,
                    b"hello",
                    cipher.as_str().as_bytes(),
                    &x.lower,
                    &x.higher,
                    direction,
                ],
                &mut k,
            );
            let key = hmac::Key::new(hmac::HMAC_SHA256, &k);
            k.fill(0);
            key
        };
        let (hello_out, hello_in) = ours(x.local_is_lower, hello(UP), hello(DOWN));
        Ok(EpochSecrets {
            prk: x.prk,
            cipher,
            local_is_lower: x.local_is_lower,
            lower: x.lower,
            higher: x.higher,
            hello_out,
            hello_in,
        })
    }

    /// The SAs of the epoch made of this end's nonce `mine` and the peer's `theirs`.
    /// The peer, with the nonces swapped, gets the same two the other way round.
    pub fn epoch_sas(&self, mine: &Nonce, theirs: &Nonce) -> SaPair {
        let (r_lo, r_hi) = ours(self.local_is_lower, mine, theirs);
        let one = |direction: &[u8]| {
            sa_from(
                &self.prk,
                &[
                    EPOCH_LABEL,
                    b"sa",
                    self.cipher.as_str().as_bytes(),
                    &self.lower,
                    &self.higher,
                    &r_lo.0,
                    &r_hi.0,
                    direction,
                ],
            )
        };
        let (outbound, inbound) = ours(self.local_is_lower, one(UP), one(DOWN));
        SaPair { outbound, inbound }
    }

    /// The MAC of a Hello this end sends.
    pub fn sign(&self, covered: &[u8], mac: &mut [u8]) {
        let tag = hmac::sign(&self.hello_out, covered);
        let n = mac.len().min(tag.as_ref().len());
        mac[..n].copy_from_slice(&tag.as_ref()[..n]);
    }

    /// Whether a Hello came from the peer (constant time).
    pub fn verify(&self, covered: &[u8], mac: &[u8]) -> bool {
        hmac::verify(&self.hello_in, covered, mac).is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;

    fn hmac_of(key: &[u8], data: &[&[u8]]) -> Vec<u8> {
        let k = hmac::Key::new(hmac::HMAC_SHA256, key);
        let mut ctx = hmac::Context::with_key(&k);
        for d in data {
            ctx.update(d);
        }
        ctx.sign().as_ref().to_vec()
    }

    /// HKDF-Expand by hand (RFC 5869 §2.3), for up to two blocks.
    fn expand_by_hand(prk: &[u8], info: &[u8], len: usize) -> Vec<u8> {
        let t1 = hmac_of(prk, &[info, &[1]]);
        let t2 = hmac_of(prk, &[&t1, info, &[2]]);
        [t1, t2].concat()[..len].to_vec()
    }

    #[test]
    fn both_ends_derive_mirrored_sas_and_directions_never_share_keys() {
        for cipher in Cipher::ALL {
            let a: IpAddr = "203.0.113.10".parse().unwrap();
            let b: IpAddr = "198.51.100.20".parse().unwrap();
            let x = derive(cipher, b"k1", b"k2", a, b).unwrap();
            let y = derive(cipher, b"k1", b"k2", b, a).unwrap();
            assert_eq!(x.outbound, y.inbound);
            assert_eq!(x.inbound, y.outbound);
            assert_ne!(x.outbound.key, x.inbound.key);
            assert_ne!(x.outbound.salt, x.inbound.salt);
            assert_ne!(x.outbound.spi, x.inbound.spi);
            assert!(x.outbound.spi >= esp::MIN_SPI && x.inbound.spi >= esp::MIN_SPI);
        }
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let chacha = derive(Cipher::ChaCha20Poly1305, b"k1", b"k2", a, b).unwrap();
        let gcm = derive(Cipher::Aes256Gcm, b"k1", b"k2", a, b).unwrap();
        assert_ne!(chacha.outbound.key, gcm.outbound.key);
        // enc || auth is the IKM: swapping the two keys gives other SAs.
        let swapped = derive(Cipher::ChaCha20Poly1305, b"k2", b"k1", a, b).unwrap();
        assert_ne!(chacha.outbound.key, swapped.outbound.key);
        assert_eq!(
            derive(Cipher::Aes256Gcm, b"k", b"k", a, a).unwrap_err(),
            KdfError::SameAddress(a)
        );
        assert!(derive(Cipher::Aes256Gcm, b"", b"k", a, b).is_err());
    }

    /// Checks the KDF against HKDF computed by hand from HMAC-SHA256 (RFC 5869 §2.2-2.3):
    /// a change to it would break interop with deployed peers and with `line show --xfrm`
    /// output pasted into kernel peers.
    #[test]
    fn kdf_is_hkdf_sha256_with_the_documented_salt_info_and_layout() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p = derive(Cipher::ChaCha20Poly1305, b"enc", b"auth", a, b).unwrap();
        let prk = hmac_of(KDF_LABEL, &[b"encauth"]);
        let info: Vec<u8> = [
            KDF_LABEL,
            b"chacha20-poly1305",
            &[10, 0, 0, 1],
            &[10, 0, 0, 2],
            b"lower->higher",
        ]
        .concat();
        let okm = expand_by_hand(&prk, &info, 40);
        assert_eq!(&p.outbound.key[..], &okm[..32]);
        assert_eq!(&p.outbound.salt[..], &okm[32..36]);
        let spi = u32::from_be_bytes(okm[36..40].try_into().unwrap());
        assert_eq!(p.outbound.spi, if spi < 0x100 { spi + 0x100 } else { spi });
    }

    /// The epoch SAs and Hello keys as the module documentation writes them, computed
    /// by hand: the peer of another implementation must be able to follow them.
    #[test]
    fn epoch_kdf_is_the_documented_hkdf_with_both_nonces_in_address_order() {
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "10.0.0.1".parse().unwrap();
        let ra = Nonce([0xaa; 32]);
        let rb = Nonce([0xbb; 32]);
        // a is the higher address: R(lower) is b's nonce.
        let s = EpochSecrets::new(Cipher::Aes256Gcm, b"enc", b"auth", a, b).unwrap();
        let p = s.epoch_sas(&ra, &rb);
        let prk = hmac_of(EPOCH_LABEL, &[b"encauth"]);
        let info: Vec<u8> = [
            EPOCH_LABEL,
            b"sa",
            b"aes-256-gcm",
            &[10, 0, 0, 1],
            &[10, 0, 0, 2],
            &[0xbb; 32],
            &[0xaa; 32],
            b"higher->lower",
        ]
        .concat();
        let okm = expand_by_hand(&prk, &info, 40);
        assert_eq!(&p.outbound.key[..], &okm[..32]);
        assert_eq!(&p.outbound.salt[..], &okm[32..36]);
        let hello_info: Vec<u8> = [
            EPOCH_LABEL,
            b"hello",
            b"aes-256-gcm",
            &[10, 0, 0, 1],
            &[10, 0, 0, 2],
            b"higher->lower",
        ]
        .concat();
        let hello_key = expand_by_hand(&prk, &hello_info, 32);
        let mut mac = [0u8; 32];
        s.sign(b"covered", &mut mac);
        assert_eq!(mac.to_vec(), hmac_of(&hello_key, &[b"covered"]));
        // The peer derives the mirror image, checks a's MACs, and cannot take its own.
        let t = EpochSecrets::new(Cipher::Aes256Gcm, b"enc", b"auth", b, a).unwrap();
        assert_eq!(
            t.epoch_sas(&rb, &ra),
            SaPair {
                outbound: p.inbound.clone(),
                inbound: p.outbound.clone(),
            }
        );
        assert!(t.verify(b"covered", &mac));
        assert!(
            !s.verify(b"covered", &mac),
            "a Hello reflected to its sender fails"
        );
        // Other nonces, other SAs; other static keys, other MACs.
        assert_ne!(s.epoch_sas(&ra, &Nonce([0xbc; 32])).outbound, p.outbound);
        let u = EpochSecrets::new(Cipher::Aes256Gcm, b"enc", b"other", b, a).unwrap();
        assert!(!u.verify(b"covered", &mac));
        // Epoch keying never gives the static SAs.
        let st = derive(Cipher::Aes256Gcm, b"enc", b"auth", a, b).unwrap();
        assert_ne!(st.outbound.key, p.outbound.key);
        assert!(format!("{s:?}").contains("redacted"));
    }
}
