//! GRE tunnels: RFC 2784 with the key and sequence number extensions of RFC 2890, as
//! Linux's `ip tunnel mode gre` and `ip -6 tunnel mode ip6gre` speak it, with iproute2's
//! options: `ikey`/`okey`, `iseq`/`oseq`, `icsum`/`ocsum`.
//!
//! The outer header, TTL/TOS, ECN and keepalives are [`super::iptunnel`]'s; this file
//! writes and checks the GRE header between outer and inner packet.
//!
//! Receive rules, as Linux's `ip_gre`: the key must be exactly the input key (a packet
//! with a key on a line without one, or without a key on a line with one, is the wrong
//! key); a checksum that is present is always verified, and required with `icsum`; with
//! `iseq` a packet needs a sequence number not below the one after the last accepted
//! (serial arithmetic, so the counter may wrap).
//!
//! Unlike Linux, a peer that restarted its counter (a daemon restart, a reload that
//! recreated its line) is followed instead of blackholed until its counter catches up
//! with ours, which takes minutes on an idle line: [`RESTART_RUN`] packets in a row that
//! are all behind the expected number but increase among themselves are a new sequence,
//! and the line resynchronises on it. A single late or repeated packet is still dropped
//! as out of order. Sequence numbers were never a defence on an unauthenticated line
//! (anyone who can spoof the peer can send numbers ahead); the rule costs no protection
//! that Linux's has.
//!
//! Cisco keepalives (also used by twnode): the probe's inner packet is itself a GRE
//! packet from the peer to us with protocol type 0 and no payload; when it comes back it
//! carries our input key and checksum setting, and no sequence number, so it is
//! recognised before the sequence check.

use super::iptype::{IpVersion, Layer};
use super::DropReason;
use crate::wire::gre::{Key, Packet, Repr, HEADER_LEN, PROTO_IPV4, PROTO_IPV6};

/// The protocol type of a Cisco keepalive reply.
pub const PROTO_KEEPALIVE: u16 = 0x0000;

/// A GRE line's options, iproute2's `[i|o]key`, `[i|o]seq`, `[i|o]csum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GreOptions {
    /// Key expected on received packets.
    pub ikey: Option<Key>,
    /// Key written on sent packets.
    pub okey: Option<Key>,
    /// Require increasing sequence numbers on received packets.
    pub iseq: bool,
    /// Number sent packets.
    pub oseq: bool,
    /// Require a checksum on received packets.
    pub icsum: bool,
    /// Checksum sent packets.
    pub ocsum: bool,
}

impl GreOptions {
    /// Whether every option is off (the only valid value for a type without GRE).
    pub fn is_empty(&self) -> bool {
        *self == GreOptions::default()
    }

    /// Length of the GRE header on sent packets.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
            + if self.ocsum { 4 } else { 0 }
            + if self.okey.is_some() { 4 } else { 0 }
            + if self.oseq { 4 } else { 0 }
    }

    /// The same options seen from the other end: input and output swapped.
    pub fn mirrored(&self) -> GreOptions {
        GreOptions {
            ikey: self.okey,
            okey: self.ikey,
            iseq: self.oseq,
            oseq: self.iseq,
            icsum: self.ocsum,
            ocsum: self.icsum,
        }
    }

    /// Length of the GRE header of a keepalive reply (what the peer sends back to us).
    pub(super) const fn keepalive_reply_len(&self) -> usize {
        HEADER_LEN + if self.icsum { 4 } else { 0 } + if self.ikey.is_some() { 4 } else { 0 }
    }
}

/// Packets in a row, behind the expected sequence number and increasing among
/// themselves, that mean the peer restarted its counter (see the module documentation).
pub const RESTART_RUN: u8 = 3;

/// Largest step between two packets of a run behind the expected number that still
/// counts as the same run (packets lost in between).
const RUN_STEP: u32 = 64;

/// The receive-side state of a GRE line: the sequence number expected next, and a run
/// of packets behind it that may be a restarted peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxState {
    next_seq: Option<u32>,
    /// The number after the last packet of the current run behind `next_seq`, and how
    /// long the run is.
    behind: Option<(u32, u8)>,
    /// How often the peer's counter restarted and the line followed it.
    restarts: u64,
}

impl RxState {
    /// How often the line resynchronised on a peer's restarted sequence counter.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Whether `seq` is acceptable; updates the expected number.
    fn accept_seq(&mut self, seq: u32) -> bool {
        let Some(next) = self.next_seq else {
            self.next_seq = Some(seq.wrapping_add(1));
            return true;
        };
        // RFC 1982 serial arithmetic: "below next" is a negative distance.
        if (seq.wrapping_sub(next) as i32) >= 0 {
            self.next_seq = Some(seq.wrapping_add(1));
            self.behind = None;
            return true;
        }
        let run = match self.behind {
            Some((after, n)) if seq.wrapping_sub(after) < RUN_STEP => n + 1,
            _ => 1,
        };
        if run >= RESTART_RUN {
            self.next_seq = Some(seq.wrapping_add(1));
            self.behind = None;
            self.restarts += 1;
            return true;
        }
        self.behind = Some((seq.wrapping_add(1), run));
        false
    }
}

/// Checks the GRE header at the start of `payload` (the outer IP payload) and says what
/// follows it.
pub(super) fn decap(
    opts: &GreOptions,
    rx: &mut RxState,
    payload: &[u8],
) -> Result<Layer, DropReason> {
    let packet = Packet::new_checked(payload).map_err(|_| DropReason::Truncated)?;
    if packet.version() != 0 || packet.rfc1701_bits() {
        return Err(DropReason::Malformed);
    }
    if packet.key() != opts.ikey {
        return Err(DropReason::WrongKey);
    }
    if packet.checksum_present() {
        if !packet.verify_checksum() {
            return Err(DropReason::BadChecksum);
        }
    } else if opts.icsum {
        return Err(DropReason::BadChecksum);
    }
    let protocol = packet.protocol_type();
    if protocol == PROTO_KEEPALIVE {
        return Ok(Layer::KeepaliveReply);
    }
    if opts.iseq {
        let seq = packet.seq().ok_or(DropReason::OutOfOrder)?;
        if !rx.accept_seq(seq) {
            return Err(DropReason::OutOfOrder);
        }
    }
    let version = match protocol {
        PROTO_IPV4 => IpVersion::V4,
        PROTO_IPV6 => IpVersion::V6,
        _ => return Err(DropReason::WrongInnerVersion),
    };
    Ok(Layer::Inner {
        offset: packet.header_len(),
        version,
    })
}

/// Whether `payload` is exactly a keepalive reply: a well-formed GRE header of protocol
/// type 0 with nothing after it (what a keepalive probe carries inside, see
/// [`super::iptunnel`]).
pub(super) fn is_bare_keepalive_reply(payload: &[u8]) -> bool {
    Packet::new_checked(payload).is_ok_and(|p| {
        p.version() == 0
            && !p.rfc1701_bits()
            && p.protocol_type() == PROTO_KEEPALIVE
            && p.header_len() == payload.len()
    })
}

/// Writes the GRE header of a sent packet at the start of `buf`, whose payload (the
/// inner packet) is already in place after [`GreOptions::header_len`] bytes.
pub(super) fn emit(
    opts: &GreOptions,
    protocol: u16,
    seq: Option<u32>,
    buf: &mut [u8],
) -> Result<(), DropReason> {
    let repr = Repr {
        protocol,
        key: opts.okey,
        seq,
        checksum: opts.ocsum,
    };
    repr.emit(&mut Packet::new_unchecked(buf))
        .map_err(|_| DropReason::TooBig)
}

/// Writes the GRE header the peer will send back to us inside a keepalive probe: our
/// input key and checksum setting, protocol type 0, no payload.
pub(super) fn emit_keepalive_reply(opts: &GreOptions, buf: &mut [u8]) -> Result<(), DropReason> {
    let repr = Repr {
        protocol: PROTO_KEEPALIVE,
        key: opts.ikey,
        seq: None,
        checksum: opts.icsum,
    };
    repr.emit(&mut Packet::new_unchecked(buf))
        .map_err(|_| DropReason::TooBig)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;

    const INNER_V4: [u8; 4] = [0x45, 0, 0, 20];

    fn packet(repr: Repr) -> Vec<u8> {
        let mut b = vec![0u8; repr.buffer_len() + INNER_V4.len()];
        b[repr.buffer_len()..].copy_from_slice(&INNER_V4);
        repr.emit(&mut Packet::new_unchecked(&mut b[..])).unwrap();
        b
    }

    fn plain() -> Repr {
        Repr {
            protocol: PROTO_IPV4,
            key: None,
            seq: None,
            checksum: false,
        }
    }

    #[test]
    fn header_len_counts_output_options_only() {
        let mut o = GreOptions::default();
        assert_eq!(o.header_len(), 4);
        o.ikey = Some(Key(1));
        o.iseq = true;
        assert_eq!(o.header_len(), 4);
        o.okey = Some(Key(1));
        o.oseq = true;
        o.ocsum = true;
        assert_eq!(o.header_len(), 16);
        assert_eq!(o.mirrored().header_len(), 12);
    }

    #[test]
    fn key_must_match_exactly() {
        let keyed = GreOptions {
            ikey: Some(Key(7)),
            ..GreOptions::default()
        };
        let mut rx = RxState::default();
        let with = |k| packet(Repr { key: k, ..plain() });
        assert!(decap(&keyed, &mut rx, &with(Some(Key(7)))).is_ok());
        assert_eq!(
            decap(&keyed, &mut rx, &with(Some(Key(8)))),
            Err(DropReason::WrongKey)
        );
        assert_eq!(
            decap(&keyed, &mut rx, &with(None)),
            Err(DropReason::WrongKey)
        );
        assert_eq!(
            decap(&GreOptions::default(), &mut rx, &with(Some(Key(7)))),
            Err(DropReason::WrongKey)
        );
    }

    #[test]
    fn present_checksum_is_verified_and_icsum_requires_one() {
        let mut rx = RxState::default();
        let mut p = packet(Repr {
            checksum: true,
            ..plain()
        });
        assert!(decap(&GreOptions::default(), &mut rx, &p).is_ok());
        *p.last_mut().unwrap() ^= 1;
        assert_eq!(
            decap(&GreOptions::default(), &mut rx, &p),
            Err(DropReason::BadChecksum)
        );
        let icsum = GreOptions {
            icsum: true,
            ..GreOptions::default()
        };
        assert_eq!(
            decap(&icsum, &mut rx, &packet(plain())),
            Err(DropReason::BadChecksum)
        );
    }

    #[test]
    fn iseq_accepts_increasing_numbers_across_the_wrap_and_drops_the_rest() {
        let opts = GreOptions {
            iseq: true,
            ..GreOptions::default()
        };
        let mut rx = RxState::default();
        let seq = |s| packet(Repr { seq: s, ..plain() });
        assert_eq!(
            decap(&opts, &mut rx, &seq(None)),
            Err(DropReason::OutOfOrder)
        );
        assert!(decap(&opts, &mut rx, &seq(Some(u32::MAX - 1))).is_ok());
        assert_eq!(
            decap(&opts, &mut rx, &seq(Some(u32::MAX - 1))),
            Err(DropReason::OutOfOrder),
            "a repeat"
        );
        // A gap is fine (a lost packet); wrapping past zero is increasing.
        assert!(decap(&opts, &mut rx, &seq(Some(1))).is_ok());
        assert_eq!(
            decap(&opts, &mut rx, &seq(Some(0))),
            Err(DropReason::OutOfOrder)
        );
        assert!(decap(&opts, &mut rx, &seq(Some(2))).is_ok());
        // Without iseq, numbers are ignored.
        assert!(decap(&GreOptions::default(), &mut rx, &seq(Some(0))).is_ok());
        assert_eq!(rx.restarts(), 0);
    }

    #[test]
    fn a_peer_that_restarted_its_counter_is_followed_after_a_short_run() {
        let opts = GreOptions {
            iseq: true,
            ..GreOptions::default()
        };
        let mut rx = RxState::default();
        let seq = |s| {
            packet(Repr {
                seq: Some(s),
                ..plain()
            })
        };
        for s in 0..1000 {
            assert!(decap(&opts, &mut rx, &seq(s)).is_ok());
        }
        // The peer restarts at 0: the first packets of the new run are dropped, then
        // the line follows it (a gap inside the run is a lost packet).
        for s in [0, 2] {
            assert_eq!(decap(&opts, &mut rx, &seq(s)), Err(DropReason::OutOfOrder));
        }
        assert!(decap(&opts, &mut rx, &seq(3)).is_ok(), "third of the run");
        assert_eq!(rx.restarts(), 1);
        assert!(decap(&opts, &mut rx, &seq(4)).is_ok());
        assert_eq!(
            decap(&opts, &mut rx, &seq(4)),
            Err(DropReason::OutOfOrder),
            "a repeat is still out of order"
        );
    }

    #[test]
    fn scattered_late_packets_never_make_a_restart() {
        let opts = GreOptions {
            iseq: true,
            ..GreOptions::default()
        };
        let mut rx = RxState::default();
        let seq = |s| {
            packet(Repr {
                seq: Some(s),
                ..plain()
            })
        };
        assert!(decap(&opts, &mut rx, &seq(500)).is_ok());
        // Late packets interleaved with in-order ones, or repeats of one number, or
        // numbers going down: none is a new sequence.
        for (late, next) in [(100, 501), (101, 502), (102, 503)] {
            assert!(decap(&opts, &mut rx, &seq(late)).is_err());
            assert!(decap(&opts, &mut rx, &seq(next)).is_ok());
        }
        for s in [7, 7, 7, 6, 5] {
            assert!(decap(&opts, &mut rx, &seq(s)).is_err(), "{s}");
        }
        assert_eq!(rx.restarts(), 0);
    }

    #[test]
    fn protocol_type_zero_is_a_keepalive_reply_even_without_a_sequence_number() {
        let opts = GreOptions {
            ikey: Some(Key(5)),
            iseq: true,
            icsum: true,
            ..GreOptions::default()
        };
        let mut b = vec![0u8; opts.keepalive_reply_len()];
        emit_keepalive_reply(&opts, &mut b).unwrap();
        assert_eq!(b.len(), 12);
        assert_eq!(
            decap(&opts, &mut RxState::default(), &b),
            Ok(Layer::KeepaliveReply)
        );
    }

    #[test]
    fn rfc1701_routing_version_1_and_unknown_protocols_are_refused() {
        let mut rx = RxState::default();
        let mut p = packet(plain());
        p[0] |= 0x40;
        assert_eq!(
            decap(&GreOptions::default(), &mut rx, &p),
            Err(DropReason::Malformed)
        );
        let mut p = packet(plain());
        p[1] |= 0x01;
        assert_eq!(
            decap(&GreOptions::default(), &mut rx, &p),
            Err(DropReason::Malformed)
        );
        let teb = packet(Repr {
            protocol: crate::wire::gre::PROTO_TEB,
            ..plain()
        });
        assert_eq!(
            decap(&GreOptions::default(), &mut rx, &teb),
            Err(DropReason::WrongInnerVersion)
        );
        assert_eq!(
            decap(&GreOptions::default(), &mut rx, &[0, 0, 8]),
            Err(DropReason::Truncated)
        );
    }
}
