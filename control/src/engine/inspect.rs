//! What a [`View`] shows of the dataplane, live: a network's MAC table,
//! the connection table and the counters, by port, drop reason, network
//! and worker; and the static MAC entries `tapnet fdb add` makes.

use std::collections::BTreeMap;

use dataplane::port::PortId;
use hashbrown::HashMap;

use super::{Engine, EngineError, Result, View};
use crate::api::{ConntrackInfo, ConntrackRow, FdbInfo, FdbRow, PortStats, StatsInfo, WorkerInfo};

impl View {
    /// Every port's name (`container:interface`, `uplink:IFACE`) and
    /// network.
    fn port_names(&self) -> HashMap<PortId, (String, String)> {
        let mut m: HashMap<PortId, (String, String)> = self
            .state
            .containers
            .values()
            .flat_map(|c| {
                c.networks.iter().map(move |e| (e.port, (format!("{}:{}", c.name, e.interface), e.network.clone())))
            })
            .collect();
        if let Some((port, name)) = &self.uplink {
            m.insert(*port, (name.clone(), String::new()));
        }
        for (p, v) in self.state.overlay_ports.iter() {
            m.insert(*p, v.clone());
        }
        m
    }

    pub fn fdb(&self, net: &str) -> Result<FdbInfo> {
        let n = self.state.networks.get(net).ok_or_else(|| EngineError::no_network(net))?;
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
        Ok(FdbInfo {
            network: net.into(),
            entries,
            max: n.fdb.capacity(),
            ageing: n.fdb.ageing_ms() / 1000,
            max_per_port: n.fdb.port_limit(),
            events,
        })
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
            .state
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
        Ok(ConntrackInfo { entries, max: self.conntrack_max })
    }
}

impl Engine {
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
        let n = self.networks.get_mut(net).expect("checked");
        n.statics.retain(|(m, _)| *m != mac);
        n.statics.push((mac, remote));
        self.fdb(net)
    }

    /// `tapnet fdb del NET MAC`: remove a static entry `fdb add` made.
    pub fn fdb_del(&mut self, net: &str, mac: &str) -> Result<FdbInfo> {
        let n = self.networks.get(net).ok_or_else(|| EngineError::NoNetwork(net.into()))?;
        let mac: dataplane::wire::MacAddr = mac.parse()?;
        if mac == n.gateway_mac || !n.fdb.remove_static(mac) {
            return Err(EngineError::BadOverlay(format!("{mac} has no static entry that fdb add made on {net:?}")));
        }
        self.networks.get_mut(net).expect("checked").statics.retain(|(m, _)| *m != mac);
        self.fdb(net)
    }

    pub fn fdb(&self, net: &str) -> Result<FdbInfo> {
        self.view().fdb(net)
    }

    pub fn stats(&self) -> StatsInfo {
        self.view().stats()
    }

    pub fn conntrack(&self) -> Result<ConntrackInfo> {
        self.view().conntrack()
    }

    /// Expire old MAC entries; the daemon calls this about once a second.
    pub fn sweep(&self) {
        let now = self.dp.now_ms();
        for n in self.networks.values() {
            n.fdb.sweep(now);
        }
        self.log_peer_failures(now);
    }
}
