//! One worker's whole per-packet pipeline minus the system calls, on
//! batches of realistic frames: virtio-net header validation, Ethernet
//! parse, learn, lookup and verdict (`dataplane::classify_batch`, the very
//! function `Worker::process` calls), then the per-batch counter updates
//! the worker makes before it transmits.
//!
//! TARGET (the issue's): <= 30 ns/frame on one core for the whole bridge
//! pipeline. Criterion reports elements/s with `Throughput::Elements(32)`;
//! its time per iteration divided by 32 is ns/frame.
//!
//! Packets sit in worker-like receive buffers (`BUF_SIZE` apart, after
//! `HEADROOM`); each iteration decides one batch of 32 from one ingress
//! port, cycling through the ports as the worker's ready list does. The MAC
//! table is the daemon's default size, warm (both hosts of every pair
//! learned), and the clock is fixed (no refresh writes).
//!
//! Cases, over `bench::frames::mixed_batch` (per pair: bulk TCP of 64 KiB TSO
//! super-frames and MSS segments one way, ACKs the other, one UDP query and
//! one broadcast ARP per batch of 32, so about 3 % floods):
//! - `pipeline/mixed/1`: one container pair (2 batches, hot caches);
//! - `pipeline/mixed/16`: 16 pairs (32 ingress ports, 32 batches).

use std::hint::black_box;

use bench::frames::{mixed_batch, Host, RxBufs};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::bridge::{fdb, Fdb, Tally, Verdict};
use dataplane::stats::{NetId, WorkerStats};
use dataplane::wire::{EtherType, EthernetFrame, VNET_HDR_LEN};
use dataplane::{classify_batch, BATCH};

const NOW: u64 = 10_000;
const NET: NetId = 0;

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    for pairs in [1usize, 16] {
        let batches = mixed_batch(pairs);
        let bufs: Vec<(u16, RxBufs)> = batches.iter().map(|b| (b.ingress, RxBufs::new(&b.pkts))).collect();
        let pkts: Vec<(u16, Vec<&[u8]>)> = bufs.iter().map(|(p, b)| (*p, b.packets())).collect();
        let fdb = Fdb::new(fdb::DEFAULT_CAPACITY, fdb::DEFAULT_AGEING_MS);
        let stats = WorkerStats::default();
        let mut tally = Tally::default();
        let mut verdicts = [Verdict::Flood; BATCH];

        // Warm the table, then check every verdict: ARP floods, the rest
        // goes to the pair's other port.
        for (ingress, p) in &pkts {
            classify_batch(&fdb, *ingress, p, NOW, &mut verdicts, &mut tally);
        }
        for (ingress, p) in &pkts {
            classify_batch(&fdb, *ingress, p, NOW, &mut verdicts, &mut tally);
            let peer = Host::nth(*ingress as usize ^ 1).port;
            for (pkt, v) in p.iter().zip(&verdicts) {
                let eth = EthernetFrame::new_checked(&pkt[VNET_HDR_LEN..]).unwrap();
                let want = if eth.ethertype() == EtherType::Arp { Verdict::Flood } else { Verdict::Forward(peer) };
                assert_eq!(*v, want);
            }
        }
        tally.flush(&stats, NET);

        let mut next = 0;
        g.bench_function(BenchmarkId::new("mixed", pairs), |b| {
            b.iter(|| {
                let (ingress, p) = &pkts[next];
                next = (next + 1) % pkts.len();
                let n = p.len();
                // As Worker::process does around the classification.
                stats.frames.add(n as u64);
                let pc = &stats.ports[*ingress as usize];
                let rx_bytes = classify_batch(&fdb, *ingress, black_box(p), NOW, &mut verdicts[..n], &mut tally);
                pc.rx_packets.add(n as u64);
                pc.rx_bytes.add(rx_bytes);
                tally.flush(&stats, NET);
                black_box(&verdicts);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
