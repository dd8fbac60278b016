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
    ContainerCreateBody, ContainerSummary, EndpointSettings, HostConfig, NetworkCreateRequest,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};

use super::probe::{answers, probe};
use super::{Backend, DEFAULT_PORT, DeploySpec, Instance, Publish};
use crate::engine;
use crate::output::Output;

pub const LABEL_APP: &str = "berth.app";
pub const LABEL_RELEASE: &str = "berth.release";
pub const LABEL_PROCESS: &str = "berth.process";
pub const LABEL_INDEX: &str = "berth.index";
pub const LABEL_PORT: &str = "berth.port";
/// Set by the engine on the containers of swarm tasks (the swarm target's instances).
const LABEL_SWARM_SERVICE: &str = "com.docker.swarm.service.name";
const LABEL_SWARM_TASK: &str = "com.docker.swarm.task.name";

/// The engine network every berth container joined before networks per app (finding 10):
/// containers of an earlier berth are moved off it at start (`adopt_legacy_network`).
pub const LEGACY_NETWORK: &str = "berth";

/// The engine network of one app. Its containers (web, workers, release phase, `run`) join it and
/// no other app's, so apps cannot reach each other's containers; its web instances answer there
/// to the app's name. An app linked to it (`apps:link APP DEP`) joins DEP's network too. The `.`
/// cannot be part of an app name, so no app's network is another's.
pub fn app_network(app: &str) -> String {
    format!("berth.{app}")
}

/// The docker target.
pub struct Containers;

/// The id of the named network, made if it is not there yet. The engine lets concurrent creates
/// make several networks of one name: everyone uses the lowest id, and unused others go.
pub async fn ensure_network(docker: &Docker, name: &str) -> Result<String, String> {
    static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let ids = || async {
        let filters = HashMap::from([("name", vec![name.to_string()])]);
        let options = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let mut ids: Vec<String> = docker
            .list_networks(Some(options))
            .await
            .map_err(|e| format!("cannot list engine networks: {}", engine::describe(&e)))?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| n.id)
            .collect();
        ids.sort();
        Ok::<_, String>(ids)
    };
    let mut found = ids().await?;
    if found.is_empty() {
        let _creating = CREATING.lock().await;
        found = ids().await?;
        if found.is_empty() {
            create_app_network(docker, name).await?;
            found = ids().await?;
        }
    }
    for extra in found.iter().skip(1) {
        // Refused by the engine while a container uses it.
        let _ = docker.remove_network(extra).await;
    }
    found
        .into_iter()
        .next()
        .ok_or_else(|| format!("the engine network {name} vanished as it was made"))
}

/// `app_networks` by default: 10.200.0.0/14, 1024 apps.
pub const DEFAULT_APP_NETWORKS: (u32, u8) = (0x0ac8_0000, 14);

/// The pool app networks take their /24 subnets from: the engine's own default pools give
/// about 30 bridge networks, far fewer than a host has apps.
static NETWORK_POOL: std::sync::OnceLock<(u32, u8)> = std::sync::OnceLock::new();

/// Sets the pool (`app_networks`, e.g. `10.200.0.0/14`), once at start.
pub fn set_network_pool(pool: (u32, u8)) {
    let _ = NETWORK_POOL.set(pool);
}

/// A bridge network named `name` on `subnet` (berth chooses subnets: the engine's own pools
/// are small).
fn bridge_on(name: &str, subnet: &str) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: name.to_string(),
        driver: Some("bridge".to_string()),
        ipam: Some(bollard::models::Ipam {
            config: Some(vec![bollard::models::IpamConfig {
                subnet: Some(subnet.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Makes the bridge network `name` on the first /24 of the pool that no engine network uses
/// (another berth making one at the same moment makes the engine refuse the overlap: the next
/// is tried).
async fn create_app_network(docker: &Docker, name: &str) -> Result<(), String> {
    let (base, prefix) = *NETWORK_POOL.get_or_init(|| DEFAULT_APP_NETWORKS);
    let used: std::collections::HashSet<String> = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .map_err(|e| format!("cannot list engine networks: {}", engine::describe(&e)))?
        .into_iter()
        .filter_map(|n| n.ipam.and_then(|i| i.config))
        .flatten()
        .filter_map(|c| c.subnet)
        .collect();
    let count = 1u32 << (24 - u32::from(prefix.min(24)));
    let mut last_error = String::from("every /24 of the pool is in use");
    for index in 0..count {
        let subnet = std::net::Ipv4Addr::from(base + (index << 8));
        let subnet = format!("{subnet}/24");
        if used.contains(&subnet) {
            continue;
        }
        let request = NetworkCreateRequest {
            labels: Some(HashMap::from([(
                LABEL_APP.to_string(),
                name.trim_start_matches("berth.").to_string(),
            )])),
            ..bridge_on(name, &subnet)
        };
        match docker.create_network(request).await {
            Ok(_) => return Ok(()),
            Err(error) => {
                last_error = engine::describe(&error);
                if !last_error.contains("overlap") {
                    break;
                }
            }
        }
    }
    Err(format!(
        "cannot make the engine network {name}: {last_error} (app_networks)"
    ))
}

/// The network members' builds run on (`RUN` steps): the public internet only. Made at start
/// with `build_subnet`, and guarded by `guard_build_network`. (`-`, not `.`: no app's network,
/// `berth.APP`, can be named like it.)
pub const BUILD_NETWORK: &str = "berth-builds";

/// Where the build network's guard stands: whether members' builds may use it.
static BUILD_GUARDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the build network's firewall has been set (`guard_build_network`).
pub fn build_network_guarded() -> bool {
    BUILD_GUARDED.load(std::sync::atomic::Ordering::SeqCst)
}

/// The network a member's build runs on: the guarded build network, or none at all when its
/// guard could not be set up (then a build that needs the network fails, and says so).
pub fn member_build_network() -> &'static str {
    if build_network_guarded() {
        BUILD_NETWORK
    } else {
        "none"
    }
}

/// Private, link-local, shared and multicast ranges a member's build may not reach: the host's
/// LAN, other apps' networks, cloud metadata (169.254.169.254).
const BUILD_DENIED: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "224.0.0.0/4",
];

/// Makes the build network on `subnet` and puts a firewall in front of it (finding 3): its
/// containers reach the public internet and the host's DNS servers, nothing of the host
/// (`INPUT`) and no private or link-local address (`DOCKER-USER`). Idempotent; run at start.
pub async fn guard_build_network(docker: &Docker, subnet: &str) -> Result<(), String> {
    let exists = docker
        .inspect_network(
            BUILD_NETWORK,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .is_ok();
    if !exists {
        let request = bridge_on(BUILD_NETWORK, subnet);
        if let Err(error) = docker.create_network(request).await {
            // Another berth on this engine may have made it at the same moment.
            let made = docker
                .inspect_network(
                    BUILD_NETWORK,
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
                .is_ok();
            if !made {
                return Err(format!(
                    "cannot make the build network {BUILD_NETWORK} on {subnet}: {}",
                    engine::describe(&error)
                ));
            }
        }
    }
    let nameservers: Vec<String> = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|a| a.trim().to_string())
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    // Inserted in reverse: the DNS exceptions end up before the drops.
    let mut rules: Vec<Vec<String>> = Vec::new();
    for range in BUILD_DENIED {
        rules.push(
            ["DOCKER-USER", "-s", subnet, "-d", range, "-j", "DROP"]
                .map(String::from)
                .to_vec(),
        );
    }
    for server in &nameservers {
        for protocol in ["udp", "tcp"] {
            rules.push(
                [
                    "DOCKER-USER",
                    "-s",
                    subnet,
                    "-d",
                    server,
                    "-p",
                    protocol,
                    "--dport",
                    "53",
                    "-j",
                    "ACCEPT",
                ]
                .map(String::from)
                .to_vec(),
            );
        }
    }
    rules.push(
        ["INPUT", "-s", subnet, "-j", "DROP"]
            .map(String::from)
            .to_vec(),
    );
    let applied = tokio::task::spawn_blocking(move || {
        for rule in rules {
            let present = std::process::Command::new("iptables")
                .arg("-C")
                .args(&rule)
                .output()
                .map_err(|e| format!("iptables is needed to guard the build network: {e}"))?;
            if present.status.success() {
                continue;
            }
            let inserted = std::process::Command::new("iptables")
                .arg("-I")
                .args(&rule)
                .output()
                .map_err(|e| format!("iptables: {e}"))?;
            if !inserted.status.success() {
                return Err(format!(
                    "iptables -I {}: {}",
                    rule.join(" "),
                    String::from_utf8_lossy(&inserted.stderr).trim()
                ));
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| format!("internal error: {e}"))?;
    applied?;
    BUILD_GUARDED.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// Joins a created (not yet started) container to the networks of the apps it is linked to,
/// where it reaches their web instances by their names.
async fn join_links(docker: &Docker, container: &str, links: &[String]) -> Result<(), String> {
    for dep in links {
        let network = ensure_network(docker, &app_network(dep)).await?;
        let request = bollard::models::NetworkConnectRequest {
            container: container.to_string(),
            endpoint_config: None,
        };
        docker
            .connect_network(&network, request)
            .await
            .map_err(|e| {
                format!(
                    "cannot join {container} to {dep}'s network: {}",
                    engine::describe(&e)
                )
            })?;
    }
    Ok(())
}

/// Removes the app's network once nothing of it runs; containers of other apps still joined
/// to it (through a link) are let go first. A network already gone is not an error.
pub async fn remove_app_network(docker: &Docker, app: &str) {
    let name = app_network(app);
    let Ok(network) = docker
        .inspect_network(
            &name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    else {
        return;
    };
    for container in network.containers.unwrap_or_default().into_keys() {
        let request = bollard::models::NetworkDisconnectRequest {
            container,
            force: Some(true),
        };
        let _ = docker.disconnect_network(&name, request).await;
    }
    if let Err(error) = docker.remove_network(&name).await {
        tracing::warn!(network = %name, error = %engine::describe(&error), "network left behind");
    }
}

/// Moves the running containers of an earlier berth off the shared `berth` network onto their
/// apps' own (web instances keeping their name as alias there), then removes it; `links`
/// gives each app the apps it is linked to. Run once at start; traffic through the router is
/// not affected (it reaches containers by their published ports).
pub async fn adopt_legacy_network(docker: &Docker, links: &HashMap<String, Vec<String>>) {
    let Ok(network) = docker
        .inspect_network(
            LEGACY_NETWORK,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    else {
        return;
    };
    for id in network.containers.unwrap_or_default().into_keys() {
        let Ok(container) = docker
            .inspect_container(
                &id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        else {
            continue;
        };
        let labels = container.config.and_then(|c| c.labels).unwrap_or_default();
        let Some(app) = labels.get(LABEL_APP) else {
            continue;
        };
        let web = labels.get(LABEL_PROCESS).map(String::as_str) == Some("web");
        let Ok(own) = ensure_network(docker, &app_network(app)).await else {
            continue;
        };
        let request = bollard::models::NetworkConnectRequest {
            container: id.clone(),
            endpoint_config: web.then(|| EndpointSettings {
                aliases: Some(vec![app.clone()]),
                ..Default::default()
            }),
        };
        let _ = docker.connect_network(&own, request).await;
        if let Some(deps) = links.get(app) {
            let _ = join_links(docker, &id, deps).await;
        }
        let request = bollard::models::NetworkDisconnectRequest {
            container: id,
            force: Some(true),
        };
        let _ = docker.disconnect_network(LEGACY_NETWORK, request).await;
    }
    let _ = docker.remove_network(LEGACY_NETWORK).await;
}

/// The label that names a volume's app by its never-reused uid (`apps.uid`).
pub const LABEL_APP_UID: &str = "berth.app_uid";

/// The engine name of an app's named volume: `berth.<uid>.<name>`. Neither part can hold a
/// `.`, and the uid is the app's for good, so no other app (nor a later app of the same name)
/// can ever name it (finding 12).
pub fn volume_name(app_uid: &str, name: &str) -> String {
    format!("berth.{app_uid}.{name}")
}

/// Makes the named volume (labeled with its app) unless it exists; an existing one labeled
/// with another app's uid is refused. (Volumes of a berth from before uids have no uid label:
/// they are reached only through the app's own mounts.)
pub async fn ensure_volume(
    docker: &Docker,
    name: &str,
    app: &str,
    app_uid: &str,
) -> Result<(), String> {
    if let Ok(existing) = docker.inspect_volume(name).await {
        return match existing.labels.get(LABEL_APP_UID) {
            Some(owner) if owner != app_uid => Err(format!(
                "volume {name} belongs to another app: mount a volume of another name"
            )),
            _ => Ok(()),
        };
    }
    let request = VolumeCreateRequest {
        name: Some(name.to_string()),
        labels: Some(HashMap::from([
            (LABEL_APP.to_string(), app.to_string()),
            (LABEL_APP_UID.to_string(), app_uid.to_string()),
        ])),
        ..Default::default()
    };
    docker
        .create_volume(request)
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot make volume {name}: {}", engine::describe(&e)))
}

/// Removes a named volume (its data is gone); one already gone is not an error.
pub async fn remove_volume(docker: &Docker, name: &str) -> Result<(), String> {
    match docker
        .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
    {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(error) => Err(format!(
            "cannot remove volume {name}: {}",
            engine::describe(&error)
        )),
    }
}

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

/// Container name of one process instance of a release.
pub fn container_name(app: &str, release: i64, process: &str, index: u32) -> String {
    format!("berth-{app}-v{release}-{process}-{index}")
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
    if let Some(message) = failure.or_else(|| publish.serve(&addresses_of(&instances)).err()) {
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
    publish.serve(&addresses_of(&serving))?;
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
        publish.serve(&serving.iter().map(|(_, a)| *a).collect::<Vec<_>>())?;
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

/// What the engine reports about one container of an app.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerReport {
    pub name: String,
    pub process: String,
    pub index: u32,
    pub release: i64,
    pub state: String,
    pub status: String,
    pub restarts: i64,
    pub host_port: Option<u16>,
    /// Where the instance answers, as its port binding on this engine says (none while the
    /// container is not running).
    pub address: Option<SocketAddr>,
    pub started_at: Option<String>,
    /// The swarm service whose task this container is (swarm target); none for the docker target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm_service: Option<String>,
}

/// Every container (running or not) carrying all of these label filters.
pub async fn list_labeled(
    docker: &Docker,
    labels: Vec<String>,
) -> Result<Vec<ContainerSummary>, String> {
    let filters = HashMap::from([("label", labels)]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .map_err(|e| format!("cannot list containers: {}", engine::describe(&e)))
}

/// Every container berth runs, by app, in one engine call.
pub async fn all_instances(
    docker: &Docker,
) -> Result<HashMap<String, Vec<ContainerReport>>, String> {
    let mut by_app: HashMap<String, Vec<ContainerReport>> = HashMap::new();
    for summary in list_labeled(docker, vec![LABEL_APP.to_string()]).await? {
        let Some(app) = summary
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_APP))
            .cloned()
        else {
            continue;
        };
        if let Some(report) = summary_to_report(summary) {
            by_app.entry(app).or_default().push(report);
        }
    }
    Ok(by_app)
}

/// The local images labeled as the app's (release and build tags, dangling build results);
/// none when the engine does not answer.
pub async fn app_images(docker: &Docker, app: &str) -> Vec<bollard::models::ImageSummary> {
    let filters = HashMap::from([("label", vec![format!("{LABEL_APP}={app}")])]);
    let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker.list_images(Some(options)).await.unwrap_or_default()
}

/// Removes every image labeled as the app's (all releases and build tags).
pub async fn remove_images(docker: &Docker, app: &str) -> usize {
    let images = app_images(docker, app).await;
    let mut removed = 0;
    for image in images {
        let remove = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(true)
            .build();
        if docker
            .remove_image(&image.id, Some(remove), None)
            .await
            .is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Every container of the app (all releases), or of one release.
pub async fn instances_of(
    docker: &Docker,
    app: &str,
    release: Option<i64>,
) -> Result<Vec<ContainerReport>, String> {
    let mut labels = vec![format!("{LABEL_APP}={app}")];
    if let Some(release) = release {
        labels.push(format!("{LABEL_RELEASE}={release}"));
    }
    let containers = list_labeled(docker, labels).await?;
    let mut reports: Vec<ContainerReport> = containers
        .into_iter()
        .filter_map(summary_to_report)
        .collect();
    reports.sort_by(|a, b| (a.release, &a.process, a.index).cmp(&(b.release, &b.process, b.index)));
    Ok(reports)
}

/// The containers of the docker target alone (not the swarm's tasks, which the swarm manages).
async fn own_instances(
    docker: &Docker,
    app: &str,
    release: Option<i64>,
) -> Result<Vec<ContainerReport>, String> {
    let mut containers = instances_of(docker, app, release).await?;
    containers.retain(|c| c.swarm_service.is_none());
    Ok(containers)
}

pub(super) fn summary_to_report(summary: ContainerSummary) -> Option<ContainerReport> {
    let labels = summary.labels.unwrap_or_default();
    let name = summary.names?.first()?.trim_start_matches('/').to_string();
    // A swarm task's slot is the second part of its name (`berth-APP_web.2.<task id>`), and
    // the engine chose its host port: read the IPv4 binding.
    let slot = labels
        .get(LABEL_SWARM_TASK)
        .and_then(|task| task.split('.').nth(1)?.parse().ok());
    let bindings = summary.ports.unwrap_or_default();
    let engine_port = bindings.iter().find_map(|p| {
        (p.ip.as_deref() == Some("0.0.0.0"))
            .then_some(p.public_port)
            .flatten()
    });
    let host_port = labels
        .get(LABEL_PORT)
        .and_then(|p| p.parse().ok())
        .or(engine_port);
    // The binding's address (IPv4 first), as this host reaches it.
    let address = host_port.and_then(|port| {
        let ip = bindings
            .iter()
            .filter(|p| p.public_port == Some(port))
            .filter_map(|p| p.ip.as_deref()?.parse::<IpAddr>().ok())
            .min_by_key(|ip| !ip.is_ipv4())?;
        Some(SocketAddr::new(crate::route::reachable(ip), port))
    });
    Some(ContainerReport {
        name,
        process: labels.get(LABEL_PROCESS).cloned().unwrap_or_default(),
        index: labels
            .get(LABEL_INDEX)
            .and_then(|i| i.parse().ok())
            .or(slot)
            .unwrap_or(1),
        release: labels.get(LABEL_RELEASE).and_then(|r| r.parse().ok())?,
        state: summary.state.map(|s| s.to_string()).unwrap_or_default(),
        status: summary.status.unwrap_or_default(),
        restarts: 0,
        host_port,
        address,
        started_at: None,
        swarm_service: labels.get(LABEL_SWARM_SERVICE).cloned(),
    })
}

/// Adds restart counts and start times (one inspect per container).
pub async fn with_details(
    docker: &Docker,
    mut reports: Vec<ContainerReport>,
) -> Vec<ContainerReport> {
    for report in &mut reports {
        if let Ok(info) = docker.inspect_container(&report.name, None).await {
            report.restarts = info.restart_count.unwrap_or(0);
            report.started_at = info.state.and_then(|s| s.started_at);
        }
    }
    reports
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
    process: &super::ProcessSpec,
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
fn host_config(
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
fn identity(
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
    ]);
    (env, labels)
}

fn container_body(
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

async fn restart_count(docker: &Docker, name: &str) -> Result<i64, String> {
    let info = docker
        .inspect_container(name, None)
        .await
        .map_err(|e| format!("lost container {name}: {}", engine::describe(&e)))?;
    Ok(info.restart_count.unwrap_or(0))
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

async fn remove_container(docker: &Docker, name: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.remove_container(name, Some(options)).await;
}

/// A container's output (stdout and stderr), the last `tail` lines, then more if `follow`.
pub fn log_stream(
    docker: &Docker,
    name: &str,
    tail: i64,
    follow: bool,
) -> futures_util::stream::BoxStream<'static, Vec<u8>> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .tail(&tail.to_string())
        .build();
    let docker = docker.clone();
    let name = name.to_string();
    // The engine's stream borrows nothing from us once made; move the client in to keep it alive.
    futures_util::stream::once(async move { docker.logs(&name, Some(options)) })
        .flatten()
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(|item| std::future::ready(item.ok().map(|chunk| chunk.into_bytes().to_vec())))
        .boxed()
}

/// The container's last log lines, formatted to follow an error message.
pub(super) async fn last_logs(docker: &Docker, name: &str) -> String {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail("20")
        .build();
    let mut stream = docker.logs(name, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&chunk.to_string());
    }
    let text = text.trim_end();
    if text.is_empty() {
        String::new()
    } else {
        format!("{}\n{text}", crate::store::LOG_LINES_MARKER)
    }
}

/// Output of a one-off container, by stream.
pub enum Chunk {
    Out(Vec<u8>),
    Err(Vec<u8>),
}

/// A one-off container attached to the caller: its output, its stdin, and its end.
pub struct OneOff {
    pub output: futures_util::stream::BoxStream<'static, Chunk>,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    /// Waits for the container to exit, removes it, and gives its exit code.
    pub exit: futures_util::future::BoxFuture<'static, i64>,
    /// Kills and removes the container (the caller went away).
    pub abort: Box<dyn FnOnce() -> futures_util::future::BoxFuture<'static, ()> + Send>,
}

/// Where a one-off container (`run`, the release phase) runs: the app's mounts, the apps it is
/// linked to (whose networks it joins beside its app's), and the app's web limits.
#[derive(Debug, Clone, Default)]
pub struct RunIn {
    /// The image's registry digest, when known (pulled by it).
    pub digest: Option<String>,
    pub binds: Vec<String>,
    pub links: Vec<String>,
    pub resources: super::render::Resources,
}

/// Starts `command` (an argument vector, no shell) in a new container of `image` with `env`,
/// attached to stdin/stdout/stderr, with a TTY when `tty`.
pub async fn run_one_off(
    docker: &Docker,
    app: &str,
    image: &str,
    env: Vec<String>,
    command: Vec<String>,
    within: RunIn,
    tty: bool,
) -> Result<OneOff, String> {
    let RunIn {
        digest,
        binds,
        links,
        resources,
    } = within;
    let network = ensure_network(docker, &app_network(app)).await?;
    crate::registry::ensure_local(docker, image, digest.as_deref(), &Output::discard()).await?;
    use bollard::query_parameters::AttachContainerOptionsBuilder;
    let suffix: u32 = rand::random::<u32>() % 1_000_000;
    let name = format!("berth-{app}-run-{suffix}");
    let labels = HashMap::from([
        (LABEL_APP.to_string(), app.to_string()),
        (LABEL_PROCESS.to_string(), "run".to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(env),
        cmd: Some(command),
        tty: Some(tty),
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some(labels),
        // The limits of the app's web process (`resources:set`), no restart policy.
        host_config: Some(HostConfig {
            restart_policy: None,
            ..host_config(&resources, None, &binds, &network)
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| {
            format!(
                "cannot create the one-off container: {}",
                engine::describe(&e)
            )
        })?;
    if let Err(message) = join_links(docker, &name, &links).await {
        remove_container(docker, &name).await;
        return Err(message);
    }
    let attach = AttachContainerOptionsBuilder::default()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .build();
    let attached = match docker.attach_container(&name, Some(attach)).await {
        Ok(attached) => attached,
        Err(error) => {
            remove_container(docker, &name).await;
            return Err(format!(
                "cannot attach to the one-off container: {}",
                engine::describe(&error)
            ));
        }
    };
    if let Err(error) = docker.start_container(&name, None).await {
        remove_container(docker, &name).await;
        return Err(format!(
            "the one-off container did not start: {}",
            engine::describe(&error)
        ));
    }
    let output = attached
        .output
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(|item| {
            std::future::ready(item.ok().map(|log| match log {
                bollard::container::LogOutput::StdErr { message } => Chunk::Err(message.to_vec()),
                other => Chunk::Out(other.into_bytes().to_vec()),
            }))
        })
        .boxed();
    let (waiter, waited_name) = (docker.clone(), name.clone());
    let exit = async move {
        let mut wait = waiter.wait_container(&waited_name, None);
        let code = match wait.next().await {
            Some(Ok(response)) => response.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            _ => 1,
        };
        remove_container(&waiter, &waited_name).await;
        code
    }
    .boxed();
    let (killer, killed_name) = (docker.clone(), name);
    let abort =
        Box::new(move || async move { remove_container(&killer, &killed_name).await }.boxed())
            as Box<dyn FnOnce() -> _ + Send>;
    Ok(OneOff {
        output,
        input: attached.input,
        exit,
        abort,
    })
}

/// Runs `command` to its end in a one-off container of `image` (no TTY, no stdin), streaming
/// its output line by line to `out`; gives the exit code. The release phase and app.json's
/// predeploy and postdeploy scripts run this way.
#[allow(clippy::too_many_arguments)]
pub async fn run_to_end(
    docker: &Docker,
    app: &str,
    image: &str,
    env: Vec<String>,
    command: Vec<String>,
    within: RunIn,
    limit: Duration,
    out: &Output,
) -> Result<i64, String> {
    let OneOff {
        mut output,
        input,
        exit,
        abort,
    } = run_one_off(docker, app, image, env, command, within, false).await?;
    drop(input);
    let run = async {
        let mut lines = crate::output::Lines::default();
        while let Some(chunk) = output.next().await {
            let (Chunk::Out(bytes) | Chunk::Err(bytes)) = chunk;
            lines.feed(&bytes, out);
        }
        lines.finish(out);
        exit.await
    };
    match tokio::time::timeout(limit, run).await {
        Ok(code) => Ok(code),
        Err(_) => {
            abort().await;
            Err(format!(
                "it did not finish within {} s (phase_timeout) and was stopped",
                limit.as_secs()
            ))
        }
    }
}

/// The named volumes labeled as the app's.
pub async fn labeled_volumes(docker: &Docker, app_uid: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![format!("{LABEL_APP_UID}={app_uid}")])]);
    let options = bollard::query_parameters::ListVolumesOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker
        .list_volumes(Some(options))
        .await
        .ok()
        .and_then(|list| list.volumes)
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect()
}
