//! Port security end to end (issue 9): the per-port MAC limit against a MAC
//! flood, `--port-security` against spoofed MACs, IPs and ARP, and frames
//! over the egress port's MTU. Real namespaces and TAP devices; frames
//! forged with raw sockets inside the containers; observed through the
//! daemon's counters and MAC table.

mod common;

use std::time::Duration;

use common::*;

/// `n` frames from made-up unicast source MACs (02:ee:00:00:hi:lo) to an
/// unknown unicast destination, as a MAC-flooding tool sends them.
fn mac_flood(n: u16) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut f = vec![0x02, 0xdd, 0, 0, 0, 0x99];
            f.extend_from_slice(&[0x02, 0xee, 0, 0, (i >> 8) as u8, i as u8]);
            f.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
            f.resize(60, 0);
            f
        })
        .collect()
}

/// The frames of `net`'s MAC table learned on `port_name`.
fn entries_on(h: &Host, net: &str, port_name: &str) -> usize {
    h.fdb(net).iter().filter(|(_, p)| p == port_name).count()
}

fn fdb_event(h: &Host, net: &str, ev: &str) -> u64 {
    h.json(&["fdb", net])["events"][ev].as_u64().unwrap()
}

fn tx_packets(h: &Host, port_name: &str) -> u64 {
    h.port_stats(port_name)["tx_packets"].as_u64().unwrap()
}

fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn a_mac_flood_stops_at_the_port_limit_and_other_flows_are_not_flooded() {
    let h = Host::start("pf", &["--workers", "2"]);
    // Two networks with a small table (64), the attacker alone able to
    // fill it: one limited to 8 MACs per port, one with no limit (the
    // control: it shows the flood does fill the table without the limit).
    h.network("lim", "10.211.0.0/24", &["--fdb-max", "64", "--max-macs-per-port", "8"]);
    h.network("open", "10.212.0.0/24", &["--fdb-max", "64", "--max-macs-per-port", "0"]);
    assert_eq!(h.json(&["network", "inspect", "lim"])["max_macs_per_port"], 8);
    assert_eq!(h.json(&["network", "inspect", "open"])["max_macs_per_port"], 0);
    assert_eq!(h.json(&["fdb", "lim"])["max_per_port"], 8);
    for net in ["lim", "open"] {
        let (x, a, b) = (h.name(&format!("x{net}")), h.name(&format!("a{net}")), h.name(&format!("b{net}")));
        h.container(&x, net);
        h.container(&a, net);
        let (ip_b, _) = h.container(&b, net);
        let before = h.drops("mac_limit");
        send_raw(&x, "eth0", &mac_flood(1000));
        settle();
        let on_x = entries_on(&h, net, &format!("{x}:eth0"));
        let flood_learned = h.fdb(net).iter().filter(|(m, _)| m.starts_with("02:ee:")).count() as u64;
        let dropped = h.drops("mac_limit") - before;
        // A new flow between a and b after the flood: its ARP request is
        // broadcast (flooded, rightly); everything after is unicast, which
        // must go to one port only, never to the attacker's.
        let (flooded, unknown) = (fdb_event(&h, net, "flooded"), fdb_event(&h, net, "unknown_unicast"));
        let x_tx = tx_packets(&h, &format!("{x}:eth0"));
        assert!(ping(&a, &ip_b, 5), "{a} cannot ping {ip_b} on {net}");
        let unknown = fdb_event(&h, net, "unknown_unicast") - unknown;
        let flooded = fdb_event(&h, net, "flooded") - flooded;
        let x_tx = tx_packets(&h, &format!("{x}:eth0")) - x_tx;
        if net == "lim" {
            assert_eq!(on_x, 8, "the attacker's port has {on_x} MACs: {:?}", h.fdb(net));
            // Every flood frame was either learned (within the limit) or
            // dropped and counted.
            assert_eq!(dropped, 1000 - flood_learned, "frames over the limit not dropped");
            assert!(dropped >= 1000 - 8);
            assert_eq!(fdb_event(&h, net, "mac_limit"), dropped);
            assert_eq!(fdb_event(&h, net, "table_full"), 0);
            assert!(h.fdb(net).len() <= 8 + 2, "table far from full: {:?}", h.fdb(net));
            assert_eq!(unknown, 0, "a new flow was flooded as unknown unicast");
            // Only the ARP broadcasts (a's request, maybe b's) were flooded.
            assert!(flooded <= 2 && x_tx <= 2, "flooded {flooded}, to the attacker {x_tx}");
        } else {
            // Without the limit the table fills and the new flow floods,
            // to the attacker too: what the limit prevents.
            assert_eq!(dropped, 0);
            assert!(h.fdb(net).len() >= 64, "the flood did not fill the table: {}", h.fdb(net).len());
            assert!(fdb_event(&h, net, "table_full") > 0);
            assert!(unknown >= 5, "expected the flow to be flooded without the limit ({unknown})");
            assert!(x_tx >= 5, "the attacker received {x_tx} of the flow's frames");
        }
    }
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn the_mac_limit_is_on_by_default_and_bad_values_are_refused() {
    let h = Host::start("pd", &["--workers", "2"]);
    h.network("n1", "10.213.0.0/24", &[]);
    let n1 = h.json(&["network", "inspect", "n1"]);
    assert_eq!(n1["max_macs_per_port"], 64, "{n1}");
    assert_eq!(n1["port_security"], false, "{n1}");
    let (x, a, b) = (h.name("x"), h.name("a"), h.name("b"));
    h.container(&x, "n1");
    h.container(&a, "n1");
    let (ip_b, _) = h.container(&b, "n1");
    send_raw(&x, "eth0", &mac_flood(500));
    settle();
    assert_eq!(entries_on(&h, "n1", &format!("{x}:eth0")), 64, "{:?}", h.fdb("n1"));
    let flood_learned = h.fdb("n1").iter().filter(|(m, _)| m.starts_with("02:ee:")).count() as u64;
    assert_eq!(h.drops("mac_limit"), 500 - flood_learned);
    assert!(flood_learned >= 63);
    // Two other containers start talking: not flooded beyond their ARP.
    let unknown = fdb_event(&h, "n1", "unknown_unicast");
    assert!(ping(&a, &ip_b, 3));
    assert_eq!(fdb_event(&h, "n1", "unknown_unicast"), unknown);
    // A limit beyond the table is refused with one line, and nothing
    // changes.
    let err = h.fails(&[
        "network",
        "create",
        "bad",
        "--subnet",
        "10.214.0.0/24",
        "--fdb-max",
        "16",
        "--max-macs-per-port",
        "17",
    ]);
    assert!(err.contains("--max-macs-per-port 17"), "{err}");
    let ls = h.ok(&["network", "ls"]);
    assert!(!ls.contains("bad"), "{ls}");
    h.network("few", "10.214.0.0/24", &["--fdb-max", "16"]);
    // The daemon's default (64) is capped at the network's table (16).
    assert_eq!(h.json(&["network", "inspect", "few"])["max_macs_per_port"], 16);
    drop(h);
    // A daemon-wide default, which a network may override.
    let h = Host::start("pg", &["--workers", "1", "--max-macs-per-port", "4"]);
    h.network("n1", "10.213.0.0/24", &[]);
    h.network("n2", "10.214.0.0/24", &["--max-macs-per-port", "0"]);
    assert_eq!(h.json(&["network", "inspect", "n1"])["max_macs_per_port"], 4);
    assert_eq!(h.json(&["network", "inspect", "n2"])["max_macs_per_port"], 0);
    let x = h.name("x");
    h.container(&x, "n1");
    send_raw(&x, "eth0", &mac_flood(10));
    settle();
    assert_eq!(entries_on(&h, "n1", &format!("{x}:eth0")), 4);
}

/// Internet checksum of `b` (RFC 1071).
fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = b.chunks(2).map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0))).sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn ip4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

/// An ICMP echo request from `src_mac`/`src_ip` to `dst_mac`/`dst_ip`.
fn echo(dst_mac: [u8; 6], src_mac: [u8; 6], src_ip: [u8; 4], dst_ip: [u8; 4]) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0];
    ip.extend_from_slice(&src_ip);
    ip.extend_from_slice(&dst_ip);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut icmp = vec![8, 0, 0, 0, 0x42, 0x42, 0, 1];
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&icmp);
    f.resize(60, 0);
    f
}

/// A gratuitous ARP (RFC 5227 announcement) from `mac` claiming `ip`.
fn garp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip);
    f.resize(60, 0);
    f
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn port_security_drops_spoofed_mac_ip_and_arp_and_only_with_the_flag() {
    let h = Host::start("ps", &["--workers", "2"]);
    h.network("sec", "10.215.0.0/24", &["--port-security"]);
    h.network("plain", "10.216.0.0/24", &[]);
    let sec = h.json(&["network", "inspect", "sec"]);
    assert_eq!(sec["port_security"], true, "{sec}");
    let reasons = ["spoofed_mac", "spoofed_ip", "spoofed_arp"];
    for net in ["sec", "plain"] {
        let (m, v, o) = (h.name(&format!("m{net}")), h.name(&format!("v{net}")), h.name(&format!("o{net}")));
        let (ip_m, mac_m) = h.container(&m, net);
        let (ip_v, mac_v) = h.container(&v, net);
        h.container(&o, net);
        // The honest traffic of the same container flows (and puts v's MAC
        // in the table).
        assert!(ping(&m, &ip_v, 2), "{m} cannot ping {ip_v} on {net}");
        let (mac_m, mac_v) = (parse_mac(&mac_m), parse_mac(&mac_v));
        let stranger = [0x02, 0x42, 0x0a, 0x77, 0x77, 0x77];
        let unused = {
            let mut a = ip4(&ip_m);
            a[3] = 99;
            a
        };
        let cases = [
            // Another source MAC, m's own address.
            ("spoofed_mac", echo(mac_v, stranger, ip4(&ip_m), ip4(&ip_v)), format!("{v}:eth0")),
            // m's MAC, another source address.
            ("spoofed_ip", echo(mac_v, mac_m, unused, ip4(&ip_v)), format!("{v}:eth0")),
            // m's MAC claiming v's address: would poison o's ARP cache.
            ("spoofed_arp", garp(mac_m, ip4(&ip_v)), format!("{o}:eth0")),
        ];
        for (reason, frame, observer) in cases {
            let drops: Vec<u64> = reasons.iter().map(|r| h.drops(r)).collect();
            let seen = tx_packets(&h, &observer);
            send_raw(&m, "eth0", &[frame.clone(), frame.clone(), frame]);
            settle();
            let delivered = tx_packets(&h, &observer) - seen;
            for (r, before) in reasons.iter().zip(drops) {
                let want = if net == "sec" && *r == reason { 3 } else { 0 };
                assert_eq!(h.drops(r) - before, want, "{net}: {reason} frames counted as {r}");
            }
            if net == "sec" {
                assert_eq!(delivered, 0, "{net}: a {reason} frame reached {observer}");
            } else {
                assert!(delivered >= 3, "{net}: {reason} frames did not pass without --port-security");
            }
        }
        assert!(ping(&m, &ip_v, 2), "{m}'s honest traffic stopped on {net}");
    }
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn frames_over_the_egress_mtu_are_dropped_as_oversize() {
    let h = Host::start("po", &["--workers", "2"]);
    h.network("n1", "10.217.0.0/24", &[]);
    let (s, r, w) = (h.name("s"), h.name("r"), h.name("w"));
    let (_, mac_s) = h.container(&s, "n1");
    let (ip_r, _) = h.container(&r, "n1");
    h.container(&w, "n1");
    assert!(ping(&s, &ip_r, 2));
    // The sender raises its own MTU; its peers keep 1500.
    ip(&["-n", &s, "link", "set", "eth0", "mtu", "9000"]);
    let before = h.drops("oversize");
    let rx_r = tx_packets(&h, &format!("{r}:eth0"));
    // Known unicast, 8028-byte IPv4 packets with DF: never delivered.
    let big = sh(
        "ip",
        &["netns", "exec", &s, "ping", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-s", "8000", "-M", "do", &ip_r],
    );
    assert!(!big.status.success(), "an 8028-byte ping was answered across a 1500 MTU");
    assert_eq!(h.drops("oversize") - before, 3);
    assert_eq!(tx_packets(&h, &format!("{r}:eth0")), rx_r, "an oversize frame was delivered");
    assert!(h.port_stats(&format!("{r}:eth0"))["tx_dropped"].as_u64().unwrap() >= 3);
    // A flooded one (broadcast, 3000 bytes): dropped once per other port.
    let mut flood = vec![0xff; 6];
    flood.extend_from_slice(&parse_mac(&mac_s));
    flood.extend_from_slice(&[0x88, 0xb5]);
    flood.resize(3000, 0);
    let before = h.drops("oversize");
    send_raw(&s, "eth0", &[flood]);
    settle();
    assert_eq!(h.drops("oversize") - before, 2, "the flood's copies to r and w");
    // Normal traffic continues.
    assert!(ping(&s, &ip_r, 3), "normal traffic stopped after oversize frames");
}
