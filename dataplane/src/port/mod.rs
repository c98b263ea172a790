//! Ports: where frames enter and leave the dataplane. This is the only
//! module with system calls and `unsafe`.
//!
//! A port has one queue per worker and each worker owns its queues
//! outright, so any worker can transmit to any port without a lock
//! (`docs/ARCHITECTURE.md`, § Threading model). Ports come in kinds behind
//! one interface, [`PortQueue`], and each kind says what it can do
//! ([`PortQueue::caps`]):
//!
//! | kind | what | virtio-net header | batch I/O |
//! |---|---|---|---|
//! | [`tap`] | a container's `eth0`, a multi-queue TAP | yes (`IFF_VNET_HDR`) | no: one `read`/`write` per frame |
//! | [`packet`] | the uplink, an AF_PACKET socket per worker in a fanout group steered by [`steer`] | yes (`PACKET_VNET_HDR`) | yes: `recvmmsg`/`sendmmsg` |
//!
//! A port that speaks virtio-net headers carries offload metadata (GSO,
//! partial checksums) with every frame, so 64 KiB TCP super-frames cross the
//! dataplane whole; the metadata lives in [`crate::packet::Meta`], apart from
//! the bytes. A port that cannot carry it needs GSO resolved (segmented in
//! software) before it.
//!
//! This module also holds the interface-name rule that the TAP layer and the
//! control plane's netlink client share ([`check_ifname`]).

pub mod gre;
pub mod packet;
pub mod steer;
pub mod tap;
pub mod udp;

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

/// Linux `IFNAMSIZ`; a name holds at most `IFNAMSIZ - 1` bytes.
pub const IFNAMSIZ: usize = 16;

/// An interface name the kernel would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid interface name {0:?}")]
pub struct InvalidIfname(pub String);

/// Checks `name` against the kernel's `dev_valid_name` before any syscall:
/// 1 to 15 bytes, not "." or "..", and no '/', ':', NUL or byte that the
/// kernel's `isspace` matches (tab to carriage return, space, and 0xa0).
/// Both the TAP layer and the control plane's netlink client use it.
pub fn check_ifname(name: &str) -> Result<(), InvalidIfname> {
    let bad_byte = |b: u8| matches!(b, b'/' | b':' | 0 | b'\t'..=b'\r' | b' ' | 0xa0);
    if name.is_empty() || name.len() >= IFNAMSIZ || name == "." || name == ".." || name.bytes().any(bad_byte) {
        return Err(InvalidIfname(name.to_string()));
    }
    Ok(())
}

/// One worker's queue of one port. Static dispatch: the per-packet path
/// never goes through a vtable.
#[derive(Debug)]
pub enum PortQueue {
    Tap(tap::TapQueue),
    Packet(packet::PacketQueue),
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
            PortQueue::Packet(_) => Caps { vnet_hdr: true, batch: true },
        }
    }

    /// Read up to `bufs.len()` frames into `bufs`, each with its metadata
    /// parsed and checked ([`PacketBuf::set_received`]) and `port` recorded
    /// as its ingress. A frame that fails the checks is counted through
    /// `drop` and its buffer reused.
    #[inline]
    pub fn recv_batch(&mut self, port: PortId, bufs: &mut [PacketBuf], mut drop: impl FnMut(DropReason)) -> Received {
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
            PortQueue::Packet(q) => {
                let want = bufs.len().min(packet::MAX_BATCH);
                let mut meta = [packet::RecvMeta::default(); packet::MAX_BATCH];
                let got = match q.recv_batch(bufs[..want].iter_mut().map(|b| b.rx_area(true)), &mut meta[..want]) {
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received { frames: 0, drained: true },
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                    Err(_) => {
                        // One frame was lost (a GSO type the header cannot
                        // express, say); the socket goes on.
                        drop(DropReason::RxError);
                        0
                    }
                };
                // Keep the good frames at the front.
                let mut n = 0;
                for (i, m) in meta[..got].iter().enumerate() {
                    let len = match m.accept() {
                        Ok(len) => len,
                        // Not for us (another host's MAC, our own frames):
                        // not a drop, just not ours.
                        Err(packet::RxReject::OtherHost | packet::RxReject::Outgoing) => continue,
                        Err(packet::RxReject::Truncated) => {
                            drop(DropReason::Oversize);
                            continue;
                        }
                        Err(packet::RxReject::UnknownType) => {
                            drop(DropReason::RxError);
                            continue;
                        }
                    };
                    if i != n {
                        bufs.swap(i, n);
                    }
                    match bufs[n].set_received(len, true, port) {
                        Ok(()) => n += 1,
                        Err(r) => drop(r),
                    }
                }
                Received { frames: n, drained: got < want }
            }
        }
    }

    /// Send frames whose virtio-net headers are already written
    /// ([`PacketBuf::write_vnet_hdr`]) with as few system calls as the kind
    /// allows. Returns how many went out; `sent(i, ok)` is told the fate of
    /// each frame in order. A full socket buffer drops the rest.
    #[inline]
    pub fn send_many(&mut self, frames: &[&[u8]], mut sent: impl FnMut(usize, bool)) -> usize {
        let mut ok = 0;
        match self {
            PortQueue::Tap(q) => {
                for (i, f) in frames.iter().enumerate() {
                    let good = q.send(f).is_ok();
                    ok += usize::from(good);
                    sent(i, good);
                }
            }
            PortQueue::Packet(q) => {
                let mut i = 0;
                while i < frames.len() {
                    match q.send_batch(frames[i..].iter().copied()) {
                        Ok(k) => {
                            for j in i..i + k {
                                sent(j, true);
                            }
                            ok += k;
                            i += k.max(1);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            for j in i..frames.len() {
                                sent(j, false);
                            }
                            break;
                        }
                        Err(_) => {
                            sent(i, false);
                            i += 1;
                        }
                    }
                }
            }
        }
        ok
    }

    /// Send one frame.
    #[inline]
    pub fn send(&mut self, buf: &mut PacketBuf) -> io::Result<()> {
        match self {
            PortQueue::Tap(q) => q.send(buf.vnet_bytes()).map(|_| ()),
            PortQueue::Packet(q) => q.send(buf.vnet_bytes()).map(|_| ()),
        }
    }
}

/// Open one queue per worker of an overlay tunnel of kind `encap` on
/// `underlay` (VXLAN: UDP port `port`).
pub fn open_tunnel(
    encap: crate::overlay::tunnel::Encap,
    underlay: std::net::Ipv4Addr,
    port: u16,
    workers: usize,
    udp_csum: bool,
) -> io::Result<Vec<PortQueue>> {
    let _ = (encap, underlay, port, workers, udp_csum);
    Err(io::Error::new(io::ErrorKind::Unsupported, "tunnel sockets are not built yet"))
}

impl AsRawFd for PortQueue {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            PortQueue::Tap(q) => q.as_raw_fd(),
            PortQueue::Packet(q) => q.as_raw_fd(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules() {
        for ok in ["eth0", "a", "abcdefghijklmno", "veth-x.y_z", "tp123456789abcd", "caf\u{e9}"] {
            assert_eq!(check_ifname(ok), Ok(()), "{ok:?}");
        }
        // The kernel's isspace() also matches \v and the byte 0xa0, which
        // is the second byte of U+00A0 (no-break space) in UTF-8.
        let bad = ["", "abcdefghijklmnop", "a/b", "a b", "a\tb", "a\x0bb", "a\u{a0}b", "a:0", "a\0b", ".", ".."];
        for bad in bad {
            assert_eq!(check_ifname(bad), Err(InvalidIfname(bad.to_string())), "{bad:?}");
        }
    }
}
