//! The HTTP router: Host routing for apps and custom domains, 404 for unknown hosts,
//! X-Forwarded-* headers, upgrade tunnels (what WebSocket uses), the app's own port kept.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::Value;

const ECHO_APP: &str = r#"import os, socket, threading

def serve(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(1024)
        if not chunk:
            return conn.close()
        data += chunk
    head = data.split(b"\r\n\r\n")[0].decode("latin-1")
    headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in head.split("\r\n")[1:] if ":" in l}
    if headers.get("upgrade", "").lower() == "echo":
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
        while True:
            chunk = conn.recv(1024)
            if not chunk:
                break
            conn.sendall(chunk.upper())
    else:
        body = "|".join(headers.get(h, "-") for h in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "host")).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    conn.close()

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("", int(os.environ["PORT"])))
server.listen(64)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

#[test]
fn apps_and_custom_domains_route_by_host_and_unknown_hosts_get_404() {
    let server = TestServer::start();
    let (one, two) = (app_name("hostone"), app_name("hosttwo"));
    let push_one = server.push(web_app("app one").path(), &one, "main");
    let push_two = server.push(web_app("app two").path(), &two, "main");
    assert!(push_one.status.success() && push_two.status.success());
    let url = live_url(&push_one);
    assert_eq!(url, format!("http://{one}.localhost:{}", server.http_port));
    assert!(
        text(&push_one).contains("also at http://127.0.0.1:"),
        "{}",
        text(&push_one)
    );
    let router = format!("127.0.0.1:{}", server.http_port);
    let get = |host: &str| http_request(&router, host, "/");
    assert_eq!(
        get(&format!("{one}.localhost")).map(|(s, b)| (s, b.trim().to_string())),
        Some((200, "app one".into()))
    );
    assert_eq!(
        get(&format!("{two}.localhost:{}", server.http_port))
            .map(|(s, b)| (s, b.trim().to_string())),
        Some((200, "app two".into()))
    );

    // Unknown hosts: a plain 404 that names no app.
    for host in ["nope.localhost", "example.org", "localhost", ""] {
        let (status, body) = get(host).expect("answer");
        assert_eq!(status, 404, "{host}");
        assert!(!body.contains(&one) && !body.contains(&two), "{body}");
    }

    // A custom domain, its listing, and its removal.
    ok(&server.ssh(&["domains:add", &two, "Shop.Example.COM"]));
    assert_eq!(
        get("shop.example.com").map(|(s, b)| (s, b.trim().to_string())),
        Some((200, "app two".into()))
    );
    let taken = server.ssh(&["domains:add", &one, "shop.example.com"]);
    assert_eq!(taken.status.code(), Some(1));
    assert!(
        text(&taken).contains("already routes to another app"),
        "{}",
        text(&taken)
    );
    for bad in ["not a domain", "x", "under.localhost", "-bad.example.com"] {
        let refused = server.ssh(&["domains:add", &one, bad]);
        assert_eq!(refused.status.code(), Some(1), "{bad}");
    }
    let listed: Value =
        serde_json::from_str(&ok(&server.ssh(&["domains:list", &two, "--json"]))).expect("json");
    assert_eq!(listed["custom"][0], "shop.example.com");
    assert_eq!(listed["default"], format!("{two}.localhost"));
    let info: Value =
        serde_json::from_str(&ok(&server.ssh(&["apps:info", &two, "--json"]))).expect("json");
    assert_eq!(
        info["url"],
        format!("http://{two}.localhost:{}", server.http_port)
    );
    assert_eq!(info["domains"][0], "shop.example.com");
    // The app's own port stays available.
    let direct = info["direct_url"].as_str().expect("direct url").to_string();
    assert_eq!(http_get(&direct).unwrap_or_default().trim(), "app two");
    ok(&server.ssh(&["domains:remove", &two, "shop.example.com"]));
    assert_eq!(get("shop.example.com").map(|(s, _)| s), Some(404));

    // Destroying an app frees its domains and its host.
    ok(&server.ssh(&["domains:add", &one, "one.example.net"]));
    ok(&server.ssh(&["apps:destroy", &one, "--confirm", &one]));
    assert_eq!(get("one.example.net").map(|(s, _)| s), Some(404));
    assert_eq!(get(&format!("{one}.localhost")).map(|(s, _)| s), Some(404));
}

#[test]
fn forwarded_headers_are_set_and_upgrades_are_tunnelled() {
    let server = TestServer::start();
    let app = app_name("echo");
    let repo = python_app(ECHO_APP);
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let host = format!("{app}.localhost:{}", server.http_port);
    let router = format!("127.0.0.1:{}", server.http_port);
    let (status, body) = http_request(&router, &host, "/headers").expect("answer");
    assert_eq!(status, 200);
    assert_eq!(body, format!("127.0.0.1|http|{app}.localhost|{host}"));

    // An upgrade: 101 from the app, then bytes flow both ways through the router.
    let mut stream = TcpStream::connect(&router).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET /socket HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    .expect("write");
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for word in ["hello", "router"] {
        stream.write_all(word.as_bytes()).expect("write");
        let mut answer = vec![0u8; word.len()];
        stream.read_exact(&mut answer).expect("echo");
        assert_eq!(String::from_utf8_lossy(&answer), word.to_uppercase());
    }
}

/// An HTTP/1.1 app with keep-alive: `/info` names what it got, `/conn` which of its
/// connections the request came on, `/echo` (POST) sends the body back, `/chunked` answers in
/// chunks with a trailer, `/early` sends 103 Early Hints first, `/close` ends its body by
/// closing.
const KEEPALIVE_APP: &str = r#"import http.server, itertools, os

counter = itertools.count(1)

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        self.conn_id = next(counter)
    def log_message(self, *a):
        pass
    def send(self, body, status=200):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    def do_HEAD(self):
        self.send(b"hello")
    def do_GET(self):
        if self.path == "/info":
            names = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "host", "keep-alive", "proxy-authorization", "te", "x-kept")
            self.send("|".join(self.headers.get(n, "-") for n in names).encode())
        elif self.path == "/conn":
            self.send(str(self.conn_id).encode())
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Sum")
            self.end_headers()
            self.wfile.write(b"6\r\nhello \r\n5\r\nworld\r\n0\r\nX-Sum: 11\r\n\r\n")
        elif self.path == "/early":
            self.send_response_only(103)
            self.send_header("Link", "</style.css>; rel=preload")
            self.end_headers()
            self.send(b"after hints")
        elif self.path == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the end")
            self.close_connection = True
        else:
            self.send(b"hello")
    def do_POST(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send(body)

http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
"#;

/// One HTTP/1.1 answer off `stream`: (head, body as sent). A chunked body is read as it came
/// (chunks and trailers); without a length the body runs to the end of the stream.
fn read_answer(stream: &mut TcpStream, head_request: bool) -> (String, Vec<u8>) {
    let head = read_head(stream);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return (head, body);
    }
    if lower.contains("transfer-encoding: chunked") {
        let mut byte = [0u8; 1];
        while !(body.ends_with(b"\r\n\r\n") && body.windows(3).any(|w| w == b"0\r\n")) {
            stream.read_exact(&mut byte).expect("chunked body");
            body.push(byte[0]);
        }
    } else if let Some(length) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|l| l.trim().parse::<usize>().ok())
    {
        body = vec![0u8; length];
        stream.read_exact(&mut body).expect("body");
    } else {
        stream.read_to_end(&mut body).expect("body to the end");
    }
    (head, body)
}

/// The router's HTTP/1.1 path (what browsers, curl and load balancers send): one client
/// connection carries many requests, the app's connection is kept between them, headers are
/// rewritten (hop-by-hop out, X-Forwarded-* in), bodies go both ways as they are (lengths,
/// chunks with trailers, to the end), 1xx answers pass, pipelined requests are answered in
/// order, the router's own answers (404, 413) leave the connection as it should be, and a
/// request it hands to the general path (a chunked upload) is served too.
#[test]
fn http11_connections_are_kept_and_carry_what_the_app_sent() {
    let server = TestServer::start_with(&format!(
        "registry = \"{}\"\nmax_body_size = 10000\nrequest_timeout = 2\nidle_timeout = 3\n",
        require_environment()
    ));
    let app = app_name("keepalive");
    let repo = python_app(KEEPALIVE_APP);
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    let host = format!("{app}.localhost:{}", server.http_port);
    let router = format!("127.0.0.1:{}", server.http_port);
    let connect = || {
        let stream = TcpStream::connect(&router).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
    };
    let mut stream = connect();
    let send = |stream: &mut TcpStream, request: String| {
        stream.write_all(request.as_bytes()).expect("write");
    };

    // Hop-by-hop headers stay with the router; X-Forwarded-For is appended to.
    send(
        &mut stream,
        format!(
            "GET /info HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Host: evil.example\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic c2VjcmV0\r\nX-Kept: yes\r\n\r\n"
        ),
    );
    let (head, body) = read_answer(&mut stream, false);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("10.1.2.3, 127.0.0.1|http|{app}.localhost|{host}|-|-|-|yes")
    );
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );

    // The same client connection, the same connection to the app.
    let conn = |stream: &mut TcpStream| {
        send(
            stream,
            format!("GET /conn HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        );
        String::from_utf8_lossy(&read_answer(stream, false).1).into_owned()
    };
    let first = conn(&mut stream);
    assert_eq!(
        conn(&mut stream),
        first,
        "the app's connection was not kept"
    );

    // A body both ways, whole.
    let upload: String = (0..3000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    send(
        &mut stream,
        format!(
            "POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{upload}",
            upload.len()
        ),
    );
    let (head, body) = read_answer(&mut stream, false);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(String::from_utf8_lossy(&body), upload);

    // Chunks and trailers pass as the app sent them.
    send(
        &mut stream,
        format!("GET /chunked HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    let (head, body) = read_answer(&mut stream, false);
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert_eq!(
        String::from_utf8_lossy(&body),
        "6\r\nhello \r\n5\r\nworld\r\n0\r\nX-Sum: 11\r\n\r\n"
    );

    // HEAD: a length and no body (the next answer on the connection proves none came).
    send(
        &mut stream,
        format!("HEAD / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    let (head, _) = read_answer(&mut stream, true);
    assert!(
        head.to_ascii_lowercase().contains("content-length: 5"),
        "{head}"
    );

    // 103 Early Hints, then the answer.
    send(
        &mut stream,
        format!("GET /early HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    let (hints, _) = read_answer(&mut stream, false);
    assert!(hints.starts_with("HTTP/1.1 103"), "{hints}");
    assert!(hints.contains("</style.css>"), "{hints}");
    let (head, body) = read_answer(&mut stream, false);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"after hints");

    // Pipelined: two requests in one write, answered in order.
    send(
        &mut stream,
        format!(
            "GET /info HTTP/1.1\r\nHost: {host}\r\n\r\nGET /conn HTTP/1.1\r\nHost: {host}\r\n\r\n"
        ),
    );
    let (_, info) = read_answer(&mut stream, false);
    assert!(
        String::from_utf8_lossy(&info).starts_with("127.0.0.1|"),
        "{info:?}"
    );
    let (_, id) = read_answer(&mut stream, false);
    assert_eq!(String::from_utf8_lossy(&id), first);

    // The router's own 404 keeps the connection; the next request is served.
    send(
        &mut stream,
        "GET / HTTP/1.1\r\nHost: nobody.localhost\r\nContent-Length: 3\r\n\r\nabc".to_string(),
    );
    let (head, body) = read_answer(&mut stream, false);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("nothing is served"));
    assert_eq!(conn(&mut stream), first);

    // A body past max_body_size: 413, never sent on, and the connection ends.
    send(
        &mut stream,
        format!("POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 20000\r\n\r\n"),
    );
    let (head, _) = read_answer(&mut stream, false);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");

    // A chunked upload goes to the general path, on a connection that began on this one.
    let mut stream = connect();
    send(
        &mut stream,
        format!("GET /conn HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    let _ = read_answer(&mut stream, false);
    send(
        &mut stream,
        format!(
            "POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        ),
    );
    let (head, body) = read_answer(&mut stream, false);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"hello world");

    // A body that ends with the app's connection: the client's ends after it too.
    let mut stream = connect();
    send(
        &mut stream,
        format!("GET /close HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    let (head, body) = read_answer(&mut stream, false);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, b"until the end");

    // A client that says close gets its answer, then the end of the connection.
    let mut stream = connect();
    send(
        &mut stream,
        format!("GET /info HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    let (head, _) = read_answer(&mut stream, false);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).expect("end"), 0);

    // Slowloris: a head trickled a byte a second (each byte within idle_timeout, 3 s) is cut
    // off once it has taken idle_timeout in all.
    let mut stream = connect();
    send(
        &mut stream,
        format!("GET /info HTTP/1.1\r\nHost: {host}\r\n"),
    );
    let started = std::time::Instant::now();
    let mut cut = false;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        if stream.write_all(b"X").is_err() {
            cut = true;
            break;
        }
    }
    let mut rest = Vec::new();
    let ended = cut || matches!(stream.read_to_end(&mut rest), Ok(0) | Err(_));
    assert!(
        ended && rest.is_empty() && started.elapsed() < Duration::from_secs(9),
        "a trickled head held the connection for {:?}",
        started.elapsed()
    );
}
