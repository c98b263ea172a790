//! The uplink: the interface the dataplane sends and receives on itself to
//! reach outside the host's networks, and whose IPv4 address it owns.
//!
//! Two modes (`tapnet daemon --uplink-mode`):
//! - `direct`: the dataplane uses IFACE itself, with IFACE's MAC. The
//!   kernel must not hold the uplink address on IFACE: it would answer the
//!   replies of translated flows itself (with a RST or an ICMP unreachable),
//!   so tapnet refuses to start. Any other address the kernel has there
//!   keeps working.
//! - `macvlan`: tapnet creates a macvlan child of IFACE (bridge mode) with
//!   a MAC of its own and uses that, so the host keeps its own address on
//!   IFACE while tapnet owns another. Like every macvlan, the child cannot
//!   talk to its parent's own address: the host itself does not reach the
//!   uplink address, the rest of the LAN does. The child is deleted at
//!   shutdown, and by the next daemon if this one crashed.
//!
//! Frames move over one AF_PACKET socket per worker in a fanout group whose
//! BPF program steers each frame to the worker that owns its flow
//! (`dataplane::port::packet`, `dataplane::port::steer`).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use dataplane::port::{packet, PortQueue};
use dataplane::router::{Subnet, UplinkConfig};
use dataplane::wire::MacAddr;
use dataplane::PortRole;

use super::{Engine, EngineError, Result};
use crate::netlink::Netlink;

/// How the dataplane gets onto the uplink's LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkMode {
    /// Use IFACE itself; the kernel must not hold the uplink address there.
    Direct,
    /// Use a macvlan child of IFACE with its own MAC.
    Macvlan,
}

/// `tapnet daemon --uplink …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkOpts {
    pub iface: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mode: UplinkMode,
}

/// The uplink as set up.
#[derive(Debug, Clone)]
pub(super) struct Uplink {
    pub(super) opts: UplinkOpts,
    /// The interface the dataplane's sockets are bound to (IFACE, or the
    /// macvlan child).
    pub(super) link: String,
    /// Whether tapnet made `link` (and must delete it).
    pub(super) made: bool,
    pub(super) cfg: UplinkConfig,
    /// The sockets' descriptors, worker order (the dataplane owns them).
    pub(super) fds: Vec<RawFd>,
}

/// The uplink as a daemon taken over hands it to the new one (in the
/// takeover answer), followed by its sockets' descriptors, one per worker
/// in worker order: the new daemon uses the same link, MAC and sockets
/// (fanout group and steering program included) and makes nothing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandedUplink {
    pub iface: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mode: UplinkMode,
    /// The interface the sockets are bound to.
    pub link: String,
    pub mac: String,
    pub mtu: u32,
    /// Whether tapnet made `link` (the new daemon deletes it at shutdown).
    pub made: bool,
    /// `--snat-ports`, which the steering program was built with.
    pub snat_ports: (u16, u16),
    /// Descriptors that follow: one per worker.
    pub sockets: usize,
}

/// The name of the macvlan child tapnet makes on a parent of index `i`.
pub fn macvlan_name(parent_index: u32) -> String {
    format!("tnu{parent_index}")
}

fn nl_err(step: &'static str) -> impl FnOnce(crate::netlink::NetlinkError) -> EngineError {
    move |e| EngineError::Uplink(format!("{step}: {e}"))
}

impl Engine {
    /// Set up the uplink in the daemon's network namespace.
    pub(super) fn uplink_up(&mut self, opts: &UplinkOpts) -> Result<()> {
        let mut nl = Netlink::open().map_err(nl_err("open netlink"))?;
        let parent = nl
            .link_get(&opts.iface)
            .map_err(|_| EngineError::Uplink(format!("no interface {:?} in the daemon's namespace", opts.iface)))?;
        let held = nl.addrs_v4(parent.index).map_err(nl_err("list addresses"))?;
        if held.iter().any(|&(a, _)| a == opts.ip) {
            return Err(EngineError::Uplink(format!(
                "the kernel holds {} on {}: it would answer the replies of translated flows itself; \
                 remove the address from {} or use --uplink-mode macvlan",
                opts.ip, opts.iface, opts.iface
            )));
        }
        let (link, mac, mtu, made) = match opts.mode {
            UplinkMode::Direct => {
                let mac = parent.mac.map(MacAddr).ok_or_else(|| {
                    EngineError::Uplink(format!("{} has no Ethernet address: it cannot be an uplink", opts.iface))
                })?;
                if !parent.up {
                    nl.link_set_up(parent.index, true).map_err(nl_err("set uplink up"))?;
                }
                (parent.name.clone(), mac, parent.mtu, false)
            }
            UplinkMode::Macvlan => {
                let name = macvlan_name(parent.index);
                if let Ok(old) = nl.link_get(&name) {
                    // Left by a daemon that died.
                    nl.link_del(old.index).map_err(nl_err("remove stale macvlan"))?;
                }
                let mac = MacAddr::local_from_seed(random_u64());
                nl.link_add_macvlan(&name, parent.index, mac.octets()).map_err(nl_err("create macvlan"))?;
                let child = match nl.link_get(&name) {
                    Ok(c) => c,
                    Err(e) => return Err(nl_err("find macvlan")(e)),
                };
                // The kernel's IPv6 on the child would only add noise.
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
                if let Err(e) = nl.link_set_up(child.index, true) {
                    let _ = nl.link_del(child.index);
                    return Err(nl_err("set macvlan up")(e));
                }
                (name, mac, child.mtu, true)
            }
        };
        let undo = |nl: &mut Netlink| {
            if made {
                if let Ok(l) = nl.link_get(&link) {
                    let _ = nl.link_del(l.index);
                }
            }
        };
        let steering = dataplane::port::steer::Steering { uplink: opts.ip, snat_ports: self.cfg.snat_ports.clone() };
        let queues = match packet::open_fanout(link.as_str(), self.dp.workers(), None, &steering) {
            Ok(q) => q,
            Err(e) => {
                undo(&mut nl);
                return Err(EngineError::Uplink(format!("open packet sockets on {link}: {e}")));
            }
        };
        let port = match self.port_ids.alloc("port") {
            Ok(p) => p,
            Err(e) => {
                undo(&mut nl);
                return Err(e);
            }
        };
        let fds = queues.iter().map(|q| q.as_raw_fd()).collect();
        let queues = queues.into_iter().map(PortQueue::Packet).collect();
        if let Err(e) = self.dp.add_port(port, PortRole::Uplink, mtu, queues) {
            self.port_ids.release(port);
            undo(&mut nl);
            return Err(e.into());
        }
        let cfg = UplinkConfig {
            port,
            ip: opts.ip,
            subnet: Subnet::new(opts.ip, opts.prefix),
            mac,
            gateway: opts.gateway,
            mtu,
        };
        self.uplink = Some(Uplink { opts: opts.clone(), link, made, cfg, fds });
        Ok(())
    }

    /// The uplink and duplicates of its sockets, for a new daemon taking
    /// this one over. The dataplane keeps its own.
    pub fn handover_uplink(&self) -> std::io::Result<Option<(HandedUplink, Vec<OwnedFd>)>> {
        let Some(u) = &self.uplink else { return Ok(None) };
        let mut fds = Vec::with_capacity(u.fds.len());
        for &fd in &u.fds {
            // SAFETY: F_DUPFD_CLOEXEC only makes a new descriptor for the
            // file `fd` refers to, an uplink socket the dataplane holds
            // open while this engine has the uplink.
            let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if d < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: d is a descriptor just made, owned by nobody else.
            fds.push(unsafe { OwnedFd::from_raw_fd(d) });
        }
        let h = HandedUplink {
            iface: u.opts.iface.clone(),
            ip: u.opts.ip,
            prefix: u.opts.prefix,
            gateway: u.opts.gateway,
            mode: u.opts.mode,
            link: u.link.clone(),
            mac: u.cfg.mac.to_string(),
            mtu: u.cfg.mtu,
            made: u.made,
            snat_ports: (*self.cfg.snat_ports.start(), *self.cfg.snat_ports.end()),
            sockets: fds.len(),
        };
        Ok(Some((h, fds)))
    }

    /// After a takeover: the uplink's link is the new daemon's now, not to
    /// be deleted when this one lets go.
    pub fn forget_made_links(&mut self) {
        if let Some(u) = self.uplink.as_mut() {
            u.made = false;
        }
    }

    /// Take the uplink a daemon taken over handed over: its sockets, link
    /// and MAC, making nothing (the old daemon's options and `--snat-ports`
    /// replace this engine's, which the takeover leaves unset).
    pub(super) fn uplink_adopt(&mut self, h: &HandedUplink, fds: Vec<OwnedFd>) -> Result<()> {
        let bad = |why: String| EngineError::Uplink(format!("the uplink handed over: {why}"));
        if fds.len() != self.dp.workers() {
            return Err(bad(format!("{} sockets for {} workers", fds.len(), self.dp.workers())));
        }
        let mac: MacAddr = h.mac.parse().map_err(|_| bad(format!("bad MAC {:?}", h.mac)))?;
        let queues = packet::from_fds(fds).map_err(|e| bad(e.to_string()))?;
        let opts = UplinkOpts { iface: h.iface.clone(), ip: h.ip, prefix: h.prefix, gateway: h.gateway, mode: h.mode };
        self.cfg.uplink = Some(opts.clone());
        self.cfg.snat_ports = h.snat_ports.0..=h.snat_ports.1;
        let port = self.port_ids.alloc("port")?;
        let fds = queues.iter().map(|q| q.as_raw_fd()).collect();
        let queues = queues.into_iter().map(PortQueue::Packet).collect();
        if let Err(e) = self.dp.add_port(port, PortRole::Uplink, h.mtu, queues) {
            self.port_ids.release(port);
            return Err(e.into());
        }
        let cfg =
            UplinkConfig { port, ip: h.ip, subnet: Subnet::new(h.ip, h.prefix), mac, gateway: h.gateway, mtu: h.mtu };
        self.uplink = Some(Uplink { opts, link: h.link.clone(), made: h.made, cfg, fds });
        Ok(())
    }

    /// Take the uplink down: close its sockets, delete a macvlan we made.
    pub(super) fn uplink_down(&mut self) -> Result<()> {
        let Some(u) = self.uplink.take() else { return Ok(()) };
        self.dp.remove_port(u.cfg.port)?;
        self.port_ids.release(u.cfg.port);
        if u.made {
            let mut nl = Netlink::open().map_err(nl_err("open netlink"))?;
            if let Ok(l) = nl.link_get(&u.link) {
                nl.link_del(l.index).map_err(nl_err("delete macvlan"))?;
            }
        }
        Ok(())
    }

    /// The interface tapnet made for the uplink, if any (for recovery after
    /// a crash).
    pub fn made_links(&self) -> Vec<String> {
        self.uplink.iter().filter(|u| u.made).map(|u| u.link.clone()).collect()
    }

    /// The uplink's port and its name as `stats` shows it.
    pub(super) fn uplink_port(&self) -> Option<(dataplane::port::PortId, String)> {
        self.uplink.as_ref().map(|u| (u.cfg.port, format!("uplink:{}", u.link)))
    }
}

/// 64 random bits from the kernel.
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: b is valid for writes of 8 bytes; getrandom writes at most that.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.as_nanos() as u64 ^ u64::from(std::process::id());
    }
    u64::from_ne_bytes(b)
}

/// Parse `A.B.C.D/LEN` for `--uplink-ip`.
pub fn parse_cidr_host(s: &str) -> std::result::Result<(Ipv4Addr, u8), String> {
    let bad = || format!("invalid --uplink-ip {s:?}: expected an address with its prefix, like 192.0.2.10/24");
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    if prefix == 0 || prefix > 32 || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        return Err(bad());
    }
    Ok((ip, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplink_ip_parsing() {
        assert_eq!(parse_cidr_host("192.0.2.10/24"), Ok((Ipv4Addr::new(192, 0, 2, 10), 24)));
        for bad in ["192.0.2.10", "192.0.2.10/33", "192.0.2.10/0", "x/24", "0.0.0.0/8", "224.0.0.1/4", "1.2.3.4/-1"] {
            assert!(parse_cidr_host(bad).is_err(), "{bad}");
        }
        assert_eq!(macvlan_name(4_000_000_000).len(), 13);
    }
}
