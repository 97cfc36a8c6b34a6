//! Path MTU for a line's outer packets: whether an inner packet read from the TUN
//! device still fits the path once encapsulated, and if not, the ICMP error that tells
//! its sender, as the kernel's own tunnels do (`ip_tunnel`'s `tnl_update_pmtu`):
//! ICMPv4 fragmentation needed (RFC 1191) for an IPv4 packet with DF set, ICMPv6 packet
//! too big (RFC 8201) for IPv6. With these, path MTU discovery works through any depth
//! of stacked lines.
//!
//! Why this is needed at all: the kernel enforces the TUN device's MTU before a packet
//! reaches us (a forwarded packet gets its ICMP error from the kernel, a local socket
//! gets EMSGSIZE), so a line whose MTU is its parent's MTU minus its overhead never sees
//! a packet too big. One can still arrive when the line's MTU was set by hand (`--mtu`)
//! above what the parent carries, or when the parent's MTU shrank after the line came
//! up. That is what this guards.
//!
//! Rules: pure (no I/O, the time comes in as `now`); nothing allocated; errors are
//! rate-limited per line like the kernel's ICMP (1000 per second, bursts of 50:
//! `net.ipv4.icmp_msgs_per_sec`, `icmp_msgs_burst`).

use std::time::{Duration, Instant};

use crate::wire::{icmp, ipv4, ipv6};

/// ICMP errors a line may send per second.
pub const ERRORS_PER_SEC: u32 = 1000;
/// How many it may send at once after a quiet spell.
pub const ERROR_BURST: u32 = 50;
/// The IPv6 minimum link MTU (RFC 8200 §5).
const IPV6_MIN_MTU: u16 = 1280;

/// What to do with a packet from the TUN device, before encapsulating it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// It fits (or the underlay fragments the outer packet): encapsulate and send it.
    Send,
    /// Too big: drop it and write this ICMP error to the TUN device, to its sender.
    Refuse(&'a [u8]),
    /// Too big, and no error may be sent (not allowed about this packet, or rate
    /// limited): drop it.
    Drop,
}

/// How a line's outer packets leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outer {
    /// In a UDP datagram the kernel fragments when it is too big for the path
    /// (WireGuard): an IPv4 packet without DF still goes.
    Fragmentable,
    /// As a whole IP packet on a raw socket, never fragmented (the IP tunnels): nothing
    /// too big goes.
    Whole,
}

/// What a line adds around an inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overhead {
    /// Bytes added whatever the packet's length (outer header; for ESP also its header,
    /// IV and ICV).
    pub fixed: u16,
    /// ESP: bytes encrypted with the inner packet (GRE header, pad length, next header)
    /// whose sum with it is padded to a multiple of 4 (RFC 4303 §2.4).
    pub aligned: Option<u16>,
}

impl Overhead {
    /// The largest inner packet that fits a path of `path_mtu` bytes.
    pub fn inner_mtu(self, path_mtu: u16) -> u16 {
        let room = path_mtu.saturating_sub(self.fixed);
        match self.aligned {
            None => room,
            Some(extra) => (room - room % 4).saturating_sub(extra),
        }
    }
}

impl From<u16> for Overhead {
    /// A fixed overhead (WireGuard, the plain IP tunnels).
    fn from(fixed: u16) -> Overhead {
        Overhead {
            fixed,
            aligned: None,
        }
    }
}

/// The path check of one line.
#[derive(Debug, Clone)]
pub struct PathGuard {
    /// What the line adds around an inner packet.
    overhead: Overhead,
    outer: Outer,
    limit: RateLimit,
}

impl PathGuard {
    pub fn new(overhead: impl Into<Overhead>, outer: Outer) -> PathGuard {
        PathGuard {
            overhead: overhead.into(),
            outer,
            limit: RateLimit::new(ERRORS_PER_SEC, ERROR_BURST),
        }
    }

    /// The largest inner packet that fits a path of `path_mtu` bytes.
    pub fn inner_mtu(&self, path_mtu: u16) -> u16 {
        self.overhead.inner_mtu(path_mtu)
    }

    /// Checks `packet` (read from the TUN device) against a path that carries outer
    /// packets of up to `path_mtu` bytes; a refusal's ICMP error is written into `out`.
    pub fn handle_tun_packet<'a>(
        &mut self,
        packet: &[u8],
        path_mtu: u16,
        now: Instant,
        out: &'a mut [u8],
    ) -> Verdict<'a> {
        let fits = packet.len() <= usize::from(self.inner_mtu(path_mtu));
        if fits {
            return Verdict::Send;
        }
        let mtu = self.inner_mtu(path_mtu);
        // The error comes from the packet's destination, as tinc answers: an address
        // that routes back through this line (so reverse-path filters accept it) and
        // that is not ours (the kernel drops packets arriving with its own source).
        let built = match crate::wire::ip_version(packet) {
            Some(4) => {
                let Ok(p) = ipv4::Packet::new_checked(packet) else {
                    return Verdict::Drop;
                };
                if !p.dont_frag() {
                    return match self.outer {
                        Outer::Fragmentable => Verdict::Send,
                        Outer::Whole => Verdict::Drop,
                    };
                }
                let from = p.dst_addr();
                if !self.limit.allow(now) {
                    return Verdict::Drop;
                }
                icmp::frag_needed_v4(packet, mtu, from, out)
            }
            Some(6) => {
                // Every IPv6 link carries 1280 bytes; below that the outer packet is
                // fragmented where it can be, and a packet-too-big would not help.
                if packet.len() <= usize::from(IPV6_MIN_MTU) && self.outer == Outer::Fragmentable {
                    return Verdict::Send;
                }
                let Ok(p) = ipv6::Packet::new_checked(packet) else {
                    return Verdict::Drop;
                };
                let from = p.dst_addr();
                if !self.limit.allow(now) {
                    return Verdict::Drop;
                }
                icmp::packet_too_big_v6(packet, u32::from(mtu.max(IPV6_MIN_MTU)), from, out)
            }
            _ => return Verdict::Drop,
        };
        match built {
            Ok(n) => match out.get(..n) {
                Some(reply) => Verdict::Refuse(reply),
                None => Verdict::Drop,
            },
            Err(_) => Verdict::Drop,
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: u32,
    burst: u32,
    tokens: u32,
    last: Option<Instant>,
}

impl RateLimit {
    pub fn new(rate: u32, burst: u32) -> RateLimit {
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let last = *self.last.get_or_insert(now);
        let elapsed = now.saturating_duration_since(last);
        let earned = elapsed.as_micros() * u128::from(self.rate) / 1_000_000;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(self.burst);
            // Keep the fraction of a token not yet earned.
            let used = Duration::from_micros(
                (u128::from(earned) * 1_000_000 / u128::from(self.rate.max(1))) as u64,
            );
            self.last = Some(if self.tokens == self.burst {
                now
            } else {
                last + used
            });
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;
    use crate::wire::{icmp, IpProtocol, TrafficClass};
    use std::net::Ipv4Addr;

    const WG_V4: u16 = 60;

    fn v4(len: usize, df: bool, protocol: IpProtocol, first_payload_byte: u8) -> Vec<u8> {
        let repr = ipv4::Repr {
            src_addr: Ipv4Addr::new(172, 16, 0, 1),
            dst_addr: Ipv4Addr::new(172, 16, 0, 2),
            protocol,
            payload_len: len - ipv4::HEADER_LEN,
            ttl: 64,
            traffic_class: TrafficClass::default(),
            dont_frag: df,
            ident: 7,
        };
        let mut buf = vec![0u8; len];
        repr.emit(&mut ipv4::Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        buf[ipv4::HEADER_LEN] = first_payload_byte;
        buf
    }

    fn v6(len: usize) -> Vec<u8> {
        let repr = ipv6::Repr {
            src_addr: "fd00::1".parse().unwrap(),
            dst_addr: "fd00::2".parse().unwrap(),
            next_header: IpProtocol::Udp,
            payload_len: len - ipv6::HEADER_LEN,
            hop_limit: 64,
            traffic_class: TrafficClass::default(),
            flow_label: ipv6::FlowLabel::default(),
        };
        let mut buf = vec![0u8; len];
        repr.emit(&mut ipv6::Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        buf
    }

    fn refusal(v: Verdict<'_>) -> Vec<u8> {
        match v {
            Verdict::Refuse(r) => r.to_vec(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_packet_that_fits_the_path_is_sent() {
        let mut g = PathGuard::new(WG_V4, Outer::Whole);
        let mut out = [0u8; 1500];
        let p = v4(1380, true, IpProtocol::Udp, 0);
        assert_eq!(
            g.handle_tun_packet(&p, 1440, Instant::now(), &mut out),
            Verdict::Send
        );
    }

    #[test]
    fn esp_overhead_pads_to_four_bytes() {
        // IPv4 + ESP (8 header + 8 IV + 16 ICV), GRE 4 + pad length + next header.
        let esp = Overhead {
            fixed: 20 + 32,
            aligned: Some(4 + 2),
        };
        assert_eq!(esp.inner_mtu(1500), 1442);
        assert_eq!(esp.inner_mtu(1501), 1442);
        assert_eq!(esp.inner_mtu(1503), 1442);
        assert_eq!(esp.inner_mtu(1504), 1446);
        assert_eq!(esp.inner_mtu(10), 0);
        assert_eq!(Overhead::from(60).inner_mtu(1500), 1440);
    }

    #[test]
    fn one_byte_too_big_with_df_gets_frag_needed_with_the_inner_mtu_from_its_destination() {
        let mut g = PathGuard::new(WG_V4, Outer::Fragmentable);
        let mut out = [0u8; 1500];
        let p = v4(1381, true, IpProtocol::Udp, 0);
        let reply = refusal(g.handle_tun_packet(&p, 1440, Instant::now(), &mut out));
        let ip = ipv4::Packet::new_checked(&reply[..]).unwrap();
        assert_eq!(ip.src_addr(), Ipv4Addr::new(172, 16, 0, 2));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(172, 16, 0, 1));
        assert_eq!(ip.protocol(), IpProtocol::Icmp);
        let msg = icmp::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(msg.msg_type(), icmp::TYPE_DEST_UNREACHABLE);
        assert_eq!(msg.msg_code(), icmp::CODE_FRAG_NEEDED);
        assert_eq!(msg.next_hop_mtu(), 1380);
        // The quote is the packet's header and 8 bytes of its data.
        assert_eq!(msg.payload(), &p[..28]);
    }

    #[test]
    fn without_df_a_fragmentable_line_sends_and_a_raw_line_drops() {
        let p = v4(1400, false, IpProtocol::Udp, 0);
        let mut out = [0u8; 1500];
        let now = Instant::now();
        let mut udp = PathGuard::new(WG_V4, Outer::Fragmentable);
        assert_eq!(
            udp.handle_tun_packet(&p, 1440, now, &mut out),
            Verdict::Send
        );
        let mut raw = PathGuard::new(24, Outer::Whole);
        assert_eq!(
            raw.handle_tun_packet(&p, 1416, now, &mut out),
            Verdict::Drop
        );
    }

    #[test]
    fn no_error_about_an_icmp_error() {
        let mut g = PathGuard::new(WG_V4, Outer::Whole);
        let mut out = [0u8; 1500];
        let p = v4(1400, true, IpProtocol::Icmp, icmp::TYPE_DEST_UNREACHABLE);
        assert_eq!(
            g.handle_tun_packet(&p, 1440, Instant::now(), &mut out),
            Verdict::Drop
        );
        // An echo request of the same size is answered.
        let p = v4(1400, true, IpProtocol::Icmp, 8);
        refusal(g.handle_tun_packet(&p, 1440, Instant::now(), &mut out));
    }

    #[test]
    fn ipv6_gets_packet_too_big_never_below_1280() {
        let mut g = PathGuard::new(WG_V4, Outer::Fragmentable);
        let mut out = [0u8; 1500];
        let now = Instant::now();
        let reply = refusal(g.handle_tun_packet(&v6(1400), 1440, now, &mut out));
        let ip = ipv6::Packet::new_checked(&reply[..]).unwrap();
        assert_eq!(
            ip.dst_addr(),
            "fd00::1".parse::<std::net::Ipv6Addr>().unwrap()
        );
        let msg = icmp::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(msg.msg_type(), icmp::TYPE_PACKET_TOO_BIG);
        assert_eq!(msg.mtu(), 1380);
        // A path too small for 1280 inner bytes: the outer datagram is fragmented
        // for packets up to 1280, and bigger ones learn 1280.
        assert_eq!(
            g.handle_tun_packet(&v6(1280), 1300, now, &mut out),
            Verdict::Send
        );
        let reply = refusal(g.handle_tun_packet(&v6(1300), 1300, now, &mut out));
        let ip = ipv6::Packet::new_checked(&reply[..]).unwrap();
        assert_eq!(icmp::Packet::new_checked(ip.payload()).unwrap().mtu(), 1280);
    }

    #[test]
    fn garbage_too_big_for_the_path_is_dropped() {
        let mut g = PathGuard::new(WG_V4, Outer::Whole);
        let mut out = [0u8; 1500];
        let junk = [0xffu8; 1450];
        assert_eq!(
            g.handle_tun_packet(&junk, 1440, Instant::now(), &mut out),
            Verdict::Drop
        );
    }

    #[test]
    fn errors_are_rate_limited_to_a_burst_then_the_rate() {
        let mut g = PathGuard::new(WG_V4, Outer::Whole);
        let mut out = [0u8; 1500];
        let p = v4(1400, true, IpProtocol::Udp, 0);
        let t0 = Instant::now();
        let mut answered = 0;
        for _ in 0..(ERROR_BURST + 10) {
            if matches!(
                g.handle_tun_packet(&p, 1440, t0, &mut out),
                Verdict::Refuse(_)
            ) {
                answered += 1;
            }
        }
        assert_eq!(answered, ERROR_BURST);
        // One token a millisecond at 1000 per second.
        let t1 = t0 + Duration::from_micros(1500);
        assert!(matches!(
            g.handle_tun_packet(&p, 1440, t1, &mut out),
            Verdict::Refuse(_)
        ));
        assert_eq!(g.handle_tun_packet(&p, 1440, t1, &mut out), Verdict::Drop);
        let t2 = t0 + Duration::from_millis(2);
        assert!(matches!(
            g.handle_tun_packet(&p, 1440, t2, &mut out),
            Verdict::Refuse(_)
        ));
        // A second later the bucket is full again, not fuller.
        let t3 = t0 + Duration::from_secs(1);
        let mut answered = 0;
        for _ in 0..(ERROR_BURST + 10) {
            if matches!(
                g.handle_tun_packet(&p, 1440, t3, &mut out),
                Verdict::Refuse(_)
            ) {
                answered += 1;
            }
        }
        assert_eq!(answered, ERROR_BURST);
    }
}
