//! The `tapnet-bench` binary's command line, without root: it takes the
//! same options as `tapnet bench` and `tapnet demo` always did, with the
//! same help, one-line errors and exit statuses, and refuses bad arguments
//! before it builds anything. (Having an integration test here also makes
//! `cargo test --workspace` build the binary, next to `tapnet`, for the
//! privileged tests in the root `tests/` that run `tapnet bench`.)

use std::process::{Command, Output};

fn tapnet_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapnet-bench")).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_errors_are_one_line_with_status_2() {
    for args in [
        vec!["frobnicate"],
        vec!["bench", "--scenario", "bogus"],
        vec!["bench", "--bogus"],
        vec!["demo", "--duration", "x"],
        vec!["network", "ls"],
    ] {
        let out = tapnet_bench(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.starts_with("tapnet: "), "{err:?}");
    }
}

#[test]
fn bad_values_are_refused_before_anything_is_built() {
    for (args, flag) in [
        (vec!["demo", "--duration", "0"], "--duration"),
        (vec!["--json", "demo", "--streams", "0"], "--streams"),
        (vec!["demo", "--workers", "0"], "--workers"),
        (vec!["bench", "--duration", "0"], "--duration"),
        (vec!["bench", "--plot", "chart.gif"], ".svg or .png"),
        (vec!["bench", "--json", "/nonexistent-dir/r.json"], "no such directory"),
    ] {
        let out = tapnet_bench(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.starts_with("tapnet: ") && err.contains(flag), "{args:?}: {err}");
    }
}

#[test]
fn help_reads_as_tapnet_bench_and_tapnet_demo() {
    for (args, usage, flag) in [
        (&["bench", "--help"][..], "Usage: tapnet bench [OPTIONS]", "--busy-poll-us"),
        (&["help", "demo"], "Usage: tapnet demo [OPTIONS]", "--subnet"),
    ] {
        let out = tapnet_bench(args);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}");
        assert!(help.contains(usage) && help.contains(flag), "{args:?}: {help}");
    }
}
