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
    let repo = tempfile::tempdir().expect("temp dir");
    git(repo.path(), &["init", "-q", "-b", "main"]);
    write(repo.path(), "app.py", ECHO_APP);
    write(
        repo.path(),
        "Dockerfile",
        "FROM berth-test/langs:bookworm\nCOPY app.py /app.py\nCMD [\"python3\", \"/app.py\"]\n",
    );
    commit(repo.path(), "echo app");
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
