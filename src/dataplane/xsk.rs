//! AF_XDP sockets (Linux 4.18+, `CONFIG_XDP_SOCKETS`): frames handed to a network
//! device's queue through shared-memory rings, past the kernel's IP output path.
//!
//! Used to transmit IP tunnel lines' outer packets when the line asks for it
//! (`af_xdp`, [`Transmit`]): a raw socket send pays a route lookup, `ip_output`, the
//! neighbour layer and the qdisc for every packet, and on this kind of host that, not
//! twnode, caps a GRE line (`examples/xdp_ceiling.rs` and `raw_ceiling.rs` measure both
//! paths). An AF_XDP socket in copy mode needs no XDP program and no driver support for
//! transmitting: the kernel builds an skb from each frame and gives it straight to the
//! driver. Receiving stays on the raw sockets: on veth, AF_XDP receive (an XDP program
//! redirecting to the socket) measured slower than a raw socket.
//!
//! What that skips is the point and the price: no routing (the caller supplies the
//! Ethernet header, see [`crate::net::NextHop`]), no netfilter, no qdisc, and no copy
//! to packet sockets on the sending host (tcpdump there does not see these frames; the
//! receiving host does).
//!
//! The ring protocol (`Documentation/networking/af_xdp.rst`): the UMEM is an area of
//! fixed-size frames; userspace puts descriptors (frame address, length) on the TX ring
//! and wakes the kernel with a zero-length `sendto`; the kernel hands each frame back on
//! the completion ring once sent. Every ring is a power-of-two array with a producer and
//! a consumer index, each written by one side only.
//!
//! Written over libc's `if_xdp.h` definitions: the crates that wrap AF_XDP (xsk-rs,
//! libxdp-sys) build libbpf from C, more than the dozen calls used here are worth.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use tracing::{info, warn};

use super::fault::Faults;
use crate::net::NextHop;

/// Bytes per UMEM frame: an Ethernet header and the largest packet the line's MTU lets
/// through on a standard device.
pub const FRAME: usize = 2048;
/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// Frames sent per wake-up in copy mode (the kernel's `TX_BATCH_SIZE`): a longer run
/// needs more than one `sendto`.
const KERNEL_TX_BATCH: usize = 32;

/// One mmap'd ring shared with the kernel: `size` entries of `T`.
pub struct Ring<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const u32,
    descs: *mut T,
    mask: u32,
    map: (NonNull<libc::c_void>, usize),
}

// SAFETY: the ring is plain shared memory; the owner (`Xsk`) decides who touches it.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Ring<T> {
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, size: u32, pgoff: u64) -> io::Result<Ring<T>> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        // SAFETY: maps the ring the kernel made for this socket, at its documented page
        // offset, for the length the offsets reported.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        let Some(map) = NonNull::new(p).filter(|_| p != libc::MAP_FAILED) else {
            return Err(io::Error::last_os_error());
        };
        let base = p.cast::<u8>();
        // SAFETY: XDP_MMAP_OFFSETS put these offsets inside the mapping.
        unsafe {
            Ok(Ring {
                producer: base.add(off.producer as usize).cast(),
                consumer: base.add(off.consumer as usize).cast(),
                flags: base.add(off.flags as usize).cast(),
                descs: base.add(off.desc as usize).cast(),
                mask: size - 1,
                map: (map, len),
            })
        }
    }

    /// The producer index (written by the producing side only).
    pub fn producer(&self) -> &AtomicU32 {
        // SAFETY: inside the live mapping; the kernel uses it as an atomic u32 too.
        unsafe { &*self.producer }
    }

    /// The consumer index (written by the consuming side only).
    pub fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as `producer`.
        unsafe { &*self.consumer }
    }

    /// Whether the kernel asks to be woken (`XDP_RING_NEED_WAKEUP`).
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: inside the live mapping; a stale read costs one extra or one late
        // wake-up, never a wrong frame.
        unsafe { std::ptr::read_volatile(self.flags) & libc::XDP_RING_NEED_WAKEUP != 0 }
    }

    /// Entry `index` (taken modulo the size).
    pub fn slot(&self, index: u32) -> *mut T {
        // SAFETY: the masked index is inside the ring's entries.
        unsafe { self.descs.add((index & self.mask) as usize) }
    }

    /// Number of entries.
    pub fn size(&self) -> u32 {
        self.mask + 1
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.map.0.as_ptr(), self.map.1) };
    }
}

/// An AF_XDP socket in copy mode bound to one queue of one device, with its UMEM of
/// `frames` frames and the rings asked for.
pub struct Xsk {
    fd: OwnedFd,
    umem: NonNull<u8>,
    frames: usize,
    /// Frames given to the kernel to receive into.
    pub fill: Ring<u64>,
    /// Frames the kernel has finished sending.
    pub completion: Ring<u64>,
    /// Received frames (when opened with `rx`).
    pub rx: Option<Ring<libc::xdp_desc>>,
    /// Frames to send (when opened with `tx`).
    pub tx: Option<Ring<libc::xdp_desc>>,
}

// SAFETY: the UMEM and rings are owned by this value; `&mut self` methods (or the
// caller's lock) keep one thread on them at a time.
unsafe impl Send for Xsk {}

impl Drop for Xsk {
    fn drop(&mut self) {
        // SAFETY: the UMEM mapping made in `open`, unmapped once (after the socket's
        // rings, which the fields drop later; the kernel holds its own pin on the pages
        // until the socket closes).
        unsafe { libc::munmap(self.umem.as_ptr().cast(), FRAME * self.frames) };
    }
}

fn check(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(r)
}

/// An AF_XDP socket option, its name in the error.
fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T, what: &str) -> io::Result<()> {
    super::socket::setsockopt(fd, libc::SOL_XDP, opt, v)
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}

impl Xsk {
    /// Opens a socket on `ifindex`'s queue `queue` with a UMEM of `frames` frames
    /// (a power of two) and rings of `frames` entries: fill and completion always,
    /// receive and transmit as asked.
    pub fn open(ifindex: u32, queue: u32, frames: usize, rx: bool, tx: bool) -> io::Result<Xsk> {
        debug_assert!(frames.is_power_of_two());
        // SAFETY: plain socket(2).
        let fd = check(
            unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) },
            "socket(AF_XDP)",
        )?;
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an anonymous private mapping for the UMEM.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                FRAME * frames,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        let Some(umem) = NonNull::new(p.cast::<u8>()).filter(|_| p != libc::MAP_FAILED) else {
            return Err(io::Error::last_os_error());
        };
        let unmap = || {
            // SAFETY: our own mapping, unmapped once on an error path.
            unsafe { libc::munmap(p, FRAME * frames) };
        };
        let size = frames as u32;
        let raw = fd.as_raw_fd();
        let rings = (|| {
            let reg = libc::xdp_umem_reg {
                addr: p as u64,
                len: (FRAME * frames) as u64,
                chunk_size: FRAME as u32,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            setsockopt(raw, libc::XDP_UMEM_REG, &reg, "XDP_UMEM_REG")?;
            setsockopt(raw, libc::XDP_UMEM_FILL_RING, &size, "XDP_UMEM_FILL_RING")?;
            setsockopt(
                raw,
                libc::XDP_UMEM_COMPLETION_RING,
                &size,
                "XDP_UMEM_COMPLETION_RING",
            )?;
            if rx {
                setsockopt(raw, libc::XDP_RX_RING, &size, "XDP_RX_RING")?;
            }
            if tx {
                setsockopt(raw, libc::XDP_TX_RING, &size, "XDP_TX_RING")?;
            }
            // SAFETY: all-zero is a valid xdp_mmap_offsets for the kernel to overwrite.
            let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
            // SAFETY: `off` and `len` are live and sized for the call.
            let r = unsafe {
                libc::getsockopt(
                    raw,
                    libc::SOL_XDP,
                    libc::XDP_MMAP_OFFSETS,
                    (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                    &mut len,
                )
            };
            check(r, "XDP_MMAP_OFFSETS")?;
            let fill = Ring::map(raw, &off.fr, size, libc::XDP_UMEM_PGOFF_FILL_RING)?;
            let completion = Ring::map(raw, &off.cr, size, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?;
            let rx = rx
                .then(|| Ring::map(raw, &off.rx, size, libc::XDP_PGOFF_RX_RING as u64))
                .transpose()?;
            let tx = tx
                .then(|| Ring::map(raw, &off.tx, size, libc::XDP_PGOFF_TX_RING as u64))
                .transpose()?;
            let sa = libc::sockaddr_xdp {
                sxdp_family: libc::AF_XDP as u16,
                sxdp_flags: libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP,
                sxdp_ifindex: ifindex,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: 0,
            };
            // SAFETY: `sa` is a live sockaddr_xdp of the size passed.
            let r = unsafe {
                libc::bind(
                    raw,
                    (&sa as *const libc::sockaddr_xdp).cast(),
                    size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            check(r, "bind(AF_XDP, copy mode)")?;
            Ok((fill, completion, rx, tx))
        })();
        match rings {
            Ok((fill, completion, rx, tx)) => Ok(Xsk {
                fd,
                umem,
                frames,
                fill,
                completion,
                rx,
                tx,
            }),
            Err(e) => {
                unmap();
                Err(e)
            }
        }
    }

    /// The socket's descriptor (for poll, or an XSKMAP).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The frame at UMEM address `addr` (as on the rings): `FRAME` bytes from its
    /// start. The caller writes or reads it only while it is on no ring.
    pub fn frame_ptr(&self, addr: u64) -> *mut u8 {
        let start = (addr as usize / FRAME) % self.frames * FRAME;
        // SAFETY: `start` is a frame boundary inside the UMEM.
        unsafe { self.umem.as_ptr().add(start) }
    }

    /// Wakes the kernel to send what the TX ring holds (or, for receive, to take fill
    /// ring entries). Errors other than "busy, try again" are returned.
    pub fn wake(&self) -> io::Result<()> {
        // SAFETY: a zero-length sendto is AF_XDP's "process your rings".
        let r = unsafe {
            libc::sendto(
                self.fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) => Ok(()),
            _ => Err(e),
        }
    }
}

/// A transmit-only AF_XDP port on one device's queue 0: frames get an Ethernet header
/// in front and go out in order.
pub struct XskTx {
    xsk: Xsk,
    /// UMEM frames not on the TX or completion rings.
    free: Vec<u64>,
}

impl XskTx {
    /// Frames (and ring entries) per port: 512 KiB of UMEM, room for a few batches in
    /// flight.
    pub const FRAMES: usize = 256;

    /// Opens the port on `ifindex`. Fails without CAP_NET_RAW, without AF_XDP in the
    /// kernel, or when another AF_XDP socket holds the queue.
    pub fn open(ifindex: u32) -> io::Result<XskTx> {
        let xsk = Xsk::open(ifindex, 0, Self::FRAMES, false, true)?;
        // Copy mode allocates an skb per frame against the socket's send buffer; the
        // default (about 90 frames in flight) made wake-ups fail with EAGAIN and left
        // frames on the ring until the next batch: a lone ping waited for the next.
        super::udp::force_buffers_fd(xsk.fd());
        let free = (0..Self::FRAMES as u64).map(|f| f * FRAME as u64).collect();
        Ok(XskTx { xsk, free })
    }

    /// Takes back the frames the kernel has sent.
    fn reclaim(&mut self) {
        let cr = &self.xsk.completion;
        let cons = cr.consumer().load(Ordering::Relaxed);
        let prod = cr.producer().load(Ordering::Acquire);
        // The indexes run freely and wrap at 2^32 (after about six hours at 200 000
        // packets a second): count with wrapping arithmetic, never `cons..prod`.
        for i in 0..prod.wrapping_sub(cons) {
            // SAFETY: entries between consumer and producer are the kernel's completions.
            self.free.push(unsafe { *cr.slot(cons.wrapping_add(i)) });
        }
        cr.consumer().store(prod, Ordering::Release);
    }

    /// Sends `packets` (whole IP packets the caller keeps alive) behind `eth`, in order.
    /// Returns how many went on the ring: fewer when it is full or a packet does not fit
    /// a frame (the caller sends the rest another way). Frames on the ring are the
    /// kernel's to send even when a wake-up then fails, so they count as sent and the
    /// wake-up's error comes beside the count: sending them again another way would put
    /// each packet on the wire twice.
    pub fn send(
        &mut self,
        eth: &[u8; ETH_LEN],
        packets: &[(*const u8, usize)],
    ) -> (usize, Option<io::Error>) {
        self.send_checked(eth, packets, || Ok(()))
    }

    /// [`XskTx::send`], with `before_wake` asked before every wake-up: its error counts
    /// as the wake-up's (the tests' injected faults).
    fn send_checked(
        &mut self,
        eth: &[u8; ETH_LEN],
        packets: &[(*const u8, usize)],
        mut before_wake: impl FnMut() -> io::Result<()>,
    ) -> (usize, Option<io::Error>) {
        self.reclaim();
        let Some(tx) = self.xsk.tx.as_ref() else {
            return (0, None);
        };
        let prod = tx.producer().load(Ordering::Relaxed);
        let room = tx.size() - prod.wrapping_sub(tx.consumer().load(Ordering::Acquire));
        let mut n = 0u32;
        for &(ptr, len) in packets {
            if n >= room || len + ETH_LEN > FRAME {
                break;
            }
            let Some(addr) = self.free.pop() else {
                break;
            };
            let frame = self.xsk.frame_ptr(addr);
            // SAFETY: the frame was free (on no ring), FRAME bytes hold the header and
            // the packet (checked above), and the caller keeps `len` bytes at `ptr`
            // alive; a slot between producer and consumer + size is ours to write.
            unsafe {
                std::ptr::copy_nonoverlapping(eth.as_ptr(), frame, ETH_LEN);
                std::ptr::copy_nonoverlapping(ptr, frame.add(ETH_LEN), len);
                *tx.slot(prod.wrapping_add(n)) = libc::xdp_desc {
                    addr,
                    len: (ETH_LEN + len) as u32,
                    options: 0,
                };
            }
            n += 1;
        }
        if n == 0 {
            return (0, None);
        }
        let end = prod.wrapping_add(n);
        tx.producer().store(end, Ordering::Release);
        // Copy mode sends at most KERNEL_TX_BATCH frames per wake-up, fewer when the
        // device or the send buffer is busy: wake until the kernel has taken them all
        // (a frame left on the ring would wait for the next batch), a few times at most.
        for _ in 0..(n as usize).div_ceil(KERNEL_TX_BATCH) + 4 {
            if tx.consumer().load(Ordering::Acquire) == end {
                break;
            }
            if let Err(e) = before_wake().and_then(|()| self.xsk.wake()) {
                return (n as usize, Some(e));
            }
        }
        (n as usize, None)
    }
}

/// A daemon's AF_XDP ports, one per device, shared by the lines that send through it
/// and closed with the last of them.
#[derive(Clone, Default)]
pub struct Ports(Arc<Mutex<HashMap<u32, Weak<Mutex<XskTx>>>>>);

impl Ports {
    /// The port on `ifindex`, opened if no line holds one.
    fn get(&self, ifindex: u32) -> io::Result<Arc<Mutex<XskTx>>> {
        let mut ports = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(port) = ports.get(&ifindex).and_then(Weak::upgrade) {
            return Ok(port);
        }
        let port = Arc::new(Mutex::new(XskTx::open(ifindex)?));
        ports.retain(|_, p| p.strong_count() > 0);
        ports.insert(ifindex, Arc::downgrade(&port));
        Ok(port)
    }
}

enum State {
    /// Sending through the raw socket, and why.
    Waiting(String),
    /// Sending through `port`.
    Ready {
        port: Arc<Mutex<XskTx>>,
        eth: [u8; ETH_LEN],
        mtu: usize,
        hop: NextHop,
    },
}

/// A line's AF_XDP transmit path (`af_xdp = true`): its outer packets go to the next
/// hop's device through an AF_XDP port, once the daemon has found that next hop
/// ([`Transmit::update`], every supervisor pass). Until then, for packets larger than
/// the path's MTU (the kernel answers those with EMSGSIZE and ICMP), and for one batch
/// per pass, the line sends through its raw socket. That batch keeps the kernel's
/// neighbour entry in use, so the kernel goes on confirming the peer's MAC address and
/// the next pass picks up a change.
pub struct Transmit {
    state: RwLock<State>,
    through_kernel: AtomicBool,
    /// Packets sent through AF_XDP since the line started.
    sent: AtomicU64,
}

impl Default for Transmit {
    fn default() -> Self {
        Transmit {
            state: RwLock::new(State::Waiting("the next hop is not looked up yet".into())),
            through_kernel: AtomicBool::new(false),
            sent: AtomicU64::new(0),
        }
    }
}

impl Transmit {
    /// Sends the leading `packets` that fit the path's MTU through the AF_XDP port, in
    /// order; returns how many went (0 when there is no port yet, or this batch is the
    /// pass's one through the kernel). The caller sends the rest through the kernel.
    /// `line` names the line in logs; `faults` are its injected faults.
    pub fn send(&self, line: &str, packets: &[(*const u8, usize)], faults: &Faults) -> usize {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let State::Ready {
            port,
            eth,
            mtu,
            hop,
        } = &*state
        else {
            return 0;
        };
        if self.through_kernel.swap(false, Ordering::Relaxed) {
            return 0;
        }
        let fit = packets.iter().take_while(|p| p.1 <= *mtu).count();
        let (n, failed) = port.lock().unwrap_or_else(|e| e.into_inner()).send_checked(
            eth,
            &packets[..fit],
            || faults.xdp_wake(),
        );
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(e) = failed {
            let why = format!("AF_XDP send on {} failed: {e}", hop.ifname);
            drop(state);
            warn!(line, reason = %why, queued = n, "sending through the kernel until the next hop is looked up again (the frames already on the ring go with the port's next wake-up)");
            *self.state.write().unwrap_or_else(|e| e.into_inner()) = State::Waiting(why);
        }
        n
    }

    /// Takes the next hop the daemon found toward the line's `peer` (or why there is
    /// none) and opens or changes the port to match. Logs changes, naming `line`.
    pub fn update(&self, line: &str, peer: IpAddr, hop: Result<NextHop, String>, ports: &Ports) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let next = match hop {
            Ok(hop) => {
                if matches!(&*state, State::Ready { hop: old, .. } if *old == hop) {
                    self.through_kernel.store(true, Ordering::Relaxed);
                    return;
                }
                match ports.get(hop.ifindex) {
                    Ok(port) => {
                        let mut eth = [0u8; ETH_LEN];
                        eth[..6].copy_from_slice(&hop.dst_mac);
                        eth[6..12].copy_from_slice(&hop.src_mac);
                        let ethertype: u16 = if peer.is_ipv4() { 0x0800 } else { 0x86dd };
                        eth[12..].copy_from_slice(&ethertype.to_be_bytes());
                        info!(line, next_hop = %hop, "sending through AF_XDP");
                        State::Ready {
                            port,
                            eth,
                            mtu: hop.mtu as usize,
                            hop,
                        }
                    }
                    Err(e) => State::Waiting(format!(
                        "cannot open an AF_XDP socket on {}: {e}",
                        hop.ifname
                    )),
                }
            }
            Err(why) => State::Waiting(why),
        };
        if let State::Waiting(why) = &next {
            if !matches!(&*state, State::Waiting(old) if old == why) {
                // Expected while a neighbour is being resolved; `line show` keeps the
                // reason for as long as it lasts.
                info!(line, reason = %why, "AF_XDP transmit waits; sending through the kernel");
            }
        }
        *state = next;
    }

    /// Packets sent through AF_XDP since the line started (the rest of the line's
    /// `tx_packets` went through the kernel).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// What `line show` says: the port in use, or why the kernel sends.
    pub fn describe(&self) -> String {
        match &*self.state.read().unwrap_or_else(|e| e.into_inner()) {
            State::Ready { hop, .. } => format!("AF_XDP on {hop}"),
            State::Waiting(why) => format!("raw socket (AF_XDP waits: {why})"),
        }
    }
}
