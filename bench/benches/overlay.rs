//! Software GSO and GRO for the overlay (`dataplane::overlay`).
//!
//! The super-frame is what a container with TSO writes to its TAP during a
//! bulk transfer: 45 × 1448 bytes of TCP payload behind Ethernet, IPv4 and
//! TCP with timestamps (65,226 bytes), the captured TSO virtio-net header,
//! and the partial TCP checksum (the pseudo-header sum) in place.
//!
//! Cases (`overlay/*`), throughput in bytes of TCP payload:
//! - `gso_segment_64k`: `segment_tcp4` cuts the super-frame into 45
//!   segments: 45 headers written into the scratch, every payload summed
//!   once for its TCP checksum, no payload copied. Gbit/s of payload =
//!   65,160 × 8 / (ns per iteration).
//! - `gro_coalesce_45`: the 45 wire segments pushed into a `Coalescer` and
//!   flushed as one super-frame: each segment's IPv4 header and TCP
//!   checksums verified and its payload copied behind the first header.
//! - `complete_csum_1500`: `complete_csum` on a 1514-byte frame (1500 bytes
//!   of IPv4), the partial TCP checksum restored before each call: a sum
//!   over the 1480 bytes from the TCP header on.
//!
//! Per-frame encapsulation and decapsulation (`tunnel/*`), on batches of
//! 32 MSS-sized frames, throughput in frames (ns per iteration / 32 =
//! ns per frame; the target is ≤ 30 ns each):
//! - `tunnel/encap_32`: what the worker does per frame before the send:
//!   the inner flow hash (it picks the outer source port) and the VXLAN
//!   header for the network's VNI.
//! - `tunnel/decap_32`: checking each datagram's VXLAN header and finding
//!   its VNI and inner frame.

use std::hint::black_box;

use bench::frames::{tcp_frame, vnet_tso4, Host, MSS, TSO_PAYLOAD};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::overlay::gro::{Coalescer, Pushed};
use dataplane::overlay::gso::{complete_csum, segment_tcp4, Segments};
use dataplane::packet::Offload;
use dataplane::wire::{checksum, IpProtocol};

/// `frame` (Ethernet/IPv4/TCP, checksums complete) with its TCP checksum
/// replaced by the un-complemented pseudo-header sum, as a sender with
/// checksum offload hands it to its TAP.
fn partial(mut frame: Vec<u8>) -> Vec<u8> {
    let len = (frame.len() - 34) as u16;
    let src = [frame[26], frame[27], frame[28], frame[29]].into();
    let dst = [frame[30], frame[31], frame[32], frame[33]].into();
    let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, len);
    frame[50..52].copy_from_slice(&pseudo.to_be_bytes());
    frame
}

fn overlay(c: &mut Criterion) {
    let (a, b) = (Host::nth(0), Host::nth(1));
    let sup = partial(tcp_frame(a.mac, b.mac, TSO_PAYLOAD));
    let offload = Offload::from_vnet(&vnet_tso4());
    assert_eq!(sup.len(), 65_226);

    let mut g = c.benchmark_group("overlay");
    g.throughput(Throughput::Bytes(TSO_PAYLOAD as u64));
    let mut segs = Segments::new();
    g.bench_function("gso_segment_64k", |bch| {
        bch.iter(|| segment_tcp4(black_box(&sup), black_box(&offload), &mut segs).unwrap())
    });
    assert_eq!(segs.len(), TSO_PAYLOAD / MSS);

    let wire: Vec<Vec<u8>> = segs.iter().map(|s| [s.header, &sup[s.payload]].concat()).collect();
    let mut co = Coalescer::new();
    g.bench_function("gro_coalesce_45", |bch| {
        bch.iter(|| {
            for s in &wire {
                let r = co.push(black_box(s), 1);
                debug_assert_eq!(r, Ok(Pushed::Held));
            }
            co.flush().map(|(_, out)| out.len())
        })
    });
    for s in &wire {
        assert_eq!(co.push(s, 1), Ok(Pushed::Held));
    }
    let (_, out) = co.flush().unwrap();
    assert_eq!((out.frame(), out.meta.offload), (&sup[..], offload), "coalescing gave back the super-frame");

    let one = partial(tcp_frame(a.mac, b.mac, MSS));
    assert_eq!(one.len(), 1514);
    let mut frame = one.clone();
    g.throughput(Throughput::Bytes((one.len() - 34) as u64));
    g.bench_function("complete_csum_1500", |bch| {
        bch.iter(|| {
            frame[50..52].copy_from_slice(&one[50..52]);
            complete_csum(black_box(&mut frame), 34, 16).unwrap()
        })
    });
    g.finish();
}

fn tunnel(c: &mut Criterion) {
    use dataplane::overlay::tunnel::{decap, inner_flow_hash, Encap};
    let mut g = c.benchmark_group("tunnel");
    g.throughput(Throughput::Elements(32));
    let (a, b) = (Host::nth(0), Host::nth(1));
    let frames: Vec<Vec<u8>> = (0..32).map(|i| tcp_frame(a.mac, b.mac, MSS - i)).collect();
    g.bench_function("encap_32", |bch| {
        bch.iter(|| {
            let mut acc = 0u32;
            for f in &frames {
                let h = Encap::Vxlan.header(42);
                acc = acc.wrapping_add(inner_flow_hash(black_box(f))).wrapping_add(u32::from(h[6]));
            }
            black_box(acc)
        })
    });
    let datagrams: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut d = Encap::Vxlan.header(42).to_vec();
            d.extend_from_slice(f);
            d
        })
        .collect();
    g.bench_function("decap_32", |bch| {
        bch.iter(|| {
            let mut acc = 0usize;
            for d in &datagrams {
                if let Ok((id, at)) = decap(Encap::Vxlan, black_box(d)) {
                    acc += id as usize + at;
                }
            }
            black_box(acc)
        })
    });
    g.finish();
}

criterion_group!(benches, overlay, tunnel);
criterion_main!(benches);
