//! The API's limits: many idle connections, huge requests, running out of
//! file descriptors, malformed and non-UTF-8 requests, the one request
//! form, long names, reserved subnets, and reads while changes are made.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use control::api::{MAX_CONNECTIONS, MAX_REQUEST};

fn snapshot(h: &Host) -> (serde_json::Value, serde_json::Value) {
    (h.json(&["network", "ls"]), h.json(&["container", "ls"]))
}

fn read_line(s: &UnixStream) -> String {
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line
}

/// Child processes that each open `per_child` connections to `socket` and
/// hold them until killed (a process may be allowed fewer descriptors
/// than the test needs, and root here may not raise that).
struct Holders(Vec<libc::pid_t>);

impl Holders {
    fn open(socket: &std::path::Path, children: usize, per_child: usize) -> Holders {
        use std::os::unix::ffi::OsStrExt;
        // Everything the children need is prepared before fork: after it,
        // they only make system calls.
        // SAFETY: an all-zero sockaddr_un is valid.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let path = socket.as_os_str().as_bytes();
        assert!(path.len() < addr.sun_path.len());
        for (d, s) in addr.sun_path.iter_mut().zip(path) {
            *d = *s as libc::c_char;
        }
        let mut pipe = [0; 2];
        // SAFETY: pipe fills the two descriptors.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        let mut pids = Vec::new();
        for _ in 0..children {
            // SAFETY: the child makes only async-signal-safe system calls
            // (socket, connect, write, pause, _exit) on memory prepared
            // above, then waits to be killed.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
            if pid == 0 {
                // SAFETY: as above.
                unsafe {
                    // Keep nothing of the test process's (other tests'
                    // pipes and sockets) but the pipe to the parent.
                    let w = pipe[1] as libc::c_uint;
                    libc::syscall(libc::SYS_close_range, 0, w.saturating_sub(1), 0);
                    libc::syscall(libc::SYS_close_range, w + 1, libc::c_uint::MAX, 0);
                    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
                    r.rlim_cur = r.rlim_max;
                    libc::setrlimit(libc::RLIMIT_NOFILE, &r);
                    let mut ok = 1u8;
                    for _ in 0..per_child {
                        let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                        if s < 0 || libc::connect(s, (&addr as *const libc::sockaddr_un).cast(), len) != 0 {
                            ok = 0;
                            break;
                        }
                    }
                    libc::write(pipe[1], (&ok as *const u8).cast(), 1);
                    loop {
                        libc::pause();
                    }
                }
            }
            pids.push(pid);
        }
        // SAFETY: closing our copy of the write end; reading one byte per
        // child from the read end into a local.
        unsafe {
            libc::close(pipe[1]);
            for _ in 0..children {
                let mut ok = 0u8;
                assert_eq!(libc::read(pipe[0], (&mut ok as *mut u8).cast(), 1), 1, "a holder died");
                assert_eq!(ok, 1, "a holder could not open its connections");
            }
            libc::close(pipe[0]);
        }
        Holders(pids)
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

#[test]
#[ignore = "needs root: a daemon with its own namespace"]
fn twenty_thousand_idle_connections_and_a_command_still_answers() {
    let h = Host::start("ai", &["--workers", "1"]);
    let pid = h.pid();
    let first = UnixStream::connect(&h.socket).unwrap();
    let t0 = Instant::now();
    let holders = Holders::open(&h.socket, 4, 5_000);
    eprintln!("20,000 connections in {:?}", t0.elapsed());
    let last = UnixStream::connect(&h.socket).unwrap();
    // A command answers, and the daemon holds a bounded number of
    // connections with a fixed number of threads.
    h.ok(&["network", "ls"]);
    let fds = open_fds(pid).len();
    assert!(fds <= MAX_CONNECTIONS + 64, "the daemon holds {fds} descriptors");
    let threads = proc_status(pid, "Threads");
    assert!(threads <= 16, "the daemon runs {threads} threads");
    // The oldest connections were closed, each told why.
    first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let told = read_line(&first);
    assert!(told.contains("too many connections") && told.contains("\"ok\":false"), "{told:?}");
    assert_eq!((&first).read(&mut [0u8; 16]).unwrap(), 0, "closed after the notice");
    // The newest are served.
    last.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&last).write_all(b"{\"op\":\"version\"}\n").unwrap();
    let reply = read_line(&last);
    assert!(reply.contains("\"ok\":true"), "{reply:?}");
    drop(holders);
    h.ok(&["network", "ls"]);
}

#[test]
#[ignore = "needs root: a daemon with its own namespace"]
fn huge_requests_get_an_error_and_memory_stays_bounded() {
    let h = Host::start("ar", &["--workers", "1"]);
    let pid = h.pid();
    let before = snapshot(&h);
    let rss = proc_status(pid, "VmRSS");
    // Ten connections at once, each sending a 100 MB line, then a good one.
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let s = UnixStream::connect(&h.socket).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                let mut w = w;
                w.write_all(b"{\"op\":\"network_create\",\"subnet\":\"10.150.0.0/24\",\"name\":\"").unwrap();
                let chunk = vec![b'a'; 1 << 20];
                for _ in 0..100 {
                    w.write_all(&chunk).unwrap();
                }
                w.write_all(b"\"}\n{\"op\":\"version\"}\n").unwrap();
            });
            (s, writer)
        })
        .collect();
    for (s, writer) in clients {
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], false, "{line}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(&format!("longer than {MAX_REQUEST} bytes")), "{e}");
        writer.join().unwrap();
        // The line was skipped whole: the next request is answered.
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\":true"), "{line}");
    }
    let peak = proc_status(pid, "VmHWM");
    assert!(peak < rss + 64 * 1024, "RSS went from {rss} kB to a peak of {peak} kB");
    assert_eq!(snapshot(&h), before, "a refused request changed something");
}

#[test]
#[ignore = "needs root: a daemon with its own namespace, and prlimit on it"]
fn out_of_descriptors_is_an_error_and_a_back_off_never_a_spin() {
    let h = Host::start("af", &["--workers", "1"]);
    let pid = h.pid();
    // The daemon raised its soft limit to the hard one.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().collect();
    assert_eq!(nofile[3], nofile[4], "soft RLIMIT_NOFILE not raised: {nofile:?}");
    let hard: u64 = nofile[4].parse().unwrap();
    let idle_cpu = |secs: f64| {
        let c0 = cpu_seconds(pid);
        std::thread::sleep(Duration::from_secs_f64(secs));
        cpu_seconds(pid) - c0
    };

    // The limit under which exactly `k` descriptor numbers are free.
    let limit_with_free = |k: usize| {
        let fds = open_fds(pid);
        (0..).filter(|n| !fds.contains(n)).nth(k).unwrap() as u64
    };

    // 1. Eight descriptors to spare: connections beyond them take the
    // place of the idle ones, which are told why.
    set_nofile(pid, limit_with_free(8));
    let conns: Vec<UnixStream> = (0..100).map(|_| UnixStream::connect(&h.socket).unwrap()).collect();
    h.ok(&["network", "ls"]);
    conns[0].set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let told = read_line(&conns[0]);
    assert!(told.contains("out of file descriptors"), "{told:?}");
    drop(conns);
    std::thread::sleep(Duration::from_millis(300));

    // 2. None to spare but the one the daemon keeps in reserve: each
    // client is told so in one line, and the daemon stays idle.
    set_nofile(pid, limit_with_free(0));
    let e = h.fails(&["network", "ls"]);
    assert!(e.contains("out of file descriptors"), "{e}");
    let clients: Vec<UnixStream> = (0..20).map(|_| UnixStream::connect(&h.socket).unwrap()).collect();
    for c in &clients {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(read_line(c).contains("out of file descriptors"));
    }
    let cpu = idle_cpu(1.0);
    assert!(cpu < 0.2, "the daemon used {cpu} s of CPU in 1 s while out of descriptors");

    // 3. Not even that (the limit is below the reserve's number): clients
    // wait, the daemon retries with a back-off instead of spinning...
    set_nofile(pid, 3);
    let socket = h.socket.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let out = std::process::Command::new(tapnet_bin())
            .args(["network", "ls", "--json"])
            .env("TAPNET_SOCKET", &socket)
            .output()
            .unwrap();
        let _ = tx.send(());
        out
    });
    let cpu = idle_cpu(1.5);
    assert!(cpu < 0.2, "the daemon used {cpu} s of CPU in 1.5 s while out of descriptors");
    assert!(rx.try_recv().is_err(), "the client was answered with no descriptor to answer it with");
    // ... and answers it once descriptors free up.
    set_nofile(pid, hard);
    assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok(), "the waiting client was not answered");
    let out = waiting.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().is_array());
    h.ok(&["network", "ls"]);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn malformed_requests_get_one_line_and_change_nothing() {
    let h = Host::start("am", &["--workers", "1"]);
    h.network("n1", "10.151.0.0/24", &[]);
    let a = h.name("a");
    h.container(&a, "n1");
    let before = snapshot(&h);
    let long = "x".repeat(100_000);
    let mut api = Api::connect(&h);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"op\":\"network_ls\xff\"}".to_vec(), "not UTF-8"),
        (b"\xff\xfe\xfd".to_vec(), "not UTF-8 (invalid byte at offset 0)"),
        (b"[\"network_create\",\"x1\",\"10.152.0.0/24\"]".to_vec(), "a request is a JSON object"),
        (format!("[\"container_rm\",\"{a}\"]").into_bytes(), "a request is a JSON object"),
        (b"[\"network_ls\"]".to_vec(), "a request is a JSON object"),
        (b"\"network_ls\"".to_vec(), "a request is a JSON object"),
        (
            b"{\"op\":\"network_create\",\"name\":\"x1\",\"subnet\":\"10.152.0.0/24\",\"gatway\":\"10.152.0.9\"}"
                .to_vec(),
            "unknown field",
        ),
        (format!("{{\"op\":\"container_rm\",\"name\":\"{a}\",\"force\":true}}").into_bytes(), "unknown field"),
        (b"{\"op\":\"network_ls\",\"all\":true}".to_vec(), "unknown field"),
        (format!("{{\"op\":\"container_rm\",\"name\":\"{long}\"}}").into_bytes(), "no such container"),
        (format!("{{\"op\":\"network_inspect\",\"name\":\"{long}\"}}").into_bytes(), "no such network"),
        (format!("{{\"op\":\"{long}\"}}").into_bytes(), "unknown variant"),
        (
            format!("{{\"op\":\"network_create\",\"name\":\"{long}\",\"subnet\":\"10.152.0.0/24\"}}").into_bytes(),
            "invalid network name",
        ),
        (format!("{{\"op\":\"network_create\",\"name\":\"x1\",\"subnet\":\"{long}\"}}").into_bytes(), "invalid subnet"),
        (
            format!("{{\"op\":\"container_create\",\"name\":\"x1\",\"network\":\"n1\",\"mac\":\"{long}\"}}")
                .into_bytes(),
            "MAC",
        ),
        (b"".to_vec(), "empty line"),
    ];
    for (req, want) in &cases {
        let v = api.call(req);
        let shown = String::from_utf8_lossy(&req[..req.len().min(80)]).into_owned();
        assert_eq!(v["ok"], false, "{shown}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(want), "{shown}: {e}");
        assert!(e.chars().count() < 400, "{shown}: an error of {} characters", e.chars().count());
        if req.len() > 100_000 && !want.contains("variant") {
            assert!(e.contains(&format!("{}…", "x".repeat(64))), "{shown}: {e}");
        }
    }
    // The connection still serves, and nothing changed.
    assert_eq!(api.call(b"{\"op\":\"network_ls\"}")["ok"], true);
    assert_eq!(snapshot(&h), before);
    // The CLI says the same in one line.
    let e = h.fails(&["network", "inspect", &long]);
    assert!(e.len() < 200 && e.contains('…'), "{e}");
    let e = h.fails(&["container", "create", &long, "--network", "n1"]);
    assert!(e.len() < 300 && e.contains('…'), "{e}");
    assert_eq!(snapshot(&h), before);
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn reserved_subnets_are_refused_and_change_nothing() {
    let h = Host::start("as", &["--workers", "1"]);
    h.network("n1", "10.153.0.0/24", &[]);
    let before = snapshot(&h);
    for (subnet, range) in [
        ("224.1.0.0/24", "224.0.0.0/4"),
        ("0.0.0.0/8", "0.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/8"),
        ("127.1.0.0/24", "127.0.0.0/8"),
        ("169.254.0.0/16", "169.254.0.0/16"),
        ("239.255.0.0/16", "224.0.0.0/4"),
        ("240.0.0.0/24", "240.0.0.0/4"),
        ("255.255.255.0/24", "240.0.0.0/4"),
    ] {
        let e = h.fails(&["network", "create", "x1", "--subnet", subnet]);
        assert!(e.contains(&format!("overlaps {range}")) && e.contains("cannot hold containers"), "{subnet}: {e}");
        assert_eq!(snapshot(&h), before, "{subnet} changed state");
    }
    // Their neighbours are fine.
    h.network("x1", "169.253.0.0/24", &[]);
    let c = h.name("c");
    h.container(&c, "x1");
}

#[test]
#[ignore = "needs root: a daemon with real namespaces and TAP devices"]
fn reads_do_not_wait_for_changes() {
    let h = Host::start("aw", &["--workers", "1"]);
    h.network("n1", "10.154.0.0/24", &[]);
    // Forty creates queued, on forty connections: the engine makes them one
    // after the other, each a namespace and a TAP.
    let names: Vec<String> = (0..40).map(|i| h.name(&format!("c{i}"))).collect();
    let mut pending: Vec<Api> = names
        .iter()
        .map(|n| {
            let mut api = Api::connect(&h);
            api.send(format!("{{\"op\":\"container_create\",\"name\":\"{n}\",\"network\":\"n1\"}}").as_bytes());
            api
        })
        .collect();
    // Meanwhile reads are answered from the state published so far.
    let t0 = Instant::now();
    let mut api = Api::connect(&h);
    let mut seen = Vec::new();
    for req in
        [&b"{\"op\":\"container_ls\"}"[..], b"{\"op\":\"network_inspect\",\"name\":\"n1\"}", b"{\"op\":\"stats\"}"]
    {
        let v = api.call(req);
        assert_eq!(v["ok"], true, "{v}");
        seen.push(v);
    }
    let reads = t0.elapsed();
    for p in &mut pending {
        let v = p.reply();
        assert_eq!(v["ok"], true, "{v}");
    }
    let changes = t0.elapsed();
    let listed = seen[0]["data"].as_array().unwrap().len();
    assert!(listed < names.len(), "the read waited for all {listed} changes ({reads:?}, changes {changes:?})");
    // Each read sees whole containers: listed ones have their interface.
    for c in seen[0]["data"].as_array().unwrap() {
        assert_eq!(c["networks"].as_array().unwrap().len(), 1, "{c}");
    }
    eprintln!("3 reads in {reads:?} while 40 creates took {changes:?} ({listed} done at the first read)");
    assert_eq!(h.json(&["container", "ls"]).as_array().unwrap().len(), names.len());
}
