//! Rendering templates that are not berth's own (an app repo's approved `.berth/templates/`,
//! the server's `template_dir`) in a child process with hard limits, so that no template can
//! stall or crash the server: tera has no recursion, time or memory bound of its own, and a
//! macro that calls itself overflows the stack, which aborts the whole process.
//!
//! The child is berth itself (`/proc/self/exe render-sandbox`, which works even when the
//! binary on disk was replaced by an upgrade), with a cleared environment, no files it could
//! write (`RLIMIT_FSIZE` 0), at most [`CPU_SECONDS`] of CPU, [`MEMORY_BYTES`] of address
//! space, and a wall-clock limit; it reads the context and templates as JSON on stdin and
//! answers JSON on stdout, at most [`OUTPUT_LIMIT`] bytes. Built-in templates alone render
//! in-process, off the async runtime.

use std::io::{Read, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::render::{self, Context, Overrides, Target, Unit};

/// CPU seconds a sandboxed render may use.
pub const CPU_SECONDS: u64 = 5;
/// Wall-clock limit of a sandboxed render.
pub const WALL: Duration = Duration::from_secs(10);
/// Address space of the render child.
pub const MEMORY_BYTES: u64 = 512 << 20;
/// The most rendered text a render may produce (all units together).
pub const OUTPUT_LIMIT: usize = 4 << 20;
/// The largest input the child takes (context plus templates).
const INPUT_LIMIT: u64 = 8 << 20;

#[derive(Serialize, Deserialize)]
struct Job {
    target: Target,
    context: Context,
    overrides: Overrides,
}

/// Renders `target`'s units: in-process when only built-in templates are involved, else in a
/// limited child process. Errors are one line naming the template or the limit.
pub async fn render(
    target: Target,
    context: &Context,
    overrides: Overrides,
) -> Result<Vec<Unit>, String> {
    if overrides.is_empty() {
        let context = context.clone();
        return tokio::task::spawn_blocking(move || {
            render::render(target, &context, &Overrides::default())
        })
        .await
        .map_err(|e| format!("rendering failed: {e}"))?;
    }
    let job = serde_json::to_vec(&Job {
        target,
        context: context.clone(),
        overrides,
    })
    .map_err(|e| format!("rendering failed: {e}"))?;
    if job.len() as u64 > INPUT_LIMIT {
        return Err(format!(
            "templates refused: context and templates are over {} MiB",
            INPUT_LIMIT >> 20
        ));
    }
    let mut command = tokio::process::Command::new("/proc/self/exe");
    command
        .arg("render-sandbox")
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = |resource, value: u64| {
                let rlimit = libc::rlimit {
                    rlim_cur: value as libc::rlim_t,
                    rlim_max: value as libc::rlim_t,
                };
                if libc::setrlimit(resource, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            limit(libc::RLIMIT_CPU, CPU_SECONDS)?;
            limit(libc::RLIMIT_AS, MEMORY_BYTES)?;
            limit(libc::RLIMIT_FSIZE, 0)?;
            limit(libc::RLIMIT_NOFILE, 16)?;
            limit(libc::RLIMIT_CORE, 0)?;
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("rendering failed: cannot start the renderer: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let work = async {
        let write = async move {
            // A child that died early closes its end: the error shows in its exit status.
            let _ = stdin.write_all(&job).await;
            drop(stdin);
        };
        let read = async {
            let mut answer = Vec::new();
            (&mut stdout)
                .take(OUTPUT_LIMIT as u64 + 64 * 1024)
                .read_to_end(&mut answer)
                .await
                .map(|_| answer)
        };
        let ((), answer) = tokio::join!(write, read);
        let status = child.wait().await;
        (answer, status)
    };
    let (answer, status) = match tokio::time::timeout(WALL, work).await {
        Ok(done) => done,
        Err(_) => {
            return Err(format!(
                "templates refused: rendering took longer than {} s",
                WALL.as_secs()
            ));
        }
    };
    let status = status.map_err(|e| format!("rendering failed: {e}"))?;
    let answer = answer.map_err(|e| format!("rendering failed: {e}"))?;
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        let why = match status.signal() {
            Some(libc::SIGXCPU) | Some(libc::SIGKILL) => {
                format!("it used more than {CPU_SECONDS} s of CPU")
            }
            Some(libc::SIGSEGV) | Some(libc::SIGABRT) | Some(libc::SIGBUS) => {
                "it crashed the renderer (a macro that calls itself, or more than 512 MiB)"
                    .to_string()
            }
            _ => format!("the renderer exited with {status}"),
        };
        return Err(format!("templates refused: {why}"));
    }
    let answer: Result<Vec<Unit>, String> = serde_json::from_slice(&answer).map_err(|_| {
        format!(
            "templates refused: the rendered units are over {} MiB",
            OUTPUT_LIMIT >> 20
        )
    })?;
    answer
}

/// `berth render-sandbox`: the child's side. Reads a job on stdin, prints the units (or the
/// error) as JSON; a render over [`OUTPUT_LIMIT`] is an error.
pub fn child_main() -> i32 {
    let mut input = Vec::new();
    if std::io::stdin()
        .take(INPUT_LIMIT)
        .read_to_end(&mut input)
        .is_err()
    {
        return 2;
    }
    let answer: Result<Vec<Unit>, String> = match serde_json::from_slice::<Job>(&input) {
        Ok(job) => render::render(job.target, &job.context, &job.overrides).and_then(|units| {
            let total: usize = units.iter().map(|u| u.text.len()).sum();
            if total > OUTPUT_LIMIT {
                Err(format!(
                    "templates refused: the rendered units are over {} MiB",
                    OUTPUT_LIMIT >> 20
                ))
            } else {
                Ok(units)
            }
        }),
        Err(error) => Err(format!("rendering failed: bad job: {error}")),
    };
    let Ok(text) = serde_json::to_vec(&answer) else {
        return 2;
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&text)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return 2;
    }
    0
}
