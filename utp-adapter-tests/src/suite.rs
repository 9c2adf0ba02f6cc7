//! The behavioural tests, generic over the [`Adapter`]. [`suite!`](crate::suite!) expands to
//! one `#[test]` per function here; each runs on the adapter's executor under
//! [`run`]'s watchdog.
//!
//! Covered: echo (also on IPv6 and between IPv4 and dual-stack sockets), 32 concurrent
//! streams of 1 MiB, half-close both ways, close-on-drop delivering a full send buffer,
//! split halves, a tiny kernel send buffer, connect errors (silent peer, reset answer,
//! invalid addresses, closed socket), resets, linger, port sharing, and a transfer through a
//! lossy, reordering relay; `stress_*` variants are `#[ignore]`d.

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use utp_io::Error;
use utp_proto::packet::{Header, OutgoingExtensions, Packet, PacketType};
use utp_proto::{ConnectionConfig, ConnectionError};

use crate::{
    Adapter, Reader, Relay, Writer, assert_same, config, eventually, pattern, read_to_end, run,
    spawn, write_all,
};

/// Longest any suite test may take before the watchdog aborts.
const LIMIT: Duration = Duration::from_secs(90);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `err` is reported as the error table on [`utp_io::Error`] says for `want`: that kind,
/// and `want` inside.
#[track_caller]
fn assert_error(err: &std::io::Error, want: Error) {
    assert_eq!(err.kind(), want.kind(), "{err}");
    assert_eq!(Error::of(err), Some(&want), "{err}: {err:?}");
}

async fn bind<A: Adapter>(seed: u64) -> A::Socket {
    A::bind(loopback(), config(seed)).await.expect("bind")
}

/// A connected pair of streams on two sockets.
async fn connected<A: Adapter>(a: &A::Socket, b: &A::Socket) -> (A::Stream, A::Stream) {
    connected_via::<A>(a, b, A::local_addr(b)).await
}

/// A connected pair of streams, `a` connecting to `b` at `to` (a relay, say).
async fn connected_via<A: Adapter>(
    a: &A::Socket,
    b: &A::Socket,
    to: SocketAddr,
) -> (A::Stream, A::Stream) {
    let accept = spawn::<A, _>({
        let b = b.clone();
        async move { A::accept(&b).await.expect("accept").0 }
    });
    let client = A::connect(a, to).await.expect("connect");
    (client, accept.await)
}

/// A server task: accept `count` connections on `b` and run `handle` on each in a task of
/// its own; resolves to their results in accept order.
fn serve<A, F, T>(
    b: &A::Socket,
    count: u64,
    handle: impl Fn(A::Stream) -> F + Send + 'static,
) -> impl Future<Output = Vec<T>> + Send
where
    A: Adapter,
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let b = b.clone();
    spawn::<A, _>(async move {
        let mut tasks = Vec::new();
        for _ in 0..count {
            let (s, _) = A::accept(&b).await.unwrap();
            tasks.push(spawn::<A, _>(handle(s)));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await);
        }
        results
    })
}

/// Write `data` and finish, in a task of its own; the writer comes back (for its stats).
fn upload<A: Adapter, W: Writer>(mut w: W, data: &[u8]) -> impl Future<Output = W> + Send {
    let data = data.to_vec();
    spawn::<A, _>(async move {
        write_all(&mut w, &data).await.unwrap();
        w.shutdown().await.unwrap();
        w
    })
}

/// Echo `len` bytes from `a` through a server on `b` that reads to the end, then answers.
async fn echo_between<A: Adapter>(a: &A::Socket, b: &A::Socket, to: SocketAddr, len: usize) {
    let a_addr = A::local_addr(a);
    let server = spawn::<A, _>({
        let b = b.clone();
        async move {
            let (mut s, peer) = A::accept(&b).await.unwrap();
            let data = read_to_end(&mut s).await.unwrap();
            write_all(&mut s, &data).await.unwrap();
            s.shutdown().await.unwrap();
            (peer, data.len())
        }
    });
    let mut c = A::connect(a, to).await.unwrap();
    let data = pattern(len as u64, len);
    write_all(&mut c, &data).await.unwrap();
    c.shutdown().await.unwrap();
    assert_same(&read_to_end(&mut c).await.unwrap(), &data, "echo");
    let (peer, n) = server.await;
    assert_eq!(n, len);
    if a_addr.ip().is_unspecified() {
        assert_eq!(peer.port(), a_addr.port());
    } else {
        assert_eq!(peer, a_addr);
    }
    let stats = A::stream_stats(&c).unwrap();
    assert!(stats.rtt.is_some());
    assert_eq!(stats.bytes_received, len as u64);
}

// ----- streams ------------------------------------------------------------------------------

/// Two echoes over one socket pair, checking data, addresses and stats.
pub fn echo<A: Adapter>() {
    run::<A>("echo", LIMIT, async {
        let (a, b) = (bind::<A>(1).await, bind::<A>(2).await);
        echo_between::<A>(&a, &b, A::local_addr(&b), 300_000).await;
        // A second connection on the same socket pair.
        echo_between::<A>(&a, &b, A::local_addr(&b), 10).await;
    });
}

/// 32 streams of 1 MiB at once over one socket pair, each checked byte for byte.
pub fn concurrent_32_streams_of_1_mib<A: Adapter>() {
    const STREAMS: u64 = 32;
    const LEN: usize = 1 << 20;
    run::<A>("concurrent_32_streams_of_1_mib", LIMIT, async {
        let (a, b) = (bind::<A>(3).await, bind::<A>(4).await);
        let server = serve::<A, _, _>(&b, STREAMS, |mut s| async move {
            let data = read_to_end(&mut s).await.unwrap();
            let id = u64::from_le_bytes(data[..8].try_into().unwrap());
            assert_same(&data[8..], &pattern(id, LEN), &format!("stream {id}"));
            write_all(&mut s, &id.to_le_bytes()).await.unwrap();
            id
        });
        let addr = A::local_addr(&b);
        let start = Instant::now();
        let mut clients = Vec::new();
        for id in 0..STREAMS {
            let a = a.clone();
            clients.push(spawn::<A, _>(async move {
                let mut s = A::connect(&a, addr).await.unwrap();
                write_all(&mut s, &id.to_le_bytes()).await.unwrap();
                write_all(&mut s, &pattern(id, LEN)).await.unwrap();
                s.shutdown().await.unwrap();
                assert_eq!(read_to_end(&mut s).await.unwrap(), id.to_le_bytes());
            }));
        }
        for c in clients {
            c.await;
        }
        let mut ids = server.await;
        ids.sort();
        assert_eq!(ids, (0..STREAMS).collect::<Vec<_>>());
        eprintln!(
            "{}: 32 x 1 MiB in {:?}; client {:?}",
            A::NAME,
            start.elapsed(),
            A::socket_stats(&a)
        );
    });
}

/// `first` sends a little and finishes; `second` reads it to EOF, then sends 150 kB and
/// finishes; `first` must still receive all of it.
async fn finish_first<S: Reader + Writer>(first: &mut S, second: &mut S, seed: u64) {
    write_all(first, b"hello").await.unwrap();
    first.shutdown().await.unwrap();
    assert_eq!(read_to_end(second).await.unwrap(), b"hello");
    let data = pattern(seed, 150_000);
    write_all(second, &data).await.unwrap();
    second.shutdown().await.unwrap();
    let got = read_to_end(first).await.unwrap();
    assert_same(&got, &data, "after our own FIN");
}

/// Each side may finish first and keep receiving; writing after shutdown is `BrokenPipe`.
pub fn half_close_both_ways<A: Adapter>() {
    run::<A>("half_close_both_ways", LIMIT, async {
        let (a, b) = (bind::<A>(5).await, bind::<A>(6).await);
        // The client finishes first; the server keeps writing after reading EOF.
        let (mut c, mut s) = connected::<A>(&a, &b).await;
        finish_first(&mut c, &mut s, 1).await;
        // The server finishes first; the client keeps writing after reading EOF.
        let (mut c, mut s) = connected::<A>(&a, &b).await;
        finish_first(&mut s, &mut c, 2).await;
        // A write after shutdown is a clear error, not a hang.
        let err = write_all(&mut s, b"late").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    });
}

/// Dropping a stream with 4 MiB still queued delivers all of it, then EOF, and both ends
/// free the connection.
pub fn drop_with_4_mib_unsent_delivers_everything_then_eof<A: Adapter>() {
    const LEN: usize = 4 << 20;
    run::<A>("drop_with_4_mib_unsent", LIMIT, async {
        let mut config = config(7);
        config.connection_mut().send_buffer(8 << 20);
        let a = A::bind(loopback(), config).await.unwrap();
        let b = bind::<A>(8).await;
        let (mut c, mut s) = connected::<A>(&a, &b).await;
        let data = pattern(9, LEN);
        // The whole 4 MiB fits the send buffer: the write returns before much is sent.
        write_all(&mut c, &data).await.unwrap();
        let sent = A::stream_stats(&c).unwrap().bytes_sent;
        assert!(sent < LEN as u64 / 2, "{sent} bytes already sent");
        drop(c);
        let got = read_to_end(&mut s).await.unwrap();
        assert_same(&got, &data, "data after drop");
        drop(s);
        // Both ends free the connection once the FINs are exchanged.
        eventually::<A>(LIMIT, "connections freed", || {
            A::socket_stats(&a).endpoint.connections + A::socket_stats(&b).endpoint.connections == 0
        })
        .await;
        assert_eq!(A::socket_stats(&a).linger_resets, 0);
    });
}

/// The halves of a split stream work from two tasks at once: 3 MiB through a streaming echo
/// would deadlock if reading waited for writing to finish.
pub fn split_halves_work_from_different_tasks<A: Adapter>() {
    const LEN: usize = 3 << 20;
    run::<A>("split_halves", LIMIT, async {
        let (a, b) = (bind::<A>(10).await, bind::<A>(11).await);
        let (c, mut s) = connected::<A>(&a, &b).await;
        let echo = spawn::<A, _>(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match s.read(&mut buf).await.unwrap() {
                    0 => break,
                    n => write_all(&mut s, &buf[..n]).await.unwrap(),
                }
            }
            s.shutdown().await.unwrap();
        });
        let (mut cr, cw) = A::split(c);
        let data = pattern(12, LEN);
        let send = upload::<A, _>(cw, &data);
        let got = read_to_end(&mut cr).await.unwrap();
        assert_same(&got, &data, "split echo");
        send.await;
        echo.await;
    });
}

/// Echo over `[::1]`; a socket bound there cannot reach IPv4 (an error at once).
pub fn ipv6_loopback<A: Adapter>() {
    run::<A>("ipv6_loopback", LIMIT, async {
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        let (a, b) = match (A::bind(v6, config(13)).await, A::bind(v6, config(14)).await) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                eprintln!("no IPv6 loopback here; skipping");
                return;
            }
        };
        assert!(A::local_addr(&a).is_ipv6());
        echo_between::<A>(&a, &b, A::local_addr(&b), 100_000).await;
        // A socket bound to [::1] cannot reach IPv4: a clear error, not a 15 s timeout.
        let err = A::connect(&a, "127.0.0.1:6881".parse().unwrap())
            .await
            .err()
            .expect("connect from [::1] to IPv4");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    });
}

/// IPv4 peers of a dual-stack socket are reported as plain IPv4 and reached either way.
pub fn ipv4_mapped_addresses<A: Adapter>() {
    run::<A>("ipv4_mapped_addresses", LIMIT, async {
        let Ok(dual) = A::bind("[::]:0".parse().unwrap(), config(15)).await else {
            eprintln!("no IPv6 here; skipping");
            return;
        };
        let v4 = bind::<A>(16).await;
        let port = A::local_addr(&dual).port();
        // An IPv4 peer reaches the dual-stack socket; accept reports it as plain IPv4.
        echo_between::<A>(&v4, &dual, SocketAddr::from(([127, 0, 0, 1], port)), 50_000).await;
        // The dual-stack socket connects to an IPv4 address (sent IPv4-mapped).
        echo_between::<A>(&dual, &v4, A::local_addr(&v4), 50_000).await;
        // An IPv4 socket takes an IPv4-mapped address.
        let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{port}").parse().unwrap();
        echo_between::<A>(&v4, &dual, mapped, 1_000).await;
    });
}

/// A socket the application bound itself works like one the adapter bound.
pub fn socket_from_std<A: Adapter>() {
    run::<A>("socket_from_std", LIMIT, async {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = A::from_std(udp, config(17)).unwrap();
        let b = bind::<A>(18).await;
        echo_between::<A>(&a, &b, A::local_addr(&b), 20_000).await;
        echo_between::<A>(&b, &a, A::local_addr(&a), 20_000).await;
    });
}

/// With a tiny `SO_SNDBUF` sends may block; the driver keeps and retries each refused
/// datagram instead of dropping it. (Loopback empties the buffer at once, so blocking is
/// rare here; utp-io's `fake_io` test refuses every third send deterministically.)
pub fn tiny_socket_send_buffer_loses_nothing<A: Adapter>() {
    run::<A>("tiny_socket_send_buffer", LIMIT, async {
        let mut small = config(19);
        small.send_buffer_size(Some(4096));
        let a = A::bind(loopback(), small).await.unwrap();
        let b = bind::<A>(20).await;
        let (c, mut s) = connected::<A>(&a, &b).await;
        let data = pattern(21, 4 << 20);
        let send = upload::<A, _>(c, &data);
        let got = read_to_end(&mut s).await.unwrap();
        assert_same(&got, &data, "through a full send buffer");
        let c = send.await;
        let stats = A::socket_stats(&a);
        eprintln!(
            "{}: would-block {}, send errors {}, retransmits {}",
            A::NAME,
            stats.send_would_block,
            stats.send_errors,
            A::stream_stats(&c).unwrap().retransmits
        );
        assert_eq!(stats.send_errors, 0);
    });
}

/// Sockets with don't-fragment set (uTP's path MTU discovery) work over IPv4 and dual-stack.
pub fn dont_fragment_sockets_work_for_ipv4_and_dual_stack<A: Adapter>() {
    if !cfg!(target_os = "linux") {
        eprintln!("don't-fragment sockets are Linux-only; skipping");
        return;
    }
    run::<A>("dont_fragment_sockets", LIMIT, async {
        let df = |seed| {
            let mut c = config(seed);
            c.dont_fragment(true);
            c
        };
        let a = A::bind(loopback(), df(21)).await.unwrap();
        let b = match A::bind("[::]:0".parse().unwrap(), df(22)).await {
            Ok(b) => b,
            Err(_) => A::bind(loopback(), df(22)).await.unwrap(),
        };
        let port = A::local_addr(&b).port();
        echo_between::<A>(&a, &b, SocketAddr::from(([127, 0, 0, 1], port)), 100_000).await;
    });
}

// ----- errors -------------------------------------------------------------------------------

/// A socket whose connections give up on an unanswered SYN after 0.1 + 0.2 s.
async fn impatient<A: Adapter>(seed: u64) -> A::Socket {
    let mut config = config(seed);
    config
        .connection_mut()
        .initial_rto(Duration::from_millis(100))
        .min_rto(Duration::from_millis(100))
        .max_syn_retransmits(1);
    A::bind(loopback(), config).await.unwrap()
}

/// A peer that never answers (or a port with nothing bound) is `TimedOut` per the config.
pub fn connect_to_silent_port_times_out_per_config<A: Adapter>() {
    run::<A>("connect_to_silent_port", LIMIT, async {
        let a = impatient::<A>(1).await;
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // A silent port times out per the config; a closed one draws ICMP port unreachable,
        // which Linux reports through the error queue: refused at once. Elsewhere, without
        // an error queue, it times out too.
        let closed_error = if cfg!(target_os = "linux") {
            ConnectionError::Refused
        } else {
            ConnectionError::TimedOut
        };
        for (target, want) in [
            (silent.local_addr().unwrap(), ConnectionError::TimedOut),
            (closed, closed_error),
        ] {
            let start = Instant::now();
            let err = A::connect(&a, target).await.err().expect("connect fails");
            assert_error(&err, Error::Connection(want));
            let took = start.elapsed();
            assert!(took < Duration::from_secs(3), "{took:?}");
        }
        // The failed attempts are freed.
        eventually::<A>(LIMIT, "attempts freed", || {
            A::socket_stats(&a).endpoint.connections == 0
        })
        .await;
    });
}

/// A reset in answer to our SYN is `ConnectionRefused`, at once.
pub fn connect_answered_by_reset_is_refused_quickly<A: Adapter>() {
    run::<A>("connect_answered_by_reset", LIMIT, async {
        let a = bind::<A>(2).await;
        // A fake peer that answers the SYN with ST_RESET.
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n, from) = peer.recv_from(&mut buf).unwrap();
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
            peer.send_to(&out, from).unwrap();
        });
        let start = Instant::now();
        let err = A::connect(&a, peer_addr).await.err().expect("refused");
        assert_error(&err, Error::Connection(ConnectionError::Refused));
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "{took:?}");
        responder.join().unwrap();
    });
}

/// Unspecified, multicast, port 0 and the wrong IP version fail with `InvalidInput`.
pub fn connect_to_invalid_addresses_is_invalid_input<A: Adapter>() {
    run::<A>("connect_to_invalid_addresses", LIMIT, async {
        let a = bind::<A>(3).await;
        for addr in [
            "0.0.0.0:6881",
            "[::]:6881",
            "224.0.0.1:6881",
            "[ff02::1]:6881",
            "127.0.0.1:0",
            "[2001:db8::1]:6881", // IPv6 from an IPv4 socket
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let err = A::connect(&a, addr).await.err().expect("invalid");
            assert_error(&err, Error::InvalidAddress(addr));
        }
        let to: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let err = A::send_to(&a, b"x", to).await.unwrap_err();
        assert_error(&err, Error::InvalidAddress(to));
    });
}

/// After a reset: `ConnectionAborted` on the resetting end, `ConnectionReset` on the peer.
pub fn peer_reset_then_read_and_write_fail<A: Adapter>() {
    run::<A>("peer_reset", LIMIT, async {
        let (a, b) = (bind::<A>(4).await, bind::<A>(5).await);
        let (mut c, mut s) = connected::<A>(&a, &b).await;
        write_all(&mut c, b"before the reset").await.unwrap();
        let mut buf = [0u8; 16];
        let mut got = 0;
        while got < buf.len() {
            got += s.read(&mut buf[got..]).await.unwrap();
        }
        A::reset(&s);

        // The reset end: ConnectionAborted, no stats.
        let aborted = Error::Connection(ConnectionError::Aborted);
        assert_error(&s.read(&mut buf).await.unwrap_err(), aborted.clone());
        assert_error(&s.write(b"x").await.unwrap_err(), aborted.clone());
        assert_error(&s.shutdown().await.unwrap_err(), aborted.clone());
        assert_error(&A::take_error(&s).unwrap().unwrap(), aborted);
        assert!(A::stream_stats(&s).is_none());

        // The peer: ConnectionReset on read, and on write once it has seen the reset.
        let reset = Error::Connection(ConnectionError::Reset);
        assert_error(&c.read(&mut buf).await.unwrap_err(), reset.clone());
        assert_error(&c.write(b"after").await.unwrap_err(), reset.clone());
        assert_error(&A::take_error(&c).unwrap().unwrap(), reset.clone());
        // Final, unlike TCP's SO_ERROR: it stays.
        assert_error(&A::take_error(&c).unwrap().unwrap(), reset);
    });
}

/// Shutdown is idempotent; a later write is `BrokenPipe`; the peer reads EOF.
pub fn write_after_shutdown_is_broken_pipe<A: Adapter>() {
    run::<A>("write_after_shutdown", LIMIT, async {
        let (a, b) = (bind::<A>(6).await, bind::<A>(7).await);
        let (mut c, mut s) = connected::<A>(&a, &b).await;
        c.shutdown().await.unwrap();
        c.shutdown().await.unwrap(); // idempotent
        let err = write_all(&mut c, b"late").await.unwrap_err();
        assert_error(&err, Error::WriteAfterShutdown);
        assert!(
            A::take_error(&c).unwrap().is_none(),
            "a half-close is no error"
        );
        assert_eq!(read_to_end(&mut s).await.unwrap(), b"");
    });
}

/// A closed socket fails accept (also one already waiting), connect and raw datagrams
/// with `NotConnected`, and resets peers that connect to it.
pub fn accept_and_connect_after_close_fail<A: Adapter>() {
    run::<A>("accept_and_connect_after_close", LIMIT, async {
        let (a, b) = (bind::<A>(8).await, bind::<A>(9).await);
        let waiting = spawn::<A, _>({
            let b = b.clone();
            async move { A::accept(&b).await.map(drop) }
        });
        A::sleep(Duration::from_millis(20)).await;
        A::close(&b);
        let err = waiting.await.unwrap_err();
        assert_error(&err, Error::SocketClosed);
        let err = A::accept(&b).await.err().expect("accept after close");
        assert_error(&err, Error::SocketClosed);
        let err = A::connect(&b, A::local_addr(&a))
            .await
            .err()
            .expect("closed");
        assert_error(&err, Error::SocketClosed);
        let mut buf = [0u8; 8];
        let err = A::recv_from(&b, &mut buf).await.unwrap_err();
        assert_error(&err, Error::SocketClosed);

        // A peer connecting to the closed socket is reset once verified.
        let result = async {
            let mut s = A::connect(&a, A::local_addr(&b)).await?;
            let mut buf = [0u8; 1];
            s.read(&mut buf).await
        };
        let err = result.await.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
            ),
            "{err}"
        );
    });
}

/// Dropping every socket handle leaves open streams working.
pub fn streams_outlive_a_dropped_socket<A: Adapter>() {
    run::<A>("streams_outlive_a_dropped_socket", LIMIT, async {
        let (a, b) = (bind::<A>(10).await, bind::<A>(11).await);
        let (mut c, mut s) = connected::<A>(&a, &b).await;
        drop(a);
        drop(b);
        write_all(&mut c, b"still here").await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut s).await.unwrap(), b"still here");
    });
}

/// A dropped stream whose peer never reads is reset after the linger time.
pub fn graceful_close_is_bounded_by_the_linger_time<A: Adapter>() {
    run::<A>("graceful_close_is_bounded_by_linger", LIMIT, async {
        let mut config = config(13);
        config
            .close_linger(Duration::from_millis(300))
            .connection_mut()
            .send_buffer(4 << 20);
        let a = A::bind(loopback(), config).await.unwrap();
        let b = bind::<A>(14).await;
        let (mut c, mut s) = connected::<A>(&a, &b).await;
        // The peer reads nothing, so 4 MiB can never all be delivered.
        write_all(&mut c, &pattern(15, 4 << 20)).await.unwrap();
        let start = Instant::now();
        drop(c);
        eventually::<A>(LIMIT, "the connection freed after the linger time", || {
            A::socket_stats(&a).endpoint.connections == 0
        })
        .await;
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(A::socket_stats(&a).linger_resets, 1);
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
    });
}

// ----- closing before the program exits ----------------------------------------------------

/// `close` returns only once the peer has every byte and our FIN: a reset right after it
/// (the worst a process exiting can do to the connection) loses nothing, and the peer reads
/// everything, then a clean EOF. 4 MiB is more than the receive window, so `close` has to
/// wait for the reader.
pub fn close_returns_once_the_peer_has_everything<A: Adapter>() {
    const LEN: usize = 4 << 20;
    run::<A>("close_returns_once_the_peer_has_everything", LIMIT, async {
        let mut config = config(30);
        config.connection_mut().send_buffer(8 << 20);
        let a = A::bind(loopback(), config).await.unwrap();
        let b = bind::<A>(31).await;
        let (mut c, mut s) = connected::<A>(&a, &b).await;
        let data = pattern(32, LEN);
        write_all(&mut c, &data).await.unwrap();
        let reader = spawn::<A, _>(async move { read_to_end(&mut s).await });
        A::close_stream(&c).await.unwrap();
        let sent = A::stream_stats(&c).unwrap().bytes_sent;
        assert!(sent >= LEN as u64, "close returned after {sent} bytes");
        A::close_stream(&c).await.unwrap(); // done is done
        A::reset(&c);
        let got = reader.await.expect("everything, then EOF: no reset");
        assert_same(&got, &data, "data before close returned");
    });
}

/// A peer that resets while `close` waits makes it fail with `ConnectionReset`.
pub fn close_fails_when_the_peer_resets<A: Adapter>() {
    run::<A>("close_fails_when_the_peer_resets", LIMIT, async {
        let mut config = config(33);
        config.connection_mut().send_buffer(2 << 20);
        let a = A::bind(loopback(), config).await.unwrap();
        let mut config = crate::config(34);
        config.connection_mut().receive_window(64 << 10);
        let b = A::bind(loopback(), config).await.unwrap();
        let (mut c, s) = connected::<A>(&a, &b).await;
        // 16 times the peer's window: it cannot all be acknowledged while nobody reads.
        write_all(&mut c, &pattern(35, 1 << 20)).await.unwrap();
        let closing = spawn::<A, _>(async move {
            let result = A::close_stream(&c).await;
            (c, result)
        });
        A::sleep(Duration::from_millis(100)).await;
        A::reset(&s);
        let (_c, result) = closing.await;
        assert_error(
            &result.unwrap_err(),
            Error::Connection(ConnectionError::Reset),
        );
    });
}

/// The socket's graceful shutdown closes held and dropped streams alike, delivers all their
/// data, reports nothing cut and ends the driver; held streams then fail with
/// `NotConnected`, but their `close` reports the successful close.
pub fn shutdown_gracefully_closes_every_connection<A: Adapter>() {
    const STREAMS: u64 = 3;
    const LEN: usize = 256 << 10;
    run::<A>(
        "shutdown_gracefully_closes_every_connection",
        LIMIT,
        async {
            let (a, b) = (bind::<A>(36).await, bind::<A>(37).await);
            let server = serve::<A, _, _>(&b, STREAMS, |mut s| async move {
                read_to_end(&mut s).await.unwrap()
            });
            let addr = A::local_addr(&b);
            let mut held = Vec::new();
            for id in 0..STREAMS {
                let mut c = A::connect(&a, addr).await.unwrap();
                write_all(&mut c, &pattern(id, LEN)).await.unwrap();
                held.push(c);
            }
            drop(held.pop()); // closing in the background already
            let report = A::shutdown_gracefully(&a, LIMIT / 2).await.unwrap();
            assert_eq!((report.connections, report.cut), (STREAMS as usize, 0));
            let mut got = server.await;
            got.sort();
            let mut want: Vec<_> = (0..STREAMS).map(|id| pattern(id, LEN)).collect();
            want.sort();
            assert!(got == want, "every stream's data arrives");
            let stats = A::socket_stats(&a);
            assert_eq!((stats.endpoint.connections, stats.shutdown_resets), (0, 0));
            // The driver has ended (on the threaded adapters: its thread exits).
            let port = A::local_addr(&a).port();
            crate::wait_for_driver_threads(&[port], false);
            let err = held[0].write(b"late").await.unwrap_err();
            assert_error(&err, Error::ShutDown);
            A::close_stream(&held[1]).await.unwrap();
            let err = A::connect(&a, addr)
                .await
                .err()
                .expect("connect after shutdown");
            assert_error(&err, Error::SocketClosed);
        },
    );
}

/// A peer that went silent holds the shutdown until its deadline, no longer: the
/// connection is then reset and reported cut.
pub fn shutdown_gracefully_cuts_a_silent_peer_at_the_deadline<A: Adapter>() {
    const DEADLINE: Duration = Duration::from_millis(500);
    run::<A>("shutdown_gracefully_cuts_a_silent_peer", LIMIT, async {
        let (a, b) = (bind::<A>(38).await, bind::<A>(39).await);
        let relay = Relay::start(A::local_addr(&b), 0.0, 0.0, 40).unwrap();
        let (mut c, _s) = connected_via::<A>(&a, &b, relay.addr).await;
        relay.blackhole(true);
        write_all(&mut c, &pattern(41, 64 << 10)).await.unwrap();
        let start = Instant::now();
        let report = A::shutdown_gracefully(&a, DEADLINE).await.unwrap();
        let took = start.elapsed();
        assert!(
            took >= DEADLINE && took < DEADLINE + Duration::from_secs(5),
            "took {took:?}"
        );
        assert_eq!((report.connections, report.cut), (1, 1));
        let stats = A::socket_stats(&a);
        assert_eq!((stats.endpoint.connections, stats.shutdown_resets), (0, 1));
        let err = A::close_stream(&c).await.unwrap_err();
        assert_error(&err, Error::Connection(ConnectionError::Aborted));
        let err = c.write(b"late").await.unwrap_err();
        assert_error(&err, Error::ShutDown);
    });
}

/// The error table's rows that need a socket set up for them: an invalid config
/// (`InvalidArgument`) and a full endpoint (`TooManyConnections`).
pub fn config_and_capacity_errors_are_typed<A: Adapter>() {
    run::<A>("config_and_capacity_errors_are_typed", LIMIT, async {
        let mut bad = config(60);
        bad.endpoint_mut().max_connections(0);
        let err = A::bind(loopback(), bad)
            .await
            .err()
            .expect("invalid config");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(
            matches!(Error::of(&err), Some(Error::InvalidArgument(_))),
            "{err:?}"
        );

        let mut one = config(61);
        one.endpoint_mut().max_connections(1);
        let a = A::bind(loopback(), one).await.unwrap();
        let b = bind::<A>(62).await;
        let (_c, _s) = connected::<A>(&a, &b).await;
        let err = A::connect(&a, A::local_addr(&b)).await.err().expect("full");
        assert_error(&err, Error::TooManyConnections);
    });
}

/// `connect` resolves a host name the adapter's way; `connect_with` applies its own
/// settings; `connections` lists every connection with its stats.
pub fn connect_by_name_with_config_and_list_connections<A: Adapter>() {
    run::<A>("connect_by_name_with_config", LIMIT, async {
        let (a, b) = (bind::<A>(63).await, bind::<A>(64).await);
        let port = A::local_addr(&b).port();
        let accept = spawn::<A, _>({
            let b = b.clone();
            async move { A::accept(&b).await.unwrap() }
        });
        // "localhost" may resolve to ::1 first, which an IPv4 socket cannot reach: the
        // next address is tried.
        let mut c = A::connect_host(&a, "localhost", port).await.unwrap();
        let (mut s, _) = accept.await;
        write_all(&mut c, b"by name").await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut s).await.unwrap(), b"by name");

        let accept = spawn::<A, _>({
            let b = b.clone();
            async move { A::accept(&b).await.unwrap() }
        });
        let mut own = ConnectionConfig::default();
        own.send_buffer(3 << 20).nagle(false);
        let mut d = A::connect_with(&a, A::local_addr(&b), own).await.unwrap();
        let (mut t, _) = accept.await;
        // 2 MiB fits the 3 MiB send buffer at once; the default (1 MiB) would block.
        let data = pattern(65, 2 << 20);
        let n = d.write(&data).await.unwrap();
        assert_eq!(n, data.len(), "the connection's own send buffer");
        d.shutdown().await.unwrap();
        assert_same(&read_to_end(&mut t).await.unwrap(), &data, "connect_with");

        let listed = A::connections(&a);
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed.windows(2).all(|w| w[0].id < w[1].id));
        assert!(listed.iter().all(|c| c.established && c.held));
        assert!(listed.iter().all(|c| c.remote == A::local_addr(&b)));
        let sent: u64 = listed.iter().map(|c| c.stats.bytes_sent).sum();
        assert_eq!(sent, (2 << 20) + 7);
        drop((c, d));
        eventually::<A>(LIMIT, "dropped streams closed", || {
            A::connections(&a).iter().all(|c| !c.held)
        })
        .await;
    });
}

/// `peek` waits for bytes and leaves them for the next read (also across several peeks and
/// a read smaller than what was peeked); at the FIN it returns 0.
pub fn peek_leaves_the_bytes_for_read<A: Adapter>() {
    run::<A>("peek_leaves_the_bytes_for_read", LIMIT, async {
        let (a, b) = (bind::<A>(68).await, bind::<A>(69).await);
        let (mut c, mut s) = connected::<A>(&a, &b).await;
        let writer = spawn::<A, _>(async move {
            A::sleep(Duration::from_millis(50)).await;
            write_all(&mut c, b"hello world").await.unwrap();
            c.shutdown().await.unwrap();
            c
        });
        let mut buf = [0u8; 5];
        let n = A::peek(&s, &mut buf).await.unwrap(); // waits for the write
        assert!(n > 0);
        let mut again = [0u8; 5];
        assert_eq!(A::peek(&s, &mut again).await.unwrap(), n);
        assert_eq!(buf[..n], again[..n]);
        let mut two = [0u8; 2];
        let got = s.read(&mut two).await.unwrap();
        assert_eq!(two[..got], buf[..got]);
        let mut rest = two[..got].to_vec();
        rest.extend(read_to_end(&mut s).await.unwrap());
        assert_eq!(rest, b"hello world");
        assert_eq!(A::peek(&s, &mut buf).await.unwrap(), 0, "EOF");
        drop(writer.await);
    });
}

/// Where the adapter has read timeouts (blocking): one that passes is `Timeout` inside, with
/// the kind std's sockets use (`WouldBlock` on Unix, `TimedOut` on Windows), and the stream
/// still works.
pub fn a_timeout_the_application_set_is_typed<A: Adapter>() {
    run::<A>("a_timeout_the_application_set_is_typed", LIMIT, async {
        let (a, b) = (bind::<A>(70).await, bind::<A>(71).await);
        let (mut c, mut s) = connected::<A>(&a, &b).await;
        if !A::set_read_timeout(&s, Some(Duration::from_millis(50))) {
            return;
        }
        let mut buf = [0u8; 4];
        let err = s.read(&mut buf).await.unwrap_err();
        let kind = if cfg!(windows) {
            ErrorKind::TimedOut
        } else {
            ErrorKind::WouldBlock
        };
        assert_eq!(err.kind(), kind, "{err}");
        assert_eq!(Error::of(&err), Some(&Error::Timeout));
        write_all(&mut c, b"late").await.unwrap();
        let mut got = 0;
        while got < 4 {
            got += s.read(&mut buf[got..]).await.unwrap();
        }
        assert_eq!(&buf, b"late");
    });
}

/// A close reason set on one end reaches the other with the FIN, both ways, and stays
/// readable after EOF.
pub fn close_reason_reaches_the_peer<A: Adapter>() {
    run::<A>("close_reason_reaches_the_peer", LIMIT, async {
        let (a, b) = (bind::<A>(66).await, bind::<A>(67).await);
        let (mut c, mut s) = connected::<A>(&a, &b).await;
        assert_eq!(A::peer_close_reason(&s), None);
        A::set_close_reason(&c, 2); // libtorrent: torrent removed
        write_all(&mut c, b"bye").await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut s).await.unwrap(), b"bye");
        assert_eq!(A::peer_close_reason(&s), Some(2));
        assert_eq!(A::stream_stats(&c).unwrap().close_reason, Some(2));

        A::set_close_reason(&s, 300);
        A::close_stream(&s).await.unwrap();
        assert_eq!(read_to_end(&mut c).await.unwrap(), b"");
        assert_eq!(A::peer_close_reason(&c), Some(300));
    });
}

// ----- port sharing -------------------------------------------------------------------------

/// DHT and tracker datagrams reach the application while a transfer runs, and its answers
/// leave from the uTP port.
pub fn non_utp_datagrams_reach_the_queue_while_streams_run<A: Adapter>() {
    run::<A>("non_utp_datagrams", LIMIT, async {
        let (a, b) = (bind::<A>(1).await, bind::<A>(2).await);
        let b_addr = A::local_addr(&b);
        let dht = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        dht.set_read_timeout(Some(LIMIT)).unwrap();
        let dht_addr = dht.local_addr().unwrap();

        // A uTP transfer runs throughout.
        let transfer = spawn::<A, _>({
            let (a, b) = (a.clone(), b.clone());
            async move {
                let (c, mut s) = connected::<A>(&a, &b).await;
                let data = pattern(3, 2 << 20);
                let send = upload::<A, _>(c, &data);
                let got = read_to_end(&mut s).await.unwrap();
                assert_same(&got, &data, "uTP beside DHT");
                send.await;
            }
        });

        // A DHT ping (bencoded; its first byte 'd' is no uTP version) and a tracker reply.
        let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        let pong = b"d1:rd2:id20:zyxwvutsrq9876543210e1:t2:aa1:y1:re";
        let tracker = [0u8, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        for _ in 0..10 {
            dht.send_to(ping, b_addr).unwrap();
            dht.send_to(&tracker, b_addr).unwrap();
            let mut buf = [0u8; 1500];
            let (n, from) = A::recv_from(&b, &mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (&ping[..], dht_addr));
            let (n, from) = A::recv_from(&b, &mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (&tracker[..], dht_addr));

            // And the application answers from the uTP port.
            A::send_to(&b, pong, dht_addr).await.unwrap();
            let (n, from) = dht.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&pong[..], b_addr));
        }
        transfer.await;
        let stats = A::socket_stats(&b);
        assert_eq!(stats.raw_received, 20);
        assert_eq!(stats.raw_sent, 10);
        assert_eq!(stats.raw_dropped, 0);
    });
}

/// Past `datagram_queue`, non-uTP datagrams are dropped and counted.
pub fn a_full_datagram_queue_drops_and_counts<A: Adapter>() {
    run::<A>("a_full_datagram_queue", LIMIT, async {
        let mut config = config(4);
        config.datagram_queue(4);
        let b = A::bind(loopback(), config).await.unwrap();
        let dht = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..10u8 {
            dht.send_to(&[b'd', i], A::local_addr(&b)).unwrap();
        }
        eventually::<A>(LIMIT, "10 datagrams counted", || {
            let stats = A::socket_stats(&b);
            stats.raw_received + stats.raw_dropped >= 10
        })
        .await;
        let stats = A::socket_stats(&b);
        assert_eq!((stats.raw_received, stats.raw_dropped), (4, 6));
        let mut buf = [0u8; 2];
        for i in 0..4u8 {
            A::recv_from(&b, &mut buf).await.unwrap();
            assert_eq!(buf, [b'd', i]);
        }
    });
}

// ----- lossy network ------------------------------------------------------------------------

/// Send `len` bytes through a relay with `loss` and `reorder` and check them byte for byte.
async fn transfer_through_relay<A: Adapter>(len: usize, loss: f64, reorder: f64, seed: u64) {
    let quick = |seed| {
        let mut c = config(seed);
        // Loopback RTTs are tiny: let lost retransmissions recover in 100 ms, not 500.
        c.connection_mut()
            .min_rto(Duration::from_millis(100))
            .max_retransmits(12);
        c
    };
    let a = A::bind(loopback(), quick(seed)).await.unwrap();
    let b = A::bind(loopback(), quick(seed + 1)).await.unwrap();
    let relay = Relay::start(A::local_addr(&b), loss, reorder, seed).unwrap();
    let start = Instant::now();
    let data = pattern(seed, len);
    let (c, mut s) = connected_via::<A>(&a, &b, relay.addr).await;
    let sender = upload::<A, _>(c, &data);
    let got = read_to_end(&mut s).await.unwrap();
    let sent = A::stream_stats(&sender.await).unwrap();
    assert_same(&got, &data, "through the relay");
    let stats = A::stream_stats(&s).unwrap();
    let relayed = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    eprintln!(
        "{}: {} MiB through {:.0}% loss / {:.0}% reorder in {:?}: relay forwarded {}, dropped \
         {}, delayed {}; receiver saw {} out of order, {} duplicates; sender: {} retransmits \
         ({} fast), {} timeouts, {} congestion events",
        A::NAME,
        len >> 20,
        loss * 100.0,
        reorder * 100.0,
        start.elapsed(),
        relayed(&relay.stats.forwarded),
        relayed(&relay.stats.dropped),
        relayed(&relay.stats.delayed),
        stats.out_of_order_received,
        stats.duplicates_received,
        sent.retransmits,
        sent.fast_retransmits,
        sent.timeouts,
        sent.congestion_events,
    );
    assert!(relayed(&relay.stats.dropped) > 0);
    assert!(stats.out_of_order_received > 0);
}

/// 8 MiB through 5 % loss and 5 % reordering arrive intact.
pub fn eight_mib_through_5_percent_loss_and_reordering<A: Adapter>() {
    run::<A>("lossy_relay", LIMIT, async {
        transfer_through_relay::<A>(8 << 20, 0.05, 0.05, 42).await;
    });
}

/// Several seeds through 10 % loss and 10 % reordering.
pub fn stress_lossy_relay_many_seeds<A: Adapter>() {
    run::<A>("stress_lossy_relay_many_seeds", 4 * LIMIT, async {
        for seed in 100..104 {
            transfer_through_relay::<A>(4 << 20, 0.10, 0.10, seed).await;
        }
    });
}

/// 1000 connections at once between two sockets, each echoing 32 KiB.
pub fn stress_1000_concurrent_connections<A: Adapter>() {
    const STREAMS: u64 = 1000;
    run::<A>("stress_1000_concurrent_connections", 4 * LIMIT, async {
        let a = bind::<A>(23).await;
        // 1000 SYNs at once overflow the default backlog of 512 unverified connections, and
        // the core evicts a random one per extra SYN, after its SYN-ACK went out: its client
        // then sees ST_RESET on its first packet. Give this legitimate burst room.
        let mut config = config(24);
        config.endpoint_mut().syn_backlog(STREAMS as usize);
        let b = A::bind(loopback(), config).await.unwrap();
        let addr = A::local_addr(&b);
        let server = serve::<A, _, _>(&b, STREAMS, |mut s| async move {
            let data = read_to_end(&mut s).await.unwrap();
            write_all(&mut s, &data).await.unwrap();
        });
        let mut clients = Vec::new();
        for id in 0..STREAMS {
            let a = a.clone();
            clients.push(spawn::<A, _>(async move {
                let mut s = A::connect(&a, addr).await.unwrap();
                let data = pattern(id, 32 * 1024);
                write_all(&mut s, &data).await.unwrap();
                s.shutdown().await.unwrap();
                assert_same(&read_to_end(&mut s).await.unwrap(), &data, "echo");
            }));
        }
        for c in clients {
            c.await;
        }
        server.await;
        assert_eq!(A::socket_stats(&b).endpoint.syn_evicted, 0);
    });
}

// ----- idle ---------------------------------------------------------------------------------

/// An idle socket with 100 open connections does no work: the driver sleeps until the next
/// protocol deadline (keep-alives, 29 s by default). Measures the whole process's CPU time,
/// so each adapter runs it in a test binary of its own (not part of [`suite!`](crate::suite!)).
pub fn idle_socket_with_100_connections_uses_no_cpu<A: Adapter>() {
    run::<A>("idle_socket", LIMIT, async {
        let (a, b) = (bind::<A>(1).await, bind::<A>(2).await);
        let mut streams = Vec::new();
        for _ in 0..100 {
            let (mut c, mut s) = connected::<A>(&a, &b).await;
            // Some traffic on each, so every connection has RTT samples and delayed ACKs.
            write_all(&mut c, b"hello").await.unwrap();
            let mut buf = [0u8; 5];
            let mut got = 0;
            while got < 5 {
                got += s.read(&mut buf[got..]).await.unwrap();
            }
            streams.push((c, s));
        }
        // Let handshake confirmations and delayed ACKs finish.
        A::sleep(Duration::from_millis(1500)).await;

        let wakeups = |s: &A::Socket| A::socket_stats(s).driver_wakeups;
        let (wa, wb, cpu0, t0) = (wakeups(&a), wakeups(&b), cpu_time(), Instant::now());
        A::sleep(Duration::from_secs(3)).await;
        let (da, db) = (wakeups(&a) - wa, wakeups(&b) - wb);
        let elapsed = t0.elapsed();
        let cpu = cpu_time().zip(cpu0).map(|(t1, t0)| t1 - t0);
        eprintln!(
            "{}: idle for {elapsed:?} with 100 connections: driver wake-ups {da} + {db}, \
             process CPU {cpu:?}",
            A::NAME
        );
        assert!(da + db <= 4, "drivers woke {da} + {db} times while idle");
        if let Some(cpu) = cpu {
            assert!(
                cpu <= Duration::from_millis(30),
                "{cpu:?} of CPU while idle"
            );
        }
        assert_eq!(A::socket_stats(&a).endpoint.connections, 100);
        drop(streams);
    });
}

/// User + system CPU time of this process, from `/proc/self/stat` (Linux; clock ticks of
/// 10 ms).
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}
