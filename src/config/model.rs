//! The validated configuration: newtypes that cannot hold a bad value, built from
//! [`super::raw`] by `TryFrom`, and turned back into raw form for writing.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::esp::{self as esp_cfg, Esp};
use super::raw::{IntOrText, RawConfig, RawIpTunnel, RawLine, RawWireGuard};
use super::ConfigError;
use crate::tunnel::gre::GreOptions;
use crate::tunnel::iptunnel::{IpVersion, Tos, Ttl, TunnelType};
use crate::tunnel::keepalive::{KeepaliveConfig, DEFAULT_RETRIES};
use crate::tunnel::keys::{PrivateKey, PublicKey};
use crate::wire::gre::Key;

/// Persistent keepalive when the config does not say: keeps NAT mappings open.
pub const DEFAULT_KEEPALIVE: u16 = 25;

/// A line name; it is also the TUN device's name, so it follows Linux's interface-name
/// rules: 1 to 15 bytes, no '/', no whitespace, not "." or "..".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LineName(String);

/// An interface name (a line's parent): the same rules as [`LineName`].
pub type ParentName = LineName;

impl LineName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LineName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 15 {
            return Err(format!(
                "interface name {s:?} must be 1 to 15 characters (Linux's IFNAMSIZ limit)"
            ));
        }
        if s == "." || s == ".." {
            return Err(format!("interface name {s:?} is reserved"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@')))
        {
            return Err(format!(
                "interface name {s:?} contains {c:?}; use letters, digits, '_', '-' and '.'"
            ));
        }
        Ok(LineName(s))
    }
}

impl std::str::FromStr for LineName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LineName::try_from(s.to_string())
    }
}

impl From<LineName> for String {
    fn from(n: LineName) -> String {
        n.0
    }
}

impl fmt::Display for LineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A UDP port, never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Port(u16);

impl Port {
    /// Checks the range.
    pub fn new(v: u32) -> Result<Port, String> {
        match u16::try_from(v) {
            Ok(p) if p != 0 => Ok(Port(p)),
            _ => Err(format!("port {v} is out of range 1-65535")),
        }
    }
    /// The port number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A line's MTU: at least IPv4's minimum (576), or IPv6's (1280) when the line carries
/// IPv6; at most 9000 (jumbo frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mtu(u16);

impl Mtu {
    /// Smallest MTU for a line with IPv4 VIPs.
    pub const MIN_V4: u32 = 576;
    /// Smallest MTU for a line that carries IPv6 (RFC 8200 §5).
    pub const MIN_V6: u32 = 1280;
    /// Largest supported MTU.
    pub const MAX: u32 = 9000;

    /// Checks the bounds for a line that does (`ipv6`) or does not carry IPv6.
    pub fn new(v: u32, ipv6: bool) -> Result<Mtu, String> {
        let min = if ipv6 { Self::MIN_V6 } else { Self::MIN_V4 };
        if v < min {
            let why = if ipv6 {
                " for a line carrying IPv6"
            } else {
                ""
            };
            return Err(format!("MTU {v} is below the minimum {min}{why}"));
        }
        if v > Self::MAX {
            return Err(format!("MTU {v} is above the maximum {}", Self::MAX));
        }
        Ok(Mtu(v as u16))
    }
    /// The value.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// Which end dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Listens on a fixed port; learns (and follows) the client's endpoint.
    Server,
    /// Dials `peer_ip:peer_port` as soon as the line is up.
    Client,
}

impl Mode {
    /// The config and CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Server => "server",
            Mode::Client => "client",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "server" => Ok(Mode::Server),
            "client" => Ok(Mode::Client),
            _ => Err(format!("mode {s:?} is not one of: server, client")),
        }
    }
}

/// A WireGuard line's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGuard {
    pub mode: Mode,
    /// Fixed local port (required for a server; a client uses an ephemeral port if unset).
    pub listen_port: Option<Port>,
    /// The server's port (required for a client).
    pub peer_port: Option<Port>,
    pub private_key: PrivateKey,
    pub peer_public_key: PublicKey,
    /// Server only: the client's generated private key, for `line show-peer`.
    pub peer_private_key: Option<PrivateKey>,
    /// Seconds; 0 turns it off.
    pub persistent_keepalive: u16,
}

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
}

impl IpTunnel {
    /// A line of `kind` with Linux's defaults.
    pub fn new(kind: TunnelType) -> IpTunnel {
        IpTunnel {
            kind,
            gre: GreOptions::default(),
            ttl: Ttl::default_for(kind),
            tos: Tos::default(),
            pmtudisc: true,
            keepalive: None,
            esp: None,
            af_xdp: false,
        }
    }

    /// The same line seen from the peer: input and output options swapped.
    pub fn mirrored(&self) -> IpTunnel {
        IpTunnel {
            gre: self.gre.mirrored(),
            af_xdp: false,
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
            g.ikey.map(|k| k.0.to_string()),
            g.okey.map(|k| k.0.to_string()),
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

    fn to_raw(self) -> Option<RawIpTunnel> {
        let key = |k: Option<Key>| k.map(|k| IntOrText::Int(i64::from(k.0)));
        let raw = RawIpTunnel {
            ikey: key(self.gre.ikey),
            okey: key(self.gre.okey),
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

/// A keepalive: `secs` 0 is off; `retries` defaults to Cisco's 3.
pub fn keepalive(
    secs: u32,
    retries: Option<u32>,
) -> Result<Option<KeepaliveConfig>, (bool, String)> {
    if secs == 0 {
        return match retries {
            Some(_) => Err((
                true,
                "retries given without a keepalive interval; give SECS too".into(),
            )),
            None => Ok(None),
        };
    }
    if secs > u32::from(u16::MAX) {
        return Err((false, format!("keepalive {secs} is above 65535 seconds")));
    }
    let retries = match retries {
        None => DEFAULT_RETRIES,
        Some(r) => match u8::try_from(r) {
            Ok(r) if r >= 1 => r,
            _ => return Err((true, format!("keepalive retries {r} is not 1-255"))),
        },
    };
    Ok(Some(KeepaliveConfig {
        interval: std::time::Duration::from_secs(secs.into()),
        retries,
    }))
}

/// Which setting of an IP tunnel line a [`check_ip_tunnel`] problem is about, so the
/// TOML loader and the CLI can each name it their way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The key under `[[line]]` (e.g. `peer_ip`, `ip_tunnel.oseq`).
    pub toml_key: &'static str,
    /// The `line create` argument (e.g. `<peer_ip>`, `--oseq`).
    pub flag: &'static str,
}

impl Setting {
    const PEER_IP: Setting = Setting {
        toml_key: "peer_ip",
        flag: "<peer_ip>",
    };
    const VIPS: Setting = Setting {
        toml_key: "local_vip",
        flag: "<local_vip>",
    };
    const MTU: Setting = Setting {
        toml_key: "mtu",
        flag: "--mtu",
    };
    const PMTUDISC: Setting = Setting {
        toml_key: "ip_tunnel.pmtudisc",
        flag: "--nopmtudisc",
    };
    const ENCRYPT: Setting = Setting {
        toml_key: "ip_tunnel.encrypt",
        flag: "--encrypt",
    };
}

/// Whether an IP tunnel line's settings fit together: underlay family, the VIPs' family
/// carried by the type, GRE options on GRE types only, the IPv6 minimum MTU for types
/// that carry IPv6, iproute2's `nopmtudisc` rules.
pub fn check_ip_tunnel(
    t: &IpTunnel,
    peer_ip: IpAddr,
    local_vip: IpAddr,
    mtu: Option<u32>,
) -> Result<(), (Setting, String)> {
    let kind = t.kind;
    let (want, other) = if kind.outer_ipv6() {
        ("IPv6", "ip6ip6, ipip6 or gre6")
    } else {
        ("IPv4", "ipip, gre or sit")
    };
    if peer_ip.is_ipv6() != kind.outer_ipv6() {
        let alt = match (kind.outer_ipv6(), kind) {
            (true, TunnelType::Gre6) => "gre",
            (true, TunnelType::Ipip6) => "ipip",
            (true, _) => "sit",
            (false, TunnelType::Gre) => "gre6",
            (false, TunnelType::Ipip) => "ipip6",
            (false, _) => "ip6ip6",
        };
        return Err((
            Setting::PEER_IP,
            format!(
                "type {kind} runs over {want} but peer address {peer_ip} is not; use an {want} peer address, or type {alt} for this peer (types over {want}: {other})"
            ),
        ));
    }
    let version = if local_vip.is_ipv6() {
        IpVersion::V6
    } else {
        IpVersion::V4
    };
    if !kind.carries(version) {
        let (fam, carriers) = match version {
            IpVersion::V4 => ("IPv4", "ipip, sit, ipip6, gre or gre6"),
            IpVersion::V6 => ("IPv6", "sit, ip6ip6, gre or gre6"),
        };
        return Err((
            Setting::VIPS,
            format!(
                "type {kind} does not carry {fam}, so its VIPs cannot be {fam} addresses;                  use VIPs of the family it carries, or a type that carries {fam} ({carriers})"
            ),
        ));
    }
    if !kind.is_gre() {
        let g = &t.gre;
        let set = [
            (g.ikey.is_some(), "ip_tunnel.ikey", "--key"),
            (g.okey.is_some(), "ip_tunnel.okey", "--key"),
            (g.iseq, "ip_tunnel.iseq", "--seq"),
            (g.oseq, "ip_tunnel.oseq", "--seq"),
            (g.icsum, "ip_tunnel.icsum", "--csum"),
            (g.ocsum, "ip_tunnel.ocsum", "--csum"),
        ];
        if let Some(&(_, toml_key, flag)) = set.iter().find(|(on, _, _)| *on) {
            let setting = Setting { toml_key, flag };
            return Err((
                setting,
                format!(
                    "type {kind} has no GRE header; keys, sequence numbers and checksums apply to gre and gre6 only"
                ),
            ));
        }
    }
    if let Some(m) = mtu {
        if kind.carries(IpVersion::V6) && m < Mtu::MIN_V6 {
            return Err((
                Setting::MTU,
                format!(
                    "MTU {m} is below {}, the minimum for type {kind}, which carries IPv6                      (RFC 8200 §5)",
                    Mtu::MIN_V6
                ),
            ));
        }
    }
    if t.esp.is_some() {
        if !kind.is_gre() {
            return Err((
                Setting::ENCRYPT,
                format!(
                    "type {kind} cannot be encrypted; ESP protects gre and gre6 lines \
                     (--type gre --encrypt, or --type ipsec)"
                ),
            ));
        }
        if t.keepalive.is_some() {
            return Err((
                Setting::ENCRYPT,
                "keepalive probes are not offered on encrypted lines yet; remove \
                 --keepalive or --encrypt"
                    .into(),
            ));
        }
    }
    if !t.pmtudisc {
        if kind.outer_ipv6() {
            return Err((
                Setting::PMTUDISC,
                format!(
                    "type {kind} runs over IPv6, which never fragments on the way;                      pmtudisc applies to ipip, gre and sit only"
                ),
            ));
        }
        if t.ttl != Ttl::Inherit {
            return Err((
                Setting::PMTUDISC,
                "nopmtudisc needs ttl inherit (as iproute2: a fixed TTL with nopmtudisc is refused); add --ttl inherit or drop --nopmtudisc"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// What a line carries its packets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// WireGuard over UDP.
    WireGuard(WireGuard),
    /// An IP tunnel without encryption: ipip, gre, sit, ip6ip6, ipip6, gre6.
    IpTunnel(IpTunnel),
}

impl LineKind {
    /// The `type` key's spelling.
    pub fn type_name(&self) -> &'static str {
        match self {
            LineKind::WireGuard(_) => "wireguard",
            LineKind::IpTunnel(t) => t.kind.as_str(),
        }
    }
}

/// The tunnel types `type` accepts today.
pub const SUPPORTED_TYPES: &[&str] =
    &["wireguard", "ipip", "gre", "sit", "ip6ip6", "ipip6", "gre6"];

/// One validated line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub name: LineName,
    /// A physical interface or another line.
    pub parent: ParentName,
    /// The peer's underlay address (reached through `parent`).
    pub peer_ip: IpAddr,
    pub peer_vip: IpAddr,
    pub local_vip: IpAddr,
    /// Overrides the MTU derived from the parent.
    pub mtu: Option<Mtu>,
    pub kind: LineKind,
}

impl Line {
    /// Whether the line's VIPs are IPv6.
    pub fn carries_ipv6(&self) -> bool {
        self.local_vip.is_ipv6()
    }

    /// The WireGuard settings, if this is a WireGuard line.
    pub fn wireguard(&self) -> Option<&WireGuard> {
        match &self.kind {
            LineKind::WireGuard(wg) => Some(wg),
            LineKind::IpTunnel(_) => None,
        }
    }

    /// The IP tunnel settings, if this is an IP tunnel line.
    pub fn ip_tunnel(&self) -> Option<&IpTunnel> {
        match &self.kind {
            LineKind::IpTunnel(t) => Some(t),
            LineKind::WireGuard(_) => None,
        }
    }

    fn to_raw(&self) -> RawLine {
        let wireguard = self.wireguard().map(|wg| RawWireGuard {
            mode: wg.mode.as_str().to_string(),
            listen_port: wg.listen_port.map(|p| p.get().into()),
            peer_port: wg.peer_port.map(|p| p.get().into()),
            private_key: wg.private_key.clone(),
            peer_public_key: wg.peer_public_key,
            peer_private_key: wg.peer_private_key.clone(),
            persistent_keepalive: (wg.persistent_keepalive != DEFAULT_KEEPALIVE)
                .then_some(wg.persistent_keepalive.into()),
        });
        RawLine {
            name: self.name.to_string(),
            parent: self.parent.to_string(),
            peer_ip: self.peer_ip,
            peer_vip: self.peer_vip,
            local_vip: self.local_vip,
            kind: self.kind.type_name().to_string(),
            mtu: self.mtu.map(|m| m.get().into()),
            wireguard,
            ip_tunnel: self.ip_tunnel().and_then(|t| t.to_raw()),
        }
    }
}

/// The whole validated configuration. Lines keep file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub lines: Vec<Line>,
}

impl Config {
    /// The line called `name`.
    pub fn line(&self, name: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.name.as_str() == name)
    }

    /// Whether `name` is a line (as opposed to a physical interface).
    pub fn is_line(&self, name: &str) -> bool {
        self.line(name).is_some()
    }

    /// Lines whose parent is `name`.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Line> + 'a {
        self.lines.iter().filter(move |l| l.parent.as_str() == name)
    }

    /// Every line below `name` in the parent graph (children, grandchildren...).
    pub fn descendants(&self, name: &str) -> Vec<LineName> {
        let mut out = Vec::new();
        let mut stack = vec![name.to_string()];
        while let Some(n) = stack.pop() {
            for c in self.children(&n) {
                out.push(c.name.clone());
                stack.push(c.name.to_string());
            }
        }
        out
    }

    /// How many lines lie between `line` and the physical interface (0 = on the underlay).
    pub fn depth(&self, name: &str) -> usize {
        let mut depth = 0;
        let mut cur = self.line(name);
        while let Some(l) = cur.and_then(|l| self.line(l.parent.as_str())) {
            depth += 1;
            cur = Some(l);
        }
        depth
    }

    /// Lines ordered parents first (validation guarantees there is no cycle).
    pub fn ordered(&self) -> Vec<&Line> {
        let mut lines: Vec<&Line> = self.lines.iter().collect();
        lines.sort_by_key(|l| self.depth(l.name.as_str()));
        lines
    }

    /// Whether any secret (WireGuard private key, ESP key) is stored.
    pub fn has_private_keys(&self) -> bool {
        self.lines
            .iter()
            .any(|l| l.wireguard().is_some() || l.ip_tunnel().is_some_and(|t| t.esp.is_some()))
    }

    /// The TOML text written to disk.
    pub fn to_toml(&self) -> String {
        let raw = RawConfig {
            lines: self.lines.iter().map(Line::to_raw).collect(),
        };
        let body = toml::to_string(&raw).unwrap_or_default();
        format!(
            "# twnode configuration. Written by `twnode line create/delete`; you may edit it\n\
             # by hand and reload with `systemctl reload twnode` (SIGHUP). Holds private keys:\n\
             # keep it mode 0600.\n\n{body}"
        )
    }

    /// A copy with `line` added; validation runs again over the whole result.
    pub fn with_line(&self, line: Line) -> Result<Config, ConfigError> {
        let mut raw = self.to_raw();
        raw.lines.push(line.to_raw());
        Config::try_from(raw)
    }

    /// A copy without the named lines.
    pub fn without(&self, names: &[LineName]) -> Config {
        Config {
            lines: self
                .lines
                .iter()
                .filter(|l| !names.contains(&l.name))
                .cloned()
                .collect(),
        }
    }

    fn to_raw(&self) -> RawConfig {
        RawConfig {
            lines: self.lines.iter().map(Line::to_raw).collect(),
        }
    }
}

fn line_key(i: usize, name: &str) -> String {
    format!("line[{i}] ({name:?})")
}

fn convert_wireguard(key: &str, raw: RawWireGuard) -> Result<WireGuard, ConfigError> {
    let err =
        |field: &str, msg: String| ConfigError::invalid(format!("{key}.wireguard.{field}"), msg);
    let mode: Mode = raw.mode.parse().map_err(|m| err("mode", m))?;
    let listen_port = raw
        .listen_port
        .map(Port::new)
        .transpose()
        .map_err(|m| err("listen_port", m))?;
    let peer_port = raw
        .peer_port
        .map(Port::new)
        .transpose()
        .map_err(|m| err("peer_port", m))?;
    match mode {
        Mode::Server if listen_port.is_none() => {
            return Err(err(
                "listen_port",
                "a server needs a fixed port for its client to dial (--listen-port)".into(),
            ))
        }
        Mode::Client if peer_port.is_none() => return Err(err(
            "peer_port",
            "a client needs the server's port (--peer-port, printed in the server's peer command)"
                .into(),
        )),
        _ => {}
    }
    if raw.private_key.public_key() == raw.peer_public_key {
        return Err(err(
            "peer_public_key",
            "is this line's own public key; use the peer's".into(),
        ));
    }
    let persistent_keepalive = match raw.persistent_keepalive {
        None => DEFAULT_KEEPALIVE,
        Some(v) => u16::try_from(v).map_err(|_| {
            err(
                "persistent_keepalive",
                format!("{v} is above 65535 seconds"),
            )
        })?,
    };
    Ok(WireGuard {
        mode,
        listen_port,
        peer_port,
        private_key: raw.private_key,
        peer_public_key: raw.peer_public_key,
        peer_private_key: raw.peer_private_key,
        persistent_keepalive,
    })
}

fn convert_ip_tunnel(
    key: &str,
    kind: TunnelType,
    raw: RawIpTunnel,
) -> Result<IpTunnel, ConfigError> {
    let err =
        |field: &str, msg: String| ConfigError::invalid(format!("{key}.ip_tunnel.{field}"), msg);
    let text = |v: &IntOrText| match v {
        IntOrText::Int(n) => n.to_string(),
        IntOrText::Text(t) => t.clone(),
    };
    let gre_key = |field: &str, v: &Option<IntOrText>| {
        v.as_ref()
            .map(|v| parse_key(&text(v)))
            .transpose()
            .map_err(|m| err(field, m))
    };
    let ttl = match &raw.ttl {
        None => Ttl::default_for(kind),
        Some(IntOrText::Int(n)) => match u8::try_from(*n) {
            Ok(0) => Ttl::Inherit,
            Ok(v) => Ttl::Fixed(v),
            Err(_) => return Err(err("ttl", format!("TTL {n} is not 1-255 or \"inherit\""))),
        },
        Some(IntOrText::Text(t)) => parse_ttl(t).map_err(|m| err("ttl", m))?,
    };
    let tos = match &raw.tos {
        None => Tos::default(),
        Some(IntOrText::Int(n)) => u8::try_from(*n).map(Tos::Fixed).map_err(|_| {
            err(
                "tos",
                format!("TOS {n} is not 0-255, \"0xNN\" or \"inherit\""),
            )
        })?,
        Some(IntOrText::Text(t)) => parse_tos(t).map_err(|m| err("tos", m))?,
    };
    let keepalive =
        keepalive(raw.keepalive.unwrap_or(0), raw.keepalive_retries).map_err(|(retries, m)| {
            err(
                if retries {
                    "keepalive_retries"
                } else {
                    "keepalive"
                },
                m,
            )
        })?;
    let esp = esp_cfg::from_parts(
        raw.encrypt,
        raw.cipher.as_deref(),
        raw.enc_key,
        raw.auth_key,
    )
    .map_err(|(field, _, m)| err(field, m))?;
    Ok(IpTunnel {
        esp,
        kind,
        gre: GreOptions {
            ikey: gre_key("ikey", &raw.ikey)?,
            okey: gre_key("okey", &raw.okey)?,
            iseq: raw.iseq,
            oseq: raw.oseq,
            icsum: raw.icsum,
            ocsum: raw.ocsum,
        },
        ttl,
        tos,
        pmtudisc: raw.pmtudisc.unwrap_or(true),
        keepalive,
        af_xdp: raw.af_xdp,
    })
}

fn convert_line(i: usize, raw: RawLine) -> Result<Line, ConfigError> {
    let key = line_key(i, &raw.name);
    let name = LineName::try_from(raw.name.clone())
        .map_err(|m| ConfigError::invalid(format!("{key}.name"), m))?;
    let parent = LineName::try_from(raw.parent.clone())
        .map_err(|m| ConfigError::invalid(format!("{key}.parent"), m))?;
    if parent == name {
        return Err(ConfigError::invalid(
            format!("{key}.parent"),
            "a line cannot be its own parent",
        ));
    }
    let addr_check = |field: &str, ip: IpAddr| -> Result<(), ConfigError> {
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            return Err(ConfigError::invalid(
                format!("{key}.{field}"),
                format!("{ip} is not a unicast address usable for a tunnel"),
            ));
        }
        if let IpAddr::V4(v4) = ip {
            if v4.is_broadcast() {
                return Err(ConfigError::invalid(
                    format!("{key}.{field}"),
                    format!("{ip} is a broadcast address"),
                ));
            }
        }
        Ok(())
    };
    addr_check("peer_ip", raw.peer_ip)?;
    addr_check("peer_vip", raw.peer_vip)?;
    addr_check("local_vip", raw.local_vip)?;
    if raw.local_vip.is_ipv4() != raw.peer_vip.is_ipv4() {
        return Err(ConfigError::invalid(
            format!("{key}.peer_vip"),
            format!(
                "{} and local_vip {} are of different IP families; use two IPv4 or two IPv6 VIPs",
                raw.peer_vip, raw.local_vip
            ),
        ));
    }
    if raw.local_vip == raw.peer_vip {
        return Err(ConfigError::invalid(
            format!("{key}.peer_vip"),
            "equals local_vip; each end needs its own VIP",
        ));
    }
    let mtu = raw
        .mtu
        .map(|m| Mtu::new(m, raw.local_vip.is_ipv6()))
        .transpose()
        .map_err(|m| ConfigError::invalid(format!("{key}.mtu"), m))?;
    let kind = match raw.kind.as_str() {
        "wireguard" => {
            let wg = raw.wireguard.ok_or_else(|| {
                ConfigError::invalid(
                    format!("{key}.wireguard"),
                    "a line of type wireguard needs a [line.wireguard] table (mode, keys, ports)",
                )
            })?;
            if raw.ip_tunnel.is_some() {
                return Err(ConfigError::invalid(
                    format!("{key}.ip_tunnel"),
                    "a wireguard line takes no [line.ip_tunnel] table; remove it",
                ));
            }
            LineKind::WireGuard(convert_wireguard(&key, wg)?)
        }
        other => match TunnelType::from_name(other) {
            Some(kind) => {
                if raw.wireguard.is_some() {
                    return Err(ConfigError::invalid(
                        format!("{key}.wireguard"),
                        format!("a {kind} line takes no [line.wireguard] table; remove it"),
                    ));
                }
                let t = convert_ip_tunnel(&key, kind, raw.ip_tunnel.unwrap_or_default())?;
                check_ip_tunnel(&t, raw.peer_ip, raw.local_vip, raw.mtu).map_err(
                    |(setting, message)| {
                        ConfigError::invalid(format!("{key}.{}", setting.toml_key), message)
                    },
                )?;
                LineKind::IpTunnel(t)
            }
            None => {
                return Err(ConfigError::invalid(
                    format!("{key}.type"),
                    format!(
                        "type {other:?} is not supported; supported: {}",
                        SUPPORTED_TYPES.join(", ")
                    ),
                ))
            }
        },
    };
    Ok(Line {
        name,
        parent,
        peer_ip: raw.peer_ip,
        peer_vip: raw.peer_vip,
        local_vip: raw.local_vip,
        mtu,
        kind,
    })
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        let lines = raw
            .lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| convert_line(i, l))
            .collect::<Result<Vec<_>, _>>()?;

        let mut names = HashSet::new();
        let mut vips: HashMap<IpAddr, (usize, &'static str)> = HashMap::new();
        let mut ports: HashMap<(&str, u16), usize> = HashMap::new();
        // IP tunnel lines are told apart on receive by peer, protocol and GRE key.
        let mut demux: HashMap<(&str, IpAddr, u8, Option<u32>), usize> = HashMap::new();
        for (i, l) in lines.iter().enumerate() {
            let key = line_key(i, l.name.as_str());
            if !names.insert(l.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!(
                        "a line named {} already exists; names must be unique",
                        l.name
                    ),
                ));
            }
            for (field, vip) in [("local_vip", l.local_vip), ("peer_vip", l.peer_vip)] {
                if let Some((j, other_field)) = vips.insert(vip, (i, field)) {
                    return Err(ConfigError::invalid(
                        format!("{key}.{field}"),
                        format!(
                            "{vip} is already the {other_field} of {}; every VIP on a node must be unique",
                            line_key(j, lines[j].name.as_str())
                        ),
                    ));
                }
            }
            if let Some(t) = l.ip_tunnel() {
                // An encrypted line receives ESP (protocol 50), one per peer and parent.
                let (ikey, protocol) = match t.esp {
                    Some(_) => (None, crate::wire::IpProtocol::Esp.number()),
                    None => (t.gre.ikey.map(|k| k.0), t.kind.protocol().number()),
                };
                if let Some(j) = demux.insert((l.parent.as_str(), l.peer_ip, protocol, ikey), i) {
                    let (field, what) = match ikey {
                        _ if t.esp.is_some() => ("ip_tunnel.encrypt", "ESP".to_string()),
                        Some(k) if t.kind.is_gre() => ("ip_tunnel.ikey", format!("GRE key {k}")),
                        None if t.kind.is_gre() => ("ip_tunnel.ikey", "no GRE key".to_string()),
                        _ => ("type", format!("IP protocol {protocol}")),
                    };
                    return Err(ConfigError::invalid(
                        format!("{key}.{field}"),
                        format!(
                            "{} already receives {what} from {} on parent {}; received \
                             packets could not be told apart: give the lines different \
                             keys (--key), peers or parents",
                            line_key(j, lines[j].name.as_str()),
                            l.peer_ip,
                            l.parent
                        ),
                    ));
                }
            }
            if let Some(port) = l.wireguard().and_then(|w| w.listen_port) {
                if let Some(j) = ports.insert((l.parent.as_str(), port.get()), i) {
                    return Err(ConfigError::invalid(
                        format!("{key}.wireguard.listen_port"),
                        format!(
                            "port {port} on parent {} is already used by {}",
                            l.parent,
                            line_key(j, lines[j].name.as_str())
                        ),
                    ));
                }
            }
        }
        let config = Config { lines };
        // Cycles: walk up from every line; more steps than lines means a loop.
        for (i, l) in config.lines.iter().enumerate() {
            let mut cur = l;
            let mut path = vec![l.name.to_string()];
            while let Some(p) = config.line(cur.parent.as_str()) {
                path.push(p.name.to_string());
                if p.name == l.name || path.len() > config.lines.len() + 1 {
                    return Err(ConfigError::invalid(
                        format!("{}.parent", line_key(i, l.name.as_str())),
                        format!("the parent graph has a cycle: {}", path.join(" -> ")),
                    ));
                }
                cur = p;
            }
        }
        // AF_XDP sends on an Ethernet device; a line on a line sends into its parent's
        // TUN device.
        for (i, l) in config.lines.iter().enumerate() {
            if l.ip_tunnel().is_some_and(|t| t.af_xdp) && config.is_line(l.parent.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{}.ip_tunnel.af_xdp", line_key(i, l.name.as_str())),
                    format!(
                        "AF_XDP sends on an Ethernet device, but the parent {} is a line \
                         (its packets go into that line's TUN device); remove af_xdp \
                         (--af-xdp) or give the line an interface as its parent",
                        l.parent
                    ),
                ));
            }
        }
        Ok(config)
    }
}

/// What a reload must do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Lines to stop (removed, changed, or below a changed line), children first.
    pub stop: Vec<LineName>,
    /// Lines to start (added, changed, or below a changed line), parents first.
    pub start: Vec<LineName>,
}

/// Compares two configurations. A line whose settings differ is restarted, and so is
/// everything stacked on it; an unchanged line is not touched.
pub fn diff(old: &Config, new: &Config) -> Diff {
    let mut stop: Vec<LineName> = Vec::new();
    for l in &old.lines {
        if new.line(l.name.as_str()) != Some(l) && !stop.contains(&l.name) {
            stop.push(l.name.clone());
            for d in old.descendants(l.name.as_str()) {
                if !stop.contains(&d) {
                    stop.push(d);
                }
            }
        }
    }
    let mut start: Vec<LineName> = new
        .ordered()
        .into_iter()
        .filter(|l| old.line(l.name.as_str()) != Some(*l) || stop.contains(&l.name))
        .map(|l| l.name.clone())
        .collect();
    start.dedup();
    stop.sort_by_key(|n| std::cmp::Reverse(old.depth(n.as_str())));
    Diff { stop, start }
}

#[cfg(test)]
pub(crate) mod test {
    use super::*;
    use crate::config::parse;
    use proptest::prelude::*;
    use std::path::Path;

    pub(crate) const SERVER_TOML: &str = r#"
[[line]]
name = "tunnel_base"
parent = "eth0"
peer_ip = "198.51.100.20"
peer_vip = "10.0.0.2"
local_vip = "10.0.0.1"
type = "wireguard"
mtu = 1420

[line.wireguard]
mode = "server"
listen_port = 51820
private_key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
peer_public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
peer_private_key = "CB4ab1U7XM+3RI5O7hlxfXf5A8iR0tEcWRbEihTmL2o="

[[line]]
name = "tunnel_secure"
parent = "tunnel_base"
peer_ip = "10.0.0.2"
peer_vip = "172.16.0.2"
local_vip = "172.16.0.1"
type = "wireguard"

[line.wireguard]
mode = "client"
peer_port = 51821
private_key = "CB4ab1U7XM+3RI5O7hlxfXf5A8iR0tEcWRbEihTmL2o="
peer_public_key = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
persistent_keepalive = 10
"#;

    fn cfg(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    fn err(text: &str) -> String {
        cfg(text).unwrap_err().to_string()
    }

    #[test]
    fn valid_config_parses_with_defaults() {
        let c = cfg(SERVER_TOML).unwrap();
        assert_eq!(c.lines.len(), 2);
        let wg = c.lines[0].wireguard().unwrap();
        assert_eq!(wg.mode, Mode::Server);
        assert_eq!(wg.persistent_keepalive, DEFAULT_KEEPALIVE);
        assert_eq!(c.lines[1].wireguard().unwrap().persistent_keepalive, 10);
        assert_eq!(c.depth("tunnel_secure"), 1);
        assert_eq!(c.depth("tunnel_base"), 0);
    }

    #[test]
    fn written_config_parses_back_identically() {
        let c = cfg(SERVER_TOML).unwrap();
        assert_eq!(cfg(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn duplicate_line_name_is_refused() {
        let text = format!(
            "{SERVER_TOML}{}",
            &SERVER_TOML
                .replace("10.0.", "10.9.")
                .replace("172.16.", "172.19.")
                .replace("51820", "51830")
        );
        assert!(err(&text).contains("already exists"), "{}", err(&text));
    }

    #[test]
    fn vip_clash_is_refused() {
        let text = SERVER_TOML.replace("172.16.0.2", "10.0.0.1");
        let msg = err(&text);
        assert!(msg.contains("10.0.0.1") && msg.contains("unique"), "{msg}");
    }

    #[test]
    fn client_without_peer_port_is_refused() {
        let msg = err(&SERVER_TOML.replace("peer_port = 51821\n", ""));
        assert!(
            msg.contains("peer_port") && msg.contains("--peer-port"),
            "{msg}"
        );
    }

    #[test]
    fn server_without_listen_port_is_refused() {
        let msg = err(&SERVER_TOML.replace("listen_port = 51820\n", ""));
        assert!(msg.contains("listen_port"), "{msg}");
    }

    #[test]
    fn cycle_in_parent_graph_is_refused() {
        let text = SERVER_TOML.replace("parent = \"eth0\"", "parent = \"tunnel_secure\"");
        let msg = err(&text);
        assert!(msg.contains("cycle"), "{msg}");
    }

    #[test]
    fn own_parent_is_refused() {
        let text = SERVER_TOML.replace("parent = \"eth0\"", "parent = \"tunnel_base\"");
        assert!(err(&text).contains("own parent"));
    }

    #[test]
    fn malformed_key_names_the_key_and_the_fix() {
        let text = SERVER_TOML.replace("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "short");
        let msg = err(&text);
        assert!(
            msg.contains("peer_public_key") && msg.contains("base64"),
            "{msg}"
        );
    }

    #[test]
    fn malformed_address_names_the_key() {
        let msg = err(&SERVER_TOML.replace("\"198.51.100.20\"", "\"198.51.100\""));
        assert!(msg.contains("test.toml:5:11: line[0].peer_ip: "), "{msg}");
    }

    #[test]
    fn mtu_bounds_depend_on_family() {
        assert!(err(&SERVER_TOML.replace("mtu = 1420", "mtu = 500")).contains("576"));
        assert!(err(&SERVER_TOML.replace("mtu = 1420", "mtu = 9001")).contains("9000"));
    }

    #[test]
    fn unsupported_type_lists_the_supported_ones() {
        let msg = err(&SERVER_TOML.replacen("type = \"wireguard\"", "type = \"pptp\"", 1));
        assert!(msg.contains("pptp") && msg.contains("wireguard"), "{msg}");
    }

    #[test]
    fn bad_interface_name_is_refused() {
        let msg = err(&SERVER_TOML.replace("tunnel_secure", "tunnel_secure_way_too_long"));
        assert!(msg.contains("15"), "{msg}");
    }

    #[test]
    fn diff_restarts_changed_line_and_its_children_only() {
        let old = cfg(SERVER_TOML).unwrap();
        let mut new = old.clone();
        assert_eq!(diff(&old, &new), Diff::default());
        new.lines[0].mtu = Some(Mtu::new(1400, false).unwrap());
        let d = diff(&old, &new);
        assert_eq!(
            d.stop.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["tunnel_secure", "tunnel_base"]
        );
        assert_eq!(
            d.start.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["tunnel_base", "tunnel_secure"]
        );
        // Changing only the child leaves the parent alone.
        let mut new2 = old.clone();
        new2.lines[1].mtu = Some(Mtu::new(1300, false).unwrap());
        let d = diff(&old, &new2);
        assert_eq!(d.stop, vec![new2.lines[1].name.clone()]);
        assert_eq!(d.start, vec![new2.lines[1].name.clone()]);
    }

    const GRE_TOML: &str = r#"
[[line]]
name = "gre1"
parent = "eth0"
peer_ip = "198.51.100.20"
peer_vip = "10.9.0.2"
local_vip = "10.9.0.1"
type = "gre"

[line.ip_tunnel]
ikey = "0.0.0.7"
okey = 8
iseq = true
ocsum = true
ttl = "inherit"
tos = "0x28"
keepalive = 5
keepalive_retries = 2

[[line]]
name = "ipip1"
parent = "eth0"
peer_ip = "198.51.100.30"
peer_vip = "10.8.0.2"
local_vip = "10.8.0.1"
type = "ipip"
"#;

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
        assert_eq!(*i, IpTunnel::new(TunnelType::Ipip));
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

    #[test]
    fn af_xdp_on_a_line_whose_parent_is_a_line_is_refused() {
        let text = GRE_TOML
            .replace(
                "type = \"ipip\"\n",
                "type = \"ipip\"\n\n[line.ip_tunnel]\naf_xdp = true\n",
            )
            .replace(
                "name = \"ipip1\"\nparent = \"eth0\"",
                "name = \"ipip1\"\nparent = \"gre1\"",
            );
        let msg = err(&text);
        assert!(
            msg.contains("line[1] (\"ipip1\").ip_tunnel.af_xdp")
                && msg.contains("the parent gre1 is a line"),
            "{msg}"
        );
    }

    #[test]
    fn ip_tunnel_peer_of_the_wrong_family_names_the_key() {
        let msg = err(&GRE_TOML.replace("\"198.51.100.20\"", "\"2001:db8::2\""));
        assert!(
            msg.contains("line[0] (\"gre1\").peer_ip") && msg.contains("gre6"),
            "{msg}"
        );
        let msg = err(&GRE_TOML.replace("type = \"ipip\"", "type = \"ipip6\""));
        assert!(msg.contains("line[1] (\"ipip1\").peer_ip"), "{msg}");
    }

    #[test]
    fn vips_of_a_family_the_type_does_not_carry_are_refused() {
        let text = GRE_TOML
            .replace("\"10.8.0.2\"", "\"fd00::2\"")
            .replace("\"10.8.0.1\"", "\"fd00::1\"");
        let msg = err(&text);
        assert!(msg.contains("local_vip") && msg.contains("IPv6"), "{msg}");
    }

    #[test]
    fn gre_options_on_an_ip_in_ip_type_are_refused() {
        let text = format!("{GRE_TOML}\n[line.ip_tunnel]\noseq = true\n");
        let msg = err(&text);
        assert!(
            msg.contains("line[1] (\"ipip1\").ip_tunnel.oseq") && msg.contains("gre"),
            "{msg}"
        );
    }

    #[test]
    fn key_out_of_range_is_refused_and_dotted_quads_are_keys() {
        let msg = err(&GRE_TOML.replace("okey = 8", "okey = 4294967296"));
        assert!(msg.contains("ip_tunnel.okey"), "{msg}");
        assert!(err(&GRE_TOML.replace("\"0.0.0.7\"", "\"1.2.3\"")).contains("ikey"));
        assert_eq!(parse_key("1.2.3.4"), Ok(Key(0x0102_0304)));
        assert_eq!(parse_key("0x10"), Ok(Key(16)));
        assert!(parse_key("-1").is_err());
    }

    #[test]
    fn mtu_below_the_ipv6_minimum_is_refused_for_types_that_carry_ipv6() {
        let text = GRE_TOML.replace("type = \"gre\"", "type = \"gre\"\nmtu = 1200");
        let msg = err(&text);
        assert!(msg.contains("gre1\").mtu") && msg.contains("1280"), "{msg}");
        // ipip carries only IPv4: 1200 is fine.
        let text = GRE_TOML.replace("type = \"ipip\"", "type = \"ipip\"\nmtu = 1200");
        assert!(cfg(&text).is_ok());
    }

    #[test]
    fn two_gre_lines_to_one_peer_need_different_input_keys() {
        let second = GRE_TOML
            .split("[[line]]")
            .nth(1)
            .unwrap()
            .replace("gre1", "gre2")
            .replace("10.9.0.", "10.7.0.");
        let msg = err(&format!("{GRE_TOML}[[line]]{second}"));
        assert!(
            msg.contains("ip_tunnel.ikey") && msg.contains("GRE key 7"),
            "{msg}"
        );
        let other_key = second.replace("\"0.0.0.7\"", "9");
        assert!(cfg(&format!("{GRE_TOML}[[line]]{other_key}")).is_ok());
    }

    #[test]
    fn tables_of_the_other_kind_are_refused() {
        let msg =
            err(&SERVER_TOML.replace("mtu = 1420\n", "mtu = 1420\n\n[line.ip_tunnel]\nttl = 3\n"));
        assert!(msg.contains("ip_tunnel"), "{msg}");
        let text = GRE_TOML.replace(
            "[line.ip_tunnel]",
            "[line.wireguard]\nmode = \"server\"\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\npeer_public_key = \"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\"\n\n[line.ip_tunnel]",
        );
        assert!(err(&text).contains("line.wireguard"), "{}", err(&text));
    }

    #[test]
    fn nopmtudisc_needs_ttl_inherit_and_an_ipv4_underlay() {
        let fixed = GRE_TOML.replace("ttl = \"inherit\"", "ttl = 64\npmtudisc = false");
        assert!(err(&fixed).contains("inherit"), "{}", err(&fixed));
        let ok = GRE_TOML.replace("ttl = \"inherit\"", "pmtudisc = false");
        assert!(cfg(&ok).is_ok());
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
        assert_eq!(
            g.cli_options().join(" "),
            "--ikey 7 --okey 8 --iseq --ocsum --tos 0x28 --keepalive 5,2"
        );
        assert_eq!(
            g.mirrored().cli_options().join(" "),
            "--ikey 8 --okey 7 --oseq --icsum --tos 0x28 --keepalive 5,2"
        );
        let mut both = IpTunnel::new(TunnelType::Gre6);
        both.gre.ikey = Some(Key(3));
        both.gre.okey = Some(Key(3));
        both.gre.iseq = true;
        both.gre.oseq = true;
        both.ttl = Ttl::Fixed(9);
        assert_eq!(both.cli_options().join(" "), "--key 3 --seq --ttl 9");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
            let _ = cfg(&s);
        }

        #[test]
        fn line_names_follow_ifname_rules(s in "[a-z0-9_.-]{0,20}") {
            let ok = LineName::try_from(s.clone()).is_ok();
            prop_assert_eq!(ok, !s.is_empty() && s.len() <= 15 && s != "." && s != "..");
        }
    }
}
