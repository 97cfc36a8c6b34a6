//! The WireGuard line's I/O loop: a TUN device, a UDP socket and a
//! [`WireGuardCore`], driven by two paths on the data-plane threads
//! ([`super::poller`]) and one tokio task.
//!
//! - `outbound_ready`: TUN -> encrypt -> UDP, a batch of up to [`SEGS`] packets (TUN
//!   reads, see [`Tun::read_packets`]), one `sendmmsg` per batch;
//! - `inbound_once`: UDP -> decrypt -> TUN, one `recvmmsg` per batch; authenticated
//!   datagrams from a new address move the endpoint (roaming). What the kernel answered
//!   inside the TUN write (a ping reply, ACKs) it sends itself when the outbound path
//!   is idle, one outbound batch under the device's read turn ([`Tun::try_read_turn`]),
//!   so a flow is never read by two threads at once;
//! - `timers` (tokio): every [`TICK`], WireGuard's timers (retransmit, rekey,
//!   keepalive), and for a client a new handshake whenever there is no session, so a
//!   line comes back by itself after its peer or the underlay returns.
//!
//! The core and the endpoint sit behind one mutex, taken once per batch and never across
//! an `.await`.
//!
//! Like the kernel and wireguard-go, a line that has just answered the peer's handshake
//! starts none of its own for [`RESPONSE_HOLDOFF`]: packets that wait for the session
//! stay queued in the core until the peer confirms it (its first data or keepalive),
//! then go out. Initiating at once instead makes two handshakes cross, which
//! wireguard-go (0.0.20220316) sometimes resolves into a session it cannot receive on.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socket2::Socket;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::batch::{offset_in, SLOT};
use super::pmtu::PathMtu;
use super::poller::{self, Registration};
use super::pool::{
    dec_slot, segment, with_buffers, Buffers, RX_MSGS_GRO, RX_MSGS_MAX, SEGS, TUN_OFFSET,
};
use super::stats::LineStats;
use super::tun::Tun;
use super::{gso, udp, DataplaneError};
use crate::tunnel::keys::{PrivateKey, PublicKey};
use crate::tunnel::wireguard::{Keys, Stats, WireGuardCore, MIN_OUT};
use crate::tunnel::{Action, DropReason};

/// How often WireGuard's timers run.
pub const TICK: Duration = Duration::from_millis(250);
/// Room for one timer message (a handshake initiation is the largest, 148 bytes).
const TIMER_SLOT: usize = 256;
/// WireGuard message types (the first byte of every message).
const HANDSHAKE_INITIATION: u8 = 1;
const HANDSHAKE_RESPONSE: u8 = 2;
const COOKIE_REPLY: u8 = 3;
/// How long after answering a handshake we start none of our own (WireGuard's
/// REKEY_TIMEOUT, which the kernel applies from the last handshake message sent).
pub const RESPONSE_HOLDOFF: Duration = Duration::from_secs(5);

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

struct Shared {
    core: WireGuardCore,
    endpoint: Option<SocketAddr>,
    /// When we last answered the peer's handshake initiation.
    responded: Option<Instant>,
    /// Packets from the TUN device wait in the core for a session.
    queued: bool,
    /// When we last started a handshake toward data we could not read.
    redialed: Option<Instant>,
}

impl Shared {
    /// Whether `message`, which the core wants sent, may go now: anything but an
    /// initiation of our own within [`RESPONSE_HOLDOFF`] of answering the peer's.
    /// A held-back initiation leaves the core waiting for an answer; its timers resend
    /// one after REKEY_TIMEOUT if the peer's session never comes.
    fn may_send(&self, message: &[u8], now: Instant) -> bool {
        message.first() != Some(&HANDSHAKE_INITIATION)
            || self
                .responded
                .is_none_or(|at| now.saturating_duration_since(at) >= RESPONSE_HOLDOFF)
    }
}

struct Io {
    name: String,
    tun: Tun,
    socket: Socket,
    shared: Mutex<Shared>,
    stats: Arc<LineStats>,
    dials: bool,
    /// UDP GSO: probed at start, turned off if a send is refused.
    udp_gso: AtomicBool,
    /// UDP GRO: on when the kernel took the socket option.
    udp_gro: bool,
    pmtu: Arc<PathMtu>,
    redial_from: Option<IpAddr>,
    /// Fault injection for the tests ([`FAULT_ENV`]): the outbound path panics once.
    fault: Fault,
}

/// An injected fault ([`FAULT_ENV`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The first packet of the process's first such line start panics.
    Once,
    /// The first packet after every start of the line panics.
    Always,
}

/// `TWNODE_FAULT_INJECT=panic-outbound:<line>` in the daemon's environment makes that
/// line's outbound path panic on its first packet, once per process;
/// `panic-outbound-always:<line>` after every start of the line (a bug that every
/// restart meets again). How the tests check that a packet path that dies is noticed,
/// its line restarted, and restarted ever more slowly. Read once per line start; costs
/// one branch per batch otherwise.
pub const FAULT_ENV: &str = "TWNODE_FAULT_INJECT";

/// What [`FAULT_ENV`] asks of `line`.
fn fault_armed(line: &str) -> Fault {
    let Ok(v) = std::env::var(FAULT_ENV) else {
        return Fault::None;
    };
    if v.strip_prefix("panic-outbound:") == Some(line) {
        Fault::Once
    } else if v.strip_prefix("panic-outbound-always:") == Some(line) {
        Fault::Always
    } else {
        Fault::None
    }
}

impl Io {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave the core half-updated in a way
        // that matters more than losing the line; keep going.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
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
        let udp_gso = want && gso::probe_gso(&socket);
        let udp_gro = want && gso::enable_gro(&socket);
        let core = WireGuardCore::new(Keys {
            private: &spec.private_key,
            peer_public: &spec.peer_public_key,
            keepalive: spec.keepalive,
            index: spec.index,
        });
        let fault = fault_armed(&spec.name);
        let io = Arc::new(Io {
            name: spec.name,
            tun,
            socket,
            shared: Mutex::new(Shared {
                core,
                endpoint: spec.endpoint,
                responded: None,
                queued: false,
                redialed: None,
            }),
            stats: Arc::new(LineStats::default()),
            dials: spec.endpoint.is_some(),
            udp_gso: AtomicBool::new(udp_gso),
            udp_gro,
            pmtu: spec.pmtu,
            redial_from: spec.redial_from,
            fault,
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
        let sh = self.io.lock();
        WireGuardStatus {
            up: sh.core.is_up(),
            endpoint: sh.endpoint,
            local: self.local,
            core: sh.core.stats(),
        }
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
    static FIRED: AtomicBool = AtomicBool::new(false);
    if io.fault == Fault::Always
        || (io.fault == Fault::Once && !FIRED.swap(true, Ordering::Relaxed))
    {
        #[allow(clippy::panic)]
        {
            panic!("fault injected by {FAULT_ENV} into line {}", io.name);
        }
    }
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
    let mut k = 0;
    let endpoint;
    {
        let mut sh = io.lock();
        endpoint = sh.endpoint;
        let now = Instant::now();
        let mut bytes = 0u64;
        for (i, chunk) in w.enc.chunks_exact_mut(SLOT).take(n).enumerate() {
            let inp = segment(&w.segs, &w.seg_len, i);
            // Per segment: a super-packet's segments each fit the line's MTU.
            if io.pmtu.refused(inp, chunk, &io.tun, &io.stats) {
                continue;
            }
            match sh.core.handle_tun_packet(inp, chunk) {
                Action::WriteToNetwork(p) => {
                    // An initiation instead of data: the packet waits for it.
                    if p.first() == Some(&HANDSHAKE_INITIATION) {
                        sh.queued = true;
                    }
                    if sh.may_send(p, now) {
                        w.enc_out[k] = (p.as_ptr(), p.len());
                        k += 1;
                    }
                    bytes += inp.len() as u64;
                }
                // Queued while a handshake runs.
                Action::Done => sh.queued = true,
                Action::Drop(r) => io.stats.count_drop(r, 1),
                Action::WriteToTun(_) => {}
            }
        }
        LineStats::add(&io.stats.tx_bytes, bytes);
    }
    match endpoint {
        Some(to) => send_encrypted(io, &w.enc_out[..k], to),
        None if k > 0 => io.stats.count_drop(DropReason::NoEndpoint, k as u64),
        None => {}
    }
    true
}

/// Sends encrypted datagrams to `to`, with GSO while the socket takes it.
fn send_encrypted(io: &Io, packets: &[(*const u8, usize)], to: SocketAddr) {
    let k = packets.len();
    let use_gso = io.udp_gso.load(Ordering::Relaxed);
    let sent = match gso::send_segments(&io.socket, packets, to, use_gso) {
        Ok(sent) => sent,
        Err((sent, e)) if use_gso && gso::is_gso_refusal(&e) => {
            warn!(line = %io.name, error = %e, "UDP GSO refused on this path; sending datagrams one by one from now on");
            io.udp_gso.store(false, Ordering::Relaxed);
            let rest = &packets[sent..];
            sent + gso::send_segments(&io.socket, rest, to, false).unwrap_or_else(|(n, _)| n)
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
    match gso::recv_segments(&io.socket, &mut w.rx, msgs, &mut w.rx_msgs) {
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
    let mut written = 0;
    let mut flush_to: Option<SocketAddr> = None;
    let mut confirmed = false;
    // Position: message, byte offset within it.
    let (mut msg, mut pos) = (0usize, 0usize);
    while msg < n {
        let mut t = 0; // packets for the TUN device in this chunk
        {
            let mut sh = io.lock();
            let now = Instant::now();
            while msg < n && t < SEGS {
                let m = w.rx_msgs[msg];
                if pos >= m.len {
                    if m.len == 0 {
                        io.stats.count_drop(DropReason::Malformed, 1);
                    }
                    msg += 1;
                    pos = 0;
                    continue;
                }
                let end = (pos + m.seg).min(m.len);
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
                // A cookie reply we receive proves nothing about where the peer is
                // now: it never moves the endpoint nor confirms a session.
                let cookie_in = datagram.first() == Some(&COOKIE_REPLY);
                let out = &mut buf[TUN_OFFSET..];
                let base = out.as_ptr();
                let mut to_tun = None;
                let authenticated = match sh.core.handle_datagram(from.ip(), datagram, out) {
                    Action::WriteToTun(p) => {
                        to_tun = Some((offset_in(base, p), p.len()));
                        confirmed = true;
                        true
                    }
                    Action::WriteToNetwork(p) => {
                        // A handshake response or a cookie: goes back to the sender
                        // at once (rare; the lock is held for one send). A cookie
                        // reply answers an unauthenticated handshake under load: it
                        // must not move the endpoint, or a flood of forged initiations
                        // could steal the line.
                        let authenticated = p.first() != Some(&COOKIE_REPLY);
                        if !authenticated {
                            // boringtun answers with a cookie instead of an Err.
                            io.stats.count_drop(DropReason::UnderLoad, 1);
                        }
                        if p.first() == Some(&HANDSHAKE_RESPONSE) {
                            sh.responded = Some(now);
                        }
                        if udp::send_one(&io.socket, p, from).is_err() {
                            io.stats.count_drop(DropReason::IoError, 1);
                        }
                        flush_to = Some(from);
                        authenticated
                    }
                    Action::Done if cookie_in => false,
                    Action::Done => {
                        confirmed = true;
                        true
                    }
                    Action::Drop(r) => {
                        io.stats.count_drop(r, 1);
                        // Unauthenticated, so the endpoint stays; the answer goes to
                        // the peer's own address only, at most once per
                        // RESPONSE_HOLDOFF (a forged packet buys one initiation).
                        if r == DropReason::UnknownSession
                            && io.redial_from == Some(from.ip())
                            && !sh.core.is_up()
                            && sh.redialed.is_none_or(|at| {
                                now.saturating_duration_since(at) >= RESPONSE_HOLDOFF
                            })
                        {
                            if let Action::WriteToNetwork(p) = sh.core.poll_handshake_anew(out) {
                                if sh.may_send(p, now) {
                                    debug!(line = %io.name, to = %from, "data without a session: handshake back");
                                    sh.redialed = Some(now);
                                    if udp::send_one(&io.socket, p, from).is_err() {
                                        io.stats.count_drop(DropReason::IoError, 1);
                                    }
                                }
                            }
                        }
                        false
                    }
                };
                if let Some((off, len)) = to_tun {
                    if off != 0 {
                        buf.copy_within(TUN_OFFSET + off..TUN_OFFSET + off + len, TUN_OFFSET);
                    }
                    buf.truncate(TUN_OFFSET + len);
                    t += 1;
                }
                if authenticated && sh.endpoint != Some(from) {
                    info!(line = %io.name, old = ?sh.endpoint, new = %from, "peer endpoint changed");
                    sh.endpoint = Some(from);
                }
            }
            // The peer's first packet on a session we answered for: what waited for
            // it can go.
            if confirmed && sh.queued && flush_to.is_none() {
                flush_to = sh.endpoint;
            }
        }
        if t > 0 {
            io.tun.write_packets(w, t, &io.stats);
            written += t;
        }
    }
    if let Some(to) = flush_to {
        flush_queued(io, w, to);
    }
    written
}

/// After a handshake completes, sends the packets that waited for it. Without a
/// session yet (we only answered), they stay queued: the core turns each into an
/// initiation of our own, which [`Shared::may_send`] holds back.
fn flush_queued(io: &Io, w: &mut Buffers, to: SocketAddr) {
    let out = &mut w.enc[..SLOT];
    let now = Instant::now();
    loop {
        let mut sh = io.lock();
        match sh.core.poll_queued(out) {
            Action::WriteToNetwork(p) if sh.may_send(p, now) => {
                let p: &[u8] = p;
                if udp::send_one(&io.socket, p, to).is_err() {
                    io.stats.count_drop(DropReason::IoError, 1);
                } else {
                    LineStats::add(&io.stats.tx_packets, 1);
                }
            }
            _ => {
                // With a session the queue is empty now; without, it still waits.
                sh.queued = sh.core.stats().last_handshake.is_none();
                return;
            }
        }
    }
}

/// WireGuard's timers, and a client's persistence.
async fn timers(io: Arc<Io>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 2 * TIMER_SLOT];
    let mut was_up = false;
    loop {
        tick.tick().await;
        let mut sends: [Option<usize>; 2] = [None, None];
        let endpoint;
        let up;
        {
            let mut sh = io.lock();
            endpoint = sh.endpoint;
            let now = Instant::now();
            let (first, second) = buf.split_at_mut(TIMER_SLOT);
            // Other outcomes (Expired: the peer stopped answering) need no send; a
            // client re-dials below.
            if let Action::WriteToNetwork(p) = sh.core.poll_timers(first) {
                if sh.may_send(p, now) {
                    sends[0] = Some(p.len());
                }
            }
            up = sh.core.is_up();
            if io.dials && !up {
                if let Action::WriteToNetwork(p) = sh.core.poll_handshake(second) {
                    if sh.may_send(p, now) {
                        sends[1] = Some(p.len());
                    }
                }
            }
        }
        if up != was_up {
            if up {
                info!(line = %io.name, endpoint = ?endpoint, "handshake completed, line up");
            } else {
                warn!(line = %io.name, "no session with the peer, line down");
            }
            was_up = up;
        }
        if let Some(to) = endpoint {
            for (k, len) in sends.iter().enumerate() {
                if let Some(len) = len {
                    let p = &buf[k * TIMER_SLOT..k * TIMER_SLOT + len];
                    if udp::send_one(&io.socket, p, to).is_err() {
                        io.stats.count_drop(DropReason::IoError, 1);
                    }
                }
            }
        }
    }
}
