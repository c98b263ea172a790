//! NAT for tapnet's gateway: pure logic over packet bytes, no I/O.

#![forbid(unsafe_code)]

// Hex dumps, 16 bytes a line as tcpdump -xx prints them.
#[cfg(test)]
#[rustfmt::skip]
mod captured;
pub mod conntrack;
pub mod icmp;
pub mod rewrite;
pub mod tuple;
