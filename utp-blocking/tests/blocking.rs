//! What only the blocking adapter has: read and write timeouts that fail like std's sockets,
//! `connect_timeout`, `try_clone` and `&UtpStream` on two threads, `shutdown(Read)`,
//! `incoming`, and a driver thread that ends with its socket.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use utp_adapter_tests::{assert_same, config, init_tracing, pattern, wait_for_driver_threads};
use utp_blocking::{UtpSocket, UtpStream};

/// What std's sockets report for an expired timeout.
const TIMEOUT_KIND: ErrorKind = if cfg!(windows) {
    ErrorKind::TimedOut
} else {
    ErrorKind::WouldBlock
};

fn bind(seed: u64) -> UtpSocket {
    UtpSocket::bind_with_config("127.0.0.1:0", config(seed)).unwrap()
}

fn connected(a: &UtpSocket, b: &UtpSocket) -> (UtpStream, UtpStream) {
    let addr = b.local_addr().unwrap();
    let client = a.connect(addr).unwrap();
    let (server, _) = b.accept().unwrap();
    (client, server)
}

#[test]
fn read_timeout_fails_like_std_then_reads_go_on() {
    init_tracing();
    let (a, b) = (bind(1), bind(2));
    let (mut c, mut s) = connected(&a, &b);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert_eq!(s.read_timeout().unwrap(), Some(Duration::from_millis(100)));
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let err = s.read(&mut buf).unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), TIMEOUT_KIND, "{err}");
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // The connection is unharmed.
    c.write_all(b"late but fine").unwrap();
    s.read_exact(&mut buf[..13]).unwrap();
    assert_eq!(&buf[..13], b"late but fine");
    // A timeout bounds a read that is waiting; it does not spoil data arriving in time.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        c.write_all(b"x").unwrap();
        c
    });
    assert_eq!(s.read(&mut buf).unwrap(), 1);
    drop(writer.join().unwrap());
}

#[test]
fn write_timeout_fails_like_std_when_the_peer_stops_reading() {
    init_tracing();
    let mut small = config(3);
    small.connection_mut().send_buffer(64 << 10);
    let a = UtpSocket::bind_with_config("127.0.0.1:0", small).unwrap();
    let b = bind(4);
    let (mut c, mut s) = connected(&a, &b);
    c.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // The peer reads nothing: its window and our send buffer fill, then a write times out.
    let data = pattern(5, 64 << 20);
    let mut written = 0;
    let err = loop {
        match c.write(&data[written..written + 16_384]) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
        assert!(written < 32 << 20, "the peer's window never closed");
    };
    assert_eq!(err.kind(), TIMEOUT_KIND, "{err}");
    // Nothing was lost: every byte a write accepted arrives, then EOF.
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_same(&got, &data[..written], "accepted before the timeout");
}

#[test]
fn zero_timeouts_are_invalid_input_and_clones_share_timeouts() {
    init_tracing();
    let (a, b) = (bind(6), bind(7));
    let (c, _s) = connected(&a, &b);
    for err in [
        c.set_read_timeout(Some(Duration::ZERO)).unwrap_err(),
        c.set_write_timeout(Some(Duration::ZERO)).unwrap_err(),
        a.connect_timeout(b.local_addr().unwrap(), Duration::ZERO)
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    let clone = c.try_clone().unwrap();
    c.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    assert_eq!(clone.write_timeout().unwrap(), Some(Duration::from_secs(3)));
    assert_eq!(clone.read_timeout().unwrap(), None);
}

#[test]
fn connect_timeout_gives_up_with_timed_out_and_frees_the_attempt() {
    init_tracing();
    let a = bind(8);
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let err = a
        .connect_timeout(silent.local_addr().unwrap(), Duration::from_millis(200))
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let start = Instant::now();
    while a.stats().endpoint.connections > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "attempt not freed"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // A connect_timeout that is long enough connects.
    let b = bind(9);
    let mut c = a
        .connect_timeout(b.local_addr().unwrap(), Duration::from_secs(10))
        .unwrap();
    c.write_all(b"hi").unwrap();
}

#[test]
fn reference_read_and_write_from_two_threads() {
    init_tracing();
    let (a, b) = (bind(10), bind(11));
    let (c, s) = connected(&a, &b);
    // The server echoes through `&UtpStream` from two threads sharing one stream.
    let s = std::sync::Arc::new(s);
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = thread::spawn({
        let s = s.clone();
        move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match (&*s).read(&mut buf).unwrap() {
                    0 => break,
                    n => tx.send(buf[..n].to_vec()).unwrap(),
                }
            }
        }
    });
    let writer = thread::spawn({
        let s = s.clone();
        move || {
            for chunk in rx {
                (&*s).write_all(&chunk).unwrap();
            }
            s.shutdown(Shutdown::Write).unwrap();
        }
    });
    let data = pattern(12, 2 << 20);
    let upload = thread::spawn({
        let (data, mut c) = (data.clone(), c.try_clone().unwrap());
        move || {
            c.write_all(&data).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
        }
    });
    let mut got = Vec::new();
    (&c).read_to_end(&mut got).unwrap();
    assert_same(&got, &data, "echo through &UtpStream");
    for t in [reader, writer, upload] {
        t.join().unwrap();
    }
}

#[test]
fn shutdown_read_makes_reads_return_eof() {
    init_tracing();
    let (a, b) = (bind(13), bind(14));
    let (mut c, mut s) = connected(&a, &b);
    c.write_all(b"unread").unwrap();
    s.shutdown(Shutdown::Read).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).unwrap(), 0);
    // Writing still works; Both also sends the FIN.
    s.write_all(b"reply").unwrap();
    s.shutdown(Shutdown::Both).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"reply");
}

#[test]
fn incoming_yields_connections_until_close() {
    init_tracing();
    let (a, b) = (bind(15), bind(16));
    let addr = b.local_addr().unwrap();
    let clients = thread::spawn(move || {
        (0..3u8)
            .map(|i| {
                let mut c = a.connect(addr).unwrap();
                c.write_all(&[i]).unwrap();
                c
            })
            .collect::<Vec<_>>()
    });
    let mut seen = Vec::new();
    for stream in b.incoming().take(3) {
        let mut byte = [0u8];
        stream.unwrap().read_exact(&mut byte).unwrap();
        seen.push(byte[0]);
    }
    seen.sort();
    assert_eq!(seen, [0, 1, 2]);
    b.close();
    let err = b.incoming().next().unwrap().err().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotConnected);
    drop(clients.join().unwrap());
}

#[test]
fn the_driver_thread_ends_with_the_socket_and_its_streams() {
    init_tracing();
    let (a, b) = (bind(17), bind(18));
    let ports = [
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    ];
    if !wait_for_driver_threads(&ports, true) {
        return; // no /proc: nothing to look at
    }
    let (mut c, mut s) = connected(&a, &b);
    drop((a, b));
    // The streams keep the drivers running.
    c.write_all(b"bye").unwrap();
    drop(c);
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye");
    assert!(wait_for_driver_threads(&ports, true));
    drop(s);
    assert!(wait_for_driver_threads(&ports, false));
}
