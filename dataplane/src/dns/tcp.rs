//! DNS over TCP (RFC 1035 §4.2.2, RFC 7766) at the gateway, with no
//! per-connection state, so a SYN flood costs one hash per SYN and nothing
//! else.
//!
//! The gateway never holds a connection. Its SYN-ACK's sequence number is
//! a SYN cookie ([`super::cookie`]); the segment carrying the query proves
//! with its acknowledgment number that the client got it, and is answered
//! at once by a single segment that carries the whole answer and closes
//! our side. Each incoming segment is handled on its own:
//!
//! | segment from the client | reply |
//! |---|---|
//! | SYN | SYN-ACK: ISN = cookie, ACK = ISN(client) + 1, MSS option = [`TcpConfig::mss`], window 65535, no other option (so no window scaling, SACK or timestamps) |
//! | ACK with data, valid cookie, the whole length-prefixed query | ACK+PSH+FIN: SEQ = cookie + 1, ACK = the end of the query (and of the client's FIN if it came along), 2-byte length + answer |
//! | the same, for a name not in the table | `NotOurs`, frame untouched: forward, or [`refuse_tcp`] |
//! | ACK with data, valid cookie, only part of a query | RST (`Partial`) |
//! | ACK with data, valid cookie, less than a DNS header, or a response | RST (`BadMessage`) |
//! | ACK with data, bad or expired cookie | RST (`BadCookie`) |
//! | FIN (with ACK, no data) | ACK of the FIN: SEQ = SEG.ACK, ACK = SEG.SEQ + 1 |
//! | ACK with no data: the handshake's third segment, or the client acknowledging our answer and FIN | nothing, whatever its numbers: the second kind is not at ISN + 1, so no cookie can be checked, and a bad one would only get a RST later, with its data |
//! | RST | nothing |
//! | SYN+ACK | RST (`SynAck`) |
//! | no ACK, no SYN, no RST | RST+ACK (`NoAck`) |
//! | SYN+FIN | dropped (`BadFlags`) |
//!
//! RSTs follow RFC 9293 §3.10.7.1 for a connection that does not exist:
//! `<SEQ=SEG.ACK><CTL=RST>` when the segment had ACK, else
//! `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`.
//!
//! A cookie only validates the segment whose sequence number is the
//! client's ISN + 1, as Linux's SYN cookies do for the third segment of
//! the handshake. So the query must start the client's byte stream and
//! arrive whole in one segment. That is what stub resolvers do: one
//! length-prefixed query, written at once, a few hundred bytes at most,
//! far below the MSS. A query split over several segments gets a RST as
//! soon as its first part arrives (`Partial`), and the client fails over
//! or retries at once instead of waiting for a timeout. A second query
//! pipelined behind the first (RFC 7766 §6.2.1.1) is not acknowledged; the
//! client retransmits it after our FIN, and that segment, not at ISN + 1,
//! gets a RST. A FIN cannot be validated (its sequence number is not the
//! ISN + 1), so any FIN is acknowledged: one small segment for one, no
//! amplification.
//!
//! The answer segment is sized to the client's MSS, which the cookie
//! remembers (rounded down to an entry of [`super::cookie::MSS_TABLE`]);
//! answers that do not fit set TC as over UDP. A container's names take a
//! few hundred bytes, so in practice nothing is cut.
//!
//! Retransmissions need no state either: a lost SYN-ACK is answered again
//! when the SYN is retransmitted (the same cookie within a time slot), and
//! a lost answer when the query is.

use super::cookie::{self, CookieKey, FourTuple};
use super::{parse_ip, plan, write, write_eth_ip, DnsTable, DropReason, Ip, Plan, Written, L4_OFFSET, PORT};
use crate::wire::dns::Rcode;
use crate::wire::tcp::{self, Flags};
use crate::wire::{ipv4, IpProtocol, TcpPacket, WireError};

/// Receive window in every segment we send. No window scaling.
pub const WINDOW: u16 = u16::MAX;
/// The MSS assumed when a SYN has no MSS option (RFC 9293 §3.7.1).
pub const DEFAULT_MSS: u16 = 536;
/// The MSS option: kind 2, length 4 (RFC 9293 §3.2).
const OPT_MSS: u8 = 2;
const OPT_MSS_LEN: usize = 4;
/// Where the 2-byte length of the answer starts.
const LEN_OFFSET: usize = L4_OFFSET + tcp::HEADER_LEN;
/// Where the DNS message of an answer segment starts.
const MSG_OFFSET: usize = LEN_OFFSET + 2;
/// A segment with no options and no data.
const BARE_LEN: usize = L4_OFFSET + tcp::HEADER_LEN;
/// A SYN-ACK with its MSS option.
const SYN_ACK_LEN: usize = BARE_LEN + OPT_MSS_LEN;
/// Largest DNS message in one answer segment: IPv4 Total Length is 16 bits.
const MAX_TCP_MSG: usize = u16::MAX as usize - ipv4::HEADER_LEN - tcp::HEADER_LEN - 2;

/// Settings of the TCP responder, the same for every network.
#[derive(Debug, Clone, Copy)]
pub struct TcpConfig {
    /// The SYN cookie secret: 16 random bytes from the OS at start-up.
    pub key: CookieKey,
    /// The MSS we announce: what the gateway accepts in one segment,
    /// usually the network's MTU less 40.
    pub mss: u16,
}

/// Why a segment got a RST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RstReason {
    /// Data whose acknowledgment number is not a cookie of ours for this
    /// connection and time, or whose sequence number is not the ISN + 1.
    BadCookie,
    /// A segment without ACK (and without SYN or RST).
    NoAck,
    /// A SYN-ACK: the gateway never opens connections.
    SynAck,
    /// Valid cookie, but the segment holds only part of the query.
    Partial,
    /// Valid cookie, but the message is shorter than a DNS header or is a
    /// response.
    BadMessage,
}

/// What [`respond_tcp`] or [`refuse_tcp`] did. A length means the frame
/// was rewritten in place into a reply of that length, ready to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOutcome {
    /// SYN-ACK with a cookie.
    SynAck(usize),
    /// The answer segment, NOERROR for a name in the table.
    Reply(usize),
    /// The answer segment, FORMERR.
    FormErr(usize),
    /// The answer segment, NOTIMP.
    NotImp(usize),
    /// The answer segment, BADVERS.
    BadVers(usize),
    /// The answer segment with the caller's RCODE, from [`refuse_tcp`].
    Refused(usize),
    /// A valid query for a name not in the table; the frame is untouched.
    NotOurs,
    /// ACK of the client's FIN.
    Ack(usize),
    /// A RST.
    Rst(usize, RstReason),
    /// Nothing to send, and nothing wrong: a RST, or a pure ACK.
    Ignore,
    /// Nothing to send: the frame is not one to answer.
    Drop(DropReason),
}

impl TcpOutcome {
    /// The length of the reply frame, if there is one to send.
    pub const fn reply_len(&self) -> Option<usize> {
        match *self {
            TcpOutcome::SynAck(n)
            | TcpOutcome::Reply(n)
            | TcpOutcome::FormErr(n)
            | TcpOutcome::NotImp(n)
            | TcpOutcome::BadVers(n)
            | TcpOutcome::Refused(n)
            | TcpOutcome::Ack(n)
            | TcpOutcome::Rst(n, _) => Some(n),
            TcpOutcome::NotOurs | TcpOutcome::Ignore | TcpOutcome::Drop(_) => None,
        }
    }
}

/// Handle the TCP segment to port 53 in the frame `buf[..len]`, in place.
/// `now_ms` is the time for the cookies, `ip_id` the IPv4 Identification of
/// the reply.
pub fn respond_tcp(
    buf: &mut [u8],
    len: usize,
    table: &DnsTable,
    cfg: &TcpConfig,
    now_ms: u64,
    ip_id: u16,
) -> TcpOutcome {
    handle(buf, len, table, cfg, now_ms, ip_id, None)
}

/// [`respond_tcp`], but a valid query is answered with `rcode` (REFUSED,
/// SERVFAIL, ...) whatever its name: for a query `respond_tcp` found
/// `NotOurs` and the caller will not forward. Other segments get what
/// `respond_tcp` gives them.
pub fn refuse_tcp(
    buf: &mut [u8],
    len: usize,
    table: &DnsTable,
    cfg: &TcpConfig,
    now_ms: u64,
    ip_id: u16,
    rcode: Rcode,
) -> TcpOutcome {
    handle(buf, len, table, cfg, now_ms, ip_id, Some(rcode))
}

/// The MSS option of a SYN's options, if there is a well-formed one.
fn client_mss(options: &[u8]) -> Option<u16> {
    let mut i = 0;
    while let Some(&kind) = options.get(i) {
        match kind {
            0 => return None, // End of Option List
            1 => i += 1,      // No-Operation
            _ => {
                let len = usize::from(*options.get(i + 1)?);
                if len < 2 {
                    return None;
                }
                if kind == OPT_MSS && len == OPT_MSS_LEN {
                    let v = options.get(i + 2..i + 4)?;
                    return Some(u16::from_be_bytes([v[0], v[1]]));
                }
                i += len;
            }
        }
    }
    None
}

/// A reply segment's fields.
struct Segment {
    client_port: u16,
    seq: u32,
    ack: u32,
    flags: Flags,
    window: u16,
}

/// Write the headers of a segment to the client whose options and data
/// are already in place after a 20-byte IPv4 header, and its checksum;
/// the frame length. The buffer must hold the frame.
fn emit(buf: &mut [u8], ip: &Ip, s: &Segment, options_len: usize, data_len: usize, ip_id: u16) -> usize {
    let seg_len = tcp::HEADER_LEN + options_len + data_len;
    write_eth_ip(buf, ip, IpProtocol::Tcp, seg_len, ip_id);
    let mut seg = TcpPacket::new_unchecked(&mut buf[L4_OFFSET..L4_OFFSET + seg_len]);
    let repr = tcp::Repr {
        src_port: PORT,
        dst_port: s.client_port,
        seq_number: s.seq,
        ack_number: s.ack,
        flags: s.flags,
        window_len: s.window,
    };
    repr.emit(&mut seg);
    seg.set_header_len(tcp::HEADER_LEN + options_len);
    seg.fill_checksum_ipv4(ip.dst, ip.src);
    L4_OFFSET + seg_len
}

fn rst(
    buf: &mut [u8],
    ip: &Ip,
    client_port: u16,
    seq: u32,
    ack: Option<u32>,
    why: RstReason,
    ip_id: u16,
) -> TcpOutcome {
    let flags = if ack.is_some() { Flags::RST | Flags::ACK } else { Flags::RST };
    let s = Segment { client_port, seq, ack: ack.unwrap_or(0), flags, window: 0 };
    TcpOutcome::Rst(emit(buf, ip, &s, 0, 0, ip_id), why)
}

fn handle(
    buf: &mut [u8],
    len: usize,
    table: &DnsTable,
    cfg: &TcpConfig,
    now_ms: u64,
    ip_id: u16,
    refusal: Option<Rcode>,
) -> TcpOutcome {
    let Some(frame) = buf.get(..len) else { return TcpOutcome::Drop(DropReason::Truncated) };
    let ip = match parse_ip(frame, IpProtocol::Tcp) {
        Ok(ip) => ip,
        Err(r) => return TcpOutcome::Drop(r),
    };
    let seg = match TcpPacket::new_checked(&frame[ip.l4.clone()]) {
        Ok(s) => s,
        Err(WireError::Truncated) => return TcpOutcome::Drop(DropReason::Truncated),
        Err(WireError::Malformed) => return TcpOutcome::Drop(DropReason::BadTransportHeader),
    };
    if seg.dst_port() != PORT {
        return TcpOutcome::Drop(DropReason::NotDns);
    }
    let client_port = seg.src_port();
    if client_port == 0 {
        return TcpOutcome::Drop(DropReason::BadAddress);
    }
    let (flags, seq, ack) = (seg.flags(), seg.seq_number(), seg.ack_number());
    let data_len = seg.payload().len();
    let fin = flags.contains(Flags::FIN);
    let tuple = FourTuple { src_addr: ip.src, src_port: client_port, dst_addr: ip.dst, dst_port: PORT };

    if flags.contains(Flags::RST) {
        return TcpOutcome::Ignore;
    }
    if flags.contains(Flags::SYN) {
        if flags.contains(Flags::ACK) {
            return rst(buf, &ip, client_port, ack, None, RstReason::SynAck, ip_id);
        }
        if fin {
            return TcpOutcome::Drop(DropReason::BadFlags);
        }
        if buf.len() < SYN_ACK_LEN {
            return TcpOutcome::Drop(DropReason::NoRoom);
        }
        let mss = client_mss(seg.options()).unwrap_or(DEFAULT_MSS);
        let isn = cookie::make(&cfg.key, &tuple, seq, mss, now_ms);
        let mut option = [OPT_MSS, OPT_MSS_LEN as u8, 0, 0];
        option[2..].copy_from_slice(&cfg.mss.to_be_bytes());
        buf[BARE_LEN..SYN_ACK_LEN].copy_from_slice(&option);
        let s =
            Segment { client_port, seq: isn, ack: seq.wrapping_add(1), flags: Flags::SYN | Flags::ACK, window: WINDOW };
        return TcpOutcome::SynAck(emit(buf, &ip, &s, OPT_MSS_LEN, 0, ip_id));
    }
    if !flags.contains(Flags::ACK) {
        // SEG.LEN counts the FIN (RFC 9293 §3.4).
        let seg_len = (data_len as u32).wrapping_add(u32::from(fin));
        return rst(buf, &ip, client_port, 0, Some(seq.wrapping_add(seg_len)), RstReason::NoAck, ip_id);
    }
    if data_len == 0 {
        if !fin {
            return TcpOutcome::Ignore;
        }
        let s = Segment { client_port, seq: ack, ack: seq.wrapping_add(1), flags: Flags::ACK, window: WINDOW };
        return TcpOutcome::Ack(emit(buf, &ip, &s, 0, 0, ip_id));
    }
    let Some(peer_mss) = cookie::check(&cfg.key, &tuple, seq.wrapping_sub(1), ack.wrapping_sub(1), now_ms) else {
        return rst(buf, &ip, client_port, ack, None, RstReason::BadCookie, ip_id);
    };
    let data = seg.payload();
    let msg_len = match data {
        [hi, lo, rest @ ..] if rest.len() >= usize::from(u16::from_be_bytes([*hi, *lo])) => {
            usize::from(u16::from_be_bytes([*hi, *lo]))
        }
        _ => return rst(buf, &ip, client_port, ack, None, RstReason::Partial, ip_id),
    };
    let msg = &data[2..2 + msg_len];
    let plan = plan(msg, table);
    match plan {
        Plan::NotOurs { .. } if refusal.is_none() => return TcpOutcome::NotOurs,
        Plan::Drop(_) => return rst(buf, &ip, client_port, ack, None, RstReason::BadMessage, ip_id),
        _ => {}
    }
    // Acknowledge this query, and the client's FIN if nothing follows it.
    let consumed = 2 + msg_len + usize::from(fin && data_len == 2 + msg_len);
    let msg_start = ip.l4.start + seg.header_len() + 2;
    let limit = usize::from(peer_mss).saturating_sub(2).min(MAX_TCP_MSG);
    if buf.len() < MSG_OFFSET {
        return TcpOutcome::Drop(DropReason::NoRoom);
    }
    // IPv4 and TCP options are not echoed: the message moves up behind
    // bare headers (a no-op for a segment without options).
    buf.copy_within(msg_start..msg_start + msg_len, MSG_OFFSET);
    let Some((n, written)) = write(&mut buf[MSG_OFFSET..], plan, table, limit, refusal) else {
        return TcpOutcome::Drop(DropReason::NoRoom);
    };
    // n <= limit <= MAX_TCP_MSG, so it fits the 16-bit length.
    buf[LEN_OFFSET..MSG_OFFSET].copy_from_slice(&(n as u16).to_be_bytes());
    let s = Segment {
        client_port,
        seq: ack,
        ack: seq.wrapping_add(consumed as u32),
        flags: Flags::ACK | Flags::PSH | Flags::FIN,
        window: WINDOW,
    };
    let frame_len = emit(buf, &ip, &s, 0, 2 + n, ip_id);
    match written {
        Written::Answer => TcpOutcome::Reply(frame_len),
        Written::FormErr => TcpOutcome::FormErr(frame_len),
        Written::NotImp => TcpOutcome::NotImp(frame_len),
        Written::BadVers => TcpOutcome::BadVers(frame_len),
        Written::Refused => TcpOutcome::Refused(frame_len),
    }
}

#[cfg(test)]
mod tests;
