//! The `tapnet` command line. Every command but `daemon` is a thin client
//! of the daemon's API; every command accepts `--json` (`bench` as
//! `--json FILE`). `bench` and `demo` are test tooling that the daemon does
//! not link: they run the `tapnet-bench` binary of the `bench` crate (see
//! [`external`]).
//! Errors are one line on stderr and a non-zero exit: 2 for a malformed
//! command line, 1 for a request the daemon refused.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;

use crate::api::{self, Request};
use crate::engine::EngineConfig;

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
#[command(name = "tapnet", version, about = "Userspace container networking: a learning bridge over TAP devices")]
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
    /// Show a network's MAC table.
    Fdb { network: String },
    /// Show per-port counters and drops by reason.
    Stats,
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
    /// Where the daemon keeps its lock and its list of namespaces.
    #[arg(long, default_value = api::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Default MAC table bound per network.
    #[arg(long, default_value_t = dataplane::bridge::fdb::DEFAULT_CAPACITY)]
    pub fdb_max: usize,
    /// Default MAC ageing time in seconds.
    #[arg(long, default_value_t = 300)]
    pub fdb_ageing: u64,
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
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        name: String,
        #[arg(long)]
        subnet: String,
        /// Gateway address (default: the subnet's first host).
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long)]
        mtu: Option<u32>,
        /// Bound on the MAC table (default: the daemon's --fdb-max).
        #[arg(long)]
        fdb_max: Option<usize>,
        /// MAC ageing time in seconds (default: the daemon's --fdb-ageing).
        #[arg(long)]
        fdb_ageing: Option<u64>,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls,
    /// Show a network with its containers.
    Inspect { name: String },
    /// Remove a network (refused while containers are attached).
    #[command(alias = "remove")]
    Rm { name: String },
    /// Give a running container an interface on another network.
    Connect {
        network: String,
        container: String,
        #[arg(long)]
        ip: Option<String>,
    },
    /// Remove a container's interface on a network.
    Disconnect { network: String, container: String },
}

#[derive(Debug, Subcommand)]
pub enum ContainerCmd {
    /// Create a container: a network namespace with eth0 on a network.
    Create {
        name: String,
        /// NET, none, host or container:OTHER.
        #[arg(long)]
        network: String,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        mac: Option<String>,
    },
    /// Remove a container and its namespace.
    #[command(alias = "remove")]
    Rm { name: String },
    /// List containers.
    #[command(alias = "list")]
    Ls,
    /// Show a container.
    Inspect { name: String },
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
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            eprintln!("tapnet: {}", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    }
}

fn call<T: DeserializeOwned>(socket: &Path, req: Request) -> Result<(T, serde_json::Value), String> {
    let v = api::call(socket, &req).map_err(|e| e.to_string())?;
    let t = serde_json::from_value(v.clone()).map_err(|e| format!("bad reply from the daemon: {e}"))?;
    Ok((t, v))
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn run(cli: Cli) -> Result<(), String> {
    let sock = cli.global.socket.as_path();
    let json = cli.global.json.is_some();
    match cli.cmd {
        Cmd::Daemon(a) => {
            let opts = crate::daemon::DaemonOpts {
                socket: cli.global.socket.clone(),
                state_dir: a.state_dir,
                netns: a.netns,
                engine: EngineConfig {
                    workers: a.workers.unwrap_or_else(|| EngineConfig::default().workers),
                    pin: !a.no_pin,
                    fdb_max: a.fdb_max,
                    fdb_ageing: a.fdb_ageing,
                    busy_poll_us: a.busy_poll_us,
                },
            };
            if opts.engine.workers == 0 || opts.engine.workers > 64 {
                return Err(format!("invalid --workers {}: must be between 1 and 64", opts.engine.workers));
            }
            crate::daemon::run(opts).map_err(|e| e.to_string())
        }
        Cmd::Network(c) => network(sock, json, c),
        Cmd::Container(c) => container(sock, json, c),
        Cmd::Exec { name, cmd } => exec(sock, &name, &cmd),
        Cmd::Fdb { network } => {
            let (f, v): (api::FdbInfo, _) = call(sock, Request::Fdb { network })?;
            if json {
                print_json(&v);
                return Ok(());
            }
            println!("{:<19} {:>5}  {:<20} {:>8}", "MAC", "PORT", "NAME", "AGE(s)");
            for e in &f.entries {
                println!("{:<19} {:>5}  {:<20} {:>8.1}", e.mac, e.port, e.port_name, e.age_s);
            }
            let ev: Vec<String> = f.events.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{} entries (max {}), ageing {} s; {}", f.entries.len(), f.max, f.ageing, ev.join(" "));
            Ok(())
        }
        Cmd::Stats => {
            let (s, v): (api::StatsInfo, _) = call(sock, Request::Stats)?;
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
            Ok(())
        }
        // Only reached if `external::wanted` missed them.
        Cmd::Demo(_) | Cmd::Bench(_) => external::exec(&std::env::args_os().collect::<Vec<_>>()),
    }
}

fn network(sock: &Path, json: bool, c: NetworkCmd) -> Result<(), String> {
    match c {
        NetworkCmd::Create { name, subnet, gateway, mtu, fdb_max, fdb_ageing } => {
            let (n, v): (api::NetworkInfo, _) =
                call(sock, Request::NetworkCreate { name, subnet, gateway, mtu, fdb_max, fdb_ageing })?;
            if json {
                print_json(&v)
            } else {
                println!("{}", n.id)
            }
        }
        NetworkCmd::Ls => {
            let (ns, v): (Vec<api::NetworkInfo>, _) = call(sock, Request::NetworkLs)?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "{:<12}  {:<16} {:<14} {:<18} {:<15} {:>6} {:>10}",
                    "NETWORK ID", "NAME", "DRIVER", "SUBNET", "GATEWAY", "MTU", "CONTAINERS"
                );
                for n in ns {
                    println!(
                        "{:<12}  {:<16} {:<14} {:<18} {:<15} {:>6} {:>10}",
                        n.id,
                        n.name,
                        n.driver,
                        n.subnet,
                        n.gateway,
                        n.mtu,
                        n.containers.len()
                    );
                }
            }
        }
        NetworkCmd::Inspect { name } => {
            let (_, v): (api::NetworkInfo, _) = call(sock, Request::NetworkInspect { name })?;
            print_json(&v);
        }
        NetworkCmd::Rm { name } => {
            let (n, v): (String, _) = call(sock, Request::NetworkRm { name })?;
            if json {
                print_json(&v)
            } else {
                println!("{n}")
            }
        }
        NetworkCmd::Connect { network, container, ip } => {
            let (_, v): (api::ContainerInfo, _) = call(sock, Request::NetworkConnect { network, container, ip })?;
            if json {
                print_json(&v);
            }
        }
        NetworkCmd::Disconnect { network, container } => {
            let (_, v): (api::ContainerInfo, _) = call(sock, Request::NetworkDisconnect { network, container })?;
            if json {
                print_json(&v);
            }
        }
    }
    Ok(())
}

fn container(sock: &Path, json: bool, c: ContainerCmd) -> Result<(), String> {
    match c {
        ContainerCmd::Create { name, network, ip, mac } => {
            let (ci, v): (api::ContainerInfo, _) = call(sock, Request::ContainerCreate { name, network, ip, mac })?;
            if json {
                print_json(&v)
            } else {
                println!("{}", ci.id)
            }
        }
        ContainerCmd::Rm { name } => {
            let (n, v): (String, _) = call(sock, Request::ContainerRm { name })?;
            if json {
                print_json(&v)
            } else {
                println!("{n}")
            }
        }
        ContainerCmd::Ls => {
            let (cs, v): (Vec<api::ContainerInfo>, _) = call(sock, Request::ContainerLs)?;
            if json {
                print_json(&v);
            } else {
                println!("{:<16} {:<12}  {:<20} INTERFACES", "NAME", "ID", "NETWORK MODE");
                for c in cs {
                    let ifs: Vec<String> = c
                        .networks
                        .iter()
                        .map(|e| format!("{}={} ({}, {})", e.interface, e.ipv4_address, e.network, e.mac_address))
                        .collect();
                    println!("{:<16} {:<12}  {:<20} {}", c.name, c.id, c.network_mode, ifs.join(", "));
                }
            }
        }
        ContainerCmd::Inspect { name } => {
            let (_, v): (api::ContainerInfo, _) = call(sock, Request::ContainerInspect { name })?;
            print_json(&v);
        }
    }
    Ok(())
}

/// Enter the container's network namespace and exec the command, like
/// `ip netns exec`: a private mount namespace gets a fresh /sys so tools that
/// read /sys/class/net see the container's interfaces.
fn exec(sock: &Path, name: &str, cmd: &[String]) -> Result<(), String> {
    let (ci, _): (api::ContainerInfo, _) = call(sock, Request::ContainerInspect { name: name.to_string() })?;
    let key = Path::new(&ci.sandbox_key);
    crate::netns::enter(key).map_err(|e| e.to_string())?;
    let nsname = key.strip_prefix(crate::netns::NETNS_RUN_DIR).ok().and_then(|p| p.to_str());
    remount_sys(nsname);
    let err = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
    Err(format!("exec {}: {err}", cmd[0]))
}

fn remount_sys(nsname: Option<&str>) {
    // Best effort, as in iproute2: without it only /sys is stale.
    // SAFETY: plain syscalls on valid NUL-terminated strings; this process
    // is single-threaded here and about to exec.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return;
        }
        let none = c"none";
        if libc::mount(none.as_ptr(), c"/".as_ptr(), std::ptr::null(), libc::MS_SLAVE | libc::MS_REC, std::ptr::null())
            != 0
        {
            return;
        }
        libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH);
        libc::mount(c"sysfs".as_ptr(), c"/sys".as_ptr(), c"sysfs".as_ptr(), 0, std::ptr::null());
    }
    // Like `ip netns exec`: /etc/netns/NAME/FILE is bind-mounted over
    // /etc/FILE (tapnet puts each container's hosts file there).
    let Some(name) = nsname else { return };
    let Ok(entries) = std::fs::read_dir(Path::new(crate::hosts::ETC_NETNS).join(name)) else { return };
    for e in entries.flatten() {
        let src = e.path();
        let dst = Path::new("/etc").join(e.file_name());
        let (Ok(src), Ok(dst)) = (
            std::ffi::CString::new(src.as_os_str().as_encoded_bytes()),
            std::ffi::CString::new(dst.as_os_str().as_encoded_bytes()),
        ) else {
            continue;
        };
        // SAFETY: valid NUL-terminated paths; a failed bind is ignored.
        unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), c"none".as_ptr(), libc::MS_BIND, std::ptr::null()) };
    }
}

/// `tapnet bench` and `tapnet demo`, run git-style by another binary,
/// `tapnet-bench` (built by the `bench` crate), so that the daemon links
/// neither the traffic generator nor the benchmark harness. `tapnet` only
/// finds the subcommand and hands the whole command line over unchanged;
/// `tapnet-bench` parses it with the same global options ([`GlobalArgs`]).
pub mod external {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;

    /// The binary that runs `bench` and `demo`.
    pub const BIN: &str = "tapnet-bench";
    /// The subcommands it runs.
    pub const COMMANDS: [&str; 2] = ["bench", "demo"];

    /// What `tapnet --help` shows for them: their own options live in
    /// `tapnet-bench` (`tapnet bench --help`).
    #[derive(Debug, clap::Args)]
    pub struct Args {
        #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
        pub rest: Vec<String>,
    }

    /// The subcommand of `args` (program name first): the first word after
    /// the global options `--json`, `--socket PATH` and `--socket=PATH`, or
    /// the word after `help`.
    fn subcommand(args: &[OsString]) -> Option<&OsStr> {
        let mut it = args.iter().skip(1).map(OsString::as_os_str);
        while let Some(a) = it.next() {
            match a.to_str() {
                Some("--json") => {}
                Some("--socket") => {
                    it.next()?;
                }
                Some(s) if s.starts_with("--socket=") => {}
                Some("help") => return it.next(),
                _ => return Some(a),
            }
        }
        None
    }

    /// Is this command line for `tapnet-bench`?
    pub fn wanted(args: &[OsString]) -> bool {
        subcommand(args).and_then(OsStr::to_str).is_some_and(|c| COMMANDS.contains(&c))
    }

    /// `tapnet-bench` next to this executable, else the first on `PATH`.
    fn find() -> Option<PathBuf> {
        let here = std::env::current_exe().ok().map(|e| e.with_file_name(BIN)).filter(|p| p.is_file());
        here.or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path).map(|d| d.join(BIN)).find(|p| p.is_file())
        })
    }

    /// Replace this process with `tapnet-bench`, same arguments (program
    /// name first) and same process id. Returns only by exiting with 1.
    pub fn exec(args: &[OsString]) -> ! {
        let Some(bin) = find() else {
            eprintln!(
                "tapnet: `tapnet {}` is run by the {BIN} binary, which is neither next to tapnet nor on PATH; build it with `cargo build --release -p bench`",
                subcommand(args).map_or("bench".into(), OsStr::to_string_lossy)
            );
            std::process::exit(1);
        };
        let err = std::process::Command::new(&bin).arg0("tapnet").args(args.iter().skip(1)).exec();
        eprintln!("tapnet: cannot run {}: {err}", bin.display());
        std::process::exit(1);
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn os(args: &[&str]) -> Vec<OsString> {
            args.iter().map(OsString::from).collect()
        }

        #[test]
        fn finds_the_subcommand_after_global_options() {
            for yes in [
                &["tapnet", "bench"][..],
                &["tapnet", "demo", "--duration", "1"],
                &["tapnet", "--json", "demo"],
                &["tapnet", "--socket", "/x", "--json", "bench", "--json", "f"],
                &["tapnet", "--socket=/x", "bench"],
                &["tapnet", "help", "demo"],
            ] {
                assert!(wanted(&os(yes)), "{yes:?}");
            }
            for no in [
                &["tapnet"][..],
                &["tapnet", "network", "ls"],
                &["tapnet", "--socket", "bench"],
                &["tapnet", "--help", "bench"],
                &["tapnet", "help"],
                &["tapnet", "container", "create", "bench", "--network", "demo"],
            ] {
                assert!(!wanted(&os(no)), "{no:?}");
            }
        }
    }
}
