//! Methods that every adapter's public types share, with their docs, generated once so the
//! adapters cannot drift apart. Each adapter expands them inside its own `impl` blocks.

/// Expands, inside an adapter's `impl UtpStream` block, to `peer_addr`, `local_addr`,
/// `stats` and `reset`, forwarding to the [`Stream`](crate::Stream) at `self.<path>`.
///
/// The adapter must depend on `utp_proto` (the docs link to it).
#[macro_export]
macro_rules! stream_accessors {
    ($($path:ident).+) => {
        /// The peer's address (IPv4-mapped addresses reported as IPv4).
        pub fn peer_addr(&self) -> ::std::io::Result<::std::net::SocketAddr> {
            Ok(self.$($path).+.peer_addr())
        }

        /// The local socket's address.
        pub fn local_addr(&self) -> ::std::io::Result<::std::net::SocketAddr> {
            Ok(self.$($path).+.local_addr())
        }

        /// The connection's counters and estimates (RTT, window, retransmissions); `None`
        /// after [`reset`](Self::reset).
        pub fn stats(&self) -> ::std::option::Option<$crate::__proto::ConnectionStats> {
            self.$($path).+.stats()
        }

        /// Abort: send `ST_RESET` and drop buffered data both ways. Later reads and writes
        /// fail with `ConnectionAborted` (through every handle of the connection); the
        /// peer's fail with `ConnectionReset`.
        pub fn reset(&self) {
            self.$($path).+.reset();
        }
    };
}

/// Expands, inside an adapter's `impl UtpSocket` block, to `local_addr`, `stats` and
/// `close`, forwarding to the [`Socket`](crate::Socket) at `self.<field>`.
#[macro_export]
macro_rules! socket_accessors {
    ($field:ident) => {
        /// The bound address.
        pub fn local_addr(&self) -> ::std::io::Result<::std::net::SocketAddr> {
            Ok(self.$field.local_addr())
        }

        /// Counters of the endpoint and the driver.
        pub fn stats(&self) -> $crate::SocketStats {
            self.$field.stats()
        }

        /// Stop accepting: `accept`, `connect` and the raw datagram calls fail with
        /// `NotConnected` from now on (a waiting `accept` too), and incoming connections
        /// nobody accepted are reset. Open streams carry on.
        pub fn close(&self) {
            self.$field.close();
        }
    };
}

/// Expands, inside an async adapter's `impl UtpSocket` block, to `async fn`s `connect`,
/// `accept`, `recv_from`, `send_to` and `shutdown_gracefully` over the
/// [`Socket`](crate::Socket) at `self.<field>`, wrapping streams with `<Stream>::new`.
///
/// The adapter must re-export `SocketConfig` and `SocketStats` at its root and depend on
/// `utp_proto` (the docs link to them).
#[macro_export]
macro_rules! async_socket_methods {
    ($field:ident, $stream:ident) => {
        /// Open a connection to `remote`. Fails with `InvalidInput` for an unspecified or
        /// multicast address, `ConnectionRefused` if the peer answers with a reset,
        /// `TimedOut` if it never answers (after
        /// [`ConnectionConfig::max_syn_retransmits`](utp_proto::ConnectionConfig::max_syn_retransmits)).
        /// Cancel-safe: dropping the future abandons the attempt.
        pub async fn connect(&self, remote: ::std::net::SocketAddr) -> ::std::io::Result<$stream> {
            let stream = self.$field.connect(remote)?.await?;
            Ok($stream::new(stream))
        }

        /// Wait for the next incoming connection and its peer's address. Fails with
        /// `NotConnected` once the socket is [`close`](Self::close)d. Cancel-safe.
        pub async fn accept(&self) -> ::std::io::Result<($stream, ::std::net::SocketAddr)> {
            let (stream, remote) = self.$field.accept().await?;
            Ok(($stream::new(stream), remote))
        }

        /// Receive the next datagram that was not uTP (DHT, tracker replies), truncated to
        /// `buf`'s length. Up to [`SocketConfig::datagram_queue`](crate::SocketConfig::datagram_queue)
        /// wait here; more are dropped and counted in
        /// [`SocketStats::raw_dropped`](crate::SocketStats::raw_dropped). Cancel-safe.
        pub async fn recv_from(
            &self,
            buf: &mut [u8],
        ) -> ::std::io::Result<(usize, ::std::net::SocketAddr)> {
            self.$field.recv_datagram(buf).await
        }

        /// Send a raw datagram from the uTP socket's port, in order with uTP traffic.
        /// Returns once it is queued for the driver (waiting while the queue is full).
        pub async fn send_to(
            &self,
            buf: &[u8],
            target: ::std::net::SocketAddr,
        ) -> ::std::io::Result<usize> {
            self.$field.send_datagram(buf, target).await
        }

        /// Shut down gracefully before the program exits: stop accepting (as
        /// [`close`](Self::close)), close every connection gracefully (streams still held
        /// too; their later calls fail with `NotConnected`), and wait until all are closed
        /// and the driver has ended. Connections still open after `timeout` are reset; the
        /// report counts those whose data may not all have arrived
        /// ([`ShutdownReport::cut`](crate::ShutdownReport::cut)). Fails only if the driver
        /// had stopped with an error.
        pub async fn shutdown_gracefully(
            &self,
            timeout: ::std::time::Duration,
        ) -> ::std::io::Result<$crate::ShutdownReport> {
            self.$field.shutdown_gracefully(timeout).await
        }
    };
}
