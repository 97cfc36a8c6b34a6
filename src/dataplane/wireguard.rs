//! The WireGuard line's I/O loop: a TUN device, a UDP socket and a [`WireGuardPeer`]
//! (the protocol core with the line's policy: roaming, the cookie rule, the hold-off,
//! re-dial, handshake back; see [`crate::tunnel::wireguard_peer`]), driven by two paths
//! on the data-plane threads ([`super::poller`]) and one tokio task. This file only moves
//! bytes: it reads the clock and hands `now` to the peer, and sends what the peer returns
//! where the peer says.
//!
//! - `outbound_ready`: TUN -> encrypt -> UDP, a batch of up to [`SEGS`] packets (TUN
//!   reads, see [`Tun::read_packets`]), one `sendmmsg` per batch;
//! - `inbound_once`: UDP -> decrypt -> TUN, one `recvmmsg` per batch. What the kernel
//!   answered inside the TUN write (a ping reply, ACKs) it sends itself when the outbound
//!   path is idle, one outbound batch under the device's read turn
//!   ([`Tun::try_read_turn`]), so a flow is never read by two threads at once;
//! - `timers` (tokio): every [`TICK`], WireGuard's timers (retransmit, rekey, keepalive)
//!   and a client's re-dial.
//!
//! The peer sits behind one mutex, taken once per batch and never across an `.await`.
//! Log lines name the line: the timer task runs inside the line's span (boringtun's own
//! timer messages land in it), the packet paths enter it when debug logging is on.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socket2::Socket;
use tokio::task::JoinHandle;
use tracing::level_filters::LevelFilter;
use tracing::{debug, info, warn};

use super::batch::{offset_in, SLOT};
use super::fault::{Faults, Path};
use super::pmtu::PathMtu;
use super::poller::{self, Registration};
use super::pool::{
    dec_slot, segment, with_buffers, Buffers, RX_MSGS_GRO, RX_MSGS_MAX, SEGS, TUN_OFFSET,
};
use super::probe::{ProbeError, Prober, MAX_PROBE};
use super::stats::LineStats;
use super::tun::Tun;
use super::{socket, udp, DataplaneError};
use crate::tunnel::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::tunnel::wireguard::{Keys, Stats, MIN_OUT};
use crate::tunnel::wireguard_peer::{
    Event, Inbound, Outbound, PeerConfig, Transmit, WireGuardPeer,
};
use crate::tunnel::DropReason;

/// How often WireGuard's timers run.
pub const TICK: Duration = Duration::from_millis(250);
/// Room for one timer message (a handshake initiation is the largest, 148 bytes).
const TIMER_SLOT: usize = 256;

/// Everything the data plane needs to run one WireGuard line.
pub struct WireGuardSpec {
    /// Line (and TUN device) name.
    pub name: String,
    pub mtu: u16,
    /// Underlay address to bind (the parent's address or VIP).
    pub local_ip: IpAddr,
    /// 0 picks an ephemeral port.
    pub listen_port: u16,
    /// Where to dial (a client); a server learns it from the first handshake.
    pub endpoint: Option<SocketAddr>,
    pub private_key: PrivateKey,
    pub peer_public_key: PublicKey,
    /// WireGuard's optional preshared key.
    pub preshared_key: Option<PresharedKey>,
    pub keepalive: u16,
    /// Unique per line on this node.
    pub index: u32,
    /// Packets too big for the parent's path are refused with an ICMP error.
    pub pmtu: Arc<PathMtu>,
    /// A server: the peer's underlay address. Data from there that no session of ours
    /// can read (we restarted, the client did not) gets a handshake initiation back at
    /// once, instead of waiting ~15 s for the client's timers to notice.
    pub redial_from: Option<IpAddr>,
}

struct Io {
    name: String,
    tun: Tun,
    socket: Socket,
    peer: Mutex<WireGuardPeer>,
    stats: Arc<LineStats>,
    /// `line = <name>`: every log line about this line carries it.
    span: tracing::Span,
    /// UDP GSO: probed at start, turned off if a send is refused.
    udp_gso: AtomicBool,
    /// UDP GRO: on when the kernel took the socket option.
    udp_gro: bool,
    pmtu: Arc<PathMtu>,
    /// Faults injected by the tests (nothing without the `fault-injection` feature).
    faults: Faults,
    /// Health probes: sent by [`WireGuardLine::send_probe`], replies taken off the
    /// inbound path.
    prober: Prober,
    /// A probe and its encryption (the daemon sends one at a time).
    probe_buf: Mutex<Vec<u8>>,
}

impl Io {
    fn lock(&self) -> MutexGuard<'_, WireGuardPeer> {
        // A panic while holding the lock cannot leave the core half-updated in a way
        // that matters more than losing the line; keep going.
        self.peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The line's span, entered on the packet paths only when debug logging is on
    /// (boringtun logs nothing above debug there), so it costs nothing per batch
    /// otherwise.
    fn debug_span(&self) -> Option<tracing::span::Entered<'_>> {
        (LevelFilter::current() >= LevelFilter::DEBUG).then(|| self.span.enter())
    }
}

/// A running WireGuard line. Dropping it stops its paths and its timer task;
/// [`WireGuardLine::stop`] also
/// waits until the TUN device is gone.
pub struct WireGuardLine {
    io: Arc<Io>,
    /// The outbound and inbound paths on the data-plane threads; dropping them stops
    /// the paths.
    paths: Vec<Registration>,
    tasks: Vec<JoinHandle<()>>,
    local: Option<SocketAddr>,
}

/// A snapshot for `line list`.
#[derive(Debug, Clone)]
pub struct WireGuardStatus {
    pub up: bool,
    pub endpoint: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub core: Stats,
    /// What is likely wrong while there is no session (unanswered handshakes, keys
    /// that do not match), for `line show`'s reason.
    pub problem: Option<String>,
}

impl WireGuardLine {
    /// Creates the TUN device and the socket, registers the paths with a data-plane
    /// thread and starts the timer task on the current runtime.
    pub fn start(spec: WireGuardSpec) -> Result<WireGuardLine, DataplaneError> {
        let want = super::tun::offload_wanted();
        let tun = Tun::create_for_line(&spec.name, spec.mtu, true)?;
        let socket = udp::bind(SocketAddr::new(spec.local_ip, spec.listen_port))?;
        let local = udp::local_addr(&socket);
        let tun_offload = tun.offload();
        let udp_gso = want && udp::probe_gso(&socket);
        let udp_gro = want && udp::enable_gro(&socket);
        let peer = WireGuardPeer::new(
            Keys {
                private: &spec.private_key,
                peer_public: &spec.peer_public_key,
                preshared: spec.preshared_key.as_ref(),
                keepalive: spec.keepalive,
                index: spec.index,
            },
            PeerConfig {
                endpoint: spec.endpoint,
                redial_from: spec.redial_from,
            },
        );
        let faults = Faults::for_line(&spec.name);
        let span = tracing::info_span!("wireguard", line = %spec.name);
        let io = Arc::new(Io {
            name: spec.name,
            tun,
            socket,
            peer: Mutex::new(peer),
            stats: Arc::new(LineStats::default()),
            span,
            udp_gso: AtomicBool::new(udp_gso),
            udp_gro,
            pmtu: spec.pmtu,
            faults,
            prober: Prober::new(),
            probe_buf: Mutex::new(vec![0u8; MAX_PROBE + MIN_OUT + TIMER_SLOT]),
        });
        info!(
            line = %io.name,
            local = ?local,
            endpoint = ?spec.endpoint,
            tso = tun_offload.tso,
            uso = tun_offload.uso,
            udp_gso,
            udp_gro,
            "wireguard line started"
        );
        let setup = |source| DataplaneError::Setup {
            what: "cannot register the line with a data-plane thread",
            source,
        };
        // Both paths on one thread: see `poller` for why.
        let thread = poller::next_thread().map_err(setup)?;
        let register = |fd, what, run: fn(&Io) -> bool| {
            let io2 = io.clone();
            let what = format!("line {} {what}", io.name);
            thread.register(fd, what, move || run(&io2)).map_err(setup)
        };
        let paths = vec![
            register(io.tun.raw_fd(), "outbound", outbound_ready)?,
            register(io.socket.as_raw_fd(), "inbound", inbound_ready)?,
        ];
        let tasks = vec![tokio::spawn(timers(io.clone()))];
        Ok(WireGuardLine {
            io,
            paths,
            tasks,
            local,
        })
    }

    /// The TUN device's interface index.
    pub fn ifindex(&self) -> u32 {
        self.io.tun.index()
    }

    /// The line's counters.
    pub fn stats(&self) -> &LineStats {
        &self.io.stats
    }

    /// The first packet path that stopped after a panic, if any (see
    /// [`Registration::stopped`]).
    pub fn stopped_path(&self) -> Option<String> {
        self.paths
            .iter()
            .find(|p| p.stopped())
            .map(|p| p.what().to_string())
    }

    /// A snapshot of the protocol state.
    pub fn status(&self) -> WireGuardStatus {
        let peer = self.io.lock();
        WireGuardStatus {
            up: peer.is_up(),
            endpoint: peer.endpoint(),
            local: self.local,
            core: peer.stats(),
            problem: peer.problem(Instant::now()).map(|p| p.to_string()),
        }
    }

    /// Sends health probe `seq` from `from` (the line's VIP) to `target`: encrypted as
    /// a packet read from the TUN device would be, and sent to the peer.
    pub fn send_probe(&self, from: IpAddr, target: IpAddr, seq: u16) -> Result<(), ProbeError> {
        let io = &self.io;
        let mut buf = io.probe_buf.lock().unwrap_or_else(|e| e.into_inner());
        let (inp, out) = buf.split_at_mut(MAX_PROBE);
        let n = io.prober.build(from, target, seq, inp)?;
        let base = out.as_ptr();
        let (off, len, to) = match io.lock().handle_tun_packet(&inp[..n], out, Instant::now()) {
            Outbound::Send(t) => (offset_in(base, t.datagram), t.datagram.len(), t.to),
            // Waits for the handshake under way: it goes with the packets that wait.
            Outbound::Queued | Outbound::Held => return Ok(()),
            Outbound::Drop(_) => return Err(ProbeError::CannotSend("no session or endpoint")),
        };
        let datagram = out
            .get(off..off + len)
            .ok_or(ProbeError::CannotSend("probe buffer"))?;
        socket::send_one(&io.socket, datagram, to)
            .map(|_| ())
            .map_err(|_| ProbeError::CannotSend("the socket refused the datagram"))
    }

    /// When the reply to probe `seq` came, if it did.
    pub fn probe_reply(&self, seq: u16) -> Option<Instant> {
        self.io.prober.reply(seq)
    }

    /// Stops the tasks and waits for them, so the TUN device and socket are closed
    /// when this returns.
    pub async fn stop(mut self) {
        self.paths.clear();
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let name = self.io.name.clone();
        // Wait for the last reference (a path that was mid-batch) to go.
        let io = self.io.clone();
        drop(self);
        super::drop_last_ref(io).await;
        info!(line = %name, "wireguard line stopped");
    }
}

impl Drop for WireGuardLine {
    fn drop(&mut self) {
        self.paths.clear();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// TUN -> UDP. A batch is one TUN read (a 64 KB super-packet split into its segments
/// with offloads; up to [`SEGS`] single packets without), encrypted under one lock and
/// sent with one `sendmmsg` (runs of equal-size datagrams as GSO sends).
///
/// Runs on a data-plane thread when the TUN device is readable; true when a batch went
/// (more may be waiting), false when the device had nothing.
fn outbound_ready(io: &Io) -> bool {
    io.faults.check(Path::Outbound, &io.name);
    with_buffers(|w| {
        // One batch at a time per line (the inbound path may take a turn too, see
        // `inbound_once`): two threads reading one TUN device would reorder a flow.
        let _turn = io.tun.read_turn();
        outbound_once(io, w)
    })
}

/// One outbound batch; false when the TUN device had nothing.
fn outbound_once(io: &Io, w: &mut Buffers) -> bool {
    let n = io.tun.read_packets(w, &io.stats, &io.name);
    if n == 0 {
        return false;
    }
    let _span = io.debug_span();
    let mut k = 0;
    // Where the batch goes: the endpoint as it was under this one lock, the same for
    // every datagram of the batch.
    let mut to = None;
    {
        let mut peer = io.lock();
        let now = Instant::now();
        let mut bytes = 0u64;
        for (i, chunk) in w.enc.chunks_exact_mut(SLOT).take(n).enumerate() {
            let inp = segment(&w.segs, &w.seg_len, i);
            // Per segment: a super-packet's segments each fit the line's MTU.
            if io.pmtu.refused(inp, chunk, &io.tun, &io.stats) {
                continue;
            }
            match peer.handle_tun_packet(inp, chunk, now) {
                Outbound::Send(t) => {
                    w.enc_out[k] = (t.datagram.as_ptr(), t.datagram.len());
                    k += 1;
                    to = Some(t.to);
                    bytes += inp.len() as u64;
                }
                // Counted when the core made a datagram for the packet, even one that
                // cannot go (held back, or no endpoint yet), as always.
                Outbound::Held => bytes += inp.len() as u64,
                Outbound::Drop(r) => {
                    if r == DropReason::NoEndpoint {
                        bytes += inp.len() as u64;
                    }
                    io.stats.count_drop(r, 1);
                }
                Outbound::Queued => {}
            }
        }
        LineStats::add(&io.stats.tx_bytes, bytes);
    }
    if let Some(to) = to {
        send_encrypted(io, &w.enc_out[..k], to);
    }
    true
}

/// Sends encrypted datagrams to `to`, with GSO while the socket takes it.
fn send_encrypted(io: &Io, packets: &[(*const u8, usize)], to: SocketAddr) {
    let k = packets.len();
    let use_gso = io.udp_gso.load(Ordering::Relaxed);
    let sent = match socket::send(&io.socket, packets, to, use_gso) {
        Ok(sent) => sent,
        Err((sent, e)) if use_gso && udp::is_gso_refusal(&e) => {
            warn!(line = %io.name, error = %e, "UDP GSO refused on this path; sending datagrams one by one from now on");
            io.udp_gso.store(false, Ordering::Relaxed);
            let rest = &packets[sent..];
            sent + socket::send(&io.socket, rest, to, false).unwrap_or_else(|(n, _)| n)
        }
        Err((sent, e)) => {
            debug!(line = %io.name, error = %e, "UDP send failed");
            sent
        }
    };
    LineStats::add(&io.stats.tx_packets, sent as u64);
    if sent < k {
        io.stats.count_drop(DropReason::IoError, (k - sent) as u64);
    }
}

/// UDP -> TUN. A batch is one `recvmmsg` (with GRO, each message a run of coalesced
/// datagrams, split here); decrypted under one lock per [`SEGS`] packets and written
/// to the TUN device with GRO coalescing when offloads are on.
///
/// Runs on a data-plane thread when the socket is readable; true when more may be
/// waiting.
fn inbound_ready(io: &Io) -> bool {
    io.faults.check(Path::Inbound, &io.name);
    with_buffers(|w| match inbound_once(io, w) {
        Ok(more) => more,
        Err(e) => {
            // A pending socket error is reported once; data may follow it.
            debug!(line = %io.name, error = %e, "UDP receive failed");
            true
        }
    })
}

/// One inbound batch; false when the socket is drained (a `recvmmsg` that returned
/// fewer messages than it had room for found the queue empty: no second call to see
/// `EAGAIN`).
///
/// Packets written to the TUN device are often answered at once, inside that write
/// (a local ping reply, TCP ACKs): when the outbound path is idle, this thread sends
/// the answers itself instead of leaving them for the outbound path's next turn, which
/// would come after a return to `epoll_wait` (13 us more on the reply hop, measured with
/// tokio's wake-up; the outbound path then reads nothing).
fn inbound_once(io: &Io, w: &mut Buffers) -> std::io::Result<bool> {
    let msgs = if io.udp_gro { RX_MSGS_GRO } else { RX_MSGS_MAX };
    match udp::recv_segments(&io.socket, &mut w.rx, msgs, &mut w.rx_msgs) {
        Ok(n) => {
            if inbound_batch(io, w, n) > 0 {
                if let Some(_turn) = io.tun.try_read_turn() {
                    outbound_once(io, w);
                }
            }
            Ok(n >= msgs.min(RX_MSGS_MAX))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// Decrypts the `n` received messages and writes what they carry to the TUN device;
/// returns how many packets went to it.
fn inbound_batch(io: &Io, w: &mut Buffers, n: usize) -> usize {
    let _span = io.debug_span();
    let mut written = 0;
    let mut flush = false;
    // Position: message, byte offset within it.
    let (mut msg, mut pos) = (0usize, 0usize);
    while msg < n {
        let mut t = 0; // packets for the TUN device in this chunk
        let events;
        {
            let mut peer = io.lock();
            let now = Instant::now();
            while msg < n && t < SEGS {
                let m = w.rx_msgs[msg];
                if m.truncated || pos >= m.len {
                    if m.truncated || m.len == 0 {
                        io.stats.count_drop(DropReason::Malformed, 1);
                    }
                    msg += 1;
                    pos = 0;
                    continue;
                }
                let end = (pos + udp::gro_segment(&m)).min(m.len);
                let datagram = &w.rx[m.start + pos..m.start + end];
                pos = end;
                let Some(from) = m.from else {
                    io.stats.count_drop(DropReason::Malformed, 1);
                    continue;
                };
                let need = TUN_OFFSET + datagram.len().max(MIN_OUT);
                let Some(buf) = dec_slot(&mut w.dec, t, need) else {
                    // Unreachable (t < SEGS); the datagram is consumed either way.
                    io.stats.count_drop(DropReason::IoError, 1);
                    continue;
                };
                let out = &mut buf[TUN_OFFSET..];
                let base = out.as_ptr();
                let mut to_tun = None;
                match peer.handle_datagram(from, datagram, out, now) {
                    // A reply to our own health probe: recorded, not the host's.
                    Inbound::Tun(p) if io.prober.take_reply(p, now) => {}
                    Inbound::Tun(p) => to_tun = Some((offset_in(base, p), p.len())),
                    // Handshake messages go back at once (rare; the lock is held for
                    // one send).
                    Inbound::Reply(tx) => {
                        send_now(io, &tx);
                    }
                    Inbound::Done => {}
                    Inbound::Drop { reason, answer } => {
                        io.stats.count_drop(reason, 1);
                        if let Some(tx) = answer {
                            send_now(io, &tx);
                        }
                    }
                }
                if let Some((off, len)) = to_tun {
                    if off != 0 {
                        buf.copy_within(TUN_OFFSET + off..TUN_OFFSET + off + len, TUN_OFFSET);
                    }
                    buf.truncate(TUN_OFFSET + len);
                    t += 1;
                }
            }
            flush |= peer.flush_pending();
            events = drain_events(&mut peer);
        }
        log_events(io, events);
        if t > 0 {
            io.tun.write_packets(w, t, &io.stats);
            written += t;
        }
    }
    if flush {
        flush_queued(io, w);
    }
    written
}

/// Sends one datagram at once (handshake messages, cookies, packets that waited for a
/// session: rare); false if the kernel refused it.
fn send_now(io: &Io, tx: &Transmit<'_>) -> bool {
    let sent = socket::send_one(&io.socket, tx.datagram, tx.to).is_ok();
    if !sent {
        io.stats.count_drop(DropReason::IoError, 1);
    }
    sent
}

/// After a handshake completes, sends the packets that waited for it, one lock each
/// (rare). Without a session yet (we only answered), they stay queued.
fn flush_queued(io: &Io, w: &mut Buffers) {
    let out = &mut w.enc[..SLOT];
    let now = Instant::now();
    loop {
        let mut peer = io.lock();
        let Some(tx) = peer.poll_queued(out, now) else {
            return;
        };
        if send_now(io, &tx) {
            LineStats::add(&io.stats.tx_packets, 1);
        }
    }
}

/// The peer's events since the last call, taken under the lock and logged after it.
/// At most one of each kind is pending, hence four.
type Events = Option<[Option<Event>; 4]>;

fn drain_events(peer: &mut WireGuardPeer) -> Events {
    let first = peer.poll_event()?;
    let mut events = [Some(first), None, None, None];
    for e in events.iter_mut().skip(1) {
        *e = peer.poll_event();
    }
    Some(events)
}

fn log_events(io: &Io, events: Events) {
    for event in events.into_iter().flatten().flatten() {
        match event {
            Event::EndpointChanged { old, new } => {
                info!(line = %io.name, old = ?old, new = %new, "peer endpoint changed")
            }
            Event::HandshakeBack { to } => {
                debug!(line = %io.name, to = %to, "data without a session: handshake back")
            }
            Event::Up { endpoint } => {
                info!(line = %io.name, endpoint = ?endpoint, "handshake completed, line up")
            }
            Event::Down => warn!(line = %io.name, "no session with the peer, line down"),
            Event::Problem(problem) => warn!(line = %io.name, "{problem}"),
        }
    }
}

/// WireGuard's timers, and a client's persistence, inside the line's span: boringtun's
/// own timer messages name the line.
async fn timers(io: Arc<Io>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 2 * TIMER_SLOT];
    loop {
        tick.tick().await;
        let (first, second) = buf.split_at_mut(TIMER_SLOT);
        let (sends, events) = io.span.in_scope(|| {
            let mut peer = io.lock();
            let now = Instant::now();
            let sends = [peer.poll_timers(first, now), peer.poll_dial(second, now)];
            (sends, drain_events(&mut peer))
        });
        log_events(&io, events);
        for tx in sends.iter().flatten() {
            send_now(&io, tx);
        }
    }
}
