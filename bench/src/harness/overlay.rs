//! The datapaths of the overlay scenarios (`vxlan`, `gre`) as Drop guards:
//! two "hosts" on one machine, each a namespace, joined by a veth underlay,
//! with one container on each host and one L2 overlay network between
//! them. The client is host A's container, the server host B's, so every
//! byte crosses the underlay encapsulated.
//!
//! Both datapaths have the same six pieces: host namespaces `{prefix}ha`
//! and `{prefix}hb` joined by a veth pair named `ul0` on both sides
//! (192.168.215.1/24 and .2, MTU 1500), and container namespaces
//! `{prefix}ca` (10.42.1.1/16) and `{prefix}cb` (10.42.2.1/16), whose
//! `eth0` has the underlay's MTU less the encapsulation overhead (1450 for
//! VXLAN, 1458 for GRE) — [`OverlayAddressing`].
//!
//! * kernel ([`KernelOverlay`], VXLAN only): in each host a vxlan device
//!   `vxlan0` (VNI 42, dstport 4789, `local` the host's underlay address,
//!   `dev ul0`; the kernel's defaults otherwise: learning on, zero UDP
//!   checksums) with the flood entry `bridge fdb append 00:00:00:00:00:00
//!   dev vxlan0 dst PEER`, a Linux bridge `br0` holding `vxlan0` and a veth
//!   whose other end is the container's `eth0`. This is how Docker's own
//!   overlay driver, and flannel's vxlan backend, build it. The vxlan device
//!   and the fdb entry are made with `ip` and `bridge` (the control crate's
//!   netlink has no vxlan link type), the rest over netlink.
//! * tapnet ([`TapnetOverlay`]): an in-process [`Engine`] per host,
//!   created, driven and shut down from threads that have entered that
//!   host's namespace (as `tapnet daemon --netns` runs, so each engine's
//!   tunnel sockets bind its own host's underlay address, and its TAPs and
//!   netlink sockets are its host's), with one overlay network
//!   `--driver vxlan --vni 42` (or `--driver gre --key 42`),
//!   `--subnet 10.42.0.0/16`, `--ip-range` 10.42.1.0/24 on A and
//!   10.42.2.0/24 on B, `--underlay` the host's address and `--peer` the
//!   other's, and one container. Two engines in one process are two
//!   independent dataplanes; their workers are threads of this process, so
//!   `worker_cpu_s` counts both hosts'. For VXLAN the engine runs either
//!   mode: zero UDP checksums (the default) or `udp_csum` (checksummed
//!   datagrams with UDP GSO and GRO).
//!
//! There is no kernel reference for GRE when the kernel cannot make a
//! `gretap` device ([`kernel_gretap`] says why); none is built for GRE in
//! any case yet, so the `gre` scenario reports tapnet alone.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use control::api::{ContainerSpec, NetworkSpec, StatsInfo};
use control::engine::{Engine, EngineConfig};
use control::ipam::mac_for;
use control::netlink::Netlink;
use control::netns;
use dataplane::overlay::tunnel::Encap;

use super::topology::{
    busy, check_prefix, delete_namespaces, eth0_up, make_namespaces, nl, register, veth_into, Addressing, BenchError,
    Pair, Result, Topology, IPERF3_PORT,
};

/// The overlay's name on both hosts (tapnet's network, the kernel's bridge
/// is `br0` as elsewhere).
const NETWORK: &str = "bench";

/// Addresses, ids and ports shared by both datapaths of an overlay
/// scenario. Index 0 is host A (the client's), 1 host B (the server's).
#[derive(Debug, Clone, Copy)]
pub struct OverlayAddressing {
    /// Each host's underlay address, on `ul0`.
    pub underlay: [Ipv4Addr; 2],
    pub underlay_prefix: u8,
    /// The underlay's MTU; the containers get this less the overhead.
    pub underlay_mtu: u32,
    /// The overlay network.
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    /// Each host's part of the subnet (`--ip-range`), /24.
    pub ranges: [Ipv4Addr; 2],
    /// Each host's container: the first address of its range, where
    /// tapnet's IPAM starts.
    pub containers: [Ipv4Addr; 2],
    /// VNI or GRE key.
    pub id: u32,
    /// VXLAN's UDP port.
    pub port: u16,
}

impl Default for OverlayAddressing {
    fn default() -> Self {
        OverlayAddressing {
            underlay: [Ipv4Addr::new(192, 168, 215, 1), Ipv4Addr::new(192, 168, 215, 2)],
            underlay_prefix: 24,
            underlay_mtu: 1500,
            subnet: Ipv4Addr::new(10, 42, 0, 0),
            prefix: 16,
            ranges: [Ipv4Addr::new(10, 42, 1, 0), Ipv4Addr::new(10, 42, 2, 0)],
            containers: [Ipv4Addr::new(10, 42, 1, 1), Ipv4Addr::new(10, 42, 2, 1)],
            id: 42,
            port: 4789,
        }
    }
}

impl OverlayAddressing {
    /// The containers' MTU with `encap`: the underlay's less the overhead.
    pub fn mtu(&self, encap: Encap) -> u32 {
        self.underlay_mtu - encap.overhead()
    }

    /// The overlay as an [`Addressing`] (its gateway is tapnet's default,
    /// the subnet's first host address; the kernel's bridge has none).
    fn addressing(&self, encap: Encap) -> Addressing {
        let s = u32::from(self.subnet);
        Addressing {
            subnet: self.subnet,
            prefix: self.prefix,
            gateway: Ipv4Addr::from(s + 1),
            a: self.containers[0],
            b: self.containers[1],
            mtu: self.mtu(encap),
        }
    }

    /// Client in container A, server in container B.
    fn pair(&self, encap: Encap, names: [&str; 2]) -> Pair {
        Pair {
            a_name: names[0].to_string(),
            a_ns: netns::path(names[0]),
            a_ip: self.containers[0],
            b_name: names[1].to_string(),
            b_ns: netns::path(names[1]),
            b_ip: self.containers[1],
            port: 0,
            via: None,
            iperf3_port: IPERF3_PORT,
            iperf3_via: None,
            addr: self.addressing(encap),
        }
    }

    /// tapnet's network on host `i`: what `tapnet network create bench
    /// --driver vxlan --vni 42 …` (or `gre --key 42`) asks for.
    pub fn network_spec(&self, encap: Encap, i: usize, udp_csum: bool) -> NetworkSpec {
        let vxlan = encap == Encap::Vxlan;
        NetworkSpec {
            name: NETWORK.into(),
            subnet: format!("{}/{}", self.subnet, self.prefix),
            mtu: Some(self.mtu(encap)),
            driver: Some(encap.name().into()),
            vni: vxlan.then_some(self.id),
            key: (!vxlan).then_some(self.id),
            ip_range: Some(format!("{}/24", self.ranges[i])),
            underlay: Some(self.underlay[i].to_string()),
            peers: vec![self.underlay[1 - i].to_string()],
            port: vxlan.then_some(self.port),
            udp_csum: vxlan.then_some(udp_csum),
            ..NetworkSpec::default()
        }
    }
}

/// Run `prog args` in the calling thread's namespace (a child process
/// starts in the namespace of the thread that forks it); a failure is a
/// [`BenchError::Setup`] with its stderr.
fn run(step: &'static str, prog: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError::Setup { step, detail: format!("cannot run {prog}: {e}") })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(BenchError::Setup { step, detail: format!("{prog} {}: {}", args.join(" "), err.trim()) });
    }
    Ok(())
}

/// The underlay: a veth pair between hosts `hosts[0]` and `hosts[1]`,
/// `ul0` on both sides, with each host's address, up.
fn underlay(hosts: &[PathBuf; 2], a: &OverlayAddressing) -> Result<()> {
    netns::run_in(&hosts[0], || -> Result<()> {
        let mut n = Netlink::open().map_err(nl("open netlink in host namespace"))?;
        n.link_add_veth("ul0", "ul0b").map_err(nl("add underlay veth"))?;
        let peer = n.link_index("ul0b").map_err(nl("find underlay veth peer"))?;
        let fd = netns::open(&hosts[1])?;
        n.link_move_to_netns(peer, std::os::fd::AsFd::as_fd(&fd), Some("ul0"))
            .map_err(nl("move underlay veth into host B"))
    })??;
    for (h, ip) in hosts.iter().zip(a.underlay) {
        netns::run_in(h, || -> Result<()> {
            let mut n = Netlink::open().map_err(nl("open netlink in host namespace"))?;
            let i = n.link_index("ul0").map_err(nl("find ul0"))?;
            n.link_set_mtu(i, a.underlay_mtu).map_err(nl("set underlay MTU"))?;
            n.addr_add_v4(i, ip, a.underlay_prefix).map_err(nl("add underlay address"))?;
            n.link_set_up(i, true).map_err(nl("set ul0 up"))
        })??;
    }
    Ok(())
}

/// The namespace names of an overlay topology with `prefix`: hosts A and
/// B, containers A and B.
fn names(prefix: &str) -> [String; 4] {
    ["ha", "hb", "ca", "cb"].map(|s| format!("{prefix}{s}"))
}

/// The kernel's VXLAN overlay: per host a vxlan device and a Linux bridge
/// with a veth into the host's container. Dropping it deletes the four
/// namespaces; every device goes with them.
pub struct KernelOverlay {
    pub hosts: [PathBuf; 2],
    pub pair: Pair,
    names: Vec<String>,
}

impl KernelOverlay {
    pub fn build(prefix: &str, a: OverlayAddressing) -> Result<KernelOverlay> {
        check_prefix(prefix)?;
        let _busy = busy();
        let [ha, hb, ca, cb] = names(prefix);
        let hosts = [netns::path(&ha), netns::path(&hb)];
        let mut k = KernelOverlay { hosts: hosts.clone(), pair: a.pair(Encap::Vxlan, [&ca, &cb]), names: Vec::new() };
        make_namespaces(&[&ha, &hb, &ca, &cb], &mut k.names)?;
        underlay(&hosts, &a)?;
        let mtu = a.mtu(Encap::Vxlan);
        let containers = [&k.pair.a_ns, &k.pair.b_ns];
        for i in 0..2 {
            let (me, peer) = (a.underlay[i].to_string(), a.underlay[1 - i].to_string());
            let (id, port) = (a.id.to_string(), a.port.to_string());
            let ip = a.containers[i];
            netns::run_in(&hosts[i], || -> Result<()> {
                let vxlan = ["link", "add", "vxlan0", "type", "vxlan", "id", &id, "dstport", &port, "local", &me];
                run("ip link add vxlan0 type vxlan", "ip", &[&vxlan[..], &["dev", "ul0"]].concat())?;
                let flood = ["fdb", "append", "00:00:00:00:00:00", "dev", "vxlan0", "dst", &peer];
                run("bridge fdb append (flood to the peer)", "bridge", &flood)?;
                let mut n = Netlink::open().map_err(nl("open netlink in host namespace"))?;
                n.link_add_bridge("br0").map_err(nl("add bridge"))?;
                let br = n.link_index("br0").map_err(nl("find bridge"))?;
                let vx = n.link_index("vxlan0").map_err(nl("find vxlan0"))?;
                n.link_set_mtu(vx, mtu).map_err(nl("set vxlan0 MTU"))?;
                n.link_set_master(vx, Some(br)).map_err(nl("enslave vxlan0"))?;
                veth_into(&mut n, "veth0", "ceth0", containers[i], mtu, Some(mac_for(ip).octets()), Some(br))?;
                n.link_set_mtu(br, mtu).map_err(nl("set bridge MTU"))?;
                n.link_set_up(vx, true).map_err(nl("set vxlan0 up"))?;
                n.link_set_up(br, true).map_err(nl("set bridge up"))
            })??;
            eth0_up(containers[i], ip, a.prefix, None)?;
        }
        Ok(k)
    }

    /// Namespace names: hosts A and B, containers A and B.
    pub fn namespaces(&self) -> &[String] {
        &self.names
    }
}

impl Topology for KernelOverlay {
    fn pair(&self) -> &Pair {
        &self.pair
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        let _busy = busy();
        delete_namespaces(&self.names);
    }
}

/// tapnet's overlay: an engine per host namespace, each with the overlay
/// network and one container. Dropping it shuts each engine down from its
/// host namespace (which removes its container, TAPs and tunnel), then
/// deletes whatever namespace is left.
pub struct TapnetOverlay {
    pub hosts: [PathBuf; 2],
    pub pair: Pair,
    engines: [Option<Engine>; 2],
    names: Vec<String>,
}

impl TapnetOverlay {
    /// `encap` VXLAN or GRE; `udp_csum` is VXLAN's mode (ignored for GRE).
    /// `cfg` (workers, pinning, busy polling) is each host's.
    pub fn build(
        prefix: &str,
        encap: Encap,
        a: OverlayAddressing,
        udp_csum: bool,
        cfg: EngineConfig,
    ) -> Result<TapnetOverlay> {
        check_prefix(prefix)?;
        let _busy = busy();
        let [ha, hb, ca, cb] = names(prefix);
        let hosts = [netns::path(&ha), netns::path(&hb)];
        let mut t = TapnetOverlay {
            hosts: hosts.clone(),
            pair: a.pair(encap, [&ca, &cb]),
            engines: [None, None],
            names: Vec::new(),
        };
        make_namespaces(&[&ha, &hb], &mut t.names)?;
        underlay(&hosts, &a)?;
        for (i, c) in [&ca, &cb].into_iter().enumerate() {
            let cfg = cfg.clone();
            t.engines[i] = Some(netns::run_in(&hosts[i], move || Engine::new(cfg))??);
            // The container's namespace is the engine's to make; it is
            // registered first all the same.
            register(c);
            t.names.push(c.clone());
            let e = t.engines[i].as_mut().expect("just set");
            let spec = a.network_spec(encap, i, udp_csum);
            let container = ContainerSpec {
                name: c.clone(),
                network: NETWORK.into(),
                ip: Some(a.containers[i].to_string()),
                ..ContainerSpec::default()
            };
            let info = netns::run_in(&hosts[i], || {
                e.network_create(&spec)?;
                e.container_create(&container)
            })??;
            let sandbox = PathBuf::from(info.sandbox_key);
            if i == 0 {
                t.pair.a_ns = sandbox;
            } else {
                t.pair.b_ns = sandbox;
            }
        }
        Ok(t)
    }

    /// Namespace names: hosts A and B, containers A and B.
    pub fn namespaces(&self) -> &[String] {
        &self.names
    }
}

impl Topology for TapnetOverlay {
    fn pair(&self) -> &Pair {
        &self.pair
    }
    fn workers(&self) -> Option<usize> {
        self.engines[0].as_ref().map(Engine::workers)
    }
    /// Both engines' counters in one: host B's workers numbered after host
    /// A's, every port name prefixed with its host (`a/`, `b/`), drops and
    /// router events summed.
    fn stats(&self) -> Option<StatsInfo> {
        let [Some(a), Some(b)] = &self.engines else { return None };
        Some(merge_stats(a.stats(), b.stats()))
    }
}

/// Hosts A's and B's counters as one [`StatsInfo`] (see
/// [`TapnetOverlay::stats`]).
fn merge_stats(mut a: StatsInfo, b: StatsInfo) -> StatsInfo {
    let offset = a.per_worker.iter().map(|w| w.worker + 1).max().unwrap_or(0);
    for p in &mut a.ports {
        p.name = format!("a/{}", p.name);
    }
    a.ports.extend(b.ports.into_iter().map(|mut p| {
        p.name = format!("b/{}", p.name);
        p
    }));
    a.per_worker.extend(b.per_worker.into_iter().map(|mut w| {
        w.worker += offset;
        w
    }));
    a.workers += b.workers;
    for (k, v) in b.drops {
        *a.drops.entry(k).or_default() += v;
    }
    for (k, v) in b.router {
        *a.router.entry(k).or_default() += v;
    }
    for (net, events) in b.networks {
        a.networks.insert(format!("b/{net}"), events);
    }
    a
}

impl Drop for TapnetOverlay {
    fn drop(&mut self) {
        let _busy = busy();
        for (e, host) in self.engines.iter_mut().zip(&self.hosts) {
            if let Some(mut e) = e.take() {
                // If the host namespace cannot be entered, the closure (and
                // the engine in it) is dropped, which shuts it down here.
                match netns::run_in(host, move || e.shutdown()) {
                    Ok(errors) => errors.iter().for_each(|err| eprintln!("tapnet bench: cleanup: {err}")),
                    Err(err) => eprintln!("tapnet bench: cleanup: {err}"),
                }
            }
        }
        delete_namespaces(&self.names);
    }
}

/// Can this kernel make a `gretap` device (the kernel reference a GRE
/// overlay would need)? Tried with `ip link add … type gretap` in a
/// throwaway namespace of a thread of its own, so nothing is visible
/// outside it. `Err` holds why not, in a sentence.
pub fn kernel_gretap() -> std::result::Result<(), String> {
    std::thread::spawn(|| {
        // SAFETY: unshare has no memory preconditions; it moves only this
        // thread, which exits right after, into a new network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("cannot make a namespace to try gretap in: {}", std::io::Error::last_os_error()));
        }
        let args =
            ["link", "add", "gretap0", "type", "gretap", "local", "192.0.2.1", "remote", "192.0.2.2", "key", "42"];
        let out = Command::new("ip")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run ip to try gretap: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim().trim_start_matches("Error: ").trim_end_matches('.');
        // The link type is registered by the ip_gre module.
        let why = if err.contains("Unknown device type") { "; no ip_gre module" } else { "" };
        Err(format!(
            "this kernel cannot make a gretap device (`ip link add … type gretap`: {err}{why}), \
             so there is no kernel GRE overlay to compare with"
        ))
    })
    .join()
    .unwrap_or_else(|_| Err("the gretap probe panicked".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic;
    use std::path::Path;
    use std::time::Duration;

    fn prefix(tag: &str) -> String {
        format!("tnb{}{tag}", std::process::id() % 100_000)
    }

    fn gone(names: &[String]) -> bool {
        names.iter().all(|n| !netns::path(n).exists() && !Path::new(control::hosts::ETC_NETNS).join(n).exists())
    }

    #[test]
    fn specs_are_the_cli_s() {
        let a = OverlayAddressing::default();
        assert_eq!((a.mtu(Encap::Vxlan), a.mtu(Encap::Gre)), (1450, 1458));
        let s = a.network_spec(Encap::Vxlan, 1, true);
        assert_eq!(
            (s.driver.as_deref(), s.vni, s.key, s.port, s.udp_csum),
            (Some("vxlan"), Some(42), None, Some(4789), Some(true))
        );
        assert_eq!((s.ip_range.as_deref(), s.underlay.as_deref()), (Some("10.42.2.0/24"), Some("192.168.215.2")));
        assert_eq!(s.peers, ["192.168.215.1"]);
        let g = a.network_spec(Encap::Gre, 0, true);
        assert_eq!((g.driver.as_deref(), g.vni, g.key, g.port, g.udp_csum), (Some("gre"), None, Some(42), None, None));
        let p = a.pair(Encap::Gre, ["x", "y"]);
        assert_eq!(
            (p.a_ip, p.b_ip, p.addr.mtu, p.addr.gateway),
            (a.containers[0], a.containers[1], 1458, Ipv4Addr::new(10, 42, 0, 1))
        );
    }

    /// A 3-worker and a 2-worker engine's counters, merged.
    #[test]
    fn both_hosts_counters_in_one() {
        let stats = |workers: usize, port: &str, drop: u64| {
            serde_json::from_value::<StatsInfo>(serde_json::json!({
                "workers": workers,
                "per_worker": (0..workers).map(|w| serde_json::json!({"worker": w, "wakeups": 1, "frames": 2})).collect::<Vec<_>>(),
                "ports": [{"port": 1, "name": port, "network": "bench", "rx_packets": 1, "rx_bytes": 2,
                           "tx_packets": 3, "tx_bytes": 4, "rx_dropped": 0, "tx_dropped": 0}],
                "drops": {"tunnel_truncated": drop, "no_route": 0},
                "networks": {"bench": {"learned": 1}},
                "router": {},
            }))
            .unwrap()
        };
        let m = merge_stats(stats(3, "x:eth0", 1), stats(2, "y:eth0", 5));
        assert_eq!(m.workers, 5);
        assert_eq!(m.per_worker.iter().map(|w| w.worker).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(m.ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a/x:eth0", "b/y:eth0"]);
        assert_eq!(m.drops["tunnel_truncated"], 6);
        assert_eq!(m.networks.len(), 2);
    }

    #[test]
    #[ignore = "needs root: creates network namespaces, a veth underlay and vxlan devices"]
    fn kernel_vxlan_builds_pings_and_cleans_up() {
        let k = KernelOverlay::build(&prefix("ok"), OverlayAddressing::default()).unwrap();
        let names = k.namespaces().to_vec();
        assert_eq!(names.len(), 4);
        let p = traffic::ping(Some(&k.pair.a_ns), k.pair.b_ip, 3, Duration::from_secs(1)).unwrap();
        assert_eq!(p.received, 3, "{p:?}");
        drop(k);
        assert!(gone(&names), "left behind: {names:?}");
    }

    #[test]
    #[ignore = "needs root: creates network namespaces, a veth underlay and TAP devices"]
    fn tapnet_overlays_build_carry_tcp_and_clean_up() {
        let cfg = EngineConfig { workers: 1, pin: false, busy_poll_us: 0, ..EngineConfig::default() };
        for (encap, csum, tag) in [(Encap::Vxlan, false, "ov"), (Encap::Vxlan, true, "oc"), (Encap::Gre, false, "og")] {
            let t = TapnetOverlay::build(&prefix(tag), encap, OverlayAddressing::default(), csum, cfg.clone()).unwrap();
            let names = t.namespaces().to_vec();
            assert_eq!(names.len(), 4);
            let p = traffic::ping(Some(&t.pair.a_ns), t.pair.b_ip, 3, Duration::from_secs(1)).unwrap();
            assert_eq!(p.received, 3, "{encap:?}: {p:?}");
            let s0 = t.stats().unwrap();
            let r = traffic::tcp_bulk(
                t.pair.server(),
                t.pair.client(),
                0,
                1,
                Some(16 << 20),
                Duration::from_secs(20),
                true,
            )
            .unwrap();
            assert_eq!(r.bytes, 16 << 20);
            // The bytes crossed both tunnels: A's VTEP sent, B's tunnel received.
            let s1 = t.stats().unwrap();
            let moved = |name: &str, f: fn(&control::api::PortStats) -> u64| {
                let get = |s: &StatsInfo| s.ports.iter().find(|p| p.name.starts_with(name)).map_or(0, f);
                get(&s1) - get(&s0)
            };
            assert!(moved("a/vtep:", |p| p.tx_bytes) >= 16 << 20, "{encap:?}: {:?}", s1.ports);
            drop(t);
            assert!(gone(&names), "left behind: {names:?}");
        }
    }

    #[test]
    #[ignore = "needs root: creates a network namespace"]
    fn the_gretap_probe_answers() {
        // Either way is fine; what matters is an answer, and a reason when
        // it is no.
        if let Err(why) = kernel_gretap() {
            assert!(why.contains("gretap"), "{why}");
        }
    }
}
