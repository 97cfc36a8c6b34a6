//! The validated configuration: newtypes that cannot hold a bad value, built from
//! [`super::raw`] by `TryFrom`, and turned back into raw form for writing.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::keys::{PrivateKey, PublicKey};
use super::raw::{RawConfig, RawLine, RawWireGuard};
use super::ConfigError;

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

/// What a line carries its packets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// WireGuard over UDP.
    WireGuard(WireGuard),
}

impl LineKind {
    /// The `type` key's spelling.
    pub fn type_name(&self) -> &'static str {
        match self {
            LineKind::WireGuard(_) => "wireguard",
        }
    }
}

/// The tunnel types `type` accepts today.
pub const SUPPORTED_TYPES: &[&str] = &["wireguard"];

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

    /// Whether any private key is stored.
    pub fn has_private_keys(&self) -> bool {
        self.lines.iter().any(|l| l.wireguard().is_some())
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
            LineKind::WireGuard(convert_wireguard(&key, wg)?)
        }
        other => {
            return Err(ConfigError::invalid(
                format!("{key}.type"),
                format!(
                    "type {other:?} is not supported; supported: {}",
                    SUPPORTED_TYPES.join(", ")
                ),
            ))
        }
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
        assert!(msg.contains("peer_ip") && msg.contains("line 5"), "{msg}");
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
