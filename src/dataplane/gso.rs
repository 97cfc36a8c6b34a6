//! UDP segmentation offloads for the underlay socket: GSO (`UDP_SEGMENT`, Linux 4.18) to
//! send a run of equal-size datagrams to one endpoint as one super-datagram, and GRO
//! (`UDP_GRO`, Linux 5.0) to receive coalesced datagrams as one, split here by the
//! `gso_size` the kernel reports in a control message.
//!
//! Both are probed per socket at runtime: a kernel that refuses the socket option, or a
//! send that fails because the route's device cannot segment, turns the feature off for
//! that line (logged once) and the plain one-datagram-per-message path takes over.
//!
//! Hand-written over `libc` because neither socket2 nor tokio exposes `sendmmsg`/`recvmmsg`
//! with per-message control data; quinn-udp has it but owns its own socket type.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{SockAddr, Socket};

/// The kernel's limit of segments in one GSO send (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;
/// Largest payload of one GSO send: the IPv6 payload limit minus the UDP header, rounded
/// down so IPv4 and IPv6 both fit.
pub const MAX_GSO_BYTES: usize = 65_000;
/// Receive buffer for one (possibly coalesced) datagram with GRO on.
pub const GRO_BUF: usize = 65_536;

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// Control-message room for one `int` or `u16` option, 8-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Cmsg([u8; 32]);

impl Cmsg {
    pub const ZERO: Cmsg = Cmsg([0; 32]);
}

fn setsockopt_udp(socket: &Socket, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the socket is open; value and its length describe one c_int.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            SOL_UDP,
            opt,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether this kernel knows `UDP_SEGMENT` on this socket (setting a socket-wide size of
/// 0 changes nothing: segmentation is asked for per send).
pub fn probe_gso(socket: &Socket) -> bool {
    setsockopt_udp(socket, UDP_SEGMENT, 0).is_ok()
}

/// Turns `UDP_GRO` on; false when the kernel refuses (then every datagram arrives alone).
pub fn enable_gro(socket: &Socket) -> bool {
    setsockopt_udp(socket, UDP_GRO, 1).is_ok()
}

/// Whether a send error means "this path cannot segment": the caller turns GSO off.
pub fn is_gso_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::ENOPROTOOPT)
    )
}

/// Sends `packets` (each a slice the caller keeps alive) to `to`, in order. With `gso`,
/// runs of equal-size datagrams (the last of a run may be shorter) go as one message with
/// a `UDP_SEGMENT` control message; all messages go in one `sendmmsg` (retried on a
/// partial send). Returns how many datagrams the kernel took, or the error that stopped
/// the first message (so the caller can tell a GSO refusal from a full queue).
pub fn send_segments(
    socket: &Socket,
    packets: &[(*const u8, usize)],
    to: SocketAddr,
    gso: bool,
) -> Result<usize, (usize, io::Error)> {
    const N: usize = super::pool::SEGS;
    let to = SockAddr::from(to);
    let count = packets.len().min(N);
    // Only the entries in use are initialised (zeroing all N cost about 14 KB of
    // memset per send, most of it for batches of one packet).
    let mut iovs: [MaybeUninit<libc::iovec>; N] = [const { MaybeUninit::uninit() }; N];
    let mut cmsgs: [MaybeUninit<Cmsg>; N] = [const { MaybeUninit::uninit() }; N];
    let mut msgs: [MaybeUninit<libc::mmsghdr>; N] = [const { MaybeUninit::uninit() }; N];
    // Datagrams carried by each message.
    let mut segs = [0usize; N];
    let mut m = 0; // messages built
    let mut i = 0;
    while i < count {
        // One message: packet i and, with GSO, the equal-size ones after it.
        let size = packets[i].1;
        let mut k = 1;
        let mut bytes = size;
        if gso {
            while i + k < count
                && k < MAX_SEGMENTS
                && packets[i + k].1 <= size
                && bytes + packets[i + k].1 <= MAX_GSO_BYTES
            {
                bytes += packets[i + k].1;
                k += 1;
                if packets[i + k - 1].1 < size {
                    break; // a shorter datagram ends a run
                }
            }
        }
        for (j, p) in packets[i..i + k].iter().enumerate() {
            iovs[i + j].write(libc::iovec {
                iov_base: p.0 as *mut libc::c_void,
                iov_len: p.1,
            });
        }
        // SAFETY: an all-zero mmsghdr is a valid empty header.
        let hdr = &mut msgs[m].write(unsafe { std::mem::zeroed() }).msg_hdr;
        hdr.msg_iov = iovs[i].as_mut_ptr();
        hdr.msg_iovlen = k;
        hdr.msg_name = to.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = to.len();
        if k > 1 {
            let space = cmsg_space(size_of::<u16>());
            hdr.msg_control = cmsgs[m].write(Cmsg::ZERO).0.as_mut_ptr().cast();
            hdr.msg_controllen = space;
            // SAFETY: msg_control points at 32 aligned bytes, more than CMSG_SPACE(2);
            // CMSG_FIRSTHDR therefore returns a header inside that buffer.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(hdr);
                (*c).cmsg_level = SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size as u16);
            }
        }
        segs[m] = k;
        m += 1;
        i += k;
    }
    let mut done = 0; // messages sent
    let mut sent = 0; // datagrams sent
    let mut retried = false;
    while done < m {
        // SAFETY: msgs[done..m] are initialised headers pointing at initialised iovecs,
        // the address and control buffers above and at packet buffers the caller keeps
        // alive; the kernel only reads them.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr().cast::<libc::mmsghdr>().add(done),
                (m - done) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            for s in &segs[done..done + n as usize] {
                sent += s;
            }
            done += n as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            // Give the queue a moment rather than drop a whole burst; once.
            io::ErrorKind::WouldBlock if !retried => {
                retried = true;
                std::thread::yield_now();
                continue;
            }
            _ => return Err((sent, e)),
        }
    }
    Ok(sent)
}

fn cmsg_space(len: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE(len as u32) as usize }
}

/// Where each received datagram (or coalesced run) lies in the receive arena.
#[derive(Clone, Copy, Default)]
pub struct Received {
    /// Offset of the message in the arena.
    pub start: usize,
    /// Bytes received.
    pub len: usize,
    /// Size of each coalesced datagram (the last may be shorter); `len` when alone.
    pub seg: usize,
    pub from: Option<SocketAddr>,
}

/// One `recvmmsg` into `arena`, cut into `msgs_n` equal message buffers. Fills `out` and
/// returns how many messages arrived (`WouldBlock` when none).
pub fn recv_segments(
    socket: &Socket,
    arena: &mut [u8],
    msgs_n: usize,
    out: &mut [Received],
) -> io::Result<usize> {
    const N: usize = super::pool::RX_MSGS_MAX;
    let count = msgs_n.min(N).min(out.len()).max(1);
    let per = arena.len() / count;
    let base = arena.as_mut_ptr();
    // Only the `count` headers in use are initialised: zeroing all N (about 30 KB) on
    // every call cost microseconds per packet at low rates.
    let mut names: [MaybeUninit<libc::sockaddr_storage>; N] = [const { MaybeUninit::uninit() }; N];
    let mut iovs: [MaybeUninit<libc::iovec>; N] = [const { MaybeUninit::uninit() }; N];
    let mut cmsgs: [MaybeUninit<Cmsg>; N] = [const { MaybeUninit::uninit() }; N];
    let mut headers: [MaybeUninit<libc::mmsghdr>; N] = [const { MaybeUninit::uninit() }; N];
    for i in 0..count {
        let iov = iovs[i].write(libc::iovec {
            // SAFETY: message i's buffer, [i * per, (i + 1) * per), lies inside the arena.
            iov_base: unsafe { base.add(i * per) }.cast(),
            iov_len: per,
        });
        // SAFETY: an all-zero mmsghdr is a valid empty header.
        let m = headers[i].write(unsafe { std::mem::zeroed() });
        let hdr = &mut m.msg_hdr;
        hdr.msg_iov = iov;
        hdr.msg_iovlen = 1;
        // Zeroed: the kernel writes only msg_namelen bytes of it, and the whole struct is
        // read back below.
        names[i] = MaybeUninit::zeroed();
        hdr.msg_name = names[i].as_mut_ptr().cast();
        hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_control = cmsgs[i].as_mut_ptr().cast();
        hdr.msg_controllen = size_of::<Cmsg>();
    }
    // SAFETY: the first `count` headers were initialised above.
    let msgs: &mut [libc::mmsghdr] =
        unsafe { std::slice::from_raw_parts_mut(headers.as_mut_ptr().cast(), count) };
    // SAFETY: every header points at live, distinct iovecs, names and control buffers
    // that stay put for the call.
    let n = unsafe { super::udp::recvmmsg(socket, msgs)? };
    for i in 0..n {
        let hdr = &msgs[i].msg_hdr;
        let len = msgs[i].msg_len as usize;
        let mut seg = len;
        // SAFETY: the kernel filled msg_controllen bytes of control data in cmsgs[i];
        // the CMSG_* macros walk only inside it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            while !c.is_null() {
                if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                    let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    if v > 0 {
                        seg = v as usize;
                    }
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
        // SAFETY: names[i] was zeroed above (so every byte is initialised) and the
        // kernel wrote a sockaddr of msg_namelen bytes into it.
        let addr = unsafe { SockAddr::new(names[i].assume_init(), hdr.msg_namelen) };
        out[i] = Received {
            start: i * per,
            len: if hdr.msg_flags & libc::MSG_TRUNC != 0 {
                0 // truncated: dropped by the caller as malformed
            } else {
                len
            },
            seg: seg.max(1),
            from: addr.as_socket(),
        };
    }
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod test {
    use super::*;
    use socket2::{Domain, Protocol, Type};

    fn loopback_socket() -> Socket {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0))))
            .unwrap();
        s
    }

    /// Datagrams of `sizes`, each filled with its index, sent with or without GSO and
    /// received with or without GRO over loopback: every datagram arrives once, whole
    /// and in order, whatever the kernel coalesced.
    fn round_trip(gso: bool, gro: bool) {
        let tx = loopback_socket();
        let rx = loopback_socket();
        let to = rx.local_addr().unwrap().as_socket().unwrap();
        let gso = gso && probe_gso(&tx);
        let gro = gro && enable_gro(&rx);
        let sizes = [1200usize, 1200, 1200, 1200, 700, 1200, 1200, 300, 1452];
        let packets: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8; n])
            .collect();
        let views: Vec<(*const u8, usize)> =
            packets.iter().map(|p| (p.as_ptr(), p.len())).collect();
        assert_eq!(send_segments(&tx, &views, to, gso).ok(), Some(sizes.len()));

        let mut arena = vec![0u8; 4 * GRO_BUF];
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut msgs = [Received::default(); 8];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < sizes.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "got {} datagrams",
                got.len()
            );
            let n = match recv_segments(&rx, &mut arena, 4, &mut msgs) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            for m in &msgs[..n] {
                assert!(m.len > 0 && m.from.is_some());
                let mut pos = 0;
                while pos < m.len {
                    let end = (pos + m.seg).min(m.len);
                    got.push(arena[m.start + pos..m.start + end].to_vec());
                    pos = end;
                }
            }
        }
        assert_eq!(got, packets, "gso={gso} gro={gro}");
    }

    #[test]
    fn datagrams_survive_gso_send_and_gro_receive_split() {
        round_trip(true, true);
    }

    #[test]
    fn datagrams_survive_gso_send_to_a_socket_without_gro() {
        round_trip(true, false);
    }

    #[test]
    fn datagrams_survive_plain_send_and_receive() {
        round_trip(false, false);
    }
}
