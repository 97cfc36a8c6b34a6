//! The few kernel settings twnode sets through `/proc/sys`: forwarding, which a relay
//! (a host in the middle of a multi-hop path) needs, and IPv6 off on the TUN device of a
//! line that cannot carry IPv6, and the multipath hash policy balancing groups need.

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

/// Turns IPv6 off on interface `ifname` (its link-local address and the router
/// solicitations and MLD reports the kernel would send through it). The setting goes
/// away with the interface. The data plane calls it for a TUN device it creates, before
/// bringing the device up.
pub fn disable_ipv6(ifname: &str) -> io::Result<()> {
    if ifname.contains('/') || ifname.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{ifname:?} is not an interface name"),
        ));
    }
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    std::fs::write(&path, b"1\n").map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// The multipath hash policy switches of both families: `1` hashes on addresses,
/// protocol and ports, so a balancing group spreads flows, not host pairs.
pub const MULTIPATH_HASH: [&str; 2] = [
    "/proc/sys/net/ipv4/fib_multipath_hash_policy",
    "/proc/sys/net/ipv6/fib_multipath_hash_policy",
];

/// Sets both multipath hash policies to `value` in the caller's network namespace;
/// returns what they were, to put back.
pub fn set_multipath_hash(value: [u8; 2]) -> io::Result<[u8; 2]> {
    let mut old = [0u8; 2];
    for (i, path) in MULTIPATH_HASH.iter().enumerate() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        old[i] = text.trim().parse().unwrap_or(0);
        std::fs::write(path, format!("{}\n", value[i]))
            .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    }
    Ok(old)
}
