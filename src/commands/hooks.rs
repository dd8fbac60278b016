//! `webhooks:*` and `git:sync`. Outbound webhooks of one app need the right to operate it;
//! server-wide ones (no `--app`) are admins'. `git:sync` from a path on this host (or
//! `file://`) is admins' only: members could otherwise read any repository on the server.

use super::common::{Access, Args, app_for, internal, to_json};
use crate::output::Output;
use crate::pipeline::{self, SyncSource};
use crate::server::{Berth, Identity};
use crate::store::Webhook;
use crate::webhooks;

/// Whether `who` may see and change this webhook.
async fn may_manage(berth: &Berth, who: &Identity, hook: &Webhook) -> Result<bool, String> {
    if who.is_admin() {
        return Ok(true);
    }
    match &hook.app {
        None => Ok(false),
        Some(app) => Ok(app_for(berth, who, app, Access::Operate).await.is_ok()),
    }
}

pub async fn add(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let url = &args.positional[0];
    let app = match args.value("--app") {
        Some(name) => Some(app_for(berth, who, name, Access::Operate).await?),
        None if who.is_admin() => None,
        None => {
            return Err(
                "not allowed: only admins add webhooks for every app; add --app APP".to_string(),
            );
        }
    };
    webhooks::check_url(url)?;
    let events = args.value("--events").unwrap_or("*");
    for event in events.split(',') {
        if event != "*" && webhooks::WebhookEvent::parse(event).is_none() {
            return Err(format!(
                "unknown event {event:?}; events: {} (or *)",
                webhooks::WebhookEvent::ALL
                    .map(webhooks::WebhookEvent::name)
                    .join(", ")
            ));
        }
    }
    let secret = webhooks::random_secret();
    // A URL that does not answer is refused before anything is stored.
    let ping = webhooks::payload(
        "ping",
        app.as_ref().map(|a| a.name.as_str()),
        &who.key_name,
        "webhooks:add",
        &crate::metrics::rfc3339(std::time::SystemTime::now()),
    );
    let internal_ok = who.is_admin() || berth.config.allow_private_destinations;
    match webhooks::post(url, "ping", 0, &secret, &ping, internal_ok).await {
        Ok(code) if (200..300).contains(&code) => {}
        Ok(code) => {
            return Err(format!(
                "{url} answered the ping with HTTP {code}: nothing was added (it must answer 2xx)"
            ));
        }
        Err(message) if message.starts_with("refused") => {
            return Err(format!("{message}: nothing was added"));
        }
        Err(message) => {
            return Err(format!(
                "{url} did not answer the ping ({message}): nothing was added"
            ));
        }
    }
    let id = berth
        .store
        .add_webhook(
            url,
            events,
            app.as_ref().map(|a| a.id),
            &secret,
            &who.key_name,
        )
        .await
        .map_err(internal)?;
    let scope = app
        .as_ref()
        .map_or("every app".to_string(), |a| a.name.to_string());
    Ok(format!(
        "-----> Added webhook {id}: {events} of {scope} to {url}\n       secret (shown once): {secret}\n       each POST has X-Berth-Signature: sha256=HMAC-SHA256(secret, body) in hex\n"
    ))
}

pub async fn list(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let mut visible = Vec::new();
    for hook in berth.store.webhooks().await.map_err(internal)? {
        if may_manage(berth, who, &hook).await? {
            visible.push(hook);
        }
    }
    if args.json() {
        return to_json(&visible);
    }
    if visible.is_empty() {
        return Ok("no webhooks (webhooks:add URL [--app APP])\n".to_string());
    }
    let mut text = String::from("ID  APP  EVENTS  URL\n");
    for hook in &visible {
        text += &format!(
            "{}  {}  {}  {}\n",
            hook.id,
            hook.app.as_deref().unwrap_or("*"),
            hook.events,
            hook.url
        );
    }
    Ok(text)
}

async fn webhook_for(berth: &Berth, who: &Identity, raw: &str) -> Result<Webhook, String> {
    let id: i64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a webhook id; see webhooks:list"))?;
    let hook = berth
        .store
        .webhook(id)
        .await
        .map_err(internal)?
        .ok_or_else(|| format!("no webhook {id}; see webhooks:list"))?;
    if !may_manage(berth, who, &hook).await? {
        return Err(format!("not allowed: webhook {id} is not one of yours"));
    }
    Ok(hook)
}

pub async fn remove(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let hook = webhook_for(berth, who, &args.positional[0]).await?;
    berth
        .store
        .remove_webhook(hook.id)
        .await
        .map_err(internal)?;
    Ok(format!(
        "-----> Removed webhook {} ({})\n",
        hook.id, hook.url
    ))
}

pub async fn deliveries(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let limit = args.count("-n", 20)?;
    let hook = match args.positional.first() {
        Some(raw) => Some(webhook_for(berth, who, raw).await?),
        None if who.is_admin() => None,
        None => return Err("name a webhook: webhooks:deliveries ID".to_string()),
    };
    let deliveries = berth
        .store
        .deliveries(hook.map(|h| h.id), limit)
        .await
        .map_err(internal)?;
    if args.json() {
        return to_json(&deliveries);
    }
    let mut text = String::from("ID  WEBHOOK  EVENT  APP  STATUS  ATTEMPTS  LAST ANSWER  AT\n");
    for d in &deliveries {
        text += &format!(
            "{}  {}  {}  {}  {}  {}  {}  {}\n",
            d.id,
            d.webhook_id,
            d.event,
            d.app.as_deref().unwrap_or("-"),
            d.status,
            d.attempts,
            if d.response.is_empty() {
                "-"
            } else {
                &d.response
            },
            d.updated_at
        );
    }
    Ok(text)
}

/// A git ref as given to `git fetch`: no option-looking or path-escaping names.
fn check_ref(git_ref: &str) -> Result<(), String> {
    let ok = !git_ref.is_empty()
        && git_ref.len() <= 200
        && !git_ref.starts_with('-')
        && !git_ref.contains("..")
        && git_ref
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{git_ref:?} is not a branch, tag or commit name (letters, digits, '.', '_', '/', '-')"
        ))
    }
}

/// A repository URL git may fetch: https, http, ssh, git, or `user@host:path`; a local path or
/// `file://` only for admins.
fn check_repo_url(url: &str, who: &Identity) -> Result<(), String> {
    if url.is_empty()
        || url.starts_with('-')
        || url.len() > 2000
        || url.chars().any(char::is_control)
    {
        return Err(format!("{url:?} is not a repository URL"));
    }
    let local = url.starts_with('/') || url.starts_with("file://");
    let remote = ["https://", "http://", "ssh://", "git://"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
        || url
            .split_once(':')
            .is_some_and(|(host, _)| host.contains('@') && !host.contains('/'));
    if local && !who.is_admin() {
        return Err(
            "not allowed: only admins sync from a path on this host; use an https:// or ssh:// URL"
                .to_string(),
        );
    }
    if local || remote {
        Ok(())
    } else {
        Err(format!(
            "{url:?} is not a repository URL (https://, ssh://, git://, user@host:path)"
        ))
    }
}

pub async fn sync(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let url = &args.positional[1];
    check_repo_url(url, who)?;
    let git_ref = args.positional.get(2).map(String::as_str);
    if let Some(git_ref) = git_ref {
        check_ref(git_ref)?;
    }
    let source = SyncSource { url, git_ref };
    let allow_internal = who.is_admin() || berth.config.allow_private_destinations;
    let outcome = pipeline::sync(
        berth,
        &app,
        Some(source),
        None,
        &who.key_name,
        allow_internal,
        out,
    )
    .await?;
    Ok(format!("-----> {outcome}\n"))
}

pub async fn inbound(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let Some(address) = berth.config.http_listen() else {
        return Err(
            "inbound webhooks arrive through the HTTP router, and http_listen is off".to_string(),
        );
    };
    let Some(source) = berth.store.sync(app.id).await.map_err(internal)? else {
        return Err(format!(
            "{} has no sync source: git:sync {} URL [REF] first (the webhook runs that sync)",
            app.name, app.name
        ));
    };
    let token = webhooks::random_secret();
    berth
        .store
        .set_sync_token(app.id, &webhooks::token_hash(&token))
        .await
        .map_err(internal)?;
    berth.reload_inbound().await?;
    berth
        .store
        .note_event(
            Some(app.id),
            "sync",
            &who.key_name,
            "webhook",
            "new inbound token",
        )
        .await;
    let url = format!(
        "{}{}{}/{token}",
        berth.url(address.port()),
        webhooks::INBOUND_PREFIX,
        app.name
    );
    Ok(format!(
        "{url}\n       POST to it (a GitHub or Gitea push webhook, or an empty body) to deploy {} of {}; running this again replaces the token\n",
        source.git_ref.as_deref().unwrap_or("HEAD"),
        source.url
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_and_urls_are_checked() {
        let admin = Identity {
            key_name: "a".into(),
            role: crate::domain::Role::Admin,
        };
        let member = Identity {
            key_name: "m".into(),
            role: crate::domain::Role::Member,
        };
        assert!(check_ref("main").is_ok() && check_ref("release/1.2").is_ok());
        for bad in ["", "-b", "a..b", "a b", "a;b"] {
            assert!(check_ref(bad).is_err(), "{bad}");
        }
        assert!(check_repo_url("https://github.com/a/b.git", &member).is_ok());
        assert!(check_repo_url("git@github.com:a/b.git", &member).is_ok());
        assert!(check_repo_url("/srv/git/b.git", &admin).is_ok());
        assert!(check_repo_url("/srv/git/b.git", &member).is_err());
        assert!(check_repo_url("file:///srv/b.git", &member).is_err());
        assert!(check_repo_url("--upload-pack=touch /tmp/x", &admin).is_err());
        assert!(check_repo_url("ext::sh -c touch% /tmp/x", &admin).is_err());
        assert!(check_repo_url("relative/path", &admin).is_err());
    }
}
