//! WireGuard core micro-benchmarks: what one CPU core spends to encrypt (TUN -> network)
//! and decrypt (network -> TUN) a full-size packet through `WireGuardCore`, one at a
//! time and in the data plane's batches of 32. No I/O: two cores that shook hands in
//! memory, so the figures are the crypto and bookkeeping cost the data plane pays per
//! packet, the ceiling for a line's throughput on one core.
//!
//! The `peer_` benches run the same batches through [`WireGuardPeer`], the core with the
//! line's policy (endpoint, hold-off, roaming) that the data plane calls: their
//! difference to the plain ones is what the policy costs per packet.
//!
//! Throughput counts inner (IP packet) bytes. Run with
//! `cargo bench --bench wireguard` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quick look).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use twnode::config::PrivateKey;
use twnode::dataplane::batch::BATCH;
use twnode::tunnel::wireguard::{Keys, WireGuardCore, DATA_OVERHEAD};
use twnode::tunnel::wireguard_peer::{Inbound, Outbound, PeerConfig, WireGuardPeer};
use twnode::tunnel::Action;

/// A packet filling a 1420-byte line MTU (WireGuard's usual MTU on a 1500-byte link).
const PACKET: usize = 1420;
/// One output slot: the packet plus WireGuard's header and tag.
const SLOT: usize = PACKET + DATA_OVERHEAD;
const A_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
const B_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20));

/// An IPv4/UDP packet of `len` bytes, 10.0.0.1 -> 10.0.0.2, with a correct total length
/// (the receiving core trims the decrypted packet to it).
fn ipv4_packet(len: usize) -> Vec<u8> {
    let mut packet = vec![
        0x45, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1, 10, 0,
        0, 2,
    ];
    packet.resize(len, 0xa5);
    let total = u16::try_from(len).expect("packet fits an IPv4 total length");
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet
}

fn network(action: Action<'_>, what: &str) -> Vec<u8> {
    match action {
        Action::WriteToNetwork(bytes) => bytes.to_vec(),
        other => panic!("{what}: expected a datagram, got {other:?}"),
    }
}

/// Two cores after a complete handshake: `a` sends, `b` receives.
fn handshaken_pair() -> (WireGuardCore, WireGuardCore) {
    let (key_a, key_b) = (PrivateKey::generate(), PrivateKey::generate());
    let (public_a, public_b) = (key_a.public_key(), key_b.public_key());
    let core = |private, peer_public, index| {
        WireGuardCore::new(Keys {
            private,
            peer_public,
            preshared: None,
            keepalive: 0,
            index,
        })
    };
    let mut a = core(&key_a, &public_b, 1);
    let mut b = core(&key_b, &public_a, 2);
    let mut out = vec![0u8; 2048];
    let initiation = network(a.poll_handshake(&mut out), "initiation");
    let response = network(b.handle_datagram(A_IP, &initiation, &mut out), "response");
    // The initiator confirms the session with a keepalive, which the responder needs
    // before it may send data itself.
    let keepalive = network(a.handle_datagram(B_IP, &response, &mut out), "keepalive");
    assert_eq!(b.handle_datagram(A_IP, &keepalive, &mut out), Action::Done);
    assert!(a.is_up() && b.is_up(), "handshake completed");
    (a, b)
}

fn encapsulate(core: &mut WireGuardCore, packet: &[u8], out: &mut [u8]) -> usize {
    match core.handle_tun_packet(packet, out) {
        Action::WriteToNetwork(bytes) => bytes.len(),
        other => panic!("encapsulate: {other:?}"),
    }
}

fn decapsulate(core: &mut WireGuardCore, datagram: &[u8], out: &mut [u8]) -> usize {
    match core.handle_datagram(A_IP, datagram, out) {
        Action::WriteToTun(bytes) => bytes.len(),
        other => panic!("decapsulate: {other:?}"),
    }
}

/// `count` datagrams, fresh from `a` (consecutive counters, so `b` accepts each once).
fn datagrams(a: &mut WireGuardCore, packet: &[u8], count: usize) -> Vec<Vec<u8>> {
    let mut out = vec![0u8; SLOT];
    (0..count)
        .map(|_| network(a.handle_tun_packet(packet, &mut out), "data"))
        .collect()
}

/// Two peers after a complete handshake: `a` (a client) sends, `b` (a server)
/// receives.
fn handshaken_peers() -> (WireGuardPeer, WireGuardPeer) {
    let (key_a, key_b) = (PrivateKey::generate(), PrivateKey::generate());
    let (public_a, public_b) = (key_a.public_key(), key_b.public_key());
    let (addr_a, addr_b) = (SocketAddr::new(A_IP, 40000), SocketAddr::new(B_IP, 51820));
    let peer = |private, peer_public, index, config| {
        let keys = Keys {
            private,
            peer_public,
            preshared: None,
            keepalive: 0,
            index,
        };
        WireGuardPeer::new(keys, config)
    };
    let client = PeerConfig {
        endpoint: Some(addr_b),
        redial_from: None,
    };
    let server = PeerConfig {
        endpoint: None,
        redial_from: Some(A_IP),
    };
    let mut a = peer(&key_a, &public_b, 1, client);
    let mut b = peer(&key_b, &public_a, 2, server);
    let mut out = vec![0u8; 2048];
    let now = Instant::now();
    let initiation = a
        .poll_dial(&mut out, now)
        .expect("initiation")
        .datagram
        .to_vec();
    let response = match b.handle_datagram(addr_a, &initiation, &mut out, now) {
        Inbound::Reply(t) => t.datagram.to_vec(),
        other => panic!("response: {other:?}"),
    };
    let keepalive = match a.handle_datagram(addr_b, &response, &mut out, now) {
        Inbound::Reply(t) => t.datagram.to_vec(),
        other => panic!("keepalive: {other:?}"),
    };
    assert_eq!(
        b.handle_datagram(addr_a, &keepalive, &mut out, now),
        Inbound::Done
    );
    while b.poll_queued(&mut out, now).is_some() {}
    assert!(a.is_up() && b.is_up(), "handshake completed");
    (a, b)
}

fn peer_encapsulate(
    peer: &mut WireGuardPeer,
    packet: &[u8],
    out: &mut [u8],
    now: Instant,
) -> usize {
    match peer.handle_tun_packet(packet, out, now) {
        Outbound::Send(t) => t.datagram.len(),
        other => panic!("encapsulate: {other:?}"),
    }
}

fn peer_decapsulate(
    peer: &mut WireGuardPeer,
    datagram: &[u8],
    out: &mut [u8],
    now: Instant,
) -> usize {
    match peer.handle_datagram(SocketAddr::new(A_IP, 40000), datagram, out, now) {
        Inbound::Tun(p) => p.len(),
        other => panic!("decapsulate: {other:?}"),
    }
}

/// `count` datagrams, fresh from `a`.
fn peer_datagrams(a: &mut WireGuardPeer, packet: &[u8], count: usize) -> Vec<Vec<u8>> {
    let mut out = vec![0u8; SLOT];
    let now = Instant::now();
    (0..count)
        .map(|_| match a.handle_tun_packet(packet, &mut out, now) {
            Outbound::Send(t) => t.datagram.to_vec(),
            other => panic!("data: {other:?}"),
        })
        .collect()
}

fn wireguard(c: &mut Criterion) {
    let packet = ipv4_packet(PACKET);
    let (mut a, mut b) = handshaken_pair();
    let mut out = vec![0u8; SLOT];
    let mut outs = vec![0u8; BATCH * SLOT];
    let mut group = c.benchmark_group("wireguard");

    group.throughput(Throughput::Bytes(PACKET as u64));
    group.bench_function("encapsulate_1420", |bench| {
        bench.iter(|| encapsulate(&mut a, black_box(&packet), &mut out));
    });
    group.bench_function("decapsulate_1420", |bench| {
        bench.iter_batched_ref(
            || datagrams(&mut a, &packet, 1),
            |datagrams| decapsulate(&mut b, black_box(&datagrams[0]), &mut out),
            BatchSize::SmallInput,
        );
    });

    group.throughput(Throughput::Bytes((BATCH * PACKET) as u64));
    group.bench_function("encapsulate_batch32_1420", |bench| {
        bench.iter(|| {
            outs.chunks_exact_mut(SLOT)
                .map(|slot| encapsulate(&mut a, black_box(&packet), slot))
                .sum::<usize>()
        });
    });
    // One fresh batch per timed iteration, decrypted while still in cache, as the data
    // plane decrypts what recvmmsg has just written. (Batching the setup instead piles
    // up megabytes of datagrams and measures cache misses, twice the time per packet.)
    group.bench_function("decapsulate_batch32_1420", |bench| {
        bench.iter_batched_ref(
            || datagrams(&mut a, &packet, BATCH),
            |datagrams| {
                datagrams
                    .iter()
                    .zip(outs.chunks_exact_mut(SLOT))
                    .map(|(datagram, slot)| decapsulate(&mut b, black_box(datagram), slot))
                    .sum::<usize>()
            },
            BatchSize::PerIteration,
        );
    });

    // The same batches through the policy layer, with one clock read per batch as the
    // data plane does.
    let (mut pa, mut pb) = handshaken_peers();
    group.bench_function("peer_encapsulate_batch32_1420", |bench| {
        bench.iter(|| {
            let now = Instant::now();
            outs.chunks_exact_mut(SLOT)
                .map(|slot| peer_encapsulate(&mut pa, black_box(&packet), slot, now))
                .sum::<usize>()
        });
    });
    group.bench_function("peer_decapsulate_batch32_1420", |bench| {
        bench.iter_batched_ref(
            || peer_datagrams(&mut pa, &packet, BATCH),
            |datagrams| {
                let now = Instant::now();
                datagrams
                    .iter()
                    .zip(outs.chunks_exact_mut(SLOT))
                    .map(|(datagram, slot)| {
                        peer_decapsulate(&mut pb, black_box(datagram), slot, now)
                    })
                    .sum::<usize>()
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, wireguard);
criterion_main!(benches);
