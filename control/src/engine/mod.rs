//! The engine: networks, containers and their endpoints, on top of a running
//! [`Dataplane`]. The daemon serves it over the API; `tapnet demo` and
//! `tapnet bench` (in the bench crate) drive it directly. Every operation
//! validates all of its input before it changes anything, and undoes its
//! own partial work when a later step fails, so a refused request leaves no
//! trace.
//!
//! Where things are: `network.rs` (networks), `container.rs` (containers
//! and their network modes), `endpoint.rs` (a container's interface on a
//! network: its TAP, address and MAC), `publish.rs` (published ports),
//! `uplink.rs` (the uplink interface), `router.rs` (what the dataplane's
//! router is told), `inspect.rs` (MAC tables, connections and counters),
//! `ids.rs` (id pools, ids and the naming rules); this file holds the
//! engine itself, its settings and errors, and dispatches API requests.

use std::ops::RangeInclusive;

use dataplane::nat::Timeouts;
use dataplane::stats::{MAX_NETWORKS, MAX_PORTS};
use dataplane::wire::MacAddr;
use dataplane::{Config as DpConfig, Dataplane, DataplaneError};
use hashbrown::HashMap;

use crate::api::*;
use crate::ipam::{IpamError, Subnet};
use crate::sandbox::SandboxError;

mod container;
mod endpoint;
mod ids;
mod inspect;
mod network;
mod overlay;
pub mod probe;
mod publish;
mod router;
mod uplink;

use container::Container;
use ids::IdPool;
use network::Network;
pub use uplink::{macvlan_name, parse_cidr_host, UplinkMode, UplinkOpts};

/// Errors from engine operations; each message is one line for the CLI.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("dataplane: {0}")]
    Dataplane(#[from] DataplaneError),
    /// A name breaks the naming rules.
    #[error("invalid {what} name {name:?}: {why}")]
    BadName { what: &'static str, name: String, why: &'static str },
    #[error("network {0:?} already exists")]
    NetworkExists(String),
    #[error("no such network: {0}")]
    NoNetwork(String),
    #[error("container {0:?} already exists")]
    ContainerExists(String),
    #[error("no such container: {0}")]
    NoContainer(String),
    #[error("subnet {0} overlaps network {1:?} ({2})")]
    Overlap(Subnet, String, Subnet),
    #[error("network {0:?} has active endpoints: {1}")]
    NetworkInUse(String, String),
    #[error("container {0:?} shares its network namespace with {1}; remove those first")]
    SandboxShared(String, String),
    #[error("invalid MTU {0}: must be between 68 and 65521")]
    BadMtu(u32),
    #[error("invalid --fdb-max {0}: must be between 1 and 1048576")]
    BadFdbMax(usize),
    #[error("invalid --fdb-ageing {0}: must be between 1 and 1000000 seconds")]
    BadAgeing(u64),
    #[error(transparent)]
    BadMac(#[from] dataplane::wire::ethernet::ParseMacError),
    #[error("MAC address {0} is not a unicast address")]
    MacNotUnicast(MacAddr),
    #[error("MAC address {0} is already in use on network {1:?}")]
    MacTaken(MacAddr, String),
    #[error("{0} is only valid with --network NET (not none, host or container:…)")]
    NeedsNetwork(&'static str),
    #[error("container {0:?} has no network namespace of its own (mode {1})")]
    NoSandbox(String, String),
    #[error("container {0:?} is already connected to network {1:?}")]
    AlreadyConnected(String, String),
    #[error("container {0:?} is not connected to network {1:?}")]
    NotConnected(String, String),
    #[error("no free {0} id left")]
    IdsExhausted(&'static str),
    /// The uplink could not be set up.
    #[error("uplink: {0}")]
    Uplink(String),
    #[error("invalid published port {0:?}: {1}")]
    BadPublish(String, String),
    #[error("publishing ports needs an uplink (start the daemon with --uplink IFACE --uplink-ip A.B.C.D/LEN)")]
    PublishNeedsUplink,
    #[error("host port {port}/{proto} is already published by container {by:?}")]
    PortPublished { port: u16, proto: &'static str, by: String },
    #[error("network {0:?} is internal: it has no way out, so nothing on it can be published")]
    PublishInternal(String),
    #[error("MAC address {0} is the gateway's of network {1:?}")]
    MacIsGateway(MacAddr, String),
    #[error("{0}")]
    BadOverlay(String),
}

type Result<T> = std::result::Result<T, EngineError>;

/// Default of `--busy-poll-us` (see `tapnet daemon --help`).
pub const DEFAULT_BUSY_POLL_US: u32 = 50;

/// Engine settings (the daemon's flags).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub workers: usize,
    pub pin: bool,
    /// Default MAC table bound per network.
    pub fdb_max: usize,
    /// Default MAC ageing time in seconds.
    pub fdb_ageing: u64,
    /// Workers poll without sleeping for this long after traffic (µs).
    pub busy_poll_us: u32,
    /// The uplink, if any.
    pub uplink: Option<UplinkOpts>,
    /// Source ports for masqueraded flows.
    pub snat_ports: RangeInclusive<u16>,
    /// Bound on tracked connections.
    pub conntrack_max: usize,
    pub conntrack_timeouts: Timeouts,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            pin: true,
            fdb_max: dataplane::bridge::fdb::DEFAULT_CAPACITY,
            fdb_ageing: dataplane::bridge::fdb::DEFAULT_AGEING_MS / 1000,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
            uplink: None,
            snat_ports: dataplane::router::config::DEFAULT_SNAT_PORTS,
            conntrack_max: dataplane::DEFAULT_CONNTRACK_MAX,
            conntrack_timeouts: Timeouts::default(),
        }
    }
}

/// Networks, containers and the dataplane that carries their traffic.
pub struct Engine {
    cfg: EngineConfig,
    dp: Dataplane,
    networks: HashMap<String, Network>,
    containers: HashMap<String, Container>,
    net_ids: IdPool,
    port_ids: IdPool,
    seq: u64,
    uplink: Option<uplink::Uplink>,
    tunnels: HashMap<overlay::TunnelKey, overlay::Tunnel>,
    /// Per VTEP port: failed sends counted so far, and when they were last
    /// logged (rate-limited log of a peer that is down).
    peer_failures: std::sync::Mutex<HashMap<dataplane::port::PortId, (u64, u64)>>,
}

/// The IPv4 addresses the kernel holds in the calling thread's namespace.
fn host_addresses() -> Vec<String> {
    let Ok(mut nl) = crate::netlink::Netlink::open() else { return Vec::new() };
    let links = nl.links().unwrap_or_default();
    let mut v: Vec<String> =
        links.iter().flat_map(|l| nl.addrs_v4(l.index).unwrap_or_default()).map(|(a, _)| a.to_string()).collect();
    v.sort();
    v
}

/// An API reply as JSON (the reply types always serialize).
fn to_value<T: serde::Serialize>(x: &T) -> serde_json::Value {
    serde_json::to_value(x).unwrap_or(serde_json::Value::Null)
}

impl Engine {
    /// Start the dataplane, and set up the uplink if there is one.
    pub fn new(cfg: EngineConfig) -> Result<Engine> {
        let dp = Dataplane::start(&DpConfig {
            workers: cfg.workers.max(1),
            pin: cfg.pin,
            busy_poll_us: cfg.busy_poll_us,
            conntrack_max: cfg.conntrack_max,
            conntrack_timeouts: cfg.conntrack_timeouts,
        })?;
        let uplink = cfg.uplink.clone();
        let mut e = Engine {
            cfg,
            dp,
            networks: HashMap::new(),
            containers: HashMap::new(),
            net_ids: IdPool::new(MAX_NETWORKS),
            port_ids: IdPool::new(MAX_PORTS),
            seq: 0,
            uplink: None,
            tunnels: HashMap::new(),
            peer_failures: Default::default(),
        };
        if let Some(u) = uplink {
            e.uplink_up(&u)?;
            e.sync_router()?;
        }
        Ok(e)
    }

    pub fn workers(&self) -> usize {
        self.dp.workers()
    }

    /// Names of the namespaces this engine made (for crash recovery).
    pub fn owned_namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.containers.iter().filter(|(_, c)| c.owns_sandbox).map(|(n, _)| n.clone()).collect();
        v.sort();
        v
    }

    /// Dispatch an API request.
    pub fn handle(&mut self, req: Request) -> Result<serde_json::Value> {
        Ok(match req {
            Request::Version => to_value(&VersionInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                workers: self.workers(),
                addresses: host_addresses(),
            }),
            Request::NetworkCreate(spec) => to_value(&self.network_create(&spec)?),
            Request::NetworkLs => to_value(&self.network_ls()),
            Request::NetworkInspect { name } => to_value(&self.network_inspect(&name)?),
            Request::NetworkRm { name } => {
                self.network_rm(&name)?;
                serde_json::Value::String(name)
            }
            Request::NetworkConnect { network, container, ip } => {
                to_value(&self.network_connect(&network, &container, ip.as_deref())?)
            }
            Request::NetworkDisconnect { network, container } => {
                to_value(&self.network_disconnect(&network, &container)?)
            }
            Request::ContainerCreate(spec) => to_value(&self.container_create(&spec)?),
            Request::ContainerRm { name } => {
                self.container_rm(&name)?;
                serde_json::Value::String(name)
            }
            Request::ContainerLs => to_value(&self.container_ls()),
            Request::ContainerInspect { name } => to_value(&self.container_inspect(&name)?),
            Request::Fdb { network } => to_value(&self.fdb(&network)?),
            Request::FdbAdd { network, mac, vtep } => to_value(&self.fdb_add(&network, &mac, &vtep)?),
            Request::FdbDel { network, mac } => to_value(&self.fdb_del(&network, &mac)?),
            Request::OverlayCheck { network } => to_value(&self.overlay_check(&network)?),
            Request::Stats => to_value(&self.stats()),
            Request::Conntrack => to_value(&self.conntrack()?),
        })
    }

    /// Expire old MAC entries; the daemon calls this about once a second.
    pub fn sweep(&self) {
        let now = self.dp.now_ms();
        for n in self.networks.values() {
            n.fdb.sweep(now);
        }
        self.log_peer_failures(now);
    }

    /// Remove every container and network and stop the dataplane.
    pub fn shutdown(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        // Containers sharing another's namespace go first.
        let mut names: Vec<String> = self.containers.keys().cloned().collect();
        names.sort_by_key(|n| self.containers[n].owns_sandbox);
        for n in names {
            if let Err(e) = self.container_rm(&n) {
                errors.push(format!("container {n}: {e}"));
            }
        }
        let nets: Vec<String> = self.networks.keys().cloned().collect();
        for n in nets {
            if let Err(e) = self.network_rm(&n) {
                errors.push(format!("network {n}: {e}"));
            }
        }
        if let Err(e) = self.uplink_down() {
            errors.push(format!("uplink: {e}"));
        }
        self.dp.shutdown();
        errors
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.containers.is_empty() || !self.networks.is_empty() || self.uplink.is_some() {
            self.shutdown();
        }
    }
}
