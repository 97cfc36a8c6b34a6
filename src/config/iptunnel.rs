//! An IP tunnel line's options (types ipip, gre, sit, ip6ip6, ipip6, gre6): iproute2's
//! `ip tunnel` options plus a keepalive and ESP, their parsers in iproute2's syntax
//! (`parse_key`, `parse_ttl`, `parse_tos`), and their `line create` spelling for the
//! peer command (`cli_options`, `mirrored`).

use super::esp::{Esp, Keying};
use super::names::seconds;
use super::raw::{IntOrText, RawIpTunnel};
use super::setting::Setting;
use crate::tunnel::esp::DEFAULT_REKEY_AFTER;
use crate::tunnel::gre::GreOptions;
use crate::tunnel::iptype::{Tos, Ttl, TunnelType};
use crate::tunnel::keepalive::{KeepaliveConfig, DEFAULT_RETRIES};
use crate::wire::gre::Key;

/// An IP tunnel line's settings (types ipip, gre, sit, ip6ip6, ipip6, gre6): iproute2's
/// `ip tunnel` options plus a keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpTunnel {
    pub kind: TunnelType,
    /// Keys, sequence numbers, checksums; all off for the IP-in-IP types.
    pub gre: GreOptions,
    pub ttl: Ttl,
    pub tos: Tos,
    /// IPv4 underlay only: DF on every outer packet (Linux's default).
    pub pmtudisc: bool,
    /// Off unless asked for (Linux's tunnels have none).
    pub keepalive: Option<KeepaliveConfig>,
    /// gre/gre6 only: ESP in transport mode under the GRE header (`--encrypt`).
    pub esp: Option<Esp>,
    /// Send the outer packets through an AF_XDP socket on the next hop's Ethernet
    /// device instead of the raw socket (`--af-xdp`): past the kernel's routing,
    /// netfilter and qdisc on this host. A choice of this host, not mirrored to the peer.
    pub af_xdp: bool,
    /// How the GRE keys were written, so they are printed and stored as typed.
    pub key_spelling: KeySpelling,
}

/// Whether each GRE key was written as a dotted quad (`1.2.3.4`) rather than a number,
/// so `line show`, the peer command and the config file give it back that way.
///
/// A spelling, not a setting: two lines that differ only here are equal (the derived
/// `PartialEq` of [`IpTunnel`] goes through this type's), so rewriting `16909060` as
/// `"1.2.3.4"` in the file restarts nothing on reload.
#[derive(Debug, Clone, Copy, Default, Eq)]
pub struct KeySpelling {
    /// `ikey` was a dotted quad.
    pub ikey_dotted: bool,
    /// `okey` was a dotted quad.
    pub okey_dotted: bool,
}

impl PartialEq for KeySpelling {
    fn eq(&self, _: &KeySpelling) -> bool {
        true
    }
}

impl KeySpelling {
    /// The spelling of each key as given (a dotted quad is a text holding a dot).
    pub fn of(ikey: Option<&IntOrText>, okey: Option<&IntOrText>) -> KeySpelling {
        let dotted =
            |k: Option<&IntOrText>| matches!(k, Some(IntOrText::Text(t)) if t.contains('.'));
        KeySpelling {
            ikey_dotted: dotted(ikey),
            okey_dotted: dotted(okey),
        }
    }

    fn mirrored(self) -> KeySpelling {
        KeySpelling {
            ikey_dotted: self.okey_dotted,
            okey_dotted: self.ikey_dotted,
        }
    }
}

/// A GRE key as written: a dotted quad or a number.
fn key_text(k: Key, dotted: bool) -> String {
    if dotted {
        std::net::Ipv4Addr::from(k.0).to_string()
    } else {
        k.0.to_string()
    }
}

impl IpTunnel {
    /// The same line seen from the peer: input and output options swapped.
    pub fn mirrored(&self) -> IpTunnel {
        IpTunnel {
            gre: self.gre.mirrored(),
            af_xdp: false,
            key_spelling: self.key_spelling.mirrored(),
            ..*self
        }
    }

    /// The `line create` options that give these settings (defaults left out), in
    /// iproute2's spelling: `--key 7` when both keys are equal, else `--ikey`/`--okey`.
    pub fn cli_options(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let g = &self.gre;
        let mut pair =
            |both: &str, i: &str, o: &str, iv: Option<String>, ov: Option<String>| match (iv, ov) {
                (Some(a), Some(b)) if a == b => {
                    out.push(both.into());
                    if !a.is_empty() {
                        out.push(a);
                    }
                }
                (iv, ov) => {
                    for (flag, v) in [(i, iv), (o, ov)] {
                        if let Some(v) = v {
                            out.push(flag.into());
                            if !v.is_empty() {
                                out.push(v);
                            }
                        }
                    }
                }
            };
        let flag = |on: bool| on.then(String::new);
        pair(
            "--key",
            "--ikey",
            "--okey",
            g.ikey.map(|k| key_text(k, self.key_spelling.ikey_dotted)),
            g.okey.map(|k| key_text(k, self.key_spelling.okey_dotted)),
        );
        pair("--seq", "--iseq", "--oseq", flag(g.iseq), flag(g.oseq));
        pair("--csum", "--icsum", "--ocsum", flag(g.icsum), flag(g.ocsum));
        if self.ttl != Ttl::default_for(self.kind) {
            out.extend(["--ttl".to_string(), self.ttl.to_string()]);
        }
        if self.tos != Tos::default() {
            out.extend(["--tos".to_string(), self.tos.to_string()]);
        }
        if !self.pmtudisc {
            out.push("--nopmtudisc".into());
        }
        if let Some(k) = self.keepalive {
            out.push("--keepalive".into());
            out.push(if k.retries == DEFAULT_RETRIES {
                k.interval.as_secs().to_string()
            } else {
                format!("{},{}", k.interval.as_secs(), k.retries)
            });
        }
        // The keys are secret: `line show` and `line list` print these options, so the
        // keys come only from [`IpTunnel::esp_key_options`].
        if let Some(e) = self.esp {
            out.push("--encrypt".into());
            if e.cipher != crate::tunnel::esp::Cipher::default() {
                out.extend(["--cipher".to_string(), e.cipher.as_str().to_string()]);
            }
            if e.keying != Keying::default() {
                out.extend(["--esp-keying".to_string(), e.keying.as_str().to_string()]);
            }
            if e.rekey != DEFAULT_REKEY_AFTER {
                out.extend(["--esp-rekey".to_string(), e.rekey.as_secs().to_string()]);
            }
        }
        if self.af_xdp {
            out.push("--af-xdp".into());
        }
        out
    }

    /// `--enc-key 0x.. --auth-key 0x..` for the peer command. Secret.
    pub fn esp_key_options(&self) -> Vec<String> {
        match self.esp {
            Some(e) => vec![
                "--enc-key".into(),
                e.enc_key.to_hex(),
                "--auth-key".into(),
                e.auth_key.to_hex(),
            ],
            None => Vec::new(),
        }
    }

    pub(super) fn to_raw(self) -> Option<RawIpTunnel> {
        let key = |k: Option<Key>, dotted: bool| {
            k.map(|k| match dotted {
                true => IntOrText::Text(key_text(k, true)),
                false => IntOrText::Int(i64::from(k.0)),
            })
        };
        let raw = RawIpTunnel {
            ikey: key(self.gre.ikey, self.key_spelling.ikey_dotted),
            okey: key(self.gre.okey, self.key_spelling.okey_dotted),
            iseq: self.gre.iseq,
            oseq: self.gre.oseq,
            icsum: self.gre.icsum,
            ocsum: self.gre.ocsum,
            ttl: (self.ttl != Ttl::default_for(self.kind)).then(|| match self.ttl {
                Ttl::Inherit => IntOrText::Text("inherit".into()),
                Ttl::Fixed(n) => IntOrText::Int(n.into()),
            }),
            tos: (self.tos != Tos::default()).then(|| IntOrText::Text(self.tos.to_string())),
            pmtudisc: (!self.pmtudisc).then_some(false),
            keepalive: self.keepalive.map(|k| k.interval.as_secs() as u32),
            keepalive_retries: self
                .keepalive
                .filter(|k| k.retries != DEFAULT_RETRIES)
                .map(|k| k.retries.into()),
            encrypt: self.esp.is_some(),
            cipher: self
                .esp
                .filter(|e| e.cipher != crate::tunnel::esp::Cipher::default())
                .map(|e| e.cipher.as_str().to_string()),
            enc_key: self.esp.map(|e| e.enc_key),
            auth_key: self.esp.map(|e| e.auth_key),
            esp_keying: self
                .esp
                .filter(|e| e.keying != Keying::default())
                .map(|e| e.keying.as_str().to_string()),
            esp_rekey: self
                .esp
                .filter(|e| e.rekey != DEFAULT_REKEY_AFTER)
                .map(|e| e.rekey.as_secs() as u32),
            af_xdp: self.af_xdp,
        };
        (raw != RawIpTunnel::default()).then_some(raw)
    }
}

/// A GRE key as iproute2 takes it: a number (decimal or 0x hex) or a dotted quad.
pub fn parse_key(s: &str) -> Result<Key, String> {
    let s = s.trim();
    let parsed = if s.contains('.') {
        s.parse::<std::net::Ipv4Addr>().ok().map(u32::from)
    } else if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()
    } else {
        s.parse::<u32>().ok()
    };
    parsed.map(Key).ok_or_else(|| {
        format!("key {s:?} is not a number from 0 to 4294967295 or a dotted quad (e.g. 1.2.3.4)")
    })
}

/// A TTL as iproute2 takes it: 1-255, or `inherit` (0 means inherit too).
pub fn parse_ttl(s: &str) -> Result<Ttl, String> {
    match s.trim() {
        "inherit" | "0" => Ok(Ttl::Inherit),
        n => match n.parse::<u8>() {
            Ok(v) => Ok(Ttl::Fixed(v)),
            Err(_) => Err(format!("TTL {n:?} is not 1-255 or inherit")),
        },
    }
}

/// A TOS as iproute2 takes it: `inherit`, or a hexadecimal octet (`10` and `0x10` are
/// both DSCP 4 / 0x10).
pub fn parse_tos(s: &str) -> Result<Tos, String> {
    match s.trim() {
        "inherit" => Ok(Tos::Inherit),
        t => {
            let hex = t
                .strip_prefix("0x")
                .or_else(|| t.strip_prefix("0X"))
                .unwrap_or(t);
            u8::from_str_radix(hex, 16).map(Tos::Fixed).map_err(|_| {
                format!("TOS {t:?} is not a hexadecimal octet (00-ff, as iproute2) or inherit")
            })
        }
    }
}

/// A keepalive: `secs` 0 is off; `retries` defaults to Cisco's 3. A problem names the
/// setting at fault, the interval or the retries.
pub fn keepalive(
    secs: u32,
    retries: Option<u32>,
) -> Result<Option<KeepaliveConfig>, (Setting, String)> {
    if secs == 0 {
        return match retries {
            Some(_) => Err((
                Setting::KeepaliveRetries,
                "retries without a keepalive interval (0 or unset); give the interval too".into(),
            )),
            None => Ok(None),
        };
    }
    let interval = seconds(secs).map_err(|m| (Setting::Keepalive, m))?;
    let retries = match retries {
        None => DEFAULT_RETRIES,
        Some(r) => match u8::try_from(r) {
            Ok(r) if r >= 1 => r,
            _ => {
                return Err((
                    Setting::KeepaliveRetries,
                    format!("keepalive retries {r} is not 1-255"),
                ))
            }
        },
    };
    Ok(Some(KeepaliveConfig {
        interval: std::time::Duration::from_secs(interval.into()),
        retries,
    }))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::config::testdata::{cfg, GRE_TOML};

    /// A line of `kind` with Linux's defaults.
    fn linux_defaults(kind: TunnelType) -> IpTunnel {
        IpTunnel {
            kind,
            gre: GreOptions::default(),
            ttl: Ttl::default_for(kind),
            tos: Tos::default(),
            pmtudisc: true,
            keepalive: None,
            esp: None,
            af_xdp: false,
            key_spelling: KeySpelling::default(),
        }
    }

    #[test]
    fn ip_tunnel_lines_parse_with_defaults_and_round_trip() {
        let c = cfg(GRE_TOML).unwrap();
        let g = c.lines[0].ip_tunnel().unwrap();
        assert_eq!(g.kind, TunnelType::Gre);
        assert_eq!(g.gre.ikey, Some(Key(7)));
        assert_eq!(g.gre.okey, Some(Key(8)));
        assert!(g.gre.iseq && !g.gre.oseq && !g.gre.icsum && g.gre.ocsum);
        assert_eq!((g.ttl, g.tos), (Ttl::Inherit, Tos::Fixed(0x28)));
        assert!(g.pmtudisc);
        let k = g.keepalive.unwrap();
        assert_eq!((k.interval.as_secs(), k.retries), (5, 2));
        let i = c.lines[1].ip_tunnel().unwrap();
        assert_eq!(*i, linux_defaults(TunnelType::Ipip));
        assert!(!c.has_private_keys());
        let written = c.to_toml();
        assert!(!written.contains("[line.wireguard]"), "{written}");
        assert_eq!(cfg(&written).unwrap(), c, "{written}");
    }

    #[test]
    fn af_xdp_parses_round_trips_and_stays_off_in_the_peer_command() {
        let text = GRE_TOML.replace(
            "keepalive_retries = 2\n",
            "keepalive_retries = 2\naf_xdp = true\n",
        );
        let c = cfg(&text).unwrap();
        let g = c.lines[0].ip_tunnel().unwrap();
        assert!(g.af_xdp);
        assert!(g.cli_options().contains(&"--af-xdp".to_string()));
        assert!(
            !g.mirrored().af_xdp,
            "a choice of this host, not the peer's"
        );
        assert!(!c.lines[1].ip_tunnel().unwrap().af_xdp);
        let written = c.to_toml();
        assert!(written.contains("af_xdp = true"), "{written}");
        assert_eq!(cfg(&written).unwrap(), c, "{written}");
    }

    /// `esp_keying` and `esp_rekey` parse, are written back only when not the default,
    /// show as options and go to the peer's command (both ends must agree on them).
    #[test]
    fn esp_keying_and_rekey_round_trip_and_are_mirrored() {
        const ENC: &str = "0x9f8e7d6c5b4a39281716050403020100aabbccddeeff0011";
        let encrypted = |extra: &str| {
            let text = format!(
                "[[line]]\nname = \"sec\"\nparent = \"eth0\"\npeer_ip = \"198.51.100.20\"\n\
                 peer_vip = \"10.9.0.2\"\nlocal_vip = \"10.9.0.1\"\ntype = \"gre\"\n\n\
                 [line.ip_tunnel]\nencrypt = true\nenc_key = \"{ENC}\"\nauth_key = \"{ENC}\"\n{extra}"
            );
            cfg(&text).unwrap()
        };
        let plain = encrypted("");
        let e = plain.lines[0].ip_tunnel().unwrap().esp.unwrap();
        assert_eq!((e.keying, e.rekey), (Keying::Epoch, DEFAULT_REKEY_AFTER));
        let written = plain.to_toml();
        assert!(
            !written.contains("esp_"),
            "defaults are left out: {written}"
        );
        let c = encrypted("esp_keying = \"static\"\n");
        let t = c.lines[0].ip_tunnel().unwrap();
        assert_eq!(t.esp.unwrap().keying, Keying::Static);
        assert_eq!(t.cli_options().join(" "), "--encrypt --esp-keying static");
        assert_eq!(t.mirrored().cli_options(), t.cli_options());
        assert_eq!(cfg(&c.to_toml()).unwrap(), c);
        let c = encrypted("esp_rekey = 60\n");
        let t = c.lines[0].ip_tunnel().unwrap();
        assert_eq!(t.cli_options().join(" "), "--encrypt --esp-rekey 60");
        assert_eq!(t.mirrored().cli_options(), t.cli_options());
        let written = c.to_toml();
        assert!(written.contains("esp_rekey = 60"), "{written}");
        assert_eq!(cfg(&written).unwrap(), c);
    }

    #[test]
    fn tos_is_hexadecimal_as_iproute2() {
        assert_eq!(parse_tos("10"), Ok(Tos::Fixed(0x10)));
        assert_eq!(parse_tos("0xb8"), Ok(Tos::Fixed(0xb8)));
        assert_eq!(parse_tos("inherit"), Ok(Tos::Inherit));
        assert!(parse_tos("100").is_err());
        assert_eq!(parse_ttl("0"), Ok(Ttl::Inherit));
        assert!(parse_ttl("256").is_err());
    }

    #[test]
    fn peer_options_mirror_keys_sequence_and_checksums() {
        let c = cfg(GRE_TOML).unwrap();
        let g = c.lines[0].ip_tunnel().unwrap();
        // The file writes ikey as "0.0.0.7": it comes back in that spelling.
        assert_eq!(
            g.cli_options().join(" "),
            "--ikey 0.0.0.7 --okey 8 --iseq --ocsum --tos 0x28 --keepalive 5,2"
        );
        assert_eq!(
            g.mirrored().cli_options().join(" "),
            "--ikey 8 --okey 0.0.0.7 --oseq --icsum --tos 0x28 --keepalive 5,2"
        );
        let mut both = linux_defaults(TunnelType::Gre6);
        both.gre.ikey = Some(Key(3));
        both.gre.okey = Some(Key(3));
        both.gre.iseq = true;
        both.gre.oseq = true;
        both.ttl = Ttl::Fixed(9);
        assert_eq!(both.cli_options().join(" "), "--key 3 --seq --ttl 9");
    }

    /// Issue 22, item 8: a key typed as a dotted quad comes back as one (in `line
    /// show`, the peer command and the file), not as the number it stands for; the
    /// spelling alone is no change.
    #[test]
    fn a_dotted_quad_key_is_given_back_as_typed() {
        let text = GRE_TOML
            .replace("ikey = \"0.0.0.7\"", "ikey = \"1.2.3.4\"")
            .replace("okey = 8", "okey = \"1.2.3.4\"");
        let c = cfg(&text).unwrap();
        let g = c.lines[0].ip_tunnel().unwrap();
        assert_eq!(g.gre.okey, Some(Key(16909060)));
        assert!(g.cli_options().join(" ").starts_with("--key 1.2.3.4 "));
        assert!(g
            .mirrored()
            .cli_options()
            .join(" ")
            .starts_with("--key 1.2.3.4 "));
        let written = c.to_toml();
        assert!(written.contains("ikey = \"1.2.3.4\""), "{written}");
        assert!(written.contains("okey = \"1.2.3.4\""), "{written}");
        assert_eq!(cfg(&written).unwrap(), c);
        // The number it stands for is the same setting.
        let numeric = cfg(&text.replace("\"1.2.3.4\"", "16909060")).unwrap();
        assert_eq!(numeric, c);
        let n = numeric.lines[0].ip_tunnel().unwrap();
        assert!(n.cli_options().join(" ").starts_with("--key 16909060 "));
    }
}
