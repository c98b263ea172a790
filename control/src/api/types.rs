//! The requests the daemon serves and the replies it sends, as serde types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A request to the daemon: a JSON object whose `op` names the operation
/// and whose other members are its fields (the module documentation of
/// [`crate::api`] lists them). Unknown members are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
// Operations without fields are empty struct variants, not unit variants:
// serde lets a unit variant of an internally tagged enum ignore unknown
// members.
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Version {},
    NetworkCreate(NetworkSpec),
    NetworkLs {},
    NetworkInspect {
        name: String,
    },
    NetworkRm {
        name: String,
    },
    NetworkConnect {
        network: String,
        container: String,
        ip: Option<String>,
    },
    NetworkDisconnect {
        network: String,
        container: String,
    },
    ContainerCreate(ContainerSpec),
    ContainerRm {
        name: String,
    },
    ContainerLs {},
    ContainerInspect {
        name: String,
    },
    Fdb {
        network: String,
    },
    /// A static MAC table entry pointing at a remote VTEP of an overlay
    /// network.
    FdbAdd {
        network: String,
        mac: String,
        vtep: String,
    },
    /// Remove a static entry `fdb add` made.
    FdbDel {
        network: String,
        mac: String,
    },
    /// Probe every peer of an overlay network (`tapnet overlay check`).
    OverlayCheck {
        network: String,
    },
    Stats {},
    /// The connection table of the gateways' NAT.
    Conntrack {},
    /// Stop the daemon: remove every container and network, as SIGTERM
    /// does, or (`keep`) leave them for the next daemon.
    Shutdown {
        #[serde(default)]
        keep: bool,
    },
    /// Hand everything to a new daemon (`tapnet daemon --takeover`), which
    /// runs `workers` workers: see `daemon/takeover.rs`.
    Takeover {
        workers: usize,
    },
}

impl Request {
    /// Whether the request only reads (the daemon serves reads from the
    /// published view, never waiting for a change under way).
    pub fn is_read(&self) -> bool {
        match self {
            Request::Version {}
            | Request::NetworkLs {}
            | Request::NetworkInspect { .. }
            | Request::ContainerLs {}
            | Request::ContainerInspect { .. }
            | Request::Fdb { .. }
            | Request::Stats {}
            | Request::Conntrack {}
            | Request::OverlayCheck { .. } => true,
            Request::NetworkCreate(_)
            | Request::FdbAdd { .. }
            | Request::FdbDel { .. }
            | Request::NetworkRm { .. }
            | Request::NetworkConnect { .. }
            | Request::NetworkDisconnect { .. }
            | Request::ContainerCreate(_)
            | Request::ContainerRm { .. }
            | Request::Shutdown { .. }
            | Request::Takeover { .. } => false,
        }
    }
}

/// What `network create` asks for. Every field but the name and subnet is
/// optional; an absent one takes the daemon's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub fdb_max: Option<usize>,
    #[serde(default)]
    pub fdb_ageing: Option<u64>,
    /// Masquerade traffic leaving through the uplink (default true).
    #[serde(default)]
    pub masquerade: Option<bool>,
    /// No way out of the network (default false).
    #[serde(default)]
    pub internal: bool,
    /// Containers on the network may talk to each other (default true).
    #[serde(default)]
    pub icc: Option<bool>,
    /// `bridge` (default, this host only), `vxlan` or `gre` (an overlay
    /// across hosts).
    #[serde(default)]
    pub driver: Option<String>,
    /// VXLAN network identifier (`--driver vxlan`).
    #[serde(default)]
    pub vni: Option<u32>,
    /// GRE key (`--driver gre`).
    #[serde(default)]
    pub key: Option<u32>,
    /// The part of the subnet this host hands out.
    #[serde(default)]
    pub ip_range: Option<String>,
    /// This host's address on the underlay.
    #[serde(default)]
    pub underlay: Option<String>,
    /// The other hosts' underlay addresses.
    #[serde(default)]
    pub peers: Vec<String>,
    /// VXLAN UDP port (default 4789).
    #[serde(default)]
    pub port: Option<u16>,
    /// VXLAN: send UDP checksums, with UDP GSO (default false: zero
    /// checksums, RFC 7348 §5, which the kernel cannot combine with GSO).
    #[serde(default)]
    pub udp_csum: Option<bool>,
    /// Clamp the MSS of TCP SYNs entering the overlay (default true).
    #[serde(default)]
    pub mss_clamp: Option<bool>,
    /// MACs each container port may have in the MAC table; 0: no limit
    /// (default: the daemon's `--max-macs-per-port`).
    #[serde(default)]
    pub max_macs_per_port: Option<u32>,
    /// Pin each container port to its MAC and IPv4 address (default false).
    #[serde(default)]
    pub port_security: bool,
}

/// What `container create` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub name: String,
    /// `NET`, `none`, `host` or `container:OTHER`.
    pub network: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    /// Published ports, each as `-p` takes it:
    /// `[IP:]HOST[-HOST]:CONTAINER[-CONTAINER][/tcp|udp]`.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// The reply envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One container's attachment to a network, as `network inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkEndpoint {
    pub container: String,
    pub interface: String,
    pub mac_address: String,
    pub ipv4_address: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    pub mtu: u32,
    pub fdb_max: usize,
    pub fdb_ageing: u64,
    pub masquerade: bool,
    pub internal: bool,
    pub icc: bool,
    /// MACs each container port may have in the MAC table (0: no limit).
    #[serde(default)]
    pub max_macs_per_port: u32,
    /// Each container port pinned to its MAC and IPv4 address.
    #[serde(default)]
    pub port_security: bool,
    /// The overlay's settings, for `vxlan` and `gre` networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayInfo>,
    pub containers: Vec<NetworkEndpoint>,
}

/// An overlay network's tunnel, as `network inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverlayInfo {
    /// VNI or key.
    pub id: u32,
    pub underlay: String,
    pub peers: Vec<String>,
    /// VXLAN UDP port (0 for GRE).
    pub port: u16,
    /// The part of the subnet this host hands out.
    pub ip_range: Option<String>,
    /// The largest inner IPv4 packet the underlay carries.
    pub path_mtu: u32,
    pub mss_clamp: bool,
    pub udp_csum: bool,
}

/// One interface of a container, as `container inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerEndpoint {
    pub network: String,
    pub interface: String,
    pub mac_address: String,
    pub ipv4_address: String,
    pub gateway: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub name: String,
    pub id: String,
    /// `NET`, `none`, `host` or `container:OTHER`, as given at creation.
    pub network_mode: String,
    /// The namespace file to enter to run inside the container.
    pub sandbox_key: String,
    pub networks: Vec<ContainerEndpoint>,
    /// Ports published on the uplink address.
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
}

/// One published port (a `-p` mapping of one port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// "tcp" or "udp".
    pub protocol: String,
    pub host_ip: String,
    pub host_port: u16,
    pub container_ip: String,
    pub container_port: u16,
}

/// One tracked connection, as `tapnet conntrack` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConntrackRow {
    pub protocol: String,
    /// SNAT, DNAT, HAIRPIN or IDENTITY.
    pub kind: String,
    /// TCP state, or UDP/ICMP.
    pub state: String,
    /// The initiator's packets as they arrive: `src:port -> dst:port`.
    pub original: String,
    /// What they leave as.
    pub translated: String,
    /// The replies as they arrive.
    pub reply: String,
    pub replied: bool,
    /// Seconds until the entry expires without traffic.
    pub timeout_s: f64,
    /// The container the connection belongs to.
    pub container: String,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub worker: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConntrackInfo {
    pub entries: Vec<ConntrackRow>,
    pub max: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbRow {
    pub mac: String,
    pub port: u16,
    /// `container:interface` of the port, or `gateway`.
    pub port_name: String,
    pub age_s: f64,
    /// Pinned by tapnet (the gateway's MAC): never learned, moved or aged.
    #[serde(rename = "static", default)]
    pub is_static: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbInfo {
    pub network: String,
    pub entries: Vec<FdbRow>,
    pub max: usize,
    pub ageing: u64,
    /// MACs each container port may have (`--max-macs-per-port`, 0: no limit).
    #[serde(default)]
    pub max_per_port: u32,
    /// Bridge events since the network was created (learned, moved, …).
    pub events: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortStats {
    pub port: u16,
    pub name: String,
    pub network: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// One worker's activity: how many poll wake-ups it had and how many frames
/// it handled (frames / wakeups is the batching it achieves).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub worker: usize,
    pub wakeups: u64,
    pub frames: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsInfo {
    pub workers: usize,
    pub per_worker: Vec<WorkerInfo>,
    pub ports: Vec<PortStats>,
    /// Frames dropped, by reason (every reason listed, zero or not).
    pub drops: BTreeMap<String, u64>,
    /// Bridge events per network.
    pub networks: BTreeMap<String, BTreeMap<String, u64>>,
    /// Gateway, uplink and NAT events.
    #[serde(default)]
    pub router: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub pid: u32,
    pub workers: usize,
    /// The IPv4 addresses of the daemon's namespace (its possible underlay
    /// addresses).
    #[serde(default)]
    pub addresses: Vec<String>,
}
