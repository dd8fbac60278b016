//! Deploy targets: put a built release into service and report where it answers.
//!
//! Today there is one target, `docker` (containers through the engine API). The systemd,
//! swarm and kubernetes targets arrive with their own modules and templates.
//!
//! **Architecture Invariant:** the running release is replaced only after the new one answers.

pub mod docker;

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
    pub env: Vec<(String, String)>,
    pub publish_address: IpAddr,
    pub ready_timeout: Duration,
}

/// Where the new release answers.
#[derive(Debug, Clone, Copy)]
pub struct Deployed {
    pub host_port: u16,
}

/// The port the web process gets when the image does not EXPOSE exactly one (Heroku's default).
pub const DEFAULT_PORT: u16 = 5000;
