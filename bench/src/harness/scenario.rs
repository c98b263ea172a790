//! Running the scenarios: build both datapaths, check that they carry TCP,
//! run every workload through one and then the other (alternating with
//! `--repeat`), show progress, and pair the figures up into rows; scenarios
//! tapnet cannot run yet are reported as not available. For tapnet, the
//! JSON detail of every run also holds what its dataplane counted during
//! it (`tapnet_stats`: frames per wake-up, port traffic, drops, router
//! events).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use control::engine::EngineConfig;

use super::args::{Scenario, Settings};
use super::nat::{Direction, KernelNat, NatAddressing, TapnetNat};
use super::report::{fmt_num, Failure, Machine, Report, ScenarioResult};
use super::topology::{Addressing, BenchError, KernelBridge, TapnetBridge, Topology};
use super::workload::{have_iperf3, rows_for, run_workload, stats_delta, Datapath, Measurement, Workload};
use crate::traffic;

/// Progress on stderr, one line per step so it reads well in a log too:
/// `[######--------------]  3/14 ~55 s left  bridge/tapnet tcp_bulk_1 ... 4.10 Gbit/s`.
struct Progress {
    step: usize,
    total: usize,
    /// Seconds one step takes (the workload duration).
    secs: u64,
}

impl Progress {
    fn start(&mut self, what: &str) {
        self.step += 1;
        const WIDTH: usize = 20;
        let filled = (self.step - 1) * WIDTH / self.total.max(1);
        let left = (self.total + 1).saturating_sub(self.step) as u64 * self.secs;
        eprint!(
            "[{}{}] {:>2}/{} ~{left} s left  {what} ... ",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.step,
            self.total
        );
    }
    fn done(&self, summary: &str) {
        eprintln!("{summary}");
    }
}

fn summary(w: Workload, m: &Measurement) -> String {
    w.metrics()
        .iter()
        .filter_map(|x| m.get(x.key).map(|v| format!("{} {}", fmt_num(v), x.label)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kernel's `nf_conntrack_max`, which tapnet's conntrack bound is set
/// to in the NAT scenarios, so that neither table fills before the other.
fn kernel_conntrack_max() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max").ok()?.trim().parse().ok()
}

/// Build one datapath of `sc` and check that the client reaches the server
/// (which also warms ARP, the MAC tables and the NAT's port allocation).
fn build(
    sc: Scenario,
    dp: Datapath,
    s: &Settings,
    prefix: &str,
    conntrack_max: usize,
) -> std::result::Result<Box<dyn Topology>, String> {
    eprintln!("building {}/{} ...", sc.name(), dp.name());
    let engine = EngineConfig {
        workers: s.workers,
        pin: s.pin,
        busy_poll_us: s.busy_poll_us,
        conntrack_max,
        ..EngineConfig::default()
    };
    let nat = NatAddressing::default();
    let r: std::result::Result<Box<dyn Topology>, BenchError> = match (sc, dp) {
        (Scenario::Bridge, Datapath::Kernel) => {
            KernelBridge::build(&format!("{prefix}k"), Addressing::default()).map(|t| Box::new(t) as _)
        }
        (Scenario::Bridge, Datapath::Tapnet) => {
            TapnetBridge::build(&format!("{prefix}t"), Addressing::default(), s.workers, s.pin, s.busy_poll_us)
                .map(|t| Box::new(t) as _)
        }
        (Scenario::Dnat | Scenario::Snat, dp) => {
            let (dir, tag) = if sc == Scenario::Dnat { (Direction::Dnat, "d") } else { (Direction::Snat, "s") };
            match dp {
                Datapath::Kernel => KernelNat::build(&format!("{prefix}{tag}k"), dir, nat).map(|t| Box::new(t) as _),
                Datapath::Tapnet => {
                    TapnetNat::build(&format!("{prefix}{tag}t"), dir, nat, engine).map(|t| Box::new(t) as _)
                }
            }
        }
        _ => return Err(format!("{}: {}", sc.name(), sc.unavailable().unwrap_or("nothing to build"))),
    };
    let b = r.map_err(|e| format!("cannot build the {} datapath: {e}", dp.name()))?;
    let pair = b.pair();
    let ping =
        traffic::ping(Some(&pair.a_ns), pair.target_ip(), 3, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    if ping.received == 0 {
        return Err(format!("{}: no connectivity (ping {} -> {} unanswered)", dp.name(), pair.a_ip, pair.target_ip()));
    }
    let tcp = traffic::tcp_crr(pair.server(), pair.client(), pair.port, Duration::from_millis(300));
    if let Err(e) = tcp {
        return Err(format!("{}: no TCP connectivity from {} to the server: {e}", dp.name(), pair.a_ip));
    }
    Ok(b)
}

/// Run scenario `sc` (bridge, dnat or snat). `stop` is checked between
/// workloads.
fn run_scenario(sc: Scenario, s: &Settings, prefix: &str, stop: &AtomicBool, p: &mut Progress) -> ScenarioResult {
    let name = sc.name();
    let mut res = ScenarioResult {
        scenario: name.into(),
        available: true,
        reason: None,
        rows: Vec::new(),
        failures: Vec::new(),
        detail: serde_json::Map::new(),
        notes: Vec::new(),
    };
    let mut workloads = if sc == Scenario::Bridge { Workload::BUILTIN.to_vec() } else { Workload::NAT.to_vec() };
    if s.iperf3 {
        if have_iperf3() {
            workloads.push(Workload::Iperf3);
        } else {
            let note = "iperf3 is not installed; skipping the iperf3 cross-check".to_string();
            eprintln!("tapnet bench: {note}");
            res.notes.push(note);
        }
    }
    p.total += workloads.len() * 2 * s.repeat;
    let default_max = EngineConfig::default().conntrack_max;
    let conntrack_max = if sc == Scenario::Bridge { None } else { kernel_conntrack_max() };
    if let Some(m) = conntrack_max {
        res.notes.push(format!(
            "tapnet's conntrack bound is the kernel's nf_conntrack_max here, {m} (the daemon's default is {default_max})"
        ));
    }

    // Both are built before anything runs, so a broken build costs no time;
    // both guards live until the end of this function, whatever happens.
    let max = conntrack_max.unwrap_or(default_max);
    let kernel = build(sc, Datapath::Kernel, s, prefix, max);
    let tapnet = if stop.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        build(sc, Datapath::Tapnet, s, prefix, max)
    };

    let mut measured: Vec<(Workload, Option<Measurement>, Option<Measurement>)> = Vec::new();
    let mut kdetail = serde_json::Map::new();
    let mut tdetail = serde_json::Map::new();
    for &w in &workloads {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut runs: [Vec<Measurement>; 2] = [Vec::new(), Vec::new()];
        let both = [(Datapath::Kernel, &kernel), (Datapath::Tapnet, &tapnet)];
        for (i, (dp, built)) in (0..s.repeat).flat_map(|_| both.into_iter().enumerate()) {
            if stop.load(Ordering::Relaxed) {
                // Keep the half measured: its kernel figure is still shown.
                break;
            }
            p.start(&format!("{name}/{} {}", dp.name(), w.name()));
            let bulk1 = measured
                .iter()
                .find(|x| x.0 == Workload::Bulk1)
                .and_then(|x| if i == 0 { x.1.as_ref() } else { x.2.as_ref() }.and_then(|m| m.get("gbit_per_s")));
            let out = match built {
                Ok(b) => {
                    let before = b.stats();
                    let out = run_workload(w, dp, b.pair(), s, bulk1);
                    out.map(|mut m| {
                        if let (Some(b0), Some(b1)) = (before, b.stats()) {
                            if let Some(o) = m.detail.as_object_mut() {
                                o.insert("tapnet_stats".into(), stats_delta(&b0, &b1));
                            }
                        }
                        m
                    })
                }
                Err(e) => Err(e.clone()),
            };
            match out {
                Ok(m) => {
                    p.done(&summary(w, &m));
                    runs[i].push(m);
                }
                Err(e) => {
                    p.done(&format!("failed: {e}"));
                    res.failures.push(Failure { workload: w.name().into(), datapath: dp, error: e });
                }
            }
        }
        let [k, t] = runs.map(Measurement::median);
        for (m, d) in [(&k, &mut kdetail), (&t, &mut tdetail)] {
            if let Some(m) = m {
                d.insert(w.name().into(), m.detail.clone());
            }
        }
        measured.push((w, k, t));
    }
    for (w, k, t) in &measured {
        res.rows.extend(rows_for(*w, k.as_ref(), t.as_ref()));
    }
    res.detail.insert("kernel".into(), kdetail.into());
    res.detail.insert("tapnet".into(), tdetail.into());
    if let Ok(t) = &tapnet {
        if let Some(n) = t.workers().filter(|&n| n != s.workers) {
            res.notes.push(format!("tapnet ran {n} workers"));
        }
    }
    eprintln!("tearing down {name} ...");
    drop(tapnet);
    drop(kernel);
    res
}

pub(super) fn not_available(sc: Scenario) -> ScenarioResult {
    ScenarioResult {
        scenario: sc.name().into(),
        available: false,
        reason: sc.unavailable().map(str::to_string),
        rows: Vec::new(),
        failures: Vec::new(),
        detail: serde_json::Map::new(),
        notes: Vec::new(),
    }
}

pub(super) fn machine(workers: usize) -> Machine {
    Machine {
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        tapnet_version: env!("CARGO_PKG_VERSION").into(),
        workers,
    }
}

/// Run the benchmarks in `s`, checking `stop` between workloads.
pub fn bench(s: &Settings, stop: &AtomicBool) -> Report {
    let prefix = format!("tnb{}", std::process::id() % 100_000);
    let mut p = Progress { step: 0, total: 0, secs: s.duration_s };
    let mut scenarios = Vec::new();
    for &sc in &s.scenarios {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        scenarios.push(match sc {
            _ if sc.unavailable().is_some() => not_available(sc),
            _ => run_scenario(sc, s, &prefix, stop, &mut p),
        });
    }
    Report { machine: machine(s.workers), settings: s.clone(), interrupted: stop.load(Ordering::Relaxed), scenarios }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::args::{BenchArgs, Tool};
    use crate::harness::chart::svg;
    use crate::harness::report::table;

    #[test]
    fn table_and_svg() {
        let m = Measurement { values: vec![("gbit_per_s", 10.0), ("cpu_s_per_gbit", 0.1)], ..Default::default() };
        let t = Measurement { values: vec![("gbit_per_s", 5.0), ("cpu_s_per_gbit", 0.3)], ..Default::default() };
        let rows = rows_for(Workload::Bulk1, Some(&m), Some(&t));
        assert_eq!(rows[0].ratio, Some(0.5));
        assert!(rows[1].lower_is_better);
        let s = BenchArgs {
            scenario: Scenario::All,
            duration: 1,
            streams: 1,
            workers: Some(1),
            udp_rate: 1,
            json: None,
            plot: None,
            tool: Tool::Builtin,
            no_pin: false,
            busy_poll_us: 0,
            repeat: 1,
        }
        .validate()
        .unwrap();
        let mut bridge = not_available(Scenario::Vxlan);
        bridge.scenario = "bridge".into();
        bridge.available = true;
        bridge.reason = None;
        bridge.rows = rows;
        let r = Report {
            machine: machine(1),
            settings: s,
            interrupted: false,
            scenarios: vec![bridge, not_available(Scenario::Vxlan)],
        };
        let text = table(&r);
        assert!(text.contains("tcp_bulk_1"), "{text}");
        assert!(
            text.contains("vxlan     not available: feature not implemented yet (tapnet overlay pending)"),
            "{text}"
        );
        let svg = svg(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("kernel = 1.0"));
        assert_eq!(svg.matches("<rect").count(), 1 + 2);
    }
}
