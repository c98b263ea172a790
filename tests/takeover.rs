//! Live takeover: `tapnet daemon --takeover` receives the running daemon's
//! TAP queue descriptors, lock and API listener over its socket
//! (SCM_RIGHTS), starts forwarding, and the old daemon exits 0 leaving
//! everything in place. A 1 ms UDP stream between two containers loses
//! less than 100 ms worth across it; a verified TCP transfer completes
//! without a reset; a takeover with no daemon, or with another worker
//! count, is refused in one line and changes nothing. A daemon with an
//! uplink (direct or macvlan) hands its AF_PACKET sockets and its
//! connection tracking over: a 1 ms UDP stream to the outside loses less
//! than 100 ms worth and a masqueraded TCP connection goes on.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

const ARGS: &[&str] = &["--workers", "2", "--no-pin"];

/// This test's namespaces with their TAPs (`ip -o link` lines, ifindex
/// and name), sorted.
fn namespaces_and_taps(h: &Host) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&h.prefix) && *n != h.hostns)
        .map(|n| {
            let out = sh("ip", &["-n", &n, "-o", "link", "show", "type", "tun"]);
            let taps: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.split(':').take(2).collect::<Vec<_>>().join(":"))
                .collect();
            (n, taps.join(","))
        })
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and UDP"]
fn takeover_under_a_1ms_udp_stream_loses_less_than_100ms() {
    let mut h = Host::start("tu", ARGS);
    h.network("n1", "10.181.0.0/24", &[]);
    let (a, b) = (h.name("a"), h.name("b"));
    let (ip_a, _) = h.container(&a, "n1");
    let (ip_b, _) = h.container(&b, "n1");
    assert!(ping(&a, &ip_b, 1), "{a} cannot ping {b}");
    // A container silent from here on: the new daemon knows its MAC only
    // if the old one handed its learned MACs over.
    let s = h.name("s");
    let (_, mac_s) = h.container(&s, "n1");
    assert!(ping(&s, &ip_b, 1), "{s} cannot ping {b}");
    let before = containers(&h);
    let devices = namespaces_and_taps(&h);
    let ia: Ipv4Addr = ip_a.parse().unwrap();
    let ib: Ipv4Addr = ip_b.parse().unwrap();
    let tx = in_ns(&a, || UdpSocket::bind(SocketAddr::from((ia, 0))).unwrap());
    let rx = in_ns(&b, || UdpSocket::bind(SocketAddr::from((ib, 5300))).unwrap());
    rx.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    const N: u64 = 5000;
    let dst = SocketAddr::from((ib, 5300));
    let sender = stream(tx, dst, N);
    let receiver = collect(rx);
    // A second of the stream, then the takeover in the middle of it.
    std::thread::sleep(Duration::from_millis(1000));
    let old_pid = h.pid();
    let (status, old_gone) = h.takeover(ARGS);
    let sent_for = sender.join().unwrap();
    let seen = receiver.join().unwrap();
    // Lost, and the longest run of missing sequence numbers (1 ms each).
    let (lost, gap) = loss(&seen, N);
    eprintln!(
        "takeover under a 1 ms UDP stream: {N} datagrams sent in {sent_for:?}, {lost} lost \
         (longest gap {gap} ms); the old daemon exited {old_gone:?} after the new one started"
    );
    assert_eq!(status.map(|s| s.success()), Some(true), "the old daemon did not exit 0: {status:?}");
    assert!(lost < 100, "{lost} datagrams lost: more than 100 ms worth");
    assert!(gap < 100, "a gap of {gap} ms");
    assert_ne!(h.pid(), old_pid);
    // SAFETY: kill with signal 0 only checks for the process.
    assert_ne!(unsafe { libc::kill(old_pid as i32, 0) }, 0, "the old daemon still runs");
    let fdb = h.fdb("n1");
    assert!(fdb.iter().any(|(m, _)| *m == mac_s), "the silent container's MAC was not handed over: {fdb:?}");
    assert_eq!(containers(&h), before, "the new daemon lists other containers");
    assert_eq!(namespaces_and_taps(&h), devices, "namespaces or TAPs changed");
    // The new daemon makes changes and forwards.
    let c = h.name("c");
    let (ip_c, _) = h.container(&c, "n1");
    assert!(ping(&a, &ip_c, 2), "{a} cannot ping {c} after the takeover");
    assert!(ping(&c, &ip_b, 2), "{c} cannot ping {b} after the takeover");
    let st = h.stop(libc::SIGTERM).unwrap();
    assert!(st.success());
    assert!(namespaces_and_taps(&h).is_empty(), "SIGTERM left containers");
}

#[test]
#[ignore = "needs root: a daemon with real namespaces, TAP devices and TCP"]
fn a_tcp_transfer_crosses_a_takeover_without_a_reset() {
    let mut h = Host::start("tt", ARGS);
    h.network("n1", "10.182.0.0/24", &[]);
    let (a, b) = (h.name("a"), h.name("b"));
    let (ip_a, _) = h.container(&a, "n1");
    let (ip_b, _) = h.container(&b, "n1");
    let bytes = 1_500_000_000u64;
    let transfer = bulk_in_background(&a, &ip_a, &b, &ip_b, bytes);
    let t0 = Instant::now();
    while h.port_stats(&format!("{b}:eth0"))["tx_bytes"].as_u64().unwrap_or(0) < 20_000_000 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the transfer did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, old_gone) = h.takeover(ARGS);
    assert!(!transfer.is_finished(), "the transfer ended before the takeover: make it longer");
    assert_eq!(status.map(|s| s.success()), Some(true), "the old daemon did not exit 0: {status:?}");
    let r = transfer.join().unwrap().expect("the transfer survives the takeover");
    assert_eq!(r.bytes, bytes);
    assert!(r.verified);
    let after = h.port_stats(&format!("{b}:eth0"))["tx_bytes"].as_u64().unwrap();
    eprintln!("TCP across a takeover: {bytes} bytes verified, {after} through the new daemon; old daemon gone after {old_gone:?}");
    assert!(after > 0, "nothing crossed the new daemon");
    h.stop(libc::SIGTERM);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn takeover_refused_or_abandoned_leaves_the_old_daemon_serving() {
    // No daemon: one line, non-zero, nothing made.
    let h0 = Host::new("tn");
    let out = h0.daemon_cmd(&["--takeover", "--workers", "2", "--no-pin"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("nothing to take over"), "{err}");
    assert!(!h0.socket.exists(), "a socket was made");
    assert!(!h0.state.join("state.json").exists(), "a state file was made");
    drop(h0);

    // Another worker count: refused, the old daemon keeps serving and
    // takes changes again.
    let mut h = Host::start("tw", ARGS);
    h.network("n1", "10.183.0.0/24", &[]);
    let (a, b) = (h.name("a"), h.name("b"));
    h.container(&a, "n1");
    let (ip_b, mac_b) = h.container(&b, "n1");
    assert!(ping(&a, &ip_b, 1), "{a} cannot ping {b}");
    let before = containers(&h);
    let out = h.daemon_cmd(&["--takeover", "--workers", "1", "--no-pin"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--workers 2"), "{err}");
    assert_eq!(containers(&h), before);
    // A new daemon that goes away after it got everything, before `ready`:
    // the old one keeps running and takes changes again.
    let mut c = std::os::unix::net::UnixStream::connect(&h.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"{\"op\":\"takeover\",\"workers\":2}\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.contains(&b'\n') {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&got).into_owned();
    assert!(answer.starts_with("{\"ok\":true"), "{answer}");
    assert!(answer.contains("\"fds\":6"), "lock, listener and 2 x 2 queues: {answer}");
    assert!(answer.contains(&format!("[\"{mac_b}\",")), "{b}'s learned MAC is not in the answer: {answer}");
    drop(c);
    assert_eq!(containers(&h), before);
    h.network("n2", "10.183.1.0/24", &[]);
    assert!(ping(&a, &ip_b, 1), "{a} cannot ping {b} after the refusal");
    let st = h.stop(libc::SIGTERM).unwrap();
    assert!(st.success());
}

/// Send a 1 ms stream of `n` sequence numbers from `tx` to `dst`; returns
/// how long it took.
fn stream(tx: UdpSocket, dst: SocketAddr, n: u64) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        for seq in 0..n {
            let _ = tx.send_to(&seq.to_be_bytes(), dst);
            let next = t0 + Duration::from_millis(seq + 1);
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        t0.elapsed()
    })
}

/// Receive sequence numbers on `rx` until it is quiet for its timeout.
fn collect(rx: UdpSocket) -> std::thread::JoinHandle<BTreeSet<u64>> {
    std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = rx.recv(&mut buf) {
            if n == 8 {
                seen.insert(u64::from_be_bytes(buf[..8].try_into().unwrap()));
            }
        }
        seen
    })
}

/// Lost of `n`, and the longest run of missing ones.
fn loss(seen: &BTreeSet<u64>, n: u64) -> (u64, u64) {
    let (mut gap, mut run) = (0u64, 0u64);
    for s in 0..n {
        if seen.contains(&s) {
            run = 0;
        } else {
            run += 1;
            gap = gap.max(run);
        }
    }
    (n - seen.len() as u64, gap)
}

#[test]
#[ignore = "needs root: a daemon with an uplink, real namespaces and TAP devices"]
fn a_daemon_with_an_uplink_is_taken_over_on_its_own_packet_sockets() {
    for mode in ["direct", "macvlan"] {
        let mut h = Host::new(if mode == "direct" { "tl" } else { "tm" });
        let o = Outside::new(&h, if mode == "direct" { "10.250.9" } else { "10.250.10" });
        let mut args: Vec<String> = ARGS.iter().map(|s| s.to_string()).collect();
        args.extend(o.daemon_args());
        args.extend(["--uplink-mode".to_string(), mode.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        h.spawn(&args);
        h.network("n1", "10.184.0.0/24", &[]);
        let a = h.name("a");
        let (ip_a, _) = h.container(&a, "n1");
        assert!(ping(&a, &o.ip(), 1), "{a} cannot reach the outside");
        let links = |h: &Host| {
            let o = sh("ip", &["-n", &h.hostns, "-o", "link", "show"]);
            let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.split(':').take(2).collect::<Vec<_>>().join(":"))
                .collect();
            v.sort();
            v
        };
        let links_before = links(&h);
        let before = containers(&h);
        // The new daemon cannot bring an uplink of its own: it takes the
        // running one's.
        let out = h.daemon_cmd(&["--takeover", "--uplink", "up0", "--uplink-ip", "10.250.9.2/24"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));

        let ia: Ipv4Addr = ip_a.parse().unwrap();
        let io: Ipv4Addr = o.ip().parse().unwrap();
        // A masqueraded TCP connection to the outside, open across the
        // takeover: its connection tracking entry must move.
        let server = in_ns(&o.ns, || std::net::TcpListener::bind(SocketAddr::from((io, 5302))).unwrap());
        let mut client =
            in_ns(&a, || std::net::TcpStream::connect_timeout(&SocketAddr::from((io, 5302)), Duration::from_secs(3)))
                .expect("connect to the outside");
        let (mut inside, _) = server.accept().unwrap();
        for s in [&client, &inside] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        let exchange = |c: &mut std::net::TcpStream, s: &mut std::net::TcpStream, what: &str| {
            let mut b = [0u8; 5];
            c.write_all(b"hello").map_err(|e| format!("{what}: client send: {e}"))?;
            s.read_exact(&mut b).map_err(|e| format!("{what}: server recv: {e}"))?;
            s.write_all(b"world").map_err(|e| format!("{what}: server send: {e}"))?;
            c.read_exact(&mut b).map_err(|e| format!("{what}: client recv: {e}"))?;
            if &b != b"world" {
                return Err(format!("{what}: {b:?}"));
            }
            Ok::<(), String>(())
        };
        exchange(&mut client, &mut inside, "before").unwrap();
        let tx = in_ns(&a, || UdpSocket::bind(SocketAddr::from((ia, 0))).unwrap());
        let rx = in_ns(&o.ns, || UdpSocket::bind(SocketAddr::from((io, 5301))).unwrap());
        rx.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
        const N: u64 = 4000;
        let sender = stream(tx, SocketAddr::from((io, 5301)), N);
        let receiver = collect(rx);
        std::thread::sleep(Duration::from_millis(1000));
        let old_pid = h.pid();
        let (status, old_gone) = h.takeover(ARGS);
        let sent_for = sender.join().unwrap();
        let (lost, gap) = loss(&receiver.join().unwrap(), N);
        eprintln!(
            "takeover with a {mode} uplink under a 1 ms UDP stream to the outside: {N} datagrams sent in \
             {sent_for:?}, {lost} lost (longest gap {gap} ms); the old daemon exited {old_gone:?} after the new one started"
        );
        assert_eq!(status.map(|s| s.success()), Some(true), "the old daemon did not exit 0: {status:?}");
        assert!(gap < 100, "a gap of {gap} ms");
        assert!(lost < 100, "{lost} datagrams lost: more than 100 ms worth");
        assert_ne!(h.pid(), old_pid);
        // The TCP connection goes on, both ways, without a reset: the new
        // daemon tracks it (its entry moved).
        let ct = h.json(&["conntrack"]);
        let entries = ct["entries"].as_array().unwrap();
        let moved = entries.iter().find(|e| {
            e["protocol"] == "tcp" && e["original"].as_str().is_some_and(|x| x.starts_with(&format!("{ip_a}:")))
        });
        let moved = moved.unwrap_or_else(|| panic!("the TCP connection's entry did not move: {ct}"));
        assert_eq!(moved["kind"], "SNAT", "{moved}");
        exchange(&mut client, &mut inside, "after the takeover").unwrap();
        eprintln!("the masqueraded TCP connection goes on after the takeover; its entry: {moved}");
        assert_eq!(containers(&h), before);
        assert_eq!(links(&h), links_before, "the host namespace's links changed (the macvlan child must stay)");
        // The new daemon forwards through the same uplink, tracks the
        // stream and counts the uplink's frames on its own port.
        assert!(ping(&a, &o.ip(), 2), "{a} cannot reach the outside after the takeover");
        let ct = h.json(&["conntrack"]);
        assert!(ct["entries"].as_array().is_some_and(|e| !e.is_empty()), "no connection tracked: {ct}");
        let st = h.stop(libc::SIGTERM).unwrap();
        assert!(st.success());
        if mode == "macvlan" {
            assert!(!links(&h).iter().any(|l| l.contains("tnu")), "the macvlan child outlived the new daemon");
        }
    }
}

#[test]
#[ignore = "needs root: two daemons as two hosts, real namespaces, TAP devices and tunnels"]
fn an_overlay_host_is_taken_over_under_a_1ms_udp_stream_across_the_tunnel() {
    for (driver, idflag, net) in [("vxlan", "--vni", 91u8), ("gre", "--key", 92u8)] {
        let mut a = Host::new(if driver == "vxlan" { "tva" } else { "tga" });
        let mut b = Host::new(if driver == "vxlan" { "tvb" } else { "tgb" });
        ip(&["-n", &a.hostns, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", &b.hostns]);
        let (ua, ub) = (format!("192.168.{net}.1"), format!("192.168.{net}.2"));
        for (h, addr) in [(&a, &ua), (&b, &ub)] {
            ip(&["-n", &h.hostns, "addr", "add", &format!("{addr}/24"), "dev", "ul0"]);
            ip(&["-n", &h.hostns, "link", "set", "ul0", "up"]);
            ip(&["-n", &h.hostns, "link", "set", "lo", "up"]);
        }
        a.spawn(ARGS);
        b.spawn(ARGS);
        for (h, me, peer, range) in [(&a, &ua, &ub, "10.43.1.0/24"), (&b, &ub, &ua, "10.43.2.0/24")] {
            h.ok(&[
                "network",
                "create",
                "ov",
                "--driver",
                driver,
                idflag,
                "42",
                "--subnet",
                "10.43.0.0/16",
                "--ip-range",
                range,
                "--underlay",
                me,
                "--peer",
                peer,
            ]);
        }
        let (a1, b1) = (a.name("1"), b.name("1"));
        let (ip_a1, _) = a.container(&a1, "ov");
        let (ip_b1, _) = b.container(&b1, "ov");
        assert!(ping(&a1, &ip_b1, 3), "{driver}: {a1} cannot ping {ip_b1}");
        let ia: Ipv4Addr = ip_a1.parse().unwrap();
        let ib: Ipv4Addr = ip_b1.parse().unwrap();
        const N: u64 = 4000;
        // Both ways across the tunnel: A's daemon sends and receives it.
        let tx_ab = in_ns(&a1, || UdpSocket::bind(SocketAddr::from((ia, 0))).unwrap());
        let rx_ab = in_ns(&b1, || UdpSocket::bind(SocketAddr::from((ib, 5303))).unwrap());
        let tx_ba = in_ns(&b1, || UdpSocket::bind(SocketAddr::from((ib, 0))).unwrap());
        let rx_ba = in_ns(&a1, || UdpSocket::bind(SocketAddr::from((ia, 5304))).unwrap());
        for r in [&rx_ab, &rx_ba] {
            r.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
        }
        let s1 = stream(tx_ab, SocketAddr::from((ib, 5303)), N);
        let s2 = stream(tx_ba, SocketAddr::from((ia, 5304)), N);
        let (r1, r2) = (collect(rx_ab), collect(rx_ba));
        std::thread::sleep(Duration::from_millis(1000));
        let (status, old_gone) = a.takeover(ARGS);
        s1.join().unwrap();
        s2.join().unwrap();
        let (lost_ab, gap_ab) = loss(&r1.join().unwrap(), N);
        let (lost_ba, gap_ba) = loss(&r2.join().unwrap(), N);
        eprintln!(
            "takeover of a {driver} overlay host under 1 ms UDP streams across the tunnel: to the other host \
             {lost_ab} of {N} lost (longest gap {gap_ab} ms), from it {lost_ba} lost (longest gap {gap_ba} ms); \
             the old daemon exited {old_gone:?} after the new one started"
        );
        assert_eq!(status.map(|s| s.success()), Some(true), "the old daemon did not exit 0: {status:?}");
        assert!(gap_ab < 100 && gap_ba < 100, "gaps of {gap_ab} and {gap_ba} ms");
        assert!(lost_ab < 100 && lost_ba < 100, "{lost_ab} and {lost_ba} datagrams lost");
        assert!(ping(&a1, &ip_b1, 2), "{driver}: {a1} cannot ping {ip_b1} after the takeover");
        assert!(ping(&b1, &ip_a1, 2), "{driver}: {b1} cannot ping {ip_a1} after the takeover");
        assert!(a.stop(libc::SIGTERM).unwrap().success());
        assert!(b.stop(libc::SIGTERM).unwrap().success());
    }
}
