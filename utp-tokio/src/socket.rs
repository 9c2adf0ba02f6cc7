//! [`UtpSocket`].

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{ToSocketAddrs, lookup_host};
use utp_io::{ShutdownReport, Socket, SocketConfig};
use utp_proto::ConnectionConfig;

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
    ///
    /// Fails outside a tokio runtime, and on one built without IO or time, which the
    /// driver task needs (tokio itself would panic in the task):
    ///
    /// ```
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    /// let err = rt.block_on(utp_tokio::UtpSocket::bind("127.0.0.1:0")).unwrap_err();
    /// assert!(err.to_string().contains("enable_time"), "{err}");
    /// # Ok::<(), std::io::Error>(())
    /// ```
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
                // `bind_udp` sized the buffers already.
                Ok(socket) => return Self::adopt(socket, config, false),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")
        }))
    }

    /// Use a UDP socket the caller bound already. It is made non-blocking and its buffers are
    /// sized per `config`. Fails outside a tokio runtime, and on a runtime built without IO
    /// or time (`enable_io`, `enable_time`, or `enable_all`), which the driver needs.
    pub fn from_std(socket: std::net::UdpSocket, config: SocketConfig) -> io::Result<Self> {
        Self::adopt(socket, config, true)
    }

    /// [`from_std`](Self::from_std), sizing the buffers only if `configure` (once per
    /// socket, so their log lines appear once).
    fn adopt(
        socket: std::net::UdpSocket,
        config: SocketConfig,
        configure: bool,
    ) -> io::Result<Self> {
        let handle = current_runtime()?;
        socket.set_nonblocking(true)?;
        let socket = {
            let _enter = handle.enter();
            // tokio panics without its IO driver; say so instead.
            catch_unwind(AssertUnwindSafe(|| tokio::net::UdpSocket::from_std(socket)))
                .map_err(|_| missing_driver("IO", "enable_io"))??
        };
        Self::start(handle, socket, config, configure)
    }

    /// Use a tokio UDP socket the caller has already. Its buffers are sized per `config`.
    pub fn from_tokio(socket: tokio::net::UdpSocket, config: SocketConfig) -> io::Result<Self> {
        Self::start(current_runtime()?, socket, config, true)
    }

    fn start(
        handle: tokio::runtime::Handle,
        socket: tokio::net::UdpSocket,
        config: SocketConfig,
        configure: bool,
    ) -> io::Result<Self> {
        if configure {
            utp_io::configure_socket(SockRef::from(&socket), &config)?;
        }
        let runtime = Arc::new(TokioRuntime(handle));
        let inner = Socket::new(runtime, Arc::new(TokioUdp::new(socket)?), config)?;
        Ok(Self { inner })
    }

    /// Open a connection to `remote`: a `SocketAddr`, `"host:port"`, `(ip, port)`, ... —
    /// anything [`tokio::net::ToSocketAddrs`] takes, like `TcpStream::connect`; names are
    /// resolved with [`lookup_host`] and each address is tried in turn until one connects
    /// (the last error otherwise). Fails with `InvalidInput` for an unspecified or multicast
    /// address, `ConnectionRefused` if the peer answers with a reset (or, on Linux, its
    /// port is closed), `TimedOut` if it never answers (after
    /// [`ConnectionConfig::max_syn_retransmits`](utp_proto::ConnectionConfig::max_syn_retransmits)).
    /// Cancel-safe: dropping the future abandons the attempt.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let server = utp_tokio::UtpSocket::bind("127.0.0.1:0").await?;
    /// let client = utp_tokio::UtpSocket::bind("127.0.0.1:0").await?;
    /// let port = server.local_addr()?.port();
    /// let stream = client.connect(("localhost", port)).await?;
    /// assert_eq!(stream.peer_addr()?.port(), port);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(&self, remote: impl ToSocketAddrs) -> io::Result<UtpStream> {
        self.connect_resolved(remote, None).await
    }

    /// [`connect`](Self::connect) with this connection's own settings instead of the
    /// socket's defaults ([`SocketConfig::connection_mut`]): Nagle, buffers, timeouts,
    /// congestion control.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use utp_tokio::{ConnectionConfig, UtpSocket};
    ///
    /// let server = UtpSocket::bind("127.0.0.1:0").await?;
    /// let client = UtpSocket::bind("127.0.0.1:0").await?;
    /// let mut config = ConnectionConfig::default();
    /// config.nagle(false).send_buffer(4 << 20);
    /// let stream = client.connect_with(server.local_addr()?, config).await?;
    /// # drop(stream);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with(
        &self,
        remote: impl ToSocketAddrs,
        config: ConnectionConfig,
    ) -> io::Result<UtpStream> {
        self.connect_resolved(remote, Some(config)).await
    }

    async fn connect_resolved(
        &self,
        remote: impl ToSocketAddrs,
        config: Option<ConnectionConfig>,
    ) -> io::Result<UtpStream> {
        let mut last = None;
        for addr in lookup_host(remote).await? {
            let connecting = match &config {
                None => self.inner.connect(addr),
                Some(config) => self.inner.connect_with(addr, config.clone()),
            };
            match async { connecting?.await }.await {
                Ok(stream) => return Ok(UtpStream::new(stream)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            utp_io::Error::InvalidArgument("no address to connect to".into()).into()
        }))
    }

    /// Wait for the next incoming connection and its peer's address. Fails with
    /// `NotConnected` once the socket is [`close`](Self::close)d. Cancel-safe.
    pub async fn accept(&self) -> io::Result<(UtpStream, SocketAddr)> {
        let (stream, remote) = poll_fn(|cx| self.inner.poll_accept(cx)).await?;
        Ok((UtpStream::new(stream), remote))
    }

    /// Receive the next datagram that was not uTP (DHT, tracker replies), truncated to
    /// `buf`'s length. Up to [`SocketConfig::datagram_queue`] wait here; more are dropped and
    /// counted in [`SocketStats::raw_dropped`](crate::SocketStats::raw_dropped). Cancel-safe.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        poll_fn(|cx| self.inner.poll_recv_datagram(cx, buf)).await
    }

    /// Send a raw datagram from the uTP socket's port, in order with uTP traffic. Returns once
    /// it is queued for the driver (waiting while the queue is full).
    pub async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        poll_fn(|cx| self.inner.poll_send_datagram(cx, buf, target)).await
    }

    utp_io::__socket_accessors!(inner);

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

/// The current runtime, if it has the time driver the socket's driver task needs.
fn current_runtime() -> io::Result<tokio::runtime::Handle> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| {
        utp_io::Error::Runtime("a uTP socket must be created within a tokio runtime".into())
    })?;
    // tokio has no way to ask whether timers are enabled: a timer's first poll panics
    // without them (tokio prints the panic message once). The driver task would panic the
    // same way later, leaving every call on the socket hanging.
    let has_time = {
        let _enter = handle.enter();
        catch_unwind(AssertUnwindSafe(|| {
            let mut sleep = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
            let _ = sleep
                .as_mut()
                .poll(&mut Context::from_waker(std::task::Waker::noop()));
        }))
        .is_ok()
    };
    if !has_time {
        return Err(missing_driver("time", "enable_time"));
    }
    Ok(handle)
}

fn missing_driver(what: &str, method: &str) -> io::Error {
    utp_io::Error::Runtime(format!(
        "a uTP socket needs a tokio runtime with {what} enabled: call `{method}` (or \
         `enable_all`) on the runtime builder"
    ))
    .into()
}
