//! The TOML file as serde sees it: field names are the file's keys, unknown keys are
//! refused. Nothing here is trusted; [`super::model`] validates it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::keys::{PrivateKey, PublicKey};

/// The whole file.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[[line]]` tables, in file order.
    #[serde(default, rename = "line", skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<RawLine>,
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
}
