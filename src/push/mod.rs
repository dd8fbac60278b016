//! The receive stage: what happens between `git-receive-pack` starting and the hook's answer.
//!
//! A push runs the real `git receive-pack` with berth's own hooks directory. Its pre-receive
//! hook is `berth hook pre-receive`, a small client that hands the ref updates to the server
//! over a Unix socket (`<data_dir>/run/hook.sock`) and relays the pipeline's output back, so it
//! reaches the pusher live as `remote:` lines. The hook's exit status decides the push: the deploy
//! branch only moves when the new release answers, exactly like a rejected push on Heroku or
//! Dokku. While the hook waits, the pushed objects sit in git's quarantine directory, which the
//! server reads through a git2 alternate.
//!
//! Frames from server to hook: one kind byte, a big-endian u32 length, the payload.
//! `o` carries output bytes; `x` carries the exit status (one byte) and ends the exchange.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::git::{self, RefUpdate};
use crate::names::AppName;
use crate::output::Output;
use crate::pipeline;
use crate::server::{Berth, Identity};
use crate::store::LogFailure;

pub mod session;

use session::LockSlot;
pub use session::{PushRegistry, PushSession};

pub const ENV_SOCKET: &str = "BERTH_HOOK_SOCKET";
pub const ENV_TOKEN: &str = "BERTH_PUSH_TOKEN";

/// What the hook sends: the push it belongs to and the ref updates git is about to make.
#[derive(Debug, Serialize, Deserialize)]
struct HookRequest {
    token: String,
    /// `GIT_QUARANTINE_PATH`: where the pushed objects wait until the hook accepts them.
    quarantine: Option<PathBuf>,
    updates: Vec<RefUpdate>,
}

pub struct PushTicket {
    berth: Arc<Berth>,
    token: String,
    hook_ran: Arc<AtomicBool>,
    _lock: LockSlot,
}

impl PushTicket {
    pub fn token(&self) -> &str {
        &self.token
    }
    /// Whether the hook ran: receive-pack runs no hook when a push brings no ref update.
    pub fn hook_ran(&self) -> bool {
        self.hook_ran.load(Ordering::SeqCst)
    }
}

impl Drop for PushTicket {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.berth.pushes.sessions.lock() {
            sessions.remove(&self.token);
        }
    }
}

/// Everything the SSH layer needs to run `git receive-pack` for an app.
pub struct ReceiveSetup {
    pub repo: PathBuf,
    pub env: Vec<(String, String)>,
    pub ticket: PushTicket,
}

/// Checks the name, creates the app and its bare repo on first push, and registers the push.
/// Nothing is created when the name is invalid.
pub async fn prepare_receive(
    berth: &Arc<Berth>,
    who: &Identity,
    raw_name: &str,
) -> Result<ReceiveSetup, String> {
    let app = AppName::parse(raw_name)?;
    crate::access::check_may_push(berth, who, &app).await?;
    if berth.store.app(&app).await.map_err(internal)?.is_none() {
        crate::access::check_app_quota(berth, who).await?;
    }
    let (record, created) = berth
        .store
        .ensure_app(&app, &who.key_name)
        .await
        .map_err(internal)?;
    if !created {
        // Another key may have made the app between the check and here: check what exists.
        crate::access::check_may_push(berth, who, &app).await?;
    }
    let repo = git::repo_path(&berth.config.repos_dir(), &app);
    let path = repo.clone();
    let branch = berth.config.deploy_branch.clone();
    let made = tokio::task::spawn_blocking(move || git::ensure_bare_repo(&path, &branch))
        .await
        .map_err(internal)?;
    if let Err(error) = made {
        if created {
            berth
                .store
                .delete_app(record.id)
                .await
                .or_log("removing an app whose repo could not be made");
        }
        return Err(internal(error));
    }
    if created {
        berth
            .store
            .note_event(
                Some(record.id),
                "app.created",
                &who.key_name,
                "ok",
                "first push",
            )
            .await;
    }
    let token = random_token();
    let hook_ran = Arc::new(AtomicBool::new(false));
    let lock = LockSlot::default();
    let session = PushSession {
        app,
        app_id: record.id,
        actor: who.key_name.clone(),
        repo: repo.clone(),
        hook_ran: hook_ran.clone(),
        lock: lock.clone(),
    };
    berth
        .pushes
        .sessions
        .lock()
        .map_err(internal)?
        .insert(token.clone(), session);
    let env = vec![
        (
            ENV_SOCKET.to_string(),
            berth.config.hook_socket_path().display().to_string(),
        ),
        (ENV_TOKEN.to_string(), token.clone()),
        (
            "HOME".to_string(),
            berth.config.data_dir.display().to_string(),
        ),
    ];
    Ok(ReceiveSetup {
        repo,
        env,
        ticket: PushTicket {
            berth: berth.clone(),
            token,
            hook_ran,
            _lock: lock,
        },
    })
}

fn internal(error: impl std::fmt::Display) -> String {
    crate::error::internal_while("setting up a push", error)
}

fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes berth's hooks directory: a pre-receive hook that calls back into this binary.
pub fn install_hooks(hooks_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().filter(|p| !p.contains('\'')).ok_or_else(|| {
        std::io::Error::other(format!(
            "the berth binary's path {} cannot be quoted in a hook",
            exe.display()
        ))
    })?;
    std::fs::create_dir_all(hooks_dir)?;
    let path = hooks_dir.join("pre-receive");
    let script = format!("#!/bin/sh\nexec '{exe}' hook pre-receive\n");
    let temp = hooks_dir.join(".pre-receive.tmp");
    std::fs::write(&temp, script)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(temp, path)
}

/// Accepts hook connections until the listener fails.
pub async fn serve_hooks(berth: Arc<Berth>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let berth = berth.clone();
                tokio::spawn(async move {
                    if let Err(error) = handle_hook(berth, stream).await {
                        tracing::warn!(%error, "hook connection failed");
                    }
                });
            }
            Err(error) => {
                tracing::error!(%error, "hook socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle_hook(berth: Arc<Berth>, stream: UnixStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(1 << 20))
        .read_line(&mut line)
        .await?;
    let request: HookRequest = serde_json::from_str(&line).map_err(std::io::Error::other)?;
    let Some(session) = berth.pushes.take(&request.token) else {
        write_frame(
            &mut write,
            b'o',
            b" !     unknown push: this hook only runs inside a berth push\n",
        )
        .await?;
        return write_frame(&mut write, b'x', &[1]).await;
    };
    // Access is checked again now that the pack is in: a key removed, or a grant revoked,
    // while the client was sending deploys nothing.
    let still_allowed = match berth.store.app_by_id(session.app_id).await {
        Ok(Some(app)) => crate::access::key_may_operate(&berth, &session.actor, &app).await,
        _ => false,
    };
    if !still_allowed {
        write_frame(
            &mut write,
            b'o',
            format!(
                " !     {}: this key may no longer push to the app (its access was removed during the push); nothing was deployed\n",
                session.app
            )
            .as_bytes(),
        )
        .await?;
        return write_frame(&mut write, b'x', &[1]).await;
    }
    let quarantine = match request
        .quarantine
        .map(|q| check_quarantine(&session.repo, &q))
        .transpose()
    {
        Ok(quarantine) => quarantine,
        Err(message) => {
            write_frame(&mut write, b'o', format!(" !     {message}\n").as_bytes()).await?;
            return write_frame(&mut write, b'x', &[1]).await;
        }
    };
    let (out, mut receiver) = Output::bounded(crate::output::PUSH_BUDGET);
    // The pipeline runs in its own task: a pusher who disconnects does not stop it half-way.
    let busy = berth.busy();
    let task = tokio::spawn(async move {
        let _busy = busy;
        pipeline::on_push(
            &berth,
            &session,
            &request.updates,
            quarantine.as_deref(),
            &out,
        )
        .await
    });
    let mut client_gone = false;
    while let Some(bytes) = receiver.recv().await {
        if !client_gone && write_frame(&mut write, b'o', &bytes).await.is_err() {
            client_gone = true;
        }
    }
    let accepted = task.await.unwrap_or(false);
    write_frame(&mut write, b'x', &[if accepted { 0 } else { 1 }]).await
}

/// The quarantine directory must be the push's own, inside the app's repo.
fn check_quarantine(repo: &Path, quarantine: &Path) -> Result<PathBuf, String> {
    let objects = repo
        .join("objects")
        .canonicalize()
        .map_err(|e| format!("repo objects: {e}"))?;
    let quarantine = quarantine
        .canonicalize()
        .map_err(|e| format!("quarantine: {e}"))?;
    let named = quarantine
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("tmp_objdir-incoming-"));
    if quarantine.parent() == Some(objects.as_path()) && named {
        Ok(quarantine)
    } else {
        Err("refusing a quarantine directory outside the app's repo".to_string())
    }
}

async fn write_frame(
    write: &mut (impl AsyncWriteExt + Unpin),
    kind: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let length = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.push(kind);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(payload);
    write.write_all(&frame).await
}

/// `berth hook pre-receive`: run by git inside receive-pack. Blocking std code, no runtime.
pub fn run_pre_receive_hook() -> i32 {
    use std::io::Read as _;
    let fail = |message: &str| {
        eprintln!(" !     {message}");
        1
    };
    let (Some(socket), Some(token)) = (std::env::var_os(ENV_SOCKET), std::env::var(ENV_TOKEN).ok())
    else {
        return fail("this hook only runs inside a push to the berth server");
    };
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        return fail("could not read the ref updates from git");
    }
    let request = HookRequest {
        token,
        quarantine: std::env::var_os("GIT_QUARANTINE_PATH").map(PathBuf::from),
        updates: RefUpdate::parse_lines(&input),
    };
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&socket) else {
        return fail(
            "the berth server is not answering on its hook socket: check that it is running",
        );
    };
    let Ok(mut line) = serde_json::to_vec(&request) else {
        return fail("could not encode the push");
    };
    line.push(b'\n');
    if stream.write_all(&line).is_err() {
        return fail("lost the berth server");
    }
    let mut stderr = std::io::stderr().lock();
    loop {
        let mut head = [0u8; 5];
        if stream.read_exact(&mut head).is_err() {
            return fail("lost the berth server before the deploy finished");
        }
        let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut payload = vec![0u8; length];
        if stream.read_exact(&mut payload).is_err() {
            return fail("lost the berth server before the deploy finished");
        }
        match head[0] {
            b'o' => {
                let _ = stderr.write_all(&payload);
                let _ = stderr.flush();
            }
            b'x' => return i32::from(payload.first().copied().unwrap_or(1)),
            _ => return fail("garbled answer from the berth server"),
        }
    }
}
