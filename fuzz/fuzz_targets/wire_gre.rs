//! GRE view: `new_checked` on arbitrary bytes, then every getter and `Repr::parse`.
//! Whatever parses must emit (over the same payload) and parse back to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use twnode::wire::gre::{Packet, Repr};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let _ = (
        packet.flags(),
        packet.checksum_present(),
        packet.key_present(),
    );
    let _ = (
        packet.seq_present(),
        packet.rfc1701_bits(),
        packet.version(),
    );
    let _ = (
        packet.protocol_type(),
        packet.header_len(),
        packet.checksum(),
    );
    let _ = (packet.key(), packet.seq(), packet.verify_checksum());
    let _ = packet.payload();
    if let Ok(repr) = Repr::parse(&packet) {
        let payload = packet.payload();
        let mut out = vec![0u8; repr.buffer_len() + payload.len()];
        out[repr.buffer_len()..].copy_from_slice(payload);
        repr.emit(&mut Packet::new_unchecked(&mut out[..]))
            .expect("a parsed repr fits its own length");
        let again = Packet::new_checked(&out[..]).expect("emitted header checks");
        assert_eq!(Repr::parse(&again), Ok(repr));
        assert_eq!(again.payload(), payload);
    }
});
