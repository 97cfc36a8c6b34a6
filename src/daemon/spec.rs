//! `line create`'s arguments turned into a [`Line`]: the checks the command line's
//! spelling needs (flag names in errors), then the model's own.

use crate::config::esp::EspKey;
use crate::config::iptunnel::{self as cfg, IpTunnel};
use crate::config::validate::check_ip_tunnel;
use crate::config::{self, Line, LineKind, LineName, Mode, PrivateKey, WireGuard};
use crate::control::{IpTunnelArgs, LineSpec};
use crate::tunnel::gre::GreOptions;
use crate::tunnel::iptunnel::{self, TunnelType};
use crate::wire::gre::Key;

/// Builds a line from `line create`'s arguments, generating keys for a server.
pub(super) fn line_from_spec(spec: LineSpec) -> Result<(Line, bool), String> {
    let name: LineName = spec
        .name
        .parse()
        .map_err(|e: String| format!("<name>: {e}"))?;
    let parent: LineName = spec
        .parent
        .parse()
        .map_err(|e: String| format!("<parent>: {e}"))?;
    if spec.kind == "ipsec" {
        // TrueWord Node's name for GRE over IPsec: gre with ESP.
        let mut spec = spec;
        spec.ip_tunnel.encrypt = true;
        return ip_tunnel_from_spec(spec, TunnelType::Gre, name, parent).map(|l| (l, false));
    }
    if let Some(kind) = TunnelType::from_name(&spec.kind) {
        return ip_tunnel_from_spec(spec, kind, name, parent).map(|l| (l, false));
    }
    if spec.kind != "wireguard" {
        return Err(format!(
            "--type {}: not supported; supported: {}",
            spec.kind,
            config::model::SUPPORTED_TYPES.join(", ")
        ));
    }
    if spec.ip_tunnel.any() {
        return Err(
            "--key, --seq, --csum, --ttl, --tos, --[no]pmtudisc, --encrypt, --cipher, \
             --enc-key, --auth-key and --af-xdp apply to the IP tunnel types (ipip, gre, \
             sit, ip6ip6, ipip6, gre6; ipsec), not to wireguard"
                .into(),
        );
    }
    if spec.keepalive_retries.is_some() {
        return Err(
            "--keepalive SECS,RETRIES: RETRIES applies to IP tunnel keepalives; a wireguard \
             line takes --keepalive SECS"
                .into(),
        );
    }
    let mode: Mode = spec
        .mode
        .as_deref()
        .ok_or("--mode server|client is required for a wireguard line")?
        .parse()
        .map_err(|e: String| format!("--mode: {e}"))?;
    let parse_private = |s: &str| {
        s.parse::<PrivateKey>()
            .map_err(|e| format!("--private-key: {e}"))
    };
    let parse_public = |s: &str| {
        s.parse::<config::PublicKey>()
            .map_err(|e| format!("--peer-pubkey: {e}"))
    };
    let port = |flag: &str, v: Option<u32>| {
        v.map(config::Port::new)
            .transpose()
            .map_err(|e| format!("{flag}: {e}"))
    };
    let listen_port = port("--listen-port", spec.listen_port)?;
    let peer_port = port("--peer-port", spec.peer_port)?;
    let (private_key, peer_public_key, peer_private_key, generated) = match mode {
        Mode::Client => {
            let private = parse_private(spec.private_key.as_deref().ok_or(
                "--private-key is required for a client (paste the server's peer command)",
            )?)?;
            let public = parse_public(spec.peer_pubkey.as_deref().ok_or(
                "--peer-pubkey is required for a client (paste the server's peer command)",
            )?)?;
            if peer_port.is_none() {
                return Err(
                    "--peer-port is required for a client: the server's listen port, printed in its peer command"
                        .into(),
                );
            }
            (private, public, None, false)
        }
        Mode::Server => {
            if listen_port.is_none() {
                return Err("--listen-port is required for a server".into());
            }
            match (spec.private_key.as_deref(), spec.peer_pubkey.as_deref()) {
                (None, None) => {
                    let ours = PrivateKey::generate();
                    let theirs = PrivateKey::generate();
                    let public = theirs.public_key();
                    (ours, public, Some(theirs), true)
                }
                (Some(k), Some(p)) => (parse_private(k)?, parse_public(p)?, None, false),
                _ => {
                    return Err(
                        "give both --private-key and --peer-pubkey, or neither (twnode then generates both key pairs)"
                            .into(),
                    )
                }
            }
        }
    };
    let persistent_keepalive = match spec.keepalive {
        None => config::model::DEFAULT_KEEPALIVE,
        Some(v) => u16::try_from(v).map_err(|_| format!("--keepalive {v}: above 65535 seconds"))?,
    };
    let mtu = spec
        .mtu
        .map(|m| config::Mtu::new(m, spec.local_vip.is_ipv6()))
        .transpose()
        .map_err(|e| format!("--mtu: {e}"))?;
    let line = Line {
        name,
        parent,
        peer_ip: spec.peer_ip,
        peer_vip: spec.peer_vip,
        local_vip: spec.local_vip,
        mtu,
        kind: LineKind::WireGuard(WireGuard {
            mode,
            listen_port,
            peer_port,
            private_key,
            peer_public_key,
            peer_private_key,
            persistent_keepalive,
        }),
    };
    Ok((line, generated))
}

/// Builds an IP tunnel line from `line create`'s arguments; errors name the flag.
fn ip_tunnel_from_spec(
    spec: LineSpec,
    kind: TunnelType,
    name: LineName,
    parent: LineName,
) -> Result<Line, String> {
    let wireguard_only = [
        ("--mode", spec.mode.is_some()),
        ("--listen-port", spec.listen_port.is_some()),
        ("--peer-port", spec.peer_port.is_some()),
        ("--private-key", spec.private_key.is_some()),
        ("--peer-pubkey", spec.peer_pubkey.is_some()),
    ];
    if let Some((flag, _)) = wireguard_only.iter().find(|(_, given)| *given) {
        return Err(format!(
            "{flag} applies to wireguard lines; a {kind} line has no mode, ports or keys \
             (both ends run the same command, see `twnode line show-peer`)"
        ));
    }
    let a: &IpTunnelArgs = &spec.ip_tunnel;
    let key = |flag: &str, v: &Option<String>| -> Result<Option<Key>, String> {
        v.as_deref()
            .map(cfg::parse_key)
            .transpose()
            .map_err(|e| format!("{flag}: {e}"))
    };
    let (ikey, okey) = match (&a.key, &a.ikey, &a.okey) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err("give --key, or --ikey and --okey, not both".into())
        }
        (Some(_), None, None) => {
            let k = key("--key", &a.key)?;
            (k, k)
        }
        (None, _, _) => (key("--ikey", &a.ikey)?, key("--okey", &a.okey)?),
    };
    let ttl = match &a.ttl {
        Some(t) => cfg::parse_ttl(t).map_err(|e| format!("--ttl: {e}"))?,
        None => iptunnel::Ttl::default_for(kind),
    };
    let tos = match &a.tos {
        Some(t) => cfg::parse_tos(t).map_err(|e| format!("--tos: {e}"))?,
        None => iptunnel::Tos::default(),
    };
    let keepalive = cfg::keepalive(spec.keepalive.unwrap_or(0), spec.keepalive_retries)
        .map_err(|(_, e)| format!("--keepalive: {e}"))?;
    let esp_key = |flag: &str, v: &Option<crate::control::Secret>| {
        v.as_ref()
            .map(|s| EspKey::parse(&s.0))
            .transpose()
            .map_err(|e| format!("{flag}: the key {e}"))
    };
    let esp = config::esp::from_parts(
        a.encrypt,
        a.cipher.as_deref(),
        esp_key("--enc-key", &a.enc_key)?,
        esp_key("--auth-key", &a.auth_key)?,
    )
    .map_err(|(_, flag, e)| format!("{flag}: {e}"))?;
    let t = IpTunnel {
        esp,
        kind,
        gre: GreOptions {
            ikey,
            okey,
            iseq: a.seq || a.iseq,
            oseq: a.seq || a.oseq,
            icsum: a.csum || a.icsum,
            ocsum: a.csum || a.ocsum,
        },
        ttl,
        tos,
        pmtudisc: a.pmtudisc.unwrap_or(true),
        keepalive,
        af_xdp: a.af_xdp,
    };
    check_ip_tunnel(&t, spec.peer_ip, spec.local_vip, spec.mtu)
        .map_err(|(setting, e)| format!("{}: {e}", setting.flag))?;
    let mtu = spec
        .mtu
        .map(|m| config::Mtu::new(m, spec.local_vip.is_ipv6()))
        .transpose()
        .map_err(|e| format!("--mtu: {e}"))?;
    Ok(Line {
        name,
        parent,
        peer_ip: spec.peer_ip,
        peer_vip: spec.peer_vip,
        local_vip: spec.local_vip,
        mtu,
        kind: LineKind::IpTunnel(t),
    })
}
