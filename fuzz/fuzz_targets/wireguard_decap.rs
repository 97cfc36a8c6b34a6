//! WireGuard datagrams through twnode's boringtun wrapper (`WireGuardCore`): the input
//! is one UDP payload from the peer, fed to cores with fixed keys, built afresh per input
//! so that every crash reproduces from its artifact alone:
//! - always, a responder that has not shaken hands (handshake initiations, data and
//!   keepalives for unknown sessions, anything else);
//! - for message types 2 and 3 (handshake response, cookie reply), also an initiator
//!   that has just sent its handshake initiation, so those reach their parsers. Only
//!   then: building it costs five x25519 operations, which under the sanitizer would
//!   otherwise make every run several times slower.
//!
//! Neither may panic, whatever the bytes. A handshake initiation made with the peer's key
//! (in the seed corpus) is answered, so the whole responder path runs.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use twnode::config::{PrivateKey, PublicKey};
use twnode::dataplane::batch::SLOT;
use twnode::tunnel::wireguard::{Keys, WireGuardCore};
use twnode::tunnel::Action;

/// The key of the cores under test (public half
/// pEebziengO6u4k/cxsDapOB1fB4cPRfAJjHTxpSYzn8=). Fixed so that the seed corpus carries
/// handshake initiations these cores accept. Used nowhere else; never reuse it.
const LOCAL_PRIVATE: &str = "IFo7CIqLsRvft+HCVIhIlvbCRnO7uZNaFQkRRZsMiGI=";
/// The peer the seed corpus was made as (its private key, for making new seeds:
/// uL7jkdrHmTvhE0eIL/ZdyWhJytC71S/a+0fPEMhCp2c=).
const PEER_PUBLIC: &str = "7uqHuAGej5hpNz5FE3pKjP9vA1z30QqogH5kXbCyZ1A=";
const FROM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20));
/// Bound on the queued-packet flush after a reply (the queue holds a few packets).
const MAX_QUEUED: usize = 64;

fn core(private: &PrivateKey, peer: &PublicKey, index: u32) -> WireGuardCore {
    WireGuardCore::new(Keys {
        private,
        peer_public: peer,
        preshared: None,
        keepalive: 25,
        index,
    })
}

fn feed(core: &mut WireGuardCore, data: &[u8], out: &mut [u8]) {
    let mut reply = match core.handle_datagram(FROM, data, out) {
        Action::WriteToNetwork(b) => Some(b.len()),
        Action::WriteToTun(b) => {
            assert!(
                b.len() <= data.len(),
                "decrypted packet longer than its datagram"
            );
            None
        }
        Action::Done | Action::Drop(_) => None,
    };
    // As the data plane does: after a reply, flush what waited for the handshake.
    let mut rounds = 0;
    while reply.take().is_some() && rounds < MAX_QUEUED {
        rounds += 1;
        if let Action::WriteToNetwork(b) = core.poll_queued(out) {
            reply = Some(b.len());
        }
    }
    let _ = core.poll_timers(out);
    let _ = (core.is_up(), core.stats());
}

fuzz_target!(|data: &[u8]| {
    let local: PrivateKey = LOCAL_PRIVATE.parse().expect("fixed key");
    let peer_public: PublicKey = PEER_PUBLIC.parse().expect("fixed key");
    let mut out = vec![0u8; SLOT];

    let mut responder = core(&local, &peer_public, 1);
    feed(&mut responder, data, &mut out);

    if !matches!(data.first(), Some(2 | 3)) {
        return;
    }
    let mut initiator = core(&local, &peer_public, 2);
    assert!(
        matches!(
            initiator.poll_handshake(&mut out),
            Action::WriteToNetwork(_)
        ),
        "a fresh core starts a handshake"
    );
    feed(&mut initiator, data, &mut out);
});
