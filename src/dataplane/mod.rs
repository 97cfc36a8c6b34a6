//! The data plane: the only code that owns TUN devices and sockets. It moves packets in
//! batches between a line's TUN device and its underlay socket, through the line's
//! tunnel core.
//!
//! Packets move on the data plane's own threads ([`poller`]: epoll, one per CPU); a line's
//! timers and keepalives run as tokio tasks beside the control plane.
//!
//! The files: [`lines`] is the seam the daemon starts lines through, [`setup`] turns a
//! configured line into what its data plane runs with; [`wireguard`] and [`iptunnel`]
//! run the two kinds of line (WireGuard on a UDP socket of its own, the IP tunnels on
//! raw sockets they share); [`tun`], [`udp`] and [`xsk`] own the devices and sockets,
//! [`socket`] holds the batched system calls they share; [`pool`] and [`batch`] the
//! per-thread buffers; [`pmtu`], [`seqstore`] and [`stats`] what a line keeps beside its
//! core; [`fault`] the tests' injected faults (a cargo feature, empty without it).
//!
//! Rules: no allocation per packet (batch buffers are per data-plane thread and reused,
//! see [`pool`] and [`batch`]); no lock held across `.await` (a line's core is locked
//! once per batch); a bad packet is counted and dropped, never a crash; timers run on a
//! tick, not per packet; every packet path consults its line's [`fault::Faults`].
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod batch;
pub mod fault;
pub mod iptunnel;
pub mod lines;
pub mod pmtu;
pub mod poller;
pub mod pool;
pub mod probe;
pub mod seqstore;
pub mod setup;
pub mod socket;
pub mod stats;
pub mod tun;
pub mod udp;
pub mod wireguard;
pub mod xsk;

pub use iptunnel::{IpTunnelLine, IpTunnelStatus, RawSockets};
pub use lines::{Dataplane, DataplaneStatus, Devices, RunningLine};
pub use pmtu::PathMtu;
pub use probe::{ProbeError, Prober};
pub use setup::{IpTunnelSetup, IpTunnelSpec};
pub use stats::LineStats;
pub use wireguard::{WireGuardLine, WireGuardSpec};

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Locks `m` whatever a panic left in it: the data plane's locks guard plain data (maps,
/// cores, states), which a panicking packet path cannot leave half-updated in a way that
/// matters more than losing its line.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits (up to 1 s) until `shared` is the last reference and drops it, so a line's TUN
/// device and sockets are closed when its `stop()` returns even if a path was mid-batch.
/// The drop runs on a blocking thread: closing a TUN device waits for the kernel to
/// unregister it, which must neither stall the runtime nor keep other lines' closes
/// from overlapping with it.
pub(crate) async fn drop_last_ref<T: Send + 'static>(mut shared: Arc<T>) {
    for _ in 0..100 {
        match Arc::try_unwrap(shared) {
            Ok(inner) => {
                let _ = tokio::task::spawn_blocking(move || drop(inner)).await;
                return;
            }
            Err(back) => {
                shared = back;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
/// A running line's data plane, whatever its type.
pub enum LineDataplane {
    /// A WireGuard line: its own TUN device and UDP socket.
    WireGuard(WireGuardLine),
    /// An IP tunnel line: its own TUN device, raw sockets shared with other lines.
    IpTunnel(IpTunnelLine),
}

impl LineDataplane {
    /// The TUN device's interface index.
    pub fn ifindex(&self) -> u32 {
        match self {
            LineDataplane::WireGuard(l) => l.ifindex(),
            LineDataplane::IpTunnel(l) => l.ifindex(),
        }
    }

    /// The line's counters.
    pub fn stats(&self) -> &LineStats {
        match self {
            LineDataplane::WireGuard(l) => l.stats(),
            LineDataplane::IpTunnel(l) => l.stats(),
        }
    }

    /// A packet path of the line that stopped after a panic (a bug), if any: the line
    /// must be restarted.
    pub fn stopped_path(&self) -> Option<String> {
        match self {
            LineDataplane::WireGuard(l) => l.stopped_path(),
            LineDataplane::IpTunnel(l) => l.stopped_path(),
        }
    }

    /// Stops the line and waits until its TUN device is gone.
    pub async fn stop(self) {
        match self {
            LineDataplane::WireGuard(l) => l.stop().await,
            LineDataplane::IpTunnel(l) => l.stop().await,
        }
    }
}

/// Why a line's data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The TUN device could not be created.
    #[error("cannot create TUN device {name}: {source} (is /dev/net/tun there, and do we have CAP_NET_ADMIN?)")]
    Tun {
        /// Device name.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The underlay socket could not be opened or bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The local address and port.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The tunnel core refused the line's settings.
    #[error(transparent)]
    Tunnel(#[from] crate::tunnel::TunnelError),
    /// An encrypted line's keys give no SAs between its addresses (asked for its
    /// `ip xfrm` commands; starting the line says `ESP: ...` through [`Self::Tunnel`]).
    #[error("{0}")]
    EspSas(#[source] crate::tunnel::esp::KdfError),
    /// Another running line already receives the packets this line would receive.
    #[error("{0}")]
    Claimed(String),
    /// A socket option or registration with a data-plane thread failed.
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An ESP line's sequence-number state file cannot be used.
    #[error("ESP state file {path}: {what}")]
    State {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The state directory cannot be locked for this daemon.
    #[error("state directory {dir} {what}")]
    StateDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// What is wrong.
        what: String,
    },
}
