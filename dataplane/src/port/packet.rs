//! The AF_PACKET socket layer of the uplink port, and nothing else: open
//! `SOCK_RAW` packet sockets on an existing interface with the virtio-net
//! header on, optionally join them in a `PACKET_FANOUT` group steered by
//! [`super::steer::fanout_program`], and move frames with `recvmmsg` and
//! `sendmmsg`.
//!
//! Every frame read or written here is `[virtio_net_hdr | Ethernet frame]`,
//! the same 10-byte header a TAP with `IFF_VNET_HDR` uses (`PACKET_VNET_HDR`,
//! native byte order, see [`crate::wire::vnet`]). So a 64 KiB TCP GSO
//! super-frame from the uplink reaches the dataplane whole with its
//! `gso_type`/`gso_size` and partial checksum, and a super-frame the
//! dataplane writes is segmented (or passed whole) by the kernel below it.
//!
//! One socket per worker. In a fanout group of type `PACKET_FANOUT_CBPF` the
//! kernel delivers each received frame to exactly one member, member
//! `program(frame) % members`, members numbered in the order they joined;
//! [`open_fanout`] joins socket *i* *i*-th, so `queues[i]` belongs to worker
//! *i*. Closing one member renumbers the others (the kernel moves the last
//! member into the hole), so the group is opened and closed as a whole.
//!
//! Nothing we send comes back: each socket sets `PACKET_IGNORE_OUTGOING`,
//! and the group sets `PACKET_FANOUT_FLAG_IGNORE_OUTGOING`. The second is
//! needed because a member's own hook is unregistered when it joins: the
//! group's hook (`packet_rcv_fanout`) receives instead, and it only skips
//! frames sent *by members of the group* (`match_fanout_group`), not frames
//! the host's stack or another socket sends on the interface. Checked on
//! Linux 6.18 by the `ignore_outgoing` test below.
//!
//! Setup policy (which interface, creating a macvlan child, its MTU and
//! address) belongs to the control plane. The per-packet calls are
//! [`PacketQueue::recv_batch`], [`PacketQueue::send_batch`] and the single
//! [`PacketQueue::recv`] / [`PacketQueue::send`]; none allocates: the
//! `mmsghdr`/`iovec` arrays live in the queue and are refilled per call.
//!
//! About 640 lines of code, the rest tests against real veths: one file
//! because opening the AF_PACKET socket, joining its fanout group with the
//! steering program and the batched calls share one socket's setup, and its
//! tests check them together.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use super::steer::{fanout_program, Steering};
use super::{check_ifname, IFNAMSIZ};

/// Most messages one [`PacketQueue::recv_batch`] or
/// [`PacketQueue::send_batch`] call moves (the worker's batch size).
pub const MAX_BATCH: usize = 32;

/// Receive and send buffer size requested for every socket: a few
/// milliseconds of 10 Gbit/s, or about 60 GSO super-frames.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Most members of one fanout group (the kernel's default
/// `max_num_members`, `PACKET_FANOUT_MAX`).
pub const MAX_FANOUT: usize = 256;

/// The interface a socket binds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iface<'a> {
    /// By name, looked up in the calling thread's network namespace.
    Name(&'a str),
    /// By index.
    Index(u32),
}

impl<'a> From<&'a str> for Iface<'a> {
    fn from(name: &'a str) -> Self {
        Iface::Name(name)
    }
}

impl From<u32> for Iface<'_> {
    fn from(index: u32) -> Self {
        Iface::Index(index)
    }
}

/// Errors from opening and configuring packet sockets.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The interface name is empty, too long or has a forbidden character.
    #[error("invalid interface name {0:?}: 1 to 15 bytes, no '/', ':' or whitespace")]
    InvalidName(String),
    /// No interface of that name in this network namespace.
    #[error("no interface named {name:?}")]
    NoSuchInterface {
        name: String,
        #[source]
        source: io::Error,
    },
    /// Index 0 is "any interface" to the kernel, never an uplink.
    #[error("interface index 0 names no interface")]
    ZeroIndex,
    /// A fanout group needs 1 to [`MAX_FANOUT`] sockets.
    #[error("a fanout group needs 1 to {max} sockets, not {0}", max = MAX_FANOUT)]
    FanoutSize(usize),
    /// Creating the socket failed.
    #[error("open an AF_PACKET socket")]
    Socket(#[source] io::Error),
    /// A socket option was refused.
    #[error("set {option} on the AF_PACKET socket")]
    SetOption {
        option: &'static str,
        #[source]
        source: io::Error,
    },
    /// Binding to the interface failed.
    #[error("bind the AF_PACKET socket to interface {ifindex}")]
    Bind {
        ifindex: u32,
        #[source]
        source: io::Error,
    },
    /// Joining the fanout group failed (an existing group with this id has
    /// another type, flags or interface, or is full).
    #[error("join fanout group {group} on interface {ifindex}")]
    JoinFanout {
        group: u16,
        ifindex: u32,
        #[source]
        source: io::Error,
    },
    /// Reading back the id the kernel chose for a new group failed.
    #[error("read the id of the new fanout group")]
    FanoutId(#[source] io::Error),
    /// A descriptor handed over is not an AF_PACKET socket bound to an
    /// interface and in a fanout group ([`from_fds`]).
    #[error("descriptor {index} handed over is not a bound AF_PACKET socket in a fanout group")]
    NotAFanoutSocket {
        index: usize,
        #[source]
        source: io::Error,
    },
    /// The kernel refused the steering program.
    #[error("attach the steering program to fanout group {group}")]
    FanoutProgram {
        group: u16,
        #[source]
        source: io::Error,
    },
}

/// How the kernel classified a received frame (`sll_pkttype`,
/// `<linux/if_packet.h>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PacketType {
    /// Addressed to the interface's MAC address.
    #[default]
    Host,
    Broadcast,
    Multicast,
    /// Addressed to another host's MAC address (promiscuous mode, or a
    /// macvlan parent seeing its siblings' traffic).
    OtherHost,
    /// A copy of a frame sent on the interface.
    Outgoing,
    /// A multicast frame sent on the interface and looped back.
    Loopback,
    Other(u8),
}

impl From<u8> for PacketType {
    fn from(v: u8) -> Self {
        match v {
            libc::PACKET_HOST => PacketType::Host,
            libc::PACKET_BROADCAST => PacketType::Broadcast,
            libc::PACKET_MULTICAST => PacketType::Multicast,
            libc::PACKET_OTHERHOST => PacketType::OtherHost,
            libc::PACKET_OUTGOING => PacketType::Outgoing,
            libc::PACKET_LOOPBACK => PacketType::Loopback,
            other => PacketType::Other(other),
        }
    }
}

/// What one received message holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecvMeta {
    /// Bytes written to the buffer: the virtio-net header and the frame (or
    /// as much of it as fitted, see `truncated`).
    pub len: usize,
    pub pkttype: PacketType,
    /// The frame was longer than the buffer (`MSG_TRUNC`); the rest is lost.
    pub truncated: bool,
}

/// Why a received message is not a frame for the dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RxReject {
    /// The buffer was too small and the frame was cut.
    #[error("frame longer than the receive buffer")]
    Truncated,
    /// Addressed to another host's MAC address.
    #[error("frame for another host")]
    OtherHost,
    /// A copy of a frame sent on the interface (`PACKET_OUTGOING` or
    /// `PACKET_LOOPBACK`).
    #[error("copy of an outgoing frame")]
    Outgoing,
    /// A packet type the kernel does not use for received frames.
    #[error("unknown packet type")]
    UnknownType,
}

impl RecvMeta {
    /// The length of `[virtio-net header | frame]` if the frame is whole
    /// and addressed to this host (unicast to the interface's MAC,
    /// broadcast or multicast), otherwise why not.
    #[inline]
    pub fn accept(&self) -> Result<usize, RxReject> {
        if self.truncated {
            return Err(RxReject::Truncated);
        }
        match self.pkttype {
            PacketType::Host | PacketType::Broadcast | PacketType::Multicast => Ok(self.len),
            PacketType::OtherHost => Err(RxReject::OtherHost),
            PacketType::Outgoing | PacketType::Loopback => Err(RxReject::Outgoing),
            PacketType::Other(_) => Err(RxReject::UnknownType),
        }
    }
}

/// Per-call scratch for `recvmmsg`/`sendmmsg`, allocated once per queue.
struct Scratch {
    hdrs: [libc::mmsghdr; MAX_BATCH],
    iovs: [libc::iovec; MAX_BATCH],
    addrs: [libc::sockaddr_ll; MAX_BATCH],
}

// SAFETY: the raw pointers inside `hdrs` and `iovs` are scratch values. Every
// batch call (which takes `&mut PacketQueue`) rewrites them from borrows it
// holds for the duration of the call before the kernel reads them, and no
// code dereferences them outside such a call, so moving the queue to another
// thread or sharing `&PacketQueue` (which cannot reach `Scratch`) cannot
// create aliased access.
unsafe impl Send for Scratch {}
// SAFETY: see `Send` above; `&Scratch` gives access to nothing.
unsafe impl Sync for Scratch {}

impl Scratch {
    fn new() -> Box<Scratch> {
        // SAFETY: mmsghdr, iovec and sockaddr_ll are plain C structs of
        // integers and raw pointers, for which all-zero bytes (null
        // pointers, zero lengths) are valid values.
        Box::new(unsafe { std::mem::zeroed() })
    }
}

/// One AF_PACKET socket bound to one interface, owned by one worker.
pub struct PacketQueue {
    fd: OwnedFd,
    ifindex: u32,
    fanout: Option<u16>,
    scratch: Box<Scratch>,
}

impl std::fmt::Debug for PacketQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketQueue")
            .field("fd", &self.fd)
            .field("ifindex", &self.ifindex)
            .field("fanout", &self.fanout)
            .finish_non_exhaustive()
    }
}

/// Look an interface name up in the calling thread's network namespace.
pub fn interface_index(name: &str) -> Result<u32, PacketError> {
    check_ifname(name).map_err(|_| PacketError::InvalidName(name.to_string()))?;
    let mut cname = [0u8; IFNAMSIZ];
    cname[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: cname is NUL-terminated: the name is at most IFNAMSIZ - 1
    // bytes and has no NUL (check_ifname).
    let index = unsafe { libc::if_nametoindex(cname.as_ptr().cast()) };
    if index == 0 {
        return Err(PacketError::NoSuchInterface { name: name.to_string(), source: io::Error::last_os_error() });
    }
    Ok(index)
}

fn resolve(iface: Iface) -> Result<u32, PacketError> {
    match iface {
        Iface::Index(0) => Err(PacketError::ZeroIndex),
        Iface::Index(i) => Ok(i),
        Iface::Name(name) => interface_index(name),
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
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

fn set_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    option: &'static str,
    v: libc::c_int,
) -> Result<(), PacketError> {
    setsockopt(fd, level, name, &v).map_err(|source| PacketError::SetOption { option, source })
}

/// Raise a socket buffer to [`SOCKET_BUFFER`]: the `FORCE` variant ignores
/// `net.core.{r,w}mem_max` but needs CAP_NET_ADMIN; without it the plain
/// option gets what the sysctl allows.
fn set_buffer(fd: &OwnedFd, force: libc::c_int, plain: libc::c_int, option: &'static str) -> Result<(), PacketError> {
    let size = SOCKET_BUFFER as libc::c_int;
    match setsockopt(fd, libc::SOL_SOCKET, force, &size) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => set_int(fd, libc::SOL_SOCKET, plain, option, size),
        Err(source) => Err(PacketError::SetOption { option, source }),
    }
}

fn attach_filter(fd: &OwnedFd, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr().cast_mut() };
    // The kernel copies the program during the call; prog outlives it.
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// Open a non-blocking, close-on-exec packet socket with the virtio-net
/// header on, outgoing copies off and large buffers. It receives nothing
/// until it is bound: protocol 0 registers no hook, so no frame from another
/// interface slips in between `socket` and `bind`.
fn open_socket() -> Result<OwnedFd, PacketError> {
    // SAFETY: plain socket creation; no pointers involved.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(PacketError::Socket(io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by socket and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int(&fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, "PACKET_VNET_HDR", 1)?;
    set_int(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, "PACKET_IGNORE_OUTGOING", 1)?;
    set_buffer(&fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "SO_RCVBUF")?;
    set_buffer(&fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "SO_SNDBUF")?;
    Ok(fd)
}

fn bind(fd: &OwnedFd, ifindex: u32) -> Result<(), PacketError> {
    let err = |source| PacketError::Bind { ifindex, source };
    let index = libc::c_int::try_from(ifindex).map_err(|_| err(io::Error::from_raw_os_error(libc::ENODEV)))?;
    // SAFETY: sockaddr_ll is a plain C struct; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = index;
    // SAFETY: fd is an open socket; addr is a valid sockaddr_ll of the
    // length passed, read by the kernel during the call only.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// A filter that drops every frame: keeps a socket's queue empty until its
/// place in the fanout group is settled.
const DROP_ALL: [libc::sock_filter; 1] =
    [libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 }];

impl PacketQueue {
    /// A single socket on `iface` receiving every frame of the interface
    /// (no fanout).
    pub fn open<'a>(iface: impl Into<Iface<'a>>) -> Result<PacketQueue, PacketError> {
        let ifindex = resolve(iface.into())?;
        let fd = open_socket()?;
        bind(&fd, ifindex)?;
        Ok(PacketQueue { fd, ifindex, fanout: None, scratch: Scratch::new() })
    }

    /// Index of the interface the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Id of the fanout group the socket belongs to, if any.
    pub fn fanout_group(&self) -> Option<u16> {
        self.fanout
    }

    /// Read one message: the virtio-net header and the frame. Errors as
    /// for [`PacketQueue::recv_batch`].
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        // SAFETY: sockaddr_ll and msghdr are plain C structs; all-zero
        // (null pointers, zero lengths) is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut addr as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        // SAFETY: fd is open for the lifetime of self; msg points to addr
        // and iov, which point to buf; all are valid for writes of the sizes
        // given and exclusively borrowed for the duration of the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RecvMeta {
            len: n as usize,
            pkttype: PacketType::from(addr.sll_pkttype),
            truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        })
    }

    /// Write one message: a virtio-net header and the frame.
    #[inline]
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: fd is open for the lifetime of self; buf is valid for
        // reads of buf.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Read up to [`MAX_BATCH`] messages with one `recvmmsg`: message *i*
    /// goes to the *i*-th buffer of `bufs` and is described by `meta[i]`.
    /// Returns how many were read (at most `min(bufs, meta.len(),
    /// MAX_BATCH)`); `WouldBlock` when none is waiting.
    ///
    /// Any other error cost one frame (for instance `EINVAL` for a GSO type
    /// the virtio-net header cannot express); the socket stays usable, so
    /// count it and call again. An error met after the first message is
    /// returned by the next call, as `recvmmsg` does.
    #[inline]
    pub fn recv_batch<'a>(
        &mut self,
        bufs: impl IntoIterator<Item = &'a mut [u8]>,
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let Scratch { hdrs, iovs, addrs } = &mut *self.scratch;
        let mut n = 0;
        for buf in bufs.into_iter().take(meta.len().min(MAX_BATCH)) {
            iovs[n] = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let (iov, addr) = (iovs.as_mut_ptr(), addrs.as_mut_ptr());
        for (i, h) in hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_name = addr.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: fd is open for the lifetime of self. hdrs[..n] point to
        // iovs[i] and addrs[i] (live in self.scratch, exclusively borrowed),
        // and iovs[i] point to the caller's buffers, which are exclusively
        // borrowed for 'a, longer than this call. The kernel writes at most
        // iov_len bytes to each and namelen bytes to each address.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = r as usize;
        for (m, (h, a)) in meta.iter_mut().zip(hdrs.iter().zip(addrs.iter())).take(r) {
            *m = RecvMeta {
                len: h.msg_len as usize,
                pkttype: PacketType::from(a.sll_pkttype),
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
        }
        Ok(r)
    }

    /// Write up to [`MAX_BATCH`] messages (`[virtio-net header | frame]`
    /// each) with one `sendmmsg`, from the front of `frames`.
    ///
    /// `Ok(k)` means the first `k` were sent, `k >= 1` unless `frames` is
    /// empty. If `k` is less than the number offered, the next frame failed
    /// and `sendmmsg` dropped the reason: offer the rest again to get it.
    /// `Err` means the first frame was not sent: `WouldBlock` when the
    /// socket's send buffer is full (nothing is lost; retry later or drop),
    /// any other error is that frame's own (a malformed virtio-net header is
    /// `EINVAL`, a non-GSO frame above the MTU `EMSGSIZE`): drop it and go
    /// on with the next. So the worker's loop is:
    ///
    /// ```no_run
    /// # use dataplane::port::packet::PacketQueue;
    /// # use std::io;
    /// # fn transmit(q: &mut PacketQueue, frames: &[&[u8]]) {
    /// let mut i = 0;
    /// while i < frames.len() {
    ///     match q.send_batch(frames[i..].iter().copied()) {
    ///         Ok(k) => i += k,                                          // count k sent
    ///         Err(e) if e.kind() == io::ErrorKind::WouldBlock => break, // the rest waits or drops
    ///         Err(_) => i += 1,                                         // count one tx error
    ///     }
    /// }
    /// # }
    /// ```
    #[inline]
    pub fn send_batch<'a>(&mut self, frames: impl IntoIterator<Item = &'a [u8]>) -> io::Result<usize> {
        let Scratch { hdrs, iovs, .. } = &mut *self.scratch;
        let mut n = 0;
        for frame in frames.into_iter().take(MAX_BATCH) {
            // The kernel only reads through iov_base when sending.
            iovs[n] = libc::iovec { iov_base: frame.as_ptr().cast_mut().cast(), iov_len: frame.len() };
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let iov = iovs.as_mut_ptr();
        for (i, h) in hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_name = ptr::null_mut();
            h.msg_hdr.msg_namelen = 0;
            h.msg_hdr.msg_iov = iov.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: fd is open for the lifetime of self. hdrs[..n] point to
        // iovs[i] (live in self.scratch, exclusively borrowed), which point
        // to the caller's frames, borrowed for 'a, longer than this call;
        // the kernel only reads them (and writes msg_len in hdrs).
        let r =
            unsafe { libc::sendmmsg(self.fd.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }
}

impl AsRawFd for PacketQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for PacketQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Open `n` sockets on `iface` and join them, in order, in one
/// `PACKET_FANOUT_CBPF` group steered by [`fanout_program`]: `queues[i]`
/// receives the frames whose [`super::steer::uplink_hash`] for `steering`
/// is `i` modulo `n`.
///
/// `group` is the fanout group id, unique per network namespace. `None`
/// lets the kernel choose an unused one (`PACKET_FANOUT_FLAG_UNIQUEID`),
/// read it back with [`PacketQueue::fanout_group`]. With `Some(id)`, an
/// existing group with the same id, type and interface would be joined
/// silently and its members would share the traffic, so the caller must own
/// that id.
///
/// Until every socket has joined and the program is attached, each socket
/// carries a drop-all filter, so no frame is queued on the wrong socket
/// while the group fills up (frames arriving during setup are dropped).
pub fn open_fanout<'a>(
    iface: impl Into<Iface<'a>>,
    n: usize,
    group: Option<u16>,
    steering: &Steering,
) -> Result<Vec<PacketQueue>, PacketError> {
    if n == 0 || n > MAX_FANOUT {
        return Err(PacketError::FanoutSize(n));
    }
    let ifindex = resolve(iface.into())?;
    let type_flags = libc::PACKET_FANOUT_CBPF | libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
    let mut id = group.unwrap_or(0);
    let mut queues: Vec<PacketQueue> = Vec::with_capacity(n);
    for i in 0..n {
        let fd = open_socket()?;
        attach_filter(&fd, &DROP_ALL)
            .map_err(|source| PacketError::SetOption { option: "SO_ATTACH_FILTER", source })?;
        bind(&fd, ifindex)?;
        let unique = i == 0 && group.is_none();
        let flags = if unique { type_flags | libc::PACKET_FANOUT_FLAG_UNIQUEID } else { type_flags };
        let arg = (u32::from(id) | flags << 16) as libc::c_int;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg).map_err(|source| PacketError::JoinFanout {
            group: id,
            ifindex,
            source,
        })?;
        if unique {
            id = fanout_id(&fd).map_err(PacketError::FanoutId)?;
        }
        queues.push(PacketQueue { fd, ifindex, fanout: Some(id), scratch: Scratch::new() });
    }
    let prog = fanout_program(steering);
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr().cast_mut() };
    // The program is the group's: attaching it through any member will do.
    setsockopt(&queues[0].fd, libc::SOL_PACKET, libc::PACKET_FANOUT_DATA, &fprog)
        .map_err(|source| PacketError::FanoutProgram { group: id, source })?;
    for q in &queues {
        set_int(&q.fd, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, "SO_DETACH_FILTER", 0)?;
    }
    Ok(queues)
}

/// The queues of a fanout group opened by [`open_fanout`], from
/// duplicates of its sockets (handed over by another process, in the same
/// order): the fanout membership, the steering program and the binding
/// belong to the sockets, so `queues[i]` receives what the original
/// `queues[i]` did, and each frame goes to one of the two while both are
/// open. Off the hot path: two system calls per socket.
pub fn from_fds(fds: Vec<OwnedFd>) -> Result<Vec<PacketQueue>, PacketError> {
    if fds.is_empty() || fds.len() > MAX_FANOUT {
        return Err(PacketError::FanoutSize(fds.len()));
    }
    let mut queues = Vec::with_capacity(fds.len());
    for (index, fd) in fds.into_iter().enumerate() {
        let bad = |source| PacketError::NotAFanoutSocket { index, source };
        // SAFETY: sockaddr_ll is a plain C struct; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: fd is open; addr and len are valid for writes of the
        // sizes given for the duration of the call.
        let rc = unsafe { libc::getsockname(fd.as_raw_fd(), (&mut addr as *mut libc::sockaddr_ll).cast(), &mut len) };
        if rc < 0 {
            return Err(bad(io::Error::last_os_error()));
        }
        if addr.sll_family != libc::AF_PACKET as libc::c_ushort || addr.sll_ifindex <= 0 {
            return Err(bad(io::Error::from_raw_os_error(libc::ENOTSOCK)));
        }
        let id = fanout_id(&fd).map_err(bad)?;
        queues.push(PacketQueue { fd, ifindex: addr.sll_ifindex as u32, fanout: Some(id), scratch: Scratch::new() });
    }
    Ok(queues)
}

/// The id of the fanout group `fd` belongs to (`getsockopt(PACKET_FANOUT)`
/// returns `id | type << 16 | flags << 24`).
fn fanout_id(fd: &OwnedFd) -> io::Result<u16> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: fd is an open socket; v and len are valid for writes of the
    // sizes given for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::steer::tests::{MAC_A, MAC_B};
    use crate::port::steer::{self, uplink_hash, worker_for, Steering};
    use crate::wire::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4};
    use crate::wire::{checksum, IpProtocol, VNET_HDR_LEN};
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
    use std::process::Command;
    use std::time::{Duration, Instant};

    // The veth pair every privileged test builds in its own namespace. The
    // dataplane's end is "up"; frames from `steer`'s test cases are
    // addressed to MAC_B, so that is its MAC.
    const UP: &str = "tnup";
    const PEER: &str = "tnpeer";
    const MAC_UP: [u8; 6] = MAC_B;
    const MAC_PEER: [u8; 6] = MAC_A;
    /// The address the dataplane owns on the uplink (in userspace: the
    /// namespace's stack does not have it).
    const IP_UP: [u8; 4] = [10, 77, 0, 1];
    const IP_PEER: [u8; 4] = [10, 77, 0, 2];
    const WAIT: Duration = Duration::from_secs(5);

    fn ip(args: &str) {
        let out = Command::new("ip").args(args.split_whitespace()).output().expect("run ip");
        assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn mac(m: [u8; 6]) -> String {
        m.map(|b| format!("{b:02x}")).join(":")
    }

    struct Veth {
        up: u32,
        peer: u32,
    }

    /// Run `f` on a thread with a private network namespace holding a veth
    /// pair `tnup` (MAC_UP) <-> `tnpeer` (MAC_PEER), both up, IPv6 off so
    /// no neighbour discovery frame shows up uninvited. Nothing is visible
    /// outside, and everything goes when the thread ends, even on a panic.
    fn with_veth<R: Send + 'static>(f: impl FnOnce(Veth) -> R + Send + 'static) -> R {
        let t = std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) only changes this thread's
            // namespace; the thread ends when f returns.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
            // /proc/sys/net resolves to the opening thread's namespace.
            std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1").unwrap();
            ip(&format!("link add {UP} address {} type veth peer name {PEER} address {}", mac(MAC_UP), mac(MAC_PEER)));
            ip(&format!("link set {UP} up"));
            ip(&format!("link set {PEER} up"));
            let v = Veth { up: interface_index(UP).unwrap(), peer: interface_index(PEER).unwrap() };
            wait_until_frames_cross(&v);
            f(v)
        });
        t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// A link that is up may not carry frames yet: the qdisc is attached by
    /// the link watch work a moment later, and until then frames are
    /// silently dropped. Probe both ways until a frame gets through.
    fn wait_until_frames_cross(v: &Veth) {
        let (up, peer) = (Raw::open(v.up), Raw::open(v.peer));
        let mut probe = [0u8; 60];
        probe[..6].copy_from_slice(&[0xff; 6]);
        probe[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental EtherType
        for (from, to) in [(&up, &peer), (&peer, &up)] {
            let deadline = Instant::now() + WAIT;
            loop {
                from.send(&probe);
                if to.recv(Duration::from_millis(20)).is_some() {
                    break;
                }
                assert!(Instant::now() < deadline, "the veth pair never carried a frame");
            }
            to.drain(Duration::from_millis(20));
        }
    }

    /// Give the peer its address, and a permanent neighbour entry for the
    /// dataplane's address so its stack never ARPs.
    fn peer_stack() {
        ip(&format!("addr add {}/24 dev {PEER}", Ipv4Addr::from(IP_PEER)));
        ip(&format!("neigh replace {} lladdr {} dev {PEER} nud permanent", Ipv4Addr::from(IP_UP), mac(MAC_UP)));
    }

    fn readable(fds: &[RawFd], timeout: Duration) -> Vec<bool> {
        let mut p: Vec<libc::pollfd> =
            fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
        // SAFETY: p is a valid array of p.len() pollfds for the call.
        let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout.as_millis() as libc::c_int) };
        assert!(n >= 0, "poll: {}", io::Error::last_os_error());
        p.iter().map(|p| p.revents & libc::POLLIN != 0).collect()
    }

    /// A plain AF_PACKET socket without virtio-net header, so the tests
    /// check the queue against something that is not itself.
    struct Raw(OwnedFd);

    impl Raw {
        fn open(ifindex: u32) -> Raw {
            // SAFETY: plain socket creation.
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0, "{}", io::Error::last_os_error());
            // SAFETY: fd was just returned by socket and is owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1).unwrap();
            bind(&fd, ifindex).unwrap();
            Raw(fd)
        }
        fn send(&self, frame: &[u8]) {
            // SAFETY: fd is open; frame is valid for reads of its length.
            let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
        }
        fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
            let deadline = Instant::now() + timeout;
            let mut buf = vec![0u8; 70_000];
            loop {
                // SAFETY: fd is open; buf is valid for writes of its length.
                let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n >= 0 {
                    buf.truncate(n as usize);
                    return Some(buf);
                }
                let now = Instant::now();
                if now >= deadline {
                    return None;
                }
                readable(&[self.0.as_raw_fd()], deadline - now);
            }
        }
        /// Everything that arrives until the line is quiet for `quiet`.
        fn drain(&self, quiet: Duration) -> Vec<Vec<u8>> {
            std::iter::from_fn(|| self.recv(quiet)).collect()
        }
        /// `n` frames (waiting up to WAIT for them), then whatever else
        /// arrives until the line is quiet, so extra frames show.
        fn recv_n(&self, n: usize) -> Vec<Vec<u8>> {
            let deadline = Instant::now() + WAIT;
            let mut got = Vec::new();
            while got.len() < n {
                match self.recv(deadline.saturating_duration_since(Instant::now())) {
                    Some(f) => got.push(f),
                    None => break,
                }
            }
            got.extend(self.drain(Duration::from_millis(100)));
            got
        }
    }

    /// Wait up to `timeout` for one message on `q`.
    fn recv_wait(q: &PacketQueue, buf: &mut [u8], timeout: Duration) -> Option<RecvMeta> {
        let deadline = Instant::now() + timeout;
        loop {
            match q.recv(buf) {
                Ok(m) => return Some(m),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv: {e}"),
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            readable(&[q.as_raw_fd()], deadline - now);
        }
    }

    fn udp(dst_mac: [u8; 6], sport: u16, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_PEER, dst_mac).ipv4([192, 0, 2, 1], IP_UP, 64).udp(sport, 4789);
        let mut v = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut v, payload).unwrap();
        v
    }

    fn with_vnet(hdr: [u8; VNET_HDR_LEN], frame: &[u8]) -> Vec<u8> {
        [&hdr[..], frame].concat()
    }

    #[test]
    fn names_and_sizes_checked_before_any_socket() {
        assert!(matches!(PacketQueue::open("abcdefghijklmnop"), Err(PacketError::InvalidName(_))));
        assert!(matches!(PacketQueue::open("a b"), Err(PacketError::InvalidName(_))));
        assert!(matches!(PacketQueue::open(""), Err(PacketError::InvalidName(_))));
        assert!(matches!(PacketQueue::open(0u32), Err(PacketError::ZeroIndex)));
        assert!(matches!(open_fanout("lo", 0, None, &steer::tests::steering()), Err(PacketError::FanoutSize(0))));
        assert!(matches!(
            open_fanout("lo", MAX_FANOUT + 1, None, &steer::tests::steering()),
            Err(PacketError::FanoutSize(257))
        ));
        assert!(matches!(interface_index("tn-none-such"), Err(PacketError::NoSuchInterface { .. })));
        // The loopback device is index 1 in every namespace.
        assert_eq!(interface_index("lo").unwrap(), 1);
        assert_eq!(Iface::from("lo"), Iface::Name("lo"));
        assert_eq!(Iface::from(7u32), Iface::Index(7));
    }

    #[test]
    fn handed_descriptors_must_be_packet_sockets() {
        assert!(matches!(from_fds(Vec::new()), Err(PacketError::FanoutSize(0))));
        let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        assert!(matches!(from_fds(vec![null]), Err(PacketError::NotAFanoutSocket { index: 0, .. })));
        let udp = OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap());
        assert!(matches!(from_fds(vec![udp]), Err(PacketError::NotAFanoutSocket { index: 0, .. })));
    }

    #[test]
    fn packet_types_and_accept() {
        let kinds: Vec<PacketType> = (0..=7u8).map(PacketType::from).collect();
        use PacketType::*;
        assert_eq!(kinds, [Host, Broadcast, Multicast, OtherHost, Outgoing, Loopback, Other(6), Other(7)]);
        let meta = |pkttype, truncated| RecvMeta { len: 60, pkttype, truncated };
        assert_eq!(meta(Host, false).accept(), Ok(60));
        assert_eq!(meta(Broadcast, false).accept(), Ok(60));
        assert_eq!(meta(Multicast, false).accept(), Ok(60));
        assert_eq!(meta(Host, true).accept(), Err(RxReject::Truncated));
        assert_eq!(meta(OtherHost, false).accept(), Err(RxReject::OtherHost));
        assert_eq!(meta(Outgoing, false).accept(), Err(RxReject::Outgoing));
        assert_eq!(meta(Loopback, false).accept(), Err(RxReject::Outgoing));
        assert_eq!(meta(Other(9), false).accept(), Err(RxReject::UnknownType));
        assert_eq!(RecvMeta::default(), RecvMeta { len: 0, pkttype: Host, truncated: false });
    }

    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace"]
    fn receives_frames_with_vnet_header_and_packet_type() {
        with_veth(|v| {
            let q = PacketQueue::open(UP).unwrap();
            assert_eq!((q.ifindex(), q.fanout_group()), (v.up, None));
            // As root the buffers get SOCKET_BUFFER whatever rmem_max says
            // (the kernel reports the doubled size it books).
            for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
                let mut size: libc::c_int = 0;
                let mut len = size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: q's fd is open; size and len are valid for writes.
                let rc = unsafe {
                    libc::getsockopt(
                        q.as_raw_fd(),
                        libc::SOL_SOCKET,
                        opt,
                        (&mut size as *mut libc::c_int).cast(),
                        &mut len,
                    )
                };
                assert_eq!((rc, size as usize), (0, 2 * SOCKET_BUFFER));
            }
            let peer = Raw::open(v.peer);
            let mut buf = vec![0u8; 70_000];
            assert_eq!(q.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
            let cases = [
                (udp(MAC_UP, 1, b"unicast"), PacketType::Host),
                (udp([0xff; 6], 2, b"broadcast"), PacketType::Broadcast),
                (udp([0x01, 0x00, 0x5e, 0, 0, 1], 3, b"multicast"), PacketType::Multicast),
                (udp([0x02, 0, 0, 0, 0, 0x0c], 4, b"someone else"), PacketType::OtherHost),
                (udp(MAC_UP, 5, &[0x33; 1472]), PacketType::Host),
            ];
            for (frame, pkttype) in &cases {
                peer.send(frame);
                let m = recv_wait(&q, &mut buf, WAIT).expect("frame arrives");
                assert_eq!(m, RecvMeta { len: VNET_HDR_LEN + frame.len(), pkttype: *pkttype, truncated: false });
                // A frame a raw socket sent: no offload, no checksum state.
                assert_eq!(buf[..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
                assert_eq!(&buf[VNET_HDR_LEN..m.len], &frame[..]);
            }
            // A buffer too small: cut, reported, and the next frame is whole.
            peer.send(&cases[0].0);
            peer.send(&cases[1].0);
            let m = recv_wait(&q, &mut buf[..30], WAIT).unwrap();
            assert_eq!(m, RecvMeta { len: 30, pkttype: PacketType::Host, truncated: true });
            assert_eq!(m.accept(), Err(RxReject::Truncated));
            assert_eq!(&buf[VNET_HDR_LEN..30], &cases[0].0[..20]);
            let m = recv_wait(&q, &mut buf, WAIT).unwrap();
            assert_eq!(m.accept(), Ok(VNET_HDR_LEN + cases[1].0.len()));
            assert_eq!(q.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        });
    }

    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace"]
    fn sends_frames_to_the_peer() {
        with_veth(|v| {
            let q = PacketQueue::open(Iface::Index(v.up)).unwrap();
            let peer = Raw::open(v.peer);
            let frame = udp(MAC_PEER, 7, b"from the dataplane");
            assert_eq!(q.send(&with_vnet([0; VNET_HDR_LEN], &frame)).unwrap(), VNET_HDR_LEN + frame.len());
            assert_eq!(peer.recv(WAIT).unwrap(), frame);
            // Shorter than the virtio-net header, or a malformed header.
            assert_eq!(q.send(&[0; 5]).unwrap_err().raw_os_error(), Some(libc::EINVAL));
            let mut bad = [0u8; VNET_HDR_LEN];
            bad[1] = 0x7f; // unknown gso_type
            assert_eq!(q.send(&with_vnet(bad, &frame)).unwrap_err().raw_os_error(), Some(libc::EINVAL));
            // Above the MTU without GSO.
            let big = udp(MAC_PEER, 8, &[0; 3000]);
            assert_eq!(q.send(&with_vnet([0; VNET_HDR_LEN], &big)).unwrap_err().raw_os_error(), Some(libc::EMSGSIZE));
            assert_eq!(peer.drain(Duration::from_millis(200)).len(), 0, "nothing but the first frame went out");
        });
    }

    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace"]
    fn batches_of_32_both_ways() {
        with_veth(|v| {
            let mut q = PacketQueue::open(UP).unwrap();
            let peer = Raw::open(v.peer);
            let frames: Vec<Vec<u8>> = (0..MAX_BATCH as u16)
                .map(|i| udp(MAC_UP, 1000 + i, &vec![i as u8; 20 + 40 * usize::from(i)]))
                .collect();
            for f in &frames {
                peer.send(f);
            }
            // More buffers than MAX_BATCH: one call never takes more.
            let mut bufs = vec![vec![0u8; 2048]; MAX_BATCH + 8];
            let mut meta = [RecvMeta::default(); MAX_BATCH + 8];
            let mut got = Vec::new();
            let deadline = Instant::now() + WAIT;
            while got.len() < frames.len() && Instant::now() < deadline {
                match q.recv_batch(bufs.iter_mut().map(|b| &mut b[..]), &mut meta) {
                    Ok(n) => {
                        assert!((1..=MAX_BATCH).contains(&n));
                        for (b, m) in bufs.iter().zip(&meta).take(n) {
                            assert_eq!(m.pkttype, PacketType::Host);
                            assert_eq!(b[..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
                            got.push(b[VNET_HDR_LEN..m.accept().unwrap()].to_vec());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        readable(&[q.as_raw_fd()], Duration::from_millis(100));
                    }
                    Err(e) => panic!("recv_batch: {e}"),
                }
            }
            assert_eq!(got, frames, "all 32, in order");
            assert_eq!(
                q.recv_batch(bufs.iter_mut().map(|b| &mut b[..]), &mut meta).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            // No buffers, or no room for metadata: nothing to do.
            assert_eq!(q.recv_batch(std::iter::empty(), &mut meta).unwrap(), 0);
            assert_eq!(q.recv_batch(bufs.iter_mut().map(|b| &mut b[..]), &mut []).unwrap(), 0);

            // Send 40: the first call takes 32, the second the other 8.
            let out: Vec<Vec<u8>> = (0..MAX_BATCH as u16 + 8)
                .map(|i| {
                    with_vnet([0; VNET_HDR_LEN], &udp(MAC_PEER, 2000 + i, &vec![i as u8; 30 + 30 * usize::from(i)]))
                })
                .collect();
            assert_eq!(q.send_batch(out.iter().map(|f| &f[..])).unwrap(), MAX_BATCH);
            assert_eq!(q.send_batch(out[MAX_BATCH..].iter().map(|f| &f[..])).unwrap(), 8);
            assert_eq!(q.send_batch(std::iter::empty()).unwrap(), 0);
            let seen = peer.recv_n(out.len());
            let want: Vec<&[u8]> = out.iter().map(|f| &f[VNET_HDR_LEN..]).collect();
            assert_eq!(seen, want);
        });
    }

    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace"]
    fn send_batch_partial_sends_keep_track() {
        with_veth(|v| {
            let mut q = PacketQueue::open(UP).unwrap();
            let peer = Raw::open(v.peer);
            let mut bad = [0u8; VNET_HDR_LEN];
            bad[1] = 0x7f;
            let mut frames: Vec<Vec<u8>> =
                (0..10u16).map(|i| with_vnet([0; VNET_HDR_LEN], &udp(MAC_PEER, i, b"ok"))).collect();
            frames[5] = with_vnet(bad, &udp(MAC_PEER, 5, b"bad header"));
            frames[8] = with_vnet([0; VNET_HDR_LEN], &udp(MAC_PEER, 8, &[0; 3000]));
            // The worker's loop from the send_batch docs.
            let (mut i, mut sent, mut failed) = (0, Vec::new(), Vec::new());
            let mut calls = Vec::new();
            while i < frames.len() {
                match q.send_batch(frames[i..].iter().map(|f| &f[..])) {
                    Ok(k) => {
                        calls.push(Ok(k));
                        sent.extend(i..i + k);
                        i += k;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => panic!("send buffer full"),
                    Err(e) => {
                        calls.push(Err(e.raw_os_error().unwrap()));
                        failed.push(i);
                        i += 1;
                    }
                }
            }
            assert_eq!(calls, [Ok(5), Err(libc::EINVAL), Ok(2), Err(libc::EMSGSIZE), Ok(1)]);
            assert_eq!(failed, [5, 8]);
            let seen = peer.recv_n(sent.len());
            let want: Vec<&[u8]> = sent.iter().map(|&i| &frames[i][VNET_HDR_LEN..]).collect();
            assert_eq!(seen, want);
        });
    }

    #[test]
    #[ignore = "needs root: creates a veth pair and a tbf qdisc in a private network namespace"]
    fn send_batch_stops_at_a_full_send_buffer() {
        with_veth(|_| {
            // A qdisc that holds frames back keeps them charged to the
            // socket's send buffer, which we shrink to the kernel minimum.
            let out = Command::new("tc")
                .args(["qdisc", "add", "dev", UP, "root", "tbf", "rate", "8kbit", "burst", "1600", "latency", "60s"])
                .output()
                .unwrap();
            assert!(out.status.success(), "tc: {}", String::from_utf8_lossy(&out.stderr));
            let mut q = PacketQueue::open(UP).unwrap();
            set_int(&q.fd, libc::SOL_SOCKET, libc::SO_SNDBUF, "SO_SNDBUF", 0).unwrap();
            let frames: Vec<Vec<u8>> =
                (0..MAX_BATCH as u16).map(|i| with_vnet([0; VNET_HDR_LEN], &udp(MAC_PEER, i, &[0; 1000]))).collect();
            let k = q.send_batch(frames.iter().map(|f| &f[..])).unwrap();
            assert!((1..MAX_BATCH).contains(&k), "{k} sent");
            let e = q.send_batch(frames[k..].iter().map(|f| &f[..])).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        });
    }

    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace"]
    fn ignore_outgoing() {
        with_veth(|v| {
            // The namespace's own stack sends on "up" too.
            ip(&format!("addr add 10.77.1.1/24 dev {UP}"));
            ip(&format!("neigh replace 10.77.1.2 lladdr {} dev {UP} nud permanent", mac(MAC_PEER)));
            let q = PacketQueue::open(UP).unwrap();
            let mut group = open_fanout(UP, 2, None, &steer::tests::steering()).unwrap();
            // Control: a group joined without PACKET_FANOUT_FLAG_IGNORE_OUTGOING
            // (its member still sets PACKET_IGNORE_OUTGOING on itself).
            let control = open_socket().unwrap();
            bind(&control, v.up).unwrap();
            let arg = (libc::PACKET_FANOUT_CBPF | libc::PACKET_FANOUT_FLAG_UNIQUEID) << 16;
            setsockopt(&control, libc::SOL_PACKET, libc::PACKET_FANOUT, &(arg as libc::c_int)).unwrap();
            let control = PacketQueue { fd: control, ifindex: v.up, fanout: None, scratch: Scratch::new() };
            let peer = Raw::open(v.peer);

            UdpSocket::bind("10.77.1.1:0").unwrap().send_to(b"from the stack", "10.77.1.2:9").unwrap();
            q.send(&with_vnet([0; VNET_HDR_LEN], &udp(MAC_PEER, 1, b"from q"))).unwrap();
            group[1].send(&with_vnet([0; VNET_HDR_LEN], &udp(MAC_PEER, 2, b"from a member"))).unwrap();
            let frames = [with_vnet([0; VNET_HDR_LEN], &udp(MAC_PEER, 3, b"batch"))];
            assert_eq!(group[0].send_batch(frames.iter().map(|f| &f[..])).unwrap(), 1);
            Raw::open(v.up).send(&udp(MAC_PEER, 4, b"from another socket"));

            assert_eq!(peer.recv_n(5).len(), 5, "all five went out");
            let mut buf = vec![0u8; 2048];
            assert!(readable(&[q.as_raw_fd(), group[0].as_raw_fd(), group[1].as_raw_fd()], Duration::from_millis(200))
                .iter()
                .all(|r| !r));
            for s in [&q, &group[0], &group[1]] {
                assert_eq!(s.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
            }
            // Without the group flag the hook gets copies of everything that
            // the group's own members did not send.
            let mut copies = 0;
            while let Some(m) = recv_wait(&control, &mut buf, Duration::from_millis(200)) {
                assert_eq!(m.pkttype, PacketType::Outgoing);
                copies += 1;
            }
            assert_eq!(copies, 5);
        });
    }

    /// Frames for the fanout test, from `steer`'s cases (whole Ethernet
    /// headers only) plus TCP and UDP from many ports so every member gets
    /// some.
    fn steering_frames() -> Vec<Vec<u8>> {
        let mut frames: Vec<Vec<u8>> =
            steer::tests::cases().into_iter().map(|(_, f, _)| f).filter(|f| f.len() >= 14).collect();
        for i in 0..12u16 {
            frames.push(steer::tests::tcp([203, 0, 113, 7 + i as u8], [198, 51, 100, 2], 40_000 + 7 * i, 443));
            frames.push(steer::tests::udp([198, 18, 0, 1], [198, 51, 100, 2], 5000 + i, 53));
        }
        frames
    }

    fn fanout_steers_like_uplink_hash(n: usize, s: Steering) {
        with_veth(move |v| {
            peer_stack();
            let qs = open_fanout(UP, n, None, &s).unwrap();
            let group = qs[0].fanout_group().expect("a group id");
            assert!(qs.iter().all(|q| q.fanout_group() == Some(group) && q.ifindex() == v.up));
            let peer = Raw::open(v.peer);
            let mut sent = steering_frames();
            for f in &sent {
                peer.send(f);
            }
            // Jumbo frames whose headers sit in paged fragments: a packet
            // socket with a virtio-net header of hdr_len 0 puts only the
            // Ethernet header in the skb's linear part (packet_snd,
            // packet_alloc_skb), so the program's SKF_NET_OFF loads go
            // through skb_copy_bits.
            ip(&format!("link set {UP} mtu 9000"));
            ip(&format!("link set {PEER} mtu 9000"));
            let paged = PacketQueue::open(v.peer).unwrap();
            // Each with the first port that takes it to a member other
            // than 0, where a load that faulted would send it.
            let off_zero = |make: &dyn Fn(u16) -> Vec<u8>| {
                (6000..7000u16).map(make).find(|f| worker_for(uplink_hash(&s, f), n) != 0).expect("some port")
            };
            let jumbo = [
                off_zero(&|p| steer::tests::udp([203, 0, 113, 99], [198, 51, 100, 2], p, 53)),
                off_zero(&|p| steer::tests::tcp([203, 0, 113, 98], [198, 51, 100, 2], p, 443)),
                off_zero(&|p| {
                    steer::tests::icmp_error(
                        [192, 0, 2, 1],
                        [198, 51, 100, 2],
                        3,
                        4,
                        &steer::tests::udp([198, 51, 100, 2], [203, 0, 113, 97], 1, p),
                    )
                }),
            ];
            for mut f in jumbo {
                f.resize(6000, 0xee); // Ethernet padding as far as the program is concerned
                assert_ne!(worker_for(uplink_hash(&s, &f), n), 0);
                assert_eq!(paged.send(&with_vnet([0; VNET_HDR_LEN], &f)).unwrap(), VNET_HDR_LEN + f.len());
                sent.push(f);
            }
            // Frames the peer's kernel makes: we send from "up" with a raw
            // socket (copies of which the group must not see), its stack
            // answers.
            let up = Raw::open(v.up);
            let base = || PacketBuilder::ethernet2(MAC_UP, MAC_PEER).ipv4(IP_UP, IP_PEER, 64);
            let mut closed = Vec::new();
            base().udp(40_000, 9999).write(&mut closed, b"closed port").unwrap();
            up.send(&closed); // -> port unreachable
            let mut echo = Vec::new();
            base().icmpv4_echo_request(0x4242, 1).write(&mut echo, b"ping").unwrap();
            up.send(&echo); // -> echo reply
            let mut syn = Vec::new();
            base().tcp(40_001, 7, 1, 1000).syn().write(&mut syn, b"").unwrap();
            up.send(&syn); // -> RST
            let mut arp = vec![0xff; 6];
            arp.extend_from_slice(&MAC_UP);
            arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
            arp.extend_from_slice(&MAC_UP);
            arp.extend_from_slice(&IP_UP);
            arp.extend_from_slice(&[0; 6]);
            arp.extend_from_slice(&IP_PEER);
            up.send(&arp); // -> ARP reply

            let fds: Vec<RawFd> = qs.iter().map(|q| q.as_raw_fd()).collect();
            let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
            let mut buf = vec![0u8; 70_000];
            // Every frame we sent plus the stack's four replies, then
            // anything extra until the line is quiet.
            let expected = sent.len() + 4;
            let deadline = Instant::now() + WAIT;
            loop {
                let wait = if got.len() < expected && Instant::now() < deadline {
                    deadline.saturating_duration_since(Instant::now())
                } else {
                    Duration::from_millis(200)
                };
                if !readable(&fds, wait).iter().any(|&r| r) {
                    break;
                }
                for (i, q) in qs.iter().enumerate() {
                    while let Ok(m) = q.recv(&mut buf) {
                        got.push((i, buf[VNET_HDR_LEN..m.accept().unwrap()].to_vec()));
                    }
                }
            }
            for (i, f) in &got {
                assert_eq!(worker_for(uplink_hash(&s, f), n), *i, "frame on the wrong member: {f:02x?}");
            }
            // The kernel strips a VLAN tag before any packet socket sees the
            // frame (the tag is only in PACKET_AUXDATA), and the steering
            // program sees the inner packet too.
            let untag = |f: &[u8]| if f[12..14] == [0x81, 0x00] { [&f[..12], &f[16..]].concat() } else { f.to_vec() };
            let sent: Vec<Vec<u8>> = sent.iter().map(|f| untag(f)).collect();
            for f in &sent {
                assert_eq!(got.iter().filter(|(_, g)| g == f).count(), 1, "{f:02x?}");
            }
            let peer_ip = Ipv4Addr::from(IP_PEER);
            let replies: Vec<u32> =
                got.iter().filter(|(_, f)| !sent.contains(f)).map(|(_, f)| uplink_hash(&s, f)).collect();
            // Each the key of its flow's replies (the port unreachable's
            // is that of the datagram it quotes, swapped).
            let up_ip = Ipv4Addr::from(IP_UP);
            let mut want = vec![
                s.inbound(false, peer_ip, 9999, up_ip, 40_000),
                s.inbound(true, peer_ip, 0x4242, up_ip, 0x4242),
                s.inbound(false, peer_ip, 7, up_ip, 40_001),
                0,
            ];
            let mut have = replies.clone();
            want.sort_unstable();
            have.sort_unstable();
            assert_eq!(have, want, "the stack's port unreachable, echo reply, RST and ARP reply, and nothing else");
            for m in 0..n {
                assert!(got.iter().any(|(i, _)| *i == m), "member {m} got nothing: the test proves little");
            }
        });
    }

    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace"]
    fn fanout_of_2_steers_like_uplink_hash() {
        // Steered for the test frames' uplink address.
        fanout_steers_like_uplink_hash(2, steer::tests::steering());
    }

    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace"]
    fn fanout_of_3_steers_like_uplink_hash() {
        // Steered for the veth's address, which the peer's stack answers:
        // its replies take the masquerade-port rules.
        fanout_steers_like_uplink_hash(3, Steering { uplink: Ipv4Addr::from(IP_UP), snat_ports: 32768..=60999 });
    }

    /// What the fanout hook's program sees on this kernel, with probe
    /// programs in place of the steering one: `skb->data` is at the network
    /// header (an absolute `ldb [0]` reads the IPv4 version/IHL byte, not the
    /// destination MAC), and `ldxb 4*([SKF_NET_OFF]&0xf)` works.
    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace"]
    fn fanout_program_runs_at_the_network_header() {
        use libc::{BPF_ABS, BPF_B, BPF_LD, BPF_LDX, BPF_MISC, BPF_MSH, BPF_RET, BPF_TXA};
        with_veth(|v| {
            let qs = open_fanout(UP, 2, None, &steer::tests::steering()).unwrap();
            let peer = Raw::open(v.peer);
            let ins = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
            // Two IPv4 frames to MAC 02:…, one with IHL 5 (0x45), one with
            // IHL 6 (0x46): the MAC byte is even for both.
            let plain = steer::tests::udp([192, 0, 2, 1], IP_UP, 1, 2);
            // (Length and checksum are not fixed up: the hook runs before
            // any IP validation.)
            let mut options = plain.clone();
            options.splice(34..34, [1u8; 4]);
            options[14] = 0x46;
            let cases: [(Vec<libc::sock_filter>, [usize; 2]); 2] = [
                // A = byte 0 of skb->data: 0x45 -> member 1, 0x46 -> member 0.
                (vec![ins(BPF_LD | BPF_B | BPF_ABS, 0), ins(BPF_RET | libc::BPF_A, 0)], [1, 0]),
                // A = 4 * IHL: 20 -> member 0, 24 -> member 0; add 1 to tell
                // a fault (0 -> member 0) from success.
                (
                    vec![
                        ins(BPF_LDX | BPF_B | BPF_MSH, libc::SKF_NET_OFF as u32),
                        ins(BPF_MISC | BPF_TXA, 0),
                        ins(libc::BPF_ALU | libc::BPF_ADD | libc::BPF_K, 1),
                        ins(BPF_RET | libc::BPF_A, 0),
                    ],
                    [1, 1],
                ),
            ];
            for (prog, want) in cases {
                let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr().cast_mut() };
                setsockopt(&qs[0].fd, libc::SOL_PACKET, libc::PACKET_FANOUT_DATA, &fprog).unwrap();
                for (frame, member) in [&plain, &options].into_iter().zip(want) {
                    peer.send(frame);
                    let mut buf = vec![0u8; 2048];
                    let m = recv_wait(&qs[member], &mut buf, WAIT).expect("on the predicted member");
                    assert_eq!(&buf[VNET_HDR_LEN..m.len], &frame[..]);
                    assert_eq!(qs[1 - member].recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
                }
            }
        });
    }

    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace"]
    fn fanout_group_ids() {
        with_veth(|v| {
            let a = open_fanout(UP, 2, None, &steer::tests::steering()).unwrap();
            let b = open_fanout(UP, 1, None, &steer::tests::steering()).unwrap();
            assert_ne!(a[0].fanout_group(), b[0].fanout_group(), "the kernel picks unused ids");
            let c = open_fanout(Iface::Index(v.up), 2, Some(0x7e57), &steer::tests::steering()).unwrap();
            assert_eq!(c[1].fanout_group(), Some(0x7e57));
            // That id is taken on another interface.
            let e = open_fanout(PEER, 1, Some(0x7e57), &steer::tests::steering()).unwrap_err();
            assert!(matches!(e, PacketError::JoinFanout { group: 0x7e57, .. }), "{e}");
        });
    }

    // A tiny userspace TCP endpoint at IP_UP, enough to talk to the peer's
    // stack through the veth.
    fn tcp_frame(
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: &str,
        options: &[TcpOptionElement],
        payload: &[u8],
    ) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2(MAC_UP, MAC_PEER).ipv4(IP_UP, IP_PEER, 64).tcp(sport, dport, seq, 65535);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('A') {
            b = b.ack(ack);
        }
        if flags.contains('P') {
            b = b.psh();
        }
        if flags.contains('R') {
            b = b.rst();
        }
        if !options.is_empty() {
            b = b.options(options).unwrap();
        }
        let mut v = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut v, payload).unwrap();
        v
    }

    /// A TCP segment from the peer to `port`, as (seq, ack, syn, payload).
    fn tcp_from_peer(frame: &[u8], port: u16) -> Option<(u32, u32, bool, usize)> {
        let p = SlicedPacket::from_ethernet(frame).ok()?;
        let Some(NetSlice::Ipv4(ip4)) = &p.net else { return None };
        if ip4.header().source() != IP_PEER {
            return None;
        }
        match &p.transport {
            Some(TransportSlice::Tcp(t)) if t.destination_port() == port => {
                Some((t.sequence_number(), t.acknowledgment_number(), t.syn(), t.payload().len()))
            }
            _ => None,
        }
    }

    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace and runs TCP over it"]
    fn receives_gso_super_frames_from_a_tcp_sender() {
        with_veth(|_| {
            peer_stack();
            let q = PacketQueue::open(UP).unwrap();
            // The peer's stack connects to IP_UP:5001, which our loop below
            // answers, and sends as fast as we acknowledge.
            let sender = std::thread::spawn(|| -> io::Result<()> {
                let mut s = TcpStream::connect_timeout(&SocketAddr::from((IP_UP, 5001)), WAIT)?;
                s.set_write_timeout(Some(Duration::from_secs(10)))?;
                let chunk = vec![0x5a; 1 << 16];
                loop {
                    s.write_all(&chunk)?;
                }
            });
            let isn = 0x1000_0000u32;
            let mut next = None; // next byte expected from the peer
            let (mut received, mut largest) = (0usize, 0usize);
            let mut super_frames = 0;
            let mut buf = vec![0u8; 70_000];
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut peer_port = 0;
            while received < (2 << 20) {
                assert!(
                    Instant::now() < deadline,
                    "after 20 s: SYN seen {}, {received} bytes, largest frame {largest}, sender ended {}",
                    next.is_some(),
                    sender.is_finished()
                );
                let Some(m) = recv_wait(&q, &mut buf, Duration::from_millis(500)) else { continue };
                let len = m.accept().unwrap();
                let frame = &buf[VNET_HDR_LEN..len];
                let Some((seq, _, syn, payload)) = tcp_from_peer(frame, 5001) else { continue };
                let sport = u16::from_be_bytes([frame[34], frame[35]]);
                let hdr = VnetHdr::new_checked(&buf[..VNET_HDR_LEN]).unwrap();
                hdr.validate(len - VNET_HDR_LEN).unwrap();
                if syn {
                    peer_port = sport;
                    next = Some(seq.wrapping_add(1));
                    // Window 65535 << 4: 1 MiB in flight at most, well
                    // inside the socket's receive buffer.
                    let opts = [TcpOptionElement::MaximumSegmentSize(1460), TcpOptionElement::WindowScale(4)];
                    q.send(&with_vnet([0; 10], &tcp_frame(5001, sport, isn, seq.wrapping_add(1), "SA", &opts, b"")))
                        .unwrap();
                    continue;
                }
                if payload == 0 {
                    continue;
                }
                if Some(seq) == next {
                    next = Some(seq.wrapping_add(payload as u32));
                    received += payload;
                }
                largest = largest.max(frame.len());
                if frame.len() > 1514 {
                    super_frames += 1;
                    // Linux's TSO super-frame: the header says how to cut it.
                    assert_eq!(hdr.gso_type() & !GSO_ECN, GSO_TCPV4);
                    assert_eq!(hdr.gso_size(), 1460, "MSS 1460, no TCP options");
                    assert_eq!(hdr.flags() & F_NEEDS_CSUM, F_NEEDS_CSUM);
                    assert_eq!((hdr.csum_start(), hdr.csum_offset()), (34, 16));
                    assert_eq!(usize::from(u16::from_be_bytes([frame[16], frame[17]])), frame.len() - 14);
                } else {
                    assert!(!hdr.is_gso());
                }
                let ack = next.unwrap();
                q.send(&with_vnet([0; 10], &tcp_frame(5001, sport, isn + 1, ack, "A", &[], b""))).unwrap();
            }
            // Reset the connection; the sender's write fails and it ends.
            q.send(&with_vnet([0; 10], &tcp_frame(5001, peer_port, isn + 1, next.unwrap(), "RA", &[], b""))).unwrap();
            assert!(sender.join().unwrap().is_err());
            eprintln!("received {received} bytes, {super_frames} super-frames, largest frame {largest} bytes");
            assert!(super_frames > 0 && largest > 1514, "largest frame {largest}");
        });
    }

    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace and runs TCP over it"]
    fn sends_a_gso_super_frame_the_peer_stack_accepts() {
        send_gso_super_frame(false);
    }

    /// With TSO and checksum offload off on "up", the kernel cuts the
    /// super-frame itself and completes every segment's checksum from our
    /// pseudo-header seed; the peer's stack verifies them in software, so a
    /// wrong seed would lose the data.
    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace and runs TCP over it"]
    fn sends_a_gso_super_frame_the_kernel_segments() {
        send_gso_super_frame(true);
    }

    fn send_gso_super_frame(segment: bool) {
        with_veth(move |v| {
            peer_stack();
            if segment {
                let out = Command::new("ethtool").args(["-K", UP, "tx", "off", "tso", "off"]).output().unwrap();
                assert!(out.status.success(), "ethtool: {}", String::from_utf8_lossy(&out.stderr));
            }
            const N: usize = 20 * 1448;
            let listener = TcpListener::bind(SocketAddr::from((IP_PEER, 5002))).unwrap();
            listener.set_nonblocking(true).unwrap();
            let reader = std::thread::spawn(move || -> io::Result<Vec<u8>> {
                let deadline = Instant::now() + WAIT;
                let mut s = loop {
                    match listener.accept() {
                        Ok((s, _)) => break s,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(e) => return Err(e),
                    }
                };
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(WAIT))?;
                let mut data = vec![0u8; N];
                s.read_exact(&mut data)?;
                Ok(data)
            });
            let capture = Raw::open(v.peer);
            let q = PacketQueue::open(UP).unwrap();
            let isn = 0x2000_0000u32;
            let mss = [TcpOptionElement::MaximumSegmentSize(1460)];
            q.send(&with_vnet([0; 10], &tcp_frame(40_000, 5002, isn, 0, "S", &mss, b""))).unwrap();
            let mut buf = vec![0u8; 70_000];
            let their = loop {
                let m = recv_wait(&q, &mut buf, WAIT).expect("SYN-ACK");
                if let Some((seq, ack, true, _)) = tcp_from_peer(&buf[VNET_HDR_LEN..m.len], 40_000) {
                    assert_eq!(ack, isn + 1);
                    break seq.wrapping_add(1);
                }
            };
            q.send(&with_vnet([0; 10], &tcp_frame(40_000, 5002, isn + 1, their, "A", &[], b""))).unwrap();

            // One super-frame: 20 segments' worth, the TCP checksum field
            // holding only the pseudo-header sum, as CHECKSUM_PARTIAL wants.
            let payload: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
            let mut frame = tcp_frame(40_000, 5002, isn + 1, their, "AP", &[], &payload);
            let partial = checksum::pseudo_header_v4(IP_UP.into(), IP_PEER.into(), IpProtocol::Tcp, (20 + N) as u16);
            frame[50..52].copy_from_slice(&partial.to_be_bytes());
            let mut hdr = [0u8; VNET_HDR_LEN];
            let mut h = VnetHdr::new_unchecked(&mut hdr[..]);
            h.set_flags(F_NEEDS_CSUM);
            h.set_gso_type(GSO_TCPV4);
            h.set_hdr_len(54);
            h.set_gso_size(1448);
            h.set_csum_start(34);
            h.set_csum_offset(16);
            assert_eq!(q.send(&with_vnet(hdr, &frame)).unwrap(), VNET_HDR_LEN + frame.len());

            let data = reader.join().unwrap().expect("the peer's stack reads every byte");
            assert!(data == payload, "the peer read other bytes");
            // What crossed the veth: the segments, or the super-frame whole.
            let mut segments = Vec::new();
            for f in capture.drain(Duration::from_millis(200)) {
                let Ok(p) = SlicedPacket::from_ethernet(&f) else { continue };
                let Some(TransportSlice::Tcp(t)) = p.transport else { continue };
                if t.destination_port() != 5002 || t.payload().is_empty() {
                    continue;
                }
                segments.push(t.payload().len());
                if segment {
                    let tcp = crate::wire::TcpPacket::new_checked(&f[34..]).unwrap();
                    assert!(tcp.verify_checksum_ipv4(IP_UP.into(), IP_PEER.into()), "segment checksum");
                }
            }
            eprintln!("the peer's capture saw TCP payloads of {segments:?} bytes");
            assert_eq!(segments.iter().sum::<usize>(), N);
            if segment {
                assert_eq!(segments, [1448; 20]);
            } else {
                // veth takes GSO frames, and the peer's stack takes the
                // super-frame whole as it takes a GRO packet.
                assert_eq!(segments, [N]);
            }
        });
    }
}
