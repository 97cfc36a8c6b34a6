//! The internet checksum: RFC 1071 (computing it) and RFC 1624 (updating it when a few
//! header words change, e.g. a TTL or an address).
//!
//! [`sum`] returns the folded ones'-complement sum, not its complement: sums of pieces
//! are added with [`combine`], and the value written to a checksum field is `!total`.
//! A packet verifies when the sum over it, checksum field included, is `0xffff`.

use crate::wire::{IpPair, IpProtocol};

/// Fold a wide ones'-complement accumulator into 16 bits (end-around carry).
const fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The ones'-complement sum of `data` read as big-endian 16-bit words, an odd last byte
/// padded with zero (RFC 1071 §4.1). Nonzero data never sums to zero.
pub fn sum(data: &[u8]) -> u16 {
    // Adding 32-bit words into a 64-bit accumulator and folding at the end gives the
    // same result as 16-bit ones'-complement addition (RFC 1071 §2(C)), with half the
    // additions and no carry handling in the loop.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold(acc)
}

/// The ones'-complement sum of partial sums.
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// The sum of the pseudo-header that UDP and ICMPv6 checksums cover: RFC 768 for IPv4
/// (addresses, zero, protocol, 16-bit length), RFC 8200 §8.1 for IPv6 (addresses, 32-bit
/// upper-layer length, zeros, next header). `length` is the upper-layer packet length.
pub fn pseudo_header(pair: &IpPair, protocol: IpProtocol, length: u32) -> u16 {
    let proto = u16::from(protocol.number());
    match pair {
        IpPair::V4 { src, dst } => combine(&[
            sum(&src.octets()),
            sum(&dst.octets()),
            proto,
            // IPv4 lengths are 16 bits; a longer value cannot be on the wire.
            (length & 0xffff) as u16,
        ]),
        IpPair::V6 { src, dst } => combine(&[
            sum(&src.octets()),
            sum(&dst.octets()),
            sum(&length.to_be_bytes()),
            proto,
        ]),
    }
}

/// The new checksum field after the bytes `old` at some even offset of the covered data
/// were replaced by `new` (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`). `old` and `new`
/// have the same length; pass `to_be_bytes()` of the changed words.
pub fn update(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    !combine(&[!checksum, !sum(old), sum(new)])
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// Straightforward RFC 1071 reference: 16-bit words, carry folded at every step.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for chunk in data.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            acc += u32::from(word);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        // RFC 1071 §3 worked example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn odd_length_pads_last_byte_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn ipv4_header_with_checksum_verifies() {
        // A classic header (Wikipedia's IPv4 checksum example): checksum 0xb861.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(sum(&header), 0xffff);
        let mut zeroed = header;
        zeroed[10..12].fill(0);
        assert_eq!(!sum(&zeroed), 0xb861);
    }

    #[test]
    fn ttl_decrement_updates_checksum_incrementally() {
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let old = [header[8], header[9]];
        header[8] -= 1;
        let updated = update(0xb861, &old, &[header[8], header[9]]);
        header[10..12].fill(0);
        assert_eq!(updated, !sum(&header));
    }

    #[test]
    fn ipv4_pseudo_header_matches_rfc768_layout() {
        let pair = IpPair::V4 {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 7),
        };
        let bytes = [192, 0, 2, 1, 198, 51, 100, 7, 0, 17, 0x00, 0x1c];
        assert_eq!(pseudo_header(&pair, IpProtocol::Udp, 28), sum(&bytes));
    }

    proptest! {
        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert_eq!(sum(&data), reference_sum(&data));
        }

        #[test]
        fn sum_of_split_data_combines(data in proptest::collection::vec(any::<u8>(), 0..512),
                                      split in 0usize..256) {
            // Split at an even offset so the halves keep their word alignment.
            let at = (split * 2).min(data.len() & !1);
            let (a, b) = data.split_at(at);
            prop_assert_eq!(combine(&[sum(a), sum(b)]), sum(&data));
        }

        #[test]
        fn incremental_update_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 2..256),
            word in any::<usize>(),
            new in any::<u16>(),
        ) {
            // Keep the data nonzero: the all-zero case has no valid checksum to update.
            data[0] |= 0x40;
            let words = data.len() / 2;
            let at = 2 * (word % words);
            let before = !sum(&data);
            let old = [data[at], data[at + 1]];
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            prop_assume!(data.iter().any(|&b| b != 0));
            prop_assert_eq!(update(before, &old, &new.to_be_bytes()), !sum(&data));
        }
    }
}
