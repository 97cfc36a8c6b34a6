//! ICMP: arbitrary bytes as a message (`new_checked`, every getter, `Repr::parse` for
//! both families), and as an "original packet" handed to the error builders, whose
//! output must always be a valid IP packet carrying a valid ICMP message.
//!
//! Input layout: two bytes of MTU, then the original packet / message.

#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use twnode::wire::icmp::{self, Packet, Repr};
use twnode::wire::{ipv4, ipv6, IpPair};

fuzz_target!(|data: &[u8]| {
    let Some((mtu, orig)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mtu = u16::from_be_bytes(*mtu);
    let router_v4 = Ipv4Addr::new(203, 0, 113, 1);
    let router_v6 = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

    if let Ok(packet) = Packet::new_checked(orig) {
        let _ = (packet.msg_type(), packet.msg_code(), packet.checksum());
        let _ = (packet.rest_of_header(), packet.next_hop_mtu(), packet.mtu());
        let _ = packet.payload();
        let pairs = [
            IpPair::V4 {
                src: router_v4,
                dst: Ipv4Addr::new(192, 0, 2, 1),
            },
            IpPair::V6 {
                src: router_v6,
                dst: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            },
        ];
        for pair in &pairs {
            let _ = packet.verify_checksum(pair);
            let _ = Repr::parse(&packet, pair);
        }
    }

    let mut out = [0u8; 1500];
    if let Ok(n) = icmp::frag_needed_v4(orig, mtu, router_v4, &mut out) {
        let ip = ipv4::Packet::new_checked(&out[..n]).expect("answer is IPv4");
        let repr = ipv4::Repr::parse(&ip).expect("answer header is valid");
        assert_eq!(repr.src_addr, router_v4);
        let pair = IpPair::V4 {
            src: repr.src_addr,
            dst: repr.dst_addr,
        };
        let message = Packet::new_checked(ip.payload()).expect("answer carries ICMP");
        match Repr::parse(&message, &pair) {
            Ok(Repr::FragNeeded { next_hop_mtu, .. }) => assert_eq!(next_hop_mtu, mtu),
            other => panic!("bad frag-needed answer: {other:?}"),
        }
    }
    if let Ok(n) = icmp::packet_too_big_v6(orig, u32::from(mtu), router_v6, &mut out) {
        assert!(n <= ipv6::MIN_MTU);
        let ip = ipv6::Packet::new_checked(&out[..n]).expect("answer is IPv6");
        let repr = ipv6::Repr::parse(&ip).expect("answer header is valid");
        let pair = IpPair::V6 {
            src: repr.src_addr,
            dst: repr.dst_addr,
        };
        let message = Packet::new_checked(ip.payload()).expect("answer carries ICMPv6");
        match Repr::parse(&message, &pair) {
            Ok(Repr::PacketTooBig { mtu: got, .. }) => assert_eq!(got, u32::from(mtu)),
            other => panic!("bad packet-too-big answer: {other:?}"),
        }
    }
});
