//! End to end over the real `ssh` client, engine and registry: running berth for months
//! (issue 7): storage, links, retention, backup and restore, webhooks, git:sync.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

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
    assert_eq!(
        json(&server.ssh(&["storage:list", &app, "--json"])),
        Value::Array(vec![])
    );

    // A member may mount a named volume: the running app restarts with it.
    let mounted = server.ssh_as(&member, &["storage:mount", &app, "data:/data"]);
    let mounted_text = ok(&mounted);
    assert!(
        mounted_text.contains("Mounted data at /data"),
        "{mounted_text}"
    );
    let list = json(&server.ssh(&["storage:list", &app, "--json"]));
    // Named by the app's never-reused uid, not its name (finding 12).
    let volume = list[0]["source"].as_str().expect("source").to_string();
    assert!(
        volume.starts_with("berth.") && volume.ends_with(".data"),
        "{volume}"
    );
    assert!(volume_exists(&volume));
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
    server.push_ok(repo.path(), &app, "main");
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
    assert!(
        page(&server, &app, "/boots.txt")
            .expect("boots")
            .starts_with("one\ntwo\n")
    );
    let info = json(&server.ssh(&["apps:info", &app, "--json"]));
    assert_eq!(info["mounts"][0]["path"], "/data", "{info}");

    // A rename keeps the data; a new app of the old name gets a volume of its own, and
    // destroying it leaves the renamed app's volume alone.
    let renamed = format!("{app}-r");
    ok(&server.ssh(&["apps:rename", &app, &renamed]));
    assert!(
        page(&server, &renamed, "/boots.txt")
            .expect("boots")
            .starts_with("one\ntwo\n")
    );
    server.push_ok(repo.path(), &app, "main");
    ok(&server.ssh(&["storage:mount", &app, "data:/data"]));
    let fresh = page(&server, &app, "/boots.txt").expect("boots");
    assert!(
        !fresh.contains("one"),
        "a new app must not see another app's data: {fresh:?}"
    );
    let destroyed = ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
    assert!(
        volume_exists(&volume),
        "the renamed app's volume must stay: {destroyed}"
    );
    // Destroy with --keep-data keeps the volume, but it belongs to no app any more: a new app
    // of the same name mounting the same name gets a fresh volume, not the data (squatting).
    let destroyed = ok(&server.ssh(&[
        "apps:destroy",
        &renamed,
        "--confirm",
        &renamed,
        "--keep-data",
    ]));
    assert!(
        destroyed.contains(&format!("kept volumes {volume}")),
        "{destroyed}"
    );
    assert!(volume_exists(&volume));
    server.push_ok(repo.path(), &renamed, "main");
    ok(&server.ssh(&["storage:mount", &renamed, "data:/data"]));
    let squatted = page(&server, &renamed, "/boots.txt").expect("boots");
    assert!(
        !squatted.contains("one"),
        "a new app of a destroyed app's name must not get its kept data: {squatted:?}"
    );
    let second = json(&server.ssh(&["storage:list", &renamed, "--json"]))[0]["source"]
        .as_str()
        .expect("source")
        .to_string();
    assert_ne!(second, volume);
    // Without --keep-data the volume goes with the app; the kept one stays.
    let destroyed = ok(&server.ssh(&["apps:destroy", &renamed, "--confirm", &renamed]));
    assert!(
        destroyed.contains(&format!("removed volumes {second}")),
        "{destroyed}"
    );
    assert!(
        !volume_exists(&second),
        "the volume must be gone after destroy"
    );
    assert!(volume_exists(&volume), "the kept volume must stay");
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", &volume])
        .output();
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
    server.push_ok(dep_repo.path(), &dep, "main");
    let alias = dep.to_ascii_uppercase().replace('-', "_");
    let repo = fetching_app(&format!("{alias}_URL"));
    server.push_ok(repo.path(), &app, "main");

    refused(
        &server.ssh(&["apps:link", &app, "nosuchapp"]),
        "app nosuchapp not found",
    );
    refused(
        &server.ssh(&["apps:link", &app, &app]),
        "cannot link to itself",
    );
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
    assert_eq!(
        dep_info["linked_from"][0]["app"],
        app.as_str(),
        "{dep_info}"
    );
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
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let quarantine = server
        .data_dir()
        .join(format!("repos/{app}.git/objects/tmp_objdir-incoming-test"));
    std::fs::create_dir_all(&quarantine).expect("mkdir");
    std::fs::write(quarantine.join("pack"), vec![0u8; 4096]).expect("write");
    make_old(&quarantine);

    let member = server.dir.path().join("member_key");
    keygen(&member);
    server.add_key("member", "member", &member);
    refused(&server.ssh_as(&member, &["system:prune"]), "only admins");
    refused(&server.ssh_as(&member, &["system:df"]), "only admins");

    let dry = ok(&server.ssh(&["system:prune", "--dry-run"]));
    assert!(
        dry.contains(&format!("would remove container {leftover}")),
        "{dry}"
    );
    assert!(
        dry.contains("would remove push-temp tmp_objdir-incoming-test"),
        "{dry}"
    );
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

/// A local HTTP receiver (python3): appends every POST as a JSON line (path, headers, body) to
/// `log`; answers 500 to the first POST of each event named in `fail_once`, else 200.
struct Receiver {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Receiver {
    fn start(dir: &std::path::Path, fail_once: &[&str]) -> Receiver {
        let port = free_port();
        let log = dir.join("received.jsonl");
        let script = dir.join("receiver.py");
        std::fs::write(
            &script,
            r#"
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port, log, fail_once = int(sys.argv[1]), sys.argv[2], set(filter(None, sys.argv[3].split(',')))
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0))).decode()
        event = self.headers.get('X-Berth-Event', '')
        code = 200
        if event in fail_once:
            fail_once.discard(event)
            code = 500
        with open(log, 'a') as f:
            f.write(json.dumps({'path': self.path, 'headers': {k.lower(): v for k, v in self.headers.items()}, 'body': body, 'answered': code}) + '\n')
        self.send_response(code)
        self.send_header('Content-Length', '0')
        self.end_headers()
    def log_message(self, *args):
        pass
HTTPServer(('127.0.0.1', port), H).serve_forever()
"#,
        )
        .expect("write receiver");
        let child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&log)
            .arg(fail_once.join(","))
            .spawn()
            .expect("python3");
        wait_for("the webhook receiver", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Receiver { child, port, log }
    }

    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wait_for`, showing the deliveries and the server's log when it times out.
fn wait_logged<T>(server: &TestServer, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return value;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}\ndeliveries: {}\nserver log:\n{}",
                text(&server.ssh(&["webhooks:deliveries", "--json"])),
                server.log()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn hmac_hex(secret: &str, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn outbound_webhooks_are_signed_retried_and_report_failures() {
    let server = TestServer::start();
    let app = app_name("hooked");
    let receiver = Receiver::start(server.dir.path(), &["deploy.succeeded"]);
    let url = format!("http://127.0.0.1:{}/hook", receiver.port);

    refused(
        &server.ssh(&[
            "webhooks:add",
            &format!("http://127.0.0.1:{}/", free_port()),
        ]),
        "did not answer the ping",
    );
    refused(
        &server.ssh(&["webhooks:add", &url, "--events", "deploy.exploded"]),
        "unknown event",
    );
    refused(
        &server.ssh(&["webhooks:add", "ftp://example.com/"]),
        "not an http",
    );
    assert_eq!(
        json(&server.ssh(&["webhooks:list", "--json"])),
        Value::Array(vec![])
    );

    let added = ok(&server.ssh(&[
        "webhooks:add",
        &url,
        "--events",
        "deploy.succeeded,deploy.failed",
    ]));
    let secret = added
        .lines()
        .find_map(|l| l.split("secret (shown once): ").nth(1))
        .unwrap_or_else(|| panic!("{added}"))
        .trim()
        .to_string();
    let hooks = json(&server.ssh(&["webhooks:list", "--json"]));
    assert_eq!(hooks.as_array().map(Vec::len), Some(1), "{hooks}");
    assert!(
        hooks[0].get("secret").is_none(),
        "secrets are never listed: {hooks}"
    );
    let id = hooks[0]["id"].as_i64().expect("id");
    // A member sees none of the server-wide webhooks and cannot add one.
    let member = server.dir.path().join("member_key");
    keygen(&member);
    server.add_key("member", "member", &member);
    assert_eq!(
        json(&server.ssh_as(&member, &["webhooks:list", "--json"])),
        Value::Array(vec![])
    );
    refused(
        &server.ssh_as(&member, &["webhooks:add", &url]),
        "only admins",
    );

    ok(&server.ssh(&["apps:create", &app]));
    ok(&server.ssh(&["config:set", &app, "API_TOKEN=hunter2-very-secret"]));
    let repo = web_app("hooked");
    server.push_ok(repo.path(), &app, "main");

    // The first POST of deploy.succeeded is answered 500: berth tries again.
    let delivered = wait_logged(&server, "deploy.succeeded delivered after a retry", || {
        let got: Vec<Value> = receiver
            .received()
            .into_iter()
            .filter(|r| r["headers"]["x-berth-event"] == "deploy.succeeded")
            .collect();
        (got.len() >= 2).then_some(got)
    });
    assert_eq!(delivered[0]["answered"], 500);
    assert_eq!(delivered[1]["answered"], 200);
    let last = &delivered[1];
    let body = last["body"].as_str().expect("body");
    assert_eq!(
        last["headers"]["x-berth-signature"],
        format!("sha256={}", hmac_hex(&secret, body)).as_str(),
        "the signature must be HMAC-SHA256 of the body with the secret"
    );
    assert_ne!(
        last["headers"]["x-berth-signature"],
        format!("sha256={}", hmac_hex("another secret", body)).as_str()
    );
    let payload: Value = serde_json::from_str(body).expect("JSON payload");
    assert_eq!(payload["event"], "deploy.succeeded");
    assert_eq!(payload["app"], app.as_str());
    let deliveries = json(&server.ssh(&["webhooks:deliveries", &id.to_string(), "--json"]));
    let succeeded = deliveries
        .as_array()
        .expect("array")
        .iter()
        .find(|d| d["event"] == "deploy.succeeded")
        .unwrap_or_else(|| panic!("{deliveries}"));
    assert_eq!(succeeded["status"], "delivered", "{deliveries}");
    assert_eq!(succeeded["attempts"], 2, "{deliveries}");
    assert_eq!(succeeded["response"], "HTTP 200", "{deliveries}");

    // A failed deploy (a broken Dockerfile) sends deploy.failed.
    write(
        repo.path(),
        "Dockerfile",
        &format!("FROM {BASE_IMAGE}\nRUN exit 3\n"),
    );
    commit(repo.path(), "broken");
    assert!(!server.push(repo.path(), &app, "main").status.success());
    let failed = wait_logged(&server, "deploy.failed delivered", || {
        receiver
            .received()
            .into_iter()
            .find(|r| r["headers"]["x-berth-event"] == "deploy.failed")
    });
    let payload: Value =
        serde_json::from_str(failed["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(payload["app"], app.as_str());
    for received in receiver.received() {
        assert!(
            !received["body"]
                .as_str()
                .unwrap_or_default()
                .contains("hunter2"),
            "config values must never be in a payload: {received}"
        );
    }
    ok(&server.ssh(&["webhooks:remove", &id.to_string()]));
    assert_eq!(
        json(&server.ssh(&["webhooks:list", "--json"])),
        Value::Array(vec![])
    );
    ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
}

/// POSTs `body` to the router at `path`: the status.
fn post(server: &TestServer, path: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", server.http_port)).expect("connect");
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: hooks.example.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn metric(server: &TestServer, name: &str) -> u64 {
    let text =
        http_get(&format!("http://127.0.0.1:{}/metrics", server.admin_port)).expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[test]
fn git_sync_and_inbound_webhooks_deploy_the_latest_commit() {
    let server = TestServer::start();
    let app = app_name("synced");
    let upstream = server.dir.path().join("upstream.git");
    git(
        server.dir.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            upstream.to_str().expect("path"),
        ],
    );
    let work = web_app("synced one");
    git(
        work.path(),
        &["push", "-q", upstream.to_str().expect("path"), "main"],
    );

    refused(
        &server.ssh(&["git:sync", &app, "/tmp/x"]),
        &format!("app {app} not found"),
    );
    ok(&server.ssh(&["apps:create", &app]));
    refused(&server.ssh(&["webhooks:inbound", &app]), "no sync source");
    refused(
        &server.ssh(&["git:sync", &app, "--upload-pack=touch /tmp/pwned", "main"]),
        "unknown option",
    );
    refused(
        &server.ssh(&["git:sync", &app, "relative/repo"]),
        "not a repository URL",
    );
    refused(
        &server.ssh(&["git:sync", &app, "/nonexistent/repo.git"]),
        "cannot fetch HEAD from /nonexistent/repo.git",
    );
    let member = server.dir.path().join("member_key");
    keygen(&member);
    server.add_key("member", "member", &member);
    ok(&server.ssh(&["apps:grant", &app, "member"]));
    refused(
        &server.ssh_as(
            &member,
            &["git:sync", &app, upstream.to_str().expect("path")],
        ),
        "only admins sync from a path",
    );

    let synced = ok(&server.ssh(&["git:sync", &app, upstream.to_str().expect("path"), "main"]));
    assert!(synced.contains("is live at"), "{synced}");
    assert_eq!(page(&server, &app, "/").as_deref(), Some("synced one\n"));
    // The deploy branch now points at what was deployed (a clone gets it).
    let head = git(work.path(), &["rev-parse", "HEAD"]);
    let listed = ok(&server.ssh(&["releases", &app, "--json"]));
    assert!(listed.contains(head.trim()), "{listed}");

    let inbound = ok(&server.ssh(&["webhooks:inbound", &app]));
    let hook_url = inbound.lines().next().expect("url").trim().to_string();
    let path = hook_url
        .split_once(&format!(":{}", server.http_port))
        .map(|(_, p)| p.to_string())
        .unwrap_or_else(|| panic!("{hook_url}"));
    assert!(path.starts_with(&format!("/.berth/hooks/{app}/")), "{path}");

    write_web_app(work.path(), "synced two");
    let newest = commit(work.path(), "two");
    git(
        work.path(),
        &["push", "-q", upstream.to_str().expect("path"), "main"],
    );

    // A wrong token: refused, counted, nothing deployed.
    let wrong = format!("/.berth/hooks/{app}/{}", "0".repeat(64));
    assert_eq!(post(&server, &wrong, "{}"), 403);
    assert_eq!(metric(&server, "berth_inbound_webhooks_refused_total"), 1);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(page(&server, &app, "/").as_deref(), Some("synced one\n"));
    let events = ok(&server.ssh(&["events", &app, "--json"]));
    assert!(events.contains("wrong inbound webhook token"), "{events}");

    // A host command that asks the data plane something connects to it too: the triggers
    // still go to the serving control plane (issue 15: they went to the command's connection,
    // which was gone, and no sync ever ran).
    let report = server.cli(&["ps:report", &app]);
    assert!(report.status.success(), "{}", text(&report));

    // The right one with a GitHub push payload deploys the branch's latest commit.
    let payload = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{newest}\"}}");
    assert_eq!(post(&server, &path, &payload), 202);
    wait_for("the inbound webhook's deploy", || {
        (page(&server, &app, "/").as_deref() == Some("synced two\n")).then_some(())
    });
    let releases = ok(&server.ssh(&["releases", &app, "--json"]));
    assert!(releases.contains(&newest), "{releases}");

    // Security finding 14: the token follows the app's id. After a rename the old name's path
    // is refused and the new name's takes the same token; once the app is destroyed, a new app
    // of that name does not inherit it.
    let token = path.rsplit('/').next().expect("token").to_string();
    let renamed = format!("{app}-r");
    ok(&server.ssh(&["apps:rename", &app, &renamed]));
    assert_eq!(post(&server, &path, &payload), 403, "the old name's path");
    let renamed_path = format!("/.berth/hooks/{renamed}/{token}");
    assert_eq!(post(&server, &renamed_path, &payload), 202);
    std::thread::sleep(std::time::Duration::from_secs(2));
    ok(&server.ssh(&["apps:destroy", &renamed, "--confirm", &renamed]));
    assert_eq!(
        post(&server, &renamed_path, &payload),
        403,
        "a destroyed app's token"
    );
    ok(&server.ssh(&["apps:create", &renamed]));
    assert_eq!(
        post(&server, &renamed_path, &payload),
        403,
        "a new app of the old name inherited the token"
    );
    ok(&server.ssh(&["apps:destroy", &renamed, "--confirm", &renamed]));
}

#[test]
fn backup_and_restore_bring_an_app_back() {
    let mut server = TestServer::start();
    let app = app_name("saved");
    let repo = web_app("saved one");
    server.push_ok(repo.path(), &app, "main");
    ok(&server.ssh(&["config:set", &app, "SAVED=yes"]));
    assert_eq!(page(&server, &app, "/").as_deref(), Some("saved one\n"));
    let host_key = std::fs::read(server.data_dir().join("ssh_host_ed25519_key")).expect("host key");

    // A backup while the server runs.
    let file = server.dir.path().join("berth-backup.tar");
    let backed = server.cli(&["backup", file.to_str().expect("path")]);
    assert!(backed.status.success(), "{}", text(&backed));
    assert!(
        text(&backed).contains("Backed up 1 app(s)"),
        "{}",
        text(&backed)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)
        .expect("backup")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "a backup holds keys: owner-only");

    // Restoring over a running server with apps is refused, and so is a corrupt archive.
    let over = server.cli(&["restore", file.to_str().expect("path")]);
    assert!(!over.status.success());
    assert!(text(&over).contains("berth is running"), "{}", text(&over));
    server.stop();
    remove_app_containers(&app);
    std::fs::remove_dir_all(server.data_dir()).expect("wipe data dir");
    let corrupt = server.dir.path().join("corrupt.tar");
    let mut bytes = std::fs::read(&file).expect("read backup");
    bytes.truncate(bytes.len() / 3);
    bytes[700..900].fill(0x5a);
    std::fs::write(&corrupt, &bytes).expect("write corrupt");
    let refused = server.cli(&["restore", corrupt.to_str().expect("path")]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("is not a berth backup")
            && text(&refused).contains("nothing was restored"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        text(&refused).trim().lines().count(),
        1,
        "{}",
        text(&refused)
    );
    assert!(
        !server.data_dir().join("berth.db").exists(),
        "a refused restore writes nothing"
    );

    // Into the empty data dir: apps, keys, releases and config come back, and the app serves.
    let restored = server.cli(&["restore", file.to_str().expect("path")]);
    assert!(restored.status.success(), "{}", text(&restored));
    assert!(
        text(&restored).contains("Restored 1 app(s)"),
        "{}",
        text(&restored)
    );
    assert_eq!(
        std::fs::read(server.data_dir().join("ssh_host_ed25519_key")).expect("host key"),
        host_key,
        "the host key comes back (clients' known_hosts stay valid)"
    );
    server.restart();
    wait_for("the restored app to serve", || {
        (page(&server, &app, "/").as_deref() == Some("saved one\n")).then_some(())
    });
    assert_eq!(ok(&server.ssh(&["config:get", &app, "SAVED"])), "yes\n");
    let releases = json(&server.ssh(&["releases", &app, "--json"]));
    assert_eq!(releases.as_array().map(Vec::len), Some(2), "{releases}");
    // The repo came back too: a clone has the pushed commit.
    let clone = tempfile::tempdir().expect("dir");
    let cloned = Command::new("git")
        .args(["clone", "-q", &server.url(&app)])
        .arg(clone.path().join("c"))
        .env("GIT_SSH_COMMAND", server.ssh_command(&server.key))
        .output()
        .expect("git clone");
    assert!(cloned.status.success(), "{}", text(&cloned));
    // On a host whose registry lost the images, `ps:rebuild --all` builds every app again.
    let rebuilt = ok(&server.ssh(&["ps:rebuild", "--all"]));
    assert!(rebuilt.contains("Rebuilt 1 app(s)"), "{rebuilt}");
    assert_eq!(page(&server, &app, "/").as_deref(), Some("saved one\n"));
    let releases = json(&server.ssh(&["releases", &app, "--json"]));
    assert_eq!(releases.as_array().map(Vec::len), Some(3), "{releases}");
    ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
}
