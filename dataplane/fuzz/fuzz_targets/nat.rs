//! NAT without the router around it: `nat::{classify, rewrite,
//! rewrite_icmp_error, decrement_ttl, build_error}` on arbitrary IPv4
//! packets, and one `Conntrack` driven by the input (insert, lookup,
//! update, remove, retain, sweep, alloc), the way a worker uses it
//! (masquerade to 192.168.1.10, ports published on it) and directly.
//!
//! Input: records `[op][len: u16 BE][args | packet]` (`dataplane_fuzz::
//! Records`); `op & 0x0f` is the operation (see [`run`]), `op >> 4` its
//! parameter. A key in the arguments is 13 bytes: protocol (`% 3`: TCP, UDP,
//! ICMP echo), source address and port, destination address and port.
//!
//! Properties, besides "no panic":
//! - a rewrite either fails and leaves every byte as it was, or gives the
//!   packet the tuple asked for; every checksum that verified before still
//!   verifies (complete checksums), or the partial checksum still holds the
//!   pseudo-header sum of the new addresses (`L4Csum::Partial`);
//! - `classify` and `rewrite` agree on what can be translated;
//! - the table never holds more than its capacity, finds every entry it
//!   inserts by both tuples, never hands out a port whose reply tuple is in
//!   use, and refuses inserts only for the documented reasons.

#![no_main]

use std::net::Ipv4Addr;

use dataplane::nat::{
    self, build_error, classify, decrement_ttl, rewrite, rewrite_icmp_error, Classified, Conntrack, ConntrackError,
    Dir, ErrorKind, FlowKey, IcmpErrorRewrite, L4Csum, NewFlow, Proto, Timeouts,
};
use dataplane::wire::{checksum, tcp::Flags, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};
use dataplane_fuzz::{sums, Args, Records, Sums};
use libfuzzer_sys::fuzz_target;

/// The uplink address flows are masqueraded to.
const U: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const CAPACITY: usize = 16;
/// Operations per input at most.
const MAX_OPS: usize = 256;
/// Clock steps (milliseconds) an operation's parameter picks from.
const STEPS_MS: [u64; 4] = [0, 1_000, 30_000, 200_000];

fuzz_target!(|data: &[u8]| {
    let mut ct = Conntrack::new(CAPACITY, Timeouts::default()).expect("capacity in range");
    let mut now = 0u64;
    for (op, bytes) in Records::new(data).take(MAX_OPS) {
        run(&mut ct, &mut now, op & 0x0f, op >> 4, bytes);
        assert!(ct.len() <= ct.capacity());
    }
});

fn key(a: &mut Args<'_>) -> FlowKey {
    let proto = [Proto::Tcp, Proto::Udp, Proto::Icmp][usize::from(a.u8() % 3)];
    let (src, sport, dst, dport) = (a.ipv4(), a.u16(), a.ipv4(), a.u16());
    match proto {
        Proto::Icmp => FlowKey::icmp(src, dst, sport),
        p => FlowKey::new(p, src, sport, dst, dport),
    }
}

fn csum_mode(bit: u8) -> L4Csum {
    if bit & 1 == 0 {
        L4Csum::Full
    } else {
        L4Csum::Partial
    }
}

fn run(ct: &mut Conntrack, now: &mut u64, op: u8, param: u8, bytes: &[u8]) {
    match op {
        // A packet through the NAT as a worker routes it; param bit 0: it
        // comes from the uplink; bit 1: partial checksum; bits 2-3: clock.
        0 => {
            *now += STEPS_MS[usize::from(param >> 2 & 3)];
            translate(ct, *now, param & 1 == 1, csum_mode(param >> 1), bytes);
        }
        // Any rewrite: [key][packet].
        1 => {
            let mut a = Args::new(bytes);
            let to = key(&mut a);
            check_rewrite(a.rest(), &to, csum_mode(param));
        }
        // Any ICMP error rewrite: [outer src][outer dst][key][packet].
        2 => {
            let mut a = Args::new(bytes);
            let (outer_src, outer_dst) = (a.ipv4(), a.ipv4());
            let inner = key(&mut a);
            check_rewrite_icmp_error(a.rest(), &IcmpErrorRewrite { outer_src, outer_dst, inner }, csum_mode(param));
        }
        3 => check_decrement_ttl(bytes),
        // Sweep with budget `param`, after moving the clock.
        4 => {
            *now += STEPS_MS[usize::from(param & 3)] * u64::from(bytes.first().copied().unwrap_or(1));
            let budget = usize::from(param);
            let before = ct.len();
            let freed = ct.sweep(*now, budget);
            assert!(freed <= budget && ct.len() == before - freed);
        }
        // alloc: [key (remote = dst)][preferred][lo][hi][modulus].
        5 => {
            let mut a = Args::new(bytes);
            let k = key(&mut a);
            let (preferred, lo, hi, m) = (a.u16(), a.u16(), a.u16(), a.u8().max(1));
            let accept = |p: u16| p % u16::from(m) == u16::from(param) % u16::from(m);
            if let Some(p) = ct.alloc(k.proto, k.dst, k.dport, U, preferred, lo..=hi, accept) {
                assert!((lo..=hi).contains(&p) && accept(p), "alloc gave {p} outside {lo}..={hi} or refused");
                let reply = match k.proto {
                    Proto::Icmp => FlowKey::icmp(k.dst, U, p),
                    _ => FlowKey::new(k.proto, k.dst, k.dport, U, p),
                };
                assert!(ct.lookup(&reply, *now).is_none(), "alloc gave {p}, whose reply tuple {reply} is in use");
            }
        }
        // insert: [original][reply][tcp flags][tag].
        6 => {
            let mut a = Args::new(bytes);
            let (original, mut reply) = (key(&mut a), key(&mut a));
            if param & 1 == 1 {
                // Usually the protocols agree, as the worker builds them (an
                // ICMP key's identifier is both its ports).
                reply = match original.proto {
                    Proto::Icmp => FlowKey::icmp(reply.src, reply.dst, reply.sport),
                    p => FlowKey::new(p, reply.src, reply.sport, reply.dst, reply.dport),
                };
            }
            let (flags, tag) = (Flags(a.u8()), u32::from(a.u8()));
            check_insert(ct, *now, NewFlow { original, reply, tag, tcp_flags: flags, bytes: 60 });
        }
        // update: [key][tcp flags].
        7 => {
            let mut a = Args::new(bytes);
            let k = key(&mut a);
            let flags = Flags(a.u8());
            if let Some((id, dir)) = ct.lookup(&k, *now) {
                let before = ct.get(id).expect("found").packets[dir as usize];
                let e = ct.update(id, dir, flags, 100, *now).expect("just looked up");
                // A SYN reopening a closed TCP flow starts its counters anew.
                let reopened = flags.contains(Flags::SYN) && e.packets[dir as usize] == 1;
                assert!(reopened || e.packets[dir as usize] == before.wrapping_add(1), "packets not counted");
                assert_eq!((e.last_seen_ms, e.key(dir)), (*now, k));
            }
        }
        // remove: [key].
        8 => {
            let k = key(&mut Args::new(bytes));
            if let Some((id, _)) = ct.lookup(&k, *now) {
                let e = ct.get(id).expect("found").clone();
                assert!(ct.remove(id));
                assert!(ct.get(id).is_none() && !ct.remove(id));
                assert!(ct.lookup(&e.original, *now).is_none() && ct.lookup(&e.reply, *now).is_none());
            }
        }
        // retain: drop the flows tagged `param`.
        9 => {
            let before = ct.len();
            let removed = ct.retain(|e| e.tag != u32::from(param));
            assert_eq!(ct.len(), before - removed);
            assert!(ct.iter(*now).all(|l| l.entry.tag != u32::from(param)));
        }
        // build_error: [from][packet]; param picks the kind.
        10 => {
            let mut a = Args::new(bytes);
            let from = a.ipv4();
            check_build_error(from, a.rest(), param);
        }
        // The dump agrees with lookups.
        _ => {
            let live: Vec<_> = ct.iter(*now).map(|l| (l.id, l.entry.original, l.entry.reply, l.expires_ms)).collect();
            assert!(live.len() <= ct.len());
            for (id, original, reply, expires) in live {
                assert!(expires > *now);
                assert_eq!(ct.lookup(&original, *now), Some((id, Dir::Original)));
                assert_eq!(ct.lookup(&reply, *now), Some((id, Dir::Reply)));
            }
        }
    }
}

/// What the router does with a packet past the gateway (`router/route.rs`
/// `forward`), minus the routing: classify, find or make the flow, TTL,
/// rewrite.
fn translate(ct: &mut Conntrack, now: u64, from_uplink: bool, csum: L4Csum, packet: &[u8]) {
    let mut p = packet.to_vec();
    match classify(&p) {
        Ok(Classified::Flow(f)) => {
            let target = match ct.lookup(&f.key, now) {
                Some((id, dir)) => match ct.update(id, dir, f.tcp_flags, usize::from(f.len), now) {
                    Some(e) => e.target(dir),
                    None => panic!("entry {id:?} gone between lookup and update"),
                },
                None => {
                    let k = f.key;
                    let reply = if from_uplink {
                        // DNAT of a published port, or nothing.
                        let published = match (k.proto, k.dport) {
                            (Proto::Tcp, 8080) => (Ipv4Addr::new(10, 88, 0, 2), 80),
                            (Proto::Udp, 5353) => (Ipv4Addr::new(10, 88, 0, 3), 53),
                            _ => return,
                        };
                        if k.dst != U {
                            return;
                        }
                        k.with_dst(published.0, published.1).reverse()
                    } else {
                        let range = if k.proto == Proto::Icmp { 1..=u16::MAX } else { 32768..=60999 };
                        let Some(port) = ct.alloc(k.proto, k.dst, k.dport, U, k.sport, range, |_| true) else {
                            return;
                        };
                        k.with_src(U, port).reverse()
                    };
                    let new = NewFlow { original: k, reply, tag: 0, tcp_flags: f.tcp_flags, bytes: usize::from(f.len) };
                    match ct.insert(new, now) {
                        Ok(id) => ct.get(id).expect("just inserted").target(Dir::Original),
                        Err(ConntrackError::Full | ConntrackError::Rst | ConntrackError::Exists) => return,
                        Err(e) => panic!("insert of a flow the worker builds failed: {e}"),
                    }
                }
            };
            let before = p.clone();
            let ttl = decrement_ttl(&mut p).expect("classify accepted the IPv4 header");
            if ttl <= 1 {
                assert_eq!(p, before, "TTL {ttl} changed");
            }
            match rewrite(&mut p, &target, csum) {
                Ok(()) => {
                    assert_eq!(FlowKey::from_ipv4(&p), Ok(target));
                    check_sums(&before, &p, csum);
                }
                Err(e) => {
                    // classify accepted it: the rewrite must too.
                    panic!("{:?} classified as a flow but rewrite to {target} failed: {e}", f.key);
                }
            }
        }
        Ok(Classified::IcmpError(info)) => {
            let Some((id, dir)) = ct.lookup_icmp_error(&info.inner, now) else { return };
            let rw = ct.get(id).expect("found").icmp_error_rewrite(dir, info.src, info.dst);
            let before = p.clone();
            match rewrite_icmp_error(&mut p, &rw, csum) {
                Ok(()) => {
                    assert_eq!(FlowKey::from_icmp_error(&p), Ok(rw.inner));
                    check_error_sums(&before, &p, csum);
                }
                Err(e) => panic!("{info:?} classified as an ICMP error but its rewrite failed: {e}"),
            }
        }
        Err(_) => {}
    }
}

/// One's complement values are equal, 0x0000 and 0xffff being both zero.
fn same(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

/// The partial checksum field of a TCP/UDP packet and the pseudo-header
/// sum it should hold, if the packet has one.
fn partial_field(p: &[u8]) -> Option<(u16, u16)> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    if ip.is_fragment() {
        return None;
    }
    let (src, dst, payload) = (ip.src_addr(), ip.dst_addr(), ip.payload());
    match ip.protocol() {
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(payload).ok()?;
            Some((t.checksum(), checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, payload.len() as u16)))
        }
        IpProtocol::Udp => {
            let u = UdpPacket::new_checked(payload).ok()?;
            Some((u.checksum(), checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, u.length())))
        }
        _ => None,
    }
}

/// Checksums that held before a rewrite hold after it.
fn check_sums(before: &[u8], after: &[u8], csum: L4Csum) {
    let (Some(b), Some(a)) = (sums(before), sums(after)) else { return };
    assert!(!b.header || a.header, "IPv4 header checksum broken by the rewrite");
    match csum {
        L4Csum::Full => {
            if b.l4 == Some(true) {
                assert_eq!(a.l4, Some(true), "transport checksum broken by the rewrite");
            }
        }
        L4Csum::Partial => {
            if let (Some((fb, pb)), Some((fa, pa))) = (partial_field(before), partial_field(after)) {
                if same(fb, pb) {
                    assert!(same(fa, pa), "partial checksum {fa:#06x} is not the new pseudo-header sum {pa:#06x}");
                }
            }
        }
    }
}

/// The IPv4 header checksum of the packet an ICMP error quotes, if whole.
fn quoted_header_ok(p: &[u8]) -> Option<bool> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    let data = ip.payload().get(8..)?;
    let hl = usize::from(*data.first()? & 0x0f) * 4;
    (hl >= 20).then(|| data.get(..hl).map(|h| checksum::data(h) == 0xffff)).flatten()
}

fn check_error_sums(before: &[u8], after: &[u8], csum: L4Csum) {
    let (Some(b), Some(a)): (Option<Sums>, Option<Sums>) = (sums(before), sums(after)) else { return };
    assert!(!b.header || a.header, "IPv4 header checksum broken by the error rewrite");
    if csum == L4Csum::Full && b.l4 == Some(true) {
        assert_eq!(a.l4, Some(true), "ICMP checksum broken by the error rewrite");
    }
    if quoted_header_ok(before) == Some(true) {
        assert_eq!(quoted_header_ok(after), Some(true), "quoted IPv4 header checksum broken");
    }
}

fn check_rewrite(packet: &[u8], to: &FlowKey, csum: L4Csum) {
    let mut p = packet.to_vec();
    let translatable = matches!(classify(packet), Ok(Classified::Flow(f)) if f.key.proto == to.proto);
    match rewrite(&mut p, to, csum) {
        Ok(()) => {
            assert!(translatable, "rewrite accepted what classify refuses");
            assert_eq!(FlowKey::from_ipv4(&p), Ok(*to));
            check_sums(packet, &p, csum);
            // And back again.
            let from = FlowKey::from_ipv4(packet).expect("classified");
            let mut back = p.clone();
            rewrite(&mut back, &from, csum).expect("the way back");
            assert_eq!(FlowKey::from_ipv4(&back), Ok(from));
            check_sums(packet, &back, csum);
        }
        Err(e) => {
            assert!(p == packet, "rewrite failed ({e}) and changed the packet");
            assert!(!translatable, "classify accepts it but rewrite to {to} failed: {e}");
        }
    }
}

fn check_rewrite_icmp_error(packet: &[u8], to: &IcmpErrorRewrite, csum: L4Csum) {
    let mut p = packet.to_vec();
    match rewrite_icmp_error(&mut p, to, csum) {
        Ok(()) => {
            assert_eq!(FlowKey::from_icmp_error(&p), Ok(to.inner));
            let ip = Ipv4Packet::new_checked(&p[..]).expect("still IPv4");
            assert_eq!((ip.src_addr(), ip.dst_addr()), (to.outer_src, to.outer_dst));
            check_error_sums(packet, &p, csum);
        }
        Err(e) => assert!(p == packet, "ICMP error rewrite failed ({e}) and changed the packet"),
    }
}

fn check_decrement_ttl(packet: &[u8]) {
    let mut p = packet.to_vec();
    match decrement_ttl(&mut p) {
        Ok(ttl) if ttl > 1 => {
            let ip = Ipv4Packet::new_checked(&p[..]).expect("still IPv4");
            assert_eq!(ip.ttl(), ttl - 1);
            let before = Ipv4Packet::new_checked(packet).expect("was IPv4");
            assert!(!before.verify_checksum() || ip.verify_checksum(), "TTL decrement broke the header checksum");
            assert!(p[..8] == packet[..8] && p[12..] == packet[12..], "TTL decrement changed other fields");
        }
        Ok(_) => assert!(p == packet, "TTL at its end yet the packet changed"),
        Err(e) => assert!(p == packet, "decrement_ttl failed ({e}) and changed the packet"),
    }
}

fn check_insert(ct: &mut Conntrack, now: u64, flow: NewFlow) {
    let (o, r) = (flow.original, flow.reply);
    let full = ct.len() == ct.capacity();
    let known = ct.lookup(&o, now).is_some() || ct.lookup(&r, now).is_some();
    match ct.insert(flow, now) {
        Ok(id) => {
            assert!(!known && o.proto == r.proto && o != r);
            assert_eq!(ct.lookup(&o, now), Some((id, Dir::Original)));
            assert_eq!(ct.lookup(&r, now), Some((id, Dir::Reply)));
            let e = ct.get(id).expect("just inserted");
            assert_eq!((e.original, e.reply, e.packets), (o, r, [1, 0]));
            assert_eq!(e.target(Dir::Original), r.reverse());
        }
        Err(ConntrackError::BadTuples) => assert!(o.proto != r.proto || o == r),
        Err(ConntrackError::Rst) => assert!(o.proto == Proto::Tcp && flow.tcp_flags.contains(Flags::RST)),
        Err(ConntrackError::Exists) => assert!(known),
        Err(ConntrackError::Full) => assert!(full),
        Err(e) => panic!("insert: {e}"),
    }
}

fn check_build_error(from: Ipv4Addr, offending: &[u8], param: u8) {
    let kind = match param % 6 {
        0 => ErrorKind::TimeExceeded,
        1 => ErrorKind::FragNeeded { mtu: 1280 },
        2 => ErrorKind::PortUnreachable,
        3 => ErrorKind::NetUnreachable,
        4 => ErrorKind::HostUnreachable,
        _ => ErrorKind::AdminProhibited,
    };
    let mut out = [0u8; nat::icmp::MAX_ERROR_LEN];
    let Ok(n) = build_error(&mut out, from, offending, kind) else { return };
    let e = &out[..n];
    let s = sums(e).expect("the error is an IPv4 packet");
    assert!(s.header && s.l4 == Some(true), "error checksums: {s:?}");
    let ip = Ipv4Packet::new_checked(e).expect("checked");
    let bad = Ipv4Packet::new_checked(offending).expect("build_error checked it");
    assert_eq!((ip.src_addr(), ip.dst_addr()), (from, bad.src_addr()));
    if let Ok(Classified::Flow(f)) = classify(offending) {
        match classify(e) {
            Ok(Classified::IcmpError(info)) => assert_eq!(info.inner, f.key),
            other => panic!("an error about {} classifies as {other:?}", f.key),
        }
    }
}
