//! `nodes:drain` without a failed request. The swarm stops a drained node's tasks at once (the
//! app gets SIGTERM while requests may be in flight on it) and starts their replacements
//! elsewhere: berth first takes those tasks out of each app's serving set, waits until their
//! requests are answered, and only then asks the swarm to drain. The apps stay locked until the
//! swarm no longer wants those tasks, so the reconciler does not serve them again meanwhile;
//! their replacements are served once they answer (reconciler, `revive_swarm`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::lock::{LockedApp, lock};
use super::spec::{app_port, target};
use crate::deploy::Scheduler;
use crate::deploy::nodes::NodeReport;
use crate::deploy::render::Target;
use crate::server::Berth;

/// How long the apps stay locked for the swarm to give up a drained node's tasks.
const GIVE_UP: Duration = Duration::from_secs(15);

/// What a drain did.
pub struct Drained {
    /// The node as it is now.
    pub node: NodeReport,
    /// The berth tasks that ran there (`APP web.2`), which the swarm moves.
    pub moved: Vec<String>,
    /// A line for each app whose every served instance ran there: its requests fail until the
    /// swarm starts them elsewhere (no other instance could take them).
    pub alone: Vec<String>,
}

/// Drains `node` (its hostname or id).
pub async fn drain_node(
    berth: &Berth,
    scheduler: &Scheduler,
    node: &str,
) -> Result<Drained, String> {
    let nodes = scheduler.nodes().await?;
    let Some((hostname, moved)) = nodes
        .into_iter()
        .find(|n| n.name == node || n.id == node)
        .map(|n| (n.name, n.tasks))
    else {
        // The swarm's own answer names what is wrong.
        return Err(scheduler
            .update_node(node, Some(true), &[])
            .await
            .err()
            .unwrap_or_else(|| format!("no node {node} in the swarm")));
    };
    let on_node = |instances: &[crate::deploy::ContainerReport]| -> Vec<SocketAddr> {
        instances
            .iter()
            .filter(|i| i.process == "web" && i.node.as_deref() == Some(hostname.as_str()))
            .filter_map(|i| i.address)
            .collect()
    };
    let mut held: Vec<LockedApp> = Vec::new();
    let mut alone = Vec::new();
    let by_app = scheduler.all_instances().await?;
    for app in berth.store.apps().await.map_err(|e| e.to_string())? {
        let leaving = on_node(by_app.get(app.name.as_str()).map_or(&[], Vec::as_slice));
        if leaving.is_empty() || target(berth, &app) != Target::Swarm {
            continue;
        }
        let app = lock(berth, &app).await?;
        let served = berth.plane.traffic(&app.name).await.unwrap_or_default();
        let staying: Vec<SocketAddr> = served
            .keys()
            .filter(|a| !leaving.contains(a))
            .copied()
            .collect();
        if staying.is_empty() {
            alone.push(format!(
                "{}: every instance it serves runs on {hostname}; its requests fail until the swarm starts them on another node",
                app.name
            ));
            continue;
        }
        let port = app_port(berth, &app).await?;
        berth.plane.point(&app.name, port, &staying).await?;
        berth
            .plane
            .drained(&app.name, &leaving, berth.config.drain_timeout())
            .await;
        held.push(app);
    }
    let changed = scheduler.update_node(node, Some(true), &[]).await;
    if changed.is_ok() {
        // Until the swarm wants none of those tasks any more (they are no longer `running`).
        let since = Instant::now();
        while since.elapsed() < GIVE_UP {
            let Ok(now) = scheduler.all_instances().await else {
                break;
            };
            let wanted = held.iter().any(|app| {
                !on_node(now.get(app.name.as_str()).map_or(&[], Vec::as_slice)).is_empty()
            });
            if !wanted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A refused drain: the reconciler serves the tasks again once the locks go.
    drop(held);
    Ok(Drained {
        node: changed?,
        moved,
        alone,
    })
}
