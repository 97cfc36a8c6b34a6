//! ESP settings of an encrypted GRE line (`--encrypt`, `[line.ip_tunnel] encrypt`):
//! the cipher, the two static keys both ends share, and how SAs come from them
//! (`--esp-keying`, with `--esp-rekey` for epochs). The key type, [`EspKey`], lives
//! with the other keys in [`crate::tunnel::keys`] (its format and its redaction are
//! described there); which settings an encrypted line needs is checked in
//! [`super::validate`].

use std::time::Duration;

pub use crate::tunnel::esp::Keying;
use crate::tunnel::esp::{Cipher, DEFAULT_REKEY_AFTER};
pub use crate::tunnel::keys::EspKey;

/// The shortest rekey interval `--esp-rekey` takes, in seconds.
pub const MIN_REKEY_SECS: u32 = 1;
/// The longest rekey interval `--esp-rekey` takes, in seconds (a day).
pub const MAX_REKEY_SECS: u32 = 86_400;

/// An encrypted line's ESP settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Esp {
    pub cipher: Cipher,
    /// `--enc-key`.
    pub enc_key: EspKey,
    /// `--auth-key`.
    pub auth_key: EspKey,
    /// `--esp-keying`: epochs agreed with a twnode peer (default), or static SAs for a
    /// kernel peer.
    pub keying: Keying,
    /// `--esp-rekey`: epoch keying starts a rekey after this long.
    pub rekey: Duration,
}

impl Esp {
    /// Settings with the default keying and rekey interval.
    pub fn new(cipher: Cipher, enc_key: EspKey, auth_key: EspKey) -> Esp {
        Esp {
            cipher,
            enc_key,
            auth_key,
            keying: Keying::default(),
            rekey: DEFAULT_REKEY_AFTER,
        }
    }
}

/// A keying mode as `--esp-keying` and `esp_keying =` take it.
pub fn parse_keying(s: &str) -> Result<Keying, String> {
    Keying::from_name(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = Keying::ALL.iter().map(|k| k.as_str()).collect();
        format!(
            "keying {s:?} is not one of: {} (epoch between twnode ends, static for a \
             kernel peer)",
            names.join(", ")
        )
    })
}

/// A rekey interval in seconds as `--esp-rekey` and `esp_rekey =` take it.
pub fn parse_rekey(secs: u32) -> Result<Duration, String> {
    if (MIN_REKEY_SECS..=MAX_REKEY_SECS).contains(&secs) {
        Ok(Duration::from_secs(secs.into()))
    } else {
        Err(format!(
            "rekey interval {secs} s is not {MIN_REKEY_SECS}-{MAX_REKEY_SECS} seconds"
        ))
    }
}

/// A cipher name as `--cipher` and `cipher =` take it.
pub fn parse_cipher(s: &str) -> Result<Cipher, String> {
    Cipher::from_name(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = Cipher::ALL.iter().map(|c| c.as_str()).collect();
        format!("cipher {s:?} is not one of: {}", names.join(", "))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;

    const SEED_AUTH: &str = "0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";

    #[test]
    fn keys_never_print() {
        let k = EspKey::parse(SEED_AUTH).unwrap();
        let esp = Esp::new(Cipher::default(), k, k);
        let text = format!("{k} {k:?} {esp:?}");
        assert!(!text.contains("1a2b"), "{text}");
    }

    #[test]
    fn keying_and_rekey_parse_and_name_the_choices() {
        assert_eq!(parse_keying("static"), Ok(Keying::Static));
        assert_eq!(parse_keying(" epoch "), Ok(Keying::Epoch));
        let e = parse_keying("ike").unwrap_err();
        assert!(
            e.contains("epoch, static") && e.contains("kernel peer"),
            "{e}"
        );
        assert_eq!(parse_rekey(60), Ok(Duration::from_secs(60)));
        assert!(parse_rekey(0).unwrap_err().contains("1-86400"));
        assert!(parse_rekey(86_401).is_err());
        assert_eq!(Keying::default(), Keying::Epoch);
    }
}
