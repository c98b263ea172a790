//! The workloads (TCP bulk with 1 and N streams, UDP at a fixed and the
//! maximum rate, request/response, connection rate, the iperf3
//! cross-check), what each measures, and how one runs on one datapath.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::args::Settings;
use super::cpu::{worker_cpu_s, MachineCpu};
use super::report::Row;
use control::api::{PortStats, StatsInfo};

use super::topology::Pair;
use crate::traffic::{self, TrafficError};

/// The two datapaths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Datapath {
    Kernel,
    Tapnet,
}

impl Datapath {
    pub(super) fn name(self) -> &'static str {
        match self {
            Datapath::Kernel => "kernel",
            Datapath::Tapnet => "tapnet",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Workload {
    Bulk1,
    BulkN,
    UdpFixed,
    UdpMax,
    Rr,
    Crr,
    Iperf3,
}

impl Workload {
    pub(super) const BUILTIN: [Workload; 6] =
        [Workload::Bulk1, Workload::BulkN, Workload::UdpFixed, Workload::UdpMax, Workload::Rr, Workload::Crr];
    /// TCP only: through NAT (one published TCP port leads to the
    /// server) and across an overlay.
    pub(super) const TCP: [Workload; 4] = [Workload::Bulk1, Workload::BulkN, Workload::Rr, Workload::Crr];

    pub(super) fn name(self) -> &'static str {
        match self {
            Workload::Bulk1 => "tcp_bulk_1",
            Workload::BulkN => "tcp_bulk_n",
            Workload::UdpFixed => "udp64_fixed",
            Workload::UdpMax => "udp64_max",
            Workload::Rr => "tcp_rr",
            Workload::Crr => "tcp_crr",
            Workload::Iperf3 => "iperf3_tcp_1",
        }
    }

    /// The metrics this workload reports, in table order.
    pub(super) fn metrics(self) -> &'static [Metric] {
        use Better::*;
        const BULK: &[Metric] = &[
            Metric { key: "gbit_per_s", label: "Gbit/s", better: Higher },
            Metric { key: "cpu_s_per_gbit", label: "cpu s/Gbit", better: Lower },
            Metric { key: "worker_cpu_s_per_gbit", label: "worker cpu s/Gbit", better: NoRatio },
        ];
        const UDP: &[Metric] = &[
            Metric { key: "offered_pps", label: "offered pps", better: NoRatio },
            Metric { key: "delivered_pps", label: "delivered pps", better: Higher },
            Metric { key: "loss_pct", label: "loss %", better: NoRatio },
        ];
        const RR: &[Metric] = &[
            Metric { key: "per_second", label: "trans/s", better: Higher },
            Metric { key: "p50_us", label: "p50 us", better: Lower },
            Metric { key: "p99_us", label: "p99 us", better: Lower },
        ];
        const CRR: &[Metric] = &[Metric { key: "per_second", label: "conn/s", better: Higher }];
        const IPERF: &[Metric] = &[
            Metric { key: "gbit_per_s", label: "Gbit/s", better: Higher },
            Metric { key: "builtin_gbit_per_s", label: "built-in Gbit/s", better: NoRatio },
        ];
        match self {
            Workload::Bulk1 | Workload::BulkN => BULK,
            Workload::UdpFixed | Workload::UdpMax => UDP,
            Workload::Rr => RR,
            Workload::Crr => CRR,
            Workload::Iperf3 => IPERF,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Better {
    Higher,
    Lower,
    /// A figure shown for context, with no ratio (offered load, loss).
    NoRatio,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Metric {
    pub(super) key: &'static str,
    pub(super) label: &'static str,
    pub(super) better: Better,
}

/// What one workload measured on one datapath.
#[derive(Debug, Clone, Default)]
pub(super) struct Measurement {
    pub(super) values: Vec<(&'static str, f64)>,
    pub(super) detail: serde_json::Value,
}

impl Measurement {
    pub(super) fn get(&self, key: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The median of each value over repeated runs (the upper median for an
    /// even count); the detail of every run is kept.
    pub(super) fn median(runs: Vec<Measurement>) -> Option<Measurement> {
        if runs.len() <= 1 {
            return runs.into_iter().next();
        }
        let values = runs[0]
            .values
            .iter()
            .map(|(k, _)| {
                let mut v: Vec<f64> = runs.iter().filter_map(|m| m.get(k)).collect();
                v.sort_by(|a, b| a.total_cmp(b));
                (*k, v[v.len() / 2])
            })
            .collect();
        let detail = serde_json::Value::Array(runs.into_iter().map(|m| m.detail).collect());
        Some(Measurement { values, detail })
    }
}

/// Runs one workload on one datapath.
pub(super) fn run_workload(
    w: Workload,
    dp: Datapath,
    pair: &Pair,
    s: &Settings,
    bulk1: Option<f64>,
) -> std::result::Result<Measurement, String> {
    let d = Duration::from_secs(s.duration_s);
    let (server, client, port) = (pair.server(), pair.client(), pair.port);
    let te = |e: TrafficError| e.to_string();
    let mut m = Measurement::default();
    match w {
        Workload::Bulk1 | Workload::BulkN => {
            let streams = if w == Workload::Bulk1 { 1 } else { s.streams };
            // Both datapaths are compared on the same basis, the whole
            // machine's CPU time (it includes both TCP stacks and the
            // generator); tapnet's workers are reported on their own too.
            let (w0, m0) = (worker_cpu_s(), MachineCpu::now());
            let r = traffic::tcp_bulk(server, client, port, streams, None, d, false).map_err(te)?;
            let (workers, machine) = (worker_cpu_s() - w0, MachineCpu::now().since(m0));
            let gbits = r.bytes as f64 * 8.0 / 1e9;
            m.values.push(("gbit_per_s", r.gbit_per_s));
            if gbits > 0.0 && machine.busy_s > 0.0 {
                m.values.push(("cpu_s_per_gbit", machine.busy_s / gbits));
            }
            if dp == Datapath::Tapnet && gbits > 0.0 && workers > 0.0 {
                m.values.push(("worker_cpu_s_per_gbit", workers / gbits));
            }
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("per_stream_bytes");
                o.insert("machine_cpu_s".into(), machine.busy_s.into());
                o.insert("sys_cpu_s".into(), machine.sys_s.into());
                if dp == Datapath::Tapnet {
                    o.insert("worker_cpu_s".into(), workers.into());
                }
            }
            m.detail = v;
        }
        Workload::UdpFixed | Workload::UdpMax => {
            let rate = (w == Workload::UdpFixed).then_some(s.udp_rate_pps);
            let r = traffic::udp_stream(server, client, port, 64, rate, d).map_err(te)?;
            m.values.push(("offered_pps", r.offered_pps));
            m.values.push(("delivered_pps", r.delivered_pps));
            m.values.push(("loss_pct", r.loss * 100.0));
            m.detail = serde_json::to_value(&r).unwrap_or_default();
        }
        Workload::Rr => {
            let r = traffic::tcp_rr(server, client, port, 1, d).map_err(te)?;
            m.values.push(("per_second", r.per_second));
            m.values.push(("p50_us", r.p50_us));
            m.values.push(("p99_us", r.p99_us));
            m.detail = serde_json::to_value(&r).unwrap_or_default();
        }
        Workload::Crr => {
            let r = traffic::tcp_crr(server, client, port, d).map_err(te)?;
            m.values.push(("per_second", r.per_second));
            m.detail = serde_json::to_value(&r).unwrap_or_default();
        }
        Workload::Iperf3 => {
            let g = iperf3(pair, s.duration_s)?;
            m.values.push(("gbit_per_s", g));
            if let Some(b) = bulk1 {
                m.values.push(("builtin_gbit_per_s", b));
            }
            m.detail = serde_json::json!({ "gbit_per_s": g });
        }
    }
    Ok(m)
}

/// Is `iperf3` on the PATH?
pub(super) fn have_iperf3() -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join("iperf3").is_file())).unwrap_or(false)
}

/// One `iperf3 -c` stream from A to B for `secs`, via `ip netns exec`
/// (allowed here: it is only a cross-check of the built-in generator), to
/// B's iperf3 port or where that is published. Returns the receiver's
/// Gbit/s.
pub(super) fn iperf3(pair: &Pair, secs: u64) -> std::result::Result<f64, String> {
    use std::process::{Command, Stdio};
    let port = pair.iperf3_port.to_string();
    let b = pair.b_ip.to_string();
    let target = pair.iperf3_via.unwrap_or(std::net::SocketAddrV4::new(pair.b_ip, pair.iperf3_port));
    let (t_ip, t_port) = (target.ip().to_string(), target.port().to_string());
    let mut server = Command::new("ip")
        .args(["netns", "exec", &pair.b_name, "iperf3", "-s", "-1", "-B", &b, "-p", &port])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start iperf3 server: {e}"))?;
    let result = (|| {
        let mut last = String::new();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(150));
            let out = Command::new("ip")
                .args(["netns", "exec", &pair.a_name, "iperf3", "-c", &t_ip, "-p", &t_port, "-J"])
                .args(["-B", &pair.a_ip.to_string(), "-t", &secs.to_string(), "--connect-timeout", "3000"])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run iperf3 client: {e}"))?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if let Some(bps) = v.pointer("/end/sum_received/bits_per_second").and_then(|x| x.as_f64()) {
                return Ok(bps / 1e9);
            }
            last = v.get("error").and_then(|e| e.as_str()).unwrap_or("no result").to_string();
            if !last.contains("refused") {
                break;
            }
        }
        Err(format!("iperf3: {last}"))
    })();
    // The server exits after one test; if it is still there, stop it.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = server.try_wait() {
            return result;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// Pair up the measurements of both datapaths into table rows.
pub(super) fn rows_for(w: Workload, k: Option<&Measurement>, t: Option<&Measurement>) -> Vec<Row> {
    w.metrics()
        .iter()
        .map(|m| {
            let kv = k.and_then(|x| x.get(m.key));
            let tv = t.and_then(|x| x.get(m.key));
            let ratio = match (m.better, kv, tv) {
                (Better::NoRatio, ..) => None,
                (_, Some(k), Some(t)) if k > 0.0 => Some(t / k),
                _ => None,
            };
            Row {
                workload: w.name().into(),
                metric: m.label.into(),
                kernel: kv,
                tapnet: tv,
                ratio,
                lower_is_better: m.better == Better::Lower,
            }
        })
        .collect()
}

/// What tapnet's dataplane did during one run, from its counters before
/// and after (`tapnet stats`): frames and wake-ups per worker, each port's
/// traffic, and the drop reasons and router events that moved.
pub(super) fn stats_delta(before: &StatsInfo, after: &StatsInfo) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let workers: Vec<Value> = after
        .per_worker
        .iter()
        .map(|w| {
            let b = before.per_worker.iter().find(|x| x.worker == w.worker);
            let wakeups = w.wakeups - b.map_or(0, |x| x.wakeups.min(w.wakeups));
            let frames = w.frames - b.map_or(0, |x| x.frames.min(w.frames));
            let per = if wakeups > 0 { frames as f64 / wakeups as f64 } else { 0.0 };
            json!({ "worker": w.worker, "wakeups": wakeups, "frames": frames, "frames_per_wakeup": per })
        })
        .collect();
    let ports: Vec<Value> = after
        .ports
        .iter()
        .map(|p| {
            let b = before.ports.iter().find(|x| x.name == p.name);
            let d = |f: fn(&PortStats) -> u64| f(p).saturating_sub(b.map_or(0, f));
            json!({
                "name": p.name,
                "rx_packets": d(|x| x.rx_packets),
                "rx_bytes": d(|x| x.rx_bytes),
                "tx_packets": d(|x| x.tx_packets),
                "tx_bytes": d(|x| x.tx_bytes),
                "rx_dropped": d(|x| x.rx_dropped),
                "tx_dropped": d(|x| x.tx_dropped),
            })
        })
        .collect();
    let moved = |a: &std::collections::BTreeMap<String, u64>, b: &std::collections::BTreeMap<String, u64>| {
        a.iter()
            .filter_map(|(k, v)| {
                let d = v.saturating_sub(b.get(k).copied().unwrap_or(0));
                (d > 0).then(|| (k.clone(), Value::from(d)))
            })
            .collect::<Map<String, Value>>()
    };
    json!({
        "workers": workers,
        "ports": ports,
        "drops": moved(&after.drops, &before.drops),
        "router": moved(&after.router, &before.router),
    })
}
