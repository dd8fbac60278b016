//! Bare repos, the git services and reading what was pushed.
//!
//! **Architecture Invariant:** this is the only module that knows git2 or the `git` binary.
//! git2 calls are blocking: callers run them inside `spawn_blocking`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use git2::{ObjectType, Oid, Repository, RepositoryInitOptions, TreeWalkMode, TreeWalkResult};

use crate::names::AppName;

/// The two git services berth speaks over SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitService {
    ReceivePack,
    UploadPack,
}

impl GitService {
    pub fn from_command_name(name: &str) -> Option<GitService> {
        match name {
            "git-receive-pack" => Some(GitService::ReceivePack),
            "git-upload-pack" => Some(GitService::UploadPack),
            _ => None,
        }
    }

    /// The real git binary on the bare repo; argv only, a clean environment plus `env`.
    /// Pushes run berth's own hooks directory, never hooks stored in the repo.
    pub fn command(
        self,
        repo: &Path,
        hooks_dir: &Path,
        env: &[(String, String)],
        max_input: u64,
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("git");
        command.env_clear();
        command.env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        );
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match self {
            GitService::ReceivePack => {
                let mut hooks = std::ffi::OsString::from("core.hooksPath=");
                hooks.push(hooks_dir);
                // A push larger than max_input is refused by git itself, before it is stored.
                command
                    .arg("-c")
                    .arg(hooks)
                    .arg("-c")
                    .arg(format!("receive.maxInputSize={max_input}"))
                    .args(["-c", "receive.unpackLimit=1", "receive-pack"]);
            }
            GitService::UploadPack => {
                command.args([
                    "-c",
                    "uploadpack.allowFilter=true",
                    "upload-pack",
                    "--strict",
                ]);
            }
        }
        command
            .arg(repo)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }
}

pub fn repo_path(repos_dir: &Path, app: &AppName) -> PathBuf {
    repos_dir.join(format!("{app}.git"))
}

/// Creates the app's bare repo if it does not exist yet.
pub fn ensure_bare_repo(path: &Path, initial_branch: &str) -> Result<(), git2::Error> {
    if path.join("HEAD").exists() {
        return Ok(());
    }
    let mut options = RepositoryInitOptions::new();
    options.bare(true).initial_head(initial_branch).mkpath(true);
    let repo = Repository::init_opts(path, &options)?;
    let mut config = repo.config()?;
    // Keep pushed packs as they are: exploding them into loose objects costs seconds per 100 MB.
    config.set_i32("receive.unpackLimit", 1)?;
    config.set_bool("receive.fsckObjects", false)?;
    Ok(())
}

/// One line of a pre-receive hook's input: `old new refname`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub name: String,
}

const ZERO: &str = "0000000000000000000000000000000000000000";

impl RefUpdate {
    pub fn parse_lines(text: &str) -> Vec<RefUpdate> {
        text.lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let (old, new, name) = (parts.next()?, parts.next()?, parts.next()?);
                Some(RefUpdate {
                    old: old.into(),
                    new: new.into(),
                    name: name.into(),
                })
            })
            .collect()
    }
    pub fn is_create(&self) -> bool {
        self.old == ZERO
    }
    pub fn is_delete(&self) -> bool {
        self.new == ZERO
    }
    pub fn branch(&self) -> Option<&str> {
        self.name.strip_prefix("refs/heads/")
    }
}

/// Whether `refs/heads/<branch>` exists in the repo.
pub fn branch_exists(repo: &Path, branch: &str) -> Result<bool, git2::Error> {
    Ok(branch_target(repo, branch)?.is_some())
}

/// The commit `refs/heads/<branch>` points at, as a hex id; `None` when the branch does not exist.
pub fn branch_target(repo: &Path, branch: &str) -> Result<Option<String>, git2::Error> {
    let repo = Repository::open_bare(repo)?;
    let target = repo
        .find_reference(&format!("refs/heads/{branch}"))
        .ok()
        .and_then(|r| r.target())
        .map(|oid| oid.to_string());
    Ok(target)
}

/// Opens the repo, seeing objects still in the push's quarantine directory.
fn open_with_quarantine(repo: &Path, quarantine: Option<&Path>) -> Result<Repository, git2::Error> {
    let repository = Repository::open_bare(repo)?;
    if let Some(dir) = quarantine {
        let dir = dir
            .to_str()
            .ok_or_else(|| git2::Error::from_str("quarantine path is not UTF-8"))?;
        repository.odb()?.add_disk_alternate(dir)?;
    }
    Ok(repository)
}

/// A file at the root of a commit's tree, if present and a blob.
pub fn read_root_file(
    repo: &Path,
    quarantine: Option<&Path>,
    commit: &str,
    name: &str,
) -> Result<Option<Vec<u8>>, git2::Error> {
    let repository = open_with_quarantine(repo, quarantine)?;
    let tree = repository.find_commit(Oid::from_str(commit)?)?.tree()?;
    let Some(entry) = tree.get_name(name) else {
        return Ok(None);
    };
    if entry.kind() != Some(ObjectType::Blob) {
        return Ok(None);
    }
    let (size, _) = repository.odb()?.read_header(entry.id())?;
    if size > ROOT_FILE_LIMIT {
        return Err(git2::Error::from_str(&format!(
            "{name} is {} KiB: berth reads at most {} KiB of it",
            size >> 10,
            ROOT_FILE_LIMIT >> 10
        )));
    }
    Ok(Some(repository.find_blob(entry.id())?.content().to_vec()))
}

/// The largest Procfile, app.json, `.dockerignore` or `.buildpacks` berth reads.
pub const ROOT_FILE_LIMIT: usize = 1 << 20;

/// The names at the root of a commit's tree: (files, directories), each sorted.
pub fn root_names(
    repo: &Path,
    quarantine: Option<&Path>,
    commit: &str,
) -> Result<(Vec<String>, Vec<String>), git2::Error> {
    let repository = open_with_quarantine(repo, quarantine)?;
    let tree = repository.find_commit(Oid::from_str(commit)?)?.tree()?;
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for entry in tree.iter() {
        let Some(name) = entry.name() else { continue };
        match entry.kind() {
            Some(ObjectType::Blob) => files.push(name.to_string()),
            Some(ObjectType::Tree) => dirs.push(name.to_string()),
            _ => {}
        }
    }
    Ok((files, dirs))
}

/// Every blob directly under `dir` (a slash-separated path) in the commit: (file name, bytes).
pub fn read_dir_files(
    repo: &Path,
    commit: &str,
    dir: &str,
) -> Result<Vec<(String, Vec<u8>)>, git2::Error> {
    let repository = Repository::open_bare(repo)?;
    let tree = repository.find_commit(Oid::from_str(commit)?)?.tree()?;
    let Ok(entry) = tree.get_path(Path::new(dir)) else {
        return Ok(Vec::new());
    };
    let Some(subtree) = entry.to_object(&repository)?.as_tree().cloned() else {
        return Ok(Vec::new());
    };
    let odb = repository.odb()?;
    let mut files = Vec::new();
    for item in subtree.iter() {
        if item.kind() == Some(ObjectType::Blob)
            && let Some(name) = item.name()
        {
            if files.len() >= TEMPLATE_FILES_LIMIT {
                return Err(git2::Error::from_str(&format!(
                    "{dir}/ has more than {TEMPLATE_FILES_LIMIT} files"
                )));
            }
            let (size, _) = odb.read_header(item.id())?;
            if size > TEMPLATE_SIZE_LIMIT {
                return Err(git2::Error::from_str(&format!(
                    "{dir}/{name} is over {} KiB",
                    TEMPLATE_SIZE_LIMIT >> 10
                )));
            }
            files.push((
                name.to_string(),
                repository.find_blob(item.id())?.content().to_vec(),
            ));
        }
    }
    Ok(files)
}

/// The most files one `.berth/templates/<target>/` may hold.
pub const TEMPLATE_FILES_LIMIT: usize = 32;
/// The largest template file berth reads from a repo.
pub const TEMPLATE_SIZE_LIMIT: usize = 64 << 10;

/// The id of the tree at `path` in the commit (`.berth/templates`), if there is one: what an
/// admin approves with `templates:approve`.
pub fn tree_id(
    repo: &Path,
    quarantine: Option<&Path>,
    commit: &str,
    path: &str,
) -> Result<Option<String>, git2::Error> {
    let repository = open_with_quarantine(repo, quarantine)?;
    let tree = repository.find_commit(Oid::from_str(commit)?)?.tree()?;
    Ok(tree
        .get_path(Path::new(path))
        .ok()
        .filter(|entry| entry.kind() == Some(ObjectType::Tree))
        .map(|entry| entry.id().to_string()))
}

/// The commit's tree as a tar archive (no work tree), keeping the files `include(path)` accepts.
pub fn archive_tree<W: std::io::Write>(
    repo: &Path,
    quarantine: Option<&Path>,
    commit: &str,
    include: &dyn Fn(&str) -> bool,
    extra: &[(&str, &[u8])],
    sink: W,
) -> Result<W, git2::Error> {
    let repository = open_with_quarantine(repo, quarantine)?;
    let commit = repository.find_commit(Oid::from_str(commit)?)?;
    let mtime = u64::try_from(commit.time().seconds()).unwrap_or(0);
    let tree = commit.tree()?;
    let mut builder = tar::Builder::new(sink);
    let mut failure: Option<git2::Error> = None;
    tree.walk(TreeWalkMode::PreOrder, |root, entry| {
        let Some(name) = entry.name() else {
            return TreeWalkResult::Skip;
        };
        if entry.kind() != Some(ObjectType::Blob) {
            return TreeWalkResult::Ok; // trees are walked; submodules (commits) are skipped
        }
        let path = format!("{root}{name}");
        if !include(&path) {
            return TreeWalkResult::Ok;
        }
        let result = (|| -> Result<(), git2::Error> {
            let blob = repository.find_blob(entry.id())?;
            let mut header = tar::Header::new_gnu();
            header.set_mtime(mtime);
            header.set_uid(0);
            header.set_gid(0);
            let io = |e: std::io::Error| git2::Error::from_str(&format!("tar {path}: {e}"));
            if entry.filemode() == 0o120000 {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                let target = String::from_utf8_lossy(blob.content()).into_owned();
                builder
                    .append_link(&mut header, &path, &target)
                    .map_err(io)?;
            } else {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if entry.filemode() == 0o100755 {
                    0o755
                } else {
                    0o644
                });
                header.set_size(blob.content().len() as u64);
                builder
                    .append_data(&mut header, &path, blob.content())
                    .map_err(io)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => TreeWalkResult::Ok,
            Err(error) => {
                failure = Some(error);
                TreeWalkResult::Abort
            }
        }
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    for (path, bytes) in extra {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(mtime);
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        builder
            .append_data(&mut header, path, *bytes)
            .map_err(|e| git2::Error::from_str(&format!("tar {path}: {e}")))?;
    }
    builder
        .into_inner()
        .map_err(|e| git2::Error::from_str(&format!("tar: {e}")))
}

/// Where `fetch` leaves what it fetched.
const SYNC_REF: &str = "refs/berth/sync";

/// How `fetch` reaches a remote's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Ssh,
    Git,
}

/// The host and port a repository URL makes git connect to (`None` for local paths and
/// `file://`): `https://h[:p]/…`, `http://…`, `ssh://[u@]h[:p]/…`, `git://h[:p]/…`, `u@h:path`.
pub fn remote_destination(url: &str) -> Option<(Transport, String, u16)> {
    let authority = |rest: &str| rest.split(['/', '?', '#']).next().unwrap_or("").to_string();
    let split_port = |authority: &str, default: u16| -> Option<(String, u16)> {
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if let Some(rest) = host_port.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => default,
                None => return None,
            };
            return Some((host.to_string(), port));
        }
        match host_port.rsplit_once(':') {
            Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
            None => Some((host_port.to_string(), default)),
        }
    };
    let (transport, host, port) = if let Some(rest) = url.strip_prefix("https://") {
        let (h, p) = split_port(&authority(rest), 443)?;
        (Transport::Http, h, p)
    } else if let Some(rest) = url.strip_prefix("http://") {
        let (h, p) = split_port(&authority(rest), 80)?;
        (Transport::Http, h, p)
    } else if let Some(rest) = url.strip_prefix("ssh://") {
        let (h, p) = split_port(&authority(rest), 22)?;
        (Transport::Ssh, h, p)
    } else if let Some(rest) = url.strip_prefix("git://") {
        let (h, p) = split_port(&authority(rest), 9418)?;
        (Transport::Git, h, p)
    } else if let Some((user_host, _)) = url.split_once(':')
        && user_host.contains('@')
        && !user_host.contains('/')
    {
        let host = user_host.rsplit_once('@').map_or(user_host, |(_, h)| h);
        (Transport::Ssh, host.to_string(), 22)
    } else {
        return None;
    };
    (!host.is_empty()).then_some((transport, host, port))
}

/// A remote's host pinned to the address that was checked (`netguard`), so git cannot resolve
/// the name again to somewhere else.
#[derive(Debug, Clone)]
pub struct Pin {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
    pub address: std::net::IpAddr,
}

/// Fetches `git_ref` (a branch, tag or commit; none: the remote's HEAD) of the repository at
/// `url` into the bare repo and gives the commit it names. The real `git`, argv only, with a
/// clean environment: no prompts, no `ext::` transport, no hooks, a time limit. ssh gets none
/// of root's identity: no `~/.ssh/config`, keys, agent or known_hosts (`known_hosts` is
/// berth's own file, first contact accepted, a changed key refused). With a `pin`, git
/// connects to that address only.
pub async fn fetch(
    repo: &Path,
    url: &str,
    git_ref: Option<&str>,
    limit: std::time::Duration,
    known_hosts: &Path,
    pin: Option<&Pin>,
) -> Result<String, String> {
    let known_hosts = known_hosts.to_string_lossy();
    if known_hosts.contains('\'') {
        return Err("berth's data_dir has a quote in its path: git:sync over ssh cannot name its known_hosts".into());
    }
    let mut ssh = format!(
        "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityFile=/dev/null -o IdentityAgent=none -o ForwardAgent=no -o ControlMaster=no -o ControlPath=none -o ProxyCommand=none -o ProxyJump=none -o GlobalKnownHostsFile=/dev/null -o UserKnownHostsFile='{known_hosts}' -o StrictHostKeyChecking=accept-new -o ConnectTimeout=20"
    );
    let mut url = url.to_string();
    let mut pin_args: Vec<String> = Vec::new();
    if let Some(pin) = pin {
        let literal = match pin.address {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        match pin.transport {
            Transport::Http => {
                pin_args.extend([
                    "-c".to_string(),
                    format!("http.curloptResolve={}:{}:{literal}", pin.host, pin.port),
                ]);
            }
            Transport::Ssh => {
                // Host names are checked to a charset by netguard's caller (no shell words).
                ssh += &format!(" -o HostName={} -o HostKeyAlias={}", pin.address, pin.host);
            }
            Transport::Git => {
                url = url.replacen(
                    &format!("git://{}", pin.host),
                    &format!("git://{literal}"),
                    1,
                );
            }
        }
    }
    let mut command = tokio::process::Command::new("git");
    command
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("HOME", "/nonexistent")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_SSH_COMMAND", ssh)
        .args(pin_args)
        .args([
            "-c",
            "protocol.ext.allow=never",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "receive.unpackLimit=1",
            "-c",
            "http.followRedirects=false",
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-recurse-submodules",
            "--no-write-fetch-head",
            "--",
            &url,
        ])
        .arg(format!("+{}:{SYNC_REF}", git_ref.unwrap_or("HEAD")))
        .current_dir(repo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .map_err(|_| format!("fetching {url} took longer than {}s", limit.as_secs()))?
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("git fetch failed")
            .trim_start_matches("fatal: ")
            .to_string();
        return Err(format!(
            "cannot fetch {} from {url}: {reason}",
            git_ref.unwrap_or("HEAD")
        ));
    }
    let repo = repo.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<String, git2::Error> {
        let repository = Repository::open_bare(&repo)?;
        let commit = repository.revparse_single(&format!("{SYNC_REF}^{{commit}}"))?;
        Ok(commit.id().to_string())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("what was fetched is not a commit: {}", e.message()))
}

/// Points `branch` at `commit` (after a sync deployed it), whatever it pointed at before.
pub fn set_branch(repo: &Path, branch: &str, commit: &str) -> Result<(), git2::Error> {
    let repository = Repository::open_bare(repo)?;
    let oid = git2::Oid::from_str(commit)?;
    repository.reference(&format!("refs/heads/{branch}"), oid, true, "berth git:sync")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RefUpdate;

    #[test]
    fn remote_destinations_name_the_host_git_connects_to() {
        use super::{Transport, remote_destination};
        let cases = [
            (
                "https://github.com/a/b.git",
                Some((Transport::Http, "github.com", 443)),
            ),
            (
                "http://127.0.0.1:9180/x",
                Some((Transport::Http, "127.0.0.1", 9180)),
            ),
            (
                "http://u@h.example:81/x",
                Some((Transport::Http, "h.example", 81)),
            ),
            (
                "ssh://berth@127.0.0.1:2222/victim",
                Some((Transport::Ssh, "127.0.0.1", 2222)),
            ),
            ("ssh://[::1]:2222/v", Some((Transport::Ssh, "::1", 2222))),
            (
                "git://10.0.0.5:6379/",
                Some((Transport::Git, "10.0.0.5", 6379)),
            ),
            (
                "git@github.com:org/repo.git",
                Some((Transport::Ssh, "github.com", 22)),
            ),
            ("/srv/git/b.git", None),
            ("file:///srv/b.git", None),
        ];
        for (url, expected) in cases {
            let got = remote_destination(url);
            let got = got.as_ref().map(|(t, h, p)| (*t, h.as_str(), *p));
            assert_eq!(got, expected, "{url}");
        }
    }

    #[test]
    fn parses_hook_lines() {
        let updates = RefUpdate::parse_lines(
            "0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/main\n\
             2222222222222222222222222222222222222222 0000000000000000000000000000000000000000 refs/heads/old\n",
        );
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].branch(), Some("main"));
        assert!(!updates[0].is_delete());
        assert!(updates[1].is_delete());
    }
}
