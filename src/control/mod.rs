//! The control protocol between `twnode` commands and the daemon: typed, versioned
//! requests and responses, one JSON object per line over a unix socket.
//!
//! Rules: every message carries [`PROTOCOL_VERSION`]; a peer speaking another version
//! gets an error that says which binary to use, never a misread request. A request is
//! at most [`MAX_MESSAGE`] bytes. Private keys never travel in a response except the one
//! field meant for it ([`PeerCommand::private_key`], the generated key of a client).

pub mod client;
mod line_spec;
pub mod metrics;
pub mod metrics_server;
pub mod policy;
pub mod server;
pub mod uapi;
pub mod uapi_server;

pub use line_spec::{IpTunnelArgs, LineSpec, Requested, Secret};
pub use policy::{
    CheckResult, ExitStatus, FailoverEvent, GroupStatus, HealthStatus, LineHealth, NodeStatus,
    PolicyRequest, PolicyStatus,
};

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of [`Request`] or [`Response`].
pub const PROTOCOL_VERSION: u32 = 1;
/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/twnode/control.sock";
/// Longest accepted message, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// What can go wrong on the control channel.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No daemon listens on the socket.
    #[error(
        "the twnode daemon is not running (nothing listens on {path}); start it with \
         `systemctl start twnode` or `twnode daemon`"
    )]
    NotRunning {
        /// The socket path tried.
        path: PathBuf,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// The socket's mode keeps this user out (it is 0600, owned by root).
    #[error("permission denied on the control socket {path}; run the command as root (sudo)")]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket exists but could not be used.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The other side sent something that is not a message of this protocol.
    #[error("malformed control message: {0}")]
    Malformed(String),
    /// The other side speaks another protocol version.
    #[error(
        "control protocol mismatch: this twnode speaks version {ours}, the other side {theirs}; \
         use the twnode binary that matches the running daemon (or restart the daemon after an upgrade)"
    )]
    Version {
        /// Our version.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// The daemon refused or failed the request; the message says why.
    #[error("{0}")]
    Daemon(String),
}

/// A request with its protocol version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<T> {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// The message.
    pub body: T,
}

/// What a command asks of the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The daemon's identity: version, config path.
    Status,
    /// Every line with its state.
    ListLines,
    /// One line in detail.
    ShowLine {
        /// The line.
        name: String,
    },
    /// The command that creates this line's other end.
    ShowPeer {
        /// The line.
        name: String,
    },
    /// An encrypted line's SAs as `ip xfrm` commands for a Linux kernel peer. Secret.
    ShowXfrm {
        /// The line.
        name: String,
    },
    /// Add a line to the config and bring it up.
    CreateLine(Box<LineSpec>),
    /// Take a line down and remove it from the config.
    DeleteLine {
        /// The line.
        name: String,
        /// Also delete the lines stacked on it.
        cascade: bool,
        /// Delete it even when policy groups use it as an exit: they move to their
        /// other exits.
        #[serde(default)]
        force: bool,
    },
    /// Re-read the config file (as SIGHUP does).
    Reload,
    /// A `policy ...` command.
    Policy(PolicyRequest),
    /// Probe lines now and report loss, latency and score (`line check`).
    CheckLines {
        /// One line, or every running line.
        line: Option<String>,
        /// Where the probes go; empty: each line's peer VIP.
        targets: Vec<IpAddr>,
    },
    /// Set a line's cost, 0-100 (`line set-cost`).
    SetCost {
        /// The line.
        line: String,
        /// The cost.
        cost: u32,
    },
    /// The lines with their health and the policy (`twnode status`).
    NodeStatus,
}

/// What `Debug` shows of a secret.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(DaemonStatus),
    /// Answer to [`Request::ListLines`].
    Lines {
        /// Lines, parents before their children.
        lines: Vec<LineStatus>,
    },
    /// Answer to [`Request::ShowLine`].
    Line(Box<LineStatus>),
    /// Answer to [`Request::ShowPeer`].
    Peer(PeerCommand),
    /// Answer to [`Request::ShowXfrm`]: shell commands, one per entry. Secret.
    Xfrm {
        /// `ip xfrm state`/`ip xfrm policy` commands (and `#` comments).
        commands: Vec<String>,
    },
    /// Answer to [`Request::CreateLine`].
    Created(Box<Created>),
    /// Answer to [`Request::DeleteLine`].
    Deleted {
        /// Lines removed, children first.
        names: Vec<String>,
    },
    /// Answer to [`Request::Reload`]: the new configuration is in force, and these lines
    /// changed.
    Reloaded {
        /// Lines stopped.
        stopped: Vec<String>,
        /// Lines (re)started that came up.
        started: Vec<String>,
        /// Lines the reload (re)started that did not come up, and why; the daemon keeps
        /// trying them. Absent when empty, so an older `twnode` reads every other
        /// answer as before.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        not_up: Vec<NotUp>,
    },
    /// Answer to `policy list`.
    Policy(PolicyStatus),
    /// Answer to a policy or cost change: what was done, one line per change.
    Done {
        /// What changed.
        messages: Vec<String>,
    },
    /// Answer to [`Request::CheckLines`].
    Checked {
        /// Per line.
        results: Vec<CheckResult>,
    },
    /// Answer to [`Request::NodeStatus`].
    NodeStatus(NodeStatus),
    /// The request failed; nothing was changed.
    Error {
        /// One line: what is wrong and what to do.
        message: String,
    },
}

/// A line that did not come up, and why (as `line show` says).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NotUp {
    pub name: String,
    pub reason: String,
}

/// Who the daemon is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub pid: u32,
    pub config: PathBuf,
    pub lines: usize,
}

/// A line's state as `line list` and `line show` print it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LineStatus {
    pub name: String,
    pub parent: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub mode: Option<String>,
    pub peer_ip: IpAddr,
    pub peer_vip: IpAddr,
    pub local_vip: IpAddr,
    /// The underlay address the line's socket is bound to (from its parent), once known.
    pub local_ip: Option<IpAddr>,
    pub depth: usize,
    pub mtu: Option<u16>,
    pub state: LineState,
    /// Why the line is not up, when it is not.
    pub reason: Option<String>,
    pub listen_port: Option<u16>,
    /// Where the peer's datagrams come from (follows a roaming client).
    pub endpoint: Option<String>,
    pub public_key: Option<String>,
    pub peer_public_key: Option<String>,
    pub last_handshake_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Dropped packets by reason (only the non-zero ones).
    pub drops: Vec<(String, u64)>,
    /// IP tunnel lines: their options as `line create` takes them (`--key 7 --seq`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// IP tunnel lines with a keepalive: probes and replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<KeepaliveInfo>,
    /// Encrypted lines: the ESP layer (no keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp: Option<EspInfo>,
    /// `--af-xdp` lines: how the outer packets leave now (the AF_XDP port and next
    /// hop, or why the raw socket sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit: Option<String>,
    /// `--af-xdp` lines: of `tx_packets`, how many went through AF_XDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub af_xdp_packets: Option<u64>,
}

/// An encrypted line's ESP state, for `line show` (SPIs and counters; never keys).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EspInfo {
    /// `chacha20-poly1305` or `aes-256-gcm`.
    pub cipher: String,
    /// `epoch` or `static`.
    pub keying: String,
    /// The SPI this end sends with (epoch keying: none before the first epoch).
    pub spi_out: Option<u32>,
    /// The SPI this end accepts.
    pub spi_in: Option<u32>,
    /// The next sequence number to send (in the current epoch).
    pub next_seq: u64,
    /// Static keying: sequence numbers below this are reserved on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_to: Option<u64>,
    /// Highest sequence number accepted (0: none yet).
    pub highest_received: u64,
    /// Epoch keying: the epochs and the next rekey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<EpochInfo>,
}

/// Epoch keying's state, for `line show`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EpochInfo {
    /// Epochs agreed since the line started (0: waiting for the peer's Hello).
    pub epochs: u64,
    /// Seconds since the current epoch was agreed (the last rekey, or the first
    /// agreement).
    pub last_rekey_secs: Option<u64>,
    /// Packets this end may send before it starts a rekey.
    pub packets_to_rekey: Option<u64>,
    /// Seconds before this end starts a rekey.
    pub secs_to_rekey: Option<u64>,
    /// This end's rekey interval.
    pub rekey_interval_secs: u64,
    /// A new epoch is proposed, not agreed yet.
    pub rekeying: bool,
    pub hellos_sent: u64,
    pub hellos_received: u64,
}

/// An IP tunnel line's keepalive, for `line show`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeepaliveInfo {
    pub interval_secs: u64,
    pub retries: u8,
    /// Probes sent since the line started.
    pub sent: u64,
    /// Replies received since the line started.
    pub replies: u64,
    /// Probes sent since the last reply.
    pub unanswered: u32,
    /// Milliseconds since the last reply.
    pub last_reply_ms: Option<u64>,
    /// Round-trip time of the last answered probe, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u64>,
}

/// A line's state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LineState {
    /// Traffic is flowing: a WireGuard session is established.
    Up,
    /// The data plane runs but the peer has not answered yet (or stopped answering).
    Connecting,
    /// The parent line is not up.
    ParentDown,
    /// The line could not be brought up; `reason` says why, the daemon retries.
    Down,
}

impl fmt::Display for LineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineState::Up => "up",
            LineState::Connecting => "connecting",
            LineState::ParentDown => "parent down",
            LineState::Down => "down",
        })
    }
}

/// The result of `line create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Created {
    pub line: LineStatus,
    /// The command for the other end (for a server line with generated keys).
    pub peer: Option<PeerCommand>,
    /// Whether key pairs were generated.
    pub generated_keys: bool,
}

/// The `line create` command that builds the other end of a line. Its `Debug` hides
/// the private key; `Display` (the command itself) shows it.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerCommand {
    /// Our underlay address: the peer's `peer_ip`.
    pub peer_ip: IpAddr,
    /// Our local VIP: the peer's `peer_vip`.
    pub peer_vip: IpAddr,
    /// Our peer VIP: the peer's `local_vip`.
    pub local_vip: IpAddr,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// WireGuard: the client's private key, generated by this server. Secret.
    #[serde(default)]
    pub private_key: Option<String>,
    /// WireGuard: our public key.
    #[serde(default)]
    pub peer_pubkey: Option<String>,
    /// WireGuard: our listen port.
    #[serde(default)]
    pub peer_port: Option<u16>,
    /// IP tunnels: the peer's options, mirrored from ours (`--ikey`/`--okey` swapped);
    /// any type: `--mtu` when ours was set by hand. Words without shell metacharacters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// The options carry secret keys (an encrypted line's `--enc-key`/`--auth-key`).
    #[serde(default)]
    pub secret: bool,
    /// Our line runs over a line (not an interface): which one, so the peer knows to
    /// put its own line toward us for `<parent>`. Absent for a line on an interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_line: Option<ParentLine>,
    /// WireGuard: the line's preshared key, base64, which the command feeds to
    /// `--preshared-key -` on stdin. Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<String>,
}

/// The line ours runs over, as the peer command's hint names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParentLine {
    /// Our parent line.
    pub name: String,
    /// Our peer sits beyond the parent line's far end (a relay), so its own parent is
    /// not the far end of that very line but its line toward the relay.
    pub relay: bool,
}

impl PeerCommand {
    /// What the peer puts for `<parent>`, in words (the peer command's note).
    pub fn parent_hint(&self) -> String {
        match &self.parent_line {
            None => "replace <parent> with the peer's interface toward this host (e.g. eth0)"
                .to_string(),
            Some(ParentLine { name, relay: false }) => format!(
                "replace <parent> with the peer's line toward this host: its end of line \
                 {name} (also named {name} if it was made from this host's peer command), \
                 not an interface"
            ),
            Some(ParentLine { name, relay: true }) => format!(
                "replace <parent> with the peer's line toward this host: the line over which \
                 it reaches {} (this host reaches the peer through line {name}'s far end), \
                 not an interface",
                self.peer_ip
            ),
        }
    }
}

impl fmt::Debug for PeerCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCommand")
            .field("peer_ip", &self.peer_ip)
            .field("peer_vip", &self.peer_vip)
            .field("local_vip", &self.local_vip)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("private_key", &redacted(&self.private_key))
            .field("peer_pubkey", &self.peer_pubkey)
            .field("peer_port", &self.peer_port)
            .field("options", &RedactedOptions(&self.options))
            .field("secret", &self.secret)
            .field("parent_line", &self.parent_line)
            .field("preshared_key", &redacted(&self.preshared_key))
            .finish()
    }
}

/// Options with the values of `--enc-key` and `--auth-key` hidden.
struct RedactedOptions<'a>(&'a [String]);

impl fmt::Debug for RedactedOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut hide = false;
        for word in self.0 {
            if hide {
                list.entry(&"<redacted>");
            } else {
                list.entry(word);
            }
            hide = matches!(word.as_str(), "--enc-key" | "--auth-key");
        }
        list.finish()
    }
}

impl fmt::Display for PeerCommand {
    /// One shell command, with `<parent>` left for the user to fill in. A preshared
    /// key goes in on stdin (`echo '...' | twnode ... --preshared-key -`), which also
    /// works under sudo.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(psk) = &self.preshared_key {
            write!(f, "echo '{psk}' | ")?;
        }
        write!(
            f,
            "twnode line create <parent> {} {} {} {} --type {}",
            self.peer_ip, self.peer_vip, self.local_vip, self.name, self.kind,
        )?;
        if let (Some(key), Some(pubkey), Some(port)) =
            (&self.private_key, &self.peer_pubkey, self.peer_port)
        {
            write!(
                f,
                " --mode client --private-key '{key}' --peer-pubkey '{pubkey}' --peer-port {port}"
            )?;
        }
        for word in &self.options {
            write!(f, " {word}")?;
        }
        if self.preshared_key.is_some() {
            f.write_str(" --preshared-key -")?;
        }
        Ok(())
    }
}

/// A GRE line's status with every optional part empty, for the tests of what prints
/// or exports statuses.
#[cfg(test)]
pub(crate) fn gre_status(name: &str) -> LineStatus {
    LineStatus {
        name: name.into(),
        parent: "eth0".into(),
        kind: "gre".into(),
        mode: None,
        peer_ip: "198.51.100.20"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0])),
        peer_vip: IpAddr::from([10, 0, 0, 2]),
        local_vip: IpAddr::from([10, 0, 0, 1]),
        local_ip: None,
        depth: 0,
        mtu: None,
        state: LineState::Down,
        reason: None,
        listen_port: None,
        endpoint: None,
        public_key: None,
        peer_public_key: None,
        last_handshake_secs: None,
        rx_bytes: 0,
        tx_bytes: 0,
        rx_packets: 0,
        tx_packets: 0,
        drops: Vec::new(),
        options: Vec::new(),
        keepalive: None,
        esp: None,
        transmit: None,
        af_xdp_packets: None,
    }
}

/// Encodes a message as one line of JSON.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    let env = Envelope {
        protocol: PROTOCOL_VERSION,
        body,
    };
    let mut out = serde_json::to_vec(&env).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Decodes one line; checks the version before the body so that a newer peer's
/// unknown request reads as a version mismatch, not as garbage.
pub fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, ControlError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        protocol: u32,
    }
    let v: VersionOnly = serde_json::from_slice(line)
        .map_err(|e| ControlError::Malformed(format!("no protocol version: {e}")))?;
    if v.protocol != PROTOCOL_VERSION {
        return Err(ControlError::Version {
            ours: PROTOCOL_VERSION,
            theirs: v.protocol,
        });
    }
    let env: Envelope<T> =
        serde_json::from_slice(line).map_err(|e| ControlError::Malformed(e.to_string()))?;
    Ok(env.body)
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_round_trips() {
        let bytes = encode(&Request::DeleteLine {
            name: "t".into(),
            cascade: true,
            force: false,
        });
        assert_eq!(*bytes.last().unwrap(), b'\n');
        match decode::<Request>(&bytes[..bytes.len() - 1]).unwrap() {
            Request::DeleteLine { name, cascade, .. } => assert!(name == "t" && cascade),
            other => panic!("{other:?}"),
        }
        let create = Request::Policy(PolicyRequest::Create {
            group: "asia".into(),
            exits: vec!["b1:2".into(), "b2".into()],
            from: None,
            priority: Some(120),
        });
        let bytes = encode(&create);
        match decode::<Request>(&bytes[..bytes.len() - 1]).unwrap() {
            Request::Policy(p) => assert_eq!(
                Request::Policy(p).to_string_for_test(),
                create.to_string_for_test()
            ),
            other => panic!("{other:?}"),
        }
        // An older client's delete has no `force`.
        let old = br#"{"protocol":1,"body":{"request":"delete_line","name":"t","cascade":false}}"#;
        assert!(matches!(
            decode::<Request>(old).unwrap(),
            Request::DeleteLine { force: false, .. }
        ));
    }

    impl Request {
        fn to_string_for_test(&self) -> String {
            format!("{self:?}")
        }
    }

    #[test]
    fn debug_of_requests_and_peer_commands_hides_private_keys() {
        let secret = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let text = format!(
            r#"{{"protocol":1,"body":{{"request":"create_line","parent":"eth0","peer_ip":"203.0.113.10","peer_vip":"10.0.0.1","local_vip":"10.0.0.2","name":"t","kind":"wireguard","mode":"client","listen_port":null,"peer_port":51820,"private_key":"{secret}","peer_pubkey":"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=","keepalive":null,"mtu":null}}}}"#
        );
        let request = decode::<Request>(text.as_bytes()).unwrap();
        let debug = format!("{request:?}");
        assert!(
            !debug.contains(secret) && debug.contains("<redacted>"),
            "{debug}"
        );
        assert!(
            debug.contains("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="),
            "{debug}"
        );
        let peer = PeerCommand {
            peer_ip: "203.0.113.10".parse().unwrap(),
            peer_vip: "10.0.0.1".parse().unwrap(),
            local_vip: "10.0.0.2".parse().unwrap(),
            name: "t".into(),
            kind: "wireguard".into(),
            private_key: Some(secret.into()),
            peer_pubkey: None,
            peer_port: Some(51820),
            options: Vec::new(),
            secret: true,
            parent_line: None,
            preshared_key: None,
        };
        let debug = format!("{:?}", Response::Peer(peer));
        assert!(
            !debug.contains(secret) && debug.contains("<redacted>"),
            "{debug}"
        );
        let esp_key = "0x000102030405060708090a0b0c0d0e0f";
        let peer = PeerCommand {
            peer_ip: "203.0.113.10".parse().unwrap(),
            peer_vip: "10.0.0.1".parse().unwrap(),
            local_vip: "10.0.0.2".parse().unwrap(),
            name: "g".into(),
            kind: "ipsec".into(),
            private_key: None,
            peer_pubkey: None,
            peer_port: None,
            options: ["--enc-key", esp_key, "--auth-key", esp_key, "--mtu", "1400"]
                .map(String::from)
                .to_vec(),
            secret: true,
            parent_line: None,
            preshared_key: None,
        };
        let debug = format!("{peer:?}");
        assert!(
            !debug.contains(esp_key) && debug.contains("--enc-key") && debug.contains("1400"),
            "{debug}"
        );
        assert!(peer.to_string().contains(esp_key), "Display is the command");
    }

    #[test]
    fn other_protocol_version_is_named() {
        let err =
            decode::<Request>(br#"{"protocol":2,"body":{"request":"frobnicate"}}"#).unwrap_err();
        assert!(matches!(err, ControlError::Version { ours: 1, theirs: 2 }));
        assert!(err.to_string().contains("matches the running daemon"));
    }

    #[test]
    fn unknown_request_is_malformed() {
        let err =
            decode::<Request>(br#"{"protocol":1,"body":{"request":"frobnicate"}}"#).unwrap_err();
        assert!(matches!(err, ControlError::Malformed(_)), "{err}");
    }

    /// The client command of a WireGuard server line `tunnel_base`.
    fn wireguard_peer_command() -> PeerCommand {
        PeerCommand {
            peer_ip: "203.0.113.10".parse().unwrap(),
            peer_vip: "10.0.0.1".parse().unwrap(),
            local_vip: "10.0.0.2".parse().unwrap(),
            name: "tunnel_base".into(),
            kind: "wireguard".into(),
            private_key: Some("k".into()),
            peer_pubkey: Some("p".into()),
            peer_port: Some(51820),
            options: Vec::new(),
            secret: true,
            parent_line: None,
            preshared_key: None,
        }
    }

    #[test]
    fn peer_command_is_one_line_starting_with_the_grammar() {
        let p = wireguard_peer_command();
        let s = p.to_string();
        assert!(s.starts_with(
            "twnode line create <parent> 203.0.113.10 10.0.0.1 10.0.0.2 tunnel_base "
        ));
        assert!(!s.contains('\n'));
        assert!(s.ends_with("--mode client --private-key 'k' --peer-pubkey 'p' --peer-port 51820"));
    }

    #[test]
    fn a_preshared_key_goes_to_the_peer_on_stdin_and_never_into_debug() {
        let psk = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=";
        let p = PeerCommand {
            preshared_key: Some(psk.into()),
            ..wireguard_peer_command()
        };
        let s = p.to_string();
        assert!(
            s.starts_with(&format!("echo '{psk}' | twnode line create <parent> "))
                && s.ends_with(" --preshared-key -"),
            "{s}"
        );
        assert!(!format!("{p:?}").contains(psk));
    }

    #[test]
    fn ip_tunnel_peer_command_carries_its_options_and_no_key() {
        let p = PeerCommand {
            peer_ip: "203.0.113.10".parse().unwrap(),
            peer_vip: "10.0.0.1".parse().unwrap(),
            local_vip: "10.0.0.2".parse().unwrap(),
            name: "gre1".into(),
            kind: "gre".into(),
            private_key: None,
            peer_pubkey: None,
            peer_port: None,
            secret: false,
            options: vec!["--ikey".into(), "2".into(), "--okey".into(), "1".into()],
            parent_line: None,
            preshared_key: None,
        };
        assert_eq!(
            p.to_string(),
            "twnode line create <parent> 203.0.113.10 10.0.0.1 10.0.0.2 gre1 --type gre \
             --ikey 2 --okey 1"
        );
    }

    /// Issue 22, item 8: a child line's peer puts its own line toward this host for
    /// `<parent>`, not "its interface".
    #[test]
    fn the_parent_hint_names_an_interface_or_the_peers_line() {
        let mut p = PeerCommand {
            peer_ip: "10.0.0.1".parse().unwrap(),
            peer_vip: "172.16.0.1".parse().unwrap(),
            local_vip: "172.16.0.2".parse().unwrap(),
            name: "tunnel_secure".into(),
            kind: "wireguard".into(),
            private_key: None,
            peer_pubkey: None,
            peer_port: None,
            options: Vec::new(),
            secret: false,
            parent_line: None,
            preshared_key: None,
        };
        assert!(p
            .parent_hint()
            .contains("the peer's interface toward this host"));
        p.parent_line = Some(ParentLine {
            name: "tunnel_base".into(),
            relay: false,
        });
        let hint = p.parent_hint();
        assert!(
            hint.starts_with("replace <parent> with the peer's line toward this host")
                && hint.contains("its end of line tunnel_base")
                && !hint.contains("its interface"),
            "{hint}"
        );
        p.parent_line = Some(ParentLine {
            name: "tunnel_ab".into(),
            relay: true,
        });
        let hint = p.parent_hint();
        assert!(
            hint.contains("the line over which it reaches 10.0.0.1") && hint.contains("tunnel_ab"),
            "{hint}"
        );
        // The hint is a note beside the command, never part of it.
        assert!(!p.to_string().contains("replace"));
    }

    #[test]
    fn line_spec_from_an_older_client_still_decodes() {
        let old = br#"{"protocol":1,"body":{"request":"create_line","parent":"eth0","peer_ip":"198.51.100.20","peer_vip":"10.0.0.2","local_vip":"10.0.0.1","name":"t","kind":"wireguard","mode":"server","listen_port":51820,"peer_port":null,"private_key":null,"peer_pubkey":null,"keepalive":null,"mtu":null}}"#;
        match decode::<Request>(old).unwrap() {
            Request::CreateLine(spec) => assert!(!spec.ip_tunnel.any()),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Request>(&b);
            let _ = decode::<Response>(&b);
        }
    }
}
