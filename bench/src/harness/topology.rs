//! The two datapaths of a scenario as Drop guards: the kernel's reference
//! ([`KernelBridge`], docker0's bridge and veth pairs, made over netlink)
//! and tapnet's ([`TapnetBridge`], an in-process engine), with the same
//! addresses ([`Addressing`]); the NAT scenarios' pair is in `nat.rs`.
//!
//! Cleanup, whatever happens: every namespace is registered before it is
//! made, so that a second Ctrl-C can delete them all (with their
//! `/etc/netns/NAME` files) before it exits; and the thread that builds or
//! tears down a topology holds the bench's "busy" lock ([`busy`]) while it
//! does, so that the second Ctrl-C waits for that step to end instead of
//! racing it (a namespace made, or a hosts file rewritten, right after the
//! signal handler deleted everything would be left behind).
//!
//! About 480 lines of code: the kernel and tapnet bridge topologies and the
//! namespace bookkeeping they share.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use control::api::{ContainerSpec, NetworkSpec};
use control::engine::{Engine, EngineConfig, EngineError};
use control::ipam::mac_for;
use control::netlink::{Netlink, NetlinkError};
use control::netns::{self, NetnsError};
use control::sandbox::{self, SandboxError};

use crate::traffic::Endpoint;

/// Errors from building a benchmark topology.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A netlink step of the kernel reference failed.
    #[error("{step}: {source}")]
    Netlink { step: &'static str, source: NetlinkError },
    /// A step outside netlink (a sysctl, `iptables-restore`) failed.
    #[error("{step}: {detail}")]
    Setup { step: &'static str, detail: String },
    /// The namespace prefix leaves no room for the role suffix.
    #[error("namespace prefix {0:?} is too long (at most 13 bytes)")]
    Prefix(String),
}

pub(super) type Result<T> = std::result::Result<T, BenchError>;

pub(super) fn nl(step: &'static str) -> impl FnOnce(NetlinkError) -> BenchError {
    move |source| BenchError::Netlink { step, source }
}

/// Every namespace the bench may have made and not yet deleted.
static NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub(super) fn register(name: &str) {
    NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()).push(name.to_string());
}

/// Where iproute2 (and tapnet's engine) keep a namespace's own `/etc`
/// files: the engine writes `hosts` and `resolv.conf` there.
fn etc_dir(name: &str) -> PathBuf {
    Path::new(control::hosts::ETC_NETNS).join(name)
}

/// Delete `names` (those that exist) with their `/etc/netns/NAME`
/// directories, and forget them.
pub(super) fn delete_namespaces(names: &[String]) {
    for n in names.iter().rev() {
        if netns::exists(n) {
            if let Err(e) = netns::delete(n) {
                eprintln!("tapnet bench: cleanup: {e}");
            }
        }
        // The whole directory: the engine's files and its temporary ones.
        // The names are the bench's own (`tnb<pid>…`), so nothing else
        // lives there.
        let d = etc_dir(n);
        if d.exists() {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                eprintln!("tapnet bench: cleanup: {}: {e}", d.display());
            }
        }
    }
    NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| !names.contains(n));
}

/// The thread holding the busy lock, and how many times it took it.
static BUSY: Mutex<(Option<ThreadId>, usize)> = Mutex::new((None, 0));
static BUSY_FREED: Condvar = Condvar::new();

/// Held while a thread builds or tears down a topology (re-entrant: a
/// build that fails drops its half-made guard, which takes it again).
#[must_use]
pub(super) struct Busy(());

/// Take the busy lock (waiting while another thread holds it).
pub(super) fn busy() -> Busy {
    let me = std::thread::current().id();
    let mut g = BUSY.lock().unwrap_or_else(|e| e.into_inner());
    while g.0.is_some_and(|t| t != me) {
        g = BUSY_FREED.wait(g).unwrap_or_else(|e| e.into_inner());
    }
    g.0 = Some(me);
    g.1 += 1;
    Busy(())
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut g = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        g.1 = g.1.saturating_sub(1);
        if g.1 == 0 {
            g.0 = None;
            BUSY_FREED.notify_all();
        }
    }
}

/// Take the busy lock like [`busy`], but give up waiting after `patience`
/// and take it anyway (for the signal handler, which must not hang).
fn busy_within(patience: Duration) -> Busy {
    let me = std::thread::current().id();
    let deadline = Instant::now() + patience;
    let mut g = BUSY.lock().unwrap_or_else(|e| e.into_inner());
    while g.0.is_some_and(|t| t != me) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        g = BUSY_FREED.wait_timeout(g, left).unwrap_or_else(|e| e.into_inner()).0;
    }
    g.0 = Some(me);
    g.1 += 1;
    Busy(())
}

/// Delete every registered namespace (the second Ctrl-C). A build or
/// teardown step under way ends first (they are short; one that takes
/// longer than `patience` is not waited for), and the busy lock is
/// returned held, so that nothing is made after this: the caller keeps it
/// until it exits.
pub(super) fn delete_all_registered(patience: Duration) -> Busy {
    let held = busy_within(patience);
    let names = NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    delete_namespaces(&names);
    held
}

/// A built datapath of any scenario.
pub(super) trait Topology {
    /// The client and the server.
    fn pair(&self) -> &Pair;
    /// tapnet's worker count (`None` for the kernel).
    fn workers(&self) -> Option<usize> {
        None
    }
    /// tapnet's counters (`tapnet stats`), `None` for the kernel.
    fn stats(&self) -> Option<control::api::StatsInfo> {
        None
    }
}

// ---------------------------------------------------------------------------
// Topologies
// ---------------------------------------------------------------------------

/// Addresses and MTU shared by both datapaths of a scenario.
#[derive(Debug, Clone, Copy)]
pub struct Addressing {
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub a: Ipv4Addr,
    pub b: Ipv4Addr,
    pub mtu: u32,
}

impl Default for Addressing {
    fn default() -> Self {
        Addressing {
            subnet: Ipv4Addr::new(10, 213, 0, 0),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 213, 0, 1),
            a: Ipv4Addr::new(10, 213, 0, 2),
            b: Ipv4Addr::new(10, 213, 0, 3),
            mtu: 1500,
        }
    }
}

/// The two ends of a run: A is the client, B the server. On the bridge
/// both are containers; through NAT one of them is the outside namespace.
#[derive(Debug, Clone)]
pub struct Pair {
    pub a_name: String,
    pub a_ns: PathBuf,
    pub a_ip: Ipv4Addr,
    pub b_name: String,
    pub b_ns: PathBuf,
    pub b_ip: Ipv4Addr,
    /// The port the server listens on; 0 lets the kernel pick one.
    pub port: u16,
    /// Where the client connects to reach `b_ip:port`, when that is not
    /// the server itself (a published port, through DNAT).
    pub via: Option<SocketAddrV4>,
    /// The same for the iperf3 cross-check: its server's port, and where
    /// its client connects.
    pub iperf3_port: u16,
    pub iperf3_via: Option<SocketAddrV4>,
    /// The container network's addresses.
    pub addr: Addressing,
}

impl Pair {
    /// Client A and server B on one container network (the bridge).
    fn containers(a: &str, b: &str, addr: Addressing) -> Pair {
        Pair {
            a_name: a.to_string(),
            a_ns: netns::path(a),
            a_ip: addr.a,
            b_name: b.to_string(),
            b_ns: netns::path(b),
            b_ip: addr.b,
            port: 0,
            via: None,
            iperf3_port: IPERF3_PORT,
            iperf3_via: None,
            addr,
        }
    }

    pub fn client(&self) -> Endpoint<'_> {
        Endpoint::new(Some(&self.a_ns), self.a_ip)
    }
    pub fn server(&self) -> Endpoint<'_> {
        let e = Endpoint::new(Some(&self.b_ns), self.b_ip);
        match self.via {
            Some(v) => e.via(v),
            None => e,
        }
    }
    /// The address the client sends to (the server's, or the published one).
    pub fn target_ip(&self) -> Ipv4Addr {
        self.via.map_or(self.b_ip, |v| *v.ip())
    }
}

/// iperf3's default port, where its cross-check listens.
pub const IPERF3_PORT: u16 = 5201;

pub(super) fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.len() > 13 {
        return Err(BenchError::Prefix(prefix.to_string()));
    }
    Ok(())
}

/// Make the namespaces `names` (with `lo` up and IPv6 off, as for a
/// container), each recorded in `made` and registered before it is made,
/// so that a failure from here on (the guard's Drop) or a second Ctrl-C
/// removes what exists.
pub(super) fn make_namespaces(names: &[&String], made: &mut Vec<String>) -> Result<()> {
    for n in names {
        register(n);
        made.push(n.to_string());
        sandbox::create(n)?;
    }
    Ok(())
}

/// In the calling thread's namespace: a veth pair `host_end` ↔ `peer`,
/// both at `mtu`, the peer with `mac` (if given) moved into namespace `ns`
/// as `eth0`, the host end enslaved to `master` (if given) and up. Returns
/// the host end's index.
pub(super) fn veth_into(
    n: &mut Netlink,
    host_end: &str,
    peer: &str,
    ns: &Path,
    mtu: u32,
    mac: Option<[u8; 6]>,
    master: Option<u32>,
) -> Result<u32> {
    n.link_add_veth(host_end, peer).map_err(nl("add veth"))?;
    let hi = n.link_index(host_end).map_err(nl("find veth"))?;
    let pi = n.link_index(peer).map_err(nl("find veth peer"))?;
    n.link_set_mtu(hi, mtu).map_err(nl("set veth MTU"))?;
    n.link_set_mtu(pi, mtu).map_err(nl("set veth MTU"))?;
    if let Some(mac) = mac {
        n.link_set_mac(pi, mac).map_err(nl("set veth MAC"))?;
    }
    if master.is_some() {
        n.link_set_master(hi, master).map_err(nl("enslave veth"))?;
    }
    n.link_set_up(hi, true).map_err(nl("set veth up"))?;
    let fd = netns::open(ns)?;
    n.link_move_to_netns(pi, fd.as_fd(), Some("eth0")).map_err(nl("move veth into namespace"))?;
    Ok(hi)
}

/// In the calling thread's namespace: bridge `br0` at `addr.mtu` with the
/// gateway address, up (docker0). Returns its index.
pub(super) fn kernel_bridge(n: &mut Netlink, addr: &Addressing) -> Result<u32> {
    n.link_add_bridge("br0").map_err(nl("add bridge"))?;
    let br = n.link_index("br0").map_err(nl("find bridge"))?;
    n.link_set_mtu(br, addr.mtu).map_err(nl("set bridge MTU"))?;
    n.addr_add_v4(br, addr.gateway, addr.prefix).map_err(nl("add bridge address"))?;
    n.link_set_up(br, true).map_err(nl("set bridge up"))?;
    Ok(br)
}

/// Inside namespace `ns`: `eth0` at `ip/prefix`, up, with a default route
/// via `gateway` if given; returns once it runs (its peer must be up).
pub(super) fn eth0_up(ns: &Path, ip: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>) -> Result<()> {
    netns::run_in(ns, || -> Result<()> {
        let mut n = Netlink::open().map_err(nl("open netlink in namespace"))?;
        let i = n.link_index("eth0").map_err(nl("find eth0"))?;
        n.addr_add_v4(i, ip, prefix).map_err(nl("add address"))?;
        n.link_set_up(i, true).map_err(nl("set eth0 up"))?;
        if let Some(gw) = gateway {
            n.route_add_v4(Ipv4Addr::UNSPECIFIED, 0, Some(gw), Some(i)).map_err(nl("add default route"))?;
        }
        // A veth is up at once but runs only when the kernel's link watcher
        // has seen its carrier (up to a second later); until then it drops
        // what it is sent. Wait for it (the peer is up already), so the
        // first packet of a run is not lost.
        let t0 = Instant::now();
        while !n.link_get("eth0").map_err(nl("get eth0"))?.running {
            if t0.elapsed() > Duration::from_secs(5) {
                return Err(BenchError::Setup { step: "wait for eth0", detail: "not running after 5 s".into() });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    })?
}

/// The kernel reference for the bridge scenario, docker0's datapath: a
/// "host" namespace `{prefix}h` holding bridge `br0` (with the gateway
/// address) and one veth pair into each of `{prefix}a` and `{prefix}b`,
/// whose end is `eth0` there. Dropping it deletes the three namespaces, and
/// every interface goes with them.
pub struct KernelBridge {
    pub host: PathBuf,
    pub pair: Pair,
    names: Vec<String>,
}

impl KernelBridge {
    pub fn build(prefix: &str, addr: Addressing) -> Result<KernelBridge> {
        check_prefix(prefix)?;
        let _busy = busy();
        let (h, a, b) = (format!("{prefix}h"), format!("{prefix}a"), format!("{prefix}b"));
        let mut kb = KernelBridge { host: netns::path(&h), pair: Pair::containers(&a, &b, addr), names: Vec::new() };
        make_namespaces(&[&h, &a, &b], &mut kb.names)?;
        let ends = [(&kb.pair.a_ns, addr.a, "vetha", "cetha"), (&kb.pair.b_ns, addr.b, "vethb", "cethb")];
        netns::run_in(&kb.host, || -> Result<()> {
            let mut n = Netlink::open().map_err(nl("open netlink in host namespace"))?;
            let br = kernel_bridge(&mut n, &addr)?;
            for (ns, ip, host_end, peer) in ends {
                veth_into(&mut n, host_end, peer, ns, addr.mtu, Some(mac_for(ip).octets()), Some(br))?;
            }
            Ok(())
        })??;
        for (ns, ip) in [(&kb.pair.a_ns, addr.a), (&kb.pair.b_ns, addr.b)] {
            eth0_up(ns, ip, addr.prefix, Some(addr.gateway))?;
        }
        Ok(kb)
    }

    /// Namespace names, host first.
    pub fn namespaces(&self) -> &[String] {
        &self.names
    }
}

impl Topology for KernelBridge {
    fn pair(&self) -> &Pair {
        &self.pair
    }
}

impl Drop for KernelBridge {
    fn drop(&mut self) {
        let _busy = busy();
        delete_namespaces(&self.names);
    }
}

/// tapnet's bridge scenario: an in-process [`Engine`] with network `bench`
/// and containers `{prefix}a` and `{prefix}b`. Dropping it shuts the engine
/// down (which removes the containers, their namespaces and TAPs) and then
/// deletes any namespace still left.
pub struct TapnetBridge {
    pub pair: Pair,
    engine: Option<Engine>,
    names: Vec<String>,
}

/// The engine's network `bench` on `addr`.
pub(super) fn bench_network(addr: &Addressing) -> NetworkSpec {
    NetworkSpec {
        name: "bench".into(),
        subnet: format!("{}/{}", addr.subnet, addr.prefix),
        gateway: Some(addr.gateway.to_string()),
        mtu: Some(addr.mtu),
        ..NetworkSpec::default()
    }
}

/// Container `name` on network `bench` at `ip`, publishing `publish`.
pub(super) fn bench_container(name: &str, ip: Ipv4Addr, publish: Vec<String>) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        network: "bench".into(),
        ip: Some(ip.to_string()),
        publish,
        ..Default::default()
    }
}

impl TapnetBridge {
    pub fn build(prefix: &str, addr: Addressing, workers: usize, pin: bool, busy_poll_us: u32) -> Result<TapnetBridge> {
        check_prefix(prefix)?;
        let _busy = busy();
        let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
        let cfg = EngineConfig { workers, pin, busy_poll_us, ..EngineConfig::default() };
        let mut tb = TapnetBridge {
            pair: Pair::containers(&a, &b, addr),
            engine: Some(Engine::new(cfg)?),
            names: vec![a.clone(), b.clone()],
        };
        register(&a);
        register(&b);
        let e = tb.engine.as_mut().expect("just set");
        e.network_create(&bench_network(&addr))?;
        let ca = e.container_create(&bench_container(&a, addr.a, Vec::new()))?;
        let cb = e.container_create(&bench_container(&b, addr.b, Vec::new()))?;
        tb.pair.a_ns = PathBuf::from(ca.sandbox_key);
        tb.pair.b_ns = PathBuf::from(cb.sandbox_key);
        Ok(tb)
    }

    pub fn namespaces(&self) -> &[String] {
        &self.names
    }

    pub fn workers(&self) -> usize {
        self.engine.as_ref().map_or(0, Engine::workers)
    }
}

impl Topology for TapnetBridge {
    fn pair(&self) -> &Pair {
        &self.pair
    }
    fn workers(&self) -> Option<usize> {
        Some(TapnetBridge::workers(self))
    }
    fn stats(&self) -> Option<control::api::StatsInfo> {
        self.engine.as_ref().map(Engine::stats)
    }
}

impl Drop for TapnetBridge {
    fn drop(&mut self) {
        let _busy = busy();
        if let Some(mut e) = self.engine.take() {
            for err in e.shutdown() {
                eprintln!("tapnet bench: cleanup: {err}");
            }
        }
        delete_namespaces(&self.names);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::cpu::worker_cpu_s;
    use crate::traffic;
    use std::path::Path;
    use std::time::Duration;

    fn prefix(tag: &str) -> String {
        format!("tnb{}{tag}", std::process::id() % 100_000)
    }

    fn gone(names: &[String]) -> bool {
        names.iter().all(|n| !Path::new(netns::NETNS_RUN_DIR).join(n).exists())
    }

    #[test]
    fn the_busy_lock_is_reentrant_and_waited_for() {
        let outer = busy();
        let inner = busy();
        drop(inner);
        let (tx, rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            let t0 = Instant::now();
            let g = busy_within(Duration::from_secs(10));
            tx.send(t0.elapsed()).unwrap();
            drop(g);
        });
        std::thread::sleep(Duration::from_millis(200));
        // Still held by this thread (one level left): the other waits.
        assert!(rx.try_recv().is_err());
        drop(outer);
        let waited = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        other.join().unwrap();
        // A holder that never lets go is given up on after the patience.
        let stuck = busy();
        let t0 = Instant::now();
        let g = std::thread::spawn(|| drop(busy_within(Duration::from_millis(100))));
        g.join().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
        drop(stuck);
        // And it is free again.
        std::thread::spawn(|| drop(busy())).join().unwrap();
    }

    #[test]
    #[ignore = "needs root: writes under /etc/netns"]
    fn deleting_a_namespace_removes_its_etc_netns_directory() {
        let name = prefix("ze");
        let d = etc_dir(&name);
        std::fs::create_dir_all(&d).unwrap();
        // The engine's files, and a temporary one a crash left.
        for f in ["hosts", "resolv.conf", ".hosts.tmp"] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        register(&name);
        delete_namespaces(std::slice::from_ref(&name));
        assert!(!d.exists());
        assert!(!NAMESPACES.lock().unwrap().contains(&name));
    }

    #[test]
    #[ignore = "needs root: creates network namespaces, a bridge and TAP devices"]
    fn kernel_bridge_builds_pings_and_cleans_up() {
        let kb = KernelBridge::build(&prefix("xk"), Addressing::default()).unwrap();
        let names = kb.namespaces().to_vec();
        assert_eq!(names.len(), 3);
        let p = traffic::ping(Some(&kb.pair.a_ns), kb.pair.addr.b, 3, Duration::from_secs(1)).unwrap();
        assert_eq!(p.received, 3, "{p:?}");
        drop(kb);
        assert!(gone(&names), "left behind: {names:?}");
    }

    #[test]
    #[ignore = "needs root: creates network namespaces, a bridge and TAP devices"]
    fn kernel_bridge_cleans_up_after_a_failed_build() {
        // An MTU the bridge refuses fails the build half-way.
        let addr = Addressing { mtu: 10, ..Addressing::default() };
        let p = prefix("xf");
        assert!(KernelBridge::build(&p, addr).is_err());
        assert!(gone(&[format!("{p}h"), format!("{p}a"), format!("{p}b")]));
    }

    #[test]
    #[ignore = "needs root: creates network namespaces, a bridge and TAP devices"]
    fn tapnet_bridge_builds_pings_and_cleans_up() {
        let tb = TapnetBridge::build(&prefix("xt"), Addressing::default(), 1, false, 0).unwrap();
        let names = tb.namespaces().to_vec();
        let p = traffic::ping(Some(&tb.pair.a_ns), tb.pair.addr.b, 3, Duration::from_secs(1)).unwrap();
        assert_eq!(p.received, 3, "{p:?}");
        let w0 = worker_cpu_s();
        let r =
            traffic::tcp_bulk(tb.pair.server(), tb.pair.client(), 0, 1, Some(64 << 20), Duration::from_secs(5), false)
                .unwrap();
        assert_eq!(r.bytes, 64 << 20);
        assert!(worker_cpu_s() > w0, "worker CPU time did not move");
        drop(tb);
        assert!(gone(&names), "left behind: {names:?}");
    }

    /// Interface counters of `ifname` as the calling thread's namespace
    /// sees them: (rx_packets, rx_bytes, tx_packets, tx_bytes).
    fn counters(ns: &Path, ifname: &str) -> (u64, u64, u64, u64) {
        netns::run_in(ns, || {
            // /proc/thread-self/net follows this thread's namespace.
            let text = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
            let line = text.lines().find(|l| l.trim_start().starts_with(&format!("{ifname}:"))).unwrap().to_string();
            let f: Vec<u64> = line.split(':').nth(1).unwrap().split_whitespace().map(|v| v.parse().unwrap()).collect();
            (f[1], f[0], f[9], f[8])
        })
        .unwrap()
    }

    #[test]
    #[ignore = "needs root: creates network namespaces, a bridge and TAP devices"]
    fn generator_accounting_matches_interface_counters() {
        let kb = KernelBridge::build(&prefix("xc"), Addressing::default()).unwrap();
        let pair = kb.pair.clone();
        // Resolve ARP first so the run itself is only UDP.
        traffic::ping(Some(&pair.a_ns), pair.addr.b, 1, Duration::from_secs(1)).unwrap();
        let (_, _, tx0, txb0) = counters(&pair.a_ns, "eth0");
        let (rx0, _, _, _) = counters(&pair.b_ns, "eth0");
        let payload = 64;
        let r = traffic::udp_stream(pair.server(), pair.client(), 0, payload, Some(20_000), Duration::from_secs(1))
            .unwrap();
        let (_, _, tx1, txb1) = counters(&pair.a_ns, "eth0");
        let (rx1, _, _, _) = counters(&pair.b_ns, "eth0");
        let (dtx, dtxb, drx) = (tx1 - tx0, txb1 - txb0, rx1 - rx0);
        assert!(r.sent > 15_000, "{r:?}");
        assert_eq!(r.bytes_sent, r.sent * payload as u64);
        // Slack for a few ARP or other control frames.
        let slack = 8;
        assert!(dtx >= r.sent && dtx <= r.sent + slack, "eth0 tx_packets {dtx} vs sent {}", r.sent);
        // On the wire: payload + UDP 8 + IPv4 20 + Ethernet 14.
        let wire = r.sent * (payload as u64 + 42);
        assert!(dtxb >= wire && dtxb <= wire + slack * 100, "eth0 tx_bytes {dtxb} vs {wire}");
        assert!(drx >= r.received && drx <= r.sent + slack, "B rx_packets {drx} vs received {}", r.received);
        drop(kb);
    }
}
