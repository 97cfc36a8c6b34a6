//! Underlay UDP sockets of WireGuard lines: opened with socket2, their buffers raised,
//! and their segmentation offloads: GSO (`UDP_SEGMENT`, Linux 4.18) to send a run of
//! equal-size datagrams to one endpoint as one super-datagram, and GRO (`UDP_GRO`, Linux
//! 5.0) to receive coalesced datagrams as one, split by the `gso_size` the kernel reports
//! in a control message ([`gro_segment`]). The batched calls themselves are
//! [`super::socket`]'s.
//!
//! Both offloads are probed per socket at runtime: a kernel that refuses the socket
//! option, or a send that fails because the route's device cannot segment, turns the
//! feature off for that line (logged once) and the plain one-datagram-per-message path
//! takes over.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::socket::{self, Received, Want, SOL_UDP, UDP_GRO, UDP_SEGMENT};
use super::DataplaneError;

/// Socket buffer size asked for with SO_RCVBUFFORCE/SO_SNDBUFFORCE: the default 212 KB
/// drops bursts at gigabit rates, and `net.core.rmem_max` cannot be raised inside a
/// child network namespace.
pub const SOCKET_BUFFER: usize = 4 << 20;
/// Receive buffer for one (possibly coalesced) datagram with GRO on.
pub const GRO_BUF: usize = 65_536;

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
        if socket::setsockopt(fd, libc::SOL_SOCKET, force, &size).is_err() {
            let _ = socket::setsockopt(fd, libc::SOL_SOCKET, plain, &size);
        }
    }
}

/// The local address a socket is bound to.
pub fn local_addr(socket: &Socket) -> Option<SocketAddr> {
    socket.local_addr().ok().and_then(|a| a.as_socket())
}

/// Whether this kernel knows `UDP_SEGMENT` on this socket (setting a socket-wide size of
/// 0 changes nothing: segmentation is asked for per send).
pub fn probe_gso(socket: &Socket) -> bool {
    let off: libc::c_int = 0;
    socket::setsockopt(socket.as_raw_fd(), SOL_UDP, UDP_SEGMENT, &off).is_ok()
}

/// Turns `UDP_GRO` on; false when the kernel refuses (then every datagram arrives alone).
pub fn enable_gro(socket: &Socket) -> bool {
    let on: libc::c_int = 1;
    socket::setsockopt(socket.as_raw_fd(), SOL_UDP, UDP_GRO, &on).is_ok()
}

/// Whether a send error means "this path cannot segment": the caller turns GSO off.
pub fn is_gso_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::ENOPROTOOPT)
    )
}

/// One `recvmmsg` of datagrams into `arena`, cut into `msgs` equal message buffers, each
/// with its sender; with GRO on, a message may be a run of coalesced datagrams
/// ([`gro_segment`]). Returns how many messages arrived (`WouldBlock` when none).
pub fn recv_segments(
    socket: &Socket,
    arena: &mut [u8],
    msgs: usize,
    out: &mut [Received],
) -> io::Result<usize> {
    let want = Want {
        source: true,
        control: Some((SOL_UDP, UDP_GRO)),
    };
    socket::recv(socket, arena, msgs, want, out)
}

/// The size of each datagram in a received message: the segment size GRO reported, or
/// the whole message when it came alone (the last datagram of a run may be shorter).
pub fn gro_segment(m: &Received) -> usize {
    match m.control {
        Some(size) if size > 0 => size as usize,
        _ => m.len.max(1),
    }
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
        assert_eq!(socket::send(&tx, &views, to, gso).ok(), Some(sizes.len()));

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
                assert!(m.len > 0 && !m.truncated && m.from.is_some());
                let mut pos = 0;
                while pos < m.len {
                    let end = (pos + gro_segment(m)).min(m.len);
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
