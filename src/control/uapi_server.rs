//! The UAPI sockets: `<dir>/<line>.sock` for every configured WireGuard line (the
//! directory is `/var/run/wireguard`, where wireguard-tools looks, unless the daemon
//! was given another), each serving [`super::uapi`]'s protocol: several operations per
//! connection, as wireguard-go serves them. Each operation goes to the supervisor as a
//! typed [`UapiCall`] and is answered from its snapshot of the line; nothing here
//! touches a line's data plane.
//!
//! Rules: the directory is created 0700 and each socket 0600 (root only, as the
//! control socket); beyond the modes, every connection's peer credentials are checked
//! (root or the daemon's own user). A socket is opened with its line and removed with
//! it ([`UapiSockets::sync`]) and when the daemon stops (drop). A live socket of
//! another program is never replaced. A line longer than [`MAX_LINE`], a `set` of more
//! than [`MAX_SET_LINES`] lines or one not finished within [`OP_TIMEOUT`] is answered
//! with an errno and the connection closed; nothing is applied.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::uapi::{parse_set, Device, Errno, Refusal, Set, MAX_LINE, MAX_SET_LINES};

/// Where wireguard-tools looks for userspace interfaces' sockets.
pub const DEFAULT_UAPI_DIR: &str = "/var/run/wireguard";
/// How long one operation may take to arrive once started.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may sit between operations.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once, over all lines.
pub const MAX_CONNECTIONS: usize = 64;

/// What a UAPI client asks of the supervisor.
#[derive(Debug)]
pub enum UapiRequest {
    /// `get=1`: the line's state.
    Get { line: String },
    /// `set=1`: change the line (and its config).
    Set { line: String, set: Box<Set> },
}

/// The supervisor's answer: the device for a `get`, nothing for a `set` that was
/// applied, or why not.
pub type UapiAnswer = Result<Option<Box<Device>>, Refusal>;

/// A request on its way to the supervisor, with the channel for its answer.
pub type UapiCall = (UapiRequest, oneshot::Sender<UapiAnswer>);

/// One line's listening socket; closing it removes the file.
struct Listening {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The UAPI sockets of the running daemon.
pub struct UapiSockets {
    dir: PathBuf,
    calls: mpsc::Sender<UapiCall>,
    open: HashMap<String, Listening>,
    /// Lines whose socket could not be opened, and why (logged once per reason).
    failed: HashMap<String, String>,
    slots: Arc<Semaphore>,
}

impl UapiSockets {
    /// No socket open yet; `calls` reaches the supervisor.
    pub fn new(dir: PathBuf, calls: mpsc::Sender<UapiCall>) -> UapiSockets {
        UapiSockets {
            dir,
            calls,
            open: HashMap::new(),
            failed: HashMap::new(),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }

    /// Opens a socket for each of `lines` that has none and closes those of lines no
    /// longer listed. A socket that cannot be opened is tried again at the next call.
    pub fn sync(&mut self, lines: &[String]) {
        let wanted: std::collections::HashSet<&str> = lines.iter().map(String::as_str).collect();
        self.open.retain(|name, l| {
            let keep = wanted.contains(name.as_str());
            if !keep {
                debug!(line = %name, path = %l.path.display(), "UAPI socket removed");
            }
            keep
        });
        self.failed.retain(|name, _| wanted.contains(name.as_str()));
        for name in lines {
            if self.open.contains_key(name) {
                continue;
            }
            match self.bind(name) {
                Ok(l) => {
                    info!(line = %name, path = %l.path.display(), "UAPI socket open (wg show/set)");
                    self.failed.remove(name);
                    self.open.insert(name.clone(), l);
                }
                Err(reason) => {
                    if self.failed.get(name) != Some(&reason) {
                        warn!(line = %name, "no UAPI socket: {reason}; `wg` will not see this line");
                        self.failed.insert(name.clone(), reason);
                    }
                }
            }
        }
    }

    fn bind(&self, name: &str) -> Result<Listening, String> {
        let dir = &self.dir;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let path = dir.join(format!("{name}.sock"));
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(format!(
                    "{} is in use by another program (a wireguard-go interface of the \
                     same name?); rename one of them",
                    path.display()
                ));
            }
            std::fs::remove_file(&path)
                .map_err(|e| format!("cannot remove the stale {}: {e}", path.display()))?;
        }
        let listener = bind_private(&path)?;
        let calls = self.calls.clone();
        let slots = self.slots.clone();
        let line = name.to_string();
        let task = tokio::spawn(accept(listener, line, calls, slots));
        Ok(Listening { path, task })
    }
}

/// Binds `path` with no permissions for others from the first instant, then 0600.
fn bind_private(path: &Path) -> Result<UnixListener, String> {
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(listener)
}

async fn accept(
    listener: UnixListener,
    line: String,
    calls: mpsc::Sender<UapiCall>,
    slots: Arc<Semaphore>,
) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let (line, calls) = (line.clone(), calls.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, &line, calls).await {
                        debug!(line = %line, error = %e, "UAPI connection ended with an error");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                warn!(line = %line, error = %e, "UAPI socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What reading one line of a request gave.
enum Read {
    Line(String),
    /// The peer closed the connection.
    Closed,
    /// Too long, not UTF-8, or not finished in time: answered with this errno.
    Bad(Errno, &'static str),
}

async fn read_line<R: AsyncBufReadExt + Unpin>(reader: &mut R, within: Duration) -> Read {
    let mut buf = Vec::new();
    let mut limited = (&mut *reader).take(MAX_LINE as u64 + 1);
    match tokio::time::timeout(within, limited.read_until(b'\n', &mut buf)).await {
        Err(_) => Read::Bad(Errno::TIMEDOUT, "the operation was not finished in time"),
        Ok(Err(_)) | Ok(Ok(0)) => Read::Closed,
        Ok(Ok(_)) if buf.last() != Some(&b'\n') => {
            if buf.len() > MAX_LINE {
                Read::Bad(Errno::INVAL, "a line longer than 512 bytes")
            } else {
                Read::Closed
            }
        }
        Ok(Ok(_)) => {
            buf.pop();
            match String::from_utf8(buf) {
                Ok(s) => Read::Line(s),
                Err(_) => Read::Bad(Errno::INVAL, "a line that is not UTF-8"),
            }
        }
    }
}

async fn answer(write: &mut OwnedWriteHalf, text: &str) -> std::io::Result<()> {
    tokio::time::timeout(OP_TIMEOUT, write.write_all(text.as_bytes()))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Serves one connection: operations until the client closes it, idles too long, or
/// sends something that cannot be read past.
async fn serve(
    stream: UnixStream,
    line: &str,
    calls: mpsc::Sender<UapiCall>,
) -> std::io::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    if cred.uid() != 0 && cred.uid() != me {
        warn!(line = %line, uid = cred.uid(), pid = ?cred.pid(), "refused UAPI connection from an unprivileged user");
        return answer(&mut write, &Errno::status(Some(Errno::PERM))).await;
    }
    let mut reader = BufReader::new(read);
    loop {
        let op = match read_line(&mut reader, IDLE_TIMEOUT).await {
            Read::Line(op) => op,
            Read::Closed | Read::Bad(Errno::TIMEDOUT, _) => return Ok(()),
            Read::Bad(errno, why) => return refuse(&mut write, line, errno, why).await,
        };
        let request = match op.as_str() {
            "get=1" => match read_line(&mut reader, OP_TIMEOUT).await {
                Read::Line(l) if l.is_empty() => UapiRequest::Get {
                    line: line.to_string(),
                },
                Read::Line(_) => {
                    return refuse(
                        &mut write,
                        line,
                        Errno::INVAL,
                        "get=1 not followed by a blank line",
                    )
                    .await
                }
                Read::Closed => return Ok(()),
                Read::Bad(errno, why) => return refuse(&mut write, line, errno, why).await,
            },
            "set=1" => match read_set(&mut reader).await {
                Ok(lines) => match parse_set(lines.iter().map(String::as_str)) {
                    Ok(set) => UapiRequest::Set {
                        line: line.to_string(),
                        set: Box::new(set),
                    },
                    Err(r) => {
                        warn!(line = %line, errno = r.errno.0, "wg set refused, nothing changed: {r}");
                        answer(&mut write, &Errno::status(Some(r.errno))).await?;
                        continue;
                    }
                },
                Err(None) => return Ok(()),
                Err(Some((errno, why))) => return refuse(&mut write, line, errno, why).await,
            },
            _ => {
                return refuse(
                    &mut write,
                    line,
                    Errno::INVAL,
                    "not an operation (get=1 or set=1)",
                )
                .await
            }
        };
        let get = matches!(request, UapiRequest::Get { .. });
        let (tx, rx) = oneshot::channel();
        let result = if calls.send((request, tx)).await.is_err() {
            Err(Refusal::new(Errno::NODEV, "the daemon is shutting down"))
        } else {
            rx.await
                .unwrap_or_else(|_| Err(Refusal::new(Errno::NODEV, "the daemon is shutting down")))
        };
        let text = match result {
            Ok(Some(device)) if get => device.to_text() + &Errno::status(None),
            Ok(_) => Errno::status(None),
            // The supervisor logged it, naming the line.
            Err(r) => Errno::status(Some(r.errno)),
        };
        answer(&mut write, &text).await?;
    }
}

/// The lines of a `set=1` up to the blank line; `Err(None)` when the client closed.
async fn read_set<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
) -> Result<Vec<String>, Option<(Errno, &'static str)>> {
    let deadline = tokio::time::Instant::now() + OP_TIMEOUT;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match read_line(reader, left).await {
            Read::Line(l) if l.is_empty() => return Ok(lines),
            Read::Line(_) if lines.len() >= MAX_SET_LINES => {
                return Err(Some((Errno::INVAL, "a set of more than 4096 lines")))
            }
            Read::Line(l) => lines.push(l),
            Read::Closed => return Err(None),
            Read::Bad(errno, why) => return Err(Some((errno, why))),
        }
    }
}

/// Answers `errno` and closes: the rest of what the client sent cannot be trusted to
/// start an operation.
async fn refuse(
    write: &mut OwnedWriteHalf,
    line: &str,
    errno: Errno,
    why: &str,
) -> std::io::Result<()> {
    warn!(line = %line, errno = errno.0, "UAPI request refused ({why}); nothing changed, connection closed");
    answer(write, &Errno::status(Some(errno))).await?;
    write.shutdown().await
}
