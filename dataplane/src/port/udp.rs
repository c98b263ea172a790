//! The VXLAN overlay's socket layer (RFC 7348), and nothing else: per
//! worker, one receive socket in a `SO_REUSEPORT` group on the tunnel's UDP
//! port and a small pool of send sockets, moving datagrams with `recvmmsg`,
//! `sendmmsg` and UDP GSO (`UDP_SEGMENT`).
//!
//! The dataplane builds the VXLAN header and the inner frame
//! ([`crate::wire::vxlan`]); the kernel owns the underlay address and adds
//! the outer IPv4 and UDP headers. Setup policy (which address, which port,
//! how many workers, which mode) belongs to the control plane; the
//! per-packet calls are [`UdpTunnelQueue::recv_batch`],
//! [`UdpTunnelQueue::send_batch`] and [`UdpTunnelQueue::send_gso`]. None of
//! them allocates: the `mmsghdr`, address and control-message arrays live in
//! the queue, allocated once by [`open_vxlan`], and are refilled per call.
//!
//! # Receive
//!
//! Every worker's receive socket is bound to the same `(underlay, port)` with
//! `SO_REUSEPORT`, so they form one reuseport group and the kernel hands each
//! datagram to one member, chosen by a hash of the 4-tuple
//! (`reuseport_select_sock` over `udp_ehashfn`, keyed with a per-boot
//! secret). A remote VTEP picks its UDP source port from the inner flow
//! (RFC 7348 §5), so different inner flows spread over the workers while
//! one inner flow stays on one worker. Which worker is not predictable from
//! user space (unlike [`super::steer`] and [`super::gre`]).
//!
//! `UDP_GRO` is on: when the device below did GRO (a NIC, or a veth with
//! NAPI), or a local sender used UDP GSO, the socket receives several
//! datagrams of one flow as one buffer, all of [`RecvMeta::segment`] bytes
//! but the last, which may be shorter. Without `UDP_GRO` the kernel would
//! cut such a buffer back into datagrams before queueing it
//! (`udp_unexpected_gso`). A coalesced buffer is up to 64 KiB, so receive
//! buffers should be that large; a shorter one gets the head of it and
//! [`RecvMeta::truncated`].
//!
//! UDP checksums on receive (RFC 7348 §5): the kernel accepts a zero
//! checksum (IPv4 UDP, RFC 768) and verifies a non-zero one, dropping the
//! datagram before any socket sees it if it is wrong (`Udp: InCsumErrors`
//! in `/proc/net/snmp`). So both arrive here, and only correct ones.
//!
//! # Send
//!
//! The UDP source port must follow the inner flow (RFC 7348 §5) so that the
//! underlay can spread flows. A socket's source port is fixed once it is
//! bound, so each worker has a pool of send sockets, each bound to
//! `(underlay, 0)`: the kernel gives every one a distinct port from its
//! ephemeral range (`net.ipv4.ip_local_port_range`, 32768-60999 by default;
//! RFC 7348 §5 recommends 49152-65535, which the control plane can
//! arrange with that sysctl). The caller chooses the socket by a hash of
//! the inner flow (for instance
//! [`crate::overlay::tunnel::inner_flow_hash`]), and
//! [`UdpTunnelQueue::source_port`] tells which port that is. A pool index is
//! taken modulo the pool size, so a hash can be passed as it is. Send
//! sockets never receive: a drop-all socket filter discards anything sent
//! to their ports.
//!
//! The kernel refuses `UDP_SEGMENT` on a socket with `SO_NO_CHECK`
//! (`EINVAL`), so zero checksums and UDP GSO exclude each other and a
//! tunnel has two modes:
//!
//! | `udp_csum` | outer UDP checksum | sends |
//! |---|---|---|
//! | `false` (default) | zero (`SO_NO_CHECK`), as RFC 7348 §5 advises | one datagram per message, batched with `sendmmsg` ([`UdpTunnelQueue::send_batch`]) |
//! | `true` | computed by the kernel, or by the NIC when it offloads it | `send_batch`, and [`UdpTunnelQueue::send_gso`]: one `sendmsg` carries up to 64 KiB cut into equal datagrams by the kernel or the NIC |
//!
//! A zero checksum also costs receive offload at the remote end: Linux's
//! UDP GRO does not coalesce datagrams with a zero checksum
//! (`udp_gro_receive_segment`: "requires non zero csum, for symmetry with
//! GSO"), so a Linux peer (tapnet or the kernel's vxlan device) receives
//! every datagram of a zero-checksum tunnel on its own.
//!
//! A batch send reports what happened in a [`Sent`]: the messages the
//! kernel took, those refused with an error of their own (dropped, and the
//! batch goes on) and, when the socket's send buffer is full (`EAGAIN`),
//! how many at the end were not tried. Nothing is retried here. ICMP errors
//! about sent datagrams (port unreachable from a peer without a tunnel)
//! never surface as errors of later calls: the send sockets are unconnected
//! and have no `IP_RECVERR`, so the kernel ignores them.
//!
//! # Limits of a GSO send (Linux 6.18, checked by the tests below)
//!
//! - At most 128 segments (`UDP_MAX_SEGMENTS`; 64 on older kernels): more
//!   is `EINVAL`.
//! - The segment size plus the outer IPv4 and UDP headers must fit the path
//!   MTU, or `EINVAL`; the whole payload at most 65507 bytes.
//! - At most 1024 iovecs (`UIO_MAXIOV`), or `EMSGSIZE`.
//! - The segment size is the UDP payload of each datagram: the VXLAN
//!   header and the whole inner frame. The caller writes a VXLAN header and
//!   an inner Ethernet/IP/TCP header in front of each segment's payload, so
//!   the scatter list is usually `[headers 0, payload 0, headers 1, …]`,
//!   two iovecs per datagram.
//!
//! # Fragmentation and DF
//!
//! `IP_MTU_DISCOVER` is left at the kernel's default, `IP_PMTUDISC_WANT`
//! (`net.ipv4.ip_no_pmtu_disc = 0`). What the outer IPv4 headers get then
//! (checked by `outer_df_bits_as_documented`):
//! - a datagram sent on its own that fits the path MTU: DF set;
//! - a datagram larger than the path MTU: fragmented by the sending kernel,
//!   fragments without DF;
//! - every datagram of a GSO send: DF clear. The kernel decides DF once for
//!   the whole GSO packet (`__ip_make_skb` sets it only if `skb->len` fits
//!   the MTU, which a GSO packet never does), and each segment inherits it.
//!
//! RFC 7348 §4.3 says VTEPs MUST NOT fragment VXLAN packets; with this
//! default the kernel does fragment a datagram the path cannot carry
//! instead of failing the send. That is left as is: the control plane sets
//! the containers' MTU so that encapsulated frames fit (the inner MTU is the
//! underlay's minus 50), and an oversize frame still arrives, slowly,
//! instead of vanishing. `IP_PMTUDISC_DO` would set DF everywhere and
//! turn an oversize datagram into `EMSGSIZE` (a `failed` message).
//!
//! About 700 lines of code and as many of tests: one file because the UDP
//! tunnel socket's setup (reuseport group, GSO/GRO options, path-MTU mode)
//! and its batched `recvmmsg`/`sendmmsg` calls share the same message-header
//! layout, and the tests need real sockets.

use std::io::{self, IoSlice};
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use super::packet::SOCKET_BUFFER;

/// Most datagrams one [`UdpTunnelQueue::recv_batch`] call reads (the
/// worker's batch size).
pub const MAX_RECV_BATCH: usize = 32;

/// Most messages one `sendmmsg` call carries: a 64 KiB super-frame cut into
/// segments of 256 bytes or more. [`UdpTunnelQueue::send_batch`] takes any
/// number and makes as many calls as it needs.
pub const MAX_SEND_BATCH: usize = 256;

/// Send sockets per worker when the control plane has no reason to choose
/// otherwise.
pub const DEFAULT_POOL: usize = 16;

/// Most workers, and most send sockets per worker, [`open_vxlan`] accepts.
pub const MAX_SOCKETS: usize = 256;

/// Errors from opening and configuring the tunnel's sockets.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// A tunnel needs 1 to [`MAX_SOCKETS`] workers.
    #[error("a tunnel needs 1 to {max} workers, not {0}", max = MAX_SOCKETS)]
    Workers(usize),
    /// A send pool needs 1 to [`MAX_SOCKETS`] sockets.
    #[error("a send pool needs 1 to {max} sockets, not {0}", max = MAX_SOCKETS)]
    Pool(usize),
    /// Creating a socket failed.
    #[error("open a UDP socket")]
    Socket(#[source] io::Error),
    /// A socket option was refused.
    #[error("set {option} on a UDP socket")]
    SetOption {
        option: &'static str,
        #[source]
        source: io::Error,
    },
    /// Something already uses the tunnel's address: its sockets would take
    /// part of the traffic (a reuseport group of the same user) or the bind
    /// fails.
    #[error("UDP address {addr} is already in use")]
    InUse {
        addr: SocketAddrV4,
        #[source]
        source: io::Error,
    },
    /// Binding a socket failed (an address this host does not have, say).
    #[error("bind a UDP socket to {addr}")]
    Bind {
        addr: SocketAddrV4,
        #[source]
        source: io::Error,
    },
    /// Reading back the address the kernel bound a socket to failed.
    #[error("read the address of a UDP socket")]
    LocalAddr(#[source] io::Error),
}

/// What one received buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes written to the buffer (the UDP payloads: VXLAN header and inner
    /// frame, one after the other when coalesced).
    pub len: usize,
    /// Where the datagrams came from: the remote VTEP's address and port.
    pub src: SocketAddrV4,
    /// With GRO, the buffer holds several datagrams of this many bytes back
    /// to back, the last one possibly shorter. `None`: one datagram.
    pub segment: Option<u16>,
    /// The buffer was too short and the rest was lost (`MSG_TRUNC`).
    pub truncated: bool,
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta { len: 0, src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), segment: None, truncated: false }
    }
}

impl RecvMeta {
    /// The datagrams in `buf[..self.len]`: one, or the GRO segments. Never
    /// panics; an empty datagram yields one empty slice.
    pub fn datagrams<'b>(&self, buf: &'b [u8]) -> impl Iterator<Item = &'b [u8]> + 'b {
        let data = &buf[..self.len.min(buf.len())];
        let seg = match self.segment {
            Some(s) if s > 0 => usize::from(s),
            _ => data.len().max(1),
        };
        let n = data.len().div_ceil(seg).max(1);
        (0..n).map(move |i| &data[(i * seg).min(data.len())..((i + 1) * seg).min(data.len())])
    }
}

/// What one batch send did. `sent + failed + unsent` is the number of
/// messages offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sent {
    /// Messages the kernel took.
    pub sent: usize,
    /// Their bytes, as the caller gave them (the kernel's outer headers not
    /// counted).
    pub bytes: usize,
    /// Messages refused with an error of their own (no route, larger than
    /// the kernel allows, …): each is lost, and the batch went on.
    pub failed: usize,
    /// Messages at the end of the batch not tried because the socket's send
    /// buffer was full (`EAGAIN`): drop them or offer them again later.
    pub unsent: usize,
    /// The errno of the last failure, `EAGAIN` included.
    pub last_errno: Option<i32>,
}

/// Room for one control message with `N` bytes of data, laid out as the
/// kernel's `CMSG_*` macros expect: the data right after the header
/// (`CMSG_DATA` is `cmsg + 1`), the whole 8-byte aligned.
#[repr(C)]
#[derive(Clone, Copy)]
struct Cmsg<const N: usize> {
    hdr: libc::cmsghdr,
    data: [u8; N],
}

impl<const N: usize> Cmsg<N> {
    const fn new(level: libc::c_int, ty: libc::c_int, data_len: usize) -> Self {
        Cmsg {
            hdr: libc::cmsghdr { cmsg_len: size_of::<libc::cmsghdr>() + data_len, cmsg_level: level, cmsg_type: ty },
            data: [0; N],
        }
    }
}

/// `UDP_SEGMENT` takes a `u16`; `CMSG_SPACE(2)` is 24 bytes.
type SegmentCmsg = Cmsg<8>;
/// The kernel reports the GRO segment size as an `int`; with `UDP_GRO` the
/// only control message on this socket. 16 bytes of data leave room for a
/// larger one, which is then ignored.
type GroCmsg = Cmsg<16>;

/// Per-call scratch, allocated once per queue.
struct Scratch {
    rx_hdrs: [libc::mmsghdr; MAX_RECV_BATCH],
    rx_iovs: [libc::iovec; MAX_RECV_BATCH],
    rx_addrs: [libc::sockaddr_in; MAX_RECV_BATCH],
    rx_cmsgs: [GroCmsg; MAX_RECV_BATCH],
    tx_hdrs: [libc::mmsghdr; MAX_SEND_BATCH],
    tx_addr: libc::sockaddr_in,
    tx_cmsg: SegmentCmsg,
}

// SAFETY: the raw pointers inside the arrays are scratch values. Every call
// that uses them takes `&mut UdpTunnelQueue`, rewrites them from borrows it
// holds for the duration of the call before the kernel reads them, and no
// code dereferences them outside such a call; so moving the queue to
// another thread, or sharing `&UdpTunnelQueue` (which cannot reach
// `Scratch`), creates no aliased access.
unsafe impl Send for Scratch {}
// SAFETY: see `Send` above; `&Scratch` gives access to nothing.
unsafe impl Sync for Scratch {}

impl Scratch {
    fn new() -> Box<Scratch> {
        // SAFETY: mmsghdr, iovec, sockaddr_in and cmsghdr are plain C structs
        // of integers and raw pointers, for which all-zero bytes (null
        // pointers, zero lengths) are valid values; so are the byte arrays.
        let mut s: Box<Scratch> = Box::new(unsafe { std::mem::zeroed() });
        s.rx_cmsgs = [GroCmsg::new(0, 0, 0); MAX_RECV_BATCH];
        s.tx_cmsg = SegmentCmsg::new(libc::SOL_UDP, libc::UDP_SEGMENT, size_of::<u16>());
        s
    }
}

/// One send socket of a worker's pool.
#[derive(Debug)]
struct Sender {
    fd: OwnedFd,
    port: u16,
}

/// One worker's share of a VXLAN tunnel endpoint: its member of the
/// receive group and its pool of send sockets.
pub struct UdpTunnelQueue {
    rx: OwnedFd,
    local: SocketAddrV4,
    pool: Vec<Sender>,
    udp_csum: bool,
    scratch: Box<Scratch>,
}

impl std::fmt::Debug for UdpTunnelQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpTunnelQueue")
            .field("rx", &self.rx)
            .field("local", &self.local)
            .field("pool", &self.pool)
            .field("udp_csum", &self.udp_csum)
            .finish_non_exhaustive()
    }
}

pub(super) fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

pub(super) fn from_sockaddr(a: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port))
}

pub(super) fn setsockopt<T>(fd: &impl AsRawFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: fd is an open socket; val points to a live, initialised T of
    // the size passed, which the kernel only reads during the call.
    let rc = unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, name, (val as *const T).cast(), size_of::<T>() as libc::socklen_t)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raise a socket buffer to [`SOCKET_BUFFER`]: the `FORCE` variant ignores
/// `net.core.{r,w}mem_max` but needs CAP_NET_ADMIN; without it the plain
/// option gets what the sysctl allows.
pub(super) fn set_buffer(fd: &impl AsRawFd, force: libc::c_int, plain: libc::c_int) -> io::Result<()> {
    let size = SOCKET_BUFFER as libc::c_int;
    match setsockopt(fd, libc::SOL_SOCKET, force, &size) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => setsockopt(fd, libc::SOL_SOCKET, plain, &size),
        r => r,
    }
}

/// A socket filter that accepts nothing.
pub(super) const DROP_ALL: [libc::sock_filter; 1] =
    [libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 }];

pub(super) fn attach_filter(fd: &OwnedFd, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr().cast_mut() };
    // The kernel copies the program during the call; prog outlives it.
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// A non-blocking, close-on-exec IPv4 socket.
pub(super) fn socket(ty: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; no pointers involved.
    let fd = unsafe { libc::socket(libc::AF_INET, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn bind(fd: &OwnedFd, addr: SocketAddrV4) -> io::Result<()> {
    let sa = sockaddr(addr);
    // SAFETY: fd is an open socket; sa is a valid sockaddr_in of the length
    // passed, read by the kernel during the call only.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddrV4> {
    // SAFETY: sockaddr_in is a plain C struct; all-zero is valid.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: fd is an open socket; sa and len are valid for writes of the
    // sizes given for the duration of the call.
    let rc = unsafe { libc::getsockname(fd.as_raw_fd(), (&mut sa as *mut libc::sockaddr_in).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(from_sockaddr(&sa))
}

/// Send `msgs` to `addr` through `fd`, at most `hdrs.len()` per `sendmmsg`.
/// Each message is a scatter list. A partial `sendmmsg` means the next
/// message failed and the kernel dropped the reason; offering the rest
/// again returns it.
#[inline]
pub(super) fn send_msgs(
    fd: BorrowedFd<'_>,
    hdrs: &mut [libc::mmsghdr],
    addr: &libc::sockaddr_in,
    msgs: &[&[IoSlice<'_>]],
) -> Sent {
    let mut out = Sent::default();
    let mut i = 0;
    while i < msgs.len() {
        let n = (msgs.len() - i).min(hdrs.len());
        for (h, m) in hdrs.iter_mut().zip(&msgs[i..i + n]) {
            h.msg_hdr.msg_name = (addr as *const libc::sockaddr_in).cast_mut().cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // std guarantees IoSlice is ABI-compatible with iovec on Unix,
            // so the caller's scatter list is handed over as it is, with no
            // copy. The kernel only reads it when sending.
            h.msg_hdr.msg_iov = m.as_ptr().cast_mut().cast();
            h.msg_hdr.msg_iovlen = m.len();
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: fd is open (borrowed for the call). hdrs[..n] point to
        // addr and to the caller's iovec arrays (msgs), which point to the
        // caller's bytes; all are borrowed for longer than this call, and the
        // kernel only reads them (it writes msg_len into hdrs).
        let r = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        if r > 0 {
            let r = r as usize;
            out.sent += r;
            out.bytes += hdrs[..r].iter().map(|h| h.msg_len as usize).sum::<usize>();
            i += r;
            continue;
        }
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
        match errno {
            libc::EINTR => continue,
            libc::EAGAIN => {
                out.unsent = msgs.len() - i;
                out.last_errno = Some(errno);
                break;
            }
            _ => {
                out.failed += 1;
                out.last_errno = Some(errno);
                i += 1;
            }
        }
    }
    out
}

/// The GRO segment size from a received control buffer, if its first
/// message is `SOL_UDP`/`UDP_GRO` and fits in the `controllen` bytes the
/// kernel wrote.
fn gro_segment(c: &GroCmsg, controllen: usize) -> Option<u16> {
    let len = c.hdr.cmsg_len;
    let want = size_of::<libc::cmsghdr>() + size_of::<libc::c_int>();
    if controllen < want || len < want || c.hdr.cmsg_level != libc::SOL_UDP || c.hdr.cmsg_type != libc::UDP_GRO {
        return None;
    }
    let v = libc::c_int::from_ne_bytes([c.data[0], c.data[1], c.data[2], c.data[3]]);
    u16::try_from(v).ok().filter(|&s| s > 0)
}

/// Open one member of the receive group.
fn open_receiver(addr: SocketAddrV4) -> Result<OwnedFd, UdpError> {
    let fd = socket(libc::SOCK_DGRAM, libc::IPPROTO_UDP).map_err(UdpError::Socket)?;
    let opt = |option: &'static str| move |source| UdpError::SetOption { option, source };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, &1).map_err(opt("SO_REUSEPORT"))?;
    setsockopt(&fd, libc::SOL_UDP, libc::UDP_GRO, &1).map_err(opt("UDP_GRO"))?;
    set_buffer(&fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF).map_err(opt("SO_RCVBUF"))?;
    bind(&fd, addr).map_err(|source| UdpError::Bind { addr, source })?;
    Ok(fd)
}

/// Open one send socket: its own source port, never receiving.
fn open_sender(underlay: Ipv4Addr, udp_csum: bool) -> Result<Sender, UdpError> {
    let fd = socket(libc::SOCK_DGRAM, libc::IPPROTO_UDP).map_err(UdpError::Socket)?;
    let opt = |option: &'static str| move |source| UdpError::SetOption { option, source };
    if !udp_csum {
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_NO_CHECK, &1).map_err(opt("SO_NO_CHECK"))?;
    }
    set_buffer(&fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF).map_err(opt("SO_SNDBUF"))?;
    attach_filter(&fd, &DROP_ALL).map_err(opt("SO_ATTACH_FILTER"))?;
    let addr = SocketAddrV4::new(underlay, 0);
    bind(&fd, addr).map_err(|source| UdpError::Bind { addr, source })?;
    let port = local_addr(&fd).map_err(UdpError::LocalAddr)?.port();
    Ok(Sender { fd, port })
}

/// Open a VXLAN tunnel endpoint on `(underlay, port)`: `workers` queues,
/// `queues[i]` for worker *i*, each with a receive socket in one reuseport
/// group and `pool` send sockets bound to `(underlay, 0)`. `udp_csum`
/// chooses the mode (module docs): `false` sends zero checksums and has no
/// GSO.
///
/// `port` 0 lets the kernel choose one ([`UdpTunnelQueue::local_addr`]
/// tells which); [`crate::wire::vxlan::UDP_PORT`] is the standard one.
/// `underlay` may be `0.0.0.0` (any local address; the kernel then picks
/// each send's source address by route).
///
/// If a socket without `SO_REUSEPORT` holds `(underlay, port)` the bind
/// fails; if a reuseport group of the same user does, it would be joined
/// silently and take part of the traffic, so a probe without `SO_REUSEPORT`
/// is bound first, and a taken address is [`UdpError::InUse`]. (The kernel's
/// own vxlan device also holds its port without reuseport.)
pub fn open_vxlan(
    underlay: Ipv4Addr,
    port: u16,
    workers: usize,
    pool: usize,
    udp_csum: bool,
) -> Result<Vec<UdpTunnelQueue>, UdpError> {
    if workers == 0 || workers > MAX_SOCKETS {
        return Err(UdpError::Workers(workers));
    }
    if pool == 0 || pool > MAX_SOCKETS {
        return Err(UdpError::Pool(pool));
    }
    let mut local = SocketAddrV4::new(underlay, port);
    if port != 0 {
        // Bound and closed at once: UDP has no TIME_WAIT, so the port is free
        // again for the group. A group created by someone else in between is
        // joined, a race this does not close.
        let probe = socket(libc::SOCK_DGRAM, libc::IPPROTO_UDP).map_err(UdpError::Socket)?;
        bind(&probe, local).map_err(|source| match source.raw_os_error() {
            Some(libc::EADDRINUSE) => UdpError::InUse { addr: local, source },
            _ => UdpError::Bind { addr: local, source },
        })?;
    }
    let mut queues = Vec::with_capacity(workers);
    for _ in 0..workers {
        let rx = open_receiver(local)?;
        if local.port() == 0 {
            local = local_addr(&rx).map_err(UdpError::LocalAddr)?;
        }
        let pool = (0..pool).map(|_| open_sender(underlay, udp_csum)).collect::<Result<Vec<_>, _>>()?;
        queues.push(UdpTunnelQueue { rx, local, pool, udp_csum, scratch: Scratch::new() });
    }
    Ok(queues)
}

/// The queues of a VXLAN tunnel endpoint [`open_vxlan`] opened, from
/// duplicates of its sockets (handed over by another process): `rx[i]` and
/// `pools[i]` are worker *i*'s receive socket and send pool, in their
/// order. The reuseport group, the bindings and the checksum option belong
/// to the sockets, so the duplicates keep them; `udp_csum` must be the
/// mode they were opened with. Off the hot path.
pub fn vxlan_from_fds(
    rx: Vec<OwnedFd>,
    pools: Vec<Vec<OwnedFd>>,
    udp_csum: bool,
) -> Result<Vec<UdpTunnelQueue>, UdpError> {
    if rx.is_empty() || rx.len() > MAX_SOCKETS || pools.len() != rx.len() {
        return Err(UdpError::Workers(rx.len()));
    }
    let mut queues = Vec::with_capacity(rx.len());
    for (rx, pool) in rx.into_iter().zip(pools) {
        if pool.is_empty() || pool.len() > MAX_SOCKETS {
            return Err(UdpError::Pool(pool.len()));
        }
        let local = local_addr(&rx).map_err(UdpError::LocalAddr)?;
        let pool = pool
            .into_iter()
            .map(|fd| Ok(Sender { port: local_addr(&fd).map_err(UdpError::LocalAddr)?.port(), fd }))
            .collect::<Result<Vec<_>, UdpError>>()?;
        queues.push(UdpTunnelQueue { rx, local, pool, udp_csum, scratch: Scratch::new() });
    }
    Ok(queues)
}

impl UdpTunnelQueue {
    /// The send pool's descriptors, in order (for a takeover).
    pub fn pool_fds(&self) -> Vec<RawFd> {
        self.pool.iter().map(|s| s.fd.as_raw_fd()).collect()
    }

    /// The address the receive group is bound to (the port resolved if 0
    /// was asked for).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// Checksum mode: `true` sends checksummed datagrams and allows GSO.
    pub fn udp_csum(&self) -> bool {
        self.udp_csum
    }

    /// Send sockets in the pool.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// The UDP source port of send socket `pool_index` (modulo the pool
    /// size). Fixed for the life of the queue.
    #[inline]
    pub fn source_port(&self, pool_index: usize) -> u16 {
        self.pool[pool_index % self.pool.len()].port
    }

    /// The send socket for `pool_index`, and the scratch (split borrows).
    #[inline]
    fn sender(&mut self, pool_index: usize) -> (&OwnedFd, &mut Scratch) {
        let i = pool_index % self.pool.len();
        (&self.pool[i].fd, &mut *self.scratch)
    }

    /// Read up to [`MAX_RECV_BATCH`] buffers with one `recvmmsg`: buffer *i*
    /// of `bufs` is described by `meta[i]`. Returns how many were read (at
    /// most `min(bufs, meta.len(), MAX_RECV_BATCH)`); `WouldBlock` when none
    /// is waiting. An error met after the first datagram is returned by the
    /// next call, as `recvmmsg` does.
    #[inline]
    pub fn recv_batch<'a>(
        &mut self,
        bufs: impl IntoIterator<Item = &'a mut [u8]>,
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let Scratch { rx_hdrs, rx_iovs, rx_addrs, rx_cmsgs, .. } = &mut *self.scratch;
        let mut n = 0;
        for buf in bufs.into_iter().take(meta.len().min(MAX_RECV_BATCH)) {
            rx_iovs[n] = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let (iov, addr, cmsg) = (rx_iovs.as_mut_ptr(), rx_addrs.as_mut_ptr(), rx_cmsgs.as_mut_ptr());
        for (i, h) in rx_hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_name = addr.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = cmsg.wrapping_add(i).cast();
            h.msg_hdr.msg_controllen = size_of::<GroCmsg>();
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: rx is open for the lifetime of self. rx_hdrs[..n] point to
        // rx_iovs[i], rx_addrs[i] and rx_cmsgs[i] (live in self.scratch,
        // exclusively borrowed), and rx_iovs[i] to the caller's buffers,
        // exclusively borrowed for 'a, longer than this call. The kernel
        // writes at most iov_len, namelen and controllen bytes to each.
        let r = unsafe {
            libc::recvmmsg(
                self.rx.as_raw_fd(),
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
            let h = &rx_hdrs[i].msg_hdr;
            *m = RecvMeta {
                len: rx_hdrs[i].msg_len as usize,
                src: from_sockaddr(&rx_addrs[i]),
                segment: gro_segment(&rx_cmsgs[i], h.msg_controllen),
                truncated: h.msg_flags & libc::MSG_TRUNC != 0,
            };
        }
        Ok(r)
    }

    /// Send `msgs` to `dst`, one datagram each, from send socket
    /// `pool_index` (modulo the pool size), with as few `sendmmsg` calls as
    /// it takes ([`MAX_SEND_BATCH`] messages per call). Each message is a
    /// scatter list whose concatenation is the UDP payload, usually
    /// `[VXLAN and inner headers, inner payload]`.
    ///
    /// A message refused with an error of its own (`EMSGSIZE` above 65507
    /// bytes, `ENETUNREACH`, …) is counted in [`Sent::failed`] and the rest
    /// go on; a full send buffer (`EAGAIN`) stops the batch and leaves the
    /// rest in [`Sent::unsent`].
    #[inline]
    pub fn send_batch(&mut self, pool_index: usize, dst: SocketAddrV4, msgs: &[&[IoSlice<'_>]]) -> Sent {
        let (fd, scratch) = self.sender(pool_index);
        scratch.tx_addr = sockaddr(dst);
        send_msgs(fd.as_fd(), &mut scratch.tx_hdrs, &scratch.tx_addr, msgs)
    }

    /// Send the concatenation of `iov` to `dst` from send socket
    /// `pool_index` as datagrams of `seg_size` bytes (the last possibly
    /// shorter) with one `sendmsg` and a `UDP_SEGMENT` control message: the
    /// kernel, or the NIC, cuts it. Returns the number of datagrams.
    ///
    /// Only in checksum mode: otherwise `Unsupported`, with no system call
    /// (the kernel would refuse it with `EINVAL`). `seg_size` 0 is
    /// `InvalidInput`. The limits (128 segments, path MTU, 1024 iovecs) are
    /// in the module docs; a send beyond them fails whole. `WouldBlock`
    /// means the send buffer is full and nothing was sent.
    #[inline]
    pub fn send_gso(
        &mut self,
        pool_index: usize,
        dst: SocketAddrV4,
        iov: &[IoSlice<'_>],
        seg_size: u16,
    ) -> io::Result<usize> {
        if !self.udp_csum {
            return Err(io::ErrorKind::Unsupported.into());
        }
        if seg_size == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let (fd, scratch) = self.sender(pool_index);
        scratch.tx_addr = sockaddr(dst);
        scratch.tx_cmsg.data[..2].copy_from_slice(&seg_size.to_ne_bytes());
        // SAFETY: msghdr is a plain C struct; all-zero (null pointers, zero
        // lengths) is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut scratch.tx_addr as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // IoSlice is ABI-compatible with iovec (see send_msgs).
        msg.msg_iov = iov.as_ptr().cast_mut().cast();
        msg.msg_iovlen = iov.len();
        msg.msg_control = (&mut scratch.tx_cmsg as *mut SegmentCmsg).cast();
        msg.msg_controllen = CMSG_SPACE_U16;
        // SAFETY: fd is open for the lifetime of self. msg points to
        // tx_addr and tx_cmsg (in self.scratch, exclusively borrowed) and to
        // the caller's iovec array, which points to the caller's bytes; all
        // outlive the call and the kernel only reads them.
        let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize).div_ceil(usize::from(seg_size)).max(1))
    }
}

/// `CMSG_SPACE(sizeof(u16))`: header plus data, padded to the alignment of
/// `size_t`.
const CMSG_SPACE_U16: usize = (size_of::<libc::cmsghdr>() + size_of::<u16>()).next_multiple_of(size_of::<usize>());

impl AsRawFd for UdpTunnelQueue {
    /// The receive socket, for the worker's poller.
    fn as_raw_fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }
}

impl AsFd for UdpTunnelQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::port::packet::interface_index;
    use crate::wire::vxlan::{self, Vni};
    use crate::wire::{Ipv4Packet, UdpPacket};
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::UdpSocket;
    use std::process::Command;
    use std::time::{Duration, Instant};

    pub(crate) const WAIT: Duration = Duration::from_secs(5);
    const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

    // -----------------------------------------------------------------------
    // Without privileges: layouts and parsing.

    /// The control-message buffers agree with the C macros.
    #[test]
    fn cmsg_layout_matches_libc() {
        // SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic on their argument.
        let (space2, len2, len4) =
            unsafe { (libc::CMSG_SPACE(2) as usize, libc::CMSG_LEN(2) as usize, libc::CMSG_LEN(4) as usize) };
        assert_eq!(CMSG_SPACE_U16, space2);
        assert!(size_of::<SegmentCmsg>() >= space2);
        let c = SegmentCmsg::new(libc::SOL_UDP, libc::UDP_SEGMENT, 2);
        assert_eq!(c.hdr.cmsg_len, len2);
        assert!(size_of::<GroCmsg>() >= len4);
        let base = (&c as *const SegmentCmsg).cast::<u8>();
        // SAFETY: CMSG_DATA only computes an address from a valid pointer.
        let data = unsafe { libc::CMSG_DATA(&c.hdr) }.cast_const();
        assert_eq!(data as usize - base as usize, std::mem::offset_of!(SegmentCmsg, data));
        assert_eq!(std::mem::align_of::<SegmentCmsg>(), std::mem::align_of::<usize>());
    }

    #[test]
    fn sockaddr_round_trips() {
        for a in ["10.1.2.3:4789", "0.0.0.0:0", "255.255.255.255:65535", "127.0.0.1:1"] {
            let a: SocketAddrV4 = a.parse().unwrap();
            let sa = sockaddr(a);
            assert_eq!(sa.sin_family, libc::AF_INET as libc::sa_family_t);
            assert_eq!(u16::from_be(sa.sin_port), a.port());
            assert_eq!(sa.sin_addr.s_addr.to_ne_bytes(), a.ip().octets(), "network byte order");
            assert_eq!(from_sockaddr(&sa), a);
        }
    }

    fn gro(level: libc::c_int, ty: libc::c_int, v: libc::c_int) -> GroCmsg {
        let mut c = GroCmsg::new(level, ty, size_of::<libc::c_int>());
        c.data[..4].copy_from_slice(&v.to_ne_bytes());
        c
    }

    #[test]
    fn gro_segment_from_control_messages() {
        let full = size_of::<GroCmsg>();
        let want = size_of::<libc::cmsghdr>() + 4;
        assert_eq!(gro_segment(&gro(libc::SOL_UDP, libc::UDP_GRO, 1400), want), Some(1400));
        assert_eq!(gro_segment(&gro(libc::SOL_UDP, libc::UDP_GRO, 1), full), Some(1));
        assert_eq!(gro_segment(&gro(libc::SOL_UDP, libc::UDP_GRO, 65535), full), Some(65535));
        assert_eq!(gro_segment(&gro(libc::SOL_UDP, libc::UDP_GRO, 1400), want - 1), None, "cut");
        assert_eq!(gro_segment(&gro(libc::SOL_UDP, libc::UDP_GRO, 1400), 0), None, "no control message");
        assert_eq!(gro_segment(&gro(libc::SOL_IP, libc::UDP_GRO, 1400), full), None, "other level");
        assert_eq!(gro_segment(&gro(libc::SOL_UDP, libc::UDP_SEGMENT, 1400), full), None, "other type");
        assert_eq!(gro_segment(&gro(libc::SOL_UDP, libc::UDP_GRO, 0), full), None);
        assert_eq!(gro_segment(&gro(libc::SOL_UDP, libc::UDP_GRO, -1), full), None);
        assert_eq!(gro_segment(&gro(libc::SOL_UDP, libc::UDP_GRO, 65536), full), None);
        let mut short = gro(libc::SOL_UDP, libc::UDP_GRO, 1400);
        short.hdr.cmsg_len = want - 1;
        assert_eq!(gro_segment(&short, full), None, "cmsg_len too short for an int");
    }

    #[test]
    fn datagrams_of_a_buffer() {
        let buf: Vec<u8> = (0..=255).collect();
        let src = SocketAddrV4::new(LOCALHOST, 1);
        let m = |len, segment| RecvMeta { len, src, segment, truncated: false };
        let lens = |m: RecvMeta| m.datagrams(&buf).map(<[u8]>::len).collect::<Vec<_>>();
        assert_eq!(lens(m(100, None)), [100]);
        assert_eq!(lens(m(100, Some(30))), [30, 30, 30, 10]);
        assert_eq!(lens(m(90, Some(30))), [30, 30, 30]);
        assert_eq!(lens(m(20, Some(30))), [20]);
        assert_eq!(lens(m(0, None)), [0], "an empty datagram");
        assert_eq!(lens(m(0, Some(30))), [0]);
        assert_eq!(lens(m(1000, Some(100))), [100, 100, 56], "len beyond the buffer is clamped");
        let joined: Vec<u8> = m(100, Some(7)).datagrams(&buf).flatten().copied().collect();
        assert_eq!(joined, buf[..100]);
        // Never panics.
        for len in 0..300 {
            for seg in [None, Some(0), Some(1), Some(13), Some(255), Some(256), Some(u16::MAX)] {
                let total: usize = m(len, seg).datagrams(&buf).map(<[u8]>::len).sum();
                assert_eq!(total, len.min(buf.len()));
            }
        }
    }

    #[test]
    fn open_checks_its_arguments() {
        assert!(matches!(open_vxlan(LOCALHOST, 0, 0, 1, false), Err(UdpError::Workers(0))));
        assert!(matches!(open_vxlan(LOCALHOST, 0, MAX_SOCKETS + 1, 1, false), Err(UdpError::Workers(_))));
        assert!(matches!(open_vxlan(LOCALHOST, 0, 1, 0, false), Err(UdpError::Pool(0))));
        assert!(matches!(open_vxlan(LOCALHOST, 0, 1, MAX_SOCKETS + 1, true), Err(UdpError::Pool(_))));
        // 192.0.2.1 (TEST-NET-1) is nobody's address here.
        let e = open_vxlan(Ipv4Addr::new(192, 0, 2, 1), 0, 1, 1, false).unwrap_err();
        assert!(
            matches!(&e, UdpError::Bind { source, .. } if source.raw_os_error() == Some(libc::EADDRNOTAVAIL)),
            "{e}"
        );
    }

    #[test]
    fn a_tunnel_is_rebuilt_on_duplicates_of_its_sockets() {
        let dup = unsafe_dup;
        let qs = open_vxlan(LOCALHOST, 0, 2, 3, true).unwrap();
        let rx: Vec<OwnedFd> = qs.iter().map(|q| dup(q.as_raw_fd())).collect();
        let pools: Vec<Vec<OwnedFd>> = qs.iter().map(|q| q.pool_fds().into_iter().map(dup).collect()).collect();
        let back = vxlan_from_fds(rx, pools, true).unwrap();
        for (a, b) in qs.iter().zip(&back) {
            assert_eq!(a.local_addr(), b.local_addr());
            assert_eq!(a.pool_len(), b.pool_len());
            assert_eq!(
                (0..3).map(|i| a.source_port(i)).collect::<Vec<_>>(),
                (0..3).map(|i| b.source_port(i)).collect::<Vec<_>>()
            );
            assert!(b.udp_csum());
        }
        assert!(matches!(vxlan_from_fds(Vec::new(), Vec::new(), false), Err(UdpError::Workers(0))));
        let rx = vec![dup(qs[0].as_raw_fd())];
        assert!(matches!(vxlan_from_fds(rx, vec![Vec::new()], false), Err(UdpError::Pool(0))));
    }

    /// A new descriptor for the file `fd` refers to.
    fn unsafe_dup(fd: RawFd) -> OwnedFd {
        // SAFETY: F_DUPFD_CLOEXEC only makes a new descriptor for an open
        // file; the result is owned by nobody else.
        unsafe {
            let d = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0);
            assert!(d >= 0);
            std::os::fd::FromRawFd::from_raw_fd(d)
        }
    }

    /// A port held without SO_REUSEPORT, and one held by another reuseport
    /// group, are both refused rather than shared.
    #[test]
    fn taken_port_is_refused() {
        let plain = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let SocketAddr::V4(addr) = plain.local_addr().unwrap() else { unreachable!() };
        let e = open_vxlan(LOCALHOST, addr.port(), 2, 1, false).unwrap_err();
        assert!(matches!(e, UdpError::InUse { addr: a, .. } if a == addr), "{e}");
        let first = open_vxlan(LOCALHOST, 0, 2, 1, false).unwrap();
        let port = first[0].local_addr().port();
        assert_eq!(first[1].local_addr().port(), port, "one group, one port");
        let e = open_vxlan(LOCALHOST, port, 2, 1, false).unwrap_err();
        assert!(matches!(e, UdpError::InUse { .. }), "{e}");
        drop(first);
        let again = open_vxlan(LOCALHOST, port, 2, 1, false).expect("free again once closed");
        assert_eq!(again[0].local_addr(), SocketAddrV4::new(LOCALHOST, port));
    }

    use std::net::SocketAddr;

    pub(crate) fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: p is a valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
        n > 0 && p.revents & libc::POLLIN != 0
    }

    /// What the members of a receive group get: waits up to [`WAIT`] until
    /// `want` datagrams (GRO segments counted one by one) have come, then
    /// until nothing more comes for `quiet`. Each buffer with its member and
    /// metadata.
    pub(crate) fn recv_group(
        qs: &mut [UdpTunnelQueue],
        want: usize,
        quiet: Duration,
    ) -> Vec<(usize, RecvMeta, Vec<u8>)> {
        let mut out = Vec::new();
        let mut bufs = vec![vec![0u8; 65536]; 8];
        let mut meta = [RecvMeta::default(); 8];
        let deadline = Instant::now() + WAIT;
        let mut seen = 0;
        loop {
            let wait = if seen >= want { quiet } else { deadline.saturating_duration_since(Instant::now()) };
            let mut fds: Vec<libc::pollfd> =
                qs.iter().map(|q| libc::pollfd { fd: q.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
            // SAFETY: fds is a valid array of fds.len() pollfds for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait.as_millis() as libc::c_int) };
            if n <= 0 {
                return out;
            }
            for (w, q) in qs.iter_mut().enumerate().filter(|(w, _)| fds[*w].revents & libc::POLLIN != 0) {
                match q.recv_batch(bufs.iter_mut().map(Vec::as_mut_slice), &mut meta) {
                    Ok(n) => {
                        for (m, b) in meta[..n].iter().zip(&bufs) {
                            seen += m.datagrams(b).count();
                            out.push((w, *m, b[..m.len].to_vec()));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("recv_batch: {e}"),
                }
            }
        }
    }

    /// [`recv_group`] for one queue.
    pub(crate) fn recv_all(q: &mut UdpTunnelQueue, want: usize, quiet: Duration) -> Vec<(RecvMeta, Vec<u8>)> {
        recv_group(std::slice::from_mut(q), want, quiet).into_iter().map(|(_, m, b)| (m, b)).collect()
    }

    /// A VXLAN header with `vni`.
    pub(crate) fn vxlan_header(vni: u32) -> [u8; vxlan::HEADER_LEN] {
        let mut h = [0xa5u8; vxlan::HEADER_LEN];
        let mut p = vxlan::Packet::new_unchecked(&mut h[..]);
        p.clear_and_set_flags();
        p.set_vni(Vni::new(vni).unwrap());
        h
    }

    // -----------------------------------------------------------------------
    // Without privileges, on the loopback interface of the current
    // namespace (every port is ephemeral, so nothing collides).

    fn plain_receiver() -> (UdpSocket, SocketAddrV4) {
        let s = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        set_buffer(&s, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF).unwrap();
        let SocketAddr::V4(a) = s.local_addr().unwrap() else { unreachable!() };
        (s, a)
    }

    /// Each pool socket has its own port, which is what receivers see and
    /// which does not change; `sendmmsg` batches of scatter lists arrive
    /// whole and in order.
    #[test]
    fn pool_ports_are_distinct_and_stable() {
        let mut qs = open_vxlan(LOCALHOST, 0, 2, 8, false).unwrap();
        let (rx, to) = plain_receiver();
        let mut ports = BTreeSet::new();
        for q in &qs {
            assert_eq!(q.pool_len(), 8);
            for i in 0..8 {
                assert_eq!(q.source_port(i), local_addr(&q.pool[i].fd).unwrap().port());
                assert_eq!(q.source_port(i + 8), q.source_port(i), "modulo the pool");
                assert_ne!(q.source_port(i), 0);
                ports.insert(q.source_port(i));
            }
        }
        assert_eq!(ports.len(), 16, "every socket of every worker has its own port");
        let mut buf = [0u8; 64];
        for round in 0..3u8 {
            for (w, q) in qs.iter_mut().enumerate() {
                for i in 0..8 {
                    let body = [w as u8, i as u8, round];
                    let sent = q.send_batch(i, to, &[&[IoSlice::new(&vxlan_header(7)), IoSlice::new(&body)]]);
                    assert_eq!(sent, Sent { sent: 1, bytes: 11, ..Sent::default() });
                    let (n, from) = rx.recv_from(&mut buf).unwrap();
                    assert_eq!(&buf[8..n], &body);
                    assert_eq!(from, SocketAddr::from((LOCALHOST, q.source_port(i))), "round {round}");
                }
            }
        }
    }

    #[test]
    fn send_batch_carries_many_scatter_lists() {
        let mut qs = open_vxlan(LOCALHOST, 0, 1, 4, false).unwrap();
        let (rx, to) = plain_receiver();
        rx.set_nonblocking(false).unwrap();
        let heads: Vec<[u8; 8]> = (0..MAX_SEND_BATCH as u32 + 44).map(vxlan_header).collect();
        let bodies: Vec<Vec<u8>> = (0..heads.len()).map(|i| vec![i as u8; i % 50]).collect();
        let iovs: Vec<[IoSlice; 2]> =
            heads.iter().zip(&bodies).map(|(h, b)| [IoSlice::new(h), IoSlice::new(b)]).collect();
        let msgs: Vec<&[IoSlice]> = iovs.iter().map(|m| &m[..]).collect();
        let sent = qs[0].send_batch(3, to, &msgs);
        let bytes: usize = bodies.iter().map(|b| 8 + b.len()).sum();
        assert_eq!(sent, Sent { sent: msgs.len(), bytes, failed: 0, unsent: 0, last_errno: None });
        let mut buf = [0u8; 100];
        for (i, b) in bodies.iter().enumerate() {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..8], &heads[i], "message {i} in order");
            assert_eq!(&buf[8..n], &b[..]);
        }
        assert_eq!(qs[0].send_batch(0, to, &[]), Sent::default());
    }

    /// A message the kernel refuses is counted and the batch goes on.
    #[test]
    fn send_batch_counts_a_refused_message_and_goes_on() {
        let mut qs = open_vxlan(LOCALHOST, 0, 1, 1, true).unwrap();
        let (rx, to) = plain_receiver();
        let big = vec![0u8; 65508]; // one byte beyond the largest UDP payload
        let small = [1u8; 10];
        let ok = [IoSlice::new(&small)];
        let too_big = [IoSlice::new(&big)];
        let msgs: [&[IoSlice]; 5] = [&ok, &ok, &too_big, &ok, &ok];
        let sent = qs[0].send_batch(0, to, &msgs);
        assert_eq!(sent, Sent { sent: 4, bytes: 40, failed: 1, unsent: 0, last_errno: Some(libc::EMSGSIZE) });
        let mut buf = [0u8; 100];
        for _ in 0..4 {
            assert_eq!(rx.recv(&mut buf).unwrap(), 10);
        }
        rx.set_nonblocking(true).unwrap();
        assert_eq!(rx.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    /// An ICMP port unreachable about a datagram we sent never turns into an
    /// error on a later call: the send sockets are unconnected and have no
    /// `IP_RECVERR`, so the kernel ignores it (`__udp4_lib_err`).
    #[test]
    fn icmp_errors_do_not_surface() {
        let mut qs = open_vxlan(LOCALHOST, 0, 1, 1, false).unwrap();
        let closed = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let SocketAddr::V4(to) = closed.local_addr().unwrap() else { unreachable!() };
        drop(closed);
        let body = [0u8; 20];
        for _ in 0..5 {
            let s = qs[0].send_batch(0, to, &[&[IoSlice::new(&body)], &[IoSlice::new(&body)]]);
            assert_eq!(s, Sent { sent: 2, bytes: 40, ..Sent::default() });
        }
        let mut buf = [0u8; 64];
        let mut meta = [RecvMeta::default(); 1];
        assert_eq!(qs[0].recv_batch([&mut buf[..]], &mut meta).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    /// Datagrams from many source ports spread over the members of the
    /// receive group, and each source port sticks to one member.
    #[test]
    fn reuseport_group_spreads_flows_over_workers() {
        let mut qs = open_vxlan(LOCALHOST, 0, 3, 1, false).unwrap();
        let to = qs[0].local_addr();
        let senders: Vec<UdpSocket> = (0..48).map(|_| UdpSocket::bind((LOCALHOST, 0)).unwrap()).collect();
        for round in 0..3u8 {
            for (i, s) in senders.iter().enumerate() {
                s.send_to(&[i as u8, round], to).unwrap();
            }
        }
        let mut member_of: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
        let got = recv_group(&mut qs, 3 * senders.len(), Duration::from_millis(50));
        for (w, m, _) in &got {
            member_of.entry(m.src.port()).or_default().insert(*w);
        }
        assert_eq!(got.len(), 3 * senders.len());
        assert_eq!(member_of.len(), senders.len());
        assert!(member_of.values().all(|ws| ws.len() == 1), "a source port moved between members: {member_of:?}");
        let used: BTreeSet<usize> = member_of.values().flatten().copied().collect();
        eprintln!("members used: {used:?}");
        assert!(used.len() >= 2, "48 flows all on one member: {member_of:?}");
    }

    /// 40 segments of 1000 bytes, the last 700, each starting with a VXLAN
    /// header naming its index: the scatter list is `[header, payload]` per
    /// segment.
    pub(crate) struct GsoLoad {
        heads: Vec<[u8; 8]>,
        bodies: Vec<Vec<u8>>,
    }

    pub(crate) const SEGMENTS: usize = 40;
    pub(crate) const SEG: u16 = 1000;

    impl GsoLoad {
        pub(crate) fn new() -> GsoLoad {
            let heads = (0..SEGMENTS as u32).map(vxlan_header).collect();
            let bodies = (0..SEGMENTS)
                .map(|i| {
                    let n = if i + 1 == SEGMENTS { 700 - 8 } else { usize::from(SEG) - 8 };
                    (0..n).map(|j| (i * 7 + j) as u8).collect()
                })
                .collect();
            GsoLoad { heads, bodies }
        }
        pub(crate) fn iov(&self) -> Vec<IoSlice<'_>> {
            self.heads.iter().zip(&self.bodies).flat_map(|(h, b)| [IoSlice::new(h), IoSlice::new(b)]).collect()
        }
        pub(crate) fn datagram(&self, i: usize) -> Vec<u8> {
            [&self.heads[i][..], &self.bodies[i]].concat()
        }
        pub(crate) fn total(&self) -> usize {
            (SEGMENTS - 1) * usize::from(SEG) + 700
        }
    }

    /// The GSO send arrives as 40 datagrams at a plain socket, and as
    /// buffers with the segment size at a `UDP_GRO` socket, the same bytes.
    pub(crate) fn gso_arrives(
        tx: &mut UdpTunnelQueue,
        plain: &UdpSocket,
        plain_addr: SocketAddrV4,
        gro_rx: &mut UdpTunnelQueue,
    ) {
        let load = GsoLoad::new();
        assert_eq!(tx.send_gso(5, plain_addr, &load.iov(), SEG).unwrap(), SEGMENTS);
        let mut buf = vec![0u8; 65536];
        for i in 0..SEGMENTS {
            let (n, from) = plain.recv_from(&mut buf).unwrap_or_else(|e| panic!("datagram {i}: {e}"));
            assert_eq!(from.port(), tx.source_port(5), "the pool socket's port");
            assert_eq!(buf[..n], load.datagram(i)[..], "datagram {i}");
        }
        plain.set_nonblocking(true).unwrap();
        assert_eq!(plain.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock, "no 41st");
        plain.set_nonblocking(false).unwrap();

        assert_eq!(tx.send_gso(5, gro_rx.local_addr(), &load.iov(), SEG).unwrap(), SEGMENTS);
        let got = recv_all(gro_rx, SEGMENTS, Duration::from_millis(100));
        let datagrams: Vec<Vec<u8>> =
            got.iter().flat_map(|(m, b)| m.datagrams(b).map(<[u8]>::to_vec).collect::<Vec<_>>()).collect();
        let shape: Vec<(usize, Option<u16>)> = got.iter().map(|(m, _)| (m.len, m.segment)).collect();
        eprintln!("GRO receiver got buffers (len, segment): {shape:?}");
        assert_eq!(datagrams.len(), SEGMENTS);
        for (i, d) in datagrams.iter().enumerate() {
            assert_eq!(d[..], load.datagram(i)[..], "datagram {i}");
        }
        assert!(got.iter().all(|(m, _)| !m.truncated && m.src.port() == tx.source_port(5)));
        assert!(got.iter().any(|(m, _)| m.segment == Some(SEG)), "no coalesced buffer: {shape:?}");
        assert_eq!(got.iter().map(|(m, _)| m.len).sum::<usize>(), load.total());
    }

    #[test]
    fn gso_send_arrives_as_datagrams_or_coalesced_on_loopback() {
        let mut tx = open_vxlan(LOCALHOST, 0, 1, 8, true).unwrap();
        let mut rx = open_vxlan(LOCALHOST, 0, 1, 1, true).unwrap();
        let (plain, to) = plain_receiver();
        gso_arrives(&mut tx[0], &plain, to, &mut rx[0]);
    }

    /// What a GSO send may not do, on this kernel.
    #[test]
    fn gso_limits() {
        let mut qs = open_vxlan(LOCALHOST, 0, 1, 1, true).unwrap();
        let (_rx, to) = plain_receiver();
        let data = vec![0x42u8; 200 * 100];
        let send = |q: &mut UdpTunnelQueue, segs: usize| q.send_gso(0, to, &[IoSlice::new(&data[..segs * 100])], 100);
        assert_eq!(send(&mut qs[0], 64).unwrap(), 64);
        let errno = |r: io::Result<usize>| r.unwrap_err().raw_os_error();
        assert_eq!(errno(send(&mut qs[0], 129)), Some(libc::EINVAL), "beyond UDP_MAX_SEGMENTS");
        eprintln!("128 segments: {:?} (UDP_MAX_SEGMENTS: 64 on older kernels, 128 on newer)", send(&mut qs[0], 128));
        // A single datagram (no more than one segment) needs no GSO.
        assert_eq!(qs[0].send_gso(0, to, &[IoSlice::new(&data[..50])], 100).unwrap(), 1);
        let one = [1u8];
        let many = vec![IoSlice::new(&one); 1025];
        assert_eq!(errno(qs[0].send_gso(0, to, &many, 100)), Some(libc::EMSGSIZE), "beyond UIO_MAXIOV");
        assert_eq!(qs[0].send_gso(0, to, &many[..1024], 100).unwrap(), 11);
        assert_eq!(qs[0].send_gso(0, to, &[IoSlice::new(&data)], 0).unwrap_err().kind(), io::ErrorKind::InvalidInput);

        // Zero-checksum mode has no GSO: refused here, and by the kernel if
        // asked (SO_NO_CHECK and UDP_SEGMENT exclude each other).
        let mut zero = open_vxlan(LOCALHOST, 0, 1, 1, false).unwrap();
        let e = zero[0].send_gso(0, to, &[IoSlice::new(&data[..1000])], 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        setsockopt(&qs[0].pool[0].fd, libc::SOL_SOCKET, libc::SO_NO_CHECK, &1).unwrap();
        assert_eq!(errno(send(&mut qs[0], 10)), Some(libc::EINVAL), "the kernel refuses GSO with SO_NO_CHECK");
        assert_eq!(qs[0].send_batch(0, to, &[&[IoSlice::new(&data[..10])]]).sent, 1, "plain sends still work");
    }

    /// A buffer shorter than the datagram gets its head and the flag; zero
    /// and non-zero checksums are both received.
    #[test]
    fn truncation_and_both_checksum_modes_received() {
        let mut rx = open_vxlan(LOCALHOST, 0, 1, 1, false).unwrap();
        let to = rx[0].local_addr();
        let mut zero = open_vxlan(LOCALHOST, 0, 1, 1, false).unwrap();
        let mut csum = open_vxlan(LOCALHOST, 0, 1, 1, true).unwrap();
        let body: Vec<u8> = (0..100).collect();
        assert_eq!(zero[0].send_batch(0, to, &[&[IoSlice::new(&body)]]).sent, 1);
        assert_eq!(csum[0].send_batch(0, to, &[&[IoSlice::new(&body)]]).sent, 1);
        let got = recv_all(&mut rx[0], 2, Duration::from_millis(100));
        let from: BTreeSet<u16> = got.iter().map(|(m, _)| m.src.port()).collect();
        assert_eq!(from, BTreeSet::from([zero[0].source_port(0), csum[0].source_port(0)]));
        assert!(got.iter().all(|(m, b)| m.len == 100 && b[..] == body[..] && m.segment.is_none() && !m.truncated));

        assert_eq!(zero[0].send_batch(0, to, &[&[IoSlice::new(&body)]]).sent, 1);
        assert!(wait_readable(rx[0].as_raw_fd(), WAIT));
        let mut small = [0u8; 30];
        let mut meta = [RecvMeta::default(); 4];
        assert_eq!(rx[0].recv_batch([&mut small[..]], &mut meta).unwrap(), 1);
        assert_eq!((meta[0].len, meta[0].truncated), (30, true));
        assert_eq!(small[..], body[..30]);
        assert_eq!(rx[0].recv_batch([&mut small[..]], &mut meta).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(rx[0].recv_batch(std::iter::empty(), &mut meta).unwrap(), 0);
    }

    // -----------------------------------------------------------------------
    // Privileged: two network namespaces joined by a veth pair.

    pub(crate) const DEV_A: &str = "tnva";
    pub(crate) const DEV_B: &str = "tnvb";
    pub(crate) const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
    pub(crate) const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];
    pub(crate) const IP_A: Ipv4Addr = Ipv4Addr::new(10, 91, 0, 1);
    pub(crate) const IP_B: Ipv4Addr = Ipv4Addr::new(10, 91, 0, 2);

    pub(crate) fn mac(m: [u8; 6]) -> String {
        m.map(|b| format!("{b:02x}")).join(":")
    }

    /// Run a command in the calling thread's network namespace.
    pub(crate) fn run(cmd: &str, args: &str) {
        let out = Command::new(cmd).args(args.split_whitespace()).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert!(out.status.success(), "{cmd} {args}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn new_netns() -> OwnedFd {
        // SAFETY: unshare(CLONE_NEWNET) only changes the calling thread's
        // network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
        // /proc/sys/net resolves to the opening thread's namespace.
        std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1").unwrap();
        std::fs::File::open("/proc/thread-self/ns/net").unwrap().into()
    }

    /// Two private network namespaces, "a" and "b", joined by a veth pair
    /// `tnva` (MAC_A, IP_A) <-> `tnvb` (MAC_B, IP_B), with permanent
    /// neighbour entries so that nothing ARPs. The test thread switches
    /// between them with [`TwoNs::enter_a`] and [`TwoNs::enter_b`]; a socket
    /// or a child process belongs to the namespace it was made in.
    pub(crate) struct TwoNs {
        a: OwnedFd,
        b: OwnedFd,
    }

    impl TwoNs {
        fn enter(fd: &OwnedFd) {
            // SAFETY: fd is an open network namespace file; setns changes
            // only this thread's namespace.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
        }
        pub(crate) fn enter_a(&self) {
            Self::enter(&self.a)
        }
        pub(crate) fn enter_b(&self) {
            Self::enter(&self.b)
        }
    }

    /// Run `f` on a thread of its own with [`TwoNs`] set up, starting in
    /// "a". Nothing is visible outside, and everything goes when the thread
    /// ends, even on a panic.
    pub(crate) fn with_two_ns<R: Send + 'static>(f: impl FnOnce(&TwoNs) -> R + Send + 'static) -> R {
        let t = std::thread::spawn(move || {
            let a = new_netns();
            let b = new_netns();
            let ns = TwoNs { a, b };
            ns.enter_a();
            let b_path = format!("/proc/{}/fd/{}", std::process::id(), ns.b.as_raw_fd());
            run(
                "ip",
                &format!(
                    "link add {DEV_A} address {} type veth peer name {DEV_B} address {} netns {b_path}",
                    mac(MAC_A),
                    mac(MAC_B)
                ),
            );
            for (enter, dev, ip, peer_ip, peer_mac) in
                [(TwoNs::enter_a as fn(&TwoNs), DEV_A, IP_A, IP_B, MAC_B), (TwoNs::enter_b, DEV_B, IP_B, IP_A, MAC_A)]
            {
                enter(&ns);
                run("ip", "link set lo up");
                run("ip", &format!("addr add {ip}/24 dev {dev}"));
                run("ip", &format!("link set {dev} up"));
                run("ip", &format!("neigh replace {peer_ip} lladdr {} dev {dev} nud permanent", mac(peer_mac)));
            }
            // A link that is up may drop frames until its qdisc is attached:
            // probe until a datagram crosses.
            let rx = UdpSocket::bind((IP_B, 9)).unwrap();
            rx.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            ns.enter_a();
            let tx = UdpSocket::bind((IP_A, 0)).unwrap();
            let deadline = Instant::now() + WAIT;
            loop {
                tx.send_to(b"probe", (IP_B, 9)).unwrap();
                if rx.recv(&mut [0u8; 8]).is_ok() {
                    break;
                }
                assert!(Instant::now() < deadline, "the veth pair never carried a datagram");
            }
            drop((rx, tx));
            f(&ns)
        });
        t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// An AF_PACKET socket seeing the frames `dev` receives (not those it
    /// sends), in the calling thread's namespace; it can also send frames.
    pub(crate) struct Capture(OwnedFd);

    impl Capture {
        pub(crate) fn open(dev: &str) -> Capture {
            let ifindex = interface_index(dev).unwrap();
            // SAFETY: plain socket creation. Protocol 0: nothing is queued
            // until bind.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0, "{}", io::Error::last_os_error());
            // SAFETY: fd was just returned by socket and is owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1).unwrap();
            set_buffer(&fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF).unwrap();
            // SAFETY: sockaddr_ll is a plain C struct; all-zero is valid.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as libc::c_ushort;
            sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sa.sll_ifindex = ifindex as libc::c_int;
            // SAFETY: fd is open; sa is a valid sockaddr_ll of the length given.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            Capture(fd)
        }

        /// Send one whole Ethernet frame out of the interface.
        pub(crate) fn send(&self, frame: &[u8]) {
            // SAFETY: fd is open; frame is valid for reads of its length.
            let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
        }

        /// The frames received until the line is quiet for `quiet`.
        pub(crate) fn frames(&self, quiet: Duration) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 70_000];
            while wait_readable(self.0.as_raw_fd(), quiet) {
                // SAFETY: fd is open; buf is valid for writes of its length.
                let n =
                    unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
                if n >= 0 {
                    out.push(buf[..n as usize].to_vec());
                }
            }
            out
        }
    }

    /// The IPv4 packets among `frames` (from the IPv4 header on).
    pub(crate) fn ipv4_packets(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        frames.iter().filter(|f| f.len() >= 34 && f[12..14] == [0x08, 0x00]).map(|f| f[14..].to_vec()).collect()
    }

    /// The UDP datagrams to port `dport` among `frames`: (outer IPv4
    /// packet, its UDP checksum field), unfragmented ones only.
    fn udp_to(frames: &[Vec<u8>], dport: u16) -> Vec<Vec<u8>> {
        ipv4_packets(frames)
            .into_iter()
            .filter(|p| {
                let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
                !ip.is_fragment()
                    && u8::from(ip.protocol()) == 17
                    && UdpPacket::new_checked(ip.payload()).is_ok_and(|u| u.dst_port() == dport)
            })
            .collect()
    }

    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn zero_checksum_on_the_wire_and_accepted() {
        with_two_ns(|ns| {
            ns.enter_b();
            let mut rx = open_vxlan(IP_B, vxlan::UDP_PORT, 2, 1, false).unwrap();
            let cap = Capture::open(DEV_B);
            ns.enter_a();
            let mut tx = open_vxlan(IP_A, vxlan::UDP_PORT, 1, DEFAULT_POOL, false).unwrap();
            let to = SocketAddrV4::new(IP_B, vxlan::UDP_PORT);
            let body = [0x5au8; 200];
            for i in 0..DEFAULT_POOL {
                let head = vxlan_header(i as u32);
                let s = tx[0].send_batch(i, to, &[&[IoSlice::new(&head), IoSlice::new(&body)], &[IoSlice::new(&head)]]);
                assert_eq!(s.sent, 2);
            }
            let got = recv_group(&mut rx, 2 * DEFAULT_POOL, Duration::from_millis(50)).len();
            assert_eq!(got, 2 * DEFAULT_POOL, "the receive group takes zero checksums");
            let wire = udp_to(&cap.frames(Duration::from_millis(100)), vxlan::UDP_PORT);
            assert_eq!(wire.len(), 2 * DEFAULT_POOL);
            let mut sports = BTreeSet::new();
            for p in &wire {
                let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
                let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                assert_eq!(udp.checksum(), 0, "UDP checksum on the wire");
                assert_eq!((ip.src_addr(), ip.dst_addr()), (IP_A, IP_B));
                sports.insert(udp.src_port());
            }
            let pool: BTreeSet<u16> = (0..DEFAULT_POOL).map(|i| tx[0].source_port(i)).collect();
            assert_eq!(sports, pool, "each pool socket's port on the wire");
        });
    }

    /// With transmit checksum offload off on the sending veth, the kernel
    /// completes every checksum, and GSO packets are segmented before they
    /// cross: what a NIC would put on the wire.
    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn checksum_mode_valid_checksums_on_the_wire() {
        with_two_ns(|ns| {
            ns.enter_b();
            let mut rx = open_vxlan(IP_B, vxlan::UDP_PORT, 1, 1, false).unwrap();
            let cap = Capture::open(DEV_B);
            ns.enter_a();
            run("ethtool", &format!("-K {DEV_A} tx off"));
            let mut tx = open_vxlan(IP_A, vxlan::UDP_PORT, 1, 4, true).unwrap();
            let to = SocketAddrV4::new(IP_B, vxlan::UDP_PORT);
            let body: Vec<u8> = (0..333).map(|i| i as u8).collect();
            let head = vxlan_header(99);
            let one = [IoSlice::new(&head), IoSlice::new(&body)];
            assert_eq!(tx[0].send_batch(1, to, &[&one, &one, &one]).sent, 3);
            let load = GsoLoad::new();
            assert_eq!(tx[0].send_gso(2, to, &load.iov(), SEG).unwrap(), SEGMENTS);
            let got = recv_all(&mut rx[0], 3 + SEGMENTS, Duration::from_millis(100));
            let datagrams: usize = got.iter().map(|(m, b)| m.datagrams(b).count()).sum();
            assert_eq!(datagrams, 3 + SEGMENTS);
            let wire = udp_to(&cap.frames(Duration::from_millis(100)), vxlan::UDP_PORT);
            assert_eq!(wire.len(), 3 + SEGMENTS, "segmented before the wire");
            for (i, p) in wire.iter().enumerate() {
                let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
                let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                assert_ne!(udp.checksum(), 0, "datagram {i}");
                assert!(udp.verify_checksum_ipv4(IP_A, IP_B), "datagram {i}: checksum {:#06x}", udp.checksum());
                // Cross-check with etherparse's own computation.
                let h = etherparse::Ipv4HeaderSlice::from_slice(p).unwrap().to_header();
                let u = etherparse::UdpHeaderSlice::from_slice(ip.payload()).unwrap().to_header();
                assert_eq!(u.calc_checksum_ipv4(&h, udp.payload()).unwrap(), udp.checksum());
            }
            let sizes: Vec<usize> = wire[3..].iter().map(|p| p.len() - 28).collect();
            assert_eq!(sizes, [vec![usize::from(SEG); SEGMENTS - 1], vec![700]].concat());
        });
    }

    /// What DF the outer packets get with the default `IP_MTU_DISCOVER`
    /// (the module docs, § Fragmentation and DF).
    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn outer_df_bits_as_documented() {
        with_two_ns(|ns| {
            ns.enter_b();
            let mut rx = open_vxlan(IP_B, vxlan::UDP_PORT, 1, 1, false).unwrap();
            let cap = Capture::open(DEV_B);
            ns.enter_a();
            let mut zero = open_vxlan(IP_A, 0, 1, 1, false).unwrap();
            let mut csum = open_vxlan(IP_A, 0, 1, 1, true).unwrap();
            let mode = |q: &UdpTunnelQueue| {
                let mut v: libc::c_int = -1;
                let mut len = size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: fd is open; v and len are valid for writes.
                let rc = unsafe {
                    libc::getsockopt(
                        q.pool[0].fd.as_raw_fd(),
                        libc::IPPROTO_IP,
                        libc::IP_MTU_DISCOVER,
                        (&mut v as *mut libc::c_int).cast(),
                        &mut len,
                    )
                };
                assert_eq!(rc, 0);
                v
            };
            assert_eq!(mode(&zero[0]), libc::IP_PMTUDISC_WANT);
            let to = SocketAddrV4::new(IP_B, vxlan::UDP_PORT);
            let small = [1u8; 100];
            let big = [2u8; 3000];
            let s = zero[0].send_batch(0, to, &[&[IoSlice::new(&small)], &[IoSlice::new(&big)]]);
            assert_eq!(s.sent, 2);
            let load = GsoLoad::new();
            assert_eq!(csum[0].send_gso(0, to, &load.iov(), SEG).unwrap(), SEGMENTS);
            assert_eq!(
                recv_all(&mut rx[0], 2 + SEGMENTS, Duration::from_millis(100))
                    .iter()
                    .map(|(m, b)| m.datagrams(b).count())
                    .sum::<usize>(),
                2 + SEGMENTS
            );
            let packets = ipv4_packets(&cap.frames(Duration::from_millis(100)));
            let mut seen = Vec::new();
            for p in &packets {
                let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
                if u8::from(ip.protocol()) != 17 {
                    continue;
                }
                let what = if ip.is_fragment() {
                    "fragment"
                } else {
                    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                    match (udp.src_port(), udp.payload().len()) {
                        (p, 100) if p == zero[0].source_port(0) => "small",
                        (p, _) if p == csum[0].source_port(0) => "gso",
                        _ => "other",
                    }
                };
                seen.push((what, ip.dont_frag(), ip.more_frags(), p.len()));
            }
            eprintln!("{seen:?}");
            assert_eq!(seen.iter().filter(|s| s.0 == "small").collect::<Vec<_>>(), [&("small", true, false, 128)]);
            let frags: Vec<_> = seen.iter().filter(|s| s.0 == "fragment").collect();
            assert!(frags.len() >= 3 && frags.iter().all(|f| !f.1), "fragments of 3028 bytes, no DF: {frags:?}");
            assert_eq!(frags.iter().filter(|f| !f.2).count(), 1, "one last fragment");
            let gso: Vec<_> = seen.iter().filter(|s| s.0 == "gso").collect();
            assert!(!gso.is_empty() && gso.iter().all(|g| !g.1), "GSO datagrams carry no DF: {gso:?}");
        });
    }

    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn gso_send_arrives_as_datagrams_or_coalesced_across_veth() {
        with_two_ns(|ns| {
            ns.enter_b();
            let mut rx = open_vxlan(IP_B, vxlan::UDP_PORT, 1, 1, true).unwrap();
            let plain = UdpSocket::bind((IP_B, 5555)).unwrap();
            plain.set_read_timeout(Some(WAIT)).unwrap();
            ns.enter_a();
            let mut tx = open_vxlan(IP_A, 0, 1, 8, true).unwrap();
            gso_arrives(&mut tx[0], &plain, SocketAddrV4::new(IP_B, 5555), &mut rx[0]);
        });
    }

    /// A full send buffer stops the batch: the rest is reported unsent. The
    /// sending veth gets a slow token bucket, so datagrams stay charged to
    /// the socket while they wait in the qdisc.
    #[test]
    #[ignore = "needs root: creates network namespaces, a veth pair and a qdisc"]
    fn full_send_buffer_leaves_the_rest_unsent() {
        with_two_ns(|ns| {
            ns.enter_a();
            run("tc", &format!("qdisc add dev {DEV_A} root tbf rate 8kbit burst 1600 limit 10000000"));
            let mut tx = open_vxlan(IP_A, 0, 1, 1, false).unwrap();
            setsockopt(&tx[0].pool[0].fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &1).unwrap();
            let body = [7u8; 1000];
            let one = [IoSlice::new(&body)];
            let msgs = vec![&one[..]; 64];
            let s = tx[0].send_batch(0, SocketAddrV4::new(IP_B, 4789), &msgs);
            eprintln!("{s:?}");
            assert!(s.sent >= 1 && s.sent < 64, "{s:?}");
            assert_eq!((s.failed, s.unsent, s.last_errno), (0, 64 - s.sent, Some(libc::EAGAIN)));
            assert_eq!(s.bytes, 1000 * s.sent);
        });
    }

    /// Interoperation with the kernel's own VXLAN device, in both
    /// directions and both modes: "b" has `vx0` (VNI 42, remote IP_A,
    /// 192.168.77.2/24), "a" has our endpoint with a userspace host
    /// 192.168.77.1 behind it.
    #[test]
    #[ignore = "needs root: creates network namespaces, a veth pair and a vxlan device"]
    fn kernel_vxlan_interop() {
        const VNI: u32 = 42;
        const MAC_VX: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x02];
        const MAC_US: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x01];
        const HOST_VX: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
        const HOST_US: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
        with_two_ns(|ns| {
            ns.enter_b();
            run(
                "ip",
                &format!(
                    "link add vx0 address {} type vxlan id {VNI} local {IP_B} remote {IP_A} dstport 4789 dev {DEV_B}",
                    mac(MAC_VX)
                ),
            );
            run("ip", &format!("addr add {HOST_VX}/24 dev vx0"));
            run("ip", "link set vx0 up");
            run("ip", &format!("neigh replace {HOST_US} lladdr {} dev vx0 nud permanent", mac(MAC_US)));
            let inner_rx = UdpSocket::bind((HOST_VX, 8888)).unwrap();
            inner_rx.set_read_timeout(Some(WAIT)).unwrap();
            let inner_tx = UdpSocket::bind((HOST_VX, 7000)).unwrap();
            ns.enter_a();
            let mut zero = open_vxlan(IP_A, vxlan::UDP_PORT, 2, 4, false).unwrap();
            let mut csum = open_vxlan(IP_A, 0, 1, 4, true).unwrap();

            // Kernel -> us: a datagram to the userspace host leaves vx0
            // encapsulated, with a UDP checksum (iproute2 turns udpcsum on).
            let cap = Capture::open(DEV_A);
            inner_tx.send_to(b"hello", (HOST_US, 7777)).unwrap();
            let got = recv_group(&mut zero, 1, Duration::from_millis(50));
            assert_eq!(got.len(), 1, "{got:?}");
            let (_, m, b) = &got[0];
            assert_eq!(*m.src.ip(), IP_B);
            let vx = vxlan::Packet::new_checked(&b[..]).unwrap();
            assert_eq!((vx.flags(), vx.vni().get()), (0x08, VNI));
            let p = SlicedPacket::from_ethernet(vx.payload()).unwrap();
            let Some(etherparse::LinkSlice::Ethernet2(eth)) = &p.link else { panic!("{p:?}") };
            assert_eq!((eth.source(), eth.destination()), (MAC_VX, MAC_US));
            let Some(NetSlice::Ipv4(ip4)) = &p.net else { panic!() };
            assert_eq!((ip4.header().source_addr(), ip4.header().destination_addr()), (HOST_VX, HOST_US));
            let Some(TransportSlice::Udp(u)) = &p.transport else { panic!() };
            assert_eq!((u.source_port(), u.destination_port(), u.payload()), (7000, 7777, &b"hello"[..]));
            let wire = udp_to(&cap.frames(Duration::from_millis(50)), vxlan::UDP_PORT);
            assert_eq!(wire.len(), 1);
            let outer_ip = Ipv4Packet::new_checked(&wire[0][..]).unwrap();
            let outer = UdpPacket::new_checked(outer_ip.payload()).unwrap();
            assert_ne!(outer.checksum(), 0, "the kernel's datagram has a checksum, and we took it");
            assert_eq!(outer.src_port(), m.src.port());

            // Us -> kernel, one datagram per mode: vx0 takes zero and
            // non-zero checksums.
            let frame = |sport: u16, payload: &[u8]| {
                let b = PacketBuilder::ethernet2(MAC_US, MAC_VX)
                    .ipv4(HOST_US.octets(), HOST_VX.octets(), 64)
                    .udp(sport, 8888);
                let mut v = Vec::with_capacity(b.size(payload.len()));
                b.write(&mut v, payload).unwrap();
                v
            };
            let head = vxlan_header(VNI);
            let to = SocketAddrV4::new(IP_B, 4789);
            let f1 = frame(1111, b"zero checksum");
            let f2 = frame(2222, b"real checksum");
            assert_eq!(zero[1].send_batch(3, to, &[&[IoSlice::new(&head), IoSlice::new(&f1)]]).sent, 1);
            assert_eq!(csum[0].send_batch(1, to, &[&[IoSlice::new(&head), IoSlice::new(&f2)]]).sent, 1);
            let mut buf = [0u8; 2000];
            let mut seen = BTreeSet::new();
            for _ in 0..2 {
                let (n, from) = inner_rx.recv_from(&mut buf).expect("vx0 delivers our datagram");
                seen.insert((from, buf[..n].to_vec()));
            }
            assert_eq!(
                seen,
                BTreeSet::from([
                    (SocketAddr::from((HOST_US, 1111)), b"zero checksum".to_vec()),
                    (SocketAddr::from((HOST_US, 2222)), b"real checksum".to_vec()),
                ])
            );

            // Us -> kernel with GSO: 10 VXLAN datagrams of equal size, each
            // carrying its own inner UDP datagram, in one send.
            let frames: Vec<Vec<u8>> = (0..10u8).map(|i| frame(3000 + u16::from(i), &[i; 1000])).collect();
            let iov: Vec<IoSlice> = frames.iter().flat_map(|f| [IoSlice::new(&head), IoSlice::new(f)]).collect();
            let seg = (head.len() + frames[0].len()) as u16;
            assert_eq!(csum[0].send_gso(2, to, &iov, seg).unwrap(), 10);
            let mut ports = BTreeSet::new();
            for _ in 0..10 {
                let (n, from) = inner_rx.recv_from(&mut buf).expect("vx0 delivers each segment");
                assert_eq!(n, 1000);
                assert_eq!(buf[0], (from.port() - 3000) as u8);
                ports.insert(from.port());
            }
            assert_eq!(ports, (3000..3010).collect());
        });
    }
}
