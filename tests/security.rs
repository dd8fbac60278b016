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
    assert!(server.push(repo.path(), &victim, "main").status.success());
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
/// fetch from the host's own network into the member's image. Now these are refused before the
/// build with one line, and nothing is deployed. Control: an admin's push of the same
/// Dockerfile builds (the image really was reachable).
#[test]
fn member_builds_cannot_use_other_apps_images_or_the_host_network() {
    let registry = require_environment();
    let server = TestServer::start();
    let mallory = member(&server, "mallory");
    let victim = app_name("sec-victim3");
    let victim_repo = web_app("victim's code");
    assert!(
        server
            .push(victim_repo.path(), &victim, "main")
            .status
            .success()
    );
    let attacker = app_name("sec-thief");
    let repo = web_app("thief");
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
    ];
    for dockerfile in &attacks {
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
            transcript.contains("not this app's image") || transcript.contains("refused:"),
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
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let data = server.data_dir();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("berth.db")), 0o600);
    assert_eq!(mode(&data.join("berth.db-wal")), 0o600);
    let access_log = data.join("logs").join("access.log");
    if access_log.exists() {
        assert_eq!(mode(&access_log), 0o600);
    }
}
