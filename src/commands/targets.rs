//! `apps:set`, `resources:set`, `deploy:render` and `deploy:plan`: where and with what an app
//! runs, and the dry run of it.

use super::common::{Access, Args, admin_only_for, app_for, internal, numbered_release, to_json};
use crate::deploy::render::{self, Resources, Target};
use crate::ops;
use crate::output::Output;
use crate::server::{Berth, Identity};

pub async fn set(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let mut app = ops::lock(berth, &app).await?;
    let previous = app.target;
    let mut done = Vec::new();
    let mut moved_to = None;
    for pair in &args.positional[1..] {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            format!("{pair:?} is not key=value; usage: apps:set APP target=docker")
        })?;
        match key {
            "target" => {
                // Each target runs the app through other machinery (swarm services, units):
                // moving an app is the host's decision, not a member's.
                if !who.is_admin() {
                    return Err(
                        "not allowed: only admins may move an app to another target".to_string()
                    );
                }
                let target = Target::parse(value)?;
                crate::deploy::applicable(target).await.map_err(|reason| {
                    format!("target {target} cannot be used here: {reason}; nothing changed")
                })?;
                berth
                    .store
                    .set_target(app.id, Some(target))
                    .await
                    .map_err(internal)?;
                done.push(format!("target={target}"));
                if ops::target(berth, &app) != target {
                    moved_to = Some(target);
                }
            }
            "deploy_branch" => {
                let valid = !value.is_empty()
                    && value.len() <= 200
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
                    && !value.starts_with(['-', '/', '.'])
                    && !value.ends_with(['/', '.'])
                    && !value.contains("..")
                    && !value.contains("//")
                    && !value.ends_with(".lock");
                if !valid {
                    return Err(format!("invalid branch name {value:?}"));
                }
                berth
                    .store
                    .set_deploy_branch(app.id, value)
                    .await
                    .map_err(internal)?;
                done.push(format!("deploy_branch={value}"));
            }
            "placement" => {
                // Which machines run an app is the host's decision, as its target is.
                if !who.is_admin() {
                    return Err("not allowed: only admins may set an app's placement".to_string());
                }
                let constraints: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect();
                for constraint in &constraints {
                    ops::check_constraint(constraint)?;
                }
                let before = app.placement.0.clone();
                let json = serde_json::to_string(&constraints).map_err(internal)?;
                berth
                    .store
                    .set_placement(app.id, &json)
                    .await
                    .map_err(internal)?;
                app.reload(berth).await?;
                // A swarm app that runs moves now (the stack applied again, start-first); if
                // the swarm cannot place it, the placement it had stays.
                let running = berth
                    .store
                    .running_release(app.id)
                    .await
                    .map_err(internal)?
                    .is_some();
                if ops::target(berth, &app) == Target::Swarm && running && !app.stopped {
                    let formation = ops::formation(&app);
                    if let Err(message) =
                        ops::scale(berth, &app, &formation, &who.key_name, out).await
                    {
                        let json = serde_json::to_string(&before).map_err(internal)?;
                        berth
                            .store
                            .set_placement(app.id, &json)
                            .await
                            .map_err(internal)?;
                        return Err(format!(
                            "{message}; the placement stays {}",
                            if before.is_empty() {
                                "any node".to_string()
                            } else {
                                before.join(",")
                            }
                        ));
                    }
                }
                done.push(format!(
                    "placement={}",
                    if constraints.is_empty() {
                        "any node".to_string()
                    } else {
                        constraints.join(",")
                    }
                ));
            }
            other => {
                return Err(format!(
                    "unknown setting {other:?}: apps:set knows target, deploy_branch and placement"
                ));
            }
        }
    }
    berth
        .store
        .note_event(
            Some(app.id),
            "apps:set",
            &who.key_name,
            "ok",
            &done.join(" "),
        )
        .await;
    out.step(&format!("{}: {}", app.name, done.join(" ")));
    if moved_to.is_some() {
        ops::move_target(berth, &mut app, previous, &who.key_name, out).await?;
    }
    Ok(String::new())
}

pub async fn resources(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let process = &args.positional[1];
    if !ops::formation(&app).contains_key(process) {
        return Err(format!(
            "unknown process type {process:?}: {} runs {}",
            app.name,
            ops::formation(&app)
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Stored as checked: trimmed and lower-cased (a trailing newline would end up in a unit).
    let wanted = Resources {
        cpu: args.value("--cpu").map(|c| c.trim().to_string()),
        memory: args
            .value("--memory")
            .map(|m| m.trim().to_ascii_lowercase()),
    };
    if wanted.cpu.is_none() && wanted.memory.is_none() {
        return Err("usage: resources:set APP PROCESS [--cpu N] [--memory SIZE]".to_string());
    }
    wanted.validate()?;
    let app = ops::lock(berth, &app).await?;
    let mut all = ops::resources(&app);
    let entry = all.entry(process.clone()).or_default();
    if wanted.cpu.is_some() {
        entry.cpu = wanted.cpu.clone();
    }
    if wanted.memory.is_some() {
        entry.memory = wanted.memory.clone();
    }
    let entry = entry.clone();
    let json = serde_json::to_string(&all).map_err(internal)?;
    berth
        .store
        .set_resources(app.id, &json)
        .await
        .map_err(internal)?;
    berth
        .store
        .note_event(
            Some(app.id),
            "resources",
            &who.key_name,
            "ok",
            &format!("{process}: {json}"),
        )
        .await;
    Ok(format!(
        "-----> {} {process}: cpu={} memory={} (applies at the next release or restart)\n",
        app.name,
        entry.cpu.as_deref().unwrap_or("-"),
        entry.memory.as_deref().unwrap_or("-")
    ))
}

pub async fn render_units(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let target = match args.value("--target") {
        Some(name) => Target::parse(name)?,
        None => ops::target(berth, &app),
    };
    let release = release_arg(berth, &app, args).await?;
    let context = ops::render_context(berth, &app, &release).await?;
    let overrides = ops::template_overrides(berth, &app, &release, target).await?;
    let units = crate::deploy::sandbox::render(target, &context, overrides).await?;
    if args.json() {
        return to_json(&units);
    }
    Ok(render_text(target, release.number, &units))
}

/// `deploy:render`'s text: what the target's own tool takes as it is. Kubernetes: one YAML
/// stream, each manifest a document of its own (`---`), for `kubectl apply -f -`. Swarm: the
/// stack file (`docker stack deploy -c -`). systemd: the units one after another, each under
/// a comment naming its file (`--json` gives them apart, to write into /etc/systemd/system).
fn render_text(target: Target, release: i64, units: &[crate::deploy::render::Unit]) -> String {
    units
        .iter()
        .map(|u| {
            let separator = if target == Target::Kubernetes {
                "---\n"
            } else {
                ""
            };
            format!(
                "{separator}# ---- {} ({target}, v{release})\n{}\n",
                u.name,
                u.text.trim_end()
            )
        })
        .collect()
}

/// `--release vN`, else the running release.
async fn release_arg(
    berth: &Berth,
    app: &crate::store::App,
    args: &Args,
) -> Result<crate::store::Release, String> {
    match args.value("--release") {
        Some(wanted) => numbered_release(berth, app, wanted).await,
        None => ops::running_release(berth, app, "has no release yet: push one first").await,
    }
}

pub async fn plan(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let release = ops::running_release(berth, &app, "has no release yet: push one first").await?;
    let context = ops::render_context(berth, &app, &release).await?;
    let lines = render::plan(&context);
    if args.json() {
        return to_json(&lines);
    }
    let mut text = format!(
        "{:<10} {:>8} {:>10} {:>12} {:>10} {:>12}\n",
        "PROCESS", "REPLICAS", "CPU EACH", "MEMORY EACH", "CPU TOTAL", "MEMORY TOTAL"
    );
    let mib = |bytes: Option<u64>| bytes.map_or("-".to_string(), |b| format!("{}Mi", b >> 20));
    let cpu = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c}"));
    for line in lines {
        text += &format!(
            "{:<10} {:>8} {:>10} {:>12} {:>10} {:>12}\n",
            line.process,
            line.replicas,
            cpu(line.cpu_each),
            mib(line.memory_each_bytes),
            cpu(line.cpu_total),
            mib(line.memory_total_bytes)
        );
    }
    Ok(text)
}

/// `templates:approve APP [--release vN]` (admins): the `.berth/templates/` of that release's
/// commit (default the running release) may be used from now on. The approval is of that exact
/// tree: a push that changes any template is not used until approved again.
pub async fn approve(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    admin_only_for(who, "templates:approve")?;
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let release = release_arg(berth, &app, args).await?;
    let Some((tree, _)) = ops::repo_templates(berth, &app, &release.commit_sha).await? else {
        return Err(format!(
            "{} v{} has no .berth/templates/ in its commit; nothing to approve",
            app.name, release.number
        ));
    };
    berth
        .store
        .approve_templates(app.id, &tree, &who.key_name)
        .await
        .map_err(internal)?;
    berth
        .store
        .note_event(
            Some(app.id),
            "templates:approve",
            &who.key_name,
            "ok",
            &format!("v{} tree {tree}", release.number),
        )
        .await;
    Ok(format!(
        "-----> {}: .berth/templates/ of v{} (tree {}) approved; used from the next deploy\n",
        app.name,
        release.number,
        &tree[..12.min(tree.len())]
    ))
}

/// `templates:revoke APP` (admins): no repo template of the app is used any more.
pub async fn revoke(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    admin_only_for(who, "templates:revoke")?;
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let removed = berth
        .store
        .revoke_templates(app.id)
        .await
        .map_err(internal)?;
    berth
        .store
        .note_event(
            Some(app.id),
            "templates:revoke",
            &who.key_name,
            "ok",
            &format!("{removed} approval(s)"),
        )
        .await;
    Ok(format!(
        "-----> {}: {removed} template approval(s) withdrawn; built-in templates from the next deploy\n",
        app.name
    ))
}
