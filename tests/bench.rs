//! `tapnet bench` as a user runs it: a short run of every scenario reports
//! both datapaths (or "not available"), writes its JSON and chart, and
//! leaves nothing behind; an interrupted run cleans up too.

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

fn interrupt(signals: u32) {
    assert!(is_root(), "needs root");
    let mut child = Command::new(tapnet_bin())
        .args(["bench", "--scenario", "bridge", "--duration", "2", "--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let t0 = Instant::now();
    while bench_namespaces(pid).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the bench built nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..signals {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(300));
    }
    let st = wait_exit(&mut child, Duration::from_secs(60));
    assert!(!st.success(), "an interrupted run must not report success");
    assert_eq!(bench_namespaces(pid), Vec::<String>::new(), "interrupted bench left namespaces");
    let hosts: Vec<String> = std::fs::read_dir("/etc/netns")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let prefix = format!("tnb{}", pid % 100_000);
    assert!(!hosts.iter().any(|n| n.starts_with(&prefix)), "interrupted bench left /etc/netns entries: {hosts:?}");
    let taps = String::from_utf8_lossy(&sh("ip", &["-o", "link", "show", "type", "tun"]).stdout).into_owned();
    assert!(!taps.contains(&format!("tp{pid:x}x")), "interrupted bench left TAP devices: {taps}");
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
    assert_eq!(names, ["bridge", "dnat", "snat", "vxlan", "gre"]);
    let bridge = &scen[0];
    assert_eq!(bridge["available"], true);
    let bulk = bridge["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workload"] == "tcp_bulk_1" && r["metric"] == "Gbit/s")
        .unwrap();
    assert!(bulk["kernel"].as_f64().unwrap() > 0.0 && bulk["tapnet"].as_f64().unwrap() > 0.0, "{bulk}");
    for s in &scen[1..] {
        assert_eq!(s["available"], false, "{s}");
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.contains("<svg") && chart.contains("</svg>"));
    assert!(chart.contains("tcp_bulk_1"), "the chart has no labelled bars");
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(bench_namespaces(pid), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}
