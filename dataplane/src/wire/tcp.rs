//! TCP segments (RFC 9293 §3.1).
//!
//! The view must span exactly one segment (the IP payload): the checksum
//! covers the whole buffer plus a pseudo-header from the enclosing IP
//! header, so the checksum methods take the IP addresses. Options are
//! exposed as raw bytes and not interpreted.

use super::{be16, be32, checksum, Field, IpProtocol, Result, WireError};
use core::fmt;
use core::ops::BitOr;
use std::net::{Ipv4Addr, Ipv6Addr};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = field::URGENT.end;
/// Longest TCP header: Data Offset 15.
pub const MAX_HEADER_LEN: usize = 60;

/// The control bits of RFC 9293 §3.1 (with CWR and ECE from RFC 3168 §6.1).
/// The four bits before them are reserved and not included.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const FIN: Flags = Flags(0x01);
    pub const SYN: Flags = Flags(0x02);
    pub const RST: Flags = Flags(0x04);
    pub const PSH: Flags = Flags(0x08);
    pub const ACK: Flags = Flags(0x10);
    pub const URG: Flags = Flags(0x20);
    pub const ECE: Flags = Flags(0x40);
    pub const CWR: Flags = Flags(0x80);
    pub const NONE: Flags = Flags(0);

    /// True if every bit of `other` is set.
    #[inline]
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        let mut first = true;
        for (i, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                f.write_str(if first { "" } else { "|" })?;
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("NONE")?;
        }
        Ok(())
    }
}

/// A zero-copy view of a TCP segment.
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
    /// `Truncated` if the buffer ends before the header or its options;
    /// `Malformed` if Data Offset is below 5.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.header_len() < HEADER_LEN {
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
    pub fn src_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SRC_PORT])
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::DST_PORT])
    }
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SEQ_NUM])
    }
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::ACK_NUM])
    }
    /// Header length in bytes (Data Offset × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }
    #[inline]
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS])
    }
    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::WINDOW])
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }
    #[inline]
    pub fn urgent_ptr(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::URGENT])
    }
    /// Options, unparsed: the header bytes after the fixed 20.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }
    /// The data after the header, to the end of the buffer.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
    fn sum_with(&self, pseudo: u16) -> u16 {
        checksum::combine(&[pseudo, checksum::data(self.buffer.as_ref())])
    }
    /// The segment length for the IPv4 pseudo-header. No segment inside an
    /// IPv4 datagram exceeds 16 bits; saturating makes a bogus one fail.
    fn seg_len_v4(&self) -> u16 {
        u16::try_from(self.buffer.as_ref().len()).unwrap_or(u16::MAX)
    }
    fn seg_len_v6(&self) -> u32 {
        u32::try_from(self.buffer.as_ref().len()).unwrap_or(u32::MAX)
    }
    pub fn verify_checksum_ipv4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.sum_with(checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, self.seg_len_v4())) == 0xffff
    }
    pub fn verify_checksum_ipv6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        self.sum_with(checksum::pseudo_header_v6(src, dst, IpProtocol::Tcp, self.seg_len_v6())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_dst_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_seq_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_ack_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::ACK_NUM].copy_from_slice(&v.to_be_bytes())
    }
    /// Set Data Offset from a length in bytes (a multiple of 4 from 20 to
    /// 60) and clear the reserved bits.
    pub fn set_header_len(&mut self, len: usize) {
        debug_assert!(len & 3 == 0 && (HEADER_LEN..=MAX_HEADER_LEN).contains(&len));
        self.buffer.as_mut()[field::DATA_OFF] = ((len / 4) as u8) << 4
    }
    pub fn set_flags(&mut self, f: Flags) {
        self.buffer.as_mut()[field::FLAGS] = f.0
    }
    pub fn set_window_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::WINDOW].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_urgent_ptr(&mut self, v: u16) {
        self.buffer.as_mut()[field::URGENT].copy_from_slice(&v.to_be_bytes())
    }
    /// Compute the checksum over the IPv4 pseudo-header and the segment.
    pub fn fill_checksum_ipv4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, self.seg_len_v4());
        let c = !self.sum_with(pseudo);
        self.set_checksum(c)
    }
    /// Compute the checksum over the IPv6 pseudo-header and the segment.
    pub fn fill_checksum_ipv6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Tcp, self.seg_len_v6());
        let c = !self.sum_with(pseudo);
        self.set_checksum(c)
    }
    /// Adjust the checksum for a 16-bit word it covers (a port, or via the
    /// pseudo-header) changing from `old` to `new` (RFC 1624).
    pub fn update_checksum_u16(&mut self, old: u16, new: u16) {
        let c = checksum::update_u16(self.checksum(), old, new);
        self.set_checksum(c)
    }
    /// [`Packet::update_checksum_u16`] for a 32-bit word, such as an IPv4
    /// address in the pseudo-header.
    pub fn update_checksum_u32(&mut self, old: u32, new: u32) {
        let c = checksum::update_u32(self.checksum(), old, new);
        self.set_checksum(c)
    }
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..hl]
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

/// The fields of a TCP header without options.
///
/// `emit` writes no options, a zero urgent pointer and a zero checksum; fill
/// the checksum with `fill_checksum_ipv4` or `fill_checksum_ipv6` once the
/// payload is in place. `parse` skips options and cannot check the checksum
/// without the IP addresses: use the `verify_` methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    pub flags: Flags,
    pub window_len: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
        })
    }
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }
    /// Write the header; panics if the buffer is shorter than `HEADER_LEN`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.set_header_len(HEADER_LEN);
        packet.set_flags(self.flags);
        packet.set_window_len(self.window_len);
        packet.set_checksum(0);
        packet.set_urgent_ptr(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 3);

    // SYN 10.88.0.2:45678 -> 10.88.0.3:80 with an MSS option.
    const SYN: [u8; 24] = [
        0xb2, 0x6e, // src port 45678
        0x00, 0x50, // dst port 80
        0x12, 0x34, 0x56, 0x78, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0x60, // data offset 6
        0x02, // SYN
        0xfa, 0xf0, // window 64240
        0x6d, 0x16, // checksum
        0x00, 0x00, // urgent pointer
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
    ];

    // The client's request: ACK|PSH with "GET" as data, no options.
    const DATA: [u8; 23] = [
        0xb2, 0x6e, 0x00, 0x50, // ports
        0x12, 0x34, 0x56, 0x79, // seq
        0x9a, 0xbc, 0xde, 0xf1, // ack
        0x50, 0x18, // data offset 5, ACK|PSH
        0x01, 0xf6, // window 502
        0x68, 0xbf, // checksum
        0x00, 0x00, // urgent pointer
        b'G', b'E', b'T',
    ];

    fn data_repr() -> Repr {
        Repr {
            src_port: 45678,
            dst_port: 80,
            seq_number: 0x1234_5679,
            ack_number: 0x9abc_def1,
            flags: Flags::ACK | Flags::PSH,
            window_len: 502,
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!(p.src_port(), 45678);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 0x1234_5678);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.flags(), Flags::SYN);
        assert!(!p.flags().contains(Flags::ACK));
        assert_eq!(p.window_len(), 64240);
        assert_eq!(p.checksum(), 0x6d16);
        assert_eq!(p.urgent_ptr(), 0);
        assert_eq!(p.options(), &[0x02, 0x04, 0x05, 0xb4]);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum_ipv4(SRC, DST));
        assert!(!p.verify_checksum_ipv4(DST, Ipv4Addr::new(10, 88, 0, 4)));
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 24];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_src_port(45678);
        p.set_dst_port(80);
        p.set_seq_number(0x1234_5678);
        p.set_ack_number(0);
        p.set_header_len(24);
        p.set_flags(Flags::SYN);
        p.set_window_len(64240);
        p.set_urgent_ptr(0);
        p.options_mut().copy_from_slice(&[0x02, 0x04, 0x05, 0xb4]);
        p.fill_checksum_ipv4(SRC, DST);
        assert_eq!(buf, SYN);
    }

    #[test]
    fn repr_round_trip() {
        let p = Packet::new_checked(&DATA[..]).unwrap();
        assert_eq!(p.payload(), b"GET");
        assert!(p.verify_checksum_ipv4(SRC, DST));
        assert_eq!(Repr::parse(&p).unwrap(), data_repr());

        let mut buf = [0xa5u8; 23];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        data_repr().emit(&mut p);
        p.payload_mut().copy_from_slice(b"GET");
        p.fill_checksum_ipv4(SRC, DST);
        assert_eq!(buf, DATA);
    }

    #[test]
    fn flags_debug() {
        assert_eq!(format!("{:?}", Flags::SYN | Flags::ACK), "SYN|ACK");
        assert_eq!(format!("{:?}", Flags::NONE), "NONE");
    }

    #[test]
    fn nat_incremental_update() {
        // DNAT 10.88.0.3:80 to 10.88.0.9:8080.
        let new_ip = Ipv4Addr::new(10, 88, 0, 9);
        let mut b = DATA;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_dst_port(8080);
        p.update_checksum_u16(80, 8080);
        p.update_checksum_u32(u32::from(DST), u32::from(new_ip));
        assert!(p.verify_checksum_ipv4(SRC, new_ip));
    }

    #[test]
    fn truncated() {
        for len in 0..SYN.len() {
            assert_eq!(Packet::new_checked(&SYN[..len]).unwrap_err(), WireError::Truncated, "len {len}");
        }
    }

    #[test]
    fn malformed() {
        for off in 0..5u8 {
            let mut b = DATA;
            b[12] = off << 4;
            assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), WireError::Malformed, "offset {off}");
        }
        // Data offset 15 in a 23-byte segment: options run past the end.
        let mut b = DATA;
        b[12] = 0xf0;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn matches_etherparse() {
        let (s, d) = ([172, 17, 0, 2], [93, 184, 216, 34]);
        let payload = [0x17u8; 1460];
        let mut bytes = Vec::new();
        etherparse::PacketBuilder::ipv4(s, d, 64)
            .tcp(51000, 443, 0xdead_beef, 4096)
            .ack(0x0102_0304)
            .psh()
            .write(&mut bytes, &payload)
            .unwrap();
        let ep = etherparse::TcpHeaderSlice::from_slice(&bytes[20..]).unwrap();

        let mut p = Packet::new_checked(bytes[20..].to_vec()).unwrap();
        assert_eq!(p.src_port(), ep.source_port());
        assert_eq!(p.dst_port(), ep.destination_port());
        assert_eq!(p.seq_number(), ep.sequence_number());
        assert_eq!(p.ack_number(), ep.acknowledgment_number());
        assert_eq!(p.flags(), Flags::ACK | Flags::PSH);
        assert_eq!(p.window_len(), ep.window_size());
        assert_eq!(p.header_len(), usize::from(ep.data_offset()) * 4);
        assert_eq!(p.checksum(), ep.checksum());
        assert!(p.verify_checksum_ipv4(s.into(), d.into()));
        p.set_checksum(0);
        p.fill_checksum_ipv4(s.into(), d.into());
        assert_eq!(p.checksum(), ep.checksum());

        let (s6, d6): (Ipv6Addr, Ipv6Addr) = ("fd00::2".parse().unwrap(), "2001:db8::1".parse().unwrap());
        let mut bytes = Vec::new();
        etherparse::PacketBuilder::ipv6(s6.octets(), d6.octets(), 64)
            .tcp(51000, 443, 1, 4096)
            .syn()
            .write(&mut bytes, &[])
            .unwrap();
        let p = Packet::new_checked(&bytes[40..]).unwrap();
        assert!(p.verify_checksum_ipv6(&s6, &d6));
        assert_eq!(p.flags(), Flags::SYN);
    }
}
