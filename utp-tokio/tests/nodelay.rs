//! `set_nodelay` / `nodelay` (Nagle per connection) on a real loopback pair: the setting
//! reads back, data still flows both ways, and a reset stream reports an error. How many
//! packets leave with and without Nagle is asserted in the deterministic simulator
//! (`utp-sim`'s `nagle_can_be_turned_off_per_connection`), not here.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_tokio::UtpSocket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodelay_reads_back_and_data_flows() {
    let a = UtpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UtpSocket::bind("127.0.0.1:0").await.unwrap();
    let b_addr = b.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (mut s, _) = b.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < 15 {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"ok").await.unwrap();
        s.close().await.unwrap();
        got
    });
    let mut s = a.connect(b_addr).await.unwrap();
    assert!(!s.nodelay().unwrap(), "Nagle is on by default");
    s.set_nodelay(true).unwrap();
    assert!(s.nodelay().unwrap());
    for _ in 0..3 {
        s.write_all(b"small").await.unwrap();
    }
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"ok");
    assert_eq!(accept.await.unwrap(), b"smallsmallsmall");
    s.set_nodelay(false).unwrap();
    assert!(!s.nodelay().unwrap());
    s.reset();
    assert!(s.set_nodelay(true).is_err());
}
