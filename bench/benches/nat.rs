//! NAT per frame: `nat::classify`, the worker's `Conntrack` and the
//! in-place rewrite, on IPv4 packets built with etherparse (real headers,
//! lengths and checksums; TCP with the timestamps option).
//!
//! Every case handles a batch of 32 packets (the worker's `BATCH`) per
//! iteration and reports per element (`Throughput::Elements(32)`), so
//! criterion's time divided by 32 is the cost per frame. A rewrite changes
//! the packet, so each iteration first restores the 32 packets in place:
//! the first 64 bytes of data packets, whole SYNs (52 bytes). That copy is
//! timed with the rest. The packets stay in the same 32 buffers, as in a
//! worker, and their payload is never touched. The
//! table holds 10,000 flows besides the measured ones, with the
//! daemon-sized capacity of 65,536.
//!
//! Cases (`nat/*`):
//! - `established`: 32 packets of 16 established masqueraded TCP flows, a
//!   1448-byte data segment from the container and an ACK back for each:
//!   classify + lookup + state update + TTL decrement + rewrite;
//! - `new_flow`: 32 SYNs of flows not in the table (cycling through 8192
//!   of them): classify + lookup miss + port allocation (the source port is
//!   kept when free) + insert + TTL decrement + rewrite, and the 32 entries
//!   are removed again afterwards, inside the timed loop, so the table
//!   stays at its steady size;
//! - `new_flow_residue`: the same, with an allocation predicate that only
//!   half of the ports pass (a 2-worker owner check), so half the SYNs
//!   cannot keep their port;
//! - `rewrite_tso_partial`: the rewrite alone on 64 KiB TSO super-frames in
//!   partial-checksum mode, source address and port changed (and back on
//!   the next iteration): the cost does not depend on the length.

use std::hint::black_box;
use std::net::Ipv4Addr;

use bench::frames::MSS;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::nat::{self, Classified, Conntrack, Dir, EntryId, FlowKey, L4Csum, NewFlow, Proto, Timeouts};
use dataplane::wire::tcp::Flags;
use dataplane::BATCH;
use etherparse::{PacketBuilder, TcpOptionElement};

const UPLINK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const CAPACITY: usize = 65_536;
const BACKGROUND: usize = 10_000;
const NEW_POOL: usize = 8192;
const NOW: u64 = 1_000;
const PORTS: std::ops::RangeInclusive<u16> = 1024..=65535;
/// `new_flow_residue`: the worker count and this worker's number.
const WORKERS: u32 = 2;
const OWNER: u32 = 0;
/// Bytes restored per packet before it is translated again.
const HEADERS: usize = 64;

/// Container `i` of 10.88.0.0/16 (from .2).
fn container(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 88, 0, 2)) + i as u32)
}

/// A TCP segment `k` with timestamps and `payload_len` bytes, TTL 64.
fn tcp(k: FlowKey, flags: Flags, payload_len: usize) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(k.src.octets(), k.dst.octets(), 64).tcp(k.sport, k.dport, 0x1234_5678, 502);
    if flags.contains(Flags::SYN) {
        b = b.syn();
    }
    if flags.contains(Flags::ACK) {
        b = b.ack(0x9abc_def0);
    }
    if flags.contains(Flags::PSH) {
        b = b.psh();
    }
    let b = b
        .options(&[TcpOptionElement::Noop, TcpOptionElement::Noop, TcpOptionElement::Timestamp(1_000_000, 999_000)])
        .expect("timestamps fit");
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let mut v = Vec::with_capacity(b.size(payload_len));
    b.write(&mut v, &payload).expect("segment within IPv4 limits");
    v
}

/// Masquerade `k` to the uplink, keeping its port: the reply tuple.
fn masquerade(ct: &mut Conntrack, k: FlowKey) -> EntryId {
    let flow =
        NewFlow { original: k, reply: k.with_src(UPLINK, k.sport).reverse(), tag: 0, tcp_flags: Flags::SYN, bytes: 60 };
    ct.insert(flow, 0).expect("room in the table")
}

/// A table of `BACKGROUND` established flows to port 443.
fn table() -> Conntrack {
    let mut ct = Conntrack::new(CAPACITY, Timeouts::default()).expect("table");
    for i in 0..BACKGROUND {
        let k = FlowKey::new(Proto::Tcp, container(1000 + i), 36_000 + i as u16, REMOTE, 443);
        let id = masquerade(&mut ct, k);
        ct.update(id, Dir::Reply, Flags::SYN | Flags::ACK, 60, 0);
        ct.update(id, Dir::Original, Flags::ACK, 52, 0);
    }
    ct
}

/// Per-frame work for a packet of a known flow.
#[inline]
fn established(ct: &mut Conntrack, pkt: &mut [u8]) {
    let Ok(Classified::Flow(f)) = nat::classify(pkt) else { panic!("not a flow") };
    let (id, dir) = ct.lookup(&f.key, NOW).expect("established flow");
    let to = ct.update(id, dir, f.tcp_flags, f.len.into(), NOW).expect("live").target(dir);
    nat::decrement_ttl(pkt).expect("IPv4");
    nat::rewrite(pkt, &to, L4Csum::Full).expect("rewrite");
}

/// Per-frame work for the first packet of a new outbound flow.
#[inline]
fn new_flow(ct: &mut Conntrack, pkt: &mut [u8], accept: impl Fn(u16) -> bool) -> EntryId {
    let Ok(Classified::Flow(f)) = nat::classify(pkt) else { panic!("not a flow") };
    assert!(ct.lookup(&f.key, NOW).is_none());
    let k = f.key;
    let port = ct.alloc(k.proto, k.dst, k.dport, UPLINK, k.sport, PORTS, accept).expect("a free port");
    let new = NewFlow {
        original: k,
        reply: k.with_src(UPLINK, port).reverse(),
        tag: 0,
        tcp_flags: f.tcp_flags,
        bytes: f.len.into(),
    };
    let id = ct.insert(new, NOW).expect("room in the table");
    let to = ct.get(id).expect("just inserted").target(Dir::Original);
    nat::decrement_ttl(pkt).expect("IPv4");
    nat::rewrite(pkt, &to, L4Csum::Full).expect("rewrite");
    id
}

fn bench_nat(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat");
    g.throughput(Throughput::Elements(BATCH as u64));

    // (a) established: 32 flows of their own, data out and ACKs back.
    let mut ct = table();
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    for i in 0..BATCH / 2 {
        let k = FlowKey::new(Proto::Tcp, container(i), 50_000 + i as u16, REMOTE, 443);
        let id = masquerade(&mut ct, k);
        ct.update(id, Dir::Reply, Flags::SYN | Flags::ACK, 60, 0);
        ct.update(id, Dir::Original, Flags::ACK, 52, 0);
        batch.push(tcp(k, Flags::PSH | Flags::ACK, MSS));
        batch.push(tcp(k.with_src(UPLINK, k.sport).reverse(), Flags::ACK, 0));
    }
    // Check once: every packet comes out translated.
    let mut check = batch.clone();
    for p in &mut check {
        established(&mut ct, p);
    }
    assert!(check.iter().all(|p| {
        let k = FlowKey::from_ipv4(p).unwrap();
        k.src == UPLINK || k.dst.octets()[..2] == [10, 88]
    }));
    let headers: Vec<Vec<u8>> = batch.iter().map(|p| p[..HEADERS.min(p.len())].to_vec()).collect();
    g.bench_function("established", |b| {
        b.iter(|| {
            for (p, h) in batch.iter_mut().zip(&headers) {
                p[..h.len()].copy_from_slice(h);
                established(&mut ct, black_box(p));
            }
        })
    });

    // (b) new flows, 32 at a time from a pool, removed again.
    let pool: Vec<Vec<u8>> = (0..NEW_POOL)
        .map(|i| {
            let k = FlowKey::new(Proto::Tcp, container(i % 200), 20_000 + i as u16, REMOTE, 443);
            tcp(k, Flags::SYN, 0)
        })
        .collect();
    for (name, residue) in [("new_flow", false), ("new_flow_residue", true)] {
        let mut ct = table();
        // The flow's owner from the steering hash: (U + port) % workers.
        let owner = |p: u16| !residue || u32::from(UPLINK).wrapping_add(u32::from(p)) % WORKERS == OWNER;
        let mut at = 0;
        let mut ids = [None; BATCH];
        let mut bufs = pool[..BATCH].to_vec();
        g.bench_function(name, |b| {
            b.iter(|| {
                for ((p, id), fresh) in bufs.iter_mut().zip(ids.iter_mut()).zip(&pool[at..at + BATCH]) {
                    p.copy_from_slice(fresh);
                    *id = Some(new_flow(&mut ct, black_box(p), owner));
                }
                for id in ids.iter_mut() {
                    ct.remove(id.take().expect("inserted"));
                }
                at = (at + BATCH) % NEW_POOL;
            })
        });
        assert_eq!(ct.len(), BACKGROUND);
    }

    // (c) the rewrite alone on TSO super-frames, partial checksum.
    let k = FlowKey::new(Proto::Tcp, container(0), 40_000, REMOTE, 5201);
    let mut frame = tcp(k, Flags::PSH | Flags::ACK, bench::frames::TSO_PAYLOAD);
    // CHECKSUM_PARTIAL: the field holds the pseudo-header sum.
    let pseudo = dataplane::wire::checksum::pseudo_header_v4(
        k.src,
        k.dst,
        dataplane::wire::IpProtocol::Tcp,
        (frame.len() - 20) as u16,
    );
    frame[36..38].copy_from_slice(&pseudo.to_be_bytes());
    let mut tso: Vec<Vec<u8>> = vec![frame; BATCH];
    // Alternate between the two tuples so that every iteration rewrites.
    let (there, back) = (k.with_src(UPLINK, 61_000), k);
    let mut flip = false;
    g.bench_function("rewrite_tso_partial", |b| {
        b.iter(|| {
            flip = !flip;
            let to = if flip { &there } else { &back };
            for p in tso.iter_mut() {
                nat::rewrite(black_box(p), to, L4Csum::Partial).expect("rewrite");
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_nat);
criterion_main!(benches);
