//! What AF_XDP moves between two hosts here, next to `raw_ceiling`'s figure for raw IP
//! sockets: the ceiling of an `--af-xdp` IP tunnel line (issue 6's GRE target is a
//! quarter of plain veth, which raw sockets cannot reach on this host). No tunnel runs.
//! The throughput harness runs it as its `xdptx` variant (this `send`, `raw_ceiling
//! recv`):
//!
//!   ip netns exec B xdp_ceiling recv IFNAME SECONDS
//!   ip netns exec A xdp_ceiling send IFNAME SRC DST DST_MAC SECONDS [SIZE]
//!
//! `send` fills IFNAME's queue 0 for SECONDS with Ethernet frames to DST_MAC holding
//! IPv4 packets of SIZE bytes (protocol 47, a GRE header in front of zeros), the same
//! packets `raw_ceiling send` sends, through twnode's own AF_XDP port
//! ([`twnode::dataplane::xsk::XskTx`], copy mode) in batches of 64: no routing, no
//! neighbour lookup, no netfilter on the way out.
//! `recv` loads an 18-instruction XDP program on IFNAME (native mode where the driver
//! has it) that hands IPv4 protocol-47 frames of the receive queue to an AF_XDP socket
//! (copy mode) and passes everything else to the kernel; it counts what arrives and
//! prints `<bits per second> <packets>` of IP bytes received between the first and the
//! last packet, as `raw_ceiling recv` does (it stops 1 s after traffic ends, or after
//! SECONDS + 5 s). Closing the program's link detaches it. On veth, receiving this way
//! is slower than a raw socket (veth copies each packet into an XDP frame first), so
//! twnode does not receive through AF_XDP; `recv` is here to show that. Start `send`
//! first when both ends use AF_XDP: binding the sender's socket failed with EBUSY once
//! the peer veth had an XDP program.
//!
//! `recv` waits in poll(2) when its ring is empty, as a daemon would. The bpf(2) calls
//! are written out against the kernel's `union bpf_attr` layout: the crates that wrap
//! them (aya, libbpf-rs) bring a BPF toolchain or a C build, too much for a measurement.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use twnode::dataplane::xsk::{Xsk, XskTx, ETH_LEN, FRAME};
use twnode::wire::checksum;

#[path = "ceiling/meter.rs"]
mod meter;
use meter::Meter;

/// Receive UMEM frames (and ring entries).
const FRAMES: usize = 2048;
/// Packets per send, as a TUN read's worth in twnode.
const BATCH: usize = 64;

fn usage() -> ! {
    eprintln!(
        "usage: xdp_ceiling recv IFNAME SECONDS | xdp_ceiling send IFNAME SRC DST DST_MAC SECONDS [SIZE]"
    );
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

fn check(r: libc::c_long, what: &str) -> io::Result<libc::c_long> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(r)
}

fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::other("bad interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::other(format!("no interface {name}"))),
        i => Ok(i),
    }
}

fn mac_of(name: &str) -> io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))?;
    parse_mac(text.trim())
}

fn parse_mac(s: &str) -> io::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(io::Error::other(format!("{s}: not a MAC address")));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| io::Error::other(format!("{s}: not a MAC")))?;
    }
    Ok(mac)
}

// --- bpf(2): an XSKMAP, the program, its link to the interface ----------------------------

/// `bpf(cmd, attr)` with a zeroed 128-byte `union bpf_attr` that `fill` writes into.
fn bpf(cmd: libc::c_long, fill: impl FnOnce(&mut [u8; 128]), what: &str) -> io::Result<OwnedFd> {
    let mut attr = [0u8; 128];
    fill(&mut attr);
    // SAFETY: attr is a 128-byte buffer laid out as the kernel's union bpf_attr for
    // `cmd` (trailing bytes zero); pointers inside it outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), attr.len()) };
    let fd = check(fd, what)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put32(a: &mut [u8], at: usize, v: u32) {
    a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(a: &mut [u8], at: usize, v: u64) {
    a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// One eBPF instruction: opcode, dst and src registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut i = [0u8; 8];
    i[0] = code;
    i[1] = (src << 4) | dst;
    i[2..4].copy_from_slice(&off.to_ne_bytes());
    i[4..8].copy_from_slice(&imm.to_ne_bytes());
    i
}

/// `xdp_md->rx_queue_index`-keyed redirect of IPv4 protocol-47 frames into `map`;
/// anything else (and a frame whose queue has no socket) goes on to the kernel.
fn program(map: i32) -> Vec<[u8; 8]> {
    const LDXW: u8 = 0x61;
    const LDXH: u8 = 0x69;
    const LDXB: u8 = 0x71;
    const MOVX: u8 = 0xbf;
    const MOVK: u8 = 0xb7;
    const ADDK: u8 = 0x07;
    const JGTX: u8 = 0x2d;
    const JNEK: u8 = 0x55;
    const LDDW: u8 = 0x18;
    const CALL: u8 = 0x85;
    const EXIT: u8 = 0x95;
    const PSEUDO_MAP_FD: u8 = 1;
    const REDIRECT_MAP: i32 = 51;
    const XDP_PASS: i32 = 2;
    vec![
        insn(LDXW, 6, 1, 16, 0),              // 0: r6 = ctx->rx_queue_index
        insn(LDXW, 2, 1, 0, 0),               // 1: r2 = ctx->data
        insn(LDXW, 3, 1, 4, 0),               // 2: r3 = ctx->data_end
        insn(MOVX, 4, 2, 0, 0),               // 3: r4 = r2
        insn(ADDK, 4, 0, 0, 24),              // 4: r4 += 24 (Ethernet + IPv4 up to protocol)
        insn(JGTX, 4, 3, 10, 0),              // 5: if r4 > data_end goto pass (16)
        insn(LDXH, 5, 2, 12, 0),              // 6: r5 = ethertype (network order)
        insn(JNEK, 5, 0, 8, 0x0008),          // 7: if not IPv4 goto pass
        insn(LDXB, 5, 2, 23, 0),              // 8: r5 = IPv4 protocol
        insn(JNEK, 5, 0, 6, 47),              // 9: if not GRE goto pass
        insn(LDDW, 1, PSEUDO_MAP_FD, 0, map), // 10-11: r1 = map
        insn(0, 0, 0, 0, 0),
        insn(MOVX, 2, 6, 0, 0),            // 12: r2 = queue index (the key)
        insn(MOVK, 3, 0, 0, XDP_PASS),     // 13: r3 = XDP_PASS when the key has no socket
        insn(CALL, 0, 0, 0, REDIRECT_MAP), // 14: r0 = bpf_redirect_map(r1, r2, r3)
        insn(EXIT, 0, 0, 0, 0),            // 15
        insn(MOVK, 0, 0, 0, XDP_PASS),     // 16: pass: r0 = XDP_PASS
        insn(EXIT, 0, 0, 0, 0),            // 17
    ]
}

struct Attached {
    _map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
}

fn attach(ifindex: u32, xsk: i32) -> io::Result<Attached> {
    const MAP_CREATE: libc::c_long = 0;
    const MAP_UPDATE_ELEM: libc::c_long = 2;
    const PROG_LOAD: libc::c_long = 5;
    const LINK_CREATE: libc::c_long = 28;
    const MAP_TYPE_XSKMAP: u32 = 17;
    const PROG_TYPE_XDP: u32 = 6;
    const ATTACH_XDP: u32 = 37;
    let map = bpf(
        MAP_CREATE,
        |a| {
            put32(a, 0, MAP_TYPE_XSKMAP);
            put32(a, 4, 4); // key: the queue index
            put32(a, 8, 4); // value: the socket
            put32(a, 12, 64);
        },
        "bpf(BPF_MAP_CREATE, XSKMAP)",
    )?;
    let (key, value) = (0u32, xsk as u32);
    // BPF_MAP_UPDATE_ELEM returns 0, not a descriptor: keep it out of `bpf`'s OwnedFd.
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, map.as_raw_fd() as u32);
    put64(&mut attr, 8, &key as *const u32 as u64);
    put64(&mut attr, 16, &value as *const u32 as u64);
    // SAFETY: attr is a bpf_attr for BPF_MAP_UPDATE_ELEM whose pointers outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, MAP_UPDATE_ELEM, attr.as_ptr(), 128) };
    check(r, "bpf(BPF_MAP_UPDATE_ELEM)")?;

    let insns = program(map.as_raw_fd());
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let prog = bpf(
        PROG_LOAD,
        |a| {
            put32(a, 0, PROG_TYPE_XDP);
            put32(a, 4, insns.len() as u32);
            put64(a, 8, insns.as_ptr() as u64);
            put64(a, 16, license.as_ptr() as u64);
            put32(a, 24, 1); // log_level
            put32(a, 28, log.len() as u32);
            put64(a, 32, log.as_mut_ptr() as u64);
            a[48..56].copy_from_slice(b"twn_xdp\0");
            put32(a, 68, ATTACH_XDP);
        },
        "bpf(BPF_PROG_LOAD)",
    )
    .map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        io::Error::new(
            e.kind(),
            format!("{e}; verifier: {}", String::from_utf8_lossy(&log[..end])),
        )
    })?;
    let link = bpf(
        LINK_CREATE,
        |a| {
            put32(a, 0, prog.as_raw_fd() as u32);
            put32(a, 4, ifindex);
            put32(a, 8, ATTACH_XDP);
        },
        "bpf(BPF_LINK_CREATE, BPF_XDP)",
    )?;
    Ok(Attached {
        _map: map,
        _prog: prog,
        _link: link,
    })
}

fn send(
    ifname: &str,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dst_mac: [u8; 6],
    seconds: u64,
    size: usize,
) -> io::Result<()> {
    let index = ifindex(ifname)?;
    let mut eth = [0u8; ETH_LEN];
    eth[0..6].copy_from_slice(&dst_mac);
    eth[6..12].copy_from_slice(&mac_of(ifname)?);
    eth[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    // twnode's own port: what an --af-xdp line sends through.
    let mut port = XskTx::open(index)?;
    let size = size.clamp(28, FRAME - ETH_LEN);
    let mut ip = vec![0u8; size];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 47;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = !checksum::sum(&ip[..20]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip[22..24].copy_from_slice(&0x0800u16.to_be_bytes()); // GRE: IPv4 inside
    let batch = vec![(ip.as_ptr(), ip.len()); BATCH];
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        let (queued, failed) = port.send(&eth, &batch);
        if let Some(e) = failed {
            return Err(e);
        }
        if queued == 0 {
            // Every frame in flight: let the kernel catch up.
            std::thread::yield_now();
        }
    }
    Ok(())
}

fn recv(ifname: &str, seconds: u64) -> io::Result<()> {
    let index = ifindex(ifname)?;
    let xsk = Xsk::open(index, 0, FRAMES, true, false)?;
    let _attached = attach(index, xsk.fd())?;
    let Some(rx) = xsk.rx.as_ref() else {
        return Err(io::Error::other("no receive ring"));
    };
    let fill = &xsk.fill;
    // Every frame starts on the fill ring; a received frame goes back on it.
    let mut spare: Vec<u64> = (0..FRAMES as u64).map(|f| f * FRAME as u64).collect();
    let refill = |spare: &mut Vec<u64>| {
        let prod = fill.producer().load(Ordering::Relaxed);
        let room = fill.size() - prod.wrapping_sub(fill.consumer().load(Ordering::Acquire));
        let n = room.min(spare.len() as u32);
        for i in 0..n {
            if let Some(addr) = spare.pop() {
                // SAFETY: a fill slot between producer and consumer + size is ours.
                unsafe { *fill.slot(prod.wrapping_add(i)) = addr };
            }
        }
        fill.producer()
            .store(prod.wrapping_add(n), Ordering::Release);
    };
    refill(&mut spare);
    let mut meter = Meter::new(seconds);
    while meter.waiting() {
        let (cons, prod) = (
            rx.consumer().load(Ordering::Relaxed),
            rx.producer().load(Ordering::Acquire),
        );
        if cons == prod {
            if fill.needs_wakeup() {
                xsk.wake()?;
            }
            let mut p = libc::pollfd {
                fd: xsk.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&mut p, 1, 200) };
            continue;
        }
        let mut bytes = 0;
        for i in 0..prod.wrapping_sub(cons) {
            // SAFETY: descriptors between consumer and producer are the kernel's.
            let d = unsafe { *rx.slot(cons.wrapping_add(i)) };
            bytes += u64::from(d.len) - ETH_LEN as u64;
            spare.push(d.addr);
        }
        meter.got(u64::from(prod.wrapping_sub(cons)), bytes);
        rx.consumer().store(prod, Ordering::Release);
        refill(&mut spare);
    }
    meter.report();
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("send") => {
            let mac = parse_mac(args.get(5).map_or("", String::as_str)).unwrap_or_else(|_| usage());
            send(
                args.get(2).map_or_else(|| usage(), String::as_str),
                arg(&args, 3),
                arg(&args, 4),
                mac,
                arg(&args, 6),
                args.get(7).map_or(1500, |_| arg(&args, 7)),
            )
        }
        Some("recv") => recv(
            args.get(2).map_or_else(|| usage(), String::as_str),
            arg(&args, 3),
        ),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("xdp_ceiling: {e}");
        std::process::exit(1);
    }
}
