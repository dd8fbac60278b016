//! The registry stage: push the release image to the configured registry.

use bollard::Docker;
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

/// Pushes `image` (`repo:tag`) and reports the digest line.
pub async fn push(
    docker: &Docker,
    image: &str,
    registry: &str,
    out: &Output,
) -> Result<(), String> {
    let (repository, tag) = image
        .rsplit_once(':')
        .ok_or_else(|| format!("image {image} has no tag"))?;
    let options = PushImageOptionsBuilder::default().tag(tag).build();
    let mut stream = docker.push_image(repository, Some(options), None);
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
                    out.detail(&status);
                }
            }
            Err(error) => return Err(fail(engine::describe(&error))),
        }
    }
    Ok(())
}

/// Makes sure the engine has `image`: pulls it from its registry when it is missing locally
/// (a restored server, a release whose local image was pruned). Local-only images
/// (`berth/APP:vN`) cannot be pulled: then the engine's own "no such image" stands.
pub async fn ensure_local(docker: &Docker, image: &str, out: &Output) -> Result<(), String> {
    if docker.inspect_image(image).await.is_ok() {
        return Ok(());
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
        .tag(tag)
        .build();
    let mut stream = docker.create_image(Some(options), None, None);
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
    Ok(())
}
