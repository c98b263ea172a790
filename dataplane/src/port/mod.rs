//! Ports: where frames enter and leave the dataplane. This is the only
//! module with system calls and `unsafe`.
//!
//! Every port speaks the same buffer format, a 10-byte virtio-net header
//! followed by the Ethernet frame, so offload metadata (GSO, partial
//! checksums) travels with the frame from ingress to egress. A port has one
//! queue per worker (`docs/ARCHITECTURE.md`, § Threading model). This module
//! also holds the interface-name rule that the TAP layer and the control
//! plane's netlink client share ([`check_ifname`]).
//!
//! Today a port is a TAP queue. The planned uplink (an AF_PACKET socket with
//! `PACKET_VNET_HDR`, which uses the same header) and overlay tunnels
//! (a UDP or raw IP socket per worker) become further variants of
//! [`PortQueue`]; the worker loop does not change.

pub mod tap;

use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// Index of a port in the dataplane, allocated by the control plane.
pub type PortId = u16;

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
