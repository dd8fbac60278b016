//! What the data plane (the HTTP router) sees of berth: the serving sets, which app a host
//! name is, the counters and access log, ACME challenge answers, inbound webhook tokens and its
//! own settings. Nothing else: it has no way to the store, the scheduler or the engine, so "the
//! router never touches the engine or the DB" is a fact of its type.

use std::sync::Arc;

use crate::server::Berth;

/// The router's settings, read once from the config.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_connections_per_address: usize,
    pub idle_timeout: u64,
    pub max_body_size: u64,
    pub request_timeout: u64,
}

/// The data plane's view of berth (see the module doc).
pub struct Plane {
    berth: Arc<Berth>,
    pub settings: Settings,
}

impl Plane {
    pub fn new(berth: Arc<Berth>) -> Arc<Plane> {
        let config = &berth.config;
        let settings = Settings {
            max_connections_per_address: config.max_connections_per_address,
            idle_timeout: config.idle_timeout,
            max_body_size: config.max_body_size,
            request_timeout: config.request_timeout,
        };
        Arc::new(Plane { berth, settings })
    }

    /// The serving sets: which instances answer for each app.
    #[inline]
    pub fn routes(&self) -> &crate::route::Routes {
        &self.berth.routes
    }

    /// The app served at `host`: a custom domain, else `APP.<base_domain>`.
    #[inline]
    pub fn app_for_host(&self, host: &str) -> Option<String> {
        self.berth.app_for_host(host)
    }

    #[inline]
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.berth.metrics
    }

    #[inline]
    pub fn access_log(&self) -> Option<&crate::metrics::AccessLog> {
        self.berth.access_log.as_deref()
    }

    /// Answers to ACME HTTP-01 challenges in progress.
    #[inline]
    pub fn challenges(&self) -> &crate::acme::challenges::Challenges {
        &self.berth.challenges
    }

    /// Inbound webhook tokens (a sync is queued for the control plane, never run here).
    #[inline]
    pub fn inbound(&self) -> &crate::webhooks::inbound::Inbound {
        &self.berth.inbound
    }
}
