//! install.sh on a fresh systemd host: a Debian 12 container with systemd as PID 1 and nothing
//! else (no Docker, no git, no berth; `berth-test/debian-systemd:bookworm`, made by
//! tests/base_images.sh). The project is copied in with the binary built here (the host has no
//! Rust toolchain, as most servers), the README's install command runs there, and the checks
//! are a user's: the services active and enabled, a `git push` from outside (real git and
//! OpenSSH) goes live, `ssh berth@HOST apps:list` answers, the service comes back after
//! `systemctl restart berth` and after a crash, a second run changes nothing, and an upgrade
//! restarts only what must restart, with no request failing meanwhile.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::hosts::*;
use common::*;

#[test]
fn install_sh_on_a_fresh_systemd_debian_runs_berth_as_services() {
    let host = Host::boot(&format!("berth-systemd-install-{}", std::process::id()));
    // Nothing of what berth needs is there.
    assert!(
        !host
            .sh("command -v docker || command -v git")
            .status
            .success(),
        "the host is not fresh"
    );
    let keys = tempfile::tempdir().expect("dir");
    let key = keys.path().join("admin");
    let (install, first) = install_berth(&host, &key);
    assert!(first.contains("No cargo here"), "{first}");
    for unit in ["docker", "berth-registry", "berth-dataplane", "berth"] {
        assert_eq!(
            host.ok(&format!("systemctl is-active {unit}")).trim(),
            "active",
            "{unit}: {first}"
        );
        assert_eq!(
            host.ok(&format!("systemctl is-enabled {unit}")).trim(),
            "enabled",
            "{unit}"
        );
    }
    assert!(answers(&host, &key), "berth does not answer over SSH");

    // A push from outside goes live.
    let app = app_name("installed");
    let repo = web_app("installed on systemd");
    let push = push_to(&host, &key, repo.path(), &app);
    assert!(push.status.success(), "{}", text(&push));
    let router = format!("{}:80", host.address);
    let site = format!("{app}.{}", host.address);
    let get = || http_request(&router, &site, "/").map(|(_, body)| body);
    assert_eq!(get().as_deref(), Some("installed on systemd\n"));
    let listed = ssh_to(&host, &key, &["apps:list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&app),
        "{}",
        text(&listed)
    );

    // `systemctl restart berth`: back, and the app served throughout by the data plane.
    let plane = host.main_pid("berth-dataplane");
    host.ok("systemctl restart berth");
    assert!(
        answers(&host, &key),
        "berth did not come back after a restart"
    );
    assert_eq!(host.main_pid("berth-dataplane"), plane);
    assert_eq!(get().as_deref(), Some("installed on systemd\n"));

    // A crash: systemd starts berth again.
    let before = host.main_pid("berth");
    host.ok(&format!("kill -9 {before}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.main_pid("berth") == before || host.main_pid("berth") == "0" {
        assert!(Instant::now() < deadline, "systemd did not restart berth");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        answers(&host, &key),
        "berth did not come back after a crash"
    );

    // A second run changes nothing: nothing installed, started or restarted.
    let pids = |host: &Host| {
        ["docker", "berth-registry", "berth-dataplane", "berth"].map(|unit| host.main_pid(unit))
    };
    let before = pids(&host);
    let again = host.ok(&install);
    assert!(
        !again.contains("Installing")
            && !again.contains("Starting")
            && !again.contains("Restarting")
            && !again.contains("Handing"),
        "{again}"
    );
    assert_eq!(pids(&host), before, "{again}");

    // An upgrade (a changed binary): the data plane hands its sockets over, the control plane
    // restarts; the engine and the registry stay. Requests all the while: none fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (made, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, made, failed) = (stop.clone(), made.clone(), failed.clone());
        let (router, site) = (router.clone(), site.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                made.fetch_add(1, Ordering::Relaxed);
                let ok = http_request(&router, &site, "/").is_some_and(|(status, body)| {
                    status == 200 && body == "installed on systemd\n"
                });
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    host.ok("printf 'upgraded' >> /opt/berth/target/release/berth");
    let upgrade = host.ok(&install);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load");
    assert!(upgrade.contains("Handing the data plane over"), "{upgrade}");
    let after = pids(&host);
    assert_eq!(
        after[..2],
        before[..2],
        "the engine or the registry restarted: {upgrade}"
    );
    assert_ne!(
        after[2], before[2],
        "the data plane did not take the new binary"
    );
    assert_ne!(after[3], before[3], "the control plane did not restart");
    assert!(
        answers(&host, &key),
        "berth does not answer after the upgrade"
    );
    let made = made.load(Ordering::Relaxed);
    assert!(made > 20, "only {made} requests made");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {made} requests");
    assert_eq!(get().as_deref(), Some("installed on systemd\n"));
}

/// The app's unit files on the host (names only).
fn unit_files(host: &Host, app: &str) -> Vec<String> {
    let listed = host.sh(&format!(
        "cd /etc/systemd/system && ls -1 berth-{app}.* 2>/dev/null"
    ));
    let mut names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    names
}

#[test]
fn the_systemd_target_runs_each_instance_as_a_unit_health_gated_and_reconciled() {
    let started = Instant::now();
    let host = Host::boot(&format!("berth-systemd-target-{}", std::process::id()));
    let keys = tempfile::tempdir().expect("dir");
    let key = keys.path().join("admin");
    install_berth(&host, &key);
    assert!(answers(&host, &key), "berth does not answer over SSH");
    let berth = |args: &[&str]| ssh_to(&host, &key, args);
    let app = "units";
    let router = format!("{}:80", host.address);
    let site = format!("{app}.{}", host.address);
    let get = |path: &str| http_request(&router, &site, path).map(|(_, body)| body);

    ok(&berth(&["apps:create", app]));
    ok(&berth(&["apps:set", app, "target=systemd"]));
    ok(&berth(&[
        "config:set",
        app,
        "GREETING=s3cret-value",
        "--no-restart",
    ]));

    // A push goes live as one unit per instance, enabled, its config in a root-only env file.
    let repo = who_app("first");
    let push = push_to(&host, &key, repo.path(), app);
    assert!(push.status.success(), "{}", text(&push));
    let pushed = text(&push);
    assert!(
        pushed.contains(&format!("berth-{app}.v1-web-1.service")),
        "{pushed}"
    );
    assert_eq!(get("/").as_deref(), Some("first\n"));
    assert_eq!(get("/who").as_deref(), Some("web.1 s3cret-value\n"));
    let unit = format!("berth-{app}.v1-web-1.service");
    assert_eq!(unit_files(&host, app), std::slice::from_ref(&unit));
    assert_eq!(
        host.ok(&format!("systemctl is-active {unit}")).trim(),
        "active"
    );
    assert_eq!(
        host.ok(&format!("systemctl is-enabled {unit}")).trim(),
        "enabled"
    );
    let unit_text = host.ok(&format!("cat /etc/systemd/system/{unit}"));
    assert!(
        !unit_text.contains("s3cret-value"),
        "config in the unit:\n{unit_text}"
    );
    assert!(unit_text.contains(&format!("--env-file /etc/berth/env/{app}/v1.env")));
    assert_eq!(
        host.ok(&format!(
            "stat -c '%a %U' /etc/berth/env/{app}/v1.env /etc/berth/env/{app}"
        )),
        "600 root\n700 root\n"
    );
    assert!(
        host.ok(&format!("cat /etc/berth/env/{app}/v1.env"))
            .contains("GREETING=s3cret-value")
    );
    // ps:report shows the unit; logs read its journal.
    let report = json(&berth(&["ps:report", app, "--json"]));
    let rows = report.as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{report}");
    assert_eq!(rows[0]["unit"], unit.as_str(), "{report}");
    assert_eq!(rows[0]["unit_state"], "active (running)", "{report}");
    assert_eq!(rows[0]["traffic"], "serving", "{report}");
    let logs = ok(&berth(&["logs", app]));
    assert!(logs.contains("web.1 | booting web.1"), "{logs}");

    // Scale 1 → 3 → 1: more instance units, all serving; then the extra ones go.
    let scaled = ok(&berth(&["ps:scale", app, "web=3"]));
    assert_eq!(unit_files(&host, app).len(), 3, "{scaled}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.extend(get("/who"));
    }
    assert_eq!(seen.len(), 3, "instances answering: {seen:?}");
    ok(&berth(&["ps:scale", app, "web=1"]));
    wait_for("the extra units to go", || {
        (unit_files(&host, app) == [unit.clone()]).then_some(())
    });
    assert!(
        !host
            .ok("docker ps --format '{{.Names}}'")
            .contains(&format!("berth-{app}.v1-web-2")),
        "the extra containers stay"
    );

    // A release that crashes at start is refused; the old units serve on, nothing of it stays.
    write_who_app(repo.path(), "crashing", "exit 3; ");
    commit(repo.path(), "crash at start");
    let push = push_to(&host, &key, repo.path(), app);
    assert!(!push.status.success(), "a crashing release went live");
    let refused = text(&push);
    assert!(
        refused.contains("exited at start (exit code 3)"),
        "{refused}"
    );
    assert_eq!(
        unit_files(&host, app),
        std::slice::from_ref(&unit),
        "{refused}"
    );
    assert!(
        !host
            .sh(&format!("test -e /etc/berth/env/{app}/v2.env"))
            .status
            .success()
    );
    assert_eq!(get("/").as_deref(), Some("first\n"));

    // A good release under load: start-first, health-gated, no request fails; the old units go
    // once drained.
    write_who_app(repo.path(), "second", "");
    commit(repo.path(), "second");
    let load = Load::start(&router, &site, "/", |b| b == "first\n" || b == "second\n");
    let push = push_to(&host, &key, repo.path(), app);
    std::thread::sleep(Duration::from_millis(500));
    let (made, failed, failures) = load.finish();
    assert!(push.status.success(), "{}", text(&push));
    assert_eq!(
        failed, 0,
        "of {made} requests during the deploy: {failures:?}"
    );
    assert_eq!(get("/").as_deref(), Some("second\n"));
    let unit = format!("berth-{app}.v3-web-1.service");
    wait_for("the old release's units and env file to go", || {
        (unit_files(&host, app) == [unit.clone()]
            && !host
                .sh(&format!("test -e /etc/berth/env/{app}/v1.env"))
                .status
                .success())
        .then_some(())
    });

    // ps:restart under load: a spare serves while the instance restarts; none fails.
    let pid = host.main_pid(&unit);
    let load = Load::start(&router, &site, "/", |b| b == "second\n");
    let restarted = ok(&berth(&["ps:restart", app]));
    std::thread::sleep(Duration::from_millis(300));
    let (made, failed, failures) = load.finish();
    assert_eq!(
        failed, 0,
        "of {made} requests during the restart: {failures:?}\n{restarted}"
    );
    assert!(made > 10, "only {made} requests");
    assert_ne!(
        host.main_pid(&unit),
        pid,
        "the unit did not restart: {restarted}"
    );
    assert_eq!(
        unit_files(&host, app),
        std::slice::from_ref(&unit),
        "the spare stays: {restarted}"
    );

    // Rollback to v1: a new release of v1's image, as units of its own.
    ok(&berth(&["releases:rollback", app, "v1"]));
    assert_eq!(get("/").as_deref(), Some("first\n"));
    let unit = format!("berth-{app}.v4-web-1.service");
    wait_for("the rollback's units alone", || {
        (unit_files(&host, app) == [unit.clone()]).then_some(())
    });

    // ps:stop removes the units; ps:start brings them back.
    ok(&berth(&["ps:stop", app]));
    assert!(unit_files(&host, app).is_empty());
    assert_ne!(get("/").as_deref(), Some("first\n"));
    ok(&berth(&["ps:start", app]));
    assert_eq!(get("/").as_deref(), Some("first\n"));
    let unit = unit_files(&host, app).pop().expect("a unit after ps:start");

    // Killed from outside: a stopped unit is started again by the reconciler, a killed
    // container by systemd itself (same unit, same host port).
    host.ok(&format!("systemctl stop {unit}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while get("/").as_deref() != Some("first\n") {
        assert!(
            Instant::now() < deadline,
            "the stopped unit did not come back"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        host.ok(&format!("systemctl is-active {unit}")).trim(),
        "active"
    );
    let events = ok(&berth(&["events", app]));
    assert!(
        events.contains("started web.1 (unit was inactive)")
            || events.contains("started web.1 (unit was failed)"),
        "{events}"
    );
    let container = unit.trim_end_matches(".service").to_string();
    host.ok(&format!("docker kill {container}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    std::thread::sleep(Duration::from_millis(200));
    while get("/").as_deref() != Some("first\n") {
        assert!(
            Instant::now() < deadline,
            "systemd did not restart the killed container"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // apps:destroy leaves no unit, no env file, no container.
    ok(&berth(&["apps:destroy", app, "--confirm", app]));
    assert!(unit_files(&host, app).is_empty());
    assert!(
        !host
            .sh(&format!("test -e /etc/berth/env/{app}"))
            .status
            .success()
    );
    assert!(
        !host
            .ok("docker ps -a --format '{{.Names}}'")
            .contains(&format!("berth-{app}.")),
        "containers stay"
    );
    eprintln!(
        "systemd target test: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
