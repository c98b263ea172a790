//! Ports: where frames enter and leave the dataplane. This is the only
//! module with system calls and `unsafe`.
//!
//! A port has one queue per worker and each worker owns its queues
//! outright, so any worker can transmit to any port without a lock. Ports
//! come in kinds behind one interface, [`PortQueue`], and each kind says
//! what it can do ([`PortQueue::caps`]):
//!
//! | kind | what | virtio-net header | batch I/O |
//! |---|---|---|---|
//! | [`tap`] | a container's `eth0`, a multi-queue TAP | yes (`IFF_VNET_HDR`) | no: one `read`/`write` per frame |
//!
//! A port that speaks virtio-net headers carries offload metadata (GSO,
//! partial checksums) with every frame, so 64 KiB TCP super-frames cross the
//! dataplane whole; the metadata lives in [`crate::packet::Meta`], apart from
//! the bytes. A port that cannot carry it needs GSO resolved (segmented in
//! software) before it.

pub mod packet;
pub mod steer;
pub mod tap;

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::packet::PacketBuf;
use crate::stats::DropReason;

/// Index of a port in the dataplane, allocated by the control plane.
pub type PortId = u16;

/// The virtual port a network's gateway MAC points at in the MAC table:
/// frames to it go to the router, not out of a device.
pub const GATEWAY_PORT: PortId = 0xfffe;

/// What a port kind can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Frames carry a virtio-net header (offload metadata) both ways.
    pub vnet_hdr: bool,
    /// Several frames per system call.
    pub batch: bool,
}

/// One worker's queue of one port. Static dispatch: the per-packet path
/// never goes through a vtable.
#[derive(Debug)]
pub enum PortQueue {
    Tap(tap::TapQueue),
}

/// What one [`PortQueue::recv_batch`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Received {
    /// Good frames now at the front of the buffers.
    pub frames: usize,
    /// The queue has nothing more to read (the last read said `EAGAIN`, or
    /// failed).
    pub drained: bool,
}

impl PortQueue {
    #[inline]
    pub fn caps(&self) -> Caps {
        match self {
            PortQueue::Tap(_) => Caps { vnet_hdr: true, batch: false },
        }
    }

    /// Read up to `bufs.len()` frames into `bufs`, each with its metadata
    /// parsed and checked ([`PacketBuf::set_received`]) and `port` recorded
    /// as its ingress. A frame that fails the checks is counted through
    /// `drop` and its buffer reused.
    #[inline]
    pub fn recv_batch(
        &mut self,
        port: PortId,
        bufs: &mut [PacketBuf],
        mut drop: impl FnMut(DropReason),
    ) -> Received {
        match self {
            PortQueue::Tap(q) => {
                let mut n = 0;
                while n < bufs.len() {
                    let b = &mut bufs[n];
                    match q.recv(b.rx_area(true)) {
                        Ok(len) => match b.set_received(len, true, port) {
                            Ok(()) => n += 1,
                            Err(r) => drop(r),
                        },
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Received { frames: n, drained: true }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            drop(DropReason::RxError);
                            return Received { frames: n, drained: true };
                        }
                    }
                }
                Received { frames: n, drained: false }
            }
        }
    }

    /// Send one frame.
    #[inline]
    pub fn send(&mut self, buf: &mut PacketBuf) -> io::Result<()> {
        match self {
            PortQueue::Tap(q) => q.send(buf.vnet_bytes()).map(|_| ()),
        }
    }
}

impl AsRawFd for PortQueue {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            PortQueue::Tap(q) => q.as_raw_fd(),
        }
    }
}
