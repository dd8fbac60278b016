//! install.sh on a fresh systemd host: a Debian 12 container with systemd as PID 1 and nothing
//! else (no Docker, no git, no berth; `berth-test/debian-systemd:bookworm`, made by
//! tests/base_images.sh). The project is copied in with the binary built here (the host has no
//! Rust toolchain, as most servers), the README's install command runs there, and the checks
//! are a user's: the services active and enabled, a `git push` from outside (real git and
//! OpenSSH) goes live, `ssh berth@HOST apps:list` answers, the service comes back after
//! `systemctl restart berth` and after a crash, a second run changes nothing, and an upgrade
//! restarts only what must restart, with no request failing meanwhile.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

const IMAGE: &str = "berth-test/debian-systemd:bookworm";

/// A systemd host in a container (the flags ENVIRONMENT.md found to work here: every
/// capability but SYS_RESOURCE, the host's cgroups, tmpfs for /run). Its own Docker engine
/// keeps its images in a volume (overlay2 cannot sit on overlay2). Removed with its volume
/// when dropped.
struct Host {
    name: String,
    address: String,
}

impl Host {
    fn boot(name: &str) -> Host {
        require_image(IMAGE);
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", name])
            .output();
        let run = Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                name,
                "--hostname",
                "berth-host",
                "--label",
                "berth.test=systemd",
                "--cap-add",
                "ALL",
                "--cap-drop",
                "SYS_RESOURCE",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
                "--cgroupns=host",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "-v",
                "/var/lib/docker",
                IMAGE,
                "/lib/systemd/systemd",
            ])
            .output()
            .expect("docker run");
        assert!(run.status.success(), "{}", text(&run));
        let address = String::from_utf8_lossy(
            &Command::new("docker")
                .args(["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name])
                .output()
                .expect("inspect")
                .stdout,
        )
        .trim()
        .to_string();
        let host = Host {
            name: name.to_string(),
            address,
        };
        // systemd is PID 1 and has finished booting.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = host.sh("systemctl is-system-running");
            let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(Instant::now() < deadline, "systemd did not boot: {state}");
            std::thread::sleep(Duration::from_millis(500));
        }
        let init = host.sh("cat /proc/1/comm");
        assert_eq!(String::from_utf8_lossy(&init.stdout).trim(), "systemd");
        host
    }

    fn sh(&self, script: &str) -> Output {
        Command::new("docker")
            .args(["exec", &self.name, "bash", "-c", script])
            .output()
            .expect("docker exec")
    }

    /// The script's stdout; fails the test when it failed.
    fn ok(&self, script: &str) -> String {
        let output = self.sh(script);
        assert!(output.status.success(), "{script}: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Feeds `input` to the script's stdin.
    fn pipe(&self, script: &str, input: &mut dyn Read) {
        let mut child = Command::new("docker")
            .args(["exec", "-i", &self.name, "bash", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("docker exec");
        std::io::copy(input, child.stdin.as_mut().expect("stdin")).expect("copy");
        drop(child.stdin.take());
        assert!(child.wait().expect("wait").success(), "{script}");
    }

    fn main_pid(&self, unit: &str) -> String {
        self.ok(&format!("systemctl show -p MainPID --value {unit}"))
            .trim()
            .to_string()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .output();
    }
}

/// The project as a user has it (the files git knows, with what is not committed yet) and the
/// binary built here, as a tar stream.
fn project_tar() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = Command::new("git")
        .args(["ls-files", "-co", "--exclude-standard"])
        .current_dir(root)
        .output()
        .expect("git ls-files");
    let mut list: Vec<String> = String::from_utf8_lossy(&files.stdout)
        .lines()
        .filter(|f| root.join(f).is_file())
        .map(String::from)
        .collect();
    list.push("target/release/berth".to_string());
    let mut tar = Command::new("tar")
        .args(["-c", "-f", "-", "-T", "-"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tar");
    tar.stdin
        .take()
        .expect("stdin")
        .write_all(list.join("\n").as_bytes())
        .expect("file list");
    let output = tar.wait_with_output().expect("tar");
    assert!(output.status.success());
    output.stdout
}

fn ssh_to(host: &Host, key: &Path, args: &[&str]) -> Output {
    Command::new("ssh")
        .args(["-i"])
        .arg(key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-p",
            "2222",
        ])
        .arg(format!("berth@{}", host.address))
        .args(args)
        .output()
        .expect("ssh")
}

/// Waits until berth answers over SSH on the host.
fn answers(host: &Host, key: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ssh_to(host, key, &["apps:list"]).status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// Runs the README's install command on the host with `key` as the admin's, then gives the
/// host's engine the fixtures' base image (it cannot pull). Gives the command and its output.
fn install_berth(host: &Host, key: &Path) -> (String, String) {
    keygen(key);
    host.pipe(
        "mkdir -p /opt/berth && tar -x -C /opt/berth",
        &mut project_tar().as_slice(),
    );
    host.pipe(
        "cat > /root/admin.pub",
        &mut std::fs::File::open(key.with_extension("pub")).expect("key"),
    );
    let install = format!(
        "cd /opt/berth && BERTH_PUBLIC_HOST={} ./install.sh --admin-key /root/admin.pub 2>&1",
        host.address
    );
    let output = host.ok(&install);
    let mut save = Command::new("docker")
        .args(["save", "berth-test/busybox:latest"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker save");
    host.pipe("docker load", save.stdout.as_mut().expect("stdout"));
    assert!(save.wait().expect("save").success());
    (install, output)
}

/// `git push` of the repo's `main` to the app on the host, over OpenSSH.
fn push_to(host: &Host, key: &Path, repo: &Path, app: &str) -> Output {
    Command::new("git")
        .args([
            "push",
            &format!("ssh://berth@{}:2222/{app}", host.address),
            "main",
        ])
        .current_dir(repo)
        .env(
            "GIT_SSH_COMMAND",
            format!(
                "ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes",
                key.display()
            ),
        )
        .output()
        .expect("git push")
}

/// Requests in a loop until stopped: how many were made and how many failed (not a 200 whose
/// body `good` accepts).
struct Load {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(router: &str, site: &str, path: &str, good: fn(&str) -> bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (made, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let thread = {
            let (stop, made, failed) = (stop.clone(), made.clone(), failed.clone());
            let (router, site, path) = (router.to_string(), site.to_string(), path.to_string());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    made.fetch_add(1, Ordering::Relaxed);
                    let answer = http_request(&router, &site, &path);
                    if !answer
                        .as_ref()
                        .is_some_and(|(status, body)| *status == 200 && good(body))
                    {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if failures.len() < 5 {
                            failures.push(format!("{answer:?}"));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                failures
            })
        };
        Load {
            stop,
            made,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops the loop; (made, failed, what the failures were).
    fn finish(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.thread.take().expect("thread").join().expect("load");
        (
            self.made.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            failures,
        )
    }
}

#[test]
fn install_sh_on_a_fresh_systemd_debian_runs_berth_as_services() {
    let host = Host::boot(&format!("berth-systemd-install-{}", std::process::id()));
    // Nothing of what berth needs is there.
    assert!(
        !host
            .sh("command -v docker || command -v git")
            .status
            .success(),
        "the host is not fresh"
    );
    let keys = tempfile::tempdir().expect("dir");
    let key = keys.path().join("admin");
    let (install, first) = install_berth(&host, &key);
    assert!(first.contains("No cargo here"), "{first}");
    for unit in ["docker", "berth-registry", "berth-dataplane", "berth"] {
        assert_eq!(
            host.ok(&format!("systemctl is-active {unit}")).trim(),
            "active",
            "{unit}: {first}"
        );
        assert_eq!(
            host.ok(&format!("systemctl is-enabled {unit}")).trim(),
            "enabled",
            "{unit}"
        );
    }
    assert!(answers(&host, &key), "berth does not answer over SSH");

    // A push from outside goes live.
    let app = app_name("installed");
    let repo = web_app("installed on systemd");
    let push = push_to(&host, &key, repo.path(), &app);
    assert!(push.status.success(), "{}", text(&push));
    let router = format!("{}:80", host.address);
    let site = format!("{app}.{}", host.address);
    let get = || http_request(&router, &site, "/").map(|(_, body)| body);
    assert_eq!(get().as_deref(), Some("installed on systemd\n"));
    let listed = ssh_to(&host, &key, &["apps:list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&app),
        "{}",
        text(&listed)
    );

    // `systemctl restart berth`: back, and the app served throughout by the data plane.
    let plane = host.main_pid("berth-dataplane");
    host.ok("systemctl restart berth");
    assert!(
        answers(&host, &key),
        "berth did not come back after a restart"
    );
    assert_eq!(host.main_pid("berth-dataplane"), plane);
    assert_eq!(get().as_deref(), Some("installed on systemd\n"));

    // A crash: systemd starts berth again.
    let before = host.main_pid("berth");
    host.ok(&format!("kill -9 {before}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.main_pid("berth") == before || host.main_pid("berth") == "0" {
        assert!(Instant::now() < deadline, "systemd did not restart berth");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        answers(&host, &key),
        "berth did not come back after a crash"
    );

    // A second run changes nothing: nothing installed, started or restarted.
    let pids = |host: &Host| {
        ["docker", "berth-registry", "berth-dataplane", "berth"].map(|unit| host.main_pid(unit))
    };
    let before = pids(&host);
    let again = host.ok(&install);
    assert!(
        !again.contains("Installing")
            && !again.contains("Starting")
            && !again.contains("Restarting")
            && !again.contains("Handing"),
        "{again}"
    );
    assert_eq!(pids(&host), before, "{again}");

    // An upgrade (a changed binary): the data plane hands its sockets over, the control plane
    // restarts; the engine and the registry stay. Requests all the while: none fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (made, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, made, failed) = (stop.clone(), made.clone(), failed.clone());
        let (router, site) = (router.clone(), site.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                made.fetch_add(1, Ordering::Relaxed);
                let ok = http_request(&router, &site, "/").is_some_and(|(status, body)| {
                    status == 200 && body == "installed on systemd\n"
                });
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    host.ok("printf 'upgraded' >> /opt/berth/target/release/berth");
    let upgrade = host.ok(&install);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load");
    assert!(upgrade.contains("Handing the data plane over"), "{upgrade}");
    let after = pids(&host);
    assert_eq!(
        after[..2],
        before[..2],
        "the engine or the registry restarted: {upgrade}"
    );
    assert_ne!(
        after[2], before[2],
        "the data plane did not take the new binary"
    );
    assert_ne!(after[3], before[3], "the control plane did not restart");
    assert!(
        answers(&host, &key),
        "berth does not answer after the upgrade"
    );
    let made = made.load(Ordering::Relaxed);
    assert!(made > 20, "only {made} requests made");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {made} requests");
    assert_eq!(get().as_deref(), Some("installed on systemd\n"));
}

/// A busybox web app for the systemd target: `/who` says which instance answered and the
/// config var it was given, and the app says so at start (its log).
fn who_app(label: &str) -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("dir");
    git(repo.path(), &["init", "-q", "-b", "main"]);
    write_who_app(repo.path(), label, "");
    commit(repo.path(), "initial");
    repo
}

fn write_who_app(repo: &Path, label: &str, before: &str) {
    std::fs::create_dir_all(repo.join("www")).expect("mkdir");
    std::fs::write(repo.join("www/index.html"), format!("{label}\n")).expect("write");
    std::fs::write(
        repo.join("Dockerfile"),
        format!(
            "FROM berth-test/busybox:latest\nCOPY www /www\nCMD [\"sh\", \"-c\", \"{before}echo \\\"booting $DYNO\\\"; echo \\\"$DYNO $GREETING\\\" > /www/who; exec httpd -f -p $PORT -h /www\"]\n"
        ),
    )
    .expect("write");
}

/// The app's unit files on the host (names only).
fn unit_files(host: &Host, app: &str) -> Vec<String> {
    let listed = host.sh(&format!(
        "cd /etc/systemd/system && ls -1 berth-{app}.* 2>/dev/null"
    ));
    let mut names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    names
}

#[test]
fn the_systemd_target_runs_each_instance_as_a_unit_health_gated_and_reconciled() {
    let started = Instant::now();
    let host = Host::boot(&format!("berth-systemd-target-{}", std::process::id()));
    let keys = tempfile::tempdir().expect("dir");
    let key = keys.path().join("admin");
    install_berth(&host, &key);
    assert!(answers(&host, &key), "berth does not answer over SSH");
    let berth = |args: &[&str]| ssh_to(&host, &key, args);
    let app = "units";
    let router = format!("{}:80", host.address);
    let site = format!("{app}.{}", host.address);
    let get = |path: &str| http_request(&router, &site, path).map(|(_, body)| body);

    ok(&berth(&["apps:create", app]));
    ok(&berth(&["apps:set", app, "target=systemd"]));
    ok(&berth(&[
        "config:set",
        app,
        "GREETING=s3cret-value",
        "--no-restart",
    ]));

    // A push goes live as one unit per instance, enabled, its config in a root-only env file.
    let repo = who_app("first");
    let push = push_to(&host, &key, repo.path(), app);
    assert!(push.status.success(), "{}", text(&push));
    let pushed = text(&push);
    assert!(
        pushed.contains(&format!("berth-{app}.v1-web-1.service")),
        "{pushed}"
    );
    assert_eq!(get("/").as_deref(), Some("first\n"));
    assert_eq!(get("/who").as_deref(), Some("web.1 s3cret-value\n"));
    let unit = format!("berth-{app}.v1-web-1.service");
    assert_eq!(unit_files(&host, app), std::slice::from_ref(&unit));
    assert_eq!(
        host.ok(&format!("systemctl is-active {unit}")).trim(),
        "active"
    );
    assert_eq!(
        host.ok(&format!("systemctl is-enabled {unit}")).trim(),
        "enabled"
    );
    let unit_text = host.ok(&format!("cat /etc/systemd/system/{unit}"));
    assert!(
        !unit_text.contains("s3cret-value"),
        "config in the unit:\n{unit_text}"
    );
    assert!(unit_text.contains(&format!("--env-file /etc/berth/env/{app}/v1.env")));
    assert_eq!(
        host.ok(&format!(
            "stat -c '%a %U' /etc/berth/env/{app}/v1.env /etc/berth/env/{app}"
        )),
        "600 root\n700 root\n"
    );
    assert!(
        host.ok(&format!("cat /etc/berth/env/{app}/v1.env"))
            .contains("GREETING=s3cret-value")
    );
    // ps:report shows the unit; logs read its journal.
    let report = json(&berth(&["ps:report", app, "--json"]));
    let rows = report.as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{report}");
    assert_eq!(rows[0]["unit"], unit.as_str(), "{report}");
    assert_eq!(rows[0]["unit_state"], "active (running)", "{report}");
    assert_eq!(rows[0]["traffic"], "serving", "{report}");
    let logs = ok(&berth(&["logs", app]));
    assert!(logs.contains("web.1 | booting web.1"), "{logs}");

    // Scale 1 → 3 → 1: more instance units, all serving; then the extra ones go.
    let scaled = ok(&berth(&["ps:scale", app, "web=3"]));
    assert_eq!(unit_files(&host, app).len(), 3, "{scaled}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.extend(get("/who"));
    }
    assert_eq!(seen.len(), 3, "instances answering: {seen:?}");
    ok(&berth(&["ps:scale", app, "web=1"]));
    wait_for("the extra units to go", || {
        (unit_files(&host, app) == [unit.clone()]).then_some(())
    });
    assert!(
        !host
            .ok("docker ps --format '{{.Names}}'")
            .contains(&format!("berth-{app}.v1-web-2")),
        "the extra containers stay"
    );

    // A release that crashes at start is refused; the old units serve on, nothing of it stays.
    write_who_app(repo.path(), "crashing", "exit 3; ");
    commit(repo.path(), "crash at start");
    let push = push_to(&host, &key, repo.path(), app);
    assert!(!push.status.success(), "a crashing release went live");
    let refused = text(&push);
    assert!(
        refused.contains("exited at start (exit code 3)"),
        "{refused}"
    );
    assert_eq!(
        unit_files(&host, app),
        std::slice::from_ref(&unit),
        "{refused}"
    );
    assert!(
        !host
            .sh(&format!("test -e /etc/berth/env/{app}/v2.env"))
            .status
            .success()
    );
    assert_eq!(get("/").as_deref(), Some("first\n"));

    // A good release under load: start-first, health-gated, no request fails; the old units go
    // once drained.
    write_who_app(repo.path(), "second", "");
    commit(repo.path(), "second");
    let load = Load::start(&router, &site, "/", |b| b == "first\n" || b == "second\n");
    let push = push_to(&host, &key, repo.path(), app);
    std::thread::sleep(Duration::from_millis(500));
    let (made, failed, failures) = load.finish();
    assert!(push.status.success(), "{}", text(&push));
    assert_eq!(
        failed, 0,
        "of {made} requests during the deploy: {failures:?}"
    );
    assert_eq!(get("/").as_deref(), Some("second\n"));
    let unit = format!("berth-{app}.v3-web-1.service");
    wait_for("the old release's units and env file to go", || {
        (unit_files(&host, app) == [unit.clone()]
            && !host
                .sh(&format!("test -e /etc/berth/env/{app}/v1.env"))
                .status
                .success())
        .then_some(())
    });

    // ps:restart under load: a spare serves while the instance restarts; none fails.
    let pid = host.main_pid(&unit);
    let load = Load::start(&router, &site, "/", |b| b == "second\n");
    let restarted = ok(&berth(&["ps:restart", app]));
    std::thread::sleep(Duration::from_millis(300));
    let (made, failed, failures) = load.finish();
    assert_eq!(
        failed, 0,
        "of {made} requests during the restart: {failures:?}\n{restarted}"
    );
    assert!(made > 10, "only {made} requests");
    assert_ne!(
        host.main_pid(&unit),
        pid,
        "the unit did not restart: {restarted}"
    );
    assert_eq!(
        unit_files(&host, app),
        std::slice::from_ref(&unit),
        "the spare stays: {restarted}"
    );

    // Rollback to v1: a new release of v1's image, as units of its own.
    ok(&berth(&["releases:rollback", app, "v1"]));
    assert_eq!(get("/").as_deref(), Some("first\n"));
    let unit = format!("berth-{app}.v4-web-1.service");
    wait_for("the rollback's units alone", || {
        (unit_files(&host, app) == [unit.clone()]).then_some(())
    });

    // ps:stop removes the units; ps:start brings them back.
    ok(&berth(&["ps:stop", app]));
    assert!(unit_files(&host, app).is_empty());
    assert_ne!(get("/").as_deref(), Some("first\n"));
    ok(&berth(&["ps:start", app]));
    assert_eq!(get("/").as_deref(), Some("first\n"));
    let unit = unit_files(&host, app).pop().expect("a unit after ps:start");

    // Killed from outside: a stopped unit is started again by the reconciler, a killed
    // container by systemd itself (same unit, same host port).
    host.ok(&format!("systemctl stop {unit}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while get("/").as_deref() != Some("first\n") {
        assert!(
            Instant::now() < deadline,
            "the stopped unit did not come back"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        host.ok(&format!("systemctl is-active {unit}")).trim(),
        "active"
    );
    let events = ok(&berth(&["events", app]));
    assert!(
        events.contains("started web.1 (unit was inactive)")
            || events.contains("started web.1 (unit was failed)"),
        "{events}"
    );
    let container = unit.trim_end_matches(".service").to_string();
    host.ok(&format!("docker kill {container}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    std::thread::sleep(Duration::from_millis(200));
    while get("/").as_deref() != Some("first\n") {
        assert!(
            Instant::now() < deadline,
            "systemd did not restart the killed container"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // apps:destroy leaves no unit, no env file, no container.
    ok(&berth(&["apps:destroy", app, "--confirm", app]));
    assert!(unit_files(&host, app).is_empty());
    assert!(
        !host
            .sh(&format!("test -e /etc/berth/env/{app}"))
            .status
            .success()
    );
    assert!(
        !host
            .ok("docker ps -a --format '{{.Names}}'")
            .contains(&format!("berth-{app}.")),
        "containers stay"
    );
    eprintln!(
        "systemd target test: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
