//! An IP tunnel line's tokio tasks: `keepalive` (probes on a tick, and the liveness
//! they report) and, for an encrypted line, its ESP task: with epoch keying `hello`,
//! which sends the core's Hellos (on the tick, and when a received Hello asks for an
//! answer) with fresh nonces from the system's random source; with static keying
//! `reserve`, which keeps the ESP sequence-number mark on disk ahead of the numbers sent
//! and the replay floor of the inbound SA not far behind the numbers received
//! ([`super::super::seqstore`]). Both are woken by the packet paths when the core asks;
//! the packet paths themselves never write a file. No lock is held across an `.await`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::super::seqstore::SeqStore;
use super::super::setup::fresh_nonce;
use super::super::socket;
use super::outbound::LineIo;
use crate::tunnel::esp::{EspCore, EspStatus};
use crate::tunnel::keepalive::Liveness;
use crate::tunnel::{Action, DropReason};
use crate::wire;

/// How often keepalives are polled.
pub(super) const TICK: Duration = Duration::from_millis(250);
/// Room for a keepalive probe: two IPv6 headers and two full GRE headers fit.
const PROBE_SLOT: usize = 160;

/// ESP: writes sequence-number reservations when the core asks, then hands them to
/// the core. The file is written on a blocking thread, never under the core's lock.
pub(super) async fn reserve(io: Arc<LineIo>, store: SeqStore, floor: SeqStore) {
    let Some(wake) = &io.reserve else {
        return;
    };
    loop {
        let (want, want_floor) = {
            let core = io.lock();
            let e = core.esp();
            (
                e.and_then(EspCore::poll_reservation),
                e.and_then(EspCore::poll_replay_floor),
            )
        };
        if let Some(top) = want_floor {
            let s = floor.clone();
            match tokio::task::spawn_blocking(move || s.store(top)).await {
                Ok(Ok(())) => {
                    if let Some(e) = io.lock().esp_mut() {
                        e.handle_replay_floor_stored(top);
                    }
                }
                _ => {
                    warn!(line = %io.name, path = %floor.path().display(),
                          "cannot write the ESP replay floor; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let Some(mark) = want else {
            if want_floor.is_none() {
                wake.notified().await;
            }
            continue;
        };
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.store(mark)).await {
            Ok(Ok(())) => {
                debug!(line = %io.name, mark, "ESP sequence numbers reserved");
                if let Some(e) = io.lock().esp_mut() {
                    e.handle_reserved(mark);
                }
            }
            Ok(Err(e)) => {
                warn!(line = %io.name, path = %store.path().display(), error = %e,
                      "cannot write the ESP sequence-number mark; sending stops when the \
                       reserved numbers run out");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// ESP epoch keying: sends the line's Hellos when its core has one due (checked on the
/// tick, and at once when a received Hello asks for an answer), and logs each new
/// epoch (SPIs only: the keys never leave the core).
pub(super) async fn hello(io: Arc<LineIo>) {
    let Some(wake) = &io.reserve else {
        return;
    };
    let rng = ring::rand::SystemRandom::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = [0u8; PROBE_SLOT + wire::esp_hello::HELLO_LEN];
    let mut epochs = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        loop {
            let (hello, status) = {
                let mut core = io.lock();
                let now = Instant::now();
                let hello = match core.poll_esp_hello(now, || fresh_nonce(&rng), &mut buf) {
                    Action::WriteToNetwork(p) => Some(p.len()),
                    Action::Drop(r) => {
                        io.stats.count_drop(r, 1);
                        None
                    }
                    Action::Done | Action::WriteToTun(_) => None,
                };
                (hello, core.esp().map(|e| e.status(now)))
            };
            if let Some(EspStatus {
                spi_out: Some(out),
                spi_in: Some(inb),
                epoch: Some(e),
                ..
            }) = status
            {
                if e.epochs != epochs {
                    epochs = e.epochs;
                    info!(line = %io.name, epoch = epochs, spi_out = format_args!("{out:#010x}"),
                          spi_in = format_args!("{inb:#010x}"), "ESP epoch agreed with the peer");
                }
            }
            let Some(len) = hello else {
                break;
            };
            if socket::send_one(&io.socket, &buf[..len], io.peer).is_err() {
                io.stats.count_drop(DropReason::IoError, 1);
            }
        }
    }
}

/// Keepalive probes, and the liveness they report.
pub(super) async fn keepalive(io: Arc<LineIo>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = [0u8; PROBE_SLOT];
    let mut was = None;
    loop {
        tick.tick().await;
        let (probe, liveness) = {
            let mut core = io.lock();
            let now = Instant::now();
            let probe = match core.poll_keepalive(now, &mut buf) {
                Action::WriteToNetwork(p) => Some(p.len()),
                Action::Drop(r) => {
                    io.stats.count_drop(r, 1);
                    None
                }
                Action::Done | Action::WriteToTun(_) => None,
            };
            (probe, core.keepalive_status(now).map(|k| k.liveness))
        };
        if let Some(len) = probe {
            if socket::send_one(&io.socket, &buf[..len], io.peer).is_err() {
                io.stats.count_drop(DropReason::IoError, 1);
            }
        }
        if liveness != was {
            match liveness {
                Some(Liveness::Up) => {
                    info!(line = %io.name, "the peer answers (its traffic or a keepalive reply), line up")
                }
                Some(Liveness::Down) => {
                    warn!(line = %io.name, "keepalive probes unanswered, line down")
                }
                _ => {}
            }
            was = liveness;
        }
    }
}
