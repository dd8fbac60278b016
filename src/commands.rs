//! Operator commands (`ssh berth@HOST apps:list`, or `berth apps:list` on the host): one parser,
//! one implementation, the same output and rules either way.
//!
//! **Architecture Invariant:** every command checks who may do it before it touches anything.

use std::path::PathBuf;

use serde::Serialize;

use crate::git;
use crate::names::AppName;
use crate::server::{Berth, Identity};
use crate::store::{App, Release};

/// What a command produced: stdout, stderr and the exit status.
#[derive(Debug, Default)]
pub struct CommandResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: u32,
}

impl CommandResult {
    fn ok(stdout: String) -> CommandResult {
        CommandResult {
            stdout: stdout.into_bytes(),
            ..Default::default()
        }
    }
    fn fail(message: &str) -> CommandResult {
        CommandResult {
            stderr: format!(" !     {message}\n").into_bytes(),
            code: 1,
            ..Default::default()
        }
    }
}

const HELP: &str = "\
Usage: ssh berth@HOST <command> [args]   (or `berth <command>` on the host)

  apps:list [--json]        list the apps you can see, with state, release and URL
  apps:info APP [--json]    one app: state, owner, deploy branch, current release, URL
  help                      this text

Deploy with: git remote add berth ssh://berth@HOST:2222/APP && git push berth main
";

pub async fn run(berth: &Berth, who: &Identity, args: &[String]) -> CommandResult {
    let Some((name, rest)) = args.split_first() else {
        return CommandResult::ok(HELP.to_string());
    };
    let json = rest.iter().any(|a| a == "--json");
    let positional: Vec<&str> = rest
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    if let Some(flag) = rest.iter().find(|a| a.starts_with("--") && *a != "--json") {
        return CommandResult::fail(&format!("unknown option {flag} for {name}; see `help`"));
    }
    let result = match (name.as_str(), positional.as_slice()) {
        ("help" | "--help" | "-h", _) => Ok(HELP.to_string()),
        ("apps:list", []) => apps_list(berth, who, json).await,
        ("apps:info", [app]) => apps_info(berth, who, app, json).await,
        ("apps:list" | "apps:info", _) => Err(format!("wrong arguments for {name}; see `help`")),
        _ => Err(format!("unknown command {name:?}; see `help`")),
    };
    match result {
        Ok(text) => CommandResult::ok(text),
        Err(message) => CommandResult::fail(&message),
    }
}

/// The bare repo of an app the caller may read (used for `git clone`).
pub async fn readable_repo(
    berth: &Berth,
    who: &Identity,
    raw_name: &str,
) -> Result<PathBuf, String> {
    let app = visible_app(berth, who, raw_name).await?;
    Ok(git::repo_path(
        &berth.config.repos_dir(),
        &AppName::parse(&app.name)?,
    ))
}

fn may_see(who: &Identity, app: &App) -> bool {
    who.is_admin() || app.owner == who.key_name
}

/// Pushing deploys: admins may push to any app, members to apps they own; a push to an app
/// that does not exist yet creates it, owned by the pusher.
pub async fn check_may_push(berth: &Berth, who: &Identity, app: &AppName) -> Result<(), String> {
    match berth.store.app(app).await.map_err(internal)? {
        Some(existing) if !may_see(who, &existing) => Err(format!(
            "not allowed: app {app} belongs to another key; ask an admin for access"
        )),
        _ => Ok(()),
    }
}

/// The app, if it exists and the caller may see it; the same answer otherwise, so names of
/// other people's apps do not leak.
async fn visible_app(berth: &Berth, who: &Identity, raw_name: &str) -> Result<App, String> {
    let name = AppName::parse(raw_name)?;
    match berth.store.app(&name).await.map_err(internal)? {
        Some(app) if may_see(who, &app) => Ok(app),
        _ => Err(format!("app {name} not found")),
    }
}

fn internal(error: impl std::fmt::Display) -> String {
    tracing::error!(%error, "command failed");
    "internal error: see the berth server log".to_string()
}

/// The `--json` shape of an app: stable field names.
#[derive(Serialize)]
struct AppView {
    name: String,
    state: String,
    owner: String,
    deploy_branch: String,
    release: Option<i64>,
    url: Option<String>,
    created_at: String,
    updated_at: String,
    current_release: Option<Release>,
}

async fn view(berth: &Berth, app: App) -> Result<AppView, String> {
    let running = berth
        .store
        .running_release(app.id)
        .await
        .map_err(internal)?;
    let url = running
        .as_ref()
        .and_then(|r| r.host_port)
        .and_then(|p| u16::try_from(p).ok())
        .map(|p| berth.url(p));
    Ok(AppView {
        deploy_branch: app
            .deploy_branch
            .clone()
            .unwrap_or_else(|| berth.config.deploy_branch.clone()),
        release: running.as_ref().map(|r| r.number),
        url,
        name: app.name,
        state: app.state,
        owner: app.owner,
        created_at: app.created_at,
        updated_at: app.updated_at,
        current_release: running,
    })
}

async fn apps_list(berth: &Berth, who: &Identity, json: bool) -> Result<String, String> {
    let mut views = Vec::new();
    for app in berth.store.apps().await.map_err(internal)? {
        if may_see(who, &app) {
            views.push(view(berth, app).await?);
        }
    }
    if json {
        return serde_json::to_string_pretty(&views)
            .map(|s| s + "\n")
            .map_err(internal);
    }
    let mut text = format!(
        "{:<24} {:<10} {:<8} {:<12} {}\n",
        "NAME", "STATE", "RELEASE", "OWNER", "URL"
    );
    for v in &views {
        let release = v
            .release
            .map(|n| format!("v{n}"))
            .unwrap_or_else(|| "-".into());
        text += &format!(
            "{:<24} {:<10} {:<8} {:<12} {}\n",
            v.name,
            v.state,
            release,
            v.owner,
            v.url.as_deref().unwrap_or("-")
        );
    }
    Ok(text)
}

async fn apps_info(
    berth: &Berth,
    who: &Identity,
    raw_name: &str,
    json: bool,
) -> Result<String, String> {
    let app = visible_app(berth, who, raw_name).await?;
    let latest = berth.store.latest_release(app.id).await.map_err(internal)?;
    let v = view(berth, app).await?;
    if json {
        return serde_json::to_string_pretty(&v)
            .map(|s| s + "\n")
            .map_err(internal);
    }
    let mut text = format!("=== {}\n", v.name);
    text += &format!("state:         {}\n", v.state);
    text += &format!("owner:         {}\n", v.owner);
    text += &format!("deploy branch: {}\n", v.deploy_branch);
    match &v.current_release {
        Some(r) => {
            text += &format!(
                "release:       v{} ({}, {}, by {} at {})\n",
                r.number,
                &r.commit_sha[..r.commit_sha.len().min(7)],
                r.image,
                r.created_by,
                r.created_at
            );
        }
        None => text += "release:       none running\n",
    }
    if let Some(l) = latest.filter(|l| Some(l.number) != v.release) {
        text += &format!(
            "last attempt:  v{} {} ({})\n",
            l.number, l.status, l.description
        );
    }
    text += &format!("url:           {}\n", v.url.as_deref().unwrap_or("-"));
    Ok(text)
}

/// Registers a key; registering the same key under the same name and role again changes nothing.
pub async fn add_key(
    berth: &Berth,
    name: &str,
    role: &str,
    openssh_line: &str,
) -> Result<String, String> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if !name_ok {
        return Err(format!(
            "invalid key name {name:?}: use letters, digits, '.', '_', '@' and '-'"
        ));
    }
    if role != "admin" && role != "member" {
        return Err(format!("unknown role {role:?}: use admin or member"));
    }
    let line = openssh_line
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let fingerprint = crate::ssh::fingerprint_of(line)?;
    if let Some(existing) = berth
        .store
        .key_by_fingerprint(&fingerprint)
        .await
        .map_err(internal)?
    {
        if existing.name == name && existing.role == role {
            return Ok(format!(
                "key {name} ({fingerprint}) is already registered as {role}"
            ));
        }
        return Err(format!(
            "this key is already registered as {} ({})",
            existing.name, existing.role
        ));
    }
    if berth
        .store
        .key_by_name(name)
        .await
        .map_err(internal)?
        .is_some()
    {
        return Err(format!("a different key is already named {name}"));
    }
    berth
        .store
        .add_key(name, &fingerprint, line, role)
        .await
        .map_err(internal)?;
    let _ = berth
        .store
        .record_event(
            None,
            "key.added",
            "host",
            "ok",
            &format!("{name} ({role}) {fingerprint}"),
        )
        .await;
    Ok(format!("added key {name} ({fingerprint}) as {role}"))
}
