//! Networks: one learning bridge each, with its subnet, gateway, MTU and
//! MAC table.

use std::sync::Arc;

use dataplane::bridge::Fdb;
use dataplane::stats::NetId;

use super::ids::check_name;
use super::{Engine, EngineError, Result};
use crate::api::{NetworkEndpoint, NetworkInfo};
use crate::ipam::{parse_addr, Ipam, Subnet};

pub(super) struct Network {
    pub(super) id: String,
    pub(super) net: NetId,
    pub(super) ipam: Ipam,
    pub(super) mtu: u32,
    pub(super) fdb: Arc<Fdb>,
}

impl Engine {
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
}
