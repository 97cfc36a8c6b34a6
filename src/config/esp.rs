//! ESP settings of an encrypted GRE line (`--encrypt`, `[line.ip_tunnel] encrypt`):
//! the cipher and the two static keys both ends share. The key type, [`EspKey`], lives
//! with the other keys in [`crate::tunnel::keys`] (its format and its redaction are
//! described there); which settings an encrypted line needs is checked in
//! [`super::validate`].

use crate::tunnel::esp::Cipher;
pub use crate::tunnel::keys::EspKey;

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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;

    const SEED_AUTH: &str = "0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";

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
}
