//! IP tunnel packets through `IpTunnelCore`'s decapsulation, for every tunnel type: the
//! first byte picks the type and the options (keys, sequence numbers, checksums,
//! keepalive), the rest is what a raw socket delivers (a whole IPv4 datagram, or an IPv6
//! payload with its next header and traffic class beside it). Each input is also fed
//! behind a valid outer header from the peer, so the GRE and inner layers see it.
//! Nothing may panic, and what is returned must lie inside the input buffer.

#![no_main]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use twnode::tunnel::gre::GreOptions;
use twnode::tunnel::iptunnel::{IpTunnelCore, Settings};
use twnode::tunnel::iptype::{Tos, Ttl, TunnelType};
use twnode::tunnel::keepalive::KeepaliveConfig;
use twnode::tunnel::Action;
use twnode::wire::gre::Key;
use twnode::wire::{ipv4, IpProtocol, TrafficClass};

fn settings(selector: u8) -> Settings {
    let kind = TunnelType::ALL[usize::from(selector % 6)];
    let bits = selector / 6;
    let gre = if kind.is_gre() {
        GreOptions {
            ikey: (bits & 1 != 0).then_some(Key(7)),
            okey: (bits & 1 != 0).then_some(Key(7)),
            iseq: bits & 2 != 0,
            oseq: bits & 2 != 0,
            icsum: bits & 4 != 0,
            ocsum: bits & 4 != 0,
        }
    } else {
        GreOptions::default()
    };
    let (local, peer): (IpAddr, IpAddr) = if kind.outer_ipv6() {
        (
            "2001:db8::a".parse().unwrap(),
            "2001:db8::b".parse().unwrap(),
        )
    } else {
        (
            "203.0.113.10".parse().unwrap(),
            "198.51.100.20".parse().unwrap(),
        )
    };
    Settings {
        kind,
        local,
        peer,
        ttl: Ttl::Inherit,
        tos: Tos::Inherit,
        pmtudisc: true,
        gre,
        keepalive: (bits & 8 != 0).then_some(KeepaliveConfig {
            interval: Duration::from_secs(1),
            retries: 3,
        }),
    }
}

fn check(action: Action<'_>, range: std::ops::Range<usize>) {
    if let Action::WriteToTun(p) | Action::WriteToNetwork(p) = action {
        let start = p.as_ptr() as usize;
        assert!(start >= range.start && start + p.len() <= range.end);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let s = settings(selector);
    let mut core = IpTunnelCore::new(s).unwrap();
    let now = Instant::now();
    let mut buf = rest.to_vec();
    let range = buf.as_ptr_range();
    let range = range.start as usize..range.end as usize;
    match s.peer {
        IpAddr::V6(peer) => {
            for nh in [IpProtocol::Gre, IpProtocol::Ipip, IpProtocol::Ipv6] {
                let mut b = rest.to_vec();
                let r = b.as_ptr_range();
                let r = r.start as usize..r.end as usize;
                check(
                    core.handle_ipv6_payload(peer, TrafficClass(0x03), nh, &mut b, now),
                    r,
                );
            }
            check(core.handle_ipv6_datagram(&mut buf, now), range);
        }
        IpAddr::V4(peer) => {
            check(core.handle_ipv4_datagram(&mut buf, now), range);
            let IpAddr::V4(local) = s.local else { return };
            for &protocol in s.kind.protocols() {
                let mut b = vec![0u8; 20 + rest.len()];
                b[20..].copy_from_slice(rest);
                let Ok(()) = (ipv4::Repr {
                    src_addr: peer,
                    dst_addr: local,
                    protocol,
                    payload_len: rest.len(),
                    ttl: 64,
                    traffic_class: TrafficClass(0x03),
                    dont_frag: true,
                    ident: 1,
                })
                .emit(&mut ipv4::Packet::new_unchecked(&mut b[..])) else {
                    return;
                };
                let r = b.as_ptr_range();
                let r = r.start as usize..r.end as usize;
                check(core.handle_ipv4_datagram(&mut b, now), r);
            }
        }
    }
    let mut out = [0u8; 256];
    let _ = core.poll_keepalive(now, &mut out);
});
