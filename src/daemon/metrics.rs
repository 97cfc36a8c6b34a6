//! The metrics' snapshot: every configured line's status (as `line show` says it),
//! with its restart count, and for WireGuard lines the peer's allowed IPs and the
//! handshake's wall-clock time, which the exporters' names carry.
//!
//! Rules: read-only, like the status views it builds on.

use std::time::{SystemTime, UNIX_EPOCH};

use super::supervisor::Supervisor;
use crate::config::metrics::Metrics;
use crate::control::metrics::{LineSample, Snapshot};
use crate::dataplane::Dataplane;
use crate::net::Host;

impl<H: Host, D: Dataplane> Supervisor<H, D> {
    /// The `[metrics]` settings in force.
    pub fn metrics_config(&self) -> Option<Metrics> {
        self.config.metrics
    }

    /// Every configured line, parents first.
    pub fn metrics_snapshot(&self) -> Snapshot {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lines = self
            .config
            .ordered()
            .into_iter()
            .map(|line| {
                let status = self.status(line);
                let allowed_ips = line.wireguard().map(|wg| {
                    let mut all = vec![ipnet::IpNet::from(line.peer_vip).to_string()];
                    all.extend(wg.allowed_ips.iter().map(|n| n.to_string()));
                    all.join(",")
                });
                let latest_handshake = status
                    .last_handshake_secs
                    .map(|age| now.saturating_sub(age));
                LineSample {
                    restarts: self.restarts.total(&line.name),
                    allowed_ips,
                    latest_handshake,
                    status,
                }
            })
            .collect();
        Snapshot { lines }
    }
}
