//! Bad input is refused with one line and changes nothing; teardown and
//! crash recovery leave nothing behind; `tapnet bench` and `tapnet demo`
//! reach the `tapnet-bench` binary.

mod common;

use common::*;

fn snapshot(h: &Host) -> (serde_json::Value, serde_json::Value, Vec<String>) {
    let mut ns: Vec<String> = netns_list().into_iter().filter(|n| n.starts_with(&h.prefix)).collect();
    ns.sort();
    (h.json(&["network", "ls"]), h.json(&["container", "ls"]), ns)
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn bad_arguments_are_rejected_and_change_nothing() {
    let h = Host::start("cb", &["--workers", "1"]);
    h.network("n1", "10.220.0.0/24", &[]);
    let a = h.name("a");
    h.container(&a, "n1");
    let before = snapshot(&h);
    let long = "abcdefghijklmnop"; // 16 bytes
    let new = h.name("z");
    let cases: Vec<Vec<&str>> = vec![
        vec!["network", "create", "x1", "--subnet", "10.221.0.0/33"],
        vec!["network", "create", "x1", "--subnet", "banana"],
        vec!["network", "create", "x1", "--subnet", "10.221.0.1/24"],
        vec!["network", "create", "x1", "--subnet", "10.221.0.0/31"],
        vec!["network", "create", "x1", "--subnet", "10.220.0.0/16"],
        vec!["network", "create", "n1", "--subnet", "10.222.0.0/24"],
        vec!["network", "create", "x1", "--subnet", "10.221.0.0/24", "--gateway", "10.9.9.9"],
        vec!["network", "create", "x1", "--subnet", "10.221.0.0/24", "--mtu", "10"],
        vec!["network", "create", "x1", "--subnet", "10.221.0.0/24", "--mtu", "abc"],
        vec!["network", "create", "x1", "--subnet", "10.221.0.0/24", "--fdb-max", "0"],
        vec!["network", "create", "none", "--subnet", "10.221.0.0/24"],
        vec!["network", "create", "bad name", "--subnet", "10.221.0.0/24"],
        vec!["network", "create", "x1"],
        vec!["network", "create", "x1", "--subnet", "10.221.0.0/24", "--bogus"],
        vec!["network", "rm", "n1"],
        vec!["network", "rm", "nope"],
        vec!["network", "inspect", "nope"],
        vec!["container", "create", &new, "--network", "nope"],
        vec!["container", "create", long, "--network", "n1"],
        vec!["container", "create", &a, "--network", "n1"],
        vec!["container", "create", &new, "--network", "n1", "--ip", "10.99.0.5"],
        vec!["container", "create", &new, "--network", "n1", "--ip", "10.220.0.1"],
        vec!["container", "create", &new, "--network", "n1", "--ip", "10.220.0.2"],
        vec!["container", "create", &new, "--network", "n1", "--ip", "10.220.0.255"],
        vec!["container", "create", &new, "--network", "n1", "--ip", "300.1.1.1"],
        vec!["container", "create", &new, "--network", "n1", "--mac", "zz:00:00:00:00:01"],
        vec!["container", "create", &new, "--network", "n1", "--mac", "01:00:5e:00:00:01"],
        vec!["container", "create", &new, "--network", "none", "--ip", "10.220.0.9"],
        vec!["container", "create", &new, "--network", "container:nope"],
        vec!["container", "create", &new],
        vec!["container", "rm", "nope"],
        vec!["network", "connect", "nope", &a],
        vec!["network", "connect", "n1", "nope"],
        vec!["network", "connect", "n1", &a],
        vec!["network", "disconnect", "n1", "nope"],
        vec!["fdb", "nope"],
        vec!["exec", "nope", "--", "true"],
        vec!["frobnicate"],
    ];
    for c in &cases {
        h.fails(c);
        assert_eq!(snapshot(&h), before, "tapnet {c:?} changed state");
    }
    // The API itself: garbage and unknown operations get a one-line error
    // reply, change nothing, and the daemon keeps serving.
    {
        use std::io::{BufRead, BufReader, Write};
        let conn = std::os::unix::net::UnixStream::connect(&h.socket).unwrap();
        let mut r = BufReader::new(&conn);
        for bad in ["not json", "{\"op\":\"frobnicate\"}", "{\"op\":\"network_create\",\"name\":\"x\"}", "[1,2,3]"] {
            (&conn).write_all(format!("{bad}\n").as_bytes()).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["ok"], false, "{bad}: {line}");
            assert!(!v["error"].as_str().unwrap().contains('\n'));
        }
        (&conn).write_all(b"{\"op\":\"network_ls\"}\n").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\":true"), "{line}");
    }
    assert_eq!(snapshot(&h), before, "raw API requests changed state");
    // A daemon that is not there is one line too.
    let out = std::process::Command::new(tapnet_bin())
        .args(["network", "ls"])
        .env("TAPNET_SOCKET", "/nonexistent/tapnet.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end().lines().count(), 1);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn json_and_tables_for_every_listing() {
    let h = Host::start("cj", &["--workers", "1"]);
    h.network("n1", "10.223.0.0/24", &["--gateway", "10.223.0.254", "--mtu", "9000"]);
    let a = h.name("a");
    h.ok(&["container", "create", &a, "--network", "n1", "--ip", "10.223.0.10", "--mac", "02:00:00:aa:bb:cc"]);
    let n = h.json(&["network", "inspect", "n1"]);
    assert_eq!(n["subnet"], "10.223.0.0/24");
    assert_eq!(n["gateway"], "10.223.0.254");
    assert_eq!(n["mtu"], 9000);
    assert_eq!(n["containers"][0]["container"], a.as_str());
    assert_eq!(n["containers"][0]["mac_address"], "02:00:00:aa:bb:cc");
    assert_eq!(n["containers"][0]["ipv4_address"], "10.223.0.10/24");
    let mtu = String::from_utf8_lossy(&sh("ip", &["-n", &a, "link", "show", "eth0"]).stdout).into_owned();
    assert!(mtu.contains("mtu 9000") && mtu.contains("02:00:00:aa:bb:cc"), "{mtu}");
    for args in [vec!["network", "ls"], vec!["container", "ls"], vec!["stats"], vec!["fdb", "n1"]] {
        h.json(&args);
        assert!(!h.ok(&args).is_empty());
    }
    let c = h.json(&["container", "inspect", &a]);
    assert_eq!(c["sandbox_key"], format!("/var/run/netns/{a}"));
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn shutdown_and_crash_recovery_leave_nothing_behind() {
    let mut h = Host::start("ct", &["--workers", "2"]);
    h.network("n1", "10.224.0.0/24", &[]);
    let (a, b) = (h.name("a"), h.name("b"));
    h.container(&a, "n1");
    h.container(&b, "n1");
    let st = h.stop(libc::SIGTERM).expect("daemon ran");
    assert!(st.success(), "daemon exit status {st:?}");
    let left = netns_list();
    assert!(!left.contains(&a) && !left.contains(&b), "SIGTERM left namespaces: {left:?}");
    let taps =
        String::from_utf8_lossy(&sh("ip", &["-n", &h.hostns, "-o", "link", "show", "type", "tun"]).stdout).into_owned();
    assert!(taps.trim().is_empty(), "TAPs left: {taps}");
    assert!(!h.socket.exists(), "socket left behind");

    // SIGKILL leaves the containers running; the next daemon on the state
    // dir adopts them (tests/restart.rs has the rest), and SIGTERM then
    // removes them.
    h.spawn(&["--workers", "1"]);
    h.network("n1", "10.224.0.0/24", &[]);
    h.container(&a, "n1");
    h.stop(libc::SIGKILL);
    assert!(netns_list().contains(&a));
    h.spawn(&["--workers", "1"]);
    let ls = h.json(&["container", "ls"]);
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls}");
    assert_eq!(ls[0]["name"], a.as_str());
    h.stop(libc::SIGTERM);
    assert!(!netns_list().contains(&a), "SIGTERM left the adopted namespace");
}

/// Without root: `tapnet` hands `bench` and `demo` to `tapnet-bench` (built
/// next to it), which answers with its own help and its own one-line errors.
#[test]
fn bench_and_demo_run_through_tapnet_bench() {
    let run = |args: &[&str]| std::process::Command::new(tapnet_bin()).args(args).output().unwrap();
    let out = run(&["demo", "--duration", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("tapnet: invalid --duration 0"), "{err}");
    let out = run(&["--json", "bench", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: tapnet bench [OPTIONS]"));
}
