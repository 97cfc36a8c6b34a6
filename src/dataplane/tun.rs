//! TUN devices, created with tun-rs and driven non-blocking through tokio's reactor.

use std::io;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tun_rs::{DeviceBuilder, SyncDevice};

use super::batch::{Batch, BATCH};
use super::DataplaneError;

/// A line's TUN device. The kernel removes the device when this is dropped (the last
/// file descriptor closes), so a crashed daemon leaves no device behind.
pub struct Tun {
    dev: AsyncFd<SyncDevice>,
    index: u32,
}

impl Tun {
    /// Creates device `name` with `mtu`, up, without addresses (the daemon adds those
    /// through netlink).
    pub fn create(name: &str, mtu: u16) -> Result<Tun, DataplaneError> {
        Tun::create_for(name, mtu, true)
    }

    /// Like [`Tun::create`]; without `ipv6`, IPv6 is turned off on the device before it
    /// comes up, so the kernel sends no IPv6 (router solicitations, MLD reports) into a
    /// line that cannot carry it.
    pub fn create_for(name: &str, mtu: u16, ipv6: bool) -> Result<Tun, DataplaneError> {
        let err = |source| DataplaneError::Tun {
            name: name.to_string(),
            source,
        };
        let dev = DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .packet_information(false)
            .enable(ipv6)
            .build_sync()
            .map_err(err)?;
        if !ipv6 {
            crate::net::sysctl::disable_ipv6(name).map_err(err)?;
            dev.enabled(true).map_err(err)?;
        }
        dev.set_nonblocking(true).map_err(err)?;
        let index = dev.if_index().map_err(err)?;
        // SAFETY: the device owns its descriptor until it is dropped, which happens only
        // together with this AsyncFd; as_raw_fd always returns that descriptor.
        let dev = unsafe { AsyncFd::register_with_interest(dev, Interest::READABLE) }
            .map_err(|e| err(e.into_parts().1))?;
        Ok(Tun { dev, index })
    }

    /// The kernel's interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The readiness handle for the read loop.
    pub fn fd(&self) -> &AsyncFd<SyncDevice> {
        &self.dev
    }

    /// Reads up to a batch of packets into the batch's input slots, until the device is
    /// drained. Returns how many were read and the error that ended the batch early, if
    /// any (not `WouldBlock`, which is the normal end).
    pub fn read_batch(&self, b: &mut Batch) -> (usize, Option<io::Error>) {
        let mut n = 0;
        while n < BATCH {
            match self.dev.get_ref().recv(b.input_slot(n)) {
                Ok(len) => {
                    b.in_len[n] = len;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return (n, Some(e)),
            }
        }
        (n, None)
    }

    /// Writes one packet; never blocks (a full queue is an error the caller counts).
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        self.dev.get_ref().send(packet)
    }
}
