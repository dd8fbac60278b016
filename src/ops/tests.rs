//! The application layer's state machines against the fake scheduler: fast, no engine. What
//! they pin: a failure leaves the running release, its config and its mounts as they were; a
//! canary starts, is promoted and is aborted with the right releases retired; a redeploy makes
//! the linked apps follow once. The end-to-end tests drive the same paths on a real engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::config::Config;
use crate::deploy::Scheduler;
use crate::deploy::fake::Fake;
use crate::domain::{AppState, MountKind, ReleaseStatus};
use crate::names::AppName;
use crate::output::Output;
use crate::server::Berth;
use crate::store::App;

struct World {
    berth: Arc<Berth>,
    fake: Arc<Fake>,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        publish_address: "127.0.0.1".parse().unwrap(),
        http_listen: "off".into(),
        https_listen: "off".into(),
        admin_listen: "off".into(),
        ..Config::default()
    };
    crate::dataplane::start_in_process(&config).await.unwrap();
    let berth = Berth::open(config).await.unwrap();
    let fake = Arc::new(Fake::default());
    berth.use_scheduler(Scheduler::fake(fake.clone()));
    World {
        berth,
        fake,
        _dir: dir,
    }
}

impl World {
    async fn scheduler(&self) -> Scheduler {
        self.berth.scheduler().await.unwrap()
    }

    async fn app(&self, name: &str) -> App {
        let name = AppName::parse(name).unwrap();
        self.berth.store.app(&name).await.unwrap().unwrap()
    }

    async fn locked(&self, name: &str) -> LockedApp {
        lock(&self.berth, &self.app(name).await).await.unwrap()
    }

    /// Releases `image` with `config` as the app's next release (made first if need be).
    async fn release(
        &self,
        name: &str,
        image: &str,
        config: &[(&str, &str)],
    ) -> Result<crate::store::Release, String> {
        let app_name = AppName::parse(name).unwrap();
        self.berth
            .store
            .ensure_app(&app_name, "host")
            .await
            .unwrap();
        let app = self.locked(name).await;
        let config: BTreeMap<String, String> = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let plan = Plan {
            commit: "0123456789abcdef",
            config: &config,
            manifest: "{}",
            description: "test",
            actor: "host",
            canary: None,
        };
        let scheduler = self.scheduler().await;
        let release = create_deploy_and_follow(
            &self.berth,
            &scheduler,
            &app,
            Source::Existing(image),
            plan,
            &Output::discard(),
        )
        .await?;
        self.berth
            .store
            .replace_config(app.id, &config)
            .await
            .unwrap();
        Ok(release)
    }

    async fn running(&self, name: &str) -> i64 {
        let app = self.app(name).await;
        let release = self.berth.store.running_release(app.id).await.unwrap();
        release.map_or(0, |r| r.number)
    }

    async fn status(&self, name: &str, number: i64) -> ReleaseStatus {
        let app = self.app(name).await;
        let release = self.berth.store.release(app.id, number).await.unwrap();
        release.unwrap().status
    }

    async fn serving(&self, name: &str) -> usize {
        self.berth.plane.traffic(name).await.unwrap().len()
    }
}

#[tokio::test]
async fn a_failed_deploy_marks_its_release_failed_and_the_running_release_stays() {
    let w = world().await;
    w.release("web", "berth/web:v1", &[]).await.unwrap();
    assert_eq!(w.running("web").await, 1);
    assert_eq!(w.serving("web").await, 1, "v1's instance serves");

    w.fake.failing("deploy", true);
    let failed = w.release("web", "berth/web:v2", &[]).await;
    assert!(failed.is_err(), "the deploy failed: {failed:?}");
    assert_eq!(w.status("web", 2).await, ReleaseStatus::Failed);
    assert_eq!(w.running("web").await, 1, "v1 keeps running");
    assert_eq!(w.serving("web").await, 1, "and keeps serving");
}

#[tokio::test]
async fn a_config_change_that_fails_puts_the_old_config_back() {
    let w = world().await;
    w.release("web", "berth/web:v1", &[("A", "1")])
        .await
        .unwrap();
    let app = w.locked("web").await;
    let old = w.berth.store.config(app.id).await.unwrap();
    let mut new = old.clone();
    new.insert("A".into(), "2".into());
    w.fake.failing("deploy", true);
    let change = ConfigChange {
        old: &old,
        new: &new,
        description: "config:set A",
    };
    let scheduler = w.scheduler().await;
    let result = redeploy_with_config(
        &w.berth,
        &scheduler,
        &app,
        change,
        "host",
        &Output::discard(),
    )
    .await;
    let message = result.unwrap_err();
    assert!(message.contains("the config is unchanged"), "{message}");
    assert_eq!(w.berth.store.config(app.id).await.unwrap(), old);
    assert_eq!(w.running("web").await, 1);
    let state = w
        .berth
        .store
        .app_by_id(app.id)
        .await
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(state, AppState::Running, "the app is not left deploying");
}

#[tokio::test]
async fn a_rollback_runs_the_earlier_release_with_its_config_and_a_failed_one_changes_nothing() {
    let w = world().await;
    w.release("web", "berth/web:v1", &[("A", "1")])
        .await
        .unwrap();
    w.release("web", "berth/web:v2", &[("A", "2")])
        .await
        .unwrap();
    let app = w.locked("web").await;
    let store = &w.berth.store;
    let v1 = store.release(app.id, 1).await.unwrap().unwrap();
    let v2 = store.release(app.id, 2).await.unwrap().unwrap();

    w.fake.failing("deploy", true);
    let failed = rollback(&w.berth, &app, &v2, &v1, "host", &Output::discard()).await;
    assert!(failed.unwrap_err().contains("v2 keeps running"));
    assert_eq!(w.running("web").await, 2);
    assert_eq!(store.config(app.id).await.unwrap()["A"], "2");

    w.fake.failing("deploy", false);
    rollback(&w.berth, &app, &v2, &v1, "host", &Output::discard())
        .await
        .unwrap();
    assert_eq!(
        w.running("web").await,
        4,
        "a new release (v3 failed) of v1's image"
    );
    let v4 = store.release(app.id, 4).await.unwrap().unwrap();
    assert_eq!(v4.image, v1.image);
    assert_eq!(
        store.config(app.id).await.unwrap()["A"],
        "1",
        "the config follows"
    );
    assert_eq!(w.status("web", 2).await, ReleaseStatus::Superseded);
}

#[tokio::test]
async fn a_canary_is_started_beside_promoted_and_aborted_with_the_right_release_retired() {
    let w = world().await;
    w.release("web", "berth/web:v1", &[]).await.unwrap();
    let app = w.locked("web").await;
    let store = &w.berth.store;
    let scheduler = w.scheduler().await;
    let out = Output::discard();

    // v2 as a canary at 20 %: v1 keeps running, both serve.
    store.start_canary(app.id, 20, "host").await.unwrap();
    let v1 = store.release(app.id, 1).await.unwrap().unwrap();
    let v2 = store
        .create_release(crate::store::NewRelease {
            app_id: app.id,
            commit_sha: "c2",
            image: crate::store::ReleaseImage::Existing("berth/web:v2"),
            config: "{}",
            manifest: "{}",
            created_by: "host",
            description: "canary",
        })
        .await
        .unwrap();
    deploy_canary(&w.berth, &scheduler, &app, &v2, 20, "host", &out)
        .await
        .unwrap();
    assert_eq!(w.running("web").await, 1);
    assert_eq!(
        store.canary(app.id).await.unwrap().unwrap().release,
        Some(2)
    );
    let traffic = w.berth.plane.traffic("web").await.unwrap();
    assert!(traffic.values().any(|t| *t == "canary"), "{traffic:?}");

    // Promoted: v2 runs, the canary row is gone, v1 is retired.
    promote_canary(&w.berth, &scheduler, &app, &v2, "host", &out)
        .await
        .unwrap();
    assert_eq!(w.running("web").await, 2);
    assert!(store.canary(app.id).await.unwrap().is_none());
    assert!(
        w.fake.calls().contains(&"retire web v1".to_string()),
        "{:?}",
        w.fake.calls()
    );
    assert_eq!(w.status("web", 1).await, ReleaseStatus::Superseded);
    let _ = v1;

    // Another canary, aborted: v3 is marked aborted and retired, v2 keeps running.
    store.start_canary(app.id, 10, "host").await.unwrap();
    let v3 = store
        .create_release(crate::store::NewRelease {
            app_id: app.id,
            commit_sha: "c3",
            image: crate::store::ReleaseImage::Existing("berth/web:v3"),
            config: "{}",
            manifest: "{}",
            created_by: "host",
            description: "canary",
        })
        .await
        .unwrap();
    deploy_canary(&w.berth, &scheduler, &app, &v3, 10, "host", &out)
        .await
        .unwrap();
    abort_canary(&w.berth, &scheduler, &app, Some(3), "host")
        .await
        .unwrap();
    assert_eq!(w.running("web").await, 2);
    assert_eq!(w.status("web", 3).await, ReleaseStatus::Aborted);
    assert!(w.fake.calls().contains(&"retire web v3".to_string()));
    let traffic = w.berth.plane.traffic("web").await.unwrap();
    assert!(traffic.values().all(|t| *t != "canary"), "{traffic:?}");
}

#[tokio::test]
async fn a_mount_whose_restart_fails_is_not_left_recorded_nor_an_unmount_lost() {
    let w = world().await;
    w.release("web", "berth/web:v1", &[]).await.unwrap();
    let app = w.locked("web").await;
    let store = &w.berth.store;
    let out = Output::discard();
    let volume = crate::deploy::names::volume_name(&app.uid, "data");
    let mount_data = || NewMount {
        kind: MountKind::Volume,
        name: "data",
        source: &volume,
        path: "/data",
    };

    w.fake.failing("restart", true);
    let failed = mount(&w.berth, &app, mount_data(), "host", &out).await;
    assert!(failed.unwrap_err().contains("nothing was mounted"));
    assert!(store.mounts(app.id).await.unwrap().is_empty());

    w.fake.failing("restart", false);
    mount(&w.berth, &app, mount_data(), "host", &out)
        .await
        .unwrap();
    let mounted = store.mounts(app.id).await.unwrap();
    assert_eq!(mounted.len(), 1);

    w.fake.failing("restart", true);
    let failed = unmount(&w.berth, &app, &mounted[0], "host", &out).await;
    assert!(failed.unwrap_err().contains("it stays mounted"));
    let still = store.mounts(app.id).await.unwrap();
    assert_eq!(still.len(), 1, "put back");
    assert_eq!(still[0].kind, MountKind::Volume);
}

#[tokio::test]
async fn a_scale_that_fails_keeps_the_formation() {
    let w = world().await;
    w.release("web", "berth/web:v1", &[]).await.unwrap();
    let app = w.locked("web").await;
    let wanted = BTreeMap::from([("web".to_string(), 3)]);
    w.fake.failing("scale", true);
    let failed = scale(&w.berth, &app, &wanted, "host", &Output::discard()).await;
    assert!(failed.unwrap_err().contains("the formation stays web=1"));
    assert_eq!(formation(&w.app("web").await)["web"], 1);

    w.fake.failing("scale", false);
    let scaled = scale(&w.berth, &app, &wanted, "host", &Output::discard()).await;
    assert_eq!(scaled.unwrap(), Some(3));
    assert_eq!(formation(&w.app("web").await)["web"], 3);
    assert_eq!(w.serving("web").await, 3);
}

#[tokio::test]
async fn linked_apps_follow_a_redeploy_once_each_in_a_loop() {
    let w = world().await;
    w.release("db", "berth/db:v1", &[]).await.unwrap();
    w.release("api", "berth/api:v1", &[]).await.unwrap();
    w.release("front", "berth/front:v1", &[]).await.unwrap();
    let (db, api, front) = (w.app("db").await, w.app("api").await, w.app("front").await);
    // front → api → db; made by the host CLI's key, which may operate every app.
    let store = &w.berth.store;
    store.add_link(api.id, db.id, "DB", "host").await.unwrap();
    store
        .add_link(front.id, api.id, "API", "host")
        .await
        .unwrap();

    // The web port changes with the next releases (the fake gives every image the same one):
    // db's v2 gives api new DB_* values (a new release), and api's v2 gives front new API_*
    // values; each is redeployed once, by the loop over the work list.
    w.fake
        .web_port
        .store(6000, std::sync::atomic::Ordering::Relaxed);
    w.release("db", "berth/db:v2", &[]).await.unwrap();
    assert_eq!(w.running("db").await, 2);
    assert_eq!(w.running("api").await, 2, "api was redeployed once");
    let config = store.config(api.id).await.unwrap();
    assert_eq!(config["DB_PORT"], "6000");
    assert_eq!(config["DB_URL"], "http://db:6000");
    assert_eq!(store.config(front.id).await.unwrap()["API_PORT"], "6000");
    assert_eq!(
        w.running("front").await,
        2,
        "front follows api's new port too"
    );

    // Nothing changed: nobody is redeployed again.
    let scheduler = w.scheduler().await;
    refresh_dependents(&w.berth, &scheduler, &db, "host", &Output::discard()).await;
    assert_eq!((w.running("api").await, w.running("front").await), (2, 2));
}
