//! The learning bridge alone: `bridge::decide` on Ethernet frames (no
//! virtio-net header) and the forwarding database under it.
//!
//! Every case runs a batch of 32 frames (the worker's `BATCH`) or 32 MACs
//! per iteration and reports per element (`Throughput::Elements(32)`), so
//! criterion's time divided by 32 is the cost per frame. Frames are real
//! Ethernet/IPv4/TCP and ARP bytes from `bench::frames`' builders; the clock is
//! fixed, so known MACs are never rewritten (as between two 1 s refreshes).
//!
//! Cases (`decide/*`, 16 container pairs, table of the daemon's default size):
//! - `learned_unicast`: TCP between pairs, both MACs known -> Forward;
//! - `flood`: broadcast ARP requests from known sources -> Flood;
//! - `miss`: TCP to a unicast MAC never learned -> Flood (unknown unicast);
//! - `mac_move`: one MAC alternating between two ports -> a move per frame;
//! - `full_table`: table full, 32 new sources to a known destination ->
//!   learning refused, Forward.
//!
//! Cases (`fdb/*/{8,4096}`: table of the daemon's default size holding 8 or
//! 4096 entries; 32 MACs per iteration, cycling through all entries):
//! - `lookup_hit`, `lookup_miss`, `learn_known`.

use std::hint::black_box;

use bench::frames::{arp_request, tcp_frame, Host, MSS};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::bridge::{self, fdb, Fdb, Learn, Tally, Verdict};
use dataplane::port::PortId;
use dataplane::wire::MacAddr;
use dataplane::BATCH;

const NOW: u64 = 10_000;
const PAIRS: usize = 16;

/// A frame and the port it arrives on.
type Input = (PortId, Vec<u8>);

fn table() -> Fdb {
    Fdb::new(fdb::DEFAULT_CAPACITY, fdb::DEFAULT_AGEING_MS)
}

/// A table holding `n` hosts on their ports, and those hosts: the first
/// `n` of `Host::nth(0..)` that find room (a nearly full table may have no
/// free slot in some MACs' windows).
fn table_with(n: usize) -> (Fdb, Vec<Host>) {
    let t = table();
    let hosts: Vec<Host> =
        (0..).map(Host::nth).filter(|h| t.learn(MacAddr(h.mac), h.port, 0) == Learn::Learned).take(n).collect();
    assert_eq!(t.len(), n);
    (t, hosts)
}

/// Decide a batch; the verdicts are checked once before measuring.
fn run(fdb: &Fdb, batch: &[Input], verdicts: &mut [Verdict; BATCH], tally: &mut Tally) {
    for (v, (ingress, f)) in verdicts.iter_mut().zip(batch) {
        *v = bridge::decide(fdb, *ingress, f, NOW, tally);
    }
}

fn bench_decide(c: &mut Criterion, name: &str, fdb: &Fdb, batch: &[Input], expect: impl Fn(Verdict) -> bool) {
    assert_eq!(batch.len(), BATCH);
    let mut verdicts = [Verdict::Flood; BATCH];
    let mut tally = Tally::default();
    run(fdb, batch, &mut verdicts, &mut tally);
    assert!(verdicts.iter().all(|&v| expect(v)), "{name}: unexpected verdicts {verdicts:?}");
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(name, |b| {
        b.iter(|| {
            run(fdb, black_box(batch), &mut verdicts, &mut tally);
            black_box(&verdicts);
        })
    });
    g.finish();
}

fn decide(c: &mut Criterion) {
    // Data one way, ACKs the other: pair k's hosts are 2k and 2k + 1.
    let unicast: Vec<Input> = (0..BATCH)
        .map(|i| {
            let k = i % PAIRS;
            let (a, b) = (Host::nth(2 * k), Host::nth(2 * k + 1));
            if i < PAIRS {
                (a.port, tcp_frame(a.mac, b.mac, MSS))
            } else {
                (b.port, tcp_frame(b.mac, a.mac, 0))
            }
        })
        .collect();
    let (fdb, hosts) = table_with(2 * PAIRS);
    assert_eq!(hosts, (0..2 * PAIRS).map(Host::nth).collect::<Vec<_>>());
    bench_decide(c, "learned_unicast", &fdb, &unicast, |v| matches!(v, Verdict::Forward(_)));

    let arp: Vec<Input> = (0..BATCH)
        .map(|i| {
            let (a, b) = (Host::nth(i), Host::nth(i ^ 1));
            (a.port, arp_request(a.mac, a.ip, b.ip))
        })
        .collect();
    bench_decide(c, "flood", &fdb, &arp, |v| v == Verdict::Flood);

    // Destinations far beyond the hosts the table knows.
    let miss: Vec<Input> = (0..BATCH)
        .map(|i| {
            let (a, b) = (Host::nth(i), Host::nth(10_000 + i));
            (a.port, tcp_frame(a.mac, b.mac, MSS))
        })
        .collect();
    bench_decide(c, "miss", &fdb, &miss, |v| v == Verdict::Flood);

    // Host 0 seen alternately behind ports 100 and 101, talking to host 1.
    let (a, b) = (Host::nth(0), Host::nth(1));
    let moving: Vec<Input> = (0..BATCH).map(|i| (100 + (i % 2) as PortId, tcp_frame(a.mac, b.mac, MSS))).collect();
    let (fdb_move, _) = table_with(2);
    bench_decide(c, "mac_move", &fdb_move, &moving, |v| v == Verdict::Forward(b.port));
    assert_eq!(fdb_move.learn(MacAddr(a.mac), 100, NOW), Learn::Moved { from: 101 });

    // As many entries as the capacity allows; new sources (beyond every
    // host tried) write to host 1, which is known.
    let (full, known) = table_with(fdb::DEFAULT_CAPACITY);
    assert_eq!(known[1], b);
    let strangers: Vec<Input> = (0..BATCH)
        .map(|i| {
            let s = Host::nth(2 * fdb::DEFAULT_CAPACITY + i);
            (s.port, tcp_frame(s.mac, b.mac, MSS))
        })
        .collect();
    bench_decide(c, "full_table", &full, &strangers, |v| v == Verdict::Forward(b.port));
    assert_eq!(full.len(), fdb::DEFAULT_CAPACITY);
}

fn fdb_alone(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in [8usize, 4096] {
        let (t, hosts) = table_with(n);
        let known: Vec<MacAddr> = (0..n.max(BATCH)).map(|i| MacAddr(hosts[i % n].mac)).collect();
        let unknown: Vec<MacAddr> = (0..n.max(BATCH)).map(|i| MacAddr(Host::nth(20_000 + i).mac)).collect();
        let ports: Vec<PortId> = (0..n.max(BATCH)).map(|i| hosts[i % n].port).collect();
        let windows = known.len() / BATCH;

        let mut w = 0;
        g.bench_function(format!("lookup_hit/{n}"), |b| {
            b.iter(|| {
                let base = w * BATCH;
                w = (w + 1) % windows;
                for m in black_box(&known[base..base + BATCH]) {
                    black_box(t.lookup(*m, NOW).expect("known"));
                }
            })
        });
        let mut w = 0;
        g.bench_function(format!("lookup_miss/{n}"), |b| {
            b.iter(|| {
                let base = w * BATCH;
                w = (w + 1) % windows;
                for m in black_box(&unknown[base..base + BATCH]) {
                    black_box(t.lookup(*m, NOW));
                }
            })
        });
        let mut w = 0;
        g.bench_function(format!("learn_known/{n}"), |b| {
            b.iter(|| {
                let base = w * BATCH;
                w = (w + 1) % windows;
                for (m, &p) in black_box(&known[base..base + BATCH]).iter().zip(&ports[base..base + BATCH]) {
                    black_box(t.learn(*m, p, NOW));
                }
            })
        });
        assert_eq!(t.learn(known[0], ports[0], NOW), Learn::Known);
        assert_eq!(t.len(), n);
    }
    g.finish();
}

criterion_group!(benches, decide, fdb_alone);
criterion_main!(benches);
