//! WireGuard's cross-platform configuration protocol (UAPI,
//! <https://www.wireguard.com/xplatform/#configuration-protocol>) as twnode speaks it for
//! its WireGuard lines, so `wg show`, `wg showconf` and `wg set` from wireguard-tools work
//! on them: the messages as values ([`Device`] for `get=1`, [`Set`] for `set=1`), their
//! text form, and the errno an answer carries. The sockets are in [`super::uapi_server`].
//!
//! Rules: pure (no I/O, no clock). Keys are lowercase hex, as wireguard-go writes them;
//! `last_handshake_time_sec`/`_nsec` are UNIX time, never an age (boringtun's UAPI writes
//! an age, so `wg show` says "55 years ago"). A `set` is parsed whole before anything is
//! applied: one bad line (an unknown key, bad hex, a number out of range) refuses the
//! whole operation with `-EINVAL`, and nothing changes. `Debug` of a [`Device`] or a
//! [`Set`] never shows a private or preshared key.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::tunnel::keys::{PrivateKey, PublicKey};

/// Longest line of a request, in bytes (`allowed_ip=` with an IPv6 prefix is ~60).
pub const MAX_LINE: usize = 512;
/// Most lines in one `set` operation.
pub const MAX_SET_LINES: usize = 4096;

/// An errno as the protocol carries it: `errno=-22` (wireguard-go writes negative
/// values; wireguard-tools reads either sign).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// Malformed or unacceptable input.
    pub const INVAL: Errno = Errno(libc::EINVAL);
    /// Refused: the change would break the line's model (one peer, keys it owns).
    pub const PERM: Errno = Errno(libc::EPERM);
    /// The line is gone.
    pub const NODEV: Errno = Errno(libc::ENODEV);
    /// The port is in use.
    pub const ADDRINUSE: Errno = Errno(libc::EADDRINUSE);
    /// The config file was edited by hand and not reloaded.
    pub const BUSY: Errno = Errno(libc::EBUSY);
    /// The change could not be applied or stored.
    pub const IO: Errno = Errno(libc::EIO);
    /// Not an operation of this protocol.
    pub const PROTO: Errno = Errno(libc::EPROTO);
    /// The client took too long.
    pub const TIMEDOUT: Errno = Errno(libc::ETIMEDOUT);

    /// The status line that ends an answer: `errno=-22\n\n` (`errno=0\n\n` for success).
    pub fn status(errno: Option<Errno>) -> String {
        format!("errno={}\n\n", errno.map_or(0, |e| -e.0))
    }
}

/// A refusal: the errno for the client and the words for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub errno: Errno,
    pub message: String,
}

impl Refusal {
    pub fn new(errno: Errno, message: impl Into<String>) -> Refusal {
        Refusal {
            errno,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A WireGuard line as `get=1` reports it: one interface with its one peer.
#[derive(Clone, PartialEq, Eq)]
pub struct Device {
    pub private_key: PrivateKey,
    /// The bound port (a client's ephemeral port included); none while the line is down.
    pub listen_port: Option<u16>,
    pub peer: Peer,
}

/// The line's peer.
#[derive(Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: PublicKey,
    /// Secret; `None` is the all-zero key (no preshared key).
    pub preshared_key: Option<[u8; 32]>,
    pub endpoint: Option<SocketAddr>,
    /// When the last handshake completed, as wall-clock time.
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: u16,
    /// The peer VIP's host prefix first, then the line's `allowed_ips`.
    pub allowed_ips: Vec<IpNet>,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("private_key", &self.private_key)
            .field("listen_port", &self.listen_port)
            .field("peer", &self.peer)
            .finish()
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("public_key", &self.public_key)
            .field("preshared_key", &self.preshared_key.map(|_| "<redacted>"))
            .field("endpoint", &self.endpoint)
            .field("last_handshake", &self.last_handshake)
            .field("rx_bytes", &self.rx_bytes)
            .field("tx_bytes", &self.tx_bytes)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("allowed_ips", &self.allowed_ips)
            .finish()
    }
}

fn hex(out: &mut String, key: &[u8; 32]) {
    for b in key {
        let _ = write!(out, "{b:02x}");
    }
}

impl Device {
    /// The answer to `get=1`, without the final `errno` line.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(512);
        out.push_str("private_key=");
        hex(&mut out, &self.private_key.to_bytes());
        out.push('\n');
        if let Some(port) = self.listen_port {
            let _ = writeln!(out, "listen_port={port}");
        }
        let p = &self.peer;
        out.push_str("public_key=");
        hex(&mut out, p.public_key.as_bytes());
        out.push_str("\npreshared_key=");
        hex(&mut out, &p.preshared_key.unwrap_or([0; 32]));
        out.push_str("\nprotocol_version=1\n");
        if let Some(e) = p.endpoint {
            let _ = writeln!(out, "endpoint={e}");
        }
        let since_epoch = p
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or(Duration::ZERO);
        let _ = writeln!(
            out,
            "last_handshake_time_sec={}\nlast_handshake_time_nsec={}",
            since_epoch.as_secs(),
            since_epoch.subsec_nanos()
        );
        let _ = writeln!(out, "tx_bytes={}\nrx_bytes={}", p.tx_bytes, p.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            p.persistent_keepalive
        );
        for net in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
        out
    }
}

/// A `set=1` operation, parsed whole.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Set {
    pub private_key: Option<PrivateKey>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub replace_peers: bool,
    pub peers: Vec<PeerSet>,
}

/// What a `set` says of one peer (from its `public_key=` line to the next).
#[derive(Clone, PartialEq, Eq)]
pub struct PeerSet {
    pub public_key: PublicKey,
    pub remove: bool,
    pub update_only: bool,
    /// Secret; `Some(None)` clears it (the all-zero key).
    pub preshared_key: Option<Option<[u8; 32]>>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    pub replace_allowed_ips: bool,
    /// In order: `(true, prefix)` adds, `(false, prefix)` removes (`allowed_ip=-...`).
    pub allowed_ips: Vec<(bool, IpNet)>,
}

impl fmt::Debug for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Set")
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("listen_port", &self.listen_port)
            .field("fwmark", &self.fwmark)
            .field("replace_peers", &self.replace_peers)
            .field("peers", &self.peers)
            .finish()
    }
}

impl fmt::Debug for PeerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerSet")
            .field("public_key", &self.public_key)
            .field("remove", &self.remove)
            .field("update_only", &self.update_only)
            .field(
                "preshared_key",
                &self.preshared_key.map(|k| k.map(|_| "<redacted>")),
            )
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("replace_allowed_ips", &self.replace_allowed_ips)
            .field("allowed_ips", &self.allowed_ips)
            .finish()
    }
}

fn invalid(message: String) -> Refusal {
    Refusal::new(Errno::INVAL, message)
}

/// 64 hex digits (either case) into 32 bytes; the error never echoes the value.
fn parse_hex_key(key: &str, value: &str) -> Result<[u8; 32], Refusal> {
    let bad = || invalid(format!("{key}: not 64 hex digits"));
    if value.len() != 64 || !value.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&value[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, Refusal> {
    let bad = || {
        invalid(format!(
            "{key}: {:?} is not a number in range",
            truncate(value)
        ))
    };
    // `str::parse` takes a leading `+`; the protocol's numbers are digits only.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

fn parse_true(key: &str, value: &str) -> Result<bool, Refusal> {
    match value {
        "true" => Ok(true),
        _ => Err(invalid(format!(
            "{key}: only \"true\" is accepted, not {:?}",
            truncate(value)
        ))),
    }
}

/// Parses the lines of a `set=1` operation (without `set=1` and the blank line that
/// ends it). Keys and values as wireguard-go takes them; any other key is refused.
pub fn parse_set<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Set, Refusal> {
    let mut set = Set::default();
    for line in lines {
        let Some((key, value)) = line.split_once('=') else {
            return Err(Refusal::new(
                Errno::PROTO,
                format!("line without '=': {:?}", truncate(line)),
            ));
        };
        if key == "public_key" {
            let key = PublicKey::from_bytes(parse_hex_key(key, value)?);
            set.peers.push(PeerSet {
                public_key: key,
                remove: false,
                update_only: false,
                preshared_key: None,
                endpoint: None,
                persistent_keepalive: None,
                replace_allowed_ips: false,
                allowed_ips: Vec::new(),
            });
            continue;
        }
        let Some(peer) = set.peers.last_mut() else {
            match key {
                "private_key" => {
                    set.private_key = Some(PrivateKey::from_bytes(parse_hex_key(key, value)?))
                }
                "listen_port" => set.listen_port = Some(parse_num(key, value)?),
                "fwmark" => set.fwmark = Some(parse_num(key, value)?),
                "replace_peers" => set.replace_peers = parse_true(key, value)?,
                _ => return Err(invalid(format!("unknown device key {:?}", truncate(key)))),
            }
            continue;
        };
        match key {
            "remove" => peer.remove = parse_true(key, value)?,
            "update_only" => peer.update_only = parse_true(key, value)?,
            "preshared_key" => {
                let k = parse_hex_key(key, value)?;
                peer.preshared_key = Some((k != [0; 32]).then_some(k));
            }
            "endpoint" => {
                peer.endpoint = Some(value.parse().map_err(|_| {
                    invalid(format!(
                        "endpoint: {:?} is not IP:port or [IPv6]:port",
                        truncate(value)
                    ))
                })?)
            }
            "persistent_keepalive_interval" => {
                peer.persistent_keepalive = Some(parse_num(key, value)?)
            }
            "replace_allowed_ips" => peer.replace_allowed_ips = parse_true(key, value)?,
            "allowed_ip" => {
                let (add, text) = match value.strip_prefix('-') {
                    Some(rest) => (false, rest),
                    None => (true, value),
                };
                let net: IpNet = text.parse().map_err(|_| {
                    invalid(format!(
                        "allowed_ip: {:?} is not a prefix (e.g. 192.0.2.0/24)",
                        truncate(text)
                    ))
                })?;
                // As WireGuard does: host bits beyond the prefix are cleared.
                peer.allowed_ips.push((add, net.trunc()));
            }
            "protocol_version" => {
                if value != "1" {
                    return Err(invalid(format!(
                        "protocol_version {:?}: only 1 is spoken",
                        truncate(value)
                    )));
                }
            }
            _ => return Err(invalid(format!("unknown peer key {:?}", truncate(key)))),
        }
    }
    Ok(set)
}

/// At most 40 characters of client text, for messages: a value may be a key sent
/// under the wrong name, and a log line never holds a whole one.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn key(b: u8) -> [u8; 32] {
        [b; 32]
    }

    fn device() -> Device {
        Device {
            private_key: PrivateKey::from_bytes(key(1)),
            listen_port: Some(51820),
            peer: Peer {
                public_key: PublicKey::from_bytes(key(0xab)),
                preshared_key: None,
                endpoint: Some("198.51.100.7:40000".parse().unwrap()),
                last_handshake: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 250)),
                rx_bytes: 10,
                tx_bytes: 20,
                persistent_keepalive: 25,
                allowed_ips: vec!["10.0.0.1/32".parse().unwrap()],
            },
        }
    }

    #[test]
    fn get_writes_wireguard_gos_keys_in_its_order_with_unix_time() {
        let text = device().to_text();
        let want = format!(
            "private_key={}\nlisten_port=51820\npublic_key={}\npreshared_key={}\n\
             protocol_version=1\nendpoint=198.51.100.7:40000\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=250\n\
             tx_bytes=20\nrx_bytes=10\npersistent_keepalive_interval=25\n\
             allowed_ip=10.0.0.1/32\n",
            "01".repeat(32),
            "ab".repeat(32),
            "00".repeat(32),
        );
        assert_eq!(text, want);
        assert_eq!(Errno::status(None), "errno=0\n\n");
        assert_eq!(Errno::status(Some(Errno::INVAL)), "errno=-22\n\n");
    }

    #[test]
    fn get_without_a_handshake_says_zero_and_no_endpoint() {
        let mut d = device();
        d.peer.last_handshake = None;
        d.peer.endpoint = None;
        d.listen_port = None;
        let text = d.to_text();
        assert!(text.contains("last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"));
        assert!(!text.contains("endpoint=") && !text.contains("listen_port="));
    }

    #[test]
    fn set_parses_what_wg_set_sends() {
        let pk = "ab".repeat(32);
        let psk = "cd".repeat(32);
        let lines = [
            "listen_port=51821".to_string(),
            format!("public_key={pk}"),
            format!("preshared_key={psk}"),
            "endpoint=[2001:db8::1]:51820".into(),
            "persistent_keepalive_interval=10".into(),
            "replace_allowed_ips=true".into(),
            "allowed_ip=10.0.0.1/32".into(),
            "allowed_ip=192.0.2.9/24".into(),
            "allowed_ip=-198.51.100.0/24".into(),
        ];
        let set = parse_set(lines.iter().map(String::as_str)).unwrap();
        assert_eq!(set.listen_port, Some(51821));
        let p = &set.peers[0];
        assert_eq!(p.public_key, PublicKey::from_bytes(key(0xab)));
        assert_eq!(p.preshared_key, Some(Some(key(0xcd))));
        assert_eq!(p.endpoint, Some("[2001:db8::1]:51820".parse().unwrap()));
        assert_eq!(p.persistent_keepalive, Some(10));
        assert!(p.replace_allowed_ips);
        assert_eq!(
            p.allowed_ips,
            vec![
                (true, "10.0.0.1/32".parse().unwrap()),
                (true, "192.0.2.0/24".parse().unwrap()),
                (false, "198.51.100.0/24".parse().unwrap()),
            ]
        );
        let debug = format!("{set:?}");
        assert!(
            !debug.contains("205") && debug.contains("<redacted>"),
            "{debug}"
        );
    }

    #[test]
    fn a_zero_preshared_key_clears_it() {
        let lines = [
            format!("public_key={}", "ab".repeat(32)),
            format!("preshared_key={}", "0".repeat(64)),
        ];
        let set = parse_set(lines.iter().map(String::as_str)).unwrap();
        assert_eq!(set.peers[0].preshared_key, Some(None));
    }

    #[test]
    fn bad_input_is_refused_with_einval_and_names_the_key_not_the_value() {
        let pk = format!("public_key={}", "ab".repeat(32));
        for (lines, errno, said) in [
            (
                vec!["frobnicate=1".to_string()],
                Errno::INVAL,
                "unknown device key",
            ),
            (
                vec![pk.clone(), "colour=blue".into()],
                Errno::INVAL,
                "unknown peer key",
            ),
            (
                vec![format!("private_key={}", "zz".repeat(32))],
                Errno::INVAL,
                "private_key",
            ),
            (
                vec![format!("private_key={}", "ab".repeat(31))],
                Errno::INVAL,
                "private_key",
            ),
            (
                vec!["listen_port=65536".into()],
                Errno::INVAL,
                "listen_port",
            ),
            (vec!["listen_port=+1".into()], Errno::INVAL, "listen_port"),
            (
                vec!["replace_peers=false".into()],
                Errno::INVAL,
                "replace_peers",
            ),
            (
                vec![pk.clone(), "endpoint=nowhere".into()],
                Errno::INVAL,
                "endpoint",
            ),
            (
                vec![pk.clone(), "allowed_ip=10.0.0.0".into()],
                Errno::INVAL,
                "allowed_ip",
            ),
            (
                vec![pk.clone(), "protocol_version=2".into()],
                Errno::INVAL,
                "protocol_version",
            ),
            (vec!["no equals sign".into()], Errno::PROTO, "without '='"),
        ] {
            let err = parse_set(lines.iter().map(String::as_str)).unwrap_err();
            assert_eq!(err.errno, errno, "{lines:?}: {err}");
            assert!(err.message.contains(said), "{lines:?}: {err}");
        }
        let secret = "zz".repeat(32);
        let err = parse_set([format!("private_key={secret}").as_str()]).unwrap_err();
        assert!(!err.message.contains(&secret));
        // Found by the uapi_set fuzz target: any value may be a key sent by mistake.
        let key = "cc".repeat(32);
        for line in [
            format!("replace_peers={key}"),
            format!("listen_port={key}"),
            format!("fwmark=1{key}"),
            format!("endpoint={key}"),
        ] {
            let lines = [format!("public_key={}", "ab".repeat(32)), line];
            let err = parse_set(lines.iter().map(String::as_str)).unwrap_err();
            assert!(!err.message.contains(&key), "{}", err.message);
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec("\\PC{0,80}", 0..8)) {
            let _ = parse_set(lines.iter().map(String::as_str));
        }
    }
}
