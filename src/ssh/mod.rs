//! The embedded SSH server: public-key auth against the key table, exec requests parsed into
//! git services or operator commands, and the plumbing between a channel and a child process.
//!
//! **Architecture Invariant:** this is the only module that knows russh.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{HashAlg, PublicKey};
use russh::server::ChannelOpenHandle;
use russh::server::{Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, MethodKind, MethodSet};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::commands;
use crate::git::GitService;
use crate::push;
use crate::server::{Berth, Identity};

pub mod keys;
pub use keys::fingerprint_of;

/// Loads the host key from the data dir, generating it on first start.
fn host_key(path: &Path) -> Result<russh::keys::PrivateKey, String> {
    if !path.exists() {
        let status = std::process::Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "berth host key",
                "-f",
            ])
            .arg(path)
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run ssh-keygen to make the host key: {e}"))?;
        if !status.success() {
            return Err(format!("ssh-keygen failed to write {}", path.display()));
        }
    }
    russh::keys::load_secret_key(path, None)
        .map_err(|e| format!("cannot load host key {}: {e}", path.display()))
}

pub async fn serve(berth: Arc<Berth>, listener: TcpListener) -> Result<(), String> {
    let key = host_key(&berth.config.host_key_path())?;
    let config = russh::server::Config {
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        keys: vec![key],
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        ..Default::default()
    };
    let config = Arc::new(config);
    let limits = crate::limits::ConnectionLimits::new(MAX_CONNECTIONS, MAX_PER_ADDRESS);
    // Our own accept loop (as warpgate does), so each socket can be wrapped before the handshake.
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = berth.stopped() => return Ok(()),
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "ssh accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Unauthenticated clients cannot hold every file descriptor: a cap in all and per
        // address (a refused socket is closed at once).
        let Some(slot) = limits.enter(peer.ip()) else {
            tracing::warn!(?peer, "ssh connection refused: too many connections");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = QuickAck {
            inner: stream,
            reads_left: QUICKACK_READS,
        };
        let fingerprint: Arc<std::sync::Mutex<Option<String>>> = Default::default();
        let connection = Connection {
            berth: berth.clone(),
            peer: Some(peer),
            identity: None,
            fingerprint: fingerprint.clone(),
            channels: HashMap::new(),
            env: HashMap::new(),
            ptys: Default::default(),
        };
        let config = config.clone();
        let mut revoked = berth.revoked.subscribe();
        let span = tracing::info_span!("connection", %peer);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _slot = slot;
                let run = russh::server::run_stream(config, stream, connection);
                let session = match tokio::time::timeout(PRE_AUTH_DEADLINE, run).await {
                    Ok(Ok(session)) => session,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, ?peer, "ssh handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(?peer, "ssh handshake took too long");
                        return;
                    }
                };
                let handle = session.handle();
                let watch = async {
                    // Authenticate within the deadline, or go; and whenever its key is removed, go.
                    let deadline = tokio::time::sleep(PRE_AUTH_DEADLINE);
                    tokio::pin!(deadline);
                    let mut past_deadline = false;
                    let current = || {
                        fingerprint
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .clone()
                    };
                    loop {
                        tokio::select! {
                            () = &mut deadline, if !past_deadline => {
                                past_deadline = true;
                                if current().is_none() {
                                    tracing::info!(?peer, "ssh client did not authenticate in time");
                                    return;
                                }
                            }
                            gone = revoked.recv() => match gone {
                                Ok(gone) if current().as_deref() == Some(gone.as_str()) => {
                                    tracing::info!(?peer, "closing the connection of a removed key");
                                    return;
                                }
                                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                    std::future::pending::<()>().await;
                                }
                            },
                        }
                    }
                };
                tokio::select! {
                    ended = session => {
                        if let Err(error) = ended {
                            tracing::debug!(%error, ?peer, "ssh session ended with an error");
                        }
                    }
                    () = watch => {
                        let _ = handle
                            .disconnect(
                                russh::Disconnect::ByApplication,
                                "access revoked or not authenticated in time".into(),
                                String::new(),
                            )
                            .await;
                    }
                }
            },
            span,
        ));
    }
}

/// How long a client may take from connecting to authenticating.
const PRE_AUTH_DEADLINE: Duration = Duration::from_secs(30);
/// SSH connections at once, in all and from one address.
pub const MAX_CONNECTIONS: usize = 512;
pub const MAX_PER_ADDRESS: usize = 32;

/// Reads during which every received segment is acknowledged at once.
const QUICKACK_READS: u8 = 16;

/// The OpenSSH client writes its KEXINIT and its key-exchange packet back to back with Nagle on;
/// the second waits for the ACK of the first, which Linux delays by ~40 ms. That cost about half
/// of all connections 40 ms. Asking for an immediate ACK after each of the first reads sends the
/// pending ACK at once (TCP_QUICKACK is not sticky, hence after every read).
struct QuickAck {
    inner: tokio::net::TcpStream,
    reads_left: u8,
}

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.reads_left > 0 && buf.filled().len() > before {
            self.reads_left -= 1;
            let _ = socket2::SockRef::from(&self.inner).set_tcp_quickack(true);
        }
        poll
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Connection {
    berth: Arc<Berth>,
    peer: Option<SocketAddr>,
    /// Set only after a signature was verified (`auth_publickey`), never on an offer.
    identity: Option<Identity>,
    /// The authenticated key's fingerprint: every exec looks the key up again by it, and the
    /// accept loop closes the connection when it is removed.
    fingerprint: Arc<std::sync::Mutex<Option<String>>>,
    /// Opened session channels not yet given to a command.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Allowed environment variables (only `GIT_PROTOCOL`), per channel, sent before exec.
    env: HashMap<ChannelId, Vec<(String, String)>>,
    /// Channels whose client asked for a terminal (`ssh -t`): `run` gets a TTY.
    ptys: std::collections::HashSet<ChannelId>,
}

impl Connection {
    async fn known_key(&self, key: &PublicKey) -> Option<Identity> {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        match self.berth.store.key_by_fingerprint(&fingerprint).await {
            Ok(Some(record)) => Some(Identity {
                key_name: record.name,
                role: record.role,
            }),
            Ok(None) => None,
            Err(error) => {
                tracing::error!(%error, "key lookup failed");
                None
            }
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = anyhow::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(match self.known_key(offer.public_key).await {
            Some(_) => Auth::Accept,
            None => Auth::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.known_key(key.public_key).await {
            Some(identity) => {
                tracing::info!(peer = ?self.peer, key = %identity.key_name, "authenticated");
                self.identity = Some(identity);
                *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(key.public_key.fingerprint(HashAlg::Sha256).to_string());
                Ok(Auth::Accept)
            }
            None => {
                tracing::info!(peer = ?self.peer, "refused an unknown key");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "GIT_PROTOCOL" && value.len() < 64 && value.bytes().all(|b| b.is_ascii_graphic())
        {
            self.env
                .entry(channel)
                .or_default()
                .push((name.to_string(), value.to_string()));
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _c: u32,
        _r: u32,
        _pw: u32,
        _ph: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.ptys.insert(channel);
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        self.start(channel, Request::Shell);
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A channel closed before any exec: forget it (its queue would otherwise fill up).
        self.channels.remove(&channel);
        self.env.remove(&channel);
        self.ptys.remove(&channel);
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Always accept, then explain on stderr: a refused exec only shows "exec request failed".
        session.channel_success(channel)?;
        let request = match std::str::from_utf8(data) {
            Ok(text) => parse_exec(text),
            Err(_) => Err("the command is not valid UTF-8".to_string()),
        };
        self.start(channel, request.unwrap_or_else(Request::Refused));
        Ok(())
    }
}

/// What an exec request asks for, parsed from the client's string (never passed to a shell).
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Git { service: GitService, app: String },
    Command(Vec<String>),
    Shell,
    Refused(String),
}

impl Request {
    /// What the request is, for the channel's log span: the git service or the command's
    /// name, never its arguments (`config:set` carries secrets), and never a word that is no
    /// command (what a member typed does not reach the server log).
    pub fn kind(&self) -> &str {
        match self {
            Request::Git { service, .. } => match service {
                GitService::ReceivePack => "git-receive-pack",
                GitService::UploadPack => "git-upload-pack",
            },
            Request::Command(words) => words
                .first()
                .and_then(|word| commands::SPECS.iter().find(|s| s.name == word))
                .map_or("unknown", |spec| spec.name),
            Request::Shell => "shell",
            Request::Refused(_) => "refused",
        }
    }
}

/// `git-receive-pack '/myapp.git'` → Git; `apps:info myapp --json` → Command.
pub fn parse_exec(text: &str) -> Result<Request, String> {
    let words = split_words(text)?;
    let Some((first, rest)) = words.split_first() else {
        return Ok(Request::Shell);
    };
    if let Some(service) = GitService::from_command_name(first) {
        let [path] = rest else {
            return Err(format!("{first} takes exactly one repository"));
        };
        let path = path
            .strip_prefix("~/")
            .or_else(|| path.strip_prefix('/'))
            .unwrap_or(path);
        let app = path.strip_suffix(".git").unwrap_or(path);
        return Ok(Request::Git {
            service,
            app: app.to_string(),
        });
    }
    Ok(Request::Command(words))
}

/// Splits like a shell would for plain words and quotes, with no expansion of any kind.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let word = current.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(other) => word.push(other),
                        None => return Err("unbalanced quote in the command".to_string()),
                    }
                }
            }
            c if c.is_whitespace() => {
                if let Some(word) = current.take() {
                    words.push(word);
                }
            }
            c => current.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(current);
    Ok(words)
}

impl Connection {
    fn start(&mut self, id: ChannelId, request: Request) {
        let Some(channel) = self.channels.remove(&id) else {
            return;
        };
        let env = self.env.remove(&id).unwrap_or_default();
        let tty = self.ptys.remove(&id);
        let berth = self.berth.clone();
        let fingerprint = self.identity.as_ref().and_then(|_| {
            self.fingerprint
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        });
        let span = tracing::info_span!("channel", channel = %id, command = ?request.kind());
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let (read, write) = channel.split();
                if berth.is_stopping() {
                    tokio::spawn(drain(read));
                    return finish(
                        &write,
                        b"ERROR: berth is restarting: try again in a moment\n",
                        1,
                    )
                    .await;
                }
                let _busy = berth.busy();
                let Some(fingerprint) = fingerprint else {
                    tokio::spawn(drain(read));
                    return finish(&write, b"not authenticated\n", 1).await;
                };
                // Every exec looks the key up again: a removed key runs nothing more, and a changed
                // role applies at once (a multiplexed connection outlives both).
                let identity = match berth.store.key_by_fingerprint(&fingerprint).await {
                    Ok(Some(record)) => Identity {
                        key_name: record.name,
                        role: record.role,
                    },
                    Ok(None) => {
                        tokio::spawn(drain(read));
                        return finish(&write, b"ERROR: this key is no longer allowed\n", 1).await;
                    }
                    Err(error) => {
                        tracing::error!(%error, "key lookup failed");
                        tokio::spawn(drain(read));
                        return finish(&write, b"ERROR: internal error\n", 1).await;
                    }
                };
                if let Request::Git { service, app } = request {
                    return serve_git(&berth, &identity, service, &app, env, read, write).await;
                }
                match request {
                    Request::Git { .. } => {} // served above
                    Request::Command(args) => {
                        if let Some(one_off) =
                            commands::one_off(&berth, &identity, &args, tty).await
                        {
                            return pump_one_off(one_off, tty, read, &write).await;
                        }
                        if let Some(stream) = commands::stream(&berth, &identity, &args).await {
                            return pump_stream(stream, read, &write).await;
                        }
                        let stdin = if commands::reads_stdin(&args) {
                            read_stdin(read).await
                        } else {
                            tokio::spawn(drain(read));
                            Vec::new()
                        };
                        let result = commands::run(&berth, &identity, &args, &stdin).await;
                        let _ = write.data_bytes(result.stdout).await;
                        finish(&write, &result.stderr, result.code).await
                    }
                    Request::Shell => {
                        tokio::spawn(drain(read));
                        let text = format!(
                            "Hi {}! berth has no shell. Try: ssh ... help\n",
                            identity.key_name
                        );
                        finish(&write, text.as_bytes(), 1).await
                    }
                    Request::Refused(reason) => {
                        tokio::spawn(drain(read));
                        finish(&write, format!("ERROR: {reason}\n").as_bytes(), 128).await
                    }
                }
            },
            span,
        ));
    }
}

type ReadHalf = russh::ChannelReadHalf;
type WriteHalf = russh::ChannelWriteHalf<Msg>;

/// Ends a command: stderr text, then exit-status → EOF → close (the order clients expect).
async fn finish(write: &WriteHalf, stderr: &[u8], code: u32) {
    if !stderr.is_empty() {
        let _ = write.extended_data_bytes(1, stderr.to_vec()).await;
    }
    let _ = write.exit_status(code).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}

async fn serve_git(
    berth: &Arc<Berth>,
    who: &Identity,
    service: GitService,
    raw_app: &str,
    mut env: Vec<(String, String)>,
    read: ReadHalf,
    write: WriteHalf,
) {
    let (repo, ticket) = match service {
        GitService::ReceivePack => match push::prepare_receive(berth, who, raw_app).await {
            Ok(setup) => {
                env.extend(setup.env);
                (setup.repo, Some(setup.ticket))
            }
            Err(message) => {
                return finish(&write, format!("ERROR: {message}\n").as_bytes(), 128).await;
            }
        },
        GitService::UploadPack => match crate::access::readable_repo(berth, who, raw_app).await {
            Ok(repo) => (repo, None),
            Err(message) => {
                return finish(&write, format!("ERROR: {message}\n").as_bytes(), 128).await;
            }
        },
    };
    let command = service.command(
        &repo,
        &berth.config.hooks_dir(),
        &env,
        berth.config.max_push_size,
    );
    let code = pipe_child(command, read, &write).await;
    if let Some(ticket) = ticket
        && code == 0
        && !ticket.hook_ran()
    {
        let _ = write
            .extended_data_bytes(1, &b"-----> No ref changed: nothing to deploy\n"[..])
            .await;
    }
    finish(&write, b"", code).await;
}

async fn drain(mut read: ReadHalf) {
    while read.wait().await.is_some() {}
}

/// Attaches the channel to a one-off container: input to its stdin (EOF closes it), its stdout
/// and stderr back, its exit code as the command's. A client that leaves kills it.
async fn pump_one_off(
    one_off: Result<crate::deploy::OneOff, String>,
    tty: bool,
    mut read: ReadHalf,
    write: &WriteHalf,
) {
    use crate::deploy::Chunk;
    use futures_util::StreamExt;
    let one_off = match one_off {
        Ok(one_off) => one_off,
        Err(message) => {
            tokio::spawn(drain(read));
            return finish(write, format!(" !     {message}\n").as_bytes(), 1).await;
        }
    };
    let crate::deploy::OneOff {
        mut output,
        mut input,
        exit,
        abort,
    } = one_off;
    let (gone_sender, mut gone) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut open = true;
        while let Some(message) = read.wait().await {
            match message {
                ChannelMsg::Data { data } if open => open = input.write_all(&data).await.is_ok(),
                // Closing the container's stdin ends programs that read to the end. Not with a
                // TTY: there the engine ends the whole stream when stdin closes, dropping output
                // not yet read, and a terminal's end of input arrives as ^D data anyway.
                ChannelMsg::Eof if !tty => {
                    let _ = input.shutdown().await;
                    open = false;
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        let _ = gone_sender.send(());
    });
    loop {
        tokio::select! {
            chunk = output.next() => {
                let sent = match chunk {
                    Some(Chunk::Out(bytes)) => write.data_bytes(bytes).await.is_ok(),
                    Some(Chunk::Err(bytes)) => write.extended_data_bytes(1, bytes).await.is_ok(),
                    None => break,
                };
                if !sent {
                    return abort().await;
                }
            }
            _ = &mut gone => return abort().await,
        }
    }
    let code = exit.await;
    finish(write, b"", u32::try_from(code).unwrap_or(1)).await
}

/// The client's input up to EOF (at most 64 KiB: a public key, not a file transfer).
async fn read_stdin(mut read: ReadHalf) -> Vec<u8> {
    let mut input = Vec::new();
    while let Some(message) = read.wait().await {
        match message {
            ChannelMsg::Data { data } if input.len() + data.len() <= 64 * 1024 => {
                input.extend_from_slice(&data)
            }
            ChannelMsg::Data { .. } => {}
            ChannelMsg::Eof | ChannelMsg::Close => break,
            _ => {}
        }
    }
    tokio::spawn(drain(read));
    input
}

/// Sends a command's output stream until it ends or the client goes away (EOF or close from
/// the client, or a failed write), then ends the command.
async fn pump_stream(
    stream: Result<futures_util::stream::BoxStream<'static, Vec<u8>>, String>,
    mut read: ReadHalf,
    write: &WriteHalf,
) {
    use futures_util::StreamExt;
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(message) => {
            tokio::spawn(drain(read));
            return finish(write, format!(" !     {message}\n").as_bytes(), 1).await;
        }
    };
    loop {
        tokio::select! {
            chunk = stream.next() => match chunk {
                Some(bytes) => {
                    if write.data_bytes(bytes).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            message = read.wait() => match message {
                // EOF only means the client has no input (`ssh -n`); close means it left.
                None | Some(ChannelMsg::Close) => return finish(write, b"", 0).await,
                Some(_) => {}
            },
        }
    }
    tokio::spawn(drain(read));
    finish(write, b"", 0).await
}

/// Runs the child with the channel as its stdin, stdout and stderr; returns its exit status.
async fn pipe_child(
    mut command: tokio::process::Command,
    mut read: ReadHalf,
    write: &WriteHalf,
) -> u32 {
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            tracing::error!(%error, "cannot start git");
            let _ = write
                .extended_data_bytes(1, &b"ERROR: the server cannot run git\n"[..])
                .await;
            return 128;
        }
    };
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return 128;
    };
    // Input: channel data to stdin, EOF closes it. Runs beside the session loop, never inside it.
    let input = tokio::spawn(async move {
        let mut open = true;
        while let Some(message) = read.wait().await {
            match message {
                ChannelMsg::Data { data } if open && stdin.write_all(&data).await.is_err() => {
                    open = false;
                }
                ChannelMsg::Eof => break,
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        drop(stdin);
        // Keep reading so a chatty client cannot fill the channel queue.
        while read.wait().await.is_some() {}
    });
    // Output: 64 KiB reads (8 KiB halves clone throughput); never shutdown() these writers.
    let mut out_writer = write.make_writer();
    let mut err_writer = write.make_writer_ext(Some(1));
    let stdout_pump = async move {
        let mut reader = BufReader::with_capacity(64 * 1024, stdout);
        let _ = tokio::io::copy_buf(&mut reader, &mut out_writer).await;
        let _ = out_writer.flush().await;
    };
    let stderr_pump = async move {
        let mut reader = BufReader::new(stderr);
        let _ = tokio::io::copy_buf(&mut reader, &mut err_writer).await;
        let _ = err_writer.flush().await;
    };
    tokio::join!(stdout_pump, stderr_pump);
    let status = child.wait().await;
    drop(input);
    match status {
        Ok(status) => exit_code(status),
        Err(_) => 128,
    }
}

fn exit_code(status: std::process::ExitStatus) -> u32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u32::try_from(code).unwrap_or(1),
        (None, Some(signal)) => 128 + u32::try_from(signal).unwrap_or(0),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::{Request, parse_exec};
    use crate::git::GitService;

    #[test]
    fn a_channel_span_carries_no_text_a_member_typed() {
        // Attack: a member sends an exec whose first word is a forged log line (a newline and
        // "admin logged in", or 30 KB of text) to fill or falsify the server log through the
        // channel's span. Only berth's own command names are recorded; arguments never are.
        let kind = |text: &str| parse_exec(text).map(|r| r.kind().to_string());
        assert_eq!(kind("'x\nINFO admin logged in' arg"), Ok("unknown".into()));
        assert_eq!(
            kind("config:set shop SECRET=hunter2"),
            Ok("config:set".into())
        );
        assert_eq!(
            kind("git-receive-pack '/shop.git'"),
            Ok("git-receive-pack".into())
        );
    }

    #[test]
    fn parses_git_requests_in_every_client_form() {
        for text in [
            "git-receive-pack '/myapp.git'",
            "git-receive-pack 'myapp'",
            "git-receive-pack '~/myapp.git'",
            "git-receive-pack myapp.git",
        ] {
            assert_eq!(
                parse_exec(text),
                Ok(Request::Git {
                    service: GitService::ReceivePack,
                    app: "myapp".into()
                }),
                "{text}"
            );
        }
        assert_eq!(
            parse_exec("git-upload-pack '/a/b.git'"),
            Ok(Request::Git {
                service: GitService::UploadPack,
                app: "a/b".into()
            }),
            "nested paths reach AppName::parse, which refuses them"
        );
        assert!(parse_exec("git-receive-pack 'a' 'b'").is_err());
        assert!(parse_exec("git-receive-pack 'a").is_err());
    }

    #[test]
    fn commands_are_words_without_shell_meaning() {
        assert_eq!(
            parse_exec("apps:info 'my app' $HOME;rm"),
            Ok(Request::Command(vec![
                "apps:info".into(),
                "my app".into(),
                "$HOME;rm".into()
            ]))
        );
        assert_eq!(parse_exec("  "), Ok(Request::Shell));
    }
}
