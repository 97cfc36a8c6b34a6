//! TUN devices, created with tun-rs, non-blocking, read and written on the data-plane
//! threads ([`super::poller`]): offloads (TSO/USO with GRO on writes) unless turned off,
//! reads split into segments into the thread's buffers ([`super::pool`]), and a read turn
//! per device so that one flow is never read by two threads at once.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use tun_rs::{DeviceBuilder, GROTable, SyncDevice};

use super::pool::{seg_views, Buffers, SEGS, TUN_OFFSET};
use super::stats::LineStats;
use super::DataplaneError;
use crate::tunnel::DropReason;

/// Whether lines use offloads (TUN TSO/USO + GRO for every line; UDP GSO/GRO for
/// WireGuard lines): yes unless
/// the environment variable `TWNODE_OFFLOAD` is `0`, `off`, `no` or `false` when the
/// daemon starts (a switch for debugging and for testing the plain path).
pub fn offload_wanted() -> bool {
    static WANTED: OnceLock<bool> = OnceLock::new();
    *WANTED.get_or_init(|| {
        let off = std::env::var("TWNODE_OFFLOAD").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "0" | "off" | "no" | "false"
            )
        });
        if off {
            tracing::info!("TWNODE_OFFLOAD={}: lines run without offloads", "0");
        }
        !off
    })
}

/// The most segments a 64 KB super-packet splits into on a device whose MTU is at least
/// [`MIN_MTU_FOR_SEGMENT_BOUND`] (TCP over IPv4 with options: MSS >= MTU - 60, so
/// 65535 / 1025 < 64).
const MAX_SEGMENTS_PER_READ: usize = 64;
const MIN_MTU_FOR_SEGMENT_BOUND: u16 = 1085;

/// A line's TUN device. The kernel removes the device when this is dropped (the last
/// file descriptor closes), so a crashed daemon leaves no device behind.
pub struct Tun {
    dev: SyncDevice,
    index: u32,
    /// Whether a super-packet read splits into at most [`MAX_SEGMENTS_PER_READ`]
    /// packets: true from an MTU of [`MIN_MTU_FOR_SEGMENT_BOUND`] up, until a read
    /// proves otherwise (someone shrank the device's MTU by hand).
    bounded: AtomicBool,
    /// Held by whoever reads the device and sends what it read (the line's outbound
    /// path, or a receive path answering what the kernel produced inside a TUN
    /// write): two threads reading one device at once would reorder a flow.
    read_turn: Mutex<()>,
    /// How the last reads went (a [`Pace`]); changed only under the read turn.
    pace: AtomicU8,
}

/// How a device's reads go, which decides whether a batch reads again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Pace {
    /// Traffic that fills batches: keep reading until the device is drained.
    Dense = 0,
    /// Traffic of lone packets (a ping, interactive use): the read that would find
    /// the device empty before the send is skipped, so the packet goes one system call
    /// sooner. The outbound path's next turn makes that read after the send.
    Sparse = 1,
    /// Sparse, and the last call found a packet: one more makes it dense.
    SparseGot = 2,
}

impl Pace {
    fn from_u8(v: u8) -> Pace {
        match v {
            1 => Pace::Sparse,
            2 => Pace::SparseGot,
            _ => Pace::Dense,
        }
    }

    /// After a read that found packets: the new pace, and whether to read again.
    fn after_packets(self) -> (Pace, bool) {
        match self {
            Pace::Dense => (Pace::Dense, true),
            Pace::Sparse => (Pace::SparseGot, false),
            Pace::SparseGot => (Pace::Dense, false),
        }
    }

    /// After a read that found the device empty, `reads` reads into the call.
    fn after_empty(self, reads: usize) -> Pace {
        match self {
            // One read's worth, then nothing: lone packets.
            Pace::Dense if reads == 1 => Pace::Sparse,
            Pace::Dense => Pace::Dense,
            Pace::Sparse | Pace::SparseGot => Pace::Sparse,
        }
    }
}

/// TUN offloads a line asked for and got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunOffload {
    /// `IFF_VNET_HDR` with TSO: reads may be 64 KB super-packets, writes are coalesced.
    pub tso: bool,
    /// USO too (Linux 6.2): UDP super-packets both ways.
    pub uso: bool,
}

impl Tun {
    /// A line's device `name` with `mtu`, up, without addresses (the daemon adds those
    /// through netlink), with offloads unless `TWNODE_OFFLOAD=0` ([`offload_wanted`]);
    /// a kernel that refuses them gets a device without, and a warning.
    pub fn create_for_line(name: &str, mtu: u16, ipv6: bool) -> Result<Tun, DataplaneError> {
        let want = offload_wanted();
        match Tun::create_with(name, mtu, ipv6, want) {
            Err(e) if want => {
                tracing::warn!(line = %name, error = %e,
                    "TUN offloads refused; creating the device without them");
                Tun::create_with(name, mtu, ipv6, false)
            }
            created => created,
        }
    }

    /// Creates device `name` with `mtu`, up; without `ipv6`, IPv6 is turned off on the
    /// device before it comes up, so the kernel sends no IPv6 (router solicitations, MLD
    /// reports) into a line that cannot carry it. With `offload`, `IFF_VNET_HDR` and
    /// TSO/USO (a kernel that refuses them fails the creation).
    pub fn create_with(
        name: &str,
        mtu: u16,
        ipv6: bool,
        offload: bool,
    ) -> Result<Tun, DataplaneError> {
        let err = |source| DataplaneError::Tun {
            name: name.to_string(),
            source,
        };
        let dev = DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .packet_information(false)
            .offload(offload)
            .enable(ipv6)
            .build_sync()
            .map_err(err)?;
        if !ipv6 {
            crate::net::sysctl::disable_ipv6(name).map_err(err)?;
            dev.enabled(true).map_err(err)?;
        }
        dev.set_nonblocking(true).map_err(err)?;
        let index = dev.if_index().map_err(err)?;
        Ok(Tun {
            dev,
            index,
            bounded: AtomicBool::new(mtu >= MIN_MTU_FOR_SEGMENT_BOUND),
            read_turn: Mutex::new(()),
            pace: AtomicU8::new(Pace::Dense as u8),
        })
    }

    /// The offloads in force on this device.
    pub fn offload(&self) -> TunOffload {
        let dev = &self.dev;
        TunOffload {
            tso: dev.tcp_gso(),
            uso: dev.udp_gso(),
        }
    }

    /// One read, split into packets at offset 0 of `bufs` (one packet without offloads,
    /// the segments of a super-packet with them); returns how many.
    pub fn recv_split(
        &self,
        raw: &mut [u8],
        bufs: &mut [&mut [u8]],
        sizes: &mut [usize],
    ) -> io::Result<usize> {
        let n = bufs.len().min(sizes.len());
        self.dev
            .recv_multiple(raw, &mut bufs[..n], &mut sizes[..n], 0)
    }

    /// The turn to read the device and send what was read, waiting for it (the
    /// outbound path: the other holder keeps it for one batch).
    pub fn read_turn(&self) -> MutexGuard<'_, ()> {
        self.read_turn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The turn to read the device, if nobody has it (a receive path that would send
    /// the kernel's answers itself, and leaves them to the outbound path otherwise).
    pub fn try_read_turn(&self) -> Option<MutexGuard<'_, ()>> {
        self.read_turn.try_lock().ok()
    }

    /// Reads into the thread's segment buffers (`w.segs`, lengths in `w.seg_len`): reads
    /// (a super-packet with offloads, splitting into up to `MAX_SEGMENTS_PER_READ`
    /// packets; else single packets) until the device is drained or the batch is full.
    /// Returns how many packets, and the error that ended the reads early, if any (not
    /// `WouldBlock`, the normal end). 0 packets and no error: nothing was there.
    ///
    /// Adaptive: when batches hold one read's worth (the read after it finds nothing),
    /// the device is read once per call (`Pace::Sparse`): a lone packet is sent without
    /// first paying a read that finds the device empty. Two calls in a row that find
    /// packets switch back to batching. Only under the read turn.
    pub fn read_segments(&self, w: &mut Buffers) -> (usize, Option<io::Error>) {
        let mut pace = Pace::from_u8(self.pace.load(Ordering::Relaxed));
        let mut reads = 0;
        let mut n = 0;
        // Room a read needs: a super-packet that does not fit the buffers left is
        // lost, so read again only while the largest one fits.
        let per_read = if !self.dev.tcp_gso() {
            1
        } else if self.bounded.load(Ordering::Relaxed) {
            MAX_SEGMENTS_PER_READ
        } else {
            SEGS
        };
        while n + per_read <= SEGS {
            let mut views = seg_views(&mut w.segs, n);
            match self.recv_split(&mut w.tun_read, &mut views[..SEGS - n], &mut w.seg_len[n..]) {
                Ok(got) => {
                    n += got;
                    reads += 1;
                    let again;
                    (pace, again) = pace.after_packets();
                    if !again {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pace = pace.after_empty(reads);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if n > 0
                        && e.kind() == io::ErrorKind::InvalidInput
                        && self.bounded.swap(false, Ordering::Relaxed)
                    {
                        tracing::warn!(ifindex = self.index, error = %e,
                            "a super-packet split into more packets than expected (MTU lowered \
                             by hand?); one read per batch from now on");
                    }
                    self.pace.store(pace as u8, Ordering::Relaxed);
                    return (n, Some(e));
                }
            }
        }
        self.pace.store(pace as u8, Ordering::Relaxed);
        (n, None)
    }

    /// [`Tun::read_segments`], with a read error counted in `stats` (an I/O drop) and
    /// logged at debug level for `line`. 0 when nothing was there.
    pub fn read_packets(&self, w: &mut Buffers, stats: &LineStats, line: &str) -> usize {
        let (n, err) = self.read_segments(w);
        if let Some(e) = err {
            tracing::debug!(line, error = %e, "TUN read failed");
            stats.count_drop(DropReason::IoError, 1);
        }
        n
    }

    /// Writes the packets in `w.dec[..t]` (each at [`TUN_OFFSET`] in its buffer) and
    /// counts them in `stats`: received packets and bytes, and failed writes as I/O
    /// drops (with offloads, a failed write counts as one: which of the coalesced
    /// packets it carried is not known).
    pub fn write_packets(&self, w: &mut Buffers, t: usize, stats: &LineStats) {
        let t = t.min(w.dec.len());
        let bytes: usize = w.dec[..t].iter().map(|b| b.len() - TUN_OFFSET).sum();
        let failed = self.write_some(w, t);
        stats.count_drop(DropReason::IoError, failed);
        LineStats::add(&stats.rx_packets, t as u64 - failed.min(t as u64));
        LineStats::add(&stats.rx_bytes, bytes as u64);
    }

    /// [`Tun::write_packets`]' writes: with offloads, a flow's packets coalesced into
    /// super-packets (one packet alone goes behind a zeroed virtio-net header, without
    /// touching the GRO tables); without, one write each. Returns how many failed.
    fn write_some(&self, w: &mut Buffers, t: usize) -> u64 {
        if t == 0 {
            return 0;
        }
        if !self.dev.tcp_gso() {
            let mut failed = 0;
            for b in &w.dec[..t] {
                if self.write(b.get(TUN_OFFSET..).unwrap_or_default()).is_err() {
                    failed += 1;
                }
            }
            return failed;
        }
        if t == 1 {
            let b = &mut w.dec[0];
            if let Some(hdr) = b.get_mut(..TUN_OFFSET) {
                hdr.fill(0);
            }
            return u64::from(self.write_with_header(b).is_err());
        }
        let gro = w.gro.get_or_insert_with(GROTable::new);
        match self.send_coalesced(gro, &mut w.dec[..t]) {
            Ok(_) => 0,
            Err(e) => {
                tracing::debug!(error = %e, "TUN write failed");
                1
            }
        }
    }

    /// Writes the packets (each at [`super::pool::TUN_OFFSET`] in its buffer), coalescing
    /// a flow's packets into super-packets when offloads are on. Returns the bytes
    /// written, or the last write error (the other packets were still written).
    pub fn send_coalesced(&self, gro: &mut GROTable, bufs: &mut [Vec<u8>]) -> io::Result<usize> {
        self.dev.send_multiple(gro, bufs, super::pool::TUN_OFFSET)
    }

    /// The kernel's interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The device's descriptor, for the data-plane thread that waits on it.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.dev.as_raw_fd()
    }

    /// Writes `buf`, a virtio-net header and a packet, as it is (offloads on); never
    /// blocks.
    pub fn write_with_header(&self, buf: &[u8]) -> io::Result<usize> {
        self.dev.send(buf)
    }

    /// Writes one IP packet; never blocks (a full queue is an error the caller counts).
    /// On a device with offloads the packet goes behind a zeroed virtio-net header (no
    /// GSO, checksum complete), which such a device expects in front of every write.
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        let dev = &self.dev;
        if !dev.tcp_gso() {
            return dev.send(packet);
        }
        let header = [0u8; tun_rs::VIRTIO_NET_HDR_LEN];
        let iov = [
            libc::iovec {
                iov_base: header.as_ptr() as *mut libc::c_void,
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: packet.as_ptr() as *mut libc::c_void,
                iov_len: packet.len(),
            },
        ];
        // SAFETY: both iovecs point into live buffers of the given lengths, which the
        // kernel only reads; the descriptor stays open while `dev` is borrowed.
        let n = unsafe { libc::writev(dev.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize).saturating_sub(header.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::Pace;

    /// One call of `read_segments` on a device holding `queued` reads' worth: how many
    /// reads it makes and the pace after it.
    fn call(pace: Pace, queued: &mut usize) -> (usize, Pace) {
        let (mut pace, mut reads) = (pace, 0);
        loop {
            if *queued == 0 {
                return (reads + 1, pace.after_empty(reads));
            }
            *queued -= 1;
            reads += 1;
            let again;
            (pace, again) = pace.after_packets();
            if !again {
                return (reads, pace);
            }
        }
    }

    #[test]
    fn lone_packets_go_after_one_read_and_bursts_batch_again() {
        // A ping on a fresh device: read, read (empty): lone packets from now on.
        let mut queued = 1;
        assert_eq!(call(Pace::Dense, &mut queued), (2, Pace::Sparse));
        // The next ping: one read, sent at once; the path's next turn reads it empty.
        queued = 1;
        let (reads, pace) = call(Pace::Sparse, &mut queued);
        assert_eq!((reads, pace), (1, Pace::SparseGot));
        assert_eq!(call(pace, &mut queued), (1, Pace::Sparse));
        // A burst: the second call in a row finds packets, the third batches them all.
        queued = 5;
        let (_, pace) = call(Pace::Sparse, &mut queued);
        let (_, pace) = call(pace, &mut queued);
        assert_eq!(pace, Pace::Dense);
        assert_eq!(call(pace, &mut queued), (4, Pace::Dense));
        assert_eq!(queued, 0);
        // Batches of several reads stay dense.
        queued = 2;
        assert_eq!(call(Pace::Dense, &mut queued), (3, Pace::Dense));
    }

    #[test]
    fn the_pace_survives_its_round_trip_through_the_atomic() {
        for p in [Pace::Dense, Pace::Sparse, Pace::SparseGot] {
            assert_eq!(Pace::from_u8(p as u8), p);
        }
    }
}
