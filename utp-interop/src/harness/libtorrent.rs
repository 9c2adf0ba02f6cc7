//! A libtorrent-rasterbar 2.0 peer in a child process: `scripts/lt_peer.py` under
//! `/usr/bin/python3`, uTP only, plaintext only, driven with JSON lines.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use super::PYTHON;

/// The driver script.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lt_peer.py");

/// How to start the peer.
#[derive(Debug, Clone)]
pub struct LibtorrentConfig {
    /// The `.torrent` file.
    pub torrent: PathBuf,
    /// Where the data is (seeding) or goes (downloading).
    pub save_path: PathBuf,
    /// Seed (the data must be in `save_path`; it is hash-checked first) or download.
    pub seed: bool,
    /// `listen_interfaces`, e.g. `127.0.0.1:0`.
    pub listen: String,
    /// Dial this peer once ready (`connect_peer`, which goes out as uTP).
    pub connect: Option<SocketAddr>,
    /// Extra `settings_pack` keys.
    pub settings: Value,
}

/// A running libtorrent peer. Killed when dropped.
#[derive(Debug)]
pub struct Libtorrent {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
    stderr: Arc<Mutex<String>>,
    port: u16,
}

impl Libtorrent {
    /// Start the peer and wait until it listens and its torrent is ready (checked, for a
    /// seed).
    pub async fn start(config: &LibtorrentConfig) -> io::Result<Self> {
        let arg = json!({
            "torrent": config.torrent,
            "save_path": config.save_path,
            "seed": config.seed,
            "listen": config.listen,
            "connect": config.connect.map(|a| json!([a.ip().to_string(), a.port()])),
            "settings": config.settings,
        });
        let mut child = Command::new(PYTHON)
            .arg(SCRIPT)
            .arg(arg.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let events = super::json_lines(stdout, |v| v);
        let err_text = super::collect_stderr(stderr);
        let mut lt = Self {
            child,
            stdin,
            events,
            seen: Vec::new(),
            stderr: err_text,
            port: 0,
        };
        let listening = lt
            .wait_for(Duration::from_secs(20), |e| e["event"] == "listening")
            .await?;
        lt.port = listening["port"].as_u64().unwrap_or(0) as u16;
        lt.wait_for(Duration::from_secs(40), |e| e["event"] == "ready")
            .await?;
        if lt.port == 0 {
            return Err(io::Error::other("libtorrent did not listen"));
        }
        Ok(lt)
    }

    /// The uTP listen port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Send a command object.
    pub async fn command(&mut self, cmd: Value) -> io::Result<()> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        self.stdin.flush().await
    }

    /// Dial `peer` (uTP).
    pub async fn connect(&mut self, peer: SocketAddr) -> io::Result<()> {
        self.command(json!({"cmd": "connect", "ip": peer.ip().to_string(), "port": peer.port()}))
            .await
    }

    /// Wait for the next event matching `pred` (earlier events, matching or not, are kept in
    /// [`events`](Self::events)). Fails on timeout or if the process ends.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> io::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return Ok(e);
                    }
                }
                Ok(None) => {
                    return Err(io::Error::other(format!(
                        "libtorrent exited; stderr:\n{}",
                        self.stderr()
                    )));
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "libtorrent: no matching event in {timeout:?}; events: {}",
                            self.events_text()
                        ),
                    ));
                }
            }
        }
    }

    /// The first event so far matching `pred`, or else the next one to arrive within
    /// `timeout`.
    pub async fn find_or_wait(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> io::Result<Value> {
        self.drain();
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return Ok(e.clone());
        }
        self.wait_for(timeout, pred).await
    }

    /// Take the events that arrived without waiting.
    pub fn drain(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
    }

    /// Every event received so far.
    pub fn events(&mut self) -> &[Value] {
        self.drain();
        &self.seen
    }

    /// The events so far, one per line.
    pub fn events_text(&mut self) -> String {
        self.drain();
        self.seen
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The session's counters (`utp.*`, `net.*`, `peer.*`).
    pub async fn stats(&mut self) -> io::Result<Value> {
        self.command(json!({"cmd": "stats"})).await?;
        let e = self
            .wait_for(Duration::from_secs(10), |e| e["event"] == "stats")
            .await?;
        Ok(e["values"].clone())
    }

    /// The torrent's status and peers.
    pub async fn status(&mut self) -> io::Result<Value> {
        self.command(json!({"cmd": "status"})).await?;
        self.wait_for(Duration::from_secs(10), |e| e["event"] == "status")
            .await
    }

    /// What the peer wrote to stderr.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// Ask the script to quit and wait for it (killed after 5 s).
    pub async fn quit(mut self) {
        let _ = self.command(json!({"cmd": "quit"})).await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
