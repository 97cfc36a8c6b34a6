//! The metrics endpoint: `GET /metrics` over HTTP/1.x on `[metrics] listen`, answered
//! with [`super::metrics::encode`] of a [`Snapshot`] the supervisor takes for each
//! scrape (a typed call on its own channel, as the control socket's requests are).
//!
//! The HTTP is a few dozen lines of our own over tokio rather than a server crate: one
//! read-only path, one request per connection (`Connection: close`), no body, no
//! keep-alive, no TLS (loopback by default; a remote scraper goes through a proxy or
//! `allow_remote`); hyper with a service layer would add more code than it saves.
//!
//! Rules: a request head larger than [`MAX_HEAD`] or not complete within
//! [`REQUEST_TIMEOUT`] is dropped; at most [`MAX_CONNECTIONS`] are served at once.
//! The endpoint follows the config ([`MetricsServer::sync`]): started, moved or
//! stopped by a reload; a port that cannot be bound is logged (once per reason) and
//! tried again at the next pass, and never stops the daemon or a line.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::metrics::{encode, Snapshot, CONTENT_TYPE};
use crate::config::metrics::Metrics;

/// Largest request head read.
pub const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// A scrape's request for a snapshot, answered by the supervisor.
pub type MetricsCall = oneshot::Sender<Snapshot>;

/// The endpoint, running or not, as the config asks.
pub struct MetricsServer {
    calls: mpsc::Sender<MetricsCall>,
    running: Option<(Metrics, JoinHandle<()>)>,
    /// Why the last bind failed (logged once per reason).
    failed: Option<String>,
}

impl MetricsServer {
    /// Not listening yet; `calls` reaches the supervisor.
    pub fn new(calls: mpsc::Sender<MetricsCall>) -> MetricsServer {
        MetricsServer {
            calls,
            running: None,
            failed: None,
        }
    }

    /// Listens as `wanted` says: starts, moves or stops the endpoint.
    pub fn sync(&mut self, wanted: Option<Metrics>) {
        if self.running.as_ref().map(|(m, _)| *m) == wanted && self.failed.is_none() {
            return;
        }
        if let Some((old, task)) = self.running.take() {
            task.abort();
            info!(listen = %old.listen, "metrics endpoint stopped");
        }
        let Some(m) = wanted else {
            self.failed = None;
            return;
        };
        match bind(m) {
            Ok(listener) => {
                info!(listen = %m.listen, "metrics endpoint: http://{}/metrics", m.listen);
                let task = tokio::spawn(serve(listener, self.calls.clone()));
                self.running = Some((m, task));
                self.failed = None;
            }
            Err(e) => {
                let reason = format!("cannot listen on {} for [metrics]: {e}", m.listen);
                if self.failed.as_ref() != Some(&reason) {
                    warn!("{reason}; retrying every pass (choose another metrics.listen)");
                }
                self.failed = Some(reason);
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }
}

fn bind(m: Metrics) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(m.listen)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

async fn serve(listener: TcpListener, calls: mpsc::Sender<MetricsCall>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, from)) => {
                let calls = calls.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, calls).await {
                        debug!(%from, error = %e, "metrics connection ended with an error");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the request head: up to the blank line, at most [`MAX_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return String::from_utf8(head).ok();
            }
            if head.len() > MAX_HEAD {
                return None;
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .ok()
        .flatten()
}

async fn handle(mut stream: TcpStream, calls: mpsc::Sender<MetricsCall>) -> std::io::Result<()> {
    let Some(head) = read_head(&mut stream).await else {
        return Ok(());
    };
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let (tx, rx) = oneshot::channel();
            match calls.send(tx).await {
                Ok(()) => match rx.await {
                    Ok(snapshot) => ("200 OK", CONTENT_TYPE, encode(&snapshot)),
                    Err(_) => unavailable(),
                },
                Err(_) => unavailable(),
            }
        }
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "twnode: the metrics are at /metrics\n".to_string(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    let write = async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

fn unavailable() -> (&'static str, &'static str, String) {
    (
        "503 Service Unavailable",
        "text/plain; charset=utf-8",
        "the daemon is shutting down\n".to_string(),
    )
}
