//! The daemon side: listens on the unix socket, checks who is asking, decodes, hands the
//! request to the supervisor and writes its answer back.
//!
//! Rules: the socket is mode 0600 and, beyond the file mode, every connection's peer
//! credentials are checked (root or the daemon's own user only). A malformed or
//! oversized request gets an error response and changes nothing. A connection that
//! sends no request within [`REQUEST_TIMEOUT`], or does not read its answer within
//! [`ANSWER_TIMEOUT`], is closed; at most [`MAX_CONNECTIONS`] are served at once (the
//! next wait in the kernel's backlog), so idle or stuck clients cannot pile up tasks.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, warn};

use super::{decode, encode, ControlError, Request, Response, MAX_MESSAGE};

/// How long a client may take to send its request (one line) after connecting.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read the answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// A request on its way to the supervisor, with the channel for its answer.
pub type Call = (Request, oneshot::Sender<Response>);

/// A bound control socket; removes its file on drop.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds `path` (mode 0600). A stale socket file left by a dead daemon is replaced;
    /// a live daemon on the same path is an error.
    pub fn bind(path: &Path) -> Result<Server, ControlError> {
        let io = |source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::Io {
                    path: path.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another twnode daemon is already listening here; stop it first \
                         or give this one another --control path",
                    ),
                });
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        // Create the socket with no permissions for others from the first instant.
        // SAFETY: umask only changes this process's file-creation mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Accepts connections until the process ends, forwarding requests to `calls`.
    pub async fn serve(self, calls: mpsc::Sender<Call>) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            // Never closed, so acquiring only waits.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let calls = calls.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, calls).await {
                            debug!(error = %e, "control connection ended with an error");
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn handle(stream: UnixStream, calls: mpsc::Sender<Call>) -> std::io::Result<()> {
    let me = unsafe_geteuid();
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    let refused = cred.uid() != 0 && cred.uid() != me;
    // The request is read even when the answer is a refusal: closing the connection
    // under a peer that is still writing would hand it EPIPE instead of the reason.
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_MESSAGE as u64 + 1);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    if let Ok(Err(e)) = read {
        return Err(e);
    }
    let response = if read.is_err() {
        debug!(uid = cred.uid(), pid = ?cred.pid(), "control connection sent no request in time; closed");
        Response::Error {
            message: format!(
                "no request within {} s; closing the connection",
                REQUEST_TIMEOUT.as_secs()
            ),
        }
    } else if refused {
        warn!(uid = cred.uid(), pid = ?cred.pid(), "refused control connection from an unprivileged user");
        Response::Error {
            message: format!(
                "permission denied: user {} may not control twnode; run the command as root (sudo)",
                cred.uid()
            ),
        }
    } else if line.len() > MAX_MESSAGE {
        Response::Error {
            message: format!("request larger than {MAX_MESSAGE} bytes refused"),
        }
    } else {
        match decode::<Request>(line.trim_ascii_end()) {
            Ok(request) => {
                debug!(?request, "control request");
                let (tx, rx) = oneshot::channel();
                if calls.send((request, tx)).await.is_err() {
                    Response::Error {
                        message: "the daemon is shutting down".into(),
                    }
                } else {
                    rx.await.unwrap_or(Response::Error {
                        message: "the daemon dropped the request (shutting down?)".into(),
                    })
                }
            }
            Err(e @ ControlError::Version { .. }) => Response::Error {
                message: e.to_string(),
            },
            Err(e) => Response::Error {
                message: format!("{e}; is this a twnode command of the same version?"),
            },
        }
    };
    let answer = async {
        write.write_all(&encode(&response)).await?;
        write.shutdown().await
    };
    tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
