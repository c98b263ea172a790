//! The daemon's state: the engine shared by the API threads, the state
//! directory's lock and `namespaces.json`, and the recovery of what a
//! daemon that died left behind.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{ioe, DaemonError};
use crate::engine::Engine;

/// What the API threads, the sweeper and the main thread share.
pub(super) struct Shared {
    pub(super) engine: Mutex<Option<Engine>>,
    pub(super) state_file: PathBuf,
    pub(super) socket: PathBuf,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Option<Engine>> {
        // A panic while holding the lock must not wedge the daemon: the
        // engine's state is still consistent between operations.
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn save(&self, engine: &Engine) {
        let names = engine.owned_namespaces();
        let tmp = self.state_file.with_extension("json.tmp");
        if std::fs::write(&tmp, serde_json::to_vec(&names).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.state_file);
        }
    }

    /// Tear everything down; returns the problems met on the way.
    pub(super) fn shutdown(&self) -> Vec<String> {
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
