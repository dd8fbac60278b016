//! End to end over the real `ssh` client, engine and registry: running berth for months
//! (issue 7): storage, links, retention, backup and restore, webhooks, git:sync.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn json(output: &std::process::Output) -> Value {
    serde_json::from_str(&ok(output))
        .unwrap_or_else(|e| panic!("bad JSON ({e}):\n{}", text(output)))
}

fn page(server: &TestServer, app: &str, path: &str) -> Option<String> {
    http_get_at(
        &format!("127.0.0.1:{}", server.http_port),
        &format!("{app}.localhost"),
        path,
    )
}

/// The command failed with exactly one ` !     ` line containing `needle`.
fn refused(output: &std::process::Output, needle: &str) {
    let all = text(output);
    assert!(!output.status.success(), "expected a refusal:\n{all}");
    let lines: Vec<&str> = all.lines().filter(|l| l.starts_with(" !")).collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{all}");
    assert!(lines[0].contains(needle), "expected {needle:?} in:\n{all}");
}

fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A web app that, each time a container starts, appends its version to /data/www/boots.txt
/// and serves /data/www: what it wrote before a redeploy shows whether the volume survived.
fn volume_app(repo: &std::path::Path, version: &str) {
    write(repo, "version", &format!("{version}\n"));
    write(
        repo,
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nCOPY version /version\nCMD [\"sh\", \"-c\", \"mkdir -p /data/www && cat /version >> /data/www/boots.txt && exec httpd -f -p $PORT -h /data/www\"]\n"
        ),
    );
}

#[test]
fn volumes_survive_redeploys_and_rollbacks_and_go_with_the_app() {
    let server = TestServer::start();
    let app = app_name("vol");
    let repo = web_app("unused");
    volume_app(repo.path(), "one");
    commit(repo.path(), "v1");
    let pushed = server.push(repo.path(), &app, "main");
    assert!(pushed.status.success(), "{}", text(&pushed));

    // Bad input: one line each, nothing recorded.
    refused(
        &server.ssh(&["storage:mount", &app, ":/data"]),
        "missing volume name",
    );
    refused(
        &server.ssh(&["storage:mount", &app, "data:relative"]),
        "absolute path",
    );
    refused(
        &server.ssh(&["storage:mount", &app, "data:/data/../etc"]),
        "no '..'",
    );
    refused(
        &server.ssh(&["storage:mount", &app, "/etc:/data"]),
        "system's or berth's own files",
    );
    refused(
        &server.ssh(&["storage:mount", &app, "/no/such/dir:/data"]),
        "not a directory",
    );
    let member = server.dir.path().join("member_key");
    keygen(&member);
    server.add_key("member", "member", &member);
    ok(&server.ssh(&["apps:grant", &app, "member"]));
    refused(
        &server.ssh_as(&member, &["storage:mount", &app, "/tmp:/data"]),
        "only admins mount host directories",
    );
    assert_eq!(json(&server.ssh(&["storage:list", &app, "--json"])), Value::Array(vec![]));

    // A member may mount a named volume: the running app restarts with it.
    let mounted = server.ssh_as(&member, &["storage:mount", &app, "data:/data"]);
    let mounted_text = ok(&mounted);
    assert!(mounted_text.contains("Mounted data at /data"), "{mounted_text}");
    let volume = format!("berth-{app}-data");
    assert!(volume_exists(&volume));
    let list = json(&server.ssh(&["storage:list", &app, "--json"]));
    assert_eq!(list[0]["name"], "data");
    assert_eq!(list[0]["path"], "/data");
    assert_eq!(list[0]["kind"], "volume");
    refused(
        &server.ssh(&["storage:mount", &app, "other:/data"]),
        "already mounts data at /data",
    );
    assert_eq!(page(&server, &app, "/boots.txt").as_deref(), Some("one\n"));

    // A new release (push) sees what the old one wrote.
    volume_app(repo.path(), "two");
    commit(repo.path(), "v2");
    assert!(server.push(repo.path(), &app, "main").status.success());
    assert_eq!(
        page(&server, &app, "/boots.txt").as_deref(),
        Some("one\ntwo\n")
    );
    // Scaling and a rollback keep it too.
    ok(&server.ssh(&["ps:scale", &app, "web=2"]));
    ok(&server.ssh(&["releases:rollback", &app]));
    let boots = page(&server, &app, "/boots.txt").expect("boots");
    assert!(
        boots.starts_with("one\ntwo\n") && boots.lines().filter(|l| *l == "one").count() >= 2,
        "rollback to v1's image must append to the same file: {boots:?}"
    );
    // ps:stop never touches volumes.
    ok(&server.ssh(&["ps:stop", &app]));
    assert!(volume_exists(&volume));
    ok(&server.ssh(&["ps:start", &app]));
    assert!(page(&server, &app, "/boots.txt").expect("boots").starts_with("one\ntwo\n"));
    let info = json(&server.ssh(&["apps:info", &app, "--json"]));
    assert_eq!(info["mounts"][0]["path"], "/data", "{info}");

    // Destroy with --keep-data keeps the volume; a new app of that name mounting it gets the data.
    let destroyed = ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app, "--keep-data"]));
    assert!(destroyed.contains(&format!("kept volumes {volume}")), "{destroyed}");
    assert!(volume_exists(&volume));
    assert!(server.push(repo.path(), &app, "main").status.success());
    ok(&server.ssh(&["storage:mount", &app, "data:/data"]));
    assert!(page(&server, &app, "/boots.txt").expect("boots").starts_with("one\ntwo\n"));
    // Without it the volume goes with the app.
    let destroyed = ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
    assert!(destroyed.contains(&format!("removed volumes {volume}")), "{destroyed}");
    assert!(!volume_exists(&volume), "the volume must be gone after destroy");
}

/// A web app whose page, made when a container starts, is what `$VAR` answers (fetched with
/// busybox wget): shows that the link's variables reach a running dependency.
fn fetching_app(var: &str) -> tempfile::TempDir {
    let repo = web_app("unused");
    write(
        repo.path(),
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"mkdir -p /page && echo \\\"url=${var}\\\" > /page/url.txt && (for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O /page/index.html ${var}/ && break; sleep 0.5; done) ; exec httpd -f -p $PORT -h /page\"]\n"
        ),
    );
    commit(repo.path(), "fetching app");
    repo
}

/// A web app answering `content` on the port its image EXPOSEs.
fn exposed_app(repo: &std::path::Path, content: &str, port: u16) {
    write_web_app(repo, content);
    write(
        repo,
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE {port}\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"
        ),
    );
}

#[test]
fn links_inject_the_dependency_and_follow_it() {
    let server = TestServer::start();
    let dep = app_name("linkdb");
    let app = app_name("linkweb");
    let dep_repo = web_app("unused");
    exposed_app(dep_repo.path(), "db one", 6001);
    commit(dep_repo.path(), "db v1");
    assert!(server.push(dep_repo.path(), &dep, "main").status.success());
    let alias = dep.to_ascii_uppercase().replace('-', "_");
    let repo = fetching_app(&format!("{alias}_URL"));
    assert!(server.push(repo.path(), &app, "main").status.success());

    refused(&server.ssh(&["apps:link", &app, "nosuchapp"]), "app nosuchapp not found");
    refused(&server.ssh(&["apps:link", &app, &app]), "cannot link to itself");
    refused(
        &server.ssh(&["apps:link", &app, &dep, "--as", "bad-name"]),
        "upper-case letters",
    );

    let linked = ok(&server.ssh(&["apps:link", &app, &dep]));
    assert!(linked.contains(&format!("{alias}_URL")), "{linked}");
    let config = json(&server.ssh(&["config:show", &app, "--reveal", "--json"]));
    assert_eq!(config[format!("{alias}_HOST")], dep.as_str(), "{config}");
    assert_eq!(config[format!("{alias}_PORT")], "6001", "{config}");
    assert_eq!(
        config[format!("{alias}_URL")],
        format!("http://{dep}:6001").as_str()
    );
    // The app reached its dependency by those values.
    assert_eq!(page(&server, &app, "/").as_deref(), Some("db one\n"));

    // Both directions are visible; a cycle and a second link are refused; DEP cannot go first.
    let info = json(&server.ssh(&["apps:info", &app, "--json"]));
    assert_eq!(info["links"][0]["dep"], dep.as_str(), "{info}");
    let dep_info = json(&server.ssh(&["apps:info", &dep, "--json"]));
    assert_eq!(dep_info["linked_from"][0]["app"], app.as_str(), "{dep_info}");
    refused(&server.ssh(&["apps:link", &dep, &app]), "cycle");
    refused(&server.ssh(&["apps:link", &app, &dep]), "already linked");
    refused(
        &server.ssh(&["apps:destroy", &dep, "--confirm", &dep]),
        &format!("apps:unlink {app} {dep} first"),
    );

    // DEP moves to another port: the app is redeployed with the new values and reaches it.
    exposed_app(dep_repo.path(), "db two", 6002);
    commit(dep_repo.path(), "db v2");
    let pushed = server.push(dep_repo.path(), &dep, "main");
    let pushed_text = text(&pushed);
    assert!(pushed.status.success(), "{pushed_text}");
    assert!(
        pushed_text.contains(&format!("Redeploying {app} (link {alias} -> {dep})")),
        "{pushed_text}"
    );
    let config = json(&server.ssh(&["config:show", &app, "--reveal", "--json"]));
    assert_eq!(config[format!("{alias}_PORT")], "6002", "{config}");
    assert_eq!(page(&server, &app, "/").as_deref(), Some("db two\n"));
    // A redeploy that does not move DEP leaves the app alone.
    let releases_before = json(&server.ssh(&["releases", &app, "--json"]));
    ok(&server.ssh(&["config:set", &dep, "X=1"]));
    let releases_after = json(&server.ssh(&["releases", &app, "--json"]));
    assert_eq!(
        releases_before.as_array().map(Vec::len),
        releases_after.as_array().map(Vec::len)
    );

    let unlinked = ok(&server.ssh(&["apps:unlink", &app, &dep]));
    assert!(unlinked.contains("Unlinked"), "{unlinked}");
    let config = json(&server.ssh(&["config:show", &app, "--json"]));
    assert!(config.get(format!("{alias}_URL")).is_none(), "{config}");
    refused(&server.ssh(&["apps:unlink", &app, &dep]), "is not linked");
    ok(&server.ssh(&["apps:destroy", &dep, "--confirm", &dep]));
    ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
}

fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn retention_keeps_the_last_releases_and_prunes_leftovers() {
    let registry = require_environment();
    let server = TestServer::start_with(&format!(
        "registry = \"{registry}\"\nready_timeout = 10\nkeep_releases = 2\n"
    ));
    let app = app_name("keep");
    let repo = web_app("one");
    for (n, content) in ["one", "two", "three"].iter().enumerate() {
        if n > 0 {
            write_web_app(repo.path(), content);
            commit(repo.path(), content);
        }
        let pushed = server.push(repo.path(), &app, "main");
        assert!(pushed.status.success(), "{}", text(&pushed));
        if n == 2 {
            assert!(
                text(&pushed).contains("removed 1 old image(s) (keep_releases = 2)"),
                "{}",
                text(&pushed)
            );
        }
    }
    let image = |n: u32| format!("{registry}/{app}:v{n}");
    assert!(!image_exists(&image(1)), "v1's image must be gone");
    assert!(image_exists(&image(2)) && image_exists(&image(3)));

    // Rollback to the oldest retained release: no build, its image serves.
    let rolled = server.ssh(&["releases:rollback", &app, "v2"]);
    let rolled_text = text(&rolled);
    assert!(rolled.status.success(), "{rolled_text}");
    assert!(!rolled_text.contains("Building"), "{rolled_text}");
    assert_eq!(page(&server, &app, "/").as_deref(), Some("two\n"));

    // Leftovers: a stopped one-off container and an aborted push's objects.
    let leftover = format!("berth-{app}-run-leftover");
    let made = Command::new("docker")
        .args(["create", "--name", &leftover, "--label"])
        .arg(format!("berth.app={app}"))
        .args(["--label", "berth.process=run", BASE_IMAGE, "true"])
        .output()
        .expect("docker create");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let quarantine = server
        .data_dir()
        .join(format!("repos/{app}.git/objects/tmp_objdir-incoming-test"));
    std::fs::create_dir_all(&quarantine).expect("mkdir");
    std::fs::write(quarantine.join("pack"), vec![0u8; 4096]).expect("write");
    let touched = Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(&quarantine)
        .status()
        .expect("touch");
    assert!(touched.success());

    let member = server.dir.path().join("member_key");
    keygen(&member);
    server.add_key("member", "member", &member);
    refused(&server.ssh_as(&member, &["system:prune"]), "only admins");
    refused(&server.ssh_as(&member, &["system:df"]), "only admins");

    let dry = ok(&server.ssh(&["system:prune", "--dry-run"]));
    assert!(dry.contains(&format!("would remove container {leftover}")), "{dry}");
    assert!(dry.contains("would remove push-temp tmp_objdir-incoming-test"), "{dry}");
    assert!(quarantine.exists() && app_containers(&app).contains(&leftover));
    let pruned = ok(&server.ssh(&["system:prune"]));
    assert!(pruned.contains("Freed"), "{pruned}");
    assert!(!quarantine.exists(), "{pruned}");
    assert!(!app_containers(&app).contains(&leftover), "{pruned}");
    // What the retained releases and the running one need is still there.
    assert!(image_exists(&image(2)) && image_exists(&image(3)));
    assert_eq!(page(&server, &app, "/").as_deref(), Some("two\n"));

    let df = json(&server.ssh(&["system:df", "--json"]));
    let row = df["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|r| r["app"] == app.as_str())
        .unwrap_or_else(|| panic!("{df}"))
        .clone();
    assert_eq!(row["images"], 2, "{df}");
    assert!(row["repo_bytes"].as_u64().unwrap_or(0) > 0, "{df}");
    assert!(row["images_bytes"].as_u64().unwrap_or(0) > 0, "{df}");
    let table = ok(&server.ssh(&["system:df"]));
    assert!(table.contains(&app) && table.contains("IMAGES"), "{table}");
    ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
}
