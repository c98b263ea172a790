//! `tapnet bench` and `tapnet demo`, run git-style by another binary,
//! `tapnet-bench` (built by the `bench` crate), so that the daemon links
//! neither the traffic generator nor the benchmark harness. `tapnet` only
//! finds the subcommand and hands the whole command line over unchanged;
//! `tapnet-bench` parses it with the same global options ([`GlobalArgs`](super::GlobalArgs)).

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
