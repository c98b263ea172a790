//! What the control plane tells the router: each network's gateway and
//! policy, the uplink, the local container endpoints and the published
//! ports. Built off the per-packet path (it may allocate) and handed to the
//! workers as immutable snapshots behind an `Arc`; a change is a new
//! snapshot, swapped in between batches.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use hashbrown::{HashMap, HashSet};

use crate::port::PortId;
use crate::stats::NetId;
use crate::wire::MacAddr;

/// An IPv4 subnet, as address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Subnet {
        let prefix = prefix.min(32);
        Subnet { addr: Ipv4Addr::from(u32::from(addr) & Self::mask_of(prefix)), prefix }
    }
    #[inline]
    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix.min(32)))
        }
    }
    #[inline]
    pub fn mask(&self) -> u32 {
        Self::mask_of(self.prefix)
    }
    #[inline]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }
    /// The subnet's broadcast address.
    #[inline]
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
}

/// A network's gateway: an address on the network that the dataplane owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayConfig {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub subnet: Subnet,
}

/// One network's routing policy.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub gateway: GatewayConfig,
    /// The network's MTU (every container interface on it has this MTU).
    pub mtu: u32,
    /// Containers on the network may talk to each other (`--icc`, default
    /// true). When false only the gateway is reachable.
    pub icc: bool,
    /// Traffic leaving through the uplink takes the uplink's address
    /// (`--masquerade`, default true). When false it leaves untranslated.
    pub masquerade: bool,
    /// No way out at all (`--internal`): the gateway still answers ARP,
    /// ping and DNS, but routes nothing.
    pub internal: bool,
    /// The names the gateway's DNS answers with: the containers on this
    /// network.
    pub dns: std::sync::Arc<crate::dns::DnsTable>,
    /// For an overlay network: how it reaches the other hosts.
    pub overlay: Option<OverlayConfig>,
}

/// An overlay network's tunnel: its encapsulation and id, the tunnel port
/// whose sockets carry it, and the inner MTU the underlay leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayConfig {
    pub encap: crate::overlay::tunnel::Encap,
    /// The VNI (VXLAN) or key (GRE).
    pub id: u32,
    /// The dataplane port of the tunnel's sockets.
    pub tunnel: PortId,
    /// VXLAN: the UDP destination port (4789 by default).
    pub dst_port: u16,
    /// The largest inner IPv4 packet that fits the underlay once
    /// encapsulated (underlay MTU − overhead).
    pub path_mtu: u32,
    /// Clamp the MSS of TCP SYNs entering the overlay to fit `path_mtu`.
    pub mss_clamp: bool,
}

/// The uplink: an interface the dataplane sends and receives on itself,
/// whose IPv4 address it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkConfig {
    /// The dataplane port of the uplink.
    pub port: PortId,
    pub ip: Ipv4Addr,
    pub subnet: Subnet,
    pub mac: MacAddr,
    /// Next hop for everything off the uplink's subnet.
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
}

/// A local container interface, by its IPv4 address, with what the router
/// needs to deliver a frame to it: the Ethernet addresses and the MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub net: NetId,
    pub mac: MacAddr,
    pub port: PortId,
    /// The MAC of the gateway of the endpoint's network (the source of
    /// every routed frame delivered to it).
    pub gateway_mac: MacAddr,
    pub mtu: u32,
    /// On a network without masquerade (and not internal): the outside
    /// may send replies straight to this address.
    pub routable: bool,
}

/// IP protocols NAT translates by port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    Tcp,
    Udp,
}

/// Where a published host port leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Shown by `tapnet conntrack` (the control plane's container tag).
    pub tag: u32,
}

/// Everything the router needs beyond each network's own config.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub uplink: Option<UplinkConfig>,
    /// Source ports masqueraded flows may use on the uplink address.
    pub snat_ports: RangeInclusive<u16>,
    /// Every local container interface, by address (subnets never overlap,
    /// so an address names one interface).
    pub endpoints: HashMap<Ipv4Addr, Endpoint>,
    /// Published ports on the uplink address: `(protocol, host port)`.
    /// Filled by [`RouterConfig::publish`], which keeps `targets` in step.
    pub published: HashMap<(L4, u16), Published>,
    /// Where published ports lead: `(protocol, container address, port)`
    /// (a packet from one is a reply to a DNAT flow, steered as such).
    pub targets: HashSet<(L4, Ipv4Addr, u16)>,
    /// Every network's subnet, to refuse routing between networks.
    pub subnets: Vec<(Subnet, NetId)>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            uplink: None,
            snat_ports: DEFAULT_SNAT_PORTS,
            endpoints: HashMap::new(),
            published: HashMap::new(),
            targets: HashSet::new(),
            subnets: Vec::new(),
        }
    }
}

/// Default source ports for masquerading: the Linux ephemeral range,
/// which is also where netfilter's MASQUERADE picks from when it must.
pub const DEFAULT_SNAT_PORTS: RangeInclusive<u16> = 32768..=60999;

impl RouterConfig {
    /// Publish host port `port` of protocol `l4` on the uplink address.
    pub fn publish(&mut self, l4: L4, port: u16, to: Published) {
        self.published.insert((l4, port), to);
        self.targets.insert((l4, to.ip, to.port));
    }

    /// Whether `ip:port` is where a published port of `proto` leads.
    #[inline]
    pub fn is_target(&self, proto: crate::nat::Proto, ip: Ipv4Addr, port: u16) -> bool {
        let l4 = match proto {
            crate::nat::Proto::Tcp => L4::Tcp,
            crate::nat::Proto::Udp => L4::Udp,
            crate::nat::Proto::Icmp => return false,
        };
        !self.targets.is_empty() && self.targets.contains(&(l4, ip, port))
    }

    /// The network whose subnet holds `ip`, if any.
    #[inline]
    pub fn network_of(&self, ip: Ipv4Addr) -> Option<NetId> {
        self.subnets.iter().find(|(s, _)| s.contains(ip)).map(|&(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let s = Subnet::new(Ipv4Addr::new(10, 88, 0, 7), 24);
        assert_eq!(s.addr, Ipv4Addr::new(10, 88, 0, 0));
        assert!(s.contains(Ipv4Addr::new(10, 88, 0, 255)));
        assert!(!s.contains(Ipv4Addr::new(10, 88, 1, 0)));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 88, 0, 255));
        let all = Subnet::new(Ipv4Addr::new(1, 2, 3, 4), 0);
        assert!(all.contains(Ipv4Addr::new(200, 1, 1, 1)));
        assert_eq!(Subnet::new(Ipv4Addr::new(1, 2, 3, 4), 32).broadcast(), Ipv4Addr::new(1, 2, 3, 4));
    }
}
