//! The VXLAN tunnels' socket layer (`dataplane::port::udp`).
//!
//! VXLAN sends run on the loopback interface of the current namespace (no
//! privilege needed). Each iteration puts 40 VXLAN datagrams of 1000 bytes
//! (an 8-byte VXLAN header and 992 bytes each, the scatter list
//! `[header, payload]` per datagram) on the wire, and reports per datagram
//! (`Throughput::Elements(40)`). The receiver is a UDP socket whose filter
//! drops everything: on loopback the sending thread also runs the receive
//! path up to that socket, but nothing is copied to user space. On a real
//! NIC the segmentation and checksums of the GSO case would be offloaded,
//! so loopback understates its advantage.
//!
//! Cases:
//! - `vxlan_send/sendmmsg_zero_csum`: `send_batch`, zero UDP checksums
//!   (the default mode): one `sendmmsg` for the 40.
//! - `vxlan_send/sendmmsg_csum`: the same with UDP checksums (checksum
//!   mode). Loopback offloads checksums (`NETIF_F_HW_CSUM`: none is ever
//!   computed), so this only shows that the mode itself costs nothing more.
//! - `vxlan_send/gso`: `send_gso` in checksum mode: one `sendmsg` with
//!   `UDP_SEGMENT`, cut into the 40 datagrams below the socket.
//!
//! GRE has no case here: a tunnel is one raw socket that needs CAP_NET_RAW
//! (`dataplane::port::gre`), and `tapnet bench --scenario gre` measures it
//! end to end.

use std::hint::black_box;
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::port::udp::{open_vxlan, UdpTunnelQueue};

const SEGMENTS: usize = 40;
const SEG: usize = 1000;

/// A loopback UDP socket that drops everything it is sent.
fn sink() -> (UdpSocket, SocketAddrV4) {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let drop_all = [libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 }];
    let prog = libc::sock_fprog { len: 1, filter: drop_all.as_ptr().cast_mut() };
    // SAFETY: s is an open socket; prog points to drop_all, which outlives
    // the call (the kernel copies the program).
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let std::net::SocketAddr::V4(a) = s.local_addr().unwrap() else { unreachable!() };
    (s, a)
}

fn tunnel(udp_csum: bool) -> UdpTunnelQueue {
    open_vxlan(Ipv4Addr::LOCALHOST, 0, 1, 1, udp_csum).unwrap().pop().unwrap()
}

fn vxlan_send(c: &mut Criterion) {
    let (_sink, to) = sink();
    let head = [0x08u8, 0, 0, 0, 0, 0, 42, 0];
    let body = vec![0x5au8; SEG - head.len()];
    let pairs: Vec<[IoSlice; 2]> = (0..SEGMENTS).map(|_| [IoSlice::new(&head), IoSlice::new(&body)]).collect();
    let msgs: Vec<&[IoSlice]> = pairs.iter().map(|p| &p[..]).collect();
    let flat: Vec<IoSlice> = pairs.iter().flatten().copied().collect();

    let mut g = c.benchmark_group("vxlan_send");
    g.throughput(Throughput::Elements(SEGMENTS as u64));
    for (name, udp_csum) in [("sendmmsg_zero_csum", false), ("sendmmsg_csum", true)] {
        let mut q = tunnel(udp_csum);
        g.bench_function(name, |b| {
            b.iter(|| {
                let s = q.send_batch(0, to, black_box(&msgs));
                assert_eq!(s.sent, SEGMENTS);
            })
        });
    }
    let mut q = tunnel(true);
    g.bench_function("gso", |b| {
        b.iter(|| assert_eq!(q.send_gso(0, to, black_box(&flat), SEG as u16).unwrap(), SEGMENTS))
    });
    g.finish();
}

criterion_group!(benches, vxlan_send);
criterion_main!(benches);
