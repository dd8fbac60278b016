//! Deploy targets: put a release into service and report where it answers.
//!
//! Everything above this module reaches the targets through [`Scheduler`], which owns the engine
//! connection. Each target is one module implementing `Backend`: `docker` (containers through
//! the engine API) and `swarm` (a stack file rendered from `templates/swarm/`, applied with
//! `docker stack deploy`). `systemd` and `kubernetes` are rendered (`deploy:render`) but not
//! applied on these hosts: [`applicable`] refuses them before anything is written.
//! A new target is one module here, its templates, and one arm in `backend`. The engine's other
//! rooms: `inventory` (what runs, read from labels), `names` (every engine object name),
//! `network`, `volumes`, `logs`, `oneoff` (`run`, the release phase), `probe`.
//!
//! **Architecture Invariant:** the running release is replaced only after the new one answers.

pub mod docker;
pub mod inventory;
mod logs;
pub mod names;
pub mod network;
pub mod oneoff;
pub mod probe;
pub mod render;
pub mod sandbox;
mod scheduler;
pub mod swarm;
mod volumes;

pub use scheduler::Scheduler;
#[cfg(test)]
pub use scheduler::fake;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use futures_util::future::BoxFuture;

use crate::output::Output;
pub use inventory::ContainerReport;
pub use oneoff::{Chunk, OneOff, RunIn};
use render::Target;

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
    /// The release's rendered units for targets that apply files (empty for docker).
    pub units: Vec<render::Unit>,
    /// Where a target keeps the files it applies (`<data_dir>/deploy`, root-only).
    pub work_dir: PathBuf,
    /// The app's mounts as the engine takes them (`volume:/path`, `/host/dir:/path`).
    pub binds: Vec<String>,
    /// The apps this one is linked to: its containers join their networks too.
    pub links: Vec<String>,
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

/// Where a target puts the instances that serve the app's traffic.
pub trait Serving: Sync {
    /// Points the app's port and host at these instances (the serving set), replacing the
    /// last set at once.
    fn serve(&self, addresses: &[SocketAddr]) -> Result<(), String>;
    /// Resolves once no request is in flight on these instances (ones that just left the
    /// serving set), or when the drain timeout is over.
    fn drained(&self, addresses: &[SocketAddr]) -> BoxFuture<'static, ()>;
}

pub type Publish<'a> = &'a dyn Serving;

/// What every target does. `ps:start` is `deploy` of the current release; status and logs are
/// read from the containers on this engine, which both applied targets label the same way
/// (`docker::instances_of`, `docker::log_stream`).
trait Backend: Sync {
    /// Starts the release with `spec.web` web instances, waits until they answer, makes them
    /// the serving set and retires what ran before. On failure what ran before keeps serving.
    fn deploy<'a>(
        &'a self,
        docker: &'a Docker,
        spec: &'a DeploySpec,
        out: &'a Output,
        publish: Publish<'a>,
    ) -> BoxFuture<'a, Result<Vec<Instance>, String>>;

    /// Brings the running release to `spec.web` instances.
    fn scale<'a>(
        &'a self,
        docker: &'a Docker,
        spec: &'a DeploySpec,
        out: &'a Output,
        publish: Publish<'a>,
    ) -> BoxFuture<'a, Result<Vec<Instance>, String>>;

    /// Replaces every instance of the running release, one at a time, serving throughout.
    fn restart<'a>(
        &'a self,
        docker: &'a Docker,
        spec: &'a DeploySpec,
        out: &'a Output,
        publish: Publish<'a>,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Stops everything the app runs on this target (images, config and data stay); gives the
    /// number of instances stopped. Stopping an app that runs nothing here is not an error.
    fn stop<'a>(&'a self, docker: &'a Docker, app: &'a str)
    -> BoxFuture<'a, Result<usize, String>>;

    /// `stop`, and forgets the files the target keeps for the app.
    fn destroy<'a>(
        &'a self,
        docker: &'a Docker,
        app: &'a str,
        work_dir: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<usize, String>>;
}

/// The backend that applies `target` on this host, if berth can apply it at all.
fn backend(target: Target) -> Option<&'static dyn Backend> {
    match target {
        Target::Docker => Some(&docker::Containers),
        Target::Swarm => Some(&swarm::Stack),
        Target::Systemd | Target::Kubernetes => None,
    }
}

/// Every target berth can apply, with its backend (to stop an app wherever it runs).
fn backends() -> impl Iterator<Item = (Target, &'static dyn Backend)> {
    [Target::Docker, Target::Swarm]
        .into_iter()
        .filter_map(|target| Some((target, backend(target)?)))
}

/// Whether this host can apply the target; the reason when it cannot (checked before anything
/// is written or started).
pub async fn applicable(target: Target) -> Result<(), String> {
    let rendered = format!("deploy:render APP --target {target} shows what it would apply");
    match target {
        Target::Docker => Ok(()),
        Target::Systemd => {
            let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
            if pid1.trim() == "systemd" {
                Err(format!(
                    "applying systemd units is not built yet; {rendered}"
                ))
            } else {
                Err(format!(
                    "the systemd target needs systemd as PID 1 on this host, and it is {:?}; {rendered}",
                    pid1.trim()
                ))
            }
        }
        Target::Swarm => {
            Scheduler::connect_within(Duration::from_secs(2))
                .await?
                .swarm_ready()
                .await
        }
        Target::Kubernetes => Err(format!(
            "applying to Kubernetes (kubectl with a kubeconfig) is not built yet; {rendered}"
        )),
    }
}
