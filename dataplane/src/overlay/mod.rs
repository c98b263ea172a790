//! Overlay networks (VXLAN, GRE) between hosts; the lead fills this in.
//!
//! For now: software GSO ([`gso`]: a TCP/IPv4 super-frame cut into
//! MTU-sized segments before encapsulation, partial checksums completed) and
//! GRO ([`gro`]: segments from the underlay coalesced into one super-frame
//! before the TAP write). Both are pure: no I/O, no allocation per frame.

pub mod gro;
pub mod gso;
