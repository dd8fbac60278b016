//! Deploy targets: put a release into service and report where it answers.
//!
//! Today there is one target, `docker` (containers through the engine API). The systemd,
//! swarm and kubernetes targets arrive with their own modules and templates.
//!
//! **Architecture Invariant:** the running release is replaced only after the new one answers.

pub mod docker;
pub mod render;

use std::net::IpAddr;
use std::time::Duration;

/// Everything a target needs to run one release of an app's web process.
#[derive(Debug, Clone)]
pub struct DeploySpec {
    pub app: String,
    pub release: i64,
    pub image: String,
    /// The port the web process listens on, given to it as `PORT`.
    pub port: u16,
    /// Config vars, given to every process as environment variables.
    pub env: Vec<(String, String)>,
    /// How many web instances to run.
    pub web: u32,
    /// CPU and memory limits of each web instance (`resources:set`).
    pub resources: render::Resources,
    pub publish_address: IpAddr,
    pub ready_timeout: Duration,
}

/// One running instance of a process, and where it answers.
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub index: u32,
    pub host_port: Option<u16>,
}

/// The port the web process gets when the image does not EXPOSE exactly one (Heroku's default).
pub const DEFAULT_PORT: u16 = 5000;
