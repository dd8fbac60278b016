//! Inbound webhook tokens and the queue of syncs they trigger, which the router reads: state
//! only (no `Berth`); the syncs run in `webhooks::inbound_loop`.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

/// Inbound webhooks: token hashes by app (read by the router, which never touches the DB),
/// and the queue of triggered syncs. Unauthenticated clients reach this, so it is bounded: a
/// wrong token is only counted (one event per app and second, not one per POST), an app has at
/// most one sync waiting (more POSTs join it), and the queue holds [`INBOUND_QUEUE`] apps
/// (past that: 429).
pub struct Inbound {
    /// App name → (app id, token hash); reloaded when tokens, names or apps change.
    pub(super) tokens: std::sync::RwLock<HashMap<String, (i64, String)>>,
    queue: tokio::sync::mpsc::Sender<Trigger>,
    receiver: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Trigger>>>,
    /// Apps with a sync waiting in the queue.
    pub(super) queued: std::sync::Mutex<HashSet<i64>>,
    /// Wrong tokens per app since the last flush.
    refused: std::sync::Mutex<HashMap<i64, u64>>,
}

/// Apps whose syncs may wait at once.
pub const INBOUND_QUEUE: usize = 64;

/// A POST to an app's inbound URL with the right token; the body's `ref` when it had one
/// (GitHub and Gitea push payloads).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Trigger {
    pub app_id: i64,
    pub pushed_ref: Option<String>,
}

impl Default for Inbound {
    fn default() -> Self {
        let (queue, receiver) = tokio::sync::mpsc::channel(INBOUND_QUEUE);
        Inbound {
            tokens: Default::default(),
            queue,
            receiver: std::sync::Mutex::new(Some(receiver)),
            queued: Default::default(),
            refused: Default::default(),
        }
    }
}

/// The path prefix of inbound webhooks on the HTTP router: `/.berth/hooks/APP/TOKEN`.
pub const INBOUND_PREFIX: &str = "/.berth/hooks/";

impl Inbound {
    pub async fn reload(&self, store: &crate::store::Store) -> Result<(), String> {
        let tokens = store
            .inbound_tokens()
            .await
            .map_err(|e| format!("cannot read inbound webhooks: {e}"))?;
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = tokens
            .into_iter()
            .map(|(name, id, hash)| (name, (id, hash)))
            .collect();
        Ok(())
    }

    /// For the router: a POST to `path`. Some(status) when the path is under the inbound
    /// prefix: 202 queued (or joined a waiting sync), 403 for a wrong token or an app without
    /// one (the same answer, so it tells nobody which apps have hooks), 429 when the queue is
    /// full.
    pub fn receive(&self, path: &str, body: &[u8]) -> Option<u16> {
        let rest = path.strip_prefix(INBOUND_PREFIX)?;
        let (app, token) = rest.split_once('/').unwrap_or((rest, ""));
        let known = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .cloned();
        let Some((app_id, expected)) = known else {
            return Some(403);
        };
        if !constant_time_eq(token_hash(token).as_bytes(), expected.as_bytes()) {
            *self
                .refused
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(app_id)
                .or_default() += 1;
            return Some(403);
        }
        let pushed_ref = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("ref").and_then(|r| r.as_str()).map(String::from));
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        if queued.contains(&app_id) {
            return Some(202);
        }
        match self.queue.try_send(Trigger { app_id, pushed_ref }) {
            Ok(()) => {
                queued.insert(app_id);
                Some(202)
            }
            Err(_) => Some(429),
        }
    }

    /// The tokens, app name → (app id, token hash).
    pub fn tokens(&self) -> HashMap<String, (i64, String)> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the tokens (the data plane, sent the control plane's).
    pub fn set_tokens(&self, tokens: HashMap<String, (i64, String)>) {
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = tokens;
    }

    /// Queues a trigger the data plane received (the control plane's side); false when the
    /// queue is full.
    pub fn enqueue(&self, trigger: Trigger) -> bool {
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        if queued.contains(&trigger.app_id) {
            return true;
        }
        let app_id = trigger.app_id;
        let sent = self.queue.try_send(trigger).is_ok();
        if sent {
            queued.insert(app_id);
        }
        sent
    }

    /// The data plane handed the app's trigger to the control plane: a later POST queues anew.
    pub fn forwarded(&self, app_id: i64) {
        self.queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&app_id);
    }

    /// Adds wrong-token counts the data plane saw (the control plane's side).
    pub fn add_refused(&self, counts: &[(i64, u64)]) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        for (app_id, count) in counts {
            *refused.entry(*app_id).or_default() += count;
        }
    }

    /// The wrong-token counts since the last call, by app id.
    pub fn take_refused(&self) -> HashMap<i64, u64> {
        std::mem::take(&mut *self.refused.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn take_receiver(&self) -> Option<tokio::sync::mpsc::Receiver<Trigger>> {
        self.receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SHA-256 (hex) of an inbound token, as stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
