//! `domains:add`, `domains:remove`, `domains:list`: the host names the HTTP router serves an app
//! at, besides `APP.<base_domain>`.

use super::common::{Access, Args, app_for, internal, to_json};
use crate::names::is_host_name;
use crate::server::{Berth, Identity};

/// A domain as stored: lower case, no trailing dot.
fn spelled(raw: &str) -> String {
    raw.trim_end_matches('.').to_ascii_lowercase()
}

fn domain_arg(berth: &Berth, raw: &str) -> Result<String, String> {
    let domain = spelled(raw);
    if !is_host_name(&domain) || !domain.contains('.') {
        return Err(format!(
            "{raw:?} is not a domain name: use dot-separated labels of letters, digits and '-'"
        ));
    }
    // A name whose last label is all digits is an IP address (no top-level domain is numeric).
    let ip_like = domain.parse::<std::net::IpAddr>().is_ok()
        || domain
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    if ip_like {
        return Err(format!("{domain} is an IP address, not a domain name"));
    }
    // The server's own name is the server's, not an app's.
    let public = berth
        .config
        .public_host
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if domain == public {
        return Err(format!(
            "{domain} is the server's own name (public_host): use a domain of your own"
        ));
    }
    let base = berth.config.base_domain();
    if domain == base || domain.ends_with(&format!(".{base}")) {
        return Err(format!(
            "{domain} is under the base domain {base}, where APP.{base} already reaches each app"
        ));
    }
    Ok(domain)
}

pub async fn add(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let domain = domain_arg(berth, &args.positional[1])?;
    match berth.store.domain_owner(&domain).await.map_err(internal)? {
        Some(owner) if owner == app.name.as_str() => {
            return Ok(format!("-----> {domain} already routes to {}\n", app.name));
        }
        Some(owner) => {
            return Err(format!(
                "{domain} already routes to another app{}",
                if who.is_admin() {
                    format!(" ({owner})")
                } else {
                    String::new()
                }
            ));
        }
        None => {}
    }
    // Whoever claims a name first would get it, and a certificate for it (finding 11): a
    // member's domain waits until an admin, who knows who owns it, approves it.
    let approved = who.is_admin();
    berth
        .store
        .add_domain(app.id, &domain, approved)
        .await
        .map_err(internal)?;
    berth.reload_domains().await?;
    let outcome = if approved { "ok" } else { "pending" };
    berth
        .store
        .note_event(Some(app.id), "domains:add", &who.key_name, outcome, &domain)
        .await;
    if !approved {
        return Ok(format!(
            "-----> {domain} waits for an admin's approval before it routes to {0}: ask an admin to run `domains:approve {0} {domain}`\n",
            app.name
        ));
    }
    Ok(format!("-----> {domain} now routes to {}\n", app.name))
}

pub async fn approve(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    super::common::admin_only_for(who, "domains:approve")?;
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let domain = spelled(&args.positional[1]);
    if !berth
        .store
        .approve_domain(app.id, &domain)
        .await
        .map_err(internal)?
    {
        return Err(format!(
            "{domain} is not a pending domain of {} (see domains:list {})",
            app.name, app.name
        ));
    }
    berth.reload_domains().await?;
    berth
        .store
        .note_event(
            Some(app.id),
            "domains:approve",
            &who.key_name,
            "ok",
            &domain,
        )
        .await;
    Ok(format!("-----> {domain} now routes to {}\n", app.name))
}

pub async fn remove(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let domain = spelled(&args.positional[1]);
    if !berth
        .store
        .remove_domain(app.id, &domain)
        .await
        .map_err(internal)?
    {
        return Err(format!("{domain} is not a domain of {}", app.name));
    }
    berth.reload_domains().await?;
    berth
        .store
        .note_event(Some(app.id), "domains:remove", &who.key_name, "ok", &domain)
        .await;
    Ok(format!(
        "-----> {domain} no longer routes to {}\n",
        app.name
    ))
}

#[derive(serde::Serialize)]
struct Listed {
    app: String,
    /// `APP.<base_domain>`, always served.
    default: String,
    custom: Vec<String>,
    /// Added by a member, waiting for `domains:approve` (not routed, not certified).
    pending: Vec<String>,
    router: Option<String>,
}

pub async fn list(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let listed = Listed {
        default: format!("{}.{}", app.name, berth.config.base_domain()),
        custom: berth.domains_of(&app.name),
        pending: berth
            .store
            .pending_domains(app.id)
            .await
            .map_err(internal)?,
        router: berth.config.http_listen().map(|a| a.to_string()),
        app: app.name.to_string(),
    };
    if args.json() {
        return to_json(&listed);
    }
    let mut text = format!("{}\n", listed.default);
    for domain in &listed.custom {
        text += &format!("{domain}\n");
    }
    for domain in &listed.pending {
        text += &format!("{domain} (waits for an admin: domains:approve)\n");
    }
    if listed.router.is_none() {
        text += "(the HTTP router is off: http_listen)\n";
    }
    Ok(text)
}
