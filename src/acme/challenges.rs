//! Pending ACME HTTP-01 answers, which the router serves: state only (no `Berth`).

use std::collections::HashMap;
use std::sync::RwLock;

/// Pending HTTP-01 answers: token → key authorization.
#[derive(Default)]
pub struct Challenges(RwLock<HashMap<String, String>>);

impl Challenges {
    /// The answer for a `/.well-known/acme-challenge/TOKEN` path, if one is pending.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix("/.well-known/acme-challenge/")?;
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    pub fn set(&self, token: &str, answer: String) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), answer);
    }

    pub fn clear(&self, tokens: &[String]) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        for token in tokens {
            map.remove(token);
        }
    }
}
