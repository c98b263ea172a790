//! tapnet's built-in traffic generator: TCP bulk throughput (optionally with
//! every byte verified), TCP request/response latency, TCP connection rate,
//! paced UDP and ICMP echo, between two network namespaces and without any
//! external tool.
//!
//! Each run is self-contained: the server side is bound inside its namespace
//! before any client starts, clients run on their own threads (entering their
//! namespace with [`netns::run_in`]), and everything is joined before the
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

use std::io::{self, Read};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::thread::{self, ScopedJoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use control::netns::{self, NetnsError};

/// How long a TCP connect may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on any single blocking socket call, so that loops notice the
/// deadline and the abort flag promptly.
const POLL: Duration = Duration::from_millis(100);
/// How long after the sending phase ends a run may still take (in-flight
/// data, teardown) before it counts as hung.
pub const SETTLE: Duration = Duration::from_secs(3);
/// Size of one bulk write and of the bulk receive buffer: iperf3's default,
/// so the two generators load a datapath the same way (with 256 KiB the
/// built-in figures drifted up to 11 % from iperf3's on the kernel path).
const BULK_CHUNK: usize = 128 * 1024;
/// Most parallel bulk streams accepted.
const MAX_STREAMS: usize = 1024;
/// How long the UDP receiver keeps counting after the sender stops.
pub const UDP_DRAIN: Duration = Duration::from_millis(200);
/// Datagrams per sendmmsg/recvmmsg call.
const UDP_BATCH: usize = 64;
/// Largest UDP payload in one IPv4 datagram (65535 - 20 - 8).
const MAX_UDP_PAYLOAD: usize = 65_507;
/// Socket buffer size asked for on UDP sockets (forced when root).
const UDP_SOCKET_BUFFER: usize = 8 << 20;
/// Read/write timeout on each connection-rate connection.
const CRR_IO_TIMEOUT: Duration = Duration::from_secs(1);
/// Most latency samples kept by request/response (16 MiB); beyond this
/// reservoir sampling keeps the percentiles unbiased.
const MAX_LATENCY_SAMPLES: usize = 1 << 22;

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
}

impl<'a> Endpoint<'a> {
    /// An endpoint at `addr` in namespace `ns`.
    pub fn new(ns: Option<&'a Path>, addr: Ipv4Addr) -> Self {
        Endpoint { ns, addr }
    }
}

/// Result of [`tcp_bulk`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct BulkReport {
    pub streams: usize,
    /// Bytes received by the server (and, with `verified`, checked).
    pub bytes: u64,
    /// Receiver-side time from the first data byte to the last, any stream.
    pub seconds: f64,
    pub gbit_per_s: f64,
    pub verified: bool,
    /// Bytes received per stream, indexed by stream id.
    pub per_stream_bytes: Vec<u64>,
}

/// Result of [`tcp_rr`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct RrReport {
    pub transactions: u64,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub min_us: f64,
    pub max_us: f64,
}

/// Result of [`tcp_crr`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct CrrReport {
    /// Completed connect/request/response/close cycles.
    pub connections: u64,
    pub per_second: f64,
    /// Cycles that failed after the first one succeeded.
    pub failed: u64,
}

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

/// Result of [`ping`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct PingReport {
    pub sent: u32,
    pub received: u32,
    /// Round-trip time of each echo answered, in order.
    pub rtt_us: Vec<f64>,
}

// ---------------------------------------------------------------------------
// TCP bulk
// ---------------------------------------------------------------------------

/// TCP bulk transfer: `streams` parallel connections from `client` to a
/// server listening at `server.addr:port`. Stops after `bytes` in total (if
/// given, split evenly over the streams) or after `duration`, whichever
/// comes first. With `verify` the sender writes a deterministic pattern
/// keyed by stream and offset and the receiver checks every byte, failing
/// with [`TrafficError::Verify`] at the first mismatch. Throughput is
/// measured on the receiving side.
///
/// # Errors
/// Any failed step: namespace entry, bind, connect (after at most
/// [`CONNECT_TIMEOUT`]), I/O, a verification failure, fewer bytes arriving
/// than were sent, or the run overrunning `duration` + [`SETTLE`].
pub fn tcp_bulk(
    server: Endpoint,
    client: Endpoint,
    port: u16,
    streams: usize,
    bytes: Option<u64>,
    duration: Duration,
    verify: bool,
) -> std::result::Result<BulkReport, TrafficError> {
    let plan = BulkPlan { streams, bytes, duration, verify, faults: BulkFaults::default() };
    run_bulk(server, client, port, &plan)
}

/// Everything a bulk run needs to know.
#[derive(Debug, Clone)]
struct BulkPlan {
    streams: usize,
    bytes: Option<u64>,
    duration: Duration,
    verify: bool,
    faults: BulkFaults,
}

/// Test hooks: faults injected into an otherwise normal bulk run.
#[derive(Debug, Clone, Default)]
struct BulkFaults {
    /// Flip the byte at (stream, offset) on the wire.
    corrupt: Option<(usize, u64)>,
    /// Connect here instead of to the server's listening address.
    redirect: Option<SocketAddrV4>,
}

impl BulkPlan {
    /// Bytes stream `id` sends: an even share of `bytes`, or no limit.
    fn quota(&self, id: usize) -> u64 {
        match self.bytes {
            None => u64::MAX,
            Some(total) => {
                let n = self.streams as u64;
                total / n + u64::from((id as u64) < total % n)
            }
        }
    }
}

/// What one bulk receiver saw.
#[derive(Debug)]
struct StreamRx {
    stream: usize,
    bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Identifies a tapnet bulk stream ("TNB1"), followed by the stream id.
const BULK_MAGIC: u32 = u32::from_be_bytes(*b"TNB1");
const BULK_HEADER_LEN: usize = 8;

fn run_bulk(server: Endpoint, client: Endpoint, port: u16, plan: &BulkPlan) -> Result<BulkReport> {
    if plan.streams == 0 || plan.streams > MAX_STREAMS {
        return Err(TrafficError::InvalidArgument("streams must be 1..=1024"));
    }
    let start = Instant::now();
    let (listener, listen_addr) = tcp_listen(server, port)?;
    let target = plan.faults.redirect.unwrap_or(listen_addr);
    let abort = AtomicBool::new(false);
    let watch = Watch { deadline: start + plan.duration + SETTLE, abort: &abort };
    let stop_at = start + plan.duration;

    thread::scope(|s| {
        let senders: Vec<_> = (0..plan.streams)
            .map(|id| {
                s.spawn(move || {
                    watch.fail(in_ns(client.ns, || send_stream(client.addr, target, id, stop_at, plan, watch)))
                })
            })
            .collect();
        let received = watch.fail(accept_n(&listener, listen_addr, plan.streams, watch)).map(|conns| {
            let receivers: Vec<_> =
                conns.into_iter().map(|sock| s.spawn(move || watch.fail(receive_stream(&sock, plan, watch)))).collect();
            receivers.into_iter().map(join).collect::<Vec<_>>()
        });
        let sent: Vec<_> = senders.into_iter().map(join).collect();
        summarize_bulk(plan, received, sent)
    })
}

/// Combine the receivers' and senders' results into a report, or pick the
/// error that explains the run.
fn summarize_bulk(
    plan: &BulkPlan,
    received: Result<Vec<Result<StreamRx>>>,
    sent: Vec<Result<u64>>,
) -> Result<BulkReport> {
    let mut errors = Vec::new();
    let received = match received {
        Ok(rx) => rx.into_iter().filter_map(|r| r.map_err(|e| errors.push(e)).ok()).collect(),
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    };
    let sent: Vec<u64> = sent.into_iter().filter_map(|r| r.map_err(|e| errors.push(e)).ok()).collect();
    if let Some(e) = most_relevant(errors) {
        return Err(e);
    }
    let mut per_stream = vec![None; plan.streams];
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for rx in received {
        if per_stream[rx.stream].replace(rx.bytes).is_some() {
            return Err(TrafficError::BadHeader { magic: BULK_MAGIC, stream: rx.stream as u32 });
        }
        first = min_instant(first, rx.first);
        last = rx.last.max(last);
    }
    let mut per_stream_bytes = Vec::with_capacity(plan.streams);
    for (stream, (got, &sent)) in per_stream.into_iter().zip(&sent).enumerate() {
        let received = got.unwrap_or(0);
        if received != sent {
            return Err(TrafficError::Short { stream, sent, received });
        }
        per_stream_bytes.push(received);
    }
    let bytes: u64 = per_stream_bytes.iter().sum();
    let seconds = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    Ok(BulkReport {
        streams: plan.streams,
        bytes,
        seconds,
        gbit_per_s: rate(bytes as f64 * 8.0, seconds) / 1e9,
        verified: plan.verify,
        per_stream_bytes,
    })
}

/// Client side of one bulk stream: connect, send the header, then chunks of
/// the pattern until the quota or `stop_at`. Returns the bytes sent.
fn send_stream(
    local: Ipv4Addr,
    target: SocketAddrV4,
    id: usize,
    stop_at: Instant,
    plan: &BulkPlan,
    watch: Watch,
) -> Result<u64> {
    let sock = tcp_connect(local, target, CONNECT_TIMEOUT)?;
    let mut header = [0u8; BULK_HEADER_LEN];
    header[..4].copy_from_slice(&BULK_MAGIC.to_be_bytes());
    header[4..].copy_from_slice(&(id as u32).to_be_bytes());
    write_full(&sock, &header, watch, "bulk header send")?;

    let key = pattern::stream_key(id as u32);
    let quota = plan.quota(id);
    let mut buf = vec![0u8; BULK_CHUNK];
    if !plan.verify {
        // Unverified runs send the same (non-trivial) chunk over and over.
        pattern::fill(key, 0, &mut buf);
    }
    let mut offset = 0u64;
    while offset < quota && Instant::now() < stop_at {
        watch.check("bulk send")?;
        let len = (quota - offset).min(BULK_CHUNK as u64) as usize;
        let chunk = &mut buf[..len];
        if plan.verify {
            pattern::fill(key, offset, chunk);
        }
        let flip = corrupt_index(plan.faults.corrupt, id, offset, len);
        if let Some(i) = flip {
            chunk[i] ^= 0xff;
        }
        write_full(&sock, chunk, watch, "bulk send")?;
        if let Some(i) = flip {
            chunk[i] ^= 0xff;
        }
        offset += len as u64;
    }
    sock.shutdown(Shutdown::Write).map_err(|source| TrafficError::Io { op: "bulk shutdown", source })?;
    Ok(offset)
}

/// Index within the chunk at `offset..offset+len` of stream `id` that the
/// corruption hook wants flipped, if any.
fn corrupt_index(corrupt: Option<(usize, u64)>, id: usize, offset: u64, len: usize) -> Option<usize> {
    let (stream, at) = corrupt?;
    (stream == id && at >= offset && at < offset + len as u64).then(|| (at - offset) as usize)
}

/// Server side of one bulk stream: read the header, then everything up to
/// EOF, checking it against the pattern if the plan says so.
fn receive_stream(sock: &Socket, plan: &BulkPlan, watch: Watch) -> Result<StreamRx> {
    let mut header = [0u8; BULK_HEADER_LEN];
    if !read_full(sock, &mut header, watch, "bulk header receive")? {
        return Err(TrafficError::PeerClosed { op: "bulk header receive" });
    }
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let stream = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if magic != BULK_MAGIC || stream as usize >= plan.streams {
        return Err(TrafficError::BadHeader { magic, stream });
    }
    let key = pattern::stream_key(stream);
    let mut buf = vec![0u8; BULK_CHUNK];
    let mut expected = vec![0u8; if plan.verify { BULK_CHUNK } else { 0 }];
    let mut rx = StreamRx { stream: stream as usize, bytes: 0, first: None, last: None };
    loop {
        let n = read_some(sock, &mut buf, watch, "bulk receive")?;
        if n == 0 {
            return Ok(rx);
        }
        let now = Instant::now();
        rx.first.get_or_insert(now);
        rx.last = Some(now);
        if plan.verify {
            if let Some(i) = pattern::mismatch(key, rx.bytes, &buf[..n], &mut expected[..n]) {
                return Err(TrafficError::Verify {
                    stream: rx.stream,
                    offset: rx.bytes + i as u64,
                    expected: expected[i],
                    got: buf[i],
                });
            }
        }
        rx.bytes += n as u64;
    }
}

/// The deterministic byte stream that verified bulk runs carry.
///
/// Stream `s` carries the little-endian bytes of `word(key(s), i)` for
/// i = 0, 1, 2, …, where `word` is one xorshift64 step applied to
/// `key + i·φ` (φ the 64-bit golden ratio, odd). Both maps are bijections, so
/// no two words of a stream repeat: misordered, duplicated or dropped data
/// shows up, not just flipped bits. Any offset can be computed directly,
/// which lets the receiver check whatever chunk sizes TCP hands it; the loop
/// has no carried dependency and vectorizes (well over 20 Gbit/s per core
/// when optimized).
mod pattern {
    const PHI: u64 = 0x9e37_79b9_7f4a_7c15;

    /// The key of stream `stream` (splitmix64 of its id).
    pub fn stream_key(stream: u32) -> u64 {
        let mut z = u64::from(stream).wrapping_add(PHI);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[inline]
    fn word(key: u64, index: u64) -> u64 {
        let mut x = key.wrapping_add(index.wrapping_mul(PHI));
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }

    /// Fill `out` with the pattern of stream `key` from byte `offset` on.
    pub fn fill(key: u64, offset: u64, out: &mut [u8]) {
        let mut index = offset / 8;
        let skip = (offset % 8) as usize;
        let mut out = out;
        if skip != 0 {
            let bytes = word(key, index).to_le_bytes();
            let n = (8 - skip).min(out.len());
            out[..n].copy_from_slice(&bytes[skip..skip + n]);
            out = &mut out[n..];
            index += 1;
        }
        let mut words = out.chunks_exact_mut(8);
        for chunk in &mut words {
            chunk.copy_from_slice(&word(key, index).to_le_bytes());
            index += 1;
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            let n = tail.len();
            tail.copy_from_slice(&word(key, index).to_le_bytes()[..n]);
        }
    }

    /// Index of the first byte of `data` that differs from the pattern at
    /// `offset`. `scratch` (as long as `data`) receives the expected bytes.
    pub fn mismatch(key: u64, offset: u64, data: &[u8], scratch: &mut [u8]) -> Option<usize> {
        fill(key, offset, scratch);
        if scratch == data {
            return None;
        }
        data.iter().zip(scratch.iter()).position(|(a, b)| a != b)
    }
}

// ---------------------------------------------------------------------------
// TCP request/response and connection rate
// ---------------------------------------------------------------------------

/// Request/response over one TCP connection with `TCP_NODELAY`: the client
/// sends `size` bytes, the server answers with `size` bytes, repeated for
/// `duration`. Latency is measured per transaction on the client.
///
/// # Errors
/// As for [`tcp_bulk`]; also a zero `size`.
pub fn tcp_rr(
    server: Endpoint,
    client: Endpoint,
    port: u16,
    size: usize,
    duration: Duration,
) -> std::result::Result<RrReport, TrafficError> {
    if size == 0 {
        return Err(TrafficError::InvalidArgument("request size must be at least 1 byte"));
    }
    let start = Instant::now();
    let (listener, target) = tcp_listen(server, port)?;
    let abort = AtomicBool::new(false);
    let watch = Watch { deadline: start + duration + SETTLE, abort: &abort };
    thread::scope(|s| {
        let serving = s.spawn(|| watch.fail(rr_serve(&listener, target, size, watch)));
        let timed = watch.fail(in_ns(client.ns, || rr_client(client.addr, target, size, start + duration, watch)));
        both(timed, join(serving)).map(|(lat, _)| lat.report())
    })
}

/// Server side of request/response: echo `size`-byte messages until EOF.
/// Returns the transactions served.
fn rr_serve(listener: &Socket, addr: SocketAddrV4, size: usize, watch: Watch) -> Result<u64> {
    let sock = accept_one(listener, addr, watch)?;
    set_nodelay(&sock)?;
    let mut buf = vec![0u8; size];
    let mut served = 0;
    while read_full(&sock, &mut buf, watch, "rr request receive")? {
        write_full(&sock, &buf, watch, "rr response send")?;
        served += 1;
    }
    Ok(served)
}

/// Client side of request/response: transactions back to back until
/// `stop_at`, each timed.
fn rr_client(local: Ipv4Addr, target: SocketAddrV4, size: usize, stop_at: Instant, watch: Watch) -> Result<Latencies> {
    let sock = tcp_connect(local, target, CONNECT_TIMEOUT)?;
    set_nodelay(&sock)?;
    let request = vec![0xa5u8; size];
    let mut response = vec![0u8; size];
    let expected = stop_at.saturating_duration_since(Instant::now()).as_secs_f64() * 100_000.0;
    let mut lat = Latencies::with_capacity((expected as usize).clamp(4096, MAX_LATENCY_SAMPLES));
    let mut t0 = Instant::now();
    while t0 < stop_at {
        write_full(&sock, &request, watch, "rr request send")?;
        if !read_full(&sock, &mut response, watch, "rr response receive")? {
            return Err(TrafficError::PeerClosed { op: "rr response receive" });
        }
        let t1 = Instant::now();
        lat.record(t1 - t0);
        t0 = t1;
    }
    sock.shutdown(Shutdown::Write).map_err(|source| TrafficError::Io { op: "rr shutdown", source })?;
    Ok(lat)
}

/// Latency samples in nanoseconds, in a buffer allocated up front. Once it
/// is full, reservoir sampling (Algorithm R) replaces samples at random so
/// the kept ones stay a uniform sample of all transactions; count, min, max
/// and the time span stay exact.
struct Latencies {
    samples: Vec<u32>,
    cap: usize,
    count: u64,
    min_ns: u64,
    max_ns: u64,
    total: Duration,
    rng: u64,
}

impl Latencies {
    fn with_capacity(cap: usize) -> Self {
        let cap = cap.max(1);
        Latencies {
            samples: Vec::with_capacity(cap),
            cap,
            count: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            total: Duration::ZERO,
            rng: 0x2545_f491_4f6c_dd1d,
        }
    }

    fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        self.total += d;
        let sample = u32::try_from(ns).unwrap_or(u32::MAX);
        if self.samples.len() < self.cap {
            self.samples.push(sample);
        } else {
            let j = self.next_random() % (self.count + 1);
            if let Some(slot) = self.samples.get_mut(j as usize) {
                *slot = sample;
            }
        }
        self.count += 1;
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Nearest-rank percentile `q` (0..=1) of sorted samples, in µs.
    fn percentile(sorted: &[u32], q: f64) -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        f64::from(sorted[rank - 1]) / 1e3
    }

    fn report(mut self) -> RrReport {
        self.samples.sort_unstable();
        let empty = self.count == 0;
        RrReport {
            transactions: self.count,
            per_second: rate(self.count as f64, self.total.as_secs_f64()),
            p50_us: Self::percentile(&self.samples, 0.50),
            p99_us: Self::percentile(&self.samples, 0.99),
            min_us: if empty { 0.0 } else { self.min_ns as f64 / 1e3 },
            max_us: self.max_ns as f64 / 1e3,
        }
    }
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
    let (listener, target) = tcp_listen(server, port)?;
    let abort = AtomicBool::new(false);
    let client_done = AtomicBool::new(false);
    let watch = Watch { deadline: start + duration + SETTLE, abort: &abort };
    thread::scope(|s| {
        let serving = s.spawn(|| watch.fail(crr_serve(&listener, target, &client_done, watch)));
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

// ---------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------

/// UDP with `payload`-byte datagrams at `rate_pps` (`None`: as fast as
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
    let (sock, target) = udp_bind(server, port)?;
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

/// sendmmsg/recvmmsg over a fixed batch of headers allocated once.
mod mmsg {
    use super::UDP_BATCH;
    use socket2::Socket;
    use std::io;
    use std::os::fd::AsRawFd;

    /// `UDP_BATCH` message headers, each with one iovec over the same
    /// buffer. Sending repeats the buffer; receiving overwrites it with each
    /// datagram in turn, which is fine because the receiver only counts.
    /// The headers hold raw pointers into the iovecs and the buffer, whose
    /// heap storage is never touched, moved or resized after `new`.
    pub struct Batch {
        // Owned here so the pointers in `hdrs` stay valid; only the kernel
        // reads or writes them.
        _buf: Vec<u8>,
        _iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
    }

    impl Batch {
        /// A batch of datagrams of `buf.len()` bytes: `buf` is what every
        /// sent datagram carries, or where received ones land.
        pub fn new(mut buf: Vec<u8>) -> Self {
            let len = buf.len();
            if buf.is_empty() {
                buf.push(0); // a real allocation even for empty datagrams
            }
            let base = buf.as_mut_ptr().cast::<libc::c_void>();
            let mut iovs: Vec<libc::iovec> =
                (0..UDP_BATCH).map(|_| libc::iovec { iov_base: base, iov_len: len }).collect();
            let hdrs = iovs
                .iter_mut()
                .map(|iov| {
                    // SAFETY: mmsghdr is a plain C struct of integers and
                    // pointers, for which all-zero is a valid value (no
                    // address, no control data).
                    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    h.msg_hdr.msg_iov = iov;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            Batch { _buf: buf, _iovs: iovs, hdrs }
        }

        /// Send the first `n` (≤ `UDP_BATCH`) datagrams on the connected
        /// `sock`. Returns how many were sent.
        pub fn send(&mut self, sock: &Socket, n: usize) -> io::Result<usize> {
            let n = n.min(UDP_BATCH);
            // SAFETY: the first `n` headers are initialized and point to
            // iovecs and a buffer owned by `self`, valid for the call.
            let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), self.hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(rc as usize)
        }

        /// Receive up to a batch, waiting (up to the socket's receive
        /// timeout) only for the first. Returns (datagrams, bytes).
        pub fn recv(&mut self, sock: &Socket) -> io::Result<(usize, u64)> {
            // SAFETY: all headers are initialized and point to iovecs and a
            // buffer owned by `self`, valid and writable for the call; no
            // Rust reference to the buffer is alive. The timeout argument
            // may be null.
            let rc = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    UDP_BATCH as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = rc as usize;
            let bytes = self.hdrs[..n].iter().map(|h| u64::from(h.msg_len)).sum();
            Ok((n, bytes))
        }
    }
}

// ---------------------------------------------------------------------------
// ICMP echo
// ---------------------------------------------------------------------------

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
    let _ = setsockopt_int(&sock, libc::SOL_RAW, ICMP_FILTER, !(1 << icmp::ECHO_REPLY));
    let ident = next_ident();
    let to = SockAddr::from(SocketAddrV4::new(dst, 0));
    let mut request = [0u8; icmp::ECHO_LEN];
    let mut reply = [0u8; 2048];
    let mut rtt_us = Vec::with_capacity(count.min(1 << 16) as usize);
    for i in 0..count {
        let seq = i as u16;
        icmp::emit_echo_request(&mut request, ident, seq);
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
                if icmp::parse_echo_reply(&buf[..n]) == Some((dst, ident, seq)) {
                    return Ok(Some(at));
                }
            }
            Err(e) if is_retry(&e) => {}
            Err(source) => return Err(TrafficError::Io { op: "ICMP echo receive", source }),
        }
    }
}

/// ICMP echo messages (RFC 792, "Echo or Echo Reply Message") and the IPv4
/// header around received ones (RFC 791 §3.1), read by offset.
mod icmp {
    use std::net::Ipv4Addr;

    pub const ECHO_REPLY: u8 = 0;
    pub const ECHO_REQUEST: u8 = 8;
    /// Header plus 56 bytes of data, as ping(8) sends.
    pub const ECHO_LEN: usize = HEADER_LEN + 56;
    const HEADER_LEN: usize = 8;
    const IPPROTO_ICMP: u8 = 1;

    mod field {
        use std::ops::Range;
        pub const TYPE: usize = 0;
        pub const CODE: usize = 1;
        pub const CHECKSUM: Range<usize> = 2..4;
        pub const IDENT: Range<usize> = 4..6;
        pub const SEQ: Range<usize> = 6..8;
    }

    mod ipv4 {
        use std::ops::Range;
        pub const VER_IHL: usize = 0;
        pub const TOTAL_LEN: Range<usize> = 2..4;
        pub const PROTOCOL: usize = 9;
        pub const SRC: Range<usize> = 12..16;
        pub const MIN_HEADER_LEN: usize = 20;
    }

    /// Write an echo request with `ident` and `seq` into `buf` (the whole
    /// message, `ECHO_LEN` bytes), checksum included.
    pub fn emit_echo_request(buf: &mut [u8; ECHO_LEN], ident: u16, seq: u16) {
        emit_echo(buf, ECHO_REQUEST, ident, seq);
    }

    pub(super) fn emit_echo(buf: &mut [u8], kind: u8, ident: u16, seq: u16) {
        buf[field::TYPE] = kind;
        buf[field::CODE] = 0;
        buf[field::CHECKSUM].copy_from_slice(&[0, 0]);
        buf[field::IDENT].copy_from_slice(&ident.to_be_bytes());
        buf[field::SEQ].copy_from_slice(&seq.to_be_bytes());
        for (i, b) in buf[HEADER_LEN..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let sum = checksum(buf);
        buf[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }

    /// The Internet checksum (RFC 1071) of `data`.
    pub fn checksum(data: &[u8]) -> u16 {
        let mut words = data.chunks_exact(2);
        let mut sum: u64 = words.by_ref().map(|w| u64::from(u16::from_be_bytes([w[0], w[1]]))).sum();
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// From an IPv4 packet as a raw socket delivers it: (source, ident,
    /// seq) if it is a well-formed echo reply with a valid checksum.
    pub fn parse_echo_reply(packet: &[u8]) -> Option<(Ipv4Addr, u16, u16)> {
        let ver_ihl = *packet.get(ipv4::VER_IHL)?;
        let ihl = usize::from(ver_ihl & 0x0f) * 4;
        if ver_ihl >> 4 != 4 || ihl < ipv4::MIN_HEADER_LEN || packet.len() < ihl + HEADER_LEN {
            return None;
        }
        if packet[ipv4::PROTOCOL] != IPPROTO_ICMP {
            return None;
        }
        let total = usize::from(u16::from_be_bytes([packet[ipv4::TOTAL_LEN][0], packet[ipv4::TOTAL_LEN][1]]));
        let end = if (ihl + HEADER_LEN..=packet.len()).contains(&total) { total } else { packet.len() };
        let msg = &packet[ihl..end];
        if msg[field::TYPE] != ECHO_REPLY || msg[field::CODE] != 0 || checksum(msg) != 0 {
            return None;
        }
        let src = <[u8; 4]>::try_from(&packet[ipv4::SRC]).ok().map(Ipv4Addr::from)?;
        let ident = u16::from_be_bytes([msg[field::IDENT.start], msg[field::IDENT.start + 1]]);
        let seq = u16::from_be_bytes([msg[field::SEQ.start], msg[field::SEQ.start + 1]]);
        Some((src, ident, seq))
    }
}

// ---------------------------------------------------------------------------
// Shared plumbing: namespaces, sockets, bounded blocking I/O, error choice
// ---------------------------------------------------------------------------

/// Bounds on a blocking loop: the run's hard deadline, and the flag any
/// thread of the run raises when it fails.
#[derive(Clone, Copy)]
struct Watch<'a> {
    deadline: Instant,
    abort: &'a AtomicBool,
}

impl Watch<'_> {
    /// Fail if the run was aborted or `op` overran the deadline.
    fn check(&self, op: &'static str) -> Result<()> {
        if self.abort.load(Ordering::Relaxed) {
            Err(TrafficError::Aborted)
        } else if Instant::now() >= self.deadline {
            Err(TrafficError::Timeout(op))
        } else {
            Ok(())
        }
    }

    /// Pass `r` on, raising the abort flag if it is an error.
    fn fail<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.abort.store(true, Ordering::Relaxed);
        }
        r
    }
}

/// Run `f` in namespace `ns` (on a helper thread), or right here for `None`.
fn in_ns<T: Send>(ns: Option<&Path>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    match ns {
        None => f(),
        Some(path) => netns::run_in(path, f)?,
    }
}

/// Join a traffic thread; a panic becomes an error.
fn join<T>(handle: ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle.join().unwrap_or(Err(TrafficError::ThreadPanicked))
}

/// Of the errors of one run, the one that explains it: data errors first,
/// then ordinary failures, then timeouts, then the aborts they caused.
fn most_relevant(errors: impl IntoIterator<Item = TrafficError>) -> Option<TrafficError> {
    fn rank(e: &TrafficError) -> u8 {
        match e {
            TrafficError::Verify { .. } | TrafficError::Short { .. } | TrafficError::BadHeader { .. } => 0,
            TrafficError::Timeout(_) => 2,
            TrafficError::Aborted => 3,
            _ => 1,
        }
    }
    errors.into_iter().min_by_key(rank)
}

/// Both results, or the error that explains the run.
fn both<A, B>(a: Result<A>, b: Result<B>) -> Result<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(most_relevant(a.err().into_iter().chain(b.err())).unwrap_or(TrafficError::Aborted)),
    }
}

fn sock_err(what: &'static str) -> impl FnOnce(io::Error) -> TrafficError {
    move |source| TrafficError::Socket { what, source }
}

/// Errors after which a blocking call is simply tried again.
fn is_retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

/// `amount / seconds`, 0 for an empty interval.
fn rate(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        amount / seconds
    } else {
        0.0
    }
}

fn min_instant(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A TCP listener at `server.addr:port` in the server's namespace, with a
/// receive timeout so `accept` returns every `POLL`. Returns the address
/// actually bound (the port filled in when `port` is 0).
fn tcp_listen(server: Endpoint, port: u16) -> Result<(Socket, SocketAddrV4)> {
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
fn local_v4(sock: &Socket) -> Result<SocketAddrV4> {
    let addr = sock.local_addr().map_err(sock_err("read bound address"))?;
    addr.as_socket_ipv4()
        .ok_or_else(|| TrafficError::Socket { what: "read bound address", source: io::ErrorKind::InvalidData.into() })
}

/// A TCP socket in the current namespace, bound to `local` (port chosen at
/// connect time) unless it is unspecified.
fn tcp_socket(local: Ipv4Addr) -> Result<Socket> {
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
fn tcp_connect(local: Ipv4Addr, target: SocketAddrV4, timeout: Duration) -> Result<Socket> {
    let sock = tcp_socket(local)?;
    sock.connect_timeout(&SockAddr::from(target), timeout)
        .map_err(|source| TrafficError::Connect { addr: target, source })?;
    set_poll_timeouts(&sock)?;
    Ok(sock)
}

fn set_poll_timeouts(sock: &Socket) -> Result<()> {
    sock.set_read_timeout(Some(POLL)).map_err(sock_err("set receive timeout"))?;
    sock.set_write_timeout(Some(POLL)).map_err(sock_err("set send timeout"))
}

fn set_nodelay(sock: &Socket) -> Result<()> {
    sock.set_nodelay(true).map_err(sock_err("set TCP_NODELAY"))
}

/// Accept one connection, giving up at the deadline or on abort.
fn accept_one(listener: &Socket, addr: SocketAddrV4, watch: Watch) -> Result<Socket> {
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
fn accept_n(listener: &Socket, addr: SocketAddrV4, n: usize, watch: Watch) -> Result<Vec<Socket>> {
    (0..n).map(|_| accept_one(listener, addr, watch)).collect()
}

/// One read, retried across timeouts until data, EOF (0), the deadline or
/// an abort.
fn read_some(sock: &Socket, buf: &mut [u8], watch: Watch, op: &'static str) -> Result<usize> {
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
fn read_full(sock: &Socket, buf: &mut [u8], watch: Watch, op: &'static str) -> Result<bool> {
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
fn send_some(sock: &Socket, buf: &[u8]) -> io::Result<usize> {
    sock.send_with_flags(buf, libc::MSG_NOSIGNAL)
}

/// Send all of `buf`, retrying across timeouts until the deadline or an
/// abort.
fn write_full(sock: &Socket, buf: &[u8], watch: Watch, op: &'static str) -> Result<()> {
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

fn setsockopt_int(sock: &Socket, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

    fn here() -> Endpoint<'static> {
        Endpoint::new(None, LOCAL)
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// A port with (almost certainly) no listener: bound, then released.
    fn closed_port() -> u16 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddrV4::new(LOCAL, 0).into()).unwrap();
        local_v4(&s).unwrap().port()
    }

    #[test]
    fn pattern_is_the_same_at_any_offset() {
        let key = pattern::stream_key(3);
        let mut whole = vec![0u8; 1000];
        pattern::fill(key, 0, &mut whole);
        for (offset, len) in [(0, 1), (1, 7), (3, 5), (5, 100), (8, 8), (13, 987), (999, 1)] {
            let mut part = vec![0u8; len];
            pattern::fill(key, offset as u64, &mut part);
            assert_eq!(part, whole[offset..offset + len], "offset {offset} len {len}");
        }
        let mut other = vec![0u8; 1000];
        pattern::fill(pattern::stream_key(4), 0, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn pattern_mismatch_finds_the_first_bad_byte() {
        let key = pattern::stream_key(0);
        let mut data = vec![0u8; 4096];
        pattern::fill(key, 77, &mut data);
        let mut scratch = vec![0u8; 4096];
        assert_eq!(pattern::mismatch(key, 77, &data, &mut scratch), None);
        data[1234] ^= 1;
        data[2000] ^= 1;
        assert_eq!(pattern::mismatch(key, 77, &data, &mut scratch), Some(1234));
        // The same bytes one position off do not match.
        data[1234] ^= 1;
        data[2000] ^= 1;
        assert!(pattern::mismatch(key, 78, &data, &mut scratch).is_some());
    }

    #[test]
    fn quotas_split_bytes_evenly() {
        let plan = BulkPlan {
            streams: 3,
            bytes: Some(10),
            duration: Duration::ZERO,
            verify: false,
            faults: Default::default(),
        };
        assert_eq!((0..3).map(|i| plan.quota(i)).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!(corrupt_index(Some((1, 300)), 1, 256, 100), Some(44));
        assert_eq!(corrupt_index(Some((1, 300)), 0, 256, 100), None);
        assert_eq!(corrupt_index(Some((1, 356)), 1, 256, 100), None);
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        assert_eq!(icmp::checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        assert_eq!(icmp::checksum(&[0x00, 0x01, 0xf2]), !0xf201);
    }

    #[test]
    fn echo_round_trip() {
        let mut request = [0xa5u8; icmp::ECHO_LEN];
        icmp::emit_echo_request(&mut request, 0x1234, 7);
        assert_eq!(request[..8], [8, 0, request[2], request[3], 0x12, 0x34, 0, 7]);
        assert_eq!(icmp::checksum(&request), 0);

        // The reply as a raw socket sees it: IPv4 header + ICMP.
        let mut packet = vec![0u8; 20 + icmp::ECHO_LEN];
        packet[0] = 0x45;
        let total = packet.len() as u16;
        packet[2..4].copy_from_slice(&total.to_be_bytes());
        packet[9] = 1;
        packet[12..16].copy_from_slice(&[10, 0, 0, 2]);
        icmp::emit_echo(&mut packet[20..], icmp::ECHO_REPLY, 0x1234, 7);
        assert_eq!(icmp::parse_echo_reply(&packet), Some((Ipv4Addr::new(10, 0, 0, 2), 0x1234, 7)));

        let mut bad = packet.clone();
        bad[30] ^= 1; // payload changed, checksum now wrong
        assert_eq!(icmp::parse_echo_reply(&bad), None);
        let mut request_packet = packet.clone();
        icmp::emit_echo(&mut request_packet[20..], icmp::ECHO_REQUEST, 0x1234, 7);
        assert_eq!(icmp::parse_echo_reply(&request_packet), None);
        assert_eq!(icmp::parse_echo_reply(&packet[..27]), None);
        assert_eq!(icmp::parse_echo_reply(&[]), None);
    }

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
    fn latency_percentiles() {
        let mut lat = Latencies::with_capacity(1000);
        for us in 1..=100u64 {
            lat.record(Duration::from_micros(us));
        }
        let r = lat.report();
        assert_eq!(r.transactions, 100);
        assert_eq!((r.min_us, r.p50_us, r.p99_us, r.max_us), (1.0, 50.0, 99.0, 100.0));

        // Past capacity the reservoir keeps a uniform sample.
        let mut lat = Latencies::with_capacity(100);
        for us in 1..=10_000u64 {
            lat.record(Duration::from_micros(us));
        }
        let r = lat.report();
        assert_eq!((r.transactions, r.min_us, r.max_us), (10_000, 1.0, 10_000.0));
        assert!((2_000.0..8_000.0).contains(&r.p50_us), "p50 {}", r.p50_us);
    }

    fn bulk(streams: usize, per_stream: u64) {
        let total = streams as u64 * per_stream;
        let r = tcp_bulk(here(), here(), 0, streams, Some(total), Duration::from_secs(20), true).unwrap();
        eprintln!("{streams} stream(s): {r:?}");
        assert_eq!(r.bytes, total);
        assert!(r.verified);
        assert_eq!(r.per_stream_bytes, vec![per_stream; streams]);
        assert!(r.gbit_per_s > 0.0);
    }

    #[test]
    fn bulk_one_stream_verified() {
        bulk(1, 50_000_000);
    }

    #[test]
    fn bulk_three_streams_verified() {
        bulk(3, 50_000_000);
    }

    #[test]
    fn bulk_by_duration() {
        let r = tcp_bulk(here(), here(), 0, 2, None, Duration::from_millis(300), false).unwrap();
        assert!(r.bytes > 0);
        assert_eq!(r.per_stream_bytes.iter().sum::<u64>(), r.bytes);
        assert!(!r.verified);
    }

    #[test]
    fn bulk_detects_a_flipped_byte() {
        let at = 3_000_001;
        let plan = BulkPlan {
            streams: 2,
            bytes: Some(20_000_000),
            duration: Duration::from_secs(10),
            verify: true,
            faults: BulkFaults { corrupt: Some((1, at)), ..Default::default() },
        };
        let started = Instant::now();
        match run_bulk(here(), here(), 0, &plan) {
            Err(TrafficError::Verify { stream: 1, offset, expected, got }) => {
                assert_eq!(offset, at);
                assert_eq!(expected ^ got, 0xff);
            }
            other => panic!("expected a verify error, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn connect_to_a_closed_port_fails_fast() {
        let target = SocketAddrV4::new(LOCAL, closed_port());
        let started = Instant::now();
        assert!(matches!(tcp_connect(LOCAL, target, CONNECT_TIMEOUT), Err(TrafficError::Connect { .. })));

        // The whole run fails with the connect error, and the server side
        // stops waiting for connections as soon as the client gives up.
        let plan = BulkPlan {
            streams: 2,
            bytes: None,
            duration: Duration::from_secs(10),
            verify: false,
            faults: BulkFaults { redirect: Some(target), ..Default::default() },
        };
        let err = run_bulk(here(), here(), 0, &plan).unwrap_err();
        assert!(matches!(err, TrafficError::Connect { addr, .. } if addr == target), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn bind_to_a_foreign_address_fails() {
        let foreign = Endpoint::new(None, Ipv4Addr::new(192, 0, 2, 1));
        let err = tcp_rr(foreign, here(), 0, 1, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, TrafficError::Bind { .. }), "{err}");
        assert!(matches!(
            tcp_bulk(here(), here(), 0, 0, None, Duration::ZERO, false),
            Err(TrafficError::InvalidArgument(_))
        ));
    }

    #[test]
    fn rr_measures_latency() {
        let r = tcp_rr(here(), here(), 0, 64, Duration::from_millis(500)).unwrap();
        eprintln!("{r:?}");
        assert!(r.transactions > 0);
        assert!(r.min_us <= r.p50_us && r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
        assert!(r.per_second > 0.0);
    }

    #[test]
    fn crr_opens_connections() {
        let r = tcp_crr(here(), here(), 0, Duration::from_millis(500)).unwrap();
        eprintln!("{r:?}");
        assert!(r.connections > 0);
        assert!(r.per_second > 0.0);
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

    #[test]
    fn ping_loopback() {
        if !is_root() {
            eprintln!("skipped: ping needs root");
            return;
        }
        let r = ping(None, LOCAL, 3, Duration::from_secs(1)).unwrap();
        eprintln!("{r:?}");
        assert_eq!((r.sent, r.received), (3, 3));
        assert!(r.rtt_us.iter().all(|&t| t > 0.0));
    }
}
