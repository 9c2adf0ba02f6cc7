//! What only the futures-io adapter has, each run under `async_std::task::block_on` and
//! `smol::block_on`: clones and `&UtpStream` in two tasks, `close` as a half-close, sockets
//! that move between executors, and drivers that end with their socket on one shared thread.

use std::future::Future;

use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use utp_adapter_tests::{assert_same, config, init_tracing, pattern};
use utp_async_std::{UtpSocket, UtpStream};

/// Run the test built by `test` once under each executor.
fn on_both_executors<F: Future<Output = ()>>(test: impl Fn() -> F) {
    init_tracing();
    async_std::task::block_on(test());
    smol::block_on(test());
}

async fn bind(seed: u64) -> UtpSocket {
    UtpSocket::bind_with_config("127.0.0.1:0", config(seed))
        .await
        .unwrap()
}

async fn connected(a: &UtpSocket, b: &UtpSocket) -> (UtpStream, UtpStream) {
    let client = a.connect(b.local_addr().unwrap()).await.unwrap();
    let (server, _) = b.accept().await.unwrap();
    (client, server)
}

#[test]
fn clones_and_references_read_and_write_from_two_threads() {
    on_both_executors(|| async {
        let (a, b) = (bind(1).await, bind(2).await);
        let (c, s) = connected(&a, &b).await;
        // The server echoes: a clone reads on one thread while `&UtpStream` writes on another.
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn({
            let mut s = s.clone();
            move || {
                smol::block_on(async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match s.read(&mut buf).await.unwrap() {
                            0 => break,
                            n => tx.send(buf[..n].to_vec()).unwrap(),
                        }
                    }
                })
            }
        });
        let writer = std::thread::spawn(move || {
            async_std::task::block_on(async {
                for chunk in rx {
                    (&s).write_all(&chunk).await.unwrap();
                }
                (&s).close().await.unwrap();
            })
        });
        let data = pattern(3, 1 << 20);
        let mut cw = c.clone();
        let (sent, got) = futures_util::future::join(
            async {
                cw.write_all(&data).await.unwrap();
                cw.close().await.unwrap();
            },
            async {
                let mut got = Vec::new();
                (&c).read_to_end(&mut got).await.unwrap();
                got
            },
        )
        .await;
        let () = sent;
        assert_same(&got, &data, "echo through clones");
        reader.join().unwrap();
        writer.join().unwrap();
    });
}

#[test]
fn close_is_a_half_close() {
    on_both_executors(|| async {
        let (a, b) = (bind(4).await, bind(5).await);
        let (mut c, mut s) = connected(&a, &b).await;
        c.write_all(b"question").await.unwrap();
        c.close().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"question");
        // The closed side still reads everything the peer sends, up to its FIN.
        s.write_all(b"answer").await.unwrap();
        s.close().await.unwrap();
        got.clear();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"answer");
        let err = c.write_all(b"late").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
        // Flushing has nothing to wait for, and reports no error after a clean close.
        s.flush().await.unwrap();
    });
}

#[test]
fn sockets_move_between_executors() {
    init_tracing();
    // Bound under smol, used under async-std, and the other way round: the driver belongs to
    // neither.
    let (a, b) = smol::block_on(async { (bind(6).await, bind(7).await) });
    let (mut c, mut s) = async_std::task::block_on(connected(&a, &b));
    smol::block_on(async {
        c.write_all(&pattern(8, 100_000)).await.unwrap();
        c.close().await.unwrap();
    });
    let mut got = Vec::new();
    async_std::task::block_on(s.read_to_end(&mut got)).unwrap();
    assert_same(&got, &pattern(8, 100_000), "across executors");
}

#[test]
fn the_driver_ends_with_the_socket_and_its_streams() {
    on_both_executors(|| async {
        let (a, b) = (bind(9).await, bind(10).await);
        let ports = [
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        ];
        // Each driver owns its UDP socket: the port is free again once the driver ended.
        let running =
            |running: bool| wait_until(|| ports.iter().all(|&p| port_in_use(p) == running));
        let (mut c, mut s) = connected(&a, &b).await;
        drop((a, b));
        // The streams keep the drivers running.
        c.write_all(b"bye").await.unwrap();
        drop(c);
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        assert!(running(true));
        drop(s);
        assert!(running(false), "the drivers end and close their sockets");
    });
}

#[test]
fn every_socket_is_driven_by_one_thread() {
    on_both_executors(|| async {
        let sockets = [bind(11).await, bind(12).await, bind(13).await];
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return; // no /proc: nothing to look at
        };
        let drivers = tasks
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == "utp-driver")
            .count();
        assert_eq!(
            drivers,
            1,
            "one driver thread for {} sockets",
            sockets.len()
        );
    });
}

/// Whether a UDP socket is bound to `port` on 127.0.0.1.
fn port_in_use(port: u16) -> bool {
    std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()
}

/// Wait (blocking, checking every 5 ms) up to 10 s for `done`.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    true
}
