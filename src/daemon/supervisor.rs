//! The supervisor: owns the running lines, brings configured lines up parents first,
//! keeps retrying the ones that cannot come up, and answers control requests.
//!
//! Rules: a control request that fails changes nothing (the config file is written
//! only after the host accepted the change, and a line half brought up is rolled back);
//! every host object a line installs is recorded so that taking the line down removes
//! exactly that; rules shared by several lines are reference-counted, and a rule that
//! existed before twnode is never removed.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::spec::line_from_spec;
use crate::config::model::IpTunnel;
use crate::config::{self, Config, Line, LineKind, LineName, Mode, WireGuard};
use crate::control::{
    Created, DaemonStatus, KeepaliveInfo, LineSpec, LineState, LineStatus, PeerCommand, Request,
    Response,
};
use crate::dataplane::raw::EspSpec;
use crate::dataplane::seqstore::SeqStore;
use crate::dataplane::{
    LineDataplane, LineStats, PathMtu, RawLine, RawSockets, RawSpec, WireGuardLine, WireGuardSpec,
};
use crate::net::{self, Family, Host, NetError, NextHop, Route, Rule};
use crate::tunnel::esp;
use crate::tunnel::iptunnel;
use crate::tunnel::keepalive::Liveness;
use crate::tunnel::pmtu::{Outer, Overhead};
use crate::wire;

/// Outer headers a WireGuard line adds: IP (20 or 40) + UDP 8 + WireGuard 32.
pub fn wireguard_overhead(underlay: IpAddr) -> u16 {
    let ip = if underlay.is_ipv4() { 20 } else { 40 };
    ip + 8 + crate::tunnel::wireguard::DATA_OVERHEAD as u16
}

/// What a line adds around an inner packet: see [`wireguard_overhead`]; for an IP
/// tunnel the outer IP header (20 or 40) plus the GRE header with its optional fields;
/// for an encrypted line also ESP's header and IV (16) and ICV (16), with the GRE packet,
/// pad length and next header (2) padded to a 4-byte boundary.
pub fn line_overhead(line: &Line) -> Overhead {
    match &line.kind {
        LineKind::WireGuard(_) => wireguard_overhead(line.peer_ip).into(),
        LineKind::IpTunnel(t) => {
            let outer = t.kind.outer_len() as u16;
            let gre = if t.kind.is_gre() {
                t.gre.header_len() as u16
            } else {
                0
            };
            match t.esp {
                Some(_) => Overhead {
                    fixed: outer + (esp::PREFIX_LEN + wire::esp::ICV_LEN) as u16,
                    aligned: Some(gre + wire::esp::TRAILER_LEN as u16),
                },
                None => (outer + gre).into(),
            }
        }
    }
}

/// The MTU a line gets from its parent's: the largest inner packet whose outer packet
/// fits the parent exactly (see [`line_overhead`]).
pub fn derived_mtu(line: &Line, parent_mtu: u16) -> u16 {
    line_overhead(line).inner_mtu(parent_mtu)
}

/// A host object installed for a line.
#[derive(Debug, Clone)]
enum Installed {
    Route(Route),
    /// A reference on a shared rule.
    Rule(Rule),
}

/// A line whose data plane runs.
struct Running {
    line: Line,
    local_ip: IpAddr,
    mtu: u16,
    dataplane: LineDataplane,
    installed: Vec<Installed>,
    /// The parent's MTU as the data plane checks packets against it.
    pmtu: std::sync::Arc<PathMtu>,
}

/// A configured line that is not running, and why.
#[derive(Debug, Clone)]
struct Failed {
    reason: String,
    parent_down: bool,
}

/// The daemon's state.
pub struct Supervisor {
    host: Host,
    config_path: PathBuf,
    config: Config,
    running: HashMap<LineName, Running>,
    failed: HashMap<LineName, Failed>,
    /// Rules shared by lines: how many lines use each, and whether it predates us.
    rules: HashMap<Rule, (usize, bool)>,
    next_index: u32,
    /// Raw IP sockets shared by the IP tunnel lines.
    raw_sockets: RawSockets,
    /// Where encrypted lines keep their ESP sequence-number marks.
    state_dir: PathBuf,
    /// During a reconcile pass: the host's addresses (interface index, address), read
    /// once and kept current with the VIPs the pass adds, so bringing up N lines reads
    /// them once instead of N times (the dump grows with the lines: 1000 lines took
    /// 9 s, most of it in address dumps). `None` outside a pass: then each bring-up
    /// reads them afresh.
    pass_addrs: Option<Vec<(u32, IpAddr)>>,
    /// Lines restarted after their packet path stopped (a bug): how often in a row,
    /// and when the next bring-up may happen ([`Restarts`]).
    restarts: HashMap<LineName, Restarts>,
}

/// A line whose packet path keeps stopping is restarted ever more slowly: at once, then
/// after 4, 8, 16, 32 and at most 60 s, so a bug that every restart meets again costs a
/// log line a minute, not one per pass. A line that ran [`Restarts::STABLE`] since its
/// last restart starts over at once.
struct Restarts {
    /// Restarts in a row.
    count: u32,
    /// No bring-up before this.
    hold_until: Instant,
}

impl Restarts {
    /// A line that ran this long since its restart counts as healthy again.
    const STABLE: Duration = Duration::from_secs(60);
    /// The longest wait between two restarts.
    const MAX_DELAY: Duration = Duration::from_secs(60);

    /// Whether the line has run long enough since it was let up again to count as
    /// healthy.
    fn healed(&self, now: Instant) -> bool {
        now >= self.hold_until + Self::STABLE
    }

    /// The wait before restart number `count` (1: at once).
    fn delay(count: u32) -> Duration {
        match count {
            0 | 1 => Duration::ZERO,
            n => Duration::from_secs(2u64 << (n - 1).min(6)).min(Self::MAX_DELAY),
        }
    }
}

impl Supervisor {
    /// A supervisor with nothing running yet.
    pub fn new(host: Host, config_path: PathBuf, config: Config) -> Supervisor {
        Supervisor {
            host,
            config_path,
            config,
            running: HashMap::new(),
            failed: HashMap::new(),
            rules: HashMap::new(),
            next_index: rand_index(),
            raw_sockets: RawSockets::new(),
            state_dir: PathBuf::from(crate::daemon::DEFAULT_STATE_DIR),
            pass_addrs: None,
            restarts: HashMap::new(),
        }
    }

    /// The same supervisor keeping its state (ESP sequence-number marks) in `dir`.
    pub fn with_state_dir(mut self, dir: PathBuf) -> Supervisor {
        self.state_dir = dir;
        self
    }

    /// How many lines are configured.
    pub fn configured(&self) -> usize {
        self.config.lines.len()
    }

    /// Tries to bring up every configured line that is not running, parents first.
    /// Logs a line's failure once per distinct reason.
    pub async fn reconcile(&mut self) {
        self.restart_stopped_paths().await;
        self.follow_parent_mtus().await;
        self.follow_next_hops(None).await;
        let order: Vec<Line> = self.config.ordered().into_iter().cloned().collect();
        if order.iter().any(|l| !self.running.contains_key(&l.name)) {
            self.pass_addrs = self.host.all_addrs().await.ok();
        }
        let now = Instant::now();
        self.restarts
            .retain(|name, r| self.config.line(name.as_str()).is_some() && !r.healed(now));
        for line in order {
            if self.running.contains_key(&line.name) {
                continue;
            }
            if self
                .restarts
                .get(&line.name)
                .is_some_and(|r| now < r.hold_until)
            {
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
    }

    /// A packet path that panicked (a bug) stops alone and the line would look alive
    /// while it carries nothing: such a line is taken down here and the pass brings it
    /// up again; a shared raw socket's receive path is registered anew.
    async fn restart_stopped_paths(&mut self) {
        for what in self.raw_sockets.revive_receives() {
            error!(path = %what, "packet path had stopped after an internal error; restarted");
        }
        let stopped: Vec<(LineName, String)> = self
            .running
            .iter()
            .filter_map(|(name, r)| Some((name.clone(), r.dataplane.stopped_path()?)))
            .collect();
        for (name, what) in stopped {
            let now = Instant::now();
            let count = match self.restarts.get(&name) {
                Some(r) if !r.healed(now) => r.count + 1,
                _ => 1,
            };
            let delay = Restarts::delay(count);
            error!(line = %name, path = %what, restarts_in_a_row = count, next_try_s = delay.as_secs(),
                   "packet path stopped after an internal error (see the panic above); restarting the line");
            self.take_down(&name).await;
            self.restarts.insert(
                name.clone(),
                Restarts {
                    count,
                    hold_until: now + delay,
                },
            );
            let when = if delay.is_zero() {
                "restarting".to_string()
            } else {
                format!("{count} times in a row; next try in {} s", delay.as_secs())
            };
            self.failed.insert(
                name,
                Failed {
                    reason: format!(
                        "{what} stopped after an internal error (a bug; the daemon's log has \
                         it); {when}"
                    ),
                    parent_down: false,
                },
            );
        }
    }

    /// Takes every line down, children first, and removes what they installed. The
    /// lines of one depth stop together: closing a TUN device waits on the kernel, and
    /// those waits overlap (1000 lines would otherwise take 20 s).
    pub async fn shutdown(&mut self) {
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

    /// Answers one control request.
    pub async fn handle(&mut self, request: Request) -> Response {
        let result = match request {
            Request::Status => Ok(Response::Status(DaemonStatus {
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                config: self.config_path.clone(),
                lines: self.config.lines.len(),
            })),
            Request::ListLines => Ok(Response::Lines {
                lines: self
                    .config
                    .ordered()
                    .into_iter()
                    .map(|l| self.status(l))
                    .collect(),
            }),
            Request::ShowLine { name } => self.known(&name).map(|l| Response::Line(self.status(l))),
            Request::ShowPeer { name } => self.show_peer(&name).await.map(Response::Peer),
            Request::ShowXfrm { name } => self
                .show_xfrm(&name)
                .map(|commands| Response::Xfrm { commands }),
            Request::CreateLine(spec) => self.create(*spec).await.map(Response::Created),
            Request::DeleteLine { name, cascade } => self
                .delete(&name, cascade)
                .await
                .map(|names| Response::Deleted { names }),
            Request::Reload => self
                .reload()
                .await
                .map(|(stopped, started)| Response::Reloaded { stopped, started }),
        };
        result.unwrap_or_else(|message| Response::Error { message })
    }

    fn known(&self, name: &str) -> Result<&Line, String> {
        self.config.line(name).ok_or_else(|| {
            format!("no line named {name:?}; `twnode line list` shows the configured lines")
        })
    }

    /// Re-reads the config file and applies the difference. A config that does not load
    /// changes nothing.
    pub async fn reload(&mut self) -> Result<(Vec<String>, Vec<String>), String> {
        let new = config::load(&self.config_path).map_err(|e| {
            let msg = format!("reload refused, keeping the running configuration: {e}");
            warn!("{msg}");
            msg
        })?;
        let diff = config::model::diff(&self.config, &new);
        for name in &diff.stop {
            self.take_down(name).await;
            self.failed.remove(name);
        }
        for name in self
            .config
            .lines
            .iter()
            .map(|l| l.name.clone())
            .collect::<Vec<_>>()
        {
            if new.line(name.as_str()).is_none() {
                self.failed.remove(&name);
            }
        }
        self.config = new;
        self.reconcile().await;
        info!(stopped = ?diff.stop, started = ?diff.start, "configuration reloaded");
        Ok((
            diff.stop.iter().map(|n| n.to_string()).collect(),
            diff.start.iter().map(|n| n.to_string()).collect(),
        ))
    }

    /// Refuses to write the config file over hand edits the daemon has not loaded: the
    /// file must still say what is running.
    fn check_file_unchanged(&self) -> Result<(), String> {
        match config::load(&self.config_path) {
            Ok(on_disk) if on_disk == self.config => Ok(()),
            Ok(_) => Err(format!(
                "{} was edited since the daemon loaded it; run `twnode reload` (or \
                 `systemctl reload twnode`) first so the edits are not overwritten",
                self.config_path.display()
            )),
            Err(e) => Err(format!(
                "{e}; the file on disk does not load, so it cannot be updated: fix it and \
                 run `twnode reload` first"
            )),
        }
    }

    async fn create(&mut self, spec: LineSpec) -> Result<Created, String> {
        let (line, generated) = line_from_spec(spec)?;
        self.check_file_unchanged()?;
        if self.config.is_line(line.name.as_str()) {
            return Err(format!(
                "a line named {} already exists; choose another name (or `twnode line delete {}` first)",
                line.name, line.name
            ));
        }
        let new_config = self
            .config
            .with_line(line.clone())
            .map_err(|e| e.to_string())?;
        if let Some(parent) = self.config.line(line.parent.as_str()) {
            if !self.running.contains_key(&parent.name) {
                let why = self
                    .failed
                    .get(&parent.name)
                    .map(|f| f.reason.clone())
                    .unwrap_or_default();
                return Err(format!(
                    "parent line {} is not running ({why}); bring it up first",
                    parent.name
                ));
            }
        }
        // Bring it up before writing anything: a parent that does not exist, a VIP or a
        // port in use fails here and the config file stays as it was.
        let old_config = std::mem::replace(&mut self.config, new_config);
        if let Err(f) = self.bring_up(&line).await {
            self.config = old_config;
            return Err(f.reason);
        }
        if let Err(e) = config::save(&self.config, &self.config_path) {
            self.take_down(&line.name).await;
            self.config = old_config;
            return Err(format!("line not created: {e}"));
        }
        info!(line = %line.name, parent = %line.parent, peer_ip = %line.peer_ip, "line created");
        let status = self.status(&line);
        let peer = self.peer_command(&line).ok();
        Ok(Created {
            line: status,
            peer,
            generated_keys: generated,
        })
    }

    async fn delete(&mut self, name: &str, cascade: bool) -> Result<Vec<String>, String> {
        let line = self.known(name)?.clone();
        self.check_file_unchanged()?;
        let below = self.config.descendants(name);
        if !below.is_empty() && !cascade {
            let names: Vec<String> = below.iter().map(|n| n.to_string()).collect();
            return Err(format!(
                "line {name} carries {}; delete those first or add --cascade",
                names.join(", ")
            ));
        }
        let mut doomed = below;
        doomed.reverse();
        doomed.sort_by_key(|n| std::cmp::Reverse(self.config.depth(n.as_str())));
        doomed.push(line.name.clone());
        let new_config = self.config.without(&doomed);
        config::save(&new_config, &self.config_path)
            .map_err(|e| format!("nothing deleted: {e}"))?;
        for n in &doomed {
            self.take_down(n).await;
            self.failed.remove(n);
        }
        self.config = new_config;
        info!(lines = ?doomed, "deleted");
        Ok(doomed.iter().map(|n| n.to_string()).collect())
    }

    async fn show_peer(&mut self, name: &str) -> Result<PeerCommand, String> {
        let line = self.known(name)?.clone();
        self.peer_command(&line)
    }

    fn peer_command(&self, line: &Line) -> Result<PeerCommand, String> {
        let wg = match &line.kind {
            LineKind::WireGuard(wg) => wg,
            LineKind::IpTunnel(t) => return self.ip_tunnel_peer_command(line, t),
        };
        if wg.mode != Mode::Server {
            return Err(format!(
                "line {} is a client; its peer command comes from the server: run \
                 `twnode line show-peer {}` on {}",
                line.name, line.name, line.peer_ip
            ));
        }
        let Some(peer_private) = &wg.peer_private_key else {
            return Err(format!(
                "line {} was created with keys given by hand, so twnode does not know the \
                 client's private key; give the client its key yourself",
                line.name
            ));
        };
        let local_ip = self
            .running
            .get(&line.name)
            .map(|r| r.local_ip)
            .ok_or_else(|| {
                format!(
                    "line {} is not running, so its local IP is not known yet: {}",
                    line.name,
                    self.failed
                        .get(&line.name)
                        .map(|f| f.reason.as_str())
                        .unwrap_or("starting")
                )
            })?;
        Ok(PeerCommand {
            peer_ip: local_ip,
            peer_vip: line.local_vip,
            local_vip: line.peer_vip,
            name: line.name.to_string(),
            kind: line.kind.type_name().to_string(),
            private_key: Some(peer_private.to_base64()),
            peer_pubkey: Some(wg.private_key.public_key().to_string()),
            peer_port: Some(wg.listen_port.map(|p| p.get()).unwrap_or(0)),
            // An MTU set by hand goes to both ends, as for the IP tunnels.
            options: line
                .mtu
                .map(|m| vec!["--mtu".to_string(), m.get().to_string()])
                .unwrap_or_default(),
            secret: true,
        })
    }

    /// An encrypted line's SAs as the `ip xfrm` commands a Linux kernel peer runs (the
    /// states are the same on both ends; the policies are the peer's).
    fn show_xfrm(&self, name: &str) -> Result<Vec<String>, String> {
        let line = self.known(name)?.clone();
        let Some(e) = line.ip_tunnel().and_then(|t| t.esp) else {
            return Err(format!(
                "line {name} is not encrypted; --xfrm applies to lines created with --encrypt"
            ));
        };
        let local = self.local_ip_of(&line)?;
        let peer = line.peer_ip;
        let sas = esp::derive(e.cipher, e.enc_key.bytes(), e.auth_key.bytes(), local, peer)
            .map_err(|err| format!("line {name}: {err}"))?;
        let ip = if peer.is_ipv6() { "ip -6" } else { "ip" };
        let state = |src: IpAddr, dst: IpAddr, sa: &esp::SaKeys| {
            format!(
                "{ip} xfrm state add src {src} dst {dst} proto esp spi {:#010x} reqid 1 \
                 mode transport replay-window 1024 flag esn aead '{}' {} 128 sel src {src} \
                 dst {dst} proto gre",
                sa.spi,
                e.cipher.xfrm_name(),
                sa.xfrm_key_hex()
            )
        };
        let policy = |src: IpAddr, dst: IpAddr, dir: &str| {
            format!(
                "{ip} xfrm policy add src {src} dst {dst} proto gre dir {dir} tmpl src {src} \
                 dst {dst} proto esp reqid 1 mode transport"
            )
        };
        Ok(vec![
            format!(
                "# line {name}: GRE over ESP between {local} (twnode) and {peer} (kernel peer); \
                 secret: these lines carry the keys"
            ),
            format!("# {local} -> {peer}, this end's outbound SA"),
            state(local, peer, &sas.outbound),
            format!("# {peer} -> {local}, this end's inbound SA"),
            state(peer, local, &sas.inbound),
            "# policies on the kernel peer".to_string(),
            policy(peer, local, "out"),
            policy(local, peer, "in"),
            format!(
                "# then a GRE tunnel on the peer: ip tunnel add {name} mode {} local {peer} \
                 remote {local}{}",
                if peer.is_ipv6() { "ip6gre" } else { "gre" },
                line.ip_tunnel()
                    .and_then(|t| t.gre.okey)
                    .map(|k| format!(" key {}", k.0))
                    .unwrap_or_default()
            ),
        ])
    }

    /// An IP tunnel's peer runs the same type with the options mirrored (input and
    /// output keys, sequence numbers and checksums swapped) and the addresses swapped.
    /// An encrypted line's command carries its ESP keys and says so (`secret`).
    fn ip_tunnel_peer_command(&self, line: &Line, t: &IpTunnel) -> Result<PeerCommand, String> {
        let local_ip = self.local_ip_of(line)?;
        let mut options = t.mirrored().cli_options();
        options.extend(t.esp_key_options());
        if let Some(m) = line.mtu {
            options.extend(["--mtu".to_string(), m.get().to_string()]);
        }
        Ok(PeerCommand {
            peer_ip: local_ip,
            peer_vip: line.local_vip,
            local_vip: line.peer_vip,
            name: line.name.to_string(),
            kind: line.kind.type_name().to_string(),
            private_key: None,
            peer_pubkey: None,
            peer_port: None,
            options,
            secret: t.esp.is_some(),
        })
    }

    /// The underlay address a running line uses, or why it is not known.
    fn local_ip_of(&self, line: &Line) -> Result<IpAddr, String> {
        self.running
            .get(&line.name)
            .map(|r| r.local_ip)
            .ok_or_else(|| {
                format!(
                    "line {} is not running, so its local IP is not known yet: {}",
                    line.name,
                    self.failed
                        .get(&line.name)
                        .map(|f| f.reason.as_str())
                        .unwrap_or("starting")
                )
            })
    }

    fn state(&self, line: &Line) -> (LineState, Option<String>) {
        let parent_up = match self.config.line(line.parent.as_str()) {
            None => true,
            Some(p) => self.state(p).0 == LineState::Up,
        };
        match self.running.get(&line.name) {
            Some(_) if !parent_up => (
                LineState::ParentDown,
                Some(format!("parent line {} is not up", line.parent)),
            ),
            Some(Running {
                dataplane: LineDataplane::Raw(raw),
                ..
            }) => raw_state(line, raw),
            Some(Running {
                dataplane: LineDataplane::WireGuard(wg),
                ..
            }) => match wg.status() {
                s if s.up => (LineState::Up, None),
                s => (
                    LineState::Connecting,
                    Some(
                        s.problem
                            .unwrap_or_else(|| "no WireGuard session with the peer yet".into()),
                    ),
                ),
            },
            None => match self.failed.get(&line.name) {
                Some(f) if f.parent_down => (LineState::ParentDown, Some(f.reason.clone())),
                Some(f) => (LineState::Down, Some(f.reason.clone())),
                None => (LineState::Down, Some("starting".into())),
            },
        }
    }

    fn status(&self, line: &Line) -> LineStatus {
        let (state, reason) = self.state(line);
        let running = self.running.get(&line.name);
        let stats = running.map(|r| r.dataplane.stats());
        let stat = |f: fn(&LineStats) -> &std::sync::atomic::AtomicU64| {
            stats.map(|s| LineStats::get(f(s))).unwrap_or(0)
        };
        let mut status = LineStatus {
            name: line.name.to_string(),
            parent: line.parent.to_string(),
            kind: line.kind.type_name().to_string(),
            mode: None,
            peer_ip: line.peer_ip,
            peer_vip: line.peer_vip,
            local_vip: line.local_vip,
            local_ip: running.map(|r| r.local_ip),
            depth: self.config.depth(line.name.as_str()),
            mtu: running.map(|r| r.mtu).or(line.mtu.map(|m| m.get())),
            state,
            reason,
            listen_port: None,
            endpoint: None,
            public_key: None,
            peer_public_key: None,
            last_handshake_secs: None,
            rx_bytes: stat(|s| &s.rx_bytes),
            tx_bytes: stat(|s| &s.tx_bytes),
            rx_packets: stat(|s| &s.rx_packets),
            tx_packets: stat(|s| &s.tx_packets),
            drops: stats.map(|s| s.nonzero_drops()).unwrap_or_default(),
            options: Vec::new(),
            keepalive: None,
            esp: None,
            transmit: None,
            af_xdp_packets: None,
        };
        match (&line.kind, running.map(|r| &r.dataplane)) {
            (LineKind::WireGuard(wg), dp) => {
                let dp = match dp {
                    Some(LineDataplane::WireGuard(l)) => Some(l.status()),
                    _ => None,
                };
                status.mode = Some(wg.mode.as_str().to_string());
                status.listen_port = dp
                    .as_ref()
                    .and_then(|s| s.local.map(|a| a.port()))
                    .or(wg.listen_port.map(|p| p.get()));
                status.endpoint = dp.as_ref().and_then(|s| s.endpoint.map(|e| e.to_string()));
                status.public_key = Some(wg.private_key.public_key().to_string());
                status.peer_public_key = Some(wg.peer_public_key.to_string());
                status.last_handshake_secs = dp
                    .as_ref()
                    .and_then(|s| s.core.last_handshake.map(|d| d.as_secs()));
            }
            (LineKind::IpTunnel(t), dp) => {
                status.options = t.cli_options();
                if let Some(LineDataplane::Raw(l)) = dp {
                    let raw = l.status();
                    status.esp = raw.esp.zip(t.esp).map(
                        |((spi_out, spi_in, next_seq, reserved_to, highest_received), e)| {
                            crate::control::EspInfo {
                                cipher: e.cipher.as_str().to_string(),
                                spi_out,
                                spi_in,
                                next_seq,
                                reserved_to,
                                highest_received,
                            }
                        },
                    );
                    status.transmit = raw.transmit;
                    status.af_xdp_packets = raw.af_xdp_packets;
                    status.keepalive = raw.keepalive.map(|k| KeepaliveInfo {
                        interval_secs: k.config.interval.as_secs(),
                        retries: k.config.retries,
                        sent: k.sent,
                        replies: k.replies,
                        unanswered: k.unanswered,
                        last_reply_ms: k.last_reply.map(|d| d.as_millis() as u64),
                    });
                }
            }
        }
        status
    }

    /// Keeps each running line's path MTU at what its parent carries now, so a line
    /// refuses (with an ICMP error) what no longer fits, within one tick: the physical
    /// parent's MTU (which may shrink or grow back) or the parent line's MTU, lowered to
    /// the path MTU the kernel learnt toward the line's peer from an ICMP error (a
    /// narrower link beyond a relay, for instance).
    ///
    /// One pass asks the kernel once per physical parent and once per peer address,
    /// however many lines share them (1000 lines on eth0 cost one link query).
    async fn follow_parent_mtus(&mut self) {
        let mut links: HashMap<&str, Option<u32>> = HashMap::new();
        let mut learnt_toward: HashMap<IpAddr, Option<u32>> = HashMap::new();
        for r in self.running.values() {
            let parent = match self.running.get(&r.line.parent) {
                Some(p) => u32::from(p.mtu),
                None => {
                    let name = r.line.parent.as_str();
                    let mtu = match links.get(name) {
                        Some(known) => *known,
                        None => {
                            let mtu = match self.host.link_index(name).await {
                                Ok(Some(index)) => self.host.link_mtu(index).await.ok(),
                                _ => None,
                            };
                            links.insert(name, mtu);
                            mtu
                        }
                    };
                    let Some(mtu) = mtu else {
                        continue;
                    };
                    mtu
                }
            };
            let learnt = match learnt_toward.get(&r.line.peer_ip) {
                Some(known) => *known,
                None => {
                    let learnt = self.host.route_mtu(r.line.peer_ip).await.ok().flatten();
                    learnt_toward.insert(r.line.peer_ip, learnt);
                    learnt
                }
            };
            let mtu = learnt.map_or(parent, |l| l.min(parent));
            let mtu = mtu.min(u32::from(u16::MAX)) as u16;
            let old = r.pmtu.path_mtu();
            if mtu != old {
                r.pmtu.set_path_mtu(mtu);
                info!(line = %r.line.name, parent = %r.line.parent, old, new = mtu,
                      "path MTU toward the peer changed; packets are checked against it");
            }
        }
    }

    /// Hands each running `--af-xdp` line (or only `only`) the Ethernet next hop toward
    /// its peer as the kernel would pick it now (route, then neighbour entry), so its
    /// AF_XDP transmit path follows route and neighbour changes within a pass, and
    /// waits, sending through the kernel, while there is none (see
    /// [`crate::dataplane::xsk::Transmit`]). One look-up per (peer, local address) per
    /// pass, however many lines share them.
    async fn follow_next_hops(&self, only: Option<&LineName>) {
        let lines: Vec<(&RawLine, (IpAddr, IpAddr))> = self
            .running
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == *name))
            .filter_map(|(_, r)| match &r.dataplane {
                LineDataplane::Raw(l) if l.af_xdp() => Some((l, (r.line.peer_ip, r.local_ip))),
                _ => None,
            })
            .collect();
        if lines.is_empty() {
            return;
        }
        let mut pairs: Vec<(IpAddr, IpAddr)> = lines.iter().map(|(_, p)| *p).collect();
        pairs.sort();
        pairs.dedup();
        let found: HashMap<(IpAddr, IpAddr), Result<NextHop, String>> =
            match self.host.next_hops(&pairs).await {
                Ok(hops) => pairs.into_iter().zip(hops).collect(),
                Err(e) => pairs
                    .into_iter()
                    .map(|p| (p, Err(format!("cannot look up the next hop: {e}"))))
                    .collect(),
            };
        for (line, pair) in lines {
            if let Some(hop) = found.get(&pair) {
                line.update_next_hop(hop.clone());
            }
        }
    }

    /// Where the line's socket binds and what MTU its parent offers.
    async fn resolve_parent(&self, line: &Line) -> Result<(IpAddr, u16, Option<u32>), Failed> {
        let fail = |reason: String| Failed {
            reason,
            parent_down: false,
        };
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
    async fn bring_up(&mut self, line: &Line) -> Result<(), Failed> {
        let fail = |reason: String| Failed {
            reason,
            parent_down: false,
        };
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
                    "{what} {vip} is already configured on this host (interface index {idx}); \
                     choose another VIP"
                )));
            }
        }
        let overhead = line_overhead(line);
        let mtu = match line.mtu {
            Some(m) => m.get(),
            None => {
                let derived = derived_mtu(line, parent_mtu);
                let type_carries_v6 = line
                    .ip_tunnel()
                    .is_some_and(|t| t.kind.carries(iptunnel::IpVersion::V6));
                let min = if line.carries_ipv6() || type_carries_v6 {
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
        let outer = match &line.kind {
            LineKind::WireGuard(_) => Outer::Fragmentable,
            LineKind::IpTunnel(_) => Outer::Whole,
        };
        let pmtu = PathMtu::new(overhead, outer, parent_mtu);
        let dataplane = match &line.kind {
            LineKind::WireGuard(wg) => LineDataplane::WireGuard(self.start_wireguard(
                line,
                wg,
                mtu,
                local_ip,
                pmtu.clone(),
            )?),
            LineKind::IpTunnel(t) => {
                let spec = RawSpec {
                    name: line.name.to_string(),
                    mtu,
                    settings: iptunnel::Settings {
                        kind: t.kind,
                        local: local_ip,
                        peer: line.peer_ip,
                        ttl: t.ttl,
                        tos: t.tos,
                        pmtudisc: t.pmtudisc,
                        gre: t.gre,
                        keepalive: t.keepalive,
                    },
                    pmtu: pmtu.clone(),
                    esp: match t.esp {
                        Some(e) => {
                            let sas = esp::derive(
                                e.cipher,
                                e.enc_key.bytes(),
                                e.auth_key.bytes(),
                                local_ip,
                                line.peer_ip,
                            )
                            .map_err(|err| fail(format!("ESP: {err}")))?;
                            let store = SeqStore::new(&self.state_dir, &sas.outbound.fingerprint());
                            let floor =
                                SeqStore::replay_floor(&self.state_dir, &sas.inbound.fingerprint());
                            Some(EspSpec {
                                cipher: e.cipher,
                                sas,
                                store,
                                floor,
                            })
                        }
                        None => None,
                    },
                    af_xdp: t.af_xdp,
                };
                LineDataplane::Raw(
                    RawLine::start(spec, &self.raw_sockets).map_err(|e| fail(e.to_string()))?,
                )
            }
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
        pmtu: std::sync::Arc<PathMtu>,
    ) -> Result<WireGuardLine, Failed> {
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
            keepalive: wg.persistent_keepalive,
            index,
            pmtu,
            redial_from: (wg.mode == Mode::Server).then_some(line.peer_ip),
        };
        WireGuardLine::start(spec).map_err(|e| {
            let mut reason = e.to_string();
            if reason.contains("in use") {
                reason.push_str("; another program (or line) holds that port: choose another");
            }
            Failed {
                reason,
                parent_down: false,
            }
        })
    }

    /// Addresses, routes and rules of a running line.
    async fn install(
        &mut self,
        r: &mut Running,
        parent_ifindex: Option<u32>,
    ) -> Result<(), NetError> {
        let line = r.line.clone();
        let ifindex = r.dataplane.ifindex();
        let family = Family::of(line.local_vip);
        let max = family.max_prefix();
        self.host.add_addr(ifindex, line.local_vip, max).await?;
        if let Some(all) = self.pass_addrs.as_mut() {
            all.push((ifindex, line.local_vip));
        }
        let vip_route = Route {
            dst: line.peer_vip,
            prefix: max,
            oif: ifindex,
            table: net::VIP_TABLE,
            src: Some(line.local_vip),
        };
        self.host.add_route(&vip_route).await?;
        r.installed.push(Installed::Route(vip_route));
        self.acquire_rule(
            r,
            Rule::from_all(family, net::VIP_RULE_PREF, net::VIP_TABLE),
        )
        .await?;
        // Protection: the underlay datagrams to peer_ip must never enter a tunnel's
        // routes. On a physical parent they follow the main table; on a line they follow
        // the VIP table, where the parent's route (or the relay route below) carries them.
        let peer_max = Family::of(line.peer_ip).max_prefix();
        let protect_table = match parent_ifindex {
            None => net::MAIN_TABLE,
            Some(parent_if) => {
                let parent_peer_vip = self.config.line(line.parent.as_str()).map(|p| p.peer_vip);
                if parent_peer_vip != Some(line.peer_ip) {
                    // A relay: the peer is reached through the parent's far end.
                    let relay = Route {
                        dst: line.peer_ip,
                        prefix: peer_max,
                        oif: parent_if,
                        table: net::VIP_TABLE,
                        src: Some(r.local_ip),
                    };
                    self.host.add_route(&relay).await?;
                    r.installed.push(Installed::Route(relay));
                }
                net::VIP_TABLE
            }
        };
        self.acquire_rule(
            r,
            Rule::to_prefix(
                net::PROTECT_RULE_PREF,
                line.peer_ip,
                peer_max,
                protect_table,
            ),
        )
        .await?;
        Ok(())
    }

    async fn acquire_rule(&mut self, r: &mut Running, rule: Rule) -> Result<(), NetError> {
        let entry = match self.rules.get_mut(&rule) {
            Some(e) => e,
            None => {
                let preexisting = self.host.rule_exists(&rule).await?;
                if !preexisting {
                    self.host.add_rule(&rule).await?;
                }
                self.rules.entry(rule.clone()).or_insert((0, preexisting))
            }
        };
        entry.0 += 1;
        r.installed.push(Installed::Rule(rule));
        Ok(())
    }

    async fn uninstall(&mut self, r: &mut Running) {
        for obj in r.installed.drain(..).rev() {
            let result = match obj {
                Installed::Route(route) => self.host.del_route(&route).await,
                Installed::Rule(rule) => {
                    let last = match self.rules.get_mut(&rule) {
                        Some(e) => {
                            e.0 = e.0.saturating_sub(1);
                            (e.0 == 0).then_some(e.1)
                        }
                        None => None,
                    };
                    match last {
                        Some(preexisting) => {
                            self.rules.remove(&rule);
                            if preexisting {
                                Ok(())
                            } else {
                                self.host.del_rule(&rule).await
                            }
                        }
                        None => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                warn!(line = %r.line.name, error = %e, "could not remove a host object");
            }
        }
    }

    async fn take_down(&mut self, name: &LineName) {
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

    /// Current states, to log transitions.
    pub fn states(&self) -> BTreeMap<String, LineState> {
        self.config
            .lines
            .iter()
            .map(|l| (l.name.to_string(), self.state(l).0))
            .collect()
    }
}

fn rand_index() -> u32 {
    let mut b = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    u32::from_le_bytes(b) & 0x00ff_ffff
}

/// An IP tunnel line's state: its keepalive's verdict, or up-but-unknown without one.
fn raw_state(line: &Line, raw: &RawLine) -> (LineState, Option<String>) {
    let Some(k) = raw.status().keepalive else {
        return (
            LineState::Up,
            Some(
                "no keepalive: the data plane runs, but whether the peer answers is unknown \
                 (--keepalive SECS watches it)"
                    .into(),
            ),
        );
    };
    match k.liveness {
        Liveness::Up => (LineState::Up, None),
        Liveness::Waiting => (
            LineState::Connecting,
            Some(format!(
                "waiting for the first keepalive reply from {}",
                line.peer_ip
            )),
        ),
        Liveness::Down => (
            LineState::Down,
            Some(format!(
                "no reply to the last {} keepalives (one every {} s) from {}: the peer or the \
                 path to it is down",
                k.unanswered,
                k.config.interval.as_secs(),
                line.peer_ip
            )),
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_keeps_failing_is_restarted_ever_more_slowly_up_to_a_minute() {
        let secs: Vec<u64> = (1..=8).map(|n| Restarts::delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_line_counts_as_healed_a_minute_after_it_was_let_up_again() {
        let now = Instant::now();
        let r = Restarts {
            count: 3,
            hold_until: now + Duration::from_secs(8),
        };
        assert!(!r.healed(now));
        assert!(!r.healed(now + Duration::from_secs(60)));
        assert!(r.healed(now + Duration::from_secs(68)));
    }
}
