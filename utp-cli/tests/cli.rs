//! The `utp` command line as scripts see it: which subcommand an argument list selects, the
//! exit status of each way to fail, one `utp: error:` prefix, and logs without colour codes
//! when stderr is a pipe.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const UTP: &str = env!("CARGO_BIN_EXE_utp");

fn utp(args: &[&str]) -> Output {
    Command::new(UTP)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run utp")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A loopback UDP port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr").port()
}

#[test]
fn debug_flag_before_bench_selects_bench() {
    let out = utp(&["-d", "bench", "--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: utp bench"), "{help}");
    assert!(help.contains("--controller"), "{help}");
}

#[test]
fn help_lists_bench_and_exit_codes_but_not_the_testbed_tools() {
    let out = utp(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for text in [
        "bench",
        "HOST PORT",
        "-l -p PORT",
        "--controller",
        "Exit status",
    ] {
        assert!(help.contains(text), "{text:?} missing: {help}");
    }
    assert!(!help.contains("testbed-"), "{help}");
}

#[test]
fn refused_connection_exits_3() {
    let port = closed_port().to_string();
    let out = utp(&["127.0.0.1", &port]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("utp: error: "), "{err}");
    assert!(err.contains("connection refused"), "{err}");
}

#[test]
fn unresolvable_name_exits_1_and_a_name_with_n_exits_2() {
    let out = utp(&["no-such-host.invalid", "4000"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("utp: error: "));
    let out = utp(&["-n", "localhost", "4000"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn connect_to_a_silent_peer_exits_4_after_w() {
    // Bound, never answers: the SYNs go unanswered and no ICMP comes back.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port().to_string();
    let out = utp(&["-w", "1", "127.0.0.1", &port]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.starts_with("utp: error: ") && err.contains("timed out"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2_with_one_prefix() {
    for args in [
        &[][..],
        &["-l"],
        &["127.0.0.1"],
        &["--controller", "cubic", "127.0.0.1", "4000"],
        &["127.0.0.1", "not-a-port"],
        &["-w", "0", "127.0.0.1", "4000"],
        &["-l", "-p", "4000", "bench"],
        &["bench", "--no-such-option"],
    ] {
        let out = utp(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("utp: error: "), "{args:?}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn debug_log_into_a_pipe_has_no_colour_and_no_repeated_line() {
    let port = closed_port().to_string();
    let out = utp(&["-d", "127.0.0.1", &port]);
    let err = stderr(&out);
    assert!(err.contains("DEBUG"), "-d logs at debug: {err}");
    assert!(!err.contains('\x1b'), "ANSI escape in a pipe: {err:?}");
    // Each line without its timestamp: none may appear twice.
    let mut lines: Vec<_> = err
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest))
        .collect();
    let all = lines.len();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), all, "a line logged twice: {err}");
}

/// A `utp -l -p 0` listener, the port it printed, and the rest of its stderr lines.
fn listen(extra: &[&str]) -> (std::process::Child, String, mpsc::Receiver<String>) {
    let mut listener = Command::new(UTP)
        .args(extra)
        .args(["-l", "-p", "0", "-s", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn listener");
    let stderr = listener.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let port = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("listening line");
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.rsplit(':').next().expect("port").to_string();
        }
    };
    (listener, port, rx)
}

#[test]
fn reset_by_the_peer_exits_5() {
    let (listener, port, lines) = listen(&[]);
    // The testbed sender resets its flow at the deadline.
    let sender = utp(&[
        "testbed-send",
        "--utp",
        "--to",
        &format!("127.0.0.1:{port}"),
        "--duration",
        "300ms",
    ]);
    assert!(sender.status.success(), "{}", stderr(&sender));
    let out = listener.wait_with_output().expect("listener");
    // The reader thread ends at EOF, which the exit brings.
    let err: String = lines.iter().collect::<Vec<_>>().join("\n");
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("utp: error: ") && err.contains("reset"),
        "{err}"
    );
}

#[test]
fn netcat_with_ledbat_plus_plus_moves_bytes() {
    let (listener, port, _stderr) = listen(&["--controller", "ledbat++"]);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    let mut sender = Command::new(UTP)
        .args([
            "--controller",
            "ledbat++",
            "--packet-size",
            "1000",
            "127.0.0.1",
            &port,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sender");
    sender
        .stdin
        .take()
        .expect("stdin")
        .write_all(&payload)
        .expect("write");
    let sent = sender.wait_with_output().expect("sender");
    assert!(sent.status.success(), "{}", stderr(&sent));
    let got = listener.wait_with_output().expect("listener");
    assert!(got.status.success());
    assert_eq!(got.stdout.len(), payload.len());
    assert!(got.stdout == payload);
}

/// A listener whose stdout is a regular file writes it from its runtime's thread
/// (`download_to_file`); the file holds every byte, in order.
#[test]
fn netcat_into_a_file_moves_bytes() {
    let path = std::env::temp_dir().join(format!("utp-cli-test-{}.out", std::process::id()));
    let mut listener = Command::new(UTP)
        .args(["-l", "-p", "0", "-s", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&path).expect("output file"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn listener");
    let mut lines = BufReader::new(listener.stderr.take().expect("stderr")).lines();
    let port = loop {
        let line = lines.next().expect("listening line").expect("stderr line");
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.rsplit(':').next().expect("port").to_string();
        }
    };
    thread::spawn(move || lines.for_each(drop));
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
    let mut sender = Command::new(UTP)
        .args(["127.0.0.1", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sender");
    let mut stdin = sender.stdin.take().expect("stdin");
    let writer = thread::spawn(move || stdin.write_all(&payload).map(|()| payload));
    let sent = sender.wait_with_output().expect("sender");
    let payload = writer.join().expect("writer").expect("write");
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert!(listener.wait().expect("listener").success());
    let got = std::fs::read(&path).expect("read output");
    let _ = std::fs::remove_file(&path);
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "the file differs from what was sent");
}
