//! The two datapaths of a scenario as Drop guards: the kernel's reference
//! ([`KernelBridge`], docker0's bridge and veth pairs, made over netlink)
//! and tapnet's ([`TapnetBridge`], an in-process engine), with the same
//! addresses ([`Addressing`]). Every namespace they make is registered
//! first, so that a second Ctrl-C can delete them all before it exits.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Mutex;

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
    /// The namespace prefix leaves no room for the role suffix.
    #[error("namespace prefix {0:?} is too long (at most 13 bytes)")]
    Prefix(String),
}

type Result<T> = std::result::Result<T, BenchError>;

fn nl(step: &'static str) -> impl FnOnce(NetlinkError) -> BenchError {
    move |source| BenchError::Netlink { step, source }
}

/// Every namespace the bench may have made and not yet deleted.
static NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub(super) fn register(name: &str) {
    NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()).push(name.to_string());
}

/// Delete `names` (those that exist), with the hosts files tapnet's engine
/// writes for its containers, and forget them.
pub(super) fn delete_namespaces(names: &[String]) {
    for n in names.iter().rev() {
        control::hosts::remove(n);
        if netns::exists(n) {
            if let Err(e) = netns::delete(n) {
                eprintln!("tapnet bench: cleanup: {e}");
            }
        }
    }
    NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| !names.contains(n));
}

/// Delete every registered namespace (the second Ctrl-C).
pub(super) fn delete_all_registered() {
    let names = NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    delete_namespaces(&names);
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

/// The two containers of a topology: A is the client, B the server.
#[derive(Debug, Clone)]
pub struct Pair {
    pub a_name: String,
    pub a_ns: PathBuf,
    pub b_name: String,
    pub b_ns: PathBuf,
    pub addr: Addressing,
}

impl Pair {
    pub fn client(&self) -> Endpoint<'_> {
        Endpoint::new(Some(&self.a_ns), self.addr.a)
    }
    pub fn server(&self) -> Endpoint<'_> {
        Endpoint::new(Some(&self.b_ns), self.addr.b)
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.len() > 13 {
        return Err(BenchError::Prefix(prefix.to_string()));
    }
    Ok(())
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
        let (h, a, b) = (format!("{prefix}h"), format!("{prefix}a"), format!("{prefix}b"));
        let mut kb = KernelBridge {
            host: netns::path(&h),
            pair: Pair { a_name: a.clone(), a_ns: netns::path(&a), b_name: b.clone(), b_ns: netns::path(&b), addr },
            names: Vec::new(),
        };
        // Each namespace is recorded before it is made, so that a failure
        // from here on (Drop) or a second Ctrl-C removes what exists.
        for n in [&h, &a, &b] {
            register(n);
            kb.names.push(n.clone());
            sandbox::create(n)?;
        }
        let ends = [(&kb.pair.a_ns, addr.a, "vetha", "cetha"), (&kb.pair.b_ns, addr.b, "vethb", "cethb")];
        netns::run_in(&kb.host, || -> Result<()> {
            let mut n = Netlink::open().map_err(nl("open netlink in host namespace"))?;
            n.link_add_bridge("br0").map_err(nl("add bridge"))?;
            let br = n.link_index("br0").map_err(nl("find bridge"))?;
            n.link_set_mtu(br, addr.mtu).map_err(nl("set bridge MTU"))?;
            n.addr_add_v4(br, addr.gateway, addr.prefix).map_err(nl("add bridge address"))?;
            n.link_set_up(br, true).map_err(nl("set bridge up"))?;
            for (ns, ip, host_end, peer) in ends {
                n.link_add_veth(host_end, peer).map_err(nl("add veth"))?;
                let hi = n.link_index(host_end).map_err(nl("find veth"))?;
                let pi = n.link_index(peer).map_err(nl("find veth peer"))?;
                n.link_set_mtu(hi, addr.mtu).map_err(nl("set veth MTU"))?;
                n.link_set_mtu(pi, addr.mtu).map_err(nl("set veth MTU"))?;
                n.link_set_mac(pi, mac_for(ip).octets()).map_err(nl("set veth MAC"))?;
                n.link_set_master(hi, Some(br)).map_err(nl("enslave veth"))?;
                n.link_set_up(hi, true).map_err(nl("set veth up"))?;
                let fd = netns::open(ns)?;
                n.link_move_to_netns(pi, fd.as_fd(), Some("eth0")).map_err(nl("move veth into container"))?;
            }
            Ok(())
        })??;
        for (ns, ip) in [(&kb.pair.a_ns, addr.a), (&kb.pair.b_ns, addr.b)] {
            netns::run_in(ns, || -> Result<()> {
                let mut n = Netlink::open().map_err(nl("open netlink in container"))?;
                let i = n.link_index("eth0").map_err(nl("find eth0"))?;
                n.addr_add_v4(i, ip, addr.prefix).map_err(nl("add address"))?;
                n.link_set_up(i, true).map_err(nl("set eth0 up"))?;
                n.route_add_v4(Ipv4Addr::UNSPECIFIED, 0, Some(addr.gateway), Some(i)).map_err(nl("add default route"))
            })??;
        }
        Ok(kb)
    }

    /// Namespace names, host first.
    pub fn namespaces(&self) -> &[String] {
        &self.names
    }
}

impl Drop for KernelBridge {
    fn drop(&mut self) {
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

impl TapnetBridge {
    pub fn build(prefix: &str, addr: Addressing, workers: usize, pin: bool, busy_poll_us: u32) -> Result<TapnetBridge> {
        check_prefix(prefix)?;
        let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
        let cfg = EngineConfig { workers, pin, busy_poll_us, ..EngineConfig::default() };
        let mut tb = TapnetBridge {
            pair: Pair { a_name: a.clone(), a_ns: netns::path(&a), b_name: b.clone(), b_ns: netns::path(&b), addr },
            engine: Some(Engine::new(cfg)?),
            names: vec![a.clone(), b.clone()],
        };
        register(&a);
        register(&b);
        let e = tb.engine.as_mut().expect("just set");
        let subnet = format!("{}/{}", addr.subnet, addr.prefix);
        e.network_create(&NetworkSpec {
            name: "bench".into(),
            subnet: subnet.clone(),
            gateway: Some(addr.gateway.to_string()),
            mtu: Some(addr.mtu),
            ..NetworkSpec::default()
        })?;
        let spec = |name: &str, ip: std::net::Ipv4Addr| ContainerSpec {
            name: name.into(),
            network: "bench".into(),
            ip: Some(ip.to_string()),
            ..ContainerSpec::default()
        };
        let ca = e.container_create(&spec(&a, addr.a))?;
        let cb = e.container_create(&spec(&b, addr.b))?;
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

impl Drop for TapnetBridge {
    fn drop(&mut self) {
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
