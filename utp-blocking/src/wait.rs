//! Blocking on `utp_io`'s poll functions: the calling thread parks until the driver wakes
//! it, or until its timeout.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Unparks the thread that waits.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Poll until ready, parking in between. With a timeout, gives up with
/// [`timeout_error`] once it has passed. Spurious unparks only cost another poll.
pub(crate) fn wait<T>(
    timeout: Option<Duration>,
    mut poll: impl FnMut(&mut Context<'_>) -> Poll<io::Result<T>>,
) -> io::Result<T> {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if let Poll::Ready(result) = poll(&mut cx) {
            return result;
        }
        match deadline {
            None => thread::park(),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(timeout_error());
                }
                thread::park_timeout(deadline - now);
            }
        }
    }
}

/// What std's sockets report when a read or write timeout passes: `EAGAIN`, which is
/// `WouldBlock`, on Unix; `WSAETIMEDOUT`, which is `TimedOut`, on Windows.
pub(crate) fn timeout_error() -> io::Error {
    let kind = if cfg!(windows) {
        io::ErrorKind::TimedOut
    } else {
        io::ErrorKind::WouldBlock
    };
    io::Error::new(kind, "uTP operation timed out")
}

/// std's check: a zero timeout is an error, not "never".
pub(crate) fn check_timeout(timeout: Option<Duration>) -> io::Result<()> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        ));
    }
    Ok(())
}
