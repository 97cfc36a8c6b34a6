//! ESP Hello view: `new_checked` on arbitrary bytes, then every getter and
//! `Repr::parse`. Whatever parses must emit and parse back to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use twnode::wire::esp_hello::{Packet, Repr, HELLO_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let _ = (packet.spi(), packet.version(), packet.flags());
    let _ = (packet.timestamp(), packet.nonce(), packet.echo());
    let _ = (packet.authenticated(), packet.mac());
    if let Ok(repr) = Repr::parse(&packet) {
        let mut out = [0u8; HELLO_LEN];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]))
            .expect("a Hello fits its own length");
        let again = Packet::new_checked(&out[..]).expect("emitted Hello checks");
        assert_eq!(Repr::parse(&again), Ok(repr));
    }
});
