//! The few kernel settings twnode sets through `/proc/sys`: forwarding, which a relay
//! (a host in the middle of a multi-hop path) needs.

use std::io;

/// The forwarding switches `twnode init` turns on.
pub const FORWARDING: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];

/// Turns IPv4 and IPv6 forwarding on in the caller's network namespace.
pub fn enable_forwarding() -> io::Result<()> {
    for path in FORWARDING {
        std::fs::write(path, b"1\n")
            .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    }
    Ok(())
}
