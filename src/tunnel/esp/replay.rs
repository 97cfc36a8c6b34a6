//! The anti-replay window of one inbound SA (RFC 4303 §3.4.3): the highest sequence
//! number accepted and a bitmap of the [`REPLAY_WINDOW`] numbers below it (RFC 6479's
//! ring of 64-bit words), with the high 32 bits of an extended sequence number inferred
//! as RFC 4303 Appendix A2.2 says. The window is checked before the ICV and updated only
//! after the ICV verified.

use std::fmt;

use super::REPLAY_WINDOW;
use crate::tunnel::DropReason;

/// 64-bit words in the bitmap: one more than the window needs, so that the word of the
/// highest number may be partly ahead of it.
pub(super) const WINDOW_WORDS: usize = 64;

/// The anti-replay window: the highest number accepted and a bitmap of the
/// [`REPLAY_WINDOW`] numbers below it (RFC 6479's ring of 64-bit words).
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest sequence number accepted; 0 before the first.
    top: u64,
    bits: [u64; WINDOW_WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            top: 0,
            bits: [0; WINDOW_WORDS],
        }
    }
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplayWindow {{ top: {} }}", self.top)
    }
}

impl ReplayWindow {
    /// The highest sequence number accepted so far (0: none).
    pub fn top(&self) -> u64 {
        self.top
    }

    /// The full sequence number of a packet carrying `low`, as RFC 4303 Appendix A2.2
    /// infers it; `None` when it would lie below 0, or when it would mean that more
    /// than 2^31 packets were lost: Appendix A2.2 leaves such a packet to fail its ICV,
    /// but an old packet (one from below the window in this 2^32) is by far the likelier
    /// cause, so it is counted as too old rather than as a forgery.
    pub fn infer(&self, low: u32) -> Option<u64> {
        let w = REPLAY_WINDOW as u32;
        let tl = self.top as u32;
        let th = self.top >> 32;
        let high = if tl >= w - 1 {
            if low >= tl - (w - 1) {
                th
            } else {
                th + 1
            }
        } else if low >= tl.wrapping_sub(w - 1) {
            th.checked_sub(1)?
        } else {
            th
        };
        let seq = (high << 32) | u64::from(low);
        if self.top != 0 && seq > self.top && seq - self.top > 1 << 31 {
            return None;
        }
        Some(seq)
    }

    /// Whether `seq` may be accepted: new, or inside the window and not seen.
    pub fn check(&self, seq: u64) -> Result<(), DropReason> {
        if seq == 0 {
            // Sequence numbers start at 1 (RFC 4303 §3.3.3).
            return Err(DropReason::ReplayTooOld);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= REPLAY_WINDOW {
            return Err(DropReason::ReplayTooOld);
        }
        let (word, bit) = Self::slot(seq);
        if self.bits[word] & bit != 0 {
            return Err(DropReason::Replay);
        }
        Ok(())
    }

    /// Records `seq` as accepted (after its ICV verified and [`ReplayWindow::check`]
    /// passed).
    pub fn update(&mut self, seq: u64) {
        if seq > self.top {
            let old = self.top / 64;
            let new = seq / 64;
            let diff = new - old;
            if diff >= WINDOW_WORDS as u64 {
                self.bits = [0; WINDOW_WORDS];
            } else {
                for i in 1..=diff {
                    self.bits[((old + i) % WINDOW_WORDS as u64) as usize] = 0;
                }
            }
            self.top = seq;
        }
        let (word, bit) = Self::slot(seq);
        self.bits[word] |= bit;
    }

    /// A durable replay floor from before a restart: numbers up to it count as seen
    /// (the bitmap is gone, so the ones just below it are refused as replays too, not
    /// only the ones below the window).
    pub fn raise_floor(&mut self, floor: u64) {
        if floor > self.top {
            self.top = floor;
            self.bits = [u64::MAX; WINDOW_WORDS];
            // Numbers above the floor in its own word are not seen yet.
            let (word, _) = Self::slot(floor);
            let bit = floor % 64;
            self.bits[word] = if bit == 63 {
                u64::MAX
            } else {
                (1u64 << (bit + 1)) - 1
            };
        }
    }

    fn slot(seq: u64) -> (usize, u64) {
        (
            ((seq / 64) % WINDOW_WORDS as u64) as usize,
            1u64 << (seq % 64),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;

    #[test]
    fn window_covers_at_least_1024_packets() {
        const { assert!(REPLAY_WINDOW >= 1024) };
        let mut w = ReplayWindow::default();
        w.update(5000);
        assert!(w.check(5000 - REPLAY_WINDOW + 1).is_ok());
        assert_eq!(
            w.check(5000 - REPLAY_WINDOW).unwrap_err(),
            DropReason::ReplayTooOld
        );
        assert_eq!(w.check(5000).unwrap_err(), DropReason::Replay);
        assert_eq!(w.check(0).unwrap_err(), DropReason::ReplayTooOld);
    }

    #[test]
    fn esn_high_bits_are_inferred_across_the_32_bit_wrap() {
        let mut w = ReplayWindow::default();
        let near = (1u64 << 32) - 3;
        w.update(near);
        // A low number just after the wrap belongs to the next 2^32.
        assert_eq!(w.infer(2), Some((1 << 32) | 2));
        // A number just below the top stays in this one.
        assert_eq!(w.infer(near as u32 - 10), Some(near - 10));
        w.update((1 << 32) | 2);
        // After the wrap, a number just below 2^32 is in the previous one (case B).
        assert_eq!(w.infer(u32::MAX), Some((1 << 32) - 1));
        assert!(w.check((1 << 32) - 1).is_ok());
        // At the start, nothing can be before 0.
        let fresh = ReplayWindow::default();
        assert_eq!(fresh.infer(u32::MAX - 5), None);
        assert_eq!(fresh.infer(7), Some(7));
    }

    #[test]
    fn a_raised_floor_refuses_everything_up_to_it_and_nothing_above() {
        let mut w = ReplayWindow::default();
        w.raise_floor(130);
        for seq in [1, 64, 128, 129, 130] {
            assert!(w.check(seq).is_err(), "{seq}");
        }
        assert!(w.check(131).is_ok());
        assert!(w.check(191).is_ok());
        w.raise_floor(100);
        assert_eq!(w.top(), 130, "a lower floor changes nothing");
    }
}
