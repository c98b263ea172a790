//! Running the scenarios: build the datapaths, check that they carry TCP,
//! run every workload through one and then the other (alternating with
//! `--repeat`), show progress, and pair the figures up into rows. A
//! scenario may have several tapnet variants (vxlan: zero UDP checksums
//! and `udp_csum`), each reported as a scenario of its own against the
//! same kernel figures, and may have no kernel reference (gre, on a
//! kernel without GRE): then tapnet is measured alone. For tapnet, the
//! JSON detail of every run also holds what its dataplane counted during
//! it (`tapnet_stats`: frames per wake-up, port traffic, drops, router
//! events).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use control::engine::EngineConfig;

use super::args::{Scenario, Settings};
use super::nat::{Direction, KernelNat, NatAddressing, TapnetNat};
use super::overlay::{kernel_gretap, KernelOverlay, OverlayAddressing, TapnetOverlay};
use super::report::{fmt_num, Failure, Load, Machine, Report, ScenarioResult};
use super::topology::{Addressing, BenchError, KernelBridge, TapnetBridge, Topology};
use super::workload::{have_iperf3, rows_for, run_workload, stats_delta, Datapath, Measurement, Workload};
use crate::traffic;
use dataplane::overlay::tunnel::Encap;

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

/// One way tapnet runs a scenario, reported as a scenario of its own:
/// `vxlan` runs two (zero UDP checksums, the default, and `udp_csum`), the
/// others one.
#[derive(Debug, Clone, Copy)]
struct Variant {
    /// The scenario name its rows are reported under.
    name: &'static str,
    /// tapnet's mode, for the JSON (`None`: the scenario has one).
    mode: Option<&'static str>,
    /// VXLAN with UDP checksums (and UDP GSO and GRO).
    udp_csum: bool,
}

fn variants(sc: Scenario) -> Vec<Variant> {
    match sc {
        Scenario::Vxlan => vec![
            Variant { name: "vxlan", mode: Some("udp_csum=false"), udp_csum: false },
            Variant { name: "vxlan-csum", mode: Some("udp_csum=true"), udp_csum: true },
        ],
        _ => vec![Variant { name: sc.name(), mode: None, udp_csum: false }],
    }
}

/// Why scenario `sc` has no kernel reference, if it has none.
fn no_kernel_reference(sc: Scenario) -> Option<String> {
    (sc == Scenario::Gre).then(|| match kernel_gretap() {
        Err(why) => format!("{why}; tapnet is measured alone"),
        Ok(()) => "the bench builds a kernel overlay for VXLAN only (this kernel could make a gretap device), \
                   so tapnet is measured alone"
            .into(),
    })
}

/// One datapath as run: the kernel's, or one of tapnet's variants.
struct Side {
    dp: Datapath,
    /// Index into the variants (tapnet only).
    variant: Option<usize>,
    /// `scenario/datapath`, for the progress lines.
    label: String,
    built: std::result::Result<Box<dyn Topology>, String>,
}

/// Build one datapath of `sc` (tapnet's in `variant`) and check that the
/// client reaches the server (which also warms ARP, the MAC tables and
/// the NAT's port allocation).
fn build(
    sc: Scenario,
    dp: Datapath,
    variant: Option<Variant>,
    s: &Settings,
    prefix: &str,
    conntrack_max: usize,
) -> std::result::Result<Box<dyn Topology>, String> {
    let label = variant.map_or(sc.name(), |v| v.name);
    eprintln!("building {label}/{} ...", dp.name());
    let engine = EngineConfig {
        workers: s.workers,
        pin: s.pin,
        busy_poll_us: s.busy_poll_us,
        conntrack_max,
        ..EngineConfig::default()
    };
    let nat = NatAddressing::default();
    let ov = OverlayAddressing::default();
    let csum = variant.is_some_and(|v| v.udp_csum);
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
        (Scenario::Vxlan, Datapath::Kernel) => {
            KernelOverlay::build(&format!("{prefix}xk"), ov).map(|t| Box::new(t) as _)
        }
        (Scenario::Vxlan, Datapath::Tapnet) => {
            let tag = if csum { "xc" } else { "xt" };
            TapnetOverlay::build(&format!("{prefix}{tag}"), Encap::Vxlan, ov, csum, engine).map(|t| Box::new(t) as _)
        }
        (Scenario::Gre, Datapath::Tapnet) => {
            TapnetOverlay::build(&format!("{prefix}gt"), Encap::Gre, ov, false, engine).map(|t| Box::new(t) as _)
        }
        (Scenario::Gre, Datapath::Kernel) | (Scenario::All, _) => {
            return Err(format!("{}/{}: nothing to build", sc.name(), dp.name()))
        }
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

/// Run scenario `sc` through the kernel's datapath (unless it has none
/// here) and each of tapnet's variants; one result per variant, each
/// against the same kernel figures. `stop` is checked between workloads.
fn run_scenario(sc: Scenario, s: &Settings, prefix: &str, stop: &AtomicBool, p: &mut Progress) -> Vec<ScenarioResult> {
    let vars = variants(sc);
    let no_kernel = no_kernel_reference(sc);
    let mut notes = Vec::new();
    let mut workloads = if sc == Scenario::Bridge { Workload::BUILTIN.to_vec() } else { Workload::TCP.to_vec() };
    if s.iperf3 {
        if have_iperf3() {
            workloads.push(Workload::Iperf3);
        } else {
            let note = "iperf3 is not installed; skipping the iperf3 cross-check".to_string();
            eprintln!("tapnet bench: {note}");
            notes.push(note);
        }
    }
    if let Some(why) = &no_kernel {
        eprintln!("tapnet bench: {}: no kernel reference: {why}", sc.name());
    }
    let default_max = EngineConfig::default().conntrack_max;
    let nat = matches!(sc, Scenario::Dnat | Scenario::Snat);
    let conntrack_max = if nat { kernel_conntrack_max() } else { None };
    if let Some(m) = conntrack_max {
        notes.push(format!(
            "tapnet's conntrack bound is the kernel's nf_conntrack_max here, {m} (the daemon's default is {default_max})"
        ));
    }

    // Everything is built before anything runs, so a broken build costs no
    // time; the guards live until the end of this function, whatever
    // happens.
    let max = conntrack_max.unwrap_or(default_max);
    let mut sides: Vec<Side> = Vec::new();
    if no_kernel.is_none() {
        let built = build(sc, Datapath::Kernel, None, s, prefix, max);
        sides.push(Side { dp: Datapath::Kernel, variant: None, label: format!("{}/kernel", sc.name()), built });
    }
    for (i, v) in vars.iter().enumerate() {
        let built = if stop.load(Ordering::Relaxed) {
            Err("interrupted".into())
        } else {
            build(sc, Datapath::Tapnet, Some(*v), s, prefix, max)
        };
        sides.push(Side { dp: Datapath::Tapnet, variant: Some(i), label: format!("{}/tapnet", v.name), built });
    }
    p.total += workloads.len() * sides.len() * s.repeat;

    // Per workload, the median of each side's runs.
    let mut measured: Vec<(Workload, Vec<Option<Measurement>>)> = Vec::new();
    let mut failures: Vec<(Option<usize>, Failure)> = Vec::new();
    for &w in &workloads {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut runs: Vec<Vec<Measurement>> = sides.iter().map(|_| Vec::new()).collect();
        'repeat: for _ in 0..s.repeat {
            for (i, side) in sides.iter().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    // Keep what was measured: its figures are still shown.
                    break 'repeat;
                }
                p.start(&format!("{} {}", side.label, w.name()));
                let bulk1 = measured
                    .iter()
                    .find(|x| x.0 == Workload::Bulk1)
                    .and_then(|x| x.1[i].as_ref())
                    .and_then(|m| m.get("gbit_per_s"));
                let out = match &side.built {
                    Ok(b) => {
                        let before = b.stats();
                        let load = load_average();
                        run_workload(w, side.dp, b.pair(), s, bulk1).map(|mut m| {
                            if let Some(o) = m.detail.as_object_mut() {
                                if let (Some(b0), Some(b1)) = (&before, b.stats()) {
                                    o.insert("tapnet_stats".into(), stats_delta(b0, &b1));
                                }
                                if let Some(l) = load {
                                    o.insert("loadavg_1m".into(), l[0].into());
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
                        let f = Failure { workload: w.name().into(), datapath: side.dp, error: e };
                        failures.push((side.variant, f));
                    }
                }
            }
        }
        measured.push((w, runs.into_iter().map(Measurement::median).collect()));
    }

    let kernel_side = sides.iter().position(|x| x.dp == Datapath::Kernel);
    let detail_of = |i: Option<usize>| -> serde_json::Map<String, serde_json::Value> {
        let mut d = serde_json::Map::new();
        if let Some(i) = i {
            for (w, meds) in &measured {
                if let Some(m) = &meds[i] {
                    d.insert(w.name().into(), m.detail.clone());
                }
            }
        }
        d
    };
    let mut results = Vec::new();
    for (vi, v) in vars.iter().enumerate() {
        let side = sides.iter().position(|x| x.variant == Some(vi));
        let mut res = ScenarioResult {
            scenario: v.name.into(),
            mode: v.mode.map(str::to_string),
            no_kernel_reference: no_kernel.clone(),
            rows: Vec::new(),
            // The kernel's failures are reported once, with the first variant.
            failures: failures
                .iter()
                .filter(|(x, _)| *x == Some(vi) || (x.is_none() && vi == 0))
                .map(|(_, f)| f.clone())
                .collect(),
            detail: serde_json::Map::new(),
            notes: notes.clone(),
        };
        for (w, meds) in &measured {
            let k = kernel_side.and_then(|i| meds[i].as_ref());
            let t = side.and_then(|i| meds[i].as_ref());
            res.rows.extend(rows_for(*w, k, t));
        }
        if no_kernel.is_none() {
            res.detail.insert("kernel".into(), detail_of(kernel_side).into());
        }
        res.detail.insert("tapnet".into(), detail_of(side).into());
        if let Some(Ok(t)) = side.map(|i| &sides[i].built) {
            let n = t.workers().unwrap_or(s.workers);
            if matches!(sc, Scenario::Vxlan | Scenario::Gre) {
                res.notes.push(format!(
                    "tapnet: an engine with {n} worker(s) in each of the two host namespaces, which share this machine's cores"
                ));
            } else if n != s.workers {
                res.notes.push(format!("tapnet ran {n} workers"));
            }
        }
        if sc == Scenario::Vxlan {
            res.notes.push(if v.udp_csum {
                "tapnet sends checksummed VXLAN datagrams with UDP GSO and receives them with UDP GRO \
                 (--udp-csum true); kernel: the same run as vxlan's"
                    .into()
            } else {
                "tapnet sends VXLAN with zero UDP checksums (RFC 7348 §5, the default), one datagram per \
                 segment; kernel: a vxlan device (also zero checksums) and a Linux bridge per host"
                    .into()
            });
        }
        results.push(res);
    }
    eprintln!("tearing down {} ...", sc.name());
    // tapnet's first, then the kernel's, as built in reverse.
    while let Some(side) = sides.pop() {
        drop(side);
    }
    results
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`).
pub(super) fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
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
    let load_start = load_average();
    for &sc in &s.scenarios {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        scenarios.extend(run_scenario(sc, s, &prefix, stop, &mut p));
    }
    Report {
        machine: machine(s.workers),
        settings: s.clone(),
        interrupted: stop.load(Ordering::Relaxed),
        load: Load { start: load_start, end: load_average() },
        scenarios,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::args::{BenchArgs, Tool};
    use crate::harness::chart::svg;
    use crate::harness::report::{table, Row};

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
        let result = |name: &str, rows: Vec<Row>, no_kernel: Option<&str>| ScenarioResult {
            scenario: name.into(),
            mode: None,
            no_kernel_reference: no_kernel.map(str::to_string),
            rows,
            failures: Vec::new(),
            detail: serde_json::Map::new(),
            notes: Vec::new(),
        };
        let gre = rows_for(Workload::Bulk1, None, Some(&t));
        assert_eq!(gre[0].ratio, None);
        let r = Report {
            machine: machine(1),
            settings: s,
            interrupted: false,
            load: Load { start: Some([0.5, 1.0, 1.5]), end: None },
            scenarios: vec![result("bridge", rows, None), result("gre", gre, Some("no GRE here"))],
        };
        let text = table(&r);
        assert!(text.contains("tcp_bulk_1"), "{text}");
        assert!(text.contains("load average: 0.50 1.00 1.50 at the start, ? at the end"), "{text}");
        assert!(text.contains("gre        no kernel reference: no GRE here"), "{text}");
        let line = text.lines().find(|l| l.starts_with("gre ") && l.contains("Gbit/s")).unwrap();
        assert_eq!(line.split_whitespace().collect::<Vec<_>>(), ["gre", "tcp_bulk_1", "Gbit/s", "-", "5.00", "-"]);
        let svg = svg(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("kernel = 1.0"));
        // The background and the bridge's two ratios; none for gre.
        assert_eq!(svg.matches("<rect").count(), 1 + 2);
        assert!(svg.contains("no kernel reference, so no ratio: gre"));
    }
}
