//! The driver over an in-memory network and a hand-cranked runtime, with no async runtime
//! at all: a socket that refuses every third send (would block) must still deliver every
//! byte, without a single retransmission.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use utp_io::{AsyncTimer, AsyncUdpSocket, Runtime, Socket, SocketConfig, Stream};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Spawned tasks, polled in turn by [`Crank::run`].
#[derive(Default)]
struct Crank {
    tasks: Mutex<Vec<Option<Task>>>,
}

/// The runtime handed to sockets: shares the crank.
#[derive(Debug)]
struct CrankHandle(Arc<Crank>);

impl std::fmt::Debug for Crank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crank")
    }
}

impl Crank {
    fn run(&self) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut tasks = self.tasks.lock().unwrap();
        for slot in tasks.iter_mut() {
            if let Some(task) = slot
                && task.as_mut().poll(&mut cx).is_ready()
            {
                *slot = None;
            }
        }
    }

    /// Poll `f` between runs of the tasks until it is ready.
    fn block_on<T>(&self, f: impl Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        let start = Instant::now();
        loop {
            self.run();
            if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "stuck");
        }
    }
}

impl Runtime for CrankHandle {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(Timer(deadline))
    }

    fn spawn(&self, future: Task) {
        self.0.tasks.lock().unwrap().push(Some(future));
    }
}

#[derive(Debug)]
struct Timer(Instant);

impl AsyncTimer for Timer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.0 = deadline;
    }

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Datagram queues by destination address.
#[derive(Debug, Default)]
struct Net {
    #[allow(clippy::type_complexity)]
    queues: Mutex<HashMap<SocketAddr, VecDeque<(SocketAddr, Vec<u8>)>>>,
}

#[derive(Debug)]
struct FakeSocket {
    addr: SocketAddr,
    net: Arc<Net>,
    /// Every `refuse_every`-th send attempt would block.
    refuse_every: u64,
    attempts: AtomicU64,
}

impl AsyncUdpSocket for FakeSocket {
    fn poll_recv_from(
        &self,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut queues = self.net.queues.lock().unwrap();
        match queues.get_mut(&self.addr).and_then(VecDeque::pop_front) {
            Some((from, d)) => {
                buf[..d.len()].copy_from_slice(&d);
                Poll::Ready(Ok((d.len(), from)))
            }
            None => Poll::Pending,
        }
    }

    fn poll_send_to(
        &self,
        _: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        if self
            .attempts
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(self.refuse_every)
        {
            return Poll::Pending;
        }
        let mut queues = self.net.queues.lock().unwrap();
        queues
            .entry(target)
            .or_default()
            .push_back((self.addr, buf.to_vec()));
        Poll::Ready(Ok(buf.len()))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

fn socket(crank: &Arc<Crank>, net: &Arc<Net>, addr: &str, refuse_every: u64) -> Socket {
    let mut config = SocketConfig::default();
    config.seed(Some(refuse_every));
    let udp = FakeSocket {
        addr: addr.parse().unwrap(),
        net: net.clone(),
        refuse_every,
        attempts: AtomicU64::new(0),
    };
    Socket::new(Arc::new(CrankHandle(crank.clone())), Arc::new(udp), config).unwrap()
}

#[test]
fn sends_that_would_block_are_kept_not_dropped() {
    let crank = Arc::new(Crank::default());
    let net = Arc::new(Net::default());
    let a = socket(&crank, &net, "10.0.0.1:6881", 3);
    let b = socket(&crank, &net, "10.0.0.2:6881", 1_000_000);

    let client: Stream = crank.block_on(a.connect(b.local_addr()).unwrap()).unwrap();
    let (server, from) = crank
        .block_on(std::future::poll_fn(|cx| b.poll_accept(cx)))
        .unwrap();
    assert_eq!(from, a.local_addr());

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut written = 0;
    let mut shut = false;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    crank.block_on(std::future::poll_fn(|cx| {
        while written < data.len() {
            match client.poll_write(cx, &data[written..]) {
                Poll::Ready(n) => written += n.unwrap(),
                Poll::Pending => break,
            }
        }
        if written == data.len() && !shut {
            client.shutdown().unwrap();
            shut = true;
        }
        loop {
            match server.poll_read(cx, &mut buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(()),
                Poll::Ready(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => return Poll::Pending,
            }
        }
    }));
    assert!(got == data, "got {} of {} bytes", got.len(), data.len());
    let stats = a.stats();
    assert!(stats.send_would_block > 100, "{stats:?}");
    assert_eq!(stats.send_errors, 0);
    assert_eq!(client.stats().unwrap().retransmits, 0);
}
