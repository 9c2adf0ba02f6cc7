//! `utp-async-std` under async-std's executor and under smol's.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use utp_async_std::{UtpSocket, UtpStream};
use utp_io::{SocketConfig, SocketStats};
use utp_proto::ConnectionStats;

use crate::{Adapter, Task};

/// The executor half of an adapter, so one implementation serves both executors.
trait Executor: 'static {
    const NAME: &'static str;
    fn block_on<F: Future>(future: F) -> F::Output;
    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T>;
}

/// `utp-async-std` under `async_std::task::block_on`, tasks on `async_std::task::spawn`.
#[derive(Debug)]
pub struct AsyncStd;

/// `utp-async-std` under `smol::block_on`, tasks on `smol::spawn`.
#[derive(Debug)]
pub struct Smol;

impl Executor for AsyncStd {
    const NAME: &'static str = "async-std";

    fn block_on<F: Future>(future: F) -> F::Output {
        async_std::task::block_on(future)
    }

    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
        Box::pin(async_std::task::spawn(future))
    }
}

impl Executor for Smol {
    const NAME: &'static str = "smol";

    fn block_on<F: Future>(future: F) -> F::Output {
        smol::block_on(future)
    }

    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
        Box::pin(smol::spawn(future))
    }
}

impl<E: Executor> Adapter for E {
    const NAME: &'static str = E::NAME;
    type Socket = UtpSocket;
    type Stream = UtpStream;
    type ReadHalf = ReadHalf<UtpStream>;
    type WriteHalf = WriteHalf<UtpStream>;

    fn block_on<F: Future>(future: F) -> F::Output {
        E::block_on(future)
    }

    fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
        E::spawn(future)
    }

    async fn sleep(duration: Duration) {
        async_io::Timer::after(duration).await;
    }

    super::forward_to_the_api!(await);

    /// `futures_util::io::split`, which the crate docs promise works.
    fn split(stream: UtpStream) -> (ReadHalf<UtpStream>, WriteHalf<UtpStream>) {
        stream.split()
    }

    async fn close_stream(stream: &UtpStream) -> io::Result<()> {
        stream.close_gracefully().await
    }
}

super::async_io_traits!(AsyncReadExt, AsyncWriteExt, close;
    read: UtpStream, ReadHalf<UtpStream>; write: UtpStream, WriteHalf<UtpStream>);
