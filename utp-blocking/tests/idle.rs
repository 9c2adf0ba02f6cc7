//! An idle socket with 100 open connections uses no measurable CPU: the driver thread
//! sleeps in `poll(2)` until the next keep-alive. In its own test binary so the process's
//! CPU time is this test's alone.

#[test]
fn idle_socket_with_100_connections_uses_no_cpu() {
    utp_adapter_tests::suite::idle_socket_with_100_connections_uses_no_cpu::<
        utp_adapter_tests::adapters::Blocking,
    >();
}
