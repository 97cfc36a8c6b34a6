//! Restart back-off for lines whose packet path stopped after an internal error (a
//! bug): a line that keeps stopping is restarted ever more slowly, at once, then after
//! 4, 8, 16, 32 and at most 60 s, so a bug that every restart meets again costs a log
//! line a minute, not one per pass.
//!
//! Rules: pure bookkeeping; time comes in as `now`, so tests drive it. A line that ran
//! [`Restarts::STABLE`] since it was let up again counts as healthy and starts over at
//! once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::LineName;

/// One line's run of restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    /// Restarts in a row.
    count: u32,
    /// No bring-up before this.
    hold_until: Instant,
}

impl Backoff {
    /// Whether the line has run long enough since it was let up again to count as
    /// healthy.
    fn healed(&self, now: Instant) -> bool {
        now >= self.hold_until + Restarts::STABLE
    }
}

/// A restart just decided: the how-many-th in a row, and the wait before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Restart {
    /// Restarts in a row, this one included.
    pub count: u32,
    /// How long the line stays down first.
    pub delay: Duration,
}

/// The lines restarted recently, by name.
#[derive(Debug, Default)]
pub(super) struct Restarts {
    lines: HashMap<LineName, Backoff>,
    /// Every restart since the daemon started, per configured line (for the metrics).
    total: HashMap<LineName, u64>,
}

impl Restarts {
    /// A line that ran this long since its restart counts as healthy again.
    pub const STABLE: Duration = Duration::from_secs(60);
    /// The longest wait between two restarts.
    pub const MAX_DELAY: Duration = Duration::from_secs(60);

    /// The wait before restart number `count` (1: at once).
    pub fn delay(count: u32) -> Duration {
        match count {
            0 | 1 => Duration::ZERO,
            n => Duration::from_secs(2u64 << (n - 1).min(6)).min(Self::MAX_DELAY),
        }
    }

    /// `name`'s packet path stopped at `now`: the restart that follows, recorded (the
    /// line is held down until its delay has passed).
    pub fn handle_stopped(&mut self, name: &LineName, now: Instant) -> Restart {
        let count = match self.lines.get(name) {
            Some(b) if !b.healed(now) => b.count + 1,
            _ => 1,
        };
        let delay = Self::delay(count);
        *self.total.entry(name.clone()).or_default() += 1;
        self.lines.insert(
            name.clone(),
            Backoff {
                count,
                hold_until: now + delay,
            },
        );
        Restart { count, delay }
    }

    /// Whether `name` must stay down at `now` (its restart's delay has not passed).
    pub fn holds(&self, name: &LineName, now: Instant) -> bool {
        self.lines.get(name).is_some_and(|b| now < b.hold_until)
    }

    /// Forgets the lines that healed by `now` and those `configured` says are gone.
    pub fn forget(&mut self, now: Instant, configured: impl Fn(&LineName) -> bool) {
        self.lines
            .retain(|name, b| configured(name) && !b.healed(now));
        self.total.retain(|name, _| configured(name));
    }

    /// How often `name` was restarted since the daemon started.
    pub fn total(&self, name: &LineName) -> u64 {
        self.total.get(name).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> LineName {
        s.parse().expect("a valid line name")
    }

    #[test]
    fn a_line_that_keeps_failing_is_restarted_ever_more_slowly_up_to_a_minute() {
        let secs: Vec<u64> = (1..=8).map(|n| Restarts::delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_line_counts_as_healed_a_minute_after_it_was_let_up_again() {
        let now = Instant::now();
        let r = Backoff {
            count: 3,
            hold_until: now + Duration::from_secs(8),
        };
        assert!(!r.healed(now));
        assert!(!r.healed(now + Duration::from_secs(60)));
        assert!(r.healed(now + Duration::from_secs(68)));
    }

    #[test]
    fn stops_in_a_row_hold_the_line_down_0_4_8_16_32_then_60_seconds() {
        let a = name("a");
        let mut restarts = Restarts::default();
        let mut now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..7 {
            let r = restarts.handle_stopped(&a, now);
            delays.push(r.delay.as_secs());
            // Held down until the delay has passed, and not a moment longer.
            if !r.delay.is_zero() {
                assert!(restarts.holds(&a, now + r.delay - Duration::from_millis(1)));
            }
            now += r.delay;
            assert!(!restarts.holds(&a, now));
            // It runs for a second, then stops again.
            now += Duration::from_secs(1);
        }
        assert_eq!(delays, [0, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn a_line_that_ran_a_minute_since_its_restart_starts_over_at_once() {
        let a = name("a");
        let mut restarts = Restarts::default();
        let start = Instant::now();
        restarts.handle_stopped(&a, start);
        let second = restarts.handle_stopped(&a, start + Duration::from_secs(1));
        assert_eq!(second.count, 2);
        // Let up again at start + 5 s; a minute later it is healthy.
        let later = start + Duration::from_secs(5) + Restarts::STABLE;
        let third = restarts.handle_stopped(&a, later);
        assert_eq!(
            third,
            Restart {
                count: 1,
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn healed_and_unconfigured_lines_are_forgotten() {
        let (a, b, c) = (name("a"), name("b"), name("c"));
        let mut restarts = Restarts::default();
        let now = Instant::now();
        restarts.handle_stopped(&a, now);
        restarts.handle_stopped(&b, now);
        restarts.handle_stopped(&b, now);
        restarts.handle_stopped(&c, now);
        restarts.handle_stopped(&c, now);
        // a healed; b is no longer configured; c is still held.
        restarts.forget(now + Restarts::STABLE, |n| *n != b);
        assert_eq!(
            restarts.lines.keys().cloned().collect::<Vec<_>>(),
            vec![c.clone()]
        );
        assert!(restarts.holds(&c, now + Duration::from_secs(3)));
    }
}
