//! Hosts and traffic for the policy tests: a star of hosts on one switch (a client A,
//! relays B1..Bn, a destination C), flows of numbered UDP datagrams from one host to
//! another, and what the receiver saw: which relay each datagram came through, when,
//! and which went missing.
//!
//! The switch is a bridge in a namespace of its own, so a relay's link can be cut at
//! its switch port without touching the relay's own routes. Every host has a default
//! route out of its one link (A's points at C), so a packet a wrong rule hands to the
//! main table reaches C in clear, from A's underlay address, where the receiver sees it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::node::{create_and_paste, Node};
use super::{Netns, Spawned};

/// A's underlay address.
pub const A_IP: &str = "198.51.100.10";
/// C's underlay address.
pub const C_IP: &str = "198.51.100.30";
/// The destination behind the relays: an address on C's loopback.
pub const DEST: &str = "10.200.0.1";
/// Its prefix, as groups route it.
pub const DEST_NET: &str = "10.200.0.0/24";

/// Relay `i`'s (1-based) underlay address.
pub fn relay_ip(i: usize) -> String {
    format!("198.51.100.{}", 20 + i)
}

/// A's VIP on its line to relay `i`: the source address of what goes through it.
pub fn a_vip(i: usize) -> String {
    format!("10.{i}.0.1")
}

/// Relay `i`'s VIP on that line.
pub fn relay_vip(i: usize) -> String {
    format!("10.{i}.0.2")
}

/// Which relay a source address (an A VIP) says a datagram came through, 0 for A's
/// underlay address (a leak), `usize::MAX` for anything else.
pub fn relay_of(src: &str) -> usize {
    if src == A_IP {
        return 0;
    }
    let mut parts = src.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("10"), Some(i), Some("0"), Some("1")) => i.parse().unwrap_or(usize::MAX),
        _ => usize::MAX,
    }
}

/// The namespaces of a star: the switch, A, the relays and C.
pub struct Star {
    pub sw: Netns,
    pub a: Netns,
    pub relays: Vec<Netns>,
    pub c: Netns,
}

/// A namespace holding the switch: a bridge `br0` that [`plug`] connects hosts to.
pub fn switch(name: &str) -> Netns {
    let sw = Netns::new(name);
    // Without snooping: see relay.rs.
    sw.ip(&[
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ]);
    sw.ip(&["link", "set", "br0", "up"]);
    sw
}

/// Plugs `host` into the switch as `eth0` with `addr/24`, the switch side named
/// `port`, default route via `gateway`.
pub fn plug(sw: &Netns, host: &Netns, port: &str, addr: &str, gateway: &str) {
    sw.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        host.name(),
    ]);
    sw.ip(&["link", "set", port, "master", "br0"]);
    sw.ip(&["link", "set", port, "up"]);
    host.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
    host.ip(&["link", "set", "eth0", "up"]);
    host.ip(&[
        "route", "add", "default", "via", gateway, "dev", "eth0", "onlink",
    ]);
}

impl Star {
    /// The star with `n` relays. C holds the destination on its loopback and routes
    /// A's VIP on line `i` back through relay `i`; each relay routes the destination
    /// to C.
    pub fn new(prefix: &str, n: usize) -> Star {
        let sw = switch(&format!("{prefix}s"));
        let a = Netns::new(&format!("{prefix}a"));
        let c = Netns::new(&format!("{prefix}c"));
        plug(&sw, &a, "pa", A_IP, C_IP);
        plug(&sw, &c, "pc", C_IP, A_IP);
        c.ip(&["addr", "add", &format!("{DEST}/32"), "dev", "lo"]);
        let mut relays = Vec::new();
        for i in 1..=n {
            let b = Netns::new(&format!("{prefix}b{i}"));
            plug(&sw, &b, &format!("pb{i}"), &relay_ip(i), C_IP);
            b.ip(&["route", "add", DEST_NET, "via", C_IP, "dev", "eth0"]);
            c.ip(&[
                "route",
                "add",
                &format!("10.{i}.0.0/24"),
                "via",
                &relay_ip(i),
                "dev",
                "eth0",
            ]);
            relays.push(b);
        }
        Star { sw, a, relays, c }
    }

    /// Relay `i` (1-based).
    pub fn relay(&self, i: usize) -> &Netns {
        &self.relays[i - 1]
    }

    /// Cuts relay `i`'s link at its switch port (the relay keeps its routes).
    pub fn link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        self.sw.ip(&["link", "set", &format!("pb{i}"), state]);
    }
}

/// Drops (or stops dropping) every packet `ns` receives from `src`, in nftables.
pub fn nft_drop_from(ns: &Netns, src: &str, on: bool) {
    if on {
        ns.run_ok(&[
            "nft",
            &format!(
                "add table inet twcut; add chain inet twcut in {{ type filter hook input \
                 priority -10; }}; add rule inet twcut in ip saddr {src} drop"
            ),
        ]);
    } else {
        ns.run_ok(&["nft", "delete table inet twcut"]);
    }
}

/// Drops (or stops dropping) every packet relay `ns` receives from A.
pub fn nft_drop_from_a(ns: &Netns, on: bool) {
    nft_drop_from(ns, A_IP, on);
}

/// A WireGuard line `name` from A (client) to relay `i` (server), as a user makes it.
pub fn wireguard_to_relay(a: &Node, b: &Node, i: usize, name: &str) {
    let (a_vip, relay_vip) = (a_vip(i), relay_vip(i));
    let create = [
        "line",
        "create",
        "eth0",
        A_IP,
        &a_vip,
        &relay_vip,
        name,
        "--type",
        "wireguard",
        "--mode",
        "server",
        "--listen-port",
        "51820",
    ];
    create_and_paste(b, a, &create, "eth0");
}

/// A GRE line `name` between A and relay `i`, both ends typed.
pub fn gre_to_relay(a: &Node, b: &Node, i: usize, name: &str) {
    let key = i.to_string();
    b.cli_ok(&[
        "line",
        "create",
        "eth0",
        A_IP,
        &a_vip(i),
        &relay_vip(i),
        name,
        "--type",
        "gre",
        "--key",
        &key,
    ]);
    a.cli_ok(&[
        "line",
        "create",
        "eth0",
        &relay_ip(i),
        &relay_vip(i),
        &a_vip(i),
        name,
        "--type",
        "gre",
        "--key",
        &key,
    ]);
}

/// `twnode init` (forwarding) in the node's namespace.
pub fn init(node: &Node) {
    node.cli_ok(&["init"]);
}

/// CLOCK_MONOTONIC now, in seconds: the clock the flow scripts stamp with.
pub fn monotonic() -> f64 {
    // SAFETY: timespec is plain data; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Where a receiver writes what it got.
pub struct Receiver {
    pub file: PathBuf,
    _process: Spawned,
    _dir: tempfile::TempDir,
}

/// One datagram as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub flow: u32,
    pub seq: u64,
    /// The relay it came through ([`relay_of`] its source).
    pub relay: usize,
    /// Its source address.
    pub src: String,
    /// CLOCK_MONOTONIC seconds.
    pub t: f64,
}

impl Receiver {
    /// Listens on UDP `port` in `ns`, one line per datagram: payload, source, time.
    pub fn start(ns: &Netns, port: u16) -> Receiver {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("arrivals");
        let process = ns.spawn(&[
            "python3",
            "-c",
            "import socket,sys,time\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,4<<20)\n\
             s.bind(('0.0.0.0',int(sys.argv[1])))\n\
             f=open(sys.argv[2],'w',buffering=1)\n\
             while True:\n d,a=s.recvfrom(2048)\n f.write('%s %s %.6f\\n'%(d.decode(),a[0],time.monotonic()))\n",
            &port.to_string(),
            file.to_str().expect("path"),
        ]);
        std::thread::sleep(Duration::from_millis(300));
        Receiver {
            file,
            _process: process,
            _dir: dir,
        }
    }

    /// Everything received so far.
    pub fn arrivals(&self) -> Vec<Arrival> {
        read_arrivals(&self.file)
    }
}

fn read_arrivals(file: &Path) -> Vec<Arrival> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let flow = w.next()?.parse().ok()?;
            let seq = w.next()?.parse().ok()?;
            let src = w.next()?.to_string();
            Some(Arrival {
                flow,
                seq,
                relay: relay_of(&src),
                src,
                t: w.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Sends `flows` (at most 300) flows of one datagram each every `1/pps` s to
/// `dst:port` for `secs` seconds, from source ports `30000 + 300 * (port % 100)` on, so
/// senders to different ports do not collide; a datagram the host refuses to send is
/// skipped (it counts as lost).
pub fn send_flows(ns: &Netns, dst: &str, port: u16, flows: u32, pps: u32, secs: f64) -> Spawned {
    ns.spawn(&[
        "python3",
        "-c",
        "import socket,sys,time\n\
         dst,port,flows,pps,secs=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),float(sys.argv[4]),float(sys.argv[5])\n\
         socks=[]\n\
         for i in range(flows):\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',30000+300*(port%100)+i)); socks.append(s)\n\
         t0=time.monotonic(); n=0\n\
         while time.monotonic()-t0<secs:\n for i,s in enumerate(socks):\n  try: s.sendto(('%d %d'%(i,n)).encode(),(dst,port))\n  except OSError: pass\n n+=1\n d=t0+n/pps-time.monotonic()\n if d>0: time.sleep(d)\n",
        dst,
        &port.to_string(),
        &flows.to_string(),
        &pps.to_string(),
        &secs.to_string(),
    ])
}

/// What one flow's arrivals say over `[from, to)` (monotonic seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The longest time between two datagrams.
    pub gap: f64,
    /// Datagrams missing between the first and the last received.
    pub lost: u64,
    /// The relays the flow went through, in order, each kept for at least 200 ms
    /// (datagrams already on their way when a route changes arrive for a few ms after
    /// the first ones on the new path: not a move).
    pub path: Vec<usize>,
}

/// Flow `flow` over `[from, to)`.
pub fn window(arrivals: &[Arrival], flow: u32, from: f64, to: f64) -> Window {
    let mut a: Vec<&Arrival> = arrivals
        .iter()
        .filter(|x| x.flow == flow && x.t >= from && x.t < to)
        .collect();
    a.sort_by(|x, y| x.t.total_cmp(&y.t));
    let gap = a.windows(2).map(|w| w[1].t - w[0].t).fold(0.0, f64::max);
    let mut seqs: Vec<u64> = a.iter().map(|x| x.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let lost = match (seqs.first(), seqs.last()) {
        (Some(lo), Some(hi)) => hi - lo + 1 - seqs.len() as u64,
        _ => 0,
    };
    // Runs of one relay lasting 200 ms or more.
    let mut runs: Vec<(usize, f64, f64)> = Vec::new();
    for x in &a {
        match runs.last_mut() {
            Some((r, _, end)) if *r == x.relay => *end = x.t,
            _ => runs.push((x.relay, x.t, x.t)),
        }
    }
    let mut path: Vec<usize> = Vec::new();
    for (r, start, end) in runs {
        if end - start >= 0.2 && path.last() != Some(&r) {
            path.push(r);
        }
    }
    Window { gap, lost, path }
}

/// The relay most of flow `flow`'s datagrams took over `[from, to)`.
pub fn main_relay(arrivals: &[Arrival], flow: u32, from: f64, to: f64) -> Option<usize> {
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    for x in arrivals
        .iter()
        .filter(|x| x.flow == flow && x.t >= from && x.t < to)
    {
        *count.entry(x.relay).or_default() += 1;
    }
    count.into_iter().max_by_key(|(_, n)| *n).map(|(r, _)| r)
}

/// Waits (polling every 50 ms, up to `secs`) until flow `flow`'s latest datagram came
/// through `relay`; returns when it first saw that, in monotonic seconds.
pub fn wait_relay(rx: &Receiver, flow: u32, relay: usize, secs: f64, what: &str) -> f64 {
    let deadline = monotonic() + secs;
    loop {
        let arrivals = rx.arrivals();
        if let Some(last) = arrivals
            .iter()
            .filter(|x| x.flow == flow)
            .max_by(|x, y| x.t.total_cmp(&y.t))
        {
            if last.relay == relay {
                return last.t;
            }
        }
        assert!(
            monotonic() < deadline,
            "{what}: flow {flow} not through relay {relay} after {secs} s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
