//! The driver: one task per UDP socket that feeds the [`Endpoint`](utp_proto::Endpoint) and
//! drains its output. quinn's `EndpointDriver` and `ConnectionDriver` collapsed into one,
//! because one endpoint owns every connection (STYLE.md §6).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tracing::{debug, trace};
use utp_proto::Transmit;

use crate::runtime::{AsyncTimer, AsyncUdpSocket};
use crate::shared::{Shared, State};

/// The future that drives one socket; spawned by [`Socket::new`](crate::Socket::new).
///
/// Each run, under the lock, it reads the clock once, then:
/// 1. receives up to [`RECV_BUDGET`] datagrams and feeds them to the endpoint (non-uTP ones
///    go to the application's queue);
/// 2. runs the endpoint's timers if their deadline passed, and resets dropped streams whose
///    graceful close outlived the linger time;
/// 3. drains the events, waking blocked readers, writers, acceptors and connectors;
/// 4. sends up to [`SEND_BUDGET`] datagrams; if the socket would block, the datagram is kept
///    and the driver waits for writability;
/// 5. re-arms its one timer, outside the lock, only if the deadline changed.
///
/// When a budget ran out it wakes itself after unlocking, so a busy socket cannot starve the
/// executor.
pub(crate) struct Driver {
    shared: Arc<Shared>,
    socket: Arc<dyn AsyncUdpSocket>,
    timer: Pin<Box<dyn AsyncTimer>>,
    /// The deadline the timer is set to, and whether it has fired since.
    armed: Option<Instant>,
    fired: bool,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    /// A datagram the socket would not take yet.
    buffered: Option<Buffered>,
    finished: bool,
}

enum Buffered {
    /// A uTP datagram in `send_buf`.
    Utp(Transmit),
    /// A raw datagram from the application.
    Raw(SocketAddr, Vec<u8>),
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        socket: Arc<dyn AsyncUdpSocket>,
        timer: Pin<Box<dyn AsyncTimer>>,
    ) -> Self {
        Self {
            shared,
            socket,
            timer,
            armed: None,
            fired: false,
            recv_buf: vec![0; MAX_DATAGRAM],
            send_buf: Vec::with_capacity(MAX_DATAGRAM),
            buffered: None,
            finished: false,
        }
    }

    /// Receive up to the budget; returns whether the budget ran out.
    fn recv(&mut self, cx: &mut Context<'_>, state: &mut State, now: Instant) -> bool {
        for _ in 0..RECV_BUDGET {
            match self.socket.poll_recv_from(cx, &mut self.recv_buf) {
                Poll::Ready(Ok((len, from))) => {
                    state.stats.datagrams_received += 1;
                    let datagram = &self.recv_buf[..len];
                    if !state.endpoint.handle_datagram(now, from, datagram) {
                        trace!(%from, len, "non-uTP datagram");
                        state.push_raw(from, datagram);
                    }
                }
                Poll::Ready(Err(e)) if is_transient(&e) => {
                    // ICMP errors reported on the socket and the like: nothing to do with
                    // the datagrams still queued behind them.
                    trace!(error = %e, "ignoring receive error");
                    state.stats.recv_errors += 1;
                }
                Poll::Ready(Err(e)) => {
                    state.fail(e.kind(), format!("uTP socket receive failed: {e}"));
                    return false;
                }
                Poll::Pending => return false,
            }
        }
        true
    }

    /// Send up to the budget; returns whether the budget ran out.
    fn transmit(&mut self, cx: &mut Context<'_>, state: &mut State, now: Instant) -> bool {
        for _ in 0..SEND_BUDGET {
            if self.buffered.is_none() {
                if let Some((to, datagram)) = state.raw_out.pop_front() {
                    for w in state.raw_out_wakers.drain(..) {
                        w.wake();
                    }
                    state.stats.raw_sent += 1;
                    self.buffered = Some(Buffered::Raw(to, datagram));
                } else if let Some(t) = state.endpoint.poll_transmit(now, &mut self.send_buf) {
                    self.buffered = Some(Buffered::Utp(t));
                } else {
                    return false;
                }
            }
            let (datagram, to) = match &self.buffered {
                Some(Buffered::Utp(t)) => (&self.send_buf[..t.len], t.destination),
                Some(Buffered::Raw(to, d)) => (&d[..], *to),
                None => return false,
            };
            match self.socket.poll_send_to(cx, datagram, to) {
                Poll::Ready(Ok(_)) => state.stats.datagrams_sent += 1,
                Poll::Ready(Err(e)) => {
                    // The OS will never take this one (unreachable, too big): uTP
                    // retransmits what matters, so count it and go on.
                    debug!(%to, error = %e, "send failed");
                    state.stats.send_errors += 1;
                }
                Poll::Pending => {
                    // Keep the datagram; the socket wakes us when it is writable.
                    state.stats.send_would_block += 1;
                    return false;
                }
            }
            self.buffered = None;
        }
        true
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let shared = this.shared.clone();
        let mut state = shared.lock();
        state.register_driver(cx.waker());
        if state.fatal.is_some() {
            this.finished = true;
            return Poll::Ready(());
        }
        // The clock is read once per wake-up; every input of this run shares it.
        let now = shared.runtime.now();

        let mut more = this.recv(cx, &mut state, now);
        if state.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            state.endpoint.handle_timeout(now);
        }
        state.expire_lingering(now);
        state.process_events(now);
        more |= this.transmit(cx, &mut state, now);
        // Transmitting can free connections (a reset sent) and so emit events.
        state.process_events(now);

        if state.fatal.is_some() || (state.is_finished() && this.buffered.is_none()) {
            debug!("uTP driver finished");
            this.finished = true;
            return Poll::Ready(());
        }
        let deadline = match (state.endpoint.poll_timeout(), state.lingering.first()) {
            (Some(a), Some(&(b, _))) => Some(a.min(b)),
            (a, b) => a.or(b.map(|&(t, _)| t)),
        };
        drop(state);

        if let Some(mut deadline) = deadline {
            if this.armed != Some(deadline) || this.fired {
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
            // Yield to the executor, then carry on: after unlocking, so the streams can run.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
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
    )
}

/// Datagrams received per run before yielding (quinn's `IO_LOOP_BOUND` is 160; ours is per
/// datagram rather than per GRO batch).
pub(crate) const RECV_BUDGET: usize = 128;
/// Datagrams sent per run before yielding.
pub(crate) const SEND_BUDGET: usize = 128;
/// Largest UDP payload (IPv4); uTP packets are far smaller, other datagrams may not be.
const MAX_DATAGRAM: usize = 65_536;
