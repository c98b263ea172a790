//! Worker threads: the per-packet path.
//!
//! Each worker owns one queue of every port, its own buffers, its own NAT
//! table and its own counters; it shares only read-mostly tables with the
//! other workers (the MAC tables, the uplink's ARP cache, configuration
//! snapshots). It waits in epoll (mio) for its queues, reads a batch from a
//! readable queue, runs the batch through the stages and carries out what
//! they decided, all on this thread (run to completion). The threading
//! model, the stages and busy polling are described in docs/ARCHITECTURE.md.
//!
//! - `mod.rs` (this file): the thread, its poll loop and control messages;
//! - [`process`]: one batch through the stages, and transmission;
//! - [`handoff`]: frames handed to the worker that owns their flow;
//! - `overlay.rs`: frames into and out of overlay tunnels.

pub mod handoff;
mod overlay;
mod process;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::bridge::{Fdb, Pin, Tally};
use crate::packet::PacketBuf;
use crate::port::{PortId, PortQueue};
use crate::router::{Action, ArpCache, NetConfig, Router, RouterConfig};
use crate::stats::{NetId, Stats, WorkerStats, MAX_NETWORKS, MAX_PORTS};
use crate::Clock;

pub use process::classify_batch;

/// Frames read from one queue before they go through the stages.
pub const BATCH: usize = 32;
/// Frames served from one queue before the worker turns to the next.
pub const BUDGET: usize = 4 * BATCH;

pub(crate) const WAKER: Token = Token(usize::MAX);

/// Busy polling is armed only after rounds whose frames were all at most
/// this long: no GSO super-frames.
const SPIN_MAX_FRAME: usize = 1518;
/// ... and only when no super-frame was seen for this long (a bulk transfer
/// also has rounds of nothing but ACKs).
const BULK_MEMORY: Duration = Duration::from_millis(10);
/// Frames waiting for ARP resolution, per worker.
const PENDING_MAX: usize = 64;
/// How long a frame may wait for ARP resolution.
const PENDING_MS: u64 = 3_000;
/// How often a worker with frames waiting for ARP looks at the cache again.
const PENDING_POLL: Duration = Duration::from_millis(5);
/// How often an idle worker with tracked connections wakes to expire them.
const SWEEP_POLL: Duration = Duration::from_secs(1);

/// What a port is to the dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRole {
    /// A container's interface on a network (a TAP): bridged.
    Access(NetId),
    /// The uplink: routed, through NAT.
    Uplink,
    /// An overlay tunnel's sockets (VXLAN or GRE): what it reads is
    /// decapsulated and bridged into the network its VNI or key names. A
    /// GRE tunnel is read by one worker only (`crate::port::gre`).
    Tunnel,
    /// A remote VTEP of network `net`, reached through tunnel port
    /// `tunnel`: a virtual port with no queue, which the MAC table can
    /// point at; what is sent to it is encapsulated.
    Vtep { net: NetId, tunnel: PortId, remote: std::net::Ipv4Addr },
}

/// Messages from the control plane to a worker.
pub enum Ctrl {
    AddNetwork {
        net: NetId,
        fdb: Arc<Fdb>,
        cfg: Option<Arc<NetConfig>>,
        done: Sender<()>,
    },
    SetNetwork {
        net: NetId,
        cfg: Option<Arc<NetConfig>>,
        done: Sender<()>,
    },
    RemoveNetwork {
        net: NetId,
        done: Sender<()>,
    },
    AddPort {
        port: PortId,
        role: PortRole,
        mtu: u32,
        /// The addresses an access port is pinned to (`--port-security`).
        pin: Option<Pin>,
        queue: Option<PortQueue>,
        done: Sender<io::Result<()>>,
    },
    RemovePort {
        port: PortId,
        done: Sender<()>,
    },
    SetRouter {
        cfg: Arc<RouterConfig>,
        done: Sender<()>,
    },
    /// List this worker's connections.
    Conntrack {
        done: Sender<Vec<crate::FlowInfo>>,
    },
    /// Stop reading (true) after the current batch, or read again: a live
    /// takeover's snapshot of the tables stays true while the worker
    /// is paused.
    Pause {
        paused: bool,
        done: Sender<()>,
    },
    /// This worker's connections for another process (a live takeover).
    ConntrackExport {
        done: Sender<Vec<crate::nat::Exported>>,
    },
    /// Track connections another process exported; answers how many.
    ConntrackImport {
        entries: Vec<crate::nat::Exported>,
        done: Sender<usize>,
    },
    /// Forget the connections whose tag is `tag` (a container going away).
    ConntrackForget {
        tag: u32,
        done: Sender<usize>,
    },
    Shutdown,
}

struct WPort {
    /// `None` for a virtual port (a remote VTEP).
    queue: Option<PortQueue>,
    role: PortRole,
    mtu: u32,
    /// Port security: the only source MAC and IPv4 address allowed in.
    pin: Option<Pin>,
    ready: bool,
}

struct WNet {
    fdb: Arc<Fdb>,
    /// Access ports, the flood list.
    ports: Vec<PortId>,
    /// Remote VTEPs of an overlay network: floods go to each (head-end
    /// replication).
    vteps: Vec<PortId>,
    /// The gateway and policy; `None` for a network without a gateway.
    cfg: Option<Arc<NetConfig>>,
}

/// A frame waiting for its next hop's MAC.
struct Pending {
    buf: PacketBuf,
    next_hop: std::net::Ipv4Addr,
    since: u64,
}

pub(crate) struct Worker {
    id: usize,
    poll: Poll,
    ctrl: Receiver<Ctrl>,
    stats: Arc<Stats>,
    clock: Clock,
    ports: Vec<Option<WPort>>,
    nets: Vec<Option<WNet>>,
    ready: Vec<PortId>,
    bufs: Vec<PacketBuf>,
    actions: [Action; BATCH],
    tally: Tally,
    router: Router,
    pool: Vec<PacketBuf>,
    pending: Vec<Pending>,
    handoff: handoff::Handoff,
    /// Workers woken up for hand-offs during the current batch.
    to_wake: u64,
    /// Frames of the current batch to send with one system call per port
    /// at the end of the batch (ports that can batch): `(port, slot)`.
    deferred: Vec<(PortId, usize)>,
    /// Whether [`Worker::apply`] is working on the current batch (true) or
    /// on a frame outside it (hand-offs, frames that waited for ARP).
    in_batch: bool,
    /// Decapsulated TCP segments on their way to one super-frame.
    coalesce: overlay::Coalesce,
    /// Headers of the segments of a super-frame cut before a tunnel.
    segments: crate::overlay::gso::Segments,
    busy_poll: Duration,
    /// The largest frame handled since the worker last chose whether to spin.
    largest: usize,
    /// Told to stop reading ([`Ctrl::Pause`]): only control messages.
    paused: bool,
}

/// What [`Worker::new`] needs besides its channels.
pub(crate) struct WorkerSetup {
    pub id: usize,
    pub workers: usize,
    pub poll: Poll,
    pub ctrl: Receiver<Ctrl>,
    pub stats: Arc<Stats>,
    pub clock: Clock,
    pub busy_poll_us: u32,
    pub arp: Arc<ArpCache>,
    pub dns_key: crate::dns::CookieKey,
    pub conntrack: crate::nat::Conntrack,
    pub handoff: handoff::Handoff,
}

impl Worker {
    pub(crate) fn new(s: WorkerSetup) -> Worker {
        Worker {
            id: s.id,
            poll: s.poll,
            ctrl: s.ctrl,
            stats: s.stats,
            clock: s.clock,
            ports: (0..MAX_PORTS).map(|_| None).collect(),
            nets: (0..MAX_NETWORKS).map(|_| None).collect(),
            ready: Vec::with_capacity(MAX_PORTS),
            bufs: (0..BATCH).map(|_| PacketBuf::new()).collect(),
            actions: [Action::Consumed; BATCH],
            tally: Tally::default(),
            router: Router::new(s.id as u16, s.workers as u16, s.arp, s.dns_key, s.conntrack),
            pool: (0..handoff::POOL).map(|_| PacketBuf::new()).collect(),
            pending: Vec::with_capacity(PENDING_MAX),
            handoff: s.handoff,
            to_wake: 0,
            deferred: Vec::with_capacity(BATCH),
            in_batch: false,
            coalesce: overlay::Coalesce::new(),
            segments: crate::overlay::gso::Segments::new(),
            busy_poll: Duration::from_micros(u64::from(s.busy_poll_us)),
            largest: 0,
            paused: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn id(&self) -> usize {
        self.id
    }

    fn my_stats(&self) -> &WorkerStats {
        &self.stats.workers[self.id]
    }

    /// Run until told to shut down.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        // Until when to keep polling without sleeping (busy polling): each
        // sleep costs the sender a wake-up and us a context switch.
        let mut spin_until: Option<Instant> = None;
        // When this worker last forwarded a GSO super-frame.
        let mut last_bulk: Option<Instant> = None;
        loop {
            let spinning = spin_until.is_some_and(|t| Instant::now() < t);
            if spinning && self.ready.is_empty() {
                // A polite spin: a runnable thread on this core (a container's
                // TCP stack, say) runs first.
                std::thread::yield_now();
            }
            // Frames waiting for ARP do not keep the worker awake: the reply
            // may reach another worker (the cache is shared), so look again
            // every PENDING_POLL. Tracked connections need a sweep now and
            // then even when no traffic comes.
            let busy = !self.ready.is_empty() || !self.handoff.inbox.is_empty();
            let timeout = if self.paused {
                // The waker (a control message) ends the wait; readiness
                // is edge-triggered and kept in `ready` for the resume.
                None
            } else if busy || spinning {
                Some(Duration::ZERO)
            } else if !self.pending.is_empty() {
                Some(PENDING_POLL)
            } else if !self.router.ct.is_empty() {
                Some(SWEEP_POLL)
            } else {
                None
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // epoll_wait only fails on programming errors; stop rather
                // than spin.
                return;
            }
            // Busy-poll iterations that found nothing are not wake-ups.
            if !events.is_empty() {
                self.my_stats().wakeups.inc();
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let p = ev.token().0;
                if let Some(port) = self.ports.get_mut(p).and_then(Option::as_mut) {
                    if !port.ready {
                        port.ready = true;
                        self.ready.push(p as PortId);
                    }
                }
            }
            if !self.handle_ctrl() {
                return;
            }
            if self.paused {
                spin_until = None;
                continue;
            }
            let worked = !self.ready.is_empty() || !self.handoff.inbox.is_empty();
            self.take_returns();
            self.serve_handoffs();
            if !self.ready.is_empty() {
                self.serve_ready();
            }
            if !self.pending.is_empty() {
                self.serve_pending();
            }
            if !self.router.ct.is_empty() {
                let now = self.clock.now_ms();
                self.router.sweep(now, &self.stats.workers[self.id]);
            }
            self.wake_owners();
            if worked {
                // Spin only after rounds of small frames: request/response
                // and connection set-up, where the wake-up is most of the
                // cost. A GSO super-frame means a bulk transfer, whose
                // endpoints need the CPU more than we need the latency.
                if !self.busy_poll.is_zero() {
                    let now = Instant::now();
                    if self.largest > SPIN_MAX_FRAME {
                        last_bulk = Some(now);
                    }
                    if last_bulk.is_none_or(|t| now.duration_since(t) > BULK_MEMORY) {
                        spin_until = Some(now + self.busy_poll);
                    }
                }
                self.largest = 0;
            }
        }
    }

    /// Apply pending control messages; false on shutdown.
    fn handle_ctrl(&mut self) -> bool {
        while let Ok(msg) = self.ctrl.try_recv() {
            match msg {
                Ctrl::Shutdown => return false,
                Ctrl::AddNetwork { net, fdb, cfg, done } => {
                    self.nets[net as usize] = Some(WNet { fdb, ports: Vec::new(), vteps: Vec::new(), cfg });
                    let _ = done.send(());
                }
                Ctrl::SetNetwork { net, cfg, done } => {
                    if let Some(n) = self.nets[net as usize].as_mut() {
                        n.cfg = cfg;
                    }
                    let _ = done.send(());
                }
                Ctrl::RemoveNetwork { net, done } => {
                    if let Some(n) = self.nets[net as usize].take() {
                        for p in n.ports.into_iter().chain(n.vteps) {
                            self.remove_port(p);
                        }
                    }
                    let _ = done.send(());
                }
                Ctrl::AddPort { port, role, mtu, pin, queue, done } => {
                    let _ = done.send(self.add_port(port, role, mtu, pin, queue));
                }
                Ctrl::RemovePort { port, done } => {
                    self.remove_port(port);
                    let _ = done.send(());
                }
                Ctrl::SetRouter { cfg, done } => {
                    self.router.cfg = cfg;
                    let _ = done.send(());
                }
                Ctrl::Conntrack { done } => {
                    let now = self.clock.now_ms();
                    let w = self.id;
                    let v = self.router.ct.iter(now).map(|l| crate::FlowInfo::from_live(w, &l, now)).collect();
                    let _ = done.send(v);
                }
                Ctrl::Pause { paused, done } => {
                    self.paused = paused;
                    let _ = done.send(());
                }
                Ctrl::ConntrackExport { done } => {
                    let _ = done.send(self.router.ct.export(self.clock.now_ms()));
                }
                Ctrl::ConntrackImport { entries, done } => {
                    let now = self.clock.now_ms();
                    let n = entries.iter().filter(|x| self.router.ct.import(x, now).is_ok()).count();
                    let _ = done.send(n);
                }
                Ctrl::ConntrackForget { tag, done } => {
                    let _ = done.send(self.router.ct.retain(|e| e.tag != tag));
                }
            }
        }
        true
    }

    fn add_port(
        &mut self,
        port: PortId,
        role: PortRole,
        mtu: u32,
        pin: Option<Pin>,
        queue: Option<PortQueue>,
    ) -> io::Result<()> {
        let member = match role {
            PortRole::Access(net) | PortRole::Vtep { net, .. } => Some(net),
            PortRole::Uplink | PortRole::Tunnel => None,
        };
        if let Some(net) = member {
            if self.nets.get(net as usize).and_then(Option::as_ref).is_none() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no such network in the dataplane"));
            }
        }
        // A queue that does not receive (a GRE tunnel's, whose one socket
        // another worker reads) stays out of this worker's epoll.
        let polled = queue.as_ref().is_some_and(PortQueue::receives);
        if let Some(q) = queue.as_ref().filter(|_| polled) {
            let fd = q.as_raw_fd();
            self.poll.registry().register(&mut SourceFd(&fd), Token(port as usize), Interest::READABLE)?;
        }
        if let Some(n) = member.and_then(|net| self.nets[net as usize].as_mut()) {
            match role {
                PortRole::Vtep { .. } => n.vteps.push(port),
                _ => n.ports.push(port),
            }
        }
        // The queue may already hold frames (edge-triggered: no event for
        // those), so start with it on the ready list.
        let ready = polled;
        self.ports[port as usize] = Some(WPort { queue, role, mtu, pin, ready });
        if ready {
            self.ready.push(port);
        }
        Ok(())
    }

    fn remove_port(&mut self, port: PortId) {
        if let Some(p) = self.ports[port as usize].take() {
            if let Some(q) = p.queue.as_ref().filter(|q| q.receives()) {
                let fd = q.as_raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            if let PortRole::Access(net) | PortRole::Vtep { net, .. } = p.role {
                if let Some(n) = self.nets[net as usize].as_mut() {
                    n.ports.retain(|&q| q != port);
                    n.vteps.retain(|&q| q != port);
                }
            }
            self.ready.retain(|&q| q != port);
        }
    }

    fn serve_ready(&mut self) {
        let mut i = 0;
        while i < self.ready.len() {
            let port = self.ready[i];
            if self.serve(port) {
                if let Some(p) = self.ports[port as usize].as_mut() {
                    p.ready = false;
                }
                self.ready.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Serve one readable queue for up to [`BUDGET`] frames. Returns true
    /// when the queue is drained (the last read said `EAGAIN`).
    fn serve(&mut self, ingress: PortId) -> bool {
        let mut served = 0;
        while served < BUDGET {
            let Some(queue) = self.ports[ingress as usize].as_mut().and_then(|p| p.queue.as_mut()) else { return true };
            let stats = &self.stats.workers[self.id];
            let r = queue.recv_batch(ingress, &mut self.bufs, |reason| {
                stats.drop(reason);
                stats.ports[ingress as usize].rx_dropped.inc();
            });
            if r.frames > 0 {
                self.process(ingress, r.frames);
                served += r.frames;
            }
            if r.drained {
                return true;
            }
        }
        false
    }

    /// Take back buffers other workers have finished with.
    fn take_returns(&mut self) {
        while self.pool.len() < handoff::POOL {
            match self.handoff.returns.try_recv() {
                Ok(b) => self.pool.push(b),
                Err(_) => break,
            }
        }
    }

    /// Wake the workers this one handed frames to.
    fn wake_owners(&mut self) {
        while self.to_wake != 0 {
            let w = self.to_wake.trailing_zeros() as usize;
            self.to_wake &= self.to_wake - 1;
            if let Some(waker) = self.handoff.wakers.get(w) {
                let _ = waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::overlay::tunnel::Encap;
    use crate::port::udp::tests::{with_two_ns, IP_B};
    use crate::port::{gre, open_tunnel};
    use crate::{Config, Dataplane, PortRole};

    /// How many epoll instances of this process watch the file whose inode
    /// is `ino` (each watch is a `tfd:` line of the epoll's fdinfo).
    fn epolls_watching(ino: u64) -> usize {
        let want = format!("ino:{ino:x}");
        let mut n = 0;
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[eventpoll]") {
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", e.file_name().to_string_lossy()))
                    .unwrap_or_default();
                n += info.lines().filter(|l| l.starts_with("tfd:") && l.split_whitespace().any(|w| w == want)).count();
            }
        }
        n
    }

    /// A GRE tunnel's one socket is in the epoll set of its receiving
    /// worker only; the others hold it to send, and are never woken by it.
    #[test]
    #[ignore = "needs root: creates network namespaces and a raw IPPROTO_GRE socket"]
    fn only_the_receiving_worker_polls_a_gre_tunnel() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        with_two_ns(|ns| {
            ns.enter_b();
            let workers = 3;
            let mut dp = Dataplane::start(&Config { workers, pin: false, ..Config::default() }).unwrap();
            let queues = open_tunnel(Encap::Gre, IP_B, 0, workers, false).unwrap();
            assert_eq!(queues.iter().filter(|q| q.receives()).count(), 1);
            assert!(queues[gre::receiver_of(IP_B, workers)].receives());
            let fd = queues[0].as_raw_fd();
            let ino = std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino();
            assert_eq!(epolls_watching(ino), 0);
            dp.add_port(7, PortRole::Tunnel, u32::from(u16::MAX), queues).unwrap();
            assert_eq!(epolls_watching(ino), 1, "one worker polls the socket");
            dp.remove_port(7).unwrap();
            dp.shutdown();
        });
    }
}
