//! Per-query cost of the embedded DNS responder, on a table of 256 names.
//!
//! Every case but `table/lookup` first copies the query frame into the
//! working buffer, since the responders rewrite it in place;
//! `udp/copy_only` measures that copy alone.
//!
//! Cases:
//! - `udp/copy_only`: the 86-byte copy of the query frame.
//! - `udp/answer_a`: `dig web A` as BIND 9.18 sends it (EDNS, COOKIE) to a
//!   frame with the A record and an OPT record: parse, look up, write,
//!   IPv4 and UDP checksums.
//! - `udp/not_ours`: a query for `example.com`: parsed, looked up, frame
//!   left untouched.
//! - `tcp/syn`: a Linux SYN (MSS, SACK, timestamps, window scale) to its
//!   SYN-ACK with a SipHash cookie.
//! - `tcp/query`: the query segment with a valid cookie (two SipHash
//!   evaluations at most) to the answer segment with ACK+PSH+FIN.
//! - `table/lookup`: the question's name decoded, lowercased and looked up.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::dns::{cookie, respond_tcp, respond_udp, CookieKey, DnsTable, TcpConfig};
use etherparse::{PacketBuilder, TcpOptionElement};
use std::hint::black_box;
use std::net::Ipv4Addr;

const CLIENT_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x58, 0x00, 0x02];
const GW_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x58, 0x00, 0x01];
const CLIENT: [u8; 4] = [10, 88, 0, 2];
const GW: [u8; 4] = [10, 88, 0, 1];
const ISN: u32 = 0x1234_5678;
const NOW: u64 = 1_000_000;

/// `dig @10.88.0.1 web A`, captured.
const DIG_A: [u8; 44] = [
    0xc2, 0x64, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, //
    0x03, b'w', b'e', b'b', 0x00, 0x00, 0x01, 0x00, 0x01, //
    0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, //
    0x00, 0x0a, 0x00, 0x08, 0x9c, 0xe7, 0xc5, 0x5a, 0x00, 0xcc, 0xfd, 0x8b,
];

fn table() -> DnsTable {
    let mut names: Vec<(String, Ipv4Addr)> =
        (0..255u8).map(|i| (format!("container-{i}"), Ipv4Addr::new(10, 88, 1, i))).collect();
    names.push(("web".into(), Ipv4Addr::new(10, 88, 0, 3)));
    DnsTable::new(names).unwrap()
}

fn udp(msg: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, GW_MAC).ipv4(CLIENT, GW, 64).udp(40000, 53).write(&mut f, msg).unwrap();
    f
}

fn tcp(seq: u32, ack: Option<u32>, options: &[TcpOptionElement], payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, GW_MAC).ipv4(CLIENT, GW, 64).tcp(40000, 53, seq, 64240);
    let b = match ack {
        Some(a) => b.ack(a).psh(),
        None => b.syn(),
    };
    let b = if options.is_empty() { b } else { b.options(options).unwrap() };
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    f
}

fn udp_cases(c: &mut Criterion) {
    let t = table();
    let answer = udp(&DIG_A);
    let mut other = DIG_A[..12].to_vec();
    other.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    other[11] = 0;
    let not_ours = udp(&other);
    let mut buf = vec![0u8; 2048];
    buf[..answer.len()].copy_from_slice(&answer);
    assert!(matches!(respond_udp(&mut buf, answer.len(), &t, 7), dataplane::dns::Outcome::Reply(_)));
    buf[..not_ours.len()].copy_from_slice(&not_ours);
    assert_eq!(respond_udp(&mut buf, not_ours.len(), &t, 7), dataplane::dns::Outcome::NotOurs);

    let mut g = c.benchmark_group("udp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("copy_only", |b| {
        b.iter(|| {
            buf[..answer.len()].copy_from_slice(black_box(&answer));
            black_box(&buf);
        })
    });
    g.bench_function("answer_a", |b| {
        b.iter(|| {
            buf[..answer.len()].copy_from_slice(black_box(&answer));
            respond_udp(&mut buf, answer.len(), &t, 7)
        })
    });
    g.bench_function("not_ours", |b| {
        b.iter(|| {
            buf[..not_ours.len()].copy_from_slice(black_box(&not_ours));
            respond_udp(&mut buf, not_ours.len(), &t, 7)
        })
    });
    g.finish();
}

fn tcp_cases(c: &mut Criterion) {
    let t = table();
    let cfg = TcpConfig { key: CookieKey::new(*b"bench-cookie-key"), mss: 1460 };
    let linux = [
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(1, 0),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ];
    let syn = tcp(ISN, None, &linux, &[]);
    let tuple = cookie::FourTuple { src_addr: CLIENT.into(), src_port: 40000, dst_addr: GW.into(), dst_port: 53 };
    let our_isn = cookie::make(&cfg.key, &tuple, ISN, 1460, NOW);
    let mut data = (DIG_A.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&DIG_A);
    let query = tcp(ISN + 1, Some(our_isn + 1), &[], &data);
    let mut buf = vec![0u8; 2048];
    buf[..query.len()].copy_from_slice(&query);
    assert!(matches!(respond_tcp(&mut buf, query.len(), &t, &cfg, NOW, 1), dataplane::dns::TcpOutcome::Reply(_)));

    let mut g = c.benchmark_group("tcp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("syn", |b| {
        b.iter(|| {
            buf[..syn.len()].copy_from_slice(black_box(&syn));
            respond_tcp(&mut buf, syn.len(), &t, &cfg, black_box(NOW), 7)
        })
    });
    g.bench_function("query", |b| {
        b.iter(|| {
            buf[..query.len()].copy_from_slice(black_box(&query));
            respond_tcp(&mut buf, query.len(), &t, &cfg, black_box(NOW), 7)
        })
    });
    g.finish();
}

fn table_cases(c: &mut Criterion) {
    let t = table();
    let mut g = c.benchmark_group("table");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lookup", |b| b.iter(|| t.lookup_in_message(black_box(&DIG_A), 12)));
    g.finish();
}

criterion_group!(benches, udp_cases, tcp_cases, table_cases);
criterion_main!(benches);
