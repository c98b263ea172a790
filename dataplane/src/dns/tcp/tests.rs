//! The stateless TCP responder on real segments (built by etherparse the
//! way Linux sends them), every reply cross-checked with etherparse.

use super::*;
use crate::dns::cookie::{FourTuple, SLOT_MS};
use crate::dns::tests::{
    answers, check_any_reply, check_reply_headers, query, reply_opt, table, with_room, Rng, CLIENT, CLIENT_MAC,
    CLIENT_PORT, DIG_A, DIG_NOEDNS, GW, GW_MAC, WEB,
};
use crate::wire::dns::Packet as DnsPacket;
use crate::wire::Ipv4Packet;
use etherparse::{NetHeaders, PacketBuilder, TcpOptionElement, TransportHeader};
use std::net::Ipv4Addr;

const KEY: CookieKey = CookieKey::new(*b"tapnet-dns-test!");
/// Close to the top of the sequence space, so the arithmetic wraps.
const ISN: u32 = 0xffff_fff0;
const NOW: u64 = 5 * SLOT_MS + 123;
const IP_ID: u16 = 0x0b0b;

fn cfg() -> TcpConfig {
    TcpConfig { key: KEY, mss: 1460 }
}

fn tuple() -> FourTuple {
    FourTuple { src_addr: CLIENT.into(), src_port: CLIENT_PORT, dst_addr: GW.into(), dst_port: PORT }
}

/// The options of a Linux SYN: MSS, SACK permitted, timestamps, NOP,
/// window scale.
fn linux_syn_options(mss: u16) -> [TcpOptionElement; 5] {
    [
        TcpOptionElement::MaximumSegmentSize(mss),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(0x1a2b_3c4d, 0),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ]
}

/// A segment from the client to the gateway's port 53.
fn segment(seq: u32, ack: u32, flags: Flags, options: &[TcpOptionElement], payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(CLIENT_MAC, GW_MAC).ipv4(CLIENT, GW, 64).tcp(CLIENT_PORT, PORT, seq, 64240);
    if flags.contains(Flags::SYN) {
        b = b.syn();
    }
    if flags.contains(Flags::FIN) {
        b = b.fin();
    }
    if flags.contains(Flags::RST) {
        b = b.rst();
    }
    if flags.contains(Flags::PSH) {
        b = b.psh();
    }
    if flags.contains(Flags::ACK) {
        b = b.ack(ack);
    }
    if !options.is_empty() {
        b = b.options(options).unwrap();
    }
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    f
}

/// `msg` with its 2-byte length in front (RFC 1035 §4.2.2).
fn framed(msg: &[u8]) -> Vec<u8> {
    let mut d = (msg.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(msg);
    d
}

/// A reply segment's fields, from etherparse.
#[derive(Debug)]
struct Seg {
    seq: u32,
    ack: u32,
    flags: Flags,
    window: u16,
    header_len: usize,
    options: Vec<u8>,
    payload: Vec<u8>,
}

fn check_tcp_reply(frame: &[u8]) -> Seg {
    let h = check_reply_headers(frame, IP_ID);
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else { unreachable!() };
    let Some(TransportHeader::Tcp(t)) = &h.transport else { panic!("not TCP") };
    let payload = h.payload.slice();
    assert_eq!((t.source_port, t.destination_port, t.urgent_pointer), (PORT, CLIENT_PORT, 0));
    assert_eq!(t.checksum, t.calc_checksum_ipv4(ip, payload).unwrap());
    assert!(!t.urg && !t.ece && !t.cwr && !t.ns);
    let view = TcpPacket::new_checked(&frame[34..]).unwrap();
    assert!(view.verify_checksum_ipv4(GW.into(), CLIENT.into()));
    Seg {
        seq: t.sequence_number,
        ack: t.acknowledgment_number,
        flags: view.flags(),
        window: t.window_size,
        header_len: t.header_len(),
        options: t.options.as_slice().to_vec(),
        payload: payload.to_vec(),
    }
}

fn run(f: &[u8], now: u64) -> (TcpOutcome, Vec<u8>) {
    let mut buf = with_room(f, 2048);
    let out = respond_tcp(&mut buf, f.len(), &table(), &cfg(), now, IP_ID);
    (out, buf)
}

/// Send a SYN with `mss`; our cookie.
fn handshake(mss: u16, now: u64) -> u32 {
    let (out, buf) = run(&segment(ISN, 0, Flags::SYN, &linux_syn_options(mss), &[]), now);
    assert_eq!(out, TcpOutcome::SynAck(58));
    check_tcp_reply(&buf[..58]).seq
}

#[test]
fn full_exchange() {
    // 1. SYN → SYN-ACK with a cookie.
    let syn = segment(ISN, 0, Flags::SYN, &linux_syn_options(1460), &[]);
    let (out, buf) = run(&syn, NOW);
    assert_eq!(out, TcpOutcome::SynAck(14 + 20 + 24));
    let s = check_tcp_reply(&buf[..58]);
    assert_eq!(s.flags, Flags::SYN | Flags::ACK);
    assert_eq!(s.ack, ISN.wrapping_add(1));
    assert_eq!((s.window, s.header_len), (65535, 24));
    assert_eq!(s.options, [2, 4, 0x05, 0xb4], "only our MSS, 1460");
    assert!(s.payload.is_empty());
    let cookie = s.seq;
    assert_eq!(cookie::check(&KEY, &tuple(), ISN, cookie, NOW), Some(1460));
    // The SYN retransmitted gets the same SYN-ACK.
    let (_, again) = run(&syn, NOW + 3000);
    assert_eq!(&again[..58], &buf[..58]);

    // 2. The handshake's ACK: nothing.
    let client_seq = ISN.wrapping_add(1);
    let our_seq = cookie.wrapping_add(1);
    assert_eq!(run(&segment(client_seq, our_seq, Flags::ACK, &[], &[]), NOW).0, TcpOutcome::Ignore);

    // 3. The query → one segment with the answer and our FIN.
    let data = framed(&DIG_A);
    let q = segment(client_seq, our_seq, Flags::ACK | Flags::PSH, &[], &data);
    let (out, buf) = run(&q, NOW + 10);
    let TcpOutcome::Reply(n) = out else { panic!("{out:?}") };
    let s = check_tcp_reply(&buf[..n]);
    assert_eq!(s.flags, Flags::ACK | Flags::PSH | Flags::FIN);
    assert_eq!((s.seq, s.ack), (our_seq, client_seq.wrapping_add(data.len() as u32)));
    assert_eq!((s.window, s.header_len), (65535, 20));
    let msg = &s.payload[2..];
    assert_eq!(usize::from(u16::from_be_bytes([s.payload[0], s.payload[1]])), msg.len());
    let p = DnsPacket::new_checked(msg).unwrap();
    assert_eq!(p.id(), 0xc264);
    assert!(p.is_response() && p.authoritative() && !p.truncated());
    assert_eq!(answers(msg), vec![WEB]);
    assert!(reply_opt(msg).is_some());
    assert_eq!(n, 14 + 20 + 20 + 2 + 21 + 16 + 11);

    // 4. The client acknowledges the answer and our FIN: nothing.
    let their_seq = client_seq.wrapping_add(data.len() as u32);
    let their_ack = our_seq.wrapping_add(s.payload.len() as u32 + 1);
    assert_eq!(run(&segment(their_seq, their_ack, Flags::ACK, &[], &[]), NOW).0, TcpOutcome::Ignore);

    // 5. The client closes: its FIN gets an ACK.
    let (out, buf) = run(&segment(their_seq, their_ack, Flags::FIN | Flags::ACK, &[], &[]), NOW);
    assert_eq!(out, TcpOutcome::Ack(54));
    let s = check_tcp_reply(&buf[..54]);
    assert_eq!((s.seq, s.ack, s.flags), (their_ack, their_seq.wrapping_add(1), Flags::ACK));
    assert!(s.payload.is_empty() && s.options.is_empty());
}

#[test]
fn query_with_fin_acknowledges_the_fin_too() {
    let cookie = handshake(1460, NOW);
    let data = framed(&DIG_NOEDNS);
    let q = segment(ISN.wrapping_add(1), cookie.wrapping_add(1), Flags::ACK | Flags::PSH | Flags::FIN, &[], &data);
    let (out, buf) = run(&q, NOW);
    let TcpOutcome::Reply(n) = out else { panic!("{out:?}") };
    let s = check_tcp_reply(&buf[..n]);
    assert_eq!(s.ack, ISN.wrapping_add(1 + data.len() as u32 + 1));
    assert_eq!(answers(&s.payload[2..]), vec![WEB]);
}

#[test]
fn bad_cookies_get_a_reset() {
    let cookie = handshake(1460, NOW);
    let data = framed(&DIG_A);
    let client_seq = ISN.wrapping_add(1);
    let rst_for = |seq: u32, ack: u32, now: u64| {
        let (out, buf) = run(&segment(seq, ack, Flags::ACK | Flags::PSH, &[], &data), now);
        assert_eq!(out, TcpOutcome::Rst(54, RstReason::BadCookie), "seq {seq:#x} ack {ack:#x} now {now}");
        // RFC 9293 §3.10.7.1, ACK on: <SEQ=SEG.ACK><CTL=RST>.
        let s = check_tcp_reply(&buf[..54]);
        assert_eq!((s.seq, s.ack, s.flags, s.window), (ack, 0, Flags::RST, 0));
        assert!(s.payload.is_empty());
    };
    rst_for(client_seq, cookie, NOW); // off by one
    rst_for(client_seq, cookie.wrapping_add(1) ^ 0x100, NOW); // a flipped bit
    rst_for(client_seq.wrapping_add(7), cookie.wrapping_add(1), NOW); // not at ISN + 1
    rst_for(client_seq, 12345, NOW); // a guess
                                     // Old time slots: valid through the next slot, not after.
    let valid = segment(client_seq, cookie.wrapping_add(1), Flags::ACK | Flags::PSH, &[], &data);
    assert!(matches!(run(&valid, 6 * SLOT_MS + SLOT_MS - 1).0, TcpOutcome::Reply(_)));
    rst_for(client_seq, cookie.wrapping_add(1), 7 * SLOT_MS);
    rst_for(client_seq, cookie.wrapping_add(1), 100 * SLOT_MS);
    // Another key, or another client port, does not accept it either.
    let mut buf = with_room(&valid, 2048);
    let other = TcpConfig { key: CookieKey::new([7; 16]), mss: 1460 };
    assert_eq!(
        respond_tcp(&mut buf, valid.len(), &table(), &other, NOW, IP_ID),
        TcpOutcome::Rst(54, RstReason::BadCookie)
    );
    let mut moved = valid.clone();
    moved[34..36].copy_from_slice(&40001u16.to_be_bytes());
    let mut tcp = TcpPacket::new_unchecked(&mut moved[34..]);
    tcp.fill_checksum_ipv4(CLIENT.into(), GW.into());
    assert_eq!(run(&moved, NOW).0, TcpOutcome::Rst(54, RstReason::BadCookie));
}

#[test]
fn partial_and_bad_messages_get_a_reset() {
    let cookie = handshake(1460, NOW);
    let (seq, ack) = (ISN.wrapping_add(1), cookie.wrapping_add(1));
    let data = framed(&DIG_A);
    for cut in [1, 2, 20, data.len() - 1] {
        let (out, buf) = run(&segment(seq, ack, Flags::ACK | Flags::PSH, &[], &data[..cut]), NOW);
        assert_eq!(out, TcpOutcome::Rst(54, RstReason::Partial), "cut {cut}");
        assert_eq!(check_tcp_reply(&buf[..54]).seq, ack);
    }
    // Shorter than a header, a zero length, and a response.
    let mut response = DIG_A;
    response[2] |= 0x80;
    for msg in [&DIG_A[..11], &[][..], &response[..]] {
        let (out, _) = run(&segment(seq, ack, Flags::ACK | Flags::PSH, &[], &framed(msg)), NOW);
        assert_eq!(out, TcpOutcome::Rst(54, RstReason::BadMessage));
    }
    // Malformed but answerable: FORMERR in an answer segment.
    let mut two = DIG_A;
    two[5] = 2;
    let (out, buf) = run(&segment(seq, ack, Flags::ACK | Flags::PSH, &[], &framed(&two)), NOW);
    assert_eq!(out, TcpOutcome::FormErr(14 + 20 + 20 + 2 + 12));
    let s = check_tcp_reply(&buf[..out.reply_len().unwrap()]);
    assert_eq!(DnsPacket::new_checked(&s.payload[2..]).unwrap().rcode(), Rcode::FormErr);
    let mut update = DIG_A;
    update[2] = 0x28; // Opcode 5
    assert!(matches!(run(&segment(seq, ack, Flags::ACK, &[], &framed(&update)), NOW).0, TcpOutcome::NotImp(_)));
}

#[test]
fn pipelined_queries_get_the_first_answer_only() {
    let cookie = handshake(1460, NOW);
    let mut data = framed(&DIG_A);
    data.extend_from_slice(&framed(&DIG_NOEDNS));
    let q = segment(ISN.wrapping_add(1), cookie.wrapping_add(1), Flags::ACK | Flags::PSH | Flags::FIN, &[], &data);
    let (out, buf) = run(&q, NOW);
    let TcpOutcome::Reply(n) = out else { panic!("{out:?}") };
    let s = check_tcp_reply(&buf[..n]);
    // Only the first query (and not the FIN behind the second) is acknowledged.
    assert_eq!(s.ack, ISN.wrapping_add(1 + 2 + DIG_A.len() as u32));
    assert_eq!(DnsPacket::new_checked(&s.payload[2..]).unwrap().id(), 0xc264);
    // The second, retransmitted on its own, is not at ISN + 1: RST.
    let rest = segment(s.ack, s.seq.wrapping_add(1), Flags::ACK | Flags::PSH, &[], &framed(&DIG_NOEDNS));
    assert_eq!(run(&rest, NOW).0, TcpOutcome::Rst(54, RstReason::BadCookie));
}

#[test]
fn names_not_ours_and_refusals() {
    let cookie = handshake(1460, NOW);
    let q = segment(
        ISN.wrapping_add(1),
        cookie.wrapping_add(1),
        Flags::ACK | Flags::PSH,
        &[],
        &framed(&query(0x7777, "example.org", 1, None)),
    );
    let mut buf = with_room(&q, 2048);
    assert_eq!(respond_tcp(&mut buf, q.len(), &table(), &cfg(), NOW, IP_ID), TcpOutcome::NotOurs);
    assert_eq!(buf, with_room(&q, 2048), "frame untouched");
    let out = refuse_tcp(&mut buf, q.len(), &table(), &cfg(), NOW, IP_ID, Rcode::Refused);
    let TcpOutcome::Refused(n) = out else { panic!("{out:?}") };
    let s = check_tcp_reply(&buf[..n]);
    assert_eq!(s.flags, Flags::ACK | Flags::PSH | Flags::FIN);
    let p = DnsPacket::new_checked(&s.payload[2..]).unwrap();
    assert_eq!((p.id(), p.rcode(), p.question_count(), p.answer_count()), (0x7777, Rcode::Refused, 1, 0));
    // refuse_tcp still checks the cookie.
    let mut bad = q.clone();
    bad[42..46].copy_from_slice(&0u32.to_be_bytes());
    let mut tcp = TcpPacket::new_unchecked(&mut bad[34..]);
    tcp.fill_checksum_ipv4(CLIENT.into(), GW.into());
    let mut buf = with_room(&bad, 2048);
    let out = refuse_tcp(&mut buf, bad.len(), &table(), &cfg(), NOW, IP_ID, Rcode::ServFail);
    assert_eq!(out, TcpOutcome::Rst(54, RstReason::BadCookie));
}

#[test]
fn other_segments() {
    // RST: nothing.
    assert_eq!(run(&segment(ISN, 5, Flags::RST, &[], &[]), NOW).0, TcpOutcome::Ignore);
    assert_eq!(run(&segment(ISN, 5, Flags::RST | Flags::ACK, &[], &[]), NOW).0, TcpOutcome::Ignore);
    // A pure ACK with any numbers: nothing.
    assert_eq!(run(&segment(1, 2, Flags::ACK, &[], &[]), NOW).0, TcpOutcome::Ignore);
    // SYN-ACK: <SEQ=SEG.ACK><CTL=RST>.
    let (out, buf) = run(&segment(ISN, 0xabcd, Flags::SYN | Flags::ACK, &[], &[]), NOW);
    assert_eq!(out, TcpOutcome::Rst(54, RstReason::SynAck));
    assert_eq!(check_tcp_reply(&buf[..54]).seq, 0xabcd);
    // No ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, a FIN counting one.
    for (flags, payload, len) in
        [(Flags::PSH, &b"0123456789"[..], 10u32), (Flags::FIN, &[][..], 1), (Flags::NONE, &[], 0)]
    {
        let (out, buf) = run(&segment(ISN, 0, flags, &[], payload), NOW);
        assert_eq!(out, TcpOutcome::Rst(54, RstReason::NoAck), "{flags:?}");
        let s = check_tcp_reply(&buf[..54]);
        assert_eq!((s.seq, s.ack, s.flags), (0, ISN.wrapping_add(len), Flags::RST | Flags::ACK));
    }
    // SYN+FIN: dropped.
    assert_eq!(run(&segment(ISN, 0, Flags::SYN | Flags::FIN, &[], &[]), NOW).0, TcpOutcome::Drop(DropReason::BadFlags));
    // A SYN with no options, exactly 54 bytes in a 54-byte buffer: no room
    // for the MSS option. With 4 more bytes, the MSS is taken as 536.
    let bare = segment(ISN, 0, Flags::SYN, &[], &[]);
    let mut buf = bare.clone();
    assert_eq!(respond_tcp(&mut buf, 54, &table(), &cfg(), NOW, IP_ID), TcpOutcome::Drop(DropReason::NoRoom));
    let mut buf = with_room(&bare, 58);
    assert_eq!(respond_tcp(&mut buf, 54, &table(), &cfg(), NOW, IP_ID), TcpOutcome::SynAck(58));
    let cookie = check_tcp_reply(&buf[..58]).seq;
    assert_eq!(cookie::check(&KEY, &tuple(), ISN, cookie, NOW), Some(536));
    // Not port 53, not TCP, data offset below 5.
    let mut other_port = bare.clone();
    other_port[36..38].copy_from_slice(&853u16.to_be_bytes());
    assert_eq!(run(&other_port, NOW).0, TcpOutcome::Drop(DropReason::NotDns));
    let mut short_offset = bare.clone();
    short_offset[46] = 0x40;
    assert_eq!(run(&short_offset, NOW).0, TcpOutcome::Drop(DropReason::BadTransportHeader));
    let mut src0 = bare.clone();
    src0[34..36].fill(0);
    assert_eq!(run(&src0, NOW).0, TcpOutcome::Drop(DropReason::BadAddress));
    for len in 0..bare.len() {
        assert_eq!(run(&bare[..len], NOW).0, TcpOutcome::Drop(DropReason::Truncated), "len {len}");
    }
    let udp = crate::dns::tests::udp_frame(&DIG_A);
    assert_eq!(run(&udp, NOW).0, TcpOutcome::Drop(DropReason::NotDns));
}

#[test]
fn answers_fit_the_clients_mss() {
    // A client with MSS 536 asking for 40 addresses over TCP: 2 + 22 + 11 +
    // 31 × 16 = 531 bytes of data fit, the rest is cut and TC set.
    let cookie = handshake(536, NOW);
    let data = framed(&query(1, "many", 1, Some((4096, 0, false))));
    let (out, buf) = run(&segment(ISN.wrapping_add(1), cookie.wrapping_add(1), Flags::ACK, &[], &data), NOW);
    let TcpOutcome::Reply(n) = out else { panic!("{out:?}") };
    let s = check_tcp_reply(&buf[..n]);
    assert!(s.payload.len() <= 536);
    let msg = &s.payload[2..];
    assert!(DnsPacket::new_checked(msg).unwrap().truncated());
    assert_eq!(answers(msg).len(), 31);
    // With MSS 1460, all 40 fit, whatever the EDNS payload size says.
    let cookie = handshake(1460, NOW);
    let data = framed(&query(1, "many", 1, Some((512, 0, false))));
    let (out, buf) = run(&segment(ISN.wrapping_add(1), cookie.wrapping_add(1), Flags::ACK, &[], &data), NOW);
    let s = check_tcp_reply(&buf[..out.reply_len().unwrap()]);
    assert!(!DnsPacket::new_checked(&s.payload[2..]).unwrap().truncated());
    assert_eq!(answers(&s.payload[2..]).len(), 40);
    assert_eq!(answers(&s.payload[2..])[39], Ipv4Addr::new(10, 90, 0, 40));
}

#[test]
fn options_in_the_query_segment_are_not_echoed() {
    // A query segment with timestamps (12 bytes of options) behind an
    // IPv4 header with options: the answer has bare headers.
    let cookie = handshake(1460, NOW);
    let opts = [TcpOptionElement::Noop, TcpOptionElement::Noop, TcpOptionElement::Timestamp(1, 2)];
    let q = segment(ISN.wrapping_add(1), cookie.wrapping_add(1), Flags::ACK | Flags::PSH, &opts, &framed(&DIG_A));
    let mut f = q[..34].to_vec();
    f.extend_from_slice(&[1, 1, 1, 0]); // IPv4 options: NOP NOP NOP EOL
    f.extend_from_slice(&q[34..]);
    f[14] = 0x46;
    let total = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
    let (out, buf) = run(&f, NOW);
    let TcpOutcome::Reply(n) = out else { panic!("{out:?}") };
    let s = check_tcp_reply(&buf[..n]);
    assert_eq!((s.header_len, s.options.len()), (20, 0));
    assert_eq!(answers(&s.payload[2..]), vec![WEB]);
}

#[test]
fn client_mss_option_parsing() {
    assert_eq!(client_mss(&[2, 4, 0x05, 0xb4]), Some(1460));
    assert_eq!(client_mss(&[1, 1, 4, 2, 2, 4, 0x02, 0x18]), Some(536));
    assert_eq!(client_mss(&[0, 2, 4, 0x05, 0xb4]), None, "after End of Option List");
    assert_eq!(client_mss(&[2, 4, 0x05]), None, "cut");
    assert_eq!(client_mss(&[3, 0, 2, 4, 0x05, 0xb4]), None, "length 0");
    assert_eq!(client_mss(&[3, 1, 2, 4, 0x05, 0xb4]), None, "length 1");
    assert_eq!(client_mss(&[2, 3, 0, 2, 4, 1, 0]), Some(256), "wrong MSS length skipped");
    assert_eq!(client_mss(&[8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 0x23, 0x28]), Some(9000));
    assert_eq!(client_mss(&[]), None);
}

#[test]
fn random_and_mutated_segments_never_panic() {
    let t = table();
    let cookie = handshake(1460, NOW);
    let (seq, ack) = (ISN.wrapping_add(1), cookie.wrapping_add(1));
    let seeds = [
        segment(ISN, 0, Flags::SYN, &linux_syn_options(1460), &[]),
        segment(seq, ack, Flags::ACK | Flags::PSH, &[], &framed(&DIG_A)),
        segment(seq, ack, Flags::ACK | Flags::PSH | Flags::FIN, &[], &framed(&query(3, "many", 1, None))),
        segment(seq, ack, Flags::ACK | Flags::FIN, &[], &[]),
    ];
    let mut rng = Rng(0x7cb5);
    let mut answered = 0;
    for i in 0..60_000 {
        let seed = &seeds[i % seeds.len()];
        // Mostly the TCP header and data (the query at 56), sometimes all.
        let from = if i % 8 == 0 { 0 } else { 34 };
        let f =
            if i % 50 == 0 { (0..rng.below(120)).map(|_| rng.next() as u8).collect() } else { rng.mutate(seed, from) };
        let cap = f.len() + rng.below(600);
        let now = NOW + rng.below(2) as u64 * SLOT_MS;
        for refuse in [false, true] {
            let mut buf = with_room(&f, cap);
            let out = if refuse {
                refuse_tcp(&mut buf, f.len(), &t, &cfg(), now, IP_ID, Rcode::Refused)
            } else {
                respond_tcp(&mut buf, f.len(), &t, &cfg(), now, IP_ID)
            };
            match out {
                TcpOutcome::NotOurs => assert_eq!(buf, with_room(&f, cap), "iteration {i}"),
                TcpOutcome::Reply(n) | TcpOutcome::FormErr(n) | TcpOutcome::NotImp(n) | TcpOutcome::Refused(n) => {
                    answered += 1;
                    check_any_reply(&f, &buf[..n]);
                    let len = usize::from(u16::from_be_bytes([buf[54], buf[55]]));
                    assert_eq!(56 + len, n, "iteration {i}");
                    assert!(DnsPacket::new_checked(&buf[56..n]).unwrap().is_response(), "iteration {i}");
                }
                other => {
                    if let Some(n) = other.reply_len() {
                        assert!(n <= cap, "iteration {i}");
                        check_any_reply(&f, &buf[..n]);
                    }
                }
            }
        }
    }
    assert!(answered > 5_000, "the mutations should often stay answerable: {answered}");
}
