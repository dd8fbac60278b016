//! Server configuration: defaults, then the TOML file, then `BERTH_<KEY>` environment variables.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Everything berth owns lives under this directory: DB, repos, host key, logs.
    pub data_dir: PathBuf,
    /// Where the embedded SSH server listens.
    pub ssh_listen: SocketAddr,
    /// The host name put in the URLs reported to users.
    pub public_host: String,
    /// The address app ports are published on.
    pub publish_address: IpAddr,
    /// `host:port` of the image registry; none means single-host mode (images stay local).
    pub registry: Option<String>,
    /// A root-only file holding `user:password` for the registry (install.sh makes it, and
    /// gives the registry htpasswd auth); none: the registry takes anonymous pushes.
    pub registry_credentials: Option<PathBuf>,
    /// `host:port` of the same registry at an address every swarm node reaches (the manager's
    /// address, set by `install.sh --swarm ADDR`): swarm stacks name their images by it so a
    /// task placed on any node can pull its release. None: nodes pull from `registry` (a
    /// single-node swarm, where loopback is the manager itself).
    pub cluster_registry: Option<String>,
    /// Seconds a new release has to answer before the deploy is abandoned.
    pub ready_timeout: u64,
    /// The branch that deploys when an app has no branch of its own.
    pub deploy_branch: String,
    /// The target of apps that have none of their own: docker, systemd, swarm or kubernetes.
    pub default_target: crate::domain::Target,
    /// A directory whose `<target>/` subdirectories override the built-in templates.
    pub template_dir: Option<PathBuf>,
    /// Where the HTTP router listens (routing by Host to every app); `""` or `off`: no router.
    pub http_listen: String,
    /// Apps answer at `APP.<base_domain>` through the router; empty: `public_host`.
    pub base_domain: Option<String>,
    /// Where the router serves HTTPS (certificates by SNI); `""` or `off`: no HTTPS.
    pub https_listen: String,
    /// The ACME directory `letsencrypt:enable` gets certificates from.
    pub acme_directory: String,
    /// A PEM root the ACME server's own HTTPS is checked against (test CAs such as pebble);
    /// none: the usual public roots.
    pub acme_ca_cert: Option<PathBuf>,
    /// The contact address given to the ACME server.
    pub acme_email: Option<String>,
    /// ACME certificates are renewed when they end within this many days.
    pub acme_renew_days: i64,
    /// Where `/metrics` (Prometheus) is served; `""` or `off`: nowhere.
    pub admin_listen: String,
    /// How the router spreads requests over an app's instances: `round_robin` or
    /// `least_connections`.
    pub balance: crate::route::Balance,
    /// Seconds an app has to start answering a request before the router answers 504.
    pub request_timeout: u64,
    /// Seconds a client connection may stay idle (or take to send a request's headers).
    pub idle_timeout: u64,
    /// The IPv4 range each app's own engine network takes a /24 of (at most /24 wide).
    pub app_networks: String,
    /// The subnet of the network members' builds run on (public internet only).
    pub build_subnet: String,
    /// Seconds a connection to an app's own TCP port may pass with no byte either way.
    pub tcp_idle_timeout: u64,
    /// Connections one client address may hold open to the router (and to each app's port).
    pub max_connections_per_address: usize,
    /// Apps a member key may own (admins: no limit).
    pub member_max_apps: usize,
    /// Builds (pushes, `ps:rebuild`, syncs) one member key may have running at once.
    pub member_max_builds: usize,
    /// `run` containers one member key may have at once.
    pub member_max_runs: usize,
    /// Largest request body the router passes on, in bytes; bigger gets 413.
    pub max_body_size: u64,
    /// Most seconds an instance that left the serving set gets to finish its requests.
    pub drain_timeout: u64,
    /// Most seconds a stopping control plane (TERM: `systemctl stop/restart`, `berth stop`, an
    /// upgrade) waits for the pushes and commands under way before it fails the rest.
    pub shutdown_timeout: u64,
    /// One line per routed request in `<data_dir>/logs/access.log`: `text`, `json` or `off`.
    pub access_log: String,
    /// Releases per app whose images stay on this host (rollbacks to them never rebuild).
    pub keep_releases: i64,
    /// Images of the buildpacks (`python = "python:3.12-slim"`, `go_runtime = ...`), over their
    /// defaults.
    pub buildpack_images: std::collections::BTreeMap<String, String>,
    /// Whether members' webhooks and `git:sync` may reach loopback, link-local and private
    /// addresses (admins' always may). Off: such destinations are refused (`netguard`).
    pub allow_private_destinations: bool,
    /// Seconds the release phase, predeploy or postdeploy may run before it is stopped and the
    /// deploy fails (the app's lock is held meanwhile).
    pub phase_timeout: u64,
    /// The largest push git accepts, in bytes (`receive.maxInputSize`).
    pub max_push_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/berth"),
            ssh_listen: "0.0.0.0:2222".parse().expect("literal address"),
            public_host: "localhost".into(),
            publish_address: "0.0.0.0".parse().expect("literal address"),
            registry: None,
            registry_credentials: None,
            cluster_registry: None,
            ready_timeout: 30,
            deploy_branch: "main".into(),
            default_target: crate::domain::Target::Docker,
            template_dir: None,
            buildpack_images: Default::default(),
            http_listen: "0.0.0.0:80".into(),
            base_domain: None,
            admin_listen: "127.0.0.1:9180".into(),
            https_listen: "0.0.0.0:443".into(),
            acme_directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            acme_ca_cert: None,
            acme_email: None,
            acme_renew_days: 30,
            balance: crate::route::Balance::RoundRobin,
            request_timeout: 60,
            idle_timeout: 75,
            tcp_idle_timeout: 3600,
            app_networks: "10.200.0.0/14".into(),
            build_subnet: "10.204.0.0/24".into(),
            max_connections_per_address: 1024,
            member_max_apps: 50,
            member_max_builds: 2,
            member_max_runs: 4,
            max_body_size: 100 * 1024 * 1024,
            drain_timeout: 30,
            shutdown_timeout: 20,
            access_log: "text".into(),
            keep_releases: 5,
            allow_private_destinations: false,
            phase_timeout: 3600,
            max_push_size: 1 << 30,
        }
    }
}

const KEYS: &[&str] = &[
    "data_dir",
    "ssh_listen",
    "public_host",
    "publish_address",
    "registry",
    "registry_credentials",
    "cluster_registry",
    "ready_timeout",
    "deploy_branch",
    "default_target",
    "template_dir",
    "http_listen",
    "base_domain",
    "admin_listen",
    "https_listen",
    "acme_directory",
    "acme_ca_cert",
    "acme_email",
    "acme_renew_days",
    "balance",
    "request_timeout",
    "idle_timeout",
    "tcp_idle_timeout",
    "app_networks",
    "build_subnet",
    "max_connections_per_address",
    "member_max_apps",
    "member_max_builds",
    "member_max_runs",
    "max_body_size",
    "drain_timeout",
    "shutdown_timeout",
    "access_log",
    "keep_releases",
    "allow_private_destinations",
    "phase_timeout",
    "max_push_size",
];

/// Keys whose environment values are true or false.
const BOOL_KEYS: &[&str] = &["allow_private_destinations"];

/// Keys whose environment values are whole numbers.
const NUMBER_KEYS: &[&str] = &[
    "phase_timeout",
    "max_push_size",
    "ready_timeout",
    "acme_renew_days",
    "request_timeout",
    "idle_timeout",
    "tcp_idle_timeout",
    "max_connections_per_address",
    "member_max_apps",
    "member_max_builds",
    "member_max_runs",
    "max_body_size",
    "drain_timeout",
    "shutdown_timeout",
    "keep_releases",
];

/// `a.b.c.d/N` (N at most 24, the address on a /24 boundary) as (address, N).
pub fn parse_pool(text: &str) -> Result<(u32, u8), String> {
    let bad =
        || format!("app_networks {text:?} must be an IPv4 range like 10.200.0.0/14 (at most /24)");
    let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
    let address: std::net::Ipv4Addr = address.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let address = u32::from(address);
    if !(8..=24).contains(&prefix) || address & ((1u32 << (32 - prefix)) - 1) != 0 {
        return Err(bad());
    }
    Ok((address, prefix))
}

impl Config {
    /// Loads the file (if given) and applies `BERTH_*` overrides from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config {}: {e}", path.display()))?,
            None => String::new(),
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::from_sources(&text, &env).map_err(|e| match path {
            Some(path) => format!("config {}: {e}", path.display()),
            None => e,
        })
    }

    /// File text and environment pairs in, validated config out.
    pub fn from_sources(text: &str, env: &[(String, String)]) -> Result<Config, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, value) in env {
            let Some(key) = name.strip_prefix("BERTH_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if !KEYS.contains(&key.as_str()) {
                continue;
            }
            let value = if NUMBER_KEYS.contains(&key.as_str()) {
                toml::Value::Integer(
                    value
                        .parse()
                        .map_err(|_| format!("{name}={value:?} is not a whole number"))?,
                )
            } else if BOOL_KEYS.contains(&key.as_str()) {
                toml::Value::Boolean(
                    value
                        .parse()
                        .map_err(|_| format!("{name}={value:?} is not true or false"))?,
                )
            } else {
                toml::Value::String(value.clone())
            };
            table.insert(key, value);
        }
        for optional in [
            "registry",
            "registry_credentials",
            "cluster_registry",
            "template_dir",
            "base_domain",
            "acme_ca_cert",
            "acme_email",
        ] {
            if table.get(optional).and_then(|v| v.as_str()) == Some("") {
                table.remove(optional);
            }
        }
        let config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        parse_pool(&self.app_networks)?;
        if parse_pool(&self.build_subnet).is_err() || !self.build_subnet.ends_with("/24") {
            return Err(format!(
                "build_subnet {:?} must be an IPv4 /24 like 10.204.0.0/24",
                self.build_subnet
            ));
        }
        for (key, registry) in [
            ("registry", &self.registry),
            ("cluster_registry", &self.cluster_registry),
        ] {
            let Some(registry) = registry else { continue };
            let ok = !registry.is_empty()
                && registry
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:_[]".contains(&b));
            if !ok {
                return Err(format!("{key} {registry:?} must be host:port"));
            }
        }
        if self.cluster_registry.is_some() && self.registry.is_none() {
            return Err(
                "cluster_registry is the registry's address for the swarm's nodes: set registry too"
                    .to_string(),
            );
        }
        let keys = crate::buildpack::image_keys();
        for (key, image) in &self.buildpack_images {
            if !keys.contains(key) {
                return Err(format!(
                    "buildpack_images: unknown key {key:?} (known: {})",
                    keys.join(", ")
                ));
            }
            if image.is_empty() || image.contains(char::is_whitespace) {
                return Err(format!(
                    "buildpack_images.{key}: {image:?} is not an image name"
                ));
            }
        }
        for (key, value) in [
            ("http_listen", &self.http_listen),
            ("admin_listen", &self.admin_listen),
            ("https_listen", &self.https_listen),
        ] {
            if !matches!(value.as_str(), "" | "off") && value.parse::<SocketAddr>().is_err() {
                return Err(format!("{key} {value:?} must be host:port (or \"off\")"));
            }
        }
        if self.idle_timeout <= self.request_timeout {
            return Err(format!(
                "idle_timeout ({} s) must be longer than request_timeout ({} s): a client waiting for a slow app would be cut off as idle",
                self.idle_timeout, self.request_timeout
            ));
        }
        if !matches!(self.access_log.as_str(), "text" | "json" | "off") {
            return Err(format!(
                "access_log {:?} must be text, json or off",
                self.access_log
            ));
        }
        for (key, value) in [
            ("request_timeout", self.request_timeout),
            ("idle_timeout", self.idle_timeout),
            ("tcp_idle_timeout", self.tcp_idle_timeout),
            (
                "max_connections_per_address",
                self.max_connections_per_address as u64,
            ),
            ("max_body_size", self.max_body_size),
        ] {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if let Some(domain) = &self.base_domain
            && !crate::names::is_host_name(domain)
        {
            return Err(format!("base_domain {domain:?} must be a host name"));
        }
        if self.ready_timeout == 0 {
            return Err("ready_timeout must be at least 1 second".into());
        }
        if self.keep_releases < 1 {
            return Err(
                "keep_releases must be at least 1 (the running release's image stays)".into(),
            );
        }
        if self.public_host.is_empty() || self.public_host.contains(['/', ' ']) {
            return Err(format!(
                "public_host {:?} must be a host name",
                self.public_host
            ));
        }
        Ok(())
    }

    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.ready_timeout)
    }
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("berth.db")
    }
    pub fn repos_dir(&self) -> PathBuf {
        self.data_dir.join("repos")
    }
    pub fn host_key_path(&self) -> PathBuf {
        self.data_dir.join("ssh_host_ed25519_key")
    }
    /// Where the HTTP router listens; none when it is off.
    pub fn http_listen(&self) -> Option<SocketAddr> {
        self.http_listen.parse().ok()
    }
    /// Where the router serves HTTPS; none when it is off.
    pub fn https_listen(&self) -> Option<SocketAddr> {
        self.https_listen.parse().ok()
    }
    pub fn certs_dir(&self) -> PathBuf {
        self.data_dir.join("certs")
    }
    /// Where `/metrics` is served; none when it is off.
    pub fn admin_listen(&self) -> Option<SocketAddr> {
        self.admin_listen.parse().ok()
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }
    /// The domain apps answer under through the router.
    pub fn base_domain(&self) -> &str {
        self.base_domain.as_deref().unwrap_or(&self.public_host)
    }
    /// Files the deploy targets apply (swarm stack files), root-only.
    pub fn deploy_dir(&self) -> PathBuf {
        self.data_dir.join("deploy")
    }
    pub fn hooks_dir(&self) -> PathBuf {
        self.data_dir.join("hooks")
    }
    pub fn hook_socket_path(&self) -> PathBuf {
        self.data_dir.join("run").join("hook.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, parse_pool};

    #[test]
    fn the_default_app_networks_are_the_pool_the_engine_module_falls_back_to() {
        assert_eq!(
            parse_pool(&Config::default().app_networks),
            Ok(crate::deploy::network::DEFAULT_APP_NETWORKS)
        );
    }

    #[test]
    fn env_overrides_file() {
        let env = vec![
            ("BERTH_REGISTRY".to_string(), "127.0.0.1:5055".to_string()),
            ("BERTH_READY_TIMEOUT".to_string(), "7".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let config =
            Config::from_sources("public_host = \"example.org\"\nready_timeout = 3\n", &env)
                .unwrap();
        assert_eq!(config.public_host, "example.org");
        assert_eq!(config.registry.as_deref(), Some("127.0.0.1:5055"));
        assert_eq!(config.ready_timeout, 7);
        assert_eq!(config.ssh_listen.port(), 2222);
    }

    #[test]
    fn unknown_and_bad_keys_are_errors() {
        assert!(Config::from_sources("colour = 1", &[]).is_err());
        assert!(Config::from_sources("registry = \"a b\"", &[]).is_err());
        assert!(Config::from_sources("ssh_listen = \"nope\"", &[]).is_err());
    }
}
