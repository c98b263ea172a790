//! The client side of the API: one request, one reply, one-line errors.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{Request, Response};

/// Errors a client sees.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is missing or nobody listens.
    #[error("cannot reach the tapnet daemon at {path}: {source} (is `tapnet daemon` running?)")]
    Connect { path: String, source: std::io::Error },
    /// The connection broke mid-request.
    #[error("talking to the tapnet daemon: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon sent something that is not a reply.
    #[error("bad reply from the tapnet daemon: {0}")]
    BadReply(String),
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(String),
}

/// Send one request and return its data.
pub fn call(socket: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    let stream = UnixStream::connect(socket)
        .map_err(|source| ClientError::Connect { path: socket.display().to_string(), source })?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut line = serde_json::to_string(req).map_err(|e| ClientError::BadReply(e.to_string()))?;
    line.push('\n');
    // The daemon may answer before reading (when it has too many
    // connections or no descriptor left) and close: its line is worth more
    // than the broken pipe a write then meets.
    let sent = (&stream).write_all(line.as_bytes());
    let mut reply = String::new();
    let read = BufReader::new(&stream).read_line(&mut reply);
    if reply.is_empty() {
        return Err(match (sent, read) {
            (Err(e), _) | (Ok(()), Err(e)) => ClientError::Io(e),
            (Ok(()), Ok(_)) => ClientError::BadReply("the daemon closed the connection without a reply".into()),
        });
    }
    let resp: Response = serde_json::from_str(&reply).map_err(|e| ClientError::BadReply(e.to_string()))?;
    if resp.ok {
        Ok(resp.data.unwrap_or(serde_json::Value::Null))
    } else {
        Err(ClientError::Refused(resp.error.unwrap_or_else(|| "unknown error".into())))
    }
}
