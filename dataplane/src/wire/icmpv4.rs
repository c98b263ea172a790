//! ICMP for IPv4 (RFC 792).
//!
//! Every message starts with type, code, checksum and four bytes whose
//! meaning depends on the type: identifier and sequence number for echo,
//! unused (or the next-hop MTU, RFC 1191 §4) for errors. The checksum covers
//! the whole message with no pseudo-header, so the view must span exactly
//! the message (the IP payload). Error messages carry the offending IP
//! header and at least 8 bytes of its data in `data`.

use super::{be16, be32, checksum, Field, Result, WireError};

/// ICMP message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    EchoReply,
    DstUnreachable,
    Redirect,
    EchoRequest,
    TimeExceeded,
    ParamProblem,
    Unknown(u8),
}

impl From<u8> for Message {
    fn from(v: u8) -> Self {
        match v {
            0 => Message::EchoReply,
            3 => Message::DstUnreachable,
            5 => Message::Redirect,
            8 => Message::EchoRequest,
            11 => Message::TimeExceeded,
            12 => Message::ParamProblem,
            other => Message::Unknown(other),
        }
    }
}

impl From<Message> for u8 {
    fn from(v: Message) -> u8 {
        match v {
            Message::EchoReply => 0,
            Message::DstUnreachable => 3,
            Message::Redirect => 5,
            Message::EchoRequest => 8,
            Message::TimeExceeded => 11,
            Message::ParamProblem => 12,
            Message::Unknown(o) => o,
        }
    }
}

/// Codes of Destination Unreachable (RFC 792; 13 from RFC 1812 §5.2.7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstUnreachable {
    NetUnreachable,
    HostUnreachable,
    ProtoUnreachable,
    PortUnreachable,
    /// Fragmentation needed and DF set: carries the next-hop MTU.
    FragRequired,
    SrcRouteFailed,
    AdminProhibited,
    Unknown(u8),
}

impl From<u8> for DstUnreachable {
    fn from(v: u8) -> Self {
        match v {
            0 => DstUnreachable::NetUnreachable,
            1 => DstUnreachable::HostUnreachable,
            2 => DstUnreachable::ProtoUnreachable,
            3 => DstUnreachable::PortUnreachable,
            4 => DstUnreachable::FragRequired,
            5 => DstUnreachable::SrcRouteFailed,
            13 => DstUnreachable::AdminProhibited,
            other => DstUnreachable::Unknown(other),
        }
    }
}

impl From<DstUnreachable> for u8 {
    fn from(v: DstUnreachable) -> u8 {
        match v {
            DstUnreachable::NetUnreachable => 0,
            DstUnreachable::HostUnreachable => 1,
            DstUnreachable::ProtoUnreachable => 2,
            DstUnreachable::PortUnreachable => 3,
            DstUnreachable::FragRequired => 4,
            DstUnreachable::SrcRouteFailed => 5,
            DstUnreachable::AdminProhibited => 13,
            DstUnreachable::Unknown(o) => o,
        }
    }
}

/// Codes of Time Exceeded (RFC 792).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeExceeded {
    TtlExpired,
    FragReassembly,
    Unknown(u8),
}

impl From<u8> for TimeExceeded {
    fn from(v: u8) -> Self {
        match v {
            0 => TimeExceeded::TtlExpired,
            1 => TimeExceeded::FragReassembly,
            other => TimeExceeded::Unknown(other),
        }
    }
}

impl From<TimeExceeded> for u8 {
    fn from(v: TimeExceeded) -> u8 {
        match v {
            TimeExceeded::TtlExpired => 0,
            TimeExceeded::FragReassembly => 1,
            TimeExceeded::Unknown(o) => o,
        }
    }
}

mod field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const REST: Field = 4..8;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const NEXT_HOP_MTU: Field = 6..8;
}

/// Length of the ICMP header common to all messages.
pub const HEADER_LEN: usize = field::REST.end;

/// A zero-copy view of an ICMPv4 message.
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
    /// `Truncated` if the buffer cannot hold the 8-byte header.
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
    pub fn msg_type(&self) -> Message {
        Message::from(self.buffer.as_ref()[field::TYPE])
    }
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }
    /// The four type-dependent bytes after the checksum.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::REST])
    }
    /// Identifier of an echo request or reply.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }
    /// Sequence number of an echo request or reply.
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ECHO_SEQNO])
    }
    /// Next-hop MTU of a "fragmentation needed" message (RFC 1191 §4).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::NEXT_HOP_MTU])
    }
    /// The message body: echo data, or the original datagram's header and
    /// first bytes in an error message.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
    /// True if the checksum over the whole message is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_msg_type(&mut self, t: Message) {
        self.buffer.as_mut()[field::TYPE] = u8::from(t)
    }
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_rest_of_header(&mut self, v: u32) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_echo_ident(&mut self, v: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_echo_seq_no(&mut self, v: u16) {
        self.buffer.as_mut()[field::ECHO_SEQNO].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_next_hop_mtu(&mut self, v: u16) {
        self.buffer.as_mut()[field::NEXT_HOP_MTU].copy_from_slice(&v.to_be_bytes())
    }
    /// Compute the checksum over the whole buffer and store it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = !checksum::data(self.buffer.as_ref());
        self.set_checksum(c)
    }
    /// Adjust the checksum for a 16-bit word it covers changing from `old`
    /// to `new` (RFC 1624), e.g. the echo identifier rewritten by NAT.
    /// Follow with [`Packet::fix_zero_checksum`] once the word is written.
    pub fn update_checksum_u16(&mut self, old: u16, new: u16) {
        let c = checksum::update_u16(self.checksum(), old, new);
        self.set_checksum(c)
    }
    /// Correct the one result of an incremental update (RFC 1624 eqn. 3)
    /// that does not verify: a message whose every other byte is zero sums
    /// to +0, so only 0xffff verifies, but eqn. 3 gives 0x0000 (for any
    /// other message 0x0000 is right, §3). ICMP has no pseudo-header, so an
    /// echo reply with identifier, sequence number and data zero is such a
    /// message. Only a checksum of 0x0000 starts the scan, which stops at
    /// the first nonzero byte: within the 8-byte header of any real message.
    #[inline]
    pub fn fix_zero_checksum(&mut self) {
        if self.checksum() == 0 && self.buffer.as_ref().iter().all(|&b| b == 0) {
            self.set_checksum(0xffff)
        }
    }
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The header of an ICMPv4 message.
///
/// `emit` fills the checksum over the whole buffer, so write `data` first.
/// `parse` rejects a wrong checksum as `Malformed`; it ignores the unused
/// rest-of-header bits of the error messages it names, and keeps every other
/// message (echo with a nonzero code included) as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    EchoRequest {
        ident: u16,
        seq_no: u16,
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
    },
    /// `next_hop_mtu` is zero unless `reason` is `FragRequired`.
    DstUnreachable {
        reason: DstUnreachable,
        next_hop_mtu: u16,
    },
    TimeExceeded {
        reason: TimeExceeded,
    },
    Other {
        msg_type: Message,
        code: u8,
        rest_of_header: u32,
    },
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(WireError::Malformed);
        }
        Ok(match (packet.msg_type(), packet.code()) {
            (Message::EchoRequest, 0) => Repr::EchoRequest { ident: packet.echo_ident(), seq_no: packet.echo_seq_no() },
            (Message::EchoReply, 0) => Repr::EchoReply { ident: packet.echo_ident(), seq_no: packet.echo_seq_no() },
            (Message::DstUnreachable, code) => {
                let reason = DstUnreachable::from(code);
                let next_hop_mtu = if reason == DstUnreachable::FragRequired { packet.next_hop_mtu() } else { 0 };
                Repr::DstUnreachable { reason, next_hop_mtu }
            }
            (Message::TimeExceeded, code) => Repr::TimeExceeded { reason: TimeExceeded::from(code) },
            (msg_type, code) => Repr::Other { msg_type, code, rest_of_header: packet.rest_of_header() },
        })
    }
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }
    /// Write the header and the checksum over the whole buffer, data
    /// included; panics if the buffer is shorter than `HEADER_LEN`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let (msg_type, code, rest) = match *self {
            Repr::EchoRequest { ident, seq_no } => {
                (Message::EchoRequest, 0, u32::from(ident) << 16 | u32::from(seq_no))
            }
            Repr::EchoReply { ident, seq_no } => (Message::EchoReply, 0, u32::from(ident) << 16 | u32::from(seq_no)),
            Repr::DstUnreachable { reason, next_hop_mtu } => {
                (Message::DstUnreachable, u8::from(reason), u32::from(next_hop_mtu))
            }
            Repr::TimeExceeded { reason } => (Message::TimeExceeded, u8::from(reason), 0),
            Repr::Other { msg_type, code, rest_of_header } => (msg_type, code, rest_of_header),
        };
        packet.set_msg_type(msg_type);
        packet.set_code(code);
        packet.set_rest_of_header(rest);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Echo request as sent by `ping -p 6162636465666768 -s 8`.
    const ECHO_REQUEST: [u8; 16] = [
        0x08, // type: echo request
        0x00, // code
        0x54, 0x35, // checksum
        0x12, 0x34, // identifier
        0x00, 0x01, // sequence number
        b'a', b'b', b'c', b'd', b'e', b'f', b'g', b'h',
    ];

    // Port unreachable for the UDP datagram 10.88.0.2:40000 -> 10.88.0.1:53
    // of ipv4.rs's tests: its IP header and first 8 data bytes.
    const PORT_UNREACHABLE: [u8; 36] = [
        0x03, 0x03, 0xaf, 0x6a, 0x00, 0x00, 0x00, 0x00, // type 3 code 3, unused
        0x45, 0x00, 0x00, 0x20, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x09, 0xd5, //
        0x0a, 0x58, 0x00, 0x02, 0x0a, 0x58, 0x00, 0x01, //
        0x9c, 0x40, 0x00, 0x35, 0x00, 0x0c, 0xb1, 0x10,
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(p.msg_type(), Message::EchoRequest);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), 0x5435);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 1);
        assert_eq!(p.data(), b"abcdefgh");
        assert!(p.verify_checksum());

        let p = Packet::new_checked(&PORT_UNREACHABLE[..]).unwrap();
        assert_eq!(p.msg_type(), Message::DstUnreachable);
        assert_eq!(DstUnreachable::from(p.code()), DstUnreachable::PortUnreachable);
        assert!(p.verify_checksum());
        let inner = super::super::ipv4::Packet::new_unchecked(p.data());
        assert_eq!(inner.dst_addr(), std::net::Ipv4Addr::new(10, 88, 0, 1));
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 16];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_msg_type(Message::EchoRequest);
        p.set_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq_no(1);
        p.data_mut().copy_from_slice(b"abcdefgh");
        p.fill_checksum();
        assert_eq!(buf, ECHO_REQUEST);
    }

    #[test]
    fn repr_round_trip() {
        let cases: [(&[u8], Repr); 2] = [
            (&ECHO_REQUEST, Repr::EchoRequest { ident: 0x1234, seq_no: 1 }),
            (&PORT_UNREACHABLE, Repr::DstUnreachable { reason: DstUnreachable::PortUnreachable, next_hop_mtu: 0 }),
        ];
        for (bytes, repr) in cases {
            assert_eq!(Repr::parse(&Packet::new_checked(bytes).unwrap()).unwrap(), repr);
            let mut buf = vec![0xa5u8; bytes.len()];
            buf[HEADER_LEN..].copy_from_slice(&bytes[HEADER_LEN..]);
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            assert_eq!(buf, bytes);
        }

        // Fragmentation needed, next-hop MTU 1450 (a VXLAN underlay).
        let mut buf = PORT_UNREACHABLE;
        let repr = Repr::DstUnreachable { reason: DstUnreachable::FragRequired, next_hop_mtu: 1450 };
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[..8], &[0x03, 0x04, 0xa9, 0xbf, 0x00, 0x00, 0x05, 0xaa]);
        assert_eq!(Repr::parse(&Packet::new_unchecked(&buf[..])).unwrap(), repr);

        // An echo reply and an unknown type, with no data.
        for repr in [
            Repr::EchoReply { ident: 7, seq_no: 9 },
            Repr::TimeExceeded { reason: TimeExceeded::TtlExpired },
            Repr::Other { msg_type: Message::Unknown(42), code: 1, rest_of_header: 0xdead_beef },
        ] {
            let mut buf = [0xa5u8; 8];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            assert_eq!(Repr::parse(&Packet::new_unchecked(&buf[..])).unwrap(), repr);
        }
    }

    #[test]
    fn codes_round_trip() {
        for v in 0..=u8::MAX {
            assert_eq!(u8::from(Message::from(v)), v);
            assert_eq!(u8::from(DstUnreachable::from(v)), v);
            assert_eq!(u8::from(TimeExceeded::from(v)), v);
        }
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(Packet::new_checked(&ECHO_REQUEST[..len]).unwrap_err(), WireError::Truncated, "len {len}");
        }
    }

    #[test]
    fn malformed_checksum() {
        let mut b = ECHO_REQUEST;
        b[15] ^= 1;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn nat_rewrites_echo_ident() {
        let mut b = ECHO_REQUEST;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_echo_ident(0xbeef);
        p.update_checksum_u16(0x1234, 0xbeef);
        assert!(p.verify_checksum());
    }

    #[test]
    fn all_zero_echo_reply_gets_ffff() {
        // Echo reply, identifier 5, sequence 0, no data; NAT gives it
        // identifier 0 (found by the `wire` fuzz target).
        let mut b = [0x00, 0x00, 0xff, 0xfa, 0x00, 0x05, 0x00, 0x00];
        let mut p = Packet::new_unchecked(&mut b[..]);
        assert!(p.verify_checksum());
        p.update_checksum_u16(5, 0);
        p.set_echo_ident(0);
        assert_eq!(p.checksum(), 0x0000);
        assert!(!p.verify_checksum(), "RFC 1624 eqn. 3 on an all-zero message");
        p.fix_zero_checksum();
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum());
        let mut again = [0u8; 8];
        Packet::new_unchecked(&mut again[..]).fill_checksum();
        assert_eq!(b, again);
        // Any other message with a checksum of 0x0000 is left alone: here
        // the other words sum to 0xffff, so 0x0000 is the right checksum.
        let mut b = [0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00];
        let mut p = Packet::new_unchecked(&mut b[..]);
        assert!(p.verify_checksum());
        p.fix_zero_checksum();
        assert_eq!(p.checksum(), 0x0000);
    }

    #[test]
    fn matches_etherparse() {
        let mut bytes = Vec::new();
        etherparse::PacketBuilder::ipv4([172, 17, 0, 2], [172, 17, 0, 1], 64)
            .icmpv4_echo_request(0x4242, 17)
            .write(&mut bytes, b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU")
            .unwrap();
        let ep = etherparse::Icmpv4Slice::from_slice(&bytes[20..]).unwrap();
        let mut p = Packet::new_checked(bytes[20..].to_vec()).unwrap();
        assert_eq!(p.msg_type(), Message::EchoRequest);
        assert_eq!(p.echo_ident(), 0x4242);
        assert_eq!(p.echo_seq_no(), 17);
        assert_eq!(p.checksum(), ep.checksum());
        assert!(p.verify_checksum());
        p.set_checksum(0xffff);
        p.fill_checksum();
        assert_eq!(p.checksum(), ep.checksum());
    }
}
