//! The host side: addresses, routes, rules and link attributes via netlink.
//!
//! [`Netlink`] is one rtnetlink connection in the network namespace of the thread that
//! opened it, each request bounded by a timeout and the connection re-opened when it is
//! lost (`conn`). Everything twnode changes on the host goes through it; nothing here
//! shells out to `ip`. The daemon reaches it through the [`Host`] trait, which an
//! in-memory host also implements in the daemon's unit tests.
//!
//! Policy groups' routes and rules (`policy`) replace a route in one step, so a switch
//! between exits never leaves a gap.
//!
//! Rules of this room:
//! - Routes and rules twnode installs carry protocol [`RTPROT_TWNODE`], so the ones left
//!   by a crashed run can be found and removed ([`Netlink::purge_stale`]) without touching
//!   anything an administrator added, even an identical-looking rule.
//! - Adding fails loudly if the object is already there ([`NetError::Exists`]); deleting
//!   something that is already gone succeeds, so shutdown and rollback can be replayed.
//! - Every error names the interface, address, route or rule it was about.
//! - IPv4 and IPv6 go through the same calls; the family comes from the addresses.
//! - Netlink types come from `rtnetlink::packet_route`, the exact version rtnetlink
//!   speaks.

mod conn;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod host;
mod link;
mod nexthop;
mod policy;
mod route;
mod rule;
pub mod sysctl;

use std::net::IpAddr;
use std::sync::Arc;

use rtnetlink::packet_route::AddressFamily;

pub use self::conn::{current_netns, NetnsId, REOPEN_FIRST, REOPEN_MAX, REQUEST_TIMEOUT};
pub use self::error::{LinkId, NetError, Object};
pub use self::host::Host;
pub use self::link::interface_name;
pub use self::nexthop::NextHop;
pub use self::policy::{PolicyRoute, PolicyRule, RuleFrom, Via, FALLBACK_METRIC};
pub use self::route::Route;
pub use self::rule::Rule;

/// Protocol (`rtm_protocol`, `FRA_PROTOCOL`) of every route and rule twnode installs;
/// `ip` prints it as `proto 116`.
pub const RTPROT_TWNODE: u8 = 0x74;
/// Routing table holding the routes to peer VIPs.
pub const VIP_TABLE: u32 = 80;
/// Preference of the rule `from all lookup VIP_TABLE`.
pub const VIP_RULE_PREF: u32 = 80;
/// Preference of the rules `to <peer underlay address> lookup main`, which keep the
/// encapsulated traffic itself out of the tunnels.
pub const PROTECT_RULE_PREF: u32 = 10;
/// The kernel's main routing table.
pub const MAIN_TABLE: u32 = 254;

/// IP version of a rule or route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Longest prefix an address of this family can have.
    pub fn max_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    fn address_family(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }
}

/// A netlink route connection to the kernel.
///
/// Cheap to clone; clones share the connection. The connection runs as a task on the
/// tokio runtime `connect` was called from and ends when every clone is dropped. Each
/// request gets at most [`REQUEST_TIMEOUT`]; a lost connection is re-opened by the next
/// request (see `conn`).
#[derive(Clone)]
pub struct Netlink {
    conn: Arc<conn::Connection>,
}

impl Netlink {
    /// Opens a netlink connection in the caller's network namespace (spawns the
    /// connection task on the current tokio runtime).
    ///
    /// The socket belongs to the namespace of the calling thread at this moment; a thread
    /// that `setns`-ed into a test namespace gets a `Netlink` for that namespace, and the
    /// connection is only ever re-opened there.
    pub fn connect() -> Result<Netlink, NetError> {
        Ok(Netlink {
            conn: Arc::new(conn::Connection::open()?),
        })
    }

    /// Deletes every rule and route (all tables, both families) whose protocol is
    /// [`RTPROT_TWNODE`]; returns how many. Used at start-up after a crash.
    ///
    /// Rules go first, so no packet is steered into a table that is being emptied.
    pub async fn purge_stale(&self) -> Result<usize, NetError> {
        let rules = self.purge_stale_rules().await?;
        let routes = self.purge_stale_routes().await?;
        Ok(rules + routes)
    }
}
