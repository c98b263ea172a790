//! `tapnet bench`: the same workloads through the kernel's datapath (what
//! docker0 uses) and through tapnet's, side by side, on this machine.
//!
//! For every scenario both datapaths are built in fresh namespaces with the
//! same addresses and MTU, the built-in generator ([`crate::traffic`]) runs
//! each workload from container A (client) to container B (server) through
//! one and then the other, and both are torn down afterwards, also on an
//! error or Ctrl-C: the topologies are Drop guards that delete their
//! namespaces (with their `/etc/netns/NAME` files), and every namespace is
//! registered so that a second signal can delete them all before it exits,
//! once the build or teardown step under way (if any) has ended.
//!
//! * bridge: kernel = a "host" namespace with a Linux bridge and one veth
//!   pair into each container (docker0's datapath, minus its iptables
//!   rules), all made through [`control::netlink`]; tapnet = an in-process
//!   [`control::engine::Engine`] (its workers are threads of this process) with one network
//!   and two containers.
//! * dnat, snat: kernel = docker0's setup (the bridge, ip_forward, and
//!   Docker's iptables rules with MASQUERADE and a published port's DNAT)
//!   in a "host" namespace with one container and an uplink veth to an
//!   "outside" namespace; tapnet = an in-process engine run from a host
//!   namespace of its own, whose uplink is the same kind of veth, with the
//!   same published port (see `nat.rs`). snat: the container is the client
//!   and the server is outside; dnat: the other way round, through the
//!   published port. TCP workloads only.
//! * vxlan, gre: two "host" namespaces joined by a veth underlay, one
//!   container on each, and an overlay network between them; the client
//!   is on host A, the server on host B (see `overlay.rs`). kernel = per
//!   host a vxlan device (VNI 42, port 4789) in a Linux bridge with a veth
//!   to the container; tapnet = an in-process engine per host namespace
//!   with one `--driver vxlan` (or `gre`) network. VXLAN is reported twice,
//!   against the same kernel figures: `vxlan` (tapnet's default, zero UDP
//!   checksums) and `vxlan-csum` (`udp_csum`: checksummed datagrams with
//!   UDP GSO and GRO). GRE has no kernel reference where the kernel has no
//!   GRE (as here), and is reported for tapnet alone, with the reason. TCP
//!   workloads only.
//!
//! Where things are: `args.rs` (options and their validation),
//! `topology.rs` (the bridge scenario's datapaths as Drop guards, and the
//! cleanup they share), `nat.rs` (the NAT scenarios'), `overlay.rs` (the
//! overlay scenarios'), `workload.rs` (what each
//! workload measures, and running one), `cpu.rs` (CPU accounting),
//! `scenario.rs` (running a scenario through both datapaths), `report.rs`
//! (results and the table), `chart.rs` (SVG and PNG chart); this file is
//! the command itself: signals, and writing the outputs.
//!
//! CPU per Gbit for the bulk workloads is measured on the same basis for
//! both datapaths: the CPU time of the whole machine (user, nice, system,
//! irq and softirq from `/proc/stat`) over the run, divided by the Gbit
//! moved. It includes both TCP stacks and the generator, which are the same
//! for both, and anything else running on the machine, so only ratios from
//! one run mean anything. tapnet's own worker threads (`tapnet-w*`) are
//! shown on a separate line. The JSON keeps every figure: `machine_cpu_s`,
//! its kernel share `sys_cpu_s`, and tapnet's `worker_cpu_s`. Since the
//! machine may be shared, the report holds its load average at the start
//! and the end of the run, and each run's detail the 1-minute figure when
//! it started (`loadavg_1m`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod args;
mod chart;
mod cpu;
mod nat;
mod overlay;
mod report;
mod scenario;
mod topology;
mod workload;

use chart::svg_to_png;
use topology::delete_all_registered;

pub use args::{BenchArgs, Scenario, Settings, Tool};
pub use chart::svg;
pub use cpu::{worker_cpu_s, MachineCpu};
pub use nat::{docker_rules, Direction, KernelNat, NatAddressing, TapnetNat};
pub use overlay::{kernel_gretap, KernelOverlay, OverlayAddressing, TapnetOverlay};
pub use report::{table, Failure, Load, Machine, Report, Row, ScenarioResult};
pub use scenario::bench;
pub use topology::{Addressing, BenchError, KernelBridge, Pair, TapnetBridge, IPERF3_PORT};
pub use workload::Datapath;

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
                    // A build or teardown step under way ends first, and
                    // none starts after: the lock is kept until the exit.
                    let _held = delete_all_registered(std::time::Duration::from_secs(20));
                    std::process::exit(128 + sig);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(handle)
}
