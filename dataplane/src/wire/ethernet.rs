//! Ethernet II frames (IEEE 802.3) and MAC addresses.

use super::{Field, Result, WireError};
use core::fmt;
use core::str::FromStr;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    pub fn from_bytes(b: &[u8]) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[..6]);
        MacAddr(m)
    }
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }
    /// Group bit (I/G) set: multicast or broadcast.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
    pub const fn is_broadcast(&self) -> bool {
        let b = self.0;
        b[0] == 0xff && b[1] == 0xff && b[2] == 0xff && b[3] == 0xff && b[4] == 0xff && b[5] == 0xff
    }
    pub const fn is_zero(&self) -> bool {
        let b = self.0;
        b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0 && b[4] == 0 && b[5] == 0
    }
    /// A unicast address that may be learned as a frame's source.
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }
    /// IEEE 802.1D reserved link-local group (01:80:c2:00:00:0X): STP, LACP,
    /// 802.1X. A bridge consumes these and never forwards them.
    pub const fn is_link_local(&self) -> bool {
        let b = self.0;
        b[0] == 0x01 && b[1] == 0x80 && b[2] == 0xc2 && b[3] == 0 && b[4] == 0 && b[5] & 0xf0 == 0
    }
    /// The address as the low 48 bits of a u64 (big-endian order of octets).
    #[inline]
    pub const fn to_u64(&self) -> u64 {
        let b = self.0;
        (b[0] as u64) << 40
            | (b[1] as u64) << 32
            | (b[2] as u64) << 24
            | (b[3] as u64) << 16
            | (b[4] as u64) << 8
            | b[5] as u64
    }
    #[inline]
    pub const fn from_u64(v: u64) -> MacAddr {
        MacAddr([(v >> 40) as u8, (v >> 32) as u8, (v >> 24) as u8, (v >> 16) as u8, (v >> 8) as u8, v as u8])
    }
    /// A locally administered unicast address from 40 bits of caller entropy
    /// (first octet 0x02 | bits, as in cloud-hypervisor's `local_random`).
    pub fn local_from_seed(seed: u64) -> MacAddr {
        let mut m = MacAddr::from_u64(seed & 0xffff_ffff_ffff);
        m.0[0] = (m.0[0] & 0xfc) | 0x02;
        m
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error returned by `MacAddr::from_str`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets like 02:42:ac:11:00:02")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for o in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// EtherType values tapnet cares about (IEEE 802 numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtherType {
    Ipv4,
    Arp,
    Vlan,
    Ipv6,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(v: EtherType) -> u16 {
        match v {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(o) => o,
        }
    }
}

mod field {
    use super::Field;
    pub const DST: Field = 0..6;
    pub const SRC: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// Length of an Ethernet II header without VLAN tag.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A zero-copy view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[inline]
    pub fn dst(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DST])
    }
    #[inline]
    pub fn src(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SRC])
    }
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType::from(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m.0)
    }
    pub fn set_src(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m.0)
    }
    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(t).to_be_bytes())
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// The fields of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: MacAddr,
    pub dst_addr: MacAddr,
    pub ethertype: EtherType,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Repr> {
        frame.check_len()?;
        Ok(Repr { src_addr: frame.src(), dst_addr: frame.dst(), ethertype: frame.ethertype() })
    }
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }
    /// Write the header; panics if the buffer is shorter than `HEADER_LEN`.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst(self.dst_addr);
        frame.set_src(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request (who-has 10.88.0.3 tell 10.88.0.2) as captured on a TAP.
    const ARP_FRAME: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00,
        0x06, 0x04, 0x00, 0x01, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x0a, 0x58, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x0a, 0x58, 0x00, 0x03,
    ];

    #[test]
    fn deconstruct() {
        let f = Frame::new_checked(&ARP_FRAME[..]).unwrap();
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert_eq!(f.src(), MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]));
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.payload().len(), 28);
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 42];
        let mut f = Frame::new_unchecked(&mut buf[..]);
        f.set_dst(MacAddr::BROADCAST);
        f.set_src(MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]));
        f.set_ethertype(EtherType::Arp);
        f.payload_mut().copy_from_slice(&ARP_FRAME[14..]);
        assert_eq!(buf, ARP_FRAME);
    }

    #[test]
    fn repr_round_trip() {
        let repr = Repr::parse(&Frame::new_checked(&ARP_FRAME[..]).unwrap()).unwrap();
        assert_eq!(
            repr,
            Repr {
                src_addr: MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]),
                dst_addr: MacAddr::BROADCAST,
                ethertype: EtherType::Arp
            }
        );
        let mut buf = [0xa5u8; 42];
        buf[14..].copy_from_slice(&ARP_FRAME[14..]);
        repr.emit(&mut Frame::new_unchecked(&mut buf[..]));
        assert_eq!(buf, ARP_FRAME);
    }

    #[test]
    fn truncated() {
        assert_eq!(Frame::new_checked(&ARP_FRAME[..13]).unwrap_err(), WireError::Truncated);
        assert!(Frame::new_checked(&ARP_FRAME[..14]).is_ok());
    }

    #[test]
    fn mac_classes_and_text() {
        let m: MacAddr = "02:42:ac:11:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
        assert!(m.is_unicast());
        assert!(MacAddr::BROADCAST.is_multicast() && MacAddr::BROADCAST.is_broadcast());
        assert!("01:80:c2:00:00:00".parse::<MacAddr>().unwrap().is_link_local());
        assert!(!"01:80:c2:00:00:10".parse::<MacAddr>().unwrap().is_link_local());
        assert!(!MacAddr::ZERO.is_unicast());
        for bad in ["", "02:42:ac:11:00", "02:42:ac:11:00:02:03", "zz:42:ac:11:00:02", "2:42:ac:11:00:02"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        let l = MacAddr::local_from_seed(0xffff_ffff_ffff);
        assert!(l.is_unicast() && l.0[0] & 0x02 != 0);
    }
}
