//! The overlay path of a worker, without I/O: what a tunnel socket reads
//! (`overlay::tunnel::decap` for VXLAN and GRE, the UDP GRO split of
//! `Worker::tunnel_input`), what the worker does with the inner frame
//! (`inner_flow_hash`, `probe::{is_probe, parse, answer}`, the
//! `gro::Coalescer` that delivers it), and what it does before
//! encapsulating a frame (`mss::clamp`, `gso::resolve`, `segment_tcp4`).
//!
//! Input: records `[tag][len: u16 BE][bytes]` (`dataplane_fuzz::Records`),
//! at most [`MAX_RECORDS`]; `tag & 3` is the operation:
//!
//! - 0 `decap`: `bytes` is a datagram's payload (VXLAN or GRE header first;
//!   tag bit 2: 0 VXLAN, 1 GRE). With tag bit 3 it is a UDP GRO read:
//!   `[seg: u16 BE][datagrams of seg bytes back to back]`. Each inner frame
//!   that is not a probe goes to the coalescer for port `1 + (tag >> 4 & 3)`
//!   as `worker::overlay::Coalesce::deliver` sends it.
//! - 1 `egress`: `[mtu: u16 BE][virtio-net header: 10][frame]`: the frame a
//!   TAP handed over with that offload, to be encapsulated. Tag bit 2: the
//!   target first writes the correct pseudo-header sum into a partial
//!   TCP/UDP checksum field (as the sending kernel does), so completing it
//!   must give a valid checksum. Then `mss::clamp` to `mtu`, then
//!   `gso::resolve`.
//! - 2 `flush`: the end of a batch: the coalescer hands back its run.
//! - 3 `gro`: `bytes` is an inner frame pushed to the coalescer directly (no
//!   encapsulation header to get right), port as for `decap`.
//!
//! Properties, besides "no panic, no overflow":
//! - decap: the inner frame starts within the datagram with a whole
//!   Ethernet header; a VXLAN header accepted is exactly the one tapnet
//!   sends for that VNI; tapnet's own header for the id decapsulates to the
//!   same id (both encaps).
//! - probes: `parse` recognises exactly what `is_probe` does with a known
//!   kind; `answer` answers exactly requests, changes only the kind and the
//!   checksum, and a request arrived intact becomes a reply that is intact.
//! - GRO: the coalescer never holds more than `gro::MAX_SEGMENTS`; after
//!   `FlushFirst` and a flush the frame is taken or refused for its
//!   checksum; a flushed run of one is the frame as pushed, with no
//!   offload; a flushed super-frame is at most 64 KiB of IPv4, has a valid
//!   IPv4 header, a partial TCP checksum holding the pseudo-header sum and
//!   TSO metadata that matches it, and cut again by `gso::segment_tcp4` it
//!   gives back the frames pushed (but for the IPv4 Identification and the
//!   checksums, which are valid).
//! - MSS: a SYN is clamped to `mtu - 40` only when its option says more,
//!   only the option (and the checksum, when it is complete) changes, and a
//!   checksum that verified still does; anything else is left untouched.
//! - GSO: a frame needing no offload is untouched; a completed partial
//!   checksum changes the checksum field only (and verifies when the
//!   kernel's pseudo-header sum was there); segments carry at most
//!   `gso_size` payload bytes behind the super-frame's headers, cover its
//!   payload in order, and have a valid IPv4 header, Total Length, sequence
//!   number and TCP checksum; the super-frame is not written.

#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;

use dataplane::overlay::gro::{self, Coalescer, GroError, Pushed};
use dataplane::overlay::gso::{self, Resolved, Segments};
use dataplane::overlay::tunnel::{self, Encap};
use dataplane::overlay::{mss, probe};
use dataplane::packet::Offload;
use dataplane::port::PortId;
use dataplane::wire::{checksum, tcp, vnet, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket, VNET_HDR_LEN};
use dataplane_fuzz::{ipv4_of, sums, Args, Records};
use libfuzzer_sys::fuzz_target;

/// Records per input at most.
const MAX_RECORDS: usize = 128;
const ETH: usize = 14;

/// `FUZZ_TRACE=1` prints what each record did (to see where a seed goes).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

struct State {
    co: Coalescer,
    /// The frames the coalescer holds, as pushed (IPv4 datagram's end).
    held: Vec<Vec<u8>>,
    segs: Segments,
}

thread_local! {
    /// Reused across inputs, as a worker keeps them; every input ends with
    /// the coalescer empty.
    static STATE: RefCell<State> =
        RefCell::new(State { co: Coalescer::new(), held: Vec::new(), segs: Segments::new() });
}

fuzz_target!(|data: &[u8]| {
    dataplane_fuzz::keep_heap();
    STATE.with(|s| {
        let s = &mut *s.borrow_mut();
        for (tag, bytes) in Records::new(data).take(MAX_RECORDS) {
            let port = PortId::from(1 + (tag >> 4 & 3));
            match tag & 3 {
                0 => {
                    let encap = if tag & 4 == 0 { Encap::Vxlan } else { Encap::Gre };
                    if tag & 8 == 0 {
                        decap(s, encap, bytes, port);
                    } else {
                        let mut a = Args::new(bytes);
                        let seg = usize::from(a.u16());
                        let rest = a.rest();
                        // As `tunnel_input`: a GRO read's datagrams are
                        // `seg` bytes but the last; 0 means one datagram.
                        let seg = if seg == 0 { rest.len().max(1) } else { seg };
                        for d in rest.chunks(seg) {
                            decap(s, encap, d, port);
                        }
                    }
                }
                1 => egress(s, tag & 4 != 0, bytes),
                2 => flush(s),
                _ => deliver(s, bytes, port),
            }
        }
        flush(s);
        assert!(s.co.is_empty() && s.held.is_empty());
    });
});

/// Decapsulate one datagram and do with its inner frame what the worker
/// does.
fn decap(s: &mut State, encap: Encap, d: &[u8], port: PortId) {
    let r = tunnel::decap(encap, d);
    if trace() {
        eprintln!("decap {encap:?} {} bytes: {r:?}", d.len());
    }
    let Ok((id, at)) = r else { return };
    assert!(at <= d.len() && d.len() - at >= ETH, "inner frame at {at} of {}", d.len());
    match encap {
        Encap::Vxlan => {
            assert_eq!(at, 8);
            assert!(id < 1 << 24);
            assert_eq!(d[..8], encap.header(id), "accepted a VXLAN header tapnet would not send");
        }
        Encap::Gre => assert!([8, 12, 16].contains(&at), "GRE header of {at} bytes"),
    }
    let inner = &d[at..];
    let mut again = encap.header(id).to_vec();
    again.extend_from_slice(inner);
    assert_eq!(tunnel::decap(encap, &again), Ok((id, tunnel::HEADER_LEN)), "own header refused");
    assert_eq!(tunnel::inner_flow_hash(inner), tunnel::inner_flow_hash(&again[tunnel::HEADER_LEN..]));

    if probe::is_probe(inner) {
        check_probe(inner);
        return;
    }
    assert!(probe::parse(inner).is_none());
    deliver(s, inner, port);
}

fn check_probe(frame: &[u8]) {
    let p = probe::parse(frame);
    if trace() {
        eprintln!("probe {p:?}");
    }
    assert_eq!(p.is_some(), matches!(frame[22], 1 | 2), "parse of kind {}", frame[22]);
    let mut f = frame.to_vec();
    let answered = probe::answer(&mut f);
    assert_eq!(answered, p.is_some_and(|p| p.kind == probe::Kind::Request));
    if !answered {
        assert_eq!(f, frame, "answer changed what it did not answer");
        return;
    }
    let (p, r) = (p.unwrap(), probe::parse(&f).expect("a reply parses"));
    for (i, (a, b)) in frame.iter().zip(&f).enumerate() {
        assert!(a == b || [22, 34, 35].contains(&i), "answer changed byte {i}");
    }
    assert_eq!(
        (r.kind, r.id, r.seq, r.len, r.intact),
        (probe::Kind::Reply, p.id, p.seq, p.len, p.intact),
        "reply to {p:?}"
    );
}

/// `Coalesce::deliver`: push, flush first if told, send alone if refused.
fn deliver(s: &mut State, frame: &[u8], port: PortId) {
    let was_empty = s.co.is_empty();
    let mut r = s.co.push(frame, port);
    if r == Ok(Pushed::FlushFirst) {
        assert!(!was_empty, "FlushFirst with nothing held");
        flush(s);
        r = s.co.push(frame, port);
        assert!(matches!(r, Ok(Pushed::Held) | Err(GroError::BadChecksum)), "{r:?} after a flush");
    }
    if trace() {
        eprintln!("push {} bytes to port {port}: {r:?}", frame.len());
    }
    match r {
        Ok(Pushed::Held) => {
            let total = usize::from(Ipv4Packet::new_unchecked(&frame[ETH..]).total_len());
            s.held.push(frame[..ETH + total].to_vec());
            assert_eq!(s.co.port(), Some(port));
        }
        Ok(Pushed::FlushFirst) => unreachable!(),
        Err(_) => flush(s),
    }
    assert_eq!(s.co.held(), s.held.len());
    assert!(s.co.held() <= gro::MAX_SEGMENTS);
}

fn flush(s: &mut State) {
    let n = s.co.held();
    let Some((o, f)) = s.co.flush().map(|(_, buf)| (buf.meta.offload, buf.frame().to_vec())) else {
        assert!(s.held.is_empty());
        return;
    };
    assert!(s.co.is_empty());
    if trace() {
        eprintln!("flush {n} segments: {} bytes, {o:?}", f.len());
    }
    let held = std::mem::take(&mut s.held);
    assert_eq!(held.len(), n);
    if n == 1 {
        assert_eq!(o, Offload::NONE);
        assert_eq!(f, held[0], "a run of one is not the frame pushed");
        return;
    }
    let total = f.len() - ETH;
    assert!(total <= gro::MAX_IP_LEN, "{total} bytes of coalesced IPv4");
    let ip = Ipv4Packet::new_checked(&f[ETH..]).expect("coalesced IPv4 header");
    assert_eq!(usize::from(ip.total_len()), total);
    assert!(ip.verify_checksum());
    let t = TcpPacket::new_checked(ip.payload()).expect("coalesced TCP header");
    let pseudo = checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), IpProtocol::Tcp, ip.payload().len() as u16);
    assert_eq!(t.checksum(), pseudo, "partial checksum");
    let hdr_len = ETH + ip.header_len() + t.header_len();
    let first_payload = held[0].len() - hdr_len;
    assert_eq!(
        o,
        Offload {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: vnet::GSO_TCPV4,
            hdr_len: hdr_len as u16,
            gso_size: first_payload as u16,
            csum_start: (ETH + ip.header_len()) as u16,
            csum_offset: 16,
        }
    );
    assert_eq!(total + ETH, held.iter().map(|h| h.len() - hdr_len).sum::<usize>() + hdr_len);
    if o.gso_size < gso::MIN_GSO_SIZE {
        // Smaller segments than tapnet's GSO cuts (the kernel's would).
        return;
    }
    let count = gso::segment_tcp4(&f, &o, &mut s.segs).expect("a coalesced run segments again");
    assert_eq!(count, n);
    for (seg, orig) in s.segs.iter().zip(&held) {
        let mut b = seg.header.to_vec();
        b.extend_from_slice(&f[seg.payload.clone()]);
        assert_eq!(b.len(), orig.len());
        let ip_csum = ETH + 10..ETH + 12;
        let tcp_csum = hdr_len - t.header_len() + 16..hdr_len - t.header_len() + 18;
        for (i, (x, y)) in b.iter().zip(orig).enumerate() {
            let skip = (ETH + 4..ETH + 6).contains(&i) || ip_csum.contains(&i) || tcp_csum.contains(&i);
            assert!(skip || x == y, "segment differs from the frame pushed at byte {i}");
        }
        let sm = sums(ipv4_of(&b).unwrap()).unwrap();
        assert_eq!((sm.header, sm.l4), (true, Some(true)));
    }
}

/// A frame leaving through a tunnel: clamp, then resolve its offload.
fn egress(s: &mut State, fix_partial: bool, bytes: &[u8]) {
    let mut a = Args::new(bytes);
    let mtu = u32::from(a.u16());
    let rest = a.rest();
    if rest.len() < VNET_HDR_LEN {
        return;
    }
    let (hdr, frame) = rest.split_at(VNET_HDR_LEN);
    let o = Offload::from_vnet(hdr);
    let mut f = frame.to_vec();
    if fix_partial && o.needs_csum() {
        write_pseudo_sum(&mut f, &o);
    }

    let before = f.clone();
    let sums_before = ipv4_of(&before).and_then(sums);
    let partial = o.needs_csum();
    let clamped = mss::clamp(&mut f, mtu, partial);
    if trace() {
        eprintln!("egress {} bytes, {o:?}, clamp to MTU {mtu}: {clamped:?}", f.len());
    }
    match clamped {
        None => assert_eq!(f, before, "not clamped but changed"),
        Some(old) => {
            let max = u16::try_from(mtu - mss::HEADERS).unwrap_or(u16::MAX);
            assert!(old > max, "clamped {old} to {max}");
            let changed: Vec<usize> = (0..f.len()).filter(|&i| f[i] != before[i]).collect();
            let l4 = ETH + usize::from(f[ETH] & 0x0f) * 4;
            let csum = [l4 + 16, l4 + 17];
            let opt: Vec<usize> = changed.iter().copied().filter(|i| !csum.contains(i)).collect();
            assert!(!opt.is_empty() && opt.len() <= 2, "clamp changed bytes {changed:?}");
            // The option's value: a 2-byte window holding every changed
            // byte but the checksum's (one of the two may be unchanged).
            let w = [opt[0].wrapping_sub(1), opt[0]].into_iter().find(|&w| {
                w + 2 <= f.len()
                    && opt.iter().all(|&i| i == w || i == w + 1)
                    && u16::from_be_bytes([f[w], f[w + 1]]) == max
                    && u16::from_be_bytes([before[w], before[w + 1]]) == old
            });
            assert!(w.is_some_and(|w| w >= l4 + 20), "clamp changed bytes {changed:?}, not the MSS {old} to {max}");
            if partial {
                assert!(changed.iter().all(|i| !csum.contains(i)), "partial checksum changed");
            }
            let sums_after = ipv4_of(&f).and_then(sums);
            if !partial && sums_before.is_some_and(|x| x.l4 == Some(true)) {
                assert_eq!(sums_after.unwrap().l4, Some(true), "clamp broke the TCP checksum");
            }
        }
    }

    let before = f.clone();
    let r = gso::resolve(&mut f, &o, &mut s.segs);
    if trace() {
        eprintln!("resolve: {r:?}");
    }
    match r {
        Ok(Resolved::Whole) => {
            assert!(!o.is_gso());
            assert!(s.segs.is_empty());
            if !o.needs_csum() {
                assert_eq!(f, before);
                return;
            }
            let at = usize::from(o.csum_start) + usize::from(o.csum_offset);
            for (i, (x, y)) in f.iter().zip(&before).enumerate() {
                assert!(x == y || i == at || i == at + 1, "completing the checksum changed byte {i}");
            }
            if fix_partial && prepared(&before, &o) {
                let sm = sums(ipv4_of(&f).unwrap()).unwrap();
                assert_eq!(sm.l4, Some(true), "completed checksum does not verify");
            }
        }
        Ok(Resolved::Segmented(n)) => {
            assert_eq!(f, before, "segmentation wrote the super-frame");
            check_segments(&f, &o, &s.segs, n);
        }
        Err(_) => {
            if o.is_gso() {
                assert!(s.segs.is_empty());
            }
        }
    }
}

/// Whether `f` is TCP or UDP in IPv4 with `o` naming its checksum field and
/// no bytes past the datagram or the UDP Length (so a completed checksum
/// covers exactly what the receiver verifies, as in what a kernel sends).
fn prepared(f: &[u8], o: &Offload) -> bool {
    let Some(ip) = ipv4_of(f).and_then(|p| Ipv4Packet::new_checked(p).ok()) else { return false };
    let l4 = ETH + ip.header_len();
    let off = match ip.protocol() {
        IpProtocol::Tcp => 16,
        IpProtocol::Udp => 6,
        _ => return false,
    };
    !ip.is_fragment()
        && usize::from(ip.total_len()) + ETH == f.len()
        && usize::from(o.csum_start) == l4
        && usize::from(o.csum_offset) == off
        && f.len() >= l4 + off + 2
        && match ip.protocol() {
            IpProtocol::Tcp => TcpPacket::new_checked(ip.payload()).is_ok(),
            _ => UdpPacket::new_checked(ip.payload()).is_ok_and(|u| usize::from(u.length()) == ip.payload().len()),
        }
}

/// What a sending kernel leaves in a partial checksum field.
fn write_pseudo_sum(f: &mut [u8], o: &Offload) {
    if !prepared(f, o) {
        return;
    }
    let ip = Ipv4Packet::new_unchecked(&f[ETH..]);
    let l4len = ip.payload().len() as u16;
    let sum = checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), ip.protocol(), l4len);
    let at = usize::from(o.csum_start) + usize::from(o.csum_offset);
    f[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

fn check_segments(f: &[u8], o: &Offload, segs: &Segments, n: usize) {
    assert_eq!(segs.len(), n);
    assert!((1..=gso::MAX_SEGMENTS).contains(&n));
    let hdr_len = segs.header_len();
    assert!(hdr_len <= gso::MAX_HEADER_LEN);
    let mss = usize::from(o.gso_size);
    let ip0 = Ipv4Packet::new_unchecked(&f[ETH..]);
    let t0 = TcpPacket::new_unchecked(&f[ETH + ip0.header_len()..]);
    let mut next = hdr_len;
    for (i, seg) in segs.iter().enumerate() {
        assert_eq!(seg.header.len(), hdr_len);
        assert_eq!(seg.payload.start, next, "segment {i} does not continue the payload");
        next = seg.payload.end;
        assert!(seg.payload.len() <= mss && seg.len() <= hdr_len + mss, "segment {i} of {} bytes", seg.len());
        assert!(i + 1 == n || seg.payload.len() == mss, "short segment {i} before the last");
        let mut b = seg.header.to_vec();
        b.extend_from_slice(&f[seg.payload.clone()]);
        let ip = Ipv4Packet::new_checked(&b[ETH..]).expect("segment's IPv4 header");
        assert_eq!(usize::from(ip.total_len()), b.len() - ETH);
        let t = TcpPacket::new_checked(ip.payload()).expect("segment's TCP header");
        assert_eq!(t.seq_number(), t0.seq_number().wrapping_add((i * mss) as u32));
        let fin_psh = t.flags().0 & (tcp::Flags::FIN.0 | tcp::Flags::PSH.0);
        assert!(i + 1 == n || fin_psh == 0, "FIN or PSH on segment {i} of {n}");
        let sm = sums(&b[ETH..]).unwrap();
        assert_eq!((sm.header, sm.l4), (true, Some(true)), "segment {i}'s checksums");
    }
    assert_eq!(next, f.len(), "segments end before the super-frame");
}
