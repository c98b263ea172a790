//! The names of one network: container name → IPv4 addresses.
//!
//! The control plane builds a [`DnsTable`] off the hot path (building
//! allocates) and shares it read-only with the workers, e.g. as an
//! `Arc<DnsTable>` swapped whole when a container comes or goes. Lookups
//! never allocate: the queried name is decoded into a stack buffer.
//!
//! Names are kept in lowercased, uncompressed wire form (length bytes and
//! labels, root byte included), so `web.front` and the single label
//! `web.front` (with a dot inside) can never be confused, and matching is
//! one hash lookup (hashbrown with its default foldhash, seeded at random
//! per table). Matching is case-insensitive for ASCII letters only
//! (RFC 4343 §3); other bytes match exactly.
//!
//! A name may have several addresses (a container with several endpoints
//! on the network, or several containers answering to one alias): a lookup
//! returns all of them, in the order they were first given, each once.

use std::net::Ipv4Addr;

use hashbrown::HashMap;

use crate::wire::dns::{self, DnsError, MAX_LABEL_LEN, MAX_NAME_LEN};

/// Answer TTL when none is set: Docker's embedded DNS uses 600 s.
pub const DEFAULT_TTL: u32 = 600;
/// Largest UDP payload offered to EDNS clients when none is set: 1232
/// bytes, which fits a 1280-byte IPv6 minimum MTU (DNS Flag Day 2020).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;

/// Why a name cannot go into a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The name is empty or the root: it names no container.
    #[error("empty DNS name {0:?}")]
    Empty(String),
    /// Two dots in a row, or a leading dot.
    #[error("DNS name {0:?} has an empty label")]
    EmptyLabel(String),
    /// A label longer than 63 bytes (RFC 1035 §2.3.4).
    #[error("DNS name {0:?} has a label longer than 63 bytes")]
    LabelTooLong(String),
    /// Longer than 255 bytes in wire form (RFC 1035 §2.3.4).
    #[error("DNS name {0:?} is longer than 255 bytes in wire form")]
    NameTooLong(String),
}

/// The names of one network and their IPv4 addresses, plus how to answer
/// for them (TTL, UDP payload size).
#[derive(Debug, Clone)]
pub struct DnsTable {
    /// Lowercased wire-form name → range of `addrs`.
    names: HashMap<Box<[u8]>, (u32, u32)>,
    addrs: Vec<Ipv4Addr>,
    ttl: u32,
    max_udp_payload: u16,
}

/// `name` as lowercased wire form in `out`; its length.
fn text_to_wire(name: &str, out: &mut [u8; MAX_NAME_LEN]) -> Result<usize, TableError> {
    let err = |f: fn(String) -> TableError| Err(f(name.to_string()));
    let body = name.strip_suffix('.').unwrap_or(name);
    if body.is_empty() {
        return err(TableError::Empty);
    }
    let mut n = 0;
    for label in body.split('.') {
        let l = label.as_bytes();
        if l.is_empty() {
            return err(TableError::EmptyLabel);
        }
        if l.len() > MAX_LABEL_LEN {
            return err(TableError::LabelTooLong);
        }
        // Room for this label and the root byte.
        if n + 1 + l.len() + 1 > MAX_NAME_LEN {
            return err(TableError::NameTooLong);
        }
        out[n] = l.len() as u8;
        out[n + 1..n + 1 + l.len()].copy_from_slice(l);
        n += 1 + l.len();
    }
    out[n] = 0;
    let len = n + 1;
    out[..len].make_ascii_lowercase();
    Ok(len)
}

impl DnsTable {
    /// A table from `(name, address)` pairs. Names are dotted text, with or
    /// without a trailing dot, matched case-insensitively. A name given
    /// several times gathers its addresses in order, without duplicates.
    pub fn new<I, S>(entries: I) -> Result<DnsTable, TableError>
    where
        I: IntoIterator<Item = (S, Ipv4Addr)>,
        S: AsRef<str>,
    {
        let mut grouped: Vec<(Box<[u8]>, Vec<Ipv4Addr>)> = Vec::new();
        let mut index: HashMap<Box<[u8]>, usize> = HashMap::new();
        let mut wire = [0u8; MAX_NAME_LEN];
        for (name, addr) in entries {
            let len = text_to_wire(name.as_ref(), &mut wire)?;
            let key: Box<[u8]> = wire[..len].into();
            let i = *index.entry(key.clone()).or_insert_with(|| {
                grouped.push((key, Vec::new()));
                grouped.len() - 1
            });
            let list = &mut grouped[i].1;
            if !list.contains(&addr) {
                list.push(addr);
            }
        }
        let mut names = HashMap::with_capacity(grouped.len());
        let mut addrs = Vec::new();
        for (key, list) in grouped {
            names.insert(key, (addrs.len() as u32, list.len() as u32));
            addrs.extend(list);
        }
        Ok(DnsTable { names, addrs, ttl: DEFAULT_TTL, max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD })
    }

    /// An empty table: every query is "not ours".
    pub fn empty() -> DnsTable {
        DnsTable {
            names: HashMap::new(),
            addrs: Vec::new(),
            ttl: DEFAULT_TTL,
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
        }
    }

    /// The TTL of answers, in seconds.
    pub fn with_ttl(mut self, ttl: u32) -> DnsTable {
        self.ttl = ttl;
        self
    }

    /// The largest UDP payload to send an EDNS client, and to offer in the
    /// OPT record; at least 512. On a network whose MTU is below 1260, set
    /// it to the MTU less 28 (IPv4 and UDP headers) so no answer is
    /// fragmented.
    pub fn with_max_udp_payload(mut self, bytes: u16) -> DnsTable {
        self.max_udp_payload = bytes.max(dns::MIN_UDP_PAYLOAD as u16);
        self
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    pub fn max_udp_payload(&self) -> u16 {
        self.max_udp_payload
    }

    /// Names in the table.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The addresses of a name in uncompressed wire form (as
    /// `wire::dns::read_name` writes it), already lowercased.
    #[inline]
    pub fn lookup_wire(&self, lowercase_wire: &[u8]) -> Option<&[Ipv4Addr]> {
        let &(start, len) = self.names.get(lowercase_wire)?;
        self.addrs.get(start as usize..start as usize + len as usize)
    }

    /// The addresses of the name at offset `at` of a DNS message, compressed
    /// or not, in any case. `Ok(None)` for a well-formed name not in the
    /// table. No allocation: the name is decoded into a stack buffer.
    pub fn lookup_in_message(&self, msg: &[u8], at: usize) -> Result<Option<&[Ipv4Addr]>, DnsError> {
        let mut buf = [0u8; MAX_NAME_LEN];
        let (_, len) = dns::read_name(msg, at, &mut buf)?;
        let wire = &mut buf[..len];
        wire.make_ascii_lowercase();
        Ok(self.lookup_wire(wire))
    }

    /// The addresses of a dotted name, in any case, with or without the
    /// trailing dot. `None` for names not in the table or not valid.
    pub fn lookup(&self, name: &str) -> Option<&[Ipv4Addr]> {
        let mut buf = [0u8; MAX_NAME_LEN];
        let len = text_to_wire(name, &mut buf).ok()?;
        self.lookup_wire(&buf[..len])
    }
}

impl Default for DnsTable {
    fn default() -> Self {
        Self::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
    const WEB2: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 12);
    const DB: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 10);

    fn table() -> DnsTable {
        DnsTable::new([("web", WEB), ("DB.", DB), ("web.front", WEB), ("web", WEB2), ("Web", WEB)]).unwrap()
    }

    #[test]
    fn names_match_in_any_case_with_or_without_the_dot() {
        let t = table();
        assert_eq!(t.len(), 3);
        for name in ["web", "web.", "WEB", "wEb."] {
            assert_eq!(t.lookup(name), Some(&[WEB, WEB2][..]), "{name}");
        }
        assert_eq!(t.lookup("db"), Some(&[DB][..]));
        assert_eq!(t.lookup("web.front."), Some(&[WEB][..]));
        for absent in ["we", "webb", "front", "web.back", "", ".", "db..", "x".repeat(64).as_str()] {
            assert_eq!(t.lookup(absent), None, "{absent}");
        }
        assert_eq!((t.ttl(), t.max_udp_payload()), (600, 1232));
        let t = t.with_ttl(5).with_max_udp_payload(100);
        assert_eq!((t.ttl(), t.max_udp_payload()), (5, 512));
        assert!(DnsTable::empty().is_empty() && DnsTable::default().lookup("web").is_none());
    }

    #[test]
    fn lookup_from_wire_names() {
        let t = table();
        // `dig WeB.FRONT`: the question at offset 12 of a real query.
        let mut q = [
            0xbf, 0xd2, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x03, b'W', b'e', b'B', 0x05, b'F', b'R', b'O', b'N', b'T', 0x00, 0x00, 0x01, 0x00, 0x01,
        ];
        assert_eq!(t.lookup_in_message(&q, 12), Ok(Some(&[WEB][..])));
        // The same name compressed: "web" + pointer to "front" inside it.
        let mut m = q.to_vec();
        let at = m.len();
        m.extend_from_slice(&[3, b'w', b'e', b'b', 0xc0, 16]);
        assert_eq!(t.lookup_in_message(&m, at), Ok(Some(&[WEB][..])));
        // A single label "web.front" with a dot in it is another name.
        let mut dotted = q[..12].to_vec();
        dotted.extend_from_slice(b"\x09web.front\x00");
        assert_eq!(t.lookup_in_message(&dotted, 12), Ok(None));
        // Only ASCII letters fold: 0xc9 is not 0xe9.
        let t8 = DnsTable::new([("caf\u{e9}", WEB)]).unwrap();
        assert_eq!(t8.lookup("CAF\u{e9}"), Some(&[WEB][..]));
        assert_eq!(t8.lookup("caf\u{c9}"), None);
        // Malformed names are errors, not misses.
        q[12] = 0xc0;
        assert_eq!(t.lookup_in_message(&q, 12), Err(DnsError::BadPointer));
        assert_eq!(t.lookup_in_message(&q[..14], 16), Err(DnsError::Truncated));
    }

    #[test]
    fn invalid_names_are_refused() {
        let long = "a".repeat(64);
        assert_eq!(DnsTable::new([(long.as_str(), WEB)]).unwrap_err(), TableError::LabelTooLong(long.clone()));
        assert!(DnsTable::new([("a".repeat(63), WEB)]).is_ok());
        for empty in ["", "."] {
            assert_eq!(DnsTable::new([(empty, WEB)]).unwrap_err(), TableError::Empty(empty.into()));
        }
        for bad in ["a..b", ".a", "a.."] {
            assert_eq!(DnsTable::new([(bad, WEB)]).unwrap_err(), TableError::EmptyLabel(bad.into()));
        }
        // 4 × 63-byte labels: 4 × 64 + 1 = 257 bytes.
        let l = "b".repeat(63);
        let too_long = [l.as_str(); 4].join(".");
        assert_eq!(DnsTable::new([(too_long.as_str(), WEB)]).unwrap_err(), TableError::NameTooLong(too_long.clone()));
        // 3 × 64 + 62 + 1 = 255: the longest.
        let longest = format!("{l}.{l}.{l}.{}", "c".repeat(61));
        let t = DnsTable::new([(longest.as_str(), WEB)]).unwrap();
        assert_eq!(t.lookup(&longest.to_uppercase()), Some(&[WEB][..]));
    }
}
