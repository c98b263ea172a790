//! `tapnet overlay check NET`: probe every peer of an overlay network
//! through the tunnel itself and say, per peer, whether encapsulated frames
//! get through both ways, the largest inner frame that does (the path MTU),
//! and whether the bytes arrive intact. Silent black holes (a peer that
//! does not answer, a path that drops frames the containers' MTU allows)
//! are what this is for.
//!
//! The prober runs here, in the daemon, with sockets of its own in the
//! daemon's namespace: a UDP socket for VXLAN (the peer's dataplane
//! answers to the probe's source port) or a raw GRE socket, both with
//! `IP_PMTUDISC_PROBE`, so that probes go out with DF set and are never
//! fragmented. The peer's dataplane sends each request back the way it came
//! (`dataplane::overlay::probe`).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use dataplane::overlay::probe::{self, Kind};
use dataplane::overlay::tunnel::Encap;
use serde::{Deserialize, Serialize};

/// What the check found for one peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerCheck {
    pub peer: String,
    /// Probes got through and came back.
    pub reachable: bool,
    /// Round-trip time of the first small probe, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// The largest inner IPv4 packet that got through both ways.
    pub path_mtu: Option<u32>,
    /// The network's MTU (what the containers may send).
    pub network_mtu: u32,
    /// Every reply arrived with its checksum and pattern intact.
    pub intact: bool,
    /// `ok`, or what is wrong.
    pub verdict: String,
}

impl PeerCheck {
    pub fn ok(&self) -> bool {
        self.verdict == "ok"
    }
}

/// The whole check of one network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub network: String,
    pub driver: String,
    pub peers: Vec<PeerCheck>,
}

/// What to probe.
#[derive(Debug, Clone)]
pub struct Target {
    pub encap: Encap,
    pub underlay: Ipv4Addr,
    pub port: u16,
    pub id: u32,
    pub peers: Vec<Ipv4Addr>,
    /// The network's MTU (the containers').
    pub mtu: u32,
    /// The largest inner IPv4 packet to try: the underlay's MTU less the
    /// encapsulation.
    pub max: u32,
}

const IP_PMTUDISC_PROBE: libc::c_int = 3;
const TRY: Duration = Duration::from_millis(300);

/// A socket that sends `[encap header | frame]` to a peer and receives the
/// replies.
enum Prober {
    Udp(UdpSocket, u16),
    Gre(OwnedFd),
}

fn set_probe_pmtu(fd: libc::c_int) -> io::Result<()> {
    let v: libc::c_int = IP_PMTUDISC_PROBE;
    // SAFETY: fd is an open socket; v is a live c_int of the size given.
    let r =
        unsafe { libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, (&v as *const libc::c_int).cast(), 4) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Prober {
    fn open(t: &Target) -> io::Result<Prober> {
        match t.encap {
            Encap::Vxlan => {
                let s = UdpSocket::bind(SocketAddrV4::new(t.underlay, 0))?;
                set_probe_pmtu(s.as_raw_fd())?;
                Ok(Prober::Udp(s, t.port))
            }
            Encap::Gre => {
                // SAFETY: plain socket(2); the fd is wrapped at once.
                let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 47) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: fd was just returned by socket(2) and is ours.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                set_probe_pmtu(fd.as_raw_fd())?;
                Ok(Prober::Gre(fd))
            }
        }
    }

    fn send(&self, peer: Ipv4Addr, datagram: &[u8]) -> io::Result<()> {
        match self {
            Prober::Udp(s, port) => s.send_to(datagram, SocketAddrV4::new(peer, *port)).map(|_| ()),
            Prober::Gre(fd) => {
                let dst = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(peer.octets()) },
                    sin_zero: [0; 8],
                };
                // SAFETY: fd is open; datagram and dst live across the call
                // and the kernel only reads them.
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        datagram.as_ptr().cast(),
                        datagram.len(),
                        0,
                        (&dst as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
        }
    }

    /// The next probe reply from `peer` with `id` and `seq`, until `until`.
    fn recv(&self, peer: Ipv4Addr, id: u32, seq: u32, until: Instant, buf: &mut [u8]) -> Option<probe::Probe> {
        loop {
            let left = until.checked_duration_since(Instant::now())?;
            let (n, from, inner_at) = match self {
                Prober::Udp(s, _) => {
                    s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).ok()?;
                    let (n, from) = s.recv_from(buf).ok()?;
                    let from = match from {
                        std::net::SocketAddr::V4(a) => *a.ip(),
                        _ => continue,
                    };
                    (n, from, dataplane::overlay::tunnel::HEADER_LEN)
                }
                Prober::Gre(fd) => {
                    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                    // SAFETY: one live pollfd.
                    if unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(10_000) as libc::c_int) } <= 0 {
                        return None;
                    }
                    // SAFETY: fd is open; buf is writable for its length.
                    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                    if n < 20 {
                        continue;
                    }
                    let n = n as usize;
                    let ihl = usize::from(buf[0] & 0x0f) * 4;
                    let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
                    // GRE header with key: 8 bytes after the IPv4 header.
                    (n, from, ihl + 8)
                }
            };
            if from != peer || n < inner_at {
                continue;
            }
            if let Some(p) = probe::parse(&buf[inner_at..n]) {
                if p.kind == Kind::Reply && p.id == id && p.seq == seq {
                    return Some(p);
                }
            }
        }
    }
}

/// One probe of an inner IPv4 packet of `ip_len` bytes (the frame is 14
/// more): `Some(intact)` if it came back in time.
#[allow(clippy::too_many_arguments)]
fn try_size(
    p: &Prober,
    t: &Target,
    peer: Ipv4Addr,
    id: u32,
    seq: u32,
    ip_len: u32,
    tries: usize,
    buf: &mut [u8],
) -> Option<bool> {
    let hdr = t.encap.header(t.id);
    let mut datagram = vec![0u8; hdr.len() + ip_len as usize + 14];
    datagram[..hdr.len()].copy_from_slice(&hdr);
    if probe::build(&mut datagram[hdr.len()..], Kind::Request, id, seq, ip_len as usize + 14) == 0 {
        return None;
    }
    for _ in 0..tries {
        if p.send(peer, &datagram).is_err() {
            // Too big for our own link (EMSGSIZE), no route: not through.
            return None;
        }
        if let Some(r) = p.recv(peer, id, seq, Instant::now() + TRY, buf) {
            return Some(r.intact && r.len == ip_len as usize + 14);
        }
    }
    None
}

/// Probe every peer of `t`.
pub fn check(t: &Target) -> io::Result<Vec<PeerCheck>> {
    let p = Prober::open(t)?;
    let mut buf = vec![0u8; 65536];
    let id = std::process::id() ^ (t.id << 8);
    let mut out = Vec::with_capacity(t.peers.len());
    for (k, &peer) in t.peers.iter().enumerate() {
        let mut seq = (k as u32) << 20;
        let mut next = || {
            seq += 1;
            seq
        };
        let t0 = Instant::now();
        let first = try_size(&p, t, peer, id, next(), 64, 3, &mut buf);
        let rtt = t0.elapsed().as_secs_f64() * 1000.0;
        let mut c = PeerCheck {
            peer: peer.to_string(),
            reachable: first.is_some(),
            rtt_ms: first.map(|_| (rtt * 100.0).round() / 100.0),
            path_mtu: None,
            network_mtu: t.mtu,
            intact: first == Some(true),
            verdict: String::new(),
        };
        if first.is_some() {
            // The largest size that gets through: binary search between a
            // size known to pass and one past the underlay's limit.
            let (mut lo, mut hi) = (64u32, t.max.max(64) + 1);
            if let Some(ok) = try_size(&p, t, peer, id, next(), t.max, 2, &mut buf) {
                lo = t.max;
                c.intact &= ok;
            } else {
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    match try_size(&p, t, peer, id, next(), mid, 2, &mut buf) {
                        Some(ok) => {
                            lo = mid;
                            c.intact &= ok;
                        }
                        None => hi = mid,
                    }
                }
            }
            c.path_mtu = Some(lo);
        }
        c.verdict = match (c.reachable, c.path_mtu) {
            (false, _) => "unreachable: no probe came back".into(),
            (true, _) if !c.intact => "damaged: replies arrived with bad checksums".into(),
            (true, Some(m)) if m < t.mtu => {
                format!("black hole: the path carries {m}-byte packets, the network's MTU is {}", t.mtu)
            }
            _ => "ok".into(),
        };
        out.push(c);
    }
    Ok(out)
}
