//! Status views: what `line list`, `line show` and the state-change log say about each
//! configured line ([`LineState`], [`LineStatus`]), read from the running data planes
//! and from why the others are down.
//!
//! Rules: read-only; a line is `up` only when its parent is, whatever its own data
//! plane says; a line that is not up says why.

use std::collections::BTreeMap;

use super::supervisor::{Running, Supervisor};
use crate::config::{Line, LineKind};
use crate::control::{EpochInfo, EspInfo, KeepaliveInfo, LineState, LineStatus};
use crate::dataplane::lines::Liveness;
use crate::dataplane::{Dataplane, DataplaneStatus, IpTunnelStatus, LineStats, RunningLine};
use crate::net::Host;

impl<H: Host, D: Dataplane> Supervisor<H, D> {
    /// Current states, to log transitions.
    pub fn states(&self) -> BTreeMap<String, LineState> {
        self.config
            .lines
            .iter()
            .map(|l| (l.name.to_string(), self.state(l).0))
            .collect()
    }

    /// A line's state, and why when it is not up.
    pub(super) fn state(&self, line: &Line) -> (LineState, Option<String>) {
        let parent_up = match self.config.line(line.parent.as_str()) {
            None => true,
            Some(p) => self.state(p).0 == LineState::Up,
        };
        match self.running.get(&line.name) {
            Some(_) if !parent_up => (
                LineState::ParentDown,
                Some(format!("parent line {} is not up", line.parent)),
            ),
            Some(Running { dataplane, .. }) => match dataplane.status() {
                DataplaneStatus::IpTunnel(raw) => raw_state(line, &raw),
                DataplaneStatus::WireGuard(wg) if wg.up => (LineState::Up, None),
                DataplaneStatus::WireGuard(wg) => (
                    LineState::Connecting,
                    Some(
                        wg.problem
                            .unwrap_or_else(|| "no WireGuard session with the peer yet".into()),
                    ),
                ),
            },
            None => match self.failed.get(&line.name) {
                Some(f) if f.parent_down => (LineState::ParentDown, Some(f.reason.clone())),
                Some(f) => (LineState::Down, Some(f.reason.clone())),
                None => (LineState::Down, Some("starting".into())),
            },
        }
    }

    /// Everything `line show` says about a line.
    pub(super) fn status(&self, line: &Line) -> LineStatus {
        let (state, reason) = self.state(line);
        let running = self.running.get(&line.name);
        let stats = running.map(|r| r.dataplane.stats());
        let stat = |f: fn(&LineStats) -> &std::sync::atomic::AtomicU64| {
            stats.map(|s| LineStats::get(f(s))).unwrap_or(0)
        };
        let mut status = LineStatus {
            name: line.name.to_string(),
            parent: line.parent.to_string(),
            kind: line.kind.type_name().to_string(),
            mode: None,
            peer_ip: line.peer_ip,
            peer_vip: line.peer_vip,
            local_vip: line.local_vip,
            local_ip: running.map(|r| r.local_ip),
            depth: self.config.depth(line.name.as_str()),
            mtu: running.map(|r| r.mtu).or(line.mtu.map(|m| m.get())),
            state,
            reason,
            listen_port: None,
            endpoint: None,
            public_key: None,
            peer_public_key: None,
            last_handshake_secs: None,
            rx_bytes: stat(|s| &s.rx_bytes),
            tx_bytes: stat(|s| &s.tx_bytes),
            rx_packets: stat(|s| &s.rx_packets),
            tx_packets: stat(|s| &s.tx_packets),
            drops: stats.map(|s| s.nonzero_drops()).unwrap_or_default(),
            options: Vec::new(),
            keepalive: None,
            esp: None,
            transmit: None,
            af_xdp_packets: None,
        };
        match (&line.kind, running.map(|r| r.dataplane.status())) {
            (LineKind::WireGuard(wg), dp) => {
                let dp = match dp {
                    Some(DataplaneStatus::WireGuard(s)) => Some(s),
                    _ => None,
                };
                status.mode = Some(wg.mode.as_str().to_string());
                status.listen_port = dp
                    .as_ref()
                    .and_then(|s| s.local.map(|a| a.port()))
                    .or(wg.listen_port.map(|p| p.get()));
                status.endpoint = dp.as_ref().and_then(|s| s.endpoint.map(|e| e.to_string()));
                status.public_key = Some(wg.private_key.public_key().to_string());
                status.peer_public_key = Some(wg.peer_public_key.to_string());
                status.last_handshake_secs = dp
                    .as_ref()
                    .and_then(|s| s.core.last_handshake.map(|d| d.as_secs()));
            }
            (LineKind::IpTunnel(t), dp) => {
                status.options = t.cli_options();
                if let Some(DataplaneStatus::IpTunnel(raw)) = dp {
                    status.esp = raw.esp.zip(t.esp).map(|(s, e)| EspInfo {
                        cipher: e.cipher.as_str().to_string(),
                        keying: s.keying.as_str().to_string(),
                        spi_out: s.spi_out,
                        spi_in: s.spi_in,
                        next_seq: s.next_seq,
                        reserved_to: s.reserved_to,
                        highest_received: s.highest_received,
                        epoch: s.epoch.map(|p| EpochInfo {
                            epochs: p.epochs,
                            last_rekey_secs: p.since_agreed.map(|d| d.as_secs()),
                            packets_to_rekey: p.packets_to_rekey,
                            secs_to_rekey: p.time_to_rekey.map(|d| d.as_secs()),
                            rekey_interval_secs: p.rekey_after.as_secs(),
                            rekeying: p.rekeying,
                            hellos_sent: p.hellos_sent,
                            hellos_received: p.hellos_received,
                        }),
                    });
                    status.transmit = raw.transmit;
                    status.af_xdp_packets = raw.af_xdp_packets;
                    status.keepalive = raw.keepalive.map(|k| KeepaliveInfo {
                        interval_secs: k.config.interval.as_secs(),
                        retries: k.config.retries,
                        sent: k.sent,
                        replies: k.replies,
                        unanswered: k.unanswered,
                        last_reply_ms: k.last_reply.map(|d| d.as_millis() as u64),
                        rtt_us: k.rtt.map(|d| d.as_micros() as u64),
                    });
                }
            }
        }
        status
    }
}

/// An IP tunnel line's state: down while it cannot receive; connecting while an
/// epoch-keyed ESP line waits for its peer's Hello; then its keepalive's verdict, or
/// up-but-unknown without one.
fn raw_state(line: &Line, raw: &IpTunnelStatus) -> (LineState, Option<String>) {
    if let Some(why) = &raw.receive_problem {
        return (LineState::Down, Some(why.clone()));
    }
    if let Some(e) = raw.esp.as_ref().and_then(|e| e.epoch) {
        if e.epochs == 0 {
            return (
                LineState::Connecting,
                Some(format!(
                    "waiting for the peer's ESP Hello from {} ({} sent, {} received): \
                     nothing is sent until both ends agree on keys; the peer must run \
                     this line with the same keys and --esp-keying epoch",
                    line.peer_ip, e.hellos_sent, e.hellos_received
                )),
            );
        }
    }
    let Some(k) = raw.keepalive else {
        return (
            LineState::Up,
            Some(
                "no keepalive: the data plane runs, but whether the peer answers is unknown \
                 (--keepalive SECS watches it)"
                    .into(),
            ),
        );
    };
    match k.liveness {
        Liveness::Up => (LineState::Up, None),
        Liveness::Waiting => (
            LineState::Connecting,
            Some(format!(
                "waiting for the first keepalive reply from {}",
                line.peer_ip
            )),
        ),
        Liveness::Down => (
            LineState::Down,
            Some(format!(
                "no reply to the last {} keepalives (one every {} s) from {}: the peer or the \
                 path to it is down",
                k.unanswered,
                k.config.interval.as_secs(),
                line.peer_ip
            )),
        ),
    }
}
