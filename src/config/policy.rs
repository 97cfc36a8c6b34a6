//! Policy routing in the config: `[[policy]]` groups (which destinations leave through
//! which exit lines, from whom, at which rule priority), the `[default_exit]`, and the
//! `[failover]` settings (probing, hysteresis, line costs). Raw serde structs, their
//! validation against the lines, the validated model, and the way back to raw form.
//!
//! Rules: a group's exits are lines of this config; priorities are unique in 100-899
//! (10, 80 and 900 belong to the protection rules, the VIP table and the default exit);
//! every destination must be one the exits can carry, every probe target one their VIPs
//! can reach; a group must not route a line's own underlay peer into that line. A
//! problem names the group and the key: `policy[1] ("asia").exits` in a file, `policy
//! group asia` for a request.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::Line;
use super::names::LineName;
use super::ConfigError;
use crate::policy::{Mode, Tuning};
use crate::tunnel::iptype::IpVersion;
use crate::wire::network;

/// Lowest priority a group may take (rules 10 and 80 come before).
pub const MIN_PRIORITY: u32 = 100;
/// Highest priority a group may take (the default exit's rule is 900).
pub const MAX_PRIORITY: u32 = 899;
/// Rule preference and table of the default exit.
pub const DEFAULT_EXIT_PRIORITY: u32 = 900;
/// Exits a group may list.
pub const MAX_EXITS: usize = 16;
/// Highest weight of a balancing exit.
pub const MAX_WEIGHT: u32 = 100;
/// Highest cost of a line (TrueWord Node's range: 0-100, half a point each).
pub const MAX_COST: u32 = 100;

/// `[[policy]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub name: String,
    /// Lines, preferred first; `"line:weight"` makes the group balance.
    pub exits: Vec<String>,
    /// `all`, an address, a CIDR or an interface name; default `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub priority: u32,
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// `false` after `policy revoke`: kept, not installed.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub applied: bool,
    /// Probe targets; default: each exit's peer VIP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<IpAddr>,
}

/// `[default_exit]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaultExit {
    pub exits: Vec<String>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub applied: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<IpAddr>,
}

/// `[failover]`: every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailover {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_probes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmations: Option<u32>,
    /// Line costs (`line set-cost`), 0-100.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cost: BTreeMap<String, u32>,
}

/// The policy part of a file, raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawPolicy {
    pub groups: Vec<RawGroup>,
    pub default_exit: Option<RawDefaultExit>,
    pub failover: Option<RawFailover>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A destination prefix: an address with no bits set beyond its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` falls inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addr.is_ipv4() == ip.is_ipv4() && network(ip, self.prefix) == self.addr
    }

    /// The whole address space of `ip`'s family (`0.0.0.0/0` or `::/0`).
    pub fn everything(ipv6: bool) -> Cidr {
        let addr = if ipv6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        Cidr { addr, prefix: 0 }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `192.0.2.0/24`, `2001:db8::/32`, or a bare address (a host).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR (e.g. 192.0.2.0/24 or 2001:db8::/32)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0-{max}"))?,
        };
        let net = network(addr, prefix);
        if net != addr {
            return Err(format!(
                "{s:?} has bits set beyond its /{prefix}; did you mean {net}/{prefix}?"
            ));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whose packets a group steers (`--from`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    All,
    /// Packets from this source prefix (an address is a /32 or /128).
    Prefix(Cidr),
    /// Packets that came in through this interface.
    Iface(LineName),
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Source, String> {
        let s = s.trim();
        if s == "all" {
            return Ok(Source::All);
        }
        if s.contains('/') || s.parse::<IpAddr>().is_ok() {
            return s.parse().map(Source::Prefix);
        }
        LineName::try_from(s.to_string())
            .map(Source::Iface)
            .map_err(|e| format!("{s:?} is neither all, an address, a CIDR nor an interface: {e}"))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::All => f.write_str("all"),
            Source::Prefix(c) => write!(f, "{c}"),
            Source::Iface(i) => write!(f, "{i}"),
        }
    }
}

/// One exit of a group, with its balancing weight (1 when not given).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Exit {
    pub line: LineName,
    pub weight: u32,
}

/// What a group or the default exit chooses among, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exits {
    /// Preferred first.
    pub list: Vec<Exit>,
    /// Balance when a weight was given, else failover.
    pub mode: Mode,
    /// Where its probes go; empty: each exit's peer VIP.
    pub targets: Vec<IpAddr>,
    /// Installed (`policy apply`) or kept aside (`policy revoke`).
    pub applied: bool,
}

impl Exits {
    /// Whether `line` is one of the exits.
    pub fn uses(&self, line: &str) -> bool {
        self.list.iter().any(|e| e.line.as_str() == line)
    }

    /// The exits as written: `b1`, or `b1:2` in a balancing group.
    pub fn specs(&self) -> Vec<String> {
        self.list
            .iter()
            .map(|e| match self.mode {
                Mode::Balance => format!("{}:{}", e.line, e.weight),
                Mode::Failover => e.line.to_string(),
            })
            .collect()
    }
}

/// A validated `[[policy]]` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub exits: Exits,
    pub from: Source,
    /// Rule preference and table number.
    pub priority: u32,
    pub cidrs: Vec<Cidr>,
}

/// The validated policy part of the config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub groups: Vec<Group>,
    /// Everything not matched before: rule and table 900, `0.0.0.0/0` (or `::/0`).
    pub default_exit: Option<Exits>,
    pub tuning: Tuning,
    /// Line costs, for the score.
    pub costs: BTreeMap<LineName, u8>,
}

impl Policy {
    /// A line's cost (0 when not set).
    pub fn cost(&self, line: &str) -> u8 {
        self.costs
            .iter()
            .find(|(l, _)| l.as_str() == line)
            .map_or(0, |(_, c)| *c)
    }

    /// The groups (and `default` for the default exit) that list `line` as an exit.
    pub fn users_of(&self, line: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .groups
            .iter()
            .filter(|g| g.exits.uses(line))
            .map(|g| g.name.clone())
            .collect();
        if self.default_exit.as_ref().is_some_and(|d| d.uses(line)) {
            users.push("default".to_string());
        }
        users
    }

    /// The raw form, for writing and for requests that edit it.
    pub fn to_raw(&self) -> RawPolicy {
        let t = &self.tuning;
        let d = Tuning::DEFAULT;
        let ms = |v: Duration, dv: Duration| (v != dv).then_some(v.as_millis() as u32);
        let differs = |v: u32, dv: u32| (v != dv).then_some(v);
        let failover = RawFailover {
            interval_ms: ms(t.interval, d.interval),
            timeout_ms: ms(t.timeout, d.timeout),
            lost_probes: differs(t.lost_probes, d.lost_probes),
            window: differs(t.window, d.window),
            threshold: differs(t.threshold, d.threshold),
            confirmations: differs(t.confirmations, d.confirmations),
            cost: self
                .costs
                .iter()
                .map(|(l, c)| (l.to_string(), u32::from(*c)))
                .collect(),
        };
        RawPolicy {
            groups: self
                .groups
                .iter()
                .map(|g| RawGroup {
                    name: g.name.clone(),
                    exits: g.exits.specs(),
                    from: (g.from != Source::All).then(|| g.from.to_string()),
                    priority: g.priority,
                    cidrs: g.cidrs.iter().map(Cidr::to_string).collect(),
                    applied: g.exits.applied,
                    targets: g.exits.targets.clone(),
                })
                .collect(),
            default_exit: self.default_exit.as_ref().map(|d| RawDefaultExit {
                exits: d.specs(),
                applied: d.applied,
                targets: d.targets.clone(),
            }),
            failover: (failover != RawFailover::default()).then_some(failover),
        }
    }
}

/// Who reads a problem: the file's TOML keys, or the person who typed a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    File,
    Request,
}

/// A broken rule: in which group (`None`: the default exit or `[failover]`), at which
/// key, and the message.
struct Problem {
    at: Place,
    key: &'static str,
    message: String,
}

#[derive(Clone, Copy)]
enum Place {
    Group(usize),
    DefaultExit,
    Failover,
}

impl Problem {
    fn render(self, raw: &RawPolicy, reader: Reader) -> ConfigError {
        let group_name = |i: usize| raw.groups.get(i).map_or("?", |g| g.name.as_str());
        let key = match (self.at, reader) {
            (Place::Group(i), Reader::File) => {
                format!("policy[{i}] ({:?}).{}", group_name(i), self.key)
            }
            (Place::Group(i), Reader::Request) => format!("policy group {}", group_name(i)),
            (Place::DefaultExit, Reader::File) => format!("default_exit.{}", self.key),
            (Place::DefaultExit, Reader::Request) => "default exit".to_string(),
            (Place::Failover, _) => format!("failover.{}", self.key),
        };
        ConfigError::Invalid {
            key,
            message: self.message,
        }
    }
}

/// Validates the policy part against the config's `lines`.
pub fn validate(raw: &RawPolicy, lines: &[Line], reader: Reader) -> Result<Policy, ConfigError> {
    check(raw, lines).map_err(|p| p.render(raw, reader))
}

fn check(raw: &RawPolicy, lines: &[Line]) -> Result<Policy, Problem> {
    let failover = raw.failover.clone().unwrap_or_default();
    let tuning = check_tuning(&failover)?;
    let mut costs = BTreeMap::new();
    for (line, &cost) in &failover.cost {
        let bad = |message: String| Problem {
            at: Place::Failover,
            key: "cost",
            message,
        };
        let name = known_line(lines, line).map_err(bad)?;
        if cost > MAX_COST {
            return Err(bad(format!(
                "cost {cost} of line {line} is out of range 0-{MAX_COST}"
            )));
        }
        costs.insert(name.name.clone(), cost as u8);
    }
    let mut groups = Vec::with_capacity(raw.groups.len());
    let mut names = HashSet::new();
    let mut priorities: BTreeMap<u32, &str> = BTreeMap::new();
    for (i, g) in raw.groups.iter().enumerate() {
        let at = Place::Group(i);
        let bad = |key: &'static str| move |message: String| Problem { at, key, message };
        check_group_name(&g.name).map_err(bad("name"))?;
        if !names.insert(g.name.as_str()) {
            return Err(bad("name")(format!(
                "a group named {} already exists; group names must be unique",
                g.name
            )));
        }
        if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&g.priority) {
            return Err(bad("priority")(format!(
                "priority {} is out of range {MIN_PRIORITY}-{MAX_PRIORITY} (10, 80 and 900 \
                 are twnode's own rules)",
                g.priority
            )));
        }
        if let Some(other) = priorities.insert(g.priority, &g.name) {
            return Err(bad("priority")(format!(
                "priority {} is taken by group {other}; choose another (or leave it out: \
                 the next free one above the highest is used)",
                g.priority
            )));
        }
        let exits = check_exits(&g.exits, &g.targets, g.applied, lines, at)?;
        let from: Source = g
            .from
            .as_deref()
            .unwrap_or("all")
            .parse()
            .map_err(bad("from"))?;
        let mut cidrs: Vec<Cidr> = Vec::with_capacity(g.cidrs.len());
        for c in &g.cidrs {
            let cidr: Cidr = c.parse().map_err(bad("cidrs"))?;
            if cidrs.contains(&cidr) {
                return Err(bad("cidrs")(format!("{cidr} is listed twice")));
            }
            cidrs.push(cidr);
        }
        check_destinations(&cidrs, &from, &exits, lines).map_err(bad("cidrs"))?;
        groups.push(Group {
            name: g.name.clone(),
            exits,
            from,
            priority: g.priority,
            cidrs,
        });
    }
    let default_exit = match &raw.default_exit {
        None => None,
        Some(d) => {
            let at = Place::DefaultExit;
            let exits = check_exits(&d.exits, &d.targets, d.applied, lines, at)?;
            let v6 = exit_lines(&exits, lines)
                .next()
                .is_some_and(|l| l.carries_ipv6());
            if exit_lines(&exits, lines).any(|l| l.carries_ipv6() != v6) {
                return Err(Problem {
                    at,
                    key: "exits",
                    message: "the default exit's lines must all have IPv4 VIPs or all IPv6 \
                              VIPs (the default route is 0.0.0.0/0 or ::/0 by their family)"
                        .into(),
                });
            }
            Some(exits)
        }
    };
    Ok(Policy {
        groups,
        default_exit,
        tuning,
        costs,
    })
}

fn check_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 32 {
        return Err(format!("group name {name:?} must be 1 to 32 characters"));
    }
    if name == "default" {
        return Err("\"default\" names the default exit; choose another group name".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "group name {name:?} contains {c:?}; use letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

fn known_line<'a>(lines: &'a [Line], name: &str) -> Result<&'a Line, String> {
    lines
        .iter()
        .find(|l| l.name.as_str() == name)
        .ok_or_else(|| {
            format!("{name} is not a line of this node (`twnode line list` shows them); exits are lines")
        })
}

fn exit_lines<'a>(exits: &'a Exits, lines: &'a [Line]) -> impl Iterator<Item = &'a Line> + 'a {
    exits
        .list
        .iter()
        .filter_map(|e| lines.iter().find(|l| l.name == e.line))
}

/// Parses `line` or `line:weight` exits; a weight anywhere makes the group balance.
fn check_exits(
    specs: &[String],
    targets: &[IpAddr],
    applied: bool,
    lines: &[Line],
    at: Place,
) -> Result<Exits, Problem> {
    let bad = |key: &'static str| move |message: String| Problem { at, key, message };
    if specs.is_empty() {
        return Err(bad("exits")("no exit line given".into()));
    }
    if specs.len() > MAX_EXITS {
        return Err(bad("exits")(format!("at most {MAX_EXITS} exits")));
    }
    let mut list: Vec<Exit> = Vec::with_capacity(specs.len());
    let mut weighted = false;
    for spec in specs {
        let (name, weight) = match spec.split_once(':') {
            Some((n, w)) => {
                let w = w
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|w| (1..=MAX_WEIGHT).contains(w))
                    .ok_or_else(|| format!("{spec:?}: the weight after ':' must be 1-{MAX_WEIGHT}"))
                    .map_err(bad("exits"))?;
                weighted = true;
                (n.trim(), w)
            }
            None => (spec.trim(), 1),
        };
        let line = known_line(lines, name).map_err(bad("exits"))?;
        if list.iter().any(|e| e.line == line.name) {
            return Err(bad("exits")(format!("exit {name} is listed twice")));
        }
        list.push(Exit {
            line: line.name.clone(),
            weight,
        });
    }
    for target in targets {
        for line in list
            .iter()
            .filter_map(|e| lines.iter().find(|l| l.name == e.line))
        {
            if target.is_ipv6() != line.local_vip.is_ipv6() {
                return Err(bad("targets")(format!(
                    "probe target {target} is not of the family of exit {}'s VIP {} (probes \
                     go from the line's VIP)",
                    line.name, line.local_vip
                )));
            }
        }
    }
    Ok(Exits {
        list,
        mode: if weighted {
            Mode::Balance
        } else {
            Mode::Failover
        },
        targets: targets.to_vec(),
        applied,
    })
}

/// Every destination must be of a family the `from` selector and every exit can carry,
/// and must not cover an exit's own underlay peer.
fn check_destinations(
    cidrs: &[Cidr],
    from: &Source,
    exits: &Exits,
    lines: &[Line],
) -> Result<(), String> {
    for cidr in cidrs {
        let v6 = cidr.addr.is_ipv6();
        if let Source::Prefix(f) = from {
            if f.addr.is_ipv6() != v6 {
                return Err(format!(
                    "{cidr} and the source {f} are of different IP families; a group with \
                     a source address steers one family"
                ));
            }
        }
        for line in exit_lines(exits, lines) {
            if !carries(line, v6) {
                return Err(format!(
                    "exit {} cannot carry {} packets ({}), so it cannot route {cidr}",
                    line.name,
                    if v6 { "IPv6" } else { "IPv4" },
                    line.kind.type_name()
                ));
            }
            if cidr.contains(line.peer_ip) {
                return Err(format!(
                    "{cidr} covers {}, the underlay peer of exit {}: the line would carry its \
                     own tunnel packets and probes; leave that address out or choose another exit",
                    line.peer_ip, line.name
                ));
            }
        }
    }
    Ok(())
}

/// Whether the line's device carries packets of that family (a WireGuard line carries
/// both; an IP tunnel what its type encapsulates).
fn carries(line: &Line, v6: bool) -> bool {
    let version = if v6 { IpVersion::V6 } else { IpVersion::V4 };
    line.ip_tunnel().is_none_or(|t| t.kind.carries(version))
}

fn check_tuning(f: &RawFailover) -> Result<Tuning, Problem> {
    let d = Tuning::DEFAULT;
    let get = |key: &'static str, v: Option<u32>, dv: u32, lo: u32, hi: u32| match v {
        None => Ok(dv),
        Some(v) if (lo..=hi).contains(&v) => Ok(v),
        Some(v) => Err(Problem {
            at: Place::Failover,
            key,
            message: format!("{v} is out of range {lo}-{hi}"),
        }),
    };
    let ms = |d: Duration| d.as_millis() as u32;
    Ok(Tuning {
        interval: Duration::from_millis(
            get("interval_ms", f.interval_ms, ms(d.interval), 10, 60_000)?.into(),
        ),
        timeout: Duration::from_millis(
            get("timeout_ms", f.timeout_ms, ms(d.timeout), 10, 5_000)?.into(),
        ),
        lost_probes: get("lost_probes", f.lost_probes, d.lost_probes, 1, 100)?,
        window: get("window", f.window, d.window, 1, Tuning::MAX_WINDOW)?,
        threshold: get("threshold", f.threshold, d.threshold, 0, 100)?,
        confirmations: get("confirmations", f.confirmations, d.confirmations, 1, 100)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testdata::{cfg, SERVER_TOML};

    fn with(policy: &str) -> Result<crate::config::Config, ConfigError> {
        cfg(&format!("{SERVER_TOML}\n{policy}"))
    }

    fn message(policy: &str) -> String {
        with(policy).unwrap_err().to_string()
    }

    #[test]
    fn groups_default_exit_and_failover_parse_and_round_trip() {
        let c = with(
            r#"
[[policy]]
name = "asia"
exits = ["tunnel_base", "tunnel_secure"]
priority = 100
cidrs = ["203.0.113.0/24", "192.0.2.7"]

[[policy]]
name = "spread"
exits = ["tunnel_base:2", "tunnel_secure"]
from = "10.1.0.0/16"
priority = 120
cidrs = ["198.18.0.0/15"]
applied = false

[default_exit]
exits = ["tunnel_secure"]

[failover]
interval_ms = 200
cost = { tunnel_base = 10 }
"#,
        )
        .unwrap();
        let p = &c.policy;
        assert_eq!(p.groups.len(), 2);
        assert_eq!(p.groups[0].exits.mode, Mode::Failover);
        assert_eq!(p.groups[0].cidrs[1].to_string(), "192.0.2.7/32");
        assert_eq!(p.groups[1].exits.mode, Mode::Balance);
        assert_eq!(
            p.groups[1].exits.specs(),
            ["tunnel_base:2", "tunnel_secure:1"]
        );
        assert!(!p.groups[1].exits.applied);
        assert_eq!(p.tuning.interval, Duration::from_millis(200));
        assert_eq!(p.tuning.window, Tuning::DEFAULT.window);
        assert_eq!(p.cost("tunnel_base"), 10);
        assert_eq!(p.users_of("tunnel_secure"), ["asia", "spread", "default"]);
        assert_eq!(cfg(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn bad_policies_are_one_line_naming_group_and_key() {
        let cases = [
            (
                "[[policy]]\nname = \"g\"\nexits = [\"b9\"]\npriority = 100\n",
                "policy[0] (\"g\").exits: b9 is not a line of this node",
            ),
            (
                "[[policy]]\nname = \"g\"\nexits = [\"tunnel_base\"]\npriority = 99\n",
                "policy[0] (\"g\").priority: priority 99 is out of range 100-899",
            ),
            (
                "[[policy]]\nname = \"g\"\nexits = [\"tunnel_base\"]\npriority = 100\n\
                 [[policy]]\nname = \"h\"\nexits = [\"tunnel_base\"]\npriority = 100\n",
                "policy[1] (\"h\").priority: priority 100 is taken by group g",
            ),
            (
                "[[policy]]\nname = \"g\"\nexits = [\"tunnel_base\"]\npriority = 100\n\
                 cidrs = [\"10.0.0.1/8\"]\n",
                "did you mean 10.0.0.0/8?",
            ),
            (
                "[[policy]]\nname = \"g\"\nexits = [\"tunnel_base\"]\npriority = 100\n\
                 cidrs = [\"10.0.0.0/33\"]\n",
                "the prefix length must be 0-32",
            ),
            (
                "[[policy]]\nname = \"g\"\nexits = [\"tunnel_base\"]\npriority = 100\n\
                 cidrs = [\"198.51.100.0/24\"]\n",
                "covers 198.51.100.20, the underlay peer of exit tunnel_base",
            ),
            (
                "[[policy]]\nname = \"g\"\nexits = [\"tunnel_base:0\"]\npriority = 100\n",
                "the weight after ':' must be 1-100",
            ),
            (
                "[[policy]]\nname = \"g\"\nexits = [\"tunnel_base\"]\npriority = 100\n\
                 targets = [\"2001:db8::1\"]\n",
                "probe target 2001:db8::1 is not of the family of exit tunnel_base's VIP",
            ),
            (
                "[[policy]]\nname = \"default\"\nexits = [\"tunnel_base\"]\npriority = 100\n",
                "names the default exit",
            ),
            (
                "[failover]\nwindow = 500\n",
                "failover.window: 500 is out of range 1-128",
            ),
            (
                "[failover]\ncost = { nope = 3 }\n",
                "failover.cost: nope is not a line of this node",
            ),
        ];
        for (policy, want) in cases {
            let msg = message(policy);
            assert!(msg.contains(want), "{policy}\n=> {msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn request_wording_names_the_group() {
        let c = cfg(SERVER_TOML).unwrap();
        let raw = RawPolicy {
            groups: vec![RawGroup {
                name: "asia".into(),
                exits: vec!["b9".into()],
                from: None,
                priority: 100,
                cidrs: vec![],
                applied: true,
                targets: vec![],
            }],
            ..RawPolicy::default()
        };
        let msg = validate(&raw, &c.lines, Reader::Request)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("policy group asia: b9 is not a line"),
            "{msg}"
        );
    }

    #[test]
    fn from_takes_all_addresses_cidrs_and_interfaces() {
        assert_eq!("all".parse::<Source>().unwrap(), Source::All);
        assert!(
            matches!("10.1.2.3".parse::<Source>().unwrap(), Source::Prefix(c) if c.prefix == 32)
        );
        assert!(matches!(
            "2001:db8::/32".parse::<Source>().unwrap(),
            Source::Prefix(_)
        ));
        assert!(matches!(
            "eth1".parse::<Source>().unwrap(),
            Source::Iface(_)
        ));
        assert!("eth 1".parse::<Source>().is_err());
        assert!("10.0.0.1/8".parse::<Source>().is_err());
    }

    #[test]
    fn cidr_contains() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains("192.0.2.9".parse().unwrap()));
        assert!(!c.contains("192.0.3.9".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));
        assert!(Cidr::everything(false).contains("8.8.8.8".parse().unwrap()));
    }
}
