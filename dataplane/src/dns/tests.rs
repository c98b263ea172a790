//! The UDP responder on real frames, cross-checked with etherparse, and the
//! helpers the TCP tests share.

use super::*;
use crate::wire::dns::{Header, Packet as DnsPacket, Record, OPT_RECORD_LEN};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

pub(super) const CLIENT_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x58, 0x00, 0x02];
pub(super) const GW_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x58, 0x00, 0x01];
pub(super) const CLIENT: [u8; 4] = [10, 88, 0, 2];
pub(super) const GW: [u8; 4] = [10, 88, 0, 1];
pub(super) const CLIENT_PORT: u16 = 40000;
pub(super) const WEB: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 3);
pub(super) const DB: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 88, 0, 10), Ipv4Addr::new(10, 89, 0, 10)];
/// Addresses of "many": more than 512 bytes of answers.
pub(super) const MANY: usize = 40;

/// `dig @10.88.0.1 web A` as BIND 9.18 sends it: RD and AD set, EDNS(0)
/// with a 1232-byte payload and a client COOKIE option.
pub(super) const DIG_A: [u8; 44] = [
    0xc2, 0x64, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, //
    0x03, b'w', b'e', b'b', 0x00, 0x00, 0x01, 0x00, 0x01, //
    0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, //
    0x00, 0x0a, 0x00, 0x08, 0x9c, 0xe7, 0xc5, 0x5a, 0x00, 0xcc, 0xfd, 0x8b,
];
/// `dig +noedns web.front A`.
pub(super) const DIG_NOEDNS: [u8; 27] = [
    0xbf, 0xd2, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x03, b'w', b'e', b'b', 0x05, b'f', b'r', b'o', b'n', b't', 0x00, 0x00, 0x01, 0x00, 0x01,
];
/// `dig +nocookie WeB AAAA`: mixed case, EDNS without options.
pub(super) const DIG_AAAA: [u8; 32] = [
    0xe8, 0x0d, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, //
    0x03, b'W', b'e', b'B', 0x00, 0x00, 0x1c, 0x00, 0x01, //
    0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

pub(super) fn table() -> DnsTable {
    let mut entries = vec![("web".to_string(), WEB), ("web.front".to_string(), WEB)];
    entries.extend(DB.iter().map(|&a| ("db".to_string(), a)));
    entries.extend((0..MANY).map(|i| ("many".to_string(), Ipv4Addr::new(10, 90, 0, i as u8 + 1))));
    DnsTable::new(entries).unwrap()
}

/// A query for `name` with `qtype`, and an OPT record if `edns` gives
/// (payload size, version, DO).
pub(super) fn query(id: u16, name: &str, qtype: u16, edns: Option<(u16, u8, bool)>) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    if let Some((size, version, dnssec_ok)) = edns {
        m.extend_from_slice(&[0, 0, 41]);
        m.extend_from_slice(&size.to_be_bytes());
        m.extend_from_slice(&[0, version, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    m
}

/// An Ethernet/IPv4/UDP frame from the client to the gateway's port 53,
/// built by etherparse.
pub(super) fn udp_frame(msg: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, GW_MAC)
        .ipv4(CLIENT, GW, 64)
        .udp(CLIENT_PORT, PORT)
        .write(&mut f, msg)
        .unwrap();
    f
}

/// `frame` at the start of a buffer of `cap` bytes, the rest 0xa5.
pub(super) fn with_room(frame: &[u8], cap: usize) -> Vec<u8> {
    let mut b = frame.to_vec();
    b.resize(cap.max(frame.len()), 0xa5);
    b
}

/// Check the Ethernet and IPv4 headers of a reply to the client with
/// etherparse, checksum included; the parsed headers.
pub(super) fn check_reply_headers(frame: &[u8], ip_id: u16) -> PacketHeaders<'_> {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let eth = h.link.clone().unwrap().ethernet2().unwrap();
    assert_eq!((eth.source, eth.destination), (GW_MAC, CLIENT_MAC));
    let Some(NetHeaders::Ipv4(ip, ext)) = &h.net else { panic!("not IPv4") };
    assert!(ext.is_empty() && ip.options.is_empty());
    assert_eq!((ip.source, ip.destination), (GW, CLIENT));
    assert_eq!((ip.time_to_live, ip.identification, ip.dont_fragment, ip.more_fragments), (64, ip_id, true, false));
    assert_eq!(usize::from(ip.total_len), frame.len() - 14);
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    h
}

/// Check any reply to the frame `query` with etherparse: addresses swapped,
/// lengths and checksums right.
pub(super) fn check_any_reply(query: &[u8], reply: &[u8]) {
    let h = PacketHeaders::from_ethernet_slice(reply).unwrap();
    let eth = h.link.clone().unwrap().ethernet2().unwrap();
    assert_eq!((&eth.source[..], &eth.destination[..]), (&query[0..6], &query[6..12]));
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else { panic!("not IPv4") };
    assert_eq!((&ip.source[..], &ip.destination[..]), (&query[30..34], &query[26..30]));
    assert_eq!(usize::from(ip.total_len), reply.len() - 14);
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    let payload = h.payload.slice();
    match &h.transport {
        Some(TransportHeader::Udp(udp)) => {
            assert_eq!(usize::from(udp.length), 8 + payload.len());
            assert_eq!(udp.checksum, udp.calc_checksum_ipv4(ip, payload).unwrap());
        }
        Some(TransportHeader::Tcp(tcp)) => assert_eq!(tcp.checksum, tcp.calc_checksum_ipv4(ip, payload).unwrap()),
        other => panic!("{other:?}"),
    }
}

/// Check a UDP reply: headers, checksums; the DNS message.
fn check_udp_reply(frame: &[u8], ip_id: u16) -> Vec<u8> {
    let h = check_reply_headers(frame, ip_id);
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else { unreachable!() };
    let Some(TransportHeader::Udp(udp)) = &h.transport else { panic!("not UDP") };
    let msg = h.payload.slice();
    assert_eq!((udp.source_port, udp.destination_port), (PORT, CLIENT_PORT));
    assert_eq!(usize::from(udp.length), 8 + msg.len());
    assert_eq!(udp.checksum, udp.calc_checksum_ipv4(ip, msg).unwrap());
    msg.to_vec()
}

/// The addresses of the A records in the answer section of `msg`.
pub(super) fn answers(msg: &[u8]) -> Vec<Ipv4Addr> {
    let p = DnsPacket::new_checked(msg).unwrap();
    let mut at = p.question().unwrap().end();
    (0..p.answer_count())
        .map(|_| {
            let rr = Record::parse(msg, at).unwrap();
            assert_eq!(rr.name.start, at);
            assert_eq!(&msg[at..at + 2], &[0xc0, 0x0c], "answer names point at the question");
            assert_eq!(rr.ttl, 600);
            at = rr.end();
            rr.a_addr(msg).unwrap()
        })
        .collect()
}

/// The OPT record of a reply with one question.
pub(super) fn reply_opt(msg: &[u8]) -> Option<Opt> {
    let p = DnsPacket::new_checked(msg).unwrap();
    p.find_opt(p.question().unwrap().end()).unwrap()
}

fn respond(msg: &[u8]) -> (Outcome, Vec<u8>) {
    let mut buf = with_room(&udp_frame(msg), 2048);
    let len = udp_frame(msg).len();
    let out = respond_udp(&mut buf, len, &table(), 0x1234);
    (out, buf)
}

#[test]
fn dig_a_query_gets_its_address() {
    let (out, buf) = respond(&DIG_A);
    let Outcome::Reply(n) = out else { panic!("{out:?}") };
    let msg = check_udp_reply(&buf[..n], 0x1234);
    let p = DnsPacket::new_checked(&msg[..]).unwrap();
    let h = Header::parse(&p).unwrap();
    assert_eq!(h.id, 0xc264);
    assert!(h.response && h.authoritative && h.recursion_desired && h.recursion_available);
    assert!(!h.truncated && !h.authentic_data && !h.checking_disabled && !p.z());
    assert_eq!((h.opcode, h.rcode), (Opcode::Query, Rcode::NoError));
    assert_eq!((h.question_count, h.answer_count, h.authority_count, h.additional_count), (1, 1, 0, 1));
    assert_eq!(&msg[12..21], &DIG_A[12..21], "question echoed");
    assert_eq!(answers(&msg), vec![WEB]);
    let opt = reply_opt(&msg).unwrap();
    assert_eq!(opt, Opt { udp_payload_size: 1232, ext_rcode: 0, version: 0, dnssec_ok: false });
    // Header, question, one A record and an OPT record without options.
    assert_eq!(msg.len(), 21 + 16 + OPT_RECORD_LEN);
    assert_eq!(n, 42 + msg.len());
}

#[test]
fn without_edns_no_opt_is_sent() {
    let (out, buf) = respond(&DIG_NOEDNS);
    let Outcome::Reply(n) = out else { panic!("{out:?}") };
    let msg = check_udp_reply(&buf[..n], 0x1234);
    let p = DnsPacket::new_checked(&msg[..]).unwrap();
    assert_eq!((p.answer_count(), p.additional_count()), (1, 0));
    assert_eq!(answers(&msg), vec![WEB]);
    assert_eq!(msg.len(), DIG_NOEDNS.len() + 16);
}

#[test]
fn every_address_of_a_name_and_any_queries() {
    for qtype in [1u16, 255] {
        let (out, buf) = respond(&query(7, "DB", qtype, None));
        let Outcome::Reply(n) = out else { panic!("{out:?}") };
        assert_eq!(answers(&check_udp_reply(&buf[..n], 0x1234)), DB.to_vec(), "qtype {qtype}");
    }
}

#[test]
fn other_types_of_our_names_get_nodata() {
    let (out, buf) = respond(&DIG_AAAA);
    let Outcome::Reply(n) = out else { panic!("{out:?}") };
    let msg = check_udp_reply(&buf[..n], 0x1234);
    let p = DnsPacket::new_checked(&msg[..]).unwrap();
    assert_eq!((p.rcode(), p.authoritative(), p.answer_count()), (Rcode::NoError, true, 0));
    // The question keeps the client's case.
    assert_eq!(&msg[12..17], b"\x03WeB\x00");
    assert!(reply_opt(&msg).is_some());
    for qtype in [15u16, 16, 33, 65, 252] {
        let (out, buf) = respond(&query(9, "web", qtype, None));
        let Outcome::Reply(n) = out else { panic!("{out:?}") };
        assert_eq!(DnsPacket::new_checked(&buf[42..n]).unwrap().answer_count(), 0, "qtype {qtype}");
    }
}

#[test]
fn names_not_ours_are_left_alone() {
    for msg in [query(1, "example.com", 1, Some((1232, 0, false))), query(2, "we", 1, None), query(3, ".", 2, None)] {
        let frame = udp_frame(&msg);
        let mut buf = with_room(&frame, 2048);
        assert_eq!(respond_udp(&mut buf, frame.len(), &table(), 1), Outcome::NotOurs);
        assert_eq!(buf, with_room(&frame, 2048), "frame untouched");
    }
    // Class CH ("version.bind"-style) for one of our names is not ours.
    let mut ch = query(4, "web", 16, None);
    let at = ch.len() - 2;
    ch[at..].copy_from_slice(&[0, 3]);
    assert_eq!(respond(&ch).0, Outcome::NotOurs);
    // Class ANY is.
    ch[at..].copy_from_slice(&[0, 255]);
    assert!(matches!(respond(&ch).0, Outcome::Reply(_)));
}

#[test]
fn refusals_echo_the_question() {
    let msg = query(0x4242, "example.com", 1, Some((4096, 0, true)));
    let frame = udp_frame(&msg);
    for rcode in [Rcode::Refused, Rcode::ServFail] {
        let mut buf = with_room(&frame, 2048);
        let out = refuse_udp(&mut buf, frame.len(), &table(), rcode, 9);
        let Outcome::Refused(n) = out else { panic!("{out:?}") };
        let reply = check_udp_reply(&buf[..n], 9);
        let p = DnsPacket::new_checked(&reply[..]).unwrap();
        assert_eq!((p.id(), p.rcode(), p.answer_count()), (0x4242, rcode, 0));
        assert!(p.is_response() && !p.authoritative() && p.recursion_available());
        assert_eq!(&reply[12..msg.len() - OPT_RECORD_LEN], &msg[12..msg.len() - OPT_RECORD_LEN]);
        let opt = reply_opt(&reply).unwrap();
        assert_eq!((opt.udp_payload_size, opt.dnssec_ok), (1232, true), "DO copied (RFC 3225 §3)");
    }
    // Malformed queries get what respond_udp gives them.
    let mut bad = msg.clone();
    bad[5] = 2;
    let frame = udp_frame(&bad);
    let mut buf = with_room(&frame, 2048);
    assert!(matches!(refuse_udp(&mut buf, frame.len(), &table(), Rcode::Refused, 9), Outcome::FormErr(_)));
}

/// A bare-header reply with `rcode` to a query with ID `id`.
fn assert_header_only(out: Outcome, buf: &[u8], id: u16, rcode: Rcode) {
    let n = out.reply_len().unwrap();
    let msg = check_udp_reply(&buf[..n], 0x1234);
    assert_eq!(msg.len(), 12);
    let h = Header::parse(&DnsPacket::new_checked(&msg[..]).unwrap()).unwrap();
    assert_eq!((h.id, h.rcode, h.response), (id, rcode, true));
    assert_eq!((h.question_count, h.answer_count, h.authority_count, h.additional_count), (0, 0, 0, 0));
}

#[test]
fn malformed_queries_get_formerr() {
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for qdcount in [0u8, 2, 255] {
        let mut m = DIG_A.to_vec();
        m[5] = qdcount;
        cases.push(m);
    }
    // A pointer loop, a pointer into the header, a bad label type.
    for name in [&[0xc0u8, 12][..], &[0xc0, 2], &[0x40, 0]] {
        let mut m = DIG_NOEDNS[..12].to_vec();
        m.extend_from_slice(name);
        m.extend_from_slice(&[0, 1, 0, 1]);
        cases.push(m);
    }
    // A 256-byte name.
    let mut m = DIG_NOEDNS[..12].to_vec();
    for _ in 0..4 {
        m.push(63);
        m.extend_from_slice(&[b'a'; 63]);
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    cases.push(m);
    // Cut in the question, and in the OPT record.
    cases.push(DIG_A[..19].to_vec());
    cases.push(DIG_A[..30].to_vec());
    // Two OPT records.
    let mut m = DIG_AAAA.to_vec();
    m[11] = 2;
    m.extend_from_slice(&DIG_AAAA[21..]);
    cases.push(m);
    for (i, m) in cases.iter().enumerate() {
        let (out, buf) = respond(m);
        assert!(matches!(out, Outcome::FormErr(54)), "case {i}: {out:?}");
        assert_header_only(out, &buf, u16::from_be_bytes([m[0], m[1]]), Rcode::FormErr);
    }
}

#[test]
fn other_opcodes_get_notimp() {
    for opcode in [1u8, 2, 4, 5, 6, 15] {
        let mut m = DIG_A.to_vec();
        m[2] = (m[2] & 0x87) | (opcode << 3);
        let (out, buf) = respond(&m);
        assert!(matches!(out, Outcome::NotImp(54)), "opcode {opcode}: {out:?}");
        assert_header_only(out, &buf, 0xc264, Rcode::NotImp);
        let p = DnsPacket::new_checked(&buf[42..54]).unwrap();
        assert_eq!(p.opcode(), Opcode::from(opcode), "opcode echoed");
    }
}

#[test]
fn responses_and_short_messages_are_dropped() {
    let mut m = DIG_A.to_vec();
    m[2] |= 0x80; // QR
    let frame = udp_frame(&m);
    let mut buf = with_room(&frame, 2048);
    assert_eq!(respond_udp(&mut buf, frame.len(), &table(), 1), Outcome::Drop(DropReason::Response));
    assert_eq!(buf, with_room(&frame, 2048));
    for len in 0..12 {
        assert_eq!(respond(&DIG_A[..len]).0, Outcome::Drop(DropReason::ShortMessage), "len {len}");
    }
}

#[test]
fn edns_versions_above_zero_get_badvers() {
    let (out, buf) = respond(&query(5, "web", 1, Some((1232, 1, false))));
    let Outcome::BadVers(n) = out else { panic!("{out:?}") };
    let msg = check_udp_reply(&buf[..n], 0x1234);
    let p = DnsPacket::new_checked(&msg[..]).unwrap();
    assert_eq!((p.rcode(), p.answer_count()), (Rcode::NoError, 0));
    let opt = reply_opt(&msg).unwrap();
    // Extended RCODE 16 = (1 << 4) | 0; we speak version 0.
    assert_eq!((opt.ext_rcode, opt.version), (1, 0));
}

#[test]
fn udp_payload_size_is_respected() {
    // 40 addresses: 12 + 10 (question) + 40 × 16 = 662 bytes.
    let count = |msg: &[u8], cap: usize, t: &DnsTable| {
        let frame = udp_frame(msg);
        let mut buf = with_room(&frame, cap);
        let out = respond_udp(&mut buf, frame.len(), t, 1);
        let Outcome::Reply(n) = out else { panic!("{out:?}") };
        let reply = check_udp_reply(&buf[..n], 1);
        let p = DnsPacket::new_checked(&reply[..]).unwrap();
        (reply.len(), usize::from(p.answer_count()), p.truncated(), answers(&reply).len())
    };
    let t = table();
    // No EDNS: 512 bytes, (512 - 22) / 16 = 30 answers, TC.
    assert_eq!(count(&query(1, "many", 1, None), 4096, &t), (22 + 30 * 16, 30, true, 30));
    // EDNS 1232: all of them.
    assert_eq!(count(&query(1, "many", 1, Some((1232, 0, false))), 4096, &t), (22 + 640 + 11, 40, false, 40));
    // EDNS 600: (600 - 22 - 11) / 16 = 35.
    assert_eq!(count(&query(1, "many", 1, Some((600, 0, false))), 4096, &t), (22 + 35 * 16 + 11, 35, true, 35));
    // Below 512 counts as 512 (RFC 6891 §6.2.5).
    assert_eq!(count(&query(1, "many", 1, Some((100, 0, false))), 4096, &t).1, 29);
    // Our own limit caps a larger offer.
    let small = table().with_max_udp_payload(600);
    assert_eq!(count(&query(1, "many", 1, Some((4096, 0, false))), 4096, &small).1, 35);
    // So does the buffer: room for 42 + 22 + 11 + 2 × 16 bytes.
    assert_eq!(count(&query(1, "many", 1, Some((4096, 0, false))), 42 + 22 + 11 + 32 + 15, &t), (65, 2, true, 2));
    // A buffer with no spare room: the answer does not fit, TC.
    assert_eq!(count(&DIG_A, 0, &t), (21 + 11, 0, true, 0));
}

#[test]
fn ip_options_are_not_echoed() {
    // The dig query behind an IPv4 header with 4 bytes of options (IHL 6).
    let plain = udp_frame(&DIG_A);
    let mut f = plain[..34].to_vec();
    f.extend_from_slice(&[0x94, 0x04, 0x00, 0x00]); // Router Alert (RFC 2113)
    f.extend_from_slice(&plain[34..]);
    f[14] = 0x46;
    let total = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.fill_checksum();
    let mut buf = with_room(&f, 2048);
    let out = respond_udp(&mut buf, f.len(), &table(), 77);
    let Outcome::Reply(n) = out else { panic!("{out:?}") };
    assert_eq!(answers(&check_udp_reply(&buf[..n], 77)), vec![WEB]);
}

#[test]
fn frames_not_to_answer_are_dropped() {
    let frame = udp_frame(&DIG_A);
    let run = |f: &[u8]| respond_udp(&mut with_room(f, 2048), f.len(), &table(), 1);
    let edit = |at: usize, bytes: &[u8], fix_ip: bool| {
        let mut f = frame.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        if fix_ip {
            Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
        }
        f
    };
    assert_eq!(run(&edit(12, &[0x86, 0xdd], false)), Outcome::Drop(DropReason::NotDns)); // IPv6
    assert_eq!(run(&edit(12, &[0x81, 0x00], false)), Outcome::Drop(DropReason::NotDns)); // 802.1Q
    assert_eq!(run(&edit(23, &[6], true)), Outcome::Drop(DropReason::NotDns)); // TCP
    assert_eq!(run(&edit(36, &[0, 54], false)), Outcome::Drop(DropReason::NotDns)); // port 54
    assert_eq!(run(&edit(24, &[0, 0], false)), Outcome::Drop(DropReason::BadIpHeader)); // checksum
    assert_eq!(run(&edit(14, &[0x55], true)), Outcome::Drop(DropReason::BadIpHeader)); // IHL 5 → version 5
    assert_eq!(run(&edit(20, &[0x20, 0], true)), Outcome::Drop(DropReason::Fragment)); // MF
    assert_eq!(run(&edit(20, &[0, 1], true)), Outcome::Drop(DropReason::Fragment)); // offset 8
    assert_eq!(run(&edit(38, &[0, 7], false)), Outcome::Drop(DropReason::BadTransportHeader)); // UDP length 7
    assert_eq!(run(&edit(34, &[0, 0], false)), Outcome::Drop(DropReason::BadAddress)); // port 0
    assert_eq!(run(&edit(0, &[0xff; 6], false)), Outcome::Drop(DropReason::BadAddress)); // broadcast MAC
    assert_eq!(run(&edit(6, &[0x01, 0, 0x5e, 0, 0, 1], false)), Outcome::Drop(DropReason::BadAddress));
    assert_eq!(run(&edit(26, &[0, 0, 0, 0], true)), Outcome::Drop(DropReason::BadAddress)); // 0.0.0.0
    assert_eq!(run(&edit(30, &[255, 255, 255, 255], true)), Outcome::Drop(DropReason::BadAddress));
    assert_eq!(run(&edit(30, &[224, 0, 0, 251], true)), Outcome::Drop(DropReason::BadAddress)); // mDNS group
    assert_eq!(run(&edit(26, &[127, 0, 0, 1], true)), Outcome::Drop(DropReason::BadAddress));
    // Every cut of the frame.
    for len in 0..frame.len() {
        assert_eq!(run(&frame[..len]), Outcome::Drop(DropReason::Truncated), "len {len}");
    }
    // A length beyond the buffer.
    let mut buf = frame.clone();
    assert_eq!(respond_udp(&mut buf, frame.len() + 1, &table(), 1), Outcome::Drop(DropReason::Truncated));
    // Ethernet padding after the datagram is not part of the query.
    let mut padded = frame.clone();
    padded.extend_from_slice(&[0; 8]);
    assert!(matches!(run(&padded), Outcome::Reply(_)));
}

#[test]
fn checksum_offload_partial_checksums_are_accepted() {
    // With TUN_F_CSUM the container's kernel leaves the UDP checksum as the
    // pseudo-header sum only (VIRTIO_NET_HDR_F_NEEDS_CSUM): still answered.
    let mut frame = udp_frame(&DIG_A);
    frame[40..42].copy_from_slice(&[0x12, 0x34]);
    let mut buf = with_room(&frame, 2048);
    assert!(matches!(respond_udp(&mut buf, frame.len(), &table(), 1), Outcome::Reply(_)));
}

/// splitmix64, seeded: a failure reproduces exactly.
pub(super) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// `seed` with a few random bytes changed, cut or extended.
    pub fn mutate(&mut self, seed: &[u8], from: usize) -> Vec<u8> {
        let mut f = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = from + self.below(f.len() - from);
            f[at] = self.next() as u8;
        }
        match self.below(4) {
            0 => f.truncate(from + self.below(f.len() - from)),
            1 => f.extend((0..self.below(40)).map(|_| self.next() as u8)),
            _ => {}
        }
        f
    }
}

#[test]
fn random_and_mutated_frames_never_panic() {
    let t = table();
    let many = query(1, "many", 1, Some((4096, 0, true)));
    let seeds = [&DIG_A[..], &DIG_NOEDNS[..], &DIG_AAAA[..], &many[..]].map(udp_frame);
    let mut rng = Rng(0x5eed);
    let mut replies = 0;
    for i in 0..60_000 {
        let seed = &seeds[i % seeds.len()];
        // Mostly the DNS message, sometimes the headers too.
        let from = if i % 8 == 0 { 0 } else { 42 };
        let f =
            if i % 50 == 0 { (0..rng.below(200)).map(|_| rng.next() as u8).collect() } else { rng.mutate(seed, from) };
        let cap = f.len() + rng.below(700);
        for refuse in [false, true] {
            let mut buf = with_room(&f, cap);
            let out = if refuse {
                refuse_udp(&mut buf, f.len(), &t, Rcode::Refused, 3)
            } else {
                respond_udp(&mut buf, f.len(), &t, 3)
            };
            if let Some(n) = out.reply_len() {
                replies += 1;
                assert!(n <= cap, "iteration {i}: {f:02x?}");
                check_any_reply(&f, &buf[..n]);
                let msg = &buf[42..n];
                let p = DnsPacket::new_checked(msg).unwrap();
                assert!(p.is_response(), "iteration {i}");
                assert!(msg.len() <= 1232, "iteration {i}");
            } else if out == Outcome::NotOurs {
                assert_eq!(buf, with_room(&f, cap), "iteration {i}: NotOurs changed the frame");
            }
        }
    }
    assert!(replies > 10_000, "the mutations should mostly stay answerable: {replies}");
}
