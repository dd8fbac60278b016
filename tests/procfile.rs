//! Procfile process types, the release phase and app.json (health checks, scripts, formation),
//! with Dockerfile apps on the local busybox image.

mod common;

use common::*;
use serde_json::Value;

/// The app's containers from `ps:report --json`: (process, index, state, host_port).
fn report(server: &TestServer, app: &str) -> Vec<(String, u64, String, Option<u64>)> {
    let value: Value =
        serde_json::from_str(&ok(&server.ssh(&["ps:report", app, "--json"]))).expect("json");
    value
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| {
            (
                c["process"].as_str().unwrap_or_default().to_string(),
                c["index"].as_u64().unwrap_or(0),
                c["state"].as_str().unwrap_or_default().to_string(),
                c["host_port"].as_u64(),
            )
        })
        .collect()
}

fn running_of(server: &TestServer, app: &str, process: &str) -> usize {
    report(server, app)
        .iter()
        .filter(|(p, _, state, _)| p == process && state == "running")
        .count()
}

#[test]
fn web_and_worker_both_run_only_web_is_routed_and_each_scales() {
    let server = TestServer::start();
    let app = app_name("procs");
    let repo = web_app("web answers");
    write(
        repo.path(),
        "Procfile",
        "web: exec httpd -f -p $PORT -h /www\nworker: while true; do echo \"working as $DYNO\"; sleep 1; done\n",
    );
    write(
        repo.path(),
        "app.json",
        r#"{"formation": {"web": {"quantity": 1}, "worker": {"quantity": 1}}}"#,
    );
    commit(repo.path(), "procfile");
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let url = live_url(&push);
    assert_eq!(http_get(&url).unwrap_or_default().trim(), "web answers");
    let containers = report(&server, &app);
    let worker = containers
        .iter()
        .find(|(p, ..)| p == "worker")
        .expect("a worker runs");
    assert_eq!(worker.2, "running");
    assert_eq!(worker.3, None, "a worker has no port: only web is routed");
    assert_eq!(running_of(&server, &app, "web"), 1);
    let logs = wait_for("the worker's output", || {
        let logs = text(&server.ssh(&["logs", &app, "-n", "50"]));
        logs.contains("working as worker.1").then_some(logs)
    });
    assert!(!logs.is_empty());

    // Each process type scales on its own.
    let scaled = ok(&server.ssh(&["ps:scale", &app, "web=2", "worker=3"]));
    assert!(scaled.contains("formation web=2 worker=3"), "{scaled}");
    assert_eq!(running_of(&server, &app, "worker"), 3);
    assert_eq!(running_of(&server, &app, "web"), 2);
    // A worker removed behind berth's back comes back (the reconciler).
    let removed = std::process::Command::new("docker")
        .args(["rm", "-f", &format!("berth-{app}-v1-worker-2")])
        .output()
        .expect("docker rm");
    assert!(removed.status.success(), "{}", text(&removed));
    wait_for("the reconciler to bring worker.2 back", || {
        (running_of(&server, &app, "worker") == 3).then_some(())
    });
    let events = text(&server.ssh(&["events", &app]));
    assert!(events.contains("recreated worker.2"), "{events}");
    ok(&server.ssh(&["ps:scale", &app, "worker=0"]));
    assert_eq!(running_of(&server, &app, "worker"), 0);
    assert_eq!(http_get(&url).unwrap_or_default().trim(), "web answers");
    let unknown = server.ssh(&["ps:scale", &app, "clock=1"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("runs web, worker"),
        "{}",
        text(&unknown)
    );
}

#[test]
fn a_failing_release_phase_stops_the_deploy_and_the_old_release_keeps_serving() {
    let server = TestServer::start();
    let app = app_name("relphase");
    let repo = web_app("first");
    write(
        repo.path(),
        "Procfile",
        "release: echo \"migrating with $GREETING\"\n",
    );
    write(
        repo.path(),
        "app.json",
        r#"{"scripts": {"postdeploy": "echo postdeploy done"}}"#,
    );
    commit(repo.path(), "release phase");
    ok(&server.ssh(&["apps:create", &app]));
    ok(&server.ssh(&["config:set", &app, "GREETING=hello"]));
    let push = server.push(repo.path(), &app, "main");
    let transcript = text(&push);
    assert!(push.status.success(), "{transcript}");
    assert_in_order(
        &transcript,
        &[
            "Running the release command (Procfile)",
            "migrating with hello",
            "Releasing v",
            "is live at",
            "postdeploy done",
        ],
    );
    let url = live_url(&push);

    write_web_app(repo.path(), "second");
    write(
        repo.path(),
        "Procfile",
        "release: echo migration failed; exit 5\n",
    );
    commit(repo.path(), "failing release phase");
    let push = server.push(repo.path(), &app, "main");
    let transcript = text(&push);
    assert!(!push.status.success(), "{transcript}");
    assert!(transcript.contains("migration failed"), "{transcript}");
    assert!(
        transcript.contains("the release command (Procfile) failed (exit code 5)"),
        "{transcript}"
    );
    assert!(!transcript.contains("Releasing v"), "{transcript}");
    assert_eq!(http_get(&url).unwrap_or_default().trim(), "first");
}

#[test]
fn app_json_health_checks_gate_the_deploy() {
    let server = TestServer::start();
    let app = app_name("health");
    let repo = web_app("healthy");
    write(
        repo.path(),
        "app.json",
        r#"{"healthchecks": {"web": [{"type": "startup", "path": "/index.html", "status": 200, "attempts": 5, "wait": 1}]}}"#,
    );
    commit(repo.path(), "health check");
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let url = live_url(&push);

    // A health check on a path that answers 500 (a CGI script): the deploy fails.
    std::fs::create_dir_all(repo.path().join("www/cgi-bin")).expect("mkdir");
    write(
        repo.path(),
        "www/cgi-bin/health",
        "#!/bin/sh\necho 'Status: 500 Internal Server Error'\necho 'Content-Type: text/plain'\necho\necho broken\n",
    );
    let script = repo.path().join("www/cgi-bin/health");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    write_web_app(repo.path(), "unhealthy");
    write(
        repo.path(),
        "app.json",
        r#"{"healthchecks": {"web": [{"path": "/cgi-bin/health", "attempts": 2, "wait": 1}]}}"#,
    );
    commit(repo.path(), "broken health");
    let push = server.push(repo.path(), &app, "main");
    let transcript = text(&push);
    assert!(!push.status.success(), "{transcript}");
    assert!(
        transcript.contains("the health check failed 2 times")
            && transcript.contains("GET /cgi-bin/health answered 500, expected 2xx or 3xx"),
        "{transcript}"
    );
    assert_eq!(http_get(&url).unwrap_or_default().trim(), "healthy");

    // An invalid app.json names the file and line.
    write(repo.path(), "app.json", "{\n  \"healthchecks\": nope\n}\n");
    commit(repo.path(), "invalid app.json");
    let push = server.push(repo.path(), &app, "main");
    assert!(!push.status.success());
    assert!(text(&push).contains("app.json line 2:"), "{}", text(&push));
}
