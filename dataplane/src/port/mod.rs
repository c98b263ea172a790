//! Ports: where frames enter and leave the dataplane. This is the only
//! module with system calls and `unsafe`.
//!
//! Every port speaks the same buffer format, a 10-byte virtio-net header
//! followed by the Ethernet frame, so offload metadata (GSO, partial
//! checksums) travels with the frame from ingress to egress. A port has one
//! queue per worker and each worker owns its queues outright, so any worker
//! can transmit to any port without a lock.
//!
//! Today a port is a TAP queue. The planned uplink (an AF_PACKET socket with
//! `PACKET_VNET_HDR`, which uses the same header) and overlay tunnels
//! (a UDP or raw IP socket per worker) become further variants of
//! [`PortQueue`]; the worker loop does not change.

pub mod packet;
pub mod steer;
pub mod tap;

use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// Index of a port in the dataplane, allocated by the control plane.
pub type PortId = u16;

/// One worker's queue of one port. Static dispatch: the per-packet path
/// never goes through a vtable.
#[derive(Debug)]
pub enum PortQueue {
    Tap(tap::TapQueue),
}

impl PortQueue {
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            PortQueue::Tap(q) => q.recv(buf),
        }
    }
    #[inline]
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            PortQueue::Tap(q) => q.send(buf),
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
