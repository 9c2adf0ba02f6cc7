//! Errors a connection reports, and their `io::Error` mapping.

use std::io;

/// Why a connection ended.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer sent `ST_RESET`.
    #[error("connection reset by peer")]
    Reset,
    /// The peer answered our SYN with `ST_RESET`.
    #[error("connection refused by peer")]
    Refused,
    /// Retransmissions, the connect attempt or the idle timer ran out.
    #[error("connection timed out")]
    TimedOut,
    /// We reset the connection ([`Endpoint::reset`](crate::Endpoint::reset)).
    #[error("connection aborted locally")]
    Aborted,
}

impl From<ConnectionError> for io::Error {
    fn from(e: ConnectionError) -> Self {
        let kind = match e {
            ConnectionError::Reset => io::ErrorKind::ConnectionReset,
            ConnectionError::Refused => io::ErrorKind::ConnectionRefused,
            ConnectionError::TimedOut => io::ErrorKind::TimedOut,
            ConnectionError::Aborted => io::ErrorKind::ConnectionAborted,
        };
        Self::new(kind, e)
    }
}

/// Why [`Endpoint::write`](crate::Endpoint::write) took no bytes.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The send buffer is full; wait for [`Event::Writable`](crate::Event::Writable).
    #[error("send buffer full")]
    Blocked,
    /// The write side was shut down or the connection closed by the application.
    #[error("write after shutdown")]
    Finished,
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
    /// The handle does not name a live connection.
    #[error("unknown connection handle")]
    UnknownConnection,
}

/// Why [`Endpoint::read`](crate::Endpoint::read) returned no bytes.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Nothing to read yet; wait for [`Event::Readable`](crate::Event::Readable).
    #[error("no data available")]
    Blocked,
    /// The connection ended before the peer finished its stream.
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
    /// The application already closed this connection.
    #[error("read after close")]
    Closed,
    /// The handle does not name a live connection.
    #[error("unknown connection handle")]
    UnknownConnection,
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Blocked => io::ErrorKind::WouldBlock.into(),
            WriteError::Finished => Self::new(io::ErrorKind::BrokenPipe, e),
            WriteError::ConnectionLost(c) => c.into(),
            WriteError::UnknownConnection => Self::new(io::ErrorKind::NotConnected, e),
        }
    }
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Blocked => io::ErrorKind::WouldBlock.into(),
            ReadError::ConnectionLost(c) => c.into(),
            ReadError::Closed | ReadError::UnknownConnection => {
                Self::new(io::ErrorKind::NotConnected, e)
            }
        }
    }
}
