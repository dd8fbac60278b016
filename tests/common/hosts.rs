//! Hosts of their own for the tests that install berth the way a user does: containers with
//! systemd as PID 1 (the flags ENVIRONMENT.md found to work here), each with its own Docker
//! engine when its image has one. berth is installed in them with the README's command; they
//! are reached over their network addresses with the real `git` and OpenSSH clients.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;

pub const SYSTEMD_IMAGE: &str = "berth-test/debian-systemd:bookworm";

/// A systemd host in a container (the flags ENVIRONMENT.md found to work here: every
/// capability but SYS_RESOURCE, the host's cgroups, tmpfs for /run). Its own Docker engine
/// keeps its images in a volume (overlay2 cannot sit on overlay2). Removed with its volume
/// when dropped.
pub struct Host {
    pub name: String,
    pub address: String,
}

impl Host {
    pub fn boot(name: &str) -> Host {
        Host::boot_from(name, SYSTEMD_IMAGE, None)
    }

    /// A host from `image`, on `network` (the default bridge when none).
    pub fn boot_from(name: &str, image: &str, network: Option<&str>) -> Host {
        require_image(image);
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", name])
            .output();
        // On a network of their own, hosts are told apart by name (swarm nodes); alone, a host
        // is named as install.sh's output expects.
        let hostname = if network.is_some() {
            name
        } else {
            "berth-host"
        };
        let run = Command::new("docker")
            .args(["run", "-d", "--name", name, "--hostname", hostname])
            .args(network.map(|n| ["--network", n]).into_iter().flatten())
            .args([
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
                image,
                "/lib/systemd/systemd",
            ])
            .output()
            .expect("docker run");
        assert!(run.status.success(), "{}", text(&run));
        let address_format = match network {
            Some(network) => {
                format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}")
            }
            None => "{{.NetworkSettings.IPAddress}}".to_string(),
        };
        let address = String::from_utf8_lossy(
            &Command::new("docker")
                .args(["inspect", "-f", &address_format, name])
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

    pub fn sh(&self, script: &str) -> Output {
        Command::new("docker")
            .args(["exec", &self.name, "bash", "-c", script])
            .output()
            .expect("docker exec")
    }

    /// The script's stdout; fails the test when it failed.
    pub fn ok(&self, script: &str) -> String {
        let output = self.sh(script);
        assert!(output.status.success(), "{script}: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Feeds `input` to the script's stdin.
    pub fn pipe(&self, script: &str, input: &mut dyn Read) {
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

    pub fn main_pid(&self, unit: &str) -> String {
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
pub fn project_tar() -> Vec<u8> {
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

pub fn ssh_to(host: &Host, key: &Path, args: &[&str]) -> Output {
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
pub fn answers(host: &Host, key: &Path) -> bool {
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
pub fn install_berth(host: &Host, key: &Path) -> (String, String) {
    install_berth_with(host, key, "")
}

/// `install_berth` with more options for install.sh (`--swarm ADDR`).
pub fn install_berth_with(host: &Host, key: &Path, options: &str) -> (String, String) {
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
        "cd /opt/berth && BERTH_PUBLIC_HOST={} ./install.sh --admin-key /root/admin.pub {options} 2>&1",
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
pub fn push_to(host: &Host, key: &Path, repo: &Path, app: &str) -> Output {
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

/// Requests in a loop until stopped, from one client or several at once: how many were made and
/// how many failed (not a 200 whose body `good` accepts).
pub struct Load {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    pub fn start(router: &str, site: &str, path: &str, good: fn(&str) -> bool) -> Load {
        Load::start_many(1, router, site, path, good)
    }

    /// `clients` clients, each one request at a time.
    pub fn start_many(
        clients: usize,
        router: &str,
        site: &str,
        path: &str,
        good: fn(&str) -> bool,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (made, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads = (0..clients)
            .map(|_| {
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
            })
            .collect();
        Load {
            stop,
            made,
            failed,
            threads,
        }
    }

    /// Stops the clients; (made, failed, what the first failures were).
    pub fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("load"))
            .collect();
        (
            self.made.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            failures,
        )
    }
}

/// A busybox web app for the systemd target: `/who` says which instance answered and the
/// config var it was given, and the app says so at start (its log).
pub fn who_app(label: &str) -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("dir");
    git(repo.path(), &["init", "-q", "-b", "main"]);
    write_who_app(repo.path(), label, "");
    commit(repo.path(), "initial");
    repo
}

/// An executable `www/cgi-bin/NAME` (busybox httpd runs it): a shell script of `body`.
pub fn write_cgi(repo: &Path, name: &str, body: &str) {
    std::fs::create_dir_all(repo.join("www/cgi-bin")).expect("mkdir");
    let script = repo.join("www/cgi-bin").join(name);
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
}

pub fn write_who_app(repo: &Path, label: &str, before: &str) {
    std::fs::create_dir_all(repo.join("www")).expect("mkdir");
    std::fs::write(repo.join("www/index.html"), format!("{label}\n")).expect("write");
    // A request that takes 0.3 s: one is in flight on every instance most of the time.
    write_cgi(
        repo,
        "slow",
        "echo 'Content-Type: text/plain'\necho\nsleep 0.3\necho \"$DYNO $GREETING\"",
    );
    std::fs::write(
        repo.join("Dockerfile"),
        format!(
            "FROM berth-test/busybox:latest\nCOPY www /www\nCMD [\"sh\", \"-c\", \"{before}echo \\\"booting $DYNO\\\"; echo \\\"$DYNO $GREETING\\\" > /www/who; exec httpd -f -p $PORT -h /www\"]\n"
        ),
    )
    .expect("write");
}
