//! CPU accounting for the bulk workloads: this process's dataplane worker
//! threads, and the whole machine from `/proc/stat`.

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User+system seconds of this process's dataplane workers (`tapnet-w*`).
pub fn worker_cpu_s() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let mut ticks = 0u64;
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("tapnet-w") {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            ticks += get(11) + get(12);
        }
    }
    ticks as f64 / clock_ticks()
}

/// Machine-wide system+irq+softirq seconds, summed over all CPUs.
pub fn kernel_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    // cpu user nice system idle iowait irq softirq steal …
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    (get(2) + get(5) + get(6)) as f64 / clock_ticks()
}
