//! Robustness test: random, truncated and mutated buffers through every
//! view's `new_checked`, getters and `Repr::parse`. Nothing may panic, and
//! whatever `Repr::parse` accepts must survive `emit` and parse again
//! unchanged. The PRNG is seeded, so a failure reproduces exactly; the
//! failing iteration and buffer are in the panic message.
//!
//! This is the cheap, always-on cousin of the fuzz targets.

use super::*;
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

const ITERATIONS: usize = 100_000;

/// splitmix64: tiny, deterministic, good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Check that `repr` re-emitted over a copy of `bytes` parses back to itself.
macro_rules! round_trip {
    ($module:ident, $bytes:expr, $repr:expr) => {{
        let mut copy = $bytes.to_vec();
        $repr.emit(&mut $module::Packet::new_unchecked(&mut copy[..]));
        let again = $module::Repr::parse(&$module::Packet::new_unchecked(&copy[..]));
        assert_eq!(again, Ok($repr), concat!(stringify!($module), " repr did not round-trip"));
    }};
}

fn ethernet(b: &[u8], depth: u32) {
    let Ok(f) = EthernetFrame::new_checked(b) else { return };
    black_box((f.dst(), f.src(), f.ethertype(), f.payload().len()));
    if let Ok(repr) = ethernet::Repr::parse(&f) {
        let mut copy = b.to_vec();
        repr.emit(&mut EthernetFrame::new_unchecked(&mut copy[..]));
        assert_eq!(ethernet::Repr::parse(&EthernetFrame::new_unchecked(&copy[..])), Ok(repr));
    }
    if depth == 0 {
        return;
    }
    match f.ethertype() {
        EtherType::Ipv4 => ipv4(f.payload(), depth),
        EtherType::Ipv6 => ipv6(f.payload(), depth),
        EtherType::Arp => arp(f.payload()),
        _ => {}
    }
}

fn arp(b: &[u8]) {
    let Ok(p) = ArpPacket::new_checked(b) else { return };
    black_box((p.operation(), p.sender_hw_addr(), p.sender_proto_addr(), p.target_hw_addr(), p.target_proto_addr()));
    if let Ok(repr) = arp::Repr::parse(&p) {
        round_trip!(arp, b, repr);
    }
}

fn ipv4(b: &[u8], depth: u32) {
    let Ok(p) = Ipv4Packet::new_checked(b) else { return };
    black_box((p.version(), p.header_len(), p.dscp(), p.ecn(), p.total_len(), p.ident()));
    black_box((p.dont_frag(), p.more_frags(), p.reserved_flag(), p.frag_offset(), p.is_fragment()));
    black_box((p.ttl(), p.protocol(), p.checksum(), p.src_addr(), p.dst_addr(), p.verify_checksum()));
    black_box((p.options().len(), p.payload().len()));
    if let Ok(repr) = ipv4::Repr::parse(&p) {
        round_trip!(ipv4, b, repr);
    }
    let (src, dst, payload) = (p.src_addr(), p.dst_addr(), p.payload());
    match p.protocol() {
        IpProtocol::Tcp => tcp(payload, Some((src, dst)), None),
        IpProtocol::Udp => udp(payload, Some((src, dst)), None, depth),
        IpProtocol::Icmp => icmpv4(payload),
        IpProtocol::Gre => gre(payload, depth),
        _ => {}
    }
}

fn ipv6(b: &[u8], depth: u32) {
    let Ok(p) = Ipv6Packet::new_checked(b) else { return };
    black_box((p.version(), p.traffic_class(), p.flow_label(), p.payload_len(), p.hop_limit()));
    black_box((p.next_header(), p.src_addr(), p.dst_addr(), p.payload().len()));
    if let Ok(repr) = ipv6::Repr::parse(&p) {
        round_trip!(ipv6, b, repr);
    }
    let (src, dst, payload) = (p.src_addr(), p.dst_addr(), p.payload());
    match p.next_header() {
        IpProtocol::Tcp => tcp(payload, None, Some((src, dst))),
        IpProtocol::Udp => udp(payload, None, Some((src, dst)), depth),
        _ => {}
    }
}

fn tcp(b: &[u8], v4: Option<(Ipv4Addr, Ipv4Addr)>, v6: Option<(Ipv6Addr, Ipv6Addr)>) {
    let Ok(p) = TcpPacket::new_checked(b) else { return };
    black_box((p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.header_len(), p.flags()));
    black_box((p.window_len(), p.checksum(), p.urgent_ptr(), p.options().len(), p.payload().len()));
    let (s4, d4) = v4.unwrap_or((Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST));
    let (s6, d6) = v6.unwrap_or((Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST));
    black_box((p.verify_checksum_ipv4(s4, d4), p.verify_checksum_ipv6(&s6, &d6)));
    if let Ok(repr) = tcp::Repr::parse(&p) {
        round_trip!(tcp, b, repr);
    }
}

fn udp(b: &[u8], v4: Option<(Ipv4Addr, Ipv4Addr)>, v6: Option<(Ipv6Addr, Ipv6Addr)>, depth: u32) {
    let Ok(p) = UdpPacket::new_checked(b) else { return };
    black_box((p.src_port(), p.dst_port(), p.length(), p.checksum(), p.payload().len()));
    let (s4, d4) = v4.unwrap_or((Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST));
    let (s6, d6) = v6.unwrap_or((Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST));
    black_box((p.verify_checksum_ipv4(s4, d4), p.verify_checksum_ipv6(&s6, &d6)));
    if let Ok(repr) = udp::Repr::parse(&p) {
        round_trip!(udp, b, repr);
    }
    if p.dst_port() == vxlan::UDP_PORT {
        vxlan(p.payload(), depth);
    }
}

fn icmpv4(b: &[u8]) {
    let Ok(p) = Icmpv4Packet::new_checked(b) else { return };
    black_box((p.msg_type(), p.code(), p.checksum(), p.rest_of_header(), p.echo_ident(), p.echo_seq_no()));
    black_box((p.next_hop_mtu(), p.data().len(), p.verify_checksum()));
    if let Ok(repr) = icmpv4::Repr::parse(&p) {
        round_trip!(icmpv4, b, repr);
    }
    // An error message quotes the offending datagram.
    ipv4(p.data(), 0);
}

fn vxlan(b: &[u8], depth: u32) {
    let Ok(p) = VxlanPacket::new_checked(b) else { return };
    black_box((p.flags(), p.vni(), p.payload().len()));
    if let Ok(repr) = vxlan::Repr::parse(&p) {
        round_trip!(vxlan, b, repr);
    }
    ethernet(p.payload(), depth.saturating_sub(1));
}

fn gre(b: &[u8], depth: u32) {
    let Ok(p) = GrePacket::new_checked(b) else { return };
    black_box((p.has_checksum(), p.has_key(), p.has_seq_number(), p.version(), p.protocol()));
    black_box((p.header_len(), p.checksum(), p.key(), p.seq_number(), p.verify_checksum(), p.payload().len()));
    if let Ok(repr) = gre::Repr::parse(&p) {
        round_trip!(gre, b, repr);
    }
    match p.protocol() {
        gre::Protocol::TransparentEthernet => ethernet(p.payload(), depth.saturating_sub(1)),
        gre::Protocol::Ipv4 => ipv4(p.payload(), depth.saturating_sub(1)),
        _ => {}
    }
}

fn vnet(b: &[u8]) {
    let Ok(h) = VnetHdr::new_checked(b) else { return };
    black_box((h.flags(), h.gso_type(), h.hdr_len(), h.gso_size(), h.csum_start(), h.csum_offset(), h.is_gso()));
    black_box(h.validate(b.len().saturating_sub(VNET_HDR_LEN)).is_ok());
}

/// Every view at offset 0, then the protocol walk from Ethernet.
fn exercise(b: &[u8]) {
    vnet(b);
    arp(b);
    ipv4(b, 2);
    ipv6(b, 2);
    tcp(b, None, None);
    udp(b, None, None, 2);
    icmpv4(b);
    vxlan(b, 2);
    gre(b, 2);
    ethernet(b, 3);
    black_box(checksum::data(b));
}

const MAC_A: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]);
const MAC_B: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x03]);
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 3);

fn eth_header(buf: &mut [u8], ethertype: EtherType) {
    ethernet::Repr { src_addr: MAC_A, dst_addr: MAC_B, ethertype }.emit(&mut EthernetFrame::new_unchecked(buf));
}

fn ipv4_header(buf: &mut [u8], protocol: IpProtocol, payload_len: usize) {
    let repr = ipv4::Repr { src_addr: IP_A, dst_addr: IP_B, protocol, payload_len, ttl: 64, ident: 1, dont_frag: true };
    repr.emit(&mut Ipv4Packet::new_unchecked(buf));
}

/// Well-formed frames that reach every view through the walk.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();

    // Ethernet / ARP.
    let mut f = vec![0u8; 14 + arp::HEADER_LEN];
    eth_header(&mut f, EtherType::Arp);
    let arp = arp::Repr {
        operation: arp::Operation::Request,
        sender_hw_addr: MAC_A,
        sender_proto_addr: IP_A,
        target_hw_addr: MacAddr::ZERO,
        target_proto_addr: IP_B,
    };
    arp.emit(&mut ArpPacket::new_unchecked(&mut f[14..]));
    out.push(f.clone());

    // Ethernet / IPv4 / TCP with a 4-byte option and data.
    let mut f = vec![0x61u8; 14 + 20 + 24 + 40];
    eth_header(&mut f, EtherType::Ipv4);
    ipv4_header(&mut f[14..], IpProtocol::Tcp, 64);
    {
        let mut t = TcpPacket::new_unchecked(&mut f[34..]);
        let repr = tcp::Repr {
            src_port: 45678,
            dst_port: 80,
            seq_number: 1,
            ack_number: 2,
            flags: tcp::Flags::ACK,
            window_len: 512,
        };
        repr.emit(&mut t);
        t.set_header_len(24);
        t.options_mut().copy_from_slice(&[0x02, 0x04, 0x05, 0xb4]);
        t.fill_checksum_ipv4(IP_A, IP_B);
    }
    out.push(f);

    // Ethernet / IPv4 / ICMP port unreachable quoting a UDP datagram.
    let mut f = vec![0u8; 14 + 20 + 8 + 28];
    eth_header(&mut f, EtherType::Ipv4);
    ipv4_header(&mut f[14..], IpProtocol::Icmp, 36);
    ipv4_header(&mut f[42..], IpProtocol::Udp, 8);
    udp::Repr { src_port: 1, dst_port: 2, payload_len: 0 }.emit(&mut UdpPacket::new_unchecked(&mut f[62..]));
    let icmp = icmpv4::Repr::DstUnreachable { reason: icmpv4::DstUnreachable::PortUnreachable, next_hop_mtu: 0 };
    icmp.emit(&mut Icmpv4Packet::new_unchecked(&mut f[34..]));
    out.push(f);

    // Ethernet / IPv4 / UDP / VXLAN / Ethernet / ARP.
    let inner = out[0].clone();
    let udp_len = 8 + 8 + inner.len();
    let mut f = vec![0u8; 14 + 20 + udp_len];
    eth_header(&mut f, EtherType::Ipv4);
    ipv4_header(&mut f[14..], IpProtocol::Udp, udp_len);
    f[50..].copy_from_slice(&inner);
    vxlan::Repr { vni: Vni::new(42).unwrap_or_default() }.emit(&mut VxlanPacket::new_unchecked(&mut f[42..]));
    {
        let mut u = UdpPacket::new_unchecked(&mut f[34..]);
        udp::Repr { src_port: 50000, dst_port: vxlan::UDP_PORT, payload_len: 8 + inner.len() }.emit(&mut u);
        u.fill_checksum_ipv4(IP_A, IP_B);
    }
    out.push(f);

    // Ethernet / IPv4 / GRE (C, K, S) / Ethernet / ARP.
    let gre_len = 16 + inner.len();
    let mut f = vec![0u8; 14 + 20 + gre_len];
    eth_header(&mut f, EtherType::Ipv4);
    ipv4_header(&mut f[14..], IpProtocol::Gre, gre_len);
    f[50..].copy_from_slice(&inner);
    let g =
        gre::Repr { protocol: gre::Protocol::TransparentEthernet, checksum: true, key: Some(7), seq_number: Some(9) };
    g.emit(&mut GrePacket::new_unchecked(&mut f[34..]));
    out.push(f);

    // Ethernet / IPv6 / UDP.
    let mut f = vec![0x33u8; 14 + 40 + 8 + 16];
    eth_header(&mut f, EtherType::Ipv6);
    let (s6, d6) = (Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2), Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3));
    let ip6 = ipv6::Repr { src_addr: s6, dst_addr: d6, next_header: IpProtocol::Udp, payload_len: 24, hop_limit: 64 };
    ip6.emit(&mut Ipv6Packet::new_unchecked(&mut f[14..]));
    {
        let mut u = UdpPacket::new_unchecked(&mut f[54..]);
        udp::Repr { src_port: 546, dst_port: 547, payload_len: 16 }.emit(&mut u);
        u.fill_checksum_ipv6(&s6, &d6);
    }
    out.push(f);

    // A virtio-net header in front of the TCP frame.
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(&out[1]);
    out.push(f);

    out
}

#[test]
fn seeds_are_well_formed() {
    // The seeds only exercise deep paths if they parse; check a few links.
    let s = seeds();
    let f = EthernetFrame::new_checked(&s[1][..]).unwrap();
    let ip = Ipv4Packet::new_checked(f.payload()).unwrap();
    assert!(ip.verify_checksum());
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(t.verify_checksum_ipv4(IP_A, IP_B));
    let f = EthernetFrame::new_checked(&s[3][..]).unwrap();
    let ip = Ipv4Packet::new_checked(f.payload()).unwrap();
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(u.verify_checksum_ipv4(IP_A, IP_B));
    let v = VxlanPacket::new_checked(u.payload()).unwrap();
    assert_eq!(v.vni().get(), 42);
    let f = EthernetFrame::new_checked(&s[4][..]).unwrap();
    let ip = Ipv4Packet::new_checked(f.payload()).unwrap();
    let g = GrePacket::new_checked(ip.payload()).unwrap();
    assert!(g.verify_checksum());
    let inner = EthernetFrame::new_checked(g.payload()).unwrap();
    assert_eq!(ArpPacket::new_checked(inner.payload()).unwrap().target_proto_addr(), IP_B);
    let f = EthernetFrame::new_checked(&s[2][..]).unwrap();
    let ip = Ipv4Packet::new_checked(f.payload()).unwrap();
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
}

#[test]
fn random_truncated_and_mutated_buffers_never_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x7461_706e_6574); // "tapnet"
    let mut buf = Vec::with_capacity(256);
    for i in 0..ITERATIONS {
        buf.clear();
        match i % 4 {
            // Pure noise, short lengths favoured.
            0 => {
                let max = if rng.below(4) == 0 { 256 } else { 64 };
                let len = rng.below(max);
                buf.extend((0..len).map(|_| rng.next() as u8));
            }
            // A seed cut at a random length.
            1 => {
                let s = &seeds[rng.below(seeds.len())];
                buf.extend_from_slice(&s[..rng.below(s.len() + 1)]);
            }
            // A seed with a few bytes replaced, mostly in the headers.
            2 => {
                let s = &seeds[rng.below(seeds.len())];
                buf.extend_from_slice(s);
                for _ in 0..1 + rng.below(6) {
                    let at = rng.below(buf.len().min(80));
                    buf[at] = rng.next() as u8;
                }
            }
            // Both, with the edge values that break length arithmetic.
            _ => {
                let s = &seeds[rng.below(seeds.len())];
                buf.extend_from_slice(s);
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(buf.len());
                    buf[at] = [0x00, 0x01, 0x0f, 0x10, 0x45, 0x4f, 0x7f, 0x80, 0xf0, 0xff][rng.below(10)];
                }
                let cut = buf.len() - rng.below(buf.len().min(16) + 1);
                buf.truncate(cut);
            }
        }
        let outcome = std::panic::catch_unwind(|| exercise(&buf));
        assert!(outcome.is_ok(), "iteration {i} panicked on {buf:02x?}");
    }
}
