//! `tapnet bench`: the same workloads through the kernel's datapath (what
//! docker0 uses) and through tapnet's, side by side, on this machine.
//!
//! For every scenario both datapaths are built in fresh namespaces with the
//! same addresses and MTU, the built-in generator ([`crate::traffic`]) runs
//! each workload from container A (client) to container B (server) through
//! one and then the other, and both are torn down afterwards, also on an
//! error or Ctrl-C: the topologies are Drop guards that delete their
//! namespaces, and every namespace is registered so that a second signal can
//! delete them all before it exits.
//!
//! * bridge: kernel = a "host" namespace with a Linux bridge and one veth
//!   pair into each container (docker0's datapath, minus its iptables
//!   rules), all made through [`control::netlink`]; tapnet = an in-process
//!   [`Engine`] (its workers are threads of this process) with one network
//!   and two containers.
//! * dnat, snat, vxlan, gre: tapnet has no NAT gateway or overlay yet, so
//!   these are reported as not available and nothing is built for them.
//!
//! CPU per Gbit for the bulk workloads: for tapnet, user+system time of the
//! dataplane's worker threads (`tapnet-w*`) of this process; for the kernel,
//! system+irq+softirq time of the whole machine from `/proc/stat`. The
//! kernel figure is approximate: it includes every other task's kernel work
//! and the TCP stacks of both ends, which tapnet's figure does not; both are
//! kept in the JSON (`sys_cpu_s`) so like can be compared with like.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::traffic::{self, Endpoint, TrafficError};
use control::engine::{Engine, EngineConfig, EngineError};
use control::ipam::mac_for;
use control::netlink::{Netlink, NetlinkError};
use control::netns::{self, NetnsError};
use control::sandbox::{self, SandboxError};

/// Errors from building a benchmark topology.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A netlink step of the kernel reference failed.
    #[error("{step}: {source}")]
    Netlink { step: &'static str, source: NetlinkError },
    /// The namespace prefix leaves no room for the role suffix.
    #[error("namespace prefix {0:?} is too long (at most 13 bytes)")]
    Prefix(String),
}

type Result<T> = std::result::Result<T, BenchError>;

fn nl(step: &'static str) -> impl FnOnce(NetlinkError) -> BenchError {
    move |source| BenchError::Netlink { step, source }
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// Scenarios of `--scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Bridge,
    Dnat,
    Snat,
    Vxlan,
    Gre,
    All,
}

impl Scenario {
    const EACH: [Scenario; 5] = [Scenario::Bridge, Scenario::Dnat, Scenario::Snat, Scenario::Vxlan, Scenario::Gre];

    fn name(self) -> &'static str {
        match self {
            Scenario::Bridge => "bridge",
            Scenario::Dnat => "dnat",
            Scenario::Snat => "snat",
            Scenario::Vxlan => "vxlan",
            Scenario::Gre => "gre",
            Scenario::All => "all",
        }
    }

    /// Why tapnet cannot run this scenario yet, if it cannot.
    fn unavailable(self) -> Option<&'static str> {
        match self {
            Scenario::Bridge | Scenario::All => None,
            _ => Some("feature not implemented yet (tapnet NAT/overlay pending)"),
        }
    }
}

/// External tools for cross-checking the built-in generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tool {
    /// Only the built-in generator.
    Builtin,
    /// Also `iperf3 -c`, 1 stream, through both datapaths.
    Iperf3,
}

/// `tapnet bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Which datapath to compare.
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// Seconds per workload.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Streams of the multi-stream TCP bulk workload.
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// tapnet worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Offered rate of the fixed-rate UDP workload, in packets per second.
    #[arg(long, default_value_t = 50_000)]
    pub udp_rate: u64,
    /// Also write the results as JSON to FILE.
    // Same id as the global `--json` flag, so clap does not add that flag
    // here (two `--json` would clash); see `Cli::json` in cli.rs.
    #[arg(id = "json", long = "json", value_name = "FILE")]
    pub json: Option<String>,
    /// Write a bar chart of tapnet/kernel ratios (FILE.svg or FILE.png).
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    pub plot: Option<PathBuf>,
    /// Cross-check the built-in generator with an external tool.
    #[arg(long, value_enum, default_value = "builtin")]
    pub tool: Tool,
    /// Do not pin tapnet's workers to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Measure every workload this many times, alternating the datapaths,
    /// and report the median of each figure (the machine's noise shrinks).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// tapnet workers poll without sleeping for this long after traffic
    /// (as `tapnet daemon --busy-poll-us`).
    #[arg(long, default_value_t = control::engine::DEFAULT_BUSY_POLL_US)]
    pub busy_poll_us: u32,
}

/// Validated settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub scenarios: Vec<Scenario>,
    pub duration_s: u64,
    pub streams: usize,
    pub workers: usize,
    pub udp_rate_pps: u64,
    pub pin: bool,
    pub busy_poll_us: u32,
    pub repeat: usize,
    #[serde(skip)]
    pub json: Option<PathBuf>,
    #[serde(skip)]
    pub plot: Option<PathBuf>,
    pub iperf3: bool,
}

impl BenchArgs {
    /// Check everything before anything is built; errors are one line.
    pub fn validate(&self) -> std::result::Result<Settings, String> {
        if self.duration == 0 || self.duration > 3600 {
            return Err(format!("invalid --duration {}: must be between 1 and 3600 seconds", self.duration));
        }
        if self.streams == 0 || self.streams > 1024 {
            return Err(format!("invalid --streams {}: must be between 1 and 1024", self.streams));
        }
        let workers = self.workers.unwrap_or_else(|| EngineConfig::default().workers);
        if workers == 0 || workers > 64 {
            return Err(format!("invalid --workers {workers}: must be between 1 and 64"));
        }
        if self.repeat == 0 || self.repeat > 100 {
            return Err(format!("invalid --repeat {}: must be between 1 and 100", self.repeat));
        }
        if self.udp_rate == 0 || self.udp_rate > 100_000_000 {
            return Err(format!("invalid --udp-rate {}: must be between 1 and 100000000", self.udp_rate));
        }
        if let Some(p) = &self.plot {
            match p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
                Some("svg") | Some("png") => {}
                _ => return Err(format!("invalid --plot {}: the file name must end in .svg or .png", p.display())),
            }
        }
        let json = self.json.as_ref().map(PathBuf::from);
        for f in json.iter().chain(self.plot.iter()) {
            if let Some(dir) = f.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(format!("cannot write {}: no such directory {}", f.display(), dir.display()));
                }
            }
        }
        let scenarios = match self.scenario {
            Scenario::All => Scenario::EACH.to_vec(),
            s => vec![s],
        };
        Ok(Settings {
            scenarios,
            duration_s: self.duration,
            streams: self.streams,
            workers,
            udp_rate_pps: self.udp_rate,
            pin: !self.no_pin,
            busy_poll_us: self.busy_poll_us,
            repeat: self.repeat,
            json,
            plot: self.plot.clone(),
            iperf3: self.tool == Tool::Iperf3,
        })
    }
}

// ---------------------------------------------------------------------------
// Namespaces: registry for the emergency exit
// ---------------------------------------------------------------------------

/// Every namespace the bench may have made and not yet deleted.
static NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn register(name: &str) {
    NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()).push(name.to_string());
}

/// Delete `names` (those that exist) and forget them.
fn delete_namespaces(names: &[String]) {
    for n in names.iter().rev() {
        if netns::exists(n) {
            if let Err(e) = netns::delete(n) {
                eprintln!("tapnet bench: cleanup: {e}");
            }
        }
    }
    NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| !names.contains(n));
}

/// Delete every registered namespace (the second Ctrl-C).
fn delete_all_registered() {
    let names = NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    delete_namespaces(&names);
}

// ---------------------------------------------------------------------------
// Topologies
// ---------------------------------------------------------------------------

/// Addresses and MTU shared by both datapaths of a scenario.
#[derive(Debug, Clone, Copy)]
pub struct Addressing {
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub a: Ipv4Addr,
    pub b: Ipv4Addr,
    pub mtu: u32,
}

impl Default for Addressing {
    fn default() -> Self {
        Addressing {
            subnet: Ipv4Addr::new(10, 213, 0, 0),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 213, 0, 1),
            a: Ipv4Addr::new(10, 213, 0, 2),
            b: Ipv4Addr::new(10, 213, 0, 3),
            mtu: 1500,
        }
    }
}

/// The two containers of a topology: A is the client, B the server.
#[derive(Debug, Clone)]
pub struct Pair {
    pub a_name: String,
    pub a_ns: PathBuf,
    pub b_name: String,
    pub b_ns: PathBuf,
    pub addr: Addressing,
}

impl Pair {
    pub fn client(&self) -> Endpoint<'_> {
        Endpoint::new(Some(&self.a_ns), self.addr.a)
    }
    pub fn server(&self) -> Endpoint<'_> {
        Endpoint::new(Some(&self.b_ns), self.addr.b)
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.len() > 13 {
        return Err(BenchError::Prefix(prefix.to_string()));
    }
    Ok(())
}

/// The kernel reference for the bridge scenario, docker0's datapath: a
/// "host" namespace `{prefix}h` holding bridge `br0` (with the gateway
/// address) and one veth pair into each of `{prefix}a` and `{prefix}b`,
/// whose end is `eth0` there. Dropping it deletes the three namespaces, and
/// every interface goes with them.
pub struct KernelBridge {
    pub host: PathBuf,
    pub pair: Pair,
    names: Vec<String>,
}

impl KernelBridge {
    pub fn build(prefix: &str, addr: Addressing) -> Result<KernelBridge> {
        check_prefix(prefix)?;
        let (h, a, b) = (format!("{prefix}h"), format!("{prefix}a"), format!("{prefix}b"));
        let mut kb = KernelBridge {
            host: netns::path(&h),
            pair: Pair { a_name: a.clone(), a_ns: netns::path(&a), b_name: b.clone(), b_ns: netns::path(&b), addr },
            names: Vec::new(),
        };
        // Each namespace is recorded before it is made, so that a failure
        // from here on (Drop) or a second Ctrl-C removes what exists.
        for n in [&h, &a, &b] {
            register(n);
            kb.names.push(n.clone());
            sandbox::create(n)?;
        }
        let ends = [(&kb.pair.a_ns, addr.a, "vetha", "cetha"), (&kb.pair.b_ns, addr.b, "vethb", "cethb")];
        netns::run_in(&kb.host, || -> Result<()> {
            let mut n = Netlink::open().map_err(nl("open netlink in host namespace"))?;
            n.link_add_bridge("br0").map_err(nl("add bridge"))?;
            let br = n.link_index("br0").map_err(nl("find bridge"))?;
            n.link_set_mtu(br, addr.mtu).map_err(nl("set bridge MTU"))?;
            n.addr_add_v4(br, addr.gateway, addr.prefix).map_err(nl("add bridge address"))?;
            n.link_set_up(br, true).map_err(nl("set bridge up"))?;
            for (ns, ip, host_end, peer) in ends {
                n.link_add_veth(host_end, peer).map_err(nl("add veth"))?;
                let hi = n.link_index(host_end).map_err(nl("find veth"))?;
                let pi = n.link_index(peer).map_err(nl("find veth peer"))?;
                n.link_set_mtu(hi, addr.mtu).map_err(nl("set veth MTU"))?;
                n.link_set_mtu(pi, addr.mtu).map_err(nl("set veth MTU"))?;
                n.link_set_mac(pi, mac_for(ip).octets()).map_err(nl("set veth MAC"))?;
                n.link_set_master(hi, Some(br)).map_err(nl("enslave veth"))?;
                n.link_set_up(hi, true).map_err(nl("set veth up"))?;
                let fd = netns::open(ns)?;
                n.link_move_to_netns(pi, fd.as_fd(), Some("eth0")).map_err(nl("move veth into container"))?;
            }
            Ok(())
        })??;
        for (ns, ip) in [(&kb.pair.a_ns, addr.a), (&kb.pair.b_ns, addr.b)] {
            netns::run_in(ns, || -> Result<()> {
                let mut n = Netlink::open().map_err(nl("open netlink in container"))?;
                let i = n.link_index("eth0").map_err(nl("find eth0"))?;
                n.addr_add_v4(i, ip, addr.prefix).map_err(nl("add address"))?;
                n.link_set_up(i, true).map_err(nl("set eth0 up"))?;
                n.route_add_v4(Ipv4Addr::UNSPECIFIED, 0, Some(addr.gateway), Some(i)).map_err(nl("add default route"))
            })??;
        }
        Ok(kb)
    }

    /// Namespace names, host first.
    pub fn namespaces(&self) -> &[String] {
        &self.names
    }
}

impl Drop for KernelBridge {
    fn drop(&mut self) {
        delete_namespaces(&self.names);
    }
}

/// tapnet's bridge scenario: an in-process [`Engine`] with network `bench`
/// and containers `{prefix}a` and `{prefix}b`. Dropping it shuts the engine
/// down (which removes the containers, their namespaces and TAPs) and then
/// deletes any namespace still left.
pub struct TapnetBridge {
    pub pair: Pair,
    engine: Option<Engine>,
    names: Vec<String>,
}

impl TapnetBridge {
    pub fn build(prefix: &str, addr: Addressing, workers: usize, pin: bool, busy_poll_us: u32) -> Result<TapnetBridge> {
        check_prefix(prefix)?;
        let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
        let cfg = EngineConfig { workers, pin, busy_poll_us, ..EngineConfig::default() };
        let mut tb = TapnetBridge {
            pair: Pair { a_name: a.clone(), a_ns: netns::path(&a), b_name: b.clone(), b_ns: netns::path(&b), addr },
            engine: Some(Engine::new(cfg)?),
            names: vec![a.clone(), b.clone()],
        };
        register(&a);
        register(&b);
        let e = tb.engine.as_mut().expect("just set");
        let subnet = format!("{}/{}", addr.subnet, addr.prefix);
        e.network_create("bench", &subnet, Some(&addr.gateway.to_string()), Some(addr.mtu), None, None)?;
        let ca = e.container_create(&a, "bench", Some(&addr.a.to_string()), None)?;
        let cb = e.container_create(&b, "bench", Some(&addr.b.to_string()), None)?;
        tb.pair.a_ns = PathBuf::from(ca.sandbox_key);
        tb.pair.b_ns = PathBuf::from(cb.sandbox_key);
        Ok(tb)
    }

    pub fn namespaces(&self) -> &[String] {
        &self.names
    }

    pub fn workers(&self) -> usize {
        self.engine.as_ref().map_or(0, Engine::workers)
    }
}

impl Drop for TapnetBridge {
    fn drop(&mut self) {
        if let Some(mut e) = self.engine.take() {
            for err in e.shutdown() {
                eprintln!("tapnet bench: cleanup: {err}");
            }
        }
        delete_namespaces(&self.names);
    }
}

// ---------------------------------------------------------------------------
// CPU accounting
// ---------------------------------------------------------------------------

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User+system seconds of this process's dataplane workers (`tapnet-w*`).
pub fn worker_cpu_s() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let mut ticks = 0u64;
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("tapnet-w") {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            ticks += get(11) + get(12);
        }
    }
    ticks as f64 / clock_ticks()
}

/// Machine-wide system+irq+softirq seconds, summed over all CPUs.
pub fn kernel_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    // cpu user nice system idle iowait irq softirq steal …
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    (get(2) + get(5) + get(6)) as f64 / clock_ticks()
}

// ---------------------------------------------------------------------------
// Workloads and results
// ---------------------------------------------------------------------------

/// The two datapaths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Datapath {
    Kernel,
    Tapnet,
}

impl Datapath {
    fn name(self) -> &'static str {
        match self {
            Datapath::Kernel => "kernel",
            Datapath::Tapnet => "tapnet",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Bulk1,
    BulkN,
    UdpFixed,
    UdpMax,
    Rr,
    Crr,
    Iperf3,
}

impl Workload {
    const BUILTIN: [Workload; 6] =
        [Workload::Bulk1, Workload::BulkN, Workload::UdpFixed, Workload::UdpMax, Workload::Rr, Workload::Crr];

    fn name(self) -> &'static str {
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
    fn metrics(self) -> &'static [Metric] {
        use Better::*;
        const BULK: &[Metric] = &[
            Metric { key: "gbit_per_s", label: "Gbit/s", better: Higher },
            Metric { key: "cpu_s_per_gbit", label: "cpu s/Gbit", better: Lower },
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
enum Better {
    Higher,
    Lower,
    /// A figure shown for context, with no ratio (offered load, loss).
    NoRatio,
}

#[derive(Debug, Clone, Copy)]
struct Metric {
    key: &'static str,
    label: &'static str,
    better: Better,
}

/// What one workload measured on one datapath.
#[derive(Debug, Clone, Default)]
struct Measurement {
    values: Vec<(&'static str, f64)>,
    detail: serde_json::Value,
}

impl Measurement {
    fn get(&self, key: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The median of each value over repeated runs (the upper median for an
    /// even count); the detail of every run is kept.
    fn median(runs: Vec<Measurement>) -> Option<Measurement> {
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

/// Everything measured in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario: String,
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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

/// The whole report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub interrupted: bool,
    pub scenarios: Vec<ScenarioResult>,
}

/// Runs one workload on one datapath.
fn run_workload(
    w: Workload,
    dp: Datapath,
    pair: &Pair,
    s: &Settings,
    bulk1: Option<f64>,
) -> std::result::Result<Measurement, String> {
    let d = Duration::from_secs(s.duration_s);
    let (server, client) = (pair.server(), pair.client());
    let te = |e: TrafficError| e.to_string();
    let mut m = Measurement::default();
    match w {
        Workload::Bulk1 | Workload::BulkN => {
            let streams = if w == Workload::Bulk1 { 1 } else { s.streams };
            let (w0, k0) = (worker_cpu_s(), kernel_cpu_s());
            let r = traffic::tcp_bulk(server, client, 0, streams, None, d, false).map_err(te)?;
            let (dw, dk) = (worker_cpu_s() - w0, kernel_cpu_s() - k0);
            let gbits = r.bytes as f64 * 8.0 / 1e9;
            let cpu = if dp == Datapath::Tapnet { dw } else { dk };
            m.values.push(("gbit_per_s", r.gbit_per_s));
            if gbits > 0.0 && cpu > 0.0 {
                m.values.push(("cpu_s_per_gbit", cpu / gbits));
            }
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("per_stream_bytes");
                o.insert("sys_cpu_s".into(), dk.into());
                if dp == Datapath::Tapnet {
                    o.insert("worker_cpu_s".into(), dw.into());
                }
            }
            m.detail = v;
        }
        Workload::UdpFixed | Workload::UdpMax => {
            let rate = (w == Workload::UdpFixed).then_some(s.udp_rate_pps);
            let r = traffic::udp_stream(server, client, 0, 64, rate, d).map_err(te)?;
            m.values.push(("offered_pps", r.offered_pps));
            m.values.push(("delivered_pps", r.delivered_pps));
            m.values.push(("loss_pct", r.loss * 100.0));
            m.detail = serde_json::to_value(&r).unwrap_or_default();
        }
        Workload::Rr => {
            let r = traffic::tcp_rr(server, client, 0, 1, d).map_err(te)?;
            m.values.push(("per_second", r.per_second));
            m.values.push(("p50_us", r.p50_us));
            m.values.push(("p99_us", r.p99_us));
            m.detail = serde_json::to_value(&r).unwrap_or_default();
        }
        Workload::Crr => {
            let r = traffic::tcp_crr(server, client, 0, d).map_err(te)?;
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
fn have_iperf3() -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join("iperf3").is_file())).unwrap_or(false)
}

/// One `iperf3 -c` stream from A to B for `secs`, via `ip netns exec`
/// (allowed here: it is only a cross-check of the built-in generator).
/// Returns the receiver's Gbit/s.
fn iperf3(pair: &Pair, secs: u64) -> std::result::Result<f64, String> {
    use std::process::{Command, Stdio};
    let port = "5201";
    let b = pair.addr.b.to_string();
    let mut server = Command::new("ip")
        .args(["netns", "exec", &pair.b_name, "iperf3", "-s", "-1", "-B", &b, "-p", port])
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
                .args(["netns", "exec", &pair.a_name, "iperf3", "-c", &b, "-p", port, "-J"])
                .args(["-B", &pair.addr.a.to_string(), "-t", &secs.to_string(), "--connect-timeout", "3000"])
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
fn rows_for(w: Workload, k: Option<&Measurement>, t: Option<&Measurement>) -> Vec<Row> {
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

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

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
    Tapnet(TapnetBridge),
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
            Datapath::Tapnet => {
                TapnetBridge::build(&format!("{prefix}t"), addr, s.workers, s.pin, s.busy_poll_us).map(Built::Tapnet)
            }
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

fn not_available(sc: Scenario) -> ScenarioResult {
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

fn machine(workers: usize) -> Machine {
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

/// `tapnet bench`. With `json_stdout` (the global `--json`), the report
/// goes to stdout as JSON instead of the table.
pub fn run(args: &BenchArgs, json_stdout: bool) -> std::result::Result<(), String> {
    let s = args.validate()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("tapnet bench needs root (it creates network namespaces and TAP devices)".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let signals = install_signals(stop.clone())?;
    let report = bench(&s, &stop);
    signals.close();

    if json_stdout {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", table(&report));
    }
    if let Some(f) = &s.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| format!("cannot encode JSON: {e}"))?;
        std::fs::write(f, text + "\n").map_err(|e| format!("cannot write {}: {e}", f.display()))?;
    }
    if let Some(f) = &s.plot {
        let chart = svg(&report);
        let bytes = if f.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
            svg_to_png(&chart).map_err(|e| format!("cannot render {}: {e}", f.display()))?
        } else {
            chart.into_bytes()
        };
        std::fs::write(f, bytes).map_err(|e| format!("cannot write {}: {e}", f.display()))?;
    }
    if report.interrupted {
        return Err("interrupted; everything built has been removed".into());
    }
    let failed: usize = report.scenarios.iter().map(|r| r.failures.len()).sum();
    if failed > 0 {
        return Err(format!("{failed} workload run(s) failed"));
    }
    Ok(())
}

/// First SIGINT/SIGTERM: raise `stop` (the current workload finishes, then
/// everything is torn down). Second: delete every namespace and exit.
fn install_signals(stop: Arc<AtomicBool>) -> std::result::Result<signal_hook::iterator::Handle, String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if !stop.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "\ntapnet bench: interrupted; finishing the current workload, then cleaning up (again to quit now)"
                    );
                } else {
                    eprintln!("\ntapnet bench: deleting the bench namespaces and quitting");
                    delete_all_registered();
                    std::process::exit(128 + sig);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(handle)
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// A number with about four significant digits.
fn fmt_num(v: f64) -> String {
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
    let _ = writeln!(
        o,
        "{:<9} {:<13} {:<16} {:>12} {:>12} {:>14}",
        "SCENARIO", "WORKLOAD", "METRIC", "KERNEL", "TAPNET", "TAPNET/KERNEL"
    );
    for sc in &r.scenarios {
        if !sc.available {
            let _ = writeln!(o, "{:<9} not available: {}", sc.scenario, sc.reason.as_deref().unwrap_or("unknown"));
            continue;
        }
        for row in &sc.rows {
            let ratio = row.ratio.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"));
            let note = if row.ratio.is_some() && row.lower_is_better { "  lower is better" } else { "" };
            let _ = writeln!(
                o,
                "{:<9} {:<13} {:<16} {:>12} {:>12} {:>14}{note}",
                sc.scenario,
                row.workload,
                row.metric,
                opt(row.kernel),
                opt(row.tapnet),
                ratio
            );
        }
        for f in &sc.failures {
            let _ = writeln!(o, "{:<9} {} failed on {}: {}", sc.scenario, f.workload, f.datapath.name(), f.error);
        }
        for n in &sc.notes {
            let _ = writeln!(o, "{:<9} note: {n}", sc.scenario);
        }
    }
    let _ = writeln!(
        o,
        "cpu s/Gbit: tapnet = its worker threads' user+system time; kernel = machine-wide system+irq+softirq time (approximate)."
    );
    if r.interrupted {
        let _ = writeln!(o, "(interrupted: later workloads were not run)");
    }
    o
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
/// Rasterise the chart (our own SVG, so both files show the same thing) at
/// twice its size, with the system's fonts for the labels.
fn svg_to_png(chart: &str) -> std::result::Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    // fontdb maps the generic "sans-serif" to Arial, which Linux rarely has.
    let installed = |name: &str| db.faces().any(|f| f.families.iter().any(|(n, _)| n == name));
    if let Some(family) = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "FreeSans"].into_iter().find(|f| installed(f))
    {
        db.set_sans_serif_family(family);
    }
    let tree = usvg::Tree::from_str(chart, &opt).map_err(|e| e.to_string())?;
    let scale = 2.0;
    let size = tree.size();
    let (w, h) = ((size.width() * scale).ceil() as u32, (size.height() * scale).ceil() as u32);
    let mut pixmap = tiny_skia::Pixmap::new(w.max(1), h.max(1)).ok_or("chart too large to rasterise")?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}

/// A horizontal bar chart of the tapnet/kernel ratios, one bar per row that
/// has a ratio, with a line at 1.0 (parity with the kernel).
pub fn svg(r: &Report) -> String {
    let bars: Vec<(String, f64, bool)> = r
        .scenarios
        .iter()
        .flat_map(|sc| {
            sc.rows.iter().filter_map(move |row| {
                row.ratio.map(|x| {
                    let lbl = format!(
                        "{} {} {}{}",
                        sc.scenario,
                        row.workload,
                        row.metric,
                        if row.lower_is_better { " (lower is better)" } else { "" }
                    );
                    (lbl, x, row.lower_is_better)
                })
            })
        })
        .collect();
    let unavailable: Vec<&str> = r.scenarios.iter().filter(|s| !s.available).map(|s| s.scenario.as_str()).collect();
    let (left, width, row_h, top) = (330.0, 540.0, 28.0, 78.0);
    let max = bars.iter().map(|b| b.1).fold(1.0f64, f64::max).min(20.0) * 1.15;
    let x_of = |v: f64| left + v.min(max) / max * width;
    let height = top + row_h * bars.len().max(1) as f64 + 70.0;
    let total_w = left + width + 90.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" viewBox="0 0 {total_w} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(o, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let m = &r.machine;
    let _ = writeln!(
        o,
        r##"<text x="16" y="24" font-size="16" font-weight="bold">tapnet vs kernel datapath: ratio tapnet/kernel</text>"##
    );
    let _ = writeln!(
        o,
        r##"<text x="16" y="44" fill="#444">{} cores, kernel {}, tapnet {}, workers: {}, {} s per workload. Green: tapnet better than the kernel; grey: within 2 %; orange: worse.</text>"##,
        m.cores,
        xml_escape(&m.kernel),
        xml_escape(&m.tapnet_version),
        m.workers,
        r.settings.duration_s
    );
    // Grid at every 0.5 (or 1.0 when the scale is wide).
    let step = if max > 6.0 { 1.0 } else { 0.5 };
    let axis_y = top + row_h * bars.len().max(1) as f64;
    let mut g = 0.0;
    while g <= max + 1e-9 {
        let x = x_of(g);
        let _ =
            writeln!(o, r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{axis_y:.1}" stroke="#e0e0e0"/>"##, top - 8.0);
        let _ = writeln!(
            o,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#444">{g:.1}</text>"##,
            axis_y + 16.0
        );
        g += step;
    }
    for (i, (label, v, lower)) in bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        // Within 2 % of the kernel is "on par": this machine's noise is larger.
        let better = if *lower { *v < 0.98 } else { *v > 1.02 };
        let worse = if *lower { *v > 1.02 } else { *v < 0.98 };
        let color = if better {
            "#4caf50"
        } else if worse {
            "#ff9800"
        } else {
            "#9e9e9e"
        };
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left - 8.0,
            y + row_h / 2.0 + 4.0,
            xml_escape(label)
        );
        let _ = writeln!(
            o,
            r##"<rect x="{left:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"##,
            y + 4.0,
            (x_of(*v) - left).max(1.0),
            row_h - 8.0
        );
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}">{v:.2}{}</text>"##,
            x_of(*v) + 4.0,
            y + row_h / 2.0 + 4.0,
            if *v > max { " (clipped)" } else { "" }
        );
    }
    if bars.is_empty() {
        let _ = writeln!(o, r##"<text x="{left}" y="{:.1}" fill="#444">no ratios measured</text>"##, top + 18.0);
    }
    let one = x_of(1.0);
    let _ = writeln!(
        o,
        r##"<line x1="{one:.1}" y1="{:.1}" x2="{one:.1}" y2="{axis_y:.1}" stroke="#d32f2f" stroke-width="2" stroke-dasharray="6,3"/>"##,
        top - 12.0
    );
    let _ = writeln!(o, r##"<text x="{:.1}" y="{:.1}" fill="#d32f2f">kernel = 1.0</text>"##, one + 4.0, top - 14.0);
    let _ = writeln!(
        o,
        r##"<text x="{left}" y="{:.1}" text-anchor="start" fill="#444">tapnet / kernel (for latency and CPU per Gbit, lower is better)</text>"##,
        axis_y + 36.0
    );
    if !unavailable.is_empty() {
        let _ = writeln!(
            o,
            r##"<text x="16" y="{:.1}" fill="#888">not available: {} (tapnet NAT/overlay pending)</text>"##,
            axis_y + 56.0,
            unavailable.join(", ")
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn prefix(tag: &str) -> String {
        format!("tnb{}{tag}", std::process::id() % 100_000)
    }

    fn gone(names: &[String]) -> bool {
        names.iter().all(|n| !Path::new(netns::NETNS_RUN_DIR).join(n).exists())
    }

    #[test]
    fn kernel_bridge_builds_pings_and_cleans_up() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let kb = KernelBridge::build(&prefix("xk"), Addressing::default()).unwrap();
        let names = kb.namespaces().to_vec();
        assert_eq!(names.len(), 3);
        let p = traffic::ping(Some(&kb.pair.a_ns), kb.pair.addr.b, 3, Duration::from_secs(1)).unwrap();
        assert_eq!(p.received, 3, "{p:?}");
        drop(kb);
        assert!(gone(&names), "left behind: {names:?}");
    }

    #[test]
    fn kernel_bridge_cleans_up_after_a_failed_build() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        // An MTU the bridge refuses fails the build half-way.
        let addr = Addressing { mtu: 10, ..Addressing::default() };
        let p = prefix("xf");
        assert!(KernelBridge::build(&p, addr).is_err());
        assert!(gone(&[format!("{p}h"), format!("{p}a"), format!("{p}b")]));
    }

    #[test]
    fn tapnet_bridge_builds_pings_and_cleans_up() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let tb = TapnetBridge::build(&prefix("xt"), Addressing::default(), 1, false, 0).unwrap();
        let names = tb.namespaces().to_vec();
        let p = traffic::ping(Some(&tb.pair.a_ns), tb.pair.addr.b, 3, Duration::from_secs(1)).unwrap();
        assert_eq!(p.received, 3, "{p:?}");
        let w0 = worker_cpu_s();
        let r =
            traffic::tcp_bulk(tb.pair.server(), tb.pair.client(), 0, 1, Some(64 << 20), Duration::from_secs(5), false)
                .unwrap();
        assert_eq!(r.bytes, 64 << 20);
        assert!(worker_cpu_s() > w0, "worker CPU time did not move");
        drop(tb);
        assert!(gone(&names), "left behind: {names:?}");
    }

    /// Interface counters of `ifname` as the calling thread's namespace
    /// sees them: (rx_packets, rx_bytes, tx_packets, tx_bytes).
    fn counters(ns: &Path, ifname: &str) -> (u64, u64, u64, u64) {
        netns::run_in(ns, || {
            // /proc/thread-self/net follows this thread's namespace.
            let text = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
            let line = text.lines().find(|l| l.trim_start().starts_with(&format!("{ifname}:"))).unwrap().to_string();
            let f: Vec<u64> = line.split(':').nth(1).unwrap().split_whitespace().map(|v| v.parse().unwrap()).collect();
            (f[1], f[0], f[9], f[8])
        })
        .unwrap()
    }

    #[test]
    fn generator_accounting_matches_interface_counters() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let kb = KernelBridge::build(&prefix("xc"), Addressing::default()).unwrap();
        let pair = kb.pair.clone();
        // Resolve ARP first so the run itself is only UDP.
        traffic::ping(Some(&pair.a_ns), pair.addr.b, 1, Duration::from_secs(1)).unwrap();
        let (_, _, tx0, txb0) = counters(&pair.a_ns, "eth0");
        let (rx0, _, _, _) = counters(&pair.b_ns, "eth0");
        let payload = 64;
        let r = traffic::udp_stream(pair.server(), pair.client(), 0, payload, Some(20_000), Duration::from_secs(1))
            .unwrap();
        let (_, _, tx1, txb1) = counters(&pair.a_ns, "eth0");
        let (rx1, _, _, _) = counters(&pair.b_ns, "eth0");
        let (dtx, dtxb, drx) = (tx1 - tx0, txb1 - txb0, rx1 - rx0);
        assert!(r.sent > 15_000, "{r:?}");
        assert_eq!(r.bytes_sent, r.sent * payload as u64);
        // Slack for a few ARP or other control frames.
        let slack = 8;
        assert!(dtx >= r.sent && dtx <= r.sent + slack, "eth0 tx_packets {dtx} vs sent {}", r.sent);
        // On the wire: payload + UDP 8 + IPv4 20 + Ethernet 14.
        let wire = r.sent * (payload as u64 + 42);
        assert!(dtxb >= wire && dtxb <= wire + slack * 100, "eth0 tx_bytes {dtxb} vs {wire}");
        assert!(drx >= r.received && drx <= r.sent + slack, "B rx_packets {drx} vs received {}", r.received);
        drop(kb);
    }

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        b: BenchArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<Settings, String> {
        let cli =
            TestCli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        cli.b.validate()
    }

    #[test]
    fn validation() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.scenarios.len(), 5);
        assert_eq!((s.duration_s, s.streams), (5, 4));
        assert!(parse(&["--scenario", "bogus"]).is_err());
        assert!(parse(&["--duration", "0"]).unwrap_err().contains("--duration"));
        assert!(parse(&["--streams", "0"]).unwrap_err().contains("--streams"));
        assert!(parse(&["--plot", "/tmp/x.png"]).is_ok());
        assert!(parse(&["--plot", "/tmp/x.gif"]).unwrap_err().contains(".svg or .png"));
        assert!(parse(&["--json", "/nonexistent-dir/x.json"]).is_err());
        let s = parse(&["--scenario", "bridge", "--json", "/tmp/x.json", "--plot", "/tmp/x.svg"]).unwrap();
        assert_eq!(s.scenarios, vec![Scenario::Bridge]);
        assert_eq!(s.json.as_deref(), Some(Path::new("/tmp/x.json")));
    }

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
