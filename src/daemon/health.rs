//! The exits' health as the daemon sees it: the probes it has the data plane send
//! (one per exit and target each interval, and those of `line check`), the replies and
//! losses it reads back into the pure room's [`Health`], what that says about each exit
//! of a group ([`ExitView`]), and changes of exits in words: logged, and the latest kept
//! for `status`.
//!
//! Rules: probe sequence numbers belong to the line (its probes to every target share
//! them); a probe the line cannot send now is lost at once; events are worded from what
//! the evaluation saw, not from later state.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::policy::{GroupKey, Spec};
use super::supervisor::Supervisor;
use crate::config::policy::Exit;
use crate::config::LineName;
use crate::control::{FailoverEvent, LineState};
use crate::dataplane::{Dataplane, RunningLine};
use crate::net::Host;
use crate::policy::{Change, ExitView, Health, Reason};

/// Failover events kept for `status`.
const EVENTS: usize = 32;

impl<H: Host, D: Dataplane> Supervisor<H, D> {
    /// The probe targets of one exit: the group's, or the line's peer VIP.
    pub(super) fn targets_of(&self, exit: &LineName, targets: &[IpAddr]) -> Vec<IpAddr> {
        if !targets.is_empty() {
            return targets.to_vec();
        }
        self.config
            .line(exit.as_str())
            .map(|l| vec![l.peer_vip])
            .unwrap_or_default()
    }

    /// What the daemon knows about each exit of `spec`, for the pure room.
    pub(super) fn exit_views(&self, spec: &Spec) -> Vec<ExitView> {
        spec.exits
            .iter()
            .map(|e| {
                let running = self.running.contains_key(&e.line);
                let up = running
                    && self
                        .config
                        .line(e.line.as_str())
                        .is_some_and(|l| self.state(l).0 == LineState::Up);
                let cost = self.config.policy.cost(e.line.as_str());
                let (mut any, mut all_dead, mut score) = (false, true, None);
                for t in self.targets_of(&e.line, &spec.targets) {
                    if let Some(v) = self
                        .policy
                        .paths
                        .get(&(e.line.clone(), t))
                        .map(|h| h.view(cost))
                        .filter(|v| v.samples > 0)
                    {
                        any = true;
                        all_dead &= v.dead;
                        score = score.max(v.score);
                    }
                }
                ExitView {
                    running,
                    up,
                    dead: any && all_dead,
                    score,
                }
            })
            .collect()
    }

    /// Replies the data plane took off the lines, and probes lost by now.
    pub(super) fn collect_replies(&mut self, now: Instant) {
        let running = &self.running;
        let mut seqs = Vec::with_capacity(64);
        let paths = self
            .policy
            .paths
            .iter_mut()
            .chain(self.policy.checks.iter_mut().flat_map(|c| c.paths_mut()));
        for ((line, _), health) in paths {
            if let Some(r) = running.get(line) {
                seqs.clear();
                seqs.extend(health.in_flight());
                for &seq in &seqs {
                    if let Some(at) = r.dataplane.probe_reply(seq) {
                        health.handle_reply(seq, at);
                    }
                }
            }
            health.handle_timeouts(now);
        }
    }

    /// A change's reasons in words, and whether it was forced (an exit down or dead,
    /// or none left).
    pub(super) fn describe(
        &self,
        exits: &[Exit],
        change: &Change,
        views: &[ExitView],
    ) -> (String, bool) {
        let name = |i: usize| exits.get(i).map_or("?".to_string(), |e| e.line.to_string());
        let score = |i: usize| {
            views
                .get(i)
                .and_then(|v| v.score)
                .map_or("unknown".to_string(), |s| s.to_string())
        };
        let tuning = self.config.policy.tuning;
        let mut fatal = false;
        let words: Vec<String> = change
            .reasons
            .iter()
            .map(|r| match *r {
                Reason::Initial if change.to.is_empty() => {
                    fatal = true;
                    "no exit line runs: its destinations are unreachable".to_string()
                }
                Reason::Initial => "first choice".to_string(),
                Reason::ExitDown(i) => {
                    fatal = true;
                    let why = exits
                        .get(i)
                        .and_then(|e| self.config.line(e.line.as_str()))
                        .filter(|l| self.running.contains_key(&l.name))
                        .map(|l| self.state(l))
                        .map_or("not running".to_string(), |(s, r)| match r {
                            Some(r) => format!("{s}: {r}"),
                            None => s.to_string(),
                        });
                    format!("{} is down ({why})", name(i))
                }
                Reason::ExitDead(i) => {
                    fatal = true;
                    format!("{} lost its last {} probes", name(i), tuning.lost_probes)
                }
                Reason::Better(i) => format!(
                    "{} scores {} against {}, more than {} better for {} checks",
                    name(i),
                    score(i),
                    change.from.first().map(|&c| score(c)).unwrap_or_default(),
                    tuning.threshold,
                    tuning.confirmations
                ),
                Reason::Failback(i) => {
                    format!(
                        "{} is preferred and healthy again (score {})",
                        name(i),
                        score(i)
                    )
                }
                Reason::Joined(i) => format!("{} is healthy again (score {})", name(i), score(i)),
                Reason::Left(i) => format!(
                    "{} scores {}, more than {} below the best",
                    name(i),
                    score(i),
                    tuning.threshold
                ),
            })
            .collect();
        (words.join("; "), fatal)
    }

    /// Logs a change of exits and keeps it for `status`.
    pub(super) fn record(
        &mut self,
        key: &GroupKey,
        from: Vec<String>,
        to: Vec<String>,
        reason: String,
        fatal: bool,
    ) {
        let event = FailoverEvent {
            unix_ms: unix_ms(),
            group: key.name().to_string(),
            from,
            to,
            reason,
        };
        if fatal {
            warn!(group = %event.group, from = ?event.from, to = ?event.to, reason = %event.reason, "failover");
        } else {
            info!(group = %event.group, from = ?event.from, to = ?event.to, reason = %event.reason, "exit changed");
        }
        if self.policy.events.len() == EVENTS {
            self.policy.events.pop_front();
        }
        self.policy.events.push_back(event);
    }

    /// The paths the installed groups probe, each exit toward each of its targets.
    fn wanted_paths(&self) -> Vec<(LineName, IpAddr)> {
        let mut out: Vec<(LineName, IpAddr)> = Vec::new();
        for inst in self.policy.installed.values() {
            for e in &inst.spec.exits {
                for t in self.targets_of(&e.line, &inst.spec.targets) {
                    let path = (e.line.clone(), t);
                    if !out.contains(&path) {
                        out.push(path);
                    }
                }
            }
        }
        out
    }

    /// The next probe of every path whose line runs.
    pub(super) fn send_probes(&mut self, now: Instant) {
        let wanted = self.wanted_paths();
        let tuning = self.config.policy.tuning;
        self.policy.paths.retain(|k, _| wanted.contains(k));
        for path in wanted {
            self.policy
                .paths
                .entry(path)
                .or_insert_with(|| Health::new(tuning));
        }
        let (running, seqs) = (&self.running, &mut self.policy.seqs);
        for ((line, target), health) in self.policy.paths.iter_mut() {
            let Some(r) = running.get(line) else {
                continue;
            };
            let seq = next_seq(seqs, line);
            health.handle_sent(seq, now);
            if let Err(e) = r.dataplane.send_probe(r.line.local_vip, *target, seq) {
                tracing::debug!(line = %line, %target, error = %e, "probe not sent");
                health.handle_unsent(seq);
            }
        }
    }

    /// Sends one probe of a `line check` on `line`; false when it could not go.
    pub(super) fn send_check_probe(
        &mut self,
        line: &LineName,
        target: IpAddr,
        health: &mut Health,
        now: Instant,
    ) -> bool {
        let Some(r) = self.running.get(line) else {
            return false;
        };
        let seq = next_seq(&mut self.policy.seqs, line);
        health.handle_sent(seq, now);
        let sent = r
            .dataplane
            .send_probe(r.line.local_vip, target, seq)
            .is_ok();
        if !sent {
            health.handle_unsent(seq);
        }
        sent
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
/// A line's next probe sequence number (random at first, so replies to a previous
/// daemon's probes are not taken for ours).
fn next_seq(seqs: &mut HashMap<LineName, u16>, line: &LineName) -> u16 {
    let seq = seqs.entry(line.clone()).or_insert_with(|| {
        let mut b = [0u8; 2];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        u16::from_le_bytes(b)
    });
    let now = *seq;
    *seq = now.wrapping_add(1);
    now
}
