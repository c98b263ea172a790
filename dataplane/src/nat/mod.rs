//! NAT for tapnet's gateway: what docker0's iptables MASQUERADE and DNAT
//! rules do, as pure logic over packet bytes. No I/O, no allocation after
//! setup, no lock; time is passed in.
//!
//! # What it does
//!
//! Each network has a gateway in the dataplane. Containers reach the
//! outside through an uplink whose IPv4 address, U, the dataplane owns.
//! - **Masquerade (SNAT).** A container's `C:p -> R:q` leaves as
//!   `U:p' -> R:q`; `p' = p` when that is free, as netfilter does. Replies
//!   to `U:p'` go back to `C:p`.
//! - **Published ports (DNAT).** With `-p 8080:80/tcp`, `R:x -> U:8080`
//!   reaches the container as `R:x -> C:80`; its replies leave from U:8080.
//! - **Hairpin (DNAT + SNAT).** A container connecting to `U:8080` of its
//!   own network is sent to `C2:80` from the gateway's address, so that
//!   C2's replies come back through the gateway to be translated.
//! - **`--masquerade=false`.** Flows go out untranslated but are still
//!   tracked (identity entries).
//!
//! TCP, UDP and ICMP echo (translated by identifier) are covered. ICMP
//! errors about a tracked flow (destination unreachable, fragmentation
//! needed, time exceeded, parameter problem) are translated too, the
//! packet they quote included, so path MTU discovery and traceroute work
//! through the NAT.
//!
//! # The pieces
//!
//! - [`tuple`](mod@tuple): the [`FlowKey`] of a packet, or of the packet an ICMP error
//!   quotes ([`classify`]); everything else gets a [`NatDrop`] reason.
//! - [`conntrack`]: the per-worker [`Conntrack`] table: entries indexed by
//!   their original and reply tuples, the TCP state machine, timeouts, the
//!   bounded table, port allocation, the incremental sweep, the dump.
//! - [`rewrite`](mod@rewrite): in-place translation to a target tuple with incremental
//!   checksum updates, ICMP error translation, the TTL decrement.
//! - [`icmp`]: the ICMP errors the gateway sends itself.
//!
//! The caller (the worker) decides policy: whether a new flow is
//! masqueraded, published or refused, and with which addresses. It builds
//! the reply tuple with [`FlowKey::with_src`] / [`FlowKey::with_dst`] and
//! hands it to [`Conntrack::insert`]; from then on the entry knows what
//! each direction becomes ([`Entry::target`]).
//!
//! # Threading
//!
//! One [`Conntrack`] per worker, used only by its thread. Every flow has an
//! owning worker, and packets are handed to the owner before they reach
//! this module; `crate::port::steer` defines the keys (`end_hash`,
//! `port_hash`) and `crate::router::route` picks the owner of each packet.
//! Replies to a masqueraded flow come back to the uplink address and a
//! port this module chose, and the uplink's fanout program steers them by
//! `port_hash(port)`; so the allocator must pick a port (or ICMP
//! identifier) whose hash the owner itself owns: [`Conntrack::alloc`] takes
//! an `accept` predicate, `|p| owner_of(port_hash(p)) == me` in the router.
//!
//! # Checksums
//!
//! Addresses and ports are rewritten in place and every checksum that
//! covers them is updated incrementally (RFC 1624 eqn. 3), so the cost does
//! not depend on the packet's length. The transport checksum arrives in one
//! of three states, which [`L4Csum`] and the packet tell apart:
//! - **complete** ([`L4Csum::Full`]): updated for address (pseudo-header)
//!   and port changes;
//! - **partial** ([`L4Csum::Partial`], virtio-net `NEEDS_CSUM`): the field
//!   holds the un-complemented pseudo-header sum that the kernel or NIC
//!   completes later. An address change adjusts it in the opposite sense
//!   (`S' = S + ~old + new`); a port change leaves it alone, since ports
//!   lie in the region summed later. TSO super-frames keep their GSO
//!   metadata and stay whole through the NAT in both directions;
//! - **UDP checksum 0** ("none", RFC 768): left at 0; a computed 0 is
//!   sent as 0xffff.
//!
//! # Example: masquerade a container's DNS query and its reply
//!
//! ```
//! use std::net::Ipv4Addr;
//! use dataplane::nat::{rewrite, Classified, Conntrack, Dir, FlowKey, L4Csum, NewFlow, Timeouts};
//!
//! let uplink = Ipv4Addr::new(192, 0, 2, 10);
//! let mut ct = Conntrack::new(65_536, Timeouts::default()).unwrap();
//!
//! /// What the worker does with one packet (bytes from the IPv4 header on).
//! fn translate(ct: &mut Conntrack, uplink: Ipv4Addr, pkt: &mut [u8], now: u64) -> FlowKey {
//!     let Classified::Flow(f) = dataplane::nat::classify(pkt).unwrap() else { unreachable!() };
//!     let target = match ct.lookup(&f.key, now) {
//!         Some((id, dir)) => ct.update(id, dir, f.tcp_flags, f.len.into(), now).unwrap().target(dir),
//!         None => {
//!             // A new outbound flow: masquerade, keeping the port if free.
//!             let k = f.key;
//!             let port = ct.alloc(k.proto, k.dst, k.dport, uplink, k.sport, 1024..=65535, |_| true).unwrap();
//!             let new = NewFlow {
//!                 original: k,
//!                 reply: k.with_src(uplink, port).reverse(),
//!                 tag: 0,
//!                 tcp_flags: f.tcp_flags,
//!                 bytes: f.len.into(),
//!             };
//!             let id = ct.insert(new, now).unwrap();
//!             ct.get(id).unwrap().target(Dir::Original)
//!         }
//!     };
//!     assert!(rewrite::decrement_ttl(pkt).unwrap() > 1);
//!     rewrite::rewrite(pkt, &target, L4Csum::Full).unwrap();
//!     target
//! }
//!
//! let mut query = Vec::new();
//! etherparse::PacketBuilder::ipv4([10, 88, 0, 2], [203, 0, 113, 5], 64)
//!     .udp(40000, 53)
//!     .write(&mut query, b"query")
//!     .unwrap();
//! let out = translate(&mut ct, uplink, &mut query, 0);
//! assert_eq!(out.to_string(), "udp 192.0.2.10:40000 -> 203.0.113.5:53");
//!
//! let mut answer = Vec::new();
//! etherparse::PacketBuilder::ipv4([203, 0, 113, 5], uplink.octets(), 60)
//!     .udp(53, 40000)
//!     .write(&mut answer, b"answer")
//!     .unwrap();
//! let back = translate(&mut ct, uplink, &mut answer, 5);
//! assert_eq!(back.to_string(), "udp 203.0.113.5:53 -> 10.88.0.2:40000");
//! // Checksums are right, as etherparse recomputes them.
//! let p = etherparse::SlicedPacket::from_ip(&answer).unwrap();
//! let Some(etherparse::TransportSlice::Udp(u)) = p.transport else { panic!() };
//! let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
//! assert_eq!(u.checksum(), u.to_header().calc_checksum_ipv4(&ip.header().to_header(), u.payload()).unwrap());
//! assert_eq!(ct.iter(5).next().unwrap().entry.packets, [1, 1]);
//! ```
//!
//! # Not handled here
//!
//! Reassembly (a first fragment is translated, later ones are refused:
//! tapnet's containers send with DF), TCP sequence-window tracking
//! (netfilter's `nf_conntrack_tcp_be_liberal` behaviour: a RST closes
//! without a window check), protocol helpers (FTP, SIP), IPv6.

#![forbid(unsafe_code)]

// Hex dumps, 16 bytes a line as tcpdump -xx prints them.
#[cfg(test)]
#[rustfmt::skip]
mod captured;
pub mod conntrack;
pub mod icmp;
pub mod rewrite;
pub mod tuple;

pub use conntrack::{
    Conntrack, ConntrackError, Dir, Entry, EntryId, Exported, Kind, NewFlow, State, TcpState, Timeouts,
};
pub use icmp::{build_error, BuildError, ErrorKind, Suppressed};
pub use rewrite::{decrement_ttl, rewrite, rewrite_icmp_error, IcmpErrorRewrite, L4Csum, RewriteError};
pub use tuple::{classify, Classified, Flow, FlowKey, IcmpErrorInfo, NatDrop, Proto};

#[cfg(test)]
mod tests {
    use super::captured::*;
    use super::*;
    use std::net::Ipv4Addr;

    const U: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    /// Random and mutated packets through the whole path a worker takes:
    /// classify, look up or masquerade, update, translate, TTL. Nothing
    /// panics, whatever `classify` accepts the rewrite accepts too, and the
    /// table stays consistent.
    #[test]
    fn random_packets_through_the_whole_path() {
        let seeds: [&[u8]; 10] = [
            &TCP_SYN,
            &TCP_SYNACK_PARTIAL,
            &TCP_DATA,
            &UDP_DNS,
            &ECHO_REQUEST,
            &ECHO_REPLY,
            &PORT_UNREACHABLE_UDP,
            &TIME_EXCEEDED_TCP,
            &TIME_EXCEEDED_ECHO,
            &FRAG_NEEDED_ECHO,
        ];
        let mut ct = Conntrack::new(64, Timeouts::default()).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut now, mut flows, mut errors) = (0u64, 0, 0);
        for i in 0..100_000 {
            let base = seeds[i % seeds.len()];
            let mut p = base.to_vec();
            for _ in 0..next() % 3 {
                // Mostly in the headers, where it matters.
                let at = (next() as usize) % p.len().min(64);
                p[at] = next() as u8;
            }
            if next() % 16 == 0 {
                p.truncate((next() as usize) % (p.len() + 1));
            }
            now += next() % 1_000;
            let csum = if next() % 4 == 0 { L4Csum::Partial } else { L4Csum::Full };
            match classify(&p) {
                Ok(Classified::Flow(f)) => {
                    let to = match ct.lookup(&f.key, now) {
                        Some((id, dir)) => ct.update(id, dir, f.tcp_flags, f.len.into(), now).unwrap().target(dir),
                        None => {
                            let k = f.key;
                            let Some(port) = ct.alloc(k.proto, k.dst, k.dport, U, k.sport, 1024..=65535, |_| true)
                            else {
                                continue;
                            };
                            let new = NewFlow {
                                original: k,
                                reply: k.with_src(U, port).reverse(),
                                tag: 0,
                                tcp_flags: f.tcp_flags,
                                bytes: f.len.into(),
                            };
                            match ct.insert(new, now) {
                                Ok(id) => ct.get(id).unwrap().target(Dir::Original),
                                Err(ConntrackError::Full | ConntrackError::Rst | ConntrackError::Exists) => continue,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    };
                    rewrite(&mut p, &to, csum).unwrap_or_else(|e| panic!("iteration {i}: {e} for {:?}", f.key));
                    assert_eq!(FlowKey::from_ipv4(&p), Ok(to));
                    decrement_ttl(&mut p).unwrap();
                    flows += 1;
                    // Now and then a router beyond answers the translated
                    // packet with an error: translated back, it quotes the
                    // packet as it was before NAT.
                    if next() % 4 == 0 {
                        let mut err = [0u8; icmp::MAX_ERROR_LEN];
                        let router = Ipv4Addr::new(198, 51, 100, 1);
                        if let Ok(n) = build_error(&mut err, router, &p, ErrorKind::TimeExceeded) {
                            let e = tuple::FlowKey::from_icmp_error(&err[..n]).unwrap();
                            let (id, dir) = ct.lookup_icmp_error(&e, now).unwrap();
                            let plan = ct.get(id).unwrap().icmp_error_rewrite(dir, router, to.src);
                            rewrite_icmp_error(&mut err[..n], &plan, L4Csum::Full).unwrap();
                            assert_eq!(plan.inner, f.key);
                            assert_eq!(FlowKey::from_icmp_error(&err[..n]), Ok(f.key));
                            errors += 1;
                        }
                    }
                }
                Ok(Classified::IcmpError(e)) => {
                    if let Some((id, dir)) = ct.lookup_icmp_error(&e.inner, now) {
                        let plan = ct.get(id).unwrap().icmp_error_rewrite(dir, e.src, e.dst);
                        rewrite_icmp_error(&mut p, &plan, csum).unwrap();
                        assert_eq!(FlowKey::from_icmp_error(&p), Ok(plan.inner));
                        errors += 1;
                    }
                }
                Err(_) => {}
            }
            ct.sweep(now, 2);
            assert!(ct.len() <= ct.capacity());
        }
        assert!(flows > 10_000 && errors > 1_000, "{flows} flows, {errors} errors translated");
    }
}
