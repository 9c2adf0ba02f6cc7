//! The shared behavioural suite (`utp-adapter-tests`), under both executors the crate
//! promises to work with: `async_std::task::block_on` and `smol::block_on`.

mod async_std {
    utp_adapter_tests::suite!(utp_adapter_tests::adapters::AsyncStd);
}

mod smol {
    utp_adapter_tests::suite!(utp_adapter_tests::adapters::Smol);
}
