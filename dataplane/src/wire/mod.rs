//! Zero-copy views over packet bytes, one file per protocol.
//!
//! Every view follows the same shape (after smoltcp): `Packet<T: AsRef<[u8]>>`
//! wraps a buffer, a private `field` module lists each field's byte range,
//! `new_checked` validates the length of untrusted input, getters need only
//! `AsRef<[u8]>`, setters need `AsMut<[u8]>`. Nothing here allocates or
//! performs I/O, so every function can run on the per-packet path.
//!
//! Untrusted bytes always go through `new_checked`: once it returns `Ok`,
//! no getter of that view can panic. `new_unchecked` is for buffers the
//! caller has sized itself (building packets); a getter on a buffer too
//! short for its field panics on the slice index.
//!
//! Each protocol also has a small `Repr`, a plain struct of the header's
//! meaningful fields with `parse` and `emit`, so tests and benches can build
//! packets without byte fiddling.
//!
//! Supported: Ethernet II, ARP (Ethernet/IPv4), IPv4 (options skipped),
//! IPv6 fixed header (extension headers are not walked), TCP (options
//! skipped), UDP, ICMPv4, VXLAN, GRE (RFC 2784 + RFC 2890 key/sequence),
//! the virtio-net header. Not supported: 802.1Q tag parsing, IPv4
//! reassembly, ICMPv6, GRE version 1 (PPTP) and RFC 1701 routing.

// The views read fields by offset and never need `unsafe`; this covers every
// protocol file below.
#![forbid(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod dns;
pub mod ethernet;
pub mod gre;
pub mod icmpv4;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vnet;
pub mod vxlan;

#[cfg(test)]
mod robust;

pub use arp::Packet as ArpPacket;
pub use ethernet::{EtherType, Frame as EthernetFrame, MacAddr};
pub use gre::Packet as GrePacket;
pub use icmpv4::Packet as Icmpv4Packet;
pub use ipv4::Packet as Ipv4Packet;
pub use ipv6::Packet as Ipv6Packet;
pub use tcp::Packet as TcpPacket;
pub use udp::Packet as UdpPacket;
pub use vnet::{VnetHdr, VNET_HDR_LEN};
pub use vxlan::{Packet as VxlanPacket, Vni};

/// Why a byte buffer could not be viewed as a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header it must hold.
    #[error("buffer too short for the header")]
    Truncated,
    /// A header field holds a value the protocol does not allow.
    #[error("malformed header field")]
    Malformed,
}

pub type Result<T> = core::result::Result<T, WireError>;

/// A byte range inside a header.
pub(crate) type Field = core::ops::Range<usize>;

/// IP protocol numbers (IPv4 Protocol, IPv6 Next Header), from the IANA
/// "Assigned Internet Protocol Numbers" registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    Icmp,
    Tcp,
    Udp,
    Gre,
    Icmpv6,
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        match v {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            47 => IpProtocol::Gre,
            58 => IpProtocol::Icmpv6,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(v: IpProtocol) -> u8 {
        match v {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Gre => 47,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Unknown(o) => o,
        }
    }
}

/// Big-endian u16 from the first two bytes of `b`.
#[inline]
pub(crate) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Big-endian u32 from the first four bytes of `b`.
#[inline]
pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_protocol_round_trips_every_value() {
        for v in 0..=u8::MAX {
            assert_eq!(u8::from(IpProtocol::from(v)), v);
        }
        assert_eq!(IpProtocol::from(47), IpProtocol::Gre);
        assert_eq!(IpProtocol::from(200), IpProtocol::Unknown(200));
    }
}
