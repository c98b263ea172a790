//! tapnet's control plane: namespaces, TAP setup over netlink and ioctls,
//! IPAM, the engine that ties networks and containers to the dataplane, the
//! daemon and its API, and the `tapnet` CLI.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod api;
pub mod cli;
pub mod daemon;
pub mod engine;
pub mod hosts;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod sandbox;
