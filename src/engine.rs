//! The connection to the Docker engine, shared by the build, registry and docker-deploy stages.

use bollard::Docker;

/// Connects to the local engine and checks that it answers.
pub async fn connect() -> Result<Docker, String> {
    let docker = Docker::connect_with_local_defaults().map_err(|e| not_answering(&e))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| not_answering(&e))
}

/// `connect`, giving up after `limit` (a hung engine must not hang a command).
pub async fn connect_within(limit: std::time::Duration) -> Result<Docker, String> {
    tokio::time::timeout(limit, connect())
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the Docker engine did not answer within {} ms",
                limit.as_millis()
            ))
        })
}

fn not_answering(error: &bollard::errors::Error) -> String {
    format!("the Docker engine is not answering ({error}): start it (dockerd) and push again")
}

/// One line for the user from an engine error: the engine's own message when it gave one.
pub fn describe(error: &bollard::errors::Error) -> String {
    use bollard::errors::Error;
    match error {
        Error::DockerResponseServerError { message, .. } => message.trim().to_string(),
        Error::DockerStreamError { error } => error.trim().to_string(),
        Error::HyperResponseError { .. } | Error::IOError { .. } => {
            format!("lost the Docker engine ({error}): check that dockerd is running")
        }
        other => other.to_string(),
    }
}
