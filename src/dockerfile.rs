//! What a pushed Dockerfile may ask the shared engine for. Pure: text in, a verdict out.
//!
//! Every app is built by the host's one engine, which holds every other app's images and can
//! reach the host's own network. So a member's Dockerfile may not name another app's images
//! (`FROM berth/other:v3`, `FROM 127.0.0.1:5055/other:v3`, `COPY --from=…`), nor any image of a
//! loopback registry but its own app's; and `ADD <url>` (fetched by the engine from the host's
//! network namespace, not from the build container's) must point at the public internet, which
//! the caller checks on the resolved address (`netguard`). Admins' pushes are trusted.

use std::collections::HashMap;

/// One instruction: its keyword (upper-cased), the rest of its (joined) lines, and the byte
/// offset in the text just past its last line.
struct Instruction {
    keyword: String,
    rest: String,
    end: usize,
}

fn instruction(whole: &str, end: usize) -> Option<Instruction> {
    let whole = whole.trim();
    if whole.is_empty() {
        return None;
    }
    let (keyword, rest) = whole.split_once(char::is_whitespace).unwrap_or((whole, ""));
    Some(Instruction {
        keyword: keyword.to_ascii_uppercase(),
        rest: rest.trim().to_string(),
        end,
    })
}

/// The instructions of a Dockerfile, read the way the engine's parser reads them: what it
/// takes for one instruction must be one here, or a `FROM` could hide inside what this reads as
/// a continued line (and go unchecked, and unscoped).
fn instructions(text: &str) -> Vec<Instruction> {
    // The engine drops a leading byte order mark before it looks for parser directives.
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut end = text.len() - body.len();
    let mut escape = '\\';
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_directives = true;
    for raw in body.split_inclusive('\n') {
        end += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        let trimmed = line.trim_start();
        if in_directives {
            match directive(trimmed) {
                Some(Directive::Escape(c)) => {
                    escape = c;
                    continue;
                }
                Some(Directive::Other) => continue,
                // Anything else, a blank line or an unknown directive too, ends them.
                None => in_directives = false,
            }
        }
        // Comments and blank lines, also inside a continued instruction, are skipped.
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        // The escape character ends a continued line even with spaces or tabs after it.
        if let Some(body) = line.trim_end_matches([' ', '\t']).strip_suffix(escape) {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        out.extend(instruction(&std::mem::take(&mut current), end));
    }
    out.extend(instruction(&current, end));
    out
}

enum Directive {
    Escape(char),
    /// `syntax` or `check`: known, no bearing here.
    Other,
}

/// A parser directive as the engine knows one: `# NAME = VALUE` with a known name (any case).
fn directive(line: &str) -> Option<Directive> {
    let (name, value) = line.strip_prefix('#')?.split_once('=')?;
    let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
    if value.is_empty() {
        return None;
    }
    match name.as_str() {
        "escape" => value.chars().next().map(Directive::Escape),
        "syntax" | "check" => Some(Directive::Other),
        _ => None,
    }
}

/// The build argument that scopes the engine's build cache to one app (its uid).
pub const CACHE_SCOPE_ARG: &str = "BERTH_CACHE_SCOPE";

/// `text` with `ARG BERTH_CACHE_SCOPE` after every `FROM` instruction (its continuation lines
/// and the parser directives kept as they were). The engine's classic builder reuses a cached
/// `RUN` layer when the parent and the command match, whoever built it; a declared build
/// argument is part of every later `RUN`'s cache key, so with each app's uid passed as
/// `BERTH_CACHE_SCOPE` no app's build reuses a layer another app's build made (COPY and ADD
/// layers are keyed by their content, which is the same whoever sent it).
pub fn scope_cache(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut copied = 0;
    for from in instructions(text).iter().filter(|i| i.keyword == "FROM") {
        out.push_str(&text[copied..from.end]);
        copied = from.end;
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("ARG ");
        out.push_str(CACHE_SCOPE_ARG);
        out.push('\n');
    }
    out.push_str(&text[copied..]);
    out
}

/// `$NAME`, `${NAME}` and `${NAME:-default}` expanded from `args`; an unknown name is an error
/// (berth passes no build arguments but `BERTH_CACHE_SCOPE`, declared after each `FROM`, so
/// only defaults apply).
fn expand(text: &str, args: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let (name, default) = if chars.peek() == Some(&'{') {
            chars.next();
            let mut inner = String::new();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                inner.push(c);
            }
            match inner.split_once(":-") {
                Some((name, default)) => (name.to_string(), Some(default.to_string())),
                None => (inner, None),
            }
        } else {
            let mut name = String::new();
            while let Some(c) = chars.peek() {
                if c.is_ascii_alphanumeric() || *c == '_' {
                    name.push(*c);
                    chars.next();
                } else {
                    break;
                }
            }
            (name, None)
        };
        match args
            .get(&name)
            .filter(|v| !v.is_empty())
            .cloned()
            .or(default)
        {
            Some(value) => out.push_str(&value),
            None => {
                return Err(format!(
                    "Dockerfile: ${name} has no default (berth passes no build arguments but its own)"
                ));
            }
        }
    }
    Ok(out)
}

/// An image reference as the engine resolves it: (registry host or "", path, lowercased).
fn split_reference(reference: &str) -> (String, String) {
    let reference = reference.to_ascii_lowercase();
    let without_digest = reference.split('@').next().unwrap_or("");
    let (first, rest) = without_digest
        .split_once('/')
        .unwrap_or(("", without_digest));
    let is_host = first.contains('.') || first.contains(':') || first == "localhost";
    let (host, path) = if is_host {
        (first.to_string(), rest.to_string())
    } else if first.is_empty() {
        (String::new(), rest.to_string())
    } else {
        (String::new(), format!("{first}/{rest}"))
    };
    // The tag goes: `path:tag` (a colon after the last slash).
    let path = match path.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name.to_string(),
        _ => path,
    };
    (host, path)
}

fn loopback_host(host: &str) -> bool {
    let bare = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(crate::netguard::is_internal)
}

/// Checks one image reference a member's Dockerfile names (`FROM`, `COPY --from`).
fn check_image(reference: &str, app: &str, registry: Option<&str>) -> Result<(), String> {
    let (host, path) = split_reference(reference);
    let own = path == app || path == format!("berth/{app}");
    let registry_host = registry.map(str::to_ascii_lowercase);
    if (host.is_empty() && path.starts_with("berth/") && !own)
        || ((registry_host.as_deref() == Some(host.as_str()) || loopback_host(&host))
            && !host.is_empty()
            && path != app)
    {
        return Err(format!(
            "Dockerfile: {reference:?} is not this app's image: builds may not use other apps' images or this host's registries"
        ));
    }
    Ok(())
}

/// What a member's Dockerfile reaches beyond its context, for the caller to check on the host.
#[derive(Debug, Default, PartialEq)]
pub struct Reaches {
    /// (host, port) of each `ADD <url>`: checked against the host's network.
    pub urls: Vec<(String, u16)>,
    /// Each image named by `FROM` or `COPY --from` (not a stage): checked on the engine.
    pub images: Vec<String>,
}

/// Checks what a member's Dockerfile names and says what it reaches. Errors name the refused
/// instruction.
pub fn check(text: &str, app: &str, registry: Option<&str>) -> Result<Reaches, String> {
    let mut args: HashMap<String, String> = HashMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut urls = Vec::new();
    let mut images = Vec::new();
    for Instruction { keyword, rest, .. } in instructions(text) {
        match keyword.as_str() {
            "ARG" => {
                for word in rest.split_whitespace() {
                    let (name, value) = word.split_once('=').unwrap_or((word, ""));
                    let value = value.trim_matches('"').trim_matches('\'');
                    args.entry(name.to_string())
                        .or_insert_with(|| value.to_string());
                }
            }
            "FROM" => {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let Some(image) = words.first() else {
                    continue;
                };
                let image = expand(image, &args)?;
                if !stages.contains(&image.to_ascii_lowercase()) && image != "scratch" {
                    check_image(&image, app, registry)?;
                    images.push(image.clone());
                }
                if let (Some(as_word), Some(name)) = (words.get(1), words.get(2))
                    && as_word.eq_ignore_ascii_case("as")
                {
                    stages.push(name.to_ascii_lowercase());
                }
            }
            "COPY" | "ADD" => {
                let mut sources = Vec::new();
                for word in rest.split_whitespace() {
                    if let Some(from) = word.strip_prefix("--from=") {
                        let from = expand(from, &args)?;
                        let is_stage = stages.contains(&from.to_ascii_lowercase())
                            || from.parse::<usize>().is_ok_and(|n| n < stages.len().max(1));
                        if !is_stage {
                            check_image(&from, app, registry)?;
                            images.push(from.clone());
                        }
                    } else if !word.starts_with("--") {
                        sources.push(word.trim_matches(['[', ']', ',', '"']).to_string());
                    }
                }
                if keyword == "ADD" {
                    sources.pop(); // the destination
                    for source in sources {
                        if let Some(destination) = url_host(&source) {
                            urls.push(destination);
                        } else if source.contains("://") || source.starts_with("git@") {
                            return Err(format!(
                                "Dockerfile: ADD {source:?}: only http:// and https:// URLs are fetched"
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Reaches { urls, images })
}

/// Whether an image a member's Dockerfile names, as the engine resolves it (`labels`, tags and
/// digests of what `reference` finds there), may be used by `app`: not another app's (berth
/// labels what it builds), and found by its name, not by an image id or id prefix (which
/// reaches any image on the engine, untagged build layers of other apps included).
pub fn engine_image_allowed(
    reference: &str,
    app: &str,
    owner: Option<&str>,
    repo_tags: &[String],
    repo_digests: &[String],
) -> Result<(), String> {
    if owner.is_some_and(|owner| owner != app) {
        return Err(format!(
            "Dockerfile: {reference:?} is another app's image: builds may not use other apps' images"
        ));
    }
    let short = reference
        .strip_prefix("docker.io/library/")
        .or_else(|| reference.strip_prefix("docker.io/"))
        .unwrap_or(reference);
    let last = short.rsplit('/').next().unwrap_or(short);
    let tagged = if short.contains('@') || last.contains(':') {
        short.to_string()
    } else {
        format!("{short}:latest")
    };
    let named = repo_tags.contains(&tagged)
        || repo_digests.iter().any(|d| *d == short)
        || (short.contains('@')
            && repo_digests.iter().any(|d| {
                let (name, digest) = short.split_once('@').unwrap_or_default();
                let name = name
                    .rsplit_once(':')
                    .filter(|(_, t)| !t.contains('/'))
                    .map_or(name, |(n, _)| n);
                *d == format!("{name}@{digest}")
            }));
    if !named {
        return Err(format!(
            "Dockerfile: {reference:?} names an image by its id: use repository:tag"
        ));
    }
    Ok(())
}

/// The host and port of an `http(s)://` URL.
fn url_host(source: &str) -> Option<(String, u16)> {
    let (rest, default) = if let Some(rest) = source.strip_prefix("https://") {
        (rest, 443)
    } else if let Some(rest) = source
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("http://"))
    {
        let _ = rest;
        (&source[7..], 80)
    } else {
        return None;
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(default), |p| p.parse().ok())?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRY: Option<&str> = Some("127.0.0.1:5055");

    #[test]
    fn other_apps_images_are_refused() {
        // Attack (finding 3): build FROM, or copy out of, another tenant's image.
        for bad in [
            "FROM berth/victim:v3\n",
            "FROM 127.0.0.1:5055/victim:v3\n",
            "FROM localhost:5055/victim\n",
            "FROM [::1]:5055/victim:v1\n",
            "FROM 127.0.0.1:5000/anything\n",
            "from BERTH/Victim:v3\n",
            "ARG BASE=berth/victim:v2\nFROM $BASE\n",
            "ARG R=127.0.0.1:5055\nFROM ${R}/victim:v1 AS x\n",
            "FROM busybox\nCOPY --from=127.0.0.1:5055/victim:v3 / /loot\n",
            "FROM busybox\nCOPY --from=berth/victim:v3 /app /loot\n",
            "FROM busybox\nCOPY \\\n  --from=berth/victim:v3 / /loot\n",
            "FROM berth/mine-2:v1\n",
            "FROM $UNSET\n",
            "FROM busybox\nADD git@github.com:a/b.git /src\n",
        ] {
            assert!(check(bad, "mine", REGISTRY).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_images_stages_and_public_ones_pass() {
        for good in [
            "FROM busybox:1.36\n",
            "FROM python:3.12-slim AS build\nFROM busybox\nCOPY --from=build /x /x\n",
            "FROM busybox\nCOPY --from=0 /x /x\n",
            "FROM berth/mine:v1\n",
            "FROM 127.0.0.1:5055/mine:v2\n",
            "FROM docker.io/library/busybox\n",
            "FROM ghcr.io/org/image:1\n",
            "FROM scratch\n",
            "ARG V=3.12\nFROM python:${V}-slim\n",
            "# escape=`\nFROM busybox\nRUN echo `\n  hi\n",
        ] {
            assert!(check(good, "mine", REGISTRY).is_ok(), "{good}");
        }
    }

    #[test]
    fn add_urls_are_listed_for_the_network_check() {
        let reaches = check(
            "FROM busybox\nADD http://127.0.0.1:5055/v2/_catalog /c\nADD https://example.com/a.tgz local.txt /d/\nCOPY a b\n",
            "mine",
            REGISTRY,
        )
        .unwrap();
        assert_eq!(reaches.images, vec!["busybox".to_string()]);
        assert_eq!(
            reaches.urls,
            vec![
                ("127.0.0.1".to_string(), 5055),
                ("example.com".to_string(), 443)
            ]
        );
    }

    #[test]
    fn images_found_by_id_or_owned_by_another_app_are_refused() {
        let tags = vec!["busybox:latest".to_string()];
        let none: Vec<String> = Vec::new();
        assert!(engine_image_allowed("busybox", "mine", None, &tags, &none).is_ok());
        assert!(
            engine_image_allowed(
                "docker.io/library/busybox:latest",
                "mine",
                None,
                &tags,
                &none
            )
            .is_ok()
        );
        // An id prefix finds the image too, but not by its name.
        assert!(engine_image_allowed("3f2a", "mine", None, &tags, &none).is_err());
        assert!(engine_image_allowed("sha256:3f2a", "mine", None, &none, &none).is_err());
        // Another app's image, whatever it is called; this app's own is fine.
        assert!(engine_image_allowed("busybox", "mine", Some("victim"), &tags, &none).is_err());
        assert!(engine_image_allowed("busybox", "mine", Some("mine"), &tags, &none).is_ok());
        let digests = vec!["r.example/x@sha256:ab".to_string()];
        assert!(
            engine_image_allowed("r.example/x@sha256:ab", "mine", None, &none, &digests).is_ok()
        );
        assert!(
            engine_image_allowed("r.example/x:v1@sha256:ab", "mine", None, &none, &digests).is_ok()
        );
    }

    #[test]
    fn a_from_cannot_hide_where_the_engine_reads_the_lines_otherwise() {
        // Attack: make this parser take another escape character than the engine does, so that
        // a line it thinks continued ends for the engine, and the next line's `FROM
        // <another app's image>` is read here as part of that line: never checked, never
        // scoped. A blank line or an unknown directive ends the directives for the engine; a
        // byte order mark does not stop them; spaces after the escape still continue a line.
        let victim = "FROM 127.0.0.1:5055/victim:v1";
        for text in [
            format!("\n# escape=`\nFROM base\nLABEL a=b`\n{victim}\n"),
            format!("# tool=x\n# escape=`\nFROM base\nLABEL a=b`\n{victim}\n"),
            format!(
                "{}# escape=`\nFROM base\nLABEL a=b\\\n{victim}\n",
                '\u{feff}'
            ),
            format!("#  ESCAPE = `\nFROM base\nLABEL a=b\\\n{victim}\n"),
        ] {
            let refused = check(&text, "thief", REGISTRY);
            assert!(refused.is_err(), "{text:?}: {refused:?}");
            assert_eq!(
                scope_cache(&text).matches("ARG BERTH_CACHE_SCOPE").count(),
                2,
                "{text:?}"
            );
        }
        // Spaces after the escape: the engine continues the line (and so does this parser), and
        // an empty line inside a continued instruction does not end it.
        let text = "FROM base \\ \n\n  AS one\nRUN x\n";
        assert_eq!(
            scope_cache(text),
            "FROM base \\ \n\n  AS one\nARG BERTH_CACHE_SCOPE\nRUN x\n"
        );
    }

    #[test]
    fn every_stage_declares_the_cache_scope() {
        // Attack (shared build cache): app A's `RUN curl …` layer, made with what A's DNS
        // answered, is reused by app B's identical line. Each stage declares the scope.
        let text = "# syntax=docker/dockerfile:1\nFROM base AS one\nRUN make\nFROM \\\n  base\nCOPY --from=one /a /a\nfrom base";
        assert_eq!(
            scope_cache(text),
            "# syntax=docker/dockerfile:1\nFROM base AS one\nARG BERTH_CACHE_SCOPE\nRUN make\nFROM \\\n  base\nARG BERTH_CACHE_SCOPE\nCOPY --from=one /a /a\nfrom base\nARG BERTH_CACHE_SCOPE\n"
        );
        // Another escape character, a comment inside a continued FROM, CRLF lines.
        let text = "# escape=`\r\nFROM `\r\n# note\r\n  base\r\nRUN x \\\r\n";
        assert_eq!(
            scope_cache(text),
            "# escape=`\r\nFROM `\r\n# note\r\n  base\r\nARG BERTH_CACHE_SCOPE\nRUN x \\\r\n"
        );
        // What `check` reads is unchanged by the scope.
        let scoped = scope_cache("ARG V=1\nFROM base:${V}\nRUN x");
        assert_eq!(
            check(&scoped, "a", REGISTRY).unwrap().images,
            vec!["base:1"]
        );
    }
}
