//! A small synchronous rtnetlink client: links, IPv4 addresses and IPv4
//! routes, written over libc so that the control plane needs no async
//! runtime and never shells out to `ip`.
//!
//! A [`Netlink`] lives in the network namespace of the thread that opened
//! it, and can be used from any thread afterwards (see [`crate::netns`]).
//! Each request carries a fresh sequence number; replies with another
//! sequence number (left over from an abandoned dump) are skipped.
//!
//! Messages are built by [`MsgBuilder`] and read by offset with
//! `from_ne_bytes`: nothing here casts bytes to structs.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Kernel ABI numbers from `linux/netlink.h`, `linux/rtnetlink.h`,
/// `linux/if_link.h`, `linux/veth.h` and `linux/if_addr.h`. Spelled out here
/// because libc types them inconsistently (`c_int`, `c_ushort`, enums).
mod abi {
    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLA_HDRLEN: usize = 4;

    pub const NLMSG_NOOP: u16 = 1;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;

    pub const NLM_F_REQUEST: u16 = 0x1;
    pub const NLM_F_ACK: u16 = 0x4;
    pub const NLM_F_DUMP_INTR: u16 = 0x10;
    pub const NLM_F_DUMP: u16 = 0x300;
    pub const NLM_F_EXCL: u16 = 0x200;
    pub const NLM_F_CREATE: u16 = 0x400;

    /// `~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)`.
    pub const NLA_TYPE_MASK: u16 = 0x3fff;

    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_DELLINK: u16 = 17;
    pub const RTM_GETLINK: u16 = 18;
    pub const RTM_SETLINK: u16 = 19;
    pub const RTM_NEWADDR: u16 = 20;
    pub const RTM_GETADDR: u16 = 22;
    pub const RTM_NEWROUTE: u16 = 24;
    pub const RTM_GETROUTE: u16 = 26;

    pub const IFLA_ADDRESS: u16 = 1;
    pub const IFLA_IFNAME: u16 = 3;
    pub const IFLA_MTU: u16 = 4;
    pub const IFLA_MASTER: u16 = 10;
    pub const IFLA_LINKINFO: u16 = 18;
    pub const IFLA_NET_NS_FD: u16 = 28;
    pub const IFLA_INFO_KIND: u16 = 1;
    pub const IFLA_INFO_DATA: u16 = 2;
    pub const VETH_INFO_PEER: u16 = 1;

    pub const IFA_ADDRESS: u16 = 1;
    pub const IFA_LOCAL: u16 = 2;
    pub const IFA_BROADCAST: u16 = 4;

    pub const RTA_DST: u16 = 1;
    pub const RTA_OIF: u16 = 4;
    pub const RTA_GATEWAY: u16 = 5;
    pub const RTA_TABLE: u16 = 15;

    pub const RT_TABLE_MAIN: u8 = 254;
    pub const RTPROT_BOOT: u8 = 3;
    pub const RT_SCOPE_UNIVERSE: u8 = 0;
    pub const RT_SCOPE_LINK: u8 = 253;
    pub const RTN_UNICAST: u8 = 1;

    /// `struct nlmsghdr`.
    pub mod nlmsghdr {
        pub const LEN: usize = 0;
        pub const TYPE: usize = 4;
        pub const FLAGS: usize = 6;
        pub const SEQ: usize = 8;
    }
    /// `struct ifinfomsg`.
    pub mod ifinfomsg {
        pub const FAMILY: usize = 0;
        pub const INDEX: usize = 4;
        pub const FLAGS: usize = 8;
        pub const CHANGE: usize = 12;
        pub const LEN: usize = 16;
    }
    /// `struct ifaddrmsg`.
    pub mod ifaddrmsg {
        pub const FAMILY: usize = 0;
        pub const PREFIXLEN: usize = 1;
        pub const SCOPE: usize = 3;
        pub const INDEX: usize = 4;
        pub const LEN: usize = 8;
    }
    /// `struct rtmsg`.
    pub mod rtmsg {
        pub const FAMILY: usize = 0;
        pub const DST_LEN: usize = 1;
        pub const TABLE: usize = 4;
        pub const PROTOCOL: usize = 5;
        pub const SCOPE: usize = 6;
        pub const TYPE: usize = 7;
        pub const LEN: usize = 12;
    }
}
use abi::*;

/// Big enough for any dump datagram: the kernel caps those at 32 KiB.
const RECV_BUF_LEN: usize = 64 * 1024;
/// How often a dump that the kernel flags as inconsistent is restarted.
const DUMP_ATTEMPTS: usize = 3;

/// Errors from the rtnetlink client.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The interface name cannot be a Linux interface name.
    #[error("invalid interface name {0:?}")]
    InvalidName(String),
    /// An IPv4 prefix length above 32.
    #[error("invalid IPv4 prefix length {0}")]
    InvalidPrefix(u8),
    /// No link with this name exists in the socket's namespace.
    #[error("no such link {0:?}")]
    NoSuchLink(String),
    /// Creating the netlink socket failed.
    #[error("open netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// Sending a request failed.
    #[error("{op}: send: {source}")]
    Send { op: &'static str, source: io::Error },
    /// Receiving a reply failed.
    #[error("{op}: receive: {source}")]
    Recv { op: &'static str, source: io::Error },
    /// A reply datagram did not fit the receive buffer.
    #[error("{op}: reply of {len} bytes truncated")]
    Truncated { op: &'static str, len: usize },
    /// A reply could not be parsed.
    #[error("{op}: malformed reply: {what}")]
    Malformed { op: &'static str, what: &'static str },
    /// The kernel kept changing the table while it was being dumped.
    #[error("{op}: dump interrupted {DUMP_ATTEMPTS} times")]
    DumpInterrupted { op: &'static str },
    /// The kernel refused the request (`NLMSG_ERROR` with a non-zero errno).
    #[error("{op}: {source}")]
    Kernel { op: &'static str, source: io::Error },
}

type Result<T> = std::result::Result<T, NetlinkError>;

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
    /// Index of the bridge or bond this link is enslaved to.
    pub master: Option<u32>,
}

/// One IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteV4 {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// Checks `name` with [`dataplane::port::check_ifname`] before any syscall.
fn check_ifname(name: &str) -> Result<()> {
    dataplane::port::check_ifname(name).map_err(|e| NetlinkError::InvalidName(e.0))
}

fn check_prefix(prefix_len: u8) -> Result<()> {
    if prefix_len > 32 {
        return Err(NetlinkError::InvalidPrefix(prefix_len));
    }
    Ok(())
}

/// A `NETLINK_ROUTE` socket with its sequence counter and receive buffer.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a NETLINK_ROUTE socket in the calling thread's current network namespace.
    pub fn open() -> Result<Self> {
        // SAFETY: no pointers are involved; the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if raw < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a freshly created, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd, seq: 0, buf: vec![0; RECV_BUF_LEN] })
    }

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

    /// Adds `addr/prefix_len` to the link, with the broadcast address
    /// derived from the prefix (`ip addr add A/P brd + dev D`); /31 and /32
    /// get none (RFC 3021).
    pub fn addr_add_v4(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        check_prefix(prefix_len)?;
        let mut msg = MsgBuilder::new(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            .header(&ifaddrmsg(prefix_len, index))
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        if prefix_len < 31 {
            let brd = Ipv4Addr::from(addr.to_bits() | (u32::MAX >> prefix_len));
            msg = msg.attr(IFA_BROADCAST, &brd.octets());
        }
        self.ack("add address", msg)
    }

    /// The IPv4 addresses of link `index`.
    pub fn addrs_v4(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let op = "dump addresses";
        self.dump(op, RTM_GETADDR, RTM_NEWADDR, &ifaddrmsg(0, 0), |p| {
            let malformed = NetlinkError::Malformed { op, what: "address" };
            let (family, prefix, ifindex) =
                (p.get(ifaddrmsg::FAMILY), p.get(ifaddrmsg::PREFIXLEN), u32_at(p, ifaddrmsg::INDEX));
            let (Some(&family), Some(&prefix), Some(ifindex)) = (family, prefix, ifindex) else {
                return Err(malformed);
            };
            if family != libc::AF_INET as u8 || ifindex != index {
                return Ok(None);
            }
            let (mut local, mut address) = (None, None);
            for (ty, v) in Attrs(p.get(ifaddrmsg::LEN..).unwrap_or_default()) {
                match ty {
                    IFA_LOCAL => local = ipv4(v),
                    IFA_ADDRESS => address = ipv4(v),
                    _ => {}
                }
            }
            // IFA_ADDRESS is the peer on point-to-point links; IFA_LOCAL is ours.
            local.or(address).map(|a| Some((a, prefix))).ok_or(malformed)
        })
    }

    /// Adds an IPv4 route in the main table: `dst/prefix` (0.0.0.0/0 = default) via `gateway` and/or out of `oif`.
    pub fn route_add_v4(
        &mut self,
        dst: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        oif: Option<u32>,
    ) -> Result<()> {
        check_prefix(prefix_len)?;
        // As `ip route`: a route without a gateway is on-link.
        let scope = if gateway.is_some() { RT_SCOPE_UNIVERSE } else { RT_SCOPE_LINK };
        let mut msg = MsgBuilder::new(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            .header(&rtmsg(prefix_len, scope))
            .attr(RTA_DST, &dst.octets());
        if let Some(gw) = gateway {
            msg = msg.attr(RTA_GATEWAY, &gw.octets());
        }
        if let Some(oif) = oif {
            msg = msg.attr_u32(RTA_OIF, oif);
        }
        self.ack("add route", msg)
    }

    /// The IPv4 routes of the main table.
    pub fn routes_v4(&mut self) -> Result<Vec<RouteV4>> {
        let op = "dump routes";
        self.dump(op, RTM_GETROUTE, RTM_NEWROUTE, &rtmsg(0, 0), |p| {
            let malformed = NetlinkError::Malformed { op, what: "route" };
            let (Some(&family), Some(&prefix_len), Some(&table)) =
                (p.get(rtmsg::FAMILY), p.get(rtmsg::DST_LEN), p.get(rtmsg::TABLE))
            else {
                return Err(malformed);
            };
            if family != libc::AF_INET as u8 {
                return Ok(None);
            }
            let mut route = RouteV4 { dst: Ipv4Addr::UNSPECIFIED, prefix_len, gateway: None, oif: None };
            let mut table = u32::from(table);
            for (ty, v) in Attrs(p.get(rtmsg::LEN..).unwrap_or_default()) {
                match ty {
                    RTA_DST => route.dst = ipv4(v).ok_or(NetlinkError::Malformed { op, what: "RTA_DST" })?,
                    RTA_GATEWAY => route.gateway = ipv4(v),
                    RTA_OIF => route.oif = u32_at(v, 0),
                    // Authoritative: rtm_table only holds table ids below 256.
                    RTA_TABLE => table = u32_at(v, 0).unwrap_or(table),
                    _ => {}
                }
            }
            Ok((table == u32::from(RT_TABLE_MAIN)).then_some(route))
        })
    }

    /// Sends a request that only expects an ACK.
    fn ack(&mut self, op: &'static str, msg: MsgBuilder) -> Result<()> {
        self.exchange(op, msg, |_, _| Ok(())).map(drop)
    }

    /// Runs a dump of `ty` requests, giving each `reply_ty` message's payload
    /// to `parse`, and collects what it keeps. Restarts the dump when the
    /// kernel flags it as inconsistent (`NLM_F_DUMP_INTR`).
    fn dump<T>(
        &mut self,
        op: &'static str,
        ty: u16,
        reply_ty: u16,
        header: &[u8],
        mut parse: impl FnMut(&[u8]) -> Result<Option<T>>,
    ) -> Result<Vec<T>> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut out = Vec::new();
            let msg = MsgBuilder::new(ty, NLM_F_REQUEST | NLM_F_DUMP).header(header);
            let interrupted = self.exchange(op, msg, |t, payload| {
                if t == reply_ty {
                    out.extend(parse(payload)?);
                }
                Ok(())
            })?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(NetlinkError::DumpInterrupted { op })
    }

    /// Sends `msg` with a fresh sequence number and feeds every reply
    /// message of that sequence to `each` (type, payload) until the ACK
    /// (`NLMSG_ERROR`) or the end of a dump (`NLMSG_DONE`). Returns whether
    /// any reply was flagged `NLM_F_DUMP_INTR`.
    fn exchange(
        &mut self,
        op: &'static str,
        msg: MsgBuilder,
        mut each: impl FnMut(u16, &[u8]) -> Result<()>,
    ) -> Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(op, &msg.finish(seq))?;
        let mut interrupted = false;
        loop {
            let n = self.recv(op)?;
            let mut rest = &self.buf[..n];
            while !rest.is_empty() {
                let (m, next) = Msg::parse(rest).ok_or(NetlinkError::Malformed { op, what: "message header" })?;
                rest = next;
                if m.seq != seq {
                    continue;
                }
                interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                match m.ty {
                    NLMSG_NOOP => {}
                    // Both carry an errno (negated) first; 0 on NLMSG_ERROR is the ACK.
                    NLMSG_ERROR | NLMSG_DONE => {
                        let errno = i32_at(m.payload, 0).unwrap_or(0);
                        if errno != 0 {
                            return Err(NetlinkError::Kernel { op, source: io::Error::from_raw_os_error(-errno) });
                        }
                        return Ok(interrupted);
                    }
                    ty => each(ty, m.payload)?,
                }
            }
        }
    }

    fn send(&self, op: &'static str, req: &[u8]) -> Result<()> {
        loop {
            // SAFETY: `fd` is an open socket; `req` is a live slice of
            // `req.len()` readable bytes for the duration of the call. An
            // unconnected netlink socket sends to the kernel (port 0).
            let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(NetlinkError::Send { op, source: e });
            }
        }
    }

    /// Receives one datagram from the kernel into `buf`; returns its length.
    fn recv(&mut self, op: &'static str) -> Result<usize> {
        loop {
            // SAFETY: sockaddr_nl is plain integers, for which all zeros is valid.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `fd` is an open socket; `buf` is a live, exclusively
            // borrowed buffer of `buf.len()` writable bytes; `from` and
            // `from_len` are live locals and `from_len` holds `from`'s size.
            // With MSG_TRUNC the kernel writes at most `buf.len()` bytes and
            // returns the datagram's full length.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                    (&raw mut from).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::Recv { op, source: e });
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(NetlinkError::Truncated { op, len: n });
            }
            // Only the kernel (port 0) answers requests; drop anything else.
            if from.nl_pid == 0 {
                return Ok(n);
            }
        }
    }
}

/// An `RTM_SETLINK` request for link `index`, to which attributes are added.
fn setlink(index: u32) -> MsgBuilder {
    MsgBuilder::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK).header(&ifinfomsg(index, 0, 0))
}

/// An `RTM_NEWLINK` request creating link `name`, to which the
/// `IFLA_LINKINFO` is added.
fn newlink(name: &str) -> MsgBuilder {
    MsgBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        .header(&ifinfomsg(0, 0, 0))
        .attr_str(IFLA_IFNAME, name)
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; ifinfomsg::LEN] {
    let mut h = [0; ifinfomsg::LEN];
    h[ifinfomsg::FAMILY] = libc::AF_UNSPEC as u8;
    h[ifinfomsg::INDEX..][..4].copy_from_slice(&index.to_ne_bytes());
    h[ifinfomsg::FLAGS..][..4].copy_from_slice(&flags.to_ne_bytes());
    h[ifinfomsg::CHANGE..][..4].copy_from_slice(&change.to_ne_bytes());
    h
}

fn ifaddrmsg(prefix_len: u8, index: u32) -> [u8; ifaddrmsg::LEN] {
    let mut h = [0; ifaddrmsg::LEN];
    h[ifaddrmsg::FAMILY] = libc::AF_INET as u8;
    h[ifaddrmsg::PREFIXLEN] = prefix_len;
    h[ifaddrmsg::SCOPE] = RT_SCOPE_UNIVERSE;
    h[ifaddrmsg::INDEX..][..4].copy_from_slice(&index.to_ne_bytes());
    h
}

/// A main-table unicast `rtmsg`.
fn rtmsg(dst_len: u8, scope: u8) -> [u8; rtmsg::LEN] {
    let mut h = [0; rtmsg::LEN];
    h[rtmsg::FAMILY] = libc::AF_INET as u8;
    h[rtmsg::DST_LEN] = dst_len;
    h[rtmsg::TABLE] = RT_TABLE_MAIN;
    h[rtmsg::PROTOCOL] = RTPROT_BOOT;
    h[rtmsg::SCOPE] = scope;
    h[rtmsg::TYPE] = RTN_UNICAST;
    h
}

/// Parses an `RTM_NEWLINK` payload (ifinfomsg + attributes).
fn parse_link(p: &[u8]) -> Option<LinkInfo> {
    let index = u32_at(p, ifinfomsg::INDEX)?;
    let flags = u32_at(p, ifinfomsg::FLAGS)?;
    let mut link = LinkInfo {
        index,
        name: String::new(),
        kind: None,
        mtu: 0,
        mac: None,
        up: flags & libc::IFF_UP as u32 != 0,
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

/// A NUL-terminated (or unterminated) UTF-8 attribute value.
fn c_string(v: &[u8]) -> Option<String> {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8(v[..end].to_vec()).ok()
}

fn ipv4(v: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from)
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], off: usize) -> Option<i32> {
    u32_at(b, off).map(|v| v as i32)
}

/// Netlink messages and attributes are padded to 4 bytes.
const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one netlink request: the header, a family header, then
/// attributes, each padded to 4 bytes; nests write their length last.
struct MsgBuilder {
    buf: Vec<u8>,
}

impl MsgBuilder {
    fn new(ty: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.resize(NLMSG_HDRLEN, 0);
        buf[nlmsghdr::TYPE..][..2].copy_from_slice(&ty.to_ne_bytes());
        buf[nlmsghdr::FLAGS..][..2].copy_from_slice(&flags.to_ne_bytes());
        Self { buf }
    }

    /// Appends a family header (ifinfomsg, ifaddrmsg, rtmsg), padded.
    fn header(mut self, h: &[u8]) -> Self {
        self.buf.extend_from_slice(h);
        self.pad();
        self
    }

    fn attr(mut self, ty: u16, value: &[u8]) -> Self {
        let len = u16::try_from(NLA_HDRLEN + value.len()).expect("netlink attributes built here are small");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
        self
    }

    fn attr_u32(self, ty: u16, v: u32) -> Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute.
    fn attr_str(self, ty: u16, s: &str) -> Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v)
    }

    /// A nested attribute whose contents `f` appends. `NLA_F_NESTED` is not
    /// set, as by iproute2: the link attributes used here are parsed by the
    /// kernel's non-strict ("deprecated") parser, and `VETH_INFO_PEER` is
    /// not even typed as nested.
    fn nest(mut self, ty: u16, f: impl FnOnce(Self) -> Self) -> Self {
        let start = self.buf.len();
        self = self.attr(ty, &[]);
        self = f(self);
        let len = u16::try_from(self.buf.len() - start).expect("netlink attributes built here are small");
        self.buf[start..][..2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn pad(&mut self) {
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// The finished message, with its length and sequence number.
    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).expect("netlink messages built here are small");
        self.buf[nlmsghdr::LEN..][..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[nlmsghdr::SEQ..][..4].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One received netlink message.
struct Msg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The first message of `buf` and what follows it, or `None` if the
    /// header is truncated or its length is out of bounds.
    fn parse(buf: &'a [u8]) -> Option<(Self, &'a [u8])> {
        let len = u32_at(buf, nlmsghdr::LEN)? as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let msg = Msg {
            ty: u16_at(buf, nlmsghdr::TYPE)?,
            flags: u16_at(buf, nlmsghdr::FLAGS)?,
            seq: u32_at(buf, nlmsghdr::SEQ)?,
            payload: &buf[NLMSG_HDRLEN..len],
        };
        Some((msg, buf.get(align4(len)..).unwrap_or_default()))
    }
}

/// Iterates over `(type, value)` attributes; stops at the first truncated
/// one. The type has the nested/byte-order flag bits masked off.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let len = u16_at(self.0, 0)? as usize;
        let ty = u16_at(self.0, 2)? & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.0.len() {
            self.0 = &[];
            return None;
        }
        let value = &self.0[NLA_HDRLEN..len];
        self.0 = self.0.get(align4(len)..).unwrap_or_default();
        Some((ty, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns;
    use std::os::fd::AsFd;
    use std::path::PathBuf;

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    #[test]
    fn builder_pads_attributes_and_sets_lengths() {
        let msg = MsgBuilder::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK)
            .header(&ifinfomsg(7, 1, 1))
            .attr_str(IFLA_IFNAME, "eth0")
            .attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1])
            .attr_u32(IFLA_MTU, 1400)
            .finish(42);
        let mut want = Vec::new();
        want.extend(64u32.to_ne_bytes());
        want.extend(ne16(RTM_SETLINK));
        want.extend(ne16(NLM_F_REQUEST | NLM_F_ACK));
        want.extend(42u32.to_ne_bytes());
        want.extend(0u32.to_ne_bytes()); // port id
        want.extend([0, 0]); // family, pad
        want.extend(ne16(0)); // ifi_type
        want.extend(7u32.to_ne_bytes());
        want.extend(1u32.to_ne_bytes());
        want.extend(1u32.to_ne_bytes());
        want.extend(ne16(9)); // 4 + "eth0\0"
        want.extend(ne16(IFLA_IFNAME));
        want.extend(*b"eth0\0\0\0\0"); // 3 bytes of padding
        want.extend(ne16(10));
        want.extend(ne16(IFLA_ADDRESS));
        want.extend([2, 0, 0, 0, 0, 1, 0, 0]);
        want.extend(ne16(8));
        want.extend(ne16(IFLA_MTU));
        want.extend(1400u32.to_ne_bytes());
        assert_eq!(msg, want);
    }

    #[test]
    fn builder_nests_veth_peer() {
        let msg = newlink("a").nest(IFLA_LINKINFO, |m| {
            m.attr_str(IFLA_INFO_KIND, "veth").nest(IFLA_INFO_DATA, |m| {
                m.nest(VETH_INFO_PEER, |m| m.header(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, "b"))
            })
        });
        let msg = msg.finish(1);
        assert_eq!(u32_at(&msg, 0), Some(msg.len() as u32));
        assert_eq!(msg.len() % 4, 0);
        let mut top = Attrs(&msg[NLMSG_HDRLEN + ifinfomsg::LEN..]);
        assert_eq!(top.next(), Some((IFLA_IFNAME, &b"a\0"[..])));
        let (ty, linkinfo) = top.next().unwrap();
        assert_eq!((ty, linkinfo.len()), (IFLA_LINKINFO, 12 + 4 + 4 + 16 + 8));
        assert_eq!(top.next(), None);
        let mut li = Attrs(linkinfo);
        assert_eq!(li.next(), Some((IFLA_INFO_KIND, &b"veth\0"[..])));
        let (ty, data) = li.next().unwrap();
        assert_eq!(ty, IFLA_INFO_DATA);
        let (ty, peer) = Attrs(data).next().unwrap();
        assert_eq!(ty, VETH_INFO_PEER);
        assert_eq!(&peer[..ifinfomsg::LEN], &[0; 16]);
        // "b\0" makes a 6-byte attribute, padded to 8; a nest's length covers
        // its last child's padding, as iproute2's do.
        let name = [ne16(6).as_slice(), &ne16(IFLA_IFNAME), b"b\0", &[0, 0]].concat();
        assert_eq!(&peer[ifinfomsg::LEN..], name);
    }

    #[test]
    fn parsers_reject_truncated_input() {
        // Attribute claims 8 bytes, only 6 present: iteration stops.
        let attrs = [ne16(8).as_slice(), &ne16(IFLA_MTU), &[1, 2]].concat();
        assert_eq!(Attrs(&attrs).count(), 0);
        // Flag bits (NLA_F_NESTED) are masked off the type.
        let nested = [ne16(4).as_slice(), &ne16(IFLA_LINKINFO | 0x8000)].concat();
        assert_eq!(Attrs(&nested).next(), Some((IFLA_LINKINFO, &[][..])));
        // Message header claims more than the datagram holds.
        let mut m = MsgBuilder::new(NLMSG_DONE, 0).finish(3);
        assert!(Msg::parse(&m).is_some());
        m[0] = 32;
        assert!(Msg::parse(&m).is_none());
        assert!(Msg::parse(&m[..10]).is_none());
        assert!(parse_link(&[0; 8]).is_none());
    }

    #[test]
    fn ifname_errors() {
        // The rules are dataplane::port's; this checks the mapping.
        check_ifname("eth0").unwrap();
        assert!(
            matches!(check_ifname("tp123456789abcde"), Err(NetlinkError::InvalidName(n)) if n == "tp123456789abcde")
        );
    }

    /// A named namespace that is deleted when dropped, even by a panic.
    struct TestNs {
        name: String,
        path: PathBuf,
    }

    impl TestNs {
        /// `None` (test skipped) when not root.
        fn new(tag: &str) -> Option<Self> {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipped: needs root");
                return None;
            }
            let name = format!("tnl{}{}", std::process::id(), tag);
            let path = netns::create(&name).unwrap();
            Some(Self { name, path })
        }

        /// A netlink socket inside this namespace, usable from the test thread.
        fn netlink(&self) -> Netlink {
            netns::run_in(&self.path, Netlink::open).unwrap().unwrap()
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = netns::delete(&self.name);
        }
    }

    fn kernel_errno(e: &NetlinkError) -> Option<i32> {
        match e {
            NetlinkError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    #[test]
    fn loopback_up() {
        let Some(ns) = TestNs::new("lo") else { return };
        let mut nl = ns.netlink();
        let lo = nl.link_get("lo").unwrap();
        assert_eq!((lo.index, lo.up, lo.kind.as_deref(), lo.mac), (1, false, None, Some([0; 6])));
        nl.link_set_up(lo.index, true).unwrap();
        assert!(nl.link_get("lo").unwrap().up);
        assert_eq!(nl.link_index("lo").unwrap(), 1);
        // A new namespace has nothing but lo: the dump shows exactly it.
        let links = nl.links().unwrap();
        assert_eq!(links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["lo"]);
        assert!(nl.addrs_v4(1).unwrap().contains(&(Ipv4Addr::LOCALHOST, 8)));
    }

    #[test]
    fn veth_move_configure_address_route() {
        let (Some(a), Some(b)) = (TestNs::new("va"), TestNs::new("vb")) else { return };
        let mut na = a.netlink();
        let mut nb = b.netlink();
        na.link_add_veth("tp1234", "tp1234p").unwrap();
        let err = na.link_add_veth("tp1234", "tp1234q").unwrap_err();
        assert!(
            matches!(&err, NetlinkError::Kernel { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err}"
        );
        let host = na.link_get("tp1234").unwrap();
        let peer = na.link_get("tp1234p").unwrap();
        assert_eq!((host.kind.as_deref(), peer.kind.as_deref()), (Some("veth"), Some("veth")));

        let b_fd = netns::open(&b.path).unwrap();
        na.link_move_to_netns(peer.index, b_fd.as_fd(), Some("eth0")).unwrap();
        assert!(matches!(na.link_index("tp1234p"), Err(NetlinkError::NoSuchLink(n)) if n == "tp1234p"));
        let eth0 = nb.link_index("eth0").unwrap();

        let mac = [0x02, 0x54, 0, 0x12, 0x34, 0x56];
        nb.link_set_mtu(eth0, 1400).unwrap();
        nb.link_set_mac(eth0, mac).unwrap();
        nb.link_set_up(eth0, true).unwrap();
        na.link_set_up(host.index, true).unwrap();
        let got = nb.link_get("eth0").unwrap();
        assert_eq!((got.mtu, got.mac, got.up, got.kind.as_deref()), (1400, Some(mac), true, Some("veth")));
        assert!(nb.links().unwrap().iter().any(|l| l.name == "eth0" && l.index == eth0));

        let addr = Ipv4Addr::new(10, 99, 0, 2);
        nb.addr_add_v4(eth0, addr, 24).unwrap();
        let dup = nb.addr_add_v4(eth0, addr, 24).unwrap_err();
        assert_eq!(kernel_errno(&dup), Some(libc::EEXIST));
        assert_eq!(nb.addrs_v4(eth0).unwrap(), [(addr, 24)]);

        let gw = Ipv4Addr::new(10, 99, 0, 1);
        nb.route_add_v4(Ipv4Addr::UNSPECIFIED, 0, Some(gw), None).unwrap();
        let routes = nb.routes_v4().unwrap();
        let default = RouteV4 { dst: Ipv4Addr::UNSPECIFIED, prefix_len: 0, gateway: Some(gw), oif: Some(eth0) };
        assert!(routes.contains(&default), "{routes:?}");
        let connected = RouteV4 { dst: Ipv4Addr::new(10, 99, 0, 0), prefix_len: 24, gateway: None, oif: Some(eth0) };
        assert!(routes.contains(&connected), "{routes:?}");

        nb.link_set_up(eth0, false).unwrap(); // older kernels rename only down links
        nb.link_set_name(eth0, "eth1").unwrap();
        assert_eq!(nb.link_index("eth1").unwrap(), eth0);

        // A taken new name fails the rename after the move: the link has
        // arrived under its old name (see link_move_to_netns).
        na.link_add_veth("tpx0", "tpx1").unwrap();
        let x1 = na.link_index("tpx1").unwrap();
        let taken = na.link_move_to_netns(x1, b_fd.as_fd(), Some("eth1")).unwrap_err();
        assert_eq!(kernel_errno(&taken), Some(libc::EEXIST));
        assert!(matches!(na.link_index("tpx1"), Err(NetlinkError::NoSuchLink(_))));
        assert!(nb.link_get("tpx1").is_ok());

        // Deleting one end deletes the pair, across namespaces.
        na.link_del(host.index).unwrap();
        assert!(matches!(na.link_index("tp1234"), Err(NetlinkError::NoSuchLink(_))));
        assert!(matches!(nb.link_index("eth1"), Err(NetlinkError::NoSuchLink(_))));
    }

    #[test]
    fn bridge_master() {
        let Some(ns) = TestNs::new("br") else { return };
        let mut nl = ns.netlink();
        nl.link_add_bridge("tpbr0").unwrap();
        let br = nl.link_get("tpbr0").unwrap();
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        assert_eq!(kernel_errno(&nl.link_add_bridge("tpbr0").unwrap_err()), Some(libc::EEXIST));
        nl.link_add_veth("tpv0", "tpv1").unwrap();
        let port = nl.link_index("tpv0").unwrap();
        nl.link_set_master(port, Some(br.index)).unwrap();
        assert_eq!(nl.link_get("tpv0").unwrap().master, Some(br.index));
        nl.link_set_master(port, None).unwrap();
        assert_eq!(nl.link_get("tpv0").unwrap().master, None);
        nl.link_del(br.index).unwrap();
        assert!(matches!(nl.link_get("tpbr0"), Err(NetlinkError::NoSuchLink(_))));
    }

    #[test]
    fn dump_spans_datagrams() {
        let Some(ns) = TestNs::new("dm") else { return };
        let mut nl = ns.netlink();
        // Bridge link messages are ~2 KiB: 40 of them need several datagrams.
        let names: Vec<String> = (0..40).map(|i| format!("tpd{i}")).collect();
        for n in &names {
            nl.link_add_bridge(n).unwrap();
        }
        let links = nl.links().unwrap();
        assert_eq!(links.len(), 41);
        assert!(names.iter().all(|n| links.iter().any(|l| &l.name == n && l.kind.as_deref() == Some("bridge"))));
    }

    #[test]
    fn errors() {
        let Some(ns) = TestNs::new("er") else { return };
        let mut nl = ns.netlink();
        assert!(matches!(nl.link_index("nope0"), Err(NetlinkError::NoSuchLink(n)) if n == "nope0"));
        let err = nl.link_set_up(9999, true).unwrap_err();
        assert_eq!(err.to_string(), "set link up: No such device (os error 19)");
        assert!(matches!(nl.link_add_bridge("a/b"), Err(NetlinkError::InvalidName(_))));
        assert!(matches!(nl.link_add_veth("ok0", "tp123456789abcde"), Err(NetlinkError::InvalidName(_))));
        assert!(matches!(nl.addr_add_v4(1, Ipv4Addr::LOCALHOST, 33), Err(NetlinkError::InvalidPrefix(33))));
        assert_eq!(kernel_errno(&nl.link_del(9999).unwrap_err()), Some(libc::ENODEV));
        // The socket is still in sync after errors.
        assert_eq!(nl.link_index("lo").unwrap(), 1);
    }
}
