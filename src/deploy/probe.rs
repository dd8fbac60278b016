//! Whether an instance answers, for readiness (deploys), the serving sets' health task
//! (`route`) and the swarm target: a plain TCP connect and `GET`, with or without app.json's
//! web health check. Knows nothing of the engine or the routes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One readiness probe: with a health check, `GET path` must answer its status (any 2xx or 3xx
/// when unset) within its timeout; without one, anything answering will do (`answers`).
pub async fn probe(
    addr: SocketAddr,
    check: Option<&crate::manifest::Healthcheck>,
) -> Result<(), String> {
    let Some(check) = check else {
        return if answers(addr).await {
            Ok(())
        } else {
            Err("nothing answers".to_string())
        };
    };
    let path = &check.path;
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: berth-healthcheck\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let mut head = Vec::new();
        let mut buffer = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let read = stream
                .read(&mut buffer)
                .await
                .map_err(|e| format!("GET {path}: {e}"))?;
            if read == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..read]);
        }
        let line = String::from_utf8_lossy(&head);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("GET {path}: no HTTP answer"))?;
        let wanted = match check.status {
            Some(expected) => status == expected,
            None => (200..400).contains(&status),
        };
        if wanted {
            Ok(())
        } else {
            let expected = check
                .status
                .map_or("2xx or 3xx".to_string(), |s| s.to_string());
            Err(format!("GET {path} answered {status}, expected {expected}"))
        }
    };
    tokio::time::timeout(Duration::from_secs(check.timeout), attempt)
        .await
        .unwrap_or_else(|_| Err(format!("GET {path}: no answer within {} s", check.timeout)))
}

/// What a `GET /` sent to an address got back.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Some bytes: an HTTP response, or a TCP service's greeting.
    Bytes,
    /// The connection was open but nothing came back within the wait.
    Silence,
    /// Refused, or closed without a byte: with the engine's port proxy in front, nothing
    /// (or a container being torn down) is behind it.
    Nothing,
}

/// Sends `GET /` to `addr` and waits up to `wait` for the first bytes.
pub async fn reply_to_get(addr: SocketAddr, wait: Duration) -> Reply {
    let attempt = async {
        let Ok(Ok(mut stream)) = tokio::time::timeout(wait, TcpStream::connect(addr)).await else {
            return Reply::Nothing;
        };
        let request = b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: berth-readiness\r\n\r\n";
        if stream.write_all(request).await.is_err() {
            return Reply::Nothing;
        }
        let mut buffer = [0u8; 64];
        match tokio::time::timeout(wait, stream.read(&mut buffer)).await {
            Ok(Ok(read)) if read > 0 => Reply::Bytes,
            Ok(_) => Reply::Nothing,
            Err(_) => Reply::Silence,
        }
    };
    tokio::time::timeout(wait * 2, attempt)
        .await
        .unwrap_or(Reply::Nothing)
}

/// Whether something answers at `addr` (for readiness): bytes back, or a connection held open
/// (a silent TCP service).
pub async fn answers(addr: SocketAddr) -> bool {
    reply_to_get(addr, Duration::from_secs(2)).await != Reply::Nothing
}
