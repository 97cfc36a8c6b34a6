//! Tunnel cores: one file per encapsulation. A core takes bytes in and writes bytes out
//! into the caller's buffer, and says what to do with them ([`Action`]).
//!
//! Rules: no I/O, no allocation per packet, and a bad packet is a [`DropReason`], never
//! a panic. Time comes from the caller where the core keeps timers of its own; the one
//! exception is WireGuard, whose timers live inside boringtun's `noise::Tunn` and read
//! `Instant::now()` there.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod wireguard;

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
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 10] = [
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
        }
    }
}
