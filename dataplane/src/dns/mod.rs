//! tapnet's embedded DNS: the dataplane answers at each network's gateway
//! address, over UDP and TCP port 53, with the A records of the containers
//! on that network (issue 7), as Docker's embedded DNS does.
//!
//! - [`table`]: a network's names, built by the control plane and shared
//!   read-only with the workers.
//! - This file: the UDP responder, [`respond_udp`] and [`refuse_udp`].
//! - [`tcp`]: DNS over TCP with no per-connection state (SYN cookies).
//! - [`cookie`]: the SYN cookies.
//!
//! # Calling it
//!
//! The worker hands over an Ethernet frame addressed to the gateway
//! (IPv4, UDP or TCP, destination port 53), without its virtio-net header,
//! at the start of a buffer with spare room after it: `buf[..len]` is the
//! frame and `buf.len()` the capacity. The functions check every header
//! again, so a misdirected frame is dropped rather than misread. They
//! rewrite the frame **in place** into the reply (MAC and IP addresses and
//! ports swapped; a fresh 20-byte IPv4 header with DF, TTL 64 and the
//! caller's `ip_id`; full UDP or TCP checksum) and say what they did. The
//! reply goes back out of the port the query came from, behind a
//! virtio-net header with no flags and no GSO: its checksums are complete.
//!
//! Checksums of incoming frames: the IPv4 header checksum is verified. The
//! UDP and TCP checksums are not: a TAP with checksum offload hands over
//! partial checksums (`VIRTIO_NET_HDR_F_NEEDS_CSUM`), and the frame crossed
//! no wire, only the container's kernel.
//!
//! # What is answered, and how
//!
//! | query | outcome |
//! |---|---|
//! | IN or ANY class, name in the table, QTYPE A or ANY | `Reply`: NOERROR, AA, every address of the name, TTL from the table |
//! | the same with another QTYPE (AAAA, MX, …) | `Reply`: NOERROR, AA, no answer (NODATA, RFC 2308 §2.2; no SOA, so it is not cached) |
//! | a well-formed query for any other name or class | `NotOurs`: frame untouched; the caller forwards it, or calls `refuse_*` for REFUSED or SERVFAIL at once |
//! | Opcode other than QUERY | `NotImp`: NOTIMP, header only (RFC 1035 §4.1.1) |
//! | QDCOUNT ≠ 1 (RFC 9619 §4), malformed question, malformed or misplaced records, duplicate OPT | `FormErr`: FORMERR, header only |
//! | EDNS version above 0 | `BadVers`: BADVERS with an OPT of version 0 (RFC 6891 §6.1.3) |
//! | fewer than 12 bytes, QR set (a response), frames that are not IPv4/UDP or TCP to port 53, fragments, bad IPv4 header, group or zero addresses | `Drop(reason)`, nothing sent |
//!
//! Every reply keeps the query's ID, Opcode, RD and CD, sets QR and RA
//! (the gateway is the containers' resolver and may forward), clears AD
//! and Z, and echoes the question byte for byte (so mixed-case "0x20"
//! queries match).
//!
//! EDNS(0) (RFC 6891): a query with an OPT record gets an OPT record back,
//! with our UDP payload size (the table's, 1232 by default), version 0,
//! the DO bit copied (RFC 3225 §3) and no options; EDNS options such as
//! COOKIE (RFC 7873) are ignored, as §6.1.2 allows. A query without one
//! gets none.
//!
//! Size: a UDP reply is at most 512 bytes, or the client's EDNS payload
//! size (at least 512, RFC 6891 §6.2.5) capped by ours. Answers that do not
//! fit are left out and set TC (RFC 2181 §9), so the client retries over
//! TCP; the ones that fit stay.
//!
//! No allocation, lock, I/O or clock read happens here, and no input makes
//! any function panic.

// Nothing here needs a system call; only the privileged test does.
#![deny(unsafe_code)]

pub mod cookie;
pub mod table;
pub mod tcp;

pub use cookie::CookieKey;
pub use table::{DnsTable, TableError};
pub use tcp::{refuse_tcp, respond_tcp, RstReason, TcpConfig, TcpOutcome};

use core::ops::Range;
use std::net::Ipv4Addr;

use crate::wire::dns::{self as wire, Class, Opcode, Opt, Rcode, Response, Type, MIN_UDP_PAYLOAD};
use crate::wire::{ethernet, ipv4, udp, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, UdpPacket, WireError};

/// The DNS port (RFC 1035 §4.2).
pub const PORT: u16 = 53;
/// TTL of the IPv4 header of every reply.
pub const IP_TTL: u8 = 64;
/// Where the IPv4 header of a reply starts.
const IP_OFFSET: usize = ethernet::HEADER_LEN;
/// Where the transport header of a reply starts: its IPv4 header has no
/// options.
const L4_OFFSET: usize = IP_OFFSET + ipv4::HEADER_LEN;
/// Where the DNS message of a UDP reply starts.
const UDP_MSG_OFFSET: usize = L4_OFFSET + udp::HEADER_LEN;
/// Largest DNS message in one UDP reply: IPv4 Total Length is 16 bits.
const MAX_UDP_MSG: usize = u16::MAX as usize - ipv4::HEADER_LEN - udp::HEADER_LEN;

/// Why a frame got no reply at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not Ethernet II / IPv4 / UDP or TCP to port 53: the caller's
    /// dispatch sent a frame that is not for the DNS responder.
    NotDns,
    /// The frame ends before a header, or before IPv4 Total Length or UDP
    /// Length; or `len` is beyond the buffer.
    Truncated,
    /// Bad IPv4 version, IHL or Total Length, or a wrong header checksum.
    BadIpHeader,
    /// UDP Length below 8 or TCP Data Offset below 5.
    BadTransportHeader,
    /// An IPv4 fragment: never reassembled.
    Fragment,
    /// A source or destination a reply must not go to or come from: a
    /// group or zero MAC address; an unspecified, broadcast, multicast or
    /// loopback IPv4 address; port 0.
    BadAddress,
    /// A DNS message shorter than its 12-byte header.
    ShortMessage,
    /// QR is set: a response sent to the server. Answering it could start
    /// a loop between two servers.
    Response,
    /// TCP SYN with FIN: no legitimate client sends it.
    BadFlags,
    /// The buffer has no room for the reply.
    NoRoom,
}

/// What [`respond_udp`] or [`refuse_udp`] did. A length means the frame
/// was rewritten in place into a reply of that length, ready to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// NOERROR for a name in the table: its A records, or NODATA.
    Reply(usize),
    /// A well-formed query for a name (or class) not in the table. The
    /// frame is untouched: forward it, or answer it with [`refuse_udp`].
    NotOurs,
    /// FORMERR: a malformed query whose header could be answered.
    FormErr(usize),
    /// NOTIMP: an Opcode other than QUERY.
    NotImp(usize),
    /// BADVERS: an EDNS version other than 0.
    BadVers(usize),
    /// The caller's RCODE (REFUSED, SERVFAIL, ...) from `refuse_*`.
    Refused(usize),
    /// No reply.
    Drop(DropReason),
}

impl Outcome {
    /// The length of the reply frame, if there is one to send.
    pub const fn reply_len(&self) -> Option<usize> {
        match *self {
            Outcome::Reply(n)
            | Outcome::FormErr(n)
            | Outcome::NotImp(n)
            | Outcome::BadVers(n)
            | Outcome::Refused(n) => Some(n),
            Outcome::NotOurs | Outcome::Drop(_) => None,
        }
    }
}

/// What a DNS message asks for, decided before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan<'t> {
    /// NOERROR with these addresses (none: NODATA).
    Answer {
        question_end: usize,
        opt: Option<Opt>,
        addrs: &'t [Ipv4Addr],
    },
    /// Well-formed, not in the table.
    NotOurs {
        question_end: usize,
        opt: Option<Opt>,
    },
    FormErr,
    NotImp,
    BadVers {
        question_end: usize,
        opt: Opt,
    },
    Drop(DropReason),
}

/// Which reply a plan became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Answer,
    FormErr,
    NotImp,
    BadVers,
    Refused,
}

impl Written {
    fn outcome(self, len: usize) -> Outcome {
        match self {
            Written::Answer => Outcome::Reply(len),
            Written::FormErr => Outcome::FormErr(len),
            Written::NotImp => Outcome::NotImp(len),
            Written::BadVers => Outcome::BadVers(len),
            Written::Refused => Outcome::Refused(len),
        }
    }
}

/// Decide how to answer the DNS message `msg` from `table`.
fn plan<'t>(msg: &[u8], table: &'t DnsTable) -> Plan<'t> {
    let Ok(p) = wire::Packet::new_checked(msg) else { return Plan::Drop(DropReason::ShortMessage) };
    if p.is_response() {
        return Plan::Drop(DropReason::Response);
    }
    if p.opcode() != Opcode::Query {
        return Plan::NotImp;
    }
    if p.question_count() != 1 {
        return Plan::FormErr;
    }
    let Ok(q) = p.question() else { return Plan::FormErr };
    let Ok(opt) = p.find_opt(q.end()) else { return Plan::FormErr };
    let question_end = q.end();
    if let Some(o) = opt {
        if o.version != 0 {
            return Plan::BadVers { question_end, opt: o };
        }
    }
    if !matches!(q.qclass, Class::In | Class::Any) {
        return Plan::NotOurs { question_end, opt };
    }
    match table.lookup_in_message(msg, q.name.start) {
        Ok(Some(addrs)) => {
            let addrs = if matches!(q.qtype, Type::A | Type::Any) { addrs } else { &[] };
            Plan::Answer { question_end, opt, addrs }
        }
        Ok(None) => Plan::NotOurs { question_end, opt },
        // The question parsed, so its name decodes; this is unreachable
        // but answering FORMERR is the right thing if it ever happens.
        Err(_) => Plan::FormErr,
    }
}

/// The OPT record of our reply to a query that had `opt`.
fn reply_opt(opt: Option<Opt>, table: &DnsTable) -> Option<Opt> {
    opt.map(|o| Opt { udp_payload_size: table.max_udp_payload(), ext_rcode: 0, version: 0, dnssec_ok: o.dnssec_ok })
}

/// Write the reply `plan` calls for over the query at the start of `buf`,
/// at most `limit` bytes long. `refusal` answers `NotOurs` with that RCODE
/// (and a table hit too: the caller asked to refuse). `None` if the plan
/// sends nothing, or the buffer cannot hold the reply.
fn write(
    buf: &mut [u8],
    plan: Plan<'_>,
    table: &DnsTable,
    limit: usize,
    refusal: Option<Rcode>,
) -> Option<(usize, Written)> {
    let header_only = |buf: &mut [u8], rcode| {
        let mut r = Response::new(buf, wire::HEADER_LEN, limit, rcode, None).ok()?;
        r.set_recursion_available(true);
        Some(r.finish())
    };
    match (plan, refusal) {
        (Plan::Drop(_), _) | (Plan::NotOurs { .. }, None) => None,
        (Plan::FormErr, _) => Some((header_only(buf, Rcode::FormErr)?, Written::FormErr)),
        (Plan::NotImp, _) => Some((header_only(buf, Rcode::NotImp)?, Written::NotImp)),
        (Plan::BadVers { question_end, opt }, _) => {
            let opt = reply_opt(Some(opt), table);
            let mut r = Response::new(buf, question_end, limit, Rcode::BadVers, opt).ok()?;
            r.set_recursion_available(true);
            Some((r.finish(), Written::BadVers))
        }
        (Plan::Answer { question_end, opt, .. } | Plan::NotOurs { question_end, opt }, Some(rcode)) => {
            let mut r = Response::new(buf, question_end, limit, rcode, reply_opt(opt, table)).ok()?;
            r.set_recursion_available(true);
            Some((r.finish(), Written::Refused))
        }
        (Plan::Answer { question_end, opt, addrs }, None) => {
            let mut r = Response::new(buf, question_end, limit, Rcode::NoError, reply_opt(opt, table)).ok()?;
            r.set_authoritative(true);
            r.set_recursion_available(true);
            for &a in addrs {
                if !r.push_a(table.ttl(), a) {
                    break;
                }
            }
            Some((r.finish(), Written::Answer))
        }
    }
}

/// The UDP payload limit for a query that had `opt` (RFC 6891 §6.2.3-5).
fn udp_limit(opt: Option<Opt>, table: &DnsTable) -> usize {
    match opt {
        None => MIN_UDP_PAYLOAD,
        Some(o) => usize::from(o.udp_payload_size).clamp(MIN_UDP_PAYLOAD, usize::from(table.max_udp_payload())),
    }
}

/// An address a reply may come from or go to.
fn unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
}

/// An Ethernet/IPv4 frame checked for a reply: its addresses, and where
/// the transport segment is.
#[derive(Debug, Clone)]
struct Ip {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    /// The transport segment: from after the IPv4 header to Total Length.
    l4: Range<usize>,
}

/// Check the Ethernet and IPv4 headers of `frame` for a reply.
fn parse_ip(frame: &[u8], protocol: IpProtocol) -> Result<Ip, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Truncated)?;
    if eth.ethertype() != EtherType::Ipv4 {
        return Err(DropReason::NotDns);
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|e| match e {
        WireError::Truncated => DropReason::Truncated,
        WireError::Malformed => DropReason::BadIpHeader,
    })?;
    if !ip.verify_checksum() {
        return Err(DropReason::BadIpHeader);
    }
    if ip.is_fragment() {
        return Err(DropReason::Fragment);
    }
    if ip.protocol() != protocol {
        return Err(DropReason::NotDns);
    }
    if !eth.src().is_unicast() || !eth.dst().is_unicast() || !unicast(ip.src_addr()) || !unicast(ip.dst_addr()) {
        return Err(DropReason::BadAddress);
    }
    let start = IP_OFFSET + ip.header_len();
    Ok(Ip { src: ip.src_addr(), dst: ip.dst_addr(), l4: start..IP_OFFSET + usize::from(ip.total_len()) })
}

/// Swap the frame's MAC addresses and write a fresh IPv4 header from the
/// query's destination to its source, carrying `payload_len` bytes. The
/// buffer must hold `L4_OFFSET` bytes; `payload_len` at most 65515.
fn write_eth_ip(buf: &mut [u8], ip: &Ip, protocol: IpProtocol, payload_len: usize, ip_id: u16) {
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    let (client, gateway) = (eth.src(), eth.dst());
    eth.set_src(gateway);
    eth.set_dst(client);
    eth.set_ethertype(EtherType::Ipv4);
    let repr = ipv4::Repr {
        src_addr: ip.dst,
        dst_addr: ip.src,
        protocol,
        payload_len,
        ttl: IP_TTL,
        ident: ip_id,
        dont_frag: true,
    };
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[IP_OFFSET..L4_OFFSET]));
}

/// Answer the DNS query in the UDP frame `buf[..len]` from `table`, in
/// place. `ip_id` is the IPv4 Identification of the reply.
///
/// A query for a name not in the table gives [`Outcome::NotOurs`] and
/// leaves the frame as it was.
pub fn respond_udp(buf: &mut [u8], len: usize, table: &DnsTable, ip_id: u16) -> Outcome {
    udp(buf, len, table, None, ip_id)
}

/// Answer the DNS query in the UDP frame `buf[..len]` with `rcode`
/// (typically REFUSED or SERVFAIL), in place, whatever its name: the
/// question is echoed, with no answer, and an OPT record if the query had
/// one. For a query that [`respond_udp`] found `NotOurs` and the caller
/// will not forward. Malformed queries get what `respond_udp` gives them.
pub fn refuse_udp(buf: &mut [u8], len: usize, table: &DnsTable, rcode: Rcode, ip_id: u16) -> Outcome {
    udp(buf, len, table, Some(rcode), ip_id)
}

fn udp(buf: &mut [u8], len: usize, table: &DnsTable, refusal: Option<Rcode>, ip_id: u16) -> Outcome {
    let Some(frame) = buf.get(..len) else { return Outcome::Drop(DropReason::Truncated) };
    let ip = match parse_ip(frame, IpProtocol::Udp) {
        Ok(ip) => ip,
        Err(r) => return Outcome::Drop(r),
    };
    let seg = match UdpPacket::new_checked(&frame[ip.l4.clone()]) {
        Ok(s) => s,
        Err(WireError::Truncated) => return Outcome::Drop(DropReason::Truncated),
        Err(WireError::Malformed) => return Outcome::Drop(DropReason::BadTransportHeader),
    };
    if seg.dst_port() != PORT {
        return Outcome::Drop(DropReason::NotDns);
    }
    let client_port = seg.src_port();
    if client_port == 0 {
        return Outcome::Drop(DropReason::BadAddress);
    }
    let msg_start = ip.l4.start + udp::HEADER_LEN;
    let msg_len = seg.payload().len();
    let plan = plan(seg.payload(), table);
    let opt = match plan {
        Plan::NotOurs { .. } if refusal.is_none() => return Outcome::NotOurs,
        Plan::Drop(r) => return Outcome::Drop(r),
        Plan::Answer { opt, .. } | Plan::NotOurs { opt, .. } => opt,
        Plan::BadVers { opt, .. } => Some(opt),
        Plan::FormErr | Plan::NotImp => None,
    };
    if buf.len() < UDP_MSG_OFFSET {
        return Outcome::Drop(DropReason::NoRoom);
    }
    // IPv4 options are not echoed: the message moves up behind a 20-byte
    // header (a no-op for the usual header without options).
    buf.copy_within(msg_start..msg_start + msg_len, UDP_MSG_OFFSET);
    let limit = udp_limit(opt, table).min(MAX_UDP_MSG);
    let Some((n, written)) = write(&mut buf[UDP_MSG_OFFSET..], plan, table, limit, refusal) else {
        return Outcome::Drop(DropReason::NoRoom);
    };
    write_eth_ip(buf, &ip, IpProtocol::Udp, udp::HEADER_LEN + n, ip_id);
    let mut seg = UdpPacket::new_unchecked(&mut buf[L4_OFFSET..UDP_MSG_OFFSET + n]);
    udp::Repr { src_port: PORT, dst_port: client_port, payload_len: n }.emit(&mut seg);
    seg.fill_checksum_ipv4(ip.dst, ip.src);
    written.outcome(UDP_MSG_OFFSET + n)
}

#[cfg(test)]
#[allow(unsafe_code)]
mod kernel_tests;
#[cfg(test)]
mod tests;
