//! berth on a real three-node Docker Swarm: three containers with systemd as PID 1 and their own
//! Docker engines (`berth-test/swarm-node:bookworm`, made by tests/base_images.sh) on a network
//! of their own. berth is installed on the manager with the README's command
//! (`install.sh --swarm ADDR`); the workers are set up as its output says and join with the
//! line `nodes:join-command` gives. Release images reach the workers only through berth's
//! registry. Everything is checked from outside: `git push` and `ssh` (real OpenSSH) to the
//! manager, requests through its router, tasks seen on the nodes' own engines.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::hosts::*;
use common::*;

const NODE_IMAGE: &str = "berth-test/swarm-node:bookworm";

/// A manager (berth installed) and two workers, on a network of their own. Made once for the
/// test; removed, with their volumes and the network, when dropped.
struct Cluster {
    network: String,
    manager: Host,
    workers: Vec<Host>,
    key: PathBuf,
    _keys: tempfile::TempDir,
}

impl Cluster {
    fn make() -> Cluster {
        let tag = format!("berth-cluster-{}", std::process::id());
        let _ = Command::new("docker")
            .args(["network", "rm", &tag])
            .output();
        let made = Command::new("docker")
            .args(["network", "create", "--label", "berth.test=cluster", &tag])
            .output()
            .expect("docker network create");
        assert!(made.status.success(), "{}", text(&made));
        // The three boot at once (each waits for its systemd).
        let boots: Vec<_> = ["manager", "worker-1", "worker-2"]
            .into_iter()
            .map(|role| {
                let (name, network) = (format!("{tag}-{role}"), tag.clone());
                std::thread::spawn(move || Host::boot_from(&name, NODE_IMAGE, Some(&network)))
            })
            .collect();
        let mut hosts: Vec<Host> = boots.into_iter().map(|b| b.join().expect("boot")).collect();
        let manager = hosts.remove(0);
        let keys = tempfile::tempdir().expect("dir");
        let key = keys.path().join("admin");
        let cluster = Cluster {
            network: tag,
            manager,
            workers: hosts,
            key,
            _keys: keys,
        };
        let (_, installed) = install_berth_with(
            &cluster.manager,
            &cluster.key,
            &format!("--swarm {}", cluster.manager.address),
        );
        assert!(answers(&cluster.manager, &cluster.key), "{installed}");
        let registry = format!("{}:5055", cluster.manager.address);
        assert!(
            installed.contains(&format!("Swarm manager at {}", cluster.manager.address))
                && installed.contains(&registry),
            "install.sh did not say what a node needs: {installed}"
        );
        // Each worker as the README says: the registry allowed, then the join line.
        let join = cluster.ssh_ok(&["nodes:join-command"]);
        assert!(join.contains(&registry), "{join}");
        let line = join
            .lines()
            .find(|l| l.starts_with("docker swarm join --token"))
            .unwrap_or_else(|| panic!("no join line: {join}"))
            .to_string();
        for worker in &cluster.workers {
            worker.ok(&format!(
                "printf '{{\"insecure-registries\": [\"{registry}\"]}}\\n' > /etc/docker/daemon.json && systemctl reload docker"
            ));
            worker.ok(&line);
        }
        wait("three ready nodes", || {
            let nodes = cluster.nodes();
            (nodes.len() == 3
                && nodes
                    .iter()
                    .all(|n| n["state"] == "ready" && n["availability"] == "active"))
            .then_some(())
        });
        cluster
    }

    fn ssh(&self, args: &[&str]) -> Output {
        ssh_to(&self.manager, &self.key, args)
    }

    fn ssh_ok(&self, args: &[&str]) -> String {
        let output = self.ssh(args);
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// What a failed request's assertion shows: the router's 5xx lines (access log), berth's
    /// processes on the manager, and where the swarm's tasks are.
    fn trail(&self) -> String {
        self.manager.ok(
            "grep -E ' 50[0-9] ' /var/lib/berth/logs/access.log | tail -20; date -u +%T.%N; \
             ps -eo pid,lstart,args | grep '[b]erth '; \
             docker service ps --no-trunc --format '{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}} {{.Error}}' \
               $(docker service ls -q) 2>&1 | head -30",
        )
    }

    /// No request of `load` failed (with the trail when some did); gives how many were made.
    fn none_failed(&self, what: &str, load: Load) -> usize {
        let (made, failed, failures) = load.finish();
        if failed > 0 {
            panic!(
                "{failed} of {made} failed {what}: {failures:?}\n{}",
                self.trail()
            );
        }
        made
    }

    fn nodes(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ssh_ok(&["nodes:list", "--json"])).expect("nodes json")
    }

    fn push(&self, repo: &Path, app: &str) -> Output {
        push_to(&self.manager, &self.key, repo, app)
    }

    fn router(&self) -> String {
        format!("{}:80", self.manager.address)
    }

    fn site(&self, app: &str) -> String {
        format!("{app}.{}", self.manager.address)
    }

    /// The app's running web tasks as `ps:report --json` gives them: (name, node, release).
    fn web_tasks(&self, app: &str) -> Vec<(String, String, i64)> {
        let report: Vec<serde_json::Value> =
            serde_json::from_str(&self.ssh_ok(&["ps:report", app, "--json"])).expect("report");
        report
            .iter()
            .filter(|c| c["process"] == "web" && c["state"] == "running")
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["node"].as_str().unwrap_or_default().to_string(),
                    c["release"].as_i64().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Waits until the app runs `count` web tasks of `release`, and gives them by node.
    fn wait_tasks(&self, app: &str, count: usize, release: i64) -> BTreeMap<String, usize> {
        wait(&format!("{count} web tasks of v{release}"), || {
            let tasks = self.web_tasks(app);
            (tasks.len() == count && tasks.iter().all(|t| t.2 == release)).then(|| {
                let mut by_node = BTreeMap::new();
                for (_, node, _) in tasks {
                    *by_node.entry(node).or_insert(0) += 1;
                }
                by_node
            })
        })
    }

    /// What `/who` answers through the router, over `tries` requests: the distinct answers.
    fn answers(&self, app: &str, tries: usize) -> BTreeSet<String> {
        (0..tries)
            .filter_map(|_| http_request(&self.router(), &self.site(app), "/who"))
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body.trim().to_string())
            .collect()
    }

    fn hostname(host: &Host) -> String {
        host.name.clone()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut names = vec![self.manager.name.clone()];
        names.extend(self.workers.iter().map(|w| w.name.clone()));
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&names)
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

/// Swarm work (pulls on the nodes, a node's loss noticed) takes longer than a local engine's.
fn wait<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    wait_up_to(Duration::from_secs(90), what, check)
}

#[test]
fn a_three_node_swarm_runs_every_app_on_every_node_and_loses_nothing() {
    let cluster = Cluster::make();
    let nodes = cluster.nodes();
    let roles: BTreeSet<String> = nodes
        .iter()
        .map(|n| n["role"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        roles,
        BTreeSet::from(["leader".to_string(), "worker".to_string()]),
        "{nodes:?}"
    );
    let worker_1 = Cluster::hostname(&cluster.workers[0]);
    let worker_2 = Cluster::hostname(&cluster.workers[1]);

    // A push: the app runs on the swarm (install.sh --swarm made it the default target), its
    // image pulled by the nodes from berth's registry.
    let app = app_name("cluster");
    cluster.ssh_ok(&["apps:create", &app]);
    // TPL: a swarm template, which every task and one-off task must see as set.
    cluster.ssh_ok(&["config:set", &app, "GREETING=hello", "'TPL={{.Node.ID}}'"]);
    let repo = who_app("v1");
    let push = cluster.push(repo.path(), &app);
    assert!(push.status.success(), "{}", text(&push));
    cluster.wait_tasks(&app, 1, 1);

    // Scale 1 → 3: the tasks spread over the nodes, every one answers through the router.
    cluster.ssh_ok(&["ps:scale", &app, "web=3"]);
    let by_node = cluster.wait_tasks(&app, 3, 1);
    assert!(by_node.len() >= 2, "tasks on one node only: {by_node:?}");
    let expected: BTreeSet<String> = (1..=3).map(|i| format!("web.{i} hello")).collect();
    assert_eq!(cluster.answers(&app, 30), expected);
    // ... and each worker's engine pulled the release from the registry itself.
    for worker in &cluster.workers {
        if by_node.contains_key(&worker.name) {
            let images = worker.ok("docker image ls --format '{{.Repository}}'");
            assert!(
                images.contains(&format!("{}:5055/{app}", cluster.manager.address)),
                "{}: {images}",
                worker.name
            );
        }
    }

    // 3 → 6 → 2.
    cluster.ssh_ok(&["ps:scale", &app, "web=6"]);
    let by_node = cluster.wait_tasks(&app, 6, 1);
    assert_eq!(
        by_node.len(),
        3,
        "six tasks not spread over three nodes: {by_node:?}"
    );
    let expected: BTreeSet<String> = (1..=6).map(|i| format!("web.{i} hello")).collect();
    assert_eq!(cluster.answers(&app, 60), expected);
    cluster.ssh_ok(&["ps:scale", &app, "web=2"]);
    cluster.wait_tasks(&app, 2, 1);
    let expected: BTreeSet<String> = (1..=2).map(|i| format!("web.{i} hello")).collect();
    wait("only two instances answering", || {
        (cluster.answers(&app, 20) == expected).then_some(())
    });

    // ps:report names each task's node (text too), logs come from tasks on any node.
    let report = cluster.ssh_ok(&["ps:report", &app]);
    let tasks = cluster.web_tasks(&app);
    for (name, node, _) in &tasks {
        assert!(report.contains(name) && report.contains(node), "{report}");
    }
    let logs = cluster.ssh_ok(&["logs", &app]);
    for slot in 1..=2 {
        assert!(
            logs.contains(&format!("web.{slot} | booting web.{slot}")),
            "{logs}"
        );
    }

    // A release that crashes at start: the swarm rolls back, v1 serves on from every node.
    std::fs::write(
        repo.path().join("Dockerfile"),
        "FROM berth-test/busybox:latest\nCMD [\"sh\", \"-c\", \"echo crashing; exit 3\"]\n",
    )
    .expect("write");
    commit(repo.path(), "crash");
    let push = cluster.push(repo.path(), &app);
    assert!(!push.status.success(), "{}", text(&push));
    assert!(text(&push).contains("exit code 3"), "{}", text(&push));
    cluster.wait_tasks(&app, 2, 1);
    assert_eq!(cluster.answers(&app, 20), expected);

    // An upgrade under load: install.sh run again without --swarm, as an upgrade does. No
    // request fails, and the manager stays one: its registry still answers the nodes (which
    // pull the next release from it below).
    let load = Load::start_many(4, &cluster.router(), &cluster.site(&app), "/who", |b| {
        b.trim().ends_with("hello")
    });
    let again = cluster.manager.ok(&format!(
        "cd /opt/berth && BERTH_PUBLIC_HOST={} ./install.sh 2>&1",
        cluster.manager.address
    ));
    assert!(
        again.contains(&format!("Swarm manager at {}", cluster.manager.address)),
        "{again}"
    );
    assert!(answers(&cluster.manager, &cluster.key), "{again}");
    cluster.none_failed("during the upgrade", load);
    let registry = cluster.workers[0].ok(&format!(
        "curl -s -o /dev/null -w '%{{http_code}}' http://{}:5055/v2/",
        cluster.manager.address
    ));
    assert_eq!(
        registry.trim(),
        "401",
        "the registry no longer answers the nodes"
    );

    // A good release with a release phase (on the manager's engine), rolled out across the
    // nodes under load: no request fails, though requests that take 0.3 s are in flight on
    // every task when the swarm stops it.
    git(repo.path(), &["reset", "-q", "--hard", "HEAD~1"]);
    write_who_app(repo.path(), "v3", "");
    std::fs::write(
        repo.path().join("Procfile"),
        "release: echo \"migrating with $GREETING\"\n",
    )
    .expect("write");
    // An app.json health check: each task is checked where it runs (a 500 once /tmp/sick is).
    std::fs::write(
        repo.path().join("app.json"),
        r#"{"healthchecks": {"web": [{"type": "startup", "path": "/cgi-bin/health"}]}}"#,
    )
    .expect("write");
    write_cgi(
        repo.path(),
        "health",
        "[ -e /tmp/sick ] && echo 'Status: 500 Internal Server Error'\necho 'Content-Type: text/plain'\necho\necho checked",
    );
    commit(repo.path(), "v3");
    let load = Load::start_many(
        8,
        &cluster.router(),
        &cluster.site(&app),
        "/cgi-bin/slow",
        |b| b.trim().ends_with("hello"),
    );
    let push = cluster.push(repo.path(), &app);
    assert!(push.status.success(), "{}", text(&push));
    assert!(
        text(&push).contains("migrating with hello"),
        "no release phase: {}",
        text(&push)
    );
    let release = cluster.web_tasks(&app)[0].2;
    let by_node = cluster.wait_tasks(&app, 2, release);
    let made = cluster.none_failed("during the rolling update", load);
    assert!(made > 40, "only {made} requests");
    assert!(
        cluster
            .workers
            .iter()
            .any(|w| by_node.contains_key(&w.name)),
        "no task on a worker: {by_node:?}"
    );

    // Config changes reach every task as set: the swarm's own templates (`{{.Node.Hostname}}`,
    // a lone `{{`) stay literal. Then a rollback under load: every answer is one release's or
    // the other's, none fails.
    let templated = "hi {{.Node.Hostname}} {{";
    cluster.ssh_ok(&["config:set", &app, &format!("'GREETING={templated}'")]);
    let changed = cluster.web_tasks(&app)[0].2;
    assert!(changed > release, "config:set made no release");
    cluster.wait_tasks(&app, 2, changed);
    let literal: BTreeSet<String> = (1..=2).map(|i| format!("web.{i} {templated}")).collect();
    wait("the new config answering", || {
        (cluster.answers(&app, 20) == literal).then_some(())
    });
    let load = Load::start_many(4, &cluster.router(), &cluster.site(&app), "/who", |b| {
        b.trim().ends_with("hello") || b.trim().ends_with("hi {{.Node.Hostname}} {{")
    });
    let rollback = cluster.ssh_ok(&["releases:rollback", &app]);
    wait("the rolled back config answering", || {
        (cluster.answers(&app, 20) == expected).then_some(())
    });
    cluster.none_failed(&format!("during the rollback ({rollback})"), load);
    let release = cluster.web_tasks(&app)[0].2;
    cluster.wait_tasks(&app, 2, release);

    // The health check runs against every task on its own node: one that fails it (made sick
    // on its node's engine) is taken out, and put back once it passes again.
    let (name, node, _) = cluster.web_tasks(&app)[0].clone();
    let host = std::iter::once(&cluster.manager)
        .chain(&cluster.workers)
        .find(|h| h.name == node)
        .unwrap_or_else(|| panic!("no host {node}"));
    let slot = name.split('.').nth(1).expect("slot").to_string();
    host.ok(&format!("docker exec {name} touch /tmp/sick"));
    let others: BTreeSet<String> = expected
        .iter()
        .filter(|a| !a.starts_with(&format!("web.{slot} ")))
        .cloned()
        .collect();
    wait("the sick task taken out", || {
        (cluster.answers(&app, 20) == others).then_some(())
    });
    host.ok(&format!("docker exec {name} rm /tmp/sick"));
    wait("the task back once healthy", || {
        (cluster.answers(&app, 20) == expected).then_some(())
    });

    // Metrics count the app's requests and deploys on the cluster.
    let metrics = cluster.manager.ok("curl -s http://127.0.0.1:9180/metrics");
    let count = |line: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        count(&format!(
            "berth_http_requests_total{{app=\"{app}\",status=\"2xx\"}}"
        )) > 40.0
            && count(&format!(
                "berth_deploys_total{{app=\"{app}\",outcome=\"succeeded\"}}"
            )) >= 3.0,
        "{metrics}"
    );
    // Canaries: a clear refusal, naming what they need.
    let canary = cluster.ssh(&["canary:start", &app, "--weight", "10"]);
    assert!(
        !canary.status.success() && text(&canary).contains("canaries run on the docker target"),
        "{}",
        text(&canary)
    );
    // A backup on the manager holds the app's repo and the DB.
    let backup = cluster
        .manager
        .ok("berth backup /root/cluster.tar --config /etc/berth/berth.toml 2>&1 && tar tf /root/cluster.tar");
    assert!(
        backup.contains("Backed up 1 app(s)")
            && backup.lines().any(|l| l == "berth.db")
            && backup.contains(&format!("repos/{app}.git/")),
        "{backup}"
    );

    // Placement: pinned to the nodes labelled so, then free again; a bad one changes nothing.
    cluster.ssh_ok(&["nodes:label", &worker_1, "zone=eu"]);
    cluster.ssh_ok(&["apps:set", &app, "placement=node.labels.zone==eu"]);
    let by_node = cluster.wait_tasks(&app, 2, release);
    assert_eq!(
        by_node.keys().collect::<Vec<_>>(),
        [&worker_1],
        "{by_node:?}"
    );
    let bad = cluster.ssh(&["apps:set", &app, "placement=zone==eu"]);
    assert!(
        !bad.status.success() && text(&bad).contains("node.labels.KEY==VALUE"),
        "{}",
        text(&bad)
    );
    let info = cluster.ssh_ok(&["apps:info", &app, "--json"]);
    assert!(info.contains("node.labels.zone==eu"), "{info}");
    // run:task: a one-off task where the placement allows (worker-1), its output and exit code.
    let run = cluster.ssh(&[
        "run:task",
        &app,
        "sh",
        "-c",
        "'echo \"$GREETING from $DYNO $TPL\"; echo to-stderr >&2; exit 7'",
    ]);
    assert_eq!(run.status.code(), Some(7), "{}", text(&run));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "hello from run.task {{.Node.ID}}\n"
    );
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("to-stderr"),
        "{}",
        text(&run)
    );
    assert!(
        String::from_utf8_lossy(&run.stderr).contains(&format!("one-off task on node {worker_1}")),
        "{}",
        text(&run)
    );
    let services = cluster.manager.ok("docker service ls --format '{{.Name}}'");
    assert!(
        !services.contains("-run-"),
        "the one-off service stayed: {services}"
    );
    cluster.ssh_ok(&["apps:set", &app, "placement="]);
    cluster.ssh_ok(&["nodes:label", &worker_1, "zone-"]);

    // nodes:drain moves the tasks off a worker with no failed request, though requests that
    // take 0.3 s are in flight on every task; activate takes it back.
    cluster.ssh_ok(&["ps:scale", &app, "web=3"]);
    let by_node = cluster.wait_tasks(&app, 3, release);
    assert!(by_node.contains_key(&worker_1), "{by_node:?}");
    let load = Load::start_many(
        8,
        &cluster.router(),
        &cluster.site(&app),
        "/cgi-bin/slow",
        |b| b.trim().ends_with("hello"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let drained = cluster.ssh_ok(&["nodes:drain", &worker_1]);
    assert!(
        drained.contains(&format!("{worker_1} is drain")),
        "{drained}"
    );
    let by_node = wait("the drained node empty", || {
        let by_node = cluster.wait_tasks(&app, 3, release);
        (!by_node.contains_key(&worker_1)).then_some(by_node)
    });
    std::thread::sleep(Duration::from_secs(2));
    let made = cluster.none_failed(&format!("during the drain ({by_node:?})"), load);
    assert!(made > 40, "only {made} slow requests");
    cluster.ssh_ok(&["nodes:activate", &worker_1]);

    // A worker dies under load (its container killed): only requests in flight on it at
    // that instant may fail; the swarm moves its tasks, berth follows, all answer again.
    let on_worker_2 = wait("a task on worker-2", || {
        cluster
            .wait_tasks(&app, 3, release)
            .get(&worker_2)
            .copied()
            .filter(|n| *n > 0)
    });
    let clients = 4;
    let load = Load::start_many(
        clients,
        &cluster.router(),
        &cluster.site(&app),
        "/who",
        |b| b.trim().ends_with("hello"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    let kill = Command::new("docker")
        .args(["kill", &cluster.workers[1].name])
        .output()
        .expect("docker kill");
    assert!(kill.status.success(), "{}", text(&kill));
    let killed_at = cluster.manager.ok("date -u +%T.%N");
    let by_node = wait("the tasks back on the other nodes", || {
        let tasks = cluster.web_tasks(&app);
        (tasks.len() == 3 && tasks.iter().all(|t| t.1 != worker_2)).then_some(tasks)
    });
    let back = killed.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let (made, failed, failures) = load.finish();
    eprintln!(
        "node loss: {failed} of {made} requests failed ({on_worker_2} of 3 tasks on the lost node, {clients} clients), tasks back in {back:?}"
    );
    if failed > clients {
        // Which instances failed, and when (the access log: time, ..., status, app, instance).
        let log = cluster.trail();
        panic!(
            "{failed} of {made} failed, more than the {clients} that can be in flight: {failures:?} ({by_node:?}, killed at {})\n{log}",
            killed_at.trim()
        );
    }

    // Degraded: pinned to worker-1, which then dies too; no node may take its tasks, and
    // apps:list / apps:info say so, and why.
    cluster.ssh_ok(&["nodes:label", &worker_1, "zone=eu"]);
    cluster.ssh_ok(&["apps:set", &app, "placement=node.labels.zone==eu"]);
    cluster.wait_tasks(&app, 3, release);
    let kill = Command::new("docker")
        .args(["kill", &cluster.workers[0].name])
        .output()
        .expect("docker kill");
    assert!(kill.status.success(), "{}", text(&kill));
    let degraded = wait("the app degraded", || {
        let info: serde_json::Value =
            serde_json::from_str(&cluster.ssh_ok(&["apps:info", &app, "--json"])).expect("info");
        // With why, once the swarm has made the tasks that wait for a node.
        info["degraded"]
            .as_str()
            .filter(|d| d.contains('('))
            .map(String::from)
    });
    assert!(
        degraded.starts_with("web: 0 of 3 running") && degraded.contains("no suitable node"),
        "{degraded}"
    );
    let listed = cluster.ssh_ok(&["apps:list"]);
    assert!(listed.contains("degraded: web: 0 of 3 running"), "{listed}");

    // Gone: the app's stack, its tasks on the node left (the manager).
    cluster.ssh_ok(&["apps:destroy", &app, "--confirm", &app]);
    wait("no task container left", || {
        cluster
            .manager
            .ok("docker ps -aq --filter label=com.docker.swarm.service.name")
            .trim()
            .is_empty()
            .then_some(())
    });
}
