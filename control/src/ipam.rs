//! IPv4 address management for a network: parse the subnet, choose the
//! gateway, hand out addresses, and derive a container's default MAC from
//! its address.
//!
//! The network address, the broadcast address and the gateway are never
//! handed out; neither is an address already taken. Allocation returns the
//! lowest free address, as Docker's default IPAM does. A subnet that
//! overlaps a range which cannot hold hosts ([`RESERVED`]) is refused.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use dataplane::wire::MacAddr;

use crate::api::cut;

/// Errors from parsing subnets and allocating addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Not of the form A.B.C.D/N.
    #[error("invalid subnet {0:?}: expected CIDR like 10.88.0.0/24")]
    BadCidr(String),
    /// Host bits are set in the subnet.
    #[error("invalid subnet {given}: it should be {canonical}")]
    NotCanonical { given: String, canonical: String },
    /// The prefix leaves no room for a gateway and one container.
    #[error("subnet {0} is too small: the prefix must be /30 or shorter")]
    TooSmall(String),
    /// Not an IPv4 address.
    #[error("invalid IPv4 address {0:?}")]
    BadAddr(String),
    /// The address is outside the network's subnet.
    #[error("address {addr} is not in subnet {subnet}")]
    OutsideSubnet { addr: Ipv4Addr, subnet: Subnet },
    /// The subnet's own network or broadcast address.
    #[error("address {0} is the subnet's network or broadcast address")]
    Reserved(Ipv4Addr),
    /// The gateway address.
    #[error("address {0} is the network's gateway")]
    Gateway(Ipv4Addr),
    /// Someone already has this address.
    #[error("address {0} is already in use")]
    Taken(Ipv4Addr),
    /// Every address is in use.
    #[error("no free address left in subnet {0}")]
    Exhausted(Subnet),
    /// The range to allocate from is not inside the subnet.
    #[error("ip range {range} is not inside subnet {subnet}")]
    RangeOutside { range: Subnet, subnet: Subnet },
    /// The address is outside the range this host allocates from.
    #[error("address {addr} is outside this host's ip range {range}")]
    OutsideRange { addr: Ipv4Addr, range: Subnet },
    /// The subnet overlaps a range that cannot hold containers.
    #[error("subnet {subnet} overlaps {range} ({what}), which cannot hold containers")]
    ReservedRange { subnet: Subnet, range: Subnet, what: &'static str },
}

const fn range(a: u8, prefix: u8) -> Subnet {
    Subnet { addr: Ipv4Addr::new(a, if a == 169 { 254 } else { 0 }, 0, 0), prefix }
}

/// The IPv4 ranges no network may overlap (RFC 6890): their addresses are
/// not hosts' addresses, so a container given one cannot be reached (and
/// the kernel refuses some of them outright).
pub const RESERVED: [(Subnet, &str); 5] = [
    (range(0, 8), "\"this network\", RFC 1122 section 3.2.1.3"),
    (range(127, 8), "loopback, RFC 1122 section 3.2.1.3"),
    (range(169, 16), "link-local, RFC 3927"),
    (range(224, 4), "multicast, RFC 5771"),
    (range(240, 4), "reserved, RFC 1112 section 4"),
];

/// An IPv4 subnet in canonical form (no host bits set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }
    pub fn network(&self) -> u32 {
        u32::from(self.addr)
    }
    pub fn broadcast(&self) -> u32 {
        self.network() | !self.mask()
    }
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == self.network()
    }
    pub fn overlaps(&self, o: &Subnet) -> bool {
        let m = self.mask() & o.mask();
        self.network() & m == o.network() & m
    }
    /// First usable host address, the default gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network() + 1)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IpamError::BadCidr(cut(s));
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let sn = Subnet { addr, prefix };
        let canon = Subnet { addr: Ipv4Addr::from(u32::from(addr) & sn.mask()), prefix };
        if canon.addr != addr {
            return Err(IpamError::NotCanonical { given: cut(s), canonical: canon.to_string() });
        }
        if prefix > 30 {
            return Err(IpamError::TooSmall(cut(s)));
        }
        Ok(canon)
    }
}

/// Refuse a subnet that overlaps one of the [`RESERVED`] ranges.
pub fn check_usable(subnet: &Subnet) -> Result<(), IpamError> {
    match RESERVED.iter().find(|(r, _)| r.overlaps(subnet)) {
        Some(&(range, what)) => Err(IpamError::ReservedRange { subnet: *subnet, range, what }),
        None => Ok(()),
    }
}

/// Parse a dotted-quad IPv4 address with a one-line error.
pub fn parse_addr(s: &str) -> Result<Ipv4Addr, IpamError> {
    s.parse().map_err(|_| IpamError::BadAddr(cut(s)))
}

/// The default MAC of the container at `addr`, Docker's scheme: 02:42 (a
/// locally administered unicast prefix) followed by the IPv4 address.
pub fn mac_for(addr: Ipv4Addr) -> MacAddr {
    let o = addr.octets();
    MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
}

/// The addresses of one network.
#[derive(Debug, Clone)]
pub struct Ipam {
    subnet: Subnet,
    gateway: Ipv4Addr,
    /// The part of the subnet this host hands out (an overlay's
    /// `--ip-range`: each host its own, so two hosts never give out the
    /// same address). `None`: the whole subnet.
    range: Option<Subnet>,
    taken: BTreeSet<u32>,
}

impl Ipam {
    /// A pool for `subnet` with `gateway` (default: the first host).
    pub fn new(subnet: Subnet, gateway: Option<Ipv4Addr>) -> Result<Ipam, IpamError> {
        Self::with_range(subnet, gateway, None)
    }

    /// A pool for `subnet` that hands out addresses of `range` only.
    pub fn with_range(subnet: Subnet, gateway: Option<Ipv4Addr>, range: Option<Subnet>) -> Result<Ipam, IpamError> {
        check_usable(&subnet)?;
        if let Some(r) = range {
            if r.prefix < subnet.prefix || !subnet.contains(r.addr) {
                return Err(IpamError::RangeOutside { range: r, subnet });
            }
        }
        let gw = gateway.unwrap_or_else(|| subnet.first_host());
        let ipam = Ipam { subnet, gateway: gw, range, taken: BTreeSet::new() };
        ipam.check_host(gw)?;
        Ok(ipam)
    }
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }
    pub fn range(&self) -> Option<Subnet> {
        self.range
    }

    fn check_host(&self, a: Ipv4Addr) -> Result<(), IpamError> {
        if !self.subnet.contains(a) {
            return Err(IpamError::OutsideSubnet { addr: a, subnet: self.subnet });
        }
        let v = u32::from(a);
        if v == self.subnet.network() || v == self.subnet.broadcast() {
            return Err(IpamError::Reserved(a));
        }
        Ok(())
    }

    /// Check that `a` could be reserved, without reserving it.
    pub fn check(&self, a: Ipv4Addr) -> Result<(), IpamError> {
        self.check_host(a)?;
        if let Some(r) = self.range {
            if !r.contains(a) {
                return Err(IpamError::OutsideRange { addr: a, range: r });
            }
        }
        if a == self.gateway {
            return Err(IpamError::Gateway(a));
        }
        if self.taken.contains(&u32::from(a)) {
            return Err(IpamError::Taken(a));
        }
        Ok(())
    }

    /// Reserve a specific address (`--ip`).
    pub fn reserve(&mut self, a: Ipv4Addr) -> Result<Ipv4Addr, IpamError> {
        self.check(a)?;
        self.taken.insert(u32::from(a));
        Ok(a)
    }

    /// The lowest free address.
    pub fn next_free(&self) -> Result<Ipv4Addr, IpamError> {
        let gw = u32::from(self.gateway);
        // A range's own first and last addresses are skipped too, so that
        // `10.42.1.0/24` hands out 10.42.1.1 to 10.42.1.254, as a subnet
        // of its own would.
        let r = self.range.unwrap_or(self.subnet);
        let (lo, hi) = (r.network() + 1, r.broadcast() - 1);
        (lo..=hi).find(|v| *v != gw && !self.taken.contains(v)).map(Ipv4Addr::from).ok_or(IpamError::Exhausted(r))
    }

    /// Reserve the lowest free address.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let a = self.next_free()?;
        self.taken.insert(u32::from(a));
        Ok(a)
    }

    /// Give an address back.
    pub fn release(&mut self, a: Ipv4Addr) {
        self.taken.remove(&u32::from(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sn(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn parse_subnets() {
        assert_eq!(sn("10.88.0.0/24"), Subnet { addr: Ipv4Addr::new(10, 88, 0, 0), prefix: 24 });
        for bad in ["10.88.0.0", "10.88.0.0/", "10.88.0.0/33", "10.88.0/24", "x/24", "10.88.0.0/+4", "10.88.0.0/024"] {
            assert!(matches!(bad.parse::<Subnet>(), Err(IpamError::BadCidr(_))), "{bad}");
        }
        assert_eq!(
            "10.88.0.1/24".parse::<Subnet>(),
            Err(IpamError::NotCanonical { given: "10.88.0.1/24".into(), canonical: "10.88.0.0/24".into() })
        );
        assert!(matches!("10.88.0.0/31".parse::<Subnet>(), Err(IpamError::TooSmall(_))));
        assert!(sn("10.0.0.0/8").overlaps(&sn("10.88.0.0/24")));
        assert!(!sn("10.88.0.0/24").overlaps(&sn("10.88.1.0/24")));
    }

    #[test]
    fn allocation_skips_reserved_and_taken() {
        let mut ipam = Ipam::new(sn("10.88.0.0/29"), None).unwrap();
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(10, 88, 0, 2));
        ipam.reserve(Ipv4Addr::new(10, 88, 0, 3)).unwrap();
        assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(10, 88, 0, 4));
        assert_eq!(ipam.reserve(Ipv4Addr::new(10, 88, 0, 3)), Err(IpamError::Taken(Ipv4Addr::new(10, 88, 0, 3))));
        assert_eq!(ipam.reserve(Ipv4Addr::new(10, 88, 0, 1)), Err(IpamError::Gateway(Ipv4Addr::new(10, 88, 0, 1))));
        assert_eq!(ipam.reserve(Ipv4Addr::new(10, 88, 0, 0)), Err(IpamError::Reserved(Ipv4Addr::new(10, 88, 0, 0))));
        assert_eq!(ipam.reserve(Ipv4Addr::new(10, 88, 0, 7)), Err(IpamError::Reserved(Ipv4Addr::new(10, 88, 0, 7))));
        assert!(matches!(ipam.reserve(Ipv4Addr::new(10, 88, 1, 2)), Err(IpamError::OutsideSubnet { .. })));
        assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(10, 88, 0, 5));
        assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(10, 88, 0, 6));
        assert!(matches!(ipam.allocate(), Err(IpamError::Exhausted(_))));
        ipam.release(Ipv4Addr::new(10, 88, 0, 3));
        assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(10, 88, 0, 3));
    }

    #[test]
    fn reserved_ranges_are_refused() {
        for (s, range) in [
            ("0.0.0.0/8", "0.0.0.0/8"),
            ("0.1.2.0/24", "0.0.0.0/8"),
            ("127.1.0.0/24", "127.0.0.0/8"),
            ("169.254.0.0/16", "169.254.0.0/16"),
            ("169.254.7.0/24", "169.254.0.0/16"),
            ("169.0.0.0/8", "169.254.0.0/16"),
            ("224.1.0.0/24", "224.0.0.0/4"),
            ("239.255.255.0/24", "224.0.0.0/4"),
            ("240.0.0.0/24", "240.0.0.0/4"),
            ("255.255.255.0/24", "240.0.0.0/4"),
            ("192.0.0.0/2", "224.0.0.0/4"),
            ("0.0.0.0/0", "0.0.0.0/8"),
        ] {
            match Ipam::new(sn(s), None) {
                Err(IpamError::ReservedRange { subnet, range: r, .. }) => {
                    assert_eq!((subnet, r), (sn(s), sn(range)), "{s}")
                }
                other => panic!("{s}: {other:?}"),
            }
        }
        let e = Ipam::new(sn("224.1.0.0/24"), None).unwrap_err().to_string();
        assert_eq!(e, "subnet 224.1.0.0/24 overlaps 224.0.0.0/4 (multicast, RFC 5771), which cannot hold containers");
        // Their neighbours are fine.
        for s in ["1.0.0.0/8", "126.0.0.0/8", "128.0.0.0/8", "169.253.0.0/16", "169.255.0.0/16", "223.255.255.0/24"] {
            assert!(Ipam::new(sn(s), None).is_ok(), "{s}");
        }
    }

    #[test]
    fn long_input_is_cut_in_errors() {
        let long = "1".repeat(100_000);
        for e in [long.parse::<Subnet>().unwrap_err(), parse_addr(&long).unwrap_err()] {
            assert!(e.to_string().len() < 200, "{}", e.to_string().len());
        }
    }

    #[test]
    fn docker_macs() {
        assert_eq!(mac_for(Ipv4Addr::new(172, 17, 0, 2)).to_string(), "02:42:ac:11:00:02");
        assert!(mac_for(Ipv4Addr::new(10, 88, 0, 255)).is_unicast());
    }

    #[test]
    fn ranges_hand_out_their_part_only() {
        let mut a = Ipam::with_range(sn("10.42.0.0/16"), None, Some(sn("10.42.1.0/24"))).unwrap();
        assert_eq!(a.gateway(), Ipv4Addr::new(10, 42, 0, 1));
        assert_eq!(a.allocate().unwrap(), Ipv4Addr::new(10, 42, 1, 1));
        assert_eq!(a.allocate().unwrap(), Ipv4Addr::new(10, 42, 1, 2));
        assert!(matches!(a.reserve(Ipv4Addr::new(10, 42, 2, 5)), Err(IpamError::OutsideRange { .. })));
        assert!(a.reserve(Ipv4Addr::new(10, 42, 1, 77)).is_ok());
        let mut b = Ipam::with_range(sn("10.42.0.0/16"), None, Some(sn("10.42.2.0/24"))).unwrap();
        assert_eq!(b.allocate().unwrap(), Ipv4Addr::new(10, 42, 2, 1));
        // The range must be inside the subnet; the last addresses of the
        // subnet stay reserved.
        assert!(Ipam::with_range(sn("10.42.0.0/16"), None, Some(sn("10.43.0.0/24"))).is_err());
        assert!(Ipam::with_range(sn("10.42.0.0/24"), None, Some(sn("10.42.0.0/16"))).is_err());
        let mut c = Ipam::with_range(sn("10.42.0.0/24"), None, Some(sn("10.42.0.248/29"))).unwrap();
        for last in 249..=254 {
            assert_eq!(c.allocate().unwrap(), Ipv4Addr::new(10, 42, 0, last));
        }
        assert!(c.allocate().is_err());
    }

    #[test]
    fn custom_gateway() {
        let ipam = Ipam::new(sn("10.88.0.0/24"), Some(Ipv4Addr::new(10, 88, 0, 254))).unwrap();
        assert_eq!(ipam.next_free().unwrap(), Ipv4Addr::new(10, 88, 0, 1));
        assert!(Ipam::new(sn("10.88.0.0/24"), Some(Ipv4Addr::new(10, 88, 0, 255))).is_err());
        assert!(Ipam::new(sn("10.88.0.0/24"), Some(Ipv4Addr::new(10, 89, 0, 1))).is_err());
    }
}
