//! The API socket: bind it (refusing to steal it from a live daemon), and
//! serve every connection from one thread with an event loop (mio).
//!
//! Design. One thread owns the listening socket and every connection, all
//! non-blocking, and waits for them in epoll. It reads request lines,
//! parses them and hands each to the engine thread (changes) or a reader
//! (reads; see `work.rs`); the reply comes back over a channel with a
//! wake-up, and this thread writes it. A thread per connection, as before,
//! let 17,000 idle connections abort the daemon (a thread each, until one
//! could not get its signal stack); here a connection is a slot and its
//! buffers, and their number is bounded anyway.
//!
//! What a client cannot do (the numbers are in `limits.rs`):
//! - hold more than [`MAX_CONNECTIONS`] connections: a new one takes the
//!   place of the connection idle the longest, which is told why it is
//!   closed; a connection whose request is being served is never chosen;
//! - keep a connection without using it: after [`IDLE_TIMEOUT`] without a
//!   whole request (or progress reading a reply) it is closed;
//! - send a line longer than [`MAX_REQUEST`]: the daemon answers with an
//!   error as soon as the line is too long, and skips the rest of it as it
//!   arrives, never holding more than the limit and one read of it;
//! - make the daemon buffer without end: while a request is served or its
//!   reply not yet taken, the daemon reads nothing more from that
//!   connection, so the client's writes block instead;
//! - keep the server to itself: a connection is read [`READ_TURN`] bytes
//!   at a time, then the others get their turn.
//!
//! When accepting fails because the daemon is out of file descriptors, it
//! first closes the connection idle the longest, if there is one, and
//! accepts again. If that is not enough, it closes a descriptor kept in
//! reserve for the purpose, accepts the client, tells it in one line that
//! the daemon is out of file descriptors, closes it and opens the reserve
//! again. If even that fails, it stops accepting for a while, from 50 ms
//! doubling to 1 s, instead of retrying at once as the old accept loop did,
//! at 100% CPU and answering no one. The episode is logged once.
//!
//! About 560 lines of code: one file for the API server's event loop, whose
//! connection states, limits and descriptor-shortage handling belong
//! together.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::limits::{self, IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST};
use super::state::Shared;
use super::work::{ConnRef, Dispatch, Job, SHUTTING_DOWN};
use super::{ioe, DaemonError};
use crate::api::{parse_request, reply_line};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);

/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one connection before the others get a turn.
pub(super) const READ_TURN: usize = 16 * READ_CHUNK;
/// A connection's buffers are given back to the allocator when they have
/// grown beyond this.
const KEEP_CAPACITY: usize = 64 * 1024;
/// How often idle connections are looked for (at most).
const TICK: Duration = Duration::from_secs(1);

/// What a client may use (see the module's documentation).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) connections: usize,
    pub(super) request: usize,
    pub(super) idle: Duration,
}

impl Limits {
    /// The daemon's: `limits.rs`.
    pub(super) const DAEMON: Limits = Limits { connections: MAX_CONNECTIONS, request: MAX_REQUEST, idle: IDLE_TIMEOUT };
}
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(super) fn bind(socket: &Path) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(ioe("create", parent))?;
    }
    if socket.exists() {
        if StdStream::connect(socket).is_ok() {
            return Err(DaemonError::AlreadyRunning(socket.display().to_string()));
        }
        std::fs::remove_file(socket).map_err(ioe("remove stale socket", socket))?;
    }
    let l = std::os::unix::net::UnixListener::bind(socket).map_err(ioe("bind", socket))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(ioe("chmod", socket))?;
    Ok(l)
}

/// A descriptor held in reserve, to accept a client and tell it that the
/// daemon is out of descriptors. Open it early: it must have a low number
/// to be of use under a lowered limit.
pub(super) fn reserve_fd() -> Option<File> {
    File::open("/dev/null").ok()
}

struct Conn {
    stream: UnixStream,
    gen: u64,
    /// Bytes of the request being received.
    inbuf: Vec<u8>,
    /// How much of `inbuf` is known to hold no newline.
    scanned: usize,
    /// Skipping the rest of a line that was too long.
    skipping: bool,
    out: Vec<u8>,
    written: usize,
    /// A request of this connection is being served.
    in_flight: bool,
    /// Opened, answered or reading its reply: the idle clock starts here.
    last: Instant,
    /// Its key in [`Server::idle`] (the order of `last`), unless in flight.
    lru: u64,
}

enum Step {
    /// Nothing more to do until the next event.
    Wait,
    /// Closed.
    Gone,
    Again,
    /// Read its turn's worth: more later.
    Yield,
}

pub(super) struct Server {
    limits: Limits,
    poll: Poll,
    listener: UnixListener,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    /// Connections without a request being served, oldest activity first:
    /// the ones to close when room is needed or time is up.
    idle: BTreeMap<u64, usize>,
    seq: u64,
    gens: u64,
    reserve: Option<File>,
    /// Accepting is paused until then (out of descriptors).
    paused: Option<Instant>,
    backoff: Duration,
    /// Out of descriptors already said in the log for this episode.
    told: bool,
    /// Connections that used their turn with data still to read.
    turns: VecDeque<(usize, u64)>,
    /// Bytes read in the current turn.
    turn_bytes: usize,
    scratch: Vec<u8>,
    shared: Arc<Shared>,
    dispatch: Dispatch,
    replies: Receiver<(ConnRef, Vec<u8>)>,
}

impl Server {
    pub(super) fn new(
        limits: Limits,
        listener: std::os::unix::net::UnixListener,
        reserve: Option<File>,
        shared: Arc<Shared>,
        dispatch: Dispatch,
        replies: Receiver<(ConnRef, Vec<u8>)>,
        poll: Poll,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let mut listener = UnixListener::from_std(listener);
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            limits,
            poll,
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            idle: BTreeMap::new(),
            seq: 0,
            gens: 0,
            reserve,
            paused: None,
            backoff: BACKOFF_MIN,
            told: false,
            turns: VecDeque::new(),
            turn_bytes: 0,
            scratch: vec![0; READ_CHUNK],
            shared,
            dispatch,
            replies,
        })
    }

    /// The poller's waker, for the threads that send replies.
    pub(super) fn waker(poll: &Poll) -> io::Result<Arc<Waker>> {
        Ok(Arc::new(Waker::new(poll.registry(), WAKER)?))
    }

    /// Serve until the process ends.
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let tick = TICK.min(self.limits.idle / 2);
        let mut next_tick = Instant::now() + tick;
        loop {
            let now = Instant::now();
            let mut until = next_tick;
            if let Some(p) = self.paused {
                until = until.min(p);
            }
            if !self.turns.is_empty() {
                until = now;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(until.saturating_duration_since(now))) {
                if e.kind() != io::ErrorKind::Interrupted {
                    // epoll_wait fails only on programming errors; do not spin.
                    eprintln!("tapnet: API poll failed: {e}");
                    std::thread::sleep(TICK);
                }
                continue;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(slot) => self.drive(slot),
                }
            }
            while let Ok((conn, line)) = self.replies.try_recv() {
                self.answered(conn, line);
            }
            // One more turn for each connection that had data left.
            for _ in 0..self.turns.len() {
                let Some((slot, gen)) = self.turns.pop_front() else { break };
                if self.conns.get(slot).and_then(Option::as_ref).is_some_and(|c| c.gen == gen) {
                    self.drive(slot);
                }
            }
            let now = Instant::now();
            if self.paused.is_some_and(|p| now >= p) {
                self.paused = None;
                self.accept_all();
            }
            if now >= next_tick {
                self.expire(now);
                next_tick = now + tick;
            }
        }
    }

    fn accept_all(&mut self) {
        let mut evicted = false;
        while self.paused.is_none() {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    evicted = false;
                    self.backoff = BACKOFF_MIN;
                    self.told = false;
                    self.add(stream);
                    if self.reserve.is_none() {
                        self.reserve = reserve_fd();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) if is_fd_shortage(&e) => {
                    // An idle connection is the cheapest descriptor to give up.
                    if !evicted && self.evict("the daemon is out of file descriptors") {
                        evicted = true;
                        continue;
                    }
                    if !self.told {
                        let limit = limits::nofile().map(|l| l.0.to_string()).unwrap_or_else(|_| "?".into());
                        eprintln!(
                            "tapnet: out of file descriptors (RLIMIT_NOFILE {limit}): new API connections get an error"
                        );
                        self.told = true;
                    }
                    if !self.refuse_one() {
                        self.pause();
                    }
                }
                Err(e) => {
                    eprintln!("tapnet: accepting an API connection: {e}");
                    self.pause();
                }
            }
        }
    }

    fn pause(&mut self) {
        self.paused = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Accept one client with the reserve descriptor and tell it the
    /// daemon is out of descriptors. False if that was not possible.
    fn refuse_one(&mut self) -> bool {
        drop(self.reserve.take());
        let res = self.listener.accept();
        let ok = match res {
            Ok((mut stream, _)) => {
                let limit = limits::nofile().map(|l| l.0.to_string()).unwrap_or_else(|_| "?".into());
                let msg = format!(
                    "the tapnet daemon is out of file descriptors (RLIMIT_NOFILE {limit}); try again when containers or connections have gone"
                );
                let _ = stream.write(&reply_line(Err(msg)));
                true
            }
            Err(_) => false,
        };
        self.reserve = reserve_fd();
        ok
    }

    fn add(&mut self, mut stream: UnixStream) {
        let max = self.limits.connections;
        if self.live >= max && !self.evict(&format!("the daemon has too many connections (at most {max})")) {
            // Every connection has a request being served.
            let msg = format!("the daemon has too many connections (at most {max}) busy; try again");
            let _ = stream.write(&reply_line(Err(msg)));
            return;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if self.poll.registry().register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE).is_err() {
            self.free.push(slot);
            return;
        }
        self.gens += 1;
        self.conns[slot] = Some(Conn {
            stream,
            gen: self.gens,
            inbuf: Vec::new(),
            scanned: 0,
            skipping: false,
            out: Vec::new(),
            written: 0,
            in_flight: false,
            last: Instant::now(),
            lru: 0,
        });
        self.live += 1;
        self.touch(slot);
        // Data may have arrived already (edge-triggered: no event for it).
        self.drive(slot);
    }

    /// Restart the idle clock of `slot` and make it the newest idle one.
    fn touch(&mut self, slot: usize) {
        self.seq += 1;
        let seq = self.seq;
        let Some(c) = self.conns[slot].as_mut() else { return };
        if c.lru != 0 {
            self.idle.remove(&c.lru);
        }
        c.last = Instant::now();
        c.lru = seq;
        self.idle.insert(seq, slot);
    }

    /// Close the connection idle the longest, telling it why. False if
    /// every connection has a request being served.
    fn evict(&mut self, why: &str) -> bool {
        let Some((_, slot)) = self.idle.pop_first() else { return false };
        if let Some(c) = self.conns[slot].as_mut() {
            c.lru = 0;
            let _ = c.stream.write(&reply_line(Err(format!("{why}: closing this connection, idle the longest"))));
        }
        self.close(slot);
        true
    }

    /// Close connections idle for longer than allowed.
    fn expire(&mut self, now: Instant) {
        while let Some((_, &slot)) = self.idle.first_key_value() {
            let Some(c) = self.conns[slot].as_mut() else { break };
            if now.duration_since(c.last) < self.limits.idle {
                break;
            }
            let msg = format!("idle for {:?}: closing this connection", self.limits.idle);
            let _ = c.stream.write(&reply_line(Err(msg)));
            self.close(slot);
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut c) = self.conns[slot].take() {
            if c.lru != 0 {
                self.idle.remove(&c.lru);
            }
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.live -= 1;
            self.free.push(slot);
        }
    }

    /// A reply from the engine or a reader.
    fn answered(&mut self, conn: ConnRef, line: Vec<u8>) {
        let Some(c) = self.conns.get_mut(conn.slot).and_then(Option::as_mut) else { return };
        if c.gen != conn.gen {
            return;
        }
        c.in_flight = false;
        c.out.extend_from_slice(&line);
        self.touch(conn.slot);
        self.drive(conn.slot);
    }

    /// Move connection `slot` on as far as it goes in one turn: write what
    /// it is owed, then take its next request, reading more if need be.
    fn drive(&mut self, slot: usize) {
        self.turn_bytes = 0;
        loop {
            match self.step(slot) {
                Step::Again => {}
                Step::Wait | Step::Gone => return,
                Step::Yield => {
                    if let Some(c) = self.conns[slot].as_ref() {
                        self.turns.push_back((slot, c.gen));
                    }
                    return;
                }
            }
        }
    }

    fn step(&mut self, slot: usize) -> Step {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return Step::Gone };
        // 1. The reply owed, if any.
        if c.written < c.out.len() {
            match c.stream.write(&c.out[c.written..]) {
                Ok(n) => {
                    c.written += n;
                    if c.written < c.out.len() {
                        // The client is reading: that is activity.
                        self.touch(slot);
                        return Step::Again;
                    }
                    c.out.clear();
                    c.written = 0;
                    if c.out.capacity() > KEEP_CAPACITY {
                        c.out = Vec::new();
                    }
                    return Step::Again;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Step::Again,
                Err(_) => {
                    self.close(slot);
                    return Step::Gone;
                }
            }
        }
        if c.in_flight {
            return Step::Wait;
        }
        // 2. A whole request already here?
        if let Some(i) = c.inbuf[c.scanned..].iter().position(|&b| b == b'\n') {
            let end = c.scanned + i;
            let line: Vec<u8> = c.inbuf.drain(..=end).collect();
            c.scanned = 0;
            if c.inbuf.capacity() > KEEP_CAPACITY && c.inbuf.len() < KEEP_CAPACITY {
                c.inbuf.shrink_to(KEEP_CAPACITY);
            }
            let line = &line[..line.len() - 1];
            if line.len() > self.limits.request {
                c.out.extend_from_slice(&reply_line(Err(too_long(self.limits.request))));
                return Step::Again;
            }
            self.request(slot, line);
            return Step::Again;
        }
        c.scanned = c.inbuf.len();
        if c.inbuf.len() > self.limits.request {
            // Answer now, skip the rest of the line as it comes.
            c.inbuf = Vec::new();
            c.scanned = 0;
            c.skipping = true;
            c.out.extend_from_slice(&reply_line(Err(too_long(self.limits.request))));
            return Step::Again;
        }
        // 3. Read more, unless this turn is over.
        if self.turn_bytes >= READ_TURN {
            return Step::Yield;
        }
        match c.stream.read(&mut self.scratch) {
            Ok(0) => {
                self.close(slot);
                Step::Gone
            }
            Ok(n) => {
                self.turn_bytes += n;
                let mut data = &self.scratch[..n];
                if c.skipping {
                    match data.iter().position(|&b| b == b'\n') {
                        None => return Step::Again,
                        Some(i) => {
                            c.skipping = false;
                            data = &data[i + 1..];
                        }
                    }
                }
                c.inbuf.extend_from_slice(data);
                Step::Again
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Again,
            Err(_) => {
                self.close(slot);
                Step::Gone
            }
        }
    }

    /// Parse one request line of `slot` and hand it on, or answer it here.
    fn request(&mut self, slot: usize, line: &[u8]) {
        let req = match parse_request(line) {
            Ok(r) => r,
            Err(msg) => return self.answer_here(slot, Err(msg)),
        };
        if self.shared.stopping() {
            return self.answer_here(slot, Err(SHUTTING_DOWN.into()));
        }
        let Some(c) = self.conns[slot].as_mut() else { return };
        c.in_flight = true;
        if c.lru != 0 {
            self.idle.remove(&c.lru);
            c.lru = 0;
        }
        // A takeover passes descriptors on the connection itself, from
        // the engine thread: it gets a duplicate (this thread reads and
        // writes nothing on it until the reply, as for any request).
        let stream = match req {
            crate::api::Request::Takeover { .. } => {
                c.stream.as_fd().try_clone_to_owned().ok().map(std::os::unix::net::UnixStream::from)
            }
            _ => None,
        };
        self.dispatch.send(Job { conn: ConnRef { slot, gen: c.gen }, req, stream });
    }

    fn answer_here(&mut self, slot: usize, r: Result<serde_json::Value, String>) {
        if let Some(c) = self.conns[slot].as_mut() {
            c.out.extend_from_slice(&reply_line(r));
        }
        self.touch(slot);
    }
}

fn too_long(limit: usize) -> String {
    format!("bad request: longer than {limit} bytes (the limit); it was skipped")
}

/// Accepting failed for want of a descriptor or the memory for one.
fn is_fd_shortage(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream as Client;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::work::{self, Replies, Workers};
    use super::*;
    use crate::engine::{Engine, EngineConfig};

    /// A server with small limits on a socket of its own, in front of an
    /// engine with no container (no root needed). Its thread is left
    /// running when the test ends.
    struct TestServer {
        dir: PathBuf,
        socket: PathBuf,
        shared: Arc<Shared>,
        threads: Option<Workers>,
    }

    impl TestServer {
        fn start(limits: Limits) -> TestServer {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("tapnet-server-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let socket = dir.join("api.sock");
            let listener = bind(&socket).unwrap();
            let engine = Engine::new(EngineConfig { workers: 1, pin: false, ..EngineConfig::default() }).unwrap();
            let shared = Arc::new(Shared::new(engine.view()));
            let poll = Poll::new().unwrap();
            let (replies, rx) = Replies::new(Server::waker(&poll).unwrap());
            let stops = crossbeam_channel::unbounded().0;
            let threads =
                work::start(engine, shared.clone(), super::super::state::Store::new(&dir), replies, 1, stops, None)
                    .unwrap();
            let srv =
                Server::new(limits, listener, reserve_fd(), shared.clone(), threads.dispatch(), rx, poll).unwrap();
            std::thread::spawn(move || srv.run());
            TestServer { dir, socket, shared, threads: Some(threads) }
        }

        fn connect(&self) -> (Client, BufReader<Client>) {
            let c = Client::connect(&self.socket).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let r = BufReader::new(c.try_clone().unwrap());
            (c, r)
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.shared.stop();
            if let Some(t) = self.threads.take() {
                t.stop(false);
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn line(r: &mut BufReader<Client>) -> String {
        let mut s = String::new();
        r.read_line(&mut s).unwrap();
        s
    }

    const SMALL: Limits = Limits { connections: 3, request: 100, idle: Duration::from_millis(400) };

    #[test]
    fn pipelined_requests_are_answered_in_order_and_lines_may_come_in_pieces() {
        let s = TestServer::start(Limits::DAEMON);
        let (mut c, mut r) = s.connect();
        c.write_all(b"{\"op\":\"version\"}\n{\"op\":\"network_ls\"}\n{\"op\":\"nope\"}\n\n").unwrap();
        assert!(line(&mut r).contains("\"version\""));
        assert_eq!(line(&mut r), "{\"ok\":true,\"data\":[]}\n");
        assert!(line(&mut r).contains("unknown variant `nope`"));
        assert!(line(&mut r).contains("empty line"));
        for piece in [&b"{\"op\":"[..], b"\"container_inspect\",", b"\"name\":\"x\"}\r\n"] {
            c.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(line(&mut r), "{\"ok\":false,\"error\":\"no such container: x\"}\n");
    }

    #[test]
    fn an_overlong_line_is_answered_at_once_and_skipped() {
        let s = TestServer::start(SMALL);
        let (mut c, mut r) = s.connect();
        c.write_all(&[b'x'; 150]).unwrap();
        // Answered before the line even ends.
        assert!(line(&mut r).contains("longer than 100 bytes"));
        c.write_all(&[b'y'; 5000]).unwrap();
        c.write_all(b"\n{\"op\":\"network_ls\"}\n").unwrap();
        assert_eq!(line(&mut r), "{\"ok\":true,\"data\":[]}\n");
        // A line the size of the limit is fine.
        let mut req = b"{\"op\":\"network_inspect\",\"name\":\"".to_vec();
        req.resize(98, b'n');
        req.extend_from_slice(b"\"}\n");
        c.write_all(&req).unwrap();
        assert!(line(&mut r).contains("no such network"));
    }

    #[test]
    fn at_the_connection_limit_the_one_idle_the_longest_goes() {
        let s = TestServer::start(Limits { idle: Duration::from_secs(60), ..SMALL });
        let (mut a, mut ar) = s.connect();
        let (_b, mut br) = s.connect();
        let (_c, _cr) = s.connect();
        // a is answered last, so b is now the one idle the longest.
        a.write_all(b"{\"op\":\"version\"}\n").unwrap();
        assert!(line(&mut ar).contains("\"ok\":true"));
        let (mut d, mut dr) = s.connect();
        assert!(line(&mut br).contains("too many connections (at most 3)"));
        assert_eq!(line(&mut br), "", "b is closed");
        for (x, xr) in [(&mut a, &mut ar), (&mut d, &mut dr)] {
            x.write_all(b"{\"op\":\"version\"}\n").unwrap();
            assert!(line(xr).contains("\"ok\":true"));
        }
    }

    #[test]
    fn an_idle_connection_is_closed_and_told_why() {
        let s = TestServer::start(SMALL);
        let (_idle, mut ir) = s.connect();
        let (mut busy, mut br) = s.connect();
        let t0 = Instant::now();
        // One request every 100 ms keeps a connection open.
        while t0.elapsed() < Duration::from_millis(900) {
            busy.write_all(b"{\"op\":\"version\"}\n").unwrap();
            assert!(line(&mut br).contains("\"ok\":true"));
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(line(&mut ir), "{\"ok\":false,\"error\":\"idle for 400ms: closing this connection\"}\n");
        assert_eq!(line(&mut ir), "");
        busy.write_all(b"{\"op\":\"version\"}\n").unwrap();
        assert!(line(&mut br).contains("\"ok\":true"));
    }
}
