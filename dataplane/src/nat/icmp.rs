//! ICMP errors the gateway itself sends (RFC 792, RFC 1812 §4.3.2).
//!
//! The gateway is a router: it answers a datagram whose TTL runs out with
//! Time Exceeded (RFC 1812 §5.3.1), one too big for the next hop with
//! "fragmentation needed" and the next-hop MTU (RFC 1191 §4), and one it
//! cannot or will not deliver with Destination Unreachable. [`build_error`]
//! writes such an error, quoting as much of the offending datagram as fits
//! in 576 bytes (RFC 1812 §4.3.2.3), or says why none may be sent
//! (RFC 1812 §4.3.2.7). [`RateLimit`] is a token bucket for the caller to
//! bound how many it sends (RFC 1812 §4.3.2.8).

use std::net::Ipv4Addr;

use crate::wire::icmpv4::{DstUnreachable, TimeExceeded};
use crate::wire::{icmpv4, ipv4, Icmpv4Packet, IpProtocol, Ipv4Packet, WireError};

/// The largest ICMP error, IPv4 header included (RFC 1812 §4.3.2.3).
pub const MAX_ERROR_LEN: usize = 576;
/// Bytes of an error before the quoted datagram: IPv4 and ICMP headers.
pub const ERROR_HEADERS_LEN: usize = ipv4::HEADER_LEN + icmpv4::HEADER_LEN;
/// TTL of the errors the gateway sends.
pub const ERROR_TTL: u8 = 64;
/// DSCP of the errors: CS6, precedence 6 "internetwork control", which
/// RFC 1812 §4.3.2.5 asks of ICMP errors (Linux sends the same).
pub const ERROR_DSCP: u8 = 48;

/// Which error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Time Exceeded, TTL exceeded in transit (type 11, code 0).
    TimeExceeded,
    /// Destination Unreachable, fragmentation needed and DF set (type 3,
    /// code 4), with the MTU of the next hop (RFC 1191 §4).
    FragNeeded { mtu: u16 },
    /// Destination Unreachable, port unreachable (type 3, code 3).
    PortUnreachable,
    /// Destination Unreachable, net unreachable (type 3, code 0).
    NetUnreachable,
    /// Destination Unreachable, host unreachable (type 3, code 1).
    HostUnreachable,
    /// Destination Unreachable, communication administratively prohibited
    /// (type 3, code 13, RFC 1812 §5.2.7.1).
    AdminProhibited,
}

impl ErrorKind {
    fn header(self) -> icmpv4::Repr {
        let unreachable = |reason| icmpv4::Repr::DstUnreachable { reason, next_hop_mtu: 0 };
        match self {
            ErrorKind::TimeExceeded => icmpv4::Repr::TimeExceeded { reason: TimeExceeded::TtlExpired },
            ErrorKind::FragNeeded { mtu } => {
                icmpv4::Repr::DstUnreachable { reason: DstUnreachable::FragRequired, next_hop_mtu: mtu }
            }
            ErrorKind::PortUnreachable => unreachable(DstUnreachable::PortUnreachable),
            ErrorKind::NetUnreachable => unreachable(DstUnreachable::NetUnreachable),
            ErrorKind::HostUnreachable => unreachable(DstUnreachable::HostUnreachable),
            ErrorKind::AdminProhibited => unreachable(DstUnreachable::AdminProhibited),
        }
    }
}

/// Why no error may be sent about a datagram (RFC 1812 §4.3.2.7, RFC 1122
/// §3.2.2). Link-layer broadcasts and subnet-directed broadcasts are the
/// caller's to check: only it knows the frame and the subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Suppressed {
    /// The datagram is an ICMP error (types 3, 4, 5, 11, 12, or a type
    /// above 18 that may be one), or an ICMP datagram too short to tell.
    #[error("the datagram is an ICMP error")]
    IcmpError,
    /// A fragment other than the first.
    #[error("the datagram is a non-first fragment")]
    Fragment,
    /// The source is not one host: 0.0.0.0/8, loopback, multicast, class E
    /// or the limited broadcast.
    #[error("the source address is not a single host")]
    Source,
    /// The datagram went to a multicast or the limited broadcast address.
    #[error("the datagram was sent to a group or broadcast address")]
    Destination,
}

/// Why [`build_error`] wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// RFC 1812 forbids an error about this datagram; drop it silently.
    #[error("ICMP error suppressed: {0}")]
    Suppressed(Suppressed),
    /// The offending datagram is not a whole IPv4 datagram.
    #[error("offending datagram is truncated or malformed")]
    BadDatagram,
    /// `out` cannot hold the error.
    #[error("output buffer holds {have} bytes, the error needs {need}")]
    BufferTooSmall { need: usize, have: usize },
}

impl From<WireError> for BuildError {
    fn from(_: WireError) -> Self {
        BuildError::BadDatagram
    }
}

/// True for an address that does not name one host as a source
/// (RFC 1812 §4.2.2.11, §5.3.7).
fn not_a_host(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 0 || o[0] == 127 || o[0] >= 224
}

/// True for ICMP types that are or may be errors: no error answers them
/// (RFC 1122 §3.2.2; unknown types as Linux `icmp_send` treats them).
fn is_error_type(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12) || t > 18
}

/// Write into `out` the ICMP error `kind` that the gateway, at address
/// `from`, sends about `offending` (a whole IPv4 datagram as it arrived,
/// bytes from its header on), and return its length.
///
/// The result is an IPv4 datagram to the offending datagram's source: no
/// options, DSCP CS6, DF clear, TTL 64, protocol ICMP, both checksums
/// filled; its Identification is the offending datagram's, byte-swapped
/// (this function keeps no state). The ICMP body quotes the offending
/// datagram, options included, up to 576 bytes in all; `out` needs room
/// for that, [`MAX_ERROR_LEN`] always suffices.
pub fn build_error(out: &mut [u8], from: Ipv4Addr, offending: &[u8], kind: ErrorKind) -> Result<usize, BuildError> {
    let bad = Ipv4Packet::new_checked(offending)?;
    if bad.frag_offset() != 0 {
        return Err(BuildError::Suppressed(Suppressed::Fragment));
    }
    if not_a_host(bad.src_addr()) {
        return Err(BuildError::Suppressed(Suppressed::Source));
    }
    if bad.dst_addr().is_multicast() || bad.dst_addr().is_broadcast() {
        return Err(BuildError::Suppressed(Suppressed::Destination));
    }
    if bad.protocol() == IpProtocol::Icmp {
        match bad.payload().first() {
            Some(&t) if !is_error_type(t) => {}
            _ => return Err(BuildError::Suppressed(Suppressed::IcmpError)),
        }
    }
    let quote = usize::from(bad.total_len()).min(MAX_ERROR_LEN - ERROR_HEADERS_LEN);
    let need = ERROR_HEADERS_LEN + quote;
    if out.len() < need {
        return Err(BuildError::BufferTooSmall { need, have: out.len() });
    }
    let out = &mut out[..need];
    out[ERROR_HEADERS_LEN..].copy_from_slice(&offending[..quote]);
    kind.header().emit(&mut Icmpv4Packet::new_unchecked(&mut out[ipv4::HEADER_LEN..]));

    let mut ip = Ipv4Packet::new_unchecked(out);
    ipv4::Repr {
        src_addr: from,
        dst_addr: bad.src_addr(),
        protocol: IpProtocol::Icmp,
        payload_len: icmpv4::HEADER_LEN + quote,
        ttl: ERROR_TTL,
        ident: bad.ident().swap_bytes(),
        dont_frag: false,
    }
    .emit(&mut ip);
    ip.set_dscp(ERROR_DSCP);
    ip.fill_checksum();
    Ok(need)
}

/// A token bucket: up to `burst` errors at once, refilled at `per_sec` a
/// second (RFC 1812 §4.3.2.8; Linux: `icmp_msgs_per_sec` 1000, burst 50).
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_sec: u32,
    burst: u32,
    /// Tokens in thousandths.
    milli_tokens: u64,
    last_ms: u64,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(per_sec: u32, burst: u32) -> RateLimit {
        RateLimit { per_sec, burst, milli_tokens: u64::from(burst) * 1000, last_ms: 0 }
    }
    /// Take a token at time `now` (milliseconds, monotonic): true if an
    /// error may be sent.
    pub fn allow(&mut self, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now);
        let cap = u64::from(self.burst) * 1000;
        self.milli_tokens = self.milli_tokens.saturating_add(elapsed.saturating_mul(u64::from(self.per_sec))).min(cap);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::new(1000, 50)
    }
}

#[cfg(test)]
mod tests {
    use super::super::captured::*;
    use super::super::rewrite::decrement_ttl;
    use super::*;
    use crate::wire::{be16, checksum};

    const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
    const S: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

    fn build(from: Ipv4Addr, offending: &[u8], kind: ErrorKind) -> Vec<u8> {
        let mut out = [0xa5u8; MAX_ERROR_LEN];
        let n = build_error(&mut out, from, offending, kind).unwrap();
        out[..n].to_vec()
    }

    /// `ours` with the Identification of `linux` (the one field Linux fills
    /// from a counter), checksum fixed up.
    fn with_ident_of(ours: &[u8], linux: &[u8]) -> Vec<u8> {
        let mut v = ours.to_vec();
        let mut ip = Ipv4Packet::new_unchecked(&mut v[..]);
        ip.set_ident(be16(&linux[4..]));
        ip.fill_checksum();
        v
    }

    #[test]
    fn same_bytes_as_linux() {
        // The router 10.88.0.1 answered three TTL-1 datagrams.
        for (offending, linux) in [
            (&UDP_TTL1[..], &TIME_EXCEEDED_UDP[..]),
            (&TCP_SYN_TTL1, &TIME_EXCEEDED_TCP),
            (&TIME_EXCEEDED_ECHO[28..], &TIME_EXCEEDED_ECHO),
        ] {
            let ours = build(ROUTER, offending, ErrorKind::TimeExceeded);
            assert_eq!(with_ident_of(&ours, linux), linux);
        }
        // The server answered the DNS query it got one hop later (TTL 63)
        // with port unreachable; its error then crossed the router too.
        let mut got = UDP_DNS;
        decrement_ttl(&mut got).unwrap();
        let mut ours = build(S, &got, ErrorKind::PortUnreachable);
        decrement_ttl(&mut ours).unwrap();
        assert_eq!(with_ident_of(&ours, &PORT_UNREACHABLE_UDP), PORT_UNREACHABLE_UDP);

        // Fragmentation needed for a 1478-byte echo request, path MTU 1400:
        // 548 bytes quoted. Only those were captured; ping's payload goes on
        // counting bytes, and is not quoted anyway.
        let quoted = &FRAG_NEEDED_ECHO[28..];
        let mut echo: Vec<u8> = quoted.to_vec();
        echo.extend((quoted.len()..1478).map(|i| (i - 28 - 8 - 16 + 0x10) as u8));
        let ours = build(ROUTER, &echo, ErrorKind::FragNeeded { mtu: 1400 });
        assert_eq!(ours.len(), MAX_ERROR_LEN);
        assert_eq!(with_ident_of(&ours, &FRAG_NEEDED_ECHO), FRAG_NEEDED_ECHO);
    }

    #[test]
    fn every_kind_parses_back() {
        let kinds = [
            (ErrorKind::TimeExceeded, 11, 0),
            (ErrorKind::FragNeeded { mtu: 1450 }, 3, 4),
            (ErrorKind::PortUnreachable, 3, 3),
            (ErrorKind::NetUnreachable, 3, 0),
            (ErrorKind::HostUnreachable, 3, 1),
            (ErrorKind::AdminProhibited, 3, 13),
        ];
        for (kind, t, code) in kinds {
            for offending in [&TCP_SYN[..], &UDP_DNS, &ECHO_REQUEST, &ECHO_REPLY, &TCP_DATA] {
                let e = build(ROUTER, offending, kind);
                assert_eq!(e.len(), ERROR_HEADERS_LEN + offending.len());
                let ip = Ipv4Packet::new_checked(&e[..]).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!((ip.src_addr(), ip.dst_addr()), (ROUTER, Ipv4Packet::new_unchecked(offending).src_addr()));
                assert_eq!((ip.ttl(), ip.dscp(), ip.dont_frag(), ip.protocol()), (64, 48, false, IpProtocol::Icmp));
                let m = Icmpv4Packet::new_checked(ip.payload()).unwrap();
                assert!(m.verify_checksum());
                assert_eq!((u8::from(m.msg_type()), m.code()), (t, code));
                assert_eq!(m.next_hop_mtu(), if code == 4 { 1450 } else { 0 });
                assert_eq!(m.data(), offending);
                // etherparse agrees.
                let p = etherparse::SlicedPacket::from_ip(&e).unwrap();
                let Some(etherparse::TransportSlice::Icmpv4(i)) = p.transport else { panic!("no ICMP") };
                assert_eq!(i.checksum(), i.icmp_type().calc_checksum(i.payload()));
                assert_eq!(i.payload(), offending);
                if code == 4 {
                    use etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded;
                    assert_eq!(
                        i.icmp_type(),
                        etherparse::Icmpv4Type::DestinationUnreachable(FragmentationNeeded { next_hop_mtu: 1450 })
                    );
                }
                // And NAT can find the flow it is about.
                let inner = super::super::tuple::FlowKey::from_icmp_error(&e).unwrap();
                assert_eq!(inner, super::super::tuple::FlowKey::from_ipv4(offending).unwrap());
            }
        }
    }

    #[test]
    fn quote_stops_at_576_bytes() {
        let mut big = vec![0u8; 9000];
        big[..20].copy_from_slice(&UDP_DNS[..20]);
        let mut ip = Ipv4Packet::new_unchecked(&mut big[..]);
        ip.set_total_len(9000);
        ip.set_protocol(IpProtocol::Udp);
        ip.fill_checksum();
        for len in [547, 548, 549, 9000] {
            let mut b = big[..len].to_vec();
            b[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            let e = build(ROUTER, &b, ErrorKind::FragNeeded { mtu: 1500 });
            assert_eq!(e.len(), (28 + len).min(576), "len {len}");
            assert_eq!(&e[28..], &b[..e.len() - 28]);
            assert_eq!(checksum::data(&e[20..]), 0xffff);
        }
        // Ethernet padding after Total Length is not quoted.
        let mut padded = ECHO_REQUEST.to_vec();
        padded.extend([0; 20]);
        assert_eq!(build(ROUTER, &padded, ErrorKind::HostUnreachable).len(), 28 + ECHO_REQUEST.len());
    }

    #[test]
    fn suppressed_and_refused() {
        let mut out = [0u8; MAX_ERROR_LEN];
        let mut try_with = |b: &[u8]| build_error(&mut out, ROUTER, b, ErrorKind::TimeExceeded);
        let sup = |s| Err(BuildError::Suppressed(s));
        let with = |b: &[u8], at: usize, v: &[u8]| {
            let mut b = b.to_vec();
            b[at..at + v.len()].copy_from_slice(v);
            b
        };
        // Never an error about an error.
        for err in [&PORT_UNREACHABLE_UDP[..], &TIME_EXCEEDED_TCP, &FRAG_NEEDED_ECHO] {
            assert_eq!(try_with(err), sup(Suppressed::IcmpError));
        }
        for t in [4u8, 5, 11, 12, 19, 255] {
            assert_eq!(try_with(&with(&ECHO_REQUEST, 20, &[t])), sup(Suppressed::IcmpError), "type {t}");
        }
        // Informational ICMP is answered: timestamp, unassigned 1.
        for t in [13u8, 1] {
            assert!(try_with(&with(&ECHO_REQUEST, 20, &[t])).is_ok(), "type {t}");
        }
        let mut empty_icmp = ECHO_REQUEST[..20].to_vec();
        empty_icmp[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(try_with(&empty_icmp), sup(Suppressed::IcmpError));
        // Non-first fragment; a first fragment is fine.
        assert_eq!(try_with(&with(&UDP_DNS, 6, &[0x20, 0x10])), sup(Suppressed::Fragment));
        assert!(try_with(&with(&UDP_DNS, 6, &[0x20, 0x00])).is_ok());
        // Sources that are not one host.
        for src in [[0, 0, 0, 0], [0, 1, 2, 3], [127, 0, 0, 1], [224, 0, 0, 251], [240, 0, 0, 1], [255; 4]] {
            assert_eq!(try_with(&with(&UDP_DNS, 12, &src)), sup(Suppressed::Source), "{src:?}");
        }
        // Group destinations.
        for dst in [[224, 0, 0, 251], [239, 1, 2, 3], [255; 4]] {
            assert_eq!(try_with(&with(&UDP_DNS, 16, &dst)), sup(Suppressed::Destination), "{dst:?}");
        }
        // Not a datagram; too small a buffer.
        assert_eq!(try_with(&UDP_DNS[..30]), Err(BuildError::BadDatagram));
        assert_eq!(try_with(&with(&UDP_DNS, 0, &[0x65])), Err(BuildError::BadDatagram));
        let mut small = [0u8; 84];
        assert_eq!(
            build_error(&mut small, ROUTER, &UDP_DNS, ErrorKind::TimeExceeded),
            Err(BuildError::BufferTooSmall { need: 85, have: 84 })
        );
        assert_eq!(
            build_error(&mut small[..], ROUTER, &UDP_DNS[..56], ErrorKind::TimeExceeded),
            Err(BuildError::BadDatagram)
        );
    }

    #[test]
    fn random_input_never_panics() {
        let mut seed = 0x1cu64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut out = [0u8; MAX_ERROR_LEN];
        for i in 0..50_000 {
            let base: &[u8] = if i % 2 == 0 { &UDP_DNS } else { &FRAG_NEEDED_ECHO };
            let mut b: Vec<u8> = base[..(next() as usize) % (base.len() + 1)].to_vec();
            for _ in 0..next() % 4 {
                if !b.is_empty() {
                    let at = (next() as usize) % b.len().min(40);
                    b[at] = next() as u8;
                }
            }
            let cap = (next() as usize) % (MAX_ERROR_LEN + 1);
            if let Ok(n) = build_error(&mut out[..cap], ROUTER, &b, ErrorKind::FragNeeded { mtu: 1280 }) {
                assert!(n <= cap && n <= MAX_ERROR_LEN);
                assert!(Ipv4Packet::new_checked(&out[..n]).unwrap().verify_checksum());
                assert_eq!(checksum::data(&out[20..n]), 0xffff);
            }
        }
    }

    #[test]
    fn rate_limit() {
        let mut r = RateLimit::new(1000, 3);
        assert!(r.allow(0) && r.allow(0) && r.allow(0));
        assert!(!r.allow(0));
        assert!(r.allow(1)); // one token a millisecond
        assert!(!r.allow(1));
        // Refills to the burst, no more.
        assert_eq!((0..10).filter(|_| r.allow(10_000)).count(), 3);
        // Slow rate: one every 100 ms; time going backwards refills nothing.
        let mut r = RateLimit::new(10, 1);
        assert!(r.allow(1_000));
        assert!(!r.allow(1_099));
        assert!(!r.allow(500));
        assert!(r.allow(1_100));
        assert!(RateLimit::default().allow(0));
    }
}
