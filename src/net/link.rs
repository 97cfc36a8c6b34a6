//! Interfaces and their addresses: look-ups by name, MTU, up, addresses add/del/list.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{AddressMessageBuilder, LinkUnspec};

use super::conn::Call;
use super::error::errno;
use super::{Family, LinkId, NetError, Netlink, Object};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

impl Netlink {
    /// Index of the interface called `name`, or `None` if there is none.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetError> {
        // The kernel rejects such names with EINVAL; no interface can carry them.
        if name.is_empty() || name.len() > IFNAME_MAX {
            return Ok(None);
        }
        let call = Call::new(
            "link_index",
            "look up",
            Object::Link(LinkId::Name(name.to_owned())),
        );
        let name = name.to_owned();
        self.request(call, |handle| async move {
            let mut replies = handle.link().get().match_name(name).execute();
            match replies.try_next().await {
                Ok(Some(link)) => Ok(Some(link.header.index)),
                Ok(None) => Ok(None),
                Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(None),
                Err(err) => Err(err),
            }
        })
        .await
    }

    /// Index of the interface called `name`; [`NetError::NoSuchInterface`] naming it if
    /// there is none.
    pub async fn require_link(&self, name: &str) -> Result<u32, NetError> {
        self.link_index(name)
            .await?
            .ok_or_else(|| NetError::NoSuchInterface {
                link: LinkId::Name(name.to_owned()),
            })
    }

    /// MTU of the interface.
    pub async fn link_mtu(&self, index: u32) -> Result<u32, NetError> {
        let link = self.link(index).await?;
        link.attributes
            .iter()
            .find_map(|attr| match attr {
                LinkAttribute::Mtu(mtu) => Some(*mtu),
                _ => None,
            })
            .ok_or(NetError::MissingAttribute {
                object: Object::Link(LinkId::Index(index)),
                attribute: "IFLA_MTU",
            })
    }

    /// Addresses configured on one interface (family both), in kernel order.
    pub async fn link_addrs(&self, index: u32) -> Result<Vec<IpAddr>, NetError> {
        let addrs = self.dump_addrs(Some(index)).await?;
        Ok(addrs.into_iter().map(|(_, addr)| addr).collect())
    }

    /// Every address on the host with the interface index it sits on (to detect a VIP
    /// already in use).
    pub async fn all_addrs(&self) -> Result<Vec<(u32, IpAddr)>, NetError> {
        self.dump_addrs(None).await
    }

    /// Sets the interface administratively up.
    pub async fn set_link_up(&self, index: u32) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(index).up().build();
        let call = Call::new("set_link_up", "set up", Object::Link(LinkId::Index(index)));
        self.request(call, |handle| handle.link().set(message).execute())
            .await
    }

    /// Sets the interface MTU.
    pub async fn set_link_mtu(&self, index: u32, mtu: u32) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(index).mtu(mtu).build();
        let call = Call::new(
            "set_link_mtu",
            "set the MTU of",
            Object::Link(LinkId::Index(index)),
        );
        self.request(call, |handle| handle.link().set(message).execute())
            .await
    }

    /// Adds ADDR/prefix on the interface (IPv4 or IPv6; for IPv6 with IFA_F_NODAD so it
    /// is usable at once).
    pub async fn add_addr(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<(), NetError> {
        let object = Object::Addr {
            index,
            addr,
            prefix,
        };
        check_prefix(&object, addr, prefix)?;
        self.request(Call::new("add_addr", "add", object), |handle| {
            let mut request = handle.address().add(index, addr, prefix);
            if addr.is_ipv6() {
                // Without NODAD the address stays "tentative" for a second or more and
                // binding to it fails with EADDRNOTAVAIL; a VIP on a TUN has nobody to
                // conflict with.
                let message = request.message_mut();
                message.header.flags |= AddressHeaderFlags::Nodad;
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            request.execute()
        })
        .await
    }

    /// Removes ADDR/prefix from the interface. An address that is not there is not an
    /// error.
    pub async fn del_addr(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<(), NetError> {
        let object = Object::Addr {
            index,
            addr,
            prefix,
        };
        check_prefix(&object, addr, prefix)?;
        let message = addr_message(index, addr, prefix);
        self.request(
            Call::new("del_addr", "delete", object),
            |handle| async move {
                match handle.address().del(message).execute().await {
                    Err(err) if errno(&err) == Some(libc::EADDRNOTAVAIL) => Ok(()),
                    other => other,
                }
            },
        )
        .await
    }

    pub(super) async fn link(&self, index: u32) -> Result<LinkMessage, NetError> {
        let object = Object::Link(LinkId::Index(index));
        let found = self
            .request(Call::new("link", "look up", object), |handle| async move {
                handle
                    .link()
                    .get()
                    .match_index(index)
                    .execute()
                    .try_next()
                    .await
            })
            .await?;
        found.ok_or(NetError::NoSuchInterface {
            link: LinkId::Index(index),
        })
    }

    async fn dump_addrs(&self, index: Option<u32>) -> Result<Vec<(u32, IpAddr)>, NetError> {
        let call = Call::new("dump_addrs", "list", Object::Dump("addresses"));
        let messages: Vec<AddressMessage> = self
            .request(call, |handle| {
                let mut request = handle.address().get();
                if let Some(index) = index {
                    request = request.set_link_index_filter(index);
                }
                request.execute().try_collect()
            })
            .await?;
        Ok(messages
            .iter()
            .filter_map(|msg| local_addr(msg).map(|addr| (msg.header.index, addr)))
            .collect())
    }
}

/// The host's own address in an address message. On a point-to-point link IFA_ADDRESS is
/// the peer and IFA_LOCAL ours; elsewhere they are equal or only IFA_ADDRESS is present.
fn local_addr(msg: &AddressMessage) -> Option<IpAddr> {
    let find = |want_local: bool| {
        msg.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Local(addr) if want_local => Some(*addr),
            AddressAttribute::Address(addr) if !want_local => Some(*addr),
            _ => None,
        })
    };
    find(true).or_else(|| find(false))
}

fn addr_message(index: u32, addr: IpAddr, prefix: u8) -> AddressMessage {
    match addr {
        IpAddr::V4(v4) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
            .index(index)
            .address(v4, prefix)
            .build(),
        IpAddr::V6(v6) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
            .index(index)
            .address(v6, prefix)
            .build(),
    }
}

fn check_prefix(object: &Object, addr: IpAddr, prefix: u8) -> Result<(), NetError> {
    if prefix > Family::of(addr).max_prefix() {
        return Err(NetError::Invalid {
            object: object.clone(),
            reason: "prefix length is longer than the address",
        });
    }
    Ok(())
}

/// The name of the interface with index `index` in this network namespace, for a
/// message; its index in words if it has none (it went away meanwhile).
pub fn interface_name(index: u32) -> String {
    let mut buf: [libc::c_char; libc::IF_NAMESIZE] = [0; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes, the most if_indextoname writes (the name
    // and its NUL); the pointer is valid for the call.
    let found = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if found.is_null() {
        return format!("interface index {index}");
    }
    let bytes: Vec<u8> = buf.iter().map(|&c| c as u8).collect();
    match std::ffi::CStr::from_bytes_until_nul(&bytes) {
        Ok(name) => name.to_string_lossy().into_owned(),
        Err(_) => format!("interface index {index}"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn interface_names_come_from_their_index() {
        // Every network namespace has its loopback at index 1.
        assert_eq!(interface_name(1), "lo");
        assert_eq!(
            interface_name(u32::MAX),
            format!("interface index {}", u32::MAX)
        );
    }

    #[test]
    fn point_to_point_address_reports_local_not_peer() {
        let mut msg = AddressMessage::default();
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(Ipv4Addr::new(
                10, 0, 0, 2,
            ))));
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(
                10, 0, 0, 1,
            ))));
        assert_eq!(
            local_addr(&msg),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
    }

    #[test]
    fn ipv6_address_without_local_reports_address() {
        let addr: IpAddr = "2001:db8::1".parse().unwrap();
        let mut msg = AddressMessage::default();
        msg.attributes.push(AddressAttribute::Address(addr));
        assert_eq!(local_addr(&msg), Some(addr));
    }

    #[test]
    fn ipv4_prefix_over_32_is_invalid() {
        let addr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let object = Object::Addr {
            index: 1,
            addr,
            prefix: 33,
        };
        let err = check_prefix(&object, addr, 33).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid address 10.0.0.1/33 on interface with index 1: prefix length is longer than the address"
        );
    }
}
