//! The GRE overlay's socket layer (RFC 2784, with the key of RFC 2890 and
//! protocol 0x6558, Transparent Ethernet Bridging), and nothing else: one
//! raw `IPPROTO_GRE` socket per worker, steered by a classic BPF socket
//! filter, moving packets with `recvmmsg` and `sendmmsg`.
//!
//! The dataplane builds the GRE header and the inner Ethernet frame
//! ([`crate::wire::gre`]); the kernel owns the underlay address and adds the
//! outer IPv4 header (protocol 47, the bound address as source). Setup
//! policy belongs to the control plane; the per-packet calls are
//! [`GreQueue::recv_batch`] and [`GreQueue::send_batch`], which allocate
//! nothing.
//!
//! # One packet, one worker
//!
//! GRE has no ports, and the kernel hands a clone of every GRE packet to
//! every raw socket of protocol 47 bound to its destination
//! (`raw_v4_input`). So each worker's socket carries a socket filter
//! ([`filter_program`]) that computes the packet's steering key,
//! [`steering_hash`], and accepts the packet only if `key % workers` is that
//! worker's index: each packet is queued on exactly one socket, and the
//! others drop their clone in the filter, before any copy to user space.
//! The cost is one clone and one filter run per worker per packet; the
//! filter has 90 instructions, straight-line but for a few forward jumps,
//! and the kernel JIT-compiles it.
//!
//! The key is a sum over the *inner* flow, so both directions of an inner
//! flow, and every packet of it, land on one worker ([`inner_flow_hash`]):
//!
//! | inner frame | key |
//! |---|---|
//! | GRE header cut, or protocol not 0x6558 | `0` |
//! | shorter than an Ethernet header | `0` |
//! | not IPv4 (ARP, IPv6, VLAN-tagged, …) | `dst MAC[2..6] + src MAC[2..6]` (each as a big-endian `u32`) |
//! | IPv4, header cut before the addresses | `0` |
//! | IPv4 fragment (MF set or offset non-zero), IHL below 5, neither TCP nor UDP, or ports cut | `src + dst` |
//! | TCP, UDP | `src + dst + sport + dport` |
//!
//! Sums wrap at 32 bits. Every fragment of a datagram gets `src + dst`, so
//! fragments stay together (unlike [`super::steer`], which keys a first
//! fragment by its ports). The GRE header is located from the outer IHL and
//! its length from the C, K and S bits (4 bytes, plus 4 for each); neither
//! the version nor the reserved bits are checked, since the key only has to
//! be stable: the worker's parser ([`crate::wire::gre`]) drops what is not
//! GRE version 0.
//!
//! Every packet, however malformed, is accepted by exactly one socket: the
//! program checks the packet length before each load instead of letting a
//! load beyond the end abort it (which would return 0 and drop the packet on
//! every socket, unseen and uncounted). `filter_program_is_total_*` checks
//! that against [`steering_hash`] on crafted, truncated and random packets,
//! with an interpreter of the kernel's semantics.
//!
//! # What the kernel does (checked on Linux 6.18 by the tests below)
//!
//! - A raw IPv4 socket's filter runs with `skb->data` at the outer IPv4
//!   header (`raw_rcv` pushes back to the network header before
//!   `sock_queue_rcv_skb`): offset 0 is the version/IHL byte
//!   (`filter_sees_the_outer_ipv4_header`). The outer header has been
//!   checked by the IP layer, and the packet trimmed to its Total Length and
//!   reassembled if it was fragmented.
//! - A socket filter's return value is how many bytes to keep, 0 meaning
//!   drop; the program returns `u32::MAX` to keep the packet whole.
//! - A raw socket also receives the outer IPv4 header:
//!   [`RecvMeta::gre_offset`] says where the GRE header starts.
//! - This kernel has no GRE module (no `ip_gre`, no `gretap`): nothing else
//!   handles protocol 47, and without a raw socket for it the kernel answers
//!   every GRE packet with an ICMP protocol unreachable. While any raw
//!   `IPPROTO_GRE` socket matches the packet it does not, even if every
//!   filter drops the clone (`ip_protocol_deliver_rcu` only asks whether a
//!   raw socket matched): `no_protocol_unreachable_while_open`. Packets to
//!   another local address than the bound one still get one.
//! - On send, the kernel writes the outer IPv4 header: protocol 47, the
//!   bound address as source, TTL 64 (`net.ipv4.ip_default_ttl`), and DF as
//!   for the VXLAN sockets ([`super::udp`], § Fragmentation and DF): set
//!   when the packet fits the path MTU, otherwise the packet is fragmented
//!   and the fragments have no DF. RFC 2784 does not forbid fragmentation.
//!
//! # Setup
//!
//! A raw socket receives from the moment it exists, before any filter or
//! bind. So [`open_gre`] attaches a drop-all filter first, binds, reads
//! away anything that was queued in between, and only then attaches the
//! steering filter: no socket ever holds a packet of another worker.
//! Packets that arrive while the group is incomplete and belong to a worker
//! whose socket does not exist yet are dropped.

use std::io::{self, IoSlice};
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr;

use super::steer::worker_for;
use super::udp::{attach_filter, bind, from_sockaddr, send_msgs, set_buffer, sockaddr, socket, DROP_ALL};
pub use super::udp::{Sent, MAX_RECV_BATCH, MAX_SEND_BATCH, MAX_SOCKETS};

/// GRE Protocol Type of Transparent Ethernet Bridging (RFC 1701 §3.3).
pub const PROTO_TEB: u16 = 0x6558;

/// Errors from opening and configuring the GRE sockets.
#[derive(Debug, thiserror::Error)]
pub enum GreError {
    /// A tunnel needs 1 to [`MAX_SOCKETS`] workers.
    #[error("a tunnel needs 1 to {max} workers, not {0}", max = MAX_SOCKETS)]
    Workers(usize),
    /// Creating the raw socket failed (it needs CAP_NET_RAW).
    #[error("open a raw IPPROTO_GRE socket")]
    Socket(#[source] io::Error),
    /// A socket option was refused.
    #[error("set {option} on a raw GRE socket")]
    SetOption {
        option: &'static str,
        #[source]
        source: io::Error,
    },
    /// Binding to the underlay address failed (not an address of this host,
    /// say).
    #[error("bind a raw GRE socket to {addr}")]
    Bind {
        addr: Ipv4Addr,
        #[source]
        source: io::Error,
    },
    /// Reading away what was queued before the filter was in place failed.
    #[error("empty a new raw GRE socket")]
    Drain(#[source] io::Error),
}

/// What one received message holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes written to the buffer: the outer IPv4 header, then the GRE
    /// packet.
    pub len: usize,
    /// The outer source address: the remote tunnel endpoint.
    pub src: Ipv4Addr,
    /// Where the GRE header starts: the outer IPv4 header's length (IHL),
    /// at most `len`.
    pub gre_offset: usize,
    /// The buffer was too short and the rest was lost (`MSG_TRUNC`).
    pub truncated: bool,
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta { len: 0, src: Ipv4Addr::UNSPECIFIED, gre_offset: 0, truncated: false }
    }
}

impl RecvMeta {
    /// Length of the GRE packet (header and inner frame).
    #[inline]
    pub fn gre_len(&self) -> usize {
        self.len.saturating_sub(self.gre_offset)
    }

    /// The byte range of the GRE packet in the buffer (empty, never
    /// reversed, whatever the fields hold).
    #[inline]
    pub fn gre_range(&self) -> std::ops::Range<usize> {
        self.gre_offset.min(self.len)..self.len
    }
}

// ---------------------------------------------------------------------------
// The steering key.

// Outer IPv4 (RFC 791 §3.1) and GRE (RFC 2784 §2, RFC 2890 §2) fields.
const GRE_FLAGS: usize = 0;
const GRE_PROTOCOL: usize = 2;
const GRE_BASE_LEN: usize = 4;
/// C, K and S each add a 4-byte word (RFC 2890 §2).
const FLAG_C: u8 = 0x80;
const FLAG_K: u8 = 0x20;
const FLAG_S: u8 = 0x10;

// Inner Ethernet (IEEE 802.3) and IPv4 fields, from the inner frame.
const ETH_DST_LOW: usize = 2; // the last 4 bytes of each MAC address
const ETH_SRC_LOW: usize = 8;
const ETH_TYPE: usize = 12;
const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const IP_VER_IHL: usize = ETH_HLEN;
const IP_FLG_OFF: usize = ETH_HLEN + 6;
const IP_PROTOCOL: usize = ETH_HLEN + 9;
const IP_SRC: usize = ETH_HLEN + 12;
const IP_DST: usize = ETH_HLEN + 16;
const IP_MIN_HLEN: usize = 20;
/// MF and the fragment offset.
const IP_FRAGMENT: u16 = 0x3fff;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The steering key of an inner Ethernet frame (module docs, the table).
/// Symmetric: swapping source and destination (MACs, addresses, ports)
/// gives the same key. Also a good choice of VXLAN send socket
/// ([`super::udp::UdpTunnelQueue::send_batch`]'s `pool_index`). Never
/// panics, never allocates.
#[inline]
pub fn inner_flow_hash(f: &[u8]) -> u32 {
    if f.len() < ETH_HLEN {
        return 0;
    }
    if be16(f, ETH_TYPE) != ETHERTYPE_IPV4 {
        return be32(f, ETH_DST_LOW).wrapping_add(be32(f, ETH_SRC_LOW));
    }
    if f.len() < ETH_HLEN + IP_MIN_HLEN {
        return 0;
    }
    let base = be32(f, IP_SRC).wrapping_add(be32(f, IP_DST));
    if be16(f, IP_FLG_OFF) & IP_FRAGMENT != 0 {
        return base;
    }
    let ihl = usize::from(f[IP_VER_IHL] & 0xf) * 4;
    if ihl < IP_MIN_HLEN || !matches!(f[IP_PROTOCOL], PROTO_TCP | PROTO_UDP) {
        return base;
    }
    let l4 = ETH_HLEN + ihl;
    if f.len() < l4 + 4 {
        return base;
    }
    base.wrapping_add(u32::from(be16(f, l4))).wrapping_add(u32::from(be16(f, l4 + 2)))
}

/// The steering key of a packet as a raw GRE socket receives it (from the
/// outer IPv4 header): the reference for [`filter_program`]. The worker is
/// `worker_for(steering_hash(p), workers)`. Never panics, never allocates.
#[inline]
pub fn steering_hash(p: &[u8]) -> u32 {
    let Some(&ver_ihl) = p.first() else { return 0 };
    let g = usize::from(ver_ihl & 0xf) * 4;
    if p.len() < g + GRE_BASE_LEN || be16(p, g + GRE_PROTOCOL) != PROTO_TEB {
        return 0;
    }
    let flags = p[g + GRE_FLAGS];
    let words = [FLAG_C, FLAG_K, FLAG_S].iter().filter(|&&b| flags & b != 0).count();
    let e = g + GRE_BASE_LEN + 4 * words;
    inner_flow_hash(p.get(e..).unwrap_or(&[]))
}

/// The worker (`0..workers`) whose socket accepts a received GRE packet.
#[inline]
pub fn worker_of(p: &[u8], workers: usize) -> usize {
    worker_for(steering_hash(p), workers)
}

// ---------------------------------------------------------------------------
// The classic BPF program.

/// Jump targets of [`filter_program`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Next,
    Zero,
    Ipv4,
    Ports,
    Base,
    Select,
    Accept,
    Drop,
}

/// A tiny assembler: forward jumps by label, resolved in [`Asm::finish`].
struct Asm {
    prog: Vec<libc::sock_filter>,
    /// (instruction index, jt, jf) of conditional jumps; (index, target,
    /// Next) of `ja`.
    fixups: Vec<(usize, Label, Label)>,
    labels: Vec<(Label, usize)>,
}

impl Asm {
    fn stmt(&mut self, code: u32, k: u32) {
        self.prog.push(libc::sock_filter { code: code as u16, jt: 0, jf: 0, k });
    }
    /// Compare A with `k`.
    fn jump(&mut self, op: u32, k: u32, jt: Label, jf: Label) {
        self.fixups.push((self.prog.len(), jt, jf));
        self.stmt(libc::BPF_JMP | op | libc::BPF_K, k);
    }
    /// Compare A with X.
    fn jump_x(&mut self, op: u32, jt: Label, jf: Label) {
        self.fixups.push((self.prog.len(), jt, jf));
        self.stmt(libc::BPF_JMP | op | libc::BPF_X, 0);
    }
    fn ja(&mut self, to: Label) {
        self.fixups.push((self.prog.len(), to, Label::Next));
        self.stmt(libc::BPF_JMP | libc::BPF_JA, 0);
    }
    fn label(&mut self, l: Label) {
        self.labels.push((l, self.prog.len()));
    }
    fn finish(mut self) -> Vec<libc::sock_filter> {
        let target = |labels: &[(Label, usize)], from: usize, l: Label| -> u32 {
            if l == Label::Next {
                return 0;
            }
            let at = labels.iter().find(|(x, _)| *x == l).map(|&(_, at)| at).expect("label defined");
            assert!(at > from, "cBPF jumps only go forward");
            (at - from - 1) as u32
        };
        for &(i, jt, jf) in &self.fixups {
            let t = target(&self.labels, i, jt);
            let f = target(&self.labels, i, jf);
            let ins = &mut self.prog[i];
            if u32::from(ins.code) == libc::BPF_JMP | libc::BPF_JA {
                ins.k = t;
            } else {
                ins.jt = u8::try_from(t).expect("short jump");
                ins.jf = u8::try_from(f).expect("short jump");
            }
        }
        self.prog
    }
}

// Scratch memory words M[] of the program.
const M_GRE: u32 = 0;
const M_FLAGS: u32 = 1;
const M_ETH: u32 = 2;
const M_TMP: u32 = 3;
const M_BASE: u32 = 4;
const M_L4: u32 = 5;

/// The socket filter of worker `worker` out of `workers`: it computes
/// [`steering_hash`] and accepts the packet whole (returns `u32::MAX`) if
/// the key modulo `workers` is `worker`, and drops it (returns 0)
/// otherwise. Every load is preceded by a length check, so no packet makes
/// it fault. Built once at setup. Panics if `worker >= workers`.
pub fn filter_program(worker: usize, workers: usize) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_IMM, BPF_IND, BPF_JEQ, BPF_JGE, BPF_JSET, BPF_K, BPF_LD, BPF_LDX,
        BPF_LEN, BPF_LSH, BPF_MEM, BPF_MISC, BPF_MOD, BPF_MSH, BPF_RET, BPF_RSH, BPF_ST, BPF_TAX, BPF_TXA, BPF_W,
        BPF_X,
    };
    use Label::*;
    assert!(worker < workers, "worker {worker} of {workers}");
    let (worker, workers) = (worker as u32, workers as u32);
    let mut a = Asm { prog: Vec::with_capacity(80), fixups: Vec::new(), labels: Vec::new() };
    let len = |a: &mut Asm| a.stmt(BPF_LD | BPF_W | BPF_LEN, 0);
    let tax = |a: &mut Asm| a.stmt(BPF_MISC | BPF_TAX, 0);
    let add_x = |a: &mut Asm| a.stmt(BPF_ALU | BPF_ADD | BPF_X, 0);

    // An empty packet would make the first load fault.
    len(&mut a);
    a.jump(BPF_JEQ, 0, Zero, Next);
    // M[gre] = X = 4 * outer IHL; the GRE header needs 4 bytes.
    a.stmt(BPF_LDX | BPF_B | BPF_MSH, 0);
    a.stmt(BPF_MISC | BPF_TXA, 0);
    a.stmt(BPF_ST, M_GRE);
    a.stmt(BPF_ALU | BPF_ADD | BPF_K, GRE_BASE_LEN as u32);
    tax(&mut a);
    len(&mut a);
    a.jump_x(BPF_JGE, Next, Zero);
    a.stmt(BPF_LDX | BPF_MEM, M_GRE);
    a.stmt(BPF_LD | BPF_H | BPF_IND, GRE_PROTOCOL as u32);
    a.jump(BPF_JEQ, u32::from(PROTO_TEB), Next, Zero);
    // M[eth] = gre + 4 + 4 * (C + K + S): X = 4C, then 4C + 4K, then all.
    a.stmt(BPF_LD | BPF_B | BPF_IND, GRE_FLAGS as u32);
    a.stmt(BPF_ST, M_FLAGS);
    a.stmt(BPF_ALU | BPF_AND | BPF_K, u32::from(FLAG_C));
    a.stmt(BPF_ALU | BPF_RSH | BPF_K, 5);
    tax(&mut a);
    a.stmt(BPF_LD | BPF_MEM, M_FLAGS);
    a.stmt(BPF_ALU | BPF_AND | BPF_K, u32::from(FLAG_K));
    a.stmt(BPF_ALU | BPF_RSH | BPF_K, 3);
    add_x(&mut a);
    tax(&mut a);
    a.stmt(BPF_LD | BPF_MEM, M_FLAGS);
    a.stmt(BPF_ALU | BPF_AND | BPF_K, u32::from(FLAG_S));
    a.stmt(BPF_ALU | BPF_RSH | BPF_K, 2);
    add_x(&mut a);
    tax(&mut a);
    a.stmt(BPF_LD | BPF_MEM, M_GRE);
    add_x(&mut a);
    a.stmt(BPF_ALU | BPF_ADD | BPF_K, GRE_BASE_LEN as u32);
    a.stmt(BPF_ST, M_ETH);
    // The inner Ethernet header must be whole.
    a.stmt(BPF_ALU | BPF_ADD | BPF_K, ETH_HLEN as u32);
    tax(&mut a);
    len(&mut a);
    a.jump_x(BPF_JGE, Next, Zero);
    a.stmt(BPF_LDX | BPF_MEM, M_ETH);
    a.stmt(BPF_LD | BPF_H | BPF_IND, ETH_TYPE as u32);
    a.jump(BPF_JEQ, u32::from(ETHERTYPE_IPV4), Ipv4, Next);
    // Not IPv4: the low words of the MAC addresses.
    a.stmt(BPF_LD | BPF_W | BPF_IND, ETH_DST_LOW as u32);
    a.stmt(BPF_ST, M_TMP);
    a.stmt(BPF_LD | BPF_W | BPF_IND, ETH_SRC_LOW as u32);
    a.stmt(BPF_LDX | BPF_MEM, M_TMP);
    add_x(&mut a);
    a.ja(Select);

    // IPv4: the header up to the addresses must be there.
    a.label(Ipv4);
    a.stmt(BPF_LD | BPF_MEM, M_ETH);
    a.stmt(BPF_ALU | BPF_ADD | BPF_K, (ETH_HLEN + IP_MIN_HLEN) as u32);
    tax(&mut a);
    len(&mut a);
    a.jump_x(BPF_JGE, Next, Zero);
    a.stmt(BPF_LDX | BPF_MEM, M_ETH);
    a.stmt(BPF_LD | BPF_W | BPF_IND, IP_SRC as u32);
    a.stmt(BPF_ST, M_TMP);
    a.stmt(BPF_LD | BPF_W | BPF_IND, IP_DST as u32);
    a.stmt(BPF_LDX | BPF_MEM, M_TMP);
    add_x(&mut a);
    a.stmt(BPF_ST, M_BASE);
    a.stmt(BPF_LDX | BPF_MEM, M_ETH);
    a.stmt(BPF_LD | BPF_H | BPF_IND, IP_FLG_OFF as u32);
    a.jump(BPF_JSET, u32::from(IP_FRAGMENT), Base, Next);
    // M[l4] = eth + 14 + 4 * IHL, if IHL is at least 5.
    a.stmt(BPF_LD | BPF_B | BPF_IND, IP_VER_IHL as u32);
    a.stmt(BPF_ALU | BPF_AND | BPF_K, 0x0f);
    a.stmt(BPF_ALU | BPF_LSH | BPF_K, 2);
    a.jump(BPF_JGE, IP_MIN_HLEN as u32, Next, Base);
    add_x(&mut a);
    a.stmt(BPF_ALU | BPF_ADD | BPF_K, ETH_HLEN as u32);
    a.stmt(BPF_ST, M_L4);
    a.stmt(BPF_LD | BPF_B | BPF_IND, IP_PROTOCOL as u32);
    a.jump(BPF_JEQ, u32::from(PROTO_TCP), Ports, Next);
    a.jump(BPF_JEQ, u32::from(PROTO_UDP), Ports, Base);
    // TCP or UDP: both ports must be there.
    a.label(Ports);
    a.stmt(BPF_LD | BPF_MEM, M_L4);
    a.stmt(BPF_ALU | BPF_ADD | BPF_K, 4);
    tax(&mut a);
    len(&mut a);
    a.jump_x(BPF_JGE, Next, Base);
    a.stmt(BPF_LDX | BPF_MEM, M_L4);
    a.stmt(BPF_LD | BPF_H | BPF_IND, 0);
    a.stmt(BPF_ST, M_TMP);
    a.stmt(BPF_LD | BPF_H | BPF_IND, 2);
    a.stmt(BPF_LDX | BPF_MEM, M_TMP);
    add_x(&mut a);
    a.stmt(BPF_LDX | BPF_MEM, M_BASE);
    add_x(&mut a);
    a.ja(Select);

    a.label(Base);
    a.stmt(BPF_LD | BPF_MEM, M_BASE);
    a.ja(Select);
    a.label(Zero);
    a.stmt(BPF_LD | BPF_IMM, 0);
    // A = key: is it this worker's?
    a.label(Select);
    a.stmt(BPF_ALU | BPF_MOD | BPF_K, workers);
    a.jump(BPF_JEQ, worker, Accept, Drop);
    a.label(Accept);
    a.stmt(BPF_RET | BPF_K, u32::MAX);
    a.label(Drop);
    a.stmt(BPF_RET | BPF_K, 0);
    a.finish()
}

// ---------------------------------------------------------------------------
// The sockets.

/// Per-call scratch, allocated once per queue.
struct Scratch {
    rx_hdrs: [libc::mmsghdr; MAX_RECV_BATCH],
    rx_iovs: [libc::iovec; MAX_RECV_BATCH],
    rx_addrs: [libc::sockaddr_in; MAX_RECV_BATCH],
    tx_hdrs: [libc::mmsghdr; MAX_SEND_BATCH],
    tx_addr: libc::sockaddr_in,
}

// SAFETY: the raw pointers inside the arrays are scratch values. Every call
// that uses them takes `&mut GreQueue`, rewrites them from borrows it holds
// for the duration of the call before the kernel reads them, and no code
// dereferences them outside such a call; so moving the queue to another
// thread, or sharing `&GreQueue` (which cannot reach `Scratch`), creates no
// aliased access.
unsafe impl Send for Scratch {}
// SAFETY: see `Send` above; `&Scratch` gives access to nothing.
unsafe impl Sync for Scratch {}

impl Scratch {
    fn new() -> Box<Scratch> {
        // SAFETY: mmsghdr, iovec and sockaddr_in are plain C structs of
        // integers and raw pointers, for which all-zero bytes (null
        // pointers, zero lengths) are valid values.
        Box::new(unsafe { std::mem::zeroed() })
    }
}

/// One worker's raw GRE socket.
pub struct GreQueue {
    fd: OwnedFd,
    local: Ipv4Addr,
    worker: usize,
    workers: usize,
    scratch: Box<Scratch>,
}

impl std::fmt::Debug for GreQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GreQueue")
            .field("fd", &self.fd)
            .field("local", &self.local)
            .field("worker", &self.worker)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// Read and discard everything queued on `fd` (non-blocking).
fn drain(fd: &OwnedFd) -> io::Result<()> {
    let mut sink = [0u8; 1];
    loop {
        // SAFETY: fd is open; sink is valid for writes of its length. With
        // MSG_TRUNC the kernel still writes at most that many bytes.
        let n = unsafe {
            libc::recv(fd.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len(), libc::MSG_DONTWAIT | libc::MSG_TRUNC)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
    }
}

/// Open `workers` raw GRE sockets bound to `underlay` (`0.0.0.0`: any local
/// address): `queues[i]` receives the GRE packets to that address whose
/// [`worker_of`] is `i`, and sends from it. Needs CAP_NET_RAW.
pub fn open_gre(underlay: Ipv4Addr, workers: usize) -> Result<Vec<GreQueue>, GreError> {
    if workers == 0 || workers > MAX_SOCKETS {
        return Err(GreError::Workers(workers));
    }
    let opt = |option: &'static str| move |source| GreError::SetOption { option, source };
    let mut queues = Vec::with_capacity(workers);
    for worker in 0..workers {
        let fd = socket(libc::SOCK_RAW, libc::IPPROTO_GRE).map_err(GreError::Socket)?;
        attach_filter(&fd, &DROP_ALL).map_err(opt("SO_ATTACH_FILTER"))?;
        set_buffer(&fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF).map_err(opt("SO_RCVBUF"))?;
        set_buffer(&fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF).map_err(opt("SO_SNDBUF"))?;
        bind(&fd, SocketAddrV4::new(underlay, 0)).map_err(|source| GreError::Bind { addr: underlay, source })?;
        drain(&fd).map_err(GreError::Drain)?;
        // SO_ATTACH_FILTER replaces the drop-all filter in one step.
        attach_filter(&fd, &filter_program(worker, workers)).map_err(opt("SO_ATTACH_FILTER"))?;
        queues.push(GreQueue { fd, local: underlay, worker, workers, scratch: Scratch::new() });
    }
    Ok(queues)
}

impl GreQueue {
    /// The underlay address the socket is bound to.
    pub fn local_addr(&self) -> Ipv4Addr {
        self.local
    }

    /// This socket's worker index, and the number of workers.
    pub fn worker(&self) -> (usize, usize) {
        (self.worker, self.workers)
    }

    /// Read up to [`MAX_RECV_BATCH`] packets with one `recvmmsg`: packet *i*
    /// goes to the *i*-th buffer of `bufs` (outer IPv4 header first) and is
    /// described by `meta[i]`. Returns how many were read; `WouldBlock` when
    /// none is waiting. An error met after the first packet is returned by
    /// the next call, as `recvmmsg` does.
    #[inline]
    pub fn recv_batch<'a>(
        &mut self,
        bufs: impl IntoIterator<Item = &'a mut [u8]>,
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let Scratch { rx_hdrs, rx_iovs, rx_addrs, .. } = &mut *self.scratch;
        // The buffers are kept to read each packet's IHL afterwards.
        let mut held: [&mut [u8]; MAX_RECV_BATCH] = Default::default();
        let mut n = 0;
        for buf in bufs.into_iter().take(meta.len().min(MAX_RECV_BATCH)) {
            rx_iovs[n] = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            held[n] = buf;
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let (iov, addr) = (rx_iovs.as_mut_ptr(), rx_addrs.as_mut_ptr());
        for (i, h) in rx_hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_name = addr.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: fd is open for the lifetime of self. rx_hdrs[..n] point to
        // rx_iovs[i] and rx_addrs[i] (live in self.scratch, exclusively
        // borrowed), and rx_iovs[i] to the caller's buffers, exclusively
        // borrowed for 'a, longer than this call (held only keeps them for
        // reading afterwards). The kernel writes at most iov_len bytes to
        // each and namelen bytes to each address.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                rx_hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = r as usize;
        for (i, m) in meta.iter_mut().enumerate().take(r) {
            let len = (rx_hdrs[i].msg_len as usize).min(held[i].len());
            let ihl = held[i][..len].first().map_or(0, |b| usize::from(b & 0xf) * 4);
            *m = RecvMeta {
                len,
                src: *from_sockaddr(&rx_addrs[i]).ip(),
                gre_offset: ihl.min(len),
                truncated: rx_hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
        }
        Ok(r)
    }

    /// Send `msgs` to the tunnel endpoint `dst`, one GRE packet each, with
    /// as few `sendmmsg` calls as it takes ([`MAX_SEND_BATCH`] per call).
    /// Each message is a scatter list whose concatenation is the GRE packet,
    /// usually `[GRE header, inner frame]`; the kernel adds the outer IPv4
    /// header. Failures are reported as for
    /// [`super::udp::UdpTunnelQueue::send_batch`].
    #[inline]
    pub fn send_batch(&mut self, dst: Ipv4Addr, msgs: &[&[IoSlice<'_>]]) -> Sent {
        let s = &mut *self.scratch;
        s.tx_addr = sockaddr(SocketAddrV4::new(dst, 0));
        send_msgs(self.fd.as_fd(), &mut s.tx_hdrs, &s.tx_addr, msgs)
    }
}

impl AsRawFd for GreQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for GreQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::steer::tests::Rng;
    use crate::port::udp::tests::{
        ipv4_packets, mac, run, wait_readable, with_two_ns, Capture, DEV_A, DEV_B, IP_A, IP_B, MAC_A, MAC_B, WAIT,
    };
    use crate::wire::gre::Protocol;
    use crate::wire::{GrePacket, IpProtocol, Ipv4Packet};
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    use std::process::Command;
    use std::time::Duration;

    // -----------------------------------------------------------------------
    // Packet builders.

    const C_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x58, 0x00, 0x02];
    const D_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x58, 0x00, 0x03];

    macro_rules! build {
        ($b:expr, $payload:expr) => {{
            let b = $b;
            let payload: &[u8] = $payload;
            let mut v = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut v, payload).unwrap();
            v
        }};
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        build!(PacketBuilder::ethernet2(C_MAC, D_MAC).ipv4(src, dst, 64).tcp(sport, dport, 7, 1000).syn(), b"")
    }
    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        build!(PacketBuilder::ethernet2(C_MAC, D_MAC).ipv4(src, dst, 64).udp(sport, dport), b"tapnet over gre")
    }
    fn ping(src: [u8; 4], dst: [u8; 4], id: u16) -> Vec<u8> {
        build!(PacketBuilder::ethernet2(C_MAC, D_MAC).ipv4(src, dst, 64).icmpv4_echo_request(id, 1), b"abcdefgh")
    }
    fn arp() -> Vec<u8> {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&C_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&C_MAC);
        f.extend_from_slice(&[10, 88, 0, 2]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 88, 0, 3]);
        f
    }
    fn ipv6() -> Vec<u8> {
        build!(PacketBuilder::ethernet2(C_MAC, D_MAC).ipv6([0xfd; 16], [0xfe; 16], 64).udp(1, 2), b"v6")
    }
    /// Set the fragment fields of the inner IPv4 header.
    fn fragment(frame: &[u8], offset_bytes: u16, more: bool) -> Vec<u8> {
        let mut v = frame.to_vec();
        let mut p = Ipv4Packet::new_unchecked(&mut v[14..]);
        p.clear_flags();
        p.set_more_frags(more);
        p.set_frag_offset(offset_bytes);
        p.fill_checksum();
        v
    }
    /// Insert `words` 32-bit words of NOP options into the IPv4 header of
    /// an Ethernet frame, fixing IHL, Total Length and the checksum.
    fn inner_options(frame: &[u8], words: usize) -> Vec<u8> {
        let mut v = frame.to_vec();
        let hlen = usize::from(v[14] & 0xf) * 4;
        v.splice(14 + hlen..14 + hlen, std::iter::repeat_n(1u8, 4 * words));
        let mut p = Ipv4Packet::new_unchecked(&mut v[14..]);
        p.set_header_len(hlen + 4 * words);
        let total = p.total_len() + 4 * words as u16;
        p.set_total_len(total);
        p.fill_checksum();
        v
    }

    /// Which optional GRE words to write.
    #[derive(Clone, Copy, Debug)]
    struct Opts {
        csum: bool,
        key: Option<u32>,
        seq: Option<u32>,
    }
    const KEYED: Opts = Opts { csum: false, key: Some(0x0001_e240), seq: None };

    fn gre(o: Opts, proto: u16, inner: &[u8]) -> Vec<u8> {
        let hl = 4 + 4 * (usize::from(o.csum) + usize::from(o.key.is_some()) + usize::from(o.seq.is_some()));
        let mut v = vec![0xa5u8; hl + inner.len()];
        let mut p = GrePacket::new_unchecked(&mut v[..]);
        p.set_flags(o.csum, o.key.is_some(), o.seq.is_some());
        p.set_protocol(Protocol::from(proto));
        if o.csum {
            p.set_checksum(0);
        }
        if let Some(k) = o.key {
            p.set_key(k);
        }
        if let Some(s) = o.seq {
            p.set_seq_number(s);
        }
        p.payload_mut().copy_from_slice(inner);
        p.fill_checksum();
        assert_eq!(p.header_len(), hl);
        v
    }

    /// An outer IPv4 packet (protocol 47) with `words` words of NOP
    /// options.
    fn outer(src: Ipv4Addr, dst: Ipv4Addr, words: usize, payload: &[u8]) -> Vec<u8> {
        let hl = 20 + 4 * words;
        let mut v = vec![1u8; hl + payload.len()];
        let mut p = Ipv4Packet::new_unchecked(&mut v[..]);
        p.set_version(4);
        p.set_header_len(hl);
        p.set_dscp(0);
        p.set_ecn(0);
        p.set_total_len((hl + payload.len()) as u16);
        p.set_ident(0x4747);
        p.clear_flags();
        p.set_dont_frag(true);
        p.set_frag_offset(0);
        p.set_ttl(64);
        p.set_protocol(IpProtocol::Gre);
        p.set_src_addr(src);
        p.set_dst_addr(dst);
        p.payload_mut().copy_from_slice(payload);
        p.fill_checksum();
        v
    }

    const A: [u8; 4] = [10, 88, 0, 2];
    const B: [u8; 4] = [10, 88, 0, 3];

    fn sum(words: &[u32]) -> u32 {
        words.iter().fold(0u32, |s, &w| s.wrapping_add(w))
    }
    fn ip(a: [u8; 4]) -> u32 {
        u32::from_be_bytes(a)
    }
    fn tunnel(inner: &[u8]) -> Vec<u8> {
        outer(IP_A, IP_B, 0, &gre(KEYED, PROTO_TEB, inner))
    }

    /// Received packets (from the outer IPv4 header) with the key each must
    /// get, worked out by hand.
    fn cases() -> Vec<(&'static str, Vec<u8>, u32)> {
        let tcp_key = sum(&[ip(A), ip(B), 40000, 443]);
        let base = sum(&[ip(A), ip(B)]);
        let macs = sum(&[0x0a58_0003, 0x0a58_0002]);
        let t = tcp(A, B, 40000, 443);
        let mut vlan = t.clone();
        vlan.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        let mut ihl4 = udp(A, B, 53, 1);
        ihl4[14] = 0x44;
        let mut all = vec![
            ("tcp, key", tunnel(&t), tcp_key),
            ("tcp, reversed", tunnel(&tcp(B, A, 443, 40000)), tcp_key),
            ("udp", tunnel(&udp(A, B, 53, 5353)), sum(&[ip(A), ip(B), 53, 5353])),
            (
                "udp, extreme addresses wrap",
                tunnel(&udp([255; 4], [255; 4], 0xffff, 2)),
                sum(&[0xffff_fffe, 0xffff, 2]),
            ),
            ("tcp, inner IP options", tunnel(&inner_options(&t, 3)), tcp_key),
            ("icmp echo", tunnel(&ping(A, B, 77)), base),
            ("first fragment", tunnel(&fragment(&udp(A, B, 1, 2), 0, true)), base),
            ("later fragment", tunnel(&fragment(&udp(A, B, 1, 2), 1480, false)), base),
            ("inner ihl 4", tunnel(&ihl4), base),
            ("arp", tunnel(&arp()), sum(&[0xffff_ffff, 0x0a58_0002])),
            ("ipv6", tunnel(&ipv6()), macs),
            ("802.1Q tagged", tunnel(&vlan), macs),
            (
                "no optional word",
                outer(IP_A, IP_B, 0, &gre(Opts { csum: false, key: None, seq: None }, PROTO_TEB, &t)),
                tcp_key,
            ),
            ("checksum", outer(IP_A, IP_B, 0, &gre(Opts { csum: true, key: None, seq: None }, PROTO_TEB, &t)), tcp_key),
            (
                "sequence",
                outer(IP_A, IP_B, 0, &gre(Opts { csum: false, key: None, seq: Some(9) }, PROTO_TEB, &t)),
                tcp_key,
            ),
            (
                "checksum, key and sequence",
                outer(IP_A, IP_B, 0, &gre(Opts { csum: true, key: Some(1), seq: Some(2) }, PROTO_TEB, &t)),
                tcp_key,
            ),
            ("outer IP options", outer(IP_A, IP_B, 2, &gre(KEYED, PROTO_TEB, &t)), tcp_key),
            (
                "outer IP options, checksum",
                outer(IP_A, IP_B, 10, &gre(Opts { csum: true, key: Some(3), seq: None }, PROTO_TEB, &t)),
                tcp_key,
            ),
            ("protocol IPv4, not TEB", outer(IP_A, IP_B, 0, &gre(KEYED, 0x0800, &t[14..])), 0),
            ("inner frame cut inside the ports", tunnel(&t[..14 + 20 + 3]), base),
            ("inner IPv4 cut before the addresses", tunnel(&t[..14 + 19]), 0),
            ("inner Ethernet header cut", tunnel(&t[..13]), 0),
            ("no inner frame", tunnel(&[]), 0),
            ("GRE header cut", outer(IP_A, IP_B, 0, &gre(KEYED, PROTO_TEB, &t))[..23].to_vec(), 0),
            ("outer header only", outer(IP_A, IP_B, 0, &[]), 0),
            ("empty", Vec::new(), 0),
        ];
        // A GRE version 1 (PPTP) header is not ours, but still gets a key.
        let mut v1 = tunnel(&t);
        v1[21] |= 1;
        all.push(("version 1", v1, tcp_key));
        all
    }

    #[test]
    fn steering_hash_on_real_packets() {
        for (name, p, want) in cases() {
            assert_eq!(steering_hash(&p), want, "{name}");
        }
    }

    #[test]
    fn inner_flow_hash_is_symmetric_and_agrees_with_etherparse() {
        let mut rng = Rng(0x6e5);
        for i in 0..3000 {
            let a = (rng.next() as u32).to_be_bytes();
            let b = (rng.next() as u32).to_be_bytes();
            let (p1, p2) = (rng.next() as u16, rng.next() as u16);
            let (f, r) = match i % 3 {
                0 => (tcp(a, b, p1, p2), tcp(b, a, p2, p1)),
                1 => (udp(a, b, p1, p2), udp(b, a, p2, p1)),
                _ => (ping(a, b, p1), ping(b, a, p1)),
            };
            let f = if i % 5 == 0 { inner_options(&f, rng.below(11)) } else { f };
            assert_eq!(inner_flow_hash(&f), inner_flow_hash(&r), "{f:02x?}");
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(NetSlice::Ipv4(ip4)) = &p.net else { panic!() };
            let h = ip4.header();
            let base = u32::from(h.source_addr()).wrapping_add(u32::from(h.destination_addr()));
            let want = match &p.transport {
                Some(TransportSlice::Tcp(t)) => {
                    base.wrapping_add(u32::from(t.source_port())).wrapping_add(u32::from(t.destination_port()))
                }
                Some(TransportSlice::Udp(u)) => {
                    base.wrapping_add(u32::from(u.source_port())).wrapping_add(u32::from(u.destination_port()))
                }
                _ => base,
            };
            assert_eq!(inner_flow_hash(&f), want, "{f:02x?}");
            assert_eq!(steering_hash(&tunnel(&f)), want);
        }
        assert_eq!(inner_flow_hash(&arp()), inner_flow_hash(&arp()));
    }

    // -----------------------------------------------------------------------
    // A cBPF interpreter with the semantics of a socket filter on a raw IPv4
    // socket: the packet starts at the outer IPv4 header, `len` is its
    // length, and a load beyond the end ends the program with 0.

    fn interpret(prog: &[libc::sock_filter], p: &[u8]) -> u32 {
        use libc::*;
        let load = |off: u32, size: usize| -> Option<u32> {
            let off = off as usize;
            let b = p.get(off..off.checked_add(size)?)?;
            Some(b.iter().fold(0u32, |acc, &x| acc << 8 | u32::from(x)))
        };
        let size = |code: u32| match code & 0x18 {
            BPF_W => 4,
            BPF_H => 2,
            BPF_B => 1,
            _ => panic!("size {code:#x}"),
        };
        let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; BPF_MEMWORDS as usize]);
        let mut pc = 0usize;
        loop {
            let ins = prog[pc];
            pc += 1;
            let (code, k) = (u32::from(ins.code), ins.k);
            let src = if code & BPF_X != 0 { x } else { k };
            match code & 0x07 {
                BPF_LD => match code & 0xe0 {
                    BPF_ABS => match load(k, size(code)) {
                        Some(v) => a = v,
                        None => return 0,
                    },
                    BPF_IND => match load(x.wrapping_add(k), size(code)) {
                        Some(v) => a = v,
                        None => return 0,
                    },
                    BPF_LEN => a = p.len() as u32,
                    BPF_IMM => a = k,
                    BPF_MEM => a = m[k as usize],
                    _ => panic!("ld {code:#x}"),
                },
                BPF_LDX => match code & 0xe0 {
                    BPF_MSH => match load(k, 1) {
                        Some(v) => x = (v & 0xf) << 2,
                        None => return 0,
                    },
                    BPF_MEM => x = m[k as usize],
                    BPF_IMM => x = k,
                    BPF_LEN => x = p.len() as u32,
                    _ => panic!("ldx {code:#x}"),
                },
                BPF_ST => m[k as usize] = a,
                BPF_STX => m[k as usize] = x,
                BPF_ALU => {
                    a = match code & 0xf0 {
                        BPF_ADD => a.wrapping_add(src),
                        BPF_SUB => a.wrapping_sub(src),
                        BPF_MUL => a.wrapping_mul(src),
                        BPF_AND => a & src,
                        BPF_OR => a | src,
                        BPF_LSH => a.wrapping_shl(src),
                        BPF_RSH => a.wrapping_shr(src),
                        BPF_MOD if src == 0 => return 0,
                        BPF_MOD => a % src,
                        op => panic!("alu {op:#x}"),
                    }
                }
                BPF_JMP => {
                    if code & 0xf0 == BPF_JA {
                        pc += k as usize;
                        continue;
                    }
                    let taken = match code & 0xf0 {
                        BPF_JEQ => a == src,
                        BPF_JGT => a > src,
                        BPF_JGE => a >= src,
                        BPF_JSET => a & src != 0,
                        op => panic!("jmp {op:#x}"),
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                BPF_RET => return if code & 0x18 == BPF_A { a } else { k },
                BPF_MISC => match code & 0xf8 {
                    BPF_TAX => x = a,
                    BPF_TXA => a = x,
                    op => panic!("misc {op:#x}"),
                },
                _ => unreachable!(),
            }
        }
    }

    /// The workers whose filter accepts `p`, and checks that acceptance
    /// keeps the packet whole.
    fn accepted_by(progs: &[Vec<libc::sock_filter>], p: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        for (w, prog) in progs.iter().enumerate() {
            match interpret(prog, p) {
                0 => {}
                u32::MAX => out.push(w),
                other => panic!("worker {w} returned {other}: keeps part of the packet"),
            }
        }
        out
    }

    fn programs(n: usize) -> Vec<Vec<libc::sock_filter>> {
        (0..n).map(|w| filter_program(w, n)).collect()
    }

    #[test]
    fn filter_program_is_total_on_real_packets_and_every_truncation() {
        let mut checked = 0;
        for n in 1..=4 {
            let progs = programs(n);
            for (name, p, want) in cases() {
                assert_eq!(accepted_by(&progs, &p), [worker_for(want, n)], "{name}, {n} workers");
                for cut in 0..p.len() {
                    let q = &p[..cut];
                    assert_eq!(accepted_by(&progs, q), [worker_of(q, n)], "{name} cut at {cut}, {n} workers");
                    checked += 1;
                }
            }
        }
        assert!(checked > 5000, "{checked}");
    }

    #[test]
    fn filter_program_is_total_on_mutated_and_random_packets() {
        let seeds: Vec<Vec<u8>> = cases().into_iter().map(|(_, p, _)| p).filter(|p| p.len() > 24).collect();
        let mut rng = Rng(0x0047_0047);
        let all: Vec<Vec<Vec<libc::sock_filter>>> = (1..=5).map(programs).collect();
        let mut keyed = 0;
        for i in 0..40_000 {
            let mut p = if i % 5 == 0 {
                let mut p: Vec<u8> = (0..rng.below(140)).map(|_| rng.next() as u8).collect();
                // Mostly a plausible IHL and the TEB protocol.
                if p.len() > 24 && rng.below(4) != 0 {
                    p[0] = 0x45 + rng.below(3) as u8;
                    let g = usize::from(p[0] & 0xf) * 4;
                    if let Some(proto) = p.get_mut(g + 2..g + 4) {
                        proto.copy_from_slice(&PROTO_TEB.to_be_bytes());
                    }
                }
                p
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            for _ in 0..rng.below(4) {
                if !p.is_empty() {
                    let at = rng.below(p.len().min(100));
                    p[at] = rng.next() as u8;
                }
            }
            if rng.below(3) == 0 {
                p.truncate(rng.below(p.len() + 1));
            }
            let n = 1 + rng.below(5);
            keyed += usize::from(steering_hash(&p) != 0);
            assert_eq!(accepted_by(&all[n - 1], &p), [worker_of(&p, n)], "iteration {i}, {n} workers: {p:02x?}");
        }
        assert!(keyed > 10_000, "too few packets got a non-zero key: {keyed}");
    }

    #[test]
    fn filter_program_is_well_formed() {
        for (w, n) in [(0, 1), (1, 2), (2, 3), (255, 256)] {
            let prog = filter_program(w, n);
            assert!(prog.len() < 100, "{}", prog.len());
            for (pc, ins) in prog.iter().enumerate() {
                let code = u32::from(ins.code);
                if code & 0x07 == libc::BPF_JMP {
                    let far = if code == libc::BPF_JMP | libc::BPF_JA {
                        ins.k as usize
                    } else {
                        usize::from(ins.jt.max(ins.jf))
                    };
                    assert!(pc + 1 + far < prog.len(), "pc {pc} jumps out of the program");
                }
                if matches!(code & 0x07, libc::BPF_ST | libc::BPF_STX) || code & 0xe0 == libc::BPF_MEM {
                    assert!(ins.k < libc::BPF_MEMWORDS as u32);
                }
                if code & 0x07 == libc::BPF_LD && code & 0xe0 == libc::BPF_ABS {
                    panic!("pc {pc}: an absolute load, whose bounds the program does not check");
                }
            }
            assert_eq!(u32::from(prog[prog.len() - 1].code) & 0x07, libc::BPF_RET);
        }
    }

    /// The kernel's cBPF checker accepts every program. Attaching a socket
    /// filter to a UDP socket needs no privilege.
    #[test]
    fn kernel_accepts_the_programs() {
        let fd = socket(libc::SOCK_DGRAM, 0).unwrap();
        for n in [1, 2, 3, 7, 64, 256] {
            for w in [0, n / 2, n - 1] {
                attach_filter(&fd, &filter_program(w, n)).unwrap_or_else(|e| panic!("{w} of {n}: {e}"));
            }
        }
    }

    #[test]
    #[should_panic(expected = "worker 2 of 2")]
    fn filter_program_checks_the_worker() {
        filter_program(2, 2);
    }

    #[test]
    fn recv_meta_ranges() {
        let m = RecvMeta { len: 100, src: Ipv4Addr::LOCALHOST, gre_offset: 24, truncated: false };
        assert_eq!((m.gre_len(), m.gre_range()), (76, 24..100));
        let odd = RecvMeta { len: 10, gre_offset: 24, ..m };
        assert_eq!((odd.gre_len(), odd.gre_range()), (0, 10..10));
        assert_eq!(RecvMeta::default().gre_range(), 0..0);
    }

    #[test]
    fn open_checks_the_worker_count() {
        assert!(matches!(open_gre(Ipv4Addr::LOCALHOST, 0), Err(GreError::Workers(0))));
        assert!(matches!(open_gre(Ipv4Addr::LOCALHOST, MAX_SOCKETS + 1), Err(GreError::Workers(_))));
    }

    // -----------------------------------------------------------------------
    // Privileged: two namespaces joined by a veth pair ("a" sends, "b" has
    // the sockets unless said otherwise).

    /// An Ethernet frame from "a" to "b" around an outer IPv4 packet.
    fn on_wire(ip: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + ip.len());
        f.extend_from_slice(&MAC_B);
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(ip);
        f
    }

    /// Every packet waiting on `q`, with its metadata.
    fn drain_queue(q: &mut GreQueue, quiet: Duration) -> Vec<(RecvMeta, Vec<u8>)> {
        let mut out = Vec::new();
        let mut bufs = vec![vec![0u8; 4096]; 8];
        let mut meta = [RecvMeta::default(); 8];
        while wait_readable(q.as_raw_fd(), quiet) {
            match q.recv_batch(bufs.iter_mut().map(Vec::as_mut_slice), &mut meta) {
                Ok(n) => out.extend(meta[..n].iter().zip(&bufs).map(|(m, b)| (*m, b[..m.len].to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv_batch: {e}"),
            }
        }
        out
    }

    fn raw_gre_socket(prog: &[libc::sock_filter]) -> OwnedFd {
        let fd = socket(libc::SOCK_RAW, libc::IPPROTO_GRE).unwrap();
        attach_filter(&fd, prog).unwrap();
        fd
    }

    /// What a raw IPv4 socket's filter sees at offset 0: the probe returns
    /// byte 0 as the number of bytes to keep, so the received length is the
    /// version/IHL byte (0x45 = 69, 0x46 = 70), not a MAC or GRE byte.
    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn filter_sees_the_outer_ipv4_header() {
        with_two_ns(|ns| {
            ns.enter_b();
            use libc::{BPF_A, BPF_ABS, BPF_B, BPF_LD, BPF_RET};
            let ins = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
            let probe = raw_gre_socket(&[ins(BPF_LD | BPF_B | BPF_ABS, 0), ins(BPF_RET | BPF_A, 0)]);
            ns.enter_a();
            let inject = Capture::open(DEV_A);
            let t = tcp(A, B, 1, 2);
            for (words, want) in [(0, 69), (1, 70)] {
                let p = outer(IP_A, IP_B, words, &gre(KEYED, PROTO_TEB, &t));
                assert!(p.len() > want);
                inject.send(&on_wire(&p));
                assert!(wait_readable(probe.as_raw_fd(), WAIT), "the probe got nothing");
                let mut buf = [0u8; 2048];
                // SAFETY: probe is open; buf is valid for writes of its length.
                let n = unsafe { libc::recv(probe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                assert_eq!(n, want as isize, "kept as many bytes as byte 0 says");
                assert_eq!(buf[..want], p[..want]);
            }
        });
    }

    fn steers_like_worker_of(n: usize) {
        with_two_ns(move |ns| {
            ns.enter_b();
            let mut qs = open_gre(IP_B, n).unwrap();
            ns.enter_a();
            let inject = Capture::open(DEV_A);
            let mut rng = Rng(0x5eed + n as u64);
            let mut sent = Vec::new();
            for i in 0..300usize {
                let a = [10, 88, rng.next() as u8, rng.next() as u8];
                let b = [10, 89, rng.next() as u8, rng.next() as u8];
                let (p1, p2) = (rng.next() as u16, rng.next() as u16);
                let inner = match i % 6 {
                    0 | 1 => tcp(a, b, p1, p2),
                    2 | 3 => udp(a, b, p1, p2),
                    4 => ping(a, b, p1),
                    _ => [arp(), ipv6(), fragment(&udp(a, b, p1, p2), 8 * (p1 & 0xff), i % 2 == 0)][i % 3].clone(),
                };
                let o = Opts {
                    csum: rng.below(3) == 0,
                    key: (rng.below(4) != 0).then(|| rng.next() as u32),
                    seq: (rng.below(3) == 0).then(|| rng.next() as u32),
                };
                let proto = if i % 50 == 49 { 0x0800 } else { PROTO_TEB };
                let p = outer(IP_A, IP_B, rng.below(3), &gre(o, proto, &inner));
                inject.send(&on_wire(&p));
                sent.push(p);
            }
            let mut got: Vec<Option<usize>> = vec![None; sent.len()];
            let mut per_worker = vec![0; n];
            for (w, q) in qs.iter_mut().enumerate() {
                for (m, b) in drain_queue(q, Duration::from_millis(100)) {
                    let i = sent.iter().position(|p| *p == b).expect("a packet we sent, whole");
                    assert!(got[i].replace(w).is_none(), "packet {i} on two sockets");
                    assert_eq!(
                        (m.src, m.gre_offset, m.gre_len()),
                        (IP_A, usize::from(b[0] & 0xf) * 4, b.len() - m.gre_offset)
                    );
                    assert!(!m.truncated);
                    per_worker[w] += 1;
                }
            }
            for (i, p) in sent.iter().enumerate() {
                assert_eq!(got[i], Some(worker_of(p, n)), "packet {i}: {p:02x?}");
            }
            eprintln!("{n} workers: {per_worker:?} packets each");
            assert!(per_worker.iter().all(|&c| c > 0), "{per_worker:?}");
        });
    }

    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn steers_like_worker_of_with_2_workers() {
        steers_like_worker_of(2);
    }

    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn steers_like_worker_of_with_3_workers() {
        steers_like_worker_of(3);
    }

    /// ICMP protocol unreachables (type 3, code 2) that "b" sends back.
    fn unreachables(cap: &Capture) -> usize {
        ipv4_packets(&cap.frames(Duration::from_millis(100)))
            .iter()
            .filter(|p| {
                let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
                ip.protocol() == IpProtocol::Icmp && ip.payload()[..2] == [3, 2]
            })
            .count()
    }

    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn no_protocol_unreachable_while_open() {
        with_two_ns(|ns| {
            ns.enter_b();
            std::fs::write("/proc/sys/net/ipv4/icmp_ratelimit", "0").unwrap();
            let other = Ipv4Addr::new(10, 91, 0, 3);
            run("ip", &format!("addr add {other}/24 dev {DEV_B}"));
            ns.enter_a();
            run("ip", &format!("neigh replace {other} lladdr {} dev {DEV_A} nud permanent", mac(MAC_B)));
            let cap = Capture::open(DEV_A);
            let packets: Vec<Vec<u8>> = (0..10).map(|i| on_wire(&tunnel(&udp(A, B, 1000 + i, 53)))).collect();
            let send_all = || packets.iter().for_each(|f| cap.send(f));
            send_all();
            assert_eq!(unreachables(&cap), 10, "without a socket the kernel answers every one");

            ns.enter_b();
            let mut qs = open_gre(IP_B, 2).unwrap();
            ns.enter_a();
            send_all();
            assert_eq!(unreachables(&cap), 0, "with the sockets");
            let taken: usize = qs.iter_mut().map(|q| drain_queue(q, Duration::from_millis(50)).len()).sum();
            assert_eq!(taken, 10);
            // To another address of "b" than the bound one: answered.
            let elsewhere = outer(IP_A, other, 0, &gre(KEYED, PROTO_TEB, &udp(A, B, 1, 2)));
            cap.send(&on_wire(&elsewhere));
            assert_eq!(unreachables(&cap), 1, "to an address no socket is bound to");
            drop(qs);

            // One socket whose filter drops everything is enough.
            ns.enter_b();
            let silent = raw_gre_socket(&DROP_ALL);
            ns.enter_a();
            send_all();
            assert_eq!(unreachables(&cap), 0, "with a socket that drops everything");
            drop(silent);
            send_all();
            assert_eq!(unreachables(&cap), 10, "after closing");
        });
    }

    /// A peer without GRE answers with protocol unreachables; they never
    /// turn into errors of later calls (the socket is unconnected and has no
    /// `IP_RECVERR`, so `raw_err` ignores them).
    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair"]
    fn icmp_errors_do_not_surface() {
        with_two_ns(|ns| {
            std::fs::write("/proc/sys/net/ipv4/icmp_ratelimit", "0").unwrap();
            ns.enter_b();
            let back = Capture::open(DEV_B);
            let mut qb = open_gre(IP_B, 1).unwrap();
            let head = gre(KEYED, PROTO_TEB, &[]);
            let inner = udp(A, B, 1, 2);
            for _ in 0..5 {
                let s = qb[0].send_batch(IP_A, &[&[IoSlice::new(&head), IoSlice::new(&inner)]]);
                assert_eq!((s.sent, s.failed), (1, 0));
            }
            assert_eq!(unreachables(&back), 5, "\"a\" answered each packet");
            let s = qb[0].send_batch(IP_A, &[&[IoSlice::new(&head), IoSlice::new(&inner)]]);
            assert_eq!((s.sent, s.failed, s.last_errno), (1, 0, None));
            let mut buf = [0u8; 2048];
            let mut meta = [RecvMeta::default(); 1];
            assert_eq!(qb[0].recv_batch([&mut buf[..]], &mut meta).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        });
    }

    /// A classic pcap file (Ethernet link type) of `frames`.
    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        // Magic (microsecond timestamps), version 2.4, then zone, sigfigs,
        // snaplen and link type 1 (Ethernet).
        v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        for w in [0u32, 0, 65535, 1] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        for f in frames {
            for w in [0u32, 0, f.len() as u32, f.len() as u32] {
                v.extend_from_slice(&w.to_le_bytes());
            }
            v.extend_from_slice(f);
        }
        v
    }

    /// A file removed when dropped.
    struct TempFile(std::path::PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// "b" sends through its queue to "a": the kernel adds the outer header,
    /// and tshark reads the packet as GRE with the key, carrying a
    /// Transparent Ethernet Bridging frame. A GreQueue in "a" receives it.
    #[test]
    #[ignore = "needs root: creates network namespaces and a veth pair; runs tshark"]
    fn sends_arrive_with_the_outer_header_and_decode_as_gre() {
        with_two_ns(|ns| {
            let mut qa = open_gre(IP_A, 1).unwrap();
            let cap = Capture::open(DEV_A);
            ns.enter_b();
            let mut qb = open_gre(IP_B, 2).unwrap();
            let inner = [udp(A, B, 5678, 53), tcp(B, A, 22, 40000), arp()];
            let heads: Vec<Vec<u8>> = (0..3u32)
                .map(|i| gre(Opts { csum: false, key: Some(0x1234 + i), seq: None }, PROTO_TEB, &[]))
                .collect();
            let iovs: Vec<[IoSlice; 2]> =
                heads.iter().zip(&inner).map(|(h, f)| [IoSlice::new(h), IoSlice::new(f)]).collect();
            let msgs: Vec<&[IoSlice]> = iovs.iter().map(|m| &m[..]).collect();
            let s = qb[1].send_batch(IP_A, &msgs);
            let bytes: usize = heads.iter().zip(&inner).map(|(h, f)| h.len() + f.len()).sum();
            assert_eq!(s, Sent { sent: 3, bytes, failed: 0, unsent: 0, last_errno: None });
            ns.enter_a();
            let frames: Vec<Vec<u8>> = cap
                .frames(Duration::from_millis(100))
                .into_iter()
                .filter(|f| f.len() > 34 && f[12..14] == [8, 0] && f[14 + 9] == 47)
                .collect();
            assert_eq!(frames.len(), 3);
            for (i, f) in frames.iter().enumerate() {
                let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!((ip.protocol(), ip.src_addr(), ip.dst_addr()), (IpProtocol::Gre, IP_B, IP_A));
                assert_eq!((ip.header_len(), ip.ttl(), ip.dont_frag()), (20, 64, true));
                assert_eq!(ip.payload(), [&heads[i][..], &inner[i]].concat());
                let g = GrePacket::new_checked(ip.payload()).unwrap();
                assert_eq!((g.key(), g.protocol()), (Some(0x1234 + i as u32), Protocol::TransparentEthernet));
            }
            let got = drain_queue(&mut qa[0], Duration::from_millis(50));
            assert_eq!(got.len(), 3);
            for (m, b) in &got {
                assert_eq!((m.src, m.gre_offset), (IP_B, 20));
                assert!(frames.iter().any(|f| f[14..] == b[..]));
            }

            let file = TempFile(std::env::temp_dir().join(format!(
                "tapnet-gre-{}-{:?}.pcap",
                std::process::id(),
                std::thread::current().id()
            )));
            std::fs::write(&file.0, pcap(&frames)).unwrap();
            let out = Command::new("tshark")
                .arg("-r")
                .arg(&file.0)
                .args(["-T", "fields", "-E", "separator=,", "-E", "aggregator=;"])
                .args(["-e", "ip.proto", "-e", "gre.key", "-e", "gre.proto", "-e", "eth.type"])
                .output()
                .expect("run tshark");
            assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).unwrap();
            eprintln!("{text}");
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(
                lines,
                [
                    "47;17,0x00001234,0x6558,0x0800;0x0800",
                    "47;6,0x00001235,0x6558,0x0800;0x0800",
                    "47,0x00001236,0x6558,0x0800;0x0806",
                ]
            );
            let verbose = Command::new("tshark").arg("-r").arg(&file.0).arg("-V").output().unwrap();
            let verbose = String::from_utf8_lossy(&verbose.stdout);
            assert!(verbose.contains("Generic Routing Encapsulation (Transparent Ethernet bridging)"), "{verbose}");
            assert!(verbose.contains("Key: 0x00001234"));
        });
    }
}
