//! Port sharing: datagrams that are not uTP reach the application's queue, the application
//! sends raw datagrams from the same port, and uTP traffic is unaffected.

mod common;

use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utp_datagrams_reach_the_queue_while_streams_run() {
    init_tracing();
    let (a, b) = (bind(1).await, bind(2).await);
    let b_addr = b.local_addr().unwrap();
    let dht = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dht_addr = dht.local_addr().unwrap();

    // A uTP transfer runs throughout.
    let transfer = tokio::spawn({
        let (a, b) = (a.clone(), b.clone());
        async move {
            let (mut c, mut s) = connected(&a, &b).await;
            let data = pattern(3, 2 << 20);
            let send = tokio::spawn({
                let data = data.clone();
                async move {
                    write_all(&mut c, &data).await;
                }
            });
            assert_same(&read_all(&mut s, LIMIT).await, &data, "uTP beside DHT");
            send.await.unwrap();
        }
    });

    // A DHT ping (bencoded; its first byte 'd' is no uTP version) and a tracker reply.
    let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    let tracker = [0u8, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
    for _ in 0..10 {
        dht.send_to(ping, b_addr).await.unwrap();
        dht.send_to(&tracker, b_addr).await.unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = tokio::time::timeout(LIMIT, b.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&ping[..], dht_addr));
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&tracker[..], dht_addr));

        // And the application answers from the uTP port.
        b.send_to(b"d1:rd2:id20:zyxwvutsrq9876543210e1:t2:aa1:y1:re", dht_addr)
            .await
            .unwrap();
        let (n, from) = dht.recv_from(&mut buf).await.unwrap();
        assert_eq!(from, b_addr);
        assert_eq!(
            &buf[..n],
            b"d1:rd2:id20:zyxwvutsrq9876543210e1:t2:aa1:y1:re"
        );
    }
    transfer.await.unwrap();
    let stats = b.stats();
    assert_eq!(stats.raw_received, 20);
    assert_eq!(stats.raw_sent, 10);
    assert_eq!(stats.raw_dropped, 0);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    init_tracing();
    let mut config = config(4);
    config.datagram_queue(4);
    let b = utp_tokio::UtpSocket::bind_with_config("127.0.0.1:0", config)
        .await
        .unwrap();
    let dht = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..10u8 {
        dht.send_to(&[b'd', i], b.local_addr().unwrap())
            .await
            .unwrap();
    }
    tokio::time::timeout(LIMIT, async {
        while b.stats().raw_received + b.stats().raw_dropped < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!((b.stats().raw_received, b.stats().raw_dropped), (4, 6));
    let mut buf = [0u8; 2];
    for i in 0..4u8 {
        b.recv_from(&mut buf).await.unwrap();
        assert_eq!(buf, [b'd', i]);
    }
}
