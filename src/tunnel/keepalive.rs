//! Keepalive liveness for IP tunnels, as Cisco's `keepalive SECS RETRIES` on a GRE
//! tunnel interface: a probe every interval; the line is down once `retries` probes in
//! a row went unanswered, and up again at the first reply.
//!
//! Data received from the peer settles the wait for the first reply
//! ([`Keepalive::handle_data`]): a line whose peer already sends traffic is up at once,
//! not up to one interval later when the next probe comes back. It does not stand in
//! for replies after that: a path that lost our direction (our probes and packets go
//! nowhere, the peer's still arrive) must still show down after `retries` unanswered
//! probes, as Cisco's keepalive shows it.
//!
//! The probe itself (a packet the peer reflects back without any keepalive support of
//! its own) is [`super::probe`]'s; this file is only the clock-driven state machine.
//! Time comes in as `now`.

use std::time::{Duration, Instant};

/// Cisco's default number of unanswered probes before the line is declared down.
pub const DEFAULT_RETRIES: u8 = 3;

/// How often to probe, and how many unanswered probes make the line down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeepaliveConfig {
    /// Time between probes (at least one second).
    pub interval: Duration,
    /// Unanswered probes in a row before the line is down (at least one).
    pub retries: u8,
}

/// What the keepalive says about the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// No reply yet since the line started, and not yet `retries` probes unanswered.
    Waiting,
    /// The last reply came within `retries` intervals.
    Up,
    /// `retries` probes in a row went unanswered.
    Down,
}

/// Figures for `line show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveStatus {
    pub config: KeepaliveConfig,
    pub liveness: Liveness,
    /// Probes sent since the last reply.
    pub unanswered: u32,
    pub sent: u64,
    pub replies: u64,
    /// Time since the last reply.
    pub last_reply: Option<Duration>,
    /// Round-trip time of the last probe answered while it was the only one out.
    pub rtt: Option<Duration>,
}

/// The state machine of one line.
#[derive(Debug, Clone)]
pub struct Keepalive {
    config: KeepaliveConfig,
    next_probe: Option<Instant>,
    unanswered: u32,
    liveness: Liveness,
    last_reply: Option<Instant>,
    sent: u64,
    replies: u64,
    /// When the last probe went out, for the round-trip time.
    last_probe: Option<Instant>,
    rtt: Option<Duration>,
}

impl Keepalive {
    /// A line that has not probed yet: the first [`Keepalive::poll`] sends a probe.
    pub fn new(config: KeepaliveConfig) -> Keepalive {
        Keepalive {
            config,
            next_probe: None,
            unanswered: 0,
            liveness: Liveness::Waiting,
            last_reply: None,
            sent: 0,
            replies: 0,
            last_probe: None,
            rtt: None,
        }
    }

    /// Whether a probe is due at `now`; if so it is counted as sent, and a line whose
    /// last `retries` probes all went unanswered turns [`Liveness::Down`].
    pub fn poll(&mut self, now: Instant) -> bool {
        if let Some(due) = self.next_probe {
            if now < due {
                return false;
            }
        }
        if self.unanswered >= u32::from(self.config.retries) {
            self.liveness = Liveness::Down;
        }
        self.unanswered = self.unanswered.saturating_add(1);
        self.sent += 1;
        self.last_probe = Some(now);
        // Keep the schedule when a tick comes a little late, so late ticks do not add
        // up to a slower probe rate; restart it after a long stall.
        self.next_probe = Some(match self.next_probe {
            Some(due) if now.saturating_duration_since(due) < self.config.interval => {
                due + self.config.interval
            }
            _ => now + self.config.interval,
        });
        true
    }

    /// A probe came back.
    pub fn handle_reply(&mut self, now: Instant) {
        // Probes carry no identifier: only a reply while one probe was out is surely
        // that probe's.
        if self.unanswered == 1 {
            self.rtt = self.last_probe.map(|t| now.saturating_duration_since(t));
        }
        self.unanswered = 0;
        self.liveness = Liveness::Up;
        self.last_reply = Some(now);
        self.replies += 1;
    }

    /// A packet of the peer's (decapsulated with the line's settings) arrived: a line
    /// still waiting for its first reply is up; otherwise nothing changes (the
    /// probes' count goes on). Called per packet: one compare.
    pub fn handle_data(&mut self) {
        if self.liveness == Liveness::Waiting {
            self.liveness = Liveness::Up;
        }
    }

    /// The current verdict.
    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    /// Figures for `line show`.
    pub fn status(&self, now: Instant) -> KeepaliveStatus {
        KeepaliveStatus {
            config: self.config,
            liveness: self.liveness,
            unanswered: self.unanswered,
            sent: self.sent,
            replies: self.replies,
            last_reply: self.last_reply.map(|t| now.saturating_duration_since(t)),
            rtt: self.rtt,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn ka(retries: u8) -> Keepalive {
        Keepalive::new(KeepaliveConfig {
            interval: SEC,
            retries,
        })
    }

    #[test]
    fn first_poll_probes_at_once_then_once_per_interval() {
        let t0 = Instant::now();
        let mut k = ka(3);
        assert!(k.poll(t0));
        assert!(!k.poll(t0 + SEC / 2));
        assert!(k.poll(t0 + SEC));
        assert!(!k.poll(t0 + SEC + SEC / 2));
        assert_eq!(k.status(t0).sent, 2);
    }

    #[test]
    fn late_ticks_keep_the_schedule() {
        let t0 = Instant::now();
        let mut k = ka(3);
        assert!(k.poll(t0));
        // Ticks 250 ms late each time: probes still go out at t0 + n s.
        assert!(k.poll(t0 + SEC + SEC / 4));
        assert!(!k.poll(t0 + 2 * SEC - SEC / 10));
        assert!(k.poll(t0 + 2 * SEC + SEC / 4));
    }

    #[test]
    fn the_round_trip_time_is_measured_only_when_one_probe_was_out() {
        let t0 = Instant::now();
        let mut k = ka(3);
        k.poll(t0);
        k.handle_reply(t0 + SEC / 20);
        assert_eq!(k.status(t0).rtt, Some(SEC / 20));
        // Two probes out: a reply could answer either, so the last figure stays.
        k.poll(t0 + SEC);
        k.poll(t0 + 2 * SEC);
        k.handle_reply(t0 + 2 * SEC + SEC / 10);
        assert_eq!(k.status(t0).rtt, Some(SEC / 20));
        k.poll(t0 + 3 * SEC);
        k.handle_reply(t0 + 3 * SEC + SEC / 4);
        assert_eq!(k.status(t0).rtt, Some(SEC / 4));
    }

    #[test]
    fn reply_brings_the_line_up() {
        let t0 = Instant::now();
        let mut k = ka(3);
        assert_eq!(k.liveness(), Liveness::Waiting);
        k.poll(t0);
        k.handle_reply(t0 + SEC / 10);
        assert_eq!(k.liveness(), Liveness::Up);
        let s = k.status(t0 + SEC / 2);
        assert_eq!((s.sent, s.replies, s.unanswered), (1, 1, 0));
        assert_eq!(s.last_reply, Some(SEC / 2 - SEC / 10));
    }

    #[test]
    fn silent_peer_is_down_after_retries_unanswered_probes_and_up_again_on_reply() {
        let t0 = Instant::now();
        let mut k = ka(3);
        k.poll(t0);
        k.handle_reply(t0);
        // The peer goes silent: probes at 1, 2 and 3 s go unanswered...
        for s in 1..=3 {
            assert!(k.poll(t0 + s * SEC));
            assert_eq!(k.liveness(), Liveness::Up, "still up at {s} s");
        }
        // ...and at 4 s (retries + 1 intervals after the last reply) the line is down.
        assert!(k.poll(t0 + 4 * SEC));
        assert_eq!(k.liveness(), Liveness::Down);
        assert!(k.poll(t0 + 5 * SEC));
        assert_eq!(k.liveness(), Liveness::Down);
        k.handle_reply(t0 + 5 * SEC + SEC / 10);
        assert_eq!(k.liveness(), Liveness::Up);
    }

    #[test]
    fn peer_that_never_answers_goes_from_waiting_to_down() {
        let t0 = Instant::now();
        let mut k = ka(2);
        k.poll(t0);
        k.poll(t0 + SEC);
        assert_eq!(k.liveness(), Liveness::Waiting);
        k.poll(t0 + 2 * SEC);
        assert_eq!(k.liveness(), Liveness::Down);
    }

    #[test]
    fn data_from_the_peer_brings_the_line_up_before_the_first_reply() {
        let t0 = Instant::now();
        let mut k = ka(3);
        k.poll(t0);
        assert_eq!(k.liveness(), Liveness::Waiting);
        k.handle_data();
        assert_eq!(k.liveness(), Liveness::Up);
        let s = k.status(t0 + SEC / 2);
        assert_eq!((s.replies, s.unanswered, s.last_reply), (0, 1, None));
    }

    #[test]
    fn data_does_not_stand_in_for_replies_once_the_first_wait_is_over() {
        let t0 = Instant::now();
        let mut k = ka(2);
        k.poll(t0);
        k.handle_data();
        assert_eq!(k.liveness(), Liveness::Up);
        // Our probes go unanswered while the peer's packets still arrive (a path lost
        // in our direction): down after `retries` unanswered probes all the same...
        for s in 1..=2 {
            k.poll(t0 + s * SEC);
            k.handle_data();
        }
        assert_eq!(k.liveness(), Liveness::Down);
        // ...and only a reply brings it back.
        k.handle_data();
        assert_eq!(k.liveness(), Liveness::Down);
        k.handle_reply(t0 + 2 * SEC);
        assert_eq!(k.liveness(), Liveness::Up);
    }

    #[test]
    fn a_late_reply_resets_the_count() {
        let t0 = Instant::now();
        let mut k = ka(2);
        k.poll(t0);
        k.poll(t0 + SEC);
        k.handle_reply(t0 + SEC + SEC / 2);
        k.poll(t0 + 2 * SEC);
        k.poll(t0 + 3 * SEC);
        assert_eq!(k.liveness(), Liveness::Up);
    }
}
