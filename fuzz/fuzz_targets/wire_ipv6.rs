//! IPv6 view: `new_checked` on arbitrary bytes, then every getter and `Repr::parse`.
//! Whatever parses must emit and parse back to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use twnode::wire::ipv6::{Packet, Repr};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let _ = (
        packet.version(),
        packet.traffic_class(),
        packet.flow_label(),
    );
    let _ = (
        packet.payload_len(),
        packet.total_len(),
        packet.next_header(),
    );
    let _ = (packet.hop_limit(), packet.src_addr(), packet.dst_addr());
    let _ = packet.payload();
    if let Ok(repr) = Repr::parse(&packet) {
        assert_eq!(repr.payload_len, packet.payload().len());
        let mut out = vec![0u8; repr.total_len()];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]))
            .expect("a parsed repr fits its own length");
        let again = Packet::new_checked(&out[..]).expect("emitted header checks");
        assert_eq!(Repr::parse(&again), Ok(repr));
    }
});
