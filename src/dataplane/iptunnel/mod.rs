//! IP tunnel lines' I/O: a TUN device per line, raw IP sockets (protocols 4, 41, 47 and
//! 50) shared between lines (`sockets`), and an [`IpTunnelCore`] per line.
//!
//! Paths, on the data-plane threads ([`super::poller`]): per socket, the receive path
//! (underlay -> TUN, in place, a line's core locked once per run of its packets,
//! `sockets`); per line, the outbound path (TUN -> underlay, one `sendmmsg` per batch,
//! `outbound`). An `af_xdp` line sends its batches through an AF_XDP port on the next
//! hop's device instead, once the daemon has found that next hop ([`xsk::Transmit`]);
//! the raw socket still receives, and sends what the port does not take.
//!
//! Tokio tasks, per line (`tasks`): with a keepalive, `keepalive` (probes on a tick);
//! for an encrypted GRE line (ESP, protocol 50), with epoch keying `hello` (the core's
//! Hellos, with fresh nonces), with static keying `reserve` (the ESP sequence-number mark
//! on disk ahead of the numbers sent; a clean stop writes the exact replay floor). An
//! encrypted line is told apart on its socket by peer alone (the config allows one per
//! peer and parent; its SPIs change with each epoch, and its core judges them), where a
//! GRE line is told apart by peer and GRE key.
//!
//! Rules: the files below import each other one way (sockets -> outbound <- tasks, this
//! file over all three); no lock is held across an `.await`; a line that cannot receive
//! (its socket's receive path stopped) says so in its status.

mod outbound;
mod sockets;
mod tasks;

pub use sockets::RawSockets;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::fault::Faults;
use super::poller::Registration;
use super::probe::{ProbeError, Prober, MAX_PROBE};
use super::seqstore::SeqStore;
use super::setup::IpTunnelSetup;
use super::stats::LineStats;
use super::tun::Tun;
use super::{lock, xsk, DataplaneError};
use crate::net::NextHop;
use crate::tunnel::esp::{EspCore, EspStatus};
use crate::tunnel::iptunnel::IpTunnelCore;
use crate::tunnel::iptype::IpVersion;
use crate::tunnel::keepalive::KeepaliveStatus;
use crate::wire::IpProtocol;
use outbound::{outbound_ready, LineIo};
use sockets::{Route, SocketKey};

/// A snapshot of an IP tunnel line for `line list`.
#[derive(Debug, Clone)]
pub struct IpTunnelStatus {
    /// The underlay address the line sends from.
    pub local: IpAddr,
    /// Keepalive figures; `None` without keepalive.
    pub keepalive: Option<KeepaliveStatus>,
    /// ESP: SPIs, sequence numbers, epochs; `None` for a plain line.
    pub esp: Option<EspStatus>,
    /// `af_xdp` lines: how packets leave now ([`xsk::Transmit::describe`]).
    pub transmit: Option<String>,
    /// `af_xdp` lines: packets sent through AF_XDP so far.
    pub af_xdp_packets: Option<u64>,
    /// Why the line receives nothing now: the receive path of a raw socket it shares
    /// stopped, or cannot be registered again; `None` while every one of them runs.
    pub receive_problem: Option<String>,
}

/// A running IP tunnel line. Dropping it stops its paths and tasks and releases its
/// sockets; [`IpTunnelLine::stop`] also waits until the TUN device is gone.
pub struct IpTunnelLine {
    io: Arc<LineIo>,
    /// The outbound path on a data-plane thread; dropping it stops the path.
    outbound: Option<Registration>,
    tasks: Vec<JoinHandle<()>>,
    sockets: RawSockets,
    id: u64,
    /// ESP: where the replay floor is written at a clean stop.
    floor: Option<SeqStore>,
}

impl IpTunnelLine {
    /// Creates the TUN device, attaches the line to its raw sockets (opening them if
    /// needed), registers its outbound path and starts its tasks on the current runtime.
    pub fn start(
        spec: IpTunnelSetup,
        sockets: &RawSockets,
    ) -> Result<IpTunnelLine, DataplaneError> {
        let settings = spec.settings;
        let mut core = IpTunnelCore::new(settings)?;
        let mut store = None;
        let encrypted = spec.esp.is_some();
        if let Some(esp) = spec.esp {
            let (e, stores) = esp.start(&spec.name)?;
            core = core.with_esp(e)?;
            store = stores;
        }
        let tun = Tun::create_for_line(&spec.name, spec.mtu, settings.kind.carries(IpVersion::V6))?;
        let offload = tun.offload();
        let id = sockets.next_line();
        let kind = settings.kind;
        let own_protocol = if encrypted {
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
                socket: tx.socket.clone(),
                pmtu: spec.pmtu.clone(),
                reserve: encrypted.then(tokio::sync::Notify::new),
                xdp: spec.af_xdp.then(xsk::Transmit::default),
                faults: Faults::for_line(&spec.name),
                prober: Prober::new(),
                probe_buf: Mutex::new(vec![0u8; MAX_PROBE + outbound::PROBE_OUT]),
            });
            let protocols = if encrypted {
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
                        ikey: if kind.is_gre() && !encrypted {
                            settings.gre.ikey
                        } else {
                            None
                        },
                        own: protocol == own_protocol,
                        io: io.clone(),
                    },
                )?;
            }
            Ok((io, tx))
        })();
        let (io, tx) = match attached {
            Ok(attached) => attached,
            Err(e) => {
                sockets.remove_line(id);
                return Err(e);
            }
        };
        let outbound = {
            let io = io.clone();
            let thread = lock(&tx.thread).clone();
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
            tasks.push(tokio::spawn(tasks::keepalive(io.clone())));
        }
        let floor = store.as_ref().map(|(_, f)| f.clone());
        if let Some((seq, floor)) = store {
            tasks.push(tokio::spawn(tasks::reserve(io.clone(), seq, floor)));
        } else if encrypted {
            tasks.push(tokio::spawn(tasks::hello(io.clone())));
        }
        info!(line = %io.name, kind = %kind, local = %settings.local, peer = %settings.peer,
              tso = offload.tso, "ip tunnel line started");
        Ok(IpTunnelLine {
            io,
            outbound: Some(outbound),
            tasks,
            sockets: sockets.clone(),
            id,
            floor,
        })
    }

    /// Sends health probe `seq` from `from` (the line's VIP) to `target` through the
    /// line.
    pub fn send_probe(&self, from: IpAddr, target: IpAddr, seq: u16) -> Result<(), ProbeError> {
        outbound::send_probe(&self.io, from, target, seq)
    }

    /// When the reply to probe `seq` came, if it did.
    pub fn probe_reply(&self, seq: u16) -> Option<Instant> {
        self.io.prober.reply(seq)
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
    /// A stopped receive path is the socket's, revived for all its lines
    /// ([`RawSockets::revive_receives`]).
    pub fn stopped_path(&self) -> Option<String> {
        self.outbound
            .as_ref()
            .filter(|o| o.stopped())
            .map(|o| o.what().to_string())
    }

    /// A snapshot of the protocol state.
    pub fn status(&self) -> IpTunnelStatus {
        let receive_problem = self.sockets.receive_problem(self.id);
        let core = self.io.lock();
        IpTunnelStatus {
            local: core.settings().local,
            keepalive: core.keepalive_status(Instant::now()),
            esp: core.esp().map(|e| e.status(Instant::now())),
            transmit: self.io.xdp.as_ref().map(xsk::Transmit::describe),
            af_xdp_packets: self.io.xdp.as_ref().map(xsk::Transmit::sent),
            receive_problem,
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
            x.update(&self.io.name, self.io.peer.ip(), hop, self.sockets.ports());
        }
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

impl Drop for IpTunnelLine {
    fn drop(&mut self) {
        self.outbound = None;
        for t in &self.tasks {
            t.abort();
        }
        self.sockets.remove_line(self.id);
    }
}
