//! twnode: a userspace point-to-point VPN node.
//!
//! Data flows one way through the rooms:
//! `config` -> `daemon` (reconcile) -> `dataplane` (fds) -> `tunnel` (pure) -> `wire` (bytes).
//! `cli` is a thin client of `control`; `net` is the host side (netlink); `policy` is the
//! pure room that decides which exits policy groups use (the daemon applies it).

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod net;
pub mod policy;
pub mod tunnel;
pub mod wire;
