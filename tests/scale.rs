//! Scale: 500 containers on one network of one daemon. Creating one does
//! the same work at N=500 as at N=1 (no file or netlink work for the other
//! containers), they find each other by name through the gateway's DNS,
//! and SIGTERM removes all 500 at once, leaving nothing. The test prints
//! the times (the README's "Limits" has measured ones); it asserts
//! behaviour, and only generous sanity bounds on time.

mod common;

use std::time::{Duration, Instant};

use common::*;

const N: usize = 500;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "needs root: 500 namespaces and TAP devices"]
fn five_hundred_containers_on_one_daemon() {
    let mut h = Host::start("sc", &["--workers", "2", "--no-pin"]);
    h.network("n1", "10.160.0.0/22", &[]);
    let names: Vec<String> = (0..N).map(|i| h.name(&i.to_string())).collect();
    // The first and the last few through the CLI, timed as a user sees
    // them; the others through one API connection, for speed.
    let timed = |name: &str| {
        let t0 = Instant::now();
        h.container(name, "n1");
        t0.elapsed()
    };
    let first: Vec<Duration> = names[..5].iter().map(|n| timed(n)).collect();
    let mut api = Api::connect(&h);
    for n in &names[5..N - 5] {
        let v = api.call(format!("{{\"op\":\"container_create\",\"name\":\"{n}\",\"network\":\"n1\"}}").as_bytes());
        assert_eq!(v["ok"], true, "{n}: {v}");
    }
    let last: Vec<Duration> = names[N - 5..].iter().map(|n| timed(n)).collect();
    let (at1, at500) = (median(first), median(last.clone()));
    eprintln!("container create: median {at1:?} at N=1..5, {at500:?} at N={}..{N}", N - 4);
    assert!(last.iter().all(|t| *t < Duration::from_secs(5)), "creates at N≈{N}: {last:?}");
    assert_eq!(h.json(&["container", "ls"]).as_array().unwrap().len(), N);
    // One descriptor per container interface and worker, and a few more
    // (README, "Limits").
    let fds = open_fds(h.pid()).len();
    assert!((2 * N..=2 * N + 64).contains(&fds), "{fds} descriptors for {N} containers and 2 workers");
    assert_eq!(h.json(&["network", "inspect", "n1"])["containers"].as_array().unwrap().len(), N);

    // Each container's files name itself only; the last one finds the
    // first by name through its gateway's DNS.
    let hosts = std::fs::read_to_string(format!("/etc/netns/{}/hosts", names[0])).unwrap();
    assert_eq!(hosts.lines().filter(|l| !l.starts_with('#')).count(), 3, "{hosts}");
    let resolv = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", names[N - 1])).unwrap();
    assert!(resolv.contains("nameserver 10.160.0.1"), "{resolv}");
    assert!(ping(&names[N - 1], &names[0], 1), "{} cannot ping {} by name", names[N - 1], names[0]);

    let t0 = Instant::now();
    let st = h.stop(libc::SIGTERM).expect("the daemon ran");
    let teardown = t0.elapsed();
    eprintln!("SIGTERM teardown of {N} containers: {teardown:?}");
    assert!(st.success(), "daemon exit status {st:?}");
    assert!(teardown < Duration::from_secs(60), "teardown took {teardown:?}");
    let left: Vec<String> = netns_list().into_iter().filter(|n| n.starts_with(&h.prefix) && *n != h.hostns).collect();
    assert!(left.is_empty(), "namespaces left: {} (first {:?})", left.len(), left.first());
    let etc: Vec<String> = std::fs::read_dir(control::hosts::ETC_NETNS)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(&h.prefix)).collect()
        })
        .unwrap_or_default();
    assert!(etc.is_empty(), "/etc/netns entries left: {}", etc.len());
    let taps =
        String::from_utf8_lossy(&sh("ip", &["-n", &h.hostns, "-o", "link", "show", "type", "tun"]).stdout).into_owned();
    assert!(taps.trim().is_empty(), "TAPs left: {taps}");
    assert!(!h.socket.exists(), "socket left behind");
    let state = std::fs::read_to_string(h.state.join("namespaces.json")).unwrap();
    assert_eq!(state.trim(), "[]", "the state file still lists namespaces");
}
