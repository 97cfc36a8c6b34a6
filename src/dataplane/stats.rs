//! Per-line counters, written by the data plane without locks and read by `line list`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::tunnel::DropReason;

/// Counters of one line.
#[derive(Debug, Default)]
pub struct LineStats {
    /// Inner packets written to the TUN device.
    pub rx_packets: AtomicU64,
    /// Inner bytes written to the TUN device.
    pub rx_bytes: AtomicU64,
    /// Inner packets sent to the peer.
    pub tx_packets: AtomicU64,
    /// Inner bytes sent to the peer.
    pub tx_bytes: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl LineStats {
    /// Counts `n` packets dropped for `reason`.
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        self.drops[reason.index()].fetch_add(n, Relaxed);
    }

    /// Drops counted for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Relaxed)
    }

    /// The non-zero drop counters, by name.
    pub fn nonzero_drops(&self) -> Vec<(String, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), self.drops(*r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}
