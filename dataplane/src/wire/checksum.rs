//! The internet checksum (RFC 1071), the TCP/UDP pseudo-headers and the
//! incremental update NAT uses to rewrite addresses and ports (RFC 1624).
//!
//! Sums are returned folded to 16 bits and *not* complemented, so partial
//! sums can be added with [`combine`]; a header's checksum field holds the
//! complement of the sum over the header with that field zeroed, and a
//! received header is intact when the sum over it, field included, is 0xffff.

use super::IpProtocol;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Fold a wide one's-complement accumulator to 16 bits (RFC 1071 §4.1).
#[inline]
const fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// One's-complement sum of `bytes` taken as big-endian 16-bit words, an odd
/// trailing byte padded with zero (RFC 1071 §4.1).
///
/// Adds 32-bit native-endian words into a 64-bit accumulator. The sum is
/// independent of byte order (RFC 1071 §2(B)), so the order is fixed once on
/// the folded result instead of per word; 32-bit words are a parallel
/// summation (§2(C)) and their carries are deferred (§2(D)) into the high
/// half, which cannot overflow within a block of 2^30 bytes. The loop
/// vectorises; bench `checksum/data_1500` measures it.
pub fn data(bytes: &[u8]) -> u16 {
    let mut total: u64 = 0;
    for block in bytes.chunks(1 << 30) {
        let mut acc: u64 = 0;
        let mut words = block.chunks_exact(4);
        for w in &mut words {
            acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        }
        match *words.remainder() {
            [a, b, c] => acc += u64::from(u16::from_ne_bytes([a, b])) + u64::from(u16::from_ne_bytes([c, 0])),
            [a, b] => acc += u64::from(u16::from_ne_bytes([a, b])),
            [a] => acc += u64::from(u16::from_ne_bytes([a, 0])),
            _ => {}
        }
        total += u64::from(fold(acc));
    }
    u16::from_be_bytes(fold(total).to_ne_bytes())
}

/// One's-complement sum of partial sums.
///
/// Sums over consecutive pieces of one message combine correctly only when
/// every piece but the last has an even length.
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// Sum of the IPv4 pseudo-header that TCP (RFC 9293 §3.1) and UDP (RFC 768)
/// checksums cover: addresses, protocol and the transport length.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, length: u16) -> u16 {
    let (s, d) = (u32::from(src), u32::from(dst));
    fold(
        u64::from(s >> 16)
            + u64::from(s & 0xffff)
            + u64::from(d >> 16)
            + u64::from(d & 0xffff)
            + u64::from(u8::from(protocol))
            + u64::from(length),
    )
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, the 32-bit
/// upper-layer length and the next header value.
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: IpProtocol, length: u32) -> u16 {
    let sum: u64 = src.segments().iter().chain(dst.segments().iter()).map(|&w| u64::from(w)).sum();
    fold(sum + u64::from(length >> 16) + u64::from(length & 0xffff) + u64::from(u8::from(next_header)))
}

/// The checksum field after one 16-bit word it covers changes from `old` to
/// `new`: RFC 1624 §3, eqn. 3, `HC' = ~(~HC + ~m + m')`.
///
/// Unlike RFC 1141's eqn. 1 this never yields -0 (0xffff) where
/// recomputation gives 0x0000 (RFC 1624 §4). A UDP checksum of zero means
/// "none" (RFC 768) and must not be updated; `udp::Packet` handles that.
#[inline]
pub fn update_u16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!csum) + u64::from(!old) + u64::from(new))
}

/// [`update_u16`] for a 32-bit field such as an IPv4 address or a port pair.
#[inline]
pub fn update_u32(csum: u16, old: u32, new: u32) -> u16 {
    !fold(
        u64::from(!csum)
            + u64::from(!(old >> 16) & 0xffff)
            + u64::from(!old & 0xffff)
            + u64::from(new >> 16)
            + u64::from(new & 0xffff),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: the plain big-endian 16-bit loop of RFC 1071 §4.1.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut words = bytes.chunks_exact(2);
        for w in &mut words {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [b] = *words.remainder() {
            sum += u32::from(b) << 8;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    // Deterministic bytes for the property tests.
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        // Split at an even boundary and combined, the sum is the same.
        assert_eq!(combine(&[data(&bytes[..2]), data(&bytes[2..])]), 0xddf2);
    }

    #[test]
    fn odd_lengths_and_empty() {
        assert_eq!(data(&[]), 0);
        assert_eq!(data(&[0xab]), 0xab00);
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        for len in 0..64 {
            let b = noise(len, 0x9e37_79b9_7f4a_7c15 + len as u64);
            assert_eq!(data(&b), reference(&b), "len {len}");
        }
    }

    #[test]
    fn matches_reference_on_large_buffers() {
        // All-0xff words stress the carry folding.
        let ones = [0xffu8; 1501];
        assert_eq!(data(&ones), reference(&ones));
        for (i, len) in [1500usize, 1514, 9000, 65535].into_iter().enumerate() {
            let b = noise(len, 7 + i as u64);
            assert_eq!(data(&b), reference(&b), "len {len}");
        }
    }

    #[test]
    fn ipv4_header_checksum() {
        // UDP over IPv4, 192.168.0.1 -> 192.168.0.199, with its checksum
        // field (0xb861) in place: the whole header sums to 0xffff.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(data(&hdr), 0xffff);
        let mut zeroed = hdr;
        zeroed[10..12].fill(0);
        assert_eq!(!data(&zeroed), 0xb861);
    }

    #[test]
    fn pseudo_headers() {
        let v4 = pseudo_header_v4(Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(10, 88, 0, 3), IpProtocol::Udp, 20);
        let bytes = [10, 88, 0, 2, 10, 88, 0, 3, 0, 17, 0, 20];
        assert_eq!(v4, reference(&bytes));

        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fd00::2".parse().unwrap(), "fd00:ffff::3".parse().unwrap());
        let v6 = pseudo_header_v6(&s, &d, IpProtocol::Tcp, 0x0001_0020);
        let mut bytes = [0u8; 40];
        bytes[..16].copy_from_slice(&s.octets());
        bytes[16..32].copy_from_slice(&d.octets());
        bytes[32..36].copy_from_slice(&0x0001_0020u32.to_be_bytes());
        bytes[39] = 6;
        assert_eq!(v6, reference(&bytes));
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 becomes m' = 0x3285. Eqn. 3
        // gives 0x0000, as recomputation does; RFC 1141's gave 0xffff.
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn incremental_matches_recomputation() {
        for i in 0..200u64 {
            let mut b = noise(40, i + 1);
            b[10..12].fill(0);
            let csum = !data(&b);
            b[10..12].copy_from_slice(&csum.to_be_bytes());

            // Rewrite a port (16 bits) and an address (32 bits) in place.
            let n = noise(6, i + 1000);
            let old16 = u16::from_be_bytes([b[20], b[21]]);
            let new16 = u16::from_be_bytes([n[0], n[1]]);
            let old32 = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
            let new32 = u32::from_be_bytes([n[2], n[3], n[4], n[5]]);
            let c = update_u32(update_u16(csum, old16, new16), old32, new32);
            b[20..22].copy_from_slice(&new16.to_be_bytes());
            b[12..16].copy_from_slice(&new32.to_be_bytes());
            b[10..12].fill(0);
            let fresh = !data(&b);
            // 0x0000 and 0xffff are the two zeroes of one's complement.
            assert!(c == fresh || (c, fresh) == (0xffff, 0) || (c, fresh) == (0, 0xffff), "{c:04x} {fresh:04x}");
            b[10..12].copy_from_slice(&c.to_be_bytes());
            assert_eq!(data(&b), 0xffff);
        }
    }
}
