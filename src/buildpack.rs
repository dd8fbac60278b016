//! Buildpacks: how an app without a Dockerfile is built. Each folder of `buildpacks/` (compiled
//! in) has a detect spec and a Dockerfile template; detection looks at the names at the root of
//! the pushed commit, and the rendered Dockerfile is built with the pushed tree as the context.
//!
//! **Architecture Invariant:** pure: names and texts in, a choice and a Dockerfile out. The
//! pipeline reads the tree and builds.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One buildpack: its name, detect spec and Dockerfile template.
#[derive(Debug, Clone)]
pub struct Buildpack {
    pub name: &'static str,
    pub spec: Spec,
    template: &'static str,
}

/// `buildpacks/<name>/detect.toml`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Lower is tried first.
    pub order: u32,
    pub summary: String,
    /// Any of these files at the root identifies the buildpack.
    pub files: Vec<String>,
    /// Any of these directories at the root identifies it too.
    #[serde(default)]
    pub dirs: Vec<String>,
    /// The default build (or only) image.
    pub base: String,
    /// The default runtime image of multi-stage buildpacks.
    pub runtime: Option<String>,
    /// The default web command (a Procfile `web:` line wins).
    pub web: Option<String>,
}

const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "static",
        include_str!("../buildpacks/static/detect.toml"),
        include_str!("../buildpacks/static/Dockerfile.tera"),
    ),
    (
        "python",
        include_str!("../buildpacks/python/detect.toml"),
        include_str!("../buildpacks/python/Dockerfile.tera"),
    ),
    (
        "node",
        include_str!("../buildpacks/node/detect.toml"),
        include_str!("../buildpacks/node/Dockerfile.tera"),
    ),
    (
        "go",
        include_str!("../buildpacks/go/detect.toml"),
        include_str!("../buildpacks/go/Dockerfile.tera"),
    ),
    (
        "ruby",
        include_str!("../buildpacks/ruby/detect.toml"),
        include_str!("../buildpacks/ruby/Dockerfile.tera"),
    ),
    (
        "rust",
        include_str!("../buildpacks/rust/detect.toml"),
        include_str!("../buildpacks/rust/Dockerfile.tera"),
    ),
    (
        "procfile",
        include_str!("../buildpacks/procfile/detect.toml"),
        include_str!("../buildpacks/procfile/Dockerfile.tera"),
    ),
];

/// Every buildpack, in detection order (the compiled-in specs, parsed once).
pub fn all() -> &'static [Buildpack] {
    static PACKS: std::sync::OnceLock<Vec<Buildpack>> = std::sync::OnceLock::new();
    PACKS.get_or_init(|| {
        let mut packs: Vec<Buildpack> = BUILTIN
            .iter()
            .map(|(name, spec, template)| Buildpack {
                name,
                spec: toml::from_str(spec)
                    .unwrap_or_else(|e| panic!("buildpacks/{name}/detect.toml: {e}")),
                template,
            })
            .collect();
        packs.sort_by_key(|p| p.spec.order);
        packs
    })
}

/// The names of image settings (`[buildpack_images]` keys): `NAME` and `NAME_runtime`.
pub fn image_keys() -> Vec<String> {
    all()
        .iter()
        .flat_map(|p| {
            let mut keys = vec![p.name.to_string()];
            if p.spec.runtime.is_some() {
                keys.push(format!("{}_runtime", p.name));
            }
            keys
        })
        .collect()
}

/// The names at the root of a commit.
#[derive(Debug, Default, Clone)]
pub struct Root {
    pub files: Vec<String>,
    pub dirs: Vec<String>,
}

/// The buildpack chosen for a commit, and why.
#[derive(Debug, Clone)]
pub struct Detection {
    pub buildpack: Buildpack,
    /// `requirements.txt`, `BUILDPACK=python`, `.buildpacks`.
    pub reason: String,
}

/// Picks the buildpack: `forced` (name, where it was set) wins, else the first whose files or
/// directories are at the root.
pub fn detect(root: &Root, forced: Option<(&str, &str)>) -> Result<Detection, String> {
    let packs = all();
    if let Some((name, source)) = forced {
        let name = name.trim();
        return packs
            .iter()
            .find(|p| p.name == name)
            .map(|buildpack| Detection {
                buildpack: buildpack.clone(),
                reason: format!("forced by {source}"),
            })
            .ok_or_else(|| {
                format!(
                    "unknown buildpack {name:?} (from {source}): use one of {}",
                    names().join(", ")
                )
            });
    }
    for buildpack in packs {
        let file = buildpack.spec.files.iter().find(|f| root.files.contains(f));
        let dir = buildpack.spec.dirs.iter().find(|d| root.dirs.contains(d));
        if let Some(found) = file.cloned().or_else(|| dir.map(|d| format!("{d}/"))) {
            return Ok(Detection {
                buildpack: buildpack.clone(),
                reason: found,
            });
        }
    }
    Err(format!(
        "no Dockerfile and no buildpack matches: looked for Dockerfile, {}; add one, or set BUILDPACK (buildpacks:list)",
        looked_for().join(", ")
    ))
}

fn names() -> Vec<&'static str> {
    all().iter().map(|p| p.name).collect()
}

fn looked_for() -> Vec<String> {
    all()
        .iter()
        .flat_map(|p| {
            p.spec
                .files
                .iter()
                .cloned()
                .chain(p.spec.dirs.iter().map(|d| format!("{d}/")))
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Buildpack {
    /// The image for `slot` (`base` or `runtime`): the server's setting, else the default.
    pub fn image(&self, slot: &str, images: &BTreeMap<String, String>) -> Option<String> {
        let (key, default) = match slot {
            "runtime" => (format!("{}_runtime", self.name), self.spec.runtime.clone()),
            _ => (self.name.to_string(), Some(self.spec.base.clone())),
        };
        images.get(&key).cloned().or(default)
    }

    /// The Dockerfile for a commit with these root names.
    pub fn dockerfile(
        &self,
        root: &Root,
        images: &BTreeMap<String, String>,
    ) -> Result<String, String> {
        let mut context = tera::Context::new();
        context.insert("base", &self.image("base", images));
        context.insert("runtime", &self.image("runtime", images));
        context.insert("web", &self.spec.web.clone().unwrap_or_default());
        context.insert("files", &root.files);
        context.insert("dirs", &root.dirs);
        tera::Tera::one_off(self.template, &context, false)
            .map_err(|e| format!("buildpacks/{}/Dockerfile.tera: {e}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(files: &[&str], dirs: &[&str]) -> Root {
        Root {
            files: files.iter().map(|s| s.to_string()).collect(),
            dirs: dirs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn every_buildpack_parses_and_renders() {
        let packs = all();
        assert_eq!(
            names(),
            ["python", "node", "go", "ruby", "rust", "static", "procfile"]
        );
        for pack in packs {
            let text = pack
                .dockerfile(
                    &root(
                        &pack
                            .spec
                            .files
                            .iter()
                            .map(String::as_str)
                            .collect::<Vec<_>>(),
                        &[],
                    ),
                    &BTreeMap::new(),
                )
                .unwrap();
            assert!(
                text.starts_with(&format!("FROM {}", pack.spec.base)),
                "{text}"
            );
        }
    }

    #[test]
    fn detection_order_forcing_and_no_match() {
        let both = root(
            &["package.json", "index.html", "requirements.txt"],
            &["public"],
        );
        let found = detect(&both, None).unwrap();
        assert_eq!(
            (found.buildpack.name, found.reason.as_str()),
            ("python", "requirements.txt")
        );
        let site = root(&["README.md"], &["public"]);
        assert_eq!(detect(&site, None).unwrap().reason, "public/");
        let forced = detect(&both, Some(("static", "BUILDPACK"))).unwrap();
        assert_eq!(
            (forced.buildpack.name, forced.reason.as_str()),
            ("static", "forced by BUILDPACK")
        );
        let unknown = detect(&both, Some(("cobol", ".buildpacks"))).unwrap_err();
        assert!(
            unknown.contains("unknown buildpack \"cobol\" (from .buildpacks)"),
            "{unknown}"
        );
        let none = detect(&root(&["README.md"], &[]), None).unwrap_err();
        assert!(
            none.contains("requirements.txt")
                && none.contains("go.mod")
                && none.contains("Procfile"),
            "{none}"
        );
    }

    #[test]
    fn images_come_from_the_config_and_lock_files_change_the_install() {
        let node = all().iter().find(|p| p.name == "node").unwrap();
        let images = BTreeMap::from([("node".to_string(), "local/node".to_string())]);
        let with_lock = node
            .dockerfile(&root(&["package.json", "package-lock.json"], &[]), &images)
            .unwrap();
        assert!(
            with_lock.starts_with("FROM local/node") && with_lock.contains("npm ci"),
            "{with_lock}"
        );
        let without = node
            .dockerfile(&root(&["package.json"], &[]), &images)
            .unwrap();
        assert!(
            without.contains("npm install") && !without.contains("package-lock"),
            "{without}"
        );
        let go = all().iter().find(|p| p.name == "go").unwrap();
        let text = go
            .dockerfile(&root(&["go.mod"], &[]), &BTreeMap::new())
            .unwrap();
        assert!(text.contains("FROM busybox:stable"), "{text}");
        assert!(image_keys().contains(&"rust_runtime".to_string()));
    }
}
