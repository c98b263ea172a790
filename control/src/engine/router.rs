//! What the engine tells the dataplane's router, rebuilt from its own
//! state whenever that changes: each network's gateway, policy and DNS
//! names ([`NetConfig`]), and the uplink, every container interface and
//! every published port ([`RouterConfig`]). The dataplane swaps the new
//! snapshot in between batches.

use std::sync::Arc;

use dataplane::dns::DnsTable;
use dataplane::router::{Endpoint, GatewayConfig, NetConfig, Published, RouterConfig, Subnet};

use super::{Engine, Result};

impl Engine {
    /// The router's view of network `name`.
    pub(super) fn net_config(&self, name: &str) -> Option<Arc<NetConfig>> {
        let n = self.networks.get(name)?;
        let s = n.ipam.subnet();
        let mut names: Vec<(&str, std::net::Ipv4Addr)> = self
            .containers
            .iter()
            .flat_map(|(cn, c)| c.endpoints.iter().filter(|e| e.network == name).map(move |e| (cn.as_str(), e.addr)))
            .collect();
        names.sort();
        // Names are the engine's container names, which the table accepts.
        let mut dns = DnsTable::new(names).unwrap_or_default();
        if n.mtu < 1260 {
            dns = dns.with_max_udp_payload((n.mtu.saturating_sub(28)).max(512) as u16);
        }
        Some(Arc::new(NetConfig {
            gateway: GatewayConfig { ip: n.ipam.gateway(), mac: n.gateway_mac, subnet: Subnet::new(s.addr, s.prefix) },
            mtu: n.mtu,
            icc: n.icc,
            masquerade: n.masquerade,
            internal: n.internal,
            dns: Arc::new(dns),
            overlay: n.overlay.as_ref().map(|o| o.config()),
        }))
    }

    /// Push network `name`'s router view to the dataplane.
    pub(super) fn sync_network(&self, name: &str) -> Result<()> {
        if let (Some(n), Some(cfg)) = (self.networks.get(name), self.net_config(name)) {
            self.dp.set_network(n.net, Some(cfg))?;
        }
        Ok(())
    }

    /// The router's view of everything but the networks themselves.
    pub(super) fn router_config(&self) -> RouterConfig {
        let mut cfg = RouterConfig {
            uplink: self.uplink.as_ref().map(|u| u.cfg),
            snat_ports: self.cfg.snat_ports.clone(),
            ..RouterConfig::default()
        };
        for (name, n) in &self.networks {
            let s = n.ipam.subnet();
            cfg.subnets.push((Subnet::new(s.addr, s.prefix), n.net));
            for c in self.containers.values() {
                for e in c.endpoints.iter().filter(|e| &e.network == name) {
                    cfg.endpoints.insert(
                        e.addr,
                        Endpoint {
                            net: n.net,
                            mac: e.mac,
                            port: e.port,
                            gateway_mac: n.gateway_mac,
                            mtu: n.mtu,
                            routable: !n.masquerade && !n.internal,
                        },
                    );
                }
            }
        }
        for c in self.containers.values() {
            let Some(ep) = c.endpoints.first() else { continue };
            for m in &c.published {
                cfg.publish(
                    m.proto,
                    m.host_port,
                    Published { ip: ep.addr, port: m.container_port, tag: u32::from(ep.port) },
                );
            }
        }
        cfg
    }

    /// Push the router's view to the dataplane.
    pub(super) fn sync_router(&self) -> Result<()> {
        self.dp.set_router(Arc::new(self.router_config()))?;
        Ok(())
    }
}
