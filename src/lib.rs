//! berth: a git-push deployment server.
//!
//! # Layout
//! - `ssh`: the embedded SSH server (russh): auth, exec parsing, channel ↔ process plumbing.
//! - `push`: the receive stage: push setup, the pre-receive hook and its socket.
//! - `git`: bare repos, the git services, reading the pushed tree (git2).
//! - `pipeline`: one push through build → registry → release → deploy.
//! - `ops`: the application layer (deploy and rollback, formation, canary, links, storage,
//!   lifecycle, the deploy spec); what changes an app takes an `ops::LockedApp`.
//! - `deploy`: the targets behind `deploy::Scheduler`, the one handle above it on where apps
//!   run (and the engine's other rooms: names, networks, volumes, inventory, logs, one-off
//!   runs); `build`, `registry` and `engine` are the other modules that know bollard.
//! - `error`: internal errors as one line with an id the server log carries too.
//! - `router`, `route`, `plane`: the HTTP router, the serving sets, and the narrow view of
//!   berth the router gets (no store, no scheduler).
//! - `disk`: disk usage and retention; `webhooks`: outbound events and inbound syncs;
//!   `backup`: one-file backup and restore.
//! - `store`: SQLite state; `domain`: app states, release statuses, roles and mount kinds as
//!   types; `commands`: the operator commands (parse, access, `ops`, format); `config`,
//!   `names`, `output`.
//! - `netguard`: which destinations members may make the host connect to; `dockerfile`: what
//!   a member's Dockerfile may ask the shared engine for.
//!
//! See ARCHITECTURE.md for the invariants.

pub mod access;
pub mod acme;
pub mod backup;
pub mod build;
pub mod buildpack;
pub mod commands;
pub mod config;
pub mod crash;
pub mod dataplane;
pub mod deploy;
pub mod disk;
pub mod dockerfile;
pub mod domain;
pub mod engine;
pub mod error;
pub mod git;
pub mod limits;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod netguard;
pub mod ops;
pub mod output;
pub mod pipeline;
pub mod plane;
pub mod push;
pub mod reconcile;
pub mod registry;
pub mod route;
pub mod router;
pub mod serve;
pub mod server;
pub mod ssh;
pub mod store;
pub mod tls;
pub mod webhooks;
