//! The build stage: a Dockerfile build through the engine API, output streamed to the pusher.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

use crate::engine;
use crate::output::Output;

/// Builds `tag` from a tar build context; never pulls a base image that is present locally.
pub async fn build(
    docker: &Docker,
    context: Vec<u8>,
    tag: &str,
    labels: HashMap<String, String>,
    out: &Output,
) -> Result<(), String> {
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut pending = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    pending.push_str(&text);
                    while let Some(end) = pending.find('\n') {
                        let line: String = pending.drain(..=end).collect();
                        out.detail(line.trim_end());
                    }
                }
                if let Some(detail) = info.error_detail {
                    return Err(format!(
                        "build failed: {}",
                        detail.message.unwrap_or_default().trim()
                    ));
                }
            }
            Err(error) => {
                if !pending.trim().is_empty() {
                    out.detail(pending.trim_end());
                }
                return Err(format!("build failed: {}", engine::describe(&error)));
            }
        }
    }
    if !pending.trim().is_empty() {
        out.detail(pending.trim_end());
    }
    Ok(())
}

/// `.dockerignore` rules, applied the way the Docker CLI applies them: the last matching pattern
/// wins, `!` re-includes, a pattern matching a directory excludes everything under it.
#[derive(Debug, Default)]
pub struct DockerIgnore {
    rules: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    pub fn parse(text: &str) -> DockerIgnore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (negated, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let parts = pattern
                    .split('/')
                    .filter(|p| !p.is_empty() && *p != ".")
                    .map(String::from)
                    .collect();
                (negated, parts)
            })
            .filter(|(_, parts): &(bool, Vec<String>)| !parts.is_empty())
            .collect();
        DockerIgnore { rules }
    }

    /// Whether the file at `path` (slash-separated, relative) stays out of the build context.
    /// The Dockerfile and .dockerignore are always sent, as the Docker CLI does.
    pub fn excludes(&self, path: &str) -> bool {
        if path == "Dockerfile" || path == ".dockerignore" {
            return false;
        }
        let parts: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for (negated, pattern) in &self.rules {
            let hit = (1..=parts.len()).any(|n| match_parts(pattern, &parts[..n]));
            if hit {
                excluded = !negated;
            }
        }
        excluded
    }
}

fn match_parts(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((head, tail)) => {
                glob(first.as_bytes(), head.as_bytes()) && match_parts(rest, tail)
            }
            None => false,
        },
    }
}

/// `*` and `?` within one path component; a backslash escapes the next character.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| glob(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && glob(rest, &name[1..]),
        Some((b'\\', rest)) if !rest.is_empty() => {
            name.first() == rest.first() && glob(&rest[1..], &name[1..])
        }
        Some((c, rest)) => name.first() == Some(c) && glob(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::DockerIgnore;

    #[test]
    fn dockerignore_rules() {
        let ignore = DockerIgnore::parse(
            "# comment\n*.log\nsecret/\n!secret/keep.txt\n**/tmp\n/build\nDockerfile\n",
        );
        assert!(ignore.excludes("debug.log"));
        assert!(
            !ignore.excludes("logs/debug.log"),
            "a bare *.log only matches at the root, as in Docker"
        );
        assert!(ignore.excludes("secret/key.pem"));
        assert!(!ignore.excludes("secret/keep.txt"));
        assert!(ignore.excludes("a/b/tmp/x"));
        assert!(ignore.excludes("tmp/x"));
        assert!(ignore.excludes("build/out.bin"));
        assert!(!ignore.excludes("src/build.rs"));
        assert!(!ignore.excludes("Dockerfile"));
        assert!(!ignore.excludes("index.html"));
    }
}
