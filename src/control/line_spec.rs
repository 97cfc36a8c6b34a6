//! `line create`'s request: the arguments as the user typed them ([`LineSpec`]), and
//! their meaning, the config entry a TOML file would hold for the same line
//! ([`LineSpec::into_raw`]).
//!
//! Rules: the conversion is mechanical (flags to keys, `--key` to both keys, generated
//! key pairs for a server given none); whether the line is acceptable is decided by
//! [`crate::config`]'s one validator, which names each setting by the flag recorded
//! here. What the raw entry cannot hold (a key that is not base64, a client without
//! its keys, `--key` with `--ikey`) is refused here, naming the flag, as the TOML
//! parser refuses a file whose value cannot be read.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::esp::EspKey;
use crate::config::model::IPSEC;
use crate::config::raw::{IntOrText, RawIpTunnel, RawLine, RawWireGuard};
use crate::config::{ConfigError, Flags, Mode, PrivateKey, PublicKey, Setting};
use crate::tunnel::keys::PresharedKey;

/// The arguments of `line create`, as typed by the user. Its `Debug` hides the private
/// key (the daemon logs requests at debug level).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    pub parent: String,
    pub peer_ip: IpAddr,
    pub peer_vip: IpAddr,
    pub local_vip: IpAddr,
    pub name: String,
    /// `type`: "wireguard", "ipip", "gre", "sit", "ip6ip6", "ipip6", "gre6" or "ipsec".
    pub kind: String,
    pub mode: Option<String>,
    pub listen_port: Option<u32>,
    pub peer_port: Option<u32>,
    /// Base64; given with `--mode client`.
    pub private_key: Option<String>,
    pub peer_pubkey: Option<String>,
    /// Seconds: WireGuard's persistent keepalive, or an IP tunnel's probe interval.
    pub keepalive: Option<u32>,
    pub mtu: Option<u32>,
    /// IP tunnels: the `RETRIES` of `--keepalive SECS,RETRIES`.
    #[serde(default)]
    pub keepalive_retries: Option<u32>,
    /// IP tunnels: iproute2's options, as typed (validated by the daemon).
    #[serde(default)]
    pub ip_tunnel: IpTunnelArgs,
    /// WireGuard: the preshared key, base64 (read by the CLI from a file or stdin, never
    /// from argv). Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<Secret>,
}

impl fmt::Debug for LineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineSpec")
            .field("parent", &self.parent)
            .field("peer_ip", &self.peer_ip)
            .field("peer_vip", &self.peer_vip)
            .field("local_vip", &self.local_vip)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("mode", &self.mode)
            .field("listen_port", &self.listen_port)
            .field("peer_port", &self.peer_port)
            .field("private_key", &super::redacted(&self.private_key))
            .field("peer_pubkey", &self.peer_pubkey)
            .field("keepalive", &self.keepalive)
            .field("mtu", &self.mtu)
            .field("keepalive_retries", &self.keepalive_retries)
            .field("ip_tunnel", &self.ip_tunnel)
            .field("preshared_key", &self.preshared_key)
            .finish()
    }
}

/// `line create`'s IP tunnel options, as typed: iproute2's `[i|o]key`, `[i|o]seq`,
/// `[i|o]csum`, `ttl`, `tos`, `[no]pmtudisc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpTunnelArgs {
    pub key: Option<String>,
    pub ikey: Option<String>,
    pub okey: Option<String>,
    pub seq: bool,
    pub iseq: bool,
    pub oseq: bool,
    pub csum: bool,
    pub icsum: bool,
    pub ocsum: bool,
    pub ttl: Option<String>,
    pub tos: Option<String>,
    /// `Some(true)` for `--pmtudisc`, `Some(false)` for `--nopmtudisc`.
    pub pmtudisc: Option<bool>,
    /// `--encrypt`: ESP under the GRE header.
    pub encrypt: bool,
    /// `--cipher`.
    pub cipher: Option<String>,
    /// `--enc-key`, as typed. Secret.
    pub enc_key: Option<Secret>,
    /// `--auth-key`, as typed. Secret.
    pub auth_key: Option<Secret>,
    /// `--esp-keying`.
    pub esp_keying: Option<String>,
    /// `--esp-rekey`, seconds.
    pub esp_rekey: Option<u32>,
    /// `--af-xdp`.
    pub af_xdp: bool,
}

/// A secret as typed (an ESP key): carried as is, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl IpTunnelArgs {
    /// Whether any option was given (they apply to IP tunnel types only).
    pub fn any(&self) -> bool {
        *self != IpTunnelArgs::default()
    }
}

/// A `line create` request as a config entry.
#[derive(Debug)]
pub struct Requested {
    /// The `[[line]]` entry, to be validated with the configuration it joins.
    pub line: RawLine,
    /// The flags that set its settings, to name them in errors.
    pub flags: Flags,
    /// Whether the server's key pairs were generated.
    pub generated_keys: bool,
}

impl LineSpec {
    /// The config entry this request asks for.
    pub fn into_raw(self) -> Result<Requested, ConfigError> {
        let mut flags = Flags::default();
        let mut line = RawLine {
            name: self.name.clone(),
            parent: self.parent.clone(),
            peer_ip: self.peer_ip,
            peer_vip: self.peer_vip,
            local_vip: self.local_vip,
            kind: self.kind.clone(),
            mtu: self.mtu,
            wireguard: None,
            ip_tunnel: None,
        };
        let mut generated_keys = false;
        if self.kind == "wireguard" {
            let (wg, generated) = self.wireguard_table()?;
            line.wireguard = Some(wg);
            generated_keys = generated;
            // IP tunnel options go where a file would put them; the validator refuses
            // them there, naming the flag.
            line.ip_tunnel = self.ip_tunnel_table(None, &mut flags)?;
        } else {
            // A file's `[line.wireguard]` table cannot be half there (mode and keys are
            // required), so a flag of it on another type is refused here.
            let wireguard_only = [
                ("--mode", self.mode.is_some()),
                ("--listen-port", self.listen_port.is_some()),
                ("--peer-port", self.peer_port.is_some()),
                ("--private-key", self.private_key.is_some()),
                ("--peer-pubkey", self.peer_pubkey.is_some()),
                ("--preshared-key", self.preshared_key.is_some()),
            ];
            if let Some((flag, _)) = wireguard_only.iter().find(|(_, given)| *given) {
                return Err(ConfigError::invalid(
                    *flag,
                    format!(
                        "applies to wireguard lines; a {} line has no mode, ports or keys \
                         (both ends run the same command, see `twnode line show-peer`)",
                        self.kind
                    ),
                ));
            }
            if self.kind == IPSEC {
                // The file's `type = "ipsec"`: problems of the encryption name the type.
                flags.typed(Setting::Type, "--type ipsec");
            }
            line.ip_tunnel = self.ip_tunnel_table(self.keepalive, &mut flags)?;
        }
        Ok(Requested {
            line,
            flags,
            generated_keys,
        })
    }

    /// The `[line.wireguard]` table; keys generated for a server given none.
    fn wireguard_table(&self) -> Result<(RawWireGuard, bool), ConfigError> {
        let mode_text = self.mode.as_deref().ok_or_else(|| {
            ConfigError::invalid(
                "--mode",
                "server or client is required for a wireguard line",
            )
        })?;
        // The same parser the validator uses: the keys below depend on the mode.
        let mode: Mode = mode_text
            .parse()
            .map_err(|e: String| ConfigError::invalid("--mode", e))?;
        let private = |s: &str| {
            s.parse::<PrivateKey>()
                .map_err(|e| ConfigError::invalid("--private-key", e.to_string()))
        };
        let public = |s: &str| {
            s.parse::<PublicKey>()
                .map_err(|e| ConfigError::invalid("--peer-pubkey", e.to_string()))
        };
        let (private_key, peer_public_key, peer_private_key, generated) = match (
            mode,
            self.private_key.as_deref(),
            self.peer_pubkey.as_deref(),
        ) {
            (_, Some(k), Some(p)) => (private(k)?, public(p)?, None, false),
            (Mode::Server, None, None) => {
                let ours = PrivateKey::generate();
                let theirs = PrivateKey::generate();
                let public = theirs.public_key();
                (ours, public, Some(theirs), true)
            }
            (Mode::Server, given, _) => {
                let flag = if given.is_some() {
                    "--private-key"
                } else {
                    "--peer-pubkey"
                };
                return Err(ConfigError::invalid(
                    flag,
                    "give both --private-key and --peer-pubkey, or neither (twnode then \
                         generates both key pairs)",
                ));
            }
            (Mode::Client, None, _) => {
                return Err(ConfigError::invalid(
                    "--private-key",
                    "is required for a client (paste the server's peer command)",
                ))
            }
            (Mode::Client, Some(_), None) => {
                return Err(ConfigError::invalid(
                    "--peer-pubkey",
                    "is required for a client (paste the server's peer command)",
                ))
            }
        };
        let wg = RawWireGuard {
            mode: mode_text.to_string(),
            listen_port: self.listen_port,
            peer_port: self.peer_port,
            private_key,
            peer_public_key,
            peer_private_key,
            persistent_keepalive: self.keepalive,
            preshared_key: self
                .preshared_key
                .as_ref()
                .map(|s| {
                    s.0.parse::<PresharedKey>().map_err(|e| {
                        ConfigError::invalid(
                            "--preshared-key",
                            format!("{e}; `wg genpsk` makes one"),
                        )
                    })
                })
                .transpose()?,
            allowed_ips: Vec::new(),
        };
        Ok((wg, generated))
    }

    /// The `[line.ip_tunnel]` table (`None` when no option is given); `keepalive` is the
    /// probe interval (a wireguard line's `--keepalive` is its persistent keepalive).
    /// Records in `flags` the flags that set two settings at once.
    fn ip_tunnel_table(
        &self,
        keepalive: Option<u32>,
        flags: &mut Flags,
    ) -> Result<Option<RawIpTunnel>, ConfigError> {
        use Setting as S;
        let a = &self.ip_tunnel;
        let text = |v: &Option<String>| v.clone().map(IntOrText::Text);
        let (ikey, okey) = match (&a.key, &a.ikey, &a.okey) {
            (Some(_), None, None) => {
                flags.typed(S::Ikey, "--key");
                flags.typed(S::Okey, "--key");
                (text(&a.key), text(&a.key))
            }
            (Some(_), _, _) => {
                return Err(ConfigError::invalid(
                    "--key",
                    "give --key, or --ikey and --okey, not both",
                ))
            }
            (None, _, _) => (text(&a.ikey), text(&a.okey)),
        };
        for (both, input, output) in [(a.seq, S::Iseq, S::Oseq), (a.csum, S::Icsum, S::Ocsum)] {
            if both {
                let flag = if input == S::Iseq { "--seq" } else { "--csum" };
                flags.typed(input, flag);
                flags.typed(output, flag);
            }
        }
        if a.pmtudisc == Some(true) {
            flags.typed(S::Pmtudisc, "--pmtudisc");
        }
        let esp_key = |flag: &str, v: &Option<Secret>| {
            v.as_ref()
                .map(|s| EspKey::parse(&s.0))
                .transpose()
                .map_err(|e| ConfigError::invalid(flag, format!("the key {e}")))
        };
        let table = RawIpTunnel {
            ikey,
            okey,
            iseq: a.seq || a.iseq,
            oseq: a.seq || a.oseq,
            icsum: a.csum || a.icsum,
            ocsum: a.csum || a.ocsum,
            ttl: text(&a.ttl),
            tos: text(&a.tos),
            pmtudisc: a.pmtudisc,
            keepalive,
            keepalive_retries: self.keepalive_retries,
            encrypt: a.encrypt,
            cipher: a.cipher.clone(),
            enc_key: esp_key("--enc-key", &a.enc_key)?,
            auth_key: esp_key("--auth-key", &a.auth_key)?,
            esp_keying: a.esp_keying.clone(),
            esp_rekey: a.esp_rekey,
            af_xdp: a.af_xdp,
        };
        Ok((table != RawIpTunnel::default()).then_some(table))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::config::raw::RawConfig;
    use crate::config::testdata::{cfg, GRE_TOML};
    use crate::config::Config;

    const ENC: &str = "0x9f8e7d6c5b4a39281716050403020100aabbccddeeff0011";

    /// `line create eth0 198.51.100.20 10.9.0.2 10.9.0.1 <name> --type <kind>`.
    fn spec(name: &str, kind: &str) -> LineSpec {
        LineSpec {
            parent: "eth0".into(),
            peer_ip: "198.51.100.20".parse().unwrap(),
            peer_vip: "10.9.0.2".parse().unwrap(),
            local_vip: "10.9.0.1".parse().unwrap(),
            name: name.into(),
            kind: kind.into(),
            mode: None,
            listen_port: None,
            peer_port: None,
            private_key: None,
            peer_pubkey: None,
            keepalive: None,
            mtu: None,
            keepalive_retries: None,
            ip_tunnel: IpTunnelArgs::default(),
            preshared_key: None,
        }
    }

    /// The request added to `config`, or the one line of its error.
    fn create(config: &Config, spec: LineSpec) -> Result<Config, String> {
        let r = spec.into_raw().map_err(|e| e.to_string())?;
        config
            .with_line(r.line, &r.flags)
            .map(|(c, _)| c)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_gre_request_is_the_entry_a_file_holds() {
        let mut s = spec("gre1", "gre");
        s.ip_tunnel.ikey = Some("0.0.0.7".into());
        s.ip_tunnel.okey = Some("8".into());
        s.ip_tunnel.iseq = true;
        s.ip_tunnel.ocsum = true;
        s.ip_tunnel.ttl = Some("inherit".into());
        s.ip_tunnel.tos = Some("0x28".into());
        s.keepalive = Some(5);
        s.keepalive_retries = Some(2);
        let created = create(&Config::default(), s).unwrap();
        let file = cfg(GRE_TOML).unwrap();
        assert_eq!(created.lines[..], file.lines[..1]);
    }

    #[test]
    fn key_seq_and_csum_set_both_directions() {
        let mut s = spec("gre1", "gre");
        s.ip_tunnel.key = Some("7".into());
        s.ip_tunnel.seq = true;
        s.ip_tunnel.csum = true;
        let r = s.into_raw().unwrap();
        let t = r.line.ip_tunnel.unwrap();
        let seven = Some(IntOrText::Text("7".into()));
        assert_eq!((&t.ikey, &t.okey), (&seven, &seven));
        assert!(t.iseq && t.oseq && t.icsum && t.ocsum);
        for (setting, flag) in [
            (Setting::Ikey, "--key"),
            (Setting::Okey, "--key"),
            (Setting::Oseq, "--seq"),
            (Setting::Icsum, "--csum"),
            (Setting::Ttl, "--ttl"),
        ] {
            assert_eq!(r.flags.flag(setting), flag);
        }
    }

    #[test]
    fn a_server_request_without_keys_gets_both_key_pairs() {
        let mut s = spec("wg1", "wireguard");
        s.mode = Some("server".into());
        s.listen_port = Some(51820);
        let r = s.into_raw().unwrap();
        assert!(r.generated_keys);
        let wg = r.line.wireguard.as_ref().unwrap();
        let theirs = wg.peer_private_key.as_ref().unwrap();
        assert_eq!(theirs.public_key(), wg.peer_public_key);
        assert!(r.line.ip_tunnel.is_none());
        let (config, line) = Config::default().with_line(r.line, &r.flags).unwrap();
        assert_eq!(config.lines, [line]);

        let mut one = spec("wg1", "wireguard");
        one.mode = Some("server".into());
        one.listen_port = Some(51820);
        one.private_key = Some(PrivateKey::generate().to_base64());
        let msg = one.into_raw().unwrap_err().to_string();
        assert!(msg.starts_with("--private-key: give both"), "{msg}");
    }

    #[test]
    fn type_ipsec_means_gre_with_encrypt_and_its_errors_name_the_flags() {
        let mut s = spec("sec", "ipsec");
        s.ip_tunnel.enc_key = Some(Secret(ENC.into()));
        s.ip_tunnel.auth_key = Some(Secret(ENC.into()));
        let ipsec = create(&Config::default(), s.clone()).unwrap();
        let mut gre = s.clone();
        gre.kind = "gre".into();
        gre.ip_tunnel.encrypt = true;
        assert_eq!(ipsec, create(&Config::default(), gre).unwrap());

        s.keepalive = Some(5);
        let msg = create(&Config::default(), s).unwrap_err();
        assert_eq!(
            msg,
            "--type ipsec: keepalive probes are not offered on encrypted lines yet; remove \
             --keepalive or --type ipsec"
        );
        let msg = create(&Config::default(), spec("sec", "ipsec")).unwrap_err();
        assert_eq!(
            msg,
            "--enc-key: an encrypted line needs --enc-key and --auth-key (0x + hex, the same on \
             both ends)"
        );
    }

    #[test]
    fn errors_name_the_flag_the_user_typed() {
        let with = |kind: &str, f: &dyn Fn(&mut LineSpec)| {
            let mut s = spec("x", kind);
            f(&mut s);
            create(&Config::default(), s).unwrap_err()
        };
        let msg = with("gre", &|s| s.ip_tunnel.key = Some("4294967296".into()));
        assert!(msg.starts_with("--key: key \"4294967296\""), "{msg}");
        let msg = with("gre", &|s| s.ip_tunnel.okey = Some("x".into()));
        assert!(msg.starts_with("--okey: "), "{msg}");
        let msg = with("ipip", &|s| s.ip_tunnel.seq = true);
        assert!(
            msg.starts_with("--seq: type ipip has no GRE header"),
            "{msg}"
        );
        let msg = with("ipip", &|s| s.ip_tunnel.ocsum = true);
        assert!(msg.starts_with("--ocsum: "), "{msg}");
        let msg = with("gre", &|s| s.peer_ip = "2001:db8::2".parse().unwrap());
        assert!(
            msg.starts_with("<peer_ip>: type gre runs over IPv4"),
            "{msg}"
        );
        let msg = with("gre", &|s| s.ip_tunnel.ttl = Some("300".into()));
        assert!(msg.starts_with("--ttl: "), "{msg}");
        let msg = with("gre", &|s| {
            s.ip_tunnel.ttl = Some("64".into());
            s.ip_tunnel.pmtudisc = Some(false);
        });
        assert!(
            msg.starts_with("--nopmtudisc: ")
                && msg.ends_with("add --ttl inherit or drop --nopmtudisc"),
            "{msg}"
        );
        let msg = with("gre", &|s| s.keepalive = Some(70000));
        assert_eq!(msg, "--keepalive: 70000 is above 65535 seconds");
        let msg = with("wireguard", &|s| {
            s.mode = Some("server".into());
            s.listen_port = Some(1);
            s.keepalive = Some(70000);
        });
        assert_eq!(msg, "--keepalive: 70000 is above 65535 seconds");
        let msg = with("wireguard", &|s| {
            s.mode = Some("server".into());
            s.listen_port = Some(1);
            s.keepalive = Some(10);
            s.keepalive_retries = Some(3);
        });
        assert!(msg.starts_with("--keepalive: RETRIES applies"), "{msg}");
        let msg = with("gre", &|s| s.listen_port = Some(1));
        assert!(
            msg.starts_with("--listen-port: applies to wireguard lines"),
            "{msg}"
        );
        let msg = with("wireguard", &|_| ());
        assert!(msg.starts_with("--mode: "), "{msg}");
        let msg = with("wirguard", &|_| ());
        assert!(
            msg.starts_with("--type: type \"wirguard\" is not supported"),
            "{msg}"
        );
    }

    #[test]
    fn errors_about_other_lines_name_them_by_name() {
        let mut first = spec("gre0", "gre");
        first.ip_tunnel.key = Some("2".into());
        let config = create(&Config::default(), first).unwrap();
        let mut s = spec("gre2", "gre");
        s.local_vip = "10.9.0.2".parse().unwrap();
        s.peer_vip = "10.9.9.2".parse().unwrap();
        assert_eq!(
            create(&config, s).unwrap_err(),
            "<local_vip>: 10.9.0.2 is already the peer VIP of line gre0; every VIP on a node \
             must be unique"
        );
        let mut s = spec("gre2", "gre");
        s.local_vip = "10.9.9.1".parse().unwrap();
        s.peer_vip = "10.9.9.2".parse().unwrap();
        s.ip_tunnel.key = Some("2".into());
        let msg = create(&config, s).unwrap_err();
        assert!(
            msg.starts_with("--key: line gre0 already receives GRE key 2 from 198.51.100.20"),
            "{msg}"
        );
        let msg = create(&config, spec("gre0", "ipip")).unwrap_err();
        assert!(
            msg.starts_with("<name>: a line named gre0 already exists; choose another name"),
            "{msg}"
        );
        // The same entries in a file name the lines by their place in it.
        let mut raw = RawConfig::default();
        for s in [spec("gre0", "gre"), spec("gre0", "ipip")] {
            raw.lines.push(s.into_raw().unwrap().line);
        }
        let msg = Config::try_from(raw).unwrap_err().to_string();
        assert!(msg.starts_with("line[1] (\"gre0\").name: "), "{msg}");
    }
}
