//! What the engine shows: a network's MAC table and the dataplane's
//! counters, by port, drop reason, network and worker.

use std::collections::BTreeMap;

use dataplane::port::PortId;
use hashbrown::HashMap;

use super::{Engine, EngineError, Result};
use crate::api::{ConntrackInfo, ConntrackRow, FdbInfo, FdbRow, PortStats, StatsInfo, WorkerInfo};

impl Engine {
    /// Every port's name (`container:interface`, `uplink:IFACE`) and
    /// network.
    fn port_names(&self) -> HashMap<PortId, (String, String)> {
        let mut m: HashMap<PortId, (String, String)> = self
            .containers
            .iter()
            .flat_map(|(cn, c)| {
                c.endpoints.iter().map(move |e| (e.port, (format!("{cn}:{}", e.ifname), e.network.clone())))
            })
            .collect();
        if let Some(u) = &self.uplink {
            m.insert(u.cfg.port, (format!("uplink:{}", u.link), String::new()));
        }
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
        m
    }

    /// `tapnet fdb add NET MAC --vtep IP`: pin `mac` to a remote VTEP.
    pub fn fdb_add(&mut self, net: &str, mac: &str, vtep: &str) -> Result<FdbInfo> {
        let n = self.networks.get(net).ok_or_else(|| EngineError::NoNetwork(net.into()))?;
        let mac: dataplane::wire::MacAddr = mac.parse()?;
        if !mac.is_unicast() {
            return Err(EngineError::MacNotUnicast(mac));
        }
        let Some(ov) = &n.overlay else {
            return Err(EngineError::BadOverlay(format!("network {net:?} is not an overlay: it has no VTEPs")));
        };
        let remote: std::net::Ipv4Addr =
            vtep.parse().map_err(|_| EngineError::BadOverlay(format!("--vtep {vtep:?} is not an IPv4 address")))?;
        let Some(&(_, port)) = ov.peers.iter().find(|(a, _)| *a == remote) else {
            return Err(EngineError::BadOverlay(format!("{remote} is not a peer of network {net:?}")));
        };
        if mac == n.gateway_mac {
            return Err(EngineError::MacIsGateway(mac, net.into()));
        }
        n.fdb.insert_static(mac, port);
        self.fdb(net)
    }

    /// `tapnet fdb del NET MAC`: remove a static entry `fdb add` made.
    pub fn fdb_del(&mut self, net: &str, mac: &str) -> Result<FdbInfo> {
        let n = self.networks.get(net).ok_or_else(|| EngineError::NoNetwork(net.into()))?;
        let mac: dataplane::wire::MacAddr = mac.parse()?;
        if mac == n.gateway_mac || !n.fdb.remove_static(mac) {
            return Err(EngineError::BadOverlay(format!("{mac} has no static entry that fdb add made on {net:?}")));
        }
        self.fdb(net)
    }

    pub fn fdb(&self, net: &str) -> Result<FdbInfo> {
        let n = self.networks.get(net).ok_or_else(|| EngineError::NoNetwork(net.into()))?;
        let names = self.port_names();
        let now = self.dp.now_ms();
        let entries = n
            .fdb
            .entries(now)
            .into_iter()
            .map(|e| FdbRow {
                mac: e.mac.to_string(),
                port: e.port,
                port_name: if e.port == dataplane::port::GATEWAY_PORT {
                    "gateway".to_string()
                } else {
                    names.get(&e.port).map(|p| p.0.clone()).unwrap_or_else(|| format!("port{}", e.port))
                },
                age_s: e.age_ms as f64 / 1000.0,
                is_static: e.is_static,
            })
            .collect();
        let events = self.dp.stats().bridge(n.net).into_iter().map(|(e, v)| (e.name().to_string(), v)).collect();
        Ok(FdbInfo { network: net.into(), entries, max: n.fdb.capacity(), ageing: n.fdb.ageing_ms() / 1000, events })
    }

    pub fn stats(&self) -> StatsInfo {
        let st = self.dp.stats();
        let mut ports: Vec<PortStats> = self
            .port_names()
            .into_iter()
            .map(|(port, (name, network))| {
                let t = st.port(port);
                PortStats {
                    port,
                    name,
                    network,
                    rx_packets: t.rx_packets,
                    rx_bytes: t.rx_bytes,
                    tx_packets: t.tx_packets,
                    tx_bytes: t.tx_bytes,
                    rx_dropped: t.rx_dropped,
                    tx_dropped: t.tx_dropped,
                }
            })
            .collect();
        ports.sort_by(|a, b| (&a.network, &a.name).cmp(&(&b.network, &b.name)));
        let drops = st.drops().into_iter().map(|(r, v)| (r.name().to_string(), v)).collect();
        let networks: BTreeMap<String, BTreeMap<String, u64>> = self
            .networks
            .iter()
            .map(|(name, n)| {
                (name.clone(), st.bridge(n.net).into_iter().map(|(e, v)| (e.name().to_string(), v)).collect())
            })
            .collect();
        let per_worker = st
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerInfo { worker: i, wakeups: w.wakeups.get(), frames: w.frames.get() })
            .collect();
        let router = st.router().into_iter().map(|(e, v)| (e.name().to_string(), v)).collect();
        StatsInfo { workers: self.dp.workers(), per_worker, ports, drops, networks, router }
    }

    /// The connection table: every tracked flow, over all workers.
    pub fn conntrack(&self) -> Result<ConntrackInfo> {
        let names = self.port_names();
        let mut entries: Vec<ConntrackRow> = self
            .dp
            .conntrack()?
            .into_iter()
            .map(|f| {
                let pair = |k: &dataplane::nat::FlowKey| format!("{}:{} -> {}:{}", k.src, k.sport, k.dst, k.dport);
                let container = u16::try_from(f.tag)
                    .ok()
                    .and_then(|p| names.get(&p))
                    .map(|(n, _)| n.split(':').next().unwrap_or(n).to_string())
                    .unwrap_or_default();
                ConntrackRow {
                    protocol: f.original.proto.name().to_string(),
                    kind: f.kind.name().to_string(),
                    state: f.state.clone(),
                    original: pair(&f.original),
                    translated: pair(&f.translated),
                    reply: pair(&f.reply),
                    replied: f.replied,
                    timeout_s: f.timeout_ms as f64 / 1000.0,
                    container,
                    packets: f.packets,
                    bytes: f.bytes,
                    worker: f.worker,
                }
            })
            .collect();
        entries.sort_by(|a, b| (&a.protocol, &a.original).cmp(&(&b.protocol, &b.original)));
        Ok(ConntrackInfo { entries, max: self.cfg.conntrack_max })
    }
}
