//! Underlay UDP sockets: opened with socket2, batched with `recvmmsg`/`sendmmsg`.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::batch::{Batch, BATCH, SLOT};
use super::DataplaneError;

/// Socket buffer size asked for with SO_RCVBUFFORCE/SO_SNDBUFFORCE: the default 212 KB
/// drops bursts at gigabit rates, and `net.core.rmem_max` cannot be raised inside a
/// child network namespace.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Opens a non-blocking UDP socket bound to `addr`. `IP_FREEBIND` lets a nested line
/// bind to its parent's VIP before that address exists.
pub fn bind(addr: SocketAddr) -> Result<Socket, DataplaneError> {
    let setup = |what| move |source| DataplaneError::Setup { what, source };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(setup("cannot open UDP socket"))?;
    socket
        .set_nonblocking(true)
        .map_err(setup("cannot make the UDP socket non-blocking"))?;
    match addr.ip() {
        IpAddr::V4(_) => socket.set_freebind(true),
        IpAddr::V6(_) => socket.set_freebind_ipv6(true),
    }
    .map_err(setup("cannot set IP_FREEBIND"))?;
    force_buffers(&socket);
    socket
        .bind(&SockAddr::from(addr))
        .map_err(|source| DataplaneError::Bind { addr, source })?;
    Ok(socket)
}

/// Raises the socket buffers past `rmem_max` where we may (CAP_NET_ADMIN), else as far
/// as the sysctl allows.
pub(super) fn force_buffers(socket: &Socket) {
    force_buffers_fd(socket.as_raw_fd());
}

/// [`force_buffers`] for a socket socket2 does not know (AF_XDP).
pub(super) fn force_buffers_fd(fd: RawFd) {
    let size = SOCKET_BUFFER as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, force, size).is_err() {
            let _ = setsockopt_int(fd, plain, size);
        }
    }
}

fn setsockopt_int(fd: RawFd, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: fd is an open socket; the value pointer and length describe a c_int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
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

/// The local address a socket is bound to.
pub fn local_addr(socket: &Socket) -> Option<SocketAddr> {
    socket.local_addr().ok().and_then(|a| a.as_socket())
}

/// Receives up to [`BATCH`] datagrams into the batch's input slots with one `recvmmsg`;
/// fills `in_len` and `from`. Returns how many arrived (`WouldBlock` when none).
pub fn recv_batch(socket: &Socket, batch: &mut Batch) -> io::Result<usize> {
    // Zeroed: the kernel writes only msg_namelen bytes, and the whole struct is read.
    let mut names: [MaybeUninit<libc::sockaddr_storage>; BATCH] =
        [const { MaybeUninit::zeroed() }; BATCH];
    let inputs = batch.inputs_mut();
    let base = inputs.as_mut_ptr();
    let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    // SAFETY: an all-zero mmsghdr is a valid empty header.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..BATCH {
        // SAFETY: slot i lies inside `inputs` (BATCH * SLOT bytes).
        iovs[i].iov_base = unsafe { base.add(i * SLOT) }.cast();
        iovs[i].iov_len = SLOT;
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = names[i].as_mut_ptr().cast();
        msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    }
    // SAFETY: msgs, iovs and names stay alive and unmoved for the call; each iovec
    // points at a distinct SLOT-byte region of the batch's input buffer.
    let n = unsafe { recvmmsg(socket, &mut msgs)? };
    for i in 0..n {
        batch.in_len[i] = msgs[i].msg_len as usize;
        let len = msgs[i].msg_hdr.msg_namelen;
        // SAFETY: names[i] is zeroed, and the kernel wrote a sockaddr of `len` bytes
        // into it.
        let addr = unsafe { SockAddr::new(names[i].assume_init(), len) };
        batch.from[i] = addr.as_socket();
    }
    Ok(n)
}

/// One non-blocking `recvmmsg` into `msgs`; returns how many messages arrived.
///
/// # Safety
/// Every header in `msgs` must point at iovecs, names and control buffers that stay
/// alive and unmoved for the call and that the kernel may write.
pub(crate) unsafe fn recvmmsg(socket: &Socket, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: upheld by the caller; the count never exceeds the slice.
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
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sends one datagram (handshake messages, cookies, keepalives).
pub fn send_one(socket: &Socket, packet: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket.send_to(packet, &SockAddr::from(to))
}
