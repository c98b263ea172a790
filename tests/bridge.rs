//! The learning bridge end to end: real namespaces, real multi-queue TAP
//! devices, real TCP, observed with iproute2, ping and the daemon's own
//! counters.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use bench::traffic::{self, Endpoint};
use common::*;

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn ping_and_100mb_tcp_verified_through_the_bridge() {
    let h = Host::start("bt", &["--workers", "2"]);
    h.network("n1", "10.201.0.0/24", &[]);
    let (a, b) = (h.name("a"), h.name("b"));
    let (ip_a, _) = h.container(&a, "n1");
    let (ip_b, _) = h.container(&b, "n1");
    assert!(ping(&a, &ip_b, 3), "{a} cannot ping {ip_b}");
    assert!(ping(&b, &ip_a, 3), "{b} cannot ping {ip_a}");

    let (pa, pb) = (nspath(&a), nspath(&b));
    let ia: Ipv4Addr = ip_a.parse().unwrap();
    let ib: Ipv4Addr = ip_b.parse().unwrap();
    let bytes = 100_000_000u64;
    let r = traffic::tcp_bulk(
        Endpoint::new(Some(&pb), ib),
        Endpoint::new(Some(&pa), ia),
        5201,
        1,
        Some(bytes),
        Duration::from_secs(120),
        true,
    )
    .expect("bulk transfer");
    assert_eq!(r.bytes, bytes);
    assert!(r.verified);

    // The bytes really crossed the dataplane: a's port received them and
    // b's port sent them, and GSO super-frames went through whole (fewer
    // frames than 1500-byte segments would need).
    let sa = h.port_stats(&format!("{a}:eth0"));
    let sb = h.port_stats(&format!("{b}:eth0"));
    assert!(sa["rx_bytes"].as_u64().unwrap() > bytes, "{sa}");
    assert!(sb["tx_bytes"].as_u64().unwrap() > bytes, "{sb}");
    assert!(sb["tx_packets"].as_u64().unwrap() < bytes / 1448, "no GSO frames crossed: {sb}");
    let stats = h.json(&["stats"]);
    assert_eq!(stats["drops"]["tx_error"], 0);
    // Workers report their activity; together they handled every frame.
    let frames: u64 = stats["per_worker"].as_array().unwrap().iter().map(|w| w["frames"].as_u64().unwrap()).sum();
    let rx: u64 = stats["ports"].as_array().unwrap().iter().map(|p| p["rx_packets"].as_u64().unwrap()).sum();
    assert_eq!(frames, rx, "{stats}");
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn taps_have_offloads_and_no_kernel_bridge_exists() {
    let h = Host::start("bk", &["--workers", "2"]);
    h.network("n1", "10.202.0.0/24", &[]);
    let a = h.name("a");
    h.container(&a, "n1");
    let host_links = String::from_utf8_lossy(&sh("ip", &["-n", &h.hostns, "-d", "link", "show"]).stdout).into_owned();
    assert!(!host_links.contains("bridge"), "a bridge device exists in the daemon's namespace:\n{host_links}");
    let eth0 = String::from_utf8_lossy(&sh("ip", &["-n", &a, "-d", "link", "show", "eth0"]).stdout).into_owned();
    assert!(eth0.contains("tun type tap"), "{eth0}");
    assert!(eth0.contains("vnet_hdr on"), "{eth0}");
    assert!(eth0.contains("multi_queue"), "{eth0}");
    assert!(eth0.contains("numqueues 2"), "{eth0}");
    // The offloads the dataplane asked for show up as the device's features.
    let feats = String::from_utf8_lossy(&sh("ip", &["netns", "exec", &a, "ethtool", "-k", "eth0"]).stdout).into_owned();
    if !feats.is_empty() {
        assert!(feats.contains("tcp-segmentation-offload: on"), "{feats}");
        assert!(feats.contains("tx-checksumming: on"), "{feats}");
    }
    let addr = String::from_utf8_lossy(&sh("ip", &["-n", &a, "-4", "-o", "addr", "show", "eth0"]).stdout).into_owned();
    assert!(addr.contains("10.202.0.2/24"), "{addr}");
    let route = String::from_utf8_lossy(&sh("ip", &["-n", &a, "route", "show", "default"]).stdout).into_owned();
    assert!(route.contains("via 10.202.0.1 dev eth0"), "{route}");
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn learning_flooding_and_moves_are_visible_in_fdb() {
    let h = Host::start("bl", &["--workers", "2"]);
    h.network("n1", "10.203.0.0/24", &[]);
    let (a, b, c) = (h.name("a"), h.name("b"), h.name("c"));
    let (_, mac_a) = h.container(&a, "n1");
    let (ip_b, mac_b) = h.container(&b, "n1");
    let (_, _mac_c) = h.container(&c, "n1");
    assert!(h.fdb("n1").is_empty(), "nothing was sent yet: {:?}", h.fdb("n1"));
    // Only the gateway's MAC, pinned by tapnet.
    let all = h.json(&["fdb", "n1"])["entries"].clone();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all[0]["mac"], "02:42:0a:cb:00:01", "{all}");
    assert_eq!(all[0]["port_name"], "gateway", "{all}");
    assert_eq!(all[0]["static"], true, "{all}");

    // The first ping's ARP request is broadcast: flooded to b and c.
    assert!(ping(&a, &ip_b, 1));
    let fdb = h.fdb("n1");
    assert!(fdb.contains(&(mac_a.clone(), format!("{a}:eth0"))), "{fdb:?}");
    assert!(fdb.contains(&(mac_b.clone(), format!("{b}:eth0"))), "{fdb:?}");
    let ev = h.json(&["fdb", "n1"])["events"].clone();
    assert!(ev["flooded"].as_u64().unwrap() >= 1 && ev["learned"].as_u64().unwrap() >= 2, "{ev}");
    let c_tx = |h: &Host| h.port_stats(&format!("{c}:eth0"))["tx_packets"].as_u64().unwrap();
    let flooded_to_c = c_tx(&h);
    assert!(flooded_to_c >= 1, "the broadcast did not reach c");

    // Known unicast goes to one port only: c sees none of it.
    assert!(ping(&a, &ip_b, 5));
    assert_eq!(c_tx(&h), flooded_to_c, "known unicast leaked to a third port");

    // a's MAC shows up behind c's port: the entry moves.
    sh("ip", &["-n", &c, "link", "set", "eth0", "address", &mac_a]);
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&parse_mac(&mac_a));
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&parse_mac(&mac_a));
    arp.extend_from_slice(&[10, 203, 0, 99, 0, 0, 0, 0, 0, 0, 10, 203, 0, 3]);
    send_raw(&c, "eth0", &[arp]);
    std::thread::sleep(Duration::from_millis(200));
    let fdb = h.fdb("n1");
    assert!(fdb.contains(&(mac_a.clone(), format!("{c}:eth0"))), "MAC did not move: {fdb:?}");
    assert!(!fdb.contains(&(mac_a, format!("{a}:eth0"))), "{fdb:?}");
    assert!(h.json(&["fdb", "n1"])["events"]["moved"].as_u64().unwrap() >= 1);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn entries_age_out_and_the_table_is_bounded() {
    let h = Host::start("ba", &["--workers", "1"]);
    h.network("short", "10.204.0.0/24", &["--fdb-ageing", "1"]);
    h.network("tiny", "10.205.0.0/24", &["--fdb-max", "1"]);
    let (a, b, c, d) = (h.name("a"), h.name("b"), h.name("c"), h.name("d"));
    h.container(&a, "short");
    let (ip_b, _) = h.container(&b, "short");
    h.container(&c, "tiny");
    let (ip_d, _) = h.container(&d, "tiny");

    assert!(ping(&a, &ip_b, 1));
    assert_eq!(h.fdb("short").len(), 2);
    std::thread::sleep(Duration::from_millis(3500));
    assert!(h.fdb("short").is_empty(), "entries did not age out: {:?}", h.fdb("short"));

    // Two MACs, room for one: learning stops and is counted, traffic flows.
    assert!(ping(&c, &ip_d, 3), "a full table must not stop forwarding");
    assert_eq!(h.fdb("tiny").len(), 1);
    assert!(h.json(&["fdb", "tiny"])["events"]["table_full"].as_u64().unwrap() >= 1);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn two_networks_are_isolated() {
    let h = Host::start("bi", &["--workers", "2"]);
    h.network("n1", "10.206.0.0/24", &[]);
    h.network("n2", "10.207.0.0/24", &[]);
    let (a, b, x) = (h.name("a"), h.name("b"), h.name("x"));
    h.container(&a, "n1");
    let (ip_b, _) = h.container(&b, "n1");
    let (_, mac_x) = h.container(&x, "n2");
    // Give x an address in n1's subnet: only L2 isolation can stop it now.
    sh("ip", &["-n", &x, "addr", "add", "10.206.0.50/24", "dev", "eth0"]);
    assert!(ping(&a, &ip_b, 1));
    assert!(!ping(&a, "10.206.0.50", 2), "a reached a container on another network");
    assert_eq!(h.port_stats(&format!("{x}:eth0"))["tx_packets"], 0, "n1's broadcasts reached n2");
    assert!(!h.fdb("n1").iter().any(|(m, _)| *m == mac_x));
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn malformed_frames_are_dropped_counted_and_forwarding_goes_on() {
    let h = Host::start("bm", &["--workers", "2"]);
    h.network("n1", "10.208.0.0/24", &[]);
    let (a, b) = (h.name("a"), h.name("b"));
    let (_, mac_a) = h.container(&a, "n1");
    let (ip_b, mac_b) = h.container(&b, "n1");
    let mut bad_src = parse_mac(&mac_b).to_vec();
    bad_src.extend_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1, 0x08, 0x00]);
    bad_src.resize(60, 0);
    let mut stp = vec![0x01, 0x80, 0xc2, 0, 0, 0];
    stp.extend_from_slice(&parse_mac(&mac_a));
    stp.extend_from_slice(&[0x00, 0x26, 0x42, 0x42, 0x03]);
    stp.resize(60, 0);
    let mut zero_src = parse_mac(&mac_b).to_vec();
    zero_src.extend_from_slice(&[0; 6]);
    zero_src.extend_from_slice(&[0x08, 0x00]);
    zero_src.resize(60, 0);
    send_raw(&a, "eth0", &[bad_src.clone(), bad_src, stp, zero_src]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.drops("bad_src_mac"), 3);
    assert_eq!(h.drops("link_local_dst"), 1);
    assert!(ping(&a, &ip_b, 2), "forwarding stopped after malformed frames");
    assert_eq!(h.port_stats(&format!("{a}:eth0"))["rx_dropped"], 4);
}
