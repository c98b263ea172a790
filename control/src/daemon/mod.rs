//! `tapnet daemon`: owns the dataplane and every TAP fd, serves the API on a
//! Unix socket, and tears everything down on SIGTERM or SIGINT.
//!
//! The state directory holds a lock (one daemon per directory) and
//! `namespaces.json`, the namespaces this daemon made. If a daemon dies
//! without cleaning up (SIGKILL, crash), the next one started on the same
//! state directory removes those namespaces before it serves anything. TAP
//! devices need no such care: they vanish with the process that holds them.
//!
//! Where things are: `namespaces.rs` (entering the host mount namespace and
//! the daemon's network namespace), `state.rs` (the engine shared by the
//! API threads, the state directory and crash recovery), `server.rs` (the
//! API socket and one connection); this file starts and stops the daemon.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::engine::{Engine, EngineConfig, EngineError};

mod namespaces;
mod server;
mod state;

use state::Shared;

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon answers on the socket.
    #[error("a tapnet daemon is already listening on {0}")]
    AlreadyRunning(String),
    /// Another daemon holds the state directory.
    #[error("state directory {0} is locked by another tapnet daemon")]
    StateLocked(String),
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: String, source: io::Error },
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Mounts made here would not reach the host (e.g. under `ip netns exec`).
    #[error("the daemon runs in a private mount namespace (started by `ip netns exec`?), so `ip netns` would not see its containers; start it with `tapnet daemon --netns NAME` instead")]
    PrivateMounts,
}

fn ioe<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(io::Error) -> DaemonError + 'a {
    move |source| DaemonError::Io { op, path: p.display().to_string(), source }
}

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct DaemonOpts {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Named namespace to run in (the "host" of this daemon), if not the current one.
    pub netns: Option<String>,
    pub engine: EngineConfig,
}

/// Run the daemon until SIGTERM or SIGINT.
pub fn run(opts: DaemonOpts) -> Result<(), DaemonError> {
    namespaces::enter(opts.netns.as_deref())?;
    let _lock = state::lock_dir(&opts.state_dir)?;
    let state_file = opts.state_dir.join("namespaces.json");
    state::recover(&state_file);
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(ioe("install signal handlers", Path::new("-")))?;
    let listener = server::bind(&opts.socket)?;
    let engine = match Engine::new(opts.engine.clone()) {
        Ok(e) => e,
        Err(e) => {
            let _ = std::fs::remove_file(&opts.socket);
            return Err(e.into());
        }
    };
    let workers = engine.workers();
    let shared = Arc::new(Shared { engine: Mutex::new(Some(engine)), state_file, socket: opts.socket.clone() });

    let s = shared.clone();
    std::thread::Builder::new()
        .name("tapnet-sweep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            match s.lock().as_ref() {
                Some(e) => e.sweep(),
                None => return,
            }
        })
        .map_err(ioe("spawn", Path::new("sweeper")))?;

    let s = shared.clone();
    std::thread::Builder::new()
        .name("tapnet-api".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                let _ = std::thread::Builder::new().name("tapnet-conn".into()).spawn(move || server::serve(conn, &s));
            }
        })
        .map_err(ioe("spawn", Path::new("api")))?;

    eprintln!(
        "tapnet daemon {} listening on {} with {workers} workers (pid {})",
        env!("CARGO_PKG_VERSION"),
        opts.socket.display(),
        std::process::id()
    );
    if let Some(sig) = signals.forever().next() {
        eprintln!("tapnet: signal {sig}, removing every container and network");
    }
    for e in shared.shutdown() {
        eprintln!("tapnet: teardown: {e}");
    }
    Ok(())
}
