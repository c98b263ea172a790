//! What reads see: a snapshot of the networks and containers, taken after
//! every change, together with the dataplane's live counters, MAC tables
//! and connection tables. The daemon serves `ls`, `inspect`, `fdb`,
//! `stats`, `conntrack` and `version` from the latest [`View`] on threads
//! of their own, so a read never waits for a change under way (a container
//! create is tens of milliseconds of namespace and netlink work), and sees
//! the state before that change or after it, never half of it.
//!
//! The engine keeps the published part ([`Published`]) up to date as it
//! changes things: one entry per network and per container, each behind an
//! `Arc`, so taking a view copies pointers and names, not the entries.

use std::collections::BTreeMap;
use std::sync::Arc;

use dataplane::bridge::Fdb;
use dataplane::port::PortId;
use dataplane::stats::NetId;
use dataplane::Dataplane;

use super::{to_value, Engine, EngineError, Result};
use crate::api::{ContainerInfo, NetworkEndpoint, NetworkInfo, Request, VersionInfo};

/// A network as reads see it.
#[derive(Clone)]
pub(super) struct NetView {
    /// Everything but `containers`, which is filled in when asked.
    pub(super) info: Arc<NetworkInfo>,
    pub(super) net: NetId,
    pub(super) fdb: Arc<Fdb>,
    /// What `overlay check` probes, for an overlay network.
    pub(super) probe: Option<Arc<super::probe::Target>>,
}

/// The engine's networks and containers as reads see them.
#[derive(Clone, Default)]
pub(super) struct Published {
    pub(super) networks: BTreeMap<String, NetView>,
    pub(super) containers: BTreeMap<String, Arc<ContainerInfo>>,
    /// Names of the overlay ports (`vtep:IP`, `tunnel:…`) and their
    /// networks.
    pub(super) overlay_ports: Arc<BTreeMap<PortId, (String, String)>>,
}

/// A snapshot for reads (see the module's documentation).
pub struct View {
    pub(super) dp: Arc<Dataplane>,
    pub(super) conntrack_max: usize,
    /// The uplink's port and its name (`uplink:IFACE`).
    pub(super) uplink: Option<(PortId, String)>,
    pub(super) state: Published,
}

impl View {
    pub(super) fn new(
        dp: Arc<Dataplane>,
        conntrack_max: usize,
        uplink: Option<(PortId, String)>,
        state: Published,
    ) -> View {
        View { dp, conntrack_max, uplink, state }
    }

    /// Serve a read; `None` if `req` is a change, which only the engine
    /// serves.
    pub fn read(&self, req: &Request) -> Option<Result<serde_json::Value>> {
        Some(match req {
            Request::Version {} => Ok(to_value(&VersionInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                workers: self.dp.workers(),
                addresses: super::host_addresses(),
            })),
            Request::NetworkLs {} => Ok(to_value(&self.network_ls())),
            Request::NetworkInspect { name } => self.network_inspect(name).map(|n| to_value(&n)),
            Request::ContainerLs {} => Ok(to_value(&self.container_ls())),
            Request::ContainerInspect { name } => self.container_inspect(name).map(|c| to_value(&*c)),
            Request::Fdb { network } => self.fdb(network).map(|f| to_value(&f)),
            Request::Stats {} => Ok(to_value(&self.stats())),
            Request::Conntrack {} => self.conntrack().map(|c| to_value(&c)),
            Request::OverlayCheck { network } => self.overlay_check(network).map(|c| to_value(&c)),
            Request::NetworkCreate(_)
            | Request::NetworkRm { .. }
            | Request::NetworkConnect { .. }
            | Request::NetworkDisconnect { .. }
            | Request::ContainerCreate(_)
            | Request::ContainerRm { .. }
            | Request::FdbAdd { .. }
            | Request::FdbDel { .. }
            | Request::Shutdown { .. }
            | Request::Takeover { .. } => return None,
        })
    }

    pub fn network_ls(&self) -> Vec<NetworkInfo> {
        self.state.networks.keys().filter_map(|n| self.network_inspect(n).ok()).collect()
    }

    pub fn network_inspect(&self, name: &str) -> Result<NetworkInfo> {
        let n = self.state.networks.get(name).ok_or_else(|| EngineError::no_network(name))?;
        let mut info = NetworkInfo::clone(&n.info);
        // Containers come sorted by name, as the map is.
        info.containers = self
            .state
            .containers
            .values()
            .flat_map(|c| {
                c.networks.iter().filter(|e| e.network == name).map(|e| NetworkEndpoint {
                    container: c.name.clone(),
                    interface: e.interface.clone(),
                    mac_address: e.mac_address.clone(),
                    ipv4_address: e.ipv4_address.clone(),
                    port: e.port,
                })
            })
            .collect();
        Ok(info)
    }

    pub fn container_ls(&self) -> Vec<ContainerInfo> {
        self.state.containers.values().map(|c| ContainerInfo::clone(c)).collect()
    }

    pub fn container_inspect(&self, name: &str) -> Result<Arc<ContainerInfo>> {
        self.state.containers.get(name).cloned().ok_or_else(|| EngineError::no_container(name))
    }

    /// Probe every peer of overlay network `name` (a read: it takes up
    /// to a few seconds, and changes nothing).
    pub fn overlay_check(&self, name: &str) -> Result<super::probe::CheckReport> {
        let n = self.state.networks.get(name).ok_or_else(|| EngineError::no_network(name))?;
        let t = n
            .probe
            .as_deref()
            .ok_or_else(|| EngineError::BadOverlay(format!("network {:?} is not an overlay", crate::api::cut(name))))?;
        let peers = super::probe::check(t).map_err(|e| EngineError::BadOverlay(format!("probe sockets: {e}")))?;
        Ok(super::probe::CheckReport { network: name.into(), driver: t.encap.name().into(), peers })
    }
}

impl Engine {
    /// Publish network `name` as it is now (or its removal).
    pub(super) fn publish_network(&mut self, name: &str) {
        let Some(n) = self.networks.get(name) else {
            self.published.networks.remove(name);
            self.publish_overlay_ports();
            return;
        };
        let info = NetworkInfo {
            name: name.into(),
            id: n.id.clone(),
            driver: n.overlay.as_ref().map_or("tapnet-bridge", |o| o.key.encap.name()).into(),
            subnet: n.ipam.subnet().to_string(),
            gateway: n.ipam.gateway().to_string(),
            mtu: n.mtu,
            fdb_max: n.fdb.capacity(),
            fdb_ageing: n.fdb.ageing_ms() / 1000,
            masquerade: n.masquerade,
            internal: n.internal,
            icc: n.icc,
            max_macs_per_port: n.fdb.port_limit(),
            port_security: n.port_security,
            overlay: n.overlay.as_ref().map(|o| crate::api::OverlayInfo {
                id: o.id,
                underlay: o.key.underlay.to_string(),
                peers: o.peers.iter().map(|(a, _)| a.to_string()).collect(),
                port: o.key.port,
                ip_range: n.ipam.range().map(|r| r.to_string()),
                path_mtu: o.path_mtu,
                mss_clamp: o.mss_clamp,
                udp_csum: o.udp_csum,
            }),
            containers: Vec::new(),
        };
        let probe = self.probe_target(name).ok().map(Arc::new);
        let v = NetView { info: Arc::new(info), net: n.net, fdb: n.fdb.clone(), probe };
        self.published.networks.insert(name.to_string(), v);
        self.publish_overlay_ports();
    }

    /// Publish the names of the overlay ports (they change only when an
    /// overlay network comes or goes).
    fn publish_overlay_ports(&mut self) {
        let mut m = BTreeMap::new();
        for (name, n) in &self.networks {
            for &(remote, p) in n.overlay.iter().flat_map(|o| &o.peers) {
                m.insert(p, (format!("vtep:{remote}"), name.clone()));
            }
        }
        for (k, t) in &self.tunnels {
            let what = match k.encap {
                dataplane::overlay::tunnel::Encap::Vxlan => format!("tunnel:vxlan:{}:{}", k.underlay, k.port),
                dataplane::overlay::tunnel::Encap::Gre => format!("tunnel:gre:{}", k.underlay),
            };
            m.insert(t.port, (what, String::new()));
        }
        self.published.overlay_ports = Arc::new(m);
    }

    /// Publish container `name` as it is now (or its removal).
    pub(super) fn publish_container(&mut self, name: &str) {
        match self.container_info(name) {
            Ok(c) => {
                self.published.containers.insert(name.to_string(), Arc::new(c));
            }
            Err(_) => {
                self.published.containers.remove(name);
            }
        }
    }

    pub fn network_ls(&self) -> Vec<NetworkInfo> {
        self.view().network_ls()
    }

    pub fn network_inspect(&self, name: &str) -> Result<NetworkInfo> {
        self.view().network_inspect(name)
    }

    pub fn container_ls(&self) -> Vec<ContainerInfo> {
        self.view().container_ls()
    }

    pub fn container_inspect(&self, name: &str) -> Result<ContainerInfo> {
        self.view().container_inspect(name).map(|c| ContainerInfo::clone(&c))
    }
}
