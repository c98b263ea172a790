//! UDP datagrams (RFC 768).
//!
//! The checksum covers a pseudo-header from the enclosing IP header, so the
//! checksum methods take the IP addresses. Over IPv4 a zero checksum means
//! the sender computed none (RFC 768); over IPv6 it is not allowed
//! (RFC 8200 §8.1). A computed checksum of zero is sent as 0xffff.

use super::{be16, checksum, Field, IpProtocol, Result, WireError};
use std::net::{Ipv4Addr, Ipv6Addr};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// Length of a UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A zero-copy view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
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
    /// `Truncated` if the buffer ends before the header or before Length;
    /// `Malformed` if Length is shorter than the header.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let udp_len = usize::from(self.length());
        if udp_len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len < udp_len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SRC_PORT])
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::DST_PORT])
    }
    /// Length: header and data, in bytes.
    #[inline]
    pub fn length(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }
    /// The data after the header, up to Length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.length())]
    }
    fn sum_with(&self, pseudo: u16) -> u16 {
        checksum::combine(&[pseudo, checksum::data(&self.buffer.as_ref()[..usize::from(self.length())])])
    }
    /// True if the checksum is correct or absent (zero).
    pub fn verify_checksum_ipv4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0
            || self.sum_with(checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, self.length())) == 0xffff
    }
    /// True if the checksum is correct; zero is never correct over IPv6.
    pub fn verify_checksum_ipv6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        self.checksum() != 0
            && self.sum_with(checksum::pseudo_header_v6(src, dst, IpProtocol::Udp, u32::from(self.length()))) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_dst_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_length(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }
    fn fill_with(&mut self, pseudo: u16) {
        self.set_checksum(0);
        let c = !self.sum_with(pseudo);
        self.set_checksum(if c == 0 { 0xffff } else { c })
    }
    /// Compute the checksum over the IPv4 pseudo-header and Length bytes.
    pub fn fill_checksum_ipv4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let len = self.length();
        self.fill_with(checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, len))
    }
    /// Compute the checksum over the IPv6 pseudo-header and Length bytes.
    pub fn fill_checksum_ipv6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        let len = u32::from(self.length());
        self.fill_with(checksum::pseudo_header_v6(src, dst, IpProtocol::Udp, len))
    }
    /// Adjust the checksum for a 16-bit word it covers (a port, or via the
    /// pseudo-header) changing from `old` to `new` (RFC 1624). A zero
    /// checksum is "none" over IPv4 and stays zero.
    pub fn update_checksum_u16(&mut self, old: u16, new: u16) {
        let c = self.checksum();
        if c != 0 {
            let c = checksum::update_u16(c, old, new);
            self.set_checksum(if c == 0 { 0xffff } else { c })
        }
    }
    /// [`Packet::update_checksum_u16`] for a 32-bit word, such as an IPv4
    /// address in the pseudo-header.
    pub fn update_checksum_u32(&mut self, old: u32, new: u32) {
        let c = self.checksum();
        if c != 0 {
            let c = checksum::update_u32(c, old, new);
            self.set_checksum(if c == 0 { 0xffff } else { c })
        }
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.length());
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }
}

/// The fields of a UDP header.
///
/// `emit` leaves the checksum zero; fill it with `fill_checksum_ipv4` or
/// `fill_checksum_ipv6` once the payload is in place. `parse` cannot check
/// the checksum without the IP addresses: use the `verify_` methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.length()) - HEADER_LEN,
        })
    }
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }
    /// Write the header with a zero checksum; panics if the buffer is
    /// shorter than `HEADER_LEN`. `payload_len` must be at most 65527.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        debug_assert!(self.buffer_len() <= usize::from(u16::MAX));
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_length(self.buffer_len() as u16);
        packet.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC4: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
    const DST4: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);

    // 10.88.0.2:40000 -> 10.88.0.1:53, 4 bytes of data (the payload of the
    // datagram in ipv4.rs's tests).
    const PACKET: [u8; 12] = [
        0x9c, 0x40, // src port 40000
        0x00, 0x35, // dst port 53
        0x00, 0x0c, // length 12
        0xb1, 0x10, // checksum over the IPv4 pseudo-header
        0xde, 0xad, 0xbe, 0xef,
    ];
    // The same datagram's checksum from fd00::2 to fd00::1.
    const CSUM_V6: u16 = 0xcbbe;

    fn v6() -> (Ipv6Addr, Ipv6Addr) {
        ("fd00::2".parse().unwrap(), "fd00::1".parse().unwrap())
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.length(), 12);
        assert_eq!(p.checksum(), 0xb110);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum_ipv4(SRC4, DST4));
        assert!(!p.verify_checksum_ipv4(SRC4, Ipv4Addr::new(10, 88, 0, 3)));
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 12];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_src_port(40000);
        p.set_dst_port(53);
        p.set_length(12);
        p.payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        p.fill_checksum_ipv4(SRC4, DST4);
        assert_eq!(buf, PACKET);

        let (s, d) = v6();
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.fill_checksum_ipv6(&s, &d);
        assert_eq!(p.checksum(), CSUM_V6);
        assert!(p.verify_checksum_ipv6(&s, &d));
    }

    #[test]
    fn repr_round_trip() {
        let repr = Repr::parse(&Packet::new_checked(&PACKET[..]).unwrap()).unwrap();
        assert_eq!(repr, Repr { src_port: 40000, dst_port: 53, payload_len: 4 });
        let mut buf = [0xa5u8; 12];
        buf[8..].copy_from_slice(&PACKET[8..]);
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut p);
        assert_eq!(p.checksum(), 0);
        p.fill_checksum_ipv4(SRC4, DST4);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn zero_checksum() {
        let mut b = PACKET;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_checksum(0);
        assert!(p.verify_checksum_ipv4(SRC4, DST4), "zero means none over IPv4");
        let (s, d) = v6();
        assert!(!p.verify_checksum_ipv6(&s, &d), "zero is invalid over IPv6");
        // NAT leaves an absent checksum absent.
        p.update_checksum_u32(u32::from(SRC4), u32::from(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(p.checksum(), 0);

        // Data whose checksum computes to 0x0000 is sent as 0xffff: pick
        // the last data word to make the sum 0xffff.
        let mut b = PACKET;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.payload_mut()[2..].fill(0);
        p.set_checksum(0);
        let rest = !p.sum_with(checksum::pseudo_header_v4(SRC4, DST4, IpProtocol::Udp, 12));
        p.payload_mut()[2..].copy_from_slice(&rest.to_be_bytes());
        p.fill_checksum_ipv4(SRC4, DST4);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum_ipv4(SRC4, DST4));
    }

    #[test]
    fn nat_incremental_update() {
        // SNAT 10.88.0.2:40000 to 192.0.2.1:61000, as a NAT gateway would.
        let new_ip = Ipv4Addr::new(192, 0, 2, 1);
        let mut b = PACKET;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(61000);
        p.update_checksum_u16(40000, 61000);
        p.update_checksum_u32(u32::from(SRC4), u32::from(new_ip));
        assert!(p.verify_checksum_ipv4(new_ip, DST4));
        let incremental = p.checksum();
        p.fill_checksum_ipv4(new_ip, DST4);
        assert_eq!(p.checksum(), incremental);
    }

    #[test]
    fn truncated() {
        for len in 0..PACKET.len() {
            assert_eq!(Packet::new_checked(&PACKET[..len]).unwrap_err(), WireError::Truncated, "len {len}");
        }
    }

    #[test]
    fn malformed() {
        for l in 0..8u8 {
            let mut b = PACKET;
            b[5] = l;
            assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), WireError::Malformed, "length {l}");
        }
        // Length 8: a datagram with no data.
        let mut b = PACKET;
        b[5] = 8;
        assert!(Packet::new_checked(&b[..]).unwrap().payload().is_empty());
    }

    #[test]
    fn matches_etherparse() {
        let (s, d) = ([172, 17, 0, 2], [172, 17, 0, 3]);
        let payload: Vec<u8> = (0..=200).collect(); // odd length
        let mut bytes = Vec::new();
        etherparse::PacketBuilder::ipv4(s, d, 64).udp(5000, 6000).write(&mut bytes, &payload).unwrap();
        let ep = etherparse::UdpHeaderSlice::from_slice(&bytes[20..]).unwrap();

        let mut p = Packet::new_checked(bytes[20..].to_vec()).unwrap();
        assert_eq!(p.src_port(), ep.source_port());
        assert_eq!(p.dst_port(), ep.destination_port());
        assert_eq!(p.length(), ep.length());
        assert_eq!(p.checksum(), ep.checksum());
        assert_eq!(p.payload(), &payload[..]);
        assert!(p.verify_checksum_ipv4(s.into(), d.into()));
        p.set_checksum(0x5a5a);
        p.fill_checksum_ipv4(s.into(), d.into());
        assert_eq!(p.checksum(), ep.checksum());

        // And over IPv6.
        let (s6, d6) = v6();
        let mut bytes = Vec::new();
        etherparse::PacketBuilder::ipv6(s6.octets(), d6.octets(), 64)
            .udp(5000, 6000)
            .write(&mut bytes, &payload)
            .unwrap();
        let p = Packet::new_checked(&bytes[40..]).unwrap();
        assert!(p.verify_checksum_ipv6(&s6, &d6));
    }
}
