//! GRE headers (RFC 2784) with the key and sequence number extensions
//! (RFC 2890 §2).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |C| |K|S| Reserved0       | Ver |         Protocol Type         |
//! |      Checksum (optional)      |       Reserved1 (Optional)    |
//! |                         Key (optional)                        |
//! |                 Sequence Number (Optional)                    |
//! ```
//!
//! The optional words appear in that order, each only when its bit is set,
//! so the header is 4 to 16 bytes long. Only version 0 is supported: version
//! 1 is PPTP's enhanced GRE (RFC 2637). The view must span exactly the GRE
//! packet (the IP payload), since the checksum covers the payload too.

use super::{be16, be32, checksum, Field, Result, WireError};

/// GRE Protocol Type: an EtherType (RFC 2784 §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// 0x6558, Transparent Ethernet Bridging (RFC 1701 §3.3): a whole
    /// Ethernet frame, as carried by Linux `gretap`.
    TransparentEthernet,
    Ipv4,
    Ipv6,
    Unknown(u16),
}

impl From<u16> for Protocol {
    fn from(v: u16) -> Self {
        match v {
            0x6558 => Protocol::TransparentEthernet,
            0x0800 => Protocol::Ipv4,
            0x86dd => Protocol::Ipv6,
            other => Protocol::Unknown(other),
        }
    }
}

impl From<Protocol> for u16 {
    fn from(v: Protocol) -> u16 {
        match v {
            Protocol::TransparentEthernet => 0x6558,
            Protocol::Ipv4 => 0x0800,
            Protocol::Ipv6 => 0x86dd,
            Protocol::Unknown(o) => o,
        }
    }
}

mod field {
    use super::Field;
    pub const FLAGS_VER: Field = 0..2;
    pub const PROTOCOL: Field = 2..4;
    /// Checksum and Reserved1, present with C.
    pub const CHECKSUM: Field = 4..6;
    pub const RESERVED1: Field = 6..8;
}

/// Length of the GRE header with no optional field.
pub const HEADER_LEN: usize = field::PROTOCOL.end;
/// Length of the GRE header with checksum, key and sequence number.
pub const MAX_HEADER_LEN: usize = HEADER_LEN + 12;

/// Checksum Present (RFC 2784 §2.2).
const FLAG_C: u16 = 0x8000;
/// Key Present (RFC 2890 §2).
const FLAG_K: u16 = 0x2000;
/// Sequence Number Present (RFC 2890 §2).
const FLAG_S: u16 = 0x1000;
/// Bits 1, 4 and 5: RFC 1701's routing, strict source route and recursion
/// bits. RFC 2784 §2.3 requires a receiver to discard a packet with any of
/// bits 1-5 set; bits 2 and 3 are K and S since RFC 2890. Bits 6-12 must be
/// ignored on receipt.
const MUST_BE_ZERO: u16 = 0x4c00;
const VERSION_MASK: u16 = 0x0007;

/// A zero-copy view of a GRE packet.
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
    /// `Malformed` if the version is not 0 or a bit RFC 2784 §2.3 forbids is
    /// set; `Truncated` if the buffer ends before the header, optional
    /// fields included.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 0 || self.flags_ver() & MUST_BE_ZERO != 0 {
            return Err(WireError::Malformed);
        }
        if len < self.header_len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[inline]
    fn flags_ver(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLAGS_VER])
    }
    #[inline]
    pub fn has_checksum(&self) -> bool {
        self.flags_ver() & FLAG_C != 0
    }
    #[inline]
    pub fn has_key(&self) -> bool {
        self.flags_ver() & FLAG_K != 0
    }
    #[inline]
    pub fn has_seq_number(&self) -> bool {
        self.flags_ver() & FLAG_S != 0
    }
    #[inline]
    pub fn version(&self) -> u8 {
        (self.flags_ver() & VERSION_MASK) as u8
    }
    #[inline]
    pub fn protocol(&self) -> Protocol {
        Protocol::from(be16(&self.buffer.as_ref()[field::PROTOCOL]))
    }
    /// Offset of the Key field, if K is set.
    #[inline]
    fn key_at(&self) -> usize {
        HEADER_LEN + if self.has_checksum() { 4 } else { 0 }
    }
    /// Offset of the Sequence Number field, if S is set.
    #[inline]
    fn seq_at(&self) -> usize {
        self.key_at() + if self.has_key() { 4 } else { 0 }
    }
    /// Header length in bytes, from the C, K and S bits.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.seq_at() + if self.has_seq_number() { 4 } else { 0 }
    }
    #[inline]
    pub fn checksum(&self) -> Option<u16> {
        self.has_checksum().then(|| be16(&self.buffer.as_ref()[field::CHECKSUM]))
    }
    #[inline]
    pub fn key(&self) -> Option<u32> {
        let at = self.key_at();
        self.has_key().then(|| be32(&self.buffer.as_ref()[at..at + 4]))
    }
    #[inline]
    pub fn seq_number(&self) -> Option<u32> {
        let at = self.seq_at();
        self.has_seq_number().then(|| be32(&self.buffer.as_ref()[at..at + 4]))
    }
    /// True if the checksum over header and payload (RFC 2784 §2.5) is
    /// correct, or if there is none.
    pub fn verify_checksum(&self) -> bool {
        !self.has_checksum() || checksum::data(self.buffer.as_ref()) == 0xffff
    }
    /// The encapsulated packet or frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Write the first word's flags: which optional fields are present,
    /// version 0, every reserved bit zero. Set them before the fields,
    /// whose offsets depend on them.
    pub fn set_flags(&mut self, checksum: bool, key: bool, seq_number: bool) {
        let mut w = 0;
        if checksum {
            w |= FLAG_C;
        }
        if key {
            w |= FLAG_K;
        }
        if seq_number {
            w |= FLAG_S;
        }
        self.buffer.as_mut()[field::FLAGS_VER].copy_from_slice(&w.to_be_bytes())
    }
    pub fn set_protocol(&mut self, p: Protocol) {
        self.buffer.as_mut()[field::PROTOCOL].copy_from_slice(&u16::from(p).to_be_bytes())
    }
    /// Write the checksum and zero Reserved1. Panics if C is clear.
    pub fn set_checksum(&mut self, v: u16) {
        assert!(self.has_checksum(), "GRE checksum written without the C bit");
        let b = self.buffer.as_mut();
        b[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
        b[field::RESERVED1].fill(0);
    }
    /// Panics if K is clear.
    pub fn set_key(&mut self, v: u32) {
        assert!(self.has_key(), "GRE key written without the K bit");
        let at = self.key_at();
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&v.to_be_bytes())
    }
    /// Panics if S is clear.
    pub fn set_seq_number(&mut self, v: u32) {
        assert!(self.has_seq_number(), "GRE sequence number written without the S bit");
        let at = self.seq_at();
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&v.to_be_bytes())
    }
    /// Compute the checksum over the whole buffer if C is set; a no-op
    /// otherwise.
    pub fn fill_checksum(&mut self) {
        if self.has_checksum() {
            self.set_checksum(0);
            let c = !checksum::data(self.buffer.as_ref());
            self.set_checksum(c)
        }
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

/// The fields of a GRE header.
///
/// With `checksum` set, `emit` fills it over the whole buffer, so write the
/// payload first. `parse` rejects a wrong checksum as `Malformed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub protocol: Protocol,
    pub checksum: bool,
    pub key: Option<u32>,
    pub seq_number: Option<u32>,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(WireError::Malformed);
        }
        Ok(Repr {
            protocol: packet.protocol(),
            checksum: packet.has_checksum(),
            key: packet.key(),
            seq_number: packet.seq_number(),
        })
    }
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
            + if self.checksum { 4 } else { 0 }
            + if self.key.is_some() { 4 } else { 0 }
            + if self.seq_number.is_some() { 4 } else { 0 }
    }
    /// Write the header; panics if the buffer is shorter than `header_len`.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_flags(self.checksum, self.key.is_some(), self.seq_number.is_some());
        packet.set_protocol(self.protocol);
        if let Some(k) = self.key {
            packet.set_key(k);
        }
        if let Some(s) = self.seq_number {
            packet.set_seq_number(s);
        }
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::{self, EtherType, MacAddr};

    // The start of an inner ARP broadcast frame.
    const INNER: [u8; 14] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x08, 0x06];

    // Linux `gretap` with no options: a 4-byte header.
    const PLAIN: [u8; 18] = [
        0x00, 0x00, // no flags, version 0
        0x65, 0x58, // Transparent Ethernet Bridging
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x08, 0x06,
    ];

    // `gretap ... key 42 oseq ocsum`: every optional field.
    const FULL: [u8; 30] = [
        0xb0, 0x00, // C, K, S; version 0
        0x65, 0x58, // Transparent Ethernet Bridging
        0xd5, 0xd3, // checksum
        0x00, 0x00, // reserved1
        0x00, 0x00, 0x00, 0x2a, // key 42
        0x00, 0x00, 0x00, 0x07, // sequence number 7
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x08, 0x06,
    ];

    // Keyed IPv4-in-GRE (`ip tunnel add ... mode gre key 123456`), header only.
    const KEYED_IPV4: [u8; 8] = [0x20, 0x00, 0x08, 0x00, 0x00, 0x01, 0xe2, 0x40];

    fn full_repr() -> Repr {
        Repr { protocol: Protocol::TransparentEthernet, checksum: true, key: Some(42), seq_number: Some(7) }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PLAIN[..]).unwrap();
        assert!(!p.has_checksum() && !p.has_key() && !p.has_seq_number());
        assert_eq!(p.version(), 0);
        assert_eq!(p.header_len(), 4);
        assert_eq!(p.protocol(), Protocol::TransparentEthernet);
        assert_eq!((p.checksum(), p.key(), p.seq_number()), (None, None, None));
        assert!(p.verify_checksum());
        let inner = ethernet::Frame::new_checked(p.payload()).unwrap();
        assert_eq!(inner.src(), MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]));
        assert_eq!(inner.ethertype(), EtherType::Arp);

        let p = Packet::new_checked(&FULL[..]).unwrap();
        assert_eq!(p.header_len(), 16);
        assert_eq!(p.checksum(), Some(0xd5d3));
        assert_eq!(p.key(), Some(42));
        assert_eq!(p.seq_number(), Some(7));
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &INNER);

        let p = Packet::new_checked(&KEYED_IPV4[..]).unwrap();
        assert_eq!(p.header_len(), 8);
        assert_eq!(p.protocol(), Protocol::Ipv4);
        assert_eq!(p.key(), Some(123_456));
        assert_eq!((p.checksum(), p.seq_number()), (None, None));
        assert!(p.payload().is_empty());
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 30];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_flags(true, true, true);
        p.set_protocol(Protocol::TransparentEthernet);
        p.set_key(42);
        p.set_seq_number(7);
        p.payload_mut().copy_from_slice(&INNER);
        p.fill_checksum();
        assert_eq!(buf, FULL);

        let mut buf = [0xa5u8; 8];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_flags(false, true, false);
        p.set_protocol(Protocol::Ipv4);
        p.set_key(123_456);
        assert_eq!(buf, KEYED_IPV4);
    }

    #[test]
    fn repr_round_trip() {
        let cases: [(&[u8], Repr); 3] = [
            (&PLAIN, Repr { protocol: Protocol::TransparentEthernet, checksum: false, key: None, seq_number: None }),
            (&FULL, full_repr()),
            (&KEYED_IPV4, Repr { protocol: Protocol::Ipv4, checksum: false, key: Some(123_456), seq_number: None }),
        ];
        for (bytes, repr) in cases {
            assert_eq!(Repr::parse(&Packet::new_checked(bytes).unwrap()).unwrap(), repr);
            assert_eq!(repr.header_len(), Packet::new_unchecked(bytes).header_len());
            let mut buf = vec![0xa5u8; bytes.len()];
            let hl = repr.header_len();
            buf[hl..].copy_from_slice(&bytes[hl..]);
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            assert_eq!(buf, bytes);
        }
        // Sequence number without key: it sits right after the base header.
        let repr = Repr { protocol: Protocol::Ipv6, checksum: false, key: None, seq_number: Some(0xffff_fffe) };
        let mut buf = [0xa5u8; 8];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0x10, 0x00, 0x86, 0xdd, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(), repr);
    }

    #[test]
    fn truncated() {
        for len in 0..FULL.len() - INNER.len() {
            assert_eq!(Packet::new_checked(&FULL[..len]).unwrap_err(), WireError::Truncated, "len {len}");
        }
        for len in 0..KEYED_IPV4.len() {
            assert_eq!(Packet::new_checked(&KEYED_IPV4[..len]).unwrap_err(), WireError::Truncated, "len {len}");
        }
    }

    #[test]
    fn malformed() {
        // Versions 1 (PPTP) to 7.
        for v in 1..8u8 {
            let mut b = PLAIN;
            b[1] = v;
            assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), WireError::Malformed, "version {v}");
        }
        // Routing (bit 1), strict source route (bit 4), recursion (bit 5).
        for bits in [0x4000u16, 0x0800, 0x0400] {
            let mut b = PLAIN;
            b[..2].copy_from_slice(&bits.to_be_bytes());
            assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), WireError::Malformed, "{bits:#06x}");
        }
        // Bits 6-12 are ignored on receipt.
        let mut b = PLAIN;
        b[..2].copy_from_slice(&0x03f8u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).unwrap().header_len(), 4);
        // A wrong checksum passes the view but not Repr::parse.
        let mut b = FULL;
        b[29] ^= 0x01;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn protocol_round_trips() {
        for v in [0u16, 0x0800, 0x6558, 0x86dd, 0x880b, 0xffff] {
            assert_eq!(u16::from(Protocol::from(v)), v);
        }
    }
}
