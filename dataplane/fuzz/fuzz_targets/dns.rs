//! The gateway's DNS responder on arbitrary frames: `dns::respond_udp`,
//! `refuse_udp`, `tcp::respond_tcp` and `refuse_tcp`, with the table of
//! `dataplane_fuzz::topology` and a fixed cookie key and clock.
//!
//! Input: `[ctl][arg][bytes]`. `ctl` bits 0-1: the function (respond_udp,
//! refuse_udp, respond_tcp, refuse_tcp); bit 2: `bytes` is a DNS message to
//! wrap in Ethernet/IPv4/UDP or TCP headers with valid checksums (and, for
//! TCP, a valid SYN cookie), else a whole frame; bits 3-5: the room in the
//! buffer after the frame ([`ROOM`]); bits 6-7 (wrapped TCP): a data
//! segment, a data segment with FIN, a SYN whose options are `bytes`, a
//! data segment with a bad cookie. `arg` bits 0-2: the RCODE of a refusal;
//! bits 3-5: words of IPv4 options (NOPs) in a wrapped frame; bits 6-7: the
//! client's MSS (an index into the cookie's table).
//!
//! A reply never exceeds the buffer; it is a well-formed frame back to the
//! client (addresses swapped, checksums valid, lengths consistent) carrying
//! a DNS response with the query's ID and question; a frame that is "not
//! ours" is left untouched; what `respond_*` finds not ours, `refuse_*`
//! refuses.

#![no_main]

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

use dataplane::dns::cookie::{self, FourTuple, MSS_TABLE};
use dataplane::dns::{self, tcp::TcpOutcome, CookieKey, DnsTable, Outcome, TcpConfig};
use dataplane::wire::dns::{self as wdns, Rcode};
use dataplane::wire::tcp::Flags;
use dataplane::wire::{ethernet, ipv4, tcp, udp, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, MacAddr};
use dataplane::wire::{TcpPacket, UdpPacket};
use dataplane_fuzz::topology::{dns_table, DNS_KEY};
use libfuzzer_sys::fuzz_target;

/// Bytes of room after the frame.
const ROOM: [usize; 8] = [0, 1, 16, 64, 512, 1500, 4096, 70_000];
const BUF_MAX: usize = 140_000;
const NOW_MS: u64 = 1_000_000;
const CLIENT: (MacAddr, Ipv4Addr, u16) = (MacAddr([2, 0x42, 10, 88, 0, 2]), Ipv4Addr::new(10, 88, 0, 2), 40000);
const GATEWAY: (MacAddr, Ipv4Addr) = (MacAddr([2, 0x42, 10, 88, 0, 1]), Ipv4Addr::new(10, 88, 0, 1));
const IP_ID: u16 = 0x1234;
/// What a caller refuses with: 4-bit RCODEs (an extended one needs an OPT
/// record the query may not have).
const RCODES: [Rcode; 8] = [
    Rcode::Refused,
    Rcode::ServFail,
    Rcode::NxDomain,
    Rcode::NotImp,
    Rcode::Refused,
    Rcode::ServFail,
    Rcode::NoError,
    Rcode::Unknown(15),
];
/// The client's ISN in wrapped TCP segments.
const ISN: u32 = 0xfeed_f00d;

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; BUF_MAX]);
    static COPY: RefCell<Vec<u8>> = RefCell::new(vec![0; BUF_MAX]);
}

fn table() -> &'static DnsTable {
    static TABLE: OnceLock<DnsTable> = OnceLock::new();
    TABLE.get_or_init(dns_table)
}

/// `FUZZ_TRACE=1` prints every outcome (to see where a seed goes).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

fn tcp_cfg() -> TcpConfig {
    TcpConfig { key: CookieKey::new(DNS_KEY), mss: 1460 }
}

fuzz_target!(|data: &[u8]| {
    let [ctl, arg, bytes @ ..] = data else { return };
    let (ctl, arg) = (*ctl, *arg);
    let f = ctl & 3;
    let tcp = f >= 2;
    let mss = MSS_TABLE[[0, 1, 5, 7][usize::from(arg >> 6)]];
    let mut frame = Vec::new();
    let query: &[u8] = if ctl & 4 != 0 {
        wrap(&mut frame, bytes, tcp, ctl >> 6, usize::from(arg >> 3 & 7) * 4, mss);
        &frame
    } else {
        bytes
    };
    if query.len() > BUF_MAX / 2 {
        return;
    }
    let room = ROOM[usize::from(ctl >> 3 & 7)].min(BUF_MAX - query.len());
    let rcode = RCODES[usize::from(arg & 7)];
    BUF.with(|buf| {
        let buf = &mut *buf.borrow_mut();
        let cap = query.len() + room;
        load(buf, query, cap);
        let buf = &mut buf[..cap];
        let len = query.len();
        if !tcp {
            let out = if f == 0 {
                dns::respond_udp(buf, len, table(), IP_ID)
            } else {
                dns::refuse_udp(buf, len, table(), rcode, IP_ID)
            };
            if trace() {
                eprintln!("udp {} bytes: {out:?}", query.len());
            }
            check_udp(query, buf, out);
            if out == Outcome::NotOurs {
                // What the responder does not answer, it can refuse.
                COPY.with(|c| {
                    let c = &mut *c.borrow_mut();
                    load(c, query, cap);
                    let r = dns::refuse_udp(&mut c[..cap], len, table(), rcode, IP_ID);
                    assert!(matches!(r, Outcome::Refused(_)), "not ours, yet refusing gives {r:?}");
                    check_udp(query, &c[..cap], r);
                });
            }
        } else {
            let cfg = tcp_cfg();
            let out = if f == 2 {
                dns::respond_tcp(buf, len, table(), &cfg, NOW_MS, IP_ID)
            } else {
                dns::refuse_tcp(buf, len, table(), &cfg, NOW_MS, IP_ID, rcode)
            };
            if trace() {
                eprintln!("tcp {} bytes: {out:?}", query.len());
            }
            check_tcp(query, buf, out);
            if out == TcpOutcome::NotOurs {
                COPY.with(|c| {
                    let c = &mut *c.borrow_mut();
                    load(c, query, cap);
                    let r = dns::refuse_tcp(&mut c[..cap], len, table(), &cfg, NOW_MS, IP_ID, rcode);
                    assert!(matches!(r, TcpOutcome::Refused(_)), "not ours, yet refusing gives {r:?}");
                    check_tcp(query, &c[..cap], r);
                });
            }
        }
    });
});

/// `query` at the start of `buf`, then bytes of 0xa5 up to `cap`.
fn load(buf: &mut [u8], query: &[u8], cap: usize) {
    buf[..query.len()].copy_from_slice(query);
    buf[query.len()..cap].fill(0xa5);
}

/// Build the frame a client sends with `msg`: Ethernet, IPv4 with
/// `options` bytes of NOPs, then UDP, or TCP in the `shape` given.
fn wrap(out: &mut Vec<u8>, msg: &[u8], tcp: bool, shape: u8, options: usize, mss: u16) {
    let ihl = ipv4::HEADER_LEN + options;
    let tuple = FourTuple { src_addr: CLIENT.1, src_port: CLIENT.2, dst_addr: GATEWAY.1, dst_port: dns::PORT };
    let (l4_hdr, data_len) = match (tcp, shape) {
        (false, _) => (udp::HEADER_LEN, msg.len()),
        (true, 2) => (tcp::HEADER_LEN + msg.len().min(40) / 4 * 4, 0),
        (true, _) => (tcp::HEADER_LEN, 2 + msg.len()),
    };
    let total = ihl + l4_hdr + data_len;
    if total > usize::from(u16::MAX) {
        return;
    }
    out.resize(ethernet::HEADER_LEN + total, 0);
    {
        let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
        eth.set_dst(GATEWAY.0);
        eth.set_src(CLIENT.0);
        eth.set_ethertype(EtherType::Ipv4);
    }
    let ip_bytes = &mut out[ethernet::HEADER_LEN..];
    let protocol = if tcp { IpProtocol::Tcp } else { IpProtocol::Udp };
    let repr = ipv4::Repr {
        src_addr: CLIENT.1,
        dst_addr: GATEWAY.1,
        protocol,
        payload_len: total - ipv4::HEADER_LEN,
        ttl: 64,
        ident: 7,
        dont_frag: true,
    };
    let mut ip = Ipv4Packet::new_unchecked(&mut ip_bytes[..]);
    repr.emit(&mut ip);
    ip.set_header_len(ihl);
    ip.set_total_len(total as u16);
    ip.options_mut().fill(1);
    ip.fill_checksum();
    let l4 = ip.payload_mut();
    if !tcp {
        l4[udp::HEADER_LEN..].copy_from_slice(msg);
        let mut u = UdpPacket::new_unchecked(l4);
        udp::Repr { src_port: CLIENT.2, dst_port: dns::PORT, payload_len: msg.len() }.emit(&mut u);
        u.fill_checksum_ipv4(CLIENT.1, GATEWAY.1);
        return;
    }
    let cookie = cookie::make(&CookieKey::new(DNS_KEY), &tuple, ISN, mss, NOW_MS);
    let (flags, seq, ack) = match shape {
        0 => (Flags::ACK | Flags::PSH, ISN.wrapping_add(1), cookie.wrapping_add(1)),
        1 => (Flags::ACK | Flags::PSH | Flags::FIN, ISN.wrapping_add(1), cookie.wrapping_add(1)),
        2 => (Flags::SYN, ISN, 0),
        _ => (Flags::ACK | Flags::PSH, ISN.wrapping_add(1), cookie ^ 0x8000_0000),
    };
    if shape == 2 {
        l4[tcp::HEADER_LEN..l4_hdr].copy_from_slice(&msg[..l4_hdr - tcp::HEADER_LEN]);
    } else {
        l4[l4_hdr..l4_hdr + 2].copy_from_slice(&(msg.len() as u16).to_be_bytes());
        l4[l4_hdr + 2..].copy_from_slice(msg);
    }
    let mut t = TcpPacket::new_unchecked(l4);
    let r =
        tcp::Repr { src_port: CLIENT.2, dst_port: dns::PORT, seq_number: seq, ack_number: ack, flags, window_len: 64 };
    r.emit(&mut t);
    t.set_header_len(l4_hdr);
    t.fill_checksum_ipv4(CLIENT.1, GATEWAY.1);
}

/// The query's addresses and its DNS message, when it is a frame the
/// responder could answer.
struct Query<'a> {
    eth_src: MacAddr,
    eth_dst: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    /// UDP: the message; TCP: the segment's data.
    data: &'a [u8],
    seq: u32,
}

fn parse_query(q: &[u8], protocol: IpProtocol) -> Query<'_> {
    let eth = EthernetFrame::new_checked(q).expect("answered frame has an Ethernet header");
    let ip = Ipv4Packet::new_checked(&q[ethernet::HEADER_LEN..]).expect("answered frame is IPv4");
    assert_eq!(ip.protocol(), protocol);
    let start = ethernet::HEADER_LEN + ip.header_len();
    let end = ethernet::HEADER_LEN + usize::from(ip.total_len());
    let seg = &q[start..end];
    let (sport, data, seq) = if protocol == IpProtocol::Udp {
        let u = UdpPacket::new_checked(seg).expect("answered UDP");
        (u.src_port(), &seg[udp::HEADER_LEN..usize::from(u.length())], 0)
    } else {
        let t = TcpPacket::new_checked(seg).expect("answered TCP");
        (t.src_port(), &seg[t.header_len()..], t.seq_number())
    };
    Query { eth_src: eth.src(), eth_dst: eth.dst(), src: ip.src_addr(), dst: ip.dst_addr(), sport, data, seq }
}

/// The reply's Ethernet and IPv4 headers: back to the client; its
/// transport segment.
fn check_headers<'a>(q: &Query<'_>, reply: &'a [u8], protocol: IpProtocol) -> &'a [u8] {
    let eth = EthernetFrame::new_checked(reply).expect("reply has an Ethernet header");
    assert_eq!((eth.src(), eth.dst(), eth.ethertype()), (q.eth_dst, q.eth_src, EtherType::Ipv4));
    let ip = Ipv4Packet::new_checked(&reply[ethernet::HEADER_LEN..]).expect("reply is IPv4");
    assert!(ip.verify_checksum(), "reply IPv4 checksum");
    assert_eq!(usize::from(ip.total_len()), reply.len() - ethernet::HEADER_LEN, "reply Total Length");
    assert_eq!((ip.header_len(), ip.protocol(), ip.ttl(), ip.dont_frag()), (20, protocol, dns::IP_TTL, true));
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.is_fragment()), (q.dst, q.src, false));
    &reply[ethernet::HEADER_LEN + ipv4::HEADER_LEN..]
}

/// A DNS response to `query_msg`: its ID, QR, opcode and RD kept, and the
/// question echoed byte for byte.
fn check_message(query_msg: &[u8], msg: &[u8]) {
    let r = wdns::Packet::new_checked(msg).expect("reply has a DNS header");
    let q = wdns::Packet::new_checked(query_msg).expect("answered query has a DNS header");
    assert!(r.is_response(), "reply without QR");
    assert_eq!((r.id(), r.opcode(), r.recursion_desired()), (q.id(), q.opcode(), q.recursion_desired()));
    assert!(r.question_count() <= 1);
    if r.question_count() == 1 {
        let end = r.question().expect("echoed question parses").end();
        assert_eq!(msg.get(wdns::HEADER_LEN..end), query_msg.get(wdns::HEADER_LEN..end), "question not echoed");
    }
    // Every record it announces is there.
    let records = usize::from(r.answer_count()) + usize::from(r.authority_count()) + usize::from(r.additional_count());
    let mut at = r.question().map_or(wdns::HEADER_LEN, |x| x.end());
    if r.question_count() == 0 {
        at = wdns::HEADER_LEN;
    }
    for _ in 0..records {
        at = wdns::Record::parse(msg, at).expect("announced record parses").end();
    }
    assert_eq!(at, msg.len(), "bytes after the last record");
}

fn check_udp(query: &[u8], buf: &[u8], out: Outcome) {
    match out {
        Outcome::NotOurs => assert!(buf[..query.len()] == *query, "not ours, yet the frame changed"),
        Outcome::Drop(_) => {}
        o => {
            let n = o.reply_len().expect("a reply");
            assert!(n <= buf.len(), "reply of {n} bytes in a buffer of {}", buf.len());
            let q = parse_query(query, IpProtocol::Udp);
            let seg = check_headers(&q, &buf[..n], IpProtocol::Udp);
            let u = UdpPacket::new_checked(seg).expect("reply is UDP");
            assert_eq!((u.src_port(), u.dst_port(), usize::from(u.length())), (dns::PORT, q.sport, seg.len()));
            assert!(u.checksum() != 0 && u.verify_checksum_ipv4(q.dst, q.src), "reply UDP checksum");
            let msg = u.payload();
            assert!(msg.len() <= usize::from(table().max_udp_payload()).max(512), "UDP reply of {}", msg.len());
            check_message(q.data, msg);
        }
    }
}

fn check_tcp(query: &[u8], buf: &[u8], out: TcpOutcome) {
    let n = match out {
        TcpOutcome::NotOurs => {
            assert!(buf[..query.len()] == *query, "not ours, yet the frame changed");
            return;
        }
        TcpOutcome::Drop(_) | TcpOutcome::Ignore => return,
        o => o.reply_len().expect("a reply"),
    };
    assert!(n <= buf.len(), "reply of {n} bytes in a buffer of {}", buf.len());
    let q = parse_query(query, IpProtocol::Tcp);
    let seg = check_headers(&q, &buf[..n], IpProtocol::Tcp);
    let t = TcpPacket::new_checked(seg).expect("reply is TCP");
    assert_eq!((t.src_port(), t.dst_port()), (dns::PORT, q.sport));
    assert!(t.verify_checksum_ipv4(q.dst, q.src), "reply TCP checksum");
    let flags = t.flags();
    match out {
        TcpOutcome::SynAck(_) => {
            assert_eq!(flags, Flags::SYN | Flags::ACK);
            assert_eq!(t.ack_number(), q.seq.wrapping_add(1));
            // Our ISN is a cookie that the client's ACK will carry back.
            let tuple = FourTuple { src_addr: q.src, src_port: q.sport, dst_addr: q.dst, dst_port: dns::PORT };
            let key = CookieKey::new(DNS_KEY);
            assert!(cookie::check(&key, &tuple, q.seq, t.seq_number(), NOW_MS).is_some(), "SYN-ACK cookie");
            assert!(t.payload().is_empty());
        }
        TcpOutcome::Rst(..) => assert!(flags.contains(Flags::RST) && t.payload().is_empty()),
        TcpOutcome::Ack(_) => assert!(flags == Flags::ACK && t.payload().is_empty()),
        _ => {
            // An answer segment: [length][message], then FIN.
            assert!(flags.contains(Flags::ACK | Flags::PSH | Flags::FIN));
            let data = t.payload();
            let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
            assert_eq!(len + 2, data.len(), "DNS-over-TCP length");
            let msg_len = q.data.get(..2).map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
            let query_msg = q.data.get(2..2 + msg_len).expect("an answered query is whole");
            check_message(query_msg, &data[2..]);
            assert!(data.len() <= usize::from(*MSS_TABLE.last().unwrap_or(&8960)), "answer over any MSS");
        }
    }
}
