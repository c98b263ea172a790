//! Every packet view in `dataplane::wire`: `new_checked`, then every
//! getter; `Repr::parse`, and when it succeeds `emit` over a copy and into
//! a fresh buffer (pre-filled with 0xa5) and parse again, which must give
//! the same `Repr`; every setter given its getter's value leaves the bytes
//! as they were. The Ethernet, IPv4, IPv6, UDP (VXLAN) and GRE views also
//! walk into what they carry, as a receiver would.
//!
//! Input: `[view][bytes]`; `view % 12` picks where the bytes start:
//! 0 Ethernet, 1 ARP, 2 IPv4, 3 IPv6, 4 TCP, 5 UDP, 6 ICMPv4, 7 VXLAN,
//! 8 GRE, 9 virtio-net header + Ethernet, 10 DNS message, 11 every view at
//! offset 0.

#![no_main]

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use dataplane::wire::dns::{self, Response};
use dataplane::wire::icmpv4::Message;
use dataplane::wire::*;
use libfuzzer_sys::fuzz_target;

/// Layers walked into at most (an overlay inside an overlay ...).
const DEPTH: u32 = 3;

fuzz_target!(|data: &[u8]| {
    let Some((&view, b)) = data.split_first() else { return };
    match view % 12 {
        0 => ethernet(b, DEPTH),
        1 => arp(b),
        2 => ipv4(b, DEPTH),
        3 => ipv6(b, DEPTH),
        4 => tcp(b, None),
        5 => udp(b, None, DEPTH),
        6 => icmpv4(b),
        7 => vxlan(b, DEPTH),
        8 => gre(b, DEPTH),
        9 => vnet(b),
        10 => dns_message(b),
        _ => {
            arp(b);
            ipv4(b, 0);
            ipv6(b, 0);
            tcp(b, None);
            udp(b, None, 0);
            icmpv4(b);
            vxlan(b, 0);
            gre(b, 0);
            vnet(b);
            dns_message(b);
            ethernet(b, 0);
            black_box(checksum::data(b));
        }
    }
});

/// `repr` emitted over a copy of `bytes` parses back to itself, and so
/// does `repr` emitted into `fresh` bytes of 0xa5 when `fresh` is given.
macro_rules! round_trip {
    ($module:ident, $bytes:expr, $repr:expr) => {{
        let mut copy = $bytes.to_vec();
        $repr.emit(&mut $module::Packet::new_unchecked(&mut copy[..]));
        let again = $module::Repr::parse(&$module::Packet::new_unchecked(&copy[..]));
        assert_eq!(again, Ok($repr), concat!(stringify!($module), " repr did not survive emit over its bytes"));
    }};
    ($module:ident, $bytes:expr, $repr:expr, fresh $len:expr) => {{
        round_trip!($module, $bytes, $repr);
        let mut fresh = vec![0xa5u8; $len];
        $repr.emit(&mut $module::Packet::new_unchecked(&mut fresh[..]));
        let again = $module::Repr::parse(&$module::Packet::new_unchecked(&fresh[..]));
        assert_eq!(again, Ok($repr), concat!(stringify!($module), " repr did not survive emit into a fresh buffer"));
    }};
}

/// Setting every field to what its getter returns changes nothing.
macro_rules! identity {
    ($bytes:expr, $view:path, |$p:ident| $body:block) => {{
        let mut copy = $bytes.to_vec();
        {
            let mut $p = <$view>::new_unchecked(&mut copy[..]);
            $body
        }
        assert!(copy == $bytes, concat!(stringify!($view), ": a setter given its getter's value changed the bytes"));
    }};
}

fn ethernet(b: &[u8], depth: u32) {
    let Ok(f) = EthernetFrame::new_checked(b) else { return };
    let (dst, src, ethertype) = (f.dst(), f.src(), f.ethertype());
    black_box((dst.is_multicast(), dst.is_broadcast(), src.is_unicast(), src.is_link_local(), f.payload().len()));
    assert_eq!(MacAddr::from_u64(src.to_u64()), src);
    assert_eq!(src.to_string().parse::<MacAddr>(), Ok(src));
    assert_eq!(u16::from(EtherType::from(u16::from(ethertype))), u16::from(ethertype));
    identity!(b, EthernetFrame::<&mut [u8]>, |p| {
        p.set_dst(dst);
        p.set_src(src);
        p.set_ethertype(ethertype);
    });
    if let Ok(repr) = ethernet::Repr::parse(&f) {
        let mut copy = b.to_vec();
        repr.emit(&mut EthernetFrame::new_unchecked(&mut copy[..]));
        assert!(copy == b, "ethernet repr emit changed the frame");
        let mut fresh = vec![0xa5u8; repr.header_len()];
        repr.emit(&mut EthernetFrame::new_unchecked(&mut fresh[..]));
        assert_eq!(ethernet::Repr::parse(&EthernetFrame::new_unchecked(&fresh[..])), Ok(repr));
    }
    if depth == 0 {
        return;
    }
    match ethertype {
        EtherType::Ipv4 => ipv4(f.payload(), depth),
        EtherType::Ipv6 => ipv6(f.payload(), depth),
        EtherType::Arp => arp(f.payload()),
        _ => {}
    }
}

fn arp(b: &[u8]) {
    let Ok(p) = ArpPacket::new_checked(b) else { return };
    let (op, sha, spa, tha, tpa) =
        (p.operation(), p.sender_hw_addr(), p.sender_proto_addr(), p.target_hw_addr(), p.target_proto_addr());
    let (htype, ptype, hlen, plen) = (p.hardware_type(), p.protocol_type(), p.hardware_len(), p.protocol_len());
    identity!(b, ArpPacket::<&mut [u8]>, |q| {
        q.set_hardware_type(htype);
        q.set_protocol_type(ptype);
        q.set_hardware_len(hlen);
        q.set_protocol_len(plen);
        q.set_operation(op);
        q.set_sender_hw_addr(sha);
        q.set_sender_proto_addr(spa);
        q.set_target_hw_addr(tha);
        q.set_target_proto_addr(tpa);
    });
    if let Ok(repr) = arp::Repr::parse(&p) {
        round_trip!(arp, b, repr, fresh repr.buffer_len());
    }
}

fn ipv4(b: &[u8], depth: u32) {
    let Ok(p) = Ipv4Packet::new_checked(b) else { return };
    black_box((p.reserved_flag(), p.is_fragment(), p.verify_checksum(), p.options().len()));
    let (ver, hl, dscp, ecn, total, ident) = (p.version(), p.header_len(), p.dscp(), p.ecn(), p.total_len(), p.ident());
    let (df, mf, off, ttl, proto, csum) =
        (p.dont_frag(), p.more_frags(), p.frag_offset(), p.ttl(), p.protocol(), p.checksum());
    let (src, dst) = (p.src_addr(), p.dst_addr());
    assert!(hl >= ipv4::HEADER_LEN && usize::from(total) >= hl && p.payload().len() == usize::from(total) - hl);
    identity!(b, Ipv4Packet::<&mut [u8]>, |q| {
        q.set_version(ver);
        q.set_header_len(hl);
        q.set_dscp(dscp);
        q.set_ecn(ecn);
        q.set_total_len(total);
        q.set_ident(ident);
        q.set_dont_frag(df);
        q.set_more_frags(mf);
        q.set_frag_offset(off);
        q.set_ttl(ttl);
        q.set_protocol(proto);
        q.set_checksum(csum);
        q.set_src_addr(src);
        q.set_dst_addr(dst);
    });
    if let Ok(repr) = ipv4::Repr::parse(&p) {
        round_trip!(ipv4, b, repr, fresh repr.buffer_len());
        // Filling the checksum again keeps it correct (0x0000 and 0xffff
        // may both be, RFC 1624 §3).
        let mut copy = b.to_vec();
        let mut q = Ipv4Packet::new_unchecked(&mut copy[..]);
        q.fill_checksum();
        assert!(q.verify_checksum(), "filled IPv4 header checksum does not verify");
    }
    if depth == 0 {
        return;
    }
    let payload = p.payload();
    if p.frag_offset() != 0 {
        return;
    }
    match proto {
        IpProtocol::Tcp => tcp(payload, Some((src, dst))),
        IpProtocol::Udp => udp(payload, Some((src, dst)), depth),
        IpProtocol::Icmp => icmpv4(payload),
        IpProtocol::Gre => gre(payload, depth),
        _ => {}
    }
}

fn ipv6(b: &[u8], depth: u32) {
    let Ok(p) = Ipv6Packet::new_checked(b) else { return };
    let (ver, tc, flow, len, next, hop) =
        (p.version(), p.traffic_class(), p.flow_label(), p.payload_len(), p.next_header(), p.hop_limit());
    let (src, dst) = (p.src_addr(), p.dst_addr());
    assert_eq!(p.payload().len(), usize::from(len));
    identity!(b, Ipv6Packet::<&mut [u8]>, |q| {
        q.set_version(ver);
        q.set_traffic_class(tc);
        q.set_flow_label(flow);
        q.set_payload_len(len);
        q.set_next_header(next);
        q.set_hop_limit(hop);
        q.set_src_addr(&src);
        q.set_dst_addr(&dst);
    });
    if let Ok(repr) = ipv6::Repr::parse(&p) {
        round_trip!(ipv6, b, repr, fresh repr.buffer_len());
    }
    if depth == 0 {
        return;
    }
    let payload = p.payload();
    match next {
        IpProtocol::Tcp => tcp6(payload, src, dst),
        IpProtocol::Udp => {
            udp(payload, None, depth);
            if let Ok(u) = UdpPacket::new_checked(payload) {
                checksum_fill_verify_udp6(u.into_inner(), &src, &dst);
            }
        }
        _ => {}
    }
}

fn tcp(b: &[u8], v4: Option<(Ipv4Addr, Ipv4Addr)>) {
    let Ok(p) = TcpPacket::new_checked(b) else { return };
    let (sport, dport, seq, ack, flags) = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.flags());
    let (win, csum, urg) = (p.window_len(), p.checksum(), p.urgent_ptr());
    assert_eq!(p.header_len(), tcp::HEADER_LEN + p.options().len());
    assert_eq!(p.header_len() + p.payload().len(), b.len());
    black_box(format!("{flags:?}"));
    identity!(b, TcpPacket::<&mut [u8]>, |q| {
        q.set_src_port(sport);
        q.set_dst_port(dport);
        q.set_seq_number(seq);
        q.set_ack_number(ack);
        q.set_flags(flags);
        q.set_window_len(win);
        q.set_checksum(csum);
        q.set_urgent_ptr(urg);
    });
    if let Ok(repr) = tcp::Repr::parse(&p) {
        round_trip!(tcp, b, repr, fresh repr.header_len());
    }
    // Filling the checksum makes it verify, and an incremental update
    // agrees with filling it again.
    let (src, dst) = v4.unwrap_or((Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(203, 0, 113, 5)));
    black_box(p.verify_checksum_ipv4(src, dst));
    let mut copy = b.to_vec();
    let mut q = TcpPacket::new_unchecked(&mut copy[..]);
    q.fill_checksum_ipv4(src, dst);
    assert!(q.verify_checksum_ipv4(src, dst), "filled TCP checksum does not verify");
    let new_port = sport.wrapping_add(1);
    q.update_checksum_u16(sport, new_port);
    q.set_src_port(new_port);
    assert!(q.verify_checksum_ipv4(src, dst), "incremental TCP checksum update does not verify");
}

fn tcp6(b: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
    tcp(b, None);
    let Ok(p) = TcpPacket::new_checked(b) else { return };
    black_box(p.verify_checksum_ipv6(&src, &dst));
    let mut copy = b.to_vec();
    let mut q = TcpPacket::new_unchecked(&mut copy[..]);
    q.fill_checksum_ipv6(&src, &dst);
    assert!(q.verify_checksum_ipv6(&src, &dst), "filled TCP/IPv6 checksum does not verify");
}

fn udp(b: &[u8], v4: Option<(Ipv4Addr, Ipv4Addr)>, depth: u32) {
    let Ok(p) = UdpPacket::new_checked(b) else { return };
    let (sport, dport, len, csum) = (p.src_port(), p.dst_port(), p.length(), p.checksum());
    assert_eq!(p.payload().len() + udp::HEADER_LEN, usize::from(len));
    identity!(b, UdpPacket::<&mut [u8]>, |q| {
        q.set_src_port(sport);
        q.set_dst_port(dport);
        q.set_length(len);
        q.set_checksum(csum);
    });
    if let Ok(repr) = udp::Repr::parse(&p) {
        round_trip!(udp, b, repr, fresh repr.buffer_len());
    }
    let (src, dst) = v4.unwrap_or((Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(10, 88, 0, 1)));
    black_box(p.verify_checksum_ipv4(src, dst));
    let mut copy = b.to_vec();
    let mut q = UdpPacket::new_unchecked(&mut copy[..]);
    q.fill_checksum_ipv4(src, dst);
    assert!(q.checksum() != 0, "UDP checksum filled as 0 (none)");
    assert!(q.verify_checksum_ipv4(src, dst), "filled UDP checksum does not verify");
    let new_port = dport ^ 0x8000;
    q.update_checksum_u16(dport, new_port);
    q.set_dst_port(new_port);
    assert!(q.verify_checksum_ipv4(src, dst), "incremental UDP checksum update does not verify");
    if depth > 0 && dport == vxlan::UDP_PORT {
        vxlan(p.payload(), depth);
    }
}

fn checksum_fill_verify_udp6(b: &[u8], src: &Ipv6Addr, dst: &Ipv6Addr) {
    let mut copy = b.to_vec();
    let mut q = UdpPacket::new_unchecked(&mut copy[..]);
    q.fill_checksum_ipv6(src, dst);
    assert!(q.checksum() != 0 && q.verify_checksum_ipv6(src, dst), "filled UDP/IPv6 checksum does not verify");
}

fn icmpv4(b: &[u8]) {
    let Ok(p) = Icmpv4Packet::new_checked(b) else { return };
    let (msg, code, csum, rest) = (p.msg_type(), p.code(), p.checksum(), p.rest_of_header());
    black_box((p.echo_ident(), p.echo_seq_no(), p.next_hop_mtu(), p.data().len(), p.verify_checksum()));
    assert_eq!(u8::from(Message::from(u8::from(msg))), u8::from(msg));
    identity!(b, Icmpv4Packet::<&mut [u8]>, |q| {
        q.set_msg_type(msg);
        q.set_code(code);
        q.set_checksum(csum);
        q.set_rest_of_header(rest);
    });
    if let Ok(repr) = icmpv4::Repr::parse(&p) {
        round_trip!(icmpv4, b, repr);
    }
    let mut copy = b.to_vec();
    let mut q = Icmpv4Packet::new_unchecked(&mut copy[..]);
    q.fill_checksum();
    assert!(q.verify_checksum(), "filled ICMP checksum does not verify");
    let id = q.echo_ident();
    q.update_checksum_u16(id, !id);
    q.set_echo_ident(!id);
    // RFC 1624 eqn. 3 alone gives 0x0000 where only 0xffff verifies when
    // the message is all zeros but its checksum (ICMP has no pseudo-header).
    q.fix_zero_checksum();
    assert!(q.verify_checksum(), "incremental ICMP checksum update does not verify");
    // An error quotes the datagram that caused it.
    ipv4(p.data(), 0);
}

fn vxlan(b: &[u8], depth: u32) {
    let Ok(p) = VxlanPacket::new_checked(b) else { return };
    let vni = p.vni();
    black_box((p.flags(), vni.get(), p.payload().len()));
    assert_eq!(Vni::new(vni.get()), Some(vni));
    if let Ok(repr) = vxlan::Repr::parse(&p) {
        round_trip!(vxlan, b, repr, fresh repr.header_len());
    }
    ethernet(p.payload(), depth.saturating_sub(1));
}

fn gre(b: &[u8], depth: u32) {
    let Ok(p) = GrePacket::new_checked(b) else { return };
    black_box((p.has_checksum(), p.has_key(), p.has_seq_number(), p.version(), p.protocol()));
    black_box((p.checksum(), p.key(), p.seq_number(), p.verify_checksum()));
    assert!(p.header_len() <= gre::MAX_HEADER_LEN && p.header_len() + p.payload().len() == b.len());
    assert_eq!(p.checksum().is_some(), p.has_checksum());
    if let Ok(repr) = gre::Repr::parse(&p) {
        assert_eq!(repr.header_len(), p.header_len());
        round_trip!(gre, b, repr);
    }
    match p.protocol() {
        gre::Protocol::TransparentEthernet => ethernet(p.payload(), depth.saturating_sub(1)),
        gre::Protocol::Ipv4 => ipv4(p.payload(), depth.saturating_sub(1)),
        _ => {}
    }
}

/// A virtio-net header and the frame behind it, as a TAP hands them over.
fn vnet(b: &[u8]) {
    let Ok(h) = VnetHdr::new_checked(b) else { return };
    let (flags, gso, hdr_len, size, start, off) =
        (h.flags(), h.gso_type(), h.hdr_len(), h.gso_size(), h.csum_start(), h.csum_offset());
    let frame = &b[VNET_HDR_LEN..];
    let ok = h.validate(frame.len()).is_ok();
    black_box(h.is_gso());
    let mut copy = b[..VNET_HDR_LEN].to_vec();
    let mut q = VnetHdr::new_unchecked(&mut copy[..]);
    q.clear();
    q.set_flags(flags);
    q.set_gso_type(gso);
    q.set_hdr_len(hdr_len);
    q.set_gso_size(size);
    q.set_csum_start(start);
    q.set_csum_offset(off);
    assert!(copy == b[..VNET_HDR_LEN], "virtio-net header setters do not round-trip");
    if ok {
        // What the kernel accepts, the offload metadata describes exactly.
        let o = dataplane::packet::Offload::from_vnet(&b[..VNET_HDR_LEN]);
        let mut out = [0u8; VNET_HDR_LEN];
        o.to_vnet(&mut out);
        assert_eq!(out, b[..VNET_HDR_LEN]);
        if o.needs_csum() {
            assert!(usize::from(start) + usize::from(off) + 2 <= frame.len());
        }
    }
    ethernet(frame, DEPTH);
}

/// A DNS message (UDP payload, or TCP payload after the length).
fn dns_message(b: &[u8]) {
    let Ok(p) = dns::Packet::new_checked(b) else { return };
    black_box((p.id(), p.flags(), p.is_response(), p.opcode(), p.authoritative(), p.truncated()));
    black_box((p.recursion_desired(), p.recursion_available(), p.z(), p.authentic_data(), p.checking_disabled()));
    black_box((p.rcode(), p.question_count(), p.answer_count(), p.authority_count(), p.additional_count()));
    if let Ok(h) = dns::Header::parse(&p) {
        let mut copy = b.to_vec();
        h.emit(&mut dns::Packet::new_unchecked(&mut copy[..]));
        assert_eq!(dns::Header::parse(&dns::Packet::new_unchecked(&copy[..])), Ok(h), "DNS header round trip");
    }
    // Every record the counts announce, and every name decoded.
    let mut out = [0u8; dns::MAX_NAME_LEN];
    let mut at = dns::HEADER_LEN;
    for _ in 0..p.question_count() {
        let Ok(q) = dns::Question::parse(b, at) else { break };
        name_checks(b, at, &mut out);
        assert!(q.end() <= b.len());
        at = q.end();
    }
    let records = usize::from(p.answer_count()) + usize::from(p.authority_count()) + usize::from(p.additional_count());
    for _ in 0..records {
        let Ok(rr) = dns::Record::parse(b, at) else { break };
        name_checks(b, at, &mut out);
        assert!(rr.end() <= b.len() && rr.end() > at);
        black_box(rr.a_addr(b));
        if let Ok(opt) = dns::Opt::from_record(&rr) {
            let mut o = [0u8; dns::OPT_RECORD_LEN];
            opt.emit(&mut o);
            let again = dns::Record::parse(&o, 0).expect("an emitted OPT parses");
            assert_eq!(dns::Opt::from_record(&again), Ok(opt));
        }
        at = rr.end();
    }
    black_box(p.find_opt(at.min(b.len())).is_ok());
    // A response built over the query: within the buffer and its limit,
    // and it parses back with the answers it was given.
    let Ok(q) = p.question() else { return };
    let opt = p.find_opt(q.end()).ok().flatten();
    let limit = usize::from(b[0]) * 8;
    let mut buf = b.to_vec();
    buf.resize(b.len() + usize::from(b[1]) * 4, 0xa5);
    let room = buf.len();
    let Ok(mut r) = Response::new(&mut buf, q.end(), limit, dns::Rcode::NoError, opt) else {
        assert!(room < q.end() + if opt.is_some() { dns::OPT_RECORD_LEN } else { 0 });
        return;
    };
    let addrs = [Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(10, 88, 0, 3), Ipv4Addr::new(192, 0, 2, 1)];
    let mut pushed = 0;
    for a in addrs.iter().cycle().take(usize::from(b[2] % 64)) {
        if !r.push_a(60, *a) {
            break;
        }
        pushed += 1;
    }
    assert_eq!(usize::from(r.answers()), pushed);
    let n = r.finish();
    let opt_len = if opt.is_some() { dns::OPT_RECORD_LEN } else { 0 };
    assert!(n <= room && n >= q.end() + opt_len, "response of {n} bytes in {room}");
    assert!(pushed == 0 || n <= limit.max(q.end() + opt_len), "response of {n} bytes over the limit {limit}");
    let reply = dns::Packet::new_checked(&buf[..n]).expect("response has a header");
    assert!(reply.is_response() && reply.id() == p.id());
    assert_eq!(usize::from(reply.answer_count()), pushed);
    assert_eq!(reply.question().map(|x| x.name.wire_len), Ok(q.name.wire_len));
    let mut at = q.end();
    for i in 0..pushed {
        let rr = dns::Record::parse(&buf[..n], at).expect("a pushed answer parses");
        assert_eq!(rr.a_addr(&buf[..n]), Some(addrs[i % addrs.len()]));
        at = rr.end();
    }
    assert_eq!(reply.find_opt(q.end()).map(|o| o.is_some()), Ok(opt.is_some()));
}

/// The name at `at` decodes to its uncompressed form, which parses on its
/// own to the same length.
fn name_checks(msg: &[u8], at: usize, out: &mut [u8; dns::MAX_NAME_LEN]) {
    let Ok((name, n)) = dns::read_name(msg, at, out) else { return };
    assert_eq!(name.wire_len, n);
    assert!(n <= dns::MAX_NAME_LEN && name.end <= msg.len());
    let mut labels = 0;
    let walked = dns::visit_labels(msg, at, |l| {
        assert!(!l.is_empty() && l.len() <= dns::MAX_LABEL_LEN);
        labels += 1;
    });
    assert_eq!(walked, Ok(name));
    // Uncompressed, behind a header's worth of bytes.
    let mut alone = vec![0u8; dns::HEADER_LEN];
    alone.extend_from_slice(&out[..n]);
    let again = dns::parse_name(&alone, dns::HEADER_LEN).expect("a decoded name parses");
    assert_eq!((again.wire_len, again.pointers, again.end), (n, 0, alone.len()));
    black_box(labels);
}
