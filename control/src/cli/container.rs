//! `tapnet container …`: create, remove, list and inspect, as thin
//! requests to the daemon.

use std::path::Path;

use clap::Subcommand;

use super::{call, print_json};
use crate::api::{self, Request};

#[derive(Debug, Subcommand)]
pub enum ContainerCmd {
    /// Create a container: a network namespace with eth0 on a network.
    Create {
        /// The container's name: its namespace's, at most 15 bytes.
        name: String,
        /// NET, none, host or container:OTHER.
        #[arg(long)]
        network: String,
        /// IPv4 address on NET (default: the next free one).
        #[arg(long)]
        ip: Option<String>,
        /// MAC address of eth0 (default: 02:42 followed by the IPv4 address).
        #[arg(long)]
        mac: Option<String>,
        /// Publish a port on the uplink address:
        /// `[IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|udp]` (tcp by
        /// default). Repeatable.
        #[arg(short = 'p', long = "publish", value_name = "SPEC")]
        publish: Vec<String>,
    },
    /// Remove a container and its namespace.
    #[command(alias = "remove")]
    Rm { name: String },
    /// List containers.
    #[command(alias = "list")]
    Ls,
    /// Show a container.
    Inspect { name: String },
}

/// Run a `tapnet container` command.
pub(super) fn run(sock: &Path, json: bool, c: ContainerCmd) -> Result<(), String> {
    match c {
        ContainerCmd::Create { name, network, ip, mac, publish } => {
            let spec = api::ContainerSpec { name, network, ip, mac, publish };
            let (ci, v): (api::ContainerInfo, _) = call(sock, Request::ContainerCreate(spec))?;
            if json {
                print_json(&v)
            } else {
                println!("{}", ci.id)
            }
        }
        ContainerCmd::Rm { name } => {
            let (n, v): (String, _) = call(sock, Request::ContainerRm { name })?;
            if json {
                print_json(&v)
            } else {
                println!("{n}")
            }
        }
        ContainerCmd::Ls => {
            let (cs, v): (Vec<api::ContainerInfo>, _) = call(sock, Request::ContainerLs {})?;
            if json {
                print_json(&v);
            } else {
                println!("{:<16} {:<12}  {:<20} INTERFACES", "NAME", "ID", "NETWORK MODE");
                for c in cs {
                    let ifs: Vec<String> = c
                        .networks
                        .iter()
                        .map(|e| format!("{}={} ({}, {})", e.interface, e.ipv4_address, e.network, e.mac_address))
                        .collect();
                    let ports: Vec<String> = c
                        .ports
                        .iter()
                        .map(|p| format!("{}:{}->{}/{}", p.host_ip, p.host_port, p.container_port, p.protocol))
                        .collect();
                    let ports = if ports.is_empty() { String::new() } else { format!("  ports {}", ports.join(", ")) };
                    println!("{:<16} {:<12}  {:<20} {}{}", c.name, c.id, c.network_mode, ifs.join(", "), ports);
                }
            }
        }
        ContainerCmd::Inspect { name } => {
            let (_, v): (api::ContainerInfo, _) = call(sock, Request::ContainerInspect { name })?;
            print_json(&v);
        }
    }
    Ok(())
}
