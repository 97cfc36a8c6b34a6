//! One WireGuard line's policy around its protocol core ([`WireGuardCore`]): where the
//! peer is, when we may start a handshake, when packets that waited for a session go,
//! and what is likely wrong while no session comes. The data plane hands it what it read
//! (`handle_*`) and sends what it returns (`poll_*`, [`Transmit`]: bytes in the caller's
//! buffer and their destination); nothing here does I/O.
//!
//! Rules:
//! - Roaming: an authenticated datagram from a new address moves the endpoint; nothing
//!   unauthenticated does, or a forged packet could steal the line.
//! - Cookie replies, received or sent, prove nothing about where the peer is now: they
//!   never move the endpoint nor confirm a session (a cookie answers an unauthenticated
//!   initiation under load).
//! - Hold-off: like the kernel and wireguard-go, a line that has just answered the peer's
//!   handshake starts none of its own for [`RESPONSE_HOLDOFF`]. Packets that wait for the
//!   session stay queued in the core until the peer confirms it (its first data or
//!   keepalive), then go out. Initiating at once instead makes two handshakes cross,
//!   which wireguard-go (0.0.20220316) sometimes resolves into a session it cannot
//!   receive on. A held-back initiation leaves the core waiting for an answer; its timers
//!   resend one after REKEY_TIMEOUT if the peer's session never comes.
//! - A client (a line with an endpoint to dial) starts a handshake whenever it has no
//!   session, so it comes back by itself after its peer or the underlay returns.
//! - A server answers data from its peer's address that no session can read (it
//!   restarted, the client did not) with a handshake initiation to that address at once,
//!   instead of waiting ~15 s for the client's timers to notice. The data is
//!   unauthenticated, so this moves nothing and happens at most once per
//!   [`RESPONSE_HOLDOFF`]: a forged packet buys one initiation.
//!
//! Time: every decision here takes `now` from the caller, so tests drive it with a fake
//! clock. boringtun's `Tunn` inside the core still reads the clock itself for its own
//! timers (retransmit, rekey, keepalive, session expiry) and its handshake rate limiter;
//! that stays as boringtun made it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::wireguard::{Keys, Stats, WireGuardCore};
use super::{Action, DropReason};

/// How long after answering a handshake we start none of our own (WireGuard's
/// REKEY_TIMEOUT, which the kernel applies from the last handshake message sent).
pub const RESPONSE_HOLDOFF: Duration = Duration::from_secs(5);
/// Unanswered initiations before a line says the peer does not answer: the third goes
/// out once two went unanswered for REKEY_TIMEOUT each, ~10 s after the first.
pub const NO_ANSWER_AFTER: u32 = 3;
/// How long a failed handshake from the peer's address stays a line's likely problem.
const REJECTED_MEMORY: Duration = Duration::from_secs(120);

/// WireGuard message types (the first byte of every message).
const HANDSHAKE_INITIATION: u8 = 1;
const HANDSHAKE_RESPONSE: u8 = 2;
const COOKIE_REPLY: u8 = 3;

/// Where a line's peer is, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    /// Where to dial (a client); a server learns it from the first handshake.
    pub endpoint: Option<SocketAddr>,
    /// A server: the peer's underlay address, which gets a handshake initiation back
    /// when it sends data no session of ours can read.
    pub redial_from: Option<IpAddr>,
}

/// A datagram to send: bytes in the caller's buffer, and where to.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub datagram: &'a [u8],
    pub to: SocketAddr,
}

/// What to do with a packet read from the TUN device.
#[derive(Debug, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// Send this: the encrypted packet, or the handshake initiation it now waits for.
    Send(Transmit<'a>),
    /// The packet waits in the core for the handshake in progress.
    Queued,
    /// The packet waits in the core, and the initiation it asked for is held back
    /// ([`RESPONSE_HOLDOFF`]).
    Held,
    /// Refused; count it under this reason.
    Drop(DropReason),
}

/// What to do with a datagram received from the network.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Write this inner packet to the TUN device.
    Tun(&'a [u8]),
    /// Send this answer now: a handshake response, or the keepalive that confirms our
    /// handshake.
    Reply(Transmit<'a>),
    /// Consumed: a keepalive, a cookie reply.
    Done,
    /// Refused; count it under `reason`. `answer`, if any, goes out all the same: a
    /// cookie reply (under load), or a handshake initiation back to the peer's address.
    Drop {
        reason: DropReason,
        answer: Option<Transmit<'a>>,
    },
}

/// Something the data plane logs, with the line's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A session is up (seen at a timer tick).
    Up { endpoint: Option<SocketAddr> },
    /// The session is gone.
    Down,
    /// An authenticated datagram came from a new address.
    EndpointChanged {
        old: Option<SocketAddr>,
        new: SocketAddr,
    },
    /// Data no session could read got a handshake initiation back.
    HandshakeBack { to: SocketAddr },
    /// What is likely wrong, reported once per episode.
    Problem(Problem),
}

/// What is likely wrong with a line that has no session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Our handshake initiations went unanswered.
    NoAnswer {
        initiations: u32,
        to: SocketAddr,
        /// Since the first of them.
        since: Duration,
    },
    /// Handshake messages from the peer's address failed authentication.
    Rejected {
        messages: u32,
        from: IpAddr,
        /// Since the first of them.
        since: Duration,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoAnswer {
                initiations,
                to,
                since,
            } => write!(
                f,
                "no answer to {initiations} handshake initiations sent to {to} over the last \
                 {} s: the peer is unreachable, or does not know this line's key (check that \
                 the peer's --peer-pubkey is this line's public key, and this line's \
                 --peer-pubkey the peer's)",
                since.as_secs()
            )?,
            Problem::Rejected {
                messages: 1, from, ..
            } => write!(
                f,
                "a handshake message from the peer's address {from} failed authentication"
            )?,
            Problem::Rejected {
                messages,
                from,
                since,
            } => write!(
                f,
                "{messages} handshake messages from the peer's address {from} failed \
                 authentication over the last {} s",
                since.as_secs()
            )?,
        }
        if let Problem::Rejected { .. } = self {
            write!(
                f,
                " (counted as bad_auth): the peer does not use the keys this line expects \
                 (check that its --peer-pubkey is this line's public key, and this line's \
                 --peer-pubkey its public key)"
            )?;
        }
        Ok(())
    }
}

/// Where queued packets go once the session is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// To whoever just completed a handshake with us.
    To(SocketAddr),
    /// To the endpoint as it is when the flush starts.
    Endpoint,
}

/// The evidence behind [`Problem`]: counted from what went out and came in, cleared by
/// any authenticated datagram.
#[derive(Debug, Default)]
struct Diagnosis {
    unanswered: u32,
    unanswered_since: Option<Instant>,
    initiations_to: Option<SocketAddr>,
    rejected: u32,
    rejected_since: Option<Instant>,
    rejected_last: Option<Instant>,
    rejected_from: Option<IpAddr>,
    reported_no_answer: bool,
    reported_rejected: bool,
}

/// One WireGuard line's peer: the protocol core plus the line's policy.
pub struct WireGuardPeer {
    core: WireGuardCore,
    endpoint: Option<SocketAddr>,
    /// A client: dials whenever it has no session.
    dials: bool,
    redial_from: Option<IpAddr>,
    /// The peer's own underlay address, as configured (a server's peer, a client's
    /// dial target): where failed handshakes point at wrong keys.
    peer_ip: Option<IpAddr>,
    /// When we last answered the peer's handshake initiation.
    responded: Option<Instant>,
    /// Packets from the TUN device wait in the core for a session.
    queued: bool,
    /// When we last sent a handshake back toward data we could not read.
    redialed: Option<Instant>,
    flush: Option<Flush>,
    was_up: bool,
    // Events not yet polled.
    moved: Option<(Option<SocketAddr>, SocketAddr)>,
    handshake_back: Option<SocketAddr>,
    transition: Option<Event>,
    problem: Option<Problem>,
    diagnosis: Diagnosis,
}

impl WireGuardPeer {
    /// A peer that has not yet shaken hands.
    pub fn new(keys: Keys<'_>, config: PeerConfig) -> Self {
        WireGuardPeer {
            core: WireGuardCore::new(keys),
            endpoint: config.endpoint,
            dials: config.endpoint.is_some(),
            redial_from: config.redial_from,
            peer_ip: config.redial_from.or(config.endpoint.map(|e| e.ip())),
            responded: None,
            queued: false,
            redialed: None,
            flush: None,
            was_up: false,
            moved: None,
            handshake_back: None,
            transition: None,
            problem: None,
            diagnosis: Diagnosis::default(),
        }
    }

    /// An IP packet read from the TUN device. `out` must hold `packet.len() + 32` and
    /// at least [`super::wireguard::MIN_OUT`] bytes.
    pub fn handle_tun_packet<'a>(
        &mut self,
        packet: &[u8],
        out: &'a mut [u8],
        now: Instant,
    ) -> Outbound<'a> {
        match self.core.handle_tun_packet(packet, out) {
            Action::WriteToNetwork(p) => {
                // An initiation instead of data: the packet waits for it.
                if p.first() == Some(&HANDSHAKE_INITIATION) {
                    self.queued = true;
                    if !self.may_send(p, now) {
                        return Outbound::Held;
                    }
                }
                match self.endpoint {
                    Some(to) => Outbound::Send(self.transmit(p, to, now)),
                    None => Outbound::Drop(DropReason::NoEndpoint),
                }
            }
            Action::Done => {
                self.queued = true;
                Outbound::Queued
            }
            Action::Drop(r) => Outbound::Drop(r),
            // Never: encrypting yields no packet for the TUN device.
            Action::WriteToTun(_) => Outbound::Queued,
        }
    }

    /// A datagram from `from`. After a batch of these, while [`Self::flush_pending`],
    /// call [`Self::poll_queued`] to send the packets that waited for the session.
    pub fn handle_datagram<'a>(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        out: &'a mut [u8],
        now: Instant,
    ) -> Inbound<'a> {
        // The core's output becomes a range of `out`, so `out` is free again for a
        // handshake back below.
        let base = out.as_ptr() as usize;
        let range = |p: &[u8]| {
            let start = (p.as_ptr() as usize).wrapping_sub(base);
            start..start.wrapping_add(p.len())
        };
        let got = match self.core.handle_datagram(from.ip(), datagram, out) {
            Action::WriteToTun(p) => Got::Tun(range(p)),
            Action::WriteToNetwork(p) => Got::Network(range(p)),
            Action::Done => Got::Done,
            Action::Drop(r) => Got::Drop(r),
        };
        match got {
            Got::Tun(r) => {
                self.confirmed();
                self.authenticated(from);
                match out.get(r) {
                    Some(p) => Inbound::Tun(p),
                    None => Inbound::Drop {
                        reason: DropReason::IoError,
                        answer: None,
                    },
                }
            }
            Got::Network(r) => {
                let Some(p) = out.get(r) else {
                    return Inbound::Drop {
                        reason: DropReason::IoError,
                        answer: None,
                    };
                };
                if p.first() == Some(&COOKIE_REPLY) {
                    // boringtun answers an initiation under load with a cookie instead
                    // of an error: unauthenticated, so nothing moves.
                    return Inbound::Drop {
                        reason: DropReason::UnderLoad,
                        answer: Some(Transmit {
                            datagram: p,
                            to: from,
                        }),
                    };
                }
                if p.first() == Some(&HANDSHAKE_RESPONSE) {
                    self.responded = Some(now);
                }
                self.flush = Some(Flush::To(from));
                self.authenticated(from);
                Inbound::Reply(self.transmit(p, from, now))
            }
            Got::Done if datagram.first() == Some(&COOKIE_REPLY) => Inbound::Done,
            Got::Done => {
                self.confirmed();
                self.authenticated(from);
                Inbound::Done
            }
            Got::Drop(reason) => {
                self.note_rejected(from, datagram, reason, now);
                let answer = self.handshake_back(from, reason, out, now);
                Inbound::Drop { reason, answer }
            }
        }
    }

    /// Whether packets that waited for a session may go now ([`Self::poll_queued`]).
    pub fn flush_pending(&self) -> bool {
        self.flush.is_some()
    }

    /// The next packet that waited for the session, once the peer completed or
    /// confirmed a handshake; `None` when the queue is empty or must keep waiting.
    pub fn poll_queued<'a>(&mut self, out: &'a mut [u8], now: Instant) -> Option<Transmit<'a>> {
        let to = match self.flush? {
            Flush::To(to) => to,
            Flush::Endpoint => {
                let Some(to) = self.endpoint else {
                    self.flush = None;
                    return None;
                };
                self.flush = Some(Flush::To(to));
                to
            }
        };
        match self.core.poll_queued(out) {
            Action::WriteToNetwork(p) if self.may_send(p, now) => Some(self.transmit(p, to, now)),
            _ => {
                // With a session the queue is empty now; without, it still waits.
                self.queued = self.core.stats().last_handshake.is_none();
                self.flush = None;
                None
            }
        }
    }

    /// WireGuard's timers (retransmit, rekey, keepalive): call every tick, a few times a
    /// second, then [`Self::poll_dial`]. Up, down and problems become events here, so
    /// the packet paths never pay for looking.
    pub fn poll_timers<'a>(&mut self, out: &'a mut [u8], now: Instant) -> Option<Transmit<'a>> {
        // Other outcomes (Expired: the peer stopped answering) need no send; a client
        // re-dials in `poll_dial`.
        let action = self.core.poll_timers(out);
        let up = self.core.is_up();
        if up != self.was_up {
            self.was_up = up;
            self.transition = Some(if up {
                Event::Up {
                    endpoint: self.endpoint,
                }
            } else {
                Event::Down
            });
        }
        if !up {
            self.problem = self.unreported_problem(now);
        }
        match action {
            Action::WriteToNetwork(p) if self.may_send(p, now) => {
                let to = self.endpoint?;
                Some(self.transmit(p, to, now))
            }
            _ => None,
        }
    }

    /// A client's persistence: a handshake whenever it has no session (and none runs).
    pub fn poll_dial<'a>(&mut self, out: &'a mut [u8], now: Instant) -> Option<Transmit<'a>> {
        if !self.dials || self.core.is_up() {
            return None;
        }
        match self.core.poll_handshake(out) {
            Action::WriteToNetwork(p) if self.may_send(p, now) => {
                let to = self.endpoint?;
                Some(self.transmit(p, to, now))
            }
            _ => None,
        }
    }

    /// The next thing worth a log line.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some((old, new)) = self.moved.take() {
            return Some(Event::EndpointChanged { old, new });
        }
        if let Some(to) = self.handshake_back.take() {
            return Some(Event::HandshakeBack { to });
        }
        if let Some(e) = self.transition.take() {
            return Some(e);
        }
        self.problem.take().map(Event::Problem)
    }

    /// A problem not yet reported as an event, marked reported (once per episode).
    fn unreported_problem(&mut self, now: Instant) -> Option<Problem> {
        let problem = self.diagnose(now)?;
        let d = &mut self.diagnosis;
        let reported = match problem {
            Problem::NoAnswer { .. } => &mut d.reported_no_answer,
            Problem::Rejected { .. } => &mut d.reported_rejected,
        };
        if *reported {
            return None;
        }
        *reported = true;
        Some(problem)
    }

    /// What is likely wrong, while the line has no session.
    pub fn problem(&self, now: Instant) -> Option<Problem> {
        if self.core.is_up() {
            return None;
        }
        self.diagnose(now)
    }

    /// What the evidence points at, up or not.
    fn diagnose(&self, now: Instant) -> Option<Problem> {
        let d = &self.diagnosis;
        let age = |t: Instant| now.saturating_duration_since(t);
        if let (Some(first), Some(last), Some(from)) =
            (d.rejected_since, d.rejected_last, d.rejected_from)
        {
            if age(last) < REJECTED_MEMORY {
                return Some(Problem::Rejected {
                    messages: d.rejected,
                    from,
                    since: age(first),
                });
            }
        }
        match (d.unanswered_since, d.initiations_to) {
            (Some(first), Some(to)) if d.unanswered >= NO_ANSWER_AFTER => Some(Problem::NoAnswer {
                initiations: d.unanswered,
                to,
                since: age(first),
            }),
            _ => None,
        }
    }

    /// Where datagrams for the peer go now.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// Whether a session is established and fresh.
    pub fn is_up(&self) -> bool {
        self.core.is_up()
    }

    /// The core's traffic figures.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// Whether `message`, which the core wants sent, may go now: anything but an
    /// initiation of our own within [`RESPONSE_HOLDOFF`] of answering the peer's.
    fn may_send(&self, message: &[u8], now: Instant) -> bool {
        message.first() != Some(&HANDSHAKE_INITIATION)
            || self
                .responded
                .is_none_or(|at| now.saturating_duration_since(at) >= RESPONSE_HOLDOFF)
    }

    /// `datagram` goes to `to`; initiations are counted until the peer answers.
    fn transmit<'a>(&mut self, datagram: &'a [u8], to: SocketAddr, now: Instant) -> Transmit<'a> {
        if datagram.first() == Some(&HANDSHAKE_INITIATION) {
            let d = &mut self.diagnosis;
            d.unanswered = d.unanswered.saturating_add(1);
            d.unanswered_since.get_or_insert(now);
            d.initiations_to = Some(to);
        }
        Transmit { datagram, to }
    }

    /// The peer's first data or keepalive on a session: what waited for it can go.
    fn confirmed(&mut self) {
        if self.queued && self.flush.is_none() {
            self.flush = Some(Flush::Endpoint);
        }
    }

    /// An authenticated datagram from `from`: the peer is there (roaming), and knows
    /// our key.
    fn authenticated(&mut self, from: SocketAddr) {
        if self.endpoint != Some(from) {
            let old = self.moved.map_or(self.endpoint, |(old, _)| old);
            self.moved = Some((old, from));
            self.endpoint = Some(from);
        }
        if self.diagnosis.unanswered != 0 || self.diagnosis.rejected_from.is_some() {
            self.diagnosis = Diagnosis::default();
        }
    }

    /// A handshake message from the peer's address that failed authentication: the two
    /// ends' keys do not match.
    fn note_rejected(&mut self, from: SocketAddr, datagram: &[u8], r: DropReason, now: Instant) {
        let handshake = matches!(
            datagram.first(),
            Some(&HANDSHAKE_INITIATION) | Some(&HANDSHAKE_RESPONSE)
        );
        let from_peer =
            self.peer_ip == Some(from.ip()) || self.endpoint.map(|e| e.ip()) == Some(from.ip());
        if r != DropReason::BadAuth || !handshake || !from_peer {
            return;
        }
        let d = &mut self.diagnosis;
        d.rejected = d.rejected.saturating_add(1);
        d.rejected_since.get_or_insert(now);
        d.rejected_last = Some(now);
        d.rejected_from = Some(from.ip());
    }

    /// A server's answer to data from its peer's address that no session could read: a
    /// handshake initiation to that address, at most once per [`RESPONSE_HOLDOFF`].
    fn handshake_back<'a>(
        &mut self,
        from: SocketAddr,
        r: DropReason,
        out: &'a mut [u8],
        now: Instant,
    ) -> Option<Transmit<'a>> {
        if r != DropReason::UnknownSession
            || self.redial_from != Some(from.ip())
            || self.core.is_up()
            || self
                .redialed
                .is_some_and(|at| now.saturating_duration_since(at) < RESPONSE_HOLDOFF)
        {
            return None;
        }
        match self.core.poll_handshake_anew(out) {
            Action::WriteToNetwork(p) if self.may_send(p, now) => {
                self.redialed = Some(now);
                self.handshake_back = Some(from);
                Some(self.transmit(p, from, now))
            }
            _ => None,
        }
    }
}

/// The core's answer to a datagram, as ranges of the output buffer.
enum Got {
    Tun(Range<usize>),
    Network(Range<usize>),
    Done,
    Drop(DropReason),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod test {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::tunnel::keys::{PrivateKey, PublicKey};
    use crate::tunnel::wireguard::test::ipv4_packet;

    const A_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    const B_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20));
    const A: SocketAddr = SocketAddr::new(A_IP, 40000);
    /// A after roaming (same host, new NAT mapping).
    const A2: SocketAddr = SocketAddr::new(A_IP, 40001);
    const B: SocketAddr = SocketAddr::new(B_IP, 51820);
    /// Someone else: forges, replays, floods.
    const MALLORY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66)), 666);

    /// A data message for a session nobody has (a peer that restarted sees these).
    fn stray_data() -> Vec<u8> {
        let mut d = vec![0u8; 64];
        d[0] = 4;
        d[4..8].copy_from_slice(&0x00ab_cd01u32.to_le_bytes());
        d
    }

    fn peer(
        private: &PrivateKey,
        peer_public: &PublicKey,
        index: u32,
        config: PeerConfig,
    ) -> WireGuardPeer {
        WireGuardPeer::new(
            Keys {
                private,
                peer_public,
                preshared: None,
                keepalive: 25,
                index,
            },
            config,
        )
    }

    /// A client `a` at [`A`] and a server `b` at [`B`], wired back to back in memory
    /// (quinn's `Pair`), with a fake clock: `at(s)` is `s` seconds after the start.
    struct Pair {
        a: WireGuardPeer,
        b: WireGuardPeer,
        a_key: PrivateKey,
        t0: Instant,
        out: Vec<u8>,
    }

    impl Pair {
        fn new() -> Pair {
            let (a_key, b_key) = (PrivateKey::generate(), PrivateKey::generate());
            let client = PeerConfig {
                endpoint: Some(B),
                redial_from: None,
            };
            let server = PeerConfig {
                endpoint: None,
                redial_from: Some(A_IP),
            };
            Pair {
                a: peer(&a_key, &b_key.public_key(), 1, client),
                b: peer(&b_key, &a_key.public_key(), 2, server),
                a_key,
                t0: Instant::now(),
                out: vec![0u8; 2048],
            }
        }

        fn at(&self, secs: f64) -> Instant {
            self.t0 + Duration::from_secs_f64(secs)
        }

        /// The client's first initiation, answered by the server at `at(0)` (the
        /// answer is returned, not delivered).
        fn b_answers(&mut self) -> (Vec<u8>, Vec<u8>) {
            let now = self.at(0.0);
            let init = sent(self.a.poll_dial(&mut self.out, now), B);
            let response = reply(self.b.handle_datagram(A, &init, &mut self.out, now), A);
            assert_eq!(
                flush(&mut self.b, now),
                Vec::<Vec<u8>>::new(),
                "nothing waits yet"
            );
            (init, response)
        }

        /// A whole handshake at `at(0)`: both sides up, the server's endpoint is [`A`].
        fn shake_hands(&mut self) -> Vec<u8> {
            let (init, response) = self.b_answers();
            let now = self.at(0.0);
            let keepalive = reply(self.a.handle_datagram(B, &response, &mut self.out, now), B);
            assert_eq!(
                self.b.handle_datagram(A, &keepalive, &mut self.out, now),
                Inbound::Done
            );
            assert!(self.a.is_up() && self.b.is_up());
            init
        }

        /// The server's handshake back toward stray data from [`A`] at `at(secs)`.
        fn b_handshakes_back(&mut self, secs: f64) -> Vec<u8> {
            let now = self.at(secs);
            match self.b.handle_datagram(A, &stray_data(), &mut self.out, now) {
                Inbound::Drop {
                    answer: Some(t), ..
                } => sent(Some(t), A),
                other => panic!("a handshake back at {secs} s: {other:?}"),
            }
        }

        /// What the client sends to the server's TUN device once up.
        fn a_data(&mut self, payload: &[u8]) -> Vec<u8> {
            let now = self.at(0.0);
            sent_out(
                self.a
                    .handle_tun_packet(&ipv4_packet(payload), &mut self.out, now),
                B,
            )
        }
    }

    fn sent(t: Option<Transmit<'_>>, to: SocketAddr) -> Vec<u8> {
        let t = t.expect("a datagram to send");
        assert_eq!(t.to, to);
        t.datagram.to_vec()
    }

    fn sent_out(o: Outbound<'_>, to: SocketAddr) -> Vec<u8> {
        match o {
            Outbound::Send(t) => sent(Some(t), to),
            other => panic!("expected a datagram to {to}, got {other:?}"),
        }
    }

    fn reply(i: Inbound<'_>, to: SocketAddr) -> Vec<u8> {
        match i {
            Inbound::Reply(t) => sent(Some(t), to),
            other => panic!("expected a reply to {to}, got {other:?}"),
        }
    }

    /// What the data plane does after a batch of datagrams: sends what waited for the
    /// session, if anything may go.
    fn flush(p: &mut WireGuardPeer, now: Instant) -> Vec<Vec<u8>> {
        let mut out = [0u8; 2048];
        let mut sent = Vec::new();
        while p.flush_pending() {
            match p.poll_queued(&mut out, now) {
                Some(t) => sent.push(t.datagram.to_vec()),
                None => break,
            }
        }
        sent
    }

    fn events(p: &mut WireGuardPeer) -> Vec<Event> {
        std::iter::from_fn(|| p.poll_event()).collect()
    }

    /// A timer tick (where up, down and problems are noticed), then the events.
    fn tick(p: &mut WireGuardPeer, now: Instant) -> Vec<Event> {
        let mut out = [0u8; 256];
        let _ = p.poll_timers(&mut out, now);
        events(p)
    }

    #[test]
    fn roaming_moves_the_endpoint_only_on_authenticated_input() {
        let mut p = Pair::new();
        let init = p.shake_hands();
        assert_eq!(p.b.endpoint(), Some(A));
        let now = p.at(1.0);
        let _ = events(&mut p.b);

        let data = p.a_data(b"one");
        let mut flipped = p.a_data(b"two");
        flipped[20] ^= 1;
        let d = p.b.handle_datagram(MALLORY, &flipped, &mut p.out, now);
        assert!(
            matches!(
                d,
                Inbound::Drop {
                    reason: DropReason::BadAuth,
                    answer: None
                }
            ),
            "{d:?}"
        );
        for junk in [&[1u8, 0, 0, 0][..], &[4u8; 40][..], &stray_data()[..]] {
            let d = p.b.handle_datagram(MALLORY, junk, &mut p.out, now);
            assert!(matches!(d, Inbound::Drop { answer: None, .. }), "{d:?}");
        }
        assert_eq!(p.b.endpoint(), Some(A), "forged input moves nothing");
        assert_eq!(events(&mut p.b), vec![]);

        // The client's genuine data from a new port: the server follows it.
        assert!(matches!(
            p.b.handle_datagram(A2, &data, &mut p.out, now),
            Inbound::Tun(_)
        ));
        assert_eq!(p.b.endpoint(), Some(A2));
        assert_eq!(
            events(&mut p.b),
            vec![Event::EndpointChanged {
                old: Some(A),
                new: A2
            }]
        );
        // Its replay from elsewhere is refused and moves nothing.
        let d = p.b.handle_datagram(MALLORY, &data, &mut p.out, now);
        assert!(
            matches!(
                d,
                Inbound::Drop {
                    reason: DropReason::Replay,
                    answer: None
                }
            ),
            "{d:?}"
        );
        assert_eq!(p.b.endpoint(), Some(A2));
        // So does a replayed handshake initiation.
        let d = p.b.handle_datagram(MALLORY, &init, &mut p.out, now);
        assert!(matches!(d, Inbound::Drop { answer: None, .. }), "{d:?}");
        assert_eq!(p.b.endpoint(), Some(A2));
    }

    #[test]
    fn a_cookie_reply_sent_under_load_moves_nothing_and_flushes_nothing() {
        let mut p = Pair::new();
        let (init, _response) = p.b_answers();
        // The server answered at 0 and holds a packet of its own.
        let now = p.at(1.0);
        let pkt = ipv4_packet(b"waits");
        assert_eq!(p.b.handle_tun_packet(&pkt, &mut p.out, now), Outbound::Held);
        let _ = events(&mut p.b);
        // The initiation replayed from elsewhere: refused as stale, until boringtun's
        // rate limit (10 handshake messages a second) answers with a cookie.
        let mut cookie = None;
        for _ in 0..20 {
            match p.b.handle_datagram(MALLORY, &init, &mut p.out, now) {
                Inbound::Drop {
                    reason: DropReason::UnderLoad,
                    answer: Some(t),
                } => {
                    cookie = Some((t.datagram.to_vec(), t.to));
                    break;
                }
                Inbound::Drop {
                    reason: DropReason::HandshakeRejected,
                    answer: None,
                } => {}
                other => panic!("{other:?}"),
            }
        }
        let (cookie, to) = cookie.expect("a cookie reply under load");
        assert_eq!((cookie[0], cookie.len(), to), (COOKIE_REPLY, 64, MALLORY));
        assert_eq!(
            p.b.endpoint(),
            Some(A),
            "the cookie's address is not the peer's"
        );
        assert!(!p.b.flush_pending(), "a cookie confirms nothing");
        assert_eq!(p.b.poll_queued(&mut p.out, now), None);
        assert_eq!(events(&mut p.b), vec![]);
    }

    #[test]
    fn a_cookie_reply_received_moves_nothing_and_confirms_nothing() {
        let mut p = Pair::new();
        let (_init, _response) = p.b_answers();
        let now = p.at(1.0);
        // The server holds a packet, and the initiation it asked for (still in `out`).
        assert_eq!(
            p.b.handle_tun_packet(&ipv4_packet(b"x"), &mut p.out, now),
            Outbound::Held
        );
        let b_init = p.out[..148].to_vec();
        assert_eq!(b_init[0], HANDSHAKE_INITIATION);
        let _ = events(&mut p.b);
        // Delivered to the client again and again until it is under load and answers
        // with a cookie.
        let mut cookie = None;
        for _ in 0..20 {
            if let Inbound::Drop {
                reason: DropReason::UnderLoad,
                answer: Some(t),
            } = p.a.handle_datagram(B, &b_init, &mut p.out, now)
            {
                assert_eq!(t.to, B);
                cookie = Some(t.datagram.to_vec());
                break;
            }
        }
        let cookie = cookie.expect("a cookie reply under load");
        // It reaches the server from an address it never saw: valid, and nothing more.
        assert_eq!(
            p.b.handle_datagram(A2, &cookie, &mut p.out, now),
            Inbound::Done
        );
        assert_eq!(p.b.endpoint(), Some(A));
        assert!(!p.b.flush_pending(), "a cookie confirms no session");
        assert_eq!(events(&mut p.b), vec![]);
    }

    #[test]
    fn the_holdoff_holds_our_initiation_for_5_s_after_answering_then_lets_it_go() {
        let mut p = Pair::new();
        p.b_answers();
        // Within the hold-off: a packet from the TUN device waits, its initiation held.
        let at1 = p.at(1.0);
        assert_eq!(
            p.b.handle_tun_packet(&ipv4_packet(b"x"), &mut p.out, at1),
            Outbound::Held
        );
        // Data the server cannot read from the client's address would get a handshake
        // back, but not within the hold-off...
        for s in [1.0, 2.5, 4.99] {
            let now = p.at(s);
            let d = p.b.handle_datagram(A, &stray_data(), &mut p.out, now);
            assert_eq!(
                d,
                Inbound::Drop {
                    reason: DropReason::UnknownSession,
                    answer: None
                },
                "at {s} s"
            );
        }
        // ...and once it is over, the initiation goes.
        let now = p.at(5.0);
        let d = p.b.handle_datagram(A, &stray_data(), &mut p.out, now);
        let Inbound::Drop {
            reason: DropReason::UnknownSession,
            answer: Some(t),
        } = d
        else {
            panic!("{d:?}");
        };
        assert_eq!(
            (t.datagram[0], t.datagram.len(), t.to),
            (HANDSHAKE_INITIATION, 148, A)
        );
    }

    #[test]
    fn a_client_holds_its_dial_within_the_holdoff_of_answering() {
        let mut p = Pair::new();
        // The server sends a handshake back toward data it cannot read; the client
        // answers it at 0.
        let now = p.at(0.0);
        let b_init = p.b_handshakes_back(0.0);
        reply(p.a.handle_datagram(B, &b_init, &mut p.out, now), B);
        let at1 = p.at(1.0);
        assert_eq!(
            p.a.poll_dial(&mut p.out, at1),
            None,
            "no initiation of our own"
        );
        assert_eq!(p.a.poll_timers(&mut p.out, at1), None);
    }

    #[test]
    fn queued_packets_flush_when_the_peer_confirms() {
        let mut p = Pair::new();
        let (_init, response) = p.b_answers();
        let now = p.at(1.0);
        let pkts: Vec<Vec<u8>> = (0..3u8).map(|i| ipv4_packet(&[i; 20])).collect();
        for (i, pkt) in pkts.iter().enumerate() {
            let o = p.b.handle_tun_packet(pkt, &mut p.out, now);
            let want = if i == 0 {
                Outbound::Held
            } else {
                Outbound::Queued
            };
            assert_eq!(o, want);
        }
        assert!(!p.b.flush_pending(), "nothing confirmed yet");
        // The client completes the handshake; its keepalive confirms the session.
        let keepalive = reply(p.a.handle_datagram(B, &response, &mut p.out, now), B);
        assert_eq!(
            p.b.handle_datagram(A, &keepalive, &mut p.out, now),
            Inbound::Done
        );
        assert!(p.b.flush_pending());
        let mut flushed = Vec::new();
        while let Some(t) = p.b.poll_queued(&mut p.out, now) {
            assert_eq!(t.to, A);
            flushed.push(t.datagram.to_vec());
        }
        assert!(!p.b.flush_pending());
        assert_eq!(flush(&mut p.b, now), Vec::<Vec<u8>>::new(), "all went");
        let mut delivered = Vec::new();
        for d in &flushed {
            match p.a.handle_datagram(B, d, &mut p.out, now) {
                Inbound::Tun(inner) => delivered.push(inner.to_vec()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delivered, pkts, "every queued packet, in order");
    }

    #[test]
    fn a_client_dials_while_it_has_no_session_and_a_server_never_does() {
        let mut p = Pair::new();
        let now = p.at(0.0);
        assert_eq!(p.b.poll_dial(&mut p.out, now), None, "a server waits");
        let init = sent(p.a.poll_dial(&mut p.out, now), B);
        assert_eq!((init[0], init.len()), (HANDSHAKE_INITIATION, 148));
        let later = p.at(0.25);
        assert_eq!(p.a.poll_dial(&mut p.out, later), None, "one in progress");
        // The handshake completes: nothing more to dial.
        let response = reply(p.b.handle_datagram(A, &init, &mut p.out, later), A);
        reply(p.a.handle_datagram(B, &response, &mut p.out, later), B);
        assert!(p.a.is_up());
        let at1 = p.at(1.0);
        assert_eq!(p.a.poll_dial(&mut p.out, at1), None);
        assert_eq!(
            events(&mut p.a),
            vec![],
            "up and down are seen at timer ticks"
        );
        assert_eq!(p.a.poll_timers(&mut p.out, later), None);
        assert_eq!(events(&mut p.a), vec![Event::Up { endpoint: Some(B) }]);
    }

    #[test]
    fn a_servers_handshake_back_goes_only_to_the_peers_address_once_per_holdoff() {
        let mut p = Pair::new();
        let back = |p: &mut Pair, from: SocketAddr, s: f64| {
            let now = p.at(s);
            match p.b.handle_datagram(from, &stray_data(), &mut p.out, now) {
                Inbound::Drop {
                    reason: DropReason::UnknownSession,
                    answer,
                } => answer.map(|t| (t.datagram[0], t.to)),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(back(&mut p, MALLORY, 0.0), None, "not the peer's address");
        assert_eq!(back(&mut p, A, 0.0), Some((HANDSHAKE_INITIATION, A)));
        assert_eq!(events(&mut p.b), vec![Event::HandshakeBack { to: A }]);
        assert_eq!(back(&mut p, A2, 1.0), None, "once per hold-off");
        assert_eq!(back(&mut p, A, 4.9), None);
        assert_eq!(back(&mut p, A2, 5.0), Some((HANDSHAKE_INITIATION, A2)));
        assert_eq!(p.b.endpoint(), None, "unauthenticated: nothing moves");
        // A client never answers stray data this way.
        let now = p.at(10.0);
        let d = p.a.handle_datagram(B, &stray_data(), &mut p.out, now);
        assert_eq!(
            d,
            Inbound::Drop {
                reason: DropReason::UnknownSession,
                answer: None
            }
        );
    }

    #[test]
    fn unanswered_initiations_become_the_lines_problem_until_the_peer_answers() {
        let mut p = Pair::new();
        // The server's handshakes back go unanswered, one per hold-off.
        for s in [0.0, 5.0] {
            let now = p.at(s);
            p.b.handle_datagram(A, &stray_data(), &mut p.out, now);
            assert_eq!(p.b.problem(now), None, "not yet");
        }
        let now = p.at(10.0);
        p.b.handle_datagram(A, &stray_data(), &mut p.out, now);
        let problem = p.b.problem(now).expect("a problem");
        assert_eq!(
            problem,
            Problem::NoAnswer {
                initiations: 3,
                to: A,
                since: Duration::from_secs(10)
            }
        );
        let text = problem.to_string();
        assert!(
            text.starts_with("no answer to 3 handshake initiations sent to 203.0.113.10:40000")
                && text.contains("--peer-pubkey"),
            "{text}"
        );
        let evs = tick(&mut p.b, now);
        assert_eq!(evs.last(), Some(&Event::Problem(problem)), "{evs:?}");
        assert_eq!(tick(&mut p.b, now), vec![], "reported once");
        // The client answers the next one: the problem is gone.
        let at = p.at(15.0);
        let init = p.b_handshakes_back(15.0);
        let response = reply(p.a.handle_datagram(B, &init, &mut p.out, at), B);
        reply(p.b.handle_datagram(A, &response, &mut p.out, at), A);
        assert_eq!(p.b.problem(at), None);
    }

    #[test]
    fn initiations_with_wrong_keys_from_the_peers_address_are_the_lines_problem() {
        let mut p = Pair::new();
        // A client that was given a wrong --peer-pubkey.
        let stranger = PrivateKey::generate().public_key();
        let mut wrong = peer(
            &p.a_key,
            &stranger,
            3,
            PeerConfig {
                endpoint: Some(B),
                redial_from: None,
            },
        );
        let now = p.at(0.0);
        let init = sent(wrong.poll_dial(&mut p.out, now), B);
        let d = p.b.handle_datagram(MALLORY, &init, &mut p.out, now);
        assert!(matches!(
            d,
            Inbound::Drop {
                reason: DropReason::BadAuth,
                answer: None
            }
        ));
        assert_eq!(p.b.problem(now), None, "not from the peer's address");
        let at5 = p.at(5.0);
        let d = p.b.handle_datagram(A, &init, &mut p.out, at5);
        assert!(matches!(
            d,
            Inbound::Drop {
                reason: DropReason::BadAuth,
                answer: None
            }
        ));
        let problem = p.b.problem(at5).expect("a problem");
        assert_eq!(
            problem,
            Problem::Rejected {
                messages: 1,
                from: A_IP,
                since: Duration::ZERO
            }
        );
        assert!(
            problem.to_string().contains("failed authentication"),
            "{problem}"
        );
        assert_eq!(tick(&mut p.b, at5), vec![Event::Problem(problem)]);
        // And a server key the client does not expect: the same, seen from the server.
        let mut p2 = Pair::new();
        let mut other_server = peer(
            &PrivateKey::generate(),
            &p2.a_key.public_key(),
            4,
            PeerConfig {
                endpoint: None,
                redial_from: Some(A_IP),
            },
        );
        let now = p2.at(0.0);
        let init = sent(p2.a.poll_dial(&mut p2.out, now), B);
        let d = other_server.handle_datagram(A, &init, &mut p2.out, now);
        assert!(matches!(
            d,
            Inbound::Drop {
                reason: DropReason::BadAuth,
                answer: None
            }
        ));
        assert!(matches!(
            other_server.problem(now),
            Some(Problem::Rejected { .. })
        ));
        // Once the right client shakes hands, the server's problem is gone.
        p.shake_hands();
        let at6 = p.at(6.0);
        assert_eq!(p.b.problem(at6), None);
    }
}
