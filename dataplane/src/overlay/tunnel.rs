//! The two encapsulations, as tapnet speaks them: the header in front of
//! each inner Ethernet frame, its checks on receipt, and the inner flow
//! hash that spreads flows over the underlay and over the workers.
//!
//! - VXLAN (RFC 7348 §5): 8 bytes after the outer UDP header, flags with
//!   only the I bit set, a 24-bit VNI. On receipt anything else in the flags
//!   or the reserved fields is refused, as the Linux vxlan driver does
//!   (extensions such as GBP or GPE are not spoken).
//! - GRE (RFC 2784, RFC 2890): 8 bytes after the outer IPv4 header, version
//!   0, the K bit and a 32-bit key, protocol 0x6558 (transparent Ethernet
//!   bridging). On receipt a checksum or sequence number is tolerated (and a
//!   checksum verified), a missing key, another version or protocol refused.
//!
//! Per-frame overhead on an IPv4 underlay, which the containers' MTU leaves
//! room for: VXLAN 20 (IPv4) + 8 (UDP) + 8 (VXLAN) + 14 (inner Ethernet) =
//! 50 bytes; GRE 20 (IPv4) + 4 (GRE) + 4 (key) + 14 (inner Ethernet) = 42
//! bytes.

use crate::wire::{ethernet, gre, vxlan, GrePacket, VxlanPacket};

/// Which encapsulation a tunnel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    Vxlan,
    Gre,
}

/// Bytes of the encapsulation header tapnet sends (both are 8).
pub const HEADER_LEN: usize = 8;

impl Encap {
    /// Bytes an inner IPv4 packet loses to encapsulation on an IPv4
    /// underlay: the underlay MTU minus this is the inner MTU.
    pub const fn overhead(self) -> u32 {
        match self {
            Encap::Vxlan => 20 + 8 + 8 + ethernet::HEADER_LEN as u32,
            Encap::Gre => 20 + 8 + ethernet::HEADER_LEN as u32,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Encap::Vxlan => "vxlan",
            Encap::Gre => "gre",
        }
    }

    /// The header in front of every inner frame of network `id` (a VNI or
    /// a key).
    pub fn header(self, id: u32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        match self {
            Encap::Vxlan => {
                let mut p = VxlanPacket::new_unchecked(&mut h[..]);
                p.clear_and_set_flags();
                p.set_vni(vxlan::Vni::new(id & 0x00ff_ffff).unwrap_or_default());
            }
            Encap::Gre => {
                let mut p = GrePacket::new_unchecked(&mut h[..]);
                p.set_flags(false, true, false);
                p.set_protocol(gre::Protocol::TransparentEthernet);
                p.set_key(id);
            }
        }
        h
    }
}

/// Why a received datagram was not decapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecapError {
    /// Shorter than its encapsulation header.
    Truncated,
    /// VXLAN flags other than I alone, reserved bits set; GRE version ≠ 0
    /// or reserved bits set.
    BadFlags,
    /// GRE protocol other than transparent Ethernet bridging.
    BadProtocol,
    /// GRE without a key (tapnet's networks are told apart by it).
    NoKey,
    /// GRE checksum present and wrong.
    BadChecksum,
    /// The inner frame is shorter than an Ethernet header.
    InnerTruncated,
}

/// The network id (VNI or key) of a VXLAN or GRE payload, and where the
/// inner frame starts in it.
#[inline]
pub fn decap(encap: Encap, d: &[u8]) -> Result<(u32, usize), DecapError> {
    let (id, at) = match encap {
        Encap::Vxlan => {
            if d.len() < vxlan::HEADER_LEN {
                return Err(DecapError::Truncated);
            }
            // Flags: exactly I; the 24 reserved bits after them and the 8
            // after the VNI: zero.
            if d[0] != 0x08 || d[1] != 0 || d[2] != 0 || d[3] != 0 || d[7] != 0 {
                return Err(DecapError::BadFlags);
            }
            (u32::from_be_bytes([0, d[4], d[5], d[6]]), vxlan::HEADER_LEN)
        }
        Encap::Gre => {
            let p = match GrePacket::new_checked(d) {
                Ok(p) => p,
                Err(crate::wire::WireError::Truncated) => return Err(DecapError::Truncated),
                Err(_) => return Err(DecapError::BadFlags),
            };
            if p.protocol() != gre::Protocol::TransparentEthernet {
                return Err(DecapError::BadProtocol);
            }
            let Some(key) = p.key() else { return Err(DecapError::NoKey) };
            if !p.verify_checksum() {
                return Err(DecapError::BadChecksum);
            }
            (key, p.header_len())
        }
    };
    if d.len() - at < ethernet::HEADER_LEN {
        return Err(DecapError::InnerTruncated);
    }
    Ok((id, at))
}

/// A hash of an inner frame's flow: IPv4 addresses and, for TCP and UDP,
/// ports; the Ethernet addresses otherwise. Symmetric in neither (the
/// reverse direction may hash elsewhere), stable for a flow. It picks the
/// outer UDP source port (RFC 7348 §5: "a hash of fields from the inner
/// packet") and so the underlay's and the receiver's spreading.
#[inline]
pub fn inner_flow_hash(frame: &[u8]) -> u32 {
    let mut h: u32 = 0x9e37_79b9;
    let mut mix = |v: u32| h = (h ^ v).wrapping_mul(0x0100_0193).rotate_left(13);
    if frame.len() >= 34 && frame[12] == 0x08 && frame[13] == 0x00 && frame[14] >> 4 == 4 {
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        mix(u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]));
        mix(u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]));
        mix(u32::from(ip[9]));
        let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
        if (ip[9] == 6 || ip[9] == 17) && frag == 0 {
            if let Some(p) = ip.get(ihl..ihl + 4) {
                mix(u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
            }
        }
    } else if frame.len() >= 12 {
        mix(u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]));
        mix(u32::from_be_bytes([frame[6], frame[7], frame[8], frame[9]]));
    }
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    // An inner frame: ARP request from 02:42:0a:2a:01:01 (10.42.1.1).
    const ARP: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0x0a, 0x2a, 0x01, 0x01, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00,
        0x06, 0x04, 0x00, 0x01, 0x02, 0x42, 0x0a, 0x2a, 0x01, 0x01, 0x0a, 0x2a, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x0a, 0x2a, 0x02, 0x01,
    ];

    fn with(h: &[u8], inner: &[u8]) -> Vec<u8> {
        let mut v = h.to_vec();
        v.extend_from_slice(inner);
        v
    }

    #[test]
    fn vxlan_header_bytes_follow_rfc_7348() {
        // VNI 42: flags 0x08, VNI 0x00002a in bytes 4..7.
        assert_eq!(Encap::Vxlan.header(42), [0x08, 0, 0, 0, 0x00, 0x00, 0x2a, 0x00]);
        assert_eq!(Encap::Vxlan.header(0x00ab_cdef), [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0x00]);
        let d = with(&Encap::Vxlan.header(42), &ARP);
        assert_eq!(decap(Encap::Vxlan, &d), Ok((42, 8)));
        assert_eq!(Encap::Vxlan.overhead(), 50);
    }

    #[test]
    fn gre_header_bytes_follow_rfc_2890() {
        // K bit (0x2000), version 0, protocol 0x6558, key 42.
        assert_eq!(Encap::Gre.header(42), [0x20, 0x00, 0x65, 0x58, 0, 0, 0, 42]);
        let d = with(&Encap::Gre.header(0xdead_beef), &ARP);
        assert_eq!(decap(Encap::Gre, &d), Ok((0xdead_beef, 8)));
        assert_eq!(Encap::Gre.overhead(), 42);
        // With a (correct) checksum and a sequence number: 16 bytes.
        let mut h = vec![0xb0, 0x00, 0x65, 0x58, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1];
        h.extend_from_slice(&ARP);
        let c = !crate::wire::checksum::data(&h);
        h[4..6].copy_from_slice(&c.to_be_bytes());
        assert_eq!(decap(Encap::Gre, &h), Ok((7, 16)));
        h[20] ^= 1;
        assert_eq!(decap(Encap::Gre, &h), Err(DecapError::BadChecksum));
    }

    #[test]
    fn malformed_encapsulation_is_refused_by_reason() {
        let v = with(&Encap::Vxlan.header(42), &ARP);
        for n in 0..8 {
            assert_eq!(decap(Encap::Vxlan, &v[..n]), Err(DecapError::Truncated));
        }
        assert_eq!(decap(Encap::Vxlan, &v[..21]), Err(DecapError::InnerTruncated));
        for (at, val) in [(0, 0x00), (0, 0x0c), (0, 0x88), (1, 1), (3, 0x80), (7, 1)] {
            let mut bad = v.clone();
            bad[at] = val;
            assert_eq!(decap(Encap::Vxlan, &bad), Err(DecapError::BadFlags), "byte {at} = {val:#x}");
        }
        let g = with(&Encap::Gre.header(42), &ARP);
        for n in 0..8 {
            assert_eq!(decap(Encap::Gre, &g[..n]), Err(DecapError::Truncated), "{n}");
        }
        let mut v1 = g.clone();
        v1[1] = 0x01; // version 1 (PPTP)
        assert_eq!(decap(Encap::Gre, &v1), Err(DecapError::BadFlags));
        let mut ipv4 = g.clone();
        ipv4[2..4].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(decap(Encap::Gre, &ipv4), Err(DecapError::BadProtocol));
        let nokey = with(&[0x00, 0x00, 0x65, 0x58], &ARP);
        assert_eq!(decap(Encap::Gre, &nokey), Err(DecapError::NoKey));
        assert_eq!(decap(Encap::Gre, &g[..8 + 13]), Err(DecapError::InnerTruncated));
    }

    #[test]
    fn flow_hash_is_stable_per_flow_and_spreads_flows() {
        let mut f = vec![0u8; 54];
        f[12] = 0x08;
        f[14] = 0x45;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 42, 1, 1]);
        f[30..34].copy_from_slice(&[10, 42, 2, 1]);
        let mut seen = std::collections::HashSet::new();
        for sport in 0..64u16 {
            f[34..36].copy_from_slice(&(40000 + sport).to_be_bytes());
            let h = inner_flow_hash(&f);
            assert_eq!(h, inner_flow_hash(&f));
            seen.insert(h % 16);
        }
        assert!(seen.len() >= 12, "64 flows landed in {} of 16 buckets", seen.len());
        // Never panics, whatever the bytes.
        for n in 0..=f.len() {
            inner_flow_hash(&f[..n]);
        }
        let _ = inner_flow_hash(&ARP);
    }
}
