//! `tapnet exec NAME -- CMD…`: run a command inside a container's network
//! namespace, as `ip netns exec` does.

use std::os::unix::process::CommandExt;
use std::path::Path;

use super::call;
use crate::api::{self, Request};

/// Enter the container's network namespace and exec the command, like
/// `ip netns exec`: a private mount namespace gets a fresh /sys so tools that
/// read /sys/class/net see the container's interfaces.
pub(super) fn run(sock: &Path, name: &str, cmd: &[String]) -> Result<(), String> {
    let (ci, _): (api::ContainerInfo, _) = call(sock, Request::ContainerInspect { name: name.to_string() })?;
    let key = Path::new(&ci.sandbox_key);
    crate::netns::enter(key).map_err(|e| e.to_string())?;
    let nsname = key.strip_prefix(crate::netns::NETNS_RUN_DIR).ok().and_then(|p| p.to_str());
    remount_sys(nsname);
    let err = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
    Err(format!("exec {}: {err}", cmd[0]))
}

fn remount_sys(nsname: Option<&str>) {
    // Best effort, as in iproute2: without it only /sys is stale.
    // SAFETY: plain syscalls on valid NUL-terminated strings; this process
    // is single-threaded here and about to exec.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return;
        }
        let none = c"none";
        if libc::mount(none.as_ptr(), c"/".as_ptr(), std::ptr::null(), libc::MS_SLAVE | libc::MS_REC, std::ptr::null())
            != 0
        {
            return;
        }
        libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH);
        libc::mount(c"sysfs".as_ptr(), c"/sys".as_ptr(), c"sysfs".as_ptr(), 0, std::ptr::null());
    }
    // Like `ip netns exec`: /etc/netns/NAME/FILE is bind-mounted over
    // /etc/FILE (tapnet puts each container's hosts file there).
    let Some(name) = nsname else { return };
    let Ok(entries) = std::fs::read_dir(Path::new(crate::hosts::ETC_NETNS).join(name)) else { return };
    for e in entries.flatten() {
        let src = e.path();
        let dst = Path::new("/etc").join(e.file_name());
        let (Ok(src), Ok(dst)) = (
            std::ffi::CString::new(src.as_os_str().as_encoded_bytes()),
            std::ffi::CString::new(dst.as_os_str().as_encoded_bytes()),
        ) else {
            continue;
        };
        // SAFETY: valid NUL-terminated paths; a failed bind is ignored.
        unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), c"none".as_ptr(), libc::MS_BIND, std::ptr::null()) };
    }
}
