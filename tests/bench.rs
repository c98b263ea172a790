//! `tapnet bench` as a user runs it: a short run of every scenario reports
//! both datapaths (tapnet alone, with the reason, where the kernel has no
//! reference), writes its JSON and chart, and leaves nothing behind (no
//! namespace, no `/etc/netns` entry, no link); an interrupted run cleans up
//! too, whenever the signals come.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bench_namespaces(pid: u32) -> Vec<String> {
    let prefix = format!("tnb{}", pid % 100_000);
    netns_list().into_iter().filter(|n| n.starts_with(&prefix)).collect()
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("tapnet bench did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `/etc/netns` entries of bench `pid`.
fn bench_etc_netns(pid: u32) -> Vec<String> {
    let prefix = format!("tnb{}", pid % 100_000);
    std::fs::read_dir("/etc/netns")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Links of bench `pid` in this (the root) namespace: its TAPs' transient
/// names, and the names its topologies give links in their host namespaces.
fn bench_links(pid: u32) -> Vec<String> {
    let out = String::from_utf8_lossy(&sh("ip", &["-o", "link", "show"]).stdout).into_owned();
    let tap = format!("tp{pid:x}x");
    let ours = [
        "br0", "up0", "oeth0", "vetha", "vethb", "vethc", "cetha", "cethb", "cethc", "ul0", "ul0b", "vxlan0", "veth0",
        "ceth0",
    ];
    out.lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string()))
        .filter(|n| n.starts_with(&tap) || ours.contains(&n.as_str()))
        .collect()
}

/// Nothing of bench `pid` is left.
fn assert_clean(pid: u32, what: &str) {
    assert_eq!(bench_namespaces(pid), Vec::<String>::new(), "{what} left namespaces");
    assert_eq!(bench_etc_netns(pid), Vec::<String>::new(), "{what} left /etc/netns entries");
    assert_eq!(bench_links(pid), Vec::<String>::new(), "{what} left links in the root namespace");
}

/// Start `tapnet bench --scenario SCENARIO` and, `delay` after it made its
/// first namespace, send it `signals` SIGINTs 300 ms apart. Returns its
/// pid once it has exited, unsuccessfully.
fn interrupt_at(scenario: &str, signals: u32, delay: Duration) -> u32 {
    assert!(is_root(), "needs root");
    let mut child = Command::new(tapnet_bin())
        .args(["bench", "--scenario", scenario, "--duration", "2", "--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let t0 = Instant::now();
    while bench_namespaces(pid).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the bench built nothing");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(delay);
    for _ in 0..signals {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(300));
    }
    let st = wait_exit(&mut child, Duration::from_secs(60));
    assert!(!st.success(), "an interrupted run must not report success");
    pid
}

fn interrupt(signals: u32) {
    let pid = interrupt_at("bridge", signals, Duration::from_millis(1500));
    assert_clean(pid, "interrupted bench");
}

#[test]
#[ignore = "needs root: runs `tapnet bench`, which builds namespaces, bridges and TAP devices"]
fn interrupted_once_finishes_cleanly() {
    interrupt(1);
}

#[test]
#[ignore = "needs root: runs `tapnet bench`, which builds namespaces, bridges and TAP devices"]
fn interrupted_twice_still_cleans_up() {
    interrupt(2);
}

/// Two signals at moments spread over building both datapaths of a NAT
/// scenario, its first workloads and (with the longest delays) its
/// teardown: whatever the bench was doing, nothing is left.
#[test]
#[ignore = "needs root: runs `tapnet bench`, which builds namespaces, bridges, iptables rules and TAP devices"]
fn interrupted_twice_at_any_moment_of_a_nat_scenario() {
    for ms in [0, 40, 120, 300, 700, 1500, 2600] {
        let pid = interrupt_at("snat", 2, Duration::from_millis(ms));
        assert_clean(pid, &format!("bench interrupted {ms} ms after it started building"));
    }
}

/// Start `tapnet bench --scenario SCENARIO`, send it a SIGINT as soon as
/// it prints a line starting with `first`, and another one as soon as it
/// prints a line starting with `second` (`None`: `gap` after the first).
/// Returns its pid once it has exited.
fn interrupt_on(scenario: &str, first: &str, second: Option<&str>, gap: Duration) -> u32 {
    use std::io::BufRead;
    assert!(is_root(), "needs root");
    let mut child = Command::new(tapnet_bin())
        .args(["bench", "--scenario", scenario, "--duration", "1", "--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // SAFETY: signalling our own child.
    let sigint = || unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (mut sent, mut seen) = (0, Vec::new());
    // A progress line ends once its step is done, but every step starts
    // with a line of its own, read as soon as it is printed.
    for line in stderr.lines() {
        let Ok(line) = line else { break };
        let starts = |p: &str| line.trim_start().starts_with(p);
        if sent == 0 && starts(first) {
            sigint();
            sent = 1;
            if second.is_none() {
                std::thread::sleep(gap);
                sigint();
                sent = 2;
            }
        } else if sent == 1 && second.is_some_and(starts) {
            sigint();
            sent = 2;
        }
        seen.push(line);
    }
    let st = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(sent, 2, "the bench never printed {first:?} then {second:?}:\n{}", seen.join("\n"));
    assert!(!st.success(), "an interrupted run must not report success");
    pid
}

/// The second signal while the bench builds tapnet's datapath, and while
/// it tears both down: the signal handler's cleanup must not race the
/// step under way (a namespace or a hosts file made after it ran).
#[test]
#[ignore = "needs root: runs `tapnet bench`, which builds namespaces, bridges, iptables rules and TAP devices"]
fn interrupted_twice_while_building_or_tearing_down() {
    for gap in [0, 20, 60, 150] {
        let gap = Duration::from_millis(gap);
        let pid = interrupt_on("snat", "building snat/tapnet", None, gap);
        assert_clean(pid, &format!("bench interrupted {gap:?} into building tapnet"));
        let pid = interrupt_on("bridge", "building bridge/tapnet", Some("tearing down"), gap);
        assert_clean(pid, "bench interrupted while tearing down");
    }
}

/// `tapnet bench --scenario SCENARIO --duration 1`: exits 0, prints rows for
/// both datapaths with non-zero figures for every workload, and leaves
/// nothing behind.
fn nat_short_run(scenario: &str) {
    let (v, table, pid) = short_run(scenario);
    let sc = &v["scenarios"][0];
    assert_eq!(sc["scenario"].as_str(), Some(scenario), "{sc}");
    assert_eq!(sc["failures"].as_array().unwrap().len(), 0, "{sc}");
    let rows = sc["rows"].as_array().unwrap();
    for (w, metric) in
        [("tcp_bulk_1", "Gbit/s"), ("tcp_bulk_n", "Gbit/s"), ("tcp_rr", "trans/s"), ("tcp_crr", "conn/s")]
    {
        let r =
            rows.iter().find(|r| r["workload"] == w && r["metric"] == metric).unwrap_or_else(|| panic!("{w}: {table}"));
        for dp in ["kernel", "tapnet"] {
            assert!(r[dp].as_f64().unwrap_or(0.0) > 0.0, "{w} {dp}: {r}");
        }
        assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
        // The table shows it too: kernel, tapnet and the ratio.
        let line = table.lines().find(|l| l.starts_with(scenario) && l.contains(w) && l.contains(metric)).unwrap();
        assert_eq!(line.split_whitespace().count(), 6, "{line}");
    }
    // tapnet's dataplane carried the traffic through its uplink.
    let stats = &sc["detail"]["tapnet"]["tcp_crr"]["tapnet_stats"];
    let flows = stats["router"]["flows_created"].as_u64().unwrap_or(0);
    assert!(flows > 10, "conntrack entries made during tcp_crr: {stats}");
    let up = stats["ports"].as_array().unwrap().iter().find(|p| p["name"] == "uplink:up0").unwrap();
    assert!(up["rx_packets"].as_u64().unwrap() > 0 && up["tx_packets"].as_u64().unwrap() > 0, "{up}");
    assert_clean(pid, scenario);
}

#[test]
#[ignore = "needs root: runs `tapnet bench`, which builds namespaces, bridges, iptables rules and TAP devices"]
fn dnat_short_run() {
    nat_short_run("dnat");
}

#[test]
#[ignore = "needs root: runs `tapnet bench`, which builds namespaces, bridges, iptables rules and TAP devices"]
fn snat_short_run() {
    nat_short_run("snat");
}

/// `tapnet bench --scenario SCENARIO --duration 1 --json FILE`: exits 0;
/// returns the report, the table and the bench's pid.
fn short_run(scenario: &str) -> (serde_json::Value, String, u32) {
    assert!(is_root(), "needs root");
    let json = std::env::temp_dir().join(format!("tapnet-bench-{scenario}-{}.json", std::process::id()));
    let mut child = Command::new(tapnet_bin())
        .args(["bench", "--scenario", scenario, "--duration", "1", "--workers", "1", "--streams", "2", "--json"])
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let st = wait_exit(&mut child, Duration::from_secs(180));
    let mut table = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut table).unwrap();
    assert!(st.success(), "bench failed:\n{table}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    (v, table, pid)
}

/// Every TCP workload of `sc` has a non-zero tapnet figure, and a kernel
/// one with a ratio when `kernel`; the table shows the same.
fn check_tcp_rows(sc: &serde_json::Value, table: &str, kernel: bool) {
    let name = sc["scenario"].as_str().unwrap();
    assert_eq!(sc["failures"].as_array().unwrap().len(), 0, "{sc}");
    let rows = sc["rows"].as_array().unwrap();
    for (w, metric) in
        [("tcp_bulk_1", "Gbit/s"), ("tcp_bulk_n", "Gbit/s"), ("tcp_rr", "trans/s"), ("tcp_crr", "conn/s")]
    {
        let r =
            rows.iter().find(|r| r["workload"] == w && r["metric"] == metric).unwrap_or_else(|| panic!("{w}: {table}"));
        assert!(r["tapnet"].as_f64().unwrap_or(0.0) > 0.0, "{name} {w} tapnet: {r}");
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name) && l.contains(w) && l.contains(metric))
            .unwrap_or_else(|| panic!("no {name} {w} line in\n{table}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 6, "{line}");
        if kernel {
            assert!(r["kernel"].as_f64().unwrap_or(0.0) > 0.0, "{name} {w} kernel: {r}");
            assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
        } else {
            assert!(r["kernel"].is_null() && r["ratio"].is_null(), "{r}");
            assert_eq!((cols[3], cols[5]), ("-", "-"), "{line}");
        }
    }
    // The bytes crossed host A's VTEP, towards host B.
    let stats = &sc["detail"]["tapnet"]["tcp_bulk_1"]["tapnet_stats"];
    let vtep = stats["ports"].as_array().unwrap().iter().find(|p| p["name"] == "a/vtep:192.168.215.2").unwrap();
    assert!(vtep["tx_bytes"].as_u64().unwrap() > 1_000_000, "{vtep}");
}

/// `--scenario vxlan`: the kernel's vxlan overlay and tapnet's in both
/// modes, each mode a scenario of its own against the same kernel run.
#[test]
#[ignore = "needs root: runs `tapnet bench`, which builds namespaces, a veth underlay, vxlan devices and TAP devices"]
fn vxlan_short_run() {
    let (v, table, pid) = short_run("vxlan");
    let scen = v["scenarios"].as_array().unwrap();
    let names: Vec<(&str, &str)> =
        scen.iter().map(|s| (s["scenario"].as_str().unwrap(), s["mode"].as_str().unwrap())).collect();
    assert_eq!(names, [("vxlan", "udp_csum=false"), ("vxlan-csum", "udp_csum=true")]);
    for sc in scen {
        check_tcp_rows(sc, &table, true);
        assert!(sc.get("no_kernel_reference").is_none(), "{sc}");
    }
    // One kernel run, shown against both.
    let k = |s: &serde_json::Value| s["rows"][0]["kernel"].as_f64().unwrap();
    assert_eq!(k(&scen[0]), k(&scen[1]));
    assert_clean(pid, "vxlan");
}

/// `--scenario gre`: tapnet alone, with the reason there is no kernel
/// reference, in the JSON and the table.
#[test]
#[ignore = "needs root: runs `tapnet bench`, which builds namespaces, a veth underlay and TAP devices"]
fn gre_short_run() {
    let (v, table, pid) = short_run("gre");
    let sc = &v["scenarios"][0];
    assert_eq!(sc["scenario"], "gre");
    let kernel = sc["no_kernel_reference"].as_str().is_none();
    if !kernel {
        assert!(table.contains("gre        no kernel reference: "), "{table}");
    }
    check_tcp_rows(sc, &table, kernel);
    assert_clean(pid, "gre");
}

/// Two signals at moments spread over building the overlays (three of
/// them for vxlan, each with two hosts) and running them.
#[test]
#[ignore = "needs root: runs `tapnet bench`, which builds namespaces, a veth underlay, vxlan devices and TAP devices"]
fn interrupted_twice_at_any_moment_of_an_overlay_scenario() {
    for (sc, ms) in [("vxlan", 0), ("vxlan", 150), ("vxlan", 600), ("vxlan", 2500), ("gre", 100), ("gre", 1800)] {
        let pid = interrupt_at(sc, 2, Duration::from_millis(ms));
        assert_clean(pid, &format!("{sc} bench interrupted {ms} ms after it started building"));
    }
    for gap in [0, 60] {
        let pid = interrupt_on("vxlan", "building vxlan-csum/tapnet", None, Duration::from_millis(gap));
        assert_clean(pid, "vxlan bench interrupted while building tapnet's second overlay");
    }
}

#[test]
#[ignore = "needs root: runs `tapnet bench`, which builds namespaces, bridges and TAP devices"]
fn png_chart() {
    let png = std::env::temp_dir().join(format!("tapnet-bench-{}.png", std::process::id()));
    let out = Command::new(tapnet_bin())
        .args(["bench", "--scenario", "bridge", "--duration", "1", "--workers", "1", "--plot"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&png).unwrap();
    let _ = std::fs::remove_file(&png);
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (w, h) =
        (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()));
    assert!(w >= 800 && h >= 200, "{w}x{h}");
}

#[test]
#[ignore = "needs root: runs `tapnet bench`, which builds namespaces, bridges and TAP devices"]
fn short_run_of_every_scenario() {
    let dir = std::env::temp_dir().join(format!("tapnet-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("r.json"), dir.join("r.svg"));
    let mut child = Command::new(tapnet_bin())
        .args(["bench", "--scenario", "all", "--duration", "1", "--workers", "1", "--streams", "2"])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let st = wait_exit(&mut child, Duration::from_secs(300));
    let mut table = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut table).unwrap();
    assert!(st.success(), "bench failed:\n{table}");
    assert!(table.contains("TAPNET/KERNEL") && table.contains("tcp_bulk_1"), "{table}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let scen = v["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scen.iter().map(|s| s["scenario"].as_str().unwrap()).collect();
    assert_eq!(names, ["bridge", "dnat", "snat", "vxlan", "vxlan-csum", "gre"]);
    let bridge = &scen[0];
    let bulk = bridge["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workload"] == "tcp_bulk_1" && r["metric"] == "Gbit/s")
        .unwrap();
    assert!(bulk["kernel"].as_f64().unwrap() > 0.0 && bulk["tapnet"].as_f64().unwrap() > 0.0, "{bulk}");
    for s in &scen[1..] {
        assert!(s["rows"].as_array().unwrap().iter().any(|r| r["workload"] == "tcp_crr"), "{s}");
        assert_eq!(s["failures"].as_array().unwrap().len(), 0, "{s}");
    }
    assert!(v["load"]["start"][0].as_f64().is_some(), "{}", v["load"]);
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.contains("<svg") && chart.contains("</svg>"));
    assert!(chart.contains("tcp_bulk_1"), "the chart has no labelled bars");
    assert!(chart.contains("vxlan-csum tcp_bulk_1"), "the chart has no bar for vxlan-csum");
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
    assert_clean(pid, "bench");
    let _ = std::fs::remove_dir_all(&dir);
}
