//! The seam between the daemon and the data plane: [`Dataplane`] starts a line's
//! packet paths, [`RunningLine`] is what the daemon may ask of one that runs. The real
//! implementation is [`Devices`] (TUN devices, sockets, the data-plane threads); the
//! daemon's unit tests run against an in-memory one, without root or devices.
//!
//! Rules: the daemon decides when a line starts and stops and with which settings; what
//! runs it (devices, sockets, threads, tasks) stays behind these traits. Starting a line
//! either returns a running line or leaves nothing behind.

use std::future::Future;
use std::net::IpAddr;
use std::time::Instant;

use super::iptunnel::{IpTunnelLine, IpTunnelStatus, RawSockets};
use super::probe::ProbeError;
use super::setup::IpTunnelSpec;
use super::stats::LineStats;
use super::wireguard::{WireGuardLine, WireGuardSpec, WireGuardStatus};
use super::{DataplaneError, LineDataplane};
use crate::net::NextHop;

/// A keepalive's figures and verdict, as an IP tunnel line's status reports them.
pub use crate::tunnel::keepalive::{KeepaliveStatus, Liveness};

/// Starts lines' data planes.
pub trait Dataplane {
    /// A line whose data plane runs.
    type Line: RunningLine;

    /// Starts a WireGuard line: its TUN device, UDP socket and timers.
    fn start_wireguard(&self, spec: WireGuardSpec) -> Result<Self::Line, DataplaneError>;

    /// Starts an IP tunnel line (GRE over ESP included): its TUN device, and its place
    /// on the raw sockets it shares with other lines.
    fn start_ip_tunnel(&self, spec: IpTunnelSpec) -> Result<Self::Line, DataplaneError>;

    /// Registers again every shared receive path that stopped after a panic (a bug);
    /// returns what was revived.
    fn revive_receives(&self) -> Vec<String>;
}

/// A running line's data plane, as the daemon sees it.
pub trait RunningLine {
    /// The TUN device's interface index.
    fn ifindex(&self) -> u32;

    /// The line's counters.
    fn stats(&self) -> &LineStats;

    /// A packet path of the line that stopped after a panic (a bug), if any: the line
    /// must be restarted.
    fn stopped_path(&self) -> Option<String>;

    /// A snapshot of the line's protocol state.
    fn status(&self) -> DataplaneStatus;

    /// Whether the line sends through AF_XDP once its next hop is known.
    fn af_xdp(&self) -> bool;

    /// Hands the line the next hop toward its peer (or why there is none); nothing for
    /// a line that does not send through AF_XDP.
    fn update_next_hop(&self, hop: Result<NextHop, String>);

    /// Sends health probe `seq`: an ICMP echo request from `from` (the line's VIP) to
    /// `target`, through the line's outbound path as if read from its TUN device.
    fn send_probe(&self, from: IpAddr, target: IpAddr, seq: u16) -> Result<(), ProbeError>;

    /// When the reply to probe `seq` came off the line's inbound path, if it did.
    fn probe_reply(&self, seq: u16) -> Option<Instant>;

    /// Stops the line and waits until its TUN device is gone.
    fn stop(self) -> impl Future<Output = ()> + Send;
}

/// A running line's protocol state, by type.
#[derive(Debug, Clone)]
pub enum DataplaneStatus {
    /// A WireGuard line: its session and endpoint.
    WireGuard(WireGuardStatus),
    /// An IP tunnel line: its keepalive, ESP and transmit path.
    IpTunnel(IpTunnelStatus),
}

/// The host's data plane: TUN devices, sockets and the data-plane threads.
#[derive(Default)]
pub struct Devices {
    /// Raw IP sockets shared by the IP tunnel lines.
    raw_sockets: RawSockets,
}

impl Devices {
    /// No line running yet.
    pub fn new() -> Devices {
        Devices::default()
    }
}

impl Dataplane for Devices {
    type Line = LineDataplane;

    fn start_wireguard(&self, spec: WireGuardSpec) -> Result<LineDataplane, DataplaneError> {
        WireGuardLine::start(spec).map(LineDataplane::WireGuard)
    }

    fn start_ip_tunnel(&self, spec: IpTunnelSpec) -> Result<LineDataplane, DataplaneError> {
        IpTunnelLine::start(spec.into_setup()?, &self.raw_sockets).map(LineDataplane::IpTunnel)
    }

    fn revive_receives(&self) -> Vec<String> {
        self.raw_sockets.revive_receives()
    }
}

impl RunningLine for LineDataplane {
    fn ifindex(&self) -> u32 {
        LineDataplane::ifindex(self)
    }

    fn stats(&self) -> &LineStats {
        LineDataplane::stats(self)
    }

    fn stopped_path(&self) -> Option<String> {
        LineDataplane::stopped_path(self)
    }

    fn status(&self) -> DataplaneStatus {
        match self {
            LineDataplane::WireGuard(l) => DataplaneStatus::WireGuard(l.status()),
            LineDataplane::IpTunnel(l) => DataplaneStatus::IpTunnel(l.status()),
        }
    }

    fn af_xdp(&self) -> bool {
        match self {
            LineDataplane::WireGuard(_) => false,
            LineDataplane::IpTunnel(l) => l.af_xdp(),
        }
    }

    fn update_next_hop(&self, hop: Result<NextHop, String>) {
        if let LineDataplane::IpTunnel(l) = self {
            l.update_next_hop(hop);
        }
    }

    fn send_probe(&self, from: IpAddr, target: IpAddr, seq: u16) -> Result<(), ProbeError> {
        match self {
            LineDataplane::WireGuard(l) => l.send_probe(from, target, seq),
            LineDataplane::IpTunnel(l) => l.send_probe(from, target, seq),
        }
    }

    fn probe_reply(&self, seq: u16) -> Option<Instant> {
        match self {
            LineDataplane::WireGuard(l) => l.probe_reply(seq),
            LineDataplane::IpTunnel(l) => l.probe_reply(seq),
        }
    }

    fn stop(self) -> impl Future<Output = ()> + Send {
        LineDataplane::stop(self)
    }
}
