//! An idle socket with 100 open connections does no work: the driver sleeps until the next
//! protocol deadline (keepalives, 29 s by default). In its own test binary so the process's
//! CPU time is this test's alone; the test body is the shared suite's.

#[test]
fn idle_socket_with_100_connections_uses_no_cpu() {
    utp_adapter_tests::suite::idle_socket_with_100_connections_uses_no_cpu::<
        utp_adapter_tests::adapters::Tokio,
    >();
}
