//! Failures and misuse get a clear `io::Error` quickly: no panic, no hang.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_tokio::UtpSocket;
use utp_tokio::proto::packet::{Header, OutgoingExtensions, Packet, PacketType};

const LIMIT: Duration = Duration::from_secs(20);

/// A socket whose connections give up on an unanswered SYN after 0.1 + 0.2 s.
async fn impatient(seed: u64) -> UtpSocket {
    let mut config = config(seed);
    config
        .connection_mut()
        .initial_rto(Duration::from_millis(100))
        .min_rto(Duration::from_millis(100))
        .max_syn_retransmits(1);
    UtpSocket::bind_with_config("127.0.0.1:0", config)
        .await
        .unwrap()
}

#[tokio::test]
async fn connect_to_silent_port_times_out_per_config() {
    init_tracing();
    let a = impatient(1).await;
    // A port with a UDP socket that never answers, and one with nothing bound at all.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    for target in [silent.local_addr().unwrap(), closed] {
        let start = Instant::now();
        let err = tokio::time::timeout(LIMIT, a.connect(target))
            .await
            .expect("connect must not hang")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }
    // The failed attempts are freed.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(a.stats().endpoint.connections, 0);
}

#[tokio::test]
async fn connect_answered_by_reset_is_refused_quickly() {
    init_tracing();
    let a = bind(2).await;
    // A fake peer that answers every SYN with ST_RESET.
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let responder = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        let syn = *Packet::parse(&buf[..n]).unwrap().header();
        assert_eq!(syn.packet_type, PacketType::Syn);
        let reset = Header {
            packet_type: PacketType::Reset,
            ack_nr: syn.seq_nr,
            timestamp_difference: 0,
            wnd_size: 0,
            ..syn
        };
        let mut out = Vec::new();
        reset.encode(&OutgoingExtensions::default(), &mut out);
        peer.send_to(&out, from).await.unwrap();
    });
    let start = Instant::now();
    let err = a.connect(peer_addr).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    responder.await.unwrap();
}

#[tokio::test]
async fn connect_to_invalid_addresses_is_invalid_input() {
    init_tracing();
    let a = bind(3).await;
    for addr in [
        "0.0.0.0:6881",
        "[::]:6881",
        "224.0.0.1:6881",
        "[ff02::1]:6881",
        "127.0.0.1:0",
        "[2001:db8::1]:6881", // IPv6 from an IPv4 socket
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        let err = a.connect(addr).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{addr}: {err}");
    }
    let err = a
        .send_to(b"x", "[2001:db8::1]:1".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn peer_reset_then_read_and_write_fail() {
    init_tracing();
    let (a, b) = (bind(4).await, bind(5).await);
    let (mut c, mut s) = connected(&a, &b).await;
    write_all(&mut c, b"before the reset").await;
    let mut buf = [0u8; 16];
    s.read_exact(&mut buf).await.unwrap();
    s.reset();

    // The reset end: ConnectionAborted, no stats.
    assert_eq!(
        s.read(&mut buf).await.unwrap_err().kind(),
        ErrorKind::ConnectionAborted
    );
    assert_eq!(
        s.write(b"x").await.unwrap_err().kind(),
        ErrorKind::ConnectionAborted
    );
    assert_eq!(
        s.shutdown().await.unwrap_err().kind(),
        ErrorKind::ConnectionAborted
    );
    assert!(s.stats().is_none());

    // The peer: ConnectionReset on read, and on write once it has seen the reset.
    let err = tokio::time::timeout(LIMIT, c.read(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    let err = c.write(b"after").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn write_after_shutdown_is_broken_pipe() {
    init_tracing();
    let (a, b) = (bind(6).await, bind(7).await);
    let (mut c, mut s) = connected(&a, &b).await;
    c.shutdown().await.unwrap();
    c.shutdown().await.unwrap(); // idempotent
    let err = c.write_all(b"late").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert_eq!(read_all(&mut s, LIMIT).await, b"");
}

#[tokio::test]
async fn accept_and_connect_after_close_fail() {
    init_tracing();
    let (a, b) = (bind(8).await, bind(9).await);
    // An accept waiting when the socket closes is woken with the error.
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.accept().await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.close();
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotConnected);
    assert_eq!(
        b.accept().await.unwrap_err().kind(),
        ErrorKind::NotConnected
    );
    let err = b.connect(a.local_addr().unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotConnected);
    let mut buf = [0u8; 8];
    assert_eq!(
        b.recv_from(&mut buf).await.unwrap_err().kind(),
        ErrorKind::NotConnected
    );

    // A peer connecting to the closed socket is reset once verified.
    let err = tokio::time::timeout(LIMIT, async {
        let mut s = a.connect(b.local_addr().unwrap()).await?;
        let mut buf = [0u8; 1];
        s.read(&mut buf).await
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
        ),
        "{err}"
    );
}

#[tokio::test]
async fn streams_outlive_a_dropped_socket() {
    init_tracing();
    let (a, b) = (bind(10).await, bind(11).await);
    let (mut c, mut s) = connected(&a, &b).await;
    drop(a);
    drop(b);
    write_all(&mut c, b"still here").await;
    c.shutdown().await.unwrap();
    assert_eq!(read_all(&mut s, LIMIT).await, b"still here");
}

#[test]
fn socket_outside_a_runtime_is_an_error_not_a_panic() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = UtpSocket::from_std(udp, config(12)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other);
}

#[tokio::test]
async fn graceful_close_is_bounded_by_the_linger_time() {
    init_tracing();
    let mut config = config(13);
    config
        .close_linger(Duration::from_millis(300))
        .connection_mut()
        .send_buffer(4 << 20);
    let a = UtpSocket::bind_with_config("127.0.0.1:0", config)
        .await
        .unwrap();
    let b = bind(14).await;
    let (mut c, mut s) = connected(&a, &b).await;
    // The peer reads nothing, so 4 MiB can never all be delivered.
    write_all(&mut c, &pattern(15, 4 << 20)).await;
    let start = Instant::now();
    drop(c);
    tokio::time::timeout(LIMIT, async {
        while a.stats().endpoint.connections > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the connection is freed after the linger time");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(a.stats().linger_resets, 1);
    // The peer gets what arrived, then the reset.
    let mut buf = vec![0u8; 64 * 1024];
    let err = loop {
        match s.read(&mut buf).await {
            Ok(0) => panic!("EOF instead of a reset"),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}
