//! A connection's pending events, kept inline: the endpoint drains them after every call, so
//! only a handful are ever waiting, and an idle connection should not hold a heap block for
//! them.

use std::net::SocketAddr;

use super::ConnectionError;
use crate::Event;

/// What kind of [`Event`] is waiting. The data of the two events that carry some is the
/// connection's own (its remote address, its error), filled in when the event is taken.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum EventKind {
    Connected,
    Incoming,
    Readable,
    Writable,
    PeerFinished,
    WriteFinished,
    Closed,
}

/// Slots: more than one call ever queues (a datagram that connects, delivers, finishes and
/// closes queues six), and more than the number of kinds, so the fallback below never loses
/// one.
const CAPACITY: usize = 16;

/// A first-in, first-out queue of event kinds in 18 bytes.
#[derive(Debug)]
pub(super) struct EventQueue {
    kinds: [EventKind; CAPACITY],
    head: u8,
    len: u8,
}

impl EventQueue {
    pub(super) fn new() -> Self {
        Self {
            kinds: [EventKind::Connected; CAPACITY],
            head: 0,
            len: 0,
        }
    }

    pub(super) fn push(&mut self, kind: EventKind) {
        if usize::from(self.len) == CAPACITY {
            // Cannot happen while the endpoint drains after every call; if it did, every
            // kind is already waiting at least once (16 slots, 7 kinds) and a repeat adds
            // nothing an application could act on.
            debug_assert!(false, "connection event queue full");
            return;
        }
        let tail = (usize::from(self.head) + usize::from(self.len)) % CAPACITY;
        self.kinds[tail] = kind;
        self.len += 1;
    }

    pub(super) fn pop(&mut self) -> Option<EventKind> {
        if self.len == 0 {
            return None;
        }
        let kind = self.kinds[usize::from(self.head)];
        self.head = ((usize::from(self.head) + 1) % CAPACITY) as u8;
        self.len -= 1;
        Some(kind)
    }

    pub(super) fn len(&self) -> usize {
        usize::from(self.len)
    }
}

impl EventKind {
    /// The event, with the data the connection holds.
    pub(super) fn event(self, remote: SocketAddr, error: Option<ConnectionError>) -> Event {
        match self {
            Self::Connected => Event::Connected,
            Self::Incoming => Event::Incoming { remote },
            Self::Readable => Event::Readable,
            Self::Writable => Event::Writable,
            Self::PeerFinished => Event::PeerFinished,
            Self::WriteFinished => Event::WriteFinished,
            Self::Closed => Event::Closed { error },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_in_first_out_across_the_wrap() {
        let mut q = EventQueue::new();
        let kinds = [
            EventKind::Connected,
            EventKind::Readable,
            EventKind::Writable,
            EventKind::PeerFinished,
            EventKind::WriteFinished,
            EventKind::Closed,
        ];
        for round in 0..10 {
            for &k in &kinds[..round % kinds.len() + 1] {
                q.push(k);
            }
            for &k in &kinds[..round % kinds.len() + 1] {
                assert_eq!(q.pop(), Some(k));
            }
            assert_eq!(q.pop(), None);
            assert_eq!(q.len(), 0);
        }
    }

    #[test]
    fn events_carry_the_connections_data() {
        let remote: SocketAddr = "192.0.2.1:5".parse().unwrap();
        assert_eq!(
            EventKind::Incoming.event(remote, None),
            Event::Incoming { remote }
        );
        assert_eq!(
            EventKind::Closed.event(remote, Some(ConnectionError::Reset)),
            Event::Closed {
                error: Some(ConnectionError::Reset)
            }
        );
    }
}
