//! The command line of `tapnet-bench`, which runs `tapnet bench` and
//! `tapnet demo`: `tapnet` hands it the whole command line unchanged (see
//! `control::cli::external`), so it takes the same global options and
//! reads, prints and exits exactly as those two commands always have.

use clap::{Parser, Subcommand};
use control::cli::GlobalArgs;

use crate::demo::DemoArgs;
use crate::harness::BenchArgs;

#[derive(Debug, Parser)]
#[command(
    name = "tapnet",
    bin_name = "tapnet",
    version,
    about = "tapnet's test tooling: `tapnet bench` and `tapnet demo` (the tapnet-bench binary)"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build a network with two containers, ping, move TCP traffic, print the figures, tear down.
    Demo(DemoArgs),
    /// Compare tapnet's datapath with the kernel's (docker0's) on this machine.
    Bench(BenchArgs),
}

/// Entry point of the `tapnet-bench` binary.
pub fn main() {
    let cli: Cli = control::cli::parse_or_exit(std::env::args_os().collect());
    let json = cli.global.json.is_some();
    let res = match cli.cmd {
        Cmd::Demo(a) => crate::demo::run(&a, json),
        // `--json FILE` given to bench is bench's own option, not the flag.
        Cmd::Bench(a) => crate::harness::run(&a, json && a.json.is_none()),
    };
    if let Err(msg) = res {
        eprintln!("tapnet: {msg}");
        std::process::exit(1);
    }
}
