//! Kernel ABI numbers from `linux/netlink.h`, `linux/rtnetlink.h`,
//! `linux/if_link.h`, `linux/veth.h` and `linux/if_addr.h`. Spelled out here
//! because libc types them inconsistently (`c_int`, `c_ushort`, enums).

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
pub const RTM_NEWQDISC: u16 = 36;
/// `NLM_F_REPLACE`: replace what exists (with `NLM_F_CREATE`: or create).
pub const NLM_F_REPLACE: u16 = 0x100;
/// `TCA_KIND`: a qdisc's kind, e.g. "noqueue".
pub const TCA_KIND: u16 = 1;
/// `TC_H_ROOT`: the parent of a device's root qdisc.
pub const TC_H_ROOT: u32 = 0xffff_ffff;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;
pub const IFLA_MASTER: u16 = 10;
pub const IFLA_LINKINFO: u16 = 18;
pub const IFLA_NET_NS_FD: u16 = 28;
pub const IFLA_INFO_KIND: u16 = 1;
pub const IFLA_INFO_DATA: u16 = 2;
/// `IFLA_LINK`: the lower device of a stacked link (a macvlan's parent).
pub const IFLA_LINK: u16 = 5;
/// `IFLA_MACVLAN_MODE` inside a macvlan's `IFLA_INFO_DATA`.
pub const IFLA_MACVLAN_MODE: u16 = 1;
/// `MACVLAN_MODE_BRIDGE`: children of one parent reach each other.
pub const MACVLAN_MODE_BRIDGE: u32 = 4;
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
/// `struct tcmsg`.
pub mod tcmsg {
    pub const FAMILY: usize = 0;
    pub const INDEX: usize = 4;
    pub const HANDLE: usize = 8;
    pub const PARENT: usize = 12;
    pub const LEN: usize = 20;
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
