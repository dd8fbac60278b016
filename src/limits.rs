//! Bounds on what unauthenticated clients can hold: connections in all and per client
//! address (the SSH server, the HTTP router, the apps' TCP ports), and connections that end
//! when idle.

use std::collections::HashMap;
use std::future::Future as _;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;

/// Things held at once, in all and per key: connections per client address, builds and `run`
/// containers per member key.
pub struct Limits<K> {
    total: usize,
    per_key: usize,
    open: std::sync::Mutex<(usize, HashMap<K, usize>)>,
}

/// Open connections in all and per client address.
pub type ConnectionLimits = Limits<std::net::IpAddr>;

/// One held thing; let go when dropped.
pub struct Slot<K: Hash + Eq + Clone> {
    limits: Arc<Limits<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Limits<K> {
    pub fn new(total: usize, per_key: usize) -> Arc<Limits<K>> {
        Arc::new(Limits {
            total,
            per_key,
            open: std::sync::Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for one more of `key`'s; none when either cap is reached.
    pub fn enter(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let here = open.1.get(&key).copied().unwrap_or(0);
        if open.0 >= self.total || here >= self.per_key {
            return None;
        }
        open.0 += 1;
        open.1.insert(key.clone(), here + 1);
        Some(Slot {
            limits: self.clone(),
            key,
        })
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(count) = open.1.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.1.remove(&self.key);
            }
        }
    }
}

/// A client connection that ends after `idle` with no byte either way (keep-alive waits,
/// stalled clients and quiet upgraded tunnels alike).
pub struct IdleIo {
    inner: TcpStream,
    idle: Duration,
    /// The last byte either way.
    last: tokio::time::Instant,
    /// Fires at the earliest moment the connection can have been idle for `idle`; moved on
    /// only then (not at every byte, which would touch the timer wheel per read and write).
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl IdleIo {
    pub fn new(inner: TcpStream, idle: Duration) -> IdleIo {
        IdleIo {
            inner,
            idle,
            last: tokio::time::Instant::now(),
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn active(&mut self) {
        self.last = tokio::time::Instant::now();
    }

    /// Whether the connection has been idle too long (registers for a wake-up otherwise).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let deadline = self.last + self.idle;
            if tokio::time::Instant::now() >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
        false
    }
}

fn idle_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "idle too long")
}

impl tokio::io::AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                self.active();
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                self.active();
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                self.active();
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_all_and_per_key_and_free_on_drop() {
        let limits = Limits::new(3, 2);
        let a1 = limits.enter("a").expect("first of a");
        let _a2 = limits.enter("a").expect("second of a");
        assert!(limits.enter("a").is_none(), "a third of a's");
        let _b1 = limits.enter("b").expect("b");
        assert!(limits.enter("c").is_none(), "over the total");
        drop(a1);
        assert!(limits.enter("c").is_some(), "a freed slot is free again");
    }
}
