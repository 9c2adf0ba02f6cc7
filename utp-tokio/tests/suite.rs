//! The shared behavioural suite (`utp-adapter-tests`), on a multi-threaded tokio runtime.

utp_adapter_tests::suite!(utp_adapter_tests::adapters::Tokio);
