//! Worker threads: the per-packet path. A worker polls its queues (mio),
//! reads a batch from a readable queue, classifies it (`classify_batch`),
//! transmits the verdicts on its own queues of the egress ports, and applies
//! control messages between batches, never in the middle of one.
//!
//! What a worker owns and shares, how flows land on workers, busy polling
//! and the per-queue [`BUDGET`] are explained once, in `docs/ARCHITECTURE.md`
//! (§ Threading model and § How a packet flows).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::bridge::{self, Fdb, Tally, Verdict};
use crate::port::{PortId, PortQueue};
use crate::stats::{DropReason, NetId, Stats, WorkerStats, MAX_NETWORKS, MAX_PORTS};
use crate::wire::{VnetHdr, VNET_HDR_LEN};
use crate::Clock;

/// Bytes kept free in front of every received frame, so encapsulation can
/// prepend outer headers (VXLAN: 50 bytes) in place.
pub const HEADROOM: usize = 128;
/// Largest frame a port hands over: a 64 KiB GSO super-frame plus an
/// Ethernet header with one VLAN tag.
pub const MAX_FRAME: usize = 65535 + 18;
/// Size of one receive buffer.
pub const BUF_SIZE: usize = HEADROOM + VNET_HDR_LEN + MAX_FRAME + 1;
/// Frames read from one queue before they are decided and sent.
pub const BATCH: usize = 32;
/// Frames served from one queue before the worker turns to the next.
pub const BUDGET: usize = 4 * BATCH;

pub(crate) const WAKER: Token = Token(usize::MAX);

/// Busy polling is armed only after rounds whose frames were all at most
/// this long (virtio-net header included): no GSO super-frames.
const SPIN_MAX_FRAME: usize = VNET_HDR_LEN + 1518;
/// ... and only when no super-frame was seen for this long (a bulk transfer
/// also has rounds of nothing but ACKs).
const BULK_MEMORY: Duration = Duration::from_millis(10);

/// Messages from the control plane to a worker.
pub enum Ctrl {
    AddNetwork { net: NetId, fdb: Arc<Fdb>, done: Sender<()> },
    RemoveNetwork { net: NetId, done: Sender<()> },
    AddPort { port: PortId, net: NetId, queue: PortQueue, done: Sender<io::Result<()>> },
    RemovePort { port: PortId, done: Sender<()> },
    Shutdown,
}

struct WPort {
    queue: PortQueue,
    net: NetId,
    ready: bool,
}

struct WNet {
    fdb: Arc<Fdb>,
    ports: Vec<PortId>,
}

/// A batch of receive buffers and what was decided for each.
struct Batch {
    bufs: Vec<Box<[u8]>>,
    lens: [usize; BATCH],
    verdicts: [Verdict; BATCH],
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bufs: (0..BATCH).map(|_| vec![0u8; BUF_SIZE].into_boxed_slice()).collect(),
            lens: [0; BATCH],
            verdicts: [Verdict::Flood; BATCH],
        }
    }
    /// The virtio-net header and frame of buffer `i`, as read from the port.
    #[inline]
    fn packet(&self, i: usize) -> &[u8] {
        &self.bufs[i][HEADROOM..HEADROOM + self.lens[i]]
    }
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
    batch: Batch,
    busy_poll: Duration,
    /// The largest frame handled since the worker last chose whether to spin.
    largest: usize,
}

impl Worker {
    pub(crate) fn new(
        id: usize,
        poll: Poll,
        ctrl: Receiver<Ctrl>,
        stats: Arc<Stats>,
        clock: Clock,
        busy_poll_us: u32,
    ) -> Worker {
        Worker {
            id,
            poll,
            ctrl,
            stats,
            clock,
            ports: (0..MAX_PORTS).map(|_| None).collect(),
            nets: (0..MAX_NETWORKS).map(|_| None).collect(),
            ready: Vec::with_capacity(MAX_PORTS),
            batch: Batch::new(),
            busy_poll: Duration::from_micros(busy_poll_us as u64),
            largest: 0,
        }
    }

    fn my_stats(&self) -> &WorkerStats {
        &self.stats.workers[self.id]
    }

    /// Run until told to shut down.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        // Until when to keep polling without sleeping (busy polling): each
        // sleep costs the sender a wake-up and us a context switch.
        let mut spin_until: Option<std::time::Instant> = None;
        // When this worker last forwarded a GSO super-frame.
        let mut last_bulk: Option<std::time::Instant> = None;
        loop {
            let spinning = spin_until.is_some_and(|t| std::time::Instant::now() < t);
            if spinning && self.ready.is_empty() {
                // A polite spin: a runnable thread on this core (a container's
                // TCP stack, say) runs first.
                std::thread::yield_now();
            }
            let timeout = if self.ready.is_empty() && !spinning { None } else { Some(Duration::ZERO) };
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
            if !self.ready.is_empty() {
                self.serve_ready();
                // Spin only after rounds of small frames: request/response
                // and connection set-up, where the wake-up is most of the
                // cost. A GSO super-frame means a bulk transfer, whose
                // endpoints need the CPU more than we need the latency.
                if !self.busy_poll.is_zero() {
                    let now = std::time::Instant::now();
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
                Ctrl::AddNetwork { net, fdb, done } => {
                    self.nets[net as usize] = Some(WNet { fdb, ports: Vec::new() });
                    let _ = done.send(());
                }
                Ctrl::RemoveNetwork { net, done } => {
                    if let Some(n) = self.nets[net as usize].take() {
                        for p in n.ports {
                            self.remove_port(p);
                        }
                    }
                    let _ = done.send(());
                }
                Ctrl::AddPort { port, net, queue, done } => {
                    let _ = done.send(self.add_port(port, net, queue));
                }
                Ctrl::RemovePort { port, done } => {
                    self.remove_port(port);
                    let _ = done.send(());
                }
            }
        }
        true
    }

    fn add_port(&mut self, port: PortId, net: NetId, queue: PortQueue) -> io::Result<()> {
        let Some(n) = self.nets.get_mut(net as usize).and_then(Option::as_mut) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such network in the dataplane"));
        };
        let fd = queue.as_raw_fd();
        self.poll.registry().register(&mut SourceFd(&fd), Token(port as usize), Interest::READABLE)?;
        n.ports.push(port);
        // The queue may already hold frames (edge-triggered: no event for
        // those), so start with it on the ready list.
        self.ports[port as usize] = Some(WPort { queue, net, ready: true });
        self.ready.push(port);
        Ok(())
    }

    fn remove_port(&mut self, port: PortId) {
        if let Some(p) = self.ports[port as usize].take() {
            let fd = p.queue.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            if let Some(n) = self.nets[p.net as usize].as_mut() {
                n.ports.retain(|&q| q != port);
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
            let (n, drained) = self.receive(ingress);
            if n > 0 {
                self.process(ingress, n);
                served += n;
            }
            if drained {
                return true;
            }
        }
        false
    }

    /// Read up to [`BATCH`] frames from `ingress`.
    #[inline]
    fn receive(&mut self, ingress: PortId) -> (usize, bool) {
        let Some(port) = self.ports[ingress as usize].as_ref() else { return (0, true) };
        let stats = &self.stats.workers[self.id];
        let mut n = 0;
        while n < BATCH {
            match port.queue.recv(&mut self.batch.bufs[n][HEADROOM..]) {
                Ok(len) => {
                    self.batch.lens[n] = len;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (n, true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    stats.drop(DropReason::RxError);
                    return (n, true);
                }
            }
        }
        (n, false)
    }

    /// Decide and transmit the `n` frames of the batch.
    #[inline]
    fn process(&mut self, ingress: PortId, n: usize) {
        let now = self.clock.now_ms();
        let stats = &self.stats.workers[self.id];
        stats.frames.add(n as u64);
        let Some(port) = self.ports[ingress as usize].as_ref() else { return };
        let pc = &stats.ports[ingress as usize];
        let Some(net) = self.nets[port.net as usize].as_ref() else {
            stats.drops[DropReason::NoNetwork as usize].add(n as u64);
            pc.rx_dropped.add(n as u64);
            return;
        };
        let mut tally = Tally::default();
        let Batch { bufs, lens, verdicts } = &mut self.batch;
        let pkts: [&[u8]; BATCH] = std::array::from_fn(|i| &bufs[i][HEADROOM..HEADROOM + lens[i]]);
        let rx_bytes = classify_batch(&net.fdb, ingress, &pkts[..n], now, &mut verdicts[..n], &mut tally);
        self.largest = self.largest.max(lens[..n].iter().copied().max().unwrap_or(0));
        pc.rx_packets.add(n as u64);
        pc.rx_bytes.add(rx_bytes);
        tally.flush(stats, port.net);

        for i in 0..n {
            let pkt = self.batch.packet(i);
            match self.batch.verdicts[i] {
                Verdict::Forward(out) => transmit(&self.ports, stats, out, pkt),
                Verdict::Flood => {
                    for &out in &net.ports {
                        if out != ingress {
                            transmit(&self.ports, stats, out, pkt);
                        }
                    }
                }
                Verdict::Drop(reason) => {
                    stats.drop(reason);
                    pc.rx_dropped.inc();
                }
            }
        }
    }
}

/// Decide every packet (virtio-net header and frame, as read from a port) of
/// a batch that arrived on `ingress`: `verdicts[i]` is for `pkts[i]`.
/// Returns the bytes of Ethernet frame the batch held, for `rx_bytes`.
///
/// This is the worker's per-packet path up to the transmit: public only so
/// the criterion benches measure the very code the worker runs.
#[doc(hidden)]
#[inline]
pub fn classify_batch(
    fdb: &Fdb,
    ingress: PortId,
    pkts: &[&[u8]],
    now: u64,
    verdicts: &mut [Verdict],
    tally: &mut Tally,
) -> u64 {
    let mut rx_bytes = 0;
    for (pkt, v) in pkts.iter().zip(verdicts.iter_mut()) {
        rx_bytes += pkt.len().saturating_sub(VNET_HDR_LEN) as u64;
        *v = classify(fdb, ingress, pkt, now, tally);
    }
    rx_bytes
}

/// Validate the port-level framing, then let the bridge decide.
#[inline]
fn classify(fdb: &Fdb, ingress: PortId, pkt: &[u8], now: u64, tally: &mut Tally) -> Verdict {
    if pkt.len() < VNET_HDR_LEN + crate::wire::ethernet::HEADER_LEN {
        return Verdict::Drop(DropReason::Runt);
    }
    if pkt.len() > VNET_HDR_LEN + MAX_FRAME {
        return Verdict::Drop(DropReason::Oversize);
    }
    let (hdr, frame) = pkt.split_at(VNET_HDR_LEN);
    if VnetHdr::new_unchecked(hdr).validate(frame.len()).is_err() {
        return Verdict::Drop(DropReason::BadVnetHdr);
    }
    bridge::decide(fdb, ingress, frame, now, tally)
}

#[inline]
fn transmit(ports: &[Option<WPort>], stats: &WorkerStats, out: PortId, pkt: &[u8]) {
    let pc = &stats.ports[out as usize];
    let Some(port) = ports.get(out as usize).and_then(Option::as_ref) else {
        stats.drop(DropReason::TxError);
        return;
    };
    match port.queue.send(pkt) {
        Ok(_) => {
            pc.tx_packets.inc();
            pc.tx_bytes.add((pkt.len() - VNET_HDR_LEN) as u64);
        }
        Err(_) => {
            stats.drop(DropReason::TxError);
            pc.tx_dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(hdr: [u8; 10], frame: &[u8]) -> Vec<u8> {
        let mut v = hdr.to_vec();
        v.extend_from_slice(frame);
        v
    }

    const ARP: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00,
        0x06, 0x04, 0x00, 0x01, 0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, 0x0a, 0x58, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x0a, 0x58, 0x00, 0x03,
    ];

    #[test]
    fn classify_checks_port_framing_first() {
        let fdb = Fdb::new(8, 1000);
        let mut t = Tally::default();
        assert_eq!(classify(&fdb, 0, &pkt([0; 10], &ARP), 0, &mut t), Verdict::Flood);
        assert_eq!(classify(&fdb, 0, &pkt([0; 10], &ARP[..13]), 0, &mut t), Verdict::Drop(DropReason::Runt));
        assert_eq!(classify(&fdb, 0, &ARP[..9], 0, &mut t), Verdict::Drop(DropReason::Runt));
        // GSO type 2 does not exist.
        let bad = pkt([0, 2, 0, 0, 0, 0, 0, 0, 0, 0], &ARP);
        assert_eq!(classify(&fdb, 0, &bad, 0, &mut t), Verdict::Drop(DropReason::BadVnetHdr));
        let huge = vec![0u8; VNET_HDR_LEN + MAX_FRAME + 1];
        assert_eq!(classify(&fdb, 0, &huge, 0, &mut t), Verdict::Drop(DropReason::Oversize));
    }

    /// The whole per-frame pipeline on 200k random and mutated inputs: no
    /// panic, every verdict is one the worker can apply, the table stays
    /// within its bound, and valid frames keep being forwarded.
    #[test]
    fn random_input_never_breaks_the_pipeline() {
        let fdb = Fdb::new(64, 10_000);
        let mut t = Tally::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seed = pkt([0; 10], &ARP);
        let mut buf = vec![0u8; 2048];
        for i in 0..200_000u64 {
            let len = (next() % 200) as usize;
            match i % 3 {
                0 => buf[..len].iter_mut().for_each(|b| *b = next() as u8),
                _ => {
                    let n = len.min(seed.len());
                    buf[..n].copy_from_slice(&seed[..n]);
                    for _ in 0..(next() % 4) {
                        let at = (next() as usize) % n.max(1);
                        buf[at] = next() as u8;
                    }
                }
            }
            let ingress = (next() % 8) as PortId;
            match classify(&fdb, ingress, &buf[..len], i / 50, &mut t) {
                Verdict::Forward(p) => assert!(p < 8 && p != ingress),
                Verdict::Flood | Verdict::Drop(_) => {}
            }
        }
        assert!(fdb.len() <= 64);
        assert_eq!(classify(&fdb, 1, &seed, 4_000, &mut t), Verdict::Flood);
    }
}
