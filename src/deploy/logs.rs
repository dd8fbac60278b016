//! Container logs (`logs`, `logs -f`, and the last lines of an instance that failed).

use bollard::Docker;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;

/// A container's output (stdout and stderr), the last `tail` lines, then more if `follow`.
pub fn log_stream(
    docker: &Docker,
    name: &str,
    tail: i64,
    follow: bool,
) -> futures_util::stream::BoxStream<'static, Vec<u8>> {
    let name = name.to_string();
    stream_of(docker, tail, follow, move |docker, options| {
        docker.logs(&name, Some(options)).boxed()
    })
}

/// A swarm task's output, fetched by the manager from the node that runs it: as `log_stream`.
pub fn task_log_stream(
    docker: &Docker,
    task: &str,
    tail: i64,
    follow: bool,
) -> futures_util::stream::BoxStream<'static, Vec<u8>> {
    let task = task.to_string();
    stream_of(docker, tail, follow, move |docker, options| {
        docker.task_logs(&task, Some(options)).boxed()
    })
}

type LogItems = futures_util::stream::BoxStream<
    'static,
    Result<bollard::container::LogOutput, bollard::errors::Error>,
>;

/// The engine's log stream `open` makes (stdout and stderr, the last `tail` lines, `follow`),
/// as bytes, up to its first error.
fn stream_of(
    docker: &Docker,
    tail: i64,
    follow: bool,
    open: impl FnOnce(Docker, bollard::query_parameters::LogsOptions) -> LogItems + Send + 'static,
) -> futures_util::stream::BoxStream<'static, Vec<u8>> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .tail(&tail.to_string())
        .build();
    let docker = docker.clone();
    // The engine's stream borrows nothing from us once made; move the client in to keep it alive.
    futures_util::stream::once(async move { open(docker, options) })
        .flatten()
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(|item| std::future::ready(item.ok().map(|chunk| chunk.into_bytes().to_vec())))
        .boxed()
}

/// The container's last log lines, formatted to follow an error message.
pub(super) async fn last_logs(docker: &Docker, name: &str) -> String {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail("20")
        .build();
    let mut stream = docker.logs(name, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&chunk.to_string());
    }
    let text = text.trim_end();
    if text.is_empty() {
        String::new()
    } else {
        format!("{}\n{text}", crate::store::LOG_LINES_MARKER)
    }
}
