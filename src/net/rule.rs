//! Policy routing rules: `to <peer> lookup main` (protect) and `from all lookup 80` (VIPs),
//! and the start-up purge of the ones a crashed run left behind.

use std::fmt;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::route::{RouteHeader, RouteProtocol};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::IpVersion;

use super::conn::Call;
use super::error::errno;
use super::{Family, NetError, Netlink, Object, RTPROT_TWNODE};

/// A rule `pref <pref> [to <to>] lookup <table>`, installed with protocol
/// [`RTPROT_TWNODE`].
///
/// `family` says which rule list it goes in; when `to` is set it must agree with it
/// (the constructors make sure).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Preference (priority); lower is looked at first.
    pub pref: u32,
    /// Destination selector; `None` matches everything (`from all`).
    pub to: Option<(IpAddr, u8)>,
    /// Table to look up.
    pub table: u32,
    /// IPv4 or IPv6 rule list.
    pub family: Family,
}

impl Rule {
    /// `pref <pref> from all lookup <table>` in the given family.
    pub fn from_all(family: Family, pref: u32, table: u32) -> Rule {
        Rule {
            pref,
            to: None,
            table,
            family,
        }
    }

    /// `pref <pref> to <addr>/<prefix> lookup <table>`, family from `addr`.
    pub fn to_prefix(pref: u32, addr: IpAddr, prefix: u8, table: u32) -> Rule {
        Rule {
            pref,
            to: Some((addr, prefix)),
            table,
            family: Family::of(addr),
        }
    }

    fn validate(&self) -> Result<(), NetError> {
        let invalid = |reason| NetError::Invalid {
            object: Object::Rule(self.clone()),
            reason,
        };
        if let Some((addr, prefix)) = self.to {
            if Family::of(addr) != self.family {
                return Err(invalid("destination is not of the rule's IP version"));
            }
            if prefix > self.family.max_prefix() {
                return Err(invalid("prefix length is longer than the address"));
            }
        }
        Ok(())
    }

    /// The RTM_NEWRULE/RTM_DELRULE body. The protocol is part of it: the kernel then
    /// treats an administrator's otherwise identical rule as a different one, for add
    /// (no EEXIST) as for delete (left alone).
    fn message(&self) -> RuleMessage {
        let mut message = RuleMessage::default();
        message.header.family = self.family.address_family();
        message.header.action = RuleAction::ToTable;
        // The header holds 8 bits; FRA_TABLE holds any table and wins when present.
        message.header.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        message.attributes.push(RuleAttribute::Priority(self.pref));
        message.attributes.push(RuleAttribute::Table(self.table));
        if let Some((addr, prefix)) = self.to {
            message.header.dst_len = prefix;
            message.attributes.push(RuleAttribute::Destination(addr));
        }
        message
            .attributes
            .push(RuleAttribute::Protocol(RouteProtocol::from(RTPROT_TWNODE)));
        message
    }

    /// Whether a dumped rule is this one: same list, preference, selector, action,
    /// table and protocol, and no other selector.
    fn matches(&self, message: &RuleMessage) -> bool {
        Rule::from_message(message).as_ref() == Some(self)
    }

    /// The twnode rule a dumped message is: protocol [`RTPROT_TWNODE`], action "lookup
    /// table", at most a destination selector; `None` for any other rule.
    fn from_message(message: &RuleMessage) -> Option<Rule> {
        let header = &message.header;
        let family = if header.family == Family::V4.address_family() {
            Family::V4
        } else if header.family == Family::V6.address_family() {
            Family::V6
        } else {
            return None;
        };
        if header.action != RuleAction::ToTable || header.src_len != 0 || header.tos != 0 {
            return None;
        }
        let mut pref = 0;
        let mut table = u32::from(header.table);
        let mut dst = None;
        let mut protocol = None;
        for attr in &message.attributes {
            match attr {
                RuleAttribute::Priority(p) => pref = *p,
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::Destination(addr) => dst = Some((*addr, header.dst_len)),
                RuleAttribute::Protocol(p) => protocol = Some(u8::from(*p)),
                // Attributes the kernel reports on every rule, or that do not select.
                RuleAttribute::SuppressPrefixLen(_)
                | RuleAttribute::SuppressIfGroup(_)
                | RuleAttribute::Other(_) => {}
                _ => return None,
            }
        }
        (protocol == Some(RTPROT_TWNODE)).then_some(Rule {
            pref,
            to: dst,
            table,
            family,
        })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = match self.family {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        };
        write!(f, "{version} rule pref {} ", self.pref)?;
        match self.to {
            Some((addr, prefix)) => write!(f, "to {addr}/{prefix}")?,
            None => f.write_str("from all")?,
        }
        write!(f, " lookup {}", self.table)
    }
}

impl Netlink {
    /// Adds the rule; [`NetError::Exists`] if twnode's identical rule is already there.
    pub async fn add_rule(&self, rule: &Rule) -> Result<(), NetError> {
        rule.validate()?;
        let message = rule.message();
        let call = Call::new("add_rule", "add", Object::Rule(rule.clone()));
        self.request(call, |handle| {
            let mut request = handle.rule().add();
            *request.message_mut() = message;
            request.execute()
        })
        .await
    }

    /// Deletes twnode's rule. A rule that is not there is not an error; an identical
    /// rule without twnode's protocol is left alone.
    pub async fn del_rule(&self, rule: &Rule) -> Result<(), NetError> {
        rule.validate()?;
        let message = rule.message();
        let call = Call::new("del_rule", "delete", Object::Rule(rule.clone()));
        self.request(call, |handle| async move {
            match handle.rule().del(message).execute().await {
                Err(err) if errno(&err) == Some(libc::ENOENT) => Ok(()),
                other => other,
            }
        })
        .await
    }

    /// Whether twnode's rule (protocol [`RTPROT_TWNODE`]) is installed; an administrator's
    /// look-alike without that protocol does not count.
    pub async fn rule_exists(&self, rule: &Rule) -> Result<bool, NetError> {
        rule.validate()?;
        let rules = self.dump_rules(rule.family).await?;
        Ok(rules.iter().any(|message| rule.matches(message)))
    }

    /// twnode's rules (protocol [`RTPROT_TWNODE`], of the form twnode installs) in the
    /// lists of `families`, as the host has them now.
    pub async fn twnode_rules(&self, families: &[Family]) -> Result<Vec<Rule>, NetError> {
        let mut out = Vec::new();
        for family in families {
            let rules = self.dump_rules(*family).await?;
            out.extend(rules.iter().filter_map(Rule::from_message));
        }
        Ok(out)
    }

    pub(super) async fn dump_rules(&self, family: Family) -> Result<Vec<RuleMessage>, NetError> {
        let (version, what) = match family {
            Family::V4 => (IpVersion::V4, "IPv4 rules"),
            Family::V6 => (IpVersion::V6, "IPv6 rules"),
        };
        self.request(
            Call::new("dump_rules", "list", Object::Dump(what)),
            |handle| handle.rule().get(version).execute().try_collect(),
        )
        .await
    }

    /// Deletes every rule carrying [`RTPROT_TWNODE`] (both families); returns how many.
    pub(super) async fn purge_stale_rules(&self) -> Result<usize, NetError> {
        let mut purged = 0;
        for family in [Family::V4, Family::V6] {
            let what = match family {
                Family::V4 => "stale IPv4 rules",
                Family::V6 => "stale IPv6 rules",
            };
            let stale = self
                .dump_rules(family)
                .await?
                .into_iter()
                .filter(|message| message.attributes.contains(&twnode_protocol()));
            for message in stale {
                let pref = message.attributes.iter().find_map(|attr| match attr {
                    RuleAttribute::Priority(pref) => Some(*pref),
                    _ => None,
                });
                // Sent back as it was dumped, like `ip rule flush`.
                let call = Call::new("del_rule", "delete", Object::Dump(what));
                let deleted = self
                    .request(call, |handle| async move {
                        match handle.rule().del(message).execute().await {
                            Ok(()) => Ok(true),
                            Err(err) if errno(&err) == Some(libc::ENOENT) => Ok(false),
                            Err(err) => Err(err),
                        }
                    })
                    .await?;
                if deleted {
                    tracing::info!(?pref, ?family, "deleted stale twnode rule");
                    purged += 1;
                }
            }
        }
        Ok(purged)
    }
}

fn twnode_protocol() -> RuleAttribute {
    RuleAttribute::Protocol(RouteProtocol::from(RTPROT_TWNODE))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::net::{MAIN_TABLE, PROTECT_RULE_PREF, VIP_RULE_PREF, VIP_TABLE};

    fn protect() -> Rule {
        Rule::to_prefix(
            PROTECT_RULE_PREF,
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            32,
            MAIN_TABLE,
        )
    }

    #[test]
    fn rule_display_reads_like_ip_rule() {
        assert_eq!(
            protect().to_string(),
            "IPv4 rule pref 10 to 198.51.100.7/32 lookup 254"
        );
        assert_eq!(
            Rule::from_all(Family::V6, VIP_RULE_PREF, VIP_TABLE).to_string(),
            "IPv6 rule pref 80 from all lookup 80"
        );
    }

    #[test]
    fn rule_matches_its_own_message() {
        assert!(protect().matches(&protect().message()));
        let vip = Rule::from_all(Family::V6, VIP_RULE_PREF, VIP_TABLE);
        assert!(vip.matches(&vip.message()));
        assert!(!vip.matches(&protect().message()));
    }

    #[test]
    fn rule_without_twnode_protocol_does_not_match() {
        let mut message = protect().message();
        message.attributes.retain(|attr| *attr != twnode_protocol());
        assert!(!protect().matches(&message));
    }

    #[test]
    fn rule_with_extra_selector_does_not_match() {
        let mut message = protect().message();
        message.attributes.push(RuleAttribute::FwMark(1));
        assert!(!protect().matches(&message));
    }

    #[test]
    fn dumped_rules_read_back_as_the_rules_installed() {
        let vip = Rule::from_all(Family::V6, VIP_RULE_PREF, 1000);
        assert_eq!(Rule::from_message(&vip.message()), Some(vip));
        assert_eq!(Rule::from_message(&protect().message()), Some(protect()));
        let mut admins = protect().message();
        admins.attributes.retain(|attr| *attr != twnode_protocol());
        assert_eq!(Rule::from_message(&admins), None);
    }

    #[test]
    fn rule_with_mismatched_family_is_invalid() {
        let rule = Rule {
            family: Family::V6,
            ..protect()
        };
        assert!(matches!(rule.validate(), Err(NetError::Invalid { .. })));
    }
}
