//! The HTTP router: one listener (`http_listen`, default `0.0.0.0:80`) for every app, routing by
//! the Host header: `APP.<base_domain>` and the app's custom domains (`domains:add`). HTTP/1.1
//! and HTTP/2 (h2c) from clients, HTTP/1.1 to the app; upgrades (WebSocket) are tunnelled;
//! bodies stream both ways. An unknown host gets a plain 404 naming no app. Plain HTTP/1.1
//! requests take the direct path of `fast` (nginx's way: bytes copied, heads rewritten); the
//! rest go through hyper.
//!
//! Every request is picked an instance by `route::Routes` (the app's current release, or its
//! canary by weight; round robin or least-connections; instances that refuse connections are
//! out until they accept again), the same sets the app's own port forwards to, so deploys,
//! scaling and restarts switch both at once. Each request is counted in `/metrics` and written
//! to the access log.
//!
//! **Architecture Invariant:** the router only reads shared state (routes, the domain map) and
//! counts; it never touches the engine or the DB.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

mod fast;

use crate::metrics::AccessEntry;
use crate::plane::Plane;
use crate::route::{Lease, Pick};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;
/// A client's request body on its way to the app, cut off past `max_body_size`.
type Outgoing = Limited<Incoming>;
type Upstream = hyper_util::client::legacy::Client<HttpConnector, Outgoing>;
type Sender = hyper::client::conn::http1::SendRequest<Outgoing>;

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Who a request comes from: the client connection.
struct Client {
    remote: SocketAddr,
    /// Over HTTPS.
    secure: bool,
    slot: Slot,
}

/// How many upstream connections one HTTP/1 client connection keeps (one per instance it used).
const KEPT_PER_CLIENT: usize = 8;

/// An HTTP/1 client connection's own connections to the app instances its requests went to:
/// its requests come one at a time, so they go over these in turn, with no pool in between.
#[derive(Default)]
struct Kept {
    connections: Vec<(SocketAddr, Sender)>,
}

type Slot = Arc<tokio::sync::Mutex<Kept>>;

/// Serves HTTP on `listener` until the process ends (HTTPS with `tls`): one thread per core,
/// each with a single-threaded runtime accepting from the same socket, so a request's client
/// side and app side run on one thread (as nginx's workers do) without hand-offs between
/// threads.
pub fn serve(
    plane: Arc<Plane>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(), String> {
    let listener = listener
        .into_std()
        .map_err(|e| format!("router listener: {e}"))?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    // One count for every worker: the caps hold for the listener, not per thread.
    let limits = crate::limits::ConnectionLimits::new(
        ROUTER_CONNECTIONS,
        plane.settings.max_connections_per_address,
    );
    for worker in 0..workers {
        let listener = listener
            .try_clone()
            .map_err(|e| format!("router listener: {e}"))?;
        let (plane, tls, limits) = (plane.clone(), tls.clone(), limits.clone());
        std::thread::Builder::new()
            .name(format!("router-{worker}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("router runtime");
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            accept_loop(plane, listener, tls, limits).await;
                            // Stopped accepting: the connections in progress go on until the
                            // process exits.
                            std::future::pending::<()>().await
                        }
                        Err(error) => tracing::error!(%error, "router listener"),
                    }
                });
            })
            .map_err(|e| format!("cannot start the router's threads: {e}"))?;
    }
    Ok(())
}

/// Client connections the router (each of its listeners, all workers together) takes at once.
const ROUTER_CONNECTIONS: usize = 16384;

async fn accept_loop(
    plane: Arc<Plane>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Arc<crate::limits::ConnectionLimits>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let pool: Upstream = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let idle = Duration::from_secs(plane.settings.idle_timeout);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(idle)
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let mut accepting = plane.accepting.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = accepting.wait_for(|on| !*on) => break,
        };
        let Ok((stream, remote)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // One client cannot hold every descriptor (slow headers, idle keep-alives): a cap per
        // address and in all; a refused socket is closed at once.
        let Some(held) = limits.enter(remote.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (plane, upstream, builder) = (plane.clone(), pool.clone(), builder.clone());
        let tls = tls.clone();
        let slot: Slot = Arc::default();
        tokio::spawn(async move {
            let _held = held;
            let _counted = plane.metrics().connection();
            let _open = Open::new(&plane);
            let secure = tls.is_some();
            let service = {
                let plane = plane.clone();
                hyper::service::service_fn(move |request| {
                    let client = Client {
                        remote,
                        secure,
                        slot: slot.clone(),
                    };
                    handle(plane.clone(), upstream.clone(), client, request)
                })
            };
            let mut stream = crate::limits::IdleIo::new(stream, idle);
            // Plain HTTP/1.1 requests take the direct path (`fast`); what it does not take,
            // and HTTP/2 (over TLS: ALPN's h2), goes to hyper with the bytes read so far.
            let mut read = bytes::BytesMut::with_capacity(16 * 1024);
            let _ = match tls {
                None => {
                    if let fast::End::Closed =
                        fast::serve(&plane, &mut stream, remote, false, &mut read).await
                    {
                        return;
                    }
                    builder
                        .serve_connection_with_upgrades(
                            TokioIo::new(fast::Rewind::new(read, stream)),
                            service,
                        )
                        .await
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream));
                    let Ok(Ok(mut stream)) = handshake.await else {
                        return;
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    if !h2
                        && let fast::End::Closed =
                            fast::serve(&plane, &mut stream, remote, true, &mut read).await
                    {
                        return;
                    }
                    builder
                        .serve_connection_with_upgrades(
                            TokioIo::new(fast::Rewind::new(read, stream)),
                            service,
                        )
                        .await
                }
            };
        });
    }
}

/// Counts a router client connection as open while it lives.
struct Open<'a>(&'a Plane);

impl<'a> Open<'a> {
    fn new(plane: &'a Plane) -> Open<'a> {
        plane.connections.fetch_add(1, Ordering::Relaxed);
        Open(plane)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Stops every router listener accepting (a newer data plane accepts on the same sockets);
/// the connections in progress go on, each closed after its next response.
pub fn stop_accepting(plane: &Plane) {
    plane.start_draining();
    plane.accepting.send_replace(false);
}

/// The router's client connections open now.
pub fn active_connections(plane: &Plane) -> usize {
    plane.connections.load(Ordering::Relaxed)
}

/// Serves `/metrics` on `listener` (the admin address).
pub async fn serve_admin(plane: Arc<Plane>, listener: TcpListener) {
    let mut accepting = plane.accepting.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = accepting.wait_for(|on| !*on) => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let plane = plane.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let plane = plane.clone();
                async move {
                    let response = if request.uri().path() == "/metrics" {
                        let mut response =
                            Response::new(Full::new(Bytes::from(plane.metrics().render())));
                        response.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                        response
                    } else {
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(b"404: try /metrics\n")));
                        *response.status_mut() = StatusCode::NOT_FOUND;
                        response
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn bad_gateway() -> Response<Body> {
    text(StatusCode::BAD_GATEWAY, text_of(StatusCode::BAD_GATEWAY))
}

fn timed_out() -> Response<Body> {
    text(
        StatusCode::GATEWAY_TIMEOUT,
        text_of(StatusCode::GATEWAY_TIMEOUT),
    )
}

/// The request's host, lowercased, without a port (HTTP/2 carries it in the URI).
fn host_of(request: &Request<Incoming>) -> String {
    let raw = request
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    normalize_host(&raw)
}

/// A Host header's name as routes know it: lowercased, without its port or a final dot.
fn normalize_host(raw: &str) -> String {
    let host = match raw.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => raw,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The body of the router's own answer with `status`.
fn text_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        404 => "404: nothing is served at this host\n",
        413 => "413: the request body is larger than this server takes\n",
        503 => "503: the app has no running web instance\n",
        504 => "504: the app did not answer in time\n",
        _ => "502: the app did not answer\n",
    }
}

/// The path as the access log keeps it: an inbound webhook's secret token is replaced.
fn redact(path: &str) -> String {
    match path.strip_prefix(crate::webhooks::INBOUND_PREFIX) {
        Some(rest) => {
            let app = rest.split(['/', '?']).next().unwrap_or("");
            format!("{}{app}/[token]", crate::webhooks::INBOUND_PREFIX)
        }
        None => path.to_string(),
    }
}

/// What became of one request, for the metrics and the access log.
struct Outcome {
    app: Option<String>,
    upstream: Option<SocketAddr>,
    canary: bool,
}

async fn handle(
    plane: Arc<Plane>,
    pool: Upstream,
    client: Client,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let remote = client.remote;
    let started = Instant::now();
    let host = host_of(&request);
    let method = request.method().clone();
    let version = request.version();
    let logged_path = plane
        .access_log()
        .map(|_| redact(request.uri().path_and_query().map_or("/", |p| p.as_str())));
    let mut outcome = Outcome {
        app: None,
        upstream: None,
        canary: false,
    };
    let mut response = route(&plane, pool, client, request, &host, &mut outcome).await;
    // Handing over to a newer data plane: the client's next request opens a new connection,
    // which the new process accepts.
    if plane.draining() && version < hyper::Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let took = started.elapsed();
    let status = response.status().as_u16();
    plane
        .metrics()
        .request(outcome.app.as_deref(), status, took);
    if let (Some(log), Some(path)) = (plane.access_log(), &logged_path) {
        log.write(&AccessEntry {
            remote: remote.ip(),
            host: &host,
            app: outcome.app.as_deref(),
            method: method.as_str(),
            path,
            version,
            status,
            upstream: outcome.upstream,
            canary: outcome.canary,
            took,
        });
    }
    Ok(response)
}

#[allow(clippy::too_many_arguments)]
async fn route(
    plane: &Plane,
    pool: Upstream,
    client: Client,
    mut request: Request<Incoming>,
    host: &str,
    outcome: &mut Outcome,
) -> Response<Body> {
    if let Some(answer) = plane.challenges().answer(request.uri().path()) {
        let mut response = Response::new(
            Full::new(Bytes::from(answer))
                .map_err(|never| match never {})
                .boxed(),
        );
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return response;
    }
    // Inbound webhooks (`webhooks:inbound`), on every host: checked against the tokens in
    // memory; the sync itself runs in `webhooks::inbound_loop`.
    if request.method() == hyper::Method::POST
        && request
            .uri()
            .path()
            .starts_with(crate::webhooks::INBOUND_PREFIX)
    {
        let path = request.uri().path().to_string();
        let Ok(body) = Limited::new(request.into_body(), 1 << 20).collect().await else {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "413: webhook payloads are at most 1 MiB\n",
            );
        };
        return match plane.inbound().receive(&path, &body.to_bytes()) {
            Some(202) => text(StatusCode::ACCEPTED, "202: sync queued\n"),
            Some(429) => text(
                StatusCode::TOO_MANY_REQUESTS,
                "429: too many syncs waiting; try again later\n",
            ),
            _ => {
                plane.metrics().inbound_refused();
                text(StatusCode::FORBIDDEN, "403: wrong token\n")
            }
        };
    }
    let not_found = || text(StatusCode::NOT_FOUND, text_of(StatusCode::NOT_FOUND));
    let Some(app) = plane.app_for_host(host) else {
        return not_found();
    };
    let lease = match plane.routes().pick(&app) {
        Pick::Upstream(lease) => lease,
        Pick::NotServed => return not_found(),
        Pick::NoInstance => {
            outcome.app = Some(app);
            let unavailable = StatusCode::SERVICE_UNAVAILABLE;
            return text(unavailable, text_of(unavailable));
        }
    };
    outcome.app = Some(app.clone());
    let limit = plane.settings.max_body_size;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return too_large();
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    // The app sees the host it was routed by: a request whose target names one host (absolute
    // form, or HTTP/2's :authority) and whose Host header names another gets the target's
    // (RFC 9112 §3.2.2), so no app is reached with a Host chosen to poison its links.
    if let Some(authority) = request.uri().authority().map(|a| a.as_str().to_string())
        && let Ok(value) = HeaderValue::from_str(&authority)
    {
        request.headers_mut().insert(header::HOST, value);
    }
    forwarded(request.headers_mut(), client.remote, client.secure, host);
    let request = request.map(|body| Limited::new(body, limit as usize));
    if wants_upgrade(request.headers()) {
        return tunnel(request, lease, &path, outcome).await;
    }
    let mut request = request;
    strip_hop_by_hop(request.headers_mut());
    // HTTP/2 carries the host in the URI; the app gets it as a Host header.
    if !request.headers().contains_key(header::HOST)
        && let Ok(value) = HeaderValue::from_str(host)
    {
        request.headers_mut().insert(header::HOST, value);
    }
    let timeout = Duration::from_secs(plane.settings.request_timeout);
    if request.version() <= hyper::Version::HTTP_11 {
        if let Ok(uri) = path.parse() {
            *request.uri_mut() = uri;
        }
        return over_kept_connection(plane, &client.slot, &app, lease, request, timeout, outcome)
            .await;
    }
    outcome.upstream = Some(lease.address());
    outcome.canary = lease.canary;
    let Ok(uri) = format!("http://{}{path}", lease.address()).parse() else {
        return text(StatusCode::BAD_REQUEST, "400: bad request target\n");
    };
    *request.uri_mut() = uri;
    *request.version_mut() = hyper::Version::HTTP_11;
    match tokio::time::timeout(timeout, pool.request(request)).await {
        Err(_) => timed_out(),
        Ok(Ok(response)) => leased(response, lease),
        Ok(Err(error)) => {
            if error.is_connect() {
                lease.upstream.eject();
            }
            tracing::debug!(%app, upstream = %lease.address(), %error, "upstream failed");
            if body_too_large(&error) {
                too_large()
            } else {
                bad_gateway()
            }
        }
    }
}

fn too_large() -> Response<Body> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        text_of(StatusCode::PAYLOAD_TOO_LARGE),
    )
}

/// Whether sending failed because the client's body went past `max_body_size`.
fn body_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

async fn connect(address: SocketAddr) -> Option<Sender> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// Sends an HTTP/1 client's request to the picked instance over the client connection's own
/// connection to it (made on first use). An instance that refuses the connection is taken out
/// and another picked; a request the app never read (it closed the connection in between) is
/// sent again on a new one.
#[allow(clippy::too_many_arguments)]
async fn over_kept_connection(
    plane: &Plane,
    slot: &Slot,
    app: &str,
    mut lease: Lease,
    mut request: Request<Outgoing>,
    timeout: Duration,
    outcome: &mut Outcome,
) -> Response<Body> {
    let mut kept = slot.lock().await;
    kept.connections.retain(|(_, sender)| !sender.is_closed());
    // A new connection that fails before an answer means the instance is gone: it is taken
    // out and another picked. A kept one may just have been closed by the app: a new
    // connection to the same instance is tried.
    let instance_failed = |lease: &mut Lease| {
        lease.upstream.eject();
        match plane.routes().pick(app) {
            Pick::Upstream(next) => {
                *lease = next;
                true
            }
            _ => false,
        }
    };
    for _ in 0..4 {
        let address = lease.address();
        outcome.upstream = Some(address);
        outcome.canary = lease.canary;
        let reused = kept.connections.iter().position(|(a, _)| *a == address);
        let fresh = reused.is_none();
        let mut sender = match reused {
            Some(index) => kept.connections.swap_remove(index).1,
            None => match connect(address).await {
                Some(sender) => sender,
                None if instance_failed(&mut lease) => continue,
                None => return bad_gateway(),
            },
        };
        if sender.ready().await.is_err() {
            if fresh && !instance_failed(&mut lease) {
                return bad_gateway();
            }
            continue;
        }
        match tokio::time::timeout(timeout, sender.try_send_request(request)).await {
            Err(_) => return timed_out(),
            Ok(Ok(response)) => {
                if kept.connections.len() >= KEPT_PER_CLIENT {
                    kept.connections.remove(0);
                }
                kept.connections.push((address, sender));
                return leased(response, lease);
            }
            Ok(Err(mut error)) => match error.take_message() {
                Some(unsent) => {
                    request = unsent;
                    if fresh && !instance_failed(&mut lease) {
                        return bad_gateway();
                    }
                }
                None => {
                    let error = error.into_error();
                    if body_too_large(&error) {
                        return too_large();
                    }
                    // Sent, then closed or reset without an answer: not sent again (the app
                    // may have acted on it), and the instance is taken out.
                    lease.upstream.eject();
                    return bad_gateway();
                }
            },
        }
    }
    bad_gateway()
}

/// The app's response, its body holding the lease (the request counts as in flight on the
/// instance until the body is sent).
fn leased(response: Response<Incoming>, lease: Lease) -> Response<Body> {
    lease.upstream.answered();
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = Leased {
        inner: body,
        _lease: lease,
    };
    Response::from_parts(parts, body.map_err(BoxError::from).boxed())
}

struct Leased {
    inner: Incoming,
    _lease: Lease,
}

impl hyper::body::Body for Leased {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `X-Forwarded-For` (appended), `X-Forwarded-Proto` and `X-Forwarded-Host`.
fn forwarded(headers: &mut HeaderMap, remote: SocketAddr, secure: bool, host: &str) {
    let client_ip = remote.ip().to_string();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {client_ip}"),
        None => client_ip,
    };
    let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set(headers, "x-forwarded-for", &chain);
    set(
        headers,
        "x-forwarded-proto",
        if secure { "https" } else { "http" },
    );
    set(headers, "x-forwarded-host", host);
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
}

/// Headers that concern one connection only, never passed on (RFC 9110 §7.6.1; both paths).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// An upgrade (WebSocket or any other protocol): the request goes to the app on a connection of
/// its own; when the app switches protocols, bytes are copied both ways until either side ends
/// (the tunnel counts as a request in flight on the instance while it lasts).
async fn tunnel(
    mut request: Request<Outgoing>,
    lease: Lease,
    path: &str,
    outcome: &mut Outcome,
) -> Response<Body> {
    outcome.upstream = Some(lease.address());
    outcome.canary = lease.canary;
    let from_client = hyper::upgrade::on(&mut request);
    let Ok(stream) = TcpStream::connect(lease.address()).await else {
        lease.upstream.eject();
        return bad_gateway();
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return bad_gateway();
    };
    tokio::spawn(connection.with_upgrades());
    if let Ok(uri) = path.parse() {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = hyper::Version::HTTP_11;
    let mut response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(_) => return bad_gateway(),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let from_app = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let _lease = lease;
            if let (Ok(client), Ok(app)) = (from_client.await, from_app.await) {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(app),
                )
                .await;
            }
        });
    }
    response.map(|body| body.map_err(BoxError::from).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_tokens_are_not_logged() {
        assert_eq!(
            redact("/.berth/hooks/shop/0123456789abcdef?x=1"),
            "/.berth/hooks/shop/[token]"
        );
        assert_eq!(redact("/index.html?q=1"), "/index.html?q=1");
    }

    #[test]
    fn hop_by_hop_headers_go_and_forwarded_ones_come() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        strip_hop_by_hop(&mut headers);
        forwarded(
            &mut headers,
            "127.0.0.9:4000".parse().unwrap(),
            false,
            "shop.example.com",
        );
        assert!(!headers.contains_key(header::CONNECTION));
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(headers["x-forwarded-host"], "shop.example.com");
        assert_eq!(headers["x-forwarded-proto"], "http");
    }
}
