//! The pushes in progress (`PushRegistry`), each a `PushSession` known by its one-time token:
//! state only, so `server::Berth` can hold it without importing the receive stage.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::names::AppName;

/// A push in progress, known to the server by a random token given only to its receive-pack.
#[derive(Clone)]
pub struct PushSession {
    pub app: AppName,
    pub app_id: i64,
    pub actor: String,
    pub repo: PathBuf,
    pub(super) hook_ran: Arc<AtomicBool>,
    /// The app's deploy lock once the pipeline took it. Shared with the `PushTicket`, so it is
    /// released only after receive-pack has updated the refs and exited, and the pipeline ended.
    pub(super) lock: LockSlot,
}

pub(super) type LockSlot = Arc<std::sync::Mutex<Option<tokio::sync::OwnedMutexGuard<()>>>>;

impl PushSession {
    /// Keeps the app's deploy lock until the push is over (refs updated, client answered).
    pub fn hold_lock(&self, guard: tokio::sync::OwnedMutexGuard<()>) {
        if let Ok(mut slot) = self.lock.lock() {
            *slot = Some(guard);
        }
    }
}

/// Registered pushes; a `PushTicket` removes its entry when dropped.
#[derive(Default)]
pub struct PushRegistry {
    pub(super) sessions: std::sync::Mutex<HashMap<String, PushSession>>,
}

impl PushRegistry {
    /// Whether a push to the app (by id) is in progress: its quarantine directory is live.
    pub fn in_progress(&self, app_id: i64) -> bool {
        self.sessions
            .lock()
            .map(|sessions| sessions.values().any(|s| s.app_id == app_id))
            .unwrap_or(true)
    }

    pub(super) fn take(&self, token: &str) -> Option<PushSession> {
        let sessions = self.sessions.lock().ok()?;
        let session = sessions.get(token)?.clone();
        // A token works once: a second hook call with it is refused.
        if session.hook_ran.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(session)
    }
}
