//! ESP settings of an encrypted GRE line (`--encrypt`, `[line.ip_tunnel] encrypt`):
//! the cipher and the two static keys both ends share. The key type, [`EspKey`], lives
//! with the other keys in [`crate::tunnel::keys`] (its format and its redaction are
//! described there).

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
