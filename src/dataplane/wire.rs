//! What the control plane and the data plane say to each other over the data plane's Unix
//! socket (`<data_dir>/run/plane.sock`, in a 0700 directory): one JSON object a line. The
//! control plane sends numbered `Request`s, each answered by one `Reply` with its number; the
//! data plane also sends what the router received for the control plane (inbound webhook
//! triggers, wrong-token counts).

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::manifest::Healthcheck;
use crate::webhooks::inbound::Trigger;

/// The longest line either side reads: a whole domain or token map fits many times over.
pub const MAX_LINE: usize = 16 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub call: Call,
}

/// What the control plane asks of the data plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// A port for a new app, held bound until the app is first pointed there.
    Reserve,
    /// The app's port serves these instances of the current release (replacing the last set).
    Point {
        app: String,
        port: u16,
        addresses: Vec<SocketAddr>,
    },
    /// The canary's instances and weight, or none: the canary ends.
    Canary {
        app: String,
        canary: Option<(Vec<SocketAddr>, u8)>,
    },
    CanaryWeight {
        app: String,
        weight: u8,
    },
    /// The canary's instances become the current ones; answers their addresses.
    Promote {
        app: String,
    },
    CanaryOf {
        app: String,
    },
    Remove {
        app: String,
    },
    Health {
        app: String,
        check: Option<Healthcheck>,
    },
    /// Answers once none of these instances has a request in flight, or after `max_ms`.
    Drained {
        app: String,
        addresses: Vec<SocketAddr>,
        max_ms: u64,
    },
    Traffic {
        app: String,
    },
    /// Custom domain → app, the whole map.
    Domains(HashMap<String, String>),
    /// Inbound webhook tokens, app → (app id, token hash), the whole map.
    Tokens(HashMap<String, (i64, String)>),
    /// An ACME HTTP-01 answer to serve (or to stop serving: none).
    Challenge {
        token: String,
        answer: Option<String>,
    },
    /// The certificate files changed: read them again.
    ReloadCerts,
    /// A deploy or build finished, or an app is gone: for `/metrics`.
    Observe(Observed),
    /// Which apps exist: every other app's route is dropped (after a crash between an app's
    /// destroy and its route's removal).
    Retain {
        apps: Vec<String>,
    },
    /// This connection is the serving control plane's: inbound triggers and counts go to it
    /// (not to a host CLI command's connection).
    Subscribe,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    Deploy { app: String, ok: bool, secs: f64 },
    Build { app: String, ok: bool, secs: f64 },
    Forget { app: String },
}

/// The data plane's answer to one call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Done,
    Port(u16),
    Changed(bool),
    Addresses(Option<Vec<SocketAddr>>),
    Canary(Option<(Vec<SocketAddr>, u8)>),
    Traffic(Vec<(SocketAddr, String)>),
}

/// What the data plane sends the control plane.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromPlane {
    Reply {
        id: u64,
        result: Result<Answer, String>,
    },
    /// A POST with the right token reached an app's inbound webhook.
    Trigger(Trigger),
    /// Wrong inbound tokens since the last count, by app id.
    Refused(Vec<(i64, u64)>),
}

/// One message as a line.
pub fn line<T: Serialize>(message: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(message).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}
