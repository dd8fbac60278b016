//! `config:*`: config vars reach the app as environment variables. Values never go to logs or
//! events (events name the keys only).

use std::collections::BTreeMap;

use super::common::{Access, Args, app_for, internal, to_json};
use crate::ops;
use crate::output::Output;
use crate::server::{Berth, Identity};
use crate::store::App;

fn check_key(key: &str) -> Result<(), String> {
    let mut bytes = key.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') && key.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "invalid config key {key:?}: letters, digits and '_', not starting with a digit"
        ))
    }
}

pub async fn set(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let mut changes = BTreeMap::new();
    for pair in &args.positional[1..] {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            format!(
                "{key:?} is not KEY=VALUE; usage: config:set APP KEY=VALUE ...",
                key = pair.split('=').next().unwrap_or("")
            )
        })?;
        check_key(key)?;
        if key == "PORT" {
            return Err("PORT is set by berth for the web process".to_string());
        }
        if key == "DYNO" {
            return Err("DYNO is set by berth for each instance (web.1, web.2, ...)".to_string());
        }
        changes.insert(key.to_string(), value.to_string());
    }
    let keys: Vec<&str> = changes.keys().map(String::as_str).collect();
    let description = format!("config:set {}", keys.join(" "));
    change(berth, who, &app, args, &description, out, |config| {
        config.extend(changes.clone())
    })
    .await
}

pub async fn unset(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let keys = &args.positional[1..];
    for key in keys {
        check_key(key)?;
    }
    let description = format!("config:unset {}", keys.join(" "));
    change(berth, who, &app, args, &description, out, |config| {
        for key in keys {
            config.remove(key);
        }
    })
    .await
}

/// Applies `edit` to the app's config: stored, then (unless `--no-restart`) released and
/// deployed. If the deploy fails, the old config is put back and the old release keeps running.
async fn change(
    berth: &Berth,
    who: &Identity,
    app: &App,
    args: &Args,
    description: &str,
    out: &Output,
    edit: impl FnOnce(&mut BTreeMap<String, String>),
) -> Result<String, String> {
    let app = ops::lock(berth, app).await?;
    let app = &app;
    let store = &berth.store;
    let old = store.config(app.id).await.map_err(internal)?;
    let mut new = old.clone();
    edit(&mut new);
    if new == old {
        return Ok("no change\n".to_string());
    }
    let running = store.running_release(app.id).await.map_err(internal)?;
    if args.has("--no-restart") || app.stopped || running.is_none() {
        store.replace_config(app.id, &new).await.map_err(internal)?;
        store
            .note_event(Some(app.id), "config", &who.key_name, "ok", description)
            .await;
        return Ok(format!(
            "-----> {description}: stored; it applies at the next release\n"
        ));
    }
    ops::refuse_during_canary(berth, app).await?;
    let scheduler = berth.scheduler().await?;
    let change = ops::ConfigChange {
        old: &old,
        new: &new,
        description,
    };
    if ops::redeploy_with_config(berth, &scheduler, app, change, &who.key_name, out).await? {
        ops::refresh_dependents(berth, &scheduler, app, &who.key_name, out).await;
    }
    Ok(String::new())
}

pub async fn get(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let key = &args.positional[1];
    let config = berth.store.config(app.id).await.map_err(internal)?;
    config
        .get(key)
        .map(|v| format!("{v}\n"))
        .ok_or_else(|| format!("{key} is not set on {}", app.name))
}

pub async fn show(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let config = berth.store.config(app.id).await.map_err(internal)?;
    let reveal = args.has("--reveal");
    let shown: BTreeMap<&String, String> = config
        .iter()
        .map(|(k, v)| {
            (
                k,
                if reveal {
                    v.clone()
                } else {
                    "********".to_string()
                },
            )
        })
        .collect();
    if args.json() {
        return to_json(&shown);
    }
    let width = shown.keys().map(|k| k.len()).max().unwrap_or(0);
    Ok(shown
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect())
}
