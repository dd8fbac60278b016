//! Engine object names and labels, in one place: containers, networks, volumes and the labels
//! that make the engine the record of what runs (every target labels its containers the same way).

pub const LABEL_APP: &str = "berth.app";

pub const LABEL_RELEASE: &str = "berth.release";

pub const LABEL_PROCESS: &str = "berth.process";

pub const LABEL_INDEX: &str = "berth.index";

pub const LABEL_PORT: &str = "berth.port";

/// Set on the containers of the systemd target: the unit that runs the container.
pub const LABEL_UNIT: &str = "berth.unit";

/// Set by the engine on the containers of swarm tasks (the swarm target's instances).
pub(super) const LABEL_SWARM_SERVICE: &str = "com.docker.swarm.service.name";

pub(super) const LABEL_SWARM_TASK: &str = "com.docker.swarm.task.name";

/// The engine network every berth container joined before networks per app (finding 10):
/// containers of an earlier berth are moved off it at start (`adopt_legacy_network`).
pub const LEGACY_NETWORK: &str = "berth";

/// The engine network of one app. Its containers (web, workers, release phase, `run`) join it and
/// no other app's, so apps cannot reach each other's containers; its web instances answer there
/// to the app's name. An app linked to it (`apps:link APP DEP`) joins DEP's network too. The `.`
/// cannot be part of an app name, so no app's network is another's.
pub fn app_network(app: &str) -> String {
    format!("berth.{app}")
}

/// The network members' builds run on (`RUN` steps): the public internet only. Made at start
/// with `build_subnet`, and guarded by `guard_build_network`. (`-`, not `.`: no app's network,
/// `berth.APP`, can be named like it.)
pub const BUILD_NETWORK: &str = "berth-builds";

/// The label that names a volume's app by its never-reused uid (`apps.uid`).
pub const LABEL_APP_UID: &str = "berth.app_uid";

/// The engine name of an app's named volume: `berth.<uid>.<name>`. Neither part can hold a
/// `.`, and the uid is the app's for good, so no other app (nor a later app of the same name)
/// can ever name it (finding 12).
pub fn volume_name(app_uid: &str, name: &str) -> String {
    format!("berth.{app_uid}.{name}")
}

/// Container name of one process instance of a release.
pub fn container_name(app: &str, release: i64, process: &str, index: u32) -> String {
    format!("berth-{app}-v{release}-{process}-{index}")
}

/// The systemd unit of one process instance of a release (systemd target):
/// `berth-APP.vN-PROCESS-I.service`. The `.` cannot be part of an app name, so the app is
/// everything before the first `.`: no app's units are another's (`parse_unit_name`).
pub fn unit_name(app: &str, release: i64, process: &str, index: u32) -> String {
    format!("{}.service", unit_container(app, release, process, index))
}

/// The container a systemd unit runs: the unit's name without `.service`.
pub fn unit_container(app: &str, release: i64, process: &str, index: u32) -> String {
    format!("berth-{app}.v{release}-{process}-{index}")
}

/// A systemd unit's name read back: app, release, process and instance; `None` for any file
/// that is not one of berth's units.
pub fn parse_unit_name(file: &str) -> Option<(String, i64, String, u32)> {
    let stem = file.strip_prefix("berth-")?.strip_suffix(".service")?;
    let (app, rest) = stem.split_once('.')?;
    let rest = rest.strip_prefix('v')?;
    let (release, rest) = rest.split_once('-')?;
    let (process, index) = rest.rsplit_once('-')?;
    let release: i64 = release.parse().ok()?;
    let index: u32 = index.parse().ok()?;
    let canonical = unit_name(app, release, process, index);
    (canonical == file && !app.is_empty() && !process.is_empty())
        .then(|| (app.to_string(), release, process.to_string(), index))
}

/// The swarm stack of an app (`docker stack deploy … berth-APP`).
pub fn stack_name(app: &str) -> String {
    format!("berth-{app}")
}

/// The swarm service of one process type of an app, in its stack.
pub fn service_name(app: &str, process: &str) -> String {
    format!("berth-{app}_{process}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_name_one_app_only() {
        let unit = unit_name("my-v2", 7, "web", 3);
        assert_eq!(unit, "berth-my-v2.v7-web-3.service");
        assert_eq!(
            parse_unit_name(&unit),
            Some(("my-v2".to_string(), 7, "web".to_string(), 3))
        );
        // The units of app `my-v2` are never app `my`'s, nor the other way round.
        assert_eq!(
            parse_unit_name(&unit_name("my", 2, "web", 1)).unwrap().0,
            "my"
        );
        for other in [
            "berth-dataplane.service",
            "berth.service",
            "berth-app.v1-web-x.service",
            "berth-app.v1-web-1.service.d",
            "berth-app.vx-web-1.service",
            "berth-app.v1-web-01.service",
            "docker.service",
        ] {
            assert_eq!(parse_unit_name(other), None, "{other}");
        }
    }
}
