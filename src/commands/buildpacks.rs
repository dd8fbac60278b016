//! `buildpacks:list` and `buildpacks:detect`: which buildpacks exist, and which one an app's
//! current commit would be built with, and why.

use super::common::{Access, Args, app_for, internal, to_json};
use crate::buildpack;
use crate::git;
use crate::pipeline::{self, SourceCommit};
use crate::server::{Berth, Identity};

#[derive(serde::Serialize)]
struct Listed {
    name: &'static str,
    order: u32,
    summary: String,
    detected_by: Vec<String>,
    base_image: Option<String>,
    runtime_image: Option<String>,
}

pub async fn list(berth: &Berth, args: &Args) -> Result<String, String> {
    let images = &berth.config.buildpack_images;
    let listed: Vec<Listed> = buildpack::all()
        .iter()
        .map(|pack| Listed {
            name: pack.name,
            order: pack.spec.order,
            summary: pack.spec.summary.clone(),
            detected_by: pack
                .spec
                .files
                .iter()
                .cloned()
                .chain(pack.spec.dirs.iter().map(|d| format!("{d}/")))
                .collect(),
            base_image: pack.image("base", images),
            runtime_image: pack.image("runtime", images),
        })
        .collect();
    if args.json() {
        return to_json(&listed);
    }
    let mut text = format!("{:<10} {:<36} {}\n", "NAME", "DETECTED BY", "IMAGE");
    for pack in &listed {
        let image = match &pack.runtime_image {
            Some(runtime) => format!(
                "{} -> {runtime}",
                pack.base_image.clone().unwrap_or_default()
            ),
            None => pack.base_image.clone().unwrap_or_default(),
        };
        text += &format!(
            "{:<10} {:<36} {image}\n",
            pack.name,
            pack.detected_by.join(" ")
        );
    }
    text +=
        "A Dockerfile in the repo always wins; BUILDPACK (config var) or .buildpacks forces one.\n";
    Ok(text)
}

#[derive(serde::Serialize)]
struct Detected {
    app: String,
    commit: String,
    /// `dockerfile` or the buildpack's name.
    build: String,
    reason: String,
    processes: std::collections::BTreeMap<String, String>,
    healthcheck: Option<crate::manifest::Healthcheck>,
    /// The buildpack's generated Dockerfile (none for a Dockerfile app).
    dockerfile: Option<String>,
}

pub async fn detect(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let repo = git::repo_path(&berth.config.repos_dir(), &app.name);
    let branch = app
        .deploy_branch
        .clone()
        .unwrap_or_else(|| berth.config.deploy_branch.clone());
    let forced = berth
        .store
        .config(app.id)
        .await
        .map_err(internal)?
        .get("BUILDPACK")
        .cloned();
    let images = berth.config.buildpack_images.clone();
    let name = app.name.to_string();
    let detected = tokio::task::spawn_blocking(move || {
        let commit = git::branch_target(&repo, &branch)
            .map_err(|e| format!("cannot read the repo: {}", e.message()))?
            .ok_or_else(|| format!("{name} has no commit on {branch}: push one first"))?;
        let source = SourceCommit {
            repo,
            quarantine: None,
            commit: commit.clone(),
        };
        let plan = pipeline::plan_build(&source, forced.as_deref(), &images)?;
        let (build, reason, dockerfile) = match plan.generated {
            None => (
                "dockerfile".to_string(),
                "a Dockerfile in the repo always wins".to_string(),
                None,
            ),
            Some(generated) => (
                generated.buildpack.to_string(),
                generated.reason,
                Some(generated.dockerfile),
            ),
        };
        Ok::<_, String>(Detected {
            app: name.to_string(),
            commit,
            build,
            reason,
            dockerfile,
            processes: plan.manifest.processes,
            healthcheck: plan.manifest.healthcheck,
        })
    })
    .await
    .map_err(internal)??;
    if args.json() {
        return to_json(&detected);
    }
    if args.has("--dockerfile") {
        return Ok(detected
            .dockerfile
            .unwrap_or_else(|| "# the repo's own Dockerfile is used\n".to_string()));
    }
    let short = &detected.commit[..detected.commit.len().min(7)];
    let mut text = format!(
        "{} at {short}: {} ({})\n",
        detected.app, detected.build, detected.reason
    );
    for (process, command) in &detected.processes {
        text += &format!("  {process}: {command}\n");
    }
    Ok(text)
}
