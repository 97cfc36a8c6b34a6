//! The host objects a running line installs: its local VIP, the route to its peer's
//! VIP, the relay route of a line whose peer sits beyond its parent line's far end, and
//! the two rules (`from all lookup VIP_TABLE`, and the protection rule that keeps the
//! line's own underlay packets out of the tunnels).
//!
//! Rules: every object a line installs is recorded on it, so taking the line down (or
//! rolling back a bring-up that failed midway) removes exactly that, last installed
//! first. Rules are shared by lines and reference-counted ([`SharedRules`]): the last
//! line using one removes it, and a rule that existed before twnode is never removed.
//!
//! What someone else removes (`ip rule del`, `ip route del ... table 80`, `ip addr
//! del`, a second daemon's purge) is put back within a pass ([`Supervisor::repair`]):
//! without its rules and routes a line's traffic would leave on the default route, in
//! clear, while the line still looked up. The check costs one dump of the addresses,
//! and one of the routes and of the rules per IP family in use, per pass.

use std::collections::{HashMap, HashSet};

use tracing::warn;

use super::supervisor::{Running, Supervisor};
use crate::dataplane::{Dataplane, RunningLine};
use crate::net::{self, Family, Host, NetError, Route, Rule};

/// A host object installed for a line.
#[derive(Debug, Clone)]
pub(super) enum Installed {
    Route(Route),
    /// A reference on a shared rule.
    Rule(Rule),
}

/// A rule's users among the running lines.
#[derive(Debug, Clone, Copy)]
struct Users {
    /// How many running lines hold it.
    count: usize,
    /// Whether it was on the host before any line needed it (then it stays).
    preexisting: bool,
}

/// The rules shared by lines, with their reference counts.
#[derive(Debug, Default)]
pub(super) struct SharedRules {
    rules: HashMap<Rule, Users>,
}

impl SharedRules {
    /// Takes a reference on `rule` for a line, installing it if no line holds it and
    /// the host does not have it yet; records it in `installed`.
    async fn acquire(
        &mut self,
        host: &impl Host,
        rule: Rule,
        installed: &mut Vec<Installed>,
    ) -> Result<(), NetError> {
        let users = match self.rules.get_mut(&rule) {
            Some(u) => u,
            None => {
                let preexisting = host.rule_exists(&rule).await?;
                if !preexisting {
                    host.add_rule(&rule).await?;
                }
                self.rules.entry(rule.clone()).or_insert(Users {
                    count: 0,
                    preexisting,
                })
            }
        };
        users.count += 1;
        installed.push(Installed::Rule(rule));
        Ok(())
    }

    /// Drops a line's reference on `rule`; the last one removes the rule from the host
    /// unless it predates twnode.
    async fn release(&mut self, host: &impl Host, rule: &Rule) -> Result<(), NetError> {
        let last = match self.rules.get_mut(rule) {
            Some(u) => {
                u.count = u.count.saturating_sub(1);
                (u.count == 0).then_some(u.preexisting)
            }
            None => None,
        };
        match last {
            Some(preexisting) => {
                self.rules.remove(rule);
                if preexisting {
                    Ok(())
                } else {
                    host.del_rule(rule).await
                }
            }
            None => Ok(()),
        }
    }

    /// The rules some running line holds.
    fn held(&self) -> impl Iterator<Item = &Rule> {
        self.rules
            .iter()
            .filter(|(_, u)| u.count > 0)
            .map(|(rule, _)| rule)
    }

    /// `rule` was put back by twnode after someone removed it: the last line to let it
    /// go removes it, even if it predated twnode.
    fn reinstalled(&mut self, rule: &Rule) {
        if let Some(u) = self.rules.get_mut(rule) {
            u.preexisting = false;
        }
    }

    /// How many running lines hold `rule` (0 when none).
    #[cfg(test)]
    pub fn users(&self, rule: &Rule) -> usize {
        self.rules.get(rule).map_or(0, |u| u.count)
    }
}

/// The objects a repair could not put back, so each failure is logged once, not every
/// pass.
#[derive(Debug, Default)]
pub(super) struct Unrepaired(HashSet<String>);

impl Unrepaired {
    /// Records the objects that failed this pass; returns those that did not fail the
    /// pass before (the ones to log).
    fn update<'a>(&mut self, failed: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        let now: Vec<&str> = failed.into_iter().collect();
        let new = now
            .iter()
            .copied()
            .filter(|w| !self.0.contains(*w))
            .collect();
        self.0 = now.into_iter().map(str::to_string).collect();
        new
    }

    /// How many objects are missing still.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<H: Host, D: Dataplane> Supervisor<H, D> {
    /// Puts back the addresses, routes and rules of running lines that are no longer on
    /// the host, and logs each. Leaves [`Supervisor::pass_addrs`] holding the host's
    /// addresses, so the rest of the pass need not dump them again. A dump that fails
    /// skips the check until the next pass.
    pub(super) async fn repair(&mut self) {
        if self.running.is_empty() {
            return;
        }
        let families: Vec<Family> = [Family::V4, Family::V6]
            .into_iter()
            .filter(|f| {
                self.running
                    .values()
                    .any(|r| Family::of(r.line.local_vip) == *f || Family::of(r.line.peer_ip) == *f)
            })
            .collect();
        let mut failed = Vec::new();

        // Addresses first: a route whose source address is missing cannot be added (and
        // the kernel drops IPv4 routes with the address they name as source).
        let Ok(mut addrs) = self.host.all_addrs().await else {
            return;
        };
        let missing: Vec<_> = self
            .running
            .values()
            .map(|r| (r.line.name.clone(), r.dataplane.ifindex(), r.line.local_vip))
            .filter(|(_, ifindex, vip)| !addrs.contains(&(*ifindex, *vip)))
            .collect();
        for (name, ifindex, vip) in missing {
            let prefix = Family::of(vip).max_prefix();
            match self.host.add_addr(ifindex, vip, prefix).await {
                Ok(()) => {
                    warn!(line = %name, address = %vip,
                          "the line's VIP was removed from its device by someone else; put back");
                    addrs.push((ifindex, vip));
                }
                // Back already (or the dump was older than the add): nothing to do.
                Err(NetError::Exists { .. }) => addrs.push((ifindex, vip)),
                Err(e) => failed.push((name.to_string(), format!("address {vip}"), e)),
            }
        }
        self.pass_addrs = Some(addrs);

        if let Ok(routes) = self.host.twnode_routes(net::VIP_TABLE, &families).await {
            let missing: Vec<(String, Route)> = self
                .running
                .values()
                .flat_map(|r| {
                    r.installed.iter().filter_map(|o| match o {
                        Installed::Route(route) => Some((r.line.name.to_string(), route.clone())),
                        Installed::Rule(_) => None,
                    })
                })
                .filter(|(_, route)| !routes.contains(route))
                .collect();
            for (name, route) in missing {
                match self.host.add_route(&route).await {
                    Ok(()) => {
                        warn!(line = %name, %route, "the line's route was removed by someone else; put back");
                    }
                    Err(NetError::Exists { .. }) => {}
                    Err(e) => failed.push((name, route.to_string(), e)),
                }
            }
        }

        if let Ok(rules) = self.host.twnode_rules(&families).await {
            let missing: Vec<Rule> = self
                .rules
                .held()
                .filter(|rule| !rules.contains(rule))
                .cloned()
                .collect();
            for rule in missing {
                match self.host.add_rule(&rule).await {
                    Ok(()) => {
                        self.rules.reinstalled(&rule);
                        warn!(%rule, "a rule the lines need was removed by someone else; put back");
                    }
                    Err(NetError::Exists { .. }) => {}
                    Err(e) => failed.push(("(shared)".to_string(), rule.to_string(), e)),
                }
            }
        }

        let new = self
            .unrepaired
            .update(failed.iter().map(|(_, what, _)| what.as_str()));
        for (line, what, e) in &failed {
            if new.contains(&what.as_str()) {
                warn!(line = %line, object = %what, error = %e,
                      "could not put back a host object someone removed; trying again every pass");
            }
        }
    }

    /// Addresses, routes and rules of a running line. On an error, what was installed
    /// so far is recorded on `r` for [`Self::uninstall`] to remove.
    pub(super) async fn install(
        &mut self,
        r: &mut Running<D::Line>,
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
        // A WireGuard line's allowed_ips (`wg set ... allowed-ips`) are routed to it as
        // its peer VIP is.
        for allowed in line.wireguard().map_or(&[][..], |w| &w.allowed_ips) {
            let route = Route {
                dst: allowed.network(),
                prefix: allowed.prefix_len(),
                oif: ifindex,
                table: net::VIP_TABLE,
                src: Some(line.local_vip),
            };
            self.host.add_route(&route).await?;
            r.installed.push(Installed::Route(route));
        }
        self.rules
            .acquire(
                &self.host,
                Rule::from_all(family, net::VIP_RULE_PREF, net::VIP_TABLE),
                &mut r.installed,
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
        self.rules
            .acquire(
                &self.host,
                Rule::to_prefix(
                    net::PROTECT_RULE_PREF,
                    line.peer_ip,
                    peer_max,
                    protect_table,
                ),
                &mut r.installed,
            )
            .await?;
        Ok(())
    }

    /// Removes what [`Self::install`] recorded on `r`, last first. A failure is logged
    /// and the rest is still removed.
    pub(super) async fn uninstall(&mut self, r: &mut Running<D::Line>) {
        for obj in r.installed.drain(..).rev() {
            let result = match obj {
                Installed::Route(route) => self.host.del_route(&route).await,
                Installed::Rule(rule) => self.rules.release(&self.host, &rule).await,
            };
            if let Err(e) = result {
                warn!(line = %r.line.name, error = %e, "could not remove a host object");
            }
        }
    }
}
