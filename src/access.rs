//! Access rules: who may do what to an app. A caller's level on an app is ordered
//! (`Operate < Own < Admin`): granted keys operate, owners also own, admins do everything; an
//! operation needs a level, and the caller may when theirs is at least that.

use std::path::PathBuf;

use crate::domain::Role;
use crate::error::internal;
use crate::git;
use crate::names::AppName;
use crate::server::{Berth, Identity};
use crate::store::App;

/// What an operation needs, and what a caller holds on an app: ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// See and operate (scale, config, logs, ...): granted, owner or admin.
    Operate,
    /// Change who has the app (destroy, rename, grant): owner or admin.
    Own,
    /// Everything, on every app: admins.
    Admin,
}

/// The highest level `who` holds on `app`; none when it may not even see it.
pub async fn level(berth: &Berth, who: &Identity, app: &App) -> Result<Option<Access>, String> {
    if who.is_admin() {
        return Ok(Some(Access::Admin));
    }
    if app.owner == who.key_name {
        return Ok(Some(Access::Own));
    }
    let granted = berth
        .store
        .grants(app.id)
        .await
        .map_err(internal)?
        .contains(&who.key_name);
    Ok(granted.then_some(Access::Operate))
}

/// Whether `who` holds at least `access` on `app`.
pub async fn may(berth: &Berth, who: &Identity, app: &App, access: Access) -> Result<bool, String> {
    Ok(level(berth, who, app).await? >= Some(access))
}

/// The app named `raw_name` if `who` may do `access` to it; checked before anything is touched.
pub async fn app_for(
    berth: &Berth,
    who: &Identity,
    raw_name: &str,
    access: Access,
) -> Result<App, String> {
    let name = AppName::parse(raw_name)?;
    // A member is told the same thing whether the app does not exist or is not theirs: app
    // names are not enumerated through refusals (finding 27).
    let hidden = || format!("not allowed or not found: {name} is not an app you may operate");
    let Some(app) = berth.store.app(&name).await.map_err(internal)? else {
        return Err(if who.is_admin() {
            format!("app {name} not found")
        } else {
            hidden()
        });
    };
    if !may(berth, who, &app, access).await? {
        if !may(berth, who, &app, Access::Operate).await? {
            return Err(hidden());
        }
        return Err(format!(
            "not allowed: only the owner of {name} or an admin may do that"
        ));
    }
    Ok(app)
}

pub fn admin_only(who: &Identity) -> Result<(), String> {
    if who.is_admin() {
        Ok(())
    } else {
        Err("not allowed: only admins manage keys".to_string())
    }
}

/// Server-wide commands (disk, webhooks of every app): admins only.
pub fn admin_only_for(who: &Identity, command: &str) -> Result<(), String> {
    if who.is_admin() {
        Ok(())
    } else {
        Err(format!("not allowed: only admins may run {command}"))
    }
}

/// Pushing deploys: admins may push to any app, members to apps they own or were granted; a
/// push to an app that does not exist yet creates it, owned by the pusher.
pub async fn check_may_push(berth: &Berth, who: &Identity, app: &AppName) -> Result<(), String> {
    match berth.store.app(app).await.map_err(internal)? {
        Some(existing) if !may(berth, who, &existing, Access::Operate).await? => Err(format!(
            "not allowed: app {app} is not one you may push to (the name is taken); choose another name or ask an admin for access"
        )),
        _ => Ok(()),
    }
}

/// Members own at most `member_max_apps` apps (finding 28); admins have no limit.
pub async fn check_app_quota(berth: &Berth, who: &Identity) -> Result<(), String> {
    if who.is_admin() {
        return Ok(());
    }
    let owned = berth
        .store
        .apps_owned_by(&who.key_name)
        .await
        .map_err(internal)?;
    if owned >= berth.config.member_max_apps {
        return Err(format!(
            "you own {owned} apps already (member_max_apps = {}): destroy one or ask an admin",
            berth.config.member_max_apps
        ));
    }
    Ok(())
}

/// Whether the key named `key_name` is an admin now (the host CLI's reserved `host` is).
pub async fn key_is_admin(berth: &Berth, key_name: &str) -> bool {
    key_name == "host"
        || matches!(berth.store.key_by_name(key_name).await, Ok(Some(key)) if key.role == Role::Admin)
}

/// Whether the key named `key_name` exists and may operate `app` (admin, owner or granted):
/// for capabilities a key set up earlier (a sync source, a webhook) that act later in its name.
pub async fn key_may_operate(berth: &Berth, key_name: &str, app: &App) -> bool {
    if key_name == "host" {
        return true; // the host CLI (a reserved name) is the host's root
    }
    let Ok(Some(key)) = berth.store.key_by_name(key_name).await else {
        return false;
    };
    let who = Identity {
        key_name: key.name,
        role: key.role,
    };
    may(berth, &who, app, Access::Operate)
        .await
        .unwrap_or(false)
}

/// The bare repo of an app the caller may read (used for `git clone`).
pub async fn readable_repo(
    berth: &Berth,
    who: &Identity,
    raw_name: &str,
) -> Result<PathBuf, String> {
    let app = app_for(berth, who, raw_name, Access::Operate).await?;
    Ok(git::repo_path(&berth.config.repos_dir(), &app.name))
}

#[cfg(test)]
mod tests {
    use super::Access;

    #[test]
    fn levels_are_ordered_and_no_level_is_below_all() {
        assert!(Access::Operate < Access::Own && Access::Own < Access::Admin);
        assert!(None < Some(Access::Operate), "a stranger may not operate");
        assert!(
            Some(Access::Own) >= Some(Access::Operate),
            "an owner operates"
        );
        assert!(
            Some(Access::Operate) < Some(Access::Own),
            "a grantee does not own"
        );
    }
}
