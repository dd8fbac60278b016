//! End to end: git push over berth's SSH server → build → registry → running app → URL back.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn push_deploys_and_a_second_push_replaces_the_release() {
    let server = TestServer::start();
    let app = app_name("first");
    let repo = web_app("hello from v1");
    let first = server.push(repo.path(), &app, "main");
    let transcript = text(&first);
    assert!(
        first.status.success(),
        "first push failed:\n{transcript}\n{}",
        server.log()
    );
    assert_in_order(
        &transcript,
        &[
            &format!("-----> Building {app} from Dockerfile"),
            "Step 1/",
            "-----> Pushing image 127.0.0.1:",
            &format!("/{app}:v1"),
            "-----> Releasing v1",
            "-----> Deploying",
            &format!("-----> {app} is live at http://{app}.localhost:"),
        ],
    );
    let url1 = live_url(&first);
    assert_eq!(http_get(&url1).as_deref(), Some("hello from v1\n"));

    // The image is in the registry under <registry>/<app>:v1.
    let tags = registry_get(&format!("/v2/{app}/tags/list")).expect("registry answers for the app");
    assert!(tags.contains("\"v1\""), "{tags}");

    // The v1 container's own address, to check it is gone later.
    let report = server.ssh(&["ps:report", &app, "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&report.stdout).expect("ps:report --json");
    let v1_port = report[0]["host_port"].as_u64().expect("v1 host port");

    write_web_app(repo.path(), "hello from v2");
    commit(repo.path(), "v2");
    let second = server.push(repo.path(), &app, "main");
    assert!(
        second.status.success(),
        "second push failed:\n{}",
        text(&second)
    );
    assert!(
        text(&second).contains("-----> Releasing v2"),
        "{}",
        text(&second)
    );
    let url2 = live_url(&second);
    assert_eq!(
        url2, url1,
        "the app's address stays the same across releases"
    );
    assert_eq!(http_get(&url2).as_deref(), Some("hello from v2\n"));

    // The old container goes away once the new one answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let containers = app_containers(&app);
        if containers == vec![format!("berth-{app}-v2-web-1")] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old container still there: {containers:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let v1_url = format!("http://127.0.0.1:{v1_port}/");
    assert_eq!(
        http_get(&v1_url),
        None,
        "the v1 container still answers at {v1_url}"
    );

    // apps:info and apps:list agree with what runs, in text and JSON.
    let info = server.ssh(&["apps:info", &app, "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("apps:info --json");
    assert_eq!(info["state"], "running");
    assert_eq!(info["release"], 2);
    assert_eq!(info["url"], url2.as_str());
    let list = text(&server.ssh(&["apps:list"]));
    assert!(
        list.contains(&app) && list.contains("running") && list.contains(&url2),
        "{list}"
    );
}

#[test]
fn broken_dockerfile_and_crashing_app_are_rejected_and_the_old_release_keeps_serving() {
    let server = TestServer::start();
    let app = app_name("broken");
    let repo = web_app("good content");
    let good = server.push(repo.path(), &app, "main");
    assert!(good.status.success(), "{}", text(&good));
    let url = live_url(&good);
    let good_commit = git(repo.path(), &["rev-parse", "HEAD"]).trim().to_string();

    // A Dockerfile step that fails.
    write(
        repo.path(),
        "Dockerfile",
        &format!("FROM {BASE_IMAGE}\nRUN exit 7\n"),
    );
    commit(repo.path(), "broken build");
    let broken = server.push(repo.path(), &app, "main");
    let transcript = text(&broken);
    assert!(
        !broken.status.success(),
        "broken build was accepted:\n{transcript}"
    );
    assert!(transcript.contains("build failed"), "{transcript}");
    assert!(
        transcript.contains("[remote rejected] main -> main"),
        "{transcript}"
    );
    assert_eq!(http_get(&url).as_deref(), Some("good content\n"));
    let remote = server.git(
        repo.path(),
        &["ls-remote", &server.url(&app), "refs/heads/main"],
    );
    assert!(
        remote.starts_with(&good_commit),
        "deploy branch moved on a failed build: {remote}"
    );

    // Pushing the same commit again retries (and fails the same way).
    let again = server.push(repo.path(), &app, "main");
    assert!(!again.status.success());
    assert!(text(&again).contains("build failed"), "{}", text(&again));

    // An app that exits at start.
    write(
        repo.path(),
        "Dockerfile",
        &format!("FROM {BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"echo about to crash; exit 3\"]\n"),
    );
    commit(repo.path(), "crashes");
    let crash = server.push(repo.path(), &app, "main");
    let transcript = text(&crash);
    assert!(
        !crash.status.success(),
        "crashing app was accepted:\n{transcript}"
    );
    assert!(
        transcript.contains("exited at start (exit code 3)"),
        "{transcript}"
    );
    assert!(
        transcript.contains("-----> Releasing v2"),
        "failed builds must not use up release numbers:\n{transcript}"
    );
    assert!(
        transcript.contains("about to crash"),
        "the app's last log lines are shown:\n{transcript}"
    );
    assert_eq!(http_get(&url).as_deref(), Some("good content\n"));
    let containers = app_containers(&app);
    assert_eq!(
        containers,
        vec![format!("berth-{app}-v1-web-1")],
        "the failed release's container was left behind"
    );
    let remote = server.git(
        repo.path(),
        &["ls-remote", &server.url(&app), "refs/heads/main"],
    );
    assert!(
        remote.starts_with(&good_commit),
        "deploy branch moved on a failed deploy: {remote}"
    );

    // A Dockerfile-less commit is refused with the reason.
    std::fs::remove_file(repo.path().join("Dockerfile")).expect("rm");
    commit(repo.path(), "no dockerfile");
    let none = server.push(repo.path(), &app, "main");
    assert!(!none.status.success());
    assert!(text(&none).contains("no Dockerfile"), "{}", text(&none));
    assert_eq!(http_get(&url).as_deref(), Some("good content\n"));
}

#[test]
fn app_that_never_answers_fails_after_ready_timeout() {
    let registry = require_environment();
    let server = TestServer::start_with(&format!("registry = \"{registry}\"\nready_timeout = 2\n"));
    let app = app_name("silent");
    let repo = web_app("unused");
    write(
        repo.path(),
        "Dockerfile",
        &format!("FROM {BASE_IMAGE}\nCMD [\"sleep\", \"600\"]\n"),
    );
    commit(repo.path(), "never listens");
    let push = server.push(repo.path(), &app, "main");
    assert!(!push.status.success());
    assert!(
        text(&push).contains("did not answer on PORT 5000 within 2 s"),
        "{}",
        text(&push)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app_containers(&app).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the unready container was left behind"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn unknown_keys_are_refused() {
    let server = TestServer::start();
    let stranger = server.dir.path().join("stranger");
    keygen(&stranger);
    let output = server.ssh_as(&stranger, &["apps:list"]);
    assert_eq!(output.status.code(), Some(255));
    assert!(
        text(&output).contains("Permission denied (publickey)"),
        "{}",
        text(&output)
    );

    let repo = web_app("x");
    let push = server.push_as(&stranger, repo.path(), "intruder", "main");
    assert!(!push.status.success());
    let apps = server.ssh(&["apps:list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&apps.stdout).trim(), "[]");
}

#[test]
fn bad_app_names_are_refused_and_leave_nothing_behind() {
    let server = TestServer::start();
    let bad = [
        "../x",
        "a;b",
        "'quoted'",
        "\"dq\"",
        "MyApp",
        "a/b",
        "nested/path/app",
        "-lead",
        &"a".repeat(64),
    ];
    for name in bad {
        // The exec request exactly as git would send it, with the name quoted.
        let escaped = name.replace('\'', "'\\''");
        let output = server.ssh(&[&format!("git-receive-pack '{escaped}'")]);
        let transcript = text(&output);
        assert_eq!(output.status.code(), Some(128), "{name}: {transcript}");
        let errors: Vec<&str> = transcript.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(
            errors.len(),
            1,
            "{name}: one clear line expected:\n{transcript}"
        );
        assert!(errors[0].contains("app name"), "{name}: {transcript}");
    }
    // Through git too: upper case and a nested path.
    let repo = web_app("x");
    for name in ["MyApp", "a/b"] {
        let push = server.push(repo.path(), name, "main");
        assert!(!push.status.success(), "{name} accepted");
        assert!(text(&push).contains("invalid app name"), "{}", text(&push));
    }
    let repos = server.data_dir().join("repos");
    let on_disk: Vec<_> = std::fs::read_dir(&repos)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        on_disk.is_empty(),
        "repos created for bad names: {on_disk:?}"
    );
    assert!(!server.dir.path().join("x").exists() && !server.dir.path().join("x.git").exists());
    let apps = server.ssh(&["apps:list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&apps.stdout).trim(), "[]");
}

#[test]
fn clone_back_over_protocol_v2_gives_the_pushed_commit_and_v2_push_works() {
    let server = TestServer::start();
    let app = app_name("clone");
    let repo = web_app("clone me");
    let pushed = server.push_with(repo.path(), &app, "main", &["protocol.version=2"]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    let head = git(repo.path(), &["rev-parse", "HEAD"]).trim().to_string();

    let target = tempfile::tempdir().expect("dir");
    let clone = std::process::Command::new("git")
        .args([
            "-c",
            "protocol.version=2",
            "clone",
            &format!("{}.git", server.url(&app)),
            "copy",
        ])
        .current_dir(target.path())
        .env("GIT_SSH_COMMAND", server.ssh_command(&server.key))
        .env("GIT_TRACE_PACKET", "1")
        .output()
        .expect("git clone");
    assert!(clone.status.success(), "{}", text(&clone));
    assert!(
        text(&clone).contains("clone< version 2"),
        "protocol v2 was not negotiated"
    );
    let cloned = git(&target.path().join("copy"), &["rev-parse", "HEAD"]);
    assert_eq!(cloned.trim(), head);

    // Cloning an app that does not exist says so.
    let missing = std::process::Command::new("git")
        .args(["clone", &server.url("does-not-exist"), "nope"])
        .current_dir(target.path())
        .env("GIT_SSH_COMMAND", server.ssh_command(&server.key))
        .output()
        .expect("git clone");
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("app does-not-exist not found"),
        "{}",
        text(&missing)
    );
}

#[test]
fn other_branches_are_stored_and_deploy_nothing() {
    let server = TestServer::start();
    let app = app_name("branches");
    let repo = web_app("main content");
    let first = server.push(repo.path(), &app, "main");
    assert!(first.status.success(), "{}", text(&first));
    let url = live_url(&first);

    git(repo.path(), &["checkout", "-q", "-b", "feature"]);
    write_web_app(repo.path(), "feature content");
    commit(repo.path(), "feature");
    let feature = server.push(repo.path(), &app, "feature");
    let transcript = text(&feature);
    assert!(feature.status.success(), "{transcript}");
    assert!(
        transcript.contains("Stored branch feature (only main deploys)"),
        "{transcript}"
    );
    assert!(!transcript.contains("Building"), "{transcript}");
    assert_eq!(http_get(&url).as_deref(), Some("main content\n"));

    // Pushing nothing new deploys nothing.
    let again = server.push(repo.path(), &app, "feature");
    assert!(again.status.success());
    assert!(
        text(&again).contains("Everything up-to-date"),
        "{}",
        text(&again)
    );
    assert!(!text(&again).contains("Building"));

    // Deleting a branch deploys nothing.
    let deleted = server.push(repo.path(), &app, ":feature");
    assert!(deleted.status.success(), "{}", text(&deleted));
    assert!(
        text(&deleted).contains("Deleted branch feature"),
        "{}",
        text(&deleted)
    );
    assert_eq!(http_get(&url).as_deref(), Some("main content\n"));
}

#[test]
fn master_deploys_when_it_is_the_only_branch() {
    let server = TestServer::start();
    let app = app_name("master");
    let repo = web_app("from master");
    git(repo.path(), &["branch", "-m", "main", "master"]);
    let push = server.push(repo.path(), &app, "master");
    assert!(push.status.success(), "{}", text(&push));
    assert_eq!(http_get(&live_url(&push)).as_deref(), Some("from master\n"));
}

#[test]
fn two_apps_pushed_at_once_both_go_live_and_one_app_waits_for_itself() {
    let server = TestServer::start();
    let (one, two) = (app_name("para-one"), app_name("para-two"));
    let repo_one = web_app("app one");
    let repo_two = web_app("app two");
    let (push_one, push_two) = std::thread::scope(|scope| {
        let a = scope.spawn(|| server.push(repo_one.path(), &one, "main"));
        let b = scope.spawn(|| server.push(repo_two.path(), &two, "main"));
        (a.join().expect("thread"), b.join().expect("thread"))
    });
    assert!(push_one.status.success(), "{}", text(&push_one));
    assert!(push_two.status.success(), "{}", text(&push_two));
    assert_eq!(http_get(&live_url(&push_one)).as_deref(), Some("app one\n"));
    assert_eq!(http_get(&live_url(&push_two)).as_deref(), Some("app two\n"));

    // Two pushes to one app: the second waits for the first and says so.
    let app = app_name("waits");
    let slow = web_app("slow");
    // The unique echo keeps the build cache from reusing the slow step.
    write(
        slow.path(),
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nRUN sleep 3 && echo {app}\nCOPY www /www\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"
        ),
    );
    commit(slow.path(), "slow build");
    let other = tempfile::tempdir().expect("dir");
    git(other.path(), &["init", "-q", "-b", "main"]);
    write_web_app(other.path(), "other");
    commit(other.path(), "unrelated");
    let (first, second) = std::thread::scope(|scope| {
        let a = scope.spawn(|| server.push(slow.path(), &app, "main"));
        // The second push starts once the first is building (it holds the app's lock then).
        wait_for("the first push to be building", || {
            let info = server.ssh(&["apps:info", &app, "--json"]);
            let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap_or_default();
            (info["state"] == "building").then_some(())
        });
        let b = scope.spawn(|| server.push(other.path(), &app, "main"));
        (a.join().expect("thread"), b.join().expect("thread"))
    });
    assert!(first.status.success(), "{}", text(&first));
    let waited = text(&second);
    assert!(
        waited.contains(&format!(
            "Waiting for the deploy of {app} in progress to finish"
        )),
        "{waited}"
    );
    assert!(
        !second.status.success(),
        "the second push raced the first:\n{waited}\n{}",
        server.log()
    );
    assert!(
        waited.contains("main moved while this push waited"),
        "{waited}\n{}",
        server.log()
    );
    assert_eq!(http_get(&live_url(&first)).as_deref(), Some("slow\n"));
}

#[test]
fn single_host_mode_keeps_images_local() {
    require_environment();
    let server = TestServer::start_with("");
    let app = app_name("local");
    let repo = web_app("local only");
    let push = server.push(repo.path(), &app, "main");
    let transcript = text(&push);
    assert!(push.status.success(), "{transcript}");
    assert!(!transcript.contains("Pushing image"), "{transcript}");
    assert_eq!(http_get(&live_url(&push)).as_deref(), Some("local only\n"));
    let image = std::process::Command::new("docker")
        .args(["image", "inspect", &format!("berth/{app}:v1")])
        .output()
        .expect("docker");
    assert!(image.status.success(), "local image berth/{app}:v1 missing");
}

#[test]
fn shell_and_unknown_commands_get_an_answer() {
    let server = TestServer::start();
    let shell = server.ssh(&[]);
    assert_eq!(shell.status.code(), Some(1));
    assert!(
        text(&shell).contains("berth has no shell"),
        "{}",
        text(&shell)
    );
    let unknown = server.ssh(&["frobnicate"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("unknown command \"frobnicate\""),
        "{}",
        text(&unknown)
    );
    let help = server.ssh(&["help"]);
    assert!(help.status.success() && text(&help).contains("apps:info"));
}

#[test]
fn build_context_is_the_pushed_tree_without_dockerignored_files() {
    let server = TestServer::start();
    let app = app_name("ignore");
    let repo = web_app("unused");
    write(
        repo.path(),
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nCOPY . /www\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"
        ),
    );
    write(repo.path(), "index.html", "tree content\n");
    write(repo.path(), "secret.txt", "do not ship\n");
    write(repo.path(), ".dockerignore", "secret.txt\n");
    // An uncommitted file in the work tree never reaches the build: only the commit does.
    commit(repo.path(), "with dockerignore");
    write(repo.path(), "uncommitted.txt", "not pushed\n");
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let url = live_url(&push);
    assert_eq!(http_get(&url).as_deref(), Some("tree content\n"));
    assert_eq!(
        http_get(&format!("{url}/www/index.html")).as_deref(),
        Some("unused\n")
    );
    assert_eq!(
        http_get(&format!("{url}/secret.txt")),
        None,
        "a .dockerignored file was served"
    );
    assert_eq!(http_get(&format!("{url}/uncommitted.txt")), None);
}

#[test]
fn dead_registry_and_dead_engine_fail_the_push_with_one_clear_line() {
    require_environment();
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let server = TestServer::start_with(&format!(
        "registry = \"127.0.0.1:{dead_port}\"\nready_timeout = 10\n"
    ));
    let app = app_name("deadreg");
    let repo = web_app("never deployed");
    let push = server.push(repo.path(), &app, "main");
    let transcript = text(&push);
    assert!(!push.status.success(), "{transcript}");
    let errors: Vec<&str> = transcript
        .lines()
        .filter(|l| l.contains(" !     "))
        .collect();
    assert!(
        errors[0].contains(&format!("to the registry at 127.0.0.1:{dead_port} failed")),
        "{transcript}"
    );
    assert!(
        errors[0].contains("check that the registry is running"),
        "{transcript}"
    );
    assert!(app_containers(&app).is_empty());

    let no_engine =
        TestServer::start_with_env("", &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let push = no_engine.push(repo.path(), &app_name("deadengine"), "main");
    let transcript = text(&push);
    assert!(!push.status.success(), "{transcript}");
    assert!(
        transcript.contains("the Docker engine is not answering"),
        "{transcript}"
    );
    assert!(
        transcript.contains("start it (dockerd) and push again"),
        "{transcript}"
    );
}

#[test]
fn a_crashed_app_is_restarted_at_the_same_url() {
    let server = TestServer::start();
    let app = app_name("restart");
    let repo = web_app("still here");
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let url = live_url(&push);
    let container = format!("berth-{app}-v1-web-1");
    let started_at = || {
        let output = std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.State.StartedAt}}", &container])
            .output()
            .expect("inspect");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    let first_start = started_at();
    // Kill every process of the app (the init process then exits): a crash, not a stop.
    // The exec itself dies with the rest, so its exit status says nothing.
    let _ = std::process::Command::new("docker")
        .args(["exec", &container, "sh", "-c", "kill -9 -1"])
        .output()
        .expect("docker exec");
    // Brought back (by the restart policy, or by the reconciler if it looks first), same URL.
    wait_for("the crashed app to be restarted at its URL", || {
        (started_at() != first_start && http_get(&url).as_deref() == Some("still here\n"))
            .then_some(())
    });
}

#[test]
fn members_push_and_see_only_their_own_apps() {
    let server = TestServer::start();
    let admin_app = app_name("admins");
    let repo = web_app("admin's app");
    let push = server.push(repo.path(), &admin_app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let url = live_url(&push);

    let member = server.dir.path().join("member");
    keygen(&member);
    server.add_key("bob", "member", &member);
    let as_member = |app: &str, repo: &std::path::Path| server.push_as(&member, repo, app, "main");

    // Someone else's app: refused before anything happens; it keeps serving.
    let intruder = web_app("bob was here");
    let refused = as_member(&admin_app, intruder.path());
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains(&format!(
            "not allowed: app {admin_app} is not one you may push to"
        )),
        "{}",
        text(&refused)
    );
    assert_eq!(http_get(&url).as_deref(), Some("admin's app\n"));

    // Their own app: created on first push, owned by them, the only one they see.
    let own_app = app_name("bobs");
    let own = as_member(&own_app, intruder.path());
    assert!(own.status.success(), "{}", text(&own));
    let list = server.ssh_as(&member, &["apps:list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, vec![own_app.as_str()]);
    assert_eq!(list[0]["owner"], "bob");
    let info = server.ssh_as(&member, &["apps:info", &admin_app]);
    assert!(
        !info.status.success() && text(&info).contains("not allowed"),
        "{}",
        text(&info)
    );
    let all = text(&server.ssh(&["apps:list"]));
    assert!(all.contains(&admin_app) && all.contains(&own_app), "{all}");
}
