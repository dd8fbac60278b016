//! Swarm nodes (`nodes:*`): what the swarm this engine manages is made of, and the operator's
//! changes to it (availability, labels), through the engine's swarm API. berth runs beside a
//! manager (`swarm::check`).

use std::collections::BTreeMap;
use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{NodeSpecAvailabilityEnum, TaskState};
use bollard::query_parameters::{ListTasksOptionsBuilder, UpdateNodeOptionsBuilder};

use super::names::{LABEL_APP, LABEL_PROCESS};
use crate::engine;

/// One node of the swarm, as `nodes:list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeReport {
    pub id: String,
    /// Its hostname (what `nodes:drain NAME` takes, as the id does).
    pub name: String,
    /// The address the swarm reaches it at.
    pub address: String,
    /// `manager` or `worker`; `leader` for the managers' leader.
    pub role: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    /// `ready`, `down`, `unknown`, `disconnected`.
    pub state: String,
    pub labels: BTreeMap<String, String>,
    /// The berth instances running there: `APP web.2`.
    pub tasks: Vec<String>,
}

/// Every node of the swarm, with the berth tasks running on each.
pub async fn list(docker: &Docker) -> Result<Vec<NodeReport>, String> {
    super::swarm::check(docker).await?;
    let nodes = docker
        .list_nodes(None)
        .await
        .map_err(|e| format!("cannot list the swarm's nodes: {}", engine::describe(&e)))?;
    let filters = HashMap::from([("desired-state", vec!["running".to_string()])]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    let tasks = docker
        .list_tasks(Some(options))
        .await
        .map_err(|e| format!("cannot list the swarm's tasks: {}", engine::describe(&e)))?;
    let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
    for task in tasks {
        let running = task.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING);
        let labels = task
            .spec
            .as_ref()
            .and_then(|s| s.container_spec.as_ref())
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let (Some(node), Some(app), true) = (task.node_id, labels.get(LABEL_APP), running) else {
            continue;
        };
        let process = labels.get(LABEL_PROCESS).map_or("web", String::as_str);
        let slot = task.slot.unwrap_or(0);
        by_node
            .entry(node)
            .or_default()
            .push(format!("{app} {process}.{slot}"));
    }
    let mut reports: Vec<NodeReport> = nodes
        .into_iter()
        .map(|node| {
            let id = node.id.unwrap_or_default();
            let spec = node.spec.unwrap_or_default();
            let status = node.status.unwrap_or_default();
            let leader = node
                .manager_status
                .as_ref()
                .and_then(|m| m.leader)
                .unwrap_or(false);
            let role = match (leader, spec.role.map(|r| r.to_string())) {
                (true, _) => "leader".to_string(),
                (false, Some(role)) => role,
                (false, None) => "-".to_string(),
            };
            let mut tasks = by_node.remove(&id).unwrap_or_default();
            tasks.sort();
            NodeReport {
                name: node
                    .description
                    .and_then(|d| d.hostname)
                    .unwrap_or_else(|| id.clone()),
                address: status.addr.unwrap_or_default(),
                role,
                availability: spec.availability.map_or("-".to_string(), |a| a.to_string()),
                state: status.state.map_or("-".to_string(), |s| s.to_string()),
                labels: spec.labels.unwrap_or_default().into_iter().collect(),
                tasks,
                id,
            }
        })
        .collect();
    reports.sort_by(|a, b| (a.role != "leader", &a.name).cmp(&(b.role != "leader", &b.name)));
    Ok(reports)
}

/// The `docker swarm join` line a new worker runs (the worker token and a manager's address).
pub async fn join_command(docker: &Docker) -> Result<String, String> {
    super::swarm::check(docker).await?;
    let swarm = docker
        .inspect_swarm()
        .await
        .map_err(|e| format!("cannot read the swarm: {}", engine::describe(&e)))?;
    let token = swarm
        .join_tokens
        .and_then(|t| t.worker)
        .ok_or("the swarm gave no worker join token")?;
    let info = docker
        .info()
        .await
        .map_err(|e| format!("cannot ask the engine: {}", engine::describe(&e)))?;
    let manager = info
        .swarm
        .and_then(|s| s.remote_managers)
        .and_then(|m| m.into_iter().find_map(|p| p.addr))
        .ok_or("the swarm names no manager address")?;
    Ok(format!("docker swarm join --token {token} {manager}"))
}

/// What `nodes:label` does to one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    Set(String, String),
    Remove(String),
}

impl LabelChange {
    /// `key=value` sets, `key-` removes (as `kubectl label`). Keys are what Docker and
    /// placement constraints take: letters, digits, `.`, `-`, `_`, `/`.
    pub fn parse(word: &str) -> Result<LabelChange, String> {
        let valid = |key: &str| {
            !key.is_empty()
                && key.len() <= 128
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        };
        if let Some((key, value)) = word.split_once('=') {
            if !valid(key) || value.len() > 256 || value.chars().any(char::is_control) {
                return Err(format!(
                    "{word:?}: a label is key=value (key: letters, digits, . - _ /)"
                ));
            }
            return Ok(LabelChange::Set(key.to_string(), value.to_string()));
        }
        match word.strip_suffix('-') {
            Some(key) if valid(key) => Ok(LabelChange::Remove(key.to_string())),
            _ => Err(format!(
                "{word:?}: use key=value to set a label, key- to remove it"
            )),
        }
    }
}

/// Changes a node's availability (`active`, `drain`) or labels: read, changed, written back at
/// the version read. The version moves on between the read and the write when another admin
/// writes, and also with no other writer (seen in CI: the swarm's own updates of the node), so
/// a write refused as "out of sequence" is read and applied again, a few times; the change is
/// computed from the node as it is then, so a concurrent change is kept, not overwritten.
pub async fn update(
    docker: &Docker,
    node: &str,
    availability: Option<NodeSpecAvailabilityEnum>,
    labels: &[LabelChange],
) -> Result<NodeReport, String> {
    super::swarm::check(docker).await?;
    let mut attempt = 0;
    let id = loop {
        attempt += 1;
        match write_once(docker, node, availability, labels).await {
            Ok(id) => break id,
            Err(Refused::OutOfSequence(_)) if attempt < UPDATE_ATTEMPTS => {
                // Apart, so that writers racing each other do not meet again.
                let wait = rand::Rng::gen_range(&mut rand::thread_rng(), 10..60) * attempt;
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
            Err(Refused::OutOfSequence(message) | Refused::Other(message)) => return Err(message),
        }
    };
    list(docker)
        .await?
        .into_iter()
        .find(|n| n.id == id)
        .ok_or_else(|| format!("node {node} is gone"))
}

/// How many times a node change is read and written before a version race is reported.
const UPDATE_ATTEMPTS: u64 = 8;

enum Refused {
    /// The node changed between the read and the write.
    OutOfSequence(String),
    Other(String),
}

/// One read-change-write of the node; its id once written.
async fn write_once(
    docker: &Docker,
    node: &str,
    availability: Option<NodeSpecAvailabilityEnum>,
    labels: &[LabelChange],
) -> Result<String, Refused> {
    let found = docker.inspect_node(node).await.map_err(|e| {
        Refused::Other(format!(
            "no node {node:?} in the swarm: {}",
            engine::describe(&e)
        ))
    })?;
    let id = found
        .id
        .clone()
        .ok_or_else(|| Refused::Other("the node has no id".into()))?;
    let version = found
        .version
        .as_ref()
        .and_then(|v| v.index)
        .ok_or_else(|| Refused::Other("the node has no version".into()))?;
    let mut spec = found.spec.clone().unwrap_or_default();
    if let Some(availability) = availability {
        spec.availability = Some(availability);
    }
    let mut current = spec.labels.take().unwrap_or_default();
    for change in labels {
        match change {
            LabelChange::Set(key, value) => {
                current.insert(key.clone(), value.clone());
            }
            LabelChange::Remove(key) => {
                current.remove(key);
            }
        }
    }
    spec.labels = Some(current);
    let options = UpdateNodeOptionsBuilder::default()
        .version(version as i64)
        .build();
    match docker.update_node(&id, spec, options).await {
        Ok(()) => Ok(id),
        Err(e) => {
            let described = engine::describe(&e);
            let message = format!("cannot change node {node}: {described}");
            if described.contains("update out of sequence") {
                Err(Refused::OutOfSequence(message))
            } else {
                Err(Refused::Other(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_changes_are_key_value_or_key_dash() {
        assert_eq!(
            LabelChange::parse("zone=eu-1").unwrap(),
            LabelChange::Set("zone".into(), "eu-1".into())
        );
        assert_eq!(
            LabelChange::parse("disk=").unwrap(),
            LabelChange::Set("disk".into(), String::new())
        );
        assert_eq!(
            LabelChange::parse("zone-").unwrap(),
            LabelChange::Remove("zone".into())
        );
        for bad in ["zone", "=x", "a b=c", "k=\u{1b}[2J", "-"] {
            assert!(LabelChange::parse(bad).is_err(), "{bad}");
        }
    }
}
