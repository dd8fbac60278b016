//! `canary:start`, `canary:weight`, `canary:promote`, `canary:abort`: a release served beside
//! the current one for a share of the app's requests (the router splits them by weight), then
//! made current or dropped. Each holds the app's deploy lock.

use std::collections::BTreeMap;

use super::common::{Access, Args, app_for, internal, numbered_release};
use crate::domain::ReleaseStatus;
use crate::ops;
use crate::output::Output;
use crate::server::{Berth, Identity};
use crate::store::LogFailure;

fn weight(raw: &str) -> Result<u8, String> {
    raw.trim_end_matches('%')
        .parse::<u8>()
        .ok()
        .filter(|w| *w <= 100)
        .ok_or_else(|| format!("{raw:?} is not a weight: give a whole percentage from 0 to 100"))
}

pub async fn start(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let weight = weight(args.value("--weight").unwrap_or("10"))?;
    let app = ops::lock(berth, &app).await?;
    let store = &berth.store;
    if let Some(canary) = store.canary(app.id).await.map_err(internal)? {
        return Err(format!(
            "{} already has a canary ({}): canary:weight, canary:promote or canary:abort it",
            app.name,
            ops::describe_canary(&canary)
        ));
    }
    if app.stopped {
        return Err(format!(
            "{} is stopped: ps:start {} first",
            app.name, app.name
        ));
    }
    let current = ops::running_release(
        berth,
        &app,
        "has no running release yet: its first push deploys it normally",
    )
    .await?;
    ops::canary_target(berth, &app)?;
    let Some(wanted) = args.value("--release") else {
        store
            .start_canary(app.id, weight, &who.key_name)
            .await
            .map_err(internal)?;
        store
            .note_event(
                Some(app.id),
                "canary",
                &who.key_name,
                "waiting",
                &format!("next push at {weight}%"),
            )
            .await;
        return Ok(format!(
            "-----> The next push to {} runs beside v{} and gets {weight}% of its requests\n",
            app.name, current.number
        ));
    };
    let source = numbered_release(berth, &app, wanted).await?;
    if source.number == current.number {
        return Err(format!(
            "v{} is the running release; give another (releases {})",
            source.number, app.name
        ));
    }
    if source.status == ReleaseStatus::Failed {
        return Err(format!("v{} never ran (its deploy failed)", source.number));
    }
    let scheduler = berth.scheduler().await?;
    store
        .start_canary(app.id, weight, &who.key_name)
        .await
        .map_err(internal)?;
    let config: BTreeMap<String, String> = source.config.0.clone();
    let description = format!("canary of v{}", source.number);
    let plan = ops::Plan {
        commit: &source.commit_sha,
        config: &config,
        manifest: &source.manifest,
        description: &description,
        actor: &who.key_name,
        canary: Some(weight),
    };
    let deployed = ops::create_and_deploy(
        berth,
        &scheduler,
        &app,
        ops::Source::Existing(&source.image),
        plan,
        out,
    )
    .await;
    match deployed {
        Ok(_) => Ok(String::new()),
        Err(message) => {
            store
                .end_canary(app.id, ReleaseStatus::Failed)
                .await
                .or_log("ending a canary that failed");
            Err(format!(
                "{message}; v{} keeps every request",
                current.number
            ))
        }
    }
}

pub async fn set_weight(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let weight = weight(&args.positional[1])?;
    let app = ops::lock(berth, &app).await?;
    let canary = ops::set_canary_weight(berth, &app, weight, &who.key_name)
        .await?
        .ok_or_else(|| no_canary(&app.name))?;
    Ok(match canary.release {
        Some(number) => format!(
            "-----> v{number} now gets {weight}% of {}'s requests\n",
            app.name
        ),
        None => format!(
            "-----> The next push to {} will get {weight}% of its requests\n",
            app.name
        ),
    })
}

fn no_canary(app: &str) -> String {
    format!("{app} has no canary (canary:start {app} --weight N)")
}

pub async fn promote(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let app = ops::lock(berth, &app).await?;
    let store = &berth.store;
    let canary = store
        .canary(app.id)
        .await
        .map_err(internal)?
        .ok_or_else(|| no_canary(&app.name))?;
    let Some(number) = canary.release else {
        return Err(format!(
            "{}'s canary waits for its next push: nothing to promote yet (canary:abort {} cancels it)",
            app.name, app.name
        ));
    };
    let release = numbered_release(berth, &app, &number.to_string()).await?;
    let scheduler = berth.scheduler().await?;
    out.step(&format!("Promoting v{number} of {}", app.name));
    ops::promote_canary(berth, &scheduler, &app, &release, &who.key_name, out).await?;
    let port = ops::app_port(berth, &app).await?;
    Ok(format!(
        "-----> {} v{number} is live at {}\n",
        app.name,
        berth.app_url(&app.name, port)
    ))
}

pub async fn abort(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let app = ops::lock(berth, &app).await?;
    let canary = berth
        .store
        .canary(app.id)
        .await
        .map_err(internal)?
        .ok_or_else(|| no_canary(&app.name))?;
    let scheduler = berth.scheduler().await?;
    out.step(&format!("Aborting {}'s canary", app.name));
    let number = canary.release;
    ops::abort_canary(berth, &scheduler, &app, number, &who.key_name).await?;
    let current = berth
        .store
        .running_release(app.id)
        .await
        .map_err(internal)?
        .map_or(String::new(), |r| format!(" v{}", r.number));
    Ok(match number {
        Some(number) => format!("-----> v{number} stopped; every request goes to{current} again\n"),
        None => "-----> Canceled: the next push deploys normally\n".to_string(),
    })
}
