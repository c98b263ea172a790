//! The host the pipeline target simulates, with the addresses of the seed
//! captures (`seeds/capture.sh`):
//!
//! | network | subnet | gateway | ports (container) | policy |
//! |---|---|---|---|---|
//! | 0 `front` | 10.88.0.0/24 | 10.88.0.1 | 1 (10.88.0.2), 2 (10.88.0.3) | masquerade, icc |
//! | 1 `back` | 10.89.0.0/24 | 10.89.0.1 | 3 (10.89.0.2) | no masquerade, no icc, MTU 1280 |
//! | 2 `sealed` | 10.90.0.0/24 | 10.90.0.1 | 4 (10.90.0.2) | internal |
//!
//! The uplink is port 10, 192.168.1.10/24 behind 192.168.1.1 (whose MAC is
//! in the ARP cache at time 0); published ports: 8080/tcp to 10.88.0.2:80,
//! 5353/udp to 10.88.0.3:53, 2222/tcp to 10.89.0.2:22. The gateway of
//! `front` answers DNS for `web`, `db`, `web.front` and `many` (40
//! addresses, more than a 512-byte reply holds).

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use dataplane::bridge::Fdb;
use dataplane::dns::{CookieKey, DnsTable};
use dataplane::nat::{Conntrack, Timeouts};
use dataplane::port::steer::Steering;
use dataplane::port::{PortId, GATEWAY_PORT};
use dataplane::router::{
    ArpCache, Endpoint, GatewayConfig, NetConfig, Published, Router, RouterConfig, Subnet, UplinkConfig, L4,
};
use dataplane::stats::NetId;
use dataplane::wire::MacAddr;

/// Workers simulated: frames whose flow another worker owns are handed to
/// it, as the worker loop does.
pub const WORKERS: u16 = 2;
/// Connections each worker's table holds: small, so that it fills up.
pub const CONNTRACK_MAX: usize = 32;
/// MAC table entries per network: small, so that it fills up.
pub const FDB_MAX: usize = 8;
pub const FDB_AGEING_MS: u64 = 300_000;

pub const UPLINK_PORT: PortId = 10;
pub const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
pub const UPLINK_MAC: MacAddr = MacAddr([0x02, 0x00, 0xc0, 0xa8, 0x01, 0x0a]);
pub const UPLINK_GW: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
pub const UPLINK_GW_MAC: MacAddr = MacAddr([0x02, 0x00, 0xc0, 0xa8, 0x01, 0x01]);
pub const UPLINK_MTU: u32 = 1500;

/// One network of the host.
pub struct Net {
    pub id: NetId,
    pub fdb: Fdb,
    pub cfg: Arc<NetConfig>,
    /// Its access ports.
    pub ports: &'static [PortId],
}

/// A container interface: port, network index, address, MAC.
pub struct Container {
    pub port: PortId,
    pub net: usize,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

pub const CONTAINERS: [Container; 4] = [
    Container { port: 1, net: 0, ip: Ipv4Addr::new(10, 88, 0, 2), mac: MacAddr([2, 0x42, 10, 88, 0, 2]) },
    Container { port: 2, net: 0, ip: Ipv4Addr::new(10, 88, 0, 3), mac: MacAddr([2, 0x42, 10, 88, 0, 3]) },
    Container { port: 3, net: 1, ip: Ipv4Addr::new(10, 89, 0, 2), mac: MacAddr([2, 0x42, 10, 89, 0, 2]) },
    Container { port: 4, net: 2, ip: Ipv4Addr::new(10, 90, 0, 2), mac: MacAddr([2, 0x42, 10, 90, 0, 2]) },
];

/// Where a frame enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// A container's access port, by index into [`CONTAINERS`].
    Access(usize),
    Uplink,
}

impl Ingress {
    pub fn port(self) -> PortId {
        match self {
            Ingress::Access(i) => CONTAINERS[i].port,
            Ingress::Uplink => UPLINK_PORT,
        }
    }
}

/// The whole host: networks, router configuration, and one router per
/// worker sharing the ARP cache.
pub struct Host {
    pub nets: Vec<Net>,
    pub routers: Vec<Router>,
    pub arp: Arc<ArpCache>,
    /// What the uplink's fanout program knows: where a frame is steered.
    pub steering: Steering,
}

fn gateway(net: u8) -> GatewayConfig {
    GatewayConfig {
        ip: Ipv4Addr::new(10, 88 + net, 0, 1),
        mac: MacAddr([2, 0x42, 10, 88 + net, 0, 1]),
        subnet: Subnet::new(Ipv4Addr::new(10, 88 + net, 0, 0), 24),
    }
}

/// The DNS table of `front`.
pub fn dns_table() -> DnsTable {
    let mut names: Vec<(String, Ipv4Addr)> = vec![
        ("web".into(), Ipv4Addr::new(10, 88, 0, 2)),
        ("web.front".into(), Ipv4Addr::new(10, 88, 0, 2)),
        ("db".into(), Ipv4Addr::new(10, 88, 0, 3)),
    ];
    names.extend((10..50).map(|i| ("many".to_string(), Ipv4Addr::new(10, 88, 0, i))));
    DnsTable::new(names).expect("valid names")
}

/// The secret of the gateway's DNS SYN cookies: fixed, so runs reproduce.
pub const DNS_KEY: [u8; 16] = *b"tapnet-fuzz-key!";

/// The configuration, read-only: built once, shared by every input.
struct Shared {
    nets: Vec<(Arc<NetConfig>, &'static [PortId])>,
    router: Arc<RouterConfig>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dns = Arc::new(dns_table());
        let empty = Arc::new(DnsTable::empty());
        // (icc, masquerade, internal, MTU) of front, back, sealed.
        let policy = [(true, true, false, 1500), (false, false, false, 1280), (true, true, true, 1500)];
        static PORTS: [&[PortId]; 3] = [&[1, 2], &[3], &[4]];
        let nets: Vec<_> = policy
            .iter()
            .enumerate()
            .map(|(i, &(icc, masquerade, internal, mtu))| {
                let cfg = NetConfig {
                    gateway: gateway(i as u8),
                    mtu,
                    icc,
                    masquerade,
                    internal,
                    dns: if i == 0 { dns.clone() } else { empty.clone() },
                    overlay: None,
                };
                (Arc::new(cfg), PORTS[i])
            })
            .collect();
        let mut rc = RouterConfig {
            uplink: Some(UplinkConfig {
                port: UPLINK_PORT,
                ip: UPLINK_IP,
                subnet: Subnet::new(UPLINK_IP, 24),
                mac: UPLINK_MAC,
                gateway: Some(UPLINK_GW),
                mtu: UPLINK_MTU,
            }),
            ..RouterConfig::default()
        };
        for c in &CONTAINERS {
            let n = &nets[c.net].0;
            rc.endpoints.insert(
                c.ip,
                Endpoint {
                    net: c.net as NetId,
                    mac: c.mac,
                    port: c.port,
                    gateway_mac: n.gateway.mac,
                    mtu: n.mtu,
                    routable: !n.masquerade && !n.internal,
                },
            );
        }
        rc.publish(L4::Tcp, 8080, Published { ip: CONTAINERS[0].ip, port: 80, tag: 1 });
        rc.publish(L4::Udp, 5353, Published { ip: CONTAINERS[1].ip, port: 53, tag: 2 });
        rc.publish(L4::Tcp, 2222, Published { ip: CONTAINERS[2].ip, port: 22, tag: 3 });
        rc.subnets = nets.iter().enumerate().map(|(i, (n, _))| (n.gateway.subnet, i as NetId)).collect();
        Shared { nets, router: Arc::new(rc) }
    })
}

impl Host {
    /// A host with empty tables (MAC, ARP but the uplink's next hop,
    /// connections), as a daemon has just after start.
    pub fn new() -> Host {
        let sh = shared();
        let nets = sh
            .nets
            .iter()
            .enumerate()
            .map(|(i, (cfg, ports))| {
                let fdb = Fdb::new(FDB_MAX, FDB_AGEING_MS);
                fdb.insert_static(cfg.gateway.mac, GATEWAY_PORT);
                Net { id: i as NetId, fdb, cfg: cfg.clone(), ports }
            })
            .collect();
        let arp = Arc::new(ArpCache::new(64));
        arp.update(UPLINK_GW, UPLINK_GW_MAC, 0, true);
        let routers = (0..WORKERS)
            .map(|w| {
                let ct = Conntrack::new(CONNTRACK_MAX, Timeouts::default()).expect("capacity in range");
                let mut r = Router::new(w, WORKERS, arp.clone(), CookieKey::new(DNS_KEY), ct);
                r.cfg = sh.router.clone();
                r
            })
            .collect();
        let steering = Steering { uplink: UPLINK_IP, snat_ports: sh.router.snat_ports.clone() };
        Host { nets, routers, arp, steering }
    }

    /// Every MAC address the dataplane owns (the gateways' and the
    /// uplink's): the only sources of the frames it makes.
    pub fn our_macs(&self) -> impl Iterator<Item = MacAddr> + '_ {
        self.nets.iter().map(|n| n.cfg.gateway.mac).chain([UPLINK_MAC])
    }

    /// Whether `port` is a port of this host.
    pub fn is_port(&self, port: PortId) -> bool {
        port == UPLINK_PORT || CONTAINERS.iter().any(|c| c.port == port)
    }
}

impl Default for Host {
    fn default() -> Self {
        Self::new()
    }
}
