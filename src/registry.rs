//! The registry stage: push the release image to the configured registry.

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    PushImageOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;

use crate::engine;
use crate::output::Output;

/// The repository part of an app's image name: `<registry>/<app>`, or `berth/<app>` when
/// images stay local (single-host mode).
pub fn image_repository(registry: Option<&str>, app: &str) -> String {
    match registry {
        Some(registry) => format!("{registry}/{app}"),
        None => format!("berth/{app}"),
    }
}

/// Gives the built image its release name (`repo:vN`) and drops the temporary build tag.
pub async fn retag(docker: &Docker, build_tag: &str, image: &str) -> Result<(), String> {
    let (repository, tag) = image
        .rsplit_once(':')
        .ok_or_else(|| format!("image {image} has no tag"))?;
    let options = TagImageOptionsBuilder::default()
        .repo(repository)
        .tag(tag)
        .build();
    docker
        .tag_image(build_tag, Some(options))
        .await
        .map_err(|e| format!("cannot tag {image}: {}", engine::describe(&e)))?;
    let untag = RemoveImageOptionsBuilder::default().noprune(true).build();
    let _ = docker.remove_image(build_tag, Some(untag), None).await;
    Ok(())
}

static CREDENTIALS: std::sync::OnceLock<Option<DockerCredentials>> = std::sync::OnceLock::new();

/// Reads the registry's credentials (`user:password` in a root-only file) once, at start.
pub fn load_credentials(path: Option<&std::path::Path>) -> Result<(), String> {
    let credentials = match path {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read registry_credentials {}: {e}", path.display()))?;
            let (username, password) = text.trim().split_once(':').ok_or_else(|| {
                format!(
                    "registry_credentials {} must hold user:password",
                    path.display()
                )
            })?;
            Some(DockerCredentials {
                username: Some(username.to_string()),
                password: Some(password.to_string()),
                ..Default::default()
            })
        }
    };
    let _ = CREDENTIALS.set(credentials);
    Ok(())
}

fn credentials(registry: &str) -> Option<DockerCredentials> {
    CREDENTIALS
        .get()
        .cloned()
        .flatten()
        .map(|c| DockerCredentials {
            serveraddress: Some(registry.to_string()),
            ..c
        })
}

/// Pushes `image` (`repo:tag`), reports the digest line, and returns the digest
/// (`sha256:…`) the registry gave it.
pub async fn push(
    docker: &Docker,
    image: &str,
    registry: &str,
    out: &Output,
) -> Result<String, String> {
    let (repository, tag) = image
        .rsplit_once(':')
        .ok_or_else(|| format!("image {image} has no tag"))?;
    let options = PushImageOptionsBuilder::default().tag(tag).build();
    let mut stream = docker.push_image(repository, Some(options), credentials(registry));
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let fail = |message: String| {
            format!(
                "pushing {image} to the registry at {registry} failed: {message}; check that the registry is running and reachable from the engine"
            )
        };
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    return Err(fail(detail.message.unwrap_or_default().trim().to_string()));
                }
                if let Some(status) = info.status.filter(|s| s.contains("digest:")) {
                    digest = status
                        .split_whitespace()
                        .find(|word| word.starts_with("sha256:"))
                        .map(str::to_string);
                    out.detail(&status);
                }
            }
            Err(error) => return Err(fail(engine::describe(&error))),
        }
    }
    digest.ok_or_else(|| format!("pushing {image} to {registry} gave no digest"))
}

/// Makes sure the engine has `image`: pulls it from its registry when it is missing locally
/// (a restored server, a release whose local image was pruned). Local-only images
/// (`berth/APP:vN`) cannot be pulled: then the engine's own "no such image" stands.
/// With the release's `digest` the pull is by digest, then tagged `image`: a tag moved in the
/// registry since (by whoever could write it) is never what runs (finding 17).
pub async fn ensure_local(
    docker: &Docker,
    image: &str,
    digest: Option<&str>,
    out: &Output,
) -> Result<(), String> {
    if let Ok(local) = docker.inspect_image(image).await {
        let pinned = digest.is_none_or(|digest| {
            local
                .repo_digests
                .iter()
                .flatten()
                .any(|d| d.ends_with(&format!("@{digest}")))
        });
        if pinned {
            return Ok(());
        }
    }
    let Some((repository, tag)) = image.rsplit_once(':').filter(|(r, _)| r.contains('/')) else {
        return Ok(());
    };
    let registry = repository.split('/').next().unwrap_or_default();
    if !(registry.contains(':') || registry.contains('.')) {
        return Ok(());
    }
    out.detail(&format!("pulling {image} from the registry"));
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_image(repository)
        .tag(digest.unwrap_or(tag))
        .build();
    let mut stream = docker.create_image(Some(options), None, credentials(registry));
    while let Some(item) = stream.next().await {
        let fail = |message: String| {
            format!(
                "{image} is not on this engine and pulling it from {registry} failed: {message}; ps:rebuild builds it again"
            )
        };
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    return Err(fail(detail.message.unwrap_or_default().trim().to_string()));
                }
            }
            Err(error) => return Err(fail(engine::describe(&error))),
        }
    }
    if let Some(digest) = digest {
        let options = TagImageOptionsBuilder::default()
            .repo(repository)
            .tag(tag)
            .build();
        docker
            .tag_image(&format!("{repository}@{digest}"), Some(options))
            .await
            .map_err(|e| format!("cannot tag {image}: {}", engine::describe(&e)))?;
    }
    Ok(())
}
