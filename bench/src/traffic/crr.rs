//! New TCP connections per second: connect, one-byte exchange, reset.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

use super::run::{both, in_ns, is_retry, join, rate, sock_err, Watch};
use super::sock::{send_some, tcp_listen, tcp_socket};
use super::{Endpoint, Result, TrafficError, CONNECT_TIMEOUT, POLL, SETTLE};

/// Read/write timeout on each connection-rate connection.
const CRR_IO_TIMEOUT: Duration = Duration::from_secs(1);

/// Result of [`tcp_crr`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct CrrReport {
    /// Completed connect/request/response/close cycles.
    pub connections: u64,
    pub per_second: f64,
    /// Cycles that failed after the first one succeeded.
    pub failed: u64,
}

/// New TCP connections per second: connect, 1-byte request, 1-byte
/// response, close, repeated for `duration`. The client closes with
/// `SO_LINGER` 0 (a reset), so neither side keeps `TIME_WAIT` state and the
/// ephemeral ports do not run out; the kernel picks a new source port for
/// every connection. The first cycle failing fails the run; later failures
/// are counted.
///
/// # Errors
/// Namespace entry, bind or accept failing, or the first cycle failing.
pub fn tcp_crr(
    server: Endpoint,
    client: Endpoint,
    port: u16,
    duration: Duration,
) -> std::result::Result<CrrReport, TrafficError> {
    let start = Instant::now();
    let (listener, listening) = tcp_listen(server, port)?;
    let target = server.target(listening);
    let abort = AtomicBool::new(false);
    let client_done = AtomicBool::new(false);
    let watch = Watch { deadline: start + duration + SETTLE, abort: &abort };
    thread::scope(|s| {
        let serving = s.spawn(|| watch.fail(crr_serve(&listener, listening, &client_done, watch)));
        let counted = watch.fail(in_ns(client.ns, || crr_client(client.addr, target, start + duration, watch)));
        client_done.store(true, Ordering::Relaxed);
        both(counted, join(serving)).map(|(report, _)| report)
    })
}

/// Server side of the connection rate test: serve connections one at a
/// time until the client is done. Returns the connections served.
fn crr_serve(listener: &Socket, addr: SocketAddrV4, client_done: &AtomicBool, watch: Watch) -> Result<u64> {
    let mut served = 0;
    while !client_done.load(Ordering::Relaxed) {
        match listener.accept() {
            // A client that misbehaves is the client's failure to count.
            Ok((sock, _)) => served += u64::from(crr_answer(&sock).is_ok()),
            Err(e) if is_retry(&e) || e.raw_os_error() == Some(libc::ECONNABORTED) => watch.check("crr accept")?,
            Err(source) => return Err(TrafficError::Accept { addr, source }),
        }
    }
    Ok(served)
}

/// Answer one connection-rate request, then wait for the client's reset so
/// that the server side does not hold the connection in `TIME_WAIT`.
fn crr_answer(sock: &Socket) -> io::Result<()> {
    sock.set_read_timeout(Some(CRR_IO_TIMEOUT))?;
    sock.set_write_timeout(Some(CRR_IO_TIMEOUT))?;
    sock.set_nodelay(true)?;
    let mut byte = [0u8; 1];
    if (&*sock).read(&mut byte)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    send_some(sock, &byte)?;
    // EOF, a reset or a timeout all end the connection the same way.
    let _ = (&*sock).read(&mut byte);
    Ok(())
}

/// Client side of the connection rate test, run inside the client's
/// namespace (every cycle opens a new socket there).
fn crr_client(local: Ipv4Addr, target: SocketAddrV4, stop_at: Instant, watch: Watch) -> Result<CrrReport> {
    let start = Instant::now();
    let (mut connections, mut failed) = (0u64, 0u64);
    let mut now = start;
    while now < stop_at {
        watch.check("crr connect")?;
        let timeout = CONNECT_TIMEOUT.min(watch.deadline.saturating_duration_since(now)).max(POLL);
        match crr_once(local, target, timeout) {
            Ok(()) => connections += 1,
            Err(e) if connections == 0 && failed == 0 => return Err(e),
            Err(_) => failed += 1,
        }
        now = Instant::now();
    }
    Ok(CrrReport { connections, per_second: rate(connections as f64, (now - start).as_secs_f64()), failed })
}

/// One connect/request/response/reset cycle. Dropping the socket at the
/// end closes it with a reset (linger 0).
fn crr_once(local: Ipv4Addr, target: SocketAddrV4, connect_timeout: Duration) -> Result<()> {
    let sock = tcp_socket(local)?;
    sock.set_linger(Some(Duration::ZERO)).map_err(sock_err("set SO_LINGER"))?;
    sock.set_nodelay(true).map_err(sock_err("set TCP_NODELAY"))?;
    sock.connect_timeout(&SockAddr::from(target), connect_timeout)
        .map_err(|source| TrafficError::Connect { addr: target, source })?;
    sock.set_read_timeout(Some(CRR_IO_TIMEOUT)).map_err(sock_err("set receive timeout"))?;
    sock.set_write_timeout(Some(CRR_IO_TIMEOUT)).map_err(sock_err("set send timeout"))?;
    let mut byte = [1u8; 1];
    send_some(&sock, &byte).map_err(|source| TrafficError::Io { op: "crr request send", source })?;
    match (&sock).read(&mut byte) {
        Ok(0) => Err(TrafficError::PeerClosed { op: "crr response receive" }),
        Ok(_) => Ok(()),
        Err(source) => Err(TrafficError::Io { op: "crr response receive", source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::here;

    #[test]
    fn crr_opens_connections() {
        let r = tcp_crr(here(), here(), 0, Duration::from_millis(500)).unwrap();
        eprintln!("{r:?}");
        assert!(r.connections > 0);
        assert!(r.per_second > 0.0);
    }
}
