//! The router's HTTP/1.1 path: a client connection's plain requests are parsed once (httparse),
//! their head rewritten as it is copied to the app (hop-by-hop headers out, `X-Forwarded-*`
//! in), and the app's answer copied back as bytes: a chunked body passes through as it is,
//! scanned only to find its end. This is what nginx does per request, and it is most of the
//! router's work: the general path (hyper's server and client, a task and channels between
//! them) took half as much CPU again per request as nginx.
//!
//! A request this path does not take — HTTP/1.0, HTTP/2's preface, an upgrade, a chunked or
//! `Expect`ing request body, an absolute target, a `Connection` header naming other headers,
//! an ACME challenge or an inbound webhook, anything httparse refuses — hands the connection,
//! with every byte read so far, to the general path (`End::General`), which serves it from
//! then on. So every answer the general path gives (400, 431, h2c, WebSockets) stays its own.
//!
//! Same rules as the general path: the host picks the app, `route::Routes` the instance
//! (a lease held until the answer's last byte, so drains wait for it); an instance that
//! refuses connections is taken out and another picked; a kept connection the app closed is
//! replaced, and an idempotent request it lost before any answer is sent again on a new one;
//! `max_body_size`, `request_timeout` (to the answer's head) and `idle_timeout` hold; each
//! request is counted and logged.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::metrics::AccessEntry;
use crate::plane::Plane;
use crate::route::{Lease, Pick};

/// The longest request or response head taken (past it: the general path answers 431).
const MAX_HEAD: usize = 64 * 1024;
/// Headers a head may have here, as hyper (a request with more goes to the general path; an
/// answer with more is a 502).
const MAX_HEADERS: usize = 100;
/// How many connections to app instances one client connection keeps (one per instance).
const KEPT: usize = 8;
/// Bytes read at once.
const CHUNK: usize = 16 * 1024;

/// How a client connection left this path.
pub(super) enum End {
    /// Closed (by the client, an error, or `Connection: close`).
    Closed,
    /// The general path serves it from here on, starting with the bytes in the buffer.
    General,
}

/// A request head, checked and rewritten for the app.
struct Head {
    /// Its length in the client's buffer.
    len: usize,
    method: hyper::Method,
    host: String,
    /// The target as the access log keeps it (only when there is an access log).
    path: Option<String>,
    length: u64,
    close: bool,
    /// The head the app gets.
    upstream: Vec<u8>,
}

enum Parsed {
    Head(Head),
    Partial,
    General,
}

/// Serves a client connection's HTTP/1.1 requests until it closes, or until one of them is
/// for the general path.
pub(super) async fn serve<S>(
    plane: &Plane,
    client: &mut S,
    remote: SocketAddr,
    secure: bool,
    buf: &mut BytesMut,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut kept: Vec<Up> = Vec::new();
    let ip = remote.ip().to_string();
    loop {
        // A head begun must be whole within `idle_timeout` (hyper's header_read_timeout on the
        // general path): a client trickling a byte at a time cannot hold the connection.
        let mut begun: Option<tokio::time::Instant> = None;
        let head = loop {
            if !buf.is_empty() {
                match parse_request(plane, buf, &ip, secure) {
                    Parsed::Head(head) => break head,
                    Parsed::General => return End::General,
                    Parsed::Partial if buf.len() > MAX_HEAD => return End::General,
                    Parsed::Partial => {}
                }
            }
            buf.reserve(CHUNK);
            let read = match begun {
                None if buf.is_empty() => client.read_buf(buf).await,
                _ => {
                    let deadline = *begun.get_or_insert_with(|| {
                        tokio::time::Instant::now()
                            + Duration::from_secs(plane.settings.idle_timeout)
                    });
                    match tokio::time::timeout_at(deadline, client.read_buf(buf)).await {
                        Ok(read) => read,
                        Err(_) => return End::Closed,
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return End::Closed,
                Ok(_) => {}
            }
        };
        match exchange(plane, client, remote, buf, head, &mut kept).await {
            Next::Continue => {}
            Next::Close => {
                let _ = client.shutdown().await;
                return End::Closed;
            }
            Next::Gone => return End::Closed,
        }
    }
}

/// What the client connection does after a request.
enum Next {
    Continue,
    /// Answered, then closed.
    Close,
    /// Broken mid-way.
    Gone,
}

fn parse_request(plane: &Plane, buf: &[u8], ip: &str, secure: bool) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::General,
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::General;
    };
    if !path.starts_with('/')
        || method == "CONNECT"
        || path.starts_with("/.well-known/acme-challenge/")
        || path.starts_with(crate::webhooks::INBOUND_PREFIX)
    {
        return Parsed::General;
    }
    let Ok(method) = hyper::Method::from_bytes(method.as_bytes()) else {
        return Parsed::General;
    };
    let mut upstream = Vec::with_capacity(len + 128);
    upstream.extend_from_slice(method.as_str().as_bytes());
    upstream.push(b' ');
    upstream.extend_from_slice(path.as_bytes());
    upstream.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host: Option<&str> = None;
    let mut length: Option<u64> = None;
    let mut close = false;
    let mut chain = String::new();
    for header in request.headers.iter() {
        let name = header.name;
        let lower = |n: &str| name.eq_ignore_ascii_case(n);
        if lower("host") {
            if host.is_some() {
                return Parsed::General;
            }
            match std::str::from_utf8(header.value) {
                Ok(value) => host = Some(value),
                Err(_) => return Parsed::General,
            }
        } else if lower("content-length") {
            let value = std::str::from_utf8(header.value).unwrap_or("").trim();
            if length.is_some() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Parsed::General;
            }
            match value.parse() {
                Ok(n) => length = Some(n),
                Err(_) => return Parsed::General,
            }
        } else if lower("transfer-encoding") || lower("upgrade") || lower("expect") {
            return Parsed::General;
        } else if lower("connection") {
            for token in std::str::from_utf8(header.value).unwrap_or("?").split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case("keep-alive") && !token.is_empty() {
                    // It names other hop-by-hop headers, or an upgrade.
                    return Parsed::General;
                }
            }
            continue;
        } else if lower("x-forwarded-for") {
            let Ok(value) = std::str::from_utf8(header.value) else {
                return Parsed::General;
            };
            if !chain.is_empty() {
                chain.push_str(", ");
            }
            chain.push_str(value.trim());
            continue;
        }
        if is_hop_by_hop(name) || lower("x-forwarded-proto") || lower("x-forwarded-host") {
            continue;
        }
        upstream.extend_from_slice(name.as_bytes());
        upstream.extend_from_slice(b": ");
        upstream.extend_from_slice(header.value);
        upstream.extend_from_slice(b"\r\n");
    }
    let Some(raw_host) = host else {
        return Parsed::General;
    };
    let host = super::normalize_host(raw_host);
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    chain.push_str(ip);
    for (name, value) in [
        ("x-forwarded-for", chain.as_str()),
        ("x-forwarded-proto", if secure { "https" } else { "http" }),
        ("x-forwarded-host", host.as_str()),
    ] {
        upstream.extend_from_slice(name.as_bytes());
        upstream.extend_from_slice(b": ");
        upstream.extend_from_slice(value.as_bytes());
        upstream.extend_from_slice(b"\r\n");
    }
    upstream.extend_from_slice(b"\r\n");
    Parsed::Head(Head {
        len,
        path: plane.access_log().map(|_| super::redact(path)),
        method,
        host,
        length: length.unwrap_or(0),
        close,
        upstream,
    })
}

/// One of the router's hop-by-hop headers (`Transfer-Encoding` is not among them: a chunked
/// answer passes through as it is, to a client that speaks HTTP/1.1).
fn is_hop_by_hop(name: &str) -> bool {
    super::HOP_BY_HOP
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop))
}

/// A connection to an app instance, with what was read from it.
struct Up {
    address: SocketAddr,
    stream: TcpStream,
    buf: BytesMut,
}

impl Up {
    /// Whether the app kept it open with nothing unasked-for on it (checked without a system
    /// call when the socket has not become readable).
    fn usable(&self) -> bool {
        let mut byte = [0u8; 1];
        self.buf.is_empty()
            && matches!(self.stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

async fn connect(address: SocketAddr) -> Option<Up> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    Some(Up {
        address,
        stream,
        buf: BytesMut::with_capacity(CHUNK),
    })
}

/// How an answer's body ends (RFC 9112 §6.3).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// At the app's end of the connection: the client's connection closes after it.
    UntilClose,
}

/// An answer's head, rewritten for the client.
struct Answer {
    len: usize,
    status: u16,
    head: Vec<u8>,
    framing: Framing,
    /// Whether the app's connection can take another request after this answer.
    reusable: bool,
}

enum UpError {
    /// The connection ended before a byte of the answer came.
    Nothing,
    /// A broken or malformed answer.
    Bad,
}

fn parse_answer(buf: &[u8], head_request: bool, close: bool) -> Result<Option<Answer>, UpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(UpError::Bad),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(UpError::Bad),
    };
    let (Some(status), Some(version)) = (response.code, response.version) else {
        return Err(UpError::Bad);
    };
    let mut head = Vec::with_capacity(len + 32);
    // The status line as the app sent it (httparse checked it), as HTTP/1.1.
    let line = buf.iter().position(|b| *b == b'\n').unwrap_or(0);
    head.extend_from_slice(b"HTTP/1.1");
    head.extend_from_slice(buf[8..line + 1].trim_ascii_end());
    head.extend_from_slice(b"\r\n");
    let mut reusable = version == 1;
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    // Both a length and chunked: the length is not to be trusted and is not passed on (RFC
    // 9112 §6.3), and the app's connection is not used again.
    let encoded = response
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    for header in response.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("connection") {
            if header
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                reusable = false;
            }
            continue;
        }
        if is_hop_by_hop(name) {
            continue;
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = header
                .value
                .split(|b| *b == b',')
                .next_back()
                .unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).unwrap_or("").trim();
            let Ok(n) = value.parse::<u64>() else {
                return Err(UpError::Bad);
            };
            if length.is_some_and(|m| m != n) {
                return Err(UpError::Bad);
            }
            let repeated = length.replace(n).is_some();
            if encoded {
                reusable = false;
            }
            if repeated || encoded {
                continue;
            }
        }
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(header.value);
        head.extend_from_slice(b"\r\n");
    }
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose {
        reusable = false;
    }
    if (close || framing == Framing::UntilClose) && status >= 200 {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(Some(Answer {
        len,
        status,
        head,
        framing,
        reusable,
    }))
}

/// Reads the app's answer head (1xx interim answers are passed to the client on the way).
async fn read_answer<S>(
    up: &mut Up,
    client: &mut S,
    head_request: bool,
    close: bool,
) -> Result<Answer, UpError>
where
    S: AsyncWrite + Unpin,
{
    let mut any = false;
    loop {
        if !up.buf.is_empty() {
            any = true;
            if let Some(answer) = parse_answer(&up.buf, head_request, close)? {
                if answer.status == 101 {
                    return Err(UpError::Bad);
                }
                if (100..200).contains(&answer.status) {
                    up.buf.advance(answer.len);
                    client
                        .write_all(&answer.head)
                        .await
                        .map_err(|_| UpError::Bad)?;
                    continue;
                }
                return Ok(answer);
            }
        }
        up.buf.reserve(CHUNK);
        match up.stream.read_buf(&mut up.buf).await {
            Ok(0) | Err(_) if !any => return Err(UpError::Nothing),
            Ok(0) | Err(_) => return Err(UpError::Bad),
            Ok(_) => {}
        }
    }
}

/// One request: to the app and its answer back.
async fn exchange<S>(
    plane: &Plane,
    client: &mut S,
    remote: SocketAddr,
    buf: &mut BytesMut,
    head: Head,
    kept: &mut Vec<Up>,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let close = head.close || plane.draining();
    let log = |app: Option<&str>, status: u16, lease: Option<&Lease>| {
        let took = started.elapsed();
        plane.metrics().request(app, status, took);
        if let (Some(log), Some(path)) = (plane.access_log(), &head.path) {
            log.write(&AccessEntry {
                remote: remote.ip(),
                host: &head.host,
                app,
                method: head.method.as_str(),
                path,
                version: hyper::Version::HTTP_11,
                status,
                upstream: lease.map(Lease::address),
                canary: lease.is_some_and(|l| l.canary),
                took,
            });
        }
    };
    buf.advance(head.len);
    let Some(app) = plane.app_for_host(&head.host) else {
        log(None, 404, None);
        return refuse(client, buf, head.length, StatusCode::NOT_FOUND, close).await;
    };
    let mut lease = match plane.routes().pick(&app) {
        Pick::Upstream(lease) => lease,
        Pick::NotServed => {
            log(None, 404, None);
            return refuse(client, buf, head.length, StatusCode::NOT_FOUND, close).await;
        }
        Pick::NoInstance => {
            log(Some(&app), 503, None);
            let unavailable = StatusCode::SERVICE_UNAVAILABLE;
            return refuse(client, buf, head.length, unavailable, close).await;
        }
    };
    if head.length > plane.settings.max_body_size {
        log(Some(&app), 413, None);
        // The body is not read: the connection ends after the answer.
        let _ = write_text(client, StatusCode::PAYLOAD_TOO_LARGE, true).await;
        return Next::Close;
    }
    // The head, and what of the body came with it, go to the app in one write.
    let now = buf.len().min(head.length as usize);
    let mut request = head.upstream;
    request.extend_from_slice(&buf[..now]);
    buf.advance(now);
    let mut rest = head.length - now as u64;
    let idempotent = matches!(
        head.method,
        hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
    );
    let timeout = Duration::from_secs(plane.settings.request_timeout);
    let head_request = head.method == hyper::Method::HEAD;
    // A new connection that fails means the instance is gone: it is taken out and another
    // picked. A kept one may just have been closed by the app: a new one to the same instance
    // is tried.
    let repick = |lease: &mut Lease| {
        lease.upstream.eject();
        match plane.routes().pick(&app) {
            Pick::Upstream(next) => {
                *lease = next;
                true
            }
            _ => false,
        }
    };
    kept.retain(Up::usable);
    for _ in 0..4 {
        let reused = kept.iter().position(|up| up.address == lease.address());
        let fresh = reused.is_none();
        let mut up = match reused {
            Some(index) => kept.swap_remove(index),
            None => match connect(lease.address()).await {
                Some(up) => up,
                None if repick(&mut lease) => continue,
                None => break,
            },
        };
        if up.stream.write_all(&request).await.is_err() {
            if fresh && !repick(&mut lease) {
                break;
            }
            continue;
        }
        let sent_all = rest == 0;
        if rest > 0 {
            match copy_body(client, buf, &mut up.stream, rest).await {
                Copied::Done => rest = 0,
                Copied::ClientGone => return Next::Gone,
                Copied::AppGone => {
                    lease.upstream.eject();
                    log(Some(&app), 502, Some(&lease));
                    let _ = write_text(client, StatusCode::BAD_GATEWAY, true).await;
                    return Next::Close;
                }
            }
        }
        let answer =
            match tokio::time::timeout(timeout, read_answer(&mut up, client, head_request, close))
                .await
            {
                Err(_) => {
                    log(Some(&app), 504, Some(&lease));
                    return refuse(client, buf, 0, StatusCode::GATEWAY_TIMEOUT, close).await;
                }
                Ok(Err(UpError::Nothing)) if !fresh && sent_all && idempotent => continue,
                Ok(Err(_)) => {
                    lease.upstream.eject();
                    log(Some(&app), 502, Some(&lease));
                    return refuse(client, buf, 0, StatusCode::BAD_GATEWAY, close).await;
                }
                Ok(Ok(answer)) => answer,
            };
        lease.upstream.answered();
        log(Some(&app), answer.status, Some(&lease));
        return relay(client, up, answer, kept, close).await;
    }
    log(Some(&app), 502, Some(&lease));
    refuse(client, buf, rest, StatusCode::BAD_GATEWAY, close).await
}

enum Copied {
    Done,
    ClientGone,
    AppGone,
}

/// Copies the rest of a request body (`rest` bytes) from the client to the app (or to a sink,
/// to skip it).
async fn copy_body<S, W>(client: &mut S, buf: &mut BytesMut, app: &mut W, rest: u64) -> Copied
where
    S: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut rest = rest;
    while rest > 0 {
        if buf.is_empty() {
            buf.reserve(CHUNK);
            match client.read_buf(buf).await {
                Ok(0) | Err(_) => return Copied::ClientGone,
                Ok(_) => {}
            }
        }
        let n = buf.len().min(rest as usize);
        if app.write_all(&buf[..n]).await.is_err() {
            return Copied::AppGone;
        }
        buf.advance(n);
        rest -= n as u64;
    }
    Copied::Done
}

/// Sends the answer's head and body to the client; keeps the app's connection if it can take
/// another request.
async fn relay<S>(
    client: &mut S,
    mut up: Up,
    answer: Answer,
    kept: &mut Vec<Up>,
    close: bool,
) -> Next
where
    S: AsyncWrite + Unpin,
{
    up.buf.advance(answer.len);
    let mut left = match answer.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut chunks = Chunked::default();
    let mut first = Some(answer.head);
    let mut reusable = answer.reusable;
    loop {
        // What of the body is in the buffer now, and whether the body ends with it.
        let (take, done) = match answer.framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let take = up.buf.len().min(left as usize);
                left -= take as u64;
                (take, left == 0)
            }
            Framing::Chunked => match chunks.feed(&up.buf) {
                Ok(Some(end)) => (end, true),
                Ok(None) => (up.buf.len(), false),
                Err(()) => return Next::Gone,
            },
            Framing::UntilClose => (up.buf.len(), false),
        };
        let sent = match first.take() {
            Some(mut head) if take < 64 * 1024 => {
                head.extend_from_slice(&up.buf[..take]);
                client.write_all(&head).await
            }
            Some(head) => match client.write_all(&head).await {
                Ok(()) => client.write_all(&up.buf[..take]).await,
                Err(e) => Err(e),
            },
            None if take > 0 => client.write_all(&up.buf[..take]).await,
            None => Ok(()),
        };
        if sent.is_err() {
            return Next::Gone;
        }
        up.buf.advance(take);
        if done {
            break;
        }
        up.buf.reserve(CHUNK);
        match up.stream.read_buf(&mut up.buf).await {
            Ok(0) if answer.framing == Framing::UntilClose => {
                reusable = false;
                break;
            }
            Ok(0) | Err(_) => return Next::Gone,
            Ok(_) => {}
        }
    }
    if reusable && up.buf.is_empty() {
        if kept.len() >= KEPT {
            kept.remove(0);
        }
        kept.push(up);
    }
    if close || answer.framing == Framing::UntilClose {
        Next::Close
    } else {
        Next::Continue
    }
}

/// Answers with one of the router's own short texts. The request's body (`rest` bytes still
/// to come) is read and dropped so the connection can go on; past 64 KiB the connection is
/// closed instead.
async fn refuse<S>(
    client: &mut S,
    buf: &mut BytesMut,
    rest: u64,
    status: StatusCode,
    close: bool,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let close = close || rest > 64 * 1024;
    if !close {
        let mut skip = tokio::io::sink();
        if !matches!(copy_body(client, buf, &mut skip, rest).await, Copied::Done) {
            return Next::Gone;
        }
    }
    if write_text(client, status, close).await.is_err() {
        return Next::Gone;
    }
    if close { Next::Close } else { Next::Continue }
}

async fn write_text<S>(client: &mut S, status: StatusCode, close: bool) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let body = super::text_of(status);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if close {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    client.write_all(out.as_bytes()).await
}

/// Finds where a chunked body ends, fed its bytes as they come (RFC 9112 §7.1).
#[derive(Default)]
struct Chunked {
    state: State,
    size: u64,
    digits: usize,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum State {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    LastLf,
    Done,
}

impl Chunked {
    /// `Some(n)`: the body ends after the first `n` bytes of `bytes`.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = self.size.checked_mul(16).ok_or(())? + digit;
                        self.digits += 1;
                        if self.digits > 16 {
                            return Err(());
                        }
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = State::Extension,
                    b'\r' if self.digits > 0 => self.state = State::SizeLf,
                    _ => return Err(()),
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(()),
                    _ => {}
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let take = (bytes.len() - i).min(self.size as usize);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr if b == b'\r' => self.state = State::DataLf,
                State::DataLf if b == b'\n' => {
                    self.state = State::Size;
                    self.digits = 0;
                }
                State::DataCr | State::DataLf => return Err(()),
                State::TrailerStart if b == b'\r' => self.state = State::LastLf,
                State::TrailerStart => self.state = State::TrailerLine,
                State::TrailerLine if b == b'\r' => self.state = State::TrailerLf,
                State::TrailerLine => {}
                State::TrailerLf if b == b'\n' => self.state = State::TrailerStart,
                State::TrailerLf => return Err(()),
                State::LastLf if b == b'\n' => {
                    self.state = State::Done;
                    return Ok(Some(i + 1));
                }
                State::LastLf => return Err(()),
                State::Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok(if self.state == State::Done {
            Some(0)
        } else {
            None
        })
    }
}

/// A client connection handed to the general path: the bytes already read come first.
pub(super) struct Rewind<S> {
    read: BytesMut,
    inner: S,
}

impl<S> Rewind<S> {
    pub(super) fn new(read: BytesMut, inner: S) -> Rewind<S> {
        Rewind { read, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
    fn a_chunked_body_ends_where_its_last_chunk_and_trailers_do() {
        let body = b"4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nExpires: never\r\n\r\nNEXT";
        // Whole, and fed a byte at a time.
        assert_eq!(Chunked::default().feed(body), Ok(Some(body.len() - 4)));
        let mut scan = Chunked::default();
        let mut end = None;
        for (i, b) in body.iter().enumerate() {
            if let Some(n) = scan.feed(std::slice::from_ref(b)).unwrap() {
                end = Some(i + n);
                break;
            }
        }
        assert_eq!(end, Some(body.len() - 4));
        assert_eq!(Chunked::default().feed(b"0\r\n\r\n"), Ok(Some(5)));
        assert_eq!(Chunked::default().feed(b"a\r\n0123456789"), Ok(None));
        // Malformed: no size, a bare LF, data longer than its size, a size past u64.
        assert!(Chunked::default().feed(b"\r\n").is_err());
        assert!(Chunked::default().feed(b"3\nabc").is_err());
        assert!(Chunked::default().feed(b"3\r\nabcd\r\n").is_err());
        assert!(Chunked::default().feed(b"fffffffffffffffff\r\n").is_err());
    }

    #[test]
    fn answers_are_framed_as_rfc_9112_says() {
        let framing = |raw: &str, head: bool| {
            parse_answer(raw.as_bytes(), head, false)
                .ok()
                .flatten()
                .map(|a| (a.framing, a.reusable))
        };
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(framing(ok, false), Some((Framing::Length(5), true)));
        assert_eq!(framing(ok, true), Some((Framing::Empty, true)));
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(framing(chunked, false), Some((Framing::Chunked, true)));
        let open = "HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(framing(open, false), Some((Framing::UntilClose, false)));
        let closing = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(framing(closing, false), Some((Framing::Length(0), false)));
        let none = "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n";
        assert_eq!(framing(none, false), Some((Framing::Empty, true)));
        // Two different lengths: refused.
        let two = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n";
        assert!(parse_answer(two.as_bytes(), false, false).is_err());
        // Both a length and chunked: chunked wins, the length goes.
        let both = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n";
        let answer = parse_answer(both.as_bytes(), false, false)
            .ok()
            .flatten()
            .unwrap();
        assert_eq!((answer.framing, answer.reusable), (Framing::Chunked, false));
        assert!(!String::from_utf8_lossy(&answer.head).contains("content-length"));
        // Hop-by-hop headers go; the client is told when its connection closes.
        let hop = "HTTP/1.1 200 OK\r\nkeep-alive: timeout=5\r\ncontent-length: 0\r\n\r\n";
        let answer = parse_answer(hop.as_bytes(), false, true)
            .ok()
            .flatten()
            .unwrap();
        let head = String::from_utf8_lossy(&answer.head).to_string();
        assert!(!head.contains("keep-alive"), "{head}");
        assert!(head.ends_with("connection: close\r\n\r\n"), "{head}");
    }
}
