//! The supervisor and the life of lines: it owns the running lines, brings configured
//! lines up parents first, keeps retrying the ones that cannot come up, restarts those
//! whose packet path stopped, and takes everything down, children first, at shutdown.
//!
//! Its other jobs live beside it, in `impl` blocks of their own files: control requests
//! (`requests.rs`), status views (`status.rs`), the host objects a line installs
//! (`objects.rs`), following parents' MTUs and next hops (`follow.rs`), policy groups
//! and their exits' health (`policy.rs`, `policy_requests.rs`); restart back-off is a
//! type of its own (`restarts.rs`).
//!
//! Rules: a line half brought up is rolled back, so a line is either running with all
//! its host objects or not running with none; the host is reached only through
//! [`Host`] and the data plane only through [`Dataplane`], so all of this runs against
//! in-memory fakes in the unit tests. Time comes in as `now` where it decides anything.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tracing::{error, info, warn};

use super::objects::{Installed, SharedRules, Unrepaired};
use super::policy::PolicyState;
use super::restarts::Restarts;
use crate::config::{self, Config, Line, LineKind, LineName, Mode, WireGuard};
use crate::dataplane::{
    setup, Dataplane, Devices, IpTunnelSpec, PathMtu, RunningLine, WireGuardSpec,
};
use crate::net::{Host, Netlink};

/// A line whose data plane runs.
pub(super) struct Running<L> {
    pub line: Line,
    pub local_ip: IpAddr,
    pub mtu: u16,
    pub dataplane: L,
    pub installed: Vec<Installed>,
    /// The parent's MTU as the data plane checks packets against it.
    pub pmtu: Arc<PathMtu>,
}

/// A configured line that is not running, and why.
#[derive(Debug, Clone)]
pub(super) struct Failed {
    pub reason: String,
    pub parent_down: bool,
}

impl Failed {
    /// A failure of the line itself (not of its parent).
    fn new(reason: String) -> Failed {
        Failed {
            reason,
            parent_down: false,
        }
    }
}

/// The daemon's state.
pub struct Supervisor<H: Host = Netlink, D: Dataplane = Devices> {
    pub(super) host: H,
    pub(super) dataplane: D,
    pub(super) config_path: PathBuf,
    pub(super) config: Config,
    pub(super) running: HashMap<LineName, Running<D::Line>>,
    pub(super) failed: HashMap<LineName, Failed>,
    /// Rules shared by lines: how many lines use each, and whether it predates us.
    pub(super) rules: SharedRules,
    next_index: u32,
    /// Where encrypted lines keep their ESP sequence-number marks.
    state_dir: PathBuf,
    /// Static-keyed ESP lines that may start without a sequence-number mark, once: a
    /// line being created, or one named by `twnode daemon --esp-fresh-state`.
    fresh_esp: HashSet<LineName>,
    /// During a reconcile pass: the host's addresses (interface index, address), read
    /// once and kept current with the VIPs the pass adds, so bringing up N lines reads
    /// them once instead of N times (the dump grows with the lines: 1000 lines took
    /// 9 s, most of it in address dumps). `None` outside a pass: then each bring-up
    /// reads them afresh.
    pub(super) pass_addrs: Option<Vec<(u32, IpAddr)>>,
    /// Lines restarted after their packet path stopped (a bug): how often in a row,
    /// and when the next bring-up may happen.
    pub(super) restarts: Restarts,
    /// Policy groups on the host, their exits' health, failover events (`policy.rs`).
    pub(super) policy: PolicyState,
    /// Host objects the last repair could not put back (each logged once).
    pub(super) unrepaired: Unrepaired,
}

impl<H: Host, D: Dataplane> Supervisor<H, D> {
    /// A supervisor with nothing running yet.
    pub fn new(host: H, dataplane: D, config_path: PathBuf, config: Config) -> Self {
        Supervisor {
            host,
            dataplane,
            config_path,
            config,
            running: HashMap::new(),
            failed: HashMap::new(),
            rules: SharedRules::default(),
            next_index: rand_index(),
            state_dir: PathBuf::from(crate::daemon::DEFAULT_STATE_DIR),
            fresh_esp: HashSet::new(),
            pass_addrs: None,
            restarts: Restarts::default(),
            policy: PolicyState::default(),
            unrepaired: Unrepaired::default(),
        }
    }

    /// The same supervisor keeping its state (ESP sequence-number marks) in `dir`.
    pub fn with_state_dir(mut self, dir: PathBuf) -> Self {
        self.state_dir = dir;
        self
    }

    /// Lets the static-keyed ESP line `name` start once without its sequence-number
    /// mark (its SA is new: see `dataplane::setup`).
    pub fn allow_fresh_esp(&mut self, name: LineName) {
        self.fresh_esp.insert(name);
    }

    /// Takes back [`Self::allow_fresh_esp`].
    pub(super) fn forget_fresh_esp(&mut self, name: &LineName) {
        self.fresh_esp.remove(name);
    }

    /// How many lines are configured.
    pub fn configured(&self) -> usize {
        self.config.lines.len()
    }

    /// Tries to bring up every configured line that is not running, parents first.
    /// Logs a line's failure once per distinct reason.
    pub async fn reconcile(&mut self) {
        self.reconcile_at(Instant::now()).await;
    }

    /// [`Self::reconcile`] at `now` (restart delays are counted from it).
    pub(super) async fn reconcile_at(&mut self, now: Instant) {
        self.restart_stopped_paths(now).await;
        self.repair().await;
        self.follow_parent_mtus().await;
        self.follow_next_hops(None).await;
        let order: Vec<Line> = self.config.ordered().into_iter().cloned().collect();
        if self.pass_addrs.is_none() && order.iter().any(|l| !self.running.contains_key(&l.name)) {
            self.pass_addrs = self.host.all_addrs().await.ok();
        }
        let config = &self.config;
        self.restarts
            .forget(now, |name| config.line(name.as_str()).is_some());
        for line in order {
            if self.running.contains_key(&line.name) || self.restarts.holds(&line.name, now) {
                continue;
            }
            match self.bring_up(&line).await {
                Ok(()) => {
                    self.failed.remove(&line.name);
                }
                Err(f) => {
                    let changed = self
                        .failed
                        .get(&line.name)
                        .is_none_or(|old| old.reason != f.reason);
                    if changed {
                        warn!(line = %line.name, reason = %f.reason, "line cannot come up; retrying");
                    }
                    self.failed.insert(line.name.clone(), f);
                }
            }
        }
        self.pass_addrs = None;
        self.sync_policy().await;
    }

    /// A packet path that panicked (a bug) stops alone and the line would look alive
    /// while it carries nothing: such a line is taken down here and the pass brings it
    /// up again, after its back-off; a shared raw socket's receive path is registered
    /// anew.
    async fn restart_stopped_paths(&mut self, now: Instant) {
        for what in self.dataplane.revive_receives() {
            error!(path = %what, "packet path had stopped after an internal error; restarted");
        }
        let stopped: Vec<(LineName, String)> = self
            .running
            .iter()
            .filter_map(|(name, r)| Some((name.clone(), r.dataplane.stopped_path()?)))
            .collect();
        for (name, what) in stopped {
            let restart = self.restarts.handle_stopped(&name, now);
            let (count, delay) = (restart.count, restart.delay);
            error!(line = %name, path = %what, restarts_in_a_row = count, next_try_s = delay.as_secs(),
                   "packet path stopped after an internal error (see the panic above); restarting the line");
            self.take_down(&name).await;
            let when = if delay.is_zero() {
                "restarting".to_string()
            } else {
                format!("{count} times in a row; next try in {} s", delay.as_secs())
            };
            self.failed.insert(
                name,
                Failed::new(format!(
                    "{what} stopped after an internal error (a bug; the daemon's log has \
                     it); {when}"
                )),
            );
        }
    }

    /// Takes every line down, children first, and removes what they installed. The
    /// lines of one depth stop together: closing a TUN device waits on the kernel, and
    /// those waits overlap (1000 lines would otherwise take 20 s).
    pub async fn shutdown(&mut self) {
        self.policy_shutdown().await;
        let mut by_depth: BTreeMap<usize, Vec<LineName>> = BTreeMap::new();
        for l in &self.config.lines {
            by_depth
                .entry(self.config.depth(l.name.as_str()))
                .or_default()
                .push(l.name.clone());
        }
        for level in by_depth.into_values().rev() {
            self.take_down_together(&level).await;
        }
        // Lines that were running but are no longer configured (cannot happen through
        // the supervisor's own paths, but never leave anything behind).
        let rest: Vec<LineName> = self.running.keys().cloned().collect();
        for name in rest {
            self.take_down(&name).await;
        }
    }

    /// Where the line's socket binds and what MTU its parent offers.
    async fn resolve_parent(&self, line: &Line) -> Result<(IpAddr, u16, Option<u32>), Failed> {
        let fail = Failed::new;
        if let Some(parent) = self.config.line(line.parent.as_str()) {
            let Some(p) = self.running.get(&parent.name) else {
                return Err(Failed {
                    reason: format!("parent line {} is not running", parent.name),
                    parent_down: true,
                });
            };
            if parent.local_vip.is_ipv4() != line.peer_ip.is_ipv4() {
                return Err(fail(format!(
                    "peer_ip {} and parent line {}'s VIP {} are of different IP families",
                    line.peer_ip, parent.name, parent.local_vip
                )));
            }
            return Ok((parent.local_vip, p.mtu, Some(p.dataplane.ifindex())));
        }
        let name = line.parent.as_str();
        let index = self
            .host
            .link_index(name)
            .await
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| {
                fail(format!(
                    "parent interface {name} does not exist on this host \
                     (`ip link` lists the interfaces; a line's parent is an interface or a line)"
                ))
            })?;
        let addrs = match &self.pass_addrs {
            Some(all) => all
                .iter()
                .filter(|(i, _)| *i == index)
                .map(|(_, a)| *a)
                .collect(),
            None => self
                .host
                .link_addrs(index)
                .await
                .map_err(|e| fail(e.to_string()))?,
        };
        let local = pick_local_address(&addrs, line.peer_ip).ok_or_else(|| {
            let fam = if line.peer_ip.is_ipv4() {
                "IPv4"
            } else {
                "IPv6"
            };
            fail(format!(
                "parent interface {name} has no {fam} address to reach peer {} from; \
                 add one or choose another parent",
                line.peer_ip
            ))
        })?;
        let mtu = self
            .host
            .link_mtu(index)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok((local, mtu.min(u16::MAX as u32) as u16, None))
    }

    /// Brings one line up; on any failure everything done so far is undone.
    pub(super) async fn bring_up(&mut self, line: &Line) -> Result<(), Failed> {
        let fail = Failed::new;
        let (local_ip, parent_mtu, parent_ifindex) = self.resolve_parent(line).await?;
        if let Some(idx) = self
            .host
            .link_index(line.name.as_str())
            .await
            .map_err(|e| fail(e.to_string()))?
        {
            return Err(fail(format!(
                "an interface named {} (index {idx}) already exists on this host; \
                 choose another line name",
                line.name
            )));
        }
        let fresh;
        let addrs = match &self.pass_addrs {
            Some(all) => all,
            None => {
                fresh = self
                    .host
                    .all_addrs()
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                &fresh
            }
        };
        for (what, vip) in [("local VIP", line.local_vip), ("peer VIP", line.peer_vip)] {
            if let Some((idx, _)) = addrs.iter().find(|(_, a)| *a == vip) {
                return Err(fail(format!(
                    "{what} {vip} is already configured on this host, on {}; choose another VIP",
                    crate::net::interface_name(*idx)
                )));
            }
        }
        let mtu = match line.mtu {
            Some(m) => m.get(),
            None => {
                let derived = setup::derived_mtu(line, parent_mtu);
                let min = if setup::carries_ipv6(line) {
                    config::Mtu::MIN_V6
                } else {
                    config::Mtu::MIN_V4
                };
                if u32::from(derived) < min {
                    return Err(fail(format!(
                        "the parent's MTU {parent_mtu} leaves {derived} after the {} \
                         headers, below the minimum {min} for this line; \
                         raise the parent's MTU or use a type with less overhead",
                        line.kind.type_name()
                    )));
                }
                derived.min(config::Mtu::MAX as u16)
            }
        };
        let pmtu = setup::path_mtu(line, parent_mtu);
        let dataplane = match &line.kind {
            LineKind::WireGuard(wg) => {
                self.start_wireguard(line, wg, mtu, local_ip, pmtu.clone())?
            }
            LineKind::IpTunnel(t) => self
                .dataplane
                .start_ip_tunnel(IpTunnelSpec {
                    name: line.name.to_string(),
                    mtu,
                    tunnel: *t,
                    local: local_ip,
                    peer: line.peer_ip,
                    pmtu: pmtu.clone(),
                    state_dir: self.state_dir.clone(),
                    esp_fresh_state: self.fresh_esp.contains(&line.name),
                })
                .map_err(|e| fail(e.to_string()))?,
        };
        let mut running = Running {
            line: line.clone(),
            local_ip,
            mtu,
            dataplane,
            installed: Vec::new(),
            pmtu,
        };
        if let Err(e) = self.install(&mut running, parent_ifindex).await {
            self.uninstall(&mut running).await;
            let ifindex = running.dataplane.ifindex();
            running.dataplane.stop().await;
            // The device and its VIP are gone.
            if let Some(all) = self.pass_addrs.as_mut() {
                all.retain(|(i, _)| *i != ifindex);
            }
            return Err(fail(e.to_string()));
        }
        info!(line = %line.name, local_ip = %local_ip, mtu, "line up (waiting for the peer)");
        // Its mark exists now: the permission to start without one was for this start.
        self.fresh_esp.remove(&line.name);
        self.running.insert(line.name.clone(), running);
        self.follow_next_hops(Some(&line.name)).await;
        Ok(())
    }

    fn start_wireguard(
        &mut self,
        line: &Line,
        wg: &WireGuard,
        mtu: u16,
        local_ip: IpAddr,
        pmtu: Arc<PathMtu>,
    ) -> Result<D::Line, Failed> {
        let index = self.next_index;
        self.next_index = self.next_index.wrapping_add(1) & 0x00ff_ffff;
        let spec = WireGuardSpec {
            name: line.name.to_string(),
            mtu,
            local_ip,
            listen_port: wg.listen_port.map(|p| p.get()).unwrap_or(0),
            endpoint: match wg.mode {
                Mode::Client => wg.peer_port.map(|p| SocketAddr::new(line.peer_ip, p.get())),
                Mode::Server => None,
            },
            private_key: wg.private_key.clone(),
            peer_public_key: wg.peer_public_key,
            preshared_key: wg.preshared_key.clone(),
            keepalive: wg.persistent_keepalive,
            index,
            pmtu,
            redial_from: (wg.mode == Mode::Server).then_some(line.peer_ip),
        };
        self.dataplane.start_wireguard(spec).map_err(|e| {
            let mut reason = e.to_string();
            if reason.contains("in use") {
                reason.push_str("; another program (or line) holds that port: choose another");
            }
            Failed::new(reason)
        })
    }

    /// Takes one line down: its host objects, then its data plane.
    pub(super) async fn take_down(&mut self, name: &LineName) {
        if let Some(mut r) = self.running.remove(name) {
            self.uninstall(&mut r).await;
            r.dataplane.stop().await;
        }
    }

    /// Takes down lines none of which is another's parent: host objects one by one
    /// (they share the netlink handle and the rule counts), data planes concurrently.
    async fn take_down_together(&mut self, names: &[LineName]) {
        let mut stopping = Vec::with_capacity(names.len());
        for name in names {
            if let Some(mut r) = self.running.remove(name) {
                self.uninstall(&mut r).await;
                stopping.push(r.dataplane.stop());
            }
        }
        futures::future::join_all(stopping).await;
    }
}

fn rand_index() -> u32 {
    let mut b = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    u32::from_le_bytes(b) & 0x00ff_ffff
}

/// The parent's address to use toward `peer`: same family, global scope preferred.
fn pick_local_address(addrs: &[IpAddr], peer: IpAddr) -> Option<IpAddr> {
    let same = addrs
        .iter()
        .copied()
        .filter(|a| a.is_ipv4() == peer.is_ipv4());
    let is_link_local = |a: &IpAddr| match a {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    let all: Vec<IpAddr> = same.collect();
    all.iter()
        .copied()
        .find(|a| !is_link_local(a))
        .or_else(|| all.first().copied())
}
