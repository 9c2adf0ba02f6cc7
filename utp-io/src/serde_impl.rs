//! `Serialize` for [`SocketStats`] (feature `serde`), written out so `shared.rs` keeps no
//! serde attributes. The exhaustive destructuring makes a new field a compile error here.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::SocketStats;

impl Serialize for SocketStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Self {
            endpoint,
            driver_wakeups,
            datagrams_received,
            datagrams_sent,
            gso_sends,
            recv_calls,
            raw_received,
            raw_dropped,
            raw_sent,
            send_would_block,
            send_errors,
            recv_errors,
            incoming_refused,
            linger_resets,
            shutdown_resets,
        } = self;
        let mut s = serializer.serialize_struct("SocketStats", 15)?;
        s.serialize_field("endpoint", endpoint)?;
        s.serialize_field("driver_wakeups", driver_wakeups)?;
        s.serialize_field("datagrams_received", datagrams_received)?;
        s.serialize_field("datagrams_sent", datagrams_sent)?;
        s.serialize_field("gso_sends", gso_sends)?;
        s.serialize_field("recv_calls", recv_calls)?;
        s.serialize_field("raw_received", raw_received)?;
        s.serialize_field("raw_dropped", raw_dropped)?;
        s.serialize_field("raw_sent", raw_sent)?;
        s.serialize_field("send_would_block", send_would_block)?;
        s.serialize_field("send_errors", send_errors)?;
        s.serialize_field("recv_errors", recv_errors)?;
        s.serialize_field("incoming_refused", incoming_refused)?;
        s.serialize_field("linger_resets", linger_resets)?;
        s.serialize_field("shutdown_resets", shutdown_resets)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use utp_proto::ConnectionStats;

    use crate::{ConnectionInfo, SocketStats};

    #[test]
    fn socket_stats_and_connections_serialize() {
        let mut stats = SocketStats::default();
        stats.driver_wakeups = 3;
        stats.endpoint.connections = 1;
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["driver_wakeups"], 3);
        assert_eq!(json["endpoint"]["connections"], 1);
        assert_eq!(json["shutdown_resets"], 0);

        let remote: SocketAddr = "127.0.0.1:6881".parse().unwrap();
        let info = ConnectionInfo {
            id: 4,
            remote,
            established: true,
            held: false,
            stats: ConnectionStats::default(),
        };
        let json = serde_json::to_value(vec![info]).unwrap();
        assert_eq!(json[0]["remote"], "127.0.0.1:6881");
        assert_eq!(json[0]["held"], false);
        assert_eq!(json[0]["stats"]["rtt"], serde_json::Value::Null);
    }
}
