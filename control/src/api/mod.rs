//! The daemon's API: newline-delimited JSON over a Unix socket.
//!
//! Each request is one JSON object on one line, tagged by `op`; each reply is
//! one line, `{"ok":true,"data":…}` or `{"ok":false,"error":"…"}`. The
//! default socket is [`DEFAULT_SOCKET`] (mode 0600); `--socket` or
//! `TAPNET_SOCKET` choose another, so several daemons can run side by side.
//!
//! `types.rs` holds the requests and replies, `client.rs` sends one request
//! and reads its reply; the daemon's side is `daemon/server.rs`.

mod client;
mod types;

pub use client::{call, ClientError};
pub use types::*;

pub const DEFAULT_SOCKET: &str = "/run/tapnet/tapnet.sock";
pub const DEFAULT_STATE_DIR: &str = "/run/tapnet";
