//! The control requests of policy routing: `policy ...`, `line set-cost`, `line check`
//! (answered once its probes are back), `twnode status`, and what `line delete` must do
//! about groups that use the line.
//!
//! Rules: as every request, a refused one changes nothing. A change is made on the
//! config's raw policy, validated with the config's own rules, written to the file, and
//! only then installed (make-before-break).

use std::net::IpAddr;
use std::time::Instant;

use tokio::sync::oneshot;

use super::error::RequestError;
use super::policy::GroupKey;
use super::supervisor::Supervisor;
use crate::config::policy::{
    Cidr, Exits, RawDefaultExit, RawGroup, RawPolicy, MAX_PRIORITY, MIN_PRIORITY,
};
use crate::config::{self, LineName};
use crate::control::{
    CheckResult, ExitStatus, GroupStatus, HealthStatus, LineHealth, NodeStatus, PolicyRequest,
    PolicyStatus, Request, Response,
};
use crate::dataplane::Dataplane;
use crate::net::{Host, Via};
use crate::policy::{Health, HealthView, Mode, Tuning};

/// Probes a `line check` sends to each target, one per interval.
pub const CHECK_PROBES: u32 = 10;

/// A `line check` under way: its paths, what could not be checked, and who waits.
pub(super) struct Check {
    reply: oneshot::Sender<Response>,
    lines: Vec<LineName>,
    paths: Vec<((LineName, IpAddr), Health)>,
    notes: Vec<(LineName, String)>,
    sent: u32,
}

impl Check {
    /// The check's probed paths, for reading their replies.
    pub fn paths_mut(&mut self) -> impl Iterator<Item = (&(LineName, IpAddr), &mut Health)> {
        self.paths.iter_mut().map(|(k, h)| (&*k, h))
    }
}

fn health_status(target: IpAddr, v: &HealthView, cost: u8) -> HealthStatus {
    HealthStatus {
        target,
        samples: v.samples,
        loss_percent: v.loss_percent,
        latency_ms: v.latency_ms,
        score: v.score.map(|s| s.points()),
        dead: v.dead,
        lost_in_a_row: v.lost_in_a_row,
        cost,
    }
}

impl<H: Host, D: Dataplane> Supervisor<H, D> {
    /// Takes a request that is answered later (`line check`, once its probes are back);
    /// gives any other back to be handled now.
    pub fn defer(
        &mut self,
        request: Request,
        reply: oneshot::Sender<Response>,
    ) -> Option<(Request, oneshot::Sender<Response>)> {
        let Request::CheckLines { line, targets } = request else {
            return Some((request, reply));
        };
        let lines: Vec<LineName> = match &line {
            Some(name) => match self.config.line(name) {
                Some(l) => vec![l.name.clone()],
                None => {
                    let e = RequestError::NoSuchLine { name: name.clone() };
                    let _ = reply.send(Response::Error {
                        message: e.to_string(),
                    });
                    return None;
                }
            },
            None => self
                .config
                .ordered()
                .iter()
                .map(|l| l.name.clone())
                .collect(),
        };
        let tuning = Tuning {
            window: CHECK_PROBES,
            ..self.config.policy.tuning
        };
        let mut check = Check {
            reply,
            lines: lines.clone(),
            paths: Vec::new(),
            notes: Vec::new(),
            sent: 0,
        };
        for name in lines {
            let Some(r) = self.running.get(&name) else {
                let why = self
                    .failed
                    .get(&name)
                    .map_or("starting".to_string(), |f| f.reason.clone());
                check.notes.push((name, format!("not running: {why}")));
                continue;
            };
            let want: Vec<IpAddr> = if targets.is_empty() {
                vec![r.line.peer_vip]
            } else {
                targets.clone()
            };
            for t in want {
                if t.is_ipv4() != r.line.local_vip.is_ipv4() {
                    check.notes.push((
                        name.clone(),
                        format!(
                            "target {t} is not of the family of its VIP {}",
                            r.line.local_vip
                        ),
                    ));
                    continue;
                }
                check.paths.push(((name.clone(), t), Health::new(tuning)));
            }
        }
        self.policy.checks.push(check);
        None
    }

    /// Sends the next probe of every check, and answers those whose probes are all
    /// back or lost.
    pub(super) fn advance_checks(&mut self, now: Instant) {
        let checks = std::mem::take(&mut self.policy.checks);
        for mut check in checks {
            if check.sent < CHECK_PROBES && !check.paths.is_empty() {
                for ((line, target), health) in check.paths.iter_mut() {
                    self.send_check_probe(line, *target, health, now);
                }
                check.sent += 1;
                self.policy.checks.push(check);
                continue;
            }
            if check
                .paths
                .iter()
                .any(|(_, h)| h.in_flight().next().is_some())
            {
                self.policy.checks.push(check);
                continue;
            }
            let results = check
                .lines
                .iter()
                .map(|name| {
                    let cost = self.config.policy.cost(name.as_str());
                    CheckResult {
                        line: name.to_string(),
                        targets: check
                            .paths
                            .iter()
                            .filter(|((l, _), _)| l == name)
                            .map(|((_, t), h)| health_status(*t, &h.view(cost), cost))
                            .collect(),
                        note: check
                            .notes
                            .iter()
                            .filter(|(l, _)| l == name)
                            .map(|(_, n)| n.clone())
                            .reduce(|a, b| format!("{a}; {b}")),
                    }
                })
                .collect();
            let _ = check.reply.send(Response::Checked { results });
        }
    }

    /// `policy ...`.
    pub(super) async fn policy_request(
        &mut self,
        request: PolicyRequest,
    ) -> Result<Response, RequestError> {
        if request == PolicyRequest::List {
            return Ok(Response::Policy(self.policy_status()));
        }
        self.check_file_unchanged()?;
        let mut raw = self.config.policy.to_raw();
        let mut messages = edit(&mut raw, request)?;
        self.commit_policy(&raw).await?;
        for g in &raw.groups {
            if let Some(e) = self.policy_failure(&GroupKey::Group(g.name.clone())) {
                messages.push(format!(
                    "warning: group {} is not installed yet: {e}",
                    g.name
                ));
            }
        }
        Ok(Response::Done { messages })
    }

    /// `line set-cost <line> <cost>`.
    pub(super) async fn set_cost(
        &mut self,
        line: &str,
        cost: u32,
    ) -> Result<Response, RequestError> {
        let name = self
            .config
            .line(line)
            .map(|l| l.name.to_string())
            .ok_or_else(|| RequestError::NoSuchLine { name: line.into() })?;
        self.check_file_unchanged()?;
        let mut raw = self.config.policy.to_raw();
        let failover = raw.failover.get_or_insert_with(Default::default);
        if cost == 0 {
            failover.cost.remove(&name);
        } else {
            failover.cost.insert(name.clone(), cost);
        }
        self.commit_policy(&raw).await?;
        Ok(Response::Done {
            messages: vec![format!(
                "line {name}: cost {cost} (its score loses {} points)",
                f64::from(cost) / 2.0
            )],
        })
    }

    /// Validates `raw` as the new policy, writes the file, installs it.
    async fn commit_policy(&mut self, raw: &RawPolicy) -> Result<(), RequestError> {
        let new = self.config.with_policy(raw).map_err(RequestError::Config)?;
        config::save(&new, &self.config_path).map_err(RequestError::NothingChanged)?;
        self.config = new;
        self.sync_policy().await;
        Ok(())
    }

    /// The raw policy with the lines in `doomed` taken out of every group that uses
    /// them (`force`), or why they cannot go.
    pub(super) fn release_exits(
        &self,
        doomed: &[LineName],
        force: bool,
    ) -> Result<Option<RawPolicy>, RequestError> {
        let users: Vec<(String, String)> = doomed
            .iter()
            .flat_map(|l| {
                self.config
                    .policy
                    .users_of(l.as_str())
                    .into_iter()
                    .map(move |g| (l.to_string(), g))
            })
            .collect();
        if users.is_empty() {
            return Ok(None);
        }
        if !force {
            return Err(RequestError::UsedByPolicy {
                lines: users
                    .iter()
                    .map(|(l, g)| format!("{l} (group {g})"))
                    .collect(),
            });
        }
        let mut raw = self.config.policy.to_raw();
        let keep = |exits: &mut Vec<String>, group: &str| {
            exits.retain(|e| {
                let name = e.split(':').next().unwrap_or(e);
                !doomed.iter().any(|d| d.as_str() == name)
            });
            if exits.is_empty() {
                Err(RequestError::NoOtherExit {
                    group: group.to_string(),
                })
            } else {
                Ok(())
            }
        };
        for g in raw.groups.iter_mut() {
            keep(&mut g.exits, &g.name)?;
        }
        if let Some(d) = raw.default_exit.as_mut() {
            keep(&mut d.exits, "default")?;
        }
        Ok(Some(raw))
    }

    /// `policy list`'s view.
    pub(super) fn policy_status(&self) -> PolicyStatus {
        let groups = self
            .config
            .policy
            .groups
            .iter()
            .map(|g| {
                self.group_status(
                    &GroupKey::Group(g.name.clone()),
                    &g.exits,
                    g.priority,
                    g.from.to_string(),
                    g.cidrs.iter().map(Cidr::to_string).collect(),
                )
            })
            .collect();
        let default_exit = self.config.policy.default_exit.as_ref().map(|d| {
            let v6 = d
                .list
                .first()
                .and_then(|e| self.config.line(e.line.as_str()))
                .is_some_and(|l| l.carries_ipv6());
            self.group_status(
                &GroupKey::Default,
                d,
                config::policy::DEFAULT_EXIT_PRIORITY,
                "all".into(),
                vec![Cidr::everything(v6).to_string()],
            )
        });
        PolicyStatus {
            groups,
            default_exit,
            events: self.policy.events.iter().cloned().collect(),
        }
    }

    fn group_status(
        &self,
        key: &GroupKey,
        exits: &Exits,
        priority: u32,
        from: String,
        cidrs: Vec<String>,
    ) -> GroupStatus {
        let installed = self.policy.installed.get(key);
        let exit_status = exits
            .list
            .iter()
            .enumerate()
            .map(|(i, e)| ExitStatus {
                line: e.line.to_string(),
                weight: e.weight,
                active: installed.is_some_and(|inst| inst.selector.active().contains(&i)),
                health: self.best_health(&e.line, &exits.targets),
            })
            .collect();
        let note = match installed {
            None if !exits.applied => None,
            None => Some(
                self.policy_failure(key)
                    .cloned()
                    .unwrap_or_else(|| "not installed yet".into()),
            ),
            Some(i) if i.via == Via::Unreachable => {
                Some("no exit line runs: its destinations are unreachable".into())
            }
            Some(_) => None,
        };
        GroupStatus {
            name: key.name().to_string(),
            mode: match exits.mode {
                Mode::Failover => "failover",
                Mode::Balance => "balance",
            }
            .into(),
            priority,
            from,
            cidrs,
            exits: exit_status,
            applied: exits.applied,
            installed: installed.is_some(),
            note,
        }
    }

    /// The best-scoring of a line's probed paths toward `targets` (or its peer VIP).
    fn best_health(&self, line: &LineName, targets: &[IpAddr]) -> Option<HealthStatus> {
        let cost = self.config.policy.cost(line.as_str());
        self.targets_of(line, targets)
            .into_iter()
            .filter_map(|t| {
                let v = self.policy.paths.get(&(line.clone(), t))?.view(cost);
                Some(health_status(t, &v, cost))
            })
            .max_by(|a, b| {
                a.score
                    .partial_cmp(&b.score)
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
    }

    /// `twnode status`'s view.
    pub(super) fn node_status(&self) -> NodeStatus {
        let lines = self
            .config
            .ordered()
            .into_iter()
            .map(|l| {
                let cost = self.config.policy.cost(l.name.as_str());
                let mut health: Vec<HealthStatus> = self
                    .policy
                    .paths
                    .iter()
                    .filter(|((name, _), _)| *name == l.name)
                    .map(|((_, t), h)| health_status(*t, &h.view(cost), cost))
                    .collect();
                health.sort_by_key(|h| h.target);
                LineHealth {
                    line: self.status(l),
                    health,
                    cost,
                }
            })
            .collect();
        NodeStatus {
            lines,
            policy: self.policy_status(),
        }
    }
}

/// Applies one `policy ...` command to the raw policy; the messages say what it did.
fn edit(raw: &mut RawPolicy, request: PolicyRequest) -> Result<Vec<String>, RequestError> {
    let no_group = |name: &str| RequestError::NoSuchGroup { name: name.into() };
    let find = |raw: &mut RawPolicy, name: &str| -> Result<usize, RequestError> {
        raw.groups
            .iter()
            .position(|g| g.name == name)
            .ok_or_else(|| no_group(name))
    };
    Ok(match request {
        PolicyRequest::List => Vec::new(),
        PolicyRequest::Create {
            group,
            exits,
            from,
            priority,
        } => {
            if raw.groups.iter().any(|g| g.name == group) {
                return Err(RequestError::GroupExists { name: group });
            }
            let priority = match priority {
                Some(p) => p,
                None => {
                    let next = raw
                        .groups
                        .iter()
                        .map(|g| g.priority + 1)
                        .max()
                        .unwrap_or(MIN_PRIORITY)
                        .max(MIN_PRIORITY);
                    if next > MAX_PRIORITY {
                        return Err(RequestError::NoFreePriority);
                    }
                    next
                }
            };
            raw.groups.push(RawGroup {
                name: group.clone(),
                exits: exits.clone(),
                from,
                priority,
                cidrs: Vec::new(),
                applied: true,
                targets: Vec::new(),
            });
            vec![format!(
                "policy group {group} created (priority {priority}, exits {}); add destinations \
                 with `twnode policy add {group} <cidr>...`",
                exits.join(",")
            )]
        }
        PolicyRequest::Add { group, cidrs } => {
            let i = find(raw, &group)?;
            let g = &mut raw.groups[i];
            let (mut added, mut present) = (0, 0);
            for c in cidrs {
                let have = c
                    .parse::<Cidr>()
                    .ok()
                    .is_some_and(|c| g.cidrs.iter().any(|o| o.parse::<Cidr>().ok() == Some(c)));
                if have {
                    present += 1;
                } else {
                    g.cidrs.push(c);
                    added += 1;
                }
            }
            let also = if present > 0 {
                format!(" ({present} already there)")
            } else {
                String::new()
            };
            vec![format!(
                "{added} destination(s) added to group {group}{also}"
            )]
        }
        PolicyRequest::Remove { group, cidrs } => {
            let i = find(raw, &group)?;
            let g = &mut raw.groups[i];
            for c in &cidrs {
                let parsed = c.parse::<Cidr>().map_err(|e| RequestError::BadCidr {
                    group: group.clone(),
                    message: e,
                })?;
                let before = g.cidrs.len();
                g.cidrs.retain(|o| o.parse::<Cidr>().ok() != Some(parsed));
                if g.cidrs.len() == before {
                    return Err(RequestError::NotInGroup {
                        group: group.clone(),
                        cidr: parsed.to_string(),
                    });
                }
            }
            vec![format!(
                "{} destination(s) removed from group {group}",
                cidrs.len()
            )]
        }
        PolicyRequest::Default { exit } => {
            let targets = raw
                .default_exit
                .take()
                .map(|d| d.targets)
                .unwrap_or_default();
            raw.default_exit = Some(RawDefaultExit {
                exits: vec![exit.clone()],
                applied: true,
                targets,
            });
            vec![format!("default exit: {exit}")]
        }
        PolicyRequest::UnsetDefault => {
            if raw.default_exit.take().is_none() {
                return Err(RequestError::NoDefaultExit);
            }
            vec!["default exit unset".into()]
        }
        PolicyRequest::Apply { group } => set_applied(raw, group, true)?,
        PolicyRequest::Revoke { group } => set_applied(raw, group, false)?,
        PolicyRequest::SetPriority { group, priority } => {
            let i = find(raw, &group)?;
            let old = raw.groups[i].priority;
            raw.groups[i].priority = priority;
            vec![format!("group {group}: priority {old} -> {priority}")]
        }
        PolicyRequest::Delete { group } => {
            let i = find(raw, &group)?;
            raw.groups.remove(i);
            vec![format!("policy group {group} deleted")]
        }
        PolicyRequest::Failover { group, exits } => {
            if group == "default" {
                match raw.default_exit.as_mut() {
                    Some(d) => d.exits = exits.clone(),
                    None => {
                        raw.default_exit = Some(RawDefaultExit {
                            exits: exits.clone(),
                            applied: true,
                            targets: Vec::new(),
                        })
                    }
                }
            } else {
                let i = find(raw, &group)?;
                raw.groups[i].exits = exits.clone();
            }
            vec![format!("{group}: exits {}", exits.join(","))]
        }
    })
}

/// `policy apply` / `revoke`: one group, `default`, or (without a name) all of them.
fn set_applied(
    raw: &mut RawPolicy,
    group: Option<String>,
    applied: bool,
) -> Result<Vec<String>, RequestError> {
    let verb = if applied { "applied" } else { "revoked" };
    match group.as_deref() {
        None => {
            let mut messages = Vec::new();
            for g in raw.groups.iter_mut() {
                g.applied = applied;
                messages.push(format!("group {} {verb}", g.name));
            }
            if let Some(d) = raw.default_exit.as_mut() {
                d.applied = applied;
                messages.push(format!("default exit {verb}"));
            }
            if messages.is_empty() {
                messages.push("no policy groups and no default exit".into());
            }
            Ok(messages)
        }
        Some("default") => {
            let d = raw
                .default_exit
                .as_mut()
                .ok_or(RequestError::NoDefaultExit)?;
            d.applied = applied;
            Ok(vec![format!("default exit {verb}")])
        }
        Some(name) => {
            let g = raw
                .groups
                .iter_mut()
                .find(|g| g.name == name)
                .ok_or_else(|| RequestError::NoSuchGroup { name: name.into() })?;
            g.applied = applied;
            Ok(vec![format!("group {name} {verb}")])
        }
    }
}
