//! Links between apps (`apps:link`): the `ALIAS_*` variables a link gives, whether it still
//! stands, and the dependents that follow a redeployed app (a plain work-list loop).

use std::collections::BTreeMap;

use super::deploy::{ConfigChange, redeploy_with_config};
use super::lock::LockedApp;
use crate::deploy::Scheduler;
use crate::output::Output;
use crate::server::Berth;
use crate::store::App;

/// The variables a link gives: `ALIAS_HOST` (DEP's name, which its web instances answer to on
/// the berth network), `ALIAS_PORT` (the port its web process listens on) and `ALIAS_URL`.
pub async fn link_values(
    berth: &Berth,
    scheduler: &Scheduler,
    dep: &App,
    alias: &str,
) -> Result<BTreeMap<String, String>, String> {
    let release = berth
        .store
        .running_release(dep.id)
        .await
        .map_err(|e| format!("internal error reading {}: {e}", dep.name))?
        .ok_or_else(|| {
            format!(
                "{} has no release running: push it first, then link to it",
                dep.name
            )
        })?;
    let port = scheduler.web_port(&release.image).await?;
    Ok(BTreeMap::from([
        (format!("{alias}_HOST"), dep.name.to_string()),
        (format!("{alias}_PORT"), port.to_string()),
        (
            format!("{alias}_URL"),
            format!("http://{}:{port}", dep.name),
        ),
    ]))
}

/// The names of the variables a link with this alias sets.
pub fn link_keys(alias: &str) -> [String; 3] {
    ["HOST", "PORT", "URL"].map(|k| format!("{alias}_{k}"))
}

/// After `dep` was deployed (or renamed): every app linked to it whose link variables no longer
/// match gets them as a new release (a config change, redeployed), and so on along the links:
/// a plain loop over a work list (each redeployed app's own dependents are looked at next), not
/// a recursion through the deploy. Runs for each dependent under its own lock, taken after the
/// previous one is released; link cycles are refused when made, and an app is redeployed at
/// most once per refresh.
pub async fn refresh_dependents(
    berth: &Berth,
    scheduler: &Scheduler,
    dep: &App,
    actor: &str,
    out: &Output,
) {
    let mut work = std::collections::VecDeque::from([dep.clone()]);
    let mut redeployed = std::collections::HashSet::from([dep.id]);
    while let Some(dep) = work.pop_front() {
        let Ok(links) = berth.store.links_to(dep.id).await else {
            continue;
        };
        for link in links {
            let Ok(name) = crate::names::AppName::parse(&link.app) else {
                continue;
            };
            let Ok(Some(app)) = berth.store.app(&name).await else {
                continue;
            };
            if redeployed.contains(&app.id) {
                continue;
            }
            let Ok(app) = super::lock::lock(berth, &app).await else {
                continue;
            };
            match relink(berth, scheduler, &app, &dep, &link.alias, actor, out).await {
                Ok(true) => {
                    redeployed.insert(app.id);
                    work.push_back(App::clone(&app));
                }
                Ok(false) => {}
                Err(message) => out.error(&format!(
                    "{} keeps its old {}_* values: {message}",
                    app.name, link.alias
                )),
            }
        }
    }
}

/// Puts the current link values of `dep` into `app`'s config; redeploys `app` when they changed
/// (true). The apps linked to `app` are the caller's to refresh.
pub async fn relink(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &LockedApp,
    dep: &App,
    alias: &str,
    actor: &str,
    out: &Output,
) -> Result<bool, String> {
    let store = &berth.store;
    let internal = |e: sqlx::Error| format!("internal error: {e}");
    let values = link_values(berth, scheduler, dep, alias).await?;
    let old = store.config(app.id).await.map_err(internal)?;
    let mut new = old.clone();
    new.extend(values);
    if new == old {
        return Ok(false);
    }
    let description = format!("link {alias} -> {}", dep.name);
    let change = ConfigChange {
        old: &old,
        new: &new,
        description: &description,
    };
    redeploy_with_config(berth, scheduler, app, change, actor, out).await
}
