//! The daemon's state: the view that reads are served from, the state
//! directory's lock and `namespaces.json`, and the recovery of what a
//! daemon that died left behind.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::{ioe, DaemonError};
use crate::engine::{Engine, View};

/// What the API threads and the main thread share. The engine itself is
/// not here: the engine thread owns it (`work.rs`).
pub(super) struct Shared {
    /// The latest view; `None` once the daemon is shutting down. The lock
    /// is only held to copy or replace the `Arc`, never during a read or a
    /// change.
    view: RwLock<Option<Arc<View>>>,
    stopping: AtomicBool,
}

impl Shared {
    pub(super) fn new(first: View) -> Shared {
        Shared { view: RwLock::new(Some(Arc::new(first))), stopping: AtomicBool::new(false) }
    }

    /// The latest view, unless the daemon is shutting down.
    pub(super) fn view(&self) -> Option<Arc<View>> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn publish(&self, v: View) {
        if !self.stopping() {
            *self.view.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(v));
        }
    }

    /// From now on requests are answered "shutting down".
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// Write the namespaces `engine` made to `state_file` (replacing it
/// atomically), for the next daemon to remove if this one dies.
pub(super) fn save(state_file: &Path, engine: &Engine) {
    let names = engine.owned_namespaces();
    let tmp = state_file.with_extension("json.tmp");
    if std::fs::write(&tmp, serde_json::to_vec(&names).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, state_file);
    }
}

/// Remove namespaces left by a daemon that died on this state directory.
pub(super) fn recover(state_file: &Path) {
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

pub(super) fn lock_dir(dir: &Path) -> Result<File, DaemonError> {
    std::fs::create_dir_all(dir).map_err(ioe("create", dir))?;
    let p = dir.join("lock");
    let f = File::create(&p).map_err(ioe("create", &p))?;
    // SAFETY: f is an open file for the duration of the call.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(DaemonError::StateLocked(dir.display().to_string()));
    }
    Ok(f)
}

/// Where the state file of a state directory is.
pub(super) fn state_file(dir: &Path) -> PathBuf {
    dir.join("namespaces.json")
}
