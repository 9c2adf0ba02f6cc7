//! [`UtpSocket`].

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{ToSocketAddrs, lookup_host};
use utp_io::{ShutdownReport, Socket, SocketConfig, SocketStats};

use crate::UtpStream;
use crate::runtime::{TokioRuntime, TokioUdp};

/// A uTP socket: one UDP socket, one protocol endpoint for all its connections, and one
/// driver task on the current tokio runtime.
///
/// It both connects and accepts. Datagrams that are not uTP (a DHT or tracker sharing the
/// port) go to [`recv_from`](Self::recv_from), and [`send_to`](Self::send_to) sends raw
/// datagrams from the same port. Cloning is cheap and shares everything; when the last clone
/// is dropped the socket stops accepting, and the driver ends once every stream is closed.
/// The driver is a task of the runtime: before the program exits, await
/// [`shutdown_gracefully`](Self::shutdown_gracefully) (or [`UtpStream::close`] on each
/// stream) so it does not die with data still to deliver.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use utp_tokio::UtpSocket;
///
/// let server = UtpSocket::bind("127.0.0.1:0").await?;
/// let client = UtpSocket::bind("127.0.0.1:0").await?;
/// let addr = server.local_addr()?;
/// tokio::spawn(async move {
///     let (mut stream, _peer) = server.accept().await?;
///     let mut buf = Vec::new();
///     stream.read_to_end(&mut buf).await?; // until the client's FIN
///     stream.write_all(&buf).await?; // echo
///     stream.shutdown().await
/// });
///
/// let mut stream = client.connect(addr).await?;
/// stream.write_all(b"ping").await?;
/// stream.shutdown().await?; // half-close: we can still read
/// let mut reply = Vec::new();
/// stream.read_to_end(&mut reply).await?;
/// assert_eq!(reply, b"ping");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct UtpSocket {
    inner: Socket,
}

impl UtpSocket {
    /// Bind to `addr` with the default [`SocketConfig`]. `[::]` binds dual-stack: IPv4 peers
    /// work too.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::bind_with_config(addr, SocketConfig::default()).await
    }

    /// Bind to the first address `addr` resolves to that works.
    pub async fn bind_with_config(
        addr: impl ToSocketAddrs,
        config: SocketConfig,
    ) -> io::Result<Self> {
        let mut last = None;
        for addr in lookup_host(addr).await? {
            match utp_io::bind_udp(addr, &config) {
                Ok(socket) => return Self::from_std(socket, config),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")
        }))
    }

    /// Use a UDP socket the caller bound already. It is made non-blocking and its buffers are
    /// sized per `config`. Fails outside a tokio runtime (which needs IO and time enabled).
    pub fn from_std(socket: std::net::UdpSocket, config: SocketConfig) -> io::Result<Self> {
        let handle = current_runtime()?;
        socket.set_nonblocking(true)?;
        let socket = {
            let _enter = handle.enter();
            tokio::net::UdpSocket::from_std(socket)?
        };
        Self::start(handle, socket, config)
    }

    /// Use a tokio UDP socket the caller has already. Its buffers are sized per `config`.
    pub fn from_tokio(socket: tokio::net::UdpSocket, config: SocketConfig) -> io::Result<Self> {
        Self::start(current_runtime()?, socket, config)
    }

    fn start(
        handle: tokio::runtime::Handle,
        socket: tokio::net::UdpSocket,
        config: SocketConfig,
    ) -> io::Result<Self> {
        utp_io::configure_socket(SockRef::from(&socket), &config)?;
        let runtime = Arc::new(TokioRuntime(handle));
        let inner = Socket::new(runtime, Arc::new(TokioUdp::new(socket)?), config)?;
        Ok(Self { inner })
    }

    /// Open a connection to `remote`. Fails with `InvalidInput` for an unspecified or
    /// multicast address, `ConnectionRefused` if the peer answers with a reset, `TimedOut`
    /// if it never answers (after
    /// [`ConnectionConfig::max_syn_retransmits`](utp_proto::ConnectionConfig::max_syn_retransmits)).
    /// Cancel-safe: dropping the future abandons the attempt.
    pub async fn connect(&self, remote: SocketAddr) -> io::Result<UtpStream> {
        let stream = self.inner.connect(remote)?.await?;
        Ok(UtpStream::new(stream))
    }

    /// Wait for the next incoming connection and its peer's address. Fails with
    /// `NotConnected` once the socket is [`close`](Self::close)d. Cancel-safe.
    pub async fn accept(&self) -> io::Result<(UtpStream, SocketAddr)> {
        let (stream, remote) = poll_fn(|cx| self.inner.poll_accept(cx)).await?;
        Ok((UtpStream::new(stream), remote))
    }

    /// Receive the next datagram that was not uTP (DHT, tracker replies), truncated to
    /// `buf`'s length. Up to [`SocketConfig::datagram_queue`] wait here; more are dropped and
    /// counted in [`SocketStats::raw_dropped`]. Cancel-safe.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        poll_fn(|cx| self.inner.poll_recv_datagram(cx, buf)).await
    }

    /// Send a raw datagram from the uTP socket's port, in order with uTP traffic. Returns once
    /// it is queued for the driver (waiting while the queue is full).
    pub async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        poll_fn(|cx| self.inner.poll_send_datagram(cx, buf, target)).await
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.local_addr())
    }

    /// Counters of the endpoint and the driver.
    pub fn stats(&self) -> SocketStats {
        self.inner.stats()
    }

    /// Stop accepting: `accept`, `connect` and the raw datagram calls fail with
    /// `NotConnected` from now on, and incoming connections nobody accepted are reset. Open
    /// streams carry on.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Shut down gracefully before the program exits: stop accepting (as
    /// [`close`](Self::close)), close every connection gracefully (streams still held too;
    /// their later calls fail with `NotConnected`), and wait until all are closed and the
    /// driver task has ended. Connections still open after `timeout` are reset; the
    /// [`ShutdownReport`] counts those whose data may not all have arrived
    /// ([`cut`](ShutdownReport::cut)). Fails only if the driver had stopped with an error.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use std::time::Duration;
    /// let socket = utp_tokio::UtpSocket::bind("127.0.0.1:0").await?;
    /// // ... streams come and go ...
    /// let report = socket.shutdown_gracefully(Duration::from_secs(10)).await?;
    /// assert_eq!(report.cut, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown_gracefully(&self, timeout: Duration) -> io::Result<ShutdownReport> {
        self.inner.shutdown_gracefully(timeout).await
    }
}

fn current_runtime() -> io::Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current()
        .map_err(|_| io::Error::other("a uTP socket must be created within a tokio runtime"))
}
