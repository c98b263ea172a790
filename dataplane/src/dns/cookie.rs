//! SYN cookies for the stateless DNS-over-TCP responder.
//!
//! The initial sequence number of our SYN-ACK is a keyed hash of the
//! connection: the 4-tuple, the client's ISN and a coarse time slot. The
//! client echoes it (plus one) in the acknowledgment number of every later
//! segment, so the segment that carries the query proves that its sender
//! saw our SYN-ACK, without any state kept between the two.
//!
//! Layout of the 32-bit cookie: the low 3 bits are an index into
//! [`MSS_TABLE`] that remembers the client's MSS (as Linux's SYN cookies
//! do), so the answer can be sized to what the client accepts; the upper
//! 29 bits are the upper 29 bits of the hash, whose input includes the
//! index. Every bit counts: a changed index changes the hash. A blind guess
//! is accepted with a probability of 2^-28 (two time slots are tried).
//!
//! The hash is SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast
//! short-input PRF", 2012) under a 128-bit secret the caller supplies and
//! should draw from the OS's random source at start-up. Time is the
//! caller's `now_ms`: a cookie made in slot `s` (of [`SLOT_MS`]) is valid
//! in slots `s` and `s + 1`, so for 64 to 128 seconds.

use std::net::Ipv4Addr;

/// Length of a time slot in milliseconds.
pub const SLOT_MS: u64 = 64_000;

/// Client MSS values a cookie can remember: the largest entry not above the
/// client's MSS is kept. 536 is the default MSS (RFC 9293 §3.7.1); a
/// client announcing less is taken at 536. 1460 is Ethernet's 1500-byte
/// MTU, 8960 a 9000-byte jumbo MTU.
pub const MSS_TABLE: [u16; 8] = [536, 1200, 1360, 1400, 1440, 1460, 4016, 8960];
/// The cookie bits that hold the index into `MSS_TABLE`.
const MSS_MASK: u32 = 0b111;

/// The secret key of the cookies.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CookieKey {
    k0: u64,
    k1: u64,
}

impl CookieKey {
    /// A key from 16 secret random bytes.
    pub const fn new(bytes: [u8; 16]) -> CookieKey {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        let mut i = 0;
        while i < 8 {
            lo[i] = bytes[i];
            hi[i] = bytes[i + 8];
            i += 1;
        }
        CookieKey { k0: u64::from_le_bytes(lo), k1: u64::from_le_bytes(hi) }
    }
}

impl core::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

/// The 4-tuple of a connection, from the client's side: `src` is the
/// client, `dst` the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FourTuple {
    pub src_addr: Ipv4Addr,
    pub src_port: u16,
    pub dst_addr: Ipv4Addr,
    pub dst_port: u16,
}

#[inline]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 of `msg` under `key`.
fn siphash24(key: &CookieKey, msg: &[u8]) -> u64 {
    let mut v = [
        key.k0 ^ 0x736f_6d65_7073_6575,
        key.k1 ^ 0x646f_7261_6e64_6f6d,
        key.k0 ^ 0x6c79_6765_6e65_7261,
        key.k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut words = msg.chunks_exact(8);
    for w in &mut words {
        let m = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        v[3] ^= m;
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= m;
    }
    // The last word: the remaining bytes, and the length's low byte on top.
    let mut last = [0u8; 8];
    let rest = words.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = msg.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The hash of a connection in time slot `slot` with MSS index `mss_idx`.
fn hash(key: &CookieKey, t: &FourTuple, client_isn: u32, slot: u64, mss_idx: u8) -> u32 {
    let mut m = [0u8; 24];
    m[0..4].copy_from_slice(&t.src_addr.octets());
    m[4..8].copy_from_slice(&t.dst_addr.octets());
    m[8..10].copy_from_slice(&t.src_port.to_be_bytes());
    m[10..12].copy_from_slice(&t.dst_port.to_be_bytes());
    m[12..16].copy_from_slice(&client_isn.to_be_bytes());
    m[16..24].copy_from_slice(&((slot << 3) | u64::from(mss_idx)).to_be_bytes());
    siphash24(key, &m) as u32
}

/// The index of the largest [`MSS_TABLE`] entry not above `mss`.
pub fn mss_index(mss: u16) -> u8 {
    MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0) as u8
}

/// Our ISN for a SYN with sequence number `client_isn` and MSS option
/// `client_mss` (536 if it had none), at time `now_ms`.
pub fn make(key: &CookieKey, t: &FourTuple, client_isn: u32, client_mss: u16, now_ms: u64) -> u32 {
    let idx = mss_index(client_mss);
    (hash(key, t, client_isn, now_ms / SLOT_MS, idx) & !MSS_MASK) | u32::from(idx)
}

/// Check `cookie`, the acknowledgment number less one, of a segment whose
/// sequence number is `client_isn + 1`. The client MSS it remembers if it
/// was made in this slot or the one before.
pub fn check(key: &CookieKey, t: &FourTuple, client_isn: u32, cookie: u32, now_ms: u64) -> Option<u16> {
    let slot = now_ms / SLOT_MS;
    let idx = (cookie & MSS_MASK) as u8;
    let mut slots = [Some(slot), slot.checked_sub(1)].into_iter().flatten();
    slots.any(|s| (hash(key, t, client_isn, s, idx) ^ cookie) & !MSS_MASK == 0).then(|| MSS_TABLE[usize::from(idx)])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: CookieKey = CookieKey::new([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);

    fn tuple() -> FourTuple {
        FourTuple {
            src_addr: Ipv4Addr::new(10, 88, 0, 2),
            src_port: 40000,
            dst_addr: Ipv4Addr::new(10, 88, 0, 1),
            dst_port: 53,
        }
    }

    #[test]
    fn siphash_reference_vectors() {
        // The paper's Appendix A: key 00..0f, message 00..0e.
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(&KEY, &msg), 0xa129_ca61_49be_45e5);
        // First entry of the reference implementation's vectors.h: the
        // empty message.
        assert_eq!(siphash24(&KEY, &[]), 0x726f_db47_dd0e_0e31);
    }

    #[test]
    #[allow(deprecated)]
    fn siphash_matches_std_for_every_length() {
        use std::hash::{Hasher, SipHasher};
        let bytes: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37) ^ 0x5a).collect();
        for len in 0..bytes.len() {
            let mut h = SipHasher::new_with_keys(KEY.k0, KEY.k1);
            h.write(&bytes[..len]);
            assert_eq!(siphash24(&KEY, &bytes[..len]), h.finish(), "len {len}");
        }
    }

    #[test]
    fn cookies_check_within_two_slots() {
        let isn = 0x1234_5678;
        let now = 10 * SLOT_MS + 5;
        let c = make(&KEY, &tuple(), isn, 1460, now);
        assert_eq!(check(&KEY, &tuple(), isn, c, now), Some(1460));
        assert_eq!(check(&KEY, &tuple(), isn, c, 11 * SLOT_MS + SLOT_MS - 1), Some(1460));
        // Two slots later it has expired; from the future it never was.
        assert_eq!(check(&KEY, &tuple(), isn, c, 12 * SLOT_MS), None);
        assert_eq!(check(&KEY, &tuple(), isn, c, 10 * SLOT_MS - 1), None);
        // Anything else in the hash changes the cookie.
        let other_key = CookieKey::new([9; 16]);
        assert_eq!(check(&other_key, &tuple(), isn, c, now), None);
        assert_eq!(check(&KEY, &tuple(), isn + 1, c, now), None);
        for t in [
            FourTuple { src_port: 40001, ..tuple() },
            FourTuple { dst_port: 54, ..tuple() },
            FourTuple { src_addr: Ipv4Addr::new(10, 88, 0, 3), ..tuple() },
            FourTuple { dst_addr: Ipv4Addr::new(10, 89, 0, 1), ..tuple() },
        ] {
            assert_eq!(check(&KEY, &t, isn, c, now), None, "{t:?}");
        }
        // Any flipped bit is caught, those of the MSS index included, and
        // so is a cookie off by one either way.
        for bit in 0..32 {
            assert_eq!(check(&KEY, &tuple(), isn, c ^ (1 << bit), now), None, "bit {bit}");
        }
        assert_eq!(check(&KEY, &tuple(), isn, c.wrapping_add(1), now), None);
        assert_eq!(check(&KEY, &tuple(), isn, c.wrapping_sub(1), now), None);
        assert_eq!(c & MSS_MASK, 5, "the index of 1460 in plain sight");
        // Slot 0 has no slot before it.
        let c0 = make(&KEY, &tuple(), isn, 536, 0);
        assert_eq!(check(&KEY, &tuple(), isn, c0, 1), Some(536));
    }

    #[test]
    fn mss_is_remembered_rounded_down() {
        assert_eq!(mss_index(0), 0);
        assert_eq!(mss_index(536), 0);
        assert_eq!(mss_index(1459), 4);
        assert_eq!(mss_index(1460), 5);
        assert_eq!(mss_index(65495), 7);
        for mss in [100, 536, 1000, 1300, 1460, 9000, u16::MAX] {
            let c = make(&KEY, &tuple(), 7, mss, 1);
            let got = check(&KEY, &tuple(), 7, c, 1).unwrap();
            assert!(got <= mss.max(536), "{mss} -> {got}");
            assert_eq!(got, MSS_TABLE[usize::from(mss_index(mss))]);
        }
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{KEY:?}"), "CookieKey(..)");
    }
}
