//! Software GRO: consecutive TCP/IPv4 segments of one flow, decapsulated
//! from the underlay, coalesced into one super-frame before the TAP write,
//! so the container's kernel gets one frame (and the worker makes one
//! `write`) instead of about 45.
//!
//! The result is what a TAP expects from a sender with TSO: the segments'
//! payloads behind the first segment's headers, IPv4 Total Length and
//! header checksum rewritten, the TCP checksum field holding the
//! un-complemented pseudo-header sum of the coalesced length, and
//! [`Offload`] `{ NEEDS_CSUM, TCPV4, gso_size, hdr_len, csum_start = TCP
//! header, csum_offset = 16 }`. The receiving kernel treats that checksum
//! as computed locally and never verifies it, so [`Coalescer::push`]
//! verifies every segment's IPv4 header and TCP checksums before merging
//! it: a corrupted segment is passed on alone, checksums untouched, and the
//! receiving kernel drops it.
//!
//! What merges follows Linux's `inet_gro_receive`/`tcp_gro_receive` and
//! wireguard-go's TCP GRO for TUN devices:
//! - same egress port, same Ethernet header;
//! - IPv4 without options, DF set and no fragmentation, same addresses,
//!   TOS (an ECN CE mark ends a run) and TTL. The Identification is not
//!   compared: with DF set it identifies nothing (RFC 6864 §4.1), and the
//!   coalesced frame keeps the first segment's;
//! - same TCP ports, ACK number, window, header length, options
//!   (timestamps included) and urgent pointer, and each segment's sequence
//!   number is where the previous one ended. So cutting the super-frame
//!   again at `gso_size` gives back the very segments, but for the IPv4
//!   Identification;
//! - flags ACK, or ACK|PSH: a PSH segment is merged but ends the run (its
//!   PSH goes to the coalesced header). A segment with SYN, FIN, RST, URG,
//!   ECE, CWR or a reserved bit, or without ACK, is never merged, nor is one
//!   without payload (a pure ACK);
//! - every merged segment has the first one's payload size, except the
//!   last, which may be shorter and then ends the run;
//! - at most [`MAX_SEGMENTS`] segments and [`MAX_IP_LEN`] bytes of IPv4
//!   datagram.
//!
//! A [`Coalescer`] holds one run at a time, in one [`PacketBuf`] allocated
//! when it is made. A sender's segments arrive in bursts (its own GSO cuts a
//! super-frame into back-to-back segments), so one run per batch captures
//! nearly all of them; interleaved flows are still delivered correctly,
//! just less coalesced.
//!
//! How a worker drives it, for a batch of decapsulated frames bound for
//! TAP ports (`write` sends `[virtio-net header | frame]` to a port):
//!
//! ```
//! use dataplane::overlay::gro::{Coalescer, Pushed};
//! use dataplane::packet::PacketBuf;
//! use dataplane::port::PortId;
//!
//! fn deliver(co: &mut Coalescer, batch: &mut [(PacketBuf, PortId)], mut write: impl FnMut(PortId, &[u8])) {
//!     for (buf, port) in batch.iter_mut() {
//!         let mut r = co.push(buf.frame(), *port);
//!         if r == Ok(Pushed::FlushFirst) {
//!             if let Some((p, out)) = co.flush() {
//!                 write(p, out.vnet_bytes());
//!             }
//!             // Taken now, unless its checksum turns out bad.
//!             r = co.push(buf.frame(), *port);
//!         }
//!         if r.is_err() {
//!             // Not coalescable: what is held goes first, then the frame.
//!             if let Some((p, out)) = co.flush() {
//!                 write(p, out.vnet_bytes());
//!             }
//!             write(*port, buf.vnet_bytes());
//!         }
//!     }
//!     if let Some((p, out)) = co.flush() {
//!         write(p, out.vnet_bytes());
//!     }
//! }
//! # let mut co = Coalescer::new();
//! # let mut n = 0;
//! # deliver(&mut co, &mut [], |_, _| n += 1);
//! # assert_eq!(n, 0);
//! ```
//!
//! About 370 lines of code; the rest are tests on real segments.

use crate::packet::{Offload, PacketBuf};
use crate::port::PortId;
use crate::wire::{checksum, ethernet, ipv4, tcp, vnet, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, TcpPacket};

/// Most segments merged into one super-frame. A 64 KiB run of 1448-byte
/// segments has 45, so the bound only matters for small segments.
pub const MAX_SEGMENTS: usize = 64;
/// Largest coalesced IPv4 datagram: what Total Length can say.
pub const MAX_IP_LEN: usize = u16::MAX as usize;

/// Offset of the IPv4 header (plain Ethernet II).
const L3: usize = ethernet::HEADER_LEN;
/// Offset of the TCP header: coalesced segments have no IPv4 options.
const L4: usize = L3 + ipv4::HEADER_LEN;
/// The TCP checksum field's offset in the TCP header (RFC 9293 §3.1).
const TCP_CSUM_OFFSET: u16 = 16;

/// What [`Coalescer::push`] did with a frame it could coalesce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Taken: the frame began a run or extended the held one. Nothing to
    /// send yet.
    Held,
    /// Not taken: the frame does not continue the held run (another port
    /// or flow, a gap or overlap in sequence, a different size, or the run
    /// is full or ended). [`Coalescer::flush`], send what it returns, then
    /// push the frame again: an empty coalescer takes it.
    FlushFirst,
}

/// Why a frame is never coalesced. Not a failure: the caller flushes the
/// held run (to keep the order) and sends the frame as it is, with no
/// offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroError {
    /// Not TCP in IPv4 in Ethernet II.
    #[error("not a TCP/IPv4 frame")]
    NotTcpIpv4,
    /// Headers cut short or lengths that contradict the frame.
    #[error("malformed TCP/IPv4 headers")]
    Malformed,
    /// IPv4 options (Linux does not coalesce them either).
    #[error("IPv4 header with options")]
    IpOptions,
    /// A fragment, or a datagram without DF that a router could fragment.
    #[error("IPv4 fragment or DF not set")]
    Fragmentable,
    /// No TCP payload: a pure ACK, a window update.
    #[error("no TCP payload")]
    NoPayload,
    /// Flags other than ACK and ACK|PSH, or reserved bits set.
    #[error("TCP flags {0:#04x} forbid coalescing")]
    Flags(u8),
    /// The IPv4 header or TCP checksum is wrong: the receiver must see the
    /// segment as it came, to drop it.
    #[error("bad IPv4 header or TCP checksum")]
    BadChecksum,
}

/// A segment that may be coalesced: what `push` needs from its headers.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// IPv4 Total Length (Ethernet padding after it is not part of it).
    total: usize,
    /// Ethernet, IPv4 and TCP header bytes.
    hdr_len: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

/// Check everything but the checksums: cheap, and enough to tell whether
/// the frame continues the held run.
fn candidate(f: &[u8]) -> Result<Candidate, GroError> {
    let eth = EthernetFrame::new_checked(f).map_err(|_| GroError::Malformed)?;
    if eth.ethertype() != EtherType::Ipv4 {
        return Err(GroError::NotTcpIpv4);
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| GroError::Malformed)?;
    if ip.protocol() != IpProtocol::Tcp {
        return Err(GroError::NotTcpIpv4);
    }
    if ip.header_len() != ipv4::HEADER_LEN {
        return Err(GroError::IpOptions);
    }
    if ip.is_fragment() || ip.reserved_flag() || !ip.dont_frag() {
        return Err(GroError::Fragmentable);
    }
    let t = TcpPacket::new_checked(ip.payload()).map_err(|_| GroError::Malformed)?;
    // The low nibble of the Data Offset byte holds reserved bits (AccECN's
    // AE among them): compare nothing we do not understand.
    let (flags, reserved) = (t.flags(), f[L4 + 12] & 0x0f);
    if reserved != 0 || (flags != tcp::Flags::ACK && flags != (tcp::Flags::ACK | tcp::Flags::PSH)) {
        return Err(GroError::Flags(flags.0));
    }
    if t.payload().is_empty() {
        return Err(GroError::NoPayload);
    }
    Ok(Candidate {
        total: usize::from(ip.total_len()),
        hdr_len: L4 + t.header_len(),
        payload: t.payload().len(),
        seq: t.seq_number(),
        psh: flags.contains(tcp::Flags::PSH),
    })
}

/// The IPv4 header and TCP checksums of a candidate, in full.
fn verify(f: &[u8], c: &Candidate) -> Result<(), GroError> {
    let ip = Ipv4Packet::new_unchecked(&f[L3..L4]);
    if !ip.verify_checksum() {
        return Err(GroError::BadChecksum);
    }
    let t = TcpPacket::new_unchecked(&f[L4..L3 + c.total]);
    if !t.verify_checksum_ipv4(ip.src_addr(), ip.dst_addr()) {
        return Err(GroError::BadChecksum);
    }
    Ok(())
}

/// Coalesces consecutive TCP/IPv4 segments into one super-frame; see the
/// module documentation for the rules and the loop that drives it.
pub struct Coalescer {
    /// The run: the first segment's headers and every payload so far.
    buf: PacketBuf,
    port: PortId,
    /// Segments held; 0 when empty.
    count: usize,
    /// The first segment's payload size.
    gso_size: usize,
    /// Where the next segment's payload must start.
    next_seq: u32,
    /// False once a short or PSH segment ended the run.
    open: bool,
    hdr_len: usize,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("port", &self.port)
            .field("count", &self.count)
            .field("gso_size", &self.gso_size)
            .field("next_seq", &self.next_seq)
            .field("open", &self.open)
            .field("len", &self.buf.len())
            .finish()
    }
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalescer {
    /// An empty coalescer with its one buffer: the only allocation it makes.
    pub fn new() -> Coalescer {
        Coalescer { buf: PacketBuf::new(), port: 0, count: 0, gso_size: 0, next_seq: 0, open: false, hdr_len: 0 }
    }

    /// True when no run is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Segments in the held run.
    #[inline]
    pub fn held(&self) -> usize {
        self.count
    }

    /// The port the held run goes to.
    #[inline]
    pub fn port(&self) -> Option<PortId> {
        (self.count > 0).then_some(self.port)
    }

    /// Offer `frame` (Ethernet first, checksums complete, as decapsulated)
    /// bound for `port`. `Ok(Held)`: copied in, done with it.
    /// `Ok(FlushFirst)`: not taken, flush and push it again (which gives
    /// `Held` or `Err(BadChecksum)`). `Err(why)`:
    /// never coalesced; flush, then send the frame itself. The checksums
    /// are verified only when the frame is taken, so each frame is summed
    /// once even when it must be pushed twice.
    pub fn push(&mut self, frame: &[u8], port: PortId) -> Result<Pushed, GroError> {
        let c = candidate(frame)?;
        if self.count == 0 {
            verify(frame, &c)?;
            // A candidate's datagram is at most 65535 bytes: it fits.
            if !self.buf.fill(&frame[..L3 + c.total]) {
                return Err(GroError::Malformed);
            }
            self.port = port;
            self.count = 1;
            self.gso_size = c.payload;
            self.hdr_len = c.hdr_len;
            self.next_seq = c.seq.wrapping_add(c.payload as u32);
            self.open = !c.psh;
            return Ok(Pushed::Held);
        }
        if !self.continues(frame, &c, port) {
            return Ok(Pushed::FlushFirst);
        }
        verify(frame, &c)?;
        let len = self.buf.len();
        let Some(room) = self.buf.frame_capacity_mut().get_mut(len..len + c.payload) else {
            return Ok(Pushed::FlushFirst);
        };
        room.copy_from_slice(&frame[c.hdr_len..L3 + c.total]);
        self.buf.set_len(len + c.payload);
        self.count += 1;
        self.next_seq = c.seq.wrapping_add(c.payload as u32);
        if c.psh {
            let f = self.buf.frame_mut();
            f[L4 + 13] |= tcp::Flags::PSH.0;
        }
        self.open = !c.psh && c.payload == self.gso_size;
        Ok(Pushed::Held)
    }

    /// Whether candidate `c` extends the held run.
    fn continues(&self, f: &[u8], c: &Candidate, port: PortId) -> bool {
        let h = self.buf.frame();
        let hl = self.hdr_len;
        self.open
            && port == self.port
            && self.count < MAX_SEGMENTS
            && c.payload <= self.gso_size
            && c.seq == self.next_seq
            && h.len() - L3 + c.payload <= MAX_IP_LEN
            && c.hdr_len == hl
            // Ethernet header.
            && f[..L3] == h[..L3]
            // TOS, TTL, addresses (version, IHL, flags and protocol are
            // the same for every candidate).
            && f[L3 + 1] == h[L3 + 1]
            && f[L3 + 8] == h[L3 + 8]
            && f[L3 + 12..L4] == h[L3 + 12..L4]
            // Ports; ACK number and Data Offset; window; urgent pointer
            // (meaningless without URG, but then merging loses nothing);
            // options.
            && f[L4..L4 + 4] == h[L4..L4 + 4]
            && f[L4 + 8..L4 + 13] == h[L4 + 8..L4 + 13]
            && f[L4 + 14..L4 + 16] == h[L4 + 14..L4 + 16]
            && f[L4 + 18..L4 + 20] == h[L4 + 18..L4 + 20]
            && f[L4 + tcp::HEADER_LEN..hl] == h[L4 + tcp::HEADER_LEN..hl]
    }

    /// Hand back the held run and empty the coalescer: a super-frame with
    /// GSO metadata when two or more segments merged, else the one frame as
    /// it came (Ethernet padding cut off) with [`Offload::NONE`]. `None`
    /// when nothing is held. The buffer stays valid until the next `push`.
    /// Only the frame and `meta.offload` are set; the rest of the metadata
    /// is the caller's.
    pub fn flush(&mut self) -> Option<(PortId, &mut PacketBuf)> {
        let n = std::mem::take(&mut self.count);
        if n == 0 {
            return None;
        }
        if n == 1 {
            self.buf.meta.offload = Offload::NONE;
            return Some((self.port, &mut self.buf));
        }
        let hl = self.hdr_len;
        let f = self.buf.frame_mut();
        let total = f.len() - L3;
        let mut ip = Ipv4Packet::new_unchecked(&mut f[L3..L4]);
        // continues() kept the datagram within MAX_IP_LEN.
        ip.set_total_len(total as u16);
        ip.fill_checksum();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, (total - ipv4::HEADER_LEN) as u16);
        TcpPacket::new_unchecked(&mut f[L4..hl]).set_checksum(pseudo);
        self.buf.meta.offload = Offload {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: vnet::GSO_TCPV4,
            hdr_len: hl as u16,
            gso_size: self.gso_size as u16,
            csum_start: L4 as u16,
            csum_offset: TCP_CSUM_OFFSET,
        };
        Some((self.port, &mut self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::gso::tests::{bytes_of, super_frame, Rng};
    use crate::overlay::gso::{complete_csum, segment_tcp4, Segments};
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const TAP: PortId = 3;

    /// What the worker would write: a port, the frame, its offload, and
    /// why it was passed on alone (for frames `push` refused).
    #[derive(Debug)]
    struct Out {
        port: PortId,
        frame: Vec<u8>,
        offload: Offload,
        alone: Option<GroError>,
    }

    /// The worker's loop from the module documentation, over one batch.
    fn drive(co: &mut Coalescer, batch: &[(Vec<u8>, PortId)]) -> Vec<Out> {
        let mut out = Vec::new();
        let flush = |co: &mut Coalescer, out: &mut Vec<Out>| {
            if let Some((port, b)) = co.flush() {
                out.push(Out { port, frame: b.frame().to_vec(), offload: b.meta.offload, alone: None });
            }
            assert!(co.is_empty() && co.flush().is_none());
        };
        for (f, port) in batch {
            let mut r = co.push(f, *port);
            if r == Ok(Pushed::FlushFirst) {
                flush(co, &mut out);
                r = co.push(f, *port);
                assert_ne!(r, Ok(Pushed::FlushFirst), "an empty coalescer refused a candidate");
            }
            if let Err(why) = r {
                flush(co, &mut out);
                out.push(Out { port: *port, frame: f.clone(), offload: Offload::NONE, alone: Some(why) });
            }
        }
        flush(co, &mut out);
        out
    }

    /// The wire segments of a super-frame of `len` payload bytes cut at
    /// `mss`, with TCP flags `flags` on the super-frame, by our own GSO.
    fn wire_segments(len: usize, mss: u16, flags: u8, seed: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
        let payload = Rng(seed).bytes(len);
        let (f, o) = super_frame(&payload, mss, flags, &[]);
        let mut segs = Segments::new();
        segment_tcp4(&f, &o, &mut segs).unwrap();
        let v = segs.iter().map(|s| bytes_of(&s, &f)).collect();
        (f, v)
    }

    fn on(port: PortId, frames: &[Vec<u8>]) -> Vec<(Vec<u8>, PortId)> {
        frames.iter().map(|f| (f.clone(), port)).collect()
    }

    /// Recompute the IPv4 header checksum and the full TCP checksum after
    /// a test edited a segment.
    fn reseal(f: &mut [u8]) {
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..14 + ihl]);
        ip.fill_checksum();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        TcpPacket::new_unchecked(&mut f[14 + ihl..14 + total]).fill_checksum_ipv4(src, dst);
    }

    /// Whether [`reseal`] can run on `f` without panicking.
    fn resealable(f: &[u8]) -> bool {
        if f.len() < 54 {
            return false;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let tl = usize::from(u16::from_be_bytes([f[16], f[17]]));
        ihl >= 20 && f.len() >= 14 + tl && tl >= ihl + 20 && usize::from(f[14 + ihl + 12] >> 4) * 4 >= 20
    }

    fn edited(f: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut f = f.to_vec();
        edit(&mut f);
        reseal(&mut f);
        f
    }

    fn tcp_payload(f: &[u8]) -> Vec<u8> {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(TransportSlice::Tcp(t)) = &p.transport else { panic!("not TCP") };
        t.payload().to_vec()
    }

    fn seq_of(f: &[u8]) -> u32 {
        TcpPacket::new_unchecked(&f[L4..]).seq_number()
    }

    /// A coalesced super-frame is what a TAP takes from a TSO sender:
    /// metadata, IPv4 length and checksum, the partial TCP checksum; and
    /// completed as the kernel would, etherparse finds its TCP checksum
    /// right.
    fn check_super(o: &Out, segments: usize, gso_size: usize) {
        assert_eq!(o.alone, None);
        let f = &o.frame;
        let hl = L4 + usize::from(f[L4 + 12] >> 4) * 4;
        assert_eq!(
            o.offload,
            Offload {
                flags: vnet::F_NEEDS_CSUM,
                gso_type: vnet::GSO_TCPV4,
                hdr_len: hl as u16,
                gso_size: gso_size as u16,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        assert_eq!((f.len() - hl).div_ceil(gso_size), segments);
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("not IPv4") };
        let h = ip.header();
        assert_eq!(usize::from(h.total_len()), f.len() - 14);
        assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
        let pseudo = checksum::pseudo_header_v4(
            h.source_addr(),
            h.destination_addr(),
            IpProtocol::Tcp,
            h.payload_len().unwrap(),
        );
        assert_eq!(u16::from_be_bytes([f[L4 + 16], f[L4 + 17]]), pseudo, "partial TCP checksum");
        let mut done = f.clone();
        complete_csum(&mut done, 34, 16).unwrap();
        let p = SlicedPacket::from_ethernet(&done).unwrap();
        let Some(TransportSlice::Tcp(t)) = &p.transport else { panic!("not TCP") };
        let want = t.calc_checksum_ipv4(h.source(), h.destination()).unwrap();
        assert!(t.checksum() == want || (want == 0 && t.checksum() == 0xffff));
    }

    /// A GSO output cut again by our GSO, a plain one as it is.
    fn expand(outs: &[Out]) -> Vec<Vec<u8>> {
        let mut segs = Segments::new();
        let mut v = Vec::new();
        for o in outs {
            if o.offload.is_gso() {
                segment_tcp4(&o.frame, &o.offload, &mut segs).unwrap();
                v.extend(segs.iter().map(|s| bytes_of(&s, &o.frame)));
            } else {
                v.push(o.frame.clone());
            }
        }
        v
    }

    #[test]
    fn segments_from_gso_coalesce_back_into_the_super_frame() {
        let mut co = Coalescer::new();
        for (len, flags) in [(45 * 1448, 0x10), (45 * 1448 - 700, 0x18), (2 * 1448, 0x18)] {
            let (sup, segs) = wire_segments(len, 1448, flags, len as u64);
            let outs = drive(&mut co, &on(TAP, &segs));
            assert_eq!(outs.len(), 1, "{len} bytes");
            assert_eq!(outs[0].port, TAP);
            check_super(&outs[0], segs.len(), 1448);
            // Byte for byte the super-frame the sender's TAP handed over:
            // first id, PSH back on, partial checksum.
            assert_eq!(outs[0].frame, sup, "{len} bytes");
            assert_eq!(tcp_payload(&outs[0].frame), tcp_payload(&sup));
            // And cut again, the very segments that came in.
            assert_eq!(expand(&outs), segs);
        }
    }

    #[test]
    fn a_single_segment_is_passed_on_as_it_came() {
        let mut co = Coalescer::new();
        let (_, segs) = wire_segments(1000, 1448, 0x18, 1);
        // Ethernet padding after Total Length is cut off.
        let mut padded = segs[0].clone();
        padded.extend_from_slice(&[0; 6]);
        let outs = drive(&mut co, &on(TAP, &[padded]));
        assert_eq!(outs.len(), 1);
        assert_eq!((outs[0].offload, outs[0].alone), (Offload::NONE, None));
        assert_eq!(outs[0].frame, segs[0]);
        assert!(drive(&mut co, &[]).is_empty());
    }

    #[test]
    fn interleaved_flows_and_ports_are_kept_apart() {
        let mut co = Coalescer::new();
        let (_, a) = wire_segments(4 * 1448, 1448, 0x10, 2);
        // Flow B: another source port.
        let b: Vec<Vec<u8>> = a.iter().map(|f| edited(f, |f| f[L4 + 1] ^= 1)).collect();
        let batch: Vec<_> = a.iter().zip(&b).flat_map(|(x, y)| [(x.clone(), TAP), (y.clone(), TAP)]).collect();
        let outs = drive(&mut co, &batch);
        assert_eq!(outs.len(), 8, "nothing merges across flows");
        assert_eq!(
            outs.iter().map(|o| o.frame.clone()).collect::<Vec<_>>(),
            batch.iter().map(|b| b.0.clone()).collect::<Vec<_>>()
        );

        // Runs of each flow merge; the same flow to two ports does not.
        let mut batch = on(TAP, &a[..2]);
        batch.extend(on(TAP, &b[..2]));
        batch.extend(on(TAP + 1, &a[2..]));
        let outs = drive(&mut co, &batch);
        assert_eq!(outs.len(), 3);
        assert_eq!(outs.iter().map(|o| o.port).collect::<Vec<_>>(), [TAP, TAP, TAP + 1]);
        for o in &outs {
            check_super(o, 2, 1448);
        }
        assert_eq!(expand(&outs), batch.into_iter().map(|b| b.0).collect::<Vec<_>>());
    }

    #[test]
    fn out_of_order_and_duplicate_segments_end_a_run() {
        let mut co = Coalescer::new();
        let (_, s) = wire_segments(6 * 1448, 1448, 0x10, 3);
        let order = [0, 1, 3, 2, 4, 4, 5];
        let batch: Vec<_> = order.iter().map(|&i| (s[i].clone(), TAP)).collect();
        let outs = drive(&mut co, &batch);
        let seqs: Vec<u32> = outs.iter().map(|o| seq_of(&o.frame)).collect();
        // 0+1 merge; 3 and 2 are alone (each breaks the other's run); the
        // duplicate 4 ends the run the first 4 began, and 5 joins it.
        assert_eq!(seqs, [seq_of(&s[0]), seq_of(&s[3]), seq_of(&s[2]), seq_of(&s[4]), seq_of(&s[4])]);
        let counts: Vec<usize> =
            outs.iter().map(|o| if o.offload.is_gso() { (o.frame.len() - 66) / 1448 } else { 1 }).collect();
        assert_eq!(counts, [2, 1, 1, 1, 2]);
        assert_eq!(expand(&outs), batch.into_iter().map(|b| b.0).collect::<Vec<_>>());
    }

    #[test]
    fn different_headers_or_options_do_not_merge() {
        let mut co = Coalescer::new();
        let (_, s) = wire_segments(2 * 1448, 1448, 0x10, 4);
        type Edit = fn(&mut Vec<u8>);
        let second: [(&str, Edit); 9] = [
            ("TSval", |f| f[L4 + 27] ^= 1),
            ("TSecr", |f| f[L4 + 31] ^= 1),
            ("ACK number", |f| f[L4 + 11] ^= 1),
            ("window", |f| f[L4 + 15] ^= 1),
            ("TTL", |f| f[L3 + 8] -= 1),
            ("TOS (ECN CE)", |f| f[L3 + 1] |= 3),
            ("destination", |f| f[L3 + 19] ^= 1),
            ("Ethernet source", |f| f[11] ^= 1),
            ("destination port", |f| f[L4 + 3] ^= 1),
        ];
        for (what, edit) in second {
            let b = edited(&s[1], edit);
            assert_eq!(co.push(&s[0], TAP), Ok(Pushed::Held));
            assert_eq!(co.push(&b, TAP), Ok(Pushed::FlushFirst), "{what}");
            assert_eq!(co.flush().unwrap().1.frame(), &s[0][..]);
        }
        // The IPv4 Identification is not compared (DF is set).
        let b = edited(&s[1], |f| f[L3 + 5] ^= 0x55);
        let outs = drive(&mut co, &[(s[0].clone(), TAP), (b, TAP)]);
        assert_eq!(outs.len(), 1);
        check_super(&outs[0], 2, 1448);
    }

    #[test]
    fn a_bad_checksum_is_passed_on_untouched() {
        let mut co = Coalescer::new();
        let (_, s) = wire_segments(5 * 1448, 1448, 0x10, 5);
        let mut bad = s[2].clone();
        bad[500] ^= 0x40; // payload corrupted in transit
        let mut bad_ip = s[4].clone();
        bad_ip[L3 + 10] ^= 1;
        let batch = vec![
            (s[0].clone(), TAP),
            (s[1].clone(), TAP),
            (bad.clone(), TAP),
            (s[3].clone(), TAP),
            (bad_ip.clone(), TAP),
        ];
        let outs = drive(&mut co, &batch);
        assert_eq!(outs.len(), 4);
        check_super(&outs[0], 2, 1448);
        assert_eq!((outs[1].alone, &outs[1].frame), (Some(GroError::BadChecksum), &bad));
        assert_eq!((outs[2].offload, &outs[2].frame), (Offload::NONE, &s[3]));
        assert_eq!((outs[3].alone, &outs[3].frame), (Some(GroError::BadChecksum), &bad_ip));
        // Alone at the start of a run too.
        assert_eq!(co.push(&bad, TAP), Err(GroError::BadChecksum));
        assert!(co.is_empty());
    }

    #[test]
    fn psh_or_a_short_segment_ends_the_run() {
        let mut co = Coalescer::new();
        let (_, s) = wire_segments(6 * 1448, 1448, 0x10, 6);
        let psh = edited(&s[1], |f| f[L4 + 13] |= tcp::Flags::PSH.0);
        let batch = vec![(s[0].clone(), TAP), (psh.clone(), TAP), (s[2].clone(), TAP), (s[3].clone(), TAP)];
        let outs = drive(&mut co, &batch);
        assert_eq!(outs.len(), 2);
        check_super(&outs[0], 2, 1448);
        assert_eq!(outs[0].frame[L4 + 13], 0x18, "PSH carried to the super-frame");
        check_super(&outs[1], 2, 1448);
        assert_eq!(outs[1].frame[L4 + 13], 0x10);
        assert_eq!(expand(&outs), batch.into_iter().map(|b| b.0).collect::<Vec<_>>());

        // A short segment in the middle: merged, and the run ends there.
        let (_, t) = wire_segments(1448 + 1000, 1448, 0x10, 7);
        let (_, u) = wire_segments(1448, 1448, 0x10, 7);
        let next = edited(&u[0], |f| {
            let s = seq_of(&t[1]).wrapping_add(1000);
            f[L4 + 4..L4 + 8].copy_from_slice(&s.to_be_bytes());
        });
        let outs = drive(&mut co, &on(TAP, &[t[0].clone(), t[1].clone(), next.clone()]));
        assert_eq!(outs.len(), 2);
        check_super(&outs[0], 2, 1448);
        assert_eq!(outs[1].frame, next);

        // A longer segment after a short first one does not merge.
        let (_, v) = wire_segments(3 * 1000, 1000, 0x10, 8);
        let longer = edited(&v[1], |f| {
            f.extend_from_slice(&[7; 10]);
            let tl = u16::from_be_bytes([f[16], f[17]]) + 10;
            f[16..18].copy_from_slice(&tl.to_be_bytes());
        });
        let outs = drive(&mut co, &on(TAP, &[v[0].clone(), longer.clone(), v[2].clone()]));
        assert_eq!(outs.len(), 3);
        assert!(outs.iter().all(|o| !o.offload.is_gso()));
    }

    #[test]
    fn flags_and_headers_that_forbid_merging() {
        let mut co = Coalescer::new();
        let (_, s) = wire_segments(1448, 1448, 0x10, 9);
        let f = &s[0];
        for flags in [0x01u8, 0x02, 0x04, 0x11, 0x12, 0x14, 0x30, 0x50, 0x90, 0x08, 0x00, 0x19] {
            let g = edited(f, |g| g[L4 + 13] = flags);
            assert_eq!(co.push(&g, TAP), Err(GroError::Flags(flags)), "flags {flags:#04x}");
        }
        let ae = edited(f, |g| g[L4 + 12] |= 1);
        assert_eq!(co.push(&ae, TAP), Err(GroError::Flags(0x10)));
        // A pure ACK.
        let ack = edited(f, |g| {
            g.truncate(66);
            g[16..18].copy_from_slice(&52u16.to_be_bytes());
        });
        assert_eq!(co.push(&ack, TAP), Err(GroError::NoPayload));
        // No DF, a fragment, the reserved flag.
        assert_eq!(co.push(&edited(f, |g| g[L3 + 6] = 0), TAP), Err(GroError::Fragmentable));
        assert_eq!(co.push(&edited(f, |g| g[L3 + 6] = 0x60), TAP), Err(GroError::Fragmentable));
        assert_eq!(co.push(&edited(f, |g| g[L3 + 6] = 0xc0), TAP), Err(GroError::Fragmentable));
        // IPv4 options: one word of NOPs inserted.
        let opts = edited(f, |g| {
            g.splice(34..34, [1, 1, 1, 1]);
            g[14] = 0x46;
            let tl = u16::from_be_bytes([g[16], g[17]]) + 4;
            g[16..18].copy_from_slice(&tl.to_be_bytes());
        });
        assert_eq!(co.push(&opts, TAP), Err(GroError::IpOptions));
        assert_eq!(co.push(&edited(f, |g| g[L3 + 9] = 17), TAP), Err(GroError::NotTcpIpv4));
        let mut arp = f[..42].to_vec();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(co.push(&arp, TAP), Err(GroError::NotTcpIpv4));
        assert_eq!(co.push(&f[..100], TAP), Err(GroError::Malformed));
        assert_eq!(co.push(&f[..13], TAP), Err(GroError::Malformed));
        assert!(co.is_empty());
        // Refusing a frame leaves a held run as it was.
        assert_eq!(co.push(f, TAP), Ok(Pushed::Held));
        assert_eq!(co.push(&ack, TAP), Err(GroError::NoPayload));
        assert_eq!((co.held(), co.port()), (1, Some(TAP)));
        assert_eq!(co.flush().unwrap().1.frame(), &f[..]);
    }

    #[test]
    fn size_limits() {
        let mut co = Coalescer::new();
        // 64 segments of 1000 bytes, then the 65th (which would still fit
        // in 65535 bytes) starts a run.
        let (_, s) = wire_segments(65 * 1000 + 400, 1000, 0x10, 10);
        assert_eq!(s.len(), 66);
        let outs = drive(&mut co, &on(TAP, &s));
        assert_eq!(outs.len(), 2);
        check_super(&outs[0], MAX_SEGMENTS, 1000);
        check_super(&outs[1], 2, 1000);
        assert_eq!(expand(&outs), s);
        // At 1448 bytes the IPv4 length ends the run at 45 segments: a 64
        // KiB super-frame's worth, followed by two more segments of the flow.
        let (_, mut s) = wire_segments(45 * 1448, 1448, 0x10, 11);
        let more: Vec<Vec<u8>> = s[..2]
            .iter()
            .map(|f| {
                edited(f, |f| {
                    let seq = seq_of(f).wrapping_add(45 * 1448);
                    f[L4 + 4..L4 + 8].copy_from_slice(&seq.to_be_bytes());
                })
            })
            .collect();
        s.extend(more);
        let outs = drive(&mut co, &on(TAP, &s));
        assert_eq!(outs.len(), 2);
        check_super(&outs[0], 45, 1448);
        assert_eq!(outs[0].frame.len(), 14 + 52 + 45 * 1448);
        check_super(&outs[1], 2, 1448);
        assert_eq!(expand(&outs), s);
    }

    #[test]
    fn random_input_never_panics_and_loses_nothing() {
        let mut rng = Rng(0x9e0);
        let mut co = Coalescer::new();
        let flows: Vec<Vec<Vec<u8>>> =
            (0..3).map(|k| wire_segments(20 * 1448 + k * 333, 1448, 0x18, k as u64).1).collect();
        let mut merged = 0;
        for iter in 0..300 {
            let mut batch = Vec::new();
            let want_len = rng.below(64);
            while batch.len() < want_len {
                // Mostly runs of consecutive segments of one flow to one
                // port, as a sender's GSO emits them; some noise.
                let port = rng.below(2) as PortId;
                let run: Vec<Vec<u8>> = if rng.below(10) == 0 {
                    let n = rng.below(120);
                    vec![rng.bytes(n)]
                } else {
                    let flow = &flows[rng.below(flows.len())];
                    let at = rng.below(flow.len());
                    flow[at..(at + 1 + rng.below(8)).min(flow.len())].to_vec()
                };
                for mut f in run {
                    if rng.below(8) == 0 {
                        for _ in 0..1 + rng.below(3) {
                            let i = rng.below(f.len().clamp(1, 90));
                            if let Some(b) = f.get_mut(i) {
                                *b = rng.next() as u8;
                            }
                        }
                        // Half the time with checksums made right again,
                        // so the mutation is judged on its own.
                        if rng.below(2) == 0 && resealable(&f) {
                            reseal(&mut f);
                        }
                    }
                    batch.push((f, port));
                }
            }
            let outs = drive(&mut co, &batch);
            for o in outs.iter().filter(|o| o.offload.is_gso()) {
                merged += 1;
                let n = (o.frame.len() - usize::from(o.offload.hdr_len)).div_ceil(usize::from(o.offload.gso_size));
                check_super(o, n, usize::from(o.offload.gso_size));
            }
            // Cut again, the outputs are the inputs (padding cut off), in
            // order, but for the IPv4 id of merged segments.
            let mask = |f: &[u8]| {
                let mut f = f.to_vec();
                if f.len() >= 34 {
                    f[18..20].fill(0);
                    f[24..26].fill(0);
                }
                f
            };
            let got: Vec<Vec<u8>> = expand(&outs).iter().map(|f| mask(f)).collect();
            let want: Vec<Vec<u8>> = batch
                .iter()
                .map(|(f, _)| match candidate(f).and_then(|c| verify(f, &c).map(|()| c)) {
                    Ok(c) => mask(&f[..L3 + c.total]),
                    Err(_) => mask(f),
                })
                .collect();
            assert_eq!(got.len(), want.len(), "iteration {iter}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(g == w, "iteration {iter}, frame {i}:\n got {g:02x?}\nwant {w:02x?}");
            }
        }
        assert!(merged > 1000, "only {merged} super-frames");
    }
}

/// The kernel's view of what we coalesce: segments the kernel cut from a
/// super-frame are coalesced, the result is handed back to the kernel as a
/// GSO frame on a veth end without TSO, and what it cuts from it must be
/// those very segments, byte for byte.
#[cfg(test)]
mod kernel_tests {
    use super::*;
    use crate::overlay::gso::kernel_tests::{capture, cases, message, with_veth};
    use std::time::Duration;

    #[test]
    #[ignore = "needs root: creates a veth pair in a private network namespace (ip, ethtool)"]
    fn the_kernel_cuts_a_coalesced_frame_back_into_its_segments() {
        with_veth(|tx, rx| {
            let mut co = Coalescer::new();
            for (f, o) in cases() {
                tx.send(&message(&o, &f)).unwrap();
                let segs = capture(rx, usize::MAX, Duration::from_millis(300), Duration::from_secs(5));
                assert!(segs.len() > 1);
                // The worker's loop; segments with IPv4 options, CWR or FIN
                // go alone.
                let mut outs = Vec::new();
                for s in &segs {
                    let mut r = co.push(s, 1);
                    if r == Ok(Pushed::FlushFirst) {
                        outs.extend(co.flush().map(|(_, b)| message(&b.meta.offload, b.frame())));
                        r = co.push(s, 1);
                    }
                    if r.is_err() {
                        outs.extend(co.flush().map(|(_, b)| message(&b.meta.offload, b.frame())));
                        outs.push(message(&Offload::NONE, s));
                    }
                }
                outs.extend(co.flush().map(|(_, b)| message(&b.meta.offload, b.frame())));
                if f[L3] == 0x45 {
                    assert!(outs.len() <= 3, "{} frames from {} segments", outs.len(), segs.len());
                }
                for m in &outs {
                    tx.send(m).unwrap();
                }
                let again = capture(rx, segs.len(), Duration::from_millis(500), Duration::from_secs(5));
                assert_eq!(again.len(), segs.len());
                for (i, (a, b)) in again.iter().zip(&segs).enumerate() {
                    assert!(a == b, "segment {i}:\n again {a:02x?}\n first {b:02x?}");
                }
            }
        });
    }
}
