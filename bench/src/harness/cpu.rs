//! CPU accounting for the bulk workloads: the whole machine from
//! `/proc/stat` (the figure both datapaths are compared on), and this
//! process's dataplane worker threads (tapnet's own share of it).

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

/// CPU time of the whole machine, summed over all CPUs, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineCpu {
    /// user+nice+system+irq+softirq: everything but idle, iowait and the
    /// time stolen by a hypervisor.
    pub busy_s: f64,
    /// system+irq+softirq: the kernel's share of `busy_s`.
    pub sys_s: f64,
}

impl MachineCpu {
    /// The counters now.
    pub fn now() -> MachineCpu {
        MachineCpu::parse(&std::fs::read_to_string("/proc/stat").unwrap_or_default(), clock_ticks())
    }

    /// From the text of `/proc/stat`, with `ticks` clock ticks a second.
    fn parse(stat: &str, ticks: f64) -> MachineCpu {
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return MachineCpu::default() };
        // cpu user nice system idle iowait irq softirq steal …
        let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
        let get = |i: usize| f.get(i).copied().unwrap_or(0) as f64 / ticks;
        let sys_s = get(2) + get(5) + get(6);
        MachineCpu { busy_s: get(0) + get(1) + sys_s, sys_s }
    }

    /// What was spent from `earlier` to `self`.
    pub fn since(self, earlier: MachineCpu) -> MachineCpu {
        MachineCpu { busy_s: self.busy_s - earlier.busy_s, sys_s: self.sys_s - earlier.sys_s }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_cpu_from_proc_stat() {
        // The first lines of /proc/stat on a 2-core machine (at 2 ticks a
        // second, so that every figure is exact).
        let stat = "cpu  1000 20 300 90000 50 4 6 7 0 0\ncpu0 500 10 150 45000 25 2 3 3 0 0\n";
        let m = MachineCpu::parse(stat, 2.0);
        assert_eq!(m, MachineCpu { busy_s: 665.0, sys_s: 155.0 });
        assert_eq!(MachineCpu::parse("", 100.0), MachineCpu::default());
        assert!(MachineCpu::now().busy_s > 0.0);
    }
}
