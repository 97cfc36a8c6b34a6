//! Keepalive probes of the IP tunnels (`--keepalive SECS[,RETRIES]`), as Cisco's GRE
//! keepalives work: what our probe looks like, and which of the peer's probes we reflect.
//! When to probe and what the replies mean is [`super::keepalive`]'s; the core
//! ([`super::iptunnel::IpTunnelCore`]) puts the outer header around a probe and hands
//! decapsulated packets here.
//!
//! The probe is an outer packet to the peer whose inner packet goes from the peer's
//! underlay address back to ours. The peer decapsulates it and routes it back, so it
//! needs no keepalive support of its own; we recognise the packet that returns as a reply
//! (`Layer::KeepaliveReply`). For GRE the
//! returning packet is a GRE packet of protocol type 0; for the IP-in-IP types it is an
//! IP packet of the line's protocol with an empty payload. A twnode peer reflects probes
//! itself (the decapsulated probe is sent straight back, its TTL decremented as a router
//! would) rather than handing them to its kernel, which would drop a packet arriving with
//! its own address as source unless `accept_local` is set. It reflects only a bare probe
//! (nothing inside but the empty payload or the GRE keepalive header), so a spoofed probe
//! nested in probes does not bounce between two twnode ends once per layer, and at most a
//! few a second per line (`probe_refused` counts the rest). A Linux kernel peer needs
//! `net.ipv4.conf.<tunnel>.accept_local=1` and forwarding enabled to reflect probes;
//! Cisco routers do it out of the box.
//!
//! Rules: no I/O, no clock reads (`now` is a parameter), no allocation.

use std::net::IpAddr;
use std::time::Instant;

use super::gre::{self, GreOptions};
use super::iptype::{IpVersion, TunnelType};
use super::pmtu::RateLimit;
use super::DropReason;
use crate::wire::{ipv4, ipv6, TrafficClass};

/// TTL of keepalive probes, inner and (with `ttl inherit`) outer.
pub(super) const PROBE_TTL: u8 = 255;

/// Probes reflected per second per line, and the burst: a peer probes once every
/// `--keepalive` seconds (at least 1), so anything faster is someone else's doing.
pub(super) const PROBE_REFLECTIONS_PER_SEC: u32 = 4;
pub(super) const PROBE_REFLECTION_BURST: u32 = 4;

/// A reflected keepalive probe, or not.
pub(super) enum Probe {
    /// Not a probe: deliver it.
    No,
    /// A probe of `len` bytes, its TTL decremented: send it back.
    Reflect(usize),
    /// Addressed like a probe but not reflected: not a bare probe (a nested one, or one
    /// carrying data), its TTL ran out, or over the line's reflection rate.
    Refused,
}

/// One line's probes: what ours look like, and how fast the peer's are reflected (an
/// amplification guard: a spoofed probe costs the sender one packet for each it makes
/// us send).
#[derive(Debug, Clone)]
pub(super) struct Probes {
    kind: TunnelType,
    local: IpAddr,
    peer: IpAddr,
    gre: GreOptions,
    reflections: RateLimit,
}

impl Probes {
    /// The probes of a line of `kind` between `local` and `peer`.
    pub(super) fn new(kind: TunnelType, local: IpAddr, peer: IpAddr, gre: GreOptions) -> Probes {
        Probes {
            kind,
            local,
            peer,
            gre,
            reflections: RateLimit::new(PROBE_REFLECTIONS_PER_SEC, PROBE_REFLECTION_BURST),
        }
    }

    /// The length of our probe's inner packet: an IP header of the underlay's family,
    /// and for GRE a keepalive reply's header.
    pub(super) fn len(&self) -> usize {
        self.kind.outer_len()
            + if self.kind.is_gre() {
                self.gre.keepalive_reply_len()
            } else {
                0
            }
    }

    /// The IP version of our probe's inner packet (the underlay's).
    pub(super) fn version(&self) -> IpVersion {
        if self.kind.outer_ipv6() {
            IpVersion::V6
        } else {
            IpVersion::V4
        }
    }

    /// Writes our probe's inner packet, [`Probes::len`] bytes, into `buf`: what the peer
    /// sends back, from its underlay address to ours, of this line's protocol, with the
    /// GRE header of a keepalive reply or nothing after the IP header.
    pub(super) fn emit(&self, buf: &mut [u8]) -> Result<(), DropReason> {
        let header = self.kind.outer_len();
        let len = self.len();
        let Some(buf) = buf.get_mut(..len) else {
            return Err(DropReason::TooBig);
        };
        let body = len - header;
        if self.kind.is_gre() {
            gre::emit_keepalive_reply(&self.gre, &mut buf[header..])?;
        }
        let emitted = match (self.peer, self.local) {
            (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => ipv4::Repr {
                src_addr,
                dst_addr,
                protocol: self.kind.protocol(),
                payload_len: body,
                ttl: PROBE_TTL,
                traffic_class: TrafficClass::default(),
                dont_frag: false,
                ident: 0,
            }
            .emit(&mut ipv4::Packet::new_unchecked(&mut *buf)),
            (IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => ipv6::Repr {
                src_addr,
                dst_addr,
                next_header: self.kind.protocol(),
                payload_len: body,
                hop_limit: PROBE_TTL,
                traffic_class: TrafficClass::default(),
                flow_label: ipv6::FlowLabel::default(),
            }
            .emit(&mut ipv6::Packet::new_unchecked(&mut *buf)),
            _ => return Err(DropReason::Malformed),
        };
        emitted.map_err(|_| DropReason::TooBig)
    }

    /// Whether `inner` (a decapsulated packet of `version`) is the peer's keepalive
    /// probe: a packet of the underlay's family from our underlay address to the peer's,
    /// of this line's protocol. Such a packet is forwarded straight back (see the module
    /// documentation) if it is a bare probe (an empty payload, or for GRE a keepalive
    /// reply's header and nothing after it), so a probe nested in a probe is never
    /// reflected twice, and at most [`PROBE_REFLECTIONS_PER_SEC`] a second. A reflected
    /// probe's TTL is decremented in place.
    pub(super) fn reflect(&mut self, version: IpVersion, inner: &mut [u8], now: Instant) -> Probe {
        let protocol = self.kind.protocol();
        let (len, body) = match (version, self.local, self.peer) {
            (IpVersion::V4, IpAddr::V4(local), IpAddr::V4(peer)) => {
                let Ok(p) = ipv4::Packet::new_checked(&*inner) else {
                    return Probe::No;
                };
                if p.version() != 4
                    || p.src_addr() != local
                    || p.dst_addr() != peer
                    || p.protocol() != protocol
                {
                    return Probe::No;
                }
                if p.is_fragment() || !p.verify_checksum() {
                    return Probe::Refused;
                }
                (usize::from(p.total_len()), p.header_len())
            }
            (IpVersion::V6, IpAddr::V6(local), IpAddr::V6(peer)) => {
                let Ok(p) = ipv6::Packet::new_checked(&*inner) else {
                    return Probe::No;
                };
                if p.version() != 6
                    || p.src_addr() != local
                    || p.dst_addr() != peer
                    || p.next_header() != protocol
                {
                    return Probe::No;
                }
                (p.total_len(), ipv6::HEADER_LEN)
            }
            _ => return Probe::No,
        };
        let Some(payload) = inner.get(body..len) else {
            return Probe::Refused;
        };
        if !self.kind.is_gre() && !payload.is_empty()
            || self.kind.is_gre() && !gre::is_bare_keepalive_reply(payload)
        {
            return Probe::Refused;
        }
        let alive = match version {
            IpVersion::V4 => {
                let mut p = ipv4::Packet::new_unchecked(&mut *inner);
                p.decrement_ttl() != 0
            }
            IpVersion::V6 => {
                let mut p = ipv6::Packet::new_unchecked(&mut *inner);
                let hop_limit = p.hop_limit().saturating_sub(1);
                p.set_hop_limit(hop_limit);
                hop_limit != 0
            }
        };
        if !alive || !self.reflections.allow(now) {
            return Probe::Refused;
        }
        Probe::Reflect(len)
    }
}
