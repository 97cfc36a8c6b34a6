//! IP tunnel core micro-benchmarks: what one CPU core spends to encapsulate (TUN ->
//! network) and decapsulate (network -> TUN) a full-size packet through `IpTunnelCore`,
//! for IPIP, plain GRE and GRE with key, sequence numbers and checksum; one packet at a
//! time and in batches of the data plane's size. No I/O, no crypto: header building,
//! parsing, checks and one copy of the inner packet.
//!
//! Throughput counts inner (IP packet) bytes. Run with
//! `cargo bench --bench iptunnel` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quick look).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use twnode::dataplane::batch::BATCH;
use twnode::tunnel::gre::GreOptions;
use twnode::tunnel::iptunnel::{IpTunnelCore, Settings, Tos, Ttl, TunnelType};
use twnode::tunnel::Action;
use twnode::wire::gre::Key;

/// An inner packet filling a 1476-byte GRE line MTU (1500 minus 24).
const PACKET: usize = 1476;
/// One slot: the packet plus the largest overhead here (IPv4 20 + GRE with key, seq and
/// checksum 16).
const SLOT: usize = PACKET + 36;
const A: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20));

/// An IPv4/UDP packet of `len` bytes, 10.0.0.1 -> 10.0.0.2, with a correct total length
/// and header checksum.
fn ipv4_packet(len: usize) -> Vec<u8> {
    let mut packet = vec![
        0x45, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1, 10, 0,
        0, 2,
    ];
    packet.resize(len, 0xa5);
    let total = u16::try_from(len).expect("packet fits an IPv4 total length");
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    let sum = !packet[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .fold(0u32, |acc, w| {
            let s = acc + w;
            (s & 0xffff) + (s >> 16)
        }) as u16;
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet
}

fn settings(kind: TunnelType, gre: GreOptions, local: IpAddr, peer: IpAddr) -> Settings {
    Settings {
        kind,
        local,
        peer,
        ttl: Ttl::default_for(kind),
        tos: Tos::default(),
        pmtudisc: true,
        gre,
        keepalive: None,
    }
}

/// A sender on A and a receiver on B.
fn pair(kind: TunnelType, gre: GreOptions) -> (IpTunnelCore, IpTunnelCore) {
    let a = IpTunnelCore::new(settings(kind, gre, A, B)).expect("sender settings");
    // The benchmark decapsulates the same datagram again and again: the receiver
    // checks no sequence numbers (it would drop every copy after the first).
    let mut rx = gre.mirrored();
    rx.iseq = false;
    let b = IpTunnelCore::new(settings(kind, rx, B, A)).expect("receiver settings");
    (a, b)
}

fn encapsulate(core: &mut IpTunnelCore, packet: &[u8], out: &mut [u8]) -> usize {
    match core.handle_tun_packet(packet, out) {
        Action::WriteToNetwork(bytes) => bytes.len(),
        other => panic!("encapsulate: {other:?}"),
    }
}

fn decapsulate(core: &mut IpTunnelCore, datagram: &mut [u8], now: Instant) -> usize {
    match core.handle_ipv4_datagram(datagram, now) {
        Action::WriteToTun(bytes) => bytes.len(),
        other => panic!("decapsulate: {other:?}"),
    }
}

fn kinds() -> Vec<(&'static str, TunnelType, GreOptions)> {
    let full = GreOptions {
        ikey: Some(Key(7)),
        okey: Some(Key(7)),
        iseq: false,
        oseq: true,
        icsum: true,
        ocsum: true,
    };
    vec![
        ("ipip", TunnelType::Ipip, GreOptions::default()),
        ("gre", TunnelType::Gre, GreOptions::default()),
        ("gre_key_seq_csum", TunnelType::Gre, full),
    ]
}

fn iptunnel(c: &mut Criterion) {
    let packet = ipv4_packet(PACKET);
    let now = Instant::now();
    let mut group = c.benchmark_group("iptunnel");
    for (name, kind, gre) in kinds() {
        let (mut a, mut b) = pair(kind, gre);
        let mut out = vec![0u8; SLOT];
        let mut outs = vec![0u8; BATCH * SLOT];
        // One encapsulated datagram, and a batch of them, to decapsulate: the receiver
        // decapsulates in place, so each iteration starts from a fresh copy.
        let len = encapsulate(&mut a, &packet, &mut out);
        let datagram = out[..len].to_vec();
        let mut work = datagram.clone();
        let mut batch: Vec<Vec<u8>> = vec![datagram.clone(); BATCH];

        group.throughput(Throughput::Bytes(PACKET as u64));
        group.bench_function(format!("{name}_encapsulate_{PACKET}"), |bench| {
            bench.iter(|| encapsulate(&mut a, black_box(&packet), &mut out));
        });
        group.bench_function(format!("{name}_decapsulate_{PACKET}"), |bench| {
            bench.iter(|| {
                work.copy_from_slice(&datagram);
                decapsulate(&mut b, black_box(&mut work), now)
            });
        });

        group.throughput(Throughput::Bytes((BATCH * PACKET) as u64));
        group.bench_function(
            format!("{name}_encapsulate_batch{BATCH}_{PACKET}"),
            |bench| {
                bench.iter(|| {
                    outs.chunks_exact_mut(SLOT)
                        .map(|slot| encapsulate(&mut a, black_box(&packet), slot))
                        .sum::<usize>()
                });
            },
        );
        group.bench_function(
            format!("{name}_decapsulate_batch{BATCH}_{PACKET}"),
            |bench| {
                bench.iter(|| {
                    batch
                        .iter_mut()
                        .map(|d| {
                            d.copy_from_slice(&datagram);
                            decapsulate(&mut b, black_box(d), now)
                        })
                        .sum::<usize>()
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, iptunnel);
criterion_main!(benches);
