//! Endpoints: a container's interface on a network, a multi-queue TAP whose
//! queues go to the dataplane's workers. Attaching one allocates its
//! address, MAC and port and undoes all of it if a later step fails.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use dataplane::bridge::Pin;
use dataplane::port::{PortId, PortQueue};
use dataplane::wire::MacAddr;
use dataplane::PortRole;

use super::{Engine, EngineError, Result};
use crate::ipam::mac_for;
use crate::sandbox::{self, EndpointSpec};

#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) network: String,
    pub(super) ifname: String,
    pub(super) mac: MacAddr,
    pub(super) addr: Ipv4Addr,
    pub(super) port: PortId,
    /// The descriptors of the TAP's queues, which the dataplane owns until
    /// the port is removed (for [`Engine::shutdown`]).
    pub(super) queue_fds: Vec<RawFd>,
}

/// Make the TAP whose queues the dataplane holds as `fds` persistent (it
/// then outlives the daemon, for the next one to adopt) or not (it goes
/// with its last queue). Best effort: a TAP that stays non-persistent is
/// only lost to a crash, and one that stays persistent goes with its
/// namespace.
pub(super) fn set_persist(fds: &[RawFd], on: bool) {
    if let Some(&fd) = fds.first() {
        // SAFETY: the dataplane holds the queue `fd` open until its port
        // is removed, which only the engine thread (the caller) does.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Err(e) = dataplane::port::tap::set_persist(fd, on) {
            eprintln!("tapnet: TUNSETPERSIST {on}: {e}");
        }
    }
}

impl Engine {
    /// Validate an endpoint's network, address and MAC without changing anything.
    pub(super) fn check_endpoint(&self, net: &str, ip: Option<Ipv4Addr>, mac: Option<MacAddr>) -> Result<()> {
        let n = self.networks.get(net).ok_or_else(|| EngineError::no_network(net))?;
        match ip {
            Some(a) => n.ipam.check(a)?,
            None => {
                n.ipam.next_free()?;
            }
        }
        if let Some(m) = mac {
            if !m.is_unicast() {
                return Err(EngineError::MacNotUnicast(m));
            }
            if m == n.gateway_mac {
                return Err(EngineError::MacIsGateway(m, net.into()));
            }
            if self.containers.values().flat_map(|c| &c.endpoints).any(|e| e.network == net && e.mac == m) {
                return Err(EngineError::MacTaken(m, net.into()));
            }
        }
        Ok(())
    }

    /// Give container `cname` a new interface on network `net`.
    pub(super) fn attach(
        &mut self,
        cname: &str,
        net: &str,
        ip: Option<Ipv4Addr>,
        mac: Option<MacAddr>,
    ) -> Result<Endpoint> {
        self.check_endpoint(net, ip, mac)?;
        let c = self.containers.get(cname).ok_or_else(|| EngineError::no_container(cname))?;
        let sandbox = c.sandbox.clone();
        let ifname = sandbox::next_ifname(&sandbox)?;
        let default_route = !sandbox::has_default_route(&sandbox)?;
        let n = self.networks.get_mut(net).expect("checked");
        let addr = match ip {
            Some(a) => n.ipam.reserve(a)?,
            None => n.ipam.allocate()?,
        };
        let mac = mac.unwrap_or_else(|| mac_for(addr));
        let (net_id, mtu, gateway, prefix) = (n.net, n.mtu, n.ipam.gateway(), n.ipam.subnet().prefix);
        let pin = n.port_security.then_some(Pin { mac, ip: addr });
        let port = match self.port_ids.alloc("port") {
            Ok(p) => p,
            Err(e) => {
                self.networks.get_mut(net).expect("checked").ipam.release(addr);
                return Err(e);
            }
        };
        let spec = EndpointSpec {
            sandbox: &sandbox,
            ifname: &ifname,
            mac,
            addr,
            prefix,
            gateway,
            mtu,
            default_route,
            queues: self.dp.workers(),
        };
        let res = sandbox::attach(&spec).map_err(EngineError::from).and_then(|qs| {
            let fds: Vec<RawFd> = qs.iter().map(|q| q.as_raw_fd()).collect();
            let qs = qs.into_iter().map(PortQueue::Tap).collect();
            self.dp.add_port_pinned(port, PortRole::Access(net_id), mtu, pin, qs)?;
            set_persist(&fds, true);
            Ok(fds)
        });
        let queue_fds = match res {
            Ok(fds) => fds,
            Err(e) => {
                self.networks.get_mut(net).expect("checked").ipam.release(addr);
                self.port_ids.release(port);
                return Err(e);
            }
        };
        let ep = Endpoint { network: net.into(), ifname, mac, addr, port, queue_fds };
        self.containers.get_mut(cname).expect("checked").endpoints.push(ep.clone());
        Ok(ep)
    }

    /// Remove an endpoint: its queues close, so its TAP device disappears.
    pub(super) fn detach(&mut self, ep: &Endpoint) -> Result<()> {
        set_persist(&ep.queue_fds, false);
        self.dp.remove_port(ep.port)?;
        if let Some(n) = self.networks.get_mut(&ep.network) {
            n.fdb.flush_port(ep.port);
            n.ipam.release(ep.addr);
        }
        self.port_ids.release(ep.port);
        Ok(())
    }
}
