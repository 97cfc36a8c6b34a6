//! IP tunnel core micro-benchmarks: what one CPU core spends to encapsulate (TUN ->
//! network) and decapsulate (network -> TUN) a full-size packet through `IpTunnelCore`,
//! for every tunnel type (IPIP, GRE, GRE with key, sequence numbers and checksum, SIT,
//! ip6ip6, ipip6, gre6) and for GRE over ESP with both ciphers; one packet at a time and
//! in batches of the data plane's size. No I/O: header building, parsing, checks, one
//! copy of the inner packet, and for ESP the AEAD.
//!
//! Throughput counts inner (IP packet) bytes. Run with
//! `cargo bench --bench iptunnel` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quick look).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use criterion::BatchSize;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use twnode::dataplane::batch::BATCH;
use twnode::tunnel::esp::{derive, Cipher, EspCore};
use twnode::tunnel::gre::GreOptions;
use twnode::tunnel::iptunnel::{IpTunnelCore, Settings};
use twnode::tunnel::iptype::{IpVersion, Tos, Ttl, TunnelType};
use twnode::tunnel::Action;
use twnode::wire::gre::Key;
use twnode::wire::TrafficClass;

/// An inner packet filling a 1476-byte GRE line MTU (1500 minus 24).
const PACKET: usize = 1476;
/// One slot: the packet plus more than the largest overhead here (IPv6 40 + GRE with
/// key, seq and checksum 16; IPv4 20 + GRE 4 + ESP header, padding and ICV).
const SLOT: usize = PACKET + 96;
const A: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20));
const A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10));
const B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 20));
/// The IPv6 header the IPv6-underlay kinds' receivers get stripped (a raw IPv6 socket
/// delivers only the payload).
const IPV6_HEADER: usize = 40;

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

/// An IPv6/UDP packet of `len` bytes, fd00::1 -> fd00::2.
fn ipv6_packet(len: usize) -> Vec<u8> {
    let mut packet = vec![0u8; 40];
    packet[0] = 0x60;
    let payload = u16::try_from(len - 40).expect("payload fits");
    packet[4..6].copy_from_slice(&payload.to_be_bytes());
    packet[6] = 17;
    packet[7] = 64;
    packet[8] = 0xfd;
    packet[23] = 1;
    packet[24] = 0xfd;
    packet[39] = 2;
    packet.resize(len, 0xa5);
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

/// A benchmarked line: its type and options, and ESP under GRE or not.
struct Case {
    name: &'static str,
    kind: TunnelType,
    gre: GreOptions,
    esp: Option<Cipher>,
}

impl Case {
    fn v6_underlay(&self) -> bool {
        matches!(
            self.kind,
            TunnelType::Ip6ip6 | TunnelType::Ipip6 | TunnelType::Gre6
        )
    }

    /// The inner packet: IPv6 where the type carries only IPv6.
    fn packet(&self) -> Vec<u8> {
        if self.kind.carries(IpVersion::V4) {
            ipv4_packet(PACKET)
        } else {
            ipv6_packet(PACKET)
        }
    }

    /// A sender on A and a receiver on B.
    fn pair(&self) -> (IpTunnelCore, IpTunnelCore) {
        let (a, b) = if self.v6_underlay() { (A6, B6) } else { (A, B) };
        let mut tx = IpTunnelCore::new(settings(self.kind, self.gre, a, b)).expect("sender");
        // The benchmark decapsulates the same datagram again and again: the receiver
        // checks no sequence numbers (it would drop every copy after the first).
        let mut gre = self.gre.mirrored();
        gre.iseq = false;
        let mut rx = IpTunnelCore::new(settings(self.kind, gre, b, a)).expect("receiver");
        if let Some(cipher) = self.esp {
            let sa_a = derive(cipher, b"bench enc", b"bench auth", a, b).expect("SAs");
            let sa_b = derive(cipher, b"bench enc", b"bench auth", b, a).expect("SAs");
            let esp = |sas| EspCore::new(cipher, sas, 1, u64::MAX >> 1).expect("ESP");
            tx = tx.with_esp(esp(&sa_a)).expect("sender ESP");
            rx = rx.with_esp(esp(&sa_b)).expect("receiver ESP");
        }
        (tx, rx)
    }

    /// Decapsulates `datagram` (a whole outer packet as `encapsulate` built it).
    fn decapsulate(&self, core: &mut IpTunnelCore, datagram: &mut [u8], now: Instant) -> usize {
        let action = if self.v6_underlay() {
            let IpAddr::V6(src) = A6 else { unreachable!() };
            core.handle_ipv6_payload(
                src,
                TrafficClass(0),
                self.kind.protocol(),
                &mut datagram[IPV6_HEADER..],
                now,
            )
        } else {
            core.handle_ipv4_datagram(datagram, now)
        };
        match action {
            Action::WriteToTun(bytes) => bytes.len(),
            other => panic!("{}: decapsulate: {other:?}", self.name),
        }
    }
}

fn encapsulate(core: &mut IpTunnelCore, packet: &[u8], out: &mut [u8]) -> usize {
    match core.handle_tun_packet(packet, out) {
        Action::WriteToNetwork(bytes) => bytes.len(),
        other => panic!("encapsulate: {other:?}"),
    }
}

fn cases() -> Vec<Case> {
    let full = GreOptions {
        ikey: Some(Key(7)),
        okey: Some(Key(7)),
        iseq: false,
        oseq: true,
        icsum: true,
        ocsum: true,
    };
    let plain = GreOptions::default();
    let case = |name, kind, gre, esp| Case {
        name,
        kind,
        gre,
        esp,
    };
    vec![
        case("ipip", TunnelType::Ipip, plain, None),
        case("gre", TunnelType::Gre, plain, None),
        case("gre_key_seq_csum", TunnelType::Gre, full, None),
        case("sit", TunnelType::Sit, plain, None),
        case("ip6ip6", TunnelType::Ip6ip6, plain, None),
        case("ipip6", TunnelType::Ipip6, plain, None),
        case("gre6", TunnelType::Gre6, plain, None),
        case(
            "gre_esp_chacha20poly1305",
            TunnelType::Gre,
            plain,
            Some(Cipher::ChaCha20Poly1305),
        ),
        case(
            "gre_esp_aes256gcm",
            TunnelType::Gre,
            plain,
            Some(Cipher::Aes256Gcm),
        ),
    ]
}

fn iptunnel(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("iptunnel");
    for case in cases() {
        let name = case.name;
        let packet = case.packet();
        let (mut a, mut b) = case.pair();
        let mut out = vec![0u8; SLOT];
        let mut outs = vec![0u8; BATCH * SLOT];
        let len = encapsulate(&mut a, &packet, &mut out);
        let datagram = out[..len].to_vec();

        group.throughput(Throughput::Bytes(PACKET as u64));
        group.bench_function(format!("{name}_encapsulate_{PACKET}"), |bench| {
            bench.iter(|| encapsulate(&mut a, black_box(&packet), &mut out));
        });
        if case.esp.is_some() {
            // ESP refuses a replayed datagram: each iteration decapsulates a fresh one
            // (encapsulated outside the timing).
            group.bench_function(format!("{name}_decapsulate_{PACKET}"), |bench| {
                bench.iter_batched_ref(
                    || {
                        let n = encapsulate(&mut a, &packet, &mut out);
                        out[..n].to_vec()
                    },
                    |d| case.decapsulate(&mut b, black_box(d), now),
                    BatchSize::SmallInput,
                );
            });
        } else {
            // The receiver decapsulates in place: each iteration starts from a copy.
            let mut work = datagram.clone();
            group.bench_function(format!("{name}_decapsulate_{PACKET}"), |bench| {
                bench.iter(|| {
                    work.copy_from_slice(&datagram);
                    case.decapsulate(&mut b, black_box(&mut work), now)
                });
            });
        }

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
        if case.esp.is_some() {
            group.bench_function(
                format!("{name}_decapsulate_batch{BATCH}_{PACKET}"),
                |bench| {
                    bench.iter_batched_ref(
                        || {
                            (0..BATCH)
                                .map(|_| {
                                    let n = encapsulate(&mut a, &packet, &mut out);
                                    out[..n].to_vec()
                                })
                                .collect::<Vec<_>>()
                        },
                        |batch| {
                            batch
                                .iter_mut()
                                .map(|d| case.decapsulate(&mut b, black_box(d), now))
                                .sum::<usize>()
                        },
                        BatchSize::SmallInput,
                    );
                },
            );
        } else {
            let mut batch: Vec<Vec<u8>> = vec![datagram.clone(); BATCH];
            group.bench_function(
                format!("{name}_decapsulate_batch{BATCH}_{PACKET}"),
                |bench| {
                    bench.iter(|| {
                        batch
                            .iter_mut()
                            .map(|d| {
                                d.copy_from_slice(&datagram);
                                case.decapsulate(&mut b, black_box(d), now)
                            })
                            .sum::<usize>()
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, iptunnel);
criterion_main!(benches);
