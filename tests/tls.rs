//! HTTPS through the router: a certificate added with `certs:add` is served by SNI; an ACME
//! certificate issued by a real pebble (Let's Encrypt's test CA) on loopback for the app's
//! hosts is served, reported, and renewed.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is missing ({e}): run the tests with tests/run.sh"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A self-signed certificate and key for `name`, as PEM files in `dir`.
fn self_signed(dir: &Path, name: &str, stem: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    (cert, key)
}

/// The subject and issuer of the certificate served for `name` at `port` ("" when the
/// handshake fails).
fn served_certificate(port: u16, name: &str) -> String {
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            name,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client: run the tests with tests/run.sh");
    drop(client.stdin.take());
    let output = client.wait_with_output().expect("s_client");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter(|l| l.starts_with("subject=") || l.starts_with("issuer="))
        .collect::<Vec<_>>()
        .join("\n")
}

/// GET over HTTPS with curl, `name` resolved to loopback, trusting `ca`: the body.
fn https_get(port: u16, name: &str, ca: &Path) -> String {
    run(
        "curl",
        &[
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &format!("{name}:{port}:127.0.0.1"),
            &format!("https://{name}:{port}/"),
        ],
    )
}

#[test]
fn a_certificate_added_by_hand_is_served_by_sni() {
    let server = TestServer::start();
    let app = app_name("certs");
    server.push_ok(web_app("secure hello").path(), &app, "main");
    ok(&server.ssh(&["domains:add", &app, "secure.example.test"]));
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed(dir.path(), "secure.example.test", "good");
    let (_, other_key) = self_signed(dir.path(), "secure.example.test", "other");
    let read = |p: &Path| std::fs::read(p).expect("read pem");

    // Refused: nothing on stdin, a key that is not the certificate's, garbage.
    let empty = server.ssh_with_input(&["certs:add", &app], b"");
    assert!(text(&empty).contains("PEM on stdin"), "{}", text(&empty));
    let mismatched = [read(&cert), read(&other_key)].concat();
    let refused = server.ssh_with_input(&["certs:add", &app], &mismatched);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("the private key does not belong to the certificate"),
        "{}",
        text(&refused)
    );
    let garbage = server.ssh_with_input(&["certs:add", &app], b"hello\n");
    assert!(
        text(&garbage).contains("no certificate"),
        "{}",
        text(&garbage)
    );
    assert!(served_certificate(server.https_port, "secure.example.test").is_empty());

    // Key first, then the certificate: any order is read.
    let added =
        ok(&server.ssh_with_input(&["certs:add", &app], &[read(&key), read(&cert)].concat()));
    assert!(
        added.contains(&format!(
            "{app} now serves HTTPS for secure.example.test (until "
        )),
        "{added}"
    );
    let served = served_certificate(server.https_port, "secure.example.test");
    assert!(
        served.contains("CN=secure.example.test") || served.contains("CN = secure.example.test"),
        "{served}"
    );
    assert_eq!(
        https_get(server.https_port, "secure.example.test", &cert).trim(),
        "secure hello"
    );
    // HTTP/2 by ALPN.
    let version = run(
        "curl",
        &[
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--cacert",
            cert.to_str().unwrap(),
            "--resolve",
            &format!("secure.example.test:{}:127.0.0.1", server.https_port),
            &format!("https://secure.example.test:{}/", server.https_port),
        ],
    );
    assert_eq!(version, "2");
    let info = json(&server.ssh(&["certs:info", &app, "--json"]));
    assert_eq!(
        info["certificate"]["names"][0], "secure.example.test",
        "{info}"
    );
    assert_eq!(info["source"], "manual");
    // The app's own host is not covered: no certificate is offered for it.
    assert!(served_certificate(server.https_port, &format!("{app}.localhost")).is_empty());
    let key_file = server.data_dir().join("certs").join(&app).join("key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file)
            .expect("key file")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    ok(&server.ssh(&["certs:remove", &app]));
    assert!(served_certificate(server.https_port, "secure.example.test").is_empty());
    assert!(!key_file.exists());
}

/// pebble and its mock DNS (every name → 127.0.0.1), on free loopback ports.
struct Pebble {
    children: Vec<Child>,
    directory: String,
    management: u16,
    /// pebble's own HTTPS root (for berth's `acme_ca_cert`).
    api_root: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pebble {
    /// Makes pebble's API certificate (signed by a CA of our own) and picks its ports; `start`
    /// runs it once berth's HTTP port is known.
    fn prepare() -> Pebble {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        self_signed(dir.path(), "berth-test-acme-root", "root");
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                &p("api.key"),
                "-out",
                &p("api.csr"),
            ],
        );
        std::fs::write(
            dir.path().join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &p("api.csr"),
                "-CA",
                &p("root.crt"),
                "-CAkey",
                &p("root.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &p("san.ext"),
                "-out",
                &p("api.crt"),
            ],
        );
        let listen = free_port();
        Pebble {
            children: Vec::new(),
            directory: format!("https://localhost:{listen}/dir"),
            management: free_port(),
            api_root: dir.path().join("root.crt"),
            dir,
        }
    }

    fn start(&mut self, http_port: u16) {
        let dns = free_port();
        let listen: u16 = self
            .directory
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches("/dir")
            .parse()
            .unwrap();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{}", self.management),
            "certificate": self.dir.path().join("api.crt"),
            "privateKey": self.dir.path().join("api.key"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        std::fs::write(self.dir.path().join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(self.dir.path().join(name)).unwrap();
        self.children.push(
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", &format!("127.0.0.1:{dns}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-management", &format!("127.0.0.1:{}", free_port())])
                .stdout(log("challtestsrv.log"))
                .stderr(log("challtestsrv.err"))
                .spawn()
                .expect("pebble-challtestsrv is missing: run the tests with tests/run.sh (it installs pebble)"),
        );
        self.children.push(
            Command::new("pebble")
                .arg("-config")
                .arg(self.dir.path().join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdout(log("pebble.log"))
                .stderr(log("pebble.err"))
                .spawn()
                .expect("pebble is missing: run the tests with tests/run.sh (it installs pebble)"),
        );
        wait_for("pebble to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", listen)).ok()
        });
    }

    /// The root pebble issues certificates under (it makes a new one at each start).
    fn issuing_root(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("issuing-root.pem");
        let pem = run(
            "curl",
            &[
                "-sS",
                "--fail",
                "--cacert",
                self.api_root.to_str().unwrap(),
                &format!("https://localhost:{}/roots/0", self.management),
            ],
        );
        std::fs::write(&path, pem).unwrap();
        path
    }

    fn log(&self) -> String {
        ["pebble.log", "pebble.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect()
    }
}

#[test]
fn letsencrypt_gets_a_certificate_from_pebble_and_renews_it() {
    let mut pebble = Pebble::prepare();
    let server = TestServer::start_with(&format!(
        "registry = \"{}\"\nacme_directory = \"{}\"\nacme_ca_cert = \"{}\"\nacme_email = \"ops@example.test\"\n",
        require_environment(),
        pebble.directory,
        pebble.api_root.display()
    ));
    pebble.start(server.http_port);
    let app = app_name("acme");
    server.push_ok(web_app("acme hello").path(), &app, "main");
    ok(&server.ssh(&["domains:add", &app, "shop.example.test"]));

    let enabled = server.ssh(&["letsencrypt:enable", &app]);
    assert!(
        enabled.status.success(),
        "{}\npebble:\n{}",
        text(&enabled),
        pebble.log()
    );
    let enabled = text(&enabled);
    assert!(
        enabled.contains("answering the HTTP-01 challenge for shop.example.test"),
        "{enabled}"
    );
    let names = json(&server.ssh(&["certs:info", &app, "--json"]))["certificate"]["names"].clone();
    let mut names: Vec<String> = serde_json::from_value(names).expect("names");
    names.sort();
    assert_eq!(
        names,
        [format!("{app}.localhost"), "shop.example.test".to_string()]
    );
    assert!(
        enabled.contains(&format!("{app} now serves HTTPS for ")),
        "{enabled}"
    );
    let served = served_certificate(server.https_port, "shop.example.test");
    assert!(served.contains("Pebble Intermediate"), "{served}");
    let root = pebble.issuing_root();
    assert_eq!(
        https_get(server.https_port, "shop.example.test", &root).trim(),
        "acme hello"
    );
    assert_eq!(
        https_get(server.https_port, &format!("{app}.localhost"), &root).trim(),
        "acme hello"
    );
    let info = json(&server.ssh(&["apps:info", &app, "--json"]));
    assert_eq!(
        info["url"],
        format!("https://{app}.localhost:{}", server.https_port),
        "{info}"
    );
    let certs = json(&server.ssh(&["certs:info", &app, "--json"]));
    assert_eq!(certs["source"], "acme");
    let serial = certs["certificate"]["serial"].clone();

    // Renewal gets a new certificate and serves it at once.
    ok(&server.ssh(&["letsencrypt:renew", &app]));
    let renewed = json(&server.ssh(&["certs:info", &app, "--json"]));
    assert_ne!(renewed["certificate"]["serial"], serial, "{renewed}");
    assert_eq!(
        https_get(server.https_port, "shop.example.test", &root).trim(),
        "acme hello"
    );
    // The account is kept, readable by root only.
    let account = server.data_dir().join("acme/account.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&account)
            .expect("account")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}
