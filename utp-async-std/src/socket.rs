//! [`UtpSocket`].

use std::io;
use std::net::ToSocketAddrs;

use async_net::AsyncToSocketAddrs;
use utp_io::{Socket, SocketConfig};
use utp_proto::ConnectionConfig;

use crate::UtpStream;

/// A uTP socket: one UDP socket, one protocol endpoint for all its connections, and one
/// driver (a task on the process's uTP driver thread, see the [crate docs](crate#the-driver)).
///
/// It both connects and accepts. Datagrams that are not uTP (a DHT or tracker sharing the
/// port) go to [`recv_from`](Self::recv_from), and [`send_to`](Self::send_to) sends raw
/// datagrams from the same port. Cloning is cheap and shares everything; when the last clone
/// is dropped the socket stops accepting, and the driver ends once every stream is closed.
/// The driver dies with the process: before the program exits, await
/// [`shutdown_gracefully`](Self::shutdown_gracefully) (or
/// [`UtpStream::close_gracefully`] on each stream).
///
/// ```
/// use futures_util::io::{AsyncReadExt, AsyncWriteExt};
/// use utp_async_std::UtpSocket;
///
/// # fn main() -> std::io::Result<()> { smol::block_on(async {
/// let server = UtpSocket::bind("127.0.0.1:0").await?;
/// let client = UtpSocket::bind("127.0.0.1:0").await?;
/// let addr = server.local_addr()?;
/// let echo = smol::spawn(async move {
///     let (mut stream, _peer) = server.accept().await?;
///     let mut buf = Vec::new();
///     stream.read_to_end(&mut buf).await?; // until the client's FIN
///     stream.write_all(&buf).await?; // echo
///     stream.close().await // FIN
/// });
///
/// let mut stream = client.connect(addr).await?;
/// stream.write_all(b"ping").await?;
/// stream.close().await?; // half-close: we can still read
/// let mut reply = Vec::new();
/// stream.read_to_end(&mut reply).await?;
/// assert_eq!(reply, b"ping");
/// echo.await
/// # }) }
/// ```
#[derive(Clone, Debug)]
pub struct UtpSocket {
    inner: Socket,
}

impl UtpSocket {
    /// Bind to `addr` with the default [`SocketConfig`]. `[::]` binds dual-stack: IPv4 peers
    /// work too. A host name is resolved with `std`, which blocks: pass an IP address from
    /// async code.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::bind_with_config(addr, SocketConfig::default()).await
    }

    /// Bind to the first address `addr` resolves to that works.
    pub async fn bind_with_config(
        addr: impl ToSocketAddrs,
        config: SocketConfig,
    ) -> io::Result<Self> {
        let socket = utp_io::bind_udp_first(addr.to_socket_addrs()?, &config)?;
        // `bind_udp_first` sized the buffers already (once, so their log lines appear once).
        Self::adopt(socket, config)
    }

    /// Use a UDP socket the caller bound already. It is made non-blocking and its buffers are
    /// sized per `config`. Needs no runtime: the driver thread starts with the first socket.
    pub fn from_std(socket: std::net::UdpSocket, config: SocketConfig) -> io::Result<Self> {
        utp_io::configure_socket((&socket).into(), &config)?;
        Self::adopt(socket, config)
    }

    /// [`from_std`](Self::from_std) for a socket whose buffers are sized already.
    fn adopt(socket: std::net::UdpSocket, config: SocketConfig) -> io::Result<Self> {
        let inner = crate::runtime::open(socket, config)?;
        Ok(Self { inner })
    }

    /// Open a connection to `remote`: a `SocketAddr`, `"host:port"`, `(ip, port)`, ... —
    /// anything [`async_net::AsyncToSocketAddrs`] takes, like smol's `TcpStream::connect`.
    /// Host names are resolved on the `blocking` crate's thread pool (smol's; std's resolver blocks),
    /// so the executor never stalls; each address is tried in turn until one connects (the
    /// last error otherwise). Fails with `InvalidInput` for an unspecified or multicast
    /// address, `ConnectionRefused` if the peer answers with a reset (or, on Linux, its port
    /// is closed), `TimedOut` if it never answers (after
    /// [`ConnectionConfig::max_syn_retransmits`](utp_proto::ConnectionConfig::max_syn_retransmits)).
    /// Cancel-safe: dropping the future abandons the attempt.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> { smol::block_on(async {
    /// use utp_async_std::UtpSocket;
    ///
    /// let server = UtpSocket::bind("127.0.0.1:0").await?;
    /// let client = UtpSocket::bind("127.0.0.1:0").await?;
    /// let port = server.local_addr()?.port();
    /// let stream = client.connect(("localhost", port)).await?;
    /// assert_eq!(stream.peer_addr()?.port(), port);
    /// # Ok(()) }) }
    /// ```
    pub async fn connect(&self, remote: impl AsyncToSocketAddrs) -> io::Result<UtpStream> {
        self.connect_resolved(remote, None).await
    }

    /// [`connect`](Self::connect) with this connection's own settings instead of the
    /// socket's defaults ([`SocketConfig::connection_mut`]): Nagle, buffers, timeouts,
    /// congestion control.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> { smol::block_on(async {
    /// use utp_async_std::{ConnectionConfig, UtpSocket};
    ///
    /// let server = UtpSocket::bind("127.0.0.1:0").await?;
    /// let client = UtpSocket::bind("127.0.0.1:0").await?;
    /// let mut config = ConnectionConfig::default();
    /// config.nagle(false);
    /// let stream = client.connect_with(server.local_addr()?, config).await?;
    /// # drop(stream);
    /// # Ok(()) }) }
    /// ```
    pub async fn connect_with(
        &self,
        remote: impl AsyncToSocketAddrs,
        config: ConnectionConfig,
    ) -> io::Result<UtpStream> {
        self.connect_resolved(remote, Some(config)).await
    }

    async fn connect_resolved(
        &self,
        remote: impl AsyncToSocketAddrs,
        config: Option<ConnectionConfig>,
    ) -> io::Result<UtpStream> {
        let mut last = None;
        for addr in async_net::resolve(remote).await? {
            match self.connect_addr(addr, config.clone()).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            utp_io::Error::InvalidArgument("no address to connect to".into()).into()
        }))
    }

    utp_io::__async_socket_methods!(inner, UtpStream);

    utp_io::__socket_accessors!(inner);
}
