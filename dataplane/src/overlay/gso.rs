//! Software GSO: a TCP/IPv4 super-frame cut into wire-sized segments, and
//! partial checksums completed, for egress ports that cannot carry offload
//! metadata (a VXLAN or GRE tunnel socket).
//!
//! A container's TAP hands the dataplane 64 KiB super-frames with a
//! virtio-net header ([`Offload`]): `gso_type` TCPV4, `gso_size` payload
//! bytes per segment, and `NEEDS_CSUM` with `csum_start` at the TCP header
//! and `csum_offset` 16, the TCP checksum field then holding the
//! un-complemented pseudo-header sum of the whole super-frame. This module
//! does in userspace what Linux's `tcp_gso_segment` and `skb_checksum_help`
//! do for a device without TSO or checksum offload:
//!
//! - [`complete_csum`] fills in a partial checksum in place (any L4
//!   protocol: it only sums from `csum_start` to the end of the frame);
//! - [`segment_tcp4`] writes one header per segment (Ethernet, IPv4 and TCP,
//!   options copied) into a caller-owned [`Segments`] and hands back each
//!   segment's payload as a range of the super-frame, so the payload is
//!   never copied: a segment goes out as the iovec `[header, payload]`;
//! - [`resolve`] picks between the two from the frame's [`Offload`].
//!
//! Per segment, as RFC 9293 §3.7 (segmentation to the MSS) and Linux's
//! `tcp_gso_segment`/`inet_gso_segment` define it: every payload is
//! `gso_size` bytes but the last; IPv4 Total Length and header checksum are
//! rewritten and the Identification is the super-frame's plus the segment's
//! index (RFC 6864 §4.1 lets an atomic datagram's id be anything; Linux
//! increments it); the sequence number advances by the payload offset; FIN
//! and PSH stay only on the last segment and CWR only on the first (RFC 3168
//! §6.1.2: one CWR per window reduction); every other flag, the window, the
//! urgent pointer and the options are copied; the TCP checksum is computed
//! in full over the pseudo-header, the header and that segment's payload.
//!
//! Each [`Segments`] header slot has [`SEGMENT_HEADROOM`] bytes free in front
//! of it, so encapsulation prepends the outer headers in place
//! ([`Segments::push_front`]) as it does for a whole frame in a
//! [`crate::packet::PacketBuf`].
//!
//! Not handled: TCPv6, UDP and UDP_L4 GSO (refused with an error), 802.1Q
//! tags in front of the IPv4 header (refused as not IPv4), and BIG TCP
//! super-frames over 64 KiB (their IPv4 Total Length is 0: refused).
//!
//! About 430 lines of code; the rest are tests on captured super-frames.

use core::ops::Range;

use crate::packet::Offload;
use crate::wire::{
    checksum, ethernet, ipv4, tcp, vnet, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, TcpPacket, WireError,
};

/// Smallest `gso_size` accepted. Linux lets a connection's MSS fall to 48
/// bytes (`TCP_MIN_SND_MSS`); 256 bounds the scratch at 256 segments and is
/// below the MSS of any path whose MTU is at least IPv4's 576 (RFC 791).
pub const MIN_GSO_SIZE: u16 = 256;
/// Longest header of one segment: Ethernet, IPv4 and TCP, both with the
/// most options their header lengths allow.
pub const MAX_HEADER_LEN: usize = ethernet::HEADER_LEN + ipv4::MAX_HEADER_LEN + tcp::MAX_HEADER_LEN;
/// Most segments one super-frame can become: the most TCP payload an IPv4
/// datagram holds (65535 − 20 − 20) cut at [`MIN_GSO_SIZE`].
pub const MAX_SEGMENTS: usize =
    (u16::MAX as usize - ipv4::HEADER_LEN - tcp::HEADER_LEN).div_ceil(MIN_GSO_SIZE as usize);
/// Bytes free in front of every segment header, for outer headers (VXLAN
/// over IPv4 needs 50, over IPv6 70); the same as a packet buffer's.
pub const SEGMENT_HEADROOM: usize = crate::packet::HEADROOM;

const SLOT_LEN: usize = SEGMENT_HEADROOM + MAX_HEADER_LEN;
/// Where the TCP checksum field sits in the TCP header (RFC 9293 §3.1).
const TCP_CSUM_OFFSET: usize = 16;

/// Why a frame's offload could not be resolved. The frame is then dropped:
/// no stage after this one could send it correctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// The checksum field named by the offload lies outside the frame.
    #[error("checksum field at {start} + {offset} lies outside the {len}-byte frame")]
    CsumOutOfBounds { start: usize, offset: usize, len: usize },
    /// Only TCPv4 super-frames are segmented.
    #[error("GSO type {0:#04x} is not TCPv4")]
    UnsupportedGsoType(u8),
    /// A TCPv4 super-frame always carries a partial checksum
    /// (`NEEDS_CSUM`); without one its TCP checksum field means nothing.
    #[error("super-frame without a partial checksum")]
    NoPartialCsum,
    /// `gso_size` below [`MIN_GSO_SIZE`] (0 included).
    #[error("segment size {0} is below the minimum of 256")]
    GsoSizeTooSmall(u16),
    /// The frame ends inside one of its headers.
    #[error("frame too short for its headers")]
    Truncated,
    /// The EtherType is not IPv4.
    #[error("not an IPv4 frame")]
    NotIpv4,
    /// Version or IHL of the IPv4 header is wrong.
    #[error("malformed IPv4 header")]
    BadIpv4,
    /// The super-frame is an IPv4 fragment.
    #[error("IPv4 fragment")]
    Fragment,
    /// The IPv4 payload is not TCP.
    #[error("not TCP")]
    NotTcp,
    /// TCP Data Offset below 5.
    #[error("malformed TCP header")]
    BadTcp,
    /// IPv4 Total Length does not end where the frame ends.
    #[error("IPv4 total length {ip} does not match the frame's {frame} bytes after Ethernet")]
    LengthMismatch { ip: usize, frame: usize },
    /// The partial checksum is not the TCP checksum field.
    #[error("partial checksum at {start} + {offset} is not the TCP checksum at {tcp} + 16")]
    CsumNotTcp { start: usize, offset: usize, tcp: usize },
    /// More segments than [`MAX_SEGMENTS`] (only a frame longer than an
    /// IPv4 datagram could need them).
    #[error("{0} segments exceed the limit of 256")]
    TooManySegments(usize),
}

/// What [`resolve`] made of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Send the frame itself: it needed no segmentation, and its partial
    /// checksum, if it had one, is now complete.
    Whole,
    /// Send these many segments from the [`Segments`] instead of the frame.
    Segmented(usize),
}

/// One segment: its header (in the [`Segments`] scratch, with whatever was
/// pushed in front of it) and its payload, a range of the super-frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub header: &'a [u8],
    pub payload: Range<usize>,
}

impl Segment<'_> {
    /// Bytes on the wire: header and payload.
    #[inline]
    pub fn len(&self) -> usize {
        self.header.len() + self.payload.len()
    }
    /// Never true: a segment has at least its headers.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Scratch for the headers of one super-frame's segments. Allocated once
/// (about 66 KiB) by whoever segments, and reused for every super-frame.
pub struct Segments {
    /// [`MAX_SEGMENTS`] slots of [`SLOT_LEN`] bytes; header `i` starts at
    /// `i * SLOT_LEN + SEGMENT_HEADROOM - front[i]`.
    slots: Box<[u8]>,
    /// Bytes pushed in front of each header (at most `SEGMENT_HEADROOM`).
    front: [u8; MAX_SEGMENTS],
    count: usize,
    /// Inner header length, the same for every segment.
    hdr_len: usize,
    /// The super-frame's payload.
    payload: Range<usize>,
    gso_size: usize,
}

impl std::fmt::Debug for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments")
            .field("count", &self.count)
            .field("hdr_len", &self.hdr_len)
            .field("payload", &self.payload)
            .field("gso_size", &self.gso_size)
            .finish()
    }
}

impl Default for Segments {
    fn default() -> Self {
        Self::new()
    }
}

// The headroom count per segment must fit its `u8`.
const _: () = assert!(SEGMENT_HEADROOM <= u8::MAX as usize);

impl Segments {
    /// Empty scratch. This is the only allocation it ever makes.
    pub fn new() -> Segments {
        Segments {
            slots: vec![0u8; MAX_SEGMENTS * SLOT_LEN].into_boxed_slice(),
            front: [0; MAX_SEGMENTS],
            count: 0,
            hdr_len: 0,
            payload: 0..0,
            gso_size: 0,
        }
    }

    /// Number of segments held.
    #[inline]
    pub fn len(&self) -> usize {
        self.count
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Forget the segments held.
    #[inline]
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Length of each segment's own header (Ethernet, IPv4, TCP), without
    /// anything pushed in front.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.hdr_len
    }

    /// Segment `i`, or `None` past the last.
    #[inline]
    pub fn get(&self, i: usize) -> Option<Segment<'_>> {
        (i < self.count).then(|| self.segment(i))
    }

    /// Every segment, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Segment<'_>> + '_ {
        (0..self.count).map(move |i| self.segment(i))
    }

    /// Segment `i < count`.
    #[inline]
    fn segment(&self, i: usize) -> Segment<'_> {
        let at = i * SLOT_LEN + SEGMENT_HEADROOM;
        Segment { header: &self.slots[at - usize::from(self.front[i])..at + self.hdr_len], payload: self.range(i) }
    }

    /// Grow segment `i`'s header by `n` bytes at the front and return them
    /// (for outer headers), or `None` if `i` is past the last segment or
    /// its headroom is short.
    #[inline]
    pub fn push_front(&mut self, i: usize, n: usize) -> Option<&mut [u8]> {
        if i >= self.count || usize::from(self.front[i]) + n > SEGMENT_HEADROOM {
            return None;
        }
        self.front[i] += n as u8;
        let at = i * SLOT_LEN + SEGMENT_HEADROOM - usize::from(self.front[i]);
        Some(&mut self.slots[at..at + n])
    }

    /// Bytes still free in front of segment `i`'s header (0 past the last).
    #[inline]
    pub fn headroom(&self, i: usize) -> usize {
        if i >= self.count {
            return 0;
        }
        SEGMENT_HEADROOM - usize::from(self.front[i])
    }

    /// Payload of segment `i` as a range of the super-frame.
    #[inline]
    fn range(&self, i: usize) -> Range<usize> {
        let start = (self.payload.start + i * self.gso_size).min(self.payload.end);
        start..(start + self.gso_size).min(self.payload.end)
    }
}

/// The checksum field's value from the one's-complement sum of what it
/// covers (with the field zero, or holding the pseudo-header sum in place of
/// that part): the complement, with 0 sent as 0xffff as
/// Linux's `skb_checksum_help` does (`CSUM_MANGLED_0`). Both are zero in
/// one's complement and verify alike, but for UDP a 0 would mean "no
/// checksum" (RFC 768).
#[inline]
fn finish(sum: u16) -> u16 {
    match !sum {
        0 => 0xffff,
        c => c,
    }
}

/// Complete a partial checksum in place, as the kernel does before it hands
/// a `NEEDS_CSUM` frame to a device without checksum offload: sum the frame
/// from `csum_start` to its end with the checksum field as it is (it holds
/// the pseudo-header sum), complement, and store the result at
/// `csum_start + csum_offset`. Afterwards the frame's checksums are
/// complete. Any L4 protocol: nothing but the two offsets is read.
pub fn complete_csum(frame: &mut [u8], csum_start: usize, csum_offset: usize) -> Result<(), GsoError> {
    let len = frame.len();
    let err = GsoError::CsumOutOfBounds { start: csum_start, offset: csum_offset, len };
    let at = csum_start.checked_add(csum_offset).ok_or(err)?;
    if at.checked_add(2).is_none_or(|end| end > len) {
        return Err(err);
    }
    let c = finish(checksum::data(&frame[csum_start..]));
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Make a frame sendable through a port that carries no offload metadata:
/// a GSO super-frame is segmented into `out` ([`segment_tcp4`]), a frame
/// with only a partial checksum has it completed in place
/// ([`complete_csum`]), and anything else is left alone. Afterwards the
/// frame (or its segments) needs no offload: the caller sets its metadata
/// to [`Offload::NONE`].
pub fn resolve(frame: &mut [u8], offload: &Offload, out: &mut Segments) -> Result<Resolved, GsoError> {
    if offload.is_gso() {
        return segment_tcp4(frame, offload, out).map(Resolved::Segmented);
    }
    out.clear();
    if offload.needs_csum() {
        complete_csum(frame, usize::from(offload.csum_start), usize::from(offload.csum_offset))?;
    }
    Ok(Resolved::Whole)
}

/// Where the headers of a TCP/IPv4 super-frame are.
struct Layout {
    ip_hl: usize,
    tcp_off: usize,
    tcp_hl: usize,
}

fn layout(frame: &[u8]) -> Result<Layout, GsoError> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| GsoError::Truncated)?;
    if eth.ethertype() != EtherType::Ipv4 {
        return Err(GsoError::NotIpv4);
    }
    let l3 = eth.payload();
    let ip = Ipv4Packet::new_checked(l3).map_err(|e| match e {
        WireError::Truncated if l3.len() >= ipv4::HEADER_LEN && usize::from(l3[0] & 0x0f) * 4 <= l3.len() => {
            GsoError::LengthMismatch { ip: usize::from(Ipv4Packet::new_unchecked(l3).total_len()), frame: l3.len() }
        }
        WireError::Truncated => GsoError::Truncated,
        WireError::Malformed => GsoError::BadIpv4,
    })?;
    let total = usize::from(ip.total_len());
    if total != l3.len() {
        return Err(GsoError::LengthMismatch { ip: total, frame: l3.len() });
    }
    if ip.is_fragment() {
        return Err(GsoError::Fragment);
    }
    if ip.protocol() != IpProtocol::Tcp {
        return Err(GsoError::NotTcp);
    }
    let t = TcpPacket::new_checked(ip.payload()).map_err(|e| match e {
        WireError::Truncated => GsoError::Truncated,
        WireError::Malformed => GsoError::BadTcp,
    })?;
    let ip_hl = ip.header_len();
    Ok(Layout { ip_hl, tcp_off: ethernet::HEADER_LEN + ip_hl, tcp_hl: t.header_len() })
}

/// Cut a TCP/IPv4 super-frame (Ethernet first) into segments of
/// `offload.gso_size` payload bytes; returns how many, and `out` holds
/// them. The frame is only read: each segment is its header in `out` plus
/// a range of `frame`. A super-frame whose payload fits one segment becomes
/// one segment (with its checksum completed). Anything inconsistent is an
/// error and leaves `out` empty. No allocation, no panic on any input.
pub fn segment_tcp4(frame: &[u8], offload: &Offload, out: &mut Segments) -> Result<usize, GsoError> {
    out.count = 0;
    if offload.gso_type & !vnet::GSO_ECN != vnet::GSO_TCPV4 {
        return Err(GsoError::UnsupportedGsoType(offload.gso_type));
    }
    if !offload.needs_csum() {
        return Err(GsoError::NoPartialCsum);
    }
    if offload.gso_size < MIN_GSO_SIZE {
        return Err(GsoError::GsoSizeTooSmall(offload.gso_size));
    }
    let Layout { ip_hl, tcp_off, tcp_hl } = layout(frame)?;
    let (start, off) = (usize::from(offload.csum_start), usize::from(offload.csum_offset));
    if start != tcp_off || off != TCP_CSUM_OFFSET {
        return Err(GsoError::CsumNotTcp { start, offset: off, tcp: tcp_off });
    }
    let hdr_len = tcp_off + tcp_hl;
    let mss = usize::from(offload.gso_size);
    let count = (frame.len() - hdr_len).div_ceil(mss).max(1);
    if count > MAX_SEGMENTS {
        return Err(GsoError::TooManySegments(count));
    }

    let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..tcp_off]);
    let (src, dst, ident) = (ip.src_addr(), ip.dst_addr(), ip.ident());
    let th = TcpPacket::new_unchecked(&frame[tcp_off..hdr_len]);
    let (seq, flags) = (th.seq_number(), th.flags().0);

    out.hdr_len = hdr_len;
    out.payload = hdr_len..frame.len();
    out.gso_size = mss;
    out.front[..count].fill(0);
    out.count = count;
    for i in 0..count {
        let payload = out.range(i);
        let at = i * SLOT_LEN + SEGMENT_HEADROOM;
        let hdr = &mut out.slots[at..at + hdr_len];
        hdr.copy_from_slice(&frame[..hdr_len]);

        let (l2l3, l4) = hdr.split_at_mut(tcp_off);
        let mut ip = Ipv4Packet::new_unchecked(&mut l2l3[ethernet::HEADER_LEN..]);
        // At most the super-frame's own Total Length, so it fits.
        ip.set_total_len((ip_hl + tcp_hl + payload.len()) as u16);
        ip.set_ident(ident.wrapping_add(i as u16));
        ip.fill_checksum();

        let mut t = TcpPacket::new_unchecked(&mut *l4);
        // Sequence numbers are modulo 2^32 (RFC 9293 §3.4).
        t.set_seq_number(seq.wrapping_add((i * mss) as u32));
        let mut f = flags;
        if i + 1 < count {
            f &= !(tcp::Flags::FIN.0 | tcp::Flags::PSH.0);
        }
        if i > 0 {
            f &= !tcp::Flags::CWR.0;
        }
        t.set_flags(tcp::Flags(f));
        t.set_checksum(0);
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, (tcp_hl + payload.len()) as u16);
        // The header's length is a multiple of 4, so the payload's sum
        // combines with it (only the last piece may be odd).
        let sum = checksum::combine(&[pseudo, checksum::data(l4), checksum::data(&frame[payload])]);
        TcpPacket::new_unchecked(l4).set_checksum(finish(sum));
    }
    Ok(count)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    /// Header of a TCPv4 TSO super-frame read from a TAP while iperf3 ran:
    /// NEEDS_CSUM, GSO_TCPV4, hdr_len 66, gso_size 1448, csum at 34+16.
    pub(crate) const TSO4: [u8; 10] = [0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00];

    /// Ethernet, IPv4 and TCP headers (66 bytes) of an iperf3 super-frame
    /// from container 10.88.0.2 to 10.88.0.3, as the sending kernel writes
    /// them: ACK, NOP NOP timestamps; Total Length, header checksum and the
    /// partial TCP checksum are filled per frame by [`super_frame`].
    pub(crate) const HEADERS: [u8; 66] = [
        0x02, 0x42, 0x0a, 0x58, 0x00, 0x03, // dst MAC
        0x02, 0x42, 0x0a, 0x58, 0x00, 0x02, // src MAC
        0x08, 0x00, // IPv4
        0x45, 0x00, // version 4, IHL 5, DSCP 0, ECN 0
        0x00, 0x00, // total length (per frame)
        0x3c, 0x1f, // identification
        0x40, 0x00, // DF
        0x40, 0x06, // TTL 64, TCP
        0x00, 0x00, // header checksum (per frame)
        0x0a, 0x58, 0x00, 0x02, // 10.88.0.2
        0x0a, 0x58, 0x00, 0x03, // 10.88.0.3
        0xa5, 0xb8, 0x14, 0x51, // 42424 -> 5201
        0xff, 0xff, 0x8a, 0x10, // seq (wraps within a 64 KiB super-frame)
        0x5e, 0x0d, 0x4a, 0x10, // ack
        0x80, 0x10, // data offset 8, ACK
        0x01, 0xf5, // window
        0x00, 0x00, // checksum (per frame)
        0x00, 0x00, // urgent pointer
        0x01, 0x01, 0x08, 0x0a, // NOP NOP timestamps
        0x2b, 0x4f, 0x6c, 0x10, 0x9d, 0x21, 0x0e, 0x44, // TSval, TSecr
    ];

    /// splitmix64, seeded so a failure reproduces.
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// Fill IPv4 Total Length and header checksum and put the partial TCP
    /// checksum (the un-complemented pseudo-header sum over the TCP length)
    /// in place, as the sending kernel does for a TSO super-frame.
    pub(crate) fn seal_partial(f: &mut [u8]) {
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let total = f.len() - 14;
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..14 + ihl]);
        ip.set_total_len(total as u16);
        ip.fill_checksum();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, (total - ihl) as u16);
        f[14 + ihl + 16..14 + ihl + 18].copy_from_slice(&pseudo.to_be_bytes());
    }

    /// A super-frame of `payload` behind [`HEADERS`] with IPv4 options
    /// `ip_opts` inserted (a multiple of 4 bytes) and TCP flags `flags`,
    /// and its offload: the captured [`TSO4`] with `gso_size` and the
    /// offsets adjusted.
    pub(crate) fn super_frame(payload: &[u8], gso_size: u16, flags: u8, ip_opts: &[u8]) -> (Vec<u8>, Offload) {
        let mut f = Vec::with_capacity(66 + ip_opts.len() + payload.len());
        f.extend_from_slice(&HEADERS[..34]);
        f.extend_from_slice(ip_opts);
        f.extend_from_slice(&HEADERS[34..]);
        f.extend_from_slice(payload);
        f[14] = 0x40 | ((20 + ip_opts.len()) / 4) as u8;
        f[34 + ip_opts.len() + 13] = flags;
        seal_partial(&mut f);
        let mut o = Offload::from_vnet(&TSO4);
        o.gso_size = gso_size;
        o.csum_start += ip_opts.len() as u16;
        o.hdr_len += ip_opts.len() as u16;
        (f, o)
    }

    /// Segment bytes: the header followed by the payload.
    pub(crate) fn bytes_of(s: &Segment<'_>, frame: &[u8]) -> Vec<u8> {
        [s.header, &frame[s.payload.clone()]].concat()
    }

    /// Check every segment against the super-frame with etherparse: IPv4
    /// header checksum, Total Length and id, TCP checksum over the whole
    /// segment, sequence numbers, flags, copied options, payload sizes; and
    /// that the payloads put together are the super-frame's.
    pub(crate) fn check_segments(frame: &[u8], o: &Offload, segs: &Segments) {
        let sup = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(NetSlice::Ipv4(sip)) = &sup.net else { panic!("super-frame is not IPv4") };
        let Some(TransportSlice::Tcp(st)) = &sup.transport else { panic!("super-frame is not TCP") };
        let mss = usize::from(o.gso_size);
        let n = segs.len();
        assert_eq!(n, st.payload().len().div_ceil(mss).max(1));
        assert_eq!(segs.iter().len(), n);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let b = bytes_of(&s, frame);
            assert_eq!(b[..14], frame[..14]);
            let p = SlicedPacket::from_ethernet(&b).unwrap();
            let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("segment {i} is not IPv4") };
            let Some(TransportSlice::Tcp(t)) = &p.transport else { panic!("segment {i} is not TCP") };
            let (h, sh) = (ip.header(), sip.header());
            assert_eq!(usize::from(h.total_len()), b.len() - 14, "segment {i}");
            assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum(), "IPv4 checksum of segment {i}");
            assert_eq!(h.identification(), sh.identification().wrapping_add(i as u16));
            assert_eq!(h.options(), sh.options());
            assert_eq!(
                (h.ttl(), h.dcp(), h.ecn(), h.dont_fragment()),
                (sh.ttl(), sh.dcp(), sh.ecn(), sh.dont_fragment())
            );
            assert_eq!((h.source(), h.destination()), (sh.source(), sh.destination()));
            let want = t.calc_checksum_ipv4(h.source(), h.destination()).unwrap();
            assert!(
                t.checksum() == want || (want == 0 && t.checksum() == 0xffff),
                "TCP checksum of segment {i}: {:04x}, want {want:04x}",
                t.checksum()
            );
            assert_eq!(t.sequence_number(), st.sequence_number().wrapping_add((i * mss) as u32));
            assert_eq!((t.acknowledgment_number(), t.window_size()), (st.acknowledgment_number(), st.window_size()));
            assert_eq!(t.options(), st.options());
            let last = i + 1 == n;
            assert_eq!((t.fin(), t.psh()), (st.fin() && last, st.psh() && last), "FIN/PSH of segment {i}");
            assert_eq!(t.cwr(), st.cwr() && i == 0, "CWR of segment {i}");
            assert_eq!(
                (t.syn(), t.rst(), t.ack(), t.urg(), t.ece()),
                (st.syn(), st.rst(), st.ack(), st.urg(), st.ece())
            );
            if !last {
                assert_eq!(t.payload().len(), mss, "segment {i} is short");
            } else {
                assert!(t.payload().len() <= mss);
            }
            joined.extend_from_slice(t.payload());
        }
        assert_eq!(joined, st.payload(), "payloads put together");
    }

    #[test]
    fn complete_csum_matches_etherparse() {
        // A UDP datagram and a TCP segment as a stack with checksum offload
        // hands them over: the field holds the pseudo-header sum.
        let udp = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 88, 0, 2], [10, 88, 0, 3], 64)
            .udp(40_000, 53);
        let mut full = Vec::new();
        udp.write(&mut full, b"an odd-length query!!").unwrap();
        let mut partial = full.clone();
        let pseudo = checksum::pseudo_header_v4(
            [10, 88, 0, 2].into(),
            [10, 88, 0, 3].into(),
            IpProtocol::Udp,
            (partial.len() - 34) as u16,
        );
        partial[40..42].copy_from_slice(&pseudo.to_be_bytes());
        assert_ne!(partial, full);
        complete_csum(&mut partial, 34, 6).unwrap();
        assert_eq!(partial, full);

        let payload = Rng(1).bytes(1001);
        let (mut f, _) = super_frame(&payload, 1448, 0x18, &[]);
        complete_csum(&mut f, 34, 16).unwrap();
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Tcp(t)) = &p.transport else { panic!() };
        assert_eq!(t.checksum(), t.calc_checksum_ipv4([10, 88, 0, 2], [10, 88, 0, 3]).unwrap());
    }

    #[test]
    fn complete_csum_sends_zero_as_all_ones_and_checks_bounds() {
        // The bytes sum to 0xffff, so the complement is 0: stored as 0xffff.
        let mut b = [0xff, 0xff, 0x00, 0x00];
        complete_csum(&mut b, 0, 2).unwrap();
        assert_eq!(b, [0xff, 0xff, 0xff, 0xff]);
        // An odd csum_start sums from there, not from an even offset.
        let mut b = [0xaa, 0x12, 0x34, 0x00, 0x00];
        complete_csum(&mut b, 1, 2).unwrap();
        assert_eq!(u16::from_be_bytes([b[3], b[4]]), !0x1234);
        assert_eq!(b[0], 0xaa);

        let oob = |len, start, offset| GsoError::CsumOutOfBounds { start, offset, len };
        assert_eq!(complete_csum(&mut [0u8; 18], 0, 17), Err(oob(18, 0, 17)));
        assert_eq!(complete_csum(&mut [0u8; 18], 17, 0), Err(oob(18, 17, 0)));
        assert_eq!(complete_csum(&mut [0u8; 18], 19, 0), Err(oob(18, 19, 0)));
        assert_eq!(complete_csum(&mut [0u8; 18], usize::MAX, 1), Err(oob(18, usize::MAX, 1)));
        assert_eq!(complete_csum(&mut [0u8; 18], 1, usize::MAX - 1), Err(oob(18, 1, usize::MAX - 1)));
        assert_eq!(complete_csum(&mut [], 0, 0), Err(oob(0, 0, 0)));
        assert_eq!(complete_csum(&mut [0u8; 18], 0, 16), Ok(()));
    }

    #[test]
    fn segments_a_64k_tso_super_frame() {
        // 45 full segments, as iperf3's super-frames are.
        let payload = Rng(2).bytes(45 * 1448);
        let (f, o) = super_frame(&payload, 1448, 0x10, &[]);
        assert_eq!(f.len(), 65_226);
        assert_eq!(o, Offload::from_vnet(&TSO4));
        let mut segs = Segments::new();
        assert_eq!(segment_tcp4(&f, &o, &mut segs), Ok(45));
        assert_eq!(segs.header_len(), 66);
        let s0 = segs.get(0).unwrap();
        assert_eq!(s0.payload, 66..66 + 1448);
        assert_eq!(s0.len(), 1514);
        assert_eq!(segs.get(44).unwrap().payload, 66 + 44 * 1448..f.len());
        assert!(segs.get(45).is_none());
        check_segments(&f, &o, &segs);
        // The sequence number wraps within this frame.
        let last = Segments::get(&segs, 44).unwrap();
        assert!(TcpPacket::new_unchecked(&last.header[34..]).seq_number() < 0x1000_0000);
    }

    #[test]
    fn odd_payload_sizes() {
        let mut segs = Segments::new();
        for (len, mss, want) in [
            (0, 1448, 1),
            (1, 1448, 1),
            (1447, 1448, 1),
            (1448, 1448, 1),
            (1449, 1448, 2),
            (3 * 1448, 1448, 3),
            (3 * 1448 + 1, 1448, 4),
            (65_535 - 20 - 32, 1448, 46),
            (65_535 - 20 - 32, 256, 256),
            (1000, 257, 4),
            (4096, 65_535, 1),
        ] {
            let payload = Rng(len as u64).bytes(len);
            let (f, o) = super_frame(&payload, mss, 0x18, &[]);
            assert_eq!(segment_tcp4(&f, &o, &mut segs), Ok(want), "{len} bytes at {mss}");
            check_segments(&f, &o, &segs);
        }
    }

    #[test]
    fn fin_and_psh_only_on_the_last_segment_cwr_only_on_the_first() {
        let mut segs = Segments::new();
        let payload = Rng(3).bytes(5 * 1000 + 1);
        // FIN|PSH|ACK|CWR|ECE with the ECN bit in the GSO type.
        let (f, mut o) = super_frame(&payload, 1000, 0xd9, &[]);
        o.gso_type |= vnet::GSO_ECN;
        assert_eq!(segment_tcp4(&f, &o, &mut segs), Ok(6));
        check_segments(&f, &o, &segs);
        let flags: Vec<u8> = segs.iter().map(|s| s.header[34 + 13]).collect();
        assert_eq!(flags, [0xd0, 0x50, 0x50, 0x50, 0x50, 0x59]);
        // One segment keeps every flag.
        let (f, o) = super_frame(&payload[..1000], 1000, 0xd9, &[]);
        assert_eq!(segment_tcp4(&f, &o, &mut segs), Ok(1));
        assert_eq!(segs.get(0).unwrap().header[34 + 13], 0xd9);
        check_segments(&f, &o, &segs);
        // URG and the urgent pointer are copied, as Linux does.
        let (mut f, o) = super_frame(&payload, 1448, 0x30, &[]);
        f[34 + 18..34 + 20].copy_from_slice(&[0x00, 0x07]);
        seal_partial(&mut f);
        assert_eq!(segment_tcp4(&f, &o, &mut segs), Ok(4));
        check_segments(&f, &o, &segs);
        assert!(segs.iter().all(|s| s.header[34 + 18..34 + 20] == [0x00, 0x07]));
    }

    #[test]
    fn ipv4_and_tcp_options_are_copied() {
        let mut segs = Segments::new();
        // Router Alert (RFC 2113) and a NOP-padded record route of one slot.
        let opts = [0x94, 0x04, 0x00, 0x00, 0x01, 0x07, 0x07, 0x04, 0, 0, 0, 0];
        let payload = Rng(4).bytes(10_000);
        let (f, o) = super_frame(&payload, 1400, 0x18, &opts);
        assert_eq!(o.csum_start, 46);
        assert_eq!(segment_tcp4(&f, &o, &mut segs), Ok(8));
        assert_eq!(segs.header_len(), 78);
        check_segments(&f, &o, &segs);
        assert!(segs.iter().all(|s| s.header[34..46] == opts));

        // The longest headers: IHL 15 and Data Offset 15.
        let mut f = Vec::new();
        f.extend_from_slice(&HEADERS[..34]);
        f.extend_from_slice(&[0x01; 40]); // IPv4 NOPs
        f.extend_from_slice(&HEADERS[34..54]);
        f.extend_from_slice(&HEADERS[54..66]);
        f.extend_from_slice(&[0x01; 28]); // TCP NOPs
        f.extend_from_slice(&payload);
        f[14] = 0x4f;
        f[74 + 12] = 0xf0;
        seal_partial(&mut f);
        let o = Offload { csum_start: 74, hdr_len: 134, ..Offload::from_vnet(&TSO4) };
        assert_eq!(segment_tcp4(&f, &o, &mut segs), Ok(7));
        assert_eq!(segs.header_len(), MAX_HEADER_LEN);
        check_segments(&f, &o, &segs);
    }

    #[test]
    fn refuses_inconsistent_frames() {
        let mut segs = Segments::new();
        let payload = Rng(5).bytes(3000);
        let (good, o) = super_frame(&payload, 1448, 0x10, &[]);
        assert_eq!(segment_tcp4(&good, &o, &mut segs), Ok(3));
        let run = |f: &[u8], o: &Offload, segs: &mut Segments| {
            let r = segment_tcp4(f, o, segs);
            assert!(segs.is_empty(), "an error leaves no segments");
            r
        };
        let with = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut f = good.clone();
            edit(&mut f);
            f
        };
        let oo = |edit: &dyn Fn(&mut Offload)| {
            let mut x = o;
            edit(&mut x);
            x
        };

        assert_eq!(run(&good, &oo(&|o| o.gso_type = vnet::GSO_TCPV6), &mut segs), Err(GsoError::UnsupportedGsoType(4)));
        assert_eq!(
            run(&good, &oo(&|o| o.gso_type = vnet::GSO_UDP_L4), &mut segs),
            Err(GsoError::UnsupportedGsoType(5))
        );
        assert_eq!(run(&good, &Offload::NONE, &mut segs), Err(GsoError::UnsupportedGsoType(0)));
        assert_eq!(run(&good, &oo(&|o| o.flags = 0), &mut segs), Err(GsoError::NoPartialCsum));
        assert_eq!(run(&good, &oo(&|o| o.gso_size = 0), &mut segs), Err(GsoError::GsoSizeTooSmall(0)));
        assert_eq!(run(&good, &oo(&|o| o.gso_size = 255), &mut segs), Err(GsoError::GsoSizeTooSmall(255)));
        let csum = |start, offset| GsoError::CsumNotTcp { start, offset, tcp: 34 };
        assert_eq!(run(&good, &oo(&|o| o.csum_start = 14), &mut segs), Err(csum(14, 16)));
        assert_eq!(run(&good, &oo(&|o| o.csum_offset = 6), &mut segs), Err(csum(34, 6)));

        assert_eq!(run(&good[..13], &o, &mut segs), Err(GsoError::Truncated));
        assert_eq!(run(&good[..30], &o, &mut segs), Err(GsoError::Truncated));
        assert_eq!(run(&with(&|f| f[12] = 0x86), &o, &mut segs), Err(GsoError::NotIpv4));
        assert_eq!(run(&with(&|f| f[12..14].copy_from_slice(&[0x81, 0x00])), &o, &mut segs), Err(GsoError::NotIpv4));
        assert_eq!(run(&with(&|f| f[14] = 0x65), &o, &mut segs), Err(GsoError::BadIpv4));
        assert_eq!(run(&with(&|f| f[14] = 0x44), &o, &mut segs), Err(GsoError::BadIpv4));
        let len = good.len() - 14;
        let mismatch = |ip| Err(GsoError::LengthMismatch { ip, frame: len });
        assert_eq!(
            run(&with(&|f| f[16..18].copy_from_slice(&0u16.to_be_bytes())), &o, &mut segs),
            Err(GsoError::BadIpv4)
        );
        assert_eq!(run(&with(&|f| f[16..18].copy_from_slice(&100u16.to_be_bytes())), &o, &mut segs), mismatch(100));
        let long = (len + 1) as u16;
        assert_eq!(run(&with(&|f| f[16..18].copy_from_slice(&long.to_be_bytes())), &o, &mut segs), mismatch(len + 1));
        assert_eq!(
            run(&with(&|f| f.push(0)), &o, &mut segs),
            Err(GsoError::LengthMismatch { ip: len, frame: len + 1 })
        );
        assert_eq!(run(&with(&|f| f[20] = 0x20), &o, &mut segs), Err(GsoError::Fragment));
        assert_eq!(run(&with(&|f| f[21] = 0x01), &o, &mut segs), Err(GsoError::Fragment));
        assert_eq!(run(&with(&|f| f[23] = 17), &o, &mut segs), Err(GsoError::NotTcp));
        assert_eq!(run(&with(&|f| f[34 + 12] = 0x40), &o, &mut segs), Err(GsoError::BadTcp));
        // Data Offset 15 runs past a frame that has only 20 bytes of TCP.
        let mut short = good[..54].to_vec();
        seal_partial(&mut short);
        short[34 + 12] = 0xf0;
        assert_eq!(run(&short, &o, &mut segs), Err(GsoError::Truncated));
    }

    #[test]
    fn resolve_picks_segmentation_or_checksum() {
        let mut segs = Segments::new();
        let payload = Rng(6).bytes(4000);
        let (mut f, o) = super_frame(&payload, 1448, 0x18, &[]);
        assert_eq!(resolve(&mut f, &o, &mut segs), Ok(Resolved::Segmented(3)));
        check_segments(&f, &o, &segs);

        // A non-GSO frame with a partial checksum: completed in place.
        let (mut f, o) = super_frame(&payload[..1448], 1448, 0x18, &[]);
        let o = Offload { gso_type: vnet::GSO_NONE, gso_size: 0, hdr_len: 0, ..o };
        assert_eq!(resolve(&mut f, &o, &mut segs), Ok(Resolved::Whole));
        assert!(segs.is_empty());
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Tcp(t)) = &p.transport else { panic!() };
        assert_eq!(t.checksum(), t.calc_checksum_ipv4([10, 88, 0, 2], [10, 88, 0, 3]).unwrap());

        // No offload: untouched.
        let before = f.clone();
        assert_eq!(resolve(&mut f, &Offload::NONE, &mut segs), Ok(Resolved::Whole));
        assert_eq!(f, before);
        let bad = Offload { csum_start: 2000, ..o };
        assert!(matches!(resolve(&mut f, &bad, &mut segs), Err(GsoError::CsumOutOfBounds { .. })));
    }

    #[test]
    fn outer_headers_are_pushed_in_front_of_each_segment() {
        let mut segs = Segments::new();
        let payload = Rng(7).bytes(3000);
        let (f, o) = super_frame(&payload, 1448, 0x10, &[]);
        assert_eq!(segment_tcp4(&f, &o, &mut segs), Ok(3));
        let inner: Vec<Vec<u8>> = segs.iter().map(|s| s.header.to_vec()).collect();
        assert_eq!(segs.headroom(1), SEGMENT_HEADROOM);
        segs.push_front(1, 50).unwrap().fill(0xee);
        assert_eq!(segs.headroom(1), SEGMENT_HEADROOM - 50);
        let s1 = segs.get(1).unwrap();
        assert_eq!(s1.header.len(), 50 + 66);
        assert_eq!(s1.header[..50], [0xee; 50]);
        assert_eq!(s1.header[50..], inner[1][..]);
        // The neighbours are untouched, and the room runs out exactly.
        assert_eq!(segs.get(0).unwrap().header, &inner[0][..]);
        assert_eq!(segs.get(2).unwrap().header, &inner[2][..]);
        assert!(segs.push_front(1, SEGMENT_HEADROOM - 49).is_none());
        assert!(segs.push_front(1, SEGMENT_HEADROOM - 50).is_some());
        assert!(segs.push_front(3, 1).is_none());
        assert_eq!(segs.headroom(3), 0);
        // The next super-frame starts with the full headroom again.
        assert_eq!(segment_tcp4(&f, &o, &mut segs), Ok(3));
        assert_eq!(segs.get(1).unwrap().header, &inner[1][..]);
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = Rng(0x5eed);
        let mut segs = Segments::new();
        let payload = rng.bytes(20_000);
        let (good, good_o) = super_frame(&payload, 1448, 0x18, &[]);
        let mut ok = 0;
        for iter in 0..20_000 {
            let mut f = match rng.below(3) {
                0 => {
                    let n = rng.below(200);
                    rng.bytes(n)
                }
                1 => good.clone(),
                _ => good[..good.len() - rng.below(100)].to_vec(),
            };
            // Mutate a few header bytes.
            for _ in 0..rng.below(4) {
                let i = rng.below(f.len().clamp(1, 80));
                if let Some(b) = f.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
            let o = if rng.below(2) == 0 {
                good_o
            } else {
                Offload {
                    flags: rng.next() as u8 & 3,
                    gso_type: [0, 1, 4, 0x81, rng.next() as u8][rng.below(5)],
                    hdr_len: rng.next() as u16,
                    gso_size: [0, 255, 256, 1448, rng.next() as u16][rng.below(5)],
                    csum_start: [34, 30, rng.below(100) as u16][rng.below(3)],
                    csum_offset: [16, 6, rng.next() as u16][rng.below(3)],
                }
            };
            if let Ok(n) = segment_tcp4(&f, &o, &mut segs) {
                ok += 1;
                assert_eq!(n, segs.len(), "iteration {iter}");
                // Whatever is accepted comes out correct.
                check_segments(&f, &o, &segs);
            }
            let _ = resolve(&mut f, &o, &mut segs);
            let _ = complete_csum(&mut f, rng.below(100), rng.below(100));
        }
        assert!(ok > 100, "only {ok} inputs were accepted");
    }
}

/// Our segmentation against the kernel's own: a super-frame goes out of a
/// veth end with TSO and checksum offload off, so the kernel cuts it in
/// software (`tcp_gso_segment`, then `skb_checksum_help` per segment), and
/// the segments captured on the other end must be ours byte for byte.
#[cfg(test)]
pub(crate) mod kernel_tests {
    use super::tests::{super_frame, Rng};
    use super::*;
    use crate::port::packet::PacketQueue;
    use crate::wire::VNET_HDR_LEN;
    use std::process::Command;
    use std::time::{Duration, Instant};

    const UP: &str = "tngso0";
    const PEER: &str = "tngso1";

    fn run(cmd: &str, args: &str) {
        let out = Command::new(cmd).args(args.split_whitespace()).output().expect("run a command");
        assert!(out.status.success(), "{cmd} {args}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Everything `q` receives until `want` frames arrived, or nothing came
    /// for `quiet`, or `limit` passed.
    pub(crate) fn capture(q: &PacketQueue, want: usize, quiet: Duration, limit: Duration) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 70_000];
        let (start, mut last) = (Instant::now(), Instant::now());
        while got.len() < want && last.elapsed() < quiet && start.elapsed() < limit {
            match q.recv(&mut buf) {
                Ok(m) => {
                    got.push(buf[VNET_HDR_LEN..m.len].to_vec());
                    last = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    /// `[virtio-net header | frame]` for `offload`.
    pub(crate) fn message(offload: &Offload, frame: &[u8]) -> Vec<u8> {
        let mut msg = vec![0u8; VNET_HDR_LEN];
        offload.to_vnet(&mut msg);
        msg.extend_from_slice(frame);
        msg
    }

    /// Run `f(tx, rx)` on a thread with a private network namespace holding
    /// a veth pair: `tx` an AF_PACKET socket with virtio-net headers on one
    /// end, whose TSO and checksum offload are off so that the kernel
    /// segments and checksums in software what is sent there, and `rx` one
    /// on the other end. Nothing is visible outside; everything goes with
    /// the thread, even on a panic.
    pub(crate) fn with_veth(f: impl FnOnce(&PacketQueue, &PacketQueue) + Send + 'static) {
        let t = std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) only changes this thread's
            // namespace; the thread ends with the test, and the veth pair
            // goes with the namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
            // No IPv6 neighbour discovery in the capture.
            std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1").unwrap();
            run("ip", &format!("link add {UP} type veth peer name {PEER}"));
            run("ip", &format!("link set {UP} up"));
            run("ip", &format!("link set {PEER} up"));
            run("ethtool", &format!("-K {UP} tx off tso off"));
            let (tx, rx) = (PacketQueue::open(UP).unwrap(), PacketQueue::open(PEER).unwrap());
            // Wait for the link: a frame of a local experimental EtherType.
            let mut probe = [0u8; 60];
            probe[VNET_HDR_LEN..VNET_HDR_LEN + 6].fill(0xff);
            probe[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&[0x88, 0xb5]);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                tx.send(&probe).unwrap();
                if !capture(&rx, 1, Duration::from_millis(50), Duration::from_millis(50)).is_empty() {
                    break;
                }
                assert!(Instant::now() < deadline, "the veth pair never carried a frame");
            }
            capture(&rx, usize::MAX, Duration::from_millis(50), Duration::from_secs(1));
            f(&tx, &rx)
        });
        t.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    }

    /// Super-frames for the kernel tests: full, short-tailed, FIN|PSH|CWR
    /// with IPv4 options, and the smallest segment size.
    pub(crate) fn cases() -> Vec<(Vec<u8>, Offload)> {
        let opts = [0x94, 0x04, 0x00, 0x00];
        [
            (45 * 1448, 1448, 0x10, &[][..], 1),
            (20_000, 1448, 0x18, &[][..], 2),
            (9_001, 1000, 0x99, &opts[..], 3),
            (3_000, 256, 0x10, &[][..], 4),
        ]
        .into_iter()
        .map(|(len, mss, flags, ip_opts, seed)| super_frame(&Rng(seed).bytes(len), mss, flags, ip_opts))
        .collect()
    }

    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace (ip, ethtool)"]
    fn the_kernel_segments_a_super_frame_as_we_do() {
        with_veth(|tx, rx| {
            let mut segs = Segments::new();
            for (f, o) in cases() {
                let n = segment_tcp4(&f, &o, &mut segs).unwrap();
                let ours: Vec<Vec<u8>> = segs.iter().map(|s| super::tests::bytes_of(&s, &f)).collect();
                tx.send(&message(&o, &f)).unwrap();
                let theirs = capture(rx, n, Duration::from_millis(500), Duration::from_secs(5));
                let what = format!("{} bytes at {}", f.len(), o.gso_size);
                assert_eq!(theirs.len(), n, "{what}: segments the kernel made");
                for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    assert!(a == b, "{what}, segment {i}:\n  ours {a:02x?}\nkernel {b:02x?}");
                }
            }
        });
    }
}
