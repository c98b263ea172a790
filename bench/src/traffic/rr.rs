//! TCP request/response latency over one connection, with percentiles
//! from a bounded reservoir of samples.

use std::net::{Ipv4Addr, Shutdown, SocketAddrV4};
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::run::{both, in_ns, join, rate, Watch};
use super::sock::{accept_one, read_full, set_nodelay, tcp_connect, tcp_listen, write_full};
use super::{Endpoint, Result, TrafficError, CONNECT_TIMEOUT, SETTLE};

/// Most latency samples kept by request/response (16 MiB); beyond this
/// reservoir sampling keeps the percentiles unbiased.
const MAX_LATENCY_SAMPLES: usize = 1 << 22;

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

/// Request/response over one TCP connection with `TCP_NODELAY`: the client
/// sends `size` bytes, the server answers with `size` bytes, repeated for
/// `duration`. Latency is measured per transaction on the client.
///
/// # Errors
/// As for [`tcp_bulk`](super::tcp_bulk); also a zero `size`.
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
    let (listener, listening) = tcp_listen(server, port)?;
    let target = server.target(listening);
    let abort = AtomicBool::new(false);
    let watch = Watch { deadline: start + duration + SETTLE, abort: &abort };
    thread::scope(|s| {
        let serving = s.spawn(|| watch.fail(rr_serve(&listener, listening, size, watch)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::here;

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

    #[test]
    fn rr_measures_latency() {
        let r = tcp_rr(here(), here(), 0, 64, Duration::from_millis(500)).unwrap();
        eprintln!("{r:?}");
        assert!(r.transactions > 0);
        assert!(r.min_us <= r.p50_us && r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
        assert!(r.per_second > 0.0);
    }

    #[test]
    fn bind_to_a_foreign_address_fails() {
        let foreign = Endpoint::new(None, Ipv4Addr::new(192, 0, 2, 1));
        let err = tcp_rr(foreign, here(), 0, 1, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, TrafficError::Bind { .. }), "{err}");
    }
}
