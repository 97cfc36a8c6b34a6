//! ESP decapsulation (`EspCore::decapsulate`, and GRE over ESP through
//! `IpTunnelCore`): the first byte picks the cipher and what the rest is:
//!
//! - 0: an ESP packet as the outer IP payload (bad SPIs, lengths, ICVs, sequence
//!   numbers below or far above the window);
//! - 1: eight bytes of sequence number and a plaintext, sealed with the peer's real SA
//!   so that the ICV verifies and the trailer parser and ESN inference see arbitrary
//!   bytes;
//! - 2: a whole IPv4 datagram for an encrypted GRE line, and the same bytes behind a
//!   valid outer header from the peer with protocol 50;
//! - 3: epoch keying: the bytes as an ESP packet or Hello (the Hello SPI forced when
//!   the next byte is odd), then, after a genuine agreement with a peer core, again,
//!   so that the current epoch's SAs see them too.
//!
//! Nothing may panic; what is returned must lie inside the input buffer.

#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use twnode::tunnel::esp::{self, Cipher, Decap, EpochParams, EspCore, SaCrypto, SaPair};
use twnode::tunnel::gre::GreOptions;
use twnode::tunnel::iptunnel::{IpTunnelCore, Settings};
use twnode::tunnel::iptype::{Tos, Ttl, TunnelType};
use twnode::tunnel::Action;
use twnode::wire::{ipv4, IpProtocol, TrafficClass};

const A: &str = "203.0.113.10";
const B: &str = "198.51.100.20";

/// (A's SAs, B's SAs) per cipher: derived once, HKDF is not what is fuzzed.
fn sas(cipher: Cipher) -> &'static (SaPair, SaPair) {
    static CACHE: OnceLock<[(SaPair, SaPair); 2]> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        Cipher::ALL.map(|c| {
            let (a, b): (IpAddr, IpAddr) = (A.parse().unwrap(), B.parse().unwrap());
            (
                esp::derive(c, b"fuzz-encryption-key", b"fuzz-authentication", a, b).unwrap(),
                esp::derive(c, b"fuzz-encryption-key", b"fuzz-authentication", b, a).unwrap(),
            )
        })
    });
    &all[usize::from(cipher == Cipher::Aes256Gcm)]
}

fn inside(p: &[u8], range: &std::ops::Range<usize>) {
    let start = p.as_ptr() as usize;
    assert!(start >= range.start && start + p.len() <= range.end);
}

fn range_of(b: &[u8]) -> std::ops::Range<usize> {
    let r = b.as_ptr_range();
    r.start as usize..r.end as usize
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let cipher = Cipher::ALL[usize::from(selector & 1)];
    let (sa_a, sa_b) = sas(cipher);
    let mut rx = EspCore::new(cipher, sa_b, 1, 1 << 20).unwrap();
    let now = Instant::now();
    match (selector >> 1) % 4 {
        0 => {
            let mut buf = rest.to_vec();
            let r = range_of(&buf);
            if let Ok(Decap::Packet { payload, .. }) = rx.decapsulate(&mut buf, now) {
                inside(payload, &r);
            }
        }
        1 => {
            let (seq_bytes, plain) = rest.split_at(rest.len().min(8));
            let mut s = [0u8; 8];
            s[..seq_bytes.len()].copy_from_slice(seq_bytes);
            let seq = u64::from_be_bytes(s);
            let tx = SaCrypto::new(cipher, &sa_a.outbound).unwrap();
            let mut buf = vec![0u8; esp::PREFIX_LEN + plain.len() + 16];
            buf[..4].copy_from_slice(&sa_a.outbound.spi.to_be_bytes());
            buf[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
            buf[8..16].copy_from_slice(&seq.to_be_bytes());
            buf[16..16 + plain.len()].copy_from_slice(plain);
            let (p, icv) = buf[16..].split_at_mut(plain.len());
            tx.seal(seq, seq.to_be_bytes(), true, p, icv).unwrap();
            let r = range_of(&buf);
            if let Ok(Decap::Packet { payload, .. }) = rx.decapsulate(&mut buf, now) {
                inside(payload, &r);
                // The ICV verified, so the payload is a prefix of what was sealed.
                assert_eq!(payload, &plain[..payload.len()]);
            }
        }
        2 => {
            let (local, peer) = (B.parse().unwrap(), A.parse().unwrap());
            let settings = Settings {
                kind: TunnelType::Gre,
                local,
                peer,
                ttl: Ttl::Inherit,
                tos: Tos::Inherit,
                pmtudisc: true,
                gre: GreOptions::default(),
                keepalive: None,
            };
            let mut core = IpTunnelCore::new(settings).unwrap().with_esp(rx).unwrap();
            let mut buf = rest.to_vec();
            let r = range_of(&buf);
            if let Action::WriteToTun(p) | Action::WriteToNetwork(p) =
                core.handle_ipv4_datagram(&mut buf, now)
            {
                inside(p, &r);
            }
            let mut b = vec![0u8; 20 + rest.len()];
            b[20..].copy_from_slice(rest);
            let (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) = (peer, local) else {
                return;
            };
            let Ok(()) = (ipv4::Repr {
                src_addr,
                dst_addr,
                protocol: IpProtocol::Esp,
                payload_len: rest.len(),
                ttl: 64,
                traffic_class: TrafficClass(0x03),
                dont_frag: true,
                ident: 1,
            })
            .emit(&mut ipv4::Packet::new_unchecked(&mut b[..])) else {
                return;
            };
            let r = range_of(&b);
            if let Action::WriteToTun(p) | Action::WriteToNetwork(p) =
                core.handle_ipv4_datagram(&mut b, now)
            {
                inside(p, &r);
            }
        }
        _ => epochs(cipher, rest, now),
    }
});

/// Epoch keying: arbitrary bytes before and after an agreement.
fn epochs(cipher: Cipher, rest: &[u8], now: Instant) {
    let (a, b): (IpAddr, IpAddr) = (A.parse().unwrap(), B.parse().unwrap());
    let params = |local, peer| EpochParams {
        cipher,
        enc_key: b"fuzz-encryption-key",
        auth_key: b"fuzz-authentication",
        local,
        peer,
        rekey_after: esp::DEFAULT_REKEY_AFTER,
    };
    let mut rx = EspCore::with_epochs(params(b, a), [0xbb; 32], now).unwrap();
    let mut tx = EspCore::with_epochs(params(a, b), [0xaa; 32], now).unwrap();
    let (&flag, bytes) = rest.split_first().unwrap_or((&0, &[]));
    let mut buf = bytes.to_vec();
    if flag & 1 == 1 && buf.len() >= 4 {
        buf[..4].copy_from_slice(&0x74u32.to_be_bytes());
    }
    let feed = |core: &mut EspCore, buf: &[u8]| {
        let mut b = buf.to_vec();
        let r = range_of(&b);
        if let Ok(Decap::Packet { payload, .. }) = core.decapsulate(&mut b, now) {
            inside(payload, &r);
        }
    };
    feed(&mut rx, &buf);
    // A genuine exchange: every Hello each way until both are quiet.
    let exchange = |from: &mut EspCore, to: &mut EspCore, fresh: u8| {
        let mut hello = [0u8; 200];
        if let Some(n) = from.poll_hello(now, move || Some([fresh; 32]), &mut hello) {
            let _ = to.decapsulate(&mut hello[..n], now);
        }
    };
    for i in 0..6u8 {
        exchange(&mut tx, &mut rx, 2 * i + 1);
        exchange(&mut rx, &mut tx, 2 * i + 2);
    }
    feed(&mut rx, &buf);
}
