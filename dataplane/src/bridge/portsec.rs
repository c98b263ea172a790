//! Port security (`network create --port-security`): a container's port
//! pinned to the MAC and IPv4 address tapnet gave it, checked on every
//! frame the container sends, before the bridge learns anything from it.
//! What fails is dropped and counted under its own reason.
//!
//! What is checked, and why no more:
//! - every frame: the Ethernet source is the pinned MAC (`spoofed_mac`);
//! - IPv4: the source address is the pinned one (`spoofed_ip`). 0.0.0.0 is
//!   refused too: tapnet has no DHCP, and a container's address is set
//!   before its interface comes up, so nothing legitimate sends from it. A
//!   frame too short for an IPv4 header, or not version 4, is `bad_ipv4`;
//! - ARP (RFC 826): the sender hardware and protocol addresses are the
//!   pinned ones (`spoofed_arp`), for requests and replies alike, so
//!   gratuitous ARP for another address is refused as well. A request whose
//!   sender address is 0.0.0.0 passes: it is an address probe (RFC 5227
//!   §2.1.1), which claims nothing and updates no cache. Malformed or non
//!   Ethernet/IPv4 ARP is `bad_arp`;
//! - any other EtherType passes from the pinned MAC. tapnet gives
//!   containers no IPv6 address and disables IPv6 in their namespaces, as
//!   Docker does on IPv4-only networks, so there is no IPv6 address to
//!   claim; and the gateway handles only IPv4 and ARP. 802.1Q-tagged frames
//!   reach neither the gateway (`not_ipv4`) nor a container without a VLAN
//!   device of its own.

use std::net::Ipv4Addr;

use crate::stats::DropReason;
use crate::wire::arp::Operation;
use crate::wire::{ipv4, ArpPacket, EtherType, EthernetFrame, Ipv4Packet, MacAddr};

/// The only source MAC and IPv4 address a port may send from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

impl Pin {
    /// Whether `eth`, sent by the port, keeps to the pinned addresses; if
    /// not, the reason to drop it under.
    #[inline]
    pub fn check(&self, eth: &EthernetFrame<&[u8]>) -> Result<(), DropReason> {
        if eth.src() != self.mac {
            return Err(DropReason::SpoofedMac);
        }
        match eth.ethertype() {
            EtherType::Ipv4 => {
                let p = eth.payload();
                if p.len() < ipv4::HEADER_LEN {
                    return Err(DropReason::BadIpv4);
                }
                let ip = Ipv4Packet::new_unchecked(p);
                if ip.version() != 4 {
                    return Err(DropReason::BadIpv4);
                }
                if ip.src_addr() != self.ip {
                    return Err(DropReason::SpoofedIp);
                }
                Ok(())
            }
            EtherType::Arp => {
                let arp = ArpPacket::new_checked(eth.payload()).map_err(|_| DropReason::BadArp)?;
                let spa = arp.sender_proto_addr();
                let probe = spa.is_unspecified() && arp.operation() == Operation::Request;
                if arp.sender_hw_addr() != self.mac || (spa != self.ip && !probe) {
                    return Err(DropReason::SpoofedArp);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: Pin = Pin { mac: MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x02]), ip: Ipv4Addr::new(10, 88, 0, 2) };

    /// ARP request who-has 10.88.0.3 tell 10.88.0.2, from 02:42:0a:58:00:02,
    /// as a container sends it.
    const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00,
        0x06, 0x04, 0x00, 0x01, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x0a, 0x58, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x0a, 0x58, 0x00, 0x03,
    ];

    /// ICMP echo request 10.88.0.2 -> 10.88.0.3 from 02:42:0a:58:00:02 to
    /// 02:42:0a:58:00:03 (header checksum correct).
    const ECHO: [u8; 42] = [
        0x02, 0x42, 0x0a, 0x58, 0x00, 0x03, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x08, 0x00, 0x45, 0x00, 0x00, 0x1c,
        0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x13, 0xf9, 0x0a, 0x58, 0x00, 0x02, 0x0a, 0x58, 0x00, 0x03, 0x08, 0x00,
        0xf7, 0xfe, 0x00, 0x01, 0x00, 0x00,
    ];

    fn check(f: &[u8]) -> Result<(), DropReason> {
        PIN.check(&EthernetFrame::new_checked(f).unwrap())
    }

    #[test]
    fn the_containers_own_frames_pass() {
        assert!(Ipv4Packet::new_checked(&ECHO[14..]).unwrap().verify_checksum());
        assert_eq!(check(&ECHO), Ok(()));
        assert_eq!(check(&ARP_REQUEST), Ok(()));
        // Its ARP reply: is-at, sender = itself.
        let mut reply = ARP_REQUEST;
        reply[21] = 2;
        reply[32..38].copy_from_slice(&[0x02, 0x42, 0x0a, 0x58, 0x00, 0x03]);
        assert_eq!(check(&reply), Ok(()));
        // A gratuitous ARP for its own address.
        let mut garp = ARP_REQUEST;
        garp[38..42].copy_from_slice(&[10, 88, 0, 2]);
        assert_eq!(check(&garp), Ok(()));
        // An RFC 5227 probe: sender 0.0.0.0.
        let mut probe = ARP_REQUEST;
        probe[28..32].fill(0);
        assert_eq!(check(&probe), Ok(()));
        // Another EtherType (IPv6 here) from the pinned MAC.
        let mut v6 = ECHO;
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(check(&v6), Ok(()));
    }

    #[test]
    fn another_source_mac_is_spoofed_mac_whatever_the_frame() {
        for f in [&ECHO[..], &ARP_REQUEST[..]] {
            let mut f = f.to_vec();
            f[11] = 0x09;
            assert_eq!(check(&f), Err(DropReason::SpoofedMac));
        }
        let mut v6 = ECHO;
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[6] = 0x06;
        assert_eq!(check(&v6), Err(DropReason::SpoofedMac));
    }

    #[test]
    fn another_or_no_source_ip_is_spoofed_ip() {
        let mut f = ECHO;
        f[29] = 3; // 10.88.0.3, a neighbour
        assert_eq!(check(&f), Err(DropReason::SpoofedIp));
        f[26..30].fill(0); // 0.0.0.0
        assert_eq!(check(&f), Err(DropReason::SpoofedIp));
        // Too short to tell, or not IPv4 at all.
        assert_eq!(check(&ECHO[..33]), Err(DropReason::BadIpv4));
        let mut v = ECHO;
        v[14] = 0x65;
        assert_eq!(check(&v), Err(DropReason::BadIpv4));
    }

    #[test]
    fn arp_claiming_another_address_is_spoofed_arp() {
        // Gratuitous ARP claiming 10.88.0.3 (a neighbour's address).
        let mut garp = ARP_REQUEST;
        garp[31] = 3;
        garp[41] = 3;
        assert_eq!(check(&garp), Err(DropReason::SpoofedArp));
        // A forged reply: 10.88.0.3 is-at our MAC, to the neighbour.
        let mut reply = garp;
        reply[21] = 2;
        reply[..6].copy_from_slice(&[0x02, 0x42, 0x0a, 0x58, 0x00, 0x04]);
        assert_eq!(check(&reply), Err(DropReason::SpoofedArp));
        // The right IP with another sender MAC inside the ARP packet.
        let mut sha = ARP_REQUEST;
        sha[27] = 0x09;
        assert_eq!(check(&sha), Err(DropReason::SpoofedArp));
        // A reply from 0.0.0.0 is no probe.
        let mut zero = ARP_REQUEST;
        zero[21] = 2;
        zero[28..32].fill(0);
        assert_eq!(check(&zero), Err(DropReason::SpoofedArp));
        // Truncated, or not Ethernet/IPv4.
        assert_eq!(check(&ARP_REQUEST[..41]), Err(DropReason::BadArp));
        let mut hw = ARP_REQUEST;
        hw[15] = 6;
        assert_eq!(check(&hw), Err(DropReason::BadArp));
    }
}
