//! `[metrics]`: the opt-in Prometheus endpoint (raw table and validated settings).
//!
//! Rules: absent, there is no endpoint. Present, it listens on `listen` (default
//! [`DEFAULT_LISTEN`], loopback); an address other hosts can reach is refused unless
//! `allow_remote = true`, because the metrics name every line, its peers' addresses and
//! public keys, and how much each carries.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Where the endpoint listens when `[metrics]` says nothing else: loopback, on the port
/// the Prometheus WireGuard exporters use.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9586";

/// The `[metrics]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `IP:port` to serve `/metrics` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Allow an address other hosts can reach.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_remote: bool,
}

/// The endpoint's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    pub listen: SocketAddr,
    pub allow_remote: bool,
}

impl Metrics {
    /// Validates the table.
    pub fn from_raw(raw: &RawMetrics) -> Result<Metrics, ConfigError> {
        let text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = text.trim().parse().map_err(|_| {
            ConfigError::invalid(
                "metrics.listen",
                format!("{text:?} is not IP:port (e.g. {DEFAULT_LISTEN} or [::1]:9586)"),
            )
        })?;
        if !listen.ip().is_loopback() && !raw.allow_remote {
            return Err(ConfigError::invalid(
                "metrics.listen",
                format!(
                    "{listen} is not a loopback address: the metrics name every line, its \
                     peers' addresses and public keys and its traffic, so they are served to \
                     this host only unless you add `allow_remote = true` to [metrics] (and \
                     firewall the port)"
                ),
            ));
        }
        Ok(Metrics {
            listen,
            allow_remote: raw.allow_remote,
        })
    }

    /// The table as written back.
    pub fn to_raw(self) -> RawMetrics {
        RawMetrics {
            listen: Some(self.listen.to_string()),
            allow_remote: self.allow_remote,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn an_empty_table_listens_on_loopback_9586() {
        let m = Metrics::from_raw(&RawMetrics::default()).unwrap();
        assert_eq!(m.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(Metrics::from_raw(&m.to_raw()).unwrap(), m);
    }

    #[test]
    fn a_remote_address_needs_allow_remote_and_says_why() {
        let raw = RawMetrics {
            listen: Some("0.0.0.0:9586".into()),
            allow_remote: false,
        };
        let err = Metrics::from_raw(&raw).unwrap_err().to_string();
        assert!(
            err.starts_with("metrics.listen: 0.0.0.0:9586 is not a loopback address")
                && err.contains("allow_remote = true"),
            "{err}"
        );
        let ok = Metrics::from_raw(&RawMetrics {
            allow_remote: true,
            ..raw
        });
        assert!(ok.is_ok());
        let v6 = RawMetrics {
            listen: Some("[::1]:9100".into()),
            allow_remote: false,
        };
        assert!(Metrics::from_raw(&v6).is_ok());
        let bad = RawMetrics {
            listen: Some("localhost".into()),
            allow_remote: false,
        };
        assert!(Metrics::from_raw(&bad)
            .unwrap_err()
            .to_string()
            .contains("IP:port"));
    }
}
