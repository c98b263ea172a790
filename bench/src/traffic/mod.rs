//! tapnet's built-in traffic generator: TCP bulk throughput (optionally with
//! every byte verified), TCP request/response latency, TCP connection rate,
//! paced UDP and ICMP echo, between two network namespaces and without any
//! external tool.
//!
//! Each run is self-contained: the server side is bound inside its namespace
//! before any client starts, clients run on their own threads (entering their
//! namespace with [`control::netns::run_in`]), and everything is joined before the
//! function returns. `None` as a namespace means the caller's own.
//!
//! Nothing may hang. Every blocking socket call returns at least every
//! 100 ms so its loop can look at two things: the run's hard deadline
//! (`duration` + [`SETTLE`] from the start) and an abort flag that any thread
//! raises when it fails, so that its peers stop instead of waiting for data
//! that will never come. A connect gives up after [`CONNECT_TIMEOUT`]. When
//! several threads fail, the error that explains the run (a verification
//! failure, a refused connect) wins over the errors it caused in the others.
//!
//! Port 0 lets the kernel pick a free port for the server.
//!
//! One file per workload: `bulk.rs` (with the verification pattern,
//! `pattern.rs`), `rr.rs`, `crr.rs`, `udp.rs` (batched by `mmsg.rs`) and
//! `ping.rs`; `run.rs` bounds and joins the threads of a run, and
//! `sock.rs` holds the socket calls they share.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use control::netns::NetnsError;

mod bulk;
mod crr;
mod mmsg;
mod pattern;
mod ping;
mod rr;
mod run;
mod sock;
mod udp;

pub use bulk::{tcp_bulk, BulkReport};
pub use crr::{tcp_crr, CrrReport};
pub use ping::{ping, PingReport};
pub use rr::{tcp_rr, RrReport};
pub use udp::{udp_stream, UdpReport, UDP_DRAIN};

/// How long a TCP connect may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on any single blocking socket call, so that loops notice the
/// deadline and the abort flag promptly.
const POLL: Duration = Duration::from_millis(100);
/// How long after the sending phase ends a run may still take (in-flight
/// data, teardown) before it counts as hung.
pub const SETTLE: Duration = Duration::from_secs(3);

/// Errors from a traffic run. Only the error that explains the run is
/// returned; errors that other threads hit as a consequence are dropped.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// Entering a network namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Creating or configuring a socket failed.
    #[error("cannot {what}: {source}")]
    Socket { what: &'static str, source: io::Error },
    /// Binding or listening on the server address failed.
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddrV4, source: io::Error },
    /// Accepting a connection failed.
    #[error("accept on {addr} failed: {source}")]
    Accept { addr: SocketAddrV4, source: io::Error },
    /// Connecting to the server failed or timed out.
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddrV4, source: io::Error },
    /// A send or receive failed mid-run.
    #[error("{op} failed: {source}")]
    Io { op: &'static str, source: io::Error },
    /// The peer closed the connection in the middle of a message.
    #[error("peer closed the connection during {op}")]
    PeerClosed { op: &'static str },
    /// A bulk connection started with an unexpected header.
    #[error("bad bulk stream header (magic {magic:#010x}, stream {stream})")]
    BadHeader { magic: u32, stream: u32 },
    /// Received bulk data differs from the pattern the sender writes.
    #[error("stream {stream}: byte at offset {offset} is {got:#04x}, expected {expected:#04x}")]
    Verify { stream: usize, offset: u64, expected: u8, got: u8 },
    /// The receiver saw fewer bytes than the sender wrote.
    #[error("stream {stream}: sent {sent} bytes but received {received}")]
    Short { stream: usize, sent: u64, received: u64 },
    /// A step did not finish before the run's deadline.
    #[error("timed out during {0}")]
    Timeout(&'static str),
    /// Stopped because another thread of the same run failed.
    #[error("stopped because another part of the run failed")]
    Aborted,
    /// A traffic thread panicked.
    #[error("traffic thread panicked")]
    ThreadPanicked,
}

type Result<T> = std::result::Result<T, TrafficError>;

/// One side of a run: the namespace its sockets live in (`None`: the
/// caller's) and its IPv4 address. The server listens on `addr`; a client
/// binds its sockets to `addr` unless it is `0.0.0.0` (then the route
/// decides the source address).
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub ns: Option<&'a Path>,
    pub addr: Ipv4Addr,
    /// For a server: where clients connect to reach it, when that is not
    /// where it listens (a published port, reached through DNAT).
    pub via: Option<SocketAddrV4>,
}

impl<'a> Endpoint<'a> {
    /// An endpoint at `addr` in namespace `ns`.
    pub fn new(ns: Option<&'a Path>, addr: Ipv4Addr) -> Self {
        Endpoint { ns, addr, via: None }
    }

    /// A server that clients reach at `via` (a published port).
    pub fn via(mut self, via: SocketAddrV4) -> Self {
        self.via = Some(via);
        self
    }

    /// Where clients connect, given where the server listens.
    pub(crate) fn target(&self, listening: SocketAddrV4) -> SocketAddrV4 {
        self.via.unwrap_or(listening)
    }
}

/// Both ends on loopback in the caller's namespace, for the tests.
#[cfg(test)]
fn here() -> Endpoint<'static> {
    Endpoint::new(None, Ipv4Addr::LOCALHOST)
}
