//! The driver thread where `utp_io::poll_thread` is not available (not Unix): `utp_io`'s
//! driver future, polled by a loop that sleeps in a blocking `recv_from` with the driver's
//! next deadline as its read timeout (str0m's blocking loop). One datagram per call.
//!
//! The pieces are `utp_io`'s runtime traits, implemented for a thread:
//!
//! - [`Park`] is the driver's waker. Waking it while the thread polls sets a flag, so the
//!   loop polls again instead of sleeping; waking it while the thread sleeps also sends an
//!   empty datagram from a private loopback socket to the uTP socket, which ends the
//!   sleep at once. The datagram is recognised by its sender and never reaches the
//!   endpoint.
//! - [`ThreadTimer`] records its deadline when polled and not yet due; that deadline, if
//!   any, becomes the timeout of the next sleep. With none, the thread sleeps until a
//!   datagram or a wake-up arrives: an idle socket uses no CPU.
//! - [`ThreadUdp`] is a non-blocking std socket for the driver's receives and sends; the
//!   one datagram a sleep receives is kept for the next poll. A send that would block is
//!   retried blocking (the thread has nothing else to do until the kernel takes it), so
//!   nothing is dropped.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use socket2::SockRef;
use tracing::{trace, warn};
use utp_io::{AsyncTimer, AsyncUdpSocket, Runtime};

/// The runtime of one socket: its driver thread, its timer and its waker.
#[derive(Debug)]
pub(crate) struct ThreadRuntime {
    park: Arc<Park>,
    udp: Arc<ThreadUdp>,
}

impl ThreadRuntime {
    /// Take over `socket` (any mode; it is made non-blocking).
    pub(crate) fn new(socket: UdpSocket) -> io::Result<(Arc<Self>, Arc<ThreadUdp>)> {
        socket.set_nonblocking(true)?;
        let (wake, wake_to) = wake_socket(socket.local_addr()?)?;
        let wake_from = wake.local_addr()?;
        let park = Arc::new(Park {
            notified: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            deadline: Mutex::new(None),
            wake,
            wake_to,
        });
        let udp = Arc::new(ThreadUdp {
            socket,
            wake_from,
            stash: Mutex::new(Stash {
                buf: vec![0; MAX_DATAGRAM],
                received: None,
            }),
        });
        let runtime = Arc::new(Self {
            park,
            udp: udp.clone(),
        });
        Ok((runtime, udp))
    }
}

impl Runtime for ThreadRuntime {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(ThreadTimer {
            deadline,
            park: self.park.clone(),
        })
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        let (park, udp) = (self.park.clone(), self.udp.clone());
        let port = udp.local_addr().map_or(0, |a| a.port());
        let spawned = thread::Builder::new()
            .name(format!("utp-drv-{port}"))
            .spawn(move || run(future, &park, &udp));
        if let Err(e) = spawned {
            // The future was dropped with the closure: the driver reports itself stopped and
            // every call on the socket fails with that error.
            warn!(error = %e, "cannot start the uTP driver thread");
        }
    }
}

/// The driver thread's loop: poll, then sleep in `recv_from` until the deadline the timer
/// registered, unless something woke the driver meanwhile.
fn run(mut future: Pin<Box<dyn Future<Output = ()> + Send>>, park: &Arc<Park>, udp: &ThreadUdp) {
    let waker = Waker::from(park.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        park.notified.store(false, Ordering::SeqCst);
        *park.deadline() = None;
        if future.as_mut().poll(&mut cx).is_ready() {
            return;
        }
        let deadline = park.deadline().take();
        // Dekker-style hand-shake with `Park::wake_by_ref`: either we see its flag here, or
        // it sees `sleeping` and sends the wake-up datagram (both are SeqCst).
        park.sleeping.store(true, Ordering::SeqCst);
        if !park.notified.load(Ordering::SeqCst) {
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if timeout != Some(Duration::ZERO) {
                udp.sleep(timeout);
            }
        }
        park.sleeping.store(false, Ordering::SeqCst);
    }
}

/// The driver's waker, shared with its timer.
#[derive(Debug)]
struct Park {
    /// Woken since the loop last started a poll.
    notified: AtomicBool,
    /// The thread is in (or about to enter) its sleeping `recv_from`.
    sleeping: AtomicBool,
    /// The earliest deadline a timer registered during the current poll.
    deadline: Mutex<Option<Instant>>,
    /// Sends the wake-up datagrams, to `wake_to` (the uTP socket).
    wake: UdpSocket,
    wake_to: SocketAddr,
}

impl Park {
    fn deadline(&self) -> MutexGuard<'_, Option<Instant>> {
        // Nothing panics while holding this lock; recover rather than cascade if it did.
        self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Wake for Park {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notified.store(true, Ordering::SeqCst);
        // Only the first waker of a sleep sends a datagram.
        if self.sleeping.swap(false, Ordering::SeqCst)
            && let Err(e) = self.wake.send_to(&[], self.wake_to)
        {
            // Nothing is lost but latency: the sleep still ends at the next deadline or
            // datagram.
            warn!(error = %e, "cannot wake the uTP driver thread");
        }
    }
}

#[derive(Debug)]
struct ThreadTimer {
    deadline: Instant,
    park: Arc<Park>,
}

impl AsyncTimer for ThreadTimer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.deadline = deadline;
    }

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let mut registered = self.park.deadline();
        *registered = Some(registered.map_or(self.deadline, |d| d.min(self.deadline)));
        Poll::Pending
    }
}

/// The uTP socket as the driver sees it.
#[derive(Debug)]
pub(crate) struct ThreadUdp {
    /// Non-blocking, except during a sleep or a send that would block.
    socket: UdpSocket,
    /// The sender of wake-up datagrams, which are dropped on arrival.
    wake_from: SocketAddr,
    stash: Mutex<Stash>,
}

#[derive(Debug)]
struct Stash {
    buf: Vec<u8>,
    /// What the last sleep received, for the next `poll_recv_from`.
    received: Option<io::Result<(usize, SocketAddr)>>,
}

impl ThreadUdp {
    fn stash(&self) -> MutexGuard<'_, Stash> {
        // Only the driver thread takes this lock.
        self.stash.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_wake_up(&self, from: SocketAddr) -> bool {
        from.port() == self.wake_from.port()
            && from.ip().to_canonical() == self.wake_from.ip().to_canonical()
    }

    /// Block in `recv_from` for at most `timeout` (`None`: until something arrives: a
    /// datagram, a wake-up or an error) and keep what arrives for the next poll.
    fn sleep(&self, timeout: Option<Duration>) {
        let mut stash = self.stash();
        let stash = &mut *stash;
        let received = self.blocking(|socket| {
            socket.set_read_timeout(timeout)?;
            socket.recv_from(&mut stash.buf)
        });
        match received {
            Ok((_, from)) if self.is_wake_up(from) => trace!("woken"),
            // The read timeout: the deadline is due.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            received => stash.received = Some(received),
        }
    }

    /// Run `op` with the socket in blocking mode.
    fn blocking<T>(&self, op: impl FnOnce(&UdpSocket) -> io::Result<T>) -> io::Result<T> {
        self.socket.set_nonblocking(false)?;
        let result = op(&self.socket);
        // Failing to switch back would leave the driver's receives blocking; a socket that
        // refuses it is broken anyway, and the next receive reports it.
        let _ = self.socket.set_nonblocking(true);
        result
    }
}

impl AsyncUdpSocket for ThreadUdp {
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        self.recv_from(cx, buf)
    }

    fn poll_send_to(
        &self,
        _: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(match self.socket.send_to(buf, target) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.blocking(|socket| socket.send_to(buf, target))
            }
            result => result,
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn set_dont_fragment(&self, on: bool) -> io::Result<()> {
        utp_io::set_dont_fragment(SockRef::from(&self.socket), on)
    }
}

impl ThreadUdp {
    /// A datagram the last sleep received, or one from the socket.
    fn recv_from(
        &self,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        {
            let mut stash = self.stash();
            if let Some(received) = stash.received.take() {
                return Poll::Ready(received.map(|(len, from)| {
                    buf[..len].copy_from_slice(&stash.buf[..len]);
                    (len, from)
                }));
            }
        }
        loop {
            match self.socket.recv_from(buf) {
                Ok((_, from)) if self.is_wake_up(from) => continue,
                // The driver loop sleeps in `recv_from` next: no waker to register.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                result => return Poll::Ready(result),
            }
        }
    }
}

/// A non-blocking socket to send wake-up datagrams from, and where to send them: the uTP
/// socket's own address, or loopback if it is bound to an unspecified address.
fn wake_socket(local: SocketAddr) -> io::Result<(UdpSocket, SocketAddr)> {
    let mut targets = Vec::with_capacity(2);
    match local {
        SocketAddr::V4(a) if a.ip().is_unspecified() => targets.push(Ipv4Addr::LOCALHOST.into()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            // A dual-stack socket also hears IPv4 loopback, if IPv6 has none.
            targets.extend([
                IpAddr::from(Ipv6Addr::LOCALHOST),
                Ipv4Addr::LOCALHOST.into(),
            ]);
        }
        _ => targets.push(local.ip()),
    }
    let mut last = None;
    for ip in targets {
        let mut to = local;
        to.set_ip(ip);
        if let SocketAddr::V6(to) = &mut to
            && !to.ip().is_unicast_link_local()
        {
            to.set_scope_id(0);
        }
        let mut from = to;
        from.set_port(0);
        match UdpSocket::bind(from) {
            Ok(socket) => {
                socket.set_nonblocking(true)?;
                return Ok((socket, to));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no address to wake the driver from")))
}

/// Largest UDP payload (IPv4).
const MAX_DATAGRAM: usize = 65_536;

#[cfg(test)]
mod tests {
    use super::*;

    /// A wake-up ends a sleep at once, and the datagram that did it is not kept.
    fn wake_up_ends_sleep(bind: &str) {
        let Ok(socket) = UdpSocket::bind(bind) else {
            return; // no such address family here
        };
        let (runtime, udp) = ThreadRuntime::new(socket).unwrap();
        let park = &runtime.park;
        park.sleeping.store(true, Ordering::SeqCst);
        park.wake_by_ref();
        assert!(park.notified.load(Ordering::SeqCst));
        assert!(
            !park.sleeping.load(Ordering::SeqCst),
            "the waker claims the sleep"
        );
        let start = Instant::now();
        udp.sleep(Some(Duration::from_secs(5)));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{bind}: not woken"
        );
        assert!(
            udp.stash().received.is_none(),
            "{bind}: wake-up datagram kept"
        );
    }

    #[test]
    fn wake_ups_reach_sockets_of_every_kind() {
        for bind in ["127.0.0.1:0", "0.0.0.0:0", "[::1]:0", "[::]:0"] {
            wake_up_ends_sleep(bind);
        }
    }

    #[test]
    fn a_second_waker_sends_nothing() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (runtime, udp) = ThreadRuntime::new(socket).unwrap();
        runtime.park.sleeping.store(true, Ordering::SeqCst);
        runtime.park.wake_by_ref();
        runtime.park.wake_by_ref();
        udp.sleep(Some(Duration::from_secs(5)));
        // Only one datagram was sent: once the driver took it (or the sleep did), the next
        // sleep runs to its timeout.
        let mut cx = Context::from_waker(Waker::noop());
        let mut buf = [0; 64];
        assert!(udp.poll_recv_from(&mut cx, &mut buf).is_pending());
        let start = Instant::now();
        udp.sleep(Some(Duration::from_millis(50)));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn timer_registers_its_deadline_only_while_pending() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (runtime, _udp) = ThreadRuntime::new(socket).unwrap();
        let later = Instant::now() + Duration::from_secs(60);
        let mut timer = runtime.new_timer(later);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(timer.as_mut().poll(&mut cx).is_pending());
        assert_eq!(*runtime.park.deadline(), Some(later));
        *runtime.park.deadline() = None;
        timer.as_mut().reset(Instant::now());
        assert!(timer.as_mut().poll(&mut cx).is_ready());
        assert_eq!(*runtime.park.deadline(), None, "a due timer needs no sleep");
    }
}
