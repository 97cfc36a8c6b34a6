//! Policy groups on the host: the supervisor installs each applied group (and the
//! default exit) as a rule and a table of routes, probes every exit line through the
//! data plane each interval, hands what the probes say to the pure room (`crate::policy`)
//! and installs its answers.
//!
//! Rules:
//! - make-before-break: a route changes exit by being replaced in one step; a group
//!   whose priority, source or destinations change gets its new routes and rules before
//!   the old ones go; removing a group removes its rules before its routes;
//! - a group always has a route for each destination, through its active exit, or
//!   `unreachable` when none of its lines runs: its traffic never falls through to the
//!   main table (and out of the underlay, in clear);
//! - every change of exits is an event: logged, and the latest kept for `status`;
//! - balancing groups need the multipath hash over ports: set while one is installed
//!   (and given back at shutdown).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::policy_requests::Check;
use super::supervisor::Supervisor;
use crate::config::policy::{Cidr, Exit, Source, DEFAULT_EXIT_PRIORITY};
use crate::config::{Config, LineName};
use crate::control::{FailoverEvent, LineState};
use crate::dataplane::{Dataplane, RunningLine};
use crate::net::{Family, Host, NetError, PolicyRoute, PolicyRule, RuleFrom, Via, MAIN_TABLE};
use crate::policy::{slots, Change, ExitView, Health, Mode, Reason, Selector};

/// Failover events kept for `status`.
const EVENTS: usize = 32;

/// A group, or the default exit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum GroupKey {
    Group(String),
    Default,
}

impl GroupKey {
    /// The name `status` shows (`default` for the default exit).
    pub fn name(&self) -> &str {
        match self {
            GroupKey::Group(n) => n,
            GroupKey::Default => "default",
        }
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupKey::Group(n) => write!(f, "policy group {n}"),
            GroupKey::Default => f.write_str("the default exit"),
        }
    }
}

/// What an applied group asks of the host, from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Spec {
    pub priority: u32,
    pub from: Source,
    pub cidrs: Vec<Cidr>,
    pub exits: Vec<Exit>,
    pub mode: Mode,
    pub targets: Vec<IpAddr>,
}

/// A group on the host: its choice, and exactly the rules and routes it installed.
pub(super) struct Installed {
    pub spec: Spec,
    pub selector: Selector,
    rules: Vec<PolicyRule>,
    routes: Vec<PolicyRoute>,
    /// Where every route of the group goes now.
    pub via: Via,
}

/// The supervisor's policy state.
#[derive(Default)]
pub(super) struct PolicyState {
    /// Probed paths: exit line and target.
    pub paths: HashMap<(LineName, IpAddr), Health>,
    /// Each line's next probe sequence number (its probes to every target share them).
    seqs: HashMap<LineName, u16>,
    pub installed: BTreeMap<GroupKey, Installed>,
    /// The latest failover events, oldest first.
    pub events: VecDeque<FailoverEvent>,
    /// The multipath hash policies (IPv4, IPv6) before twnode set them.
    hash_before: Option<[u8; 2]>,
    /// Groups that could not be installed, and why (logged once).
    failed: HashMap<GroupKey, String>,
    /// `line check`s under way.
    pub checks: Vec<Check>,
}

/// The groups the config wants on the host: the applied ones and the default exit.
pub(super) fn wanted(config: &Config) -> Vec<(GroupKey, Spec)> {
    let mut out: Vec<(GroupKey, Spec)> = config
        .policy
        .groups
        .iter()
        .filter(|g| g.exits.applied)
        .map(|g| {
            let spec = Spec {
                priority: g.priority,
                from: g.from.clone(),
                cidrs: g.cidrs.clone(),
                exits: g.exits.list.clone(),
                mode: g.exits.mode,
                targets: g.exits.targets.clone(),
            };
            (GroupKey::Group(g.name.clone()), spec)
        })
        .collect();
    if let Some(d) = config.policy.default_exit.as_ref().filter(|d| d.applied) {
        let v6 = d
            .list
            .first()
            .and_then(|e| config.line(e.line.as_str()))
            .is_some_and(|l| l.carries_ipv6());
        out.push((
            GroupKey::Default,
            Spec {
                priority: DEFAULT_EXIT_PRIORITY,
                from: Source::All,
                cidrs: vec![Cidr::everything(v6)],
                exits: d.list.clone(),
                mode: d.mode,
                targets: d.targets.clone(),
            },
        ));
    }
    out
}

/// The rules of a group: one per family of its destinations. The default exit's come
/// after a rule that looks up the main table without its default route, so the host's
/// own subnets and the administrator's specific routes stay where they are.
fn rules_for(key: &GroupKey, spec: &Spec) -> Vec<PolicyRule> {
    let mut families: Vec<Family> = Vec::new();
    for c in &spec.cidrs {
        let f = Family::of(c.addr);
        if !families.contains(&f) {
            families.push(f);
        }
    }
    let from = match &spec.from {
        Source::All => RuleFrom::All,
        Source::Prefix(c) => RuleFrom::Prefix(c.addr, c.prefix),
        Source::Iface(i) => RuleFrom::Iif(i.to_string()),
    };
    let mut rules = Vec::new();
    for family in families {
        if *key == GroupKey::Default {
            rules.push(PolicyRule {
                pref: spec.priority,
                family,
                from: from.clone(),
                table: MAIN_TABLE,
                suppress_default: true,
            });
        }
        rules.push(PolicyRule {
            pref: spec.priority,
            family,
            from: from.clone(),
            table: spec.priority,
            suppress_default: false,
        });
    }
    rules
}

fn routes_for(spec: &Spec, via: &Via) -> Vec<PolicyRoute> {
    spec.cidrs
        .iter()
        .map(|c| PolicyRoute {
            dst: c.addr,
            prefix: c.prefix,
            table: spec.priority,
            via: via.clone(),
        })
        .collect()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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

    /// Where a group's routes go with `active` exits.
    fn via_for(&self, spec: &Spec, active: &[usize]) -> Via {
        let ifindex = |i: usize| {
            spec.exits
                .get(i)
                .and_then(|e| self.running.get(&e.line))
                .map(|r| r.dataplane.ifindex())
        };
        match spec.mode {
            Mode::Failover => active
                .first()
                .and_then(|&i| ifindex(i))
                .map_or(Via::Unreachable, Via::Dev),
            Mode::Balance => {
                let weights: Vec<u32> = spec.exits.iter().map(|e| e.weight).collect();
                let hops: Vec<(u32, u32)> = slots::next_hops(&weights, active)
                    .into_iter()
                    .filter_map(|(i, w)| Some((ifindex(i)?, w)))
                    .collect();
                match hops.first() {
                    None => Via::Unreachable,
                    Some(&(first, _)) if hops.iter().all(|h| h.0 == first) => Via::Dev(first),
                    Some(_) => Via::Multipath(hops),
                }
            }
        }
    }

    /// Puts the host in line with the config's groups: installs the new ones, updates
    /// the changed ones (make-before-break), removes the ones deleted or revoked.
    pub(super) async fn sync_policy(&mut self) {
        let wanted = wanted(&self.config);
        let tuning = self.config.policy.tuning;
        for health in self.policy.paths.values_mut() {
            health.set_tuning(tuning);
        }
        let gone: Vec<GroupKey> = self
            .policy
            .installed
            .keys()
            .filter(|k| !wanted.iter().any(|(w, _)| w == *k))
            .cloned()
            .collect();
        for key in gone {
            self.uninstall_group(&key).await;
        }
        self.policy
            .failed
            .retain(|k, _| wanted.iter().any(|(w, _)| w == k));
        for (key, spec) in wanted {
            let result = match self.policy.installed.get(&key) {
                None => self.install_group(&key, spec).await,
                Some(i) if i.spec != spec => self.update_group(&key, spec).await,
                Some(_) => Ok(()),
            };
            match result {
                Ok(()) => {
                    self.policy.failed.remove(&key);
                }
                Err(e) => {
                    let e = e.to_string();
                    if self.policy.failed.get(&key) != Some(&e) {
                        warn!(group = key.name(), error = %e, "cannot install {key}; retrying every pass");
                    }
                    self.policy.failed.insert(key, e);
                }
            }
        }
        self.follow_multipath_hash();
    }

    /// How often exits are probed (and groups evaluated).
    pub fn probe_interval(&self) -> std::time::Duration {
        self.config.policy.tuning.interval
    }

    /// Why a group is not on the host, if it failed.
    pub(super) fn policy_failure(&self, key: &GroupKey) -> Option<&String> {
        self.policy.failed.get(key)
    }

    async fn install_group(&mut self, key: &GroupKey, spec: Spec) -> Result<(), NetError> {
        let tuning = self.config.policy.tuning;
        let mut selector = Selector::new(spec.mode, spec.exits.len());
        let views = self.exit_views(&spec);
        let change = selector.poll(&views, &tuning);
        let via = self.via_for(&spec, selector.active());
        let routes = routes_for(&spec, &via);
        let rules = rules_for(key, &spec);
        let mut done = Installed {
            spec,
            selector,
            rules: Vec::new(),
            routes: Vec::new(),
            via,
        };
        let result = async {
            for r in &routes {
                self.host.replace_route(r).await?;
                done.routes.push(r.clone());
            }
            for rule in &rules {
                match self.host.add_policy_rule(rule).await {
                    Ok(()) | Err(NetError::Exists { .. }) => done.rules.push(rule.clone()),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            for rule in &done.rules {
                let _ = self.host.del_policy_rule(rule).await;
            }
            for r in &done.routes {
                let _ = self.host.del_policy_route(r).await;
            }
            return Err(e);
        }
        info!(
            group = key.name(),
            priority = done.spec.priority,
            routes = done.routes.len(),
            "{key} installed"
        );
        if let Some(change) = change {
            let (reason, fatal) = self.describe(&done.spec.exits, &change, &views);
            let to = done
                .spec
                .exits
                .iter()
                .enumerate()
                .filter(|(i, _)| change.to.contains(i));
            let to = to.map(|(_, e)| e.line.to_string()).collect();
            self.record(key, Vec::new(), to, reason, fatal);
        }
        self.policy.installed.insert(key.clone(), done);
        Ok(())
    }

    /// A group whose spec changed: the current exits stay (by name) where they still
    /// are exits; new routes and rules go in before the old ones come out.
    async fn update_group(&mut self, key: &GroupKey, spec: Spec) -> Result<(), NetError> {
        let tuning = self.config.policy.tuning;
        let Some(old) = self.policy.installed.get(key) else {
            return Ok(());
        };
        let kept: Vec<usize> = old
            .selector
            .active()
            .iter()
            .filter_map(|&i| old.spec.exits.get(i))
            .filter_map(|e| spec.exits.iter().position(|n| n.line == e.line))
            .collect();
        let (old_rules, old_routes) = (old.rules.clone(), old.routes.clone());
        let old_exits = old.spec.exits.clone();
        let old_active: Vec<usize> = old.selector.active().to_vec();
        let mut selector = Selector::with_active(spec.mode, spec.exits.len(), kept);
        let views = self.exit_views(&spec);
        let change = if selector.active().is_empty() {
            selector.poll(&views, &tuning)
        } else {
            None
        };
        let via = self.via_for(&spec, selector.active());
        let routes = routes_for(&spec, &via);
        let rules = rules_for(key, &spec);
        for r in routes.iter().filter(|r| !old_routes.contains(r)) {
            self.host.replace_route(r).await?;
        }
        for rule in rules.iter().filter(|r| !old_rules.contains(r)) {
            match self.host.add_policy_rule(rule).await {
                Ok(()) | Err(NetError::Exists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for rule in old_rules.iter().filter(|r| !rules.contains(r)) {
            self.host.del_policy_rule(rule).await?;
        }
        let same_place = |a: &PolicyRoute, b: &PolicyRoute| {
            (a.dst, a.prefix, a.table) == (b.dst, b.prefix, b.table)
        };
        for r in old_routes
            .iter()
            .filter(|o| !routes.iter().any(|n| same_place(n, o)))
        {
            self.host.del_policy_route(r).await?;
        }
        let names = |exits: &[Exit], active: &[usize]| -> Vec<String> {
            active
                .iter()
                .filter_map(|&i| exits.get(i))
                .map(|e| e.line.to_string())
                .collect()
        };
        let (from, to) = (
            names(&old_exits, &old_active),
            names(&spec.exits, selector.active()),
        );
        info!(
            group = key.name(),
            priority = spec.priority,
            routes = routes.len(),
            "{key} updated"
        );
        if from != to {
            let (reason, fatal) = match &change {
                Some(c) => self.describe(&spec.exits, c, &views),
                None => ("its exits were changed".to_string(), false),
            };
            self.record(key, from, to, reason, fatal);
        }
        self.policy.installed.insert(
            key.clone(),
            Installed {
                spec,
                selector,
                rules,
                routes,
                via,
            },
        );
        Ok(())
    }

    async fn uninstall_group(&mut self, key: &GroupKey) {
        let Some(inst) = self.policy.installed.remove(key) else {
            return;
        };
        for rule in &inst.rules {
            if let Err(e) = self.host.del_policy_rule(rule).await {
                warn!(group = key.name(), error = %e, "could not remove a policy rule");
            }
        }
        for r in &inst.routes {
            if let Err(e) = self.host.del_policy_route(r).await {
                warn!(group = key.name(), error = %e, "could not remove a policy route");
            }
        }
        info!(group = key.name(), "{key} removed from the host");
    }

    /// Removes every group from the host (rules first) and gives back the multipath
    /// hash policy: the host as found.
    pub(super) async fn policy_shutdown(&mut self) {
        let keys: Vec<GroupKey> = self.policy.installed.keys().cloned().collect();
        for key in keys {
            self.uninstall_group(&key).await;
        }
        self.follow_multipath_hash();
    }

    /// One probe interval: read the replies, let each group choose, install the
    /// changes, send the next probes, and move `line check`s along.
    pub(super) async fn policy_tick(&mut self, now: Instant) {
        self.collect_replies(now);
        self.evaluate().await;
        self.send_probes(now);
        self.advance_checks(now);
    }

    /// Replies the data plane took off the lines, and probes lost by now.
    fn collect_replies(&mut self, now: Instant) {
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

    async fn evaluate(&mut self) {
        let tuning = self.config.policy.tuning;
        let keys: Vec<GroupKey> = self.policy.installed.keys().cloned().collect();
        for key in keys {
            let Some(inst) = self.policy.installed.get(&key) else {
                continue;
            };
            let views = self.exit_views(&inst.spec);
            let Some(inst) = self.policy.installed.get_mut(&key) else {
                continue;
            };
            let change = inst.selector.poll(&views, &tuning);
            let exits = inst.spec.exits.clone();
            let Some(inst) = self.policy.installed.get(&key) else {
                continue;
            };
            let via = self.via_for(&inst.spec, inst.selector.active());
            if via != inst.via {
                self.move_routes(&key, via).await;
            }
            if let Some(change) = change {
                let (reason, fatal) = self.describe(&exits, &change, &views);
                let names = |v: &[usize]| -> Vec<String> {
                    v.iter()
                        .filter_map(|&i| exits.get(i))
                        .map(|e| e.line.to_string())
                        .collect()
                };
                self.record(&key, names(&change.from), names(&change.to), reason, fatal);
            }
        }
    }

    /// Replaces every route of the group so it goes through `via` (one step each).
    async fn move_routes(&mut self, key: &GroupKey, via: Via) {
        let Some(inst) = self.policy.installed.get_mut(key) else {
            return;
        };
        for r in inst.routes.iter_mut() {
            let next = PolicyRoute {
                via: via.clone(),
                ..r.clone()
            };
            if let Err(e) = self.host.replace_route(&next).await {
                // Tried again at the next interval (the route's via stays the old one).
                warn!(group = key.name(), error = %e, "could not move a policy route");
                return;
            }
            *r = next;
        }
        inst.via = via;
    }

    /// A change's reasons in words, and whether it was forced (an exit down or dead,
    /// or none left).
    fn describe(&self, exits: &[Exit], change: &Change, views: &[ExitView]) -> (String, bool) {
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
    fn record(
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
    fn send_probes(&mut self, now: Instant) {
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

    /// Sets the multipath hash over ports while a balancing group is installed, and
    /// gives back what was there when none is.
    fn follow_multipath_hash(&mut self) {
        let balancing = self
            .policy
            .installed
            .values()
            .any(|i| i.spec.mode == Mode::Balance);
        match (balancing, self.policy.hash_before) {
            (true, None) => match self.host.set_multipath_hash([1, 1]) {
                Ok(old) => {
                    info!(before = ?old, "multipath hash set to addresses and ports (fib_multipath_hash_policy=1) for balancing");
                    self.policy.hash_before = Some(old);
                }
                Err(e) => {
                    warn!(error = %e, "cannot set fib_multipath_hash_policy=1: balancing groups spread host pairs, not flows");
                    // Not tried again every pass.
                    self.policy.hash_before = Some([1, 1]);
                }
            },
            (false, Some(old)) => {
                if old != [1, 1] {
                    if let Err(e) = self.host.set_multipath_hash(old) {
                        warn!(error = %e, "cannot put fib_multipath_hash_policy back");
                    }
                }
                self.policy.hash_before = None;
            }
            _ => {}
        }
    }
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
