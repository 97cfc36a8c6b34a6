//! The system calls on the data plane's sockets that socket2 does not offer: batched
//! receive (`recvmmsg` into one arena cut into equal message buffers, with each sender's
//! address and one control message read back), batched send (`sendmmsg` of many packets
//! to one address, runs of equal-size UDP datagrams as one GSO message), and
//! `setsockopt` for any option. Used by the UDP sockets of WireGuard lines
//! ([`super::udp`]), the raw IP sockets of IP tunnel lines ([`super::iptunnel`]) and the
//! AF_XDP ports ([`super::xsk`]).
//!
//! Hand-written over libc, in one place. socket2 and tokio have no `recvmmsg` or
//! `sendmmsg`. nix 0.31 has both, but its `sendmmsg` gives every message the same
//! control messages (a GSO run needs its own segment size), its `MultiHeaders` are
//! allocated on the heap and hold pointers into one call's buffers (kept per thread they
//! would point at freed iovecs between calls), it asserts (panics) when a control buffer
//! is short, and `IPV6_HDRINCL` and the AF_XDP options are not among its socket options,
//! so half of the calls would stay hand-written anyway. quinn-udp is UDP only and owns
//! its socket type. Here the headers live on the stack, only the entries a call uses are
//! written, and nothing is allocated.
//!
//! Rules: a call never reads a byte the kernel did not write: addresses and control
//! messages are read within the lengths it returned, so nothing needs zeroing first.
//! Every `unsafe` says why it holds.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{SockAddr, Socket};

/// The most messages one call takes (the largest batch of any path: a TUN read split
/// into its segments on the WireGuard path).
pub const MAX_MSGS: usize = 128;
/// The kernel's limit of segments in one GSO send (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;
/// Largest payload of one GSO send: the IPv6 payload limit minus the UDP header, rounded
/// down so IPv4 and IPv6 both fit.
pub const MAX_GSO_BYTES: usize = 65_000;

/// The UDP socket level and its offload options (`linux/udp.h`; not in libc).
pub const SOL_UDP: libc::c_int = 17;
/// Segment a send into datagrams of the given size (Linux 4.18).
pub const UDP_SEGMENT: libc::c_int = 103;
/// Receive coalesced datagrams, their size in a control message (Linux 5.0).
pub const UDP_GRO: libc::c_int = 104;

/// Control-message room for one `int` or `u16` option, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Cmsg([u8; 32]);

/// `setsockopt(fd, level, opt, value)`, the value's size as its length.
pub fn setsockopt<T>(fd: RawFd, level: libc::c_int, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live T, readable for size_of::<T>() bytes during the call; the
    // kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A message header with one buffer list, an address and a control buffer (null and 0
/// where there is none).
fn header(
    iov: *mut libc::iovec,
    iovlen: usize,
    name: *mut libc::c_void,
    namelen: libc::socklen_t,
    control: *mut libc::c_void,
    controllen: usize,
) -> libc::mmsghdr {
    // SAFETY: an all-zero mmsghdr is a valid empty header (the libc struct has private
    // padding fields, so it cannot be written as a literal).
    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
    let hdr = &mut m.msg_hdr;
    hdr.msg_iov = iov;
    hdr.msg_iovlen = iovlen;
    hdr.msg_name = name;
    hdr.msg_namelen = namelen;
    hdr.msg_control = control;
    hdr.msg_controllen = controllen;
    m
}

/// What a receive reads back besides the data.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    /// The sender's address ([`Received::from`]).
    pub source: bool,
    /// The one int-valued control message to read ([`Received::control`]), as (level,
    /// type); the socket option that makes the kernel send it is the caller's.
    pub control: Option<(libc::c_int, libc::c_int)>,
}

/// Where one received message lies in the arena, and what came with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Received {
    /// Offset of the message in the arena.
    pub start: usize,
    /// Bytes received (at most the message's share of the arena).
    pub len: usize,
    /// The message did not fit its buffer and was cut (`MSG_TRUNC`).
    pub truncated: bool,
    /// The sender, when asked for ([`Want::source`]).
    pub from: Option<SocketAddr>,
    /// The asked control message's value ([`Want::control`]), if the kernel sent one.
    pub control: Option<libc::c_int>,
}

/// One non-blocking `recvmmsg` into `arena`, cut into `count` equal message buffers
/// (at most [`MAX_MSGS`] and `out.len()`). Fills `out` and returns how many messages
/// arrived (`WouldBlock` when none).
pub fn recv(
    socket: &Socket,
    arena: &mut [u8],
    count: usize,
    want: Want,
    out: &mut [Received],
) -> io::Result<usize> {
    const N: usize = MAX_MSGS;
    let count = count.min(N).min(out.len()).max(1);
    let per = arena.len() / count;
    let base = arena.as_mut_ptr();
    // Only the `count` entries in use are written: zeroing all N on every call cost
    // microseconds per packet at low rates.
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
        let (name, namelen) = if want.source {
            (
                names[i].as_mut_ptr().cast(),
                size_of::<libc::sockaddr_storage>() as libc::socklen_t,
            )
        } else {
            (std::ptr::null_mut(), 0)
        };
        let (control, controllen) = match want.control {
            Some(_) => (cmsgs[i].as_mut_ptr().cast(), size_of::<Cmsg>()),
            None => (std::ptr::null_mut(), 0),
        };
        headers[i].write(header(iov, 1, name, namelen, control, controllen));
    }
    // SAFETY: the first `count` headers were initialised above.
    let msgs: &mut [libc::mmsghdr] =
        unsafe { std::slice::from_raw_parts_mut(headers.as_mut_ptr().cast(), count) };
    // SAFETY: every header points at live, distinct buffers (the arena's slices, names and
    // control buffers above) that stay put for the call and that the kernel may write; the
    // count never exceeds the slice.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for i in 0..n {
        let hdr = &msgs[i].msg_hdr;
        out[i] = Received {
            start: i * per,
            len: msgs[i].msg_len as usize,
            truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
            from: if want.source {
                // SAFETY: the kernel wrote msg_namelen bytes of an address into names[i].
                unsafe { socket_addr(names[i].as_ptr(), hdr.msg_namelen) }
            } else {
                None
            },
            // SAFETY: the kernel wrote msg_controllen bytes of control messages into the
            // buffer the header points at (cmsgs[i]).
            control: want
                .control
                .and_then(|(level, kind)| unsafe { control_int(hdr, level, kind) }),
        };
    }
    Ok(n)
}

/// The address of `len` bytes the kernel wrote at `name`; `None` for a family other
/// than IPv4 and IPv6 or a short one.
///
/// # Safety
/// `len` bytes at `name` must be initialised (only those are read).
unsafe fn socket_addr(
    name: *const libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let len = len as usize;
    if len < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: the family is the first field and lies within the `len` bytes written.
    let family = unsafe { std::ptr::addr_of!((*name).ss_family).read() };
    match libc::c_int::from(family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: a whole sockaddr_in was written; read_unaligned makes no alignment
            // claim beyond the storage's.
            let a: libc::sockaddr_in = unsafe { std::ptr::read_unaligned(name.cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: a whole sockaddr_in6 was written.
            let a: libc::sockaddr_in6 = unsafe { std::ptr::read_unaligned(name.cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The value of the first `int` control message of `level` and `kind` in a received
/// header (one too short to hold an `int` is passed over: its bytes were not all
/// written).
///
/// # Safety
/// The header's control buffer must hold `msg_controllen` bytes the kernel wrote.
unsafe fn control_int(
    hdr: &libc::msghdr,
    level: libc::c_int,
    kind: libc::c_int,
) -> Option<libc::c_int> {
    // SAFETY: CMSG_FIRSTHDR and CMSG_NXTHDR stay within msg_controllen bytes (which the
    // kernel wrote) and return null at the end; each cmsghdr they return lies inside.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == level
                && (*c).cmsg_type == kind
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as usize
            {
                // read_unaligned: CMSG_DATA's alignment is not assumed.
                return Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(c).cast::<libc::c_int>(),
                ));
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// Sends `packets` (each a pointer and length the caller keeps alive) to `to`, in order,
/// with one `sendmmsg` (retried on a partial send). With `gso` (UDP sockets only), runs
/// of equal-size datagrams (the last of a run may be shorter) go as one message with a
/// `UDP_SEGMENT` control message. At most [`MAX_MSGS`] packets go. Returns how many
/// packets the kernel took, or the error that stopped it with the count sent before (so
/// the caller can tell a GSO refusal from a full queue).
pub fn send(
    socket: &Socket,
    packets: &[(*const u8, usize)],
    to: SocketAddr,
    gso: bool,
) -> Result<usize, (usize, io::Error)> {
    const N: usize = MAX_MSGS;
    let to = SockAddr::from(to);
    let count = packets.len().min(N);
    // Only the entries in use are written (zeroing all N cost about 14 KB of memset
    // per send, most of it for batches of one packet).
    let mut iovs: [MaybeUninit<libc::iovec>; N] = [const { MaybeUninit::uninit() }; N];
    let mut cmsgs: [MaybeUninit<Cmsg>; N] = [const { MaybeUninit::uninit() }; N];
    let mut msgs: [MaybeUninit<libc::mmsghdr>; N] = [const { MaybeUninit::uninit() }; N];
    // Packets carried by each message.
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
        let (control, controllen) = if k > 1 {
            let c = cmsgs[m].write(Cmsg([0; 32]));
            (c.0.as_mut_ptr().cast(), cmsg_space(size_of::<u16>()))
        } else {
            (std::ptr::null_mut(), 0)
        };
        let name = to.as_ptr() as *mut libc::c_void;
        let hdr = &msgs[m]
            .write(header(
                iovs[i].as_mut_ptr(),
                k,
                name,
                to.len(),
                control,
                controllen,
            ))
            .msg_hdr;
        if k > 1 {
            // SAFETY: msg_control points at 32 zeroed, aligned bytes, more than
            // CMSG_SPACE(2); CMSG_FIRSTHDR therefore returns a header inside that buffer.
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
    let mut sent = 0; // packets sent
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

/// Sends one packet (handshake messages, cookies, keepalive probes and their
/// reflections: rare).
pub fn send_one(socket: &Socket, packet: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket.send_to(packet, &SockAddr::from(to))
}

fn cmsg_space(len: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE(len as u32) as usize }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;
    use socket2::{Domain, Protocol, Type};

    fn bound(addr: &str) -> Option<Socket> {
        let addr: SocketAddr = addr.parse().unwrap();
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).ok()?;
        s.bind(&SockAddr::from(addr)).ok()?;
        Some(s)
    }

    /// Receives until `n` messages arrived (the sends may take a moment on loopback).
    fn recv_all(
        rx: &Socket,
        arena: &mut [u8],
        count: usize,
        want: Want,
        n: usize,
    ) -> Vec<Received> {
        let mut out = [Received::default(); 4];
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < n {
            assert!(std::time::Instant::now() < deadline, "got {}", got.len());
            match recv(rx, arena, count, want, &mut out) {
                Ok(k) => got.extend_from_slice(&out[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn received_messages_carry_their_sender_length_and_truncation() {
        for (rx_addr, tx_addr) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
            // A host without IPv6 loopback has nothing to test there.
            let (Some(rx), Some(tx)) = (bound(rx_addr), bound(tx_addr)) else {
                continue;
            };
            let to = rx.local_addr().unwrap();
            tx.send_to(&[1; 100], &to).unwrap();
            tx.send_to(&[2; 300], &to).unwrap();
            let mut arena = [0u8; 2 * 200];
            let want = Want {
                source: true,
                control: None,
            };
            let got = recv_all(&rx, &mut arena, 2, want, 2);
            let from = tx.local_addr().unwrap().as_socket();
            assert_eq!(
                (got[0].start, got[0].len, got[0].truncated),
                (0, 100, false)
            );
            assert_eq!(
                (got[1].start, got[1].len, got[1].truncated),
                (200, 200, true)
            );
            assert!(got.iter().all(|m| m.from == from && m.control.is_none()));
            assert_eq!(arena[..100], [1; 100]);
            assert_eq!(arena[200..], [2; 200]);
        }
    }

    #[test]
    fn no_source_asked_means_none_read() {
        let rx = bound("127.0.0.1:0").unwrap();
        let tx = bound("127.0.0.1:0").unwrap();
        tx.send_to(&[7; 10], &rx.local_addr().unwrap()).unwrap();
        let mut arena = [0u8; 64];
        let want = Want {
            source: false,
            control: None,
        };
        let got = recv_all(&rx, &mut arena, 1, want, 1);
        assert_eq!((got[0].len, got[0].from), (10, None));
    }

    #[test]
    fn an_int_control_message_is_read_back_and_a_shorter_one_is_not() {
        // IP_RECVTTL makes the kernel send each datagram's TTL as an int; IP_RECVTOS
        // its TOS as one byte, too short to read as an int.
        let rx = bound("127.0.0.1:0").unwrap();
        let tx = bound("127.0.0.1:0").unwrap();
        let on: libc::c_int = 1;
        setsockopt(rx.as_raw_fd(), libc::IPPROTO_IP, libc::IP_RECVTTL, &on).unwrap();
        setsockopt(rx.as_raw_fd(), libc::IPPROTO_IP, libc::IP_RECVTOS, &on).unwrap();
        tx.set_ttl(42).unwrap();
        tx.set_tos(0x28).unwrap();
        let to = rx.local_addr().unwrap();
        tx.send_to(&[7; 10], &to).unwrap();
        tx.send_to(&[7; 10], &to).unwrap();
        let mut arena = [0u8; 64];
        let ttl = Want {
            source: false,
            control: Some((libc::IPPROTO_IP, libc::IP_TTL)),
        };
        assert_eq!(recv_all(&rx, &mut arena, 1, ttl, 1)[0].control, Some(42));
        let tos = Want {
            source: false,
            control: Some((libc::IPPROTO_IP, libc::IP_TOS)),
        };
        assert_eq!(recv_all(&rx, &mut arena, 1, tos, 1)[0].control, None);
    }
}
