//! Builders for realistic frames, shared by the criterion suites in
//! `bench/benches/` (this file: Docker-style hosts and the mixed batches of
//! the bridge and pipeline suites; [`wire`]: the frames of the wire suite).
//!
//! Frames are built with etherparse's `PacketBuilder`, so the headers,
//! lengths and checksums are those a real stack would write; only the
//! virtio-net header is written with our own [`dataplane::wire::VnetHdr`].
//! Hosts follow Docker's conventions: MAC `02:42` followed by the IPv4
//! address, one container per TAP port.
//!
//! What a frame looks like as a worker reads it from a TAP queue:
//! `[10-byte virtio-net header][Ethernet frame]`, see [`vnet_prefixed`].

pub mod wire;

use control::ipam::mac_for;
use dataplane::packet::PacketBuf;
use dataplane::port::PortId;
use dataplane::wire::{vnet, VnetHdr, VNET_HDR_LEN};
use dataplane::BATCH;
use etherparse::{EtherType, Ethernet2Header, PacketBuilder, TcpOptionElement};

/// Largest TCP payload of one wire segment with timestamps (1500 - 20 - 32).
pub const MSS: usize = 1448;
/// Payload of a 64 KiB TSO super-frame: as many full segments as fit under
/// the 64 KiB IPv4 limit (45 × 1448 = 65160; the frame is 65226 bytes).
pub const TSO_PAYLOAD: usize = 45 * MSS;
/// Ethernet + IPv4 + TCP-with-timestamps header bytes (the TSO `hdr_len`).
pub const TCP_HDRS_LEN: usize = 14 + 20 + 32;

const SPORT: u16 = 40_000;
const DPORT: u16 = 5201; // iperf3

/// One container: its MAC (Docker style), IPv4 address and TAP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub mac: [u8; 6],
    pub ip: [u8; 4],
    pub port: PortId,
}

impl Host {
    /// Container `i` of network 10.88.0.0/16 on port `i` (addresses start
    /// at .2: .1 is the gateway).
    pub fn nth(i: usize) -> Host {
        let n = i as u32 + 2;
        let ip = [10, 88, (n >> 8) as u8, n as u8];
        Host { mac: mac_for(ip.into()).octets(), ip, port: i as PortId }
    }
}

/// The IPv4 address a Docker MAC encodes (its last four octets).
fn ip_of(mac: [u8; 6]) -> [u8; 4] {
    [mac[2], mac[3], mac[4], mac[5]]
}

/// A virtio-net header with no offload: what the kernel writes for every
/// frame that is not a GSO super-frame and has its checksum complete.
pub const VNET_NONE: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// The virtio-net header of a TCPv4 TSO super-frame as read from a TAP
/// while iperf3 runs: NEEDS_CSUM, GSO_TCPV4, gso_size 1448, hdr_len 66,
/// checksum at 34 + 16 (the TCP checksum field).
pub fn vnet_tso4() -> [u8; VNET_HDR_LEN] {
    let mut b = [0xa5; VNET_HDR_LEN];
    let mut h = VnetHdr::new_unchecked(&mut b[..]);
    h.clear();
    h.set_flags(vnet::F_NEEDS_CSUM);
    h.set_gso_type(vnet::GSO_TCPV4);
    h.set_gso_size(MSS as u16);
    h.set_hdr_len(TCP_HDRS_LEN as u16);
    h.set_csum_start(14 + 20);
    h.set_csum_offset(16);
    b
}

/// `hdr` followed by `frame`: one packet as read from a TAP queue.
pub fn vnet_prefixed(hdr: [u8; VNET_HDR_LEN], frame: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(VNET_HDR_LEN + frame.len());
    v.extend_from_slice(&hdr);
    v.extend_from_slice(frame);
    v
}

/// An Ethernet/IPv4/TCP segment (ACK|PSH, timestamps option) of an iperf3
/// flow from `src` to `dst` carrying `payload_len` bytes; 0 makes a pure
/// ACK (66 bytes). IPv4 addresses are taken from the Docker MACs.
pub fn tcp_frame(src: [u8; 6], dst: [u8; 6], payload_len: usize) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src, dst)
        .ipv4(ip_of(src), ip_of(dst), 64)
        .tcp(SPORT, DPORT, 0x1234_5678, 502)
        .ack(0x9abc_def0)
        .options(&[TcpOptionElement::Noop, TcpOptionElement::Noop, TcpOptionElement::Timestamp(1_000_000, 999_000)])
        .expect("timestamps fit in the TCP options");
    if payload_len > 0 {
        b = b.psh();
    }
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let mut f = Vec::with_capacity(b.size(payload_len));
    b.write(&mut f, &payload).expect("TCP segment within IPv4 limits");
    f
}

/// An Ethernet/IPv4/UDP datagram from `src` to `dst` (a DNS-sized query to
/// port 53 for small payloads).
pub fn udp_frame(src: [u8; 6], dst: [u8; 6], payload_len: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src, dst).ipv4(ip_of(src), ip_of(dst), 64).udp(53_000, 53);
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let mut f = Vec::with_capacity(b.size(payload_len));
    b.write(&mut f, &payload).expect("UDP datagram within IPv4 limits");
    f
}

/// A broadcast ARP request "who has `target_ip`? tell `sender_ip`" (RFC 826),
/// 42 bytes as a Linux stack writes it to a TAP (no padding: that is added
/// by NICs, not by the TAP driver). etherparse 0.16 has no ARP builder, so
/// the 28-byte body is written here.
pub fn arp_request(src: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let eth = Ethernet2Header { source: src, destination: [0xff; 6], ether_type: EtherType::ARP };
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth.to_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op request.
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f
}

/// A 64 KiB TCP super-frame from `src` to `dst` behind its TSO header, as a
/// container with TSO on writes bulk data to its TAP.
pub fn tso_super_frame(src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    vnet_prefixed(vnet_tso4(), &tcp_frame(src, dst, TSO_PAYLOAD))
}

/// Frames read from one ingress port in one batch.
#[derive(Debug, Clone)]
pub struct IngressBatch {
    pub ingress: PortId,
    /// Packets with their virtio-net header.
    pub pkts: Vec<Vec<u8>>,
}

/// A deterministic shuffle (xorshift64) so verdict patterns are not periodic
/// within a batch.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    seed |= 1;
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// Traffic of `pairs` container pairs (hosts `2k` and `2k + 1`, see
/// [`Host::nth`]), as batches of [`BATCH`] packets, one batch per ingress
/// port. In each pair, `2k` sends bulk TCP data to `2k + 1`, which mostly
/// acknowledges it. Per batch, shuffled:
///
/// - from the sender: 12 TSO super-frames (64 KiB), 12 MSS-sized segments,
///   6 pure ACKs (of a reverse request/response flow), 1 UDP query, 1 ARP
///   request (broadcast);
/// - from the receiver: 28 pure ACKs, 2 small data segments (responses),
///   1 UDP query, 1 ARP request (broadcast).
///
/// So about 3 % of frames are flooded broadcasts and the rest is known
/// unicast once both MACs are learned.
pub fn mixed_batch(pairs: usize) -> Vec<IngressBatch> {
    let mut out = Vec::with_capacity(2 * pairs);
    for k in 0..pairs {
        let (a, b) = (Host::nth(2 * k), Host::nth(2 * k + 1));
        let mut tx = Vec::with_capacity(BATCH);
        for _ in 0..12 {
            tx.push(tso_super_frame(a.mac, b.mac));
            tx.push(vnet_prefixed(VNET_NONE, &tcp_frame(a.mac, b.mac, MSS)));
        }
        for _ in 0..6 {
            tx.push(vnet_prefixed(VNET_NONE, &tcp_frame(a.mac, b.mac, 0)));
        }
        tx.push(vnet_prefixed(VNET_NONE, &udp_frame(a.mac, b.mac, 40)));
        tx.push(vnet_prefixed(VNET_NONE, &arp_request(a.mac, a.ip, b.ip)));
        shuffle(&mut tx, 2 * k as u64 + 1);

        let mut rx = Vec::with_capacity(BATCH);
        for _ in 0..28 {
            rx.push(vnet_prefixed(VNET_NONE, &tcp_frame(b.mac, a.mac, 0)));
        }
        for _ in 0..2 {
            rx.push(vnet_prefixed(VNET_NONE, &tcp_frame(b.mac, a.mac, 200)));
        }
        rx.push(vnet_prefixed(VNET_NONE, &udp_frame(b.mac, a.mac, 40)));
        rx.push(vnet_prefixed(VNET_NONE, &arp_request(b.mac, b.ip, a.ip)));
        shuffle(&mut rx, 2 * k as u64 + 2);

        debug_assert!(tx.len() == BATCH && rx.len() == BATCH);
        out.push(IngressBatch { ingress: a.port, pkts: tx });
        out.push(IngressBatch { ingress: b.port, pkts: rx });
    }
    out
}

/// Receive buffers as a worker's: [`BATCH`] packet buffers, each packet
/// where a port's read puts it. The frames' headers then sit at the same
/// addresses modulo the page size as in the worker, so cache behaviour
/// matches.
pub struct RxBufs {
    bufs: Vec<PacketBuf>,
    lens: Vec<usize>,
}

impl RxBufs {
    /// Buffers holding `pkts` (`[virtio-net header | frame]`, at most
    /// [`BATCH`]) where a port's read puts them.
    pub fn new(pkts: &[Vec<u8>]) -> RxBufs {
        assert!(pkts.len() <= BATCH);
        let mut bufs: Vec<PacketBuf> = (0..pkts.len()).map(|_| PacketBuf::new()).collect();
        let mut lens = Vec::with_capacity(pkts.len());
        for (b, p) in bufs.iter_mut().zip(pkts) {
            b.rx_area(true)[..p.len()].copy_from_slice(p);
            lens.push(p.len());
        }
        RxBufs { bufs, lens }
    }
    /// What the worker does after the read: parse and check each virtio-net
    /// header into the buffer's metadata. Returns the buffers.
    pub fn receive(&mut self, port: u16) -> &[PacketBuf] {
        for (b, &n) in self.bufs.iter_mut().zip(&self.lens) {
            b.set_received(n, true, port).expect("bench frames are well formed");
        }
        &self.bufs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::wire::{EtherType as DpEtherType, EthernetFrame, MacAddr};
    use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};

    fn check_eth(frame: &[u8], src: [u8; 6], dst: [u8; 6], et: DpEtherType) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.src(), MacAddr(src));
        assert_eq!(eth.dst(), MacAddr(dst));
        assert_eq!(eth.ethertype(), et);
    }

    #[test]
    fn tcp_frames_parse_both_ways() {
        let (a, b) = (Host::nth(0), Host::nth(1));
        for len in [0, 200, MSS, TSO_PAYLOAD] {
            let f = tcp_frame(a.mac, b.mac, len);
            assert_eq!(f.len(), TCP_HDRS_LEN + len);
            check_eth(&f, a.mac, b.mac, DpEtherType::Ipv4);
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(LinkSlice::Ethernet2(e)) = &p.link else { panic!("no Ethernet") };
            assert_eq!((e.source(), e.destination()), (a.mac, b.mac));
            let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("no IPv4") };
            assert_eq!(ip.header().source(), a.ip);
            assert_eq!(ip.header().destination(), b.ip);
            let Some(TransportSlice::Tcp(t)) = &p.transport else { panic!("no TCP") };
            assert_eq!((t.source_port(), t.destination_port(), t.header_len()), (SPORT, DPORT, 32));
            assert_eq!(t.payload().len(), len);
        }
    }

    #[test]
    fn udp_and_arp_parse_both_ways() {
        let (a, b) = (Host::nth(4), Host::nth(300));
        assert_eq!(b.ip, [10, 88, 1, 46]);
        let f = udp_frame(a.mac, b.mac, 40);
        check_eth(&f, a.mac, b.mac, DpEtherType::Ipv4);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Udp(u)) = &p.transport else { panic!("no UDP") };
        assert_eq!((u.destination_port(), u.payload().len()), (53, 40));

        let f = arp_request(a.mac, a.ip, b.ip);
        assert_eq!(f.len(), 42);
        check_eth(&f, a.mac, [0xff; 6], DpEtherType::Arp);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(LinkSlice::Ethernet2(e)) = &p.link else { panic!("no Ethernet") };
        assert_eq!((e.source(), e.destination(), e.ether_type()), (a.mac, [0xff; 6], EtherType::ARP));
        assert_eq!(&f[28..32], &a.ip);
        assert_eq!(&f[38..42], &b.ip);
    }

    #[test]
    fn vnet_headers_validate() {
        let (a, b) = (Host::nth(0), Host::nth(1));
        let p = tso_super_frame(a.mac, b.mac);
        assert_eq!(p.len(), VNET_HDR_LEN + 65226);
        assert_eq!(&p[..VNET_HDR_LEN], &[0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00]);
        let (h, f) = p.split_at(VNET_HDR_LEN);
        let h = VnetHdr::new_checked(h).unwrap();
        assert!(h.is_gso());
        assert_eq!(h.validate(f.len()), Ok(()));
        check_eth(f, a.mac, b.mac, DpEtherType::Ipv4);
        assert!(SlicedPacket::from_ethernet(f).is_ok());
        let p = vnet_prefixed(VNET_NONE, &tcp_frame(a.mac, b.mac, 0));
        assert_eq!(VnetHdr::new_checked(&p[..]).unwrap().validate(p.len() - VNET_HDR_LEN), Ok(()));
    }

    #[test]
    fn mixed_batches_are_full_and_from_their_port() {
        let batches = mixed_batch(3);
        assert_eq!(batches.len(), 6);
        for b in &batches {
            assert_eq!(b.pkts.len(), BATCH);
            let src = Host::nth(b.ingress as usize).mac;
            let mut arp = 0;
            for p in &b.pkts {
                let (h, f) = p.split_at(VNET_HDR_LEN);
                assert_eq!(VnetHdr::new_checked(h).unwrap().validate(f.len()), Ok(()));
                let eth = EthernetFrame::new_checked(f).unwrap();
                assert_eq!(eth.src(), MacAddr(src));
                assert!(SlicedPacket::from_ethernet(f).is_ok());
                arp += (eth.ethertype() == DpEtherType::Arp) as usize;
            }
            assert_eq!(arp, 1);
        }
        let mut bufs = RxBufs::new(&batches[0].pkts);
        let pkts = bufs.receive(batches[0].ingress);
        assert!(pkts.iter().zip(&batches[0].pkts).all(|(a, b)| a.frame() == &b[VNET_HDR_LEN..]));
        assert!(pkts.iter().all(|p| p.meta.port == batches[0].ingress));
    }
}
