//! The data plane: a process of its own (`berth dataplane`) that serves the apps' traffic (the
//! HTTP(S) router, each app's stable port, `/metrics`) while the control plane (`berth serve`:
//! SSH, pushes, commands, the reconciler) restarts, is upgraded or crashes.
//!
//! - The control plane tells it what to serve over `<data_dir>/run/plane.sock` (`wire`); its
//!   handle is `Link`. `berth serve` starts a data plane when none answers, else adopts the one
//!   running.
//! - It keeps its table (every app's serving set, port, canary and health check; custom domains;
//!   inbound tokens) in `<data_dir>/run/dataplane.json`, written atomically on every change, so
//!   it can restart too.
//! - A restart or upgrade of the data plane itself hands the listening sockets over, as nginx
//!   does for a new binary: on `SIGUSR2` it starts the binary at its path anew with every
//!   listening socket inherited, waits until the new process says it serves, then stops
//!   accepting, lets its connections finish (each HTTP/1 response closes its connection, so
//!   clients come back to the new process) and exits. No connection is refused in between:
//!   both processes accept from the same sockets until the old one stops.
//! - `SIGTERM` (`berth stop`) stops it.

pub mod link;
pub mod wire;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

pub use link::{AppPort, Link};
use wire::{Answer, Call, FromPlane, Observed, Request};

use crate::config::Config;
use crate::plane::Plane;
use crate::route::Served;

/// The data plane's socket, table and process id, under `<data_dir>/run` (0700).
pub fn socket_path(config: &Config) -> PathBuf {
    link::socket_path(config)
}

fn run_dir(config: &Config) -> PathBuf {
    config.data_dir.join("run")
}

fn table_path(config: &Config) -> PathBuf {
    run_dir(config).join("dataplane.json")
}

pub fn pid_path(config: &Config) -> PathBuf {
    run_dir(config).join("dataplane.pid")
}

/// The control plane's pid file.
pub fn control_pid_path(config: &Config) -> PathBuf {
    run_dir(config).join("berth.pid")
}

/// Takes the control plane's lock on the data dir (two control planes never run at once) and
/// writes its pid file; the lock lasts as long as the returned file is open.
pub fn control_lock(config: &Config) -> Result<std::fs::File, String> {
    let dir = make_run_dir(config)?;
    let path = dir.join("control.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(control_pid_path(config)).unwrap_or_default();
        return Err(format!(
            "another berth serves this data dir ({}, pid {}): stop it first (berth stop)",
            config.data_dir.display(),
            pid.trim()
        ));
    }
    write_atomically(
        &control_pid_path(config),
        format!("{}\n", std::process::id()).as_bytes(),
    )?;
    Ok(file)
}

/// The live process whose pid `path` holds (a zombie, exited but not reaped, is not live).
fn pid_in(path: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (pid > 0 && alive(pid)).then_some(pid)
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    });
    if zombie {
        // Ours when this process started it: reaped here.
        // SAFETY: a non-blocking wait on one pid.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
    exists && !zombie
}

async fn gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `berth stop`: the control plane first (TERM: it finishes what is under way, up to
/// `shutdown_timeout`), then the data plane.
pub async fn stop_all(config: &Config) -> Result<String, String> {
    let mut said = Vec::new();
    if let Some(pid) = pid_in(&control_pid_path(config)) {
        // SAFETY: a signal to the pid the control plane wrote.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if !gone(pid, config.shutdown_timeout() + Duration::from_secs(5)).await {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            gone(pid, Duration::from_secs(5)).await;
        }
        said.push(format!("-----> stopped the control plane (pid {pid})"));
    }
    if let Some(pid) = pid_in(&pid_path(config)) {
        // SAFETY: a signal to the pid the data plane wrote.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if !gone(pid, Duration::from_secs(10)).await {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            gone(pid, Duration::from_secs(5)).await;
        }
        said.push(format!(
            "-----> stopped the data plane (pid {pid}): apps are no longer served"
        ));
    }
    if said.is_empty() {
        said.push("-----> nothing was running".into());
    }
    Ok(said.join("\n"))
}

/// Makes `<data_dir>/run`, root's only.
pub fn make_run_dir(config: &Config) -> Result<PathBuf, String> {
    let dir = run_dir(config);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
    Ok(dir)
}

/// What the data plane keeps across its restarts.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Table {
    apps: HashMap<String, Served>,
    domains: HashMap<String, String>,
    tokens: HashMap<String, (i64, String)>,
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, synced, renamed over).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.persist(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// The listening sockets one data plane hands the next: environment `BERTH_PLANE_FDS`, e.g.
/// `http=3,https=4,admin=5,port=6,port=7`.
const FDS_VAR: &str = "BERTH_PLANE_FDS";
/// The pipe a new data plane writes `ready` to once it serves.
const READY_VAR: &str = "BERTH_PLANE_READY_FD";

#[derive(Default)]
struct Inherited {
    http: Option<std::net::TcpListener>,
    https: Option<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    ports: Vec<std::net::TcpListener>,
}

fn inherited() -> Inherited {
    let mut got = Inherited::default();
    let Ok(list) = std::env::var(FDS_VAR) else {
        return got;
    };
    // SAFETY: unset before any thread is started, in the process that was given them.
    unsafe { std::env::remove_var(FDS_VAR) };
    for item in list.split(',') {
        let Some((what, fd)) = item.split_once('=') else {
            continue;
        };
        let Ok(fd) = fd.parse::<RawFd>() else {
            continue;
        };
        // SAFETY: the previous data plane passed these descriptors, open, for us alone.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        set_cloexec(fd);
        match what {
            "http" => got.http = Some(listener),
            "https" => got.https = Some(listener),
            "admin" => got.admin = Some(listener),
            _ => got.ports.push(listener),
        }
    }
    got
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

async fn listen(
    given: Option<std::net::TcpListener>,
    address: Option<SocketAddr>,
    what: &str,
    key: &str,
) -> Result<Option<std::net::TcpListener>, String> {
    if let Some(listener) = given {
        return Ok(Some(listener));
    }
    let Some(address) = address else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
        format!(
            "cannot listen on {address} for {what}: {e}; set {key} to a free address, or \"off\""
        )
    })?;
    listener.into_std().map(Some).map_err(|e| e.to_string())
}

/// The data plane's listeners, kept to hand over.
struct Listeners {
    http: Option<std::net::TcpListener>,
    https: Option<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
}

struct Server {
    plane: Arc<Plane>,
    table_path: PathBuf,
    /// Where forwarded triggers and counts go: the control plane connected last.
    control: Mutex<Option<mpsc::Sender<FromPlane>>>,
    /// Set when this process stops taking calls (handing over, or stopping).
    closed: watch::Sender<bool>,
    /// The table as last written.
    saved: Mutex<Vec<u8>>,
}

/// A data plane serving: what `run` keeps to hand over or stop.
struct Serving {
    server: Arc<Server>,
    listeners: Listeners,
    accepting: tokio::task::JoinHandle<()>,
}

/// Starts serving: the listeners (inherited or bound), the saved table, the router, the
/// control socket. For `run`, and in-process for the application layer's unit tests.
async fn start(config: &Config) -> Result<Serving, String> {
    let given = inherited();
    make_run_dir(config)?;
    let plane = Plane::new(config)?;
    let http = listen(
        given.http,
        config.http_listen(),
        "the HTTP router",
        "http_listen",
    )
    .await?;
    let https = listen(given.https, config.https_listen(), "HTTPS", "https_listen").await?;
    let admin = listen(
        given.admin,
        config.admin_listen(),
        "/metrics",
        "admin_listen",
    )
    .await?;
    plane.routes().adopt_listeners(given.ports);
    let table: Table = match std::fs::read(table_path(config)) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::error!(%error, "the saved table is unreadable: starting with none");
            Table::default()
        }),
        Err(_) => Table::default(),
    };
    for (app, served) in &table.apps {
        if let Err(error) = plane.routes().restore(app, served) {
            tracing::error!(%app, %error, "not served");
        }
    }
    plane.set_domains(table.domains);
    plane.inbound().set_tokens(table.tokens);
    let server = Arc::new(Server {
        plane: plane.clone(),
        table_path: table_path(config),
        control: Mutex::new(None),
        closed: watch::channel(false).0,
        saved: Mutex::default(),
    });
    server.save();
    let listeners = Listeners {
        http: clone(&http)?,
        https: clone(&https)?,
        admin: clone(&admin)?,
    };
    let tokio_listener =
        |l: std::net::TcpListener| tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string());
    if let Some(http) = http {
        crate::router::serve(plane.clone(), tokio_listener(http)?, None)?;
    }
    if let Some(https) = https {
        let weak = Arc::downgrade(&plane);
        let tls = crate::tls::server_config(Box::new(move |name| {
            let plane = weak.upgrade()?;
            let app = plane.app_for_host(name)?;
            plane.certs().key_for(&app, name)
        }))?;
        crate::router::serve(plane.clone(), tokio_listener(https)?, Some(tls))?;
    }
    if let Some(admin) = admin {
        tokio::spawn(crate::router::serve_admin(
            plane.clone(),
            tokio_listener(admin)?,
        ));
    }
    tokio::spawn(forward_events(server.clone()));
    let control = bind_control(config)?;
    let accepting = tokio::spawn(accept_control(server.clone(), control));
    Ok(Serving {
        server,
        listeners,
        accepting,
    })
}

/// A data plane in this process (the application layer's unit tests): no signals, no pid file.
pub async fn start_in_process(config: &Config) -> Result<(), String> {
    start(config).await.map(|_| ())
}

/// Runs the data plane until it is stopped or has handed over to a newer one.
pub async fn run(config: Config, config_file: Option<PathBuf>) -> Result<(), String> {
    let Serving {
        server,
        listeners,
        accepting,
    } = start(&config).await?;
    let plane = server.plane.clone();
    let mut accepting = Some(accepting);
    let pid_file = pid_path(&config);
    write_atomically(&pid_file, format!("{}\n", std::process::id()).as_bytes())?;
    tell_ready();
    notify_systemd();
    tracing::info!(pid = std::process::id(), "data plane serving");
    let mut usr2 = signal(libc::SIGUSR2)?;
    let mut term = signal(libc::SIGTERM)?;
    let mut int = signal(libc::SIGINT)?;
    loop {
        tokio::select! {
            _ = usr2.recv() => {
                // Stop taking calls first: the new process reads the table this one saved.
                server.closed.send_replace(true);
                if let Some(task) = accepting.take() {
                    task.abort();
                }
                server.save();
                match hand_over(&plane, &listeners, config_file.as_deref()).await {
                    Ok(child) => {
                        tracing::info!(new = child, "handed over: draining");
                        drain(&plane, config.drain_timeout()).await;
                        return Ok(());
                    }
                    Err(error) => {
                        tracing::error!(%error, "handover failed: serving on");
                        server.closed.send_replace(false);
                        let control = bind_control(&config)?;
                        accepting = Some(tokio::spawn(accept_control(server.clone(), control)));
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("data plane stopping");
    server.closed.send_replace(true);
    let _ = std::fs::remove_file(socket_path(&config));
    if std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == std::process::id().to_string())
    {
        let _ = std::fs::remove_file(&pid_file);
    }
    drain(&plane, Duration::from_secs(2)).await;
    Ok(())
}

fn clone(
    listener: &Option<std::net::TcpListener>,
) -> Result<Option<std::net::TcpListener>, String> {
    listener
        .as_ref()
        .map(|l| l.try_clone())
        .transpose()
        .map_err(|e| format!("cannot keep a listener: {e}"))
}

fn signal(number: i32) -> Result<tokio::signal::unix::Signal, String> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(number))
        .map_err(|e| format!("cannot handle signal {number}: {e}"))
}

/// Binds the control socket under a temporary name and renames it into place, so a data plane
/// taking over replaces its predecessor's socket in one step.
fn bind_control(config: &Config) -> Result<UnixListener, String> {
    let path = socket_path(config);
    let temporary = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary)
        .map_err(|e| format!("cannot bind {}: {e}", temporary.display()))?;
    std::fs::rename(&temporary, &path)
        .map_err(|e| format!("cannot move the socket to {}: {e}", path.display()))?;
    Ok(listener)
}

/// Tells the data plane that started this one (handover) that it serves.
fn tell_ready() {
    let Some(fd) = std::env::var(READY_VAR)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return;
    };
    // SAFETY: unset before other threads read the environment; the descriptor is ours.
    unsafe { std::env::remove_var(READY_VAR) };
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    let _ = pipe.write_all(b"ready\n");
}

/// Under systemd (`Type=notify`, `NotifyAccess=all`): this process is the unit's main process
/// and serves. After a handover the new process says so, so systemd follows it.
fn notify_systemd() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let sent = match path.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
                .and_then(|address| socket.send_to_addr(message.as_bytes(), &address))
        }
        None => socket.send_to(message.as_bytes(), &path),
    };
    if let Err(error) = sent {
        tracing::warn!(%error, "cannot notify systemd");
    }
}

impl Server {
    /// Saves the table (a failed write is logged: the data plane serves on).
    fn save(&self) {
        let table = Table {
            apps: self.plane.routes().snapshot(),
            domains: self.plane.domains(),
            tokens: self.plane.inbound().tokens(),
        };
        let bytes = serde_json::to_vec(&table).unwrap_or_default();
        // The reconciler re-points every app every few seconds, mostly to the same set: the
        // file (and its fsync) is written only when the table changed.
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        if *saved == bytes {
            return;
        }
        match write_atomically(&self.table_path, &bytes) {
            Ok(()) => *saved = bytes,
            Err(error) => tracing::error!(%error, "table not saved"),
        }
    }

    /// Carries out one call (a drain is awaited by the caller's task).
    fn apply(&self, call: Call) -> Result<Answer, String> {
        let routes = self.plane.routes();
        let answer = match call {
            Call::Reserve => return routes.free_port().map(Answer::Port),
            Call::Point {
                app,
                port,
                addresses,
            } => routes
                .point(&app, port, &addresses)
                .map(|()| Answer::Done)?,
            Call::Canary { app, canary } => {
                routes.point_canary(&app, canary.as_ref().map(|(a, w)| (a.as_slice(), *w)));
                Answer::Done
            }
            Call::CanaryWeight { app, weight } => {
                Answer::Changed(routes.set_canary_weight(&app, weight))
            }
            Call::Promote { app } => Answer::Addresses(routes.promote_canary(&app)),
            Call::CanaryOf { app } => return Ok(Answer::Canary(routes.canary(&app))),
            Call::Remove { app } => {
                routes.remove(&app);
                Answer::Done
            }
            Call::Health { app, check } => {
                routes.set_health(&app, check);
                Answer::Done
            }
            Call::Traffic { app } => {
                let traffic = routes.traffic(&app);
                return Ok(Answer::Traffic(
                    traffic
                        .into_iter()
                        .map(|(a, what)| (a, what.to_string()))
                        .collect(),
                ));
            }
            Call::Domains(domains) => {
                self.plane.set_domains(domains);
                Answer::Done
            }
            Call::Tokens(tokens) => {
                self.plane.inbound().set_tokens(tokens);
                Answer::Done
            }
            Call::Challenge { token, answer } => {
                match answer {
                    Some(answer) => self.plane.challenges().set(&token, answer),
                    None => self.plane.challenges().clear(&[token]),
                }
                return Ok(Answer::Done);
            }
            Call::ReloadCerts => {
                self.plane.certs().reload();
                return Ok(Answer::Done);
            }
            Call::Observe(observed) => {
                let metrics = self.plane.metrics();
                match observed {
                    Observed::Deploy { app, ok, secs } => {
                        metrics.deploy(&app, ok, Duration::from_secs_f64(secs))
                    }
                    Observed::Build { app, ok, secs } => {
                        metrics.build(&app, ok, Duration::from_secs_f64(secs))
                    }
                    Observed::Forget { app } => metrics.forget(&app),
                }
                return Ok(Answer::Done);
            }
            Call::Retain { apps } => {
                for app in routes.snapshot().into_keys() {
                    if !apps.contains(&app) {
                        tracing::info!(%app, "route dropped: no such app");
                        routes.remove(&app);
                    }
                }
                Answer::Done
            }
            Call::Drained { .. } | Call::Subscribe => return Ok(Answer::Done),
        };
        self.save();
        Ok(answer)
    }
}

async fn accept_control(server: Arc<Server>, listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(control_connection(server.clone(), stream));
    }
}

/// One control plane's connection: calls in order, each answered; drains answered when done.
async fn control_connection(server: Arc<Server>, stream: UnixStream) {
    let (reader, mut writer) = stream.into_split();
    let (send, mut outgoing) = mpsc::channel::<FromPlane>(1024);
    let write = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            if writer.write_all(&wire::line(&message)).await.is_err() {
                break;
            }
        }
    });
    let mut closed = server.closed.subscribe();
    let mut lines = tokio::io::BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut bounded = (&mut lines).take(wire::MAX_LINE as u64);
        let read = tokio::select! {
            read = bounded.read_until(b'\n', &mut line) => read,
            _ = closed.wait_for(|c| *c) => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let request: Request = match serde_json::from_slice(&line) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "unreadable call");
                continue;
            }
        };
        let id = request.id;
        let done = FromPlane::Reply {
            id,
            result: Ok(Answer::Done),
        };
        if let Call::Subscribe = request.call {
            *server.control.lock().unwrap_or_else(|p| p.into_inner()) = Some(send.clone());
            let _ = send.send(done).await;
            continue;
        }
        if let Call::Drained {
            app,
            addresses,
            max_ms,
        } = request.call
        {
            let (plane, send) = (server.plane.clone(), send.clone());
            tokio::spawn(async move {
                plane
                    .routes()
                    .drained(&app, &addresses, Duration::from_millis(max_ms))
                    .await;
                let _ = send.send(done).await;
            });
            continue;
        }
        let result = server.apply(request.call);
        if send.send(FromPlane::Reply { id, result }).await.is_err() {
            break;
        }
    }
    drop(send);
    write.abort();
}

/// Hands inbound triggers to the control plane (holding them while none is connected), and the
/// wrong-token counts each second.
async fn forward_events(server: Arc<Server>) {
    let Some(mut triggers) = server.plane.inbound().take_receiver() else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            trigger = triggers.recv() => {
                let Some(trigger) = trigger else { return };
                let app_id = trigger.app_id;
                let mut message = FromPlane::Trigger(trigger);
                loop {
                    let control = server.control.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Some(control) = control {
                        match control.send(message).await {
                            Ok(()) => break,
                            Err(returned) => message = returned.0,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                server.plane.inbound().forwarded(app_id);
            }
            _ = tick.tick() => {
                let refused: Vec<(i64, u64)> = server.plane.inbound().take_refused().into_iter().collect();
                let control = server.control.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let (false, Some(control)) = (refused.is_empty(), control) {
                    let _ = control.try_send(FromPlane::Refused(refused));
                }
            }
        }
    }
}

/// Starts the binary at this one's path as the next data plane, with every listening socket
/// inherited; returns its pid once it says it serves.
async fn hand_over(
    plane: &Plane,
    listeners: &Listeners,
    config_file: Option<&Path>,
) -> Result<u32, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find berth's binary: {e}"))?;
    // A binary replaced by an upgrade reads as "PATH (deleted)": the new one is at PATH.
    let exe = PathBuf::from(
        exe.to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_string(),
    );
    let mut fds: Vec<(String, RawFd)> = Vec::new();
    for (what, listener) in [
        ("http", &listeners.http),
        ("https", &listeners.https),
        ("admin", &listeners.admin),
    ] {
        if let Some(listener) = listener {
            fds.push((what.to_string(), listener.as_raw_fd()));
        }
    }
    for fd in plane.routes().listener_fds() {
        fds.push(("port".to_string(), fd));
    }
    let (read_end, write_end) = pipe()?;
    let list: Vec<String> = fds.iter().map(|(w, fd)| format!("{w}={fd}")).collect();
    let mut command = std::process::Command::new(&exe);
    command.arg("dataplane");
    if let Some(file) = config_file {
        command.arg("--config").arg(file);
    }
    command
        .env(FDS_VAR, list.join(","))
        .env(READY_VAR, write_end.to_string())
        .stdin(std::process::Stdio::null());
    let inherit: Vec<RawFd> = fds.iter().map(|(_, fd)| *fd).chain([write_end]).collect();
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                for fd in &inherit {
                    let flags = libc::fcntl(*fd, libc::F_GETFD);
                    if flags >= 0 {
                        libc::fcntl(*fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                    }
                }
                libc::setsid();
                Ok(())
            });
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    // SAFETY: our end of the pipe; the child has its own copy.
    unsafe { libc::close(write_end) };
    let mut ready = tokio::io::BufReader::new(unsafe { tokio::fs::File::from_raw_fd(read_end) });
    let mut line = String::new();
    let said = tokio::time::timeout(Duration::from_secs(30), ready.read_line(&mut line)).await;
    if matches!(said, Ok(Ok(_))) && line.trim() == "ready" {
        let pid = child.id();
        // Nobody waits for it here: it outlives this process.
        std::mem::forget(child);
        return Ok(pid);
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "the new data plane ({}) did not say it serves within 30 s: see its log",
        exe.display()
    ))
}

fn pipe() -> Result<(RawFd, RawFd), String> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!(
            "cannot make a pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok((fds[0], fds[1]))
}

/// After a handover or at a stop: accepts no more, lets the connections in progress finish
/// (at most `max`).
async fn drain(plane: &Plane, max: Duration) {
    plane.start_draining();
    plane.routes().stop_accepting();
    crate::router::stop_accepting(plane);
    let deadline = Instant::now() + max;
    while Instant::now() < deadline
        && (plane.routes().active_connections() > 0 || crate::router::active_connections(plane) > 0)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keeps a data plane running while this control plane runs (not under systemd, which
/// restarts its unit): when none answers and the one in the pid file is gone (a crash, a kill),
/// starts one again, which serves from the saved table.
pub async fn keep_alive(config: Config, config_file: Option<PathBuf>) {
    if std::env::var("BERTH_DATAPLANE").is_ok_and(|v| v == "external") {
        return;
    }
    let socket = socket_path(&config);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A handover closes the socket for a moment while the old process still lives.
        if UnixStream::connect(&socket).await.is_ok() || pid_in(&pid_path(&config)).is_some() {
            continue;
        }
        tracing::error!("the data plane is gone: starting it again");
        if let Err(error) = ensure(&config, config_file.as_deref()).await {
            tracing::error!(%error, "the data plane did not come back");
        }
    }
}

/// Makes sure a data plane serves for this config: adopts the one answering on its socket, or
/// starts one (detached, in a session of its own, logging to `<data_dir>/logs/dataplane.log`)
/// and waits until it answers. With `BERTH_DATAPLANE=external` (systemd runs it as a unit of its
/// own) it only waits.
pub async fn ensure(config: &Config, config_file: Option<&Path>) -> Result<(), String> {
    let socket = socket_path(config);
    if UnixStream::connect(&socket).await.is_ok() {
        tracing::info!("adopting the running data plane");
        return Ok(());
    }
    let external = std::env::var("BERTH_DATAPLANE").is_ok_and(|v| v == "external");
    let log_path = config.logs_dir().join("dataplane.log");
    let mut child = None;
    if !external {
        make_run_dir(config)?;
        std::fs::create_dir_all(config.logs_dir())
            .map_err(|e| format!("cannot create {}: {e}", config.logs_dir().display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find berth's binary: {e}"))?;
        let mut command = std::process::Command::new(exe);
        command.arg("dataplane");
        if let Some(file) = config_file {
            command.arg("--config").arg(file);
        }
        command
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid is async-signal-safe.
            unsafe {
                command.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
        }
        let spawned = command
            .spawn()
            .map_err(|e| format!("cannot start the data plane: {e}"))?;
        tracing::info!(pid = spawned.id(), "data plane started");
        child = Some((spawned, start));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if UnixStream::connect(&socket).await.is_ok() {
            if let Some((spawned, _)) = child {
                std::mem::forget(spawned);
            }
            return Ok(());
        }
        if let Some((spawned, start)) = child.as_mut()
            && spawned.try_wait().ok().flatten().is_some()
        {
            let log = std::fs::read(&log_path).unwrap_or_default();
            let said =
                String::from_utf8_lossy(&log[(*start as usize).min(log.len())..]).to_string();
            let last = said
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            return Err(format!("the data plane did not start: {last}"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no data plane answers on {} (see {})",
                socket.display(),
                log_path.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
