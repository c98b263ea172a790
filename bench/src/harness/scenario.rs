//! Running the scenarios: build both datapaths, run every workload through
//! one and then the other (alternating with `--repeat`), show progress, and
//! pair the figures up into rows; scenarios tapnet cannot run yet are
//! reported as not available.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::args::{Scenario, Settings};
use super::report::{fmt_num, Failure, Machine, Report, ScenarioResult};
use super::topology::{Addressing, KernelBridge, Pair, TapnetBridge};
use super::workload::{have_iperf3, rows_for, run_workload, Datapath, Measurement, Workload};
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

/// Build one datapath; on failure every workload of it fails with the reason.
enum Built {
    Kernel(KernelBridge),
    Tapnet(Box<TapnetBridge>),
}

impl Built {
    fn pair(&self) -> &Pair {
        match self {
            Built::Kernel(k) => &k.pair,
            Built::Tapnet(t) => &t.pair,
        }
    }
}

/// Run the bridge scenario. `stop` is checked between workloads.
fn run_bridge(s: &Settings, prefix: &str, stop: &AtomicBool, p: &mut Progress) -> ScenarioResult {
    let mut res = ScenarioResult {
        scenario: "bridge".into(),
        available: true,
        reason: None,
        rows: Vec::new(),
        failures: Vec::new(),
        detail: serde_json::Map::new(),
        notes: Vec::new(),
    };
    let addr = Addressing::default();
    let mut workloads = Workload::BUILTIN.to_vec();
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

    // Both are built before anything runs, so a broken build costs no time;
    // both guards live until the end of this function, whatever happens.
    let build = |dp: Datapath| -> std::result::Result<Built, String> {
        eprintln!("building bridge/{} ...", dp.name());
        let r = match dp {
            Datapath::Kernel => KernelBridge::build(&format!("{prefix}k"), addr).map(Built::Kernel),
            Datapath::Tapnet => TapnetBridge::build(&format!("{prefix}t"), addr, s.workers, s.pin, s.busy_poll_us)
                .map(|t| Built::Tapnet(Box::new(t))),
        };
        let b = r.map_err(|e| format!("cannot build the {} datapath: {e}", dp.name()))?;
        // Warm up ARP and the MAC tables, and check connectivity.
        let pair = b.pair();
        let ping = traffic::ping(Some(&pair.a_ns), addr.b, 3, Duration::from_secs(1)).map_err(|e| e.to_string())?;
        if ping.received == 0 {
            return Err(format!("{}: no connectivity (ping {} -> {} unanswered)", dp.name(), addr.a, addr.b));
        }
        Ok(b)
    };
    let kernel = build(Datapath::Kernel);
    let tapnet = if stop.load(Ordering::Relaxed) { Err("interrupted".into()) } else { build(Datapath::Tapnet) };

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
            p.start(&format!("bridge/{} {}", dp.name(), w.name()));
            let bulk1 = measured
                .iter()
                .find(|x| x.0 == Workload::Bulk1)
                .and_then(|x| if i == 0 { x.1.as_ref() } else { x.2.as_ref() }.and_then(|m| m.get("gbit_per_s")));
            let out = match built {
                Ok(b) => run_workload(w, dp, b.pair(), s, bulk1),
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
    if let Ok(Built::Tapnet(t)) = &tapnet {
        if t.workers() != s.workers {
            res.notes.push(format!("tapnet ran {} workers", t.workers()));
        }
    }
    eprintln!("tearing down bridge ...");
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
            Scenario::Bridge => run_bridge(s, &prefix, stop, &mut p),
            _ => not_available(sc),
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
        let mut bridge = not_available(Scenario::Dnat);
        bridge.scenario = "bridge".into();
        bridge.available = true;
        bridge.reason = None;
        bridge.rows = rows;
        let r = Report {
            machine: machine(1),
            settings: s,
            interrupted: false,
            scenarios: vec![bridge, not_available(Scenario::Dnat)],
        };
        let text = table(&r);
        assert!(text.contains("tcp_bulk_1"), "{text}");
        assert!(text.contains("not available: feature not implemented yet (tapnet NAT/overlay pending)"), "{text}");
        let svg = svg(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("kernel = 1.0"));
        assert_eq!(svg.matches("<rect").count(), 1 + 2);
    }
}
