//! Where every socket's driver runs: one thread per process (named [`DRIVER_THREAD`],
//! started with the first socket), on Unix a [`utp_io::poll_thread::PollThread`] that waits
//! for all of the process's uTP sockets in one `poll(2)`; elsewhere an async-io executor
//! thread ([`crate::reactor`]).
//!
//! Why not the application's executor: async-std's is internal to a discontinued crate, smol
//! has none that is global unless the application sets one up, and a library that needs the
//! caller to run an executor for it breaks under `smol::block_on` alone. A thread of our
//! own costs no CPU while idle, needs no set-up, and works the same under
//! `async_std::task::block_on`, `smol::block_on` or any other executor, since wakers cross
//! threads.
//!
//! Why one thread for all sockets rather than one each: datagrams between two sockets of
//! the process (the bench's pair, a client and a server in one program) are then handled
//! on one thread instead of being handed between threads. Sockets that are all busy at
//! once share one core, as under a single-threaded runtime; uTP's per-packet work is small
//! enough for that (libutp runs every socket on the caller's one thread).
//!
//! Why not async-io's reactor on Unix: it is process-wide, and whichever thread waits in it
//! gets the socket events: async-io's own thread, or an application thread in
//! `smol::block_on`, which runs the reactor while idle. That thread then had to wake the
//! driver thread for every batch, and every re-armed driver timer woke the reactor (#17).
//! With a poller of our own, socket events and timers reach the driver thread directly,
//! and the application is reached only through wakers.

use std::io;
use std::net::UdpSocket;
use std::sync::Mutex;

use utp_io::{Socket, SocketConfig};

/// The name of the thread that runs every socket's driver.
pub(crate) const DRIVER_THREAD: &str = "utp-driver";

/// Run `socket`'s driver on [`DRIVER_THREAD`], starting it unless it runs.
#[cfg(unix)]
pub(crate) fn open(socket: UdpSocket, config: SocketConfig) -> io::Result<Socket> {
    use utp_io::poll_thread::PollThread;

    /// Started with the first socket; a failure to start is not remembered: the next socket
    /// tries again.
    static THREAD: Mutex<Option<PollThread>> = Mutex::new(None);

    // Only a panic in `PollThread::start` could poison it; the value is still right.
    let mut thread = THREAD.lock().unwrap_or_else(|e| e.into_inner());
    let thread = match &mut *thread {
        Some(thread) => thread,
        empty => empty.insert(PollThread::start(DRIVER_THREAD)?),
    };
    thread.open(socket, config)
}

/// Run `socket`'s driver on [`DRIVER_THREAD`], registered with async-io's reactor.
#[cfg(not(unix))]
pub(crate) fn open(socket: UdpSocket, config: SocketConfig) -> io::Result<Socket> {
    use std::sync::Arc;

    use crate::reactor::{AsyncIoRuntime, IoUdp};

    let udp = IoUdp::new(async_io::Async::new(socket)?)?;
    Socket::new(Arc::new(AsyncIoRuntime), Arc::new(udp), config)
}
