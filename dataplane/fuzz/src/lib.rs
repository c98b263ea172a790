//! What tapnet's fuzz targets share: how a fuzz input is cut into records,
//! the topology the pipeline target runs (the same addresses as the seed
//! captures, `seeds/capture.sh`), and checks on the packets the dataplane
//! produces.
//!
//! The targets themselves are in `fuzz_targets/`; see README.md.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::net::Ipv4Addr;

use dataplane::wire::{checksum, EthernetFrame, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

pub mod topology;

/// Keep freed memory in the process instead of returning it to the kernel.
/// A target that builds a `Router` per input (four 64 KiB frame buffers
/// each) otherwise spends most of its time in page faults. Call once.
pub fn keep_heap() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: mallopt only changes glibc's allocator tunables; it is
        // called once, before this thread allocates frame buffers, and no
        // other thread allocates (libFuzzer runs inputs on one thread).
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
    });
}

/// A fuzz input read as records `[tag: u8][len: u16 big-endian][len bytes]`.
/// A record whose bytes run past the end takes what is left; bytes too few
/// for a header end the input. Seeds are written in this format by
/// `seeds/make_corpus.py`.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    pub fn new(data: &'a [u8]) -> Records<'a> {
        Records { rest: data }
    }
}

impl<'a> Iterator for Records<'a> {
    /// `(tag, bytes)`.
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let [tag, hi, lo, rest @ ..] = self.rest else { return None };
        let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
        let (bytes, rest) = rest.split_at(n);
        self.rest = rest;
        Some((*tag, bytes))
    }
}

/// A cursor over a record's leading fixed-size arguments; reads past the
/// end give zeros, so every input means something.
#[derive(Debug, Clone)]
pub struct Args<'a> {
    rest: &'a [u8],
}

impl<'a> Args<'a> {
    pub fn new(data: &'a [u8]) -> Args<'a> {
        Args { rest: data }
    }
    pub fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn ipv4(&mut self) -> Ipv4Addr {
        Ipv4Addr::new(self.u8(), self.u8(), self.u8(), self.u8())
    }
    /// Whatever is left.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }
}

/// What `ip_packet`'s checksums say: the IPv4 header checksum, and the
/// TCP/UDP/ICMP checksum over the datagram (None when there is none to
/// check: another protocol, a fragment, a truncated packet, UDP without a
/// checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sums {
    pub header: bool,
    pub l4: Option<bool>,
}

/// The checksums of an IPv4 packet (bytes from the IPv4 header on), or
/// `None` if it does not pass `new_checked`.
pub fn sums(ip_packet: &[u8]) -> Option<Sums> {
    let ip = Ipv4Packet::new_checked(ip_packet).ok()?;
    let header = ip.verify_checksum();
    if ip.is_fragment() {
        return Some(Sums { header, l4: None });
    }
    let (src, dst, payload) = (ip.src_addr(), ip.dst_addr(), ip.payload());
    let l4 = match ip.protocol() {
        IpProtocol::Tcp => TcpPacket::new_checked(payload).ok().map(|t| t.verify_checksum_ipv4(src, dst)),
        IpProtocol::Udp => match UdpPacket::new_checked(payload) {
            Ok(u) if u.checksum() != 0 => Some(u.verify_checksum_ipv4(src, dst)),
            _ => None,
        },
        IpProtocol::Icmp if payload.len() >= 4 => Some(checksum::data(payload) == 0xffff),
        _ => None,
    };
    Some(Sums { header, l4 })
}

/// The IPv4 packet of an Ethernet frame, if it carries one.
pub fn ipv4_of(frame: &[u8]) -> Option<&[u8]> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    (eth.ethertype() == dataplane::wire::EtherType::Ipv4).then(|| &frame[dataplane::wire::ethernet::HEADER_LEN..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_and_clamp() {
        let data = [1, 0, 2, 0xaa, 0xbb, 2, 0, 9, 0xcc, 3];
        let v: Vec<_> = Records::new(&data).collect();
        assert_eq!(v, [(1, &[0xaa, 0xbb][..]), (2, &[0xcc, 3][..])]);
        assert_eq!(Records::new(&[1, 0]).count(), 0);
    }

    #[test]
    fn args_pad_with_zeros() {
        let mut a = Args::new(&[10, 88, 0]);
        assert_eq!(a.ipv4(), Ipv4Addr::new(10, 88, 0, 0));
        assert_eq!(a.u16(), 0);
    }
}
