//! One batch through the stages, and what the worker does with each
//! decision.
//!
//! A batch read from an access port (a container's TAP) goes through the
//! learning bridge first ([`classify_batch`]); frames addressed to the
//! network's gateway then go through the router. A batch read from the
//! uplink goes straight to the router. Each stage runs over the whole batch
//! before the next one starts, then every frame's [`Action`] is carried out.
//! The only system calls are the reads and writes of the ports.

use crate::bridge::{self, Fdb, Pin, Tally, Verdict};
use crate::packet::PacketBuf;
use crate::port::{PortId, PortQueue, GATEWAY_PORT};
use crate::router::{Action, Neighbour};
use crate::stats::{DropReason, RouterEvent, WorkerStats};
use crate::wire::{EthernetFrame, MacAddr};

use super::handoff::{Handed, Resume};
use super::{Pending, PortRole, WNet, WPort, Worker, BATCH, PENDING_MAX, PENDING_MS};

/// The bridge stage over a batch from access port `ingress`: check the
/// port's pinned addresses (`pin`, with `--port-security`), learn within
/// the port's MAC limit, look up, decide. `actions[i]` is for `bufs[i]`.
/// With `icc` false (`--icc=false`) frames from one container to another
/// are dropped and only the gateway is reachable. Returns the Ethernet
/// bytes of the batch.
///
/// This is the worker's per-packet path up to the router: public so the
/// criterion benches measure the very code the worker runs.
#[doc(hidden)]
#[inline]
#[allow(clippy::too_many_arguments)] // the batch's inputs, each a plain borrow
pub fn classify_batch(
    fdb: &Fdb,
    icc: bool,
    ingress: PortId,
    pin: Option<&Pin>,
    bufs: &[PacketBuf],
    now: u64,
    actions: &mut [Action],
    tally: &mut Tally,
) -> u64 {
    let mut rx_bytes = 0;
    let limit = fdb.port_limit();
    for (b, a) in bufs.iter().zip(actions.iter_mut()) {
        rx_bytes += b.len() as u64;
        if let (Some(pin), Ok(eth)) = (pin, EthernetFrame::new_checked(b.frame())) {
            if let Err(r) = pin.check(&eth) {
                *a = Action::Drop(r);
                continue;
            }
        }
        *a = match bridge::decide_limited(fdb, ingress, b.frame(), limit, now, tally) {
            Verdict::Forward(GATEWAY_PORT) => Action::Gateway,
            Verdict::Forward(_) if !icc => Action::Drop(DropReason::IccBlocked),
            Verdict::Forward(p) => Action::Forward(p),
            Verdict::Flood => Action::Flood,
            Verdict::Drop(r) => Action::Drop(r),
        };
    }
    rx_bytes
}

impl Worker {
    /// Run the `n` frames just read from `ingress` through the stages and
    /// carry out the actions.
    pub(super) fn process(&mut self, ingress: PortId, n: usize) {
        let now = self.clock.now_ms();
        let Worker { stats, id, ports, nets, bufs, actions, tally, router, largest, .. } = self;
        let stats = &stats.workers[*id];
        stats.frames.add(n as u64);
        let Some(port) = ports[ingress as usize].as_ref() else { return };
        let pc = &stats.ports[ingress as usize];
        pc.rx_packets.add(n as u64);
        *largest = (*largest).max(bufs[..n].iter().map(PacketBuf::len).max().unwrap_or(0));
        match port.role {
            PortRole::Access(net) => {
                let Some(wnet) = nets[net as usize].as_ref() else {
                    stats.drops[DropReason::NoNetwork as usize].add(n as u64);
                    pc.rx_dropped.add(n as u64);
                    return;
                };
                for b in bufs[..n].iter_mut() {
                    b.meta.net = net;
                }
                let icc = wnet.cfg.as_ref().is_none_or(|c| c.icc);
                let pin = port.pin.as_ref();
                let rx_bytes = classify_batch(&wnet.fdb, icc, ingress, pin, &bufs[..n], now, &mut actions[..n], tally);
                pc.rx_bytes.add(rx_bytes);
                tally.flush(stats, net);
                for i in 0..n {
                    if actions[i] == Action::Gateway {
                        actions[i] = match wnet.cfg.as_deref() {
                            Some(cfg) => router.from_net(cfg, &mut bufs[i], now, stats),
                            None => Action::Drop(DropReason::NoRoute),
                        };
                    }
                }
            }
            PortRole::Tunnel => {
                pc.rx_bytes.add(bufs[..n].iter().map(|b| b.len() as u64).sum());
                self.tunnel_input(ingress, n, now);
                return;
            }
            PortRole::Vtep { .. } => return,
            PortRole::Uplink => {
                let mut rx_bytes = 0;
                for i in 0..n {
                    rx_bytes += bufs[i].len() as u64;
                    actions[i] = router.from_uplink(&mut bufs[i], now, stats);
                }
                pc.rx_bytes.add(rx_bytes);
            }
        }
        self.in_batch = true;
        for i in 0..n {
            let action = self.actions[i];
            self.apply(ingress, i, action, now);
        }
        self.in_batch = false;
        self.flush_deferred();
    }

    /// Send the frames [`Worker::apply`] put aside for ports that batch.
    fn flush_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let stats = &self.stats.workers[self.id];
        let Worker { deferred, bufs, ports, .. } = self;
        deferred.sort_unstable_by_key(|&(p, _)| p);
        let mut at = 0;
        while at < deferred.len() {
            let port = deferred[at].0;
            let end = at + deferred[at..].iter().take_while(|&&(p, _)| p == port).count();
            for &(_, slot) in &deferred[at..end] {
                bufs[slot].write_vnet_hdr();
            }
            let mut frames: [&[u8]; BATCH] = [&[]; BATCH];
            for (k, &(_, slot)) in deferred[at..end].iter().enumerate() {
                frames[k] = bufs[slot].vnet_slice();
            }
            let pc = &stats.ports[port as usize];
            if let Some(q) = ports.get_mut(port as usize).and_then(Option::as_mut).and_then(|p| p.queue.as_mut()) {
                q.send_many(&frames[..end - at], |k, ok| {
                    if ok {
                        pc.tx_packets.inc();
                        pc.tx_bytes.add(frames[k].len().saturating_sub(crate::wire::VNET_HDR_LEN) as u64);
                    } else {
                        stats.drop(DropReason::TxError);
                        pc.tx_dropped.inc();
                    }
                });
            } else {
                stats.drops[DropReason::TxError as usize].add((end - at) as u64);
            }
            at = end;
        }
        deferred.clear();
    }

    /// Carry out `action` for frame `i` of the batch.
    fn apply(&mut self, ingress: PortId, i: usize, action: Action, now: u64) {
        match action {
            Action::Pend(next_hop) => self.pend(i, next_hop, now),
            Action::Handoff(owner) => {
                let resume = match self.ports.get(ingress as usize).and_then(Option::as_ref).map(|p| p.role) {
                    Some(PortRole::Uplink) => Resume::FromUplink,
                    _ => Resume::FromNet,
                };
                self.hand_off(i, owner, resume)
            }
            _ => {}
        }
        if let Action::Forward(out) = action {
            if matches!(
                self.ports.get(out as usize).and_then(Option::as_ref).map(|p| p.role),
                Some(PortRole::Vtep { .. })
            ) {
                return self.send_to_vtep(out, i, now);
            }
        }
        let stats = &self.stats.workers[self.id];
        match action {
            Action::Forward(_) | Action::Reply => {
                let out = if let Action::Forward(p) = action { p } else { ingress };
                let batchable = self.in_batch
                    && self
                        .ports
                        .get(out as usize)
                        .and_then(Option::as_ref)
                        .and_then(|p| p.queue.as_ref())
                        .is_some_and(|q| q.caps().batch);
                if batchable && self.deferred.len() < BATCH {
                    if fits_mtu(&self.ports, out, &self.bufs[i]) {
                        self.deferred.push((out, i));
                    } else {
                        stats.drop(DropReason::Oversize);
                        stats.ports[out as usize].tx_dropped.inc();
                    }
                } else {
                    transmit(&mut self.ports, stats, out, &mut self.bufs[i]);
                }
            }
            Action::Flood => {
                let net = self.bufs[i].meta.net;
                let Some(wnet) = self.nets[net as usize].as_ref() else { return };
                let icc = wnet.cfg.as_ref().is_none_or(|c| c.icc);
                if icc {
                    flood(&mut self.ports, stats, wnet, ingress, &mut self.bufs[i]);
                }
                if let Some(cfg) = wnet.cfg.as_deref() {
                    let for_gateway = self.router.flood_seen(cfg, &self.bufs[i], stats);
                    if !icc && !for_gateway && wnet.ports.len() > 1 {
                        // The other containers would have seen it.
                        stats.drop(DropReason::IccBlocked);
                    }
                }
                if icc && !wnet.vteps.is_empty() {
                    // Head-end replication: a copy to every remote VTEP.
                    let n = wnet.vteps.len();
                    self.flush_emit();
                    for v in 0..n {
                        let Some(vtep) = self.nets[net as usize].as_ref().and_then(|w| w.vteps.get(v).copied()) else {
                            break;
                        };
                        self.send_to_vtep(vtep, i, now);
                    }
                    return;
                }
            }
            Action::Pend(_) | Action::Handoff(_) | Action::Consumed | Action::Gateway => {}
            Action::Drop(reason) => {
                stats.drop(reason);
                stats.ports[ingress as usize].rx_dropped.inc();
            }
        }
        self.flush_emit();
    }

    /// Send what the router emitted besides the frames it was given.
    fn flush_emit(&mut self) {
        if !self.router.emit.is_empty() {
            let stats = &self.stats.workers[self.id];
            let Worker { router, ports, .. } = self;
            router.emit.drain(|port, b| transmit(ports, stats, port, b));
        }
    }

    /// Keep frame `i` until the uplink's next hop is resolved; ask for it.
    fn pend(&mut self, i: usize, next_hop: std::net::Ipv4Addr, now: u64) {
        let stats = &self.stats.workers[self.id];
        if self.router.arp.should_request(next_hop, now) {
            self.router.request_arp(next_hop, stats);
        }
        if self.pending.len() >= PENDING_MAX {
            stats.drop(DropReason::ArpUnresolved);
            return;
        }
        let Some(spare) = self.pool.pop() else {
            stats.drop(DropReason::ArpUnresolved);
            return;
        };
        let buf = std::mem::replace(&mut self.bufs[i], spare);
        self.pending.push(Pending { buf, next_hop, since: now });
        stats.router(RouterEvent::ArpQueued);
    }

    /// Send frames whose next hop is now known; give up on old ones.
    pub(super) fn serve_pending(&mut self) {
        let now = self.clock.now_ms();
        let stats = &self.stats.workers[self.id];
        let Some(uplink) = self.router.cfg.uplink else {
            for p in self.pending.drain(..) {
                stats.drop(DropReason::NoUplink);
                self.pool.push(p.buf);
            }
            return;
        };
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            match self.router.arp.lookup(p.next_hop, now) {
                Neighbour::Reachable(mac) | Neighbour::Stale(mac) => {
                    let mut p = self.pending.swap_remove(i);
                    set_eth_dst(&mut p.buf, mac);
                    transmit(&mut self.ports, stats, uplink.port, &mut p.buf);
                    self.pool.push(p.buf);
                }
                Neighbour::Unknown if now.saturating_sub(p.since) > PENDING_MS => {
                    let p = self.pending.swap_remove(i);
                    stats.drop(DropReason::ArpUnresolved);
                    self.pool.push(p.buf);
                }
                Neighbour::Unknown => {
                    let hop = p.next_hop;
                    if self.router.arp.should_request(hop, now) {
                        self.router.request_arp(hop, stats);
                        let Worker { router, ports, .. } = self;
                        router.emit.drain(|port, b| transmit(ports, stats, port, b));
                    }
                    i += 1;
                }
            }
        }
    }

    /// Hand frame `i` to the worker that owns its flow.
    fn hand_off(&mut self, i: usize, owner: u16, resume: Resume) {
        let stats = &self.stats.workers[self.id];
        let w = owner as usize;
        if w == self.id || w >= self.handoff.to.len() {
            stats.drop(DropReason::HandoffFull);
            return;
        }
        let Some(spare) = self.pool.pop() else {
            stats.drop(DropReason::HandoffFull);
            return;
        };
        let buf = std::mem::replace(&mut self.bufs[i], spare);
        match self.handoff.to[w].try_send(Handed { buf, from: self.id as u16, resume }) {
            Ok(()) => {
                stats.router(RouterEvent::HandedOff);
                self.to_wake |= 1 << w;
            }
            Err(e) => {
                stats.drop(DropReason::HandoffFull);
                self.pool.push(e.into_inner().buf);
            }
        }
    }

    /// Route the frames other workers handed over, on this worker's NAT
    /// table, and return their buffers.
    pub(super) fn serve_handoffs(&mut self) {
        let now = self.clock.now_ms();
        for _ in 0..BATCH {
            let Ok(mut h) = self.handoff.inbox.try_recv() else { break };
            let stats = &self.stats.workers[self.id];
            stats.router(RouterEvent::HandedIn);
            let ingress = h.buf.meta.port;
            let action = match h.resume {
                Resume::FromUplink => self.router.from_uplink(&mut h.buf, now, stats),
                Resume::FromNet => match self.nets.get(h.buf.meta.net as usize).and_then(Option::as_ref) {
                    Some(WNet { cfg: Some(cfg), .. }) => self.router.from_net(cfg, &mut h.buf, now, stats),
                    _ => Action::Drop(DropReason::NoNetwork),
                },
            };
            // Carry it out through the batch machinery with the frame in
            // slot 0's place: swap it in and back.
            std::mem::swap(&mut self.bufs[0], &mut h.buf);
            match action {
                Action::Handoff(_) => {
                    // The owner is deterministic: a second hand-off means the
                    // workers disagree on it. Never bounce frames around.
                    stats.drop(DropReason::HandoffFull);
                }
                a => self.apply(ingress, 0, a, now),
            }
            std::mem::swap(&mut self.bufs[0], &mut h.buf);
            let from = h.from as usize;
            if let Some(tx) = self.handoff.returns_to.get(from) {
                let _ = tx.try_send(h.buf);
            }
        }
    }
}

/// Write `buf` to every access port of `wnet` but `ingress`.
#[inline]
fn flood(ports: &mut [Option<WPort>], stats: &WorkerStats, wnet: &WNet, ingress: PortId, buf: &mut PacketBuf) {
    for &out in &wnet.ports {
        if out != ingress {
            transmit(ports, stats, out, buf);
        }
    }
}

#[inline]
fn set_eth_dst(buf: &mut PacketBuf, mac: MacAddr) {
    if let Some(d) = buf.frame_mut().get_mut(..6) {
        d.copy_from_slice(&mac.0);
    }
}

/// Whether `buf` fits the MTU of port `out` (an unknown port: yes, the
/// send will count the error).
#[inline]
fn fits_mtu(ports: &[Option<WPort>], out: PortId, buf: &PacketBuf) -> bool {
    ports.get(out as usize).and_then(Option::as_ref).is_none_or(|p| buf.wire_len() <= p.mtu as usize)
}

/// Send `buf` out of `out`, counting it, unless it exceeds the port's MTU.
#[inline]
pub(super) fn transmit(ports: &mut [Option<WPort>], stats: &WorkerStats, out: PortId, buf: &mut PacketBuf) {
    let Some(port) = ports.get_mut(out as usize).and_then(Option::as_mut) else {
        stats.drop(DropReason::TxError);
        return;
    };
    let pc = &stats.ports[out as usize];
    if buf.wire_len() > port.mtu as usize {
        stats.drop(DropReason::Oversize);
        pc.tx_dropped.inc();
        return;
    }
    let Some(queue) = port.queue.as_mut() else {
        // A virtual port (a VTEP) is sent to through its tunnel, never here.
        stats.drop(DropReason::TxError);
        return;
    };
    match send(queue, buf) {
        Ok(()) => {
            pc.tx_packets.inc();
            pc.tx_bytes.add(buf.len() as u64);
        }
        Err(_) => {
            stats.drop(DropReason::TxError);
            pc.tx_dropped.inc();
        }
    }
}

#[inline]
fn send(q: &mut PortQueue, buf: &mut PacketBuf) -> std::io::Result<()> {
    q.send(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Offload;

    const ARP: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00,
        0x06, 0x04, 0x00, 0x01, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x0a, 0x58, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x0a, 0x58, 0x00, 0x03,
    ];

    fn buf(frame: &[u8], offload: Offload) -> PacketBuf {
        let mut b = PacketBuf::new();
        b.fill(frame);
        b.meta.offload = offload;
        b
    }

    #[test]
    fn gateway_and_icc_verdicts() {
        let fdb = Fdb::new(8, 1000);
        let gw = MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x01]);
        fdb.insert_static(gw, GATEWAY_PORT);
        let mut t = Tally::default();
        let mut a = [Action::Consumed; 3];
        // ARP broadcast from A (port 1) → flood; B (port 2) answers A.
        let mut to_a = ARP;
        to_a[..6].copy_from_slice(&ARP[6..12]);
        to_a[6..12].copy_from_slice(&[2, 0x42, 10, 88, 0, 3]);
        let mut to_gw = ARP;
        to_gw[..6].copy_from_slice(&gw.0);
        let bufs = [buf(&ARP, Offload::NONE), buf(&to_gw, Offload::NONE)];
        classify_batch(&fdb, true, 1, None, &bufs, 0, &mut a[..2], &mut t);
        assert_eq!(a[..2], [Action::Flood, Action::Gateway]);
        let bufs = [buf(&to_a, Offload::NONE)];
        classify_batch(&fdb, true, 2, None, &bufs, 0, &mut a[..1], &mut t);
        assert_eq!(a[0], Action::Forward(1));
        classify_batch(&fdb, false, 2, None, &bufs, 0, &mut a[..1], &mut t);
        assert_eq!(a[0], Action::Drop(DropReason::IccBlocked));
    }

    #[test]
    fn a_pinned_port_drops_spoofed_frames_before_learning() {
        let fdb = Fdb::new(8, 1000);
        let me = MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]);
        let pin = Pin { mac: me, ip: std::net::Ipv4Addr::new(10, 88, 0, 2) };
        let mut t = Tally::default();
        let mut a = [Action::Consumed; 4];
        // Its own ARP request; another MAC; ARP claiming 10.88.0.3; a runt
        // (left to the bridge stage to count).
        let mut other_mac = ARP;
        other_mac[11] = 0x09;
        let mut other_ip = ARP;
        other_ip[31] = 3;
        let bufs = [
            buf(&ARP, Offload::NONE),
            buf(&other_mac, Offload::NONE),
            buf(&other_ip, Offload::NONE),
            buf(&ARP[..10], Offload::NONE),
        ];
        classify_batch(&fdb, true, 1, Some(&pin), &bufs, 0, &mut a, &mut t);
        assert_eq!(
            a,
            [
                Action::Flood,
                Action::Drop(DropReason::SpoofedMac),
                Action::Drop(DropReason::SpoofedArp),
                Action::Drop(DropReason::Runt)
            ]
        );
        // Only the honest frame was learned.
        assert_eq!((fdb.len(), fdb.lookup(me, 0)), (1, Some(1)));
        // The same frames from an unpinned port pass (and move the MAC).
        classify_batch(&fdb, true, 2, None, &bufs[1..3], 0, &mut a[..2], &mut t);
        assert_eq!(a[..2], [Action::Flood, Action::Flood]);
    }

    #[test]
    fn the_port_limit_of_the_table_applies_to_access_ports() {
        let fdb = Fdb::new(64, 1000);
        fdb.set_port_limit(1);
        let mut t = Tally::default();
        let mut a = [Action::Consumed; 2];
        let mut second = ARP;
        second[11] = 0x09;
        let bufs = [buf(&ARP, Offload::NONE), buf(&second, Offload::NONE)];
        classify_batch(&fdb, true, 1, None, &bufs, 0, &mut a, &mut t);
        assert_eq!(a, [Action::Flood, Action::Drop(DropReason::MacLimit)]);
        assert_eq!(t.get(crate::stats::BridgeEvent::MacLimit), 1);
    }

    #[test]
    fn wire_len_counts_gso_frames_by_segment() {
        let mut f = vec![0u8; 20_000];
        f[12] = 0x08;
        f[34 + 12] = 0x80; // TCP data offset 8 words = 32 bytes
        let tso = Offload {
            flags: crate::wire::vnet::F_NEEDS_CSUM,
            gso_type: crate::wire::vnet::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(buf(&f, tso).wire_len(), 20 + 32 + 1448);
        assert_eq!(buf(&f[..1514], Offload::NONE).wire_len(), 1500);
        // A VLAN tag does not count against the MTU.
        let mut v = f[..1518].to_vec();
        v[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(buf(&v, Offload::NONE).wire_len(), 1500);
    }
}
