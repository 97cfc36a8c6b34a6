//! The raw IP sockets that IP tunnel lines share, and their receive path.
//!
//! One raw socket per (protocol, local address), opened when the first line needs it
//! and closed with the last ([`RawSockets`]). A socket's receive path reads a batch with
//! `recvmmsg` and hands each packet to the line whose peer sent it (and, for GRE, whose
//! input key it carries; ESP by peer alone, its core judges the SPI), so any number of lines of one
//! protocol coexist, including two GRE lines to the same peer with different keys. A
//! bound raw socket also keeps the kernel from answering tunnel packets with ICMP
//! "protocol unreachable" on a host without the tunnel modules.
//!
//! Headers: IPv4 sockets use `IP_HDRINCL`, so the header goes out as the core built it,
//! and receive it. IPv6 sockets use `IPV6_HDRINCL` (Linux 4.5 and later) to send, but
//! receive only the payload: the source comes from the socket address and the traffic
//! class (for ECN) from an `IPV6_RECVTCLASS` message.
//!
//! A receive path that stopped (a panic, a data-plane thread that failed) is registered
//! again by [`RawSockets::revive_receives`]; until then, or while that fails, every line
//! on the socket reports it ([`RawSockets::receive_problem`]) and counts as down.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tracing::{debug, error, info};

use super::super::batch::{offset_in, with_batch, Batch, BATCH, SLOT};
use super::super::fault::Path;
use super::super::poller::{self, Registration};
use super::super::pool::{dec_slot, with_buffers, TUN_OFFSET};
use super::super::socket::{self, Want};
use super::super::{lock, udp, xsk, DataplaneError};
use super::outbound::{deliver, LineIo};
use crate::tunnel::iptunnel::IpTunnelCore;
use crate::tunnel::{Action, DropReason};
use crate::wire::gre::Key;
use crate::wire::{self, IpProtocol, TrafficClass};

/// A raw socket's identity: protocol and local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct SocketKey {
    pub(super) protocol: IpProtocol,
    pub(super) local: IpAddr,
}

/// Where a socket sends a packet from `peer` (with GRE key `ikey`).
#[derive(Clone)]
pub(super) struct Route {
    pub(super) line: u64,
    pub(super) peer: IpAddr,
    pub(super) ikey: Option<Key>,
    /// The protocol is the line's own (not one it merely accepts, see
    /// [`crate::tunnel::iptype::TunnelType::protocols`]).
    pub(super) own: bool,
    pub(super) io: Arc<LineIo>,
}

/// One shared raw socket.
pub(super) struct Endpoint {
    key: SocketKey,
    pub(super) socket: Arc<Socket>,
    /// The data-plane thread of its receive path, and of the outbound paths of the
    /// lines that send on it (see [`poller`] for why they share one). Replaced when
    /// that thread has failed ([`register_receive`]).
    pub(super) thread: Mutex<poller::Thread>,
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

    /// The receive path's name in logs and in `line show`.
    fn receive_name(&self) -> String {
        format!(
            "raw socket receive (protocol {}, {})",
            self.key.protocol.number(),
            self.key.local
        )
    }
}

struct Shared {
    endpoint: Arc<Endpoint>,
    /// The receive path on a data-plane thread (dropping it stops the path), or why it
    /// could not be registered again after it stopped.
    receive: Result<Registration, String>,
}

/// The raw sockets of a daemon, shared by its IP tunnel lines. Cloning shares them.
#[derive(Clone, Default)]
pub struct RawSockets {
    sockets: Arc<Mutex<HashMap<SocketKey, Shared>>>,
    next_line: Arc<AtomicU64>,
    /// AF_XDP ports of the lines that send through them.
    ports: xsk::Ports,
}

impl RawSockets {
    /// No sockets yet.
    pub fn new() -> RawSockets {
        RawSockets::default()
    }

    /// A number for a new line, unique in this daemon (its routes carry it).
    pub(super) fn next_line(&self) -> u64 {
        self.next_line.fetch_add(1, Relaxed)
    }

    /// The AF_XDP ports the lines share.
    pub(super) fn ports(&self) -> &xsk::Ports {
        &self.ports
    }

    /// The socket for `key`, opened (and its receive path registered) if no line uses it.
    pub(super) fn open(&self, key: SocketKey) -> Result<Arc<Endpoint>, DataplaneError> {
        let mut sockets = lock(&self.sockets);
        if let Some(s) = sockets.get(&key) {
            return Ok(s.endpoint.clone());
        }
        let endpoint = Arc::new(Endpoint {
            key,
            socket: Arc::new(open_socket(key)?),
            thread: Mutex::new(
                poller::next_thread().map_err(|source| DataplaneError::Setup {
                    what: "cannot start the data-plane threads",
                    source,
                })?,
            ),
            routes: RwLock::new(Arc::new(Vec::new())),
            strangers: AtomicU64::new(0),
        });
        let receive = register_receive(&endpoint).map_err(|source| DataplaneError::Setup {
            what: "cannot register the raw socket with a data-plane thread",
            source,
        })?;
        info!(protocol = key.protocol.number(), local = %key.local, "raw socket opened");
        sockets.insert(
            key,
            Shared {
                endpoint: endpoint.clone(),
                receive: Ok(receive),
            },
        );
        Ok(endpoint)
    }

    /// Registers a receive path again where one stopped (after a panic, or with its
    /// data-plane thread): its lines receive nothing meanwhile. Returns what was revived;
    /// a path that cannot be registered is logged (once per reason), retried at the
    /// next call, and reported to the lines on the socket (`receive_problem`).
    pub fn revive_receives(&self) -> Vec<String> {
        let mut sockets = lock(&self.sockets);
        let mut revived = Vec::new();
        for s in sockets.values_mut() {
            if matches!(&s.receive, Ok(r) if !r.stopped()) {
                continue;
            }
            let what = s.endpoint.receive_name();
            // The stopped registration still holds the descriptor in its thread's epoll
            // set: it goes first, or registering the descriptor again is refused
            // (EEXIST) and every line on the socket stays deaf.
            let before = std::mem::replace(&mut s.receive, Err(String::new()));
            let failed_before = before.err();
            let injected = s
                .endpoint
                .routes()
                .iter()
                .any(|r| r.io.faults.take_revive_failure());
            let registered = if injected {
                Err(io::Error::other(
                    "registration refused (fault injected by the tests)",
                ))
            } else {
                register_receive(&s.endpoint)
            };
            match registered {
                Ok(r) => {
                    s.receive = Ok(r);
                    revived.push(what);
                }
                Err(e) => {
                    let why = format!(
                        "{what} stopped and cannot be registered with a data-plane thread \
                         again ({e}); retrying at every supervisor pass"
                    );
                    if failed_before.as_ref() != Some(&why) {
                        error!(path = %what, error = %e,
                               "cannot register a stopped receive path again; its lines receive nothing");
                    }
                    s.receive = Err(why);
                }
            }
        }
        revived
    }

    /// Why line `line` cannot receive now: a receive path of one of its sockets stopped
    /// (until [`RawSockets::revive_receives`] registers it again) or cannot be
    /// registered; `None` when all of them run.
    pub(super) fn receive_problem(&self, line: u64) -> Option<String> {
        let sockets = lock(&self.sockets);
        sockets
            .values()
            .filter(|s| s.endpoint.routes().iter().any(|r| r.line == line))
            .find_map(|s| match &s.receive {
                Ok(r) if r.stopped() => Some(format!(
                    "{} stopped after an internal error (a bug; the daemon's log has it); \
                     it is registered again at the next supervisor pass",
                    r.what()
                )),
                Ok(_) => None,
                Err(why) => Some(why.clone()),
            })
    }

    /// Adds a route to an open socket; refuses one that would take another line's packets.
    pub(super) fn add_route(
        &self,
        endpoint: &Endpoint,
        route: Route,
    ) -> Result<(), DataplaneError> {
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
    pub(super) fn remove_line(&self, line: u64) {
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
fn register_receive(endpoint: &Arc<Endpoint>) -> io::Result<Registration> {
    let path = endpoint.clone();
    let mut thread = lock(&endpoint.thread);
    if thread.failed() {
        *thread = poller::next_thread()?;
    }
    thread.register(
        endpoint.socket.as_raw_fd(),
        endpoint.receive_name(),
        move || receive_once(&path),
    )
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
            let on: libc::c_int = 1;
            socket::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_HDRINCL,
                &on,
            )
            .map_err(setup(
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

/// Receives up to [`BATCH`] packets into the batch's slots with one `recvmmsg`: an IPv4
/// socket delivers whole datagrams (the source is in the header), an IPv6 socket the
/// payload, with the source as the address and the traffic class as a control message.
fn recv_batch(endpoint: &Endpoint, batch: &mut Batch) -> io::Result<usize> {
    let want = if endpoint.key.local.is_ipv6() {
        Want {
            source: true,
            control: Some((libc::IPPROTO_IPV6, libc::IPV6_TCLASS)),
        }
    } else {
        Want {
            source: false,
            control: None,
        }
    };
    let (arena, received) = batch.inputs_mut();
    socket::recv(&endpoint.socket, arena, BATCH, want, received)
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
    with_batch(|b| {
        let n = match recv_batch(endpoint, b) {
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
                let msg = b.received[i];
                let len = msg.len.min(SLOT);
                let slot = b.input_slot(i);
                let base = slot.as_ptr();
                let packet = &mut slot[..len];
                let (peer, header) = if v6 {
                    (msg.from.map(|a| a.ip()), 0)
                } else {
                    let header = packet.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
                    (wire::ip_src(packet), header)
                };
                let Some(peer) = peer else {
                    endpoint.strangers.fetch_add(1, Relaxed);
                    continue;
                };
                // ESP: by peer alone, the core judges the SPI.
                let key = gre
                    .then(|| {
                        packet
                            .get(header..)
                            .and_then(|p| wire::gre::Packet::new_checked(p).ok())
                            .map(|p| p.key())
                    })
                    .flatten();
                let candidates = routes.iter().map(|r| (r.peer, r.ikey, r.own));
                let idx = match lookup(candidates, peer, key) {
                    Lookup::Line(idx) => idx,
                    Lookup::WrongKey(idx) => {
                        routes[idx].io.stats.count_drop(DropReason::WrongKey, 1);
                        continue;
                    }
                    Lookup::Stranger => {
                        endpoint.strangers.fetch_add(1, Relaxed);
                        continue;
                    }
                };
                let line = &routes[idx].io;
                if held.as_ref().map(|(j, _)| *j) != Some(idx) {
                    // Unlock the previous line before locking the next.
                    drop(held.take());
                    line.faults.check(Path::Receive, &line.name);
                    held = Some((idx, line.lock()));
                }
                let Some((_, core)) = held.as_mut() else {
                    continue;
                };
                let action = match (v6, peer) {
                    (true, IpAddr::V6(src)) => core.handle_ipv6_payload(
                        src,
                        TrafficClass(msg.control.unwrap_or(0) as u8),
                        endpoint.key.protocol,
                        packet,
                        now,
                    ),
                    _ => core.handle_ipv4_datagram(packet, now),
                };
                // The ESP task: a replay floor to store, or a Hello to answer.
                if esp
                    && core
                        .esp()
                        .is_some_and(|e| e.wants_hello() || e.poll_replay_floor().is_some())
                {
                    line.wake_reserve();
                }
                match action {
                    // A reply to the line's own health probe: recorded, not the host's.
                    Action::WriteToTun(p) if line.prober.take_reply(p, now) => {}
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
                    Action::Drop(r) => line.stats.count_drop(r, 1),
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
                        if socket::send_one(&endpoint.socket, packet, line.peer).is_err() {
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
