//! Engine object names and labels, in one place: containers, networks, volumes and the labels
//! that make the engine the record of what runs (every target labels its containers the same way).

pub const LABEL_APP: &str = "berth.app";

pub const LABEL_RELEASE: &str = "berth.release";

pub const LABEL_PROCESS: &str = "berth.process";

pub const LABEL_INDEX: &str = "berth.index";

pub const LABEL_PORT: &str = "berth.port";

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

/// The swarm stack of an app (`docker stack deploy … berth-APP`).
pub fn stack_name(app: &str) -> String {
    format!("berth-{app}")
}

/// The swarm service of one process type of an app, in its stack.
pub fn service_name(app: &str, process: &str) -> String {
    format!("berth-{app}_{process}")
}
