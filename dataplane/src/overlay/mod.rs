//! Overlay networks between hosts: VXLAN and GRE done by tapnet itself,
//! with no kernel vxlan or gre device.
//!
//! - [`tunnel`]: the encapsulation headers, their checks, the inner flow
//!   hash.

pub mod mss;
pub mod tunnel;
