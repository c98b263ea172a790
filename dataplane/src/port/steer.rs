//! Flow steering for the uplink: which worker receives a frame.
//!
//! NAT state is per worker, so a reply must reach the worker that owns its
//! flow. The uplink's AF_PACKET sockets (one per worker, see
//! [`super::packet`]) form a `PACKET_FANOUT` group of type
//! `PACKET_FANOUT_CBPF`: for every received frame the kernel runs
//! [`fanout_program`] and hands the frame to member `result % members`
//! (`fanout_demux_bpf`), members being numbered in the order they joined.
//! [`uplink_hash`] is the reference the program is tested against, and the
//! router computes the same keys ([`port_hash`], [`end_hash`]) to find the
//! worker that owns a flow and to pick the translated ports it owns
//! (`router::route`).
//!
//! # Keys
//!
//! The program knows our side of the uplink ([`Steering`]): the uplink
//! address `U` and the range of source ports masquerade picks from. A
//! reply to a masqueraded flow is steered by the port (or ICMP identifier)
//! NAT picked, which the worker that made the flow picked among those it
//! owns; every other frame by its remote end, the end NAT never rewrites.
//! Flows to one server (one remote end) from many containers or sockets so
//! spread over the workers, and so do the connections of one client, whose
//! source ports Linux picks all even (`__inet_hash_connect`).
//!
//! | frame received on the uplink (Ethernet, no virtio-net header) | key |
//! |---|---|
//! | not IPv4 (ARP, IPv6, …), or IP version ≠ 4 | `0` |
//! | TCP, UDP to `U` with a destination port in the masquerade range | `port_hash(dst_port)` |
//! | other TCP, UDP | `end_hash(src_ip, src_port)` |
//! | ICMP echo request or reply (RFC 792) to `U` | `port_hash(identifier)` |
//! | other ICMP echo | `end_hash(src_ip, identifier)` |
//! | ICMP error (type 3, 11, 12) quoting TCP or UDP from `U` with a source port in the range | `port_hash(inner_src_port)` |
//! | ICMP error quoting other TCP or UDP | `end_hash(inner_dst_ip, inner_dst_port)` |
//! | ICMP error quoting an ICMP echo from `U` | `port_hash(inner_identifier)` |
//! | ICMP error quoting another ICMP echo | `end_hash(inner_dst_ip, inner_identifier)` |
//! | other ICMP, other protocols, non-first fragments, IHL below 5 | `end_hash(src_ip, 0)` |
//! | any byte the rule needs is missing (truncated) | `0` |
//!
//! An ICMP error quotes the datagram that caused it, which is one *we*
//! sent: its key is the key the replies of that datagram's flow carry, with
//! source and destination swapped. The quoted header is read at ICMP offset
//! 8 with its own IHL (RFC 792, "Internet Header + 64 bits of Original Data
//! Datagram"). A quoted non-first fragment or IHL below 5 falls back to
//! `end_hash(src_ip, 0)`; the quoted header's version is not checked.
//!
//! "Truncated" is defined by the kernel: a cBPF load beyond the end of the
//! packet aborts the program with return value 0. [`uplink_hash`] makes the
//! loads the program makes, in the same order, and returns 0 exactly when
//! one would be out of bounds, so the two agree on every input. IPv4 Total
//! Length is not consulted: the program does not read it, and Ethernet
//! padding after a short datagram is just more bytes.
//!
//! # What the kernel does (checked on Linux 6.18)
//!
//! - The fanout hook (`packet_rcv_fanout`) is a `ptype_all` handler. On the
//!   receive path `__netif_receive_skb_core` has already run
//!   `eth_type_trans`, so `skb->data` is at the *network* header; on the
//!   transmit path (`dev_queue_xmit_nit`) it is at the MAC header. Every load
//!   in the program is therefore relative to `SKF_NET_OFF` (the network
//!   header, wherever `skb->data` is), and the EtherType comes from
//!   `skb->protocol` (`SKF_AD_PROTOCOL`), never from an absolute offset.
//! - A VLAN tag is removed (`skb_vlan_untag`) before the hook runs, and
//!   `skb->protocol` and the network header then describe the inner packet.
//!   The socket also receives the frame without its tag (the tag is only in
//!   `PACKET_AUXDATA`), so the program and [`uplink_hash`] over the received
//!   bytes still agree.
//! - cBPF is translated to eBPF (`bpf_convert_filter`). Absolute and indirect
//!   loads with a negative offset call `bpf_skb_load_helper_{8,16,32}`, which
//!   since Linux 6.15 map `SKF_NET_OFF + k` to an skb offset and fall back to
//!   `skb_copy_bits`, so headers in paged fragments are reachable too (older
//!   kernels only reached the linear head). `ldxb 4*([k]&0xf)` (`BPF_MSH`)
//!   becomes the same load helper followed by `& 0xf` and `<< 2`, so it takes
//!   `SKF_NET_OFF` as well. A failed load returns `-EFAULT`, which the
//!   translated program turns into "return 0".
//! - `BPF_MSH` only takes an absolute offset, so the quoted header's IHL is
//!   computed with an indirect load, `and #0xf` and `lsh #2`.
//!
//! The privileged tests in [`super::packet`] check this on the running
//! kernel: probe programs show that an absolute `ldb [0]` reads the IPv4
//! header and that `BPF_MSH` takes `SKF_NET_OFF`
//! (`fanout_program_runs_at_the_network_header`), and crafted, kernel-made
//! and jumbo frames with their headers in paged fragments go through real
//! fanout groups of 2 and 3 and each lands on member `uplink_hash(frame) % n`
//! only (`fanout_of_{2,3}_steers_like_uplink_hash`).
//!
//! About 530 lines of code; the rest are tests that run the cBPF program in
//! an interpreter against the Rust hash on real frames.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// What the steering program knows of our side of the uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steering {
    /// The uplink address NAT translates to.
    pub uplink: Ipv4Addr,
    /// The source ports masquerade picks (`--snat-ports`).
    pub snat_ports: RangeInclusive<u16>,
}

impl Steering {
    /// Whether a flow's translated port `port` is NAT's: a TCP or UDP port
    /// in the masquerade range (`icmp` false), or any ICMP identifier.
    #[inline]
    pub fn is_nat_port(&self, icmp: bool, port: u16) -> bool {
        icmp || self.snat_ports.contains(&port)
    }

    /// The key of a frame from the remote end `src:sport` to `dst:dport`
    /// received on the uplink (for ICMP echo both ports are the
    /// identifier), as [`uplink_hash`] computes it from the frame.
    #[inline]
    pub fn inbound(&self, icmp: bool, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> u32 {
        if dst == self.uplink && self.is_nat_port(icmp, dport) {
            port_hash(dport)
        } else {
            end_hash(src, sport)
        }
    }
}

/// The multiplier of [`mix`]: 2^32 divided by the golden ratio, odd
/// (Knuth's multiplicative hashing).
const MIX_K: u32 = 0x9e37_79b1;

/// A cheap 32-bit mixer the cBPF program can compute: multiply, then fold
/// the high half into the low half, so that the low bits (all `% 2` sees)
/// depend on every input bit.
#[inline]
pub fn mix(v: u32) -> u32 {
    let h = v.wrapping_mul(MIX_K);
    h ^ (h >> 16)
}

/// The key of a flow by its remote end.
#[inline]
pub fn end_hash(ip: Ipv4Addr, port: u16) -> u32 {
    mix(u32::from(ip) ^ mix(u32::from(port)))
}

/// The key of a flow by the port (or ICMP identifier) NAT gave it on the
/// uplink address.
#[inline]
pub fn port_hash(port: u16) -> u32 {
    mix(u32::from(port))
}

/// The worker (`0..n_workers`) the fanout group delivers a frame with
/// steering key `hash` to, as the kernel computes it (`u32 % u32`); 0 when
/// there are no workers.
#[inline]
pub fn worker_for(hash: u32, n_workers: usize) -> usize {
    let n = u32::try_from(n_workers).unwrap_or(u32::MAX);
    hash.checked_rem(n).unwrap_or(0) as usize
}

/// EtherType of IPv4 (IEEE 802 numbers).
const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethernet II header length; the network header follows it.
const ETH_HLEN: usize = 14;

// IPv4 header fields (RFC 791 §3.1), from the network header.
const IP_VER_IHL: usize = 0;
const IP_FLG_OFF: usize = 6;
const IP_PROTOCOL: usize = 9;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;
const IP_MIN_HLEN: u32 = 20;
const IP_FRAG_OFFSET_MASK: u32 = 0x1fff;

const PROTO_ICMP: u32 = 1;
const PROTO_TCP: u32 = 6;
const PROTO_UDP: u32 = 17;

// Transport fields, from the transport header.
const L4_SRC_PORT: usize = 0; // TCP (RFC 9293 §3.1), UDP (RFC 768)
const L4_DST_PORT: usize = 2;
const ICMP_TYPE: usize = 0; // RFC 792
const ICMP_ECHO_IDENT: usize = 4;
const ICMP_QUOTE: usize = 8; // the quoted datagram in an error message

const ICMP_ECHO_REPLY: u32 = 0;
const ICMP_DEST_UNREACHABLE: u32 = 3;
const ICMP_ECHO_REQUEST: u32 = 8;
const ICMP_TIME_EXCEEDED: u32 = 11;
const ICMP_PARAMETER_PROBLEM: u32 = 12;

/// The steering key of a frame received on the uplink: the reference for
/// [`fanout_program`] (see the module docs for the rules). `frame` is an
/// Ethernet frame without a virtio-net header. Never panics, never
/// allocates.
pub fn uplink_hash(s: &Steering, frame: &[u8]) -> u32 {
    steer(s, frame).unwrap_or(0)
}

/// Big-endian load of `N` bytes at `off`, as a cBPF `ld`/`ldh`/`ldb` does;
/// `None` where the program's load would fault.
#[inline]
fn load<const N: usize>(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(N)?)?;
    Some(bytes.iter().fold(0u32, |acc, &x| acc << 8 | u32::from(x)))
}

/// `None` means "a load faulted": the program returns 0. The loads are
/// made in the program's order.
fn steer(s: &Steering, frame: &[u8]) -> Option<u32> {
    // skb->protocol. A frame too short for an Ethernet header never reaches
    // a packet socket; treat it as "not IPv4".
    let Some(ethertype) = load::<2>(frame, 12) else { return Some(0) };
    if ethertype != u32::from(ETHERTYPE_IPV4) {
        return Some(0);
    }
    let ip = &frame[ETH_HLEN..];
    let ver_ihl = load::<1>(ip, IP_VER_IHL)?;
    if ver_ihl & 0xf0 != 0x40 {
        return Some(0);
    }
    let src = load::<4>(ip, IP_SRC)?;
    let src_only = Some(mix(src)); // end_hash(src_ip, 0)
    if load::<2>(ip, IP_FLG_OFF)? & IP_FRAG_OFFSET_MASK != 0 {
        return src_only;
    }
    let ihl = (ver_ihl & 0xf) << 2;
    if ihl < IP_MIN_HLEN {
        return src_only;
    }
    let l4 = ihl as usize;
    let u = u32::from(s.uplink);
    let end = |port: u32| Some(mix(src ^ mix(port)));
    match load::<1>(ip, IP_PROTOCOL)? {
        PROTO_TCP | PROTO_UDP => {
            if load::<4>(ip, IP_DST)? == u {
                let dport = load::<2>(ip, l4 + L4_DST_PORT)?;
                if s.is_nat_port(false, dport as u16) {
                    return Some(mix(dport));
                }
            }
            end(load::<2>(ip, l4 + L4_SRC_PORT)?)
        }
        PROTO_ICMP => match load::<1>(ip, l4 + ICMP_TYPE)? {
            ICMP_ECHO_REPLY | ICMP_ECHO_REQUEST => {
                let id = load::<2>(ip, l4 + ICMP_ECHO_IDENT)?;
                if load::<4>(ip, IP_DST)? == u {
                    Some(mix(id))
                } else {
                    end(id)
                }
            }
            ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM => quoted(s, ip, l4 + ICMP_QUOTE, src),
            _ => src_only,
        },
        _ => src_only,
    }
}

/// The key of an ICMP error from the datagram it quotes at `inner` (an
/// offset from the outer network header).
fn quoted(s: &Steering, ip: &[u8], inner: usize, src: u32) -> Option<u32> {
    let proto = load::<1>(ip, inner + IP_PROTOCOL)?;
    let inner_src = load::<4>(ip, inner + IP_SRC)?;
    let inner_dst = load::<4>(ip, inner + IP_DST)?;
    let src_only = Some(mix(src));
    if load::<2>(ip, inner + IP_FLG_OFF)? & IP_FRAG_OFFSET_MASK != 0 {
        return src_only;
    }
    let ihl = (load::<1>(ip, inner + IP_VER_IHL)? & 0xf) << 2;
    if ihl < IP_MIN_HLEN {
        return src_only;
    }
    let l4 = inner + ihl as usize;
    let ours = inner_src == u32::from(s.uplink);
    let end = |port: u32| Some(mix(inner_dst ^ mix(port)));
    match proto {
        PROTO_TCP | PROTO_UDP => {
            if ours {
                let sport = load::<2>(ip, l4 + L4_SRC_PORT)?;
                if s.is_nat_port(false, sport as u16) {
                    return Some(mix(sport));
                }
            }
            end(load::<2>(ip, l4 + L4_DST_PORT)?)
        }
        PROTO_ICMP => match load::<1>(ip, l4 + ICMP_TYPE)? {
            ICMP_ECHO_REPLY | ICMP_ECHO_REQUEST => {
                let id = load::<2>(ip, l4 + ICMP_ECHO_IDENT)?;
                if ours {
                    Some(mix(id))
                } else {
                    end(id)
                }
            }
            _ => src_only,
        },
        _ => src_only,
    }
}

// ---------------------------------------------------------------------------
// The classic BPF program.

/// Jump targets of [`fanout_program`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Next,
    Zero,
    SrcOnly,
    Ports,
    PortsRemote,
    Echo,
    EchoOurs,
    Quoted,
    QuotedPorts,
    QuotedRemote,
    QuotedEcho,
    QuotedEchoOurs,
    /// A = port: return `port_hash(A)`.
    PortHash,
    /// A = port: return `end_hash(M[src], A)`.
    EndSrc,
    /// A = port: return `end_hash(M[inner dst], A)`.
    EndInnerDst,
}

/// A tiny assembler: forward jumps by label, resolved in [`Asm::finish`].
struct Asm {
    prog: Vec<libc::sock_filter>,
    /// (instruction index, jt, jf) for conditional jumps, (index, target,
    /// Next) for `ja`.
    fixups: Vec<(usize, Label, Label)>,
    labels: Vec<(Label, usize)>,
}

// Scratch memory words M[] of the program.
const M_SRC: u32 = 0;
const M_INNER_PROTO: u32 = 1;
const M_INNER_DST: u32 = 2;
const M_INNER_IHL: u32 = 3;
const M_INNER_SRC: u32 = 4;
const M_PORT: u32 = 5;
const M_MIX: u32 = 6;

/// `SKF_NET_OFF + off`: a load relative to the network header.
const fn net(off: usize) -> u32 {
    (libc::SKF_NET_OFF + off as i32) as u32
}

impl Asm {
    fn stmt(&mut self, code: u32, k: u32) {
        self.prog.push(libc::sock_filter { code: code as u16, jt: 0, jf: 0, k });
    }
    fn jump(&mut self, op: u32, k: u32, jt: Label, jf: Label) {
        self.fixups.push((self.prog.len(), jt, jf));
        self.stmt(libc::BPF_JMP | op | libc::BPF_K, k);
    }
    fn ja(&mut self, to: Label) {
        self.fixups.push((self.prog.len(), to, Label::Next));
        self.stmt(libc::BPF_JMP | libc::BPF_JA, 0);
    }
    fn label(&mut self, l: Label) {
        self.labels.push((l, self.prog.len()));
    }
    /// A = mix(A); uses M[M_MIX] and X.
    fn mix(&mut self) {
        use libc::{BPF_ALU, BPF_K, BPF_LDX, BPF_MEM, BPF_MUL, BPF_RSH, BPF_ST, BPF_W, BPF_X, BPF_XOR};
        self.stmt(BPF_ALU | BPF_MUL | BPF_K, MIX_K);
        self.stmt(BPF_ST, M_MIX);
        self.stmt(BPF_ALU | BPF_RSH | BPF_K, 16);
        self.stmt(BPF_LDX | BPF_W | BPF_MEM, M_MIX);
        self.stmt(BPF_ALU | BPF_XOR | BPF_X, 0);
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

/// The classic BPF program for `PACKET_FANOUT_DATA` that computes
/// [`uplink_hash`] in the kernel (the kernel takes the result modulo the
/// number of group members). Built once at setup.
pub fn fanout_program(s: &Steering) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JSET, BPF_K, BPF_LD,
        BPF_LDX, BPF_LSH, BPF_MEM, BPF_MISC, BPF_MSH, BPF_RET, BPF_ST, BPF_TAX, BPF_TXA, BPF_W, BPF_X, BPF_XOR,
    };
    use Label::*;
    let u = u32::from(s.uplink);
    let (lo, hi) = (u32::from(*s.snat_ports.start()), u32::from(*s.snat_ports.end()));
    let mut a = Asm { prog: Vec::with_capacity(128), fixups: Vec::new(), labels: Vec::new() };

    // A = skb->protocol; anything but IPv4 goes to member 0.
    a.stmt(BPF_LD | BPF_W | BPF_ABS, (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32);
    a.jump(BPF_JEQ, u32::from(ETHERTYPE_IPV4), Next, Zero);
    a.stmt(BPF_LD | BPF_B | BPF_ABS, net(IP_VER_IHL));
    a.stmt(BPF_ALU | BPF_AND | BPF_K, 0xf0);
    a.jump(BPF_JEQ, 0x40, Next, Zero);
    // M[src] = source address.
    a.stmt(BPF_LD | BPF_W | BPF_ABS, net(IP_SRC));
    a.stmt(BPF_ST, M_SRC);
    a.stmt(BPF_LD | BPF_H | BPF_ABS, net(IP_FLG_OFF));
    a.jump(BPF_JSET, IP_FRAG_OFFSET_MASK, SrcOnly, Next);
    // X = 4 * IHL: the transport header is at [x + net].
    a.stmt(BPF_LDX | BPF_B | BPF_MSH, net(IP_VER_IHL));
    a.stmt(BPF_MISC | BPF_TXA, 0);
    a.jump(BPF_JGE, IP_MIN_HLEN, Next, SrcOnly);
    a.stmt(BPF_LD | BPF_B | BPF_ABS, net(IP_PROTOCOL));
    a.jump(BPF_JEQ, PROTO_TCP, Ports, Next);
    a.jump(BPF_JEQ, PROTO_UDP, Ports, Next);
    a.jump(BPF_JEQ, PROTO_ICMP, Next, SrcOnly);
    // ICMP: echo or error?
    a.stmt(BPF_LD | BPF_B | BPF_IND, net(ICMP_TYPE));
    a.jump(BPF_JEQ, ICMP_ECHO_REPLY, Echo, Next);
    a.jump(BPF_JEQ, ICMP_ECHO_REQUEST, Echo, Next);
    a.jump(BPF_JEQ, ICMP_DEST_UNREACHABLE, Quoted, Next);
    a.jump(BPF_JEQ, ICMP_TIME_EXCEEDED, Quoted, Next);
    a.jump(BPF_JEQ, ICMP_PARAMETER_PROBLEM, Quoted, SrcOnly);

    // Echo: by the identifier alone when it is to us, else with the source.
    a.label(Echo);
    a.stmt(BPF_LD | BPF_H | BPF_IND, net(ICMP_ECHO_IDENT));
    a.stmt(BPF_ST, M_PORT);
    a.stmt(BPF_LD | BPF_W | BPF_ABS, net(IP_DST));
    a.jump(BPF_JEQ, u, EchoOurs, Next);
    a.stmt(BPF_LD | BPF_MEM, M_PORT);
    a.ja(EndSrc);
    a.label(EchoOurs);
    a.stmt(BPF_LD | BPF_MEM, M_PORT);
    a.ja(PortHash);

    // TCP, UDP: to us on a masquerade port, by that port; else by the
    // source.
    a.label(Ports);
    a.stmt(BPF_LD | BPF_W | BPF_ABS, net(IP_DST));
    a.jump(BPF_JEQ, u, Next, PortsRemote);
    a.stmt(BPF_LD | BPF_H | BPF_IND, net(L4_DST_PORT));
    a.jump(BPF_JGE, lo, Next, PortsRemote);
    a.jump(BPF_JGT, hi, PortsRemote, PortHash);
    a.label(PortsRemote);
    a.stmt(BPF_LD | BPF_H | BPF_IND, net(L4_SRC_PORT));
    a.ja(EndSrc);

    // The quoted datagram starts at [x + net + 8], X still 4 * outer IHL.
    a.label(Quoted);
    let q = ICMP_QUOTE;
    a.stmt(BPF_LD | BPF_B | BPF_IND, net(q + IP_PROTOCOL));
    a.stmt(BPF_ST, M_INNER_PROTO);
    a.stmt(BPF_LD | BPF_W | BPF_IND, net(q + IP_SRC));
    a.stmt(BPF_ST, M_INNER_SRC);
    a.stmt(BPF_LD | BPF_W | BPF_IND, net(q + IP_DST));
    a.stmt(BPF_ST, M_INNER_DST);
    a.stmt(BPF_LD | BPF_H | BPF_IND, net(q + IP_FLG_OFF));
    a.jump(BPF_JSET, IP_FRAG_OFFSET_MASK, SrcOnly, Next);
    // BPF_MSH has no indirect form: A = 4 * (quoted IHL) by hand.
    a.stmt(BPF_LD | BPF_B | BPF_IND, net(q + IP_VER_IHL));
    a.stmt(BPF_ALU | BPF_AND | BPF_K, 0x0f);
    a.stmt(BPF_ALU | BPF_LSH | BPF_K, 2);
    a.jump(BPF_JGE, IP_MIN_HLEN, Next, SrcOnly);
    // X = 4 * outer IHL + 4 * quoted IHL: the quoted transport header is at
    // [x + net + 8].
    a.stmt(BPF_ST, M_INNER_IHL);
    a.stmt(BPF_MISC | BPF_TXA, 0);
    a.stmt(BPF_LDX | BPF_W | BPF_MEM, M_INNER_IHL);
    a.stmt(BPF_ALU | libc::BPF_ADD | BPF_X, 0);
    a.stmt(BPF_MISC | BPF_TAX, 0);
    a.stmt(BPF_LD | BPF_MEM, M_INNER_PROTO);
    a.jump(BPF_JEQ, PROTO_TCP, QuotedPorts, Next);
    a.jump(BPF_JEQ, PROTO_UDP, QuotedPorts, Next);
    a.jump(BPF_JEQ, PROTO_ICMP, Next, SrcOnly);
    a.stmt(BPF_LD | BPF_B | BPF_IND, net(q + ICMP_TYPE));
    a.jump(BPF_JEQ, ICMP_ECHO_REPLY, QuotedEcho, Next);
    a.jump(BPF_JEQ, ICMP_ECHO_REQUEST, QuotedEcho, SrcOnly);
    a.label(QuotedEcho);
    a.stmt(BPF_LD | BPF_H | BPF_IND, net(q + ICMP_ECHO_IDENT));
    a.stmt(BPF_ST, M_PORT);
    a.stmt(BPF_LD | BPF_MEM, M_INNER_SRC);
    a.jump(BPF_JEQ, u, QuotedEchoOurs, Next);
    a.stmt(BPF_LD | BPF_MEM, M_PORT);
    a.ja(EndInnerDst);
    a.label(QuotedEchoOurs);
    a.stmt(BPF_LD | BPF_MEM, M_PORT);
    a.ja(PortHash);
    a.label(QuotedPorts);
    a.stmt(BPF_LD | BPF_MEM, M_INNER_SRC);
    a.jump(BPF_JEQ, u, Next, QuotedRemote);
    a.stmt(BPF_LD | BPF_H | BPF_IND, net(q + L4_SRC_PORT));
    a.jump(BPF_JGE, lo, Next, QuotedRemote);
    a.jump(BPF_JGT, hi, QuotedRemote, PortHash);
    a.label(QuotedRemote);
    a.stmt(BPF_LD | BPF_H | BPF_IND, net(q + L4_DST_PORT));
    a.ja(EndInnerDst);

    // end_hash(M[inner dst], A).
    a.label(EndInnerDst);
    a.mix();
    a.stmt(BPF_LDX | BPF_W | BPF_MEM, M_INNER_DST);
    a.stmt(BPF_ALU | BPF_XOR | BPF_X, 0);
    a.mix();
    a.stmt(BPF_RET | BPF_A, 0);

    // end_hash(M[src], 0) = mix(M[src]), as mix(0) = 0.
    a.label(SrcOnly);
    a.stmt(BPF_LD | libc::BPF_IMM, 0);
    // end_hash(M[src], A).
    a.label(EndSrc);
    a.mix();
    a.stmt(BPF_LDX | BPF_W | BPF_MEM, M_SRC);
    a.stmt(BPF_ALU | BPF_XOR | BPF_X, 0);
    // port_hash(A).
    a.label(PortHash);
    a.mix();
    a.stmt(BPF_RET | BPF_A, 0);

    a.label(Zero);
    a.stmt(BPF_RET | BPF_K, 0);
    a.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::Ipv4Packet;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    pub(crate) const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    pub(crate) const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    const REMOTE: [u8; 4] = [203, 0, 113, 7];
    const UPLINK: [u8; 4] = [198, 51, 100, 2];
    const ROUTER: [u8; 4] = [192, 0, 2, 254];

    fn ip(a: [u8; 4]) -> Ipv4Addr {
        Ipv4Addr::from(a)
    }

    /// Serialise an etherparse builder with `payload`.
    macro_rules! build {
        ($b:expr, $payload:expr) => {{
            let b = $b;
            let payload: &[u8] = $payload;
            let mut v = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut v, payload).unwrap();
            v
        }};
    }

    pub(crate) fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        build!(PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).tcp(sport, dport, 1000, 64240).syn(), b"")
    }
    pub(crate) fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        build!(PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).udp(sport, dport), b"tapnet")
    }
    pub(crate) fn echo(src: [u8; 4], dst: [u8; 4], request: bool, id: u16) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64);
        if request {
            build!(b.icmpv4_echo_request(id, 1), b"0123456789abcdef")
        } else {
            build!(b.icmpv4_echo_reply(id, 1), b"0123456789abcdef")
        }
    }
    /// An ICMP error from `from` to `to` quoting the IPv4 header and first 8
    /// payload bytes of `quoted` (an Ethernet frame), as RFC 792 asks.
    pub(crate) fn icmp_error(from: [u8; 4], to: [u8; 4], ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
        let inner = &quoted[14..];
        let ihl = usize::from(inner[0] & 0xf) * 4;
        let cut = (ihl + 8).min(inner.len());
        build!(PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(from, to, 64).icmpv4_raw(ty, code, [0; 4]), &inner[..cut])
    }
    /// Insert `words` 32-bit words of NOP options into the IPv4 header at
    /// `at` (14 for the outer header), fixing IHL, Total Length and the
    /// header checksum.
    fn with_options(frame: &[u8], at: usize, words: usize) -> Vec<u8> {
        let mut v = frame.to_vec();
        let hlen = usize::from(v[at] & 0xf) * 4;
        v.splice(at + hlen..at + hlen, std::iter::repeat_n(1u8, 4 * words));
        let mut p = Ipv4Packet::new_unchecked(&mut v[at..]);
        p.set_header_len(hlen + 4 * words);
        let total = p.total_len() + 4 * words as u16;
        p.set_total_len(total);
        p.fill_checksum();
        v
    }
    /// Set the fragment fields of the IPv4 header at `at`.
    fn fragment(frame: &[u8], at: usize, offset_bytes: u16, more: bool) -> Vec<u8> {
        let mut v = frame.to_vec();
        let mut p = Ipv4Packet::new_unchecked(&mut v[at..]);
        p.clear_flags();
        p.set_more_frags(more);
        p.set_frag_offset(offset_bytes);
        p.fill_checksum();
        v
    }
    /// Replace the IPv4 protocol of the outer header.
    fn protocol(frame: &[u8], proto: u8) -> Vec<u8> {
        let mut v = frame.to_vec();
        let mut p = Ipv4Packet::new_unchecked(&mut v[14..]);
        p.set_protocol(proto.into());
        p.fill_checksum();
        v
    }

    /// The uplink side the test frames are steered for.
    pub(crate) fn steering() -> Steering {
        Steering { uplink: ip(UPLINK), snat_ports: 32768..=60999 }
    }

    /// Real frames with the key each must get, worked out by hand.
    pub(crate) fn cases() -> Vec<(&'static str, Vec<u8>, u32)> {
        let to_remote_udp = udp(UPLINK, REMOTE, 40001, 33434);
        let to_remote_tcp = tcp(UPLINK, REMOTE, 40000, 443);
        let to_remote_ping = echo(UPLINK, [8, 8, 4, 4], true, 0xbeef);
        let src_only = end_hash(ip(ROUTER), 0);
        let mut arp = vec![0xffu8; 6];
        arp.extend_from_slice(&MAC_A);
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&MAC_A);
        arp.extend_from_slice(&UPLINK);
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&REMOTE);
        arp.resize(60, 0);
        let ipv6 = build!(PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6([0xfe; 16], [0xfd; 16], 64).udp(53, 5353), b"x");
        let mut vlan = tcp(REMOTE, UPLINK, 8080, 40000);
        vlan.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        let mut version6 = udp(REMOTE, UPLINK, 53, 40000);
        version6[14] = 0x65;
        let mut ihl4 = udp(REMOTE, UPLINK, 53, 40000);
        ihl4[14] = 0x44;
        let mut padded = udp(REMOTE, UPLINK, 53, 40000);
        padded.resize(60, 0);
        let gre_inner = protocol(&to_remote_udp, 47);
        let quoted_udp = icmp_error(ROUTER, UPLINK, 3, 3, &to_remote_udp);
        vec![
            ("tcp reply to a masquerade port", tcp(REMOTE, UPLINK, 443, 40000), port_hash(40000)),
            ("udp reply to a masquerade port", udp(REMOTE, UPLINK, 53, 40000), port_hash(40000)),
            ("udp padded to 60 bytes", padded, port_hash(40000)),
            ("tcp to the range's first port", tcp(REMOTE, UPLINK, 443, 32768), port_hash(32768)),
            ("tcp to the range's last port", tcp(REMOTE, UPLINK, 443, 60999), port_hash(60999)),
            ("tcp just above the range", tcp(REMOTE, UPLINK, 443, 61000), end_hash(ip(REMOTE), 443)),
            ("tcp just below the range", tcp(REMOTE, UPLINK, 443, 32767), end_hash(ip(REMOTE), 443)),
            ("tcp to a published port", tcp(REMOTE, UPLINK, 51234, 8080), end_hash(ip(REMOTE), 51234)),
            ("tcp to another address", tcp(REMOTE, [10, 0, 0, 2], 443, 40000), end_hash(ip(REMOTE), 443)),
            (
                "tcp, 12 bytes of IP options",
                with_options(&tcp(REMOTE, UPLINK, 8443, 1), 14, 3),
                end_hash(ip(REMOTE), 8443),
            ),
            ("echo reply", echo([8, 8, 8, 8], UPLINK, false, 0x1234), port_hash(0x1234)),
            ("echo request", echo([192, 0, 2, 9], UPLINK, true, 77), port_hash(77)),
            ("echo reply to another address", echo(REMOTE, [10, 0, 0, 2], false, 5), end_hash(ip(REMOTE), 5)),
            ("port unreachable quoting udp", quoted_udp.clone(), port_hash(40001)),
            ("time exceeded quoting tcp", icmp_error(ROUTER, UPLINK, 11, 0, &to_remote_tcp), port_hash(40000)),
            (
                "parameter problem quoting an echo request",
                icmp_error(ROUTER, UPLINK, 12, 0, &to_remote_ping),
                port_hash(0xbeef),
            ),
            (
                "frag needed quoting udp with IP options",
                icmp_error(ROUTER, UPLINK, 3, 4, &with_options(&to_remote_udp, 14, 2)),
                port_hash(40001),
            ),
            (
                "error with IP options quoting tcp",
                with_options(&icmp_error(ROUTER, UPLINK, 3, 1, &to_remote_tcp), 14, 1),
                port_hash(40000),
            ),
            (
                "error quoting a reply from a published port",
                icmp_error(ROUTER, UPLINK, 3, 3, &udp(UPLINK, REMOTE, 8080, 5555)),
                end_hash(ip(REMOTE), 5555),
            ),
            (
                "error quoting an untranslated flow",
                icmp_error(ROUTER, [10, 0, 0, 2], 3, 3, &tcp([10, 0, 0, 2], REMOTE, 40000, 443)),
                end_hash(ip(REMOTE), 443),
            ),
            (
                "error quoting an untranslated echo",
                icmp_error(ROUTER, [10, 0, 0, 2], 3, 1, &echo([10, 0, 0, 2], REMOTE, true, 9)),
                end_hash(ip(REMOTE), 9),
            ),
            ("error quoting gre", icmp_error(ROUTER, UPLINK, 3, 1, &gre_inner), src_only),
            (
                "error quoting a non-first fragment",
                icmp_error(ROUTER, UPLINK, 11, 1, &fragment(&to_remote_udp, 14, 1480, false)),
                src_only,
            ),
            (
                "error quoting an echo reply",
                icmp_error(ROUTER, UPLINK, 3, 3, &echo(UPLINK, REMOTE, false, 9)),
                port_hash(9),
            ),
            (
                "error quoting an icmp error",
                icmp_error(ROUTER, UPLINK, 3, 3, &icmp_error(UPLINK, REMOTE, 3, 3, &to_remote_udp)),
                src_only,
            ),
            (
                "icmp timestamp request",
                build!(
                    PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(ROUTER, UPLINK, 64).icmpv4_raw(13, 0, [0; 4]),
                    &[0; 12]
                ),
                src_only,
            ),
            ("gre", protocol(&udp(ROUTER, UPLINK, 1, 2), 47), src_only),
            ("non-first fragment", fragment(&udp(ROUTER, UPLINK, 53, 1), 14, 1480, false), src_only),
            ("first fragment", fragment(&udp(ROUTER, UPLINK, 53, 1), 14, 0, true), end_hash(ip(ROUTER), 53)),
            ("arp request", arp, 0),
            ("ipv6", ipv6, 0),
            ("802.1Q tag", vlan, 0),
            ("ethertype ipv4, version 6", version6, 0),
            ("ihl 4", ihl4, end_hash(ip(REMOTE), 0)),
            ("tcp cut inside the ports", tcp(REMOTE, UPLINK, 443, 40000)[..14 + 20 + 3].to_vec(), 0),
            ("tcp cut after the ports", tcp(REMOTE, UPLINK, 443, 40000)[..14 + 20 + 4].to_vec(), port_hash(40000)),
            ("echo cut before the identifier", echo(REMOTE, UPLINK, true, 1)[..14 + 20 + 5].to_vec(), 0),
            ("ip header cut before the destination", tcp(REMOTE, UPLINK, 1, 2)[..14 + 17].to_vec(), 0),
            ("error cut inside the quoted source port", quoted_udp[..14 + 20 + 8 + 20 + 1].to_vec(), 0),
            ("error cut after the quoted source port", quoted_udp[..14 + 20 + 8 + 20 + 2].to_vec(), port_hash(40001)),
            ("ethernet header only", tcp(REMOTE, UPLINK, 1, 2)[..14].to_vec(), 0),
            ("runt", vec![0x08, 0x00], 0),
            ("empty", Vec::new(), 0),
        ]
    }

    #[test]
    fn hashes_mix_every_bit_into_the_low_ones() {
        assert_eq!(mix(0), 0);
        assert_eq!(end_hash(Ipv4Addr::new(10, 0, 0, 1), 0), mix(0x0a00_0001));
        assert_eq!(port_hash(40000), mix(40000));
        // Linux gives connect()ed sockets even source ports: they must
        // still spread over two and three workers.
        let client = Ipv4Addr::new(192, 0, 2, 7);
        for n in [2usize, 3] {
            let mut per = vec![0usize; n];
            for p in (32768..33768u16).step_by(2) {
                per[worker_for(end_hash(client, p), n)] += 1;
            }
            assert!(per.iter().all(|&c| c > 500 / n * 8 / 10), "{n} workers: {per:?}");
            let mut per = vec![0usize; n];
            for p in 32768..33768u16 {
                per[worker_for(port_hash(p), n)] += 1;
            }
            assert!(per.iter().all(|&c| c > 1000 / n * 8 / 10), "{n} workers: {per:?}");
        }
        // Flows to one server from many hosts spread too.
        let mut per = [0usize; 2];
        for h in 0..1000u32 {
            per[worker_for(end_hash(Ipv4Addr::from(0x0a00_0000 + 2 * h), 443), 2)] += 1;
        }
        assert!(per.iter().all(|&c| c > 400), "{per:?}");
        assert_eq!(worker_for(u32::MAX, 2), 1);
        assert_eq!(worker_for(7, 1), 0);
        assert_eq!(worker_for(7, 0), 0, "no panic");
    }

    #[test]
    fn inbound_key_matches_the_frames() {
        let s = steering();
        for (frame, icmp, src, sport, dst, dport) in [
            (tcp(REMOTE, UPLINK, 443, 40000), false, REMOTE, 443, UPLINK, 40000),
            (tcp(REMOTE, UPLINK, 51234, 8080), false, REMOTE, 51234, UPLINK, 8080),
            (udp(REMOTE, [10, 0, 0, 2], 53, 40000), false, REMOTE, 53, [10, 0, 0, 2], 40000),
            (echo(REMOTE, UPLINK, false, 7), true, REMOTE, 7, UPLINK, 7),
            (echo(REMOTE, [10, 0, 0, 2], false, 7), true, REMOTE, 7, [10, 0, 0, 2], 7),
        ] {
            assert_eq!(uplink_hash(&s, &frame), s.inbound(icmp, ip(src), sport, ip(dst), dport), "{frame:02x?}");
        }
    }

    #[test]
    fn reference_on_real_frames() {
        let s = steering();
        for (name, frame, want) in cases() {
            assert_eq!(uplink_hash(&s, &frame), want, "{name}");
        }
    }

    /// The keys of well-formed frames, worked out again with etherparse's
    /// parser rather than by offset, from [`Steering::inbound`].
    fn etherparse_key(s: &Steering, frame: &[u8]) -> u32 {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        if p.vlan.is_some() {
            return 0; // the tag the kernel did not strip hides the EtherType
        }
        let Some(etherparse::NetSlice::Ipv4(ip4)) = p.net else { return 0 };
        let h = ip4.header();
        let (src, dst) = (h.source_addr(), h.destination_addr());
        let be = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
        if h.is_fragmenting_payload() {
            // etherparse does not slice the transport of a fragment.
            let l4 = ip4.payload().payload;
            return match (h.fragments_offset().value(), h.protocol()) {
                (0, etherparse::IpNumber::TCP | etherparse::IpNumber::UDP) => {
                    s.inbound(false, src, be(l4, 0), dst, be(l4, 2))
                }
                _ => end_hash(src, 0),
            };
        }
        match p.transport {
            Some(TransportSlice::Tcp(t)) => s.inbound(false, src, t.source_port(), dst, t.destination_port()),
            Some(TransportSlice::Udp(u)) => s.inbound(false, src, u.source_port(), dst, u.destination_port()),
            Some(TransportSlice::Icmpv4(icmp)) => match icmp.type_u8() {
                0 | 8 => {
                    let id = be(&icmp.bytes5to8(), 0);
                    s.inbound(true, src, id, dst, id)
                }
                3 | 11 | 12 => {
                    let q = icmp.payload();
                    let inner = etherparse::Ipv4HeaderSlice::from_slice(q).unwrap();
                    let l4 = &q[inner.slice().len()..];
                    if inner.fragments_offset().value() != 0 {
                        return end_hash(src, 0);
                    }
                    // The quoted datagram is one we sent: its flow's
                    // replies come the other way.
                    let (isrc, idst) = (inner.source_addr(), inner.destination_addr());
                    match inner.protocol() {
                        etherparse::IpNumber::TCP | etherparse::IpNumber::UDP => {
                            s.inbound(false, idst, be(l4, 2), isrc, be(l4, 0))
                        }
                        etherparse::IpNumber::ICMP if l4[0] == 0 || l4[0] == 8 => {
                            s.inbound(true, idst, be(l4, 4), isrc, be(l4, 4))
                        }
                        _ => end_hash(src, 0),
                    }
                }
                _ => end_hash(src, 0),
            },
            _ => end_hash(src, 0),
        }
    }

    #[test]
    fn reference_agrees_with_etherparse() {
        let s = steering();
        let mut rng = Rng(7);
        let mut checked = 0;
        let mut ours = 0;
        for i in 0..4000 {
            let a = (rng.next() as u32).to_be_bytes();
            // Half the frames are to the uplink address (and half the
            // quoted datagrams from it), a third of the ports in the
            // masquerade range.
            let b = if rng.below(2) == 0 { UPLINK } else { (rng.next() as u32).to_be_bytes() };
            let mut port = || if rng.below(3) == 0 { 32768 + rng.below(28232) as u16 } else { rng.next() as u16 };
            let (p1, p2, id) = (port(), port(), port());
            let quoted = match i % 3 {
                0 => udp(b, a, p2, p1),
                1 => tcp(b, a, p2, p1),
                _ => echo(b, a, rng.next() & 1 == 0, id),
            };
            let frame = match i % 6 {
                0 => tcp(a, b, p1, p2),
                1 => udp(a, b, p1, p2),
                2 => echo(a, b, rng.next() & 1 == 0, id),
                3 => icmp_error(a, b, [3, 11, 12][rng.below(3)], rng.next() as u8, &quoted),
                4 => {
                    with_options(&icmp_error(a, b, 3, 3, &with_options(&quoted, 14, rng.below(11))), 14, rng.below(11))
                }
                _ => fragment(&udp(a, b, p1, p2), 14, 8 * (rng.next() as u16 & [0, 0x1fff][rng.below(2)]), true),
            };
            let want = etherparse_key(&s, &frame);
            assert_eq!(uplink_hash(&s, &frame), want, "iteration {i}: {frame:02x?}");
            ours += usize::from([p1, p2, id].iter().any(|&p| want == port_hash(p)));
            checked += 1;
        }
        assert!(ours > 600, "too few frames keyed by a port of ours: {ours}");
        for (name, frame, want) in cases() {
            // (Frames cut short are the reference's business only.)
            let whole = !name.contains(" cut ");
            if whole
                && SlicedPacket::from_ethernet(&frame).is_ok_and(|p| p.net.is_some() || want == 0)
                && frame.len() > 14
            {
                assert_eq!(etherparse_key(&s, &frame), want, "{name}");
            }
        }
        assert_eq!(checked, 4000);
    }

    // -----------------------------------------------------------------------
    // A cBPF interpreter for the opcodes fanout_program uses, with the
    // kernel's load semantics (`bpf_skb_load_helper_convert_offset` and the
    // bounds test in `bpf_skb_load_helper_{8,16,32}`): a load beyond the end
    // of the packet ends the program with 0.

    /// The parts of an skb the program can see. `frame` starts at the MAC
    /// header; `data_off` is where `skb->data` points (14 on the receive
    /// path, 0 on the transmit path).
    struct Skb<'a> {
        frame: &'a [u8],
        data_off: usize,
        protocol: u32,
    }

    impl Skb<'_> {
        fn load(&self, k: i32, size: usize) -> Option<u32> {
            let net_offset = ETH_HLEN as i64 - self.data_off as i64;
            let off = if k >= 0 {
                i64::from(k)
            } else if k >= libc::SKF_NET_OFF {
                i64::from(k - libc::SKF_NET_OFF) + net_offset
            } else {
                panic!("load at {k:#x}: not modelled");
            };
            let len = (self.frame.len() - self.data_off) as i64;
            if len - off < size as i64 {
                return None;
            }
            let start = usize::try_from(self.data_off as i64 + off).ok()?;
            load_n(&self.frame[start..], size)
        }
    }

    fn load_n(b: &[u8], size: usize) -> Option<u32> {
        match size {
            1 => load::<1>(b, 0),
            2 => load::<2>(b, 0),
            4 => load::<4>(b, 0),
            _ => unreachable!(),
        }
    }

    fn run(prog: &[libc::sock_filter], skb: &Skb) -> u32 {
        use libc::*;
        let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0usize;
        let size = |code: u32| match code & 0x18 {
            BPF_W => 4,
            BPF_H => 2,
            BPF_B => 1,
            _ => unreachable!(),
        };
        loop {
            let ins = prog[pc];
            pc += 1;
            let code = u32::from(ins.code);
            let k = ins.k;
            match code {
                _ if code == BPF_LD | BPF_W | BPF_ABS && k as i32 == SKF_AD_OFF + SKF_AD_PROTOCOL => a = skb.protocol,
                _ if code & 0x07 == BPF_LD && code & 0xe0 == BPF_ABS => match skb.load(k as i32, size(code)) {
                    Some(v) => a = v,
                    None => return 0,
                },
                _ if code & 0x07 == BPF_LD && code & 0xe0 == BPF_IND => {
                    match skb.load(x.wrapping_add(k) as i32, size(code)) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                _ if code == BPF_LDX | BPF_B | BPF_MSH => match skb.load(k as i32, 1) {
                    Some(v) => x = (v & 0xf) << 2,
                    None => return 0,
                },
                _ if code == BPF_LD | BPF_MEM => a = m[k as usize],
                _ if code == BPF_LDX | BPF_MEM => x = m[k as usize],
                _ if code == BPF_ST => m[k as usize] = a,
                _ if code == BPF_ALU | BPF_AND | BPF_K => a &= k,
                _ if code == BPF_ALU | BPF_LSH | BPF_K => a <<= k,
                _ if code == BPF_ALU | BPF_ADD | BPF_X => a = a.wrapping_add(x),
                _ if code == BPF_ALU | BPF_MUL | BPF_K => a = a.wrapping_mul(k),
                _ if code == BPF_ALU | BPF_RSH | BPF_K => a >>= k,
                _ if code == BPF_ALU | BPF_XOR | BPF_X => a ^= x,
                _ if code == BPF_LD | BPF_IMM => a = k,
                _ if code == BPF_MISC | BPF_TAX => x = a,
                _ if code == BPF_MISC | BPF_TXA => a = x,
                _ if code == BPF_JMP | BPF_JA => pc += k as usize,
                _ if code & 0x07 == BPF_JMP => {
                    let taken = match code & 0xf0 {
                        BPF_JEQ => a == k,
                        BPF_JGE => a >= k,
                        BPF_JGT => a > k,
                        BPF_JSET => a & k != 0,
                        _ => panic!("jump {code:#x} not modelled"),
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                _ if code == BPF_RET | BPF_A => return a,
                _ if code == BPF_RET | BPF_K => return k,
                _ => panic!("opcode {code:#x} not modelled"),
            }
        }
    }

    /// Run the program over `frame` with `skb->data` at the network header
    /// (receive path) and at the MAC header (transmit path); both must agree.
    fn run_both(prog: &[libc::sock_filter], frame: &[u8]) -> u32 {
        if frame.len() < ETH_HLEN {
            return 0; // never reaches a packet socket
        }
        let protocol = u32::from(u16::from_be_bytes([frame[12], frame[13]]));
        let rx = run(prog, &Skb { frame, data_off: ETH_HLEN, protocol });
        let tx = run(prog, &Skb { frame, data_off: 0, protocol });
        assert_eq!(rx, tx, "result depends on where skb->data points: {frame:02x?}");
        rx
    }

    /// splitmix64, as in `wire::robust`.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn program_matches_reference_on_real_frames_and_every_truncation() {
        let prog = fanout_program(&steering());
        let mut runs = 0;
        for (name, frame, want) in cases() {
            assert_eq!(run_both(&prog, &frame), want, "{name}");
            for cut in 0..frame.len() {
                let f = &frame[..cut];
                assert_eq!(run_both(&prog, f), uplink_hash(&steering(), f), "{name} cut at {cut}");
                runs += 1;
            }
        }
        assert!(runs > 1000, "{runs}");
    }

    #[test]
    fn program_matches_reference_on_mutated_and_random_frames() {
        let prog = fanout_program(&steering());
        let seeds: Vec<Vec<u8>> = cases().into_iter().map(|(_, f, _)| f).filter(|f| f.len() > 14).collect();
        let mut rng = Rng(0x0007_a9e7);
        let mut keyed = 0;
        for i in 0..50_000 {
            let mut f = if i % 4 == 0 {
                // Random bytes, usually labelled IPv4 version 4.
                let mut f: Vec<u8> = (0..rng.below(120)).map(|_| rng.next() as u8).collect();
                if f.len() > 14 && rng.below(4) != 0 {
                    f[12..15].copy_from_slice(&[0x08, 0x00, 0x40 | (rng.next() as u8 & 0xf)]);
                }
                f
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            for _ in 0..rng.below(4) {
                if !f.is_empty() {
                    let at = rng.below(f.len().min(80));
                    f[at] = rng.next() as u8;
                }
            }
            if rng.below(3) == 0 {
                f.truncate(rng.below(f.len() + 1));
            }
            let want = uplink_hash(&steering(), &f);
            keyed += usize::from(want != 0);
            assert_eq!(run_both(&prog, &f), want, "iteration {i}: {f:02x?}");
        }
        assert!(keyed > 10_000, "too few frames got a non-zero key: {keyed}");
    }

    #[test]
    fn program_is_position_independent_and_well_formed() {
        let prog = fanout_program(&steering());
        assert!(prog.len() < 256, "{}", prog.len());
        let net_range = libc::SKF_NET_OFF..libc::SKF_NET_OFF + 0x1000;
        for (pc, ins) in prog.iter().enumerate() {
            let code = u32::from(ins.code);
            let class = code & 0x07;
            let mode = code & 0xe0;
            if (class == libc::BPF_LD || class == libc::BPF_LDX)
                && matches!(mode, libc::BPF_ABS | libc::BPF_IND | libc::BPF_MSH)
            {
                let k = ins.k as i32;
                let anc = k == libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL;
                assert!(anc || net_range.contains(&k), "pc {pc}: load at {k:#x} is not SKF_NET_OFF-relative");
            }
            if class == libc::BPF_JMP {
                let far =
                    if code == libc::BPF_JMP | libc::BPF_JA { ins.k as usize } else { usize::from(ins.jt.max(ins.jf)) };
                assert!(pc + 1 + far < prog.len(), "pc {pc} jumps out of the program");
            }
            let memory = (class == libc::BPF_LD || class == libc::BPF_LDX) && mode == libc::BPF_MEM;
            if memory || class == libc::BPF_ST || class == libc::BPF_STX {
                assert!(ins.k < libc::BPF_MEMWORDS as u32);
            }
        }
        let last = u32::from(prog[prog.len() - 1].code);
        assert_eq!(last & 0x07, libc::BPF_RET);
    }

    /// The kernel's own cBPF checker (`bpf_check_classic`, then the
    /// translation to eBPF) accepts the program. Attaching a socket filter
    /// to a UDP socket needs no privilege, so this runs everywhere.
    #[test]
    fn kernel_accepts_the_program() {
        let prog = fanout_program(&steering());
        let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut _ };
        // SAFETY: plain socket creation.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: fd was just returned by socket and is owned by nobody else.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: fprog points to prog, which outlives the call; the kernel
        // copies it.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    }
}
