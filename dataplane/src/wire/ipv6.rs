//! The IPv6 fixed header (RFC 8200 §3).
//!
//! Extension headers are not walked: `next_header` is the header that
//! follows the fixed 40 bytes, which for the TCP and UDP traffic tapnet
//! rewrites is the transport header. Jumbograms (RFC 2675, Payload Length
//! zero with a Hop-by-Hop option) are not supported.

use super::{be16, be32, Field, IpProtocol, Result, WireError};
use std::net::Ipv6Addr;

mod field {
    use super::Field;
    pub const VER_TC_FLOW: Field = 0..4;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Field = 8..24;
    pub const DST: Field = 24..40;
}

/// Length of the IPv6 fixed header.
pub const HEADER_LEN: usize = field::DST.end;

/// A zero-copy view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn addr_at(b: &[u8], f: Field) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[f]);
    Ipv6Addr::from(a)
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view with no checks; getters panic if the buffer is too short.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    /// A view of untrusted bytes: see [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }
    /// `Truncated` if the buffer ends before the fixed header or before
    /// Payload Length; `Malformed` if Version is not 6.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::Malformed);
        }
        if len < HEADER_LEN + usize::from(self.payload_len()) {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[inline]
    fn ver_tc_flow(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::VER_TC_FLOW])
    }
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }
    /// Traffic Class: DSCP and ECN as in IPv4 (RFC 8200 §7).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }
    /// The 20-bit Flow Label (RFC 6437).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000f_ffff
    }
    /// Payload Length: bytes after the fixed header, extension headers
    /// included.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::PAYLOAD_LEN])
    }
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        addr_at(self.buffer.as_ref(), field::SRC)
    }
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr_at(self.buffer.as_ref(), field::DST)
    }
    /// The bytes after the fixed header, up to Payload Length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_ver_tc_flow(&mut self, v: u32) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_version(&mut self, v: u8) {
        let w = self.ver_tc_flow() & 0x0fff_ffff;
        self.set_ver_tc_flow(w | (u32::from(v) << 28))
    }
    pub fn set_traffic_class(&mut self, v: u8) {
        let w = self.ver_tc_flow() & 0xf00f_ffff;
        self.set_ver_tc_flow(w | (u32::from(v) << 20))
    }
    /// Set the Flow Label; bits above the low 20 are ignored.
    pub fn set_flow_label(&mut self, v: u32) {
        let w = self.ver_tc_flow() & 0xfff0_0000;
        self.set_ver_tc_flow(w | (v & 0x000f_ffff))
    }
    pub fn set_payload_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = u8::from(p)
    }
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v
    }
    pub fn set_src_addr(&mut self, a: &Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets())
    }
    pub fn set_dst_addr(&mut self, a: &Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets())
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// The fields of an IPv6 fixed header. `emit` writes Traffic Class and Flow
/// Label as zero; `parse` does not keep them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    pub next_header: IpProtocol,
    pub payload_len: usize,
    pub hop_limit: u8,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
        })
    }
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }
    /// Write the fixed header; panics if the buffer is shorter than
    /// `HEADER_LEN`. `payload_len` must be at most 65535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        debug_assert!(self.payload_len <= usize::from(u16::MAX));
        packet.set_ver_tc_flow(6 << 28);
        packet.set_payload_len(self.payload_len as u16);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(&self.src_addr);
        packet.set_dst_addr(&self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // UDP fd00::2:40000 -> fd00::1:53 with 4 bytes of data, DSCP EF and a
    // flow label.
    const PACKET: [u8; 52] = [
        0x6b, 0x81, 0x23, 0x45, // version 6, traffic class 0xb8, flow 0x12345
        0x00, 0x0c, // payload length 12
        0x11, // next header UDP
        0x40, // hop limit 64
        0xfd, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // fd00::2
        0xfd, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // fd00::1
        0x9c, 0x40, 0x00, 0x35, 0x00, 0x0c, 0xcb, 0xbe, // UDP header
        0xde, 0xad, 0xbe, 0xef, // UDP data
    ];

    fn src() -> Ipv6Addr {
        "fd00::2".parse().unwrap()
    }
    fn dst() -> Ipv6Addr {
        "fd00::1".parse().unwrap()
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 12);
        assert_eq!(p.next_header(), IpProtocol::Udp);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), src());
        assert_eq!(p.dst_addr(), dst());
        assert_eq!(p.payload(), &PACKET[40..]);
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 52];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_version(6);
        p.set_traffic_class(0xb8);
        p.set_flow_label(0x12345);
        p.set_payload_len(12);
        p.set_next_header(IpProtocol::Udp);
        p.set_hop_limit(64);
        p.set_src_addr(&src());
        p.set_dst_addr(&dst());
        p.payload_mut().copy_from_slice(&PACKET[40..]);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn repr_round_trip() {
        let repr = Repr::parse(&Packet::new_checked(&PACKET[..]).unwrap()).unwrap();
        assert_eq!(
            repr,
            Repr { src_addr: src(), dst_addr: dst(), next_header: IpProtocol::Udp, payload_len: 12, hop_limit: 64 }
        );
        let mut buf = [0xa5u8; 52];
        buf[40..].copy_from_slice(&PACKET[40..]);
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        // Everything but the zeroed traffic class and flow label.
        assert_eq!(&buf[..4], &[0x60, 0, 0, 0]);
        assert_eq!(&buf[4..], &PACKET[4..]);
    }

    #[test]
    fn truncated() {
        for len in 0..PACKET.len() {
            assert_eq!(Packet::new_checked(&PACKET[..len]).unwrap_err(), WireError::Truncated, "len {len}");
        }
        // Trailing bytes past Payload Length are not payload.
        let mut padded = [0u8; 60];
        padded[..52].copy_from_slice(&PACKET);
        assert_eq!(Packet::new_checked(&padded[..]).unwrap().payload(), &PACKET[40..]);
    }

    #[test]
    fn malformed() {
        for v in [0x4b, 0x0b, 0xfb] {
            let mut b = PACKET;
            b[0] = v;
            assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
        }
    }

    #[test]
    fn matches_etherparse() {
        let builder = etherparse::PacketBuilder::ipv6(src().octets(), dst().octets(), 17).tcp(443, 50000, 7, 1024);
        let mut bytes = Vec::new();
        builder.write(&mut bytes, &[1, 2, 3]).unwrap();
        let ep = etherparse::Ipv6HeaderSlice::from_slice(&bytes).unwrap();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.src_addr(), ep.source_addr());
        assert_eq!(p.dst_addr(), ep.destination_addr());
        assert_eq!(p.hop_limit(), ep.hop_limit());
        assert_eq!(p.payload_len(), ep.payload_length());
        assert_eq!(u8::from(p.next_header()), ep.next_header().0);
        assert_eq!(p.traffic_class(), ep.traffic_class());
        assert_eq!(p.flow_label(), ep.flow_label().value());
    }
}
