//! Live takeover: `tapnet daemon --takeover` starts a new daemon (a new
//! binary after an upgrade, say) in place of a running one, without
//! stopping the traffic.
//!
//! Protocol, on the running daemon's API socket:
//! 1. The new daemon connects and sends `{"op":"takeover","workers":W}`.
//! 2. The old daemon's engine thread takes it in turn with the changes, so
//!    none is under way; it refuses (one error line, nothing changed) a
//!    different worker count (queue `i` of every TAP is worker `i`'s). Else
//!    it saves `state.json` and answers `{"ok":true,"data":HANDOVER}`
//!    ([`Handover`]: its pid, the workers, the whole saved state, each
//!    endpoint's container, interface, port and queue count, the number
//!    of descriptors that follow, the learned MAC entries and the uplink:
//!    its options, link, MAC, MTU, `--snat-ports` and socket count, its
//!    ARP cache, the connection tables, and the tunnels: kind, underlay,
//!    port, checksum mode, pool and socket count), then sends duplicates of the
//!    descriptors with `SCM_RIGHTS`, at most [`MAX_FDS`] per message (one
//!    byte `F` each): the state directory's lock (an `flock` goes with its
//!    open file), the API socket's listener, every endpoint's queues
//!    in the order of `endpoints`, then the uplink's AF_PACKET sockets in
//!    worker order, then every tunnel's (`tunnels` order; per tunnel as
//!    `dataplane::port::tunnel_fds` lists them) (the fanout group and steering program are the
//!    sockets', so the duplicates keep them; a macvlan child stays, the
//!    old daemon does not delete it).
//! 3. The new daemon builds its engine on them ([`Engine::restore_handed`]),
//!    starts its workers and its API server on the same listener, and
//!    sends `ready\n`. Until then the old daemon takes no change and its
//!    workers are paused (see below); the descriptors are duplicates of
//!    the same open files, so each frame is read by one of the two,
//!    neither lost nor doubled.
//! 4. The old daemon answers `{"ok":true,"data":"handed over"}` and exits
//!    0, leaving everything in place (as `--keep`, without saving again:
//!    the state is the new daemon's now). Its queues close; the new
//!    daemon's keep the TAPs' queues attached.
//!
//! Both daemons accept on the listener until the old one exits (a few
//! tens of ms after `ready`): a client the old one accepts then, or whose
//! change was queued behind the takeover, is told `the daemon is shutting
//! down` and may retry.
//!
//! If the new daemon closes the connection or says anything else than
//! `ready` within [`READY_TIMEOUT`], the old daemon keeps running and takes
//! changes again.
//!
//! The learned MAC entries go in the answer too (`macs`), and the new
//! daemon learns them before it forwards (their age starts again); MACs
//! learned by the old daemon after its answer are learned again by the
//! new one from the next frame. Connection tracking goes too: before it
//! answers, the old daemon pauses its workers' reading (each finishes its
//! batch) and exports every worker's table (`conntrack`), which the new
//! daemon imports into the same workers before they read; the old
//! workers stay paused until it exits (or resume if the takeover fails),
//! so no table changes after the snapshot. That pause, logged, is the
//! forwarding stall: the frames wait in the queues.
//!
//! [`Engine::restore_handed`]: crate::engine::Engine::restore_handed

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::{reply_line, Request};
use crate::engine::{Engine, HandedQueues, HandedTunnel, HandedUplink, Saved};

/// Descriptors per message (the kernel's `SCM_MAX_FD` is 253).
pub(super) const MAX_FDS: usize = 250;
/// How long the old daemon waits for `ready`.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the new daemon waits for each part of the old one's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of a takeover, on the new daemon's side.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    /// Nothing listens on the socket.
    #[error("no tapnet daemon answers on {0}: nothing to take over")]
    NoDaemon(String),
    /// The running daemon said no; it keeps running.
    #[error("the running daemon refused the takeover: {0}")]
    Refused(String),
    /// The exchange broke off; the old daemon keeps running.
    #[error("takeover: {step}: {source}; the running daemon keeps running")]
    Io { step: &'static str, source: io::Error },
    /// The old daemon's answer made no sense.
    #[error("takeover: bad answer from the running daemon: {0}; it keeps running")]
    BadAnswer(String),
}

fn io_step(step: &'static str) -> impl FnOnce(io::Error) -> TakeoverError {
    move |source| TakeoverError::Io { step, source }
}

/// The old daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handover {
    pub pid: u32,
    pub workers: usize,
    pub saved: Saved,
    pub endpoints: Vec<HandedEndpoint>,
    /// Descriptors sent after this line: lock, listener, the queues, then
    /// the uplink's sockets (worker order).
    pub fds: usize,
    /// The learned MAC entries of each network: (network, [(MAC, port)]).
    #[serde(default)]
    pub macs: Vec<(String, Vec<(String, u16)>)>,
    /// The uplink, if any; its sockets are the last descriptors.
    #[serde(default)]
    pub uplink: Option<HandedUplink>,
    /// The uplink's neighbours (ARP cache): (IP, MAC).
    #[serde(default)]
    pub neighbours: Vec<(std::net::Ipv4Addr, String)>,
    /// Each worker's tracked connections, worker order, each as the words
    /// of `dataplane::nat::Exported::to_words` (timers relative to the
    /// export), taken while the workers were paused.
    #[serde(default)]
    pub conntrack: Vec<Vec<Vec<u64>>>,
    /// The overlays' tunnels; their sockets follow the uplink's, tunnel
    /// by tunnel.
    #[serde(default)]
    pub tunnels: Vec<HandedTunnel>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandedEndpoint {
    pub container: String,
    pub ifname: String,
    pub port: u16,
    pub queues: usize,
}

/// Send `fds` over `sock`, [`MAX_FDS`] at a time, each batch with one byte.
pub(super) fn send_fds(sock: &UnixStream, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    for chunk in fds.chunks(MAX_FDS) {
        let raw: Vec<RawFd> = chunk.iter().map(|f| f.as_raw_fd()).collect();
        let bytes = std::mem::size_of_val(raw.as_slice());
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
        // u64 words: cmsghdr alignment.
        let mut cbuf = vec![0u64; space.div_ceil(8)];
        let mut byte = [b'F'];
        let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` zeroed, aligned bytes, room
        // for one header and `bytes` of data (CMSG_SPACE), so the first
        // header and its data are inside cbuf; the copy writes `bytes`.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), bytes);
        }
        loop {
            // SAFETY: sock is open; msg points at live buffers (iov, cbuf)
            // set up above; the descriptors in it are open (borrowed).
            let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            if n >= 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Read what arrives on `sock` into `bytes` and `fds`: returns the bytes
/// read (0 at the end of the stream).
pub(super) fn recv_some(sock: &UnixStream, bytes: &mut Vec<u8>, fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut buf = [0u8; 16 * 1024];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((253 * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: sock is open; msg points at live buffers the kernel
        // fills up to their given lengths.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed headers; CMSG_FIRSTHDR/NXTHDR stay inside them, and an
    // SCM_RIGHTS header's data holds (cmsg_len - CMSG_LEN(0)) / 4 new
    // descriptors, which nobody else owns (read unaligned to be safe).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors were cut off (out of file descriptors?)"));
    }
    bytes.extend_from_slice(&buf[..n]);
    Ok(n)
}

/// The old daemon's side, on its engine thread: refuse, or hand `engine`
/// over on `conn` and wait for `ready`. `lock` and `listener` are the
/// daemon's. Ok: handed over (the engine must not change any more, and
/// the daemon must exit). Err: the message for the requester; this daemon
/// goes on as before.
pub(super) fn give(
    engine: &Engine,
    store: &super::state::Store,
    conn: UnixStream,
    workers: usize,
    lock: BorrowedFd<'_>,
    listener: BorrowedFd<'_>,
) -> Result<(), String> {
    if workers != engine.workers() {
        return Err(format!(
            "this daemon runs {} workers and the new one {workers}: start it with --workers {}",
            engine.workers(),
            engine.workers()
        ));
    }
    if let Some(why) = engine.takeover_blocker() {
        return Err(why.into());
    }
    // From here until the new daemon is ready, this one's workers read
    // nothing (the frames wait in the queues for the new one), so the
    // tables handed over stay true: the forwarding pause.
    let t0 = std::time::Instant::now();
    engine.pause(true).map_err(|e| format!("could not pause the workers: {e}"))?;
    let r = give_paused(engine, store, conn, workers, lock, listener);
    let paused = t0.elapsed();
    if r.is_err() {
        if let Err(e) = engine.pause(false) {
            eprintln!("tapnet: could not resume the workers: {e}");
        }
    }
    eprintln!("tapnet: takeover: this daemon's workers paused for {:.1} ms", paused.as_secs_f64() * 1e3);
    r
}

fn give_paused(
    engine: &Engine,
    store: &super::state::Store,
    conn: UnixStream,
    workers: usize,
    lock: BorrowedFd<'_>,
    listener: BorrowedFd<'_>,
) -> Result<(), String> {
    let conntrack = engine.export_conntrack().map_err(|e| format!("could not export the connections: {e}"))?;
    let saved = engine.saved();
    store.save(&saved).map_err(|e| format!("could not save the state: {e}"))?;
    let queues = engine.handover_queues().map_err(|e| format!("could not duplicate the queues: {e}"))?;
    let endpoints: Vec<HandedEndpoint> = queues
        .iter()
        .map(|(c, ifname, q)| {
            let port = saved
                .containers
                .iter()
                .find(|s| &s.name == c)
                .and_then(|s| s.endpoints.iter().find(|e| &e.ifname == ifname))
                .map_or(0, |e| e.port);
            HandedEndpoint { container: c.clone(), ifname: ifname.clone(), port, queues: q.len() }
        })
        .collect();
    let (uplink, sockets) = match engine.handover_uplink() {
        Ok(Some((u, s))) => (Some(u), s),
        Ok(None) => (None, Vec::new()),
        Err(e) => return Err(format!("could not duplicate the uplink's sockets: {e}")),
    };
    let tunnels = engine.handover_tunnels().map_err(|e| format!("could not duplicate the tunnels' sockets: {e}"))?;
    let mut fds = vec![lock, listener];
    fds.extend(queues.iter().flat_map(|(_, _, q)| q.iter().map(|f| f.as_fd())));
    fds.extend(sockets.iter().map(|f| f.as_fd()));
    fds.extend(tunnels.iter().flat_map(|(_, s)| s.iter().map(|f| f.as_fd())));
    let tunnels: Vec<HandedTunnel> = tunnels.iter().map(|(t, _)| t.clone()).collect();
    let macs = engine.learned_macs();
    let neighbours = engine.learned_neighbours();
    let h = Handover {
        pid: std::process::id(),
        workers,
        saved,
        endpoints,
        fds: fds.len(),
        macs,
        uplink,
        neighbours,
        conntrack,
        tunnels,
    };
    let value = serde_json::to_value(&h).map_err(|e| e.to_string())?;
    // The server's connection is non-blocking (the same open file): block
    // here, with a timeout, and give it back as it was.
    let setup = |c: &UnixStream, block: bool| -> io::Result<()> {
        c.set_nonblocking(!block)?;
        c.set_read_timeout(block.then_some(READY_TIMEOUT))?;
        c.set_write_timeout(block.then_some(READY_TIMEOUT))
    };
    setup(&conn, true).map_err(|e| format!("connection: {e}"))?;
    let r = (|| -> Result<(), String> {
        (&conn).write_all(&reply_line(Ok(value))).map_err(|e| format!("sending the state: {e}"))?;
        send_fds(&conn, &fds).map_err(|e| format!("sending the descriptors: {e}"))?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while line.len() < 64 {
            match (&conn).read(&mut b) {
                Ok(0) => return Err("the new daemon went away before it was ready".into()),
                Ok(_) if b[0] == b'\n' => break,
                Ok(_) => line.push(b[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("waiting for the new daemon: {e}")),
            }
        }
        if line != b"ready" {
            return Err(format!("the new daemon said {:?} instead of ready", String::from_utf8_lossy(&line)));
        }
        Ok(())
    })();
    let _ = setup(&conn, false);
    r
}

/// What the new daemon receives.
pub(super) struct Taken {
    /// The connection to the old daemon, to say `ready` on.
    pub(super) conn: UnixStream,
    pub(super) handover: Handover,
    pub(super) lock: File,
    pub(super) listener: UnixListener,
    pub(super) queues: HandedQueues,
    /// The uplink and its sockets, worker order.
    pub(super) uplink: Option<(HandedUplink, Vec<OwnedFd>)>,
    /// The tunnels and their sockets.
    pub(super) tunnels: Vec<(HandedTunnel, Vec<OwnedFd>)>,
}

/// The new daemon's side: ask the daemon on `socket` for everything.
pub(super) fn take(socket: &Path, workers: usize) -> Result<Taken, TakeoverError> {
    let conn = UnixStream::connect(socket).map_err(|_| TakeoverError::NoDaemon(socket.display().to_string()))?;
    conn.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io_step("set a timeout"))?;
    let mut req = serde_json::to_vec(&Request::Takeover { workers }).expect("a request serializes");
    req.push(b'\n');
    (&conn).write_all(&req).map_err(io_step("asking"))?;
    let (mut bytes, mut fds) = (Vec::new(), Vec::new());
    let end = loop {
        if let Some(i) = bytes.iter().position(|&b| b == b'\n') {
            break i;
        }
        if recv_some(&conn, &mut bytes, &mut fds).map_err(io_step("reading the answer"))? == 0 {
            return Err(TakeoverError::BadAnswer("the connection closed".into()));
        }
    };
    let reply: serde_json::Value =
        serde_json::from_slice(&bytes[..end]).map_err(|e| TakeoverError::BadAnswer(e.to_string()))?;
    if reply.get("ok") != Some(&serde_json::Value::Bool(true)) {
        let msg = reply.get("error").and_then(|e| e.as_str()).unwrap_or("no reason given");
        return Err(TakeoverError::Refused(msg.to_string()));
    }
    let handover: Handover = serde_json::from_value(reply.get("data").cloned().unwrap_or_default())
        .map_err(|e| TakeoverError::BadAnswer(e.to_string()))?;
    let sockets = handover.uplink.as_ref().map_or(0, |u| u.sockets);
    let want: usize = 2
        + handover.endpoints.iter().map(|e| e.queues).sum::<usize>()
        + sockets
        + handover.tunnels.iter().map(|t| t.sockets).sum::<usize>();
    if handover.fds != want || handover.workers != workers {
        return Err(TakeoverError::BadAnswer(format!(
            "{} descriptors for {} endpoints, {} workers",
            handover.fds,
            handover.endpoints.len(),
            handover.workers
        )));
    }
    while fds.len() < want {
        if recv_some(&conn, &mut bytes, &mut fds).map_err(io_step("receiving the descriptors"))? == 0 {
            return Err(TakeoverError::BadAnswer(format!("{} descriptors of {want} arrived", fds.len())));
        }
    }
    let mut fds = fds.into_iter();
    let lock = File::from(fds.next().expect("counted"));
    let listener = UnixListener::from(fds.next().expect("counted"));
    let mut queues = HandedQueues::new();
    for e in &handover.endpoints {
        queues.insert((e.container.clone(), e.ifname.clone()), fds.by_ref().take(e.queues).collect());
    }
    let uplink = handover.uplink.clone().map(|u| (u, fds.by_ref().take(sockets).collect()));
    let tunnels = handover.tunnels.iter().map(|t| (t.clone(), fds.by_ref().take(t.sockets).collect())).collect();
    Ok(Taken { conn, handover, lock, listener, queues, uplink, tunnels })
}

impl Taken {
    /// Tell the old daemon that this one forwards and serves: it exits.
    pub(super) fn ready(&self) -> io::Result<()> {
        (&self.conn).write_all(b"ready\n")?;
        // Its last answer, once it has let go (not needed; best effort).
        let mut s = Vec::new();
        let mut b = [0u8; 256];
        while !s.contains(&b'\n') {
            match (&self.conn).read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => s.extend_from_slice(&b[..n]),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_cross_a_socket_in_batches_with_the_bytes_around_them() {
        let (a, b) = UnixStream::pair().unwrap();
        let files: Vec<File> = (0..600).map(|_| File::open("/dev/null").unwrap()).collect();
        let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        (&a).write_all(b"{\"hello\":1}\n").unwrap();
        let (mut bytes, mut fds) = (Vec::new(), Vec::new());
        std::thread::scope(|s| {
            s.spawn(move || {
                send_fds(&a, &borrowed[..]).unwrap();
                drop(a);
            });
            while recv_some(&b, &mut bytes, &mut fds).unwrap() > 0 {}
        });
        assert!(bytes.starts_with(b"{\"hello\":1}\n"));
        assert_eq!(bytes.len(), 12 + 600usize.div_ceil(MAX_FDS));
        assert_eq!(fds.len(), 600);
        // New descriptors, of the same files.
        // SAFETY: stat is plain data; all-zero is valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fds[0] is open; st is a valid out-buffer.
        assert_eq!(unsafe { libc::fstat(fds[0].as_raw_fd(), &mut st) }, 0);
        assert!(!files.iter().any(|f| f.as_raw_fd() == fds[0].as_raw_fd()));
    }
}
