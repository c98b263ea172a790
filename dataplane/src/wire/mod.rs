//! Zero-copy views over packet bytes, one file per protocol.
//!
//! Every view follows the same shape (after smoltcp): `Packet<T: AsRef<[u8]>>`
//! wraps a buffer, a private `field` module lists each field's byte range,
//! `new_checked` validates the length of untrusted input, getters need only
//! `AsRef<[u8]>`, setters need `AsMut<[u8]>`. Nothing here allocates or
//! performs I/O, so every function can run on the per-packet path.

pub mod ethernet;
pub mod vnet;

pub use ethernet::{EtherType, Frame as EthernetFrame, MacAddr};
pub use vnet::{VnetHdr, VNET_HDR_LEN};

/// Why a byte buffer could not be viewed as a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header it must hold.
    #[error("buffer too short for the header")]
    Truncated,
    /// A header field holds a value the protocol does not allow.
    #[error("malformed header field")]
    Malformed,
}

pub type Result<T> = core::result::Result<T, WireError>;

/// A byte range inside a header.
pub(crate) type Field = core::ops::Range<usize>;
