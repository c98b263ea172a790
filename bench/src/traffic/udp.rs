//! UDP at a fixed or the maximum packet rate, paced against the clock and
//! batched with sendmmsg/recvmmsg (`mmsg.rs`).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::run::{both, in_ns, is_retry, join, rate, sock_err, Watch};
use super::sock::{local_v4, setsockopt_int};
use super::{mmsg, pattern, Endpoint, Result, TrafficError, POLL, SETTLE};

/// How long the UDP receiver keeps counting after the sender stops.
pub const UDP_DRAIN: Duration = Duration::from_millis(200);
/// Datagrams per sendmmsg/recvmmsg call.
pub(super) const UDP_BATCH: usize = 64;
/// Largest UDP payload in one IPv4 datagram (65535 - 20 - 8).
const MAX_UDP_PAYLOAD: usize = 65_507;
/// Socket buffer size asked for on UDP sockets (forced when root).
const UDP_SOCKET_BUFFER: usize = 8 << 20;

/// Result of [`udp_stream`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct UdpReport {
    pub payload: usize,
    pub sent: u64,
    pub received: u64,
    /// Datagrams sent per second of sending.
    pub offered_pps: f64,
    /// Datagrams received per second of sending.
    pub delivered_pps: f64,
    /// Fraction of sent datagrams that did not arrive, 0..=1.
    pub loss: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// possible) for `duration`. The receiver counts what arrives until
/// [`UDP_DRAIN`] after the sender stops. The sender paces in small bursts
/// against the monotonic clock and both sides batch with
/// sendmmsg/recvmmsg.
///
/// # Errors
/// A payload over 65507 bytes or a zero rate; namespace entry, bind or
/// connect failing; a send or receive error other than a full queue.
pub fn udp_stream(
    server: Endpoint,
    client: Endpoint,
    port: u16,
    payload: usize,
    rate_pps: Option<u64>,
    duration: Duration,
) -> std::result::Result<UdpReport, TrafficError> {
    if payload > MAX_UDP_PAYLOAD {
        return Err(TrafficError::InvalidArgument("UDP payload must be at most 65507 bytes"));
    }
    if rate_pps == Some(0) {
        return Err(TrafficError::InvalidArgument("UDP rate must be positive"));
    }
    let start = Instant::now();
    let (sock, listening) = udp_bind(server, port)?;
    let target = server.target(listening);
    let abort = AtomicBool::new(false);
    let sender_done = AtomicBool::new(false);
    let watch = Watch { deadline: start + duration + SETTLE, abort: &abort };
    thread::scope(|s| {
        let receiver = s.spawn(|| watch.fail(udp_receive(&sock, payload, &sender_done, watch)));
        let sent = watch.fail(in_ns(client.ns, || udp_send(client.addr, target, payload, rate_pps, duration, watch)));
        sender_done.store(true, Ordering::Release);
        both(sent, join(receiver)).map(|(tx, rx)| udp_report(payload, tx, rx))
    })
}

/// Datagrams and bytes counted on one side, and the time they took.
#[derive(Debug, Clone, Copy, Default)]
struct UdpCount {
    packets: u64,
    bytes: u64,
    elapsed: Duration,
}

fn udp_report(payload: usize, tx: UdpCount, rx: UdpCount) -> UdpReport {
    let secs = tx.elapsed.as_secs_f64();
    let loss = if tx.packets == 0 { 0.0 } else { (1.0 - rx.packets as f64 / tx.packets as f64).max(0.0) };
    UdpReport {
        payload,
        sent: tx.packets,
        received: rx.packets,
        offered_pps: rate(tx.packets as f64, secs),
        delivered_pps: rate(rx.packets as f64, secs),
        loss,
        bytes_sent: tx.bytes,
        bytes_received: rx.bytes,
    }
}

/// Bind the UDP receiver in the server's namespace.
fn udp_bind(server: Endpoint, port: u16) -> Result<(Socket, SocketAddrV4)> {
    let addr = SocketAddrV4::new(server.addr, port);
    in_ns(server.ns, || {
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(sock_err("open UDP socket"))?;
        sock.bind(&addr.into()).map_err(|source| TrafficError::Bind { addr, source })?;
        set_buffer(&sock, libc::SO_RCVBUF, SO_RCVBUFFORCE);
        sock.set_read_timeout(Some(POLL)).map_err(sock_err("set receive timeout"))?;
        let bound = local_v4(&sock)?;
        Ok((sock, bound))
    })
}

/// Sender: paced (or unpaced) batches until `duration` has passed.
fn udp_send(
    local: Ipv4Addr,
    target: SocketAddrV4,
    payload: usize,
    rate_pps: Option<u64>,
    duration: Duration,
    watch: Watch,
) -> Result<UdpCount> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(sock_err("open UDP socket"))?;
    if !local.is_unspecified() {
        let addr = SocketAddrV4::new(local, 0);
        sock.bind(&addr.into()).map_err(|source| TrafficError::Bind { addr, source })?;
    }
    sock.connect(&target.into()).map_err(|source| TrafficError::Connect { addr: target, source })?;
    sock.set_write_timeout(Some(POLL)).map_err(sock_err("set send timeout"))?;
    set_buffer(&sock, libc::SO_SNDBUF, SO_SNDBUFFORCE);

    let mut datagram = vec![0u8; payload];
    pattern::fill(pattern::stream_key(0), 0, &mut datagram);
    let mut batch = mmsg::Batch::new(datagram);
    let start = Instant::now();
    let stop_at = start + duration;
    let pacer = rate_pps.map(|r| Pacer::new(start, r));
    let mut sent = 0u64;
    let mut now = start;
    while now < stop_at {
        watch.check("UDP send")?;
        let due = pacer.as_ref().map_or(UDP_BATCH as u64, |p| p.due(now, sent));
        if due == 0 {
            if let Some(p) = &pacer {
                thread::sleep(p.next_burst(sent).min(stop_at).saturating_duration_since(now));
            }
        } else {
            match batch.send(&sock, due.min(UDP_BATCH as u64) as usize) {
                Ok(n) => sent += n as u64,
                // Full queues and reports of earlier datagrams refused by
                // the peer: this batch was not sent; pace on.
                Err(e) if is_retry(&e) || matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ECONNREFUSED)) => {}
                Err(source) => return Err(TrafficError::Io { op: "UDP send", source }),
            }
        }
        now = Instant::now();
    }
    Ok(UdpCount { packets: sent, bytes: sent * payload as u64, elapsed: now - start })
}

/// Receiver: count datagrams until [`UDP_DRAIN`] after the sender is done.
fn udp_receive(sock: &Socket, payload: usize, sender_done: &AtomicBool, watch: Watch) -> Result<UdpCount> {
    let mut batch = mmsg::Batch::new(vec![0u8; payload.max(1)]);
    let mut count = UdpCount::default();
    let mut drain_until: Option<Instant> = None;
    loop {
        match batch.recv(sock) {
            Ok((packets, bytes)) => {
                count.packets += packets as u64;
                count.bytes += bytes;
            }
            Err(e) if is_retry(&e) => {}
            Err(source) => return Err(TrafficError::Io { op: "UDP receive", source }),
        }
        let now = Instant::now();
        match drain_until {
            Some(t) if now >= t => return Ok(count),
            None if sender_done.load(Ordering::Acquire) => drain_until = Some(now + UDP_DRAIN),
            _ => watch.check("UDP receive")?,
        }
    }
}

/// Paces a sender at a fixed packet rate: by time `t` after `start`,
/// `floor(t·rate) + 1` packets are due. Between bursts the sender sleeps
/// until `burst` packets are due (about 100 µs worth, at most one batch),
/// never per packet. Time is passed in, so pacing is testable.
#[derive(Debug)]
struct Pacer {
    start: Instant,
    rate: u64,
    burst: u64,
}

impl Pacer {
    fn new(start: Instant, rate: u64) -> Self {
        Pacer { start, rate: rate.max(1), burst: (rate / 10_000).clamp(1, UDP_BATCH as u64) }
    }

    /// Packets due by `now` and not sent yet, given `sent` so far.
    fn due(&self, now: Instant, sent: u64) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let target = elapsed * u128::from(self.rate) / 1_000_000_000 + 1;
        u64::try_from(target).unwrap_or(u64::MAX).saturating_sub(sent)
    }

    /// When the next burst is due, given `sent` so far.
    fn next_burst(&self, sent: u64) -> Instant {
        let packets = u128::from(sent + self.burst - 1);
        let nanos = packets * 1_000_000_000 / u128::from(self.rate);
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` (asm-generic/socket.h): like
/// `SO_RCVBUF`/`SO_SNDBUF` but past the sysctl limits, for root. The libc
/// crate does not export them for every target.
const SO_SNDBUFFORCE: libc::c_int = 32;
const SO_RCVBUFFORCE: libc::c_int = 33;

/// Ask for `UDP_SOCKET_BUFFER` bytes of socket buffer: forced if we may,
/// else as much as the sysctl limits allow. Best effort.
fn set_buffer(sock: &Socket, plain: libc::c_int, force: libc::c_int) {
    let size = UDP_SOCKET_BUFFER as libc::c_int;
    if setsockopt_int(sock, libc::SOL_SOCKET, force, size).is_err() {
        let _ = setsockopt_int(sock, libc::SOL_SOCKET, plain, size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::here;

    #[test]
    fn pacer_releases_packets_on_schedule() {
        let t0 = Instant::now();
        let p = Pacer::new(t0, 20_000); // one packet per 50 µs, bursts of 2
        assert_eq!(p.due(t0, 0), 1);
        assert_eq!(p.due(t0, 1), 0);
        assert_eq!(p.due(t0 + Duration::from_micros(100), 1), 2);
        assert_eq!(p.due(t0 + Duration::from_secs(1), 0), 20_001);
        assert_eq!(p.next_burst(1), t0 + Duration::from_micros(100));
        assert!(p.due(p.next_burst(1), 1) >= 2);
    }

    #[test]
    fn udp_at_a_fixed_rate_delivers_everything() {
        let (rate, secs) = (20_000u64, 0.5);
        let r = udp_stream(here(), here(), 0, 512, Some(rate), Duration::from_secs_f64(secs)).unwrap();
        eprintln!("{r:?}");
        let expected = rate as f64 * secs;
        assert!((r.sent as f64 - expected).abs() <= expected * 0.1, "sent {}", r.sent);
        assert!(r.received as f64 >= r.sent as f64 * 0.99, "received {} of {}", r.received, r.sent);
        assert_eq!(r.bytes_sent, r.sent * 512);
        assert_eq!(r.bytes_received, r.received * 512);
        assert!(r.loss <= 0.01);
    }

    #[test]
    fn udp_unlimited_offers_at_least_what_it_delivers() {
        let r = udp_stream(here(), here(), 0, 64, None, Duration::from_millis(300)).unwrap();
        eprintln!("{r:?}");
        assert!(r.sent > 0);
        assert!(r.offered_pps >= r.delivered_pps);
        assert!((0.0..=1.0).contains(&r.loss));
    }
}
