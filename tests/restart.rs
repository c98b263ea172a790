//! Restart without loss: a daemon that dies (`kill -9`) or stops with
//! `--keep` leaves its containers running (namespaces, persistent TAPs,
//! addresses, routes), and the next daemon on the same state directory
//! adopts them and forwards again: an established TCP transfer stalls and
//! completes without a reset. A crash in the middle of creates leaks
//! nothing; a state file that cannot be read stops the daemon before it
//! touches anything; SIGTERM still removes everything.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The saved state's container names.
fn saved_names(h: &Host) -> Vec<String> {
    let s: Value = serde_json::from_slice(&std::fs::read(h.state.join("state.json")).unwrap()).unwrap();
    let mut v: Vec<String> =
        s["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

/// This test's namespaces (not its host namespace), sorted.
fn my_namespaces(h: &Host) -> Vec<String> {
    let mut v: Vec<String> = netns_list().into_iter().filter(|n| n.starts_with(&h.prefix) && *n != h.hostns).collect();
    v.sort();
    v
}

fn my_etc_netns(h: &Host) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(control::hosts::ETC_NETNS)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(&h.prefix)).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The TAP devices in namespace `ns`.
fn taps(ns: &str) -> Vec<String> {
    let out = String::from_utf8_lossy(&sh("ip", &["-n", ns, "-o", "link", "show", "type", "tun"]).stdout).into_owned();
    out.lines().filter_map(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()).collect()
}

/// Everything of this test gone: namespaces, /etc/netns, TAPs in the host
/// namespace, socket.
fn assert_nothing_left(h: &Host) {
    assert_eq!(my_namespaces(h), Vec::<String>::new(), "namespaces left");
    assert_eq!(my_etc_netns(h), Vec::<String>::new(), "/etc/netns entries left");
    assert!(taps(&h.hostns).is_empty(), "TAPs left in the host namespace");
    assert!(!h.socket.exists(), "socket left behind");
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and TCP"]
fn kill_9_under_a_tcp_transfer_then_a_restart_completes_it() {
    let mut h = Host::start("rk", &["--workers", "2", "--no-pin"]);
    h.network("n1", "10.171.0.0/24", &[]);
    let (a, b) = (h.name("a"), h.name("b"));
    let (ip_a, _) = h.container(&a, "n1");
    let (ip_b, _) = h.container(&b, "n1");
    let bytes = 3_000_000_000u64;
    let transfer = bulk_in_background(&a, &ip_a, &b, &ip_b, bytes);
    // Under way: b's port has sent some of it.
    let t0 = Instant::now();
    let sent_before = loop {
        let n = h.port_stats(&format!("{b}:eth0"))["tx_bytes"].as_u64().unwrap_or(0);
        if n > 20_000_000 {
            break n;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the transfer did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed = Instant::now();
    h.stop(libc::SIGKILL);
    assert!(!transfer.is_finished(), "the transfer ended before the kill: make it longer");
    // No daemon for a while: the containers keep their interfaces.
    std::thread::sleep(Duration::from_millis(300));
    assert!(taps(&a).contains(&"eth0".to_string()), "{a} lost its TAP while no daemon ran");
    let spawned = Instant::now();
    h.spawn(&["--workers", "2", "--no-pin"]);
    let ready = Instant::now();
    // Forwarding again: the new daemon's counters start at zero.
    let resumed = loop {
        let n = h.port_stats(&format!("{b}:eth0"))["tx_bytes"].as_u64().unwrap_or(0);
        if n > 0 {
            break Instant::now();
        }
        assert!(ready.elapsed() < Duration::from_secs(30), "no byte forwarded 30 s after the restart");
        std::thread::sleep(Duration::from_millis(5));
    };
    let r = transfer.join().unwrap().expect("the transfer survives the restart");
    assert_eq!(r.bytes, bytes);
    assert!(r.verified);
    let after = h.port_stats(&format!("{b}:eth0"))["tx_bytes"].as_u64().unwrap();
    eprintln!(
        "kill -9 after {sent_before} bytes; stalled {:?} (daemon absent {:?}, new daemon up in {:?}); \
         forwarding resumed {:?} after the new daemon answered; {after} bytes forwarded by the new daemon",
        resumed - killed,
        spawned - killed,
        ready - spawned,
        resumed - ready,
    );
    assert!(after > 100_000_000, "only {after} bytes crossed after the restart");
    assert!(resumed - ready < Duration::from_secs(10), "resumed only after {:?}", resumed - ready);
    h.stop(libc::SIGTERM);
    assert_nothing_left(&h);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn keep_then_a_new_daemon_adopts_everything_and_sigterm_removes_it() {
    let mut h = Host::start("rp", &["--workers", "2", "--no-pin"]);
    h.network("n1", "10.172.0.0/24", &[]);
    h.network("n2", "10.172.1.0/24", &["--mtu", "9000"]);
    let (a, b, c, d) = (h.name("a"), h.name("b"), h.name("c"), h.name("d"));
    let (_, _) = h.container(&a, "n1");
    h.ok(&["container", "create", &b, "--network", "n1", "--ip", "10.172.0.77", "--mac", "02:00:00:00:00:77"]);
    h.ok(&["container", "create", &c, "--network", "none"]);
    h.ok(&["container", "create", &d, "--network", &format!("container:{a}")]);
    h.ok(&["network", "connect", "n2", &b]);
    let before = containers(&h);
    assert_eq!(before.len(), 4);

    // `shutdown --keep`: the daemon goes, the containers stay.
    h.ok(&["shutdown", "--keep"]);
    assert!(!h.socket.exists());
    h.stop(libc::SIGTERM);
    assert_eq!(my_namespaces(&h), vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(taps(&b), vec!["eth0".to_string(), "eth1".to_string()]);
    let addr = String::from_utf8_lossy(&sh("ip", &["-n", &b, "-4", "addr", "show", "eth1"]).stdout).into_owned();
    assert!(addr.contains("10.172.1.2/24"), "{addr}");

    h.spawn(&["--workers", "1", "--no-pin"]);
    assert_eq!(containers(&h), before, "the new daemon adopted other containers");
    assert!(ping(&a, "10.172.0.77", 2), "{a} cannot ping {b} after the adoption");
    // Changes work on adopted containers, and a disconnect removes the TAP.
    h.ok(&["network", "disconnect", "n2", &b]);
    assert_eq!(taps(&b), vec!["eth0".to_string()]);
    h.ok(&["network", "connect", "n2", &a]);
    let e = h.name("e");
    h.container(&e, "n2");
    assert!(ping(&e, "10.172.1.2", 2), "{e} cannot ping {a} on n2");

    // `daemon --keep`: SIGTERM keeps everything too.
    h.ok(&["shutdown", "--keep"]);
    h.stop(libc::SIGTERM);
    h.spawn(&["--workers", "2", "--no-pin", "--keep"]);
    let kept = containers(&h);
    h.stop(libc::SIGTERM);
    assert_eq!(my_namespaces(&h).len(), 4);
    // A container whose namespace vanished while no daemon ran is dropped.
    ip(&["netns", "del", &c]);
    h.spawn(&["--workers", "2", "--no-pin"]);
    let now = containers(&h);
    assert_eq!(now.len(), 4, "{now:?}");
    assert!(!now.iter().any(|x| x.0 == c), "{c} is still listed");
    assert_eq!(now, kept.into_iter().filter(|x| x.0 != c).collect::<Vec<_>>());
    assert!(!saved_names(&h).contains(&c));
    assert!(ping(&e, "10.172.1.2", 1));
    // SIGTERM without --keep removes everything, as before.
    let st = h.stop(libc::SIGTERM).unwrap();
    assert!(st.success());
    assert_nothing_left(&h);
    assert!(saved_names(&h).is_empty());
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn kill_9_during_30_parallel_creates_leaks_nothing_and_every_name_is_reusable() {
    let mut h = Host::start("rc", &["--workers", "2", "--no-pin"]);
    h.network("n1", "10.173.0.0/24", &[]);
    let names: Vec<String> = (0..30).map(|i| h.name(&format!("{i}"))).collect();
    let creators: Vec<_> = names
        .iter()
        .map(|n| {
            let (sock, n) = (h.socket.clone(), n.clone());
            std::thread::spawn(move || {
                Command::new(tapnet_bin())
                    .args(["container", "create", &n, "--network", "n1"])
                    .env("TAPNET_SOCKET", sock)
                    .output()
                    .unwrap()
            })
        })
        .collect();
    // Kill once some, not all, exist.
    let t0 = Instant::now();
    while my_namespaces(&h).len() < 8 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    h.stop(libc::SIGKILL);
    let made = creators.into_iter().map(|c| c.join().unwrap()).filter(|o| o.status.success()).count();
    assert!(made < 30, "every create finished before the kill");
    h.spawn(&["--workers", "2", "--no-pin"]);
    let listed: Vec<String> = containers(&h).into_iter().map(|c| c.0).collect();
    eprintln!("{made} creates acknowledged before the kill, {} containers adopted", listed.len());
    assert!(listed.len() >= made);
    // The state, the namespaces, the files and the TAPs agree.
    assert_eq!(my_namespaces(&h), listed, "namespaces and containers differ");
    assert_eq!(saved_names(&h), listed, "state and containers differ");
    let etc = my_etc_netns(&h);
    assert!(etc.iter().all(|n| listed.contains(n)), "/etc/netns of no container: {etc:?}");
    for n in &listed {
        assert_eq!(taps(n), vec!["eth0".to_string()], "{n}");
    }
    assert!(taps(&h.hostns).is_empty());
    // Every name is usable again.
    for n in &listed {
        h.ok(&["container", "rm", n]);
    }
    for n in &names {
        h.container(n, "n1");
    }
    assert!(ping(&names[0], "10.173.0.31", 1));
    h.stop(libc::SIGTERM);
    assert_nothing_left(&h);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn a_corrupt_or_incompatible_state_stops_the_daemon_and_touches_nothing() {
    let mut h = Host::start("rb", &["--workers", "1", "--no-pin"]);
    h.network("n1", "10.174.0.0/24", &[]);
    let a = h.name("a");
    h.container(&a, "n1");
    h.ok(&["shutdown", "--keep"]);
    h.stop(libc::SIGTERM);
    let file = h.state.join("state.json");
    let good = std::fs::read(&file).unwrap();
    let run = || {
        Command::new(tapnet_bin())
            .args(["daemon", "--netns", &h.hostns, "--socket"])
            .arg(&h.socket)
            .arg("--state-dir")
            .arg(&h.state)
            .output()
            .unwrap()
    };
    for (bad, says) in [
        (b"{\"version\":1,\"networks\":[".to_vec(), "not a tapnet state file"),
        (br#"{"version":2,"networks":[],"containers":[]}"#.to_vec(), "version 2, this tapnet reads version 1"),
        // Published ports need the uplink the saved daemon had.
        (
            br#"{"version":1,"networks":[],"containers":[{"name":"x","id":"0","mode":"n1","endpoints":[],
                "published":[{"proto":"tcp","host_port":8080,"container_port":80}]}]}"#
                .to_vec(),
            "the saved state has published ports",
        ),
    ] {
        std::fs::write(&file, &bad).unwrap();
        let out = run();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says) && err.starts_with("tapnet: "), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), bad, "the state file was changed");
        assert!(!h.socket.exists());
        assert_eq!(my_namespaces(&h), vec![a.clone()]);
        assert_eq!(taps(&a), vec!["eth0".to_string()]);
    }
    std::fs::write(&file, &good).unwrap();
    h.spawn(&["--workers", "1", "--no-pin"]);
    assert_eq!(containers(&h).len(), 1);
    h.stop(libc::SIGTERM);
    assert_nothing_left(&h);
}
