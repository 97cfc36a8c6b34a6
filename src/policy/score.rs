//! TrueWord Node's health score, so its users get the same decisions: 0-100 points,
//! 60 for loss and 40 for latency, 0 at 100% loss, minus half the line's cost, never
//! below 0.
//!
//! | loss | points | | latency | points |
//! |---|---|---|---|---|
//! | 0% | 60 | | < 50 ms | 40 |
//! | <= 5% | 45 | | < 100 ms | 35 |
//! | <= 10% | 30 | | < 150 ms | 30 |
//! | <= 20% | 15 | | < 200 ms | 25 |
//! | more | 0 | | < 300 ms | 15 |
//! | | | | more | 5 |

use std::fmt;

/// A score in half points (a cost of 1 takes half a point), so comparisons are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Score(u16);

impl Score {
    /// The best score: no loss, latency under 50 ms, no cost.
    pub const MAX: Score = Score(200);

    /// The score of a path with `loss_percent` (0-100) and `latency_ms` (the average
    /// round trip of the answered probes) on a line of `cost` (0-100).
    pub fn of(loss_percent: f64, latency_ms: f64, cost: u8) -> Score {
        if loss_percent >= 100.0 {
            return Score(0);
        }
        let loss: u16 = if loss_percent <= 0.0 {
            60
        } else if loss_percent <= 5.0 {
            45
        } else if loss_percent <= 10.0 {
            30
        } else if loss_percent <= 20.0 {
            15
        } else {
            0
        };
        let latency: u16 = if latency_ms < 50.0 {
            40
        } else if latency_ms < 100.0 {
            35
        } else if latency_ms < 150.0 {
            30
        } else if latency_ms < 200.0 {
            25
        } else if latency_ms < 300.0 {
            15
        } else {
            5
        };
        Score(((loss + latency) * 2).saturating_sub(u16::from(cost)))
    }

    /// The score in points (0-100, halves possible).
    pub fn points(self) -> f64 {
        f64::from(self.0) / 2.0
    }

    /// Whether this score beats `other` by more than `threshold` points.
    pub fn beats_by_more_than(self, other: Score, threshold: u32) -> bool {
        u32::from(self.0) > u32::from(other.0) + 2 * threshold
    }

    /// Whether this score is within `threshold` points below `other`, or above it.
    pub fn within(self, other: Score, threshold: u32) -> bool {
        u32::from(self.0) + 2 * threshold >= u32::from(other.0)
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 2 == 0 {
            write!(f, "{}", self.0 / 2)
        } else {
            write!(f, "{}.5", self.0 / 2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_follows_truewords_table() {
        assert_eq!(Score::of(0.0, 10.0, 0), Score::MAX);
        assert_eq!(Score::of(0.0, 10.0, 0).points(), 100.0);
        assert_eq!(Score::of(5.0, 60.0, 0).points(), 80.0);
        assert_eq!(Score::of(10.0, 120.0, 0).points(), 60.0);
        assert_eq!(Score::of(20.0, 199.9, 0).points(), 40.0);
        assert_eq!(Score::of(25.0, 250.0, 0).points(), 15.0);
        assert_eq!(Score::of(99.0, 1000.0, 0).points(), 5.0);
        assert_eq!(Score::of(100.0, 1.0, 0).points(), 0.0);
        // Bucket edges: "<= 5%" and "< 50 ms".
        assert_eq!(Score::of(5.0001, 49.999, 0).points(), 70.0);
        assert_eq!(Score::of(0.0, 50.0, 0).points(), 95.0);
    }

    #[test]
    fn cost_takes_half_a_point_each_never_below_zero() {
        assert_eq!(Score::of(0.0, 1.0, 3).points(), 98.5);
        assert_eq!(Score::of(0.0, 1.0, 3).to_string(), "98.5");
        assert_eq!(Score::of(0.0, 1.0, 100).points(), 50.0);
        assert_eq!(Score::of(30.0, 400.0, 100).points(), 0.0);
    }

    #[test]
    fn threshold_comparisons_are_in_points() {
        let a = Score::of(0.0, 1.0, 0); // 100
        let b = Score::of(0.0, 60.0, 0); // 95
        assert!(!a.beats_by_more_than(b, 5));
        assert!(a.beats_by_more_than(b, 4));
        assert!(b.within(a, 5));
        assert!(!b.within(a, 4));
    }
}
