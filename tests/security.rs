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

/// The one-off swarm services of the app (`berth-APP-run-N`) that exist now.
fn one_off_services(app: &str) -> Vec<String> {
    let services = Command::new("docker")
        .args(["service", "ls", "--format", "{{.Name}}"])
        .output()
        .expect("docker service ls");
    String::from_utf8_lossy(&services.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("berth-{app}-run-")))
        .map(String::from)
        .collect()
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
    assert!(
        text(&moved).contains("only admins may move"),
        "{}",
        text(&moved)
    );

    // Nor choose the nodes that run it (pinning it beside the manager's secrets, or off the
    // nodes the admin set aside for it): placement is the admins' too, and nothing is stored.
    let pinned = server.ssh_as(
        &mallory,
        &["apps:set", &app, "placement=node.role==manager"],
    );
    assert_eq!(pinned.status.code(), Some(1), "{}", text(&pinned));
    assert!(
        text(&pinned).contains("only admins may set an app's placement"),
        "{}",
        text(&pinned)
    );
    let info = ok(&server.ssh(&["apps:info", &app, "--json"]));
    assert!(!info.contains("node.role"), "{info}");
    // Nor pass itself off as another instance (DYNO is berth's, per task).
    let dyno = server.ssh_as(&mallory, &["config:set", &app, "DYNO=web.1"]);
    assert!(
        !dyno.status.success() && text(&dyno).contains("DYNO is set by berth"),
        "{}",
        text(&dyno)
    );

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
        assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
        assert!(
            started.elapsed().as_secs() < 15,
            "case {index} took too long"
        );
        // berth is alive: commands answer and the app serves.
        ok(&server.ssh(&["apps:list"]));
        assert_eq!(
            http_get(&url).as_deref().map(str::trim),
            Some("still serving")
        );
    }
}

/// A loopback HTTP receiver answering 200 to everything: (port, number of requests seen).
fn receiver() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut buffer = [0u8; 65536];
            let _ = stream.read(&mut buffer);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, seen)
}

/// Finding 5 (medium). Attack: a member adds a webhook of its own app pointing at the host's
/// loopback (the registry, metrics, any internal HTTP service): berth POSTs there, and the ping's
/// error tells what answered, so a loop over ports is a scanner. Now a member's webhook to a
/// loopback, link-local or private address is refused with one line before anything connects,
/// whatever the spelling (name, IPv6, IPv4-mapped); credentials in URLs are refused. Control: the
/// same receiver is accepted from an admin.
#[test]
fn member_webhooks_cannot_reach_the_host_network() {
    let server = TestServer::start();
    let mallory = member(&server, "mallory");
    let app = app_name("sec-hook");
    ok(&server.ssh_as(&mallory, &["apps:create", &app]));
    let (port, seen) = receiver();
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://127.0.0.2:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://0.0.0.0:{port}/hook"),
    ] {
        let added = server.ssh_as(&mallory, &["webhooks:add", &url, "--app", &app]);
        let message = text(&added);
        assert_eq!(added.status.code(), Some(1), "{url}: {message}");
        assert!(message.contains("refused:"), "{url}: {message}");
        assert!(!message.contains("HTTP"), "no status leaks: {message}");
    }
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "berth connected to the member's internal target"
    );
    let listed = ok(&server.ssh_as(&mallory, &["webhooks:list", "--json"]));
    assert_eq!(listed.trim(), "[]", "nothing stored: {listed}");
    // Finding 33: credentials in the URL would be listed and sent as the Host header.
    let with_userinfo = server.ssh(&[
        "webhooks:add",
        &format!("http://user:pass@127.0.0.1:{port}/hook"),
    ]);
    assert!(
        text(&with_userinfo).contains("credentials"),
        "{}",
        text(&with_userinfo)
    );
    // Control: an admin's receiver on loopback is trusted and answers the ping.
    ok(&server.ssh(&[
        "webhooks:add",
        &format!("http://127.0.0.1:{port}/hook"),
        "--app",
        &app,
    ]));
    assert!(seen.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

/// Finding 4 (high, conditional) and 5. Attack: root's own SSH key is berth's admin key (the
/// README's install example) and root has berth in its known_hosts. A member runs
/// `git:sync m1 ssh://berth@127.0.0.1:PORT/victim`: git ran ssh as root, which used root's
/// `~/.ssh` (OpenSSH ignores `$HOME`) and fetched another tenant's repo as admin. Now members
/// cannot sync from loopback at all, and even an admin's sync has no identity but its own (no
/// root keys, agent, config or known_hosts), so the fetch is denied. Control: the same fetch with
/// the old ssh command succeeds, so root's identity really was usable.
#[test]
fn git_sync_has_no_ambient_identity_and_members_cannot_reach_loopback() {
    let server = TestServer::start();
    let mallory = member(&server, "mallory");
    let victim = app_name("sec-victim");
    let repo = web_app("victim secret code");
    server.push_ok(repo.path(), &victim, "main");
    let own = app_name("sec-sync");
    ok(&server.ssh_as(&mallory, &["apps:create", &own]));

    // Root's identity: its default key (made for this test when there is none) is an admin key
    // of berth, and berth's host key is in root's known_hosts.
    let home = std::path::PathBuf::from("/root/.ssh");
    std::fs::create_dir_all(&home).expect("/root/.ssh");
    let root_key = home.join("id_ed25519");
    let made_key = !root_key.exists();
    if made_key {
        keygen(&root_key);
    } else if !root_key.with_extension("pub").exists() {
        let public = Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&root_key)
            .output()
            .expect("ssh-keygen -y");
        std::fs::write(root_key.with_extension("pub"), public.stdout).expect("write pub");
    }
    server.add_key("rootkey", "admin", &root_key);
    let scanned = Command::new("ssh-keyscan")
        .args(["-p", &server.port.to_string(), "127.0.0.1"])
        .output()
        .expect("ssh-keyscan");
    let known_line = String::from_utf8_lossy(&scanned.stdout).to_string();
    assert!(known_line.contains("ssh-ed25519"), "{known_line}");
    let known_hosts = home.join("known_hosts");
    let before = std::fs::read_to_string(&known_hosts).unwrap_or_default();
    std::fs::write(&known_hosts, format!("{before}{known_line}")).expect("known_hosts");
    let url = format!("ssh://berth@127.0.0.1:{}/{victim}", server.port);

    let outcome = std::panic::catch_unwind(|| {
        // Control: what berth used to run reads the victim's repo with root's identity.
        let control = Command::new("git")
            .args(["ls-remote", &url])
            .env("HOME", "/nonexistent")
            .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
            .output()
            .expect("git ls-remote");
        assert!(
            control.status.success(),
            "control: root's identity reaches berth: {}",
            String::from_utf8_lossy(&control.stderr)
        );

        // The member is refused before anything connects.
        let refused = server.ssh_as(&mallory, &["git:sync", &own, &url]);
        assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
        assert!(text(&refused).contains("refused:"), "{}", text(&refused));
        for other in [
            format!("http://127.0.0.1:{}/v2/", server.http_port),
            format!("git://localhost:{}/x", server.port),
            format!("berth@127.0.0.1:{victim}"),
        ] {
            let refused = server.ssh_as(&mallory, &["git:sync", &own, &other]);
            assert!(
                text(&refused).contains("refused:"),
                "{other}: {}",
                text(&refused)
            );
        }

        // An admin may sync from loopback, but the fetch has no identity of root's.
        let denied = server.ssh(&["git:sync", &own, &url]);
        let message = text(&denied);
        assert_eq!(denied.status.code(), Some(1), "{message}");
        assert!(
            message.contains("cannot fetch") && !message.contains("is live"),
            "{message}"
        );
        let releases = ok(&server.ssh(&["releases", &own, "--json"]));
        assert_eq!(releases.trim(), "[]", "nothing deployed: {releases}");
    });
    std::fs::write(&known_hosts, before).expect("restore known_hosts");
    if made_key {
        let _ = std::fs::remove_file(&root_key);
        let _ = std::fs::remove_file(root_key.with_extension("pub"));
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A line of /proc/PID/status in KiB (`VmHWM`: the peak resident set).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("field")
}

/// Finding 6 (medium). Attack: a build that prints one endless line (`yes | tr -d '\n'`) or a
/// flood of lines: berth held every byte until a newline came, and queued every line for a
/// client that may never read, so its memory grew with the member's output until the OOM
/// killer took the whole server. Now lines are cut, the queue is bounded and a push shows at
/// most 8 MiB: 60 MB of build output leave berth's peak memory nearly where it was, and the
/// pusher is told what was cut.
#[test]
fn endless_build_output_keeps_berth_memory_bounded() {
    let server = TestServer::start();
    let app = app_name("sec-output");
    let repo = web_app("flood");
    // Never from the engine's build cache: the output must really flow.
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    write(
        repo.path(),
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nRUN echo {unique} && yes | head -c 60000000 | tr -d '\\n'\nRUN yes | head -c 4000000\nCOPY www /www\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"
        ),
    );
    commit(repo.path(), "flood");
    let before = status_kib(server.pid(), "VmHWM");
    let push = server.push(repo.path(), &app, "main");
    let transcript = text(&push);
    assert!(
        push.status.success(),
        "{}",
        &transcript[transcript.len().saturating_sub(2000)..]
    );
    let after = status_kib(server.pid(), "VmHWM");
    assert!(
        after < before + 40 * 1024,
        "berth's peak memory grew from {before} KiB to {after} KiB"
    );
    assert!(transcript.contains("[line cut at 4096 bytes]"));
    assert!(
        transcript.len() < 12 << 20,
        "{} bytes shown",
        transcript.len()
    );
    assert!(transcript.contains("is live at"));
}

/// Findings 7 and 29. Attacks: a pushed app.json of megabytes (read whole, several times over),
/// a push larger than the server takes, and a release command that never ends (it held the
/// app's lock for ever). Each is refused or stopped with one clear line, and the previous
/// release keeps serving.
#[test]
fn oversized_pushes_and_endless_release_phases_are_refused() {
    let registry = require_environment();
    let server = TestServer::start_with(&format!(
        "registry = \"{registry}\"\nready_timeout = 10\nphase_timeout = 3\nmax_push_size = 4000000\n"
    ));
    let app = app_name("sec-sizes");
    let repo = web_app("first");
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let url = live_url(&push);

    let serving = || http_get(&url).as_deref().map(str::trim).map(String::from);
    // app.json over 1 MiB.
    write(
        repo.path(),
        "app.json",
        &format!("{{\"description\": \"{}\"}}", "x".repeat(1_200_000)),
    );
    commit(repo.path(), "huge app.json");
    let refused = server.push(repo.path(), &app, "main");
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("app.json is 1171 KiB: berth reads at most 1024 KiB"),
        "{}",
        text(&refused)
    );
    assert_eq!(serving().as_deref(), Some("first"));
    git(repo.path(), &["reset", "-q", "--hard", "HEAD~1"]);

    // A push over max_push_size (random bytes do not compress).
    let mut noise = vec![0u8; 6_000_000];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("urandom"),
        &mut noise,
    )
    .expect("noise");
    std::fs::write(repo.path().join("noise.bin"), noise).expect("noise");
    commit(repo.path(), "noise");
    let refused = server.push(repo.path(), &app, "main");
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("exceeds maximum allowed size"),
        "{}",
        text(&refused)
    );
    assert_eq!(serving().as_deref(), Some("first"));
    git(repo.path(), &["reset", "-q", "--hard", "HEAD~1"]);

    // A release command that never ends is stopped after phase_timeout.
    write(
        repo.path(),
        "Procfile",
        "release: sleep 600\nweb: sh -c 'exec httpd -f -p $PORT -h /www'\n",
    );
    write_web_app(repo.path(), "second");
    commit(repo.path(), "endless release");
    let started = std::time::Instant::now();
    let stopped = server.push(repo.path(), &app, "main");
    assert!(!stopped.status.success());
    assert!(
        text(&stopped).contains("did not finish within 3 s (phase_timeout)"),
        "{}",
        text(&stopped)
    );
    assert!(started.elapsed().as_secs() < 60);
    assert_eq!(serving().as_deref(), Some("first"));
    let leftovers = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name=berth-{app}-run-")])
        .output()
        .expect("docker ps");
    assert!(
        String::from_utf8_lossy(&leftovers.stdout).trim().is_empty(),
        "the release container is gone"
    );
    // The lock was released: a command that needs it answers.
    ok(&server.ssh(&["config:set", &app, "A=1"]));
}

/// Finding 3 (high). Attack: a member's Dockerfile builds on the engine every app shares, so
/// `FROM <registry>/victim:v1` or `COPY --from=<registry>/victim:v1 / /loot` gave it another
/// tenant's code and baked-in files, and `ADD http://127.0.0.1:5055/v2/_catalog` made the engine
/// fetch from the host's own network into the member's image; a `FROM` could also hide where
/// berth's parser took another escape character than the engine (a blank line or a byte order
/// mark before `# escape=`` `). Now these are refused before the build with one line, and
/// nothing is deployed. Control: an admin's push of the same
/// Dockerfile builds (the image really was reachable).
#[test]
fn member_builds_cannot_use_other_apps_images_or_the_host_network() {
    let registry = require_environment();
    let server = TestServer::start();
    let mallory = member(&server, "mallory");
    let victim = app_name("sec-victim3");
    let victim_repo = web_app("victim's code");
    server.push_ok(victim_repo.path(), &victim, "main");
    let attacker = app_name("sec-thief");
    let repo = web_app("thief");
    // The victim's image and its untagged build layer (its code without berth's label), named
    // by id and by id prefix, as the engine resolves them too.
    let inspect = |format: &str, what: &str| {
        let output = Command::new("docker")
            .args(["image", "inspect", "-f", format, what])
            .output()
            .expect("docker image inspect");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    let victim_id = inspect("{{.Id}}", &format!("{registry}/{victim}:v1"));
    let layer_id = inspect("{{.Parent}}", &victim_id);
    assert!(victim_id.starts_with("sha256:"), "{victim_id}");
    let mut by_id = vec![
        format!("FROM {victim_id}\n"),
        format!(
            "FROM {}\n",
            &victim_id["sha256:".len().."sha256:".len() + 12]
        ),
    ];
    if layer_id.starts_with("sha256:") {
        by_id.push(format!(
            "FROM {}\n",
            &layer_id["sha256:".len().."sha256:".len() + 12]
        ));
    }
    let attacks = [
        format!("FROM {registry}/{victim}:v1\n"),
        format!("FROM berth/{victim}:v1\n"),
        format!("ARG FROM_IMAGE={registry}/{victim}:v1\nFROM $FROM_IMAGE\n"),
        format!("FROM {BASE_IMAGE}\nCOPY --from={registry}/{victim}:v1 /www /loot\n"),
        format!("FROM {BASE_IMAGE}\nADD http://{registry}/v2/_catalog /catalog\n"),
        format!(
            "FROM {BASE_IMAGE}\nADD http://localhost:{}/metrics /m\n",
            server.admin_port
        ),
        // A `FROM` hidden in what berth's parser would read as a continued line, where the
        // engine reads the escape character otherwise (a blank line ends the directives; a
        // byte order mark does not).
        format!("\n# escape=`\nFROM {BASE_IMAGE}\nLABEL a=b`\nFROM {registry}/{victim}:v1\n"),
        format!(
            "{}# escape=`\nFROM {BASE_IMAGE}\nLABEL a=b\\\nFROM {registry}/{victim}:v1\n",
            '\u{feff}'
        ),
    ];
    for dockerfile in attacks.iter().chain(&by_id) {
        write(
            repo.path(),
            "Dockerfile",
            &format!("{dockerfile}CMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"),
        );
        commit(repo.path(), "attack");
        let push = server.push_as(&mallory, repo.path(), &attacker, "main");
        let transcript = text(&push);
        assert!(!push.status.success(), "{dockerfile}: {transcript}");
        assert!(
            transcript.contains("not this app's image")
                || transcript.contains("refused:")
                || transcript.contains("another app's image")
                || transcript.contains("by its id"),
            "{dockerfile}: {transcript}"
        );
        assert!(
            !transcript.contains("Step 1/"),
            "nothing was built: {transcript}"
        );
    }
    let releases = ok(&server.ssh(&["releases", &attacker, "--json"]));
    assert_eq!(releases.trim(), "[]", "{releases}");
    // Control: the admin's push of the first attack's Dockerfile builds from the victim's image.
    let control = app_name("sec-control3");
    write(
        repo.path(),
        "Dockerfile",
        &format!(
            "{}CMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n",
            attacks[0]
        ),
    );
    commit(repo.path(), "control");
    let push = server.push(repo.path(), &control, "main");
    assert!(push.status.success(), "{}", text(&push));
    assert_eq!(
        http_get(&live_url(&push)).as_deref().map(str::trim),
        Some("victim's code")
    );
}

/// Finding 9 (medium). Attack: a key is removed, but its holder keeps an OpenSSH ControlMaster
/// connection open and goes on running commands through it (as admin, if it was one), and a
/// push authorised before a revoke still deploys. Now every exec looks the key up again, the
/// removal closes the key's connections at once, and the pre-receive step checks access again.
#[test]
fn removed_keys_lose_their_open_connections() {
    let server = TestServer::start();
    let eve = server.dir.path().join("eve");
    keygen(&eve);
    server.add_key("eve", "admin", &eve);
    let control = server.dir.path().join("cm.sock");
    let ssh_base = format!(
        "{} -o ControlPath={} -p {} berth@127.0.0.1",
        server.ssh_command(&eve),
        control.display(),
        server.port
    );
    // A master connection that stays up in the background.
    let master = Command::new("sh")
        .arg("-c")
        .arg(format!("{ssh_base} -M -N -o ControlPersist=no"))
        .spawn()
        .expect("ssh master");
    let mut master = master;
    wait_for("the control master", || control.exists().then_some(()));
    let through_master = |args: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("{ssh_base} -o ControlMaster=no {args}"))
            .output()
            .expect("ssh")
    };
    // Control: the multiplexed connection runs admin commands.
    assert!(
        through_master("keys:list").status.success(),
        "{}",
        text(&through_master("keys:list"))
    );
    ok(&server.ssh(&["keys:remove", "eve"]));
    // The master is closed by the server.
    let ended = wait_for("the master connection to end", || {
        master.try_wait().ok().flatten()
    });
    let _ = ended;
    let after = through_master("keys:list");
    assert!(!after.status.success(), "{}", text(&after));
    assert!(
        !String::from_utf8_lossy(&after.stdout).contains("eve"),
        "a removed key ran a command: {}",
        text(&after)
    );
}

/// Finding 16 (low/medium). Attack: a local non-root user reads config values, webhook secrets
/// and repos from a data dir, DB or backup snapshot created with the default umask. Now the
/// data dir is 0700 and the DB files 0600 whatever the umask berth started with, and the access
/// log is 0600.
#[test]
fn the_data_dir_and_db_are_private_whatever_the_umask() {
    let server = TestServer::start();
    let data = server.data_dir();
    assert_eq!(file_mode(&data), 0o700);
    assert_eq!(file_mode(&data.join("berth.db")), 0o600);
    // SQLite makes the WAL file when a connection opens it; berth's pool may open its first
    // one a moment after the server answers (seen under CI load).
    let wal = data.join("berth.db-wal");
    wait_for("the database's WAL file", || wal.exists().then_some(()));
    assert_eq!(file_mode(&wal), 0o600);
    let access_log = data.join("logs").join("access.log");
    if access_log.exists() {
        assert_eq!(file_mode(&access_log), 0o600);
    }
}

/// Runs `script` with `sh -c` in a one-off container of `app` (`ssh berth@HOST run`). (The
/// base image's busybox wget crashes with `-T`: bound it with `busybox timeout`.)
fn run_in(server: &TestServer, app: &str, script: &str) -> String {
    let output = server.ssh(&["run", app, "sh", "-c", &format!("'{script}'")]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The address of the app's first web container on the app's own network.
fn container_address(app: &str) -> String {
    let name = running_containers(app)
        .into_iter()
        .find(|n| n.contains("-web-"))
        .expect("a web container");
    let output = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            &name,
        ])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("an address")
        .to_string()
}

/// Finding 10 (medium). Attack: every app's containers shared the `berth` network, so a
/// member's `run` shell reached any other tenant's containers on every port
/// (`nc victim-db 5432`), by name or by address. Now each app has a network of its own; a link
/// joins the dependent to its dependency's network only. Control: a linked app reaches the
/// dependency by its name, so the victim was reachable for whoever is meant to reach it.
#[test]
fn apps_do_not_share_a_network() {
    let server = TestServer::start();
    let victim = app_name("net-victim");
    let intruder = app_name("net-intruder");
    let friend = app_name("net-friend");
    for (app, page) in [
        (&victim, "victim's secret"),
        (&intruder, "intruder"),
        (&friend, "friend"),
    ] {
        let repo = web_app(page);
        let push = server.push(repo.path(), app, "main");
        assert!(push.status.success(), "{}", text(&push));
    }
    ok(&server.ssh(&["apps:link", &friend, &victim, "--as", "DEP"]));
    let port = run_in(&server, &friend, "echo $DEP_PORT");
    let port = port.trim();
    assert!(port.parse::<u16>().is_ok(), "the link's port: {port:?}");
    let address = container_address(&victim);
    // Control: the linked app reaches the victim by its name.
    let linked = run_in(
        &server,
        &friend,
        &format!("busybox timeout 10 wget -q -O - http://{victim}:{port}/"),
    );
    assert!(linked.contains("victim's secret"), "{linked}");
    // The intruder reaches it neither by name nor by address.
    for target in [victim.as_str(), address.as_str()] {
        let seen = run_in(
            &server,
            &intruder,
            &format!("busybox timeout 10 wget -q -O - http://{target}:{port}/ || echo unreachable"),
        );
        assert!(
            !seen.contains("victim's secret") && seen.contains("unreachable"),
            "{target}: {seen}"
        );
    }
}

/// Finding 12 (medium/low). Attack: volume engine names were `berth-APP-NAME`, and both parts
/// may hold `-`: app `X` mounting `shop-data` got `berth-X-shop-data`, the volume of app
/// `X-shop`'s `data`, with its data, and destroying `X` deleted it. Now volumes are named by the
/// app's never-reused uid; destroying one app never removes another's volume.
#[test]
fn volume_names_cannot_be_squatted() {
    let server = TestServer::start();
    let alice = member(&server, "alice");
    let mallory = member(&server, "mallory");
    let prefix = app_name("vol");
    let victim = format!("{prefix}-shop");
    ok(&server.ssh_as(&alice, &["apps:create", &victim]));
    ok(&server.ssh_as(&alice, &["storage:mount", &victim, "data:/data"]));
    ok(&server.ssh_as(&mallory, &["apps:create", &prefix]));
    ok(&server.ssh_as(&mallory, &["storage:mount", &prefix, "shop-data:/data"]));
    let source = |key: &Path, app: &str| {
        json(&server.ssh_as(key, &["storage:list", app, "--json"]))[0]["source"]
            .as_str()
            .expect("source")
            .to_string()
    };
    let (theirs, ours) = (source(&alice, &victim), source(&mallory, &prefix));
    assert_ne!(theirs, ours, "two apps share one volume");
    let exists = |name: &str| {
        Command::new("docker")
            .args(["volume", "inspect", name])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(exists(&theirs) && exists(&ours));
    ok(&server.ssh_as(&mallory, &["apps:destroy", &prefix, "--confirm", &prefix]));
    assert!(
        exists(&theirs),
        "the victim's volume went with the intruder's app"
    );
    assert!(!exists(&ours));
    ok(&server.ssh_as(&alice, &["apps:destroy", &victim, "--confirm", &victim]));
}

/// Finding 9 (medium). Attack: a grantee added a webhook to the app and linked an app of their
/// own to it; after `apps:revoke` the webhook kept sending them the app's events and the link
/// kept the owner from destroying the app. Now what a key set up acts only while that key may
/// still operate the app: the webhook goes quiet, the link no longer holds, `apps:info` says so.
/// Control: before the revoke the webhook delivers and the link holds.
#[test]
fn revoked_grantees_lose_their_webhooks_and_links() {
    // Members' receivers may be on loopback here, so that the hook can deliver at all.
    let registry = require_environment();
    let server = TestServer::start_with(&format!(
        "registry = \"{registry}\"\nallow_private_destinations = true\n"
    ));
    let alice = member(&server, "alice");
    let bob = member(&server, "bob");
    let app = app_name("revoke-v");
    let bobs = app_name("revoke-b");
    for (key, name) in [(&alice, &app), (&bob, &bobs)] {
        let repo = web_app(name);
        let push = server.push_as(key, repo.path(), name, "main");
        assert!(push.status.success(), "{}", text(&push));
    }
    ok(&server.ssh_as(&alice, &["apps:grant", &app, "bob"]));
    let (port, seen) = receiver();
    ok(&server.ssh_as(
        &bob,
        &[
            "webhooks:add",
            &format!("http://127.0.0.1:{port}/hook"),
            "--app",
            &app,
        ],
    ));
    ok(&server.ssh_as(&bob, &["apps:link", &bobs, &app]));
    // Control: an event reaches bob's receiver; the link holds the app.
    let before = seen.load(std::sync::atomic::Ordering::SeqCst);
    ok(&server.ssh_as(&alice, &["config:set", &app, "A=1"]));
    wait_for("bob's webhook to deliver", || {
        (seen.load(std::sync::atomic::Ordering::SeqCst) > before).then_some(())
    });
    let held = server.ssh_as(&alice, &["apps:destroy", &app, "--confirm", &app]);
    assert!(text(&held).contains("is linked from"), "{}", text(&held));

    ok(&server.ssh_as(&alice, &["apps:revoke", &app, "bob"]));
    let info = json(&server.ssh_as(&alice, &["apps:info", &app, "--json"]));
    let disabled = info["disabled"].to_string();
    assert!(
        disabled.contains("webhook") && disabled.contains("bob"),
        "{info}"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after_revoke = seen.load(std::sync::atomic::Ordering::SeqCst);
    ok(&server.ssh_as(&alice, &["config:set", &app, "A=2"]));
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        after_revoke,
        "an ex-grantee's webhook still delivered"
    );
    ok(&server.ssh_as(&alice, &["apps:destroy", &app, "--confirm", &app]));
}

/// Findings 26 and 27. Attack: ownership was by key name, so a new key given a removed key's
/// name inherited its apps; refusals told "not found" from "not allowed", enumerating apps.
/// Now a name that still owns apps (or webhooks, sources, links) cannot be given to another
/// key, and a member gets the same line for another's app as for a missing one.
#[test]
fn key_names_and_refusals_give_nothing_away() {
    let server = TestServer::start();
    let carol = member(&server, "carol");
    let app = app_name("names");
    ok(&server.ssh_as(&carol, &["apps:create", &app]));
    ok(&server.ssh(&["keys:remove", "carol"]));
    let heir = server.dir.path().join("heir");
    keygen(&heir);
    let reused = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["keys", "add", "carol", "--role", "member", "--key-file"])
        .arg(heir.with_extension("pub"))
        .arg("--config")
        .arg(server.config_path())
        .output()
        .expect("berth keys add");
    assert!(!reused.status.success(), "{}", text(&reused));
    assert!(
        text(&reused).contains("belonged to a removed key"),
        "{}",
        text(&reused)
    );
    // Control: the same key under a fresh name is fine.
    server.add_key("dave", "member", &heir);
    let theirs = text(&server.ssh_as(&heir, &["apps:info", &app]));
    let missing = text(&server.ssh_as(&heir, &["apps:info", "no-such-app-here"]));
    assert_eq!(
        theirs.replace(&app, "APP"),
        missing.replace("no-such-app-here", "APP"),
        "another's app and a missing one must look the same"
    );
    assert!(!theirs.contains("carol"), "{theirs}");
}

/// Findings 30 and 31. Attack: a failed deploy put the container's last log lines in the event
/// (and in every webhook payload): apps that print secrets when they crash leaked them; and the
/// audit trail was deleted with the app. Now events never carry log lines (the pusher still sees
/// them), and a destroyed app's events stay, for admins, under its name.
#[test]
fn events_carry_no_log_lines_and_outlive_their_app() {
    let server = TestServer::start();
    let app = app_name("audit");
    let repo = web_app("fine");
    server.push_ok(repo.path(), &app, "main");
    write(
        repo.path(),
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"echo DATABASE_PASSWORD=hunter2; exit 3\"]\n"
        ),
    );
    commit(repo.path(), "crashes");
    let push = server.push(repo.path(), &app, "main");
    assert!(!push.status.success());
    // Control: the pusher sees the log line, so it was there to leak.
    assert!(text(&push).contains("hunter2"), "{}", text(&push));
    let events = ok(&server.ssh(&["events", &app, "--json"]));
    assert!(events.contains("failed"), "{events}");
    assert!(!events.contains("hunter2"), "{events}");
    ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
    let kept = json(&server.ssh(&["events", &app, "--json"]));
    let kinds: Vec<&str> = kept
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"deploy") && kinds.contains(&"app.destroyed"),
        "{kept}"
    );
    // Members never read a destroyed app's trail.
    let mallory = member(&server, "mallory");
    assert!(!server.ssh_as(&mallory, &["events", &app]).status.success());
}

/// Finding 11 (medium). Attack: a member claimed any unclaimed name (`www.company.com`, the
/// server's own name, `127.0.0.1`) and got it routed and certified. Now a member's domain waits,
/// unrouted, until an admin approves it; IP-like names and the server's own name are refused.
#[test]
fn custom_domains_wait_for_an_admin() {
    let server = TestServer::start();
    let mallory = member(&server, "mallory");
    let app = app_name("domain");
    let repo = web_app("claimed");
    assert!(
        server
            .push_as(&mallory, repo.path(), &app, "main")
            .status
            .success()
    );
    for bad in ["127.0.0.1", "10.1.2.3", "example.123"] {
        let refused = server.ssh_as(&mallory, &["domains:add", &app, bad]);
        assert!(!refused.status.success(), "{bad}: {}", text(&refused));
    }
    let claimed = ok(&server.ssh_as(&mallory, &["domains:add", &app, "www.company.test"]));
    assert!(claimed.contains("waits for an admin"), "{claimed}");
    let router = format!("127.0.0.1:{}", server.http_port);
    assert_eq!(
        http_get_at(&router, "www.company.test", "/"),
        None,
        "a pending domain was routed"
    );
    let listed = json(&server.ssh_as(&mallory, &["domains:list", &app, "--json"]));
    assert_eq!(listed["pending"][0], "www.company.test", "{listed}");
    let denied = server.ssh_as(&mallory, &["domains:approve", &app, "www.company.test"]);
    assert!(!denied.status.success());
    // Control: an admin's approval routes it.
    ok(&server.ssh(&["domains:approve", &app, "www.company.test"]));
    assert_eq!(
        http_get_at(&router, "www.company.test", "/").as_deref(),
        Some("claimed\n")
    );
}

/// Finding 15 (low/medium). Attack: an absolute-form request names app V in its target but
/// carries `Host: evil.example`; the router picked V by the target and passed the forged Host
/// on (V builds links, redirects and tenant lookups from Host). Now V sees the authority it was
/// routed by.
#[test]
fn the_app_sees_the_host_it_was_routed_by() {
    let server = TestServer::start();
    let app = app_name("hosthdr");
    let repo = web_app("unused");
    std::fs::create_dir_all(repo.path().join("www/cgi-bin")).expect("mkdir");
    write(
        repo.path(),
        "www/cgi-bin/host",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' \"$HTTP_HOST\"\n",
    );
    write(
        repo.path(),
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nCOPY www /www\nRUN chmod 755 /www/cgi-bin/host\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"
        ),
    );
    commit(repo.path(), "echo host");
    server.push_ok(repo.path(), &app, "main");
    let authority = format!("{app}.localhost:{}", server.http_port);
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", server.http_port)).expect("connect");
    use std::io::{Read, Write};
    write!(
        stream,
        "GET http://{authority}/cgi-bin/host HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.contains(&authority), "{answer}");
    assert!(!body.contains("evil.example"), "{answer}");
}

/// Finding 17 (low/medium). Attack: the registry took anonymous pushes, so any local user could
/// overwrite `127.0.0.1:5055/victim:v1`; berth pulled it back by tag whenever the local copy was
/// gone (after a restore, a prune), running the attacker's image with the victim's secrets. Now
/// the registry needs credentials (root-only), and a release is pulled by the digest recorded
/// when it was pushed: even a tag moved by someone holding the credentials never runs.
#[test]
fn the_registry_needs_auth_and_releases_are_pulled_by_digest() {
    let registry = require_environment();
    let anonymous = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{registry}/v2/_catalog"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
    let server = TestServer::start();
    let app = app_name("digest");
    let repo = web_app("the real release");
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let url = live_url(&push);
    let releases = json(&server.ssh(&["releases", &app, "--json"]));
    assert!(
        releases[0]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{releases}"
    );
    // Someone who can write the registry moves the tag to an image of their own.
    let image = format!("{registry}/{app}:v1");
    let forged = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(forged.path().join("www")).expect("mkdir");
    write(forged.path(), "www/index.html", "forged\n");
    write(
        forged.path(),
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nCOPY www /www\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"
        ),
    );
    let docker_config = tempfile::tempdir().expect("dir");
    let credentials =
        std::fs::read_to_string(std::env::var("BERTH_REGISTRY_CREDENTIALS").expect("credentials"))
            .expect("read credentials");
    let (user, password) = credentials.trim().split_once(':').expect("user:password");
    let docker = |args: &[&str], input: Option<&str>| {
        let mut command = Command::new("docker");
        command
            .arg("--config")
            .arg(docker_config.path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("docker");
        if let Some(input) = input {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write");
        }
        let output = child.wait_with_output().expect("docker");
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            text(&output)
        );
    };
    docker(
        &["login", "-u", user, "--password-stdin", &registry],
        Some(password),
    );
    docker(
        &[
            "build",
            "-q",
            "-t",
            &image,
            forged.path().to_str().expect("path"),
        ],
        None,
    );
    docker(&["push", &image], None);
    // The local copy is gone (a prune, a restored server): berth must pull it back.
    docker(&["rmi", &image], None);
    ok(&server.ssh(&["ps:scale", &app, "web=2"]));
    for _ in 0..6 {
        assert_eq!(
            http_get(&url).as_deref(),
            Some("the real release\n"),
            "a moved tag ran"
        );
    }
}

/// Findings 8 and 28. Attack: unauthenticated clients held router connections and idle
/// connections to an app's own TCP port without bound (slow headers refreshed, `nc` left
/// open), until berth ran out of descriptors; one member created apps without bound. Now the
/// router and each app port take at most `max_connections_per_address` connections from one
/// address (more are closed at once), idle app-port connections end after `tcp_idle_timeout`,
/// and a member owns at most `member_max_apps` apps. Control: connections within the cap are
/// served.
#[test]
fn one_client_or_member_cannot_hold_everything() {
    use std::io::{Read, Write};
    let registry = require_environment();
    let server = TestServer::start_with(&format!(
        "registry = \"{registry}\"\nmax_connections_per_address = 3\ntcp_idle_timeout = 2\nmember_max_apps = 1\n"
    ));
    let app = app_name("caps");
    let repo = web_app("capped");
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let info = json(&server.ssh(&["apps:info", &app, "--json"]));
    let app_port: u16 = info["direct_url"]
        .as_str()
        .and_then(|u| u.rsplit(':').next())
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("the app's port");
    let closed_at_once = |port: u16| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .expect("timeout");
        // Closed: an end of stream or a reset; kept: the read times out.
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
        }
    };
    for port in [server.http_port, app_port] {
        let held: Vec<std::net::TcpStream> = (0..3)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(closed_at_once(port), "a 4th connection to {port} was kept");
        drop(held);
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Control: within the cap the app answers.
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(stream, "GET / HTTP/1.0\r\nHost: {app}.localhost\r\n\r\n").expect("write");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.contains("capped"), "{port}: {answer}");
    }
    // An idle connection to the app's port ends after tcp_idle_timeout.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", app_port)).expect("connect");
    idle.set_read_timeout(Some(std::time::Duration::from_secs(6)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    let ended = idle.read(&mut byte);
    assert!(matches!(ended, Ok(0)), "{ended:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // A member's second app is refused.
    let mallory = member(&server, "mallory");
    ok(&server.ssh_as(&mallory, &["apps:create", &app_name("caps-one")]));
    let second = server.ssh_as(&mallory, &["apps:create", &app_name("caps-two")]);
    assert!(
        !second.status.success() && text(&second).contains("member_max_apps"),
        "{}",
        text(&second)
    );
}

/// Finding 3 (high), the build's network. Attack: a member's `RUN` step fetched from the host's
/// own services (anything bound to `0.0.0.0`, reached at the bridge's gateway), the host's LAN
/// and cloud metadata (169.254.169.254), straight into its image. Now members' builds run on
/// `berth-builds`, whose firewall lets them reach the public internet and the host's DNS
/// servers only. Control: the same Dockerfile pushed by an admin (on the engine's default
/// bridge) does reach the host's service.
#[test]
fn member_builds_cannot_reach_the_host() {
    let registry = require_environment();
    let server =
        TestServer::start_with(&format!("registry = \"{registry}\"\nready_timeout = 10\n"));
    let mallory = member(&server, "mallory");
    // A service of the host's, on every address, serving a token.
    let token = format!("host-secret-{}", std::process::id());
    let served = tempfile::tempdir().expect("dir");
    std::fs::write(served.path().join("token"), &token).expect("write");
    let port = free_port();
    let mut service = Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "0.0.0.0"])
        .current_dir(served.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 http.server");
    wait_for("the host's service", || {
        http_get(&format!("http://127.0.0.1:{port}/token")).filter(|t| *t == token)
    });
    // The host's address on the engine's default bridge (docker0).
    let gateway = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .expect("ip addr");
    let gateway = String::from_utf8_lossy(&gateway.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string();
    assert!(gateway.parse::<std::net::Ipv4Addr>().is_ok(), "{gateway:?}");
    let repo = web_app("builder");
    write(
        repo.path(),
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nRUN if busybox timeout 5 busybox wget -q -O - http://{gateway}:{port}/token | busybox grep -q {token}; then echo REACHED\"\"-THE-HOST; exit 1; fi\nCOPY www /www\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"
        ),
    );
    commit(repo.path(), "probe");
    // The control first: its failing step leaves no build cache for the member's to reuse.
    let control = server.push(repo.path(), &app_name("probe-a"), "main");
    let member_push = server.push_as(&mallory, repo.path(), &app_name("probe-m"), "main");
    let _ = service.kill();
    let _ = service.wait();
    assert!(
        member_push.status.success() && !text(&member_push).contains("REACHED-THE-HOST"),
        "a member's build reached the host: {}",
        text(&member_push)
    );
    assert!(
        !control.status.success() && text(&control).contains("REACHED-THE-HOST"),
        "control: the admin's build should reach the host's service: {}",
        text(&control)
    );
}

/// Findings 23, 24 and 25. Attacks: `--memory "256m\n"` was stored raw and broke the rendered
/// unit; a host directory mounted by an admin was later swapped for a symlink to `/etc`, which
/// the engine resolved at the next start; the systemd unit's `EnvironmentFile=` handed config
/// vars (`LD_PRELOAD=…`) to the root `docker` CLI. Now the memory is stored normalised, every
/// deploy checks a host directory still is its own real path, and the unit has no
/// `EnvironmentFile=` (config reaches the container only, `--env-file`). Control: the mount
/// works until the swap.
#[test]
fn inputs_are_normalised_and_host_paths_checked_again() {
    let server = TestServer::start();
    let app = app_name("recheck");
    let repo = web_app("recheck");
    server.push_ok(repo.path(), &app, "main");
    ok(&server.ssh(&["resources:set", &app, "web", "--memory", "'64M\n'"]));
    ok(&server.ssh(&["config:set", &app, "LD_PRELOAD=/tmp/evil.so"]));
    let units = ok(&server.ssh(&["deploy:render", &app, "--target", "systemd"]));
    assert!(units.contains("--memory 64m"), "{units}");
    assert!(!units.contains("EnvironmentFile"), "{units}");
    assert!(units.contains("--env-file"), "{units}");
    // A host directory, mounted, then swapped for a symlink to /etc.
    let parent = tempfile::tempdir().expect("dir");
    let dir = parent.path().join("files");
    std::fs::create_dir(&dir).expect("mkdir");
    ok(&server.ssh(&[
        "storage:mount",
        &app,
        &format!("{}:/srv/files", dir.display()),
    ]));
    std::fs::remove_dir(&dir).expect("rmdir");
    std::os::unix::fs::symlink("/etc", &dir).expect("symlink");
    let deploy = server.ssh(&["config:set", &app, "B=2"]);
    assert!(!deploy.status.success(), "{}", text(&deploy));
    assert!(
        text(&deploy).contains("no longer a directory of its own"),
        "{}",
        text(&deploy)
    );
}

/// Finding 3's shared build cache. Attack: a member builds `RUN <fetch something>` first, so
/// the engine caches the layer it made (with whatever the member's own DNS or server answered
/// then); another app whose Dockerfile has the identical line gets the member's layer from the
/// cache, never running the step itself. Now every stage declares `BERTH_CACHE_SCOPE` and each
/// app's build passes its uid, so the cache is per app. Control: the member's own second build
/// does reuse its layer.
#[test]
fn apps_do_not_share_the_build_cache() {
    let server = TestServer::start();
    let mallory = member(&server, "mallory");
    let repo = web_app("cache");
    write(
        repo.path(),
        "Dockerfile",
        &web_dockerfile("RUN mkdir -p /www && cat /proc/sys/kernel/random/uuid > /www/stamp"),
    );
    commit(repo.path(), "stamped");
    let (poisoner, victim) = (app_name("cache-m"), app_name("cache-v"));
    let first = server.push_as(&mallory, repo.path(), &poisoner, "main");
    assert!(first.status.success(), "{}", text(&first));
    let stamp = |pushed: &std::process::Output| {
        let url = live_url(pushed);
        http_get(&format!("{}/stamp", url.trim_end_matches('/')))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let poisoned = stamp(&first);
    assert_eq!(poisoned.len(), 36, "{poisoned:?}");
    let pushed = server.push(repo.path(), &victim, "main");
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert_ne!(
        stamp(&pushed),
        poisoned,
        "the victim's build reused the member's cached layer: {}",
        text(&pushed)
    );
    // Control: the member's own rebuild (a change after the RUN step) takes its cached layer.
    write(repo.path(), "www/index.html", "cache two\n");
    commit(repo.path(), "two");
    let again = server.push_as(&mallory, repo.path(), &poisoner, "main");
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("Using cache"), "{}", text(&again));
    assert_eq!(stamp(&again), poisoned);
}

/// Finding 16's backups. Attacks: a local user reads the DB snapshot that `berth backup` left
/// world-readable beside the output file (in `/tmp`, under a name it could guess and create
/// first), or the modes recorded in the archive; a crafted archive restores a setuid or
/// world-writable file into the data dir. Now, whatever the umask, the backup and the snapshot
/// in it are 0600 and no temp dir is left; a restore masks every mode (no setuid, nothing for
/// group or others).
#[test]
fn backups_are_private_and_restores_mask_modes() {
    let mut server = TestServer::start();
    use std::os::unix::fs::PermissionsExt;
    let app = app_name("saved-modes");
    let repo = web_app("saved");
    server.push_ok(repo.path(), &app, "main");
    // A world-writable, sticky directory like /tmp.
    let shared = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod");
    let file = shared.path().join("backup.tar");
    let backed = server.cli_with_umask("000", &["backup", file.to_str().expect("path")]);
    assert!(backed.status.success(), "{}", text(&backed));
    assert_eq!(file_mode(&file), 0o600);
    let left: Vec<_> = std::fs::read_dir(shared.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("backup.tar")],
        "{left:?}"
    );
    // The snapshot's mode as recorded; then a crafted entry: setuid and world-writable.
    let script = r#"
import sys, tarfile, io
path = sys.argv[1]
with tarfile.open(path) as t:
    print(oct(t.getmember("berth.db").mode & 0o7777))
with tarfile.open(path, "a") as t:
    for name, mode in (("repos/evil-setuid", 0o4777), ("repos/evil-open", 0o666)):
        info = tarfile.TarInfo(name)
        info.size, info.mode = 2, mode
        t.addfile(info, io.BytesIO(b"x\n"))
"#;
    let crafted = Command::new("python3")
        .args(["-c", script, file.to_str().expect("path")])
        .output()
        .expect("python3");
    assert!(crafted.status.success(), "{}", text(&crafted));
    assert_eq!(text(&crafted).trim(), "0o600", "the snapshot as archived");
    server.stop();
    remove_app_containers(&app);
    std::fs::remove_dir_all(server.data_dir()).expect("wipe data dir");
    let restored = server.cli_with_umask("000", &["restore", file.to_str().expect("path")]);
    assert!(restored.status.success(), "{}", text(&restored));
    let data = server.data_dir();
    assert_eq!(file_mode(&data.join("repos/evil-setuid")), 0o700);
    assert_eq!(file_mode(&data.join("repos/evil-open")), 0o600);
    assert_eq!(
        file_mode(&data.join("berth.db")) & 0o077,
        0,
        "the restored DB"
    );
    server.restart();
    assert_eq!(file_mode(&data) & 0o077, 0, "the data dir");
    ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
}

/// Finding 21 (low). Attack: a webhook receiver answers its ping (and every event) with an
/// endless body; berth read it whole until its 10 s timeout, so a few such webhooks held
/// gigabytes of memory. Now berth reads at most 64 KiB of an answer and drops the connection:
/// the receiver's writes fail soon after (what the kernel's socket buffers hold aside), and the
/// ping still counts its status.
#[test]
fn webhook_answers_are_read_only_so_far() {
    use std::io::{Read, Write};
    let server = TestServer::start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let mut request = [0u8; 65536];
        let _ = stream.read(&mut request);
        let started = std::time::Instant::now();
        let mut sent = 0u64;
        let chunk = vec![b'x'; 65536];
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n");
        while started.elapsed() < std::time::Duration::from_secs(30) {
            match stream.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(_) => break,
            }
        }
        let _ = tx.send((sent, started.elapsed()));
    });
    let added = server.ssh(&["webhooks:add", &format!("http://127.0.0.1:{port}/hook")]);
    assert!(
        added.status.success(),
        "the ping's 200 counts: {}",
        text(&added)
    );
    let (sent, took) = rx
        .recv_timeout(std::time::Duration::from_secs(40))
        .expect("the receiver ends");
    assert!(
        took < std::time::Duration::from_secs(8),
        "berth kept reading for {took:?} ({sent} bytes)"
    );
    assert!(sent < 32 << 20, "berth read {sent} bytes of the answer");
}

/// Finding 32 (low). Attack: a push whose objects sit in git's quarantine directory longer than
/// retention's 10 minutes (a slow upload, a long build, a wait for the lock behind another
/// deploy) had that directory removed by the prune at the end of a deploy, so the push failed
/// after deploying (git could not move its objects). Now no quarantine of an app is touched
/// while a push to it is in progress. Here the quarantine of a push is made to look an hour old
/// during its build; the deploy's own prune must leave it, and the ref lands.
#[test]
fn retention_leaves_the_quarantine_of_a_push_in_progress() {
    let server = TestServer::start();
    let app = app_name("slow-push");
    let repo = web_app("slow");
    write(repo.path(), "Dockerfile", &web_dockerfile("RUN sleep 12"));
    let commit_id = commit(repo.path(), "slow");
    let objects = server.data_dir().join(format!("repos/{app}.git/objects"));
    let pushing = std::thread::scope(|scope| {
        let push = scope.spawn(|| server.push(repo.path(), &app, "main"));
        let quarantine = wait_for("the push's quarantine directory", || {
            std::fs::read_dir(&objects).ok()?.flatten().find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("tmp_objdir-incoming-").then(|| e.path())
            })
        });
        // Once the upload is written (the build, 12 s, has begun), the directory is made old.
        std::thread::sleep(std::time::Duration::from_secs(4));
        make_old(&quarantine);
        push.join().expect("push thread")
    });
    assert!(pushing.status.success(), "{}", text(&pushing));
    let refs = server.git(repo.path(), &["ls-remote", &server.url(&app), "main"]);
    assert!(
        refs.contains(&commit_id),
        "the pushed ref did not land: {refs:?}"
    );
}

/// Finding 28's builds and shells. Attack: one member starts builds of many apps at once, or
/// many `run` shells, and takes every core and all memory of the shared host. Now a member key
/// has at most `member_max_builds` builds and `member_max_runs` one-off containers at once; the
/// one over the cap is refused with one line. Control: once the first ends, the same push and
/// the same `run` work.
#[test]
fn a_member_has_only_so_many_builds_and_shells_at_once() {
    let server = TestServer::start_with("member_max_builds = 1\nmember_max_runs = 1\n");
    let mallory = member(&server, "mallory");
    let (fast, slow, other) = (
        app_name("cap-fast"),
        app_name("cap-slow"),
        app_name("cap-other"),
    );
    let repo = web_app("capped builds");
    let first = server.push_as(&mallory, repo.path(), &fast, "main");
    assert!(first.status.success(), "{}", text(&first));
    let slow_repo = web_app("slow build");
    write(
        slow_repo.path(),
        "Dockerfile",
        &web_dockerfile("RUN sleep 10"),
    );
    commit(slow_repo.path(), "slow");
    std::thread::scope(|scope| {
        let slow_push = scope.spawn(|| server.push_as(&mallory, slow_repo.path(), &slow, "main"));
        wait_for("the slow build", || {
            let info = server.ssh_as(&mallory, &["apps:info", &slow, "--json"]);
            (info.status.success() && json(&info)["state"] == "building").then_some(())
        });
        let refused = server.push_as(&mallory, repo.path(), &other, "main");
        assert!(
            !refused.status.success() && text(&refused).contains("member_max_builds"),
            "{}",
            text(&refused)
        );
        let slow_push = slow_push.join().expect("push thread");
        assert!(slow_push.status.success(), "{}", text(&slow_push));
    });
    let again = server.push_as(&mallory, repo.path(), &other, "main");
    assert!(again.status.success(), "control: {}", text(&again));
    std::thread::scope(|scope| {
        let before = running_containers(&fast).len();
        let shell = scope.spawn(|| server.ssh_as(&mallory, &["run", &fast, "sleep", "8"]));
        wait_for("the first run container", || {
            (running_containers(&fast).len() > before).then_some(())
        });
        let refused = server.ssh_as(&mallory, &["run", &fast, "true"]);
        assert!(
            !refused.status.success() && text(&refused).contains("member_max_runs"),
            "{}",
            text(&refused)
        );
        assert!(shell.join().expect("run thread").status.success());
    });
    ok(&server.ssh_as(&mallory, &["run", &fast, "true"]));
}

/// `run:task` (swarm). Attack: a member starts one-off swarm tasks beyond `member_max_runs`
/// (each a service the swarm places on any node, holding its CPU and memory), or mixes them
/// with `run` shells to double the cap; or starts one with another tenant's app, its config
/// and volumes. Now `run:task` takes the same per-key slot as `run` (refused with one line
/// naming member_max_runs, nothing started) and the same access check (refused, nothing
/// started); a config value with the swarm's templates reaches the stack and the task as set.
/// Control: once the first task ends, the same `run:task` works.
#[test]
fn a_member_has_only_so_many_swarm_tasks_at_once_and_only_of_its_apps() {
    require_swarm();
    let server = TestServer::start_with("member_max_runs = 1\n");
    let mallory = member(&server, "mallory");
    let (own, other) = (app_name("sec-task"), app_name("sec-task-other"));
    let repo = web_app("tasks");
    let push = server.push_as(&mallory, repo.path(), &own, "main");
    assert!(push.status.success(), "{}", text(&push));
    ok(&server.ssh(&["apps:set", &own, "target=swarm"]));
    let push = server.push(repo.path(), &other, "main");
    assert!(push.status.success(), "{}", text(&push));
    ok(&server.ssh(&["apps:set", &other, "target=swarm"]));
    let one_offs = |app: &str| one_off_services(app).len();
    let foreign = server.ssh_as(&mallory, &["run:task", &other, "env"]);
    assert!(!foreign.status.success(), "{}", text(&foreign));
    assert!(
        !text(&foreign).contains("PORT="),
        "another tenant's config: {}",
        text(&foreign)
    );
    assert_eq!(one_offs(&other), 0, "a task of the other app was started");
    std::thread::scope(|scope| {
        let first = scope.spawn(|| server.ssh_as(&mallory, &["run:task", &own, "sleep", "8"]));
        wait_for("the first one-off task", || {
            (one_offs(&own) == 1).then_some(())
        });
        for command in ["run:task", "run"] {
            let refused = server.ssh_as(&mallory, &[command, &own, "true"]);
            assert!(
                !refused.status.success() && text(&refused).contains("member_max_runs"),
                "{command}: {}",
                text(&refused)
            );
        }
        assert_eq!(one_offs(&own), 1, "a second one-off task was started");
        let first = first.join().expect("run:task thread");
        assert!(first.status.success(), "{}", text(&first));
    });
    // Its config reaches the swarm as set: the swarm's templates (`{{.Node.Hostname}}`, which
    // would read the node's name, and a lone `{{`, which made the swarm refuse the app's stack)
    // stay literal, in the stack and in a one-off task.
    let set = server.ssh_as(
        &mallory,
        &["config:set", &own, "'LEAK={{.Node.Hostname}} {{'"],
    );
    assert!(set.status.success(), "{}", text(&set));
    let leak = server.ssh_as(
        &mallory,
        &["run:task", &own, "sh", "-c", "'echo \"$LEAK\"'"],
    );
    assert_eq!(
        String::from_utf8_lossy(&leak.stdout),
        "{{.Node.Hostname}} {{\n",
        "{}",
        text(&leak)
    );
    let again = server.ssh_as(&mallory, &["run:task", &own, "echo", "control"]);
    assert!(
        again.status.success() && String::from_utf8_lossy(&again.stdout).contains("control"),
        "control: {}",
        text(&again)
    );
    for app in [&own, &other] {
        ok(&server.ssh(&["apps:destroy", app, "--confirm", app]));
    }
}

/// `run:task` output (swarm). Attack: a member's one-off task writes without end (here 100 MB
/// in lines of 8000 bytes): berth read the task's whole log into its memory once the task had
/// ended, before sending any of it, so its memory grew with the member's output until the OOM
/// killer took the whole server (and nothing was seen while the task ran). Now the log is
/// followed as the task writes it, through a short queue paced by the client's reading: the
/// first line arrives while the task still runs, every byte arrives once, and berth's peak
/// memory stays nearly where it was.
#[test]
fn a_members_one_off_task_streams_its_output_and_berth_holds_none_of_it() {
    use std::io::{BufRead, Read};
    require_swarm();
    let server = TestServer::start();
    let mallory = member(&server, "mallory");
    let app = app_name("sec-flood");
    let repo = web_app("flood");
    write(
        repo.path(),
        "www/flood.sh",
        "echo first\nsleep 3\nhead -c 100000000 /dev/zero | tr '\\0' x | fold -w 8000\necho\necho last\n",
    );
    commit(repo.path(), "flood");
    let push = server.push_as(&mallory, repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    ok(&server.ssh(&["apps:set", &app, "target=swarm"]));
    let before = status_kib(server.pid(), "VmHWM");
    let mut child = server.ssh_spawn_as(&mallory, &["run:task", &app, "sh", "/www/flood.sh"]);
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read");
    assert_eq!(first, "first\n");
    // The task still runs: its output came as it was written, not after its end.
    let service = one_off_services(&app).pop().expect("the one-off service");
    let state = Command::new("docker")
        .args(["service", "ps", &service, "--format", "{{.CurrentState}}"])
        .output()
        .expect("docker service ps");
    let state = String::from_utf8_lossy(&state.stdout).to_string();
    assert!(state.starts_with("Running"), "the task had ended: {state}");
    // Every byte, once; the end of the output last.
    let (mut xs, mut total, mut tail) = (0usize, 0usize, Vec::new());
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = stdout.read(&mut buffer).expect("read");
        if n == 0 {
            break;
        }
        xs += buffer[..n].iter().filter(|b| **b == b'x').count();
        total += n;
        tail.extend_from_slice(&buffer[..n]);
        let keep = tail.len().saturating_sub(16);
        tail.drain(..keep);
    }
    assert!(child.wait().expect("ssh").success());
    assert_eq!(xs, 100_000_000, "{total} bytes in all");
    assert!(
        tail.ends_with(b"x\n\nlast\n") || tail.ends_with(b"x\nlast\n"),
        "{tail:?}"
    );
    let after = status_kib(server.pid(), "VmHWM");
    assert!(
        after < before + 40 * 1024,
        "berth's peak memory grew from {before} KiB to {after} KiB"
    );
    // A client that leaves takes its task with it: nothing keeps running for no one.
    let mut child = server.ssh_spawn_as(&mallory, &["run:task", &app, "sh", "/www/flood.sh"]);
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read");
    assert_eq!(first, "first\n");
    child.kill().expect("kill ssh");
    let _ = child.wait();
    wait_for("the one-off service removed", || {
        one_off_services(&app).is_empty().then_some(())
    });
    ok(&server.ssh(&["apps:destroy", &app, "--confirm", &app]));
}

/// Finding 19 (low). Attack: `apps:destroy X` waits for X's lock behind a deploy; meanwhile X is
/// renamed to Y (and a new X may be created): the destroy, acting on what it looked up before
/// waiting, removed the app that is now Y (or the new X's repo and containers). Now locks are
/// by app id and a command reads its app again once it holds the lock: the destroy stops with
/// one line and Y keeps serving. (The rename, queued first, runs first: the lock is fair.)
#[test]
fn a_command_that_waited_acts_on_the_app_as_it_is_now() {
    let server = TestServer::start();
    let (old, new) = (app_name("waited"), app_name("waited-new"));
    let repo = web_app("waited");
    write(repo.path(), "Dockerfile", &web_dockerfile("RUN sleep 8"));
    commit(repo.path(), "slow");
    let (pushed, renamed, destroyed) = std::thread::scope(|scope| {
        let push = scope.spawn(|| server.push(repo.path(), &old, "main"));
        wait_for("the slow build", || {
            let info = server.ssh(&["apps:info", &old, "--json"]);
            (info.status.success() && json(&info)["state"] == "building").then_some(())
        });
        let rename = scope.spawn(|| server.ssh(&["apps:rename", &old, &new]));
        std::thread::sleep(std::time::Duration::from_secs(1));
        let destroy = scope.spawn(|| server.ssh(&["apps:destroy", &old, "--confirm", &old]));
        (
            push.join().expect("push"),
            rename.join().expect("rename"),
            destroy.join().expect("destroy"),
        )
    });
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert!(renamed.status.success(), "{}", text(&renamed));
    assert!(
        !destroyed.status.success() && text(&destroyed).contains("renamed"),
        "{}",
        text(&destroyed)
    );
    let info = json(&server.ssh(&["apps:info", &new, "--json"]));
    assert_eq!(info["state"], "running", "{info}");
    let url = info["url"].as_str().unwrap_or_default().to_string();
    wait_for("the renamed app to serve", || {
        http_get(&url).filter(|b| b.contains("waited"))
    });
    ok(&server.ssh(&["apps:destroy", &new, "--confirm", &new]));
}

#[test]
fn a_local_user_cannot_reach_the_data_planes_control_socket() {
    // Attack (issue 15): the data plane does what its control socket is told (re-point any app's
    // traffic, drop routes, stop). A local user (or anything not root on the host) that could
    // connect to it would take every app's traffic. The socket lives in <data_dir>/run (0700).
    let server = TestServer::start();
    let socket = server.data_dir().join("run/plane.sock");
    assert!(
        socket.exists(),
        "the data plane listens at {}",
        socket.display()
    );
    assert_eq!(file_mode(&server.data_dir().join("run")) & 0o077, 0);
    // curl connects to the socket (exit 7 when it cannot); anything past the connect (an empty
    // or bad answer: other exit codes) means it reached the data plane.
    let tried = Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            "curl",
            "-s",
            "-m",
            "5",
            "--unix-socket",
        ])
        .arg(&socket)
        .arg("http://plane/")
        .output()
        .expect("runuser");
    assert_eq!(
        tried.status.code(),
        Some(7),
        "a user other than root reached the control socket: {}",
        text(&tried)
    );
    // The same call as root does reach it (so the refusal above is the permissions, not curl).
    let as_root = Command::new("curl")
        .args(["-s", "-m", "5", "--unix-socket"])
        .arg(&socket)
        .arg("http://plane/")
        .output()
        .expect("curl");
    assert_ne!(
        as_root.status.code(),
        Some(7),
        "root connects: {}",
        text(&as_root)
    );
}

/// A keep-alive app whose answers attack the router: `/poison` sends a second, unasked-for
/// answer right after the first; `/twolengths` two different Content-Lengths; `/bighead` a
/// header that never ends; `/badchunk` a chunked body that is not; `/` the real page.
const HOSTILE_ANSWERS_APP: &str = r#"import os, socket, threading, time

def serve(c):
    data = b""
    try:
        while True:
            while b"\r\n\r\n" not in data:
                x = c.recv(4096)
                if not x:
                    return
                data += x
            head, data = data.split(b"\r\n\r\n", 1)
            path = head.split(b" ")[1]
            if path == b"/poison":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                          b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")
            elif path == b"/twolengths":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello")
            elif path == b"/bighead":
                c.sendall(b"HTTP/1.1 200 OK\r\nX-Junk: " + b"a" * (2 << 20))
                time.sleep(30)
                return
            elif path == b"/badchunk":
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n")
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
    except OSError:
        pass
    finally:
        c.close()

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("", int(os.environ["PORT"])))
server.listen(64)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// Row 35, the router's HTTP/1.1 path against a member's app. Attack: the app answers a
/// request with a second, unasked-for answer behind it (to have it served as the answer to the
/// next request on the connection, its own client's or, through a shared connection, another
/// client's), frames an answer two ways, sends a header that never ends (to fill the data
/// plane's memory), or a broken chunked body (to wedge or crash the router). Now: an app
/// connection with bytes nobody asked for is dropped, and each client connection has its own;
/// two lengths are a 502; a head past 64 KiB is a 502; a broken chunk ends that client's
/// connection only. The data plane serves on, the same process. Control: `/` answers "real".
#[test]
fn a_hostile_apps_answers_reach_no_other_request_and_cannot_take_the_router_down() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let server = TestServer::start_with(&format!(
        "registry = \"{}\"\nrequest_timeout = 10\n",
        require_environment()
    ));
    let app = app_name("hostile-answers");
    let repo = python_app(HOSTILE_ANSWERS_APP);
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let plane = server.data_plane_pid().expect("the data plane");
    let router = format!("127.0.0.1:{}", server.http_port);
    let host = format!("{app}.localhost");
    let connect = || {
        let stream = std::net::TcpStream::connect(&router).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        stream
    };
    // One HTTP/1.1 request on `stream`: (status, body) of a Content-Length answer.
    let get = |stream: &mut std::net::TcpStream, path: &str| -> (String, String) {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("write");
        let head = read_head(stream);
        let length = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| l.strip_prefix("content-length: ")?.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).expect("body");
        let status = head.split_whitespace().nth(1).unwrap_or("").to_string();
        (status, String::from_utf8_lossy(&body).into_owned())
    };

    // A smuggled answer: served to nobody.
    let mut first = connect();
    assert_eq!(get(&mut first, "/poison"), ("200".into(), "hello".into()));
    assert_eq!(get(&mut first, "/"), ("200".into(), "real".into()));
    let mut other = connect();
    assert_eq!(get(&mut other, "/"), ("200".into(), "real".into()));

    // Two lengths: refused, not passed on with the client left to guess.
    assert_eq!(get(&mut connect(), "/twolengths").0, "502");

    // A header that never ends: 502 long before the app stops sending or request_timeout.
    let started = Instant::now();
    assert_eq!(get(&mut connect(), "/bighead").0, "502");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A broken chunked body ends that client's connection, nothing else.
    let mut broken = connect();
    write!(broken, "GET /badchunk HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("write");
    let mut rest = Vec::new();
    let _ = broken.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("hello"),
        "{rest:?}"
    );

    // The router serves on, the same process.
    assert_eq!(get(&mut connect(), "/"), ("200".into(), "real".into()));
    assert_eq!(server.data_plane_pid(), Some(plane));
}

#[test]
fn a_members_image_labels_cannot_take_its_containers_out_of_berths_hands() {
    // Attack: a member's Dockerfile labels the image as if its containers were a systemd
    // unit's or a swarm task's (`berth.unit`, `com.docker.swarm.service.name`). Container
    // labels start from the image's, so without care the docker target would take the app's
    // own containers for another target's: never stopped, scaled, retired or destroyed, left
    // running on the host for good.
    let server = TestServer::start();
    let mallory = member(&server, "mallory");
    let app = app_name("labels");
    let repo = web_app("labelled");
    write(
        repo.path(),
        "Dockerfile",
        &web_dockerfile(&format!(
            "LABEL berth.unit=berth-{app}.v1-web-1.service com.docker.swarm.service.name=berth-{app}_web"
        )),
    );
    commit(repo.path(), "labels");
    let push = server.push_as(&mallory, repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    assert_eq!(http_get(&live_url(&push)).as_deref(), Some("labelled\n"));
    let report = json(&server.ssh_as(&mallory, &["ps:report", &app, "--json"]));
    let row = &report.as_array().expect("rows")[0];
    assert!(
        row.get("unit").is_none() && row.get("swarm_service").is_none(),
        "the image's labels passed for berth's: {report}"
    );
    // The docker target still has them: scaled, stopped, destroyed.
    ok(&server.ssh_as(&mallory, &["ps:scale", &app, "web=2"]));
    assert_eq!(running_containers(&app).len(), 2);
    ok(&server.ssh_as(&mallory, &["ps:stop", &app]));
    assert!(
        running_containers(&app).is_empty(),
        "ps:stop left containers running: {:?}",
        running_containers(&app)
    );
    ok(&server.ssh_as(&mallory, &["ps:start", &app]));
    ok(&server.ssh_as(&mallory, &["apps:destroy", &app, "--confirm", &app]));
    assert!(
        running_containers(&app).is_empty(),
        "apps:destroy left containers running"
    );
}
