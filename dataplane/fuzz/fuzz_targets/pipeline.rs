//! The whole per-frame path of a worker, without I/O: frames read by a
//! port (`[virtio-net header | frame]` through `PacketBuf::set_received`),
//! the bridge stage (`classify_batch`), the router (`Router::from_net`,
//! `from_uplink`, `flood_seen`: ARP, ICMP echo, DNS, NAT through each
//! worker's conntrack, ICMP errors) and the hand-off between workers, on the
//! host of `dataplane_fuzz::topology` with two workers.
//!
//! Input: records `[ctl][len: u16 BE][virtio-net header | frame]`
//! (`dataplane_fuzz::Records`). `ctl` bits 0-2 pick the ingress port (0, 1:
//! ports 1 and 2 on `front`; 2: port 3 on `back`; 3: port 4 on `sealed`;
//! 4-7: the uplink), bit 3 the worker that reads it (on the uplink, 0 is the
//! worker the kernel's fanout steers the frame to, 1 the other one), bits
//! 4-7 how far the clock moves before the frame ([`STEPS_MS`]).
//! Consecutive records for the same port and worker form one batch, as a
//! worker's `recv_batch` returns them. The host lives for one input, so
//! connection tracking, MAC learning and ARP build up across its frames.
//!
//! Besides "no panic", every decision must be one the worker can carry out,
//! and every frame the dataplane sends must be well formed (see `check_*`).

#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;

use dataplane::bridge::{Pin, Tally};
use dataplane::packet::PacketBuf;
use dataplane::port::{steer, PortId};
use dataplane::router::{self, Action};
use dataplane::stats::WorkerStats;
use dataplane::wire::{ethernet, EtherType, EthernetFrame, MacAddr, VnetHdr, VNET_HDR_LEN};
use dataplane::{classify_batch, BATCH, MAX_FRAME};
use dataplane_fuzz::topology::{Host, Ingress, CONTAINERS, UPLINK_GW, UPLINK_IP, UPLINK_MAC, UPLINK_PORT, WORKERS};
use dataplane_fuzz::{ipv4_of, sums, Records};
use libfuzzer_sys::fuzz_target;

/// Clock steps, in milliseconds: enough to cross every timeout (ARP,
/// conntrack states, MAC ageing, DNS cookie slots).
const STEPS_MS: [u64; 16] =
    [0, 1, 10, 50, 100, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 3_600_000, 86_400_000];
/// Frames per input at most.
const MAX_FRAMES: usize = 128;
/// Frames up to this long are copied before routing, so the checksums can
/// be compared after.
const COMPARE_MAX: usize = 2048;

thread_local! {
    /// One batch of buffers, reused across inputs (a worker's are too). The
    /// bytes past each frame are overwritten on every input, so a read
    /// beyond the frame sees the same bytes whatever ran before.
    static BUFS: RefCell<Vec<PacketBuf>> = RefCell::new((0..BATCH).map(|_| PacketBuf::new()).collect());
}

/// `FUZZ_TRACE=1` prints every decision (to see where a seed goes).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

/// Counters only: shared across inputs.
fn stats() -> &'static WorkerStats {
    static STATS: OnceLock<WorkerStats> = OnceLock::new();
    STATS.get_or_init(WorkerStats::default)
}

fn ingress_of(ctl: u8) -> Ingress {
    match ctl & 7 {
        i @ 0..=3 => Ingress::Access(usize::from(i)),
        _ => Ingress::Uplink,
    }
}

/// Bytes poisoned past the end of each received frame.
const POISON: usize = 4096;

fuzz_target!(|data: &[u8]| {
    dataplane_fuzz::keep_heap();
    let mut host = Host::new();
    let mut now = 0u64;
    let mut records = Records::new(data).take(MAX_FRAMES).peekable();
    BUFS.with(|bufs| {
        let bufs = &mut *bufs.borrow_mut();
        while let Some(&(ctl, _)) = records.peek() {
            let ingress = ingress_of(ctl);
            let pick = ctl >> 3 & 1;
            let mut n = 0;
            let mut worker = 0;
            while n < BATCH {
                let Some(&(c, bytes)) = records.peek() else { break };
                if ingress_of(c) != ingress || c >> 3 & 1 != pick {
                    break;
                }
                records.next();
                now += STEPS_MS[usize::from(c >> 4)];
                let b = &mut bufs[n];
                let area = b.rx_area(true);
                let len = bytes.len().min(area.len());
                area[..len].copy_from_slice(&bytes[..len]);
                let end = area.len().min(len + POISON);
                area[len..end].fill(0xa5);
                if b.set_received(len, true, ingress.port()).is_err() {
                    // A port drops it and counts it: not part of the batch.
                    continue;
                }
                assert!(b.len() <= MAX_FRAME);
                worker = match ingress {
                    Ingress::Uplink => {
                        let steered =
                            steer::worker_for(steer::uplink_hash(&host.steering, b.frame()), usize::from(WORKERS));
                        if pick == 0 {
                            steered
                        } else {
                            (steered + 1) % usize::from(WORKERS)
                        }
                    }
                    Ingress::Access(_) => usize::from(pick),
                };
                n += 1;
                if ingress == Ingress::Uplink {
                    // Uplink frames go to different workers by flow: one
                    // frame per batch keeps "steered" per frame.
                    break;
                }
            }
            if n > 0 {
                batch(&mut host, worker, ingress, pick == 0, &mut bufs[..n], now);
            }
            for r in host.routers.iter_mut() {
                r.sweep(now, stats());
            }
        }
    });
});

/// One batch read by `worker` from `ingress`, through the stages, then each
/// action carried out (checked) as the worker would. `steered`: an uplink
/// frame on the worker the fanout picks.
fn batch(host: &mut Host, worker: usize, ingress: Ingress, steered: bool, bufs: &mut [PacketBuf], now: u64) {
    let st = stats();
    let n = bufs.len();
    let port = ingress.port();
    let mut actions = [Action::Consumed; BATCH];
    // Decided by the router (not the bridge), and the checksums before.
    let mut routed = [false; BATCH];
    let mut before: [Option<dataplane_fuzz::Sums>; BATCH] = [None; BATCH];
    match ingress {
        Ingress::Access(c) => {
            let net = &host.nets[CONTAINERS[c].net];
            for b in bufs.iter_mut() {
                b.meta.net = net.id;
            }
            let mut tally = Tally::default();
            // The `back` network's container is pinned (`--port-security`).
            let pin = (CONTAINERS[c].net == 1).then(|| Pin { mac: CONTAINERS[c].mac, ip: CONTAINERS[c].ip });
            let bytes =
                classify_batch(&net.fdb, net.cfg.icc, port, pin.as_ref(), bufs, now, &mut actions[..n], &mut tally);
            assert_eq!(bytes, bufs.iter().map(|b| b.len() as u64).sum::<u64>());
            tally.flush(st, net.id);
            for i in 0..n {
                match actions[i] {
                    // The bridge only forwards to a port it learned on this
                    // network, never back out of the ingress port.
                    Action::Forward(p) => assert!(net.ports.contains(&p) && p != port, "bridge to port {p}"),
                    Action::Flood | Action::Drop(_) => {}
                    Action::Gateway => {
                        routed[i] = true;
                        before[i] = snapshot(&bufs[i]);
                        actions[i] = host.routers[worker].from_net(&net.cfg, &mut bufs[i], now, st);
                    }
                    a => panic!("the bridge decided {a:?}"),
                }
            }
        }
        Ingress::Uplink => {
            for i in 0..n {
                routed[i] = true;
                before[i] = snapshot(&bufs[i]);
                actions[i] = host.routers[worker].from_uplink(&mut bufs[i], now, st);
                if steered {
                    // The fanout delivers a frame to the worker owning its
                    // flow: no hand-off is ever needed.
                    assert!(!matches!(actions[i], Action::Handoff(_)), "steered frame handed off");
                }
            }
        }
    }
    for i in 0..n {
        let mut action = actions[i];
        let mut by = worker;
        if let Action::Handoff(owner) = action {
            let owner = usize::from(owner);
            assert!(owner < usize::from(WORKERS) && owner != worker, "hand-off from {worker} to {owner}");
            drain(host, worker, port);
            // The owner resumes where this worker stopped.
            action = match ingress {
                Ingress::Access(c) => {
                    let cfg = host.nets[CONTAINERS[c].net].cfg.clone();
                    host.routers[owner].from_net(&cfg, &mut bufs[i], now, st)
                }
                Ingress::Uplink => host.routers[owner].from_uplink(&mut bufs[i], now, st),
            };
            assert!(!matches!(action, Action::Handoff(_)), "handed off twice");
            by = owner;
        }
        if trace() {
            eprintln!("t={now} worker {by} {ingress:?} {} bytes: {:?} -> {action:?}", bufs[i].len(), actions[i]);
        }
        apply(host, by, ingress, &mut bufs[i], action, routed[i].then_some(before[i]), now);
        drain(host, by, port);
    }
}

/// The checksums of a small frame's IPv4 packet before the router.
fn snapshot(b: &PacketBuf) -> Option<dataplane_fuzz::Sums> {
    if b.len() > COMPARE_MAX || b.meta.offload.needs_csum() {
        return None;
    }
    ipv4_of(b.frame()).and_then(sums)
}

/// What the worker does with `action`, checking what it would send.
/// `routed`: the router decided it, and the checksums before, if known.
fn apply(
    host: &mut Host,
    worker: usize,
    ingress: Ingress,
    b: &mut PacketBuf,
    action: Action,
    routed: Option<Option<dataplane_fuzz::Sums>>,
    now: u64,
) {
    let router = &mut host.routers[worker];
    match action {
        Action::Flood => {
            if let Ingress::Access(c) = ingress {
                let cfg = host.nets[CONTAINERS[c].net].cfg.clone();
                router.flood_seen(&cfg, b, stats());
            }
        }
        Action::Forward(p) => {
            if let Some(before) = routed {
                check_routed(host, p, b, before);
            }
            check_vnet(b);
        }
        Action::Reply => {
            check_reply(host, b, routed.flatten());
            check_vnet(b);
        }
        Action::Pend(hop) => {
            assert!(hop == UPLINK_GW || router::Subnet::new(UPLINK_IP, 24).contains(hop), "pending for {hop}");
            if router.arp.should_request(hop, now) {
                router.request_arp(hop, stats());
            }
        }
        Action::Consumed | Action::Drop(_) => {}
        a @ (Action::Gateway | Action::Handoff(_)) => panic!("left to the worker: {a:?}"),
    }
}

/// A routed frame: to a known container (from its gateway's MAC) or out of
/// the uplink (from the uplink's MAC to the next hop's), with a valid IPv4
/// header, its TTL decremented, and every checksum that verified before
/// still verifying.
fn check_routed(host: &Host, p: PortId, b: &PacketBuf, before: Option<dataplane_fuzz::Sums>) {
    let f = b.frame();
    let eth = EthernetFrame::new_checked(f).expect("routed frame has an Ethernet header");
    if p == UPLINK_PORT {
        assert_eq!(eth.src(), UPLINK_MAC);
    } else {
        let c = CONTAINERS.iter().find(|c| c.port == p).unwrap_or_else(|| panic!("routed to port {p}"));
        assert_eq!(eth.src(), host.nets[c.net].cfg.gateway.mac, "routed to port {p} from the wrong MAC");
        assert_eq!(eth.dst(), c.mac, "routed to port {p} with the wrong MAC");
    }
    assert_eq!(eth.ethertype(), EtherType::Ipv4);
    let ip = router::parse_ipv4(f).unwrap_or_else(|r| panic!("routed frame has a bad IPv4 header: {r:?}"));
    assert!(ip.ttl >= 1);
    if let Some(before) = before {
        let after = sums(&f[ip.l3..]).expect("routed packet parses");
        assert!(after.header, "IPv4 header checksum broken by routing");
        if before.l4 == Some(true) {
            assert_eq!(after.l4, Some(true), "transport checksum broken by NAT");
        }
    }
}

/// A reply to the sender: from one of our MACs, ARP or IPv4 with a valid
/// header; DNS replies with a valid transport checksum, echo replies with
/// one if the request's verified (`before`).
fn check_reply(host: &Host, b: &PacketBuf, before: Option<dataplane_fuzz::Sums>) {
    let f = b.frame();
    assert!(f.len() >= ethernet::HEADER_LEN && f.len() <= MAX_FRAME);
    let eth = EthernetFrame::new_checked(f).expect("reply has an Ethernet header");
    assert!(host.our_macs().any(|m| m == eth.src()), "reply from {}", eth.src());
    match eth.ethertype() {
        EtherType::Arp => {
            let m = router::arp::parse(f).expect("ARP reply parses");
            assert_eq!(m.op, dataplane::wire::arp::Operation::Reply);
        }
        EtherType::Ipv4 => {
            let ip = router::parse_ipv4(f).unwrap_or_else(|r| panic!("reply has a bad IPv4 header: {r:?}"));
            let l4 = &f[ip.l3 + ip.header_len..ip.l3 + ip.total_len];
            let dns = matches!(ip.protocol, 6 | 17) && l4.get(..2) == Some(&53u16.to_be_bytes()[..]);
            let after = sums(&f[ip.l3..]).and_then(|s| s.l4);
            if dns {
                assert_eq!(after, Some(true), "DNS reply checksum");
            }
            if ip.protocol == 1 && before.is_some_and(|s| s.l4 == Some(true)) {
                assert_eq!(after, Some(true), "echo reply checksum");
            }
        }
        t => panic!("reply of type {t:?}"),
    }
}

/// The virtio-net header written in front of a frame to send must pass the
/// checks the kernel applies to it.
fn check_vnet(b: &mut PacketBuf) {
    let len = b.len();
    let bytes = b.vnet_bytes();
    assert_eq!(bytes.len(), VNET_HDR_LEN + len);
    let hdr = VnetHdr::new_unchecked(&bytes[..VNET_HDR_LEN]);
    assert!(hdr.validate(len).is_ok(), "the kernel would refuse this header: {:?}", b.meta.offload);
    let _ = b.wire_len();
}

/// Frames the router emitted besides (ARP requests and replies, ICMP
/// errors): well formed, from our MACs, to the ingress port or the uplink.
fn drain(host: &mut Host, worker: usize, ingress: PortId) {
    let Host { routers, nets, .. } = host;
    let ours = |m: MacAddr| nets.iter().any(|n| n.cfg.gateway.mac == m) || m == UPLINK_MAC;
    routers[worker].emit.drain(|port, b| {
        assert!(port == ingress || port == UPLINK_PORT, "emitted to port {port}");
        let f = b.frame();
        assert!(f.len() >= ethernet::HEADER_LEN && f.len() <= MAX_FRAME);
        let eth = EthernetFrame::new_checked(f).expect("emitted frame has an Ethernet header");
        assert!(ours(eth.src()), "emitted from {}", eth.src());
        match eth.ethertype() {
            EtherType::Arp => assert!(router::arp::parse(f).is_some(), "emitted ARP does not parse"),
            EtherType::Ipv4 => {
                let ip = router::parse_ipv4(f).unwrap_or_else(|r| panic!("emitted a bad IPv4 header: {r:?}"));
                assert_eq!(ip.protocol, 1, "emitted IPv4 that is not ICMP");
                assert!(ip.total_len <= dataplane::nat::icmp::MAX_ERROR_LEN);
                assert_eq!(sums(&f[ip.l3..]).and_then(|s| s.l4), Some(true), "emitted ICMP checksum");
            }
            t => panic!("emitted type {t:?}"),
        }
        check_vnet(b);
    });
}
