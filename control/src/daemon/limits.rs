//! The daemon's resource limits: what the API server allows a client, and
//! the file descriptors the process may hold.
//!
//! File descriptors are what bounds the number of containers: every
//! interface a container has on a network is a TAP with one queue per
//! worker, and each queue is a descriptor the daemon holds. At start-up the
//! daemon raises its soft `RLIMIT_NOFILE` to the hard limit; the README's
//! "Limits" gives the resulting bound.

use std::io;
use std::time::Duration;

/// Connections served at once. At the limit a new connection takes the
/// place of the one idle the longest, which is told why it is closed.
pub const MAX_CONNECTIONS: usize = 256;

/// The longest request line, newline excluded. A longer one is answered
/// with an error and skipped, never held in memory.
pub const MAX_REQUEST: usize = 1 << 20;

/// A connection that sends no whole request for this long after it was
/// opened or last answered (and reads nothing of a pending reply) is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Threads serving reads from the published view.
pub const READERS: usize = 2;

/// Descriptors the daemon needs besides containers' queues, API
/// connections and its workers' pollers (its own sockets and files, and
/// the netlink sockets and namespace files a change opens for a moment),
/// with a margin.
pub const BASE_FDS: u64 = 32;

/// Descriptors each worker holds besides its queues: its poller and waker.
pub const FDS_PER_WORKER: u64 = 2;

/// The soft and hard `RLIMIT_NOFILE`.
pub fn nofile() -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: r is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r.rlim_cur, r.rlim_max))
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft
/// limit.
pub fn raise_nofile() -> io::Result<u64> {
    let (soft, hard) = nofile()?;
    if soft < hard {
        let r = libc::rlimit { rlim_cur: hard, rlim_max: hard };
        // SAFETY: r is a valid rlimit; raising the soft limit up to the
        // hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(hard.max(soft))
}

/// How many container interfaces (ports) a daemon with `workers` workers
/// and a soft `RLIMIT_NOFILE` of `nofile` can hold: each takes one
/// descriptor per worker, after the daemon's own, its workers', the API's
/// connections and the uplink's; and the dataplane has
/// [`dataplane::stats::MAX_PORTS`] port ids, one of them taken by an
/// uplink if there is one.
pub fn max_ports(nofile: u64, workers: usize, uplink: bool) -> usize {
    let workers = workers.max(1) as u64;
    let own = BASE_FDS + FDS_PER_WORKER * workers + MAX_CONNECTIONS as u64 + if uplink { workers } else { 0 };
    let spare = nofile.saturating_sub(own);
    let ids = dataplane::stats::MAX_PORTS - usize::from(uplink);
    ids.min((spare / workers) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bound() {
        // The dataplane's table binds first with a generous limit...
        assert_eq!(max_ports(1 << 20, 2, false), 1024);
        assert_eq!(max_ports(1 << 20, 2, true), 1023);
        // ... the descriptors with the common default of 1024, or with
        // many workers.
        assert_eq!(max_ports(1024, 2, false), (1024 - 32 - 4 - 256) / 2);
        assert_eq!(max_ports(65536, 64, false), (65536 - 32 - 128 - 256) / 64);
        assert_eq!(max_ports(65536, 64, true), (65536 - 32 - 128 - 256 - 64) / 64);
        assert_eq!(max_ports(100, 2, false), 0);
    }

    #[test]
    fn raising_the_limit_reaches_the_hard_limit() {
        // The limit is the test process's, where raising the soft limit to
        // the hard one is harmless.
        let (_, hard) = nofile().unwrap();
        assert_eq!(raise_nofile().unwrap(), hard);
        assert_eq!(nofile().unwrap().0, hard);
    }

    /// The figures of the README's "Limits" table, checked.
    #[test]
    fn readme_table() {
        let row = |nofile| [2, 8, 64].map(|w| max_ports(nofile, w, false));
        assert_eq!(row(1024), [366, 90, 9]);
        assert_eq!(row(4096), [1024, 474, 57]);
        assert_eq!(row(20_000), [1024, 1024, 306]);
        assert_eq!(row(524_288), [1024, 1024, 1024]);
    }
}
