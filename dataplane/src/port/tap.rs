//! The TAP ioctl layer, and nothing else: open `/dev/net/tun` queues as
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE`, size the virtio-net
//! header, enable offloads, make a device persistent (`TUNSETPERSIST`) and
//! read/write frames on one queue.
//!
//! A persistent TAP outlives its queues: with none attached it keeps its
//! addresses and routes, loses its carrier and drops what the stack sends
//! it. Opening queues on its name again ([`open_multiqueue`], same flags)
//! attaches them and brings the carrier back. It still goes with its
//! namespace.
//!
//! Setup policy (which name, how many queues, which namespace) belongs to the
//! control plane; the per-queue read/write are the only system calls on the
//! per-packet path. Why these ioctls are ours and not a crate's: README,
//! § Dependencies.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{check_ifname, InvalidIfname};
use crate::wire::VNET_HDR_LEN;

// <linux/if_tun.h>; the ioctl numbers are _IOW('T', n, int) / _IOR(...).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNGETFEATURES: libc::c_ulong = 0x8004_54cf;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;

const IFF_TAP: u16 = 0x0002;
const IFF_MULTI_QUEUE: u16 = 0x0100;
const IFF_NO_PI: u16 = 0x1000;
const IFF_VNET_HDR: u16 = 0x4000;

/// Offload flags for `TUNSETOFFLOAD`: what tapnet can accept when reading.
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const TUN_F_TSO_ECN: u32 = 0x08;
/// Partial checksums plus TCP segmentation for IPv4/IPv6 (with ECN): the
/// container's stack hands over 64 KiB TCP super-frames unsegmented.
pub const DEFAULT_OFFLOADS: u32 = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;

const IFREQ_LEN: usize = 40;
const IFR_FLAGS: usize = 16;

/// Errors from opening and configuring TAP queues.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name is empty, too long or has a forbidden character.
    #[error("invalid interface name {0:?}: 1 to 15 bytes, no '/', ':' or whitespace")]
    InvalidName(String),
    /// A TAP needs at least one queue.
    #[error("a TAP device needs at least one queue")]
    NoQueues,
    /// Opening `/dev/net/tun` failed.
    #[error("open /dev/net/tun")]
    OpenTun(#[source] io::Error),
    /// The kernel lacks a TAP feature tapnet needs.
    #[error("the kernel's TUN driver lacks {0}")]
    Unsupported(&'static str),
    /// An ioctl on the TAP failed.
    #[error("{op} on {name}")]
    Ioctl {
        op: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
}

impl From<InvalidIfname> for TapError {
    fn from(e: InvalidIfname) -> Self {
        TapError::InvalidName(e.0)
    }
}

/// One queue of a multi-queue TAP device, owned by one worker.
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
}

impl TapQueue {
    /// A queue from a descriptor of an attached TAP queue that another
    /// process opened (and passed over a Unix socket): a live takeover.
    pub fn from_fd(fd: OwnedFd) -> TapQueue {
        TapQueue { fd }
    }

    /// Read one frame (virtio-net header first) into `buf`.
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: fd is open for the lifetime of self; buf is valid for
        // writes of buf.len() bytes and is not aliased during the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Write one frame (virtio-net header first) from `buf`.
    #[inline]
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: fd is open for the lifetime of self; buf is valid for
        // reads of buf.len() bytes.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn ifreq(name: &str, flags: u16) -> [u8; IFREQ_LEN] {
    let mut req = [0u8; IFREQ_LEN];
    req[..name.len()].copy_from_slice(name.as_bytes());
    req[IFR_FLAGS..IFR_FLAGS + 2].copy_from_slice(&flags.to_ne_bytes());
    req
}

fn ioctl_val(fd: &OwnedFd, req: libc::c_ulong, val: libc::c_ulong) -> io::Result<()> {
    // SAFETY: fd is a valid TUN fd; the request takes its argument by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, val) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ioctl_ptr<T>(fd: &OwnedFd, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: fd is a valid TUN fd; arg points to memory of the size the
    // request reads or writes (an ifreq, an unsigned int or an int), which
    // lives and is exclusively borrowed for the duration of the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn open_tun() -> Result<OwnedFd, TapError> {
    let path: &CStr = c"/dev/net/tun";
    // SAFETY: path is a valid NUL-terminated string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(TapError::OpenTun(io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open (creating it if needed) the TAP device `name` with `queues` queues,
/// each non-blocking, with a 10-byte virtio-net header and `offloads`
/// enabled. The device lives as long as one of the returned fds is open,
/// unless it is persistent ([`set_persist`]). On an existing persistent
/// device with no queue attached this re-attaches `queues` new queues.
pub fn open_multiqueue(name: &str, queues: usize, offloads: u32) -> Result<Vec<TapQueue>, TapError> {
    check_ifname(name)?;
    if queues == 0 {
        return Err(TapError::NoQueues);
    }
    let ioerr = |op| move |source| TapError::Ioctl { op, name: name.to_string(), source };
    let mut out = Vec::with_capacity(queues);
    for i in 0..queues {
        let fd = open_tun()?;
        if i == 0 {
            let mut features: libc::c_uint = 0;
            ioctl_ptr(&fd, TUNGETFEATURES, &mut features).map_err(ioerr("TUNGETFEATURES"))?;
            let features = features as u16;
            if features & IFF_MULTI_QUEUE == 0 {
                return Err(TapError::Unsupported("IFF_MULTI_QUEUE"));
            }
            if features & IFF_VNET_HDR == 0 {
                return Err(TapError::Unsupported("IFF_VNET_HDR"));
            }
        }
        let mut req = ifreq(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE);
        ioctl_ptr(&fd, TUNSETIFF, &mut req).map_err(ioerr("TUNSETIFF"))?;
        let mut hdr_len: libc::c_int = VNET_HDR_LEN as libc::c_int;
        ioctl_ptr(&fd, TUNSETVNETHDRSZ, &mut hdr_len).map_err(ioerr("TUNSETVNETHDRSZ"))?;
        // Offloads are per device, but setting them on every queue is harmless
        // and keeps each queue self-describing.
        ioctl_val(&fd, TUNSETOFFLOAD, offloads as libc::c_ulong).map_err(ioerr("TUNSETOFFLOAD"))?;
        out.push(TapQueue { fd });
    }
    Ok(out)
}

/// Make the TAP device that queue `fd` is attached to persistent (it then
/// outlives its queues) or not (it goes when its last queue closes).
pub fn set_persist(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: fd is open for the duration of the call; TUNSETPERSIST takes
    // its argument by value (a TUN fd not attached to a device fails with
    // EBADFD, any other fd with ENOTTY/EINVAL).
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST, libc::c_ulong::from(on)) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl AsFd for TapQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_checked_before_any_syscall() {
        // The rules themselves are tested with `check_ifname` in port/mod.rs.
        assert!(matches!(open_multiqueue("abcdefghijklmnop", 1, 0), Err(TapError::InvalidName(_))));
        assert!(matches!(open_multiqueue("ok", 0, 0), Err(TapError::NoQueues)));
    }

    #[test]
    fn ifreq_layout() {
        let r = ifreq("tap0", IFF_TAP | IFF_NO_PI);
        assert_eq!(&r[..5], b"tap0\0");
        assert_eq!(u16::from_ne_bytes([r[16], r[17]]), 0x1002);
        assert!(r[18..].iter().all(|&b| b == 0));
    }

    // Creates a real multi-queue TAP in a fresh thread-private namespace so
    // nothing is visible outside the test.
    #[test]
    #[ignore = "needs root and /dev/net/tun: creates a TAP device"]
    fn open_real_multiqueue_tap() {
        std::thread::spawn(|| {
            // SAFETY: unshare only affects this thread, which ends below.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let qs = open_multiqueue("tntest0", 3, DEFAULT_OFFLOADS).unwrap();
            assert_eq!(qs.len(), 3);
            let mut buf = [0u8; 256];
            // Device is down: no frame is waiting and reads do not block.
            assert_eq!(qs[0].recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
            // SAFETY: a valid NUL-terminated name; the lookup uses a socket
            // in this thread's (private) namespace.
            assert_ne!(unsafe { libc::if_nametoindex(c"tntest0".as_ptr()) }, 0);
            drop(qs);
            // The device lives only as long as its queues.
            // SAFETY: as above.
            assert_eq!(unsafe { libc::if_nametoindex(c"tntest0".as_ptr()) }, 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    #[ignore = "needs root and /dev/net/tun: creates a TAP device"]
    fn a_persistent_tap_outlives_its_queues_and_reattaches() {
        std::thread::spawn(|| {
            // SAFETY: unshare only affects this thread, which ends below.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let exists = || {
                // SAFETY: a valid NUL-terminated name, looked up in this
                // thread's private namespace.
                unsafe { libc::if_nametoindex(c"tnpersist0".as_ptr()) != 0 }
            };
            let qs = open_multiqueue("tnpersist0", 2, DEFAULT_OFFLOADS).unwrap();
            set_persist(qs[0].as_fd(), true).unwrap();
            drop(qs);
            assert!(exists(), "a persistent TAP stays without queues");
            // Re-attach another number of queues (a daemon with other --workers).
            let qs = open_multiqueue("tnpersist0", 3, DEFAULT_OFFLOADS).unwrap();
            assert_eq!(qs.len(), 3);
            set_persist(qs[1].as_fd(), false).unwrap();
            drop(qs);
            assert!(!exists(), "not persistent any more: it goes with its last queue");
        })
        .join()
        .unwrap();
    }
}
