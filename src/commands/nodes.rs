//! `nodes:*` (admins only): the swarm's nodes, its join line, drains and labels. The nodes
//! run every app on the swarm target, so only admins see or change them.

use super::common::{Args, admin_only_for, to_json};
use crate::deploy::nodes::{LabelChange, NodeReport};
use crate::server::{Berth, Identity};

fn table(nodes: &[NodeReport]) -> String {
    let mut text = format!(
        "{:<20} {:<16} {:<8} {:<12} {:<8} {:<24} {}\n",
        "NODE", "ADDRESS", "ROLE", "AVAILABILITY", "STATE", "LABELS", "TASKS"
    );
    for node in nodes {
        let labels: Vec<String> = node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        text += &format!(
            "{:<20} {:<16} {:<8} {:<12} {:<8} {:<24} {}\n",
            node.name,
            node.address,
            node.role,
            node.availability,
            node.state,
            if labels.is_empty() {
                "-".to_string()
            } else {
                labels.join(",")
            },
            if node.tasks.is_empty() {
                "-".to_string()
            } else {
                node.tasks.join(", ")
            }
        );
    }
    text
}

pub async fn list(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    admin_only_for(who, "nodes:*")?;
    let nodes = berth.scheduler().await?.nodes().await?;
    if args.json() {
        return to_json(&nodes);
    }
    Ok(table(&nodes))
}

pub async fn join_command(berth: &Berth, who: &Identity, _args: &Args) -> Result<String, String> {
    admin_only_for(who, "nodes:*")?;
    let line = berth.scheduler().await?.join_command().await?;
    // The node must pull release images from the registry over plain HTTP first.
    let registry = match &berth.config.cluster_registry {
        Some(registry) => format!(
            "First, on the new node: put {{\"insecure-registries\": [\"{registry}\"]}} in /etc/docker/daemon.json and run `systemctl reload docker`.\n"
        ),
        None => "This server has no cluster_registry: nodes other than this one cannot pull release images (install.sh --swarm ADDR sets it up).\n".to_string(),
    };
    Ok(format!("{registry}{line}\n"))
}

async fn availability(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    drain: bool,
) -> Result<String, String> {
    admin_only_for(who, "nodes:*")?;
    let node = &args.positional[0];
    let scheduler = berth.scheduler().await?;
    // Before a drain, the tasks there leave each app's serving set (no request fails).
    let drained = if drain {
        crate::ops::drain_node(berth, &scheduler, node).await?
    } else {
        crate::ops::Drained {
            node: scheduler.update_node(node, Some(false), &[]).await?,
            moved: Vec::new(),
            alone: Vec::new(),
        }
    };
    let moving = if drained.moved.is_empty() {
        String::new()
    } else {
        format!(
            "; the swarm moves its tasks to the other nodes: {}",
            drained.moved.join(", ")
        )
    };
    let mut text = format!(
        "-----> {} is {}{moving}\n",
        drained.node.name, drained.node.availability
    );
    for line in drained.alone {
        text += &format!(" !     {line}\n");
    }
    Ok(text)
}

pub async fn drain(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    availability(berth, who, args, true).await
}

pub async fn activate(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    availability(berth, who, args, false).await
}

pub async fn label(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    admin_only_for(who, "nodes:*")?;
    let node = &args.positional[0];
    let changes = args.positional[1..]
        .iter()
        .map(|w| LabelChange::parse(w))
        .collect::<Result<Vec<_>, _>>()?;
    let changed = berth
        .scheduler()
        .await?
        .update_node(node, None, &changes)
        .await?;
    let labels: Vec<String> = changed
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Ok(format!(
        "-----> {} labels: {}\n",
        changed.name,
        if labels.is_empty() {
            "none".to_string()
        } else {
            labels.join(", ")
        }
    ))
}
