//! The host lock: at most one daemon per network namespace owns twnode's routes, rules
//! and addresses there. A daemon takes it before it touches anything (the start-up purge
//! of stale protocol-116 objects, the control socket), and a second daemon that finds
//! it taken refuses, naming the process that holds it, having changed nothing.
//!
//! The lock is a listening unix socket in the abstract namespace, `@twnode/daemon/...`.
//! Why that and not a control-socket or config path, or an `flock` on a file under /run:
//! - the objects it protects belong to a network namespace, and so do abstract socket
//!   names (the kernel keeps one abstract namespace per network namespace), whatever
//!   `--control`, `--config` or mount namespace each daemon was given; a file lock would
//!   be per mount namespace (two containers sharing a network namespace would not see
//!   each other's /run) and needs a writable /run (the unit's `ProtectSystem=strict`);
//! - it vanishes with the process, even after SIGKILL, so a crashed daemon never leaves
//!   a stale lock behind, and the next daemon's purge then cleans up after it;
//! - the kernel tells who holds it: connecting to it and reading `SO_PEERCRED` gives the
//!   holder's pid and uid, which no process can fake.
//!
//! The name also carries the namespace's inode (`net:[INODE]`, as `/proc/PID/ns/net`
//! shows it) so that `ss -xlp` says which namespace a daemon owns; the kernel's per-
//! namespace scope is what makes the lock correct, not the name.
//!
//! The price of an abstract name: any local process in the namespace may bind it first
//! (abstract sockets have no file permissions). That blocks the daemon from starting,
//! with its refusal naming that process's pid and uid; it can never make two daemons
//! share the host's objects.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

use tracing::debug;

/// The lock, held while this value lives (the daemon keeps it until it exits).
pub struct HostLock {
    name: String,
    serving: tokio::task::JoinHandle<()>,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it: normally a running twnode daemon.
    #[error(
        "another twnode daemon{} already runs in this network namespace ({}) and owns its \
         routes, rules and addresses; this one changed nothing and stops. Talk to the \
         running one with `twnode line list` (its --control path), or stop it first \
         (systemctl stop twnode{})",
        holder.as_ref().map(|h| format!(" (pid {})", h.pid)).unwrap_or_default(),
        netns,
        holder.as_ref().map(|h| format!(", or kill {}", h.pid)).unwrap_or_default()
    )]
    Held {
        /// The namespace, as `net:[INODE]`.
        netns: String,
        /// Who holds it, when the kernel could tell.
        holder: Option<Holder>,
    },
    /// The lock socket could not be created.
    #[error("cannot take the host lock {name:?} (an abstract unix socket): {source}")]
    Io {
        /// The socket's abstract name.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The process holding the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    pub uid: u32,
}

/// The calling thread's network namespace as `/proc/PID/ns/net` shows it.
fn netns_label() -> String {
    match crate::net::current_netns() {
        Ok(ns) => format!("net:[{}]", ns.inode),
        Err(_) => "net:[?]".to_string(),
    }
}

impl HostLock {
    /// Takes the lock of the caller's network namespace, or says who holds it. Must run
    /// inside the tokio runtime (a task keeps the socket's backlog empty).
    pub fn acquire() -> Result<HostLock, LockError> {
        let netns = netns_label();
        let name = format!("twnode/daemon/{netns}");
        HostLock::acquire_named(name, netns)
    }

    /// [`HostLock::acquire`] under another abstract name (the unit tests use their own,
    /// so they never meet a daemon or another test run on the same host).
    fn acquire_named(name: String, netns: String) -> Result<HostLock, LockError> {
        let io_err = |source| LockError::Io {
            name: name.clone(),
            source,
        };
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(io_err)?;
        let listener = match UnixListener::bind_addr(&addr) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(LockError::Held {
                    netns,
                    holder: holder(&addr),
                })
            }
            Err(e) => return Err(io_err(e)),
        };
        listener.set_nonblocking(true).map_err(io_err)?;
        let listener = tokio::net::UnixListener::from_std(listener).map_err(io_err)?;
        // A second daemon connects only to read who we are; its connection is dropped at
        // once so the backlog never fills.
        let serving = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        debug!(peer = ?stream.peer_cred().ok().map(|c| c.pid()),
                               "another twnode daemon asked who holds the host lock");
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
        });
        Ok(HostLock { name, serving })
    }

    /// The lock's abstract socket name (without the leading NUL), for logs.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// The holder of the lock at `addr`, as the kernel reports the listening socket's
/// owner; `None` if it does not listen (a squatter) or cannot be reached.
fn holder(addr: &SocketAddr) -> Option<Holder> {
    let stream = UnixStream::connect_addr(addr).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the fd is a connected unix socket we own for the duration of the call;
    // `cred` and `len` are valid for writes of the size passed.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(Holder {
        pid: cred.pid,
        uid: cred.uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_lock_in_the_same_namespace_is_refused_naming_the_holder() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("twnode/test/{}/{nanos}", std::process::id());
        let take = || HostLock::acquire_named(name.clone(), netns_label());
        let first = take().expect("the first lock is free");
        let err = take().err().expect("the lock is held");
        let LockError::Held { holder, .. } = &err else {
            panic!("expected Held, got {err:?}");
        };
        assert_eq!(
            holder.map(|h| h.pid),
            Some(std::process::id() as i32),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.contains("changed nothing"),
            "{msg}"
        );
        drop(first);
        // The task that served it ends with the lock; the name is free again once the
        // socket is closed.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        take().expect("free again after the holder dropped it");
    }
}
