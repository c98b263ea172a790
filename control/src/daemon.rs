//! `tapnet daemon`: owns the dataplane and every TAP fd, serves the API on a
//! Unix socket, and tears everything down on SIGTERM or SIGINT.
//!
//! The state directory holds a lock (one daemon per directory) and
//! `namespaces.json`, the namespaces this daemon made. If a daemon dies
//! without cleaning up (SIGKILL, crash), the next one started on the same
//! state directory removes those namespaces before it serves anything. TAP
//! devices need no such care: they vanish with the process that holds them.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::api::{Request, Response};
use crate::engine::{Engine, EngineConfig, EngineError};

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

/// Is /var/run/netns a slave mount here, so that the namespaces we
/// bind-mount under it would not propagate back to the host?
fn netns_dir_is_slave() -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 6
            && (f[4] == "/run/netns" || f[4] == "/var/run/netns")
            && f[6..].iter().take_while(|x| **x != "-").any(|x| x.starts_with("master:"))
    })
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

/// Put the (still single-threaded) daemon where it must run: in the host
/// mount namespace, so the namespaces it bind-mounts under /var/run/netns are
/// visible to everyone even when it was started by `ip netns exec` (which
/// gives its child a private, slave mount namespace), and in the network
/// namespace it was asked to serve.
fn enter_namespaces(netns: Option<&str>) -> Result<(), DaemonError> {
    let init = Path::new("/proc/1/ns/mnt");
    let mine = Path::new("/proc/self/ns/mnt");
    let differs = match (std::fs::metadata(init), std::fs::metadata(mine)) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.ino() != b.ino() || a.dev() != b.dev()
        }
        _ => false,
    };
    if differs {
        if let Ok(f) = File::open(init) {
            // SAFETY: f is an open mount-namespace file; the process has a
            // single thread at this point, which setns(CLONE_NEWNS) requires.
            // Failure is handled by the propagation check below.
            unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNS) };
        }
    }
    if netns_dir_is_slave() {
        return Err(DaemonError::PrivateMounts);
    }
    if let Some(name) = netns {
        let p = crate::netns::path(name);
        if !p.exists() {
            return Err(DaemonError::Io {
                op: "enter network namespace",
                path: p.display().to_string(),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        crate::netns::enter(&p).map_err(|e| DaemonError::Io {
            op: "enter network namespace",
            path: p.display().to_string(),
            source: io::Error::other(e.to_string()),
        })?;
    }
    Ok(())
}

struct Shared {
    engine: Mutex<Option<Engine>>,
    state_file: PathBuf,
    socket: PathBuf,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<Engine>> {
        // A panic while holding the lock must not wedge the daemon: the
        // engine's state is still consistent between operations.
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, engine: &Engine) {
        let names = engine.owned_namespaces();
        let tmp = self.state_file.with_extension("json.tmp");
        if std::fs::write(&tmp, serde_json::to_vec(&names).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.state_file);
        }
    }

    /// Tear everything down; returns the problems met on the way.
    fn shutdown(&self) -> Vec<String> {
        let mut g = self.lock();
        let errs = match g.take() {
            Some(mut e) => {
                let errs = e.shutdown();
                self.save(&e);
                errs
            }
            None => Vec::new(),
        };
        let _ = std::fs::remove_file(&self.socket);
        errs
    }
}

/// Remove namespaces left by a daemon that died on this state directory.
fn recover(state_file: &Path) {
    let Ok(bytes) = std::fs::read(state_file) else { return };
    let names: Vec<String> = serde_json::from_slice(&bytes).unwrap_or_default();
    for n in names {
        crate::hosts::remove(&n);
        if crate::netns::exists(&n) {
            match crate::netns::delete(&n) {
                Ok(()) => eprintln!("tapnet: removed namespace {n} left by a previous daemon"),
                Err(e) => eprintln!("tapnet: could not remove leftover namespace {n}: {e}"),
            }
        }
    }
    let _ = std::fs::remove_file(state_file);
}

fn lock_state_dir(dir: &Path) -> Result<File, DaemonError> {
    std::fs::create_dir_all(dir).map_err(ioe("create", dir))?;
    let p = dir.join("lock");
    let f = File::create(&p).map_err(ioe("create", &p))?;
    // SAFETY: f is an open file for the duration of the call.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(DaemonError::StateLocked(dir.display().to_string()));
    }
    Ok(f)
}

fn bind(socket: &Path) -> Result<UnixListener, DaemonError> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(ioe("create", parent))?;
    }
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(DaemonError::AlreadyRunning(socket.display().to_string()));
        }
        std::fs::remove_file(socket).map_err(ioe("remove stale socket", socket))?;
    }
    let l = UnixListener::bind(socket).map_err(ioe("bind", socket))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(ioe("chmod", socket))?;
    Ok(l)
}

/// Run the daemon until SIGTERM or SIGINT.
pub fn run(opts: DaemonOpts) -> Result<(), DaemonError> {
    enter_namespaces(opts.netns.as_deref())?;
    let _lock = lock_state_dir(&opts.state_dir)?;
    let state_file = opts.state_dir.join("namespaces.json");
    recover(&state_file);
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(ioe("install signal handlers", Path::new("-")))?;
    let listener = bind(&opts.socket)?;
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
                let _ = std::thread::Builder::new().name("tapnet-conn".into()).spawn(move || serve(conn, &s));
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

/// Serve one client connection: one JSON request per line.
fn serve(conn: UnixStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(300)));
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let resp = match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => Response { ok: false, data: None, error: Some(format!("bad request: {e}")) },
            Ok(req) => {
                let mut g = shared.lock();
                match g.as_mut() {
                    None => Response { ok: false, data: None, error: Some("the daemon is shutting down".into()) },
                    Some(engine) => {
                        let r = engine.handle(req);
                        shared.save(engine);
                        match r {
                            Ok(data) => Response { ok: true, data: Some(data), error: None },
                            Err(e) => Response { ok: false, data: None, error: Some(e.to_string()) },
                        }
                    }
                }
            }
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_default();
        out.push(b'\n');
        if (&conn).write_all(&out).is_err() {
            return;
        }
    }
}
