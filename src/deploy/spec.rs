//! What a target is given to run: the deploy spec of one release, and what it reports back.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::render;

/// Everything a target needs to run one release of an app's web process.
#[derive(Debug, Clone)]
pub struct DeploySpec {
    pub app: String,
    pub release: i64,
    pub image: String,
    /// The image's registry digest (`sha256:…`), when it was pushed: pulled by it.
    pub digest: Option<String>,
    /// The port the web process listens on, given to it as `PORT`.
    pub port: u16,
    /// Config vars, given to every process as environment variables.
    pub env: Vec<(String, String)>,
    /// How many web instances to run.
    pub web: u32,
    /// The web command (Procfile `web:` run with `sh -c`); empty: the image's CMD.
    pub web_command: Vec<String>,
    /// The release's other process types (Procfile, not `web` or `release`), with their counts.
    pub others: Vec<ProcessSpec>,
    /// app.json's web health check; none: the web process must answer anything on `PORT`.
    pub health: Option<crate::manifest::Healthcheck>,
    /// CPU and memory limits of each web instance (`resources:set`).
    pub resources: render::Resources,
    pub publish_address: IpAddr,
    pub ready_timeout: Duration,
    /// The release's rendered units for targets that apply files (empty for docker). systemd:
    /// web instances 1..=web and one spare (`web + 1`, a restart's surge instance), then the
    /// other process types'.
    pub units: Vec<render::Unit>,
    /// systemd: the host port of web instance N at `[N-1]` (as rendered into its unit).
    pub host_ports: Vec<u16>,
    /// Where a target keeps the files it applies (`<data_dir>/deploy`, root-only).
    pub work_dir: PathBuf,
    /// The app's mounts as the engine takes them (`volume:/path`, `/host/dir:/path`).
    pub binds: Vec<String>,
    /// The apps this one is linked to: its containers join their networks too.
    pub links: Vec<String>,
    /// The registry address the target's nodes pull the image from (`cluster_registry`, else
    /// `registry`): the swarm target hands berth's credentials for it to the swarm.
    pub pull_registry: Option<String>,
}

/// A process type without a port (worker, clock, ...): its command and how many run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: String,
    pub command: Vec<String>,
    pub count: u32,
    pub resources: render::Resources,
}

/// One running instance of a process, and where it answers: a socket address, which the
/// target works out (this host's publish address and the container's host port for the docker
/// target), so an instance may live on another machine.
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub index: u32,
    pub address: Option<SocketAddr>,
}

/// The port the web process gets when the image does not EXPOSE exactly one (Heroku's default).
pub const DEFAULT_PORT: u16 = 5000;
