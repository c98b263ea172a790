//! What the engine saves for the next daemon (`state.json`, written by the
//! daemon) and how a new engine adopts it: [`Saved`] describes every
//! network (as it was asked for, plus its id and static MAC entries) and
//! every container (mode, endpoints with their interface, address, MAC
//! and port, published ports). [`Engine::restore`] rebuilds the engine
//! on it: the networks are made again in the dataplane, each endpoint's
//! persistent TAP gets new queues, by name, inside its namespace. MAC
//! tables are relearned; connection tracking starts empty.
//!
//! What cannot be adopted is dropped with a log line: a container whose
//! namespace has gone, an endpoint whose TAP has gone.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{FromRawFd, OwnedFd};

use dataplane::port::tap::TapQueue;
use dataplane::port::PortQueue;
use dataplane::router::L4;
use dataplane::wire::MacAddr;
use dataplane::PortRole;
use serde::{Deserialize, Serialize};

use super::container::{Container, Mode};
use super::endpoint::{set_persist, Endpoint};
use super::publish::Mapping;
use super::{Engine, EngineConfig, EngineError, Result};
use crate::api::NetworkSpec;
use crate::sandbox;

/// The version of the state file's format this daemon reads and writes.
pub const STATE_VERSION: u32 = 1;

/// Everything a new daemon needs to adopt what this one made.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    pub version: u32,
    pub networks: Vec<SavedNetwork>,
    pub containers: Vec<SavedContainer>,
    /// The change under way, if a daemon died during one (kept in a file
    /// of its own, `intent.json`; never in `state.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SavedNetwork {
    pub spec: NetworkSpec,
    pub id: String,
    /// Static MAC entries `fdb add` made: (MAC, VTEP).
    #[serde(default)]
    pub fdb: Vec<(String, Ipv4Addr)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SavedContainer {
    pub name: String,
    pub id: String,
    /// `NET`, `none`, `host` or `container:OTHER`.
    pub mode: String,
    pub endpoints: Vec<SavedEndpoint>,
    #[serde(default)]
    pub published: Vec<SavedPort>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SavedEndpoint {
    pub network: String,
    pub ifname: String,
    pub mac: String,
    pub addr: Ipv4Addr,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SavedPort {
    /// `tcp` or `udp`.
    pub proto: String,
    pub host_port: u16,
    pub container_port: u16,
}

/// A change that makes or removes something outside the daemon's memory
/// (a namespace, a TAP), recorded before it starts and cleared (in the
/// same write as its result) when it ends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Intent {
    /// May have made namespace `name`, its TAP and files.
    ContainerCreate { name: String },
    /// May have removed part of container `name`.
    ContainerRm { name: String },
    /// May have made a TAP in container `container`'s namespace.
    NetworkConnect { container: String, network: String },
}

/// TAP queue descriptors a daemon being taken over handed to this one, by
/// (container, interface name): one per worker, queue `i` for worker `i`.
pub type HandedQueues = HashMap<(String, String), Vec<OwnedFd>>;

impl Saved {
    /// Published ports, which only a daemon with an uplink can restore.
    pub fn has_published_ports(&self) -> bool {
        self.containers.iter().any(|c| !c.published.is_empty())
    }
}

fn proto_of(s: &str) -> Option<L4> {
    match s {
        "tcp" => Some(L4::Tcp),
        "udp" => Some(L4::Udp),
        _ => None,
    }
}

impl Engine {
    /// What a new daemon needs to adopt this engine's networks and
    /// containers (sorted by name, so the same engine saves the same
    /// bytes).
    pub fn saved(&self) -> Saved {
        let mut networks: Vec<SavedNetwork> = self
            .networks
            .values()
            .map(|n| SavedNetwork {
                spec: n.spec.clone(),
                id: n.id.clone(),
                fdb: n.statics.iter().map(|(m, v)| (m.to_string(), *v)).collect(),
            })
            .collect();
        networks.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        let mut containers: Vec<SavedContainer> = self
            .containers
            .iter()
            .map(|(name, c)| SavedContainer {
                name: name.clone(),
                id: c.id.clone(),
                mode: c.mode.text(),
                endpoints: c
                    .endpoints
                    .iter()
                    .map(|e| SavedEndpoint {
                        network: e.network.clone(),
                        ifname: e.ifname.clone(),
                        mac: e.mac.to_string(),
                        addr: e.addr,
                        port: e.port,
                    })
                    .collect(),
                published: c
                    .published
                    .iter()
                    .map(|m| SavedPort {
                        proto: super::publish::proto_name(m.proto).into(),
                        host_port: m.host_port,
                        container_port: m.container_port,
                    })
                    .collect(),
            })
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Saved { version: STATE_VERSION, networks, containers, intent: None }
    }

    /// Why this engine cannot be handed to a new daemon, if it cannot
    /// (nothing today: TAP queues, the uplink's and the tunnels' sockets
    /// are all passed on).
    pub fn takeover_blocker(&self) -> Option<&'static str> {
        None
    }

    /// Duplicates of every endpoint's queue descriptors, for a new daemon
    /// taking this one over: (container, interface name, queues), in the
    /// order of [`Engine::saved`]. The dataplane keeps its own.
    pub fn handover_queues(&self) -> std::io::Result<Vec<(String, String, Vec<OwnedFd>)>> {
        let mut names: Vec<&String> = self.containers.keys().collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            for ep in &self.containers[name].endpoints {
                let mut fds = Vec::with_capacity(ep.queue_fds.len());
                for &fd in &ep.queue_fds {
                    // SAFETY: F_DUPFD_CLOEXEC only makes a new descriptor
                    // for the file `fd` refers to, a TAP queue the
                    // dataplane holds open while this engine lives.
                    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                    if d < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // SAFETY: d is a descriptor just made, owned by nobody else.
                    fds.push(unsafe { OwnedFd::from_raw_fd(d) });
                }
                out.push((name.clone(), ep.ifname.clone(), fds));
            }
        }
        Ok(out)
    }

    /// The MACs learned on every network, for a new daemon taking this one
    /// over: (network, [(MAC, port)]), sorted.
    pub fn learned_macs(&self) -> Vec<(String, Vec<(String, u16)>)> {
        let now = self.dp.now_ms();
        let mut v: Vec<(String, Vec<(String, u16)>)> = self
            .networks
            .iter()
            .map(|(name, n)| {
                let learned = n.fdb.entries(now).into_iter().filter(|e| !e.is_static);
                (name.clone(), learned.map(|e| (e.mac.to_string(), e.port)).collect())
            })
            .collect();
        v.sort();
        v
    }

    /// Stop (true) or resume the workers' reading: while a takeover
    /// snapshots the tables and until the new daemon reads.
    pub fn pause(&self, paused: bool) -> Result<()> {
        Ok(self.dp.pause(paused)?)
    }

    /// Every worker's tracked connections as words
    /// ([`dataplane::nat::Exported::to_words`]), worker order, for a new
    /// daemon taking this one over (pause first).
    pub fn export_conntrack(&self) -> Result<Vec<Vec<Vec<u64>>>> {
        let tables = self.dp.conntrack_export()?;
        Ok(tables.iter().map(|t| t.iter().map(|x| x.to_words().to_vec()).collect()).collect())
    }

    /// The uplink's neighbours (ARP cache), for a new daemon taking this
    /// one over: (IP, MAC), sorted. An ARP reply that arrives during the
    /// takeover is read by one of the two daemons only, so the new one
    /// would otherwise wait for its next request (a second).
    pub fn learned_neighbours(&self) -> Vec<(Ipv4Addr, String)> {
        let now = self.dp.now_ms();
        self.dp.arp().entries(now).into_iter().map(|(ip, mac, _)| (ip, mac.to_string())).collect()
    }

    /// Take the neighbours a daemon taken over knew (their age starts
    /// again). Returns how many were taken.
    pub fn import_neighbours(&self, neighbours: &[(Ipv4Addr, String)]) -> usize {
        if self.uplink.is_none() {
            return 0;
        }
        let now = self.dp.now_ms();
        neighbours
            .iter()
            .filter_map(|(ip, mac)| Some((*ip, mac.parse::<MacAddr>().ok()?)))
            .filter(|&(ip, mac)| self.dp.arp().update(ip, mac, now, true))
            .count()
    }

    /// Learn the MACs a daemon taken over had learned (their age starts
    /// again); an entry for a port that is not one of the network's
    /// container ports here is skipped. Returns how many were learned.
    pub fn import_learned(&self, learned: &[(String, Vec<(String, u16)>)]) -> usize {
        let now = self.dp.now_ms();
        let mut n = 0;
        for (net, entries) in learned {
            let Some(network) = self.networks.get(net) else { continue };
            let ports: Vec<u16> = self
                .containers
                .values()
                .flat_map(|c| &c.endpoints)
                .filter(|e| &e.network == net)
                .map(|e| e.port)
                .collect();
            for (mac, port) in entries {
                let Ok(mac) = mac.parse::<MacAddr>() else { continue };
                if ports.contains(port) {
                    network.fdb.learn(mac, *port, now);
                    n += 1;
                }
            }
        }
        n
    }

    /// Start an engine (dataplane, uplink) and adopt the networks and
    /// containers of `saved`. Fails, having only made networks in its own
    /// dataplane (which go with it), if a network cannot be made again.
    pub fn restore(cfg: EngineConfig, saved: &Saved) -> Result<Engine> {
        Engine::restore_from(cfg, saved, None, None, Vec::new(), Vec::new())
    }

    /// [`Engine::restore`] for a live takeover: the endpoints' queues are
    /// the ones the old daemon handed over (still read by it until it
    /// exits: each frame goes to one of the two), not new ones. An
    /// endpoint without handed queues is dropped, with a log line.
    /// The uplink, if `uplink` is given, is the old daemon's too (its
    /// sockets, link and MAC), in place of any configured one.
    /// The connections it tracked (`conntrack`, from
    /// [`Engine::export_conntrack`]) are tracked here before any queue is
    /// read.
    pub fn restore_handed(
        cfg: EngineConfig,
        saved: &Saved,
        queues: HandedQueues,
        uplink: Option<(super::HandedUplink, Vec<OwnedFd>)>,
        tunnels: Vec<(super::HandedTunnel, Vec<OwnedFd>)>,
        conntrack: &[Vec<Vec<u64>>],
    ) -> Result<Engine> {
        let tables = conntrack
            .iter()
            .map(|t| t.iter().filter_map(|w| dataplane::nat::Exported::from_words(w)).collect())
            .collect();
        Engine::restore_from(cfg, saved, Some(queues), uplink, tunnels, tables)
    }

    fn restore_from(
        cfg: EngineConfig,
        saved: &Saved,
        mut handed: Option<HandedQueues>,
        uplink: Option<(super::HandedUplink, Vec<OwnedFd>)>,
        tunnels: Vec<(super::HandedTunnel, Vec<OwnedFd>)>,
        conntrack: Vec<Vec<dataplane::nat::Exported>>,
    ) -> Result<Engine> {
        let takeover = handed.is_some();
        let mut e = Engine::new_on(cfg, uplink, conntrack, takeover)?;
        e.take_handed_tunnels(tunnels);
        // The endpoints keep their port ids: take them before the
        // overlays' VTEPs are given theirs.
        for ep in saved.containers.iter().flat_map(|c| &c.endpoints) {
            e.port_ids.take(ep.port);
        }
        for n in &saved.networks {
            e.network_create(&n.spec)
                .map_err(|err| EngineError::Restore(format!("network {}: {}", crate::api::cut(&n.spec.name), err)))?;
            if let Some(net) = e.networks.get_mut(&n.spec.name) {
                net.id = n.id.clone();
            }
            for (mac, vtep) in &n.fdb {
                if let Err(err) = e.fdb_add(&n.spec.name, mac, &vtep.to_string()) {
                    eprintln!("tapnet: network {}: static MAC {mac} not restored: {err}", n.spec.name);
                }
            }
            e.publish_network(&n.spec.name);
        }
        // A tunnel handed over that no network took is closed.
        e.handed_tunnels.clear();
        // Namespace owners first, then the containers that share them.
        let (owners, sharers): (Vec<&SavedContainer>, Vec<&SavedContainer>) =
            saved.containers.iter().partition(|c| !c.mode.starts_with("container:"));
        for c in owners.into_iter().chain(sharers) {
            e.adopt(c, &mut handed);
        }
        // The port ids taken above that no endpoint came back on.
        for ep in saved.containers.iter().flat_map(|c| &c.endpoints) {
            let used = e.containers.values().flat_map(|c| &c.endpoints).any(|x| x.port == ep.port);
            if !used {
                e.port_ids.release(ep.port);
            }
        }
        // From here on the engine holds the containers: an error must not
        // drop it (which would remove them), so errors are only logged.
        let names: Vec<String> = e.networks.keys().cloned().collect();
        for n in &names {
            if let Err(err) = e.sync_network(n) {
                eprintln!("tapnet: network {n}: {err}");
            }
            e.publish_network(n);
        }
        if let Err(err) = e.sync_router() {
            eprintln!("tapnet: router: {err}");
        }
        if takeover {
            if let Err(err) = e.dp.pause(false) {
                eprintln!("tapnet: workers: {err}");
            }
        }
        Ok(e)
    }

    /// Adopt one saved container (or drop it, with a log line).
    fn adopt(&mut self, c: &SavedContainer, handed: &mut Option<HandedQueues>) {
        let name = c.name.as_str();
        let mode = Mode::parse(&c.mode);
        let (sandbox, owns) = match &mode {
            Mode::Host => (std::path::PathBuf::from(format!("/proc/{}/ns/net", std::process::id())), false),
            Mode::Container(other) => match self.containers.get(other) {
                Some(o) => (o.sandbox.clone(), false),
                None => {
                    eprintln!(
                        "tapnet: container {name}: container {other}, whose namespace it shares, is gone; dropped"
                    );
                    return;
                }
            },
            Mode::None | Mode::Bridge(_) => {
                if !crate::netns::exists(name) {
                    eprintln!("tapnet: container {name}: its namespace has gone while no daemon ran; dropped");
                    crate::hosts::remove(name);
                    return;
                }
                (crate::netns::path(name), true)
            }
        };
        let published = if self.uplink.is_some() {
            c.published
                .iter()
                .filter_map(|p| {
                    Some(Mapping {
                        proto: proto_of(&p.proto)?,
                        host_port: p.host_port,
                        container_port: p.container_port,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        self.containers.insert(
            name.to_string(),
            Container {
                id: c.id.clone(),
                mode,
                sandbox: sandbox.clone(),
                owns_sandbox: owns,
                endpoints: Vec::new(),
                published,
            },
        );
        let mut lost = false;
        for s in &c.endpoints {
            let queues = handed.as_mut().map(|h| h.remove(&(name.to_string(), s.ifname.clone())).unwrap_or_default());
            match self.adopt_endpoint(&sandbox, s, queues) {
                Ok(ep) => self.containers.get_mut(name).expect("just inserted").endpoints.push(ep),
                Err(err) => {
                    lost = true;
                    eprintln!("tapnet: container {name}: endpoint {} on {} dropped: {err}", s.ifname, s.network);
                }
            }
        }
        if lost {
            self.write_files(name);
        }
        self.publish_container(name);
    }

    /// Re-attach queues to an endpoint's TAP (or take the `handed` ones)
    /// and give them to the dataplane.
    fn adopt_endpoint(
        &mut self,
        sandbox: &std::path::Path,
        s: &SavedEndpoint,
        handed: Option<Vec<OwnedFd>>,
    ) -> Result<Endpoint> {
        let mac: MacAddr = s.mac.parse()?;
        let n = self.networks.get_mut(&s.network).ok_or_else(|| EngineError::no_network(&s.network))?;
        let (net_id, mtu) = (n.net, n.mtu);
        // A --port-security network pins the port again, as at its making.
        let pin = n.port_security.then_some(dataplane::bridge::Pin { mac, ip: s.addr });
        n.ipam.reserve(s.addr)?;
        let undo = |e: &mut Engine| {
            if let Some(n) = e.networks.get_mut(&s.network) {
                n.ipam.release(s.addr);
            }
        };
        let workers = self.dp.workers();
        let opened = match handed {
            Some(fds) if fds.len() == workers => Ok(Some(fds.into_iter().map(TapQueue::from_fd).collect())),
            Some(fds) => {
                undo(self);
                return Err(EngineError::Restore(format!("{} queues handed over for {workers} workers", fds.len())));
            }
            None => sandbox::reopen(sandbox, &s.ifname, workers),
        };
        let queues = match opened {
            Ok(Some(q)) => q,
            Ok(None) => {
                undo(self);
                return Err(EngineError::Restore("its TAP has gone".into()));
            }
            Err(err) => {
                undo(self);
                return Err(err.into());
            }
        };
        use std::os::fd::AsRawFd;
        let fds: Vec<std::os::fd::RawFd> = queues.iter().map(|q| q.as_raw_fd()).collect();
        let qs = queues.into_iter().map(PortQueue::Tap).collect();
        if let Err(err) = self.dp.add_port_pinned(s.port, PortRole::Access(net_id), mtu, pin, qs) {
            undo(self);
            return Err(err.into());
        }
        // Still persistent; said again in case a crash came between the
        // TAP's making and this.
        set_persist(&fds, true);
        Ok(Endpoint {
            network: s.network.clone(),
            ifname: s.ifname.clone(),
            mac,
            addr: s.addr,
            port: s.port,
            queue_fds: fds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_format_round_trips_and_refuses_what_it_does_not_know() {
        let s = Saved {
            version: STATE_VERSION,
            networks: vec![SavedNetwork {
                spec: NetworkSpec { name: "n1".into(), subnet: "10.1.0.0/24".into(), ..Default::default() },
                id: "abc".into(),
                fdb: vec![("02:00:00:00:00:01".into(), Ipv4Addr::new(192, 0, 2, 1))],
            }],
            containers: vec![SavedContainer {
                name: "a".into(),
                id: "def".into(),
                mode: "n1".into(),
                endpoints: vec![SavedEndpoint {
                    network: "n1".into(),
                    ifname: "eth0".into(),
                    mac: "02:42:0a:01:00:02".into(),
                    addr: Ipv4Addr::new(10, 1, 0, 2),
                    port: 7,
                }],
                published: vec![SavedPort { proto: "tcp".into(), host_port: 8080, container_port: 80 }],
            }],
            intent: Some(Intent::ContainerCreate { name: "b".into() }),
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Saved>(&text).unwrap(), s);
        assert!(s.has_published_ports());
        assert!(serde_json::from_str::<Saved>(r#"{"version":1,"networks":[],"containers":[],"bogus":1}"#).is_err());
        assert!(serde_json::from_str::<Saved>("{").is_err());
    }
}
