//! The gateway and the uplink: everything past L2.
//!
//! Each network has a gateway address owned by the dataplane (its MAC is a
//! static entry of the network's MAC table, pointing at
//! [`crate::port::GATEWAY_PORT`]). Frames the bridge sends there, and every
//! frame read from the uplink, come here. The router answers ARP and ICMP
//! echo for its own addresses, DNS at each gateway address, and routes
//! between the networks and the uplink through NAT (`crate::nat`). Two
//! tapnet networks are never routed to each other, as in Docker.
//!
//! Like [`crate::bridge::decide`], the router does no I/O: it rewrites the
//! frame in place and returns an [`Action`] for the worker to carry out.
//! Frames it must send besides (an ARP request, say) go into [`Emit`], which
//! the worker drains. Time is passed in.
//!
//! See docs/ARCHITECTURE.md ("The gateway and NAT") for the whole path.

pub mod arp;
pub mod config;
#[cfg(test)]
mod fuzz_regressions;
mod route;

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::dns::{self, cookie::CookieKey};
use crate::nat::{icmp::RateLimit, Conntrack};
use crate::packet::{Offload, PacketBuf};
use crate::port::PortId;
use crate::stats::{DropReason, RouterEvent, WorkerStats};
use crate::wire::arp::Operation;
use crate::wire::dns::Rcode;
use crate::wire::{checksum, ethernet, EtherType, MacAddr};
use route::From;

pub use arp::{ArpCache, Neighbour};
pub use config::{
    Endpoint, GatewayConfig, NetConfig, OverlayConfig, Published, RouterConfig, Subnet, UplinkConfig, L4,
};

/// What a stage decided for one frame; the worker carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send out of this port as the frame now is.
    Forward(PortId),
    /// Send to every other port of the frame's network.
    Flood,
    /// The frame is addressed to its network's gateway: route it.
    Gateway,
    /// The frame was rewritten into an answer: send it back out of the port
    /// it came from.
    Reply,
    /// The next hop on the uplink is not resolved yet: keep the frame until
    /// it is (the Ethernet destination is still to be filled in).
    Pend(Ipv4Addr),
    /// Another worker owns the frame's flow: hand the frame to it.
    Handoff(u16),
    /// Nothing more to do (the frame was only for us).
    Consumed,
    /// Drop, counted under this reason.
    Drop(DropReason),
}

/// Frames a stage sends besides the one it was given.
pub struct Emit {
    bufs: Vec<PacketBuf>,
    ports: Vec<PortId>,
    n: usize,
}

/// How many extra frames one stage call may emit.
pub const EMIT_MAX: usize = 4;

impl Default for Emit {
    fn default() -> Self {
        Emit { bufs: (0..EMIT_MAX).map(|_| PacketBuf::new()).collect(), ports: vec![0; EMIT_MAX], n: 0 }
    }
}

impl Emit {
    /// A buffer for one more frame to `port`, or `None` if full.
    pub fn push(&mut self, port: PortId) -> Option<&mut PacketBuf> {
        if self.n == EMIT_MAX {
            return None;
        }
        self.ports[self.n] = port;
        self.n += 1;
        let b = &mut self.bufs[self.n - 1];
        b.meta.offload = Offload::NONE;
        Some(b)
    }
    pub fn len(&self) -> usize {
        self.n
    }
    /// Forget the frame pushed last (it turned out there was nothing to
    /// send).
    pub fn cancel_last(&mut self) {
        self.n = self.n.saturating_sub(1);
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// Each emitted frame with its port, then empty the list.
    pub fn drain(&mut self, mut f: impl FnMut(PortId, &mut PacketBuf)) {
        for i in 0..self.n {
            f(self.ports[i], &mut self.bufs[i]);
        }
        self.n = 0;
    }
}

/// The fields of an IPv4 header the router looks at, after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Offset of the IPv4 header in the frame.
    pub l3: usize,
    pub header_len: usize,
    pub total_len: usize,
    pub protocol: u8,
    pub ttl: u8,
    pub dont_frag: bool,
    /// A fragment (not the whole datagram): more-fragments set or offset ≠ 0.
    pub fragment: bool,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

/// Validate the IPv4 header of an Ethernet frame (RFC 791, RFC 1812
/// §5.2.2): version, header length, total length within the frame, header
/// checksum.
#[inline]
pub fn parse_ipv4(frame: &[u8]) -> Result<Ipv4Info, DropReason> {
    let l3 = ethernet::HEADER_LEN;
    let ip = frame.get(l3..).ok_or(DropReason::BadIpv4)?;
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err(DropReason::BadIpv4);
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if header_len < 20 || total_len < header_len || total_len > ip.len() {
        return Err(DropReason::BadIpv4);
    }
    if checksum::data(&ip[..header_len]) != 0xffff {
        return Err(DropReason::BadIpv4);
    }
    let flags = u16::from_be_bytes([ip[6], ip[7]]);
    Ok(Ipv4Info {
        l3,
        header_len,
        total_len,
        protocol: ip[9],
        ttl: ip[8],
        dont_frag: flags & 0x4000 != 0,
        fragment: flags & 0x3fff != 0,
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
    })
}

/// The per-worker router.
pub struct Router {
    /// This worker's index, and how many workers share the flows.
    pub worker: u16,
    pub workers: u16,
    pub cfg: Arc<RouterConfig>,
    pub arp: Arc<ArpCache>,
    pub emit: Emit,
    /// The secret of the DNS-over-TCP SYN cookies (the same on every
    /// worker: a connection's segments may reach different ones).
    dns_key: CookieKey,
    /// IPv4 Identification of the packets the router makes.
    ip_id: u16,
    /// This worker's connection table (see `route.rs` for who owns what).
    pub ct: Conntrack,
    /// ICMP errors this worker may send (RFC 1812 §4.3.2.8).
    icmp_limit: RateLimit,
}

/// Entries of the connection table freed per loop iteration at most.
pub const SWEEP_BUDGET: usize = 64;

impl Router {
    pub fn new(worker: u16, workers: u16, arp: Arc<ArpCache>, dns_key: CookieKey, ct: Conntrack) -> Router {
        Router {
            worker,
            workers: workers.max(1),
            cfg: Arc::new(RouterConfig::default()),
            arp,
            emit: Emit::default(),
            dns_key,
            ip_id: (worker).wrapping_mul(0x1000),
            ct,
            icmp_limit: RateLimit::default(),
        }
    }

    /// Free expired connections, a few at a time; returns how many.
    pub fn sweep(&mut self, now: u64, st: &WorkerStats) -> usize {
        let n = self.ct.sweep(now, SWEEP_BUDGET);
        if n > 0 {
            st.router[RouterEvent::FlowsExpired as usize].add(n as u64);
        }
        n
    }

    #[inline]
    fn next_ip_id(&mut self) -> u16 {
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ip_id
    }

    /// Tell the sender of the IPv4 packet in `buf` (from a container of
    /// `nc`) that it is too big for the next link, whose MTU is `mtu`
    /// (RFC 1191), from the gateway address. False if no error could be
    /// sent (not IPv4, suppressed, rate-limited).
    pub fn frag_needed(&mut self, nc: &NetConfig, buf: &PacketBuf, mtu: u32, now: u64, st: &WorkerStats) -> bool {
        let Ok(ip) = parse_ipv4(buf.frame()) else { return false };
        let before = self.emit.len();
        let kind = crate::nat::ErrorKind::FragNeeded { mtu: mtu.min(u32::from(u16::MAX)) as u16 };
        self.send_error(From::Net(nc), buf, &ip, kind, now, st);
        self.emit.len() > before
    }

    /// Queue an ARP request for `target` out of the uplink.
    pub fn request_arp(&mut self, target: Ipv4Addr, st: &WorkerStats) {
        let Some(u) = self.cfg.uplink else { return };
        if let Some(out) = self.emit.push(u.port) {
            let n = arp::request(out.frame_capacity_mut(), u.mac, u.ip, target);
            out.set_len(n);
            st.router(RouterEvent::ArpRequested);
        }
    }

    /// A broadcast (or multicast) frame seen on a network with a gateway:
    /// answer an ARP request for the gateway address. The frame itself is
    /// flooded by the worker as usual and is not changed. Returns whether
    /// the frame was for the gateway.
    pub fn flood_seen(&mut self, nc: &NetConfig, buf: &PacketBuf, st: &WorkerStats) -> bool {
        let Some(req) = arp::parse(buf.frame()) else { return false };
        if req.op != Operation::Request || req.target_ip != nc.gateway.ip || req.sender_ip == nc.gateway.ip {
            return false;
        }
        let port = buf.meta.port;
        if let Some(out) = self.emit.push(port) {
            let n = arp::reply_to(out.frame_capacity_mut(), &req, nc.gateway.mac);
            out.set_len(n);
            st.router(RouterEvent::ArpReplied);
        }
        true
    }

    /// A frame from a container to its network's gateway MAC.
    pub fn from_net(&mut self, nc: &NetConfig, buf: &mut PacketBuf, now: u64, st: &WorkerStats) -> Action {
        let frame = buf.frame();
        let eth = ethernet::Frame::new_unchecked(frame);
        match eth.ethertype() {
            EtherType::Ipv4 => {}
            EtherType::Arp => return self.gateway_arp(nc, buf, st),
            _ => return Action::Drop(DropReason::NotIpv4),
        }
        let ip = match parse_ipv4(frame) {
            Ok(ip) => ip,
            Err(r) => return Action::Drop(r),
        };
        if ip.dst == nc.gateway.ip {
            return self.local(nc, buf, &ip, now, st);
        }
        if nc.gateway.subnet.contains(ip.dst) || ip.dst.is_broadcast() || ip.dst.is_multicast() {
            return Action::Drop(DropReason::NoRoute);
        }
        if nc.internal {
            return Action::Drop(DropReason::Internal);
        }
        let Some(u) = self.cfg.uplink else { return Action::Drop(DropReason::NoUplink) };
        if ip.dst == u.ip {
            // The uplink address is the host's: ping answers; published
            // ports are reached through hairpin NAT.
            if ip.protocol == 1 && is_echo_request(buf.frame(), &ip) {
                return self.echo_reply(buf, &ip, nc.gateway.mac, st);
            }
        } else if self.cfg.network_of(ip.dst).is_some() {
            // Networks are not routed to each other, as in Docker.
            return Action::Drop(DropReason::NoRoute);
        }
        self.forward(From::Net(nc), buf, &ip, now, st)
    }

    /// A frame read from the uplink.
    pub fn from_uplink(&mut self, buf: &mut PacketBuf, now: u64, st: &WorkerStats) -> Action {
        let Some(u) = self.cfg.uplink else { return Action::Drop(DropReason::NoUplink) };
        let frame = buf.frame();
        let eth = ethernet::Frame::new_unchecked(frame);
        match eth.ethertype() {
            EtherType::Ipv4 => {}
            EtherType::Arp => return self.uplink_arp(&u, buf, now, st),
            _ => {
                st.router(RouterEvent::UplinkIgnored);
                return Action::Consumed;
            }
        }
        let ip = match parse_ipv4(frame) {
            Ok(ip) => ip,
            Err(r) => return Action::Drop(r),
        };
        if ip.dst == u.ip {
            if ip.protocol == 1 && is_echo_request(buf.frame(), &ip) {
                return self.echo_reply(buf, &ip, u.mac, st);
            }
            return self.forward(From::Uplink(&u), buf, &ip, now, st);
        }
        if self.cfg.endpoints.get(&ip.dst).is_some_and(|e| e.routable) {
            // A reply to a container of a network without masquerade.
            return self.forward(From::Uplink(&u), buf, &ip, now, st);
        }
        // Traffic of the LAN (or of the kernel's own addresses on this
        // interface) that is not ours: not an error.
        st.router(RouterEvent::UplinkIgnored);
        Action::Consumed
    }

    /// ARP unicast to the gateway's MAC (a container's kernel re-checking
    /// its neighbour entry).
    fn gateway_arp(&mut self, nc: &NetConfig, buf: &mut PacketBuf, st: &WorkerStats) -> Action {
        let Some(req) = arp::parse(buf.frame()) else { return Action::Drop(DropReason::BadArp) };
        if req.op != Operation::Request || req.target_ip != nc.gateway.ip {
            return Action::Consumed;
        }
        let n = arp::reply_to(buf.frame_capacity_mut(), &req, nc.gateway.mac);
        buf.set_len(n);
        buf.meta.offload = Offload::NONE;
        st.router(RouterEvent::ArpReplied);
        Action::Reply
    }

    /// ARP on the uplink: answer requests for the uplink address and learn
    /// next hops (RFC 826 "packet reception").
    fn uplink_arp(&mut self, u: &UplinkConfig, buf: &mut PacketBuf, now: u64, st: &WorkerStats) -> Action {
        let Some(msg) = arp::parse(buf.frame()) else { return Action::Drop(DropReason::BadArp) };
        let for_us = msg.target_ip == u.ip;
        if msg.sender_ip != u.ip && u.subnet.contains(msg.sender_ip) {
            self.arp.update(msg.sender_ip, msg.sender_mac, now, for_us);
        }
        if for_us && msg.op == Operation::Request {
            let n = arp::reply_to(buf.frame_capacity_mut(), &msg, u.mac);
            buf.set_len(n);
            buf.meta.offload = Offload::NONE;
            st.router(RouterEvent::ArpReplied);
            return Action::Reply;
        }
        Action::Consumed
    }

    /// Something addressed to a network's gateway address itself: ping and
    /// DNS are answered.
    fn local(&mut self, nc: &NetConfig, buf: &mut PacketBuf, ip: &Ipv4Info, now: u64, st: &WorkerStats) -> Action {
        if ip.fragment {
            return Action::Drop(DropReason::Fragment);
        }
        let l4 = ip.l3 + ip.header_len;
        let dport = buf.frame().get(l4 + 2..l4 + 4).map(|p| u16::from_be_bytes([p[0], p[1]]));
        match (ip.protocol, dport) {
            (1, _) if is_echo_request(buf.frame(), ip) => self.echo_reply(buf, ip, nc.gateway.mac, st),
            (17, Some(53)) => self.dns_udp(nc, buf, st),
            (6, Some(53)) => self.dns_tcp(nc, buf, now, st),
            _ => Action::Drop(DropReason::PortClosed),
        }
    }

    /// DNS over UDP at the gateway: the network's names, REFUSED for others.
    fn dns_udp(&mut self, nc: &NetConfig, buf: &mut PacketBuf, st: &WorkerStats) -> Action {
        let len = buf.len();
        let id = self.next_ip_id();
        let mut out = dns::respond_udp(buf.frame_capacity_mut(), len, &nc.dns, id);
        if out == dns::Outcome::NotOurs {
            out = dns::refuse_udp(buf.frame_capacity_mut(), len, &nc.dns, Rcode::Refused, id);
            st.router(RouterEvent::DnsRefused);
        } else if matches!(out, dns::Outcome::Reply(_)) {
            st.router(RouterEvent::DnsAnswered);
        }
        match out.reply_len() {
            Some(n) => {
                buf.set_len(n);
                buf.meta.offload = Offload::NONE;
                Action::Reply
            }
            None => Action::Drop(DropReason::DnsMalformed),
        }
    }

    /// DNS over TCP at the gateway, without per-connection state.
    fn dns_tcp(&mut self, nc: &NetConfig, buf: &mut PacketBuf, now: u64, st: &WorkerStats) -> Action {
        let len = buf.len();
        let id = self.next_ip_id();
        let cfg = dns::tcp::TcpConfig { key: self.dns_key, mss: nc.mtu.saturating_sub(40).clamp(536, 65495) as u16 };
        let mut out = dns::tcp::respond_tcp(buf.frame_capacity_mut(), len, &nc.dns, &cfg, now, id);
        if out == dns::tcp::TcpOutcome::NotOurs {
            out = dns::tcp::refuse_tcp(buf.frame_capacity_mut(), len, &nc.dns, &cfg, now, id, Rcode::Refused);
            st.router(RouterEvent::DnsRefused);
        } else if matches!(out, dns::tcp::TcpOutcome::Reply(_)) {
            st.router(RouterEvent::DnsAnswered);
        }
        match out {
            dns::tcp::TcpOutcome::Ignore => Action::Consumed,
            o => match o.reply_len() {
                Some(n) => {
                    buf.set_len(n);
                    buf.meta.offload = Offload::NONE;
                    Action::Reply
                }
                None => Action::Drop(DropReason::DnsMalformed),
            },
        }
    }

    /// Turn an ICMP echo request into its reply, in place (RFC 792): swap
    /// the addresses, type 0, TTL 64.
    fn echo_reply(&mut self, buf: &mut PacketBuf, ip: &Ipv4Info, mac: MacAddr, st: &WorkerStats) -> Action {
        if ip.fragment {
            return Action::Drop(DropReason::Fragment);
        }
        let partial = buf.meta.offload.needs_csum();
        let f = buf.frame_mut();
        swap_macs(f, mac);
        let l3 = ip.l3;
        let hl = ip.header_len;
        let end = l3 + ip.total_len;
        {
            let h = &mut f[l3..l3 + hl];
            h[8] = 64;
            let (s, d) = (ip.src.octets(), ip.dst.octets());
            h[12..16].copy_from_slice(&d);
            h[16..20].copy_from_slice(&s);
            h[10] = 0;
            h[11] = 0;
            let c = !checksum::data(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let icmp = &mut f[l3 + hl..end];
        icmp[0] = 0;
        if partial {
            icmp[2] = 0;
            icmp[3] = 0;
            let c = !checksum::data(icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
        } else {
            let old = u16::from_be_bytes([icmp[2], icmp[3]]);
            let c = checksum::update_u16(old, 0x0800, 0x0000);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            crate::wire::Icmpv4Packet::new_unchecked(&mut *icmp).fix_zero_checksum();
        }
        buf.set_len(end);
        buf.meta.offload = Offload::NONE;
        st.router(RouterEvent::EchoReplied);
        Action::Reply
    }
}

/// Is the IPv4 packet an ICMP echo request with a whole header?
#[inline]
fn is_echo_request(frame: &[u8], ip: &Ipv4Info) -> bool {
    let at = ip.l3 + ip.header_len;
    ip.total_len >= ip.header_len + 8 && frame.get(at) == Some(&8) && frame.get(at + 1) == Some(&0)
}

/// Answer a frame: its source becomes the destination, `mac` the source.
#[inline]
fn swap_macs(frame: &mut [u8], mac: MacAddr) {
    let (dst, rest) = frame.split_at_mut(6);
    dst.copy_from_slice(&rest[..6]);
    rest[..6].copy_from_slice(&mac.0);
}
