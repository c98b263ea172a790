//! `tapnet daemon`: owns the dataplane and every TAP fd, serves the API on a
//! Unix socket, and tears everything down on SIGTERM or SIGINT (or, with
//! `--keep` or a `shutdown --keep` request, leaves everything in place).
//!
//! The state directory holds a lock (one daemon per directory) and
//! `state.json`: every network and container, saved atomically before a
//! change is acknowledged, and `intent.json`, the intent of a change under
//! way that makes or removes a namespace or TAP (`state.rs`). A daemon
//! started on a state directory adopts what it describes (the containers'
//! namespaces and persistent TAPs survive the daemon): after a crash, a
//! `kill -9` or `--keep`, the containers forward again as soon as it runs.
//! It first undoes or finishes a change a crash interrupted. A state file
//! it cannot read stops it with an error before it touches anything.
//! `--takeover` starts a daemon in place of a running one without
//! stopping the traffic: it receives the old one's descriptors over the
//! API socket (`takeover.rs`).
//! Connection tracking is not saved: NAT'd flows through the uplink do not
//! survive a restart (bridged and routed flows between containers do).
//!
//! A dataplane worker that stops (a panic, say) would leave the dataplane
//! forwarding only on the other workers' queues: the daemon logs it, tears
//! everything down as for SIGTERM, and exits with an error.
//!
//! Threads: the main thread waits for a signal, a dead worker or the end of
//! the server thread (which only a panic ends); the server thread serves
//! the API socket (`server.rs`); the engine thread makes changes and the
//! reader threads serve reads (`work.rs`).
//!
//! Where things are: `namespaces.rs` (entering the host mount namespace and
//! the daemon's network namespace), `state.rs` (the published view, the
//! state directory and crash recovery), `limits.rs` (the API's limits and
//! file descriptors), `server.rs` (the API socket), `work.rs` (the engine
//! and reader threads), `takeover.rs` (live takeover); this file starts
//! and stops the daemon.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{select, Receiver};
use dataplane::WorkerExit;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::engine::{Engine, EngineConfig, EngineError};

pub mod limits;
mod namespaces;
mod server;
mod state;
pub mod takeover;
mod work;

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
    /// A dataplane worker stopped; everything was torn down.
    #[error("{0}; removed every container and network")]
    WorkerDied(WorkerExit),
    /// The API server's thread stopped; everything was torn down.
    #[error("the API server stopped: {0}; removed every container and network")]
    ApiDied(String),
    /// The state file cannot be adopted; nothing was touched.
    #[error("state file {0}: {1}; nothing was changed (move it away to start afresh)")]
    BadState(String, String),
    /// `--takeover` failed; the running daemon, if any, keeps running.
    #[error(transparent)]
    Takeover(#[from] takeover::TakeoverError),
    /// Saved published ports, and no uplink to publish them on.
    #[error("the saved state has published ports: start the daemon with the uplink it had (--uplink IFACE --uplink-ip A.B.C.D/LEN)")]
    NeedsUplink,
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
    /// On SIGTERM/SIGINT (or a dead worker), leave every container in
    /// place for the next daemon instead of removing it.
    pub keep: bool,
    /// Take over from the daemon running on `socket` (live, with its
    /// descriptors) instead of starting afresh.
    pub takeover: bool,
}

/// Why the daemon stops.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    Signal(i32),
    /// A `shutdown` request.
    Request {
        keep: bool,
    },
    Worker(WorkerExit),
    /// A new daemon has taken over.
    Takeover,
    /// The API server's thread ended (it only ends by a panic).
    Api(String),
}

/// Wait for a signal or the end of the API server (`stops`, sent by the
/// threads that relay them), or a worker that stopped.
fn wait_for_stop(stops: &Receiver<Stop>, exits: &Receiver<WorkerExit>) -> Stop {
    select! {
        recv(stops) -> s => s.unwrap_or(Stop::Signal(SIGTERM)),
        recv(exits) -> e => Stop::Worker(e.unwrap_or_else(|_| WorkerExit {
            worker: 0,
            reason: "every worker has stopped".into(),
        })),
    }
}

/// Run the daemon until SIGTERM or SIGINT (or a worker stops).
pub fn run(opts: DaemonOpts) -> Result<(), DaemonError> {
    // First, while descriptor numbers are low (see `server::reserve_fd`).
    let reserve = server::reserve_fd();
    namespaces::enter(opts.netns.as_deref())?;
    let nofile = limits::raise_nofile().map_err(ioe("raise RLIMIT_NOFILE", Path::new("-")))?;
    let store = state::Store::new(&opts.state_dir);
    let mut taken = None;
    let (_lock, listener, saved) = if opts.takeover {
        let t = takeover::take(&opts.socket, opts.engine.workers)?;
        let saved = t.handover.saved.clone();
        let (lock, listener) = (t.lock.try_clone(), t.listener.try_clone());
        let (lock, listener) =
            (lock.map_err(ioe("dup", &opts.state_dir))?, listener.map_err(ioe("dup", &opts.socket))?);
        taken = Some(t);
        (lock, listener, saved)
    } else {
        let lock = state::lock_dir(&opts.state_dir)?;
        let mut saved = store.load()?;
        if saved.has_published_ports() && opts.engine.uplink.is_none() {
            return Err(DaemonError::NeedsUplink);
        }
        state::recover_legacy(&opts.state_dir);
        let listener = server::bind(&opts.socket)?;
        state::settle(&mut saved);
        (lock, listener, saved)
    };
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(ioe("install signal handlers", Path::new("-")))?;
    let adopt = !saved.networks.is_empty() || !saved.containers.is_empty();
    let made = match taken.as_mut() {
        Some(t) => {
            let (queues, uplink, tunnels) =
                (std::mem::take(&mut t.queues), t.uplink.take(), std::mem::take(&mut t.tunnels));
            Engine::restore_handed(opts.engine.clone(), &saved, queues, uplink, tunnels, &t.handover.conntrack)
        }
        None if adopt => Engine::restore(opts.engine.clone(), &saved),
        None => Engine::new(opts.engine.clone()),
    };
    let engine = match made {
        Ok(e) => e,
        Err(e) => {
            // The socket is the running daemon's, which keeps running.
            if taken.is_none() {
                let _ = std::fs::remove_file(&opts.socket);
            }
            return Err(e.into());
        }
    };
    let workers = engine.workers();
    let exits = engine.worker_exits();
    let shared = Arc::new(Shared::new(engine.view()));

    let spawn_err = ioe("spawn", Path::new("API threads"));
    let poll = mio::Poll::new().map_err(ioe("create poller", Path::new("API")))?;
    let (replies, replies_rx) =
        work::Replies::new(server::Server::waker(&poll).map_err(ioe("create waker", Path::new("API")))?);
    if let Some(t) = &taken {
        let macs = engine.import_learned(&t.handover.macs);
        let neighbours = engine.import_neighbours(&t.handover.neighbours);
        eprintln!(
            "tapnet: taking over {} networks, {} containers, {macs} learned MACs{} from the daemon with pid {}",
            engine.saved().networks.len(),
            engine.saved().containers.len(),
            match &t.handover.uplink {
                Some(u) => format!(", the uplink on {} ({} sockets) and {neighbours} neighbours", u.link, u.sockets),
                None => String::new(),
            },
            t.handover.pid
        );
    } else if adopt {
        eprintln!(
            "tapnet: adopted {} networks and {} containers from {}",
            engine.saved().networks.len(),
            engine.saved().containers.len(),
            opts.state_dir.display()
        );
    }
    // What could not be adopted is gone from the state, as is the intent.
    store.save_or_log(&engine.saved());
    let (stop_tx, stops) = crossbeam_channel::bounded(4);
    // Duplicates for a new daemon that takes this one over.
    let handoff = match (_lock.try_clone(), listener.try_clone()) {
        (Ok(lock), Ok(l)) => Some(work::Handoff { lock: lock.into(), listener: l.into() }),
        _ => None,
    };
    let threads = work::start(engine, shared.clone(), store, replies, limits::READERS, stop_tx.clone(), handoff)
        .map_err(spawn_err)?;
    let srv = server::Server::new(
        server::Limits::DAEMON,
        listener,
        reserve,
        shared.clone(),
        threads.dispatch(),
        replies_rx,
        poll,
    )
    .map_err(ioe("listen", &opts.socket))?;
    let api_stop = stop_tx.clone();
    std::thread::Builder::new()
        .name("tapnet-api".into())
        .spawn(move || {
            // The server runs until the process ends: if it returns, it
            // panicked (the panic hook has printed where).
            let why = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| srv.run())) {
                Ok(()) => "it returned".to_string(),
                Err(p) => work::panic_text(&*p),
            };
            let _ = api_stop.send(Stop::Api(why));
        })
        .map_err(ioe("spawn", Path::new("API server")))?;
    std::thread::Builder::new()
        .name("tapnet-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if stop_tx.send(Stop::Signal(sig)).is_err() {
                    return;
                }
            }
        })
        .map_err(ioe("spawn", Path::new("signal relay")))?;

    eprintln!(
        "tapnet daemon {} listening on {} with {workers} workers (pid {}; RLIMIT_NOFILE {nofile}: room for {} container interfaces)",
        env!("CARGO_PKG_VERSION"),
        opts.socket.display(),
        std::process::id(),
        limits::max_ports(nofile, workers, opts.engine.uplink.is_some()),
    );
    if let Some(t) = taken {
        // The old daemon exits once it has read this; if it has gone
        // already, there is nothing to tell.
        if let Err(e) = t.ready() {
            eprintln!("tapnet: telling the old daemon (pid {}) to go: {e}", t.handover.pid);
        }
        eprintln!("tapnet: took over from the daemon with pid {}", t.handover.pid);
    }
    let stop = wait_for_stop(&stops, &exits);
    let keep = match stop {
        Stop::Request { keep } => keep,
        Stop::Takeover => true,
        _ => opts.keep,
    };
    let what = if keep {
        "leaving every container in place for the next daemon"
    } else {
        "removing every container and network"
    };
    match &stop {
        Stop::Signal(sig) => eprintln!("tapnet: signal {sig}, {what}"),
        Stop::Request { .. } => eprintln!("tapnet: shutdown requested, {what}"),
        Stop::Takeover => eprintln!("tapnet: a new daemon has taken over; exiting, leaving everything to it"),
        Stop::Worker(e) => eprintln!("tapnet: {e}; {what}"),
        Stop::Api(why) => eprintln!("tapnet: the API server stopped ({why}); {what}"),
    }
    shared.stop();
    for e in threads.stop(keep) {
        eprintln!("tapnet: teardown: {e}");
    }
    // After a takeover the socket is the new daemon's.
    if stop != Stop::Takeover {
        let _ = std::fs::remove_file(&opts.socket);
    }
    match stop {
        Stop::Signal(_) | Stop::Request { .. } | Stop::Takeover => Ok(()),
        Stop::Worker(e) => Err(DaemonError::WorkerDied(e)),
        Stop::Api(why) => Err(DaemonError::ApiDied(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_worker_stops_the_daemon_like_a_signal() {
        let (sig_tx, sig_rx) = crossbeam_channel::unbounded();
        let (exit_tx, exit_rx) = crossbeam_channel::unbounded();
        sig_tx.send(Stop::Signal(SIGINT)).unwrap();
        assert_eq!(wait_for_stop(&sig_rx, &exit_rx), Stop::Signal(SIGINT));
        sig_tx.send(Stop::Api("boom".into())).unwrap();
        assert_eq!(wait_for_stop(&sig_rx, &exit_rx), Stop::Api("boom".into()));
        let e = WorkerExit { worker: 1, reason: "panicked: boom".into() };
        exit_tx.send(e.clone()).unwrap();
        assert_eq!(wait_for_stop(&sig_rx, &exit_rx), Stop::Worker(e.clone()));
        // The daemon's error, as `tapnet daemon` prints it.
        assert_eq!(
            DaemonError::WorkerDied(e).to_string(),
            "dataplane worker 1 stopped: panicked: boom; removed every container and network"
        );
        // Every worker gone (the channel closed) is a stop too.
        drop(exit_tx);
        assert!(matches!(wait_for_stop(&sig_rx, &exit_rx), Stop::Worker(_)));
    }
}
