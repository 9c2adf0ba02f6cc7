//! Per-connection counters.

use std::time::Duration;

/// A snapshot of one connection's counters and estimates.
///
/// With the `serde` feature it implements `Serialize`; durations serialize as seconds
/// (`f64`), absent values as `null`.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Smoothed round-trip time, once a sample arrived.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serde_secs::option"))]
    pub rtt: Option<Duration>,
    /// Smallest round-trip time seen.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serde_secs::option"))]
    pub min_rtt: Option<Duration>,
    /// Current retransmission timeout, backoff included.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serde_secs::plain"))]
    pub rto: Duration,
    /// Congestion window in bytes.
    pub cwnd: usize,
    /// Slow-start threshold in bytes (`usize::MAX` when unset).
    pub ssthresh: usize,
    /// Payload bytes sent and not yet acknowledged or declared lost.
    pub bytes_in_flight: usize,
    /// The peer's last advertised receive window.
    pub peer_window: usize,
    /// The receive window we last advertised.
    pub advertised_window: usize,
    /// Datagrams sent (all types, retransmissions included).
    pub packets_sent: u64,
    /// Datagrams received and accepted for this connection.
    pub packets_received: u64,
    /// New payload bytes sent (retransmissions not counted).
    pub bytes_sent: u64,
    /// Payload bytes delivered in order.
    pub bytes_received: u64,
    /// Data packets sent for the first time.
    pub data_packets_sent: u64,
    /// Data packets received (duplicates included).
    pub data_packets_received: u64,
    /// `ST_STATE` packets sent.
    pub acks_sent: u64,
    /// Packets sent again, for any reason.
    pub retransmits: u64,
    /// Packets sent again after duplicate ACKs or a SACK hole.
    pub fast_retransmits: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Tail loss probes sent (the newest packet resent before the RTO when ACKs stopped).
    pub tail_loss_probes: u64,
    /// Congestion events reported to the controller (loss, at most one per window).
    pub congestion_events: u64,
    /// Duplicate data packets received.
    pub duplicates_received: u64,
    /// Data packets received out of order and buffered.
    pub out_of_order_received: u64,
    /// Incoming packets dropped: too far ahead, no room, past the FIN.
    pub dropped_packets: u64,
    /// Incoming packets ignored because their `ack_nr` acknowledged nothing we sent.
    pub invalid_acks: u64,
    /// Zero-window probes sent.
    pub zero_window_probes: u64,
    /// Keepalives sent.
    pub keepalives_sent: u64,
    /// Packet size in use (UDP payload, uTP header included), from path MTU discovery.
    pub packet_size: usize,
    /// Path MTU probes sent.
    pub mtu_probes_sent: u64,
    /// Path MTU probes lost (each lowered the search ceiling).
    pub mtu_probes_lost: u64,
    /// The close reason we send ([`Endpoint::set_close_reason`](crate::Endpoint::set_close_reason)).
    pub close_reason: Option<u16>,
    /// The close reason the peer sent last (libtorrent's extension 3: its `close_reason_t`,
    /// e.g. 2 torrent removed, 6 upload to upload).
    pub peer_close_reason: Option<u16>,
}

/// What a connection counts as it runs (the fields of [`ConnectionStats`] that are not read
/// from its estimators when a snapshot is taken), so a connection does not carry the
/// snapshot's other ~130 bytes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) packets_sent: u64,
    pub(crate) packets_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) data_packets_sent: u64,
    pub(crate) data_packets_received: u64,
    pub(crate) acks_sent: u64,
    pub(crate) retransmits: u64,
    pub(crate) fast_retransmits: u64,
    pub(crate) timeouts: u64,
    pub(crate) tail_loss_probes: u64,
    pub(crate) congestion_events: u64,
    pub(crate) duplicates_received: u64,
    pub(crate) out_of_order_received: u64,
    pub(crate) dropped_packets: u64,
    pub(crate) invalid_acks: u64,
    pub(crate) zero_window_probes: u64,
    pub(crate) keepalives_sent: u64,
    /// The close reason the peer sent last.
    pub(crate) peer_close_reason: Option<u16>,
}

impl Counters {
    /// A snapshot holding these counters; the connection fills in the estimates it reads
    /// from its estimators and buffers.
    pub(crate) fn snapshot(&self) -> ConnectionStats {
        ConnectionStats {
            packets_sent: self.packets_sent,
            packets_received: self.packets_received,
            bytes_sent: self.bytes_sent,
            data_packets_sent: self.data_packets_sent,
            data_packets_received: self.data_packets_received,
            acks_sent: self.acks_sent,
            retransmits: self.retransmits,
            fast_retransmits: self.fast_retransmits,
            timeouts: self.timeouts,
            tail_loss_probes: self.tail_loss_probes,
            congestion_events: self.congestion_events,
            duplicates_received: self.duplicates_received,
            out_of_order_received: self.out_of_order_received,
            dropped_packets: self.dropped_packets,
            invalid_acks: self.invalid_acks,
            zero_window_probes: self.zero_window_probes,
            keepalives_sent: self.keepalives_sent,
            peer_close_reason: self.peer_close_reason,
            ..ConnectionStats::default()
        }
    }
}

/// Durations as seconds, the unit metrics systems expect (Prometheus' base unit).
#[cfg(feature = "serde")]
mod serde_secs {
    use std::time::Duration;

    pub(super) fn plain<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn option<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::*;

    #[test]
    fn stats_serialize_with_durations_in_seconds() {
        let stats = ConnectionStats {
            rtt: Some(Duration::from_millis(25)),
            rto: Duration::from_secs(1),
            peer_close_reason: Some(2),
            ..ConnectionStats::default()
        };
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["rtt"], 0.025);
        assert_eq!(json["min_rtt"], serde_json::Value::Null);
        assert_eq!(json["rto"], 1.0);
        assert_eq!(json["peer_close_reason"], 2);
        assert_eq!(json["packets_sent"], 0);
    }
}
