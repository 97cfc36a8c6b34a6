//! Policy: which exit line (or lines) each policy group's traffic uses. It takes probe
//! results and `now`, and answers with the exits each group should use, with its
//! hysteresis; the daemon installs the answers through `net/` and the data plane sends
//! and receives the probes.
//!
//! - [`health`]: one probed path (a line and a target): its probes in flight, the lost
//!   ones, loss and latency over a window, and whether it is dead;
//! - [`score`]: TrueWord Node's score (0-100 from loss and latency, minus half the cost);
//! - [`select`]: a group's choice: one exit of its candidates (failover) or the set of
//!   its exits that carry flows (balancing), with the confirmation count;
//! - [`slots`]: how a balancing group's flows are spread over its exits by weight, so
//!   that an exit leaving moves only its own flows.
//!
//! Rules: no I/O and no clock reads (time comes in as `now`), no allocation per probe
//! (fixed rings), nothing imported from the rooms above. Exits are named by their index
//! in the group's list; names belong to the daemon.

pub mod health;
pub mod score;
pub mod select;
pub mod slots;

use std::time::Duration;

pub use health::{Health, HealthView};
pub use score::Score;
pub use select::{Active, Change, ExitView, Mode, Reason, Selector};

/// The `[failover]` settings: how often paths are probed, when a probe is lost and a
/// path dead, how many probes the score looks at, and the hysteresis of a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Time between two probes of one path.
    pub interval: Duration,
    /// A probe unanswered this long is lost (longer when the path's round trip is: at
    /// least twice the smoothed round trip plus four deviations).
    pub timeout: Duration,
    /// Probes lost in a row that make a path dead at once, whatever its score.
    pub lost_probes: u32,
    /// How many of the latest probes the loss and latency (and so the score) cover.
    pub window: u32,
    /// A candidate must beat the current exit by more than this many points...
    pub threshold: u32,
    /// ...this many evaluations in a row (one per interval) before a switch that is not
    /// forced by a dead exit.
    pub confirmations: u32,
}

impl Tuning {
    /// Probe every 100 ms; a probe unanswered for 250 ms is lost; 3 lost in a row make a
    /// path dead (detection in about half a second); the score covers the last 20
    /// probes (2 s); TrueWord Node's threshold (5) and confirmation count (3).
    pub const DEFAULT: Tuning = Tuning {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(250),
        lost_probes: 3,
        window: 20,
        threshold: 5,
        confirmations: 3,
    };

    /// The longest window the fixed rings hold.
    pub const MAX_WINDOW: u32 = health::RING as u32;
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning::DEFAULT
    }
}
