//! Health probes are packets. The daemon asks a line to send an ICMP echo request (ICMPv6
//! for IPv6 VIPs) from its local VIP to its peer VIP or another target; the line puts
//! it into its outbound path as if it had been read from its TUN device, so it takes
//! the tunnel exactly as traffic does. The peer's kernel answers it like any ping. The
//! line's inbound path takes the echo reply off before the TUN write (the host never
//! sees it) and records when it came ([`Prober`]); the daemon reads that by sequence
//! number.
//!
//! Rules: each line has its own ICMP identifier (unique in the process) and a random
//! 8-byte token in the payload, so a ping of the host's own through the line is never
//! mistaken for a probe (nor the reverse). Recognising a reply costs a few byte compares
//! on packets that are ICMP, one on the rest; nothing is allocated per probe (the
//! request is built in the caller's buffer, replies are recorded in atomics).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::wire::checksum::{combine, pseudo_header, sum};
use crate::wire::{IpPair, IpProtocol};

/// Bytes of payload: the line's token, then the sequence number again (so a reply
/// whose header was rewritten still names its probe).
const PAYLOAD: usize = 16;
/// The longest probe (IPv6 header, ICMPv6 header, payload).
pub const MAX_PROBE: usize = 40 + 8 + PAYLOAD;
/// Replies remembered, by sequence number (far more than are ever in flight).
const BOARD: usize = 256;
/// ICMP echo request / reply, and ICMPv6's.
const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// Why a probe did not go.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The source VIP and the target are of different IP versions.
    #[error("probe target {target} is not of the family of the line's VIP {from}")]
    Family {
        /// The line's VIP.
        from: IpAddr,
        /// The target.
        target: IpAddr,
    },
    /// The line cannot send now (no WireGuard session or endpoint yet, the packet path
    /// stopped, the socket refused).
    #[error("the line cannot send now: {0}")]
    CannotSend(&'static str),
}

/// The next identifier handed to a line (starts at a random value, so two daemons on
/// one host rarely share one).
static NEXT_ID: AtomicU16 = AtomicU16::new(0);

/// One line's probes: its identifier and token, and the replies its inbound path took.
#[derive(Debug)]
pub struct Prober {
    id: u16,
    token: [u8; 8],
    /// Per `seq % BOARD`: `seq << 48 | microseconds since `base``, 0 when empty.
    board: [AtomicU64; BOARD],
    base: Instant,
}

impl Prober {
    /// A line's prober, with a fresh identifier and token.
    pub fn new() -> Prober {
        let mut random = [0u8; 10];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut random);
        let _ = NEXT_ID.compare_exchange(
            0,
            u16::from_be_bytes([random[8], random[9]]) | 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let mut token = [0u8; 8];
        token.copy_from_slice(&random[..8]);
        Prober {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            token,
            board: std::array::from_fn(|_| AtomicU64::new(0)),
            base: Instant::now(),
        }
    }

    /// The ICMP identifier of this line's probes.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Writes the echo request `seq` from `from` (the line's VIP) to `target` into
    /// `buf` (at least [`MAX_PROBE`] bytes); returns its length.
    pub fn build(
        &self,
        from: IpAddr,
        target: IpAddr,
        seq: u16,
        buf: &mut [u8],
    ) -> Result<usize, ProbeError> {
        let pair = match (from, target) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => IpPair::V4 { src, dst },
            (IpAddr::V6(src), IpAddr::V6(dst)) => IpPair::V6 { src, dst },
            _ => return Err(ProbeError::Family { from, target }),
        };
        let header = if from.is_ipv4() { 20 } else { 40 };
        let len = header + 8 + PAYLOAD;
        let Some(packet) = buf.get_mut(..len) else {
            return Err(ProbeError::CannotSend("probe buffer too small"));
        };
        packet.fill(0);
        let (ip, icmp) = packet.split_at_mut(header);
        match pair {
            IpPair::V4 { src, dst } => {
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                ip[4..6].copy_from_slice(&seq.to_be_bytes());
                ip[8] = 64;
                ip[9] = IpProtocol::Icmp.number();
                ip[12..16].copy_from_slice(&src.octets());
                ip[16..20].copy_from_slice(&dst.octets());
                let c = !sum(ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                icmp[0] = ECHO_REQUEST_V4;
            }
            IpPair::V6 { src, dst } => {
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
                ip[6] = IpProtocol::Icmpv6.number();
                ip[7] = 64;
                ip[8..24].copy_from_slice(&src.octets());
                ip[24..40].copy_from_slice(&dst.octets());
                icmp[0] = ECHO_REQUEST_V6;
            }
        }
        icmp[4..6].copy_from_slice(&self.id.to_be_bytes());
        icmp[6..8].copy_from_slice(&seq.to_be_bytes());
        icmp[8..16].copy_from_slice(&self.token);
        icmp[16..18].copy_from_slice(&seq.to_be_bytes());
        let body = sum(icmp);
        let c = match pair {
            IpPair::V4 { .. } => !body,
            IpPair::V6 { .. } => !combine(&[
                pseudo_header(&pair, IpProtocol::Icmpv6, icmp.len() as u32),
                body,
            ]),
        };
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        Ok(len)
    }

    /// Whether `packet` (decapsulated, on its way to the TUN device) is the reply to one
    /// of this line's probes; if so its arrival at `now` is recorded and the packet must
    /// not be written.
    #[inline]
    pub fn take_reply(&self, packet: &[u8], now: Instant) -> bool {
        let icmp = match packet.first().map(|b| b >> 4) {
            Some(4) if packet.get(9) == Some(&IpProtocol::Icmp.number()) => {
                let ihl = usize::from(packet[0] & 0x0f) * 4;
                match packet.get(ihl..) {
                    Some(icmp) if icmp.first() == Some(&ECHO_REPLY_V4) => icmp,
                    _ => return false,
                }
            }
            Some(6) if packet.get(6) == Some(&IpProtocol::Icmpv6.number()) => {
                match packet.get(40..) {
                    Some(icmp) if icmp.first() == Some(&ECHO_REPLY_V6) => icmp,
                    _ => return false,
                }
            }
            _ => return false,
        };
        let Some(body) = icmp.get(..8 + PAYLOAD) else {
            return false;
        };
        if body[4..6] != self.id.to_be_bytes() || body[8..16] != self.token {
            return false;
        }
        let seq = u16::from_be_bytes([body[6], body[7]]);
        let micros = now.saturating_duration_since(self.base).as_micros() as u64;
        // 48 bits of microseconds: nine years.
        let entry = (u64::from(seq) << 48) | (micros & ((1 << 48) - 1)) | 1;
        self.board[usize::from(seq) % BOARD].store(entry, Ordering::Relaxed);
        true
    }

    /// When the reply to probe `seq` came, if it did (and was not overwritten by a
    /// probe 256 later).
    pub fn reply(&self, seq: u16) -> Option<Instant> {
        let entry = self.board[usize::from(seq) % BOARD].load(Ordering::Relaxed);
        if entry == 0 || (entry >> 48) as u16 != seq {
            return None;
        }
        Some(self.base + Duration::from_micros(entry & ((1 << 48) - 1)))
    }
}

impl Default for Prober {
    fn default() -> Prober {
        Prober::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// What a peer's kernel does with an echo request: swap the addresses, turn it
    /// into a reply, fix the checksums.
    fn answer(request: &[u8]) -> Vec<u8> {
        let mut p = request.to_vec();
        if p[0] >> 4 == 4 {
            let (src, dst) = (p[12..16].to_vec(), p[16..20].to_vec());
            p[12..16].copy_from_slice(&dst);
            p[16..20].copy_from_slice(&src);
            p[20] = ECHO_REPLY_V4;
            p[22..24].fill(0);
            let c = !sum(&p[20..]);
            p[22..24].copy_from_slice(&c.to_be_bytes());
        } else {
            let (src, dst) = (p[8..24].to_vec(), p[24..40].to_vec());
            p[8..24].copy_from_slice(&dst);
            p[24..40].copy_from_slice(&src);
            p[40] = ECHO_REPLY_V6;
        }
        p
    }

    #[test]
    fn ipv4_probe_is_a_valid_echo_request_and_its_reply_is_taken() {
        let prober = Prober::new();
        let mut buf = [0u8; MAX_PROBE];
        let n = prober
            .build(
                "10.0.0.1".parse().unwrap(),
                "10.0.0.2".parse().unwrap(),
                7,
                &mut buf,
            )
            .unwrap();
        let p = &buf[..n];
        assert_eq!(n, 44);
        assert_eq!(sum(&p[..20]), 0xffff, "IPv4 header checksum");
        assert_eq!(sum(&p[20..]), 0xffff, "ICMP checksum");
        assert_eq!(
            (p[20], &p[24..26]),
            (ECHO_REQUEST_V4, &prober.id().to_be_bytes()[..])
        );
        // The request itself (looped back) is not a reply.
        let t = Instant::now();
        assert!(!prober.take_reply(p, t));
        assert!(prober.take_reply(&answer(p), t + Duration::from_millis(3)));
        let at = prober.reply(7).unwrap();
        assert!(at >= t + Duration::from_millis(2), "{at:?}");
        assert_eq!(prober.reply(8), None);
        assert_eq!(prober.reply(7 + BOARD as u16), None);
    }

    #[test]
    fn ipv6_probe_checksums_with_the_pseudo_header() {
        let prober = Prober::new();
        let mut buf = [0u8; MAX_PROBE];
        let (a, b): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let n = prober.build(a, b, 9, &mut buf).unwrap();
        let (IpAddr::V6(src), IpAddr::V6(dst)) = (a, b) else {
            unreachable!()
        };
        let pair = IpPair::V6 { src, dst };
        let total = combine(&[
            pseudo_header(&pair, IpProtocol::Icmpv6, (n - 40) as u32),
            sum(&buf[40..n]),
        ]);
        assert_eq!(total, 0xffff);
        assert!(prober.take_reply(&answer(&buf[..n]), Instant::now()));
        assert!(prober.reply(9).is_some());
    }

    #[test]
    fn another_lines_reply_or_a_plain_ping_is_not_taken() {
        let (ours, theirs) = (Prober::new(), Prober::new());
        assert_ne!(ours.id(), theirs.id());
        let mut buf = [0u8; MAX_PROBE];
        let n = theirs
            .build(
                "10.0.0.1".parse().unwrap(),
                "10.0.0.2".parse().unwrap(),
                1,
                &mut buf,
            )
            .unwrap();
        let reply = answer(&buf[..n]);
        assert!(!ours.take_reply(&reply, Instant::now()));
        // Our identifier but not our token: a host's own ping that happens to share it.
        let mut forged = reply.clone();
        forged[24..26].copy_from_slice(&ours.id().to_be_bytes());
        assert!(!ours.take_reply(&forged, Instant::now()));
        // Truncated or not ICMP at all.
        assert!(!ours.take_reply(&reply[..30], Instant::now()));
        assert!(!ours.take_reply(&[0x45, 0, 0, 20], Instant::now()));
        assert!(!ours.take_reply(&[], Instant::now()));
    }

    #[test]
    fn mixed_families_are_refused() {
        let mut buf = [0u8; MAX_PROBE];
        let err = Prober::new()
            .build(
                "10.0.0.1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
                1,
                &mut buf,
            )
            .unwrap_err();
        assert!(matches!(err, ProbeError::Family { .. }));
    }
}
