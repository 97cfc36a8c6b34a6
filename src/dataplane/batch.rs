//! Receive-batch buffers for the shared raw sockets (`recvmmsg` into [`BATCH`] slots,
//! processed in place; the WireGuard path and every TUN read use [`super::pool`]). Each
//! data-plane thread owns one set, reused for every batch of every line it serves, so the
//! memory cost does not grow with the number of lines and nothing is allocated per
//! packet. A batch is received, processed and sent in one handler call, which is what
//! makes per-thread buffers safe.

use std::cell::RefCell;

use super::socket::{Received, MAX_MSGS};

/// Packets handled per system call.
pub const BATCH: usize = 32;
/// One slot holds the largest packet twnode carries: MTU 9000 plus outer headers.
pub const SLOT: usize = 9216;
// One batch goes in one batched call.
const _: () = assert!(BATCH <= MAX_MSGS);

/// The slots of one receive batch. Packets are processed in place: what a core makes of
/// the packet in slot `i` (a decapsulated inner packet, a reflected probe) lies inside
/// that slot, at `out[i]`.
pub struct Batch {
    input: Vec<u8>,
    /// Each received packet: its length, and its source and control message when asked.
    pub received: [Received; BATCH],
    /// Offset and length of what was produced from each packet, inside its slot.
    pub out: [(usize, usize); BATCH],
}

impl Batch {
    fn new() -> Batch {
        Batch {
            input: vec![0; BATCH * SLOT],
            received: [Received::default(); BATCH],
            out: [(0, 0); BATCH],
        }
    }

    /// Input slot `i`, whole.
    pub fn input_slot(&mut self, i: usize) -> &mut [u8] {
        &mut self.input[i * SLOT..(i + 1) * SLOT]
    }

    /// All input slots as one buffer, and where to note what arrived in each (for
    /// `recvmmsg`).
    pub fn inputs_mut(&mut self) -> (&mut [u8], &mut [Received; BATCH]) {
        (&mut self.input, &mut self.received)
    }
}

/// Where `produced` (a slice a core returned) starts inside the slot that begins at
/// `slot_start`.
pub fn offset_in(slot_start: *const u8, produced: &[u8]) -> usize {
    produced.as_ptr() as usize - slot_start as usize
}

thread_local! {
    static BATCH_BUFFERS: RefCell<Option<Box<Batch>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's batch buffers (allocated on first use).
pub fn with_batch<R>(f: impl FnOnce(&mut Batch) -> R) -> R {
    BATCH_BUFFERS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let batch = slot.get_or_insert_with(|| Box::new(Batch::new()));
        f(batch)
    })
}
