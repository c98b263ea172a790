//! Handing a frame to the worker that owns its flow.
//!
//! NAT state is per worker (see `crate::nat`), and each flow has one owner.
//! Frames from the uplink are steered to their owner by the kernel (a
//! classic BPF fanout program, `crate::port::steer`); a frame from a
//! container arrives on whichever TAP queue the container's kernel picked,
//! which is the owner's for every frame but the first ones of a flow (the
//! kernel steers a flow to the queue that last carried its reverse
//! traffic). When the queue is not the owner's, the frame is handed over.
//!
//! A hand-off moves the buffer, not the bytes: the frame's [`PacketBuf`]
//! goes through a bounded, lock-free channel to the owner, and the reader
//! puts a spare buffer from its pool in its place. The owner processes the
//! frame and sends the buffer back on the reader's return channel, so each
//! worker's pool stays the same size. Nothing is allocated, and a full
//! channel drops the frame (counted as `handoff_full`) rather than block.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use crate::packet::PacketBuf;

/// Frames in flight to one worker at most.
pub const HANDOFF_CAP: usize = 64;
/// Spare buffers per worker: hand-offs and frames waiting for ARP take
/// their place in the batch from here.
pub const POOL: usize = 96;

/// Where a handed-off frame resumes on its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Routing from a container's network to the gateway.
    FromNet,
    /// Routing from the uplink.
    FromUplink,
}

/// A frame on its way to its owner.
pub struct Handed {
    pub buf: PacketBuf,
    /// The worker whose pool the buffer returns to.
    pub from: u16,
    pub resume: Resume,
}

/// One worker's ends of every hand-off channel.
pub struct Handoff {
    /// To each worker (the entry for this worker is unused).
    pub to: Vec<Sender<Handed>>,
    pub wakers: Vec<Arc<Waker>>,
    pub inbox: Receiver<Handed>,
    /// Where to return each worker's buffers.
    pub returns_to: Vec<Sender<PacketBuf>>,
    pub returns: Receiver<PacketBuf>,
}

/// Create the channels of `n` workers, given their wakers.
pub fn mesh(wakers: &[Arc<Waker>]) -> Vec<Handoff> {
    let n = wakers.len();
    let inboxes: Vec<_> = (0..n).map(|_| crossbeam_channel::bounded::<Handed>(HANDOFF_CAP)).collect();
    let returns: Vec<_> = (0..n).map(|_| crossbeam_channel::bounded::<PacketBuf>(POOL)).collect();
    (0..n)
        .map(|i| Handoff {
            to: inboxes.iter().map(|(tx, _)| tx.clone()).collect(),
            wakers: wakers.to_vec(),
            inbox: inboxes[i].1.clone(),
            returns_to: returns.iter().map(|(tx, _)| tx.clone()).collect(),
            returns: returns[i].1.clone(),
        })
        .collect()
}
