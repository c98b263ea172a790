//! Frames for the wire suite, built with our own `Repr`s.
//!
//! Built with the wire `Repr`s, so every frame has correct lengths and
//! checksums. Allocation is fine here: builders run once, outside the
//! measured loops.

use dataplane::wire::{
    ethernet, gre, ipv4, tcp, udp, vxlan, EtherType, EthernetFrame, GrePacket, IpProtocol, Ipv4Packet, MacAddr,
    TcpPacket, UdpPacket, Vni, VxlanPacket,
};
use std::net::Ipv4Addr;

pub const CONTAINER_MAC: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]);
pub const GATEWAY_MAC: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x01]);
pub const CONTAINER_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
pub const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);
pub const UNDERLAY_SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
pub const UNDERLAY_DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 11);

/// Bytes the outer Ethernet, IPv4, UDP and VXLAN headers take.
pub const VXLAN_OVERHEAD: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN + vxlan::HEADER_LEN;
/// Bytes the outer Ethernet, IPv4 and keyed GRE headers take.
pub const GRE_KEY_OVERHEAD: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + gre::HEADER_LEN + 4;

fn eth(buf: &mut [u8], src: MacAddr, dst: MacAddr) {
    ethernet::Repr { src_addr: src, dst_addr: dst, ethertype: EtherType::Ipv4 }
        .emit(&mut EthernetFrame::new_unchecked(buf));
}

fn ip(buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, payload_len: usize) {
    ipv4::Repr { src_addr: src, dst_addr: dst, protocol, payload_len, ttl: 64, ident: 0x1c46, dont_frag: true }
        .emit(&mut Ipv4Packet::new_unchecked(buf));
}

/// Ethernet / IPv4 / TCP (ACK|PSH, no options) with `payload_len` bytes of
/// data; 1460 gives a full 1514-byte frame.
pub fn eth_ipv4_tcp(payload_len: usize) -> Vec<u8> {
    let ip_off = ethernet::HEADER_LEN;
    let tcp_off = ip_off + ipv4::HEADER_LEN;
    let mut f = vec![0u8; tcp_off + tcp::HEADER_LEN + payload_len];
    for (i, b) in f[tcp_off + tcp::HEADER_LEN..].iter_mut().enumerate() {
        *b = i as u8;
    }
    eth(&mut f, CONTAINER_MAC, GATEWAY_MAC);
    ip(&mut f[ip_off..], CONTAINER_IP, REMOTE_IP, IpProtocol::Tcp, tcp::HEADER_LEN + payload_len);
    let mut t = TcpPacket::new_unchecked(&mut f[tcp_off..]);
    tcp::Repr {
        src_port: 45678,
        dst_port: 443,
        seq_number: 0x1234_5678,
        ack_number: 0x9abc_def0,
        flags: tcp::Flags::ACK | tcp::Flags::PSH,
        window_len: 502,
    }
    .emit(&mut t);
    t.fill_checksum_ipv4(CONTAINER_IP, REMOTE_IP);
    f
}

/// Ethernet / IPv4 / UDP with `payload_len` bytes of data.
pub fn eth_ipv4_udp(payload_len: usize) -> Vec<u8> {
    let ip_off = ethernet::HEADER_LEN;
    let udp_off = ip_off + ipv4::HEADER_LEN;
    let mut f = vec![0x5au8; udp_off + udp::HEADER_LEN + payload_len];
    eth(&mut f, CONTAINER_MAC, GATEWAY_MAC);
    ip(&mut f[ip_off..], CONTAINER_IP, REMOTE_IP, IpProtocol::Udp, udp::HEADER_LEN + payload_len);
    let mut u = UdpPacket::new_unchecked(&mut f[udp_off..]);
    udp::Repr { src_port: 40000, dst_port: 53, payload_len }.emit(&mut u);
    u.fill_checksum_ipv4(CONTAINER_IP, REMOTE_IP);
    f
}

/// Write the outer headers of a VXLAN packet in front of the inner frame
/// already at `buf[VXLAN_OVERHEAD..]`. The UDP checksum is left zero, as
/// Linux sends it over IPv4 by default (RFC 7348 §5).
#[inline]
pub fn vxlan_encap(buf: &mut [u8], vni: Vni) {
    let inner_len = buf.len() - VXLAN_OVERHEAD;
    let ip_off = ethernet::HEADER_LEN;
    let udp_off = ip_off + ipv4::HEADER_LEN;
    let vx_off = udp_off + udp::HEADER_LEN;
    eth(buf, MacAddr([0x02, 0, 0, 0, 0, 0x0a]), MacAddr([0x02, 0, 0, 0, 0, 0x0b]));
    let udp_len = udp::HEADER_LEN + vxlan::HEADER_LEN + inner_len;
    ip(&mut buf[ip_off..], UNDERLAY_SRC, UNDERLAY_DST, IpProtocol::Udp, udp_len);
    udp::Repr { src_port: 49152, dst_port: vxlan::UDP_PORT, payload_len: udp_len - udp::HEADER_LEN }
        .emit(&mut UdpPacket::new_unchecked(&mut buf[udp_off..]));
    vxlan::Repr { vni }.emit(&mut VxlanPacket::new_unchecked(&mut buf[vx_off..]));
}

/// Write the outer headers of a keyed Ethernet-over-GRE packet (`gretap key
/// N`) in front of the inner frame already at `buf[GRE_KEY_OVERHEAD..]`.
#[inline]
pub fn gre_encap(buf: &mut [u8], key: u32) {
    let ip_off = ethernet::HEADER_LEN;
    let gre_off = ip_off + ipv4::HEADER_LEN;
    eth(buf, MacAddr([0x02, 0, 0, 0, 0, 0x0a]), MacAddr([0x02, 0, 0, 0, 0, 0x0b]));
    let gre_len = buf.len() - gre_off;
    ip(&mut buf[ip_off..], UNDERLAY_SRC, UNDERLAY_DST, IpProtocol::Gre, gre_len);
    gre::Repr { protocol: gre::Protocol::TransparentEthernet, checksum: false, key: Some(key), seq_number: None }
        .emit(&mut GrePacket::new_unchecked(&mut buf[gre_off..]));
}

/// `inner` with room for `overhead` bytes of outer headers in front.
pub fn with_headroom(inner: &[u8], overhead: usize) -> Vec<u8> {
    let mut buf = vec![0u8; overhead + inner.len()];
    buf[overhead..].copy_from_slice(inner);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_produce_valid_frames() {
        let f = eth_ipv4_tcp(1460);
        assert_eq!(f.len(), 1514);
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert!(TcpPacket::new_checked(ip.payload()).unwrap().verify_checksum_ipv4(CONTAINER_IP, REMOTE_IP));

        let mut v = with_headroom(&eth_ipv4_udp(64), VXLAN_OVERHEAD);
        vxlan_encap(&mut v, Vni::new(42).unwrap());
        let ip = Ipv4Packet::new_checked(&v[14..]).unwrap();
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(ip.verify_checksum() && u.verify_checksum_ipv4(UNDERLAY_SRC, UNDERLAY_DST));
        assert_eq!(VxlanPacket::new_checked(u.payload()).unwrap().vni().get(), 42);

        let mut g = with_headroom(&eth_ipv4_udp(64), GRE_KEY_OVERHEAD);
        gre_encap(&mut g, 7);
        let ip = Ipv4Packet::new_checked(&g[14..]).unwrap();
        let gre = GrePacket::new_checked(ip.payload()).unwrap();
        assert_eq!(gre.key(), Some(7));
        assert_eq!(gre.payload(), &eth_ipv4_udp(64)[..]);
    }
}
