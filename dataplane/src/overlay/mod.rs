//! Overlay networks between hosts: VXLAN and GRE done by tapnet itself,
//! with no kernel vxlan or gre device. The path of a frame through them is
//! in docs/ARCHITECTURE.md ("Overlays"); the worker's side of it is
//! `worker/overlay.rs`, the sockets are `port/udp.rs` and `port/gre.rs`.
//!
//! - [`tunnel`]: the encapsulation headers, their checks on receipt, the
//!   inner flow hash that picks the outer source port;
//! - [`gso`]: a TCP/IPv4 super-frame cut into MTU-sized segments before
//!   encapsulation, partial checksums completed (a tunnel socket cannot
//!   carry offload requests);
//! - [`gro`]: segments from the underlay coalesced into one super-frame
//!   before the TAP write;
//! - [`mss`]: TCP MSS clamping of SYNs entering the overlay;
//! - [`probe`]: the frames of `tapnet overlay check`, answered by the
//!   peer's dataplane.
//!
//! All of them are pure: no I/O, no allocation per frame.

pub mod gro;
pub mod gso;
pub mod mss;
pub mod probe;
pub mod tunnel;
