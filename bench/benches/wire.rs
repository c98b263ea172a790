//! Per-packet cost of the wire views.
//!
//! Cases:
//! - `parse/eth_ipv4_tcp_1514`: Ethernet, IPv4 and TCP views of a full-size
//!   frame and the 5-tuple read from them (what the bridge and NAT need).
//! - `parse/eth_ipv4_tcp_1514_verify`: the same plus the IPv4 header and TCP
//!   checksums, the latter over 1480 bytes.
//! - `parse/eth_ipv4_udp_64`: Ethernet, IPv4 and UDP views of a UDP frame
//!   with 64 bytes of data, and its 5-tuple.
//! - `checksum/data_1500`: RFC 1071 sum over 1500 bytes.
//! - `checksum/snat_incremental`: rewrite source address and port of the
//!   1514-byte TCP frame and patch both checksums per RFC 1624.
//! - `checksum/snat_recompute`: the same rewrite with both checksums
//!   recomputed, the baseline the incremental update avoids.
//! - `vxlan/decap`: outer Ethernet, IPv4, UDP and VXLAN views down to the
//!   VNI and the inner frame.
//! - `vxlan/encap`: outer headers emitted into the headroom in front of an
//!   inner frame, IPv4 header checksum included.
//! - `gre/parse`: outer views of keyed Ethernet-over-GRE down to the key and
//!   the inner frame.
//! - `gre/emit`: outer headers of keyed Ethernet-over-GRE emitted into the
//!   headroom.

use bench::frames::wire::{
    eth_ipv4_tcp, eth_ipv4_udp, gre_encap, vxlan_encap, with_headroom, GRE_KEY_OVERHEAD, VXLAN_OVERHEAD,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::wire::{
    checksum, ethernet, gre, EtherType, EthernetFrame, GrePacket, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket, Vni,
    VxlanPacket,
};
use std::hint::black_box;
use std::net::Ipv4Addr;

/// The 5-tuple of a TCP or UDP frame, or `None` if any view rejects it.
#[inline]
fn five_tuple(frame: &[u8], verify: bool) -> Option<(Ipv4Addr, Ipv4Addr, IpProtocol, u16, u16)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if verify && !ip.verify_checksum() {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let (sport, dport) = match ip.protocol() {
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(ip.payload()).ok()?;
            if verify && !t.verify_checksum_ipv4(src, dst) {
                return None;
            }
            (t.src_port(), t.dst_port())
        }
        IpProtocol::Udp => {
            let u = UdpPacket::new_checked(ip.payload()).ok()?;
            if verify && !u.verify_checksum_ipv4(src, dst) {
                return None;
            }
            (u.src_port(), u.dst_port())
        }
        _ => return None,
    };
    Some((src, dst, ip.protocol(), sport, dport))
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    let tcp = eth_ipv4_tcp(1460);
    let udp = eth_ipv4_udp(64);
    assert!(five_tuple(&tcp, true).is_some() && five_tuple(&udp, true).is_some());
    g.throughput(Throughput::Elements(1));
    g.bench_function("eth_ipv4_tcp_1514", |b| b.iter(|| five_tuple(black_box(&tcp), false)));
    g.throughput(Throughput::Bytes(tcp.len() as u64));
    g.bench_function("eth_ipv4_tcp_1514_verify", |b| b.iter(|| five_tuple(black_box(&tcp), true)));
    g.throughput(Throughput::Elements(1));
    g.bench_function("eth_ipv4_udp_64", |b| b.iter(|| five_tuple(black_box(&udp), false)));
    g.finish();
}

/// Source NAT of the container's flow to `new_ip:new_port`, patching the
/// checksums incrementally or recomputing them.
#[inline]
fn snat(frame: &mut [u8], new_ip: Ipv4Addr, new_port: u16, incremental: bool) {
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN..]);
    let (old_ip, dst) = (ip.src_addr(), ip.dst_addr());
    ip.set_src_addr(new_ip);
    if incremental {
        let c = checksum::update_u32(ip.checksum(), u32::from(old_ip), u32::from(new_ip));
        ip.set_checksum(c);
    } else {
        ip.fill_checksum();
    }
    let mut t = TcpPacket::new_unchecked(ip.payload_mut());
    let old_port = t.src_port();
    t.set_src_port(new_port);
    if incremental {
        t.update_checksum_u32(u32::from(old_ip), u32::from(new_ip));
        t.update_checksum_u16(old_port, new_port);
    } else {
        t.fill_checksum_ipv4(new_ip, dst);
    }
}

fn checksums(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    let data: Vec<u8> = (0..1500u32).map(|i| (i * 7) as u8).collect();
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("data_1500", |b| b.iter(|| checksum::data(black_box(&data))));
    g.throughput(Throughput::Elements(1));

    // Alternate between two translations so every iteration really changes
    // the frame and the checksums stay valid throughout.
    let ips = [Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(192, 0, 2, 1)];
    let ports = [45678u16, 61000];
    for (name, incremental) in [("snat_incremental", true), ("snat_recompute", false)] {
        let mut frame = eth_ipv4_tcp(1460);
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i ^= 1;
                snat(black_box(&mut frame), ips[i], ports[i], incremental)
            })
        });
        assert!(five_tuple(&frame, true).is_some(), "{name} broke the checksums");
    }
    g.finish();
}

#[inline]
fn vxlan_decap(frame: &[u8]) -> Option<(Vni, usize)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.protocol() != IpProtocol::Udp {
        return None;
    }
    let u = UdpPacket::new_checked(ip.payload()).ok()?;
    if u.dst_port() != dataplane::wire::vxlan::UDP_PORT {
        return None;
    }
    let v = VxlanPacket::new_checked(u.payload()).ok()?;
    let inner = EthernetFrame::new_checked(v.payload()).ok()?;
    Some((v.vni(), inner.payload().len()))
}

fn vxlan(c: &mut Criterion) {
    let mut g = c.benchmark_group("vxlan");
    let vni = Vni::new(4242).expect("VNI fits in 24 bits");
    let inner = eth_ipv4_tcp(1410); // 1464 bytes: fits a 1500-byte underlay MTU
    let mut encapped = with_headroom(&inner, VXLAN_OVERHEAD);
    vxlan_encap(&mut encapped, vni);
    assert_eq!(vxlan_decap(&encapped).map(|(v, _)| v), Some(vni));
    g.bench_function("decap", |b| b.iter(|| vxlan_decap(black_box(&encapped))));
    let mut buf = encapped.clone();
    g.bench_function("encap", |b| b.iter(|| vxlan_encap(black_box(&mut buf), black_box(vni))));
    assert_eq!(buf, encapped);
    g.finish();
}

#[inline]
fn gre_parse(frame: &[u8]) -> Option<(u32, usize)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.protocol() != IpProtocol::Gre {
        return None;
    }
    let g = GrePacket::new_checked(ip.payload()).ok()?;
    if g.protocol() != gre::Protocol::TransparentEthernet {
        return None;
    }
    let inner = EthernetFrame::new_checked(g.payload()).ok()?;
    Some((g.key()?, inner.payload().len()))
}

fn gre_cases(c: &mut Criterion) {
    let mut g = c.benchmark_group("gre");
    let inner = eth_ipv4_tcp(1418);
    let mut encapped = with_headroom(&inner, GRE_KEY_OVERHEAD);
    gre_encap(&mut encapped, 42);
    assert_eq!(gre_parse(&encapped).map(|(k, _)| k), Some(42));
    g.bench_function("parse", |b| b.iter(|| gre_parse(black_box(&encapped))));
    let mut buf = encapped.clone();
    g.bench_function("emit", |b| b.iter(|| gre_encap(black_box(&mut buf), black_box(42))));
    assert_eq!(buf, encapped);
    g.finish();
}

criterion_group!(benches, parse, checksums, vxlan, gre_cases);
criterion_main!(benches);
