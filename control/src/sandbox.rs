//! Container plumbing: a container's network namespace (its "sandbox", in
//! Docker's words) and the TAP endpoints inside it. Everything goes through
//! netlink, ioctls and procfs; nothing runs `ip`.
//!
//! An endpoint is made in four steps: open the TAP's queues in the daemon's
//! namespace under a temporary name, set its MAC and MTU, move it into the
//! sandbox renaming it to `ethN` in the same netlink message, then (inside the
//! sandbox) add the address, bring it up and add the default route. The TAP
//! is not persistent: it disappears when the dataplane closes its queues.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use dataplane::port::tap::{self, TapError, TapQueue};
use dataplane::wire::MacAddr;

use crate::netlink::{Netlink, NetlinkError};
use crate::netns::{self, NetnsError};

/// Errors from building or tearing down a sandbox or endpoint.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Tap(#[from] TapError),
    /// A netlink step failed.
    #[error("{step}: {source}")]
    Netlink { step: &'static str, source: NetlinkError },
    /// Writing a sysctl inside the sandbox failed.
    #[error("sysctl {path}: {source}")]
    Sysctl { path: &'static str, source: std::io::Error },
}

fn nl(step: &'static str) -> impl FnOnce(NetlinkError) -> SandboxError {
    move |source| SandboxError::Netlink { step, source }
}

/// Create the namespace `name`, with `lo` up and IPv6 off (as Docker does on
/// IPv4-only networks; it keeps stray router and neighbour solicitations off
/// the bridge).
pub fn create(name: &str) -> Result<PathBuf, SandboxError> {
    let path = netns::create(name)?;
    let setup = netns::run_in(&path, || -> Result<(), SandboxError> {
        for p in ["/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"] {
            // A kernel without IPv6 has no such file, which is fine.
            if Path::new(p).exists() {
                std::fs::write(p, "1").map_err(|source| SandboxError::Sysctl { path: p, source })?;
            }
        }
        let mut nlk = Netlink::open().map_err(nl("open netlink"))?;
        let lo = nlk.link_index("lo").map_err(nl("find lo"))?;
        nlk.link_set_up(lo, true).map_err(nl("set lo up"))
    });
    match setup {
        Ok(Ok(())) => Ok(path),
        Ok(Err(e)) => {
            let _ = netns::delete(name);
            Err(e)
        }
        Err(e) => {
            let _ = netns::delete(name);
            Err(e.into())
        }
    }
}

/// Delete the namespace `name`; every interface in it goes with it.
pub fn delete(name: &str) -> Result<(), SandboxError> {
    Ok(netns::delete(name)?)
}

/// What an endpoint looks like inside its sandbox.
#[derive(Debug, Clone)]
pub struct EndpointSpec<'a> {
    pub sandbox: &'a Path,
    /// Name inside the sandbox, e.g. `eth0`.
    pub ifname: &'a str,
    /// Unique transient name in the daemon's namespace.
    pub tmp_name: &'a str,
    pub mac: MacAddr,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    /// Add `default via gateway` (for the container's first interface).
    pub default_route: bool,
    /// One queue per dataplane worker.
    pub queues: usize,
}

/// Make the endpoint and return its TAP queues (dropping them removes it).
pub fn attach(spec: &EndpointSpec<'_>) -> Result<Vec<TapQueue>, SandboxError> {
    dataplane::port::check_ifname(spec.ifname).map_err(TapError::from)?;
    let queues = tap::open_multiqueue(spec.tmp_name, spec.queues, tap::DEFAULT_OFFLOADS)?;
    let mut host = Netlink::open().map_err(nl("open netlink"))?;
    let idx = host.link_index(spec.tmp_name).map_err(nl("find new TAP"))?;
    host.link_set_mac(idx, spec.mac.octets()).map_err(nl("set MAC"))?;
    host.link_set_mtu(idx, spec.mtu).map_err(nl("set MTU"))?;
    let nsfd = netns::open(spec.sandbox)?;
    host.link_move_to_netns(idx, nsfd.as_fd(), Some(spec.ifname)).map_err(nl("move TAP into namespace"))?;
    netns::run_in(spec.sandbox, || -> Result<(), SandboxError> {
        let mut c = Netlink::open().map_err(nl("open netlink in namespace"))?;
        let idx = c.link_index(spec.ifname).map_err(nl("find moved TAP"))?;
        c.addr_add_v4(idx, spec.addr, spec.prefix).map_err(nl("add address"))?;
        c.link_set_up(idx, true).map_err(nl("set link up"))?;
        if spec.default_route {
            c.route_add_v4(Ipv4Addr::UNSPECIFIED, 0, Some(spec.gateway), Some(idx)).map_err(nl("add default route"))?;
        }
        Ok(())
    })??;
    Ok(queues)
}

/// The first `ethN` name not used inside the sandbox.
pub fn next_ifname(sandbox: &Path) -> Result<String, SandboxError> {
    let names = netns::run_in(sandbox, || -> Result<Vec<String>, SandboxError> {
        let mut c = Netlink::open().map_err(nl("open netlink in namespace"))?;
        Ok(c.links().map_err(nl("list links"))?.into_iter().map(|l| l.name).collect())
    })??;
    Ok((0..).map(|i| format!("eth{i}")).find(|n| !names.contains(n)).expect("unbounded range"))
}

/// Does the sandbox have a default route already?
pub fn has_default_route(sandbox: &Path) -> Result<bool, SandboxError> {
    netns::run_in(sandbox, || -> Result<bool, SandboxError> {
        let mut c = Netlink::open().map_err(nl("open netlink in namespace"))?;
        Ok(c.routes_v4().map_err(nl("list routes"))?.iter().any(|r| r.prefix_len == 0))
    })?
}
