//! Container plumbing: a container's network namespace (its "sandbox", in
//! Docker's words) and the TAP endpoints inside it. Everything goes through
//! netlink, ioctls and procfs; nothing runs `ip`.
//!
//! An endpoint is made inside the sandbox, on a thread that has entered
//! it: open the TAP's queues as `ethN` (a TAP belongs to the namespace of
//! whoever opens `/dev/net/tun`), set its MAC, MTU and root qdisc
//! (`noqueue`, see [`Netlink::link_set_noqueue`]), add the address, bring
//! it up and add the default route. The queues' descriptors work
//! from any thread afterwards. The engine makes the TAP persistent once
//! the dataplane holds its queues, so it outlives a daemon that dies or
//! stops with `--keep`, and the next daemon re-attaches queues to it
//! ([`reopen`]). It goes with its namespace, or when the engine clears
//! its persistence before closing its queues.
//!
//! Making the TAP in the daemon's namespace and moving it in, as this did
//! before, cost an RCU barrier per move in the kernel
//! (`dev_change_net_namespace`): 20 to 30 ms, most of a container create.

use std::net::Ipv4Addr;
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
    netns::run_in(spec.sandbox, || -> Result<Vec<TapQueue>, SandboxError> {
        // On any error below the queues close, and the TAP goes with them.
        let queues = tap::open_multiqueue(spec.ifname, spec.queues, tap::DEFAULT_OFFLOADS)?;
        let mut c = Netlink::open().map_err(nl("open netlink in namespace"))?;
        let idx = c.link_index(spec.ifname).map_err(nl("find new TAP"))?;
        c.link_set_mac(idx, spec.mac.octets()).map_err(nl("set MAC"))?;
        c.link_set_mtu(idx, spec.mtu).map_err(nl("set MTU"))?;
        c.link_set_noqueue(idx).map_err(nl("set qdisc"))?;
        c.addr_add_v4(idx, spec.addr, spec.prefix).map_err(nl("add address"))?;
        c.link_set_up(idx, true).map_err(nl("set link up"))?;
        if spec.default_route {
            c.route_add_v4(Ipv4Addr::UNSPECIFIED, 0, Some(spec.gateway), Some(idx)).map_err(nl("add default route"))?;
        }
        Ok(queues)
    })?
}

/// Attach `queues` new queues to the existing (persistent) TAP `ifname`
/// in the sandbox: the endpoint as a previous daemon left it, with its
/// address, MAC and routes. `Ok(None)` if there is no such interface.
pub fn reopen(sandbox: &Path, ifname: &str, queues: usize) -> Result<Option<Vec<TapQueue>>, SandboxError> {
    dataplane::port::check_ifname(ifname).map_err(TapError::from)?;
    netns::run_in(sandbox, || -> Result<Option<Vec<TapQueue>>, SandboxError> {
        let mut c = Netlink::open().map_err(nl("open netlink in namespace"))?;
        if !c.links().map_err(nl("list links"))?.iter().any(|l| l.name == ifname) {
            return Ok(None);
        }
        Ok(Some(tap::open_multiqueue(ifname, queues, tap::DEFAULT_OFFLOADS)?))
    })?
}

/// Delete the `ethN` TAPs of the sandbox that are not in `keep`
/// (what an interrupted `network connect` may have left); returns their
/// names.
pub fn remove_stray_endpoints(sandbox: &Path, keep: &[&str]) -> Result<Vec<String>, SandboxError> {
    netns::run_in(sandbox, || -> Result<Vec<String>, SandboxError> {
        let mut c = Netlink::open().map_err(nl("open netlink in namespace"))?;
        let mut gone = Vec::new();
        for l in c.links().map_err(nl("list links"))? {
            if l.kind.as_deref() == Some("tun") && l.name.starts_with("eth") && !keep.contains(&l.name.as_str()) {
                c.link_del(l.index).map_err(nl("delete stray interface"))?;
                gone.push(l.name);
            }
        }
        Ok(gone)
    })?
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
