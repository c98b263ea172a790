//! The cost of port security on the worker's bridge stage
//! (`dataplane::classify_batch`, as `Worker::process` calls it), per batch
//! of 32 frames; time per iteration / 32 is ns/frame.
//!
//! Cases:
//! - `portsec/mixed/{plain,limit,pinned}`: one container pair's mixed
//!   traffic (`bench::frames::mixed_batch(1)`: TSO bulk, ACKs, UDP, ARP),
//!   warm table, with no MAC limit and no pin; with the default limit of 64
//!   MACs per port (the known sources never touch the per-port count); and
//!   with `--port-security` on top (every frame checked against the pin);
//! - `portsec/flood/at_limit`: 32 frames from new source MACs on a port at
//!   its limit, all dropped as `mac_limit` (the attack, steady state);
//! - `portsec/flood/table_full`: the same frames with no limit on a full
//!   table (what the attack cost before: each scans its window and floods).

use std::hint::black_box;

use bench::frames::{mixed_batch, tcp_frame, vnet_prefixed, Host, RxBufs, VNET_NONE};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::bridge::{fdb, Fdb, Pin, Tally};
use dataplane::router::Action;
use dataplane::stats::DropReason;
use dataplane::wire::MacAddr;
use dataplane::{classify_batch, BATCH};

const NOW: u64 = 10_000;

fn mixed(c: &mut Criterion) {
    let mut g = c.benchmark_group("portsec/mixed");
    g.throughput(Throughput::Elements(BATCH as u64));
    let batches = mixed_batch(1);
    for (name, limit, pinned) in
        [("plain", 0, false), ("limit", fdb::DEFAULT_MAX_MACS_PER_PORT, false), ("pinned", 64, true)]
    {
        let mut bufs: Vec<(u16, RxBufs)> = batches.iter().map(|b| (b.ingress, RxBufs::new(&b.pkts))).collect();
        let fdb = Fdb::new(fdb::DEFAULT_CAPACITY, fdb::DEFAULT_AGEING_MS);
        fdb.set_port_limit(limit);
        let pins: Vec<Option<Pin>> = bufs
            .iter()
            .map(|(p, _)| {
                let h = Host::nth(*p as usize);
                pinned.then_some(Pin { mac: MacAddr(h.mac), ip: h.ip.into() })
            })
            .collect();
        let mut tally = Tally::default();
        let mut verdicts = [Action::Flood; BATCH];
        for _ in 0..2 {
            for ((ingress, b), pin) in bufs.iter_mut().zip(&pins) {
                classify_batch(&fdb, true, *ingress, pin.as_ref(), b.receive(*ingress), NOW, &mut verdicts, &mut tally);
                assert!(verdicts.iter().all(|v| matches!(v, Action::Flood | Action::Forward(_))), "{verdicts:?}");
            }
        }
        let mut next = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let ((ingress, rx), pin) = (&mut bufs[next], &pins[next]);
                next = (next + 1) % batches.len();
                let p = rx.receive(*ingress);
                classify_batch(&fdb, true, *ingress, pin.as_ref(), black_box(p), NOW, &mut verdicts, &mut tally);
                black_box(&verdicts);
            })
        });
    }
    g.finish();
}

fn flood(c: &mut Criterion) {
    let mut g = c.benchmark_group("portsec/flood");
    g.throughput(Throughput::Elements(BATCH as u64));
    let victim = Host::nth(1).mac;
    let pkts: Vec<Vec<u8>> =
        (0..BATCH).map(|i| vnet_prefixed(VNET_NONE, &tcp_frame([0x02, 0xee, 0, 0, 0, i as u8], victim, 0))).collect();
    for (name, limit) in [("at_limit", fdb::DEFAULT_MAX_MACS_PER_PORT), ("table_full", 0)] {
        let fdb = Fdb::new(fdb::DEFAULT_CAPACITY, fdb::DEFAULT_AGEING_MS);
        fdb.set_port_limit(limit);
        // Fill the attacker's port to its limit, or the table to its bound
        // (from other MACs than the batch's).
        let fill = if limit == 0 { fdb::DEFAULT_CAPACITY } else { limit as usize };
        for i in 0..fill * 2 {
            let m = MacAddr([0x02, 0xdd, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            fdb.learn_limited(m, 0, limit, NOW);
        }
        let mut rx = RxBufs::new(&pkts);
        let mut tally = Tally::default();
        let mut verdicts = [Action::Flood; BATCH];
        classify_batch(&fdb, true, 0, None, rx.receive(0), NOW, &mut verdicts, &mut tally);
        let want = if limit == 0 { Action::Flood } else { Action::Drop(DropReason::MacLimit) };
        assert!(verdicts.iter().all(|v| *v == want), "{verdicts:?}");
        g.bench_function(name, |b| {
            b.iter(|| {
                let p = rx.receive(0);
                classify_batch(&fdb, true, 0, None, black_box(p), NOW, &mut verdicts, &mut tally);
                black_box(&verdicts);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, mixed, flood);
criterion_main!(benches);
