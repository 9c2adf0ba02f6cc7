//! ICMP errors as input (Linux error queue): a connection to a closed port is refused in a
//! round trip, and an open connection whose peer process vanished is reset by the next
//! packet's port unreachable. The assertions are on error kinds and the endpoint's
//! `icmp_errors`; the elapsed time is only printed.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_tokio::UtpSocket;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A port on `ip` nobody listens on: bind a UDP socket and drop it.
fn closed_port(ip: &str) -> Option<SocketAddr> {
    UdpSocket::bind((ip, 0)).ok()?.local_addr().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_closed_port_is_refused() {
    init_tracing();
    // IPv4, IPv6, and IPv4 through a dual-stack socket (IPv4-mapped).
    for (bind, ip) in [
        ("127.0.0.1:0", "127.0.0.1"),
        ("[::1]:0", "::1"),
        ("[::]:0", "127.0.0.1"),
    ] {
        let Ok(socket) = UtpSocket::bind(bind).await else {
            continue; // no such address family here
        };
        let closed = closed_port(ip).unwrap();
        let start = Instant::now();
        let err = socket.connect(closed).await.unwrap_err();
        eprintln!("{bind} -> {closed}: {err} after {:?}", start.elapsed());
        assert_eq!(
            err.kind(),
            ErrorKind::ConnectionRefused,
            "{bind} -> {closed}"
        );
        assert_eq!(socket.stats().endpoint.icmp_errors, 1, "{bind} -> {closed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_errors_leave_the_socket_idle_and_working() {
    init_tracing();
    let socket = UtpSocket::bind("127.0.0.1:0").await.unwrap();
    let closed = closed_port("127.0.0.1").unwrap();
    for _ in 0..50 {
        let err = socket.connect(closed).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    }
    assert_eq!(socket.stats().endpoint.icmp_errors, 50);
    // The error queue is drained: the socket does not stay readable (or in error).
    let before = socket.stats().driver_wakeups;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let woke = socket.stats().driver_wakeups - before;
    eprintln!("driver wake-ups while idle after 50 ICMP errors: {woke}");
    assert!(woke <= 2, "the driver woke {woke} times while idle");
    // Datagrams still flow: a connection to a live peer works.
    let peer = UtpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = peer.local_addr().unwrap();
    let (c, s) = tokio::join!(socket.connect(to), peer.accept());
    let (mut c, (mut s, _)) = (c.unwrap(), s.unwrap());
    c.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
}

/// The peer of `peer_vanishing_resets_the_connection`, in a child process: accept one
/// connection, print the port first, read five bytes, then exit without closing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let socket = UtpSocket::bind("127.0.0.1:0").await.unwrap();
    println!("port {}", socket.local_addr().unwrap().port());
    let (mut stream, _) = socket.accept().await.unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    std::process::exit(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_vanishing_resets_the_connection() {
    init_tracing();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "peer_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = lines
        .find_map(|l| Some(l.unwrap().rsplit_once("port ")?.1.parse().unwrap()))
        .expect("the child's port");
    let socket = UtpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    stream.write_all(b"hello").await.unwrap();
    assert!(child.wait().unwrap().success());

    // The next data packet draws a port unreachable.
    let start = Instant::now();
    stream.write_all(b"anyone there?").await.unwrap();
    let mut buf = [0u8; 16];
    let err = stream.read(&mut buf).await.unwrap_err();
    eprintln!("reset after {:?}: {err}", start.elapsed());
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert!(socket.stats().endpoint.icmp_errors >= 1);
    let err = stream.write_all(b"more").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}

/// Set in the child process of `peer_vanishing_resets_the_connection`.
const CHILD: &str = "UTP_ICMP_TEST_PEER";
