//! The [`Adapter`](crate::Adapter) implementations, one per feature: thin wrappers of each
//! adapter's public API and its executor.

/// [`Reader`](crate::Reader) and [`Writer`](crate::Writer) for async stream types, through
/// their ecosystem's extension traits; `$shutdown` is the half-close method.
#[cfg(any(feature = "tokio", feature = "async-std"))]
macro_rules! async_io_traits {
    ($read_ext:ident, $write_ext:ident, $shutdown:ident;
     read: $($r:ty),*; write: $($w:ty),*) => {
        $(impl $crate::Reader for $r {
            async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                $read_ext::read(self, buf).await
            }
        })*
        $(impl $crate::Writer for $w {
            async fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                $write_ext::write(self, buf).await
            }

            async fn shutdown(&mut self) -> std::io::Result<()> {
                $write_ext::$shutdown(self).await
            }
        })*
    };
}
#[cfg(any(feature = "tokio", feature = "async-std"))]
use async_io_traits;

/// The [`Adapter`](crate::Adapter) methods that only forward to the adapter's socket and
/// stream API, which all adapters share; `await` for the async ones, nothing for blocking.
#[cfg(any(feature = "tokio", feature = "async-std", feature = "blocking"))]
macro_rules! forward_to_the_api {
    ($($aw:tt)?) => {
        async fn bind(addr: SocketAddr, config: SocketConfig) -> io::Result<Self::Socket> {
            <Self::Socket>::bind_with_config(addr, config)$(.$aw)?
        }

        fn from_std(socket: std::net::UdpSocket, config: SocketConfig) -> io::Result<Self::Socket> {
            <Self::Socket>::from_std(socket, config)
        }

        fn local_addr(socket: &Self::Socket) -> SocketAddr {
            socket.local_addr().expect("bound")
        }

        fn socket_stats(socket: &Self::Socket) -> SocketStats {
            socket.stats()
        }

        fn close(socket: &Self::Socket) {
            socket.close();
        }

        async fn shutdown_gracefully(
            socket: &Self::Socket,
            timeout: std::time::Duration,
        ) -> io::Result<utp_io::ShutdownReport> {
            socket.shutdown_gracefully(timeout)$(.$aw)?
        }

        async fn connect(socket: &Self::Socket, remote: SocketAddr) -> io::Result<Self::Stream> {
            socket.connect(remote)$(.$aw)?
        }

        async fn connect_host(
            socket: &Self::Socket,
            host: &'static str,
            port: u16,
        ) -> io::Result<Self::Stream> {
            socket.connect((host, port))$(.$aw)?
        }

        async fn connect_with(
            socket: &Self::Socket,
            remote: SocketAddr,
            config: utp_proto::ConnectionConfig,
        ) -> io::Result<Self::Stream> {
            socket.connect_with(remote, config)$(.$aw)?
        }

        fn connections(socket: &Self::Socket) -> Vec<utp_io::ConnectionInfo> {
            socket.connections()
        }

        async fn accept(socket: &Self::Socket) -> io::Result<(Self::Stream, SocketAddr)> {
            socket.accept()$(.$aw)?
        }

        async fn recv_from(
            socket: &Self::Socket,
            buf: &mut [u8],
        ) -> io::Result<(usize, SocketAddr)> {
            socket.recv_from(buf)$(.$aw)?
        }

        async fn send_to(
            socket: &Self::Socket,
            buf: &[u8],
            target: SocketAddr,
        ) -> io::Result<usize> {
            socket.send_to(buf, target)$(.$aw)?
        }

        fn stream_stats(stream: &Self::Stream) -> Option<ConnectionStats> {
            stream.stats()
        }

        fn reset(stream: &Self::Stream) {
            stream.reset();
        }

        fn set_close_reason(stream: &Self::Stream, reason: u16) {
            stream.set_close_reason(reason);
        }

        fn peer_close_reason(stream: &Self::Stream) -> Option<u16> {
            stream.peer_close_reason()
        }

        async fn peek(stream: &Self::Stream, buf: &mut [u8]) -> io::Result<usize> {
            stream.peek(buf)$(.$aw)?
        }

        fn take_error(stream: &Self::Stream) -> io::Result<Option<io::Error>> {
            stream.take_error()
        }
    };
}
#[cfg(any(feature = "tokio", feature = "async-std", feature = "blocking"))]
use forward_to_the_api;

#[cfg(feature = "async-std")]
mod on_futures;
#[cfg(feature = "blocking")]
mod on_threads;
#[cfg(feature = "tokio")]
mod on_tokio;

#[cfg(feature = "async-std")]
pub use on_futures::{AsyncStd, Smol};
#[cfg(feature = "blocking")]
pub use on_threads::Blocking;
#[cfg(feature = "tokio")]
pub use on_tokio::Tokio;
