//! `tapnet demo` (filled in below).
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Seconds of TCP bulk traffic.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
}
pub fn run(_a: &DemoArgs, _json: bool) -> Result<(), String> {
    Err("demo not ready".into())
}
