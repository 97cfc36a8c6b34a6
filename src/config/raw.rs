//! The TOML file as serde sees it: field names are the file's keys, unknown keys are
//! refused. Nothing here is trusted; [`super::model`] validates it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::policy::{RawDefaultExit, RawFailover, RawGroup, RawPolicy};
use crate::tunnel::keys::{EspKey, PresharedKey, PrivateKey, PublicKey};

/// The whole file.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[[line]]` tables, in file order.
    #[serde(default, rename = "line", skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<RawLine>,
    /// `[metrics]` (see [`super::metrics`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<super::metrics::RawMetrics>,
    /// `[[policy]]` groups (see [`super::policy`]).
    #[serde(default, rename = "policy", skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<RawGroup>,
    /// `[default_exit]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_exit: Option<RawDefaultExit>,
    /// `[failover]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<RawFailover>,
}

impl RawConfig {
    /// Takes the policy part out (validated after the lines, against them).
    pub fn take_policy(&mut self) -> RawPolicy {
        RawPolicy {
            groups: std::mem::take(&mut self.groups),
            default_exit: self.default_exit.take(),
            failover: self.failover.take(),
        }
    }
}

/// One `[[line]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLine {
    pub name: String,
    pub parent: String,
    pub peer_ip: IpAddr,
    pub peer_vip: IpAddr,
    pub local_vip: IpAddr,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<RawWireGuard>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_tunnel: Option<RawIpTunnel>,
}

/// `[line.wireguard]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWireGuard {
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u32>,
    pub private_key: PrivateKey,
    pub peer_public_key: PublicKey,
    /// Server side only: the private key generated for the client, kept so that
    /// `line show-peer` can print the client's command again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_private_key: Option<PrivateKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<u32>,
    /// Secret, base64 (`wg genpsk`): WireGuard's optional preshared key, the same on
    /// both ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<PresharedKey>,
    /// Prefixes routed to the peer besides its VIP (WireGuard's AllowedIPs, as `wg set
    /// ... allowed-ips` sets them), e.g. `["192.0.2.0/24"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<String>,
}

/// `[line.ip_tunnel]`: iproute2's `ip tunnel` options for the types ipip, gre, sit,
/// ip6ip6, ipip6 and gre6. Every key is optional; the table may be left out.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpTunnel {
    /// GRE input key: a number or a dotted quad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ikey: Option<IntOrText>,
    /// GRE output key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub okey: Option<IntOrText>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub iseq: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub oseq: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub icsum: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ocsum: bool,
    /// 1-255 or "inherit".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<IntOrText>,
    /// 0-255, "0xNN" or "inherit".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos: Option<IntOrText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmtudisc: Option<bool>,
    /// Seconds between keepalive probes; 0 or absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_retries: Option<u32>,
    /// GRE only: protect the line with ESP (needs `enc_key` and `auth_key`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub encrypt: bool,
    /// "chacha20-poly1305" (default) or "aes-256-gcm".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    /// Secret: "0x" + hex, the same on both ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc_key: Option<EspKey>,
    /// Secret: "0x" + hex, the same on both ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_key: Option<EspKey>,
    /// "epoch" (default: keys agreed with a twnode peer at every start) or "static"
    /// (SAs from the keys alone, for a kernel peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp_keying: Option<String>,
    /// Epoch keying: seconds between rekeys (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp_rekey: Option<u32>,
    /// Send the outer packets through AF_XDP on the next hop's Ethernet device.
    #[serde(default, skip_serializing_if = "is_false")]
    pub af_xdp: bool,
}

/// A value written either as a number or as text (`ttl = 64` or `ttl = "inherit"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum IntOrText {
    Int(i64),
    Text(String),
}

fn is_false(b: &bool) -> bool {
    !*b
}
