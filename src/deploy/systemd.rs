//! The systemd target: every process instance is a systemd unit that wraps `docker run` (nap's
//! design), rendered from `templates/systemd/process.service.tera`, on a host where systemd is
//! PID 1.
//!
//! Units are named `berth-APP.vN-PROCESS-I.service` (`names::unit_name`) and run the container
//! of the same name (`--rm`: it goes with its unit). The unit files under [`UNIT_DIR`] are the
//! record of what the target runs for an app; systemd restarts a crashed instance itself
//! (`Restart=always`), and the reconciler starts what was stopped or lost. Each web instance
//! publishes on a host port berth picked for it (its unit keeps it across restarts), and the
//! containers carry the same `berth.*` labels as the docker target's, plus `berth.unit`: the
//! engine tells where each running instance answers.
//!
//! A deploy writes the release's env file (config vars, root-only, `render::env_file`), then
//! each unit (atomically: a temporary file renamed into place), reloads systemd, starts the
//! units and waits until each web instance answers (or its health check passes); only then
//! do they become the serving set, and the older release's units are stopped and removed once
//! their requests are done. A unit that fails is removed with everything written for it: the
//! serving release is left alone. A restart is start-first too: a spare instance (`web + 1`)
//! serves while each instance restarts in turn.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::backend::Backend;
use super::inventory::{ContainerReport, instances_of};
use super::names::{app_network, parse_unit_name, unit_container, unit_name};
use super::network::ensure_network;
use super::probe::{answers, probe};
use super::render::{ENV_DIR, env_file};
use super::serving::Publish;
use super::spec::{DeploySpec, Instance};
use crate::output::Output;

/// Where berth writes its units (the administrator's directory: they survive a reboot, and
/// the enabled ones start at boot).
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The systemd target.
pub struct Units;

impl Backend for Units {
    fn deploy<'a>(
        &'a self,
        docker: &'a Docker,
        spec: &'a DeploySpec,
        out: &'a Output,
        publish: Publish<'a>,
    ) -> BoxFuture<'a, Result<Vec<Instance>, String>> {
        deploy(docker, spec, out, publish).boxed()
    }

    fn scale<'a>(
        &'a self,
        docker: &'a Docker,
        spec: &'a DeploySpec,
        out: &'a Output,
        publish: Publish<'a>,
    ) -> BoxFuture<'a, Result<Vec<Instance>, String>> {
        scale(docker, spec, out, publish).boxed()
    }

    fn restart<'a>(
        &'a self,
        docker: &'a Docker,
        spec: &'a DeploySpec,
        out: &'a Output,
        publish: Publish<'a>,
    ) -> BoxFuture<'a, Result<(), String>> {
        restart(docker, spec, out, publish).boxed()
    }

    fn stop<'a>(
        &'a self,
        docker: &'a Docker,
        app: &'a str,
    ) -> BoxFuture<'a, Result<usize, String>> {
        stop_all(docker, app).boxed()
    }

    fn destroy<'a>(
        &'a self,
        docker: &'a Docker,
        app: &'a str,
        _work_dir: &'a Path,
    ) -> BoxFuture<'a, Result<usize, String>> {
        stop_all(docker, app).boxed()
    }
}

/// Whether systemd is PID 1 here (else the target is refused, and there is nothing of it to
/// stop).
pub fn systemd_is_init() -> bool {
    std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

/// Whether this host can apply the target: systemd as PID 1, `systemctl`, and the docker CLI
/// the units run.
pub fn check() -> Result<(), String> {
    if !systemd_is_init() {
        let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
        return Err(format!(
            "the systemd target needs systemd as PID 1 on this host, and it is {:?}",
            pid1.trim()
        ));
    }
    for program in [
        "/usr/bin/docker",
        "/usr/bin/systemctl",
        "/usr/bin/journalctl",
    ] {
        if !Path::new(program).is_file() {
            return Err(format!(
                "the systemd target needs {program} on this host (its units run the docker CLI)"
            ));
        }
    }
    Ok(())
}

/// One of berth's unit files for an app.
#[derive(Debug, Clone)]
pub struct UnitFile {
    pub name: String,
    pub release: i64,
    pub process: String,
    pub index: u32,
}

/// The app's unit files (all releases), by release, process and instance.
pub fn unit_files(app: &str) -> Vec<UnitFile> {
    if !systemd_is_init() {
        return Vec::new();
    }
    let mut units: Vec<UnitFile> = std::fs::read_dir(UNIT_DIR)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    let (owner, release, process, index) = parse_unit_name(&name)?;
                    (owner == app).then_some(UnitFile {
                        name,
                        release,
                        process,
                        index,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    units.sort_by(|a, b| (a.release, &a.process, a.index).cmp(&(b.release, &b.process, b.index)));
    units
}

/// What systemd says of a unit.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UnitState {
    /// `active`, `activating`, `inactive`, `failed`, ...
    pub active: String,
    /// `running`, `auto-restart`, `dead`, ...
    pub sub: String,
    /// Restarts by `Restart=always` since the unit was last started by hand.
    pub restarts: u32,
    /// The exit status of the unit's last main process.
    pub status: i64,
}

impl UnitState {
    /// Started and not given up on (running, starting, or waiting to restart).
    pub fn wanted_up(&self) -> bool {
        matches!(self.active.as_str(), "active" | "activating" | "reloading")
    }
}

/// `systemctl ARGS`: its stdout, or an error naming the command and what it said.
async fn systemctl(args: &[&str]) -> Result<String, String> {
    let output = tokio::process::Command::new("systemctl")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The state of a unit.
pub async fn unit_state(unit: &str) -> Result<UnitState, String> {
    Ok(unit_states(&[unit]).await?.pop().unwrap_or_default())
}

/// The states of several units, in their order, from one `systemctl show` (it prints one
/// block per unit, blocks apart by an empty line): the reconciler's round and `ps:report` ask
/// once per app, not once per unit.
pub async fn unit_states(units: &[&str]) -> Result<Vec<UnitState>, String> {
    if units.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec![
        "show",
        "-p",
        "ActiveState,SubState,NRestarts,ExecMainStatus",
    ];
    args.extend(units);
    let text = systemctl(&args).await?;
    let mut states = Vec::with_capacity(units.len());
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut state = UnitState::default();
        for line in block.lines() {
            match line.split_once('=') {
                Some(("ActiveState", v)) => state.active = v.to_string(),
                Some(("SubState", v)) => state.sub = v.to_string(),
                Some(("NRestarts", v)) => state.restarts = v.parse().unwrap_or(0),
                Some(("ExecMainStatus", v)) => state.status = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        states.push(state);
    }
    if states.len() != units.len() {
        return Err(format!(
            "systemctl show gave {} states for {} units",
            states.len(),
            units.len()
        ));
    }
    Ok(states)
}

/// Writes `text` to `dir/name` with `mode`: a temporary file in the same directory, synced,
/// renamed into place. A reader (systemd, docker) sees the old file or the new one, never half.
fn write_atomic(dir: &Path, name: &str, text: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let failed = |e: std::io::Error| format!("cannot write {}/{name}: {e}", dir.display());
    let mut file = tempfile::Builder::new()
        .prefix(".berth-")
        .tempfile_in(dir)
        .map_err(failed)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.as_file().sync_all().map_err(failed)?;
    file.persist(dir.join(name)).map_err(|e| failed(e.error))?;
    Ok(())
}

/// A private directory (0700), made if missing.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot protect {}: {e}", dir.display()))
}

/// The release's config as `docker run --env-file` reads it: `KEY=VALUE` lines, root-only.
/// A value with a line break cannot be written so (the file has no quoting): refused by name.
pub fn env_file_text(env: &[(String, String)]) -> Result<String, String> {
    let mut text = String::new();
    for (key, value) in env {
        if value.contains(['\n', '\r']) || key.contains(['\n', '\r', '=']) {
            return Err(format!(
                "config var {key} holds a line break, which the systemd target's env file (docker run --env-file) cannot carry: set it without one, or use the docker target"
            ));
        }
        text += &format!("{key}={value}\n");
    }
    Ok(text)
}

fn write_env(spec: &DeploySpec) -> Result<(), String> {
    let text = env_file_text(&spec.env)?;
    let path = env_file(&spec.app, spec.release);
    let path = Path::new(&path);
    let dir = path
        .parent()
        .ok_or("internal error: env file has no directory")?;
    private_dir(Path::new(ENV_DIR))?;
    private_dir(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    write_atomic(dir, name, &text, 0o600)
}

/// Removes the env files of the app's releases that no unit uses any more (all, with none).
fn forget_env_files(app: &str, keep: &[i64]) {
    let dir = Path::new(ENV_DIR).join(app);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let release = name.to_str().and_then(|n| {
                n.strip_prefix('v')?
                    .strip_suffix(".env")?
                    .parse::<i64>()
                    .ok()
            });
            if release.is_none_or(|r| !keep.contains(&r)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(&dir);
}

/// Refused before anything is written: what the target cannot do for this spec.
fn refuse_unsupported(spec: &DeploySpec) -> Result<(), String> {
    check()?;
    if !spec.links.is_empty() {
        return Err(format!(
            "the systemd target does not join linked apps' networks ({} is linked to {}): unlink them or use the docker target",
            spec.app,
            spec.links.join(", ")
        ));
    }
    env_file_text(&spec.env).map(|_| ())
}

/// Writes the unit of instance `index` of `process` from the rendered ones, enables and starts
/// it. Gives the unit's name.
async fn start_unit(
    docker: &Docker,
    spec: &DeploySpec,
    process: &str,
    index: u32,
    out: &Output,
) -> Result<String, String> {
    let mut names = start_units(docker, spec, process, &[index], out).await?;
    Ok(names.remove(0))
}

/// Writes the units of these instances of `process`, then enables and starts them all with one
/// `systemctl enable --now` (which reloads systemd first): a formation starts at once, not one
/// unit after the other. On failure nothing written stays.
async fn start_units(
    docker: &Docker,
    spec: &DeploySpec,
    process: &str,
    indexes: &[u32],
    out: &Output,
) -> Result<Vec<String>, String> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    ensure_network(docker, &app_network(&spec.app)).await?;
    crate::registry::ensure_local(docker, &spec.image, spec.digest.as_deref(), out).await?;
    let mut names = Vec::new();
    let mut written = Ok(());
    for index in indexes {
        let name = unit_name(&spec.app, spec.release, process, *index);
        let Some(unit) = spec.units.iter().find(|u| u.name == name) else {
            written = Err(format!("internal error: the unit {name} was not rendered"));
            break;
        };
        written = write_atomic(Path::new(UNIT_DIR), &name, &unit.text, 0o644);
        if written.is_err() {
            break;
        }
        names.push(name);
    }
    let started = match written {
        Ok(()) => {
            let mut args = vec!["enable", "--now", "--quiet"];
            args.extend(names.iter().map(String::as_str));
            systemctl(&args).await.map(|_| ())
        }
        Err(message) => Err(message),
    };
    if let Err(message) = started {
        remove_units(docker, &spec_units(&names)).await;
        return Err(message);
    }
    Ok(names)
}

fn spec_units(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// Stops, disables and removes units (and their containers, should `docker run --rm` not have
/// removed them yet), then reloads systemd once.
async fn remove_units(docker: &Docker, names: &[&str]) {
    if names.is_empty() {
        return;
    }
    let mut args = vec!["disable", "--now", "--quiet"];
    args.extend(names);
    if let Err(error) = systemctl(&args).await {
        tracing::warn!(%error, "stopping units");
    }
    for name in names {
        let _ = std::fs::remove_file(Path::new(UNIT_DIR).join(name));
        super::docker::remove_container(docker, name.trim_end_matches(".service")).await;
    }
    let _ = systemctl(&["daemon-reload"]).await;
    let mut reset = vec!["reset-failed"];
    reset.extend(names);
    let _ = systemctl(&reset).await;
}

/// The last lines a unit wrote (its container's output and systemd's words), to follow an
/// error message.
async fn last_journal(unit: &str) -> String {
    let output = tokio::process::Command::new("journalctl")
        .args(["-u", unit, "-n", "20", "-o", "cat", "--no-pager"])
        .output()
        .await;
    let text = output
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let text = text.trim_end();
    if text.is_empty() {
        String::new()
    } else {
        format!("\n{}\n{text}", crate::store::LOG_LINES_MARKER)
    }
}

/// Where a web instance published on `host_port` answers.
fn instance_address(spec: &DeploySpec, host_port: u16) -> SocketAddr {
    SocketAddr::new(crate::route::reachable(spec.publish_address), host_port)
}

/// The host port berth picked for web instance `index` (rendered into its unit).
fn host_port(spec: &DeploySpec, index: u32) -> Result<u16, String> {
    spec.host_ports
        .get(index as usize - 1)
        .copied()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("internal error: no host port for web.{index}"))
}

/// Waits until the unit's container answers at `address` (or its health check passes); fails
/// when the unit stops or systemd restarts it (more than `restarts_before` restarts), or after
/// `ready_timeout`. Probes only once the engine says the container runs: before that the
/// engine's port proxy holds a connection open without a backend, and a probe would wait on
/// it for nothing.
async fn wait_until_ready(
    docker: &Docker,
    unit: &str,
    address: SocketAddr,
    restarts_before: u32,
    spec: &DeploySpec,
) -> Result<(), String> {
    let deadline = Instant::now() + spec.ready_timeout;
    let still_running = || async {
        let state = unit_state(unit).await?;
        if state.restarts > restarts_before || !state.wanted_up() || state.sub == "auto-restart" {
            return Err(format!(
                "the app exited at start (exit code {}) instead of listening on PORT {}",
                state.status, spec.port
            ));
        }
        Ok(())
    };
    let container = unit.trim_end_matches(".service");
    loop {
        still_running().await?;
        let running = docker
            .inspect_container(container, None)
            .await
            .ok()
            .and_then(|c| c.state?.running)
            == Some(true);
        if running {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the container did not start within {} s (ready_timeout)",
                spec.ready_timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(check) = &spec.health {
        tokio::time::sleep(Duration::from_secs(check.initial_delay)).await;
        let mut last = String::new();
        for attempt in 1..=check.attempts {
            still_running().await?;
            match probe(address, Some(check)).await {
                Ok(()) => return Ok(()),
                Err(reason) => last = reason,
            }
            if attempt < check.attempts {
                tokio::time::sleep(Duration::from_secs(check.wait)).await;
            }
        }
        return Err(format!(
            "the health check failed {} times (app.json healthchecks.web): {last}",
            check.attempts
        ));
    }
    let started = Instant::now();
    loop {
        still_running().await?;
        if answers(address).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the app did not answer on PORT {} within {} s (ready_timeout)",
                spec.port,
                spec.ready_timeout.as_secs()
            ));
        }
        let pause = if started.elapsed() < Duration::from_secs(2) {
            50
        } else {
            200
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Starts web instance `index` of the release as its unit and waits until it answers; on
/// failure the unit is removed, with the reason and its last journal lines.
async fn start_web(
    docker: &Docker,
    spec: &DeploySpec,
    index: u32,
    out: &Output,
) -> Result<Instance, String> {
    let mut started = start_webs(docker, spec, &[index], out).await?;
    Ok(started.remove(0))
}

/// Starts these web instances of the release together and waits until every one answers (each
/// watched on its own, at once); if any does not, all of them are removed, and the error names
/// the first that failed, with its last journal lines.
async fn start_webs(
    docker: &Docker,
    spec: &DeploySpec,
    indexes: &[u32],
    out: &Output,
) -> Result<Vec<Instance>, String> {
    let ports: Vec<u16> = indexes
        .iter()
        .map(|i| host_port(spec, *i))
        .collect::<Result<_, _>>()?;
    let units = start_units(docker, spec, "web", indexes, out).await?;
    for unit in &units {
        out.detail(&format!(
            "started {unit}; waiting for it to answer on PORT {}",
            spec.port
        ));
    }
    let waits = units.iter().zip(&ports).map(|(unit, port)| async move {
        let address = instance_address(spec, *port);
        match wait_until_ready(docker, unit, address, 0, spec).await {
            Ok(()) => Ok(address),
            Err(reason) => Err(format!("{unit}: {reason}{}", last_journal(unit).await)),
        }
    });
    let results = futures_util::future::join_all(waits).await;
    if let Some(Err(message)) = results.iter().find(|r| r.is_err()) {
        let message = message.clone();
        remove_units(docker, &spec_units(&units)).await;
        return Err(message);
    }
    Ok(indexes
        .iter()
        .zip(results)
        .map(|(index, address)| Instance {
            name: unit_container(&spec.app, spec.release, "web", *index),
            index: *index,
            address: address.ok(),
        })
        .collect())
}

/// The running containers of the app's units (one release or all).
async fn unit_containers(
    docker: &Docker,
    app: &str,
    release: Option<i64>,
) -> Result<Vec<ContainerReport>, String> {
    let mut containers = instances_of(docker, app, release).await?;
    containers.retain(|c| c.unit.is_some());
    Ok(containers)
}

fn addresses_of(instances: &[Instance]) -> Vec<SocketAddr> {
    instances.iter().filter_map(|i| i.address).collect()
}

/// Where web instance `index` of the spec's release answers, as its running container's labels
/// say: its unit keeps the host port it was written with. Waits up to 10 s for the container
/// (a unit just started makes it a moment later); none when it does not appear.
async fn web_address(
    docker: &Docker,
    spec: &DeploySpec,
    index: u32,
) -> Result<Option<SocketAddr>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = unit_containers(docker, &spec.app, Some(spec.release))
            .await?
            .into_iter()
            .find(|c| c.process == "web" && c.index == index && c.state == "running")
            .and_then(|c| c.address);
        if found.is_some() || Instant::now() > deadline {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts every unit of the release and waits until its web instances answer; then makes them
/// the serving set and retires the older releases' units after the drain. If any fails, the
/// units started are removed and the running release is left alone.
async fn deploy(
    docker: &Docker,
    spec: &DeploySpec,
    out: &Output,
    publish: Publish<'_>,
) -> Result<Vec<Instance>, String> {
    refuse_unsupported(spec)?;
    // Units of this very release can only be left by an interrupted run of it (as the docker
    // target's containers of the same name): they go first, or their running units would keep
    // the host ports their files no longer say.
    let stale: Vec<String> = unit_files(&spec.app)
        .into_iter()
        .filter(|u| u.release == spec.release)
        .map(|u| u.name)
        .collect();
    if !stale.is_empty() {
        out.detail(&format!(
            "removing {} left by an interrupted run of v{}",
            stale.join(", "),
            spec.release
        ));
        remove_units(docker, &spec_units(&stale)).await;
    }
    write_env(spec)?;
    let web: Vec<u32> = (1..=spec.web).collect();
    let mut started: Vec<String> = Vec::new();
    let mut instances = Vec::new();
    let mut failure = None;
    match start_webs(docker, spec, &web, out).await {
        Ok(running) => {
            started.extend(
                web.iter()
                    .map(|i| unit_name(&spec.app, spec.release, "web", *i)),
            );
            instances = running;
        }
        Err(message) => failure = Some(message),
    }
    if failure.is_none() {
        'others: for process in &spec.others {
            for index in 1..=process.count {
                match start_unit(docker, spec, &process.name, index, out).await {
                    Ok(unit) => {
                        out.detail(&format!("started {unit}"));
                        started.push(unit);
                    }
                    Err(message) => {
                        failure = Some(message);
                        break 'others;
                    }
                }
            }
        }
    }
    let retiring: Vec<SocketAddr> = match failure {
        Some(_) => Vec::new(),
        None => unit_containers(docker, &spec.app, None)
            .await
            .unwrap_or_default()
            .iter()
            .filter(|c| c.release != spec.release)
            .filter_map(|c| c.address)
            .collect(),
    };
    if failure.is_none() {
        crate::crash::point("deploy");
    }
    let failure = match failure {
        Some(message) => Some(message),
        None => publish.serve(&addresses_of(&instances)).await.err(),
    };
    if let Some(message) = failure {
        remove_units(docker, &spec_units(&started)).await;
        let keep: Vec<i64> = unit_files(&spec.app).iter().map(|u| u.release).collect();
        forget_env_files(&spec.app, &keep);
        return Err(message);
    }
    crate::crash::point("switched");
    let drained = publish.drained(&retiring);
    let (docker, app, release) = (docker.clone(), spec.app.clone(), spec.release);
    tokio::spawn(async move {
        drained.await;
        retire_older(&docker, &app, release).await
    });
    Ok(instances)
}

/// Stops and removes the units of the app's releases older than `keep_release` (never newer
/// ones: a later deploy may be starting its own), and their env files.
async fn retire_older(docker: &Docker, app: &str, keep_release: i64) {
    let units = unit_files(app);
    let old: Vec<&str> = units
        .iter()
        .filter(|u| u.release < keep_release)
        .map(|u| u.name.as_str())
        .collect();
    remove_units(docker, &old).await;
    let keep: Vec<i64> = units
        .iter()
        .filter(|u| u.release >= keep_release)
        .map(|u| u.release)
        .collect();
    forget_env_files(app, &keep);
}

/// Brings the release to the spec's formation: starts the missing units (web ones must
/// answer, else they are removed and the formation is as before), serves web instances
/// 1..=web, then removes the extra units after the drain.
async fn scale(
    docker: &Docker,
    spec: &DeploySpec,
    out: &Output,
    publish: Publish<'_>,
) -> Result<Vec<Instance>, String> {
    refuse_unsupported(spec)?;
    // A unit restarted by systemd reads its env file again: it must be there.
    write_env(spec)?;
    let units: Vec<UnitFile> = unit_files(&spec.app)
        .into_iter()
        .filter(|u| u.release == spec.release)
        .collect();
    let running = unit_containers(docker, &spec.app, Some(spec.release)).await?;
    let mut serving: Vec<Instance> = running
        .iter()
        .filter(|c| c.process == "web" && c.index <= spec.web && c.state == "running")
        .map(|c| Instance {
            name: c.name.clone(),
            index: c.index,
            address: c.address,
        })
        .collect();
    let has = |process: &str, index: u32| {
        units
            .iter()
            .any(|u| u.process == process && u.index == index)
    };
    let missing: Vec<u32> = (1..=spec.web).filter(|i| !has("web", *i)).collect();
    if !missing.is_empty() {
        serving.extend(start_webs(docker, spec, &missing, out).await?);
    }
    for process in &spec.others {
        for index in (1..=process.count).filter(|i| !has(&process.name, *i)) {
            let unit = start_unit(docker, spec, &process.name, index, out).await?;
            out.detail(&format!("started {unit}"));
        }
        let extra: Vec<&str> = units
            .iter()
            .filter(|u| u.process == process.name && u.index > process.count)
            .map(|u| u.name.as_str())
            .collect();
        for unit in &extra {
            out.detail(&format!("stopping {unit}"));
        }
        remove_units(docker, &extra).await;
    }
    publish.serve(&addresses_of(&serving)).await?;
    crate::crash::point("scale");
    let extras: Vec<&UnitFile> = units
        .iter()
        .filter(|u| u.process == "web" && u.index > spec.web)
        .collect();
    if !extras.is_empty() {
        let addresses: Vec<SocketAddr> = running
            .iter()
            .filter(|c| c.process == "web" && c.index > spec.web)
            .filter_map(|c| c.address)
            .collect();
        publish.drained(&addresses).await;
        for unit in &extras {
            out.detail(&format!("stopping {}", unit.name));
        }
        let names: Vec<&str> = extras.iter().map(|u| u.name.as_str()).collect();
        remove_units(docker, &names).await;
    }
    serving.sort_by_key(|i| i.index);
    Ok(serving)
}

/// Restarts every unit of the release, serving throughout: a spare web instance (`web + 1`)
/// starts and serves first; then each web instance in turn leaves the serving set, drains,
/// restarts (same unit, same host port), must answer, and serves again; then the spare goes.
/// Other process types restart in place (no traffic). A web instance that does not come back
/// fails the restart; the others keep serving.
async fn restart(
    docker: &Docker,
    spec: &DeploySpec,
    out: &Output,
    publish: Publish<'_>,
) -> Result<(), String> {
    refuse_unsupported(spec)?;
    write_env(spec)?;
    let units: Vec<UnitFile> = unit_files(&spec.app)
        .into_iter()
        .filter(|u| u.release == spec.release)
        .collect();
    for unit in units.iter().filter(|u| u.process != "web") {
        out.detail(&format!("restarting {}", unit.name));
        systemctl(&["restart", &unit.name]).await?;
    }
    let running = unit_containers(docker, &spec.app, Some(spec.release)).await?;
    let spare = spec.web + 1;
    let web: Vec<&UnitFile> = units
        .iter()
        .filter(|u| u.process == "web" && u.index != spare)
        .collect();
    if web.is_empty() {
        return Ok(());
    }
    // A spare left by an interrupted restart is replaced.
    let spare_unit = unit_name(&spec.app, spec.release, "web", spare);
    if Path::new(UNIT_DIR).join(&spare_unit).exists() {
        remove_units(docker, &[&spare_unit]).await;
    }
    let mut serving: Vec<(u32, SocketAddr)> = running
        .iter()
        .filter(|c| c.process == "web" && c.index <= spec.web && c.state == "running")
        .filter_map(|c| Some((c.index, c.address?)))
        .collect();
    out.detail(&format!(
        "starting a spare instance, {spare_unit}, to serve meanwhile"
    ));
    let surge = start_web(docker, spec, spare, out).await?;
    let surge_address = surge
        .address
        .ok_or("internal error: the spare has no address")?;
    let addresses = |serving: &[(u32, SocketAddr)]| -> Vec<SocketAddr> {
        serving.iter().map(|(_, a)| *a).collect()
    };
    serving.push((spare, surge_address));
    let result = async {
        publish.serve(&addresses(&serving)).await?;
        for unit in &web {
            out.detail(&format!("restarting {}", unit.name));
            let was = running
                .iter()
                .find(|c| c.process == "web" && c.index == unit.index)
                .and_then(|c| c.address);
            let leaving: Vec<SocketAddr> = serving
                .iter()
                .filter(|(i, _)| *i == unit.index)
                .map(|(_, a)| *a)
                .collect();
            serving.retain(|(i, _)| *i != unit.index);
            publish.serve(&addresses(&serving)).await?;
            publish.drained(&leaving).await;
            let before = unit_state(&unit.name).await?.restarts;
            systemctl(&["restart", &unit.name]).await?;
            // Its unit keeps the host port; read again when it was not running before.
            let address = match was {
                Some(address) => address,
                None => web_address(docker, spec, unit.index)
                    .await?
                    .ok_or_else(|| {
                        format!(
                            "{}: its container did not start after the restart",
                            unit.name
                        )
                    })?,
            };
            if let Err(reason) = wait_until_ready(docker, &unit.name, address, before, spec).await {
                let logs = last_journal(&unit.name).await;
                return Err(format!("{}: {reason}{logs}", unit.name));
            }
            serving.push((unit.index, address));
            publish.serve(&addresses(&serving)).await?;
        }
        Ok(())
    }
    .await;
    // The spare leaves once the others serve again (or, on failure, beside them).
    serving.retain(|(i, _)| *i != spare);
    let served = if serving.is_empty() {
        Ok(())
    } else {
        publish.serve(&addresses(&serving)).await
    };
    if !serving.is_empty() {
        publish.drained(&[surge_address]).await;
        remove_units(docker, &[&spare_unit]).await;
    }
    result.and(served)
}

/// Stops and removes every unit the target runs for the app, and its env files. Images,
/// config and data stay.
pub async fn stop_all(docker: &Docker, app: &str) -> Result<usize, String> {
    let units = unit_files(app);
    let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
    remove_units(docker, &names).await;
    forget_env_files(app, &[]);
    Ok(units.len())
}

/// Brings back instance `index` of `process` of the spec's release (the reconciler): starts
/// its unit when it is there but stopped, writes it anew when it is gone. Gives what it did.
pub async fn revive(
    docker: &Docker,
    spec: &DeploySpec,
    process: &str,
    index: u32,
) -> Result<&'static str, String> {
    refuse_unsupported(spec)?;
    write_env(spec)?;
    let name = unit_name(&spec.app, spec.release, process, index);
    let exists = Path::new(UNIT_DIR).join(&name).is_file();
    if exists {
        let before = unit_state(&name).await?.restarts;
        systemctl(&["reset-failed", &name]).await.ok();
        systemctl(&["enable", "--now", "--quiet", &name]).await?;
        if process != "web" {
            return Ok("started");
        }
        let address = web_address(docker, spec, index).await?;
        if let Some(address) = address {
            wait_until_ready(docker, &name, address, before, spec).await?;
            return Ok("started");
        }
        remove_units(docker, &[&name]).await;
    }
    if process == "web" {
        start_web(docker, spec, index, &Output::discard()).await?;
    } else {
        start_unit(docker, spec, process, index, &Output::discard()).await?;
    }
    Ok("recreated")
}

/// The journal of one unit: its last `tail` lines, then (with `follow`) what it writes.
pub fn journal_stream(
    unit: &str,
    tail: i64,
    follow: bool,
) -> futures_util::stream::BoxStream<'static, Vec<u8>> {
    use futures_util::StreamExt;
    use tokio::io::AsyncBufReadExt;
    let mut command = tokio::process::Command::new("journalctl");
    command
        .args([
            "-u",
            unit,
            "-n",
            &tail.to_string(),
            "-o",
            "cat",
            "--no-pager",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if follow {
        command.arg("-f");
    }
    let Ok(mut child) = command.spawn() else {
        return futures_util::stream::empty().boxed();
    };
    let Some(stdout) = child.stdout.take() else {
        return futures_util::stream::empty().boxed();
    };
    // The child goes with the stream (kill_on_drop): a `logs -f` that ends ends it. One item
    // per line, so each gets its instance's prefix whole.
    let lines = tokio::io::BufReader::new(stdout);
    futures_util::stream::unfold((child, lines), |(child, mut lines)| async move {
        let mut line = Vec::new();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some((line, (child, lines))),
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_carry_config_literally_and_refuse_line_breaks() {
        let text = env_file_text(&[
            ("A".into(), "x y \"z\" $HOME #no".into()),
            ("B".into(), String::new()),
        ])
        .unwrap();
        assert_eq!(text, "A=x y \"z\" $HOME #no\nB=\n");
        // Attack: a value with a line break would add a variable of its own to the file.
        let error =
            env_file_text(&[("A".into(), "x\nLD_PRELOAD=/tmp/evil.so".into())]).unwrap_err();
        assert!(error.contains("config var A holds a line break"), "{error}");
    }
}
