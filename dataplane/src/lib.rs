//! tapnet's dataplane: packet views, packet buffers, ports, the learning
//! bridge, the gateway with its NAT, and the worker threads that move frames
//! between TAP devices and the uplink.
//!
//! The crate knows nothing of netlink, the CLI or the daemon: the control
//! plane creates ports and networks and hands them over through
//! [`Dataplane`]. See `docs/ARCHITECTURE.md` for the threading model.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod bridge;
pub mod dns;
pub mod nat;
pub mod overlay;
pub mod packet;
pub mod port;
pub mod router;
pub mod stats;
pub mod wire;
mod worker;

pub use packet::{BUF_SIZE, HEADROOM, MAX_FRAME};
#[doc(hidden)]
pub use worker::classify_batch;
pub use worker::{PortRole, BATCH, BUDGET};

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use mio::{Poll, Waker};

use bridge::Fdb;
use port::{PortId, PortQueue};
use router::{ArpCache, NetConfig, RouterConfig};
use stats::{NetId, Stats, MAX_NETWORKS, MAX_PORTS};
use worker::{Ctrl, Worker, WorkerSetup, WAKER};

/// Milliseconds since the dataplane started; shared by the workers and the
/// control plane so MAC ages agree. Read once per batch, never per frame.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { epoch: Instant::now() }
    }
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// 16 bytes from the kernel's random source (for secrets such as the DNS
/// SYN cookie key). Falls back to the clock and pid if `getrandom` fails,
/// which only weakens the cookies.
fn random_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    // SAFETY: b is valid for writes of 16 bytes; getrandom writes at most
    // that many.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 16 {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        b = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    b
}

/// Errors from driving the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// Creating a worker's poller failed.
    #[error("create worker poller")]
    Poll(#[source] io::Error),
    /// Starting a worker thread failed.
    #[error("start worker thread")]
    Spawn(#[source] io::Error),
    /// The connection table could not be made.
    #[error("connection table: {0}")]
    Conntrack(String),
    /// More workers than the dataplane supports ([`MAX_WORKERS`]).
    #[error("{0} workers: at most {MAX_WORKERS} are supported")]
    TooManyWorkers(usize),
    /// A worker thread is gone.
    #[error("worker {0} is not running")]
    WorkerGone(usize),
    /// A port needs exactly one queue per worker.
    #[error("port has {got} queues but the dataplane has {want} workers")]
    QueueCount { want: usize, got: usize },
    /// An id is beyond the dataplane's fixed tables.
    #[error("{what} id {id} is out of range")]
    IdRange { what: &'static str, id: usize },
    /// A worker could not register a port with its poller.
    #[error("worker {worker} could not add port {port}")]
    AddPort {
        worker: usize,
        port: PortId,
        #[source]
        source: io::Error,
    },
}

/// The most worker threads a dataplane runs (a worker tracks the others it
/// must wake in one `u64`).
pub const MAX_WORKERS: usize = 64;

/// How to run the dataplane.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker threads; each owns one queue of every port.
    pub workers: usize,
    /// Pin worker i to core i (mod the number of cores).
    pub pin: bool,
    /// After handling traffic, keep polling without sleeping for this many
    /// microseconds before blocking in epoll again (0: always block).
    pub busy_poll_us: u32,
    /// Bound on tracked connections, shared out evenly between the workers
    /// (each has its own table).
    pub conntrack_max: usize,
    pub conntrack_timeouts: nat::Timeouts,
}

/// Default bound on tracked connections.
pub const DEFAULT_CONNTRACK_MAX: usize = 65_536;

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 1,
            pin: false,
            busy_poll_us: 0,
            conntrack_max: DEFAULT_CONNTRACK_MAX,
            conntrack_timeouts: nat::Timeouts::default(),
        }
    }
}

/// One tracked connection, as `tapnet conntrack` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    /// The worker whose table holds it.
    pub worker: usize,
    /// The initiator's packets as they arrive.
    pub original: nat::FlowKey,
    /// What they leave as.
    pub translated: nat::FlowKey,
    /// The replies as they arrive.
    pub reply: nat::FlowKey,
    pub kind: nat::Kind,
    pub state: String,
    pub replied: bool,
    /// The control plane's tag (a container's port).
    pub tag: u32,
    pub timeout_ms: u64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

impl FlowInfo {
    fn from_live(worker: usize, l: &nat::conntrack::Live<'_>, now: u64) -> FlowInfo {
        let e = l.entry;
        FlowInfo {
            worker,
            original: e.original,
            translated: e.target(nat::Dir::Original),
            reply: e.reply,
            kind: e.kind,
            state: e.state.to_string(),
            replied: e.replied,
            tag: e.tag,
            timeout_ms: l.timeout_left_ms(now),
            packets: e.packets,
            bytes: e.bytes,
        }
    }
}

struct WorkerHandle {
    tx: Sender<Ctrl>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

/// A worker thread that ended without being told to: it panicked, or its
/// poll loop gave up. The dataplane then forwards only on the queues of
/// the workers left, so whoever runs it should stop it
/// ([`Dataplane::exits`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerExit {
    pub worker: usize,
    /// The panic's message, or why the loop ended.
    pub reason: String,
}

impl std::fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dataplane worker {} stopped: {}", self.worker, self.reason)
    }
}

/// Run `body`, the whole life of worker `id`'s thread, and report on
/// `exits` if it ends while `stopping` is unset, or panics at any time.
/// The panic itself is printed by the panic hook as usual; the worker's
/// state (and so every queue it owned) has been dropped by the time the
/// report is sent.
fn supervise(id: usize, stopping: &AtomicBool, exits: &Sender<WorkerExit>, body: impl FnOnce()) {
    let res = std::panic::catch_unwind(AssertUnwindSafe(body));
    let reason = match res {
        Ok(()) if stopping.load(Ordering::Acquire) => return,
        Ok(()) => "its poll loop ended without being asked to".to_string(),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            format!("panicked: {msg}")
        }
    };
    let _ = exits.send(WorkerExit { worker: id, reason });
}

/// A running dataplane: its workers and counters.
pub struct Dataplane {
    workers: Vec<WorkerHandle>,
    stats: Arc<Stats>,
    clock: Clock,
    arp: Arc<ArpCache>,
    /// Set before the workers are told to stop: their ending is then no news.
    stopping: Arc<AtomicBool>,
    exits: Receiver<WorkerExit>,
}

impl Dataplane {
    /// Start `cfg.workers` worker threads.
    pub fn start(cfg: &Config) -> Result<Dataplane, DataplaneError> {
        Self::start_with(cfg, Worker::run)
    }

    /// [`Dataplane::start`], with each worker's thread running `run`
    /// (which is `Worker::run`, except in this crate's tests).
    fn start_with(cfg: &Config, run: fn(Worker)) -> Result<Dataplane, DataplaneError> {
        let n = cfg.workers.max(1);
        if n > MAX_WORKERS {
            return Err(DataplaneError::TooManyWorkers(n));
        }
        let stats = Arc::new(Stats::new(n));
        let clock = Clock::new();
        let cores = if cfg.pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
        let arp = Arc::new(ArpCache::new(router::arp::DEFAULT_SLOTS));
        let (exit_tx, exits) = unbounded();
        let stopping = Arc::new(AtomicBool::new(false));
        let mut dp = Dataplane {
            workers: Vec::with_capacity(n),
            stats: stats.clone(),
            clock,
            arp: arp.clone(),
            stopping: stopping.clone(),
            exits,
        };
        let mut polls = Vec::with_capacity(n);
        let mut wakers = Vec::with_capacity(n);
        for _ in 0..n {
            let poll = Poll::new().map_err(DataplaneError::Poll)?;
            wakers.push(Arc::new(Waker::new(poll.registry(), WAKER).map_err(DataplaneError::Poll)?));
            polls.push(poll);
        }
        let meshes = worker::handoff::mesh(&wakers);
        let per_worker = cfg.conntrack_max.div_ceil(n).max(1);
        let dns_key = dns::CookieKey::new(random_bytes());
        for (id, (poll, handoff)) in polls.into_iter().zip(meshes).enumerate() {
            let waker = wakers[id].clone();
            let (tx, rx) = unbounded();
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let worker = Worker::new(WorkerSetup {
                id,
                workers: n,
                poll,
                ctrl: rx,
                stats: stats.clone(),
                clock,
                busy_poll_us: cfg.busy_poll_us,
                arp: arp.clone(),
                dns_key,
                conntrack: nat::Conntrack::new(per_worker, cfg.conntrack_timeouts)
                    .map_err(|e| DataplaneError::Conntrack(e.to_string()))?,
                handoff,
            });
            let (stopping, exit_tx) = (stopping.clone(), exit_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("tapnet-w{id}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    supervise(id, &stopping, &exit_tx, move || run(worker))
                })
                .map_err(DataplaneError::Spawn)?;
            dp.workers.push(WorkerHandle { tx, waker, thread: Some(thread) });
        }
        Ok(dp)
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn clock(&self) -> Clock {
        self.clock
    }
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Workers that ended without being told to, one message each
    /// ([`WorkerExit`]). Nothing arrives while every worker runs, nor
    /// because of [`Dataplane::shutdown`].
    pub fn exits(&self) -> Receiver<WorkerExit> {
        self.exits.clone()
    }

    fn send(&self, w: usize, msg: Ctrl) -> Result<(), DataplaneError> {
        let h = &self.workers[w];
        h.tx.send(msg).map_err(|_| DataplaneError::WorkerGone(w))?;
        h.waker.wake().map_err(|_| DataplaneError::WorkerGone(w))
    }

    /// Send one message to every worker and wait until each has applied it.
    fn broadcast<T>(&self, mk: impl Fn(Sender<T>) -> Ctrl) -> Result<Vec<T>, DataplaneError> {
        let mut rxs = Vec::with_capacity(self.workers.len());
        for w in 0..self.workers.len() {
            let (tx, rx) = bounded(1);
            self.send(w, mk(tx))?;
            rxs.push(rx);
        }
        rxs.into_iter().enumerate().map(|(w, rx)| rx.recv().map_err(|_| DataplaneError::WorkerGone(w))).collect()
    }

    fn check_id(what: &'static str, id: usize, max: usize) -> Result<(), DataplaneError> {
        if id >= max {
            return Err(DataplaneError::IdRange { what, id });
        }
        Ok(())
    }

    /// The uplink's ARP cache (shared by the workers).
    pub fn arp(&self) -> &ArpCache {
        &self.arp
    }

    /// Create network `net` (one learning bridge) backed by `fdb`, with a
    /// gateway if `cfg` is given.
    pub fn add_network(&self, net: NetId, fdb: Arc<Fdb>, cfg: Option<Arc<NetConfig>>) -> Result<(), DataplaneError> {
        Self::check_id("network", net as usize, MAX_NETWORKS)?;
        self.stats.reset_network(net);
        self.broadcast(|done| Ctrl::AddNetwork { net, fdb: fdb.clone(), cfg: cfg.clone(), done })?;
        Ok(())
    }

    /// Replace network `net`'s gateway configuration.
    pub fn set_network(&self, net: NetId, cfg: Option<Arc<NetConfig>>) -> Result<(), DataplaneError> {
        Self::check_id("network", net as usize, MAX_NETWORKS)?;
        self.broadcast(|done| Ctrl::SetNetwork { net, cfg: cfg.clone(), done })?;
        Ok(())
    }

    /// Replace the router's configuration (uplink, endpoints, published
    /// ports). When this returns every worker uses the new one.
    pub fn set_router(&self, cfg: Arc<RouterConfig>) -> Result<(), DataplaneError> {
        self.broadcast(|done| Ctrl::SetRouter { cfg: cfg.clone(), done })?;
        Ok(())
    }

    /// Remove network `net` and every port still attached to it.
    pub fn remove_network(&self, net: NetId) -> Result<(), DataplaneError> {
        Self::check_id("network", net as usize, MAX_NETWORKS)?;
        self.broadcast(|done| Ctrl::RemoveNetwork { net, done })?;
        Ok(())
    }

    /// Attach a port: `queues[i]` goes to worker i. Frames longer than
    /// `mtu` (GSO super-frames by their segment size) are not sent out of it.
    pub fn add_port(
        &self,
        port: PortId,
        role: PortRole,
        mtu: u32,
        queues: Vec<PortQueue>,
    ) -> Result<(), DataplaneError> {
        self.add_port_pinned(port, role, mtu, None, queues)
    }

    /// [`Dataplane::add_port`] for an access port pinned to `pin`'s MAC and
    /// IPv4 address (`--port-security`): frames from any other are dropped.
    pub fn add_port_pinned(
        &self,
        port: PortId,
        role: PortRole,
        mtu: u32,
        pin: Option<bridge::Pin>,
        queues: Vec<PortQueue>,
    ) -> Result<(), DataplaneError> {
        Self::check_id("port", port as usize, MAX_PORTS)?;
        if let PortRole::Access(net) | PortRole::Vtep { net, .. } = role {
            Self::check_id("network", net as usize, MAX_NETWORKS)?;
        }
        // A virtual port (a remote VTEP) has no queues.
        let queues: Vec<Option<PortQueue>> = if matches!(role, PortRole::Vtep { .. }) {
            if !queues.is_empty() {
                return Err(DataplaneError::QueueCount { want: 0, got: queues.len() });
            }
            (0..self.workers.len()).map(|_| None).collect()
        } else {
            if queues.len() != self.workers.len() {
                return Err(DataplaneError::QueueCount { want: self.workers.len(), got: queues.len() });
            }
            queues.into_iter().map(Some).collect()
        };
        self.stats.reset_port(port);
        let mut rxs = Vec::with_capacity(queues.len());
        for (w, queue) in queues.into_iter().enumerate() {
            let (tx, rx) = bounded(1);
            self.send(w, Ctrl::AddPort { port, role, mtu, pin, queue, done: tx })?;
            rxs.push(rx);
        }
        let mut first_err = None;
        for (w, rx) in rxs.into_iter().enumerate() {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(source)) => first_err = first_err.or(Some(DataplaneError::AddPort { worker: w, port, source })),
                Err(_) => first_err = first_err.or(Some(DataplaneError::WorkerGone(w))),
            }
        }
        if let Some(e) = first_err {
            let _ = self.remove_port(port);
            return Err(e);
        }
        Ok(())
    }

    /// Detach a port. When this returns, no worker holds its queues (they
    /// are closed) and the id may be reused.
    pub fn remove_port(&self, port: PortId) -> Result<(), DataplaneError> {
        Self::check_id("port", port as usize, MAX_PORTS)?;
        self.broadcast(|done| Ctrl::RemovePort { port, done })?;
        Ok(())
    }

    /// Every tracked connection, over all workers.
    pub fn conntrack(&self) -> Result<Vec<FlowInfo>, DataplaneError> {
        Ok(self.broadcast(|done| Ctrl::Conntrack { done })?.into_iter().flatten().collect())
    }

    /// Stop every worker's reading after its current batch (true), or let
    /// them read again; returns once all have done so. While paused the
    /// tables (connections, learned MACs) do not change: a live takeover
    /// snapshots them then. Control messages are still served.
    pub fn pause(&self, paused: bool) -> Result<(), DataplaneError> {
        self.broadcast(|done| Ctrl::Pause { paused, done })?;
        Ok(())
    }

    /// Every worker's connections, worker order, timers relative to now,
    /// for a new process taking this one over ([`Dataplane::pause`] it
    /// first so they do not change after).
    pub fn conntrack_export(&self) -> Result<Vec<Vec<crate::nat::Exported>>, DataplaneError> {
        self.broadcast(|done| Ctrl::ConntrackExport { done })
    }

    /// Track the connections another process exported: table `i` goes to
    /// worker `i` (flow ownership is a function of the worker count, which
    /// must be the same; extra tables are ignored). Before the workers
    /// read, so that no packet of such a flow makes a new entry first.
    /// Returns how many were taken (a full table or a taken tuple skips one).
    pub fn conntrack_import(&self, tables: Vec<Vec<crate::nat::Exported>>) -> Result<usize, DataplaneError> {
        let mut rxs = Vec::with_capacity(tables.len());
        for (w, entries) in tables.into_iter().enumerate().take(self.workers.len()) {
            let (tx, rx) = bounded(1);
            self.send(w, Ctrl::ConntrackImport { entries, done: tx })?;
            rxs.push(rx);
        }
        let mut n = 0;
        for (w, rx) in rxs.into_iter().enumerate() {
            n += rx.recv().map_err(|_| DataplaneError::WorkerGone(w))?;
        }
        Ok(n)
    }

    /// Forget the connections tagged `tag`; returns how many.
    pub fn conntrack_forget(&self, tag: u32) -> Result<usize, DataplaneError> {
        Ok(self.broadcast(|done| Ctrl::ConntrackForget { tag, done })?.into_iter().sum())
    }

    /// Stop every worker and wait for them.
    pub fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::Release);
        for w in 0..self.workers.len() {
            let _ = self.send(w, Ctrl::Shutdown);
        }
        for h in self.workers.iter_mut() {
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn supervised(stopping: bool, body: impl FnOnce() + Send + 'static) -> Option<WorkerExit> {
        let (tx, rx) = unbounded();
        let flag = Arc::new(AtomicBool::new(stopping));
        std::thread::spawn(move || supervise(7, &flag, &tx, body)).join().expect("supervise never unwinds");
        rx.try_recv().ok()
    }

    #[test]
    fn a_worker_that_panics_or_returns_unasked_is_reported() {
        let e = supervised(false, || panic!("frame of doom")).expect("reported");
        assert_eq!(e.worker, 7);
        assert_eq!(e.reason, "panicked: frame of doom");
        let e = supervised(false, || std::panic::panic_any(format!("port {}", 3))).expect("reported");
        assert_eq!(e.reason, "panicked: port 3");
        let e = supervised(false, || {}).expect("reported");
        assert!(e.reason.contains("without being asked"), "{e}");
        assert!(e.to_string().starts_with("dataplane worker 7 stopped: "), "{e}");
        // Stopping on purpose is no news; a panic while stopping still is.
        assert_eq!(supervised(true, || {}), None);
        assert!(supervised(true, || panic!("late")).is_some());
    }

    #[test]
    fn more_workers_than_supported_are_refused() {
        let cfg = Config { workers: MAX_WORKERS + 1, ..Config::default() };
        let e = Dataplane::start(&cfg).err().expect("refused");
        assert!(matches!(e, DataplaneError::TooManyWorkers(65)), "{e}");
    }

    #[test]
    fn a_dataplane_reports_the_worker_that_died_and_nothing_else() {
        let cfg = Config { workers: 3, ..Config::default() };
        // Worker 1's thread panics as soon as it starts; the others run.
        let mut dp = Dataplane::start_with(&cfg, |w| if w.id() == 1 { panic!("worker one fails") } else { w.run() })
            .expect("start");
        let exits = dp.exits();
        let e = exits.recv_timeout(Duration::from_secs(10)).expect("the dead worker is reported");
        assert_eq!(e, WorkerExit { worker: 1, reason: "panicked: worker one fails".into() });
        // The others still answer; the dead one is reported as gone.
        assert!(matches!(dp.remove_port(5), Err(DataplaneError::WorkerGone(1))));
        dp.shutdown();
        assert!(exits.recv_timeout(Duration::from_millis(200)).is_err(), "an orderly stop was reported");

        let mut dp = Dataplane::start(&Config { workers: 2, ..Config::default() }).expect("start");
        let exits = dp.exits();
        dp.remove_port(5).expect("both workers answer");
        dp.shutdown();
        assert!(exits.recv_timeout(Duration::from_millis(200)).is_err(), "an orderly stop was reported");
    }
}
