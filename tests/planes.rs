//! The two planes (issue 15): the apps' traffic goes through the data plane, a process apart
//! from the control plane, so the control plane's crashes, restarts and upgrades, and the data
//! plane's own restart, fail no request; a crash at any stage of a push is settled at start-up
//! with the app serving what served before; TERM lets the work under way finish.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

/// Where the app answers: through the router (Host APP.localhost) and at its own port.
struct Endpoints {
    router: String,
    host: String,
    direct: String,
}

fn endpoints(server: &TestServer, app: &str) -> Endpoints {
    let info = json(&server.ssh(&["apps:info", app, "--json"]));
    let direct = info["direct_url"].as_str().expect("direct_url");
    Endpoints {
        router: format!("127.0.0.1:{}", server.http_port),
        host: format!("{app}.localhost"),
        direct: direct
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
    }
}

/// One keep-alive client: requests on one connection until the server says `Connection: close`
/// (then a new one). A request written but not answered is a failure.
fn keep_alive_get(
    stream: &mut Option<BufReader<TcpStream>>,
    address: &str,
    host: &str,
) -> Result<String, String> {
    if stream.is_none() {
        let connection = TcpStream::connect(address).map_err(|e| format!("connect: {e}"))?;
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok();
        *stream = Some(BufReader::new(connection));
    }
    let reader = stream.as_mut().expect("connected");
    write!(reader.get_mut(), "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let (mut length, mut close, mut status) = (0usize, false, String::new());
    loop {
        let mut line = String::new();
        if reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?
            == 0
        {
            *stream = None;
            return Err("closed before an answer".into());
        }
        if status.is_empty() {
            status = line.clone();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("body: {e}"))?;
    if close {
        *stream = None;
    }
    if !status.contains(" 200 ") {
        return Err(format!("status {}", status.trim()));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Requests the app all the while `work` runs, from 4 clients: new connections through the
/// router and to the app's port, and a keep-alive client of each. Gives (answered, failures).
fn load_while(at: &Endpoints, expected: &[&str], work: impl FnOnce()) -> (usize, Vec<String>) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|client| {
                let stop = &stop;
                scope.spawn(move || {
                    let (mut good, mut bad) = (0usize, Vec::new());
                    let address = if client % 2 == 0 {
                        &at.router
                    } else {
                        &at.direct
                    };
                    let mut kept = None;
                    while !stop.load(Ordering::Relaxed) {
                        let answer = if client < 2 {
                            http_request(address, &at.host, "/")
                                .filter(|(status, _)| *status == 200)
                                .map(|(_, body)| body)
                                .ok_or_else(|| "no 200 answer".to_string())
                        } else {
                            keep_alive_get(&mut kept, address, &at.host)
                        };
                        match answer {
                            Ok(body) if expected.contains(&body.as_str()) => good += 1,
                            Ok(body) => bad.push(format!("client {client}: unexpected {body:?}")),
                            Err(error) => bad.push(format!("client {client} ({address}): {error}")),
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    (good, bad)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // A failing assertion in `work` stops the clients too (else the scope waits for ever).
        let worked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        if let Err(panic) = worked {
            std::panic::resume_unwind(panic);
        }
        let (mut good, mut bad) = (0, Vec::new());
        for client in clients {
            let (g, b) = client.join().expect("client");
            good += g;
            bad.extend(b);
        }
        (good, bad)
    })
}

/// Fails the test when any request of the load failed.
fn none_failed(what: &str, good: usize, bad: &[String]) {
    assert!(
        bad.is_empty(),
        "{what}: {} failed of {}: {:?}",
        bad.len(),
        good + bad.len(),
        &bad[..bad.len().min(5)]
    );
}

#[test]
fn traffic_survives_control_plane_crashes_restarts_upgrades_and_a_data_plane_handover() {
    let mut server = TestServer::start();
    let app = app_name("planes");
    let repo = web_app("steady");
    server.push_ok(repo.path(), &app, "main");
    let at = endpoints(&server, &app);
    let data_plane = server.data_plane_pid().expect("a data plane runs");
    // The data plane takes orders from whoever reaches its socket: root's only, like the data
    // dir (a local user or an app's process that could connect would re-route every app).
    assert_eq!(
        file_mode(&server.data_dir().join("run")) & 0o077,
        0,
        "the socket's directory"
    );

    // kill -9 of the control plane, then start again: the data plane never stops serving.
    let (good, bad) = load_while(&at, &["steady\n"], || {
        server.stop_control_plane_hard();
        std::thread::sleep(Duration::from_secs(2));
        server.start_control_plane(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
        std::thread::sleep(Duration::from_secs(1));
    });
    none_failed("kill -9 and start of the control plane", good, &bad);
    assert!(good > 100, "only {good} requests made");
    assert_eq!(
        server.data_plane_pid(),
        Some(data_plane),
        "the same data plane serves"
    );
    ok(&server.ssh(&["apps:list"]));

    // TERM and start (systemctl restart), then an upgrade: a changed binary at another path
    // (as install.sh installs one) starts as the control plane and adopts the data plane.
    let upgraded = server.dir.path().join("berth-upgraded");
    std::fs::copy(env!("CARGO_BIN_EXE_berth"), &upgraded).expect("copy the binary");
    let (good, bad) = load_while(&at, &["steady\n"], || {
        assert!(
            server.terminate().success(),
            "TERM ends the control plane cleanly"
        );
        server.start_control_plane(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
        std::thread::sleep(Duration::from_millis(500));
        server.restart_with(&upgraded, &[]);
        std::thread::sleep(Duration::from_millis(500));
    });
    none_failed(
        "TERM + start and an upgrade of the control plane",
        good,
        &bad,
    );
    assert!(good > 100, "only {good} requests made");

    // The control plane down, the app still deploys afterwards: a push after all of this.
    write_web_app(repo.path(), "next");
    commit(repo.path(), "next");
    let (good, bad) = load_while(&at, &["steady\n", "next\n"], || {
        let pushed = server.push(repo.path(), &app, "main");
        assert!(pushed.status.success(), "{}", text(&pushed));
    });
    none_failed("a push after the restarts", good, &bad);

    // The data plane's own restart: SIGUSR2 hands its sockets to a new process, which serves
    // while the old one drains and exits.
    let (good, bad) = load_while(&at, &["next\n"], || {
        let signalled = std::process::Command::new("kill")
            .args(["-USR2", &data_plane.to_string()])
            .status()
            .expect("kill");
        assert!(signalled.success());
        wait_for("a new data plane", || {
            server.data_plane_pid().filter(|pid| *pid != data_plane)
        });
        wait_for("the old data plane to exit", || {
            (!std::path::Path::new(&format!("/proc/{data_plane}")).exists()).then_some(())
        });
    });
    none_failed("the data plane's handover", good, &bad);
    assert!(good > 100, "only {good} requests made");
    // The new data plane takes calls: a scale and its answer go through it.
    ok(&server.ssh(&["ps:scale", &app, "web=2"]));
    let report = ok(&server.ssh(&["ps:report", &app]));
    assert_eq!(report.matches("serving").count(), 2, "{report}");
}

#[test]
fn a_crash_at_any_stage_of_a_push_is_settled_and_the_app_serves_on() {
    let mut server = TestServer::start();
    let app = app_name("crashy");
    let repo = web_app("v1");
    server.push_ok(repo.path(), &app, "main");
    let at = endpoints(&server, &app);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_berth"));
    let mut served = "v1\n".to_string();
    for (round, stage) in ["build", "registry", "release", "deploy", "switched"]
        .iter()
        .enumerate()
    {
        // The control plane dies (SIGKILL, by itself) at this stage of the next push.
        server.restart_with(binary, &[("BERTH_CRASH_AT", stage)]);
        let next = format!("{stage}-{round}");
        write_web_app(repo.path(), &next);
        commit(repo.path(), &next);
        let before = served.clone();
        let after = format!("{next}\n");
        let (good, bad) = load_while(&at, &[before.as_str(), after.as_str()], || {
            let pushed = server.push(repo.path(), &app, "main");
            assert!(
                !pushed.status.success(),
                "{stage}: the push cannot succeed: {}",
                text(&pushed)
            );
            server.wait_exit();
            server.start_control_plane(binary, &[]);
            // Settled at start-up: not in an operation's state any more.
            wait_for("the app to be settled", || {
                let state = json(&server.ssh(&["apps:info", &app, "--json"]))["state"]
                    .as_str()
                    .map(String::from)?;
                (state == "running").then_some(())
            });
        });
        none_failed(stage, good, &bad);
        // What serves is the release that served before, or the new one if the switch happened.
        let now = http_get_at(&at.router, &at.host, "/").expect("the app answers");
        if *stage == "switched" {
            assert_eq!(
                now, after,
                "the switch had happened: the new release serves"
            );
        } else {
            assert_eq!(
                now, before,
                "{stage}: the release that served before serves"
            );
        }
        served = now;
        let events = ok(&server.ssh(&["events", &app]));
        if *stage != "build" {
            assert!(
                events.contains("interrupted"),
                "{stage}: an event says what was interrupted:\n{events}"
            );
        }
        let releases = json(&server.ssh(&["releases", &app, "--json"]));
        let statuses: Vec<String> = releases
            .as_array()
            .expect("releases")
            .iter()
            .map(|r| r["status"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(
            !statuses
                .iter()
                .any(|s| s == "releasing" || s == "deploying"),
            "{stage}: no release left half-way: {statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| *s == "running").count(),
            1,
            "{stage}: {statuses:?}"
        );
        // No container is left over but the running release's.
        let running = releases
            .as_array()
            .expect("releases")
            .iter()
            .find(|r| r["status"] == "running")
            .and_then(|r| r["number"].as_i64())
            .expect("a running release");
        wait_for("only the running release's containers", || {
            let names = app_containers(&app);
            names
                .iter()
                .all(|name| name.contains(&format!("-v{running}-")))
                .then_some(())
        });
    }
    // And the next push works.
    write_web_app(repo.path(), "after the crashes");
    commit(repo.path(), "after");
    let pushed = server.push(repo.path(), &app, "main");
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert_eq!(
        http_get_at(&at.router, &at.host, "/").as_deref(),
        Some("after the crashes\n")
    );
}

#[test]
fn term_lets_a_push_under_way_finish_and_refuses_what_it_cannot_wait_for() {
    let mut server = TestServer::start_with(&format!(
        "registry = \"{}\"\nready_timeout = 10\nshutdown_timeout = 30\n",
        require_environment()
    ));
    let app = app_name("graceful");
    let repo = web_app("one");
    server.push_ok(repo.path(), &app, "main");
    let at = endpoints(&server, &app);

    // A push whose build takes a few seconds; TERM arrives in the middle of it.
    std::fs::write(
        repo.path().join("Dockerfile"),
        web_dockerfile("RUN sleep 4"),
    )
    .expect("write");
    write_web_app_content(repo.path(), "two");
    commit(repo.path(), "slow two");
    let (good, bad) = load_while(&at, &["one\n", "two\n"], || {
        std::thread::scope(|scope| {
            let push = scope.spawn(|| server.push(repo.path(), &app, "main"));
            std::thread::sleep(Duration::from_millis(1500));
            let pid = server.pid();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(300));
            // No new connection is taken while it stops.
            let refused = server.ssh(&["apps:list"]);
            assert!(
                !refused.status.success(),
                "a command during the stop: {}",
                text(&refused)
            );
            let pushed = push.join().expect("push");
            assert!(
                pushed.status.success(),
                "the push under way finished: {}",
                text(&pushed)
            );
        });
        assert!(server.wait_exit().success());
    });
    none_failed("TERM during a push", good, &bad);
    assert_eq!(
        http_get_at(&at.router, &at.host, "/").as_deref(),
        Some("two\n")
    );

    // With too short a shutdown_timeout the push is failed cleanly: rejected, branch unchanged.
    let config = std::fs::read_to_string(server.config_path()).expect("config");
    std::fs::write(
        server.config_path(),
        config.replace("shutdown_timeout = 30", "shutdown_timeout = 1"),
    )
    .expect("config");
    server.start_control_plane(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    std::fs::write(
        repo.path().join("Dockerfile"),
        web_dockerfile("RUN sleep 8"),
    )
    .expect("write");
    write_web_app_content(repo.path(), "three");
    commit(repo.path(), "slow three");
    std::thread::scope(|scope| {
        let push = scope.spawn(|| server.push(repo.path(), &app, "main"));
        std::thread::sleep(Duration::from_millis(1500));
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &server.pid().to_string()])
            .status();
        let pushed = push.join().expect("push");
        assert!(
            !pushed.status.success(),
            "the push could not finish: {}",
            text(&pushed)
        );
    });
    server.wait_exit();
    server.start_control_plane(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    let remote = server.git(repo.path(), &["ls-remote", &server.url(&app), "main"]);
    let two = git(repo.path(), &["rev-parse", "HEAD~1"]);
    assert!(
        remote.starts_with(two.trim()),
        "the branch stays at two: {remote}"
    );
    assert_eq!(
        http_get_at(&at.router, &at.host, "/").as_deref(),
        Some("two\n")
    );
    // And the next push works.
    let pushed = server.push(repo.path(), &app, "main");
    assert!(pushed.status.success(), "{}", text(&pushed));
}

/// The app's state as `apps:info` gives it.
fn state(server: &TestServer, app: &str) -> Option<String> {
    json(&server.ssh(&["apps:info", app, "--json"]))["state"]
        .as_str()
        .map(String::from)
}

#[test]
fn a_crash_in_scale_rollback_or_promote_is_settled_and_the_app_serves_on() {
    let mut server = TestServer::start();
    let app = app_name("crashcmd");
    let repo = web_app("one");
    server.push_ok(repo.path(), &app, "main");
    let at = endpoints(&server, &app);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_berth"));
    let settled = |server: &TestServer| {
        wait_for("the app to be settled", || {
            (state(server, &app).as_deref() == Some("running")).then_some(())
        })
    };

    // ps:scale web=3 cut short once the new instances serve: back to the formation on record.
    server.restart_with(binary, &[("BERTH_CRASH_AT", "scale")]);
    let (good, bad) = load_while(&at, &["one\n"], || {
        let scaled = server.ssh(&["ps:scale", &app, "web=3"]);
        assert!(!scaled.status.success(), "{}", text(&scaled));
        server.wait_exit();
        server.start_control_plane(binary, &[]);
        settled(&server);
        wait_for("one web container, as on record", || {
            (running_containers(&app).len() == 1).then_some(())
        });
    });
    none_failed("scale", good, &bad);
    let events = ok(&server.ssh(&["events", &app]));
    assert!(events.contains("ps:scale was cut short"), "{events}");
    ok(&server.ssh(&["ps:scale", &app, "web=2"]));
    let report = ok(&server.ssh(&["ps:report", &app]));
    assert_eq!(report.matches("serving").count(), 2, "{report}");

    // releases:rollback cut short: v2 serves on; a rollback afterwards works.
    write_web_app(repo.path(), "two");
    commit(repo.path(), "two");
    server.push_ok(repo.path(), &app, "main");
    server.restart_with(binary, &[("BERTH_CRASH_AT", "rollback")]);
    let (good, bad) = load_while(&at, &["two\n"], || {
        let rolled = server.ssh(&["releases:rollback", &app]);
        assert!(!rolled.status.success(), "{}", text(&rolled));
        server.wait_exit();
        server.start_control_plane(binary, &[]);
        settled(&server);
    });
    none_failed("rollback", good, &bad);
    let events = ok(&server.ssh(&["events", &app]));
    assert!(
        events.contains("was rolling_back when berth stopped"),
        "{events}"
    );
    ok(&server.ssh(&["releases:rollback", &app]));
    assert_eq!(
        http_get_at(&at.router, &at.host, "/").as_deref(),
        Some("one\n")
    );

    // canary:promote cut short after the data plane switched, before it was recorded: the
    // canary is as it was before the promote (the record wins), and promoting again works.
    ok(&server.ssh(&["canary:start", &app, "--weight", "50"]));
    write_web_app(repo.path(), "three");
    commit(repo.path(), "three");
    server.push_ok(repo.path(), &app, "main");
    server.restart_with(binary, &[("BERTH_CRASH_AT", "promote")]);
    let (good, bad) = load_while(&at, &["one\n", "three\n"], || {
        let promoted = server.ssh(&["canary:promote", &app]);
        assert!(!promoted.status.success(), "{}", text(&promoted));
        server.wait_exit();
        server.start_control_plane(binary, &[]);
        settled(&server);
        wait_for("the canary's share again", || {
            let report = ok(&server.ssh(&["ps:report", &app]));
            (report.contains("canary") && report.contains("serving")).then_some(())
        });
    });
    none_failed("promote", good, &bad);
    let promoted = ok(&server.ssh(&["canary:promote", &app]));
    assert!(promoted.contains("is live at"), "{promoted}");
    for _ in 0..10 {
        assert_eq!(
            http_get_at(&at.router, &at.host, "/").as_deref(),
            Some("three\n")
        );
    }
}

#[test]
fn a_killed_data_plane_is_started_again_from_its_saved_table() {
    // No systemd here: the control plane keeps the data plane alive (under systemd, the unit's
    // Restart=always does). A crash of the data plane is the one event that interrupts traffic.
    let server = TestServer::start();
    let app = app_name("planecrash");
    let repo = web_app("kept");
    server.push_ok(repo.path(), &app, "main");
    let at = endpoints(&server, &app);
    let old = server.data_plane_pid().expect("a data plane runs");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let new = wait_for("a new data plane", || {
        server.data_plane_pid().filter(|pid| *pid != old)
    });
    assert_ne!(new, old);
    // It serves what the last one was told, at the same addresses, without a redeploy.
    wait_for("the app through the router again", || {
        (http_get_at(&at.router, &at.host, "/").as_deref() == Some("kept\n")).then_some(())
    });
    assert_eq!(
        http_get_at(&at.direct, &at.host, "/").as_deref(),
        Some("kept\n")
    );
}
