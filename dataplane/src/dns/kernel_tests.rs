//! The responders against a real kernel: `dig` in a private network
//! namespace queries the gateway through a TAP device (with the same
//! offloads as tapnet's ports, so queries arrive with partial checksums),
//! and a loop in the test answers ARP and DNS with this module's functions.
//! The kernel checks every checksum of the replies, and `dig` every byte
//! of the answers.
//!
//! Needs root, `/dev/net/tun`, `ip` (iproute2) and `dig` (bind9-dnsutils).
//! The TAP lives in a namespace private to the test's thread and goes away
//! with it, even when an assertion fails.

use super::*;
use crate::port::tap::{self, TapQueue, DEFAULT_OFFLOADS};
use crate::wire::{arp, ArpPacket, MacAddr, VnetHdr, VNET_HDR_LEN};
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TAP: &str = "tndns0";
const GW_MAC: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x00, 0x00, 0x01]);
const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT: &str = "10.77.0.2/24";
const WEB: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

/// The gateway: one TAP queue and what it answered.
struct Gateway {
    queue: TapQueue,
    table: DnsTable,
    tcp: TcpConfig,
    start: Instant,
    ip_id: u16,
    buf: Vec<u8>,
    udp: Vec<Outcome>,
    tcp_seen: Vec<TcpOutcome>,
}

impl Gateway {
    /// Answer frames until `child` exits; its output.
    fn serve(&mut self, mut child: Child) -> Output {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait().unwrap().is_some() {
                return child.wait_with_output().unwrap();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("dig did not finish: {:?}", child.wait_with_output());
            }
            let mut pfd = libc::pollfd { fd: self.queue.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: pfd is one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, 20) };
            loop {
                match self.queue.recv(&mut self.buf) {
                    Ok(n) => self.handle(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read from the TAP: {e}"),
                }
            }
        }
    }

    fn handle(&mut self, n: usize) {
        if n < VNET_HDR_LEN + 14 {
            return;
        }
        let len = n - VNET_HDR_LEN;
        let frame = &mut self.buf[VNET_HDR_LEN..];
        let reply = match (u16::from_be_bytes([frame[12], frame[13]]), frame.get(14 + 9)) {
            (0x0806, _) => answer_arp(frame, len),
            (0x0800, Some(17)) => {
                self.ip_id = self.ip_id.wrapping_add(1);
                let mut out = respond_udp(frame, len, &self.table, self.ip_id);
                if out == Outcome::NotOurs {
                    out = refuse_udp(frame, len, &self.table, Rcode::Refused, self.ip_id);
                }
                self.udp.push(out);
                out.reply_len()
            }
            (0x0800, Some(6)) => {
                self.ip_id = self.ip_id.wrapping_add(1);
                let now = self.start.elapsed().as_millis() as u64;
                let mut out = respond_tcp(frame, len, &self.table, &self.tcp, now, self.ip_id);
                if out == TcpOutcome::NotOurs {
                    out = refuse_tcp(frame, len, &self.table, &self.tcp, now, self.ip_id, Rcode::Refused);
                }
                self.tcp_seen.push(out);
                out.reply_len()
            }
            _ => None, // IPv6 router solicitations and the like
        };
        if let Some(len) = reply {
            // Checksums are complete: no flags, no GSO.
            VnetHdr::new_checked(&mut self.buf[..VNET_HDR_LEN]).unwrap().clear();
            self.queue.send(&self.buf[..VNET_HDR_LEN + len]).unwrap();
        }
    }
}

/// Turn an ARP request for the gateway into the reply, in place.
fn answer_arp(frame: &mut [u8], len: usize) -> Option<usize> {
    let req = arp::Repr::parse(&ArpPacket::new_checked(&frame[14..len]).ok()?).ok()?;
    if req.operation != arp::Operation::Request || req.target_proto_addr != GW {
        return None;
    }
    frame[0..6].copy_from_slice(&req.sender_hw_addr.0);
    frame[6..12].copy_from_slice(&GW_MAC.0);
    let reply = arp::Repr {
        operation: arp::Operation::Reply,
        sender_hw_addr: GW_MAC,
        sender_proto_addr: GW,
        target_hw_addr: req.sender_hw_addr,
        target_proto_addr: req.sender_proto_addr,
    };
    reply.emit(&mut ArpPacket::new_unchecked(&mut frame[14..42]));
    Some(42)
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?}");
}

fn dig(args: &[&str]) -> Child {
    Command::new("dig")
        .args(["@10.77.0.1", "+time=2", "+tries=1"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dig")
}

fn text(o: &Output) -> String {
    assert!(o.status.success(), "dig failed: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The IPv4 addresses in `+short` output (dig may add comment lines).
fn addrs(o: &Output) -> Vec<Ipv4Addr> {
    text(o).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[test]
#[ignore = "needs root: a TAP device in a private network namespace, ip and dig"]
fn dig_against_a_real_kernel() {
    if Command::new("dig").arg("-v").output().is_err() {
        eprintln!("skipped: dig is not installed (apt-get install bind9-dnsutils)");
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare only affects this thread, which ends below; the
        // commands it starts inherit its namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "{}", io::Error::last_os_error());
        let mut queues = tap::open_multiqueue(TAP, 1, DEFAULT_OFFLOADS).unwrap();
        ip(&["link", "set", "lo", "up"]);
        ip(&["addr", "add", CLIENT, "dev", TAP]);
        ip(&["link", "set", TAP, "up"]);

        let mut entries = vec![("web", WEB), ("web.front", WEB), ("db", Ipv4Addr::new(10, 77, 0, 10))];
        entries.push(("db", Ipv4Addr::new(10, 78, 0, 10)));
        let many: Vec<(String, Ipv4Addr)> =
            (1..=40).map(|i| ("many".to_string(), Ipv4Addr::new(10, 79, 0, i))).collect();
        let table = DnsTable::new(entries.into_iter().map(|(n, a)| (n.to_string(), a)).chain(many)).unwrap();
        let mut gw = Gateway {
            queue: queues.remove(0),
            table,
            tcp: TcpConfig { key: CookieKey::new(*b"kernel-test-key!"), mss: 1460 },
            start: Instant::now(),
            ip_id: 0,
            buf: vec![0u8; 70_000],
            udp: Vec::new(),
            tcp_seen: Vec::new(),
        };

        // UDP, with EDNS (dig's default) and without.
        assert_eq!(addrs(&gw.serve(dig(&["+short", "web"]))), vec![WEB]);
        assert_eq!(addrs(&gw.serve(dig(&["+short", "+noedns", "WeB.FrOnT"]))), vec![WEB]);
        let db = addrs(&gw.serve(dig(&["+short", "db"])));
        assert_eq!(db, vec![Ipv4Addr::new(10, 77, 0, 10), Ipv4Addr::new(10, 78, 0, 10)]);
        assert_eq!(addrs(&gw.serve(dig(&["+short", "many"]))).len(), 40, "40 A records fit 1232 bytes");
        let out = text(&gw.serve(dig(&["example.com"])));
        assert!(out.contains("status: REFUSED"), "{out}");
        let out = text(&gw.serve(dig(&["web", "AAAA"])));
        assert!(out.contains("status: NOERROR") && out.contains("ANSWER: 0"), "{out}");
        assert!(out.contains("flags: qr aa rd ra"), "{out}");
        assert!(gw.udp.iter().all(|o| o.reply_len().is_some()), "{:?}", gw.udp);
        assert!(gw.tcp_seen.is_empty());

        // TCP: a whole exchange, checked by the kernel's TCP.
        assert_eq!(addrs(&gw.serve(dig(&["+short", "+tcp", "web"]))), vec![WEB]);
        assert!(gw.tcp_seen.iter().any(|o| matches!(o, TcpOutcome::SynAck(_))), "{:?}", gw.tcp_seen);
        assert!(gw.tcp_seen.iter().any(|o| matches!(o, TcpOutcome::Reply(_))), "{:?}", gw.tcp_seen);
        assert!(
            !gw.tcp_seen.iter().any(|o| matches!(o, TcpOutcome::Rst(..) | TcpOutcome::Drop(_))),
            "{:?}",
            gw.tcp_seen
        );
        let out = text(&gw.serve(dig(&["+tcp", "example.com"])));
        assert!(out.contains("status: REFUSED"), "{out}");

        // Without EDNS 40 records do not fit 512 bytes: TC, and dig
        // retries over TCP by itself.
        gw.tcp_seen.clear();
        let o = gw.serve(dig(&["+short", "+noedns", "many"]));
        assert_eq!(addrs(&o).len(), 40, "{}", text(&o));
        assert!(gw.udp.iter().any(|o| matches!(o, Outcome::Reply(n) if *n <= 42 + 512)));
        assert!(gw.tcp_seen.iter().any(|o| matches!(o, TcpOutcome::Reply(_))), "{:?}", gw.tcp_seen);

        // EDNS version 1: BADVERS, and dig falls back to version 0.
        let o = gw.serve(dig(&["+edns=1", "+short", "web"]));
        assert_eq!(addrs(&o), vec![WEB]);
        assert!(gw.udp.iter().any(|o| matches!(o, Outcome::BadVers(_))), "{:?}", gw.udp);
    })
    .join()
    .unwrap();
}
