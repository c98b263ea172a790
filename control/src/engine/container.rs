//! Containers: their namespace ("sandbox"), their network mode (a network,
//! none, host, container:OTHER), connecting and disconnecting networks,
//! and their own `/etc/netns/NAME` files (`hosts`, `resolv.conf`).

use std::path::{Path, PathBuf};

use dataplane::wire::MacAddr;

use super::endpoint::Endpoint;
use super::ids::check_name;
use super::publish::{self, Mapping};
use super::{name_list, Engine, EngineError, Result};
use crate::api::{ContainerEndpoint, ContainerInfo, ContainerSpec, PublishedPort};
use crate::ipam::parse_addr;
use crate::sandbox;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode {
    Bridge(String),
    None,
    Host,
    Container(String),
}

impl Mode {
    pub(super) fn parse(s: &str) -> Mode {
        match s {
            "none" => Mode::None,
            "host" => Mode::Host,
            _ => match s.strip_prefix("container:") {
                Some(o) => Mode::Container(o.to_string()),
                None => Mode::Bridge(s.to_string()),
            },
        }
    }
    pub(super) fn text(&self) -> String {
        match self {
            Mode::Bridge(n) => n.clone(),
            Mode::None => "none".into(),
            Mode::Host => "host".into(),
            Mode::Container(o) => format!("container:{o}"),
        }
    }
}

pub(super) struct Container {
    pub(super) id: String,
    pub(super) mode: Mode,
    /// The namespace file to enter; owned only for bridge and none modes.
    pub(super) sandbox: PathBuf,
    pub(super) owns_sandbox: bool,
    pub(super) endpoints: Vec<Endpoint>,
    /// Ports published on the uplink address (to the first endpoint).
    pub(super) published: Vec<Mapping>,
}

impl Engine {
    /// Check `-p` mappings for container `name` on network `net` without
    /// changing anything.
    fn check_publish(&self, name: &str, net: Option<&str>, specs: &[String]) -> Result<Vec<Mapping>> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let Some(net) = net else { return Err(EngineError::NeedsNetwork("-p/--publish")) };
        let Some(u) = self.uplink.as_ref() else { return Err(EngineError::PublishNeedsUplink) };
        if self.networks.get(net).is_some_and(|n| n.internal) {
            return Err(EngineError::PublishInternal(net.into()));
        }
        let mut all: Vec<Mapping> = Vec::new();
        for s in specs {
            for m in publish::parse(s, u.opts.ip, &self.cfg.snat_ports)? {
                let taken = |o: &Mapping| o.proto == m.proto && o.host_port == m.host_port;
                let by = if all.iter().any(taken) {
                    Some(name.to_string())
                } else {
                    self.containers.iter().find(|(_, c)| c.published.iter().any(taken)).map(|(n, _)| n.clone())
                };
                if let Some(by) = by {
                    return Err(EngineError::PortPublished {
                        port: m.host_port,
                        proto: publish::proto_name(m.proto),
                        by,
                    });
                }
                all.push(m);
            }
        }
        Ok(all)
    }

    pub fn container_create(&mut self, spec: &ContainerSpec) -> Result<ContainerInfo> {
        let (name, network, ip, mac) =
            (spec.name.as_str(), spec.network.as_str(), spec.ip.as_deref(), spec.mac.as_deref());
        check_name("container", name, 15)?;
        if self.containers.contains_key(name) {
            return Err(EngineError::ContainerExists(name.into()));
        }
        let mode = Mode::parse(network);
        let ip = ip.map(parse_addr).transpose()?;
        let mac = mac
            .map(|m| m.parse::<MacAddr>().map_err(|_| dataplane::wire::ethernet::ParseMacError(crate::api::cut(m))))
            .transpose()?;
        if !matches!(mode, Mode::Bridge(_)) {
            if ip.is_some() {
                return Err(EngineError::NeedsNetwork("--ip"));
            }
            if mac.is_some() {
                return Err(EngineError::NeedsNetwork("--mac"));
            }
        }
        let published =
            self.check_publish(name, if let Mode::Bridge(n) = &mode { Some(n.as_str()) } else { None }, &spec.publish)?;
        let (sandbox, owns) = match &mode {
            Mode::Host => (PathBuf::from(format!("/proc/{}/ns/net", std::process::id())), false),
            Mode::Container(other) => {
                let o = self.containers.get(other).ok_or_else(|| EngineError::no_container(other))?;
                (o.sandbox.clone(), false)
            }
            Mode::None => (sandbox::create(name)?, true),
            Mode::Bridge(net) => {
                self.check_endpoint(net, ip, mac)?;
                (sandbox::create(name)?, true)
            }
        };
        let id = self.new_id(name);
        self.containers.insert(
            name.to_string(),
            Container { id, mode: mode.clone(), sandbox, owns_sandbox: owns, endpoints: Vec::new(), published },
        );
        if let Mode::Bridge(net) = &mode {
            let res = self.attach(name, net, ip, mac).and_then(|ep| {
                self.sync_network(net)?;
                self.sync_router()?;
                Ok(ep)
            });
            if let Err(e) = res {
                let _ = self.container_rm(name);
                return Err(e);
            }
        }
        self.write_files(name);
        self.publish_container(name);
        self.container_info(name)
    }

    pub fn container_rm(&mut self, name: &str) -> Result<()> {
        let c = self.containers.get(name).ok_or_else(|| EngineError::no_container(name))?;
        if c.owns_sandbox {
            let sharers: Vec<String> = self
                .containers
                .iter()
                .filter(|(_, o)| matches!(&o.mode, Mode::Container(other) if other == name))
                .map(|(n, _)| n.clone())
                .collect();
            if !sharers.is_empty() {
                return Err(EngineError::SandboxShared(name.into(), name_list(sharers)));
            }
        }
        let c = self.containers.remove(name).expect("checked");
        self.publish_container(name);
        let mut first_err = None;
        for ep in &c.endpoints {
            if let Err(e) = self.detach(ep) {
                first_err.get_or_insert(e);
            }
        }
        for ep in &c.endpoints {
            if let Err(e) = self.sync_network(&ep.network) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.sync_router() {
            first_err.get_or_insert(e);
        }
        for ep in &c.endpoints {
            // Its connections go with it (a new container may get its
            // address and ports).
            let _ = self.dp.conntrack_forget(u32::from(ep.port));
        }
        if c.owns_sandbox {
            crate::hosts::remove(name);
            if let Err(e) = sandbox::delete(name) {
                first_err.get_or_insert(e.into());
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Container `name` as `inspect` shows it, from the engine's state.
    pub(super) fn container_info(&self, name: &str) -> Result<ContainerInfo> {
        let c = self.containers.get(name).ok_or_else(|| EngineError::no_container(name))?;
        let networks = c
            .endpoints
            .iter()
            .map(|e| {
                let n = &self.networks[&e.network];
                ContainerEndpoint {
                    network: e.network.clone(),
                    interface: e.ifname.clone(),
                    mac_address: e.mac.to_string(),
                    ipv4_address: format!("{}/{}", e.addr, n.ipam.subnet().prefix),
                    gateway: n.ipam.gateway().to_string(),
                    port: e.port,
                }
            })
            .collect();
        let host_ip = self.uplink.as_ref().map(|u| u.opts.ip.to_string()).unwrap_or_default();
        let container_ip = c.endpoints.first().map(|e| e.addr.to_string()).unwrap_or_default();
        let ports = c
            .published
            .iter()
            .map(|m| PublishedPort {
                protocol: publish::proto_name(m.proto).into(),
                host_ip: host_ip.clone(),
                host_port: m.host_port,
                container_ip: container_ip.clone(),
                container_port: m.container_port,
            })
            .collect();
        Ok(ContainerInfo {
            name: name.into(),
            id: c.id.clone(),
            network_mode: c.mode.text(),
            sandbox_key: c.sandbox.display().to_string(),
            networks,
            ports,
        })
    }

    /// Where to enter to run inside container `name`.
    pub fn sandbox_of(&self, name: &str) -> Result<&Path> {
        Ok(&self.containers.get(name).ok_or_else(|| EngineError::no_container(name))?.sandbox)
    }

    pub(super) fn own_sandbox(&self, name: &str) -> Result<&Container> {
        let c = self.containers.get(name).ok_or_else(|| EngineError::no_container(name))?;
        if !c.owns_sandbox {
            return Err(EngineError::NoSandbox(name.into(), c.mode.text()));
        }
        Ok(c)
    }

    pub fn network_connect(&mut self, net: &str, container: &str, ip: Option<&str>) -> Result<ContainerInfo> {
        let ip = ip.map(parse_addr).transpose()?;
        if !self.networks.contains_key(net) {
            return Err(EngineError::no_network(net));
        }
        let c = self.own_sandbox(container)?;
        if c.endpoints.iter().any(|e| e.network == net) {
            return Err(EngineError::AlreadyConnected(container.into(), net.into()));
        }
        self.attach(container, net, ip, None)?;
        // The endpoint exists from here on, whatever fails next.
        self.write_files(container);
        self.publish_container(container);
        self.sync_network(net)?;
        self.sync_router()?;
        self.container_info(container)
    }

    pub fn network_disconnect(&mut self, net: &str, container: &str) -> Result<ContainerInfo> {
        if !self.networks.contains_key(net) {
            return Err(EngineError::no_network(net));
        }
        let c = self.own_sandbox(container)?;
        let i = c
            .endpoints
            .iter()
            .position(|e| e.network == net)
            .ok_or_else(|| EngineError::NotConnected(container.into(), net.into()))?;
        let ep = self.containers.get_mut(container).expect("checked").endpoints.remove(i);
        self.write_files(container);
        self.publish_container(container);
        self.detach(&ep)?;
        self.sync_network(net)?;
        self.sync_router()?;
        let _ = self.dp.conntrack_forget(u32::from(ep.port));
        self.container_info(container)
    }

    /// Write container `name`'s own `/etc/netns/NAME` files: `hosts` with
    /// its own name at its first address, `resolv.conf` with the gateways
    /// of its networks, where the dataplane answers DNS with the names of
    /// the containers on each network. Nothing about other containers is
    /// written, so a change costs the same file writes however many
    /// containers there are. Best effort: name resolution is a
    /// convenience, never a reason to fail an operation.
    pub(super) fn write_files(&self, name: &str) {
        let Some(c) = self.containers.get(name).filter(|c| c.owns_sandbox) else { return };
        let own = c.endpoints.first().map(|e| e.addr);
        let _ = crate::hosts::write(name, &crate::hosts::render(name, own));
        let gateways: Vec<_> =
            c.endpoints.iter().filter_map(|e| self.networks.get(&e.network)).map(|n| n.ipam.gateway()).collect();
        let _ = crate::hosts::write_resolv_conf(name, &gateways);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("none"), Mode::None);
        assert_eq!(Mode::parse("container:web"), Mode::Container("web".into()));
        assert_eq!(Mode::parse("front").text(), "front");
    }
}
