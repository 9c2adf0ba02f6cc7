//! The `--controller` choice shared by `utp bench` and the testbed.

use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use utp_tokio::proto::congestion::{
    ControllerFactory, LedbatConfig, LedbatPlusPlusConfig, NewRenoConfig,
};

/// A uTP congestion controller with its default settings.
#[derive(Clone, Copy, Debug, Eq, PartialEq, ValueEnum)]
pub(crate) enum Controller {
    /// LEDBAT (RFC 6817) with slow start, 100 ms target: the default.
    Ledbat,
    /// LEDBAT++ (draft-irtf-iccrg-ledbat-plus-plus), 60 ms target.
    #[value(name = "ledbat++")]
    LedbatPlusPlus,
    /// Loss-based NewReno, for comparison.
    Newreno,
}

impl Controller {
    /// The factory to put in `ConnectionConfig::controller`.
    pub(crate) fn factory(self) -> Arc<dyn ControllerFactory> {
        match self {
            Self::Ledbat => Arc::new(LedbatConfig::default()),
            Self::LedbatPlusPlus => Arc::new(LedbatPlusPlusConfig::default()),
            Self::Newreno => Arc::new(NewRenoConfig::default()),
        }
    }

    /// The queuing delay the controller aims for, if it aims for one: the defaults of
    /// `LedbatConfig` (100 ms, libutp's `CCONTROL_TARGET`) and `LedbatPlusPlusConfig`
    /// (60 ms, the draft's target).
    pub(crate) fn target(self) -> Option<Duration> {
        match self {
            Self::Ledbat => Some(Duration::from_millis(100)),
            Self::LedbatPlusPlus => Some(Duration::from_millis(60)),
            Self::Newreno => None,
        }
    }

    /// The name on the command line (`ledbat`, `ledbat++`, `newreno`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ledbat => "ledbat",
            Self::LedbatPlusPlus => "ledbat++",
            Self::Newreno => "newreno",
        }
    }
}
