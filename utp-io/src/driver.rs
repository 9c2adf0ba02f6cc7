//! The driver: one task per UDP socket that feeds the [`Endpoint`](utp_proto::Endpoint) and
//! drains its output. quinn's `EndpointDriver` and `ConnectionDriver` collapsed into one,
//! because one endpoint owns every connection (STYLE.md §6).

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tracing::{debug, trace};
use utp_proto::IcmpError;

use crate::runtime::{AsyncTimer, AsyncUdpSocket, RecvMeta};
use crate::shared::{Shared, State};

/// The future that drives one socket; spawned by [`Socket::new`](crate::Socket::new).
///
/// Each run reads the clock once, then:
/// 1. sends what an earlier run could not (the socket would have blocked);
/// 2. receives up to [`RECV_BUDGET`] datagrams, and up to [`ICMP_BUDGET`] errors the OS
///    reported about datagrams we sent (ICMP), without the lock; the last receive call's
///    datagrams stay where the socket put them, earlier calls' are copied out first;
/// 3. under the lock: feeds the batch to the endpoint (non-uTP datagrams go to the
///    application's queue) and the errors, runs the endpoint's timers if their deadline passed, resets
///    dropped streams whose graceful close outlived the linger time, drains the events
///    (waking blocked readers, writers, acceptors and connectors) and, if everything earlier
///    went out, collects up to [`SEND_BUDGET`] datagrams to send, encoded back to back;
/// 4. sends them without the lock, a run of them to one destination as one GSO send; if the socket would block, the rest is kept and the
///    driver waits for writability: nothing is dropped;
/// 5. re-arms its one timer only for an earlier deadline (or after it fired).
///
/// When a budget ran out it wakes itself after unlocking, so a busy socket cannot starve the
/// executor. Socket calls never happen under the lock, so streams are not held up by them.
pub(crate) struct Driver {
    shared: Arc<Shared>,
    socket: Arc<dyn AsyncUdpSocket>,
    timer: Pin<Box<dyn AsyncTimer>>,
    /// The deadline the timer is set to, and whether it has fired since.
    armed: Option<Instant>,
    fired: bool,
    /// Receive buffers: one, or as many as the socket fills per batched call.
    recv_bufs: Vec<Vec<u8>>,
    recv_meta: Vec<RecvMeta>,
    /// How many of `recv_meta` describe datagrams still in `recv_bufs` (the last receive
    /// call's, handled in place).
    held: usize,
    /// Datagrams of earlier receive calls in this run, back to back, and their senders and
    /// lengths (copied out before the buffers were reused).
    batch: Vec<u8>,
    batch_meta: Vec<(SocketAddr, usize)>,
    /// Datagrams received this run.
    received: usize,
    /// Errors the OS reported about datagrams we sent: the datagrams as it returned them,
    /// back to back, and their destinations, lengths and errors.
    icmp: Vec<u8>,
    icmp_meta: Vec<(SocketAddr, usize, IcmpError)>,
    /// Datagrams to send, back to back in `out_buf`: `out[sent..queued]` are pending.
    out_buf: Vec<u8>,
    out: Vec<Outgoing>,
    queued: usize,
    sent: usize,
    /// Results of socket calls made without the lock, applied at the next lock.
    io: IoResults,
    /// Readers and writers made ready under the lock, woken after it.
    wakes: Vec<std::task::Waker>,
    finished: bool,
    /// [`SocketConfig::dont_fragment`](crate::SocketConfig::dont_fragment): DF is on for
    /// the socket, and datagrams the core marks fragmentable need it turned off.
    dont_fragment: bool,
}

struct Outgoing {
    /// Where the datagram lies in `out_buf`.
    start: usize,
    len: usize,
    to: SocketAddr,
    /// Produced by the endpoint (not a raw datagram of the application).
    utp: bool,
    /// Send with DF ([`Transmit::dont_fragment`](utp_proto::Transmit::dont_fragment)).
    df: bool,
}

#[derive(Default)]
struct IoResults {
    received: u64,
    recv_errors: u64,
    sent: u64,
    would_block: u64,
    send_errors: u64,
    /// Sends that carried several datagrams (GSO).
    gso_sends: u64,
    /// Receive calls that returned data.
    recv_calls: u64,
    /// `EMSGSIZE` answers: (destination, length), for path MTU discovery.
    too_big: Vec<(SocketAddr, usize)>,
    fatal: Option<io::Error>,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        socket: Arc<dyn AsyncUdpSocket>,
        timer: Pin<Box<dyn AsyncTimer>>,
        dont_fragment: bool,
    ) -> Self {
        let recv_batch = socket.recv_batch_size().max(1);
        Self {
            shared,
            socket,
            timer,
            armed: None,
            fired: false,
            recv_bufs: (0..recv_batch).map(|_| vec![0; MAX_DATAGRAM]).collect(),
            recv_meta: vec![RecvMeta::default(); recv_batch],
            held: 0,
            batch: Vec::new(),
            batch_meta: Vec::new(),
            received: 0,
            icmp: Vec::new(),
            icmp_meta: Vec::with_capacity(ICMP_BUDGET),
            out_buf: Vec::new(),
            out: Vec::with_capacity(SEND_BUDGET),
            queued: 0,
            sent: 0,
            io: IoResults::default(),
            wakes: Vec::new(),
            finished: false,
            dont_fragment,
        }
    }

    /// Receive up to the budget; returns whether the budget ran out.
    fn recv(&mut self, cx: &mut Context<'_>) -> bool {
        self.batch.clear();
        self.batch_meta.clear();
        self.held = 0;
        self.received = 0;
        while self.received < RECV_BUDGET {
            // Most runs need one call (GRO fills the buffers); when another follows, the
            // datagrams of this one are copied out of the buffers it reuses.
            self.spill();
            let mut bufs: Vec<IoSliceMut<'_>> = self
                .recv_bufs
                .iter_mut()
                .map(|b| IoSliceMut::new(b))
                .collect();
            match self
                .socket
                .poll_recv_batch(cx, &mut bufs, &mut self.recv_meta)
            {
                Poll::Ready(Ok(n)) => {
                    self.io.recv_calls += 1;
                    self.held = n;
                    self.received += self.recv_meta[..n]
                        .iter()
                        .map(datagram_count)
                        .sum::<usize>();
                }
                Poll::Ready(Err(e)) if is_transient(&e) => {
                    // ICMP errors reported on the socket and the like: nothing to do with
                    // the datagrams still queued behind them.
                    trace!(error = %e, "ignoring receive error");
                    self.io.recv_errors += 1;
                }
                Poll::Ready(Err(e)) => {
                    self.io.fatal = Some(e);
                    return false;
                }
                Poll::Pending => break,
            }
        }
        let full = self.received >= RECV_BUDGET;
        full | self.recv_icmp(cx)
    }

    /// Take up to [`ICMP_BUDGET`] errors the OS reported; returns whether the budget ran
    /// out. A receive buffer the last call left free serves as scratch space.
    fn recv_icmp(&mut self, cx: &mut Context<'_>) -> bool {
        self.icmp.clear();
        self.icmp_meta.clear();
        if self.held == self.recv_bufs.len() {
            self.spill();
        }
        let buf = &mut self.recv_bufs[self.held];
        while self.icmp_meta.len() < ICMP_BUDGET {
            match self.socket.poll_recv_icmp(cx, buf) {
                Poll::Ready(Ok((len, destination, error))) => {
                    // The uTP header names the connection; the length tells path MTU
                    // discovery how big the datagram was.
                    let len = len.min(buf.len());
                    trace!(%destination, len, ?error, "ICMP error");
                    self.icmp.extend_from_slice(&buf[..len]);
                    self.icmp_meta.push((destination, len, error));
                }
                Poll::Ready(Err(e)) => {
                    debug!(error = %e, "cannot read the socket's error queue");
                    return false;
                }
                Poll::Pending => return false,
            }
        }
        true
    }

    /// Copy the datagrams still in the receive buffers into the batch, freeing the buffers.
    fn spill(&mut self) {
        let (batch, batch_meta) = (&mut self.batch, &mut self.batch_meta);
        for_each_datagram(
            &self.recv_meta[..self.held],
            &self.recv_bufs,
            |from, datagram| {
                batch.extend_from_slice(datagram);
                batch_meta.push((from, datagram.len()));
            },
        );
        self.held = 0;
    }

    /// Send the pending datagrams, stopping where the socket would block.
    fn flush(&mut self, cx: &mut Context<'_>) {
        let max_segments = self.socket.max_send_segments();
        while self.sent < self.queued {
            if max_segments > 1 {
                let (n, segment) = self.gso_run(max_segments);
                if n > 1 {
                    // Collected back to back: the run is one slice of `out_buf`.
                    let (first, last) = (&self.out[self.sent], &self.out[self.sent + n - 1]);
                    let run = &self.out_buf[first.start..last.start + last.len];
                    match self.socket.poll_send_segments(cx, run, segment, first.to) {
                        Poll::Ready(Ok(())) => {
                            self.io.sent += n as u64;
                            self.io.gso_sends += 1;
                            self.sent += n;
                            continue;
                        }
                        Poll::Ready(Err(e)) => {
                            // Sent one by one below, which reports each datagram's error
                            // (EMSGSIZE for path MTU discovery) as without GSO.
                            debug!(to = %first.to, n, segment, error = %e, "GSO send failed");
                        }
                        Poll::Pending => {
                            self.io.would_block += 1;
                            return;
                        }
                    }
                }
            }
            let d = &self.out[self.sent];
            let datagram = &self.out_buf[d.start..d.start + d.len];
            let sent = if self.dont_fragment && !d.df {
                send_fragmentable(&*self.socket, cx, datagram, d.to)
            } else {
                self.socket.poll_send_to(cx, datagram, d.to)
            };
            match sent {
                Poll::Ready(Ok(_)) => self.io.sent += 1,
                Poll::Ready(Err(e)) => {
                    // The OS will never take this one (unreachable, too big): uTP
                    // retransmits what matters, so count it and go on.
                    debug!(to = %d.to, error = %e, "send failed");
                    self.io.send_errors += 1;
                    if d.utp && is_too_big(&e) {
                        self.io.too_big.push((d.to, d.len));
                    }
                }
                Poll::Pending => {
                    // Keep the datagram; the socket wakes us when it is writable.
                    self.io.would_block += 1;
                    return;
                }
            }
            self.sent += 1;
        }
        self.sent = 0;
        self.queued = 0;
        self.out.clear();
        self.out_buf.clear();
    }

    /// The longest run of pending datagrams from `out[sent]` on that one GSO send can carry:
    /// same destination, same size except a shorter last one, don't-fragment as the socket
    /// has it, at most `max` of them and 65,507 bytes. Returns its length and segment size.
    fn gso_run(&self, max: usize) -> (usize, usize) {
        let first = &self.out[self.sent];
        let segment = first.len;
        let plain = |d: &Outgoing| d.df || !self.dont_fragment;
        if segment == 0 || !plain(first) {
            return (1, segment);
        }
        let max = max.min(MAX_GSO_BYTES / segment);
        let mut n = 1;
        for d in &self.out[self.sent + 1..self.queued] {
            if n >= max || d.to != first.to || !plain(d) || d.len > segment || d.len == 0 {
                break;
            }
            n += 1;
            if d.len < segment {
                break;
            }
        }
        (n, segment)
    }

    /// Under the lock: account for the socket calls made without it.
    fn apply_io(&mut self, state: &mut State, now: Instant) {
        let io = &mut self.io;
        state.stats.datagrams_received += io.received;
        state.stats.recv_errors += io.recv_errors;
        state.stats.datagrams_sent += io.sent;
        state.stats.gso_sends += io.gso_sends;
        state.stats.recv_calls += io.recv_calls;
        (io.gso_sends, io.recv_calls) = (0, 0);
        state.stats.send_would_block += io.would_block;
        state.stats.send_errors += io.send_errors;
        (
            io.received,
            io.recv_errors,
            io.sent,
            io.would_block,
            io.send_errors,
        ) = (0, 0, 0, 0, 0);
        for (to, len) in io.too_big.drain(..) {
            // Path MTU discovery: the connections to `to` lower their ceiling and resend.
            state.endpoint.handle_too_big(now, to, len);
        }
        if let Some(e) = io.fatal.take() {
            state.fail(e.kind(), format!("uTP socket receive failed: {e}"));
        }
    }

    /// Under the lock: feed the received datagrams to the endpoint, in arrival order.
    fn handle_batch(&mut self, state: &mut State, now: Instant) {
        let mut deliver = |from: SocketAddr, datagram: &[u8]| {
            if !state.endpoint.handle_datagram(now, from, datagram) {
                trace!(%from, len = datagram.len(), "non-uTP datagram");
                state.push_raw(from, datagram);
            }
        };
        let mut offset = 0;
        for &(from, len) in &self.batch_meta {
            deliver(from, &self.batch[offset..offset + len]);
            offset += len;
        }
        for_each_datagram(&self.recv_meta[..self.held], &self.recv_bufs, deliver);
        self.held = 0;
        self.io.received += self.received as u64;
        self.received = 0;
        let mut offset = 0;
        for &(destination, len, error) in &self.icmp_meta {
            let original = &self.icmp[offset..offset + len];
            offset += len;
            if original.is_empty() {
                // A local error (EMSGSIZE) quotes no datagram; the send that failed
                // reported it to path MTU discovery already.
                continue;
            }
            state
                .endpoint
                .handle_icmp_error(now, destination, original, error);
        }
    }

    /// Under the lock: collect datagrams to send, raw ones from the application first.
    /// Returns whether the budget ran out.
    fn collect(&mut self, state: &mut State, now: Instant) -> bool {
        debug_assert_eq!(self.queued, 0, "collect only once the last batch went out");
        if !state.raw_out.is_empty() {
            for w in state.raw_out_wakers.drain(..) {
                w.wake();
            }
        }
        while self.queued < SEND_BUDGET {
            let start = self.out_buf.len();
            let d = if let Some((to, datagram)) = state.raw_out.pop_front() {
                self.out_buf.extend_from_slice(&datagram);
                state.stats.raw_sent += 1;
                Outgoing {
                    start,
                    len: datagram.len(),
                    to,
                    utp: false,
                    df: true,
                }
            } else if let Some(t) = state.endpoint.poll_transmit_append(now, &mut self.out_buf) {
                Outgoing {
                    start,
                    len: t.len,
                    to: t.destination,
                    utp: true,
                    df: t.dont_fragment,
                }
            } else {
                return false;
            };
            self.out.push(d);
            self.queued += 1;
        }
        true
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let shared = this.shared.clone();
        // The clock is read once per wake-up; every input of this run shares it.
        let now = shared.runtime.now();

        this.flush(cx);
        let mut more = this.recv(cx);

        let mut state = shared.lock();
        state.register_driver(cx.waker());
        this.apply_io(&mut state, now);
        if state.fatal.is_some() {
            this.finished = true;
            return Poll::Ready(());
        }
        this.handle_batch(&mut state, now);
        if state.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            state.endpoint.handle_timeout(now);
        }
        state.expire_lingering(now);
        state.process_events(now);
        if this.queued == 0 {
            more |= this.collect(&mut state, now);
            // Transmitting can free connections (a reset sent) and so emit events.
            state.process_events(now);
        }
        // Nothing can use the socket any more; the driver ends once what it collected (the
        // final ACKs of the last connections) has gone out.
        let finished = state.is_finished();
        state.take_wakes(&mut this.wakes);
        if finished && this.queued == 0 {
            drop(state);
            this.wake_ready();
            return this.finish();
        }
        let deadline = match (state.endpoint.poll_timeout(), state.lingering.first()) {
            (Some(a), Some(&(b, _))) => Some(a.min(b)),
            (a, b) => a.or(b.map(|&(t, _)| t)),
        };
        drop(state);
        // Readers and writers run while this sends: a writer refills the send buffer, which
        // the window just collected from has no room for, so it does not wake us again.
        this.wake_ready();

        this.flush(cx);
        if finished && this.queued == 0 {
            // Those were the last datagrams: nothing will wake the driver again.
            return this.finish();
        }
        if !this.io.too_big.is_empty() {
            more = true; // the endpoint hears about it at the next run
        }

        if let Some(mut deadline) = deadline {
            // Re-armed only for an earlier deadline: a later one (the retransmission timer
            // moves on with every ACK) keeps the armed timer, which then fires early once
            // and re-arms. Re-arming costs: async-io wakes its reactor thread for each (#17).
            if this.fired || this.armed.is_none_or(|armed| deadline < armed) {
                if deadline <= now {
                    // A deadline the timers just ran should have moved; never spin on it.
                    deadline = now + Duration::from_millis(1);
                }
                this.timer.as_mut().reset(deadline);
                this.armed = Some(deadline);
                this.fired = false;
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                this.fired = true;
                more = true;
            }
        } else {
            this.armed = None;
        }
        if more {
            // Yield to the executor, then carry on (after unlocking, so streams can run).
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl Driver {
    /// Wake the readers and writers made ready under the lock (called without it).
    fn wake_ready(&mut self) {
        for w in self.wakes.drain(..) {
            w.wake();
        }
    }

    fn finish(&mut self) -> Poll<()> {
        debug!("uTP driver finished");
        self.finished = true;
        Poll::Ready(())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.finished {
            // The runtime dropped the task (shutting down): nothing will make progress.
            self.shared.lock().fail(
                io::ErrorKind::NotConnected,
                "uTP driver task stopped".into(),
            );
        }
    }
}

/// Send one datagram without DF on a socket that has DF on: Linux only has the per-socket
/// option, so turn it off around this one send (libtorrent does the same, PROTOCOL §6.1).
/// If the socket cannot toggle it, the datagram goes out with DF.
fn send_fragmentable(
    socket: &dyn AsyncUdpSocket,
    cx: &mut Context<'_>,
    buf: &[u8],
    to: SocketAddr,
) -> Poll<io::Result<usize>> {
    if let Err(e) = socket.set_dont_fragment(false) {
        debug!(error = %e, "cannot clear don't-fragment; sending with it");
        return socket.poll_send_to(cx, buf, to);
    }
    trace!(%to, len = buf.len(), "sending without don't-fragment");
    let sent = socket.poll_send_to(cx, buf, to);
    if let Err(e) = socket.set_dont_fragment(true) {
        // Later datagrams may be fragmented instead of failing with EMSGSIZE: path MTU
        // discovery then finds a ceiling that is too high, nothing worse.
        debug!(error = %e, "cannot set don't-fragment again");
    }
    sent
}

/// Errors a UDP receive reports that concern one earlier datagram, not the socket.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::TimedOut
    ) || is_too_big(e)
}

/// `EMSGSIZE`: the datagram exceeds the path MTU (with don't-fragment set) or UDP's limit.
/// Call `f` with each datagram of one receive call, in order: each buffer holds one, or
/// with GRO several of one sender at a stride (an empty datagram counts too).
fn for_each_datagram(meta: &[RecvMeta], bufs: &[Vec<u8>], mut f: impl FnMut(SocketAddr, &[u8])) {
    for (m, buf) in meta.iter().zip(bufs) {
        let data = &buf[..m.len];
        if m.stride == 0 || m.stride >= m.len {
            f(m.from, data);
        } else {
            for datagram in data.chunks(m.stride) {
                f(m.from, datagram);
            }
        }
    }
}

/// How many datagrams [`for_each_datagram`] finds in one buffer.
fn datagram_count(m: &RecvMeta) -> usize {
    if m.stride == 0 || m.stride >= m.len {
        1
    } else {
        m.len.div_ceil(m.stride)
    }
}

fn is_too_big(e: &io::Error) -> bool {
    #[cfg(unix)]
    const EMSGSIZE: i32 = rustix::io::Errno::MSGSIZE.raw_os_error();
    #[cfg(windows)]
    const EMSGSIZE: i32 = 10040; // WSAEMSGSIZE
    #[cfg(not(any(unix, windows)))]
    const EMSGSIZE: i32 = -1;
    e.raw_os_error() == Some(EMSGSIZE)
}

/// Datagrams received per run before yielding (quinn's `IO_LOOP_BOUND` is 160; ours counts
/// datagrams rather than GRO batches).
pub(crate) const RECV_BUDGET: usize = 128;
/// ICMP errors taken per run before yielding: they come at most one per datagram sent.
pub(crate) const ICMP_BUDGET: usize = 16;
/// Datagrams collected from the endpoint per run before yielding.
pub(crate) const SEND_BUDGET: usize = 128;
/// Largest GSO send: one UDP datagram's worth (IPv4), e.g. 45 packets of 1452 bytes.
const MAX_GSO_BYTES: usize = 65_507;
/// Largest UDP payload (IPv4); uTP packets are far smaller, other datagrams may not be.
const MAX_DATAGRAM: usize = 65_536;
