//! `apps:*`: create, list, info, rename, destroy, labels, grant and revoke.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use super::common::{Access, Args, app_for, internal, may, to_json};
use crate::deploy::ContainerReport;
use crate::domain::AppState;
use crate::git;
use crate::names::AppName;
use crate::ops;
use crate::output::Output;
use crate::server::{Berth, Identity};
use crate::store::LogFailure;
use crate::store::{App, Release};

/// How long `apps:list` waits for the engine before answering from the DB alone.
const LIVE_LIMIT: Duration = Duration::from_millis(700);

/// The `--json` shape of an app (stable field names, documented in the README).
#[derive(Serialize)]
struct AppView {
    name: String,
    /// The DB state, or `unknown` when the engine did not answer.
    state: AppState,
    owner: String,
    labels: BTreeMap<String, String>,
    /// Process type → wanted instances.
    formation: BTreeMap<String, u32>,
    /// Process type → instances the engine reports running (absent when it did not answer).
    running: Option<BTreeMap<String, u32>>,
    release: Option<i64>,
    /// Through the router when it is on, else the stable port.
    url: Option<String>,
    /// The app's stable port, always available.
    direct_url: Option<String>,
    /// Custom domains served by the router.
    domains: Vec<String>,
    deploy_branch: String,
    /// Where it runs: docker, systemd, swarm or kubernetes.
    target: String,
    /// swarm: where its tasks may run (`apps:set APP placement=…`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    placement: Vec<String>,
    /// Fewer instances run than wanted, and why (what the engine or the swarm says of the
    /// ones that do not run): `web: 2 of 3 running (no suitable node ...)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded: Option<String>,
    created_at: String,
    updated_at: String,
}

fn labels_of(app: &App) -> BTreeMap<String, String> {
    app.labels.0.clone()
}

fn view(
    berth: &Berth,
    app: &App,
    running_release: Option<&Release>,
    live: Option<&[ContainerReport]>,
) -> AppView {
    let url = app
        .port
        .filter(|_| running_release.is_some() && !app.stopped)
        .and_then(|p| u16::try_from(p).ok())
        .map(|p| berth.url(p));
    let direct_url = url.clone();
    let url = app
        .port
        .filter(|_| running_release.is_some() && !app.stopped)
        .and_then(|p| u16::try_from(p).ok())
        .map(|p| berth.app_url(&app.name, p));
    let domains = berth.domains_of(&app.name);
    let running = live.map(|containers| {
        let mut counts = BTreeMap::new();
        for container in containers {
            if container.state == "running"
                && Some(container.release) == running_release.map(|r| r.number)
            {
                *counts.entry(container.process.clone()).or_insert(0) += 1;
            }
        }
        counts
    });
    // Degraded: the release runs, with fewer instances of a process than its formation wants.
    let degraded = running.as_ref().and_then(|counts| {
        if running_release.is_none() || app.stopped {
            return None;
        }
        let short: Vec<String> = ops::formation(app)
            .iter()
            .filter_map(|(process, wanted)| {
                let have = counts.get(process).copied().unwrap_or(0);
                (have < *wanted).then(|| {
                    let why = live
                        .unwrap_or_default()
                        .iter()
                        .find(|c| {
                            &c.process == process && c.state != "running" && !c.status.is_empty()
                        })
                        .map(|c| format!(" ({})", c.status))
                        .unwrap_or_default();
                    format!("{process}: {have} of {wanted} running{why}")
                })
            })
            .collect();
        (!short.is_empty()).then(|| short.join("; "))
    });
    AppView {
        name: app.name.to_string(),
        state: if live.is_some() {
            app.state
        } else {
            AppState::Unknown
        },
        owner: app.owner.clone(),
        labels: labels_of(app),
        formation: ops::formation(app),
        running,
        release: running_release.map(|r| r.number),
        url,
        direct_url,
        domains,
        target: app
            .target
            .unwrap_or(berth.config.default_target)
            .to_string(),
        deploy_branch: app
            .deploy_branch
            .clone()
            .unwrap_or_else(|| berth.config.deploy_branch.clone()),
        placement: app.placement.0.clone(),
        degraded,
        created_at: app.created_at.clone(),
        updated_at: app.updated_at.clone(),
    }
}

/// What the engine runs, per app, in one call; `None` when it does not answer in time.
async fn live_containers(
    berth: &Berth,
    berth_limit: Duration,
) -> Option<HashMap<String, Vec<ContainerReport>>> {
    let scheduler = berth.scheduler_within(berth_limit).await.ok()?;
    tokio::time::timeout(berth_limit, scheduler.all_instances())
        .await
        .ok()?
        .ok()
}

/// `-l key=value,key2` : every term must hold (`key` alone: the label is set).
fn selector_matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    selector
        .split(',')
        .filter(|t| !t.is_empty())
        .all(|term| match term.split_once('=') {
            Some((key, value)) => labels.get(key.trim()).map(String::as_str) == Some(value.trim()),
            None => labels.contains_key(term.trim()),
        })
}

fn formation_text(view: &AppView) -> String {
    view.formation
        .iter()
        .map(|(process, wanted)| match view.running.as_ref() {
            Some(running) => format!(
                "{process}={}/{wanted}",
                running.get(process).copied().unwrap_or(0)
            ),
            None => format!("{process}={wanted}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn list(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let live = live_containers(berth, LIVE_LIMIT).await;
    let empty = Vec::new();
    let mut views = Vec::new();
    for app in berth.store.apps().await.map_err(internal)? {
        if !may(berth, who, &app, Access::Operate).await? {
            continue;
        }
        if let Some(selector) = args.value("-l")
            && !selector_matches(selector, &labels_of(&app))
        {
            continue;
        }
        let running = berth
            .store
            .running_release(app.id)
            .await
            .map_err(internal)?;
        let containers = live
            .as_ref()
            .map(|by_app| by_app.get(app.name.as_str()).unwrap_or(&empty).as_slice());
        views.push(view(berth, &app, running.as_ref(), containers));
    }
    if args.json() {
        return to_json(&views);
    }
    let mut text = format!(
        "{:<24} {:<12} {:<8} {:<10} {:<12} {}\n",
        "NAME", "STATE", "RELEASE", "SCALE", "OWNER", "URL"
    );
    for v in &views {
        let release = v
            .release
            .map(|n| format!("v{n}"))
            .unwrap_or_else(|| "-".into());
        text += &format!(
            "{:<24} {:<12} {:<8} {:<10} {:<12} {}\n",
            v.name,
            v.state,
            release,
            formation_text(v),
            v.owner,
            v.url.as_deref().unwrap_or("-")
        );
        if let Some(degraded) = &v.degraded {
            text += &format!("  degraded: {degraded}\n");
        }
    }
    if live.is_none() {
        text += "(the Docker engine did not answer: states are unknown)\n";
    }
    Ok(text)
}

/// What was set up for the app by a key that may no longer operate it (an ex-grantee, a removed
/// key), and so no longer acts (finding 9): webhooks, the git:sync source, links.
async fn disabled(berth: &Berth, app: &App) -> Result<Vec<String>, String> {
    let mut disabled = Vec::new();
    let gone = |key: &str| format!("{key} may no longer operate {}", app.name);
    for hook in berth.store.webhooks().await.map_err(internal)? {
        if hook.app.as_deref() == Some(app.name.as_str())
            && !crate::webhooks::webhook_active(berth, &hook).await
        {
            disabled.push(format!(
                "webhook {} (added by {}; {})",
                hook.id,
                hook.created_by,
                gone(&hook.created_by)
            ));
        }
    }
    if let Some(sync) = berth.store.sync(app.id).await.map_err(internal)?
        && !super::common::key_may_operate(berth, &sync.created_by, app).await
    {
        disabled.push(format!(
            "git:sync source (set by {}; {})",
            sync.created_by,
            gone(&sync.created_by)
        ));
    }
    for link in berth.store.links_to(app.id).await.map_err(internal)? {
        if !ops::link_stands(berth, &link).await {
            disabled.push(format!(
                "link from {} (made by {}; {})",
                link.app,
                link.created_by,
                gone(&link.created_by)
            ));
        }
    }
    Ok(disabled)
}

pub async fn info(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let live = live_containers(berth, LIVE_LIMIT).await;
    let running = berth
        .store
        .running_release(app.id)
        .await
        .map_err(internal)?;
    let latest = berth.store.latest_release(app.id).await.map_err(internal)?;
    let grants = berth.store.grants(app.id).await.map_err(internal)?;
    let containers = live
        .as_ref()
        .map(|by_app| by_app.get(app.name.as_str()).cloned().unwrap_or_default());
    let v = view(berth, &app, running.as_ref(), containers.as_deref());
    /// The canary beside the current release, and how requests split.
    #[derive(Serialize)]
    struct CanaryView {
        /// None: the next push.
        release: Option<i64>,
        weight: u8,
        current_release: Option<i64>,
        current_weight: u8,
        /// Where the canary's instances answer.
        upstreams: Vec<String>,
    }
    // Where the data plane sends the canary's share (none known while it does not answer).
    let canary_upstreams: Vec<String> = berth
        .plane
        .canary(&app.name)
        .await
        .ok()
        .flatten()
        .map(|(a, _)| a.iter().map(|a| a.to_string()).collect())
        .unwrap_or_default();
    let canary = berth
        .store
        .canary(app.id)
        .await
        .map_err(internal)?
        .map(|c| CanaryView {
            release: c.release,
            weight: c.weight,
            current_release: running.as_ref().map(|r| r.number),
            current_weight: 100 - c.weight,
            upstreams: canary_upstreams.clone(),
        });
    let links = berth.store.links_from(app.id).await.map_err(internal)?;
    let linked_from = berth.store.links_to(app.id).await.map_err(internal)?;
    let mounts = berth.store.mounts(app.id).await.map_err(internal)?;
    let disabled = disabled(berth, &app).await?;
    if args.json() {
        #[derive(Serialize)]
        struct Info<'a> {
            #[serde(flatten)]
            app: &'a AppView,
            grants: &'a [String],
            current_release: Option<&'a Release>,
            last_release: Option<&'a Release>,
            canary: Option<CanaryView>,
            /// The apps this one is linked to (apps:link APP DEP).
            links: &'a [crate::store::Link],
            /// The apps linked to this one.
            linked_from: &'a [crate::store::Link],
            mounts: &'a [crate::store::Mount],
            /// What a key set up for the app that no longer acts, because that key may no
            /// longer operate the app (revoked, removed).
            disabled: &'a [String],
        }
        return to_json(&Info {
            disabled: &disabled,
            app: &v,
            grants: &grants,
            current_release: running.as_ref(),
            last_release: latest.as_ref(),
            canary,
            links: &links,
            linked_from: &linked_from,
            mounts: &mounts,
        });
    }
    let mut text = format!("=== {}\n", v.name);
    text += &format!("state:         {}\n", v.state);
    if let Some(degraded) = &v.degraded {
        text += &format!("degraded:      {degraded}\n");
    }
    if !v.placement.is_empty() {
        text += &format!("placement:     {}\n", v.placement.join(", "));
    }
    text += &format!("owner:         {}\n", v.owner);
    text += &format!(
        "grants:        {}\n",
        if grants.is_empty() {
            "-".to_string()
        } else {
            grants.join(", ")
        }
    );
    text += &format!(
        "labels:        {}\n",
        v.labels
            .iter()
            .map(|(k, val)| format!("{k}={val}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    text += &format!("deploy branch: {}\n", v.deploy_branch);
    text += &format!("formation:     {}\n", formation_text(&v));
    match &running {
        Some(r) => {
            let short = &r.commit_sha[..r.commit_sha.len().min(7)];
            text += &format!(
                "release:       v{} ({short}, {}, by {} at {})\n",
                r.number, r.image, r.created_by, r.created_at
            );
        }
        None => text += "release:       none running\n",
    }
    if let Some(c) = &canary {
        let current = c
            .current_release
            .map_or("the current release".to_string(), |n| format!("v{n}"));
        text += &match c.release {
            Some(number) => format!(
                "canary:        v{number} gets {}%, {current} {}%\n",
                c.weight, c.current_weight
            ),
            None => format!(
                "canary:        the next push will get {}%, {current} {}%\n",
                c.weight, c.current_weight
            ),
        };
    }
    if let Some(l) = latest.filter(|l| Some(l.number) != v.release) {
        text += &format!(
            "last attempt:  v{} {} ({})\n",
            l.number, l.status, l.description
        );
    }
    text += &format!("url:           {}\n", v.url.as_deref().unwrap_or("-"));
    text += &format!(
        "direct url:    {}\n",
        v.direct_url.as_deref().unwrap_or("-")
    );
    if !v.domains.is_empty() {
        text += &format!("domains:       {}\n", v.domains.join(" "));
    }
    if !links.is_empty() {
        let each: Vec<String> = links
            .iter()
            .map(|l| format!("{} (as {})", l.dep, l.alias))
            .collect();
        text += &format!("links to:      {}\n", each.join(", "));
    }
    for what in &disabled {
        text += &format!("disabled:      {what}\n");
    }
    if !linked_from.is_empty() {
        let each: Vec<String> = linked_from
            .iter()
            .map(|l| format!("{} (as {})", l.app, l.alias))
            .collect();
        text += &format!("linked from:   {}\n", each.join(", "));
    }
    if !mounts.is_empty() {
        let each: Vec<String> = mounts
            .iter()
            .map(|m| format!("{}:{}", m.name, m.path))
            .collect();
        text += &format!("mounts:        {}\n", each.join(" "));
    }
    Ok(text)
}

pub async fn create(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let name = AppName::parse(&args.positional[0])?;
    super::common::check_app_quota(berth, who).await?;
    let repo = git::repo_path(&berth.config.repos_dir(), &name);
    if !berth
        .store
        .create_app(&name, &who.key_name)
        .await
        .map_err(internal)?
    {
        return Err(format!("app {name} already exists"));
    }
    let branch = berth.config.deploy_branch.clone();
    let made = tokio::task::spawn_blocking(move || git::ensure_bare_repo(&repo, &branch))
        .await
        .map_err(internal)?;
    if let Err(error) = made {
        if let Ok(Some(app)) = berth.store.app(&name).await {
            berth
                .store
                .delete_app(app.id)
                .await
                .or_log("removing an app whose repo could not be made");
        }
        return Err(internal(error));
    }
    if let Ok(Some(app)) = berth.store.app(&name).await {
        berth
            .store
            .note_event(
                Some(app.id),
                "app.created",
                &who.key_name,
                "ok",
                "apps:create",
            )
            .await;
    }
    Ok(format!(
        "-----> Created {name}\n       git remote add berth ssh://berth@{}:{}/{name}\n",
        berth.config.public_host,
        berth.config.ssh_listen.port()
    ))
}

pub async fn rename(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Own).await?;
    let new_name = AppName::parse(&args.positional[1])?;
    let app = ops::lock(berth, &app).await?;
    ops::rename(berth, app, &new_name, &who.key_name, out).await?;
    Ok(String::new())
}

pub async fn destroy(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Own).await?;
    if args.value("--confirm") != Some(app.name.as_str()) {
        return Err(format!(
            "this removes {0} for good: run `apps:destroy {0} --confirm {0}`",
            app.name
        ));
    }
    // A link whose maker may no longer operate this app does not hold it (finding 9).
    let mut dependents = Vec::new();
    for link in berth.store.links_to(app.id).await.map_err(internal)? {
        if ops::link_stands(berth, &link).await {
            dependents.push(link);
        }
    }
    if !dependents.is_empty() {
        let names: Vec<&str> = dependents.iter().map(|l| l.app.as_str()).collect();
        return Err(format!(
            "{} is linked from {}: apps:unlink {} {} first",
            app.name,
            names.join(", "),
            names[0],
            app.name
        ));
    }
    let app = ops::lock(berth, &app).await?;
    let gone = ops::destroy(berth, app, args.has("--keep-data"), &who.key_name).await?;
    let (name, containers, images) = (&gone.name, gone.containers, gone.images);
    let kept = if gone.kept_volumes.is_empty() && gone.removed_volumes.is_empty() {
        String::new()
    } else if !gone.kept_volumes.is_empty() {
        format!(
            "; kept volumes {} (--keep-data: they belong to no app now; `docker volume rm` removes them)",
            gone.kept_volumes.join(", ")
        )
    } else {
        format!("; removed volumes {}", gone.removed_volumes.join(", "))
    };
    Ok(format!(
        "-----> Destroyed {name}: {containers} containers, {images} images, repo and releases{kept}\n"
    ))
}

pub async fn labels(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let mut labels = labels_of(&app);
    let changes = &args.positional[1..];
    for change in changes {
        let (key, value) = change.split_once('=').ok_or_else(|| {
            format!("{change:?} is not key=value; usage: apps:labels APP key=value ...")
        })?;
        let valid = !key.is_empty()
            && key.len() <= 63
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
        if !valid {
            return Err(format!(
                "invalid label key {key:?}: letters, digits, '.', '_', '/' and '-'"
            ));
        }
        if value.is_empty() {
            labels.remove(key);
        } else {
            labels.insert(key.to_string(), value.to_string());
        }
    }
    if !changes.is_empty() {
        let json = serde_json::to_string(&labels).map_err(internal)?;
        berth
            .store
            .set_labels(app.id, &json)
            .await
            .map_err(internal)?;
        berth
            .store
            .note_event(
                Some(app.id),
                "labels",
                &who.key_name,
                "ok",
                &changes.join(" "),
            )
            .await;
    }
    if args.json() {
        return to_json(&labels);
    }
    Ok(labels.iter().map(|(k, v)| format!("{k}={v}\n")).collect())
}

pub async fn grant(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    give: bool,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Own).await?;
    let key = &args.positional[1];
    if berth
        .store
        .key_by_name(key)
        .await
        .map_err(internal)?
        .is_none()
    {
        return Err(format!("no key named {key}; see keys:list"));
    }
    let (kind, text) = if give {
        berth.store.grant(app.id, key).await.map_err(internal)?;
        ("grant", format!("{key} may now operate {}\n", app.name))
    } else {
        if !berth.store.revoke(app.id, key).await.map_err(internal)? {
            return Err(format!("{key} had no grant on {}", app.name));
        }
        (
            "revoke",
            format!("{key} may no longer operate {}\n", app.name),
        )
    };
    berth
        .store
        .note_event(Some(app.id), kind, &who.key_name, "ok", key)
        .await;
    Ok(text)
}
