//! [`UtpSocket`].

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::time::Duration;

use utp_io::{ShutdownReport, Socket, SocketConfig};
use utp_proto::ConnectionConfig;

use crate::UtpStream;
use crate::stream::{timed_out, zero_timeout};
use crate::wait::{check_timeout, wait};

/// A uTP socket: one UDP socket, one protocol endpoint for all its connections, and one
/// driver thread.
///
/// It both connects and accepts, like a `TcpListener` and a connector in one. Datagrams that
/// are not uTP (a DHT or tracker sharing the port) go to [`recv_from`](Self::recv_from), and
/// [`send_to`](Self::send_to) sends raw datagrams from the same port. Cloning is cheap and
/// shares everything (pass clones to threads); when the last clone is dropped the socket
/// stops accepting, and the driver thread ends once every stream is closed. That thread dies
/// with the process: before the program exits, call
/// [`shutdown_gracefully`](Self::shutdown_gracefully) (or [`UtpStream::close`] on each
/// stream) so it does not take undelivered data with it.
///
/// ```
/// use std::io::{Read, Write};
/// use std::net::Shutdown;
/// use utp_blocking::UtpSocket;
///
/// # fn main() -> std::io::Result<()> {
/// let server = UtpSocket::bind("127.0.0.1:0")?;
/// let client = UtpSocket::bind("127.0.0.1:0")?;
/// let addr = server.local_addr()?;
/// let echo = std::thread::spawn(move || {
///     let (mut stream, _peer) = server.accept()?;
///     let mut buf = Vec::new();
///     stream.read_to_end(&mut buf)?; // until the client's FIN
///     stream.write_all(&buf) // echo; dropping the stream sends our FIN
/// });
///
/// let mut stream = client.connect(addr)?;
/// stream.write_all(b"ping")?;
/// stream.shutdown(Shutdown::Write)?; // half-close: we can still read
/// let mut reply = Vec::new();
/// stream.read_to_end(&mut reply)?;
/// assert_eq!(reply, b"ping");
/// echo.join().unwrap()
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct UtpSocket {
    inner: Socket,
}

impl UtpSocket {
    /// Bind to `addr` with the default [`SocketConfig`] and start the driver thread. `[::]`
    /// binds dual-stack: IPv4 peers work too.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::bind_with_config(addr, SocketConfig::default())
    }

    /// Bind to the first address `addr` resolves to that works.
    pub fn bind_with_config(addr: impl ToSocketAddrs, config: SocketConfig) -> io::Result<Self> {
        let socket = utp_io::bind_udp_first(addr.to_socket_addrs()?, &config)?;
        // `bind_udp_first` sized the buffers already (once, so their log lines appear once).
        Self::adopt(socket, config)
    }

    /// Use a UDP socket the caller bound already. Its buffers are sized per `config`; the
    /// driver thread owns it from now on.
    pub fn from_std(socket: std::net::UdpSocket, config: SocketConfig) -> io::Result<Self> {
        utp_io::configure_socket((&socket).into(), &config)?;
        Self::adopt(socket, config)
    }

    /// [`from_std`](Self::from_std) for a socket whose buffers are sized already.
    fn adopt(socket: std::net::UdpSocket, config: SocketConfig) -> io::Result<Self> {
        #[cfg(unix)]
        let inner = {
            let name = format!("utp-drv-{}", socket.local_addr()?.port());
            utp_io::poll_thread::PollThread::open_dedicated(&name, socket, config)?
        };
        #[cfg(not(unix))]
        let inner = {
            let (runtime, udp) = crate::driver::ThreadRuntime::new(socket)?;
            Socket::new(runtime, udp, config)?
        };
        Ok(Self { inner })
    }

    /// Open a connection to `remote`, waiting for the handshake: a `SocketAddr`,
    /// `"host:port"`, `(ip, port)`, ... — anything std's [`ToSocketAddrs`] takes, like
    /// `TcpStream::connect` (names are resolved with std's blocking resolver); each address
    /// is tried in turn until one connects (the last error otherwise). Fails with
    /// `InvalidInput` for an unspecified or multicast address, `ConnectionRefused` if the
    /// peer answers with a reset (or, on Linux, its port is closed), `TimedOut` if it never
    /// answers (after
    /// [`ConnectionConfig::max_syn_retransmits`](utp_proto::ConnectionConfig::max_syn_retransmits)).
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// use utp_blocking::UtpSocket;
    ///
    /// let server = UtpSocket::bind("127.0.0.1:0")?;
    /// let client = UtpSocket::bind("127.0.0.1:0")?;
    /// let port = server.local_addr()?.port();
    /// let stream = client.connect(("localhost", port))?;
    /// assert_eq!(stream.peer_addr()?.port(), port);
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect(&self, remote: impl ToSocketAddrs) -> io::Result<UtpStream> {
        self.connect_each(remote, None)
    }

    /// [`connect`](Self::connect) with this connection's own settings instead of the
    /// socket's defaults ([`SocketConfig::connection_mut`]): Nagle, buffers, timeouts,
    /// congestion control.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// use utp_blocking::{ConnectionConfig, UtpSocket};
    ///
    /// let server = UtpSocket::bind("127.0.0.1:0")?;
    /// let client = UtpSocket::bind("127.0.0.1:0")?;
    /// let mut config = ConnectionConfig::default();
    /// config.nagle(false);
    /// let stream = client.connect_with(server.local_addr()?, config)?;
    /// # drop(stream);
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect_with(
        &self,
        remote: impl ToSocketAddrs,
        config: ConnectionConfig,
    ) -> io::Result<UtpStream> {
        self.connect_each(remote, Some(config))
    }

    fn connect_each(
        &self,
        remote: impl ToSocketAddrs,
        config: Option<ConnectionConfig>,
    ) -> io::Result<UtpStream> {
        let mut last = None;
        for addr in remote.to_socket_addrs()? {
            match self.connect_within(addr, config.clone(), None) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            utp_io::Error::InvalidArgument("no address to connect to".into()).into()
        }))
    }

    /// [`connect`](Self::connect), giving up with `TimedOut` after `timeout` (like
    /// `TcpStream::connect_timeout`; a zero timeout is `InvalidInput`). The abandoned attempt
    /// is reset.
    pub fn connect_timeout(&self, remote: SocketAddr, timeout: Duration) -> io::Result<UtpStream> {
        check_timeout(Some(timeout)).map_err(zero_timeout)?;
        self.connect_within(remote, None, Some(timeout))
    }

    fn connect_within(
        &self,
        remote: SocketAddr,
        config: Option<ConnectionConfig>,
        timeout: Option<Duration>,
    ) -> io::Result<UtpStream> {
        let mut connecting = match config {
            None => self.inner.connect(remote)?,
            Some(config) => self.inner.connect_with(remote, config)?,
        };
        let stream = wait(timeout, |cx| Pin::new(&mut connecting).poll(cx))
            // The wait's own timeout is `WouldBlock` on Unix; connect says `TimedOut`.
            .map_err(|e| timed_out(e, io::ErrorKind::TimedOut))?;
        Ok(UtpStream::new(stream))
    }

    /// Wait for the next incoming connection and its peer's address. Fails with
    /// `NotConnected` once the socket is [`close`](Self::close)d.
    pub fn accept(&self) -> io::Result<(UtpStream, SocketAddr)> {
        let (stream, remote) = wait(None, |cx| self.inner.poll_accept(cx))?;
        Ok((UtpStream::new(stream), remote))
    }

    /// An iterator over incoming connections, like `TcpListener::incoming`: each item is
    /// [`accept`](Self::accept)'s result without the address. It never ends by itself; after
    /// [`close`](Self::close) every item is an error.
    pub fn incoming(&self) -> impl Iterator<Item = io::Result<UtpStream>> + '_ {
        std::iter::repeat_with(|| self.accept().map(|(stream, _)| stream))
    }

    /// Receive the next datagram that was not uTP (DHT, tracker replies), truncated to
    /// `buf`'s length. Up to [`SocketConfig::datagram_queue`] wait here; more are dropped and
    /// counted in [`SocketStats::raw_dropped`](crate::SocketStats::raw_dropped).
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        wait(None, |cx| self.inner.poll_recv_datagram(cx, buf))
    }

    /// Send a raw datagram from the uTP socket's port, in order with uTP traffic. Returns once
    /// it is queued for the driver (waiting while the queue is full).
    pub fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        wait(None, |cx| self.inner.poll_send_datagram(cx, buf, target))
    }

    /// Shut down gracefully before the program exits: stop accepting (as
    /// [`close`](Self::close)), close every connection gracefully (streams still held too;
    /// their later calls fail with `NotConnected`), and block until all are closed and the
    /// driver thread has finished. Connections still open after `timeout` are reset; the
    /// [`ShutdownReport`] counts those whose data may not all have arrived
    /// ([`cut`](ShutdownReport::cut)). A zero `timeout` resets everything at once. Fails only
    /// if the driver had stopped with an error.
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> std::io::Result<()> {
    /// let socket = utp_blocking::UtpSocket::bind("127.0.0.1:0")?;
    /// // ... streams come and go ...
    /// let report = socket.shutdown_gracefully(Duration::from_secs(10))?;
    /// assert_eq!(report.cut, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown_gracefully(&self, timeout: Duration) -> io::Result<ShutdownReport> {
        self.inner.begin_shutdown(timeout);
        wait(None, |cx| self.inner.poll_shutdown(cx))
    }

    utp_io::__socket_accessors!(inner);
}
