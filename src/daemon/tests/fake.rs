//! An in-memory host and data plane for the supervisor's unit tests: interfaces,
//! addresses, routes and rules in a [`World`], TUN devices that appear there when a
//! line's data plane starts and vanish (with their addresses and routes, as the kernel
//! removes them) when it stops, a log of every change in order, and failures injected
//! on request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::dataplane::{
    Dataplane, DataplaneError, DataplaneStatus, IpTunnelSpec, IpTunnelStatus, LineStats,
    ProbeError, RunningLine, WireGuardSpec,
};
use crate::net::{
    Family, Host, LinkId, NetError, NextHop, Object, PolicyRoute, PolicyRule, Route, Rule, Via,
};

/// The host as the fakes see it.
#[derive(Debug, Default)]
pub struct World {
    /// Interfaces by name: (index, MTU).
    pub links: BTreeMap<String, (u32, u32)>,
    /// (interface index, address).
    pub addrs: Vec<(u32, IpAddr)>,
    pub routes: Vec<Route>,
    /// Rules on the host, twnode's or not.
    pub rules: Vec<Rule>,
    /// Policy groups' routes (one per table and destination) and rules.
    pub policy_routes: Vec<PolicyRoute>,
    pub policy_rules: Vec<PolicyRule>,
    /// Every change, in order: `add route ...`, `del rule ...`, `start a`, `stop a`.
    pub log: Vec<String>,
    /// Adding this rule fails.
    pub refuse_rule: Option<Rule>,
    /// Each running line's "packet path stopped" flag, by line name.
    pub paths: HashMap<String, Arc<AtomicBool>>,
    /// Lines whose peer answers no probe (a cut path).
    pub silent: HashSet<String>,
    /// Probes sent, by line.
    pub probes: HashMap<String, u64>,
    /// The multipath hash policies (IPv4, IPv6).
    pub multipath_hash: [u8; 2],
    /// How many times each dump was asked for.
    pub dumps: BTreeMap<&'static str, usize>,
    next_index: u32,
}

impl World {
    /// Adds interface `name` with `mtu` and `addrs`; returns its index.
    pub fn add_link(&mut self, name: &str, mtu: u32, addrs: &[IpAddr]) -> u32 {
        self.next_index += 1;
        let index = 100 + self.next_index;
        self.links.insert(name.to_string(), (index, mtu));
        self.addrs.extend(addrs.iter().map(|a| (index, *a)));
        index
    }

    fn count(&mut self, dump: &'static str) {
        *self.dumps.entry(dump).or_default() += 1;
    }

    /// Makes line `name`'s packet path look stopped after a panic.
    pub fn stop_path(&self, name: &str) {
        self.paths[name].store(true, Relaxed);
    }

    /// The error adding `rule` fails with when it is refused.
    pub fn refusal(rule: &Rule) -> NetError {
        NetError::Kernel {
            op: "add",
            object: Object::Rule(rule.clone()),
            source: io::Error::from_raw_os_error(libc::ENOBUFS),
        }
    }

    /// What is installed, to compare before and after.
    pub fn snapshot(&self) -> String {
        format!(
            "links {:?}\naddrs {:?}\nroutes {:?}\nrules {:?}\npolicy routes {:?}\npolicy rules \
             {:?}\nmultipath hash {:?}",
            self.links,
            self.addrs,
            self.routes,
            self.rules,
            self.policy_routes,
            self.policy_rules,
            self.multipath_hash
        )
    }

    /// [`World::snapshot`] whatever the order things were added in.
    pub fn sorted_snapshot(&self) -> String {
        fn sorted<T: std::fmt::Debug>(items: &[T]) -> Vec<String> {
            let mut v: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
            v.sort();
            v
        }
        format!(
            "links {:?}\naddrs {:?}\nroutes {:?}\nrules {:?}",
            self.links,
            sorted(&self.addrs),
            sorted(&self.routes),
            sorted(&self.rules)
        )
    }
}

/// A shared [`World`].
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<World>>);

impl Shared {
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake host.
pub struct FakeHost(pub Shared);

/// The fake data plane.
pub struct FakeDataplane(pub Shared);

/// A running fake line.
pub struct FakeLine {
    name: String,
    ifindex: u32,
    local: IpAddr,
    stopped: Arc<AtomicBool>,
    stats: LineStats,
    world: Shared,
    /// Replies to probes, answered at once unless the line is silent.
    replies: Mutex<HashMap<u16, Instant>>,
}

impl Host for FakeHost {
    async fn link_index(&self, name: &str) -> Result<Option<u32>, NetError> {
        Ok(self.0.world().links.get(name).map(|(i, _)| *i))
    }

    async fn link_mtu(&self, index: u32) -> Result<u32, NetError> {
        let world = self.0.world();
        world
            .links
            .values()
            .find(|(i, _)| *i == index)
            .map(|(_, mtu)| *mtu)
            .ok_or(NetError::NoSuchInterface {
                link: LinkId::Index(index),
            })
    }

    async fn link_addrs(&self, index: u32) -> Result<Vec<IpAddr>, NetError> {
        let world = self.0.world();
        Ok(world
            .addrs
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, a)| *a)
            .collect())
    }

    async fn all_addrs(&self) -> Result<Vec<(u32, IpAddr)>, NetError> {
        let mut world = self.0.world();
        world.count("dump addresses");
        Ok(world.addrs.clone())
    }

    async fn add_addr(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<(), NetError> {
        let mut world = self.0.world();
        if world.addrs.contains(&(index, addr)) {
            return Err(NetError::Exists {
                object: Object::Addr {
                    index,
                    addr,
                    prefix,
                },
            });
        }
        world.addrs.push((index, addr));
        world.log.push(format!("add addr {addr}"));
        Ok(())
    }

    async fn add_route(&self, route: &Route) -> Result<(), NetError> {
        let mut world = self.0.world();
        if world
            .routes
            .iter()
            .any(|r| (r.dst, r.prefix, r.table) == (route.dst, route.prefix, route.table))
        {
            return Err(NetError::Exists {
                object: Object::Route(route.clone()),
            });
        }
        world.routes.push(route.clone());
        world.log.push(format!("add {route}"));
        Ok(())
    }

    async fn del_route(&self, route: &Route) -> Result<(), NetError> {
        let mut world = self.0.world();
        world.routes.retain(|r| r != route);
        world.log.push(format!("del {route}"));
        Ok(())
    }

    async fn route_mtu(&self, _dst: IpAddr) -> Result<Option<u32>, NetError> {
        Ok(None)
    }

    async fn add_rule(&self, rule: &Rule) -> Result<(), NetError> {
        let mut world = self.0.world();
        if world.refuse_rule.as_ref() == Some(rule) {
            return Err(World::refusal(rule));
        }
        if world.rules.contains(rule) {
            return Err(NetError::Exists {
                object: Object::Rule(rule.clone()),
            });
        }
        world.rules.push(rule.clone());
        world.log.push(format!("add {rule}"));
        Ok(())
    }

    async fn del_rule(&self, rule: &Rule) -> Result<(), NetError> {
        let mut world = self.0.world();
        world.rules.retain(|r| r != rule);
        world.log.push(format!("del {rule}"));
        Ok(())
    }

    async fn rule_exists(&self, rule: &Rule) -> Result<bool, NetError> {
        Ok(self.0.world().rules.contains(rule))
    }

    async fn twnode_routes(&self, table: u32, families: &[Family]) -> Result<Vec<Route>, NetError> {
        let mut world = self.0.world();
        world.count("dump routes");
        Ok(world
            .routes
            .iter()
            .filter(|r| r.table == table && families.contains(&r.family()))
            .cloned()
            .collect())
    }

    async fn twnode_rules(&self, families: &[Family]) -> Result<Vec<Rule>, NetError> {
        let mut world = self.0.world();
        world.count("dump rules");
        Ok(world
            .rules
            .iter()
            .filter(|r| families.contains(&r.family))
            .cloned()
            .collect())
    }

    async fn next_hops(
        &self,
        pairs: &[(IpAddr, IpAddr)],
    ) -> Result<Vec<Result<NextHop, String>>, NetError> {
        Ok(pairs.iter().map(|_| Err("no AF_XDP here".into())).collect())
    }

    async fn replace_route(&self, route: &PolicyRoute) -> Result<(), NetError> {
        let mut world = self.0.world();
        let key = |r: &PolicyRoute| (r.dst, r.prefix, r.table, r.metric);
        let same = |r: &PolicyRoute| key(r) == key(route);
        match world.policy_routes.iter_mut().find(|r| same(r)) {
            Some(r) => *r = route.clone(),
            None => world.policy_routes.push(route.clone()),
        }
        world
            .log
            .push(format!("replace {route} via {:?}", route.via));
        Ok(())
    }

    async fn del_policy_route(&self, route: &PolicyRoute) -> Result<(), NetError> {
        let mut world = self.0.world();
        let key = |r: &PolicyRoute| (r.dst, r.prefix, r.table, r.metric);
        world.policy_routes.retain(|r| key(r) != key(route));
        world.log.push(format!("del {route}"));
        Ok(())
    }

    async fn add_policy_rule(&self, rule: &PolicyRule) -> Result<(), NetError> {
        let mut world = self.0.world();
        if world.policy_rules.contains(rule) {
            return Err(NetError::Exists {
                object: Object::Policy(rule.to_string()),
            });
        }
        world.policy_rules.push(rule.clone());
        world.log.push(format!("add {rule}"));
        Ok(())
    }

    async fn del_policy_rule(&self, rule: &PolicyRule) -> Result<(), NetError> {
        let mut world = self.0.world();
        world.policy_rules.retain(|r| r != rule);
        world.log.push(format!("del {rule}"));
        Ok(())
    }

    async fn twnode_policy_routes(
        &self,
        table: u32,
        families: &[Family],
    ) -> Result<Vec<(IpAddr, u8, u32)>, NetError> {
        let mut world = self.0.world();
        world.count("dump routes");
        Ok(world
            .policy_routes
            .iter()
            .filter(|r| r.table == table && families.contains(&Family::of(r.dst)))
            .map(|r| (r.dst, r.prefix, r.metric))
            .collect())
    }

    async fn twnode_policy_rules(&self, families: &[Family]) -> Result<Vec<PolicyRule>, NetError> {
        let mut world = self.0.world();
        world.count("dump rules");
        Ok(world
            .policy_rules
            .iter()
            .filter(|r| families.contains(&r.family))
            .cloned()
            .collect())
    }

    fn set_multipath_hash(&self, value: [u8; 2]) -> io::Result<[u8; 2]> {
        let mut world = self.0.world();
        let old = std::mem::replace(&mut world.multipath_hash, value);
        world.log.push(format!("multipath hash {value:?}"));
        Ok(old)
    }
}

impl FakeDataplane {
    /// A TUN device called `name` appears.
    fn start(&self, name: &str, mtu: u16, local: IpAddr) -> Result<FakeLine, DataplaneError> {
        let mut world = self.0.world();
        if world.links.contains_key(name) {
            return Err(DataplaneError::Claimed(format!("{name} exists")));
        }
        let ifindex = world.add_link(name, u32::from(mtu), &[]);
        let stopped = Arc::new(AtomicBool::new(false));
        world.paths.insert(name.to_string(), stopped.clone());
        world.log.push(format!("start {name}"));
        Ok(FakeLine {
            name: name.to_string(),
            ifindex,
            local,
            stopped,
            stats: LineStats::default(),
            world: self.0.clone(),
            replies: Mutex::new(HashMap::new()),
        })
    }
}

impl Dataplane for FakeDataplane {
    type Line = FakeLine;

    fn start_wireguard(&self, spec: WireGuardSpec) -> Result<FakeLine, DataplaneError> {
        self.start(&spec.name, spec.mtu, spec.local_ip)
    }

    fn start_ip_tunnel(&self, spec: IpTunnelSpec) -> Result<FakeLine, DataplaneError> {
        self.start(&spec.name, spec.mtu, spec.local)
    }

    fn revive_receives(&self) -> Vec<String> {
        Vec::new()
    }
}

impl RunningLine for FakeLine {
    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn stats(&self) -> &LineStats {
        &self.stats
    }

    fn stopped_path(&self) -> Option<String> {
        self.stopped
            .load(Relaxed)
            .then(|| format!("line {} outbound", self.name))
    }

    fn status(&self) -> DataplaneStatus {
        DataplaneStatus::IpTunnel(IpTunnelStatus {
            local: self.local,
            keepalive: None,
            esp: None,
            transmit: None,
            af_xdp_packets: None,
            receive_problem: None,
        })
    }

    fn af_xdp(&self) -> bool {
        false
    }

    fn update_next_hop(&self, _hop: Result<NextHop, String>) {}

    fn send_probe(&self, _from: IpAddr, _target: IpAddr, seq: u16) -> Result<(), ProbeError> {
        let mut world = self.world.world();
        *world.probes.entry(self.name.clone()).or_default() += 1;
        if !world.silent.contains(&self.name) {
            // Answered at once: the daemon's clock in the tests runs ahead of this one,
            // so the round trip reads as zero.
            let mut replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
            replies.insert(seq, Instant::now());
        }
        Ok(())
    }

    fn probe_reply(&self, seq: u16) -> Option<Instant> {
        let replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        replies.get(&seq).copied()
    }

    /// The device goes, and with it its addresses and the routes through it.
    async fn stop(self) {
        let mut world = self.world.world();
        world.links.remove(&self.name);
        world.addrs.retain(|(i, _)| *i != self.ifindex);
        world.routes.retain(|r| r.oif != self.ifindex);
        // The kernel removes routes through a device that goes away, multipath ones
        // included.
        let ifindex = self.ifindex;
        world.policy_routes.retain(|r| match &r.via {
            Via::Dev(i) => *i != ifindex,
            Via::Multipath(hops) => hops.iter().all(|(i, _)| *i != ifindex),
            Via::Unreachable => true,
        });
        world.log.push(format!("stop {}", self.name));
    }
}
