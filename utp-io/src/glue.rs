//! Methods that every adapter's public types share, with their docs, generated once so the
//! adapters cannot drift apart. Each adapter expands them inside its own `impl` blocks.
//!
//! Plumbing, not API: the macros are exported only because adapter crates expand them
//! (`#[macro_export]` is the only way across crates), hidden from the docs and named
//! `__*`; nothing outside this workspace's adapters should call them. Their expansions
//! name items through `$crate::__private`.

/// Expands, inside an adapter's `impl UtpStream` block (or a split half's), to
/// `peer_addr`, `local_addr`, `stats`, `peer_close_reason`, `set_close_reason`,
/// `set_nodelay`, `nodelay` and `take_error`, forwarding to the [`Stream`](crate::Stream) at `self.<path>`.
#[doc(hidden)]
#[macro_export]
macro_rules! __stream_getters {
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
        /// after `reset`. With the `serde` feature they serialize (to JSON, Prometheus
        /// exporters, ...).
        pub fn stats(&self) -> ::std::option::Option<$crate::__private::ConnectionStats> {
            self.$($path).+.stats()
        }

        /// The close reason the peer sent (libtorrent's close-reason extension: 1 duplicate
        /// peer id, 2 torrent removed, ...), `None` if it sent none. Still there after the
        /// connection ended with EOF or an error, until `reset` or the last handle is
        /// dropped.
        pub fn peer_close_reason(&self) -> ::std::option::Option<u16> {
            self.$($path).+.peer_close_reason()
        }

        /// Say why we end this connection: a libtorrent `close_reason_t` code (0 none,
        /// 1 duplicate peer id, 2 torrent removed, ...; 256 and up are protocol errors),
        /// sent with our FIN and every later acknowledgement. libtorrent shows it to its
        /// application; libutp ignores it. Set it before closing; the peer reads it with
        /// `peer_close_reason`.
        pub fn set_close_reason(&self, reason: u16) {
            self.$($path).+.set_close_reason(reason);
        }

        /// Turn Nagle's algorithm off (`true`) or on, like `TcpStream::set_nodelay`: on (the
        /// default) small writes coalesce into full packets; off, each write leaves at once.
        pub fn set_nodelay(&self, nodelay: bool) -> ::std::io::Result<()> {
            self.$($path).+.set_nodelay(nodelay)
        }

        /// Whether Nagle's algorithm is off (`set_nodelay`).
        pub fn nodelay(&self) -> ::std::io::Result<bool> {
            self.$($path).+.nodelay()
        }

        /// The error that ended the connection, if it ended with one (like
        /// `TcpStream::take_error`). uTP errors are final: unlike TCP's, the error stays,
        /// and every later read or write reports it too. `Ok(None)` while the connection is
        /// fine or after a graceful close.
        pub fn take_error(&self) -> ::std::io::Result<::std::option::Option<::std::io::Error>> {
            self.$($path).+.take_error()
        }
    };
}

/// [`__stream_getters!`] plus `reset`, for a whole `UtpStream`.
#[doc(hidden)]
#[macro_export]
macro_rules! __stream_accessors {
    ($($path:ident).+) => {
        $crate::__stream_getters!($($path).+);

        /// Abort: send `ST_RESET` and drop buffered data both ways. Later reads and writes
        /// fail with `ConnectionAborted` (through every handle of the connection); the
        /// peer's fail with `ConnectionReset`.
        pub fn reset(&self) {
            self.$($path).+.reset();
        }
    };
}

/// Expands, inside an adapter's `impl UtpSocket` block, to `local_addr`, `stats`,
/// `connections` and `close`, forwarding to the [`Socket`](crate::Socket) at
/// `self.<field>`.
#[doc(hidden)]
#[macro_export]
macro_rules! __socket_accessors {
    ($field:ident) => {
        /// The bound address.
        pub fn local_addr(&self) -> ::std::io::Result<::std::net::SocketAddr> {
            Ok(self.$field.local_addr())
        }

        /// Counters of the endpoint and the driver. With the `serde` feature they
        /// serialize.
        pub fn stats(&self) -> $crate::SocketStats {
            self.$field.stats()
        }

        /// Every connection on the socket with its counters, in one snapshot: held
        /// streams, connections waiting for `accept`, connects in progress and dropped
        /// streams still closing. With the `serde` feature they serialize.
        pub fn connections(&self) -> ::std::vec::Vec<$crate::ConnectionInfo> {
            self.$field.connections()
        }

        /// Stop accepting: `accept`, `connect` and the raw datagram calls fail with
        /// `NotConnected` from now on (a waiting `accept` too), and incoming connections
        /// nobody accepted are reset. Open streams carry on.
        pub fn close(&self) {
            self.$field.close();
        }
    };
}

/// Expands, inside an async adapter's `impl UtpSocket` block, to `async fn`s
/// `connect_addr`, `connect_with`, `accept`, `recv_from`, `send_to` and
/// `shutdown_gracefully` over the [`Socket`](crate::Socket) at `self.<field>`, wrapping
/// streams with `<Stream>::new`. The adapter writes `connect` itself, resolving names its
/// ecosystem's way, and calls `connect_addr`.
#[doc(hidden)]
#[macro_export]
macro_rules! __async_socket_methods {
    ($field:ident, $stream:ident) => {
        /// [`connect`](Self::connect) to one address, without name resolution.
        async fn connect_addr(
            &self,
            remote: ::std::net::SocketAddr,
            config: ::std::option::Option<$crate::__private::ConnectionConfig>,
        ) -> ::std::io::Result<$stream> {
            let connecting = match config {
                None => self.$field.connect(remote)?,
                Some(config) => self.$field.connect_with(remote, config)?,
            };
            Ok($stream::new(connecting.await?))
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
