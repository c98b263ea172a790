//! How a run stays bounded: the deadline and abort flag every blocking
//! loop checks ([`Watch`]), entering namespaces, joining threads, and
//! choosing the error that explains a failed run.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ScopedJoinHandle;
use std::time::Instant;

use control::netns;

use super::{Result, TrafficError};

/// Bounds on a blocking loop: the run's hard deadline, and the flag any
/// thread of the run raises when it fails.
#[derive(Clone, Copy)]
pub(super) struct Watch<'a> {
    pub(super) deadline: Instant,
    pub(super) abort: &'a AtomicBool,
}

impl Watch<'_> {
    /// Fail if the run was aborted or `op` overran the deadline.
    pub(super) fn check(&self, op: &'static str) -> Result<()> {
        if self.abort.load(Ordering::Relaxed) {
            Err(TrafficError::Aborted)
        } else if Instant::now() >= self.deadline {
            Err(TrafficError::Timeout(op))
        } else {
            Ok(())
        }
    }

    /// Pass `r` on, raising the abort flag if it is an error.
    pub(super) fn fail<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.abort.store(true, Ordering::Relaxed);
        }
        r
    }
}

/// Run `f` in namespace `ns` (on a helper thread), or right here for `None`.
pub(super) fn in_ns<T: Send>(ns: Option<&Path>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    match ns {
        None => f(),
        Some(path) => netns::run_in(path, f)?,
    }
}

/// Join a traffic thread; a panic becomes an error.
pub(super) fn join<T>(handle: ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle.join().unwrap_or(Err(TrafficError::ThreadPanicked))
}

/// Of the errors of one run, the one that explains it: data errors first,
/// then ordinary failures, then timeouts, then the aborts they caused.
pub(super) fn most_relevant(errors: impl IntoIterator<Item = TrafficError>) -> Option<TrafficError> {
    fn rank(e: &TrafficError) -> u8 {
        match e {
            TrafficError::Verify { .. } | TrafficError::Short { .. } | TrafficError::BadHeader { .. } => 0,
            TrafficError::Timeout(_) => 2,
            TrafficError::Aborted => 3,
            _ => 1,
        }
    }
    errors.into_iter().min_by_key(rank)
}

/// Both results, or the error that explains the run.
pub(super) fn both<A, B>(a: Result<A>, b: Result<B>) -> Result<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(most_relevant(a.err().into_iter().chain(b.err())).unwrap_or(TrafficError::Aborted)),
    }
}

pub(super) fn sock_err(what: &'static str) -> impl FnOnce(io::Error) -> TrafficError {
    move |source| TrafficError::Socket { what, source }
}

/// Errors after which a blocking call is simply tried again.
pub(super) fn is_retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

/// `amount / seconds`, 0 for an empty interval.
pub(super) fn rate(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        amount / seconds
    } else {
        0.0
    }
}

pub(super) fn min_instant(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
