//! The API socket: bind it (refusing to steal it from a live daemon), and
//! serve one connection, one JSON request per line, under the engine lock.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use super::state::Shared;
use super::{ioe, DaemonError};
use crate::api::{Request, Response};

pub(super) fn bind(socket: &Path) -> Result<UnixListener, DaemonError> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(ioe("create", parent))?;
    }
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(DaemonError::AlreadyRunning(socket.display().to_string()));
        }
        std::fs::remove_file(socket).map_err(ioe("remove stale socket", socket))?;
    }
    let l = UnixListener::bind(socket).map_err(ioe("bind", socket))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(ioe("chmod", socket))?;
    Ok(l)
}

/// Serve one client connection: one JSON request per line.
pub(super) fn serve(conn: UnixStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(300)));
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let resp = match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => Response { ok: false, data: None, error: Some(format!("bad request: {e}")) },
            Ok(req) => {
                let mut g = shared.lock();
                match g.as_mut() {
                    None => Response { ok: false, data: None, error: Some("the daemon is shutting down".into()) },
                    Some(engine) => {
                        let r = engine.handle(req);
                        shared.save(engine);
                        match r {
                            Ok(data) => Response { ok: true, data: Some(data), error: None },
                            Err(e) => Response { ok: false, data: None, error: Some(e.to_string()) },
                        }
                    }
                }
            }
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_default();
        out.push(b'\n');
        if (&conn).write_all(&out).is_err() {
            return;
        }
    }
}
