//! The running server: shared state and start-up.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::push::session::PushRegistry;
use crate::store::Store;

/// Who is connected: the key that signed, and its role.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key_name: String,
    pub role: crate::domain::Role,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.role == crate::domain::Role::Admin
    }
}

/// State shared by every connection and push, passed explicitly as `Arc<Berth>`.
pub struct Berth {
    pub config: Config,
    pub store: Store,
    /// Pushes waiting for their pre-receive hook.
    pub pushes: PushRegistry,
    /// The data plane (the router and each app's stable port, a process of its own): what it
    /// serves is changed through this.
    pub plane: Arc<crate::dataplane::link::Link>,
    /// The apps' certificates (the data plane reads the same files, told when they change).
    pub certs: crate::tls::Certs,
    /// Inbound webhook tokens (sent to the data plane) and the syncs its router triggers.
    pub inbound: crate::webhooks::inbound::Inbound,
    /// Fingerprints of keys just removed (`keys:remove`): the SSH layer closes their
    /// connections at once.
    pub revoked: tokio::sync::broadcast::Sender<String>,
    /// Builds and `run` containers each member key has going (`member_max_builds`,
    /// `member_max_runs`).
    pub builds: Arc<crate::limits::Limits<String>>,
    pub runs: Arc<crate::limits::Limits<String>>,
    /// The scheduler every operation uses, when one was set (`use_scheduler`: the ops unit
    /// tests' fake); unset, each operation connects to the engine.
    scheduler: std::sync::OnceLock<crate::deploy::Scheduler>,
    /// Set when the control plane stops (TERM): no new SSH connection or command is taken.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Pushes and commands under way (a stop waits for them, up to `shutdown_timeout`).
    busy: Arc<std::sync::atomic::AtomicUsize>,
    /// The one shutdown signal of the background tasks (`spawn_background`): set once, when the
    /// server stops serving.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Each app's deploy lock, by app id: a rename keeps the lock, a new app of a destroyed
    /// app's name does not share it.
    locks: std::sync::Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Custom domain → app, for the router (the DB's `domains`, reloaded when they change).
    domains: std::sync::RwLock<HashMap<String, String>>,
}

/// A push or command under way (`Berth::busy`).
pub struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sets `path`'s permission bits to `mode`.
fn private_mode(path: &std::path::Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))
}

impl Berth {
    pub async fn open(config: Config) -> Result<Arc<Berth>, String> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("cannot create data_dir {}: {e}", config.data_dir.display()))?;
        // The data dir holds config values, webhook secrets and every repo: root's only,
        // whatever the umask or the installer did.
        private_mode(&config.data_dir, 0o700)?;
        crate::registry::load_credentials(config.registry_credentials.as_deref())?;
        crate::deploy::network::set_network_pool(crate::config::parse_pool(&config.app_networks)?);
        let store = Store::open(&config.db_path()).await.map_err(|e| {
            format!(
                "cannot open the state DB {}: {e}",
                config.db_path().display()
            )
        })?;
        for file in ["berth.db", "berth.db-wal", "berth.db-shm"] {
            let path = config.data_dir.join(file);
            if path.exists() {
                private_mode(&path, 0o600)?;
            }
        }
        let plane = crate::dataplane::link::Link::new(
            crate::dataplane::link::socket_path(&config),
            config.drain_timeout(),
        );
        let certs = crate::tls::Certs::load(config.certs_dir());
        let builds = crate::limits::Limits::new(usize::MAX, config.member_max_builds);
        let runs = crate::limits::Limits::new(usize::MAX, config.member_max_runs);
        let berth = Arc::new(Berth {
            config,
            store,
            plane,
            pushes: PushRegistry::default(),
            builds,
            runs,
            certs,
            inbound: Default::default(),
            revoked: tokio::sync::broadcast::channel(64).0,
            shutdown: tokio::sync::watch::channel(false).0,
            stopping: tokio::sync::watch::channel(false).0,
            busy: Arc::default(),
            scheduler: std::sync::OnceLock::new(),
            locks: Default::default(),
            domains: Default::default(),
        });
        berth.load_domains().await?;
        berth.inbound.reload(&berth.store).await?;
        Ok(berth)
    }

    async fn load_domains(&self) -> Result<HashMap<String, String>, String> {
        let domains: HashMap<String, String> = self
            .store
            .domains()
            .await
            .map_err(|e| format!("cannot read domains: {e}"))?
            .into_iter()
            .collect();
        *self.domains.write().unwrap_or_else(|p| p.into_inner()) = domains.clone();
        Ok(domains)
    }

    /// Re-reads the custom domains (after domains:add/remove, apps:rename, apps:destroy) and
    /// gives them to the data plane.
    pub async fn reload_domains(&self) -> Result<(), String> {
        let domains = self.load_domains().await?;
        self.plane.set_domains(domains).await
    }

    /// Re-reads the inbound webhook tokens and gives them to the data plane.
    pub async fn reload_inbound(&self) -> Result<(), String> {
        self.inbound.reload(&self.store).await?;
        self.plane.set_tokens(self.inbound.tokens()).await
    }

    /// Gives the data plane what it routes by that the control plane owns: custom domains and
    /// inbound tokens (at start, after a data plane may have missed changes).
    pub async fn sync_plane(&self) -> Result<(), String> {
        self.reload_domains().await?;
        self.reload_inbound().await
    }

    /// The app's custom domains, sorted.
    pub fn domains_of(&self, app: &str) -> Vec<String> {
        let mut domains: Vec<String> = self
            .domains
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, owner)| owner.as_str() == app)
            .map(|(domain, _)| domain.clone())
            .collect();
        domains.sort();
        domains
    }

    /// The app's URL: through the router when it is on (HTTPS when the app's certificate
    /// covers `APP.<base_domain>`), else its stable port.
    pub fn app_url(&self, app: &str, port: u16) -> String {
        let base = self.config.base_domain();
        let host = format!("{app}.{base}");
        if let Some(https) = self.config.https_listen()
            && self
                .certs
                .info(app)
                .is_some_and(|info| crate::tls::covers(&info, &host))
        {
            return match https.port() {
                443 => format!("https://{host}"),
                other => format!("https://{host}:{other}"),
            };
        }
        match self.config.http_listen() {
            Some(listen) => {
                let base = self.config.base_domain();
                match listen.port() {
                    80 => format!("http://{app}.{base}"),
                    other => format!("http://{app}.{base}:{other}"),
                }
            }
            None => self.url(port),
        }
    }

    /// The app's port and host as a deploy target sees them.
    pub fn app_port(&self, app: &str, port: u16) -> crate::dataplane::link::AppPort {
        self.plane.app_port(app, port)
    }

    pub fn app_lock(&self, app_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(app_id).or_default().clone()
    }

    /// Takes the app's deploy lock, waiting for whoever holds it.
    pub async fn lock_app(&self, app_id: i64) -> tokio::sync::OwnedMutexGuard<()> {
        self.app_lock(app_id).lock_owned().await
    }

    /// Where apps run: the engine (connected now, and checked to answer), or the scheduler set
    /// with `use_scheduler`.
    pub async fn scheduler(&self) -> Result<crate::deploy::Scheduler, String> {
        match self.scheduler.get() {
            Some(set) => Ok(set.clone()),
            None => crate::deploy::Scheduler::connect().await,
        }
    }

    /// `scheduler`, giving up after `limit` (a hung engine must not hang a command).
    pub async fn scheduler_within(
        &self,
        limit: std::time::Duration,
    ) -> Result<crate::deploy::Scheduler, String> {
        match self.scheduler.get() {
            Some(set) => Ok(set.clone()),
            None => crate::deploy::Scheduler::connect_within(limit).await,
        }
    }

    /// Makes every operation use `scheduler` (tests of the application layer use a fake); only
    /// the first call counts.
    pub fn use_scheduler(&self, scheduler: crate::deploy::Scheduler) {
        let _ = self.scheduler.set(scheduler);
    }

    /// Runs a background task (reconciler, retention, renewals, webhook delivery) in a span of
    /// its name until it ends or the server shuts down, whichever comes first.
    pub fn spawn_background<F>(&self, name: &'static str, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        use tracing::Instrument;
        let mut shutdown = self.shutdown.subscribe();
        tokio::spawn(
            async move {
                tokio::select! {
                    () = task => tracing::debug!("ended"),
                    _ = shutdown.wait_for(|stop| *stop) => tracing::debug!("stopped at shutdown"),
                }
            }
            .instrument(tracing::info_span!("background", task = name)),
        );
    }

    /// Counts a push or command as under way while the guard lives.
    pub fn busy(&self) -> Busy {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Busy(self.busy.clone())
    }

    /// Stops taking SSH connections and commands (TERM).
    pub fn stop_serving(&self) {
        self.stopping.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves when the control plane is told to stop.
    pub async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|s| *s).await;
    }

    /// Waits until no push or command is under way, at most `max`; gives how many still are.
    pub async fn idle_within(&self, max: std::time::Duration) -> usize {
        let deadline = std::time::Instant::now() + max;
        loop {
            let busy = self.busy.load(std::sync::atomic::Ordering::Relaxed);
            if busy == 0 || std::time::Instant::now() >= deadline {
                return busy;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops the background tasks (the SSH server stopped serving).
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn url(&self, host_port: u16) -> String {
        format!("http://{}:{host_port}", self.config.public_host)
    }
}
