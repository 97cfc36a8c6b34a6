//! WireGuard (<https://www.wireguard.com/papers/wireguard.pdf>): the protocol state machine
//! is boringtun's `noise::Tunn`; this file adapts it to twnode's core contract (bytes in,
//! [`Action`] out, no I/O) and maps its errors to drop reasons.
//!
//! A line has exactly one peer, so every authenticated inner packet is accepted whatever
//! its source address (the line is point-to-point; relays forward foreign sources).

use std::net::IpAddr;
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};

use super::keys::{PresharedKey, PrivateKey, PublicKey};
use super::{Action, DropReason};

/// Bytes WireGuard adds to an inner packet: type 4, receiver index 4, counter 8, tag 16.
pub const DATA_OVERHEAD: usize = 32;
/// Smallest output buffer: a handshake initiation is 148 bytes.
pub const MIN_OUT: usize = 148;

/// The keys and timers of one WireGuard line.
pub struct Keys<'a> {
    pub private: &'a PrivateKey,
    pub peer_public: &'a PublicKey,
    /// Mixed into every handshake when both ends have it.
    pub preshared: Option<&'a PresharedKey>,
    /// Seconds; 0 disables it.
    pub keepalive: u16,
    /// A local session index, unique per line on the node (the upper 24 bits are used).
    pub index: u32,
}

/// Traffic figures of a WireGuard core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub last_handshake: Option<Duration>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

/// One WireGuard peer's protocol state.
pub struct WireGuardCore {
    tunn: Tunn,
}

fn drop_reason(e: WireGuardError) -> DropReason {
    use WireGuardError as E;
    match e {
        E::InvalidMac | E::InvalidAeadTag | E::WrongKey => DropReason::BadAuth,
        E::DuplicateCounter | E::InvalidCounter => DropReason::Replay,
        E::IncorrectPacketLength | E::WrongPacketType | E::InvalidPacket => DropReason::Malformed,
        E::WrongIndex | E::NoCurrentSession => DropReason::UnknownSession,
        E::UnexpectedPacket | E::InvalidTai64nTimestamp | E::WrongTai64nTimestamp => {
            DropReason::HandshakeRejected
        }
        E::UnderLoad => DropReason::UnderLoad,
        E::ConnectionExpired => DropReason::Expired,
        E::DestinationBufferTooSmall | E::LockFailed => DropReason::IoError,
    }
}

fn action(r: TunnResult<'_>) -> Action<'_> {
    match r {
        TunnResult::Done => Action::Done,
        TunnResult::Err(e) => Action::Drop(drop_reason(e)),
        TunnResult::WriteToNetwork(b) => Action::WriteToNetwork(b),
        TunnResult::WriteToTunnelV4(b, _) | TunnResult::WriteToTunnelV6(b, _) => {
            Action::WriteToTun(b)
        }
    }
}

impl WireGuardCore {
    /// A core that has not yet shaken hands.
    pub fn new(keys: Keys<'_>) -> Self {
        let keepalive = (keys.keepalive != 0).then_some(keys.keepalive);
        WireGuardCore {
            tunn: Tunn::new(
                keys.private.to_secret(),
                keys.peer_public.to_dalek(),
                keys.preshared.map(PresharedKey::to_bytes),
                keepalive,
                keys.index,
                None,
            ),
        }
    }

    /// An IP packet read from the TUN device: encrypted into `out`, or queued while a
    /// handshake (written into `out`) runs. `out` must hold `packet.len() + 32` and at
    /// least [`MIN_OUT`] bytes.
    pub fn handle_tun_packet<'a>(&mut self, packet: &[u8], out: &'a mut [u8]) -> Action<'a> {
        if out.len() < (packet.len() + DATA_OVERHEAD).max(MIN_OUT) {
            return Action::Drop(DropReason::IoError);
        }
        if crate::wire::ip_version(packet).is_none() {
            return Action::Drop(DropReason::NotIp);
        }
        action(self.tunn.encapsulate(packet, out))
    }

    /// A datagram from the peer at `from`. After a [`Action::WriteToNetwork`], call
    /// [`Self::poll_queued`] until it returns [`Action::Done`] to flush packets that
    /// waited for the handshake.
    pub fn handle_datagram<'a>(
        &mut self,
        from: IpAddr,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> Action<'a> {
        if datagram.is_empty() {
            return Action::Drop(DropReason::Malformed);
        }
        action(self.tunn.decapsulate(Some(from), datagram, out))
    }

    /// Packets queued during a handshake, one per call.
    pub fn poll_queued<'a>(&mut self, out: &'a mut [u8]) -> Action<'a> {
        action(self.tunn.decapsulate(None, &[], out))
    }

    /// Timer work: retransmits, rekeys, keepalives. Call a few times a second.
    pub fn poll_timers<'a>(&mut self, out: &'a mut [u8]) -> Action<'a> {
        action(self.tunn.update_timers(out))
    }

    /// Starts a handshake unless one is in progress (a client does this at once).
    pub fn poll_handshake<'a>(&mut self, out: &'a mut [u8]) -> Action<'a> {
        action(self.tunn.format_handshake_initiation(out, false))
    }

    /// A new handshake initiation even while one is in progress (whose answer may
    /// never come: it went to no endpoint or a stale one). The caller rate-limits.
    pub fn poll_handshake_anew<'a>(&mut self, out: &'a mut [u8]) -> Action<'a> {
        action(self.tunn.format_handshake_initiation(out, true))
    }

    /// Whether a session is established and fresh (a handshake in the last 180 s,
    /// WireGuard's REJECT_AFTER_TIME).
    pub fn is_up(&self) -> bool {
        matches!(self.stats().last_handshake, Some(t) if t < Duration::from_secs(180))
    }

    /// Traffic figures.
    pub fn stats(&self) -> Stats {
        let (last_handshake, tx, rx, _, _) = self.tunn.stats();
        Stats {
            last_handshake,
            tx_bytes: tx as u64,
            rx_bytes: rx as u64,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
pub(super) mod test {
    use super::*;

    /// Two cores wired back to back in memory (quinn's `Pair`).
    struct Pair {
        a: WireGuardCore,
        b: WireGuardCore,
    }

    const A_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 10));
    const B_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 20));

    /// An IPv4/UDP packet 10.0.0.1 -> 10.0.0.2 carrying `payload` (also the
    /// [`super::super::wireguard_peer`] tests' packet).
    pub(in crate::tunnel) fn ipv4_packet(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(payload);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    impl Pair {
        fn new() -> Pair {
            Pair::with_psk(None, None)
        }

        /// Two cores with these preshared keys (`None`: none).
        fn with_psk(psk_a: Option<&PresharedKey>, psk_b: Option<&PresharedKey>) -> Pair {
            let ka = PrivateKey::generate();
            let kb = PrivateKey::generate();
            let (pa, pb) = (ka.public_key(), kb.public_key());
            let core = |k, p, i, preshared| {
                WireGuardCore::new(Keys {
                    private: k,
                    peer_public: p,
                    preshared,
                    keepalive: 25,
                    index: i,
                })
            };
            Pair {
                a: core(&ka, &pb, 1, psk_a),
                b: core(&kb, &pa, 2, psk_b),
            }
        }

        /// Delivers `dgram` from `a` to `b` (or back), feeding every reply across until
        /// both sides are quiet; returns what reached the receiving TUN.
        fn deliver(&mut self, a_to_b: bool, dgram: Vec<u8>) -> Vec<Vec<u8>> {
            let mut tun = Vec::new();
            let mut pending = vec![(a_to_b, dgram)];
            let mut out = vec![0u8; 2048];
            while let Some((to_b, d)) = pending.pop() {
                let (rx, from) = if to_b {
                    (&mut self.b, A_IP)
                } else {
                    (&mut self.a, B_IP)
                };
                let mut next = match rx.handle_datagram(from, &d, &mut out) {
                    Action::WriteToNetwork(b) => Some(b.to_vec()),
                    Action::WriteToTun(b) => {
                        tun.push(b.to_vec());
                        None
                    }
                    Action::Done => None,
                    Action::Drop(r) => panic!("dropped: {r:?}"),
                };
                while let Some(reply) = next.take() {
                    pending.push((!to_b, reply));
                    if let Action::WriteToNetwork(b) = rx.poll_queued(&mut out) {
                        next = Some(b.to_vec());
                    }
                }
            }
            tun
        }
    }

    #[test]
    fn the_same_preshared_key_on_both_ends_shakes_hands_and_another_does_not() {
        let psk = PresharedKey::generate();
        let mut p = Pair::with_psk(Some(&psk), Some(&psk));
        let mut out = vec![0u8; 2048];
        let pkt = ipv4_packet(b"post-quantum");
        let Action::WriteToNetwork(init) = p.a.handle_tun_packet(&pkt, &mut out) else {
            panic!("no handshake initiation");
        };
        let init = init.to_vec();
        assert_eq!(p.deliver(true, init), vec![pkt.clone()]);
        assert!(p.a.is_up() && p.b.is_up());

        // One end without the key (or with another): the responder cannot finish the
        // handshake the initiator started, so no session, no packet.
        for (a, b) in [
            (Some(&psk), None),
            (Some(&psk), Some(&PresharedKey::generate())),
        ] {
            let mut p = Pair::with_psk(a, b);
            let Action::WriteToNetwork(init) = p.a.handle_tun_packet(&pkt, &mut out) else {
                panic!("no handshake initiation");
            };
            let mut resp = vec![0u8; 2048];
            let Action::WriteToNetwork(answer) = p.b.handle_datagram(A_IP, init, &mut resp) else {
                panic!("the responder answers (it cannot tell the keys differ)");
            };
            let answer = answer.to_vec();
            assert_eq!(
                p.a.handle_datagram(B_IP, &answer, &mut out),
                Action::Drop(DropReason::BadAuth),
                "the initiator refuses a response made with another preshared key"
            );
            assert!(!p.a.is_up());
        }
    }

    #[test]
    fn first_packet_is_queued_until_handshake_completes_then_delivered() {
        let mut p = Pair::new();
        let mut out = vec![0u8; 2048];
        let pkt = ipv4_packet(b"hello");
        let init = match p.a.handle_tun_packet(&pkt, &mut out) {
            Action::WriteToNetwork(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        assert_eq!(init.len(), 148, "a handshake initiation goes out first");
        // Feeding the handshake across: b answers, a completes the handshake and
        // flushes the queued packet, which reaches b's TUN.
        let at_b = p.deliver(true, init);
        assert_eq!(
            at_b,
            vec![pkt.clone()],
            "the queued packet arrives after the handshake"
        );
        assert!(p.a.is_up() && p.b.is_up());
        let data = match p.a.handle_tun_packet(&pkt, &mut out) {
            Action::WriteToNetwork(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        // boringtun does not pad to 16 bytes (padding is optional on the wire).
        assert_eq!(data.len(), pkt.len() + DATA_OVERHEAD);
        assert_eq!(p.deliver(true, data), vec![pkt.clone()]);
        assert!(p.a.stats().tx_bytes >= pkt.len() as u64);
    }

    #[test]
    fn flipped_bit_is_dropped_as_bad_auth_and_replay_as_replay() {
        let mut p = Pair::new();
        let mut out = vec![0u8; 2048];
        let init = match p.a.poll_handshake(&mut out) {
            Action::WriteToNetwork(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        p.deliver(true, init);
        let pkt = ipv4_packet(&[7u8; 100]);
        let data = match p.a.handle_tun_packet(&pkt, &mut out) {
            Action::WriteToNetwork(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        let mut bad = data.clone();
        bad[40] ^= 1;
        assert_eq!(
            p.b.handle_datagram(A_IP, &bad, &mut out),
            Action::Drop(DropReason::BadAuth)
        );
        assert!(matches!(
            p.b.handle_datagram(A_IP, &data, &mut out),
            Action::WriteToTun(_)
        ));
        assert_eq!(
            p.b.handle_datagram(A_IP, &data, &mut out),
            Action::Drop(DropReason::Replay)
        );
    }

    #[test]
    fn garbage_datagrams_are_dropped_not_panicking() {
        let mut p = Pair::new();
        let mut out = vec![0u8; 2048];
        for len in [1usize, 3, 4, 32, 148, 149, 1000] {
            for ty in [0u8, 1, 2, 3, 4, 9] {
                let mut d = vec![0u8; len];
                d[0] = ty;
                assert!(matches!(
                    p.b.handle_datagram(A_IP, &d, &mut out),
                    Action::Drop(_)
                ));
            }
        }
    }

    #[test]
    fn handshake_anew_starts_another_initiation_while_one_is_in_progress() {
        let mut p = Pair::new();
        let mut out = vec![0u8; 2048];
        let first = match p.a.poll_handshake(&mut out) {
            Action::WriteToNetwork(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            p.a.poll_handshake(&mut out),
            Action::Done,
            "one in progress"
        );
        let again = match p.a.poll_handshake_anew(&mut out) {
            Action::WriteToNetwork(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        assert_eq!(again.len(), 148);
        assert_ne!(again, first, "a fresh ephemeral key");
        // The new one completes a session.
        p.deliver(true, again);
        assert!(p.a.is_up() && p.b.is_up());
    }

    #[test]
    fn non_ip_packet_from_tun_is_dropped() {
        let mut p = Pair::new();
        let mut out = vec![0u8; 2048];
        assert_eq!(
            p.a.handle_tun_packet(&[0x00, 1, 2, 3], &mut out),
            Action::Drop(DropReason::NotIp)
        );
    }
}
