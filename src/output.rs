//! What the pusher sees: Heroku-style `-----> ` steps, indented detail, ` !     ` errors.
//!
//! The pipeline writes here and never waits on the client: a pusher who disconnects does not
//! stop a deploy half-way (the receiver is gone and sends are dropped).
//!
//! Bounded, because a member's build or release command decides how much it prints (`RUN yes`):
//! a line is cut at [`LINE_LIMIT`] bytes, the channel holds at most [`QUEUE`] lines (a client
//! that reads slower loses lines, and is told how many), and an output carries at most its
//! budget in all ([`PUSH_BUDGET`] for a push, [`COMMAND_BUDGET`] for a command's collected
//! answer), then one "truncated" line. Steps (`-----> `, a few per push, the URL among them)
//! and errors (` !     `) are always kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::mpsc::{Receiver, Sender, error::TrySendError};

/// The longest line kept; longer ones are cut with a mark.
pub const LINE_LIMIT: usize = 4096;
/// Lines waiting for a slow client at most.
pub const QUEUE: usize = 1024;
/// Places in the queue kept for errors, so a stalled client still gets the verdict.
const RESERVE: usize = 16;
/// What a push shows at most.
pub const PUSH_BUDGET: usize = 8 << 20;
/// What a command's collected answer holds at most.
pub const COMMAND_BUDGET: usize = 1 << 20;

struct Shared {
    /// Bytes still allowed.
    left: AtomicUsize,
    /// Lines dropped because the client was slow, not yet reported.
    dropped: AtomicU64,
    truncated: AtomicBool,
}

#[derive(Clone)]
pub struct Output {
    sink: Sender<Vec<u8>>,
    shared: Arc<Shared>,
}

impl Output {
    /// An output of at most `budget` bytes and its receiving end.
    pub fn bounded(budget: usize) -> (Output, Receiver<Vec<u8>>) {
        let (sink, receiver) = tokio::sync::mpsc::channel(QUEUE + RESERVE);
        let shared = Arc::new(Shared {
            left: AtomicUsize::new(budget),
            dropped: AtomicU64::new(0),
            truncated: AtomicBool::new(false),
        });
        (Output { sink, shared }, receiver)
    }

    /// An output nobody reads (background work; what matters is logged and recorded as events).
    pub fn discard() -> Output {
        Output::bounded(0).0
    }

    /// An output whose text is handed back, whole, once every clone of it is dropped
    /// (for commands, which answer when they are done).
    pub fn collecting() -> (Output, impl std::future::Future<Output = String>) {
        let (output, mut receiver) = Output::bounded(COMMAND_BUDGET);
        let collected = async move {
            let mut bytes = Vec::new();
            while let Some(chunk) = receiver.recv().await {
                bytes.extend_from_slice(&chunk);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        };
        (output, collected)
    }

    /// A step of the pipeline: `-----> Building myapp from Dockerfile`.
    pub fn step(&self, message: &str) {
        self.line("-----> ", message, true);
    }

    /// Detail under a step, such as a line of build output.
    pub fn detail(&self, message: &str) {
        self.line("       ", message, false);
    }

    /// What went wrong and what to do about it.
    pub fn error(&self, message: &str) {
        tracing::warn!(message = %cut(message), "push failed");
        self.line(" !     ", message, true);
    }

    fn line(&self, prefix: &str, message: &str, always: bool) {
        let message = cut(message);
        let mut bytes = Vec::with_capacity(prefix.len() + message.len() + 1);
        for (index, line) in message.split('\n').enumerate() {
            bytes.extend_from_slice(if index == 0 {
                prefix.as_bytes()
            } else {
                b"       "
            });
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        let shared = &self.shared;
        if !always {
            let taken = shared
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(bytes.len())
                });
            if taken.is_err() {
                if !shared.truncated.swap(true, Ordering::SeqCst) {
                    let _ = self.sink.try_send(
                        b"       ... output truncated here (too much to show; the rest still runs)\n"
                            .to_vec(),
                    );
                }
                return;
            }
        }
        let dropped = shared.dropped.swap(0, Ordering::SeqCst);
        if dropped > 0 {
            let mut note =
                format!("       ... {dropped} line(s) not shown (the client read too slowly)\n")
                    .into_bytes();
            note.extend_from_slice(&bytes);
            bytes = note;
        }
        if !always && self.sink.capacity() <= RESERVE {
            shared.dropped.fetch_add(1 + dropped, Ordering::SeqCst);
            return;
        }
        match self.sink.try_send(bytes) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                shared.dropped.fetch_add(1 + dropped, Ordering::SeqCst);
            }
        }
    }
}

/// `message`, cut at [`LINE_LIMIT`] bytes (on a character boundary) with a mark.
fn cut(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= LINE_LIMIT {
        return message.into();
    }
    let mut end = LINE_LIMIT;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [line cut at {LINE_LIMIT} bytes]", &message[..end]).into()
}

/// Splits a stream of bytes into lines for [`Output::detail`], holding at most [`LINE_LIMIT`]
/// bytes of an unfinished line (a longer one is shown in pieces).
#[derive(Default)]
pub struct Lines {
    pending: Vec<u8>,
    /// The current line was cut: the rest of it, up to its newline, is dropped.
    discarding: bool,
}

impl Lines {
    /// Feeds `bytes`; every complete (or over-long) line goes to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &Output) {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let ends = chunk.ends_with(b"\n");
            if self.discarding {
                self.discarding = !ends;
                continue;
            }
            let room = LINE_LIMIT - self.pending.len();
            self.pending
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            if ends && chunk.len() <= room {
                out.detail(String::from_utf8_lossy(&self.pending).trim_end());
                self.pending.clear();
            } else if self.pending.len() >= LINE_LIMIT {
                out.detail(&format!(
                    "{} [line cut at {LINE_LIMIT} bytes]",
                    String::from_utf8_lossy(&self.pending)
                ));
                self.pending.clear();
                self.discarding = !ends;
            }
        }
    }

    /// What is left of an unfinished last line.
    pub fn finish(&mut self, out: &Output) {
        self.discarding = false;
        if !String::from_utf8_lossy(&self.pending).trim().is_empty() {
            out.detail(String::from_utf8_lossy(&self.pending).trim_end());
        }
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endless_output_stays_bounded() {
        // Attack: `RUN yes | tr -d '\n'` (one endless line) and `RUN yes` (endless lines) with a
        // client that never reads.
        let (out, mut receiver) = Output::bounded(64 << 10);
        let mut lines = Lines::default();
        for _ in 0..10_000 {
            lines.feed(&[b'y'; 1000], &out);
        }
        for _ in 0..100_000 {
            out.detail("y");
        }
        out.error("the build failed");
        drop(out);
        let mut total = 0;
        let mut chunks = 0;
        let mut last = Vec::new();
        while let Some(chunk) = receiver.recv().await {
            total += chunk.len();
            chunks += 1;
            last = chunk;
        }
        assert!(chunks <= QUEUE + RESERVE, "{chunks}");
        assert!(total < (64 << 10) + 2 * LINE_LIMIT, "{total}");
        assert!(String::from_utf8_lossy(&last).contains("the build failed"));
    }

    #[tokio::test]
    async fn a_slow_client_is_told_what_it_missed() {
        let (out, mut receiver) = Output::bounded(PUSH_BUDGET);
        for index in 0..(QUEUE + 10) {
            out.detail(&format!("line {index}"));
        }
        // The client catches up; the next line says how many it lost.
        let mut seen = 0;
        while receiver.try_recv().is_ok() {
            seen += 1;
        }
        assert_eq!(seen, QUEUE);
        out.step("Deploying");
        let next = String::from_utf8(receiver.recv().await.unwrap()).unwrap();
        assert!(
            next.starts_with("       ... 10 line(s) not shown"),
            "{next}"
        );
        assert!(next.ends_with("-----> Deploying\n"), "{next}");
        let long = "x".repeat(LINE_LIMIT * 3);
        out.detail(&long);
        let cut_line = receiver.recv().await.unwrap();
        assert!(cut_line.len() < LINE_LIMIT + 64);
    }
}
