//! The app's and the release's states, and a key's role, as types. Both are stored as their snake_case names
//! (TEXT columns) and shown so (`apps:info`, `releases`, JSON); a name in the DB that none
//! of these is fails the read with an error, instead of being compared as a string at each use.

use std::fmt;

/// Where an app is: what berth is doing with it, or how it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type, serde::Serialize)]
#[sqlx(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    /// Made by `apps:create`, nothing pushed yet.
    Created,
    Building,
    Deploying,
    Running,
    Failed,
    /// Berth restarted and has not looked at the app's instances yet.
    Unknown,
    /// Its instances are gone and could not be brought back.
    Lost,
    Restarting,
    /// `releases:rollback` is deploying an earlier release.
    RollingBack,
    Scaling,
    Starting,
    Stopping,
    Stopped,
    Deleting,
}

impl AppState {
    pub const ALL: [AppState; 14] = [
        AppState::Created,
        AppState::Building,
        AppState::Deploying,
        AppState::Running,
        AppState::Failed,
        AppState::Unknown,
        AppState::Lost,
        AppState::Restarting,
        AppState::RollingBack,
        AppState::Scaling,
        AppState::Starting,
        AppState::Stopping,
        AppState::Stopped,
        AppState::Deleting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Created => "created",
            AppState::Building => "building",
            AppState::Deploying => "deploying",
            AppState::Running => "running",
            AppState::Failed => "failed",
            AppState::Unknown => "unknown",
            AppState::Lost => "lost",
            AppState::Restarting => "restarting",
            AppState::RollingBack => "rolling_back",
            AppState::Scaling => "scaling",
            AppState::Starting => "starting",
            AppState::Stopping => "stopping",
            AppState::Stopped => "stopped",
            AppState::Deleting => "deleting",
        }
    }

    /// No operation of berth's is under way: the reconciler may move the app out of it
    /// (every other state belongs to an operation).
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            AppState::Running
                | AppState::Unknown
                | AppState::Lost
                | AppState::Failed
                | AppState::Created
        )
    }
}

impl fmt::Display for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a release is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type, serde::Serialize)]
#[sqlx(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Made; its release phase may be running.
    Releasing,
    Deploying,
    Running,
    /// A later release took its place.
    Superseded,
    Failed,
    /// Serving a share of the app's requests beside the running release.
    Canary,
    /// A canary that was ended.
    Aborted,
}

impl ReleaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Releasing => "releasing",
            ReleaseStatus::Deploying => "deploying",
            ReleaseStatus::Running => "running",
            ReleaseStatus::Superseded => "superseded",
            ReleaseStatus::Failed => "failed",
            ReleaseStatus::Canary => "canary",
            ReleaseStatus::Aborted => "aborted",
        }
    }
}

impl fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a key may do: a member operates the apps it made or was granted; an admin every app and
/// the server. Ordered: `Admin > Member`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type, serde::Serialize,
)]
#[sqlx(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Result<Role, String> {
        match text {
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            _ => Err(format!("unknown role {text:?}: use admin or member")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a mount mounts: a named volume of berth's own (removed with the app) or a directory of
/// the host (admins only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type, serde::Serialize)]
#[sqlx(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    Volume,
    Host,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Volume => "volume",
            MountKind::Host => "host",
        }
    }
}

impl fmt::Display for MountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a release runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, sqlx::Type,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum Target {
    Docker,
    Systemd,
    Swarm,
    Kubernetes,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Docker,
        Target::Systemd,
        Target::Swarm,
        Target::Kubernetes,
    ];

    pub fn parse(name: &str) -> Result<Target, String> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                format!("unknown target {name:?}: use docker, systemd, swarm or kubernetes")
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::Docker => "docker",
            Target::Systemd => "systemd",
            Target::Swarm => "swarm",
            Target::Kubernetes => "kubernetes",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn states_are_stored_and_read_by_their_names() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        for state in AppState::ALL {
            let (read,): (AppState,) = sqlx::query_as("SELECT ?")
                .bind(state)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(read, state);
            let (text,): (String,) = sqlx::query_as("SELECT ?")
                .bind(state)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(text, state.as_str());
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        // A name none of the states has is an error, not a silent default.
        let read: Result<(AppState,), _> =
            sqlx::query_as("SELECT 'sleeping'").fetch_one(&pool).await;
        assert!(read.is_err());
        let (status,): (ReleaseStatus,) = sqlx::query_as("SELECT 'superseded'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(status, ReleaseStatus::Superseded);
        assert!(Role::Admin > Role::Member);
        assert_eq!(Role::parse("admin"), Ok(Role::Admin));
        assert!(Role::parse("root").is_err());
    }
}
