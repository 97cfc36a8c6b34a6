//! IPv4 view: `new_checked` on arbitrary bytes, then every getter and `Repr::parse`.
//! Whatever parses must emit and parse back to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use twnode::wire::ipv4::{Packet, Repr};

fuzz_target!(|data: &[u8]| {
    let _ = twnode::wire::ip_version(data);
    let _ = (twnode::wire::ip_src(data), twnode::wire::ip_dst(data));
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let _ = (
        packet.version(),
        packet.header_len(),
        packet.traffic_class(),
    );
    let _ = (packet.total_len(), packet.ident(), packet.dont_frag());
    let _ = (
        packet.more_frags(),
        packet.frag_offset(),
        packet.is_fragment(),
    );
    let _ = (packet.ttl(), packet.protocol(), packet.checksum());
    let _ = (packet.src_addr(), packet.dst_addr(), packet.options());
    let _ = (packet.verify_checksum(), packet.payload());
    if let Ok(repr) = Repr::parse(&packet) {
        assert_eq!(repr.payload_len, packet.payload().len());
        let mut out = vec![0u8; repr.total_len()];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]))
            .expect("a parsed repr fits its own length");
        let again = Packet::new_checked(&out[..]).expect("emitted header checks");
        assert_eq!(Repr::parse(&again), Ok(repr));
    }
});
