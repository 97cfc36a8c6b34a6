//! The data plane's side of path MTU ([`crate::tunnel::pmtu`]): each line holds one
//! [`PathMtu`], which its outbound loop asks about every packet before encapsulating it
//! (one call), and which the supervisor updates when the parent's MTU changes.
//!
//! Rules: the common case (the packet fits) is one atomic load and a comparison, no
//! lock; a packet too big takes the guard's lock, and its ICMP error is built in the
//! batch's output slot and written to the line's own TUN device, toward its sender.

use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::debug;

use super::stats::LineStats;
use super::tun::Tun;
use crate::tunnel::pmtu::{Outer, Overhead, PathGuard, Verdict};
use crate::tunnel::DropReason;

/// A line's path MTU and its error guard.
#[derive(Debug)]
pub struct PathMtu {
    /// The largest outer packet the parent carries.
    path_mtu: AtomicU16,
    /// What the line adds around an inner packet.
    overhead: Overhead,
    guard: Mutex<PathGuard>,
}

impl PathMtu {
    /// A line adding `overhead` bytes, whose parent carries `path_mtu`.
    pub fn new(overhead: Overhead, outer: Outer, path_mtu: u16) -> Arc<PathMtu> {
        Arc::new(PathMtu {
            path_mtu: AtomicU16::new(path_mtu),
            overhead,
            guard: Mutex::new(PathGuard::new(overhead, outer)),
        })
    }

    /// The largest outer packet the parent carries now.
    pub fn path_mtu(&self) -> u16 {
        self.path_mtu.load(Relaxed)
    }

    /// The parent's MTU changed.
    pub fn set_path_mtu(&self, mtu: u16) {
        self.path_mtu.store(mtu, Relaxed);
    }

    /// Whether `packet`, read from `tun`, is refused as too big for the path: then it
    /// is counted as dropped, and when allowed an ICMP error (built in `scratch`) is
    /// written to `tun` for its sender. The caller drops a refused packet.
    pub fn refused(&self, packet: &[u8], scratch: &mut [u8], tun: &Tun, stats: &LineStats) -> bool {
        let path = self.path_mtu();
        if packet.len() <= usize::from(self.overhead.inner_mtu(path)) {
            return false;
        }
        let mut guard = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        match guard.handle_tun_packet(packet, path, Instant::now(), scratch) {
            Verdict::Send => false,
            Verdict::Refuse(reply) => {
                debug!(len = packet.len(), path, sender = ?crate::wire::ip_src(packet),
                       "packet too big for the path: ICMP error sent");
                if tun.write(reply).is_err() {
                    stats.count_drop(DropReason::IoError, 1);
                }
                stats.count_drop(DropReason::PathMtu, 1);
                true
            }
            Verdict::Drop => {
                stats.count_drop(DropReason::TooBig, 1);
                true
            }
        }
    }
}
