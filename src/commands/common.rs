//! What every command handler shares: its parsed arguments, the one-line internal error, JSON
//! output, the release lookups, and the access rules (from `crate::access`). A leaf of the
//! commands: the handlers import it, not the dispatcher.

use std::collections::HashMap;

pub use crate::access::{
    Access, admin_only, admin_only_for, app_for, check_app_quota, key_may_operate, may,
};
use crate::server::Berth;
use crate::store::App;

/// Parsed arguments: positionals in order, flags by name.
#[derive(Debug, Default)]
pub struct Args {
    pub positional: Vec<String>,
    pub(super) flags: HashMap<&'static str, Option<String>>,
}

impl Args {
    pub fn has(&self, flag: &str) -> bool {
        self.flags.contains_key(flag)
    }
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.flags.get(flag).and_then(|v| v.as_deref())
    }
    pub fn json(&self) -> bool {
        self.has("--json")
    }
    pub(super) fn count(&self, flag: &str, default: i64) -> Result<i64, String> {
        match self.value(flag) {
            None => Ok(default),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} takes a positive number, not {text:?}")),
        }
    }
}

pub(super) fn internal(error: impl std::fmt::Display) -> String {
    crate::error::internal_while("a command", error)
}

/// The app's release named `v3` (or `3`).
pub(super) async fn numbered_release(
    berth: &Berth,
    app: &App,
    wanted: &str,
) -> Result<crate::store::Release, String> {
    let number: i64 = wanted.trim_start_matches('v').parse().map_err(|_| {
        format!(
            "{wanted:?} is not a release like v3; see `releases {}`",
            app.name
        )
    })?;
    berth
        .store
        .release(app.id, number)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            format!(
                "{} has no release v{number}; see `releases {}`",
                app.name, app.name
            )
        })
}

/// Pretty JSON with a trailing newline.
pub(super) fn to_json(value: &impl serde::Serialize) -> Result<String, String> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(internal)
}
