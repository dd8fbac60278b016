//! The docker target: one container per process instance, through the engine API.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{DeploySpec, Deployed};
use crate::engine;
use crate::output::Output;

pub const LABEL_APP: &str = "berth.app";
pub const LABEL_RELEASE: &str = "berth.release";
pub const LABEL_PROCESS: &str = "berth.process";

/// Container name of one process instance of a release.
pub fn container_name(app: &str, release: i64, process: &str, index: u32) -> String {
    format!("berth-{app}-v{release}-{process}-{index}")
}

/// Starts the release's web container, waits until it answers, then retires the app's other
/// containers. If it never answers, it is removed and the running release is left alone.
pub async fn deploy(docker: &Docker, spec: &DeploySpec, out: &Output) -> Result<Deployed, String> {
    let name = container_name(&spec.app, spec.release, "web", 1);
    // A container of this name can only be left over from an interrupted deploy of this release.
    remove_container(docker, &name).await;
    let exposed = format!("{}/tcp", spec.port);
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("PORT={}", spec.port));
    let labels = HashMap::from([
        (LABEL_APP.to_string(), spec.app.clone()),
        (LABEL_RELEASE.to_string(), spec.release.to_string()),
        (LABEL_PROCESS.to_string(), "web".to_string()),
    ]);
    // The host port is chosen here, not by the engine: an engine-chosen port changes every time
    // the restart policy restarts a crashed container, and the app's URL would break.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let host_port = free_host_port(spec.publish_address)?;
        let body = container_body(spec, &exposed, host_port, env.clone(), labels.clone());
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| format!("cannot create container {name}: {}", engine::describe(&e)))?;
        match docker.start_container(&name, None).await {
            Ok(()) => break,
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
    }
    out.detail(&format!(
        "started {name}; waiting for it to answer on PORT {}",
        spec.port
    ));
    match wait_until_ready(docker, &name, &exposed, spec).await {
        Ok(host_port) => {
            // Old releases stop in the background: the push reports as soon as the new one answers.
            let (docker, app, release) = (docker.clone(), spec.app.clone(), spec.release);
            tokio::spawn(async move { retire_older(&docker, &app, release).await });
            Ok(Deployed { host_port })
        }
        Err(reason) => {
            let logs = last_logs(docker, &name).await;
            remove_container(docker, &name).await;
            Err(format!("{reason}{logs}"))
        }
    }
}

fn container_body(
    spec: &DeploySpec,
    exposed: &str,
    host_port: u16,
    env: Vec<String>,
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(env),
        exposed_ports: Some(vec![exposed.to_string()]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                exposed.to_string(),
                Some(vec![PortBinding {
                    host_ip: Some(spec.publish_address.to_string()),
                    host_port: Some(host_port.to_string()),
                }]),
            )])),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            // An init process forwards SIGTERM, so apps that ignore it as PID 1 still stop promptly.
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A port nothing listens on at `address` right now (the kernel's pick from its ephemeral range).
fn free_host_port(address: IpAddr) -> Result<u16, String> {
    std::net::TcpListener::bind(SocketAddr::new(address, 0))
        .and_then(|listener| listener.local_addr())
        .map(|bound| bound.port())
        .map_err(|e| format!("cannot find a free port on {address}: {e}"))
}

async fn wait_until_ready(
    docker: &Docker,
    name: &str,
    exposed: &str,
    spec: &DeploySpec,
) -> Result<u16, String> {
    let deadline = Instant::now() + spec.ready_timeout;
    let probe_ip = match spec.publish_address {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    loop {
        let info = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| format!("lost container {name}: {}", engine::describe(&e)))?;
        let state = info.state.clone().unwrap_or_default();
        let restarts = info.restart_count.unwrap_or(0);
        if restarts > 0 || state.running != Some(true) {
            let code = state.exit_code.unwrap_or(0);
            return Err(format!(
                "the app exited at start (exit code {code}) instead of listening on PORT {}",
                spec.port
            ));
        }
        let host_port = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|ports| ports.get(exposed).cloned().flatten())
            .and_then(|bindings| {
                bindings
                    .into_iter()
                    .find_map(|b| b.host_port?.parse::<u16>().ok())
            });
        if let Some(host_port) = host_port
            && answers(SocketAddr::new(probe_ip, host_port)).await
        {
            return Ok(host_port);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the app did not answer on PORT {} within {} s (ready_timeout)",
                spec.port,
                spec.ready_timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether something answers at `addr`: an HTTP response, or any bytes from a TCP service, or a
/// connection held open. A connection closed without a byte is docker-proxy with nothing behind it.
async fn answers(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: berth-readiness\r\n\r\n")
            .await
            .ok()?;
        let mut buffer = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await {
            Ok(Ok(read)) => Some(read > 0),
            Ok(Err(_)) => Some(false),
            Err(_) => Some(true), // a silent TCP service that keeps the connection open
        }
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Stops and removes the app's containers of releases older than `keep_release` (never newer
/// ones: a later deploy may already be starting its own).
async fn retire_older(docker: &Docker, app: &str, keep_release: i64) {
    let filters = HashMap::from([("label", vec![format!("{LABEL_APP}={app}")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = match docker.list_containers(Some(options)).await {
        Ok(containers) => containers,
        Err(error) => {
            tracing::warn!(%app, error = %engine::describe(&error), "could not list old containers");
            return;
        }
    };
    for container in containers {
        let labels = container.labels.unwrap_or_default();
        let release = labels
            .get(LABEL_RELEASE)
            .and_then(|r| r.parse::<i64>().ok());
        if release.is_none_or(|r| r >= keep_release) {
            continue;
        }
        let Some(id) = container.id else { continue };
        let stop = StopContainerOptionsBuilder::default().t(10).build();
        let _ = docker.stop_container(&id, Some(stop)).await;
        remove_container(docker, &id).await;
    }
}

async fn remove_container(docker: &Docker, name: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.remove_container(name, Some(options)).await;
}

/// The container's last log lines, formatted to follow an error message.
async fn last_logs(docker: &Docker, name: &str) -> String {
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
        format!("\nlast log lines:\n{text}")
    }
}
