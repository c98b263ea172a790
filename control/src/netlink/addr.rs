//! IPv4 addresses: add one to a link, list a link's.

use std::net::Ipv4Addr;

use super::abi::*;
use super::msg::{ipv4, u32_at, Attrs, MsgBuilder};
use super::{check_prefix, Netlink, NetlinkError, Result};

impl Netlink {
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
}

fn ifaddrmsg(prefix_len: u8, index: u32) -> [u8; ifaddrmsg::LEN] {
    let mut h = [0; ifaddrmsg::LEN];
    h[ifaddrmsg::FAMILY] = libc::AF_INET as u8;
    h[ifaddrmsg::PREFIXLEN] = prefix_len;
    h[ifaddrmsg::SCOPE] = RT_SCOPE_UNIVERSE;
    h[ifaddrmsg::INDEX..][..4].copy_from_slice(&index.to_ne_bytes());
    h
}
