//! The daemon's API: newline-delimited JSON over a Unix socket.
//!
//! Each request is one JSON object on one line, tagged by `op`; each reply is
//! one line, `{"ok":true,"data":…}` or `{"ok":false,"error":"…"}`. The
//! default socket is [`DEFAULT_SOCKET`] (mode 0600); `--socket` or
//! `TAPNET_SOCKET` choose another, so several daemons can run side by side.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const DEFAULT_SOCKET: &str = "/run/tapnet/tapnet.sock";
pub const DEFAULT_STATE_DIR: &str = "/run/tapnet";

/// A request to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Version,
    NetworkCreate {
        name: String,
        subnet: String,
        gateway: Option<String>,
        mtu: Option<u32>,
        fdb_max: Option<usize>,
        fdb_ageing: Option<u64>,
    },
    NetworkLs,
    NetworkInspect {
        name: String,
    },
    NetworkRm {
        name: String,
    },
    NetworkConnect {
        network: String,
        container: String,
        ip: Option<String>,
    },
    NetworkDisconnect {
        network: String,
        container: String,
    },
    ContainerCreate {
        name: String,
        network: String,
        ip: Option<String>,
        mac: Option<String>,
    },
    ContainerRm {
        name: String,
    },
    ContainerLs,
    ContainerInspect {
        name: String,
    },
    Fdb {
        network: String,
    },
    Stats,
}

/// The reply envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One container's attachment to a network, as `network inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkEndpoint {
    pub container: String,
    pub interface: String,
    pub mac_address: String,
    pub ipv4_address: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    pub mtu: u32,
    pub fdb_max: usize,
    pub fdb_ageing: u64,
    pub containers: Vec<NetworkEndpoint>,
}

/// One interface of a container, as `container inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerEndpoint {
    pub network: String,
    pub interface: String,
    pub mac_address: String,
    pub ipv4_address: String,
    pub gateway: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub name: String,
    pub id: String,
    /// `NET`, `none`, `host` or `container:OTHER`, as given at creation.
    pub network_mode: String,
    /// The namespace file to enter to run inside the container.
    pub sandbox_key: String,
    pub networks: Vec<ContainerEndpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbRow {
    pub mac: String,
    pub port: u16,
    /// `container:interface` of the port.
    pub port_name: String,
    pub age_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbInfo {
    pub network: String,
    pub entries: Vec<FdbRow>,
    pub max: usize,
    pub ageing: u64,
    /// Bridge events since the network was created (learned, moved, …).
    pub events: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortStats {
    pub port: u16,
    pub name: String,
    pub network: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// One worker's activity: how many poll wake-ups it had and how many frames
/// it handled (frames / wakeups is the batching it achieves).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub worker: usize,
    pub wakeups: u64,
    pub frames: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsInfo {
    pub workers: usize,
    pub per_worker: Vec<WorkerInfo>,
    pub ports: Vec<PortStats>,
    /// Frames dropped, by reason (every reason listed, zero or not).
    pub drops: BTreeMap<String, u64>,
    /// Bridge events per network.
    pub networks: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub pid: u32,
    pub workers: usize,
}

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
    (&stream).write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    let resp: Response = serde_json::from_str(&reply).map_err(|e| ClientError::BadReply(e.to_string()))?;
    if resp.ok {
        Ok(resp.data.unwrap_or(serde_json::Value::Null))
    } else {
        Err(ClientError::Refused(resp.error.unwrap_or_else(|| "unknown error".into())))
    }
}
