//! The Prometheus metrics: a [`Snapshot`] of every configured line, as the supervisor
//! takes it, and its OpenMetrics text ([`encode`], by the `prometheus-client` crate).
//! The HTTP side is [`super::metrics_server`].
//!
//! Names: the ones the common WireGuard exporters publish, so their dashboards work
//! on twnode's WireGuard lines (`wireguard_sent_bytes_total`,
//! `wireguard_received_bytes_total`, `wireguard_latest_handshake_seconds` as UNIX time,
//! labelled `interface`, `public_key` (the peer's), `allowed_ips`); and `twnode_*` for
//! every line kind, labelled `line` and `type`: state, traffic, drops by reason, MTU,
//! restarts, and the IP tunnels' keepalive (probes, replies, unanswered, round-trip
//! time). Loss is `1 - rate(replies) / rate(probes sent)`.
//!
//! Rules: pure (no I/O, no clock); a fresh registry per scrape, filled from the
//! snapshot, so a line deleted is a series gone. No key but public keys.

use prometheus_client::encoding::text::encode as encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::{LineState, LineStatus};

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every configured line, as one scrape sees it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub lines: Vec<LineSample>,
}

/// One line: its status (as `line show` says it) and what only the metrics need.
#[derive(Debug, Clone)]
pub struct LineSample {
    pub status: LineStatus,
    /// Restarts after its packet path stopped, since the daemon started.
    pub restarts: u64,
    /// WireGuard: the peer's allowed IPs, comma-separated as `wg show` writes them.
    pub allowed_ips: Option<String>,
    /// WireGuard: when the last handshake completed, UNIX seconds.
    pub latest_handshake: Option<u64>,
}

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;
type FloatGauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// The metric families of one scrape.
#[derive(Default)]
struct Families {
    wg_sent: Counters,
    wg_received: Counters,
    wg_handshake: Gauges,
    up: Gauges,
    state: Gauges,
    rx_bytes: Counters,
    tx_bytes: Counters,
    rx_packets: Counters,
    tx_packets: Counters,
    drops: Counters,
    mtu: Gauges,
    restarts: Counters,
    ka_sent: Counters,
    ka_replies: Counters,
    ka_unanswered: Gauges,
    ka_rtt: FloatGauges,
    ka_interval: Gauges,
    lines: Gauges,
    info: Gauges,
}

const STATES: [(LineState, &str); 4] = [
    (LineState::Up, "up"),
    (LineState::Connecting, "connecting"),
    (LineState::ParentDown, "parent_down"),
    (LineState::Down, "down"),
];

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Families {
    fn fill(&self, snapshot: &Snapshot) {
        self.lines
            .get_or_create(&Vec::new())
            .set(gauge(snapshot.lines.len() as u64));
        self.info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        for sample in &snapshot.lines {
            let s = &sample.status;
            let line: Labels = vec![("line", s.name.clone()), ("type", s.kind.clone())];
            self.up
                .get_or_create(&line)
                .set(i64::from(s.state == LineState::Up));
            for (state, name) in STATES {
                let mut l = line.clone();
                l.push(("state", name.to_string()));
                self.state
                    .get_or_create(&l)
                    .set(i64::from(s.state == state));
            }
            self.rx_bytes.get_or_create(&line).inc_by(s.rx_bytes);
            self.tx_bytes.get_or_create(&line).inc_by(s.tx_bytes);
            self.rx_packets.get_or_create(&line).inc_by(s.rx_packets);
            self.tx_packets.get_or_create(&line).inc_by(s.tx_packets);
            for (reason, n) in &s.drops {
                let mut l = line.clone();
                l.push(("reason", reason.clone()));
                self.drops.get_or_create(&l).inc_by(*n);
            }
            if let Some(mtu) = s.mtu {
                self.mtu.get_or_create(&line).set(i64::from(mtu));
            }
            self.restarts.get_or_create(&line).inc_by(sample.restarts);
            if let Some(k) = &s.keepalive {
                self.ka_sent.get_or_create(&line).inc_by(k.sent);
                self.ka_replies.get_or_create(&line).inc_by(k.replies);
                self.ka_unanswered
                    .get_or_create(&line)
                    .set(i64::from(k.unanswered));
                self.ka_interval
                    .get_or_create(&line)
                    .set(gauge(k.interval_secs));
                if let Some(rtt) = k.rtt_us {
                    self.ka_rtt.get_or_create(&line).set(rtt as f64 / 1e6);
                }
            }
            if let (Some(peer), Some(allowed)) = (&s.peer_public_key, &sample.allowed_ips) {
                let wg: Labels = vec![
                    ("interface", s.name.clone()),
                    ("public_key", peer.clone()),
                    ("allowed_ips", allowed.clone()),
                ];
                self.wg_sent.get_or_create(&wg).inc_by(s.tx_bytes);
                self.wg_received.get_or_create(&wg).inc_by(s.rx_bytes);
                self.wg_handshake
                    .get_or_create(&wg)
                    .set(gauge(sample.latest_handshake.unwrap_or(0)));
            }
        }
    }

    fn register(self, r: &mut Registry) {
        r.register(
            "wireguard_sent_bytes",
            "Bytes sent to the peer (WireGuard lines; the line's inner bytes)",
            self.wg_sent,
        );
        r.register(
            "wireguard_received_bytes",
            "Bytes received from the peer (WireGuard lines; the line's inner bytes)",
            self.wg_received,
        );
        r.register(
            "wireguard_latest_handshake_seconds",
            "UNIX time of the last completed handshake, 0 for none (WireGuard lines)",
            self.wg_handshake,
        );
        r.register("twnode_line_up", "1 when the line is up", self.up);
        r.register(
            "twnode_line_state",
            "1 for the line's current state",
            self.state,
        );
        r.register(
            "twnode_line_rx_bytes",
            "Inner bytes received from the peer",
            self.rx_bytes,
        );
        r.register(
            "twnode_line_tx_bytes",
            "Inner bytes sent to the peer",
            self.tx_bytes,
        );
        r.register(
            "twnode_line_rx_packets",
            "Packets received from the peer",
            self.rx_packets,
        );
        r.register(
            "twnode_line_tx_packets",
            "Packets sent to the peer",
            self.tx_packets,
        );
        r.register(
            "twnode_line_drops",
            "Packets dropped, by reason",
            self.drops,
        );
        r.register("twnode_line_mtu", "The line's MTU", self.mtu);
        r.register(
            "twnode_line_restarts",
            "Restarts after the line's packet path stopped (a bug), since the daemon started",
            self.restarts,
        );
        r.register(
            "twnode_keepalive_probes_sent",
            "Keepalive probes sent (IP tunnel lines with --keepalive)",
            self.ka_sent,
        );
        r.register(
            "twnode_keepalive_replies",
            "Keepalive replies received",
            self.ka_replies,
        );
        r.register(
            "twnode_keepalive_unanswered",
            "Keepalive probes sent since the last reply",
            self.ka_unanswered,
        );
        r.register(
            "twnode_keepalive_rtt_seconds",
            "Round-trip time of the last keepalive probe answered while it was the only one out",
            self.ka_rtt,
        );
        r.register(
            "twnode_keepalive_interval_seconds",
            "Seconds between keepalive probes",
            self.ka_interval,
        );
        r.register("twnode_lines", "Lines configured", self.lines);
        r.register("twnode_build_info", "The daemon's version", self.info);
    }
}

/// The snapshot as OpenMetrics text.
pub fn encode(snapshot: &Snapshot) -> String {
    let families = Families::default();
    families.fill(snapshot);
    let mut registry = Registry::default();
    families.register(&mut registry);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode_registry(&mut out, &registry);
    out
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::control::KeepaliveInfo;

    fn status(name: &str, kind: &str) -> LineStatus {
        LineStatus {
            kind: kind.into(),
            mtu: Some(1420),
            state: LineState::Up,
            rx_bytes: 1000,
            tx_bytes: 2000,
            rx_packets: 10,
            tx_packets: 20,
            drops: vec![("bad_auth".into(), 3)],
            ..crate::control::gre_status(name)
        }
    }

    #[test]
    fn wireguard_lines_get_the_exporters_names_and_every_line_twnodes() {
        let mut wg = status("wg0", "wireguard");
        wg.peer_public_key = Some("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into());
        let mut gre = status("gre1", "gre");
        gre.state = LineState::Connecting;
        gre.keepalive = Some(KeepaliveInfo {
            interval_secs: 10,
            retries: 3,
            sent: 7,
            replies: 5,
            unanswered: 2,
            last_reply_ms: Some(100),
            rtt_us: Some(1500),
        });
        let text = encode(&Snapshot {
            lines: vec![
                LineSample {
                    status: wg,
                    restarts: 1,
                    allowed_ips: Some("10.0.0.2/32".into()),
                    latest_handshake: Some(1_700_000_000),
                },
                LineSample {
                    status: gre,
                    restarts: 0,
                    allowed_ips: None,
                    latest_handshake: None,
                },
            ],
        });
        let wg_labels = r#"{interface="wg0",public_key="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",allowed_ips="10.0.0.2/32"}"#;
        for line in [
            format!("wireguard_sent_bytes_total{wg_labels} 2000"),
            format!("wireguard_received_bytes_total{wg_labels} 1000"),
            format!("wireguard_latest_handshake_seconds{wg_labels} 1700000000"),
            r#"twnode_line_up{line="wg0",type="wireguard"} 1"#.into(),
            r#"twnode_line_up{line="gre1",type="gre"} 0"#.into(),
            r#"twnode_line_state{line="gre1",type="gre",state="connecting"} 1"#.into(),
            r#"twnode_line_drops_total{line="wg0",type="wireguard",reason="bad_auth"} 3"#.into(),
            r#"twnode_line_restarts_total{line="wg0",type="wireguard"} 1"#.into(),
            r#"twnode_keepalive_probes_sent_total{line="gre1",type="gre"} 7"#.into(),
            r#"twnode_keepalive_rtt_seconds{line="gre1",type="gre"} 0.0015"#.into(),
            "twnode_lines 2".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
        assert!(!text.contains(r#"wireguard_sent_bytes_total{interface="gre1""#));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
