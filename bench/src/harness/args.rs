//! `tapnet bench`'s options ([`BenchArgs`], parsed by `tapnet-bench`'s
//! command line) and their validation into [`Settings`], all before
//! anything is built.

use std::path::PathBuf;

use control::engine::EngineConfig;
use serde::Serialize;

/// Scenarios of `--scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Bridge,
    Dnat,
    Snat,
    Vxlan,
    Gre,
    All,
}

impl Scenario {
    pub(super) const EACH: [Scenario; 5] =
        [Scenario::Bridge, Scenario::Dnat, Scenario::Snat, Scenario::Vxlan, Scenario::Gre];

    pub(super) fn name(self) -> &'static str {
        match self {
            Scenario::Bridge => "bridge",
            Scenario::Dnat => "dnat",
            Scenario::Snat => "snat",
            Scenario::Vxlan => "vxlan",
            Scenario::Gre => "gre",
            Scenario::All => "all",
        }
    }
}

/// External tools for cross-checking the built-in generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tool {
    /// Only the built-in generator.
    Builtin,
    /// Also `iperf3 -c`, 1 stream, through both datapaths.
    Iperf3,
}

/// `tapnet bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Which datapath to compare.
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// Seconds per workload.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Streams of the multi-stream TCP bulk workload.
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// tapnet worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Offered rate of the fixed-rate UDP workload, in packets per second.
    #[arg(long, default_value_t = 50_000)]
    pub udp_rate: u64,
    /// Also write the results as JSON to FILE.
    // Same id as the global `--json` flag, so clap does not add that flag
    // here (two `--json` would clash); see `GlobalArgs::json` in control/src/cli/mod.rs.
    #[arg(id = "json", long = "json", value_name = "FILE")]
    pub json: Option<String>,
    /// Write a bar chart of tapnet/kernel ratios (FILE.svg or FILE.png).
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    pub plot: Option<PathBuf>,
    /// Cross-check the built-in generator with an external tool.
    #[arg(long, value_enum, default_value = "builtin")]
    pub tool: Tool,
    /// Do not pin tapnet's workers to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Measure every workload this many times, alternating the datapaths,
    /// and report the median of each figure (the machine's noise shrinks).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// tapnet workers poll without sleeping for this long after traffic
    /// (as `tapnet daemon --busy-poll-us`).
    #[arg(long, default_value_t = control::engine::DEFAULT_BUSY_POLL_US)]
    pub busy_poll_us: u32,
}

/// Validated settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub scenarios: Vec<Scenario>,
    pub duration_s: u64,
    pub streams: usize,
    pub workers: usize,
    pub udp_rate_pps: u64,
    pub pin: bool,
    pub busy_poll_us: u32,
    pub repeat: usize,
    #[serde(skip)]
    pub json: Option<PathBuf>,
    #[serde(skip)]
    pub plot: Option<PathBuf>,
    pub iperf3: bool,
}

impl BenchArgs {
    /// Check everything before anything is built; errors are one line.
    pub fn validate(&self) -> std::result::Result<Settings, String> {
        if self.duration == 0 || self.duration > 3600 {
            return Err(format!("invalid --duration {}: must be between 1 and 3600 seconds", self.duration));
        }
        if self.streams == 0 || self.streams > 1024 {
            return Err(format!("invalid --streams {}: must be between 1 and 1024", self.streams));
        }
        let workers = self.workers.unwrap_or_else(|| EngineConfig::default().workers);
        if workers == 0 || workers > 64 {
            return Err(format!("invalid --workers {workers}: must be between 1 and 64"));
        }
        if self.repeat == 0 || self.repeat > 100 {
            return Err(format!("invalid --repeat {}: must be between 1 and 100", self.repeat));
        }
        if self.udp_rate == 0 || self.udp_rate > 100_000_000 {
            return Err(format!("invalid --udp-rate {}: must be between 1 and 100000000", self.udp_rate));
        }
        if let Some(p) = &self.plot {
            match p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
                Some("svg") | Some("png") => {}
                _ => return Err(format!("invalid --plot {}: the file name must end in .svg or .png", p.display())),
            }
        }
        let json = self.json.as_ref().map(PathBuf::from);
        for f in json.iter().chain(self.plot.iter()) {
            if let Some(dir) = f.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(format!("cannot write {}: no such directory {}", f.display(), dir.display()));
                }
            }
        }
        let scenarios = match self.scenario {
            Scenario::All => Scenario::EACH.to_vec(),
            s => vec![s],
        };
        Ok(Settings {
            scenarios,
            duration_s: self.duration,
            streams: self.streams,
            workers,
            udp_rate_pps: self.udp_rate,
            pin: !self.no_pin,
            busy_poll_us: self.busy_poll_us,
            repeat: self.repeat,
            json,
            plot: self.plot.clone(),
            iperf3: self.tool == Tool::Iperf3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        b: BenchArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<Settings, String> {
        let cli =
            TestCli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        cli.b.validate()
    }

    #[test]
    fn validation() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.scenarios.len(), 5);
        assert_eq!((s.duration_s, s.streams), (5, 4));
        assert!(parse(&["--scenario", "bogus"]).is_err());
        assert!(parse(&["--duration", "0"]).unwrap_err().contains("--duration"));
        assert!(parse(&["--streams", "0"]).unwrap_err().contains("--streams"));
        assert!(parse(&["--plot", "/tmp/x.png"]).is_ok());
        assert!(parse(&["--plot", "/tmp/x.gif"]).unwrap_err().contains(".svg or .png"));
        assert!(parse(&["--json", "/nonexistent-dir/x.json"]).is_err());
        let s = parse(&["--scenario", "bridge", "--json", "/tmp/x.json", "--plot", "/tmp/x.svg"]).unwrap();
        assert_eq!(s.scenarios, vec![Scenario::Bridge]);
        assert_eq!(s.json.as_deref(), Some(Path::new("/tmp/x.json")));
    }
}
