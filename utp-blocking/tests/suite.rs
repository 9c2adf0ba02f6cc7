//! The shared behavioural suite (`utp-adapter-tests`), with threads.

utp_adapter_tests::suite!(utp_adapter_tests::adapters::Blocking);
