//! What waking a tokio task costs on this machine, next to a blocking thread and an
//! epoll thread: a UDP echo server on loopback in one of four forms, and a client that
//! sends one datagram every 2 ms and times the answer.
//!
//!   cargo run --release --example wake_latency -- server block &   # recv_from/send_to loop
//!   cargo run --release --example wake_latency -- client
//!
//! Server forms: `block` (a thread blocked in recv_from), `epoll` (a thread in
//! epoll_wait, draining a non-blocking socket after each event: how twnode's data-plane
//! threads and boringtun wait), `tokio` (a task spawned on the multi-thread runtime, as
//! twnode's data plane ran before it had threads of its own; a 250 ms interval task
//! beside it, like a line's timers), `current` (the same on a current-thread runtime).
//! The client prints the median and 10th/90th percentile round trip in microseconds over
//! 2000 datagrams: the difference between forms is the server's cost to wake up and
//! answer. Each echo wakes a sleeping server, as every ping through an idle tunnel wakes
//! each daemon it crosses.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

const SERVER: &str = "127.0.0.1:40000";
const ROUNDS: usize = 2000;

fn usage() -> ! {
    eprintln!("usage: wake_latency server block|epoll|tokio|current | wake_latency client");
    std::process::exit(2)
}

async fn echo_task() -> std::io::Result<()> {
    let socket = tokio::net::UdpSocket::bind(SERVER).await?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        socket.send_to(&buf[..n], from).await?;
    }
}

fn serve(form: &str) -> std::io::Result<()> {
    let runtime = match form {
        "block" => {
            let socket = UdpSocket::bind(SERVER)?;
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = socket.recv_from(&mut buf)?;
                socket.send_to(&buf[..n], from)?;
            }
        }
        "epoll" => return epoll_echo(),
        "tokio" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => usage(),
    };
    runtime.block_on(async {
        tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
            }
        });
        // Spawned, not run by block_on: on the multi-thread runtime block_on's future
        // lives on the calling thread, and every wake-up would cross threads.
        tokio::spawn(echo_task())
            .await
            .map_err(std::io::Error::other)?
    })
}

/// A thread waiting in epoll_wait on a non-blocking socket (edge-triggered), draining it
/// to EAGAIN after each event: the loop boringtun-cli runs, without a runtime.
fn epoll_echo() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = UdpSocket::bind(SERVER)?;
    socket.set_nonblocking(true)?;
    // SAFETY: plain syscalls on descriptors this function owns; `events` outlives them.
    unsafe {
        let epoll = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if epoll < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        if libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut event) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        let mut buf = [0u8; 2048];
        loop {
            if libc::epoll_wait(epoll, events.as_mut_ptr(), 8, -1) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            loop {
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        socket.send_to(&buf[..n], from)?;
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(err) => return Err(err),
                }
            }
        }
    }
}

fn client() -> std::io::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(SERVER)?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut rtts = Vec::with_capacity(ROUNDS);
    let mut buf = [0u8; 2048];
    for _ in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(2));
        let start = Instant::now();
        socket.send(&[1u8; 100])?;
        socket.recv(&mut buf)?;
        rtts.push(start.elapsed().as_secs_f64() * 1e6);
    }
    rtts.sort_by(f64::total_cmp);
    println!(
        "round trip median {:.1} us, p10 {:.1}, p90 {:.1}",
        rtts[ROUNDS / 2],
        rtts[ROUNDS / 10],
        rtts[9 * ROUNDS / 10]
    );
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("server"), Some(form)) => serve(form),
        (Some("client"), None) => client(),
        _ => usage(),
    }
}
