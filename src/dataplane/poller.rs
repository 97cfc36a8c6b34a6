//! The data plane's own threads: one per CPU, each waiting in `epoll_wait` on the
//! descriptors (TUN devices, UDP and raw sockets) registered with it, and running a
//! descriptor's handler when it becomes readable.
//!
//! Why not the tokio runtime: every ping through an idle line wakes the daemon two or
//! three times, and a wake-up through tokio's I/O driver and scheduler costs 7-14 us
//! more than one through a thread of our own in `epoll_wait` on this 2-core VM
//! (`examples/wake_latency.rs`). The control socket, timers and netlink stay on tokio,
//! which also keeps them responsive while the data plane is flooded.
//!
//! Edge-triggered, as tokio is: a handler returns whether more may be waiting (its
//! batch was full). Such a handler runs again after every other ready one had its turn,
//! so a flooded line cannot starve the others on its thread; one that drained its
//! descriptor waits for the next edge. A handler that panics is logged and dropped;
//! the thread and the other lines on it carry on.
//!
//! Lines go to the thread with the fewest registered descriptors ([`next_thread`];
//! ties in turn), so the threads stay even as lines come and go; both paths of one
//! line share a thread. Its receive path sends what the kernel answered inside a TUN
//! write (a ping reply, ACKs) itself, under the device's read turn
//! ([`super::tun::Tun::try_read_turn`]): with the outbound path on another thread, that
//! thread, woken by the same answer, would race it for the turn and often win, and the
//! reply would wait for a cross-CPU wake-up (measured: 20 us more on the reply hop).
//! Stacked lines land on different threads, so a stack is a pipeline over the cores.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tracing::{error, info};

/// Events taken from the kernel per `epoll_wait`.
const EVENTS: usize = 64;

/// A descriptor's handler: runs one batch; true when more may be waiting.
type Handler = Box<dyn Fn() -> bool + Send + Sync>;

struct Entry {
    run: Handler,
    /// Cleared by [`Registration`]'s drop: a handler already taken from the kernel
    /// (or waiting for another turn) does not run once its line is stopping.
    live: AtomicBool,
    /// In its worker's ready list (touched by that thread only).
    pending: AtomicBool,
    /// Names the path in logs ("line tunnel_a outbound").
    what: String,
}

/// One data-plane thread's epoll instance and the handlers registered with it.
struct Worker {
    index: usize,
    epoll: OwnedFd,
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
    /// Whether its thread runs: started when the first line picks it, so a daemon
    /// with one line has one data-plane thread.
    started: Mutex<bool>,
    /// Its `epoll_wait` failed and the thread ended (never seen): no new lines.
    failed: AtomicBool,
}

impl Worker {
    fn entries(&self) -> MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        // Plain data: a panic elsewhere cannot leave it half-updated.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The thread's loop: wait, collect the ready handlers, run each once, again.
    fn run(&self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        // Handlers with more to do, then those that just became ready. Grows to the
        // number of lines on this thread once, then is reused.
        let mut ready: Vec<Arc<Entry>> = Vec::new();
        loop {
            // Without pending work, sleep until an event; with some, only look.
            let timeout = if ready.is_empty() { -1 } else { 0 };
            // SAFETY: `events` is valid for EVENTS entries for the whole call.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    timeout,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!(thread = self.index, error = %e,
                       "epoll_wait failed; this data-plane thread stops, its lines are restarted on the others");
                self.failed.store(true, Ordering::Relaxed);
                // Their paths now count as stopped: the supervisor restarts the lines
                // (and registers shared receive paths anew) on the other threads.
                for entry in self.entries().values() {
                    entry.live.store(false, Ordering::Release);
                }
                return;
            }
            if n > 0 {
                let entries = self.entries();
                for event in events.iter().take(n as usize) {
                    let token = event.u64;
                    if let Some(entry) = entries.get(&token) {
                        // Already pending: it runs this round anyway.
                        if !entry.pending.swap(true, Ordering::Relaxed) {
                            ready.push(entry.clone());
                        }
                    }
                }
            }
            ready.retain(|entry| {
                let more = entry.live.load(Ordering::Acquire)
                    && match catch_unwind(AssertUnwindSafe(|| (entry.run)())) {
                        Ok(more) => more,
                        Err(_) => {
                            error!(
                                path = %entry.what,
                                "data-plane handler panicked; this path stops until its line is restarted"
                            );
                            entry.live.store(false, Ordering::Release);
                            false
                        }
                    };
                entry.pending.store(more, Ordering::Relaxed);
                more
            });
        }
    }
}

/// The data-plane threads (one per CPU), each started on first use.
struct Poller {
    workers: Vec<Arc<Worker>>,
    next_worker: AtomicUsize,
    next_token: AtomicU64,
}

fn poller() -> io::Result<&'static Poller> {
    static POLLER: OnceLock<Poller> = OnceLock::new();
    static START: Mutex<()> = Mutex::new(());
    if let Some(p) = POLLER.get() {
        return Ok(p);
    }
    // One starter at a time, so a failure can be reported and retried.
    let _start = START.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = POLLER.get() {
        return Ok(p);
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut workers = Vec::with_capacity(threads);
    for index in 0..threads {
        // SAFETY: epoll_create1 returns a new descriptor that we own, or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        workers.push(Arc::new(Worker {
            index,
            epoll,
            entries: Mutex::new(HashMap::new()),
            started: Mutex::new(false),
            failed: AtomicBool::new(false),
        }));
    }
    Ok(POLLER.get_or_init(|| Poller {
        workers,
        next_worker: AtomicUsize::new(0),
        next_token: AtomicU64::new(1),
    }))
}

/// The index of the smallest load (`None`: a thread that takes no more), looking from
/// `start` (modulo the length) so that equal loads are taken in turn.
fn least_loaded(loads: &[Option<usize>], start: usize) -> Option<usize> {
    let n = loads.len();
    (0..n)
        .map(|k| (start + k) % n)
        .filter_map(|i| loads[i].map(|load| (load, i)))
        .min_by_key(|&(load, _)| load)
        .map(|(_, i)| i)
}

/// One data-plane thread, to register descriptors with.
#[derive(Clone)]
pub struct Thread(Arc<Worker>);

/// The data-plane thread with the fewest registered descriptors, the next in turn
/// among equals (the threads start on first use). A thread whose `epoll_wait` failed
/// gets no more lines.
pub fn next_thread() -> io::Result<Thread> {
    let poller = poller()?;
    let loads: Vec<Option<usize>> = poller
        .workers
        .iter()
        .map(|w| (!w.failed.load(Ordering::Relaxed)).then(|| w.entries().len()))
        .collect();
    let start = poller.next_worker.fetch_add(1, Ordering::Relaxed);
    let Some(i) = least_loaded(&loads, start) else {
        return Err(io::Error::other("every data-plane thread has stopped"));
    };
    let worker = poller.workers[i].clone();
    let mut started = worker.started.lock().unwrap_or_else(|e| e.into_inner());
    if !*started {
        let runner = worker.clone();
        std::thread::Builder::new()
            .name(format!("twnode-data{i}"))
            .spawn(move || runner.run())?;
        *started = true;
        info!(
            thread = i,
            of = poller.workers.len(),
            "data-plane thread started"
        );
    }
    drop(started);
    Ok(Thread(worker))
}

/// A descriptor registered with a data-plane thread. Dropping it stops the handler:
/// the descriptor leaves the epoll set and a handler already picked up does not run
/// again (one running at that moment finishes its batch).
pub struct Registration {
    worker: Arc<Worker>,
    token: u64,
    fd: RawFd,
    entry: Arc<Entry>,
}

impl Thread {
    /// Whether the thread's `epoll_wait` failed and it ended: it runs nothing any more.
    pub fn failed(&self) -> bool {
        self.0.failed.load(Ordering::Relaxed)
    }

    /// Runs `handler` on this thread whenever `fd` becomes readable (edge-triggered:
    /// the handler reads until the descriptor is drained, or returns true to be called
    /// again after the other ready handlers). `fd` must stay open as long as the
    /// returned [`Registration`]; `what` names the path in logs.
    pub fn register(
        &self,
        fd: RawFd,
        what: String,
        handler: impl Fn() -> bool + Send + Sync + 'static,
    ) -> io::Result<Registration> {
        register_on(self.0.clone(), fd, what, Box::new(handler))
    }
}

fn register_on(
    worker: Arc<Worker>,
    fd: RawFd,
    what: String,
    handler: Handler,
) -> io::Result<Registration> {
    if worker.failed.load(Ordering::Relaxed) {
        return Err(io::Error::other(format!(
            "data-plane thread {} has stopped",
            worker.index
        )));
    }
    let token = poller()?.next_token.fetch_add(1, Ordering::Relaxed);
    let entry = Arc::new(Entry {
        run: handler,
        live: AtomicBool::new(true),
        pending: AtomicBool::new(false),
        what,
    });
    worker.entries().insert(token, entry.clone());
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: token,
    };
    // SAFETY: both descriptors are open; `event` is a valid epoll_event.
    let rc = unsafe {
        libc::epoll_ctl(
            worker.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            &mut event,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        worker.entries().remove(&token);
        return Err(e);
    }
    // What arrived before this is not lost: EPOLL_CTL_ADD reports a descriptor that is
    // readable already.
    Ok(Registration {
        worker,
        token,
        fd,
        entry,
    })
}

impl Registration {
    /// Whether the handler stopped by itself (it panicked): the path is dead while the
    /// line still looks alive, so the owner has to restart it.
    pub fn stopped(&self) -> bool {
        !self.entry.live.load(Ordering::Acquire)
    }

    /// The path's name, as given at registration.
    pub fn what(&self) -> &str {
        &self.entry.what
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.entry.live.store(false, Ordering::Release);
        // SAFETY: EPOLL_CTL_DEL ignores the event argument; a descriptor already
        // closed just fails, which changes nothing.
        unsafe {
            libc::epoll_ctl(
                self.worker.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.fd,
                std::ptr::null_mut(),
            );
        }
        self.worker.entries().remove(&self.token);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn lines_go_to_the_least_loaded_thread_in_turn_among_equals_never_to_a_failed_one() {
        assert_eq!(least_loaded(&[Some(4), Some(2), Some(3)], 0), Some(1));
        assert_eq!(least_loaded(&[Some(2), Some(2)], 0), Some(0));
        assert_eq!(least_loaded(&[Some(2), Some(2)], 1), Some(1));
        assert_eq!(least_loaded(&[Some(2), Some(2)], 7), Some(1));
        assert_eq!(least_loaded(&[None, Some(9)], 0), Some(1));
        assert_eq!(least_loaded(&[None, None], 0), None);
    }

    #[test]
    fn a_readable_socket_runs_its_handler_until_drained_and_stops_after_drop() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let (got_tx, got) = mpsc::channel();
        let sock = rx.try_clone().unwrap();
        let reg = next_thread()
            .unwrap()
            .register(rx.as_raw_fd(), "test".into(), move || {
                let mut buf = [0u8; 16];
                // One datagram per call: returns true while there may be more.
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        let _ = got_tx.send(buf[..n].to_vec());
                        true
                    }
                    Err(_) => false,
                }
            })
            .unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i], to).unwrap();
        }
        for i in 0..5u8 {
            assert_eq!(got.recv_timeout(Duration::from_secs(5)).unwrap(), [i]);
        }
        drop(reg);
        tx.send_to(&[9], to).unwrap();
        assert!(
            got.recv_timeout(Duration::from_millis(300)).is_err(),
            "a dropped registration's handler ran"
        );
    }

    #[test]
    fn a_panicking_handler_is_dropped_and_its_thread_serves_the_others() {
        let thread = next_thread().unwrap();
        let (got_tx, got) = mpsc::channel();
        let bad = UdpSocket::bind("127.0.0.1:0").unwrap();
        let good = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut regs = Vec::new();
        for (rx, panics) in [(&bad, true), (&good, false)] {
            rx.set_nonblocking(true).unwrap();
            let sock = rx.try_clone().unwrap();
            let got_tx = got_tx.clone();
            let reg = thread.register(rx.as_raw_fd(), "test".into(), move || {
                let mut buf = [0u8; 16];
                let n = sock.recv(&mut buf).unwrap_or(0);
                assert!(!panics, "a handler that panics");
                let _ = got_tx.send(n);
                false
            });
            regs.push(reg.unwrap());
        }
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[1], bad.local_addr().unwrap()).unwrap();
        tx.send_to(&[1, 2], good.local_addr().unwrap()).unwrap();
        assert_eq!(got.recv_timeout(Duration::from_secs(5)).unwrap(), 2);
        // And again, after the panic: the thread carries on, the bad handler is gone.
        tx.send_to(&[1], bad.local_addr().unwrap()).unwrap();
        tx.send_to(&[1, 2, 3], good.local_addr().unwrap()).unwrap();
        assert_eq!(got.recv_timeout(Duration::from_secs(5)).unwrap(), 3);
        assert!(got.recv_timeout(Duration::from_millis(200)).is_err());
        assert!(regs[0].stopped() && !regs[1].stopped());
    }
}
