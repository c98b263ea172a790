//! Routing through NAT: a packet past the gateway, out of a network or in
//! from the uplink, found in (or added to) this worker's connection table,
//! translated, and sent on with its TTL decremented.
//!
//! Every flow has an owning worker, and a flow's entry lives in its
//! owner's table only, so no lock is needed. The kernel steers uplink
//! frames to the worker [`steer`] computes from the frame; a frame from a
//! container that arrived on another worker is handed over before its flow
//! is looked up. Both sides name the same worker for every flow:
//!
//! | flow | from a container | from the uplink |
//! |---|---|---|
//! | masqueraded (SNAT), hairpin | any (below) | `port_hash(translated port)` |
//! | to a published port (DNAT) | `end_hash(remote end)` | `end_hash(remote end)` |
//! | of a network without masquerade | `end_hash(remote end)` | `end_hash(remote end)` |
//!
//! A masqueraded flow is owned by the worker its container side names
//! ([`Router::net_key`]: the whole 5-tuple, so one container's flows to one
//! server spread), and that worker picks its translated port (or ICMP
//! identifier) among those whose `port_hash` it owns. A hairpin target's
//! replies, to the uplink address and that port, name it too. Writing a
//! flow's frames to a container through its own TAP queue teaches the
//! kernel to send the container's next frames of that flow to that queue
//! (`tun_flow_update`), so hand-overs are mostly a flow's first frames.
//! Published host ports must lie outside the masquerade range (the control
//! plane refuses others), or the uplink could not tell a reply from a new
//! connection by port.
//!
//! New flows follow the network's policy:
//! - from a container to the uplink address: hairpin to a published port
//!   (DNAT, plus SNAT to the uplink address so the target answers through
//!   the gateway);
//! - from a container elsewhere: masquerade (SNAT to the uplink address and
//!   a port from the configured range), or, with `--masquerade=false`,
//!   untranslated but tracked;
//! - from the uplink to a published port: DNAT (TCP only with a SYN);
//! - from the uplink to a container of a `--masquerade=false` network:
//!   only replies of tracked flows.
//!
//! ICMP errors about a tracked flow are translated with it (the quoted
//! packet too). The router sends its own errors (time exceeded,
//! fragmentation needed) rate-limited, from the gateway address toward a
//! container or from the uplink address toward the outside.

use std::net::Ipv4Addr;

use crate::nat::{self, Classified, ConntrackError, FlowKey, IcmpErrorRewrite, L4Csum, NatDrop, NewFlow, Proto};
use crate::packet::PacketBuf;
use crate::port::steer::{self, end_hash, mix, port_hash};
use crate::stats::{DropReason, RouterEvent, WorkerStats};
use crate::wire::{ethernet, MacAddr};

use super::config::L4;
use super::{Action, Ipv4Info, Neighbour, NetConfig, Router, UplinkConfig};

/// Where a packet came from, for policy and for the errors sent back.
#[derive(Clone, Copy)]
pub(super) enum From<'a> {
    /// A container on this network.
    Net(&'a NetConfig),
    /// The uplink.
    Uplink(&'a UplinkConfig),
}

impl From<'_> {
    /// Our address and MAC on the side the packet came from.
    fn us(&self) -> (Ipv4Addr, MacAddr) {
        match self {
            From::Net(nc) => (nc.gateway.ip, nc.gateway.mac),
            From::Uplink(u) => (u.ip, u.mac),
        }
    }
}

/// The key of a masqueraded flow from a container: its whole 5-tuple.
#[inline]
fn flow_key_hash(k: &FlowKey) -> u32 {
    let ports = u32::from(k.sport) << 16 | u32::from(k.dport);
    mix(u32::from(k.src) ^ mix(u32::from(k.dst) ^ mix(ports ^ u32::from(k.proto.number()))))
}

/// Why NAT refused a packet, as a counter.
fn nat_drop(e: NatDrop) -> DropReason {
    match e {
        NatDrop::Truncated | NatDrop::Malformed => DropReason::BadL4,
        NatDrop::Fragment => DropReason::Fragment,
        NatDrop::Protocol(_) | NatDrop::IcmpType(_) => DropReason::NatUnsupported,
        NatDrop::IcmpError | NatDrop::BadQuote | NatDrop::QuoteNotTranslated => DropReason::ConntrackInvalid,
    }
}

/// Where a translated packet goes next.
enum Egress {
    /// A local container: its port, MAC, its gateway's MAC, its MTU.
    Endpoint { port: crate::port::PortId, mac: MacAddr, gateway_mac: MacAddr, mtu: u32 },
    /// Out of the uplink, via this next hop.
    Uplink { port: crate::port::PortId, mac: MacAddr, next_hop: Ipv4Addr, mtu: u32 },
}

impl Router {
    /// The worker steering key `key` names.
    #[inline]
    fn owner_of(&self, key: u32) -> u16 {
        steer::worker_for(key, usize::from(self.workers)) as u16
    }

    /// Whether `port` is one NAT gives flows of `proto` on the uplink
    /// address (the steering program's rule).
    #[inline]
    fn is_nat_port(&self, proto: Proto, port: u16) -> bool {
        proto == Proto::Icmp || self.cfg.snat_ports.contains(&port)
    }

    /// The steering key of a packet from a container of `nc` with flow key
    /// `k` (see the module docs): what names its flow's owner.
    #[inline]
    pub(super) fn net_key(&self, nc: &NetConfig, k: &FlowKey) -> u32 {
        let uplink = self.cfg.uplink.map(|u| u.ip);
        if Some(k.dst) == uplink {
            if self.is_nat_port(k.proto, k.dport) {
                // A hairpin target's reply, to the port its flow was given.
                return port_hash(k.dport);
            }
        } else if !nc.masquerade || self.cfg.is_target(k.proto, k.src, k.sport) {
            // Untranslated, or a reply from a published port: by the remote
            // end, as its frames from the uplink are steered.
            return end_hash(k.dst, k.dport);
        }
        flow_key_hash(k)
    }

    /// The steering key of a packet from the uplink with flow key `k`: the
    /// key the fanout program gives its frame.
    #[inline]
    pub(super) fn uplink_key(&self, u: &UplinkConfig, k: &FlowKey) -> u32 {
        if k.dst == u.ip && self.is_nat_port(k.proto, k.dport) {
            port_hash(k.dport)
        } else {
            end_hash(k.src, k.sport)
        }
    }

    /// Route a packet from a container (not for the gateway itself) or from
    /// the uplink (to the uplink address, or a reply to a container of a
    /// network without masquerade).
    pub(super) fn forward(
        &mut self,
        from: From<'_>,
        buf: &mut PacketBuf,
        ip: &Ipv4Info,
        now: u64,
        st: &WorkerStats,
    ) -> Action {
        let (l3, end) = (ip.l3, ip.l3 + ip.total_len);
        let csum = {
            let o = buf.meta.offload;
            if o.needs_csum() {
                let start = usize::from(o.csum_start).wrapping_sub(l3);
                if !nat::rewrite::partial_at_l4(&buf.frame()[l3..end], start, usize::from(o.csum_offset)) {
                    return Action::Drop(DropReason::BadL4);
                }
                L4Csum::Partial
            } else {
                L4Csum::Full
            }
        };
        let classified = match nat::classify(&buf.frame()[l3..end]) {
            Ok(c) => c,
            Err(e) => return Action::Drop(nat_drop(e)),
        };
        match classified {
            Classified::Flow(f) => {
                let key = match from {
                    From::Net(nc) => self.net_key(nc, &f.key),
                    From::Uplink(u) => self.uplink_key(u, &f.key),
                };
                let owner = self.owner_of(key);
                if owner != self.worker {
                    if matches!(from, From::Uplink(_)) {
                        st.router(RouterEvent::UplinkMissteered);
                    }
                    return Action::Handoff(owner);
                }
                let target = match self.ct.lookup(&f.key, now) {
                    Some((id, dir)) => match self.ct.update(id, dir, f.tcp_flags, usize::from(f.len), now) {
                        Some(e) => e.target(dir),
                        None => return Action::Drop(DropReason::ConntrackInvalid),
                    },
                    None => match self.new_flow(from, buf.meta.port, &f, now, st) {
                        Ok(t) => t,
                        Err(a) => return a,
                    },
                };
                let Some(egress) = self.egress(target.dst) else { return Action::Drop(DropReason::NoRoute) };
                if let Some(a) = self.check_ttl_mtu(from, buf, ip, &egress, now, st) {
                    return a;
                }
                let pkt = &mut buf.frame_mut()[l3..end];
                if nat::decrement_ttl(pkt).is_err() || nat::rewrite(pkt, &target, csum).is_err() {
                    return Action::Drop(DropReason::BadL4);
                }
                self.send_to(buf, &egress, now, st)
            }
            Classified::IcmpError(info) => {
                // The quoted packet went the other way: its flow's packets
                // from this side carry the key reversed.
                let key = match from {
                    From::Net(nc) => self.net_key(nc, &info.inner.reverse()),
                    From::Uplink(u) => self.uplink_key(u, &info.inner.reverse()),
                };
                let owner = self.owner_of(key);
                if owner != self.worker {
                    if matches!(from, From::Uplink(_)) {
                        st.router(RouterEvent::UplinkMissteered);
                    }
                    return Action::Handoff(owner);
                }
                let Some((id, dir)) = self.ct.lookup_icmp_error(&info.inner, now) else {
                    return Action::Drop(DropReason::ConntrackInvalid);
                };
                let Some(entry) = self.ct.get(id) else { return Action::Drop(DropReason::ConntrackInvalid) };
                let rw: IcmpErrorRewrite = entry.icmp_error_rewrite(dir, info.src, info.dst);
                let Some(egress) = self.egress(rw.outer_dst) else { return Action::Drop(DropReason::NoRoute) };
                if ip.ttl <= 1 {
                    // Never answer an error with an error: just drop it.
                    return Action::Drop(DropReason::TtlExceeded);
                }
                let pkt = &mut buf.frame_mut()[l3..end];
                if nat::decrement_ttl(pkt).is_err() || nat::rewrite_icmp_error(pkt, &rw, csum).is_err() {
                    return Action::Drop(DropReason::BadL4);
                }
                st.router(RouterEvent::IcmpTranslated);
                self.send_to(buf, &egress, now, st)
            }
        }
    }

    /// Make the entry of a flow seen for the first time, following policy,
    /// and return what its first packet becomes.
    fn new_flow(
        &mut self,
        from: From<'_>,
        port: crate::port::PortId,
        f: &nat::Flow,
        now: u64,
        st: &WorkerStats,
    ) -> Result<FlowKey, Action> {
        let k = f.key;
        let Some(u) = self.cfg.uplink else { return Err(Action::Drop(DropReason::NoUplink)) };
        let published = |proto: Proto, port: u16| {
            let l4 = match proto {
                Proto::Tcp => L4::Tcp,
                Proto::Udp => L4::Udp,
                Proto::Icmp => return None,
            };
            self.cfg.published.get(&(l4, port)).copied()
        };
        let me = self.worker;
        let (reply, tag) = match from {
            From::Net(nc) => {
                let tag = u32::from(port);
                if k.dst == u.ip {
                    // Hairpin: a published port of the uplink address, from
                    // inside. The target answers to the uplink address, on a
                    // port whose key this worker owns.
                    let Some(p) = published(k.proto, k.dport) else {
                        return Err(Action::Drop(DropReason::PortClosed));
                    };
                    let sport = self
                        .ct
                        .alloc(k.proto, p.ip, p.port, u.ip, k.sport, self.cfg.snat_ports.clone(), |x| {
                            self.owner_of(port_hash(x)) == me
                        })
                        .ok_or(Action::Drop(DropReason::NatPortsExhausted))?;
                    (FlowKey::new(k.proto, p.ip, p.port, u.ip, sport), p.tag)
                } else if nc.masquerade {
                    let range = match k.proto {
                        Proto::Icmp => 1..=u16::MAX,
                        _ => self.cfg.snat_ports.clone(),
                    };
                    // Replies are steered by the port: one whose key this
                    // worker owns.
                    let x = self
                        .ct
                        .alloc(k.proto, k.dst, k.dport, u.ip, k.sport, range, |x| self.owner_of(port_hash(x)) == me)
                        .ok_or(Action::Drop(DropReason::NatPortsExhausted))?;
                    (k.with_src(u.ip, x).reverse(), tag)
                } else {
                    (k.reverse(), tag)
                }
            }
            From::Uplink(u) => {
                if k.dst != u.ip {
                    // To a container of a network without masquerade: only
                    // replies of flows the container started.
                    return Err(Action::Drop(DropReason::NoFlow));
                }
                let Some(p) = published(k.proto, k.dport) else { return Err(Action::Drop(DropReason::NoFlow)) };
                let syn = f.tcp_flags.contains(crate::wire::tcp::Flags::SYN)
                    && !f.tcp_flags.contains(crate::wire::tcp::Flags::ACK);
                if k.proto == Proto::Tcp && !syn {
                    return Err(Action::Drop(DropReason::ConntrackInvalid));
                }
                (k.with_dst(p.ip, p.port).reverse(), p.tag)
            }
        };
        let flow = NewFlow { original: k, reply, tag, tcp_flags: f.tcp_flags, bytes: usize::from(f.len) };
        match self.ct.insert(flow, now) {
            Ok(id) => {
                st.router(RouterEvent::FlowsCreated);
                let e = self.ct.get(id).ok_or(Action::Drop(DropReason::ConntrackInvalid))?;
                Ok(e.target(nat::Dir::Original))
            }
            Err(ConntrackError::Full) => Err(Action::Drop(DropReason::ConntrackFull)),
            Err(ConntrackError::Exists) => Err(Action::Drop(DropReason::NatTupleInUse)),
            Err(_) => Err(Action::Drop(DropReason::ConntrackInvalid)),
        }
    }

    /// Where a packet to `dst` leaves: a local container, or the uplink.
    fn egress(&self, dst: Ipv4Addr) -> Option<Egress> {
        if let Some(e) = self.cfg.endpoints.get(&dst) {
            return Some(Egress::Endpoint { port: e.port, mac: e.mac, gateway_mac: e.gateway_mac, mtu: e.mtu });
        }
        if self.cfg.network_of(dst).is_some() {
            // A tapnet subnet, but nobody there.
            return None;
        }
        let u = self.cfg.uplink?;
        let next_hop = if u.subnet.contains(dst) { dst } else { u.gateway? };
        Some(Egress::Uplink { port: u.port, mac: u.mac, next_hop, mtu: u.mtu })
    }

    /// RFC 1812 §5.3.1 and §5.2.6 / RFC 1191: a packet whose TTL runs out
    /// here, or too big for the next link with DF set, goes no further and
    /// its sender hears why. `None`: go on.
    fn check_ttl_mtu(
        &mut self,
        from: From<'_>,
        buf: &mut PacketBuf,
        ip: &Ipv4Info,
        egress: &Egress,
        now: u64,
        st: &WorkerStats,
    ) -> Option<Action> {
        if ip.ttl <= 1 {
            self.send_error(from, buf, ip, nat::ErrorKind::TimeExceeded, now, st);
            return Some(Action::Drop(DropReason::TtlExceeded));
        }
        let mtu = match *egress {
            Egress::Endpoint { mtu, .. } | Egress::Uplink { mtu, .. } => mtu,
        };
        if buf.wire_len() > mtu as usize {
            if !ip.dont_frag {
                // tapnet does not fragment.
                return Some(Action::Drop(DropReason::Oversize));
            }
            let kind = nat::ErrorKind::FragNeeded { mtu: mtu.min(u32::from(u16::MAX)) as u16 };
            self.send_error(from, buf, ip, kind, now, st);
            return Some(Action::Drop(DropReason::FragNeeded));
        }
        None
    }

    /// Send ICMP error `kind` about the packet in `buf` back out of the port
    /// it came from, from our address on that side (rate-limited).
    pub(super) fn send_error(
        &mut self,
        from: From<'_>,
        buf: &PacketBuf,
        ip: &Ipv4Info,
        kind: nat::ErrorKind,
        now: u64,
        st: &WorkerStats,
    ) {
        if !self.icmp_limit.allow(now) {
            return;
        }
        let (addr, mac) = from.us();
        let frame = buf.frame();
        let Some(offending) = frame.get(ip.l3..ip.l3 + ip.total_len) else { return };
        let peer = MacAddr::from_bytes(&frame[6..12]);
        let Some(out) = self.emit.push(buf.meta.port) else { return };
        let area = out.frame_capacity_mut();
        let hl = ethernet::HEADER_LEN;
        match nat::build_error(&mut area[hl..], addr, offending, kind) {
            Ok(n) => {
                area[..6].copy_from_slice(&peer.0);
                area[6..12].copy_from_slice(&mac.0);
                area[12..14].copy_from_slice(&[0x08, 0x00]);
                out.set_len(hl + n);
                st.router(RouterEvent::IcmpSent);
            }
            Err(_) => {
                // Suppressed (an error about an error, a broadcast, ...).
                self.emit.cancel_last();
            }
        }
    }

    /// Address the Ethernet header for `egress` and say where to send it.
    fn send_to(&mut self, buf: &mut PacketBuf, egress: &Egress, now: u64, st: &WorkerStats) -> Action {
        let f = buf.frame_mut();
        match *egress {
            Egress::Endpoint { port, mac, gateway_mac, .. } => {
                f[..6].copy_from_slice(&mac.0);
                f[6..12].copy_from_slice(&gateway_mac.0);
                Action::Forward(port)
            }
            Egress::Uplink { port, mac, next_hop, .. } => {
                f[6..12].copy_from_slice(&mac.0);
                match self.arp.lookup(next_hop, now) {
                    Neighbour::Reachable(m) => {
                        f[..6].copy_from_slice(&m.0);
                        Action::Forward(port)
                    }
                    Neighbour::Stale(m) => {
                        f[..6].copy_from_slice(&m.0);
                        if self.arp.should_request(next_hop, now) {
                            self.request_arp(next_hop, st);
                        }
                        Action::Forward(port)
                    }
                    Neighbour::Unknown => Action::Pend(next_hop),
                }
            }
        }
    }
}
