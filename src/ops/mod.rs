//! The application layer: one file per job. Commands (`commands/*`), pushes (`pipeline`), the
//! reconciler and webhooks call these; they are the callers of the scheduler, the routes, state
//! transitions and events for an app. Functions that change an app take a [`LockedApp`], which
//! proves its deploy lock is held.
//!
//! - `deploy`: releases (from a build or an existing image), deploys, config redeploys, rollback.
//! - `formation`: scale, restart, stop, start.
//! - `canary`: canary deploy, promote, abort.
//! - `links`: link values and the dependents that follow a deploy.
//! - `storage`: mounts.
//! - `lifecycle`: rename, destroy.
//! - `revive`: the reconciler's job for one app: bring back what died, re-point the routes.
//! - `spec`: the deploy spec and what the templates see (reads only).

mod canary;
mod deploy;
mod follow;
mod formation;
mod lifecycle;
mod links;
mod lock;
mod revive;
mod rollback;
mod spec;
mod storage;
#[cfg(test)]
mod tests;

pub use canary::*;
pub use deploy::*;
pub use follow::*;
pub use formation::*;
pub use lifecycle::*;
pub use links::*;
pub use lock::*;
pub use revive::*;
pub use rollback::*;
pub use spec::*;
pub use storage::*;
