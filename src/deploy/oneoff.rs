//! One-off containers: `run` (attached to the SSH channel) and `run_to_end` (the release
//! phase and app.json scripts, output streamed, a time limit).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use futures_util::{FutureExt, StreamExt};

use super::docker::{host_config, remove_container};
use super::names::*;
use super::network::{ensure_network, join_links};
use crate::engine;
use crate::output::Output;

/// Output of a one-off container, by stream.
pub enum Chunk {
    Out(Vec<u8>),
    Err(Vec<u8>),
}

/// A frame of the engine's log or attach stream: stderr as such, anything else as stdout.
impl From<bollard::container::LogOutput> for Chunk {
    fn from(frame: bollard::container::LogOutput) -> Chunk {
        match frame {
            bollard::container::LogOutput::StdErr { message } => Chunk::Err(message.to_vec()),
            other => Chunk::Out(other.into_bytes().to_vec()),
        }
    }
}

/// A one-off container attached to the caller: its output, its stdin, and its end.
pub struct OneOff {
    pub output: futures_util::stream::BoxStream<'static, Chunk>,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    /// Waits for the container to exit, removes it, and gives its exit code.
    pub exit: futures_util::future::BoxFuture<'static, i64>,
    /// Kills and removes the container (the caller went away).
    pub abort: Box<dyn FnOnce() -> futures_util::future::BoxFuture<'static, ()> + Send>,
}

/// Where a one-off container (`run`, the release phase) runs: the app's mounts, the apps it is
/// linked to (whose networks it joins beside its app's), and the app's web limits.
#[derive(Debug, Clone, Default)]
pub struct RunIn {
    /// The image's registry digest, when known (pulled by it).
    pub digest: Option<String>,
    pub binds: Vec<String>,
    pub links: Vec<String>,
    pub resources: super::render::Resources,
}

/// Starts `command` (an argument vector, no shell) in a new container of `image` with `env`,
/// attached to stdin/stdout/stderr, with a TTY when `tty`.
pub async fn run_one_off(
    docker: &Docker,
    app: &str,
    image: &str,
    env: Vec<String>,
    command: Vec<String>,
    within: RunIn,
    tty: bool,
) -> Result<OneOff, String> {
    let RunIn {
        digest,
        binds,
        links,
        resources,
    } = within;
    let network = ensure_network(docker, &app_network(app)).await?;
    crate::registry::ensure_local(docker, image, digest.as_deref(), &Output::discard()).await?;
    use bollard::query_parameters::AttachContainerOptionsBuilder;
    let suffix: u32 = rand::random::<u32>() % 1_000_000;
    let name = format!("berth-{app}-run-{suffix}");
    let labels = HashMap::from([
        (LABEL_APP.to_string(), app.to_string()),
        (LABEL_PROCESS.to_string(), "run".to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(env),
        cmd: Some(command),
        tty: Some(tty),
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some(labels),
        // The limits of the app's web process (`resources:set`), no restart policy.
        host_config: Some(HostConfig {
            restart_policy: None,
            ..host_config(&resources, None, &binds, &network)
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| {
            format!(
                "cannot create the one-off container: {}",
                engine::describe(&e)
            )
        })?;
    if let Err(message) = join_links(docker, &name, &links).await {
        remove_container(docker, &name).await;
        return Err(message);
    }
    let attach = AttachContainerOptionsBuilder::default()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .build();
    let attached = match docker.attach_container(&name, Some(attach)).await {
        Ok(attached) => attached,
        Err(error) => {
            remove_container(docker, &name).await;
            return Err(format!(
                "cannot attach to the one-off container: {}",
                engine::describe(&error)
            ));
        }
    };
    if let Err(error) = docker.start_container(&name, None).await {
        remove_container(docker, &name).await;
        return Err(format!(
            "the one-off container did not start: {}",
            engine::describe(&error)
        ));
    }
    let output = attached
        .output
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(|item| std::future::ready(item.ok().map(Chunk::from)))
        .boxed();
    let (waiter, waited_name) = (docker.clone(), name.clone());
    let exit = async move {
        let mut wait = waiter.wait_container(&waited_name, None);
        let code = match wait.next().await {
            Some(Ok(response)) => response.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            _ => 1,
        };
        remove_container(&waiter, &waited_name).await;
        code
    }
    .boxed();
    let (killer, killed_name) = (docker.clone(), name);
    let abort =
        Box::new(move || async move { remove_container(&killer, &killed_name).await }.boxed())
            as Box<dyn FnOnce() -> _ + Send>;
    Ok(OneOff {
        output,
        input: attached.input,
        exit,
        abort,
    })
}

/// Runs `command` to its end in a one-off container of `image` (no TTY, no stdin), streaming
/// its output line by line to `out`; gives the exit code. The release phase and app.json's
/// predeploy and postdeploy scripts run this way.
#[allow(clippy::too_many_arguments)]
pub async fn run_to_end(
    docker: &Docker,
    app: &str,
    image: &str,
    env: Vec<String>,
    command: Vec<String>,
    within: RunIn,
    limit: Duration,
    out: &Output,
) -> Result<i64, String> {
    let OneOff {
        mut output,
        input,
        exit,
        abort,
    } = run_one_off(docker, app, image, env, command, within, false).await?;
    drop(input);
    let run = async {
        let mut lines = crate::output::Lines::default();
        while let Some(chunk) = output.next().await {
            let (Chunk::Out(bytes) | Chunk::Err(bytes)) = chunk;
            lines.feed(&bytes, out);
        }
        lines.finish(out);
        exit.await
    };
    match tokio::time::timeout(limit, run).await {
        Ok(code) => Ok(code),
        Err(_) => {
            abort().await;
            Err(format!(
                "it did not finish within {} s (phase_timeout) and was stopped",
                limit.as_secs()
            ))
        }
    }
}
