//! `releases`, `releases:rollback`, `logs` and `events`.

use futures_util::stream::{self, BoxStream, StreamExt};

use super::common::{Access, Args, app_for, internal, numbered_release, to_json};
use crate::domain::ReleaseStatus;
use crate::ops;
use crate::output::Output;
use crate::server::{Berth, Identity};

pub async fn list(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let releases = berth
        .store
        .releases(app.id, args.count("-n", 20)?)
        .await
        .map_err(internal)?;
    if args.json() {
        return to_json(&releases);
    }
    let mut text = format!(
        "{:<6} {:<9} {:<11} {:<12} {:<21} {:<34} {}\n",
        "REL", "COMMIT", "STATUS", "BY", "WHEN", "IMAGE", "DESCRIPTION"
    );
    for r in releases {
        text += &format!(
            "{:<6} {:<9} {:<11} {:<12} {:<21} {:<34} {}\n",
            format!("v{}", r.number),
            &r.commit_sha[..r.commit_sha.len().min(7)],
            r.status,
            r.created_by,
            r.created_at,
            r.image,
            r.description
        );
    }
    Ok(text)
}

pub async fn rollback(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let app = ops::lock(berth, &app).await?;
    ops::refuse_during_canary(berth, &app).await?;
    let store = &berth.store;
    let current =
        ops::running_release(berth, &app, "has no release running to roll back from").await?;
    let target = match args.positional.get(1) {
        Some(wanted) => {
            let target = numbered_release(berth, &app, wanted).await?;
            if target.status == ReleaseStatus::Failed {
                return Err(format!(
                    "v{} never ran (its deploy failed); pick another from `releases {}`",
                    target.number, app.name
                ));
            }
            target
        }
        None => store
            .releases(app.id, 1000)
            .await
            .map_err(internal)?
            .into_iter()
            .find(|r| r.number < current.number && r.status == ReleaseStatus::Superseded)
            .ok_or_else(|| format!("{} has no earlier release that ran", app.name))?,
    };
    if target.number == current.number {
        return Err(format!("v{} is already the running release", target.number));
    }
    ops::rollback(berth, &app, &current, &target, &who.key_name, out).await?;
    Ok(String::new())
}

pub async fn events(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let limit = args.count("-n", 20)?;
    let events = match app_for(berth, who, &args.positional[0], Access::Operate).await {
        Ok(app) => berth.store.events(app.id, limit).await.map_err(internal)?,
        // The audit trail of a destroyed app stays: admins read it by the name it had.
        Err(missing) => {
            let kept = if who.is_admin() {
                berth
                    .store
                    .events_of_destroyed(&args.positional[0], limit)
                    .await
                    .map_err(internal)?
            } else {
                Vec::new()
            };
            if kept.is_empty() {
                return Err(missing);
            }
            kept
        }
    };
    if args.json() {
        return to_json(&events);
    }
    Ok(events
        .iter()
        .map(|e| {
            format!(
                "{}  {:<14} {:<12} {:<10} {}\n",
                e.created_at, e.kind, e.actor, e.outcome, e.detail
            )
        })
        .collect())
}

/// `logs`: the output of the app's current containers, each line prefixed `web.1 | `.
/// Without `-f` the stream ends with the last line; with `-f` it follows until dropped.
pub async fn log_stream(
    berth: &Berth,
    who: &Identity,
    args: &Args,
) -> Result<BoxStream<'static, Vec<u8>>, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let lines = args.count("-n", 100)?;
    let process = args.value("--process");
    let current = berth
        .store
        .running_release(app.id)
        .await
        .map_err(internal)?;
    let scheduler = berth.scheduler().await?;
    let follow = args.has("-f");
    // The systemd target's instances write to the journal: one stream per unit of the running
    // release (a unit waiting to restart has no container, but has its journal).
    if ops::target(berth, &app) == crate::deploy::render::Target::Systemd {
        let release = current.as_ref().map(|r| r.number);
        let units: Vec<_> = scheduler
            .units_of(&app.name)
            .await
            .into_iter()
            .map(|(unit, _)| unit)
            .filter(|u| Some(u.release) == release)
            .filter(|u| process.is_none_or(|p| u.process == p))
            .collect();
        if units.is_empty() {
            return Err(format!(
                "{} has no units{}",
                app.name,
                process
                    .map(|p| format!(" of process {p}"))
                    .unwrap_or_default()
            ));
        }
        let streams = units.into_iter().map(move |unit| {
            let prefix = format!("{}.{} | ", unit.process, unit.index);
            prefixed(scheduler.unit_logs(&unit.name, lines, follow), prefix)
        });
        return Ok(stream::select_all(streams).boxed());
    }
    let containers = scheduler
        .instances_of(&app.name, current.map(|r| r.number))
        .await?;
    let chosen: Vec<_> = containers
        .into_iter()
        .filter(|c| process.is_none_or(|p| c.process == p))
        .collect();
    if chosen.is_empty() {
        return Err(format!(
            "{} has no containers{}",
            app.name,
            process
                .map(|p| format!(" of process {p}"))
                .unwrap_or_default()
        ));
    }
    let streams = chosen.into_iter().map(move |container| {
        let prefix = format!("{}.{} | ", container.process, container.index);
        prefixed(scheduler.logs(&container, lines, follow), prefix)
    });
    Ok(stream::select_all(streams).boxed())
}

/// Each line of the stream prefixed with its instance (`web.1 | `).
fn prefixed(chunks: BoxStream<'static, Vec<u8>>, prefix: String) -> BoxStream<'static, Vec<u8>> {
    chunks
        .map(move |chunk| {
            let mut bytes = Vec::with_capacity(chunk.len() + 16);
            for line in chunk.split_inclusive(|b| *b == b'\n') {
                bytes.extend_from_slice(prefix.as_bytes());
                bytes.extend_from_slice(line);
            }
            if !bytes.ends_with(b"\n") {
                bytes.push(b'\n');
            }
            bytes
        })
        .boxed()
}

pub async fn logs(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let chunks: Vec<Vec<u8>> = log_stream(berth, who, args).await?.collect().await;
    Ok(String::from_utf8_lossy(&chunks.concat()).into_owned())
}

/// Starts `run APP COMMAND...` for the caller to attach to.
pub async fn run(
    berth: &Berth,
    who: &Identity,
    rest: &[String],
    tty: bool,
) -> Result<crate::deploy::OneOff, String> {
    let (app_name, command) = app_and_command(rest, "run")?;
    let app = app_for(berth, who, app_name, Access::Operate).await?;
    let slot = run_slot(berth, who)?;
    let current = ops::running_release(berth, &app, "has no release yet: push one first").await?;
    let env = env_of(&current).collect();
    let scheduler = berth.scheduler().await?;
    // Only the program's name is recorded: arguments may carry secrets.
    let detail = format!("v{}: {}", current.number, command[0]);
    berth
        .store
        .note_event(Some(app.id), "run", &who.key_name, "started", &detail)
        .await;
    let within = ops::run_in(berth, &scheduler, &app, &current).await?;
    let one_off = scheduler
        .run_one_off(
            &app.name,
            &current.image,
            env,
            command.to_vec(),
            within,
            tty,
        )
        .await?;
    Ok(held_until_exit(one_off, slot))
}

/// `APP COMMAND [ARGS...]`, as `run` and `run:task` take them.
fn app_and_command<'a>(
    rest: &'a [String],
    verb: &str,
) -> Result<(&'a String, &'a [String]), String> {
    match rest {
        [app, command @ ..] if !command.is_empty() => Ok((app, command)),
        _ => Err(format!("usage: {verb} APP COMMAND [ARGS...]")),
    }
}

/// The release's config as a one-off's environment (`KEY=value`).
fn env_of(release: &crate::store::Release) -> impl Iterator<Item = String> + '_ {
    release.config.0.iter().map(|(k, v)| format!("{k}={v}"))
}

/// A member's run slot (`member_max_runs`; one member cannot fill the nodes with one-off
/// containers, finding 28); admins take none.
fn run_slot(berth: &Berth, who: &Identity) -> Result<Option<crate::limits::Slot<String>>, String> {
    if who.is_admin() {
        return Ok(None);
    }
    berth
        .runs
        .enter(who.key_name.clone())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "you already have {} run containers (member_max_runs): end one first",
                berth.config.member_max_runs
            )
        })
}

/// The one-off, with the run slot held until it has exited (or the caller went away).
fn held_until_exit(
    mut one_off: crate::deploy::OneOff,
    slot: Option<crate::limits::Slot<String>>,
) -> crate::deploy::OneOff {
    let exit = one_off.exit;
    one_off.exit = Box::pin(async move {
        let code = exit.await;
        drop(slot);
        code
    });
    one_off
}

/// `run:task APP COMMAND...`: the command as a one-off task of the app's swarm, placed by the
/// swarm on any node the app's placement allows (Heroku's one-off dyno, anywhere in the
/// cluster). No stdin and no TTY (the swarm attaches neither): `run` gives those, on this host.
pub async fn run_task(
    berth: &Berth,
    who: &Identity,
    rest: &[String],
) -> Result<crate::deploy::OneOff, String> {
    let (app_name, command) = app_and_command(rest, "run:task")?;
    let app = app_for(berth, who, app_name, Access::Operate).await?;
    if ops::target(berth, &app) != crate::deploy::render::Target::Swarm {
        return Err(format!(
            "run:task runs on the swarm target only; {} runs on {}: use run",
            app.name,
            ops::target(berth, &app)
        ));
    }
    let slot = run_slot(berth, who)?;
    let current = ops::running_release(berth, &app, "has no release yet: push one first").await?;
    let env = env_of(&current)
        .chain(std::iter::once("DYNO=run.task".to_string()))
        .collect();
    let scheduler = berth.scheduler().await?;
    let detail = format!("v{} (task): {}", current.number, command[0]);
    berth
        .store
        .note_event(Some(app.id), "run", &who.key_name, "started", &detail)
        .await;
    let within = ops::run_in(berth, &scheduler, &app, &current).await?;
    let run = crate::deploy::swarm::TaskRun {
        app: app.name.to_string(),
        release: current.number,
        image: ops::node_image(berth, &current),
        env,
        command: command.to_vec(),
        placement: ops::placement(berth, &app, !within.binds.is_empty()).await,
        binds: within.binds,
        registry: berth
            .config
            .cluster_registry
            .clone()
            .or_else(|| berth.config.registry.clone()),
        pending_limit: berth.config.ready_timeout() + std::time::Duration::from_secs(30),
    };
    let one_off = scheduler.run_task(run).await?;
    Ok(held_until_exit(one_off, slot))
}
