//! The GRE overlay's socket layer (RFC 2784, with the key of RFC 2890 and
//! protocol 0x6558, Transparent Ethernet Bridging), and nothing else: one
//! raw `IPPROTO_GRE` socket per tunnel (per underlay address), read by one
//! worker and sent through by every worker, moving packets with `recvmmsg`
//! and `sendmmsg`.
//!
//! The dataplane builds the GRE header and the inner Ethernet frame
//! ([`crate::wire::gre`]); the kernel owns the underlay address and adds the
//! outer IPv4 header (protocol 47, the bound address as source). Setup
//! policy belongs to the control plane; the per-packet calls are
//! [`GreQueue::recv_batch`] and [`GreQueue::send_batch`], which allocate
//! nothing.
//!
//! # One socket per tunnel
//!
//! GRE has no ports, and the kernel hands a clone of every GRE packet to
//! every raw socket of protocol 47 bound to its destination or to no
//! address (`raw_v4_input`). There is no `SO_REUSEPORT` group for raw
//! sockets: N sockets on one address cost N clones of every packet, N - 1 of
//! them to be thrown away (tapnet once had a socket per worker, each with a
//! BPF filter keeping only its worker's share). So a tunnel has exactly one
//! socket, and [`open_gre`] hands out one [`GreQueue`] per worker, all on it
//! (an `Arc<OwnedFd>`, not a `dup`: one descriptor, closed with the last
//! queue):
//!
//! - **Receive.** One worker reads the socket: [`receiver_of`], the
//!   underlay address modulo the number of workers. Its queue is the only
//!   one that [`GreQueue::receives`], and a worker registers a queue in its
//!   epoll only if it receives (`crate::port::PortQueue::receives`): a
//!   descriptor in several epoll sets would wake every one of those workers
//!   for each packet, and they would race for it. A send-only queue's
//!   [`GreQueue::recv_batch`] says `WouldBlock` without a system call. The
//!   address, not always worker 0, picks the reader so that a host with
//!   tunnels on several underlay addresses spreads them over its workers;
//!   it is stable, so the reader of a tunnel can be told.
//! - **The receiving worker forwards alone.** What a tunnel reads is
//!   decapsulated and bridged (`worker/overlay.rs`): learned on the VTEP it
//!   came from and written to local TAP queues, of which every worker has
//!   one. It never reaches the router or the NAT tables (a frame for the
//!   gateway is dropped as `no_route`: the remote host's own gateway serves
//!   its containers), so no frame needs its flow's owner and nothing is
//!   handed off (`worker/handoff.rs`).
//! - **Send.** Every worker sends through its own queue (its own scratch
//!   headers) on the shared socket. `sendmmsg` from several threads on one
//!   socket is safe: the kernel serialises them per socket (`raw_sendmsg`
//!   appends each message and pushes it out as one datagram under the
//!   socket lock, `lock_sock`), so concurrent batches interleave whole
//!   packets and never mix their bytes. The workers' sends to one tunnel
//!   wait for each other on that lock, and share one send buffer
//!   (`SO_SNDBUF`, raised as for the VXLAN sockets).
//!
//! The only other raw GRE socket tapnet opens is the prober's of `tapnet
//! overlay check` (in the control plane): unbound, it gets a clone of every
//! GRE packet for the few seconds of a check.
//!
//! The price: one worker decapsulates all of a tunnel's traffic, where the
//! VXLAN reuseport group spreads it by flow ([`super::udp`]). Spreading it
//! again would take a hand-off of whole buffers from the reader to the
//! other workers, which the bridge path does not need for correctness.
//!
//! # What the kernel does (checked on Linux 6.18 by the tests below)
//!
//! - A raw socket also receives the outer IPv4 header:
//!   [`RecvMeta::gre_offset`] says where the GRE header starts. The outer
//!   header has been checked by the IP layer, and the packet trimmed to its
//!   Total Length and reassembled if it was fragmented.
//! - This kernel has no GRE module (no `ip_gre`, no `gretap`): nothing else
//!   handles protocol 47, and without a raw socket for it the kernel answers
//!   every GRE packet with an ICMP protocol unreachable. While a raw
//!   `IPPROTO_GRE` socket matches the packet it does not, even if the
//!   socket's filter drops it (`ip_protocol_deliver_rcu` only asks whether a
//!   raw socket matched): `no_protocol_unreachable_while_open`. Packets to
//!   another local address than the bound one still get one.
//! - On send, the kernel writes the outer IPv4 header: protocol 47, the
//!   bound address as source, TTL 64 (`net.ipv4.ip_default_ttl`), and DF as
//!   for the VXLAN sockets ([`super::udp`], § Fragmentation and DF): set
//!   when the packet fits the path MTU, otherwise the packet is fragmented
//!   and the fragments have no DF. RFC 2784 does not forbid fragmentation.
//!
//! # Setup
//!
//! A raw socket receives from the moment it exists, before it is bound, and
//! until then it matches GRE packets to every local address (another
//! tunnel's, say). So [`open_gre`] attaches a drop-all filter first, binds,
//! reads away anything that was queued in between (nothing more can come
//! while the filter is on, so this ends), and only then detaches the
//! filter: the socket never holds a packet for another address, and no
//! filter runs on the packets it receives afterwards.

use std::io::{self, IoSlice};
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::Arc;

use super::steer::worker_for;
use super::udp::{
    attach_filter, bind, from_sockaddr, local_addr, send_msgs, set_buffer, setsockopt, sockaddr, socket, DROP_ALL,
};
pub use super::udp::{Sent, MAX_RECV_BATCH, MAX_SEND_BATCH, MAX_SOCKETS};

/// GRE Protocol Type of Transparent Ethernet Bridging (RFC 1701 §3.3).
pub const PROTO_TEB: u16 = 0x6558;

/// Errors from opening and configuring a tunnel's GRE socket.
#[derive(Debug, thiserror::Error)]
pub enum GreError {
    /// A tunnel needs 1 to [`MAX_SOCKETS`] workers.
    #[error("a tunnel needs 1 to {max} workers, not {0}", max = MAX_SOCKETS)]
    Workers(usize),
    /// Creating the raw socket failed (it needs CAP_NET_RAW).
    #[error("open a raw IPPROTO_GRE socket")]
    Socket(#[source] io::Error),
    /// A socket option was refused.
    #[error("set {option} on a raw GRE socket")]
    SetOption {
        option: &'static str,
        #[source]
        source: io::Error,
    },
    /// Binding to the underlay address failed (not an address of this host,
    /// say).
    #[error("bind a raw GRE socket to {addr}")]
    Bind {
        addr: Ipv4Addr,
        #[source]
        source: io::Error,
    },
    /// Reading away what was queued before the socket was bound failed.
    #[error("empty a new raw GRE socket")]
    Drain(#[source] io::Error),
    /// Reading back the address a handed-over socket is bound to failed.
    #[error("read the address of a raw GRE socket")]
    LocalAddr(#[source] io::Error),
}

/// What one received message holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes written to the buffer: the outer IPv4 header, then the GRE
    /// packet.
    pub len: usize,
    /// The outer source address: the remote tunnel endpoint.
    pub src: Ipv4Addr,
    /// Where the GRE header starts: the outer IPv4 header's length (IHL),
    /// at most `len`.
    pub gre_offset: usize,
    /// The buffer was too short and the rest was lost (`MSG_TRUNC`).
    pub truncated: bool,
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta { len: 0, src: Ipv4Addr::UNSPECIFIED, gre_offset: 0, truncated: false }
    }
}

impl RecvMeta {
    /// Length of the GRE packet (header and inner frame).
    #[inline]
    pub fn gre_len(&self) -> usize {
        self.len.saturating_sub(self.gre_offset)
    }

    /// The byte range of the GRE packet in the buffer (empty, never
    /// reversed, whatever the fields hold).
    #[inline]
    pub fn gre_range(&self) -> std::ops::Range<usize> {
        self.gre_offset.min(self.len)..self.len
    }
}

/// The worker (`0..workers`) that reads the tunnel on `underlay`: the
/// address modulo the number of workers, so that tunnels on neighbouring
/// addresses are read by different workers (module docs, § One socket per
/// tunnel). 0 when `workers` is 0.
#[inline]
pub fn receiver_of(underlay: Ipv4Addr, workers: usize) -> usize {
    worker_for(u32::from(underlay), workers)
}

// ---------------------------------------------------------------------------
// The socket.

/// Per-call scratch, allocated once per queue.
struct Scratch {
    rx_hdrs: [libc::mmsghdr; MAX_RECV_BATCH],
    rx_iovs: [libc::iovec; MAX_RECV_BATCH],
    rx_addrs: [libc::sockaddr_in; MAX_RECV_BATCH],
    tx_hdrs: [libc::mmsghdr; MAX_SEND_BATCH],
    tx_addr: libc::sockaddr_in,
}

// SAFETY: the raw pointers inside the arrays are scratch values. Every call
// that uses them takes `&mut GreQueue`, rewrites them from borrows it holds
// for the duration of the call before the kernel reads them, and no code
// dereferences them outside such a call; so moving the queue to another
// thread, or sharing `&GreQueue` (which cannot reach `Scratch`), creates no
// aliased access. Each queue has its own scratch, also when queues share a
// socket.
unsafe impl Send for Scratch {}
// SAFETY: see `Send` above; `&Scratch` gives access to nothing.
unsafe impl Sync for Scratch {}

impl Scratch {
    fn new() -> Box<Scratch> {
        // SAFETY: mmsghdr, iovec and sockaddr_in are plain C structs of
        // integers and raw pointers, for which all-zero bytes (null
        // pointers, zero lengths) are valid values.
        Box::new(unsafe { std::mem::zeroed() })
    }
}

/// One worker's queue of a GRE tunnel: the tunnel's one raw socket, which
/// every worker sends through and one of them reads.
pub struct GreQueue {
    /// The tunnel's socket, shared by every worker's queue.
    fd: Arc<OwnedFd>,
    local: Ipv4Addr,
    /// This queue reads the socket; exactly one queue of a tunnel does.
    receives: bool,
    scratch: Box<Scratch>,
}

impl std::fmt::Debug for GreQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GreQueue")
            .field("fd", &self.fd)
            .field("local", &self.local)
            .field("receives", &self.receives)
            .finish_non_exhaustive()
    }
}

/// Read and discard everything queued on `fd` (non-blocking).
fn drain(fd: &OwnedFd) -> io::Result<()> {
    let mut sink = [0u8; 1];
    loop {
        // SAFETY: fd is open; sink is valid for writes of its length. With
        // MSG_TRUNC the kernel still writes at most that many bytes.
        let n = unsafe {
            libc::recv(fd.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len(), libc::MSG_DONTWAIT | libc::MSG_TRUNC)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
    }
}

/// Open a GRE tunnel on `underlay` (`0.0.0.0`: any local address): one raw
/// socket bound to it, and one queue on that socket for each of `workers`
/// workers. Every queue sends; only `queues[receiver_of(underlay,
/// workers)]` receives ([`GreQueue::receives`]), every GRE packet to that
/// address, once. Needs CAP_NET_RAW.
pub fn open_gre(underlay: Ipv4Addr, workers: usize) -> Result<Vec<GreQueue>, GreError> {
    if workers == 0 || workers > MAX_SOCKETS {
        return Err(GreError::Workers(workers));
    }
    let opt = |option: &'static str| move |source| GreError::SetOption { option, source };
    let fd = socket(libc::SOCK_RAW, libc::IPPROTO_GRE).map_err(GreError::Socket)?;
    attach_filter(&fd, &DROP_ALL).map_err(opt("SO_ATTACH_FILTER"))?;
    set_buffer(&fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF).map_err(opt("SO_RCVBUF"))?;
    set_buffer(&fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF).map_err(opt("SO_SNDBUF"))?;
    bind(&fd, SocketAddrV4::new(underlay, 0)).map_err(|source| GreError::Bind { addr: underlay, source })?;
    drain(&fd).map_err(GreError::Drain)?;
    // From here on the socket only matches packets to `underlay`; the
    // kernel ignores the option's value.
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, &0 as &libc::c_int).map_err(opt("SO_DETACH_FILTER"))?;
    let fd = Arc::new(fd);
    let receiver = receiver_of(underlay, workers);
    Ok((0..workers)
        .map(|w| GreQueue { fd: Arc::clone(&fd), local: underlay, receives: w == receiver, scratch: Scratch::new() })
        .collect())
}

/// The queues of a GRE tunnel [`open_gre`] opened, from a duplicate of
/// its socket (handed over by another process): the binding is the
/// socket's. Off the hot path.
pub fn gre_from_fd(fd: OwnedFd, workers: usize) -> Result<Vec<GreQueue>, GreError> {
    if workers == 0 || workers > MAX_SOCKETS {
        return Err(GreError::Workers(workers));
    }
    let underlay = *local_addr(&fd).map_err(GreError::LocalAddr)?.ip();
    let fd = Arc::new(fd);
    let receiver = receiver_of(underlay, workers);
    Ok((0..workers)
        .map(|w| GreQueue { fd: Arc::clone(&fd), local: underlay, receives: w == receiver, scratch: Scratch::new() })
        .collect())
}

impl GreQueue {
    /// The underlay address the socket is bound to.
    pub fn local_addr(&self) -> Ipv4Addr {
        self.local
    }

    /// Whether this queue reads the socket. Only the receiving worker's
    /// does; the others are for sending and must not be polled for input
    /// (module docs, § One socket per tunnel).
    #[inline]
    pub fn receives(&self) -> bool {
        self.receives
    }

    /// Read up to [`MAX_RECV_BATCH`] packets with one `recvmmsg`: packet *i*
    /// goes to the *i*-th buffer of `bufs` (outer IPv4 header first) and is
    /// described by `meta[i]`. Returns how many were read; `WouldBlock` when
    /// none is waiting, and always on a queue that does not
    /// [`receive`](GreQueue::receives) (without a system call: the packets
    /// are the receiving worker's). An error met after the first packet is
    /// returned by the next call, as `recvmmsg` does.
    #[inline]
    pub fn recv_batch<'a>(
        &mut self,
        bufs: impl IntoIterator<Item = &'a mut [u8]>,
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        if !self.receives {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let Scratch { rx_hdrs, rx_iovs, rx_addrs, .. } = &mut *self.scratch;
        // The buffers are kept to read each packet's IHL afterwards.
        let mut held: [&mut [u8]; MAX_RECV_BATCH] = Default::default();
        let mut n = 0;
        for buf in bufs.into_iter().take(meta.len().min(MAX_RECV_BATCH)) {
            rx_iovs[n] = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            held[n] = buf;
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let (iov, addr) = (rx_iovs.as_mut_ptr(), rx_addrs.as_mut_ptr());
        for (i, h) in rx_hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_name = addr.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: fd is open for the lifetime of self. rx_hdrs[..n] point to
        // rx_iovs[i] and rx_addrs[i] (live in self.scratch, exclusively
        // borrowed), and rx_iovs[i] to the caller's buffers, exclusively
        // borrowed for 'a, longer than this call (held only keeps them for
        // reading afterwards). The kernel writes at most iov_len bytes to
        // each and namelen bytes to each address.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                rx_hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = r as usize;
        for (i, m) in meta.iter_mut().enumerate().take(r) {
            let len = (rx_hdrs[i].msg_len as usize).min(held[i].len());
            let ihl = held[i][..len].first().map_or(0, |b| usize::from(b & 0xf) * 4);
            *m = RecvMeta {
                len,
                src: *from_sockaddr(&rx_addrs[i]).ip(),
                gre_offset: ihl.min(len),
                truncated: rx_hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
        }
        Ok(r)
    }

    /// Send `msgs` to the tunnel endpoint `dst`, one GRE packet each, with
    /// as few `sendmmsg` calls as it takes ([`MAX_SEND_BATCH`] per call).
    /// Each message is a scatter list whose concatenation is the GRE packet,
    /// usually `[GRE header, inner frame]`; the kernel adds the outer IPv4
    /// header. Failures are reported as for
    /// [`super::udp::UdpTunnelQueue::send_batch`].
    ///
    /// Every queue of a tunnel sends, each from its own worker's thread, on
    /// the one socket: the kernel serialises the messages per socket, each
    /// goes out whole (module docs, § One socket per tunnel).
    #[inline]
    pub fn send_batch(&mut self, dst: Ipv4Addr, msgs: &[&[IoSlice<'_>]]) -> Sent {
        let s = &mut *self.scratch;
        s.tx_addr = sockaddr(SocketAddrV4::new(dst, 0));
        send_msgs(self.fd.as_fd(), &mut s.tx_hdrs, &s.tx_addr, msgs)
    }
}

impl AsRawFd for GreQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for GreQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::steer::tests::Rng;
    use crate::port::udp::tests::{
        ipv4_packets, mac, run, wait_readable, with_two_ns, Capture, DEV_A, DEV_B, IP_A, IP_B, MAC_A, MAC_B,
    };
    use crate::wire::gre::Protocol;
    use crate::wire::{GrePacket, IpProtocol, Ipv4Packet};
    use etherparse::PacketBuilder;
    use std::process::Command;
    use std::time::Duration;

    // -----------------------------------------------------------------------
    // Packet builders.

    const C_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x58, 0x00, 0x02];
    const D_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x58, 0x00, 0x03];

    macro_rules! build {
        ($b:expr, $payload:expr) => {{
            let b = $b;
            let payload: &[u8] = $payload;
            let mut v = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut v, payload).unwrap();
            v
        }};
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        build!(PacketBuilder::ethernet2(C_MAC, D_MAC).ipv4(src, dst, 64).tcp(sport, dport, 7, 1000).syn(), b"")
    }
    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        build!(PacketBuilder::ethernet2(C_MAC, D_MAC).ipv4(src, dst, 64).udp(sport, dport), b"tapnet over gre")
    }
    fn ping(src: [u8; 4], dst: [u8; 4], id: u16) -> Vec<u8> {
        build!(PacketBuilder::ethernet2(C_MAC, D_MAC).ipv4(src, dst, 64).icmpv4_echo_request(id, 1), b"abcdefgh")
    }
    fn arp() -> Vec<u8> {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&C_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&C_MAC);
        f.extend_from_slice(&[10, 88, 0, 2]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 88, 0, 3]);
        f
    }
    fn ipv6() -> Vec<u8> {
        build!(PacketBuilder::ethernet2(C_MAC, D_MAC).ipv6([0xfd; 16], [0xfe; 16], 64).udp(1, 2), b"v6")
    }
    /// Set the fragment fields of the inner IPv4 header.
    fn fragment(frame: &[u8], offset_bytes: u16, more: bool) -> Vec<u8> {
        let mut v = frame.to_vec();
        let mut p = Ipv4Packet::new_unchecked(&mut v[14..]);
        p.clear_flags();
        p.set_more_frags(more);
        p.set_frag_offset(offset_bytes);
        p.fill_checksum();
        v
    }

    /// Which optional GRE words to write.
    #[derive(Clone, Copy, Debug)]
    struct Opts {
        csum: bool,
        key: Option<u32>,
        seq: Option<u32>,
    }
    const KEYED: Opts = Opts { csum: false, key: Some(0x0001_e240), seq: None };

    fn gre(o: Opts, proto: u16, inner: &[u8]) -> Vec<u8> {
        let hl = 4 + 4 * (usize::from(o.csum) + usize::from(o.key.is_some()) + usize::from(o.seq.is_some()));
        let mut v = vec![0xa5u8; hl + inner.len()];
        let mut p = GrePacket::new_unchecked(&mut v[..]);
        p.set_flags(o.csum, o.key.is_some(), o.seq.is_some());
        p.set_protocol(Protocol::from(proto));
        if o.csum {
            p.set_checksum(0);
        }
        if let Some(k) = o.key {
            p.set_key(k);
        }
        if let Some(s) = o.seq {
            p.set_seq_number(s);
        }
        p.payload_mut().copy_from_slice(inner);
        p.fill_checksum();
        assert_eq!(p.header_len(), hl);
        v
    }

    /// An outer IPv4 packet (protocol 47) with `words` words of NOP
    /// options.
    fn outer(src: Ipv4Addr, dst: Ipv4Addr, words: usize, payload: &[u8]) -> Vec<u8> {
        let hl = 20 + 4 * words;
        let mut v = vec![1u8; hl + payload.len()];
        let mut p = Ipv4Packet::new_unchecked(&mut v[..]);
        p.set_version(4);
        p.set_header_len(hl);
        p.set_dscp(0);
        p.set_ecn(0);
        p.set_total_len((hl + payload.len()) as u16);
        p.set_ident(0x4747);
        p.clear_flags();
        p.set_dont_frag(true);
        p.set_frag_offset(0);
        p.set_ttl(64);
        p.set_protocol(IpProtocol::Gre);
        p.set_src_addr(src);
        p.set_dst_addr(dst);
        p.payload_mut().copy_from_slice(payload);
        p.fill_checksum();
        v
    }

    const A: [u8; 4] = [10, 88, 0, 2];
    const B: [u8; 4] = [10, 88, 0, 3];

    fn tunnel(inner: &[u8]) -> Vec<u8> {
        outer(IP_A, IP_B, 0, &gre(KEYED, PROTO_TEB, inner))
    }

    #[test]
    fn the_receiver_is_a_worker_and_tunnels_spread() {
        for n in 1..=8 {
            for last in 0..=255u8 {
                assert!(receiver_of(Ipv4Addr::new(10, 0, 0, last), n) < n);
            }
            // n neighbouring underlay addresses: n different readers.
            let mut r: Vec<usize> = (0..n as u8).map(|i| receiver_of(Ipv4Addr::new(192, 0, 2, 10 + i), n)).collect();
            r.sort_unstable();
            r.dedup();
            assert_eq!(r.len(), n);
        }
        assert_eq!(receiver_of(Ipv4Addr::new(10, 91, 0, 2), 3), 0x0a5b_0002 % 3);
        assert_eq!(receiver_of(Ipv4Addr::new(10, 91, 0, 2), 1), 0);
        assert_eq!(receiver_of(Ipv4Addr::new(10, 91, 0, 2), 0), 0);
    }

    #[test]
    fn recv_meta_ranges() {
        let m = RecvMeta { len: 100, src: Ipv4Addr::LOCALHOST, gre_offset: 24, truncated: false };
        assert_eq!((m.gre_len(), m.gre_range()), (76, 24..100));
        let odd = RecvMeta { len: 10, gre_offset: 24, ..m };
        assert_eq!((odd.gre_len(), odd.gre_range()), (0, 10..10));
        assert_eq!(RecvMeta::default().gre_range(), 0..0);
    }

    #[test]
    fn open_checks_the_worker_count() {
        assert!(matches!(open_gre(Ipv4Addr::LOCALHOST, 0), Err(GreError::Workers(0))));
        assert!(matches!(open_gre(Ipv4Addr::LOCALHOST, MAX_SOCKETS + 1), Err(GreError::Workers(_))));
    }

    // -----------------------------------------------------------------------
    // Privileged: two namespaces joined by a veth pair ("a" sends, "b" has
    // the sockets unless said otherwise).

    /// An Ethernet frame from "a" to "b" around an outer IPv4 packet.
    fn on_wire(ip: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + ip.len());
        f.extend_from_slice(&MAC_B);
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(ip);
        f
    }

    /// Every packet waiting on `q`, with its metadata.
    fn drain_queue(q: &mut GreQueue, quiet: Duration) -> Vec<(RecvMeta, Vec<u8>)> {
        // Another queue's socket would stay readable for ever.
        assert!(q.receives(), "drain the receiving queue");
        let mut out = Vec::new();
        let mut bufs = vec![vec![0u8; 4096]; 8];
        let mut meta = [RecvMeta::default(); 8];
        while wait_readable(q.as_raw_fd(), quiet) {
            match q.recv_batch(bufs.iter_mut().map(Vec::as_mut_slice), &mut meta) {
                Ok(n) => out.extend(meta[..n].iter().zip(&bufs).map(|(m, b)| (*m, b[..m.len].to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv_batch: {e}"),
            }
        }
        out
    }

    fn raw_gre_socket(prog: &[libc::sock_filter]) -> OwnedFd {
        let fd = socket(libc::SOCK_RAW, libc::IPPROTO_GRE).unwrap();
        attach_filter(&fd, prog).unwrap();
        fd
    }

    /// A raw socket of the calling thread's namespace, as
    /// `/proc/net/raw` lists it.
    #[derive(Debug)]
    struct RawSock {
        local: Ipv4Addr,
        inode: u64,
        drops: u64,
    }

    /// The raw `IPPROTO_GRE` sockets of the calling thread's namespace (for
    /// a raw socket, the "port" of the local address is its protocol).
    fn raw_gre_sockets() -> Vec<RawSock> {
        let text = std::fs::read_to_string("/proc/thread-self/net/raw").unwrap();
        text.lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (addr, proto) = f.get(1)?.split_once(':')?;
                (u16::from_str_radix(proto, 16).ok()? == 47).then(|| RawSock {
                    // Written as the kernel's u32 in host order.
                    local: Ipv4Addr::from(u32::from_str_radix(addr, 16).unwrap().to_ne_bytes()),
                    inode: f[9].parse().unwrap(),
                    drops: f.last().unwrap().parse().unwrap(),
                })
            })
            .collect()
    }

    /// The inode of the socket behind `fd`.
    fn inode(fd: RawFd) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino()
    }

    /// One tunnel is one socket, whatever the number of workers: every
    /// queue holds it, exactly one reads it, and it closes with the last
    /// queue. A tunnel on another address has a socket of its own.
    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn one_socket_per_tunnel_read_by_one_queue() {
        with_two_ns(|ns| {
            ns.enter_b();
            assert!(raw_gre_sockets().is_empty());
            let n = 3;
            let mut qs = open_gre(IP_B, n).unwrap();
            let socks = raw_gre_sockets();
            assert_eq!(socks.len(), 1, "{socks:?}");
            let fd = qs[0].as_raw_fd();
            assert!(qs.iter().all(|q| q.as_raw_fd() == fd), "{qs:?}");
            assert_eq!((socks[0].local, socks[0].inode), (IP_B, inode(fd)));
            let readers: Vec<usize> = (0..n).filter(|&w| qs[w].receives()).collect();
            assert_eq!(readers, [receiver_of(IP_B, n)]);
            assert!(qs.iter().all(|q| q.local_addr() == IP_B));

            let other = Ipv4Addr::new(10, 91, 0, 3);
            run("ip", &format!("addr add {other}/24 dev {DEV_B}"));
            let second = open_gre(other, n).unwrap();
            let mut locals: Vec<Ipv4Addr> = raw_gre_sockets().iter().map(|s| s.local).collect();
            locals.sort();
            assert_eq!(locals, [IP_B, other]);
            drop(second);

            let last = qs.pop().unwrap();
            drop(qs);
            assert_eq!(raw_gre_sockets().len(), 1, "the last queue still holds the socket");
            drop(last);
            assert!(raw_gre_sockets().is_empty());
        });
    }

    /// Every GRE packet to the underlay address, whatever its GRE options
    /// and inner frame, is received exactly once, whole, by the receiving
    /// queue; the socket drops none, and the send-only queues read nothing.
    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn each_packet_is_received_once() {
        with_two_ns(|ns| {
            ns.enter_b();
            let n = 3;
            let mut qs = open_gre(IP_B, n).unwrap();
            ns.enter_a();
            let inject = Capture::open(DEV_A);
            let mut rng = Rng(0x5eed);
            let mut sent = Vec::new();
            for i in 0..300usize {
                let a = [10, 88, rng.next() as u8, rng.next() as u8];
                let b = [10, 89, rng.next() as u8, rng.next() as u8];
                let (p1, p2) = (rng.next() as u16, rng.next() as u16);
                let inner = match i % 6 {
                    0 | 1 => tcp(a, b, p1, p2),
                    2 | 3 => udp(a, b, p1, p2),
                    4 => ping(a, b, p1),
                    _ => [arp(), ipv6(), fragment(&udp(a, b, p1, p2), 8 * (p1 & 0xff), i % 2 == 0)][i % 3].clone(),
                };
                let o = Opts {
                    csum: rng.below(3) == 0,
                    key: (rng.below(4) != 0).then(|| rng.next() as u32),
                    seq: (rng.below(3) == 0).then(|| rng.next() as u32),
                };
                // Now and then not ours (IPv4 inside): still received, for
                // the worker to count.
                let proto = if i % 50 == 49 { 0x0800 } else { PROTO_TEB };
                let p = outer(IP_A, IP_B, rng.below(3), &gre(o, proto, &inner));
                inject.send(&on_wire(&p));
                sent.push(p);
            }
            ns.enter_b();
            let r = receiver_of(IP_B, n);
            let mut buf = [0u8; 2048];
            let mut meta = [RecvMeta::default(); 1];
            for (w, q) in qs.iter_mut().enumerate().filter(|&(w, _)| w != r) {
                let e = q.recv_batch([&mut buf[..]], &mut meta).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "queue {w} does not read");
            }
            let got = drain_queue(&mut qs[r], Duration::from_millis(100));
            let mut seen = vec![0; sent.len()];
            for (m, b) in &got {
                let i = sent.iter().position(|p| p == b).expect("a packet we sent, whole");
                seen[i] += 1;
                assert_eq!(
                    (m.src, m.gre_offset, m.gre_len()),
                    (IP_A, usize::from(b[0] & 0xf) * 4, b.len() - m.gre_offset)
                );
                assert!(!m.truncated);
            }
            assert!(seen.iter().all(|&c| c == 1), "received other than once: {seen:?}");
            let socks = raw_gre_sockets();
            assert_eq!(socks.len(), 1);
            assert_eq!(socks[0].drops, 0);
        });
    }

    /// Every worker's queue sends through the one socket at the same time,
    /// each from a thread of its own: every packet arrives whole, once.
    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn all_queues_send_at_once() {
        with_two_ns(|ns| {
            let mut qa = open_gre(IP_A, 1).unwrap();
            ns.enter_b();
            let n = 3;
            const EACH: u32 = 100;
            let qs = open_gre(IP_B, n).unwrap();
            std::thread::scope(|s| {
                for (w, mut q) in qs.into_iter().enumerate() {
                    s.spawn(move || {
                        let inner = udp(A, B, 1000 + w as u16, 53);
                        for i in 0..EACH {
                            let key = (w as u32) << 16 | i;
                            let head = gre(Opts { csum: false, key: Some(key), seq: None }, PROTO_TEB, &[]);
                            let s = q.send_batch(IP_A, &[&[IoSlice::new(&head), IoSlice::new(&inner)]]);
                            assert_eq!((s.sent, s.failed), (1, 0), "queue {w}, packet {i}: {s:?}");
                        }
                    });
                }
            });
            ns.enter_a();
            let got = drain_queue(&mut qa[0], Duration::from_millis(100));
            let mut keys: Vec<u32> = got
                .iter()
                .map(|(m, b)| {
                    let g = GrePacket::new_checked(&b[m.gre_range()]).unwrap();
                    assert_eq!(g.payload(), udp(A, B, 1000 + (g.key().unwrap() >> 16) as u16, 53));
                    g.key().unwrap()
                })
                .collect();
            keys.sort_unstable();
            let want: Vec<u32> = (0..n as u32).flat_map(|w| (0..EACH).map(move |i| w << 16 | i)).collect();
            assert_eq!(keys, want);
        });
    }

    /// ICMP protocol unreachables (type 3, code 2) that "b" sends back.
    fn unreachables(cap: &Capture) -> usize {
        ipv4_packets(&cap.frames(Duration::from_millis(100)))
            .iter()
            .filter(|p| {
                let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
                ip.protocol() == IpProtocol::Icmp && ip.payload()[..2] == [3, 2]
            })
            .count()
    }

    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn no_protocol_unreachable_while_open() {
        with_two_ns(|ns| {
            ns.enter_b();
            std::fs::write("/proc/sys/net/ipv4/icmp_ratelimit", "0").unwrap();
            let other = Ipv4Addr::new(10, 91, 0, 3);
            run("ip", &format!("addr add {other}/24 dev {DEV_B}"));
            ns.enter_a();
            run("ip", &format!("neigh replace {other} lladdr {} dev {DEV_A} nud permanent", mac(MAC_B)));
            let cap = Capture::open(DEV_A);
            let packets: Vec<Vec<u8>> = (0..10).map(|i| on_wire(&tunnel(&udp(A, B, 1000 + i, 53)))).collect();
            let send_all = || packets.iter().for_each(|f| cap.send(f));
            send_all();
            assert_eq!(unreachables(&cap), 10, "without a socket the kernel answers every one");

            ns.enter_b();
            let mut qs = open_gre(IP_B, 2).unwrap();
            ns.enter_a();
            send_all();
            assert_eq!(unreachables(&cap), 0, "with the socket");
            let taken = drain_queue(&mut qs[receiver_of(IP_B, 2)], Duration::from_millis(50));
            assert_eq!(taken.len(), 10);
            // To another address of "b" than the bound one: answered.
            let elsewhere = outer(IP_A, other, 0, &gre(KEYED, PROTO_TEB, &udp(A, B, 1, 2)));
            cap.send(&on_wire(&elsewhere));
            assert_eq!(unreachables(&cap), 1, "to an address no socket is bound to");
            drop(qs);

            // One socket whose filter drops everything is enough.
            ns.enter_b();
            let silent = raw_gre_socket(&DROP_ALL);
            ns.enter_a();
            send_all();
            assert_eq!(unreachables(&cap), 0, "with a socket that drops everything");
            drop(silent);
            send_all();
            assert_eq!(unreachables(&cap), 10, "after closing");
        });
    }

    /// A peer without GRE answers with protocol unreachables; they never
    /// turn into errors of later calls (the socket is unconnected and has no
    /// `IP_RECVERR`, so `raw_err` ignores them).
    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn icmp_errors_do_not_surface() {
        with_two_ns(|ns| {
            std::fs::write("/proc/sys/net/ipv4/icmp_ratelimit", "0").unwrap();
            ns.enter_b();
            let back = Capture::open(DEV_B);
            let mut qb = open_gre(IP_B, 1).unwrap();
            let head = gre(KEYED, PROTO_TEB, &[]);
            let inner = udp(A, B, 1, 2);
            for _ in 0..5 {
                let s = qb[0].send_batch(IP_A, &[&[IoSlice::new(&head), IoSlice::new(&inner)]]);
                assert_eq!((s.sent, s.failed), (1, 0));
            }
            assert_eq!(unreachables(&back), 5, "\"a\" answered each packet");
            let s = qb[0].send_batch(IP_A, &[&[IoSlice::new(&head), IoSlice::new(&inner)]]);
            assert_eq!((s.sent, s.failed, s.last_errno), (1, 0, None));
            let mut buf = [0u8; 2048];
            let mut meta = [RecvMeta::default(); 1];
            assert_eq!(qb[0].recv_batch([&mut buf[..]], &mut meta).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        });
    }

    /// A classic pcap file (Ethernet link type) of `frames`.
    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        // Magic (microsecond timestamps), version 2.4, then zone, sigfigs,
        // snaplen and link type 1 (Ethernet).
        v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        for w in [0u32, 0, 65535, 1] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        for f in frames {
            for w in [0u32, 0, f.len() as u32, f.len() as u32] {
                v.extend_from_slice(&w.to_le_bytes());
            }
            v.extend_from_slice(f);
        }
        v
    }

    /// A file removed when dropped.
    struct TempFile(std::path::PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// "b" sends through its queue to "a": the kernel adds the outer header,
    /// and tshark reads the packet as GRE with the key, carrying a
    /// Transparent Ethernet Bridging frame. A GreQueue in "a" receives it.
    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair; runs tshark"]
    fn sends_arrive_with_the_outer_header_and_decode_as_gre() {
        with_two_ns(|ns| {
            let mut qa = open_gre(IP_A, 1).unwrap();
            let cap = Capture::open(DEV_A);
            ns.enter_b();
            let mut qb = open_gre(IP_B, 2).unwrap();
            let inner = [udp(A, B, 5678, 53), tcp(B, A, 22, 40000), arp()];
            let heads: Vec<Vec<u8>> = (0..3u32)
                .map(|i| gre(Opts { csum: false, key: Some(0x1234 + i), seq: None }, PROTO_TEB, &[]))
                .collect();
            let iovs: Vec<[IoSlice; 2]> =
                heads.iter().zip(&inner).map(|(h, f)| [IoSlice::new(h), IoSlice::new(f)]).collect();
            let msgs: Vec<&[IoSlice]> = iovs.iter().map(|m| &m[..]).collect();
            // Through a send-only queue (the receiver is queue 0).
            assert!(!qb[1].receives());
            let s = qb[1].send_batch(IP_A, &msgs);
            let bytes: usize = heads.iter().zip(&inner).map(|(h, f)| h.len() + f.len()).sum();
            assert_eq!(s, Sent { sent: 3, bytes, failed: 0, unsent: 0, last_errno: None });
            ns.enter_a();
            let frames: Vec<Vec<u8>> = cap
                .frames(Duration::from_millis(100))
                .into_iter()
                .filter(|f| f.len() > 34 && f[12..14] == [8, 0] && f[14 + 9] == 47)
                .collect();
            assert_eq!(frames.len(), 3);
            for (i, f) in frames.iter().enumerate() {
                let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!((ip.protocol(), ip.src_addr(), ip.dst_addr()), (IpProtocol::Gre, IP_B, IP_A));
                assert_eq!((ip.header_len(), ip.ttl(), ip.dont_frag()), (20, 64, true));
                assert_eq!(ip.payload(), [&heads[i][..], &inner[i]].concat());
                let g = GrePacket::new_checked(ip.payload()).unwrap();
                assert_eq!((g.key(), g.protocol()), (Some(0x1234 + i as u32), Protocol::TransparentEthernet));
            }
            let got = drain_queue(&mut qa[0], Duration::from_millis(50));
            assert_eq!(got.len(), 3);
            for (m, b) in &got {
                assert_eq!((m.src, m.gre_offset), (IP_B, 20));
                assert!(frames.iter().any(|f| f[14..] == b[..]));
            }

            let file = TempFile(std::env::temp_dir().join(format!(
                "tapnet-gre-{}-{:?}.pcap",
                std::process::id(),
                std::thread::current().id()
            )));
            std::fs::write(&file.0, pcap(&frames)).unwrap();
            let out = Command::new("tshark")
                .arg("-r")
                .arg(&file.0)
                .args(["-T", "fields", "-E", "separator=,", "-E", "aggregator=;"])
                .args(["-e", "ip.proto", "-e", "gre.key", "-e", "gre.proto", "-e", "eth.type"])
                .output()
                .expect("run tshark");
            assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).unwrap();
            eprintln!("{text}");
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(
                lines,
                [
                    "47;17,0x00001234,0x6558,0x0800;0x0800",
                    "47;6,0x00001235,0x6558,0x0800;0x0800",
                    "47,0x00001236,0x6558,0x0800;0x0806",
                ]
            );
            let verbose = Command::new("tshark").arg("-r").arg(&file.0).arg("-V").output().unwrap();
            let verbose = String::from_utf8_lossy(&verbose.stdout);
            assert!(verbose.contains("Generic Routing Encapsulation (Transparent Ethernet bridging)"), "{verbose}");
            assert!(verbose.contains("Key: 0x00001234"));
        });
    }
}
