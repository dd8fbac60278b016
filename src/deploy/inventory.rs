//! The engine inventory: which berth containers and images exist, read from their labels
//! (both applied targets label their containers the same way, swarm tasks included).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptionsBuilder;

use super::names::*;
use crate::engine;

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
    /// The systemd unit that runs this container (systemd target); none for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The swarm node the task runs on (its hostname; swarm target); none for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
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

/// The containers of the docker target alone (not the swarm's tasks, which the swarm manages,
/// nor the systemd target's, which their units run).
pub(super) async fn own_instances(
    docker: &Docker,
    app: &str,
    release: Option<i64>,
) -> Result<Vec<ContainerReport>, String> {
    let mut containers = instances_of(docker, app, release).await?;
    containers.retain(|c| c.swarm_service.is_none() && c.unit.is_none());
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
        .filter(|p: &u16| *p != 0)
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
        // Empty: set so by berth over whatever the image's own labels said (a member's
        // Dockerfile may carry any label).
        swarm_service: labels
            .get(LABEL_SWARM_SERVICE)
            .filter(|s| !s.is_empty())
            .cloned(),
        unit: labels.get(LABEL_UNIT).filter(|u| !u.is_empty()).cloned(),
        node: None,
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

pub(super) async fn restart_count(docker: &Docker, name: &str) -> Result<i64, String> {
    let info = docker
        .inspect_container(name, None)
        .await
        .map_err(|e| format!("lost container {name}: {}", engine::describe(&e)))?;
    Ok(info.restart_count.unwrap_or(0))
}

/// A container of an app as retention and disk usage see it.
#[derive(Debug, Clone)]
pub struct AppContainer {
    pub id: String,
    pub name: String,
    /// `run` for one-off containers (`run`, the release phase and app.json scripts).
    pub process: Option<String>,
    /// Running, restarting or paused: in use.
    pub active: bool,
    /// The image reference it was created from, and the image's id.
    pub image: Option<String>,
    pub image_id: Option<String>,
}

/// The app's containers, running or not (none when the engine does not answer).
pub async fn app_containers(docker: &Docker, app: &str) -> Vec<AppContainer> {
    list_labeled(docker, vec![format!("{LABEL_APP}={app}")])
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            let id = c.id?;
            Some(AppContainer {
                name: c
                    .names
                    .as_ref()
                    .and_then(|n| n.first())
                    .map_or(id.clone(), |n| n.trim_start_matches('/').to_string()),
                process: c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_PROCESS))
                    .cloned(),
                active: c.state.as_ref().is_some_and(|s| {
                    matches!(s.to_string().as_str(), "running" | "restarting" | "paused")
                }),
                image: c.image,
                image_id: c.image_id,
                id,
            })
        })
        .collect()
}

/// A local image of an app (a release or build tag).
#[derive(Debug, Clone)]
pub struct AppImage {
    pub id: String,
    /// `<none>:<none>` for a dangling image, as the engine lists it.
    pub tags: Vec<String>,
    /// Bytes, layers shared with other images included (as `docker image ls`).
    pub size: u64,
}

/// The app's local images.
pub async fn app_image_list(docker: &Docker, app: &str) -> Vec<AppImage> {
    app_images(docker, app)
        .await
        .into_iter()
        .map(|i| AppImage {
            id: i.id,
            tags: i.repo_tags,
            size: i.size.max(0) as u64,
        })
        .collect()
}

/// Who a local image says it belongs to, and the names it is known by.
#[derive(Debug, Clone)]
pub struct ImageIdentity {
    /// Its `berth.app` label: the app whose build made it.
    pub owner: Option<String>,
    pub tags: Vec<String>,
    pub digests: Vec<String>,
}

/// The identity of a local image, as the engine resolves `image` (none when it has no such image).
pub async fn image_identity(docker: &Docker, image: &str) -> Option<ImageIdentity> {
    let found = docker.inspect_image(image).await.ok()?;
    Some(ImageIdentity {
        owner: found
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_APP))
            .cloned(),
        tags: found.repo_tags.unwrap_or_default(),
        digests: found.repo_digests.unwrap_or_default(),
    })
}
