//! ESP settings of an encrypted GRE line (`--encrypt`, `[line.ip_tunnel] encrypt`):
//! the cipher and the two static keys both ends share.
//!
//! Keys are written `0x` followed by hex digits, 16 to 64 bytes (32 to 128 digits); the
//! bytes are the key, they are never hashed as text. Anything else (text without `0x`,
//! an odd number of digits, a non-hex character, too short or too long) is refused with
//! a message that says which. A key never prints: `Debug` and `Display` are redacted;
//! [`EspKey::to_hex`] reveals it for the config file and the peer command only.
//! The keys feed the KDF of [`crate::tunnel::esp`]; neither is used directly as a
//! cipher key, and the two are interchangeable in strength (both go into the IKM).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::tunnel::esp::Cipher;

/// Shortest key: 128 bits.
pub const MIN_KEY_BYTES: usize = 16;
/// Longest key: 512 bits.
pub const MAX_KEY_BYTES: usize = 64;

/// An ESP key as given by the user. Fixed storage keeps [`super::model::IpTunnel`]
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

/// An encrypted line's ESP settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Esp {
    pub cipher: Cipher,
    /// `--enc-key`.
    pub enc_key: EspKey,
    /// `--auth-key`.
    pub auth_key: EspKey,
}

/// A cipher name as `--cipher` and `cipher =` take it.
pub fn parse_cipher(s: &str) -> Result<Cipher, String> {
    Cipher::from_name(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = Cipher::ALL.iter().map(|c| c.as_str()).collect();
        format!("cipher {s:?} is not one of: {}", names.join(", "))
    })
}

/// The ESP settings from what the user gave: `encrypt`, an optional cipher and the two
/// keys. `Ok(None)` for a plain line. Errors name the setting: (`toml key`, `flag`,
/// message).
pub fn from_parts(
    encrypt: bool,
    cipher: Option<&str>,
    enc_key: Option<EspKey>,
    auth_key: Option<EspKey>,
) -> Result<Option<Esp>, (&'static str, &'static str, String)> {
    if !encrypt {
        let given = [
            (cipher.is_some(), "cipher", "--cipher"),
            (enc_key.is_some(), "enc_key", "--enc-key"),
            (auth_key.is_some(), "auth_key", "--auth-key"),
        ];
        if let Some(&(_, key, flag)) = given.iter().find(|(on, _, _)| *on) {
            return Err((
                key,
                flag,
                "applies to encrypted lines only; add --encrypt (encrypt = true) or remove it"
                    .into(),
            ));
        }
        return Ok(None);
    }
    let cipher = match cipher {
        Some(c) => parse_cipher(c).map_err(|m| ("cipher", "--cipher", m))?,
        None => Cipher::default(),
    };
    let enc_key = enc_key.ok_or((
        "enc_key",
        "--enc-key",
        "an encrypted line needs --enc-key and --auth-key (0x + hex, the same on both ends)"
            .to_string(),
    ))?;
    let auth_key = auth_key.ok_or((
        "auth_key",
        "--auth-key",
        "an encrypted line needs --enc-key and --auth-key (0x + hex, the same on both ends)"
            .to_string(),
    ))?;
    Ok(Some(Esp {
        cipher,
        enc_key,
        auth_key,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;

    const SEED_AUTH: &str = "0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";

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

    #[test]
    fn keys_never_print() {
        let k = EspKey::parse(SEED_AUTH).unwrap();
        let esp = Esp {
            cipher: Cipher::default(),
            enc_key: k,
            auth_key: k,
        };
        let text = format!("{k} {k:?} {esp:?}");
        assert!(!text.contains("1a2b"), "{text}");
    }

    #[test]
    fn encrypt_needs_both_keys_and_keys_need_encrypt() {
        let k = EspKey::parse(SEED_AUTH).unwrap();
        assert_eq!(from_parts(false, None, None, None).unwrap(), None);
        assert_eq!(
            from_parts(true, None, Some(k), None).unwrap_err().1,
            "--auth-key"
        );
        assert_eq!(
            from_parts(true, None, None, Some(k)).unwrap_err().1,
            "--enc-key"
        );
        assert_eq!(
            from_parts(false, None, Some(k), None).unwrap_err().1,
            "--enc-key"
        );
        assert_eq!(
            from_parts(false, Some("aes-256-gcm"), None, None)
                .unwrap_err()
                .1,
            "--cipher"
        );
        assert!(from_parts(true, Some("des"), Some(k), Some(k))
            .unwrap_err()
            .2
            .contains("chacha20-poly1305, aes-256-gcm"));
        let e = from_parts(true, Some("aes-256-gcm"), Some(k), Some(k))
            .unwrap()
            .unwrap();
        assert_eq!(e.cipher, Cipher::Aes256Gcm);
    }
}
