//! Name resolution between containers ("ping by name", as on Docker's
//! user-defined networks), done the way iproute2 expects: files under
//! `/etc/netns/NAME/`, which `ip netns exec NAME` (and `tapnet exec`)
//! bind-mount over those in `/etc`. `resolv.conf` points the container's
//! resolver at the gateways of its networks, where the dataplane answers
//! DNS with the names of the containers on each network (and refuses other
//! names, so the resolver moves on to the next gateway). `hosts` names the
//! container itself only, as Docker's does: its peers come from DNS, so no
//! other container's files change when one comes or goes.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where iproute2 looks for a namespace's private `/etc` files.
pub const ETC_NETNS: &str = "/etc/netns";

fn dir(name: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(name)
}

/// The hosts file of container `own` at `own_addr`.
pub fn render(own: &str, own_addr: Option<Ipv4Addr>) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(a) = own_addr {
        s.push_str(&format!("{a}\t{own}\n"));
    }
    s.push_str("# other containers: DNS at the gateways in resolv.conf\n");
    s
}

/// The most name servers glibc's resolver uses (`MAXNS`).
pub const MAX_NAMESERVERS: usize = 3;

/// Write (atomically replace) the hosts file of namespace `name`.
pub fn write(name: &str, content: &str) -> std::io::Result<()> {
    let d = dir(name);
    std::fs::create_dir_all(&d)?;
    let tmp = d.join(".hosts.tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(tmp, d.join("hosts"))
}

/// `resolv.conf` for a container whose networks have `gateways`, in the
/// order of its interfaces (the first [`MAX_NAMESERVERS`] of them).
pub fn render_resolv_conf(gateways: &[Ipv4Addr]) -> String {
    let mut s = String::from("# tapnet: DNS at the gateways of the container's networks\n");
    for g in gateways.iter().take(MAX_NAMESERVERS) {
        s.push_str(&format!("nameserver {g}\n"));
    }
    s.push_str("options ndots:0\n");
    s
}

/// Write `/etc/netns/NAME/resolv.conf` for `gateways` (see
/// [`render_resolv_conf`]), or remove it if there are none.
pub fn write_resolv_conf(name: &str, gateways: &[Ipv4Addr]) -> std::io::Result<()> {
    let d = dir(name);
    if gateways.is_empty() {
        return match std::fs::remove_file(d.join("resolv.conf")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    std::fs::create_dir_all(&d)?;
    let tmp = d.join(".resolv.conf.tmp");
    std::fs::write(&tmp, render_resolv_conf(gateways))?;
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
    fn hosts_names_the_container_only() {
        let s = render("web", Some(Ipv4Addr::new(10, 88, 0, 2)));
        let entries: Vec<&str> = s.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(entries, ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", "10.88.0.2\tweb"]);
        assert!(!render("none", None).contains("none"));
    }

    #[test]
    fn resolv_conf_lists_each_network_gateway_up_to_three() {
        let g = |i| Ipv4Addr::new(10, 88, i, 1);
        let s = render_resolv_conf(&[g(0), g(1)]);
        let ns: Vec<&str> = s.lines().filter_map(|l| l.strip_prefix("nameserver ")).collect();
        assert_eq!(ns, ["10.88.0.1", "10.88.1.1"]);
        assert!(s.contains("options ndots:0"));
        let s = render_resolv_conf(&[g(0), g(1), g(2), g(3)]);
        assert_eq!(s.lines().filter(|l| l.starts_with("nameserver ")).count(), 3);
        assert!(!s.contains("10.88.3.1"));
    }
}
