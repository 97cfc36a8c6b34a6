//! Health probes: arbitrary bytes as a packet decapsulated from a line, which the line's
//! inbound path shows to its prober before the TUN write: never panics. And a probe the
//! prober built itself, answered (the type turned into a reply), is always taken and
//! recorded under its sequence number.
//!
//! Input layout: two bytes of sequence number, then the packet.

#![no_main]

use std::net::IpAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use twnode::dataplane::probe::{Prober, MAX_PROBE};

fuzz_target!(|data: &[u8]| {
    let Some((seq, packet)) = data.split_first_chunk::<2>() else {
        return;
    };
    let seq = u16::from_be_bytes(*seq);
    let prober = Prober::new();
    let now = Instant::now();
    let _ = prober.take_reply(packet, now);
    let _ = prober.reply(seq);

    // Our own probe, answered the way a kernel answers: always taken, under its number.
    let (from, to): (IpAddr, IpAddr) = if seq % 2 == 0 {
        ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
    } else {
        ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
    };
    let mut buf = [0u8; MAX_PROBE];
    let n = prober.build(from, to, seq, &mut buf).expect("a probe");
    let reply = &mut buf[..n];
    if from.is_ipv4() {
        reply[20] = 0;
    } else {
        reply[40] = 129;
    }
    assert!(prober.take_reply(reply, now));
    assert!(prober.reply(seq).is_some());
});
