//! Name resolution between containers ("ping by name", as on Docker's
//! user-defined networks), done the way iproute2 expects: a hosts file at
//! `/etc/netns/NAME/hosts`, which `ip netns exec NAME` (and `tapnet exec`)
//! bind-mount over `/etc/hosts`. It lists the container itself and every
//! container it shares a network with. Beside it, `resolv.conf` points the
//! container's resolver at its network's gateway, where the dataplane
//! answers DNS with the names of the containers on that network.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where iproute2 looks for a namespace's private `/etc` files.
pub const ETC_NETNS: &str = "/etc/netns";

fn dir(name: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(name)
}

/// The hosts file of container `own` at `own_addr`, with `peers`.
pub fn render(own: &str, own_addr: Option<Ipv4Addr>, peers: &[(String, Ipv4Addr)]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(a) = own_addr {
        s.push_str(&format!("{a}\t{own}\n"));
    }
    s.push_str("# containers on the same tapnet networks\n");
    for (n, a) in peers {
        s.push_str(&format!("{a}\t{n}\n"));
    }
    s
}

/// Write (atomically replace) the hosts file of namespace `name`.
pub fn write(name: &str, content: &str) -> std::io::Result<()> {
    let d = dir(name);
    std::fs::create_dir_all(&d)?;
    let tmp = d.join(".hosts.tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(tmp, d.join("hosts"))
}

/// Write `/etc/netns/NAME/resolv.conf`: the container's resolver is its
/// network's gateway, where the dataplane answers DNS.
pub fn write_resolv_conf(name: &str, gateway: Ipv4Addr) -> std::io::Result<()> {
    let d = dir(name);
    std::fs::create_dir_all(&d)?;
    let tmp = d.join(".resolv.conf.tmp");
    std::fs::write(&tmp, format!("# tapnet: DNS at the network's gateway\nnameserver {gateway}\noptions ndots:0\n"))?;
    std::fs::rename(tmp, d.join("resolv.conf"))
}

/// Remove the hosts file and resolv.conf of namespace `name`, and its
/// directory if empty.
pub fn remove(name: &str) {
    let d = dir(name);
    let _ = std::fs::remove_file(d.join("hosts"));
    let _ = std::fs::remove_file(d.join("resolv.conf"));
    let _ = std::fs::remove_dir(&d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_self_then_peers() {
        let s = render("web", Some(Ipv4Addr::new(10, 88, 0, 2)), &[("db".into(), Ipv4Addr::new(10, 88, 0, 3))]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "127.0.0.1\tlocalhost");
        assert_eq!(lines[2], "10.88.0.2\tweb");
        assert_eq!(lines[4], "10.88.0.3\tdb");
        assert!(!render("none", None, &[]).contains("none"));
    }
}
