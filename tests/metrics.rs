//! The Prometheus endpoint, scraped as Prometheus would and parsed by a real parser
//! (Debian's python3-prometheus-client, its OpenMetrics parser): the WireGuard
//! exporters' names and labels and twnode's own, checked against `line show --json`
//! and against the traffic the test sends; a remote address refused without
//! `allow_remote`; a reload moves the endpoint.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::node::{create_and_paste, seed_pair, Node, GRE_CREATE, SERVER_CREATE};
use common::{require_root_and_tools, Netns};
use serde_json::Value;

/// Debian's interpreter: the package installs the parser for it (a `python3` earlier
/// on PATH may be another one).
const PYTHON: &str = "/usr/bin/python3";

const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(sys.argv[1], timeout=5) as r:
    ctype = r.headers.get("Content-Type")
    text = r.read().decode()
samples = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        samples.append({"family": family.name, "type": family.type, "name": s.name,
                        "labels": s.labels, "value": s.value})
print(json.dumps({"content_type": ctype, "samples": samples, "text": text}))
"#;

/// One scrape of `http://127.0.0.1:PORT/metrics` in `ns`, parsed.
fn scrape(ns: &Netns, port: u16) -> Value {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let out = ns.run_ok(&[PYTHON, "-c", SCRAPE, &url]);
    serde_json::from_str(&out).expect("the parser's JSON")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scraped: &Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scraped["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][*k].as_str() == Some(*v))
        })
        .and_then(|s| s["value"].as_f64())
}

fn must(scraped: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(scraped, name, labels).unwrap_or_else(|| {
        panic!(
            "no {name} {labels:?} in the scrape:\n{}",
            scraped["text"].as_str().unwrap_or("")
        )
    })
}

fn show(node: &Node, line: &str) -> Value {
    serde_json::from_str(&node.cli_ok(&["line", "show", line, "--json"])).expect("json")
}

fn write_config(node: &Node, text: &str) {
    std::fs::write(node.config(), text).unwrap();
    std::fs::set_permissions(
        node.config(),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
}

#[test]
fn metrics_are_scraped_parsed_and_match_the_traffic_sent() {
    if !require_root_and_tools(&["ip", "ping", PYTHON]) {
        return;
    }
    let (a, b) = seed_pair("metrics");
    let mut na = Node::new(&a);
    write_config(&na, "[metrics]\n");
    na.start_daemon();
    let nb = Node::start(&b);
    create_and_paste(&na, &nb, SERVER_CREATE, "eth0");
    let mut gre = GRE_CREATE.to_vec();
    gre.extend(["--keepalive", "1"]);
    create_and_paste(&na, &nb, &gre, "eth0");
    na.wait_state("tunnel_base", "up", 10);
    na.wait_state("gre1", "up", 10);

    let before = scrape(&a, 9586);
    assert_eq!(
        before["content_type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    // 20 pings of 1000 bytes of payload: 1028-byte IP packets each way.
    a.run_ok(&[
        "ping", "-c", "20", "-i", "0.05", "-s", "1000", "-W", "2", "10.0.0.2",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let after = scrape(&a, 9586);
    let line = show(&na, "tunnel_base");

    // The WireGuard exporters' names and labels.
    let peer = line["peer_public_key"].as_str().unwrap();
    let wg = [
        ("interface", "tunnel_base"),
        ("public_key", peer),
        ("allowed_ips", "10.0.0.2/32"),
    ];
    let sent = |s: &Value| must(s, "wireguard_sent_bytes_total", &wg);
    let received = |s: &Value| must(s, "wireguard_received_bytes_total", &wg);
    assert!(
        sent(&after) - sent(&before) >= 20.0 * 1028.0,
        "sent {} -> {}",
        sent(&before),
        sent(&after)
    );
    assert!(received(&after) - received(&before) >= 20.0 * 1028.0);
    // What line show says, read after the scrape (nothing but the kernel's own
    // chatter may have crossed in between).
    let tx = line["tx_bytes"].as_f64().unwrap();
    assert!(
        tx >= sent(&after) && tx - sent(&after) < 1000.0,
        "{tx} vs {}",
        sent(&after)
    );
    let handshake = must(&after, "wireguard_latest_handshake_seconds", &wg);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let age = line["last_handshake_secs"].as_f64().unwrap();
    assert!(
        (now - age - handshake).abs() <= 3.0,
        "handshake at {handshake}, line show says {age} s ago, now {now}"
    );

    // twnode's own, for both kinds.
    for (name, kind) in [("tunnel_base", "wireguard"), ("gre1", "gre")] {
        let l = [("line", name), ("type", kind)];
        assert_eq!(must(&after, "twnode_line_up", &l), 1.0, "{name}");
        let mut up = l.to_vec();
        up.push(("state", "up"));
        assert_eq!(must(&after, "twnode_line_state", &up), 1.0);
        let shown = show(&na, name);
        assert_eq!(
            must(&after, "twnode_line_mtu", &l),
            shown["mtu"].as_f64().unwrap()
        );
        assert!(must(&after, "twnode_line_tx_packets_total", &l) > 0.0);
        assert_eq!(must(&after, "twnode_line_restarts_total", &l), 0.0);
    }
    let wl = [("line", "tunnel_base"), ("type", "wireguard")];
    let packets = must(&after, "twnode_line_tx_packets_total", &wl)
        - must(&before, "twnode_line_tx_packets_total", &wl);
    assert!(packets >= 20.0, "{packets} packets for 20 pings");
    let g = [("line", "gre1"), ("type", "gre")];
    assert!(must(&after, "twnode_keepalive_probes_sent_total", &g) >= 2.0);
    assert!(must(&after, "twnode_keepalive_replies_total", &g) >= 1.0);
    let rtt = must(&after, "twnode_keepalive_rtt_seconds", &g);
    assert!(rtt > 0.0 && rtt < 1.0, "rtt {rtt}");
    assert_eq!(must(&after, "twnode_keepalive_interval_seconds", &g), 1.0);
    assert_eq!(must(&after, "twnode_lines", &[]), 2.0);

    // A reload moves the endpoint; the old port is closed.
    let config = na.config_text();
    assert!(config.contains("[metrics]"), "{config}");
    write_config(&na, &config.replace("127.0.0.1:9586", "127.0.0.1:9587"));
    na.cli_ok(&["reload"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while a
        .exec(&[PYTHON, "-c", SCRAPE, "http://127.0.0.1:9587/metrics"])
        .status
        .code()
        != Some(0)
    {
        assert!(
            Instant::now() < deadline,
            "the endpoint did not move:\n{}",
            na.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let moved = scrape(&a, 9587);
    assert_eq!(must(&moved, "twnode_lines", &[]), 2.0);
    assert!(!a
        .exec(&[PYTHON, "-c", SCRAPE, "http://127.0.0.1:9586/metrics"])
        .status
        .success());
    na.stop_daemon();
}

#[test]
fn a_remote_metrics_address_is_refused_unless_allowed() {
    if !require_root_and_tools(&["ip", PYTHON]) {
        return;
    }
    let (a, _b) = seed_pair("metricsr");
    let mut na = Node::new(&a);
    write_config(&na, "[metrics]\nlisten = \"0.0.0.0:9586\"\n");
    let out = a.exec(&[
        "timeout",
        "10",
        common::node::twnode_bin(),
        "daemon",
        "--config",
        na.config().to_str().unwrap(),
        "--control",
        na.socket().to_str().unwrap(),
        "--state-dir",
        na.state_dir().to_str().unwrap(),
        "--uapi-dir",
        na.uapi_dir().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("metrics.listen: 0.0.0.0:9586 is not a loopback address")
            && stderr.contains("allow_remote = true"),
        "{stderr}"
    );
    write_config(
        &na,
        "[metrics]\nlisten = \"0.0.0.0:9586\"\nallow_remote = true\n",
    );
    na.start_daemon();
    let scraped = scrape(&a, 9586);
    assert_eq!(must(&scraped, "twnode_lines", &[]), 0.0);
    // Only GET /metrics is served.
    let other = a.exec(&[
        PYTHON,
        "-c",
        "import urllib.request,sys\nopener=urllib.request.build_opener(urllib.request.ProxyHandler({}))\ntry:\n  opener.open('http://127.0.0.1:9586/secrets', timeout=5)\nexcept urllib.error.HTTPError as e:\n  print(e.code)",
    ]);
    assert_eq!(String::from_utf8_lossy(&other.stdout).trim(), "404");
}
