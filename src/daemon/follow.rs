//! Following what lies under the running lines, once per reconcile pass: each line's
//! path MTU follows its parent (and what the kernel learnt toward its peer), and each
//! `--af-xdp` line's transmit path follows the Ethernet next hop toward its peer.
//!
//! Rules: one look-up per distinct parent, peer or (peer, local address) per pass,
//! however many lines share it; a look-up that fails leaves the line as it was.

use std::collections::HashMap;
use std::net::IpAddr;

use tracing::info;

use super::supervisor::Supervisor;
use crate::config::LineName;
use crate::dataplane::{Dataplane, RunningLine};
use crate::net::{Host, NextHop};

impl<H: Host, D: Dataplane> Supervisor<H, D> {
    /// Keeps each running line's path MTU at what its parent carries now, so a line
    /// refuses (with an ICMP error) what no longer fits, within one tick: the physical
    /// parent's MTU (which may shrink or grow back) or the parent line's MTU, lowered to
    /// the path MTU the kernel learnt toward the line's peer from an ICMP error (a
    /// narrower link beyond a relay, for instance).
    ///
    /// One pass asks the kernel once per physical parent and once per peer address,
    /// however many lines share them (1000 lines on eth0 cost one link query).
    pub(super) async fn follow_parent_mtus(&mut self) {
        let mut links: HashMap<&str, Option<u32>> = HashMap::new();
        let mut learnt_toward: HashMap<IpAddr, Option<u32>> = HashMap::new();
        for r in self.running.values() {
            let parent = match self.running.get(&r.line.parent) {
                Some(p) => u32::from(p.mtu),
                None => {
                    let name = r.line.parent.as_str();
                    let mtu = match links.get(name) {
                        Some(known) => *known,
                        None => {
                            let mtu = match self.host.link_index(name).await {
                                Ok(Some(index)) => self.host.link_mtu(index).await.ok(),
                                _ => None,
                            };
                            links.insert(name, mtu);
                            mtu
                        }
                    };
                    let Some(mtu) = mtu else {
                        continue;
                    };
                    mtu
                }
            };
            let learnt = match learnt_toward.get(&r.line.peer_ip) {
                Some(known) => *known,
                None => {
                    let learnt = self.host.route_mtu(r.line.peer_ip).await.ok().flatten();
                    learnt_toward.insert(r.line.peer_ip, learnt);
                    learnt
                }
            };
            let mtu = learnt.map_or(parent, |l| l.min(parent));
            let mtu = mtu.min(u32::from(u16::MAX)) as u16;
            let old = r.pmtu.path_mtu();
            if mtu != old {
                r.pmtu.set_path_mtu(mtu);
                info!(line = %r.line.name, parent = %r.line.parent, old, new = mtu,
                      "path MTU toward the peer changed; packets are checked against it");
            }
        }
    }

    /// Hands each running `--af-xdp` line (or only `only`) the Ethernet next hop toward
    /// its peer as the kernel would pick it now (route, then neighbour entry), so its
    /// AF_XDP transmit path follows route and neighbour changes within a pass, and
    /// waits, sending through the kernel, while there is none (see
    /// [`crate::dataplane::xsk::Transmit`]). One look-up per (peer, local address) per
    /// pass, however many lines share them.
    pub(super) async fn follow_next_hops(&self, only: Option<&LineName>) {
        let lines: Vec<(&D::Line, (IpAddr, IpAddr))> = self
            .running
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == *name))
            .filter(|(_, r)| r.dataplane.af_xdp())
            .map(|(_, r)| (&r.dataplane, (r.line.peer_ip, r.local_ip)))
            .collect();
        if lines.is_empty() {
            return;
        }
        let mut pairs: Vec<(IpAddr, IpAddr)> = lines.iter().map(|(_, p)| *p).collect();
        pairs.sort();
        pairs.dedup();
        let found: HashMap<(IpAddr, IpAddr), Result<NextHop, String>> =
            match self.host.next_hops(&pairs).await {
                Ok(hops) => pairs.into_iter().zip(hops).collect(),
                Err(e) => pairs
                    .into_iter()
                    .map(|p| (p, Err(format!("cannot look up the next hop: {e}"))))
                    .collect(),
            };
        for (line, pair) in lines {
            if let Some(hop) = found.get(&pair) {
                line.update_next_hop(hop.clone());
            }
        }
    }
}
