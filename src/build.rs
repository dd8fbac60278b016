//! The build stage: a Dockerfile build through the engine API, output streamed to the pusher.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

use crate::engine;
use crate::output::Output;

/// A build context tar file, removed when this is dropped.
pub struct Context {
    path: std::path::PathBuf,
}

impl Context {
    /// A new empty file `build-<random>.tar` in `dir` (made 0700 if missing), mode 0600.
    pub fn create(dir: &std::path::Path) -> std::io::Result<Context> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let path = dir.join(format!("build-{:016x}.tar", rand::random::<u64>()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Context { path })
    }

    pub fn file(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new().write(true).open(&self.path)
    }

    /// The file as a stream of 64 KiB chunks, for the engine's build API.
    async fn body(
        &self,
    ) -> std::io::Result<
        impl futures_util::Stream<Item = Result<hyper::body::Bytes, std::io::Error>> + Send + 'static,
    > {
        let file = tokio::fs::File::open(&self.path).await?;
        let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buffer = vec![0u8; 64 * 1024];
            let read = file.read(&mut buffer).await?;
            if read == 0 {
                return Ok(None);
            }
            buffer.truncate(read);
            Ok(Some((hyper::body::Bytes::from(buffer), file)))
        });
        Ok(chunks)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Builds `tag` from a tar build context; never pulls a base image that is present locally.
/// `network` is where `RUN` steps run (a member's build: the guarded build network); none:
/// the engine's default bridge. `cache_scope` (the app's uid) is passed as the
/// `BERTH_CACHE_SCOPE` build argument that `dockerfile::scope_cache` declares in every stage.
pub async fn build(
    docker: &Docker,
    context: Context,
    tag: &str,
    labels: HashMap<String, String>,
    network: Option<&str>,
    cache_scope: &str,
    out: &Output,
) -> Result<(), String> {
    let args = HashMap::from([(crate::dockerfile::CACHE_SCOPE_ARG, cache_scope)]);
    let mut options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .buildargs(&args)
        .labels(&labels);
    if let Some(network) = network {
        options = options.networkmode(network);
    }
    let options = options.build();
    let body = context
        .body()
        .await
        .map_err(|e| format!("internal error: cannot read the build context: {e}"))?;
    let mut stream = docker.build_image(options, None, Some(bollard::body_try_stream(body)));
    let mut lines = crate::output::Lines::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    lines.feed(text.as_bytes(), out);
                }
                if let Some(detail) = info.error_detail {
                    return Err(format!(
                        "build failed: {}",
                        detail.message.unwrap_or_default().trim()
                    ));
                }
            }
            Err(error) => {
                lines.finish(out);
                return Err(format!("build failed: {}", engine::describe(&error)));
            }
        }
    }
    lines.finish(out);
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

/// Whether `pattern` (components, `**` spanning any number) matches `path` exactly. Dynamic
/// programming over (pattern, path) positions: time is their product, never exponential
/// (a pushed `.dockerignore` is a member's input).
fn match_parts(pattern: &[String], path: &[&str]) -> bool {
    // matches[j]: pattern[i..] matches path[j..], for the current i (from the end).
    let mut matches = vec![false; path.len() + 1];
    matches[path.len()] = true;
    for first in pattern.iter().rev() {
        let mut next = vec![false; path.len() + 1];
        for j in (0..=path.len()).rev() {
            next[j] = if first == "**" {
                // Skip nothing (pattern moves on), or swallow path[j] and stay on `**`.
                matches[j] || (j < path.len() && next[j + 1])
            } else {
                j < path.len() && matches[j + 1] && glob(first.as_bytes(), path[j].as_bytes())
            };
        }
        matches = next;
    }
    matches[0]
}

#[derive(Clone, Copy, PartialEq)]
enum Token {
    Star,
    Any,
    Byte(u8),
}

/// `*` and `?` within one path component; a backslash escapes the next character. The classic
/// two-pointer matcher that backtracks only to the last `*`: O(pattern × name) at worst.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut index = 0;
    while index < pattern.len() {
        tokens.push(match pattern[index] {
            b'*' => Token::Star,
            b'?' => Token::Any,
            b'\\' if index + 1 < pattern.len() => {
                index += 1;
                Token::Byte(pattern[index])
            }
            c => Token::Byte(c),
        });
        index += 1;
    }
    let (mut t, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, n));
                t += 1;
            }
            Some(Token::Any) => {
                t += 1;
                n += 1;
            }
            Some(Token::Byte(c)) if *c == name[n] => {
                t += 1;
                n += 1;
            }
            _ => match star {
                Some((star_t, star_n)) => {
                    t = star_t + 1;
                    n = star_n + 1;
                    star = Some((star_t, star_n + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|token| *token == Token::Star)
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
        let escaped = DockerIgnore::parse("a\\*b\n?.txt\n**/x/**/y\n");
        assert!(escaped.excludes("a*b") && !escaped.excludes("aXb"));
        assert!(escaped.excludes("1.txt") && !escaped.excludes("12.txt"));
        assert!(escaped.excludes("x/y") && escaped.excludes("p/x/q/r/y/z"));
    }

    #[test]
    fn hostile_patterns_match_in_linear_time() {
        // Attack (finding 7): a pushed .dockerignore whose pattern backtracks exponentially
        // against one long file name, pinning a core with no time limit.
        let started = std::time::Instant::now();
        let ignore = DockerIgnore::parse(&format!(
            "*a*a*a*a*a*a*a*a*a*a*a*a*b\n{}\n",
            "**/".repeat(30) + "z"
        ));
        assert!(!ignore.excludes(&"a".repeat(200)));
        let deep: Vec<String> = (0..200).map(|i| format!("d{i}")).collect();
        assert!(!ignore.excludes(&deep.join("/")));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
    }
}
