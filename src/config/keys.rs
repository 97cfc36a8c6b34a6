//! WireGuard keys: x25519 private and public keys in the base64 form `wg genkey` and
//! `wg pubkey` use, so keys move freely between twnode, wireguard-tools and wireguard-go.
//!
//! A private key never prints: its `Debug` and `Display` are redacted, and only
//! [`PrivateKey::to_base64`] reveals it, for the few places (config file, peer command)
//! that must.

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

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    // A pair produced by wireguard-tools: `echo <priv> | wg pubkey`.
    const WG_PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const WG_PUBLIC: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

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
