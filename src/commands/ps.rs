//! `ps:*`: scale, stop, start, restart, rebuild, report. Each holds the app's deploy lock, so it
//! never races a push; a failed change leaves what ran before.

use std::collections::BTreeMap;

use super::{Access, Args, app_for, current_release, internal, to_json};
use crate::deploy::{ContainerReport, Scheduler};
use crate::domain::{AppState, ReleaseStatus};
use crate::git;
use crate::names::AppName;
use crate::output::Output;
use crate::pipeline::{self, BuildRequest};
use crate::release;
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
    let mut wanted = release::formation(&app);
    // The process types the app's latest release defines (its Procfile), besides web.
    let types: Vec<String> = match berth.store.latest_release(app.id).await.map_err(internal)? {
        Some(latest) => std::iter::once("web".to_string())
            .chain(
                release::manifest(&latest)
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
    let (_guard, app) = berth.lock(&app).await?;
    let store = &berth.store;
    let formation_json = serde_json::to_string(&wanted).map_err(internal)?;
    let current = store.running_release(app.id).await.map_err(internal)?;
    let (Some(current), false) = (current, app.stopped) else {
        store
            .set_formation(app.id, &formation_json)
            .await
            .map_err(internal)?;
        return Ok(format!(
            "-----> Scaled {} to {}: applies when it runs\n",
            app.name,
            describe(&wanted)
        ));
    };
    store
        .move_app(app.id, AppState::Scaling, &who.key_name)
        .await;
    out.step(&format!("Scaling {} to {}", app.name, describe(&wanted)));
    let scheduler = Scheduler::connect().await?;
    let mut scaled = app.clone();
    scaled.formation = formation_json.clone();
    let spec = release::spec_for(berth, &scheduler, &scaled, &current).await?;
    let port = release::app_port(berth, &app).await?;
    let target = release::usable_target(berth, &app).await?;
    match scheduler
        .scale(target, &spec, out, &berth.app_port(&app.name, port))
        .await
    {
        Ok(instances) => {
            store
                .set_formation(app.id, &formation_json)
                .await
                .map_err(internal)?;
            store
                .move_app(app.id, AppState::Running, &who.key_name)
                .await;
            store
                .note_event(
                    Some(app.id),
                    "scale",
                    &who.key_name,
                    "ok",
                    &describe(&wanted),
                )
                .await;
            Ok(format!(
                "-----> {} runs {} web instance(s); formation {}\n",
                app.name,
                instances.len(),
                describe(&wanted)
            ))
        }
        Err(message) => {
            store
                .move_app(app.id, AppState::Running, &who.key_name)
                .await;
            store
                .note_event(Some(app.id), "scale", &who.key_name, "failed", &message)
                .await;
            Err(format!(
                "{message}; the formation stays {}",
                describe(&release::formation(&app))
            ))
        }
    }
}

fn describe(formation: &BTreeMap<String, u32>) -> String {
    formation
        .iter()
        .map(|(p, n)| format!("{p}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn stop(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let (_guard, app) = berth.lock(&app).await?;
    let store = &berth.store;
    let scheduler = Scheduler::connect().await?;
    store
        .move_app(app.id, AppState::Stopping, &who.key_name)
        .await;
    out.step(&format!("Stopping {}", app.name));
    berth.routes.remove(&app.name);
    let stopped = release::stop_everywhere(berth, &scheduler, &app.name, false).await?;
    // Its containers are gone with the rest: a canary ends here.
    if store.canary(app.id).await.map_err(internal)?.is_some() {
        store
            .end_canary(app.id, ReleaseStatus::Aborted)
            .await
            .map_err(internal)?;
        out.detail("its canary is aborted");
    }
    store.set_stopped(app.id, true).await.map_err(internal)?;
    store
        .move_app(app.id, AppState::Stopped, &who.key_name)
        .await;
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
    let (_guard, app) = berth.lock(&app).await?;
    let store = &berth.store;
    let current = current_release(berth, &app, "has no release to start: push one first").await?;
    let scheduler = Scheduler::connect().await?;
    store
        .move_app(app.id, AppState::Starting, &who.key_name)
        .await;
    out.step(&format!("Starting {} v{}", app.name, current.number));
    if let Err(message) =
        release::deploy_release(berth, &scheduler, &app, &current, &who.key_name, out).await
    {
        store
            .move_app(app.id, AppState::Failed, &who.key_name)
            .await;
        return Err(message);
    }
    Ok(String::new())
}

pub async fn restart(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let (_guard, app) = berth.lock(&app).await?;
    if app.stopped {
        return Err(format!("{} is stopped: use ps:start", app.name));
    }
    roll(berth, &app, &who.key_name, "", out).await?;
    Ok(format!("-----> Restarted {}\n", app.name))
}

/// Replaces every container of the running release, one at a time (each after the previous
/// answers), with the app's current settings (mounts included). The caller holds the lock.
pub(super) async fn roll(
    berth: &Berth,
    app: &App,
    actor: &str,
    why: &str,
    out: &Output,
) -> Result<(), String> {
    let store = &berth.store;
    let current = current_release(berth, app, "has no release running").await?;
    let scheduler = Scheduler::connect().await?;
    let spec = release::spec_for(berth, &scheduler, app, &current).await?;
    store.move_app(app.id, AppState::Restarting, actor).await;
    out.step(&format!("Restarting {}, one container at a time", app.name));
    let port = release::app_port(berth, app).await?;
    let target = release::usable_target(berth, app).await?;
    let result = scheduler
        .restart(target, &spec, out, &berth.app_port(&app.name, port))
        .await;
    let outcome = if result.is_ok() {
        AppState::Running
    } else {
        AppState::Failed
    };
    store.move_app(app.id, outcome, actor).await;
    store
        .note_event(
            Some(app.id),
            "restart",
            actor,
            if result.is_ok() { "ok" } else { "failed" },
            why,
        )
        .await;
    result
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
                failed.push(app.name);
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
    let (_guard, app) = berth.lock(app).await?;
    let current = berth
        .store
        .latest_release(app.id)
        .await
        .map_err(internal)?
        .ok_or_else(|| format!("{} has never been pushed: nothing to rebuild", app.name))?;
    let name = AppName::parse(&app.name)?;
    let repo = git::repo_path(&berth.config.repos_dir(), &name);
    let short = &current.commit_sha[..current.commit_sha.len().min(7)];
    let request = BuildRequest {
        app: &name,
        app_id: app.id,
        repo: &repo,
        commit: &current.commit_sha,
        quarantine: None,
        description: &format!("ps:rebuild of {short}"),
        actor: &who.key_name,
    };
    if let Err(message) = pipeline::build_and_release(berth, &request, out).await {
        berth
            .store
            .move_app(app.id, AppState::Failed, &who.key_name)
            .await;
        return Err(message);
    }
    Ok(())
}

pub async fn report(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let scheduler = Scheduler::connect_within(std::time::Duration::from_secs(2)).await?;
    let containers = scheduler
        .with_details(scheduler.instances_of(&app.name, None).await?)
        .await;
    // What the router sends each web instance: serving, canary, out (failing its health
    // check), or nothing.
    let traffic = berth.routes.traffic(&app.name);
    let traffic_of = |c: &ContainerReport| {
        c.address
            .and_then(|a| traffic.get(&a).copied())
            .unwrap_or("-")
    };
    if args.json() {
        #[derive(serde::Serialize)]
        struct Row<'a> {
            #[serde(flatten)]
            container: &'a ContainerReport,
            traffic: &'a str,
        }
        let rows: Vec<Row> = containers
            .iter()
            .map(|c| Row {
                container: c,
                traffic: traffic_of(c),
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
        let address = c
            .host_port
            .map(|p| format!("{host}:{p}"))
            .unwrap_or_else(|| "-".into());
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
    }
    Ok(text)
}
