//! [`Error`]: the typed error inside every `io::Error` the adapters return.

use std::io;
use std::net::SocketAddr;

use utp_proto::{ConnectError, ConnectionError, ReadError, WriteError};

/// What went wrong, inside every [`io::Error`] a uTP adapter returns: the kind says how to
/// react, this says which outcome it was. Get it with [`Error::of`] (or
/// `err.get_ref()?.downcast_ref::<utp_io::Error>()`); every adapter re-exports it.
///
/// | outcome | variant | [`io::ErrorKind`] |
/// | --- | --- | --- |
/// | the peer reset the connection (`ST_RESET`) | [`Connection`]`(`[`Reset`]`)` | `ConnectionReset` |
/// | the peer answered our SYN with a reset; ICMP port unreachable during the handshake | [`Connection`]`(`[`Refused`]`)` | `ConnectionRefused` |
/// | retransmissions, the connect attempt, the keep-alive or the idle timer ran out | [`Connection`]`(`[`TimedOut`]`)` | `TimedOut` |
/// | we reset the stream (`reset()`), then used it | [`Connection`]`(`[`Aborted`]`)` | `ConnectionAborted` |
/// | write after `shutdown`/half-close or after a close | [`WriteAfterShutdown`] | `BrokenPipe` |
/// | `accept`, `connect` or a raw datagram call on a closed socket | [`SocketClosed`] | `NotConnected` |
/// | a stream used after the socket's graceful shutdown took its connection | [`ShutDown`] | `NotConnected` |
/// | connect (or a raw datagram) to an unspecified, multicast, port-0 or wrong-family address | [`InvalidAddress`] | `InvalidInput` |
/// | an argument no call can take: an invalid config, a zero timeout, an address list that resolved to nothing | [`InvalidArgument`] | `InvalidInput` |
/// | `max_connections` connections exist already | [`TooManyConnections`] | `ResourceBusy` |
/// | every connection id toward that peer is taken | [`NoConnectionIds`] | `AddrInUse` |
/// | a timeout set on the stream or call passed (blocking adapter) | [`Timeout`] | `TimedOut`; read and write timeouts: `WouldBlock` on Unix, as std's sockets |
/// | the socket's driver stopped: the UDP socket failed, or the runtime dropped the driver | [`Driver`] | the OS error's kind; `NotConnected` if the runtime dropped it |
/// | no runtime to run the driver on (tokio: outside a runtime, or one without IO or time), no OS randomness | [`Runtime`] | `Other` |
///
/// Errors of the OS itself (binding a busy port, resolving a host name) are passed through
/// as the OS reported them: they have no uTP error inside.
///
/// [`Connection`]: Error::Connection
/// [`Reset`]: ConnectionError::Reset
/// [`Refused`]: ConnectionError::Refused
/// [`TimedOut`]: ConnectionError::TimedOut
/// [`Aborted`]: ConnectionError::Aborted
/// [`WriteAfterShutdown`]: Error::WriteAfterShutdown
/// [`SocketClosed`]: Error::SocketClosed
/// [`ShutDown`]: Error::ShutDown
/// [`InvalidAddress`]: Error::InvalidAddress
/// [`TooManyConnections`]: Error::TooManyConnections
/// [`NoConnectionIds`]: Error::NoConnectionIds
/// [`Timeout`]: Error::Timeout
/// [`Driver`]: Error::Driver
/// [`InvalidArgument`]: Error::InvalidArgument
/// [`Runtime`]: Error::Runtime
///
/// ```
/// use std::io;
/// use utp_io::Error;
/// use utp_proto::ConnectionError;
///
/// let err: io::Error = Error::Connection(ConnectionError::Reset).into();
/// assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
/// assert_eq!(Error::of(&err), Some(&Error::Connection(ConnectionError::Reset)));
/// assert_eq!(Error::of(&io::Error::other("not ours")), None);
/// ```
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The connection ended (see [`ConnectionError`]). A peer that sent a close reason
    /// (libtorrent's extension) has it in the stream's `peer_close_reason()` and in
    /// [`ConnectionStats::peer_close_reason`](utp_proto::ConnectionStats::peer_close_reason).
    Connection(ConnectionError),
    /// A write after the write side was shut down (half-close) or closed.
    WriteAfterShutdown,
    /// The socket was closed (`close`, `shutdown_gracefully`, or every handle dropped):
    /// no more accepts, connects or raw datagrams.
    SocketClosed,
    /// The socket's graceful shutdown closed this stream's connection.
    ShutDown,
    /// No connection can go to this address: unspecified, multicast, port 0, or an IP
    /// version the socket cannot reach.
    InvalidAddress(SocketAddr),
    /// The endpoint holds [`max_connections`](utp_proto::EndpointConfig::max_connections)
    /// connections already.
    TooManyConnections,
    /// Every connection id toward this peer is taken.
    NoConnectionIds,
    /// A timeout set by the application passed before the call could finish.
    Timeout,
    /// An argument no call can take (what is wrong with it).
    InvalidArgument(String),
    /// The runtime cannot run the socket's driver (what is missing).
    Runtime(String),
    /// The socket's driver stopped and every call fails: the UDP socket failed, or the
    /// runtime dropped the driver (a tokio runtime shut down).
    Driver {
        /// The OS error's kind (`NotConnected` when the runtime dropped the driver).
        kind: io::ErrorKind,
        /// What happened.
        message: String,
    },
}

impl Error {
    /// The [`io::ErrorKind`] this error is reported with (the table above).
    pub fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            Self::Connection(ConnectionError::Reset) => K::ConnectionReset,
            Self::Connection(ConnectionError::Refused) => K::ConnectionRefused,
            Self::Connection(ConnectionError::TimedOut) => K::TimedOut,
            Self::Connection(ConnectionError::Aborted) => K::ConnectionAborted,
            Self::Connection(_) => K::Other,
            Self::WriteAfterShutdown => K::BrokenPipe,
            Self::SocketClosed | Self::ShutDown => K::NotConnected,
            Self::InvalidAddress(_) => K::InvalidInput,
            Self::TooManyConnections => K::ResourceBusy,
            Self::NoConnectionIds => K::AddrInUse,
            Self::Timeout => K::TimedOut,
            Self::InvalidArgument(_) => K::InvalidInput,
            Self::Runtime(_) => K::Other,
            Self::Driver { kind, .. } => *kind,
        }
    }

    /// The uTP error inside `err`, if it came from a uTP adapter.
    pub fn of(err: &io::Error) -> Option<&Self> {
        err.get_ref()?.downcast_ref()
    }

    /// The connection's end, if that is what this error reports.
    pub fn connection_error(&self) -> Option<ConnectionError> {
        match self {
            Self::Connection(e) => Some(*e),
            _ => None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connection(e) => e.fmt(f),
            Self::WriteAfterShutdown => f.write_str("write after shutdown"),
            Self::SocketClosed => f.write_str("uTP socket closed"),
            Self::ShutDown => f.write_str("uTP socket was shut down"),
            Self::InvalidAddress(addr) => write!(
                f,
                "cannot connect to {addr}: unspecified, multicast, port 0 or the wrong IP version"
            ),
            Self::TooManyConnections => f.write_str("too many uTP connections"),
            Self::NoConnectionIds => f.write_str("no free connection id toward this peer"),
            Self::Timeout => f.write_str("uTP operation timed out"),
            Self::InvalidArgument(what) => f.write_str(what),
            Self::Runtime(what) => f.write_str(what),
            Self::Driver { message, .. } => write!(f, "uTP driver stopped: {message}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        Self::new(e.kind(), e)
    }
}

impl From<ConnectionError> for Error {
    fn from(e: ConnectionError) -> Self {
        Self::Connection(e)
    }
}

impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::ConnectionLost(c) => Self::Connection(c),
            // `Blocked` never leaves a poll function (it is `Pending`); the rest means the
            // handle is no longer ours to read.
            _ => Self::ShutDown,
        }
    }
}

impl From<WriteError> for Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::ConnectionLost(c) => Self::Connection(c),
            WriteError::Finished => Self::WriteAfterShutdown,
            _ => Self::ShutDown,
        }
    }
}

/// `remote` is where the connect went.
pub(crate) fn connect_error(e: ConnectError, remote: SocketAddr) -> Error {
    match e {
        ConnectError::TooManyConnections => Error::TooManyConnections,
        ConnectError::NoConnectionIds => Error::NoConnectionIds,
        _ => Error::InvalidAddress(remote),
    }
}

/// Give an error from the shared state (the driver's fatal error) its typed inner.
pub(crate) fn typed(e: io::Error) -> io::Error {
    if Error::of(&e).is_some() {
        return e;
    }
    let kind = e.kind();
    let inner = e.get_ref();
    if let Some(c) = inner.and_then(|i| i.downcast_ref::<ConnectionError>()) {
        return Error::Connection(*c).into();
    }
    if let Some(r) = inner.and_then(|i| i.downcast_ref::<ReadError>()) {
        return Error::from(*r).into();
    }
    if let Some(w) = inner.and_then(|i| i.downcast_ref::<WriteError>()) {
        return Error::from(*w).into();
    }
    let message = match inner {
        Some(i) => i.to_string(),
        None => e.to_string(),
    };
    Error::Driver { kind, message }.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table in [`Error`]'s docs, row by row.
    #[test]
    fn every_variant_has_its_documented_kind_and_downcasts() {
        use io::ErrorKind as K;
        let addr: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let rows = [
            (
                Error::Connection(ConnectionError::Reset),
                K::ConnectionReset,
            ),
            (
                Error::Connection(ConnectionError::Refused),
                K::ConnectionRefused,
            ),
            (Error::Connection(ConnectionError::TimedOut), K::TimedOut),
            (
                Error::Connection(ConnectionError::Aborted),
                K::ConnectionAborted,
            ),
            (Error::WriteAfterShutdown, K::BrokenPipe),
            (Error::SocketClosed, K::NotConnected),
            (Error::ShutDown, K::NotConnected),
            (Error::InvalidAddress(addr), K::InvalidInput),
            (Error::InvalidArgument("x".into()), K::InvalidInput),
            (Error::TooManyConnections, K::ResourceBusy),
            (Error::NoConnectionIds, K::AddrInUse),
            (Error::Timeout, K::TimedOut),
            (
                Error::Driver {
                    kind: K::PermissionDenied,
                    message: "x".into(),
                },
                K::PermissionDenied,
            ),
            (Error::Runtime("x".into()), K::Other),
        ];
        for (error, kind) in rows {
            let io: io::Error = error.clone().into();
            assert_eq!(io.kind(), kind, "{error}");
            assert_eq!(Error::of(&io), Some(&error));
        }
    }

    #[test]
    fn untyped_errors_get_a_typed_inner() {
        let e = typed(io::Error::new(
            io::ErrorKind::ConnectionReset,
            ConnectionError::Reset,
        ));
        assert_eq!(
            Error::of(&e),
            Some(&Error::Connection(ConnectionError::Reset))
        );
        let e = typed(WriteError::Finished.into());
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(Error::of(&e), Some(&Error::WriteAfterShutdown));
        let e = typed(io::Error::new(io::ErrorKind::NotConnected, "driver gone"));
        assert_eq!(e.kind(), io::ErrorKind::NotConnected);
        assert!(matches!(Error::of(&e), Some(Error::Driver { .. })), "{e:?}");
        assert_eq!(e.to_string(), "uTP driver stopped: driver gone");
    }
}
