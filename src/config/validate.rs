//! Raw configuration -> model: every rule a line must follow. Per line: names,
//! addresses, MTU, type and its table, the IP tunnel options that must fit together;
//! across lines: unique names, VIPs and ports, IP tunnels whose packets can be told
//! apart, no cycle in the parent graph, AF_XDP only on an interface.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::esp as esp_cfg;
use super::iptunnel::{keepalive, parse_key, parse_tos, parse_ttl, IpTunnel};
use super::model::{Config, Line, LineKind, WireGuard, DEFAULT_KEEPALIVE, SUPPORTED_TYPES};
use super::names::{LineName, Mode, Mtu, Port};
use super::raw::{IntOrText, RawConfig, RawIpTunnel, RawLine, RawWireGuard};
use super::ConfigError;
use crate::tunnel::gre::GreOptions;
use crate::tunnel::iptunnel::{IpVersion, Tos, Ttl, TunnelType};

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

#[cfg(test)]
mod test {
    use super::*;
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

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
            let _ = cfg(&s);
        }
    }
}
