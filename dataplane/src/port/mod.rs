//! Ports: where frames enter and leave the dataplane. This is the module
//! with the per-packet system calls and nearly all of the crate's `unsafe`
//! (the rest: `getrandom` for the DNS cookie key in `lib.rs`).
//!
//! A port has one queue per worker and each worker owns its queues
//! outright, so any worker can transmit to any port without a lock
//! (`docs/ARCHITECTURE.md`, § Threading model); a GRE tunnel's queues share
//! its one socket, and only one of them receives ([`PortQueue::receives`]).
//! Ports come in kinds behind one interface, [`PortQueue`], and each kind
//! says what it can do ([`PortQueue::caps`]):
//!
//! | kind | what | virtio-net header | batch I/O |
//! |---|---|---|---|
//! | [`tap`] | a container's `eth0`, a multi-queue TAP | yes (`IFF_VNET_HDR`) | no: one `read`/`write` per frame |
//! | [`packet`] | the uplink, an AF_PACKET socket per worker in a fanout group steered by [`steer`] | yes (`PACKET_VNET_HDR`) | yes: `recvmmsg`/`sendmmsg` |
//! | [`udp`] | a VXLAN tunnel: UDP sockets bound to the underlay address (a reuseport group to receive, a pool per worker to send) | no: GSO is resolved before it; UDP GSO/GRO underneath | yes: `recvmmsg`/`sendmmsg`, `UDP_SEGMENT` |
//! | [`gre`] | a GRE tunnel: one raw IP socket per tunnel, read by one worker, sent through by all ([`PortQueue::receives`]) | no: GSO is resolved before it | yes: `recvmmsg`/`sendmmsg` |
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
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

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
    Vxlan(udp::UdpTunnelQueue),
    Gre(gre::GreQueue),
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
            PortQueue::Vxlan(_) | PortQueue::Gre(_) => Caps { vnet_hdr: false, batch: true },
        }
    }

    /// Whether a worker reads this queue: registers it in its epoll for
    /// READABLE and serves it. Every queue does but a GRE tunnel's
    /// send-only ones ([`gre`], § One socket per tunnel): their socket is
    /// another worker's to read, and polling it would wake this worker for
    /// packets it must not take.
    #[inline]
    pub fn receives(&self) -> bool {
        match self {
            PortQueue::Gre(q) => q.receives(),
            _ => true,
        }
    }

    /// The encapsulation of a tunnel's queue; `None` for other ports.
    #[inline]
    pub fn tunnel_encap(&self) -> Option<crate::overlay::tunnel::Encap> {
        match self {
            PortQueue::Vxlan(_) => Some(crate::overlay::tunnel::Encap::Vxlan),
            PortQueue::Gre(_) => Some(crate::overlay::tunnel::Encap::Gre),
            _ => None,
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
            PortQueue::Vxlan(q) => {
                let want = bufs.len().min(udp::MAX_RECV_BATCH);
                let mut meta = [udp::RecvMeta::default(); udp::MAX_RECV_BATCH];
                let got = match q.recv_batch(bufs[..want].iter_mut().map(|b| b.rx_area(false)), &mut meta[..want]) {
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received { frames: 0, drained: true },
                    Err(_) => {
                        drop(DropReason::RxError);
                        0
                    }
                };
                let mut n = 0;
                for (i, m) in meta[..got].iter().enumerate() {
                    if m.truncated {
                        drop(DropReason::Oversize);
                        continue;
                    }
                    if i != n {
                        bufs.swap(i, n);
                    }
                    let b = &mut bufs[n];
                    b.set_datagram(m.len, port, *m.src.ip());
                    b.meta.peer_port = m.src.port();
                    if let Some(seg) = m.segment {
                        b.meta.offload.gso_type = crate::wire::vnet::GSO_UDP_L4;
                        b.meta.offload.gso_size = seg;
                    }
                    n += 1;
                }
                Received { frames: n, drained: got < want }
            }
            PortQueue::Gre(q) => {
                let want = bufs.len().min(udp::MAX_RECV_BATCH);
                let mut meta = [gre::RecvMeta::default(); udp::MAX_RECV_BATCH];
                let got = match q.recv_batch(bufs[..want].iter_mut().map(|b| b.rx_area(false)), &mut meta[..want]) {
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received { frames: 0, drained: true },
                    Err(_) => {
                        drop(DropReason::RxError);
                        0
                    }
                };
                let mut n = 0;
                for (i, m) in meta[..got].iter().enumerate() {
                    if m.truncated {
                        drop(DropReason::Oversize);
                        continue;
                    }
                    if i != n {
                        bufs.swap(i, n);
                    }
                    let b = &mut bufs[n];
                    b.set_datagram(m.len, port, m.src);
                    // The outer IPv4 header goes: the frame is the GRE packet.
                    let r = m.gre_range();
                    let off = b.offset();
                    b.set_frame(off + r.start, r.len());
                    n += 1;
                }
                Received { frames: n, drained: got < want }
            }
        }
    }

    /// Encapsulate `buf` with `hdr` and send it to the tunnel endpoint
    /// `remote` (VXLAN: UDP port `dst_port`) through this tunnel queue.
    /// Offload requests are resolved first, since a tunnel socket cannot
    /// carry them: a GSO super-frame is cut into segments (headers in
    /// `segs`), a partial checksum completed. Returns the datagrams sent;
    /// `Err` with the reason when none could be.
    pub fn send_encapsulated(
        &mut self,
        remote: std::net::Ipv4Addr,
        dst_port: u16,
        hdr: &[u8; crate::overlay::tunnel::HEADER_LEN],
        buf: &mut PacketBuf,
        segs: &mut crate::overlay::gso::Segments,
    ) -> Result<usize, DropReason> {
        use crate::overlay::gso;
        use std::io::IoSlice;
        let hash = crate::overlay::tunnel::inner_flow_hash(buf.frame());
        let o = buf.meta.offload;
        let segmented = if o.is_gso() {
            match gso::segment_tcp4(buf.frame(), &o, segs) {
                Ok(n) => n,
                Err(gso::GsoError::UnsupportedGsoType(_)) => return Err(DropReason::GsoUnsupported),
                Err(_) => return Err(DropReason::BadL4),
            }
        } else {
            if o.needs_csum() {
                let (start, off) = (usize::from(o.csum_start), usize::from(o.csum_offset));
                if gso::complete_csum(buf.frame_mut(), start, off).is_err() {
                    return Err(DropReason::BadL4);
                }
            }
            buf.meta.offload = crate::packet::Offload::NONE;
            0
        };
        let frame = buf.frame();
        let sent = if segmented == 0 {
            let msg = [IoSlice::new(hdr), IoSlice::new(frame)];
            let msgs: [&[IoSlice<'_>]; 1] = [&msg];
            match self {
                PortQueue::Vxlan(q) => {
                    q.send_batch(hash as usize, std::net::SocketAddrV4::new(remote, dst_port), &msgs).sent
                }
                PortQueue::Gre(q) => q.send_batch(remote, &msgs).sent,
                _ => 0,
            }
        } else {
            for k in 0..segmented {
                if let Some(front) = segs.push_front(k, hdr.len()) {
                    front.copy_from_slice(hdr);
                }
            }
            const MAX: usize = gso::MAX_SEGMENTS;
            let mut iov: [IoSlice<'_>; 2 * MAX] = [IoSlice::new(&[]); 2 * MAX];
            for (k, s) in segs.iter().enumerate() {
                iov[2 * k] = IoSlice::new(s.header);
                iov[2 * k + 1] = IoSlice::new(&frame[s.payload]);
            }
            let iov = &iov[..2 * segmented];
            match self {
                PortQueue::Vxlan(q) if q.udp_csum() && segmented > 1 => {
                    // One UDP datagram of at most 64 KiB per `sendmsg`: the
                    // kernel cuts it at `seg` bytes. A 64 KiB super-frame
                    // with its per-segment headers needs two.
                    let seg = hdr.len() + segs.header_len() + usize::from(o.gso_size);
                    let per_call = (GSO_MAX_PAYLOAD / seg).clamp(1, GSO_MAX_SEGMENTS);
                    let dst = std::net::SocketAddrV4::new(remote, dst_port);
                    let mut sent = 0;
                    for chunk in iov.chunks(2 * per_call) {
                        sent += q
                            .send_gso(hash as usize, dst, chunk, seg.min(usize::from(u16::MAX)) as u16)
                            .unwrap_or_default();
                    }
                    sent
                }
                PortQueue::Vxlan(q) => {
                    let mut msgs: [&[IoSlice<'_>]; MAX] = [&[]; MAX];
                    for (k, m) in msgs.iter_mut().enumerate().take(segmented) {
                        *m = &iov[2 * k..2 * k + 2];
                    }
                    q.send_batch(hash as usize, std::net::SocketAddrV4::new(remote, dst_port), &msgs[..segmented]).sent
                }
                PortQueue::Gre(q) => {
                    let mut msgs: [&[IoSlice<'_>]; MAX] = [&[]; MAX];
                    for (k, m) in msgs.iter_mut().enumerate().take(segmented) {
                        *m = &iov[2 * k..2 * k + 2];
                    }
                    q.send_batch(remote, &msgs[..segmented]).sent
                }
                _ => 0,
            }
        };
        if sent == 0 {
            return Err(DropReason::TxError);
        }
        Ok(sent)
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
            // Tunnels are sent to with `send_encapsulated`, never as is.
            PortQueue::Vxlan(_) | PortQueue::Gre(_) => {
                for i in 0..frames.len() {
                    sent(i, false);
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
            // Tunnels are sent to with `send_encapsulated`.
            PortQueue::Vxlan(_) | PortQueue::Gre(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

/// The most UDP payload one `UDP_SEGMENT` send may carry: an IPv4
/// datagram's 65535 bytes less the IPv4 and UDP headers.
const GSO_MAX_PAYLOAD: usize = 65535 - 20 - 8;
/// The most segments one `UDP_SEGMENT` send may carry (`UDP_MAX_SEGMENTS`
/// was 64 before Linux 6.9; 64 is safe everywhere).
const GSO_MAX_SEGMENTS: usize = 64;

/// Open one queue per worker of an overlay tunnel of kind `encap` on
/// `underlay` (VXLAN: UDP port `port`). A GRE tunnel's queues all share one
/// raw socket, and only `queues[gre::receiver_of(underlay, workers)]`
/// receives.
pub fn open_tunnel(
    encap: crate::overlay::tunnel::Encap,
    underlay: std::net::Ipv4Addr,
    port: u16,
    workers: usize,
    udp_csum: bool,
) -> io::Result<Vec<PortQueue>> {
    use crate::overlay::tunnel::Encap;
    Ok(match encap {
        Encap::Vxlan => udp::open_vxlan(underlay, port, workers, udp::DEFAULT_POOL, udp_csum)
            .map_err(|e| io::Error::other(e.to_string()))?
            .into_iter()
            .map(PortQueue::Vxlan)
            .collect(),
        Encap::Gre => gre::open_gre(underlay, workers)
            .map_err(|e| io::Error::other(e.to_string()))?
            .into_iter()
            .map(PortQueue::Gre)
            .collect(),
    })
}

/// A tunnel's sockets, in the order [`tunnel_from_fds`] takes them: for
/// VXLAN each worker's receive socket then its send pool; for GRE the one
/// socket. Raw numbers of descriptors the queues own.
pub fn tunnel_fds(queues: &[PortQueue]) -> Vec<RawFd> {
    let mut v = Vec::new();
    for q in queues {
        match q {
            PortQueue::Vxlan(q) => {
                v.push(q.as_raw_fd());
                v.extend(q.pool_fds());
            }
            PortQueue::Gre(q) => {
                if v.is_empty() {
                    v.push(q.as_raw_fd());
                }
            }
            PortQueue::Tap(_) | PortQueue::Packet(_) => {}
        }
    }
    v
}

/// The queues of a tunnel [`open_tunnel`] opened, on duplicates of its
/// sockets in the order of [`tunnel_fds`] (handed over by another
/// process); `pool` is the send pool's size.
pub fn tunnel_from_fds(
    encap: crate::overlay::tunnel::Encap,
    fds: Vec<OwnedFd>,
    workers: usize,
    pool: usize,
    udp_csum: bool,
) -> io::Result<Vec<PortQueue>> {
    use crate::overlay::tunnel::Encap;
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("{} sockets handed over", fds.len()));
    Ok(match encap {
        Encap::Vxlan => {
            if workers == 0 || fds.len() != workers * (1 + pool) {
                return Err(bad());
            }
            let (mut rx, mut pools) = (Vec::with_capacity(workers), Vec::with_capacity(workers));
            let mut it = fds.into_iter();
            for _ in 0..workers {
                rx.push(it.next().expect("counted"));
                pools.push(it.by_ref().take(pool).collect());
            }
            udp::vxlan_from_fds(rx, pools, udp_csum)
                .map_err(|e| io::Error::other(e.to_string()))?
                .into_iter()
                .map(PortQueue::Vxlan)
                .collect()
        }
        Encap::Gre => {
            if fds.len() != 1 {
                return Err(bad());
            }
            let fd = fds.into_iter().next().expect("counted");
            gre::gre_from_fd(fd, workers)
                .map_err(|e| io::Error::other(e.to_string()))?
                .into_iter()
                .map(PortQueue::Gre)
                .collect()
        }
    })
}

impl AsRawFd for PortQueue {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            PortQueue::Tap(q) => q.as_raw_fd(),
            PortQueue::Packet(q) => q.as_raw_fd(),
            PortQueue::Vxlan(q) => q.as_raw_fd(),
            PortQueue::Gre(q) => q.as_raw_fd(),
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
