//! UDP view: `new_checked` on arbitrary bytes, then every getter and `Repr::parse`
//! with and without checksum verification, over both address families.

#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use twnode::wire::udp::{Packet, Repr};
use twnode::wire::IpPair;

fuzz_target!(|data: &[u8]| {
    let pairs = [
        IpPair::V4 {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 7),
        },
        IpPair::V6 {
            src: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            dst: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53),
        },
    ];
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let _ = (packet.src_port(), packet.dst_port(), packet.len());
    let _ = (packet.is_empty(), packet.checksum(), packet.payload());
    for pair in &pairs {
        let _ = packet.verify_checksum(pair);
        let _ = Repr::parse(&packet, Some(pair));
    }
    let repr = Repr::parse(&packet, None).expect("length-checked datagram parses");
    assert_eq!(repr.payload_len, packet.payload().len());
    for pair in &pairs {
        let mut out = vec![0u8; repr.total_len()];
        out[repr.buffer_len()..].copy_from_slice(packet.payload());
        repr.emit(&mut Packet::new_unchecked(&mut out[..]), Some(pair))
            .expect("a parsed repr fits its own length");
        let again = Packet::new_checked(&out[..]).expect("emitted header checks");
        assert_eq!(Repr::parse(&again, Some(pair)), Ok(repr));
    }
});
