//! Apps without a Dockerfile: every buildpack builds a fixture app for real (on local base
//! images made by tests/base_images.sh) and the app answers over HTTP; detection order, forcing,
//! no match, a bad Procfile, and dependency layers reused when only app code changes.

mod common;

use common::*;
use serde_json::Value;

fn images_config() -> String {
    format!(
        "[buildpack_images]\nstatic = \"{BASE_IMAGE}\"\nprocfile = \"{BASE_IMAGE}\"\npython = \"{LANGS}\"\nnode = \"{LANGS}\"\ngo = \"{LANGS}\"\ngo_runtime = \"{BASE_IMAGE}\"\nruby = \"{LANGS}\"\nrust = \"{LANGS}\"\nrust_runtime = \"{LANGS}\"\n"
    )
}

fn server() -> TestServer {
    require_langs_image();
    TestServer::start_with(&images_config())
}

/// A repo with these files, committed on main.
fn repo_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    git(dir.path(), &["init", "-q", "-b", "main"]);
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    commit(dir.path(), "fixture");
    dir
}

/// Pushes the fixture, checks the detection line, and that the app answers `expected`.
fn deploys_and_answers(name: &str, files: &[(&str, &str)], detected: &str, expected: &str) {
    let server = server();
    let app = app_name(name);
    let repo = repo_with(files);
    let push = server.push(repo.path(), &app, "main");
    let transcript = text(&push);
    assert!(push.status.success(), "{transcript}");
    assert_in_order(
        &transcript,
        &[
            detected,
            &format!("with the {name} buildpack"),
            "is live at",
        ],
    );
    let body = http_get(&live_url(&push)).unwrap_or_default();
    assert_eq!(body.trim(), expected, "{transcript}");
}

const PY_APP: &str = r#"import http.server, os

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ.get("GREETING", "python ok").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[test]
fn static_site_from_public_dir() {
    deploys_and_answers(
        "static",
        &[
            ("public/index.html", "static ok\n"),
            ("README.md", "a site\n"),
        ],
        "Detected static (public/)",
        "static ok",
    );
}

#[test]
fn python_app_with_requirements() {
    deploys_and_answers(
        "python",
        &[
            ("requirements.txt", "# standard library only\n"),
            ("app.py", PY_APP),
        ],
        "Detected python (requirements.txt)",
        "python ok",
    );
}

#[test]
fn node_app_with_a_lock_file_uses_npm_ci() {
    let server_js =
        r#"require("http").createServer((q, s) => s.end("node ok")).listen(process.env.PORT);"#;
    let package =
        r#"{"name": "fixture", "version": "1.0.0", "scripts": {"start": "node server.js"}}"#;
    let lock = r#"{"name": "fixture", "version": "1.0.0", "lockfileVersion": 3, "requires": true, "packages": {"": {"name": "fixture", "version": "1.0.0"}}}"#;
    deploys_and_answers(
        "node",
        &[
            ("package.json", package),
            ("package-lock.json", lock),
            ("server.js", server_js),
        ],
        "Detected node (package.json)",
        "node ok",
    );
}

#[test]
fn go_app_runs_from_the_small_runtime_image() {
    let main = r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "go ok") })
	http.ListenAndServe(":"+os.Getenv("PORT"), nil)
}
"#;
    deploys_and_answers(
        "go",
        &[("go.mod", "module fixture\n\ngo 1.19\n"), ("main.go", main)],
        "Detected go (go.mod)",
        "go ok",
    );
}

#[test]
fn ruby_app_with_a_gemfile() {
    let app = r#"require "socket"
server = TCPServer.new("0.0.0.0", Integer(ENV.fetch("PORT")))
loop do
  client = server.accept
  while (line = client.gets) && line != "\r\n"; end
  client.write "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nruby ok"
  client.close
end
"#;
    deploys_and_answers(
        "ruby",
        &[("Gemfile", "# standard library only\n"), ("app.rb", app)],
        "Detected ruby (Gemfile)",
        "ruby ok",
    );
}

#[test]
fn rust_app_multi_stage() {
    let main = r#"use std::io::{Read, Write};
fn main() {
    let port = std::env::var("PORT").unwrap();
    let listener = std::net::TcpListener::bind(format!("0.0.0.0:{port}")).unwrap();
    for stream in listener.incoming() {
        let mut stream = stream.unwrap();
        let mut buffer = [0u8; 1024];
        let _ = stream.read(&mut buffer);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nrust ok");
    }
}
"#;
    deploys_and_answers(
        "rust",
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"fixture\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            ),
            ("src/main.rs", main),
        ],
        "Detected rust (Cargo.toml)",
        "rust ok",
    );
}

#[test]
fn procfile_only_app_runs_its_web_command() {
    deploys_and_answers(
        "procfile",
        &[
            (
                "Procfile",
                "# only a Procfile\nweb: exec httpd -f -p $PORT -h /app/site\n",
            ),
            ("site/index.html", "procfile ok\n"),
        ],
        "Detected procfile (Procfile)",
        "procfile ok",
    );
}

#[test]
fn detection_order_forcing_no_match_and_a_bad_procfile() {
    let server = server();
    let app = app_name("detect");
    // index.html and a Procfile: static comes first; the Procfile's web command still wins.
    let repo = repo_with(&[
        ("index.html", "from httpd root\n"),
        ("Procfile", "web: exec httpd -f -p $PORT -h /app/other\n"),
        ("other/index.html", "procfile web\n"),
    ]);
    let push = server.push(repo.path(), &app, "main");
    assert!(push.status.success(), "{}", text(&push));
    assert!(text(&push).contains("Detected static (index.html)"));
    assert_eq!(
        http_get(&live_url(&push)).unwrap_or_default().trim(),
        "procfile web"
    );
    let detected: Value =
        serde_json::from_str(&ok(&server.ssh(&["buildpacks:detect", &app, "--json"])))
            .expect("json");
    assert_eq!(detected["build"], "static");
    assert_eq!(detected["reason"], "index.html");
    assert_eq!(
        detected["processes"]["web"],
        "exec httpd -f -p $PORT -h /app/other"
    );

    // Forced by the BUILDPACK config var, then by a .buildpacks file.
    ok(&server.ssh(&["config:set", &app, "BUILDPACK=procfile"]));
    let forced = ok(&server.ssh(&["buildpacks:detect", &app]));
    assert!(
        forced.contains("procfile (forced by the BUILDPACK config var)"),
        "{forced}"
    );
    ok(&server.ssh(&["config:unset", &app, "BUILDPACK"]));
    write(repo.path(), ".buildpacks", "procfile\n");
    commit(repo.path(), "force procfile");
    let push = server.push(repo.path(), &app, "main");
    assert!(
        text(&push).contains("Detected procfile (forced by .buildpacks)"),
        "{}",
        text(&push)
    );
    write(repo.path(), ".buildpacks", "cobol\n");
    commit(repo.path(), "unknown buildpack");
    let push = server.push(repo.path(), &app, "main");
    assert!(!push.status.success());
    assert!(
        text(&push).contains("unknown buildpack \"cobol\" (from .buildpacks)"),
        "{}",
        text(&push)
    );

    // Nothing to go by: the push names what was looked for.
    let bare = app_name("nomatch");
    let push = server.push(
        repo_with(&[("README.md", "just words\n")]).path(),
        &bare,
        "main",
    );
    assert!(!push.status.success());
    assert!(
        text(&push).contains(
            "no Dockerfile and no buildpack matches: looked for Dockerfile, requirements.txt"
        ),
        "{}",
        text(&push)
    );

    // A bad Procfile names its line.
    let broken = app_name("badproc");
    let push = server.push(
        repo_with(&[
            ("index.html", "x\n"),
            ("Procfile", "web: ok\nthis line has no colon\n"),
        ])
        .path(),
        &broken,
        "main",
    );
    assert!(!push.status.success());
    assert!(text(&push).contains("Procfile line 2:"), "{}", text(&push));

    let listed: Value =
        serde_json::from_str(&ok(&server.ssh(&["buildpacks:list", "--json"]))).expect("json");
    let names: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|b| b["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["python", "node", "go", "ruby", "rust", "static", "procfile"]
    );
    assert_eq!(listed[0]["base_image"], LANGS);
}

#[test]
fn a_code_only_change_reuses_the_dependency_layer() {
    let server = server();
    let app = app_name("pycache");
    let repo = repo_with(&[("requirements.txt", "# nothing\n"), ("app.py", PY_APP)]);
    server.push_ok(repo.path(), &app, "main");
    write(
        repo.path(),
        "app.py",
        &PY_APP.replace("python ok", "python two"),
    );
    commit(repo.path(), "code only");
    let push = server.push(repo.path(), &app, "main");
    let transcript = text(&push);
    assert!(push.status.success(), "{transcript}");
    // The step that installs dependencies comes from the cache; the app code is copied anew.
    let install = transcript
        .find("RUN pip install -r requirements.txt")
        .expect("install step");
    let next_step = transcript[install..]
        .find("Step ")
        .map_or(transcript.len(), |i| install + i);
    assert!(
        transcript[install..next_step].contains("Using cache"),
        "{transcript}"
    );
    assert_eq!(
        http_get(&live_url(&push)).unwrap_or_default().trim(),
        "python two"
    );
}
