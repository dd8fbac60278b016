//! What a release runs, read from its commit: the Procfile (`name: command` lines naming the
//! process types, Heroku's format; `web` is the one given `PORT`, health-checked and routed;
//! `release` runs once before the release goes live) and `app.json` (`healthchecks.web`,
//! `scripts.predeploy` / `scripts.postdeploy`, `formation`), Heroku's and Dokku's formats.
//!
//! **Architecture Invariant:** pure: file texts in, a `Manifest` (stored with the release) out;
//! errors name the file, the line and the reason.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a release runs. Stored as JSON on the release, so a rollback runs what it ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Manifest {
    /// Procfile: process type → shell command (empty: no Procfile; the image's CMD is web).
    pub processes: BTreeMap<String, String>,
    /// app.json `healthchecks.web`: how the web process is checked before it serves.
    pub healthcheck: Option<Healthcheck>,
    /// app.json `scripts.predeploy`: runs in a one-off container of the new release before it
    /// goes live (after the Procfile's `release`); failing stops the deploy.
    pub predeploy: Option<String>,
    /// app.json `scripts.postdeploy`: runs once the new release is live; failing is reported.
    pub postdeploy: Option<String>,
    /// app.json `formation`: the initial scale of each process type (first deploy only).
    pub formation: BTreeMap<String, u32>,
}

/// A web health check: `GET path` must answer `status` (any 2xx or 3xx when unset) within
/// `timeout` seconds; up to `attempts` tries, `wait` seconds apart, after `initial_delay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Healthcheck {
    pub path: String,
    pub status: Option<u16>,
    pub timeout: u64,
    pub attempts: u32,
    pub wait: u64,
    pub initial_delay: u64,
}

impl Manifest {
    /// The process types other than `web` and `release` that the formation may scale.
    pub fn scalable(&self) -> impl Iterator<Item = (&String, &String)> {
        self.processes
            .iter()
            .filter(|(name, _)| name.as_str() != "web" && name.as_str() != "release")
    }

    /// Reads a stored manifest (an empty or unreadable one is the default).
    pub fn from_json(json: &str) -> Manifest {
        serde_json::from_str(json).unwrap_or_default()
    }

    /// The manifest of a commit from its Procfile and app.json texts.
    pub fn from_files(procfile: Option<&str>, app_json: Option<&str>) -> Result<Manifest, String> {
        let mut manifest = Manifest {
            processes: procfile.map(parse).transpose()?.unwrap_or_default(),
            ..Manifest::default()
        };
        if let Some(text) = app_json {
            apply_app_json(&mut manifest, text)?;
        }
        Ok(manifest)
    }
}

#[derive(Deserialize)]
struct AppJson {
    #[serde(default)]
    healthchecks: BTreeMap<String, Vec<Check>>,
    #[serde(default)]
    scripts: Scripts,
    #[serde(default)]
    formation: BTreeMap<String, Quantity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Check {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    timeout: Option<u64>,
    attempts: Option<u32>,
    wait: Option<u64>,
    initial_delay: Option<u64>,
}

#[derive(Deserialize, Default)]
struct Scripts {
    predeploy: Option<String>,
    postdeploy: Option<String>,
    /// Dokku nests its scripts under `dokku`.
    dokku: Option<Box<Scripts>>,
}

#[derive(Deserialize)]
struct Quantity {
    quantity: u32,
}

fn apply_app_json(manifest: &mut Manifest, text: &str) -> Result<(), String> {
    let parsed: AppJson = serde_json::from_str(text).map_err(|e| {
        let reason = e.to_string();
        let reason = reason
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string();
        format!("app.json line {}: {reason}", e.line())
    })?;
    if let Some(checks) = parsed.healthchecks.get("web") {
        let check = checks
            .iter()
            .find(|c| c.kind.as_deref().is_none_or(|k| k == "startup"))
            .ok_or("app.json: healthchecks.web has no startup check")?;
        let path = check.path.clone().unwrap_or_else(|| "/".to_string());
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            return Err(format!(
                "app.json: healthchecks.web path {path:?} must start with / and have no spaces"
            ));
        }
        if let Some(status) = check.status
            && !(100..=599).contains(&status)
        {
            return Err(format!(
                "app.json: healthchecks.web status {status} is not an HTTP status"
            ));
        }
        let healthcheck = Healthcheck {
            path,
            status: check.status,
            timeout: check.timeout.unwrap_or(5).clamp(1, 120),
            attempts: check.attempts.unwrap_or(5).clamp(1, 100),
            wait: check.wait.unwrap_or(2).min(60),
            initial_delay: check.initial_delay.unwrap_or(0).min(600),
        };
        // A deploy holds the app's lock while it checks: bound the worst case.
        let worst = healthcheck.initial_delay
            + u64::from(healthcheck.attempts) * (healthcheck.timeout + healthcheck.wait);
        if worst > HEALTHCHECK_LIMIT {
            return Err(format!(
                "app.json: healthchecks.web could take {worst} s (initialDelay + attempts × (timeout + wait)); at most {HEALTHCHECK_LIMIT}"
            ));
        }
        manifest.healthcheck = Some(healthcheck);
    }
    let dokku = parsed.scripts.dokku.as_deref();
    manifest.predeploy = parsed
        .scripts
        .predeploy
        .clone()
        .or_else(|| dokku.and_then(|d| d.predeploy.clone()));
    manifest.postdeploy = parsed
        .scripts
        .postdeploy
        .clone()
        .or_else(|| dokku.and_then(|d| d.postdeploy.clone()));
    manifest.formation = parsed
        .formation
        .into_iter()
        .map(|(name, q)| (name, q.quantity))
        .collect();
    if let Some(count) = manifest.formation.values().find(|n| **n > 50) {
        return Err(format!(
            "app.json: formation asks for {count} instances (at most 50)"
        ));
    }
    let total: u64 = manifest.formation.values().map(|n| u64::from(*n)).sum();
    if total > 50 {
        return Err(format!(
            "app.json: formation asks for {total} instances in all (at most 50)"
        ));
    }
    Ok(())
}

/// The longest a web health check may take in the worst case, in seconds.
pub const HEALTHCHECK_LIMIT: u64 = 900;
/// The most process types a Procfile may name.
pub const PROCESS_TYPES_LIMIT: usize = 20;

/// Procfile: process type → shell command. Errors name the line and the reason.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut processes = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |reason: String| format!("Procfile line {}: {reason}", number + 1);
        let (name, command) = line
            .split_once(':')
            .ok_or_else(|| at(format!("{line:?} is not `name: command`")))?;
        let (name, command) = (name.trim(), command.trim());
        let valid = !name.is_empty()
            && name.len() <= 30
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid {
            return Err(at(format!(
                "process type {name:?} must be lowercase letters, digits, - or _"
            )));
        }
        if command.is_empty() {
            return Err(at(format!("process type {name:?} has no command")));
        }
        if processes
            .insert(name.to_string(), command.to_string())
            .is_some()
        {
            return Err(at(format!("process type {name:?} is defined twice")));
        }
        if processes.len() > PROCESS_TYPES_LIMIT {
            return Err(at(format!("more than {PROCESS_TYPES_LIMIT} process types")));
        }
    }
    Ok(processes)
}

/// The argument vector that runs a Procfile command (a shell line, as Heroku runs it).
pub fn command_vector(command: &str) -> Vec<String> {
    vec!["sh".to_string(), "-c".to_string(), command.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_json_health_checks_scripts_and_formation() {
        let manifest = Manifest::from_files(
            Some("web: a\nworker: b\nrelease: c\n"),
            Some(r#"{"healthchecks": {"web": [{"type": "startup", "path": "/health", "attempts": 3, "initialDelay": 1}]},
                   "scripts": {"dokku": {"predeploy": "migrate"}, "postdeploy": "notify"},
                   "formation": {"web": {"quantity": 2}, "worker": {"quantity": 1}}}"#),
        )
        .unwrap();
        let check = manifest.healthcheck.clone().unwrap();
        assert_eq!(
            (
                check.path.as_str(),
                check.attempts,
                check.initial_delay,
                check.status
            ),
            ("/health", 3, 1, None)
        );
        assert_eq!(manifest.predeploy.as_deref(), Some("migrate"));
        assert_eq!(manifest.postdeploy.as_deref(), Some("notify"));
        assert_eq!(manifest.formation["web"], 2);
        let scalable: Vec<&String> = manifest.scalable().map(|(name, _)| name).collect();
        assert_eq!(scalable, ["worker"]);
        let broken = Manifest::from_files(None, Some("{\n  \"formation\": [1,\n}")).unwrap_err();
        assert_eq!(
            broken,
            "app.json line 2: invalid type: sequence, expected a map"
        );
        let unclosed = Manifest::from_files(None, Some("{\n  \"formation\": {}\n")).unwrap_err();
        assert!(unclosed.starts_with("app.json line 3: EOF"), "{unclosed}");
        let bad_path = Manifest::from_files(
            None,
            Some(r#"{"healthchecks": {"web": [{"path": "health"}]}}"#),
        );
        assert!(bad_path.unwrap_err().contains("must start with /"));
        assert_eq!(
            Manifest::from_json(&serde_json::to_string(&manifest).unwrap()),
            manifest
        );
    }

    #[test]
    fn parses_process_types_and_names_bad_lines() {
        let parsed =
            parse("# comment\nweb: python3 app.py --port $PORT\n\nworker:  sh -c 'sleep 1'\n")
                .unwrap();
        assert_eq!(parsed["web"], "python3 app.py --port $PORT");
        assert_eq!(parsed["worker"], "sh -c 'sleep 1'");
        assert_eq!(
            parse("web: a\nno colon here\n").unwrap_err(),
            "Procfile line 2: \"no colon here\" is not `name: command`"
        );
        assert!(parse("Web: a").unwrap_err().contains("line 1"));
        assert!(parse("web:").unwrap_err().contains("no command"));
        assert!(
            parse("web: a\nweb: b")
                .unwrap_err()
                .contains("defined twice")
        );
    }
}
