//! What every applied target implements ([`Backend`]: `docker`, `swarm`, `systemd`). The choice of a
//! target and whether this host can apply it are the scheduler's (`scheduler.rs`).

use bollard::Docker;
use futures_util::future::BoxFuture;

use super::serving::Publish;
use super::spec::{DeploySpec, Instance};
use crate::output::Output;

/// What every target does. `ps:start` is `deploy` of the current release; status and logs are
/// read from the containers on this engine, which both applied targets label the same way
/// (`docker::instances_of`, `docker::log_stream`).
pub(super) trait Backend: Sync {
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
