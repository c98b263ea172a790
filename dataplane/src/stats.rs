//! Counters. Each worker owns a [`WorkerStats`] and is its only writer, so a
//! counter update is a relaxed load and store (no locked instruction, no
//! cache line shared with another worker). The control plane reads all
//! workers' counters and sums them; a read may be a few packets stale, never
//! torn.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::port::PortId;

/// How many ports (and so port ids) one dataplane supports.
pub const MAX_PORTS: usize = 1024;
/// How many networks (bridges) one dataplane supports.
pub const MAX_NETWORKS: usize = 256;

/// Index of a network (one learning bridge), allocated by the control plane.
pub type NetId = u16;

/// A counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed)
    }
    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    /// Reset to zero; only while no worker writes this counter.
    pub fn reset(&self) {
        self.0.store(0, Relaxed)
    }
}

macro_rules! reasons {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            pub const COUNT: usize = Self::ALL.len();
            /// Stable snake_case name used by `tapnet stats` and the API.
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }
        }
    };
}

reasons! {
    /// Why a frame was dropped. Every drop is counted under one reason.
    DropReason {
        /// Shorter than a virtio-net header plus an Ethernet header.
        Runt => "runt",
        /// Longer than a receive buffer, or than the egress port's MTU (a GSO
        /// super-frame counts by its segment size) with no way to fragment.
        Oversize => "oversize",
        /// The virtio-net header is inconsistent with the frame.
        BadVnetHdr => "bad_vnet_hdr",
        /// Source MAC is multicast, broadcast or all-zero.
        BadSrcMac => "bad_src_mac",
        /// Destination is an IEEE 802.1D link-local group (STP, LACP, 802.1X).
        LinkLocalDst => "link_local_dst",
        /// The destination was learned on the ingress port itself.
        DstIsIngress => "dst_is_ingress",
        /// The ingress port is not (or no longer) attached to a network.
        NoNetwork => "no_network",
        /// The egress port refused the frame (device down, queue full).
        TxError => "tx_error",
        /// Reading from the port failed with something other than "no data".
        RxError => "rx_error",
        /// The source MAC is pinned (static) to another port, e.g. the gateway's.
        StaticMac => "static_mac",
        /// Container-to-container traffic on a network created with `--icc=false`.
        IccBlocked => "icc_blocked",
        /// Sent to the gateway or the uplink but neither IPv4 nor ARP.
        NotIpv4 => "not_ipv4",
        /// A malformed ARP packet at the gateway or the uplink.
        BadArp => "bad_arp",
        /// A malformed IPv4 header: length, version, header checksum.
        BadIpv4 => "bad_ipv4",
        /// A TCP, UDP or ICMP header too short or inconsistent to route or translate.
        BadL4 => "bad_l4",
        /// The TTL ran out at the gateway (an ICMP Time Exceeded was sent back).
        TtlExceeded => "ttl_exceeded",
        /// No route: another tapnet network (networks are isolated, as in
        /// Docker), a directed broadcast, or nowhere to send it.
        NoRoute => "no_route",
        /// Leaving a network created with `--internal`.
        Internal => "internal",
        /// No uplink is configured.
        NoUplink => "no_uplink",
        /// On the uplink, addressed to an IPv4 address that is not ours.
        NotForUs => "not_for_us",
        /// On the uplink, no connection and no published port matches.
        NoFlow => "no_flow",
        /// To a closed port (or an unanswered protocol) of the gateway or uplink address.
        PortClosed => "port_closed",
        /// The connection table is full: new flows are refused.
        ConntrackFull => "conntrack_full",
        /// A packet that cannot start a flow (a TCP RST, an ICMP error with no flow).
        ConntrackInvalid => "conntrack_invalid",
        /// No free NAT port (or ICMP identifier) for a new flow.
        NatPortsExhausted => "nat_ports_exhausted",
        /// A new flow's translated tuple already belongs to another live flow.
        NatTupleInUse => "nat_tuple_in_use",
        /// A protocol NAT does not translate (not TCP, UDP or ICMP echo/errors).
        NatUnsupported => "nat_unsupported",
        /// An IPv4 fragment at the NAT (tapnet does not reassemble).
        Fragment => "fragment",
        /// The next hop's MAC could not be resolved in time (or too many frames waited).
        ArpUnresolved => "arp_unresolved",
        /// The worker owning the flow had no room for another handed-off frame.
        HandoffFull => "handoff_full",
        /// A DNS query to the gateway that could not be parsed or answered.
        DnsMalformed => "dns_malformed",
        /// An IPv4 fragment too large for the egress MTU with DF set (an
        /// ICMP fragmentation-needed was sent back).
        FragNeeded => "frag_needed",
        /// A tunnel datagram shorter than its header, or its inner frame
        /// shorter than an Ethernet header.
        TunnelTruncated => "tunnel_truncated",
        /// VXLAN flags other than I alone or reserved bits set; GRE version
        /// other than 0.
        TunnelBadFlags => "tunnel_bad_flags",
        /// GRE without a key, or with a protocol other than transparent
        /// Ethernet bridging.
        TunnelBadProtocol => "tunnel_bad_protocol",
        /// A GRE checksum that does not match.
        TunnelBadChecksum => "tunnel_bad_checksum",
        /// A VNI or key that names no overlay network here.
        TunnelUnknownId => "tunnel_unknown_id",
        /// From an address that is not a peer of the network.
        TunnelUnknownPeer => "tunnel_unknown_peer",
        /// A GSO super-frame of a kind that cannot be segmented in software
        /// before a tunnel (only TCP over IPv4 can).
        GsoUnsupported => "gso_unsupported",
        /// From a container port that already has as many MACs in the table
        /// as `--max-macs-per-port` allows, with a source MAC new to it.
        MacLimit => "mac_limit",
        /// Port security: a source MAC other than the port's own.
        SpoofedMac => "spoofed_mac",
        /// Port security: an IPv4 source address other than the port's own.
        SpoofedIp => "spoofed_ip",
        /// Port security: ARP whose sender MAC or address is not the port's own.
        SpoofedArp => "spoofed_arp",
    }
}

reasons! {
    /// Gateway and NAT events, counted per worker.
    RouterEvent {
        /// ARP requests for a gateway or uplink address answered.
        ArpReplied => "arp_replied",
        /// ARP requests sent to resolve a next hop on the uplink.
        ArpRequested => "arp_requested",
        /// ICMP echo requests to a gateway or the uplink address answered.
        EchoReplied => "echo_replied",
        /// DNS queries answered from a network's names.
        DnsAnswered => "dns_answered",
        /// DNS queries for names tapnet does not know, answered with an error.
        DnsRefused => "dns_refused",
        /// ICMP errors sent by the gateway (TTL, fragmentation needed, …).
        IcmpSent => "icmp_sent",
        /// ICMP errors about a translated flow, translated back.
        IcmpTranslated => "icmp_translated",
        /// Connections created.
        FlowsCreated => "flows_created",
        /// Connections that expired.
        FlowsExpired => "flows_expired",
        /// Frames handed to the worker that owns their flow.
        HandedOff => "handed_off",
        /// Frames received from another worker.
        HandedIn => "handed_in",
        /// Frames from the uplink that the kernel's steering delivered to a
        /// worker not owning their flow (handed over too). Stays 0 unless
        /// the steering program and the router disagree.
        UplinkMissteered => "uplink_missteered",
        /// Frames that waited for ARP resolution.
        ArpQueued => "arp_queued",
        /// Frames on the uplink that are not for tapnet (other addresses,
        /// other protocols): left to the kernel, not counted as drops.
        UplinkIgnored => "uplink_ignored",
        /// Overlay probes (`tapnet overlay check`) from a peer, answered.
        ProbesAnswered => "probes_answered",
    }
}

reasons! {
    /// Learning-bridge events, counted per network.
    BridgeEvent {
        /// A new MAC was learned.
        Learned => "learned",
        /// A known MAC appeared on another port and was moved.
        Moved => "moved",
        /// A new MAC could not be learned because the table is full.
        TableFull => "table_full",
        /// A frame was flooded (broadcast, multicast or unknown unicast).
        Flooded => "flooded",
        /// A unicast frame's destination was not in the table.
        UnknownUnicast => "unknown_unicast",
        /// A frame's source MAC is pinned to another port (learning refused).
        StaticConflict => "static_conflict",
        /// A frame's source MAC is new to its port, which is at its
        /// `--max-macs-per-port` limit (learning refused, frame dropped).
        MacLimit => "mac_limit",
    }
}

/// Per-port traffic counters of one worker.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    pub rx_dropped: Counter,
    pub tx_dropped: Counter,
}

impl PortCounters {
    pub fn reset(&self) {
        for c in
            [&self.rx_packets, &self.rx_bytes, &self.tx_packets, &self.tx_bytes, &self.rx_dropped, &self.tx_dropped]
        {
            c.reset()
        }
    }
}

/// All counters of one worker. Aligned so no two workers share a cache line.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerStats {
    pub ports: Box<[PortCounters]>,
    pub drops: [Counter; DropReason::COUNT],
    pub bridge: Box<[[Counter; BridgeEvent::COUNT]]>,
    pub router: [Counter; RouterEvent::COUNT],
    /// Polls that returned events (not empty busy-poll rounds), and frames
    /// handled: frames per wake-up is the batching achieved.
    pub wakeups: Counter,
    pub frames: Counter,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            ports: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
            drops: std::array::from_fn(|_| Counter::default()),
            bridge: (0..MAX_NETWORKS).map(|_| Default::default()).collect(),
            router: Default::default(),
            wakeups: Counter::default(),
            frames: Counter::default(),
        }
    }
}

impl WorkerStats {
    #[inline]
    pub fn drop(&self, reason: DropReason) {
        self.drops[reason as usize].inc()
    }
    #[inline]
    pub fn bridge(&self, net: NetId, ev: BridgeEvent) {
        self.bridge[net as usize][ev as usize].inc()
    }
    #[inline]
    pub fn router(&self, ev: RouterEvent) {
        self.router[ev as usize].inc()
    }
}

/// Counters of every worker.
#[derive(Debug)]
pub struct Stats {
    pub workers: Box<[WorkerStats]>,
}

/// Sum of one port's counters over all workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

impl Stats {
    pub fn new(workers: usize) -> Stats {
        Stats { workers: (0..workers).map(|_| WorkerStats::default()).collect() }
    }
    pub fn port(&self, port: PortId) -> PortTotals {
        let mut t = PortTotals::default();
        for w in self.workers.iter() {
            let p = &w.ports[port as usize];
            t.rx_packets += p.rx_packets.get();
            t.rx_bytes += p.rx_bytes.get();
            t.tx_packets += p.tx_packets.get();
            t.tx_bytes += p.tx_bytes.get();
            t.rx_dropped += p.rx_dropped.get();
            t.tx_dropped += p.tx_dropped.get();
        }
        t
    }
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|&r| (r, self.workers.iter().map(|w| w.drops[r as usize].get()).sum())).collect()
    }
    pub fn router(&self) -> Vec<(RouterEvent, u64)> {
        RouterEvent::ALL.iter().map(|&e| (e, self.workers.iter().map(|w| w.router[e as usize].get()).sum())).collect()
    }
    pub fn bridge(&self, net: NetId) -> Vec<(BridgeEvent, u64)> {
        BridgeEvent::ALL
            .iter()
            .map(|&e| (e, self.workers.iter().map(|w| w.bridge[net as usize][e as usize].get()).sum()))
            .collect()
    }
    /// Zero a port's counters before its id is handed out again. Only call
    /// while no worker has the port (after it was removed everywhere).
    pub fn reset_port(&self, port: PortId) {
        for w in self.workers.iter() {
            w.ports[port as usize].reset()
        }
    }
    pub fn reset_network(&self, net: NetId) {
        for w in self.workers.iter() {
            for c in w.bridge[net as usize].iter() {
                c.reset()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_workers() {
        let s = Stats::new(3);
        s.workers[0].ports[5].rx_packets.add(2);
        s.workers[2].ports[5].rx_packets.inc();
        s.workers[1].drop(DropReason::Runt);
        s.workers[1].bridge(7, BridgeEvent::Moved);
        assert_eq!(s.port(5).rx_packets, 3);
        assert_eq!(s.drops().iter().find(|(r, _)| *r == DropReason::Runt).unwrap().1, 1);
        assert_eq!(s.bridge(7)[BridgeEvent::Moved as usize], (BridgeEvent::Moved, 1));
        s.reset_port(5);
        assert_eq!(s.port(5), PortTotals::default());
        assert_eq!(DropReason::ALL.len(), DropReason::COUNT);
        assert_eq!(DropReason::TxError.name(), "tx_error");
    }
}
