//! Overlay networks across hosts (`network create --driver vxlan|gre`): a
//! network whose containers on several hosts share one L2 segment, carried
//! between the hosts by tapnet's own VXLAN or GRE.
//!
//! The kernel owns the underlay address (the host's own address, given
//! with `--underlay`); the dataplane sends and receives encapsulated frames
//! through sockets bound to it (`dataplane::port::udp`: a reuseport group
//! to receive and a pool per worker to send; `…::gre`: one raw socket,
//! which one worker reads and every worker sends through). One tunnel (its
//! sockets, one dataplane port with a queue per worker) serves every
//! overlay network of the same kind, underlay address and port; each
//! network is told apart by its VNI or key. Each remote host (`--peer`) is a VTEP: a virtual port of
//! the network, which the MAC table points at for the MACs behind it and
//! which floods reach (head-end replication). `--ip-range` is the part of
//! the subnet this host hands out, so two hosts never hand out one address.
//!
//! The containers' MTU is the underlay's minus the encapsulation overhead
//! (`dataplane::overlay::tunnel`), unless `--mtu` says otherwise; the
//! dataplane answers frames too big for the underlay with an ICMP
//! fragmentation-needed.

use std::net::Ipv4Addr;

use dataplane::overlay::tunnel::Encap;
use dataplane::port::PortId;
use dataplane::router::OverlayConfig;
use dataplane::PortRole;

use super::{Engine, EngineError, Result};
use crate::api::NetworkSpec;
use crate::netlink::Netlink;

/// The default VXLAN UDP port (RFC 7348 §5).
pub const VXLAN_PORT: u16 = 4789;

/// What identifies a tunnel: one set of sockets per kind, address and port
/// (for GRE, one socket per address: `port` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct TunnelKey {
    pub(super) encap: Encap,
    pub(super) underlay: Ipv4Addr,
    pub(super) port: u16,
}

/// A tunnel's dataplane port and how many networks use it.
#[derive(Debug)]
pub(super) struct Tunnel {
    pub(super) port: PortId,
    pub(super) users: usize,
    pub(super) udp_csum: bool,
    /// Its sockets ([`dataplane::port::tunnel_fds`]; the dataplane owns them).
    pub(super) fds: Vec<std::os::fd::RawFd>,
}

/// A tunnel as a daemon taken over hands it to the new one (in the
/// takeover answer), followed by its sockets' descriptors in the order of
/// [`dataplane::port::tunnel_fds`]: the new daemon's network on the same
/// tunnel uses them instead of opening any (a new VXLAN receive socket
/// would join the reuseport group and take part of the traffic).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandedTunnel {
    /// `vxlan` or `gre`.
    pub encap: String,
    pub underlay: Ipv4Addr,
    pub port: u16,
    pub udp_csum: bool,
    /// Send sockets per worker (VXLAN).
    pub pool: usize,
    /// Descriptors that follow.
    pub sockets: usize,
}

impl HandedTunnel {
    fn key(&self) -> Option<TunnelKey> {
        let encap = match self.encap.as_str() {
            "vxlan" => Encap::Vxlan,
            "gre" => Encap::Gre,
            _ => return None,
        };
        Some(TunnelKey { encap, underlay: self.underlay, port: self.port })
    }
}

/// An overlay network's tunnel and VTEPs.
#[derive(Debug, Clone)]
pub(super) struct Overlay {
    pub(super) key: TunnelKey,
    /// VNI or key.
    pub(super) id: u32,
    pub(super) peers: Vec<(Ipv4Addr, PortId)>,
    pub(super) tunnel: PortId,
    pub(super) path_mtu: u32,
    pub(super) mss_clamp: bool,
    pub(super) udp_csum: bool,
}

impl Overlay {
    pub(super) fn config(&self) -> OverlayConfig {
        OverlayConfig {
            encap: self.key.encap,
            id: self.id,
            tunnel: self.tunnel,
            dst_port: self.key.port,
            path_mtu: self.path_mtu,
            mss_clamp: self.mss_clamp,
        }
    }
}

/// A checked overlay request, before anything is made.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) key: TunnelKey,
    pub(super) id: u32,
    pub(super) peers: Vec<Ipv4Addr>,
    /// The underlay interface's MTU less the encapsulation overhead.
    pub(super) path_mtu: u32,
    pub(super) mss_clamp: bool,
    pub(super) udp_csum: bool,
}

fn bad(what: &str) -> EngineError {
    EngineError::BadOverlay(what.to_string())
}

fn parse_v4(what: &str, s: &str) -> Result<Ipv4Addr> {
    let a: Ipv4Addr = s.parse().map_err(|_| bad(&format!("{what} {:?} is not an IPv4 address", crate::api::cut(s))))?;
    if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
        return Err(bad(&format!("{what} {a} is not a unicast host address")));
    }
    Ok(a)
}

/// The interface holding `addr` in the calling thread's namespace, and its
/// MTU.
fn underlay_link(addr: Ipv4Addr) -> Result<(String, u32)> {
    let mut nl = Netlink::open().map_err(|e| bad(&format!("open netlink: {e}")))?;
    let links = nl.links().map_err(|e| bad(&format!("list links: {e}")))?;
    for l in links {
        let addrs = nl.addrs_v4(l.index).map_err(|e| bad(&format!("list addresses: {e}")))?;
        if addrs.iter().any(|&(a, _)| a == addr) {
            return Ok((l.name, l.mtu));
        }
    }
    Err(bad(&format!("--underlay {addr} is not an address of this host (the daemon's namespace)")))
}

/// A peer's failed sends are logged at most this often.
const FAILURE_LOG_MS: u64 = 10_000;

impl Engine {
    /// Log, at most every 10 s per peer, the sends to an overlay peer that
    /// failed since the last line (a peer that is down makes no error
    /// storm: the dataplane only counts them).
    pub(super) fn log_peer_failures(&self, now: u64) {
        let Ok(mut seen) = self.peer_failures.lock() else { return };
        for (name, n) in &self.networks {
            for &(remote, port) in n.overlay.iter().flat_map(|o| &o.peers) {
                let failed = self.dp.stats().port(port).tx_dropped;
                let e = seen.entry(port).or_insert((failed, 0));
                if failed > e.0 && now.saturating_sub(e.1) >= FAILURE_LOG_MS {
                    eprintln!("tapnet: overlay {name}: {} sends to peer {remote} failed", failed - e.0);
                    *e = (failed, now);
                }
            }
        }
    }

    /// What `tapnet overlay check NET` probes.
    pub(super) fn probe_target(&self, net: &str) -> Result<super::probe::Target> {
        let n = self.networks.get(net).ok_or_else(|| EngineError::NoNetwork(net.into()))?;
        let o =
            n.overlay.as_ref().ok_or_else(|| bad(&format!("network {:?} is not an overlay", crate::api::cut(net))))?;
        Ok(super::probe::Target {
            encap: o.key.encap,
            underlay: o.key.underlay,
            port: o.key.port,
            id: o.id,
            peers: o.peers.iter().map(|&(a, _)| a).collect(),
            mtu: n.mtu,
            max: o.path_mtu,
        })
    }

    /// Check a network spec's driver and overlay options without changing
    /// anything: `None` for a plain bridge network.
    pub(super) fn overlay_plan(&self, spec: &NetworkSpec) -> Result<Option<Plan>> {
        let driver = spec.driver.as_deref().unwrap_or("bridge");
        let encap = match driver {
            "bridge" => {
                let given = [
                    ("--vni", spec.vni.is_some()),
                    ("--key", spec.key.is_some()),
                    ("--underlay", spec.underlay.is_some()),
                    ("--peer", !spec.peers.is_empty()),
                    ("--port", spec.port.is_some()),
                    ("--ip-range", spec.ip_range.is_some()),
                    ("--udp-csum", spec.udp_csum.is_some()),
                    ("--mss-clamp", spec.mss_clamp.is_some()),
                ];
                if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
                    return Err(bad(&format!("{flag} is only valid with --driver vxlan or gre")));
                }
                return Ok(None);
            }
            "vxlan" => Encap::Vxlan,
            "gre" => Encap::Gre,
            other => return Err(bad(&format!("unknown driver {:?}: bridge, vxlan or gre", crate::api::cut(other)))),
        };
        let id = match (encap, spec.vni, spec.key) {
            (Encap::Vxlan, Some(v), None) if (1..=0x00ff_ffff).contains(&v) => v,
            (Encap::Vxlan, Some(v), None) => return Err(bad(&format!("--vni {v}: must be between 1 and 16777215"))),
            (Encap::Vxlan, None, _) => return Err(bad("--driver vxlan needs --vni")),
            (Encap::Vxlan, _, Some(_)) => return Err(bad("--key is for --driver gre; vxlan takes --vni")),
            (Encap::Gre, None, Some(k)) => k,
            (Encap::Gre, _, None) => return Err(bad("--driver gre needs --key")),
            (Encap::Gre, Some(_), _) => return Err(bad("--vni is for --driver vxlan; gre takes --key")),
        };
        if encap == Encap::Gre && (spec.port.is_some() || spec.udp_csum.is_some()) {
            return Err(bad("--port and --udp-csum are VXLAN options"));
        }
        let port = spec.port.unwrap_or(VXLAN_PORT);
        if port == 0 {
            return Err(bad("--port 0: must be between 1 and 65535"));
        }
        let underlay = parse_v4(
            "--underlay",
            spec.underlay.as_deref().ok_or_else(|| bad("an overlay network needs --underlay"))?,
        )?;
        if spec.peers.is_empty() {
            return Err(bad("an overlay network needs at least one --peer"));
        }
        let mut peers = Vec::with_capacity(spec.peers.len());
        for p in &spec.peers {
            let a = parse_v4("--peer", p)?;
            if a == underlay {
                return Err(bad(&format!("--peer {a} is this host's own --underlay")));
            }
            if peers.contains(&a) {
                return Err(bad(&format!("--peer {a} is given twice")));
            }
            peers.push(a);
        }
        let key = TunnelKey { encap, underlay, port: if encap == Encap::Vxlan { port } else { 0 } };
        let udp_csum = spec.udp_csum.unwrap_or(false);
        if let Some(t) = self.tunnels.get(&key) {
            if t.udp_csum != udp_csum {
                return Err(bad("--udp-csum differs from the other networks on this underlay address and port"));
            }
        }
        if let Some((name, _)) =
            self.networks.iter().find(|(_, n)| n.overlay.as_ref().is_some_and(|o| o.key == key && o.id == id))
        {
            let what = if encap == Encap::Vxlan { "VNI" } else { "key" };
            return Err(bad(&format!("{what} {id} is already network {name:?}'s")));
        }
        let (_, mtu) = underlay_link(underlay)?;
        let path_mtu = mtu.saturating_sub(encap.overhead());
        if path_mtu < 576 {
            return Err(bad(&format!("the underlay's MTU {mtu} leaves {path_mtu} bytes inside the tunnel: too small")));
        }
        Ok(Some(Plan { key, id, peers, path_mtu, mss_clamp: spec.mss_clamp.unwrap_or(true), udp_csum }))
    }

    /// Make the tunnel (if this is its first network) and one VTEP port per
    /// peer for network `net`, already in the dataplane.
    pub(super) fn overlay_up(&mut self, net: dataplane::stats::NetId, plan: &Plan, mtu: u32) -> Result<Overlay> {
        let tunnel = match self.tunnels.get_mut(&plan.key) {
            Some(t) => {
                t.users += 1;
                t.port
            }
            None => {
                let k = plan.key;
                let workers = self.dp.workers();
                let queues = match self.handed_tunnels.remove(&k) {
                    Some((h, fds)) => dataplane::port::tunnel_from_fds(k.encap, fds, workers, h.pool, h.udp_csum)
                        .map_err(|e| {
                            bad(&format!("the {} tunnel on {} handed over: {e}", k.encap.name(), k.underlay))
                        })?,
                    None => dataplane::port::open_tunnel(k.encap, k.underlay, k.port, workers, plan.udp_csum)
                        .map_err(|e| bad(&format!("open the {} tunnel on {}: {e}", k.encap.name(), k.underlay)))?,
                };
                let fds = dataplane::port::tunnel_fds(&queues);
                let port = self.port_ids.alloc("port")?;
                if let Err(e) = self.dp.add_port(port, PortRole::Tunnel, u32::from(u16::MAX), queues) {
                    self.port_ids.release(port);
                    return Err(e.into());
                }
                self.tunnels.insert(k, Tunnel { port, users: 1, udp_csum: plan.udp_csum, fds });
                port
            }
        };
        let mut ov = Overlay {
            key: plan.key,
            id: plan.id,
            peers: Vec::new(),
            tunnel,
            path_mtu: plan.path_mtu,
            mss_clamp: plan.mss_clamp,
            udp_csum: plan.udp_csum,
        };
        for &remote in &plan.peers {
            let res = self.port_ids.alloc("port").and_then(|p| {
                match self.dp.add_port(p, PortRole::Vtep { net, tunnel, remote }, mtu, Vec::new()) {
                    Ok(()) => Ok(p),
                    Err(e) => {
                        self.port_ids.release(p);
                        Err(e.into())
                    }
                }
            });
            match res {
                Ok(p) => ov.peers.push((remote, p)),
                Err(e) => {
                    self.overlay_down(&ov);
                    return Err(e);
                }
            }
        }
        Ok(ov)
    }

    /// The tunnels and duplicates of their sockets, for a new daemon
    /// taking this one over, sorted. The dataplane keeps its own.
    pub fn handover_tunnels(&self) -> std::io::Result<Vec<(HandedTunnel, Vec<std::os::fd::OwnedFd>)>> {
        use std::os::fd::FromRawFd;
        let mut keys: Vec<&TunnelKey> = self.tunnels.keys().collect();
        keys.sort_by_key(|k| (k.encap.name(), k.underlay, k.port));
        let mut out = Vec::new();
        for k in keys {
            let t = &self.tunnels[k];
            let mut fds = Vec::with_capacity(t.fds.len());
            for &fd in &t.fds {
                // SAFETY: F_DUPFD_CLOEXEC only makes a new descriptor for
                // the file `fd` refers to, a tunnel socket the dataplane
                // holds open while the tunnel is in `tunnels`.
                let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                if d < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: d is a descriptor just made, owned by nobody else.
                fds.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(d) });
            }
            let workers = self.dp.workers().max(1);
            let pool = match k.encap {
                Encap::Vxlan => (fds.len() / workers).saturating_sub(1),
                Encap::Gre => 0,
            };
            let h = HandedTunnel {
                encap: k.encap.name().to_string(),
                underlay: k.underlay,
                port: k.port,
                udp_csum: t.udp_csum,
                pool,
                sockets: fds.len(),
            };
            out.push((h, fds));
        }
        Ok(out)
    }

    /// Keep the tunnels a daemon taken over handed over, for the networks
    /// restored next to use; an unknown kind is dropped (closed).
    pub(super) fn take_handed_tunnels(&mut self, tunnels: Vec<(HandedTunnel, Vec<std::os::fd::OwnedFd>)>) {
        for (h, fds) in tunnels {
            if let Some(k) = h.key() {
                self.handed_tunnels.insert(k, (h, fds));
            }
        }
    }

    /// Remove a network's VTEPs and, with its last network, the tunnel.
    pub(super) fn overlay_down(&mut self, ov: &Overlay) {
        if let Ok(mut seen) = self.peer_failures.lock() {
            for (_, p) in &ov.peers {
                seen.remove(p);
            }
        }
        for &(_, p) in &ov.peers {
            let _ = self.dp.remove_port(p);
            self.port_ids.release(p);
        }
        if let Some(t) = self.tunnels.get_mut(&ov.key) {
            t.users -= 1;
            if t.users == 0 {
                let port = t.port;
                self.tunnels.remove(&ov.key);
                let _ = self.dp.remove_port(port);
                self.port_ids.release(port);
            }
        }
    }
}
