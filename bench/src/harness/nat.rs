//! The datapaths of the NAT scenarios (`dnat`, `snat`) as Drop guards: the
//! kernel's reference ([`KernelNat`], docker0's setup) and tapnet's
//! ([`TapnetNat`], an in-process engine with an uplink), with the same
//! addresses ([`NatAddressing`]), MTU and outside namespace.
//!
//! Both have three namespaces: a "host", one container on a /24 behind
//! the host's gateway, and an "outside" joined to the host by a veth pair
//! (`up0` in the host, `eth0` outside) on a second /24, where the host's
//! uplink address lives. Both publish the same two ports of the container
//! on the uplink address (`UPLINK:8080 → container:80`, and iperf3's
//! `UPLINK:5201 → container:5201`) and masquerade what the container sends
//! out. `snat`: the client is the container, the server is outside and sees
//! the uplink address. `dnat`: the server is the container, the client is
//! outside and connects to the published port.
//!
//! * kernel: the host namespace holds bridge `br0` with the gateway address
//!   and the container's veth, `up0` holds the uplink address,
//!   `net.ipv4.ip_forward` is 1 and `net.bridge.bridge-nf-call-iptables` 1
//!   (both as Docker sets them), and Docker's own iptables rules for one
//!   bridge network and one container published with `-p UPLINK:8080:80`
//!   are loaded with `iptables-restore` ([`docker_rules`]: the nat table's
//!   `DOCKER` chain and `MASQUERADE`, the filter table's `FORWARD` policy
//!   DROP with `DOCKER-USER`, the two isolation stages, the conntrack
//!   `RELATED,ESTABLISHED` accept and the published port's accept).
//!   Docker's userland proxy is left out: published traffic from another
//!   host is DNATed before it could reach it.
//! * tapnet: an [`Engine`] created, driven and shut down from threads that
//!   have entered the host namespace (as `tapnet daemon --netns` runs), so
//!   that its TAPs, its netlink sockets and its uplink's AF_PACKET sockets
//!   are the host namespace's; `--uplink up0 --uplink-ip UPLINK/24` in
//!   direct mode (the kernel holds no address on `up0`), one network, one
//!   container created with the same `-p` arguments. No iptables rule and
//!   no IP forwarding in the host namespace.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use control::engine::{Engine, EngineConfig, UplinkMode, UplinkOpts};
use control::ipam::mac_for;
use control::netlink::Netlink;
use control::netns;

use super::topology::{
    bench_container, bench_network, busy, check_prefix, delete_namespaces, eth0_up, kernel_bridge, make_namespaces, nl,
    register, veth_into, Addressing, BenchError, Pair, Result, Topology, IPERF3_PORT,
};

/// Which way the traffic crosses the NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client outside, server in the container behind a published port.
    Dnat,
    /// Client in the container, server outside (masquerade).
    Snat,
}

/// Addresses, MTU and ports shared by both datapaths of a NAT scenario.
#[derive(Debug, Clone, Copy)]
pub struct NatAddressing {
    /// The container network; the container is `net.a`.
    pub net: Addressing,
    /// The outside namespace's address on the uplink's LAN.
    pub outside: Ipv4Addr,
    /// The host's (or tapnet's) address on the uplink's LAN.
    pub uplink: Ipv4Addr,
    pub uplink_prefix: u8,
    /// The published port, on the uplink address.
    pub host_port: u16,
    /// The container's port it leads to.
    pub container_port: u16,
}

impl Default for NatAddressing {
    fn default() -> Self {
        NatAddressing {
            net: Addressing::default(),
            outside: Ipv4Addr::new(10, 214, 0, 1),
            uplink: Ipv4Addr::new(10, 214, 0, 2),
            uplink_prefix: 24,
            host_port: 8080,
            container_port: 80,
        }
    }
}

impl NatAddressing {
    /// The published ports as (host port, container port): the workloads'
    /// and iperf3's.
    pub fn published(&self) -> [(u16, u16); 2] {
        [(self.host_port, self.container_port), (IPERF3_PORT, IPERF3_PORT)]
    }

    /// The `-p` arguments both datapaths publish with.
    pub fn publish_args(&self) -> Vec<String> {
        self.published().iter().map(|(h, c)| format!("{}:{h}:{c}/tcp", self.uplink)).collect()
    }

    /// Client and server for `dir`, given the container's and the outside's
    /// namespaces.
    fn pair(&self, dir: Direction, container: (&str, PathBuf), outside: (&str, PathBuf)) -> Pair {
        let c = self.net.a;
        let (a, a_ip, b, b_ip) = match dir {
            Direction::Dnat => (outside, self.outside, container, c),
            Direction::Snat => (container, c, outside, self.outside),
        };
        let dnat = dir == Direction::Dnat;
        Pair {
            a_name: a.0.to_string(),
            a_ns: a.1,
            a_ip,
            b_name: b.0.to_string(),
            b_ns: b.1,
            b_ip,
            port: if dnat { self.container_port } else { 0 },
            via: dnat.then(|| SocketAddrV4::new(self.uplink, self.host_port)),
            iperf3_port: IPERF3_PORT,
            iperf3_via: dnat.then(|| SocketAddrV4::new(self.uplink, IPERF3_PORT)),
            addr: self.net,
        }
    }
}

/// Docker's iptables rules (as `iptables-save` shows them on a Docker host)
/// for one bridge network on `bridge` with `a.net`'s subnet and one
/// container at `a.net.a` started with `-p UPLINK:HOST:CONTAINER` for each
/// of `a.published()`, in `iptables-restore` form.
pub fn docker_rules(a: &NatAddressing, bridge: &str) -> String {
    let subnet = format!("{}/{}", a.net.subnet, a.net.prefix);
    let c = a.net.a;
    let mut nat = vec![
        "*nat".to_string(),
        ":PREROUTING ACCEPT [0:0]".into(),
        ":INPUT ACCEPT [0:0]".into(),
        ":OUTPUT ACCEPT [0:0]".into(),
        ":POSTROUTING ACCEPT [0:0]".into(),
        ":DOCKER - [0:0]".into(),
        "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER".into(),
        "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER".into(),
        format!("-A POSTROUTING -s {subnet} ! -o {bridge} -j MASQUERADE"),
    ];
    let mut filter = vec![
        "*filter".to_string(),
        ":INPUT ACCEPT [0:0]".into(),
        ":FORWARD DROP [0:0]".into(),
        ":OUTPUT ACCEPT [0:0]".into(),
        ":DOCKER - [0:0]".into(),
        ":DOCKER-ISOLATION-STAGE-1 - [0:0]".into(),
        ":DOCKER-ISOLATION-STAGE-2 - [0:0]".into(),
        ":DOCKER-USER - [0:0]".into(),
        "-A FORWARD -j DOCKER-USER".into(),
        "-A FORWARD -j DOCKER-ISOLATION-STAGE-1".into(),
        format!("-A FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        format!("-A FORWARD -o {bridge} -j DOCKER"),
        format!("-A FORWARD -i {bridge} ! -o {bridge} -j ACCEPT"),
        format!("-A FORWARD -i {bridge} -o {bridge} -j ACCEPT"),
    ];
    // Hairpin (a container reaching its own published port) first, as
    // Docker orders them.
    for (_, cport) in a.published() {
        nat.push(format!("-A POSTROUTING -s {c}/32 -d {c}/32 -p tcp -m tcp --dport {cport} -j MASQUERADE"));
    }
    nat.push(format!("-A DOCKER -i {bridge} -j RETURN"));
    for (hport, cport) in a.published() {
        nat.push(format!(
            "-A DOCKER -d {}/32 ! -i {bridge} -p tcp -m tcp --dport {hport} -j DNAT --to-destination {c}:{cport}",
            a.uplink
        ));
        filter.push(format!("-A DOCKER -d {c}/32 ! -i {bridge} -o {bridge} -p tcp -m tcp --dport {cport} -j ACCEPT"));
    }
    filter.extend([
        format!("-A DOCKER-ISOLATION-STAGE-1 -i {bridge} ! -o {bridge} -j DOCKER-ISOLATION-STAGE-2"),
        "-A DOCKER-ISOLATION-STAGE-1 -j RETURN".into(),
        format!("-A DOCKER-ISOLATION-STAGE-2 -o {bridge} -j DROP"),
        "-A DOCKER-ISOLATION-STAGE-2 -j RETURN".into(),
        "-A DOCKER-USER -j RETURN".into(),
    ]);
    nat.push("COMMIT".into());
    filter.push("COMMIT".into());
    nat.into_iter().chain(filter).map(|l| l + "\n").collect()
}

/// Load `rules` with `iptables-restore` in the calling thread's namespace
/// (a child process starts in the namespace of the thread that forks it).
fn iptables_restore(rules: &str) -> Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let step = "iptables-restore";
    let mut child = Command::new("iptables-restore")
        .args(["-w", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::Setup {
            step,
            detail: format!("{e} (the kernel reference of the NAT scenarios needs iptables)"),
        })?;
    let wrote = child.stdin.take().map(|mut i| i.write_all(rules.as_bytes()));
    let out = child.wait_with_output().map_err(|e| BenchError::Setup { step, detail: e.to_string() })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(BenchError::Setup { step, detail: format!("{}: {}", out.status, err.trim()) });
    }
    if let Some(Err(e)) = wrote {
        return Err(BenchError::Setup { step, detail: e.to_string() });
    }
    Ok(())
}

/// Write sysctl `path` (under `/proc/sys/net`, so the calling thread's
/// namespace's). A missing `optional` one is skipped.
fn sysctl(path: &'static str, value: &str, optional: bool) -> Result<()> {
    if optional && !std::path::Path::new(path).exists() {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|e| BenchError::Setup { step: path, detail: e.to_string() })
}

/// docker0's setup for the NAT scenarios: namespaces `{prefix}h` (host),
/// `{prefix}c` (container) and `{prefix}o` (outside). Dropping it deletes
/// the three; every interface and rule goes with them.
pub struct KernelNat {
    pub host: PathBuf,
    pub pair: Pair,
    names: Vec<String>,
}

impl KernelNat {
    pub fn build(prefix: &str, dir: Direction, a: NatAddressing) -> Result<KernelNat> {
        check_prefix(prefix)?;
        let _busy = busy();
        let (h, c, o) = (format!("{prefix}h"), format!("{prefix}c"), format!("{prefix}o"));
        let (cns, ons) = (netns::path(&c), netns::path(&o));
        let mut k = KernelNat {
            host: netns::path(&h),
            pair: a.pair(dir, (&c, cns.clone()), (&o, ons.clone())),
            names: Vec::new(),
        };
        make_namespaces(&[&h, &c, &o], &mut k.names)?;
        netns::run_in(&k.host, || -> Result<()> {
            let mut n = Netlink::open().map_err(nl("open netlink in host namespace"))?;
            let br = kernel_bridge(&mut n, &a.net)?;
            veth_into(&mut n, "vethc", "cethc", &cns, a.net.mtu, Some(mac_for(a.net.a).octets()), Some(br))?;
            let up = veth_into(&mut n, "up0", "oeth0", &ons, a.net.mtu, None, None)?;
            n.addr_add_v4(up, a.uplink, a.uplink_prefix).map_err(nl("add uplink address"))?;
            sysctl("/proc/sys/net/ipv4/ip_forward", "1", false)?;
            sysctl("/proc/sys/net/bridge/bridge-nf-call-iptables", "1", true)?;
            iptables_restore(&docker_rules(&a, "br0"))
        })??;
        eth0_up(&cns, a.net.a, a.net.prefix, Some(a.net.gateway))?;
        eth0_up(&ons, a.outside, a.uplink_prefix, None)?;
        Ok(k)
    }

    /// Namespace names: host, container, outside.
    pub fn namespaces(&self) -> &[String] {
        &self.names
    }
}

impl Topology for KernelNat {
    fn pair(&self) -> &Pair {
        &self.pair
    }
}

impl Drop for KernelNat {
    fn drop(&mut self) {
        let _busy = busy();
        delete_namespaces(&self.names);
    }
}

/// tapnet's NAT scenarios: namespaces `{prefix}h` (host, where the engine
/// runs), `{prefix}o` (outside) and the engine's container `{prefix}c`.
/// Dropping it shuts the engine down from the host namespace, then deletes
/// whatever namespace is left.
pub struct TapnetNat {
    pub host: PathBuf,
    pub pair: Pair,
    engine: Option<Engine>,
    names: Vec<String>,
}

impl TapnetNat {
    /// `cfg` gives the workers, pinning, busy polling and conntrack bound;
    /// its uplink is set here.
    pub fn build(prefix: &str, dir: Direction, a: NatAddressing, cfg: EngineConfig) -> Result<TapnetNat> {
        check_prefix(prefix)?;
        let _busy = busy();
        let (h, c, o) = (format!("{prefix}h"), format!("{prefix}c"), format!("{prefix}o"));
        let (cns, ons) = (netns::path(&c), netns::path(&o));
        let mut t = TapnetNat {
            host: netns::path(&h),
            pair: a.pair(dir, (&c, cns.clone()), (&o, ons.clone())),
            engine: None,
            names: Vec::new(),
        };
        make_namespaces(&[&h, &o], &mut t.names)?;
        netns::run_in(&t.host, || -> Result<()> {
            let mut n = Netlink::open().map_err(nl("open netlink in host namespace"))?;
            veth_into(&mut n, "up0", "oeth0", &ons, a.net.mtu, None, None).map(drop)
        })??;
        eth0_up(&ons, a.outside, a.uplink_prefix, None)?;
        let uplink = UplinkOpts {
            iface: "up0".into(),
            ip: a.uplink,
            prefix: a.uplink_prefix,
            gateway: None,
            mode: UplinkMode::Direct,
        };
        let cfg = EngineConfig { uplink: Some(uplink), ..cfg };
        t.engine = Some(netns::run_in(&t.host, move || Engine::new(cfg))??);
        // The container's namespace is the engine's to make; it is
        // registered first all the same.
        register(&c);
        t.names.push(c.clone());
        let e = t.engine.as_mut().expect("just set");
        let info = netns::run_in(&t.host, || {
            e.network_create(&bench_network(&a.net))?;
            e.container_create(&bench_container(&c, a.net.a, a.publish_args()))
        })??;
        let sandbox = PathBuf::from(info.sandbox_key);
        match dir {
            Direction::Dnat => t.pair.b_ns = sandbox,
            Direction::Snat => t.pair.a_ns = sandbox,
        }
        Ok(t)
    }

    /// Namespace names: host, outside, container.
    pub fn namespaces(&self) -> &[String] {
        &self.names
    }
}

impl Topology for TapnetNat {
    fn pair(&self) -> &Pair {
        &self.pair
    }
    fn workers(&self) -> Option<usize> {
        self.engine.as_ref().map(Engine::workers)
    }
    fn stats(&self) -> Option<control::api::StatsInfo> {
        self.engine.as_ref().map(Engine::stats)
    }
}

impl Drop for TapnetNat {
    fn drop(&mut self) {
        let _busy = busy();
        if let Some(mut e) = self.engine.take() {
            // If the host namespace cannot be entered, the closure (and
            // the engine in it) is dropped, which shuts it down here.
            match netns::run_in(&self.host, move || e.shutdown()) {
                Ok(errors) => errors.iter().for_each(|err| eprintln!("tapnet bench: cleanup: {err}")),
                Err(err) => eprintln!("tapnet bench: cleanup: {err}"),
            }
        }
        delete_namespaces(&self.names);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic;
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn docker_rules_are_dockers() {
        let r = docker_rules(&NatAddressing::default(), "br0");
        let lines: Vec<&str> = r.lines().collect();
        // Both tables, each committed.
        assert_eq!(lines.iter().filter(|l| **l == "COMMIT").count(), 2);
        for want in [
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            "-A POSTROUTING -s 10.213.0.0/24 ! -o br0 -j MASQUERADE",
            "-A DOCKER -d 10.214.0.2/32 ! -i br0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.213.0.2:80",
            "-A DOCKER -d 10.214.0.2/32 ! -i br0 -p tcp -m tcp --dport 5201 -j DNAT --to-destination 10.213.0.2:5201",
            ":FORWARD DROP [0:0]",
            "-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A DOCKER -d 10.213.0.2/32 ! -i br0 -o br0 -p tcp -m tcp --dport 80 -j ACCEPT",
            "-A DOCKER-ISOLATION-STAGE-2 -o br0 -j DROP",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{r}");
        }
        // The RETURN for the bridge's own traffic precedes the DNATs.
        let ret = lines.iter().position(|l| *l == "-A DOCKER -i br0 -j RETURN").unwrap();
        assert!(lines.iter().position(|l| l.contains("-j DNAT")).unwrap() > ret);
        // The same ports as tapnet publishes.
        assert_eq!(NatAddressing::default().publish_args(), ["10.214.0.2:8080:80/tcp", "10.214.0.2:5201:5201/tcp"]);
    }

    #[test]
    fn pairs_cross_the_nat_the_right_way() {
        let a = NatAddressing::default();
        let (c, o) = (("c", PathBuf::from("/c")), ("o", PathBuf::from("/o")));
        let d = a.pair(Direction::Dnat, c.clone(), o.clone());
        assert_eq!((d.a_name.as_str(), d.a_ip, d.b_name.as_str(), d.b_ip), ("o", a.outside, "c", a.net.a));
        assert_eq!(d.via, Some(SocketAddrV4::new(a.uplink, 8080)));
        assert_eq!((d.port, d.target_ip()), (80, a.uplink));
        let s = a.pair(Direction::Snat, c, o);
        assert_eq!((s.a_name.as_str(), s.a_ip, s.b_name.as_str(), s.b_ip), ("c", a.net.a, "o", a.outside));
        assert_eq!((s.via, s.iperf3_via, s.target_ip()), (None, None, a.outside));
    }

    fn prefix(tag: &str) -> String {
        format!("tnb{}{tag}", std::process::id() % 100_000)
    }

    fn gone(names: &[String]) -> bool {
        names.iter().all(|n| {
            !Path::new(netns::NETNS_RUN_DIR).join(n).exists() && !Path::new(control::hosts::ETC_NETNS).join(n).exists()
        })
    }

    /// The address the server sees a connection from the client come from.
    fn peer_seen(p: &Pair) -> Ipv4Addr {
        use std::net::{SocketAddr, TcpListener, TcpStream};
        let l = netns::run_in(&p.b_ns, || TcpListener::bind(SocketAddrV4::new(p.b_ip, p.port))).unwrap().unwrap();
        let bound = match l.local_addr().unwrap() {
            SocketAddr::V4(v) => v,
            SocketAddr::V6(_) => unreachable!(),
        };
        let target = p.via.unwrap_or(bound);
        let c = netns::run_in(&p.a_ns, || TcpStream::connect_timeout(&target.into(), Duration::from_secs(5)));
        c.unwrap().unwrap();
        match l.accept().unwrap().1 {
            SocketAddr::V4(v) => *v.ip(),
            SocketAddr::V6(_) => unreachable!(),
        }
    }

    /// Both datapaths, both directions: connections cross the NAT, the
    /// server sees the address it should (the uplink's through SNAT, the
    /// client's own through DNAT), and nothing is left afterwards.
    #[test]
    #[ignore = "needs root: creates network namespaces, bridges, veth pairs, iptables rules and TAP devices"]
    fn both_datapaths_cross_the_nat_and_clean_up() {
        let a = NatAddressing::default();
        for (i, dir) in [Direction::Dnat, Direction::Snat].into_iter().enumerate() {
            let cfg = EngineConfig { workers: 1, pin: false, ..EngineConfig::default() };
            let k = KernelNat::build(&prefix(&format!("y{i}k")), dir, a).unwrap();
            let t = TapnetNat::build(&prefix(&format!("y{i}t")), dir, a, cfg).unwrap();
            let mut names = k.namespaces().to_vec();
            names.extend_from_slice(t.namespaces());
            assert_eq!(names.len(), 6);
            let built: [Box<dyn Topology>; 2] = [Box::new(k), Box::new(t)];
            for (t, dp) in built.iter().zip(["kernel", "tapnet"]) {
                let p = t.pair();
                let want = if dir == Direction::Snat { a.uplink } else { a.outside };
                assert_eq!(peer_seen(p), want, "{dir:?} {dp}");
                let r = traffic::tcp_crr(p.server(), p.client(), p.port, Duration::from_millis(500))
                    .unwrap_or_else(|e| panic!("{dir:?} {dp}: {e}"));
                assert!(r.connections > 0, "{dir:?} {dp}: {r:?}");
            }
            assert!(built[1].stats().is_some() && built[0].stats().is_none());
            drop(built);
            assert!(gone(&names), "left behind: {names:?}");
        }
    }
}
