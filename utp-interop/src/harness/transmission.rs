//! A Transmission 3.00 daemon of our own (own config dir, own ports), driven through its RPC
//! (JSON over HTTP, with the `X-Transmission-Session-Id` dance).
//!
//! Settings follow INTEROP §2: uTP on, `encryption: 0` (plaintext preferred; with 1 a
//! plaintext-only uTP peer deadlocks for 30 s), no DHT, LPD, PEX or port forwarding. No
//! setting disables TCP, and Transmission never dials 127/8, so a test where it dials runs
//! in a network namespace with private addresses ([`super::netns`]).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct TransmissionConfig {
    /// Config directory (settings.json, resume files, the log).
    pub dir: PathBuf,
    /// `bind-address-ipv4`: where its uTP (UDP) socket and its outgoing connections bind.
    pub bind_ipv4: Ipv4Addr,
    /// `peer-port` (TCP and UDP).
    pub peer_port: u16,
    /// RPC port on 127.0.0.1.
    pub rpc_port: u16,
}

impl TransmissionConfig {
    /// The settings.json contents.
    pub fn settings(&self) -> Value {
        json!({
            "utp-enabled": true,
            "encryption": 0,
            "dht-enabled": false,
            "lpd-enabled": false,
            "pex-enabled": false,
            "port-forwarding-enabled": false,
            "blocklist-enabled": false,
            "peer-port": self.peer_port,
            "peer-port-random-on-start": false,
            "bind-address-ipv4": self.bind_ipv4.to_string(),
            "bind-address-ipv6": "::1",
            "rpc-enabled": true,
            "rpc-port": self.rpc_port,
            "rpc-bind-address": "127.0.0.1",
            "rpc-authentication-required": false,
            "rpc-whitelist-enabled": true,
            "rpc-whitelist": "127.0.0.1,::1",
            "rpc-host-whitelist-enabled": false,
            "download-dir": self.dir.join("downloads"),
            "incomplete-dir-enabled": false,
            "rename-partial-files": false,
            "watch-dir-enabled": false,
            "start-added-torrents": true,
            "ratio-limit-enabled": false,
            "idle-seeding-limit-enabled": false,
            "speed-limit-up-enabled": false,
            "speed-limit-down-enabled": false,
            "alt-speed-enabled": false,
            "download-queue-enabled": false,
            "seed-queue-enabled": false,
            "queue-stalled-enabled": false,
            "message-level": 3,
        })
    }
}

/// A client of a daemon's RPC. Cheap to clone; clones share the session id.
#[derive(Debug, Clone)]
pub struct Rpc {
    addr: SocketAddr,
    session: Arc<Mutex<String>>,
}

impl Rpc {
    /// A client of the RPC at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            session: Arc::new(Mutex::new(String::new())),
        }
    }

    /// Call `method` and return its `arguments`; fails unless `result` is `success`.
    pub async fn call(&self, method: &str, arguments: Value) -> io::Result<Value> {
        let body = json!({"method": method, "arguments": arguments}).to_string();
        for _ in 0..3 {
            let session = self.session.lock().expect("session").clone();
            let (status, headers, reply) = self.post(&body, &session).await?;
            if status == 409 {
                let id = headers
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("X-Transmission-Session-Id")
                            .then(|| v.trim().to_owned())
                    })
                    .ok_or_else(|| io::Error::other("409 without a session id"))?;
                *self.session.lock().expect("session") = id;
                continue;
            }
            if status != 200 {
                return Err(io::Error::other(format!("RPC {method}: HTTP {status}")));
            }
            let v: Value = serde_json::from_slice(&reply).map_err(io::Error::other)?;
            if v["result"] != "success" {
                return Err(io::Error::other(format!("RPC {method}: {}", v["result"])));
            }
            return Ok(v["arguments"].clone());
        }
        Err(io::Error::other("RPC: session id not accepted"))
    }

    async fn post(&self, body: &str, session: &str) -> io::Result<(u16, String, Vec<u8>)> {
        let mut conn = TcpStream::connect(self.addr).await?;
        let req = format!(
            "POST /transmission/rpc HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nX-Transmission-Session-Id: {session}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        conn.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        conn.read_to_end(&mut resp).await?;
        let at = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| io::Error::other("truncated HTTP response"))?;
        let head = String::from_utf8_lossy(&resp[..at]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other("bad HTTP status line"))?;
        let mut body = resp.split_off(at + 4);
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        Ok((status, head, body))
    }

    /// `torrent-add` of a local `.torrent` file, downloading to (or seeding from)
    /// `download_dir`. Returns the torrent id.
    pub async fn add_torrent(&self, torrent: &Path, download_dir: &Path) -> io::Result<i64> {
        let args = self
            .call(
                "torrent-add",
                json!({"filename": torrent, "download-dir": download_dir, "paused": false}),
            )
            .await?;
        let t = args
            .get("torrent-added")
            .or_else(|| args.get("torrent-duplicate"))
            .ok_or_else(|| io::Error::other(format!("torrent-add: {args}")))?;
        t["id"]
            .as_i64()
            .ok_or_else(|| io::Error::other("torrent-add: no id"))
    }

    /// `torrent-get` of `fields` for torrent `id`.
    pub async fn torrent(&self, id: i64, fields: &[&str]) -> io::Result<Value> {
        let args = self
            .call("torrent-get", json!({"ids": [id], "fields": fields}))
            .await?;
        args["torrents"]
            .get(0)
            .cloned()
            .ok_or_else(|| io::Error::other(format!("no torrent {id}")))
    }

    /// `torrent-stop`: the daemon closes every connection of the torrent.
    pub async fn stop(&self, id: i64) -> io::Result<()> {
        self.call("torrent-stop", json!({"ids": [id]}))
            .await
            .map(drop)
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || eol + 2 + size > b.len() {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

/// A running daemon; killed when dropped.
#[derive(Debug)]
pub struct Transmission {
    child: Child,
    config: TransmissionConfig,
    rpc: Rpc,
}

impl Transmission {
    /// Write settings.json and start `transmission-daemon -f -g DIR --log-debug` with
    /// `TR_DEBUG_FD=2` (the per-peer, handshake and libutp log lines) into `DIR/daemon.log`.
    /// Returns once the RPC answers.
    pub async fn start(config: TransmissionConfig) -> io::Result<Self> {
        std::fs::create_dir_all(config.dir.join("downloads"))?;
        std::fs::write(
            config.dir.join("settings.json"),
            serde_json::to_vec_pretty(&config.settings()).map_err(io::Error::other)?,
        )?;
        let log = std::fs::File::create(config.dir.join("daemon.log"))?;
        let child = Command::new("transmission-daemon")
            .arg("-f")
            .arg("-g")
            .arg(&config.dir)
            .arg("--log-debug")
            .env("TR_DEBUG_FD", "2")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let rpc = Rpc::new(SocketAddr::from((Ipv4Addr::LOCALHOST, config.rpc_port)));
        let mut daemon = Self { child, config, rpc };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match daemon.rpc.call("session-get", json!({})).await {
                Ok(_) => return Ok(daemon),
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(io::Error::other(format!(
                        "transmission RPC never answered: {e}\n{}",
                        daemon.log_tail(40)
                    )));
                }
                Err(_) => {
                    if let Some(status) = daemon.child.try_wait()? {
                        return Err(io::Error::other(format!(
                            "transmission-daemon exited ({status})\n{}",
                            daemon.log_tail(40)
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The RPC client.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The settings it runs with.
    pub fn config(&self) -> &TransmissionConfig {
        &self.config
    }

    /// The peer address it listens on for uTP and TCP.
    pub fn peer_addr(&self) -> SocketAddr {
        SocketAddr::from((self.config.bind_ipv4, self.config.peer_port))
    }

    /// The whole daemon log.
    pub fn log(&self) -> String {
        std::fs::read(self.config.dir.join("daemon.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the daemon log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Ask the daemon to exit (`session-close`) and wait up to 5 s, then kill it.
    pub async fn stop(mut self) {
        let _ = self.rpc.call("session-close", json!({})).await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }

    #[test]
    fn settings_are_utp_and_plaintext() {
        let c = TransmissionConfig {
            dir: "/tmp/x".into(),
            bind_ipv4: Ipv4Addr::new(10, 77, 0, 1),
            peer_port: 51413,
            rpc_port: 9091,
        };
        let s = c.settings();
        assert_eq!(s["utp-enabled"], true);
        assert_eq!(s["encryption"], 0);
        assert_eq!(s["bind-address-ipv4"], "10.77.0.1");
    }

    /// The RPC client against a fake server that insists on a session id first.
    #[tokio::test]
    async fn rpc_session_id_dance() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for round in 0..2 {
                let (mut c, _) = listener.accept().await.unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = c.read(&mut buf).await.unwrap();
                    req.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let reply = if round == 0 {
                    assert!(text.contains("X-Transmission-Session-Id: \r\n"));
                    "HTTP/1.1 409 Conflict\r\nX-Transmission-Session-Id: abc\r\nContent-Length: 0\r\n\r\n".to_owned()
                } else {
                    assert!(text.contains("X-Transmission-Session-Id: abc\r\n"));
                    let body = r#"{"arguments":{"version":"3.00"},"result":"success"}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                c.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let rpc = Rpc::new(addr);
        let v = rpc.call("session-get", json!({})).await.unwrap();
        assert_eq!(v["version"], "3.00");
    }
}
