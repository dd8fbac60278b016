//! Named volumes of apps (`storage:mount`), labeled with the app uid that made them.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::VolumeCreateRequest;

use super::names::*;
use crate::engine;

/// Makes the named volume (labeled with its app) unless it exists; an existing one labeled
/// with another app's uid is refused. (Volumes of a berth from before uids have no uid label:
/// they are reached only through the app's own mounts.)
pub async fn ensure_volume(
    docker: &Docker,
    name: &str,
    app: &str,
    app_uid: &str,
) -> Result<(), String> {
    if let Ok(existing) = docker.inspect_volume(name).await {
        return match existing.labels.get(LABEL_APP_UID) {
            Some(owner) if owner != app_uid => Err(format!(
                "volume {name} belongs to another app: mount a volume of another name"
            )),
            _ => Ok(()),
        };
    }
    let request = VolumeCreateRequest {
        name: Some(name.to_string()),
        labels: Some(HashMap::from([
            (LABEL_APP.to_string(), app.to_string()),
            (LABEL_APP_UID.to_string(), app_uid.to_string()),
        ])),
        ..Default::default()
    };
    docker
        .create_volume(request)
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot make volume {name}: {}", engine::describe(&e)))
}

/// Removes a named volume (its data is gone); one already gone is not an error.
pub async fn remove_volume(docker: &Docker, name: &str) -> Result<(), String> {
    match docker
        .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
    {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(error) => Err(format!(
            "cannot remove volume {name}: {}",
            engine::describe(&error)
        )),
    }
}

/// The named volumes labeled as the app's.
pub async fn labeled_volumes(docker: &Docker, app_uid: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![format!("{LABEL_APP_UID}={app_uid}")])]);
    let options = bollard::query_parameters::ListVolumesOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker
        .list_volumes(Some(options))
        .await
        .ok()
        .and_then(|list| list.volumes)
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect()
}
