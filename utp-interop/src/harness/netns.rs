//! A network namespace of the test's own, so Transmission can dial us: it refuses 127/8 and
//! `::1` (INTEROP §3), so the namespace's `lo` gets private addresses that exist nowhere
//! else. Nothing inside can reach outside: the namespace has no other interface.
//!
//! The test re-runs itself inside (`ip netns exec NS <test binary> <test name> --exact`),
//! with [`NETNS_ENV`] set so the child runs the scenario instead of re-running itself again.
//! The namespace is named uniquely per run (`utpi-<pid>-<n>`); dropping [`Netns`] kills
//! whatever still runs inside and deletes it, and [`Netns::create`] first deletes the
//! namespaces of earlier runs whose process is gone.

use std::io;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Set (to the namespace's name) in the child that runs inside the namespace.
pub const NETNS_ENV: &str = "UTP_INTEROP_NETNS";

/// The namespace's name if this process runs inside one of ours.
pub fn inside() -> Option<String> {
    std::env::var(NETNS_ENV).ok().filter(|v| !v.is_empty())
}

/// A named network namespace; deleted (with everything still running in it) when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Netns {
    /// Create `utpi-<pid>-<n>` with `lo` up and `addrs` (each a /32) on it.
    pub fn create(addrs: &[Ipv4Addr]) -> io::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let name = format!(
            "utpi-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        for a in addrs {
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{a}/32"),
                "dev",
                "lo",
            ])?;
        }
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run this test binary's test `test` inside, alone, without output capture and even if
    /// it is marked ignored, and collect its output.
    pub fn run_test(&self, test: &str) -> io::Result<Output> {
        let exe = std::env::current_exe()?;
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(exe)
            // The outer test already decided to run (an ignored one only with --ignored).
            .args([
                test,
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(NETNS_ENV, &self.name)
            .stdin(Stdio::null())
            .output()
    }

    /// Processes running inside.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.name)
    }
}

fn pids_in(name: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn delete(name: &str) {
    // Only processes inside our own namespace: everything there was started by the test.
    for pid in pids_in(name) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let _ = ip(&["netns", "del", name]);
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// Delete `utpi-<pid>-*` namespaces whose creating process no longer exists (left by a test
/// run that was killed).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix("utpi-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete(name);
        }
    }
}
