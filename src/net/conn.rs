//! The rtnetlink connection behind [`Netlink`], kept usable: every request is bounded
//! by [`REQUEST_TIMEOUT`], a connection that is lost (its task ended after a read
//! error) is re-opened by the next request, and one that stopped answering is closed
//! and held for a moment ([`REOPEN_FIRST`], doubling up to [`REOPEN_MAX`] while it keeps
//! stalling), during which requests fail at once instead of each waiting out its own
//! timeout.
//!
//! Why here and not in the daemon: the daemon runs one loop that also serves the
//! control socket and signals; a netlink reply that never comes must cost that loop at
//! most one timeout per hold, so a reconcile pass of many requests fails fast after the
//! first stall and the next pass (every 2 s) tries again. A request that failed this way
//! is reported to its caller like any other [`NetError`] ([`NetError::Timeout`],
//! [`NetError::Unavailable`], [`NetError::Lost`]), naming what it was about.
//!
//! Rules: the connection is re-opened only in the network namespace it was first
//! opened in (a thread elsewhere gets an error, never a socket in the wrong namespace);
//! no lock is held across an `.await`; an answer that arrives on a connection that died
//! meanwhile is not trusted (a dump may be cut short, and rtnetlink ends the reply
//! stream of a lost request without an error).

use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::error::classify;
use super::{NetError, Netlink, Object};

/// How long one netlink request (a whole dump included) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long requests fail at once after the first request that timed out.
pub const REOPEN_FIRST: Duration = Duration::from_secs(1);
/// The longest such hold, reached while every re-opened connection stalls again.
pub const REOPEN_MAX: Duration = Duration::from_secs(16);

/// One request: its name in the code (for fault injection) and what it does to what
/// (for errors).
pub(super) struct Call {
    /// The [`Netlink`] method that makes it, e.g. `add_route`.
    pub name: &'static str,
    /// What it does: "add", "delete", "list", "look up"...
    pub op: &'static str,
    /// What it is about.
    pub object: Object,
}

impl Call {
    pub fn new(name: &'static str, op: &'static str, object: Object) -> Call {
        Call { name, op, object }
    }
}

/// A network namespace, as `/proc/thread-self/ns/net` identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetnsId {
    /// Device of the nsfs file system.
    pub dev: u64,
    /// The namespace's inode number (what `ip netns identify` and `/proc/PID/ns/net`
    /// show as `net:[INODE]`).
    pub inode: u64,
}

/// The network namespace of the calling thread.
pub fn current_netns() -> io::Result<NetnsId> {
    let meta = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok(NetnsId {
        dev: meta.dev(),
        inode: meta.ino(),
    })
}

/// An open connection: the handle requests go through and the task that runs it.
struct Open {
    handle: rtnetlink::Handle,
    task: JoinHandle<()>,
}

impl Open {
    fn alive(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        // Closes the socket: a request still waiting on it gets no answer, never a late
        // one meant for a dropped caller.
        self.task.abort();
    }
}

struct State {
    open: Option<Arc<Open>>,
    /// After a timeout: requests fail at once until then.
    hold_until: Option<Instant>,
    /// The hold after the next timeout.
    next_hold: Duration,
    /// Whether the connection was ever lost (for the "re-opened" log line).
    reopening: bool,
}

/// The connection state shared by the clones of one [`Netlink`].
pub(super) struct Connection {
    state: Mutex<State>,
    runtime: tokio::runtime::Handle,
    /// Where it was opened; `None` when /proc could not tell (then any thread may
    /// re-open it, as before this check existed).
    netns: Option<NetnsId>,
}

impl Connection {
    /// Opens a connection in the calling thread's network namespace, its task on the
    /// current tokio runtime.
    pub fn open() -> Result<Connection, NetError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetError::NoRuntime)?;
        let open = spawn(&runtime)?;
        Ok(Connection {
            state: Mutex::new(State {
                open: Some(Arc::new(open)),
                hold_until: None,
                next_hold: REOPEN_FIRST,
                reopening: false,
            }),
            runtime,
            netns: current_netns().ok(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection to send `call` on: the open one, or a new one if it was lost;
    /// an error while it is held after a timeout.
    fn get(&self, call: &Call) -> Result<Arc<Open>, NetError> {
        let mut state = self.state();
        if let Some(until) = state.hold_until {
            let now = Instant::now();
            if now < until {
                return Err(NetError::Unavailable {
                    op: call.op,
                    object: call.object.clone(),
                    retry_in_ms: (until - now).as_millis() as u64,
                });
            }
            state.hold_until = None;
        }
        if let Some(open) = state.open.as_ref().filter(|o| o.alive()) {
            return Ok(open.clone());
        }
        if let (Some(want), Ok(here)) = (self.netns, current_netns()) {
            if want != here {
                return Err(NetError::Connect(io::Error::other(
                    "cannot re-open the netlink connection from a thread in another \
                     network namespace",
                )));
            }
        }
        let open = Arc::new(spawn(&self.runtime)?);
        if std::mem::replace(&mut state.reopening, false) {
            info!("netlink connection re-opened");
        }
        state.open = Some(open.clone());
        Ok(open)
    }

    /// `open` died under a request (or was found dead): the next request opens anew.
    fn lost(&self, open: &Arc<Open>) {
        let mut state = self.state();
        if state.open.as_ref().is_some_and(|o| Arc::ptr_eq(o, open)) {
            state.open = None;
            state.reopening = true;
        }
    }

    /// A request on `open` got no answer in time: close it and hold requests off.
    fn stalled(&self, open: &Arc<Open>) -> Duration {
        let mut state = self.state();
        if state.open.as_ref().is_some_and(|o| Arc::ptr_eq(o, open)) {
            state.open = None;
        }
        open.task.abort();
        state.reopening = true;
        let hold = state.next_hold;
        state.hold_until = Some(Instant::now() + hold);
        state.next_hold = (hold * 2).min(REOPEN_MAX);
        hold
    }

    /// A request was answered: the next stall starts with the shortest hold again.
    fn answered(&self) {
        self.state().next_hold = REOPEN_FIRST;
    }
}

fn spawn(runtime: &tokio::runtime::Handle) -> Result<Open, NetError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetError::Connect)?;
    let task = runtime.spawn(connection);
    Ok(Open { handle, task })
}

/// Whether an error means the connection itself is gone (its task ended): the request
/// never reached the kernel.
fn connection_gone(err: &rtnetlink::Error) -> bool {
    matches!(err, rtnetlink::Error::RequestFailed)
}

impl Netlink {
    /// Sends one request (`send` gets the handle and runs it to its answer) within
    /// [`REQUEST_TIMEOUT`]; errors are classified for `call`.
    pub(super) async fn request<T, Fut>(
        &self,
        call: Call,
        send: impl FnOnce(rtnetlink::Handle) -> Fut,
    ) -> Result<T, NetError>
    where
        Fut: Future<Output = Result<T, rtnetlink::Error>>,
    {
        let open = self.conn.get(&call)?;
        #[cfg(feature = "fault-injection")]
        let stall = match super::fault::take(call.name) {
            Some(super::fault::Fault::Stall) => true,
            Some(super::fault::Fault::Fail) => {
                super::fault::kill(&open.task).await;
                false
            }
            None => false,
        };
        #[cfg(not(feature = "fault-injection"))]
        let stall = false;
        let handle = open.handle.clone();
        let exchange = async move {
            if stall {
                std::future::pending::<()>().await;
            }
            send(handle).await
        };
        let Ok(answer) = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await else {
            let hold = self.conn.stalled(&open);
            warn!(request = %call.name, op = call.op, object = %call.object,
                  timeout_s = REQUEST_TIMEOUT.as_secs(), hold_ms = hold.as_millis() as u64,
                  "netlink request got no answer; connection closed, re-opened after the hold");
            return Err(NetError::Timeout {
                op: call.op,
                object: call.object,
            });
        };
        if !open.alive() {
            self.conn.lost(&open);
            warn!(
                request = %call.name,
                "netlink connection lost; re-opened for the next request"
            );
            // Whatever came back (an error, or a reply stream cut short) says nothing
            // about what the kernel did.
            drop(answer);
            return Err(NetError::Lost {
                op: call.op,
                object: call.object,
            });
        }
        match answer {
            Ok(value) => {
                self.conn.answered();
                Ok(value)
            }
            Err(err) => {
                if connection_gone(&err) {
                    self.conn.lost(&open);
                } else {
                    self.conn.answered();
                }
                Err(classify(call.op, call.object, err))
            }
        }
    }
}
