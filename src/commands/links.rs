//! `apps:link` / `apps:unlink`: an app gets the variables that reach another (walm's dependency
//! injection, Heroku's add-on attachments): `NAME_URL`, `NAME_HOST`, `NAME_PORT`, as config
//! vars of a new release. When the other app's address changes, `ops::refresh_dependents`
//! redeploys every app linked to it.

use std::collections::{HashMap, HashSet};

use super::common::{Access, Args, app_for, internal};
use crate::ops;
use crate::output::Output;
use crate::server::{Berth, Identity};
use crate::store::LogFailure;

/// `DEP` upper-cased, `-` as `_`; or the `--as` name, which must look like an env var prefix.
fn alias_for(dep: &str, given: Option<&str>) -> Result<String, String> {
    let alias = given.map_or_else(
        || dep.to_ascii_uppercase().replace('-', "_"),
        str::to_string,
    );
    let ok = alias.len() <= 60
        && alias.as_bytes().first().is_some_and(u8::is_ascii_uppercase)
        && alias
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(alias)
    } else {
        Err(format!(
            "--as {alias:?} must be upper-case letters, digits and '_', starting with a letter"
        ))
    }
}

/// Whether adding app → dep closes a cycle (dep already reaches app through links).
fn closes_cycle(edges: &[(i64, i64)], app: i64, dep: i64) -> bool {
    let mut next: HashMap<i64, Vec<i64>> = HashMap::new();
    for (from, to) in edges {
        next.entry(*from).or_default().push(*to);
    }
    let (mut stack, mut seen) = (vec![dep], HashSet::new());
    while let Some(node) = stack.pop() {
        if node == app {
            return true;
        }
        if seen.insert(node) {
            stack.extend(next.get(&node).into_iter().flatten());
        }
    }
    false
}

pub async fn link(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    // Linking hands APP the way to DEP: the caller must be allowed to operate both.
    let dep = app_for(berth, who, &args.positional[1], Access::Operate).await?;
    if app.id == dep.id {
        return Err(format!("{} cannot link to itself", app.name));
    }
    let alias = alias_for(&dep.name, args.value("--as"))?;
    let app = ops::lock(berth, &app).await?;
    let store = &berth.store;
    let links = store.links_from(app.id).await.map_err(internal)?;
    if let Some(existing) = links.iter().find(|l| l.dep == dep.name.as_str()) {
        return Err(format!(
            "{} is already linked to {} as {}: apps:unlink {} {} first",
            app.name, dep.name, existing.alias, app.name, dep.name
        ));
    }
    if let Some(existing) = links.iter().find(|l| l.alias == alias) {
        return Err(format!(
            "{} already uses {alias} for {}: pick another with --as",
            app.name, existing.dep
        ));
    }
    let edges = store.link_edges().await.map_err(internal)?;
    if closes_cycle(&edges, app.id, dep.id) {
        return Err(format!(
            "{} already depends on {} through links: a cycle would redeploy them forever",
            dep.name, app.name
        ));
    }
    let scheduler = berth.scheduler().await?;
    // The values first: a DEP with nothing running is refused before anything is recorded.
    ops::link_values(berth, &scheduler, &dep, &alias).await?;
    store
        .add_link(app.id, dep.id, &alias, &who.key_name)
        .await
        .map_err(internal)?;
    match ops::relink(berth, &scheduler, &app, &dep, &alias, &who.key_name, out).await {
        Ok(true) => ops::refresh_dependents(berth, &scheduler, &app, &who.key_name, out).await,
        Ok(false) => {}
        Err(message) => {
            store
                .remove_link(app.id, dep.id)
                .await
                .or_log("taking back a link that failed");
            return Err(format!("{message}; {} is not linked", app.name));
        }
    }
    let [host, port, url] = ops::link_keys(&alias);
    Ok(format!(
        "-----> Linked {} to {}: {url}, {host}, {port}\n",
        app.name, dep.name
    ))
}

pub async fn unlink(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let dep_name = crate::names::AppName::parse(&args.positional[1])?;
    let app = ops::lock(berth, &app).await?;
    let store = &berth.store;
    let links = store.links_from(app.id).await.map_err(internal)?;
    let Some(link) = links.into_iter().find(|l| l.dep == dep_name.as_str()) else {
        return Err(format!("{} is not linked to {dep_name}", app.name));
    };
    let dep = store
        .app(&dep_name)
        .await
        .map_err(internal)?
        .ok_or_else(|| format!("app {dep_name} not found"))?;
    let old = store.config(app.id).await.map_err(internal)?;
    let mut new = old.clone();
    for key in ops::link_keys(&link.alias) {
        new.remove(&key);
    }
    store.remove_link(app.id, dep.id).await.map_err(internal)?;
    if new != old {
        let scheduler = berth.scheduler().await?;
        let description = format!("unlink {}", dep.name);
        let change = ops::ConfigChange {
            old: &old,
            new: &new,
            description: &description,
        };
        match ops::redeploy_with_config(berth, &scheduler, &app, change, &who.key_name, out).await {
            Ok(true) => {
                ops::refresh_dependents(berth, &scheduler, &app, &who.key_name, out).await;
            }
            Ok(false) => {}
            Err(message) => {
                store
                    .add_link(app.id, dep.id, &link.alias, &link.created_by)
                    .await
                    .or_log("putting back a link");
                return Err(format!("{message}; it stays linked"));
            }
        }
    }
    Ok(format!("-----> Unlinked {} from {}\n", app.name, dep.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_cycles() {
        assert_eq!(alias_for("my-db", None).unwrap(), "MY_DB");
        assert_eq!(alias_for("db", Some("PRIMARY")).unwrap(), "PRIMARY");
        assert!(alias_for("db", Some("lower")).is_err());
        assert!(alias_for("db", Some("1X")).is_err());
        assert!(alias_for("db", Some("A-B")).is_err());
        // 1 → 2 → 3: linking 3 → 1 closes a cycle, 1 → 3 does not.
        let edges = [(1, 2), (2, 3)];
        assert!(closes_cycle(&edges, 3, 1));
        assert!(!closes_cycle(&edges, 1, 3));
        assert!(!closes_cycle(&edges, 4, 1));
    }
}
