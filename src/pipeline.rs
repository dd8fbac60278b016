//! One push, stage by stage: receive → build → registry → release → deploy → report.
//!
//! `on_push` is called with the ref updates git is about to make and returns whether to accept
//! them. It holds the app's deploy lock for the whole deploy.

use std::collections::HashMap;
use std::path::Path;

use crate::build::{self, DockerIgnore};
use crate::buildpack;
use crate::deploy;
use crate::git::{self, RefUpdate};
use crate::names::AppName;
use crate::ops;
use crate::output::Output;
use crate::push::session::PushSession;
use crate::registry;
use crate::server::Berth;

/// Decides a push: deploys the deploy branch when it moved, stores everything else.
pub async fn on_push(
    berth: &Berth,
    push: &PushSession,
    updates: &[RefUpdate],
    quarantine: Option<&Path>,
    out: &Output,
) -> bool {
    let deploy_branch = match deploy_branch_for(berth, push, updates).await {
        Ok(branch) => branch,
        Err(message) => {
            out.error(&message);
            return false;
        }
    };
    let mut deploy_update = None;
    for update in updates {
        match update.branch() {
            Some(branch) if branch == deploy_branch => deploy_update = Some(update),
            Some(branch) if update.is_delete() => out.step(&format!("Deleted branch {branch}")),
            Some(branch) => out.step(&format!(
                "Stored branch {branch} (only {deploy_branch} deploys)"
            )),
            None => out.step(&format!("Stored {}", update.name)),
        }
    }
    let Some(update) = deploy_update else {
        return true;
    };
    if update.is_delete() {
        out.step(&format!(
            "Deleted branch {deploy_branch}: nothing deployed, the running release keeps serving"
        ));
        return true;
    }
    // By id: the name the push came in for may have gone to another app meanwhile (finding 19).
    let mut locked = match ops::try_lock(berth, push.app_id).await {
        Some(locked) => locked,
        None => {
            out.step(&format!(
                "Waiting for the deploy of {} in progress to finish",
                push.app
            ));
            match ops::lock_id(berth, push.app_id).await {
                Ok(locked) => locked,
                Err(message) => {
                    out.error(&message);
                    return false;
                }
            }
        }
    };
    // Another push may have moved the branch while this one waited: git would then refuse the
    // ref update after the deploy, leaving a release live that no branch points at.
    let repo = push.repo.clone();
    let branch = deploy_branch.clone();
    let current = tokio::task::spawn_blocking(move || git::branch_target(&repo, &branch)).await;
    let expected = (!update.is_create()).then(|| update.old.clone());
    match current {
        Ok(Ok(current)) if current == expected => {}
        Ok(Ok(_)) => {
            out.error(&format!(
                "{deploy_branch} moved while this push waited (another push deployed first): fetch, merge and push again"
            ));
            return false;
        }
        _ => {
            out.error("internal error reading the repo: see the berth server log");
            return false;
        }
    }
    let previous = berth
        .store
        .running_release(push.app_id)
        .await
        .ok()
        .flatten();
    let short = &update.new[..update.new.len().min(7)];
    let request = BuildRequest {
        app: &push.app,
        repo: &push.repo,
        commit: &update.new,
        quarantine,
        description: &format!("push {deploy_branch}@{short}"),
        actor: &push.actor,
    };
    let built = build_and_release(berth, &request, &mut locked, out).await;
    if let Err(message) = &built {
        ops::build_failed(berth, &locked, &push.actor, message).await;
    }
    // The lock stays with the push until git has updated the ref and the client is answered.
    push.hold_lock(locked.into_guard());
    match built {
        Ok(()) => true,
        Err(message) => {
            out.error(&message);
            match previous {
                Some(release) => out.error(&format!(
                    "push rejected: v{} keeps serving; fix the problem and push again",
                    release.number
                )),
                None => {
                    out.error("push rejected: nothing was deployed; fix the problem and push again")
                }
            }
            false
        }
    }
}

/// The app's deploy branch: its own setting, else the server's; `master` when it is all there is.
async fn deploy_branch_for(
    berth: &Berth,
    push: &PushSession,
    updates: &[RefUpdate],
) -> Result<String, String> {
    let app = berth
        .store
        .app(&push.app)
        .await
        .map_err(|e| format!("internal error reading app: {e}"))?
        .ok_or_else(|| format!("app {} vanished during the push", push.app))?;
    if let Some(branch) = app.deploy_branch {
        return Ok(branch);
    }
    let default = berth.config.deploy_branch.clone();
    let pushes = |name: &str| {
        updates
            .iter()
            .any(|u| u.branch() == Some(name) && !u.is_delete())
    };
    if default == "main" && pushes("master") && !pushes("main") {
        let repo = push.repo.clone();
        let main_exists = tokio::task::spawn_blocking(move || git::branch_exists(&repo, "main"))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if !main_exists {
            return Ok("master".to_string());
        }
    }
    Ok(default)
}

/// A commit to build and release.
pub struct BuildRequest<'a> {
    pub app: &'a AppName,
    pub repo: &'a Path,
    pub commit: &'a str,
    /// Git's quarantine directory while a push is undecided; `None` for committed objects.
    pub quarantine: Option<&'a Path>,
    pub description: &'a str,
    pub actor: &'a str,
}

/// Builds the commit's Dockerfile, then releases and deploys the image with the app's config.
/// Used by pushes (inside the hook) and by `ps:rebuild`.
pub async fn build_and_release(
    berth: &Berth,
    request: &BuildRequest<'_>,
    record: &mut ops::LockedApp,
    out: &Output,
) -> Result<(), String> {
    let store = &berth.store;
    let config = &berth.config;
    let app = request.app.as_str();
    let commit = request.commit;
    // Admins' pushes are trusted; a member's is limited and checked (findings 3 and 28).
    let by_admin = crate::access::key_is_admin(berth, request.actor).await;
    // One member cannot take every core and the engine with parallel builds (finding 28).
    let _build =
        if by_admin {
            None
        } else {
            Some(berth.builds.enter(request.actor.to_string()).ok_or_else(|| {
            format!(
                "{} already has {} builds running (member_max_builds): wait for one to end",
                request.actor, config.member_max_builds
            )
        })?)
        };
    let scheduler = berth.scheduler().await?;
    let app_id = record.id;

    let config_vars = store
        .config(app_id)
        .await
        .map_err(|e| format!("internal error reading config: {e}"))?;
    let source_commit = SourceCommit {
        repo: request.repo.to_path_buf(),
        quarantine: request.quarantine.map(Path::to_path_buf),
        commit: commit.to_string(),
    };
    let (images, forced) = (
        config.buildpack_images.clone(),
        config_vars.get("BUILDPACK").cloned(),
    );
    let tmp = config.data_dir.join("tmp");
    let (plan, context, templates, dockerfile) = tokio::task::spawn_blocking(move || {
        let plan = plan_build(&source_commit, forced.as_deref(), &images)?;
        let dockerfile = match plan.generated {
            Some(_) => None,
            None => source_commit.read("Dockerfile")?,
        };
        // What the engine builds: the Dockerfile with the app's cache scope in every stage.
        let built = match (&plan.generated, &dockerfile) {
            (Some(generated), _) => generated.dockerfile.as_str(),
            (None, Some(text)) => text.as_str(),
            (None, None) => "",
        };
        let context = source_commit.context(&crate::dockerfile::scope_cache(built), &tmp)?;
        let templates = git::tree_id(
            &source_commit.repo,
            source_commit.quarantine.as_deref(),
            &source_commit.commit,
            ".berth/templates",
        )
        .map_err(|e| source_commit.unreadable(e))?;
        Ok::<_, String>((plan, context, templates, dockerfile))
    })
    .await
    .map_err(|e| format!("internal error: {e}"))??;
    // A member's Dockerfile runs on the engine every app shares: no other app's images, no
    // fetches into this host's network (`dockerfile`, `netguard`).
    if let Some(text) = &dockerfile
        && !by_admin
    {
        let reaches = crate::dockerfile::check(text, app, config.registry.as_deref())?;
        for image in &reaches.images {
            // As the engine resolves it: by name, and not another app's (finding 3).
            if let Some(found) = scheduler.image_identity(image).await {
                crate::dockerfile::engine_image_allowed(
                    image,
                    app,
                    found.owner.as_deref(),
                    &found.tags,
                    &found.digests,
                )?;
            }
        }
        for (host, port) in reaches.urls {
            crate::netguard::resolve(&host, port, config.allow_private_destinations)
                .await
                .map_err(|message| format!("Dockerfile: ADD from {host}: {message}"))?;
        }
    }
    if let Some(tree) = templates
        && !store
            .templates_approved(app_id, &tree)
            .await
            .map_err(|e| format!("internal error reading template approvals: {e}"))?
    {
        out.step(&format!(
            ".berth/templates/ is not approved: berth's built-in templates are used (an admin approves these with templates:approve {app})"
        ));
    }
    if let Some(generated) = &plan.generated {
        out.step(&format!(
            "Detected {} ({})",
            generated.buildpack, generated.reason
        ));
    }
    let manifest = plan.manifest;

    // Build first: a failed build makes no release, so release numbers count real releases.
    ops::build_started(berth, record, request.actor).await;
    match &plan.generated {
        None => out.step(&format!("Building {app} from Dockerfile")),
        Some(generated) => out.step(&format!(
            "Building {app} with the {} buildpack",
            generated.buildpack
        )),
    }
    let image_repo = registry::image_repository(config.registry.as_deref(), app);
    let build_tag = format!("{image_repo}:build-{}", &commit[..commit.len().min(12)]);
    let labels = HashMap::from([(deploy::names::LABEL_APP.to_string(), app.to_string())]);
    let started = std::time::Instant::now();
    // A member's RUN steps reach the public internet only, not this host nor its networks.
    let network = if by_admin {
        None
    } else {
        Some(deploy::network::member_build_network())
    };
    if network == Some("none") {
        out.detail(
            "the build network is not guarded here (see the server log): RUN steps have no network",
        );
    }
    let built = scheduler.build_image(context, &build_tag, labels, network, &record.uid, out);
    let built = async {
        let mut built = std::pin::pin!(built);
        // A crash while the build runs (crash-safety tests): 300 ms into it, or as it ends
        // when it takes less (a cached build).
        if std::env::var_os("BERTH_CRASH_AT").is_some() {
            tokio::select! {
                result = &mut built => {
                    crate::crash::point("build");
                    return result;
                }
                () = tokio::time::sleep(std::time::Duration::from_millis(300)) => crate::crash::point("build"),
            }
        }
        built.await
    }
    .await;
    berth
        .plane
        .observe(crate::dataplane::wire::Observed::Build {
            app: app.to_string(),
            ok: built.is_ok(),
            secs: started.elapsed().as_secs_f64(),
        })
        .await;
    built?;

    // app.json's formation is the initial scale: it applies to an app's first release only.
    if !manifest.formation.is_empty()
        && store
            .latest_release(app_id)
            .await
            .map_err(|e| format!("internal error reading releases: {e}"))?
            .is_none()
    {
        let formation = serde_json::to_string(&manifest.formation).map_err(|e| e.to_string())?;
        store
            .set_formation(app_id, &formation)
            .await
            .map_err(|e| format!("internal error recording the formation: {e}"))?;
        record.reload(berth).await?;
    }
    let manifest_json = serde_json::to_string(&manifest).map_err(|e| e.to_string())?;
    let source = ops::Source::Build {
        build_tag: &build_tag,
        image_repository: &image_repo,
    };
    let plan = ops::Plan {
        commit,
        config: &config_vars,
        manifest: &manifest_json,
        description: request.description,
        actor: request.actor,
        canary: store
            .canary(app_id)
            .await
            .map_err(|e| format!("internal error reading the canary: {e}"))?
            .map(|c| c.weight),
    };
    ops::create_deploy_and_follow(berth, &scheduler, record, source, plan, out)
        .await
        .map(|_| ())
}

/// A commit to read: the bare repo, git's quarantine dir while a push is undecided, the commit.
pub struct SourceCommit {
    pub repo: std::path::PathBuf,
    pub quarantine: Option<std::path::PathBuf>,
    pub commit: String,
}

impl SourceCommit {
    fn unreadable(&self, error: git2::Error) -> String {
        let short = &self.commit[..self.commit.len().min(7)];
        format!("cannot read the commit {short}: {}", error.message())
    }

    fn read(&self, name: &str) -> Result<Option<String>, String> {
        git::read_root_file(&self.repo, self.quarantine.as_deref(), &self.commit, name)
            .map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned()))
            .map_err(|e| self.unreadable(e))
    }

    /// The build context: the tree minus `.dockerignore`d files, with `dockerfile` as its
    /// `Dockerfile` (the tree's own is left out), written as a tar file under `dir` (0600;
    /// removed when the returned guard is dropped), so that a large repo never sits in memory
    /// whole.
    fn context(&self, dockerfile: &str, dir: &Path) -> Result<build::Context, String> {
        let ignore = DockerIgnore::parse(&self.read(".dockerignore")?.unwrap_or_default());
        let extra: Vec<(&str, &[u8])> = vec![("Dockerfile", dockerfile.as_bytes())];
        let context = build::Context::create(dir)
            .map_err(|e| format!("internal error: cannot write the build context: {e}"))?;
        let file = std::io::BufWriter::new(
            context
                .file()
                .map_err(|e| format!("internal error: cannot write the build context: {e}"))?,
        );
        let written = git::archive_tree(
            &self.repo,
            self.quarantine.as_deref(),
            &self.commit,
            &|path| path != "Dockerfile" && !ignore.excludes(path),
            &extra,
            file,
        )
        .map_err(|e| self.unreadable(e))?;
        written
            .into_inner()
            .map_err(|e| format!("internal error: cannot write the build context: {e}"))?;
        Ok(context)
    }
}

/// How a commit is built: its own Dockerfile, or a buildpack's.
pub struct BuildPlan {
    /// None: the repo's Dockerfile.
    pub generated: Option<Generated>,
    /// The Procfile and app.json of the commit.
    pub manifest: crate::manifest::Manifest,
}

/// A buildpack's Dockerfile for the commit, and why that buildpack.
pub struct Generated {
    pub buildpack: &'static str,
    pub reason: String,
    pub dockerfile: String,
}

/// Decides how to build a commit: a Dockerfile in the repo always wins; else the buildpack forced
/// by `forced` (the BUILDPACK config var) or a `.buildpacks` file, else the first detected.
/// Blocking (git); also behind `buildpacks:detect`.
pub fn plan_build(
    source: &SourceCommit,
    forced: Option<&str>,
    images: &std::collections::BTreeMap<String, String>,
) -> Result<BuildPlan, String> {
    let (files, dirs) = git::root_names(&source.repo, source.quarantine.as_deref(), &source.commit)
        .map_err(|e| source.unreadable(e))?;
    let manifest = crate::manifest::Manifest::from_files(
        source.read("Procfile")?.as_deref(),
        source.read("app.json")?.as_deref(),
    )?;
    if files.iter().any(|f| f == "Dockerfile") {
        return Ok(BuildPlan {
            generated: None,
            manifest,
        });
    }
    let root = buildpack::Root { files, dirs };
    let from_file = match &forced {
        Some(_) => None,
        None => source.read(".buildpacks")?,
    };
    let forced = match (forced, from_file.as_deref()) {
        (Some(name), _) => Some((name, "the BUILDPACK config var")),
        (None, Some(text)) => Some((text.lines().next().unwrap_or(""), ".buildpacks")),
        (None, None) => None,
    };
    let detection = buildpack::detect(&root, forced)?;
    let dockerfile = detection.buildpack.dockerfile(&root, images)?;
    Ok(BuildPlan {
        generated: Some(Generated {
            buildpack: detection.buildpack.name,
            reason: detection.reason,
            dockerfile,
        }),
        manifest,
    })
}

/// Where a sync may connect: unless `allow_internal`, the URL's host must resolve to public
/// addresses only, and git is pinned to the first of them.
async fn sync_pin(url: &str, allow_internal: bool) -> Result<Option<git::Pin>, String> {
    let Some((transport, host, port)) = git::remote_destination(url) else {
        return Ok(None);
    };
    let plain = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b));
    if !plain {
        return Err(format!("{host:?} is not a host name"));
    }
    if allow_internal {
        return Ok(None);
    }
    let addresses = crate::netguard::resolve(&host, port, false).await?;
    Ok(Some(git::Pin {
        transport,
        host,
        port,
        address: addresses[0].ip(),
    }))
}

/// Where `git:sync` fetches from: a URL and an optional ref (branch, tag or commit).
pub struct SyncSource<'a> {
    pub url: &'a str,
    pub git_ref: Option<&'a str>,
}

/// `git:sync` and inbound webhooks: fetches the app's sync source (or `source`, recorded once
/// the fetch works), and deploys what it names as if it had been pushed to the deploy branch,
/// which then points at it. `pushed_ref` (from a webhook's payload): a push to another branch
/// than the source's does nothing. Gives what happened.
pub async fn sync(
    berth: &Berth,
    app: &crate::store::App,
    source: Option<SyncSource<'_>>,
    pushed_ref: Option<&str>,
    actor: &str,
    allow_internal: bool,
    out: &Output,
) -> Result<String, String> {
    let store = &berth.store;
    let internal = |e: sqlx::Error| format!("internal error: {e}");
    let recorded = store.sync(app.id).await.map_err(internal)?;
    let (url, git_ref) = match (&source, &recorded) {
        (Some(s), _) => (s.url.to_string(), s.git_ref.map(String::from)),
        (None, Some(r)) => (r.url.clone(), r.git_ref.clone()),
        (None, None) => {
            return Err(format!(
                "{} has no sync source: git:sync {} URL [REF] first",
                app.name, app.name
            ));
        }
    };
    if let (Some(pushed), Some(wanted)) = (pushed_ref, git_ref.as_deref()) {
        let pushed_branch = pushed.strip_prefix("refs/heads/").unwrap_or(pushed);
        if pushed_branch != wanted && pushed != wanted {
            return Ok(format!(
                "a push to {pushed}, not {wanted}: nothing to deploy"
            ));
        }
    }
    let mut app = ops::lock(berth, app).await?;
    let name = app.name.clone();
    let repo = git::repo_path(&berth.config.repos_dir(), &name);
    let shown_ref = git_ref.as_deref().unwrap_or("HEAD");
    out.step(&format!("Fetching {shown_ref} from {url}"));
    let pin = sync_pin(&url, allow_internal).await?;
    let commit = git::fetch(
        &repo,
        &url,
        git_ref.as_deref(),
        std::time::Duration::from_secs(300),
        &berth.config.data_dir.join("sync_known_hosts"),
        pin.as_ref(),
    )
    .await?;
    if source.is_some() {
        store
            .set_sync(app.id, &url, git_ref.as_deref(), actor)
            .await
            .map_err(internal)?;
    }
    let branch = app
        .deploy_branch
        .clone()
        .unwrap_or_else(|| berth.config.deploy_branch.clone());
    let short = &commit[..commit.len().min(7)];
    let running = store.running_release(app.id).await.map_err(internal)?;
    let current = {
        let (repo, branch) = (repo.clone(), branch.clone());
        tokio::task::spawn_blocking(move || git::branch_target(&repo, &branch))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    if current.as_deref() == Some(commit.as_str())
        && running.as_ref().is_some_and(|r| r.commit_sha == commit)
    {
        return Ok(format!(
            "{} already runs {short}: nothing to deploy",
            app.name
        ));
    }
    out.detail(&format!("{shown_ref} is {short}"));
    let request = BuildRequest {
        app: &name,
        repo: &repo,
        commit: &commit,
        quarantine: None,
        description: &format!("git:sync {shown_ref}@{short}"),
        actor,
    };
    if let Err(message) = build_and_release(berth, &request, &mut app, out).await {
        ops::build_failed(berth, &app, actor, &message).await;
        let kept = running.map_or("nothing was deployed".to_string(), |r| {
            format!("v{} keeps serving", r.number)
        });
        return Err(format!("{message}; {kept}"));
    }
    let (repo_path, branch_name, synced) = (repo.clone(), branch.clone(), commit.clone());
    tokio::task::spawn_blocking(move || git::set_branch(&repo_path, &branch_name, &synced))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("deployed, but cannot move {branch}: {}", e.message()))?;
    Ok(format!(
        "{} deployed {short} from {url} ({branch} now points at it)",
        app.name
    ))
}
