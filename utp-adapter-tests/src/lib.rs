//! One behavioural test suite, written once and run against every uTP adapter, so the
//! adapters cannot drift apart; and one loopback throughput bench for all of them beside TCP.
//!
//! An adapter is described by the [`Adapter`] trait: an executor (`block_on`, `spawn`,
//! `sleep`), a socket (bind, connect, accept, raw datagrams, stats, close) and streams that
//! implement [`Reader`] and [`Writer`]. Async adapters implement it directly; the blocking
//! one implements each operation as a future that completes on the calling thread, and
//! `spawn` as a thread, so the same test bodies exercise it with real threads.
//!
//! Each adapter's test crate enables its feature (which compiles its implementation in
//! [`adapters`]) and expands [`suite!`]:
//!
//! ```ignore
//! // utp-tokio/tests/suite.rs
//! utp_adapter_tests::suite!(utp_adapter_tests::adapters::Tokio);
//! ```
//!
//! The tests themselves are in [`suite`](mod@suite). Every test runs under a watchdog that aborts the
//! process with the test's name if it hangs, since a blocking call cannot be timed out from
//! the outside.
//!
//! ```
//! use utp_adapter_tests::{assert_same, pattern};
//!
//! let data = pattern(7, 1000);
//! assert_eq!(data.len(), 1000);
//! assert_same(&data, &pattern(7, 1000), "patterns are deterministic");
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use utp_io::{ConnectionInfo, ShutdownReport, SocketConfig, SocketStats};
use utp_proto::{ConnectionConfig, ConnectionStats};

pub mod adapters;
pub mod bench;
mod relay;
pub mod suite;

pub use relay::{Relay, RelayStats};
/// Log through the test harness, filtered by `RUST_LOG` (default `warn`).
pub use utp_sim::init_tracing;

/// A spawned task's result, as a future.
pub type Task<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the suite needs from an adapter and its executor. Every method is a thin wrapper of
/// the adapter's public API; the blocking adapter's futures complete on the calling thread.
pub trait Adapter: 'static {
    /// Shown in bench output.
    const NAME: &'static str;
    /// `UtpSocket`.
    type Socket: Clone + Send + Sync + 'static;
    /// `UtpStream`.
    type Stream: Reader + Writer;
    /// The reading half of a split stream.
    type ReadHalf: Reader;
    /// The writing half of a split stream.
    type WriteHalf: Writer;

    /// Run `future` to completion on this executor (a test's top level).
    fn block_on<F: Future>(future: F) -> F::Output;
    /// Run `future` concurrently (a task, or a thread for the blocking adapter).
    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T>;
    /// Wait for `duration`.
    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send;

    /// Bind a socket.
    fn bind(
        addr: SocketAddr,
        config: SocketConfig,
    ) -> impl Future<Output = io::Result<Self::Socket>> + Send;
    /// Take over a bound std socket.
    fn from_std(socket: std::net::UdpSocket, config: SocketConfig) -> io::Result<Self::Socket>;
    /// The socket's address.
    fn local_addr(socket: &Self::Socket) -> SocketAddr;
    /// The socket's counters.
    fn socket_stats(socket: &Self::Socket) -> SocketStats;
    /// Stop accepting.
    fn close(socket: &Self::Socket);
    /// Close every connection gracefully and wait for the driver to end; reset what is left
    /// after `timeout`.
    fn shutdown_gracefully(
        socket: &Self::Socket,
        timeout: Duration,
    ) -> impl Future<Output = io::Result<ShutdownReport>> + Send;
    /// Open a connection.
    fn connect(
        socket: &Self::Socket,
        remote: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Open a connection to `(host, port)`, resolving the name the adapter's way.
    fn connect_host(
        socket: &Self::Socket,
        host: &'static str,
        port: u16,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Open a connection with its own settings.
    fn connect_with(
        socket: &Self::Socket,
        remote: SocketAddr,
        config: ConnectionConfig,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Every connection on the socket, with its stats.
    fn connections(socket: &Self::Socket) -> Vec<ConnectionInfo>;
    /// Accept a connection.
    fn accept(
        socket: &Self::Socket,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    /// Receive a datagram that was not uTP.
    fn recv_from(
        socket: &Self::Socket,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    /// Send a raw datagram from the socket's port.
    fn send_to(
        socket: &Self::Socket,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// The connection's counters.
    fn stream_stats(stream: &Self::Stream) -> Option<ConnectionStats>;
    /// Abort the connection.
    fn reset(stream: &Self::Stream);
    /// Send `reason` with our FIN.
    fn set_close_reason(stream: &Self::Stream, reason: u16);
    /// The close reason the peer sent.
    fn peer_close_reason(stream: &Self::Stream) -> Option<u16>;
    /// Bound how long each read blocks, where the adapter has read timeouts (like
    /// `TcpStream::set_read_timeout`); `false` if it has none.
    fn set_read_timeout(stream: &Self::Stream, timeout: Option<Duration>) -> bool {
        let _ = (stream, timeout);
        false
    }
    /// Receive bytes without taking them.
    fn peek(
        stream: &Self::Stream,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send;
    /// The error that ended the connection.
    fn take_error(stream: &Self::Stream) -> io::Result<Option<io::Error>>;
    /// FIN after everything written, then wait until the peer acknowledged all of it
    /// (`close`, or `close_gracefully` on futures-io).
    fn close_stream(stream: &Self::Stream) -> impl Future<Output = io::Result<()>> + Send;
    /// Split into halves usable from two tasks.
    fn split(stream: Self::Stream) -> (Self::ReadHalf, Self::WriteHalf);
}

/// Reading a stream.
pub trait Reader: Send + 'static {
    /// Read some bytes; `Ok(0)` at the peer's FIN.
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
}

/// Writing a stream.
pub trait Writer: Send + 'static {
    /// Write some bytes.
    fn write(&mut self, buf: &[u8]) -> impl Future<Output = io::Result<usize>> + Send;
    /// Half-close: tokio's `shutdown`, futures-io's `close`, std's `shutdown(Write)`.
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// `len` pseudo-random bytes determined by `seed` (xorshift: fast even in debug builds).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a, 64 bits: a hash of transferred bytes that two processes agree on.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Compare two byte strings, naming where they first differ.
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

/// Defaults with a fixed seed.
pub fn config(seed: u64) -> SocketConfig {
    let mut c = SocketConfig::default();
    c.seed(Some(seed));
    c
}

/// Write all of `data`.
pub async fn write_all<W: Writer>(w: &mut W, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match w.write(data).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => data = &data[n..],
        }
    }
    Ok(())
}

/// Read until the peer's FIN.
pub async fn read_to_end<R: Reader>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await? {
            0 => return Ok(out),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Spawn on `A`'s executor; a panic in the task resumes when its result is awaited, on
/// every executor alike.
pub fn spawn<A: Adapter, T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = T> + Send {
    let task = A::spawn(CatchUnwind(Box::pin(future)));
    async move { task.await.unwrap_or_else(|panic| resume_unwind(panic)) }
}

/// Run one test on `A`'s executor with tracing, aborting the process if it takes longer
/// than `limit` (a hang in a blocking call cannot be cancelled any other way).
pub fn run<A: Adapter>(name: &str, limit: Duration, test: impl Future<Output = ()>) {
    init_tracing();
    let (done, finished) = mpsc::channel::<()>();
    let name = name.to_owned();
    let watchdog = thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
            eprintln!(
                "{name} on {}: no progress after {limit:?}; aborting",
                A::NAME
            );
            std::process::abort();
        }
    });
    A::block_on(test);
    drop(done);
    let _ = watchdog.join();
}

/// Wait until `done()` holds, checking every 10 ms, for at most `limit`.
pub async fn eventually<A: Adapter>(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        A::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the driver thread of the socket on `port` runs (Linux; `None` elsewhere): the
/// blocking adapter runs one per socket, named `utp-drv-<port>`, until the socket and its
/// streams are done (the async-io adapter runs every socket's driver on one thread).
pub fn driver_thread(port: u16) -> Option<bool> {
    let name = format!("utp-drv-{port}");
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .any(|comm| comm.trim_end() == name),
    )
}

/// Wait (blocking, up to 10 s) until the driver threads of the sockets on `ports` all run
/// (`running`) or have all ended. `false` if threads cannot be seen (no `/proc`).
pub fn wait_for_driver_threads(ports: &[u16], running: bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        let states: Option<Vec<bool>> = ports.iter().map(|&port| driver_thread(port)).collect();
        match states {
            None => return false,
            Some(states) if states.iter().all(|&s| s == running) => return true,
            Some(states) => assert!(
                start.elapsed() < Duration::from_secs(10),
                "driver threads of {ports:?}: {states:?}, want all {running}"
            ),
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a future to completion on the calling thread, parking it in between: the executor
/// of the blocking adapter's tests (its futures finish without ever returning `Pending`,
/// except for joins of spawned threads, which wake it).
pub fn park_block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

/// Catches a panic while polling, so it can be resumed where the task is awaited.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Expands to one `#[test]` per test of the [`suite`](mod@crate::suite) for the adapter `$adapter`, plus the
/// `#[ignore]`d `stress_*` tests.
///
/// ```ignore
/// mod smol {
///     utp_adapter_tests::suite!(utp_adapter_tests::adapters::Smol);
/// }
/// ```
#[macro_export]
macro_rules! suite {
    ($adapter:ty) => {
        $crate::suite!(@tests $adapter;
            echo,
            concurrent_32_streams_of_1_mib,
            half_close_both_ways,
            drop_with_4_mib_unsent_delivers_everything_then_eof,
            split_halves_work_from_different_tasks,
            ipv6_loopback,
            ipv4_mapped_addresses,
            socket_from_std,
            tiny_socket_send_buffer_loses_nothing,
            dont_fragment_sockets_work_for_ipv4_and_dual_stack,
            connect_to_silent_port_times_out_per_config,
            connect_answered_by_reset_is_refused_quickly,
            connect_to_invalid_addresses_is_invalid_input,
            peer_reset_then_read_and_write_fail,
            write_after_shutdown_is_broken_pipe,
            config_and_capacity_errors_are_typed,
            connect_by_name_with_config_and_list_connections,
            close_reason_reaches_the_peer,
            peek_leaves_the_bytes_for_read,
            a_timeout_the_application_set_is_typed,
            accept_and_connect_after_close_fail,
            streams_outlive_a_dropped_socket,
            graceful_close_is_bounded_by_the_linger_time,
            close_returns_once_the_peer_has_everything,
            close_fails_when_the_peer_resets,
            shutdown_gracefully_closes_every_connection,
            shutdown_gracefully_cuts_a_silent_peer_at_the_deadline,
            non_utp_datagrams_reach_the_queue_while_streams_run,
            a_full_datagram_queue_drops_and_counts,
            eight_mib_through_5_percent_loss_and_reordering
        );
        $crate::suite!(@stress $adapter;
            stress_lossy_relay_many_seeds,
            stress_1000_concurrent_connections
        );
    };
    (@tests $adapter:ty; $($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            $crate::suite::$name::<$adapter>();
        }
    )*};
    (@stress $adapter:ty; $($name:ident),* $(,)?) => {$(
        #[test]
        #[ignore = "slow: run with --ignored"]
        fn $name() {
            $crate::suite::$name::<$adapter>();
        }
    )*};
}
