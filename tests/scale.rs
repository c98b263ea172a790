//! Scale: 500 containers on one network of one daemon. Creating one does
//! the same work at N=500 as at N=1 (no file or netlink work for the other
//! containers), they find each other by name through the gateway's DNS,
//! and SIGTERM removes all 500 at once, leaving nothing. The test prints
//! the times (the README's "Limits" has measured ones); it asserts
//! behaviour, and only generous sanity bounds on time.
//!
//! To compare N=1 with N=500 on a machine whose load drifts, a second,
//! empty daemon runs beside the full one, and the two are given the same
//! create and rm in turn.

mod common;

use std::time::{Duration, Instant};

use common::*;

const N: usize = 500;
/// Creates timed at each end.
const TIMED: usize = 11;

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
    let first: Vec<Duration> = names[..TIMED].iter().map(|n| timed(n)).collect();
    let mut api = Api::connect(&h);
    for n in &names[TIMED..N - TIMED] {
        let v = api.call(format!("{{\"op\":\"container_create\",\"name\":\"{n}\",\"network\":\"n1\"}}").as_bytes());
        assert_eq!(v["ok"], true, "{n}: {v}");
    }
    let last: Vec<Duration> = names[N - TIMED..].iter().map(|n| timed(n)).collect();
    let (at1, at500) = (median(first), median(last.clone()));
    eprintln!("container create: median {at1:?} at N=1..{TIMED}, {at500:?} at N={}..{N}", N - TIMED + 1);
    assert!(last.iter().all(|t| *t < Duration::from_secs(5)), "creates at N≈{N}: {last:?}");
    {
        let h0 = Host::start("s0", &["--workers", "2", "--no-pin"]);
        h0.network("n1", "10.161.0.0/24", &[]);
        let mut times = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
        for r in 0..TIMED {
            for (k, host) in [&h0, &h].into_iter().enumerate() {
                let p = host.name(&format!("p{r}"));
                let t0 = Instant::now();
                host.container(&p, "n1");
                times[k][0].push(t0.elapsed());
                let t0 = Instant::now();
                host.ok(&["container", "rm", &p]);
                times[k][1].push(t0.elapsed());
            }
        }
        let [[c0, r0], [c500, r500]] = times.map(|v| v.map(median));
        eprintln!("in turn, beside an empty daemon: create {c0:?} (N=1) and {c500:?} (N={N}), rm {r0:?} and {r500:?}");
    }
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
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(h.state.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["containers"], serde_json::json!([]), "the state file still lists containers");
}
