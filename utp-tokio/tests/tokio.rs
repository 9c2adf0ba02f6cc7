//! What only the tokio adapter has; everything the adapters share is in the shared suite
//! (`suite.rs`): `from_tokio`, the error outside a runtime, and owned halves whose write
//! half sends a FIN when dropped.

use std::io::ErrorKind;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_adapter_tests::{assert_same, config, init_tracing, pattern};
use utp_tokio::{SocketConfig, UtpSocket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_from_tokio() {
    init_tracing();
    let tokio_socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UtpSocket::from_tokio(tokio_socket, SocketConfig::default()).unwrap();
    let a = UtpSocket::bind_with_config("127.0.0.1:0", config(1))
        .await
        .unwrap();
    let (c, s) = tokio::join!(a.connect(b.local_addr().unwrap()), b.accept());
    let (mut c, (mut s, _)) = (c.unwrap(), s.unwrap());
    c.write_all(b"from tokio").await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"from tokio");
}

#[test]
fn socket_outside_a_runtime_is_an_error_not_a_panic() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = UtpSocket::from_std(udp, config(2)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_owned_write_half_sends_a_fin() {
    init_tracing();
    let a = UtpSocket::bind_with_config("127.0.0.1:0", config(3))
        .await
        .unwrap();
    let b = UtpSocket::bind_with_config("127.0.0.1:0", config(4))
        .await
        .unwrap();
    let (c, s) = tokio::join!(a.connect(b.local_addr().unwrap()), b.accept());
    let (c, (mut s, _)) = (c.unwrap(), s.unwrap());
    let (mut cr, mut cw) = c.into_split();
    let data = pattern(5, 200_000);
    cw.write_all(&data).await.unwrap();
    // No shutdown: dropping the write half finishes the stream, the read half stays usable.
    drop(cw);
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_same(&got, &data, "before the write half's FIN");
    s.write_all(b"still readable").await.unwrap();
    s.shutdown().await.unwrap();
    got.clear();
    cr.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"still readable");
}

/// IPv6 sockets are batched as IPv4 ones are (GSO sends), with don't-fragment left as the
/// configuration set it.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback_sends_with_gso() {
    init_tracing();
    let mut df = config(6);
    df.dont_fragment(true);
    let Ok(a) = UtpSocket::bind_with_config("[::1]:0", df).await else {
        eprintln!("no IPv6 loopback; skipping");
        return;
    };
    let b = UtpSocket::bind_with_config("[::1]:0", config(7))
        .await
        .unwrap();
    let (c, s) = tokio::join!(a.connect(b.local_addr().unwrap()), b.accept());
    let (mut c, (mut s, _)) = (c.unwrap(), s.unwrap());
    let data = pattern(8, 2_000_000);
    let (sent, got) = tokio::join!(
        async {
            c.write_all(&data).await.unwrap();
            c.shutdown().await.unwrap();
        },
        async {
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        }
    );
    let () = sent;
    assert_same(&got, &data, "over IPv6");
    let stats = a.stats();
    assert!(stats.gso_sends > 0, "no GSO send: {stats:?}");
}
