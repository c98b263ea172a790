//! `tapnet up -f cluster.toml`: one file describes every host of a cluster
//! (its underlay address), the overlay networks (with each host's share of
//! the addresses) and, optionally, containers; run on each host, it makes
//! that host's share through its daemon. Running it again changes nothing
//! that is already as described.
//!
//! ```toml
//! [[host]]
//! name = "a"
//! underlay = "192.168.100.1"
//!
//! [[host]]
//! name = "b"
//! underlay = "192.168.100.2"
//!
//! [[network]]
//! name = "ov"
//! driver = "vxlan"          # or "gre" (then: key = 42)
//! vni = 42
//! subnet = "10.42.0.0/16"
//! # port = 4789, mtu = 1450, udp_csum = false, mss_clamp = true
//! [network.ip_range]        # each host's part of the subnet
//! a = "10.42.1.0/24"
//! b = "10.42.2.0/24"
//!
//! [[container]]             # optional
//! name = "c1"
//! host = "a"
//! network = "ov"
//! ```
//!
//! The local host is `--host NAME`, or else the one whose underlay address
//! the daemon's namespace holds.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::call;
use crate::api::{self, ContainerSpec, NetworkSpec, Request};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cluster {
    #[serde(default)]
    host: Vec<HostDef>,
    #[serde(default)]
    network: Vec<NetDef>,
    #[serde(default)]
    container: Vec<ContainerDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostDef {
    name: String,
    underlay: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetDef {
    name: String,
    driver: String,
    vni: Option<u32>,
    key: Option<u32>,
    subnet: String,
    gateway: Option<String>,
    port: Option<u16>,
    mtu: Option<u32>,
    udp_csum: Option<bool>,
    mss_clamp: Option<bool>,
    /// Host name → that host's range.
    #[serde(default)]
    ip_range: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerDef {
    name: String,
    host: String,
    network: String,
    ip: Option<String>,
}

/// What `up` does for this host, worked out from the file alone.
#[derive(Debug)]
struct Share {
    networks: Vec<NetworkSpec>,
    containers: Vec<ContainerSpec>,
}

/// The networks and containers of host `me`, as requests.
fn share(c: &Cluster, me: &str) -> Result<Share, String> {
    let mine = c.host.iter().find(|h| h.name == me).ok_or_else(|| format!("no host {me:?} in the file"))?;
    let mut names: Vec<&str> = c.host.iter().map(|h| h.name.as_str()).collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err("a host name appears twice".into());
    }
    let mut networks = Vec::new();
    for n in &c.network {
        if let Some(h) = n.ip_range.keys().find(|h| !names.contains(&h.as_str())) {
            return Err(format!("network {:?}: ip_range names unknown host {h:?}", n.name));
        }
        networks.push(NetworkSpec {
            name: n.name.clone(),
            subnet: n.subnet.clone(),
            gateway: n.gateway.clone(),
            mtu: n.mtu,
            driver: Some(n.driver.clone()),
            vni: n.vni,
            key: n.key,
            ip_range: n.ip_range.get(me).cloned(),
            underlay: Some(mine.underlay.clone()),
            peers: c.host.iter().filter(|h| h.name != me).map(|h| h.underlay.clone()).collect(),
            port: n.port,
            udp_csum: n.udp_csum,
            mss_clamp: n.mss_clamp,
            ..NetworkSpec::default()
        });
    }
    let mut containers = Vec::new();
    for k in c.container.iter().filter(|k| k.host == me) {
        if !c.network.iter().any(|n| n.name == k.network) {
            return Err(format!("container {:?}: network {:?} is not in the file", k.name, k.network));
        }
        containers.push(ContainerSpec {
            name: k.name.clone(),
            network: k.network.clone(),
            ip: k.ip.clone(),
            ..ContainerSpec::default()
        });
    }
    Ok(Share { networks, containers })
}

/// Whether an existing network is the one the file describes.
fn same(n: &api::NetworkInfo, want: &NetworkSpec) -> bool {
    let Some(o) = &n.overlay else { return false };
    let id = want.vni.or(want.key);
    let mut peers = want.peers.clone();
    peers.sort();
    let mut have = o.peers.clone();
    have.sort();
    Some(n.driver.as_str()) == want.driver.as_deref()
        && Some(o.id) == id
        && n.subnet == want.subnet
        && Some(&o.underlay) == want.underlay.as_ref()
        && have == peers
        && o.ip_range == want.ip_range
}

/// `tapnet up -f FILE [--host NAME]`.
pub(super) fn run(sock: &Path, file: &Path, host: Option<String>) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("read {}: {e}", file.display()))?;
    let cluster: Cluster = toml::from_str(&text).map_err(|e| {
        let msg = e.message().lines().next().unwrap_or("invalid").to_string();
        format!("{}: {msg}", file.display())
    })?;
    let me = match host {
        Some(h) => h,
        None => {
            let (v, _): (api::VersionInfo, _) = call(sock, Request::Version {})?;
            let found: Vec<&HostDef> = cluster.host.iter().filter(|h| v.addresses.contains(&h.underlay)).collect();
            match found.as_slice() {
                [h] => h.name.clone(),
                [] => {
                    return Err(
                        "none of the file's underlay addresses is this host's: say which host with --host".into()
                    )
                }
                _ => {
                    return Err("several of the file's hosts match this host's addresses: say which with --host".into())
                }
            }
        }
    };
    let plan = share(&cluster, &me)?;
    let (existing, _): (Vec<api::NetworkInfo>, _) = call(sock, Request::NetworkLs {})?;
    for n in plan.networks {
        match existing.iter().find(|e| e.name == n.name) {
            Some(e) if same(e, &n) => println!("network {}: unchanged", n.name),
            Some(_) => return Err(format!("network {:?} exists but differs from the file; remove it first", n.name)),
            None => {
                let name = n.name.clone();
                let (_, _): (api::NetworkInfo, _) = call(sock, Request::NetworkCreate(n))?;
                println!("network {name}: created");
            }
        }
    }
    let (have, _): (Vec<api::ContainerInfo>, _) = call(sock, Request::ContainerLs {})?;
    for c in plan.containers {
        if have.iter().any(|h| h.name == c.name) {
            println!("container {}: unchanged", c.name);
            continue;
        }
        let name = c.name.clone();
        let (_, _): (api::ContainerInfo, _) = call(sock, Request::ContainerCreate(c))?;
        println!("container {name}: created");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[host]]
name = "a"
underlay = "192.168.100.1"
[[host]]
name = "b"
underlay = "192.168.100.2"
[[network]]
name = "ov"
driver = "vxlan"
vni = 42
subnet = "10.42.0.0/16"
[network.ip_range]
a = "10.42.1.0/24"
b = "10.42.2.0/24"
[[network]]
name = "g"
driver = "gre"
key = 7
subnet = "10.43.0.0/16"
[[container]]
name = "c1"
host = "a"
network = "ov"
[[container]]
name = "c2"
host = "b"
network = "ov"
"#;

    #[test]
    fn each_host_gets_its_share() {
        let c: Cluster = toml::from_str(FILE).unwrap();
        let a = share(&c, "a").unwrap();
        assert_eq!(a.networks.len(), 2);
        let ov = &a.networks[0];
        assert_eq!(ov.underlay.as_deref(), Some("192.168.100.1"));
        assert_eq!(ov.peers, vec!["192.168.100.2".to_string()]);
        assert_eq!(ov.ip_range.as_deref(), Some("10.42.1.0/24"));
        assert_eq!((ov.driver.as_deref(), ov.vni), (Some("vxlan"), Some(42)));
        assert_eq!((a.networks[1].driver.as_deref(), a.networks[1].key), (Some("gre"), Some(7)));
        assert_eq!(a.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["c1"]);
        let b = share(&c, "b").unwrap();
        assert_eq!(b.networks[0].underlay.as_deref(), Some("192.168.100.2"));
        assert_eq!(b.networks[0].ip_range.as_deref(), Some("10.42.2.0/24"));
        assert_eq!(b.containers[0].name, "c2");
        assert!(share(&c, "z").is_err());
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(toml::from_str::<Cluster>("[[host]]\nname = 1").is_err());
        assert!(toml::from_str::<Cluster>("[[nope]]\nx = 1").is_err());
        let c: Cluster = toml::from_str(&FILE.replace("b = \"10.42.2.0/24\"", "q = \"10.42.2.0/24\"")).unwrap();
        assert!(share(&c, "a").unwrap_err().contains("unknown host"));
        let c: Cluster =
            toml::from_str(&FILE.replace("network = \"ov\"\n[[container]]", "network = \"x\"\n[[container]]")).unwrap();
        assert!(share(&c, "a").unwrap_err().contains("not in the file"));
    }
}
