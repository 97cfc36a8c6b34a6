//! Control requests: status, list and show, `line create`, `line delete`, the peer
//! command (`show-peer`), an encrypted line's `ip xfrm` commands, and `reload`; the
//! policy requests are in `policy_requests.rs`.
//!
//! Rules: a request that fails changes nothing. The config file is written only after
//! the host accepted the change (a new line is brought up first, and taken down again
//! if the file cannot be written), and never over hand edits the daemon has not loaded.
//! Refusals are [`RequestError`]s, whose text the person who asked reads.

use std::net::IpAddr;

use tracing::{info, warn};

use super::error::RequestError;
use super::supervisor::Supervisor;
use crate::config::esp::Keying;
use crate::config::model::IpTunnel;
use crate::config::{self, Line, LineKind, Mode};
use crate::control::{
    Created, DaemonStatus, LineSpec, NotUp, ParentLine, PeerCommand, Request, Response,
};
use crate::dataplane::{setup, Dataplane};
use crate::net::Host;

impl<H: Host, D: Dataplane> Supervisor<H, D> {
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
            Request::ShowLine { name } => self
                .known(&name)
                .map(|l| Response::Line(Box::new(self.status(l)))),
            Request::ShowPeer { name } => self.show_peer(&name).await.map(Response::Peer),
            Request::ShowXfrm { name } => self
                .show_xfrm(&name)
                .map(|commands| Response::Xfrm { commands }),
            Request::CreateLine(spec) => self
                .create(*spec)
                .await
                .map(|c| Response::Created(Box::new(c))),
            Request::DeleteLine {
                name,
                cascade,
                force,
            } => self
                .delete(&name, cascade, force)
                .await
                .map(|names| Response::Deleted { names }),
            Request::Reload => self.reload().await.map(|r| Response::Reloaded {
                stopped: r.stopped,
                started: r.started,
                not_up: r.not_up,
            }),
            Request::Policy(p) => self.policy_request(p).await,
            Request::SetCost { line, cost } => self.set_cost(&line, cost).await,
            Request::NodeStatus => Ok(Response::NodeStatus(self.node_status())),
            // Answered by `defer` once its probes are back; here only if asked directly.
            Request::CheckLines { .. } => Ok(Response::Checked {
                results: Vec::new(),
            }),
        };
        result.unwrap_or_else(|e| Response::Error {
            message: e.to_string(),
        })
    }

    fn known(&self, name: &str) -> Result<&Line, RequestError> {
        self.config
            .line(name)
            .ok_or_else(|| RequestError::NoSuchLine { name: name.into() })
    }

    /// Re-reads the config file and applies the difference. A config that does not load
    /// changes nothing; one that does is in force even if some of the lines it (re)starts
    /// cannot come up: those are reported (and logged), and retried every pass.
    pub async fn reload(&mut self) -> Result<Reloaded, RequestError> {
        let new = config::load(&self.config_path).map_err(|e| {
            let e = RequestError::ReloadRefused(e);
            warn!("{e}");
            e
        })?;
        let diff = config::diff(&self.config, &new);
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
        let (up, down): (Vec<_>, Vec<_>) = diff
            .start
            .iter()
            .partition(|n| self.running.contains_key(*n));
        let not_up: Vec<NotUp> = down
            .into_iter()
            .map(|n| NotUp {
                name: n.to_string(),
                reason: self
                    .failed
                    .get(n)
                    .map_or_else(|| "starting".to_string(), |f| f.reason.clone()),
            })
            .collect();
        info!(stopped = ?diff.stop, started = ?up, "configuration reloaded");
        for line in &not_up {
            warn!(line = %line.name, reason = %line.reason,
                  "reloaded, but the line did not come up; retrying");
        }
        Ok(Reloaded {
            stopped: diff.stop.iter().map(|n| n.to_string()).collect(),
            started: up.iter().map(|n| n.to_string()).collect(),
            not_up,
        })
    }

    /// Refuses to write the config file over hand edits the daemon has not loaded: the
    /// file must still say what is running.
    pub(super) fn check_file_unchanged(&self) -> Result<(), RequestError> {
        match config::load(&self.config_path) {
            Ok(on_disk) if on_disk == self.config => Ok(()),
            Ok(_) => Err(RequestError::FileEdited {
                path: self.config_path.clone(),
            }),
            Err(e) => Err(RequestError::FileBroken(e)),
        }
    }

    async fn create(&mut self, spec: LineSpec) -> Result<Created, RequestError> {
        let requested = spec.into_raw().map_err(RequestError::Config)?;
        let generated = requested.generated_keys;
        self.check_file_unchanged()?;
        let (new_config, line) = self
            .config
            .with_line(requested.line, &requested.flags)
            .map_err(RequestError::Config)?;
        if let Some(parent) = self.config.line(line.parent.as_str()) {
            if !self.running.contains_key(&parent.name) {
                let why = self
                    .failed
                    .get(&parent.name)
                    .map(|f| f.reason.clone())
                    .unwrap_or_default();
                return Err(RequestError::ParentNotRunning {
                    parent: parent.name.clone(),
                    why,
                });
            }
        }
        // Bring it up before writing anything: a parent that does not exist, a VIP or a
        // port in use fails here and the config file stays as it was.
        let old_config = std::mem::replace(&mut self.config, new_config);
        // A line being created is new: its static ESP SA starts afresh when no mark of
        // it exists (on any later start a missing mark means lost state).
        self.allow_fresh_esp(line.name.clone());
        let up = self.bring_up(&line).await;
        self.forget_fresh_esp(&line.name);
        if let Err(f) = up {
            self.config = old_config;
            return Err(RequestError::NotUp { reason: f.reason });
        }
        if let Err(e) = config::save(&self.config, &self.config_path) {
            self.take_down(&line.name).await;
            self.config = old_config;
            return Err(RequestError::NotCreated(e));
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

    async fn delete(
        &mut self,
        name: &str,
        cascade: bool,
        force: bool,
    ) -> Result<Vec<String>, RequestError> {
        let line = self.known(name)?.clone();
        self.check_file_unchanged()?;
        let below = self.config.descendants(name);
        if !below.is_empty() && !cascade {
            return Err(RequestError::CarriesLines {
                name: name.to_string(),
                below: below.iter().map(|n| n.to_string()).collect(),
            });
        }
        let mut doomed = below;
        doomed.reverse();
        doomed.sort_by_key(|n| std::cmp::Reverse(self.config.depth(n.as_str())));
        doomed.push(line.name.clone());
        // Policy groups that use a doomed line leave it (--force) before it goes.
        let new_config = match self.release_exits(&doomed, force)? {
            Some(policy) => self
                .config
                .with_policy(&policy)
                .map_err(RequestError::Config)?,
            None => self.config.clone(),
        }
        .without(&doomed);
        config::save(&new_config, &self.config_path).map_err(RequestError::NothingDeleted)?;
        self.config = new_config;
        self.sync_policy().await;
        for n in &doomed {
            self.take_down(n).await;
            self.failed.remove(n);
        }
        info!(lines = ?doomed, "deleted");
        Ok(doomed.iter().map(|n| n.to_string()).collect())
    }

    async fn show_peer(&mut self, name: &str) -> Result<PeerCommand, RequestError> {
        let line = self.known(name)?.clone();
        self.peer_command(&line)
    }

    fn peer_command(&self, line: &Line) -> Result<PeerCommand, RequestError> {
        let wg = match &line.kind {
            LineKind::WireGuard(wg) => wg,
            LineKind::IpTunnel(t) => return self.ip_tunnel_peer_command(line, t),
        };
        if wg.mode != Mode::Server {
            return Err(RequestError::Client {
                name: line.name.clone(),
                server: line.peer_ip,
            });
        }
        let Some(peer_private) = &wg.peer_private_key else {
            return Err(RequestError::KeysByHand {
                name: line.name.clone(),
            });
        };
        let local_ip = self.local_ip_of(line)?;
        Ok(PeerCommand {
            private_key: Some(peer_private.to_base64()),
            peer_pubkey: Some(wg.private_key.public_key().to_string()),
            peer_port: Some(wg.listen_port.map(|p| p.get()).unwrap_or(0)),
            preshared_key: wg.preshared_key.as_ref().map(|k| k.to_base64()),
            // An MTU set by hand goes to both ends, as for the IP tunnels.
            options: line
                .mtu
                .map(|m| vec!["--mtu".to_string(), m.get().to_string()])
                .unwrap_or_default(),
            secret: true,
            ..self.seen_from_the_peer(line, local_ip)
        })
    }

    /// An encrypted line's SAs as the `ip xfrm` commands a Linux kernel peer runs (the
    /// states are the same on both ends; the policies are the peer's).
    fn show_xfrm(&self, name: &str) -> Result<Vec<String>, RequestError> {
        let line = self.known(name)?.clone();
        let Some(e) = line.ip_tunnel().and_then(|t| t.esp) else {
            return Err(RequestError::NotEncrypted { name: name.into() });
        };
        if e.keying != Keying::Static {
            return Err(RequestError::XfrmNeedsStatic { name: name.into() });
        }
        let local = self.local_ip_of(&line)?;
        let peer = line.peer_ip;
        let sas = setup::xfrm_sas(&e, local, peer).map_err(|source| RequestError::Xfrm {
            name: name.into(),
            source,
        })?;
        let ip = if peer.is_ipv6() { "ip -6" } else { "ip" };
        let state = |src: IpAddr, dst: IpAddr, sa: &setup::XfrmSa| {
            format!(
                "{ip} xfrm state add src {src} dst {dst} proto esp spi {:#010x} reqid 1 \
                 mode transport replay-window 1024 flag esn aead '{}' {} 128 sel src {src} \
                 dst {dst} proto gre",
                sa.spi, sas.aead, sa.key_hex
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
    fn ip_tunnel_peer_command(
        &self,
        line: &Line,
        t: &IpTunnel,
    ) -> Result<PeerCommand, RequestError> {
        let local_ip = self.local_ip_of(line)?;
        let mut options = t.mirrored().cli_options();
        options.extend(t.esp_key_options());
        if let Some(m) = line.mtu {
            options.extend(["--mtu".to_string(), m.get().to_string()]);
        }
        Ok(PeerCommand {
            options,
            secret: t.esp.is_some(),
            ..self.seen_from_the_peer(line, local_ip)
        })
    }

    /// The peer command's common part: the same line with the addresses swapped (our
    /// underlay address `local_ip` is the peer's `peer_ip`), no keys and no options;
    /// for a line on a line, which one (the peer's `<parent>` is a line too).
    fn seen_from_the_peer(&self, line: &Line, local_ip: IpAddr) -> PeerCommand {
        PeerCommand {
            peer_ip: local_ip,
            peer_vip: line.local_vip,
            local_vip: line.peer_vip,
            name: line.name.to_string(),
            kind: line.kind.type_name().to_string(),
            private_key: None,
            peer_pubkey: None,
            peer_port: None,
            options: Vec::new(),
            secret: false,
            parent_line: self.config.line(line.parent.as_str()).map(|p| ParentLine {
                name: p.name.to_string(),
                relay: p.peer_vip != line.peer_ip,
            }),
            preshared_key: None,
        }
    }

    /// The underlay address a running line uses, or why it is not known.
    fn local_ip_of(&self, line: &Line) -> Result<IpAddr, RequestError> {
        self.running
            .get(&line.name)
            .map(|r| r.local_ip)
            .ok_or_else(|| RequestError::NotRunning {
                name: line.name.clone(),
                why: self
                    .failed
                    .get(&line.name)
                    .map(|f| f.reason.clone())
                    .unwrap_or_else(|| "starting".into()),
            })
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Lines stopped (removed, changed, or below a changed line).
    pub stopped: Vec<String>,
    /// Lines (re)started that came up.
    pub started: Vec<String>,
    /// Lines (re)started that did not come up, and why.
    pub not_up: Vec<NotUp>,
}
