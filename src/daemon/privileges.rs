//! The daemon's privileges: at start-up, before any thread exists, it keeps only the
//! capabilities its later work needs and gives up every other one for good.
//!
//! What each later operation needs:
//! - `CAP_NET_ADMIN`: creating TUN devices (`TUNSETIFF`), every netlink change (links,
//!   addresses, routes, rules), `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`, interface sysctls;
//! - `CAP_NET_RAW`: the IP tunnels' raw sockets (protocols 4, 41, 47, 50);
//! - `CAP_NET_BIND_SERVICE`: a WireGuard listen port below 1024.
//!
//! Nothing else: the config file (0600) and the control socket belong to the daemon's
//! own uid, so writing, renaming and removing them needs no capability (an owner needs
//! no `CAP_DAC_OVERRIDE` or `CAP_FOWNER`).
//!
//! Capabilities belong to threads, not processes: this runs before the async runtime
//! starts its workers, so every thread inherits the reduced sets. The bounding set is
//! reduced too (needs `CAP_SETPCAP`, which root has; under the systemd unit the set is
//! already reduced and this step finds nothing to drop), the inheritable and ambient
//! sets are emptied, and `no_new_privs` is set, so no `execve` can ever give back what
//! was dropped.

use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities the daemon keeps after start-up.
pub const KEPT: [Capability; 3] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_RAW,
    Capability::CAP_NET_BIND_SERVICE,
];

/// Why the daemon could not drop its privileges.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// A capability set could not be read or changed.
    #[error("cannot {action}: {source}")]
    Caps {
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: caps::errors::CapsError,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] std::io::Error),
}

/// What [`drop_privileges`] left, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The permitted (and effective) set now.
    pub permitted: Vec<String>,
    /// Capabilities that stayed in the bounding set because `CAP_SETPCAP` was missing.
    pub bounding_left: Vec<String>,
}

fn caps_err(action: &'static str) -> impl FnOnce(caps::errors::CapsError) -> PrivilegeError {
    move |source| PrivilegeError::Caps { action, source }
}

fn names(set: &CapsHashSet) -> Vec<String> {
    let mut v: Vec<String> = set.iter().map(|c| c.to_string()).collect();
    v.sort_unstable();
    v
}

/// Keeps [`KEPT`] (those of them the process has) and drops every other capability from
/// the effective, permitted, inheritable, ambient and bounding sets of the calling
/// thread, then sets `no_new_privs`. Call it before any other thread is started.
pub fn drop_privileges() -> Result<Kept, PrivilegeError> {
    let keep: CapsHashSet = KEPT.into_iter().collect();
    let permitted = caps::read(None, CapSet::Permitted).map_err(caps_err("read permitted set"))?;
    let bounding = caps::read(None, CapSet::Bounding).map_err(caps_err("read bounding set"))?;
    let may_setpcap = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .map_err(caps_err("read effective set"))?;

    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    let mut bounding_left = CapsHashSet::new();
    for cap in bounding.difference(&keep) {
        if may_setpcap {
            caps::drop(None, CapSet::Bounding, *cap).map_err(caps_err("drop from bounding set"))?;
        } else {
            bounding_left.insert(*cap);
        }
    }
    // Ambient capabilities survive execve; none are wanted (fails only on kernels
    // without them, < 4.3, where there is nothing to clear).
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(caps_err("clear ambient set"))?;
    }
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clear inheritable set"))?;
    let kept: CapsHashSet = permitted.intersection(&keep).copied().collect();
    // Effective must stay a subset of permitted: shrink it first.
    caps::set(None, CapSet::Effective, &kept).map_err(caps_err("set effective set"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(caps_err("set permitted set"))?;

    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes integers only and changes
    // nothing but this thread's (and its future children's) no_new_privs flag.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(PrivilegeError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    Ok(Kept {
        permitted: names(&kept),
        bounding_left: names(&bounding_left),
    })
}

/// What the start-up drop kept, logged once the daemon's config loaded (a refused start
/// prints its one error line and nothing else).
static DROPPED: std::sync::OnceLock<Kept> = std::sync::OnceLock::new();

/// [`drop_privileges`], remembering the result for [`log_dropped`].
pub fn drop_at_start() -> Result<(), PrivilegeError> {
    let kept = drop_privileges()?;
    let _ = DROPPED.set(kept);
    Ok(())
}

/// Logs what [`drop_at_start`] kept.
pub fn log_dropped() {
    let Some(kept) = DROPPED.get() else {
        return;
    };
    tracing::info!(
        kept = %kept.permitted.join(","),
        "dropped every other capability; no_new_privs set"
    );
    if !kept.bounding_left.is_empty() {
        tracing::warn!(
            left = %kept.bounding_left.join(","),
            "no CAP_SETPCAP: these stay in the bounding set (no_new_privs still blocks regaining them)"
        );
    }
}
