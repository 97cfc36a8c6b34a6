//! Tunnel cores: one file per encapsulation. A core takes bytes in and writes bytes out
//! into the caller's buffer, and says what to do with them ([`Action`]).
//!
//! Rules: no I/O, no allocation per packet, and a bad packet is a [`DropReason`], never
//! a panic. Time comes from the caller (`now`). The one exception is inside boringtun:
//! WireGuard's protocol timers and handshake rate limiter live in its `noise::Tunn`
//! ([`wireguard::WireGuardCore`]) and read `Instant::now()` there; the line's policy
//! around it ([`wireguard_peer::WireGuardPeer`]: endpoint, hold-off, re-dial) takes `now`.
//!
//! The IP tunnels share one core, [`iptunnel::IpTunnelCore`] (outer header, TTL/TOS,
//! RFC 6040 ECN, keepalive probes), and differ in the layer between outer and inner
//! header: none for [`ipip`] (ipip, sit, ip6ip6, ipip6), a GRE header for [`gre`] (gre,
//! gre6), with [`esp`] under GRE when encrypted. [`iptype`] holds the types all of them
//! share (tunnel type, IP version, `ttl`, `tos`), so the layers never import the core;
//! [`probe`] builds and reflects keepalive probes, [`keepalive`] is the liveness state
//! machine. [`keys`] holds the key types (WireGuard's and ESP's) that the config stores
//! and the cores use.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod esp;
pub mod gre;
pub mod ipip;
pub mod iptunnel;
pub mod iptype;
pub mod keepalive;
pub mod keys;
pub mod pmtu;
pub mod probe;
pub mod wireguard;
pub mod wireguard_peer;

/// Why a tunnel core cannot be built from its settings (the config layer checks the
/// same things first, with the TOML key in its message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// The local or peer address is not of the family the tunnel type runs over.
    #[error("{kind} runs over {want}, but the {which} address {addr} is not")]
    AddressFamily {
        /// The tunnel type.
        kind: &'static str,
        /// "IPv4" or "IPv6".
        want: &'static str,
        /// "local" or "peer".
        which: &'static str,
        /// The offending address.
        addr: std::net::IpAddr,
    },
    /// GRE options (key, sequence numbers, checksums) on a type without a GRE header.
    #[error(
        "{kind} has no GRE header: keys, sequence numbers and checksums apply to gre and gre6 only"
    )]
    GreOptions {
        /// The tunnel type.
        kind: &'static str,
    },
    /// ESP asked for on a type other than gre/gre6, or together with keepalives.
    #[error("ESP (--encrypt) protects gre and gre6 lines without keepalive, not {what}")]
    EspUnsupported {
        /// What is in the way.
        what: &'static str,
    },
    /// The ESP keys cannot be made into security associations.
    #[error("ESP: {0}")]
    EspKeys(#[source] esp::KdfError),
}

/// What the data plane does with the bytes a core produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Send this datagram to the peer.
    WriteToNetwork(&'a [u8]),
    /// Write this IP packet to the line's TUN device.
    WriteToTun(&'a [u8]),
    /// Nothing to send: the input was consumed (a keepalive, a queued packet, ...).
    Done,
    /// The input was refused; count it under this reason.
    Drop(DropReason),
}

/// Why a packet was dropped: one counter each, shown by `twnode line show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Failed authentication (bad MAC or AEAD tag): forged, corrupted or wrong key.
    BadAuth,
    /// A counter seen before, or too old for the replay window.
    Replay,
    /// Too short, wrong length or unknown message type.
    Malformed,
    /// Addressed to a session or index we do not have.
    UnknownSession,
    /// A handshake refused (stale timestamp, unexpected message).
    HandshakeRejected,
    /// Under load: answered with a cookie instead of a handshake.
    UnderLoad,
    /// The packet from the TUN device is not IPv4 or IPv6.
    NotIp,
    /// No peer endpoint known yet (a server before its client's first handshake).
    NoEndpoint,
    /// The kernel refused to send or to take the packet (socket or TUN queue full).
    IoError,
    /// The session expired and the peer does not answer.
    Expired,
    /// An IP tunnel packet whose outer source is not the line's peer.
    UnknownPeer,
    /// A GRE packet whose key is not the line's input key (or has none, or has one the
    /// line does not expect).
    WrongKey,
    /// A GRE checksum that does not verify, or none where the line requires one.
    BadChecksum,
    /// A GRE sequence number not above the last one accepted (or none where the line
    /// requires one).
    OutOfOrder,
    /// An IP tunnel packet shorter than its headers or length fields say.
    Truncated,
    /// An inner packet of an IP version (or GRE protocol type) the line does not carry.
    WrongInnerVersion,
    /// RFC 6040: the outer header says congestion experienced, but the inner packet is
    /// not ECN-capable, so the congestion mark can only be signalled by dropping it.
    CongestionNotEct,
    /// The inner packet and the outer headers do not fit the output buffer or the outer
    /// length field.
    TooBig,
    /// Too big for the path once encapsulated (a line MTU set above what the parent
    /// carries, or a parent whose MTU shrank): dropped, and its sender told with ICMP
    /// fragmentation needed / packet too big.
    PathMtu,
    /// An ESP packet whose SPI is not the line's inbound SPI.
    UnknownSpi,
    /// An ESP sequence number below the anti-replay window.
    ReplayTooOld,
    /// ESP: no sequence number is reserved on disk yet, so nothing may be sent (the
    /// state directory cannot be written, or a burst outran the reservation).
    SeqNotReserved,
    /// Addressed like the peer's keepalive probe (our underlay address to the peer's,
    /// inside the tunnel) but not reflected: a probe nested in a probe or carrying data,
    /// its TTL run out, or more probes than a keepalive sends (an amplification guard).
    ProbeRefused,
    /// ESP epoch keying: no epoch is agreed with the peer yet (its Hello has not
    /// arrived), or the epoch's packet limit is reached before the rekey finished, so
    /// nothing may be sent.
    NoSession,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 24] = [
        DropReason::BadAuth,
        DropReason::Replay,
        DropReason::Malformed,
        DropReason::UnknownSession,
        DropReason::HandshakeRejected,
        DropReason::UnderLoad,
        DropReason::NotIp,
        DropReason::NoEndpoint,
        DropReason::IoError,
        DropReason::Expired,
        DropReason::UnknownPeer,
        DropReason::WrongKey,
        DropReason::BadChecksum,
        DropReason::OutOfOrder,
        DropReason::Truncated,
        DropReason::WrongInnerVersion,
        DropReason::CongestionNotEct,
        DropReason::TooBig,
        DropReason::PathMtu,
        DropReason::UnknownSpi,
        DropReason::ReplayTooOld,
        DropReason::SeqNotReserved,
        DropReason::ProbeRefused,
        DropReason::NoSession,
    ];

    /// The counter's index in [`DropReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The counter's name as `line show` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BadAuth => "bad_auth",
            DropReason::Replay => "replay",
            DropReason::Malformed => "malformed",
            DropReason::UnknownSession => "unknown_session",
            DropReason::HandshakeRejected => "handshake_rejected",
            DropReason::UnderLoad => "under_load",
            DropReason::NotIp => "not_ip",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::IoError => "io_error",
            DropReason::Expired => "expired",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::WrongKey => "wrong_key",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::OutOfOrder => "out_of_order",
            DropReason::Truncated => "truncated",
            DropReason::WrongInnerVersion => "wrong_inner_version",
            DropReason::CongestionNotEct => "ce_on_not_ect",
            DropReason::TooBig => "too_big",
            DropReason::PathMtu => "path_mtu",
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::ReplayTooOld => "replay_too_old",
            DropReason::SeqNotReserved => "seq_not_reserved",
            DropReason::ProbeRefused => "probe_refused",
            DropReason::NoSession => "no_session",
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn drop_reason_index_is_its_position_in_all() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            DropReason::ALL.len(),
            "counter names are unique"
        );
    }
}
