//! Flow tuples: what identifies a connection, read from an IPv4 packet.
//!
//! A [`FlowKey`] is the 5-tuple of one direction of a flow: protocol, source
//! and destination address and port. ICMP echo has no ports; its identifier
//! plays both roles (`sport == dport == identifier`), as in netfilter, so a
//! request and its reply are each other's [`FlowKey::reverse`].
//!
//! [`classify`] reads the key of a TCP segment, a UDP datagram or an ICMP
//! echo, or, for an ICMP error (RFC 792 types 3, 11 and 12), the key of the
//! packet the error quotes. Everything else gets a [`NatDrop`] reason.
//! Untrusted bytes go through the `wire` views' `new_checked`, except the
//! quoted packet inside an ICMP error: its Total Length describes the
//! original datagram, of which only the first bytes were quoted, so it is
//! checked here field by field.

use core::fmt;
use std::net::Ipv4Addr;

use crate::wire::icmpv4::Message;
use crate::wire::tcp::Flags;
use crate::wire::{be16, ipv4, tcp, udp, Icmpv4Packet, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket, WireError};

/// Why a packet has no flow tuple NAT can work with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NatDrop {
    /// The IPv4 header or the transport header is cut short.
    #[error("truncated IPv4 or transport header")]
    Truncated,
    /// A header field holds a value its protocol does not allow.
    #[error("malformed IPv4 or transport header")]
    Malformed,
    /// A fragment other than the first: it carries no ports.
    #[error("non-first fragment")]
    Fragment,
    /// An IP protocol other than TCP, UDP and ICMP.
    #[error("IP protocol {0} is not translated")]
    Protocol(u8),
    /// An ICMP message that is neither an echo nor an error about a flow
    /// (redirect, timestamp, router advertisement, ...).
    #[error("ICMP type {0} is not translated")]
    IcmpType(u8),
    /// An ICMP error: it belongs to the flow it quotes, see [`classify`].
    #[error("ICMP error message; its flow is the quoted packet's")]
    IcmpError,
    /// An ICMP error whose quoted packet is cut short or malformed.
    #[error("ICMP error quotes a truncated or malformed packet")]
    BadQuote,
    /// An ICMP error about a packet NAT does not translate: another
    /// protocol, a non-first fragment, or an ICMP message other than echo
    /// (an error is never sent about an error, RFC 1122 §3.2.2).
    #[error("ICMP error quotes a packet that is not translated")]
    QuoteNotTranslated,
}

impl From<WireError> for NatDrop {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => NatDrop::Truncated,
            WireError::Malformed => NatDrop::Malformed,
        }
    }
}

/// The transport protocols NAT translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMP echo, keyed by its identifier.
    Icmp,
}

impl Proto {
    /// The IPv4 Protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
        }
    }
    /// The protocol of an IPv4 Protocol number, if NAT translates it.
    pub const fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            1 => Some(Proto::Icmp),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

impl From<Proto> for IpProtocol {
    fn from(p: Proto) -> IpProtocol {
        IpProtocol::from(p.number())
    }
}

/// One direction of a flow. For ICMP echo `sport` and `dport` both hold the
/// identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    pub proto: Proto,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

// Two words instead of the derived field-by-field hash (which hashes each
// address as a length-prefixed byte slice): the table hashes a key per
// packet. Consistent with the derived `Eq`, since every field is hashed.
impl core::hash::Hash for FlowKey {
    #[inline]
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(u32::from(self.src)) << 32 | u64::from(u32::from(self.dst)));
        state.write_u64(u64::from(self.sport) << 32 | u64::from(self.dport) << 16 | u64::from(self.proto.number()));
    }
}

impl FlowKey {
    /// A TCP or UDP key.
    pub const fn new(proto: Proto, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FlowKey {
        FlowKey { proto, src, sport, dst, dport }
    }
    /// An ICMP echo key: the identifier stands for both ports.
    pub const fn icmp(src: Ipv4Addr, dst: Ipv4Addr, ident: u16) -> FlowKey {
        FlowKey { proto: Proto::Icmp, src, sport: ident, dst, dport: ident }
    }
    /// The key of the other direction: addresses and ports swapped.
    #[inline]
    pub const fn reverse(&self) -> FlowKey {
        FlowKey { proto: self.proto, src: self.dst, sport: self.dport, dst: self.src, dport: self.sport }
    }
    /// This key with source `ip:port`: how a flow leaves after SNAT. For
    /// ICMP echo `port` is the new identifier (both `sport` and `dport`).
    #[inline]
    pub const fn with_src(&self, ip: Ipv4Addr, port: u16) -> FlowKey {
        match self.proto {
            Proto::Icmp => FlowKey::icmp(ip, self.dst, port),
            _ => FlowKey { src: ip, sport: port, ..*self },
        }
    }
    /// This key with destination `ip:port`: how a flow leaves after DNAT.
    /// For ICMP echo only the address changes.
    #[inline]
    pub const fn with_dst(&self, ip: Ipv4Addr, port: u16) -> FlowKey {
        match self.proto {
            Proto::Icmp => FlowKey { dst: ip, ..*self },
            _ => FlowKey { dst: ip, dport: port, ..*self },
        }
    }
    /// The key of a TCP segment, UDP datagram or ICMP echo (request or
    /// reply). An ICMP error gives [`NatDrop::IcmpError`]: see
    /// [`FlowKey::from_icmp_error`].
    pub fn from_ipv4(ip_packet: &[u8]) -> Result<FlowKey, NatDrop> {
        match classify(ip_packet)? {
            Classified::Flow(f) => Ok(f.key),
            Classified::IcmpError(_) => Err(NatDrop::IcmpError),
        }
    }
    /// The key of the packet an ICMP error (types 3, 11, 12) quotes, as
    /// that packet travelled: the flow's other direction from the error's.
    /// An echo gives [`NatDrop::IcmpType`], TCP and UDP
    /// [`NatDrop::Protocol`].
    pub fn from_icmp_error(ip_packet: &[u8]) -> Result<FlowKey, NatDrop> {
        match classify(ip_packet)? {
            Classified::IcmpError(e) => Ok(e.inner),
            Classified::Flow(f) => Err(match f.key.proto {
                // An echo's type byte: checked by `classify`.
                Proto::Icmp => NatDrop::IcmpType(Ipv4Packet::new_unchecked(ip_packet).payload()[0]),
                p => NatDrop::Protocol(p.number()),
            }),
        }
    }
}

impl fmt::Display for FlowKey {
    /// `tcp 10.88.0.2:40000 -> 203.0.113.5:443`, `icmp 10.88.0.2 -> 203.0.113.5 id 7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proto {
            Proto::Icmp => write!(f, "icmp {} -> {} id {}", self.src, self.dst, self.sport),
            p => write!(f, "{} {}:{} -> {}:{}", p.name(), self.src, self.sport, self.dst, self.dport),
        }
    }
}

/// A TCP, UDP or ICMP echo packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub key: FlowKey,
    /// TCP control bits (empty for UDP and ICMP), for the state machine.
    pub tcp_flags: Flags,
    /// IPv4 Total Length, for the byte counters.
    pub len: u16,
    /// The first fragment of a fragmented datagram. The rest of the
    /// datagram has no ports and classifies as [`NatDrop::Fragment`]: tapnet
    /// does not reassemble, so the caller decides whether to pass it.
    pub first_fragment: bool,
}

/// An ICMP error (RFC 792) about a packet of some flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpErrorInfo {
    /// Outer source: the host or router reporting the error.
    pub src: Ipv4Addr,
    /// Outer destination: the quoted packet's source.
    pub dst: Ipv4Addr,
    pub icmp_type: u8,
    pub code: u8,
    /// The quoted packet's key, as it travelled (so the error travels in
    /// the direction of `inner.reverse()`).
    pub inner: FlowKey,
    /// IPv4 Total Length of the error message.
    pub len: u16,
}

/// What an IPv4 packet is to NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    Flow(Flow),
    IcmpError(IcmpErrorInfo),
}

// RFC 792 message types that carry a quoted datagram and are translated.
const ICMP_DST_UNREACHABLE: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAM_PROBLEM: u8 = 12;

/// Offsets inside the transport header of a quoted packet.
const L4_SPORT: usize = 0;
const L4_DPORT: usize = 2;
const ICMP_IDENT: usize = 4;
/// Bytes of the original datagram's data every ICMP error quotes (RFC 792).
pub(crate) const QUOTED_L4_MIN: usize = 8;

/// Classify an IPv4 packet (bytes from the IPv4 header on; bytes after
/// Total Length, such as Ethernet padding, are ignored).
///
/// Header checksums are not verified: a translation updates them
/// incrementally (RFC 1624), which keeps a bad checksum bad, so the
/// receiver still detects the corruption.
#[inline]
pub fn classify(ip_packet: &[u8]) -> Result<Classified, NatDrop> {
    let ip = Ipv4Packet::new_checked(ip_packet)?;
    if ip.frag_offset() != 0 {
        return Err(NatDrop::Fragment);
    }
    let first_fragment = ip.more_frags();
    let (src, dst, len) = (ip.src_addr(), ip.dst_addr(), ip.total_len());
    let payload = ip.payload();
    let flow = |proto, sport, dport, tcp_flags| {
        Classified::Flow(Flow { key: FlowKey { proto, src, sport, dst, dport }, tcp_flags, len, first_fragment })
    };
    match ip.protocol() {
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(payload)?;
            Ok(flow(Proto::Tcp, t.src_port(), t.dst_port(), t.flags()))
        }
        IpProtocol::Udp => {
            // The first fragment holds only the start of the datagram that
            // the UDP Length describes.
            let u = if first_fragment {
                if payload.len() < udp::HEADER_LEN {
                    return Err(NatDrop::Truncated);
                }
                UdpPacket::new_unchecked(payload)
            } else {
                UdpPacket::new_checked(payload)?
            };
            Ok(flow(Proto::Udp, u.src_port(), u.dst_port(), Flags::NONE))
        }
        IpProtocol::Icmp => {
            let m = Icmpv4Packet::new_checked(payload)?;
            match m.msg_type() {
                Message::EchoRequest | Message::EchoReply => {
                    let id = m.echo_ident();
                    Ok(flow(Proto::Icmp, id, id, Flags::NONE))
                }
                Message::DstUnreachable | Message::TimeExceeded | Message::ParamProblem => {
                    if first_fragment {
                        // An error is at most 576 bytes (RFC 1812 §4.3.2.3):
                        // a fragmented one is not worth reassembling.
                        return Err(NatDrop::Fragment);
                    }
                    let inner = quoted_key(m.data())?.key;
                    Ok(Classified::IcmpError(IcmpErrorInfo {
                        src,
                        dst,
                        icmp_type: u8::from(m.msg_type()),
                        code: m.code(),
                        inner,
                        len,
                    }))
                }
                other => Err(NatDrop::IcmpType(u8::from(other))),
            }
        }
        other => Err(NatDrop::Protocol(u8::from(other))),
    }
}

/// True for the ICMP types whose body quotes the offending datagram and
/// which NAT translates (RFC 792: 3, 11, 12).
pub const fn is_translated_icmp_error(icmp_type: u8) -> bool {
    matches!(icmp_type, ICMP_DST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAM_PROBLEM)
}

/// A packet quoted in an ICMP error: its key and where its parts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quoted {
    pub key: FlowKey,
    /// IHL × 4: the transport header starts here.
    pub header_len: usize,
    /// Bytes of the quoted packet present in the error.
    pub len: usize,
}

/// Parse the packet an ICMP error quotes (`data` = the ICMP message after
/// its 8-byte header): an IPv4 header and at least 8 bytes of its data, the
/// rest possibly cut off (RFC 792; RFC 1812 §4.3.2.3 quotes more).
pub(crate) fn quoted_key(data: &[u8]) -> Result<Quoted, NatDrop> {
    if data.len() < ipv4::HEADER_LEN {
        return Err(NatDrop::BadQuote);
    }
    // Only the header itself is checked against the bytes present: the
    // quoted Total Length is the original datagram's, so the wire view's
    // `new_checked`, which checks it, would refuse every truncated quote.
    // The getters used below read only within the first 20 bytes.
    let ip = Ipv4Packet::new_unchecked(data);
    let header_len = ip.header_len();
    if ip.version() != 4 || header_len < ipv4::HEADER_LEN || usize::from(ip.total_len()) < header_len {
        return Err(NatDrop::BadQuote);
    }
    if data.len() < header_len + QUOTED_L4_MIN {
        return Err(NatDrop::BadQuote);
    }
    if ip.frag_offset() != 0 {
        return Err(NatDrop::QuoteNotTranslated);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let l4 = &data[header_len..];
    let key = match ip.protocol() {
        IpProtocol::Tcp | IpProtocol::Udp => {
            let proto = if ip.protocol() == IpProtocol::Tcp { Proto::Tcp } else { Proto::Udp };
            let (sport, dport) = (be16(&l4[L4_SPORT..]), be16(&l4[L4_DPORT..]));
            if proto == Proto::Tcp && l4.len() > 12 && usize::from(l4[12] >> 4) * 4 < tcp::HEADER_LEN {
                return Err(NatDrop::BadQuote);
            }
            FlowKey { proto, src, sport, dst, dport }
        }
        IpProtocol::Icmp => match Message::from(l4[0]) {
            Message::EchoRequest | Message::EchoReply => FlowKey::icmp(src, dst, be16(&l4[ICMP_IDENT..])),
            _ => return Err(NatDrop::QuoteNotTranslated),
        },
        _ => return Err(NatDrop::QuoteNotTranslated),
    };
    Ok(Quoted { key, header_len, len: data.len() })
}

#[cfg(test)]
mod tests {
    use super::super::captured::*;
    use super::*;

    const C: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
    const S: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

    fn flow(b: &[u8]) -> Flow {
        match classify(b).unwrap() {
            Classified::Flow(f) => f,
            other => panic!("not a flow: {other:?}"),
        }
    }

    fn error(b: &[u8]) -> IcmpErrorInfo {
        match classify(b).unwrap() {
            Classified::IcmpError(e) => e,
            other => panic!("not an ICMP error: {other:?}"),
        }
    }

    #[test]
    fn captured_flows() {
        let f = flow(&TCP_SYN);
        assert_eq!(f.key, FlowKey::new(Proto::Tcp, C, 44260, S, 443));
        assert_eq!(f.tcp_flags, Flags::SYN);
        assert_eq!((f.len, f.first_fragment), (60, false));

        let f = flow(&TCP_SYNACK_PARTIAL);
        assert_eq!(f.key, FlowKey::new(Proto::Tcp, C, 44260, S, 443).reverse());
        assert_eq!(f.tcp_flags, Flags::SYN | Flags::ACK);
        assert_eq!(flow(&TCP_DATA).tcp_flags, Flags::PSH | Flags::ACK);

        let f = flow(&UDP_DNS);
        assert_eq!(f.key, FlowKey::new(Proto::Udp, C, 40000, S, 53));
        assert_eq!((f.tcp_flags, f.len), (Flags::NONE, 57));

        let req = flow(&ECHO_REQUEST).key;
        assert_eq!(req, FlowKey::icmp(C, S, 21155));
        assert_eq!(flow(&ECHO_REPLY).key, req.reverse());
        assert_eq!(FlowKey::from_ipv4(&ECHO_REPLY), Ok(req.reverse()));
    }

    #[test]
    fn captured_errors_give_the_quoted_flow() {
        let e = error(&PORT_UNREACHABLE_UDP);
        assert_eq!((e.src, e.dst, e.icmp_type, e.code), (S, C, 3, 3));
        assert_eq!(e.inner, flow(&UDP_DNS).key);

        let e = error(&TIME_EXCEEDED_UDP);
        assert_eq!((e.src, e.dst, e.icmp_type, e.code), (ROUTER, C, 11, 0));
        assert_eq!(e.inner, flow(&UDP_TTL1).key);

        assert_eq!(error(&TIME_EXCEEDED_TCP).inner, flow(&TCP_SYN_TTL1).key);
        assert_eq!(error(&TIME_EXCEEDED_ECHO).inner, FlowKey::icmp(C, S, 21156));

        let e = error(&FRAG_NEEDED_ECHO);
        assert_eq!((e.icmp_type, e.code, e.len), (3, 4, 576));
        assert_eq!(e.inner, FlowKey::icmp(C, S, 21157));

        assert_eq!(FlowKey::from_ipv4(&FRAG_NEEDED_ECHO), Err(NatDrop::IcmpError));
        assert_eq!(FlowKey::from_icmp_error(&FRAG_NEEDED_ECHO), Ok(FlowKey::icmp(C, S, 21157)));
        assert_eq!(FlowKey::from_icmp_error(&ECHO_REQUEST), Err(NatDrop::IcmpType(8)));
        assert_eq!(FlowKey::from_icmp_error(&ECHO_REPLY), Err(NatDrop::IcmpType(0)));
        assert_eq!(FlowKey::from_icmp_error(&TCP_SYN), Err(NatDrop::Protocol(6)));
    }

    #[test]
    fn quote_cut_after_eight_bytes() {
        // RFC 792's minimum: the IP header and the first 8 data bytes. The
        // TCP quote then lacks the checksum; the ports are still there.
        let cut = 20 + 8 + 20 + 8;
        let mut e = TIME_EXCEEDED_TCP[..cut].to_vec();
        e[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
        assert_eq!(error(&e).inner, flow(&TCP_SYN_TTL1).key);
        // One byte less is not enough.
        let mut e = TIME_EXCEEDED_TCP[..cut - 1].to_vec();
        e[2..4].copy_from_slice(&(cut as u16 - 1).to_be_bytes());
        assert_eq!(classify(&e), Err(NatDrop::BadQuote));
    }

    #[test]
    fn reasons() {
        // Non-first fragment of the DNS query: offset 8 bytes.
        let mut b = UDP_DNS;
        b[6..8].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(classify(&b), Err(NatDrop::Fragment));
        // First fragment (MF, offset 0) cut after 8 bytes of UDP: the ports
        // are read although UDP Length covers more than is present.
        let mut b = UDP_DNS[..28].to_vec();
        b[2..4].copy_from_slice(&28u16.to_be_bytes());
        b[6] = 0x20;
        let f = flow(&b);
        assert!(f.first_fragment);
        assert_eq!(f.key.dport, 53);
        // The same without MF is a truncated UDP datagram.
        b[6] = 0x40;
        assert_eq!(classify(&b), Err(NatDrop::Truncated));

        // GRE.
        let mut b = UDP_DNS;
        b[9] = 47;
        assert_eq!(classify(&b), Err(NatDrop::Protocol(47)));
        // ICMP redirect and timestamp request.
        for t in [5u8, 13] {
            let mut b = ECHO_REQUEST;
            b[20] = t;
            assert_eq!(classify(&b), Err(NatDrop::IcmpType(t)));
        }
        // Truncated IPv4 and TCP headers, malformed version and data offset.
        assert_eq!(classify(&TCP_SYN[..19]), Err(NatDrop::Truncated));
        let mut b = TCP_SYN[..30].to_vec();
        b[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(classify(&b), Err(NatDrop::Truncated));
        let mut b = TCP_SYN;
        b[0] = 0x65;
        assert_eq!(classify(&b), Err(NatDrop::Malformed));
        let mut b = TCP_SYN;
        b[32] = 0x40;
        assert_eq!(classify(&b), Err(NatDrop::Malformed));
    }

    #[test]
    fn quote_reasons() {
        // Quoted header: 28 bytes into the error.
        let q = 28;
        let mut b = TIME_EXCEEDED_UDP;
        b[q + 9] = 47; // quoted GRE
        assert_eq!(classify(&b), Err(NatDrop::QuoteNotTranslated));
        let mut b = TIME_EXCEEDED_UDP;
        b[q + 6..q + 8].copy_from_slice(&0x2001u16.to_be_bytes()); // quoted non-first fragment
        assert_eq!(classify(&b), Err(NatDrop::QuoteNotTranslated));
        let mut b = TIME_EXCEEDED_ECHO;
        b[q + 20] = 3; // an error about an error
        assert_eq!(classify(&b), Err(NatDrop::QuoteNotTranslated));
        let mut b = TIME_EXCEEDED_UDP;
        b[q] = 0x44; // quoted IHL 4
        assert_eq!(classify(&b), Err(NatDrop::BadQuote));
        let mut b = TIME_EXCEEDED_UDP;
        b[q] = 0x4f; // quoted IHL 15: 60 bytes of header are not there
        assert_eq!(classify(&b), Err(NatDrop::BadQuote));
        let mut b = TIME_EXCEEDED_TCP;
        b[q + 32] = 0x10; // quoted TCP data offset 1
        assert_eq!(classify(&b), Err(NatDrop::BadQuote));
        // An error with no quote at all.
        let mut b = TIME_EXCEEDED_UDP[..28].to_vec();
        b[2..4].copy_from_slice(&28u16.to_be_bytes());
        assert_eq!(classify(&b), Err(NatDrop::BadQuote));
    }

    #[test]
    fn matches_etherparse() {
        for b in [&TCP_SYN[..], &TCP_DATA, &UDP_DNS, &UDP_TTL1, &TCP_SYN_TTL1, &ECHO_REQUEST, &ECHO_REPLY] {
            let p = etherparse::SlicedPacket::from_ip(b).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!("no IPv4") };
            let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
            let want = match p.transport.unwrap() {
                etherparse::TransportSlice::Tcp(t) => {
                    FlowKey::new(Proto::Tcp, src, t.source_port(), dst, t.destination_port())
                }
                etherparse::TransportSlice::Udp(u) => {
                    FlowKey::new(Proto::Udp, src, u.source_port(), dst, u.destination_port())
                }
                etherparse::TransportSlice::Icmpv4(i) => match i.icmp_type() {
                    etherparse::Icmpv4Type::EchoRequest(h) | etherparse::Icmpv4Type::EchoReply(h) => {
                        FlowKey::icmp(src, dst, h.id)
                    }
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            };
            assert_eq!(FlowKey::from_ipv4(b), Ok(want));
        }
    }

    #[test]
    fn reverse_and_display() {
        let k = FlowKey::new(Proto::Udp, C, 40000, S, 53);
        assert_eq!(k.reverse(), FlowKey::new(Proto::Udp, S, 53, C, 40000));
        assert_eq!(k.reverse().reverse(), k);
        assert_eq!(k.to_string(), "udp 10.88.0.2:40000 -> 203.0.113.5:53");
        assert_eq!(FlowKey::icmp(C, S, 7).to_string(), "icmp 10.88.0.2 -> 203.0.113.5 id 7");
        assert_eq!(FlowKey::icmp(C, S, 7).reverse(), FlowKey::icmp(S, C, 7));
        for p in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
            assert_eq!(Proto::from_number(p.number()), Some(p));
            assert_eq!(u8::from(IpProtocol::from(p)), p.number());
        }
        assert_eq!(Proto::from_number(47), None);
    }

    #[test]
    fn with_src_and_dst() {
        let k = FlowKey::new(Proto::Tcp, C, 40000, S, 443);
        assert_eq!(k.with_src(ROUTER, 1), FlowKey::new(Proto::Tcp, ROUTER, 1, S, 443));
        assert_eq!(k.with_dst(ROUTER, 80), FlowKey::new(Proto::Tcp, C, 40000, ROUTER, 80));
        let e = FlowKey::icmp(C, S, 7);
        assert_eq!(e.with_src(ROUTER, 9), FlowKey::icmp(ROUTER, S, 9));
        assert_eq!(e.with_dst(ROUTER, 9), FlowKey::icmp(C, ROUTER, 7));
    }

    #[test]
    fn hash_tells_fields_apart() {
        use core::hash::BuildHasher;
        let h = hashbrown::DefaultHashBuilder::default();
        let k = FlowKey::new(Proto::Tcp, C, 1, S, 2);
        let variants = [
            FlowKey { proto: Proto::Udp, ..k },
            FlowKey { src: ROUTER, ..k },
            FlowKey { sport: 2, ..k },
            FlowKey { dst: ROUTER, ..k },
            FlowKey { dport: 1, ..k },
            k.reverse(),
        ];
        for v in variants {
            assert_ne!(h.hash_one(k), h.hash_one(v), "{v:?}");
        }
        assert_eq!(h.hash_one(k), h.hash_one(FlowKey::new(Proto::Tcp, C, 1, S, 2)));
    }
}
