//! The one handle above `deploy/` on where apps run: [`Scheduler`] owns the engine connection
//! and everything target-specific (deploy, scale, restart, stop, destroy, canaries beside the
//! current release, revive for the reconciler, instances, logs, one-off runs), dispatching to the
//! target that applies. Nothing above `deploy/` holds a `bollard::Docker`: the application layer
//! (`ops`), the commands, the pipeline and the reconciler hold a `Scheduler`.

// Outside tests the engine is the only kind of scheduler, so `engine_or_fake!` matches one arm.
#![allow(clippy::infallible_destructuring_match)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;

use super::backend::Backend;
use super::inventory::{self, AppContainer, AppImage, ContainerReport, ImageIdentity};
use super::oneoff::{self, OneOff, RunIn};
use super::render::Target;
use super::serving::Publish;
use super::spec::{DeploySpec, Instance, ProcessSpec};
use super::{docker, logs, network, swarm, systemd, volumes};
use crate::engine;
use crate::output::Output;

/// Where apps run: the engine (and the swarm through it), by target. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Engine(Docker),
    /// The application layer's unit tests: records what it was asked, fails what it is told to.
    #[cfg(test)]
    Fake(std::sync::Arc<fake::Fake>),
}

/// The engine connection, or (tests) the fake's answer for this method.
macro_rules! engine_or_fake {
    ($self:ident, $fake:ident => $answer:expr) => {
        match &$self.inner {
            Inner::Engine(docker) => docker,
            #[cfg(test)]
            #[allow(unused_variables)]
            Inner::Fake($fake) => {
                #[allow(clippy::let_unit_value, clippy::unit_arg)]
                let answer = $answer;
                return answer;
            }
        }
    };
}

impl Scheduler {
    /// Connects to the local engine and checks that it answers.
    pub async fn connect() -> Result<Self, String> {
        Ok(Self {
            inner: Inner::Engine(engine::connect().await?),
        })
    }

    /// `connect`, giving up after `limit` (a hung engine must not hang a command).
    pub async fn connect_within(limit: Duration) -> Result<Self, String> {
        Ok(Self {
            inner: Inner::Engine(engine::connect_within(limit).await?),
        })
    }

    /// Builds an image from a context through the engine (`build::build`).
    #[allow(clippy::too_many_arguments)]
    pub async fn build_image(
        &self,
        context: crate::build::Context,
        tag: &str,
        labels: HashMap<String, String>,
        network: Option<&str>,
        cache_scope: &str,
        out: &Output,
    ) -> Result<(), String> {
        let docker = engine_or_fake!(self, fake => fake.check("build").map(|()| fake.did(format!("build {tag}"))));
        crate::build::build(docker, context, tag, labels, network, cache_scope, out).await
    }

    /// Gives a built image its release name and drops the build tag (`registry::retag`).
    pub async fn retag(&self, build_tag: &str, image: &str) -> Result<(), String> {
        let docker = engine_or_fake!(self, fake => Ok(fake.did(format!("retag {image}"))));
        crate::registry::retag(docker, build_tag, image).await
    }

    /// Pushes a release image to the registry; gives its digest (`registry::push`).
    pub async fn push_image(
        &self,
        image: &str,
        registry: &str,
        out: &Output,
    ) -> Result<String, String> {
        let docker = engine_or_fake!(self, fake => { fake.did(format!("push {image}")); Ok(format!("sha256:{:064}", 0)) });
        crate::registry::push(docker, image, registry, out).await
    }

    /// Makes sure a release image is on this engine, pulled by its digest when it is not
    /// (`registry::ensure_local`).
    pub async fn ensure_image(
        &self,
        image: &str,
        digest: Option<&str>,
        out: &Output,
    ) -> Result<(), String> {
        let docker = engine_or_fake!(self, fake => Ok(()));
        crate::registry::ensure_local(docker, image, digest, out).await
    }

    /// A scheduler that runs nothing: it records what it is asked and fails what `fake` says.
    #[cfg(test)]
    pub fn fake(fake: std::sync::Arc<fake::Fake>) -> Self {
        Self {
            inner: Inner::Fake(fake),
        }
    }

    fn applied(target: Target) -> Result<&'static dyn Backend, String> {
        backend(target).ok_or_else(|| format!("cannot apply {target} here"))
    }

    /// Starts the release on `target` with `spec.web` web instances, waits until they answer,
    /// makes them the serving set and retires what ran before. On failure what ran before keeps
    /// serving.
    pub async fn deploy(
        &self,
        target: Target,
        spec: &DeploySpec,
        out: &Output,
        serving: Publish<'_>,
    ) -> Result<Vec<Instance>, String> {
        let docker =
            engine_or_fake!(self, fake => fake.start("deploy", target, spec, Some(serving)).await);
        Self::applied(target)?
            .deploy(docker, spec, out, serving)
            .await
    }

    /// Brings the running release to the spec's formation on `target`.
    pub async fn scale(
        &self,
        target: Target,
        spec: &DeploySpec,
        out: &Output,
        serving: Publish<'_>,
    ) -> Result<Vec<Instance>, String> {
        let docker =
            engine_or_fake!(self, fake => fake.start("scale", target, spec, Some(serving)).await);
        Self::applied(target)?
            .scale(docker, spec, out, serving)
            .await
    }

    /// Replaces every instance of the running release, one at a time, serving throughout.
    pub async fn restart(
        &self,
        target: Target,
        spec: &DeploySpec,
        out: &Output,
        serving: Publish<'_>,
    ) -> Result<(), String> {
        let docker = engine_or_fake!(self, fake => fake.check("restart").map(|()| fake.did(format!("restart {} v{}", spec.app, spec.release))));
        Self::applied(target)?
            .restart(docker, spec, out, serving)
            .await
    }

    /// Stops the app on every target but `target` (how `apps:set target=` moves an app): what
    /// each stopped, or why it could not.
    pub async fn stop_elsewhere(
        &self,
        target: Target,
        app: &str,
    ) -> Vec<(Target, Result<usize, String>)> {
        let docker = engine_or_fake!(self, fake => Vec::new());
        let mut stopped = Vec::new();
        for (other, old) in backends().filter(|(t, _)| *t != target) {
            stopped.push((other, old.stop(docker, app).await));
        }
        stopped
    }

    /// Stops the app on every target (whichever it runs on); gives the instances stopped. With
    /// `forget`, the targets also drop the files they keep for it under `work_dir`
    /// (`apps:destroy`).
    pub async fn stop_everywhere(
        &self,
        app: &str,
        forget: bool,
        work_dir: &Path,
    ) -> Result<usize, String> {
        let docker = engine_or_fake!(self, fake => { fake.did(format!("stop {app}")); Ok(0) });
        let mut stopped = 0;
        for (_, backend) in backends() {
            stopped += if forget {
                backend.destroy(docker, app, work_dir).await?
            } else {
                backend.stop(docker, app).await?
            };
        }
        Ok(stopped)
    }

    /// Starts a release's web instances beside the current release's (a canary; the docker
    /// target), waiting until they answer; the serving set is the caller's to change.
    pub async fn deploy_beside(
        &self,
        spec: &DeploySpec,
        out: &Output,
    ) -> Result<Vec<Instance>, String> {
        let docker = engine_or_fake!(self, fake => fake.start("deploy_beside", Target::Docker, spec, None).await);
        docker::deploy_beside(docker, spec, out).await
    }

    /// Stops one release's containers (docker target) once their requests are done.
    pub async fn retire_release(&self, app: &str, release: i64, serving: Publish<'_>) {
        let docker = engine_or_fake!(self, fake => fake.did(format!("retire {app} v{release}")));
        docker::retire_release(docker, app, release, serving).await
    }

    /// Brings back web instance `index` of the spec's release (docker target; the reconciler):
    /// what it did (`started`, `recreated`, ...).
    pub async fn revive(
        &self,
        spec: &DeploySpec,
        index: u32,
        existing: Option<&ContainerReport>,
    ) -> Result<&'static str, String> {
        let docker =
            engine_or_fake!(self, fake => Err("the fake scheduler does not revive".to_string()));
        docker::revive(docker, spec, index, existing).await
    }

    /// Starts instance `index` of a process type without a port (docker target).
    pub async fn start_other(
        &self,
        spec: &DeploySpec,
        process: &ProcessSpec,
        index: u32,
        out: &Output,
    ) -> Result<String, String> {
        let docker = engine_or_fake!(self, fake => Err("the fake scheduler does not start workers".to_string()));
        docker::start_other(docker, spec, process, index, out).await
    }

    /// The app's systemd units (systemd target; none elsewhere) and what systemd says of each.
    pub async fn units_of(&self, app: &str) -> Vec<(systemd::UnitFile, systemd::UnitState)> {
        let _ = engine_or_fake!(self, fake => Vec::new());
        let units = systemd::unit_files(app);
        let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
        let states = systemd::unit_states(&names).await.unwrap_or_default();
        let mut states = states.into_iter();
        units
            .into_iter()
            .map(|unit| (unit, states.next().unwrap_or_default()))
            .collect()
    }

    /// Brings back instance `index` of `process` of the spec's release (systemd target; the
    /// reconciler): what it did (`started`, `recreated`).
    pub async fn revive_unit(
        &self,
        spec: &DeploySpec,
        process: &str,
        index: u32,
    ) -> Result<&'static str, String> {
        let docker =
            engine_or_fake!(self, fake => Err("the fake scheduler does not revive".to_string()));
        systemd::revive(docker, spec, process, index).await
    }

    /// The journal of one systemd unit: the last `tail` lines, then (with `follow`) what it
    /// writes.
    pub fn unit_logs(
        &self,
        unit: &str,
        tail: i64,
        follow: bool,
    ) -> futures_util::stream::BoxStream<'static, Vec<u8>> {
        let _ = engine_or_fake!(self, fake => Box::pin(futures_util::stream::empty()));
        systemd::journal_stream(unit, tail, follow)
    }

    /// The port a release's web process listens on: its image's single EXPOSE, else 5000.
    pub async fn web_port(&self, image: &str) -> Result<u16, String> {
        let docker = engine_or_fake!(self, fake => Ok(fake.web_port.load(std::sync::atomic::Ordering::Relaxed)));
        docker::web_port(docker, image).await
    }

    /// The app's instances on this engine (both applied targets label theirs the same way),
    /// of one release or all.
    pub async fn instances_of(
        &self,
        app: &str,
        release: Option<i64>,
    ) -> Result<Vec<ContainerReport>, String> {
        let docker = engine_or_fake!(self, fake => Ok(Vec::new()));
        let mut reports = inventory::instances_of(docker, app, release).await?;
        // Swarm tasks come from the swarm (they may run on any node), not from this engine.
        reports.retain(|c| c.swarm_service.is_none());
        let tasks = swarm::running_tasks(docker).await.remove(app);
        reports.extend(
            tasks
                .into_iter()
                .flatten()
                .filter(|t| release.is_none_or(|r| t.release == r)),
        );
        reports.sort_by(|a, b| {
            (a.release, &a.process, a.index).cmp(&(b.release, &b.process, b.index))
        });
        Ok(reports)
    }

    /// The id of this engine's swarm node, when it is part of a swarm (an app with volumes is
    /// pinned to it: its volumes live here).
    pub async fn local_node(&self) -> Option<String> {
        let docker = engine_or_fake!(self, fake => None);
        let info = docker.info().await.ok()?;
        let swarm = info.swarm?;
        let active = swarm.local_node_state.map(|s| s.to_string()).as_deref() == Some("active");
        swarm.node_id.filter(|id| active && !id.is_empty())
    }

    /// Every instance berth runs, by app: this engine's containers in one call, the swarm's
    /// tasks (on any node) in another.
    pub async fn all_instances(&self) -> Result<HashMap<String, Vec<ContainerReport>>, String> {
        let docker = engine_or_fake!(self, fake => Ok(HashMap::new()));
        let mut by_app = inventory::all_instances(docker).await?;
        for reports in by_app.values_mut() {
            reports.retain(|c| c.swarm_service.is_none());
        }
        for (app, tasks) in swarm::running_tasks(docker).await {
            by_app.entry(app).or_default().extend(tasks);
        }
        Ok(by_app)
    }

    /// The reports with what only an inspection tells (restart counts).
    pub async fn with_details(&self, reports: Vec<ContainerReport>) -> Vec<ContainerReport> {
        let docker = engine_or_fake!(self, fake => reports);
        inventory::with_details(docker, reports).await
    }

    /// The log of one instance: the last `tail` lines, then (with `follow`) what it writes.
    pub fn logs(
        &self,
        instance: &ContainerReport,
        tail: i64,
        follow: bool,
    ) -> futures_util::stream::BoxStream<'static, Vec<u8>> {
        let docker = engine_or_fake!(self, fake => Box::pin(futures_util::stream::empty()));
        // A swarm task's log comes through the swarm (from whichever node runs it).
        match instance
            .swarm_service
            .as_ref()
            .and(instance.name.rsplit('.').next())
        {
            Some(task) => logs::task_log_stream(docker, task, tail, follow),
            None => logs::log_stream(docker, &instance.name, tail, follow),
        }
    }

    /// A one-off container of the app (`run`), attached to the caller.
    pub async fn run_one_off(
        &self,
        app: &str,
        image: &str,
        env: Vec<String>,
        command: Vec<String>,
        within: RunIn,
        tty: bool,
    ) -> Result<OneOff, String> {
        let docker = engine_or_fake!(self, fake => Err("the fake scheduler runs no one-off containers".to_string()));
        oneoff::run_one_off(docker, app, image, env, command, within, tty).await
    }

    /// `run:task`: a one-off swarm task of the app, on any node its placement allows.
    pub async fn run_task(&self, run: swarm::TaskRun) -> Result<OneOff, String> {
        let docker =
            engine_or_fake!(self, fake => Err("the fake scheduler runs no tasks".to_string()));
        swarm::check(docker).await?;
        swarm::run_task(docker, run).await
    }

    /// A one-off container run to its end (release phase, app.json scripts): its exit code.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_to_end(
        &self,
        app: &str,
        image: &str,
        env: Vec<String>,
        command: Vec<String>,
        within: RunIn,
        limit: Duration,
        out: &Output,
    ) -> Result<i64, String> {
        let docker = engine_or_fake!(self, fake => fake.check("run").map(|()| { fake.did(format!("run {}", command.join(" "))); 0 }));
        oneoff::run_to_end(docker, app, image, env, command, within, limit, out).await
    }

    /// The named volume `name` of the app, made if it is not there yet.
    pub async fn ensure_volume(&self, name: &str, app: &str, app_uid: &str) -> Result<(), String> {
        let docker = engine_or_fake!(self, fake => Ok(fake.did(format!("volume {name}"))));
        volumes::ensure_volume(docker, name, app, app_uid).await
    }

    pub async fn remove_volume(&self, name: &str) -> Result<(), String> {
        let docker = engine_or_fake!(self, fake => Ok(fake.did(format!("remove volume {name}"))));
        volumes::remove_volume(docker, name).await
    }

    /// The volumes labeled with the app's uid (ones it mounts or mounted before).
    pub async fn labeled_volumes(&self, app_uid: &str) -> Vec<String> {
        let docker = engine_or_fake!(self, fake => Vec::new());
        volumes::labeled_volumes(docker, app_uid).await
    }

    /// Where the engine keeps a volume's files.
    pub async fn volume_dir(&self, name: &str) -> Option<PathBuf> {
        let docker = engine_or_fake!(self, fake => None);
        let info = docker.inspect_volume(name).await.ok()?;
        Some(PathBuf::from(info.mountpoint))
    }

    /// Where the engine keeps a container's log (json-file).
    pub async fn log_file(&self, container: &str) -> Option<PathBuf> {
        let docker = engine_or_fake!(self, fake => None);
        let info = docker.inspect_container(container, None).await.ok()?;
        info.log_path.filter(|p| !p.is_empty()).map(PathBuf::from)
    }

    /// The app's containers, running or not.
    pub async fn app_containers(&self, app: &str) -> Vec<AppContainer> {
        let docker = engine_or_fake!(self, fake => Vec::new());
        inventory::app_containers(docker, app).await
    }

    /// Removes a stopped container (never a running one); whether it went.
    pub async fn remove_stopped_container(&self, id: &str) -> bool {
        let docker = engine_or_fake!(self, fake => true);
        let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(false)
            .build();
        docker.remove_container(id, Some(options)).await.is_ok()
    }

    /// The app's local images.
    pub async fn app_images(&self, app: &str) -> Vec<AppImage> {
        let docker = engine_or_fake!(self, fake => Vec::new());
        inventory::app_image_list(docker, app).await
    }

    /// Removes an image tag or id, never one a container uses (no force); whether it went.
    pub async fn remove_unused_image(&self, reference: &str) -> bool {
        let docker = engine_or_fake!(self, fake => true);
        let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(false)
            .build();
        docker
            .remove_image(reference, Some(options), None)
            .await
            .is_ok()
    }

    /// Removes every image of the app; gives how many went.
    pub async fn remove_images(&self, app: &str) -> usize {
        let docker = engine_or_fake!(self, fake => 0);
        inventory::remove_images(docker, app).await
    }

    /// Who a local image belongs to and its names, as the engine resolves `image`.
    pub async fn image_identity(&self, image: &str) -> Option<ImageIdentity> {
        let docker = engine_or_fake!(self, fake => None);
        inventory::image_identity(docker, image).await
    }

    /// Removes the app's network once nothing uses it.
    pub async fn remove_app_network(&self, app: &str) {
        let docker = engine_or_fake!(self, fake => fake.did(format!("remove network {app}")));
        network::remove_app_network(docker, app).await
    }

    /// Moves containers of an earlier berth off the shared legacy network onto their apps' own
    /// (and those of the apps they are linked to: app → dependencies).
    pub async fn adopt_legacy_network(&self, links: &HashMap<String, Vec<String>>) {
        let docker = engine_or_fake!(self, fake => ());
        network::adopt_legacy_network(docker, links).await
    }

    /// Makes the guarded network member builds run on (`build_subnet`).
    pub async fn guard_build_network(&self, subnet: &str) -> Result<(), String> {
        let docker = engine_or_fake!(self, fake => Ok(()));
        network::guard_build_network(docker, subnet).await
    }

    /// The web tasks of the app's swarm service, on every node, with where each answers.
    pub async fn swarm_web_tasks(&self, app: &str) -> Result<Vec<ContainerReport>, String> {
        let docker = engine_or_fake!(self, fake => Ok(Vec::new()));
        swarm::web_tasks(docker, app).await
    }

    /// The swarm's nodes, with the berth tasks on each (`nodes:list`).
    pub async fn nodes(&self) -> Result<Vec<super::nodes::NodeReport>, String> {
        let docker =
            engine_or_fake!(self, fake => Err("the fake scheduler has no swarm".to_string()));
        super::nodes::list(docker).await
    }

    /// The line that joins a worker to the swarm (`nodes:join-command`).
    pub async fn join_command(&self) -> Result<String, String> {
        let docker =
            engine_or_fake!(self, fake => Err("the fake scheduler has no swarm".to_string()));
        super::nodes::join_command(docker).await
    }

    /// Drains (`Some(true)`) or activates a node, and changes its labels.
    pub async fn update_node(
        &self,
        node: &str,
        drain: Option<bool>,
        labels: &[super::nodes::LabelChange],
    ) -> Result<super::nodes::NodeReport, String> {
        let docker =
            engine_or_fake!(self, fake => Err("the fake scheduler has no swarm".to_string()));
        let availability = drain.map(|drain| {
            if drain {
                bollard::models::NodeSpecAvailabilityEnum::DRAIN
            } else {
                bollard::models::NodeSpecAvailabilityEnum::ACTIVE
            }
        });
        super::nodes::update(docker, node, availability, labels).await
    }

    /// Whether the swarm target can be applied through this engine.
    pub async fn swarm_ready(&self) -> Result<(), String> {
        let docker =
            engine_or_fake!(self, fake => Err("the fake scheduler has no swarm".to_string()));
        super::swarm::check(docker).await
    }
}

/// The backend that applies `target` on this host, if berth can apply it at all.
pub(super) fn backend(target: Target) -> Option<&'static dyn Backend> {
    match target {
        Target::Docker => Some(&docker::Containers),
        Target::Swarm => Some(&swarm::Stack),
        Target::Systemd => Some(&systemd::Units),
        Target::Kubernetes => None,
    }
}

/// Every target berth can apply, with its backend (to stop an app wherever it runs).
pub(super) fn backends() -> impl Iterator<Item = (Target, &'static dyn Backend)> {
    [Target::Docker, Target::Swarm, Target::Systemd]
        .into_iter()
        .filter_map(|target| Some((target, backend(target)?)))
}

/// Whether this host can apply the target; the reason when it cannot (checked before anything
/// is written or started).
pub async fn applicable(target: Target) -> Result<(), String> {
    let rendered = format!("deploy:render APP --target {target} shows what it would apply");
    match target {
        Target::Docker => Ok(()),
        Target::Systemd => systemd::check().map_err(|reason| format!("{reason}; {rendered}")),
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

#[cfg(test)]
pub mod fake {
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU16, Ordering};

    use crate::deploy::names;
    use crate::deploy::render::Target;
    use crate::deploy::serving::Publish;
    use crate::deploy::spec::{DeploySpec, Instance};

    /// What the fake scheduler was asked (`log`), and which of its operations fail (`fail`:
    /// `deploy`, `scale`, `restart`, `deploy_beside`, `run`, `build`).
    pub struct Fake {
        pub log: Mutex<Vec<String>>,
        pub fail: Mutex<HashSet<&'static str>>,
        /// The port every release's web process listens on.
        pub web_port: AtomicU16,
        next_port: AtomicU16,
    }

    impl Default for Fake {
        fn default() -> Self {
            Fake {
                log: Mutex::default(),
                fail: Mutex::default(),
                web_port: AtomicU16::new(5000),
                next_port: AtomicU16::new(20000),
            }
        }
    }

    impl Fake {
        /// Makes `operation` fail from now on (or succeed again, with `false`).
        pub fn failing(&self, operation: &'static str, fails: bool) {
            let mut fail = self.fail.lock().unwrap();
            if fails {
                fail.insert(operation);
            } else {
                fail.remove(operation);
            }
        }

        /// What it was asked so far.
        pub fn calls(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }

        pub(super) fn did(&self, what: String) {
            self.log.lock().unwrap().push(what);
        }

        pub(super) fn check(&self, operation: &str) -> Result<(), String> {
            if self.fail.lock().unwrap().contains(operation) {
                self.did(format!("{operation} failed"));
                return Err(format!("the fake {operation} failed"));
            }
            Ok(())
        }

        /// Starts `spec.web` instances at made-up loopback addresses (nothing listens there) and
        /// serves them, as a target does once they answer.
        pub(super) async fn start(
            &self,
            operation: &'static str,
            target: Target,
            spec: &DeploySpec,
            serving: Option<Publish<'_>>,
        ) -> Result<Vec<Instance>, String> {
            self.check(operation)?;
            let instances: Vec<Instance> = (1..=spec.web)
                .map(|index| Instance {
                    name: names::container_name(&spec.app, spec.release, "web", index),
                    index,
                    address: Some(SocketAddr::from((
                        Ipv4Addr::LOCALHOST,
                        self.next_port.fetch_add(1, Ordering::Relaxed),
                    ))),
                })
                .collect();
            if let Some(serving) = serving {
                let addresses: Vec<SocketAddr> =
                    instances.iter().filter_map(|i| i.address).collect();
                serving.serve(&addresses).await?;
            }
            self.did(format!(
                "{operation} {} v{} on {target}: {}",
                spec.app,
                spec.release,
                instances.len()
            ));
            Ok(instances)
        }
    }
}
