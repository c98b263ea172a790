//! Overlay networks end to end: two simulated hosts, each a namespace with
//! its own daemon, joined by a veth underlay (`ul0` on both, 192.168.X.1
//! and .2), two containers per host on one VXLAN or GRE network. The
//! kernel has no vxlan or gre device in any of it; tshark and a kernel
//! vxlan device (interop) are independent observers.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use bench::traffic::{self, Endpoint};
use common::*;

/// Two hosts joined by an underlay `192.168.{net}.0/24`.
struct Pair {
    a: Host,
    b: Host,
    ua: String,
    ub: String,
}

fn pair(tag_a: &str, tag_b: &str, net: u8) -> Pair {
    let mut a = Host::new(tag_a);
    let mut b = Host::new(tag_b);
    ip(&["-n", &a.hostns, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", &b.hostns]);
    let (ua, ub) = (format!("192.168.{net}.1"), format!("192.168.{net}.2"));
    for (h, addr) in [(&a, &ua), (&b, &ub)] {
        ip(&["-n", &h.hostns, "addr", "add", &format!("{addr}/24"), "dev", "ul0"]);
        ip(&["-n", &h.hostns, "link", "set", "ul0", "up"]);
        ip(&["-n", &h.hostns, "link", "set", "lo", "up"]);
    }
    a.spawn(&["--workers", "2"]);
    b.spawn(&["--workers", "2"]);
    Pair { a, b, ua, ub }
}

#[allow(clippy::too_many_arguments)]
fn overlay(
    h: &Host,
    name: &str,
    driver: &str,
    id: u32,
    subnet: &str,
    range: &str,
    me: &str,
    peer: &str,
    extra: &[&str],
) {
    let id = id.to_string();
    let idflag = if driver == "vxlan" { "--vni" } else { "--key" };
    let mut a = vec![
        "network",
        "create",
        name,
        "--driver",
        driver,
        idflag,
        &id,
        "--subnet",
        subnet,
        "--ip-range",
        range,
        "--underlay",
        me,
        "--peer",
        peer,
    ];
    a.extend_from_slice(extra);
    h.ok(&a);
}

fn out(prog: &str, args: &[&str]) -> String {
    let o = sh(prog, args);
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/netns/{ns}"))
}

/// 20 MB, verified, from `client` to `server` (both containers).
fn bulk(server: &str, server_ip: &str, client: &str, client_ip: &str, port: u16) {
    let (ps, pc) = (ns_path(server), ns_path(client));
    let r = traffic::tcp_bulk(
        Endpoint::new(Some(&ps), server_ip.parse().unwrap()),
        Endpoint::new(Some(&pc), client_ip.parse().unwrap()),
        port,
        1,
        Some(20_000_000),
        Duration::from_secs(60),
        true,
    )
    .unwrap_or_else(|e| panic!("TCP {client} -> {server}: {e}"));
    assert!(r.verified && r.bytes == 20_000_000);
}

fn drops(h: &Host, reason: &str) -> u64 {
    h.drops(reason)
}

fn check_overlay(driver: &str, tags: (&str, &str), net: u8, id: u32) {
    let p = pair(tags.0, tags.1, net);
    overlay(&p.a, "ov", driver, id, "10.42.0.0/16", "10.42.1.0/24", &p.ua, &p.ub, &[]);
    overlay(&p.b, "ov", driver, id, "10.42.0.0/16", "10.42.2.0/24", &p.ub, &p.ua, &[]);
    let (a1, a2, b1, b2) = (p.a.name("1"), p.a.name("2"), p.b.name("1"), p.b.name("2"));
    let (ip_a1, mac_a1) = p.a.container(&a1, "ov");
    let (ip_a2, _) = p.a.container(&a2, "ov");
    let (ip_b1, mac_b1) = p.b.container(&b1, "ov");
    let (ip_b2, _) = p.b.container(&b2, "ov");
    assert_eq!(ip_a1, "10.42.1.1");
    assert_eq!(ip_b1, "10.42.2.1");
    // The MTU leaves room for the encapsulation.
    let want = if driver == "vxlan" { "mtu 1450" } else { "mtu 1458" };
    let link = out("ip", &["-n", &a1, "link", "show", "eth0"]);
    assert!(link.contains(want), "{link}");
    assert_eq!(
        p.a.json(&["network", "inspect", "ov"])["overlay"]["path_mtu"],
        if driver == "vxlan" { 1450 } else { 1458 }
    );

    // Ping across hosts, both ways, and on the same host.
    assert!(ping(&a1, &ip_b1, 3), "{driver}: {a1} cannot ping {ip_b1}");
    assert!(ping(&b2, &ip_a2, 3));
    assert!(ping(&a1, &ip_a2, 1));
    // Remote MACs are learned on the VTEP they came from.
    let fdb = p.a.fdb("ov");
    assert!(fdb.contains(&(mac_b1.clone(), format!("vtep:{}", p.ub))), "{fdb:?}");
    assert!(p.b.fdb("ov").contains(&(mac_a1, format!("vtep:{}", p.ua))));

    // A broadcast reaches every container of the network, on both hosts.
    let tx = |h: &Host, c: &str| h.port_stats(&format!("{c}:eth0"))["tx_packets"].as_u64().unwrap();
    let before = [tx(&p.a, &a2), tx(&p.b, &b1), tx(&p.b, &b2)];
    let mut bcast = vec![0xff; 6];
    bcast.extend_from_slice(&parse_mac(
        p.a.json(&["container", "inspect", &a1])["networks"][0]["mac_address"].as_str().unwrap(),
    ));
    bcast.extend_from_slice(&[0x88, 0xb5]);
    bcast.resize(60, 0x42);
    send_raw(&a1, "eth0", &[bcast]);
    std::thread::sleep(Duration::from_millis(300));
    let after = [tx(&p.a, &a2), tx(&p.b, &b1), tx(&p.b, &b2)];
    for k in 0..3 {
        assert!(after[k] > before[k], "the broadcast missed container {k}: {before:?} -> {after:?}");
    }

    // TCP across hosts, both ways: 64 KiB super-frames are segmented before
    // the tunnel and the segments coalesced after it.
    bulk(&b1, &ip_b1, &a1, &ip_a1, 7400);
    bulk(&a2, &ip_a2, &b2, &ip_b2, 7401);
}

#[test]
#[ignore = "needs root: two daemons, namespaces, TAP devices and a veth underlay"]
fn vxlan_between_two_hosts() {
    check_overlay("vxlan", ("va", "vb"), 101, 42);
}

#[test]
#[ignore = "needs root: two daemons, namespaces, TAP devices and a veth underlay"]
fn gre_between_two_hosts() {
    check_overlay("gre", ("ga", "gb"), 102, 42);
}

#[test]
#[ignore = "needs root: two daemons, namespaces, TAP devices, a veth underlay and tshark"]
fn gre_on_the_wire_is_gre_with_a_key_and_ethernet_inside() {
    let p = pair("ta", "tb", 103);
    overlay(&p.a, "g", "gre", 77, "10.44.0.0/16", "10.44.1.0/24", &p.ua, &p.ub, &[]);
    overlay(&p.b, "g", "gre", 77, "10.44.0.0/16", "10.44.2.0/24", &p.ub, &p.ua, &[]);
    let (a1, b1) = (p.a.name("1"), p.b.name("1"));
    p.a.container(&a1, "g");
    let (ip_b1, _) = p.b.container(&b1, "g");
    let pcap = std::env::temp_dir().join(format!("{}.pcap", p.a.prefix));
    let mut cap = std::process::Command::new("ip")
        .args(["netns", "exec", &p.b.hostns, "tshark", "-q", "-i", "ul0", "-f", "ip proto 47", "-c", "4", "-w"])
        .arg(&pcap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(ping(&a1, &ip_b1, 3));
    let t0 = std::time::Instant::now();
    while cap.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = cap.kill();
    let _ = cap.wait();
    let fields = out(
        "tshark",
        &[
            "-r",
            pcap.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "ip.proto",
            "-e",
            "gre.key",
            "-e",
            "gre.proto",
            "-e",
            "eth.type",
        ],
    );
    let _ = std::fs::remove_file(&pcap);
    let first = fields.lines().next().unwrap_or("");
    let cols: Vec<&str> = first.split('\t').collect();
    assert_eq!(cols.first(), Some(&"47"), "{fields}");
    // tshark prints the key in hex.
    assert!(
        cols.get(1).is_some_and(|k| k.trim_start_matches("0x").trim_start_matches('0') == "4d"),
        "key 77: {fields}"
    );
    assert_eq!(cols.get(2), Some(&"0x6558"), "{fields}");
    assert!(cols.get(3).is_some_and(|t| t.contains("0x0800") || t.contains("0x0806")), "{fields}");
}

#[test]
#[ignore = "needs root: two daemons, namespaces, TAP devices and a veth underlay"]
fn two_overlays_on_the_same_hosts_are_isolated() {
    let p = pair("ia", "ib", 104);
    overlay(&p.a, "o1", "vxlan", 42, "10.45.0.0/16", "10.45.1.0/24", &p.ua, &p.ub, &[]);
    overlay(&p.b, "o1", "vxlan", 42, "10.45.0.0/16", "10.45.2.0/24", &p.ub, &p.ua, &[]);
    overlay(&p.a, "o2", "vxlan", 43, "10.46.0.0/16", "10.46.1.0/24", &p.ua, &p.ub, &[]);
    overlay(&p.b, "o2", "vxlan", 43, "10.46.0.0/16", "10.46.2.0/24", &p.ub, &p.ua, &[]);
    let (x, y, z) = (p.a.name("x"), p.b.name("y"), p.b.name("z"));
    let (_, mac_x) = p.a.container(&x, "o1");
    let (ip_y, _) = p.b.container(&y, "o1");
    p.b.container(&z, "o2");
    assert!(ping(&x, &ip_y, 2));
    let z_tx = p.b.port_stats(&format!("{z}:eth0"))["tx_packets"].as_u64().unwrap();
    let mut bcast = vec![0xff; 6];
    bcast.extend_from_slice(&parse_mac(&mac_x));
    bcast.extend_from_slice(&[0x88, 0xb5]);
    bcast.resize(60, 0);
    send_raw(&x, "eth0", &[bcast.clone(), bcast]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(p.b.port_stats(&format!("{z}:eth0"))["tx_packets"].as_u64().unwrap(), z_tx, "VNI 42 leaked into 43");
    // A second network with the same VNI is refused.
    let err = p.a.fails(&[
        "network",
        "create",
        "o3",
        "--driver",
        "vxlan",
        "--vni",
        "42",
        "--subnet",
        "10.47.0.0/16",
        "--underlay",
        &p.ua,
        "--peer",
        &p.ub,
    ]);
    assert!(err.contains("VNI 42"), "{err}");
}

#[test]
#[ignore = "needs root: two daemons, namespaces, TAP devices and a veth underlay"]
fn mtu_is_set_and_oversized_df_packets_get_frag_needed() {
    let p = pair("ma", "mb", 105);
    // --mtu larger than the tunnel carries: the dataplane must say so.
    overlay(&p.a, "ov", "vxlan", 42, "10.48.0.0/16", "10.48.1.0/24", &p.ua, &p.ub, &["--mtu", "1500"]);
    overlay(&p.b, "ov", "vxlan", 42, "10.48.0.0/16", "10.48.2.0/24", &p.ub, &p.ua, &[]);
    let (a1, b1) = (p.a.name("1"), p.b.name("1"));
    p.a.container(&a1, "ov");
    let (ip_b1, _) = p.b.container(&b1, "ov");
    assert!(out("ip", &["-n", &b1, "link", "show", "eth0"]).contains("mtu 1450"));
    assert!(ping(&a1, &ip_b1, 1));
    let big = out("ip", &["netns", "exec", &a1, "ping", "-n", "-c", "2", "-W", "2", "-M", "do", "-s", "1472", &ip_b1]);
    assert!(big.contains("mtu = 1450") || big.contains("mtu=1450"), "{big}");
    assert!(drops(&p.a, "frag_needed") >= 1);
    // And the path MTU is then used: TCP gets through.
    bulk(&b1, &ip_b1, &a1, "10.48.1.1", 7402);
}

#[test]
#[ignore = "needs root: two daemons, namespaces, TAP devices and a veth underlay"]
fn traffic_resumes_after_the_underlay_comes_back() {
    let p = pair("la", "lb", 106);
    overlay(&p.a, "ov", "vxlan", 42, "10.49.0.0/16", "10.49.1.0/24", &p.ua, &p.ub, &[]);
    overlay(&p.b, "ov", "vxlan", 42, "10.49.0.0/16", "10.49.2.0/24", &p.ub, &p.ua, &[]);
    let (a1, b1) = (p.a.name("1"), p.b.name("1"));
    p.a.container(&a1, "ov");
    let (ip_b1, _) = p.b.container(&b1, "ov");
    assert!(ping(&a1, &ip_b1, 2));
    // A's underlay goes down: sends to the peer fail, and are counted.
    ip(&["-n", &p.a.hostns, "link", "set", "ul0", "down"]);
    assert!(!ping(&a1, &ip_b1, 2), "ping crossed a link that is down");
    let vtep = p.a.port_stats(&format!("vtep:{}", p.ub));
    assert!(vtep["tx_dropped"].as_u64().unwrap() >= 1, "{vtep}");
    ip(&["-n", &p.a.hostns, "link", "set", "ul0", "up"]);
    let t0 = std::time::Instant::now();
    while !ping(&a1, &ip_b1, 1) {
        assert!(t0.elapsed() < Duration::from_secs(20), "traffic did not resume");
    }
    assert!(ping(&a1, &ip_b1, 3));
}

#[test]
#[ignore = "needs root: two daemons, namespaces, TAP devices and a veth underlay"]
fn malformed_encapsulated_packets_are_counted_and_forwarding_goes_on() {
    let p = pair("xa", "xb", 107);
    overlay(&p.a, "ov", "vxlan", 42, "10.50.0.0/16", "10.50.1.0/24", &p.ua, &p.ub, &[]);
    overlay(&p.b, "ov", "vxlan", 42, "10.50.0.0/16", "10.50.2.0/24", &p.ub, &p.ua, &[]);
    overlay(&p.a, "g", "gre", 9, "10.51.0.0/16", "10.51.1.0/24", &p.ua, &p.ub, &[]);
    let (a1, b1) = (p.a.name("1"), p.b.name("1"));
    p.a.container(&a1, "ov");
    let (ip_b1, _) = p.b.container(&b1, "ov");
    let inner = {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x88, 0xb5]);
        f.resize(60, 0);
        f
    };
    let with = |h: &[u8], body: &[u8]| [h, body].concat();
    let vx = |vni: u32| [0x08, 0, 0, 0, (vni >> 16) as u8, (vni >> 8) as u8, vni as u8, 0];
    let to_a = SocketAddrV4::new(p.ua.parse().unwrap(), 4789);
    let before = p.a.json(&["stats"])["drops"].clone();
    in_ns(&p.b.hostns, || {
        let s = UdpSocket::bind(format!("{}:0", p.ub)).unwrap();
        for d in [
            vec![0x08, 0, 0],                            // short
            with(&[0x0c, 0, 0, 0, 0, 0, 42, 0], &inner), // bad flags
            with(&[0x00, 0, 0, 0, 0, 0, 42, 0], &inner), // I flag clear
            with(&vx(4242), &inner),                     // unknown VNI
            with(&vx(42), &inner[..10]),                 // truncated inner frame
        ] {
            s.send_to(&d, to_a).unwrap();
        }
        // GRE, from a raw socket: version 1, another protocol, no key.
        // SAFETY: a raw socket for this test thread's namespace.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, 47) };
        assert!(fd >= 0);
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(p.ua.parse::<std::net::Ipv4Addr>().unwrap().octets()),
            },
            sin_zero: [0; 8],
        };
        for g in [
            with(&[0x20, 0x01, 0x65, 0x58, 0, 0, 0, 9], &inner),
            with(&[0x20, 0x00, 0x08, 0x00, 0, 0, 0, 9], &inner),
            with(&[0x00, 0x00, 0x65, 0x58], &inner),
        ] {
            // SAFETY: g and dst live across the call.
            let n = unsafe {
                libc::sendto(fd, g.as_ptr().cast(), g.len(), 0, (&dst as *const libc::sockaddr_in).cast(), 16)
            };
            assert_eq!(n, g.len() as isize);
        }
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
    });
    std::thread::sleep(Duration::from_millis(300));
    let after = p.a.json(&["stats"])["drops"].clone();
    let grew = |r: &str| after[r].as_u64().unwrap() > before[r].as_u64().unwrap();
    for r in ["tunnel_truncated", "tunnel_bad_flags", "tunnel_unknown_id", "tunnel_bad_protocol"] {
        assert!(grew(r), "{r} not counted: {after}");
    }
    assert!(after["tunnel_bad_flags"].as_u64().unwrap() - before["tunnel_bad_flags"].as_u64().unwrap() >= 3);
    assert!(ping(&a1, &ip_b1, 2), "forwarding stopped");
}

/// tapnet's VXLAN with the Linux kernel's: host A runs tapnet, host B a
/// kernel vxlan device and bridge with the same VNI and port.
#[test]
#[ignore = "needs root: a daemon, namespaces, TAP devices, a veth underlay and the kernel's vxlan module"]
fn vxlan_interoperates_with_the_kernel() {
    let mut a = Host::new("ka");
    let kb = a.name("kb");
    let kc = a.name("kc");
    ip(&["netns", "add", &kb]);
    ip(&["netns", "add", &kc]);
    ip(&["-n", &a.hostns, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", &kb]);
    ip(&["-n", &a.hostns, "addr", "add", "192.168.108.1/24", "dev", "ul0"]);
    ip(&["-n", &a.hostns, "link", "set", "ul0", "up"]);
    ip(&["-n", &kb, "addr", "add", "192.168.108.2/24", "dev", "ul0"]);
    ip(&["-n", &kb, "link", "set", "ul0", "up"]);
    // The kernel side: vxlan0 (VNI 42, port 4789) in bridge br0 with a
    // veth to a container namespace.
    ip(&[
        "-n",
        &kb,
        "link",
        "add",
        "vxlan0",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "local",
        "192.168.108.2",
        "dev",
        "ul0",
    ]);
    let out_ = sh(
        "ip",
        &[
            "netns",
            "exec",
            &kb,
            "bridge",
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dev",
            "vxlan0",
            "dst",
            "192.168.108.1",
        ],
    );
    assert!(out_.status.success(), "{}", String::from_utf8_lossy(&out_.stderr));
    ip(&["-n", &kb, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &kb, "link", "set", "vxlan0", "master", "br0"]);
    ip(&["-n", &kb, "link", "add", "v0", "type", "veth", "peer", "name", "eth0", "netns", &kc]);
    ip(&["-n", &kb, "link", "set", "v0", "master", "br0"]);
    for l in ["vxlan0", "br0", "v0"] {
        ip(&["-n", &kb, "link", "set", l, "up"]);
    }
    ip(&["-n", &kc, "addr", "add", "10.52.2.10/16", "dev", "eth0"]);
    ip(&["-n", &kc, "link", "set", "eth0", "mtu", "1450"]);
    ip(&["-n", &kc, "link", "set", "eth0", "up"]);
    ip(&["-n", &kc, "link", "set", "lo", "up"]);
    // The kernel leaves a locally sent TCP checksum partial all the way
    // through a veth, its vxlan device and a veth underlay (nothing there
    // computes it, and the receiving kernel would trust it); a user-space
    // VTEP reads the bytes, so the kernel side must compute checksums.
    // (Across real NICs the NIC or the kernel fills them in.)
    let e = sh("ip", &["netns", "exec", &kc, "ethtool", "-K", "eth0", "tx", "off"]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    a.spawn(&["--workers", "2"]);
    overlay(&a, "ov", "vxlan", 42, "10.52.0.0/16", "10.52.1.0/24", "192.168.108.1", "192.168.108.2", &[]);
    let c = a.name("c");
    let (ip_c, _) = a.container(&c, "ov");
    assert!(ping(&c, "10.52.2.10", 3), "tapnet -> kernel vxlan");
    assert!(ping(&kc, &ip_c, 3), "kernel vxlan -> tapnet");
    bulk(&kc, "10.52.2.10", &c, &ip_c, 7403);
    bulk(&c, &ip_c, &kc, "10.52.2.10", 7404);
    // The kernel learned tapnet's container behind 192.168.108.1.
    let fdb = out("ip", &["netns", "exec", &kb, "bridge", "fdb", "show", "dev", "vxlan0"]);
    assert!(fdb.contains("dst 192.168.108.1"), "{fdb}");
    // Quick TCP exchange too, to be sure short flows work.
    let l = in_ns(&kc, || TcpListener::bind("10.52.2.10:7405")).unwrap();
    let srv = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
    });
    let mut cl = in_ns(&c, || TcpStream::connect("10.52.2.10:7405")).unwrap();
    cl.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    cl.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    srv.join().unwrap();
}

#[test]
#[ignore = "needs root: two daemons, namespaces, TAP devices and a veth underlay"]
fn overlay_check_finds_black_holes() {
    let p = pair("ca", "cb", 109);
    overlay(&p.a, "v", "vxlan", 42, "10.53.0.0/16", "10.53.1.0/24", &p.ua, &p.ub, &[]);
    overlay(&p.b, "v", "vxlan", 42, "10.53.0.0/16", "10.53.2.0/24", &p.ub, &p.ua, &[]);
    overlay(&p.a, "g", "gre", 5, "10.54.0.0/16", "10.54.1.0/24", &p.ua, &p.ub, &[]);
    overlay(&p.b, "g", "gre", 5, "10.54.0.0/16", "10.54.2.0/24", &p.ub, &p.ua, &[]);
    for (net, mtu) in [("v", 1450), ("g", 1458)] {
        let r = p.a.json(&["overlay", "check", net]);
        let peer = &r["peers"][0];
        assert_eq!(peer["verdict"], "ok", "{r}");
        assert_eq!(peer["path_mtu"], mtu, "{r}");
        assert_eq!(peer["intact"], true, "{r}");
    }
    // The peer's link takes less than the network's MTU: a black hole the
    // containers would fall into, reported, and the check fails.
    ip(&["-n", &p.b.hostns, "link", "set", "ul0", "mtu", "1400"]);
    let out = p.a.tapnet(&["overlay", "check", "v", "--json"]);
    assert!(!out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 1400 - 50, or 4 more: a veth lets a VLAN tag's worth past its MTU.
    let m = r["peers"][0]["path_mtu"].as_u64().unwrap();
    assert!((1350..=1354).contains(&m), "{r}");
    assert!(r["peers"][0]["verdict"].as_str().unwrap().starts_with("black hole"), "{r}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    // A peer that is gone.
    ip(&["-n", &p.b.hostns, "link", "set", "ul0", "down"]);
    let out = p.a.tapnet(&["overlay", "check", "g", "--json"]);
    assert!(!out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["peers"][0]["reachable"], false, "{r}");
    // Not an overlay: a one-line error.
    p.a.network("plain", "10.55.0.0/24", &[]);
    assert!(p.a.fails(&["overlay", "check", "plain"]).contains("not an overlay"));
}
