//! The gateway, the uplink and NAT end to end: a daemon in its own host
//! namespace (no nftables or iptables rule there, IP forwarding off) whose
//! uplink is one end of a veth pair; the other end lives in an "outside"
//! namespace. Real TCP, UDP, ping and dig, observed from both sides and
//! through `tapnet conntrack` and `tapnet stats`.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bench::traffic::{self, Endpoint};
use common::*;

/// A daemon whose uplink is `up0`, joined to an outside namespace at
/// `NET.1`; the daemon owns `NET.2`.
fn nat_host(tag: &str, net: &str, extra: &[&str]) -> (Host, Outside) {
    let mut h = Host::new(tag);
    let o = Outside::new(&h, net);
    let mut args = o.daemon_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    h.spawn(&args);
    (h, o)
}

fn sa(ip: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.parse().unwrap(), port)
}

/// Listen in `server_ns` at `bind`, connect from `client_ns` to `target`,
/// exchange a line both ways. Returns the client address the server saw.
fn tcp_exchange(
    server_ns: &str,
    bind: SocketAddrV4,
    client_ns: &str,
    target: SocketAddrV4,
) -> Result<SocketAddr, String> {
    // The previous exchange on the same address may still hold it for a
    // moment (its sockets closing): bind again for up to 3 s.
    let t0 = Instant::now();
    let listener = loop {
        match in_ns(server_ns, || TcpListener::bind(bind)) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && t0.elapsed() < Duration::from_secs(3) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            r => break r.map_err(|e| format!("bind {bind}: {e}"))?,
        }
    };
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || -> Result<SocketAddr, String> {
        let t0 = Instant::now();
        let (mut s, peer) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && t0.elapsed() < Duration::from_secs(6) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).map_err(|e| format!("server read: {e}"))?;
        s.write_all(b"pong\n").map_err(|e| format!("server write: {e}"))?;
        Ok(peer)
    });
    let client = in_ns(client_ns, || TcpStream::connect_timeout(&target.into(), Duration::from_secs(5)));
    let res = client.map_err(|e| format!("connect {target}: {e}")).and_then(|mut c| {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"ping\n").map_err(|e| format!("client write: {e}"))?;
        let mut b = [0u8; 5];
        c.read_exact(&mut b).map_err(|e| format!("client read: {e}"))?;
        if &b != b"pong\n" {
            return Err(format!("bad reply {b:?}"));
        }
        Ok(())
    });
    let peer = server.join().unwrap();
    res?;
    peer
}

/// One UDP datagram from `client_ns` to `target`, answered by a server in
/// `server_ns` at `bind`. Returns the client address the server saw.
fn udp_exchange(
    server_ns: &str,
    bind: SocketAddrV4,
    client_ns: &str,
    target: SocketAddrV4,
) -> Result<SocketAddr, String> {
    let server = in_ns(server_ns, || UdpSocket::bind(bind)).map_err(|e| format!("bind {bind}: {e}"))?;
    server.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let client = in_ns(client_ns, || UdpSocket::bind("0.0.0.0:0")).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    client.send_to(b"ping", target).map_err(|e| format!("send: {e}"))?;
    let mut b = [0u8; 16];
    let (n, peer) = server.recv_from(&mut b).map_err(|e| format!("server recv: {e}"))?;
    server.send_to(&b[..n], peer).map_err(|e| format!("server send: {e}"))?;
    let (m, from) = client.recv_from(&mut b).map_err(|e| format!("client recv: {e}"))?;
    if m != n || from != SocketAddr::V4(target) {
        return Err(format!("reply of {m} bytes from {from}, expected {n} from {target}"));
    }
    Ok(peer)
}

fn ip_of(peer: SocketAddr) -> String {
    peer.ip().to_string()
}

fn out(prog: &str, args: &[&str]) -> String {
    let o = sh(prog, args);
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn link_mac(ns: &str, ifname: &str) -> [u8; 6] {
    let s = out("ip", &["-n", ns, "-o", "link", "show", ifname]);
    let mac = s.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).expect("a MAC");
    parse_mac(mac)
}

fn conntrack(h: &Host) -> Vec<serde_json::Value> {
    h.json(&["conntrack"])["entries"].as_array().unwrap().clone()
}

fn router_event(h: &Host, name: &str) -> u64 {
    h.json(&["stats"])["router"][name].as_u64().unwrap()
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and a veth uplink"]
fn the_gateway_and_the_uplink_answer_and_the_host_namespace_stays_clean() {
    let (h, o) = nat_host("na", "10.250.1", &["--workers", "2"]);
    h.network("n", "10.230.0.0/24", &[]);
    let a = h.name("a");
    h.container(&a, "n");

    // No kernel NAT, no kernel forwarding in the daemon's namespace.
    let rules = out("ip", &["netns", "exec", &h.hostns, "nft", "list", "ruleset"]);
    assert!(rules.trim().is_empty(), "nft ruleset in the daemon's namespace: {rules}");
    let saved = out("ip", &["netns", "exec", &h.hostns, "iptables-save"]);
    assert!(!saved.lines().any(|l| l.starts_with("-A")), "iptables rules: {saved}");
    let fwd = out("ip", &["netns", "exec", &h.hostns, "cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(fwd.trim(), "0");
    // The kernel does not hold the uplink address.
    let addrs = out("ip", &["-n", &h.hostns, "-4", "-o", "addr", "show", "up0"]);
    assert!(!addrs.contains(&o.uplink_ip()), "{addrs}");

    // The gateway answers ARP (with its pinned MAC) and ping.
    assert!(ping(&a, "10.230.0.1", 2), "the gateway does not answer ping");
    let neigh = out("ip", &["-n", &a, "neigh", "show", "10.230.0.1"]);
    assert!(neigh.contains("02:42:0a:e6:00:01"), "{neigh}");
    // The uplink address answers ping from the outside and from inside.
    assert!(ping(&o.ns, &o.uplink_ip(), 2), "the uplink address does not answer ping");
    assert!(ping(&a, &o.uplink_ip(), 2));
    let neigh = out("ip", &["-n", &o.ns, "neigh", "show", &o.uplink_ip()]);
    let up0 = link_mac(&h.hostns, "up0");
    let want = up0.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    assert!(neigh.contains(&want), "the outside resolved the uplink to {neigh}, not {want}");
    assert!(router_event(&h, "arp_replied") >= 2);
    assert!(router_event(&h, "echo_replied") >= 6);

    // Refused: an uplink address the kernel holds, and a missing interface.
    let mut bad = Host::new("nA");
    let o2 = Outside::new(&bad, "10.250.2");
    ip(&["-n", &bad.hostns, "addr", "add", &format!("{}/24", o2.uplink_ip()), "dev", "up0"]);
    let args = o2.daemon_args();
    let mut cmd = std::process::Command::new(tapnet_bin());
    cmd.args(["daemon", "--netns", &bad.hostns, "--socket"])
        .arg(&bad.socket)
        .arg("--state-dir")
        .arg(&bad.state)
        .args(&args);
    let r = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(err.contains("the kernel holds") && err.contains("macvlan"), "{err}");
    // With macvlan the host keeps an address of its own on the interface
    // while tapnet owns another.
    ip(&["-n", &bad.hostns, "addr", "del", &format!("{}/24", o2.uplink_ip()), "dev", "up0"]);
    ip(&["-n", &bad.hostns, "addr", "add", "10.250.2.3/24", "dev", "up0"]);
    bad.spawn(&[&args[0], &args[1], &args[2], &args[3], "--uplink-mode", "macvlan"]);
    let links = out("ip", &["-n", &bad.hostns, "-d", "link", "show"]);
    assert!(links.contains("macvlan mode bridge"), "{links}");
    assert!(ping(&o2.ns, &o2.uplink_ip(), 2), "the macvlan uplink does not answer");
    assert!(ping(&o2.ns, "10.250.2.3", 1), "the host lost its own address");
    bad.stop(libc::SIGTERM);
    let links = out("ip", &["-n", &bad.hostns, "-d", "link", "show"]);
    assert!(!links.contains("macvlan"), "the macvlan was left behind: {links}");
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and a veth uplink"]
fn masquerade_tcp_udp_and_ping_to_the_outside() {
    let (h, o) = nat_host("nm", "10.250.3", &["--workers", "2"]);
    h.network("n", "10.231.0.0/24", &[]);
    let a = h.name("a");
    let (ip_a, _) = h.container(&a, "n");

    let peer = tcp_exchange(&o.ns, sa(&o.ip(), 7000), &a, sa(&o.ip(), 7000)).expect("TCP out");
    assert_eq!(ip_of(peer), o.uplink_ip(), "the outside must see the uplink address");
    let peer = udp_exchange(&o.ns, sa(&o.ip(), 7001), &a, sa(&o.ip(), 7001)).expect("UDP out");
    assert_eq!(ip_of(peer), o.uplink_ip());
    assert!(ping(&a, &o.ip(), 3), "ping through NAT");

    let ct = conntrack(&h);
    let tcp = ct.iter().find(|e| e["protocol"] == "tcp").expect("a TCP entry");
    assert_eq!(tcp["kind"], "SNAT");
    assert!(tcp["original"].as_str().unwrap().starts_with(&format!("{ip_a}:")), "{tcp}");
    assert!(tcp["translated"].as_str().unwrap().starts_with(&format!("{}:", o.uplink_ip())), "{tcp}");
    assert_eq!(tcp["container"], a.as_str());
    assert!(ct.iter().any(|e| e["protocol"] == "udp" && e["kind"] == "SNAT"), "{ct:?}");
    assert!(ct.iter().any(|e| e["protocol"] == "icmp" && e["kind"] == "SNAT"), "{ct:?}");

    // 40 MB verified through the NAT, GSO super-frames kept whole.
    let (pa, po) = (PathBuf::from(format!("/var/run/netns/{a}")), o.path());
    let bytes = 40_000_000u64;
    let r = traffic::tcp_bulk(
        Endpoint::new(Some(&po), o.ip().parse().unwrap()),
        Endpoint::new(Some(&pa), ip_a.parse().unwrap()),
        7002,
        1,
        Some(bytes),
        Duration::from_secs(60),
        true,
    )
    .expect("bulk through NAT");
    assert_eq!(r.bytes, bytes);
    assert!(r.verified);
    let up = h.port_stats("uplink:up0");
    assert!(up["tx_bytes"].as_u64().unwrap() > bytes, "{up}");
    assert!(up["tx_packets"].as_u64().unwrap() < bytes / 1448, "GSO frames were cut up: {up}");
    assert!(router_event(&h, "flows_created") >= 4);
}

/// The workers holding the connection-table entries of `kind` whose
/// original tuple ends in `to`.
fn workers_of(h: &Host, kind: &str, to: &str) -> (usize, std::collections::BTreeSet<u64>) {
    let ct = conntrack(h);
    let e: Vec<&serde_json::Value> =
        ct.iter().filter(|e| e["kind"] == kind && e["original"].as_str().unwrap().ends_with(to)).collect();
    (e.len(), e.iter().map(|e| e["worker"].as_u64().unwrap()).collect())
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and a veth uplink"]
fn flows_to_one_server_and_from_one_client_spread_over_the_workers() {
    // What used to put every flow on one worker: many connections to one
    // server (the remote end the same for all), and one Linux client's
    // connections (source ports all even).
    let (h, o) = nat_host("ns", "10.250.11", &["--workers", "2"]);
    h.network("n", "10.243.0.0/24", &[]);
    let a = h.name("a");
    h.container(&a, "n");
    let web = h.name("web");
    let v = h.json(&["container", "create", &web, "--network", "n", "-p", "8080:80"]);
    let ip_web = v["networks"][0]["ipv4_address"].as_str().unwrap().split('/').next().unwrap().to_string();
    const N: usize = 16;
    let mut client_ports = Vec::new();
    for _ in 0..N {
        tcp_exchange(&o.ns, sa(&o.ip(), 7100), &a, sa(&o.ip(), 7100)).expect("TCP out");
        udp_exchange(&o.ns, sa(&o.ip(), 7101), &a, sa(&o.ip(), 7101)).expect("UDP out");
        let peer = tcp_exchange(&web, sa(&ip_web, 80), &o.ns, sa(&o.uplink_ip(), 8080)).expect("published TCP");
        client_ports.push(peer.port());
    }
    // (With 2 workers and fair hashing, all 16 on one worker: 1 in 32768.)
    for (kind, to) in [("SNAT", format!("{}:7100", o.ip())), ("SNAT", format!("{}:7101", o.ip()))] {
        let (n, workers) = workers_of(&h, kind, &to);
        assert_eq!(n, N, "{kind} to {to}");
        assert_eq!(workers.len(), 2, "{kind} flows to {to} all on worker {workers:?}");
    }
    assert!(client_ports.iter().all(|p| p % 2 == client_ports[0] % 2), "the client's ports: {client_ports:?}");
    let (n, workers) = workers_of(&h, "DNAT", &format!("{}:8080", o.uplink_ip()));
    assert_eq!(n, N);
    assert_eq!(workers.len(), 2, "DNAT flows from one client all on worker {workers:?}");
    // The kernel's steering and the router agreed on every frame.
    assert_eq!(router_event(&h, "uplink_missteered"), 0);
    assert!(router_event(&h, "flows_created") >= 3 * N as u64);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and a veth uplink"]
fn published_tcp_udp_and_range_ports_reach_the_container() {
    let (h, o) = nat_host("np", "10.250.4", &["--workers", "2"]);
    h.network("n", "10.232.0.0/24", &[]);
    let web = h.name("web");
    let v = h.json(&[
        "container",
        "create",
        &web,
        "--network",
        "n",
        "-p",
        "8080:80/tcp",
        "-p",
        "5353:53/udp",
        "-p",
        "9000-9002:9000-9002/tcp",
        "-p",
        &format!("{}:8443:443", o.uplink_ip()),
    ]);
    let ip_web = v["networks"][0]["ipv4_address"].as_str().unwrap().split('/').next().unwrap().to_string();
    let ports = v["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 6, "{v}");
    assert!(ports.iter().any(|p| p["host_port"] == 5353 && p["protocol"] == "udp" && p["container_port"] == 53));
    assert_eq!(h.json(&["container", "inspect", &web])["ports"].as_array().unwrap().len(), 6);

    // The server sees the real client: DNAT only.
    let peer = tcp_exchange(&web, sa(&ip_web, 80), &o.ns, sa(&o.uplink_ip(), 8080)).expect("published TCP");
    assert_eq!(ip_of(peer), o.ip());
    let peer = udp_exchange(&web, sa(&ip_web, 53), &o.ns, sa(&o.uplink_ip(), 5353)).expect("published UDP");
    assert_eq!(ip_of(peer), o.ip());
    for p in 9000..=9002 {
        tcp_exchange(&web, sa(&ip_web, p), &o.ns, sa(&o.uplink_ip(), p)).expect("published range");
    }
    tcp_exchange(&web, sa(&ip_web, 443), &o.ns, sa(&o.uplink_ip(), 8443)).expect("published with an address");
    assert!(conntrack(&h).iter().any(|e| e["kind"] == "DNAT" && e["container"] == web.as_str()));
    // An unpublished port is closed.
    assert!(tcp_exchange(&web, sa(&ip_web, 81), &o.ns, sa(&o.uplink_ip(), 8081)).is_err());

    // 40 MB verified through DNAT.
    let (pw, po) = (PathBuf::from(format!("/var/run/netns/{web}")), o.path());
    let r = traffic::tcp_bulk(
        Endpoint::new(Some(&pw), ip_web.parse().unwrap()).via(sa(&o.uplink_ip(), 8080)),
        Endpoint::new(Some(&po), o.ip().parse().unwrap()),
        80,
        1,
        Some(40_000_000),
        Duration::from_secs(60),
        true,
    )
    .expect("bulk through DNAT");
    assert!(r.verified && r.bytes == 40_000_000);

    // A host port published twice: a clear error, and nothing changes.
    let other = h.name("x");
    let before = h.json(&["container", "ls"]);
    let err = h.fails(&["container", "create", &other, "--network", "n", "-p", "8080:81"]);
    assert!(err.contains("8080/tcp is already published") && err.contains(&web), "{err}");
    let err = h.fails(&["container", "create", &other, "--network", "n", "-p", "9001/tcp"]);
    assert!(err.contains("invalid published port"), "{err}");
    assert_eq!(h.json(&["container", "ls"]), before);
    assert!(!netns_list().contains(&other));
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and a veth uplink"]
fn hairpin_reaches_published_ports_from_inside() {
    let (h, o) = nat_host("nh", "10.250.5", &["--workers", "2"]);
    h.network("n1", "10.233.0.0/24", &[]);
    h.network("n2", "10.234.0.0/24", &[]);
    let (web, a, b) = (h.name("web"), h.name("a"), h.name("b"));
    let v = h.json(&["container", "create", &web, "--network", "n1", "-p", "8080:80"]);
    let ip_web = v["networks"][0]["ipv4_address"].as_str().unwrap().split('/').next().unwrap().to_string();
    h.container(&a, "n1");
    h.container(&b, "n2");
    for client in [&a, &b, &web] {
        let peer = tcp_exchange(&web, sa(&ip_web, 80), client, sa(&o.uplink_ip(), 8080))
            .unwrap_or_else(|e| panic!("hairpin from {client}: {e}"));
        // The target answers the gateway, which translates back.
        assert_eq!(ip_of(peer), o.uplink_ip(), "from {client}");
    }
    assert!(conntrack(&h).iter().filter(|e| e["kind"] == "HAIRPIN").count() >= 3);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and a veth uplink"]
fn icmp_errors_from_the_outside_arrive_translated() {
    let (h, o) = nat_host("ni", "10.250.6", &["--workers", "2", "--uplink-gateway", "10.250.6.1"]);
    // A router (the outside namespace) in front of a far host, on a link
    // with a smaller MTU.
    let far = h.name("f");
    ip(&["netns", "add", &far]);
    ip(&["-n", &o.ns, "link", "add", "eth1", "mtu", "1400", "type", "veth", "peer", "name", "eth0", "netns", &far]);
    ip(&["-n", &o.ns, "addr", "add", "10.251.6.1/24", "dev", "eth1"]);
    ip(&["-n", &o.ns, "link", "set", "eth1", "up"]);
    ip(&["-n", &far, "link", "set", "eth0", "mtu", "1400"]);
    ip(&["-n", &far, "addr", "add", "10.251.6.2/24", "dev", "eth0"]);
    ip(&["-n", &far, "link", "set", "eth0", "up"]);
    ip(&["-n", &far, "link", "set", "lo", "up"]);
    ip(&["-n", &far, "route", "add", "default", "via", "10.251.6.1"]);
    sh("ip", &["netns", "exec", &o.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    h.network("n", "10.235.0.0/24", &[]);
    let a = h.name("a");
    h.container(&a, "n");
    assert!(ping(&a, "10.251.6.2", 2), "the far host is not reachable");

    // Port unreachable from the far host, about a masqueraded datagram.
    let refused = in_ns(&a, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.connect("10.251.6.2:9").unwrap();
        s.send(b"x").unwrap();
        let mut b = [0u8; 8];
        s.recv(&mut b).err().map(|e| e.kind())
    });
    assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused), "no port unreachable came back");

    // Traceroute's steps: TTL 1 dies at the gateway, TTL 2 at the router,
    // whose error comes back translated.
    let t1 = out("ip", &["netns", "exec", &a, "ping", "-n", "-c", "1", "-W", "2", "-t", "1", "10.251.6.2"]);
    assert!(t1.contains("From 10.235.0.1") && t1.contains("Time to live exceeded"), "{t1}");
    let t2 = out("ip", &["netns", "exec", &a, "ping", "-n", "-c", "1", "-W", "2", "-t", "2", "10.251.6.2"]);
    assert!(t2.contains("From 10.250.6.1") && t2.contains("Time to live exceeded"), "{t2}");

    // Path MTU discovery: the router's fragmentation-needed reaches the
    // container, whose kernel then knows the path's MTU.
    let big =
        out("ip", &["netns", "exec", &a, "ping", "-n", "-c", "2", "-W", "2", "-M", "do", "-s", "1450", "10.251.6.2"]);
    assert!(big.contains("mtu = 1400") || big.contains("mtu=1400"), "{big}");
    let route = out("ip", &["-n", &a, "route", "get", "10.251.6.2"]);
    assert!(route.contains("mtu 1400"), "{route}");
    // And TCP adapts: 4 MB verified across the smaller link.
    let (pa, pf) = (PathBuf::from(format!("/var/run/netns/{a}")), PathBuf::from(format!("/var/run/netns/{far}")));
    let ip_a: Ipv4Addr = h.json(&["container", "inspect", &a])["networks"][0]["ipv4_address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let r = traffic::tcp_bulk(
        Endpoint::new(Some(&pf), "10.251.6.2".parse().unwrap()),
        Endpoint::new(Some(&pa), ip_a),
        7003,
        1,
        Some(4_000_000),
        Duration::from_secs(60),
        true,
    )
    .expect("TCP across the smaller MTU");
    assert!(r.verified);
    assert!(router_event(&h, "icmp_translated") >= 3, "{}", h.json(&["stats"])["router"]);
    assert!(router_event(&h, "icmp_sent") >= 1);
    // Each error reached the worker owning the flow it quotes.
    assert_eq!(router_event(&h, "uplink_missteered"), 0);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and a veth uplink"]
fn conntrack_expires_and_a_full_table_refuses_only_new_flows() {
    let (h, o) = nat_host(
        "nc",
        "10.250.7",
        &[
            "--workers",
            "1",
            "--conntrack-max",
            "8",
            "--conntrack-timeout",
            "udp=2",
            "--conntrack-timeout",
            "udp-stream=2",
        ],
    );
    h.network("n", "10.236.0.0/24", &[]);
    let a = h.name("a");
    h.container(&a, "n");

    // An established TCP connection, kept open.
    let listener = in_ns(&o.ns, || TcpListener::bind(sa(&o.ip(), 7100))).unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut conn = in_ns(&a, || TcpStream::connect_timeout(&sa(&o.ip(), 7100).into(), Duration::from_secs(5))).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let roundtrip = |c: &mut TcpStream| -> bool {
        let mut b = [0u8; 1];
        c.write_all(b"x").is_ok() && c.read_exact(&mut b).is_ok() && b == *b"x"
    };
    assert!(roundtrip(&mut conn));

    // Fill the table with one-way UDP flows.
    let server = in_ns(&o.ns, || UdpSocket::bind(sa(&o.ip(), 7101))).unwrap();
    server.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let send_one = || {
        let s = in_ns(&a, || UdpSocket::bind("0.0.0.0:0")).unwrap();
        s.send_to(b"u", sa(&o.ip(), 7101)).unwrap();
        let mut b = [0u8; 4];
        server.recv_from(&mut b).is_ok()
    };
    for i in 0..7 {
        assert!(send_one(), "UDP flow {i} did not get through");
    }
    assert_eq!(conntrack(&h).len(), 8);
    let full_before = h.drops("conntrack_full");
    assert!(!send_one(), "a new flow got through a full table");
    assert!(h.drops("conntrack_full") > full_before);
    assert_eq!(conntrack(&h).len(), 8);
    // The established flow keeps working.
    assert!(roundtrip(&mut conn), "a full table broke an established flow");

    // The UDP entries expire (2 s); new flows work again.
    std::thread::sleep(Duration::from_millis(3500));
    let left = conntrack(&h);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["protocol"], "tcp");
    assert!(send_one(), "no new flow after expiry");
    assert!(roundtrip(&mut conn));
    drop(conn);
    echo.join().unwrap();
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices, a veth uplink and dig"]
fn dns_answers_within_a_network_not_across() {
    let (h, _o) = nat_host("nd", "10.250.8", &["--workers", "2"]);
    h.network("n1", "10.237.0.0/24", &[]);
    h.network("n2", "10.238.0.0/24", &[]);
    let (a, b, c) = (h.name("a"), h.name("b"), h.name("c"));
    h.container(&a, "n1");
    let (ip_b, _) = h.container(&b, "n1");
    h.container(&c, "n2");
    let resolv = std::fs::read_to_string(format!("/etc/netns/{a}/resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.237.0.1"), "{resolv}");

    let dig = |args: &[&str]| {
        let mut v = vec!["netns", "exec", &a, "dig", "+time=2", "+tries=1"];
        v.extend_from_slice(args);
        out("ip", &v)
    };
    // Over UDP and TCP, at the gateway; and through resolv.conf.
    assert_eq!(dig(&["+short", "@10.237.0.1", &b]).trim(), ip_b);
    assert_eq!(dig(&["+short", "+tcp", "@10.237.0.1", &b]).trim(), ip_b);
    assert_eq!(dig(&["+short", &b.to_uppercase()]).trim(), ip_b);
    // Another network's name, and an unknown one: an answer at once, not a
    // time-out, and no address.
    let other = dig(&["@10.237.0.1", &c]);
    assert!(other.contains("status: REFUSED"), "{other}");
    let t0 = Instant::now();
    let unknown = dig(&["+tcp", "@10.237.0.1", "example.org"]);
    assert!(unknown.contains("status: REFUSED"), "{unknown}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    // From n2, c resolves but b does not.
    let mut v = vec!["netns", "exec", &c, "dig", "+short", "+time=2", "+tries=1", "@10.238.0.1"];
    v.push(&b);
    assert_eq!(out("ip", &v).trim(), "");

    // A malformed query is counted, and DNS goes on.
    let before = h.drops("dns_malformed");
    in_ns(&a, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(&[0x12, 0x34, 0x81], "10.237.0.1:53").unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(h.drops("dns_malformed") > before);
    assert_eq!(dig(&["+short", "@10.237.0.1", &b]).trim(), ip_b);
    assert!(router_event(&h, "dns_answered") >= 4);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and a veth uplink"]
fn internal_icc_false_and_masquerade_false() {
    let (h, o) = nat_host("nx", "10.250.9", &["--workers", "2"]);
    h.network("int", "10.239.0.0/24", &["--internal"]);
    h.network("noicc", "10.240.0.0/24", &["--icc=false"]);
    h.network("plain", "10.241.0.0/24", &["--masquerade=false"]);
    let (i, p, q, m) = (h.name("i"), h.name("p"), h.name("q"), h.name("m"));
    h.container(&i, "int");
    let (ip_p, _) = h.container(&p, "noicc");
    let (ip_q, _) = h.container(&q, "noicc");
    let (ip_m, _) = h.container(&m, "plain");
    let nets = h.json(&["network", "ls"]);
    let find = |n: &str| nets.as_array().unwrap().iter().find(|x| x["name"] == n).unwrap().clone();
    assert_eq!(find("int")["internal"], true);
    assert_eq!(find("noicc")["icc"], false);
    assert_eq!(find("plain")["masquerade"], false);

    // --internal: the gateway answers, nothing leaves.
    assert!(ping(&i, "10.239.0.1", 1));
    assert!(!ping(&i, &o.ip(), 1));
    assert!(h.drops("internal") >= 1);

    // --icc=false: the gateway, not each other.
    assert!(ping(&p, "10.240.0.1", 1) && ping(&q, "10.240.0.1", 1));
    assert!(!ping(&p, &ip_q, 1));
    assert!(!ping(&q, &ip_p, 1));
    assert!(h.drops("icc_blocked") >= 1);
    assert!(ping(&p, &o.ip(), 1), "icc=false must not stop traffic out");

    // --masquerade=false: the outside sees the container's own address
    // (and routes back to it through the uplink address).
    ip(&["-n", &o.ns, "route", "add", "10.241.0.0/24", "via", &o.uplink_ip()]);
    let peer = tcp_exchange(&o.ns, sa(&o.ip(), 7200), &m, sa(&o.ip(), 7200)).expect("TCP without masquerade");
    assert_eq!(ip_of(peer), ip_m);
    assert!(conntrack(&h).iter().any(|e| e["kind"] == "IDENTITY"));
    // The outside cannot open connections to it.
    assert!(tcp_exchange(&m, sa(&ip_m, 7201), &o.ns, sa(&ip_m, 7201)).is_err());
    assert!(h.drops("no_flow") >= 1);
}

/// An Ethernet frame from `src` to `dst` with IPv4 payload `ip`.
fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

fn tcp_syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1000, 64240).syn().write(&mut v, &[]).unwrap();
    v
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and a veth uplink"]
fn malformed_packets_and_a_syn_flood_are_counted_and_forwarding_goes_on() {
    let (h, o) = nat_host("nb", "10.250.10", &["--workers", "2", "--conntrack-max", "16"]);
    h.network("n", "10.242.0.0/24", &[]);
    let (a, b, web) = (h.name("a"), h.name("b"), h.name("web"));
    let (ip_a, mac_a) = h.container(&a, "n");
    let (ip_b, _) = h.container(&b, "n");
    h.json(&["container", "create", &web, "--network", "n", "-p", "8080:80"]);
    let mac_a = parse_mac(&mac_a);
    let gw = parse_mac("02:42:0a:f2:00:01");
    let a4: [u8; 4] = ip_a.parse::<Ipv4Addr>().unwrap().octets();

    // An established flow out, kept open through everything below.
    let listener = in_ns(&o.ns, || TcpListener::bind(sa(&o.ip(), 7300))).unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut conn = in_ns(&a, || TcpStream::connect_timeout(&sa(&o.ip(), 7300).into(), Duration::from_secs(5))).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let roundtrip = |c: &mut TcpStream| -> bool {
        let mut b = [0u8; 1];
        c.write_all(b"x").is_ok() && c.read_exact(&mut b).is_ok()
    };
    assert!(roundtrip(&mut conn));

    // Garbage at the gateway from a container.
    let good = tcp_syn(a4, 40000, [10, 250, 10, 1], 7300);
    let mut bad_csum = good.clone();
    bad_csum[10] ^= 0xff;
    let mut short_l4 = good.clone();
    short_l4.truncate(20 + 10);
    short_l4[2..4].copy_from_slice(&30u16.to_be_bytes());
    short_l4[10] = 0;
    short_l4[11] = 0;
    let c = !dataplane::wire::checksum::data(&short_l4[..20]);
    short_l4[10..12].copy_from_slice(&c.to_be_bytes());
    let mut bad_arp = vec![0, 1, 8, 0, 6, 16, 0, 1];
    bad_arp.resize(28, 0);
    let before = h.json(&["stats"])["drops"].clone();
    send_raw(
        &a,
        "eth0",
        &[
            eth(gw, mac_a, 0x0800, &bad_csum),
            eth(gw, mac_a, 0x0800, &short_l4),
            eth(gw, mac_a, 0x0806, &bad_arp),
            eth(gw, mac_a, 0x86dd, &[0x60, 0, 0, 0, 0, 0, 59, 64]),
            eth(gw, mac_a, 0x0800, &[0x45]),
        ],
    );
    // Garbage on the uplink, from the outside.
    let up0 = link_mac(&h.hostns, "up0");
    let omac = link_mac(&o.ns, "eth0");
    let mut bad_in = tcp_syn([10, 250, 10, 1], 5555, [10, 250, 10, 2], 8080);
    bad_in[10] ^= 0x55;
    let udp_closed = {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 250, 10, 1], [10, 250, 10, 2], 64)
            .udp(5555, 4444)
            .write(&mut v, b"x")
            .unwrap();
        v
    };
    send_raw(&o.ns, "eth0", &[eth(up0, omac, 0x0800, &bad_in), eth(up0, omac, 0x0800, &udp_closed)]);
    std::thread::sleep(Duration::from_millis(300));
    let after = h.json(&["stats"])["drops"].clone();
    let grew = |r: &str| after[r].as_u64().unwrap() > before[r].as_u64().unwrap();
    for r in ["bad_ipv4", "bad_l4", "bad_arp", "not_ipv4", "no_flow"] {
        assert!(grew(r), "{r} not counted: {after}");
    }

    // A SYN flood to the published port fills the table to its bound, no
    // further.
    let flood: Vec<Vec<u8>> = (0..200u16)
        .map(|i| eth(up0, omac, 0x0800, &tcp_syn([10, 250, 10, 1], 20000 + i, [10, 250, 10, 2], 8080)))
        .collect();
    send_raw(&o.ns, "eth0", &flood);
    std::thread::sleep(Duration::from_millis(500));
    let n = conntrack(&h).len();
    assert!(n <= 16, "{n} entries for a bound of 16");
    assert!(n >= 14, "the flood should fill the table: {n}");
    assert!(h.drops("conntrack_full") >= 150, "{}", h.json(&["stats"])["drops"]);

    // Forwarding goes on: the established flow, and the bridge.
    assert!(roundtrip(&mut conn), "the established flow broke");
    assert!(ping(&a, &ip_b, 2));
    drop(conn);
    echo.join().unwrap();
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and a veth uplink"]
fn an_unanswered_next_hop_is_asked_once_a_second_and_its_frames_dropped() {
    // The next hop .99 does not exist on the uplink's LAN.
    let (h, o) = nat_host("na", "10.250.12", &["--workers", "2", "--uplink-gateway", "10.250.12.99"]);
    h.network("n", "10.246.0.0/24", &[]);
    let a = h.name("a");
    h.container(&a, "n");
    let before = router_event(&h, "arp_requested");
    // 20 echo requests over 4 s to a host behind that next hop: each waits
    // for ARP, which never comes.
    let t0 = Instant::now();
    assert!(!ping_for(&a, "198.51.100.1", 20, "0.2"), "nothing can answer");
    let secs = t0.elapsed().as_secs_f64();
    let asked = router_event(&h, "arp_requested") - before;
    // The kernel asks 3 times per 3 s; one request per second and address
    // (whichever worker asks), so at most one per started second.
    assert!(asked >= 2 && asked as f64 <= secs + 2.0, "{asked} ARP requests in {secs:.1} s");
    // The waiting frames are dropped after 3 s and counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.drops("arp_unresolved") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(h.drops("arp_unresolved") > 0);
    // Forwarding to the LAN itself goes on.
    assert!(ping(&a, &o.ip(), 2), "the uplink's own subnet is reachable");
}

/// `ping -c COUNT -i INTERVAL -W 1 DST` in `ns`: true if every echo was
/// answered.
fn ping_for(ns: &str, dst: &str, count: u32, interval: &str) -> bool {
    let c = count.to_string();
    sh("ip", &["netns", "exec", ns, "ping", "-q", "-c", &c, "-i", interval, "-W", "1", dst]).status.success()
}
