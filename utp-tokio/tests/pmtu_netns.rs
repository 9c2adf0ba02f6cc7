//! Path MTU discovery over a real link (issue #6's last step): two network namespaces joined
//! by a veth pair with `mtu 1280`, one `examples/pmtu_peer` in each (`ip netns exec`), both
//! with `SocketConfig::dont_fragment(true)`. The sender must settle on a packet size within
//! 32 bytes of 1252 (1280 − 20 IPv4 − 8 UDP) and deliver every byte.
//!
//! Needs root and iproute2's `ip`; skips with a message otherwise (CI runs as root).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const LINK_MTU: usize = 1280;
const BYTES: usize = 8 << 20;

#[test]
fn pmtu_discovery_finds_a_1280_byte_veth_link() {
    if let Some(why) = cannot_run() {
        eprintln!("SKIPPED pmtu_netns: {why}");
        return;
    }
    let Some(peer) = peer_binary() else {
        panic!("cannot find or build the pmtu_peer example");
    };
    let net = Netns::new(LINK_MTU);
    let server = format!("{}:4000", net.addr_b);

    let started = Instant::now();
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &net.ns_b])
        .arg(&peer)
        .args(["listen", &server, &BYTES.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn listener");
    let mut listener_out = BufReader::new(listener.stdout.take().unwrap());
    let mut line = String::new();
    listener_out.read_line(&mut line).expect("listener output");
    assert_eq!(line.trim(), "ready", "listener did not start");

    let sender = Command::new("ip")
        .args(["netns", "exec", &net.ns_a])
        .arg(&peer)
        .args(["connect", &server, &BYTES.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sender");
    let sent = wait_with_deadline(sender, Duration::from_secs(120));
    let received = finish(listener, listener_out, Duration::from_secs(30));
    let took = started.elapsed();

    let sent_line = String::from_utf8_lossy(&sent.stdout).trim().to_owned();
    eprintln!("sender:   {sent_line}");
    eprintln!("receiver: {}", received.1.trim());
    eprintln!("took {took:.2?}");
    assert!(sent.status.success(), "sender failed: {sent_line}");
    assert!(received.0, "receiver failed: {}", received.1);
    assert_eq!(field(&received.1, "bytes"), Some(BYTES as f64));
    assert_eq!(field(&received.1, "ok"), Some(1.0), "data corrupt");

    let size = field(&sent_line, "packet_size").expect("packet_size") as usize;
    let target = LINK_MTU - 28;
    assert!(
        size <= target && target - size <= 32,
        "packet size {size}: want within 32 bytes below {target}"
    );
    assert!(field(&sent_line, "mtu_probes_sent").unwrap_or(0.0) > 0.0);
}

/// Why this test cannot run here, if it cannot.
fn cannot_run() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    if euid.as_deref() != Some("0") {
        return Some("needs root (network namespaces)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("iproute2's `ip` is missing".into()),
    }
}

/// The `pmtu_peer` example beside this test binary (`cargo test` builds examples), else
/// built now.
fn peer_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?; // target/<profile>/deps/this → target/<profile>
    let path = profile_dir.join("examples").join("pmtu_peer");
    if path.exists() {
        return Some(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "utp-tokio", "--example", "pmtu_peer"]);
    if profile_dir.file_name()? == "release" {
        build.arg("--release");
    }
    build
        .env("CARGO_TARGET_DIR", profile_dir.parent()?)
        .status()
        .ok()?
        .success()
        .then_some(path)
}

/// Wait for `child`, killing it past `limit`.
fn wait_with_deadline(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("child output")
}

/// Wait for the listener and return (success, the rest of its output).
fn finish(mut child: Child, mut out: BufReader<ChildStdout>, limit: Duration) -> (bool, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    (status.is_some_and(|s| s.success()), rest)
}

/// A number (or `true` as 1) from a flat JSON line.
fn field(line: &str, key: &str) -> Option<f64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let value: String = line[start..]
        .chars()
        .take_while(|c| *c != ',' && *c != '}')
        .collect();
    match value.as_str() {
        "true" => Some(1.0),
        "false" => Some(0.0),
        v => v.parse().ok(),
    }
}

/// Two namespaces joined by a veth pair; removed on drop (which also removes the pair).
struct Netns {
    ns_a: String,
    ns_b: String,
    addr_b: String,
}

impl Netns {
    fn new(mtu: usize) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // Interface names are at most 15 bytes.
        let (ns_a, ns_b) = (format!("utp-pmtu-a-{id}"), format!("utp-pmtu-b-{id}"));
        let (if_a, if_b) = (format!("upa{id}"), format!("upb{id}"));
        // A /30 from 10.x chosen by the id, so parallel runs do not share addresses.
        let n: u32 = id.parse::<u32>().unwrap_or(0) % (1 << 14);
        let net = (10u32 << 24) | (200 << 16) | (n << 2);
        let ip = |host: u32| {
            let a = net | host;
            format!(
                "{}.{}.{}.{}",
                a >> 24,
                (a >> 16) & 255,
                (a >> 8) & 255,
                a & 255
            )
        };
        let (addr_a, addr_b) = (ip(1), ip(2));
        let this = Self {
            ns_a: ns_a.clone(),
            ns_b: ns_b.clone(),
            addr_b: addr_b.clone(),
        };
        let mtu = mtu.to_string();
        ip_cmd(&["netns", "add", &ns_a]);
        ip_cmd(&["netns", "add", &ns_b]);
        ip_cmd(&[
            "link", "add", &if_a, "netns", &ns_a, "mtu", &mtu, "type", "veth", "peer", "name",
            &if_b, "netns", &ns_b, "mtu", &mtu,
        ]);
        for (ns, ifname, addr) in [(&ns_a, &if_a, &addr_a), (&ns_b, &if_b, &addr_b)] {
            let cidr = format!("{addr}/30");
            ip_cmd(&["-n", ns, "addr", "add", &cidr, "dev", ifname]);
            ip_cmd(&["-n", ns, "link", "set", ifname, "up"]);
            ip_cmd(&["-n", ns, "link", "set", "lo", "up"]);
        }
        this
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Run `ip args`, panicking (after which `Netns`'s drop cleans up) if it fails.
fn ip_cmd(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
