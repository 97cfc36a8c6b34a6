//! One IP tunnel line's state as its packet paths and tasks share it ([`LineIo`]), and
//! its outbound path: TUN -> underlay, a batch per TUN read, encapsulated under one lock
//! and sent with one `sendmmsg` (or through the line's AF_XDP port). The shared receive
//! path ([`super::sockets`]) delivers a line's packets to its TUN device with
//! [`deliver`], which sends what the kernel answered at once through this path.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use socket2::Socket;
use tracing::debug;

use super::super::batch::{offset_in, SLOT};
use super::super::fault::{Faults, Path};
use super::super::pmtu::PathMtu;
use super::super::pool::{segment, with_buffers, Buffers};
use super::super::probe::{ProbeError, Prober, MAX_PROBE};
use super::super::stats::LineStats;
use super::super::tun::Tun;
use super::super::{lock, socket, xsk};
use crate::tunnel::esp::EspCore;
use crate::tunnel::iptunnel::IpTunnelCore;
use crate::tunnel::{Action, DropReason};

/// One line's state, shared by its paths, its tasks and by the routes of its sockets.
pub(super) struct LineIo {
    pub(super) name: String,
    pub(super) tun: Tun,
    pub(super) core: Mutex<IpTunnelCore>,
    pub(super) stats: LineStats,
    /// The peer as a socket address (port 0), where every packet of the line goes.
    pub(super) peer: SocketAddr,
    /// The raw socket of the line's own protocol, to send on.
    pub(super) socket: Arc<Socket>,
    pub(super) pmtu: Arc<PathMtu>,
    /// ESP lines: wakes the line's ESP task (`hello` or `reserve`).
    pub(super) reserve: Option<tokio::sync::Notify>,
    /// `af_xdp` lines: the AF_XDP transmit path.
    pub(super) xdp: Option<xsk::Transmit>,
    /// Faults injected by the tests (nothing without the `fault-injection` feature).
    pub(super) faults: Faults,
    /// Health probes: sent by [`send_probe`], replies taken off the receive path.
    pub(super) prober: Prober,
    /// A probe and its encapsulation (the daemon sends one at a time).
    pub(super) probe_buf: Mutex<Vec<u8>>,
}

impl LineIo {
    pub(super) fn lock(&self) -> MutexGuard<'_, IpTunnelCore> {
        lock(&self.core)
    }

    /// Wakes the line's ESP task (`hello` or `reserve`), if it has one.
    pub(super) fn wake_reserve(&self) {
        if let Some(r) = &self.reserve {
            r.notify_one();
        }
    }
}

/// TUN -> underlay: a batch is one TUN read with offloads (a super-packet, split into
/// its segments) or up to [`SEGS`](super::super::pool::SEGS) single packets without,
/// encapsulated under one lock and sent with one `sendmmsg`.
///
/// Runs on a data-plane thread when the TUN device is readable; true when a batch went
/// (more may be waiting), false when the device had nothing.
pub(super) fn outbound_ready(io: &LineIo) -> bool {
    io.faults.check(Path::Outbound, &io.name);
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
        io.wake_reserve();
    }
    let packets = &w.enc_out[..k];
    let past_kernel = io
        .xdp
        .as_ref()
        .map_or(0, |x| x.send(&io.name, packets, &io.faults));
    let rest = &packets[past_kernel..];
    let sent = past_kernel
        + match socket::send(&io.socket, rest, io.peer, false) {
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

/// Room for a probe's outer packet: the outer IP header, GRE with every option, ESP's
/// header, padding and tag, with margin.
pub(super) const PROBE_OUT: usize = 512;

/// Sends health probe `seq` from `from` (the line's VIP) to `target`: encapsulated as a
/// packet read from the TUN device would be, and sent to the peer on the raw socket.
pub(super) fn send_probe(
    io: &LineIo,
    from: IpAddr,
    target: IpAddr,
    seq: u16,
) -> Result<(), ProbeError> {
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
        let reserve = core.esp().and_then(EspCore::poll_reservation).is_some();
        (off, len, reserve)
    };
    if reserve {
        io.wake_reserve();
    }
    let packet = out
        .get(off..off + len)
        .ok_or(ProbeError::CannotSend("probe buffer"))?;
    socket::send_one(&io.socket, packet, io.peer)
        .map(|_| ())
        .map_err(|_| ProbeError::CannotSend("the raw socket refused the packet"))
}

/// Writes a run of one line's packets (`w.dec[..t]`) to its TUN device. What the kernel
/// answered inside that write (a ping reply, ACKs) goes out at once on this thread
/// when the line's outbound path is idle: one batch, under the device's read turn. That
/// saves waiting for the outbound path's own turn on the way back.
pub(super) fn deliver(line: &LineIo, w: &mut Buffers, t: usize) {
    line.tun.write_packets(w, t, &line.stats);
    if let Some(_turn) = line.tun.try_read_turn() {
        outbound_once(line, w);
    }
}
