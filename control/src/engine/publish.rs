//! Published ports (`container create -p`): what docker0's DNAT rules do
//! for `docker run -p`, as entries of the dataplane's router.
//!
//! A mapping is `[IP:]HOST[-HOST]:CONTAINER[-CONTAINER][/tcp|udp]`, the
//! protocol defaulting to tcp and a range mapping port for port. IP, when
//! given, must be the uplink address (or 0.0.0.0): the dataplane owns one
//! address on the uplink. A host port published once cannot be published
//! again (per protocol), and none may lie in the masquerade port range
//! (`--snat-ports`): the uplink's steering tells replies to masqueraded
//! flows by those ports (`dataplane::port::steer`).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use dataplane::router::L4;

use super::{EngineError, Result};

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mapping {
    pub(super) proto: L4,
    pub(super) host_port: u16,
    pub(super) container_port: u16,
}

pub(super) fn proto_name(p: L4) -> &'static str {
    match p {
        L4::Tcp => "tcp",
        L4::Udp => "udp",
    }
}

fn bad(spec: &str, why: &str) -> EngineError {
    EngineError::BadPublish(crate::api::cut(spec), why.to_string())
}

/// `A` or `A-B` as an inclusive range of ports 1..=65535.
fn port_range(spec: &str, s: &str) -> Result<(u16, u16)> {
    let one = |p: &str| -> Result<u16> {
        match p.parse::<u16>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(bad(spec, "ports are numbers from 1 to 65535")),
        }
    };
    match s.split_once('-') {
        None => {
            let p = one(s)?;
            Ok((p, p))
        }
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                return Err(bad(spec, "a port range goes from low to high"));
            }
            Ok((a, b))
        }
    }
}

/// Parse one `-p` value. `uplink` is the uplink address, which an explicit
/// host IP must name; `snat` the masquerade port range, which host ports
/// must stay out of.
pub(super) fn parse(spec: &str, uplink: Ipv4Addr, snat: &RangeInclusive<u16>) -> Result<Vec<Mapping>> {
    let (body, proto) = match spec.rsplit_once('/') {
        None => (spec, L4::Tcp),
        Some((b, "tcp")) => (b, L4::Tcp),
        Some((b, "udp")) => (b, L4::Udp),
        Some(_) => return Err(bad(spec, "the protocol is tcp or udp")),
    };
    let parts: Vec<&str> = body.split(':').collect();
    let (ip, host, cont) = match parts.as_slice() {
        [h, c] => (None, *h, *c),
        [i, h, c] => (Some(*i), *h, *c),
        _ => return Err(bad(spec, "expected [IP:]HOST_PORT:CONTAINER_PORT[/PROTOCOL]")),
    };
    if let Some(ip) = ip {
        let a: Ipv4Addr = ip.parse().map_err(|_| bad(spec, "the host address is not an IPv4 address"))?;
        if a != uplink && !a.is_unspecified() {
            return Err(bad(spec, "the host address must be the uplink's address (the one tapnet owns)"));
        }
    }
    let (h0, h1) = port_range(spec, host)?;
    let (c0, c1) = port_range(spec, cont)?;
    if h1 - h0 != c1 - c0 {
        return Err(bad(spec, "the host and container port ranges must have the same length"));
    }
    if h0 <= *snat.end() && *snat.start() <= h1 {
        return Err(bad(
            spec,
            &format!(
                "host ports {}-{} are masquerade source ports (--snat-ports): publish a port outside them, or start the daemon with other --snat-ports",
                snat.start(),
                snat.end()
            ),
        ));
    }
    Ok((0..=h1 - h0).map(|i| Mapping { proto, host_port: h0 + i, container_port: c0 + i }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 1);
    const SNAT: RangeInclusive<u16> = 32768..=60999;

    fn parse(spec: &str, u: Ipv4Addr) -> Result<Vec<Mapping>> {
        super::parse(spec, u, &SNAT)
    }

    fn m(proto: L4, h: u16, c: u16) -> Mapping {
        Mapping { proto, host_port: h, container_port: c }
    }

    #[test]
    fn the_contract_forms() {
        assert_eq!(parse("8080:80/tcp", U).unwrap(), vec![m(L4::Tcp, 8080, 80)]);
        assert_eq!(parse("8080:80", U).unwrap(), vec![m(L4::Tcp, 8080, 80)]);
        assert_eq!(parse("5353:53/udp", U).unwrap(), vec![m(L4::Udp, 5353, 53)]);
        let r = parse("9000-9010:9000-9010/tcp", U).unwrap();
        assert_eq!(r.len(), 11);
        assert_eq!(r[10], m(L4::Tcp, 9010, 9010));
        assert_eq!(parse("10.254.0.1:8443:443", U).unwrap(), vec![m(L4::Tcp, 8443, 443)]);
        assert_eq!(parse("0.0.0.0:8443:443", U).unwrap(), vec![m(L4::Tcp, 8443, 443)]);
        assert_eq!(parse("2000-2001:3000-3001/udp", U).unwrap()[1], m(L4::Udp, 2001, 3001));
    }

    #[test]
    fn bad_forms_are_refused() {
        for s in [
            "",
            "80",
            "a:80",
            "8080:80/sctp",
            "0:80",
            "8080:0",
            "65536:80",
            "10.0.0.9:8080:80",
            "x:1:2",
            "1:2:3:4",
            "9010-9000:1-11",
            "9000-9010:80",
            "8080:80/",
            "8080:80/TCP",
            "-1:80",
        ] {
            assert!(parse(s, U).is_err(), "{s:?}");
        }
        for s in ["32768:80", "60999:80/udp", "32760-32770:80-90", "60990-61000:1-11"] {
            let e = parse(s, U).unwrap_err().to_string();
            assert!(e.contains("masquerade source ports") && e.contains("32768-60999"), "{s}: {e}");
        }
        assert!(parse("32767:80", U).is_ok() && parse("61000:80", U).is_ok());
        assert!(super::parse("40000:80", U, &(1000..=2000)).is_ok(), "the daemon's range, not the default");
        let long = "9".repeat(100_000);
        let e = parse(&long, U).unwrap_err().to_string();
        assert!(e.len() < 300, "{}", e.len());
    }
}
