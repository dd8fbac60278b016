//! Rendering a release into the units of a target, from tera templates. Pure: context and
//! templates in, text out; nothing here touches the host.
//!
//! Templates: `templates/<target>/` (built in), overridden by `<template_dir>/<target>/` from
//! the server config, overridden by `.berth/templates/<target>/` committed in the app's repo:
//! the nearest wins, file by file. `templates/README.md` lists every variable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::domain::Target;

use super::names;

/// The built-in templates of the target: (file name, text).
fn builtin(target: Target) -> &'static [(&'static str, &'static str)] {
    match target {
        Target::Docker => &[],
        Target::Systemd => &[(
            "process.service.tera",
            include_str!("../../templates/systemd/process.service.tera"),
        )],
        Target::Swarm => &[(
            "stack.yml.tera",
            include_str!("../../templates/swarm/stack.yml.tera"),
        )],
        Target::Kubernetes => &[
            (
                "namespace.yaml.tera",
                include_str!("../../templates/kubernetes/namespace.yaml.tera"),
            ),
            (
                "deployment.yaml.tera",
                include_str!("../../templates/kubernetes/deployment.yaml.tera"),
            ),
            (
                "service.yaml.tera",
                include_str!("../../templates/kubernetes/service.yaml.tera"),
            ),
            (
                "ingress.yaml.tera",
                include_str!("../../templates/kubernetes/ingress.yaml.tera"),
            ),
            (
                "volume.yaml.tera",
                include_str!("../../templates/kubernetes/volume.yaml.tera"),
            ),
        ],
    }
}

/// CPU and memory of one process type (`resources:set`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Resources {
    /// CPUs, as a decimal (`0.5`).
    pub cpu: Option<String>,
    /// Memory in Docker's notation (`256m`, `1g`).
    pub memory: Option<String>,
}

impl Resources {
    /// Checks `--cpu` and `--memory` values.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(cpu) = &self.cpu {
            let ok = cpu.parse::<f64>().is_ok_and(|c| c > 0.0 && c <= 256.0)
                && !cpu.contains(['e', 'E']);
            if !ok {
                return Err(format!(
                    "--cpu {cpu:?} must be a number of CPUs like 0.5 or 2"
                ));
            }
        }
        if let Some(memory) = &self.memory
            && memory_bytes(memory).is_none()
        {
            return Err(format!(
                "--memory {memory:?} must be a size like 256m or 1g (at least 6m)"
            ));
        }
        Ok(())
    }
}

/// `256m` → bytes; units b, k, m, g (Docker's notation).
pub fn memory_bytes(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor = match unit {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor).filter(|b| *b >= 6 << 20)
}

/// `256m` → `256Mi` (Kubernetes quantities).
fn memory_k8s(text: &str) -> String {
    let text = text.trim().to_ascii_lowercase();
    match text.chars().last() {
        Some('k') => format!("{}Ki", &text[..text.len() - 1]),
        Some('m') => format!("{}Mi", &text[..text.len() - 1]),
        Some('g') => format!("{}Gi", &text[..text.len() - 1]),
        Some('b') => text[..text.len() - 1].to_string(),
        _ => text,
    }
}

/// One process type of a release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    pub name: String,
    /// The command; empty means the image's own CMD.
    pub command: Vec<String>,
    pub replicas: u32,
    /// The port it listens on (`PORT`); only the web process has one.
    pub port: Option<u16>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub memory_k8s: Option<String>,
}

impl Process {
    pub fn new(
        name: &str,
        command: Vec<String>,
        replicas: u32,
        port: Option<u16>,
        resources: &Resources,
    ) -> Process {
        Process {
            name: name.to_string(),
            command,
            replicas,
            port,
            cpu: resources.cpu.clone(),
            memory: resources.memory.clone(),
            memory_k8s: resources.memory.as_deref().map(memory_k8s),
        }
    }
}

/// One mount of the app: a named volume berth owns, or a host directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    /// The name the operator gave (`NAME` of `NAME:/path`), or the host directory.
    pub name: String,
    /// What the engine mounts: the volume's engine name (also the Kubernetes claim's name), or
    /// the host directory.
    pub source: String,
    /// Where the processes see it.
    pub path: String,
    /// A host directory (true) or a named volume (false).
    pub host: bool,
}

/// Everything a template may use (see templates/README.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Context {
    pub app: String,
    pub release: i64,
    pub image: String,
    /// Whether images come from a registry (then units pull them).
    pub registry: bool,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub processes: Vec<Process>,
    pub domains: Vec<String>,
    /// The app's mounts (`storage:mount`), in every process.
    pub volumes: Vec<Volume>,
    pub publish_address: String,
    /// The app's stable public port.
    pub app_port: u16,
    /// systemd target: the host port of web instance N at `[N-1]`, picked by berth when it
    /// applies the units; empty (as `deploy:render` shows them): the engine picks (`0`).
    #[serde(default)]
    pub host_ports: Vec<u16>,
    /// swarm target: the placement constraints of the app's tasks (`apps:set APP
    /// placement=…`, and the node that holds its volumes).
    #[serde(default)]
    pub placement: Vec<String>,
}

/// One rendered file: its name and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    pub name: String,
    pub text: String,
}

/// Template texts that replace built-in ones, by file name (nearest source first).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Overrides {
    pub sources: Vec<(String, BTreeMap<String, String>)>,
}

impl Overrides {
    /// No template replaces a built-in one: only berth's own templates render.
    pub fn is_empty(&self) -> bool {
        self.sources.iter().all(|(_, files)| files.is_empty())
    }

    fn find(&self, file: &str) -> Option<(&str, &str)> {
        self.sources.iter().find_map(|(origin, files)| {
            files.get(file).map(|text| (origin.as_str(), text.as_str()))
        })
    }
}

/// Tera filter: one word of a systemd `ExecStart=` line, quoted so that spaces, quotes,
/// backslashes, `$` (systemd's variables) and `%` (its specifiers) stay literal.
fn systemd_arg(
    value: &tera::Value,
    _: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    let word = value
        .as_str()
        .ok_or_else(|| tera::Error::msg("systemd_arg takes a string"))?;
    let mut quoted = String::from("\"");
    for c in word.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '$' => quoted.push_str("$$"),
            '%' => quoted.push_str("%%"),
            '\n' | '\r' => quoted.push(' '),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    Ok(tera::Value::String(quoted))
}

/// Tera filter: a config value for a swarm stack, kept literal. The swarm expands Go templates
/// in a task's environment (`{{.Node.Hostname}}`), and refuses a service whose value does not
/// parse (`{{` alone): each `{{` becomes `{{"{{"}}`, which the swarm gives back as `{{`.
fn swarm_literal(
    value: &tera::Value,
    _: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    let text = value
        .as_str()
        .ok_or_else(|| tera::Error::msg("swarm_literal takes a string"))?;
    Ok(tera::Value::String(crate::deploy::swarm::literal(text)))
}

/// The most items `range` gives in a template (tera's own has no bound: `range(end=10^10)`
/// would fill memory before anything else runs).
pub const RANGE_LIMIT: usize = 10_000;

/// tera's `range`, refusing more than [`RANGE_LIMIT`] items.
fn bounded_range(
    args: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    let number = |key: &str, default: Option<u64>| -> tera::Result<u64> {
        match args.get(key) {
            Some(value) => value
                .as_u64()
                .ok_or_else(|| tera::Error::msg(format!("range: {key} must be a whole number"))),
            None => default.ok_or_else(|| tera::Error::msg("range needs end=N")),
        }
    };
    let (start, end, step) = (
        number("start", Some(0))?,
        number("end", None)?,
        number("step_by", Some(1))?,
    );
    if step == 0 {
        return Err(tera::Error::msg("range: step_by must be at least 1"));
    }
    let count = end.saturating_sub(start).div_ceil(step);
    if count > RANGE_LIMIT as u64 {
        return Err(tera::Error::msg(format!(
            "range of {count} items refused: at most {RANGE_LIMIT}"
        )));
    }
    Ok(tera::Value::from(
        (start..end).step_by(step as usize).collect::<Vec<u64>>(),
    ))
}

/// A Tera with what templates need and nothing that reaches the host: `get_env` (which would
/// read the server's environment) fails the render, and `range` is bounded. Templates from an
/// app's repo run in a child process besides (`deploy::sandbox`), which bounds time, memory and
/// a macro that calls itself.
fn sandboxed_tera() -> tera::Tera {
    let mut tera = tera::Tera::default();
    tera.register_function(
        "get_env",
        |_: &std::collections::HashMap<String, tera::Value>| -> tera::Result<tera::Value> {
            Err(tera::Error::msg(
                "get_env is not available in berth templates (config reaches them as `env`)",
            ))
        },
    );
    tera.register_function("range", bounded_range);
    tera.register_filter("systemd_arg", systemd_arg);
    tera.register_filter("swarm_literal", swarm_literal);
    tera
}

/// Renders the release's units for `target`. A template that fails names itself and the line.
/// In-process: callers with overrides from an app's repo go through `deploy::sandbox::render`.
pub fn render(
    target: Target,
    context: &Context,
    overrides: &Overrides,
) -> Result<Vec<Unit>, String> {
    let mut tera = sandboxed_tera();
    for (file, builtin) in builtin(target) {
        let (origin, text) = overrides.find(file).unwrap_or(("built-in", builtin));
        let name = format!("{origin}:{}/{file}", target.name());
        tera.add_raw_template(&name, text)
            .map_err(|e| template_error(&name, &e))?;
    }
    let name_of = |file: &str| {
        let origin = overrides
            .find(file)
            .map_or("built-in", |(origin, _)| origin);
        format!("{origin}:{}/{file}", target.name())
    };
    let base = tera::Context::from_serialize(context).map_err(|e| e.to_string())?;
    let render_one = |file: &str, extra: &[(&str, tera::Value)]| -> Result<String, String> {
        let name = name_of(file);
        let mut ctx = base.clone();
        for (key, value) in extra {
            ctx.insert(*key, value);
        }
        tera.render(&name, &ctx)
            .map_err(|e| template_error(&name, &e))
    };
    let json = |process: &Process| tera::to_value(process).unwrap_or(tera::Value::Null);
    let mut units = Vec::new();
    match target {
        Target::Docker => {
            for process in &context.processes {
                let mut text = String::from(
                    "# docker target: containers made through the engine API, no unit files\n",
                );
                for index in 1..=process.replicas {
                    text += &format!(
                        "berth-{}-v{}-{}-{index}  image={}  port={}  cpu={}  memory={}\n",
                        context.app,
                        context.release,
                        process.name,
                        context.image,
                        process.port.map_or("-".to_string(), |p| p.to_string()),
                        process.cpu.as_deref().unwrap_or("-"),
                        process.memory.as_deref().unwrap_or("-")
                    );
                }
                units.push(Unit {
                    name: format!("{}.txt", process.name),
                    text,
                });
            }
        }
        Target::Systemd => {
            for process in &context.processes {
                for instance in 1..=process.replicas {
                    let unit =
                        names::unit_name(&context.app, context.release, &process.name, instance);
                    let host_port = match process.port {
                        Some(_) => context
                            .host_ports
                            .get(instance as usize - 1)
                            .copied()
                            .unwrap_or(0),
                        None => 0,
                    };
                    let text = render_one(
                        "process.service.tera",
                        &[
                            ("process", json(process)),
                            ("instance", tera::Value::from(instance)),
                            ("unit", tera::Value::from(unit.clone())),
                            (
                                "container",
                                tera::Value::from(names::unit_container(
                                    &context.app,
                                    context.release,
                                    &process.name,
                                    instance,
                                )),
                            ),
                            (
                                "env_file",
                                tera::Value::from(env_file(&context.app, context.release)),
                            ),
                            ("host_port", tera::Value::from(host_port)),
                        ],
                    )?;
                    units.push(Unit { name: unit, text });
                }
            }
        }
        Target::Swarm => units.push(Unit {
            name: "stack.yml".into(),
            text: render_one("stack.yml.tera", &[])?,
        }),
        Target::Kubernetes => {
            units.push(Unit {
                name: "namespace.yaml".into(),
                text: render_one("namespace.yaml.tera", &[])?,
            });
            for volume in context.volumes.iter().filter(|v| !v.host) {
                let extra = [(
                    "volume",
                    tera::to_value(volume).unwrap_or(tera::Value::Null),
                )];
                units.push(Unit {
                    name: format!("volume-{}.yaml", volume.name),
                    text: render_one("volume.yaml.tera", &extra)?,
                });
            }
            for process in &context.processes {
                let extra = [("process", json(process))];
                units.push(Unit {
                    name: format!("deployment-{}.yaml", process.name),
                    text: render_one("deployment.yaml.tera", &extra)?,
                });
                if process.port.is_some() {
                    units.push(Unit {
                        name: format!("service-{}.yaml", process.name),
                        text: render_one("service.yaml.tera", &extra)?,
                    });
                }
            }
            if !context.domains.is_empty() && context.processes.iter().any(|p| p.name == "web") {
                units.push(Unit {
                    name: "ingress.yaml".into(),
                    text: render_one("ingress.yaml.tera", &[])?,
                });
            }
        }
    }
    Ok(units)
}

/// Where the systemd target keeps the config of one release, for its units' containers
/// (`docker run --env-file`): root-only, never in the unit itself (units are world-readable).
pub const ENV_DIR: &str = "/etc/berth/env";

/// The env file of one release of the app (systemd target).
pub fn env_file(app: &str, release: i64) -> String {
    format!("{ENV_DIR}/{app}/v{release}.env")
}

/// "template built-in:systemd/process.service.tera failed: … (line N)": tera's own chain.
fn template_error(name: &str, error: &tera::Error) -> String {
    let mut text = format!("template {name} failed: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text.replace('\n', " ")
}

/// Totals per process type: replicas × (cpu, memory).
#[derive(Debug, Clone, Serialize)]
pub struct PlanLine {
    pub process: String,
    pub replicas: u32,
    pub cpu_each: Option<f64>,
    pub memory_each_bytes: Option<u64>,
    pub cpu_total: Option<f64>,
    pub memory_total_bytes: Option<u64>,
}

pub fn plan(context: &Context) -> Vec<PlanLine> {
    context
        .processes
        .iter()
        .map(|p| {
            let cpu = p.cpu.as_deref().and_then(|c| c.parse::<f64>().ok());
            let memory = p.memory.as_deref().and_then(memory_bytes);
            PlanLine {
                process: p.name.clone(),
                replicas: p.replicas,
                cpu_each: cpu,
                memory_each_bytes: memory,
                cpu_total: cpu.map(|c| c * f64::from(p.replicas)),
                memory_total_bytes: memory.map(|m| m * u64::from(p.replicas)),
            }
        })
        .collect()
}

/// Prints the median time to render each target for an app with three process types
/// (`berth bench-render`, used by bench/render.sh).
pub fn bench(iterations: usize) {
    let resources = Resources {
        cpu: Some("0.5".into()),
        memory: Some("256m".into()),
    };
    let context = Context {
        app: "bench".into(),
        release: 42,
        image: "127.0.0.1:5055/bench:v42".into(),
        registry: true,
        env: (0..20)
            .map(|i| (format!("KEY_{i}"), format!("value {i}")))
            .collect(),
        labels: BTreeMap::from([("team".into(), "web".into())]),
        processes: vec![
            Process::new("web", vec![], 3, Some(5000), &resources),
            Process::new(
                "worker",
                vec!["./worker".into(), "--queue".into(), "default".into()],
                2,
                None,
                &resources,
            ),
            Process::new(
                "clock",
                vec!["./clock".into()],
                1,
                None,
                &Resources::default(),
            ),
        ],
        domains: vec!["bench.example.org".into()],
        volumes: vec![],
        publish_address: "0.0.0.0".into(),
        app_port: 40000,
        host_ports: Vec::new(),
        placement: Vec::new(),
    };
    println!(
        "render: median of {iterations} renders, an app with 3 process types (web x3, worker x2, clock x1)"
    );
    for target in Target::ALL {
        let mut times: Vec<f64> = (0..iterations)
            .map(|_| {
                let start = std::time::Instant::now();
                let units = render(target, &context, &Overrides::default());
                let elapsed = start.elapsed().as_secs_f64() * 1000.0;
                assert!(
                    units.is_ok_and(|u| !u.is_empty()),
                    "{target} rendered nothing"
                );
                elapsed
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "  {:<11} {:>8.3} ms   (target < 5 ms)",
            target.name(),
            times[times.len() / 2]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> Context {
        let resources = Resources {
            cpu: Some("0.5".into()),
            memory: Some("256m".into()),
        };
        Context {
            app: "shop".into(),
            release: 7,
            image: "127.0.0.1:5055/shop:v7".into(),
            registry: true,
            env: BTreeMap::from([("GREETING".into(), "say \"hi\"".into())]),
            labels: BTreeMap::new(),
            processes: vec![
                Process::new("web", vec![], 2, Some(5000), &resources),
                Process::new(
                    "worker",
                    vec!["sh".into(), "-c".into(), "work".into()],
                    1,
                    None,
                    &Resources::default(),
                ),
            ],
            domains: vec!["shop.example.org".into()],
            volumes: vec![],
            publish_address: "0.0.0.0".into(),
            app_port: 40001,
            host_ports: vec![40002, 40003],
            placement: vec!["node.labels.zone==eu".into()],
        }
    }

    #[test]
    fn hostile_config_values_and_commands_stay_inside_their_strings() {
        let mut context = sample();
        let hostile = "x\"\n    privileged: true\n    volumes: [\"/:/host\"]";
        context.env = BTreeMap::from([("EVIL".to_string(), hostile.to_string())]);
        for process in &mut context.processes {
            process.command = vec![
                "sh".into(),
                "-c".into(),
                format!("echo $HOME %n \\ {hostile}"),
            ];
        }
        for target in [Target::Swarm, Target::Kubernetes, Target::Systemd] {
            for unit in render(target, &context, &Overrides::default()).unwrap() {
                for line in unit.text.lines() {
                    let line = line.trim_start();
                    assert!(
                        !line.starts_with("privileged") && !line.starts_with("volumes: [\"/:/host"),
                        "{target} {}: injected line {line:?}\n{}",
                        unit.name,
                        unit.text
                    );
                }
            }
        }
        // Compose and Kubernetes expand `$`: berth's own environment must not leak into apps.
        let swarm = render(Target::Swarm, &context, &Overrides::default()).unwrap();
        assert!(swarm[0].text.contains("echo $$HOME") && !swarm[0].text.contains(" $HOME"));
        let systemd = render(Target::Systemd, &context, &Overrides::default()).unwrap();
        assert!(
            systemd[0]
                .text
                .contains(r#""echo $$HOME %%n \\ x\"     privileged"#),
            "{}",
            systemd[0].text
        );
    }

    #[test]
    fn swarm_stacks_keep_go_templates_in_config_values_literal() {
        // The swarm expands `{{…}}` in a task's environment: a value must arrive as it was set
        // (and `{{` alone must not make the swarm refuse the stack).
        let mut context = sample();
        context.env = BTreeMap::from([("T".to_string(), "{{.Node.Hostname}} {{".to_string())]);
        let swarm = render(Target::Swarm, &context, &Overrides::default()).unwrap();
        assert!(
            swarm[0]
                .text
                .contains(r#"T: "{{\"{{\"}}.Node.Hostname}} {{\"{{\"}}""#),
            "{}",
            swarm[0].text
        );
        // The task's own slot stays a template.
        assert!(swarm[0].text.contains(r#"DYNO: "web.{{.Task.Slot}}""#));
        assert_eq!(crate::deploy::swarm::literal("a{{{b}}"), r#"a{{"{{"}}{b}}"#);
    }

    #[test]
    fn renders_every_target() {
        let context = sample();
        let systemd = render(Target::Systemd, &context, &Overrides::default()).unwrap();
        let names: Vec<&str> = systemd.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "berth-shop.v7-web-1.service",
                "berth-shop.v7-web-2.service",
                "berth-shop.v7-worker-1.service"
            ]
        );
        // Each web instance publishes on the host port berth picked for it, never on the
        // app's stable port (the data plane's).
        assert!(
            systemd[1].text.contains("--publish 0.0.0.0:40003:5000")
                && systemd[1].text.contains("--label berth.port=40003")
                && systemd[1]
                    .text
                    .contains("--label berth.unit=berth-shop.v7-web-2.service")
                && systemd[1]
                    .text
                    .contains("--env-file /etc/berth/env/shop/v7.env")
                && !systemd[1].text.contains(":40001:"),
            "{}",
            systemd[1].text
        );
        assert!(
            !systemd[2].text.contains("--publish"),
            "{}",
            systemd[2].text
        );
        assert!(systemd[0].text.contains("--cpus 0.5 --memory 256m"));
        assert!(
            !systemd[0].text.contains("GREETING"),
            "config must stay out of unit files"
        );
        let swarm = render(Target::Swarm, &context, &Overrides::default()).unwrap();
        assert!(
            swarm[0].text.contains("failure_action: rollback")
                && swarm[0].text.contains("order: start-first")
                && swarm[0].text.contains("mode: host")
        );
        let kube = render(Target::Kubernetes, &context, &Overrides::default()).unwrap();
        let names: Vec<&str> = kube.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "namespace.yaml",
                "deployment-web.yaml",
                "service-web.yaml",
                "deployment-worker.yaml",
                "ingress.yaml"
            ]
        );
        assert!(kube[1].text.contains("memory: \"256Mi\""));
    }

    /// Every target's units for `sample()` are kept under `snapshots/render/<target>/`: a change
    /// to a template or to the context shows as a diff of those files. `BERTH_UPDATE_SNAPSHOTS=1`
    /// writes them anew (then review the diff and commit it).
    #[test]
    fn rendered_units_match_their_snapshots() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/render");
        let update = std::env::var_os("BERTH_UPDATE_SNAPSHOTS").is_some();
        let mut differ = Vec::new();
        for target in Target::ALL {
            let dir = root.join(target.name());
            let units = render(target, &sample(), &Overrides::default()).unwrap();
            if update {
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
            }
            let mut expected: Vec<String> = std::fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            expected.sort();
            let mut names: Vec<String> = units.iter().map(|u| u.name.clone()).collect();
            names.sort();
            if !update && names != expected {
                differ.push(format!("{target}: units {names:?}, snapshots {expected:?}"));
            }
            for unit in &units {
                let path = dir.join(&unit.name);
                if update {
                    std::fs::write(&path, &unit.text).unwrap();
                } else if std::fs::read_to_string(&path).ok().as_deref() != Some(&unit.text) {
                    differ.push(format!(
                        "{} differs from the render:\n{}",
                        path.display(),
                        unit.text
                    ));
                }
            }
        }
        assert!(
            differ.is_empty(),
            "{}\n(BERTH_UPDATE_SNAPSHOTS=1 cargo test --lib rendered_units writes them anew)",
            differ.join("\n")
        );
    }

    #[test]
    fn templates_cannot_read_the_environment_or_fill_memory() {
        // Attack: a template override asks for the server's environment (tokens, cloud
        // credentials of the shell that started berth) or for a 10^10-item range.
        let mut overrides = Overrides::default();
        overrides.sources.push((
            "app repo".into(),
            BTreeMap::from([(
                "stack.yml.tera".into(),
                "{{ get_env(name=\"PATH\", default=\"-\") }}".into(),
            )]),
        ));
        let error = render(Target::Swarm, &sample(), &overrides).unwrap_err();
        assert!(error.contains("get_env is not available"), "{error}");
        overrides.sources[0].1.insert(
            "stack.yml.tera".into(),
            "{% for i in range(end=10000000000) %}{% endfor %}".into(),
        );
        let error = render(Target::Swarm, &sample(), &overrides).unwrap_err();
        assert!(error.contains("at most 10000"), "{error}");
        // Control: a small range works as tera's own does.
        overrides.sources[0].1.insert(
            "stack.yml.tera".into(),
            "{% for i in range(start=1, end=7, step_by=2) %}{{ i }}{% endfor %}".into(),
        );
        assert_eq!(
            render(Target::Swarm, &sample(), &overrides).unwrap()[0].text,
            "135"
        );
    }

    #[test]
    fn overrides_win_and_errors_name_the_template() {
        let mut overrides = Overrides::default();
        overrides.sources.push((
            "app repo".into(),
            BTreeMap::from([("stack.yml.tera".into(), "custom {{ app }}".into())]),
        ));
        let swarm = render(Target::Swarm, &sample(), &overrides).unwrap();
        assert_eq!(swarm[0].text, "custom shop");
        overrides.sources[0]
            .1
            .insert("stack.yml.tera".into(), "line one\n{{ app | nope }}".into());
        let error = render(Target::Swarm, &sample(), &overrides).unwrap_err();
        assert!(
            error.contains("app repo:swarm/stack.yml.tera") && error.contains("nope"),
            "{error}"
        );
        overrides.sources[0]
            .1
            .insert("stack.yml.tera".into(), "line one\n{% if %}".into());
        let error = render(Target::Swarm, &sample(), &overrides).unwrap_err();
        assert!(
            error.contains("app repo:swarm/stack.yml.tera") && error.contains("2:"),
            "the line is named: {error}"
        );
    }

    #[test]
    fn resources_are_checked() {
        assert!(
            Resources {
                cpu: Some("0.5".into()),
                memory: Some("256m".into())
            }
            .validate()
            .is_ok()
        );
        assert!(
            Resources {
                cpu: Some("-1".into()),
                memory: None
            }
            .validate()
            .is_err()
        );
        assert!(
            Resources {
                cpu: Some("1e3".into()),
                memory: None
            }
            .validate()
            .is_err()
        );
        assert!(
            Resources {
                cpu: None,
                memory: Some("12x".into())
            }
            .validate()
            .is_err()
        );
        assert!(
            Resources {
                cpu: None,
                memory: Some("1k".into())
            }
            .validate()
            .is_err()
        );
        assert_eq!(memory_bytes("1g"), Some(1 << 30));
    }
}
