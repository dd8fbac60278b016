//! The swarm target: the release's stack file (rendered from `templates/swarm/stack.yml.tera`)
//! applied with `docker stack deploy` to the single-node or larger swarm this engine manages.
//!
//! Stack `berth-APP`, one service per process type (`berth-APP_web`). The web service publishes
//! its port in host mode on a port the engine picks per task (a fixed host port allows one task
//! per node and no start-first update), and berth points the app's stable port at the tasks'
//! ports, as for the docker target. The swarm runs the rolling update itself (`update_config`:
//! start-first, `failure_action: rollback`); berth watches it converge and routes to the tasks
//! that answer.
//!
//! Files: `<work_dir>/APP.yml` is the stack file of the release that serves (mode 0600: it holds
//! the config vars). A new one is written beside it and renamed over it only once the swarm has
//! converged on it; when a deploy fails, the old file is applied again (or the stack removed if
//! the service was new), so the swarm is left as it was.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ServiceUpdateStatusStateEnum as UpdateState, TaskState};
use bollard::query_parameters::ListTasksOptionsBuilder;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::backend::Backend;
use super::inventory::{self, ContainerReport};
use super::logs::last_logs;
use super::names::{LABEL_PROCESS, LABEL_RELEASE, service_name, stack_name};
use super::serving::Publish;
use super::spec::{DeploySpec, Instance};
use crate::engine;
use crate::output::Output;

/// The swarm target.
pub struct Stack;

/// How long a swarm update may take beyond the app's own `ready_timeout` (the stack's
/// `update_config.monitor` and `delay` per batch, task scheduling).
const UPDATE_SLACK: Duration = Duration::from_secs(20);

impl Backend for Stack {
    fn deploy<'a>(
        &'a self,
        docker: &'a Docker,
        spec: &'a DeploySpec,
        out: &'a Output,
        publish: Publish<'a>,
    ) -> BoxFuture<'a, Result<Vec<Instance>, String>> {
        apply(docker, spec, out, publish).boxed()
    }

    fn scale<'a>(
        &'a self,
        docker: &'a Docker,
        spec: &'a DeploySpec,
        out: &'a Output,
        publish: Publish<'a>,
    ) -> BoxFuture<'a, Result<Vec<Instance>, String>> {
        // The stack file carries the replicas: scaling is applying it again.
        apply(docker, spec, out, publish).boxed()
    }

    fn restart<'a>(
        &'a self,
        docker: &'a Docker,
        spec: &'a DeploySpec,
        out: &'a Output,
        publish: Publish<'a>,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let service = service_name(&spec.app, "web");
            let before: HashSet<String> = tasks(docker, &service)
                .await?
                .into_iter()
                .filter_map(|t| t.id)
                .collect();
            out.detail(&format!("docker service update --force {service}"));
            cli(&["service", "update", "--force", "--detach", &service]).await?;
            converge(docker, spec, out, publish, &before, false)
                .await
                .map(|_| ())
        }
        .boxed()
    }

    fn stop<'a>(
        &'a self,
        docker: &'a Docker,
        app: &'a str,
    ) -> BoxFuture<'a, Result<usize, String>> {
        remove_stack(docker, app).boxed()
    }

    fn destroy<'a>(
        &'a self,
        docker: &'a Docker,
        app: &'a str,
        work_dir: &'a Path,
    ) -> BoxFuture<'a, Result<usize, String>> {
        async move {
            let stopped = remove_stack(docker, app).await?;
            let _ = std::fs::remove_file(stack_file(work_dir, app));
            Ok(stopped)
        }
        .boxed()
    }
}

/// Whether this engine can take stacks: it must be a swarm manager, and the docker CLI (which
/// applies stack files) must be on PATH.
pub async fn check(docker: &Docker) -> Result<(), String> {
    let info = docker
        .info()
        .await
        .map_err(|e| format!("cannot ask the engine: {}", engine::describe(&e)))?;
    let swarm = info.swarm.unwrap_or_default();
    let state = swarm
        .local_node_state
        .map(|s| s.to_string())
        .unwrap_or_default();
    if state != "active" {
        return Err(format!(
            "this engine is not part of a swarm (node state {state:?}): run `docker swarm init` on it first"
        ));
    }
    if swarm.control_available != Some(true) {
        return Err("this engine is a swarm worker: berth must run beside a manager".to_string());
    }
    if find_on_path("docker").is_none() {
        return Err("the docker CLI (which applies stack files) is not on PATH".to_string());
    }
    Ok(())
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

fn stack_file(work_dir: &Path, app: &str) -> PathBuf {
    work_dir.join(format!("{app}.yml"))
}

/// Applies the release's stack file and waits for the swarm to converge on it.
async fn apply(
    docker: &Docker,
    spec: &DeploySpec,
    out: &Output,
    publish: Publish<'_>,
) -> Result<Vec<Instance>, String> {
    check(docker).await?;
    let stack = spec
        .units
        .iter()
        .find(|u| u.name == "stack.yml")
        .ok_or("internal error: the swarm stack file was not rendered")?;
    let serving = stack_file(&spec.work_dir, &spec.app);
    let next = spec.work_dir.join(format!("{}.yml.next", spec.app));
    write_private(&spec.work_dir, &next, &stack.text)?;
    let name = stack_name(&spec.app);
    // Whether the web service is new: then a failed task fails the deploy at once (there is
    // nothing for the swarm to roll back to) and a failed deploy removes the stack.
    let first = docker
        .inspect_service(&service_name(&spec.app, "web"), None)
        .await
        .is_err();
    out.detail(&format!(
        "docker stack deploy {name} (web={}, image {})",
        spec.web, spec.image
    ));
    if let Err(message) = stack_deploy(&next, &name, spec).await {
        let _ = std::fs::remove_file(&next);
        return Err(format!("the swarm refused the stack file: {message}"));
    }
    match converge(docker, spec, out, publish, &HashSet::new(), first).await {
        Ok(instances) => {
            std::fs::rename(&next, &serving)
                .map_err(|e| format!("cannot keep {}: {e}", serving.display()))?;
            Ok(instances)
        }
        Err(message) => {
            let _ = std::fs::remove_file(&next);
            // Leave the swarm as it was: the serving release's stack, or no stack at all.
            let restored = if !first && serving.exists() {
                stack_deploy(&serving, &name, spec).await
            } else {
                remove_stack(docker, &spec.app).await.map(|_| ())
            };
            // The swarm's rollback may have replaced tasks (a start-first update stops an old
            // task once its replacement runs, even if that one then crashes): serve what the
            // service runs once the rollback is over.
            if restored.is_ok() && !first {
                follow_rollback(docker, spec, publish).await;
            }
            match restored {
                Ok(()) => Err(message),
                Err(also) => Err(format!(
                    "{message} (and restoring the stack failed: {also})"
                )),
            }
        }
    }
}

fn write_private(dir: &Path, path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `docker stack deploy` of a stack file. With registry credentials, they go to the swarm with
/// the services (`--with-registry-auth`), so a task placed on any node can pull its image.
async fn stack_deploy(file: &Path, stack: &str, spec: &DeploySpec) -> Result<(), String> {
    let file = file.to_string_lossy();
    let config = match &spec.pull_registry {
        Some(registry) => crate::registry::cli_config(&spec.work_dir, registry)?,
        None => None,
    };
    let mut args = vec!["stack", "deploy", "--prune", "--resolve-image", "never"];
    if config.is_some() {
        args.push("--with-registry-auth");
    }
    args.extend(["-c", &file, stack]);
    cli_with(&args, config.as_deref()).await
}

/// Runs the docker CLI with an argument vector (never a shell); its error output on failure.
async fn cli(args: &[&str]) -> Result<(), String> {
    cli_with(args, None).await
}

/// `cli` with the CLI's configuration directory (`DOCKER_CONFIG`) when one is given.
async fn cli_with(args: &[&str], config: Option<&Path>) -> Result<(), String> {
    let mut command = tokio::process::Command::new("docker");
    if let Some(config) = config {
        command.env("DOCKER_CONFIG", config);
    }
    let output = command
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("--detach"))
        .collect::<Vec<_>>()
        .join("; ");
    Err(if message.is_empty() {
        format!("docker {} failed ({})", args[..2].join(" "), output.status)
    } else {
        message
    })
}

async fn tasks(docker: &Docker, service: &str) -> Result<Vec<bollard::models::Task>, String> {
    let filters = HashMap::from([("service", vec![service])]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    docker.list_tasks(Some(options)).await.map_err(|e| {
        format!(
            "cannot list the tasks of {service}: {}",
            engine::describe(&e)
        )
    })
}

/// Waits until the web service runs `spec.web` tasks of the release, none of the tasks in
/// `replaced`, every one answering, with no update in progress. Meanwhile the app's port follows
/// the tasks that answer, so it serves throughout a rolling update. Fails when the swarm rolls
/// the service back, when a task of a `first` deploy fails, or after the time allowed.
async fn converge(
    docker: &Docker,
    spec: &DeploySpec,
    out: &Output,
    publish: Publish<'_>,
    replaced: &HashSet<String>,
    first: bool,
) -> Result<Vec<Instance>, String> {
    let service = service_name(&spec.app, "web");
    let deadline = Instant::now() + spec.ready_timeout + UPDATE_SLACK;
    let mut answering: HashSet<SocketAddr> = HashSet::new();
    let mut published: Option<Vec<SocketAddr>> = None;
    let mut last_note = String::new();
    loop {
        let inspected = docker.inspect_service(&service, None).await.map_err(|e| {
            format!(
                "the swarm has no service {service}: {}",
                engine::describe(&e)
            )
        })?;
        let image = inspected
            .spec
            .as_ref()
            .and_then(|s| s.task_template.as_ref())
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let update = inspected.update_status.clone().unwrap_or_default();
        let update_message = update.message.clone().unwrap_or_default();
        let all_tasks = tasks(docker, &service).await?;
        let release_failures = failed_tasks_of(&all_tasks, &spec.image);
        if !same_image(&image, &spec.image) {
            let why = match release_failures.first() {
                Some(task) => task_failure(docker, task, spec).await,
                None => update_message.clone(),
            };
            return Err(format!(
                "the swarm rolled {service} back to the release that was serving: {why}"
            ));
        }
        if matches!(
            update.state,
            Some(UpdateState::PAUSED | UpdateState::ROLLBACK_PAUSED)
        ) {
            return Err(format!(
                "the swarm paused the update of {service}: {update_message}"
            ));
        }
        let updating = matches!(
            update.state,
            Some(UpdateState::UPDATING | UpdateState::ROLLBACK_STARTED)
        );
        // A first deploy has nothing to roll back to: its first failed task fails it.
        if first && let Some(task) = release_failures.first() {
            return Err(task_failure(docker, task, spec).await);
        }
        // Tasks on a node the service's placement no longer allows are replaced, not new: the
        // update moves them. (The swarm leaves a task whose node still fits as it is, with the
        // old template: the node is what counts, not the task's copy of the constraints.)
        let constraints = |t: Option<&bollard::models::TaskSpec>| {
            t.and_then(|t| t.placement.as_ref())
                .and_then(|p| p.constraints.clone())
                .unwrap_or_default()
        };
        let wanted_constraints = constraints(
            inspected
                .spec
                .as_ref()
                .and_then(|s| s.task_template.as_ref()),
        );
        let nodes = node_addresses(docker).await?;
        let stale: HashSet<String> = all_tasks
            .iter()
            .filter(|t| {
                let node = t
                    .node_id
                    .as_ref()
                    .and_then(|id| nodes.get(id).map(|n| (id, n)));
                node.is_some_and(|(id, node)| {
                    !wanted_constraints.iter().all(|c| node.satisfies(id, c))
                })
            })
            .filter_map(|t| t.id.clone())
            .collect();
        let wanted_tasks: HashSet<String> = all_tasks
            .iter()
            .filter(|t| t.desired_state == Some(TaskState::RUNNING))
            .filter_map(|t| t.id.clone())
            .collect();
        let running: Vec<ContainerReport> = task_reports(&service, &all_tasks, &nodes)
            .into_iter()
            .filter(|c| c.state == "running")
            .filter(|c| task_id(&c.name).is_some_and(|id| wanted_tasks.contains(id)))
            .collect();
        for container in &running {
            if let Some(address) = container.address
                && !answering.contains(&address)
                && super::probe::probe(address, spec.health.as_ref())
                    .await
                    .is_ok()
            {
                answering.insert(address);
            }
        }
        let serving: Vec<&ContainerReport> = running
            .iter()
            .filter(|c| c.address.is_some_and(|a| answering.contains(&a)))
            .collect();
        let mut addresses: Vec<SocketAddr> = serving.iter().filter_map(|c| c.address).collect();
        addresses.sort_unstable();
        if !addresses.is_empty() && published.as_ref() != Some(&addresses) {
            publish.serve(&addresses).await?;
            published = Some(addresses);
        }
        let new: Vec<&&ContainerReport> = serving
            .iter()
            .filter(|c| c.release == spec.release)
            .filter(|c| {
                task_id(&c.name).is_none_or(|id| !replaced.contains(id) && !stale.contains(id))
            })
            .collect();
        let note = format!(
            "{}/{} web tasks of v{} answer",
            new.len(),
            spec.web,
            spec.release
        );
        if note != last_note {
            out.detail(&note);
            last_note = note;
        }
        if !updating && new.len() == spec.web as usize && serving.len() == new.len() {
            if spec.web == 0 {
                publish.serve(&[]).await?;
            }
            let mut instances: Vec<Instance> = new
                .iter()
                .map(|c| Instance {
                    name: c.name.clone(),
                    index: c.index,
                    address: c.address,
                })
                .collect();
            instances.sort_by_key(|i| i.index);
            for instance in &instances {
                if let Some(address) = instance.address {
                    out.detail(&format!("web.{} answers at {address}", instance.index));
                }
            }
            return Ok(instances);
        }
        if Instant::now() >= deadline {
            let logs = match running.iter().find(|c| c.release == spec.release) {
                Some(c) => last_logs(docker, &c.name).await,
                None => String::new(),
            };
            return Err(format!(
                "the swarm did not converge on v{} within {} s: {} (the app must answer on PORT {}){logs}",
                spec.release,
                (spec.ready_timeout + UPDATE_SLACK).as_secs(),
                last_note,
                spec.port
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After a failed update: waits (within the deploy's time) until the web service is no longer
/// updating or rolling back and each of its running tasks answers, then serves exactly those.
async fn follow_rollback(docker: &Docker, spec: &DeploySpec, publish: Publish<'_>) {
    let service = service_name(&spec.app, "web");
    let deadline = Instant::now() + spec.ready_timeout + UPDATE_SLACK;
    let mut answering: HashSet<SocketAddr> = HashSet::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(inspected) = docker.inspect_service(&service, None).await else {
            return;
        };
        let busy = matches!(
            inspected.update_status.and_then(|u| u.state),
            Some(UpdateState::UPDATING | UpdateState::ROLLBACK_STARTED)
        );
        let replicas = inspected
            .spec
            .and_then(|s| s.mode)
            .and_then(|m| m.replicated)
            .and_then(|r| r.replicas)
            .unwrap_or(0);
        let (Ok(all), Ok(nodes)) = (tasks(docker, &service).await, node_addresses(docker).await)
        else {
            continue;
        };
        // Every task the swarm wants running runs (a slot whose task failed has none until
        // the swarm makes its replacement: the count tells).
        let wanted: Vec<&bollard::models::Task> = all
            .iter()
            .filter(|t| t.desired_state == Some(TaskState::RUNNING))
            .collect();
        let settled = wanted.len() as i64 == replicas
            && wanted
                .iter()
                .all(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING));
        if busy || !settled {
            continue;
        }
        let running: Vec<SocketAddr> = task_reports(&service, &all, &nodes)
            .into_iter()
            .filter(|c| c.state == "running")
            .filter_map(|c| c.address)
            .collect();
        for address in &running {
            if !answering.contains(address)
                && super::probe::probe(*address, spec.health.as_ref())
                    .await
                    .is_ok()
            {
                answering.insert(*address);
            }
        }
        if !running.is_empty() && running.iter().all(|a| answering.contains(a)) {
            let mut addresses = running;
            addresses.sort_unstable();
            let _ = publish.serve(&addresses).await;
            return;
        }
    }
}

/// The task id in a task container's name (`berth-APP_web.2.<task id>`).
fn task_id(container: &str) -> Option<&str> {
    container.rsplit('.').next()
}

fn failed_tasks_of<'t>(
    tasks: &'t [bollard::models::Task],
    image: &str,
) -> Vec<&'t bollard::models::Task> {
    tasks
        .iter()
        .filter(|t| {
            let state = t.status.as_ref().and_then(|s| s.state);
            matches!(
                state,
                Some(TaskState::FAILED | TaskState::REJECTED | TaskState::COMPLETE)
            ) && t
                .spec
                .as_ref()
                .and_then(|s| s.container_spec.as_ref())
                .and_then(|c| c.image.as_deref())
                .is_some_and(|i| same_image(i, image))
        })
        .collect()
}

/// Whether a service's image (`REGISTRY/APP:vN@sha256:…`, the registry as the nodes reach it)
/// is the release image `image` (as berth pushed it): the same `APP:vN`.
fn same_image(service_image: &str, image: &str) -> bool {
    let name = |i: &str| {
        let i = i.split('@').next().unwrap_or(i);
        i.rsplit('/').next().unwrap_or(i).to_string()
    };
    name(service_image) == name(image)
}

/// One line on why a task ended, with its container's last log lines.
async fn task_failure(docker: &Docker, task: &bollard::models::Task, spec: &DeploySpec) -> String {
    let status = task.status.clone().unwrap_or_default();
    let code = status.container_status.as_ref().and_then(|c| c.exit_code);
    let reason = status.err.or(status.message).unwrap_or_default();
    let logs = match status.container_status.and_then(|c| c.container_id) {
        Some(id) => last_logs(docker, &id).await,
        None => String::new(),
    };
    match code {
        Some(code) => format!(
            "the app exited at start (exit code {code}) instead of listening on PORT {}{logs}",
            spec.port
        ),
        None => format!("a task of v{} failed: {reason}{logs}", spec.release),
    }
}

/// A swarm node as tasks name it: the address the swarm reaches it at, its hostname, and what
/// placement constraints test (role, labels).
#[derive(Debug, Clone)]
struct Node {
    address: IpAddr,
    hostname: String,
    role: String,
    labels: HashMap<String, String>,
}

impl Node {
    /// Whether the node fits a placement constraint (`node.labels.K==V`, `node.hostname!=X`,
    /// ...). Fields berth does not read (the platform) count as fitting.
    fn satisfies(&self, id: &str, constraint: &str) -> bool {
        let (field, value, equal) = match constraint.split_once("==") {
            Some((f, v)) => (f.trim(), v.trim(), true),
            None => match constraint.split_once("!=") {
                Some((f, v)) => (f.trim(), v.trim(), false),
                None => return true,
            },
        };
        let actual = match field {
            "node.id" => Some(id),
            "node.hostname" => Some(self.hostname.as_str()),
            "node.role" => Some(self.role.as_str()),
            _ => match field.strip_prefix("node.labels.") {
                Some(key) => self.labels.get(key).map(String::as_str),
                None => return true,
            },
        };
        (actual == Some(value)) == equal
    }
}

/// The swarm's nodes by id.
async fn node_addresses(docker: &Docker) -> Result<HashMap<String, Node>, String> {
    let nodes = docker
        .list_nodes(None)
        .await
        .map_err(|e| format!("cannot list the swarm's nodes: {}", engine::describe(&e)))?;
    Ok(nodes
        .into_iter()
        .filter_map(|n| {
            let hostname = n
                .description
                .as_ref()
                .and_then(|d| d.hostname.clone())
                .unwrap_or_default();
            let spec = n.spec.clone().unwrap_or_default();
            let role = spec.role.map(|r| r.to_string()).unwrap_or_default();
            let labels = spec.labels.unwrap_or_default();
            let address = n.status?.addr?.parse().ok()?;
            Some((
                n.id?,
                Node {
                    address,
                    hostname,
                    role,
                    labels,
                },
            ))
        })
        .collect())
}

/// Every berth task the swarm wants running, by app, wherever it runs (`ps:report`,
/// `apps:list`, `logs`, the reconciler's round). Empty when this engine manages no swarm.
pub async fn running_tasks(docker: &Docker) -> HashMap<String, Vec<ContainerReport>> {
    let filters = HashMap::from([("desired-state", vec!["running"])]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    let Ok(tasks) = docker.list_tasks(Some(options)).await else {
        return HashMap::new();
    };
    let nodes = node_addresses(docker).await.unwrap_or_default();
    let mut by_app: HashMap<String, Vec<ContainerReport>> = HashMap::new();
    for task in tasks {
        let labels = task
            .spec
            .as_ref()
            .and_then(|s| s.container_spec.as_ref())
            .and_then(|c| c.labels.as_ref());
        let (Some(app), Some(process)) = (
            labels.and_then(|l| l.get(super::names::LABEL_APP)).cloned(),
            labels.and_then(|l| l.get(LABEL_PROCESS)).cloned(),
        ) else {
            continue;
        };
        let service = service_name(&app, &process);
        by_app.entry(app).or_default().extend(task_reports(
            &service,
            std::slice::from_ref(&task),
            &nodes,
        ));
    }
    by_app
}

/// A service's tasks as instance reports, read from the swarm API, so a task on any node is
/// seen: where each answers is its node's address and the port the engine published for it
/// (host mode), its release and process are its container labels. Named as the task's
/// container is (`SERVICE.SLOT.TASKID`).
fn task_reports(
    service: &str,
    tasks: &[bollard::models::Task],
    nodes: &HashMap<String, Node>,
) -> Vec<ContainerReport> {
    tasks
        .iter()
        .filter_map(|task| {
            let status = task.status.clone()?;
            let labels = task
                .spec
                .as_ref()?
                .container_spec
                .as_ref()?
                .labels
                .clone()
                .unwrap_or_default();
            let release = labels.get(LABEL_RELEASE)?.parse().ok()?;
            let port = status
                .port_status
                .and_then(|p| p.ports)
                .and_then(|ports| ports.into_iter().find_map(|p| p.published_port))
                .and_then(|p| u16::try_from(p).ok());
            let node = task.node_id.as_ref().and_then(|id| nodes.get(id));
            let address = match (node, port) {
                (Some(node), Some(port)) => {
                    Some(SocketAddr::new(crate::route::reachable(node.address), port))
                }
                _ => None,
            };
            let running = status.state == Some(TaskState::RUNNING)
                && task.desired_state == Some(TaskState::RUNNING);
            let slot = task.slot.and_then(|s| u32::try_from(s).ok()).unwrap_or(1);
            Some(ContainerReport {
                name: format!("{service}.{slot}.{}", task.id.as_deref()?),
                process: labels
                    .get(LABEL_PROCESS)
                    .cloned()
                    .unwrap_or_else(|| "web".to_string()),
                index: slot,
                release,
                state: if running {
                    "running".to_string()
                } else {
                    status.state.map_or("-".to_string(), |s| s.to_string())
                },
                // Why a task does not run (`no suitable node ...`) before what it is doing.
                status: status.err.or(status.message).unwrap_or_default(),
                restarts: 0,
                host_port: port,
                address: running.then_some(address).flatten(),
                started_at: None,
                swarm_service: Some(service.to_string()),
                unit: None,
                node: node.map(|n| n.hostname.clone()),
            })
        })
        .collect()
}

/// `value` as the swarm gives it back when it expands a task's environment: the swarm reads
/// env values as Go templates (`{{.Node.Hostname}}` becomes the node's name, `{{` alone makes
/// it refuse the service), and `{{"{{"}}` is how a template writes a literal `{{`.
pub fn literal(value: &str) -> String {
    value.replace("{{", "{{\"{{\"}}")
}

/// What `run:task` runs: a command of the app's release, as a one-off swarm task.
pub struct TaskRun {
    pub app: String,
    pub release: i64,
    /// The image as the nodes pull it (`cluster_registry`, by digest).
    pub image: String,
    pub env: Vec<String>,
    pub command: Vec<String>,
    /// The app's placement (its constraints; the node of its volumes).
    pub placement: Vec<String>,
    /// The app's mounts (`source:path`).
    pub binds: Vec<String>,
    /// The registry the nodes pull from: berth's credentials for it go with the service.
    pub registry: Option<String>,
    /// How long it may wait for a node to take it.
    pub pending_limit: Duration,
}

/// `run:task`: the command as a one-off swarm service of one task that is never restarted,
/// placed by the swarm (on any node the app's placement allows). Its output is the task's log,
/// live, after a first line naming its node; the exit code is the task's. The service is
/// removed at the end, or when the caller goes away.
pub async fn run_task(docker: &Docker, run: TaskRun) -> Result<super::oneoff::OneOff, String> {
    use super::oneoff::{Chunk, OneOff};
    use bollard::models::{
        Mount, MountType, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec,
        TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecRestartPolicy,
        TaskSpecRestartPolicyConditionEnum,
    };
    use futures_util::StreamExt;
    let suffix: u32 = rand::random::<u32>() % 1_000_000;
    let name = format!("berth-{}-run-{suffix}", run.app);
    let labels = HashMap::from([
        (super::names::LABEL_APP.to_string(), run.app.clone()),
        (LABEL_PROCESS.to_string(), "run".to_string()),
        (LABEL_RELEASE.to_string(), run.release.to_string()),
    ]);
    let mounts: Vec<Mount> = run
        .binds
        .iter()
        .filter_map(|bind| {
            let (source, target) = bind.rsplit_once(':')?;
            Some(Mount {
                source: Some(source.to_string()),
                target: Some(target.to_string()),
                typ: Some(if source.starts_with('/') {
                    MountType::BIND
                } else {
                    MountType::VOLUME
                }),
                ..Default::default()
            })
        })
        .collect();
    let spec = ServiceSpec {
        name: Some(name.clone()),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(run.image.clone()),
                args: Some(run.command.clone()),
                env: Some(run.env.iter().map(|entry| literal(entry)).collect()),
                labels: Some(labels),
                init: Some(true),
                mounts: Some(mounts),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(run.placement.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let credentials = run
        .registry
        .as_deref()
        .and_then(crate::registry::credentials);
    docker
        .create_service(spec, credentials)
        .await
        .map_err(|e| {
            format!(
                "the swarm refused the one-off task: {}",
                engine::describe(&e)
            )
        })?;
    // The output flows as the task writes it, through a short queue: a task that writes
    // without end is held back by a client that reads slowly, never buffered in berth.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Chunk>(16);
    let (code_sender, code) = tokio::sync::oneshot::channel::<i64>();
    {
        let (docker, name) = (docker.clone(), name.clone());
        let pending_limit = run.pending_limit;
        tokio::spawn(async move {
            let exit = stream_task(&docker, &name, pending_limit, &sender).await;
            let _ = code_sender.send(exit);
        });
    }
    let output = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    })
    .boxed();
    let exit = {
        let (docker, name) = (docker.clone(), name.clone());
        async move {
            let code = code.await.unwrap_or(1);
            let _ = docker.delete_service(&name).await;
            code
        }
        .boxed()
    };
    let abort: Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send> = {
        let docker = docker.clone();
        Box::new(move || {
            async move {
                let _ = docker.delete_service(&name).await;
            }
            .boxed()
        })
    };
    Ok(OneOff {
        output,
        input: Box::pin(tokio::io::sink()),
        exit,
        abort,
    })
}

/// The web tasks of the app's service, wherever they run (the reconciler): as reports.
pub async fn web_tasks(docker: &Docker, app: &str) -> Result<Vec<ContainerReport>, String> {
    let service = service_name(app, "web");
    if docker.inspect_service(&service, None).await.is_err() {
        return Ok(Vec::new());
    }
    let all = tasks(docker, &service).await?;
    let nodes = node_addresses(docker).await?;
    Ok(task_reports(&service, &all, &nodes))
}

/// Follows the one-off service's task until it ends, sending its node, then its log as it is
/// written; gives its exit code. The swarm's followed log does not end with the task, so once
/// the task has ended its whole log is read again (not followed) and the frames not yet sent
/// are sent: nothing written at the end is lost, nothing is sent twice. Stops at once when the
/// receiver is gone (the client left; the service is removed by the abort).
async fn stream_task(
    docker: &Docker,
    service: &str,
    pending_limit: Duration,
    out: &tokio::sync::mpsc::Sender<super::oneoff::Chunk>,
) -> i64 {
    use super::oneoff::Chunk;
    use futures_util::StreamExt;
    let started = Instant::now();
    let mut announced = false;
    let mut followed: Option<futures_util::stream::BoxStream<'static, _>> = None;
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    let (task_id, exit) = loop {
        if let Some(stream) = followed.as_mut() {
            tokio::select! {
                item = stream.next() => {
                    match item {
                        Some(Ok(item)) => {
                            if out.send(Chunk::from(item)).await.is_err() {
                                return 1;
                            }
                            sent += 1;
                        }
                        // Ended or broken: not followed again (the read at the end
                        // gives the rest), only the task's state is.
                        _ => *stream = futures_util::stream::pending().boxed(),
                    }
                    continue;
                }
                _ = tick.tick() => {}
            }
        } else {
            tick.tick().await;
        }
        if out.is_closed() {
            return 1;
        }
        let Some(task) = tasks(docker, service)
            .await
            .ok()
            .and_then(|t| t.into_iter().next())
        else {
            continue;
        };
        let status = task.status.clone().unwrap_or_default();
        if !announced && let Some(node) = task.node_id.as_deref() {
            let hostname = node_addresses(docker)
                .await
                .ok()
                .and_then(|n| n.get(node).map(|n| n.hostname.clone()))
                .unwrap_or_else(|| node.to_string());
            let line = format!("-----> Running as a one-off task on node {hostname}\n");
            if out.send(Chunk::Err(line.into_bytes())).await.is_err() {
                return 1;
            }
            announced = true;
        }
        let failed = |why: String| async move {
            let _ = out.send(Chunk::Err(why.into_bytes())).await;
        };
        match status.state {
            Some(TaskState::RUNNING) if followed.is_none() => {
                if let Some(id) = task.id.clone() {
                    let options = bollard::query_parameters::LogsOptionsBuilder::default()
                        .stdout(true)
                        .stderr(true)
                        .follow(true)
                        .build();
                    followed = Some(docker.task_logs(&id, Some(options)).boxed());
                }
            }
            Some(TaskState::COMPLETE) => break (task.id, 0),
            Some(TaskState::FAILED) => {
                let exit = status.container_status.and_then(|c| c.exit_code);
                break (task.id, exit.unwrap_or(1));
            }
            Some(TaskState::REJECTED | TaskState::SHUTDOWN | TaskState::ORPHANED) => {
                let why = status.err.or(status.message).unwrap_or_default();
                failed(format!(" !     the one-off task did not run: {why}\n")).await;
                return 1;
            }
            Some(TaskState::PENDING | TaskState::NEW | TaskState::ALLOCATED)
                if started.elapsed() > pending_limit =>
            {
                let why = status.err.or(status.message).unwrap_or_default();
                failed(format!(" !     no node took the one-off task: {why}\n")).await;
                return 1;
            }
            _ => {}
        }
    };
    drop(followed);
    if let Some(id) = task_id {
        let options = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let mut whole = docker.task_logs(&id, Some(options)).skip(sent);
        while let Some(Ok(item)) = whole.next().await {
            if out.send(Chunk::from(item)).await.is_err() {
                return 1;
            }
        }
    }
    exit
}

/// Removes the app's stack and waits until its containers and network are gone (a stack
/// deployed again at once would race the removal). Gives the number of tasks that ran.
async fn remove_stack(docker: &Docker, app: &str) -> Result<usize, String> {
    let stack = stack_name(app);
    let label = format!("com.docker.stack.namespace={stack}");
    let containers = inventory::list_labeled(docker, vec![label.clone()]).await?;
    let running = containers
        .iter()
        .filter(|c| c.state.as_ref().is_some_and(|s| s.to_string() == "running"))
        .count();
    let services = {
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let options = bollard::query_parameters::ListServicesOptionsBuilder::default()
            .filters(&filters)
            .build();
        docker
            .list_services(Some(options))
            .await
            .unwrap_or_default()
    };
    if services.is_empty() && containers.is_empty() {
        return Ok(0);
    }
    cli(&["stack", "rm", &stack]).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let network = format!("{stack}_default");
    while Instant::now() < deadline {
        let left = inventory::list_labeled(docker, vec![label.clone()])
            .await?
            .len();
        let network_left = docker
            .inspect_network(
                &network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .is_ok();
        if left == 0 && !network_left {
            return Ok(running);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "the swarm did not remove stack {stack} within 60 s"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_answer_at_their_nodes_address_and_published_port() {
        use bollard::models::{
            EndpointPortConfig, PortStatus, Task, TaskSpec, TaskSpecContainerSpec, TaskStatus,
        };
        let task = |id: &str, node: &str, port: i64, state: TaskState| Task {
            id: Some(id.to_string()),
            node_id: Some(node.to_string()),
            slot: Some(2),
            desired_state: Some(TaskState::RUNNING),
            spec: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    labels: Some(HashMap::from([
                        (LABEL_RELEASE.to_string(), "7".to_string()),
                        (LABEL_PROCESS.to_string(), "web".to_string()),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: Some(state),
                port_status: Some(PortStatus {
                    ports: Some(vec![EndpointPortConfig {
                        published_port: Some(port),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let node = |address: &str, hostname: &str| Node {
            address: address.parse().unwrap(),
            hostname: hostname.to_string(),
            role: "worker".to_string(),
            labels: HashMap::new(),
        };
        let nodes = HashMap::from([
            ("n1".to_string(), node("10.0.0.1", "manager")),
            ("n2".to_string(), node("10.0.0.2", "worker-1")),
        ]);
        let tasks = [
            task("a", "n1", 30001, TaskState::RUNNING),
            task("b", "n2", 30002, TaskState::RUNNING),
            task("c", "n2", 30003, TaskState::STARTING),
        ];
        let reports = task_reports("berth-shop_web", &tasks, &nodes);
        let addresses: Vec<Option<String>> = reports
            .iter()
            .map(|r| r.address.map(|a| a.to_string()))
            .collect();
        // A task on another node answers there; one not running yet is not routed to.
        assert_eq!(
            addresses,
            [
                Some("10.0.0.1:30001".into()),
                Some("10.0.0.2:30002".into()),
                None
            ]
        );
        assert_eq!(reports[1].name, "berth-shop_web.2.b");
        assert_eq!(reports[1].node.as_deref(), Some("worker-1"));
        assert_eq!((reports[1].release, reports[1].index), (7, 2));
        assert_eq!(reports[2].state, "starting");
    }

    #[test]
    fn a_service_runs_the_release_whatever_address_its_nodes_pull_it_at() {
        let release = "127.0.0.1:5055/shop:v3";
        assert!(same_image("10.0.0.2:5055/shop:v3@sha256:ab", release));
        assert!(same_image("127.0.0.1:5055/shop:v3", release));
        assert!(!same_image("10.0.0.2:5055/shop:v2@sha256:ab", release));
        assert!(!same_image("10.0.0.2:5055/shop-v2:v3@sha256:ab", release));
    }

    #[test]
    fn nodes_fit_the_placement_constraints_they_match() {
        let node = Node {
            address: "10.0.0.2".parse().unwrap(),
            hostname: "worker-1".into(),
            role: "worker".into(),
            labels: HashMap::from([("zone".to_string(), "eu".to_string())]),
        };
        assert!(node.satisfies("n1", "node.labels.zone==eu"));
        assert!(!node.satisfies("n1", "node.labels.zone==us"));
        assert!(node.satisfies("n1", "node.labels.zone!=us"));
        assert!(!node.satisfies("n1", "node.labels.disk==ssd"));
        assert!(node.satisfies("n1", "node.labels.disk!=ssd"));
        assert!(node.satisfies("n1", "node.hostname==worker-1"));
        assert!(!node.satisfies("n1", "node.role==manager"));
        assert!(node.satisfies("n1", "node.id==n1"));
        assert!(node.satisfies("n1", "node.platform.os==linux"));
    }

    #[test]
    fn task_ids_come_from_container_names() {
        assert_eq!(
            task_id("berth-a_web.2.rjzzoloii3j0925d"),
            Some("rjzzoloii3j0925d")
        );
        assert_eq!(stack_name("shop"), "berth-shop");
        assert_eq!(service_name("shop", "web"), "berth-shop_web");
    }
}
