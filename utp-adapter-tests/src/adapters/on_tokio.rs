//! `utp-tokio` on a two-worker multi-threaded runtime.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_io::{SocketConfig, SocketStats};
use utp_proto::ConnectionStats;
use utp_tokio::{OwnedReadHalf, OwnedWriteHalf, UtpSocket, UtpStream};

use crate::{Adapter, Task};

/// `utp-tokio`; each test gets a fresh two-worker runtime.
#[derive(Debug)]
pub struct Tokio;

impl Adapter for Tokio {
    const NAME: &'static str = "tokio";
    type Socket = UtpSocket;
    type Stream = UtpStream;
    type ReadHalf = OwnedReadHalf;
    type WriteHalf = OwnedWriteHalf;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(future)
    }

    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
        let task = tokio::spawn(future);
        Box::pin(async move { task.await.expect("the runtime cancelled a task") })
    }

    async fn sleep(duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    super::forward_to_the_api!(await);

    fn split(stream: UtpStream) -> (OwnedReadHalf, OwnedWriteHalf) {
        stream.into_split()
    }

    async fn close_stream(stream: &UtpStream) -> io::Result<()> {
        stream.close().await
    }
}

super::async_io_traits!(AsyncReadExt, AsyncWriteExt, shutdown;
    read: UtpStream, OwnedReadHalf; write: UtpStream, OwnedWriteHalf);
