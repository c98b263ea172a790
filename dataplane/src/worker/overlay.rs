//! The overlay path of a worker: frames for a remote VTEP are encapsulated
//! and sent through the tunnel's sockets; what the tunnel's sockets read is
//! decapsulated, bridged into the network its VNI or key names (learning
//! the source MAC on the VTEP it came from) and delivered to local ports.
//!
//! Before encapsulation the frame's offload requests are resolved in
//! software, since a tunnel socket cannot carry them: a GSO super-frame is
//! cut into MTU-sized segments, a partial checksum completed
//! (`crate::overlay::gso`). On the way in, consecutive TCP segments of one
//! flow for one TAP are coalesced back into one super-frame
//! (`crate::overlay::gro`), so a 64 KiB burst costs one TAP write.
//!
//! Split horizon: a frame that came out of a tunnel is never sent into one
//! again; floods from the tunnel go to local ports only (every host floods
//! its own containers: head-end replication by the sender).

use std::net::Ipv4Addr;

use crate::bridge::{self, Verdict};
use crate::overlay::tunnel::{self, DecapError};
use crate::port::{PortId, GATEWAY_PORT};
use crate::stats::{DropReason, WorkerStats};
use crate::wire::vnet;

use super::process::transmit;
use super::{PortRole, WPort, Worker};
use crate::overlay::gro::{Coalescer, Pushed};
use crate::packet::PacketBuf;

/// A worker's coalescer and the writes it makes.
pub(super) struct Coalesce {
    co: Coalescer,
}

impl Coalesce {
    pub(super) fn new() -> Coalesce {
        Coalesce { co: Coalescer::new() }
    }

    /// Send decapsulated frame `buf` to local port `p`: through the run
    /// being coalesced when it can join it, else on its own.
    pub(super) fn deliver(&mut self, ports: &mut [Option<WPort>], stats: &WorkerStats, p: PortId, buf: &mut PacketBuf) {
        let mut r = self.co.push(buf.frame(), p);
        if r == Ok(Pushed::FlushFirst) {
            self.flush(ports, stats);
            r = self.co.push(buf.frame(), p);
        }
        if r.is_err() {
            self.flush(ports, stats);
            transmit(ports, stats, p, buf);
        }
    }

    /// Write the run being coalesced, if any.
    pub(super) fn flush(&mut self, ports: &mut [Option<WPort>], stats: &WorkerStats) {
        if let Some((p, out)) = self.co.flush() {
            transmit(ports, stats, p, out);
        }
    }
}

fn decap_drop(e: DecapError) -> DropReason {
    match e {
        DecapError::Truncated | DecapError::InnerTruncated => DropReason::TunnelTruncated,
        DecapError::BadFlags => DropReason::TunnelBadFlags,
        DecapError::BadProtocol | DecapError::NoKey => DropReason::TunnelBadProtocol,
        DecapError::BadChecksum => DropReason::TunnelBadChecksum,
    }
}

impl Worker {
    /// Frames `0..n` of the batch were read from tunnel port `tunnel`: each
    /// buffer holds one datagram, or several of `offload.gso_size` bytes
    /// back to back (a UDP GRO read), VXLAN or GRE header first.
    pub(super) fn tunnel_input(&mut self, tunnel: PortId, n: usize, now: u64) {
        let Some(encap) =
            self.ports[tunnel as usize].as_ref().and_then(|p| p.queue.as_ref()).and_then(|q| q.tunnel_encap())
        else {
            return;
        };
        for i in 0..n {
            let (base, total) = (self.bufs[i].offset(), self.bufs[i].len());
            let o = self.bufs[i].meta.offload;
            let seg = if o.gso_type == vnet::GSO_UDP_L4 && o.gso_size > 0 { usize::from(o.gso_size) } else { total };
            let peer = self.bufs[i].meta.peer;
            let mut at = 0;
            while at < total {
                let len = seg.min(total - at);
                if !self.bufs[i].set_frame(base + at, len) {
                    break;
                }
                self.decap_one(encap, tunnel, i, peer, now);
                at += len;
            }
        }
        self.flush_coalesced();
    }

    /// Decapsulate the datagram that is the frame of buffer `i` and deliver
    /// its inner frame.
    fn decap_one(&mut self, encap: tunnel::Encap, tunnel: PortId, i: usize, peer: Ipv4Addr, now: u64) {
        let stats = &self.stats.workers[self.id];
        let (id, at) = match tunnel::decap(encap, self.bufs[i].frame()) {
            Ok(x) => x,
            Err(e) => return stats.drop(decap_drop(e)),
        };
        let Some((net, wnet)) = self.nets.iter().enumerate().find_map(|(k, n)| {
            let n = n.as_ref()?;
            let o = n.cfg.as_ref()?.overlay?;
            (o.tunnel == tunnel && o.id == id).then_some((k as crate::stats::NetId, n))
        }) else {
            return stats.drop(DropReason::TunnelUnknownId);
        };
        let ports = &mut self.ports;
        let vtep = wnet.vteps.iter().copied().find(|&v| {
            matches!(ports[v as usize].as_ref().map(|p| p.role), Some(PortRole::Vtep { remote, .. }) if remote == peer)
        });
        let Some(vtep) = vtep else { return stats.drop(DropReason::TunnelUnknownPeer) };
        let buf = &mut self.bufs[i];
        let (off, inner_len) = (buf.offset() + at, buf.len() - at);
        buf.set_frame(off, inner_len);
        if crate::overlay::probe::is_probe(buf.frame()) {
            // `tapnet overlay check` from the peer: send requests back the
            // way they came; replies are the prober's, not ours.
            let port = buf.meta.peer_port;
            buf.meta.offload = crate::packet::Offload::NONE;
            if crate::overlay::probe::answer(buf.frame_mut()) {
                let hdr = encap.header(id);
                if let Some(q) = ports[tunnel as usize].as_mut().and_then(|p| p.queue.as_mut()) {
                    if q.send_encapsulated(peer, port, &hdr, buf, &mut self.segments).is_ok() {
                        stats.router(crate::stats::RouterEvent::ProbesAnswered);
                    }
                }
            }
            return;
        }
        buf.meta.net = net;
        buf.meta.port = vtep;
        buf.meta.offload = crate::packet::Offload::NONE;
        let vc = &stats.ports[vtep as usize];
        vc.rx_packets.inc();
        vc.rx_bytes.add(inner_len as u64);
        let mut tally = bridge::Tally::default();
        let verdict = bridge::decide(&wnet.fdb, vtep, buf.frame(), now, &mut tally);
        tally.flush(stats, net);
        match verdict {
            // The remote host's own gateway serves its containers.
            Verdict::Forward(GATEWAY_PORT) => stats.drop(DropReason::NoRoute),
            Verdict::Forward(p) => {
                if matches!(ports.get(p as usize).and_then(Option::as_ref).map(|w| w.role), Some(PortRole::Access(_))) {
                    self.coalesce.deliver(ports, stats, p, buf);
                } else {
                    // Split horizon: never from one tunnel into another.
                    stats.drop(DropReason::DstIsIngress);
                }
            }
            Verdict::Flood => {
                self.coalesce.flush(ports, stats);
                if wnet.cfg.as_ref().is_none_or(|c| c.icc) {
                    for &p in &wnet.ports {
                        transmit(ports, stats, p, buf);
                    }
                }
            }
            Verdict::Drop(r) => stats.drop(r),
        }
    }

    /// Write what the coalescer holds.
    pub(super) fn flush_coalesced(&mut self) {
        let stats = &self.stats.workers[self.id];
        self.coalesce.flush(&mut self.ports, stats);
    }

    /// Send `buf` (frame `i` of the batch, or a flood's copy) to remote
    /// VTEP `vtep`: clamp the MSS of SYNs, refuse what is too big for the
    /// underlay (with an ICMP fragmentation-needed when DF is set), resolve
    /// offloads, encapsulate, send.
    pub(super) fn send_to_vtep(&mut self, vtep: PortId, i: usize, now: u64) {
        let stats = &self.stats.workers[self.id];
        let Some(&WPort { role: PortRole::Vtep { net, tunnel, remote }, .. }) = self.ports[vtep as usize].as_ref()
        else {
            return stats.drop(DropReason::TxError);
        };
        let Some(cfg) = self.nets[net as usize].as_ref().and_then(|n| n.cfg.clone()) else {
            return stats.drop(DropReason::NoNetwork);
        };
        let Some(ov) = cfg.overlay else { return stats.drop(DropReason::NoNetwork) };
        let buf = &mut self.bufs[i];
        if buf.wire_len() > ov.path_mtu as usize {
            let f = buf.frame();
            let df = f.get(12..14) == Some(&[8, 0]) && f.get(14 + 6).is_some_and(|b| b & 0x40 != 0);
            stats.ports[vtep as usize].tx_dropped.inc();
            if df && self.router.frag_needed(&cfg, buf, ov.path_mtu, now, stats) {
                let Worker { router, ports, .. } = self;
                router.emit.drain(|port, b| transmit(ports, stats, port, b));
                return stats.drop(DropReason::FragNeeded);
            }
            return stats.drop(DropReason::Oversize);
        }
        if ov.mss_clamp {
            let partial = buf.meta.offload.needs_csum();
            crate::overlay::mss::clamp(buf.frame_mut(), ov.path_mtu, partial);
        }
        let hdr = ov.encap.header(ov.id);
        let Some(q) = self.ports[tunnel as usize].as_mut().and_then(|p| p.queue.as_mut()) else {
            return stats.drop(DropReason::TxError);
        };
        let len = buf.len() as u64;
        match q.send_encapsulated(remote, ov.dst_port, &hdr, buf, &mut self.segments) {
            Ok(datagrams) => {
                let pc = &stats.ports[vtep as usize];
                pc.tx_packets.add(datagrams as u64);
                pc.tx_bytes.add(len);
            }
            Err(reason) => {
                stats.drop(reason);
                stats.ports[vtep as usize].tx_dropped.inc();
            }
        }
    }
}
