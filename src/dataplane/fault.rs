//! Fault injection for the tests, compiled only with the cargo feature `fault-injection`
//! (off by default): without it [`Faults`] is empty, every check is an empty inline
//! function, and the binary holds neither the checks nor the variable's name.
//!
//! With it, `TWNODE_FAULT_INJECT=<fault>[,<fault>...]` in the daemon's environment is
//! read when a line starts; entries that name no fault below are left alone (other layers
//! may read the variable too). Faults:
//! - `panic-<path>:<line>`: the line's `<path>` panics at its first packet, once per
//!   process;
//! - `panic-<path>-always:<line>`: at the first packet after every start of the line (a
//!   bug that every restart meets again).
//!
//!   Paths: `outbound` (TUN -> underlay, either line kind), `inbound` (a WireGuard
//!   line's UDP -> TUN), `receive` (the shared raw socket's receive path of an IP tunnel
//!   line, at a packet for that line: it stops for every line on the socket);
//! - `fail-revive:<line>`: the first attempt to register a stopped shared receive path
//!   that carries the line again fails, once per process;
//! - `fail-xdp-wake:<line>`: the first AF_XDP wake-up after the line's frames are on the
//!   ring fails (without waking the kernel), once per process.
//!
//! How the tests check that a packet path that dies is noticed, its line restarted (ever
//! more slowly if it dies again) or its shared receive path registered anew, that a line
//! that cannot receive says so, and that a failed AF_XDP wake-up sends nothing twice.
//! Every packet path consults its line's [`Faults`], read once per line start: with the
//! feature, one branch per batch; without, nothing.

use std::io;

/// A line's packet path, as a fault names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// TUN -> underlay (both line kinds).
    Outbound,
    /// UDP -> TUN (WireGuard lines).
    Inbound,
    /// The shared raw socket's receive path (IP tunnel lines).
    Receive,
}

#[cfg(feature = "fault-injection")]
pub use armed::{Faults, FAULT_ENV};

#[cfg(not(feature = "fault-injection"))]
pub use off::Faults;

#[cfg(not(feature = "fault-injection"))]
mod off {
    use super::{io, Path};

    /// A line's injected faults: none, in a build without the `fault-injection`
    /// feature.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Faults;

    impl Faults {
        /// No faults.
        #[inline(always)]
        pub fn for_line(_line: &str) -> Faults {
            Faults
        }

        /// Nothing to check.
        #[inline(always)]
        pub fn check(&self, _path: Path, _line: &str) {}

        /// Never.
        #[inline(always)]
        pub fn take_revive_failure(&self) -> bool {
            false
        }

        /// Always Ok.
        #[inline(always)]
        pub fn xdp_wake(&self) -> io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(feature = "fault-injection")]
mod armed {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{io, Path};

    /// The environment variable that arms faults.
    pub const FAULT_ENV: &str = "TWNODE_FAULT_INJECT";

    /// How often a fault fires.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    enum Mode {
        #[default]
        Never,
        /// The first time in this process.
        Once,
        /// Every time.
        Always,
    }

    /// Which once-per-process faults have fired: the three panics, the revival, the
    /// AF_XDP wake-up.
    static FIRED: [AtomicBool; 5] = [const { AtomicBool::new(false) }; 5];
    const REVIVE: usize = 3;
    const XDP_WAKE: usize = 4;

    fn fire(mode: Mode, which: usize) -> bool {
        match mode {
            Mode::Never => false,
            Mode::Once => !FIRED[which].swap(true, Ordering::Relaxed),
            Mode::Always => true,
        }
    }

    impl Path {
        fn index(self) -> usize {
            match self {
                Path::Outbound => 0,
                Path::Inbound => 1,
                Path::Receive => 2,
            }
        }

        fn name(self) -> &'static str {
            match self {
                Path::Outbound => "outbound",
                Path::Inbound => "inbound",
                Path::Receive => "receive",
            }
        }
    }

    /// A line's injected faults ([`FAULT_ENV`]).
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Faults {
        panics: [Mode; 3],
        revive: Mode,
        xdp_wake: Mode,
    }

    impl Faults {
        /// What [`FAULT_ENV`] asks of `line`.
        pub fn for_line(line: &str) -> Faults {
            std::env::var(FAULT_ENV)
                .map(|spec| Faults::parse(&spec, line))
                .unwrap_or_default()
        }

        /// The faults `spec` arms for `line`.
        fn parse(spec: &str, line: &str) -> Faults {
            let mut f = Faults::default();
            for entry in spec.split(',').map(str::trim) {
                let Some((fault, target)) = entry.rsplit_once(':') else {
                    continue;
                };
                if target != line {
                    continue;
                }
                for path in [Path::Outbound, Path::Inbound, Path::Receive] {
                    let name = format!("panic-{}", path.name());
                    if fault == name {
                        f.panics[path.index()] = Mode::Once;
                    } else if fault.strip_prefix(name.as_str()) == Some("-always") {
                        f.panics[path.index()] = Mode::Always;
                    }
                }
                match fault {
                    "fail-revive" => f.revive = Mode::Once,
                    "fail-xdp-wake" => f.xdp_wake = Mode::Once,
                    _ => {}
                }
            }
            f
        }

        /// Panics if a panic of `path` is armed for the line named `line` and due.
        #[allow(clippy::panic)]
        pub fn check(&self, path: Path, line: &str) {
            if fire(self.panics[path.index()], path.index()) {
                panic!(
                    "fault injected by {FAULT_ENV} into line {line}'s {} path",
                    path.name()
                );
            }
        }

        /// Whether registering a stopped shared receive path again must fail now.
        pub fn take_revive_failure(&self) -> bool {
            fire(self.revive, REVIVE)
        }

        /// The injected failure of an AF_XDP wake-up, when due.
        pub fn xdp_wake(&self) -> io::Result<()> {
            if fire(self.xdp_wake, XDP_WAKE) {
                return Err(io::Error::other(format!(
                    "wake-up failed (fault injected by {FAULT_ENV})"
                )));
            }
            Ok(())
        }
    }

    #[cfg(test)]
    #[allow(clippy::unwrap_used, clippy::panic)]
    mod test {
        use super::*;

        #[test]
        fn faults_arm_only_the_named_line_and_leave_other_entries_alone() {
            let spec = "panic-outbound:a, panic-receive-always:a,fail-revive:a,\
                        fail-xdp-wake:b,netlink-timeout:a,panic-inbound:ab";
            let a = Faults::parse(spec, "a");
            assert_eq!(a.panics, [Mode::Once, Mode::Never, Mode::Always]);
            assert_eq!((a.revive, a.xdp_wake), (Mode::Once, Mode::Never));
            let b = Faults::parse(spec, "b");
            assert_eq!(b.panics, [Mode::Never; 3]);
            assert_eq!(b.xdp_wake, Mode::Once);
            assert_eq!(Faults::parse("", "a"), Faults::default());
            assert_eq!(Faults::parse("panic-outbound", "a"), Faults::default());
        }

        #[test]
        fn an_always_fault_fires_every_time_and_none_never() {
            let f = Faults::parse("panic-inbound-always:x", "x");
            for _ in 0..3 {
                assert!(std::panic::catch_unwind(|| f.check(Path::Inbound, "x")).is_err());
            }
            Faults::default().check(Path::Inbound, "x");
            assert!(Faults::default().xdp_wake().is_ok());
            assert!(!Faults::default().take_revive_failure());
        }
    }
}
