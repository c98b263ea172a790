//! Named network namespaces, made the way `ip netns add` makes them so that
//! `ip netns exec NAME …` sees ours and we see theirs: a file under
//! `/var/run/netns` with the namespace bind-mounted on it, under a shared
//! mount so that other mount namespaces see it too.
//!
//! Namespace membership is per thread. Work that must happen inside a
//! namespace (opening a netlink socket there, binding a listening socket)
//! runs on a short-lived scoped thread that `setns`es and is then discarded,
//! so the caller's thread never changes namespace. A socket keeps the
//! namespace it was created in, so it can be used from any thread afterwards.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where named namespaces live, as for iproute2.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Errors from namespace management.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A namespace with this name already exists.
    #[error("network namespace {0:?} already exists")]
    Exists(String),
    /// No namespace with this name exists.
    #[error("network namespace {0:?} does not exist")]
    NotFound(String),
    /// The name cannot be a namespace file name.
    #[error("invalid namespace name {0:?}")]
    InvalidName(String),
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Sys { op: &'static str, path: String, source: io::Error },
    /// The helper thread that entered the namespace panicked.
    #[error("namespace helper thread panicked")]
    ThreadPanicked,
}

type Result<T> = std::result::Result<T, NetnsError>;

fn sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NetnsError + 'a {
    move |source| NetnsError::Sys { op, path: path.display().to_string(), source }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths built here have no NUL")
}

/// The file that names namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Does a named namespace `name` exist?
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(NetnsError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// Make `/var/run/netns` exist and be a shared mount point, as iproute2 does.
fn prepare_run_dir() -> Result<()> {
    let dir = Path::new(NETNS_RUN_DIR);
    std::fs::create_dir_all(dir).map_err(sys("mkdir", dir))?;
    let c = cstr(dir);
    let none = CString::new("none").unwrap();
    for _ in 0..2 {
        // SAFETY: all pointers are valid NUL-terminated strings that outlive
        // the call; a null data pointer is allowed for propagation changes.
        let rc = unsafe {
            libc::mount(none.as_ptr(), c.as_ptr(), none.as_ptr(), libc::MS_SHARED | libc::MS_REC, std::ptr::null())
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(sys("make shared", dir)(err));
        }
        // Not a mount point yet: bind it onto itself, then retry.
        // SAFETY: as above.
        let rc = unsafe {
            libc::mount(c.as_ptr(), c.as_ptr(), none.as_ptr(), libc::MS_BIND | libc::MS_REC, std::ptr::null())
        };
        if rc != 0 {
            return Err(sys("bind mount", dir)(io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Create a new, empty network namespace named `name` (`ip netns add`).
pub fn create(name: &str) -> Result<PathBuf> {
    check_name(name)?;
    prepare_run_dir()?;
    let p = path(name);
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&p) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(NetnsError::Exists(name.to_string())),
        Err(e) => return Err(sys("create", &p)(e)),
    }
    let target = p.clone();
    let res = std::thread::spawn(move || -> Result<()> {
        // SAFETY: unshare only changes this thread's namespace; the thread
        // exits right after, so no other code runs in the new namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(sys("unshare", &target)(io::Error::last_os_error()));
        }
        let src = CString::new("/proc/thread-self/ns/net").unwrap();
        let none = CString::new("none").unwrap();
        let dst = cstr(&target);
        // SAFETY: valid NUL-terminated strings outliving the call.
        let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), none.as_ptr(), libc::MS_BIND, std::ptr::null()) };
        if rc != 0 {
            return Err(sys("bind mount", &target)(io::Error::last_os_error()));
        }
        Ok(())
    })
    .join()
    .map_err(|_| NetnsError::ThreadPanicked)?;
    if let Err(e) = res {
        let _ = std::fs::remove_file(&p);
        return Err(e);
    }
    Ok(p)
}

/// Delete the named namespace `name` (`ip netns del`). The namespace itself
/// goes away once no process and no open fd refers to it any more.
pub fn delete(name: &str) -> Result<()> {
    check_name(name)?;
    let p = path(name);
    if !p.exists() {
        return Err(NetnsError::NotFound(name.to_string()));
    }
    let c = cstr(&p);
    // SAFETY: valid NUL-terminated path; MNT_DETACH cannot fail on busy.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // EINVAL: not a mount point (a half-made entry); still unlink it.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(sys("umount", &p)(e));
        }
    }
    std::fs::remove_file(&p).map_err(sys("unlink", &p))?;
    Ok(())
}

/// Open a namespace file, for `setns` or `IFLA_NET_NS_FD`.
pub fn open(ns: &Path) -> Result<OwnedFd> {
    let f = File::open(ns).map_err(sys("open", ns))?;
    Ok(f.into())
}

/// Move the calling thread into the namespace at `ns`. Used right before
/// `exec`; everything else should use [`run_in`].
pub fn enter(ns: &Path) -> Result<()> {
    let fd = open(ns)?;
    // SAFETY: fd is a valid open namespace file for the duration of the call.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(sys("setns", ns)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Run `f` on a scoped thread that has entered the namespace at `ns`.
pub fn run_in<T: Send, F: FnOnce() -> T + Send>(ns: &Path, f: F) -> Result<T> {
    let fd = open(ns)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: fd is a valid open namespace file; setns only affects
            // this thread, which ends when the scope does.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(sys("setns", ns)(io::Error::last_os_error()));
            }
            drop(fd);
            Ok(f())
        })
        .join()
        .map_err(|_| NetnsError::ThreadPanicked)?
    })
}

/// The identity (device, inode) of the namespace at `ns`, for comparing
/// namespaces (two paths name the same namespace iff ids are equal).
pub fn id(ns: &Path) -> Result<(u64, u64)> {
    let m = std::fs::metadata(ns).map_err(sys("stat", ns))?;
    Ok((m.dev(), m.ino()))
}

/// The namespace of the calling thread.
pub fn current_id() -> Result<(u64, u64)> {
    id(Path::new("/proc/thread-self/ns/net"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniq(tag: &str) -> String {
        format!("tnu{}{}", std::process::id(), tag)
    }

    #[test]
    #[ignore = "needs root: creates a network namespace"]
    fn create_enter_delete() {
        let name = uniq("a");
        let p = create(&name).unwrap();
        assert!(exists(&name));
        assert!(matches!(create(&name), Err(NetnsError::Exists(_))));
        let inside = run_in(&p, || current_id().unwrap()).unwrap();
        assert_eq!(inside, id(&p).unwrap());
        assert_ne!(inside, current_id().unwrap());
        delete(&name).unwrap();
        assert!(!exists(&name));
        assert!(matches!(delete(&name), Err(NetnsError::NotFound(_))));
        assert!(matches!(create("a/b"), Err(NetnsError::InvalidName(_))));
    }
}
