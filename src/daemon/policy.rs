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
//! - every change of exits is an event: logged, and the latest kept for `status` (in
//!   words by `health.rs`, which also sends and reads the probes);
//! - balancing groups need the multipath hash over ports: set while one is installed
//!   (and given back at shutdown).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::Instant;

use tracing::{info, warn};

use super::policy_requests::Check;
use super::supervisor::Supervisor;
use crate::config::policy::{Cidr, Exit, Source, DEFAULT_EXIT_PRIORITY};
use crate::config::{Config, LineName};
use crate::control::FailoverEvent;
use crate::dataplane::{Dataplane, RunningLine};
use crate::net::{
    Family, Host, NetError, PolicyRoute, PolicyRule, RuleFrom, Via, FALLBACK_METRIC, MAIN_TABLE,
};
use crate::policy::{slots, Health, Mode, Selector};

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
    pub seqs: HashMap<LineName, u16>,
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

/// A group's routes: per destination the active one through `via`, and under it an
/// `unreachable` fallback for the moment the active one goes with its device.
fn routes_for(spec: &Spec, via: &Via) -> Vec<PolicyRoute> {
    let route = |c: &Cidr, via: &Via, metric| PolicyRoute {
        dst: c.addr,
        prefix: c.prefix,
        table: spec.priority,
        via: via.clone(),
        metric,
    };
    spec.cidrs
        .iter()
        .flat_map(|c| {
            [
                route(c, via, 0),
                route(c, &Via::Unreachable, FALLBACK_METRIC),
            ]
        })
        .collect()
}

impl<H: Host, D: Dataplane> Supervisor<H, D> {
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
        self.repair_policy().await;
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

    /// Puts back the routes and rules of installed groups that someone removed (`ip
    /// rule del`, `ip route flush table N`): without them a group's traffic would fall
    /// through to the main table. Routes first, so a rule put back finds its table full.
    async fn repair_policy(&mut self) {
        if self.policy.installed.is_empty() {
            return;
        }
        let families = [Family::V4, Family::V6];
        for (key, inst) in self.policy.installed.iter() {
            let Ok(present) = self
                .host
                .twnode_policy_routes(inst.spec.priority, &families)
                .await
            else {
                return;
            };
            for r in &inst.routes {
                if !present.contains(&(r.dst, r.prefix, r.metric)) {
                    match self.host.replace_route(r).await {
                        Ok(()) => {
                            warn!(group = key.name(), route = %r, "a route of {key} was removed by someone else; put back")
                        }
                        Err(e) => {
                            warn!(group = key.name(), route = %r, error = %e, "cannot put back a route of {key}")
                        }
                    }
                }
            }
        }
        let Ok(present) = self.host.twnode_policy_rules(&families).await else {
            return;
        };
        for (key, inst) in self.policy.installed.iter() {
            for rule in inst.rules.iter().filter(|r| !present.contains(r)) {
                match self.host.add_policy_rule(rule).await {
                    Ok(()) | Err(NetError::Exists { .. }) => {
                        warn!(group = key.name(), %rule, "a rule of {key} was removed by someone else; put back")
                    }
                    Err(e) => {
                        warn!(group = key.name(), %rule, error = %e, "cannot put back a rule of {key}")
                    }
                }
            }
        }
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
            (a.dst, a.prefix, a.table, a.metric) == (b.dst, b.prefix, b.table, b.metric)
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
        for r in inst.routes.iter_mut().filter(|r| r.metric == 0) {
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
