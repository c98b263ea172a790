//! The daemon's state: the view that reads are served from, the state
//! directory's lock and `state.json` (what the engine saves for the next
//! daemon, with the intent of a change under way), and the settling of
//! what a daemon that died in the middle of a change left behind.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use std::io::Write;

use super::{ioe, DaemonError};
use crate::api::Request;
use crate::engine::{Intent, Saved, View, STATE_VERSION};

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

/// The state files of a state directory. `state.json` is written whole
/// and atomically (temporary file, fsync, rename) before a change is
/// acknowledged. `intent.json` holds the intent of a change under way:
/// written (temporary file, rename) before the change starts, removed once
/// `state.json` has its result.
///
/// Why the intent is not fsynced, nor the directory: what they guard is
/// only meaningful while the kernel that holds the namespaces and TAPs
/// runs (a power loss or reboot takes those away), and against the death
/// of the daemon alone a rename is atomic and the page cache enough. The
/// fsync of `state.json` is kept so that even after a power loss the file
/// is the old or the new one, never a torn one that would stop the next
/// daemon; a torn `intent.json` can only come from a power loss, after
/// which there is nothing to undo, so it is ignored with a log line. This
/// halves the cost of a change (measured: `the_cost_of_a_save`).
pub(super) struct Store {
    path: PathBuf,
    tmp: PathBuf,
    intent: PathBuf,
    intent_tmp: PathBuf,
}

impl Store {
    pub(super) fn new(dir: &Path) -> Store {
        Store {
            path: dir.join(STATE_FILE),
            tmp: dir.join(STATE_TMP),
            intent: dir.join(INTENT_FILE),
            intent_tmp: dir.join(INTENT_TMP),
        }
    }

    /// Replace the state file with `saved` (its intent is not written),
    /// then remove the intent file.
    pub(super) fn save(&self, saved: &Saved) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&Saved { intent: None, ..saved.clone() }).map_err(std::io::Error::other)?;
        let mut f = File::create(&self.tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path)?;
        match std::fs::remove_file(&self.intent) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Record the intent of the change about to start.
    pub(super) fn save_intent(&self, intent: &Intent) -> std::io::Result<()> {
        std::fs::write(&self.intent_tmp, serde_json::to_vec(intent).map_err(std::io::Error::other)?)?;
        std::fs::rename(&self.intent_tmp, &self.intent)
    }

    /// Save, logging a failure (the change is made and stays made).
    pub(super) fn save_or_log(&self, saved: &Saved) {
        if let Err(e) = self.save(saved) {
            eprintln!("tapnet: could not save the state to {}: {e}", self.path.display());
        }
    }

    /// The saved state; an empty one if there is no file. A file that
    /// cannot be read, parsed or is of another version is an error
    /// (nothing is touched).
    pub(super) fn load(&self) -> Result<Saved, DaemonError> {
        let bad = |why: String| DaemonError::BadState(self.path.display().to_string(), why);
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Saved { version: STATE_VERSION, ..Saved::default() })
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        // The version first, so a newer format says so rather than "unknown field".
        #[derive(serde::Deserialize)]
        struct Version {
            version: Option<u32>,
        }
        match serde_json::from_slice::<Version>(&bytes) {
            Ok(Version { version: Some(STATE_VERSION) }) => {}
            Ok(Version { version: Some(v) }) => {
                return Err(bad(format!("version {v}, this tapnet reads version {STATE_VERSION}")))
            }
            Ok(Version { version: None }) => return Err(bad("no version field".into())),
            Err(e) => return Err(bad(format!("not a tapnet state file: {e}"))),
        }
        let mut saved: Saved =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a tapnet state file: {e}")))?;
        if let Ok(b) = std::fs::read(&self.intent) {
            match serde_json::from_slice(&b) {
                Ok(i) => saved.intent = Some(i),
                Err(e) => eprintln!("tapnet: ignored a torn {}: {e}", self.intent.display()),
            }
        }
        Ok(saved)
    }
}

/// What the daemon saves before a change that makes or removes a namespace
/// or a TAP (`None`: nothing to record).
pub(super) fn intent_of(req: &Request) -> Option<Intent> {
    match req {
        Request::ContainerCreate(s) => match s.network.as_str() {
            "host" => None,
            n if n.starts_with("container:") => None,
            _ => Some(Intent::ContainerCreate { name: s.name.clone() }),
        },
        Request::ContainerRm { name } => Some(Intent::ContainerRm { name: name.clone() }),
        Request::NetworkConnect { network, container, .. } => {
            Some(Intent::NetworkConnect { container: container.clone(), network: network.clone() })
        }
        _ => None,
    }
}

/// Finish or undo the change a daemon that died was making, so that the
/// state and the system agree: an interrupted create is undone (its
/// namespace, TAP and files removed), an interrupted rm is finished, the
/// TAP an interrupted connect may have made is removed.
pub(super) fn settle(saved: &mut Saved) {
    let Some(intent) = saved.intent.take() else { return };
    let known = |saved: &Saved, n: &str| saved.containers.iter().position(|c| c.name == n);
    match intent {
        Intent::ContainerCreate { name } => {
            if known(saved, &name).is_none() {
                remove_namespace(&name, "undid the interrupted create of container");
            }
        }
        Intent::ContainerRm { name } => {
            if let Some(i) = known(saved, &name) {
                // Whoever shared its namespace could not be removed with it
                // (rm refuses): only the owner goes.
                let c = saved.containers.remove(i);
                if !c.mode.starts_with("container:") && c.mode != "host" {
                    remove_namespace(&name, "finished the interrupted removal of container");
                } else {
                    eprintln!("tapnet: finished the interrupted removal of container {name}");
                }
            }
        }
        Intent::NetworkConnect { container, network } => {
            let Some(i) = known(saved, &container) else { return };
            if !crate::netns::exists(&container) {
                return;
            }
            let keep: Vec<&str> = saved.containers[i].endpoints.iter().map(|e| e.ifname.as_str()).collect();
            match crate::sandbox::remove_stray_endpoints(&crate::netns::path(&container), &keep) {
                Ok(gone) if !gone.is_empty() => eprintln!(
                    "tapnet: undid the interrupted connect of container {container} to {network}: removed {}",
                    gone.join(", ")
                ),
                Ok(_) => {}
                Err(e) => eprintln!("tapnet: container {container}: could not undo an interrupted connect: {e}"),
            }
        }
    }
}

fn remove_namespace(name: &str, what: &str) {
    crate::hosts::remove(name);
    if crate::netns::exists(name) {
        match crate::netns::delete(name) {
            Ok(()) => eprintln!("tapnet: {what} {name}"),
            Err(e) => eprintln!("tapnet: could not remove namespace {name}: {e}"),
        }
    }
}

/// Remove namespaces listed by a daemon of the previous format
/// (`namespaces.json`, which only listed them for removal).
pub(super) fn recover_legacy(dir: &Path) {
    let state_file = dir.join("namespaces.json");
    let Ok(bytes) = std::fs::read(&state_file) else { return };
    let names: Vec<String> = serde_json::from_slice(&bytes).unwrap_or_default();
    for n in names {
        remove_namespace(&n, "removed a namespace left by a previous daemon:");
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

/// The state file in a state directory, and its temporary twin.
const STATE_FILE: &str = "state.json";
const STATE_TMP: &str = "state.json.tmp";
const INTENT_FILE: &str = "intent.json";
const INTENT_TMP: &str = "intent.json.tmp";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_and_bad_files_refused() {
        let dir = std::env::temp_dir().join(format!("tapnet-state-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let st = Store::new(&dir);
        // No file: an empty state.
        assert!(st.load().unwrap().containers.is_empty());
        let s = Saved { version: STATE_VERSION, ..Default::default() };
        st.save(&s).unwrap();
        assert_eq!(st.load().unwrap(), s);
        assert!(!dir.join(STATE_TMP).exists());
        // An intent comes back with the state, until the next save.
        let i = Intent::ContainerRm { name: "x".into() };
        st.save_intent(&i).unwrap();
        assert_eq!(st.load().unwrap().intent, Some(i));
        std::fs::write(dir.join(INTENT_FILE), "{torn").unwrap();
        assert_eq!(st.load().unwrap().intent, None);
        st.save(&s).unwrap();
        assert!(!dir.join(INTENT_FILE).exists());
        for (text, says) in [
            ("{garbage", "not a tapnet state file"),
            (r#"{"version":99,"networks":[]}"#, "version 99, this tapnet reads version 1"),
            (r#"{"networks":[]}"#, "no version field"),
            (r#"{"version":1,"networks":[],"containers":[],"x":1}"#, "unknown field"),
        ] {
            std::fs::write(dir.join(STATE_FILE), text).unwrap();
            let e = st.load().unwrap_err().to_string();
            assert!(e.contains(says) && !e.contains('\n'), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What saving costs per change (twice for a create: intent, then
    /// result), at 1 and 500 containers; printed, with a loose bound.
    #[test]
    fn the_cost_of_a_save() {
        use crate::engine::{SavedContainer, SavedEndpoint, SavedNetwork};
        let dir = std::env::temp_dir().join(format!("tapnet-state-cost-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let st = Store::new(&dir);
        let state = |n: u32| Saved {
            version: STATE_VERSION,
            networks: vec![SavedNetwork {
                spec: crate::api::NetworkSpec {
                    name: "n1".into(),
                    subnet: "10.160.0.0/22".into(),
                    ..Default::default()
                },
                id: "0123456789ab".into(),
                fdb: vec![],
            }],
            containers: (0..n)
                .map(|i| SavedContainer {
                    name: format!("t12345sc{i}"),
                    id: "0123456789ab".into(),
                    mode: "n1".into(),
                    endpoints: vec![SavedEndpoint {
                        network: "n1".into(),
                        ifname: "eth0".into(),
                        mac: "02:42:0a:a0:00:02".into(),
                        addr: std::net::Ipv4Addr::from(0x0aa0_0000 + i + 2),
                        port: i as u16,
                    }],
                    published: vec![],
                })
                .collect(),
            intent: None,
        };
        for n in [1, 500] {
            let s = state(n);
            let mut times: Vec<std::time::Duration> = (0..21)
                .map(|_| {
                    let t0 = std::time::Instant::now();
                    st.save(&s).unwrap();
                    t0.elapsed()
                })
                .collect();
            times.sort();
            let size = std::fs::metadata(dir.join(STATE_FILE)).unwrap().len();
            eprintln!("state save at N={n}: median {:?}, max {:?} ({size} bytes)", times[10], times[20]);
            assert!(times[10] < std::time::Duration::from_millis(200), "{times:?}");
        }
        let i = Intent::ContainerCreate { name: "t12345sc499".into() };
        let mut times: Vec<std::time::Duration> = (0..21)
            .map(|_| {
                let t0 = std::time::Instant::now();
                st.save_intent(&i).unwrap();
                t0.elapsed()
            })
            .collect();
        times.sort();
        eprintln!("intent record: median {:?}, max {:?}", times[10], times[20]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn intents_only_for_changes_that_make_namespaces_or_taps() {
        let create = |net: &str| {
            Request::ContainerCreate(crate::api::ContainerSpec {
                name: "a".into(),
                network: net.into(),
                ip: None,
                mac: None,
                publish: vec![],
            })
        };
        assert_eq!(intent_of(&create("n1")), Some(Intent::ContainerCreate { name: "a".into() }));
        assert_eq!(intent_of(&create("none")), Some(Intent::ContainerCreate { name: "a".into() }));
        assert_eq!(intent_of(&create("host")), None);
        assert_eq!(intent_of(&create("container:b")), None);
        assert_eq!(intent_of(&Request::NetworkRm { name: "n".into() }), None);
    }
}
