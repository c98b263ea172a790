//! sendmmsg/recvmmsg over a fixed batch of headers allocated once.

use super::udp::UDP_BATCH;
use socket2::Socket;
use std::io;
use std::os::fd::AsRawFd;

/// `UDP_BATCH` message headers, each with one iovec over the same
/// buffer. Sending repeats the buffer; receiving overwrites it with each
/// datagram in turn, which is fine because the receiver only counts.
/// The headers hold raw pointers into the iovecs and the buffer, whose
/// heap storage is never touched, moved or resized after `new`.
pub struct Batch {
    // Owned here so the pointers in `hdrs` stay valid; only the kernel
    // reads or writes them.
    _buf: Vec<u8>,
    _iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    /// A batch of datagrams of `buf.len()` bytes: `buf` is what every
    /// sent datagram carries, or where received ones land.
    pub fn new(mut buf: Vec<u8>) -> Self {
        let len = buf.len();
        if buf.is_empty() {
            buf.push(0); // a real allocation even for empty datagrams
        }
        let base = buf.as_mut_ptr().cast::<libc::c_void>();
        let mut iovs: Vec<libc::iovec> = (0..UDP_BATCH).map(|_| libc::iovec { iov_base: base, iov_len: len }).collect();
        let hdrs = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is a plain C struct of integers and
                // pointers, for which all-zero is a valid value (no
                // address, no control data).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        Batch { _buf: buf, _iovs: iovs, hdrs }
    }

    /// Send the first `n` (≤ `UDP_BATCH`) datagrams on the connected
    /// `sock`. Returns how many were sent.
    pub fn send(&mut self, sock: &Socket, n: usize) -> io::Result<usize> {
        let n = n.min(UDP_BATCH);
        // SAFETY: the first `n` headers are initialized and point to
        // iovecs and a buffer owned by `self`, valid for the call.
        let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), self.hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    /// Receive up to a batch, waiting (up to the socket's receive
    /// timeout) only for the first. Returns (datagrams, bytes).
    pub fn recv(&mut self, sock: &Socket) -> io::Result<(usize, u64)> {
        // SAFETY: all headers are initialized and point to iovecs and a
        // buffer owned by `self`, valid and writable for the call; no
        // Rust reference to the buffer is alive. The timeout argument
        // may be null.
        let rc = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                UDP_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = rc as usize;
        let bytes = self.hdrs[..n].iter().map(|h| u64::from(h.msg_len)).sum();
        Ok((n, bytes))
    }
}
