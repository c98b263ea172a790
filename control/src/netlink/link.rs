//! Links: look up, list, create (veth pairs, bridges), configure (up,
//! MTU, MAC, name, master, root qdisc), move into a namespace, delete.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::abi::*;
use super::msg::{c_string, u32_at, Attrs, MsgBuilder};
use super::{check_ifname, Netlink, NetlinkError, Result};

/// One link, as `RTM_GETLINK` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`, e.g. "tun", "bridge", "veth"; `None` for `lo` and
    /// physical devices.
    pub kind: Option<String>,
    pub mtu: u32,
    /// `None` for links without an Ethernet-sized address (tun, ipip).
    pub mac: Option<[u8; 6]>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Operationally up (`IFF_RUNNING`): carrier is on and the kernel has
    /// attached the queueing discipline, so frames sent now are not dropped.
    pub running: bool,
    /// Index of the bridge or bond this link is enslaved to.
    pub master: Option<u32>,
}

impl Netlink {
    /// The index of the link called `name`.
    pub fn link_index(&mut self, name: &str) -> Result<u32> {
        self.link_get(name).map(|l| l.index)
    }

    /// The link called `name`.
    pub fn link_get(&mut self, name: &str) -> Result<LinkInfo> {
        check_ifname(name)?;
        let op = "get link";
        let msg = MsgBuilder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK)
            .header(&ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, name);
        let mut link = None;
        let res = self.exchange(op, msg, |ty, payload| {
            if ty == RTM_NEWLINK {
                link = Some(parse_link(payload).ok_or(NetlinkError::Malformed { op, what: "link" })?);
            }
            Ok(())
        });
        match res {
            Err(NetlinkError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
                Err(NetlinkError::NoSuchLink(name.to_string()))
            }
            Err(e) => Err(e),
            Ok(_) => link.ok_or(NetlinkError::Malformed { op, what: "no link in reply" }),
        }
    }

    /// All links of the namespace.
    pub fn links(&mut self) -> Result<Vec<LinkInfo>> {
        let op = "dump links";
        self.dump(op, RTM_GETLINK, RTM_NEWLINK, &ifinfomsg(0, 0, 0), |p| {
            parse_link(p).map(Some).ok_or(NetlinkError::Malformed { op, what: "link" })
        })
    }

    /// Sets the link administratively up or down (`IFF_UP`).
    pub fn link_set_up(&mut self, index: u32, up: bool) -> Result<()> {
        let flags = if up { libc::IFF_UP as u32 } else { 0 };
        let op = if up { "set link up" } else { "set link down" };
        let msg = MsgBuilder::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK).header(&ifinfomsg(
            index,
            flags,
            libc::IFF_UP as u32,
        ));
        self.ack(op, msg)
    }

    /// Sets the link's MTU.
    pub fn link_set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        self.ack("set link mtu", setlink(index).attr_u32(IFLA_MTU, mtu))
    }

    /// Sets the link's Ethernet address.
    pub fn link_set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.ack("set link address", setlink(index).attr(IFLA_ADDRESS, &mac))
    }

    /// Makes `noqueue` the link's root qdisc (`tc qdisc replace dev NAME
    /// root noqueue`), as veth devices have by default: packets go straight
    /// to the driver. Done while the link is down, it also spares the kernel
    /// the default qdiscs it would make when the link comes up: `mq` with a
    /// `pfifo_fast` per transmit queue, and a multi-queue TAP has 256 of
    /// those, about 6 MiB of kernel memory per TAP.
    pub fn link_set_noqueue(&mut self, index: u32) -> Result<()> {
        let mut h = [0u8; tcmsg::LEN];
        h[tcmsg::FAMILY] = libc::AF_UNSPEC as u8;
        h[tcmsg::INDEX..][..4].copy_from_slice(&index.to_ne_bytes());
        h[tcmsg::HANDLE..][..4].copy_from_slice(&0u32.to_ne_bytes());
        h[tcmsg::PARENT..][..4].copy_from_slice(&TC_H_ROOT.to_ne_bytes());
        let msg = MsgBuilder::new(RTM_NEWQDISC, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
            .header(&h)
            .attr_str(TCA_KIND, "noqueue");
        self.ack("set root qdisc noqueue", msg)
    }

    /// Renames the link (older kernels refuse while it is up: EBUSY).
    pub fn link_set_name(&mut self, index: u32, name: &str) -> Result<()> {
        check_ifname(name)?;
        self.ack("rename link", setlink(index).attr_str(IFLA_IFNAME, name))
    }

    /// Moves the link into the namespace open at `ns_fd` (IFLA_NET_NS_FD), renaming it to `new_name` in the same `RTM_SETLINK` request when given, so a device called "tp1234" can arrive as "eth0".
    ///
    /// Not atomic: the kernel (`do_setlink`) moves the link, then renames it
    /// inside the target; it uses `new_name` during the move itself only when
    /// the old name is taken there. So a `new_name` already taken in the
    /// target fails the request with EEXIST *after* the move: the link is then
    /// in the target namespace under its old name, and cleanup must look there.
    pub fn link_move_to_netns(&mut self, index: u32, ns_fd: BorrowedFd<'_>, new_name: Option<&str>) -> Result<()> {
        let fd = u32::try_from(ns_fd.as_raw_fd()).expect("an open fd is not negative");
        let mut msg = setlink(index).attr_u32(IFLA_NET_NS_FD, fd);
        if let Some(name) = new_name {
            check_ifname(name)?;
            msg = msg.attr_str(IFLA_IFNAME, name);
        }
        // `ns_fd` is borrowed for the whole call, so the kernel sees it open.
        self.ack("move link to namespace", msg)
    }

    /// Deletes the link; for a veth, both ends.
    pub fn link_del(&mut self, index: u32) -> Result<()> {
        let msg = MsgBuilder::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK).header(&ifinfomsg(index, 0, 0));
        self.ack("delete link", msg)
    }

    /// Creates the veth pair `name` / `peer` (`ip link add NAME type veth
    /// peer name PEER`), both down, in the socket's namespace.
    pub fn link_add_veth(&mut self, name: &str, peer: &str) -> Result<()> {
        check_ifname(name)?;
        check_ifname(peer)?;
        let msg = newlink(name).nest(IFLA_LINKINFO, |m| {
            m.attr_str(IFLA_INFO_KIND, "veth").nest(IFLA_INFO_DATA, |m| {
                m.nest(VETH_INFO_PEER, |m| m.header(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, peer))
            })
        });
        self.ack("add veth", msg)
    }

    /// Creates macvlan `name` on top of link `parent` in bridge mode, with
    /// MAC `mac`, down, in the socket's namespace (`ip link add NAME link
    /// PARENT address MAC type macvlan mode bridge`).
    pub fn link_add_macvlan(&mut self, name: &str, parent: u32, mac: [u8; 6]) -> Result<()> {
        check_ifname(name)?;
        let msg = newlink(name).attr_u32(IFLA_LINK, parent).attr(IFLA_ADDRESS, &mac).nest(IFLA_LINKINFO, |m| {
            m.attr_str(IFLA_INFO_KIND, "macvlan")
                .nest(IFLA_INFO_DATA, |m| m.attr_u32(IFLA_MACVLAN_MODE, MACVLAN_MODE_BRIDGE))
        });
        self.ack("add macvlan", msg)
    }

    /// Creates bridge `name`, down, in the socket's namespace.
    pub fn link_add_bridge(&mut self, name: &str) -> Result<()> {
        check_ifname(name)?;
        let msg = newlink(name).nest(IFLA_LINKINFO, |m| m.attr_str(IFLA_INFO_KIND, "bridge"));
        self.ack("add bridge", msg)
    }

    /// Enslaves the link to bridge `master`, or frees it with `None`.
    pub fn link_set_master(&mut self, index: u32, master: Option<u32>) -> Result<()> {
        self.ack("set link master", setlink(index).attr_u32(IFLA_MASTER, master.unwrap_or(0)))
    }
}

/// An `RTM_SETLINK` request for link `index`, to which attributes are added.
pub(super) fn setlink(index: u32) -> MsgBuilder {
    MsgBuilder::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK).header(&ifinfomsg(index, 0, 0))
}

/// An `RTM_NEWLINK` request creating link `name`, to which the
/// `IFLA_LINKINFO` is added.
pub(super) fn newlink(name: &str) -> MsgBuilder {
    MsgBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        .header(&ifinfomsg(0, 0, 0))
        .attr_str(IFLA_IFNAME, name)
}

pub(super) fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; ifinfomsg::LEN] {
    let mut h = [0; ifinfomsg::LEN];
    h[ifinfomsg::FAMILY] = libc::AF_UNSPEC as u8;
    h[ifinfomsg::INDEX..][..4].copy_from_slice(&index.to_ne_bytes());
    h[ifinfomsg::FLAGS..][..4].copy_from_slice(&flags.to_ne_bytes());
    h[ifinfomsg::CHANGE..][..4].copy_from_slice(&change.to_ne_bytes());
    h
}

/// Parses an `RTM_NEWLINK` payload (ifinfomsg + attributes).
pub(super) fn parse_link(p: &[u8]) -> Option<LinkInfo> {
    let index = u32_at(p, ifinfomsg::INDEX)?;
    let flags = u32_at(p, ifinfomsg::FLAGS)?;
    let mut link = LinkInfo {
        index,
        name: String::new(),
        kind: None,
        mtu: 0,
        mac: None,
        up: flags & libc::IFF_UP as u32 != 0,
        running: flags & libc::IFF_RUNNING as u32 != 0,
        master: None,
    };
    for (ty, v) in Attrs(p.get(ifinfomsg::LEN..)?) {
        match ty {
            IFLA_IFNAME => link.name = c_string(v)?,
            IFLA_MTU => link.mtu = u32_at(v, 0)?,
            IFLA_ADDRESS => link.mac = v.try_into().ok(),
            IFLA_MASTER => link.master = u32_at(v, 0).filter(|&m| m != 0),
            IFLA_LINKINFO => {
                link.kind = Attrs(v).find(|&(t, _)| t == IFLA_INFO_KIND).and_then(|(_, k)| c_string(k));
            }
            _ => {}
        }
    }
    (!link.name.is_empty()).then_some(link)
}
