//! The `tapnet` binary's command line, without a daemon or root: usage
//! errors are one line with exit status 2, help and version work.
//! (Having an integration test here also makes `cargo test --workspace`
//! build the binary that the privileged tests in the root `tests/` run;
//! `bench/tests/cli.rs` does the same for `tapnet-bench`.)

use std::path::Path;
use std::process::Command;

fn tapnet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tapnet"))
        .args(args)
        .env("TAPNET_SOCKET", "/nonexistent/tapnet.sock")
        .output()
        .unwrap()
}

#[test]
fn usage_errors_are_one_line_with_status_2() {
    for args in [
        vec!["frobnicate"],
        vec!["network", "create", "x"],
        vec!["network", "create", "x", "--subnet", "10.0.0.0/24", "--mtu", "big"],
        vec!["container", "create", "c"],
        vec!["exec", "c"],
        vec!["daemon", "--workers", "-1"],
    ] {
        let out = tapnet(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.starts_with("tapnet: "), "{err:?}");
    }
}

#[test]
fn missing_arguments_are_named_in_the_one_line() {
    for (args, missing) in [
        (vec!["container", "create"], vec!["<NAME>", "--network <NETWORK>"]),
        (vec!["container", "create", "c"], vec!["--network <NETWORK>"]),
        (vec!["network", "create"], vec!["<NAME>", "--subnet <SUBNET>"]),
        (vec!["network", "connect", "n"], vec!["<CONTAINER>"]),
        (vec!["fdb"], vec!["<NETWORK>"]),
    ] {
        let out = tapnet(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.starts_with("tapnet: the following required arguments were not provided: "), "{err}");
        for m in missing {
            assert!(err.contains(m), "{args:?}: {m} not named in {err:?}");
        }
    }
}

#[test]
fn unreachable_daemon_is_one_line_with_status_1() {
    let out = tapnet(&["network", "ls"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert!(err.contains("/nonexistent/tapnet.sock"), "{err}");
}

#[test]
fn bench_and_demo_without_tapnet_bench_are_one_line_with_status_1() {
    // tapnet alone in a directory, with nothing on PATH: the tooling binary
    // cannot be found (bench/tests/cli.rs runs the real one). A hard link,
    // not a copy: a file just written may still be open in a child that
    // another test thread forked, and executing it would fail (ETXTBSY).
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tapnet-usage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let alone = dir.join("tapnet");
    let _ = std::fs::remove_file(&alone);
    std::fs::hard_link(env!("CARGO_BIN_EXE_tapnet"), &alone).unwrap();
    for args in [vec!["demo"], vec!["--json", "bench", "--scenario", "bridge"], vec!["help", "bench"]] {
        let out = Command::new(&alone).args(&args).env("PATH", &dir).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.contains("tapnet-bench") && err.contains("cargo build --release -p bench"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_and_version() {
    let out = tapnet(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["daemon", "network", "container", "exec", "fdb", "stats", "demo", "bench"] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
    assert!(tapnet(&["--version"]).status.success());
}
