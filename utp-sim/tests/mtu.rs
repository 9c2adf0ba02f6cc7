//! Path MTU discovery in the simulator: convergence on links of several MTUs, and recovery
//! when the path shrinks mid-transfer without telling anyone (a black hole for
//! don't-fragment packets).

use std::time::Duration;

use utp_proto::EndpointConfig;
use utp_sim::{AppConfig, LinkConfig, Pair, init_tracing};

/// IPv4 + UDP headers: a link MTU of `m` carries `m - 28` bytes of UDP payload.
const IP_UDP: usize = 28;
const LATENCY: Duration = Duration::from_millis(20);
const RTT: Duration = Duration::from_millis(40);

fn jumbo_ceiling() -> EndpointConfig {
    let mut c = EndpointConfig::default();
    c.connection_mut().packet_size(9000 - IP_UDP);
    c
}

/// Transfer `bytes` from client to server over links carrying at most `limit` bytes of UDP
/// payload; returns the client's packet size over time as (elapsed, size) changes.
fn run(
    limit: usize,
    bytes: usize,
    shrink_to: Option<(usize, usize)>,
) -> (Pair, Vec<(Duration, usize)>, Duration) {
    let link = LinkConfig::perfect().with_latency(LATENCY).with_mtu(limit);
    let mut pair = Pair::with_config(
        jumbo_ceiling(),
        jumbo_ceiling(),
        link.clone(),
        link,
        limit as u64,
    );
    pair.start_transfer(AppConfig::bulk(bytes), AppConfig::bulk(0));
    let ch = pair.client.app.handle.expect("client handle");
    let mut sizes = Vec::new();
    let (mut last_progress, mut last_received, mut max_stall) = (pair.now, 0, Duration::ZERO);
    let mut shrunk = false;
    for _ in 0..2_000_000 {
        if !pair.step() {
            break;
        }
        if let Some(s) = pair.client.endpoint.connection_stats(ch)
            && sizes.last().is_none_or(|&(_, size)| size != s.packet_size)
        {
            sizes.push((pair.elapsed(), s.packet_size));
        }
        let received = pair.server.app.received.len();
        if received != last_received {
            max_stall = max_stall.max(pair.now - last_progress);
            last_progress = pair.now;
            last_received = received;
        }
        if let Some((after, new_limit)) = shrink_to
            && !shrunk
            && received >= after
        {
            shrunk = true;
            for link in [&mut pair.to_server, &mut pair.to_client] {
                let c = link.config().clone().with_mtu(new_limit);
                link.set_config(c);
            }
        }
    }
    assert!(pair.transfer_complete(), "transfer incomplete: {pair:?}");
    assert!(pair.server.app.received == pair.client.app.expected_output());
    (pair, sizes, max_stall)
}

#[test]
fn converges_on_links_of_every_mtu() {
    init_tracing();
    println!("link MTU | UDP payload limit | chosen size | RTTs to converge | probes sent/lost");
    for ip_mtu in [576usize, 1280, 1500, 9000] {
        let limit = ip_mtu - IP_UDP;
        // Jumbo frames need more data: each probe is a full packet of the size under test,
        // and the search takes RTTs, which the auto-tuned buffers fill faster on this
        // unlimited link (16 MiB lasted 8 RTTs, one probe short).
        let bytes = if ip_mtu > 1500 { 64 << 20 } else { 4 << 20 };
        let (pair, sizes, _) = run(limit, bytes, None);
        let &(at, chosen) = sizes.last().expect("a size");
        let stats = pair.client.app.final_stats.clone().expect("stats");
        let rtts = at.as_secs_f64() / RTT.as_secs_f64();
        println!(
            "{ip_mtu:8} | {limit:17} | {chosen:11} | {rtts:16.1} | {}/{}",
            stats.mtu_probes_sent, stats.mtu_probes_lost
        );
        assert!(chosen <= limit, "{chosen} > {limit}");
        assert!(
            limit - chosen <= 32,
            "{ip_mtu}: chose {chosen}, limit {limit}"
        );
        assert!(rtts <= 40.0, "{ip_mtu}: took {rtts:.1} RTTs");
        assert!(
            stats.mtu_probes_sent <= 12,
            "{ip_mtu}: {} probes",
            stats.mtu_probes_sent
        );
        // Lost probes are not congestion: no timeout, no loss event on a loss-free link.
        assert_eq!(stats.timeouts, 0, "{ip_mtu}: {stats:?}");
        assert_eq!(stats.congestion_events, 0, "{ip_mtu}: {stats:?}");
    }
}

#[test]
fn black_hole_mid_transfer_recovers_within_a_few_rtos() {
    init_tracing();
    // 1500-byte path shrinks to 1280 after 1 MiB: full-size packets with the DF bit vanish.
    let (pair, sizes, max_stall) = run(1500 - IP_UDP, 8 << 20, Some((1 << 20, 1280 - IP_UDP)));
    let &(_, chosen) = sizes.last().expect("a size");
    let stats = pair.client.app.final_stats.clone().expect("stats");
    println!("sizes over time: {sizes:?}\nlongest stall {max_stall:?}\n{stats:?}");
    assert!(
        sizes.iter().any(|&(_, s)| s > 1280 - IP_UDP),
        "it had found the large size first"
    );
    assert!(
        chosen <= 1280 - IP_UDP && 1280 - IP_UDP - chosen <= 32,
        "re-converged to {chosen}"
    );
    assert!(max_stall <= Duration::from_secs(3), "stalled {max_stall:?}");
    assert!(
        pair.to_server.stats().fragmented > 0,
        "stuck large packets went out fragmentable"
    );
}
