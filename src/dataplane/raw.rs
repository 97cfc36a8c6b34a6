//! IP tunnel lines' I/O: raw IP sockets (protocols 4, 41, 47 and 50) shared between
//! lines, a TUN device per line, and an [`IpTunnelCore`] per line.
//!
//! An encrypted GRE line (ESP, protocol 50) is told apart on its socket by peer and
//! inbound SPI, where a GRE line is told apart by peer and GRE key: the route's `ikey`
//! holds the SPI then. Its `reserve` task keeps the ESP sequence-number mark on disk
//! ahead of the numbers sent, and the replay floor of the inbound SA not far behind the
//! numbers received ([`super::seqstore`]), woken by the packet paths when the core asks;
//! the packet paths themselves never write a file. A clean stop writes the exact floor.
//!
//! Sockets: one raw socket per (protocol, local address), opened when the first line
//! needs it and closed with the last ([`RawSockets`]). A socket's receive path reads a
//! batch with `recvmmsg` and hands each packet to the line whose peer sent it (and, for
//! GRE, whose input key it carries), so any number of lines of one protocol coexist,
//! including two GRE lines to the same peer with different keys. A bound raw socket also
//! keeps the kernel from answering tunnel packets with ICMP "protocol unreachable" on a
//! host without the tunnel modules.
//!
//! Headers: the cores build the whole outer packet. IPv4 sockets use `IP_HDRINCL`, so
//! the header goes out as built, and receive it. IPv6 sockets use `IPV6_HDRINCL` (Linux
//! 4.5 and later) to send, but receive only the payload: the source comes from the
//! socket address and the traffic class (for ECN) from an `IPV6_RECVTCLASS` message.
//!
//! Paths: per socket, `receive_once` (underlay -> TUN, in place, a line's core locked
//! once per run of its packets); per line, `outbound_ready` (TUN -> underlay, one
//! `sendmmsg` per batch). Both run on the data-plane threads ([`super::poller`]).
//! An `af_xdp` line sends its batches through an AF_XDP port on the next hop's device
//! instead, once the daemon has found that next hop ([`xsk::Transmit`]); the raw socket
//! still receives, and sends what the port does not take.
//! Tokio tasks: per line, with a keepalive, `keepalive` (probes on a tick), and for ESP
//! `reserve`. No lock is held across an `.await`.

use std::collections::HashMap;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::batch::{offset_in, with_batch, Batch, BATCH, SLOT};
use super::pmtu::PathMtu;
use super::poller::{self, Registration};
use super::pool::{dec_slot, segment, with_buffers, Buffers, TUN_OFFSET};
use super::probe::{ProbeError, Prober, MAX_PROBE};
use super::seqstore::SeqStore;
use super::setup::RawSpec;
use super::stats::LineStats;
use super::tun::Tun;
use super::{gso, udp, xsk, DataplaneError};
use crate::net::NextHop;
use crate::tunnel::esp::EspCore;
use crate::tunnel::iptunnel::{IpTunnelCore, IpVersion};
use crate::tunnel::keepalive::{KeepaliveStatus, Liveness};
use crate::tunnel::{Action, DropReason};
use crate::wire::gre::Key;
use crate::wire::{self, IpProtocol, TrafficClass};

/// How often keepalives are polled.
pub const TICK: Duration = Duration::from_millis(250);
/// Room for a keepalive probe: two IPv6 headers and two full GRE headers fit.
const PROBE_SLOT: usize = 160;
/// Room for the ancillary data of one received IPv6 packet (one IPV6_TCLASS message).
const CONTROL_WORDS: usize = 8;

/// A raw socket's identity: protocol and local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SocketKey {
    protocol: IpProtocol,
    local: IpAddr,
}

/// Where a socket sends a packet from `peer` (with GRE key `ikey`).
#[derive(Clone)]
struct Route {
    line: u64,
    peer: IpAddr,
    ikey: Option<Key>,
    /// The protocol is the line's own (not one it merely accepts, see
    /// [`crate::tunnel::iptunnel::TunnelType::protocols`]).
    own: bool,
    io: Arc<LineIo>,
}

/// One shared raw socket.
struct Endpoint {
    key: SocketKey,
    socket: Socket,
    /// The data-plane thread of its receive path, and of the outbound paths of the
    /// lines that send on it (see [`poller`] for why they share one). Replaced when
    /// that thread has failed ([`register_receive`]).
    thread: Mutex<poller::Thread>,
    /// Replaced as a whole when a line comes or goes; a batch works on one snapshot.
    routes: RwLock<Arc<Vec<Route>>>,
    /// Packets from addresses that are no line's peer (the raw socket sees every packet
    /// of its protocol to its address).
    strangers: AtomicU64,
}

impl Endpoint {
    fn routes(&self) -> Arc<Vec<Route>> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Shared {
    endpoint: Arc<Endpoint>,
    /// The receive path on a data-plane thread; dropping it stops the path.
    receive: Registration,
}

/// The raw sockets of a daemon, shared by its IP tunnel lines. Cloning shares them.
#[derive(Clone, Default)]
pub struct RawSockets {
    sockets: Arc<Mutex<HashMap<SocketKey, Shared>>>,
    next_line: Arc<AtomicU64>,
    /// AF_XDP ports of the lines that send through them.
    ports: xsk::Ports,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RawSockets {
    /// No sockets yet.
    pub fn new() -> RawSockets {
        RawSockets::default()
    }

    /// The socket for `key`, opened (and its receive path registered) if no line uses it.
    fn open(&self, key: SocketKey) -> Result<Arc<Endpoint>, DataplaneError> {
        let mut sockets = lock(&self.sockets);
        if let Some(s) = sockets.get(&key) {
            return Ok(s.endpoint.clone());
        }
        let endpoint = Arc::new(Endpoint {
            key,
            socket: open_socket(key)?,
            thread: Mutex::new(
                poller::next_thread().map_err(|source| DataplaneError::Setup {
                    what: "cannot start the data-plane threads",
                    source,
                })?,
            ),
            routes: RwLock::new(Arc::new(Vec::new())),
            strangers: AtomicU64::new(0),
        });
        let receive = register_receive(&endpoint)?;
        info!(protocol = key.protocol.number(), local = %key.local, "raw socket opened");
        sockets.insert(
            key,
            Shared {
                endpoint: endpoint.clone(),
                receive,
            },
        );
        Ok(endpoint)
    }

    /// Registers a receive path again where one stopped after a panic (its lines would
    /// otherwise receive nothing while they look up); returns what was revived.
    pub fn revive_receives(&self) -> Vec<String> {
        let mut sockets = lock(&self.sockets);
        let mut revived = Vec::new();
        for s in sockets.values_mut() {
            if s.receive.stopped() {
                if let Ok(r) = register_receive(&s.endpoint) {
                    revived.push(s.receive.what().to_string());
                    s.receive = r;
                }
            }
        }
        revived
    }

    /// Adds a route to an open socket; refuses one that would take another line's packets.
    fn add_route(&self, endpoint: &Endpoint, route: Route) -> Result<(), DataplaneError> {
        let _sockets = lock(&self.sockets);
        let mut routes = endpoint.routes.write().unwrap_or_else(|e| e.into_inner());
        if route.own {
            if let Some(other) = routes
                .iter()
                .find(|r| r.own && r.peer == route.peer && r.ikey == route.ikey)
            {
                let key = match route.ikey {
                    Some(k) => format!(" with GRE key {}", k.0),
                    None => String::new(),
                };
                return Err(DataplaneError::Claimed(format!(
                    "line {} already receives protocol {} from {}{key} on {}; give the lines \
                     different keys (--key) or peers",
                    other.io.name,
                    endpoint.key.protocol.number(),
                    route.peer,
                    endpoint.key.local
                )));
            }
        }
        let mut next = Vec::with_capacity(routes.len() + 1);
        next.extend(routes.iter().cloned());
        next.push(route);
        *routes = Arc::new(next);
        Ok(())
    }

    /// Removes a line's routes everywhere and closes the sockets no line uses any more.
    fn remove_line(&self, line: u64) {
        let mut sockets = lock(&self.sockets);
        sockets.retain(|key, s| {
            let mut routes = s.endpoint.routes.write().unwrap_or_else(|e| e.into_inner());
            if routes.iter().any(|r| r.line == line) {
                let next: Vec<Route> = routes.iter().filter(|r| r.line != line).cloned().collect();
                *routes = Arc::new(next);
            }
            let keep = !routes.is_empty();
            if !keep {
                info!(protocol = key.protocol.number(), local = %key.local,
                      strangers = s.endpoint.strangers.load(Relaxed), "raw socket closed");
            }
            keep
        });
    }
}

/// Runs `endpoint`'s receive path on its data-plane thread, another one if that thread
/// has failed (the lines sending on the socket then move with it as they restart).
fn register_receive(endpoint: &Arc<Endpoint>) -> Result<Registration, DataplaneError> {
    let key = endpoint.key;
    let what = format!(
        "raw socket receive (protocol {}, {})",
        key.protocol.number(),
        key.local
    );
    let path = endpoint.clone();
    let setup = |source| DataplaneError::Setup {
        what: "cannot register the raw socket with a data-plane thread",
        source,
    };
    let mut thread = lock(&endpoint.thread);
    if thread.failed() {
        *thread = poller::next_thread().map_err(setup)?;
    }
    thread
        .register(endpoint.socket.as_raw_fd(), what, move || {
            receive_once(&path)
        })
        .map_err(setup)
}

/// Opens a non-blocking raw socket for `key`, header included on send, bound to the
/// local address. `IP_FREEBIND` lets a line on a line bind its parent's VIP early.
fn open_socket(key: SocketKey) -> Result<Socket, DataplaneError> {
    let setup = |what| move |source| DataplaneError::Setup { what, source };
    let domain = match key.local {
        IpAddr::V4(_) => Domain::IPV4,
        IpAddr::V6(_) => Domain::IPV6,
    };
    let protocol = Protocol::from(i32::from(key.protocol.number()));
    let socket = Socket::new(domain, Type::RAW, Some(protocol))
        .map_err(setup("cannot open a raw IP socket (needs CAP_NET_RAW)"))?;
    socket
        .set_nonblocking(true)
        .map_err(setup("cannot make the raw socket non-blocking"))?;
    match key.local {
        IpAddr::V4(_) => {
            socket
                .set_header_included_v4(true)
                .map_err(setup("cannot set IP_HDRINCL"))?;
            socket
                .set_freebind(true)
                .map_err(setup("cannot set IP_FREEBIND"))?;
        }
        IpAddr::V6(_) => {
            // Not socket2's set_header_included_v6: socket2 0.5 passes IP_HDRINCL's
            // number (3) at the IPv6 level, which is another option.
            set_ipv6_int(&socket, libc::IPV6_HDRINCL, 1).map_err(setup(
                "cannot set IPV6_HDRINCL (IPv6 tunnels need Linux 4.5 or later)",
            ))?;
            socket
                .set_recv_tclass_v6(true)
                .map_err(setup("cannot set IPV6_RECVTCLASS"))?;
            socket
                .set_freebind_ipv6(true)
                .map_err(setup("cannot set IPV6_FREEBIND"))?;
        }
    }
    udp::force_buffers(&socket);
    let addr = SocketAddr::new(key.local, 0);
    socket
        .bind(&SockAddr::from(addr))
        .map_err(|source| DataplaneError::Bind { addr, source })?;
    Ok(socket)
}

/// `setsockopt(IPPROTO_IPV6, opt, value)` for an int option.
fn set_ipv6_int(socket: &Socket, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the descriptor is an open socket; the value pointer and length describe a
    // c_int that lives for the call.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            opt,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Room for a probe's outer packet: the outer IP header, GRE with every option, ESP's
/// header, padding and tag, with margin.
const PROBE_OUT: usize = 512;

/// One line's state, shared by its paths, its tasks and by the routes of its sockets.
struct LineIo {
    name: String,
    tun: Tun,
    core: Mutex<IpTunnelCore>,
    stats: LineStats,
    /// The peer as a socket address (port 0), where every packet of the line goes.
    peer: SocketAddr,
    /// The socket of the line's own protocol, used to send.
    tx: Arc<Endpoint>,
    pmtu: Arc<PathMtu>,
    /// ESP lines: wakes the task that writes sequence-number reservations.
    reserve: Option<tokio::sync::Notify>,
    /// `af_xdp` lines: the AF_XDP transmit path.
    xdp: Option<xsk::Transmit>,
    /// Health probes: sent by [`RawLine::send_probe`], replies taken off the receive
    /// path.
    prober: Prober,
    /// A probe and its encapsulation (the daemon sends one at a time).
    probe_buf: Mutex<Vec<u8>>,
}

impl LineIo {
    fn lock(&self) -> MutexGuard<'_, IpTunnelCore> {
        lock(&self.core)
    }
}

/// A snapshot for `line list`.
#[derive(Debug, Clone)]
pub struct RawStatus {
    /// The underlay address the line sends from.
    pub local: IpAddr,
    /// Keepalive figures; `None` without keepalive.
    pub keepalive: Option<KeepaliveStatus>,
    /// ESP: (outbound SPI, inbound SPI, next sequence number, reserved limit, highest
    /// received); `None` for a plain line.
    pub esp: Option<(u32, u32, u64, u64, u64)>,
    /// `af_xdp` lines: how packets leave now ([`xsk::Transmit::describe`]).
    pub transmit: Option<String>,
    /// `af_xdp` lines: packets sent through AF_XDP so far.
    pub af_xdp_packets: Option<u64>,
}

/// A running IP tunnel line. Dropping it stops its paths and tasks and releases its
/// sockets;
/// [`RawLine::stop`] also waits until the TUN device is gone.
pub struct RawLine {
    io: Arc<LineIo>,
    /// The outbound path on a data-plane thread; dropping it stops the path.
    outbound: Option<Registration>,
    tasks: Vec<JoinHandle<()>>,
    sockets: RawSockets,
    id: u64,
    /// ESP: where the replay floor is written at a clean stop.
    floor: Option<SeqStore>,
}

impl RawLine {
    /// Creates the TUN device, attaches the line to its raw sockets (opening them if
    /// needed), registers its outbound path and starts its tasks on the current runtime.
    pub fn start(spec: RawSpec, sockets: &RawSockets) -> Result<RawLine, DataplaneError> {
        let settings = spec.settings;
        let mut core = IpTunnelCore::new(settings)?;
        let mut store = None;
        if let Some(esp) = spec.esp {
            let (e, seq, floor) = esp.start(&spec.name)?;
            core = core.with_esp(e)?;
            store = Some((seq, floor));
        }
        let tun = Tun::create_for_line(&spec.name, spec.mtu, settings.kind.carries(IpVersion::V6))?;
        let offload = tun.offload();
        let id = sockets.next_line.fetch_add(1, Relaxed);
        let kind = settings.kind;
        let esp_spi = core.esp().map(|e| Key(e.inbound_spi()));
        let own_protocol = if esp_spi.is_some() {
            IpProtocol::Esp
        } else {
            kind.protocol()
        };
        let own = SocketKey {
            protocol: own_protocol,
            local: settings.local,
        };
        let attached = (|| {
            let tx = sockets.open(own)?;
            let io = Arc::new(LineIo {
                name: spec.name.clone(),
                tun,
                core: Mutex::new(core),
                stats: LineStats::default(),
                peer: SocketAddr::new(settings.peer, 0),
                tx,
                pmtu: spec.pmtu.clone(),
                reserve: store.is_some().then(tokio::sync::Notify::new),
                xdp: spec.af_xdp.then(xsk::Transmit::default),
                prober: Prober::new(),
                probe_buf: Mutex::new(vec![0u8; MAX_PROBE + PROBE_OUT]),
            });
            let protocols = if esp_spi.is_some() {
                &[IpProtocol::Esp][..]
            } else {
                kind.protocols()
            };
            for &protocol in protocols {
                let key = SocketKey {
                    protocol,
                    local: settings.local,
                };
                let endpoint = sockets.open(key)?;
                sockets.add_route(
                    &endpoint,
                    Route {
                        line: id,
                        peer: settings.peer,
                        ikey: if esp_spi.is_some() {
                            esp_spi
                        } else if kind.is_gre() {
                            settings.gre.ikey
                        } else {
                            None
                        },
                        own: protocol == own_protocol,
                        io: io.clone(),
                    },
                )?;
            }
            Ok(io)
        })();
        let io = match attached {
            Ok(io) => io,
            Err(e) => {
                sockets.remove_line(id);
                return Err(e);
            }
        };
        let outbound = {
            let io = io.clone();
            let thread = lock(&io.tx.thread).clone();
            let what = format!("line {} outbound", io.name);
            thread.register(io.tun.raw_fd(), what, move || outbound_ready(&io))
        };
        let outbound = match outbound {
            Ok(r) => r,
            Err(source) => {
                sockets.remove_line(id);
                return Err(DataplaneError::Setup {
                    what: "cannot register the TUN device with a data-plane thread",
                    source,
                });
            }
        };
        let mut tasks = Vec::new();
        if settings.keepalive.is_some() {
            tasks.push(tokio::spawn(keepalive(io.clone())));
        }
        let floor = store.as_ref().map(|(_, f)| f.clone());
        if let Some((seq, floor)) = store {
            tasks.push(tokio::spawn(reserve(io.clone(), seq, floor)));
        }
        info!(line = %io.name, kind = %kind, local = %settings.local, peer = %settings.peer,
              tso = offload.tso, "ip tunnel line started");
        Ok(RawLine {
            io,
            outbound: Some(outbound),
            tasks,
            sockets: sockets.clone(),
            id,
            floor,
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

    /// The outbound path, if it stopped after a panic (see [`Registration::stopped`]).
    pub fn stopped_path(&self) -> Option<String> {
        self.outbound
            .as_ref()
            .filter(|o| o.stopped())
            .map(|o| o.what().to_string())
    }

    /// A snapshot of the protocol state.
    pub fn status(&self) -> RawStatus {
        let core = self.io.lock();
        RawStatus {
            local: core.settings().local,
            keepalive: core.keepalive_status(Instant::now()),
            esp: core.esp().map(|e| {
                (
                    e.outbound_spi(),
                    e.inbound_spi(),
                    e.next_seq(),
                    e.limit(),
                    e.highest_received(),
                )
            }),
            transmit: self.io.xdp.as_ref().map(xsk::Transmit::describe),
            af_xdp_packets: self.io.xdp.as_ref().map(xsk::Transmit::sent),
        }
    }

    /// Whether the line sends through AF_XDP once its next hop is known.
    pub fn af_xdp(&self) -> bool {
        self.io.xdp.is_some()
    }

    /// Hands the line the next hop toward its peer (or why there is none), for its
    /// AF_XDP transmit path; nothing for a line without one.
    pub fn update_next_hop(&self, hop: Result<NextHop, String>) {
        if let Some(x) = &self.io.xdp {
            x.update(&self.io.name, self.io.peer.ip(), hop, &self.sockets.ports);
        }
    }

    /// Sends health probe `seq` from `from` (the line's VIP) to `target`: encapsulated
    /// as a packet read from the TUN device would be, and sent to the peer.
    pub fn send_probe(&self, from: IpAddr, target: IpAddr, seq: u16) -> Result<(), ProbeError> {
        let io = &self.io;
        let mut buf = lock(&io.probe_buf);
        let (inp, out) = buf.split_at_mut(MAX_PROBE);
        let n = io.prober.build(from, target, seq, inp)?;
        let base = out.as_ptr();
        let (off, len, reserve) = {
            let mut core = io.lock();
            let (off, len) = match core.handle_tun_packet(&inp[..n], out) {
                Action::WriteToNetwork(p) => (offset_in(base, p), p.len()),
                _ => return Err(ProbeError::CannotSend("the tunnel core refused the probe")),
            };
            (
                off,
                len,
                core.esp().and_then(EspCore::poll_reservation).is_some(),
            )
        };
        if reserve {
            if let Some(r) = &io.reserve {
                r.notify_one();
            }
        }
        let packet = out
            .get(off..off + len)
            .ok_or(ProbeError::CannotSend("probe buffer"))?;
        udp::send_one(&io.tx.socket, packet, io.peer)
            .map(|_| ())
            .map_err(|_| ProbeError::CannotSend("the raw socket refused the packet"))
    }

    /// When the reply to probe `seq` came, if it did.
    pub fn probe_reply(&self, seq: u16) -> Option<Instant> {
        self.io.prober.reply(seq)
    }

    /// Stops the tasks, releases the sockets, and waits until the TUN device is closed.
    pub async fn stop(mut self) {
        self.outbound = None;
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.sockets.remove_line(self.id);
        let name = self.io.name.clone();
        let io = self.io.clone();
        // ESP: the exact replay floor, so that a restart refuses every packet seen.
        let top = io.lock().esp().map(EspCore::highest_received);
        if let (Some(store), Some(top)) = (self.floor.clone(), top) {
            if top > 0 {
                let written = tokio::task::spawn_blocking(move || store.store(top)).await;
                if !matches!(written, Ok(Ok(()))) {
                    warn!(line = %name, "cannot write the ESP replay floor at stop");
                }
            }
        }
        drop(self);
        // A receive batch may still hold a snapshot of the routes for a moment.
        super::drop_last_ref(io).await;
        info!(line = %name, "ip tunnel line stopped");
    }
}

impl Drop for RawLine {
    fn drop(&mut self) {
        self.outbound = None;
        for t in &self.tasks {
            t.abort();
        }
        self.sockets.remove_line(self.id);
    }
}

/// TUN -> underlay: a batch is one TUN read with offloads (a super-packet, split into
/// its segments) or up to [`pool::SEGS`](super::pool::SEGS) single packets without,
/// encapsulated under one lock and sent with one `sendmmsg`.
///
/// Runs on a data-plane thread when the TUN device is readable; true when a batch went
/// (more may be waiting), false when the device had nothing.
fn outbound_ready(io: &LineIo) -> bool {
    with_buffers(|w| {
        // One batch at a time per line (the receive path may take a turn too, see
        // `deliver`): two threads reading one TUN device would reorder a flow.
        let _turn = io.tun.read_turn();
        outbound_once(io, w)
    })
}

/// One outbound batch; false when the TUN device had nothing.
fn outbound_once(io: &LineIo, w: &mut Buffers) -> bool {
    let n = io.tun.read_packets(w, &io.stats, &io.name);
    if n == 0 {
        return false;
    }
    let mut k = 0;
    let mut bytes = 0u64;
    let wants_reservation;
    {
        let mut core = io.lock();
        for (i, out) in w.enc.chunks_exact_mut(SLOT).take(n).enumerate() {
            let inp = segment(&w.segs, &w.seg_len, i);
            if io.pmtu.refused(inp, out, &io.tun, &io.stats) {
                continue;
            }
            match core.handle_tun_packet(inp, out) {
                Action::WriteToNetwork(p) => {
                    w.enc_out[k] = (p.as_ptr(), p.len());
                    k += 1;
                    bytes += inp.len() as u64;
                }
                Action::Drop(r) => io.stats.count_drop(r, 1),
                Action::Done | Action::WriteToTun(_) => {}
            }
        }
        wants_reservation = core.esp().and_then(EspCore::poll_reservation).is_some();
    }
    if wants_reservation {
        if let Some(r) = &io.reserve {
            r.notify_one();
        }
    }
    let packets = &w.enc_out[..k];
    let past_kernel = io.xdp.as_ref().map_or(0, |x| x.send(&io.name, packets));
    let rest = &packets[past_kernel..];
    let sent = past_kernel
        + match gso::send_segments(&io.tx.socket, rest, io.peer, false) {
            Ok(sent) => sent,
            Err((sent, e)) => {
                debug!(line = %io.name, error = %e, "raw socket send failed");
                sent
            }
        };
    LineStats::add(&io.stats.tx_packets, sent as u64);
    LineStats::add(&io.stats.tx_bytes, bytes);
    if sent < k {
        io.stats.count_drop(DropReason::IoError, (k - sent) as u64);
    }
    true
}

/// Writes a run of one line's packets (`w.dec[..t]`) to its TUN device. What the kernel
/// answered inside that write (a ping reply, ACKs) goes out at once on this thread
/// when the line's outbound path is idle: one batch, under the device's read turn. That
/// saves waiting for the outbound path's own turn on the way back.
fn deliver(line: &LineIo, w: &mut Buffers, t: usize) {
    line.tun.write_packets(w, t, &line.stats);
    if let Some(_turn) = line.tun.try_read_turn() {
        outbound_once(line, w);
    }
}

/// ESP: writes sequence-number reservations when the core asks, then hands them to
/// the core. The file is written on a blocking thread, never under the core's lock.
async fn reserve(io: Arc<LineIo>, store: SeqStore, floor: SeqStore) {
    let Some(wake) = &io.reserve else {
        return;
    };
    loop {
        let (want, want_floor) = {
            let core = io.lock();
            let e = core.esp();
            (
                e.and_then(EspCore::poll_reservation),
                e.and_then(EspCore::poll_replay_floor),
            )
        };
        if let Some(top) = want_floor {
            let s = floor.clone();
            match tokio::task::spawn_blocking(move || s.store(top)).await {
                Ok(Ok(())) => {
                    if let Some(e) = io.lock().esp_mut() {
                        e.handle_replay_floor_stored(top);
                    }
                }
                _ => {
                    warn!(line = %io.name, path = %floor.path().display(),
                          "cannot write the ESP replay floor; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let Some(mark) = want else {
            if want_floor.is_none() {
                wake.notified().await;
            }
            continue;
        };
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.store(mark)).await {
            Ok(Ok(())) => {
                debug!(line = %io.name, mark, "ESP sequence numbers reserved");
                if let Some(e) = io.lock().esp_mut() {
                    e.handle_reserved(mark);
                }
            }
            Ok(Err(e)) => {
                warn!(line = %io.name, path = %store.path().display(), error = %e,
                      "cannot write the ESP sequence-number mark; sending stops when the \
                       reserved numbers run out");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Keepalive probes, and the liveness they report.
async fn keepalive(io: Arc<LineIo>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = [0u8; PROBE_SLOT];
    let mut was = None;
    loop {
        tick.tick().await;
        let (probe, liveness) = {
            let mut core = io.lock();
            let probe = match core.poll_keepalive(Instant::now(), &mut buf) {
                Action::WriteToNetwork(p) => Some(p.len()),
                Action::Drop(r) => {
                    io.stats.count_drop(r, 1);
                    None
                }
                Action::Done | Action::WriteToTun(_) => None,
            };
            (probe, core.liveness())
        };
        if let Some(len) = probe {
            if udp::send_one(&io.tx.socket, &buf[..len], io.peer).is_err() {
                io.stats.count_drop(DropReason::IoError, 1);
            }
        }
        if liveness != was {
            match liveness {
                Some(Liveness::Up) => {
                    info!(line = %io.name, "the peer answers (its traffic or a keepalive reply), line up")
                }
                Some(Liveness::Down) => {
                    warn!(line = %io.name, "keepalive probes unanswered, line down")
                }
                _ => {}
            }
            was = liveness;
        }
    }
}

/// Which route takes a packet.
enum Lookup {
    Line(usize),
    /// From a line's peer, but with a key no line of that peer expects: counted there.
    WrongKey(usize),
    Stranger,
}

/// The route for a packet from `peer`, among routes given as (peer, input key, own
/// protocol); `key` is the packet's GRE key (`None`: not a GRE socket, or a header too
/// short to read, which the line's core then reports).
fn lookup(
    routes: impl IntoIterator<Item = (IpAddr, Option<Key>, bool)>,
    peer: IpAddr,
    key: Option<Option<Key>>,
) -> Lookup {
    let mut first = None;
    let mut own = None;
    for (i, (p, ikey, is_own)) in routes.into_iter().enumerate() {
        if p != peer {
            continue;
        }
        first.get_or_insert(i);
        if is_own {
            own.get_or_insert(i);
        }
        if key == Some(ikey) {
            return Lookup::Line(i);
        }
    }
    match (first, key) {
        (None, _) => Lookup::Stranger,
        (Some(i), Some(_)) => Lookup::WrongKey(i),
        (Some(i), None) => Lookup::Line(own.unwrap_or(i)),
    }
}

/// What the receive batch produced in slot i.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    /// An inner packet for route `.0`'s TUN device.
    Tun(usize),
    /// A reflected keepalive probe for route `.0`'s peer.
    Net(usize),
}

/// Underlay -> TUN, for every line on one socket.
///
/// One batch (one `recvmmsg`), run on a data-plane thread when the socket is readable.
/// False when the socket is drained: a batch shorter than [`BATCH`] found the queue
/// empty (edge-triggered, a later packet raises a new event), so no second call is
/// made just to see `EAGAIN`.
fn receive_once(endpoint: &Endpoint) -> bool {
    let v6 = endpoint.key.local.is_ipv6();
    let gre = endpoint.key.protocol == IpProtocol::Gre;
    let esp = endpoint.key.protocol == IpProtocol::Esp;
    let mut outs = [Out::None; BATCH];
    let mut src6 = [Ipv6Addr::UNSPECIFIED; BATCH];
    let mut tclass = [0u8; BATCH];
    with_batch(|b| {
        let socket = &endpoint.socket;
        let received = if v6 {
            recv_batch_v6(socket, b, &mut src6, &mut tclass)
        } else {
            udp::recv_batch(socket, b)
        };
        let n = match received {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                // A pending socket error is reported once; data may follow.
                debug!(error = %e, "raw socket receive failed");
                return true;
            }
        };
        let routes = endpoint.routes();
        let now = Instant::now();
        {
            // A line's core stays locked over a run of its packets.
            let mut held: Option<(usize, MutexGuard<'_, IpTunnelCore>)> = None;
            for (i, out) in outs.iter_mut().enumerate().take(n) {
                *out = Out::None;
                let len = b.in_len[i].min(SLOT);
                let slot = b.input_slot(i);
                let base = slot.as_ptr();
                let packet = &mut slot[..len];
                let (peer, header) = if v6 {
                    (Some(IpAddr::V6(src6[i])), 0)
                } else {
                    let header = packet.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
                    (wire::ip_src(packet), header)
                };
                let Some(peer) = peer else {
                    endpoint.strangers.fetch_add(1, Relaxed);
                    continue;
                };
                let key = if esp {
                    // The SPI; a packet too short for one is the core's to judge.
                    packet
                        .get(header..header + 4)
                        .map(|s| Some(Key(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))))
                } else {
                    gre.then(|| {
                        packet
                            .get(header..)
                            .and_then(|p| wire::gre::Packet::new_checked(p).ok())
                            .map(|p| p.key())
                    })
                    .flatten()
                };
                let candidates = routes.iter().map(|r| (r.peer, r.ikey, r.own));
                let idx = match lookup(candidates, peer, key) {
                    Lookup::Line(idx) => idx,
                    Lookup::WrongKey(idx) => {
                        let reason = if esp {
                            DropReason::UnknownSpi
                        } else {
                            DropReason::WrongKey
                        };
                        routes[idx].io.stats.count_drop(reason, 1);
                        continue;
                    }
                    Lookup::Stranger => {
                        endpoint.strangers.fetch_add(1, Relaxed);
                        continue;
                    }
                };
                if held.as_ref().map(|(j, _)| *j) != Some(idx) {
                    // Unlock the previous line before locking the next.
                    drop(held.take());
                    held = Some((idx, routes[idx].io.lock()));
                }
                let Some((_, core)) = held.as_mut() else {
                    continue;
                };
                if esp && core.esp().and_then(EspCore::poll_replay_floor).is_some() {
                    if let Some(r) = &routes[idx].io.reserve {
                        r.notify_one();
                    }
                }
                let action = match (v6, peer) {
                    (true, IpAddr::V6(src)) => core.handle_ipv6_payload(
                        src,
                        TrafficClass(tclass[i]),
                        endpoint.key.protocol,
                        packet,
                        now,
                    ),
                    _ => core.handle_ipv4_datagram(packet, now),
                };
                match action {
                    // A reply to the line's own health probe: recorded, not the host's.
                    Action::WriteToTun(p) if routes[idx].io.prober.take_reply(p, now) => {}
                    Action::WriteToTun(p) => {
                        let rec = (offset_in(base, p), p.len());
                        b.out[i] = rec;
                        *out = Out::Tun(idx);
                    }
                    Action::WriteToNetwork(p) => {
                        let rec = (offset_in(base, p), p.len());
                        b.out[i] = rec;
                        *out = Out::Net(idx);
                    }
                    Action::Drop(r) => routes[idx].io.stats.count_drop(r, 1),
                    Action::Done => {}
                }
            }
        }
        // Runs of one line's packets go to its TUN device together: with offloads,
        // coalesced into super-packets.
        with_buffers(|w| {
            let mut run: Option<usize> = None;
            let mut t = 0;
            for (i, out) in outs.iter().enumerate().take(n) {
                let (off, len) = b.out[i];
                let Some(packet) = b.input_slot(i).get(off..off + len) else {
                    continue;
                };
                match *out {
                    Out::None => {}
                    Out::Net(idx) => {
                        let line = &routes[idx].io;
                        if udp::send_one(socket, packet, line.peer).is_err() {
                            line.stats.count_drop(DropReason::IoError, 1);
                        }
                    }
                    Out::Tun(idx) => {
                        if run != Some(idx) {
                            if let Some(prev) = run {
                                deliver(&routes[prev].io, w, t);
                            }
                            run = Some(idx);
                            t = 0;
                        }
                        let Some(buf) = dec_slot(&mut w.dec, t, TUN_OFFSET + len) else {
                            routes[idx].io.stats.count_drop(DropReason::IoError, 1);
                            continue;
                        };
                        buf.truncate(TUN_OFFSET + len);
                        buf[TUN_OFFSET..].copy_from_slice(packet);
                        t += 1;
                    }
                }
            }
            if let Some(idx) = run {
                deliver(&routes[idx].io, w, t);
            }
        });
        n >= BATCH
    })
}

/// Receives up to [`BATCH`] IPv6 payloads with one `recvmmsg`: their lengths into the
/// batch, their sources into `src`, their traffic classes into `tclass`.
fn recv_batch_v6(
    socket: &Socket,
    batch: &mut Batch,
    src: &mut [Ipv6Addr; BATCH],
    tclass: &mut [u8; BATCH],
) -> io::Result<usize> {
    // SAFETY: an all-zero sockaddr_in6 is a valid (unspecified) address.
    let mut names: [libc::sockaddr_in6; BATCH] = unsafe { std::mem::zeroed() };
    // u64 words: the control buffers must be aligned for cmsghdr.
    let mut control = [[0u64; CONTROL_WORDS]; BATCH];
    let inputs = batch.inputs_mut();
    let base = inputs.as_mut_ptr();
    let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    // SAFETY: an all-zero mmsghdr is a valid empty header.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..BATCH {
        // SAFETY: slot i lies inside `inputs` (BATCH * SLOT bytes).
        iovs[i].iov_base = unsafe { base.add(i * SLOT) }.cast();
        iovs[i].iov_len = SLOT;
        let hdr = &mut msgs[i].msg_hdr;
        hdr.msg_iov = &mut iovs[i];
        hdr.msg_iovlen = 1;
        hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in6).cast();
        hdr.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        hdr.msg_control = control[i].as_mut_ptr().cast();
        hdr.msg_controllen = size_of::<[u64; CONTROL_WORDS]>() as _;
    }
    // SAFETY: msgs, iovs, names and control stay alive and unmoved for the call; each
    // iovec points at a distinct SLOT-byte region of the batch's input buffer.
    let n = unsafe { udp::recvmmsg(socket, &mut msgs)? };
    for i in 0..n {
        batch.in_len[i] = msgs[i].msg_len as usize;
        src[i] = Ipv6Addr::from(names[i].sin6_addr.s6_addr);
        tclass[i] = 0;
        let hdr = &msgs[i].msg_hdr;
        // SAFETY: the kernel filled msg_control up to msg_controllen with well-formed
        // cmsghdrs; CMSG_FIRSTHDR/CMSG_NXTHDR stay within it and return null at its end.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
        while !cmsg.is_null() {
            // SAFETY: cmsg points at a cmsghdr inside the control buffer (see above).
            let c = unsafe { &*cmsg };
            if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_TCLASS {
                // SAFETY: an IPV6_TCLASS message carries one int; read_unaligned does not
                // assume CMSG_DATA's alignment.
                let v: libc::c_int =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                tclass[i] = v as u8;
            }
            // SAFETY: as above.
            cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
        }
    }
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;

    fn route(peer: &str, ikey: Option<u32>, own: bool) -> (IpAddr, Option<Key>, bool) {
        (peer.parse().unwrap(), ikey.map(Key), own)
    }

    fn pick(peer: &str, key: Option<Option<u32>>) -> Option<(usize, bool)> {
        let routes = [
            route("198.51.100.20", Some(1), true),
            route("198.51.100.20", Some(2), true),
            route("192.0.2.7", None, false),
            route("192.0.2.7", None, true),
        ];
        match lookup(routes, peer.parse().unwrap(), key.map(|k| k.map(Key))) {
            Lookup::Line(i) => Some((i, true)),
            Lookup::WrongKey(i) => Some((i, false)),
            Lookup::Stranger => None,
        }
    }

    #[test]
    fn two_gre_lines_to_one_peer_are_told_apart_by_key() {
        assert_eq!(pick("198.51.100.20", Some(Some(1))), Some((0, true)));
        assert_eq!(pick("198.51.100.20", Some(Some(2))), Some((1, true)));
    }

    #[test]
    fn unknown_key_or_no_key_counts_on_the_peers_first_line() {
        assert_eq!(pick("198.51.100.20", Some(Some(3))), Some((0, false)));
        assert_eq!(pick("198.51.100.20", Some(None)), Some((0, false)));
    }

    #[test]
    fn unreadable_gre_header_goes_to_the_peers_line_for_the_core_to_judge() {
        assert_eq!(pick("198.51.100.20", None), Some((0, true)));
    }

    #[test]
    fn a_line_of_the_sockets_own_protocol_wins_over_one_that_accepts_it() {
        assert_eq!(pick("192.0.2.7", None), Some((3, true)));
    }

    #[test]
    fn a_packet_from_no_lines_peer_is_a_stranger() {
        assert_eq!(pick("203.0.113.1", None), None);
        assert_eq!(pick("203.0.113.1", Some(Some(1))), None);
    }
}
