//! `NetError`: what went wrong talking to the kernel, naming the object it was about.
//!
//! The kernel answers a request with a bare errno; this file turns the ones a caller acts
//! on (EEXIST, ENODEV, ENETDOWN, EPERM/EACCES) into their own variants and keeps the rest as
//! `Kernel` with the errno as source, always together with the interface, address, route
//! or rule the request was about.

use std::fmt;
use std::io;
use std::net::IpAddr;

use super::{Route, Rule};

/// An interface, by index (what the API takes) or by name (what a person configured).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkId {
    /// Kernel interface index (`ifindex`).
    Index(u32),
    /// Interface name, as in `ip link`.
    Name(String),
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkId::Index(index) => write!(f, "with index {index}"),
            LinkId::Name(name) => f.write_str(name),
        }
    }
}

/// The host object a netlink request was about, for error messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Object {
    /// An interface.
    Link(LinkId),
    /// One address on one interface.
    Addr {
        /// Interface index.
        index: u32,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// A route.
    Route(Route),
    /// A policy routing rule.
    Rule(Rule),
    /// A whole kernel table listed by a dump request ("addresses", "IPv4 routes", ...).
    Dump(&'static str),
    /// A policy group's rule, described as `ip rule` would print it.
    Policy(String),
}

impl Object {
    /// The interface a request depended on, so ENODEV can say which one is missing.
    fn link(&self) -> Option<LinkId> {
        match self {
            Object::Link(link) => Some(link.clone()),
            Object::Addr { index, .. } => Some(LinkId::Index(*index)),
            Object::Route(route) => Some(LinkId::Index(route.oif)),
            Object::Rule(_) | Object::Dump(_) | Object::Policy(_) => None,
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Link(link) => write!(f, "interface {link}"),
            Object::Addr {
                index,
                addr,
                prefix,
            } => write!(f, "address {addr}/{prefix} on interface with index {index}"),
            Object::Route(route) => route.fmt(f),
            Object::Rule(rule) => rule.fmt(f),
            Object::Dump(what) => write!(f, "the list of {what}"),
            Object::Policy(rule) => f.write_str(rule),
        }
    }
}

/// Errors of the host side (`net`): netlink requests about links, addresses, routes and
/// rules.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// `Netlink::connect` was called outside a tokio runtime, which the netlink connection
    /// task needs.
    #[error("the netlink connection must be opened from within a tokio runtime")]
    NoRuntime,

    /// The netlink route socket could not be opened.
    #[error("cannot open a netlink route socket")]
    Connect(#[source] io::Error),

    /// The object to add is already there (EEXIST).
    #[error("{object} already exists")]
    Exists {
        /// What was being added.
        object: Object,
    },

    /// The interface the request names does not exist (ENODEV).
    #[error("interface {link} does not exist")]
    NoSuchInterface {
        /// The missing interface.
        link: LinkId,
    },

    /// The interface a route goes out of is down (ENETDOWN); IPv4 routes need it up.
    #[error("interface {link} is down: set it up before routing through it")]
    LinkDown {
        /// The interface that is down.
        link: LinkId,
    },

    /// The kernel refused for lack of privilege (EPERM, EACCES).
    #[error("not permitted to {op} {object}: run as root or with CAP_NET_ADMIN")]
    PermissionDenied {
        /// What the request did ("add", "delete", ...).
        op: &'static str,
        /// What it was about.
        object: Object,
        /// The errno the kernel returned.
        #[source]
        source: io::Error,
    },

    /// The request was rejected before it was sent because the object is not well formed
    /// (prefix too long, address families mixed, host bits set in a route destination).
    #[error("invalid {object}: {reason}")]
    Invalid {
        /// The malformed object.
        object: Object,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The kernel refused the request for another reason; the source is its errno.
    #[error("the kernel refused to {op} {object}")]
    Kernel {
        /// What the request did ("add", "delete", ...).
        op: &'static str,
        /// What it was about.
        object: Object,
        /// The errno the kernel returned.
        #[source]
        source: io::Error,
    },

    /// The netlink exchange itself failed: the connection task is gone or the kernel sent
    /// a reply that does not fit the request.
    #[error("netlink request to {op} {object} failed")]
    Netlink {
        /// What the request did ("add", "delete", ...).
        op: &'static str,
        /// What it was about.
        object: Object,
        /// The error from the netlink library (boxed: it can hold a whole message).
        #[source]
        source: Box<rtnetlink::Error>,
    },

    /// The kernel did not answer within [`super::REQUEST_TIMEOUT`]: the connection was
    /// closed, and requests fail at once for a moment before it is re-opened.
    #[error(
        "no answer from the kernel within {} s to {op} {object}; the netlink connection \
         is re-opened and the request tried again later",
        super::REQUEST_TIMEOUT.as_secs()
    )]
    Timeout {
        /// What the request did ("add", "delete", ...).
        op: &'static str,
        /// What it was about.
        object: Object,
    },

    /// A request a moment ago got no answer; until the connection is re-opened, requests
    /// fail at once instead of each waiting out its own timeout.
    #[error(
        "cannot {op} {object}: netlink stopped answering a moment ago; the connection is \
         re-opened in {retry_in_ms} ms and the request tried again later"
    )]
    Unavailable {
        /// What the request would have done.
        op: &'static str,
        /// What it was about.
        object: Object,
        /// When requests go through again.
        retry_in_ms: u64,
    },

    /// The connection died while the request was in flight, so its answer (a dump, a
    /// confirmation) cannot be trusted; the next request re-opens it.
    #[error("the netlink connection was lost during the request to {op} {object}; it is re-opened for the next request")]
    Lost {
        /// What the request did.
        op: &'static str,
        /// What it was about.
        object: Object,
    },

    /// A kernel reply lacked an attribute it always carries (for instance IFLA_MTU).
    #[error("kernel reply about {object} has no {attribute}")]
    MissingAttribute {
        /// What the reply was about.
        object: Object,
        /// The attribute that was missing.
        attribute: &'static str,
    },
}

/// The positive errno inside a netlink error, if the kernel sent one.
pub(super) fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| code.get().abs()),
        _ => None,
    }
}

/// Maps an error from a request to `op` on `object` to the variant a caller can act on.
pub(super) fn classify(op: &'static str, object: Object, err: rtnetlink::Error) -> NetError {
    let Some(code) = errno(&err) else {
        return NetError::Netlink {
            op,
            object,
            source: Box::new(err),
        };
    };
    match code {
        libc::EEXIST => NetError::Exists { object },
        libc::ENODEV | libc::ENETDOWN => match object.link() {
            Some(link) if code == libc::ENODEV => NetError::NoSuchInterface { link },
            Some(link) => NetError::LinkDown { link },
            None => NetError::Kernel {
                op,
                object,
                source: io::Error::from_raw_os_error(code),
            },
        },
        libc::EPERM | libc::EACCES => NetError::PermissionDenied {
            op,
            object,
            source: io::Error::from_raw_os_error(code),
        },
        _ => NetError::Kernel {
            op,
            object,
            source: io::Error::from_raw_os_error(code),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::net::{Family, VIP_TABLE};

    fn nack(errno: i32) -> rtnetlink::Error {
        let mut msg = rtnetlink::packet_core::ErrorMessage::default();
        msg.code = std::num::NonZeroI32::new(-errno);
        rtnetlink::Error::NetlinkError(msg)
    }

    fn route() -> Route {
        Route {
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            prefix: 32,
            oif: 7,
            table: VIP_TABLE,
            src: None,
        }
    }

    #[test]
    fn eexist_on_route_names_route_and_table() {
        let err = classify("add", Object::Route(route()), nack(libc::EEXIST));
        assert!(matches!(err, NetError::Exists { .. }));
        assert_eq!(err.to_string(), "route 10.0.0.2/32 table 80 already exists");
    }

    #[test]
    fn enodev_on_route_names_its_output_interface() {
        let err = classify("add", Object::Route(route()), nack(libc::ENODEV));
        assert_eq!(err.to_string(), "interface with index 7 does not exist");
    }

    #[test]
    fn enodev_by_name_reads_like_ip() {
        let err = NetError::NoSuchInterface {
            link: LinkId::Name("eth9".into()),
        };
        assert_eq!(err.to_string(), "interface eth9 does not exist");
    }

    #[test]
    fn eperm_says_what_to_do_and_keeps_errno() {
        let rule = Rule::from_all(Family::V6, 80, VIP_TABLE);
        let err = classify("add", Object::Rule(rule), nack(libc::EPERM));
        assert_eq!(
            err.to_string(),
            "not permitted to add IPv6 rule pref 80 from all lookup 80: run as root or with CAP_NET_ADMIN"
        );
        let source = std::error::Error::source(&err).map(|s| s.to_string());
        assert!(source.is_some_and(|s| s.contains("Operation not permitted")));
    }

    #[test]
    fn other_errno_is_kept_as_source() {
        let err = classify("add", Object::Route(route()), nack(libc::EINVAL));
        let NetError::Kernel { source, .. } = err else {
            panic!("expected NetError::Kernel, got {err:?}");
        };
        assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn closed_connection_is_a_netlink_error() {
        let err = classify(
            "list",
            Object::Dump("links"),
            rtnetlink::Error::RequestFailed,
        );
        assert!(matches!(err, NetError::Netlink { .. }));
    }

    #[test]
    fn net_error_can_cross_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<NetError>();
    }

    #[test]
    fn net_error_stays_small() {
        assert!(std::mem::size_of::<NetError>() <= 96);
    }
}
