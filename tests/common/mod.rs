//! Shared harness of the privileged integration tests. They need root, so
//! they are `#[ignore]`d with that reason and run with
//! `cargo test --workspace -- --include-ignored` (the README's test command,
//! which `.ci/run` runs as root).
//!
//! Each test starts its own daemon in its own "host" namespace with its own
//! socket and state directory, and names everything it creates with a prefix
//! unique to the test process and the test. The guard's `Drop` stops the
//! daemon (SIGTERM, then SIGKILL) and removes anything left with its prefix,
//! so a failing test leaves nothing behind either. Observers are real tools:
//! `ip`, `ping`, and our own sockets inside the namespaces.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `tapnet` binary built alongside the tests.
pub fn tapnet_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/tapnet
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("tapnet");
    assert!(bin.exists(), "{} is missing: build it first (cargo build)", bin.display());
    bin
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Run a command, capturing its output.
pub fn sh(prog: &str, args: &[&str]) -> Output {
    Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("run {prog}: {e}"))
}

pub fn netns_list() -> Vec<String> {
    let out = sh("ip", &["netns", "list"]);
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

/// A daemon in its own host namespace.
pub struct Host {
    pub prefix: String,
    pub hostns: String,
    pub socket: PathBuf,
    pub state: PathBuf,
    child: Option<Child>,
}

impl Host {
    /// Start a daemon for test `tag` (2-3 characters, unique per test).
    pub fn start(tag: &str, extra: &[&str]) -> Host {
        let mut h = Host::new(tag);
        h.spawn(extra);
        h
    }

    /// The host namespace, socket and state directory of test `tag`, with
    /// no daemon yet (start it with [`Host::spawn`]).
    pub fn new(tag: &str) -> Host {
        assert!(is_root(), "the integration tests need root (namespaces, TAP devices)");
        let prefix = format!("t{:x}{tag}", std::process::id() & 0xfffff);
        let hostns = format!("{prefix}h");
        let dir = std::env::temp_dir().join(format!("tapnet-test-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = sh("ip", &["netns", "add", &hostns]);
        assert!(out.status.success(), "ip netns add {hostns}: {}", String::from_utf8_lossy(&out.stderr));
        let socket = dir.join("tapnet.sock");
        let state = dir.join("state");
        Host { prefix, hostns, socket, state, child: None }
    }

    /// `tapnet daemon` on this host's namespace, socket and state, with
    /// `extra` arguments (not started).
    pub fn daemon_cmd(&self, extra: &[&str]) -> Command {
        let mut args = vec![
            "daemon".to_string(),
            "--netns".into(),
            self.hostns.clone(),
            "--socket".into(),
            self.socket.display().to_string(),
            "--state-dir".into(),
            self.state.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut c = Command::new(tapnet_bin());
        c.args(&args);
        c
    }

    /// `tapnet daemon --takeover` with `extra`: the new daemon becomes this
    /// host's daemon; returns the old one's exit status (None if it did
    /// not exit within 20 s: it is killed) and how long after the new
    /// daemon's start the old one exited.
    pub fn takeover(&mut self, extra: &[&str]) -> (Option<std::process::ExitStatus>, Duration) {
        let mut old = self.child.take().expect("a daemon to take over from");
        let mut args = vec!["--takeover"];
        args.extend_from_slice(extra);
        let t0 = Instant::now();
        let new = self.daemon_cmd(&args).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("spawn");
        self.child = Some(new);
        loop {
            if let Ok(Some(st)) = old.try_wait() {
                return (Some(st), t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = old.kill();
                let _ = old.wait();
                return (None, t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// (Re)start the daemon process on this host's socket and state.
    pub fn spawn(&mut self, extra: &[&str]) {
        let mut args = vec![
            "daemon".to_string(),
            "--netns".into(),
            self.hostns.clone(),
            "--socket".into(),
            self.socket.display().to_string(),
            "--state-dir".into(),
            self.state.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(tapnet_bin())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tapnet daemon");
        self.child = Some(child);
        let t0 = Instant::now();
        while !self.tapnet(&["network", "ls"]).status.success() {
            assert!(t0.elapsed() < Duration::from_secs(15), "daemon did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Stop the daemon with `sig` and wait for it.
    pub fn stop(&mut self, sig: i32) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(c.id() as i32, sig) };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A name unique to this test.
    pub fn name(&self, s: &str) -> String {
        let n = format!("{}{s}", self.prefix);
        assert!(n.len() <= 15, "{n} is too long for an interface name");
        n
    }

    pub fn tapnet(&self, args: &[&str]) -> Output {
        Command::new(tapnet_bin()).args(args).env("TAPNET_SOCKET", &self.socket).output().expect("run tapnet")
    }

    /// Run tapnet, assert success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.tapnet(args);
        assert!(
            out.status.success(),
            "tapnet {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run tapnet with --json, assert success, parse stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap_or_else(|e| panic!("tapnet {args:?}: bad JSON: {e}"))
    }

    /// Run tapnet, assert it fails with exactly one line on stderr; return it.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.tapnet(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "tapnet {args:?} should fail but succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(err.trim_end().lines().count(), 1, "tapnet {args:?}: error should be one line, got {err:?}");
        assert!(err.starts_with("tapnet: "), "{err:?}");
        err
    }

    pub fn network(&self, name: &str, subnet: &str, extra: &[&str]) {
        let mut a = vec!["network", "create", name, "--subnet", subnet];
        a.extend_from_slice(extra);
        self.ok(&a);
    }

    /// Create a container on `net` and return its IPv4 address and MAC.
    pub fn container(&self, name: &str, net: &str) -> (String, String) {
        let v = self.json(&["container", "create", name, "--network", net]);
        let ep = &v["networks"][0];
        let ip = ep["ipv4_address"].as_str().unwrap_or("").split('/').next().unwrap().to_string();
        (ip, ep["mac_address"].as_str().unwrap_or("").to_string())
    }

    /// Counters of the port named `container:ifname`.
    pub fn port_stats(&self, port_name: &str) -> Value {
        let s = self.json(&["stats"]);
        s["ports"].as_array().unwrap().iter().find(|p| p["name"] == port_name).cloned().unwrap_or(Value::Null)
    }

    pub fn drops(&self, reason: &str) -> u64 {
        self.json(&["stats"])["drops"][reason].as_u64().unwrap()
    }

    /// The learned entries of `net`'s MAC table as (mac, port_name) pairs
    /// (the gateway's static entry left out).
    pub fn fdb(&self, net: &str) -> Vec<(String, String)> {
        let v = self.json(&["fdb", net]);
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["static"] != true)
            .map(|e| (e["mac"].as_str().unwrap().to_string(), e["port_name"].as_str().unwrap().to_string()))
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM);
        for ns in netns_list() {
            if ns.starts_with(&self.prefix) {
                let _ = sh("ip", &["netns", "del", &ns]);
            }
        }
        // Files of containers a daemon left (a test that failed midway).
        for e in std::fs::read_dir("/etc/netns").into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&self.prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        if let Some(dir) = self.socket.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Run `ip` with `args`, asserting success.
pub fn ip(args: &[&str]) {
    let out = sh("ip", args);
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The LAN of a daemon's uplink: an "outside" namespace joined to the
/// host namespace by a veth pair. The host end is `up0` (the daemon's
/// `--uplink`), the outside end `eth0` at `NET.1/24`; the daemon owns
/// `NET.2/24` on `up0` (its `--uplink-ip`). Its namespace carries the
/// host's prefix, so the host's cleanup removes it.
pub struct Outside {
    pub ns: String,
    /// `NET` of `NET.0/24`, e.g. "10.250.1".
    pub net: String,
}

impl Outside {
    pub fn new(h: &Host, net: &str) -> Outside {
        let ns = h.name("o");
        ip(&["netns", "add", &ns]);
        ip(&["-n", &h.hostns, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        ip(&["-n", &ns, "addr", "add", &format!("{net}.1/24"), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &h.hostns, "link", "set", "up0", "up"]);
        Outside { ns, net: net.to_string() }
    }
    /// The outside's own address.
    pub fn ip(&self) -> String {
        format!("{}.1", self.net)
    }
    /// The address the daemon owns on its uplink.
    pub fn uplink_ip(&self) -> String {
        format!("{}.2", self.net)
    }
    /// The daemon flags for this uplink.
    pub fn daemon_args(&self) -> Vec<String> {
        vec!["--uplink".into(), "up0".into(), "--uplink-ip".into(), format!("{}/24", self.uplink_ip())]
    }
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.ns))
    }
}

/// Run `f` inside namespace `ns` (on a thread of its own): sockets made
/// there stay in it.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    control::netns::run_in(&PathBuf::from(format!("/var/run/netns/{ns}")), f).expect("enter namespace")
}

/// `ip netns exec NS ping -c N -W 1 DST`: true if every echo was answered.
pub fn ping(ns: &str, dst: &str, count: u32) -> bool {
    let c = count.to_string();
    sh("ip", &["netns", "exec", ns, "ping", "-q", "-c", &c, "-i", "0.2", "-W", "1", dst]).status.success()
}

/// Send raw Ethernet frames out of `ifname` inside namespace `ns`.
pub fn send_raw(ns: &str, ifname: &str, frames: &[Vec<u8>]) {
    let path = PathBuf::from(format!("/var/run/netns/{ns}"));
    let ifname = std::ffi::CString::new(ifname).unwrap();
    let frames = frames.to_vec();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscalls on valid fds and buffers owned by this
        // thread, which only serves this purpose and then ends.
        unsafe {
            assert_eq!(libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET), 0);
            let idx = libc::if_nametoindex(ifname.as_ptr());
            assert_ne!(idx, 0);
            let s = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(s >= 0);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = idx as i32;
            sll.sll_halen = 6;
            for fr in &frames {
                let n = libc::sendto(
                    s,
                    fr.as_ptr().cast(),
                    fr.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(n, fr.len() as isize, "sendto: {}", std::io::Error::last_os_error());
            }
            libc::close(s);
        }
    })
    .join()
    .unwrap();
}

pub fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(s.split(':')) {
        *o = u8::from_str_radix(p, 16).unwrap();
    }
    m
}

/// One connection to a daemon's API socket, for requests the CLI does not
/// send (malformed ones, raw bytes).
pub struct Api {
    stream: std::os::unix::net::UnixStream,
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
}

impl Api {
    pub fn connect(h: &Host) -> Api {
        let stream = std::os::unix::net::UnixStream::connect(&h.socket).expect("connect to the API socket");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let reader = std::io::BufReader::new(stream.try_clone().unwrap());
        Api { stream, reader }
    }

    /// Send `line` and a newline.
    pub fn send(&mut self, line: &[u8]) {
        use std::io::Write;
        self.stream.write_all(line).unwrap();
        self.stream.write_all(b"\n").unwrap();
    }

    /// The next reply line (raw).
    pub fn reply_line(&mut self) -> String {
        use std::io::BufRead;
        let mut s = String::new();
        self.reader.read_line(&mut s).expect("read a reply");
        s
    }

    /// The next reply, which must be one line of JSON.
    pub fn reply(&mut self) -> Value {
        let line = self.reply_line();
        assert!(line.ends_with('\n'), "a reply is one whole line: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
    }

    pub fn call(&mut self, line: &[u8]) -> Value {
        self.send(line);
        self.reply()
    }
}

/// A field of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`, …), or a count
/// (`Threads`).
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// User plus system CPU time of process `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The descriptor numbers process `pid` has open.
pub fn open_fds(pid: u32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort();
    v
}

/// Set the soft `RLIMIT_NOFILE` of process `pid` (prlimit(1)); the hard
/// limit stays (root without CAP_SYS_RESOURCE could not raise it again).
pub fn set_nofile(pid: u32, n: u64) {
    let out = sh("prlimit", &["--pid", &pid.to_string(), &format!("--nofile={n}:")]);
    assert!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));
}

/// The file of named namespace `n`, as `ip netns` makes it.
pub fn nspath(n: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/netns/{n}"))
}

/// The containers of `ls`, as (name, id, interfaces as text), sorted.
pub fn containers(h: &Host) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = h
        .json(&["container", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().into(), c["id"].as_str().unwrap().into(), c["networks"].to_string()))
        .collect();
    v.sort();
    v
}

/// A verified TCP transfer of `bytes` from container `b` (`ip_b`) to
/// container `a` (`ip_a`), port 5201, one stream, on a thread of its own.
pub fn bulk_in_background(
    a: &str,
    ip_a: &str,
    b: &str,
    ip_b: &str,
    bytes: u64,
) -> std::thread::JoinHandle<Result<bench::traffic::BulkReport, bench::traffic::TrafficError>> {
    let (pa, pb) = (nspath(a), nspath(b));
    let ia: std::net::Ipv4Addr = ip_a.parse().unwrap();
    let ib: std::net::Ipv4Addr = ip_b.parse().unwrap();
    std::thread::spawn(move || {
        bench::traffic::tcp_bulk(
            bench::traffic::Endpoint::new(Some(&pb), ib),
            bench::traffic::Endpoint::new(Some(&pa), ia),
            5201,
            1,
            Some(bytes),
            Duration::from_secs(300),
            true,
        )
    })
}
