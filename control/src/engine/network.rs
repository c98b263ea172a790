//! Networks: one learning bridge each, with its subnet, MTU and MAC table,
//! and a gateway in the dataplane (its address, and a MAC pinned in the
//! MAC table) with the network's policy: masquerade, internal, icc.

use std::sync::Arc;

use dataplane::bridge::Fdb;
use dataplane::port::GATEWAY_PORT;
use dataplane::stats::NetId;
use dataplane::wire::MacAddr;

use super::ids::check_name;
use super::{name_list, Engine, EngineError, Result};
use crate::api::{NetworkInfo, NetworkSpec};
use crate::ipam::{mac_for, parse_addr, Ipam, Subnet};

pub(super) struct Network {
    pub(super) id: String,
    pub(super) net: NetId,
    pub(super) ipam: Ipam,
    pub(super) mtu: u32,
    pub(super) fdb: Arc<Fdb>,
    pub(super) gateway_mac: MacAddr,
    pub(super) masquerade: bool,
    pub(super) internal: bool,
    pub(super) icc: bool,
    /// Container ports pinned to their MAC and IPv4 address.
    pub(super) port_security: bool,
    /// For a `vxlan` or `gre` network: its tunnel and VTEPs.
    pub(super) overlay: Option<super::overlay::Overlay>,
    /// What it was made from (saved for the next daemon).
    pub(super) spec: NetworkSpec,
    /// Static MAC entries `fdb add` made: (MAC, VTEP).
    pub(super) statics: Vec<(MacAddr, std::net::Ipv4Addr)>,
}

impl Engine {
    pub fn network_create(&mut self, spec: &NetworkSpec) -> Result<NetworkInfo> {
        let (name, subnet, gateway, mtu) =
            (spec.name.as_str(), spec.subnet.as_str(), spec.gateway.as_deref(), spec.mtu);
        let (fdb_max, fdb_ageing) = (spec.fdb_max, spec.fdb_ageing);
        check_name("network", name, 64)?;
        if matches!(name, "none" | "host") || name.starts_with("container:") {
            return Err(EngineError::BadName { what: "network", name: name.into(), why: "reserved for network modes" });
        }
        if self.networks.contains_key(name) {
            return Err(EngineError::NetworkExists(name.into()));
        }
        let subnet: Subnet = subnet.parse()?;
        crate::ipam::check_usable(&subnet)?;
        if let Some((other, n)) = self.networks.iter().find(|(_, n)| n.ipam.subnet().overlaps(&subnet)) {
            return Err(EngineError::Overlap(subnet, other.clone(), n.ipam.subnet()));
        }
        let gateway = gateway.map(parse_addr).transpose()?;
        let range = spec.ip_range.as_deref().map(str::parse::<Subnet>).transpose()?;
        let ipam = Ipam::with_range(subnet, gateway, range)?;
        let plan = self.overlay_plan(spec)?;
        // An overlay's containers fit the underlay (VXLAN: 50 bytes less).
        let mtu = mtu.unwrap_or(plan.as_ref().map_or(1500, |p| p.path_mtu));
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
        let max_macs = match spec.max_macs_per_port {
            Some(m) if m as usize > fdb_max => return Err(EngineError::BadMaxMacs(m, fdb_max)),
            Some(m) => m,
            None => self.cfg.max_macs_per_port.min(u32::try_from(fdb_max).unwrap_or(u32::MAX)),
        };
        let net = self.net_ids.alloc("network")?;
        let fdb = Arc::new(Fdb::new(fdb_max, ageing * 1000));
        fdb.set_port_limit(max_macs);
        // The gateway's MAC: Docker's scheme on the gateway address, which
        // no container is given. Pinned, so no container can take it over.
        let gateway_mac = mac_for(ipam.gateway());
        fdb.insert_static(gateway_mac, GATEWAY_PORT);
        let id = self.new_id(name);
        self.networks.insert(
            name.to_string(),
            Network {
                id,
                net,
                ipam,
                mtu,
                fdb: fdb.clone(),
                gateway_mac,
                masquerade: spec.masquerade.unwrap_or(true),
                internal: spec.internal,
                icc: spec.icc.unwrap_or(true),
                port_security: spec.port_security,
                overlay: None,
                spec: spec.clone(),
                statics: Vec::new(),
            },
        );
        let res = self.dp.add_network(net, fdb, self.net_config(name)).map_err(EngineError::from).and_then(|()| {
            if let Some(plan) = &plan {
                let ov = self.overlay_up(net, plan, mtu)?;
                self.networks.get_mut(name).expect("just inserted").overlay = Some(ov);
                self.sync_network(name)?;
            }
            self.sync_router()
        });
        if let Err(e) = res {
            let n = self.networks.remove(name).expect("just inserted");
            if let Some(ov) = &n.overlay {
                self.overlay_down(ov);
            }
            let _ = self.dp.remove_network(n.net);
            self.net_ids.release(n.net);
            return Err(e);
        }
        self.publish_network(name);
        if let Ok(t) = self.probe_target(name) {
            // Check the overlay once in the background and log what it
            // found (the peers may well not be up yet).
            let net = name.to_string();
            let _ = std::thread::Builder::new().name("tapnet-probe".into()).spawn(move || {
                if let Ok(peers) = super::probe::check(&t) {
                    for p in peers {
                        eprintln!("tapnet: overlay {net}: peer {}: {}", p.peer, p.verdict);
                    }
                }
            });
        }
        self.network_inspect(name)
    }

    pub fn network_rm(&mut self, name: &str) -> Result<()> {
        if !self.networks.contains_key(name) {
            return Err(EngineError::no_network(name));
        }
        let users: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, c)| c.endpoints.iter().any(|e| e.network == name))
            .map(|(n, _)| n.clone())
            .collect();
        if !users.is_empty() {
            return Err(EngineError::NetworkInUse(name.into(), name_list(users)));
        }
        let n = self.networks.remove(name).expect("checked above");
        if let Some(ov) = &n.overlay {
            self.overlay_down(ov);
        }
        self.publish_network(name);
        self.dp.remove_network(n.net)?;
        self.net_ids.release(n.net);
        self.sync_router()
    }
}
