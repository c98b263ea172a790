//! The results ([`Report`], also written as JSON) and the table printed on
//! stdout.

use std::fmt::Write as _;

use serde::Serialize;

use super::args::Settings;
use super::workload::Datapath;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    pub metric: String,
    pub kernel: Option<f64>,
    pub tapnet: Option<f64>,
    /// tapnet / kernel.
    pub ratio: Option<f64>,
    pub lower_is_better: bool,
}

/// A workload that failed on one datapath.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub workload: String,
    pub datapath: Datapath,
    pub error: String,
}

/// Everything measured in one scenario, or in one of tapnet's modes of it
/// (`vxlan` and `vxlan-csum` are VXLAN with zero UDP checksums and with
/// them, against the same kernel figures).
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario: String,
    /// tapnet's mode in this scenario, when it has several
    /// (`udp_csum=false`, `udp_csum=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Why the kernel column is empty, when there is no kernel reference
    /// (gre: this kernel has no GRE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_kernel_reference: Option<String>,
    pub rows: Vec<Row>,
    pub failures: Vec<Failure>,
    /// Raw reports of the generator, by datapath then workload.
    pub detail: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub tapnet_version: String,
    pub workers: usize,
}

/// The machine's load averages (1, 5, 15 minutes) when the run started
/// and when it ended: the machine may be shared, and its load moves the
/// figures (each run's 1-minute figure is in its detail, `loadavg_1m`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Load {
    pub start: Option<[f64; 3]>,
    pub end: Option<[f64; 3]>,
}

/// The whole report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub interrupted: bool,
    pub load: Load,
    pub scenarios: Vec<ScenarioResult>,
}

/// A number with about four significant digits.
pub(super) fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), fmt_num)
}

/// The footnote on the CPU figures (see `harness/mod.rs`).
const CPU_NOTE: &str = "\
cpu s/Gbit: CPU seconds of the whole machine (user+nice+system+irq+softirq) per Gbit, the same basis for both
  datapaths: it includes both TCP stacks and the generator. worker cpu s/Gbit: tapnet's worker threads alone.
";

/// The table printed on stdout.
pub fn table(r: &Report) -> String {
    let m = &r.machine;
    let s = &r.settings;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "tapnet bench: {} cores, kernel {}, tapnet {}, workers: {}; {} s per workload, {} streams, UDP fixed rate {} pps{}",
        m.cores,
        m.kernel,
        m.tapnet_version,
        m.workers,
        s.duration_s,
        s.streams,
        s.udp_rate_pps,
        if s.repeat > 1 { format!("; median of {} runs", s.repeat) } else { String::new() }
    );
    let load = |l: Option<[f64; 3]>| l.map_or_else(|| "?".into(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]));
    let _ = writeln!(o, "load average: {} at the start, {} at the end", load(r.load.start), load(r.load.end));
    let _ = writeln!(
        o,
        "{:<10} {:<13} {:<16} {:>12} {:>12} {:>14}",
        "SCENARIO", "WORKLOAD", "METRIC", "KERNEL", "TAPNET", "TAPNET/KERNEL"
    );
    for sc in &r.scenarios {
        for row in &sc.rows {
            let ratio = row.ratio.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"));
            let note = if row.ratio.is_some() && row.lower_is_better { "  lower is better" } else { "" };
            let _ = writeln!(
                o,
                "{:<10} {:<13} {:<16} {:>12} {:>12} {:>14}{note}",
                sc.scenario,
                row.workload,
                row.metric,
                opt(row.kernel),
                opt(row.tapnet),
                ratio
            );
        }
        for f in &sc.failures {
            let _ = writeln!(o, "{:<10} {} failed on {}: {}", sc.scenario, f.workload, f.datapath.name(), f.error);
        }
        if let Some(why) = &sc.no_kernel_reference {
            let _ = writeln!(o, "{:<10} no kernel reference: {why}", sc.scenario);
        }
        for n in &sc.notes {
            let _ = writeln!(o, "{:<10} note: {n}", sc.scenario);
        }
    }
    o.push_str(CPU_NOTE);
    if r.interrupted {
        let _ = writeln!(o, "(interrupted: later workloads were not run)");
    }
    o
}
