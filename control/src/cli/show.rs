//! `tapnet fdb` (a network's MAC table), `tapnet stats` (the dataplane's
//! counters) and `tapnet conntrack` (the NAT's connections): tables, or
//! the daemon's JSON with `--json`.

use std::path::Path;

use super::{call, print_json};
use crate::api::{self, Request};

/// `tapnet fdb NETWORK`, `tapnet fdb add NETWORK MAC --vtep IP`,
/// `tapnet fdb del NETWORK MAC`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct FdbArgs {
    /// The network whose MAC table to show.
    #[arg(required = true)]
    network: Option<String>,
    #[command(subcommand)]
    cmd: Option<FdbCmd>,
}

#[derive(Debug, clap::Subcommand)]
enum FdbCmd {
    /// Pin MAC to a remote VTEP of an overlay network (a static entry).
    Add {
        network: String,
        mac: String,
        /// The peer (its underlay address) the MAC is behind.
        #[arg(long, value_name = "A.B.C.D")]
        vtep: String,
    },
    /// Remove a static entry made with `fdb add`.
    Del { network: String, mac: String },
}

pub(super) fn fdb(sock: &Path, json: bool, a: FdbArgs) -> Result<(), String> {
    let req = match a.cmd {
        Some(FdbCmd::Add { network, mac, vtep }) => Request::FdbAdd { network, mac, vtep },
        Some(FdbCmd::Del { network, mac }) => Request::FdbDel { network, mac },
        None => Request::Fdb { network: a.network.unwrap_or_default() },
    };
    let (f, v): (api::FdbInfo, _) = call(sock, req)?;
    if json {
        print_json(&v);
        return Ok(());
    }
    println!("{:<19} {:>5}  {:<20} {:>8}", "MAC", "PORT", "NAME", "AGE(s)");
    for e in &f.entries {
        if e.is_static {
            println!("{:<19} {:>5}  {:<20} {:>8}", e.mac, "-", e.port_name, "static");
        } else {
            println!("{:<19} {:>5}  {:<20} {:>8.1}", e.mac, e.port, e.port_name, e.age_s);
        }
    }
    let ev: Vec<String> = f.events.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let per_port = match f.max_per_port {
        0 => "no limit".to_string(),
        n => n.to_string(),
    };
    println!(
        "{} entries (max {}, per container port {per_port}), ageing {} s; {}",
        f.entries.len(),
        f.max,
        f.ageing,
        ev.join(" ")
    );
    Ok(())
}

/// `tapnet stats`.
pub(super) fn stats(sock: &Path, json: bool) -> Result<(), String> {
    let (s, v): (api::StatsInfo, _) = call(sock, Request::Stats {})?;
    if json {
        print_json(&v);
        return Ok(());
    }
    println!(
        "{:<22} {:<12} {:>10} {:>14} {:>10} {:>14} {:>8} {:>8}",
        "PORT", "NETWORK", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES", "RX_DROP", "TX_DROP"
    );
    for p in &s.ports {
        println!(
            "{:<22} {:<12} {:>10} {:>14} {:>10} {:>14} {:>8} {:>8}",
            p.name, p.network, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes, p.rx_dropped, p.tx_dropped
        );
    }
    let d: Vec<String> = s.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("drops: {}", d.join(" "));
    for w in &s.per_worker {
        println!("worker {}: {} frames in {} wake-ups", w.worker, w.frames, w.wakeups);
    }
    for (n, ev) in &s.networks {
        let e: Vec<String> = ev.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("bridge {n}: {}", e.join(" "));
    }
    let r: Vec<String> = s.router.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("router: {}", r.join(" "));
    Ok(())
}

/// `tapnet conntrack`.
pub(super) fn conntrack(sock: &Path, json: bool) -> Result<(), String> {
    let (c, v): (api::ConntrackInfo, _) = call(sock, Request::Conntrack {})?;
    if json {
        print_json(&v);
        return Ok(());
    }
    println!(
        "{:<5} {:<9} {:<12} {:<44} {:<44} {:>9}  CONTAINER",
        "PROTO", "KIND", "STATE", "ORIGINAL", "TRANSLATED", "TIMEOUT"
    );
    for e in &c.entries {
        let state = if e.replied { e.state.clone() } else { format!("{} [UNREPLIED]", e.state) };
        println!(
            "{:<5} {:<9} {:<12} {:<44} {:<44} {:>8.0}s  {}",
            e.protocol, e.kind, state, e.original, e.translated, e.timeout_s, e.container
        );
    }
    println!("{} connections (max {})", c.entries.len(), c.max);
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub enum OverlayCmd {
    /// Probe every peer of an overlay network through the tunnel: whether
    /// frames get through both ways, the largest that does (the path MTU),
    /// whether they arrive intact. Exits 1 on any black hole.
    Check { network: String },
}

/// `tapnet overlay check NET`.
pub(super) fn overlay_check(sock: &Path, json: bool, network: String) -> Result<(), String> {
    let (r, v): (crate::engine::probe::CheckReport, _) = call(sock, Request::OverlayCheck { network })?;
    if json {
        print_json(&v);
    } else {
        println!("{:<16} {:>9} {:>9} {:>8} {:>7}  VERDICT", "PEER", "RTT(ms)", "PATH_MTU", "NET_MTU", "INTACT");
        for p in &r.peers {
            let rtt = p.rtt_ms.map_or("-".to_string(), |x| format!("{x:.2}"));
            let mtu = p.path_mtu.map_or("-".to_string(), |x| x.to_string());
            println!("{:<16} {:>9} {:>9} {:>8} {:>7}  {}", p.peer, rtt, mtu, p.network_mtu, p.intact, p.verdict);
        }
    }
    let bad: Vec<&str> = r.peers.iter().filter(|p| !p.ok()).map(|p| p.peer.as_str()).collect();
    if !bad.is_empty() {
        return Err(format!(
            "overlay {}: {} of {} peers failed the check: {}",
            r.network,
            bad.len(),
            r.peers.len(),
            bad.join(", ")
        ));
    }
    Ok(())
}
