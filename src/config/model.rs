//! The validated configuration: lines of newtypes that cannot hold a bad value, built
//! from [`super::raw`] by `TryFrom` (see [`super::validate`]), the queries on the parent
//! graph (children, depth, parents-first order), and the way back to raw form for
//! writing.

use std::net::IpAddr;

pub use super::iptunnel::IpTunnel;
use super::names::{Mode, Mtu, ParentName, Port};
use super::policy::{Policy, RawPolicy, Reader};
use super::raw::{RawConfig, RawLine, RawWireGuard};
use super::setting::{Flags, Origin};
use super::{ConfigError, LineName};
use crate::tunnel::keys::{PresharedKey, PrivateKey, PublicKey};

/// Persistent keepalive when the config does not say: keeps NAT mappings open.
pub const DEFAULT_KEEPALIVE: u16 = 25;

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
    /// WireGuard's optional preshared key (secret), the same on both ends.
    pub preshared_key: Option<PresharedKey>,
    /// Prefixes routed to the peer besides its VIP, of the VIPs' family, without host
    /// bits (WireGuard's AllowedIPs; the peer VIP's own prefix is implied).
    pub allowed_ips: Vec<ipnet::IpNet>,
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
    /// The `type` key's spelling, as written back: an encrypted GRE line is `gre` with
    /// `encrypt = true`, however it was asked for (`type = "ipsec"`, `--type ipsec`).
    pub fn type_name(&self) -> &'static str {
        match self {
            LineKind::WireGuard(_) => "wireguard",
            LineKind::IpTunnel(t) => t.kind.as_str(),
        }
    }
}

/// The tunnel types `type` and `--type` accept.
pub const SUPPORTED_TYPES: &[&str] = &[
    "wireguard",
    "ipip",
    "gre",
    "sit",
    "ip6ip6",
    "ipip6",
    "gre6",
    IPSEC,
];

/// TrueWord Node's name for GRE over IPsec: the type `gre` with ESP (`encrypt = true`).
pub const IPSEC: &str = "ipsec";

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
            preshared_key: wg.preshared_key.clone(),
            allowed_ips: wg.allowed_ips.iter().map(|n| n.to_string()).collect(),
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
    /// Policy groups, the default exit and the failover settings.
    pub policy: Policy,
    /// The Prometheus endpoint, when `[metrics]` asks for one.
    pub metrics: Option<super::metrics::Metrics>,
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
        let raw = self.to_raw();
        let body = toml::to_string(&raw).unwrap_or_default();
        format!(
            "# twnode configuration. Written by `twnode line create/delete`; you may edit it\n\
             # by hand and reload with `systemctl reload twnode` (SIGHUP). Holds private keys:\n\
             # keep it mode 0600.\n\n{body}"
        )
    }

    /// A copy with the line a `line create` request asked for added last, and that line.
    /// The whole result is validated again; problems are named by the request's `flags`
    /// and other lines by their names.
    pub fn with_line(&self, line: RawLine, flags: &Flags) -> Result<(Config, Line), ConfigError> {
        let mut raw = self.to_raw();
        raw.lines.push(line);
        let config = Config::from_raw(raw, Origin::Request(flags))?;
        // Validation keeps every line, in order: the new one comes after ours.
        let line = config.lines[self.lines.len()].clone();
        Ok((config, line))
    }

    /// A copy with line `name`'s raw form changed by `edit` (a `wg set`), the whole
    /// validated again as a request would be; problems name the line's keys.
    pub fn with_edited_line(
        &self,
        name: &str,
        edit: impl FnOnce(&mut RawLine),
    ) -> Result<Config, ConfigError> {
        let mut raw = self.to_raw();
        if let Some(line) = raw.lines.iter_mut().find(|l| l.name == name) {
            edit(line);
        }
        Config::from_raw(raw, Origin::Request(&Flags::default()))
    }

    /// A copy without the named lines (and their costs). The caller has taken them
    /// out of the policy groups first.
    pub fn without(&self, names: &[LineName]) -> Config {
        let mut policy = self.policy.clone();
        policy.costs.retain(|l, _| !names.contains(l));
        Config {
            lines: self
                .lines
                .iter()
                .filter(|l| !names.contains(&l.name))
                .cloned()
                .collect(),
            policy,
            metrics: self.metrics,
        }
    }

    /// A copy with `policy` (a request's edit of [`Policy::to_raw`]) as its policy part,
    /// validated against the lines; problems name the group.
    pub fn with_policy(&self, policy: &RawPolicy) -> Result<Config, ConfigError> {
        let policy = super::policy::validate(policy, &self.lines, Reader::Request)?;
        Ok(Config {
            policy,
            ..self.clone()
        })
    }

    fn to_raw(&self) -> RawConfig {
        let policy = self.policy.to_raw();
        RawConfig {
            lines: self.lines.iter().map(Line::to_raw).collect(),
            groups: policy.groups,
            default_exit: policy.default_exit,
            failover: policy.failover,
            metrics: self.metrics.map(super::metrics::Metrics::to_raw),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::config::testdata::{cfg, SERVER_TOML};

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
}
