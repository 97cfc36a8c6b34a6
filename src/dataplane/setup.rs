//! From a configured line to what its data plane runs with: the headers the line adds
//! (and so the MTU it offers under its parent, and its [`PathMtu`]), an IP tunnel
//! line's core settings ([`IpTunnelSetup`]), and an encrypted line's ESP: with epoch
//! keying, a core that starts from a fresh random nonce; with static keying, SAs derived
//! from the keys and the core started from the sequence-number files in the state
//! directory that keep its numbers unique across restarts.
//!
//! Rules: the daemon hands over config-level settings and addresses; everything that
//! needs the tunnel cores' own types (headers, SAs, settings) is decided here, so the
//! daemon never reaches past the data plane. Nothing here opens a device or a socket;
//! the ESP files are read and written only when the line starts (`EspSpec::start`),
//! before any sequence number is used. A static line whose mark file is missing does
//! not start unless the daemon says its SA is new (`line create`, or `twnode daemon
//! --esp-fresh-state LINE`): starting from 1 again could repeat nonces.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ring::rand::{SecureRandom, SystemRandom};
use tracing::{info, warn};

use super::pmtu::PathMtu;
use super::seqstore::SeqStore;
use super::DataplaneError;
use crate::config::esp::Esp;
use crate::config::model::IpTunnel;
use crate::config::{Line, LineKind};
use crate::tunnel::esp::{self, Cipher, EpochParams, EspCore, Keying, SaPair};
use crate::tunnel::iptunnel::Settings;
use crate::tunnel::iptype::IpVersion;
use crate::tunnel::pmtu::{Outer, Overhead};
use crate::tunnel::TunnelError;
use crate::wire;

/// Outer headers a WireGuard line adds: IP (20 or 40) + UDP 8 + WireGuard 32.
pub fn wireguard_overhead(underlay: IpAddr) -> u16 {
    let ip = if underlay.is_ipv4() { 20 } else { 40 };
    ip + 8 + crate::tunnel::wireguard::DATA_OVERHEAD as u16
}

/// What a line adds around an inner packet: see [`wireguard_overhead`]; for an IP
/// tunnel the outer IP header (20 or 40) plus the GRE header with its optional fields;
/// for an encrypted line also ESP's header and IV (16) and ICV (16), with the GRE packet,
/// pad length and next header (2) padded to a 4-byte boundary.
pub fn line_overhead(line: &Line) -> Overhead {
    match &line.kind {
        LineKind::WireGuard(_) => wireguard_overhead(line.peer_ip).into(),
        LineKind::IpTunnel(t) => {
            let outer = t.kind.outer_len() as u16;
            let gre = if t.kind.is_gre() {
                t.gre.header_len() as u16
            } else {
                0
            };
            match t.esp {
                Some(_) => Overhead {
                    fixed: outer + (esp::PREFIX_LEN + wire::esp::ICV_LEN) as u16,
                    aligned: Some(gre + wire::esp::TRAILER_LEN as u16),
                },
                None => (outer + gre).into(),
            }
        }
    }
}

/// The MTU a line gets from its parent's: the largest inner packet whose outer packet
/// fits the parent exactly (see [`line_overhead`]).
pub fn derived_mtu(line: &Line, parent_mtu: u16) -> u16 {
    line_overhead(line).inner_mtu(parent_mtu)
}

/// Whether the line's device carries IPv6, by its VIPs or by its type (sit, ipip6,
/// ip6ip6, gre and gre6 carry it whatever the VIPs are): then its MTU must be at least
/// IPv6's minimum.
pub fn carries_ipv6(line: &Line) -> bool {
    line.carries_ipv6()
        || line
            .ip_tunnel()
            .is_some_and(|t| t.kind.carries(IpVersion::V6))
}

/// The path MTU check of a line whose parent carries `parent_mtu`: WireGuard's
/// datagrams may be fragmented by the kernel, the IP tunnels' packets never are.
pub fn path_mtu(line: &Line, parent_mtu: u16) -> Arc<PathMtu> {
    let outer = match &line.kind {
        LineKind::WireGuard(_) => Outer::Fragmentable,
        LineKind::IpTunnel(_) => Outer::Whole,
    };
    PathMtu::new(line_overhead(line), outer, parent_mtu)
}

/// What the daemon hands the data plane to start an IP tunnel line.
pub struct IpTunnelSpec {
    /// Line (and TUN device) name.
    pub name: String,
    pub mtu: u16,
    /// The line's settings as configured.
    pub tunnel: IpTunnel,
    /// The underlay address the line sends from (its sockets bind it).
    pub local: IpAddr,
    /// The peer's underlay address.
    pub peer: IpAddr,
    /// Packets too big for the parent's path are refused with an ICMP error.
    pub pmtu: Arc<PathMtu>,
    /// Where an encrypted line's sequence-number marks and replay floors live.
    pub state_dir: PathBuf,
    /// Static keying: the line's SA is new, so a missing mark file means "start at 1"
    /// rather than "state lost" (`line create`, `twnode daemon --esp-fresh-state`).
    pub esp_fresh_state: bool,
}

impl IpTunnelSpec {
    /// What the line starts with: the core's settings, and for an encrypted line its SAs
    /// and their files. An encrypted line whose keys give no SAs fails here ("ESP: ...").
    pub(super) fn into_setup(self) -> Result<IpTunnelSetup, DataplaneError> {
        let t = self.tunnel;
        let esp = match t.esp {
            Some(e) => Some(esp_spec(
                &e,
                self.local,
                self.peer,
                &self.state_dir,
                self.esp_fresh_state,
            )?),
            None => None,
        };
        Ok(IpTunnelSetup {
            name: self.name,
            mtu: self.mtu,
            settings: Settings {
                kind: t.kind,
                local: self.local,
                peer: self.peer,
                ttl: t.ttl,
                tos: t.tos,
                pmtudisc: t.pmtudisc,
                gre: t.gre,
                keepalive: t.keepalive,
            },
            pmtu: self.pmtu,
            esp,
            af_xdp: t.af_xdp,
        })
    }
}

/// Everything the data plane needs to run one IP tunnel line, resolved from its
/// [`IpTunnelSpec`].
pub struct IpTunnelSetup {
    /// Line (and TUN device) name.
    pub name: String,
    pub mtu: u16,
    /// Type, addresses and options; `settings.local` is the address the sockets bind.
    pub settings: Settings,
    /// Packets too big for the parent's path are refused with an ICMP error.
    pub pmtu: Arc<PathMtu>,
    /// ESP under the GRE header (`--encrypt`).
    pub esp: Option<EspSpec>,
    /// Send through an AF_XDP socket on the next hop's device ([`super::xsk::Transmit`]).
    pub af_xdp: bool,
}

/// An encrypted GRE line's ESP layer, before it starts.
pub enum EspSpec {
    /// Epoch keying: the settings; keys are agreed with the peer once running.
    Epoch(Esp, IpAddr, IpAddr),
    /// Static keying: the SAs and their files.
    Static(StaticEsp),
}

/// A static-keyed line's SAs and the files that keep their sequence numbers.
pub struct StaticEsp {
    pub cipher: Cipher,
    /// Both directions' SAs, as derived for this end.
    pub sas: SaPair,
    /// Where the outbound SA's sequence-number mark is kept.
    pub store: SeqStore,
    /// Where the inbound SA's replay floor is kept.
    pub floor: SeqStore,
    /// A missing mark means a new SA (see [`IpTunnelSpec::esp_fresh_state`]).
    pub fresh: bool,
}

/// A fresh 256-bit nonce from the system's random source (`None` if it fails, which
/// Linux's getrandom does not once booted).
pub fn fresh_nonce(rng: &SystemRandom) -> Option<[u8; 32]> {
    let mut n = [0u8; 32];
    rng.fill(&mut n).ok().map(|()| n)
}

impl EspSpec {
    /// Line `line`'s ESP core, with, for static keying, the two stores for the line's
    /// `reserve` task.
    pub(super) fn start(
        self,
        line: &str,
    ) -> Result<(EspCore, Option<(SeqStore, SeqStore)>), DataplaneError> {
        match self {
            EspSpec::Epoch(e, local, peer) => {
                let params = EpochParams {
                    cipher: e.cipher,
                    enc_key: e.enc_key.bytes(),
                    auth_key: e.auth_key.bytes(),
                    local,
                    peer,
                    rekey_after: e.rekey,
                };
                let nonce = fresh_nonce(&SystemRandom::new()).ok_or(DataplaneError::State {
                    path: PathBuf::from("/dev/urandom"),
                    what: "gives no random bytes for the ESP epoch nonce".into(),
                })?;
                let core = EspCore::with_epochs(params, nonce, Instant::now())
                    .map_err(|e| DataplaneError::Tunnel(TunnelError::EspKeys(e)))?;
                info!(line = %line, cipher = %e.cipher, rekey_s = e.rekey.as_secs(),
                      "ESP epoch keying: waiting for the peer's Hello");
                Ok((core, None))
            }
            EspSpec::Static(s) => {
                let (core, store, floor) = s.start(line)?;
                Ok((core, Some((store, floor))))
            }
        }
    }
}

impl StaticEsp {
    /// The core, beginning at the stored sequence-number mark with the first block of
    /// numbers made durable before any of it is used, and refusing what is at or below
    /// the stored replay floor; with the two stores.
    fn start(self, line: &str) -> Result<(EspCore, SeqStore, SeqStore), DataplaneError> {
        let start = match self.store.load_existing()? {
            Some(mark) => mark.max(1),
            None if self.fresh => 1,
            None => {
                return Err(DataplaneError::State {
                    path: self.store.path().to_path_buf(),
                    what: format!(
                        "is missing, so line {line}'s static ESP keys would send sequence \
                         numbers from 1 again and could repeat nonces already used, which \
                         breaks the encryption; restore the state directory, give the line \
                         new keys on both ends (or --esp-keying epoch, which needs no state), \
                         or, only if no packet was ever sent under these keys from this \
                         host, start the daemon once with --esp-fresh-state {line}"
                    ),
                })
            }
        };
        if self.fresh && start == 1 {
            warn!(line = %line, path = %self.store.path().display(),
                  "ESP static keys start from sequence number 1 (a new SA, as told)");
        }
        let limit = start.saturating_add(esp::RESERVE_BLOCK);
        self.store
            .store(limit)
            .map_err(|e| DataplaneError::State {
                path: self.store.path().to_path_buf(),
                what: format!(
                    "cannot be written ({e}); the daemon's state directory (--state-dir) must be writable"
                ),
            })?;
        let mut core = EspCore::new(self.cipher, &self.sas, start, limit)
            .map_err(|e| DataplaneError::Tunnel(TunnelError::EspKeys(e)))?;
        info!(line = %line, spi_out = format_args!("{:#010x}", self.sas.outbound.spi),
              spi_in = format_args!("{:#010x}", self.sas.inbound.spi), cipher = %self.cipher,
              first_seq = start, "ESP sequence numbers reserved up to {limit}");
        let floor = self.floor.load()?;
        if floor > 0 {
            info!(line = %line, floor, "ESP replay floor restored: older packets are refused");
        }
        core.handle_replay_floor(floor);
        Ok((core, self.store, self.floor))
    }
}

/// An encrypted line's ESP layer: with static keying, its SAs with the files named by
/// their fingerprints under `state_dir`: the outbound SA's sequence-number mark and the
/// inbound SA's replay floor.
fn esp_spec(
    e: &Esp,
    local: IpAddr,
    peer: IpAddr,
    state_dir: &std::path::Path,
    fresh: bool,
) -> Result<EspSpec, DataplaneError> {
    if e.keying == Keying::Epoch {
        return Ok(EspSpec::Epoch(*e, local, peer));
    }
    let sas = esp::derive(e.cipher, e.enc_key.bytes(), e.auth_key.bytes(), local, peer)
        .map_err(|err| DataplaneError::Tunnel(TunnelError::EspKeys(err)))?;
    let store = SeqStore::new(state_dir, &sas.outbound.fingerprint());
    let floor = SeqStore::replay_floor(state_dir, &sas.inbound.fingerprint());
    Ok(EspSpec::Static(StaticEsp {
        cipher: e.cipher,
        sas,
        store,
        floor,
        fresh,
    }))
}

/// One direction's SA as a Linux peer's `ip xfrm state add` takes it. Secret: it holds
/// the key, so it has no `Debug` and is only ever printed on request.
pub struct XfrmSa {
    pub spi: u32,
    /// `0x` + the AEAD key and salt in hex (`aead '<name>' <key> 128`).
    pub key_hex: String,
}

/// The SAs an encrypted line uses between `local` and `peer`, for `line show --xfrm`.
pub struct XfrmSas {
    /// What this end sends with.
    pub outbound: XfrmSa,
    /// What this end accepts.
    pub inbound: XfrmSa,
    /// The cipher's `ip xfrm` name.
    pub aead: &'static str,
}

/// Derives the SAs the data plane would run with, for a kernel peer's `ip xfrm`.
pub fn xfrm_sas(e: &Esp, local: IpAddr, peer: IpAddr) -> Result<XfrmSas, DataplaneError> {
    let sas = esp::derive(e.cipher, e.enc_key.bytes(), e.auth_key.bytes(), local, peer)
        .map_err(DataplaneError::EspSas)?;
    let sa = |k: &esp::SaKeys| XfrmSa {
        spi: k.spi,
        key_hex: k.xfrm_key_hex(),
    };
    Ok(XfrmSas {
        outbound: sa(&sas.outbound),
        inbound: sa(&sas.inbound),
        aead: e.cipher.xfrm_name(),
    })
}
