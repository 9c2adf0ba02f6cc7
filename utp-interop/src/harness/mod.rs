//! Drivers for the real peers and the test environment: tool detection and the SKIP rule,
//! temporary directories, result lines, network namespaces, libtorrent (through a Python
//! script), the Transmission daemon (through its RPC) and libutp master (`utp-native` from
//! npm, through a node script).
//!
//! Tests that need a tool call [`require`]: when the tool is missing it prints a `SKIP` line
//! and the test returns, unless `UTP_INTEROP_REQUIRED=1` (set by `.ci/run`), which turns a
//! missing tool into a failure.

pub mod libtorrent;
pub mod libutp_native;
pub mod netns;
pub mod transmission;

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Environment variable that makes missing tools a failure instead of a skip.
pub const REQUIRED_ENV: &str = "UTP_INTEROP_REQUIRED";

/// The Python interpreter python3-libtorrent is built for (a pyenv `python3` earlier in
/// `PATH` cannot import it, INTEROP §0).
pub const PYTHON: &str = "/usr/bin/python3";

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `python3-libtorrent` under [`PYTHON`].
    Libtorrent,
    /// `transmission-daemon` 3.00.
    Transmission,
    /// Root and `ip` (iproute2), for a network namespace of our own.
    Netns,
    /// `node` and the npm package `utp-native` (libutp master) in
    /// [`libutp_native::dir`].
    LibutpNative,
}

/// Why `tool` cannot be used here, or `None` when it can.
pub fn missing(tool: Tool) -> Option<String> {
    let ok = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    match tool {
        Tool::Libtorrent => (!ok(PYTHON, &["-c", "import libtorrent"])).then(|| {
            format!("{PYTHON} cannot import libtorrent (apt-get install python3-libtorrent)")
        }),
        Tool::Transmission => (!ok("transmission-daemon", &["--version"]))
            .then(|| "transmission-daemon not found (apt-get install transmission-daemon)".into()),
        Tool::Netns => {
            let uid = Command::new("id")
                .arg("-u")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
            if uid.as_deref() != Some("0") {
                Some(format!(
                    "a network namespace needs root (ip netns); `id -u` says {}",
                    uid.as_deref().unwrap_or("nothing")
                ))
            } else if !ok("ip", &["netns", "list"]) {
                Some("`ip netns` does not work (apt-get install iproute2)".into())
            } else {
                None
            }
        }
        Tool::LibutpNative => libutp_native::missing(),
    }
}

/// Whether `UTP_INTEROP_REQUIRED=1`.
pub fn required() -> bool {
    std::env::var(REQUIRED_ENV).is_ok_and(|v| v == "1")
}

/// Check `tools` for `test`. Returns false (after printing a SKIP line) when one is missing;
/// panics instead when [`required`].
pub fn require(test: &str, tools: &[Tool]) -> bool {
    let reasons: Vec<String> = tools.iter().filter_map(|&t| missing(t)).collect();
    if reasons.is_empty() {
        return true;
    }
    let why = reasons.join("; ");
    if required() {
        panic!("{test}: {REQUIRED_ENV}=1 but {why}");
    }
    say(&format!("SKIP {test}: {why}"));
    false
}

/// Write `line` straight to stderr (not captured by the test harness, so it shows in CI
/// logs even for passing tests), prefixed with `interop: `.
pub fn say(line: &str) {
    let _ = writeln!(io::stderr(), "interop: {line}");
}

/// Print a result line and append it to `results` (one line per scenario, for the table).
pub fn record_result(results: &Path, line: &str) {
    say(line);
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(results) {
        let _ = writeln!(f, "{line}");
    }
}

/// A directory removed when dropped (kept when `UTP_INTEROP_KEEP=1`, for debugging).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new empty directory under the system temp dir, named after `tag`, the process and
    /// a counter.
    pub fn new(tag: &str) -> io::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "utp-interop-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory, created.
    pub fn sub(&self, name: &str) -> io::Result<PathBuf> {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var("UTP_INTEROP_KEEP").is_ok_and(|v| v == "1") {
            say(&format!("kept {}", self.path.display()));
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child's stdout as JSON lines (a line that is not JSON arrives as `{"raw": line}`),
/// each wrapped by `wrap`, until the child closes it: the event stream of the peer scripts.
pub(crate) fn json_lines<T: Send + 'static>(
    stdout: tokio::process::ChildStdout,
    wrap: impl Fn(serde_json::Value) -> T + Send + 'static,
) -> tokio::sync::mpsc::UnboundedReceiver<T> {
    use tokio::io::AsyncBufReadExt;
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let value =
                serde_json::from_str(&line).unwrap_or_else(|_| serde_json::json!({ "raw": line }));
            if tx.send(wrap(value)).is_err() {
                break;
            }
        }
    });
    events
}

/// A child's stderr, collected as it comes, for failure messages.
pub(crate) fn collect_stderr(
    stderr: tokio::process::ChildStderr,
) -> std::sync::Arc<std::sync::Mutex<String>> {
    use tokio::io::AsyncBufReadExt;
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    tokio::spawn({
        let text = text.clone();
        async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut t = text.lock().expect("stderr");
                t.push_str(&line);
                t.push('\n');
            }
        }
    });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_unique_and_removed() {
        let a = TempDir::new("unit").unwrap();
        let b = TempDir::new("unit").unwrap();
        assert_ne!(a.path(), b.path());
        let sub = a.sub("x").unwrap();
        assert!(sub.is_dir());
        let p = a.path().to_owned();
        drop(a);
        assert!(!p.exists());
    }
}
