//! A driver thread for adapters whose ecosystem has no reactor to lend: it polls socket
//! drivers as tasks and sleeps in one `poll(2)` over all of their sockets until a datagram,
//! a protocol deadline or a waker needs one.
//!
//! The async-io adapter runs every socket of the process on one such thread
//! ([`PollThread::start`]); the application's tasks reach it only through wakers, so an
//! application thread that runs async-io's reactor itself (`smol::block_on`) never has to
//! hand socket events over. The blocking adapter gives each socket a thread of its own
//! ([`PollThread::open_dedicated`]). The pieces:
//!
//! - Each socket is a task with its own waker: waking it queues the task and, only if the
//!   thread sleeps, writes one byte to the thread's notification socket (a Dekker-style
//!   hand-shake on a `sleeping` flag).
//! - The driver's timer records its deadline on the task when polled and not yet due; the
//!   earliest deadline of all tasks bounds the sleep. An idle socket costs no CPU.
//! - The socket ([`AsyncUdpSocket`]) is non-blocking. A receive that finds nothing returns
//!   `Pending` with nothing to register: every sleep polls every socket for input. A send
//!   that would block asks for writability for the next sleep. On Linux it batches through
//!   [`crate::batch`] (GSO, GRO, `recvmmsg`) and reads the error queue when `poll(2)`
//!   reports `POLLERR`, or a receive or send failed with the pending error an ICMP error
//!   sets.
//!
//! While tasks are runnable the thread does not sleep, but still polls the sockets (with a
//! zero timeout) between rounds, so one busy socket cannot starve another.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
#[cfg(target_os = "linux")]
use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use socket2::SockRef;
use tracing::{trace, warn};
#[cfg(target_os = "linux")]
use utp_proto::IcmpError;

#[cfg(target_os = "linux")]
use crate::runtime::RecvMeta;
use crate::runtime::{AsyncTimer, AsyncUdpSocket, Runtime};
use crate::{Socket, SocketConfig};

/// A thread that runs socket drivers and waits for all of their sockets at once:
/// [`start`](Self::start) one that lives as long as the process and takes any number of
/// sockets ([`open`](Self::open)), or give one socket a thread that ends with its driver
/// ([`open_dedicated`](Self::open_dedicated)).
#[derive(Debug)]
pub struct PollThread {
    inner: Arc<Inner>,
}

impl PollThread {
    /// Start a thread named `name` that lives as long as the process, for any number of
    /// sockets ([`open`](Self::open)).
    pub fn start(name: &str) -> io::Result<Self> {
        Self::spawn(name, false)
    }

    /// Run `socket`'s driver on a thread of its own, named `name`, that ends once the
    /// driver has (the socket and every stream on it are gone and their connections
    /// closed). As [`open`](Self::open) otherwise.
    pub fn open_dedicated(
        name: &str,
        socket: UdpSocket,
        config: SocketConfig,
    ) -> io::Result<Socket> {
        Self::spawn(name, true)?.open(socket, config)
    }

    fn spawn(name: &str, dedicated: bool) -> io::Result<Self> {
        let (notify, notified) = UnixDatagram::pair()?;
        notify.set_nonblocking(true)?;
        notified.set_nonblocking(true)?;
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue::default()),
            sleeping: AtomicBool::new(false),
            notify,
        });
        let thread = inner.clone();
        thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&thread, &notified, dedicated))?;
        Ok(Self { inner })
    }

    /// Take over `socket` (already configured, see
    /// [`configure_socket`](crate::configure_socket); it is made non-blocking) and run its
    /// driver on this thread.
    pub fn open(&self, socket: UdpSocket, config: SocketConfig) -> io::Result<Socket> {
        let (runtime, udp) = self.runtime(socket)?;
        Socket::new(Arc::new(runtime), Arc::new(udp), config)
    }

    /// The runtime and the socket glue of one task on this thread, for `socket`.
    fn runtime(&self, socket: UdpSocket) -> io::Result<(ThreadRuntime, PolledUdp)> {
        socket.set_nonblocking(true)?;
        let task = {
            let mut queue = self.inner.lock();
            queue.next_key += 1;
            Arc::new(Task {
                key: queue.next_key,
                notified: AtomicBool::new(false),
                deadline: Mutex::new(None),
                want_write: AtomicBool::new(false),
                error: AtomicBool::new(false),
                thread: self.inner.clone(),
                socket,
            })
        };
        let udp = PolledUdp::new(task.clone())?;
        Ok((ThreadRuntime { task }, udp))
    }
}

/// What the thread and the wakers share.
#[derive(Debug)]
struct Inner {
    queue: Mutex<Queue>,
    /// The thread is in (or about to enter) a `poll(2)` that may block.
    sleeping: AtomicBool,
    /// Ends the thread's sleep: one byte per sleep, sent by the first waker.
    notify: UnixDatagram,
}

#[derive(Default)]
struct Queue {
    /// Tasks woken since the thread last looked.
    woken: Vec<Arc<Task>>,
    /// Drivers to adopt.
    spawned: Vec<(Arc<Task>, BoxFuture)>,
    next_key: usize,
    /// The thread ended (a dedicated thread whose driver finished): nothing is queued any
    /// more, which would keep the tasks (and through them this queue) alive in a cycle.
    exited: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("woken", &self.woken.len())
            .field("spawned", &self.spawned.len())
            .finish()
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; the queue stays consistent if something did.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `task` to run; end the thread's sleep if it sleeps.
    fn schedule(&self, task: Arc<Task>) {
        {
            let mut queue = self.lock();
            if queue.exited {
                return;
            }
            queue.woken.push(task);
        }
        self.wake_thread();
    }

    fn wake_thread(&self) {
        // Either the thread sees the queued task before it sleeps, or we see `sleeping`
        // here (the queue's lock orders the two; the flag is SeqCst).
        if self.sleeping.swap(false, Ordering::SeqCst)
            && let Err(e) = self.notify.send(&[1])
            && e.kind() != io::ErrorKind::WouldBlock
        {
            // Nothing is lost but latency: the sleep still ends at the next deadline or
            // datagram.
            warn!(error = %e, "cannot wake the uTP driver thread");
        }
    }
}

/// One socket and its driver, as the thread, the wakers and the socket glue see it.
#[derive(Debug)]
struct Task {
    key: usize,
    /// Queued to run (cleared just before each poll of the driver).
    notified: AtomicBool,
    /// The earliest deadline the driver's timer registered during its last poll.
    deadline: Mutex<Option<Instant>>,
    /// A send would have blocked: the next sleep waits for writability too.
    want_write: AtomicBool,
    /// `poll(2)` reported `POLLERR`: the error queue may hold entries.
    error: AtomicBool,
    thread: Arc<Inner>,
    /// Non-blocking.
    socket: UdpSocket,
}

impl Task {
    fn deadline(&self) -> MutexGuard<'_, Option<Instant>> {
        // Holds a plain value; a panic elsewhere cannot leave it half-written.
        self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue the task unless it is queued: `true` if the caller must run it.
    fn claim(&self) -> bool {
        !self.notified.swap(true, Ordering::AcqRel)
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        if self.claim() {
            self.thread.clone().schedule(self);
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.claim() {
            self.thread.schedule(self.clone());
        }
    }
}

/// A driver being run, with its waker made once.
struct Running {
    task: Arc<Task>,
    waker: Waker,
    future: BoxFuture,
}

/// The thread's loop: adopt new drivers, run the woken ones, fire due timers, then poll
/// every socket, sleeping only when nothing is runnable. A `dedicated` thread returns once
/// its drivers are done.
fn run(inner: &Inner, notified: &UnixDatagram, dedicated: bool) {
    let mut tasks: BTreeMap<usize, Running> = BTreeMap::new();
    let mut runnable: Vec<Arc<Task>> = Vec::new();
    let mut scratch = [0u8; 64];
    let mut adopted = false;
    loop {
        {
            let mut queue = inner.lock();
            for (task, future) in queue.spawned.drain(..) {
                adopted = true;
                // A new driver runs once at once: that registers its deadline and drains
                // what arrived before it was adopted.
                task.notified.store(true, Ordering::Release);
                runnable.push(task.clone());
                let waker = Waker::from(task.clone());
                tasks.insert(
                    task.key,
                    Running {
                        task,
                        waker,
                        future,
                    },
                );
            }
            runnable.append(&mut queue.woken);
        }
        for task in runnable.drain(..) {
            task.notified.store(false, Ordering::Release);
            let Some(running) = tasks.get_mut(&task.key) else {
                continue; // finished already
            };
            *task.deadline() = None;
            let mut cx = Context::from_waker(&running.waker);
            if running.future.as_mut().poll(&mut cx).is_ready() {
                trace!(key = task.key, "uTP driver done");
                tasks.remove(&task.key);
            }
        }

        if dedicated && adopted && tasks.is_empty() {
            let mut queue = inner.lock();
            if queue.spawned.is_empty() {
                queue.exited = true;
                queue.woken.clear();
                return;
            }
        }

        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for running in tasks.values() {
            let Some(deadline) = *running.task.deadline() else {
                continue;
            };
            if deadline <= now {
                if running.task.claim() {
                    runnable.push(running.task.clone());
                }
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }

        // Sleep only if nothing is runnable; otherwise just look at the sockets.
        let mut timeout = Some(Duration::ZERO);
        if runnable.is_empty() {
            inner.sleeping.store(true, Ordering::SeqCst);
            let queue = inner.lock();
            if queue.woken.is_empty() && queue.spawned.is_empty() {
                timeout = next.map(|d| d.saturating_duration_since(now));
            }
        }
        let mut fds = Vec::with_capacity(tasks.len() + 1);
        fds.push(PollFd::new(notified, PollFlags::IN));
        for running in tasks.values() {
            let mut flags = PollFlags::IN;
            if running.task.want_write.load(Ordering::Relaxed) {
                flags |= PollFlags::OUT;
            }
            fds.push(PollFd::new(&running.task.socket, flags));
        }
        let timeout = timeout.map(|t| Timespec {
            tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: t.subsec_nanos().into(),
        });
        let polled = poll(&mut fds, timeout.as_ref());
        inner.sleeping.store(false, Ordering::SeqCst);
        match polled {
            Ok(0) => continue,
            Ok(_) => {}
            // A signal: look again.
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                // Should not happen with valid descriptors; do not spin on it.
                warn!(error = %e, "cannot wait for the uTP sockets");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        if !fds[0].revents().is_empty() {
            // One byte per sleep; a late one only ends the next sleep early.
            let _ = notified.recv(&mut scratch);
        }
        for (fd, running) in fds[1..].iter().zip(tasks.values()) {
            let revents = fd.revents();
            if revents.is_empty() {
                continue;
            }
            let task = &running.task;
            if revents.contains(PollFlags::ERR) {
                task.error.store(true, Ordering::Relaxed);
            }
            if revents.contains(PollFlags::OUT) {
                task.want_write.store(false, Ordering::Relaxed);
            }
            if task.claim() {
                runnable.push(task.clone());
            }
        }
    }
}

/// [`Runtime`] for one socket on a [`PollThread`].
#[derive(Debug)]
struct ThreadRuntime {
    task: Arc<Task>,
}

impl Runtime for ThreadRuntime {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(ThreadTimer {
            deadline,
            task: self.task.clone(),
        })
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        let thread = &self.task.thread;
        thread.lock().spawned.push((self.task.clone(), future));
        thread.wake_thread();
    }
}

#[derive(Debug)]
struct ThreadTimer {
    deadline: Instant,
    task: Arc<Task>,
}

impl AsyncTimer for ThreadTimer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.deadline = deadline;
    }

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let mut registered = self.task.deadline();
        *registered = Some(registered.map_or(self.deadline, |d| d.min(self.deadline)));
        Poll::Pending
    }
}

/// The socket as the driver sees it: only the driver calls it, on the thread.
#[derive(Debug)]
struct PolledUdp {
    task: Arc<Task>,
    #[cfg(target_os = "linux")]
    batch: Option<crate::batch::UdpBatch>,
    #[cfg(target_os = "linux")]
    errors: crate::batch::ErrorQueue,
}

impl PolledUdp {
    fn new(task: Arc<Task>) -> io::Result<Self> {
        Ok(Self {
            #[cfg(target_os = "linux")]
            batch: crate::batch::UdpBatch::new(&task.socket)?,
            #[cfg(target_os = "linux")]
            errors: crate::batch::ErrorQueue::new(&task.socket)?,
            task,
        })
    }

    fn socket(&self) -> &UdpSocket {
        &self.task.socket
    }

    /// A receive's result: `WouldBlock` is `Pending`, as the next sleep polls for input.
    fn received<T>(&self, result: io::Result<T>) -> Poll<io::Result<T>> {
        #[cfg(target_os = "linux")]
        self.errors.note(&result);
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            result => Poll::Ready(result),
        }
    }

    /// A send's result: `WouldBlock` is `Pending`, and the next sleep waits for
    /// writability.
    fn sent<T>(&self, result: io::Result<T>) -> Poll<io::Result<T>> {
        #[cfg(target_os = "linux")]
        self.errors.note(&result);
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.task.want_write.store(true, Ordering::Relaxed);
                Poll::Pending
            }
            result => Poll::Ready(result),
        }
    }
}

impl AsyncUdpSocket for PolledUdp {
    fn poll_recv_from(
        &self,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        self.received(self.socket().recv_from(buf))
    }

    fn poll_send_to(
        &self,
        _: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        self.sent(self.socket().send_to(buf, target))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket().local_addr()
    }

    fn set_dont_fragment(&self, on: bool) -> io::Result<()> {
        crate::set_dont_fragment(SockRef::from(self.socket()), on)
    }

    #[cfg(target_os = "linux")]
    fn recv_batch_size(&self) -> usize {
        if self.batch.is_some() {
            crate::batch::RECV_BATCH
        } else {
            1
        }
    }

    #[cfg(target_os = "linux")]
    fn poll_recv_batch(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        match &self.batch {
            Some(batch) => self.received(batch.try_recv(self.socket(), bufs, meta)),
            None => crate::poll_recv_one(self, cx, bufs, meta),
        }
    }

    #[cfg(target_os = "linux")]
    fn max_send_segments(&self) -> usize {
        self.batch.as_ref().map_or(1, |b| b.max_segments())
    }

    #[cfg(target_os = "linux")]
    fn poll_send_segments(
        &self,
        _: &mut Context<'_>,
        buf: &[u8],
        segment: usize,
        target: SocketAddr,
    ) -> Poll<io::Result<()>> {
        match &self.batch {
            Some(batch) => self.sent(batch.try_send(self.socket(), target, buf, segment)),
            None => Poll::Ready(Err(io::ErrorKind::Unsupported.into())),
        }
    }

    /// Reads the error queue only after `POLLERR` or a failed receive or send hinted at it.
    #[cfg(target_os = "linux")]
    fn poll_recv_icmp(
        &self,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr, IcmpError)>> {
        if self.task.error.swap(false, Ordering::Relaxed) {
            self.errors.hint();
        }
        match self.errors.try_recv(self.socket(), buf) {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Bounds each wait so a broken loop fails the test instead of hanging it; never an
    /// assertion about how fast the loop is.
    const HANG: Duration = Duration::from_secs(20);

    fn task(thread: &PollThread) -> (ThreadRuntime, Arc<PolledUdp>, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let (runtime, udp) = thread.runtime(socket).unwrap();
        (runtime, Arc::new(udp), addr)
    }

    #[test]
    fn a_driver_sleeps_until_its_timer_fires() {
        let thread = PollThread::start("utp-test-timer").unwrap();
        let (runtime, _udp, _) = task(&thread);
        let mut timer = runtime.new_timer(Instant::now() + Duration::from_millis(20));
        let (done, finished) = mpsc::channel();
        runtime.spawn(Box::pin(std::future::poll_fn(move |cx| {
            // Pending until the deadline: nothing else wakes this driver.
            timer
                .as_mut()
                .poll(cx)
                .map(|()| done.send(Instant::now()).unwrap())
        })));
        finished.recv_timeout(HANG).expect("the timer fired");
    }

    #[test]
    fn a_waker_from_another_thread_ends_the_sleep() {
        let thread = PollThread::start("utp-test-wake").unwrap();
        let (runtime, _udp, _) = task(&thread);
        let (waker_tx, waker_rx) = mpsc::channel();
        let (done, finished) = mpsc::channel();
        let mut polls = 0;
        runtime.spawn(Box::pin(std::future::poll_fn(move |cx| {
            polls += 1;
            if polls == 1 {
                // No deadline and no datagram: only the waker can end this sleep.
                waker_tx.send(cx.waker().clone()).unwrap();
                return Poll::Pending;
            }
            done.send(()).unwrap();
            Poll::Ready(())
        })));
        let waker = waker_rx.recv_timeout(HANG).expect("first poll");
        waker.wake();
        finished.recv_timeout(HANG).expect("woken");
    }

    #[test]
    fn a_datagram_wakes_the_driver_of_its_socket() {
        let thread = PollThread::start("utp-test-recv").unwrap();
        // Two sockets on the thread: the datagram goes to the second one.
        let (idle, _idle_udp, _) = task(&thread);
        idle.spawn(Box::pin(std::future::pending()));
        let (runtime, udp, addr) = task(&thread);
        let (first, first_poll) = mpsc::channel();
        let (done, finished) = mpsc::channel();
        runtime.spawn(Box::pin(std::future::poll_fn(move |cx| {
            let mut buf = [0; 64];
            match udp.poll_recv_from(cx, &mut buf) {
                Poll::Pending => {
                    let _ = first.send(());
                    Poll::Pending
                }
                Poll::Ready(received) => {
                    let (len, _) = received.unwrap();
                    done.send(buf[..len].to_vec()).unwrap();
                    Poll::Ready(())
                }
            }
        })));
        first_poll.recv_timeout(HANG).expect("first poll");
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"ping", addr).unwrap();
        assert_eq!(finished.recv_timeout(HANG).expect("woken"), b"ping");
    }
}
