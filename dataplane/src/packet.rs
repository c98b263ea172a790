//! Packet buffers: the bytes of one frame with headroom in front, and its
//! metadata kept apart from the bytes (the shape of DPDK's `rte_mbuf`, OVS's
//! `dp_packet` and VPP's `vlib_buffer_t`).
//!
//! A [`PacketBuf`] owns one fixed-size allocation, made once when the worker
//! starts. A port reads `[virtio-net header | frame]` so that the frame
//! starts at [`HEADROOM`]; the header is parsed into [`Offload`] and never
//! read from the bytes again. A stage may then rewrite the frame in place,
//! prepend headers into the headroom ([`PacketBuf::push_front`], for
//! encapsulation) or strip them ([`PacketBuf::pull_front`], decapsulation)
//! without copying the payload. When the frame leaves through a port that
//! speaks virtio-net headers (a TAP, an AF_PACKET socket with
//! `PACKET_VNET_HDR`), [`PacketBuf::vnet_bytes`] writes the header from the
//! metadata into the 10 bytes just in front of the frame.
//!
//! The metadata also records where the frame came from (ingress port and
//! network), so a stage never has to be told separately.

use crate::port::PortId;
use crate::stats::{DropReason, NetId};
use crate::wire::vnet::{self, VnetHdr, VNET_HDR_LEN};

/// Bytes kept free in front of every received frame, so that encapsulation
/// can prepend outer headers in place (VXLAN over IPv4 needs 50, and a
/// virtio-net header 10 more).
pub const HEADROOM: usize = 128;
/// Largest frame a port hands over: a 64 KiB GSO super-frame plus an
/// Ethernet header with one VLAN tag.
pub const MAX_FRAME: usize = 65535 + 18;
/// Size of one buffer. One spare byte past [`MAX_FRAME`] lets a read of an
/// over-long frame show up as longer than the limit instead of silently
/// truncated.
pub const BUF_SIZE: usize = HEADROOM + MAX_FRAME + 1;

/// Offload metadata of a frame: the virtio-net header's fields, parsed.
///
/// `csum_start` is relative to the start of the frame (the Ethernet header),
/// as in the header itself; [`PacketBuf::push_front`] and
/// [`PacketBuf::pull_front`] keep it pointing at the same byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, including the ECN bit.
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl Offload {
    /// No offload: a complete frame whose checksums are all filled in.
    pub const NONE: Offload = Offload { flags: 0, gso_type: 0, hdr_len: 0, gso_size: 0, csum_start: 0, csum_offset: 0 };

    /// Parse a virtio-net header (`hdr` holds at least 10 bytes).
    #[inline]
    pub fn from_vnet(hdr: &[u8]) -> Offload {
        let h = VnetHdr::new_unchecked(hdr);
        Offload {
            flags: h.flags(),
            gso_type: h.gso_type(),
            hdr_len: h.hdr_len(),
            gso_size: h.gso_size(),
            csum_start: h.csum_start(),
            csum_offset: h.csum_offset(),
        }
    }

    /// Write the header into the first 10 bytes of `out`.
    #[inline]
    pub fn to_vnet(&self, out: &mut [u8]) {
        let mut h = VnetHdr::new_unchecked(out);
        h.set_flags(self.flags);
        h.set_gso_type(self.gso_type);
        h.set_hdr_len(self.hdr_len);
        h.set_gso_size(self.gso_size);
        h.set_csum_start(self.csum_start);
        h.set_csum_offset(self.csum_offset);
    }

    /// A GSO super-frame the egress port (or the kernel behind it) must
    /// segment.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_type & !vnet::GSO_ECN != vnet::GSO_NONE
    }

    /// The checksum at `csum_start + csum_offset` is partial: it holds the
    /// pseudo-header sum and whoever transmits the frame completes it.
    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags & vnet::F_NEEDS_CSUM != 0
    }
}

/// Where a frame came from. Set by the ingress stage, read by later stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The port the frame was read from.
    pub port: PortId,
    /// The network (bridge) the frame belongs to, once known.
    pub net: NetId,
    pub offload: Offload,
    /// For what a tunnel read: the outer source address (the remote VTEP)
    /// and, for VXLAN, UDP port.
    pub peer: std::net::Ipv4Addr,
    pub peer_port: u16,
}

impl Default for Meta {
    fn default() -> Self {
        Meta { port: 0, net: 0, offload: Offload::NONE, peer: std::net::Ipv4Addr::UNSPECIFIED, peer_port: 0 }
    }
}

/// One frame with its headroom and metadata.
pub struct PacketBuf {
    data: Box<[u8]>,
    /// Offset of the first byte of the frame.
    start: usize,
    /// Length of the frame.
    len: usize,
    pub meta: Meta,
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("start", &self.start)
            .field("len", &self.len)
            .field("meta", &self.meta)
            .finish()
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketBuf {
    /// A buffer of [`BUF_SIZE`] bytes with an empty frame at [`HEADROOM`].
    /// This is the only allocation a buffer ever makes.
    pub fn new() -> PacketBuf {
        PacketBuf { data: vec![0u8; BUF_SIZE].into_boxed_slice(), start: HEADROOM, len: 0, meta: Meta::default() }
    }

    /// Where a port reads into: `[virtio-net header | frame]` when the port
    /// speaks virtio-net headers, `[frame]` otherwise. Either way the frame
    /// lands at [`HEADROOM`].
    #[inline]
    pub fn rx_area(&mut self, vnet_hdr: bool) -> &mut [u8] {
        let at = if vnet_hdr { HEADROOM - VNET_HDR_LEN } else { HEADROOM };
        &mut self.data[at..]
    }

    /// Record that a port read `n` bytes into [`Self::rx_area`]: parse and
    /// check the virtio-net header against the frame, and check the frame's
    /// length. On error the buffer holds no frame.
    #[inline]
    pub fn set_received(&mut self, n: usize, vnet_hdr: bool, port: PortId) -> Result<(), DropReason> {
        self.start = HEADROOM;
        self.len = 0;
        self.meta = Meta { port, net: 0, offload: Offload::NONE, peer: std::net::Ipv4Addr::UNSPECIFIED, peer_port: 0 };
        let frame_len = if vnet_hdr {
            if n < VNET_HDR_LEN {
                return Err(DropReason::Runt);
            }
            n - VNET_HDR_LEN
        } else {
            n
        };
        if frame_len < crate::wire::ethernet::HEADER_LEN {
            return Err(DropReason::Runt);
        }
        if frame_len > MAX_FRAME {
            return Err(DropReason::Oversize);
        }
        if vnet_hdr {
            let hdr = &self.data[HEADROOM - VNET_HDR_LEN..HEADROOM];
            if VnetHdr::new_unchecked(hdr).validate(frame_len).is_err() {
                return Err(DropReason::BadVnetHdr);
            }
            self.meta.offload = Offload::from_vnet(hdr);
        }
        self.len = frame_len;
        Ok(())
    }

    /// Record that a tunnel read `n` bytes of datagram(s) from `peer` into
    /// `rx_area(false)`: no virtio-net header, no length check (the tunnel
    /// stage checks what it decapsulates).
    #[inline]
    pub fn set_datagram(&mut self, n: usize, port: PortId, peer: std::net::Ipv4Addr) {
        self.start = HEADROOM;
        self.len = n.min(self.data.len() - HEADROOM);
        self.meta = Meta { port, net: 0, offload: Offload::NONE, peer, peer_port: 0 };
    }

    /// The frame.
    #[inline]
    pub fn frame(&self) -> &[u8] {
        &self.data[self.start..self.start + self.len]
    }

    #[inline]
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.start + self.len]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes free in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Bytes free after the frame.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.data.len() - self.start - self.len
    }

    /// Grow the frame by `n` bytes at the front (into the headroom) and
    /// return the new first `n` bytes, or `None` if the headroom is short.
    #[inline]
    pub fn push_front(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start {
            return None;
        }
        self.start -= n;
        self.len += n;
        if self.meta.offload.needs_csum() {
            self.meta.offload.csum_start = self.meta.offload.csum_start.wrapping_add(n as u16);
        }
        if self.meta.offload.is_gso() {
            self.meta.offload.hdr_len = self.meta.offload.hdr_len.wrapping_add(n as u16);
        }
        Some(&mut self.data[self.start..self.start + n])
    }

    /// Strip `n` bytes from the front of the frame. False (and nothing
    /// changes) if the frame is shorter than `n`.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.start += n;
        self.len -= n;
        if self.meta.offload.needs_csum() {
            self.meta.offload.csum_start = self.meta.offload.csum_start.saturating_sub(n as u16);
        }
        if self.meta.offload.is_gso() {
            self.meta.offload.hdr_len = self.meta.offload.hdr_len.saturating_sub(n as u16);
        }
        true
    }

    /// Where the frame starts in the buffer.
    #[inline]
    pub fn offset(&self) -> usize {
        self.start
    }

    /// Make the frame the `len` bytes at `offset` in the buffer (as
    /// [`Self::offset`] counts). False, and nothing changes, if that is
    /// outside the buffer or leaves less headroom than a virtio-net header
    /// needs. Used to work through several datagrams that a tunnel read
    /// put back to back, and to narrow a datagram to its inner frame.
    #[inline]
    pub fn set_frame(&mut self, offset: usize, len: usize) -> bool {
        if offset < VNET_HDR_LEN || offset.checked_add(len).is_none_or(|end| end > self.data.len()) {
            return false;
        }
        self.start = offset;
        self.len = len;
        true
    }

    /// Set the frame's length (within the buffer). False if it does not fit.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        if self.start + len > self.data.len() {
            return false;
        }
        self.len = len;
        true
    }

    /// Make the frame a copy of `bytes` at [`HEADROOM`], with no offload.
    /// False if it does not fit.
    pub fn fill(&mut self, bytes: &[u8]) -> bool {
        if HEADROOM + bytes.len() > self.data.len() {
            return false;
        }
        self.start = HEADROOM;
        self.len = bytes.len();
        self.data[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
        self.meta.offload = Offload::NONE;
        true
    }

    /// The whole frame area from the current start to the end of the
    /// buffer, for a stage that builds a longer frame in place (a reply
    /// longer than the request). Follow with [`Self::set_len`].
    #[inline]
    pub fn frame_capacity_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..]
    }

    /// The length of the frames this one becomes on the wire after
    /// segmentation (a GSO super-frame by its segment size), without the
    /// Ethernet header (and one VLAN tag), as an interface's MTU counts.
    #[inline]
    pub fn wire_len(&self) -> usize {
        let f = self.frame();
        let o = &self.meta.offload;
        let l2 = match f.get(12..14) {
            Some([0x81, 0x00]) | Some([0x88, 0xa8]) => crate::wire::ethernet::HEADER_LEN + 4,
            _ => crate::wire::ethernet::HEADER_LEN,
        };
        if !o.is_gso() {
            return f.len().saturating_sub(l2);
        }
        // A GSO frame always asks for the checksum; csum_start is the L4
        // header. TCP: its data offset; UDP: 8 bytes.
        let l4 = usize::from(o.csum_start);
        let l4_len = match o.gso_type & !vnet::GSO_ECN {
            vnet::GSO_TCPV4 | vnet::GSO_TCPV6 => f.get(l4 + 12).map_or(20, |b| usize::from(b >> 4) * 4),
            _ => 8,
        };
        (l4 + l4_len + usize::from(o.gso_size)).saturating_sub(l2).min(f.len().saturating_sub(l2))
    }

    /// `[virtio-net header | frame]` for a port that speaks virtio-net
    /// headers: the header is written from the metadata into the 10 bytes in
    /// front of the frame, so nothing is copied.
    #[inline]
    pub fn vnet_bytes(&mut self) -> &[u8] {
        self.write_vnet_hdr();
        self.vnet_slice()
    }

    /// Write the virtio-net header from the metadata in front of the frame.
    #[inline]
    pub fn write_vnet_hdr(&mut self) {
        let at = self.start - VNET_HDR_LEN;
        self.meta.offload.to_vnet(&mut self.data[at..self.start]);
    }

    /// `[virtio-net header | frame]` as last written by
    /// [`Self::write_vnet_hdr`].
    #[inline]
    pub fn vnet_slice(&self) -> &[u8] {
        &self.data[self.start - VNET_HDR_LEN..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Header of a TCPv4 TSO super-frame read from a TAP while iperf3 ran:
    // NEEDS_CSUM, GSO_TCPV4, hdr_len 66, gso_size 1448, csum at 34+16.
    const TSO4: [u8; 10] = [0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00];

    fn received(hdr: [u8; 10], frame_len: usize) -> (PacketBuf, Result<(), DropReason>) {
        let mut b = PacketBuf::new();
        let area = b.rx_area(true);
        area[..10].copy_from_slice(&hdr);
        for (i, x) in area[10..10 + frame_len].iter_mut().enumerate() {
            *x = i as u8;
        }
        let r = b.set_received(10 + frame_len, true, 7);
        (b, r)
    }

    #[test]
    fn receive_parses_header_apart_from_bytes() {
        let (b, r) = received(TSO4, 65_000);
        assert_eq!(r, Ok(()));
        assert_eq!(b.len(), 65_000);
        assert_eq!(b.frame()[..3], [0, 1, 2]);
        assert_eq!(b.meta.port, 7);
        let o = b.meta.offload;
        assert!(o.is_gso() && o.needs_csum());
        assert_eq!((o.hdr_len, o.gso_size, o.csum_start, o.csum_offset), (66, 1448, 34, 16));
        assert_eq!(b.headroom(), HEADROOM);
    }

    #[test]
    fn receive_rejects_bad_framing() {
        assert_eq!(received([0; 10], 13).1, Err(DropReason::Runt));
        assert_eq!(received([0, 2, 0, 0, 0, 0, 0, 0, 0, 0], 60).1, Err(DropReason::BadVnetHdr));
        let mut b = PacketBuf::new();
        assert_eq!(b.set_received(9, true, 0), Err(DropReason::Runt));
        assert_eq!(b.set_received(VNET_HDR_LEN + MAX_FRAME + 1, true, 0), Err(DropReason::Oversize));
        assert!(b.is_empty());
        // A port without virtio-net headers: the frame is all there is.
        let mut b = PacketBuf::new();
        b.rx_area(false)[..60].fill(0xee);
        assert_eq!(b.set_received(60, false, 3), Ok(()));
        assert_eq!(b.meta.offload, Offload::NONE);
        assert_eq!(b.frame(), &[0xee; 60][..]);
    }

    #[test]
    fn vnet_header_round_trips_in_front_of_the_frame() {
        let (mut b, _) = received(TSO4, 100);
        let bytes = b.vnet_bytes();
        assert_eq!(bytes[..10], TSO4);
        assert_eq!(bytes.len(), 110);
        assert_eq!(bytes[10..13], [0, 1, 2]);
    }

    #[test]
    fn push_and_pull_keep_offsets_pointing_at_the_same_bytes() {
        let (mut b, _) = received(TSO4, 1000);
        let head = b.push_front(50).unwrap();
        head.fill(0xaa);
        assert_eq!(b.len(), 1050);
        assert_eq!(b.headroom(), HEADROOM - 50);
        assert_eq!(b.meta.offload.csum_start, 84);
        assert_eq!(b.meta.offload.hdr_len, 116);
        assert_eq!(b.frame()[50..53], [0, 1, 2]);
        // The header goes in front of the new start.
        assert_eq!(b.vnet_bytes()[10..12], [0xaa, 0xaa]);
        assert!(b.pull_front(50));
        assert_eq!(b.meta.offload.csum_start, 34);
        assert_eq!(b.frame()[..3], [0, 1, 2]);
        assert!(b.push_front(HEADROOM + 1).is_none());
        assert!(!b.pull_front(1001));
        assert_eq!(b.len(), 1000);
    }

    #[test]
    fn fill_and_set_len_stay_inside_the_buffer() {
        let mut b = PacketBuf::new();
        assert!(b.fill(&[1, 2, 3]));
        assert_eq!(b.frame(), &[1, 2, 3]);
        assert!(!b.fill(&vec![0u8; BUF_SIZE]));
        assert!(b.set_len(MAX_FRAME));
        assert!(!b.set_len(BUF_SIZE));
        assert_eq!(b.tailroom(), 1);
    }
}
