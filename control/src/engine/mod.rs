//! The engine: networks, containers and their endpoints, on top of a running
//! [`Dataplane`]. The daemon serves it over the API; `tapnet demo` and
//! `tapnet bench` (in the bench crate) drive it directly. Every operation
//! validates all of its input before it changes anything, and undoes its
//! own partial work when a later step fails, so a refused request leaves no
//! trace.
//!
//! Reads do not go through the engine: every change publishes what reads
//! show ([`View`]), and the daemon serves reads from the latest view on
//! other threads while a change is under way.
//!
//! Cost per change: the file and netlink work of a change concerns only
//! the container or network changed (its namespace, its TAP, its own hosts
//! file), whatever the number of containers. What remains proportional to
//! the number of containers is in memory: the router's tables and the
//! network's DNS names are rebuilt and swapped in whole, and the view is
//! copied (pointers and names); at 500 containers that is well under a
//! millisecond against about 20 ms of namespace and TAP set-up (README,
//! "Limits").
//!
//! Where things are: `network.rs` (networks), `container.rs` (containers
//! and their network modes), `endpoint.rs` (a container's interface on a
//! network: its TAP, address and MAC), `publish.rs` (published ports),
//! `uplink.rs` (the uplink interface), `router.rs` (what the dataplane's
//! router is told), `view.rs` (what reads see: lists and inspection),
//! `inspect.rs` (MAC tables, connections and counters), `ids.rs` (id pools,
//! ids and the naming rules); this file holds the engine itself, its
//! settings and errors, dispatches API requests and tears everything down.

use std::ops::RangeInclusive;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

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
mod saved;
mod uplink;
mod view;

use container::Container;
use ids::IdPool;
use network::Network;
pub use overlay::HandedTunnel;
pub use saved::{HandedQueues, Intent, Saved, SavedContainer, SavedEndpoint, SavedNetwork, STATE_VERSION};
pub use uplink::{macvlan_name, parse_cidr_host, HandedUplink, UplinkMode, UplinkOpts};
use view::Published;
pub use view::View;

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
    #[error("invalid --max-macs-per-port {0}: must be 0 (no limit) or at most the network's --fdb-max ({1})")]
    BadMaxMacs(u32, usize),
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
    #[error("{0}")]
    Unsupported(&'static str),
    /// Saved state that cannot be adopted.
    #[error("restore {0}")]
    Restore(String),
    /// The process has no file descriptor left (README, "Limits").
    #[error("out of file descriptors ({0}): each container interface holds one per worker ({1} workers here), see the README's \"Limits\"")]
    OutOfFds(String, usize),
}

type Result<T> = std::result::Result<T, EngineError>;

impl EngineError {
    /// No network by the name a client gave (cut, as every name an error
    /// repeats).
    fn no_network(name: &str) -> EngineError {
        EngineError::NoNetwork(cut(name))
    }
    fn no_container(name: &str) -> EngineError {
        EngineError::NoContainer(cut(name))
    }
}

impl EngineError {
    /// This error if it does not come from a lack of file descriptors,
    /// else [`EngineError::OutOfFds`] (the system's own message, "open
    /// /dev/net/tun" say, does not say why).
    fn explain_fd_shortage(self, workers: usize) -> EngineError {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    return EngineError::OutOfFds(io.to_string(), workers);
                }
            }
            cur = e.source();
        }
        self
    }
}

/// Names for an error message: sorted, the first few, and how many more.
fn name_list(mut names: Vec<String>) -> String {
    const SHOWN: usize = 8;
    names.sort();
    let more = names.len().saturating_sub(SHOWN);
    names.truncate(SHOWN);
    let mut s = names.join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

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
    /// Default limit of MACs per container port (0: none); a network whose
    /// `--fdb-max` is lower gets that instead.
    pub max_macs_per_port: u32,
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
            max_macs_per_port: dataplane::bridge::fdb::DEFAULT_MAX_MACS_PER_PORT,
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
    /// Shared with the views, which read its counters and tables.
    dp: Arc<Dataplane>,
    networks: HashMap<String, Network>,
    containers: HashMap<String, Container>,
    net_ids: IdPool,
    port_ids: IdPool,
    seq: u64,
    uplink: Option<uplink::Uplink>,
    tunnels: HashMap<overlay::TunnelKey, overlay::Tunnel>,
    /// Tunnels a daemon taken over handed over, until a restored network
    /// uses them (then none is left: unused ones are closed).
    handed_tunnels: HashMap<overlay::TunnelKey, (overlay::HandedTunnel, Vec<OwnedFd>)>,
    /// Per VTEP port: failed sends counted so far, and when they were last
    /// logged (rate-limited log of a peer that is down).
    peer_failures: std::sync::Mutex<HashMap<dataplane::port::PortId, (u64, u64)>>,
    /// What reads show, kept up to date by every change.
    published: Published,
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
        Engine::new_on(cfg, None, Vec::new(), false)
    }

    /// [`Engine::new`], on the uplink a daemon taken over handed over, if
    /// any, instead of the configured one, and with the connections it
    /// tracked (table `i` for worker `i`), imported before any port is
    /// added, so before the workers read.
    fn new_on(
        cfg: EngineConfig,
        handed: Option<(HandedUplink, Vec<OwnedFd>)>,
        conntrack: Vec<Vec<dataplane::nat::Exported>>,
        takeover: bool,
    ) -> Result<Engine> {
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
            dp: Arc::new(dp),
            networks: HashMap::new(),
            containers: HashMap::new(),
            net_ids: IdPool::new(MAX_NETWORKS),
            port_ids: IdPool::new(MAX_PORTS),
            seq: 0,
            uplink: None,
            tunnels: HashMap::new(),
            handed_tunnels: HashMap::new(),
            peer_failures: Default::default(),
            published: Published::default(),
        };
        if takeover {
            // Nothing is read until every port is there (a frame read from
            // the uplink or a tunnel before its container's port would be
            // dropped): [`Engine::restore_from`] resumes.
            e.dp.pause(true)?;
        }
        if !conntrack.is_empty() {
            let n = e.dp.conntrack_import(conntrack)?;
            eprintln!("tapnet: {n} tracked connections taken over");
        }
        if let Some((h, fds)) = handed {
            e.uplink_adopt(&h, fds)?;
            e.sync_router()?;
        } else if let Some(u) = uplink {
            e.uplink_up(&u)?;
            e.sync_router()?;
        }
        Ok(e)
    }

    pub fn workers(&self) -> usize {
        self.dp.workers()
    }

    /// Workers that stopped without being told to ([`Dataplane::exits`]).
    pub fn worker_exits(&self) -> crossbeam_channel::Receiver<dataplane::WorkerExit> {
        self.dp.exits()
    }

    /// What reads show now: a snapshot of the networks and containers,
    /// with the live counters and tables of the dataplane. Later changes
    /// do not alter it.
    pub fn view(&self) -> View {
        View::new(self.dp.clone(), self.cfg.conntrack_max, self.uplink_port(), self.published.clone())
    }

    /// Names of the namespaces this engine made (for crash recovery).
    pub fn owned_namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.containers.iter().filter(|(_, c)| c.owns_sandbox).map(|(n, _)| n.clone()).collect();
        v.sort();
        v
    }

    /// Dispatch an API request (a read is served from a fresh view).
    pub fn handle(&mut self, req: Request) -> Result<serde_json::Value> {
        if req.is_read() {
            return self.view().read(&req).expect("a read");
        }
        self.change(req).map_err(|e| e.explain_fd_shortage(self.dp.workers()))
    }

    fn change(&mut self, req: Request) -> Result<serde_json::Value> {
        Ok(match req {
            Request::NetworkCreate(spec) => to_value(&self.network_create(&spec)?),
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
            Request::FdbAdd { network, mac, vtep } => to_value(&self.fdb_add(&network, &mac, &vtep)?),
            Request::FdbDel { network, mac } => to_value(&self.fdb_del(&network, &mac)?),
            Request::Shutdown { .. } => return Err(EngineError::Unsupported("shutdown is served by the daemon")),
            Request::Takeover { .. } => return Err(EngineError::Unsupported("takeover is served by the daemon")),
            Request::Version {}
            | Request::NetworkLs {}
            | Request::NetworkInspect { .. }
            | Request::ContainerLs {}
            | Request::ContainerInspect { .. }
            | Request::Fdb { .. }
            | Request::Stats {}
            | Request::Conntrack {}
            | Request::OverlayCheck { .. } => unreachable!("reads are served by the view"),
        })
    }

    /// Remove every container and network and stop the dataplane;
    /// returns the problems met on the way.
    ///
    /// Everything goes at once rather than one `container rm` at a time,
    /// which took 9 to 23 s for 200 containers. The cost is in the kernel,
    /// and mostly waiting: a TAP is unregistered when its last queue
    /// closes, and each unregistration waits for an RCU barrier (10 to
    /// 60 ms on a busy 2-core machine); each unmount of a namespace waits
    /// for an RCU grace period. Done from many threads at once, the waits
    /// overlap. The dataplane's workers close their queues one after the
    /// other, so the engine takes a duplicate of every TAP queue's
    /// descriptor while the dataplane still owns it, deletes every
    /// namespace (each lives on until its TAP's queues close: they are
    /// sockets of that namespace), stops the dataplane (whose closes now
    /// release nothing) and closes the duplicates; both from
    /// [`TEARDOWN_THREADS`] threads. A queue it cannot duplicate (out of
    /// descriptors) is released by the dataplane, only more slowly.
    pub fn shutdown(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        let dups: Vec<OwnedFd> = self
            .containers
            .values()
            .flat_map(|c| &c.endpoints)
            .flat_map(|e| &e.queue_fds)
            .filter_map(|&fd| {
                // SAFETY: F_DUPFD only makes a new descriptor for the file
                // `fd` refers to: a TAP queue the dataplane holds open until
                // it stops, below. (Had a dead worker closed it and the
                // number been reused, the duplicate would be of another
                // file, and closing it would leave that file open.)
                let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                // SAFETY: d is a descriptor just made, owned by nobody else.
                (d >= 0).then(|| unsafe { OwnedFd::from_raw_fd(d) })
            })
            .collect();
        let owned: Vec<String> =
            self.containers.iter().filter(|(_, c)| c.owns_sandbox).map(|(n, _)| n.clone()).collect();
        errors.extend(in_parallel(owned, |n| {
            crate::hosts::remove(&n);
            crate::sandbox::delete(&n).err().map(|e| format!("container {n}: {e}"))
        }));
        self.containers.clear();
        self.networks.clear();
        self.published = Published::default();
        if let Err(e) = self.uplink_down() {
            errors.push(format!("uplink: {e}"));
        }
        match Arc::get_mut(&mut self.dp) {
            Some(dp) => dp.shutdown(),
            // A view still held somewhere: the dataplane stops when the
            // last one goes.
            None => errors.push("dataplane: still in use by a reader; it stops when released".into()),
        }
        in_parallel(dups, |fd| {
            drop(fd);
            None
        });
        errors
    }
}

impl Engine {
    /// Stop the dataplane and the uplink but leave every container, its
    /// namespace and its (persistent) TAPs in place, for the next daemon
    /// to adopt from the saved state (`--keep`). Returns the problems met.
    pub fn release(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        self.containers.clear();
        self.networks.clear();
        self.published = Published::default();
        if let Err(e) = self.uplink_down() {
            errors.push(format!("uplink: {e}"));
        }
        match Arc::get_mut(&mut self.dp) {
            Some(dp) => dp.shutdown(),
            None => errors.push("dataplane: still in use by a reader; it stops when released".into()),
        }
        errors
    }
}

/// Threads that tear down at shutdown (see [`Engine::shutdown`]): they
/// mostly wait in the kernel, so many more than there are cores.
pub const TEARDOWN_THREADS: usize = 32;

/// Apply `f` to every item of `items`, from up to [`TEARDOWN_THREADS`]
/// threads at once (this one included, so all of it is done even if no
/// thread can be made); returns what `f` returned that was not `None`.
fn in_parallel<T: Send>(items: Vec<T>, f: impl Fn(T) -> Option<String> + Sync) -> Vec<String> {
    let n = items.len();
    let queue = std::sync::Mutex::new(items);
    let out = std::sync::Mutex::new(Vec::new());
    let work = || loop {
        let Some(item) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else { return };
        if let Some(e) = f(item) {
            out.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..TEARDOWN_THREADS.min(n) {
            let _ = std::thread::Builder::new().name("tapnet-teardown".into()).spawn_scoped(s, work);
        }
        work();
    });
    let mut out = out.into_inner().unwrap_or_else(|p| p.into_inner());
    out.sort();
    out
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.containers.is_empty() || !self.networks.is_empty() || self.uplink.is_some() {
            self.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teardown_work_is_all_done_and_its_errors_kept() {
        let seen = std::sync::Mutex::new(Vec::new());
        let errs = in_parallel((0..100).collect(), |i: u32| {
            seen.lock().unwrap().push(i);
            (i % 10 == 3).then(|| format!("item {i:02}"))
        });
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!(errs, (0..10).map(|k| format!("item {:02}", k * 10 + 3)).collect::<Vec<_>>());
        assert!(in_parallel(Vec::<u32>::new(), |_| Some("never".into())).is_empty());
    }

    #[test]
    fn long_name_lists_are_cut() {
        assert_eq!(name_list(vec!["b".into(), "a".into()]), "a, b");
        let many: Vec<String> = (0..500).map(|i| format!("c{i:03}")).collect();
        let s = name_list(many);
        assert!(s.starts_with("c000, c001,") && s.ends_with(" and 492 more"), "{s}");
    }
}
