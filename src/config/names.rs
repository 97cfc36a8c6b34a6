//! The newtypes of a line's settings that cannot hold a bad value: [`LineName`] (also
//! a parent's name), [`Port`], [`Mtu`], [`Mode`], and [`seconds`]. Each checks its own
//! bounds and says what is wrong in a message without the setting's name; the caller
//! names it.

use std::fmt;

use serde::{Deserialize, Serialize};

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

/// A number of seconds as the config and `--keepalive` take it: at most 65535.
pub fn seconds(v: u32) -> Result<u16, String> {
    u16::try_from(v).map_err(|_| format!("{v} is above 65535 seconds"))
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

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn line_names_follow_ifname_rules(s in "[a-z0-9_.-]{0,20}") {
            let ok = LineName::try_from(s.clone()).is_ok();
            prop_assert_eq!(ok, !s.is_empty() && s.len() <= 15 && s != "." && s != "..");
        }
    }
}
