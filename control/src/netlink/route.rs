//! IPv4 routes of the main table: add one, list them.

use std::net::Ipv4Addr;

use super::abi::*;
use super::msg::{ipv4, u32_at, Attrs, MsgBuilder};
use super::{check_prefix, Netlink, NetlinkError, Result};

/// One IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteV4 {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

impl Netlink {
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
