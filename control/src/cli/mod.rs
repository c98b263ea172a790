//! The `tapnet` command line. Every command but `daemon` is a thin client
//! of the daemon's API; every command accepts `--json` (`bench` as
//! `--json FILE`). `bench` and `demo` are test tooling that the daemon does
//! not link: they run the `tapnet-bench` binary of the `bench` crate (see
//! [`external`]).
//!
//! Where things are: `network.rs` and `container.rs` (those commands and
//! their output), `show.rs` (`fdb` and `stats`), `exec.rs` (`exec`),
//! `external.rs` (handing `bench` and `demo` to `tapnet-bench`); this file
//! holds the parser, the global options and `daemon`.
//!
//! Errors are one line on stderr and a non-zero exit: 2 for a malformed
//! command line, 1 for a request the daemon refused.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;

use crate::api::{self, Request};
use crate::engine::EngineConfig;

mod container;
mod exec;
pub mod external;
mod network;
mod show;
mod up;

pub use container::ContainerCmd;
pub use network::NetworkCmd;

/// The options every `tapnet` command accepts, `tapnet-bench`'s included.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "TAPNET_SOCKET", default_value = api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print machine-readable JSON instead of tables.
    //
    // A flag, but typed as an optional string: `bench` has its own
    // `--json FILE` under the same id, and clap then leaves that subcommand
    // without the global flag (two `--json` options would clash) and copies
    // its value up here, which must therefore have the same type. `bench`
    // reads its own field; everything else only asks whether this is set.
    #[arg(long, global = true, num_args = 0, default_missing_value = "", value_name = "")]
    pub json: Option<String>,
}

#[derive(Debug, Parser)]
#[command(
    name = "tapnet",
    version,
    about = "Userspace container networking: learning bridges over TAP devices, a gateway with NAT, VXLAN/GRE overlays"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the dataplane and serve the API (owns every TAP device).
    Daemon(DaemonArgs),
    /// Manage networks (one learning bridge each).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage containers (network namespaces).
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Run a command inside a container's network namespace.
    Exec {
        name: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Show a network's MAC table; `fdb add`/`fdb del` pin a MAC to a
    /// remote VTEP of an overlay network.
    Fdb(show::FdbArgs),
    /// Show per-port counters and drops by reason.
    Stats,
    /// Show the connections the gateways' NAT tracks.
    Conntrack,
    /// Stop the daemon, removing every container and network as SIGTERM
    /// does; with --keep, leave them (namespaces, TAPs, addresses) for the
    /// next daemon on the same state directory to adopt. Returns once the
    /// daemon has stopped.
    Shutdown {
        /// Leave every container and network in place.
        #[arg(long)]
        keep: bool,
    },
    /// Overlay networks: `tapnet overlay check NET` probes every peer.
    #[command(subcommand)]
    Overlay(show::OverlayCmd),
    /// Configure this host's share of a cluster described in one file
    /// (overlay networks across hosts, and their containers).
    Up {
        /// The cluster file (TOML).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// This host's name in the file (default: the host whose underlay
        /// address the daemon's namespace holds).
        #[arg(long)]
        host: Option<String>,
    },
    /// Build a network with two containers, ping, move TCP traffic, print the figures, tear down.
    Demo(external::Args),
    /// Compare tapnet's datapath with the kernel's (docker0's) on this machine.
    Bench(external::Args),
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Where the daemon keeps its lock and its state (state.json: every
    /// network and container). A daemon started on the state directory of
    /// one that died, or stopped with --keep, adopts its containers.
    #[arg(long, default_value = api::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// On SIGTERM or SIGINT, stop but leave every container (namespace,
    /// TAP, addresses, routes) in place for the next daemon, like Docker's
    /// live-restore. Without it they are all removed.
    #[arg(long)]
    pub keep: bool,
    /// Take over, live, from the daemon running on the same --socket and
    /// --state-dir (e.g. after an upgrade): receive its TAP queue
    /// descriptors, its uplink's sockets (the uplink comes with them: no
    /// --uplink here), its tunnels' sockets, lock and API listener over
    /// the socket, start, then let it exit, leaving everything in place.
    /// Forwarding pauses for tens of ms, losing nothing; learned MACs and
    /// connection tracking are handed over too. --workers must match the
    /// running daemon's.
    #[arg(long, conflicts_with = "uplink")]
    pub takeover: bool,
    /// Default MAC table bound per network.
    #[arg(long, default_value_t = dataplane::bridge::fdb::DEFAULT_CAPACITY)]
    pub fdb_max: usize,
    /// Default MAC ageing time in seconds.
    #[arg(long, default_value_t = 300)]
    pub fdb_ageing: u64,
    /// Default limit of MACs each container may have in its network's MAC
    /// table (0: no limit). A container normally has one MAC; 64 leaves room
    /// for bridges or macvlan inside it, while a container sending from
    /// made-up MACs can no longer fill the table and make every new flow a
    /// flood.
    #[arg(long, value_name = "N", default_value_t = dataplane::bridge::fdb::DEFAULT_MAX_MACS_PER_PORT)]
    pub max_macs_per_port: u32,
    /// Do not pin workers to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// After traffic, workers keep polling without sleeping for this many
    /// microseconds (trades CPU for fewer wake-ups; 0 = always sleep).
    #[arg(long, default_value_t = crate::engine::DEFAULT_BUSY_POLL_US)]
    pub busy_poll_us: u32,
    /// Run in this named network namespace (the daemon's "host").
    #[arg(long)]
    pub netns: Option<String>,
    /// The interface the dataplane routes out of (and publishes ports on).
    #[arg(long, value_name = "IFACE", requires = "uplink_ip")]
    pub uplink: Option<String>,
    /// The uplink's IPv4 address, which the dataplane owns (A.B.C.D/LEN).
    #[arg(long, value_name = "A.B.C.D/LEN", requires = "uplink")]
    pub uplink_ip: Option<String>,
    /// Next hop for destinations off the uplink's subnet.
    #[arg(long, value_name = "IP", requires = "uplink")]
    pub uplink_gateway: Option<String>,
    /// direct: use IFACE itself (the kernel must not hold the uplink
    /// address on it); macvlan: use a macvlan child of IFACE with its own
    /// MAC, so the host keeps its own address on IFACE.
    #[arg(long, value_enum, default_value = "direct", requires = "uplink")]
    pub uplink_mode: crate::engine::UplinkMode,
    /// Source ports masqueraded connections use on the uplink address.
    #[arg(long, value_name = "LOW-HIGH", default_value = "32768-60999")]
    pub snat_ports: String,
    /// Bound on tracked connections (shared out between the workers).
    #[arg(long, default_value_t = dataplane::DEFAULT_CONNTRACK_MAX)]
    pub conntrack_max: usize,
    /// A connection timeout, in seconds: NAME=SECONDS, where NAME is
    /// tcp-syn, tcp-established, tcp-closing, tcp-time-wait, tcp-close,
    /// udp, udp-stream or icmp. Repeatable.
    #[arg(long, value_name = "NAME=SECONDS")]
    pub conntrack_timeout: Vec<String>,
}

impl DaemonArgs {
    /// The engine's settings; a one-line error for a bad value.
    fn engine_config(&self) -> Result<EngineConfig, String> {
        let workers = self.workers.unwrap_or_else(|| EngineConfig::default().workers.min(64));
        if workers == 0 || workers > 64 {
            return Err(format!("invalid --workers {workers}: must be between 1 and 64"));
        }
        let uplink = match (&self.uplink, &self.uplink_ip) {
            (Some(iface), Some(ip)) => {
                dataplane::port::check_ifname(iface).map_err(|e| format!("invalid --uplink: {e}"))?;
                let (ip, prefix) = crate::engine::parse_cidr_host(ip)?;
                let gateway = match &self.uplink_gateway {
                    None => None,
                    Some(g) => {
                        let g: std::net::Ipv4Addr =
                            g.parse().map_err(|_| format!("invalid --uplink-gateway {g:?}: not an IPv4 address"))?;
                        let s = dataplane::router::Subnet::new(ip, prefix);
                        if !s.contains(g) || g == ip {
                            return Err(format!("invalid --uplink-gateway {g}: not another address of {ip}/{prefix}"));
                        }
                        Some(g)
                    }
                };
                Some(crate::engine::UplinkOpts { iface: iface.clone(), ip, prefix, gateway, mode: self.uplink_mode })
            }
            _ => None,
        };
        let bad_range = || format!("invalid --snat-ports {:?}: expected LOW-HIGH within 1-65535", self.snat_ports);
        let (lo, hi) = self.snat_ports.split_once('-').ok_or_else(bad_range)?;
        let (lo, hi): (u16, u16) = (lo.parse().map_err(|_| bad_range())?, hi.parse().map_err(|_| bad_range())?);
        if lo == 0 || lo > hi {
            return Err(bad_range());
        }
        if self.conntrack_max == 0 || self.conntrack_max > dataplane::nat::conntrack::MAX_CAPACITY {
            return Err(format!(
                "invalid --conntrack-max {}: must be between 1 and {}",
                self.conntrack_max,
                dataplane::nat::conntrack::MAX_CAPACITY
            ));
        }
        let mut t = dataplane::nat::Timeouts::default();
        for kv in &self.conntrack_timeout {
            let bad = || format!("invalid --conntrack-timeout {kv:?}: expected NAME=SECONDS (1 to 1000000)");
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            let secs: u64 = v.parse().map_err(|_| bad())?;
            if !(1..=1_000_000).contains(&secs) {
                return Err(bad());
            }
            let ms = secs * 1000;
            match k {
                "tcp-syn" => t.syn_ms = ms,
                "tcp-established" => t.established_ms = ms,
                "tcp-closing" => t.closing_ms = ms,
                "tcp-time-wait" => t.time_wait_ms = ms,
                "tcp-close" => t.close_ms = ms,
                "udp" => t.udp_ms = ms,
                "udp-stream" => t.udp_stream_ms = ms,
                "icmp" => t.icmp_ms = ms,
                _ => return Err(format!("invalid --conntrack-timeout {kv:?}: unknown name {k:?}")),
            }
        }
        Ok(EngineConfig {
            workers,
            pin: !self.no_pin,
            fdb_max: self.fdb_max,
            fdb_ageing: self.fdb_ageing,
            max_macs_per_port: self.max_macs_per_port,
            busy_poll_us: self.busy_poll_us,
            uplink,
            snat_ports: lo..=hi,
            conntrack_max: self.conntrack_max,
            conntrack_timeouts: t,
        })
    }
}

/// Entry point of the `tapnet` binary.
pub fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if external::wanted(&args) {
        external::exec(&args);
    }
    let cli: Cli = parse_or_exit(args);
    if let Err(msg) = run(cli) {
        eprintln!("tapnet: {msg}");
        std::process::exit(1);
    }
}

/// Parse `args` (program name first) as `P`. Help and version are printed
/// and exit 0; any other error is one line, `tapnet: …`, and exit 2.
pub fn parse_or_exit<P: Parser>(args: Vec<OsString>) -> P {
    match P::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(e.kind(), DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand) {
                e.exit();
            }
            eprintln!("tapnet: {}", usage_error_line(&e.to_string()));
            std::process::exit(2);
        }
    }
}

/// A command-line parser's error as one line: its first line, with the
/// list that follows when it ends with a colon ("the following required
/// arguments were not provided:" and the missing ones), and client input
/// cut as in every error message.
fn usage_error_line(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("invalid command line").trim_start_matches("error: ").trim_end();
    let msg = if first.ends_with(':') {
        let items: Vec<&str> = lines.take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
        format!("{first} {}", items.join(", "))
    } else {
        first.to_string()
    };
    api::cut_words(&msg)
}

/// One request to the daemon: its reply as `T`, and as JSON for `--json`.
fn call<T: DeserializeOwned>(socket: &Path, req: Request) -> Result<(T, serde_json::Value), String> {
    let v = api::call(socket, &req).map_err(|e| e.to_string())?;
    let t = serde_json::from_value(v.clone()).map_err(|e| format!("bad reply from the daemon: {e}"))?;
    Ok((t, v))
}

/// `tapnet shutdown [--keep]`: ask, then wait for the daemon to remove its
/// socket (the last thing it does).
fn shutdown(sock: &Path, keep: bool) -> Result<(), String> {
    let _: (String, _) = call(sock, Request::Shutdown { keep })?;
    let t0 = std::time::Instant::now();
    while sock.exists() {
        if t0.elapsed() > std::time::Duration::from_secs(120) {
            return Err(format!("the daemon has not stopped after 120 s ({} is still there)", sock.display()));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn run(cli: Cli) -> Result<(), String> {
    let sock = cli.global.socket.as_path();
    let json = cli.global.json.is_some();
    match cli.cmd {
        Cmd::Daemon(a) => {
            let engine = a.engine_config()?;
            let opts = crate::daemon::DaemonOpts {
                socket: cli.global.socket.clone(),
                state_dir: a.state_dir,
                netns: a.netns,
                engine,
                keep: a.keep,
                takeover: a.takeover,
            };
            crate::daemon::run(opts).map_err(|e| e.to_string())
        }
        Cmd::Network(c) => network::run(sock, json, c),
        Cmd::Container(c) => container::run(sock, json, c),
        Cmd::Exec { name, cmd } => exec::run(sock, &name, &cmd),
        Cmd::Fdb(a) => show::fdb(sock, json, a),
        Cmd::Stats => show::stats(sock, json),
        Cmd::Conntrack => show::conntrack(sock, json),
        Cmd::Shutdown { keep } => shutdown(sock, keep),
        Cmd::Up { file, host } => up::run(sock, &file, host),
        Cmd::Overlay(show::OverlayCmd::Check { network }) => show::overlay_check(sock, json, network),
        // Only reached if `external::wanted` missed them.
        Cmd::Demo(_) | Cmd::Bench(_) => external::exec(&std::env::args_os().collect::<Vec<_>>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_error(args: &[&str]) -> String {
        let args = std::iter::once("tapnet").chain(args.iter().copied());
        usage_error_line(&Cli::try_parse_from(args).expect_err("a usage error").to_string())
    }

    #[test]
    fn a_usage_error_says_what_is_missing_in_one_line() {
        let e = usage_error(&["container", "create"]);
        assert_eq!(e, "the following required arguments were not provided: --network <NETWORK>, <NAME>");
        let e = usage_error(&["container", "create", "c"]);
        assert_eq!(e, "the following required arguments were not provided: --network <NETWORK>");
        let e = usage_error(&["network", "create", "x"]);
        assert!(e.ends_with("not provided: --subnet <SUBNET>"), "{e}");
        let e = usage_error(&["frobnicate"]);
        assert_eq!(e, "unrecognized subcommand 'frobnicate'");
        let long = "y".repeat(100_000);
        let e = usage_error(&["container", "create", "c", "--network", "n", &long]);
        assert!(e.len() < 300 && !e.contains('\n'), "{e}");
    }
}
