//! The keys a line holds: WireGuard's x25519 private and public keys, and the two static
//! keys of an encrypted GRE line's ESP ([`EspKey`]). They live here, below the config
//! that stores them and the tunnel cores that use them, so that neither imports the
//! other's room.
//!
//! WireGuard keys are in the base64 form `wg genkey` and `wg pubkey` use, so keys move
//! freely between twnode, wireguard-tools and wireguard-go. ESP keys are written `0x`
//! followed by hex digits, 16 to 64 bytes (32 to 128 digits); the bytes are the key, they
//! are never hashed as text. Anything else (text without `0x`, an odd number of digits, a
//! non-hex character, too short or too long) is refused with a message that says which.
//! The ESP keys feed the KDF of [`super::esp`]; neither is used directly as a cipher key,
//! and the two are interchangeable in strength (both go into the IKM).
//!
//! A secret never prints: `Debug` and `Display` of [`PrivateKey`] and [`EspKey`] are
//! redacted; only [`PrivateKey::to_base64`] and [`EspKey::to_hex`] reveal them, for the
//! few places (config file, peer command) that must.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a key string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not valid base64 at all.
    #[error(
        "not valid base64 (a WireGuard key is 44 characters ending in '=', as `wg genkey` prints)"
    )]
    Base64,
    /// Valid base64, but not 32 bytes.
    #[error("decodes to {0} bytes, a WireGuard key has 32 (44 base64 characters ending in '=')")]
    Length(usize),
}

fn decode32(s: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD.decode(s.trim()).map_err(|_| KeyError::Base64)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

/// An x25519 private key, clamped as `wg genkey` clamps it.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        // RFC 7748 clamping, exactly as wireguard-tools' genkey does.
        bytes[0] &= 248;
        bytes[31] = (bytes[31] & 127) | 64;
        PrivateKey(bytes)
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// The key in base64: the one way to reveal it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The key from its 32 bytes (WireGuard's UAPI writes keys in hex).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PrivateKey(bytes)
    }

    /// The key's bytes: reveals it, as [`Self::to_base64`] does, for the UAPI's `get`.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The raw scalar, for the WireGuard state machine.
    pub fn to_secret(&self) -> x25519_dalek::StaticSecret {
        x25519_dalek::StaticSecret::from(self.0)
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(PrivateKey)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl Serialize for PrivateKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PrivateKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An x25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key for the WireGuard state machine.
    pub fn to_dalek(self) -> x25519_dalek::PublicKey {
        x25519_dalek::PublicKey::from(self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A WireGuard preshared key: 32 random bytes mixed into the handshake, WireGuard's
/// optional post-quantum layer. Base64 as `wg genpsk` prints it; secret like a private
/// key (`Debug` redacted, [`Self::to_base64`] the one way to reveal it).
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    /// A fresh key from the operating system's random source (as `wg genpsk`).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        PresharedKey(bytes)
    }

    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PresharedKey(bytes)
    }

    /// The key's bytes, for the WireGuard state machine and the UAPI's `get`.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The key in base64.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(PresharedKey)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl Serialize for PresharedKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PresharedKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Shortest key: 128 bits.
pub const MIN_KEY_BYTES: usize = 16;
/// Longest key: 512 bits.
pub const MAX_KEY_BYTES: usize = 64;

/// An ESP key as given by the user. Fixed storage keeps the settings that hold it
/// `Copy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EspKey {
    len: u8,
    bytes: [u8; MAX_KEY_BYTES],
}

impl EspKey {
    /// Parses `0x` + hex. The error says what is wrong without echoing the key.
    pub fn parse(s: &str) -> Result<EspKey, String> {
        let s = s.trim();
        let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) else {
            return Err(format!(
                "is not hex: an ESP key is written 0x followed by {}-{} hex digits \
                 (e.g. `openssl rand -hex 32`, prefixed with 0x); text keys are not accepted",
                2 * MIN_KEY_BYTES,
                2 * MAX_KEY_BYTES
            ));
        };
        if let Some(c) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(format!(
                "has {c:?} after 0x, which is not a hex digit (0-9, a-f)"
            ));
        }
        if hex.len() % 2 != 0 {
            return Err(format!(
                "has {} hex digits after 0x; a key is whole bytes, so an even number",
                hex.len()
            ));
        }
        let n = hex.len() / 2;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&n) {
            return Err(format!(
                "is {n} bytes; an ESP key is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes \
                 ({}-{} hex digits after 0x)",
                2 * MIN_KEY_BYTES,
                2 * MAX_KEY_BYTES
            ));
        }
        let mut bytes = [0u8; MAX_KEY_BYTES];
        for (i, b) in bytes.iter_mut().take(n).enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| "is not hex".to_string())?;
        }
        Ok(EspKey {
            len: n as u8,
            bytes,
        })
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// `0x` + hex: the one way to reveal the key.
    pub fn to_hex(&self) -> String {
        let mut s = String::from("0x");
        for b in self.bytes() {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl fmt::Debug for EspKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EspKey(<redacted, {} bytes>)", self.len)
    }
}

impl fmt::Display for EspKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for EspKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for EspKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EspKey::parse(&s).map_err(|e| serde::de::Error::custom(format!("the ESP key {e}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;
    use proptest::prelude::*;

    // A pair produced by wireguard-tools: `echo <priv> | wg pubkey`.
    const WG_PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const WG_PUBLIC: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
    const SEED_AUTH: &str = "0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";

    #[test]
    fn public_key_matches_wireguard_tools() {
        let private: PrivateKey = WG_PRIVATE.parse().unwrap();
        assert_eq!(private.public_key().to_string(), WG_PUBLIC);
        assert_eq!(private.to_base64(), WG_PRIVATE);
    }

    #[test]
    fn generated_key_is_clamped() {
        for _ in 0..64 {
            let k = PrivateKey::generate();
            assert_eq!(k.0[0] & 7, 0);
            assert_eq!(k.0[31] & 0xc0, 0x40);
        }
    }

    #[test]
    fn malformed_keys_name_the_problem() {
        assert_eq!("not base64!".parse::<PublicKey>(), Err(KeyError::Base64));
        assert_eq!("AAAA".parse::<PublicKey>(), Err(KeyError::Length(3)));
        let e = "AAAA".parse::<PrivateKey>().unwrap_err();
        assert!(e.to_string().contains("32"));
    }

    #[test]
    fn private_key_debug_is_redacted() {
        let k: PrivateKey = WG_PRIVATE.parse().unwrap();
        assert!(!format!("{k:?}").contains(&WG_PRIVATE[..8]));
    }

    #[test]
    fn hex_keys_are_bytes_not_text() {
        let k = EspKey::parse(SEED_AUTH).unwrap();
        assert_eq!(k.bytes().len(), 24);
        assert_eq!(&k.bytes()[..3], &[0x1a, 0x2b, 0x3c]);
        assert_eq!(k.to_hex(), SEED_AUTH);
        assert_eq!(
            EspKey::parse("0XABCDEF0123456789abcdef0123456789")
                .unwrap()
                .bytes()[0],
            0xab
        );
    }

    #[test]
    fn malformed_keys_are_refused_with_the_reason() {
        for (bad, why) in [
            ("1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d", "is not hex"),
            ("my secret passphrase", "is not hex"),
            ("0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6dz0", "not a hex digit"),
            ("0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7", "even number"),
            ("0x1a2b", "is 2 bytes"),
            (&format!("0x{}", "ab".repeat(65)), "is 65 bytes"),
            ("0x", "is 0 bytes"),
        ] {
            let e = EspKey::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("1a2b3c"), "the error echoes the key: {e}");
        }
    }

    proptest! {
        #[test]
        fn base64_round_trip(bytes in any::<[u8; 32]>()) {
            let k = PrivateKey(bytes);
            prop_assert_eq!(k.to_base64().parse::<PrivateKey>().unwrap(), k.clone());
            let p = PublicKey(bytes);
            prop_assert_eq!(p.to_string().parse::<PublicKey>().unwrap(), p);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,64}") {
            let _ = s.parse::<PrivateKey>();
            let _ = s.parse::<PublicKey>();
        }
    }
}
