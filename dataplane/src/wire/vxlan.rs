//! VXLAN headers (RFC 7348 §5), the 8 bytes between the outer UDP header
//! and the inner Ethernet frame.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//!
//! The I flag must be set for a valid VNI; the reserved bits must be sent as
//! zero and are ignored on receipt (§5). Extensions that give them meaning
//! (VXLAN-GPE, GBP) are not supported.

use super::{be32, Field, Result, WireError};
use core::fmt;

/// IANA-assigned VXLAN UDP destination port (RFC 7348 §5).
pub const UDP_PORT: u16 = 4789;

/// The I flag: the VNI is valid.
const FLAG_I: u8 = 0x08;

/// A 24-bit VXLAN Network Identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Vni(u32);

impl Vni {
    pub const MAX: Vni = Vni(0x00ff_ffff);

    /// `None` if `v` does not fit in 24 bits.
    pub const fn new(v: u32) -> Option<Vni> {
        if v <= Self::MAX.0 {
            Some(Vni(v))
        } else {
            None
        }
    }
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vni({})", self.0)
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

mod field {
    use super::Field;
    pub const FLAGS: usize = 0;
    pub const RESERVED1: Field = 1..4;
    /// VNI in the top 24 bits, Reserved in the low 8.
    pub const VNI_RESERVED2: Field = 4..8;
}

/// Length of a VXLAN header.
pub const HEADER_LEN: usize = field::VNI_RESERVED2.end;

/// A zero-copy view of a VXLAN header and the frame it carries.
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
    /// `Truncated` if the buffer cannot hold the header; `Malformed` if the
    /// I flag is clear, since the VNI is then meaningless.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.flags() & FLAG_I == 0 {
            return Err(WireError::Malformed);
        }
        Ok(())
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// The whole flags byte, reserved bits included.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    #[inline]
    pub fn vni(&self) -> Vni {
        Vni(be32(&self.buffer.as_ref()[field::VNI_RESERVED2]) >> 8)
    }
    /// The encapsulated Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Write the I flag and zero every reserved bit (RFC 7348 §5).
    pub fn clear_and_set_flags(&mut self) {
        let b = self.buffer.as_mut();
        b[field::FLAGS] = FLAG_I;
        b[field::RESERVED1].fill(0);
        b[field::VNI_RESERVED2.end - 1] = 0;
    }
    pub fn set_vni(&mut self, vni: Vni) {
        let b = &mut self.buffer.as_mut()[field::VNI_RESERVED2];
        b[..3].copy_from_slice(&vni.0.to_be_bytes()[1..])
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The fields of a VXLAN header: only the VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub vni: Vni,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr { vni: packet.vni() })
    }
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }
    /// Write the header; panics if the buffer is shorter than `HEADER_LEN`.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.clear_and_set_flags();
        packet.set_vni(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::{self, EtherType, MacAddr};

    // VNI 0x123456 carrying the start of an inner ARP broadcast frame, as
    // seen after the outer UDP header on port 4789.
    const PACKET: [u8; 22] = [
        0x08, // flags: I
        0x00, 0x00, 0x00, // reserved
        0x12, 0x34, 0x56, // VNI
        0x00, // reserved
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // inner dst
        0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, // inner src
        0x08, 0x06, // inner EtherType ARP
    ];

    fn vni() -> Vni {
        Vni::new(0x12_3456).unwrap()
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.flags(), 0x08);
        assert_eq!(p.vni(), vni());
        let inner = ethernet::Frame::new_checked(p.payload()).unwrap();
        assert_eq!(inner.dst(), MacAddr::BROADCAST);
        assert_eq!(inner.ethertype(), EtherType::Arp);
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 22];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.clear_and_set_flags();
        p.set_vni(vni());
        p.payload_mut().copy_from_slice(&PACKET[8..]);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn repr_round_trip() {
        let repr = Repr::parse(&Packet::new_checked(&PACKET[..]).unwrap()).unwrap();
        assert_eq!(repr, Repr { vni: vni() });
        let mut buf = [0xa5u8; 22];
        buf[8..].copy_from_slice(&PACKET[8..]);
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, PACKET);
        for v in [0, 1, 0xff_ffff] {
            let repr = Repr { vni: Vni::new(v).unwrap() };
            let mut buf = [0xa5u8; 8];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            assert_eq!(Repr::parse(&Packet::new_unchecked(&buf[..])).unwrap(), repr);
        }
    }

    #[test]
    fn vni_range() {
        assert_eq!(Vni::new(0x100_0000), None);
        assert_eq!(Vni::MAX.get(), 0xff_ffff);
        assert_eq!(vni().to_string(), "1193046");
    }

    #[test]
    fn reserved_bits_are_ignored() {
        let mut b = PACKET;
        b[0] = 0xff;
        b[1] = 0xff;
        b[7] = 0xff;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.vni(), vni());
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(Packet::new_checked(&PACKET[..len]).unwrap_err(), WireError::Truncated, "len {len}");
        }
        assert!(Packet::new_checked(&PACKET[..HEADER_LEN]).unwrap().payload().is_empty());
    }

    #[test]
    fn malformed_without_i_flag() {
        for flags in [0x00, 0xf7] {
            let mut b = PACKET;
            b[0] = flags;
            assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
        }
    }
}
