//! Operator commands (`ssh berth@HOST apps:list`, or `berth apps:list` on the host): one parser,
//! one implementation, the same output and rules either way.
//!
//! Each command is a `Spec` in `SPECS` (name, usage, one-line summary, flags) and an async
//! handler. Handlers return the text to print or the one line that says what went wrong.
//!
//! **Architecture Invariant:** every command checks who may do it (`access`) before it touches
//! anything.

mod apps;
mod buildpacks;
mod canary;
mod certs;
mod config;
mod domains;
mod hooks;
mod keys;
mod links;
mod nodes;
mod ps;
mod releases;
mod storage;
mod system;
mod targets;

use crate::output::Output;
use crate::server::{Berth, Identity};

pub use keys::add_key;

/// What a command produced: stdout, stderr and the exit status.
#[derive(Debug, Default)]
pub struct CommandResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: u32,
}

impl CommandResult {
    fn ok(stdout: String) -> CommandResult {
        CommandResult {
            stdout: stdout.into_bytes(),
            ..Default::default()
        }
    }
    fn fail(message: &str) -> CommandResult {
        CommandResult {
            stderr: format!(" !     {message}\n").into_bytes(),
            code: 1,
            ..Default::default()
        }
    }
}

/// A command's shape: what `help` prints and what the parser accepts.
pub struct Spec {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
    /// Flags: (name, takes a value).
    flags: &'static [(&'static str, bool)],
    /// Positional arguments: at least, at most (None: any number).
    positional: (usize, Option<usize>),
    /// Its handler, by the I/O it does.
    io: Io,
}

type Answer<'a> = futures_util::future::BoxFuture<'a, Result<String, String>>;

/// A command's handler, by the I/O it does: the dispatcher (`run`) calls it with what it needs.
#[derive(Clone, Copy)]
enum Io {
    /// Answers from its arguments.
    Plain(for<'a> fn(&'a Berth, &'a Identity, &'a Args) -> Answer<'a>),
    /// Shows progress (`-----> ` lines) while it works.
    Progress(for<'a> fn(&'a Berth, &'a Identity, &'a Args, &'a Output) -> Answer<'a>),
    /// Reads the client's standard input (a key, a certificate).
    Stdin(for<'a> fn(&'a Berth, &'a Identity, &'a Args, &'a [u8]) -> Answer<'a>),
    /// `help`, answered from this table.
    Help,
    /// `run`: attached to the client's terminal by the SSH layer (`one_off`).
    Attached,
}

const JSON: (&str, bool) = ("--json", false);

pub const SPECS: &[Spec] = &[
    Spec {
        name: "apps:create",
        usage: "apps:create APP",
        summary: "create an app (a first push does it too)",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(apps::create(berth, who, args))),
    },
    Spec {
        name: "apps:list",
        usage: "apps:list [-l key=value,...] [--json]",
        summary: "the apps you can see: state, release, scale, owner, URL",
        flags: &[("-l", true), JSON],
        positional: (0, Some(0)),
        io: Io::Plain(|berth, who, args| Box::pin(apps::list(berth, who, args))),
    },
    Spec {
        name: "apps:info",
        usage: "apps:info APP [--json]",
        summary: "one app: state, owner, labels, release, formation, URL",
        flags: &[JSON],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(apps::info(berth, who, args))),
    },
    Spec {
        name: "apps:rename",
        usage: "apps:rename OLD NEW",
        summary: "rename an app (its repo, containers and images follow)",
        flags: &[],
        positional: (2, Some(2)),
        io: Io::Progress(|berth, who, args, out| Box::pin(apps::rename(berth, who, args, out))),
    },
    Spec {
        name: "apps:destroy",
        usage: "apps:destroy APP --confirm APP [--keep-data]",
        summary: "remove an app: containers, images, repo, releases",
        flags: &[("--confirm", true), ("--keep-data", false)],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(apps::destroy(berth, who, args))),
    },
    Spec {
        name: "apps:labels",
        usage: "apps:labels APP [key=value ...] [--json]",
        summary: "show labels, or merge some in (an empty value deletes the key)",
        flags: &[JSON],
        positional: (1, None),
        io: Io::Plain(|berth, who, args| Box::pin(apps::labels(berth, who, args))),
    },
    Spec {
        name: "apps:link",
        usage: "apps:link APP DEP [--as NAME]",
        summary: "give APP the variables that reach DEP (NAME_URL, NAME_HOST, NAME_PORT; NAME defaults to DEP upper-cased) and redeploy it; kept up to date when DEP moves",
        flags: &[("--as", true)],
        positional: (2, Some(2)),
        io: Io::Progress(|berth, who, args, out| Box::pin(links::link(berth, who, args, out))),
    },
    Spec {
        name: "apps:unlink",
        usage: "apps:unlink APP DEP",
        summary: "remove the link's variables from APP and redeploy it",
        flags: &[],
        positional: (2, Some(2)),
        io: Io::Progress(|berth, who, args, out| Box::pin(links::unlink(berth, who, args, out))),
    },
    Spec {
        name: "storage:mount",
        usage: "storage:mount APP NAME:/path | /host/dir:/path",
        summary: "mount a volume berth keeps (or, admins only, a host directory) in every process; survives redeploys and rollbacks",
        flags: &[],
        positional: (2, Some(2)),
        io: Io::Progress(|berth, who, args, out| Box::pin(storage::mount(berth, who, args, out))),
    },
    Spec {
        name: "storage:unmount",
        usage: "storage:unmount APP /path",
        summary: "stop mounting it (a volume keeps its data until apps:destroy)",
        flags: &[],
        positional: (2, Some(2)),
        io: Io::Progress(|berth, who, args, out| Box::pin(storage::unmount(berth, who, args, out))),
    },
    Spec {
        name: "storage:list",
        usage: "storage:list APP [--json]",
        summary: "the app's mounts",
        flags: &[JSON],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(storage::list(berth, who, args))),
    },
    Spec {
        name: "apps:grant",
        usage: "apps:grant APP KEY",
        summary: "let a member key see and operate an app",
        flags: &[],
        positional: (2, Some(2)),
        io: Io::Plain(|berth, who, args| Box::pin(apps::grant(berth, who, args, true))),
    },
    Spec {
        name: "apps:revoke",
        usage: "apps:revoke APP KEY",
        summary: "take a grant back",
        flags: &[],
        positional: (2, Some(2)),
        io: Io::Plain(|berth, who, args| Box::pin(apps::grant(berth, who, args, false))),
    },
    Spec {
        name: "ps:scale",
        usage: "ps:scale APP web=N [worker=N ...]",
        summary: "run N instances of a process type",
        flags: &[],
        positional: (2, None),
        io: Io::Progress(|berth, who, args, out| Box::pin(ps::scale(berth, who, args, out))),
    },
    Spec {
        name: "ps:stop",
        usage: "ps:stop APP",
        summary: "stop every process (image, config and data stay)",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Progress(|berth, who, args, out| Box::pin(ps::stop(berth, who, args, out))),
    },
    Spec {
        name: "ps:start",
        usage: "ps:start APP",
        summary: "start a stopped app again",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Progress(|berth, who, args, out| Box::pin(ps::start(berth, who, args, out))),
    },
    Spec {
        name: "ps:restart",
        usage: "ps:restart APP",
        summary: "restart one container at a time, each after the previous answers",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Progress(|berth, who, args, out| Box::pin(ps::restart(berth, who, args, out))),
    },
    Spec {
        name: "ps:rebuild",
        usage: "ps:rebuild APP | --all",
        summary: "build the deployed commit again and release it (--all: every app, admins only)",
        flags: &[("--all", false)],
        positional: (0, Some(1)),
        io: Io::Progress(|berth, who, args, out| Box::pin(ps::rebuild(berth, who, args, out))),
    },
    Spec {
        name: "ps:report",
        usage: "ps:report APP [--json]",
        summary: "each container: process, state, uptime, restarts, host:port",
        flags: &[JSON],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(ps::report(berth, who, args))),
    },
    Spec {
        name: "config:set",
        usage: "config:set APP KEY=VALUE ... [--no-restart]",
        summary: "set config vars (a new release, redeployed)",
        flags: &[("--no-restart", false)],
        positional: (2, None),
        io: Io::Progress(|berth, who, args, out| Box::pin(config::set(berth, who, args, out))),
    },
    Spec {
        name: "config:unset",
        usage: "config:unset APP KEY ... [--no-restart]",
        summary: "remove config vars (a new release, redeployed)",
        flags: &[("--no-restart", false)],
        positional: (2, None),
        io: Io::Progress(|berth, who, args, out| Box::pin(config::unset(berth, who, args, out))),
    },
    Spec {
        name: "config:get",
        usage: "config:get APP KEY",
        summary: "print one config value",
        flags: &[],
        positional: (2, Some(2)),
        io: Io::Plain(|berth, who, args| Box::pin(config::get(berth, who, args))),
    },
    Spec {
        name: "config:show",
        usage: "config:show APP [--reveal] [--json]",
        summary: "the config vars, values masked unless --reveal",
        flags: &[("--reveal", false), JSON],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(config::show(berth, who, args))),
    },
    Spec {
        name: "releases",
        usage: "releases APP [-n N] [--json]",
        summary: "number, commit, image, who, when, status, description",
        flags: &[("-n", true), JSON],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(releases::list(berth, who, args))),
    },
    Spec {
        name: "releases:rollback",
        usage: "releases:rollback APP [vN]",
        summary: "redeploy an earlier release's image and config as a new release",
        flags: &[],
        positional: (1, Some(2)),
        io: Io::Progress(|berth, who, args, out| {
            Box::pin(releases::rollback(berth, who, args, out))
        }),
    },
    Spec {
        name: "logs",
        usage: "logs APP [-f] [-n N] [--process web]",
        summary: "container output; -f follows until you disconnect",
        flags: &[("-f", false), ("-n", true), ("--process", true)],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(releases::logs(berth, who, args))),
    },
    Spec {
        name: "events",
        usage: "events APP [-n N] [--json]",
        summary: "what happened to the app, by whom, with what outcome",
        flags: &[("-n", true), JSON],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(releases::events(berth, who, args))),
    },
    Spec {
        name: "domains:add",
        usage: "domains:add APP DOMAIN",
        summary: "serve the app at DOMAIN through the HTTP router (besides APP.<base_domain>)",
        flags: &[],
        positional: (2, Some(2)),
        io: Io::Plain(|berth, who, args| Box::pin(domains::add(berth, who, args))),
    },
    Spec {
        name: "domains:approve",
        usage: "domains:approve APP DOMAIN",
        summary: "(admins) serve a member's domain: until then it waits, unrouted and uncertified",
        flags: &[],
        positional: (2, Some(2)),
        io: Io::Plain(|berth, who, args| Box::pin(domains::approve(berth, who, args))),
    },
    Spec {
        name: "domains:remove",
        usage: "domains:remove APP DOMAIN",
        summary: "stop serving the app at DOMAIN",
        flags: &[],
        positional: (2, Some(2)),
        io: Io::Plain(|berth, who, args| Box::pin(domains::remove(berth, who, args))),
    },
    Spec {
        name: "domains:list",
        usage: "domains:list APP [--json]",
        summary: "the host names the router serves the app at",
        flags: &[JSON],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(domains::list(berth, who, args))),
    },
    Spec {
        name: "canary:start",
        usage: "canary:start APP [--weight N] [--release vN]",
        summary: "the next push (or release vN, redeployed) runs beside the current release and gets N % of requests (default 10)",
        flags: &[("--weight", true), ("--release", true)],
        positional: (1, Some(1)),
        io: Io::Progress(|berth, who, args, out| Box::pin(canary::start(berth, who, args, out))),
    },
    Spec {
        name: "canary:weight",
        usage: "canary:weight APP N",
        summary: "the canary's share of requests, in percent",
        flags: &[],
        positional: (2, Some(2)),
        io: Io::Plain(|berth, who, args| Box::pin(canary::set_weight(berth, who, args))),
    },
    Spec {
        name: "canary:promote",
        usage: "canary:promote APP",
        summary: "make the canary the current release (every request goes to it)",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Progress(|berth, who, args, out| Box::pin(canary::promote(berth, who, args, out))),
    },
    Spec {
        name: "canary:abort",
        usage: "canary:abort APP",
        summary: "stop the canary; every request goes to the current release again",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Progress(|berth, who, args, out| Box::pin(canary::abort(berth, who, args, out))),
    },
    Spec {
        name: "certs:add",
        usage: "certs:add APP < cert-and-key.pem",
        summary: "serve the app's hosts over HTTPS with this certificate chain and key (PEM on stdin; picked by SNI)",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Stdin(|berth, who, args, stdin| Box::pin(certs::add(berth, who, args, stdin))),
    },
    Spec {
        name: "certs:remove",
        usage: "certs:remove APP",
        summary: "stop serving the app over HTTPS and delete its certificate",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(certs::remove(berth, who, args))),
    },
    Spec {
        name: "certs:info",
        usage: "certs:info APP [--json]",
        summary: "the names, issuer and end date of the app's certificate, and where it came from",
        flags: &[JSON],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(certs::info(berth, who, args))),
    },
    Spec {
        name: "letsencrypt:enable",
        usage: "letsencrypt:enable APP",
        summary: "get a certificate for APP.<base_domain> and the app's domains over ACME (HTTP-01), renewed before it ends",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Progress(|berth, who, args, out| {
            Box::pin(certs::letsencrypt(berth, who, args, out, false))
        }),
    },
    Spec {
        name: "letsencrypt:renew",
        usage: "letsencrypt:renew APP",
        summary: "renew the app's ACME certificate now (for its current domains)",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Progress(|berth, who, args, out| {
            Box::pin(certs::letsencrypt(berth, who, args, out, true))
        }),
    },
    Spec {
        name: "buildpacks:list",
        usage: "buildpacks:list [--json]",
        summary: "the buildpacks, what detects each, and their images",
        flags: &[JSON],
        positional: (0, Some(0)),
        io: Io::Plain(|berth, _, args| Box::pin(buildpacks::list(berth, args))),
    },
    Spec {
        name: "buildpacks:detect",
        usage: "buildpacks:detect APP [--dockerfile] [--json]",
        summary: "how the app's current commit would be built (Dockerfile or which buildpack), and why; --dockerfile prints the generated one",
        flags: &[("--dockerfile", false), JSON],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(buildpacks::detect(berth, who, args))),
    },
    Spec {
        name: "apps:set",
        usage: "apps:set APP target=docker|systemd|swarm|kubernetes | deploy_branch=NAME | placement=node.labels.KEY==VALUE[,...]",
        summary: "where the app runs (admins only; a running app moves there now; refused when this host cannot apply it), or which branch deploys",
        flags: &[],
        positional: (2, None),
        io: Io::Progress(|berth, who, args, out| Box::pin(targets::set(berth, who, args, out))),
    },
    Spec {
        name: "resources:set",
        usage: "resources:set APP PROCESS [--cpu N] [--memory SIZE]",
        summary: "CPU and memory limits of a process type, for every target",
        flags: &[("--cpu", true), ("--memory", true)],
        positional: (2, Some(2)),
        io: Io::Plain(|berth, who, args| Box::pin(targets::resources(berth, who, args))),
    },
    Spec {
        name: "deploy:render",
        usage: "deploy:render APP [--target T] [--release vN] [--json]",
        summary: "print the units a target would apply for a release (dry run)",
        flags: &[("--target", true), ("--release", true), JSON],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(targets::render_units(berth, who, args))),
    },
    Spec {
        name: "deploy:plan",
        usage: "deploy:plan APP [--json]",
        summary: "replicas x CPU and memory per process type",
        flags: &[JSON],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(targets::plan(berth, who, args))),
    },
    Spec {
        name: "run",
        usage: "run APP COMMAND [ARGS...]",
        summary: "a one-off container of the app's image and config, attached; its exit code is yours",
        flags: &[],
        positional: (2, None),
        io: Io::Attached,
    },
    Spec {
        name: "run:task",
        usage: "run:task APP COMMAND [ARGS...]",
        summary: "swarm: the command as a one-off task on any node the app's placement allows; its output and exit code (no stdin)",
        flags: &[],
        positional: (2, None),
        io: Io::Attached,
    },
    Spec {
        name: "system:df",
        usage: "system:df [--json]",
        summary: "disk used per app: images, volumes, repo, logs (admins only)",
        flags: &[JSON],
        positional: (0, Some(0)),
        io: Io::Plain(|berth, who, args| Box::pin(system::df(berth, who, args))),
    },
    Spec {
        name: "system:prune",
        usage: "system:prune [--dry-run] [--json]",
        summary: "remove images older than each app's last keep_releases releases, stopped one-off containers and aborted pushes' files now (admins only)",
        flags: &[("--dry-run", false), JSON],
        positional: (0, Some(0)),
        io: Io::Plain(|berth, who, args| Box::pin(system::prune(berth, who, args))),
    },
    Spec {
        name: "webhooks:add",
        usage: "webhooks:add URL [--events deploy.succeeded,deploy.failed,...] [--app APP]",
        summary: "POST these events (default all) of one app (or, admins, of every app) to URL as JSON signed with HMAC-SHA256; the URL must answer a ping",
        flags: &[("--events", true), ("--app", true)],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(hooks::add(berth, who, args))),
    },
    Spec {
        name: "webhooks:list",
        usage: "webhooks:list [--json]",
        summary: "the webhooks you may manage",
        flags: &[JSON],
        positional: (0, Some(0)),
        io: Io::Plain(|berth, who, args| Box::pin(hooks::list(berth, who, args))),
    },
    Spec {
        name: "webhooks:remove",
        usage: "webhooks:remove ID",
        summary: "stop sending to a webhook",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(hooks::remove(berth, who, args))),
    },
    Spec {
        name: "webhooks:deliveries",
        usage: "webhooks:deliveries [ID] [-n N] [--json]",
        summary: "each event sent: status (pending, delivered, failed), attempts, last answer",
        flags: &[("-n", true), JSON],
        positional: (0, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(hooks::deliveries(berth, who, args))),
    },
    Spec {
        name: "webhooks:inbound",
        usage: "webhooks:inbound APP",
        summary: "a URL with a secret token that runs the app's git:sync when POSTed (GitHub/Gitea push webhooks)",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(hooks::inbound(berth, who, args))),
    },
    Spec {
        name: "git:sync",
        usage: "git:sync APP REPO_URL [REF]",
        summary: "fetch REF (default HEAD) of a repository and deploy it as if pushed to the deploy branch",
        flags: &[],
        positional: (2, Some(3)),
        io: Io::Progress(|berth, who, args, out| Box::pin(hooks::sync(berth, who, args, out))),
    },
    Spec {
        name: "templates:approve",
        usage: "templates:approve APP [--release vN]",
        summary: "let the app use the .berth/templates/ of that release's commit (default the running one); a push that changes them needs a new approval (admins only)",
        flags: &[("--release", true)],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(targets::approve(berth, who, args))),
    },
    Spec {
        name: "templates:revoke",
        usage: "templates:revoke APP",
        summary: "use berth's built-in templates for the app again (admins only)",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(targets::revoke(berth, who, args))),
    },
    Spec {
        name: "keys:add",
        usage: "keys:add NAME [--role admin|member]  (public key on stdin)",
        summary: "allow a key to push and run commands (admins only)",
        flags: &[("--role", true)],
        positional: (1, Some(1)),
        io: Io::Stdin(|berth, who, args, stdin| Box::pin(keys::add(berth, who, args, stdin))),
    },
    Spec {
        name: "nodes:list",
        usage: "nodes:list [--json]",
        summary: "the swarm's nodes: address, role, availability, state, labels, berth tasks (admins only)",
        flags: &[JSON],
        positional: (0, Some(0)),
        io: Io::Plain(|berth, who, args| Box::pin(nodes::list(berth, who, args))),
    },
    Spec {
        name: "nodes:join-command",
        usage: "nodes:join-command",
        summary: "the `docker swarm join` line that adds a worker to the swarm (admins only)",
        flags: &[],
        positional: (0, Some(0)),
        io: Io::Plain(|berth, who, args| Box::pin(nodes::join_command(berth, who, args))),
    },
    Spec {
        name: "nodes:drain",
        usage: "nodes:drain NODE",
        summary: "move every task off a node; it takes none until nodes:activate (admins only)",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(nodes::drain(berth, who, args))),
    },
    Spec {
        name: "nodes:activate",
        usage: "nodes:activate NODE",
        summary: "let a drained node take tasks again (admins only)",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(nodes::activate(berth, who, args))),
    },
    Spec {
        name: "nodes:label",
        usage: "nodes:label NODE key=value ... | key- ...",
        summary: "set (key=value) or remove (key-) a node's labels, for placement (admins only)",
        flags: &[],
        positional: (2, None),
        io: Io::Plain(|berth, who, args| Box::pin(nodes::label(berth, who, args))),
    },
    Spec {
        name: "keys:list",
        usage: "keys:list [--json]",
        summary: "the registered keys (admins only)",
        flags: &[JSON],
        positional: (0, Some(0)),
        io: Io::Plain(|berth, who, args| Box::pin(keys::list(berth, who, args))),
    },
    Spec {
        name: "keys:remove",
        usage: "keys:remove NAME",
        summary: "revoke a key (admins only)",
        flags: &[],
        positional: (1, Some(1)),
        io: Io::Plain(|berth, who, args| Box::pin(keys::remove(berth, who, args))),
    },
    Spec {
        name: "help",
        usage: "help [TOPIC]",
        summary: "this list, or the commands of one topic (apps, ps, config, ...)",
        flags: &[],
        positional: (0, Some(1)),
        io: Io::Help,
    },
];

fn parse(spec: &Spec, raw: &[String]) -> Result<Args, String> {
    let usage = || format!("usage: {}", spec.usage);
    let mut args = Args::default();
    let mut words = raw.iter();
    while let Some(word) = words.next() {
        if word.starts_with('-') && word.len() > 1 {
            let (name, inline) = match word.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
                _ => (word.as_str(), None),
            };
            let Some((flag, takes_value)) = spec.flags.iter().find(|(f, _)| *f == name) else {
                return Err(format!(
                    "unknown option {name} for {}; {}",
                    spec.name,
                    usage()
                ));
            };
            let value = match (takes_value, inline) {
                (true, Some(value)) => Some(value),
                (true, None) => Some(
                    words
                        .next()
                        .ok_or_else(|| format!("{flag} needs a value; {}", usage()))?
                        .clone(),
                ),
                (false, None) => None,
                (false, Some(_)) => return Err(format!("{flag} takes no value; {}", usage())),
            };
            args.flags.insert(flag, value);
        } else {
            args.positional.push(word.clone());
        }
    }
    let (min, max) = spec.positional;
    if args.positional.len() < min || max.is_some_and(|max| args.positional.len() > max) {
        return Err(usage());
    }
    Ok(args)
}

/// For commands whose output is a stream (`logs`, which `-f` keeps open): the stream, after
/// the same parsing and access checks as `run`. `None` for every other command.
pub async fn stream(
    berth: &Berth,
    who: &Identity,
    raw: &[String],
) -> Option<Result<futures_util::stream::BoxStream<'static, Vec<u8>>, String>> {
    let (name, rest) = raw.split_first()?;
    if name != "logs" {
        return None;
    }
    let spec = SPECS.iter().find(|s| s.name == "logs")?;
    Some(match parse(spec, rest) {
        Ok(args) => releases::log_stream(berth, who, &args).await,
        Err(message) => Err(message),
    })
}

/// `run APP COMMAND...`: the one-off container, attached by the caller. `None` for every other
/// command. Everything after APP is the command's argument vector, passed as is (no shell).
pub async fn one_off(
    berth: &Berth,
    who: &Identity,
    raw: &[String],
    tty: bool,
) -> Option<Result<crate::deploy::OneOff, String>> {
    let (name, rest) = raw.split_first()?;
    match name.as_str() {
        "run" => Some(releases::run(berth, who, rest, tty).await),
        "run:task" => Some(releases::run_task(berth, who, rest).await),
        _ => None,
    }
}

/// Whether this command reads its standard input (the SSH layer then collects it first).
pub fn reads_stdin(args: &[String]) -> bool {
    args.first().is_some_and(|name| {
        SPECS
            .iter()
            .any(|s| s.name == name && matches!(s.io, Io::Stdin(_)))
    })
}

/// Runs one command for `who`. `stdin` is the client's input, for the commands that read it.
pub async fn run(berth: &Berth, who: &Identity, raw: &[String], stdin: &[u8]) -> CommandResult {
    let Some((name, rest)) = raw.split_first() else {
        return CommandResult::ok(help(None));
    };
    let Some(spec) = SPECS.iter().find(|s| s.name == name) else {
        return CommandResult::fail(&unknown_command(name));
    };
    let args = match parse(spec, rest) {
        Ok(args) => args,
        Err(message) => return CommandResult::fail(&message),
    };
    // Progress lines (`-----> ...`) go to stdout ahead of the command's answer.
    let (out, progress) = Output::collecting();
    let result = match spec.io {
        Io::Help => Ok(help(args.positional.first().map(String::as_str))),
        Io::Plain(handler) => handler(berth, who, &args).await,
        Io::Progress(handler) => handler(berth, who, &args, &out).await,
        Io::Stdin(handler) => handler(berth, who, &args, stdin).await,
        Io::Attached => Err(
            "run attaches to your terminal: use `ssh -t berth@HOST run APP COMMAND`".to_string(),
        ),
    };
    drop(out);
    let progress = progress.await;
    // Values members set (labels, config, event details) reach other people's terminals:
    // control characters are shown escaped, never sent (no ESC/OSC sequences).
    match result {
        Ok(text) => CommandResult::ok(printable(&(progress + &text))),
        Err(message) => CommandResult {
            stdout: printable(&progress).into_bytes(),
            ..CommandResult::fail(&printable(&message))
        },
    }
}

/// `text` with control characters other than newline and tab shown as `\xNN` / `\u{..}`.
pub fn printable(text: &str) -> String {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                if (c as u32) < 0x100 {
                    format!("\\x{:02x}", c as u32)
                } else {
                    format!("\\u{{{:x}}}", c as u32)
                }
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn help(topic: Option<&str>) -> String {
    let chosen: Vec<&Spec> = SPECS
        .iter()
        .filter(|s| topic.is_none_or(|t| s.name == t || s.name.split(':').next() == Some(t)))
        .collect();
    if chosen.is_empty() {
        let mut topics: Vec<&str> = SPECS
            .iter()
            .map(|s| s.name.split(':').next().unwrap_or(s.name))
            .collect();
        topics.dedup();
        return format!(
            "no topic {:?}; topics: {}\n",
            topic.unwrap_or(""),
            topics.join(", ")
        );
    }
    let width = chosen
        .iter()
        .map(|s| s.usage.len())
        .max()
        .unwrap_or(0)
        .min(48);
    let mut text = String::from(
        "Usage: ssh berth@HOST <command> [args]   (or `berth <command>` on the host)\n\n",
    );
    for spec in chosen {
        text += &format!("  {:<width$}  {}\n", spec.usage, spec.summary);
    }
    if topic.is_none() {
        text += "\nDeploy with: git remote add berth ssh://berth@HOST:2222/APP && git push berth main\n";
    }
    text
}

/// "unknown command" with the closest known names.
fn unknown_command(name: &str) -> String {
    let mut scored: Vec<(usize, &str)> = SPECS
        .iter()
        .map(|s| (edit_distance(name, s.name), s.name))
        .collect();
    scored.sort();
    let close: Vec<&str> = scored
        .iter()
        .filter(|(d, n)| *d <= 3 || n.split(':').next() == name.split(':').next())
        .take(3)
        .map(|(_, n)| *n)
        .collect();
    if close.is_empty() {
        format!("unknown command {name:?}; see `help`")
    } else {
        format!(
            "unknown command {name:?}; did you mean {}? (see `help`)",
            close.join(", ")
        )
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

mod common;
pub use common::Args;

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_flags_and_checks_arity() {
        let spec = SPECS.iter().find(|s| s.name == "logs").unwrap();
        let args = parse(spec, &words("myapp -f -n 20 --process=web")).unwrap();
        assert_eq!(args.positional, vec!["myapp"]);
        assert!(args.has("-f"));
        assert_eq!(args.value("-n"), Some("20"));
        assert_eq!(args.value("--process"), Some("web"));
        assert_eq!(
            parse(spec, &words("")).unwrap_err(),
            "usage: logs APP [-f] [-n N] [--process web]"
        );
        assert!(parse(spec, &words("a b")).is_err());
        assert!(
            parse(spec, &words("a --colour"))
                .unwrap_err()
                .contains("unknown option --colour")
        );
        assert!(
            parse(spec, &words("a -n"))
                .unwrap_err()
                .contains("-n needs a value")
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        // Attack (finding 22): a label value with an OSC sequence that retitles (or worse) the
        // terminal of the admin who runs apps:info.
        assert_eq!(
            printable("team=\u{1b}]0;owned\u{7}\nnext\tcol"),
            "team=\\x1b]0;owned\\x07\nnext\tcol"
        );
        assert_eq!(printable("plain"), "plain");
    }

    #[test]
    fn unknown_commands_name_the_closest() {
        assert!(unknown_command("apps:lst").contains("apps:list"));
        assert!(unknown_command("ps:scael").contains("ps:scale"));
        assert!(unknown_command("frobnicate").contains("see `help`"));
    }

    #[test]
    fn help_lists_every_command_and_topics() {
        let all = help(None);
        for spec in SPECS {
            assert!(all.contains(spec.usage), "{}", spec.name);
        }
        let ps = help(Some("ps"));
        assert!(ps.contains("ps:scale") && !ps.contains("apps:list"));
        assert!(help(Some("nope")).contains("topics:"));
    }
}
