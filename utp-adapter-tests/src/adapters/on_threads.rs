//! `utp-blocking` on threads: every operation is a future that completes on the calling
//! thread, and `spawn` starts a thread.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::panic::resume_unwind;
use std::thread;
use std::time::Duration;

use utp_blocking::{UtpSocket, UtpStream};
use utp_io::{SocketConfig, SocketStats};
use utp_proto::ConnectionStats;

use crate::{Adapter, Reader, Task, Writer, park_block_on};

/// `utp-blocking`; "tasks" are threads.
#[derive(Debug)]
pub struct Blocking;

impl Adapter for Blocking {
    const NAME: &'static str = "blocking";
    type Socket = UtpSocket;
    type Stream = UtpStream;
    type ReadHalf = UtpStream;
    type WriteHalf = UtpStream;

    fn block_on<F: Future>(future: F) -> F::Output {
        park_block_on(future)
    }

    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
        let thread = thread::spawn(move || park_block_on(future));
        // Joining blocks the awaiting thread, which has nothing else to run.
        Box::pin(async move { thread.join().unwrap_or_else(|panic| resume_unwind(panic)) })
    }

    async fn sleep(duration: Duration) {
        thread::sleep(duration);
    }

    super::forward_to_the_api!();

    /// A reader and a writer on two threads: `try_clone`.
    fn split(stream: UtpStream) -> (UtpStream, UtpStream) {
        let reader = stream.try_clone().expect("try_clone never fails");
        (reader, stream)
    }

    fn set_read_timeout(stream: &UtpStream, timeout: Option<Duration>) -> bool {
        stream
            .set_read_timeout(timeout)
            .expect("a non-zero timeout");
        true
    }

    async fn close_stream(stream: &UtpStream) -> io::Result<()> {
        stream.close()
    }
}

impl Reader for UtpStream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }
}

impl Writer for UtpStream {
    async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(self, buf)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        UtpStream::shutdown(self, Shutdown::Write)
    }
}
