//! A small synchronous rtnetlink client: links, IPv4 addresses and IPv4
//! routes, written over libc so that the control plane needs no async
//! runtime and never shells out to `ip`.
//!
//! A [`Netlink`] lives in the network namespace of the thread that opened
//! it, and can be used from any thread afterwards (see [`crate::netns`]).
//! Each request carries a fresh sequence number; replies with another
//! sequence number (left over from an abandoned dump) are skipped.
//!
//! Messages are built by `MsgBuilder` and read by offset with
//! `from_ne_bytes`: nothing here casts bytes to structs.
//!
//! Where things are: `socket.rs` (opening the socket, one request and its
//! replies, dumps), `msg.rs` (building requests, parsing replies and
//! attributes), `abi.rs` (the kernel's numbers and struct offsets), and the
//! requests by object: `link.rs`, `addr.rs`, `route.rs`.

use std::io;
use std::os::fd::OwnedFd;

mod abi;
mod addr;
mod link;
mod msg;
mod route;
mod socket;

#[cfg(test)]
mod kernel_tests;

pub use link::LinkInfo;
pub use route::RouteV4;

use socket::DUMP_ATTEMPTS;

/// Errors from the rtnetlink client.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The interface name cannot be a Linux interface name.
    #[error("invalid interface name {0:?}")]
    InvalidName(String),
    /// An IPv4 prefix length above 32.
    #[error("invalid IPv4 prefix length {0}")]
    InvalidPrefix(u8),
    /// No link with this name exists in the socket's namespace.
    #[error("no such link {0:?}")]
    NoSuchLink(String),
    /// Creating the netlink socket failed.
    #[error("open netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// Sending a request failed.
    #[error("{op}: send: {source}")]
    Send { op: &'static str, source: io::Error },
    /// Receiving a reply failed.
    #[error("{op}: receive: {source}")]
    Recv { op: &'static str, source: io::Error },
    /// A reply datagram did not fit the receive buffer.
    #[error("{op}: reply of {len} bytes truncated")]
    Truncated { op: &'static str, len: usize },
    /// A reply could not be parsed.
    #[error("{op}: malformed reply: {what}")]
    Malformed { op: &'static str, what: &'static str },
    /// The kernel kept changing the table while it was being dumped.
    #[error("{op}: dump interrupted {DUMP_ATTEMPTS} times")]
    DumpInterrupted { op: &'static str },
    /// The kernel refused the request (`NLMSG_ERROR` with a non-zero errno).
    #[error("{op}: {source}")]
    Kernel { op: &'static str, source: io::Error },
}

type Result<T> = std::result::Result<T, NetlinkError>;

/// Checks `name` with [`dataplane::port::check_ifname`] before any syscall.
fn check_ifname(name: &str) -> Result<()> {
    dataplane::port::check_ifname(name).map_err(|e| NetlinkError::InvalidName(e.0))
}

fn check_prefix(prefix_len: u8) -> Result<()> {
    if prefix_len > 32 {
        return Err(NetlinkError::InvalidPrefix(prefix_len));
    }
    Ok(())
}

/// A `NETLINK_ROUTE` socket with its sequence counter and receive buffer.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_errors() {
        // The rules are dataplane::port's; this checks the mapping.
        check_ifname("eth0").unwrap();
        assert!(
            matches!(check_ifname("tp123456789abcde"), Err(NetlinkError::InvalidName(n)) if n == "tp123456789abcde")
        );
    }
}
