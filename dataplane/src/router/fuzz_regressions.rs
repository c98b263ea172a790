//! Frames the fuzz targets (`dataplane/fuzz`) found mishandled, through the
//! router as the worker calls it.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::*;
use crate::dns::DnsTable;
use crate::nat::{Conntrack, Timeouts};
use crate::wire::{EthernetFrame, Icmpv4Packet, Ipv4Packet};

const GW_MAC: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x58, 0x00, 0x01]);

fn router() -> (Router, NetConfig) {
    let ct = Conntrack::new(16, Timeouts::default()).unwrap();
    let r = Router::new(0, 1, Arc::new(ArpCache::new(16)), CookieKey::new([7; 16]), ct);
    let nc = NetConfig {
        gateway: GatewayConfig {
            ip: Ipv4Addr::new(10, 88, 0, 1),
            mac: GW_MAC,
            subnet: Subnet::new(Ipv4Addr::new(10, 88, 0, 0), 24),
        },
        mtu: 1500,
        icc: true,
        masquerade: true,
        internal: false,
        dns: Arc::new(DnsTable::empty()),
        overlay: None,
    };
    (r, nc)
}

/// A ping of the gateway with identifier, sequence number and data all
/// zero: its reply is all zeros but the checksum, which must be 0xffff; the
/// incremental update alone (RFC 1624 eqn. 3) gave 0x0000, which the
/// container's kernel drops. This frame makes the `pipeline` target fail
/// (found while fuzzing the ICMP view, see `wire::icmpv4`).
#[test]
fn echo_reply_that_is_all_zeros_has_a_valid_checksum() {
    let frame: [u8; 42] = [
        0x02, 0x42, 0x0a, 0x58, 0x00, 0x01, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x08, 0x00, // to the gateway
        0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x40, 0x00, 0x40, 0x01, 0x26, 0x2e, //
        0x0a, 0x58, 0x00, 0x02, 0x0a, 0x58, 0x00, 0x01, // 10.88.0.2 -> 10.88.0.1
        0x08, 0x00, 0xf7, 0xff, 0x00, 0x00, 0x00, 0x00, // echo request, id 0, seq 0
    ];
    let (mut r, nc) = router();
    let st = WorkerStats::default();
    let mut b = PacketBuf::new();
    assert!(b.fill(&frame));
    assert_eq!(r.from_net(&nc, &mut b, 0, &st), Action::Reply);
    let f = b.frame();
    assert_eq!(EthernetFrame::new_checked(f).unwrap().src(), GW_MAC);
    let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.payload(), &[0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    assert!(Icmpv4Packet::new_checked(ip.payload()).unwrap().verify_checksum());
}
