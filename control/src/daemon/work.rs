//! Who serves a request once the API server has read it. Changes go to the
//! engine thread, which owns the engine and makes them one at a time in
//! the order they arrive; after each it publishes a new view. Reads go to
//! a small pool of reader threads, which serve them from the latest view,
//! so they never wait for a change under way. Both hand the reply line
//! back to the server thread and wake it.
//!
//! The engine thread saves the state ([`Store`]) before a change that
//! makes or removes a namespace or TAP (with its intent) and after every
//! change, before the reply goes out. It also sweeps expired MAC entries
//! about once a second, and when told to stop, tears everything down or
//! (`--keep`) leaves it for the next daemon.

use std::io;
use std::os::fd::AsFd;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};

use super::state::{self, Shared, Store};
use super::Stop;
use crate::api::{reply_line, Request};
use crate::engine::Engine;

/// What a request to a daemon that is shutting down gets.
pub(super) const SHUTTING_DOWN: &str = "the daemon is shutting down";

/// How often expired MAC entries are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A connection of the server: its slot and the slot's generation, so a
/// reply for a connection that has gone is not given to the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConnRef {
    pub(super) slot: usize,
    pub(super) gen: u64,
}

pub(super) struct Job {
    pub(super) conn: ConnRef,
    pub(super) req: Request,
    /// A `takeover`'s connection (a duplicate of the server's), which the
    /// engine thread uses itself to pass descriptors.
    pub(super) stream: Option<std::os::unix::net::UnixStream>,
}

/// Duplicates of the daemon's lock and listener, for a takeover.
pub(super) struct Handoff {
    pub(super) lock: std::os::fd::OwnedFd,
    pub(super) listener: std::os::fd::OwnedFd,
}

/// The way back to the server thread.
#[derive(Clone)]
pub(super) struct Replies {
    tx: Sender<(ConnRef, Vec<u8>)>,
    waker: Arc<mio::Waker>,
}

impl Replies {
    pub(super) fn new(waker: Arc<mio::Waker>) -> (Replies, Receiver<(ConnRef, Vec<u8>)>) {
        let (tx, rx) = unbounded();
        (Replies { tx, waker }, rx)
    }

    fn send(&self, conn: ConnRef, line: Vec<u8>) {
        let _ = self.tx.send((conn, line));
        let _ = self.waker.wake();
    }
}

enum ToEngine {
    Job(Box<Job>),
    /// Stop; keep (`true`) or remove every container and network.
    Stop(Sender<Vec<String>>, bool),
}

enum ToReader {
    Job(Box<Job>),
    Stop,
}

/// Where the server sends the requests it has read.
#[derive(Clone)]
pub(super) struct Dispatch {
    engine: Sender<ToEngine>,
    reads: Sender<ToReader>,
}

impl Dispatch {
    pub(super) fn send(&self, job: Job) {
        if job.req.is_read() {
            let _ = self.reads.send(ToReader::Job(Box::new(job)));
        } else {
            let _ = self.engine.send(ToEngine::Job(Box::new(job)));
        }
    }
}

/// The engine thread and the readers.
pub(super) struct Workers {
    dispatch: Dispatch,
    engine: JoinHandle<()>,
    readers: Vec<JoinHandle<()>>,
}

/// A panic's message.
pub(super) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Start the engine thread (which takes `engine`) and `readers` readers.
pub(super) fn start(
    engine: Engine,
    shared: Arc<Shared>,
    store: Store,
    replies: Replies,
    readers: usize,
    stops: Sender<Stop>,
    handoff: Option<Handoff>,
) -> io::Result<Workers> {
    let (etx, erx) = unbounded();
    let (rtx, rrx) = unbounded();
    let (s, r) = (shared.clone(), replies.clone());
    let engine = std::thread::Builder::new()
        .name("tapnet-engine".into())
        .spawn(move || engine_loop(engine, erx, &s, &store, &r, &stops, handoff.as_ref()))?;
    let mut handles = Vec::with_capacity(readers);
    for i in 0..readers {
        let (rx, s, r) = (rrx.clone(), shared.clone(), replies.clone());
        handles
            .push(std::thread::Builder::new().name(format!("tapnet-read{i}")).spawn(move || reader_loop(rx, &s, &r))?);
    }
    Ok(Workers { dispatch: Dispatch { engine: etx, reads: rtx }, engine, readers: handles })
}

impl Workers {
    pub(super) fn dispatch(&self) -> Dispatch {
        self.dispatch.clone()
    }

    /// Stop the readers, then the engine thread, which removes every
    /// container and network (or, with `keep`, leaves them for the next
    /// daemon); returns the problems met. Call [`Shared::stop`] first.
    pub(super) fn stop(self, keep: bool) -> Vec<String> {
        for _ in &self.readers {
            let _ = self.dispatch.reads.send(ToReader::Stop);
        }
        // No view (and so no handle on the dataplane) outlives them.
        for t in self.readers {
            let _ = t.join();
        }
        let (tx, rx) = bounded(1);
        let _ = self.dispatch.engine.send(ToEngine::Stop(tx, keep));
        let errs = rx.recv().unwrap_or_else(|_| vec!["the engine thread has gone".into()]);
        let _ = self.engine.join();
        errs
    }
}

fn engine_loop(
    mut engine: Engine,
    rx: Receiver<ToEngine>,
    shared: &Shared,
    store: &Store,
    replies: &Replies,
    stops: &Sender<Stop>,
    handoff: Option<&Handoff>,
) {
    let mut next_sweep = Instant::now() + SWEEP_EVERY;
    // Handed over to a new daemon: change nothing, save nothing (the state
    // file is the new daemon's).
    let mut handed_over = false;
    loop {
        let msg = match rx.recv_timeout(next_sweep.saturating_duration_since(Instant::now())) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                engine.sweep();
                next_sweep = Instant::now() + SWEEP_EVERY;
                continue;
            }
            // The daemon failed before it served (it stops the engine
            // thread with `Stop` otherwise): leave the containers, which
            // may have been adopted, as a crash would.
            Err(RecvTimeoutError::Disconnected) => {
                if !handed_over {
                    store.save_or_log(&engine.saved());
                }
                for e in engine.release() {
                    eprintln!("tapnet: {e}");
                }
                return;
            }
        };
        match msg {
            ToEngine::Job(job) => {
                let job = *job;
                let r = if shared.stopping() || handed_over {
                    Err(SHUTTING_DOWN.to_string())
                } else if let Request::Takeover { workers } = job.req {
                    let given = match (job.stream, handoff) {
                        (Some(conn), Some(h)) => {
                            super::takeover::give(&engine, store, conn, workers, h.lock.as_fd(), h.listener.as_fd())
                        }
                        _ => Err("this daemon cannot hand over its descriptors".into()),
                    };
                    match given {
                        Ok(()) => {
                            handed_over = true;
                            // The macvlan child is the new daemon's now.
                            engine.forget_made_links();
                            let _ = stops.send(Stop::Takeover);
                            Ok(serde_json::Value::String("handed over".into()))
                        }
                        Err(e) => {
                            eprintln!("tapnet: takeover not done: {e}; still serving");
                            Err(e)
                        }
                    }
                } else if let Request::Shutdown { keep } = job.req {
                    // The main thread stops the daemon once this is answered.
                    let _ = stops.send(Stop::Request { keep });
                    Ok(serde_json::Value::String(if keep { "stopping, keeping everything" } else { "stopping" }.into()))
                } else {
                    if let Some(intent) = state::intent_of(&job.req) {
                        if let Err(e) = store.save_intent(&intent) {
                            eprintln!("tapnet: could not record the intent of a change: {e}");
                        }
                    }
                    let r = match std::panic::catch_unwind(AssertUnwindSafe(|| engine.handle(job.req))) {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(p) => Err(format!("internal error: {}", panic_text(&*p))),
                    };
                    // Saved and published before the reply: whoever hears
                    // of the change and reads next sees it, and a daemon
                    // started after a crash adopts it.
                    store.save_or_log(&engine.saved());
                    shared.publish(engine.view());
                    r
                };
                replies.send(job.conn, reply_line(r));
                if Instant::now() >= next_sweep {
                    engine.sweep();
                    next_sweep = Instant::now() + SWEEP_EVERY;
                }
            }
            ToEngine::Stop(done, keep) => {
                while let Ok(ToEngine::Job(j)) = rx.try_recv() {
                    replies.send(j.conn, reply_line(Err(SHUTTING_DOWN.into())));
                }
                let errs = if handed_over {
                    engine.release()
                } else if keep {
                    // The state file already describes everything.
                    store.save_or_log(&engine.saved());
                    engine.release()
                } else {
                    let errs = engine.shutdown();
                    store.save_or_log(&engine.saved());
                    errs
                };
                let _ = done.send(errs);
                return;
            }
        }
    }
}

fn reader_loop(rx: Receiver<ToReader>, shared: &Shared, replies: &Replies) {
    while let Ok(ToReader::Job(job)) = rx.recv() {
        let r = match shared.view() {
            None => Err(SHUTTING_DOWN.to_string()),
            Some(view) => match std::panic::catch_unwind(AssertUnwindSafe(|| view.read(&job.req))) {
                Ok(Some(r)) => r.map_err(|e| e.to_string()),
                Ok(None) => Err("internal error: a change was sent to a reader".into()),
                Err(p) => Err(format!("internal error: {}", panic_text(&*p))),
            },
        };
        replies.send(job.conn, reply_line(r));
    }
}
