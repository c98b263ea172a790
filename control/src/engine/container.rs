//! Containers: their namespace ("sandbox"), their network mode (a network,
//! none, host, container:OTHER), connecting and disconnecting networks,
//! and the hosts files that let containers find each other by name.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use dataplane::wire::MacAddr;

use super::endpoint::Endpoint;
use super::ids::check_name;
use super::{Engine, EngineError, Result};
use crate::api::{ContainerEndpoint, ContainerInfo};
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
}

impl Engine {
    pub fn container_create(
        &mut self,
        name: &str,
        network: &str,
        ip: Option<&str>,
        mac: Option<&str>,
    ) -> Result<ContainerInfo> {
        check_name("container", name, 15)?;
        if self.containers.contains_key(name) {
            return Err(EngineError::ContainerExists(name.into()));
        }
        let mode = Mode::parse(network);
        let ip = ip.map(parse_addr).transpose()?;
        let mac = mac.map(|m| m.parse::<MacAddr>()).transpose()?;
        if !matches!(mode, Mode::Bridge(_)) {
            if ip.is_some() {
                return Err(EngineError::NeedsNetwork("--ip"));
            }
            if mac.is_some() {
                return Err(EngineError::NeedsNetwork("--mac"));
            }
        }
        let (sandbox, owns) = match &mode {
            Mode::Host => (PathBuf::from(format!("/proc/{}/ns/net", std::process::id())), false),
            Mode::Container(other) => {
                let o = self.containers.get(other).ok_or_else(|| EngineError::NoContainer(other.clone()))?;
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
            Container { id, mode: mode.clone(), sandbox, owns_sandbox: owns, endpoints: Vec::new() },
        );
        if let Mode::Bridge(net) = &mode {
            if let Err(e) = self.attach(name, net, ip, mac) {
                let _ = self.container_rm(name);
                return Err(e);
            }
        }
        self.refresh_hosts();
        self.container_inspect(name)
    }

    pub fn container_rm(&mut self, name: &str) -> Result<()> {
        let c = self.containers.get(name).ok_or_else(|| EngineError::NoContainer(name.into()))?;
        if c.owns_sandbox {
            let mut sharers: Vec<&String> = self
                .containers
                .iter()
                .filter(|(_, o)| o.mode == Mode::Container(name.to_string()))
                .map(|(n, _)| n)
                .collect();
            if !sharers.is_empty() {
                sharers.sort();
                let list = sharers.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                return Err(EngineError::SandboxShared(name.into(), list));
            }
        }
        let c = self.containers.remove(name).expect("checked");
        let mut first_err = None;
        for ep in &c.endpoints {
            if let Err(e) = self.detach(ep) {
                first_err.get_or_insert(e);
            }
        }
        if c.owns_sandbox {
            crate::hosts::remove(name);
            if let Err(e) = sandbox::delete(name) {
                first_err.get_or_insert(e.into());
            }
        }
        self.refresh_hosts();
        first_err.map_or(Ok(()), Err)
    }

    pub fn container_ls(&self) -> Vec<ContainerInfo> {
        let mut names: Vec<&String> = self.containers.keys().collect();
        names.sort();
        names.into_iter().filter_map(|n| self.container_inspect(n).ok()).collect()
    }

    pub fn container_inspect(&self, name: &str) -> Result<ContainerInfo> {
        let c = self.containers.get(name).ok_or_else(|| EngineError::NoContainer(name.into()))?;
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
        Ok(ContainerInfo {
            name: name.into(),
            id: c.id.clone(),
            network_mode: c.mode.text(),
            sandbox_key: c.sandbox.display().to_string(),
            networks,
        })
    }

    /// Where to enter to run inside container `name`.
    pub fn sandbox_of(&self, name: &str) -> Result<&Path> {
        Ok(&self.containers.get(name).ok_or_else(|| EngineError::NoContainer(name.into()))?.sandbox)
    }

    pub(super) fn own_sandbox(&self, name: &str) -> Result<&Container> {
        let c = self.containers.get(name).ok_or_else(|| EngineError::NoContainer(name.into()))?;
        if !c.owns_sandbox {
            return Err(EngineError::NoSandbox(name.into(), c.mode.text()));
        }
        Ok(c)
    }

    pub fn network_connect(&mut self, net: &str, container: &str, ip: Option<&str>) -> Result<ContainerInfo> {
        let ip = ip.map(parse_addr).transpose()?;
        if !self.networks.contains_key(net) {
            return Err(EngineError::NoNetwork(net.into()));
        }
        let c = self.own_sandbox(container)?;
        if c.endpoints.iter().any(|e| e.network == net) {
            return Err(EngineError::AlreadyConnected(container.into(), net.into()));
        }
        self.attach(container, net, ip, None)?;
        self.refresh_hosts();
        self.container_inspect(container)
    }

    pub fn network_disconnect(&mut self, net: &str, container: &str) -> Result<ContainerInfo> {
        if !self.networks.contains_key(net) {
            return Err(EngineError::NoNetwork(net.into()));
        }
        let c = self.own_sandbox(container)?;
        let i = c
            .endpoints
            .iter()
            .position(|e| e.network == net)
            .ok_or_else(|| EngineError::NotConnected(container.into(), net.into()))?;
        let ep = self.containers.get_mut(container).expect("checked").endpoints.remove(i);
        self.detach(&ep)?;
        self.refresh_hosts();
        self.container_inspect(container)
    }

    /// Rewrite every container's hosts file (`/etc/netns/NAME/hosts`) so
    /// containers resolve each other's names on the networks they share.
    /// Best effort: name resolution is a convenience, never a reason to
    /// fail an operation.
    pub(super) fn refresh_hosts(&self) {
        for (name, c) in self.containers.iter().filter(|(_, c)| c.owns_sandbox) {
            let own = c.endpoints.first().map(|e| e.addr);
            let mut peers: Vec<(String, Ipv4Addr)> = self
                .containers
                .iter()
                .filter(|(n, _)| *n != name)
                .filter_map(|(n, o)| {
                    let shared = o.endpoints.iter().find(|e| c.endpoints.iter().any(|m| m.network == e.network))?;
                    Some((n.clone(), shared.addr))
                })
                .collect();
            peers.sort();
            let _ = crate::hosts::write(name, &crate::hosts::render(name, own, &peers));
        }
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
