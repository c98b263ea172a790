//! ARP on the gateway and the uplink (RFC 826): the uplink's neighbour
//! cache, and the frames the dataplane answers or sends itself.
//!
//! The cache maps next-hop IPv4 addresses on the uplink's subnet to MAC
//! addresses. Every worker reads it (any worker may send out of the uplink)
//! and updates are rare (ARP replies and requests addressed to us), so each
//! slot is a small seqlock over atomics: readers never write and never wait,
//! a writer claims the slot by moving its sequence number to an odd value
//! with a compare-and-swap. The table has a fixed number of slots, set
//! associative like the MAC table, so it is bounded whatever the LAN sends.
//!
//! Entries follow the kernel's neighbour states in a simplified form:
//! *reachable* for [`REACHABLE_MS`] after the last confirmation; then
//! *stale*: still used, but each use may trigger a new request (at most one
//! per [`REQUEST_INTERVAL_MS`]); after [`MAX_AGE_MS`] without a confirmation
//! the entry is gone and traffic waits for a fresh reply.

use std::net::Ipv4Addr;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::*};

use crate::wire::arp::{self, Operation};
use crate::wire::{ethernet, EtherType, EthernetFrame, MacAddr};

/// An entry confirmed this recently is used without asking again.
pub const REACHABLE_MS: u64 = 30_000;
/// An entry not confirmed for this long is no longer used.
pub const MAX_AGE_MS: u64 = 90_000;
/// At most one request per address per this interval.
pub const REQUEST_INTERVAL_MS: u64 = 1_000;
/// Slots in the cache (a power of two).
pub const DEFAULT_SLOTS: usize = 1024;
/// Slots scanned per address.
const PROBE: usize = 4;
/// Length of an ARP frame for Ethernet/IPv4 (no padding).
pub const FRAME_LEN: usize = ethernet::HEADER_LEN + arp::HEADER_LEN;

#[derive(Debug, Default)]
struct Slot {
    seq: AtomicU32,
    /// The IPv4 address as a big-endian u32; 0 means empty.
    ip: AtomicU32,
    mac: AtomicU64,
    confirmed: AtomicU64,
    requested: AtomicU64,
}

/// What the cache knows about a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neighbour {
    /// Usable, confirmed recently.
    Reachable(MacAddr),
    /// Usable, but should be confirmed: send a request if
    /// [`ArpCache::should_request`] agrees.
    Stale(MacAddr),
    /// Unknown: resolve before sending.
    Unknown,
}

/// A bounded, lock-free IPv4 → MAC cache shared by the workers.
#[derive(Debug)]
pub struct ArpCache {
    slots: Box<[Slot]>,
    mask: usize,
}

impl ArpCache {
    pub fn new(slots: usize) -> ArpCache {
        let n = slots.next_power_of_two().max(PROBE);
        ArpCache { slots: (0..n).map(|_| Slot::default()).collect(), mask: n - 1 }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn window(&self, ip: u32) -> impl Iterator<Item = &Slot> {
        let h = (u64::from(ip).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize;
        (0..PROBE).map(move |i| &self.slots[(h + i) & self.mask])
    }

    /// Read a slot consistently: `(ip, mac, confirmed)`.
    #[inline]
    fn read(s: &Slot) -> Option<(u32, u64, u64)> {
        for _ in 0..16 {
            let a = s.seq.load(Acquire);
            if a & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let v = (s.ip.load(Relaxed), s.mac.load(Relaxed), s.confirmed.load(Relaxed));
            fence(Acquire);
            if s.seq.load(Relaxed) == a {
                return Some(v);
            }
        }
        None
    }

    /// What is known about `ip` at `now` (milliseconds).
    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr, now: u64) -> Neighbour {
        let want = u32::from(ip);
        if want == 0 {
            return Neighbour::Unknown;
        }
        for s in self.window(want) {
            if s.ip.load(Relaxed) != want {
                continue;
            }
            if let Some((got, mac, confirmed)) = Self::read(s) {
                if got != want {
                    continue;
                }
                if mac == 0 {
                    // Incomplete: asked for, not answered.
                    return Neighbour::Unknown;
                }
                let age = now.saturating_sub(confirmed);
                let mac = MacAddr::from_u64(mac);
                return if age <= REACHABLE_MS {
                    Neighbour::Reachable(mac)
                } else if age <= MAX_AGE_MS {
                    Neighbour::Stale(mac)
                } else {
                    Neighbour::Unknown
                };
            }
        }
        Neighbour::Unknown
    }

    /// Whether a worker should send a request for `ip` now: at most one
    /// caller per [`REQUEST_INTERVAL_MS`] gets `true`, whichever worker asks
    /// and whether or not `ip` ever answered. The first request for an
    /// address without an entry makes an *incomplete* one (no MAC, never
    /// used for forwarding) to remember when it was asked; it takes a free
    /// or dead slot of the address's window, never a live entry, and if
    /// there is none no request goes out (the frames waiting for it are
    /// dropped as `arp_unresolved` after their wait). Cheap enough for the
    /// per-packet path: a few loads, rarely a CAS.
    pub fn should_request(&self, ip: Ipv4Addr, now: u64) -> bool {
        let want = u32::from(ip);
        if want == 0 {
            return false;
        }
        let mut free = None;
        for s in self.window(want) {
            let got = s.ip.load(Relaxed);
            if got == want {
                let last = s.requested.load(Relaxed);
                return now.saturating_sub(last) >= REQUEST_INTERVAL_MS
                    && s.requested.compare_exchange(last, now, Relaxed, Relaxed).is_ok();
            }
            if free.is_none() && (got == 0 || Self::dead(s, now)) {
                free = Some(s);
            }
        }
        let Some(s) = free else { return false };
        let seq = s.seq.load(Relaxed);
        if seq & 1 == 1 || s.seq.compare_exchange(seq, seq.wrapping_add(1), Acquire, Relaxed).is_err() {
            return false;
        }
        s.ip.store(want, Relaxed);
        s.mac.store(0, Relaxed);
        s.confirmed.store(0, Relaxed);
        s.requested.store(now, Relaxed);
        s.seq.store(seq.wrapping_add(2), Release);
        true
    }

    /// Whether slot `s` may be taken for another address: a complete entry
    /// past [`MAX_AGE_MS`], or an incomplete one nobody asked for in the
    /// last three request intervals.
    fn dead(s: &Slot, now: u64) -> bool {
        if s.mac.load(Relaxed) == 0 {
            now.saturating_sub(s.requested.load(Relaxed)) > 3 * REQUEST_INTERVAL_MS
        } else {
            now.saturating_sub(s.confirmed.load(Relaxed)) > MAX_AGE_MS
        }
    }

    /// Record that `ip` is at `mac` (an ARP frame said so). With `create`
    /// false only an existing entry is refreshed, as Linux does for ARP
    /// traffic not addressed to us. Returns whether anything was written.
    pub fn update(&self, ip: Ipv4Addr, mac: MacAddr, now: u64, create: bool) -> bool {
        let want = u32::from(ip);
        if want == 0 || !mac.is_unicast() {
            return false;
        }
        let mut target = None;
        let mut empty = None;
        let mut oldest: Option<(&Slot, u64)> = None;
        for s in self.window(want) {
            let ip = s.ip.load(Relaxed);
            if ip == want {
                target = Some(s);
                break;
            }
            if ip == 0 {
                empty = empty.or(Some(s));
                continue;
            }
            let c = s.confirmed.load(Relaxed);
            if oldest.is_none_or(|(_, o)| c < o) {
                oldest = Some((s, c));
            }
        }
        let s = match (target, create) {
            (Some(s), _) => s,
            (None, false) => return false,
            (None, true) => match empty.or(oldest.map(|(s, _)| s)) {
                Some(s) => s,
                None => return false,
            },
        };
        let seq = s.seq.load(Relaxed);
        if seq & 1 == 1 || s.seq.compare_exchange(seq, seq.wrapping_add(1), Acquire, Relaxed).is_err() {
            // Another worker is writing this slot right now; its update is
            // as good as ours.
            return false;
        }
        if s.ip.load(Relaxed) != want {
            s.requested.store(0, Relaxed);
        }
        s.ip.store(want, Relaxed);
        s.mac.store(mac.to_u64(), Relaxed);
        s.confirmed.store(now, Relaxed);
        s.seq.store(seq.wrapping_add(2), Release);
        true
    }

    /// Forget every entry (the uplink changed).
    pub fn clear(&self) {
        for s in self.slots.iter() {
            let seq = s.seq.load(Relaxed);
            if s.seq.compare_exchange(seq, seq | 1, Acquire, Relaxed).is_ok() && seq & 1 == 0 {
                s.ip.store(0, Relaxed);
                s.seq.store(seq.wrapping_add(2), Release);
            }
        }
    }

    /// Live entries as `(ip, mac, age_ms)`, for inspection.
    pub fn entries(&self, now: u64) -> Vec<(Ipv4Addr, MacAddr, u64)> {
        let mut v: Vec<_> = self
            .slots
            .iter()
            .filter_map(Self::read)
            .filter(|&(ip, mac, c)| ip != 0 && mac != 0 && now.saturating_sub(c) <= MAX_AGE_MS)
            .map(|(ip, mac, c)| (Ipv4Addr::from(ip), MacAddr::from_u64(mac), now.saturating_sub(c)))
            .collect();
        v.sort();
        v
    }
}

/// A parsed ARP frame for Ethernet/IPv4, the only kind tapnet handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpMsg {
    pub op: Operation,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

/// Parse an Ethernet frame carrying ARP; `None` for anything malformed or
/// not Ethernet/IPv4.
#[inline]
pub fn parse(frame: &[u8]) -> Option<ArpMsg> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::Arp {
        return None;
    }
    let p = arp::Packet::new_checked(eth.payload()).ok()?;
    if p.hardware_type() != arp::HTYPE_ETHERNET
        || p.protocol_type() != arp::PTYPE_IPV4
        || p.hardware_len() != 6
        || p.protocol_len() != 4
    {
        return None;
    }
    Some(ArpMsg {
        op: p.operation(),
        sender_mac: p.sender_hw_addr(),
        sender_ip: p.sender_proto_addr(),
        target_mac: p.target_hw_addr(),
        target_ip: p.target_proto_addr(),
    })
}

/// Write an ARP frame into `out` (at least [`FRAME_LEN`] bytes) and return
/// its length.
pub fn emit(out: &mut [u8], eth_dst: MacAddr, msg: &ArpMsg) -> usize {
    let mut eth = EthernetFrame::new_unchecked(&mut out[..FRAME_LEN]);
    eth.set_dst(eth_dst);
    eth.set_src(msg.sender_mac);
    eth.set_ethertype(EtherType::Arp);
    let mut p = arp::Packet::new_unchecked(eth.payload_mut());
    p.set_hardware_type(arp::HTYPE_ETHERNET);
    p.set_protocol_type(arp::PTYPE_IPV4);
    p.set_hardware_len(6);
    p.set_protocol_len(4);
    p.set_operation(msg.op);
    p.set_sender_hw_addr(msg.sender_mac);
    p.set_sender_proto_addr(msg.sender_ip);
    p.set_target_hw_addr(msg.target_mac);
    p.set_target_proto_addr(msg.target_ip);
    FRAME_LEN
}

/// The reply to `req` from `(mac, ip)`, unicast to the requester.
pub fn reply_to(out: &mut [u8], req: &ArpMsg, mac: MacAddr) -> usize {
    let msg = ArpMsg {
        op: Operation::Reply,
        sender_mac: mac,
        sender_ip: req.target_ip,
        target_mac: req.sender_mac,
        target_ip: req.sender_ip,
    };
    emit(out, req.sender_mac, &msg)
}

/// A broadcast request for `target` from `(mac, ip)`.
pub fn request(out: &mut [u8], mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> usize {
    let msg =
        ArpMsg { op: Operation::Request, sender_mac: mac, sender_ip: ip, target_mac: MacAddr::ZERO, target_ip: target };
    emit(out, MacAddr::BROADCAST, &msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]);
    const MAC_G: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x01]);

    // `who-has 10.88.0.1 tell 10.88.0.2`, as a container's kernel sends it.
    const REQ: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00,
        0x06, 0x04, 0x00, 0x01, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x0a, 0x58, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x0a, 0x58, 0x00, 0x01,
    ];

    #[test]
    fn parse_request_and_build_the_reply() {
        let req = parse(&REQ).unwrap();
        assert_eq!(req.op, Operation::Request);
        assert_eq!(req.sender_ip, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(req.target_ip, Ipv4Addr::new(10, 88, 0, 1));
        let mut out = [0xa5u8; 64];
        let n = reply_to(&mut out, &req, MAC_G);
        assert_eq!(n, 42);
        let r = parse(&out[..n]).unwrap();
        assert_eq!(r.op, Operation::Reply);
        assert_eq!((r.sender_mac, r.sender_ip), (MAC_G, Ipv4Addr::new(10, 88, 0, 1)));
        assert_eq!((r.target_mac, r.target_ip), (MAC_A, Ipv4Addr::new(10, 88, 0, 2)));
        assert_eq!(out[..6], MAC_A.0);
        assert_eq!(out[6..12], MAC_G.0);
        // Cross-check the Ethernet header with etherparse.
        let (eth, _) = etherparse::Ethernet2Header::from_slice(&out[..n]).unwrap();
        assert_eq!(eth.ether_type, etherparse::EtherType::ARP);
    }

    #[test]
    fn request_is_broadcast_and_parses_back() {
        let mut out = [0u8; 42];
        request(&mut out, MAC_G, Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(out[..6], [0xff; 6]);
        let r = parse(&out).unwrap();
        assert_eq!(r.op, Operation::Request);
        assert_eq!(r.target_mac, MacAddr::ZERO);
        assert_eq!(r.target_ip, Ipv4Addr::new(192, 0, 2, 1));
    }

    #[test]
    fn malformed_arp_is_refused() {
        for len in 0..42 {
            assert!(parse(&REQ[..len]).is_none(), "{len}");
        }
        let mut bad = REQ;
        bad[19] = 16; // protocol length 16 (not IPv4)
        assert!(parse(&bad).is_none());
        let mut not_arp = REQ;
        not_arp[13] = 0x00; // EtherType 0x0800
        assert!(parse(&not_arp).is_none());
    }

    #[test]
    fn cache_states_follow_time() {
        let c = ArpCache::new(16);
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        assert_eq!(c.lookup(ip, 0), Neighbour::Unknown);
        // Not addressed to us: no entry is created.
        assert!(!c.update(ip, MAC_A, 0, false));
        assert!(c.update(ip, MAC_A, 1_000, true));
        assert_eq!(c.lookup(ip, 1_000 + REACHABLE_MS), Neighbour::Reachable(MAC_A));
        assert_eq!(c.lookup(ip, 1_001 + REACHABLE_MS), Neighbour::Stale(MAC_A));
        assert_eq!(c.lookup(ip, 1_001 + MAX_AGE_MS), Neighbour::Unknown);
        // A confirmation refreshes it, and may change the MAC.
        assert!(c.update(ip, MAC_G, 50_000, false));
        assert_eq!(c.lookup(ip, 50_000), Neighbour::Reachable(MAC_G));
        assert_eq!(c.entries(50_010), vec![(ip, MAC_G, 10)]);
        // Broadcast, multicast and zero are never cached.
        assert!(!c.update(ip, MacAddr::BROADCAST, 0, true));
        assert!(!c.update(Ipv4Addr::UNSPECIFIED, MAC_A, 0, true));
    }

    #[test]
    fn requests_are_rate_limited_per_address() {
        let c = ArpCache::new(16);
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        assert!(c.should_request(ip, 0));
        c.update(ip, MAC_A, 0, true);
        assert!(c.should_request(ip, 40_000));
        assert!(!c.should_request(ip, 40_500));
        assert!(c.should_request(ip, 41_000));
    }

    #[test]
    fn an_address_that_never_answers_is_asked_once_a_second() {
        let c = ArpCache::new(16);
        let ip = Ipv4Addr::new(192, 0, 2, 9);
        // A worker retrying every millisecond for 3 s sends 3 requests, as
        // Linux does (mcast_solicit 3, retrans_time 1 s).
        let asked = (0..3_000u64).filter(|&t| c.should_request(ip, 5_000 + t)).count();
        assert_eq!(asked, 3);
        // The incomplete entry is never used, nor listed.
        assert_eq!(c.lookup(ip, 6_000), Neighbour::Unknown);
        assert!(c.entries(6_000).is_empty());
        // A reply not addressed to us completes it (it has a slot now).
        assert!(c.update(ip, MAC_A, 7_000, false));
        assert_eq!(c.lookup(ip, 7_000), Neighbour::Reachable(MAC_A));
    }

    #[test]
    fn incomplete_entries_never_evict_live_ones() {
        let c = ArpCache::new(4);
        // Fill the whole (single-window) cache with live entries.
        for i in 1..=4u32 {
            assert!(c.update(Ipv4Addr::from(0x0a00_0000 + i), MAC_A, 1_000, true));
        }
        let stranger = Ipv4Addr::new(198, 51, 100, 7);
        assert!(!c.should_request(stranger, 2_000));
        assert_eq!(c.entries(2_000).len(), 4);
        // Once they are dead, the stranger gets a slot.
        assert!(c.should_request(stranger, 2_000 + MAX_AGE_MS));
        // An incomplete entry nobody asks for any more is reused; one that
        // is still asked for is not.
        let c = ArpCache::new(4);
        for i in 1..=3u32 {
            assert!(c.update(Ipv4Addr::from(0x0a00_0000 + i), MAC_A, 0, true));
        }
        assert!(c.should_request(stranger, 0));
        let other = Ipv4Addr::new(198, 51, 100, 8);
        assert!(!c.should_request(other, 2_000));
        assert!(c.should_request(other, 3 * REQUEST_INTERVAL_MS + 1));
        assert_eq!(c.entries(3 * REQUEST_INTERVAL_MS + 1).len(), 3);
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_oldest() {
        let c = ArpCache::new(8);
        for i in 0..1000u32 {
            c.update(Ipv4Addr::from(0x0a00_0000 + i), MAC_A, u64::from(i), true);
        }
        let e = c.entries(1000);
        assert!(e.len() <= 8);
        assert!(!e.is_empty());
        // The newest one is there.
        assert_eq!(c.lookup(Ipv4Addr::from(0x0a00_0000 + 999), 1000), Neighbour::Reachable(MAC_A));
        c.clear();
        assert!(c.entries(1000).is_empty());
    }

    #[test]
    fn concurrent_readers_never_see_torn_entries() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let c = std::sync::Arc::new(ArpCache::new(4));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let writes = std::sync::Arc::new(AtomicU64::new(0));
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        let macs = [MAC_A, MAC_G];
        c.update(ip, MAC_A, 0, true);
        let w = {
            let (c, stop, writes) = (c.clone(), stop.clone(), writes.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                // Writes are rare in real life (ARP replies); a writer that
                // never pauses would starve the readers' retries.
                while !stop.load(Ordering::Relaxed) {
                    c.update(ip, macs[(i % 2) as usize], i, true);
                    i += 1;
                    writes.store(i, Ordering::Relaxed);
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                }
            })
        };
        // Read until the writer has written a good many times (however
        // the threads are scheduled), with a bound.
        let (mut seen, mut reads) = (0u64, 0u64);
        let t0 = std::time::Instant::now();
        while (writes.load(Ordering::Relaxed) < 10_000 || reads < 10_000) && t0.elapsed().as_secs() < 20 {
            reads += 1;
            match c.lookup(ip, 0) {
                Neighbour::Reachable(m) | Neighbour::Stale(m) => {
                    assert!(macs.contains(&m));
                    seen += 1;
                }
                Neighbour::Unknown => {}
            }
        }
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
        assert!(writes.load(Ordering::Relaxed) >= 10_000, "the writer hardly ran");
        assert!(seen > 0);
    }
}
