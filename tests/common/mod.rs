//! Test harness: a real berth server on a loopback port with a temp data dir, a generated key,
//! the real `git` and `ssh` clients, the real Docker engine and registry.
//!
//! Run through `tests/run.sh`, which starts the engine and registry and makes the base image.
//! Anything missing fails the test with a message naming that command; nothing is skipped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod hosts;

pub const BASE_IMAGE: &str = "berth-test/busybox:latest";

fn require(what: &str, ok: bool) {
    assert!(
        ok,
        "{what} is missing: run the tests with tests/run.sh, which installs and starts it"
    );
}

/// Checks the real components are there; panics (fails) with the command to run otherwise.
pub fn require_environment() -> String {
    let registry = std::env::var("BERTH_TEST_REGISTRY").unwrap_or_default();
    require(
        "BERTH_TEST_REGISTRY (the test registry address)",
        !registry.is_empty(),
    );
    let engine = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    require("a running Docker engine", engine.is_ok_and(|s| s.success()));
    let image = Command::new("docker")
        .args(["image", "inspect", BASE_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    require(
        &format!("the base image {BASE_IMAGE}"),
        image.is_ok_and(|s| s.success()),
    );
    // install.sh gives the registry auth; berth and the tests read its credentials.
    require(
        &format!("the registry at {registry}, asking for credentials"),
        http_request(&registry, &registry, "/v2/").is_some_and(|(status, _)| status == 401),
    );
    require(
        "BERTH_REGISTRY_CREDENTIALS (the registry's user:password file)",
        registry_get("/v2/").is_some(),
    );
    registry
}

/// GET `path` from the test registry with berth's credentials: the body of a 200 answer.
pub fn registry_get(path: &str) -> Option<String> {
    let registry = std::env::var("BERTH_TEST_REGISTRY").ok()?;
    let file = std::env::var("BERTH_REGISTRY_CREDENTIALS").ok()?;
    let credentials = std::fs::read_to_string(file).ok()?;
    let output = Command::new("curl")
        .args(["-fsS", "-u", credentials.trim()])
        .arg(format!("http://{registry}{path}"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The HTTP router's port (apps at `http://APP.localhost:PORT`).
    pub http_port: u16,
    pub key: PathBuf,
    child: Child,
    /// Apps this server deployed: their containers are removed when the server is dropped.
    pub apps: std::sync::Mutex<Vec<String>>,
    /// Where `/metrics` is served.
    pub admin_port: u16,
    /// Where the router serves HTTPS.
    pub https_port: u16,
}

impl TestServer {
    pub fn start() -> TestServer {
        let registry = require_environment();
        Self::start_with(&format!("registry = \"{registry}\"\nready_timeout = 10\n"))
    }

    /// Starts a server with extra config lines (e.g. no registry, a short ready_timeout).
    pub fn start_with(extra_config: &str) -> TestServer {
        Self::start_with_env(extra_config, &[])
    }

    /// Starts a server with extra config lines and extra environment variables.
    pub fn start_with_env(extra_config: &str, env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let config = dir.path().join("berth.toml");
        let key = dir.path().join("admin_key");
        keygen(&key);
        // The ports are free when picked, but another test's server (or the engine publishing
        // a container) can take one before berth binds it: then berth exits at once, naming
        // the port, and it is started again on fresh ports.
        for attempt in 1.. {
            let (port, http_port, admin_port, https_port) =
                (free_port(), free_port(), free_port(), free_port());
            // Apps answer through the router at APP.localhost:HTTP_PORT (see http_get).
            std::fs::write(
                &config,
                format!(
                    "data_dir = \"{}\"\nssh_listen = \"127.0.0.1:{port}\"\npublic_host = \"127.0.0.1\"\npublish_address = \"127.0.0.1\"\nbase_domain = \"localhost\"\nhttp_listen = \"127.0.0.1:{http_port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nhttps_listen = \"127.0.0.1:{https_port}\"\naccess_log = \"json\"\n{extra_config}",
                    data.display()
                ),
            )
            .expect("write config");
            if attempt == 1 {
                register_key(&config, "admin", "admin", &key);
            }
            let log = dir.path().join("server.log");
            let mut child = spawn_server(&config, &log, env);
            let port_taken = exited_before_listening(&mut child, port)
                && std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("Address already in use");
            if port_taken && attempt < 3 {
                continue;
            }
            let server = TestServer {
                dir,
                port,
                http_port,
                admin_port,
                https_port,
                key,
                child,
                apps: Default::default(),
            };
            server.wait_listening();
            return server;
        }
        unreachable!("the loop returns")
    }

    /// Registers the key at `key` (its `.pub` beside it) from the host's shell.
    pub fn add_key(&self, name: &str, role: &str, key: &Path) {
        register_key(&self.config_path(), name, role, key);
    }

    /// Stops the server: the control plane and the data plane (`restart` starts it again).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stop_data_plane();
    }

    /// `berth stop`: stops the data plane (the control plane is already gone).
    fn stop_data_plane(&self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["stop", "--config"])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .output();
    }

    /// The data plane's process id (it outlives the control plane).
    pub fn data_plane_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("run/dataplane.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills the control plane (`kill -9`) and starts it again on the same data dir and port;
    /// the data plane goes on serving throughout.
    pub fn restart(&mut self) {
        self.restart_with(Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    }

    /// Kills the control plane (`kill -9`) and starts `binary serve` with `env` in its place.
    pub fn restart_with(&mut self, binary: &Path, env: &[(&str, &str)]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.start_control_plane(binary, env);
    }

    /// Starts `binary serve` with `env` (the control plane is not running).
    pub fn start_control_plane(&mut self, binary: &Path, env: &[(&str, &str)]) {
        self.child = spawn_binary(
            binary,
            &self.config_path(),
            &self.dir.path().join("server.log"),
            env,
        );
        self.wait_listening();
    }

    /// Kills the control plane (`kill -9`) and waits for it; the data plane goes on.
    pub fn stop_control_plane_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends the control plane `TERM` (what `systemctl stop` does) and waits until it exits.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for berth")
    }

    /// Waits until the control plane process exits by itself (a crash point killed it).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for berth")
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "berth did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("berth.toml")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    /// The host CLI on this server's config (`berth ARGS --config F`), run with `umask`.
    pub fn cli_with_umask(&self, umask: &str, args: &[&str]) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .output()
            .expect("run berth")
    }
    /// The host CLI on this server's config, with the umask 022 of a usual shell.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_umask("022", args)
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
    pub fn url(&self, app: &str) -> String {
        format!("ssh://berth@127.0.0.1:{}/{app}", self.port)
    }
    pub fn ssh_command(&self, key: &Path) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes",
            key.display()
        )
    }

    /// `git push` of `refspec` from `repo` to the app; returns the git process's output.
    pub fn push(&self, repo: &Path, app: &str, refspec: &str) -> Output {
        self.push_with(repo, app, refspec, &[])
    }

    pub fn push_with(&self, repo: &Path, app: &str, refspec: &str, git_config: &[&str]) -> Output {
        let mut args: Vec<&str> = git_config
            .iter()
            .flat_map(|setting| ["-c", *setting])
            .collect();
        let url = self.url(app);
        args.extend(["push", url.as_str(), refspec]);
        self.apps.lock().expect("apps").push(app.to_string());
        run_git(repo, &args, Some(&self.ssh_command(&self.key)))
    }

    /// `push` that must succeed; a failure shows the push's output and the end of the server's
    /// log, so a push that fails only under CI's load says why.
    pub fn push_ok(&self, repo: &Path, app: &str, refspec: &str) -> String {
        let output = self.push(repo, app, refspec);
        if !output.status.success() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "push of {app} failed ({}):\n{}\n--- server log (end) ---\n{}",
                output.status,
                text(&output),
                tail.join("\n")
            );
        }
        text(&output)
    }

    /// `git push` of `refspec` to the app, authenticating with another key.
    pub fn push_as(&self, key: &Path, repo: &Path, app: &str, refspec: &str) -> Output {
        self.apps.lock().expect("apps").push(app.to_string());
        run_git(
            repo,
            &["push", &self.url(app), refspec],
            Some(&self.ssh_command(key)),
        )
    }

    /// `git ARGS` in `repo`, talking to this server with the admin key.
    pub fn git(&self, repo: &Path, args: &[&str]) -> String {
        succeeded(
            args,
            run_git(repo, args, Some(&self.ssh_command(&self.key))),
        )
    }

    /// `ssh berth@HOST <args>` with the admin key.
    pub fn ssh(&self, args: &[&str]) -> Output {
        self.ssh_as(&self.key, args)
    }

    /// Runs a command with `input` on its standard input.
    pub fn ssh_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!(
                "{} -p {} berth@127.0.0.1 \"$@\"",
                self.ssh_command(&self.key),
                self.port
            ))
            .arg("ssh")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("run ssh");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        child.wait_with_output().expect("ssh output")
    }

    /// `ssh_as`, started: its output is read as it comes (stdout piped, stderr dropped). The
    /// child is ssh itself (`exec`), so killing it is the client leaving.
    pub fn ssh_spawn_as(&self, key: &Path, args: &[&str]) -> std::process::Child {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec {} -p {} berth@127.0.0.1 \"$@\"",
                self.ssh_command(key),
                self.port
            ))
            .arg("ssh")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run ssh")
    }

    pub fn ssh_as(&self, key: &Path, args: &[&str]) -> Output {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!(
                "{} -p {} berth@127.0.0.1 \"$@\"",
                self.ssh_command(key),
                self.port
            ))
            .arg("ssh");
        command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stop_data_plane();
        for app in self.apps.lock().map(|a| a.clone()).unwrap_or_default() {
            remove_app_containers(&app);
        }
    }
}

fn register_key(config: &Path, name: &str, role: &str, key: &Path) {
    let added = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["keys", "add", name, "--role", role, "--key-file"])
        .arg(key.with_extension("pub"))
        .arg("--config")
        .arg(config)
        .output()
        .expect("run berth keys add");
    assert!(
        added.status.success(),
        "keys add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
}

/// Waits until berth listens on `port` (false) or has exited (true), at most 20 s.
fn exited_before_listening(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return false;
        }
        if child.try_wait().ok().flatten().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `berth serve`, its output appended to `log`.
fn spawn_server(config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    spawn_binary(Path::new(env!("CARGO_BIN_EXE_berth")), config, log, env)
}

/// `BINARY serve`, its output appended to `log`.
fn spawn_binary(binary: &Path, config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(binary)
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start berth serve")
}

pub fn remove_app_containers(app: &str) {
    // A swarm app's tasks would come back: its stack goes first.
    let stack = format!("berth-{app}");
    let listed = Command::new("docker")
        .args(["stack", "ls", "--format", "{{.Name}}"])
        .output();
    if listed.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l == stack)
    }) {
        let _ = Command::new("docker")
            .args(["stack", "rm", &stack])
            .output();
    }
    let ids = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=berth.app={app}")])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
    // Its network (one per app) goes too: address pools are finite.
    let _ = Command::new("docker")
        .args(["network", "rm", &format!("berth.{app}")])
        .output();
}

/// Names of the app's containers, running or not.
pub fn app_containers(app: &str) -> Vec<String> {
    container_names(app, true)
}

/// Names of the app's running containers, sorted.
pub fn running_containers(app: &str) -> Vec<String> {
    container_names(app, false)
}

fn container_names(app: &str, all: bool) -> Vec<String> {
    let mut command = Command::new("docker");
    command.arg("ps");
    if all {
        command.arg("-a");
    }
    let output = command
        .args([
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=berth.app={app}"),
        ])
        .output()
        .expect("docker ps");
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    names.sort();
    names
}

/// Polls `check` every 200 ms until it gives a value; fails after 20 s naming `what`.
pub fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    wait_up_to(Duration::from_secs(20), what, check)
}

/// `wait_for` with another limit.
pub fn wait_up_to<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
}

/// A free loopback port below the ephemeral range (which outgoing connections use).
pub fn free_port() -> u16 {
    berth::route::free_port("127.0.0.1".parse().expect("address")).expect("free port")
}

/// A unique app name for this test run (apps of concurrent runs never collide).
pub fn app_name(base: &str) -> String {
    format!("{base}-{}", std::process::id())
}

/// A git repo holding a busybox web app that serves `content` at `/` on PORT.
pub fn web_app(content: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    git(dir.path(), &["init", "-q", "-b", "main"]);
    write_web_app(dir.path(), content);
    commit(dir.path(), "initial");
    dir
}

/// Changes only the page the busybox web app serves (its Dockerfile stays).
pub fn write_web_app_content(repo: &Path, content: &str) {
    std::fs::create_dir_all(repo.join("www")).expect("mkdir");
    std::fs::write(repo.join("www/index.html"), format!("{content}\n")).expect("write");
}

pub fn write_web_app(repo: &Path, content: &str) {
    std::fs::create_dir_all(repo.join("www")).expect("mkdir");
    std::fs::write(repo.join("www/index.html"), format!("{content}\n")).expect("write");
    std::fs::write(repo.join("Dockerfile"), web_dockerfile("")).expect("write");
}

/// The busybox web app's Dockerfile, with `steps` (instruction lines) before its `COPY www`.
pub fn web_dockerfile(steps: &str) -> String {
    let steps = if steps.is_empty() {
        String::new()
    } else {
        format!("{}\n", steps.trim_end())
    };
    format!(
        "FROM {BASE_IMAGE}\n{steps}COPY www /www\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"
    )
}

/// Sets the modification time of `path` two hours back (what retention takes for abandoned).
pub fn make_old(path: &Path) {
    let touched = Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(path)
        .status()
        .expect("touch");
    assert!(touched.success());
}

/// The permission bits of `path` (with setuid, setgid and sticky).
pub fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

pub fn write(repo: &Path, path: &str, text: &str) {
    std::fs::write(repo.join(path), text).expect("write");
}

pub fn commit(repo: &Path, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(
        repo,
        &[
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            message,
        ],
    );
    git(repo, &["rev-parse", "HEAD"]).trim().to_string()
}

pub fn git(repo: &Path, args: &[&str]) -> String {
    succeeded(args, run_git(repo, args, None))
}

fn run_git(repo: &Path, args: &[&str], ssh_command: Option<&str>) -> Output {
    let mut command = Command::new("git");
    command.args(args).current_dir(repo);
    if let Some(ssh_command) = ssh_command {
        command.env("GIT_SSH_COMMAND", ssh_command);
    }
    command.output().expect("run git")
}

/// The stdout of a git command that must succeed.
fn succeeded(args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The URL from the push's last `-----> APP is live at URL` line.
pub fn live_url(output: &Output) -> String {
    let all = text(output);
    let line = all
        .lines()
        .find(|l| l.contains(" is live at "))
        .unwrap_or_else(|| panic!("no live line in push output:\n{all}"));
    line.split(" is live at ")
        .nth(1)
        .expect("url")
        .trim()
        .to_string()
}

/// A plain HTTP/1.0 GET: `Some(body)` when the server answered 200.
pub fn http_get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // `*.localhost` is loopback (RFC 6761); the resolver here does not know it, so connect by
    // address and name the host in the request, as a browser does.
    let address = match host.rsplit_once(':') {
        Some((name, port)) if name.ends_with(".localhost") => format!("127.0.0.1:{port}"),
        _ => host.to_string(),
    };
    http_get_at(&address, host, path)
}

/// GET `path` from `address` with this Host header; the body of a 200 answer.
pub fn http_get_at(address: &str, host: &str, path: &str) -> Option<String> {
    let (status, body) = http_request(address, host, path)?;
    (status == 200).then_some(body)
}

/// GET `path` from `address` with this Host header: (status, body).
pub fn http_request(address: &str, host: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The command's stdout; fails the test (with its output) when it did not succeed.
pub fn ok(output: &Output) -> String {
    assert!(output.status.success(), "command failed:\n{}", text(output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts `output` contains each of `needles`, in this order.
pub fn assert_in_order(output: &str, needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        match output[from..].find(needle) {
            Some(at) => from += at + needle.len(),
            None => panic!("expected {needle:?} (in order) in:\n{output}"),
        }
    }
}

/// Reads a response head (through the blank line) byte by byte, leaving what follows unread.
pub fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("read head");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The Debian image with python, node, go, ruby and rust that tests/base_images.sh makes.
pub const LANGS: &str = "berth-test/langs:bookworm";

/// Fails the test, naming the fix, when the LANGS base image is missing.
pub fn require_langs_image() {
    require_image(LANGS);
}

/// A repo whose app is one Python file (`source`, run as `python3 /app.py` on the LANGS image).
pub fn python_app(source: &str) -> tempfile::TempDir {
    require_langs_image();
    let repo = tempfile::tempdir().expect("temp dir");
    git(repo.path(), &["init", "-q", "-b", "main"]);
    write(repo.path(), "app.py", source);
    write(
        repo.path(),
        "Dockerfile",
        &format!("FROM {LANGS}\nCOPY app.py /app.py\nCMD [\"python3\", \"/app.py\"]\n"),
    );
    commit(repo.path(), "python app");
    repo
}

/// Fails the test, naming the fix, when a base image tests/base_images.sh makes is missing.
pub fn require_image(image: &str) {
    let inspected = Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .expect("docker image inspect");
    assert!(
        inspected.status.success(),
        "the base image {image} is missing: run the tests with tests/run.sh (tests/base_images.sh makes it)"
    );
}

/// Fails unless the engine is a swarm (tests/run.sh runs `docker swarm init`).
pub fn require_swarm() {
    let state = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .output()
        .expect("docker info");
    assert_eq!(
        String::from_utf8_lossy(&state.stdout).trim(),
        "active",
        "the engine is not a swarm: run the tests with tests/run.sh (it runs `docker swarm init`)"
    );
}

/// The JSON a successful command printed.
pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(output))
        .unwrap_or_else(|e| panic!("bad JSON ({e}):\n{}", text(output)))
}
