//! tapnet's test tooling, kept out of the daemon: the built-in traffic
//! generator, the `tapnet bench` harness, `tapnet demo`, and the frame
//! builders of the criterion suites.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod demo;
pub mod frames;
pub mod harness;
pub mod traffic;
