//! What every job handler and workflow action may use, built once at start-up.

use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

pub struct Services {
    pub config: Config,
    pub store: Store,
    pub clock: SharedClock,
    pub metrics: Metrics,
    /// Names this process in timer claims and broker connections.
    pub instance: String,
    /// The pooled SMTP transport (connects on first use).
    pub smtp: crate::mail::smtp::Smtp,
}

pub type SharedServices = Arc<Services>;
