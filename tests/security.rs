//! Security regressions, soft-serve style: each test names an attack by a member (or an
//! unauthenticated client), drives it for real against a real server, engine, swarm, git and
//! OpenSSH, and checks it fails; where it helps, a control proves the setup would have worked.
//! The findings are numbered as in shared/reviews/security-review.md; SECURITY.md has the model.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A member key registered on `server` as `name`.
fn member(server: &TestServer, name: &str) -> std::path::PathBuf {
    let key = server.dir.path().join(name);
    keygen(&key);
    server.add_key(name, "member", &key);
    key
}

fn require_swarm() {
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

/// Writes `.berth/templates/<target>/<file>` into the repo.
fn template(repo: &Path, target: &str, file: &str, text: &str) {
    std::fs::create_dir_all(repo.join(format!(".berth/templates/{target}"))).expect("mkdir");
    write(repo, &format!(".berth/templates/{target}/{file}"), text);
}

/// Finding 1 (critical). Attack: a member commits `.berth/templates/swarm/stack.yml.tera` that
/// bind-mounts the host's `/` (and the engine socket) into its task and writes a file through
/// it, then moves the app to the swarm target, which redeploys it with that stack file: root on
/// the host. Now a member cannot move an app between targets, an admin's move uses berth's own
/// templates, and repo templates are used only once an admin approved that exact tree.
#[test]
fn member_templates_cannot_mount_the_host_on_swarm() {
    require_swarm();
    let server = TestServer::start();
    let mallory = member(&server, "mallory");
    let app = app_name("sec-tmpl");
    let marker = format!("/tmp/berth-owned-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);
    let repo = web_app("tenant page");
    let hostile = format!(
        r#"version: "3.8"
services:
  web:
    image: "{{{{ image }}}}"
    command: ["sh", "-c", "echo owned > /host{marker}; exec httpd -f -p 5000 -h /www"]
    labels: {{berth.app: "{{{{ app }}}}", berth.release: "{{{{ release }}}}", berth.process: "web"}}
    environment: {{PORT: "5000"}}
    volumes: ["/:/host", "/var/run/docker.sock:/var/run/docker.sock"]
    deploy: {{replicas: 1}}
    ports: [{{target: 5000, protocol: tcp, mode: host}}]
"#
    );
    template(repo.path(), "swarm", "stack.yml.tera", &hostile);
    commit(repo.path(), "hostile stack");
    let push = server.push_as(&mallory, repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    assert!(
        text(&push).contains(".berth/templates/ is not approved"),
        "the pusher is told: {}",
        text(&push)
    );

    // The member cannot move the app.
    let moved = server.ssh_as(&mallory, &["apps:set", &app, "target=swarm"]);
    assert_eq!(moved.status.code(), Some(1), "{}", text(&moved));
    assert!(text(&moved).contains("only admins may move"), "{}", text(&moved));

    // An admin's move deploys with the built-in stack file: no host mount, no marker.
    let moved = server.ssh(&["apps:set", &app, "target=swarm"]);
    assert!(moved.status.success(), "{}", text(&moved));
    let mounts = Command::new("docker")
        .args([
            "service",
            "inspect",
            &format!("berth-{app}_web"),
            "--format",
            "{{json .Spec.TaskTemplate.ContainerSpec.Mounts}}",
        ])
        .output()
        .expect("service inspect");
    let mounts = String::from_utf8_lossy(&mounts.stdout).to_string();
    assert!(
        !mounts.contains("docker.sock") && !mounts.contains("\"Source\":\"/\""),
        "the service mounts the host: {mounts}"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        !Path::new(&marker).exists(),
        "the member's task wrote {marker} on the host"
    );
    let rendered = ok(&server.ssh_as(&mallory, &["deploy:render", &app, "--target", "swarm"]));
    assert!(!rendered.contains("/:/host"), "{rendered}");

    // Control: the template is the one that would have run. An admin approves it (only to
    // render it here, never to deploy it), and the render shows the host mount...
    let approve = server.ssh_as(&mallory, &["templates:approve", &app]);
    assert_eq!(approve.status.code(), Some(1), "members cannot approve");
    ok(&server.ssh(&["templates:approve", &app]));
    let rendered = ok(&server.ssh(&["deploy:render", &app, "--target", "swarm"]));
    assert!(rendered.contains("/:/host"), "{rendered}");
    // ...but the approval is of that tree: a later push that changes a template is not used.
    ok(&server.ssh(&["templates:revoke", &app]));
    let rendered = ok(&server.ssh(&["deploy:render", &app, "--target", "swarm"]));
    assert!(!rendered.contains("/:/host"), "revoked: {rendered}");
    ok(&server.ssh(&["templates:approve", &app]));
    template(
        repo.path(),
        "swarm",
        "stack.yml.tera",
        &format!("# changed\n{hostile}"),
    );
    commit(repo.path(), "changed stack");
    let push = server.push_as(&mallory, repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    assert!(text(&push).contains("not approved"), "{}", text(&push));
    let rendered = ok(&server.ssh(&["deploy:render", &app, "--target", "swarm"]));
    assert!(
        !rendered.contains("/:/host"),
        "a changed template needs a new approval: {rendered}"
    );
    assert!(!Path::new(&marker).exists());
    ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
}

/// Finding 2 (high). Attack: templates that read the server's environment (`get_env`), recurse
/// without end (a macro calling itself overflows the stack and aborts the whole process), or
/// loop for ever. Even approved, a template renders in a limited child process: each fails the
/// render with one line, and berth keeps serving SSH and the app.
#[test]
fn hostile_templates_fail_the_render_and_berth_keeps_running() {
    let server = TestServer::start_with_env(
        &format!(
            "registry = \"{}\"\nready_timeout = 10\n",
            require_environment()
        ),
        &[("BERTH_TEST_SECRET", "s3cret-value")],
    );
    let app = app_name("sec-render");
    let repo = web_app("still serving");
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let url = live_url(&push);
    let cases = [
        (
            "{{ get_env(name=\"BERTH_TEST_SECRET\", default=\"-\") }}",
            "get_env is not available",
        ),
        (
            "{% macro f(n) %}{{ self::f(n=n+1) }}{% endmacro f %}{{ self::f(n=0) }}",
            "crashed the renderer",
        ),
        (
            "{% for a in range(end=10000) %}{% for b in range(end=10000) %}{% for c in range(end=10000) %}{% endfor %}{% endfor %}{% endfor %}",
            "of CPU",
        ),
        (
            "{% for i in range(end=10000000000) %}{% endfor %}",
            "at most 10000",
        ),
    ];
    for (index, (body, expected)) in cases.iter().enumerate() {
        let text_of_template = if body.contains("macro") {
            format!("{body}\n")
        } else {
            format!("# case {index}\n{body}\n")
        };
        template(
            repo.path(),
            "kubernetes",
            "namespace.yaml.tera",
            &text_of_template,
        );
        commit(repo.path(), &format!("case {index}"));
        let push = server.push(repo.path(), &app, "main");
        assert!(push.status.success(), "{}", text(&push));
        ok(&server.ssh(&["templates:approve", &app]));
        let started = std::time::Instant::now();
        let rendered = server.ssh(&["deploy:render", &app, "--target", "kubernetes"]);
        let message = text(&rendered);
        assert_eq!(rendered.status.code(), Some(1), "case {index}: {message}");
        assert!(message.contains(expected), "case {index}: {message}");
        assert!(!message.contains("s3cret-value"), "{message}");
        assert_eq!(
            message.trim().lines().count(),
            1,
            "one line: {message}"
        );
        assert!(started.elapsed().as_secs() < 15, "case {index} took too long");
        // berth is alive: commands answer and the app serves.
        ok(&server.ssh(&["apps:list"]));
        assert_eq!(
            http_get(&url).as_deref().map(str::trim),
            Some("still serving")
        );
    }
}
