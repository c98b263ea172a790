//! ICMP echo over a raw socket, built and read with `dataplane::wire`'s
//! IPv4 and ICMPv4 views.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use dataplane::wire::{icmpv4, ipv4, IpProtocol};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::run::{in_ns, is_retry, sock_err};
use super::sock::setsockopt_int;
use super::{Result, TrafficError};

/// Result of [`ping`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct PingReport {
    pub sent: u32,
    pub received: u32,
    /// Round-trip time of each echo answered, in order.
    pub rtt_us: Vec<f64>,
}

/// An echo request: the ICMP header and 56 bytes of data, as ping(8) sends.
const ECHO_LEN: usize = icmpv4::HEADER_LEN + 56;

/// ICMP echo from inside `ns` to `dst` over a raw socket (needs root or
/// `CAP_NET_RAW`): `count` echo requests, one at a time, each waiting up to
/// `timeout` for its reply (matched by identifier and sequence number). The
/// next request goes out as soon as the previous one is answered or timed
/// out.
///
/// # Errors
/// Namespace entry or the raw socket failing (not root), or a send or
/// receive error. Unanswered echoes are not errors.
pub fn ping(
    ns: Option<&Path>,
    dst: Ipv4Addr,
    count: u32,
    timeout: Duration,
) -> std::result::Result<PingReport, TrafficError> {
    let sock = in_ns(ns, || {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).map_err(sock_err("open raw ICMP socket"))
    })?;
    // Best effort: only a cheaper receive path, replies are matched anyway.
    let _ = setsockopt_int(&sock, libc::SOL_RAW, ICMP_FILTER, !(1 << u8::from(icmpv4::Message::EchoReply)));
    let ident = next_ident();
    let to = SockAddr::from(SocketAddrV4::new(dst, 0));
    let mut request = [0u8; ECHO_LEN];
    let mut reply = [0u8; 2048];
    let mut rtt_us = Vec::with_capacity(count.min(1 << 16) as usize);
    for i in 0..count {
        let seq = i as u16;
        emit_echo_request(&mut request, ident, seq);
        let sent_at = Instant::now();
        sock.send_to(&request, &to).map_err(|source| TrafficError::Io { op: "ICMP echo send", source })?;
        if let Some(at) = await_reply(&sock, dst, ident, seq, sent_at + timeout, &mut reply)? {
            rtt_us.push((at - sent_at).as_secs_f64() * 1e6);
        }
    }
    Ok(PingReport { sent: count, received: rtt_us.len() as u32, rtt_us })
}

/// `ICMP_FILTER` on `SOL_RAW` (linux/icmp.h): a bit mask of ICMP types the
/// raw socket should not receive.
const ICMP_FILTER: libc::c_int = 1;

/// An echo identifier unlikely to clash with other pings running at once,
/// in this process or others.
fn next_ident() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    (std::process::id() as u16).wrapping_mul(31).wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Wait until `deadline` for the echo reply from `dst` with `ident`/`seq`.
/// Returns when it arrived, or `None` on timeout.
fn await_reply(
    sock: &Socket,
    dst: Ipv4Addr,
    ident: u16,
    seq: u16,
    deadline: Instant,
    buf: &mut [u8],
) -> Result<Option<Instant>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // A zero timeout would mean "block forever".
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).map_err(sock_err("set receive timeout"))?;
        match (&*sock).read(buf) {
            Ok(n) => {
                let at = Instant::now();
                if parse_echo_reply(&buf[..n]) == Some((dst, ident, seq)) {
                    return Ok(Some(at));
                }
            }
            Err(e) if is_retry(&e) => {}
            Err(source) => return Err(TrafficError::Io { op: "ICMP echo receive", source }),
        }
    }
}

/// Write an echo request (RFC 792) with `ident` and `seq` into `buf`: data
/// 0, 1, 2, …, then the header and its checksum.
fn emit_echo_request(buf: &mut [u8; ECHO_LEN], ident: u16, seq: u16) {
    let mut packet = icmpv4::Packet::new_unchecked(&mut buf[..]);
    for (i, b) in packet.data_mut().iter_mut().enumerate() {
        *b = i as u8;
    }
    icmpv4::Repr::EchoRequest { ident, seq_no: seq }.emit(&mut packet);
}

/// From an IPv4 packet as a raw socket delivers it: (source, ident, seq) if
/// it carries an echo reply with a valid checksum.
fn parse_echo_reply(packet: &[u8]) -> Option<(Ipv4Addr, u16, u16)> {
    let ip = ipv4::Packet::new_checked(packet).ok()?;
    if ip.protocol() != IpProtocol::Icmp {
        return None;
    }
    match icmpv4::Repr::parse(&icmpv4::Packet::new_checked(ip.payload()).ok()?).ok()? {
        icmpv4::Repr::EchoReply { ident, seq_no } => Some((ip.src_addr(), ident, seq_no)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply Linux sent to `ping -c 1 -s 8 -p 00 127.0.0.1` (identifier
    /// 0x6aa8, sequence 1), as captured on `lo`: IPv4 header, ICMP header, 8
    /// bytes of data.
    const LINUX_ECHO_REPLY: [u8; 36] = [
        0x45, 0x00, 0x00, 0x24, 0x39, 0x17, 0x00, 0x00, 0x40, 0x01, 0x43, 0xc0, 0x7f, 0x00, 0x00, 0x01, //
        0x7f, 0x00, 0x00, 0x01, //
        0x00, 0x00, 0x95, 0x56, 0x6a, 0xa8, 0x00, 0x01, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn echo_request_bytes() {
        let mut request = [0xa5u8; ECHO_LEN];
        emit_echo_request(&mut request, 0x1234, 7);
        assert_eq!(request[..2], [8, 0]);
        assert_eq!(request[4..8], [0x12, 0x34, 0, 7]);
        assert!(request[8..].iter().enumerate().all(|(i, &b)| b == i as u8));
        assert!(icmpv4::Packet::new_checked(&request[..]).unwrap().verify_checksum());
    }

    #[test]
    fn parses_the_reply_linux_sends() {
        let localhost = Ipv4Addr::LOCALHOST;
        assert_eq!(parse_echo_reply(&LINUX_ECHO_REPLY), Some((localhost, 0x6aa8, 1)));
        let mut bad = LINUX_ECHO_REPLY;
        bad[30] ^= 1; // data changed, checksum now wrong
        assert_eq!(parse_echo_reply(&bad), None);
        let mut request = LINUX_ECHO_REPLY;
        request[20] = 8; // an echo request is not a reply
        assert_eq!(parse_echo_reply(&request), None);
        let mut udp = LINUX_ECHO_REPLY;
        udp[9] = 17;
        assert_eq!(parse_echo_reply(&udp), None);
        assert_eq!(parse_echo_reply(&LINUX_ECHO_REPLY[..27]), None);
        assert_eq!(parse_echo_reply(&[]), None);
    }

    #[test]
    #[ignore = "needs root: a raw ICMP socket"]
    fn ping_loopback() {
        let r = ping(None, Ipv4Addr::LOCALHOST, 3, Duration::from_secs(1)).unwrap();
        eprintln!("{r:?}");
        assert_eq!((r.sent, r.received), (3, 3));
        assert!(r.rtt_us.iter().all(|&t| t > 0.0));
    }
}
