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
//! Entries per port: the table counts the entries of every port (static
//! ones included; the gateway's virtual port, beyond [`MAX_PORTS`], is not
//! counted), so that [`Fdb::learn_limited`] can refuse a port's new MACs
//! beyond its limit (`--max-macs-per-port`) in O(1). Every change of a
//! slot's key is one atomic read-modify-write (compare-and-swap or swap)
//! whose old value is known, and the counts follow those changes exactly:
//! the new key's port is counted (reserved) before the key is written and
//! released if the write loses, the old key's port is released after its
//! key is gone. A count is therefore never below the entries it counts, and
//! between changes it equals them: learning, moving, reusing an expired
//! slot, sweeping, flushing and static entries cannot make it drift. The
//! count includes expired entries not yet swept (the daemon sweeps every
//! second).
//!
//! Accepted races: two workers learning the same new MAC at the same instant
//! may each claim a slot; lookups and later learning use the first one and
//! the duplicate ages out. A reader may briefly see a new key with the old
//! slot's `seen`, which can only make it flood one frame.
//!
//! About 440 lines of code; the rest are tests (ageing, moves, limits,
//! concurrency).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use crate::port::PortId;
use crate::stats::MAX_PORTS;
use crate::wire::MacAddr;

/// Slots scanned per MAC.
pub const PROBE: usize = 8;
/// `seen` is rewritten at most this often per entry.
pub const REFRESH_MS: u64 = 1000;
/// Default ageing time, as for the Linux bridge and Open vSwitch.
pub const DEFAULT_AGEING_MS: u64 = 300_000;
/// Default bound on entries per network.
pub const DEFAULT_CAPACITY: usize = 8192;
/// Default limit of MACs a container port may have in the table
/// (`--max-macs-per-port`): a container normally sends from one MAC; 64
/// leaves room for bridges, macvlan or nested containers inside it, and 128
/// ports at their limit still fill no more than the default table.
pub const DEFAULT_MAX_MACS_PER_PORT: u32 = 64;
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
    /// The MAC is new to the port (unknown, or known on another port) and
    /// the port already has as many entries as its limit allows: refused,
    /// nothing changed.
    PortFull,
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
    /// Entries per port, indexed by port id (see the module's documentation).
    per_port: Box<[AtomicU32]>,
    /// The limit on container ports' entries (0: none), which the worker
    /// passes to [`Fdb::learn_limited`] for access ports; set by the
    /// control plane.
    port_limit: AtomicU32,
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
            per_port: (0..MAX_PORTS).map(|_| AtomicU32::new(0)).collect(),
            port_limit: AtomicU32::new(0),
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
    /// The limit of entries a container (access) port may have (0: none).
    #[inline]
    pub fn port_limit(&self) -> u32 {
        self.port_limit.load(Relaxed)
    }
    /// Set the limit of entries per container port (0: none). Ports already
    /// beyond it keep their entries, and learn no new MAC until they age out.
    pub fn set_port_limit(&self, limit: u32) {
        self.port_limit.store(limit, Relaxed)
    }
    /// Entries pointing at `port`, static ones and expired ones not yet
    /// swept included (0 for ports that are not counted).
    pub fn port_len(&self, port: PortId) -> usize {
        self.per_port.get(port as usize).map_or(0, |c| c.load(Relaxed) as usize)
    }

    /// Whether `port` has `limit` entries or more (0: no limit).
    #[inline]
    fn at_limit(&self, port: PortId, limit: u32) -> bool {
        limit != 0 && self.per_port.get(port as usize).is_some_and(|c| c.load(Relaxed) >= limit)
    }

    /// Count one more entry for `port` before its key is written; false
    /// (and nothing counted) if that would take it beyond `limit` (0: no
    /// limit).
    #[inline]
    fn reserve(&self, port: PortId, limit: u32) -> bool {
        let Some(c) = self.per_port.get(port as usize) else { return true };
        if limit == 0 {
            c.fetch_add(1, AcqRel);
            return true;
        }
        // Look before writing: a port at its limit under a flood of new
        // MACs must not bounce the counter's cache line between workers.
        // A compare-and-swap (not an add undone on failure) so that the
        // count never exceeds the limit, even for an instant.
        let mut cur = c.load(Relaxed);
        loop {
            if cur >= limit {
                return false;
            }
            match c.compare_exchange_weak(cur, cur + 1, AcqRel, Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Count one entry fewer for the port of `key` (its key is gone, or a
    /// reservation was not used).
    #[inline]
    fn release(&self, key: u64) {
        if let Some(c) = self.per_port.get(key as PortId as usize) {
            c.fetch_sub(1, AcqRel);
        }
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

    /// Record that `mac` was seen as a source on `port` at `now`, with no
    /// limit on the port's entries.
    #[inline]
    pub fn learn(&self, mac: MacAddr, port: PortId, now: u64) -> Learn {
        self.learn_limited(mac, port, 0, now)
    }

    /// Record that `mac` was seen as a source on `port` at `now`; a MAC new
    /// to the port is refused ([`Learn::PortFull`]) when the port already
    /// has `limit` entries (0: no limit). A MAC already on the port is
    /// always refreshed.
    #[inline]
    pub fn learn_limited(&self, mac: MacAddr, port: PortId, limit: u32, now: u64) -> Learn {
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
                    // A move is a new MAC for this port.
                    if !self.reserve(port, limit) {
                        return Learn::PortFull;
                    }
                    if s.key.compare_exchange(k, want, AcqRel, Acquire).is_ok() {
                        s.seen.store(now, Relaxed);
                        self.release(k);
                        return Learn::Moved { from: k as PortId };
                    }
                    self.release(want);
                    return Learn::Known;
                }
                if stale.is_none() && self.expired(s.seen.load(Relaxed), now) {
                    stale = Some((s, k));
                }
            }
            // A MAC new to the table: refused at the port's limit before
            // anything is written, even when the table has no room either.
            if self.at_limit(port, limit) {
                return Learn::PortFull;
            }
            if let Some((s, k)) = stale {
                // Reuse an expired slot: the number of live entries is
                // unchanged; the expired entry's port has one fewer.
                if !self.reserve(port, limit) {
                    return Learn::PortFull;
                }
                s.seen.store(now, Relaxed);
                if s.key.compare_exchange(k, want, AcqRel, Acquire).is_ok() {
                    self.release(k);
                    return Learn::Learned;
                }
                self.release(want);
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
            if !self.reserve(port, limit) {
                self.live.fetch_sub(1, AcqRel);
                return Learn::PortFull;
            }
            s.seen.store(now, Relaxed);
            if s.key.compare_exchange(0, want, AcqRel, Acquire).is_ok() {
                return Learn::Learned;
            }
            self.live.fetch_sub(1, AcqRel);
            self.release(want);
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
                self.release(k);
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
        self.reserve(port, 0);
        let old = s.key.swap(want, AcqRel);
        let was_static = s.seen.swap(STATIC, AcqRel) == STATIC;
        if old != 0 {
            self.release(old);
            if !was_static {
                self.live.fetch_sub(1, AcqRel);
            }
        }
        true
    }

    /// Remove the static entry for `mac`, if any. Control plane only.
    pub fn remove_static(&self, mac: MacAddr) -> bool {
        let m = mac.to_u64();
        for s in self.window(m) {
            let k = s.key.load(Acquire);
            if k != 0 && k >> 16 == m && s.seen.load(Relaxed) == STATIC {
                // `seen` stays: a free slot's is never read, and resetting it
                // could clobber that of a MAC learned into the slot meanwhile.
                if s.key.compare_exchange(k, 0, AcqRel, Acquire).is_err() {
                    return false;
                }
                self.release(k);
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

    /// Entries on `port` counted slot by slot (expired ones included), to
    /// check the table's own count against.
    fn scan_port_len(f: &Fdb, port: PortId) -> usize {
        f.slots.iter().filter(|s| matches!(s.key.load(Acquire), k if k != 0 && k as PortId == port)).count()
    }

    fn assert_counts_exact(f: &Fdb, ports: impl IntoIterator<Item = PortId>) {
        for p in ports {
            assert_eq!(f.port_len(p), scan_port_len(f, p), "port {p}");
        }
    }

    #[test]
    fn a_port_at_its_limit_learns_no_new_mac_but_refreshes_its_own() {
        let f = Fdb::new(256, 300_000);
        for i in 1..=3 {
            assert_eq!(f.learn_limited(mac(i), 1, 3, 0), Learn::Learned);
        }
        assert_eq!(f.port_len(1), 3);
        // A fourth MAC is refused and leaves no trace.
        assert_eq!(f.learn_limited(mac(4), 1, 3, 0), Learn::PortFull);
        assert_eq!(f.lookup(mac(4), 0), None);
        assert_eq!((f.len(), f.port_len(1)), (3, 3));
        // Known MACs always pass, refreshed as usual.
        for i in 1..=3 {
            assert_eq!(f.learn_limited(mac(i), 1, 3, 5_000), Learn::Known);
        }
        assert_eq!(f.entries(5_000)[0].age_ms, 0);
        // Other ports are not affected; no limit is no limit.
        assert_eq!(f.learn_limited(mac(5), 2, 3, 0), Learn::Learned);
        for i in 10..100 {
            assert_eq!(f.learn_limited(mac(i), 3, 0, 0), Learn::Learned);
        }
        assert_eq!(f.port_len(3), 90);
        // A MAC moving into a port at its limit is refused and stays where
        // it was; moving one out makes room.
        assert_eq!(f.learn_limited(mac(5), 1, 3, 10), Learn::PortFull);
        assert_eq!(f.lookup(mac(5), 10), Some(2));
        assert_eq!(f.learn_limited(mac(1), 2, 3, 10), Learn::Moved { from: 1 });
        assert_eq!((f.port_len(1), f.port_len(2)), (2, 2));
        assert_eq!(f.learn_limited(mac(5), 1, 3, 10), Learn::Moved { from: 2 });
        assert_eq!((f.port_len(1), f.port_len(2)), (3, 1));
        assert_counts_exact(&f, 0..8);
    }

    #[test]
    fn port_counts_follow_ageing_sweeps_flushes_and_static_entries() {
        let f = Fdb::new(16, 1_000);
        for i in 1..=4 {
            f.learn_limited(mac(i), 1, 4, 0);
        }
        assert_eq!(f.port_len(1), 4);
        // Expired but not swept: still counted, so still at the limit...
        assert_eq!(f.learn_limited(mac(9), 1, 4, 5_000), Learn::PortFull);
        // ... until the sweep frees them.
        assert_eq!(f.sweep(5_000), 4);
        assert_eq!(f.port_len(1), 0);
        assert_eq!(f.learn_limited(mac(9), 1, 4, 5_000), Learn::Learned);
        f.learn(mac(10), 2, 5_000);
        f.learn(mac(11), 2, 5_000);
        assert_eq!(f.flush_port(2), 2);
        assert_eq!((f.port_len(1), f.port_len(2)), (1, 0));
        // Static entries count for their port; replacing a dynamic entry
        // moves the count; the gateway's virtual port is not counted.
        assert!(f.insert_static(mac(9), 3));
        assert_eq!((f.port_len(1), f.port_len(3)), (0, 1));
        assert!(f.insert_static(mac(20), crate::port::GATEWAY_PORT));
        assert_eq!(f.port_len(crate::port::GATEWAY_PORT), 0);
        assert_eq!(f.flush(), 0);
        assert!(f.remove_static(mac(9)));
        assert_eq!(f.port_len(3), 0);
        assert_counts_exact(&f, 0..8);
    }

    #[test]
    fn reusing_an_expired_slot_moves_its_count_to_the_new_port() {
        // Room for one entry: once mac(1) on port 1 has expired, a new MAC
        // is learned only by reusing its slot (a MAC whose window holds it).
        let f = Fdb::new(1, 1_000);
        assert_eq!(f.learn(mac(1), 1, 0), Learn::Learned);
        let reused = (2..1000).find(|&i| f.learn_limited(mac(i), 2, 5, 5_000) == Learn::Learned).expect("a MAC");
        assert_eq!(f.lookup(mac(reused), 5_000), Some(2));
        assert_eq!((f.port_len(1), f.port_len(2), f.len()), (0, 1, 1));
        assert_counts_exact(&f, 0..4);
    }

    #[test]
    fn port_counts_never_drift_under_concurrent_learning_moves_sweeps_and_flushes() {
        // (Static entries are made by the control plane only, between
        // frames; the test above covers their counts.)
        const LIMIT: u32 = 20;
        let f = std::sync::Arc::new(Fdb::new(256, 50));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let learners: Vec<_> = (0..4u64)
            .map(|t| {
                let f = f.clone();
                std::thread::spawn(move || {
                    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
                    for round in 0..200_000u64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // 400 MACs over 8 ports: moves, refreshes, ageing.
                        let (m, p) = (1 + x % 400, ((x >> 20) % 8) as PortId);
                        let limit = if p < 4 { LIMIT } else { 0 };
                        f.learn_limited(mac(m), p, limit, round / 100);
                        assert!(f.port_len(p) <= LIMIT as usize || p >= 4);
                    }
                })
            })
            .collect();
        let janitor = {
            let (f, stop) = (f.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Relaxed) {
                    f.sweep(i);
                    if i.is_multiple_of(7) {
                        f.flush_port((i % 8) as PortId);
                    }
                    i += 1;
                }
            })
        };
        for h in learners {
            h.join().unwrap();
        }
        stop.store(true, Relaxed);
        janitor.join().unwrap();
        assert_counts_exact(&f, 0..16);
        for p in 0..4 {
            assert!(f.port_len(p) <= LIMIT as usize);
        }
        // Everything removed: every count back to zero.
        f.flush();
        for p in 0..16 {
            assert_eq!(f.port_len(p), 0, "port {p}");
        }
        assert!(f.is_empty());
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
