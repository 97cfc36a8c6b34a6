//! Raw configuration -> model: every rule a line must follow, checked here once for a
//! file and for a `line create` request alike. Per line: names, addresses, MTU, type
//! and its table, the IP tunnel options that must fit together; across lines: unique
//! names, VIPs and ports, IP tunnels whose packets can be told apart, no cycle in the
//! parent graph, AF_XDP only on an interface.
//!
//! Rules: a rule answers with a [`Problem`] that names the setting at fault and words
//! its message once; [`Origin`] turns it into the reader's words (TOML key paths for a
//! file, the flags typed for a request).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::esp::{parse_cipher, parse_keying, parse_rekey, Esp, Keying};
use super::iptunnel::{keepalive, parse_key, parse_tos, parse_ttl, IpTunnel, KeySpelling};
use super::model::{Config, Line, LineKind, WireGuard, DEFAULT_KEEPALIVE, IPSEC, SUPPORTED_TYPES};
use super::names::{seconds, LineName, Mode, Mtu, Port};
use super::policy::Reader;
use super::raw::{IntOrText, RawConfig, RawIpTunnel, RawLine, RawWireGuard};
use super::setting::{Origin, Problem, Setting};
use super::ConfigError;
use crate::tunnel::esp::Cipher;
use crate::tunnel::gre::GreOptions;
use crate::tunnel::iptype::{IpVersion, Tos, Ttl, TunnelType};

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    /// Validates a file's lines; problems name its TOML keys.
    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        Config::from_raw(raw, Origin::File)
    }
}

impl Config {
    /// Validates `raw`; a problem is worded for where the lines came from.
    pub fn from_raw(mut raw: RawConfig, origin: Origin<'_>) -> Result<Config, ConfigError> {
        let metrics = raw
            .metrics
            .take()
            .map(|m| super::metrics::Metrics::from_raw(&m))
            .transpose()?;
        let policy = raw.take_policy();
        let names: Vec<String> = raw.lines.iter().map(|l| l.name.clone()).collect();
        let config = validate(raw).map_err(|p| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            p.render(&names, origin)
        })?;
        let reader = match origin {
            Origin::File => Reader::File,
            Origin::Request(_) => Reader::Request,
        };
        let policy = super::policy::validate(&policy, &config.lines, reader)?;
        Ok(Config {
            metrics,
            policy,
            ..config
        })
    }
}

fn validate(raw: RawConfig) -> Result<Config, Problem> {
    let lines = raw
        .lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| convert_line(i, l))
        .collect::<Result<Vec<_>, _>>()?;
    check_across(&lines)?;
    Ok(Config {
        lines: lines.into_iter().map(|c| c.line).collect(),
        policy: Default::default(),
        metrics: None,
    })
}

/// A line that passed its own checks, and the setting that asked for its encryption
/// (for the checks across lines).
struct Converted {
    line: Line,
    esp: Setting,
}

/// `message` as a problem of line `i` at `setting`: for the checks whose message says
/// what is wrong without naming the setting.
fn bad(i: usize, setting: Setting) -> impl Fn(String) -> Problem {
    move |message| Problem::new(i, setting, message)
}

fn unicast(i: usize, setting: Setting, ip: IpAddr) -> Result<(), Problem> {
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(Problem::new(
            i,
            setting,
            format!("{ip} is not a unicast address usable for a tunnel"),
        ));
    }
    match ip {
        IpAddr::V4(v4) if v4.is_broadcast() => Err(Problem::new(
            i,
            setting,
            format!("{ip} is a broadcast address"),
        )),
        _ => Ok(()),
    }
}

fn convert_line(i: usize, raw: RawLine) -> Result<Converted, Problem> {
    use Setting as S;
    let name = LineName::try_from(raw.name).map_err(bad(i, S::Name))?;
    let parent = LineName::try_from(raw.parent).map_err(bad(i, S::Parent))?;
    if parent == name {
        return Err(Problem::new(
            i,
            S::Parent,
            "a line cannot be its own parent",
        ));
    }
    unicast(i, S::PeerIp, raw.peer_ip)?;
    unicast(i, S::PeerVip, raw.peer_vip)?;
    unicast(i, S::LocalVip, raw.local_vip)?;
    if raw.local_vip.is_ipv4() != raw.peer_vip.is_ipv4() {
        return Err(Problem::at(i, S::PeerVip)
            .text(format!("{} and ", raw.peer_vip))
            .key(S::LocalVip)
            .text(format!(
                " {} are of different IP families; use two IPv4 or two IPv6 VIPs",
                raw.local_vip
            )));
    }
    if raw.local_vip == raw.peer_vip {
        return Err(Problem::at(i, S::PeerVip)
            .text("equals ")
            .key(S::LocalVip)
            .text("; each end needs its own VIP"));
    }
    let mtu = raw
        .mtu
        .map(|m| Mtu::new(m, raw.local_vip.is_ipv6()))
        .transpose()
        .map_err(bad(i, S::Mtu))?;
    let mut esp = S::Encrypt;
    let kind = match raw.kind.as_str() {
        "wireguard" => {
            let Some(wg) = raw.wireguard else {
                return Err(Problem::new(
                    i,
                    S::WireGuard,
                    "a line of type wireguard needs a [line.wireguard] table (mode, keys, ports)",
                ));
            };
            if let Some(t) = &raw.ip_tunnel {
                return Err(ip_tunnel_on_wireguard(i, t));
            }
            LineKind::WireGuard(convert_wireguard(i, wg, raw.peer_vip)?)
        }
        other => match ip_tunnel_type(other) {
            Some((kind, ipsec)) => {
                if raw.wireguard.is_some() {
                    return Err(Problem::new(
                        i,
                        S::WireGuard,
                        format!("a {other} line takes no [line.wireguard] table; remove it"),
                    ));
                }
                let mut t = raw.ip_tunnel.unwrap_or_default();
                if ipsec && !t.encrypt {
                    // The type asked for the encryption: its problems name the type.
                    t.encrypt = true;
                    esp = S::Type;
                }
                let t = convert_ip_tunnel(i, kind, esp, t)?;
                check_ip_tunnel(i, &t, esp, raw.peer_ip, raw.local_vip, raw.mtu)?;
                LineKind::IpTunnel(t)
            }
            None => {
                return Err(Problem::new(
                    i,
                    S::Type,
                    format!(
                        "type {other:?} is not supported; supported: {}",
                        SUPPORTED_TYPES.join(", ")
                    ),
                ))
            }
        },
    };
    Ok(Converted {
        line: Line {
            name,
            parent,
            peer_ip: raw.peer_ip,
            peer_vip: raw.peer_vip,
            local_vip: raw.local_vip,
            mtu,
            kind,
        },
        esp,
    })
}

/// The IP tunnel type a `type` names, and whether it is `ipsec` (gre with ESP).
fn ip_tunnel_type(name: &str) -> Option<(TunnelType, bool)> {
    match name {
        IPSEC => Some((TunnelType::Gre, true)),
        other => TunnelType::from_name(other).map(|kind| (kind, false)),
    }
}

/// A wireguard line with a `[line.ip_tunnel]` table: named by the first option it sets.
fn ip_tunnel_on_wireguard(i: usize, t: &RawIpTunnel) -> Problem {
    use Setting as S;
    let set = [
        (t.ikey.is_some(), S::Ikey),
        (t.okey.is_some(), S::Okey),
        (t.iseq, S::Iseq),
        (t.oseq, S::Oseq),
        (t.icsum, S::Icsum),
        (t.ocsum, S::Ocsum),
        (t.ttl.is_some(), S::Ttl),
        (t.tos.is_some(), S::Tos),
        (t.pmtudisc.is_some(), S::Pmtudisc),
        (t.keepalive.is_some(), S::Keepalive),
        (t.keepalive_retries.is_some(), S::KeepaliveRetries),
        (t.encrypt, S::Encrypt),
        (t.cipher.is_some(), S::Cipher),
        (t.enc_key.is_some(), S::EncKey),
        (t.auth_key.is_some(), S::AuthKey),
        (t.esp_keying.is_some(), S::EspKeying),
        (t.esp_rekey.is_some(), S::EspRekey),
        (t.af_xdp, S::AfXdp),
    ];
    let setting = set
        .iter()
        .find(|(on, _)| *on)
        .map_or(S::IpTunnel, |&(_, s)| s);
    let file = "a wireguard line takes no [line.ip_tunnel] table; remove it";
    let request = if setting == S::KeepaliveRetries {
        "RETRIES applies to IP tunnel keepalives; a wireguard line takes --keepalive SECS"
    } else {
        "--key, --seq, --csum, --ttl, --tos, --[no]pmtudisc, --encrypt, --cipher, --enc-key, \
         --auth-key, --esp-keying, --esp-rekey and --af-xdp apply to the IP tunnel types (ipip, gre, sit, ip6ip6, ipip6, \
         gre6; ipsec), not to wireguard"
    };
    Problem::at(i, setting).either(file, request)
}

fn convert_wireguard(i: usize, raw: RawWireGuard, peer_vip: IpAddr) -> Result<WireGuard, Problem> {
    use Setting as S;
    let mode: Mode = raw.mode.parse().map_err(bad(i, S::Mode))?;
    let port = |v: Option<u32>, s: Setting| v.map(Port::new).transpose().map_err(bad(i, s));
    let listen_port = port(raw.listen_port, S::ListenPort)?;
    let peer_port = port(raw.peer_port, S::PeerPort)?;
    match mode {
        Mode::Server if listen_port.is_none() => {
            return Err(Problem::new(
                i,
                S::ListenPort,
                "a server needs a fixed port for its client to dial",
            ))
        }
        Mode::Client if peer_port.is_none() => {
            return Err(Problem::new(
                i,
                S::PeerPort,
                "the server's listen port is required for a client (printed as --peer-port in \
                 the server's peer command)",
            ))
        }
        _ => {}
    }
    if raw.private_key.public_key() == raw.peer_public_key {
        return Err(Problem::new(
            i,
            S::PeerPublicKey,
            "is this line's own public key; use the peer's",
        ));
    }
    let persistent_keepalive = raw
        .persistent_keepalive
        .map(seconds)
        .transpose()
        .map_err(bad(i, S::PersistentKeepalive))?
        .unwrap_or(DEFAULT_KEEPALIVE);
    let allowed_ips = raw
        .allowed_ips
        .iter()
        .map(|text| allowed_ip(text, peer_vip))
        .collect::<Result<Vec<_>, String>>()
        .map_err(bad(i, S::AllowedIps))?;
    Ok(WireGuard {
        mode,
        listen_port,
        peer_port,
        private_key: raw.private_key,
        peer_public_key: raw.peer_public_key,
        peer_private_key: raw.peer_private_key,
        persistent_keepalive,
        preshared_key: raw.preshared_key,
        allowed_ips,
    })
}

/// One of `allowed_ips`: a prefix of the VIPs' family without host bits; the peer
/// VIP's own host prefix is implied, so it is not written.
fn allowed_ip(text: &str, peer_vip: IpAddr) -> Result<ipnet::IpNet, String> {
    let net: ipnet::IpNet = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a prefix (e.g. 192.0.2.0/24 or 2001:db8::/64)"))?;
    if net.trunc() != net {
        return Err(format!(
            "{text:?} has bits set beyond its /{}; did you mean {}?",
            net.prefix_len(),
            net.trunc()
        ));
    }
    if net.addr().is_ipv4() != peer_vip.is_ipv4() {
        return Err(format!(
            "{net} is not of the line's VIP family ({peer_vip}); a line routes one family"
        ));
    }
    if net.addr() == peer_vip && net.prefix_len() == net.max_prefix_len() {
        return Err(format!(
            "{net} is the peer VIP's own prefix, always routed to the peer; remove it"
        ));
    }
    Ok(net)
}

/// `esp` is the setting that asked for encryption (for its problems' names).
fn convert_ip_tunnel(
    i: usize,
    kind: TunnelType,
    esp: Setting,
    raw: RawIpTunnel,
) -> Result<IpTunnel, Problem> {
    use Setting as S;
    let text = |v: &IntOrText| match v {
        IntOrText::Int(n) => n.to_string(),
        IntOrText::Text(t) => t.clone(),
    };
    let gre_key = |s: Setting, v: &Option<IntOrText>| {
        v.as_ref()
            .map(|v| parse_key(&text(v)))
            .transpose()
            .map_err(bad(i, s))
    };
    let ttl = match &raw.ttl {
        None => Ttl::default_for(kind),
        Some(IntOrText::Int(n)) => match u8::try_from(*n) {
            Ok(0) => Ttl::Inherit,
            Ok(v) => Ttl::Fixed(v),
            Err(_) => {
                return Err(Problem::new(
                    i,
                    S::Ttl,
                    format!("TTL {n} is not 1-255 or \"inherit\""),
                ))
            }
        },
        Some(IntOrText::Text(t)) => parse_ttl(t).map_err(bad(i, S::Ttl))?,
    };
    let tos = match &raw.tos {
        None => Tos::default(),
        Some(IntOrText::Int(n)) => u8::try_from(*n).map(Tos::Fixed).map_err(|_| {
            Problem::new(
                i,
                S::Tos,
                format!("TOS {n} is not 0-255, \"0xNN\" or \"inherit\""),
            )
        })?,
        Some(IntOrText::Text(t)) => parse_tos(t).map_err(bad(i, S::Tos))?,
    };
    let keepalive = keepalive(raw.keepalive.unwrap_or(0), raw.keepalive_retries)
        .map_err(|(s, m)| Problem::new(i, s, m))?;
    let esp = esp_settings(i, raw.encrypt.then_some(esp), &raw)?;
    Ok(IpTunnel {
        esp,
        kind,
        gre: GreOptions {
            ikey: gre_key(S::Ikey, &raw.ikey)?,
            okey: gre_key(S::Okey, &raw.okey)?,
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
        key_spelling: KeySpelling::of(raw.ikey.as_ref(), raw.okey.as_ref()),
    })
}

/// The ESP settings from what the line gives: `encrypt` (the setting that asked for
/// it), an optional cipher, the two keys, the keying mode and its rekey interval. `None`
/// for a plain line.
fn esp_settings(
    i: usize,
    encrypt: Option<Setting>,
    raw: &RawIpTunnel,
) -> Result<Option<Esp>, Problem> {
    use Setting as S;
    if encrypt.is_none() {
        let given = [
            (raw.cipher.is_some(), S::Cipher),
            (raw.enc_key.is_some(), S::EncKey),
            (raw.auth_key.is_some(), S::AuthKey),
            (raw.esp_keying.is_some(), S::EspKeying),
            (raw.esp_rekey.is_some(), S::EspRekey),
        ];
        if let Some(&(_, s)) = given.iter().find(|(on, _)| *on) {
            return Err(Problem::at(i, s)
                .text("applies to encrypted lines only; ")
                .either(
                    "set encrypt = true or remove it",
                    "add --encrypt or remove it",
                ));
        }
        return Ok(None);
    }
    let cipher = match &raw.cipher {
        Some(c) => parse_cipher(c).map_err(bad(i, S::Cipher))?,
        None => Cipher::default(),
    };
    let needs_both = |s: Setting| {
        Problem::at(i, s)
            .text("an encrypted line needs ")
            .key(S::EncKey)
            .text(" and ")
            .key(S::AuthKey)
            .text(" (0x + hex, the same on both ends)")
    };
    let enc_key = raw.enc_key.ok_or_else(|| needs_both(S::EncKey))?;
    let auth_key = raw.auth_key.ok_or_else(|| needs_both(S::AuthKey))?;
    let mut esp = Esp::new(cipher, enc_key, auth_key);
    if let Some(k) = &raw.esp_keying {
        esp.keying = parse_keying(k).map_err(bad(i, S::EspKeying))?;
    }
    if let Some(secs) = raw.esp_rekey {
        if esp.keying == Keying::Static {
            return Err(Problem::at(i, S::EspRekey)
                .text("applies to epoch keying only (static keys never change); remove it or ")
                .key(S::EspKeying));
        }
        esp.rekey = parse_rekey(secs).map_err(bad(i, S::EspRekey))?;
    }
    Ok(Some(esp))
}

/// Whether an IP tunnel line's settings fit together: underlay family, the VIPs' family
/// carried by the type, GRE options on GRE types only, the IPv6 minimum MTU for types
/// that carry IPv6, ESP's limits, iproute2's `nopmtudisc` rules. `esp` is the setting
/// that asked for encryption.
fn check_ip_tunnel(
    i: usize,
    t: &IpTunnel,
    esp: Setting,
    peer_ip: IpAddr,
    local_vip: IpAddr,
    mtu: Option<u32>,
) -> Result<(), Problem> {
    use Setting as S;
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
        return Err(Problem::new(
            i,
            S::PeerIp,
            format!(
                "type {kind} runs over {want} but peer address {peer_ip} is not; use an \
                 {want} peer address, or type {alt} for this peer (types over {want}: {other})"
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
        return Err(Problem::new(
            i,
            S::LocalVip,
            format!(
                "type {kind} does not carry {fam}, so its VIPs cannot be {fam} addresses; use \
                 VIPs of the family it carries, or a type that carries {fam} ({carriers})"
            ),
        ));
    }
    if !kind.is_gre() {
        let g = &t.gre;
        let set = [
            (g.ikey.is_some(), S::Ikey),
            (g.okey.is_some(), S::Okey),
            (g.iseq, S::Iseq),
            (g.oseq, S::Oseq),
            (g.icsum, S::Icsum),
            (g.ocsum, S::Ocsum),
        ];
        if let Some(&(_, s)) = set.iter().find(|(on, _)| *on) {
            return Err(Problem::new(
                i,
                s,
                format!(
                    "type {kind} has no GRE header; keys, sequence numbers and checksums \
                     apply to gre and gre6 only"
                ),
            ));
        }
    }
    if let Some(m) = mtu {
        if kind.carries(IpVersion::V6) && m < Mtu::MIN_V6 {
            return Err(Problem::new(
                i,
                S::Mtu,
                format!(
                    "MTU {m} is below {}, the minimum for type {kind}, which carries IPv6 \
                     (RFC 8200 §5)",
                    Mtu::MIN_V6
                ),
            ));
        }
    }
    if t.esp.is_some() {
        if !kind.is_gre() {
            return Err(Problem::at(i, esp)
                .text(format!(
                    "type {kind} cannot be encrypted; ESP protects gre and gre6 lines "
                ))
                .either(
                    "(type \"gre\" with encrypt = true, or type \"ipsec\")",
                    "(--type gre --encrypt, or --type ipsec)",
                ));
        }
        if t.keepalive.is_some() {
            return Err(Problem::at(i, esp)
                .text("keepalive probes are not offered on encrypted lines yet; remove ")
                .key(S::Keepalive)
                .text(" or ")
                .key(esp));
        }
    }
    if !t.pmtudisc {
        if kind.outer_ipv6() {
            return Err(Problem::new(
                i,
                S::Pmtudisc,
                format!(
                    "type {kind} runs over IPv6, which never fragments on the way; pmtudisc \
                     applies to ipip, gre and sit only"
                ),
            ));
        }
        if t.ttl != Ttl::Inherit {
            return Err(Problem::at(i, S::Pmtudisc)
                .text(
                    "nopmtudisc needs ttl inherit (as iproute2: a fixed TTL with nopmtudisc \
                     is refused); ",
                )
                .either(
                    "set ttl = \"inherit\" or remove pmtudisc = false",
                    "add --ttl inherit or drop --nopmtudisc",
                ));
        }
    }
    Ok(())
}

/// The rules between lines. Each clash is reported at the later line (a request's line
/// is the last), naming the earlier one.
fn check_across(lines: &[Converted]) -> Result<(), Problem> {
    use Setting as S;
    let mut names = HashSet::new();
    let mut vips: HashMap<IpAddr, (usize, Setting)> = HashMap::new();
    let mut ports: HashMap<(&str, u16), usize> = HashMap::new();
    // IP tunnel lines are told apart on receive by peer, protocol and GRE key.
    let mut demux: HashMap<(&str, IpAddr, u8, Option<u32>), usize> = HashMap::new();
    for (i, c) in lines.iter().enumerate() {
        let l = &c.line;
        if !names.insert(l.name.as_str()) {
            let taken = format!("a line named {} already exists; ", l.name);
            return Err(Problem::at(i, S::Name).text(taken).either(
                "names must be unique",
                format!(
                    "choose another name (or `twnode line delete {}` first)",
                    l.name
                ),
            ));
        }
        for (setting, vip) in [(S::LocalVip, l.local_vip), (S::PeerVip, l.peer_vip)] {
            if let Some((j, other)) = vips.insert(vip, (i, setting)) {
                let (file, request) = match other {
                    S::LocalVip => ("local_vip", "local VIP"),
                    _ => ("peer_vip", "peer VIP"),
                };
                return Err(Problem::at(i, setting)
                    .text(format!("{vip} is already the "))
                    .either(file, request)
                    .text(" of ")
                    .line(j)
                    .text("; every VIP on a node must be unique"));
            }
        }
        if let Some(t) = l.ip_tunnel() {
            // An encrypted line receives ESP (protocol 50), one per peer and parent.
            let (ikey, protocol) = match t.esp {
                Some(_) => (None, crate::wire::IpProtocol::Esp.number()),
                None => (t.gre.ikey.map(|k| k.0), t.kind.protocol().number()),
            };
            if let Some(j) = demux.insert((l.parent.as_str(), l.peer_ip, protocol, ikey), i) {
                let (setting, what) = match ikey {
                    _ if t.esp.is_some() => (c.esp, "ESP".to_string()),
                    Some(k) if t.kind.is_gre() => (S::Ikey, format!("GRE key {k}")),
                    None if t.kind.is_gre() => (S::Ikey, "no GRE key".to_string()),
                    _ => (S::Type, format!("IP protocol {protocol}")),
                };
                return Err(Problem::at(i, setting)
                    .line(j)
                    .text(format!(
                        " already receives {what} from {} on parent {}; received packets \
                         could not be told apart: give the lines different keys ",
                        l.peer_ip, l.parent
                    ))
                    .either("(ikey, okey)", "(--key)")
                    .text(", peers or parents"));
            }
        }
        if let Some(port) = l.wireguard().and_then(|w| w.listen_port) {
            if let Some(j) = ports.insert((l.parent.as_str(), port.get()), i) {
                return Err(Problem::at(i, S::ListenPort)
                    .text(format!(
                        "port {port} on parent {} is already used by ",
                        l.parent
                    ))
                    .line(j));
            }
        }
    }
    let line = |name: &str| {
        lines
            .iter()
            .map(|c| &c.line)
            .find(|l| l.name.as_str() == name)
    };
    // Cycles: walk up from every line; more steps than lines means a loop.
    for (i, c) in lines.iter().enumerate() {
        let l = &c.line;
        let mut cur = l;
        let mut path = vec![l.name.to_string()];
        while let Some(p) = line(cur.parent.as_str()) {
            path.push(p.name.to_string());
            if p.name == l.name || path.len() > lines.len() + 1 {
                return Err(Problem::new(
                    i,
                    S::Parent,
                    format!("the parent graph has a cycle: {}", path.join(" -> ")),
                ));
            }
            cur = p;
        }
    }
    // AF_XDP sends on an Ethernet device; a line on a line sends into its parent's
    // TUN device.
    for (i, c) in lines.iter().enumerate() {
        let l = &c.line;
        if l.ip_tunnel().is_some_and(|t| t.af_xdp) && line(l.parent.as_str()).is_some() {
            return Err(Problem::at(i, S::AfXdp)
                .text(format!(
                    "AF_XDP sends on an Ethernet device, but the parent {} is a line (its \
                     packets go into that line's TUN device); remove ",
                    l.parent
                ))
                .either("af_xdp", "--af-xdp (ip_tunnel.af_xdp in the config file)")
                .text(" or give the line an interface as its parent"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use std::time::Duration;

    use super::*;
    use crate::config::esp::EspKey;
    use crate::config::setting::Flags;
    use crate::config::testdata::{cfg, err, GRE_TOML, SERVER_TOML};
    use crate::wire::gre::Key;
    use proptest::prelude::*;

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

    const IPSEC_TOML: &str = r#"
[[line]]
name = "sec"
parent = "eth0"
peer_ip = "198.51.100.20"
peer_vip = "10.9.0.2"
local_vip = "10.9.0.1"
type = "ipsec"

[line.ip_tunnel]
enc_key = "0x9f8e7d6c5b4a39281716050403020100aabbccddeeff0011"
auth_key = "0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f"
"#;

    #[test]
    fn type_ipsec_in_the_file_means_gre_with_encrypt() {
        let ipsec = cfg(IPSEC_TOML).unwrap();
        let gre = cfg(&IPSEC_TOML.replace(
            "type = \"ipsec\"\n\n[line.ip_tunnel]\n",
            "type = \"gre\"\n\n[line.ip_tunnel]\nencrypt = true\n",
        ))
        .unwrap();
        assert_eq!(ipsec, gre);
        let t = ipsec.lines[0].ip_tunnel().unwrap();
        assert_eq!(t.kind, TunnelType::Gre);
        assert!(t.esp.is_some());
        // Written back in the documented form, which reads back the same.
        let written = ipsec.to_toml();
        assert!(
            written.contains("type = \"gre\"") && written.contains("encrypt = true"),
            "{written}"
        );
        assert_eq!(cfg(&written).unwrap(), ipsec);
        // Where the type asked for the encryption, its problems name the type.
        let msg =
            err(&IPSEC_TOML.replace("[line.ip_tunnel]\n", "[line.ip_tunnel]\nkeepalive = 5\n"));
        assert!(
            msg.starts_with("line[0] (\"sec\").type: keepalive probes")
                && msg.ends_with("remove ip_tunnel.keepalive or type"),
            "{msg}"
        );
    }

    #[test]
    fn missing_esp_keys_in_the_file_are_named_by_the_files_keys() {
        let gre = IPSEC_TOML
            .replace("type = \"ipsec\"", "type = \"gre\"")
            .replace("[line.ip_tunnel]\n", "[line.ip_tunnel]\nencrypt = true\n");
        let msg = err(&gre.replace("enc_key", "# enc_key"));
        assert!(
            msg.contains("line[0] (\"sec\").ip_tunnel.enc_key")
                && msg.contains("ip_tunnel.auth_key"),
            "{msg}"
        );
        assert!(!msg.contains("--"), "a file's error names no flag: {msg}");
        let msg = err(&IPSEC_TOML.replace("auth_key", "# auth_key"));
        assert!(
            msg.contains("line[0] (\"sec\").ip_tunnel.auth_key")
                && msg.contains("ip_tunnel.enc_key"),
            "{msg}"
        );
        assert!(!msg.contains("--"), "a file's error names no flag: {msg}");
    }

    #[test]
    fn unsupported_type_lists_ipsec_too() {
        let msg = err(&SERVER_TOML.replacen("type = \"wireguard\"", "type = \"pptp\"", 1));
        assert!(msg.contains("gre6, ipsec"), "{msg}");
    }

    /// The line create argument that `p` names, as a request with no flags of its own.
    fn flag_of(p: Problem) -> String {
        match p.render(&["x"], Origin::Request(&Flags::default())) {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("{other:?}"),
        }
    }

    /// `esp_settings` of a table with these ESP keys.
    fn esp_of(
        encrypt: Option<Setting>,
        cipher: Option<&str>,
        enc_key: Option<EspKey>,
        auth_key: Option<EspKey>,
    ) -> Result<Option<Esp>, Problem> {
        let raw = RawIpTunnel {
            encrypt: encrypt.is_some(),
            cipher: cipher.map(str::to_string),
            enc_key,
            auth_key,
            ..RawIpTunnel::default()
        };
        esp_settings(0, encrypt, &raw)
    }

    #[test]
    fn encrypt_needs_both_keys_and_keys_need_encrypt() {
        let k = EspKey::parse("0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f").unwrap();
        let on = Some(Setting::Encrypt);
        assert_eq!(esp_of(None, None, None, None).unwrap(), None);
        assert_eq!(
            flag_of(esp_of(on, None, Some(k), None).unwrap_err()),
            "--auth-key"
        );
        assert_eq!(
            flag_of(esp_of(on, None, None, Some(k)).unwrap_err()),
            "--enc-key"
        );
        assert_eq!(
            flag_of(esp_of(None, None, Some(k), None).unwrap_err()),
            "--enc-key"
        );
        assert_eq!(
            flag_of(esp_of(None, Some("aes-256-gcm"), None, None).unwrap_err()),
            "--cipher"
        );
        let p = esp_of(on, Some("des"), Some(k), Some(k)).unwrap_err();
        let msg = p.render(&["x"], Origin::File).to_string();
        assert!(msg.contains("chacha20-poly1305, aes-256-gcm"), "{msg}");
        let e = esp_of(on, Some("aes-256-gcm"), Some(k), Some(k))
            .unwrap()
            .unwrap();
        assert_eq!(e.cipher, Cipher::Aes256Gcm);
    }

    #[test]
    fn esp_keying_defaults_to_epoch_and_rekey_applies_to_epochs_only() {
        let k = EspKey::parse("0x1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f").unwrap();
        let on = Some(Setting::Encrypt);
        let table = |keying: Option<&str>, rekey: Option<u32>, encrypt: bool| RawIpTunnel {
            encrypt,
            enc_key: Some(k),
            auth_key: Some(k),
            esp_keying: keying.map(str::to_string),
            esp_rekey: rekey,
            ..RawIpTunnel::default()
        };
        let e = esp_settings(0, on, &table(None, None, true))
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.keying, e.rekey),
            (Keying::Epoch, Duration::from_secs(3600))
        );
        let e = esp_settings(0, on, &table(Some("static"), None, true))
            .unwrap()
            .unwrap();
        assert_eq!(e.keying, Keying::Static);
        let e = esp_settings(0, on, &table(None, Some(30), true))
            .unwrap()
            .unwrap();
        assert_eq!(e.rekey, Duration::from_secs(30));
        let p = esp_settings(0, on, &table(Some("static"), Some(30), true)).unwrap_err();
        assert_eq!(flag_of(p), "--esp-rekey");
        let p = esp_settings(0, on, &table(Some("static"), Some(30), true)).unwrap_err();
        let msg = p.render(&["x"], Origin::File).to_string();
        assert!(
            msg.contains("ip_tunnel.esp_keying") && msg.contains("epoch"),
            "{msg}"
        );
        let p = esp_settings(0, on, &table(Some("ike"), None, true)).unwrap_err();
        assert_eq!(flag_of(p), "--esp-keying");
        let p = esp_settings(0, on, &table(None, Some(0), true)).unwrap_err();
        assert_eq!(flag_of(p), "--esp-rekey");
        let mut plain = table(Some("static"), None, false);
        plain.enc_key = None;
        plain.auth_key = None;
        let p = esp_settings(0, None, &plain).unwrap_err();
        assert_eq!(flag_of(p), "--esp-keying");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
            let _ = cfg(&s);
        }
    }
}
