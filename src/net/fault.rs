//! Injected netlink faults, for the tests only (cargo feature `fault-injection`, off in
//! release builds): `TWNODE_NETLINK_FAULT` in the daemon's environment makes chosen
//! requests stall (no answer ever comes, as when the kernel's reply is lost) or fail
//! (the connection dies just before the request, as after a read error).
//!
//! Syntax: a comma-separated list of `KIND:CALL[:COUNT]`, where KIND is `stall` or
//! `fail`, CALL the request as the daemon's timeout warnings name it (`request=`):
//! `link_index`, `link` (an interface's attributes: `link_mtu`, `next_hops`),
//! `set_link_up`, `set_link_mtu`, `add_addr`, `del_addr`, `dump_addrs` (`all_addrs`,
//! `link_addrs`), `add_route`, `del_route`, `route_mtu`, `next_hops` (its route
//! look-ups), `dump_routes`, `add_rule`, `del_rule`, `dump_rules` (`rule_exists` too),
//! `neighbours`, or `*` for every one; COUNT is how many requests it hits (default:
//! every one for `stall`, one for `fail`). For example
//! `TWNODE_NETLINK_FAULT=fail:add_addr,stall:route_mtu:2`.
//!
//! Rules: read once, at the first request; a malformed entry is logged and ignored.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{error, warn};

/// The environment variable holding the faults.
pub const ENV: &str = "TWNODE_NETLINK_FAULT";

/// What happens to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Its answer never comes.
    Stall,
    /// The connection dies just before it is sent.
    Fail,
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    fault: Fault,
    /// A method name, or `*`.
    call: String,
    /// Requests still to hit; `None`: all.
    left: Option<u32>,
}

fn parse(spec: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut parts = item.split(':');
        let fault = match parts.next() {
            Some("stall") => Fault::Stall,
            Some("fail") => Fault::Fail,
            _ => {
                warn!(
                    entry = item,
                    "{ENV}: expected stall:CALL or fail:CALL; ignored"
                );
                continue;
            }
        };
        let Some(call) = parts.next().filter(|c| !c.is_empty()) else {
            warn!(entry = item, "{ENV}: no request named; ignored");
            continue;
        };
        let left = match parts.next().map(str::parse::<u32>) {
            None if fault == Fault::Stall => None,
            None => Some(1),
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                warn!(entry = item, "{ENV}: COUNT is not a number; ignored");
                continue;
            }
        };
        out.push(Entry {
            fault,
            call: call.to_string(),
            left,
        });
    }
    out
}

fn entries() -> &'static Mutex<Vec<Entry>> {
    static ENTRIES: OnceLock<Mutex<Vec<Entry>>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let spec = std::env::var(ENV).unwrap_or_default();
        let entries = parse(&spec);
        if !entries.is_empty() {
            error!(faults = %spec, "netlink fault injection is on ({ENV}); for tests only");
        }
        Mutex::new(entries)
    })
}

/// The fault that hits this request of `call`, if any (and counts it).
pub fn take(call: &str) -> Option<Fault> {
    take_from(
        &mut entries().lock().unwrap_or_else(|e| e.into_inner()),
        call,
    )
}

fn take_from(entries: &mut [Entry], call: &str) -> Option<Fault> {
    let entry = entries
        .iter_mut()
        .find(|e| (e.call == call || e.call == "*") && e.left != Some(0))?;
    if let Some(n) = entry.left.as_mut() {
        *n -= 1;
    }
    Some(entry.fault)
}

/// Ends the connection task as a read error would, and waits until it has ended.
pub async fn kill(task: &JoinHandle<()>) {
    task.abort();
    for _ in 0..1000 {
        if task.is_finished() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_hits_every_request_and_fail_one_unless_counted() {
        let mut e = parse("stall:route_mtu, fail:add_addr,fail:*:2");
        assert_eq!(take_from(&mut e, "route_mtu"), Some(Fault::Stall));
        assert_eq!(take_from(&mut e, "route_mtu"), Some(Fault::Stall));
        assert_eq!(take_from(&mut e, "add_addr"), Some(Fault::Fail));
        // add_addr's own entry is used up; the `*` entry takes the next two requests.
        assert_eq!(take_from(&mut e, "add_addr"), Some(Fault::Fail));
        assert_eq!(take_from(&mut e, "link_index"), Some(Fault::Fail));
        assert_eq!(take_from(&mut e, "link_index"), None);
        assert_eq!(take_from(&mut e, "route_mtu"), Some(Fault::Stall));
    }

    #[test]
    fn malformed_entries_are_ignored() {
        assert!(parse("hang:add_route,stall:,fail:x:y").is_empty());
        assert_eq!(
            parse("stall:add_route:3"),
            vec![Entry {
                fault: Fault::Stall,
                call: "add_route".into(),
                left: Some(3)
            }]
        );
    }
}
