//! The packet paths' buffers: TUN reads split into segments and their encapsulated
//! copies (every line's outbound path), packets for TUN writes with GRO (every line's
//! inbound path), and the WireGuard path's UDP receive arena. One set per data-plane
//! thread, reused for every batch of every line the thread serves (a batch is read,
//! processed and written in one handler call, see [`super::poller`]), so 1000 lines cost
//! no more than one and nothing is allocated per packet. Memory is reserved up front but
//! the kernel backs only the pages a batch touched, so an idle daemon stays small. The
//! raw sockets' receive batches are [`super::batch`]'s.

use std::cell::RefCell;

use tun_rs::{GROTable, VIRTIO_NET_HDR_LEN};

use super::batch::SLOT;
use super::socket::{Received, MAX_MSGS};
use super::udp::GRO_BUF;

/// Packets per batch: what one 64 KB TSO read splits into at MTU 1420 (46), twice over.
pub const SEGS: usize = 128;
/// Where a packet starts in a TUN write buffer: room for the virtio-net header.
pub const TUN_OFFSET: usize = VIRTIO_NET_HDR_LEN;
/// A TUN read with offloads: the virtio-net header and a 64 KB super-packet.
pub const TUN_READ: usize = VIRTIO_NET_HDR_LEN + 65_535;
/// Messages per `recvmmsg` with UDP GRO on (each up to 64 KB).
pub const RX_MSGS_GRO: usize = 8;
/// Receive arena: 8 coalesced datagrams, or 56 plain ones of up to [`SLOT`] bytes.
pub const RX_ARENA: usize = RX_MSGS_GRO * GRO_BUF;
/// Messages per `recvmmsg` without GRO.
pub const RX_MSGS_MAX: usize = RX_ARENA / SLOT;
// One batch goes in one batched call.
const _: () = assert!(SEGS <= MAX_MSGS && RX_MSGS_MAX <= MAX_MSGS);

/// Capacity of a TUN write buffer: GRO coalesces packets of one flow into the first
/// one's buffer, up to a 64 KB super-packet.
const TUN_WRITE_CAP: usize = TUN_OFFSET + 65_535;

/// One worker thread's buffers.
pub struct Buffers {
    /// Raw TUN read (virtio header + super-packet).
    pub tun_read: Vec<u8>,
    /// Packets split from TUN reads (plaintext, outbound), [`SLOT`] bytes each.
    pub segs: Vec<u8>,
    pub seg_len: [usize; SEGS],
    /// Encrypted datagrams, [`SLOT`] bytes each.
    pub enc: Vec<u8>,
    /// Each encrypted datagram: pointer and length, for `sendmmsg`.
    pub enc_out: [(*const u8, usize); SEGS],
    /// UDP receive arena.
    pub rx: Vec<u8>,
    pub rx_msgs: [Received; RX_MSGS_MAX],
    /// Decrypted packets at [`TUN_OFFSET`], growable for GRO; each reserves its 64 KB
    /// on first use ([`dec_slot`]).
    pub dec: Vec<Vec<u8>>,
    /// GRO state for TUN writes with offloads, made on first use (tun-rs preallocates
    /// about a megabyte of flow tables).
    pub gro: Option<GROTable>,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            tun_read: vec![0; TUN_READ],
            // Large zeroed allocations come straight from mmap: the kernel backs a page
            // only when a batch first writes it.
            segs: vec![0; SEGS * SLOT],
            seg_len: [0; SEGS],
            enc: vec![0; SEGS * SLOT],
            enc_out: [(std::ptr::null(), 0); SEGS],
            rx: vec![0; RX_ARENA],
            rx_msgs: [Received::default(); RX_MSGS_MAX],
            dec: (0..SEGS).map(|_| Vec::new()).collect(),
            gro: None,
        }
    }
}

/// Decrypted-packet buffer `i` of `dec`, at least `len` bytes long (contents
/// unspecified); its 64 KB for GRO are reserved on first use.
pub fn dec_slot(dec: &mut [Vec<u8>], i: usize, len: usize) -> Option<&mut Vec<u8>> {
    let buf = dec.get_mut(i)?;
    if buf.capacity() < TUN_WRITE_CAP {
        buf.reserve_exact(TUN_WRITE_CAP - buf.len());
    }
    if buf.len() < len {
        buf.resize(len, 0);
    }
    Some(buf)
}

/// Segment `i` of a TUN read ([`Buffers::segs`], lengths in [`Buffers::seg_len`]); empty
/// for an index past the buffers. Takes the fields, not the [`Buffers`], so the caller
/// can write into its other buffers meanwhile.
pub fn segment<'a>(segs: &'a [u8], seg_len: &[usize; SEGS], i: usize) -> &'a [u8] {
    let len = seg_len.get(i).map_or(0, |&l| l.min(SLOT));
    segs.get(i * SLOT..i * SLOT + len).unwrap_or_default()
}

/// The segment buffers (`segs`) as the slices `recv_multiple` fills, from segment `from`
/// on (the ones past the end are empty).
pub fn seg_views(segs: &mut [u8], from: usize) -> [&mut [u8]; SEGS] {
    let mut chunks = segs.chunks_exact_mut(SLOT).skip(from);
    std::array::from_fn(|_| chunks.next().unwrap_or_default())
}

thread_local! {
    static BUFFERS: RefCell<Option<Box<Buffers>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's buffers (allocated on first use).
pub fn with_buffers<R>(f: impl FnOnce(&mut Buffers) -> R) -> R {
    BUFFERS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let b = slot.get_or_insert_with(|| Box::new(Buffers::new()));
        f(b)
    })
}
