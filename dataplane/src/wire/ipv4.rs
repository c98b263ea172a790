//! IPv4 datagrams (RFC 791 §3.1).
//!
//! The view checks the fields that delimit the datagram (version, IHL,
//! Total Length) against the buffer, so `payload` is exactly the transport
//! segment: options are skipped and Ethernet padding after Total Length is
//! cut off. Options are exposed as raw bytes and not interpreted.

use super::{be16, checksum, Field, IpProtocol, Result, WireError};
use std::net::Ipv4Addr;

mod field {
    use super::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC: Field = 12..16;
    pub const DST: Field = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::DST.end;
/// Longest IPv4 header: IHL 15.
pub const MAX_HEADER_LEN: usize = 60;

// Flags and Fragment Offset share one 16-bit word (RFC 791 §3.1).
const FLAG_RESERVED: u16 = 0x8000;
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A zero-copy view of an IPv4 datagram.
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
    /// Check the fields that delimit the datagram against the buffer:
    /// `Malformed` if Version is not 4, IHL is below 5 or Total Length is
    /// shorter than the header; `Truncated` if the buffer ends before the
    /// header or before Total Length. A Total Length of zero (Linux BIG TCP
    /// super-frames) is therefore `Malformed`.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 || self.header_len() < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len < self.header_len() {
            return Err(WireError::Truncated);
        }
        let total = usize::from(self.total_len());
        if total < self.header_len() {
            return Err(WireError::Malformed);
        }
        if len < total {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    /// Differentiated Services Code Point (RFC 2474 §3).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }
    /// Explicit Congestion Notification codepoint (RFC 3168 §5).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }
    /// Total Length: header and data, in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::IDENT])
    }
    #[inline]
    fn flags_frag(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLG_OFF])
    }
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }
    /// The reserved flag bit, which RFC 791 requires to be zero.
    #[inline]
    pub fn reserved_flag(&self) -> bool {
        self.flags_frag() & FLAG_RESERVED != 0
    }
    /// Fragment Offset converted to bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & FRAG_OFFSET_MASK) << 3
    }
    /// True for any fragment of a fragmented datagram, the first included.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    /// True if the header checksum (RFC 791 §3.1) is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }
    /// Options, unparsed: the header bytes after the fixed 20.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }
    /// The data after the header, up to Total Length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_flags_frag(&mut self, v: u16) {
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_version(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (v << 4)
    }
    /// Set IHL from a length in bytes: a multiple of 4 from 20 to 60.
    pub fn set_header_len(&mut self, len: usize) {
        debug_assert!(len & 3 == 0 && (HEADER_LEN..=MAX_HEADER_LEN).contains(&len));
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f)
    }
    pub fn set_dscp(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (v << 2)
    }
    pub fn set_ecn(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (v & 0x03)
    }
    pub fn set_total_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_ident(&mut self, v: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&v.to_be_bytes())
    }
    /// Zero the flags and the fragment offset: an unfragmented datagram.
    pub fn clear_flags(&mut self) {
        self.set_flags_frag(0)
    }
    pub fn set_dont_frag(&mut self, v: bool) {
        let w = self.flags_frag() & !FLAG_DF;
        self.set_flags_frag(if v { w | FLAG_DF } else { w })
    }
    pub fn set_more_frags(&mut self, v: bool) {
        let w = self.flags_frag() & !FLAG_MF;
        self.set_flags_frag(if v { w | FLAG_MF } else { w })
    }
    /// Set Fragment Offset from a byte offset, a multiple of 8.
    pub fn set_frag_offset(&mut self, bytes: u16) {
        debug_assert!(bytes & 7 == 0);
        let w = self.flags_frag() & !FRAG_OFFSET_MASK;
        self.set_flags_frag(w | (bytes >> 3))
    }
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v
    }
    pub fn set_protocol(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = u8::from(p)
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets())
    }
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets())
    }
    /// Compute the header checksum over IHL × 4 bytes and store it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(!sum)
    }
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..hl]
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..total]
    }
}

/// The fields of an unfragmented IPv4 header without options.
///
/// `emit` writes DSCP/ECN as zero, no options and no fragmentation; `parse`
/// skips options and rejects fragments as `Malformed`, since a `Repr` of
/// one would re-emit it as a whole datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: IpProtocol,
    pub payload_len: usize,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

impl Repr {
    /// Parse a checked header; a wrong header checksum is `Malformed`.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        if !packet.verify_checksum() || packet.is_fragment() {
            return Err(WireError::Malformed);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }
    /// Write the header and its checksum; panics if the buffer is shorter
    /// than `HEADER_LEN`. `payload_len` must be at most 65515.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        debug_assert!(self.buffer_len() <= usize::from(u16::MAX));
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_dscp(0);
        packet.set_ecn(0);
        packet.set_total_len(self.buffer_len() as u16);
        packet.set_ident(self.ident);
        packet.clear_flags();
        packet.set_dont_frag(self.dont_frag);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A UDP datagram 10.88.0.2:40000 -> 10.88.0.1:53 with 4 bytes of data.
    const PACKET: [u8; 32] = [
        0x45, // version 4, IHL 5
        0x00, // DSCP 0, ECN 0
        0x00, 0x20, // total length 32
        0x1c, 0x46, // identification
        0x40, 0x00, // DF, offset 0
        0x40, // TTL 64
        0x11, // protocol UDP
        0x09, 0xd5, // header checksum
        0x0a, 0x58, 0x00, 0x02, // 10.88.0.2
        0x0a, 0x58, 0x00, 0x01, // 10.88.0.1
        0x9c, 0x40, 0x00, 0x35, 0x00, 0x0c, 0xb1, 0x10, // UDP header
        0xde, 0xad, 0xbe, 0xef, // UDP data
    ];

    // The same header with IHL 6 and one word of options (NOP NOP NOP EOL)
    // and no data.
    const WITH_OPTIONS: [u8; 24] = [
        0x46, 0x00, 0x00, 0x18, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x06, 0xdc, //
        0x0a, 0x58, 0x00, 0x02, 0x0a, 0x58, 0x00, 0x01, 0x01, 0x01, 0x01, 0x00,
    ];

    fn repr() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(10, 88, 0, 2),
            dst_addr: Ipv4Addr::new(10, 88, 0, 1),
            protocol: IpProtocol::Udp,
            payload_len: 12,
            ttl: 64,
            ident: 0x1c46,
            dont_frag: true,
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!((p.dscp(), p.ecn()), (0, 0));
        assert_eq!(p.total_len(), 32);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag() && !p.more_frags() && !p.reserved_flag());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert_eq!(p.checksum(), 0x09d5);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 88, 0, 1));
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &PACKET[20..]);
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 32];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_dscp(0);
        p.set_ecn(0);
        p.set_total_len(32);
        p.set_ident(0x1c46);
        p.clear_flags();
        p.set_dont_frag(true);
        p.set_ttl(64);
        p.set_protocol(IpProtocol::Udp);
        p.set_src_addr(Ipv4Addr::new(10, 88, 0, 2));
        p.set_dst_addr(Ipv4Addr::new(10, 88, 0, 1));
        p.fill_checksum();
        p.payload_mut().copy_from_slice(&PACKET[20..]);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn repr_round_trip() {
        let parsed = Repr::parse(&Packet::new_checked(&PACKET[..]).unwrap()).unwrap();
        assert_eq!(parsed, repr());
        let mut buf = [0xa5u8; 32];
        buf[20..].copy_from_slice(&PACKET[20..]);
        repr().emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn options_are_skipped() {
        let p = Packet::new_checked(&WITH_OPTIONS[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert!(p.verify_checksum());
        assert_eq!(p.options(), &[0x01, 0x01, 0x01, 0x00]);
        assert!(p.payload().is_empty());
        assert_eq!(Repr::parse(&p).unwrap().payload_len, 0);
    }

    #[test]
    fn padding_after_total_len_is_not_payload() {
        // A short datagram padded to the 46-byte Ethernet minimum.
        let mut padded = [0u8; 46];
        padded[..32].copy_from_slice(&PACKET);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &PACKET[20..]);
    }

    #[test]
    fn fragments() {
        // Second fragment: MF set, offset 1480 bytes (185 units).
        let mut b = PACKET;
        b[6..8].copy_from_slice(&(0x2000u16 | 185).to_be_bytes());
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.fill_checksum();
        assert!(p.more_frags() && !p.dont_frag());
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.is_fragment());
        assert_eq!(Repr::parse(&p).unwrap_err(), WireError::Malformed);
        p.set_more_frags(false);
        p.set_frag_offset(0);
        p.set_dont_frag(true);
        p.fill_checksum();
        assert_eq!(b, PACKET);
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(Packet::new_checked(&PACKET[..len]).unwrap_err(), WireError::Truncated, "len {len}");
        }
        // Header present, data shorter than Total Length.
        for len in HEADER_LEN..PACKET.len() {
            assert_eq!(Packet::new_checked(&PACKET[..len]).unwrap_err(), WireError::Truncated, "len {len}");
        }
        // Options announced by IHL but cut off.
        assert_eq!(Packet::new_checked(&WITH_OPTIONS[..22]).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn malformed() {
        let with = |at: usize, v: u8| {
            let mut b = PACKET;
            b[at] = v;
            Packet::new_checked(b).map(|_| ())
        };
        assert_eq!(with(0, 0x65), Err(WireError::Malformed)); // version 6
        assert_eq!(with(0, 0x44), Err(WireError::Malformed)); // IHL 4
        assert_eq!(with(0, 0x40), Err(WireError::Malformed)); // IHL 0
        assert_eq!(with(3, 19), Err(WireError::Malformed)); // total < header
        assert_eq!(with(3, 0), Err(WireError::Malformed)); // BIG TCP style 0
                                                           // A bad checksum passes the view but not Repr::parse.
        let mut b = PACKET;
        b[8] = 63;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn matches_etherparse() {
        let builder = etherparse::PacketBuilder::ipv4([172, 17, 0, 2], [8, 8, 8, 8], 63).udp(5353, 53);
        let payload = [0x42u8; 37];
        let mut bytes = Vec::new();
        builder.write(&mut bytes, &payload).unwrap();
        let ep = etherparse::Ipv4HeaderSlice::from_slice(&bytes).unwrap();

        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.src_addr(), ep.source_addr());
        assert_eq!(p.dst_addr(), ep.destination_addr());
        assert_eq!(p.ttl(), ep.ttl());
        assert_eq!(u8::from(p.protocol()), ep.protocol().0);
        assert_eq!(p.total_len(), ep.total_len());
        assert_eq!(p.ident(), ep.identification());
        assert_eq!(p.dont_frag(), ep.dont_fragment());
        assert_eq!(p.checksum(), ep.header_checksum());
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 8 + payload.len());

        // Our fill_checksum agrees with etherparse's.
        let mut copy = bytes.clone();
        let mut q = Packet::new_unchecked(&mut copy[..]);
        q.set_checksum(0xa5a5);
        q.fill_checksum();
        assert_eq!(q.checksum(), ep.to_header().calc_header_checksum());
    }
}
