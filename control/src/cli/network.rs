//! `tapnet network …`: create, list, inspect, remove, connect and
//! disconnect, as thin requests to the daemon.

use std::path::Path;

use clap::Subcommand;

use super::{call, print_json};
use crate::api::{self, Request};

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        /// The network's name (also its DNS domain for containers' names).
        name: String,
        /// IPv4 subnet, A.B.C.D/LEN (0/8, 127/8, 169.254/16, 224/4 and 240/4 are
        /// refused).
        #[arg(long)]
        subnet: String,
        /// Gateway address (default: the subnet's first host).
        #[arg(long)]
        gateway: Option<String>,
        /// MTU of the network's interfaces, 68-65521 (default 1500; on an
        /// overlay, the underlay's MTU less the encapsulation).
        #[arg(long)]
        mtu: Option<u32>,
        /// Bound on the MAC table (default: the daemon's --fdb-max).
        #[arg(long)]
        fdb_max: Option<usize>,
        /// MAC ageing time in seconds (default: the daemon's --fdb-ageing).
        #[arg(long)]
        fdb_ageing: Option<u64>,
        /// MACs each container may have in the MAC table; frames from more
        /// are dropped (mac_limit), so one container cannot fill the table.
        /// 0: no limit. Default: the daemon's --max-macs-per-port (64).
        #[arg(long, value_name = "N")]
        max_macs_per_port: Option<u32>,
        /// Pin each container's port to its MAC and IPv4 address: frames
        /// with another source MAC or IP, and ARP claiming another address,
        /// are dropped (spoofed_mac, spoofed_ip, spoofed_arp).
        #[arg(long)]
        port_security: bool,
        /// Masquerade traffic leaving through the uplink (source address
        /// becomes the uplink's). With false it leaves untranslated.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        masquerade: bool,
        /// No way out: the gateway answers ARP, ping and DNS but routes nothing.
        #[arg(long)]
        internal: bool,
        /// Inter-container communication: with false, containers on the
        /// network reach only the gateway, not each other.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        icc: bool,
        /// bridge (this host), or an overlay across hosts: vxlan or gre.
        #[arg(long, value_parser = ["bridge", "vxlan", "gre"])]
        driver: Option<String>,
        /// VXLAN network identifier (1-16777215), with --driver vxlan.
        #[arg(long)]
        vni: Option<u32>,
        /// GRE key, with --driver gre.
        #[arg(long)]
        key: Option<u32>,
        /// The part of --subnet this host hands out (each host its own).
        #[arg(long, value_name = "CIDR")]
        ip_range: Option<String>,
        /// This host's underlay address (an address of the daemon's
        /// namespace).
        #[arg(long, value_name = "A.B.C.D")]
        underlay: Option<String>,
        /// Another host's underlay address. Repeatable.
        #[arg(long = "peer", value_name = "A.B.C.D")]
        peers: Vec<String>,
        /// VXLAN UDP destination port (default 4789).
        #[arg(long)]
        port: Option<u16>,
        /// VXLAN: send UDP checksums, with UDP GSO (default: zero checksums
        /// as RFC 7348 recommends, which the kernel cannot combine with GSO).
        #[arg(long, action = clap::ArgAction::Set, value_name = "BOOL")]
        udp_csum: Option<bool>,
        /// Clamp the MSS of TCP SYNs entering the overlay to its MTU
        /// (default true).
        #[arg(long, action = clap::ArgAction::Set, value_name = "BOOL")]
        mss_clamp: Option<bool>,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls,
    /// Show a network with its containers.
    Inspect { name: String },
    /// Remove a network (refused while containers are attached).
    #[command(alias = "remove")]
    Rm { name: String },
    /// Give a running container an interface on another network.
    Connect {
        network: String,
        container: String,
        #[arg(long)]
        ip: Option<String>,
    },
    /// Remove a container's interface on a network.
    Disconnect { network: String, container: String },
}

/// Run a `tapnet network` command.
pub(super) fn run(sock: &Path, json: bool, c: NetworkCmd) -> Result<(), String> {
    match c {
        NetworkCmd::Create {
            name,
            subnet,
            gateway,
            mtu,
            fdb_max,
            fdb_ageing,
            max_macs_per_port,
            port_security,
            masquerade,
            internal,
            icc,
            driver,
            vni,
            key,
            ip_range,
            underlay,
            peers,
            port,
            udp_csum,
            mss_clamp,
        } => {
            let spec = api::NetworkSpec {
                name,
                subnet,
                gateway,
                mtu,
                fdb_max,
                fdb_ageing,
                masquerade: Some(masquerade),
                internal,
                icc: Some(icc),
                driver,
                vni,
                key,
                ip_range,
                underlay,
                peers,
                port,
                udp_csum,
                mss_clamp,
                max_macs_per_port,
                port_security,
            };
            let (n, v): (api::NetworkInfo, _) = call(sock, Request::NetworkCreate(spec))?;
            if json {
                print_json(&v)
            } else {
                println!("{}", n.id)
            }
        }
        NetworkCmd::Ls => {
            let (ns, v): (Vec<api::NetworkInfo>, _) = call(sock, Request::NetworkLs {})?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "{:<12}  {:<16} {:<14} {:<18} {:<15} {:>6} {:>10}",
                    "NETWORK ID", "NAME", "DRIVER", "SUBNET", "GATEWAY", "MTU", "CONTAINERS"
                );
                for n in ns {
                    println!(
                        "{:<12}  {:<16} {:<14} {:<18} {:<15} {:>6} {:>10}",
                        n.id,
                        n.name,
                        n.driver,
                        n.subnet,
                        n.gateway,
                        n.mtu,
                        n.containers.len()
                    );
                }
            }
        }
        NetworkCmd::Inspect { name } => {
            let (_, v): (api::NetworkInfo, _) = call(sock, Request::NetworkInspect { name })?;
            print_json(&v);
        }
        NetworkCmd::Rm { name } => {
            let (n, v): (String, _) = call(sock, Request::NetworkRm { name })?;
            if json {
                print_json(&v)
            } else {
                println!("{n}")
            }
        }
        NetworkCmd::Connect { network, container, ip } => {
            let (_, v): (api::ContainerInfo, _) = call(sock, Request::NetworkConnect { network, container, ip })?;
            if json {
                print_json(&v);
            }
        }
        NetworkCmd::Disconnect { network, container } => {
            let (_, v): (api::ContainerInfo, _) = call(sock, Request::NetworkDisconnect { network, container })?;
            if json {
                print_json(&v);
            }
        }
    }
    Ok(())
}
