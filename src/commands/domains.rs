//! `domains:add`, `domains:remove`, `domains:list`: the host names the HTTP router serves an app
//! at, besides `APP.<base_domain>`.

use super::{Access, Args, app_for, internal, to_json};
use crate::names::is_host_name;
use crate::server::{Berth, Identity};

fn domain_arg(berth: &Berth, raw: &str) -> Result<String, String> {
    let domain = raw.trim_end_matches('.').to_ascii_lowercase();
    if !is_host_name(&domain) || !domain.contains('.') {
        return Err(format!(
            "{raw:?} is not a domain name: use dot-separated labels of letters, digits and '-'"
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
        Some(owner) if owner == app.name => {
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
    berth
        .store
        .add_domain(app.id, &domain)
        .await
        .map_err(internal)?;
    berth.reload_domains().await?;
    let _ = berth
        .store
        .record_event(Some(app.id), "domains:add", &who.key_name, "ok", &domain)
        .await;
    Ok(format!("-----> {domain} now routes to {}\n", app.name))
}

pub async fn remove(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let domain = args.positional[1]
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if !berth
        .store
        .remove_domain(app.id, &domain)
        .await
        .map_err(internal)?
    {
        return Err(format!("{domain} is not a domain of {}", app.name));
    }
    berth.reload_domains().await?;
    let _ = berth
        .store
        .record_event(Some(app.id), "domains:remove", &who.key_name, "ok", &domain)
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
    router: Option<String>,
}

pub async fn list(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let listed = Listed {
        default: format!("{}.{}", app.name, berth.config.base_domain()),
        custom: berth.domains_of(&app.name),
        router: berth.config.http_listen().map(|a| a.to_string()),
        app: app.name,
    };
    if args.json() {
        return to_json(&listed);
    }
    let mut text = format!("{}\n", listed.default);
    for domain in &listed.custom {
        text += &format!("{domain}\n");
    }
    if listed.router.is_none() {
        text += "(the HTTP router is off: http_listen)\n";
    }
    Ok(text)
}
