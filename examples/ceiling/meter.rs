//! The receive side's count, shared by `raw_ceiling` and `xdp_ceiling` so that both
//! print what the throughput harness reads, measured the same way: IP bytes between
//! the first and the last packet, as `<bits per second> <packets>`. Receiving stops 1 s
//! after traffic ends, or SECONDS + 5 s after the start.

use std::time::{Duration, Instant};

pub struct Meter {
    deadline: Instant,
    first: Option<Instant>,
    last: Instant,
    bytes: u64,
    packets: u64,
}

impl Meter {
    /// A count that gives up SECONDS + 5 s from now.
    pub fn new(seconds: u64) -> Meter {
        let now = Instant::now();
        Meter {
            deadline: now + Duration::from_secs(seconds + 5),
            first: None,
            last: now,
            bytes: 0,
            packets: 0,
        }
    }

    /// Whether to wait for more: before the deadline, and not 1 s past the last
    /// packet of traffic that has started.
    pub fn waiting(&self) -> bool {
        let now = Instant::now();
        now < self.deadline
            && !(self.first.is_some() && now.duration_since(self.last) > Duration::from_secs(1))
    }

    /// `packets` packets of `bytes` IP bytes in all arrived now.
    pub fn got(&mut self, packets: u64, bytes: u64) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = now;
        self.packets += packets;
        self.bytes += bytes;
    }

    /// Prints `<bits per second> <packets>`.
    pub fn report(&self) {
        let secs = self
            .first
            .map_or(0.0, |f| self.last.duration_since(f).as_secs_f64());
        let bps = if secs > 0.0 {
            self.bytes as f64 * 8.0 / secs
        } else {
            0.0
        };
        println!("{bps:.0} {}", self.packets);
    }
}
