//! TCP bulk throughput: parallel streams, optionally with every byte
//! checked against the verification pattern (`pattern.rs`), measured on the receiver.

use std::net::{Ipv4Addr, Shutdown, SocketAddrV4};
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::run::{in_ns, join, min_instant, most_relevant, rate, Watch};
use super::sock::{accept_n, read_full, read_some, tcp_connect, tcp_listen, write_full};
use super::{pattern, Endpoint, Result, TrafficError, CONNECT_TIMEOUT, SETTLE};

/// Size of one bulk write and of the bulk receive buffer: iperf3's default,
/// so the two generators load a datapath the same way (with 256 KiB the
/// built-in figures drifted up to 11 % from iperf3's on the kernel path).
const BULK_CHUNK: usize = 128 * 1024;
/// Most parallel bulk streams accepted.
const MAX_STREAMS: usize = 1024;

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
    let target = plan.faults.redirect.unwrap_or(server.target(listen_addr));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::here;
    use crate::traffic::sock::local_v4;
    use socket2::{Domain, Type};

    const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

    /// A port with (almost certainly) no listener: bound, then released.
    fn closed_port() -> u16 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddrV4::new(LOCAL, 0).into()).unwrap();
        local_v4(&s).unwrap().port()
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
    fn zero_streams_is_an_invalid_argument() {
        assert!(matches!(
            tcp_bulk(here(), here(), 0, 0, None, Duration::ZERO, false),
            Err(TrafficError::InvalidArgument(_))
        ));
    }
}
