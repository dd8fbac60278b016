//! The data plane's state: what the HTTP router and the apps' ports serve. It lives in the data
//! plane process (`berth dataplane`, `dataplane.rs`), apart from the control plane, which tells
//! it what to serve over a Unix socket and may restart or crash while it goes on serving.
//!
//! Nothing here reaches the store, the scheduler or the engine: the serving sets, which app a
//! host name is, the counters and access log, ACME challenge answers, inbound webhook tokens,
//! the certificates (read from their files) and the router's own settings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::Config;

/// The router's settings, read once from the config.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_connections_per_address: usize,
    pub idle_timeout: u64,
    pub max_body_size: u64,
    pub request_timeout: u64,
}

/// The data plane's state (see the module doc).
pub struct Plane {
    pub settings: Settings,
    routes: crate::route::Routes,
    base_domain: String,
    /// Custom domain → app (the control plane sends the whole map when it changes).
    domains: RwLock<HashMap<String, String>>,
    metrics: crate::metrics::Metrics,
    access_log: Option<Arc<crate::metrics::AccessLog>>,
    challenges: crate::acme::challenges::Challenges,
    inbound: crate::webhooks::inbound::Inbound,
    certs: crate::tls::Certs,
    /// Set when this process hands its listeners to a newer one: every response then closes
    /// its connection, so clients' next requests reach the new process.
    draining: AtomicBool,
    /// Cleared when the router's listeners stop accepting (`router::stop_accepting`).
    pub(crate) accepting: tokio::sync::watch::Sender<bool>,
    /// The router's client connections open now.
    pub(crate) connections: std::sync::atomic::AtomicUsize,
}

impl Plane {
    pub fn new(config: &Config) -> Result<Arc<Plane>, String> {
        let settings = Settings {
            max_connections_per_address: config.max_connections_per_address,
            idle_timeout: config.idle_timeout,
            max_body_size: config.max_body_size,
            request_timeout: config.request_timeout,
        };
        let routes = crate::route::Routes::bounded(
            config.publish_address,
            config.balance,
            std::time::Duration::from_secs(config.tcp_idle_timeout),
            config.max_connections_per_address,
        );
        Ok(Arc::new(Plane {
            settings,
            routes,
            base_domain: config.base_domain().to_string(),
            domains: RwLock::default(),
            metrics: Default::default(),
            access_log: crate::metrics::AccessLog::open(&config.access_log, &config.logs_dir())?,
            challenges: Default::default(),
            inbound: Default::default(),
            certs: crate::tls::Certs::load(config.certs_dir()),
            draining: AtomicBool::new(false),
            accepting: tokio::sync::watch::channel(true).0,
            connections: Default::default(),
        }))
    }

    /// The serving sets: which instances answer for each app.
    #[inline]
    pub fn routes(&self) -> &crate::route::Routes {
        &self.routes
    }

    /// The app served at `host`: a custom domain, else `APP.<base_domain>`.
    pub fn app_for_host(&self, host: &str) -> Option<String> {
        if let Some(app) = self
            .domains
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
        {
            return Some(app.clone());
        }
        let name = host.strip_suffix(&self.base_domain)?.strip_suffix('.')?;
        crate::names::AppName::parse(name)
            .ok()
            .map(|n| n.as_str().to_string())
    }

    pub fn set_domains(&self, domains: HashMap<String, String>) {
        *self.domains.write().unwrap_or_else(|p| p.into_inner()) = domains;
    }

    pub fn domains(&self) -> HashMap<String, String> {
        self.domains
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    #[inline]
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    #[inline]
    pub fn access_log(&self) -> Option<&crate::metrics::AccessLog> {
        self.access_log.as_deref()
    }

    /// Answers to ACME HTTP-01 challenges in progress.
    #[inline]
    pub fn challenges(&self) -> &crate::acme::challenges::Challenges {
        &self.challenges
    }

    /// Inbound webhook tokens (a sync is queued for the control plane, never run here).
    #[inline]
    pub fn inbound(&self) -> &crate::webhooks::inbound::Inbound {
        &self.inbound
    }

    /// The apps' certificates, by SNI.
    #[inline]
    pub fn certs(&self) -> &crate::tls::Certs {
        &self.certs
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    #[inline]
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
