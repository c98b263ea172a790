//! TCP MSS clamping for frames entering an overlay: a SYN whose maximum
//! segment size option (RFC 9293 §3.7.1) promises more than fits in the
//! overlay's inner MTU is rewritten to the largest that fits, so both ends
//! of a connection across the overlay send segments that need no
//! fragmentation, even when path MTU discovery is blocked somewhere.
//! (What `iptables … -j TCPMSS --clamp-mss-to-pmtu` does for Docker users.)

use crate::wire::checksum;
use crate::wire::ethernet;

/// Bytes of IPv4 and TCP headers (without options) an MSS leaves out.
pub const HEADERS: u32 = 40;

/// If `frame` (Ethernet, IPv4, TCP) is a SYN with an MSS option above
/// `mtu - 40`, lower the option to that and fix the TCP checksum (unless it
/// is `partial`: a checksum the sender's kernel has not computed yet, which
/// covers the option when it is computed). Returns the old MSS if it
/// clamped. Anything else (not TCP, not a SYN, no option, options
/// malformed, a fragment) is left alone.
pub fn clamp(frame: &mut [u8], mtu: u32, partial: bool) -> Option<u16> {
    let max = u16::try_from(mtu.checked_sub(HEADERS)?).unwrap_or(u16::MAX);
    let l3 = ethernet::HEADER_LEN;
    if frame.len() < l3 + 20 || frame[12] != 0x08 || frame[13] != 0x00 || frame[l3] >> 4 != 4 {
        return None;
    }
    let ip = &frame[l3..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    if ip[9] != 6 || frag != 0 || ihl < 20 {
        return None;
    }
    let l4 = l3 + ihl;
    let tcp = frame.get(l4..)?;
    if tcp.len() < 20 || tcp[13] & 0x02 == 0 {
        return None;
    }
    let thl = usize::from(tcp[12] >> 4) * 4;
    if thl < 20 || tcp.len() < thl {
        return None;
    }
    // Walk the options for kind 2, length 4 (RFC 9293 §3.2).
    let mut at = 20;
    while at < thl {
        match tcp[at] {
            0 => return None,
            1 => at += 1,
            kind => {
                let len = usize::from(*tcp.get(at + 1)?);
                if len < 2 || at + len > thl {
                    return None;
                }
                if kind == 2 && len == 4 {
                    let old = u16::from_be_bytes([tcp[at + 2], tcp[at + 3]]);
                    if old <= max {
                        return None;
                    }
                    let o = l4 + at + 2;
                    frame[o..o + 2].copy_from_slice(&max.to_be_bytes());
                    if !partial {
                        // The option's 16-bit word starts at an even offset
                        // from the TCP header only if `at` is even; the
                        // checksum works on aligned words.
                        let c = l4 + 16;
                        let csum = u16::from_be_bytes([frame[c], frame[c + 1]]);
                        let new = if at % 2 == 0 {
                            checksum::update_u16(csum, old, max)
                        } else {
                            let word = |v: u16, b: u8| u32::from(b) << 24 | u32::from(v) << 8;
                            let (prev, next) = (frame[o - 1], frame.get(o + 2).copied().unwrap_or(0));
                            let old32 = word(old, prev) | u32::from(next);
                            let new32 = word(max, prev) | u32::from(next);
                            checksum::update_u32(csum, old32, new32)
                        };
                        frame[c..c + 2].copy_from_slice(&new.to_be_bytes());
                    }
                    return Some(old);
                }
                at += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN as Linux sends it (MSS 1460, SACK, timestamps, window scale),
    /// built with etherparse so the checksums are independent.
    fn syn(mss: u16, with_nop_first: bool) -> Vec<u8> {
        use etherparse::{PacketBuilder, TcpOptionElement::*};
        let mut opts =
            vec![MaximumSegmentSize(mss), SelectiveAcknowledgementPermitted, Timestamp(1, 0), WindowScale(7)];
        if with_nop_first {
            opts.insert(0, Noop);
        }
        let b = PacketBuilder::ethernet2([2, 0x42, 10, 42, 1, 1], [2, 0x42, 10, 42, 2, 1])
            .ipv4([10, 42, 1, 1], [10, 42, 2, 1], 64)
            .tcp(40000, 80, 1000, 64240)
            .syn()
            .options(&opts)
            .unwrap();
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    }

    fn tcp_ok(f: &[u8]) -> bool {
        let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
        let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Tcp(t))) = (p.net, p.transport)
        else {
            panic!()
        };
        t.calc_checksum_ipv4(ip.header().source(), ip.header().destination()).unwrap() == t.checksum()
    }

    fn mss_of(f: &[u8]) -> u16 {
        let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
        let Some(etherparse::TransportSlice::Tcp(t)) = p.transport else { panic!() };
        t.options_iterator()
            .find_map(|o| match o {
                Ok(etherparse::TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn clamps_syns_above_the_inner_mtu_and_keeps_the_checksum_right() {
        for nop in [false, true] {
            let mut f = syn(1460, nop);
            assert_eq!(clamp(&mut f, 1450, false), Some(1460));
            assert_eq!(mss_of(&f), 1410);
            assert!(tcp_ok(&f), "nop first: {nop}");
            // A second pass changes nothing.
            assert_eq!(clamp(&mut f, 1450, false), None);
        }
    }

    #[test]
    fn leaves_small_mss_and_other_packets_alone() {
        let mut f = syn(1300, false);
        let before = f.clone();
        assert_eq!(clamp(&mut f, 1450, false), None);
        assert_eq!(f, before);
        // Not a SYN: the same frame with SYN cleared.
        let mut g = syn(1460, false);
        g[14 + 20 + 13] &= !0x02;
        assert_eq!(clamp(&mut g, 1450, false), None);
        // Partial checksum: the option changes, the field does not.
        let mut p = syn(1460, false);
        let csum = p[14 + 20 + 16..14 + 20 + 18].to_vec();
        assert_eq!(clamp(&mut p, 1450, true), Some(1460));
        assert_eq!(mss_of(&p), 1410);
        assert_eq!(p[14 + 20 + 16..14 + 20 + 18], csum[..]);
        // Garbage never panics.
        let s = syn(1460, true);
        for n in 0..s.len() {
            let mut t = s[..n].to_vec();
            let _ = clamp(&mut t, 1450, false);
        }
        assert_eq!(clamp(&mut syn(1460, false), 30, false), None);
    }
}
