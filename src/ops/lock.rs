//! The proof that an app's deploy lock is held: [`LockedApp`], made only here.

use std::ops::Deref;

use crate::server::Berth;
use crate::store::App;

/// An app whose deploy lock this task holds, as it was read under the lock. Made only by
/// [`lock`], [`lock_id`] and [`try_lock`]; dropping it releases the lock.
pub struct LockedApp {
    app: App,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Deref for LockedApp {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

impl LockedApp {
    /// The lock itself, for a holder that must keep it past the op (a push until git has
    /// updated its ref).
    pub fn into_guard(self) -> tokio::sync::OwnedMutexGuard<()> {
        self._guard
    }

    /// Reads the app again (under the lock it holds), after an op changed its row.
    pub async fn reload(&mut self, berth: &Berth) -> Result<(), String> {
        self.app = read_again(berth, self.app.id).await?;
        Ok(())
    }
}

async fn read_again(berth: &Berth, id: i64) -> Result<App, String> {
    match berth.store.app_by_id(id).await {
        Ok(Some(app)) => Ok(app),
        Ok(None) => Err("the app was destroyed meanwhile".to_string()),
        Err(error) => Err(crate::error::internal_while("reading the app again", error)),
    }
}

/// Takes the app's deploy lock and reads the app again: what a command looked up before waiting
/// may have been renamed or destroyed meanwhile (finding 19), and what it does next must act on
/// the app as it is now.
pub async fn lock(berth: &Berth, app: &App) -> Result<LockedApp, String> {
    let guard = berth.lock_app(app.id).await;
    match berth.store.app_by_id(app.id).await {
        Ok(Some(now)) if now.name == app.name => Ok(LockedApp {
            app: now,
            _guard: guard,
        }),
        Ok(Some(now)) => Err(format!(
            "{} was renamed to {} meanwhile: run the command again with its new name",
            app.name, now.name
        )),
        Ok(None) => Err(format!("app {} was destroyed meanwhile", app.name)),
        Err(error) => Err(crate::error::internal_while("reading the app again", error)),
    }
}

/// Takes the lock of the app with this id, waiting, and reads it (by id: a push keeps going to
/// the app it came in for, renamed or not).
pub async fn lock_id(berth: &Berth, id: i64) -> Result<LockedApp, String> {
    let guard = berth.lock_app(id).await;
    Ok(LockedApp {
        app: read_again(berth, id).await?,
        _guard: guard,
    })
}

/// The app's lock if it is free now (the reconciler, retention skip a busy app), with the app
/// read again under it; none when it is busy or gone.
pub async fn try_lock(berth: &Berth, id: i64) -> Option<LockedApp> {
    let guard = berth.app_lock(id).try_lock_owned().ok()?;
    let app = berth.store.app_by_id(id).await.ok()??;
    Some(LockedApp { app, _guard: guard })
}
