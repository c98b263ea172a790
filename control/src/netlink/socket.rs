//! The `NETLINK_ROUTE` socket: opening it, sending one request and reading
//! its replies up to the ACK or the end of a dump, and restarting dumps the
//! kernel flags as inconsistent.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::abi::*;
use super::msg::{i32_at, Msg, MsgBuilder};
use super::{Netlink, NetlinkError, Result};

/// Big enough for any dump datagram: the kernel caps those at 32 KiB.
const RECV_BUF_LEN: usize = 64 * 1024;
/// How often a dump that the kernel flags as inconsistent is restarted.
pub(super) const DUMP_ATTEMPTS: usize = 3;

impl Netlink {
    /// Opens a NETLINK_ROUTE socket in the calling thread's current network namespace.
    pub fn open() -> Result<Self> {
        // SAFETY: no pointers are involved; the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if raw < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a freshly created, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd, seq: 0, buf: vec![0; RECV_BUF_LEN] })
    }

    /// Sends a request that only expects an ACK.
    pub(super) fn ack(&mut self, op: &'static str, msg: MsgBuilder) -> Result<()> {
        self.exchange(op, msg, |_, _| Ok(())).map(drop)
    }

    /// Runs a dump of `ty` requests, giving each `reply_ty` message's payload
    /// to `parse`, and collects what it keeps. Restarts the dump when the
    /// kernel flags it as inconsistent (`NLM_F_DUMP_INTR`).
    pub(super) fn dump<T>(
        &mut self,
        op: &'static str,
        ty: u16,
        reply_ty: u16,
        header: &[u8],
        mut parse: impl FnMut(&[u8]) -> Result<Option<T>>,
    ) -> Result<Vec<T>> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut out = Vec::new();
            let msg = MsgBuilder::new(ty, NLM_F_REQUEST | NLM_F_DUMP).header(header);
            let interrupted = self.exchange(op, msg, |t, payload| {
                if t == reply_ty {
                    out.extend(parse(payload)?);
                }
                Ok(())
            })?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(NetlinkError::DumpInterrupted { op })
    }

    /// Sends `msg` with a fresh sequence number and feeds every reply
    /// message of that sequence to `each` (type, payload) until the ACK
    /// (`NLMSG_ERROR`) or the end of a dump (`NLMSG_DONE`). Returns whether
    /// any reply was flagged `NLM_F_DUMP_INTR`.
    pub(super) fn exchange(
        &mut self,
        op: &'static str,
        msg: MsgBuilder,
        mut each: impl FnMut(u16, &[u8]) -> Result<()>,
    ) -> Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(op, &msg.finish(seq))?;
        let mut interrupted = false;
        loop {
            let n = self.recv(op)?;
            let mut rest = &self.buf[..n];
            while !rest.is_empty() {
                let (m, next) = Msg::parse(rest).ok_or(NetlinkError::Malformed { op, what: "message header" })?;
                rest = next;
                if m.seq != seq {
                    continue;
                }
                interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                match m.ty {
                    NLMSG_NOOP => {}
                    // Both carry an errno (negated) first; 0 on NLMSG_ERROR is the ACK.
                    NLMSG_ERROR | NLMSG_DONE => {
                        let errno = i32_at(m.payload, 0).unwrap_or(0);
                        if errno != 0 {
                            return Err(NetlinkError::Kernel { op, source: io::Error::from_raw_os_error(-errno) });
                        }
                        return Ok(interrupted);
                    }
                    ty => each(ty, m.payload)?,
                }
            }
        }
    }

    pub(super) fn send(&self, op: &'static str, req: &[u8]) -> Result<()> {
        loop {
            // SAFETY: `fd` is an open socket; `req` is a live slice of
            // `req.len()` readable bytes for the duration of the call. An
            // unconnected netlink socket sends to the kernel (port 0).
            let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(NetlinkError::Send { op, source: e });
            }
        }
    }

    /// Receives one datagram from the kernel into `buf`; returns its length.
    pub(super) fn recv(&mut self, op: &'static str) -> Result<usize> {
        loop {
            // SAFETY: sockaddr_nl is plain integers, for which all zeros is valid.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `fd` is an open socket; `buf` is a live, exclusively
            // borrowed buffer of `buf.len()` writable bytes; `from` and
            // `from_len` are live locals and `from_len` holds `from`'s size.
            // With MSG_TRUNC the kernel writes at most `buf.len()` bytes and
            // returns the datagram's full length.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                    (&raw mut from).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::Recv { op, source: e });
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(NetlinkError::Truncated { op, len: n });
            }
            // Only the kernel (port 0) answers requests; drop anything else.
            if from.nl_pid == 0 {
                return Ok(n);
            }
        }
    }
}
