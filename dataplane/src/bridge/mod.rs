//! The learning bridge: one per network, as docker0 is one Linux bridge.
//!
//! [`decide`] is the whole per-frame policy: it learns the source MAC, looks
//! up the destination and returns a [`Verdict`]. It does no I/O and never
//! allocates, so it is unit-tested on real frame bytes with an injected clock
//! and benchmarked on its own. The worker applies the verdict.
//!
//! Behaviour, following IEEE 802.1D and the Linux bridge:
//! - the source MAC is learned against the ingress port; a MAC seen on a new
//!   port moves there; frames with a multicast or zero source are dropped;
//! - known unicast goes to exactly one port, and never back out of the port
//!   it came in on;
//! - broadcast, multicast and unknown unicast are flooded to every other port
//!   of the same network (flooding is the worker's job: it owns the ports);
//! - link-local groups 01:80:c2:00:00:0X are not forwarded;
//! - a static entry (the gateway's MAC) cannot be taken over: a frame from
//!   another port with that source MAC is dropped;
//! - entries age out ([`fdb::DEFAULT_AGEING_MS`]) and the table is bounded;
//! - a container port learns at most [`Fdb::port_limit`] MACs
//!   (`--max-macs-per-port`); a frame from a MAC new to a port at its limit
//!   is dropped (`mac_limit`), not flooded: one container cannot fill the
//!   table (and so make every new flow a flood) with made-up source MACs.
//!   Ports of remote VTEPs carry many MACs and are not limited.
//!
//! [`portsec`] is the optional stage before this one (`--port-security`).

pub mod fdb;
pub mod portsec;

pub use fdb::{Fdb, FdbEntry, Learn};
pub use portsec::Pin;

use crate::port::PortId;
use crate::stats::{BridgeEvent, DropReason, NetId, WorkerStats};
use crate::wire::EthernetFrame;

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send to this port only.
    Forward(PortId),
    /// Send to every port of the network except the ingress port.
    Flood,
    /// Drop, counted under this reason.
    Drop(DropReason),
}

/// Bridge events of one batch, counted locally and added to the worker's
/// counters once per batch.
#[derive(Debug, Default, Clone)]
pub struct Tally(pub [u32; BridgeEvent::COUNT]);

impl Tally {
    #[inline]
    fn inc(&mut self, e: BridgeEvent) {
        self.0[e as usize] += 1;
    }
    pub fn get(&self, e: BridgeEvent) -> u32 {
        self.0[e as usize]
    }
    /// Add the tally to `stats` for `net` and reset it.
    pub fn flush(&mut self, stats: &WorkerStats, net: NetId) {
        for (i, n) in self.0.iter_mut().enumerate() {
            if *n != 0 {
                stats.bridge[net as usize][i].add(*n as u64);
                *n = 0;
            }
        }
    }
}

/// Decide what happens to `frame` (an Ethernet frame, no virtio-net header)
/// that arrived on `ingress` at time `now` (milliseconds, any epoch shared
/// with the table), with no limit on the port's MACs (a remote VTEP).
#[inline]
pub fn decide(fdb: &Fdb, ingress: PortId, frame: &[u8], now: u64, tally: &mut Tally) -> Verdict {
    decide_limited(fdb, ingress, frame, 0, now, tally)
}

/// [`decide`] for a port that may have at most `limit` MACs in the table
/// (0: no limit): a container's port, with `limit` = [`Fdb::port_limit`].
#[inline]
pub fn decide_limited(fdb: &Fdb, ingress: PortId, frame: &[u8], limit: u32, now: u64, tally: &mut Tally) -> Verdict {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Verdict::Drop(DropReason::Runt);
    };
    let src = eth.src();
    if !src.is_unicast() {
        return Verdict::Drop(DropReason::BadSrcMac);
    }
    let dst = eth.dst();
    if dst.is_link_local() {
        return Verdict::Drop(DropReason::LinkLocalDst);
    }
    match fdb.learn_limited(src, ingress, limit, now) {
        Learn::Known => {}
        Learn::Learned => tally.inc(BridgeEvent::Learned),
        Learn::Moved { .. } => tally.inc(BridgeEvent::Moved),
        Learn::Full => tally.inc(BridgeEvent::TableFull),
        Learn::Static => {
            tally.inc(BridgeEvent::StaticConflict);
            return Verdict::Drop(DropReason::StaticMac);
        }
        Learn::PortFull => {
            tally.inc(BridgeEvent::MacLimit);
            return Verdict::Drop(DropReason::MacLimit);
        }
    }
    if dst.is_multicast() {
        tally.inc(BridgeEvent::Flooded);
        return Verdict::Flood;
    }
    match fdb.lookup(dst, now) {
        Some(p) if p == ingress => Verdict::Drop(DropReason::DstIsIngress),
        Some(p) => Verdict::Forward(p),
        None => {
            tally.inc(BridgeEvent::UnknownUnicast);
            tally.inc(BridgeEvent::Flooded);
            Verdict::Flood
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;

    const A: [u8; 6] = [0x02, 0x42, 0x0a, 0x58, 0x00, 0x02];
    const B: [u8; 6] = [0x02, 0x42, 0x0a, 0x58, 0x00, 0x03];
    const BCAST: [u8; 6] = [0xff; 6];

    /// An Ethernet frame as it crosses a TAP: ARP (broadcast) or IPv4 (unicast).
    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        if dst == BCAST {
            // ARP request who-has 10.88.0.3 tell 10.88.0.2 (RFC 826).
            f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01]);
            f.extend_from_slice(&src);
            f.extend_from_slice(&[10, 88, 0, 2, 0, 0, 0, 0, 0, 0, 10, 88, 0, 3]);
        } else {
            // IPv4 header of an ICMP echo 10.88.0.2 -> 10.88.0.3, then 8 bytes of ICMP.
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend_from_slice(&[
                0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 88, 0, 2, 10, 88, 0, 3,
                0x08, 0x00, 0xf7, 0xfe, 0x00, 0x01, 0x00, 0x00,
            ]);
        }
        f
    }

    #[test]
    fn learn_then_forward() {
        let fdb = Fdb::new(64, 300_000);
        let mut t = Tally::default();
        // A broadcasts from port 1: learned, flooded.
        assert_eq!(decide(&fdb, 1, &frame(BCAST, A), 0, &mut t), Verdict::Flood);
        assert_eq!(t.get(BridgeEvent::Learned), 1);
        // B answers A from port 2: B learned, A known -> port 1 only.
        assert_eq!(decide(&fdb, 2, &frame(A, B), 1, &mut t), Verdict::Forward(1));
        // A to B: known unicast -> port 2.
        assert_eq!(decide(&fdb, 1, &frame(B, A), 2, &mut t), Verdict::Forward(2));
        assert_eq!(t.get(BridgeEvent::Learned), 2);
        assert_eq!(t.get(BridgeEvent::Flooded), 1);
        assert_eq!(t.get(BridgeEvent::UnknownUnicast), 0);
    }

    #[test]
    fn unknown_unicast_and_multicast_flood() {
        let fdb = Fdb::new(64, 300_000);
        let mut t = Tally::default();
        assert_eq!(decide(&fdb, 1, &frame(B, A), 0, &mut t), Verdict::Flood);
        assert_eq!(t.get(BridgeEvent::UnknownUnicast), 1);
        let mut mcast = frame(B, A);
        mcast[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]); // mDNS group
        assert_eq!(decide(&fdb, 1, &mcast, 0, &mut t), Verdict::Flood);
        assert_eq!(t.get(BridgeEvent::UnknownUnicast), 1);
        assert_eq!(t.get(BridgeEvent::Flooded), 2);
    }

    #[test]
    fn never_back_out_of_ingress() {
        let fdb = Fdb::new(64, 300_000);
        let mut t = Tally::default();
        decide(&fdb, 1, &frame(BCAST, A), 0, &mut t);
        decide(&fdb, 1, &frame(BCAST, B), 0, &mut t);
        // A and B both behind port 1: A->B stays there.
        assert_eq!(decide(&fdb, 1, &frame(B, A), 0, &mut t), Verdict::Drop(DropReason::DstIsIngress));
    }

    #[test]
    fn mac_moves_to_new_port() {
        let fdb = Fdb::new(64, 300_000);
        let mut t = Tally::default();
        decide(&fdb, 1, &frame(BCAST, A), 0, &mut t);
        decide(&fdb, 3, &frame(A, B), 0, &mut t);
        assert_eq!(decide(&fdb, 2, &frame(B, A), 5, &mut t), Verdict::Forward(3));
        assert_eq!(t.get(BridgeEvent::Moved), 1);
        assert_eq!(decide(&fdb, 3, &frame(A, B), 6, &mut t), Verdict::Forward(2));
    }

    #[test]
    fn ages_out_with_injected_clock() {
        let fdb = Fdb::new(64, 10_000);
        let mut t = Tally::default();
        decide(&fdb, 1, &frame(BCAST, A), 0, &mut t);
        assert_eq!(decide(&fdb, 2, &frame(A, B), 10_000, &mut t), Verdict::Forward(1));
        assert_eq!(decide(&fdb, 2, &frame(A, B), 10_001, &mut t), Verdict::Flood);
    }

    #[test]
    fn full_table_stops_learning_but_forwards() {
        let fdb = Fdb::new(2, 300_000);
        let mut t = Tally::default();
        for i in 0..10u8 {
            let src = [0x02, 0, 0, 0, 1, i];
            assert_eq!(decide(&fdb, 1, &frame(BCAST, src), 0, &mut t), Verdict::Flood);
        }
        assert_eq!(fdb.len(), 2);
        assert_eq!(t.get(BridgeEvent::Learned), 2);
        assert_eq!(t.get(BridgeEvent::TableFull), 8);
        // An unlearned source still gets its unicast flooded.
        assert_eq!(decide(&fdb, 2, &frame([0x02, 0, 0, 0, 1, 9], B), 0, &mut t), Verdict::Flood);
    }

    #[test]
    fn malformed_frames_dropped_by_reason() {
        let fdb = Fdb::new(64, 300_000);
        let mut t = Tally::default();
        let f = frame(B, A);
        for len in 0..14 {
            assert_eq!(decide(&fdb, 1, &f[..len], 0, &mut t), Verdict::Drop(DropReason::Runt));
        }
        assert_eq!(decide(&fdb, 1, &frame(A, BCAST), 0, &mut t), Verdict::Drop(DropReason::BadSrcMac));
        assert_eq!(decide(&fdb, 1, &frame(A, [0; 6]), 0, &mut t), Verdict::Drop(DropReason::BadSrcMac));
        let stp = frame([0x01, 0x80, 0xc2, 0, 0, 0], A);
        assert_eq!(decide(&fdb, 1, &stp, 0, &mut t), Verdict::Drop(DropReason::LinkLocalDst));
        assert!(fdb.lookup(MacAddr(BCAST), 0).is_none());
        assert!(fdb.is_empty());
    }

    #[test]
    fn static_gateway_mac_cannot_be_spoofed() {
        let fdb = Fdb::new(64, 300_000);
        let mut t = Tally::default();
        assert!(fdb.insert_static(MacAddr(B), 0xfffe));
        // Unicast to the gateway MAC goes to the gateway's (virtual) port.
        assert_eq!(decide(&fdb, 1, &frame(B, A), 0, &mut t), Verdict::Forward(0xfffe));
        // A container sending with the gateway's MAC as source is dropped.
        assert_eq!(decide(&fdb, 1, &frame(A, B), 0, &mut t), Verdict::Drop(DropReason::StaticMac));
        assert_eq!(t.get(BridgeEvent::StaticConflict), 1);
        assert_eq!(fdb.lookup(MacAddr(B), 0), Some(0xfffe));
    }

    #[test]
    fn a_port_at_its_mac_limit_drops_new_sources_and_forwards_known_ones() {
        let fdb = Fdb::new(64, 300_000);
        let mut t = Tally::default();
        // Port 1 floods made-up source MACs; the limit is 2.
        for i in 0..10u8 {
            let src = [0x02, 0, 0, 0, 1, i];
            let want = if i < 2 { Verdict::Flood } else { Verdict::Drop(DropReason::MacLimit) };
            assert_eq!(decide_limited(&fdb, 1, &frame(B, src), 2, 0, &mut t), want, "MAC {i}");
        }
        assert_eq!((fdb.len(), fdb.port_len(1)), (2, 2));
        assert_eq!((t.get(BridgeEvent::Learned), t.get(BridgeEvent::MacLimit)), (2, 8));
        // Its first MACs still pass; other ports are unaffected.
        assert_eq!(decide_limited(&fdb, 1, &frame(BCAST, [0x02, 0, 0, 0, 1, 0]), 2, 1, &mut t), Verdict::Flood);
        assert_eq!(decide_limited(&fdb, 2, &frame(BCAST, A), 2, 1, &mut t), Verdict::Flood);
        assert_eq!(decide_limited(&fdb, 3, &frame(A, B), 2, 1, &mut t), Verdict::Forward(2));
        // A dropped frame was neither learned nor flooded.
        assert_eq!(t.get(BridgeEvent::Flooded), 4);
        assert_eq!(fdb.lookup(MacAddr([0x02, 0, 0, 0, 1, 5]), 1), None);
    }

    #[test]
    fn tally_flushes_to_worker_stats() {
        let stats = WorkerStats::default();
        let fdb = Fdb::new(64, 300_000);
        let mut t = Tally::default();
        decide(&fdb, 1, &frame(BCAST, A), 0, &mut t);
        t.flush(&stats, 3);
        assert_eq!(stats.bridge[3][BridgeEvent::Learned as usize].get(), 1);
        assert_eq!(t.get(BridgeEvent::Learned), 0);
    }
}
