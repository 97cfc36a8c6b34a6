//! WireGuard's UAPI as the supervisor answers it: `get` as a snapshot of a WireGuard
//! line ([`Device`]), `set` as a change of the line's config, validated, applied and
//! written like a `line create`.
//!
//! Rules: a `set` changes the line's `[line.wireguard]` table and nothing else; what
//! would break the line's model (a second peer, `replace_peers`, removing the only peer,
//! a new private key while the peer's key pair is stored for `show-peer`, an fwmark, an
//! endpoint off the line's `peer_ip`) is refused with an errno and a log line naming
//! the line. The config validator is the only validator. A change restarts the line
//! (and the lines on it) with the new settings before the file is written; a line that
//! does not come up with it is put back as it was, and the file is untouched. A refused
//! or failed `set` changes nothing.

use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;
use tracing::{info, warn};

use super::error::RequestError;
use super::supervisor::Supervisor;
use crate::config::{self, Config, LineKind, LineName, Mode, PrivateKey};
use crate::control::uapi::{Device, Errno, Peer, Refusal, Set};
use crate::control::uapi_server::{UapiAnswer, UapiRequest};
use crate::dataplane::{Dataplane, DataplaneStatus, LineStats, RunningLine};
use crate::net::Host;
use crate::tunnel::keys::PresharedKey;

/// The changes a `set` asks of a line's `[line.wireguard]` table.
#[derive(Default)]
struct Edit {
    private_key: Option<PrivateKey>,
    listen_port: Option<u16>,
    peer_port: Option<u16>,
    persistent_keepalive: Option<u16>,
    /// `Some(None)` removes it.
    preshared_key: Option<Option<PresharedKey>>,
    allowed_ips: Option<Vec<IpNet>>,
}

impl Edit {
    fn is_empty(&self) -> bool {
        self.private_key.is_none()
            && self.listen_port.is_none()
            && self.peer_port.is_none()
            && self.persistent_keepalive.is_none()
            && self.preshared_key.is_none()
            && self.allowed_ips.is_none()
    }

    /// What changes, for the log (no keys).
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.private_key.is_some() {
            parts.push("private key".to_string());
        }
        if let Some(p) = self.listen_port {
            parts.push(format!("listen_port {p}"));
        }
        if let Some(p) = self.peer_port {
            parts.push(format!("peer_port {p}"));
        }
        if let Some(k) = self.persistent_keepalive {
            parts.push(format!("persistent_keepalive {k}"));
        }
        match &self.preshared_key {
            Some(Some(_)) => parts.push("preshared key set".to_string()),
            Some(None) => parts.push("preshared key removed".to_string()),
            None => {}
        }
        if let Some(a) = &self.allowed_ips {
            let a: Vec<String> = a.iter().map(|n| n.to_string()).collect();
            parts.push(format!("allowed_ips [{}]", a.join(", ")));
        }
        parts.join(", ")
    }
}

/// The host prefix of `ip` (`/32` or `/128`).
fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

impl<H: Host, D: Dataplane> Supervisor<H, D> {
    /// The configured WireGuard lines: each has a UAPI socket.
    pub fn wireguard_lines(&self) -> Vec<String> {
        self.config
            .lines
            .iter()
            .filter(|l| l.wireguard().is_some())
            .map(|l| l.name.to_string())
            .collect()
    }

    /// Answers one UAPI operation.
    pub async fn handle_uapi(&mut self, request: UapiRequest) -> UapiAnswer {
        match request {
            UapiRequest::Get { line } => self.uapi_device(&line).map(|d| Some(Box::new(d))),
            UapiRequest::Set { line, set } => match self.uapi_set(&line, *set).await {
                Ok(()) => Ok(None),
                Err(r) => {
                    warn!(line = %line, errno = r.errno.0, "wg set refused, nothing changed: {r}");
                    Err(r)
                }
            },
        }
    }

    /// The line as `wg show` sees it: its config, and the running data plane's state.
    fn uapi_device(&self, name: &str) -> Result<Device, Refusal> {
        let gone = || Refusal::new(Errno::NODEV, format!("no WireGuard line named {name}"));
        let line = self.config.line(name).ok_or_else(gone)?;
        let LineKind::WireGuard(wg) = &line.kind else {
            return Err(gone());
        };
        let running = self.running.get(&line.name);
        let status = running.and_then(|r| match r.dataplane.status() {
            DataplaneStatus::WireGuard(s) => Some(s),
            DataplaneStatus::IpTunnel(_) => None,
        });
        let stat = |f: fn(&LineStats) -> &std::sync::atomic::AtomicU64| {
            running.map_or(0, |r| LineStats::get(f(r.dataplane.stats())))
        };
        let configured_endpoint = match wg.mode {
            Mode::Client => wg
                .peer_port
                .map(|p| std::net::SocketAddr::new(line.peer_ip, p.get())),
            Mode::Server => None,
        };
        let last_handshake = status
            .as_ref()
            .and_then(|s| s.core.last_handshake)
            .and_then(|age| SystemTime::now().checked_sub(age));
        let mut allowed_ips = vec![host_prefix(line.peer_vip)];
        allowed_ips.extend(wg.allowed_ips.iter().copied());
        Ok(Device {
            private_key: wg.private_key.clone(),
            listen_port: match &status {
                Some(s) => s.local.map(|a| a.port()),
                None => wg.listen_port.map(|p| p.get()),
            },
            peer: Peer {
                public_key: wg.peer_public_key,
                preshared_key: wg.preshared_key.as_ref().map(PresharedKey::to_bytes),
                endpoint: status
                    .as_ref()
                    .and_then(|s| s.endpoint)
                    .or(configured_endpoint),
                last_handshake,
                rx_bytes: stat(|s| &s.rx_bytes),
                tx_bytes: stat(|s| &s.tx_bytes),
                persistent_keepalive: wg.persistent_keepalive,
                allowed_ips,
            },
        })
    }

    async fn uapi_set(&mut self, name: &str, set: Set) -> Result<(), Refusal> {
        let edit = self.uapi_edit(name, &set)?;
        if edit.is_empty() {
            return Ok(());
        }
        let what = edit.describe();
        let new = self
            .config
            .with_edited_line(name, |raw| {
                let Some(w) = raw.wireguard.as_mut() else {
                    return;
                };
                if let Some(k) = edit.private_key {
                    w.private_key = k;
                }
                if let Some(p) = edit.listen_port {
                    w.listen_port = (p != 0).then_some(p.into());
                }
                if let Some(p) = edit.peer_port {
                    w.peer_port = Some(p.into());
                }
                if let Some(k) = edit.persistent_keepalive {
                    w.persistent_keepalive = Some(k.into());
                }
                if let Some(k) = edit.preshared_key {
                    w.preshared_key = k;
                }
                if let Some(a) = edit.allowed_ips {
                    w.allowed_ips = a.iter().map(|n| n.to_string()).collect();
                }
            })
            .map_err(|e| Refusal::new(Errno::INVAL, e.to_string()))?;
        let line = self
            .config
            .line(name)
            .map(|l| l.name.clone())
            .ok_or_else(|| Refusal::new(Errno::NODEV, format!("no line named {name}")))?;
        self.apply_line_change(&line, new).await?;
        info!(line = %line, change = %what, "wg set applied: the line restarted with it and the config file is written");
        Ok(())
    }

    /// What `set` changes of line `name`, or why it is refused.
    fn uapi_edit(&self, name: &str, set: &Set) -> Result<Edit, Refusal> {
        let perm = |m: String| Refusal::new(Errno::PERM, m);
        let line = self
            .config
            .line(name)
            .ok_or_else(|| Refusal::new(Errno::NODEV, format!("no line named {name}")))?;
        let LineKind::WireGuard(wg) = &line.kind else {
            return Err(Refusal::new(
                Errno::NODEV,
                format!("line {name} is not a WireGuard line"),
            ));
        };
        let status = self
            .running
            .get(&line.name)
            .and_then(|r| match r.dataplane.status() {
                DataplaneStatus::WireGuard(s) => Some(s),
                DataplaneStatus::IpTunnel(_) => None,
            });
        let mut edit = Edit::default();
        if set.replace_peers {
            return Err(perm(
                "replace_peers would remove the line's only peer (`wg setconf` sends it); \
                 a line has exactly one peer: use `wg set` with the changes, or `twnode \
                 line delete` and `line create` for another peer"
                    .into(),
            ));
        }
        if let Some(mark) = set.fwmark.filter(|m| *m != 0) {
            return Err(perm(format!(
                "fwmark {mark}: twnode does not mark a line's packets (its rules keep the \
                 underlay out of the tunnels); leave fwmark unset"
            )));
        }
        if let Some(k) = set.private_key.as_ref().filter(|k| **k != wg.private_key) {
            if k.to_bytes() == [0; 32] {
                return Err(perm(
                    "removing the private key would stop the line; `twnode line delete` \
                     removes it"
                        .into(),
                ));
            }
            if wg.peer_private_key.is_some() {
                return Err(perm(
                    "the peer's key pair was made for this one and is kept for `twnode line \
                     show-peer`; a new private key would lock the peer out: delete the line \
                     and create it again"
                        .into(),
                ));
            }
            edit.private_key = Some(k.clone());
        }
        if let Some(port) = set.listen_port {
            let running = status.as_ref().and_then(|s| s.local.map(|a| a.port()));
            let configured = wg.listen_port.map(|p| p.get());
            if Some(port) != running && Some(port) != configured {
                edit.listen_port = Some(port);
            }
        }
        for p in &set.peers {
            if p.public_key != wg.peer_public_key {
                if p.update_only {
                    continue;
                }
                return Err(perm(format!(
                    "a line has exactly one peer ({}); {} would be a second one: create \
                     another line for it",
                    wg.peer_public_key, p.public_key
                )));
            }
            if p.remove {
                return Err(perm(
                    "removing the line's only peer would leave it nothing to carry; `twnode \
                     line delete` removes the line"
                        .into(),
                ));
            }
            if let Some(psk) = p.preshared_key {
                if psk != wg.preshared_key.as_ref().map(PresharedKey::to_bytes) {
                    edit.preshared_key = Some(psk.map(PresharedKey::from_bytes));
                }
            }
            if let Some(ep) = p.endpoint {
                let now = status.as_ref().and_then(|s| s.endpoint);
                if Some(ep) != now {
                    if wg.mode == Mode::Server {
                        return Err(perm(format!(
                            "a server line learns its peer's endpoint from the peer's \
                             handshakes (now {}); set the endpoint on the client",
                            now.map_or("none yet".to_string(), |e| e.to_string())
                        )));
                    }
                    if ep.ip() != line.peer_ip {
                        return Err(perm(format!(
                            "endpoint {ep}: the line reaches its peer at {} (its routes and \
                             protection rule are for that address); to move it to {}, \
                             delete the line and create it with that <peer_ip>",
                            line.peer_ip,
                            ep.ip()
                        )));
                    }
                    edit.peer_port = Some(ep.port());
                }
            }
            if let Some(k) = p
                .persistent_keepalive
                .filter(|k| *k != wg.persistent_keepalive)
            {
                edit.persistent_keepalive = Some(k);
            }
            if p.replace_allowed_ips || !p.allowed_ips.is_empty() {
                let vip = host_prefix(line.peer_vip);
                let mut list = if p.replace_allowed_ips {
                    Vec::new()
                } else {
                    let mut l = vec![vip];
                    l.extend(wg.allowed_ips.iter().copied());
                    l
                };
                for (add, net) in &p.allowed_ips {
                    if *add {
                        if !list.contains(net) {
                            list.push(*net);
                        }
                    } else {
                        list.retain(|n| n != net);
                    }
                }
                if !list.contains(&vip) {
                    return Err(perm(format!(
                        "allowed-ips must keep {vip}, the peer's VIP on this line (list it \
                         first, e.g. allowed-ips {vip},192.0.2.0/24)"
                    )));
                }
                list.retain(|n| *n != vip);
                if list != wg.allowed_ips {
                    edit.allowed_ips = Some(list);
                }
            }
        }
        Ok(edit)
    }

    /// Runs line `name` (and the lines on it) with `new` in force, then writes `new`; a
    /// line that does not come up with it, or a file that cannot be written, puts the
    /// old configuration back.
    async fn apply_line_change(&mut self, name: &LineName, new: Config) -> Result<(), Refusal> {
        self.check_file_unchanged().map_err(|e| {
            let errno = match e {
                RequestError::FileEdited { .. } => Errno::BUSY,
                _ => Errno::IO,
            };
            Refusal::new(errno, e.to_string())
        })?;
        let diff = config::diff(&self.config, &new);
        for n in &diff.stop {
            self.take_down(n).await;
            self.failed.remove(n);
        }
        let old = std::mem::replace(&mut self.config, new);
        self.reconcile().await;
        let failure = match self.running.contains_key(name) {
            false => {
                let reason = self
                    .failed
                    .get(name)
                    .map_or_else(|| "starting".to_string(), |f| f.reason.clone());
                let errno = if reason.contains("in use") {
                    Errno::ADDRINUSE
                } else {
                    Errno::IO
                };
                Some(Refusal::new(
                    errno,
                    format!(
                        "the line did not come up with the change ({reason}); put back as it was"
                    ),
                ))
            }
            true => config::save(&self.config, &self.config_path)
                .err()
                .map(|e| Refusal::new(Errno::IO, format!("{e}; the line is put back as it was"))),
        };
        if let Some(refusal) = failure {
            for n in &diff.stop {
                self.take_down(n).await;
                self.failed.remove(n);
            }
            self.config = old;
            self.reconcile().await;
            return Err(refusal);
        }
        Ok(())
    }
}
