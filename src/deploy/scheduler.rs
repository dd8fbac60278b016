//! The one handle above `deploy/` on where apps run: [`Scheduler`] owns the engine connection
//! and everything target-specific (deploy, scale, restart, stop, destroy, canaries beside the
//! current release, revive for the reconciler, instances, logs, one-off runs), dispatching to the
//! target that applies. Nothing above `deploy/` holds a `bollard::Docker`: the application layer
//! (`ops`), the commands, the pipeline and the reconciler hold a `Scheduler`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;

use super::inventory::{self, AppContainer, AppImage, ContainerReport, ImageIdentity};
use super::oneoff::{self, OneOff, RunIn};
use super::render::Target;
use super::{DeploySpec, Instance, ProcessSpec, Publish, backend, backends};
use super::{docker, logs, network, volumes};
use crate::engine;
use crate::output::Output;

/// Where apps run: the engine (and the swarm through it), by target. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    docker: Docker,
}

impl Scheduler {
    /// Connects to the local engine and checks that it answers.
    pub async fn connect() -> Result<Self, String> {
        Ok(Self {
            docker: engine::connect().await?,
        })
    }

    /// `connect`, giving up after `limit` (a hung engine must not hang a command).
    pub async fn connect_within(limit: Duration) -> Result<Self, String> {
        Ok(Self {
            docker: engine::connect_within(limit).await?,
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
        crate::build::build(
            &self.docker,
            context,
            tag,
            labels,
            network,
            cache_scope,
            out,
        )
        .await
    }

    /// Gives a built image its release name and drops the build tag (`registry::retag`).
    pub async fn retag(&self, build_tag: &str, image: &str) -> Result<(), String> {
        crate::registry::retag(&self.docker, build_tag, image).await
    }

    /// Pushes a release image to the registry; gives its digest (`registry::push`).
    pub async fn push_image(
        &self,
        image: &str,
        registry: &str,
        out: &Output,
    ) -> Result<String, String> {
        crate::registry::push(&self.docker, image, registry, out).await
    }

    /// Makes sure a release image is on this engine, pulled by its digest when it is not
    /// (`registry::ensure_local`).
    pub async fn ensure_image(
        &self,
        image: &str,
        digest: Option<&str>,
        out: &Output,
    ) -> Result<(), String> {
        crate::registry::ensure_local(&self.docker, image, digest, out).await
    }

    fn applied(target: Target) -> Result<&'static dyn super::Backend, String> {
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
        Self::applied(target)?
            .deploy(&self.docker, spec, out, serving)
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
        Self::applied(target)?
            .scale(&self.docker, spec, out, serving)
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
        Self::applied(target)?
            .restart(&self.docker, spec, out, serving)
            .await
    }

    /// Stops the app on every target but `target` (how `apps:set target=` moves an app): what
    /// each stopped, or why it could not.
    pub async fn stop_elsewhere(
        &self,
        target: Target,
        app: &str,
    ) -> Vec<(Target, Result<usize, String>)> {
        let mut stopped = Vec::new();
        for (other, old) in backends().filter(|(t, _)| *t != target) {
            stopped.push((other, old.stop(&self.docker, app).await));
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
        let mut stopped = 0;
        for (_, backend) in backends() {
            stopped += if forget {
                backend.destroy(&self.docker, app, work_dir).await?
            } else {
                backend.stop(&self.docker, app).await?
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
        docker::deploy_beside(&self.docker, spec, out).await
    }

    /// Stops one release's containers (docker target) once their requests are done.
    pub async fn retire_release(&self, app: &str, release: i64, serving: Publish<'_>) {
        docker::retire_release(&self.docker, app, release, serving).await
    }

    /// Brings back web instance `index` of the spec's release (docker target; the reconciler):
    /// what it did (`started`, `recreated`, ...).
    pub async fn revive(
        &self,
        spec: &DeploySpec,
        index: u32,
        existing: Option<&ContainerReport>,
    ) -> Result<&'static str, String> {
        docker::revive(&self.docker, spec, index, existing).await
    }

    /// Starts instance `index` of a process type without a port (docker target).
    pub async fn start_other(
        &self,
        spec: &DeploySpec,
        process: &ProcessSpec,
        index: u32,
        out: &Output,
    ) -> Result<String, String> {
        docker::start_other(&self.docker, spec, process, index, out).await
    }

    /// The port a release's web process listens on: its image's single EXPOSE, else 5000.
    pub async fn web_port(&self, image: &str) -> Result<u16, String> {
        docker::web_port(&self.docker, image).await
    }

    /// The app's instances on this engine (both applied targets label theirs the same way),
    /// of one release or all.
    pub async fn instances_of(
        &self,
        app: &str,
        release: Option<i64>,
    ) -> Result<Vec<ContainerReport>, String> {
        inventory::instances_of(&self.docker, app, release).await
    }

    /// Every instance berth runs, by app, in one engine call.
    pub async fn all_instances(&self) -> Result<HashMap<String, Vec<ContainerReport>>, String> {
        inventory::all_instances(&self.docker).await
    }

    /// The reports with what only an inspection tells (restart counts).
    pub async fn with_details(&self, reports: Vec<ContainerReport>) -> Vec<ContainerReport> {
        inventory::with_details(&self.docker, reports).await
    }

    /// The log of one instance: the last `tail` lines, then (with `follow`) what it writes.
    pub fn logs(
        &self,
        instance: &str,
        tail: i64,
        follow: bool,
    ) -> futures_util::stream::BoxStream<'static, Vec<u8>> {
        logs::log_stream(&self.docker, instance, tail, follow)
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
        oneoff::run_one_off(&self.docker, app, image, env, command, within, tty).await
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
        oneoff::run_to_end(&self.docker, app, image, env, command, within, limit, out).await
    }

    /// The named volume `name` of the app, made if it is not there yet.
    pub async fn ensure_volume(&self, name: &str, app: &str, app_uid: &str) -> Result<(), String> {
        volumes::ensure_volume(&self.docker, name, app, app_uid).await
    }

    pub async fn remove_volume(&self, name: &str) -> Result<(), String> {
        volumes::remove_volume(&self.docker, name).await
    }

    /// The volumes labeled with the app's uid (ones it mounts or mounted before).
    pub async fn labeled_volumes(&self, app_uid: &str) -> Vec<String> {
        volumes::labeled_volumes(&self.docker, app_uid).await
    }

    /// Where the engine keeps a volume's files.
    pub async fn volume_dir(&self, name: &str) -> Option<PathBuf> {
        let info = self.docker.inspect_volume(name).await.ok()?;
        Some(PathBuf::from(info.mountpoint))
    }

    /// Where the engine keeps a container's log (json-file).
    pub async fn log_file(&self, container: &str) -> Option<PathBuf> {
        let info = self.docker.inspect_container(container, None).await.ok()?;
        info.log_path.filter(|p| !p.is_empty()).map(PathBuf::from)
    }

    /// The app's containers, running or not.
    pub async fn app_containers(&self, app: &str) -> Vec<AppContainer> {
        inventory::app_containers(&self.docker, app).await
    }

    /// Removes a stopped container (never a running one); whether it went.
    pub async fn remove_stopped_container(&self, id: &str) -> bool {
        let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(false)
            .build();
        self.docker
            .remove_container(id, Some(options))
            .await
            .is_ok()
    }

    /// The app's local images.
    pub async fn app_images(&self, app: &str) -> Vec<AppImage> {
        inventory::app_image_list(&self.docker, app).await
    }

    /// Removes an image tag or id, never one a container uses (no force); whether it went.
    pub async fn remove_unused_image(&self, reference: &str) -> bool {
        let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(false)
            .build();
        self.docker
            .remove_image(reference, Some(options), None)
            .await
            .is_ok()
    }

    /// Removes every image of the app; gives how many went.
    pub async fn remove_images(&self, app: &str) -> usize {
        inventory::remove_images(&self.docker, app).await
    }

    /// Who a local image belongs to and its names, as the engine resolves `image`.
    pub async fn image_identity(&self, image: &str) -> Option<ImageIdentity> {
        inventory::image_identity(&self.docker, image).await
    }

    /// Removes the app's network once nothing uses it.
    pub async fn remove_app_network(&self, app: &str) {
        network::remove_app_network(&self.docker, app).await
    }

    /// Moves containers of an earlier berth off the shared legacy network onto their apps' own
    /// (and those of the apps they are linked to: app → dependencies).
    pub async fn adopt_legacy_network(&self, links: &HashMap<String, Vec<String>>) {
        network::adopt_legacy_network(&self.docker, links).await
    }

    /// Makes the guarded network member builds run on (`build_subnet`).
    pub async fn guard_build_network(&self, subnet: &str) -> Result<(), String> {
        network::guard_build_network(&self.docker, subnet).await
    }

    /// Whether the swarm target can be applied through this engine.
    pub async fn swarm_ready(&self) -> Result<(), String> {
        super::swarm::check(&self.docker).await
    }
}
