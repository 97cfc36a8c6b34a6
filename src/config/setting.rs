//! Naming a line's settings in errors the way the user wrote them. Validation finds a
//! [`Problem`]: which line, which [`Setting`], and a message whose words may name other
//! settings and other lines. Where the config came from ([`Origin`]) decides the words:
//! a file's problem reads `line[2] ("gre1").ip_tunnel.ikey: ...` and names other lines
//! `line[0] ("gre0")`; a `line create` request's reads `--key: ...` and names other lines
//! `line gre0`.
//!
//! Rules: a rule is checked once, in [`super::validate`]; it writes its message once,
//! with [`Problem::key`] where it names a setting, and [`Problem::either`] only where the
//! two readers need different words (a file's `encrypt = true` is a request's
//! `--encrypt`).

use super::ConfigError;

/// One setting of a line: a key under `[[line]]` and a `line create` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    Name,
    Parent,
    PeerIp,
    PeerVip,
    LocalVip,
    Type,
    Mtu,
    /// The `[line.wireguard]` table as a whole.
    WireGuard,
    Mode,
    ListenPort,
    PeerPort,
    PrivateKey,
    PeerPublicKey,
    PeerPrivateKey,
    PersistentKeepalive,
    PresharedKey,
    AllowedIps,
    /// The `[line.ip_tunnel]` table as a whole.
    IpTunnel,
    Ikey,
    Okey,
    Iseq,
    Oseq,
    Icsum,
    Ocsum,
    Ttl,
    Tos,
    Pmtudisc,
    Keepalive,
    KeepaliveRetries,
    Encrypt,
    Cipher,
    EncKey,
    AuthKey,
    EspKeying,
    EspRekey,
    AfXdp,
}

impl Setting {
    /// The key path under `[[line]]`.
    pub fn toml_key(self) -> &'static str {
        use Setting::*;
        match self {
            Name => "name",
            Parent => "parent",
            PeerIp => "peer_ip",
            PeerVip => "peer_vip",
            LocalVip => "local_vip",
            Type => "type",
            Mtu => "mtu",
            WireGuard => "wireguard",
            Mode => "wireguard.mode",
            ListenPort => "wireguard.listen_port",
            PeerPort => "wireguard.peer_port",
            PrivateKey => "wireguard.private_key",
            PeerPublicKey => "wireguard.peer_public_key",
            PeerPrivateKey => "wireguard.peer_private_key",
            PersistentKeepalive => "wireguard.persistent_keepalive",
            PresharedKey => "wireguard.preshared_key",
            AllowedIps => "wireguard.allowed_ips",
            IpTunnel => "ip_tunnel",
            Ikey => "ip_tunnel.ikey",
            Okey => "ip_tunnel.okey",
            Iseq => "ip_tunnel.iseq",
            Oseq => "ip_tunnel.oseq",
            Icsum => "ip_tunnel.icsum",
            Ocsum => "ip_tunnel.ocsum",
            Ttl => "ip_tunnel.ttl",
            Tos => "ip_tunnel.tos",
            Pmtudisc => "ip_tunnel.pmtudisc",
            Keepalive => "ip_tunnel.keepalive",
            KeepaliveRetries => "ip_tunnel.keepalive_retries",
            Encrypt => "ip_tunnel.encrypt",
            Cipher => "ip_tunnel.cipher",
            EncKey => "ip_tunnel.enc_key",
            AuthKey => "ip_tunnel.auth_key",
            EspKeying => "ip_tunnel.esp_keying",
            EspRekey => "ip_tunnel.esp_rekey",
            AfXdp => "ip_tunnel.af_xdp",
        }
    }

    /// The `line create` argument that usually sets it; [`Flags`] records another
    /// spelling where the user typed one (`--key` sets both keys).
    pub fn flag(self) -> &'static str {
        use Setting::*;
        match self {
            Name => "<name>",
            Parent => "<parent>",
            PeerIp => "<peer_ip>",
            PeerVip => "<peer_vip>",
            LocalVip => "<local_vip>",
            Type => "--type",
            Mtu => "--mtu",
            // The tables as a whole: a request fills them from its type (and --mode).
            WireGuard | Mode => "--mode",
            ListenPort => "--listen-port",
            PeerPort => "--peer-port",
            PrivateKey => "--private-key",
            PeerPublicKey => "--peer-pubkey",
            // Never given by hand: a server generates it.
            PeerPrivateKey => "wireguard.peer_private_key",
            PersistentKeepalive | Keepalive | KeepaliveRetries => "--keepalive",
            // Set by `wg set ... allowed-ips` or in the file.
            AllowedIps => "allowed-ips",
            PresharedKey => "--preshared-key",
            IpTunnel => "--type",
            Ikey => "--ikey",
            Okey => "--okey",
            Iseq => "--iseq",
            Oseq => "--oseq",
            Icsum => "--icsum",
            Ocsum => "--ocsum",
            Ttl => "--ttl",
            Tos => "--tos",
            Pmtudisc => "--nopmtudisc",
            Encrypt => "--encrypt",
            Cipher => "--cipher",
            EncKey => "--enc-key",
            AuthKey => "--auth-key",
            EspKeying => "--esp-keying",
            EspRekey => "--esp-rekey",
            AfXdp => "--af-xdp",
        }
    }
}

/// The arguments a `line create` request set its settings with, where they differ from
/// [`Setting::flag`]: `--key` for both keys, `--seq`, `--csum`, and `--type ipsec` for a
/// type that asked for the encryption.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags(Vec<(Setting, &'static str)>);

impl Flags {
    /// Records that the user set `setting` with `flag`.
    pub fn typed(&mut self, setting: Setting, flag: &'static str) {
        self.0.retain(|(s, _)| *s != setting);
        self.0.push((setting, flag));
    }

    /// The argument that set `setting`.
    pub fn flag(&self, setting: Setting) -> &'static str {
        self.0
            .iter()
            .find(|(s, _)| *s == setting)
            .map_or_else(|| setting.flag(), |(_, f)| f)
    }
}

/// Where the lines being validated came from: it decides how problems are worded.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A configuration file: TOML key paths.
    File,
    /// A `line create` request for the last line: its arguments, other lines by name.
    Request(&'a Flags),
}

/// A piece of a problem's message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// A setting of the line the problem is about.
    Key(Setting),
    /// Another line, by index.
    Line(usize),
    /// Words for a file, and for a request.
    Either(String, String),
}

/// A rule that line `line` breaks at `setting`, before it is worded for its reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Index of the line in the raw configuration.
    pub line: usize,
    /// The setting at fault.
    pub setting: Setting,
    message: Vec<Part>,
}

impl Problem {
    /// A problem with an empty message.
    pub fn at(line: usize, setting: Setting) -> Problem {
        Problem {
            line,
            setting,
            message: Vec::new(),
        }
    }

    /// A problem whose message is `text`.
    pub fn new(line: usize, setting: Setting, text: impl Into<String>) -> Problem {
        Problem::at(line, setting).text(text)
    }

    /// Words the same for every reader.
    pub fn text(mut self, text: impl Into<String>) -> Problem {
        self.message.push(Part::Text(text.into()));
        self
    }

    /// Names another setting of the same line (`ip_tunnel.auth_key` / `--auth-key`).
    pub fn key(mut self, setting: Setting) -> Problem {
        self.message.push(Part::Key(setting));
        self
    }

    /// Names another line (`line[0] ("gre0")` / `line gre0`).
    pub fn line(mut self, index: usize) -> Problem {
        self.message.push(Part::Line(index));
        self
    }

    /// Words that differ: for a file, and for a `line create` request.
    pub fn either(mut self, file: impl Into<String>, request: impl Into<String>) -> Problem {
        self.message.push(Part::Either(file.into(), request.into()));
        self
    }

    /// The problem in words: `names` are the lines' names by index, as given.
    pub fn render(&self, names: &[&str], origin: Origin<'_>) -> ConfigError {
        let name = |i: usize| names.get(i).copied().unwrap_or("?");
        let requested = match origin {
            Origin::Request(flags) if self.line + 1 == names.len() => Some(flags),
            _ => None,
        };
        let subject = |s: Setting| match (origin, requested) {
            (_, Some(flags)) => flags.flag(s).to_string(),
            (Origin::File, _) => {
                format!("{}.{}", file_line(self.line, name(self.line)), s.toml_key())
            }
            // A request refused for an existing line: that line's key, by name.
            (Origin::Request(_), None) => format!("{} of line {}", s.toml_key(), name(self.line)),
        };
        let mut message = String::new();
        for part in &self.message {
            match part {
                Part::Text(t) => message.push_str(t),
                Part::Key(s) => match requested {
                    Some(flags) => message.push_str(flags.flag(*s)),
                    None => message.push_str(s.toml_key()),
                },
                Part::Line(j) => match origin {
                    Origin::File => message.push_str(&file_line(*j, name(*j))),
                    Origin::Request(_) => {
                        message.push_str("line ");
                        message.push_str(name(*j));
                    }
                },
                Part::Either(file, request) => match origin {
                    Origin::File => message.push_str(file),
                    Origin::Request(_) => message.push_str(request),
                },
            }
        }
        ConfigError::Invalid {
            key: subject(self.setting),
            message,
        }
    }
}

/// A line of a file, as its key paths start: `line[0] ("gre0")`.
fn file_line(i: usize, name: &str) -> String {
    format!("line[{i}] ({name:?})")
}

#[cfg(test)]
mod test {
    use super::*;

    fn words(e: ConfigError) -> (String, String) {
        match e {
            ConfigError::Invalid { key, message } => (key, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_problem_is_worded_for_a_file_or_for_a_request() {
        let p = Problem::at(1, Setting::Ikey)
            .line(0)
            .text(" already expects ")
            .key(Setting::Okey)
            .text("; ")
            .either("edit the file", "type another");
        let names = ["gre0", "gre2"];
        assert_eq!(
            words(p.render(&names, Origin::File)),
            (
                "line[1] (\"gre2\").ip_tunnel.ikey".to_string(),
                "line[0] (\"gre0\") already expects ip_tunnel.okey; edit the file".to_string()
            )
        );
        let mut flags = Flags::default();
        flags.typed(Setting::Ikey, "--key");
        assert_eq!(
            words(p.render(&names, Origin::Request(&flags))),
            (
                "--key".to_string(),
                "line gre0 already expects --okey; type another".to_string()
            )
        );
        // A request refused for a line already configured: that line's key, by name.
        let p = Problem::new(0, Setting::Parent, "the parent graph has a cycle");
        assert_eq!(
            words(p.render(&names, Origin::Request(&flags))).0,
            "parent of line gre0"
        );
    }
}
