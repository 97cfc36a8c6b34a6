//! The daemon: loads the config, serves the control socket, keeps every configured line
//! up, reloads on SIGHUP, and on SIGTERM removes everything it created and exits 0.
//!
//! Rules: one task (this loop) owns the [`Supervisor`]; control requests, signals and
//! the retry tick are handled one at a time, so no state is shared between them.
//!
//! The supervisor's jobs, one file each: the life of lines ([`supervisor`]), control
//! requests (`requests`), status views (`status`), the host objects lines install
//! (`objects`), following parents and next hops (`follow`), restart back-off
//! (`restarts`), policy groups (`policy`, `policy_requests`) and their exits' health
//! probes (`health`), on their own clock: every probe interval; refusals are
//! [`RequestError`]s.

mod error;
mod follow;
mod health;
pub mod lock;
mod metrics;
mod objects;
mod policy;
mod policy_requests;
pub mod privileges;
mod requests;
mod restarts;
mod status;
pub mod supervisor;
#[cfg(test)]
mod tests;
mod uapi;

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::esp::Keying;
use crate::config::{self, ConfigError, LineName};
use crate::control::metrics_server::MetricsServer;
use crate::control::server::Server;
use crate::control::uapi_server::UapiSockets;
use crate::control::ControlError;
use crate::dataplane::seqstore::StateDirLock;
use crate::dataplane::Devices;
use crate::net::{NetError, Netlink};
pub use error::RequestError;
pub use supervisor::Supervisor;

/// How often lines that are down are tried again (and states are logged).
pub const RETRY: Duration = Duration::from_secs(2);

/// Default state directory (systemd's `StateDirectory=twnode`): ESP sequence-number
/// marks of static-keyed lines, and the lock that keeps a second daemon out.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/twnode";

/// Where the daemon finds its files.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub control: PathBuf,
    /// Durable state: ESP sequence-number marks (created 0700 when first needed),
    /// locked for the daemon's life.
    pub state_dir: PathBuf,
    /// Where WireGuard lines' UAPI sockets go (`wg show`/`wg set`; created 0700).
    pub uapi_dir: PathBuf,
    /// Static-keyed ESP lines allowed to start once without their sequence-number
    /// mark (`--esp-fresh-state`).
    pub esp_fresh_state: Vec<LineName>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration did not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The control socket could not be served.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// Netlink is not available.
    #[error("netlink: {0}")]
    Net(#[from] NetError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    /// Another daemon owns this network namespace's objects (or the lock could not be
    /// taken); nothing was touched.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// The state directory is another daemon's, or cannot be locked.
    #[error(transparent)]
    StateDir(#[from] crate::dataplane::DataplaneError),
    /// `--esp-fresh-state` names a line that is not a static-keyed encrypted line.
    #[error("--esp-fresh-state {name}: {why}; it applies to lines with --esp-keying static")]
    FreshState {
        /// The line named.
        name: LineName,
        /// What the line is instead.
        why: String,
    },
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> Result<(), DaemonError> {
    // First of all: a second daemon must not purge the running one's rules and routes
    // (its traffic would leave in clear), nor replace its control socket.
    let lock = lock::HostLock::acquire()?;
    let config = config::load(&opts.config)?;
    for name in &opts.esp_fresh_state {
        let why = match config.line(name.as_str()) {
            None => "no such line in the configuration".to_string(),
            Some(l) => match l.ip_tunnel().and_then(|t| t.esp) {
                None => "the line is not encrypted".to_string(),
                Some(e) if e.keying != Keying::Static => {
                    format!("the line uses {} keying, which keeps no state", e.keying)
                }
                Some(_) => continue,
            },
        };
        return Err(DaemonError::FreshState {
            name: name.clone(),
            why,
        });
    }
    // Before anything touches the host: a second daemon on this directory would also
    // purge the first one's routes below.
    let _state_lock = StateDirLock::acquire(&opts.state_dir)?;
    info!(config = %opts.config.display(), lines = config.lines.len(), lock = lock.name(),
          "twnode starting");
    privileges::log_dropped();
    let host = Netlink::connect()?;
    match host.purge_stale().await {
        Ok(0) => {}
        Ok(n) => warn!(
            removed = n,
            "removed routes and rules left by a previous twnode run"
        ),
        Err(e) => warn!(error = %e, "could not look for stale routes and rules"),
    }
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;

    let server = Server::bind(&opts.control)?;
    let (calls_tx, mut calls) = mpsc::channel(64);
    let serving = tokio::spawn(server.serve(calls_tx));
    let (uapi_tx, mut uapi_calls) = mpsc::channel(64);
    let mut uapi = UapiSockets::new(opts.uapi_dir.clone(), uapi_tx);
    let (metrics_tx, mut metrics_calls) = mpsc::channel(16);
    let mut metrics = MetricsServer::new(metrics_tx);

    let mut sup = Supervisor::new(host, Devices::new(), opts.config.clone(), config)
        .with_state_dir(opts.state_dir.clone());
    for name in &opts.esp_fresh_state {
        warn!(line = %name, "--esp-fresh-state: the line's static ESP keys may start from \
              sequence number 1 if its mark is missing; nonces may repeat if it sent before");
        sup.allow_fresh_esp(name.clone());
    }
    sup.reconcile().await;
    uapi.sync(&sup.wireguard_lines());
    metrics.sync(sup.metrics_config());
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    info!(control = %opts.control.display(), lines = sup.configured(), "twnode ready");

    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probe = probe_ticker(&sup);
    let mut states = sup.states();
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                info!("SIGHUP: reloading {}", opts.config.display());
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                let _ = sup.reload().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
            Some((request, reply)) = calls.recv() => {
                if let Some((request, reply)) = sup.defer(request, reply) {
                    let response = sup.handle(request).await;
                    // A line's UAPI socket is there when `line create` returns.
                    uapi.sync(&sup.wireguard_lines());
                    let _ = reply.send(response);
                }
            }
            _ = probe.tick() => {
                sup.policy_tick(std::time::Instant::now()).await;
            }
            Some(reply) = metrics_calls.recv() => {
                let _ = reply.send(sup.metrics_snapshot());
            }
            Some((request, reply)) = uapi_calls.recv() => {
                let answer = sup.handle_uapi(request).await;
                let _ = reply.send(answer);
            }
            _ = retry.tick() => {
                sup.reconcile().await;
                let now = sup.states();
                for (name, state) in &now {
                    if states.get(name) != Some(state) {
                        info!(line = %name, state = %state, "line state changed");
                    }
                }
                states = now;
            }
        }
        // A reload or a request may have changed the probe interval.
        if probe.period() != sup.probe_interval() {
            probe = probe_ticker(&sup);
        }
        // Each line's UAPI socket comes and goes with the line; the metrics endpoint
        // follows a reload.
        uapi.sync(&sup.wireguard_lines());
        metrics.sync(sup.metrics_config());
    }
    drop(uapi);
    drop(metrics);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    serving.abort();
    let _ = serving.await;
    sup.shutdown().await;
    info!("twnode stopped; everything it created is removed");
    drop(lock);
    Ok(())
}

/// The policy groups' probe clock, at the configured interval.
fn probe_ticker(sup: &Supervisor) -> tokio::time::Interval {
    let mut probe = tokio::time::interval(sup.probe_interval());
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe
}

/// Logs a fatal start-up error in the daemon's voice.
pub fn report(e: &DaemonError) {
    error!("{e}");
}
