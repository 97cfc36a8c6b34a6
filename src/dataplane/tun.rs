//! TUN devices, created with tun-rs and driven non-blocking through tokio's reactor.

use std::io;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tun_rs::{DeviceBuilder, SyncDevice};

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
        let err = |source| DataplaneError::Tun {
            name: name.to_string(),
            source,
        };
        let dev = DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .packet_information(false)
            .enable(true)
            .build_sync()
            .map_err(err)?;
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

    /// Writes one packet; never blocks (a full queue is an error the caller counts).
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        self.dev.get_ref().send(packet)
    }
}
