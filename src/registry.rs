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

pub(crate) fn credentials(registry: &str) -> Option<DockerCredentials> {
    CREDENTIALS
        .get()
        .cloned()
        .flatten()
        .map(|c| DockerCredentials {
            serveraddress: Some(registry.to_string()),
            ..c
        })
}

/// A docker CLI configuration directory holding berth's credentials for `registry`, for the
/// commands that hand them to the swarm (`docker stack deploy --with-registry-auth`: a task
/// placed on any node pulls its image with them). `<work_dir>/docker-cli/config.json`, 0600 in
/// a 0700 directory, rewritten each time (the credentials may have changed). None when the
/// registry takes anonymous pulls.
pub fn cli_config(
    work_dir: &std::path::Path,
    registry: &str,
) -> Result<Option<std::path::PathBuf>, String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let Some(credentials) = credentials(registry) else {
        return Ok(None);
    };
    let dir = work_dir.join("docker-cli");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let auth = base64(
        format!(
            "{}:{}",
            credentials.username.unwrap_or_default(),
            credentials.password.unwrap_or_default()
        )
        .as_bytes(),
    );
    let text = serde_json::json!({ "auths": { registry: { "auth": auth } } }).to_string();
    let path = dir.join("config.json");
    let next = dir.join("config.json.next");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&next)
        .map_err(|e| format!("cannot write {}: {e}", next.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", next.display()))?;
    std::fs::rename(&next, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(Some(dir))
}

/// Standard base64 with padding (the docker CLI's `auths.*.auth`).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_the_standard_padded_one() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"berth:s3cret"), "YmVydGg6czNjcmV0");
    }
}
