//! The seeds' network modes (none, container:OTHER, host), `network
//! connect`/`disconnect`, and `tapnet exec`.

mod common;

use common::*;

fn out(o: std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn none_container_and_host_modes() {
    let h = Host::start("mm", &["--workers", "1"]);
    h.network("n1", "10.210.0.0/24", &[]);
    let (a, none, shared, hostc) = (h.name("a"), h.name("n"), h.name("s"), h.name("o"));
    let (ip_a, _) = h.container(&a, "n1");

    // none: a namespace with only lo.
    h.ok(&["container", "create", &none, "--network", "none"]);
    let links = out(sh("ip", &["-n", &none, "-o", "link", "show"]));
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains(": lo:") && links.contains("UP"), "{links}");

    // container:a shares a's namespace: same interfaces, same address.
    h.ok(&["container", "create", &shared, "--network", &format!("container:{a}")]);
    let ns_a = out(sh("ip", &["netns", "exec", &a, "readlink", "/proc/self/ns/net"]));
    let ns_s = out(h.tapnet(&["exec", &shared, "--", "readlink", "/proc/self/ns/net"]));
    assert_eq!(ns_a, ns_s);
    let addrs = out(h.tapnet(&["exec", &shared, "--", "ip", "-4", "-o", "addr", "show", "eth0"]));
    assert!(addrs.contains(&format!("{ip_a}/24")), "{addrs}");
    // a cannot go while another container lives in its namespace.
    let err = h.fails(&["container", "rm", &a]);
    assert!(err.contains("shares its network namespace"), "{err}");

    // host: no namespace of its own; exec lands in the daemon's namespace.
    h.ok(&["container", "create", &hostc, "--network", "host"]);
    let ns_host = out(sh("ip", &["netns", "exec", &h.hostns, "readlink", "/proc/self/ns/net"]));
    let ns_o = out(h.tapnet(&["exec", &hostc, "--", "readlink", "/proc/self/ns/net"]));
    assert_eq!(ns_host, ns_o);
    assert!(!netns_list().contains(&hostc), "host mode made a namespace");
    let modes: Vec<String> = h
        .json(&["container", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["network_mode"].as_str().unwrap().to_string())
        .collect();
    assert!(
        modes.contains(&"none".to_string())
            && modes.contains(&"host".to_string())
            && modes.contains(&format!("container:{a}")),
        "{modes:?}"
    );

    h.ok(&["container", "rm", &shared]);
    h.ok(&["container", "rm", &a]);
    h.ok(&["container", "rm", &none]);
    h.ok(&["container", "rm", &hostc]);
    let left = netns_list();
    assert!(!left.contains(&a) && !left.contains(&none), "{left:?}");
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn connect_and_disconnect() {
    let h = Host::start("mc", &["--workers", "2"]);
    h.network("front", "10.211.0.0/24", &[]);
    h.network("back", "10.212.0.0/24", &[]);
    let (a, b) = (h.name("a"), h.name("b"));
    h.container(&a, "front");
    let (ip_b, _) = h.container(&b, "back");
    assert!(!ping(&a, &ip_b, 1), "networks should not reach each other yet");

    let v = h.json(&["network", "connect", "back", &a, "--ip", "10.212.0.77"]);
    let eps = v["networks"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[1]["interface"], "eth1");
    assert_eq!(eps[1]["ipv4_address"], "10.212.0.77/24");
    let eth1 = out(sh("ip", &["-n", &a, "-4", "-o", "addr", "show", "eth1"]));
    assert!(eth1.contains("10.212.0.77/24"), "{eth1}");
    assert!(ping(&a, &ip_b, 2), "connected container cannot reach the other network");
    let insp = h.json(&["network", "inspect", "back"]);
    assert_eq!(insp["containers"].as_array().unwrap().len(), 2, "{insp}");
    // The first interface keeps the default route.
    let route = out(sh("ip", &["-n", &a, "route", "show", "default"]));
    assert!(route.contains("dev eth0"), "{route}");

    h.fails(&["network", "connect", "back", &a]);
    h.ok(&["network", "disconnect", "back", &a]);
    assert!(!sh("ip", &["-n", &a, "link", "show", "eth1"]).status.success(), "eth1 still exists");
    assert!(!ping(&a, &ip_b, 1));
    h.fails(&["network", "disconnect", "back", &a]);
    // The address went back to the pool.
    let c = h.name("c");
    h.ok(&["container", "create", &c, "--network", "back", "--ip", "10.212.0.77"]);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn containers_ping_each_other_by_name() {
    let h = Host::start("mn", &["--workers", "1"]);
    h.network("n1", "10.213.0.0/24", &[]);
    h.network("n2", "10.214.0.0/24", &[]);
    let (a, b, x) = (h.name("a"), h.name("b"), h.name("x"));
    h.container(&a, "n1");
    h.container(&b, "n1");
    h.container(&x, "n2");
    // `ip netns exec` bind-mounts /etc/netns/NAME/{hosts,resolv.conf} over
    // /etc: names come from the DNS at the gateways of the container's
    // networks, each knowing the containers on its network.
    assert!(ping(&a, &b, 1), "{a} cannot ping {b} by name");
    assert!(h.tapnet(&["exec", &b, "--", "ping", "-c", "1", "-W", "1", &a]).status.success());
    let resolves = |from: &str, name: &str| {
        let out = sh("ip", &["netns", "exec", from, "getent", "hosts", name]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).split_whitespace().any(|w| w == name)
    };
    // The hosts file names the container itself only: no other container's
    // files change when one comes or goes.
    let hosts_names = |c: &str| -> Vec<String> {
        std::fs::read_to_string(format!("/etc/netns/{c}/hosts"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
            .collect()
    };
    assert_eq!(hosts_names(&a), ["localhost", "localhost", a.as_str()]);
    // Only containers sharing a network resolve each other.
    assert!(resolves(&a, &b));
    assert!(!resolves(&a, &x) && !resolves(&x, &a));
    h.ok(&["network", "connect", "n1", &x]);
    // x asks n2's gateway first, which refuses a's name, then n1's.
    assert!(resolves(&a, &x) && resolves(&x, &a) && ping(&x, &a, 1));
    h.ok(&["network", "disconnect", "n1", &x]);
    assert!(!resolves(&a, &x));
    h.ok(&["container", "rm", &b]);
    assert!(!resolves(&a, &b));
    assert!(!std::path::Path::new(&format!("/etc/netns/{b}")).exists(), "hosts file left behind");
    drop(h);
    assert!(!std::path::Path::new(&format!("/etc/netns/{a}")).exists(), "hosts file left behind");
}
