//! `ps:*`: scale, stop, start, restart, rebuild, report. Each holds the app's deploy lock, so it
//! never races a push; a failed change leaves what ran before.

use super::common::{Access, Args, app_for, internal, to_json};
use crate::deploy::ContainerReport;
use crate::git;
use crate::ops;
use crate::output::Output;
use crate::pipeline::{self, BuildRequest};
use crate::server::{Berth, Identity};
use crate::store::App;

/// The most instances of one process type `ps:scale` accepts.
const MAX_INSTANCES: u32 = 50;

pub async fn scale(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let mut wanted = ops::formation(&app);
    // The process types the app's latest release defines (its Procfile), besides web.
    let types: Vec<String> = match berth.store.latest_release(app.id).await.map_err(internal)? {
        Some(latest) => std::iter::once("web".to_string())
            .chain(
                ops::manifest(&latest)
                    .scalable()
                    .map(|(name, _)| name.clone()),
            )
            .collect(),
        None => vec!["web".to_string()],
    };
    for term in &args.positional[1..] {
        let (process, count) = term.split_once('=').ok_or_else(|| {
            format!("{term:?} is not PROCESS=N; usage: ps:scale APP web=N worker=N")
        })?;
        if !types.iter().any(|t| t == process) {
            return Err(format!(
                "unknown process type {process:?}: {} runs {} (process types come from the Procfile)",
                app.name,
                types.join(", ")
            ));
        }
        let count: u32 = count
            .parse()
            .ok()
            .filter(|n| *n <= MAX_INSTANCES)
            .ok_or_else(|| {
                format!("{count:?} is not a number of instances from 0 to {MAX_INSTANCES}")
            })?;
        wanted.insert(process.to_string(), count);
    }
    let app = ops::lock(berth, &app).await?;
    let outcome = ops::scale(berth, &app, &wanted, &who.key_name, out).await;
    match outcome {
        Ok(None) => Ok(format!(
            "-----> Scaled {} to {}: applies when it runs\n",
            app.name,
            ops::describe_formation(&wanted)
        )),
        Ok(Some(web)) => Ok(format!(
            "-----> {} runs {web} web instance(s); formation {}\n",
            app.name,
            ops::describe_formation(&wanted)
        )),
        Err(message) => Err(format!(
            "{message}; the formation stays {}",
            ops::describe_formation(&ops::formation(&app))
        )),
    }
}

pub async fn stop(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let app = ops::lock(berth, &app).await?;
    let stopped = ops::stop(berth, &app, &who.key_name, out).await?;
    Ok(format!(
        "-----> Stopped {} ({stopped} instances); image, config and data are kept\n",
        app.name
    ))
}

pub async fn start(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let app = ops::lock(berth, &app).await?;
    ops::start(berth, &app, &who.key_name, out).await?;
    Ok(String::new())
}

pub async fn restart(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let app = ops::lock(berth, &app).await?;
    if app.stopped {
        return Err(format!("{} is stopped: use ps:start", app.name));
    }
    ops::restart(berth, &app, &who.key_name, "", out).await?;
    Ok(format!("-----> Restarted {}\n", app.name))
}

pub async fn rebuild(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = match (args.positional.first(), args.has("--all")) {
        (Some(name), false) => app_for(berth, who, name, Access::Operate).await?,
        (None, true) => return rebuild_all(berth, who, out).await,
        _ => return Err("usage: ps:rebuild APP | ps:rebuild --all".to_string()),
    };
    rebuild_one(berth, who, &app, out).await?;
    Ok(String::new())
}

/// `ps:rebuild --all` (admins): every app that was ever pushed and is not stopped, one after
/// the other (after a restore on a host whose registry lost the images). Failures are listed,
/// the others go on.
async fn rebuild_all(berth: &Berth, who: &Identity, out: &Output) -> Result<String, String> {
    if !who.is_admin() {
        return Err("not allowed: only admins may run ps:rebuild --all".to_string());
    }
    let (mut rebuilt, mut failed) = (Vec::new(), Vec::new());
    for app in berth.store.apps().await.map_err(internal)? {
        let pushed = berth
            .store
            .latest_release(app.id)
            .await
            .map_err(internal)?
            .is_some();
        if app.stopped || !pushed {
            continue;
        }
        out.step(&format!("Rebuilding {}", app.name));
        match rebuild_one(berth, who, &app, out).await {
            Ok(()) => rebuilt.push(app.name),
            Err(message) => {
                out.error(&format!("{}: {message}", app.name));
                failed.push(app.name.to_string());
            }
        }
    }
    if failed.is_empty() {
        Ok(format!("-----> Rebuilt {} app(s)\n", rebuilt.len()))
    } else {
        Err(format!(
            "rebuilt {} app(s); {} failed: {}",
            rebuilt.len(),
            failed.len(),
            failed.join(", ")
        ))
    }
}

async fn rebuild_one(berth: &Berth, who: &Identity, app: &App, out: &Output) -> Result<(), String> {
    let mut app = ops::lock(berth, app).await?;
    let current = berth
        .store
        .latest_release(app.id)
        .await
        .map_err(internal)?
        .ok_or_else(|| format!("{} has never been pushed: nothing to rebuild", app.name))?;
    let name = app.name.clone();
    let repo = git::repo_path(&berth.config.repos_dir(), &name);
    let short = &current.commit_sha[..current.commit_sha.len().min(7)];
    let request = BuildRequest {
        app: &name,
        repo: &repo,
        commit: &current.commit_sha,
        quarantine: None,
        description: &format!("ps:rebuild of {short}"),
        actor: &who.key_name,
    };
    if let Err(message) = pipeline::build_and_release(berth, &request, &mut app, out).await {
        ops::build_failed(berth, &app, &who.key_name, &message).await;
        return Err(message);
    }
    Ok(())
}

pub async fn report(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let scheduler = berth
        .scheduler_within(std::time::Duration::from_secs(2))
        .await?;
    let mut containers = scheduler
        .with_details(scheduler.instances_of(&app.name, None).await?)
        .await;
    // systemd target: every unit, with what systemd says of it; a unit waiting to restart has
    // no container but is shown (its restarts are systemd's).
    let units = scheduler.units_of(&app.name).await;
    let mut unit_states = std::collections::HashMap::new();
    for (unit, state) in &units {
        unit_states.insert(
            unit.name.clone(),
            format!("{} ({})", state.active, state.sub),
        );
        match containers
            .iter_mut()
            .find(|c| c.unit.as_deref() == Some(&unit.name))
        {
            Some(container) => container.restarts = i64::from(state.restarts),
            None => containers.push(ContainerReport {
                name: unit.name.trim_end_matches(".service").to_string(),
                process: unit.process.clone(),
                index: unit.index,
                release: unit.release,
                state: state.sub.clone(),
                status: format!("no container: unit {} ({})", state.active, state.sub),
                restarts: i64::from(state.restarts),
                host_port: None,
                address: None,
                started_at: None,
                swarm_service: None,
                unit: Some(unit.name.clone()),
                node: None,
            }),
        }
    }
    containers
        .sort_by(|a, b| (a.release, &a.process, a.index).cmp(&(b.release, &b.process, b.index)));
    let unit_state =
        |c: &ContainerReport| c.unit.as_ref().and_then(|u| unit_states.get(u)).cloned();
    // What the router sends each web instance: serving, canary, out (failing its health
    // check), or nothing.
    // (None known while the data plane does not answer: every instance shows `-`.)
    let traffic = berth.plane.traffic(&app.name).await.unwrap_or_default();
    let traffic_of = |c: &ContainerReport| {
        c.address
            .and_then(|a| traffic.get(&a).map(String::as_str))
            .unwrap_or("-")
    };
    if args.json() {
        #[derive(serde::Serialize)]
        struct Row<'a> {
            #[serde(flatten)]
            container: &'a ContainerReport,
            traffic: &'a str,
            /// systemd target: the unit's state, `active (running)`.
            #[serde(skip_serializing_if = "Option::is_none")]
            unit_state: Option<String>,
        }
        let rows: Vec<Row> = containers
            .iter()
            .map(|c| Row {
                container: c,
                traffic: traffic_of(c),
                unit_state: unit_state(c),
            })
            .collect();
        return to_json(&rows);
    }
    let host = &berth.config.public_host;
    let mut text = format!(
        "{:<36} {:<8} {:<8} {:<24} {:<9} {:<8} {}\n",
        "CONTAINER", "PROCESS", "RELEASE", "STATUS", "RESTARTS", "TRAFFIC", "ADDRESS"
    );
    for c in &containers {
        // A swarm task answers at its node's address (`NODE ADDRESS:PORT`).
        let address = match (&c.node, c.address, c.host_port) {
            (Some(node), Some(address), _) => format!("{node} {address}"),
            (Some(node), None, _) => node.clone(),
            (None, _, Some(port)) => format!("{host}:{port}"),
            (None, _, None) => "-".into(),
        };
        text += &format!(
            "{:<36} {:<8} {:<8} {:<24} {:<9} {:<8} {}\n",
            c.name,
            format!("{}.{}", c.process, c.index),
            format!("v{}", c.release),
            c.status,
            c.restarts,
            traffic_of(c),
            address
        );
        if let (Some(unit), Some(state)) = (&c.unit, unit_state(c)) {
            text += &format!("  unit {unit}: {state}\n");
        }
    }
    Ok(text)
}
