//! The client against the real kernel, in throwaway namespaces (needs
//! root, so the tests are ignored unless asked for).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;

use super::*;
use crate::netns;

/// A named namespace that is deleted when dropped, even by a panic.
struct TestNs {
    name: String,
    path: PathBuf,
}

impl TestNs {
    fn new(tag: &str) -> Self {
        let name = format!("tnl{}{}", std::process::id(), tag);
        let path = netns::create(&name).unwrap();
        Self { name, path }
    }

    /// A netlink socket inside this namespace, usable from the test thread.
    fn netlink(&self) -> Netlink {
        netns::run_in(&self.path, Netlink::open).unwrap().unwrap()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = netns::delete(&self.name);
    }
}

fn kernel_errno(e: &NetlinkError) -> Option<i32> {
    match e {
        NetlinkError::Kernel { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn loopback_up() {
    let ns = TestNs::new("lo");
    let mut nl = ns.netlink();
    let lo = nl.link_get("lo").unwrap();
    assert_eq!((lo.index, lo.up, lo.kind.as_deref(), lo.mac), (1, false, None, Some([0; 6])));
    nl.link_set_up(lo.index, true).unwrap();
    assert!(nl.link_get("lo").unwrap().up);
    assert_eq!(nl.link_index("lo").unwrap(), 1);
    // A new namespace has nothing but lo: the dump shows exactly it.
    let links = nl.links().unwrap();
    assert_eq!(links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["lo"]);
    assert!(nl.addrs_v4(1).unwrap().contains(&(Ipv4Addr::LOCALHOST, 8)));
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn veth_move_configure_address_route() {
    let (a, b) = (TestNs::new("va"), TestNs::new("vb"));
    let mut na = a.netlink();
    let mut nb = b.netlink();
    na.link_add_veth("tp1234", "tp1234p").unwrap();
    let err = na.link_add_veth("tp1234", "tp1234q").unwrap_err();
    assert!(
        matches!(&err, NetlinkError::Kernel { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
        "{err}"
    );
    let host = na.link_get("tp1234").unwrap();
    let peer = na.link_get("tp1234p").unwrap();
    assert_eq!((host.kind.as_deref(), peer.kind.as_deref()), (Some("veth"), Some("veth")));

    let b_fd = netns::open(&b.path).unwrap();
    na.link_move_to_netns(peer.index, b_fd.as_fd(), Some("eth0")).unwrap();
    assert!(matches!(na.link_index("tp1234p"), Err(NetlinkError::NoSuchLink(n)) if n == "tp1234p"));
    let eth0 = nb.link_index("eth0").unwrap();

    let mac = [0x02, 0x54, 0, 0x12, 0x34, 0x56];
    nb.link_set_mtu(eth0, 1400).unwrap();
    nb.link_set_mac(eth0, mac).unwrap();
    nb.link_set_up(eth0, true).unwrap();
    // Up, but its peer is down: no carrier, so not running.
    assert!(!nb.link_get("eth0").unwrap().running);
    na.link_set_up(host.index, true).unwrap();
    let got = nb.link_get("eth0").unwrap();
    assert_eq!((got.mtu, got.mac, got.up, got.kind.as_deref()), (1400, Some(mac), true, Some("veth")));
    assert!(nb.links().unwrap().iter().any(|l| l.name == "eth0" && l.index == eth0));

    let addr = Ipv4Addr::new(10, 99, 0, 2);
    nb.addr_add_v4(eth0, addr, 24).unwrap();
    let dup = nb.addr_add_v4(eth0, addr, 24).unwrap_err();
    assert_eq!(kernel_errno(&dup), Some(libc::EEXIST));
    assert_eq!(nb.addrs_v4(eth0).unwrap(), [(addr, 24)]);

    let gw = Ipv4Addr::new(10, 99, 0, 1);
    nb.route_add_v4(Ipv4Addr::UNSPECIFIED, 0, Some(gw), None).unwrap();
    let routes = nb.routes_v4().unwrap();
    let default = RouteV4 { dst: Ipv4Addr::UNSPECIFIED, prefix_len: 0, gateway: Some(gw), oif: Some(eth0) };
    assert!(routes.contains(&default), "{routes:?}");
    let connected = RouteV4 { dst: Ipv4Addr::new(10, 99, 0, 0), prefix_len: 24, gateway: None, oif: Some(eth0) };
    assert!(routes.contains(&connected), "{routes:?}");

    nb.link_set_up(eth0, false).unwrap(); // older kernels rename only down links
    nb.link_set_name(eth0, "eth1").unwrap();
    assert_eq!(nb.link_index("eth1").unwrap(), eth0);

    // A taken new name fails the rename after the move: the link has
    // arrived under its old name (see link_move_to_netns).
    na.link_add_veth("tpx0", "tpx1").unwrap();
    let x1 = na.link_index("tpx1").unwrap();
    let taken = na.link_move_to_netns(x1, b_fd.as_fd(), Some("eth1")).unwrap_err();
    assert_eq!(kernel_errno(&taken), Some(libc::EEXIST));
    assert!(matches!(na.link_index("tpx1"), Err(NetlinkError::NoSuchLink(_))));
    assert!(nb.link_get("tpx1").is_ok());

    // Deleting one end deletes the pair, across namespaces.
    na.link_del(host.index).unwrap();
    assert!(matches!(na.link_index("tp1234"), Err(NetlinkError::NoSuchLink(_))));
    assert!(matches!(nb.link_index("eth1"), Err(NetlinkError::NoSuchLink(_))));
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn bridge_master() {
    let ns = TestNs::new("br");
    let mut nl = ns.netlink();
    nl.link_add_bridge("tpbr0").unwrap();
    let br = nl.link_get("tpbr0").unwrap();
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(kernel_errno(&nl.link_add_bridge("tpbr0").unwrap_err()), Some(libc::EEXIST));
    nl.link_add_veth("tpv0", "tpv1").unwrap();
    let port = nl.link_index("tpv0").unwrap();
    nl.link_set_master(port, Some(br.index)).unwrap();
    assert_eq!(nl.link_get("tpv0").unwrap().master, Some(br.index));
    nl.link_set_master(port, None).unwrap();
    assert_eq!(nl.link_get("tpv0").unwrap().master, None);
    nl.link_del(br.index).unwrap();
    assert!(matches!(nl.link_get("tpbr0"), Err(NetlinkError::NoSuchLink(_))));
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn dump_spans_datagrams() {
    let ns = TestNs::new("dm");
    let mut nl = ns.netlink();
    // Bridge link messages are ~2 KiB: 40 of them need several datagrams.
    let names: Vec<String> = (0..40).map(|i| format!("tpd{i}")).collect();
    for n in &names {
        nl.link_add_bridge(n).unwrap();
    }
    let links = nl.links().unwrap();
    assert_eq!(links.len(), 41);
    assert!(names.iter().all(|n| links.iter().any(|l| &l.name == n && l.kind.as_deref() == Some("bridge"))));
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn errors() {
    let ns = TestNs::new("er");
    let mut nl = ns.netlink();
    assert!(matches!(nl.link_index("nope0"), Err(NetlinkError::NoSuchLink(n)) if n == "nope0"));
    let err = nl.link_set_up(9999, true).unwrap_err();
    assert_eq!(err.to_string(), "set link up: No such device (os error 19)");
    assert!(matches!(nl.link_add_bridge("a/b"), Err(NetlinkError::InvalidName(_))));
    assert!(matches!(nl.link_add_veth("ok0", "tp123456789abcde"), Err(NetlinkError::InvalidName(_))));
    assert!(matches!(nl.addr_add_v4(1, Ipv4Addr::LOCALHOST, 33), Err(NetlinkError::InvalidPrefix(33))));
    assert_eq!(kernel_errno(&nl.link_del(9999).unwrap_err()), Some(libc::ENODEV));
    // The socket is still in sync after errors.
    assert_eq!(nl.link_index("lo").unwrap(), 1);
}

#[test]
#[ignore = "needs root: creates network namespaces and a TAP device"]
fn noqueue_root_qdisc_on_a_multiqueue_tap() {
    let ns = TestNs::new("nq");
    let mut nl = ns.netlink();
    let qdiscs = |dev: &str| {
        let out = std::process::Command::new("tc").args(["-n", &ns.name, "qdisc", "show", "dev", dev]).output();
        String::from_utf8_lossy(&out.expect("run tc").stdout).into_owned()
    };
    // The queues are opened inside the namespace, so the TAP lives there.
    let queues = netns::run_in(&ns.path, || {
        dataplane::port::tap::open_multiqueue("tq0", 2, dataplane::port::tap::DEFAULT_OFFLOADS)
    })
    .unwrap()
    .unwrap();
    let tq = nl.link_index("tq0").unwrap();
    nl.link_set_noqueue(tq).unwrap();
    nl.link_set_up(tq, true).unwrap();
    let q = qdiscs("tq0");
    assert!(q.contains("qdisc noqueue") && !q.contains("pfifo_fast") && !q.contains("qdisc mq"), "{q}");
    assert_eq!(kernel_errno(&nl.link_set_noqueue(9999).unwrap_err()), Some(libc::ENODEV));
    drop(queues);
    assert!(matches!(nl.link_index("tq0"), Err(NetlinkError::NoSuchLink(_))), "the TAP outlived its queues");
}
