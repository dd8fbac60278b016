//! The docker target: one container per process instance, through the engine API.
//!
//! Containers are named `berth-APP-vN-web-I` and labeled with the app, release, process and
//! instance index, so the engine itself is the record of what runs (the reconciler compares it
//! with the DB). berth picks each container's host port, so a restart keeps its address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::backend::Backend;
use super::inventory::{ContainerReport, own_instances, restart_count};
use super::logs::last_logs;
use super::names::*;
use super::network::{ensure_network, join_links};
use super::probe::{answers, probe};
use super::serving::Publish;
use super::spec::{DEFAULT_PORT, DeploySpec, Instance};
use crate::engine;
use crate::output::Output;

/// The docker target.
pub struct Containers;

impl Backend for Containers {
    fn deploy<'a>(
        &'a self,
        docker: &'a Docker,
        spec: &'a DeploySpec,
        out: &'a Output,
        publish: Publish<'a>,
    ) -> BoxFuture<'a, Result<Vec<Instance>, String>> {
        deploy(docker, spec, out, publish).boxed()
    }

    fn scale<'a>(
        &'a self,
        docker: &'a Docker,
        spec: &'a DeploySpec,
        out: &'a Output,
        publish: Publish<'a>,
    ) -> BoxFuture<'a, Result<Vec<Instance>, String>> {
        scale(docker, spec, out, publish).boxed()
    }

    fn restart<'a>(
        &'a self,
        docker: &'a Docker,
        spec: &'a DeploySpec,
        out: &'a Output,
        publish: Publish<'a>,
    ) -> BoxFuture<'a, Result<(), String>> {
        restart(docker, spec, out, publish).boxed()
    }

    fn stop<'a>(
        &'a self,
        docker: &'a Docker,
        app: &'a str,
    ) -> BoxFuture<'a, Result<usize, String>> {
        stop_all(docker, app).boxed()
    }

    fn destroy<'a>(
        &'a self,
        docker: &'a Docker,
        app: &'a str,
        _work_dir: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<usize, String>> {
        stop_all(docker, app).boxed()
    }
}

/// The port the web process listens on: the image's single EXPOSE, else 5000.
pub async fn web_port(docker: &Docker, image: &str) -> Result<u16, String> {
    let inspected = docker.inspect_image(image).await.map_err(|e| {
        format!(
            "image {image} is not on this engine: {}",
            engine::describe(&e)
        )
    })?;
    let ports: Vec<u16> = inspected
        .config
        .and_then(|c| c.exposed_ports)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.split('/').next()?.parse().ok())
        .collect();
    Ok(if ports.len() == 1 {
        ports[0]
    } else {
        DEFAULT_PORT
    })
}

/// Starts every web instance of the release and waits until all answer; then makes them the
/// serving set and retires the app's older releases after the drain time. If any never answers,
/// the ones started are removed and the running release is left alone.
pub async fn deploy(
    docker: &Docker,
    spec: &DeploySpec,
    out: &Output,
    publish: Publish<'_>,
) -> Result<Vec<Instance>, String> {
    let instances = start_instances(docker, spec, 1..=spec.web, out).await?;
    let mut others = Vec::new();
    let mut failure = None;
    for process in &spec.others {
        for index in 1..=process.count {
            match start_other(docker, spec, process, index, out).await {
                Ok(name) => others.push(name),
                Err(message) => {
                    failure = Some(message);
                    break;
                }
            }
        }
    }
    let retiring: Vec<SocketAddr> = match failure {
        Some(_) => Vec::new(),
        None => own_instances(docker, &spec.app, None)
            .await
            .unwrap_or_default()
            .iter()
            .filter(|c| c.release != spec.release)
            .filter_map(|c| c.address)
            .collect(),
    };
    if failure.is_none() {
        crate::crash::point("deploy");
    }
    let failure = match failure {
        Some(message) => Some(message),
        None => publish.serve(&addresses_of(&instances)).await.err(),
    };
    if failure.is_none() {
        crate::crash::point("switched");
    }
    if let Some(message) = failure {
        for name in instances.iter().map(|i| &i.name).chain(&others) {
            remove_container(docker, name).await;
        }
        return Err(message);
    }
    // Old releases stop in the background once their requests are done: the push reports as
    // soon as the new one answers.
    let drained = publish.drained(&retiring);
    let (docker, app, release) = (docker.clone(), spec.app.clone(), spec.release);
    tokio::spawn(async move {
        drained.await;
        retire_older(&docker, &app, release).await
    });
    Ok(instances)
}

/// Starts the release's web instances beside the app's current ones (a canary): nothing else
/// runs or stops. If any never answers, the ones started are removed.
pub async fn deploy_beside(
    docker: &Docker,
    spec: &DeploySpec,
    out: &Output,
) -> Result<Vec<Instance>, String> {
    start_instances(docker, spec, 1..=spec.web, out).await
}

/// Stops and removes every container of one release, once its requests are done.
pub async fn retire_release(docker: &Docker, app: &str, release: i64, publish: Publish<'_>) {
    let containers = own_instances(docker, app, Some(release))
        .await
        .unwrap_or_default();
    let addresses: Vec<SocketAddr> = containers.iter().filter_map(|c| c.address).collect();
    publish.drained(&addresses).await;
    for container in containers {
        stop_and_remove(docker, &container.name).await;
    }
}

fn addresses_of(instances: &[Instance]) -> Vec<SocketAddr> {
    instances.iter().filter_map(|i| i.address).collect()
}

/// Brings the release's web instances to `spec.web`: starts the missing ones (all must answer,
/// else they are removed and the formation is as before), serves exactly instances 1..=web,
/// then removes the extra ones after the drain time.
pub async fn scale(
    docker: &Docker,
    spec: &DeploySpec,
    out: &Output,
    publish: Publish<'_>,
) -> Result<Vec<Instance>, String> {
    let all = own_instances(docker, &spec.app, Some(spec.release)).await?;
    let (current, other_containers): (Vec<ContainerReport>, Vec<ContainerReport>) =
        all.into_iter().partition(|c| c.process == "web");
    let mut serving: Vec<Instance> = current
        .iter()
        .filter(|c| c.index <= spec.web && c.state == "running")
        .map(|c| Instance {
            name: c.name.clone(),
            index: c.index,
            address: c.address,
        })
        .collect();
    let highest = current.iter().map(|c| c.index).max().unwrap_or(0);
    if highest < spec.web {
        serving.extend(start_instances(docker, spec, highest + 1..=spec.web, out).await?);
    }
    // Other process types: start the missing instances, stop the extra ones (no traffic to drain).
    for process in &spec.others {
        let have: Vec<&ContainerReport> = other_containers
            .iter()
            .filter(|c| c.process == process.name)
            .collect();
        let highest = have.iter().map(|c| c.index).max().unwrap_or(0);
        for index in highest + 1..=process.count {
            start_other(docker, spec, process, index, out).await?;
        }
        for extra in have.iter().filter(|c| c.index > process.count) {
            out.detail(&format!("stopping {}", extra.name));
            stop_and_remove(docker, &extra.name).await;
        }
    }
    publish.serve(&addresses_of(&serving)).await?;
    crate::crash::point("scale");
    let extras: Vec<&ContainerReport> = current.iter().filter(|c| c.index > spec.web).collect();
    if !extras.is_empty() {
        let addresses: Vec<SocketAddr> = extras.iter().filter_map(|c| c.address).collect();
        publish.drained(&addresses).await;
    }
    for extra in extras {
        out.detail(&format!("stopping {}", extra.name));
        stop_and_remove(docker, &extra.name).await;
    }
    serving.sort_by_key(|i| i.index);
    Ok(serving)
}

/// Replaces the release's containers one at a time: a fresh container for the instance, which
/// must answer, takes the old one's place in the serving set, and the old one stops after the
/// drain time; only then the next. A replacement that fails leaves the old one serving.
pub async fn restart(
    docker: &Docker,
    spec: &DeploySpec,
    out: &Output,
    publish: Publish<'_>,
) -> Result<(), String> {
    let (mut current, others): (Vec<ContainerReport>, Vec<ContainerReport>) =
        own_instances(docker, &spec.app, Some(spec.release))
            .await?
            .into_iter()
            .partition(|c| c.process == "web");
    current.sort_by_key(|c| c.index);
    for container in &others {
        let Some(process) = spec.others.iter().find(|p| p.name == container.process) else {
            continue;
        };
        out.detail(&format!("restarting {}", container.name));
        stop_and_remove(docker, &container.name).await;
        start_other(docker, spec, process, container.index, out).await?;
    }
    let mut serving: Vec<(u32, SocketAddr)> = current
        .iter()
        .filter_map(|c| Some((c.index, c.address?)))
        .collect();
    for container in current {
        out.detail(&format!("restarting {}", container.name));
        let retiring = format!("{}-retiring", container.name);
        let rename = bollard::query_parameters::RenameContainerOptionsBuilder::default()
            .name(&retiring)
            .build();
        docker
            .rename_container(&container.name, rename)
            .await
            .map_err(|e| {
                format!(
                    "cannot restart {}: {}",
                    container.name,
                    engine::describe(&e)
                )
            })?;
        let fresh = match start_one(docker, spec, container.index, out).await {
            Ok(fresh) => fresh,
            Err(message) => {
                let back = bollard::query_parameters::RenameContainerOptionsBuilder::default()
                    .name(&container.name)
                    .build();
                let _ = docker.rename_container(&retiring, back).await;
                return Err(message);
            }
        };
        serving.retain(|(index, _)| *index != container.index);
        serving.extend(fresh.address.map(|a| (container.index, a)));
        publish
            .serve(&serving.iter().map(|(_, a)| *a).collect::<Vec<_>>())
            .await?;
        publish
            .drained(&container.address.into_iter().collect::<Vec<_>>())
            .await;
        stop_and_remove(docker, &retiring).await;
    }
    Ok(())
}

/// Stops and removes every container the docker target runs for the app. Images, config and
/// data stay.
pub async fn stop_all(docker: &Docker, app: &str) -> Result<usize, String> {
    let containers = own_instances(docker, app, None).await?;
    for container in &containers {
        stop_and_remove(docker, &container.name).await;
    }
    Ok(containers.len())
}

async fn start_instances(
    docker: &Docker,
    spec: &DeploySpec,
    indexes: std::ops::RangeInclusive<u32>,
    out: &Output,
) -> Result<Vec<Instance>, String> {
    let mut started: Vec<Instance> = Vec::new();
    for index in indexes {
        match start_one(docker, spec, index, out).await {
            Ok(instance) => started.push(instance),
            Err(error) => {
                for instance in &started {
                    remove_container(docker, &instance.name).await;
                }
                return Err(error);
            }
        }
    }
    Ok(started)
}

/// Brings one instance of the release back: starts its stopped container (same address) or, when
/// it is gone, makes it anew. Returns what was done.
pub async fn revive(
    docker: &Docker,
    spec: &DeploySpec,
    index: u32,
    existing: Option<&ContainerReport>,
) -> Result<&'static str, String> {
    if let Some(container) = existing {
        if let Some(host_port) = container.host_port {
            let restarts = restart_count(docker, &container.name).await?;
            let address = instance_address(spec, host_port);
            if docker.start_container(&container.name, None).await.is_ok()
                && wait_until_ready(docker, &container.name, address, restarts, spec)
                    .await
                    .is_ok()
            {
                return Ok("restarted");
            }
        }
        remove_container(docker, &container.name).await;
    }
    start_one(docker, spec, index, &Output::discard())
        .await
        .map(|_| "recreated")
}

async fn start_one(
    docker: &Docker,
    spec: &DeploySpec,
    index: u32,
    out: &Output,
) -> Result<Instance, String> {
    let name = container_name(&spec.app, spec.release, "web", index);
    let network = ensure_network(docker, &app_network(&spec.app)).await?;
    crate::registry::ensure_local(docker, &spec.image, spec.digest.as_deref(), out).await?;
    // A container of this name can only be left over from an interrupted run of this release.
    remove_container(docker, &name).await;
    let exposed = format!("{}/tcp", spec.port);
    // The host port is chosen here, not by the engine: an engine-chosen port changes every time
    // the restart policy restarts a crashed container, and the app's address would break.
    let mut attempt = 0;
    let host_port = loop {
        attempt += 1;
        let host_port = free_host_port(spec.publish_address)?;
        let body = container_body(spec, &exposed, index, host_port, &network);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| format!("cannot create container {name}: {}", engine::describe(&e)))?;
        if let Err(message) = join_links(docker, &name, &spec.links).await {
            remove_container(docker, &name).await;
            return Err(message);
        }
        match docker.start_container(&name, None).await {
            Ok(()) => break host_port,
            Err(error) => {
                let message = engine::describe(&error);
                let logs = last_logs(docker, &name).await;
                remove_container(docker, &name).await;
                let port_taken = message.contains("already allocated")
                    || message.contains("address already in use");
                if !(port_taken && attempt < 5) {
                    return Err(format!("container {name} did not start: {message}{logs}"));
                }
            }
        }
    };
    out.detail(&format!(
        "started {name}; waiting for it to answer on PORT {}",
        spec.port
    ));
    let address = instance_address(spec, host_port);
    if let Err(reason) = wait_until_ready(docker, &name, address, 0, spec).await {
        let logs = last_logs(docker, &name).await;
        remove_container(docker, &name).await;
        return Err(format!("{reason}{logs}"));
    }
    Ok(Instance {
        name,
        index,
        address: Some(address),
    })
}

/// Starts one instance of a process type without a port (worker, clock, ...): no `PORT`, not
/// published, not health-checked; the engine's restart policy keeps it running.
pub async fn start_other(
    docker: &Docker,
    spec: &DeploySpec,
    process: &super::spec::ProcessSpec,
    index: u32,
    out: &Output,
) -> Result<String, String> {
    let name = container_name(&spec.app, spec.release, &process.name, index);
    let network = ensure_network(docker, &app_network(&spec.app)).await?;
    crate::registry::ensure_local(docker, &spec.image, spec.digest.as_deref(), out).await?;
    remove_container(docker, &name).await;
    let (env, labels) = identity(spec, &process.name, index);
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(env),
        cmd: Some(process.command.clone()),
        labels: Some(labels),
        host_config: Some(host_config(&process.resources, None, &spec.binds, &network)),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| format!("cannot create container {name}: {}", engine::describe(&e)))?;
    if let Err(message) = join_links(docker, &name, &spec.links).await {
        remove_container(docker, &name).await;
        return Err(message);
    }
    if let Err(error) = docker.start_container(&name, None).await {
        let logs = last_logs(docker, &name).await;
        remove_container(docker, &name).await;
        return Err(format!(
            "container {name} did not start: {}{logs}",
            engine::describe(&error)
        ));
    }
    out.detail(&format!("started {name}"));
    Ok(name)
}

/// Restart policy, init, resources and (for web) the port binding of a container.
pub(super) fn host_config(
    resources: &super::render::Resources,
    port_bindings: Option<HashMap<String, Option<Vec<PortBinding>>>>,
    binds: &[String],
    network: &str,
) -> HostConfig {
    HostConfig {
        port_bindings,
        binds: (!binds.is_empty()).then(|| binds.to_vec()),
        network_mode: Some(network.to_string()),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        // An init process forwards SIGTERM, so apps that ignore it as PID 1 still stop promptly.
        init: Some(true),
        nano_cpus: resources
            .cpu
            .as_deref()
            .and_then(|c| c.parse::<f64>().ok())
            .map(|c| (c * 1e9) as i64),
        memory: resources
            .memory
            .as_deref()
            .and_then(super::render::memory_bytes)
            .and_then(|m| i64::try_from(m).ok()),
        ..Default::default()
    }
}

/// What every instance of a process gets: the config vars and `DYNO`, and the labels that make
/// the engine the record of what runs.
pub(super) fn identity(
    spec: &DeploySpec,
    process: &str,
    index: u32,
) -> (Vec<String>, HashMap<String, String>) {
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("DYNO={process}.{index}"));
    let labels = HashMap::from([
        (LABEL_APP.to_string(), spec.app.clone()),
        (LABEL_RELEASE.to_string(), spec.release.to_string()),
        (LABEL_PROCESS.to_string(), process.to_string()),
        (LABEL_INDEX.to_string(), index.to_string()),
        // Set empty over the image's own labels: a member's `LABEL berth.unit=…` or a swarm
        // task's label must not take the container out of the docker target's hands.
        (LABEL_UNIT.to_string(), String::new()),
        (LABEL_SWARM_SERVICE.to_string(), String::new()),
    ]);
    (env, labels)
}

pub(super) fn container_body(
    spec: &DeploySpec,
    exposed: &str,
    index: u32,
    host_port: u16,
    network: &str,
) -> ContainerCreateBody {
    let (mut env, mut labels) = identity(spec, "web", index);
    env.push(format!("PORT={}", spec.port));
    labels.insert(LABEL_PORT.to_string(), host_port.to_string());
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(env),
        cmd: (!spec.web_command.is_empty()).then(|| spec.web_command.clone()),
        exposed_ports: Some(vec![exposed.to_string()]),
        labels: Some(labels),
        host_config: Some(host_config(
            &spec.resources,
            Some(HashMap::from([(
                exposed.to_string(),
                Some(vec![PortBinding {
                    host_ip: Some(spec.publish_address.to_string()),
                    host_port: Some(host_port.to_string()),
                }]),
            )])),
            &spec.binds,
            network,
        )),
        // On the app's network the web instances answer to the app's name.
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_string(),
                EndpointSettings {
                    aliases: Some(vec![spec.app.clone()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

/// A port nothing listens on at `address` right now (the kernel's pick from its ephemeral range).
fn free_host_port(address: IpAddr) -> Result<u16, String> {
    crate::route::free_port(address)
}

/// Where a container of the docker target published on `host_port` answers: this host's
/// publish address, as this host reaches it.
fn instance_address(spec: &DeploySpec, host_port: u16) -> SocketAddr {
    SocketAddr::new(crate::route::reachable(spec.publish_address), host_port)
}

/// Waits until the container answers at `address`; fails when it exits or is restarted by the
/// restart policy (more than `restarts_before` restarts), or after `ready_timeout`.
async fn wait_until_ready(
    docker: &Docker,
    name: &str,
    address: SocketAddr,
    restarts_before: i64,
    spec: &DeploySpec,
) -> Result<(), String> {
    let deadline = Instant::now() + spec.ready_timeout;
    let still_running = || async {
        let info = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| format!("lost container {name}: {}", engine::describe(&e)))?;
        let mut state = info.state.clone().unwrap_or_default();
        if info.restart_count.unwrap_or(0) > restarts_before || state.running != Some(true) {
            // Restarted by the policy: while the engine waits to start it again (`Restarting`,
            // which also says `Running`) the exit code is the last exit's. Caught already
            // running again, wait a moment for its next exit or restart.
            let settled = |state: &bollard::models::ContainerState| {
                state.running != Some(true) || state.restarting == Some(true)
            };
            for _ in 0..50 {
                if settled(&state) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                state = docker
                    .inspect_container(name, None)
                    .await
                    .ok()
                    .and_then(|i| i.state)
                    .unwrap_or_default();
            }
            let code = match (settled(&state), state.exit_code) {
                (true, Some(code)) => code.to_string(),
                _ => "unknown: it was restarted".to_string(),
            };
            return Err(format!(
                "the app exited at start (exit code {code}) instead of listening on PORT {}",
                spec.port
            ));
        }
        Ok(())
    };
    // app.json's health check: its own attempts, delays and timeout.
    if let Some(check) = &spec.health {
        tokio::time::sleep(Duration::from_secs(check.initial_delay)).await;
        let mut last = String::new();
        for attempt in 1..=check.attempts {
            still_running().await?;
            match probe(address, Some(check)).await {
                Ok(()) => return Ok(()),
                Err(reason) => last = reason,
            }
            if attempt < check.attempts {
                tokio::time::sleep(Duration::from_secs(check.wait)).await;
            }
        }
        return Err(format!(
            "the health check failed {} times (app.json healthchecks.web): {last}",
            check.attempts
        ));
    }
    loop {
        still_running().await?;
        if answers(address).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the app did not answer on PORT {} within {} s (ready_timeout)",
                spec.port,
                spec.ready_timeout.as_secs()
            ));
        }
        // Most apps answer within a second of starting: look often then, calmly after.
        let started = spec.ready_timeout.saturating_sub(deadline - Instant::now());
        let pause = if started < Duration::from_secs(2) {
            20
        } else {
            100
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Stops and removes the app's containers of releases older than `keep_release` (never newer
/// ones: a later deploy may already be starting its own).
async fn retire_older(docker: &Docker, app: &str, keep_release: i64) {
    match own_instances(docker, app, None).await {
        Ok(containers) => {
            for container in containers.iter().filter(|c| c.release < keep_release) {
                stop_and_remove(docker, &container.name).await;
            }
        }
        Err(error) => tracing::warn!(%app, %error, "could not list old containers"),
    }
}

async fn stop_and_remove(docker: &Docker, name: &str) {
    let stop = StopContainerOptionsBuilder::default().t(10).build();
    let _ = docker.stop_container(name, Some(stop)).await;
    remove_container(docker, name).await;
}

pub(super) async fn remove_container(docker: &Docker, name: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.remove_container(name, Some(options)).await;
}
