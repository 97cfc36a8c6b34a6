//! IP tunnels without encryption, as Linux's `ip tunnel` and `ip -6 tunnel` build them:
//! `ipip` (RFC 2003), `sit` (RFC 4213), `ip6ip6` and `ipip6` (RFC 2473), `gre` and
//! `gre6` (RFC 2784, RFC 2890). One core, [`IpTunnelCore`], for all six: it writes and
//! checks the outer header (IPv4, RFC 791, or IPv6, RFC 8200), applies iproute2's `ttl`,
//! `tos` and `pmtudisc`, handles ECN as RFC 6040 says, and sends and answers keepalive
//! probes. The layer between outer and inner header is [`super::gre`]'s or
//! [`super::ipip`]'s.
//!
//! Rules: no I/O, no clock reads (`now` is a parameter), no allocation. Encapsulation
//! writes the whole outer packet into the caller's buffer; decapsulation works in place
//! and returns the inner packet as a slice of the received buffer (it may rewrite the
//! inner ECN field, RFC 6040 §4.2).
//!
//! Keepalives (`--keepalive SECS[,RETRIES]`): the core sends probes when
//! [`super::keepalive`] says one is due, built by [`super::probe`], which also decides
//! which of the peer's probes are reflected straight back.
//!
//! With ESP ([`IpTunnelCore::with_esp`], `--encrypt`), a GRE line puts an ESP layer
//! ([`super::esp`], transport mode) between the outer header and the GRE header: the
//! outer protocol is 50, the GRE packet is the ESP payload (next header 47). Such a line
//! accepts nothing but ESP from its peer; keepalives are not offered with ESP.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use super::esp::{self, Decap, EspCore};
use super::gre::{self, GreOptions, RxState};
use super::ipip;
use super::iptype::{IpVersion, Layer, Tos, Ttl, TunnelType};
use super::keepalive::{Keepalive, KeepaliveConfig, KeepaliveStatus};
use super::probe::{Probe, Probes, PROBE_TTL};
use super::{Action, DropReason, TunnelError};
use crate::wire::{self, checksum, esp_hello, ipv4, ipv6, Ecn, IpProtocol, TrafficClass};

/// TTL of ESP Hellos with `ttl inherit` (they have no inner packet to inherit from).
const HELLO_TTL: u8 = 64;

/// Everything a core needs: the type, both underlay addresses and iproute2's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub kind: TunnelType,
    /// This end's underlay address (the outer source).
    pub local: IpAddr,
    /// The peer's underlay address (the outer destination, and the only accepted source).
    pub peer: IpAddr,
    pub ttl: Ttl,
    pub tos: Tos,
    /// IPv4 underlay: set DF on every outer packet (otherwise DF is copied from an inner
    /// IPv4 packet, as Linux does). Ignored over IPv6, which never fragments en route.
    pub pmtudisc: bool,
    /// GRE options; all off for the IP-in-IP types.
    pub gre: GreOptions,
    pub keepalive: Option<KeepaliveConfig>,
}

impl Settings {
    /// Bytes the tunnel adds to an inner packet: the outer header and the GRE header.
    pub const fn overhead(&self) -> usize {
        self.kind.outer_len()
            + if self.kind.is_gre() {
                self.gre.header_len()
            } else {
                0
            }
    }
}

/// What encapsulation needs to know about an inner packet.
struct Inner {
    version: IpVersion,
    len: usize,
    tc: TrafficClass,
    ttl: u8,
    df: bool,
}

/// RFC 6040 §4.2: the inner ECN field after decapsulation, or `None` when the packet
/// must be dropped (congestion experienced on a packet that cannot carry the mark).
///
/// ```text
///              outer:  Not-ECT   ECT(0)   ECT(1)   CE
/// inner Not-ECT        Not-ECT   Not-ECT  Not-ECT  drop
/// inner ECT(0)         ECT(0)    ECT(0)   ECT(1)   CE
/// inner ECT(1)         ECT(1)    ECT(1)   ECT(1)   CE
/// inner CE             CE        CE       CE       CE
/// ```
pub fn ecn_decapsulate(inner: Ecn, outer: Ecn) -> Option<Ecn> {
    match (inner, outer) {
        (Ecn::NotEct, Ecn::Ce) => None,
        (Ecn::NotEct, _) => Some(Ecn::NotEct),
        (_, Ecn::Ce) => Some(Ecn::Ce),
        (Ecn::Ect0, Ecn::Ect1) => Some(Ecn::Ect1),
        (inner, _) => Some(inner),
    }
}

/// RFC 6040 §4.1, normal mode: the outer ECN field is a copy of the inner one (CE
/// included; RFC 3168's reset of CE to ECT(0) is the obsolete full-functionality mode).
pub const fn ecn_encapsulate(inner: Ecn) -> Ecn {
    inner
}

fn wire_drop(e: wire::Error) -> DropReason {
    match e {
        wire::Error::Truncated => DropReason::Truncated,
        _ => DropReason::Malformed,
    }
}

/// One IP tunnel line's protocol state.
#[derive(Debug, Clone)]
pub struct IpTunnelCore {
    settings: Settings,
    /// IPv4 identification of the next outer packet.
    ident: u16,
    /// GRE sequence number of the next sent packet.
    tx_seq: u32,
    rx: RxState,
    keepalive: Option<Keepalive>,
    /// The ESP layer of an encrypted GRE line.
    esp: Option<EspCore>,
    /// What our keepalive probes look like, and how fast the peer's are reflected.
    probes: Probes,
}

impl IpTunnelCore {
    /// A core for `settings`; refuses addresses of the wrong family and GRE options on
    /// an IP-in-IP type.
    pub fn new(settings: Settings) -> Result<IpTunnelCore, TunnelError> {
        let kind = settings.kind;
        let want_v6 = kind.outer_ipv6();
        for (which, addr) in [("local", settings.local), ("peer", settings.peer)] {
            if addr.is_ipv6() != want_v6 {
                return Err(TunnelError::AddressFamily {
                    kind: kind.as_str(),
                    want: if want_v6 { "IPv6" } else { "IPv4" },
                    which,
                    addr,
                });
            }
        }
        if !kind.is_gre() && !settings.gre.is_empty() {
            return Err(TunnelError::GreOptions {
                kind: kind.as_str(),
            });
        }
        Ok(IpTunnelCore {
            settings,
            ident: 0,
            tx_seq: 0,
            rx: RxState::default(),
            keepalive: settings.keepalive.map(Keepalive::new),
            esp: None,
            probes: Probes::new(kind, settings.local, settings.peer, settings.gre),
        })
    }

    /// The same core with ESP between the outer and the GRE header (gre and gre6 only,
    /// no keepalive).
    pub fn with_esp(mut self, esp: EspCore) -> Result<IpTunnelCore, TunnelError> {
        if !self.settings.kind.is_gre() {
            return Err(TunnelError::EspUnsupported {
                what: self.settings.kind.as_str(),
            });
        }
        if self.settings.keepalive.is_some() {
            return Err(TunnelError::EspUnsupported { what: "keepalive" });
        }
        self.esp = Some(esp);
        Ok(self)
    }

    /// The ESP layer, if the line is encrypted.
    pub fn esp(&self) -> Option<&EspCore> {
        self.esp.as_ref()
    }

    /// The ESP layer, mutably (sequence-number reservations).
    pub fn esp_mut(&mut self) -> Option<&mut EspCore> {
        self.esp.as_mut()
    }

    /// Bytes in front of the inner packet: outer header, ESP header and IV, GRE header.
    fn prefix_len(&self) -> usize {
        self.settings.overhead()
            + if self.esp.is_some() {
                esp::PREFIX_LEN
            } else {
                0
            }
    }

    /// The settings the core was built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Most bytes added to an inner packet (with ESP, the padding varies with the
    /// length: [`EspCore::overhead_for`] gives the exact figure).
    pub fn overhead(&self) -> usize {
        self.prefix_len()
            + if self.esp.is_some() {
                esp::MAX_SUFFIX_LEN
            } else {
                0
            }
    }

    /// An IP packet read from the TUN device, encapsulated into `out`. `out` must hold
    /// the packet plus [`IpTunnelCore::overhead`] bytes.
    pub fn handle_tun_packet<'a>(&mut self, packet: &[u8], out: &'a mut [u8]) -> Action<'a> {
        let inner = match inner_of(packet) {
            Ok(i) => i,
            Err(r) => return Action::Drop(r),
        };
        if !self.settings.kind.carries(inner.version) {
            return Action::Drop(DropReason::WrongInnerVersion);
        }
        let start = self.prefix_len();
        let (Some(dst), Some(src)) = (
            out.get_mut(start..start + inner.len),
            packet.get(..inner.len),
        ) else {
            return Action::Drop(DropReason::TooBig);
        };
        dst.copy_from_slice(src);
        self.encapsulate(&inner, out)
    }

    /// Writes the outer (and GRE, and ESP) headers in front of the inner packet that is
    /// already at `out[prefix_len..prefix_len + inner.len]`.
    fn encapsulate<'a>(&mut self, inner: &Inner, out: &'a mut [u8]) -> Action<'a> {
        let s = self.settings;
        let outer_len = s.kind.outer_len();
        // With ESP, the GRE packet (the ESP payload) starts after ESP's header and IV.
        let (gre_at, total) = match self.esp {
            Some(_) => {
                let payload = s.overhead() - outer_len + inner.len;
                (
                    outer_len + esp::PREFIX_LEN,
                    outer_len + payload + EspCore::overhead_for(payload),
                )
            }
            None => (outer_len, s.overhead() + inner.len),
        };
        let Some(out) = out.get_mut(..total) else {
            return Action::Drop(DropReason::TooBig);
        };
        let mut protocol = if s.kind.is_gre() {
            let seq = s.gre.oseq.then(|| {
                let seq = self.tx_seq;
                self.tx_seq = seq.wrapping_add(1);
                seq
            });
            if let Err(r) = gre::emit(
                &s.gre,
                inner.version.gre_protocol(),
                seq,
                &mut out[gre_at..],
            ) {
                return Action::Drop(r);
            }
            IpProtocol::Gre
        } else {
            inner.version.ip_protocol()
        };
        if let Some(e) = self.esp.as_mut() {
            let payload = s.overhead() - outer_len + inner.len;
            match e.encapsulate(&mut out[outer_len..], payload, protocol.number()) {
                Ok(_) => protocol = IpProtocol::Esp,
                Err(r) => return Action::Drop(r),
            }
        }
        let dscp = match s.tos {
            Tos::Inherit => inner.tc.dscp(),
            Tos::Fixed(tos) => TrafficClass(tos).dscp(),
        };
        let traffic_class = TrafficClass::new(dscp, ecn_encapsulate(inner.tc.ecn()));
        let ttl = match s.ttl {
            Ttl::Inherit => inner.ttl,
            Ttl::Fixed(ttl) => ttl,
        };
        let df = s.pmtudisc || inner.df;
        match self.emit_outer(out, protocol, traffic_class, ttl, df) {
            Ok(()) => Action::WriteToNetwork(out),
            Err(_) => Action::Drop(DropReason::TooBig),
        }
    }

    /// Writes the outer header at the start of `out`, whose rest is the payload.
    fn emit_outer(
        &mut self,
        out: &mut [u8],
        protocol: IpProtocol,
        traffic_class: TrafficClass,
        ttl: u8,
        dont_frag: bool,
    ) -> Result<(), wire::Error> {
        let s = self.settings;
        let payload_len = out
            .len()
            .checked_sub(s.kind.outer_len())
            .ok_or(wire::Error::BufferTooSmall)?;
        match (s.local, s.peer) {
            (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => {
                self.ident = self.ident.wrapping_add(1);
                ipv4::Repr {
                    src_addr,
                    dst_addr,
                    protocol,
                    payload_len,
                    ttl,
                    traffic_class,
                    dont_frag,
                    ident: self.ident,
                }
                .emit(&mut ipv4::Packet::new_unchecked(out))
            }
            (IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => ipv6::Repr {
                src_addr,
                dst_addr,
                next_header: protocol,
                payload_len,
                hop_limit: ttl,
                traffic_class,
                flow_label: ipv6::FlowLabel::default(),
            }
            .emit(&mut ipv6::Packet::new_unchecked(out)),
            // `new` refuses mixed families.
            _ => Err(wire::Error::FamilyMismatch),
        }
    }

    /// An encrypted line with epoch keying: the Hello due now (see
    /// [`EspCore::poll_hello`]; `fresh` gives a new nonce when one is needed), with its
    /// outer header, written into `out` (200 bytes are enough).
    pub fn poll_esp_hello<'a>(
        &mut self,
        now: Instant,
        fresh: impl FnOnce() -> Option<[u8; esp_hello::NONCE_LEN]>,
        out: &'a mut [u8],
    ) -> Action<'a> {
        let s = self.settings;
        let outer_len = s.kind.outer_len();
        let (Some(e), Some(body)) = (self.esp.as_mut(), out.get_mut(outer_len..)) else {
            return Action::Done;
        };
        let Some(n) = e.poll_hello(now, fresh, body) else {
            return Action::Done;
        };
        let ttl = match s.ttl {
            Ttl::Inherit => HELLO_TTL,
            Ttl::Fixed(ttl) => ttl,
        };
        let dscp = match s.tos {
            Tos::Inherit => 0,
            Tos::Fixed(tos) => TrafficClass(tos).dscp(),
        };
        let traffic_class = TrafficClass::new(dscp, Ecn::NotEct);
        let out = &mut out[..outer_len + n];
        match self.emit_outer(out, IpProtocol::Esp, traffic_class, ttl, true) {
            Ok(()) => Action::WriteToNetwork(out),
            Err(_) => Action::Drop(DropReason::TooBig),
        }
    }

    /// A whole IPv4 datagram from the underlay (an IPv4 raw socket delivers the header).
    /// The inner packet is returned as a slice of `datagram`.
    pub fn handle_ipv4_datagram<'a>(&mut self, datagram: &'a mut [u8], now: Instant) -> Action<'a> {
        let (src, ecn, protocol, range) = match ipv4::Packet::new_checked(&*datagram) {
            Ok(p) => {
                if p.version() != 4 || !p.verify_checksum() || p.is_fragment() {
                    return Action::Drop(DropReason::Malformed);
                }
                (
                    p.src_addr(),
                    p.traffic_class().ecn(),
                    p.protocol(),
                    p.header_len()..usize::from(p.total_len()),
                )
            }
            Err(e) => return Action::Drop(wire_drop(e)),
        };
        if self.settings.peer != IpAddr::V4(src) {
            return Action::Drop(DropReason::UnknownPeer);
        }
        match datagram.get_mut(range) {
            Some(payload) => self.handle_payload(protocol, ecn, payload, now),
            None => Action::Drop(DropReason::Truncated),
        }
    }

    /// A whole IPv6 packet from the underlay (extension headers are not walked: the
    /// next header must be the tunnel's protocol).
    pub fn handle_ipv6_datagram<'a>(&mut self, datagram: &'a mut [u8], now: Instant) -> Action<'a> {
        let (src, tc, next_header, end) = match ipv6::Packet::new_checked(&*datagram) {
            Ok(p) if p.version() == 6 => (
                p.src_addr(),
                p.traffic_class(),
                p.next_header(),
                p.total_len(),
            ),
            Ok(_) => return Action::Drop(DropReason::Malformed),
            Err(e) => return Action::Drop(wire_drop(e)),
        };
        match datagram.get_mut(ipv6::HEADER_LEN..end) {
            Some(payload) => self.handle_ipv6_payload(src, tc, next_header, payload, now),
            None => Action::Drop(DropReason::Truncated),
        }
    }

    /// The payload of an IPv6 packet from the underlay, as an IPv6 raw socket delivers
    /// it: the source from the socket address, the traffic class from `IPV6_RECVTCLASS`.
    pub fn handle_ipv6_payload<'a>(
        &mut self,
        src: Ipv6Addr,
        traffic_class: TrafficClass,
        next_header: IpProtocol,
        payload: &'a mut [u8],
        now: Instant,
    ) -> Action<'a> {
        if self.settings.peer != IpAddr::V6(src) {
            return Action::Drop(DropReason::UnknownPeer);
        }
        self.handle_payload(next_header, traffic_class.ecn(), payload, now)
    }

    fn handle_payload<'a>(
        &mut self,
        protocol: IpProtocol,
        outer_ecn: Ecn,
        payload: &'a mut [u8],
        now: Instant,
    ) -> Action<'a> {
        let kind = self.settings.kind;
        let (protocol, payload) = match self.esp.as_mut() {
            // An encrypted line takes nothing unprotected.
            Some(_) if protocol != IpProtocol::Esp => return Action::Drop(DropReason::BadAuth),
            Some(e) => match e.decapsulate(payload, now) {
                Ok(Decap::Packet {
                    next_header,
                    payload,
                }) => (IpProtocol::from(next_header), payload),
                // Taken by the ESP layer (a reply, if due, goes out from its timer).
                Ok(Decap::Hello) => return Action::Done,
                Err(r) => return Action::Drop(r),
            },
            None => (protocol, payload),
        };
        let layer = if kind.is_gre() {
            if protocol != IpProtocol::Gre {
                return Action::Drop(DropReason::WrongInnerVersion);
            }
            gre::decap(&self.settings.gre, &mut self.rx, payload)
        } else {
            ipip::decap(kind, protocol, payload)
        };
        let (offset, version) = match layer {
            Ok(Layer::Inner { offset, version }) => (offset, version),
            Ok(Layer::KeepaliveReply) => {
                // A reply to probes we do not send (keepalive off here, on at the peer's
                // mirror) carries nothing: consumed either way.
                if let Some(k) = self.keepalive.as_mut() {
                    k.handle_reply(now);
                }
                return Action::Done;
            }
            Err(r) => return Action::Drop(r),
        };
        let Some(inner) = payload.get_mut(offset..) else {
            return Action::Drop(DropReason::Truncated);
        };
        match self.probes.reflect(version, inner, now) {
            Probe::No => {}
            Probe::Reflect(len) => {
                // The peer probing us is alive.
                self.heard_from_peer();
                return Action::WriteToNetwork(&inner[..len]);
            }
            Probe::Refused => return Action::Drop(DropReason::ProbeRefused),
        }
        if !kind.carries(version) {
            return Action::Drop(DropReason::WrongInnerVersion);
        }
        let action = finish_inner(version, inner, outer_ecn);
        if matches!(action, Action::WriteToTun(_)) {
            self.heard_from_peer();
        }
        action
    }

    /// A packet of the peer's was accepted: with keepalive on, the line is up (see
    /// [`Keepalive::handle_data`]).
    fn heard_from_peer(&mut self) {
        if let Some(k) = self.keepalive.as_mut() {
            k.handle_data();
        }
    }

    /// Keepalive work: when a probe is due, writes it into `out` (about 100 bytes are
    /// enough). Call a few times a second.
    pub fn poll_keepalive<'a>(&mut self, now: Instant, out: &'a mut [u8]) -> Action<'a> {
        let Some(k) = self.keepalive.as_mut() else {
            return Action::Done;
        };
        if !k.poll(now) {
            return Action::Done;
        }
        let start = self.prefix_len();
        let len = self.probes.len();
        let Some(buf) = out.get_mut(start..start + len) else {
            return Action::Drop(DropReason::TooBig);
        };
        if let Err(r) = self.probes.emit(buf) {
            return Action::Drop(r);
        }
        let inner = Inner {
            version: self.probes.version(),
            len,
            tc: TrafficClass::default(),
            ttl: PROBE_TTL,
            df: false,
        };
        self.encapsulate(&inner, out)
    }

    /// Keepalive figures for `line show`; `None` without keepalive.
    pub fn keepalive_status(&self, now: Instant) -> Option<KeepaliveStatus> {
        self.keepalive.as_ref().map(|k| k.status(now))
    }
}

/// Reads what encapsulation needs from a packet read from the TUN device.
fn inner_of(packet: &[u8]) -> Result<Inner, DropReason> {
    let first = *packet.first().ok_or(DropReason::NotIp)?;
    match IpVersion::of_first_byte(first).ok_or(DropReason::NotIp)? {
        IpVersion::V4 => {
            let p = ipv4::Packet::new_checked(packet).map_err(wire_drop)?;
            Ok(Inner {
                version: IpVersion::V4,
                len: usize::from(p.total_len()),
                tc: p.traffic_class(),
                ttl: p.ttl(),
                df: p.dont_frag(),
            })
        }
        IpVersion::V6 => {
            let p = ipv6::Packet::new_checked(packet).map_err(wire_drop)?;
            Ok(Inner {
                version: IpVersion::V6,
                len: p.total_len(),
                tc: p.traffic_class(),
                ttl: p.hop_limit(),
                df: false,
            })
        }
    }
}

/// Checks the decapsulated packet against the version its outer header announced,
/// applies RFC 6040 decapsulation, and trims link padding.
fn finish_inner(version: IpVersion, inner: &mut [u8], outer_ecn: Ecn) -> Action<'_> {
    let Some(&first) = inner.first() else {
        return Action::Drop(DropReason::Truncated);
    };
    if IpVersion::of_first_byte(first) != Some(version) {
        return Action::Drop(DropReason::WrongInnerVersion);
    }
    match version {
        IpVersion::V4 => {
            let (len, tc) = match ipv4::Packet::new_checked(&*inner) {
                Ok(p) => (usize::from(p.total_len()), p.traffic_class()),
                Err(e) => return Action::Drop(wire_drop(e)),
            };
            let Some(ecn) = ecn_decapsulate(tc.ecn(), outer_ecn) else {
                return Action::Drop(DropReason::CongestionNotEct);
            };
            if ecn != tc.ecn() {
                let new = tc.with_ecn(ecn);
                let mut p = ipv4::Packet::new_unchecked(&mut *inner);
                // Bytes 0-1 of the header are the 16-bit word holding the TOS octet.
                let updated = checksum::update(p.checksum(), &[first, tc.0], &[first, new.0]);
                p.set_traffic_class(new);
                p.set_checksum(updated);
            }
            Action::WriteToTun(&inner[..len])
        }
        IpVersion::V6 => {
            let (len, tc) = match ipv6::Packet::new_checked(&*inner) {
                Ok(p) => (p.total_len(), p.traffic_class()),
                Err(e) => return Action::Drop(wire_drop(e)),
            };
            let Some(ecn) = ecn_decapsulate(tc.ecn(), outer_ecn) else {
                return Action::Drop(DropReason::CongestionNotEct);
            };
            if ecn != tc.ecn() {
                ipv6::Packet::new_unchecked(&mut *inner).set_traffic_class(tc.with_ecn(ecn));
            }
            Action::WriteToTun(&inner[..len])
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;
    use crate::tunnel::keepalive::Liveness;
    use crate::tunnel::probe::{PROBE_REFLECTIONS_PER_SEC, PROBE_REFLECTION_BURST};
    use crate::wire::gre::Key;
    use proptest::prelude::*;
    use std::time::Duration;

    // Fixtures built with scapy (an independent encoder): an ICMP echo 10.0.0.1 ->
    // 10.0.0.2 with DF, TTL 64, ECT(0), and an ICMPv6 echo fd00::1 -> fd00::2 with ECT(1).
    const INNER_V4: [u8; 32] = [
        0x45, 0x02, 0x00, 0x20, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x14, 0xa5, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x02, 0x08, 0x00, 0x19, 0x27, 0x00, 0x07, 0x00, 0x01, 0x70, 0x69,
        0x6e, 0x67,
    ];
    const INNER_V6: [u8; 52] = [
        0x60, 0x10, 0x00, 0x00, 0x00, 0x0c, 0x3a, 0x40, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0xa6, 0xdb, 0x00,
        0x07, 0x00, 0x01, 0x70, 0x69, 0x6e, 0x67,
    ];
    /// INNER_V4 over ipip, 203.0.113.10 -> 198.51.100.20, ident 1, DF, TTL inherited,
    /// ECN copied.
    const IPIP: [u8; 52] = [
        0x45, 0x02, 0x00, 0x34, 0x00, 0x01, 0x40, 0x00, 0x40, 0x04, 0xd4, 0x70, 0xcb, 0x00, 0x71,
        0x0a, 0xc6, 0x33, 0x64, 0x14, 0x45, 0x02, 0x00, 0x20, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01,
        0x14, 0xa5, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x08, 0x00, 0x19, 0x27, 0x00,
        0x07, 0x00, 0x01, 0x70, 0x69, 0x6e, 0x67,
    ];
    /// INNER_V4 over gre with checksum, key 1.2.3.4 and sequence number 0.
    const GRE_CSUM_KEY_SEQ: [u8; 68] = [
        0x45, 0x02, 0x00, 0x44, 0x00, 0x01, 0x40, 0x00, 0x40, 0x2f, 0xd4, 0x35, 0xcb, 0x00, 0x71,
        0x0a, 0xc6, 0x33, 0x64, 0x14, 0xb0, 0x00, 0x08, 0x00, 0x43, 0xf9, 0x00, 0x00, 0x01, 0x02,
        0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x45, 0x02, 0x00, 0x20, 0x12, 0x34, 0x40, 0x00, 0x40,
        0x01, 0x14, 0xa5, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x08, 0x00, 0x19, 0x27,
        0x00, 0x07, 0x00, 0x01, 0x70, 0x69, 0x6e, 0x67,
    ];
    /// INNER_V6 over gre6 with key 42, 2001:db8::10 -> 2001:db8::20, hop limit 64.
    const GRE6_KEY: [u8; 100] = [
        0x60, 0x10, 0x00, 0x00, 0x00, 0x3c, 0x2f, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x20, 0x00, 0x86, 0xdd, 0x00,
        0x00, 0x00, 0x2a, 0x60, 0x10, 0x00, 0x00, 0x00, 0x0c, 0x3a, 0x40, 0xfd, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfd, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x80, 0x00,
        0xa6, 0xdb, 0x00, 0x07, 0x00, 0x01, 0x70, 0x69, 0x6e, 0x67,
    ];
    /// INNER_V6 over sit (protocol 41).
    const SIT: [u8; 72] = [
        0x45, 0x01, 0x00, 0x48, 0x00, 0x01, 0x40, 0x00, 0x40, 0x29, 0xd4, 0x38, 0xcb, 0x00, 0x71,
        0x0a, 0xc6, 0x33, 0x64, 0x14, 0x60, 0x10, 0x00, 0x00, 0x00, 0x0c, 0x3a, 0x40, 0xfd, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfd,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        0x80, 0x00, 0xa6, 0xdb, 0x00, 0x07, 0x00, 0x01, 0x70, 0x69, 0x6e, 0x67,
    ];

    const A4: &str = "203.0.113.10";
    const B4: &str = "198.51.100.20";
    const A6: &str = "2001:db8::10";
    const B6: &str = "2001:db8::20";
    const SEC: Duration = Duration::from_secs(1);

    fn settings(kind: TunnelType, gre: GreOptions) -> Settings {
        let (local, peer) = if kind.outer_ipv6() {
            (A6, B6)
        } else {
            (A4, B4)
        };
        Settings {
            kind,
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
            ttl: Ttl::default_for(kind),
            tos: Tos::default(),
            pmtudisc: true,
            gre,
            keepalive: None,
        }
    }

    fn mirror(s: &Settings) -> Settings {
        Settings {
            local: s.peer,
            peer: s.local,
            gre: s.gre.mirrored(),
            ..*s
        }
    }

    /// An owned [`Action`], so tests can keep results while reusing buffers.
    #[derive(Debug, PartialEq, Eq)]
    enum Got {
        Net(Vec<u8>),
        Tun(Vec<u8>),
        Done,
        Drop(DropReason),
    }

    fn own(a: Action<'_>) -> Got {
        match a {
            Action::WriteToNetwork(p) => Got::Net(p.to_vec()),
            Action::WriteToTun(p) => Got::Tun(p.to_vec()),
            Action::Done => Got::Done,
            Action::Drop(r) => Got::Drop(r),
        }
    }

    fn encap(core: &mut IpTunnelCore, packet: &[u8]) -> Got {
        let mut out = vec![0u8; 2048];
        own(core.handle_tun_packet(packet, &mut out))
    }

    /// Feeds an outer packet to `core` as the data plane would: a whole IPv4 datagram,
    /// or an IPv6 payload with the source and traffic class beside it.
    fn decap(core: &mut IpTunnelCore, outer: &[u8], now: Instant) -> Got {
        let mut buf = outer.to_vec();
        if core.settings().kind.outer_ipv6() {
            let p = ipv6::Packet::new_checked(outer).unwrap();
            let (src, tc, nh) = (p.src_addr(), p.traffic_class(), p.next_header());
            own(core.handle_ipv6_payload(src, tc, nh, &mut buf[40..], now))
        } else {
            own(core.handle_ipv4_datagram(&mut buf, now))
        }
    }

    fn net(g: Got) -> Vec<u8> {
        match g {
            Got::Net(p) => p,
            other => panic!("expected a packet for the network, got {other:?}"),
        }
    }

    fn core(s: Settings) -> IpTunnelCore {
        IpTunnelCore::new(s).unwrap()
    }

    /// A with keepalive (one probe a second, down after `retries`), B its mirror
    /// without; A's settings.
    fn keepalive_pair(
        kind: TunnelType,
        gre: GreOptions,
        retries: u8,
    ) -> (Settings, IpTunnelCore, IpTunnelCore) {
        let s = Settings {
            keepalive: Some(KeepaliveConfig {
                interval: SEC,
                retries,
            }),
            ..settings(kind, gre)
        };
        let b = core(Settings {
            keepalive: None,
            ..mirror(&s)
        });
        (s, core(s), b)
    }

    /// An inner packet `kind` carries.
    fn inner_for(kind: TunnelType) -> &'static [u8] {
        if kind.carries(IpVersion::V4) {
            &INNER_V4
        } else {
            &INNER_V6
        }
    }

    #[test]
    fn ipip_encapsulation_matches_fixture_and_decapsulates_back() {
        let s = settings(TunnelType::Ipip, GreOptions::default());
        let mut a = core(s);
        assert_eq!(net(encap(&mut a, &INNER_V4)), IPIP);
        let mut b = core(mirror(&s));
        assert_eq!(
            decap(&mut b, &IPIP, Instant::now()),
            Got::Tun(INNER_V4.to_vec())
        );
    }

    #[test]
    fn gre_with_checksum_key_and_sequence_matches_fixture() {
        let gre = GreOptions {
            ikey: Some(Key(0x0102_0304)),
            okey: Some(Key(0x0102_0304)),
            iseq: true,
            oseq: true,
            icsum: true,
            ocsum: true,
        };
        let s = settings(TunnelType::Gre, gre);
        let mut a = core(s);
        assert_eq!(a.overhead(), 20 + 16);
        assert_eq!(net(encap(&mut a, &INNER_V4)), GRE_CSUM_KEY_SEQ);
        let mut b = core(mirror(&s));
        assert_eq!(
            decap(&mut b, &GRE_CSUM_KEY_SEQ, Instant::now()),
            Got::Tun(INNER_V4.to_vec())
        );
    }

    #[test]
    fn gre6_with_key_matches_fixture() {
        let gre = GreOptions {
            ikey: Some(Key(42)),
            okey: Some(Key(42)),
            ..GreOptions::default()
        };
        let s = settings(TunnelType::Gre6, gre);
        let mut a = core(s);
        assert_eq!(a.overhead(), 40 + 8);
        assert_eq!(net(encap(&mut a, &INNER_V6)), GRE6_KEY);
        let mut b = core(mirror(&s));
        assert_eq!(
            decap(&mut b, &GRE6_KEY, Instant::now()),
            Got::Tun(INNER_V6.to_vec())
        );
    }

    #[test]
    fn sit_carries_ipv6_as_protocol_41_and_ipv4_as_protocol_4() {
        let s = settings(TunnelType::Sit, GreOptions::default());
        let mut a = core(s);
        assert_eq!(net(encap(&mut a, &INNER_V6)), SIT);
        let v4 = net(encap(&mut a, &INNER_V4));
        assert_eq!(v4[9], 4, "IPv4 inside sit is protocol 4");
        let mut b = core(mirror(&s));
        let now = Instant::now();
        assert_eq!(decap(&mut b, &SIT, now), Got::Tun(INNER_V6.to_vec()));
        assert_eq!(decap(&mut b, &v4, now), Got::Tun(INNER_V4.to_vec()));
    }

    /// Every type, both inner versions: what the type carries arrives intact, the rest
    /// is refused at encapsulation.
    #[test]
    fn every_type_carries_its_inner_versions_back_to_back() {
        for kind in TunnelType::ALL {
            for gre in [
                GreOptions::default(),
                GreOptions {
                    ikey: Some(Key(1)),
                    okey: Some(Key(2)),
                    iseq: true,
                    oseq: true,
                    icsum: true,
                    ocsum: false,
                },
            ] {
                if !kind.is_gre() && !gre.is_empty() {
                    continue;
                }
                let s = settings(kind, gre);
                let (mut a, mut b) = (core(s), core(mirror(&s)));
                for (version, inner) in [
                    (IpVersion::V4, &INNER_V4[..]),
                    (IpVersion::V6, &INNER_V6[..]),
                ] {
                    let now = Instant::now();
                    if !kind.carries(version) {
                        assert_eq!(
                            encap(&mut a, inner),
                            Got::Drop(DropReason::WrongInnerVersion),
                            "{kind} {version:?}"
                        );
                        continue;
                    }
                    for _ in 0..3 {
                        let outer = net(encap(&mut a, inner));
                        assert_eq!(outer.len(), inner.len() + s.overhead(), "{kind}");
                        assert_eq!(outer[0] >> 4, if kind.outer_ipv6() { 6 } else { 4 });
                        assert_eq!(
                            decap(&mut b, &outer, now),
                            Got::Tun(inner.to_vec()),
                            "{kind} {version:?} {gre:?}"
                        );
                        // And the other way.
                        let back = net(encap(&mut b, inner));
                        assert_eq!(decap(&mut a, &back, now), Got::Tun(inner.to_vec()));
                    }
                }
            }
        }
    }

    #[test]
    fn core_refuses_wrong_family_and_gre_options_on_ipip() {
        let mut s = settings(TunnelType::Ipip6, GreOptions::default());
        s.peer = B4.parse().unwrap();
        assert!(matches!(
            IpTunnelCore::new(s),
            Err(TunnelError::AddressFamily { which: "peer", .. })
        ));
        let s = settings(
            TunnelType::Sit,
            GreOptions {
                oseq: true,
                ..GreOptions::default()
            },
        );
        assert!(matches!(
            IpTunnelCore::new(s),
            Err(TunnelError::GreOptions { kind: "sit" })
        ));
    }

    #[test]
    fn ttl_and_tos_fixed_or_inherited() {
        let mut s = settings(TunnelType::Gre, GreOptions::default());
        s.ttl = Ttl::Fixed(9);
        s.tos = Tos::Fixed(0xb8 | 0x03);
        let mut inner = INNER_V4;
        inner[1] = 0x28 | 0x01; // DSCP 10, ECT(1)
        let mut p = ipv4::Packet::new_unchecked(&mut inner[..]);
        p.fill_checksum();
        let out = net(encap(&mut core(s), &inner));
        let o = ipv4::Packet::new_checked(&out[..]).unwrap();
        assert_eq!(o.ttl(), 9);
        // The configured DSCP, the inner ECN: the tos's own ECN bits are ignored.
        assert_eq!(o.traffic_class(), TrafficClass(0xb8 | 0x01));
        s.ttl = Ttl::Inherit;
        s.tos = Tos::Inherit;
        let out = net(encap(&mut core(s), &inner));
        let o = ipv4::Packet::new_checked(&out[..]).unwrap();
        assert_eq!((o.ttl(), o.traffic_class()), (64, TrafficClass(0x29)));
        // Over IPv6: hop limit and traffic class likewise.
        let mut s6 = settings(TunnelType::Ip6ip6, GreOptions::default());
        s6.tos = Tos::Inherit;
        s6.ttl = Ttl::Inherit;
        let out = net(encap(&mut core(s6), &INNER_V6));
        let o = ipv6::Packet::new_checked(&out[..]).unwrap();
        assert_eq!((o.hop_limit(), o.traffic_class()), (64, TrafficClass(0x01)));
    }

    #[test]
    fn nopmtudisc_copies_df_from_the_inner_packet() {
        let mut s = settings(TunnelType::Ipip, GreOptions::default());
        s.pmtudisc = false;
        let mut inner = INNER_V4;
        let out = net(encap(&mut core(s), &inner));
        assert!(ipv4::Packet::new_checked(&out[..]).unwrap().dont_frag());
        let mut p = ipv4::Packet::new_unchecked(&mut inner[..]);
        p.set_dont_frag(false);
        p.fill_checksum();
        let out = net(encap(&mut core(s), &inner));
        assert!(!ipv4::Packet::new_checked(&out[..]).unwrap().dont_frag());
    }

    #[test]
    fn ecn_decapsulation_follows_the_rfc_6040_table() {
        use Ecn::*;
        let table = [
            // inner, [outer Not-ECT, ECT(0), ECT(1), CE]
            (NotEct, [Some(NotEct), Some(NotEct), Some(NotEct), None]),
            (Ect0, [Some(Ect0), Some(Ect0), Some(Ect1), Some(Ce)]),
            (Ect1, [Some(Ect1), Some(Ect1), Some(Ect1), Some(Ce)]),
            (Ce, [Some(Ce), Some(Ce), Some(Ce), Some(Ce)]),
        ];
        for (inner, row) in table {
            for (outer, want) in [NotEct, Ect0, Ect1, Ce].into_iter().zip(row) {
                assert_eq!(ecn_decapsulate(inner, outer), want, "{inner:?} {outer:?}");
            }
        }
        for e in [NotEct, Ect0, Ect1, Ce] {
            assert_eq!(ecn_encapsulate(e), e, "normal mode copies");
        }
    }

    #[test]
    fn outer_ce_marks_an_ect_inner_packet_and_fixes_its_checksum() {
        let s = settings(TunnelType::Ipip, GreOptions::default());
        let mut outer = IPIP;
        {
            let mut p = ipv4::Packet::new_unchecked(&mut outer[..]);
            p.set_traffic_class(TrafficClass(0x03));
            p.fill_checksum();
        }
        let inner = match decap(&mut core(mirror(&s)), &outer, Instant::now()) {
            Got::Tun(p) => p,
            other => panic!("{other:?}"),
        };
        let p = ipv4::Packet::new_checked(&inner[..]).unwrap();
        assert_eq!(p.traffic_class().ecn(), Ecn::Ce);
        assert!(p.verify_checksum(), "the inner header checksum is patched");
        assert_eq!(inner[2..10], INNER_V4[2..10], "nothing else changes");
        assert_eq!(inner[12..], INNER_V4[12..], "nothing else changes");
    }

    #[test]
    fn outer_ce_on_ipv6_marks_the_traffic_class() {
        let s = settings(TunnelType::Sit, GreOptions::default());
        let mut outer = SIT;
        {
            let mut p = ipv4::Packet::new_unchecked(&mut outer[..]);
            p.set_traffic_class(TrafficClass(0x03));
            p.fill_checksum();
        }
        let Got::Tun(inner) = decap(&mut core(mirror(&s)), &outer, Instant::now()) else {
            panic!()
        };
        let p = ipv6::Packet::new_checked(&inner[..]).unwrap();
        assert_eq!(p.traffic_class(), TrafficClass(0x03));
    }

    #[test]
    fn outer_ce_on_a_not_ect_inner_packet_is_dropped() {
        let s = settings(TunnelType::Ipip, GreOptions::default());
        let mut a = core(s);
        let mut inner = INNER_V4;
        {
            let mut p = ipv4::Packet::new_unchecked(&mut inner[..]);
            p.set_traffic_class(TrafficClass(0x00));
            p.fill_checksum();
        }
        let mut outer = net(encap(&mut a, &inner));
        {
            let mut p = ipv4::Packet::new_unchecked(&mut outer[..]);
            p.set_traffic_class(TrafficClass(0x03));
            p.fill_checksum();
        }
        assert_eq!(
            decap(&mut core(mirror(&s)), &outer, Instant::now()),
            Got::Drop(DropReason::CongestionNotEct)
        );
    }

    #[test]
    fn every_drop_reason_of_the_ip_tunnels() {
        let now = Instant::now();
        let keyed = GreOptions {
            ikey: Some(Key(7)),
            okey: Some(Key(7)),
            iseq: true,
            oseq: true,
            icsum: true,
            ocsum: true,
        };
        let s = settings(TunnelType::Gre, keyed);
        let mut a = core(s);
        let mut b = core(mirror(&s));
        let good = net(encap(&mut a, &INNER_V4));
        let drop = |r| Got::Drop(r);

        // UnknownPeer: same packet from another source.
        let mut stranger = good.clone();
        {
            let mut p = ipv4::Packet::new_unchecked(&mut stranger[..]);
            p.set_src_addr("192.0.2.99".parse().unwrap());
            p.fill_checksum();
        }
        assert_eq!(decap(&mut b, &stranger, now), drop(DropReason::UnknownPeer));

        // WrongKey.
        let mut other_key = core(Settings {
            gre: GreOptions {
                okey: Some(Key(8)),
                ..keyed
            },
            ..s
        });
        let wrong = net(encap(&mut other_key, &INNER_V4));
        assert_eq!(decap(&mut b, &wrong, now), drop(DropReason::WrongKey));

        // BadChecksum: a flipped payload bit; and no checksum where one is required.
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 0x80;
        assert_eq!(decap(&mut b, &flipped, now), drop(DropReason::BadChecksum));
        let mut no_csum = core(Settings {
            gre: GreOptions {
                ocsum: false,
                ..keyed
            },
            ..s
        });
        let plain = net(encap(&mut no_csum, &INNER_V4));
        assert_eq!(decap(&mut b, &plain, now), drop(DropReason::BadChecksum));

        // OutOfOrder: the good packet once, then again.
        assert_eq!(decap(&mut b, &good, now), Got::Tun(INNER_V4.to_vec()));
        assert_eq!(decap(&mut b, &good, now), drop(DropReason::OutOfOrder));

        // Truncated: outer cut short, and a GRE header cut short.
        assert_eq!(decap(&mut b, &good[..10], now), drop(DropReason::Truncated));
        let mut short = good[..26].to_vec();
        {
            let mut p = ipv4::Packet::new_unchecked(&mut short[..]);
            p.set_total_len(26);
            p.fill_checksum();
        }
        assert_eq!(decap(&mut b, &short, now), drop(DropReason::Truncated));

        // Malformed: an outer header with a bad checksum.
        let mut bad_header = net(encap(&mut a, &INNER_V4));
        bad_header[8] ^= 1;
        assert_eq!(decap(&mut b, &bad_header, now), drop(DropReason::Malformed));

        // WrongInnerVersion: an IPv6 packet inside ipip, and a GRE type that says IPv4
        // over an IPv6 packet.
        let ip = settings(TunnelType::Ipip, GreOptions::default());
        let mut sit_sender = core(Settings {
            kind: TunnelType::Sit,
            ..ip
        });
        let v6_in_v4 = net(encap(&mut sit_sender, &INNER_V6));
        assert_eq!(
            decap(&mut core(mirror(&ip)), &v6_in_v4, now),
            drop(DropReason::WrongInnerVersion)
        );
        let g = settings(TunnelType::Gre, GreOptions::default());
        let mut lying = net(encap(&mut core(g), &INNER_V6));
        lying[22..24].copy_from_slice(&wire::gre::PROTO_IPV4.to_be_bytes());
        assert_eq!(
            decap(&mut core(mirror(&g)), &lying, now),
            drop(DropReason::WrongInnerVersion)
        );

        // NotIp and TooBig at encapsulation.
        assert_eq!(encap(&mut a, &[0x00, 1, 2]), drop(DropReason::NotIp));
        assert_eq!(encap(&mut a, &[]), drop(DropReason::NotIp));
        let mut tiny = [0u8; 40];
        assert_eq!(
            own(a.handle_tun_packet(&INNER_V4, &mut tiny)),
            drop(DropReason::TooBig)
        );
        // A truncated packet from the TUN device.
        assert_eq!(encap(&mut a, &INNER_V4[..25]), drop(DropReason::Truncated));
    }

    /// A's keepalive against a peer B without one: B reflects the probe, A sees the
    /// reply and the line comes up; silenced, A declares it down after `retries`
    /// intervals; the peer back, A sees it up again.
    #[test]
    fn keepalive_probe_is_reflected_by_the_peer_and_tracks_liveness() {
        for kind in TunnelType::ALL {
            let gre = if kind.is_gre() {
                GreOptions {
                    ikey: Some(Key(11)),
                    okey: Some(Key(12)),
                    iseq: true,
                    oseq: true,
                    icsum: true,
                    ocsum: true,
                }
            } else {
                GreOptions::default()
            };
            let (s, mut a, mut b) = keepalive_pair(kind, gre, 2);
            let t0 = Instant::now();
            let mut out = vec![0u8; 256];
            assert_eq!(liveness(&a), Some(Liveness::Waiting));
            let probe = net(own(a.poll_keepalive(t0, &mut out)));
            assert_eq!(
                own(a.poll_keepalive(t0, &mut out)),
                Got::Done,
                "one per interval"
            );
            let reflected = net(decap(&mut b, &probe, t0));
            assert_eq!(
                ip_src_dst(&reflected),
                (s.peer, s.local),
                "{kind}: the peer sends it back to us"
            );
            assert_eq!(decap(&mut a, &reflected, t0), Got::Done, "{kind}");
            assert_eq!(liveness(&a), Some(Liveness::Up), "{kind}");
            // Data still flows after a keepalive (sequence numbers untouched by replies).
            let inner = inner_for(kind);
            let data = net(encap(&mut a, inner));
            assert_eq!(decap(&mut b, &data, t0), Got::Tun(inner.to_vec()));

            // Silence: probes at 1 s and 2 s go unanswered; at 3 s the line is down.
            for t in 1..=2 {
                net(own(a.poll_keepalive(t0 + t * SEC, &mut out)));
                assert_eq!(liveness(&a), Some(Liveness::Up));
            }
            let probe = net(own(a.poll_keepalive(t0 + 3 * SEC, &mut out)));
            assert_eq!(liveness(&a), Some(Liveness::Down), "{kind}");
            let reflected = net(decap(&mut b, &probe, t0 + 3 * SEC));
            assert_eq!(decap(&mut a, &reflected, t0 + 3 * SEC), Got::Done);
            assert_eq!(liveness(&a), Some(Liveness::Up), "{kind}: back up");
            let st = a.keepalive_status(t0 + 4 * SEC).unwrap();
            assert_eq!((st.sent, st.replies), (4, 2));
            assert_eq!(liveness(&b), None);
        }
    }

    /// The keepalive's verdict; `None` without keepalive.
    fn liveness(core: &IpTunnelCore) -> Option<Liveness> {
        core.keepalive_status(Instant::now()).map(|k| k.liveness)
    }

    /// Issue 22, item 8: the peer's data arriving before any probe was answered brings
    /// a keepalive line up at once (it used to wait up to one interval for the reply);
    /// a packet the line refuses (another GRE key) does not.
    #[test]
    fn data_from_the_peer_brings_a_keepalive_line_up_before_the_first_reply() {
        for kind in TunnelType::ALL {
            let gre = if kind.is_gre() {
                GreOptions {
                    ikey: Some(Key(11)),
                    okey: Some(Key(12)),
                    ..GreOptions::default()
                }
            } else {
                GreOptions::default()
            };
            let (s, mut a, mut b) = keepalive_pair(kind, gre, 3);
            let t0 = Instant::now();
            let mut out = vec![0u8; 256];
            net(own(a.poll_keepalive(t0, &mut out)));
            assert_eq!(liveness(&a), Some(Liveness::Waiting), "{kind}");
            let inner = inner_for(kind);
            if kind.is_gre() {
                let mut stranger = core(Settings {
                    keepalive: None,
                    gre: GreOptions {
                        okey: Some(Key(99)),
                        ..mirror(&s).gre
                    },
                    ..mirror(&s)
                });
                let wrong_key = net(encap(&mut stranger, inner));
                assert_eq!(
                    decap(&mut a, &wrong_key, t0),
                    Got::Drop(DropReason::WrongKey),
                    "{kind}"
                );
                assert_eq!(liveness(&a), Some(Liveness::Waiting), "{kind}");
            }
            let data = net(encap(&mut b, inner));
            assert_eq!(decap(&mut a, &data, t0), Got::Tun(inner.to_vec()), "{kind}");
            assert_eq!(liveness(&a), Some(Liveness::Up), "{kind}");
            let st = a.keepalive_status(t0).unwrap();
            assert_eq!((st.sent, st.replies), (1, 0), "{kind}");
        }
    }

    fn ip_src_dst(p: &[u8]) -> (IpAddr, IpAddr) {
        (wire::ip_src(p).unwrap(), wire::ip_dst(p).unwrap())
    }

    #[test]
    fn probe_reflection_decrements_the_ttl_and_stops_at_zero() {
        let s = Settings {
            keepalive: Some(KeepaliveConfig {
                interval: SEC,
                retries: 3,
            }),
            ..settings(TunnelType::Ipip, GreOptions::default())
        };
        let mut a = core(s);
        let mut b = core(mirror(&s));
        let mut out = vec![0u8; 256];
        let t0 = Instant::now();
        let mut probe = net(own(a.poll_keepalive(t0, &mut out)));
        let reflected = net(decap(&mut b, &probe, t0));
        assert_eq!(reflected[8], PROBE_TTL - 1);
        assert!(ipv4::Packet::new_checked(&reflected[..])
            .unwrap()
            .verify_checksum());
        // The same probe with inner TTL 1 is not sent back.
        {
            let mut inner = ipv4::Packet::new_unchecked(&mut probe[20..]);
            inner.set_ttl(1);
            inner.fill_checksum();
        }
        assert_eq!(
            decap(&mut b, &probe, t0),
            Got::Drop(DropReason::ProbeRefused)
        );
    }

    /// A probe for `kind` from A to B, as A's keepalive sends it, and B's core.
    fn probe_pair(kind: TunnelType, gre: GreOptions) -> (Vec<u8>, IpTunnelCore) {
        let s = Settings {
            keepalive: Some(KeepaliveConfig {
                interval: SEC,
                retries: 3,
            }),
            ..settings(kind, gre)
        };
        let mut a = core(s);
        let mut out = vec![0u8; 256];
        let probe = net(own(a.poll_keepalive(Instant::now(), &mut out)));
        (probe, core(mirror(&s)))
    }

    #[test]
    fn a_probe_nested_in_a_probe_or_carrying_data_is_not_reflected() {
        for (kind, gre) in [
            (TunnelType::Ipip, GreOptions::default()),
            (
                TunnelType::Gre,
                GreOptions {
                    ikey: Some(Key(7)),
                    okey: Some(Key(7)),
                    ..GreOptions::default()
                },
            ),
        ] {
            let (probe, mut b) = probe_pair(kind, gre);
            let t0 = Instant::now();
            assert!(matches!(decap(&mut b, &probe, t0), Got::Net(_)), "{kind}");
            // outer(A->B)[inner(B->A)[the whole probe]]: to B, the inner packet is a
            // probe whose payload is another probe. It must not bounce; nor may a probe
            // that carries data.
            let inner_at = probe.len()
                - 20
                - if kind.is_gre() {
                    gre.keepalive_reply_len()
                } else {
                    0
                };
            let build = |payload: &[u8]| {
                let mut p = probe[..inner_at + 20].to_vec();
                p.extend_from_slice(payload);
                let len = p.len();
                let mut inner = ipv4::Packet::new_unchecked(&mut p[inner_at..]);
                inner.set_total_len((len - inner_at) as u16);
                inner.fill_checksum();
                let mut outer = ipv4::Packet::new_unchecked(&mut p[..]);
                outer.set_total_len(len as u16);
                outer.fill_checksum();
                p
            };
            let mut with_data = probe[inner_at + 20..].to_vec();
            with_data.extend_from_slice(b"data");
            for p in [build(&probe), build(&with_data)] {
                assert_eq!(
                    decap(&mut b, &p, t0 + SEC),
                    Got::Drop(DropReason::ProbeRefused),
                    "{kind}"
                );
            }
        }
    }

    #[test]
    fn probe_reflections_are_rate_limited_per_line() {
        let (probe, mut b) = probe_pair(TunnelType::Ipip, GreOptions::default());
        let t0 = Instant::now();
        let reflected = (0..20)
            .filter(|_| matches!(decap(&mut b, &probe, t0), Got::Net(_)))
            .count();
        assert_eq!(reflected, PROBE_REFLECTION_BURST as usize);
        // The bucket refills at the rate.
        let later = (0..20)
            .filter(|_| matches!(decap(&mut b, &probe, t0 + SEC), Got::Net(_)))
            .count();
        assert_eq!(later, PROBE_REFLECTIONS_PER_SEC as usize);
    }

    #[test]
    fn a_packet_from_our_own_address_that_is_not_a_probe_is_delivered() {
        // An inner IPv4 packet from our underlay address to the peer's, but ICMP: a user's
        // packet, not a probe.
        let s = settings(TunnelType::Ipip, GreOptions::default());
        let mut inner = INNER_V4;
        {
            let mut p = ipv4::Packet::new_unchecked(&mut inner[..]);
            p.set_src_addr(B4.parse().unwrap());
            p.set_dst_addr(A4.parse().unwrap());
            p.fill_checksum();
        }
        let outer = net(encap(&mut core(s), &inner));
        assert_eq!(
            decap(&mut core(mirror(&s)), &outer, Instant::now()),
            Got::Tun(inner.to_vec())
        );
    }

    #[test]
    fn full_ipv6_datagram_entry_point_reads_the_header() {
        let s = settings(TunnelType::Gre6, GreOptions::default());
        let mut a = core(s);
        let mut outer = net(encap(&mut a, &INNER_V4));
        let mut b = core(mirror(&s));
        assert_eq!(
            own(b.handle_ipv6_datagram(&mut outer, Instant::now())),
            Got::Tun(INNER_V4.to_vec())
        );
        assert_eq!(
            own(b.handle_ipv6_datagram(&mut outer[..30], Instant::now())),
            Got::Drop(DropReason::Truncated)
        );
    }

    fn arb_gre() -> impl Strategy<Value = GreOptions> {
        (
            proptest::option::of(0u32..3),
            proptest::option::of(0u32..3),
            any::<[bool; 4]>(),
        )
            .prop_map(|(ikey, okey, b)| GreOptions {
                ikey: ikey.map(Key),
                okey: okey.map(Key),
                iseq: b[0],
                oseq: b[1],
                icsum: b[2],
                ocsum: b[3],
            })
    }

    proptest! {
        #[test]
        fn decapsulating_arbitrary_bytes_never_panics(
            kind in proptest::sample::select(TunnelType::ALL.to_vec()),
            gre in arb_gre(),
            bytes in proptest::collection::vec(any::<u8>(), 0..120),
            with_header in any::<bool>(),
        ) {
            let gre = if kind.is_gre() { gre } else { GreOptions::default() };
            let s = Settings {
                keepalive: Some(KeepaliveConfig { interval: SEC, retries: 1 }),
                ..settings(kind, gre)
            };
            let mut b = core(mirror(&s));
            let now = Instant::now();
            if kind.outer_ipv6() {
                let mut buf = bytes.clone();
                for nh in [IpProtocol::Gre, IpProtocol::Ipip, IpProtocol::Ipv6] {
                    let _ = b.handle_ipv6_payload(
                        A6.parse().unwrap(), TrafficClass(0x03), nh, &mut buf, now);
                }
                let _ = b.handle_ipv6_datagram(&mut buf, now);
            } else {
                let mut buf = bytes.clone();
                let _ = b.handle_ipv4_datagram(&mut buf, now);
                if with_header {
                    // A valid outer header from the peer in front of the bytes, so the
                    // inner layers see them.
                    for protocol in kind.protocols() {
                        let mut buf = vec![0u8; 20 + bytes.len()];
                        buf[20..].copy_from_slice(&bytes);
                        ipv4::Repr {
                            src_addr: B4.parse().unwrap(),
                            dst_addr: A4.parse().unwrap(),
                            protocol: *protocol,
                            payload_len: bytes.len(),
                            ttl: 64,
                            traffic_class: TrafficClass(0x03),
                            dont_frag: true,
                            ident: 1,
                        }.emit(&mut ipv4::Packet::new_unchecked(&mut buf[..])).unwrap();
                        let _ = b.handle_ipv4_datagram(&mut buf, now);
                    }
                }
            }
        }

        #[test]
        fn encapsulating_arbitrary_bytes_never_panics(
            kind in proptest::sample::select(TunnelType::ALL.to_vec()),
            gre in arb_gre(),
            bytes in proptest::collection::vec(any::<u8>(), 0..120),
            out_len in 0usize..200,
        ) {
            let gre = if kind.is_gre() { gre } else { GreOptions::default() };
            let mut a = core(settings(kind, gre));
            let mut out = vec![0u8; out_len];
            let _ = a.handle_tun_packet(&bytes, &mut out);
            let _ = a.poll_keepalive(Instant::now(), &mut out);
        }

        #[test]
        fn whatever_is_encapsulated_comes_out_unchanged(
            kind in proptest::sample::select(TunnelType::ALL.to_vec()),
            gre in arb_gre(),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            tc in any::<u8>(),
            v6 in any::<bool>(),
        ) {
            let gre = if kind.is_gre() { gre } else { GreOptions::default() };
            let version = if v6 { IpVersion::V6 } else { IpVersion::V4 };
            prop_assume!(kind.carries(version));
            let mut inner = if v6 { INNER_V6[..40].to_vec() } else { INNER_V4[..20].to_vec() };
            inner.extend_from_slice(&payload);
            if v6 {
                let mut p = ipv6::Packet::new_unchecked(&mut inner[..]);
                p.set_payload_len(payload.len() as u16);
                p.set_traffic_class(TrafficClass(tc));
            } else {
                let mut p = ipv4::Packet::new_unchecked(&mut inner[..]);
                p.set_total_len((20 + payload.len()) as u16);
                p.set_traffic_class(TrafficClass(tc));
                p.fill_checksum();
            }
            let s = settings(kind, gre);
            let outer = net(encap(&mut core(s), &inner));
            prop_assert_eq!(decap(&mut core(mirror(&s)), &outer, Instant::now()), Got::Tun(inner));
        }
    }

    fn esp_pair(kind: TunnelType, gre: GreOptions) -> (IpTunnelCore, IpTunnelCore) {
        let s = settings(kind, gre);
        let m = mirror(&s);
        let cipher = esp::Cipher::ChaCha20Poly1305;
        let sa = |s: &Settings| esp::derive(cipher, b"enc", b"auth", s.local, s.peer).unwrap();
        let e = |s: &Settings| EspCore::new(cipher, &sa(s), 1, 1000).unwrap();
        (
            core(s).with_esp(e(&s)).unwrap(),
            core(m).with_esp(e(&m)).unwrap(),
        )
    }

    #[test]
    fn gre_over_esp_carries_ipv4_and_ipv6_both_ways_with_protocol_50() {
        for kind in [TunnelType::Gre, TunnelType::Gre6] {
            let gre = GreOptions {
                ikey: Some(Key(7)),
                okey: Some(Key(7)),
                ..GreOptions::default()
            };
            let (mut a, mut b) = esp_pair(kind, gre);
            for inner in [&INNER_V4[..], &INNER_V6[..]] {
                let outer = net(encap(&mut a, inner));
                let outer_len = kind.outer_len();
                let payload = 8 + inner.len(); // GRE with key
                assert_eq!(
                    outer.len(),
                    outer_len + payload + EspCore::overhead_for(payload)
                );
                let proto = if kind.outer_ipv6() {
                    ipv6::Packet::new_checked(&outer[..]).unwrap().next_header()
                } else {
                    ipv4::Packet::new_checked(&outer[..]).unwrap().protocol()
                };
                assert_eq!(proto, IpProtocol::Esp);
                // Nothing of the inner packet is visible on the wire.
                assert!(!outer.windows(8).any(|w| w == &inner[inner.len() - 8..]));
                assert_eq!(
                    decap(&mut b, &outer, Instant::now()),
                    Got::Tun(inner.to_vec())
                );
                let back = net(encap(&mut b, inner));
                assert_eq!(
                    decap(&mut a, &back, Instant::now()),
                    Got::Tun(inner.to_vec())
                );
            }
        }
    }

    #[test]
    fn encrypted_line_refuses_plain_gre_and_replays() {
        let (mut a, mut b) = esp_pair(TunnelType::Gre, GreOptions::default());
        let outer = net(encap(&mut a, &INNER_V4));
        assert!(matches!(decap(&mut b, &outer, Instant::now()), Got::Tun(_)));
        assert_eq!(
            decap(&mut b, &outer, Instant::now()),
            Got::Drop(DropReason::Replay)
        );
        let mut plain = core(settings(TunnelType::Gre, GreOptions::default()));
        let gre = net(encap(&mut plain, &INNER_V4));
        assert_eq!(
            decap(&mut b, &gre, Instant::now()),
            Got::Drop(DropReason::BadAuth)
        );
    }

    /// Epoch keying through the whole core: Hellos leave as protocol 50 with the
    /// Hello SPI and the line's outer header, the peer takes them (no packet for its
    /// TUN device), and once both agreed, GRE over ESP flows both ways.
    #[test]
    fn epoch_hellos_cross_as_protocol_50_and_then_data_flows() {
        for kind in [TunnelType::Gre, TunnelType::Gre6] {
            let s = settings(kind, GreOptions::default());
            let m = mirror(&s);
            let now = Instant::now();
            let epochs = |s: &Settings, nonce: u8| {
                let params = esp::EpochParams {
                    cipher: esp::Cipher::Aes256Gcm,
                    enc_key: b"enc",
                    auth_key: b"auth",
                    local: s.local,
                    peer: s.peer,
                    rekey_after: esp::DEFAULT_REKEY_AFTER,
                };
                core(*s)
                    .with_esp(EspCore::with_epochs(params, [nonce; 32], now).unwrap())
                    .unwrap()
            };
            let (mut a, mut b) = (epochs(&s, 1), epochs(&m, 2));
            assert_eq!(encap(&mut a, &INNER_V4), Got::Drop(DropReason::NoSession));
            let outer_len = kind.outer_len();
            // A Hello from `from`, if one is due, checked and handed to `to`.
            let hello = |from: &mut IpTunnelCore, to: &mut IpTunnelCore| {
                let mut out = [0u8; 200];
                let Got::Net(h) = own(from.poll_esp_hello(now, || Some([9; 32]), &mut out)) else {
                    return 0;
                };
                let (proto, ttl) = if kind.outer_ipv6() {
                    let p = ipv6::Packet::new_checked(&h[..]).unwrap();
                    (p.next_header(), p.hop_limit())
                } else {
                    let p = ipv4::Packet::new_checked(&h[..]).unwrap();
                    (p.protocol(), p.ttl())
                };
                assert_eq!((proto, ttl), (IpProtocol::Esp, 64));
                assert_eq!(h.len(), outer_len + esp_hello::HELLO_LEN);
                assert_eq!(&h[outer_len..outer_len + 4], &[0, 0, 0, 0x74]);
                assert_eq!(decap(to, &h, now), Got::Done);
                1
            };
            let mut hellos = 0;
            for _ in 0..3 {
                hellos += hello(&mut a, &mut b);
                hellos += hello(&mut b, &mut a);
            }
            assert_eq!(hellos, 3, "{kind:?}");
            let outer = net(encap(&mut a, &INNER_V4));
            assert_eq!(decap(&mut b, &outer, now), Got::Tun(INNER_V4.to_vec()));
            let back = net(encap(&mut b, &INNER_V6));
            assert_eq!(decap(&mut a, &back, now), Got::Tun(INNER_V6.to_vec()));
            // A plain core has no Hello to send.
            let mut plain = core(s);
            let mut out = [0u8; 200];
            assert_eq!(own(plain.poll_esp_hello(now, || None, &mut out)), Got::Done);
        }
    }

    #[test]
    fn esp_is_refused_on_ipip_and_with_keepalive() {
        let cipher = esp::Cipher::Aes256Gcm;
        let s = settings(TunnelType::Ipip, GreOptions::default());
        let sa = esp::derive(cipher, b"e", b"a", s.local, s.peer).unwrap();
        let e = EspCore::new(cipher, &sa, 1, 10).unwrap();
        assert!(core(s).with_esp(e.clone()).is_err());
        let mut k = settings(TunnelType::Gre, GreOptions::default());
        k.keepalive = Some(KeepaliveConfig {
            interval: SEC,
            retries: 3,
        });
        assert!(core(k).with_esp(e).is_err());
    }
}
