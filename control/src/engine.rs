//! The engine: networks, containers and their endpoints, on top of a running
//! [`Dataplane`]. The daemon serves it over the API; `tapnet demo` drives it
//! directly. Every operation validates all of its input before it changes
//! anything, and undoes its own partial work when a later step fails, so a
//! refused request leaves no trace.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hashbrown::HashMap;

use dataplane::bridge::Fdb;
use dataplane::port::{PortId, PortQueue};
use dataplane::stats::{NetId, MAX_NETWORKS, MAX_PORTS};
use dataplane::wire::MacAddr;
use dataplane::{Config as DpConfig, Dataplane, DataplaneError};

use crate::api::*;
use crate::ipam::{mac_for, parse_addr, Ipam, IpamError, Subnet};
use crate::sandbox::{self, EndpointSpec, SandboxError};

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            pin: true,
            fdb_max: dataplane::bridge::fdb::DEFAULT_CAPACITY,
            fdb_ageing: dataplane::bridge::fdb::DEFAULT_AGEING_MS / 1000,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
        }
    }
}

/// A small allocator of dense ids.
#[derive(Debug)]
struct IdPool {
    free: Vec<u16>,
}

impl IdPool {
    fn new(n: usize) -> IdPool {
        IdPool { free: (0..n as u16).rev().collect() }
    }
    fn alloc(&mut self, what: &'static str) -> Result<u16> {
        self.free.pop().ok_or(EngineError::IdsExhausted(what))
    }
    fn release(&mut self, id: u16) {
        self.free.push(id)
    }
}

struct Network {
    id: String,
    net: NetId,
    ipam: Ipam,
    mtu: u32,
    fdb: Arc<Fdb>,
}

#[derive(Debug, Clone)]
struct Endpoint {
    network: String,
    ifname: String,
    mac: MacAddr,
    addr: Ipv4Addr,
    port: PortId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Bridge(String),
    None,
    Host,
    Container(String),
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s {
            "none" => Mode::None,
            "host" => Mode::Host,
            _ => match s.strip_prefix("container:") {
                Some(o) => Mode::Container(o.to_string()),
                None => Mode::Bridge(s.to_string()),
            },
        }
    }
    fn text(&self) -> String {
        match self {
            Mode::Bridge(n) => n.clone(),
            Mode::None => "none".into(),
            Mode::Host => "host".into(),
            Mode::Container(o) => format!("container:{o}"),
        }
    }
}

struct Container {
    id: String,
    mode: Mode,
    /// The namespace file to enter; owned only for bridge and none modes.
    sandbox: PathBuf,
    owns_sandbox: bool,
    endpoints: Vec<Endpoint>,
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
}

fn check_name(what: &'static str, name: &str, max: usize) -> Result<()> {
    let bad = |why| Err(EngineError::BadName { what, name: name.to_string(), why });
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > max {
        return bad(if max == 15 {
            "at most 15 bytes (it names a network namespace and interfaces)"
        } else {
            "at most 64 bytes"
        });
    }
    let mut bytes = name.bytes();
    if !bytes.next().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-') {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

/// An API reply as JSON (the reply types always serialize).
fn to_value<T: serde::Serialize>(x: &T) -> serde_json::Value {
    serde_json::to_value(x).unwrap_or(serde_json::Value::Null)
}

impl Engine {
    /// Start the dataplane.
    pub fn new(cfg: EngineConfig) -> Result<Engine> {
        let dp =
            Dataplane::start(&DpConfig { workers: cfg.workers.max(1), pin: cfg.pin, busy_poll_us: cfg.busy_poll_us })?;
        Ok(Engine {
            cfg,
            dp,
            networks: HashMap::new(),
            containers: HashMap::new(),
            net_ids: IdPool::new(MAX_NETWORKS),
            port_ids: IdPool::new(MAX_PORTS),
            seq: 0,
        })
    }

    pub fn workers(&self) -> usize {
        self.dp.workers()
    }

    fn new_id(&mut self, name: &str) -> String {
        // A stable-looking 12-hex-digit id, like Docker's short ids.
        self.seq += 1;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ std::process::id() as u64;
        for b in name.bytes().chain(self.seq.to_le_bytes()) {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        format!("{:012x}", h & 0xffff_ffff_ffff)
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
            }),
            Request::NetworkCreate { name, subnet, gateway, mtu, fdb_max, fdb_ageing } => {
                to_value(&self.network_create(&name, &subnet, gateway.as_deref(), mtu, fdb_max, fdb_ageing)?)
            }
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
            Request::ContainerCreate { name, network, ip, mac } => {
                to_value(&self.container_create(&name, &network, ip.as_deref(), mac.as_deref())?)
            }
            Request::ContainerRm { name } => {
                self.container_rm(&name)?;
                serde_json::Value::String(name)
            }
            Request::ContainerLs => to_value(&self.container_ls()),
            Request::ContainerInspect { name } => to_value(&self.container_inspect(&name)?),
            Request::Fdb { network } => to_value(&self.fdb(&network)?),
            Request::Stats => to_value(&self.stats()),
        })
    }

    // ---- networks ----

    pub fn network_create(
        &mut self,
        name: &str,
        subnet: &str,
        gateway: Option<&str>,
        mtu: Option<u32>,
        fdb_max: Option<usize>,
        fdb_ageing: Option<u64>,
    ) -> Result<NetworkInfo> {
        check_name("network", name, 64)?;
        if matches!(name, "none" | "host") || name.starts_with("container:") {
            return Err(EngineError::BadName { what: "network", name: name.into(), why: "reserved for network modes" });
        }
        if self.networks.contains_key(name) {
            return Err(EngineError::NetworkExists(name.into()));
        }
        let subnet: Subnet = subnet.parse()?;
        if let Some((other, n)) = self.networks.iter().find(|(_, n)| n.ipam.subnet().overlaps(&subnet)) {
            return Err(EngineError::Overlap(subnet, other.clone(), n.ipam.subnet()));
        }
        let gateway = gateway.map(parse_addr).transpose()?;
        let ipam = Ipam::new(subnet, gateway)?;
        let mtu = mtu.unwrap_or(1500);
        if !(68..=65521).contains(&mtu) {
            return Err(EngineError::BadMtu(mtu));
        }
        let fdb_max = fdb_max.unwrap_or(self.cfg.fdb_max);
        if !(1..=1 << 20).contains(&fdb_max) {
            return Err(EngineError::BadFdbMax(fdb_max));
        }
        let ageing = fdb_ageing.unwrap_or(self.cfg.fdb_ageing);
        if !(1..=1_000_000).contains(&ageing) {
            return Err(EngineError::BadAgeing(ageing));
        }
        let net = self.net_ids.alloc("network")?;
        let fdb = Arc::new(Fdb::new(fdb_max, ageing * 1000));
        if let Err(e) = self.dp.add_network(net, fdb.clone()) {
            self.net_ids.release(net);
            return Err(e.into());
        }
        let id = self.new_id(name);
        self.networks.insert(name.to_string(), Network { id, net, ipam, mtu, fdb });
        self.network_inspect(name)
    }

    pub fn network_ls(&self) -> Vec<NetworkInfo> {
        let mut names: Vec<&String> = self.networks.keys().collect();
        names.sort();
        names.into_iter().filter_map(|n| self.network_inspect(n).ok()).collect()
    }

    pub fn network_inspect(&self, name: &str) -> Result<NetworkInfo> {
        let n = self.networks.get(name).ok_or_else(|| EngineError::NoNetwork(name.into()))?;
        let prefix = n.ipam.subnet().prefix;
        let mut containers: Vec<NetworkEndpoint> = self
            .containers
            .iter()
            .flat_map(|(cn, c)| {
                c.endpoints.iter().filter(|e| e.network == name).map(move |e| NetworkEndpoint {
                    container: cn.clone(),
                    interface: e.ifname.clone(),
                    mac_address: e.mac.to_string(),
                    ipv4_address: format!("{}/{}", e.addr, prefix),
                    port: e.port,
                })
            })
            .collect();
        containers.sort_by(|a, b| a.container.cmp(&b.container));
        Ok(NetworkInfo {
            name: name.into(),
            id: n.id.clone(),
            driver: "tapnet-bridge".into(),
            subnet: n.ipam.subnet().to_string(),
            gateway: n.ipam.gateway().to_string(),
            mtu: n.mtu,
            fdb_max: n.fdb.capacity(),
            fdb_ageing: n.fdb.ageing_ms() / 1000,
            containers,
        })
    }

    pub fn network_rm(&mut self, name: &str) -> Result<()> {
        if !self.networks.contains_key(name) {
            return Err(EngineError::NoNetwork(name.into()));
        }
        let mut users: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, c)| c.endpoints.iter().any(|e| e.network == name))
            .map(|(n, _)| n.clone())
            .collect();
        if !users.is_empty() {
            users.sort();
            return Err(EngineError::NetworkInUse(name.into(), users.join(", ")));
        }
        let n = self.networks.remove(name).expect("checked above");
        self.dp.remove_network(n.net)?;
        self.net_ids.release(n.net);
        Ok(())
    }

    // ---- containers ----

    pub fn container_create(
        &mut self,
        name: &str,
        network: &str,
        ip: Option<&str>,
        mac: Option<&str>,
    ) -> Result<ContainerInfo> {
        check_name("container", name, 15)?;
        if self.containers.contains_key(name) {
            return Err(EngineError::ContainerExists(name.into()));
        }
        let mode = Mode::parse(network);
        let ip = ip.map(parse_addr).transpose()?;
        let mac = mac.map(|m| m.parse::<MacAddr>()).transpose()?;
        if !matches!(mode, Mode::Bridge(_)) {
            if ip.is_some() {
                return Err(EngineError::NeedsNetwork("--ip"));
            }
            if mac.is_some() {
                return Err(EngineError::NeedsNetwork("--mac"));
            }
        }
        let (sandbox, owns) = match &mode {
            Mode::Host => (PathBuf::from(format!("/proc/{}/ns/net", std::process::id())), false),
            Mode::Container(other) => {
                let o = self.containers.get(other).ok_or_else(|| EngineError::NoContainer(other.clone()))?;
                (o.sandbox.clone(), false)
            }
            Mode::None => (sandbox::create(name)?, true),
            Mode::Bridge(net) => {
                self.check_endpoint(net, ip, mac)?;
                (sandbox::create(name)?, true)
            }
        };
        let id = self.new_id(name);
        self.containers.insert(
            name.to_string(),
            Container { id, mode: mode.clone(), sandbox, owns_sandbox: owns, endpoints: Vec::new() },
        );
        if let Mode::Bridge(net) = &mode {
            if let Err(e) = self.attach(name, net, ip, mac) {
                let _ = self.container_rm(name);
                return Err(e);
            }
        }
        self.refresh_hosts();
        self.container_inspect(name)
    }

    /// Validate an endpoint's network, address and MAC without changing anything.
    fn check_endpoint(&self, net: &str, ip: Option<Ipv4Addr>, mac: Option<MacAddr>) -> Result<()> {
        let n = self.networks.get(net).ok_or_else(|| EngineError::NoNetwork(net.into()))?;
        match ip {
            Some(a) => n.ipam.check(a)?,
            None => {
                n.ipam.next_free()?;
            }
        }
        if let Some(m) = mac {
            if !m.is_unicast() {
                return Err(EngineError::MacNotUnicast(m));
            }
            if self.containers.values().flat_map(|c| &c.endpoints).any(|e| e.network == net && e.mac == m) {
                return Err(EngineError::MacTaken(m, net.into()));
            }
        }
        Ok(())
    }

    /// Give container `cname` a new interface on network `net`.
    fn attach(&mut self, cname: &str, net: &str, ip: Option<Ipv4Addr>, mac: Option<MacAddr>) -> Result<Endpoint> {
        self.check_endpoint(net, ip, mac)?;
        let c = self.containers.get(cname).ok_or_else(|| EngineError::NoContainer(cname.into()))?;
        let sandbox = c.sandbox.clone();
        let ifname = sandbox::next_ifname(&sandbox)?;
        let default_route = !sandbox::has_default_route(&sandbox)?;
        let n = self.networks.get_mut(net).expect("checked");
        let addr = match ip {
            Some(a) => n.ipam.reserve(a)?,
            None => n.ipam.allocate()?,
        };
        let mac = mac.unwrap_or_else(|| mac_for(addr));
        let (net_id, mtu, gateway, prefix) = (n.net, n.mtu, n.ipam.gateway(), n.ipam.subnet().prefix);
        let port = match self.port_ids.alloc("port") {
            Ok(p) => p,
            Err(e) => {
                self.networks.get_mut(net).expect("checked").ipam.release(addr);
                return Err(e);
            }
        };
        let tmp = format!("tp{:x}x{}", std::process::id(), port);
        let spec = EndpointSpec {
            sandbox: &sandbox,
            ifname: &ifname,
            tmp_name: &tmp,
            mac,
            addr,
            prefix,
            gateway,
            mtu,
            default_route,
            queues: self.dp.workers(),
        };
        let res = sandbox::attach(&spec)
            .map_err(EngineError::from)
            .and_then(|qs| Ok(self.dp.add_port(port, net_id, qs.into_iter().map(PortQueue::Tap).collect())?));
        if let Err(e) = res {
            self.networks.get_mut(net).expect("checked").ipam.release(addr);
            self.port_ids.release(port);
            return Err(e);
        }
        let ep = Endpoint { network: net.into(), ifname, mac, addr, port };
        self.containers.get_mut(cname).expect("checked").endpoints.push(ep.clone());
        Ok(ep)
    }

    /// Remove an endpoint: its queues close, so its TAP device disappears.
    fn detach(&mut self, ep: &Endpoint) -> Result<()> {
        self.dp.remove_port(ep.port)?;
        if let Some(n) = self.networks.get_mut(&ep.network) {
            n.fdb.flush_port(ep.port);
            n.ipam.release(ep.addr);
        }
        self.port_ids.release(ep.port);
        Ok(())
    }

    pub fn container_rm(&mut self, name: &str) -> Result<()> {
        let c = self.containers.get(name).ok_or_else(|| EngineError::NoContainer(name.into()))?;
        if c.owns_sandbox {
            let mut sharers: Vec<&String> = self
                .containers
                .iter()
                .filter(|(_, o)| o.mode == Mode::Container(name.to_string()))
                .map(|(n, _)| n)
                .collect();
            if !sharers.is_empty() {
                sharers.sort();
                let list = sharers.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                return Err(EngineError::SandboxShared(name.into(), list));
            }
        }
        let c = self.containers.remove(name).expect("checked");
        let mut first_err = None;
        for ep in &c.endpoints {
            if let Err(e) = self.detach(ep) {
                first_err.get_or_insert(e);
            }
        }
        if c.owns_sandbox {
            crate::hosts::remove(name);
            if let Err(e) = sandbox::delete(name) {
                first_err.get_or_insert(e.into());
            }
        }
        self.refresh_hosts();
        first_err.map_or(Ok(()), Err)
    }

    pub fn container_ls(&self) -> Vec<ContainerInfo> {
        let mut names: Vec<&String> = self.containers.keys().collect();
        names.sort();
        names.into_iter().filter_map(|n| self.container_inspect(n).ok()).collect()
    }

    pub fn container_inspect(&self, name: &str) -> Result<ContainerInfo> {
        let c = self.containers.get(name).ok_or_else(|| EngineError::NoContainer(name.into()))?;
        let networks = c
            .endpoints
            .iter()
            .map(|e| {
                let n = &self.networks[&e.network];
                ContainerEndpoint {
                    network: e.network.clone(),
                    interface: e.ifname.clone(),
                    mac_address: e.mac.to_string(),
                    ipv4_address: format!("{}/{}", e.addr, n.ipam.subnet().prefix),
                    gateway: n.ipam.gateway().to_string(),
                    port: e.port,
                }
            })
            .collect();
        Ok(ContainerInfo {
            name: name.into(),
            id: c.id.clone(),
            network_mode: c.mode.text(),
            sandbox_key: c.sandbox.display().to_string(),
            networks,
        })
    }

    /// Where to enter to run inside container `name`.
    pub fn sandbox_of(&self, name: &str) -> Result<&Path> {
        Ok(&self.containers.get(name).ok_or_else(|| EngineError::NoContainer(name.into()))?.sandbox)
    }

    fn own_sandbox(&self, name: &str) -> Result<&Container> {
        let c = self.containers.get(name).ok_or_else(|| EngineError::NoContainer(name.into()))?;
        if !c.owns_sandbox {
            return Err(EngineError::NoSandbox(name.into(), c.mode.text()));
        }
        Ok(c)
    }

    pub fn network_connect(&mut self, net: &str, container: &str, ip: Option<&str>) -> Result<ContainerInfo> {
        let ip = ip.map(parse_addr).transpose()?;
        if !self.networks.contains_key(net) {
            return Err(EngineError::NoNetwork(net.into()));
        }
        let c = self.own_sandbox(container)?;
        if c.endpoints.iter().any(|e| e.network == net) {
            return Err(EngineError::AlreadyConnected(container.into(), net.into()));
        }
        self.attach(container, net, ip, None)?;
        self.refresh_hosts();
        self.container_inspect(container)
    }

    pub fn network_disconnect(&mut self, net: &str, container: &str) -> Result<ContainerInfo> {
        if !self.networks.contains_key(net) {
            return Err(EngineError::NoNetwork(net.into()));
        }
        let c = self.own_sandbox(container)?;
        let i = c
            .endpoints
            .iter()
            .position(|e| e.network == net)
            .ok_or_else(|| EngineError::NotConnected(container.into(), net.into()))?;
        let ep = self.containers.get_mut(container).expect("checked").endpoints.remove(i);
        self.detach(&ep)?;
        self.refresh_hosts();
        self.container_inspect(container)
    }

    /// Rewrite every container's hosts file (`/etc/netns/NAME/hosts`) so
    /// containers resolve each other's names on the networks they share.
    /// Best effort: name resolution is a convenience, never a reason to
    /// fail an operation.
    fn refresh_hosts(&self) {
        for (name, c) in self.containers.iter().filter(|(_, c)| c.owns_sandbox) {
            let own = c.endpoints.first().map(|e| e.addr);
            let mut peers: Vec<(String, Ipv4Addr)> = self
                .containers
                .iter()
                .filter(|(n, _)| *n != name)
                .filter_map(|(n, o)| {
                    let shared = o.endpoints.iter().find(|e| c.endpoints.iter().any(|m| m.network == e.network))?;
                    Some((n.clone(), shared.addr))
                })
                .collect();
            peers.sort();
            let _ = crate::hosts::write(name, &crate::hosts::render(name, own, &peers));
        }
    }

    // ---- inspection ----

    fn port_names(&self) -> HashMap<PortId, (String, String)> {
        self.containers
            .iter()
            .flat_map(|(cn, c)| {
                c.endpoints.iter().map(move |e| (e.port, (format!("{cn}:{}", e.ifname), e.network.clone())))
            })
            .collect()
    }

    pub fn fdb(&self, net: &str) -> Result<FdbInfo> {
        let n = self.networks.get(net).ok_or_else(|| EngineError::NoNetwork(net.into()))?;
        let names = self.port_names();
        let now = self.dp.now_ms();
        let entries = n
            .fdb
            .entries(now)
            .into_iter()
            .map(|e| FdbRow {
                mac: e.mac.to_string(),
                port: e.port,
                port_name: names.get(&e.port).map(|p| p.0.clone()).unwrap_or_else(|| format!("port{}", e.port)),
                age_s: e.age_ms as f64 / 1000.0,
            })
            .collect();
        let events = self.dp.stats().bridge(n.net).into_iter().map(|(e, v)| (e.name().to_string(), v)).collect();
        Ok(FdbInfo { network: net.into(), entries, max: n.fdb.capacity(), ageing: n.fdb.ageing_ms() / 1000, events })
    }

    pub fn stats(&self) -> StatsInfo {
        let st = self.dp.stats();
        let mut ports: Vec<PortStats> = self
            .port_names()
            .into_iter()
            .map(|(port, (name, network))| {
                let t = st.port(port);
                PortStats {
                    port,
                    name,
                    network,
                    rx_packets: t.rx_packets,
                    rx_bytes: t.rx_bytes,
                    tx_packets: t.tx_packets,
                    tx_bytes: t.tx_bytes,
                    rx_dropped: t.rx_dropped,
                    tx_dropped: t.tx_dropped,
                }
            })
            .collect();
        ports.sort_by(|a, b| (&a.network, &a.name).cmp(&(&b.network, &b.name)));
        let drops = st.drops().into_iter().map(|(r, v)| (r.name().to_string(), v)).collect();
        let networks: BTreeMap<String, BTreeMap<String, u64>> = self
            .networks
            .iter()
            .map(|(name, n)| {
                (name.clone(), st.bridge(n.net).into_iter().map(|(e, v)| (e.name().to_string(), v)).collect())
            })
            .collect();
        let per_worker = st
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerInfo { worker: i, wakeups: w.wakeups.get(), frames: w.frames.get() })
            .collect();
        StatsInfo { workers: self.dp.workers(), per_worker, ports, drops, networks }
    }

    /// Expire old MAC entries; the daemon calls this about once a second.
    pub fn sweep(&self) {
        let now = self.dp.now_ms();
        for n in self.networks.values() {
            n.fdb.sweep(now);
        }
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
        self.dp.shutdown();
        errors
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.containers.is_empty() || !self.networks.is_empty() {
            self.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("container", "web-1", 15).is_ok());
        assert!(check_name("container", "abcdefghijklmnop", 15).is_err());
        assert!(check_name("container", "-x", 15).is_err());
        assert!(check_name("container", "a/b", 15).is_err());
        assert!(check_name("container", "", 15).is_err());
        assert!(check_name("network", "a b", 64).is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("none"), Mode::None);
        assert_eq!(Mode::parse("container:web"), Mode::Container("web".into()));
        assert_eq!(Mode::parse("front").text(), "front");
    }
}
