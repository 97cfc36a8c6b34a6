//! Configurations the config tests share, and their helpers.

use std::path::Path;

use super::{parse, Config, ConfigError};

pub(crate) const SERVER_TOML: &str = r#"
[[line]]
name = "tunnel_base"
parent = "eth0"
peer_ip = "198.51.100.20"
peer_vip = "10.0.0.2"
local_vip = "10.0.0.1"
type = "wireguard"
mtu = 1420

[line.wireguard]
mode = "server"
listen_port = 51820
private_key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
peer_public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
peer_private_key = "CB4ab1U7XM+3RI5O7hlxfXf5A8iR0tEcWRbEihTmL2o="

[[line]]
name = "tunnel_secure"
parent = "tunnel_base"
peer_ip = "10.0.0.2"
peer_vip = "172.16.0.2"
local_vip = "172.16.0.1"
type = "wireguard"

[line.wireguard]
mode = "client"
peer_port = 51821
private_key = "CB4ab1U7XM+3RI5O7hlxfXf5A8iR0tEcWRbEihTmL2o="
peer_public_key = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
persistent_keepalive = 10
"#;

pub(crate) const GRE_TOML: &str = r#"
[[line]]
name = "gre1"
parent = "eth0"
peer_ip = "198.51.100.20"
peer_vip = "10.9.0.2"
local_vip = "10.9.0.1"
type = "gre"

[line.ip_tunnel]
ikey = "0.0.0.7"
okey = 8
iseq = true
ocsum = true
ttl = "inherit"
tos = "0x28"
keepalive = 5
keepalive_retries = 2

[[line]]
name = "ipip1"
parent = "eth0"
peer_ip = "198.51.100.30"
peer_vip = "10.8.0.2"
local_vip = "10.8.0.1"
type = "ipip"
"#;

/// Parses `text` as the file `test.toml`.
pub(crate) fn cfg(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("test.toml"))
}

/// The error `text` is refused with.
pub(crate) fn err(text: &str) -> String {
    cfg(text).unwrap_err().to_string()
}
