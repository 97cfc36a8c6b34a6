//! The WireGuard line's I/O loop: a TUN device, a UDP socket and a
//! [`WireGuardCore`], driven by three tasks.
//!
//! - `outbound`: TUN -> encrypt -> UDP, a batch of up to [`BATCH`] packets per wake-up,
//!   one `sendmmsg` per batch;
//! - `inbound`: UDP -> decrypt -> TUN, one `recvmmsg` per batch; authenticated datagrams
//!   from a new address move the endpoint (roaming);
//! - `timers`: every [`TICK`], WireGuard's timers (retransmit, rekey, keepalive), and for
//!   a client a new handshake whenever there is no session, so a line comes back by
//!   itself after its peer or the underlay returns.
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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socket2::Socket;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::batch::{offset_in, with_batch, Batch, BATCH};
use super::pmtu::PathMtu;
use super::stats::LineStats;
use super::tun::Tun;
use super::{udp, DataplaneError};
use crate::config::{PrivateKey, PublicKey};
use crate::tunnel::wireguard::{Keys, Stats, WireGuardCore};
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
    socket: AsyncFd<Socket>,
    shared: Mutex<Shared>,
    stats: Arc<LineStats>,
    dials: bool,
    pmtu: Arc<PathMtu>,
    redial_from: Option<IpAddr>,
}

impl Io {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave the core half-updated in a way
        // that matters more than losing the line; keep going.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running WireGuard line. Dropping it stops the tasks; [`WireGuardLine::stop`] also
/// waits until the TUN device is gone.
pub struct WireGuardLine {
    io: Arc<Io>,
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
    /// Creates the TUN device and the socket and starts the tasks on the current runtime.
    pub fn start(spec: WireGuardSpec) -> Result<WireGuardLine, DataplaneError> {
        let tun = Tun::create(&spec.name, spec.mtu)?;
        let socket = udp::bind(SocketAddr::new(spec.local_ip, spec.listen_port))?;
        let local = udp::local_addr(socket.get_ref());
        let core = WireGuardCore::new(Keys {
            private: &spec.private_key,
            peer_public: &spec.peer_public_key,
            keepalive: spec.keepalive,
            index: spec.index,
        });
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
            pmtu: spec.pmtu,
            redial_from: spec.redial_from,
        });
        info!(line = %io.name, local = ?local, endpoint = ?spec.endpoint, "wireguard line started");
        let tasks = vec![
            tokio::spawn(outbound(io.clone())),
            tokio::spawn(inbound(io.clone())),
            tokio::spawn(timers(io.clone())),
        ];
        Ok(WireGuardLine { io, tasks, local })
    }

    /// The TUN device's interface index.
    pub fn ifindex(&self) -> u32 {
        self.io.tun.index()
    }

    /// The line's counters.
    pub fn stats(&self) -> &LineStats {
        &self.io.stats
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
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let name = self.io.name.clone();
        // Wait for the last reference (a task that was mid-batch) to go.
        let io = self.io.clone();
        drop(self);
        super::drop_last_ref(io).await;
        info!(line = %name, "wireguard line stopped");
    }
}

impl Drop for WireGuardLine {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// TUN -> UDP.
async fn outbound(io: Arc<Io>) {
    let mut slots = [0usize; BATCH];
    loop {
        // AsyncFd::readable() takes no coop budget: without this, a socket that
        // never drains (a flood) keeps its worker thread, and with it the I/O driver,
        // other lines and the control socket, to itself.
        tokio::task::consume_budget().await;
        let mut guard = match io.tun.fd().readable().await {
            Ok(g) => g,
            Err(e) => {
                warn!(line = %io.name, error = %e, "TUN device failed; outbound path stops");
                return;
            }
        };
        with_batch(|b| {
            let n = read_tun_batch(&io, b);
            if n == 0 {
                guard.clear_ready();
                return;
            }
            let mut k = 0;
            let endpoint;
            {
                let mut sh = io.lock();
                endpoint = sh.endpoint;
                let now = Instant::now();
                let mut bytes = 0u64;
                for i in 0..n {
                    let (inp, out) = b.in_out(i);
                    let base = out.as_ptr();
                    let len = inp.len();
                    if io.pmtu.refused(inp, out, &io.tun, &io.stats) {
                        continue;
                    }
                    match sh.core.handle_tun_packet(inp, out) {
                        Action::WriteToNetwork(p) => {
                            // An initiation instead of data: the packet waits for it.
                            if p.first() == Some(&HANDSHAKE_INITIATION) {
                                sh.queued = true;
                            }
                            if sh.may_send(p, now) {
                                b.out[i] = (offset_in(base, p), p.len());
                                slots[k] = i;
                                k += 1;
                            }
                            bytes += len as u64;
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
                Some(to) => {
                    let sent = udp::send_batch(io.socket.get_ref(), b, &slots[..k], to);
                    LineStats::add(&io.stats.tx_packets, sent as u64);
                    if sent < k {
                        io.stats.count_drop(DropReason::IoError, (k - sent) as u64);
                    }
                }
                None if k > 0 => io.stats.count_drop(DropReason::NoEndpoint, k as u64),
                None => {}
            }
        });
    }
}

/// Reads up to a batch of packets from the TUN device; 0 when it is drained.
fn read_tun_batch(io: &Io, b: &mut Batch) -> usize {
    let mut n = 0;
    while n < BATCH {
        match io.tun.fd().get_ref().recv(b.input_slot(n)) {
            Ok(len) => {
                b.in_len[n] = len;
                n += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                debug!(line = %io.name, error = %e, "TUN read failed");
                io.stats.count_drop(DropReason::IoError, 1);
                break;
            }
        }
    }
    n
}

/// What the inbound batch produced in output slot i.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Tun,
    Net(SocketAddr),
}

/// UDP -> TUN.
async fn inbound(io: Arc<Io>) {
    let mut outs = [Out::None; BATCH];
    loop {
        // AsyncFd::readable() takes no coop budget: without this, a socket that
        // never drains (a flood) keeps its worker thread, and with it the I/O driver,
        // other lines and the control socket, to itself.
        tokio::task::consume_budget().await;
        let mut guard = match io.socket.readable().await {
            Ok(g) => g,
            Err(e) => {
                warn!(line = %io.name, error = %e, "UDP socket failed; inbound path stops");
                return;
            }
        };
        with_batch(|b| {
            let n = match udp::recv_batch(io.socket.get_ref(), b) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    return;
                }
                Err(e) => {
                    debug!(line = %io.name, error = %e, "UDP receive failed");
                    return;
                }
            };
            let mut flush_to: Option<SocketAddr> = None;
            {
                let mut sh = io.lock();
                let now = Instant::now();
                let mut confirmed = false;
                for (i, slot) in outs.iter_mut().enumerate().take(n) {
                    *slot = Out::None;
                    let Some(from) = b.from[i] else {
                        io.stats.count_drop(DropReason::Malformed, 1);
                        continue;
                    };
                    let (inp, out) = b.in_out(i);
                    let base = out.as_ptr();
                    // A cookie reply we receive proves nothing about where the peer
                    // is now: it never moves the endpoint nor confirms a session.
                    let cookie_in = inp.first() == Some(&COOKIE_REPLY);
                    let authenticated = match sh.core.handle_datagram(from.ip(), inp, out) {
                        Action::WriteToTun(p) => {
                            b.out[i] = (offset_in(base, p), p.len());
                            *slot = Out::Tun;
                            confirmed = true;
                            true
                        }
                        Action::WriteToNetwork(p) => {
                            // A handshake response or a cookie: goes back to the sender.
                            // A cookie reply (type 3) answers an unauthenticated
                            // handshake under load: it must not move the endpoint, or a
                            // flood of forged initiations could steal the line.
                            let authenticated = p.first() != Some(&COOKIE_REPLY);
                            if !authenticated {
                                // boringtun answers with a cookie instead of an Err.
                                io.stats.count_drop(DropReason::UnderLoad, 1);
                            }
                            if p.first() == Some(&HANDSHAKE_RESPONSE) {
                                sh.responded = Some(now);
                            }
                            b.out[i] = (offset_in(base, p), p.len());
                            *slot = Out::Net(from);
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
                                if let Action::WriteToNetwork(p) = sh.core.poll_handshake_anew(out)
                                {
                                    if sh.may_send(p, now) {
                                        debug!(line = %io.name, to = %from, "data without a session: handshake back");
                                        sh.redialed = Some(now);
                                        b.out[i] = (offset_in(base, p), p.len());
                                        *slot = Out::Net(from);
                                    }
                                }
                            }
                            false
                        }
                    };
                    if authenticated && sh.endpoint != Some(from) {
                        info!(line = %io.name, old = ?sh.endpoint, new = %from, "peer endpoint changed");
                        sh.endpoint = Some(from);
                    }
                }
                // The peer's first packet on a session we answered for: what waited
                // for it can go.
                if confirmed && sh.queued && flush_to.is_none() {
                    flush_to = sh.endpoint;
                }
            }
            let mut rx_packets = 0u64;
            let mut rx_bytes = 0u64;
            for (i, out) in outs.iter().enumerate().take(n) {
                match *out {
                    Out::Tun => {
                        let pkt = b.output(i);
                        match io.tun.write(pkt) {
                            Ok(_) => {
                                rx_packets += 1;
                                rx_bytes += pkt.len() as u64;
                            }
                            Err(_) => io.stats.count_drop(DropReason::IoError, 1),
                        }
                    }
                    Out::Net(to) => {
                        if udp::send_one(io.socket.get_ref(), b.output(i), to).is_err() {
                            io.stats.count_drop(DropReason::IoError, 1);
                        }
                    }
                    Out::None => {}
                }
            }
            LineStats::add(&io.stats.rx_packets, rx_packets);
            LineStats::add(&io.stats.rx_bytes, rx_bytes);
            if let Some(to) = flush_to {
                flush_queued(&io, b, to);
            }
        });
    }
}

/// After a handshake completes, sends the packets that waited for it. Without a
/// session yet (we only answered), they stay queued: the core turns each into an
/// initiation of our own, which [`Shared::may_send`] holds back.
fn flush_queued(io: &Io, b: &mut Batch, to: SocketAddr) {
    let out = b.input_slot(0);
    let now = Instant::now();
    loop {
        let mut sh = io.lock();
        match sh.core.poll_queued(out) {
            Action::WriteToNetwork(p) if sh.may_send(p, now) => {
                let p: &[u8] = p;
                if udp::send_one(io.socket.get_ref(), p, to).is_err() {
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
                    if udp::send_one(io.socket.get_ref(), p, to).is_err() {
                        io.stats.count_drop(DropReason::IoError, 1);
                    }
                }
            }
        }
    }
}
