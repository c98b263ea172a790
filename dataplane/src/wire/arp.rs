//! ARP for IPv4 over Ethernet (RFC 826).
//!
//! Only hardware type 1 (Ethernet, 6-byte addresses) with protocol type
//! 0x0800 (IPv4, 4-byte addresses) is supported: it is the only ARP a
//! container bridge carries, and it fixes every field's offset. Any other
//! combination is reported as `Malformed`.

use super::{be16, Field, MacAddr, Result, WireError};
use std::net::Ipv4Addr;

/// ARP opcode (RFC 826 "ar$op").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(v: u16) -> Self {
        match v {
            1 => Operation::Request,
            2 => Operation::Reply,
            other => Operation::Unknown(other),
        }
    }
}

impl From<Operation> for u16 {
    fn from(v: Operation) -> u16 {
        match v {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(o) => o,
        }
    }
}

/// Hardware type for Ethernet (RFC 826 "ares_hrd$Ethernet").
pub const HTYPE_ETHERNET: u16 = 1;
/// Protocol type for IPv4: the IPv4 EtherType.
pub const PTYPE_IPV4: u16 = 0x0800;

mod field {
    use super::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const HEADER_LEN: usize = field::TPA.end;

/// A zero-copy view of an Ethernet/IPv4 ARP packet.
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
    /// `Truncated` if the buffer cannot hold the 28-byte packet, `Malformed`
    /// unless it is Ethernet/IPv4 ARP with 6- and 4-byte addresses.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.hardware_type() != HTYPE_ETHERNET
            || self.protocol_type() != PTYPE_IPV4
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(WireError::Malformed);
        }
        Ok(())
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::HTYPE])
    }
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::PTYPE])
    }
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }
    #[inline]
    pub fn operation(&self) -> Operation {
        Operation::from(be16(&self.buffer.as_ref()[field::OPER]))
    }
    #[inline]
    pub fn sender_hw_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SHA])
    }
    #[inline]
    pub fn sender_proto_addr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::SPA)
    }
    #[inline]
    pub fn target_hw_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::THA])
    }
    #[inline]
    pub fn target_proto_addr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::TPA)
    }
}

fn ipv4_at(b: &[u8], f: Field) -> Ipv4Addr {
    let b = &b[f];
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_hardware_type(&mut self, v: u16) {
        self.buffer.as_mut()[field::HTYPE].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_protocol_type(&mut self, v: u16) {
        self.buffer.as_mut()[field::PTYPE].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_hardware_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v
    }
    pub fn set_protocol_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::PLEN] = v
    }
    pub fn set_operation(&mut self, op: Operation) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&u16::from(op).to_be_bytes())
    }
    pub fn set_sender_hw_addr(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&m.0)
    }
    pub fn set_sender_proto_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a.octets())
    }
    pub fn set_target_hw_addr(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&m.0)
    }
    pub fn set_target_proto_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a.octets())
    }
}

/// The fields of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub operation: Operation,
    pub sender_hw_addr: MacAddr,
    pub sender_proto_addr: Ipv4Addr,
    pub target_hw_addr: MacAddr,
    pub target_proto_addr: Ipv4Addr,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            operation: packet.operation(),
            sender_hw_addr: packet.sender_hw_addr(),
            sender_proto_addr: packet.sender_proto_addr(),
            target_hw_addr: packet.target_hw_addr(),
            target_proto_addr: packet.target_proto_addr(),
        })
    }
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    /// Write the packet; panics if the buffer is shorter than `HEADER_LEN`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_hardware_type(HTYPE_ETHERNET);
        packet.set_protocol_type(PTYPE_IPV4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_sender_hw_addr(self.sender_hw_addr);
        packet.set_sender_proto_addr(self.sender_proto_addr);
        packet.set_target_hw_addr(self.target_hw_addr);
        packet.set_target_proto_addr(self.target_proto_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who-has 10.88.0.3 tell 10.88.0.2, the payload of the ARP frame in
    // ethernet.rs's tests.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, // htype: Ethernet
        0x08, 0x00, // ptype: IPv4
        0x06, 0x04, // hlen, plen
        0x00, 0x01, // op: request
        0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, // sha
        0x0a, 0x58, 0x00, 0x02, // spa 10.88.0.2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha: unknown
        0x0a, 0x58, 0x00, 0x03, // tpa 10.88.0.3
    ];

    // 10.88.0.3 is-at 02:42:0a:58:00:03, the answer.
    const REPLY: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, //
        0x02, 0x42, 0x0a, 0x58, 0x00, 0x03, 0x0a, 0x58, 0x00, 0x03, //
        0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x0a, 0x58, 0x00, 0x02,
    ];

    fn reply_repr() -> Repr {
        Repr {
            operation: Operation::Reply,
            sender_hw_addr: MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x03]),
            sender_proto_addr: Ipv4Addr::new(10, 88, 0, 3),
            target_hw_addr: MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]),
            target_proto_addr: Ipv4Addr::new(10, 88, 0, 2),
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.hardware_type(), HTYPE_ETHERNET);
        assert_eq!(p.protocol_type(), PTYPE_IPV4);
        assert_eq!(p.operation(), Operation::Request);
        assert_eq!(p.sender_hw_addr(), MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]));
        assert_eq!(p.sender_proto_addr(), Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(p.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(p.target_proto_addr(), Ipv4Addr::new(10, 88, 0, 3));
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 28];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_hardware_type(1);
        p.set_protocol_type(0x0800);
        p.set_hardware_len(6);
        p.set_protocol_len(4);
        p.set_operation(Operation::Request);
        p.set_sender_hw_addr(MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]));
        p.set_sender_proto_addr(Ipv4Addr::new(10, 88, 0, 2));
        p.set_target_hw_addr(MacAddr::ZERO);
        p.set_target_proto_addr(Ipv4Addr::new(10, 88, 0, 3));
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn repr_round_trip() {
        let repr = Repr::parse(&Packet::new_checked(&REPLY[..]).unwrap()).unwrap();
        assert_eq!(repr, reply_repr());
        let mut buf = [0xa5u8; 28];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, REPLY);
        assert_eq!(Operation::from(9), Operation::Unknown(9));
        assert_eq!(u16::from(Operation::Unknown(9)), 9);
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(Packet::new_checked(&REQUEST[..len]).unwrap_err(), WireError::Truncated, "len {len}");
        }
        // Ethernet padding after the packet is fine.
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&REQUEST);
        assert!(Packet::new_checked(&padded[..]).is_ok());
    }

    #[test]
    fn malformed() {
        // htype, ptype (IPv6 over ARP does not exist), hlen, plen.
        for (at, v) in [(1, 6), (2, 0x86), (4, 8), (5, 16)] {
            let mut b = REQUEST;
            b[at] = v;
            assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), WireError::Malformed, "byte {at}");
        }
    }
}
