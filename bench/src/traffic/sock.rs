//! The socket calls the workloads share: listen, connect and accept in a
//! namespace, and reads and writes that retry until the run's deadline.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::run::{in_ns, is_retry, sock_err, Watch};
use super::{Endpoint, Result, TrafficError, POLL};

/// A TCP listener at `server.addr:port` in the server's namespace, with a
/// receive timeout so `accept` returns every `POLL`. Returns the address
/// actually bound (the port filled in when `port` is 0).
pub(super) fn tcp_listen(server: Endpoint, port: u16) -> Result<(Socket, SocketAddrV4)> {
    let addr = SocketAddrV4::new(server.addr, port);
    in_ns(server.ns, || {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(sock_err("open TCP socket"))?;
        sock.set_reuse_address(true).map_err(sock_err("set SO_REUSEADDR"))?;
        sock.bind(&addr.into()).map_err(|source| TrafficError::Bind { addr, source })?;
        sock.listen(1024).map_err(|source| TrafficError::Bind { addr, source })?;
        sock.set_read_timeout(Some(POLL)).map_err(sock_err("set accept timeout"))?;
        let bound = local_v4(&sock)?;
        Ok((sock, bound))
    })
}

/// The IPv4 address `sock` is bound to.
pub(super) fn local_v4(sock: &Socket) -> Result<SocketAddrV4> {
    let addr = sock.local_addr().map_err(sock_err("read bound address"))?;
    addr.as_socket_ipv4()
        .ok_or_else(|| TrafficError::Socket { what: "read bound address", source: io::ErrorKind::InvalidData.into() })
}

/// A TCP socket in the current namespace, bound to `local` (port chosen at
/// connect time) unless it is unspecified.
pub(super) fn tcp_socket(local: Ipv4Addr) -> Result<Socket> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(sock_err("open TCP socket"))?;
    if !local.is_unspecified() {
        // Let connect pick the port with the full 4-tuple in view, so that
        // binding the address does not use up an ephemeral port exclusively.
        setsockopt_int(&sock, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)
            .map_err(sock_err("set IP_BIND_ADDRESS_NO_PORT"))?;
        let addr = SocketAddrV4::new(local, 0);
        sock.bind(&addr.into()).map_err(|source| TrafficError::Bind { addr, source })?;
    }
    Ok(sock)
}

/// Connect from `local` to `target` in the current namespace, giving up
/// after `timeout`; the connection gets `POLL` read and write timeouts.
pub(super) fn tcp_connect(local: Ipv4Addr, target: SocketAddrV4, timeout: Duration) -> Result<Socket> {
    let sock = tcp_socket(local)?;
    sock.connect_timeout(&SockAddr::from(target), timeout)
        .map_err(|source| TrafficError::Connect { addr: target, source })?;
    set_poll_timeouts(&sock)?;
    Ok(sock)
}

pub(super) fn set_poll_timeouts(sock: &Socket) -> Result<()> {
    sock.set_read_timeout(Some(POLL)).map_err(sock_err("set receive timeout"))?;
    sock.set_write_timeout(Some(POLL)).map_err(sock_err("set send timeout"))
}

pub(super) fn set_nodelay(sock: &Socket) -> Result<()> {
    sock.set_nodelay(true).map_err(sock_err("set TCP_NODELAY"))
}

/// Accept one connection, giving up at the deadline or on abort.
pub(super) fn accept_one(listener: &Socket, addr: SocketAddrV4, watch: Watch) -> Result<Socket> {
    loop {
        match listener.accept() {
            Ok((sock, _)) => {
                set_poll_timeouts(&sock)?;
                return Ok(sock);
            }
            Err(e) if is_retry(&e) || e.raw_os_error() == Some(libc::ECONNABORTED) => watch.check("accept")?,
            Err(source) => return Err(TrafficError::Accept { addr, source }),
        }
    }
}

/// Accept `n` connections.
pub(super) fn accept_n(listener: &Socket, addr: SocketAddrV4, n: usize, watch: Watch) -> Result<Vec<Socket>> {
    (0..n).map(|_| accept_one(listener, addr, watch)).collect()
}

/// One read, retried across timeouts until data, EOF (0), the deadline or
/// an abort.
pub(super) fn read_some(sock: &Socket, buf: &mut [u8], watch: Watch, op: &'static str) -> Result<usize> {
    loop {
        match (&*sock).read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if is_retry(&e) => watch.check(op)?,
            Err(source) => return Err(TrafficError::Io { op, source }),
        }
    }
}

/// Fill `buf` completely. `false` if the peer closed before sending any of
/// it (a clean end between messages); EOF in the middle is an error.
pub(super) fn read_full(sock: &Socket, buf: &mut [u8], watch: Watch, op: &'static str) -> Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match read_some(sock, &mut buf[done..], watch, op)? {
            0 if done == 0 => return Ok(false),
            0 => return Err(TrafficError::PeerClosed { op }),
            n => done += n,
        }
    }
    Ok(true)
}

/// One send without SIGPIPE (a reset peer is an error, not a signal).
pub(super) fn send_some(sock: &Socket, buf: &[u8]) -> io::Result<usize> {
    sock.send_with_flags(buf, libc::MSG_NOSIGNAL)
}

/// Send all of `buf`, retrying across timeouts until the deadline or an
/// abort.
pub(super) fn write_full(sock: &Socket, buf: &[u8], watch: Watch, op: &'static str) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match send_some(sock, &buf[done..]) {
            Ok(0) => return Err(TrafficError::Io { op, source: io::ErrorKind::WriteZero.into() }),
            Ok(n) => done += n,
            Err(e) if is_retry(&e) => watch.check(op)?,
            Err(source) => return Err(TrafficError::Io { op, source }),
        }
    }
    Ok(())
}

pub(super) fn setsockopt_int(
    sock: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the fd is valid for the lifetime of `sock`; the option value
    // is a c_int on the stack whose size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
