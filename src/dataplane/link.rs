//! The control plane's end of the data plane's socket: every change to what the router and the
//! apps' ports serve is a call answered by the data plane. A lost connection (the data plane
//! restarting, or handing over to a newer one) is made again and the call sent again: every
//! call is idempotent, or says so.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, Answer, Call, FromPlane, Observed, Request};
use crate::deploy::serving::Serving;
use crate::manifest::Healthcheck;

/// The data plane's socket for this config: `<data_dir>/run/plane.sock`.
pub fn socket_path(config: &crate::config::Config) -> PathBuf {
    config.data_dir.join("run").join("plane.sock")
}

/// How long a call waits for a data plane to accept the connection (one that restarts or hands
/// over is back well within this).
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// How long an answer may take (a drain adds its own length).
const ANSWER_WAIT: Duration = Duration::from_secs(10);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Answer, String>>>>>;

struct Connection {
    writer: OwnedWriteHalf,
    generation: u64,
}

/// The control plane's handle on the data plane.
pub struct Link {
    socket: PathBuf,
    next: AtomicU64,
    generation: AtomicU64,
    connection: tokio::sync::Mutex<Option<Connection>>,
    /// Calls sent, waiting for their answer, by number (with the connection they went on).
    pending: Pending,
    /// Inbound triggers and wrong-token counts the data plane forwards.
    events: mpsc::Sender<FromPlane>,
    receiver: Mutex<Option<mpsc::Receiver<FromPlane>>>,
    /// Set once the events are taken (the serving control plane): every connection made then
    /// subscribes to them first.
    subscribed: std::sync::atomic::AtomicBool,
    drain: Duration,
}

impl Link {
    pub fn new(socket: PathBuf, drain: Duration) -> Arc<Link> {
        let (events, receiver) = mpsc::channel(256);
        Arc::new(Link {
            socket,
            next: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            connection: tokio::sync::Mutex::new(None),
            pending: Arc::default(),
            events,
            receiver: Mutex::new(Some(receiver)),
            subscribed: Default::default(),
            drain,
        })
    }

    /// What the data plane forwards (for the control plane's inbound loop); once.
    pub fn take_events(&self) -> Option<mpsc::Receiver<FromPlane>> {
        self.subscribed.store(true, Ordering::Relaxed);
        self.receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    async fn connect(&self) -> Result<Connection, String> {
        let deadline = Instant::now() + CONNECT_WAIT;
        let stream = loop {
            match UnixStream::connect(&self.socket).await {
                Ok(stream) => break stream,
                Err(error) if Instant::now() >= deadline => {
                    return Err(format!(
                        "the data plane does not answer on {}: {error} (is berth running? `berth serve` starts it)",
                        self.socket.display()
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (reader, mut writer) = stream.into_split();
        if self.subscribed.load(Ordering::Relaxed) {
            // Its answer (number 0) is waited for by nobody.
            let subscribe = wire::line(&Request {
                id: 0,
                call: Call::Subscribe,
            });
            writer
                .write_all(&subscribe)
                .await
                .map_err(|e| format!("the data plane's connection broke: {e}"))?;
        }
        let (pending, events) = (self.pending.clone(), self.events.clone());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(reader);
            let mut line = Vec::new();
            loop {
                line.clear();
                match (&mut lines)
                    .take(wire::MAX_LINE as u64)
                    .read_until(b'\n', &mut line)
                    .await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                match serde_json::from_slice::<FromPlane>(&line) {
                    Ok(FromPlane::Reply { id, result }) => {
                        let waiting = pending
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id);
                        if let Some(waiting) = waiting {
                            let _ = waiting.send(result);
                        }
                    }
                    Ok(event) => {
                        let _ = events.try_send(event);
                    }
                    Err(error) => tracing::warn!(%error, "unreadable line from the data plane"),
                }
            }
            // The calls still waiting went on this connection: they are sent again.
            let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.retain(|id, _| (id >> 48) != generation);
        });
        Ok(Connection { writer, generation })
    }

    /// Sends `call` and waits for its answer, connecting (again) as needed.
    pub async fn call(&self, call: Call) -> Result<Answer, String> {
        let wait = match &call {
            Call::Drained { max_ms, .. } => Duration::from_millis(*max_ms) + ANSWER_WAIT,
            _ => ANSWER_WAIT,
        };
        let mut last = String::from("the data plane is not running");
        for _ in 0..3 {
            let (sent, answer) = oneshot::channel();
            let mut connection = self.connection.lock().await;
            if connection.is_none() {
                match self.connect().await {
                    Ok(made) => *connection = Some(made),
                    Err(error) => return Err(error),
                }
            }
            let Some(open) = connection.as_mut() else {
                continue;
            };
            // The connection's generation in the top bits: its reader drops what it carried.
            let id = (open.generation << 48)
                | (self.next.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff);
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, sent);
            let bytes = wire::line(&Request {
                id,
                call: call.clone(),
            });
            if let Err(error) = open.writer.write_all(&bytes).await {
                last = format!("the data plane's connection broke: {error}");
                *connection = None;
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                continue;
            }
            drop(connection);
            match tokio::time::timeout(wait, answer).await {
                Ok(Ok(result)) => return result,
                Ok(Err(_)) => {
                    last = "the data plane's connection closed".into();
                    let mut connection = self.connection.lock().await;
                    if connection
                        .as_ref()
                        .is_some_and(|c| c.generation == id >> 48)
                    {
                        *connection = None;
                    }
                }
                Err(_) => {
                    self.pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                    return Err("the data plane did not answer in time".into());
                }
            }
        }
        Err(last)
    }

    async fn done(&self, call: Call) -> Result<(), String> {
        self.call(call).await.map(|_| ())
    }

    /// A port for a new app, held by the data plane until the app's first deploy serves there.
    pub async fn reserve_port(&self) -> Result<u16, String> {
        match self.call(Call::Reserve).await? {
            Answer::Port(port) => Ok(port),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn point(
        &self,
        app: &str,
        port: u16,
        addresses: &[SocketAddr],
    ) -> Result<(), String> {
        self.done(Call::Point {
            app: app.to_string(),
            port,
            addresses: addresses.to_vec(),
        })
        .await
    }

    pub async fn point_canary(
        &self,
        app: &str,
        canary: Option<(&[SocketAddr], u8)>,
    ) -> Result<(), String> {
        self.done(Call::Canary {
            app: app.to_string(),
            canary: canary.map(|(a, w)| (a.to_vec(), w)),
        })
        .await
    }

    pub async fn set_canary_weight(&self, app: &str, weight: u8) -> Result<bool, String> {
        match self
            .call(Call::CanaryWeight {
                app: app.to_string(),
                weight,
            })
            .await?
        {
            Answer::Changed(changed) => Ok(changed),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn promote_canary(&self, app: &str) -> Result<Option<Vec<SocketAddr>>, String> {
        match self
            .call(Call::Promote {
                app: app.to_string(),
            })
            .await?
        {
            Answer::Addresses(addresses) => Ok(addresses),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn canary(&self, app: &str) -> Result<Option<(Vec<SocketAddr>, u8)>, String> {
        match self
            .call(Call::CanaryOf {
                app: app.to_string(),
            })
            .await?
        {
            Answer::Canary(canary) => Ok(canary),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn remove(&self, app: &str) -> Result<(), String> {
        self.done(Call::Remove {
            app: app.to_string(),
        })
        .await
    }

    pub async fn set_health(&self, app: &str, check: Option<Healthcheck>) -> Result<(), String> {
        self.done(Call::Health {
            app: app.to_string(),
            check,
        })
        .await
    }

    /// What traffic each of the app's instances gets: `serving`, `canary` or `out`.
    pub async fn traffic(&self, app: &str) -> Result<HashMap<SocketAddr, String>, String> {
        match self
            .call(Call::Traffic {
                app: app.to_string(),
            })
            .await?
        {
            Answer::Traffic(list) => Ok(list.into_iter().collect()),
            other => Err(unexpected(&other)),
        }
    }

    /// Resolves once none of the app's instances at `addresses` has a request in flight, or
    /// after `max` (also when the data plane cannot be asked: then after `max`).
    pub fn drained(
        self: &Arc<Self>,
        app: &str,
        addresses: &[SocketAddr],
        max: Duration,
    ) -> BoxFuture<'static, ()> {
        let (link, app, addresses) = (self.clone(), app.to_string(), addresses.to_vec());
        async move {
            if addresses.is_empty() {
                return;
            }
            let started = Instant::now();
            let call = Call::Drained {
                app,
                addresses,
                max_ms: max.as_millis() as u64,
            };
            if let Err(error) = link.call(call).await {
                tracing::warn!(%error, "drain not confirmed by the data plane; waiting it out");
                tokio::time::sleep(max.saturating_sub(started.elapsed())).await;
            }
        }
        .boxed()
    }

    pub async fn set_domains(&self, domains: HashMap<String, String>) -> Result<(), String> {
        self.done(Call::Domains(domains)).await
    }

    pub async fn set_tokens(&self, tokens: HashMap<String, (i64, String)>) -> Result<(), String> {
        self.done(Call::Tokens(tokens)).await
    }

    pub async fn challenge(&self, token: &str, answer: Option<String>) -> Result<(), String> {
        self.done(Call::Challenge {
            token: token.to_string(),
            answer,
        })
        .await
    }

    pub async fn reload_certs(&self) -> Result<(), String> {
        self.done(Call::ReloadCerts).await
    }

    pub async fn retain(&self, apps: Vec<String>) -> Result<(), String> {
        self.done(Call::Retain { apps }).await
    }

    /// Tells `/metrics` of a finished deploy or build, or a gone app; a data plane that cannot
    /// be told is logged, never an error of the operation.
    pub async fn observe(&self, observed: Observed) {
        if let Err(error) = self.done(Call::Observe(observed)).await {
            tracing::warn!(%error, "metrics not recorded");
        }
    }

    /// The app's port as a deploy target sees it.
    pub fn app_port(self: &Arc<Self>, app: &str, port: u16) -> AppPort {
        AppPort {
            link: self.clone(),
            app: app.to_string(),
            port,
            drain: self.drain,
        }
    }
}

fn unexpected(answer: &Answer) -> String {
    format!("the data plane answered {answer:?}: is it an older berth? run install.sh again")
}

/// The app's port and host, as a deploy target sees them: the current release's instances.
pub struct AppPort {
    link: Arc<Link>,
    app: String,
    port: u16,
    drain: Duration,
}

impl Serving for AppPort {
    fn serve<'a>(&'a self, addresses: &'a [SocketAddr]) -> BoxFuture<'a, Result<(), String>> {
        self.link.point(&self.app, self.port, addresses).boxed()
    }

    fn drained(&self, addresses: &[SocketAddr]) -> BoxFuture<'static, ()> {
        self.link.drained(&self.app, addresses, self.drain)
    }
}
