//! The forwarding database (MAC table) of one learning bridge, shared by
//! every worker without a lock. Its design (slots of two atomics, windows of
//! [`PROBE`] slots, a bound on live entries, writes only every
//! [`REFRESH_MS`]) is explained once, in `docs/ARCHITECTURE.md` (§ The MAC
//! table). The all-zero MAC is never learned: a zero `key` means an empty
//! slot.
//!
//! Static entries (a network's gateway MAC, say) have `seen` =
//! [`STATIC`]: they never age, are never swept or flushed with a port, do not
//! count against the bound, and a frame from another port carrying that
//! source MAC neither moves nor refreshes them ([`Learn::Static`]), so a
//! container can neither take over nor age out the gateway's address.
//!
//! Accepted races: two workers learning the same new MAC at the same instant
//! may each claim a slot; lookups and later learning use the first one and
//! the duplicate ages out. A reader may briefly see a new key with the old
//! slot's `seen`, which can only make it flood one frame.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

use crate::port::PortId;
use crate::wire::MacAddr;

/// Slots scanned per MAC.
pub const PROBE: usize = 8;
/// `seen` is rewritten at most this often per entry.
pub const REFRESH_MS: u64 = 1000;
/// Default ageing time, as for the Linux bridge and Open vSwitch.
pub const DEFAULT_AGEING_MS: u64 = 300_000;
/// Default bound on entries per network.
pub const DEFAULT_CAPACITY: usize = 8192;
/// `seen` of a static entry.
pub const STATIC: u64 = u64::MAX;

#[derive(Debug, Default)]
#[repr(align(16))]
struct Slot {
    key: AtomicU64,
    seen: AtomicU64,
}

/// What [`Fdb::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// The MAC was already known on this port.
    Known,
    /// A new entry was made.
    Learned,
    /// The MAC was known on another port and now points here.
    Moved { from: PortId },
    /// The table (or the MAC's window) is full; nothing was learned.
    Full,
    /// The MAC is a static entry on another port: refused, nothing changed.
    Static,
}

/// One entry, as shown by `tapnet fdb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub port: PortId,
    /// 0 for static entries.
    pub age_ms: u64,
    pub is_static: bool,
}

/// A bounded, lock-free MAC table.
#[derive(Debug)]
pub struct Fdb {
    slots: Box<[Slot]>,
    mask: usize,
    capacity: usize,
    live: AtomicUsize,
    ageing_ms: AtomicU64,
}

#[inline]
fn pack(mac: u64, port: PortId) -> u64 {
    mac << 16 | port as u64
}

impl Fdb {
    /// A table holding at most `capacity` entries that expire after
    /// `ageing_ms` without traffic.
    pub fn new(capacity: usize, ageing_ms: u64) -> Fdb {
        let capacity = capacity.max(1);
        let n = (capacity * 2).next_power_of_two().max(PROBE * 2);
        Fdb {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            capacity,
            live: AtomicUsize::new(0),
            ageing_ms: AtomicU64::new(ageing_ms),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Live entries, including ones that have expired but not been swept.
    pub fn len(&self) -> usize {
        self.live.load(Relaxed)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn ageing_ms(&self) -> u64 {
        self.ageing_ms.load(Relaxed)
    }
    pub fn set_ageing_ms(&self, ms: u64) {
        self.ageing_ms.store(ms, Relaxed)
    }

    #[inline]
    fn window(&self, mac: u64) -> impl Iterator<Item = &Slot> {
        // Fibonacci hashing: the high bits of the product mix all MAC bits.
        let h = (mac.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize;
        (0..PROBE).map(move |i| &self.slots[(h + i) & self.mask])
    }

    #[inline]
    fn expired(&self, seen: u64, now: u64) -> bool {
        now.saturating_sub(seen) > self.ageing_ms.load(Relaxed)
    }

    /// The port `mac` was last seen on, unless unknown or expired.
    #[inline]
    pub fn lookup(&self, mac: MacAddr, now: u64) -> Option<PortId> {
        let m = mac.to_u64();
        if m == 0 {
            return None;
        }
        for s in self.window(m) {
            let k = s.key.load(Acquire);
            if k >> 16 == m {
                if self.expired(s.seen.load(Relaxed), now) {
                    return None;
                }
                return Some(k as PortId);
            }
        }
        None
    }

    /// Record that `mac` was seen as a source on `port` at `now`.
    #[inline]
    pub fn learn(&self, mac: MacAddr, port: PortId, now: u64) -> Learn {
        let m = mac.to_u64();
        if m == 0 {
            return Learn::Full;
        }
        let want = pack(m, port);
        // Two rounds: a lost compare-and-swap means another worker changed
        // the window under us; the second look settles it.
        for _ in 0..2 {
            let mut free = None;
            let mut stale = None;
            for s in self.window(m) {
                let k = s.key.load(Acquire);
                if k == 0 {
                    free = free.or(Some(s));
                    continue;
                }
                if k >> 16 == m {
                    let seen = s.seen.load(Relaxed);
                    if seen == STATIC {
                        return if k == want { Learn::Known } else { Learn::Static };
                    }
                    if k == want {
                        if now.saturating_sub(seen) >= REFRESH_MS {
                            s.seen.store(now, Relaxed);
                        }
                        return Learn::Known;
                    }
                    if s.key.compare_exchange(k, want, AcqRel, Acquire).is_ok() {
                        s.seen.store(now, Relaxed);
                        return Learn::Moved { from: k as PortId };
                    }
                    return Learn::Known;
                }
                if stale.is_none() && self.expired(s.seen.load(Relaxed), now) {
                    stale = Some((s, k));
                }
            }
            if let Some((s, k)) = stale {
                // Reuse an expired slot: the number of live entries is unchanged.
                s.seen.store(now, Relaxed);
                if s.key.compare_exchange(k, want, AcqRel, Acquire).is_ok() {
                    return Learn::Learned;
                }
                continue;
            }
            let Some(s) = free else { return Learn::Full };
            // Check before reserving: a full table under a flood of new
            // MACs must not bounce the counter's cache line between workers.
            if self.live.load(Relaxed) >= self.capacity {
                return Learn::Full;
            }
            if self.live.fetch_add(1, AcqRel) >= self.capacity {
                self.live.fetch_sub(1, AcqRel);
                return Learn::Full;
            }
            s.seen.store(now, Relaxed);
            if s.key.compare_exchange(0, want, AcqRel, Acquire).is_ok() {
                return Learn::Learned;
            }
            self.live.fetch_sub(1, AcqRel);
        }
        Learn::Full
    }

    /// Remove entries not seen for longer than the ageing time. Called by the
    /// control plane about once a second; returns how many it removed.
    pub fn sweep(&self, now: u64) -> usize {
        self.remove_where(|_, seen| self.expired(seen, now))
    }

    /// Remove every entry that points at `port` (the port is going away).
    pub fn flush_port(&self, port: PortId) -> usize {
        self.remove_where(|k, _| k as PortId == port)
    }

    /// Remove every entry.
    pub fn flush(&self) -> usize {
        self.remove_where(|_, _| true)
    }

    /// Remove the dynamic entries matching `pred(key, seen)`; static ones
    /// stay.
    fn remove_where(&self, pred: impl Fn(u64, u64) -> bool) -> usize {
        let mut n = 0;
        for s in self.slots.iter() {
            let k = s.key.load(Acquire);
            let seen = s.seen.load(Relaxed);
            if k != 0 && seen != STATIC && pred(k, seen) && s.key.compare_exchange(k, 0, AcqRel, Acquire).is_ok() {
                self.live.fetch_sub(1, AcqRel);
                n += 1;
            }
        }
        n
    }

    /// Pin `mac` to `port`: a static entry that never ages and that no frame
    /// can move. A dynamic entry for the MAC is replaced; if the MAC's window
    /// is full, a dynamic entry in it is evicted. False only if the window
    /// holds nothing but static entries. Control plane only.
    pub fn insert_static(&self, mac: MacAddr, port: PortId) -> bool {
        let m = mac.to_u64();
        if m == 0 {
            return false;
        }
        let want = pack(m, port);
        let mut victim = None;
        for s in self.window(m) {
            let k = s.key.load(Acquire);
            if k >> 16 == m || k == 0 {
                victim = Some(s);
                break;
            }
            if victim.is_none() && s.seen.load(Relaxed) != STATIC {
                victim = Some(s);
            }
        }
        let Some(s) = victim else { return false };
        let old = s.key.swap(want, AcqRel);
        let was_static = s.seen.swap(STATIC, AcqRel) == STATIC;
        if old != 0 && !was_static {
            self.live.fetch_sub(1, AcqRel);
        }
        true
    }

    /// Remove the static entry for `mac`, if any. Control plane only.
    pub fn remove_static(&self, mac: MacAddr) -> bool {
        let m = mac.to_u64();
        for s in self.window(m) {
            let k = s.key.load(Acquire);
            if k != 0 && k >> 16 == m && s.seen.load(Relaxed) == STATIC {
                s.key.store(0, Release);
                s.seen.store(0, Relaxed);
                return true;
            }
        }
        false
    }

    /// A snapshot of the live, unexpired entries, sorted by port then MAC.
    pub fn entries(&self, now: u64) -> Vec<FdbEntry> {
        let mut v: Vec<FdbEntry> = self
            .slots
            .iter()
            .filter_map(|s| {
                let k = s.key.load(Acquire);
                let seen = s.seen.load(Relaxed);
                (k != 0 && !self.expired(seen, now)).then(|| FdbEntry {
                    mac: MacAddr::from_u64(k >> 16),
                    port: k as PortId,
                    age_ms: now.saturating_sub(seen),
                    is_static: seen == STATIC,
                })
            })
            .collect();
        v.sort_by_key(|e| (e.port, e.mac));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u64) -> MacAddr {
        MacAddr::from_u64(0x0242_0a58_0000 | i)
    }

    #[test]
    fn learn_lookup_move_age() {
        let f = Fdb::new(16, 300_000);
        assert_eq!(f.lookup(mac(2), 0), None);
        assert_eq!(f.learn(mac(2), 1, 0), Learn::Learned);
        assert_eq!(f.learn(mac(2), 1, 10), Learn::Known);
        assert_eq!(f.lookup(mac(2), 10), Some(1));
        assert_eq!(f.learn(mac(2), 4, 20), Learn::Moved { from: 1 });
        assert_eq!(f.lookup(mac(2), 20), Some(4));
        assert_eq!(f.len(), 1);
        // Expires strictly after the ageing time.
        assert_eq!(f.lookup(mac(2), 20 + 300_000), Some(4));
        assert_eq!(f.lookup(mac(2), 21 + 300_000), None);
        assert_eq!(f.entries(21 + 300_000), vec![]);
        assert_eq!(f.sweep(21 + 300_000), 1);
        assert!(f.is_empty());
    }

    #[test]
    fn refresh_is_rate_limited_but_keeps_entries_alive() {
        let f = Fdb::new(16, 5_000);
        f.learn(mac(1), 0, 0);
        f.learn(mac(1), 0, 500); // too soon: not written
        assert_eq!(f.entries(500)[0].age_ms, 500);
        f.learn(mac(1), 0, 4_000);
        assert_eq!(f.lookup(mac(1), 8_000), Some(0));
        assert_eq!(f.entries(8_000)[0].age_ms, 4_000);
    }

    #[test]
    fn bounded_and_full() {
        let f = Fdb::new(100, 300_000);
        let mut full = 0;
        for i in 1..=1000 {
            if f.learn(mac(i), 3, 0) == Learn::Full {
                full += 1;
            }
        }
        assert_eq!(f.len(), 100);
        assert_eq!(full, 900);
        assert!(f.slots.len() <= 256);
        // Every learned MAC is found.
        let found = (1..=1000).filter(|&i| f.lookup(mac(i), 0) == Some(3)).count();
        assert_eq!(found, 100);
        // Once they age out and are swept, learning works again.
        assert_eq!(f.sweep(400_000), 100);
        assert_eq!(f.learn(mac(5000), 1, 400_000), Learn::Learned);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn flush_port_and_zero_mac() {
        let f = Fdb::new(16, 300_000);
        f.learn(mac(1), 1, 0);
        f.learn(mac(2), 2, 0);
        f.learn(mac(3), 1, 0);
        assert_eq!(f.flush_port(1), 2);
        assert_eq!(f.lookup(mac(1), 0), None);
        assert_eq!(f.lookup(mac(2), 0), Some(2));
        assert_eq!(f.learn(MacAddr::ZERO, 1, 0), Learn::Full);
        assert_eq!(f.lookup(MacAddr::ZERO, 0), None);
        let e = f.entries(7);
        assert_eq!(e, vec![FdbEntry { mac: mac(2), port: 2, age_ms: 7, is_static: false }]);
    }

    #[test]
    fn static_entries_cannot_be_moved_aged_or_flushed() {
        let f = Fdb::new(1, 1_000);
        assert_eq!(f.learn(mac(9), 3, 0), Learn::Learned);
        // Pinning a learned MAC replaces the dynamic entry.
        assert!(f.insert_static(mac(9), 0xfffe));
        assert_eq!(f.len(), 0);
        assert_eq!(f.lookup(mac(9), 0), Some(0xfffe));
        // A container sending with the gateway's MAC is refused and moves nothing.
        assert_eq!(f.learn(mac(9), 3, 10), Learn::Static);
        assert_eq!(f.lookup(mac(9), 10), Some(0xfffe));
        // Statics do not count against the bound of 1.
        assert_eq!(f.learn(mac(1), 3, 10), Learn::Learned);
        // Never aged, swept or flushed.
        assert_eq!(f.lookup(mac(9), u64::MAX - 1), Some(0xfffe));
        assert_eq!(f.sweep(10_000_000), 1);
        assert_eq!(f.flush_port(0xfffe), 0);
        assert_eq!(f.flush(), 0);
        let e = f.entries(5);
        assert_eq!(e, vec![FdbEntry { mac: mac(9), port: 0xfffe, age_ms: 0, is_static: true }]);
        assert!(f.remove_static(mac(9)));
        assert_eq!(f.lookup(mac(9), 5), None);
        assert!(!f.remove_static(mac(9)));
    }

    #[test]
    fn concurrent_learning_keeps_bound_and_consistency() {
        let f = std::sync::Arc::new(Fdb::new(500, 300_000));
        let hs: Vec<_> = (0..4u16)
            .map(|t| {
                let f = f.clone();
                std::thread::spawn(move || {
                    for r in 0..50 {
                        for i in 1..=1000 {
                            f.learn(mac(i), t, r);
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert!(f.len() <= 500);
        for e in f.entries(100) {
            assert!(e.port < 4 && e.mac.to_u64() & 0xffff <= 1000);
        }
    }
}
