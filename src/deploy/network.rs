//! Engine networks: one per app (isolation between apps, links), the guarded network member
//! builds run on, and moving containers of an earlier berth off the shared legacy network.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{EndpointSettings, NetworkCreateRequest};

use super::names::*;
use crate::engine;

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
pub(super) async fn join_links(
    docker: &Docker,
    container: &str,
    links: &[String],
) -> Result<(), String> {
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
