//! End to end over the real `ssh` client: the operator commands of issue 3.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A web app whose page is the value of GREETING (config reaches it as the environment), and
/// which writes a tick line to its output every half second.
fn env_app() -> tempfile::TempDir {
    let repo = web_app("unused");
    write(
        repo.path(),
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"mkdir -p /page && echo \\\"greeting=$GREETING\\\" > /page/index.html && echo started web && (while true; do echo tick; sleep 0.5; done &) && exec httpd -f -p $PORT -h /page\"]\n"
        ),
    );
    commit(repo.path(), "env app");
    repo
}

fn app_url(server: &TestServer, app: &str) -> String {
    json(&server.ssh(&["apps:info", app, "--json"]))["url"]
        .as_str()
        .expect("url")
        .to_string()
}

#[test]
fn scale_stop_start_and_restart() {
    let server = TestServer::start();
    let app = app_name("ps");
    let repo = web_app("scaled");
    server.push_ok(repo.path(), &app, "main");

    let scaled = ok(&server.ssh(&["ps:scale", &app, "web=3"]));
    assert!(scaled.contains("runs 3 web instance(s)"), "{scaled}");
    assert_eq!(running_containers(&app).len(), 3);
    let report = json(&server.ssh(&["ps:report", &app, "--json"]));
    let ports: Vec<u64> = report
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["host_port"].as_u64())
        .collect();
    assert_eq!(ports.len(), 3, "{report}");
    for port in &ports {
        assert_eq!(
            http_get(&format!("http://127.0.0.1:{port}/")).as_deref(),
            Some("scaled\n"),
            "instance on {port}"
        );
    }
    let info = json(&server.ssh(&["apps:info", &app, "--json"]));
    assert_eq!(info["formation"]["web"], 3);
    assert_eq!(info["running"]["web"], 3);
    ok(&server.ssh(&["ps:scale", &app, "web=1"]));
    wait_for("scale down to one container", || {
        (running_containers(&app).len() == 1).then_some(())
    });

    // A bad scale changes nothing.
    let bad = server.ssh(&["ps:scale", &app, "worker=2"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).contains("unknown process type \"worker\""),
        "{}",
        text(&bad)
    );
    assert_eq!(running_containers(&app).len(), 1);

    // Stop: nothing runs; start: it answers again.
    let url = app_url(&server, &app);
    ok(&server.ssh(&["ps:stop", &app]));
    assert!(running_containers(&app).is_empty());
    assert_eq!(http_get(&url), None);
    assert_eq!(
        json(&server.ssh(&["apps:info", &app, "--json"]))["state"],
        "stopped"
    );
    let started = ok(&server.ssh(&["ps:start", &app]));
    assert!(started.contains("is live at"), "{started}");
    let url = app_url(&server, &app);
    assert_eq!(http_get(&url).as_deref(), Some("scaled\n"));

    // Restart: the same containers come back at the same address, one at a time.
    let before = running_containers(&app);
    let restarted = ok(&server.ssh(&["ps:restart", &app]));
    assert!(restarted.contains("Restarted"), "{restarted}");
    assert_eq!(running_containers(&app), before);
    assert_eq!(http_get(&url).as_deref(), Some("scaled\n"));
    let events = ok(&server.ssh(&["events", &app, "-n", "50"]));
    for needle in [
        "running -> scaling",
        "running -> stopping",
        "stopped -> starting",
        "running -> restarting",
        "restart",
    ] {
        assert!(
            events.contains(needle),
            "missing event {needle:?}:\n{events}"
        );
    }
}

#[test]
fn config_reaches_the_app_and_rollback_brings_back_the_previous_release() {
    let server = TestServer::start();
    let app = app_name("cfg");
    let repo = env_app();
    server.push_ok(repo.path(), &app, "main");
    assert_eq!(
        http_get(&app_url(&server, &app)).as_deref(),
        Some("greeting=\n")
    );

    let set = ok(&server.ssh(&[
        "config:set",
        &app,
        "GREETING='hello world'",
        "SECRET=s3cr3t-value",
    ]));
    assert!(set.contains("-----> Releasing v2"), "{set}");
    assert_eq!(
        http_get(&app_url(&server, &app)).as_deref(),
        Some("greeting=hello world\n")
    );
    assert_eq!(
        ok(&server.ssh(&["config:get", &app, "GREETING"])),
        "hello world\n"
    );
    let shown = ok(&server.ssh(&["config:show", &app]));
    assert!(
        shown.contains("SECRET") && !shown.contains("s3cr3t-value"),
        "values are masked:\n{shown}"
    );
    assert!(ok(&server.ssh(&["config:show", &app, "--reveal"])).contains("s3cr3t-value"));
    let events = ok(&server.ssh(&["events", &app, "-n", "100"]));
    assert!(
        !events.contains("s3cr3t-value") && !events.contains("hello world"),
        "a value leaked into events:\n{events}"
    );
    assert!(
        !server.log().contains("s3cr3t-value"),
        "a value leaked into the server log"
    );

    // --no-restart stores without a release.
    ok(&server.ssh(&["config:set", &app, "GREETING=later", "--no-restart"]));
    assert_eq!(
        http_get(&app_url(&server, &app)).as_deref(),
        Some("greeting=hello world\n")
    );
    ok(&server.ssh(&["config:unset", &app, "GREETING"]));
    assert_eq!(
        http_get(&app_url(&server, &app)).as_deref(),
        Some("greeting=\n")
    );

    // Rollback (default: the release before the current) redeploys v2's image and config.
    let rolled = ok(&server.ssh(&["releases:rollback", &app]));
    assert!(
        rolled.contains("Rolling") && rolled.contains("back to v2"),
        "{rolled}"
    );
    assert_eq!(
        http_get(&app_url(&server, &app)).as_deref(),
        Some("greeting=hello world\n")
    );
    let releases = json(&server.ssh(&["releases", &app, "--json"]));
    assert_eq!(releases[0]["number"], 4);
    assert_eq!(releases[0]["description"], "rollback to v2");
    assert_eq!(releases[0]["status"], "running");
    let missing = server.ssh(&["releases:rollback", &app, "v99"]);
    assert!(
        !missing.status.success() && text(&missing).contains("no release v99"),
        "{}",
        text(&missing)
    );
    assert_eq!(
        http_get(&app_url(&server, &app)).as_deref(),
        Some("greeting=hello world\n")
    );
}

#[test]
fn logs_show_and_follow_the_app_output() {
    let server = TestServer::start();
    let app = app_name("logs");
    let repo = env_app();
    server.push_ok(repo.path(), &app, "main");
    let logs = ok(&server.ssh(&["logs", &app, "-n", "50"]));
    assert!(logs.contains("web.1 | started web"), "{logs}");

    // -f streams new lines until the client goes away.
    let mut follow = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} -p {} berth@127.0.0.1 logs {app} -f -n 1",
            server.ssh_command(&server.key),
            server.port
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ssh logs -f");
    let mut stdout = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut seen = String::new();
        let mut buffer = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
            if seen.matches("tick").count() >= 4 {
                break;
            }
        }
        seen
    });
    std::thread::sleep(Duration::from_secs(4));
    let _ = follow.kill();
    let _ = follow.wait();
    let seen = reader.join().expect("reader");
    assert!(
        seen.matches("web.1 | tick").count() >= 4,
        "-f did not stream new lines:\n{seen}"
    );
}

#[test]
fn destroy_removes_everything_and_labels_merge_and_select() {
    let server = TestServer::start();
    let app = app_name("gone");
    let other = app_name("kept");
    let repo = web_app("to be destroyed");
    server.push_ok(repo.path(), &app, "main");
    ok(&server.ssh(&["apps:create", &other]));

    ok(&server.ssh(&["apps:labels", &app, "team=web", "env=prod"]));
    let labels = json(&server.ssh(&["apps:labels", &app, "env=", "tier=1", "--json"]));
    assert_eq!(labels, serde_json::json!({"team": "web", "tier": "1"}));
    ok(&server.ssh(&["apps:labels", &other, "team=data"]));
    let selected = json(&server.ssh(&["apps:list", "-l", "team=web", "--json"]));
    let names: Vec<&str> = selected
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, vec![app.as_str()]);

    let refused = server.ssh(&["apps:destroy", &app]);
    assert!(
        !refused.status.success() && text(&refused).contains("--confirm"),
        "{}",
        text(&refused)
    );
    assert_eq!(running_containers(&app).len(), 1);
    let destroyed = ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
    assert!(destroyed.contains("Destroyed"), "{destroyed}");
    assert!(app_containers(&app).is_empty());
    assert!(
        !server
            .data_dir()
            .join("repos")
            .join(format!("{app}.git"))
            .exists()
    );
    let images = std::process::Command::new("docker")
        .args([
            "images",
            "-q",
            "--filter",
            &format!("label=berth.app={app}"),
        ])
        .output()
        .expect("docker images");
    assert!(
        String::from_utf8_lossy(&images.stdout).trim().is_empty(),
        "images left behind"
    );
    let list = json(&server.ssh(&["apps:list", "--json"]));
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, vec![other.as_str()]);
    assert!(!server.ssh(&["apps:info", &app]).status.success());
}

#[test]
fn members_cannot_touch_other_apps_or_manage_keys() {
    let server = TestServer::start();
    let alice_key = server.dir.path().join("alice");
    let bob_key = server.dir.path().join("bob");
    keygen(&alice_key);
    keygen(&bob_key);
    for (name, key) in [("alice", &alice_key), ("bob", &bob_key)] {
        let public = std::fs::read(key.with_extension("pub")).expect("pub");
        let mut add = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} -p {} berth@127.0.0.1 keys:add {name} --role member",
                server.ssh_command(&server.key),
                server.port
            ))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ssh keys:add");
        use std::io::Write;
        add.stdin
            .take()
            .expect("stdin")
            .write_all(&public)
            .expect("write key");
        let added = add.wait_with_output().expect("wait");
        assert!(added.status.success(), "{}", text(&added));
    }
    let keys = json(&server.ssh(&["keys:list", "--json"]));
    assert_eq!(keys.as_array().expect("array").len(), 3);

    let alices = app_name("alices");
    ok(&server.ssh_as(&alice_key, &["apps:create", &alices]));
    // Bob can neither see, change, push to, nor destroy Alice's app, nor manage keys.
    for args in [
        vec!["apps:info", alices.as_str()],
        vec!["config:set", alices.as_str(), "A=1"],
        vec!["ps:scale", alices.as_str(), "web=2"],
        vec![
            "apps:destroy",
            alices.as_str(),
            "--confirm",
            alices.as_str(),
        ],
        vec!["keys:list"],
        vec!["keys:remove", "alice"],
    ] {
        let denied = server.ssh_as(&bob_key, &args);
        assert_eq!(denied.status.code(), Some(1), "{args:?}: {}", text(&denied));
        assert!(
            text(&denied).contains("not allowed"),
            "{args:?}: {}",
            text(&denied)
        );
    }
    let listed = json(&server.ssh_as(&bob_key, &["apps:list", "--json"]));
    assert_eq!(listed, serde_json::json!([]));
    let repo = web_app("bob's content");
    let push = server.push_as(&bob_key, repo.path(), &alices, "main");
    assert!(
        !push.status.success() && text(&push).contains("not allowed"),
        "{}",
        text(&push)
    );
    assert!(
        server
            .ssh_as(&alice_key, &["config:show", &alices])
            .status
            .success(),
        "nothing changed for alice"
    );

    // A grant lets Bob operate it (but not destroy it); a revoke takes it back.
    ok(&server.ssh_as(&alice_key, &["apps:grant", &alices, "bob"]));
    ok(&server.ssh_as(&bob_key, &["config:set", &alices, "A=1"]));
    let destroy = server.ssh_as(&bob_key, &["apps:destroy", &alices, "--confirm", &alices]);
    assert!(text(&destroy).contains("not allowed"), "{}", text(&destroy));
    ok(&server.ssh_as(&alice_key, &["apps:revoke", &alices, "bob"]));
    assert!(text(&server.ssh_as(&bob_key, &["config:show", &alices])).contains("not allowed"));
}

#[test]
fn bad_input_gets_one_line_and_a_nonzero_status() {
    let server = TestServer::start();
    let unknown = server.ssh(&["apps:lst"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("did you mean apps:list"),
        "{}",
        text(&unknown)
    );
    let usage = server.ssh(&["apps:info"]);
    assert_eq!(usage.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&usage.stderr).trim(),
        "!     usage: apps:info APP [--json]"
    );
    let extra = server.ssh(&["apps:info", "a", "b"]);
    assert!(
        text(&extra).contains("usage: apps:info APP"),
        "{}",
        text(&extra)
    );
    let flag = server.ssh(&["apps:list", "--colour"]);
    assert!(
        text(&flag).contains("unknown option --colour"),
        "{}",
        text(&flag)
    );
    let help = ok(&server.ssh(&["help", "ps"]));
    assert!(
        help.contains("ps:scale") && help.contains("ps:restart") && !help.contains("config:set"),
        "{help}"
    );
    let all = ok(&server.ssh(&["help"]));
    for command in [
        "apps:destroy",
        "config:show",
        "releases:rollback",
        "logs",
        "events",
        "keys:add",
        "apps:grant",
    ] {
        assert!(all.contains(command), "help lacks {command}");
    }
}

#[test]
fn apps_list_answers_with_unknown_when_the_engine_does_not() {
    require_environment();
    let server =
        TestServer::start_with_env("", &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    for n in 0..3 {
        ok(&server.ssh(&["apps:create", &app_name(&format!("offline{n}"))]));
    }
    let started = Instant::now();
    let list = json(&server.ssh(&["apps:list", "--json"]));
    let elapsed = started.elapsed();
    let apps = list.as_array().expect("array");
    assert_eq!(apps.len(), 3);
    assert!(apps.iter().all(|a| a["state"] == "unknown"), "{list}");
    assert!(
        elapsed < Duration::from_secs(3),
        "apps:list took {elapsed:?} with the engine down"
    );
    assert!(ok(&server.ssh(&["apps:list"])).contains("did not answer"));
}

#[test]
fn the_reconciler_brings_back_a_container_killed_from_outside() {
    let server = TestServer::start();
    let app = app_name("reconcile");
    let repo = web_app("come back");
    server.push_ok(repo.path(), &app, "main");
    let url = app_url(&server, &app);
    let container = format!("berth-{app}-v1-web-1");
    // `docker kill` is a manual stop to the engine: its restart policy leaves the container down.
    let killed = std::process::Command::new("docker")
        .args(["kill", &container])
        .output()
        .expect("docker kill");
    assert!(killed.status.success(), "{}", text(&killed));
    assert_eq!(http_get(&url), None);
    wait_for("the reconciler to restart the container", || {
        (http_get(&url).as_deref() == Some("come back\n")).then_some(())
    });
    let events = ok(&server.ssh(&["events", &app, "--json"]));
    assert!(events.contains("restarted web.1 (was exited)"), "{events}");
    assert!(events.contains("\"actor\": \"reconciler\""), "{events}");

    // Removed from outside: made anew under the same name.
    let removed = std::process::Command::new("docker")
        .args(["rm", "-f", &container])
        .output()
        .expect("docker rm");
    assert!(removed.status.success());
    wait_for("the reconciler to recreate the container", || {
        let info = json(&server.ssh(&["apps:info", &app, "--json"]));
        (info["running"]["web"] == 1).then_some(())
    });
    assert!(ok(&server.ssh(&["events", &app])).contains("recreated web.1 (was missing)"));
}

#[test]
fn run_attaches_a_one_off_container_and_returns_its_exit_code() {
    let server = TestServer::start();
    let app = app_name("run");
    let repo = env_app();
    server.push_ok(repo.path(), &app, "main");
    ok(&server.ssh(&["config:set", &app, "GREETING=from-config"]));

    // Exit code, stdout and stderr come back separately; config is in the environment.
    let output = server.ssh(&[
        "run",
        &app,
        "sh",
        "-c",
        "'echo out $GREETING; echo err >&2; exit 7'",
    ]);
    assert_eq!(output.status.code(), Some(7), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out from-config\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");

    // Standard input reaches the command, and its end ends it.
    let mut cat = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} -p {} berth@127.0.0.1 run {app} cat",
            server.ssh_command(&server.key),
            server.port
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ssh run cat");
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().expect("stdin");
        stdin.write_all(b"typed by the user\n").expect("write");
    }
    let catted = cat.wait_with_output().expect("wait");
    assert!(catted.status.success(), "{}", text(&catted));
    assert_eq!(
        String::from_utf8_lossy(&catted.stdout),
        "typed by the user\n"
    );

    // A TTY when the client asks for one.
    let tty = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} -tt -p {} berth@127.0.0.1 run {app} sh -c \"'test -t 1 && echo is-a-tty || echo no-tty'\"",
            server.ssh_command(&server.key),
            server.port
        ))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ssh -tt run tty");
    assert!(
        String::from_utf8_lossy(&tty.stdout).contains("is-a-tty"),
        "{}",
        text(&tty)
    );

    let no_tty = server.ssh(&[
        "run",
        &app,
        "sh",
        "-c",
        "'test -t 1 && echo is-a-tty || echo no-tty'",
    ]);
    assert_eq!(String::from_utf8_lossy(&no_tty.stdout), "no-tty\n");

    // No one-off container is left behind, and the run is an event (program name only).
    let leftovers = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.app={app}"),
            "--filter",
            "label=berth.process=run",
        ])
        .output()
        .expect("docker ps");
    assert!(
        String::from_utf8_lossy(&leftovers.stdout).trim().is_empty(),
        "one-off containers left behind"
    );
    let events = ok(&server.ssh(&["events", &app]));
    assert!(
        events.contains("run") && events.contains("v2: sh"),
        "{events}"
    );
}

/// Polls `url` until told to stop; returns (answers with `expected`, anything else).
fn poll_while(url: &str, expected: &[&str], work: impl FnOnce()) -> (usize, Vec<String>) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let (mut good, mut bad) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http_get(url) {
                    Some(body) if expected.contains(&body.as_str()) => good += 1,
                    other => bad.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (good, bad)
        });
        std::thread::sleep(Duration::from_millis(300));
        work();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        poller.join().expect("poller")
    })
}

#[test]
fn restarts_and_redeploys_fail_no_request_from_a_client_polling_all_along() {
    let server = TestServer::start();
    let app = app_name("nodrop");
    let repo = web_app("steady");
    server.push_ok(repo.path(), &app, "main");
    let url = app_url(&server, &app);

    // One instance: the restart starts a fresh one before the old one leaves.
    let (good, bad) = poll_while(&url, &["steady\n"], || {
        ok(&server.ssh(&["ps:restart", &app]));
    });
    assert!(
        bad.is_empty(),
        "{} failed requests during ps:restart: {bad:?}",
        bad.len()
    );
    assert!(good > 20, "only {good} requests made");

    // Scaled to two, restarted, and a new release pushed: still nothing fails.
    ok(&server.ssh(&["ps:scale", &app, "web=2"]));
    let (good, bad) = poll_while(&url, &["steady\n", "next\n"], || {
        ok(&server.ssh(&["ps:restart", &app]));
        write_web_app(repo.path(), "next");
        commit(repo.path(), "next");
        server.push_ok(repo.path(), &app, "main");
    });
    assert!(bad.is_empty(), "{} failed requests: {bad:?}", bad.len());
    assert!(good > 20, "only {good} requests made");
    assert_eq!(http_get(&url).as_deref(), Some("next\n"));
    assert_eq!(app_url(&server, &app), url, "the address changed");
}

#[test]
fn apps_answer_at_their_address_again_after_berth_restarts() {
    let mut server = TestServer::start();
    let app = app_name("survive");
    let repo = web_app("still serving");
    server.push_ok(repo.path(), &app, "main");
    let url = app_url(&server, &app);
    server.restart();
    // The reconciler's first pass, at start-up, puts the app's address back.
    wait_for("the app's address after a berth restart", || {
        (http_get(&url).as_deref() == Some("still serving\n")).then_some(())
    });
    assert_eq!(app_url(&server, &app), url);
}

#[test]
fn the_host_cli_runs_the_same_commands_with_the_same_output() {
    let server = TestServer::start();
    let app = app_name("hostcli");
    ok(&server.ssh(&["apps:create", &app]));
    ok(&server.ssh(&["apps:labels", &app, "via=ssh"]));
    let host = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg("--config")
            .arg(server.config_path())
            .output()
            .expect("berth on the host")
    };
    for args in [
        vec!["apps:info", app.as_str(), "--json"],
        vec!["help"],
        vec!["apps:labels", app.as_str()],
    ] {
        let over_ssh = ok(&server.ssh(&args));
        let on_host = ok(&host(&args));
        assert_eq!(on_host, over_ssh, "{args:?}");
    }
    // The same errors too, and the host may change things (it counts as admin).
    let wrong = host(&["apps:lst"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(text(&wrong).contains("did you mean apps:list"));
    ok(&host(&["apps:labels", &app, "via=", "from=host"]));
    assert_eq!(ok(&server.ssh(&["apps:labels", &app])), "from=host\n");
}

#[test]
fn rename_keeps_the_app_serving_and_rebuild_builds_the_same_commit_again() {
    let server = TestServer::start();
    let (old, new) = (app_name("before"), app_name("after"));
    server.apps.lock().expect("apps").push(new.clone());
    let repo = web_app("renamed app");
    server.push_ok(repo.path(), &old, "main");
    let url = app_url(&server, &old);

    let taken = app_name("taken");
    ok(&server.ssh(&["apps:create", &taken]));
    let refused = server.ssh(&["apps:rename", &old, &taken]);
    assert!(
        !refused.status.success() && text(&refused).contains("already exists"),
        "{}",
        text(&refused)
    );

    let direct = json(&server.ssh(&["apps:info", &old, "--json"]))["direct_url"]
        .as_str()
        .expect("direct url")
        .to_string();
    ok(&server.ssh(&["apps:rename", &old, &new]));
    // The app's own port survives the rename; its router host follows the name.
    assert_eq!(
        json(&server.ssh(&["apps:info", &new, "--json"]))["direct_url"],
        direct.as_str(),
        "the address survives the rename"
    );
    assert_eq!(http_get(&direct).as_deref(), Some("renamed app\n"));
    assert_eq!(
        http_get(&app_url(&server, &new)).as_deref(),
        Some("renamed app\n")
    );
    assert_eq!(http_get(&url), None, "the old name's host serves nothing");
    assert!(server.ssh(&["apps:info", &old]).status.code() == Some(1));
    wait_for("the old-named containers to go", || {
        app_containers(&old).is_empty().then_some(())
    });
    assert_eq!(running_containers(&new).len(), 1);
    // The repo moved with it: pushing and cloning use the new name.
    let head = git(repo.path(), &["rev-parse", "HEAD"]);
    let remote = server.git(
        repo.path(),
        &["ls-remote", &server.url(&new), "refs/heads/main"],
    );
    assert!(remote.starts_with(head.trim()), "{remote}");

    // Rebuild: the deployed commit, built again, as a new release.
    let rebuilt = ok(&server.ssh(&["ps:rebuild", &new]));
    assert!(
        rebuilt.contains("Building") && rebuilt.contains("Releasing v2"),
        "{rebuilt}"
    );
    let releases = json(&server.ssh(&["releases", &new, "--json"]));
    assert_eq!(releases[0]["commit_sha"], releases[1]["commit_sha"]);
    assert_eq!(
        http_get(&app_url(&server, &new)).as_deref(),
        Some("renamed app\n")
    );
    assert_eq!(http_get(&direct).as_deref(), Some("renamed app\n"));
}
