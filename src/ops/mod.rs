//! The application layer: one file per job. Commands (`commands/*`), pushes (`pipeline`), the
//! reconciler and webhooks call these; they are the callers of the scheduler, the routes and the
//! app state transitions (events of settings are still recorded by the commands). Functions
//! that change an app take a [`LockedApp`], which proves its deploy lock is held.
//!
//! - `lock`: [`LockedApp`] and the only ways to make one (`lock`, `lock_id`, `try_lock`).
//! - `deploy`: releases (from a build or an existing image), deploys, config redeploys, a build
//!   starting or failing.
//! - `follow`: deploys that the linked apps follow (`deploy_release`, `create_deploy_and_follow`).
//! - `rollback`: an earlier release's image and config as a new release.
//! - `formation`: scale, restart, stop, start.
//! - `canary`: canary deploy, promote, abort, weight.
//! - `links`: link values and the dependents that follow a deploy (a work-list loop).
//! - `storage`: mounts.
//! - `lifecycle`: rename, destroy, moving to another target.
//! - `revive`: the reconciler's job for one app: bring back what died, re-point the routes.
//! - `settle`: at start-up, what a crash left half-done is finished or undone.
//! - `spec`: the deploy spec and what the templates see (reads only).
//!
//! No two of these import each other in a circle (`lock` ← `spec` ← `canary` ← `deploy` ←
//! `links` ← `follow` ← `formation`, `lifecycle`, `rollback`).

mod canary;
mod deploy;
mod follow;
mod formation;
mod lifecycle;
mod links;
mod lock;
mod nodes;
mod revive;
mod rollback;
mod settle;
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
pub use nodes::*;
pub use revive::*;
pub use rollback::*;
pub use settle::*;
pub use spec::*;
pub use storage::*;
