//! The headline property: whatever the network does (loss, duplication, reordering, jitter,
//! delay, a bottleneck with a finite queue), every byte written arrives, in order, exactly
//! once, and both sides close cleanly within a bounded number of steps.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use utp_proto::EndpointConfig;
use utp_sim::{AppConfig, LinkConfig, Pair, init_tracing};

prop_compose! {
    /// Endpoints that keep retrying long enough for a 20 %-loss link (the property is about
    /// delivery, not about when to give up), with random buffer sizes, packet sizes and
    /// Nagle.
    fn arb_endpoint()(
        receive_window in prop_oneof![Just(1usize << 20), 2_000usize..64_000],
        send_buffer in prop_oneof![Just(1usize << 20), 2_000usize..64_000],
        packet_size in prop_oneof![Just(1472usize), 150usize..1500, 1500usize..9000],
        nagle: bool,
    ) -> EndpointConfig {
        let mut c = EndpointConfig::default();
        c.connection_mut()
            .max_retransmits(30)
            .max_syn_retransmits(30)
            .max_rto(Duration::from_secs(8))
            .packet_size(packet_size)
            .receive_window(receive_window.max(packet_size))
            .send_buffer(send_buffer.max(packet_size))
            .nagle(nagle);
        c
    }
}

/// Cases run with a fixed seed so CI is reproducible; set `UTP_PROPTEST_SEED` (and
/// `PROPTEST_CASES`) to explore further.
fn seed() -> RngSeed {
    RngSeed::Fixed(
        std::env::var("UTP_PROPTEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x75_7470),
    )
}

prop_compose! {
    fn arb_link()(
        latency_ms in 1u64..300,
        jitter_ms in 0u64..20,
        loss in 0.0f64..0.2,
        duplicate in 0.0f64..0.1,
        reorder in 0.0f64..0.1,
        reorder_ms in 1u64..50,
        rate in proptest::option::of(100_000u64..10_000_000),
        queue_ms in 10u64..500,
        mtu in proptest::option::of(548usize..9000),
    ) -> LinkConfig {
        let mut link = LinkConfig::perfect()
            .with_latency(Duration::from_millis(latency_ms))
            .with_jitter(Duration::from_millis(jitter_ms))
            .with_loss(loss)
            .with_duplicate(duplicate)
            .with_reorder(reorder, Duration::from_millis(reorder_ms));
        if let Some(mtu) = mtu {
            link = link.with_mtu(mtu);
        }
        if let Some(rate) = rate {
            // A queue holding `queue_ms` at the line rate, but at least two packets.
            let queue = (rate * queue_ms / 1000).max(3000) as usize;
            link = link.with_rate(rate, queue);
        }
        link
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 64,
        rng_seed: seed(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn delivered_equals_written(
        to_server in arb_link(),
        to_client in arb_link(),
        client_config in arb_endpoint(),
        server_config in arb_endpoint(),
        slow_reader in proptest::option::of((500usize..20_000, 1u64..200)),
        client_bytes in 0usize..200_000,
        server_bytes in 0usize..200_000,
        seed: u64,
    ) {
        init_tracing();
        let mut pair = Pair::with_config(client_config, server_config, to_server, to_client, seed);
        let mut server_app = AppConfig::bulk(server_bytes);
        if let Some((bytes, ms)) = slow_reader {
            server_app = server_app.slow_reader(bytes, Duration::from_millis(ms));
        }
        pair.start_transfer(AppConfig::bulk(client_bytes), server_app);
        let result = pair.drive_bounded(2_000_000);
        prop_assert!(result.is_ok(), "livelock: {:?}", result);
        let (c, s) = (&pair.client.app, &pair.server.app);
        prop_assert_eq!(c.error(), None, "client failed");
        prop_assert_eq!(s.error(), None, "server failed");
        prop_assert!(s.received == c.expected_output(), "server got {} of {} bytes, or wrong ones", s.received.len(), client_bytes);
        prop_assert!(c.received == s.expected_output(), "client got {} of {} bytes, or wrong ones", c.received.len(), server_bytes);
        prop_assert!(c.eof && s.eof, "both see EOF");
        prop_assert!(c.freed && s.freed, "both freed");
    }
}
