//! Deploy targets: put a release into service and report where it answers.
//!
//! Everything above this module reaches the targets through [`Scheduler`], which owns the engine
//! connection. Each target is one module implementing `Backend`: `docker` (containers through
//! the engine API), `swarm` (a stack file rendered from `templates/swarm/`, applied with
//! `docker stack deploy`) and `systemd` (a unit per instance from `templates/systemd/`, where
//! systemd is PID 1). `kubernetes` is rendered (`deploy:render`) but not applied: [`applicable`]
//! refuses it, and systemd where systemd is not PID 1, before anything is written.
//! A new target is one module here, its templates, and one arm in `backend`. The engine's other
//! rooms: `inventory` (what runs, read from labels), `names` (every engine object name),
//! `network`, `volumes`, `logs`, `oneoff` (`run`, the release phase), `probe`.
//!
//! **Architecture Invariant:** the running release is replaced only after the new one answers.

mod backend;
pub mod docker;
pub mod inventory;
mod logs;
pub mod names;
pub mod network;
pub mod nodes;
pub mod oneoff;
pub mod probe;
pub mod render;
pub mod sandbox;
mod scheduler;
pub mod serving;
pub mod spec;
pub mod swarm;
pub mod systemd;
mod volumes;

pub use scheduler::Scheduler;
#[cfg(test)]
pub use scheduler::fake;

pub use inventory::ContainerReport;
pub use oneoff::{Chunk, OneOff, RunIn};
pub use scheduler::applicable;
pub use spec::{DEFAULT_PORT, DeploySpec, Instance, ProcessSpec};

pub use serving::{Publish, Serving};
