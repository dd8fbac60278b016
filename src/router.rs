//! The HTTP router: one listener (`http_listen`, default `0.0.0.0:80`) for every app, routing by
//! the Host header: `APP.<base_domain>` and the app's custom domains (`domains:add`). HTTP/1.1
//! and HTTP/2 (h2c) from clients, HTTP/1.1 to the app; upgrades (WebSocket) are tunnelled;
//! bodies stream both ways. An unknown host gets a plain 404 naming no app.
//!
//! Upstreams are the app's serving web instances, the same set the app's stable port forwards
//! to (`route::Routes`), so deploys, scaling and restarts switch both at once.
//!
//! **Architecture Invariant:** the router only reads shared state (routes, the domain map); it
//! never touches the engine or the DB.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use crate::route::Pick;
use crate::server::Berth;

type Body = BoxBody<Bytes, hyper::Error>;
type Upstream = Client<HttpConnector, Incoming>;

/// An HTTP/1 client connection's own connection to one instance of the app: its requests come
/// one at a time, so they go over it in turn, with no pool in between. It is dropped when the
/// instance leaves the serving set, the app closes it, or the client asks for another app.
struct Sticky {
    app: String,
    upstream: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Incoming>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Sticky>>>;

/// Serves HTTP on `listener` until the process ends.
pub async fn serve(berth: Arc<Berth>, listener: TcpListener) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (berth, client) = (berth.clone(), client.clone());
        let slot: Slot = Arc::default();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                handle(berth.clone(), client.clone(), slot.clone(), remote, request)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
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
    let host = match raw.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => raw.as_str(),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

async fn handle(
    berth: Arc<Berth>,
    client: Upstream,
    slot: Slot,
    remote: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let host = host_of(&request);
    let not_found = || {
        text(
            StatusCode::NOT_FOUND,
            "404: nothing is served at this host\n",
        )
    };
    let Some(app) = berth.app_for_host(&host) else {
        return Ok(not_found());
    };
    let upstream = match berth.routes.pick(&app) {
        Pick::Upstream(upstream) => upstream,
        Pick::NotServed => return Ok(not_found()),
        Pick::NoInstance => {
            return Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "503: the app has no running web instance\n",
            ));
        }
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    forwarded(request.headers_mut(), remote, &host);
    if wants_upgrade(request.headers()) {
        return Ok(tunnel(request, upstream, &path).await);
    }
    strip_hop_by_hop(request.headers_mut());
    // HTTP/2 carries the host in the URI; the app gets it as a Host header.
    if !request.headers().contains_key(header::HOST)
        && let Ok(value) = HeaderValue::from_str(&host)
    {
        request.headers_mut().insert(header::HOST, value);
    }
    if request.version() <= hyper::Version::HTTP_11 {
        if let Ok(uri) = path.parse() {
            *request.uri_mut() = uri;
        }
        return Ok(over_own_connection(&berth, &slot, &app, upstream, request).await);
    }
    let Ok(uri) = format!("http://{upstream}{path}").parse() else {
        return Ok(text(StatusCode::BAD_REQUEST, "400: bad request target\n"));
    };
    *request.uri_mut() = uri;
    *request.version_mut() = hyper::Version::HTTP_11;
    match client.request(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(error) => {
            tracing::debug!(%app, %upstream, %error, "upstream failed");
            Ok(text(
                StatusCode::BAD_GATEWAY,
                "502: the app did not answer\n",
            ))
        }
    }
}

/// Sends an HTTP/1 client's request over the connection's own upstream connection (made on
/// first use, or anew when its instance left the serving set or the app closed it). A request
/// the app never read (its connection closed in between) is sent once more on a new one.
async fn over_own_connection(
    berth: &Berth,
    slot: &Slot,
    app: &str,
    picked: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let bad_gateway = || text(StatusCode::BAD_GATEWAY, "502: the app did not answer\n");
    let mut sticky = slot.lock().await;
    if sticky.as_ref().is_some_and(|s| {
        s.app != app || s.sender.is_closed() || !berth.routes.serves(app, s.upstream)
    }) {
        *sticky = None;
    }
    for attempt in 0..2 {
        if sticky.is_none() {
            let upstream = if attempt == 0 {
                picked
            } else {
                match berth.routes.pick(app) {
                    Pick::Upstream(upstream) => upstream,
                    _ => return bad_gateway(),
                }
            };
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream)).await
            else {
                return bad_gateway();
            };
            let _ = stream.set_nodelay(true);
            let Ok((sender, connection)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return bad_gateway();
            };
            tokio::spawn(connection);
            *sticky = Some(Sticky {
                app: app.to_string(),
                upstream,
                sender,
            });
        }
        let Some(own) = sticky.as_mut() else {
            return bad_gateway();
        };
        if own.sender.ready().await.is_err() {
            *sticky = None;
            continue;
        }
        match own.sender.try_send_request(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                return Response::from_parts(parts, body.boxed());
            }
            Err(mut error) => {
                *sticky = None;
                match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return bad_gateway(),
                }
            }
        }
    }
    bad_gateway()
}

/// `X-Forwarded-For` (appended), `X-Forwarded-Proto` and `X-Forwarded-Host`.
fn forwarded(headers: &mut HeaderMap, remote: SocketAddr, host: &str) {
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
    set(headers, "x-forwarded-proto", "http");
    set(headers, "x-forwarded-host", host);
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// An upgrade (WebSocket or any other protocol): the request goes to the app on a connection of
/// its own; when the app switches protocols, bytes are copied both ways until either side ends.
async fn tunnel(
    mut request: Request<Incoming>,
    upstream: SocketAddr,
    path: &str,
) -> Response<Body> {
    let from_client = hyper::upgrade::on(&mut request);
    let Ok(stream) = TcpStream::connect(upstream).await else {
        return text(StatusCode::BAD_GATEWAY, "502: the app did not answer\n");
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return text(StatusCode::BAD_GATEWAY, "502: the app did not answer\n");
    };
    tokio::spawn(connection.with_upgrades());
    if let Ok(uri) = path.parse() {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = hyper::Version::HTTP_11;
    let mut response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(_) => return text(StatusCode::BAD_GATEWAY, "502: the app did not answer\n"),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let from_app = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(app)) = (from_client.await, from_app.await) {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(app),
                )
                .await;
            }
        });
    }
    response.map(|body| body.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_forwarded_ones_come() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        strip_hop_by_hop(&mut headers);
        forwarded(
            &mut headers,
            "127.0.0.9:4000".parse().unwrap(),
            "shop.example.com",
        );
        assert!(!headers.contains_key(header::CONNECTION));
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(headers["x-forwarded-host"], "shop.example.com");
        assert_eq!(headers["x-forwarded-proto"], "http");
    }
}
