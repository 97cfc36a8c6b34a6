//! One probed path: a line and the address its probes go to. The daemon records each
//! probe it has the data plane send ([`Health::handle_sent`]), and the reply the data
//! plane took off the line comes back as [`Health::handle_reply`];
//! probes unanswered past their timeout are lost ([`Health::handle_timeouts`]).
//!
//! Rules: fixed rings, no allocation after [`Health::new`]; time comes in as `now`. A
//! probe's outcome is recorded once (a reply after the probe was declared lost is
//! ignored). The timeout grows with the path's round trip (at least twice the smoothed
//! round trip plus four deviations, RFC 6298's way), so a slow but healthy path is not
//! declared dead.

use std::time::{Duration, Instant};

use super::{Score, Tuning};

/// Outcomes kept: the longest window.
pub const RING: usize = 128;
/// Probes in flight at once (the timeout is far below 64 intervals).
const IN_FLIGHT: usize = 64;
/// An outcome slot holding a lost probe.
const LOST: u32 = u32::MAX;
/// The longest a probe waits, however slow the path.
const MAX_TIMEOUT: Duration = Duration::from_secs(5);

/// What a path's probes say, for decisions and for `status`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthView {
    /// Probe outcomes in the window (0: nothing known yet).
    pub samples: u32,
    /// Lost probes in the window, in percent.
    pub loss_percent: f64,
    /// Average round trip of the answered probes in the window, in milliseconds.
    pub latency_ms: Option<f64>,
    /// The latest probes lost in a row.
    pub lost_in_a_row: u32,
    /// `lost_in_a_row` reached the setting: the path is dead whatever its score.
    pub dead: bool,
    /// TrueWord Node's score with the line's cost; `None` until a probe's outcome is
    /// known.
    pub score: Option<Score>,
    /// Probes sent and replies received since the path was first probed.
    pub sent: u64,
    pub replies: u64,
}

/// The probes of one path and what they said.
#[derive(Debug, Clone)]
pub struct Health {
    tuning: Tuning,
    /// Probes in flight, at `seq % IN_FLIGHT`: sequence number and when it went.
    in_flight: [Option<(u16, Instant)>; IN_FLIGHT],
    /// Outcomes, oldest first from `head`: round trip in microseconds, or [`LOST`].
    outcomes: [u32; RING],
    head: usize,
    len: usize,
    lost_in_a_row: u32,
    /// Smoothed round trip and its variation (RFC 6298), in microseconds.
    srtt_us: Option<u64>,
    rttvar_us: u64,
    sent: u64,
    replies: u64,
}

impl Health {
    /// A path not probed yet.
    pub fn new(tuning: Tuning) -> Health {
        Health {
            tuning,
            in_flight: [None; IN_FLIGHT],
            outcomes: [0; RING],
            head: 0,
            len: 0,
            lost_in_a_row: 0,
            srtt_us: None,
            rttvar_us: 0,
            sent: 0,
            replies: 0,
        }
    }

    /// New settings; the history stays.
    pub fn set_tuning(&mut self, tuning: Tuning) {
        self.tuning = tuning;
    }

    /// Probe `seq` went at `now`. Sequence numbers come from the line (its probes to
    /// every target share them) and increase; a probe still in flight when its slot is
    /// needed again is lost.
    pub fn handle_sent(&mut self, seq: u16, now: Instant) {
        let slot = usize::from(seq) % IN_FLIGHT;
        if self.in_flight[slot].take().is_some() {
            self.record(LOST);
        }
        self.in_flight[slot] = Some((seq, now));
        self.sent += 1;
    }

    /// Sequence numbers of the probes in flight, for reading their replies.
    pub fn in_flight(&self) -> impl Iterator<Item = u16> + '_ {
        self.in_flight.iter().flatten().map(|(seq, _)| *seq)
    }

    /// The probe `seq` could not be sent (the line has no way to its peer yet): lost.
    pub fn handle_unsent(&mut self, seq: u16) {
        if self.take(seq).is_some() {
            self.record(LOST);
        }
    }

    /// The reply to probe `seq` arrived at `at`. A reply to a probe no longer in
    /// flight (already lost, or never sent) is ignored.
    pub fn handle_reply(&mut self, seq: u16, at: Instant) {
        let Some(sent) = self.take(seq) else {
            return;
        };
        let rtt = at.saturating_duration_since(sent);
        let rtt_us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        // RFC 6298's smoothing (alpha 1/8, beta 1/4).
        match self.srtt_us {
            None => {
                self.srtt_us = Some(rtt_us);
                self.rttvar_us = rtt_us / 2;
            }
            Some(srtt) => {
                self.rttvar_us = (3 * self.rttvar_us + srtt.abs_diff(rtt_us)) / 4;
                self.srtt_us = Some((7 * srtt + rtt_us) / 8);
            }
        }
        self.replies += 1;
        self.record(u32::try_from(rtt_us).unwrap_or(LOST - 1));
    }

    /// Probes in flight longer than the timeout at `now` are lost.
    pub fn handle_timeouts(&mut self, now: Instant) {
        let timeout = self.timeout();
        for slot in 0..IN_FLIGHT {
            if let Some((_, sent)) = self.in_flight[slot] {
                if now.saturating_duration_since(sent) >= timeout {
                    self.in_flight[slot] = None;
                    self.record(LOST);
                }
            }
        }
    }

    /// How long a probe may wait for its reply: the setting, or twice the smoothed round
    /// trip plus four deviations on a slow path.
    pub fn timeout(&self) -> Duration {
        let adaptive = self
            .srtt_us
            .map(|s| Duration::from_micros(2 * s + 4 * self.rttvar_us))
            .unwrap_or_default();
        self.tuning.timeout.max(adaptive).min(MAX_TIMEOUT)
    }

    /// Whether the latest `lost_probes` probes were all lost.
    pub fn is_dead(&self) -> bool {
        self.lost_in_a_row >= self.tuning.lost_probes
    }

    /// What the window says, with the line's `cost` in the score.
    pub fn view(&self, cost: u8) -> HealthView {
        let window = (self.tuning.window as usize).clamp(1, RING).min(self.len);
        let mut lost = 0u32;
        let mut rtt_sum = 0u64;
        for i in 0..window {
            let o = self.outcomes[(self.head + self.len - window + i) % RING];
            if o == LOST {
                lost += 1;
            } else {
                rtt_sum += u64::from(o);
            }
        }
        let answered = window as u32 - lost;
        let loss_percent = if window == 0 {
            0.0
        } else {
            f64::from(lost) * 100.0 / window as f64
        };
        let latency_ms = (answered > 0).then(|| rtt_sum as f64 / f64::from(answered) / 1000.0);
        HealthView {
            samples: window as u32,
            loss_percent,
            latency_ms,
            lost_in_a_row: self.lost_in_a_row,
            dead: self.is_dead(),
            score: (window > 0).then(|| Score::of(loss_percent, latency_ms.unwrap_or(0.0), cost)),
            sent: self.sent,
            replies: self.replies,
        }
    }

    fn take(&mut self, seq: u16) -> Option<Instant> {
        let slot = usize::from(seq) % IN_FLIGHT;
        match self.in_flight[slot] {
            Some((s, sent)) if s == seq => {
                self.in_flight[slot] = None;
                Some(sent)
            }
            _ => None,
        }
    }

    fn record(&mut self, outcome: u32) {
        if outcome == LOST {
            self.lost_in_a_row = self.lost_in_a_row.saturating_add(1);
        } else {
            self.lost_in_a_row = 0;
        }
        if self.len < RING {
            self.outcomes[(self.head + self.len) % RING] = outcome;
            self.len += 1;
        } else {
            self.outcomes[self.head] = outcome;
            self.head = (self.head + 1) % RING;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn tuning() -> Tuning {
        Tuning::DEFAULT
    }

    /// Sends the next probe: sequence numbers follow the count sent.
    fn next(h: &mut Health, t: Instant) -> u16 {
        let seq = h.sent as u16;
        h.handle_sent(seq, t);
        seq
    }

    /// Sends a probe every interval from `*t` for `n` probes, each answered after
    /// `rtt` (None: never).
    fn run(h: &mut Health, t: &mut Instant, n: usize, rtt: Option<Duration>) {
        for _ in 0..n {
            h.handle_timeouts(*t);
            let seq = next(h, *t);
            if let Some(rtt) = rtt {
                h.handle_reply(seq, *t + rtt);
            }
            *t += tuning().interval;
        }
        // Whatever is still in flight is lost by now.
        h.handle_timeouts(*t + MAX_TIMEOUT);
    }

    #[test]
    fn nothing_known_until_a_probe_resolves() {
        let mut h = Health::new(tuning());
        let t = Instant::now();
        assert_eq!(h.view(0).score, None);
        let seq = next(&mut h, t);
        assert_eq!(seq, 0);
        assert_eq!(h.view(0).score, None);
        h.handle_reply(seq, t + 2 * MS);
        let v = h.view(0);
        assert_eq!(v.score, Some(Score::MAX));
        assert_eq!(v.latency_ms, Some(2.0));
        assert_eq!(v.samples, 1);
    }

    #[test]
    fn three_lost_in_a_row_is_dead_within_the_timeout() {
        let mut h = Health::new(tuning());
        let mut t = Instant::now();
        run(&mut h, &mut t, 10, Some(MS));
        assert!(!h.is_dead());
        // Cut: probes at +0, +100, +200 ms; the third is lost 250 ms after it went.
        let cut = t;
        for _ in 0..3 {
            next(&mut h, t);
            t += tuning().interval;
            h.handle_timeouts(t);
        }
        assert!(!h.is_dead(), "the third probe is not late yet");
        h.handle_timeouts(cut + 450 * MS);
        assert!(h.is_dead());
        assert_eq!(h.view(0).lost_in_a_row, 3);
    }

    #[test]
    fn a_reply_ends_the_run_of_losses() {
        let mut h = Health::new(tuning());
        let mut t = Instant::now();
        run(&mut h, &mut t, 5, None);
        assert!(h.is_dead());
        run(&mut h, &mut t, 1, Some(MS));
        assert!(!h.is_dead());
        // The window still holds the losses: 5 of 6 lost.
        let v = h.view(0);
        assert!(v.loss_percent > 80.0, "{v:?}");
        assert_eq!(v.score.unwrap().points(), 40.0, "latency points only");
    }

    #[test]
    fn score_recovers_as_losses_leave_the_window() {
        let mut h = Health::new(tuning());
        let mut t = Instant::now();
        run(&mut h, &mut t, 20, Some(MS));
        run(&mut h, &mut t, 1, None);
        assert_eq!(h.view(0).score.unwrap().points(), 85.0, "1 lost in 20: 5%");
        run(&mut h, &mut t, 19, Some(MS));
        assert_eq!(h.view(0).score.unwrap().points(), 85.0);
        run(&mut h, &mut t, 1, Some(MS));
        assert_eq!(h.view(0).score, Some(Score::MAX));
    }

    #[test]
    fn late_reply_after_loss_is_ignored_and_unknown_replies_too() {
        let mut h = Health::new(tuning());
        let t = Instant::now();
        let seq = next(&mut h, t);
        h.handle_timeouts(t + 300 * MS);
        h.handle_reply(seq, t + 310 * MS);
        h.handle_reply(seq.wrapping_add(5), t + 310 * MS);
        let v = h.view(0);
        assert_eq!((v.samples, v.replies, v.lost_in_a_row), (1, 0, 1));
    }

    #[test]
    fn timeout_grows_with_a_slow_path() {
        let mut h = Health::new(tuning());
        let mut t = Instant::now();
        run(&mut h, &mut t, 20, Some(400 * MS));
        assert!(h.timeout() >= 800 * MS, "{:?}", h.timeout());
        assert!(!h.is_dead());
        assert_eq!(h.view(0).loss_percent, 0.0);
    }

    #[test]
    fn unsent_probe_is_lost_at_once_and_sequence_wraps() {
        let mut h = Health::new(tuning());
        let t = Instant::now();
        let (a, b) = (u16::MAX, 0);
        h.handle_sent(a, t);
        h.handle_sent(b, t);
        assert_eq!((a, b), (u16::MAX, 0));
        h.handle_unsent(a);
        h.handle_reply(b, t + MS);
        let v = h.view(0);
        assert_eq!((v.samples, v.replies, v.lost_in_a_row), (2, 1, 0));
        assert_eq!(v.loss_percent, 50.0);
    }
}
