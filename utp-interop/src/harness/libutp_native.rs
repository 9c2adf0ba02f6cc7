//! libutp master (the npm package `utp-native` 2.5.3, INTEROP §8) in a child process:
//! `scripts/libutp_peer.js` under `node`, one connection, JSON lines on stdout.
//!
//! The package is found in [`dir`]: `$UTP_NATIVE_DIR` or else [`DEFAULT_DIR`], holding
//! `node_modules/utp-native` (`npm install utp-native@2.5.3` run there; `.ci/run` does it).
//! The script loads it through `NODE_PATH`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The driver script.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/libutp_peer.js");

/// Environment variable naming the directory `utp-native` is installed in.
pub const DIR_ENV: &str = "UTP_NATIVE_DIR";

/// Where `utp-native` is looked for without [`DIR_ENV`] (where `.ci/run` installs it).
pub const DEFAULT_DIR: &str = "/opt/utp-native";

/// The package version the tests were written against.
pub const VERSION: &str = "2.5.3";

/// The directory holding `node_modules/utp-native`.
pub fn dir() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
}

fn node_path() -> PathBuf {
    dir().join("node_modules")
}

/// Why the peer cannot run here (no `node`, or `utp-native` does not load), or `None`.
pub fn missing() -> Option<String> {
    let out = std::process::Command::new("node")
        .args(["-e", "const p = require('utp-native/package.json'); require('utp-native'); console.log(p.version)"])
        .env("NODE_PATH", node_path())
        .stdin(Stdio::null())
        .output();
    match out {
        Err(e) => Some(format!("cannot run node ({e}; apt-get install nodejs npm)")),
        Ok(o) if !o.status.success() => Some(format!(
            "utp-native does not load from {} (cd {} && npm install utp-native@{VERSION}, or set \
             {DIR_ENV}): {}",
            node_path().display(),
            dir().display(),
            // node prints the source location first, the error a few lines later.
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .find(|l| l.contains("Error"))
                .unwrap_or("")
        )),
        Ok(_) => None,
    }
}

/// Byte `i` of the test pattern `--send N` sends: the top byte of `i * 2654435761 mod 2^32`
/// (the script's `pattern`). A shifted, repeated or reordered stretch changes its SHA-1.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            ((offset + i) as u32)
                .wrapping_mul(2_654_435_761)
                .to_be_bytes()[0]
        })
        .collect()
}

/// Which side dials.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Listen on 0.0.0.0 (port 0: any) and take the first connection.
    Listen(u16),
    /// Dial this address.
    Connect(SocketAddr),
}

/// How to run the peer.
#[derive(Debug, Clone)]
pub struct LibutpConfig {
    /// Listen or dial.
    pub role: Role,
    /// Send this many bytes of [`pattern`], then `end()` (unless `!end_after_send`).
    pub send: Option<u64>,
    /// `end()` after the last byte was handed to libutp.
    pub end_after_send: bool,
    /// `end()` (half-close) as soon as the connection exists, before any data.
    pub early_end: bool,
    /// Answer the peer's FIN with `end()` when sending nothing.
    pub end_on_eof: bool,
    /// Keep the UDP socket open this long after libutp's `close`.
    pub linger: Duration,
    /// The script gives up (event `timeout`, exit 2) after this long.
    pub timeout: Duration,
}

impl LibutpConfig {
    /// Dial or listen; receive and answer the peer's FIN with our own.
    pub fn new(role: Role) -> Self {
        Self {
            role,
            send: None,
            end_after_send: true,
            early_end: false,
            end_on_eof: true,
            linger: Duration::from_secs(3),
            timeout: Duration::from_secs(120),
        }
    }

    /// Send `n` pattern bytes, then FIN.
    pub fn sending(mut self, n: u64) -> Self {
        self.send = Some(n);
        self
    }

    fn args(&self) -> Vec<String> {
        let mut a = match self.role {
            Role::Listen(port) => vec!["--listen".into(), port.to_string()],
            Role::Connect(addr) => vec!["--connect".into(), addr.to_string()],
        };
        if let Some(n) = self.send {
            a.extend(["--send".into(), n.to_string()]);
        }
        if !self.end_after_send {
            a.push("--no-end".into());
        }
        if self.early_end {
            a.push("--early-end".into());
        }
        if !self.end_on_eof {
            a.push("--no-end-on-eof".into());
        }
        a.extend([
            "--linger-ms".into(),
            self.linger.as_millis().to_string(),
            "--timeout-ms".into(),
            self.timeout.as_millis().to_string(),
        ]);
        a
    }
}

/// One line from the script, with the moment it arrived here.
#[derive(Debug, Clone)]
pub struct Event {
    /// When we read the line.
    pub at: Instant,
    /// The line (`{"raw": line}` when it was not JSON).
    pub value: Value,
}

impl Event {
    /// The `event` field.
    pub fn name(&self) -> &str {
        self.value["event"].as_str().unwrap_or("")
    }
}

/// What happened to the connection, from libutp's point of view.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// When `end` (the peer's FIN, after everything before it) arrived here.
    pub end_at: Option<Instant>,
    /// When `finish` arrived here: libutp's `end()` is done, its FIN queued after the data.
    pub finish_at: Option<Instant>,
    /// libutp freed the socket (`close`) and when.
    pub close_at: Option<Instant>,
    /// libutp's error code, if any.
    pub error: Option<String>,
}

impl Outcome {
    /// How long after both FINs were under way (its `end` and its `finish`, whichever came
    /// later) libutp freed the socket. libutp frees sockets in its timeout check, which runs at
    /// most every 500 ms.
    pub fn close_after_fins(&self) -> Option<Duration> {
        let fins = self.end_at?.max(self.finish_at?);
        Some(self.close_at?.saturating_duration_since(fins))
    }
}

/// A running libutp peer. Killed when dropped.
#[derive(Debug)]
pub struct Libutp {
    /// Held for `kill_on_drop`.
    _child: Child,
    events: mpsc::UnboundedReceiver<Event>,
    seen: Vec<Event>,
    stderr: Arc<Mutex<String>>,
    port: u16,
}

impl Libutp {
    /// Start the peer; a listener is returned once it listens ([`port`](Self::port)).
    pub async fn start(config: &LibutpConfig) -> io::Result<Self> {
        let mut child = Command::new("node")
            .arg(SCRIPT)
            .args(config.args())
            .env("NODE_PATH", node_path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let events = super::json_lines(stdout, |value| Event {
            at: Instant::now(),
            value,
        });
        let err_text = super::collect_stderr(stderr);
        let mut peer = Self {
            _child: child,
            events,
            seen: Vec::new(),
            stderr: err_text,
            port: 0,
        };
        if let Role::Listen(_) = config.role {
            let e = peer
                .wait_for(Duration::from_secs(10), |e| e.name() == "listening")
                .await?;
            peer.port = e.value["port"].as_u64().unwrap_or(0) as u16;
            if peer.port == 0 {
                return Err(io::Error::other("libutp did not listen"));
            }
        }
        Ok(peer)
    }

    /// The UDP port a listener is bound to (on 0.0.0.0); 0 when dialing.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Wait for the next event matching `pred` (all events are kept in
    /// [`events`](Self::events)). Fails on timeout or when the script exits.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> io::Result<Event> {
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
                        "libutp script exited; events:\n{}\nstderr:\n{}",
                        self.events_text(),
                        self.stderr()
                    )));
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "libutp: no matching event in {timeout:?}; events:\n{}",
                            self.events_text()
                        ),
                    ));
                }
            }
        }
    }

    /// The first event so far named `name`, or else the next one within `timeout`.
    pub async fn find_or_wait(&mut self, timeout: Duration, name: &str) -> io::Result<Event> {
        self.drain();
        if let Some(e) = self.seen.iter().find(|e| e.name() == name) {
            return Ok(e.clone());
        }
        self.wait_for(timeout, |e| e.name() == name).await
    }

    /// Wait up to `timeout` for the connection's `close` (or an error, or the script's end),
    /// then sum up what happened.
    pub async fn outcome(&mut self, timeout: Duration) -> Outcome {
        let _ = self
            .wait_for(timeout, |e| {
                matches!(e.name(), "close" | "timeout" | "exit")
            })
            .await;
        self.outcome_so_far()
    }

    /// What happened so far, without waiting.
    pub fn outcome_so_far(&mut self) -> Outcome {
        self.drain();
        let mut o = Outcome::default();
        for e in &self.seen {
            match e.name() {
                "end" => o.end_at = Some(e.at),
                "finish" => o.finish_at = Some(e.at),
                "close" => o.close_at = Some(e.at),
                "error" => {
                    o.error
                        .get_or_insert_with(|| e.value["code"].as_str().unwrap_or("?").to_owned());
                }
                _ => {}
            }
        }
        o
    }

    /// Take the events that arrived without waiting.
    pub fn drain(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
    }

    /// Every event so far.
    pub fn events(&mut self) -> &[Event] {
        self.drain();
        &self.seen
    }

    /// The events so far, one JSON object per line.
    pub fn events_text(&mut self) -> String {
        self.drain();
        self.seen
            .iter()
            .map(|e| e.value.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What the script wrote to stderr.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    #[test]
    fn pattern_matches_the_script() {
        // Knuth's multiplier: 0 -> 0, 1 -> 0x9e, 2 -> 0x3c (2 * 0x9e3779b1 mod 2^32 = 0x3c6ef362).
        assert_eq!(pattern(0, 3), [0x00, 0x9e, 0x3c]);
        assert_eq!(pattern(1, 2), pattern(0, 3)[1..]);
        // SHA-1 of the first 20 MB as the script computes it (node, `--send 20000000`).
        assert_eq!(
            crate::wire::hex(&Sha1::digest(pattern(0, 20_000_000))),
            "cb8c4a6c939fa60ebba1280f36cade9c14367b27"
        );
    }

    #[test]
    fn arguments() {
        let mut c = LibutpConfig::new(Role::Connect("127.0.0.1:9".parse().unwrap())).sending(5);
        c.end_after_send = false;
        assert_eq!(
            c.args().join(" "),
            "--connect 127.0.0.1:9 --send 5 --no-end --linger-ms 3000 --timeout-ms 120000"
        );
        let mut l = LibutpConfig::new(Role::Listen(0));
        l.early_end = true;
        l.end_on_eof = false;
        assert_eq!(
            l.args().join(" "),
            "--listen 0 --early-end --no-end-on-eof --linger-ms 3000 --timeout-ms 120000"
        );
    }
}
