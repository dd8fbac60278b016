//! Targets, resources and the dry run: rendered units checked by the real tools
//! (`systemd-analyze verify`, the Kubernetes schemas, `docker stack config`).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// `deploy:render --json` written out as files in `dir`; returns their paths.
fn render_to(server: &TestServer, app: &str, target: &str, dir: &Path) -> Vec<std::path::PathBuf> {
    let rendered: Value = serde_json::from_str(&ok(&server.ssh(&[
        "deploy:render",
        app,
        "--target",
        target,
        "--json",
    ])))
    .expect("json");
    rendered
        .as_array()
        .expect("units")
        .iter()
        .map(|unit| {
            let path = dir.join(unit["name"].as_str().expect("name"));
            std::fs::write(&path, unit["text"].as_str().expect("text")).expect("write unit");
            path
        })
        .collect()
}

#[test]
fn rendered_units_pass_the_real_validators_and_resources_reach_every_target() {
    let server = TestServer::start();
    let app = app_name("targets");
    let repo = web_app("rendered");
    // Commands with quotes, `$` and `%` must reach every unit intact (and valid).
    write(
        repo.path(),
        "Procfile",
        "web: exec httpd -f -p \"$PORT\" -h /www # 100% \\ done\nworker: while true; do sleep 60; done\n",
    );
    commit(repo.path(), "procfile");
    server.push_ok(repo.path(), &app, "main");
    ok(&server.ssh(&["ps:scale", &app, "worker=1"]));
    ok(&server.ssh(&["ps:scale", &app, "web=2"]));
    ok(&server.ssh(&[
        "resources:set",
        &app,
        "web",
        "--cpu",
        "0.5",
        "--memory",
        "64m",
    ]));
    ok(&server.ssh(&["config:set", &app, "GREETING=hi"]));
    // Storage reaches every target: a named volume and (admins) a host directory.
    let host_dir = tempfile::tempdir().expect("dir");
    ok(&server.ssh(&["storage:mount", &app, "data:/data"]));
    ok(&server.ssh(&[
        "storage:mount",
        &app,
        &format!("{}:/srv/files", host_dir.path().display()),
    ]));
    let volume = json(&server.ssh(&["storage:list", &app, "--json"]))
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == "data")
        .and_then(|m| m["source"].as_str())
        .expect("the data volume")
        .to_string();

    // docker: the limits reach the containers of the new release (v2, from config:set).
    wait_for("the v1 containers to retire", || {
        running_containers(&app)
            .iter()
            .all(|n| n.contains("-v2-"))
            .then_some(())
    });
    let containers: Vec<String> = running_containers(&app)
        .into_iter()
        .filter(|n| n.contains("-web-"))
        .collect();
    assert_eq!(containers.len(), 2);
    for name in containers {
        let inspect = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}",
                &name,
            ])
            .output()
            .expect("inspect");
        assert_eq!(
            String::from_utf8_lossy(&inspect.stdout).trim(),
            "500000000 67108864",
            "{name}"
        );
        let mounts = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{range .Mounts}}{{.Source}}|{{.Name}}|{{.Destination}} {{end}}",
                &name,
            ])
            .output()
            .expect("inspect");
        let mounts = String::from_utf8_lossy(&mounts.stdout).to_string();
        assert!(
            mounts.contains(&format!("|{volume}|/data"))
                && mounts.contains(&format!("{}||/srv/files", host_dir.path().display())),
            "{name}: {mounts}"
        );
    }

    let dir = tempfile::tempdir().expect("dir");
    // systemd: one unit per instance, each verified by systemd itself.
    let units = render_to(&server, &app, "systemd", dir.path());
    assert_eq!(units.len(), 3, "web.1, web.2, worker.1");
    for unit in &units {
        let verify = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(unit)
            .output()
            .expect("systemd-analyze");
        let complaints = String::from_utf8_lossy(&verify.stderr).to_string();
        assert!(
            verify.status.success()
                && !complaints.contains(&unit.file_name().unwrap().to_string_lossy().to_string()),
            "{}: {complaints}",
            unit.display()
        );
        let text = std::fs::read_to_string(unit).expect("read");
        assert!(
            text.contains(&format!("--volume {volume}:/data"))
                && text.contains(&format!(
                    "--volume {}:/srv/files",
                    host_dir.path().display()
                )),
            "{text}"
        );
        if unit.to_string_lossy().contains("-web-") {
            assert!(
                text.contains(&format!("--network berth.{app} --network-alias {app}")),
                "{text}"
            );
            assert!(text.contains("--cpus 0.5 --memory 64m"), "{text}");
            assert!(
                text.contains(r#""exec httpd -f -p \"$$PORT\" -h /www # 100%% \\ done""#),
                "{text}"
            );
        }
        assert!(
            !text.contains("GREETING=hi"),
            "config values must not be in unit files"
        );
    }

    // kubernetes: every manifest valid against the official schemas (strict).
    let manifests = render_to(&server, &app, "kubernetes", dir.path());
    let names: Vec<String> = manifests
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "namespace.yaml",
            "volume-data.yaml",
            "deployment-web.yaml",
            "service-web.yaml",
            "deployment-worker.yaml",
            "ingress.yaml"
        ]
    );
    for manifest in &manifests {
        let check = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict"])
            .arg(manifest)
            .output()
            .expect("kubernetes-validate");
        assert!(
            check.status.success(),
            "{}: {}",
            manifest.display(),
            text(&check)
        );
    }
    // The text output is one YAML stream, a document per manifest: what `kubectl apply -f -`
    // takes. Loaded with a YAML loader (each object kept, none overriding another) and
    // validated as it is.
    let stream = ok(&server.ssh(&["deploy:render", &app, "--target", "kubernetes"]));
    let stream_file = dir.path().join("stream.yaml");
    std::fs::write(&stream_file, &stream).expect("write stream");
    let loaded = Command::new("python3")
        .args([
            "-c",
            "import sys, yaml; print(' '.join(d['kind'] for d in yaml.safe_load_all(open(sys.argv[1])) if d))",
        ])
        .arg(&stream_file)
        .output()
        .expect("python3 yaml");
    assert_eq!(
        String::from_utf8_lossy(&loaded.stdout).trim(),
        "Namespace PersistentVolumeClaim Deployment Service Deployment Ingress",
        "{}",
        text(&loaded)
    );
    let check = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&stream_file)
        .output()
        .expect("kubernetes-validate");
    assert!(check.status.success(), "{stream}: {}", text(&check));
    let deployment = std::fs::read_to_string(dir.path().join("deployment-web.yaml")).expect("read");
    assert!(
        deployment.contains("replicas: 2")
            && deployment.contains("memory: \"64Mi\"")
            && deployment.contains("cpu: \"0.5\"")
            && deployment.contains(&format!("claimName: {volume}"))
            && deployment.contains("mountPath: \"/data\"")
            && deployment.contains(&format!("path: \"{}\"", host_dir.path().display())),
        "{deployment}"
    );
    let claim = std::fs::read_to_string(dir.path().join("volume-data.yaml")).expect("read");
    assert!(
        claim.contains("kind: PersistentVolumeClaim") && claim.contains(&format!("name: {volume}")),
        "{claim}"
    );

    // swarm: the stack file as Docker's own compose loader reads it.
    let stack = render_to(&server, &app, "swarm", dir.path());
    let config = Command::new("docker")
        .args(["stack", "config", "-c"])
        .arg(&stack[0])
        .output()
        .expect("docker stack config");
    let normalized = ok(&config);
    for needle in [
        "replicas: 2",
        "failure_action: rollback",
        "mode: host",
        "cpus: \"0.5\"",
        "memory: \"67108864\"",
        "GREETING: hi",
        // `$` is escaped from compose's interpolation (else the host's environment leaks in):
        // what compose reads is the command as written.
        "exec httpd -f -p \"$PORT\" -h /www # 100% \\ done",
        "worker:",
        "target: /data",
        "external: true",
    ] {
        assert!(
            normalized.contains(needle),
            "missing {needle:?} in:\n{normalized}"
        );
    }

    // The plan: replicas x resources.
    let plan: Value =
        serde_json::from_str(&ok(&server.ssh(&["deploy:plan", &app, "--json"]))).expect("json");
    assert_eq!(plan[0]["process"], "web");
    assert_eq!(plan[0]["cpu_total"], 1.0);
    assert_eq!(plan[0]["memory_total_bytes"], 2 * 64 * 1024 * 1024);
}

#[test]
fn templates_from_the_repo_win_and_bad_ones_name_themselves() {
    let server = TestServer::start();
    let app = app_name("tmpl");
    let repo = web_app("templated");
    std::fs::create_dir_all(repo.path().join(".berth/templates/swarm")).expect("mkdir");
    write(
        repo.path(),
        ".berth/templates/swarm/stack.yml.tera",
        "# custom stack for {{ app }} v{{ release }}\n",
    );
    commit(repo.path(), "custom template");
    server.push_ok(repo.path(), &app, "main");
    // Repo templates are used once an admin approved them (tests/security.rs has the attack).
    ok(&server.ssh(&["templates:approve", &app]));
    let rendered = ok(&server.ssh(&["deploy:render", &app, "--target", "swarm"]));
    assert!(
        rendered.contains(&format!("# custom stack for {app} v1")),
        "{rendered}"
    );
    // Other targets keep the built-in templates.
    assert!(
        ok(&server.ssh(&["deploy:render", &app, "--target", "kubernetes"]))
            .contains("kind: Deployment")
    );

    write(
        repo.path(),
        ".berth/templates/swarm/stack.yml.tera",
        "fine\n{% if %}\n",
    );
    commit(repo.path(), "broken template");
    assert!(
        server.push(repo.path(), &app, "main").status.success(),
        "the docker target does not use swarm templates"
    );
    ok(&server.ssh(&["templates:approve", &app]));
    let broken = server.ssh(&["deploy:render", &app, "--target", "swarm"]);
    assert_eq!(broken.status.code(), Some(1));
    let message = text(&broken);
    assert!(
        message.contains("app repo:swarm/stack.yml.tera") && message.contains("2:"),
        "{message}"
    );
    // Rendering an earlier release uses that release's templates.
    assert!(
        ok(&server.ssh(&[
            "deploy:render",
            &app,
            "--target",
            "swarm",
            "--release",
            "v1"
        ]))
        .contains("custom stack")
    );
}

#[test]
fn targets_this_host_cannot_apply_and_bad_resources_are_refused_without_change() {
    let server = TestServer::start();
    let app = app_name("refuse");
    let repo = web_app("still docker");
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success());
    let url = live_url(&push);
    for (target, reason) in [
        ("systemd", "systemd as PID 1"),
        ("kubernetes", "Kubernetes"),
        ("nomad", "unknown target"),
    ] {
        let refused = server.ssh(&["apps:set", &app, &format!("target={target}")]);
        assert_eq!(refused.status.code(), Some(1), "{target}");
        assert!(
            text(&refused).contains(reason),
            "{target}: {}",
            text(&refused)
        );
    }
    let info: Value =
        serde_json::from_str(&ok(&server.ssh(&["apps:info", &app, "--json"]))).expect("json");
    assert_eq!(info["target"], "docker");
    for args in [["--cpu", "lots"], ["--memory", "12x"], ["--cpu", "-1"]] {
        let refused = server.ssh(&["resources:set", &app, "web", args[0], args[1]]);
        assert_eq!(refused.status.code(), Some(1), "{args:?}");
    }
    let unknown = server.ssh(&["resources:set", &app, "worker", "--cpu", "1"]);
    assert!(
        text(&unknown).contains("unknown process type"),
        "{}",
        text(&unknown)
    );
    assert_eq!(http_get(&url).as_deref(), Some("still docker\n"));
    assert_eq!(
        ok(&server.ssh(&["deploy:plan", &app]))
            .lines()
            .nth(1)
            .map(|l| l.contains("web") && l.contains('-')),
        Some(true)
    );
}

#[test]
fn the_deploy_branch_is_set_per_app() {
    let server = TestServer::start();
    let app = app_name("branch");
    let repo = web_app("from main");
    server.push_ok(repo.path(), &app, "main");
    ok(&server.ssh(&["apps:set", &app, "deploy_branch=production"]));
    let info: Value =
        serde_json::from_str(&ok(&server.ssh(&["apps:info", &app, "--json"]))).expect("json");
    assert_eq!(info["deploy_branch"], "production");
    let url = info["url"].as_str().expect("url").to_string();
    // main no longer deploys; production does.
    write_web_app(repo.path(), "from production");
    commit(repo.path(), "release");
    let main = server.push(repo.path(), &app, "main");
    assert!(
        text(&main).contains("Stored branch main (only production deploys)"),
        "{}",
        text(&main)
    );
    assert_eq!(http_get(&url).as_deref(), Some("from main\n"));
    let production = server.push(repo.path(), &app, "main:production");
    assert!(production.status.success(), "{}", text(&production));
    assert_eq!(http_get(&url).as_deref(), Some("from production\n"));
    for bad in ["../x", "-x", "a..b", "a b"] {
        let refused = server.ssh(&["apps:set", &app, &format!("deploy_branch={bad}")]);
        assert_eq!(refused.status.code(), Some(1), "{bad}");
    }
}

/// The swarm web service's image, or None when the service is gone.
fn service_image(app: &str) -> Option<String> {
    let inspected = Command::new("docker")
        .args([
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}} {{.Spec.Mode.Replicated.Replicas}}",
            &format!("berth-{app}_web"),
        ])
        .output()
        .expect("docker service inspect");
    // Deployed by digest (`repo:vN@sha256:… N`): shown as `repo:vN N`.
    inspected.status.success().then(|| {
        let shown = String::from_utf8_lossy(&inspected.stdout)
            .trim()
            .to_string();
        assert!(shown.contains("@sha256:"), "not pinned by digest: {shown}");
        match shown.split_once('@') {
            Some((name, rest)) => format!(
                "{name} {}",
                rest.split_whitespace().nth(1).unwrap_or_default()
            ),
            None => shown,
        }
    })
}

#[test]
fn swarm_target_deploys_scales_updates_and_rolls_back_a_crashing_release() {
    require_swarm();
    let server = TestServer::start();
    let app = app_name("swarm");
    ok(&server.ssh(&["apps:create", &app]));
    ok(&server.ssh(&["apps:set", &app, "target=swarm"]));
    // A volume reaches the swarm's tasks as well.
    ok(&server.ssh(&["storage:mount", &app, "data:/data"]));
    let repo = web_app("swarm one");
    let first = server.push(repo.path(), &app, "main");
    let transcript = text(&first);
    assert!(first.status.success(), "{transcript}");
    assert_in_order(
        &transcript,
        &[
            "Deploying to swarm",
            "docker stack deploy berth-",
            "1/1 web tasks of v1 answer",
            "is live at",
        ],
    );
    let url = live_url(&first);
    assert_eq!(http_get(&url).as_deref().map(str::trim), Some("swarm one"));
    let task_mounts = Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=berth.app={app}")])
        .output()
        .expect("docker ps");
    let task = String::from_utf8_lossy(&task_mounts.stdout)
        .split_whitespace()
        .next()
        .expect("a task container")
        .to_string();
    let mounts = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Name}}:{{.Destination}} {{end}}",
            &task,
        ])
        .output()
        .expect("inspect");
    assert!(
        String::from_utf8_lossy(&mounts.stdout).contains(&format!(
            "{}:/data",
            json(&server.ssh(&["storage:list", &app, "--json"]))[0]["source"]
                .as_str()
                .expect("source")
        )),
        "{}",
        String::from_utf8_lossy(&mounts.stdout)
    );
    let image = service_image(&app).expect("the web service exists");
    assert!(image.ends_with(":v1 1"), "{image}");
    // The stack file holds config vars: root-only.
    let stack_file = server.data_dir().join("deploy").join(format!("{app}.yml"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&stack_file)
            .expect("stack file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Scale: two tasks, each on its own engine-picked host port, both answering.
    ok(&server.ssh(&["ps:scale", &app, "web=2"]));
    assert!(service_image(&app).expect("service").ends_with(" 2"));
    let report: Value =
        serde_json::from_str(&ok(&server.ssh(&["ps:report", &app, "--json"]))).expect("json");
    let ports: Vec<u64> = report
        .as_array()
        .expect("containers")
        .iter()
        .filter(|c| c["state"] == "running" && c["swarm_service"] == format!("berth-{app}_web"))
        .map(|c| c["host_port"].as_u64().expect("host port"))
        .collect();
    assert_eq!(ports.len(), 2, "{report}");
    assert_ne!(ports[0], ports[1]);
    for port in &ports {
        let body = http_get(&format!("http://127.0.0.1:{port}/"));
        assert_eq!(
            body.as_deref().map(str::trim),
            Some("swarm one"),
            "task on {port}"
        );
    }

    // A rolling update to a new release: the app's URL serves it afterwards.
    write_web_app(repo.path(), "swarm two");
    commit(repo.path(), "two");
    let second = server.push(repo.path(), &app, "main");
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("2/2 web tasks of v2 answer"),
        "{}",
        text(&second)
    );
    assert_eq!(http_get(&url).as_deref().map(str::trim), Some("swarm two"));
    assert!(service_image(&app).expect("service").ends_with(":v2 2"));
    let head = server.git(repo.path(), &["rev-parse", "HEAD"]);

    // A release that crashes: the swarm rolls back, the push fails, v2 keeps serving.
    write(
        repo.path(),
        "Dockerfile",
        &format!("FROM {BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"echo swarm crash; exit 3\"]\n"),
    );
    commit(repo.path(), "crashes");
    let crash = server.push(repo.path(), &app, "main");
    let transcript = text(&crash);
    assert!(!crash.status.success(), "{transcript}");
    assert!(
        transcript.contains("rolled") && transcript.contains("back"),
        "{transcript}"
    );
    assert!(service_image(&app).expect("service").ends_with(":v2 2"));
    assert_eq!(http_get(&url).as_deref().map(str::trim), Some("swarm two"));
    let remote = server.git(repo.path(), &["ls-remote", &server.url(&app), "main"]);
    assert!(remote.starts_with(head.trim()), "{remote} vs {head}");
    let releases: Value =
        serde_json::from_str(&ok(&server.ssh(&["releases", &app, "--json"]))).expect("json");
    assert_eq!(releases[0]["status"], "failed", "{releases}");

    // Back to the docker target: the app moves now, at the same URL, and the stack is gone.
    ok(&server.ssh(&["apps:set", &app, "target=docker"]));
    assert_eq!(service_image(&app), None);
    assert_eq!(http_get(&url).as_deref().map(str::trim), Some("swarm two"));
    ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
}

#[test]
fn a_first_swarm_deploy_that_crashes_leaves_no_stack() {
    require_swarm();
    let server = TestServer::start();
    let app = app_name("swarmcrash");
    ok(&server.ssh(&["apps:create", &app]));
    ok(&server.ssh(&["apps:set", &app, "target=swarm"]));
    let repo = web_app("never");
    write(
        repo.path(),
        "Dockerfile",
        &format!("FROM {BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"echo first crash; exit 4\"]\n"),
    );
    commit(repo.path(), "crashes");
    let push = server.push(repo.path(), &app, "main");
    let transcript = text(&push);
    assert!(!push.status.success(), "{transcript}");
    assert!(
        transcript.contains("exit code 4") && transcript.contains("first crash"),
        "{transcript}"
    );
    assert_eq!(service_image(&app), None, "the stack must be removed");
    let stack_file = server.data_dir().join("deploy").join(format!("{app}.yml"));
    assert!(!stack_file.exists());
}

#[test]
fn the_swarm_target_is_refused_without_the_docker_cli_and_the_app_stays() {
    require_swarm();
    // A PATH with git and ssh-keygen (what berth itself runs) but no docker CLI.
    let bin = tempfile::tempdir().expect("temp dir");
    for tool in ["git", "ssh-keygen"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .expect("command -v");
        let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
        std::os::unix::fs::symlink(&path, bin.path().join(tool)).expect("symlink");
    }
    let path = bin.path().to_string_lossy().into_owned();
    let server = TestServer::start_with_env("", &[("PATH", &path)]);
    let app = app_name("nocli");
    let push = server.push(web_app("still here").path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let url = live_url(&push);
    let refused = server.ssh(&["apps:set", &app, "target=swarm"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("docker CLI") && text(&refused).contains("nothing changed"),
        "{}",
        text(&refused)
    );
    let info: Value =
        serde_json::from_str(&ok(&server.ssh(&["apps:info", &app, "--json"]))).expect("json");
    assert_eq!(info["target"], "docker");
    assert_eq!(http_get(&url).as_deref().map(str::trim), Some("still here"));
}

#[test]
fn nodes_commands_show_and_label_the_swarm_nodes_for_admins_only() {
    require_swarm();
    let server = TestServer::start();
    let app = app_name("nodes");
    ok(&server.ssh(&["apps:create", &app]));
    ok(&server.ssh(&["apps:set", &app, "target=swarm"]));
    let push = server.push(web_app("on a node").path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));

    // The one node of this machine's swarm: the leader, ready, active, running the app's task.
    let nodes = json(&server.ssh(&["nodes:list", "--json"]));
    let nodes = nodes.as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let node = &nodes[0];
    assert_eq!(node["role"], "leader", "{node}");
    assert_eq!(node["state"], "ready", "{node}");
    assert_eq!(node["availability"], "active", "{node}");
    let task = format!("{app} web.1");
    assert!(
        node["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .any(|t| t == task.as_str()),
        "{node}"
    );
    let name = node["name"].as_str().expect("name").to_string();
    let listed = ok(&server.ssh(&["nodes:list"]));
    assert!(listed.contains(&name) && listed.contains(&task), "{listed}");

    // Labels for placement: set, shown, removed.
    let key = format!("berth-test-{}", std::process::id());
    let set = ok(&server.ssh(&["nodes:label", &name, &format!("{key}=eu-1")]));
    assert!(set.contains(&format!("{key}=eu-1")), "{set}");
    let labels = json(&server.ssh(&["nodes:list", "--json"]))[0]["labels"].clone();
    assert_eq!(labels[&key], "eu-1", "{labels}");
    ok(&server.ssh(&["nodes:label", &name, &format!("{key}-")]));
    let labels = json(&server.ssh(&["nodes:list", "--json"]))[0]["labels"].clone();
    assert!(labels.get(&key).is_none(), "{labels}");
    // Admins changing the node at once: the swarm refuses a write made at a version another
    // write has passed ("update out of sequence"); each change is read and made again, so every
    // command succeeds and no label is lost.
    let racing: Vec<String> = (0..6).map(|i| format!("{key}-race-{i}")).collect();
    std::thread::scope(|scope| {
        for label in &racing {
            let (server, name) = (&server, &name);
            scope.spawn(move || ok(&server.ssh(&["nodes:label", name, &format!("{label}=x")])));
        }
    });
    let labels = json(&server.ssh(&["nodes:list", "--json"]))[0]["labels"].clone();
    for label in &racing {
        assert_eq!(labels[label], "x", "{label} lost: {labels}");
    }
    let removals: Vec<String> = racing.iter().map(|l| format!("{l}-")).collect();
    let mut args = vec!["nodes:label", name.as_str()];
    args.extend(removals.iter().map(String::as_str));
    ok(&server.ssh(&args));
    let bad = server.ssh(&["nodes:label", &name, "no value"]);
    assert!(
        !bad.status.success() && text(&bad).contains("key=value"),
        "{}",
        text(&bad)
    );

    // The join line a worker runs, and what it lacks here: no registry the nodes reach.
    let join = ok(&server.ssh(&["nodes:join-command"]));
    assert!(
        join.lines()
            .any(|l| l.starts_with("docker swarm join --token SWMTKN-") && l.contains(":2377")),
        "{join}"
    );
    assert!(join.contains("no cluster_registry"), "{join}");

    // Members neither see nor change the nodes (they run every app on the swarm).
    let member = server.dir.path().join("member");
    keygen(&member);
    server.add_key("member", "member", &member);
    for args in [
        vec!["nodes:list"],
        vec!["nodes:join-command"],
        vec!["nodes:drain", &name],
        vec!["nodes:activate", &name],
        vec!["nodes:label", &name, "a=b"],
    ] {
        let refused = server.ssh_as(&member, &args);
        assert!(
            !refused.status.success() && text(&refused).contains("not allowed"),
            "{args:?}: {}",
            text(&refused)
        );
    }
    ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
}
