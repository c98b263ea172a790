//! Where the daemon runs: in the host's mount namespace (so `ip netns`
//! sees the containers' namespaces), and in the network namespace it was
//! asked to serve (`--netns`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::DaemonError;

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

/// Put the (still single-threaded) daemon where it must run: in the host
/// mount namespace, so the namespaces it bind-mounts under /var/run/netns are
/// visible to everyone even when it was started by `ip netns exec` (which
/// gives its child a private, slave mount namespace), and in the network
/// namespace it was asked to serve.
pub(super) fn enter(netns: Option<&str>) -> Result<(), DaemonError> {
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
