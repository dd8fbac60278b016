//! What the pusher sees: Heroku-style `-----> ` steps, indented detail, ` !     ` errors.
//!
//! The pipeline writes here and never waits on the client: a pusher who disconnects does not
//! stop a deploy half-way (the receiver is gone and sends are dropped).

use tokio::sync::mpsc::UnboundedSender;

#[derive(Clone)]
pub struct Output {
    sink: UnboundedSender<Vec<u8>>,
}

impl Output {
    pub fn new(sink: UnboundedSender<Vec<u8>>) -> Output {
        Output { sink }
    }

    /// An output nobody reads (background work; what matters is logged and recorded as events).
    pub fn discard() -> Output {
        let (sender, _) = tokio::sync::mpsc::unbounded_channel();
        Output::new(sender)
    }

    /// An output whose text is handed back, whole, once every clone of it is dropped
    /// (for commands, which answer when they are done).
    pub fn collecting() -> (Output, impl std::future::Future<Output = String>) {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let collected = async move {
            let mut bytes = Vec::new();
            while let Some(chunk) = receiver.recv().await {
                bytes.extend_from_slice(&chunk);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        };
        (Output::new(sender), collected)
    }

    /// A step of the pipeline: `-----> Building myapp from Dockerfile`.
    pub fn step(&self, message: &str) {
        self.line("-----> ", message);
    }

    /// Detail under a step, such as a line of build output.
    pub fn detail(&self, message: &str) {
        self.line("       ", message);
    }

    /// What went wrong and what to do about it.
    pub fn error(&self, message: &str) {
        tracing::warn!(%message, "push failed");
        self.line(" !     ", message);
    }

    fn line(&self, prefix: &str, message: &str) {
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
        let _ = self.sink.send(bytes);
    }
}
