//! The kernel's ceiling for a userspace IP tunnel on this machine: how many bytes per
//! second raw IP sockets move between two hosts when userspace does nothing but call
//! `sendmmsg` and `recvmmsg`. No TUN device, no TCP, no tunnel core: every GRE or IPIP
//! packet twnode sends takes this path plus its own work, so a GRE line cannot beat
//! this figure. The throughput harness runs it as its `rawmax` variant:
//!
//!   ip netns exec B raw_ceiling recv 198.51.100.20 5
//!   ip netns exec A raw_ceiling send 203.0.113.10 198.51.100.20 5 1500
//!
//! `send` fills the path for SECONDS with IPv4 packets of SIZE bytes (protocol 47, a
//! GRE header in front of zeros) in batches of 64; `recv` counts what arrives on a raw
//! protocol-47 socket and prints `<bits per second> <packets>` of IP bytes received
//! between the first and the last packet (it stops 1 s after traffic ends, or after
//! SECONDS + 5 s).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

#[path = "ceiling/meter.rs"]
mod meter;
use meter::Meter;

const BATCH: usize = 64;
const SLOT: usize = 2048;

fn usage() -> ! {
    eprintln!("usage: raw_ceiling send SRC DST SECONDS [SIZE] | raw_ceiling recv LOCAL SECONDS");
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

fn socket(local: Ipv4Addr) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(47)))?;
    s.set_header_included_v4(true)?;
    s.set_send_buffer_size(4 << 20)?;
    s.set_recv_buffer_size(4 << 20)?;
    s.bind(&SockAddr::from(SocketAddr::new(local.into(), 0)))?;
    Ok(s)
}

fn send(src: Ipv4Addr, dst: Ipv4Addr, seconds: u64, size: usize) -> io::Result<()> {
    let s = socket(src)?;
    let size = size.clamp(28, SLOT);
    let mut packet = vec![0u8; size];
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    packet[6] = 0x40; // DF
    packet[8] = 64;
    packet[9] = 47;
    packet[12..16].copy_from_slice(&src.octets());
    packet[16..20].copy_from_slice(&dst.octets());
    packet[22..24].copy_from_slice(&0x0800u16.to_be_bytes()); // GRE: IPv4 inside
    let to = SockAddr::from(SocketAddr::new(dst.into(), 0));
    let mut iov = [libc::iovec {
        iov_base: packet.as_mut_ptr().cast(),
        iov_len: size,
    }];
    // SAFETY: an all-zero mmsghdr is a valid empty header.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for m in &mut msgs {
        m.msg_hdr.msg_iov = iov.as_mut_ptr();
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
        m.msg_hdr.msg_namelen = to.len();
    }
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        // SAFETY: every header points at the one packet buffer, the iovec and the
        // address above, all alive for the call; the kernel only reads them.
        let n = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(e);
            }
        }
    }
    Ok(())
}

fn recv(local: Ipv4Addr, seconds: u64) -> io::Result<()> {
    let s = socket(local)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = vec![0u8; BATCH * SLOT];
    let base = buf.as_mut_ptr();
    let mut iovs: Vec<libc::iovec> = (0..BATCH)
        .map(|i| libc::iovec {
            // SAFETY: slot i lies inside `buf` (BATCH * SLOT bytes).
            iov_base: unsafe { base.add(i * SLOT) }.cast(),
            iov_len: SLOT,
        })
        .collect();
    // SAFETY: an all-zero mmsghdr is a valid empty header.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut meter = Meter::new(seconds);
    while meter.waiting() {
        // SAFETY: the headers point at distinct SLOT-byte regions of `buf`, alive and
        // unmoved for the call.
        let n = unsafe {
            libc::recvmmsg(
                s.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let msgs = &msgs[..n as usize];
        meter.got(n as u64, msgs.iter().map(|m| u64::from(m.msg_len)).sum());
    }
    meter.report();
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("send") => send(
            arg(&args, 2),
            arg(&args, 3),
            arg(&args, 4),
            args.get(5).map_or(1500, |_| arg(&args, 5)),
        ),
        Some("recv") => recv(arg(&args, 2), arg(&args, 3)),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("raw_ceiling: {e}");
        std::process::exit(1);
    }
}
