//! The endpoint's counters and its memory snapshot.

#[cfg(doc)]
use super::Endpoint;

/// Endpoint-wide counters; every dropped datagram is counted under one reason. `Serialize`
/// with the `serde` feature.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct EndpointStats {
    /// Datagrams passed to `handle_datagram`.
    pub datagrams_received: u64,
    /// Datagrams returned by `poll_transmit`.
    pub datagrams_sent: u64,
    /// Datagrams that did not parse as uTP.
    pub malformed: u64,
    /// Packets for no known connection.
    pub unknown_connection: u64,
    /// `ST_RESET` sent to strays.
    pub resets_sent: u64,
    /// Resets to strays suppressed by the rate limit.
    pub resets_suppressed: u64,
    /// Retransmissions for recently closed connections answered with their final ACK.
    pub time_wait_acks: u64,
    /// Such answers not sent because the reply queue was full.
    pub time_wait_acks_suppressed: u64,
    /// Acknowledgements for recently closed connections, which need no answer.
    pub time_wait_ignored: u64,
    /// `ST_RESET` received that matched no connection or failed validation.
    pub resets_ignored: u64,
    /// SYNs dropped: incoming connections are disabled.
    pub syn_refused: u64,
    /// SYNs dropped: `max_connections` reached.
    pub syn_dropped_connections: u64,
    /// SYNs dropped: the SYN backlog was full of entries younger than an initial RTO.
    pub syn_dropped_backlog: u64,
    /// Unverified incoming connections evicted to make room for a new SYN.
    pub syn_evicted: u64,
    /// Duplicate SYNs answered with the same SYN-ACK.
    pub duplicate_syns: u64,
    /// SYNs naming a live connection's id with another sequence number, dropped.
    pub conflicting_syns: u64,
    /// SYNs older than the end of the closed connection they opened (TIME-WAIT), dropped.
    pub old_syns: u64,
    /// Packets whose `ack_nr` names nothing we sent, ignored (all connections).
    pub invalid_acks: u64,
    /// Data dropped by a connection: too far ahead, no room in the window, past the FIN.
    pub packets_dropped: u64,
    /// Packets for a connection that already ended (not re-acknowledged), ignored.
    pub closed_connection_packets: u64,
    /// Connections accepted (verified).
    pub connections_accepted: u64,
    /// Connections opened with `connect`.
    pub connections_initiated: u64,
    /// Connections currently held, in any state.
    pub connections: usize,
    /// ICMP errors ([`Endpoint::handle_icmp_error`]) that reached a connection.
    pub icmp_errors: u64,
    /// ICMP errors about no connection we know (or an unreadable quoted datagram), ignored.
    pub icmp_ignored: u64,
}

/// A snapshot of what an [`Endpoint`] holds, from [`Endpoint::resource_usage`].
///
/// Every figure is bounded by configuration: `connections <= max_connections`,
/// `unverified_connections <= syn_backlog`, per connection `max_send_buffer` bytes written but
/// unacknowledged, at most `2 * max_receive_window + packet_size` bytes received (unread plus
/// held out of order) and the larger of `max_reorder_packets * max_receive_window /
/// receive_window` and `max_receive_window / 512` reorder slots (at most 32,767); by default
/// 8 MiB, 16 MiB and 16,384 (the buffers start at 1 MiB
/// and grow only as a connection's path needs, see
/// [`ConnectionConfig::max_receive_window`](crate::ConnectionConfig::max_receive_window));
/// `time_wait_entries <=
/// max_connections`; `stray_replies <= 64`; `reset_memory_entries <= 1000`.
///
/// `Serialize` with the `serde` feature.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ResourceUsage {
    /// Connections held, in any state.
    pub connections: usize,
    /// Incoming connections whose peer has not answered the SYN-ACK.
    pub unverified_connections: usize,
    /// Slots in the connection table (live plus free for reuse).
    pub slots: usize,
    /// Bytes written by applications and not yet acknowledged, all connections.
    pub send_buffered_bytes: usize,
    /// The largest such figure of one connection.
    pub max_send_buffered_bytes: usize,
    /// Bytes received and not yet read (in order or held out of order), all connections.
    pub receive_buffered_bytes: usize,
    /// The largest such figure of one connection.
    pub max_receive_buffered_bytes: usize,
    /// Out-of-order slots allocated, all connections.
    pub reorder_slots: usize,
    /// The largest such figure of one connection.
    pub max_reorder_slots: usize,
    /// Sent packets not yet cumulatively acknowledged, all connections.
    pub outstanding_packets: usize,
    /// Events waiting in [`Endpoint::poll_event`].
    pub pending_events: usize,
    /// Events a connection has not yet handed to the endpoint.
    pub pending_connection_events: usize,
    /// Replies to strays waiting for `poll_transmit`.
    pub stray_replies: usize,
    /// Closed connections whose final ACK is remembered.
    pub time_wait_entries: usize,
    /// Remembered (address, id) pairs that got a reset.
    pub reset_memory_entries: usize,
}
