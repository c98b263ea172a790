//! `tapnet demo`: the main job on a default topology, in one command.
//!
//! It starts a dataplane in this process, creates one network and two
//! containers on it, pings from one to the other, moves TCP bulk traffic
//! between them with the built-in generator (every byte verified), measures
//! request/response latency, prints the figures and the dataplane's
//! counters, and tears everything down — also when interrupted.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::traffic::{self, Endpoint};
use control::api::{ContainerSpec, NetworkSpec};
use control::engine::{Engine, EngineConfig};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Seconds of TCP bulk traffic (and of request/response).
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Parallel TCP streams for the bulk transfer.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Subnet of the demo network.
    #[arg(long, default_value = "10.213.0.0/24")]
    pub subnet: String,
}

#[derive(Debug, Serialize)]
struct DemoReport {
    network: String,
    subnet: String,
    workers: usize,
    client: String,
    server: String,
    ping: traffic::PingReport,
    bulk: traffic::BulkReport,
    rr: traffic::RrReport,
    stats: control::api::StatsInfo,
}

/// Delete the demo's namespaces if the process is interrupted (its TAP
/// devices vanish with the process on their own).
fn cleanup_on_signal(names: Vec<String>) {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM]) else { return };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            for n in &names {
                let _ = control::netns::delete(n);
            }
            eprintln!("tapnet demo: interrupted, namespaces removed");
            std::process::exit(128 + sig);
        }
    });
}

pub fn run(a: &DemoArgs, json: bool) -> Result<(), String> {
    if a.duration == 0 || a.duration > 3600 {
        return Err(format!("invalid --duration {}: must be between 1 and 3600 seconds", a.duration));
    }
    if a.streams == 0 || a.streams > 64 {
        return Err(format!("invalid --streams {}: must be between 1 and 64", a.streams));
    }
    let mut cfg = EngineConfig::default();
    if let Some(w) = a.workers {
        if w == 0 || w > 64 {
            return Err(format!("invalid --workers {w}: must be between 1 and 64"));
        }
        cfg.workers = w;
    }
    let pid = std::process::id();
    let (ca, cb) = (format!("tnd{pid}a"), format!("tnd{pid}b"));
    cleanup_on_signal(vec![ca.clone(), cb.clone()]);
    let say = |s: String| {
        if !json {
            println!("{s}")
        }
    };

    let mut engine = Engine::new(cfg).map_err(|e| e.to_string())?;
    let result = (|| -> Result<DemoReport, String> {
        let net = engine
            .network_create(&NetworkSpec { name: "demo".into(), subnet: a.subnet.clone(), ..NetworkSpec::default() })
            .map_err(|e| e.to_string())?;
        let spec = |name: &str| ContainerSpec { name: name.into(), network: "demo".into(), ..ContainerSpec::default() };
        let a_info = engine.container_create(&spec(&ca)).map_err(|e| e.to_string())?;
        let b_info = engine.container_create(&spec(&cb)).map_err(|e| e.to_string())?;
        let addr = |c: &control::api::ContainerInfo| -> Ipv4Addr {
            c.networks[0].ipv4_address.split('/').next().and_then(|s| s.parse().ok()).unwrap_or(Ipv4Addr::UNSPECIFIED)
        };
        let (ip_a, ip_b) = (addr(&a_info), addr(&b_info));
        let (ns_a, ns_b) = (PathBuf::from(&a_info.sandbox_key), PathBuf::from(&b_info.sandbox_key));
        say(format!(
            "tapnet demo: network demo {} (gateway {}), {} at {ip_a}, {} at {ip_b}, {} workers",
            net.subnet,
            net.gateway,
            ca,
            cb,
            engine.workers()
        ));

        let ping = traffic::ping(Some(&ns_a), ip_b, 5, Duration::from_secs(1)).map_err(|e| format!("ping: {e}"))?;
        let rtt = |f: fn(f64, f64) -> f64| ping.rtt_us.iter().copied().reduce(f).unwrap_or(0.0);
        say(format!(
            "ping    {ca} -> {cb}: {}/{} replies, rtt min {:.0} us, max {:.0} us",
            ping.received,
            ping.sent,
            rtt(f64::min),
            rtt(f64::max)
        ));
        if ping.received == 0 {
            return Err(format!("ping: no reply from {ip_b}"));
        }

        let server = Endpoint::new(Some(&ns_b), ip_b);
        let client = Endpoint::new(Some(&ns_a), ip_a);
        let secs = Duration::from_secs(a.duration);
        let bulk = traffic::tcp_bulk(server, client, 5201, a.streams, None, secs, true)
            .map_err(|e| format!("tcp bulk: {e}"))?;
        say(format!(
            "tcp     {} stream(s), {} s: {:.2} Gbit/s, {:.2} GB received, every byte verified",
            bulk.streams,
            a.duration,
            bulk.gbit_per_s,
            bulk.bytes as f64 / 1e9
        ));
        let rr = traffic::tcp_rr(server, client, 5202, 1, secs.min(Duration::from_secs(3)))
            .map_err(|e| format!("tcp rr: {e}"))?;
        say(format!(
            "rr      1-byte request/response: {:.0} transactions/s, p50 {:.1} us, p99 {:.1} us",
            rr.per_second, rr.p50_us, rr.p99_us
        ));
        let stats = engine.stats();
        for p in &stats.ports {
            say(format!(
                "port    {:<14} rx {:>9} pkts {:>14} bytes   tx {:>9} pkts {:>14} bytes",
                p.name, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes
            ));
        }
        let drops: Vec<String> = stats.drops.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k}={v}")).collect();
        say(format!("drops   {}", if drops.is_empty() { "none".to_string() } else { drops.join(" ") }));
        Ok(DemoReport {
            network: "demo".into(),
            subnet: net.subnet,
            workers: engine.workers(),
            client: ca.clone(),
            server: cb.clone(),
            ping,
            bulk,
            rr,
            stats,
        })
    })();
    let errors = engine.shutdown();
    say(format!(
        "teardown: removed {ca}, {cb} and network demo{}",
        if errors.is_empty() { "" } else { " (with errors)" }
    ));
    for e in &errors {
        eprintln!("tapnet demo: teardown: {e}");
    }
    let report = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    }
    Ok(())
}
