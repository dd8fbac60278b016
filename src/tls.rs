//! HTTPS for the router: each app's certificate (added with `certs:add` or issued over ACME by
//! `letsencrypt:enable`), picked by SNI through the same host → app map the router uses.
//!
//! Certificates live in `<data_dir>/certs/APP/{cert.pem,key.pem}` (mode 0600, written whole
//! then renamed) and in memory, parsed once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// What a certificate says about itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertInfo {
    /// The DNS names it covers (subject alternative names).
    pub names: Vec<String>,
    pub issuer: String,
    /// Seconds since the epoch.
    pub not_after: i64,
    pub serial: String,
}

pub struct Certs {
    dir: PathBuf,
    keys: RwLock<HashMap<String, (Arc<CertifiedKey>, CertInfo)>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parses a PEM certificate chain and its private key; the key must match the first
/// certificate.
pub fn parse(cert_pem: &[u8], key_pem: &[u8]) -> Result<(CertifiedKey, CertInfo), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate PEM is not readable: {e}"))?;
    let Some(first) = chain.first() else {
        return Err("no certificate (-----BEGIN CERTIFICATE-----) in the input".into());
    };
    let info = describe(first)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| "no private key (-----BEGIN PRIVATE KEY-----) in the input".to_string())?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not belong to the certificate".to_string()
        }
        other => format!("the key is not usable: {other}"),
    })?;
    Ok((certified, info))
}

fn describe(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the certificate is not valid X.509: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty()
        && let Some(cn) = cert.subject().iter_common_name().next()
        && let Ok(cn) = cn.as_str()
    {
        names.push(cn.to_ascii_lowercase());
    }
    Ok(CertInfo {
        names,
        issuer: cert.issuer().to_string(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string(),
    })
}

/// Splits one PEM bundle (certificates and a key, in any order) into (certificates, key).
pub fn split_bundle(bundle: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let text = String::from_utf8_lossy(bundle);
    let (mut certs, mut key) = (String::new(), String::new());
    let mut current: Option<&mut String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            current = Some(if line.contains("CERTIFICATE") {
                &mut certs
            } else {
                &mut key
            });
        }
        if let Some(into) = current.as_deref_mut() {
            into.push_str(line);
            into.push('\n');
        }
        if line.starts_with("-----END ") {
            current = None;
        }
    }
    (certs.into_bytes(), key.into_bytes())
}

/// Whether the certificate is valid for `name` (exactly, or by a `*.` wildcard one label deep).
pub fn covers(info: &CertInfo, name: &str) -> bool {
    info.names.iter().any(|n| {
        n == name
            || n.strip_prefix("*.")
                .is_some_and(|parent| name.split_once('.').is_some_and(|(_, rest)| rest == parent))
    })
}

/// Whether a certificate is due for renewal: it ends within `days`.
pub fn due(info: &CertInfo, now: i64, days: i64) -> bool {
    info.not_after - now < days * 86_400
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| format!("cannot write {}: {e}", temporary.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", temporary.display()))?;
    std::fs::rename(&temporary, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

impl Certs {
    /// Loads every app's certificate from `dir` (ones that no longer parse are skipped, logged).
    pub fn load(dir: PathBuf) -> Certs {
        let mut keys = HashMap::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let app = entry.file_name().to_string_lossy().into_owned();
            let read = |name: &str| std::fs::read(entry.path().join(name));
            match (read("cert.pem"), read("key.pem")) {
                (Ok(cert), Ok(key)) => match parse(&cert, &key) {
                    Ok((certified, info)) => {
                        keys.insert(app, (Arc::new(certified), info));
                    }
                    Err(error) => tracing::warn!(%app, %error, "certificate not loaded"),
                },
                _ => tracing::warn!(%app, "certificate files missing"),
            }
        }
        Certs {
            dir,
            keys: RwLock::new(keys),
        }
    }

    /// Reads every certificate from the files again (the data plane, told they changed).
    pub fn reload(&self) {
        let fresh = Certs::load(self.dir.clone());
        let keys = fresh.keys.into_inner().unwrap_or_else(|p| p.into_inner());
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// Stores and serves the app's certificate (replacing any other), after checking it.
    pub fn install(&self, app: &str, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertInfo, String> {
        let (certified, info) = parse(cert_pem, key_pem)?;
        let dir = self.dir.join(app);
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        write_private(&dir.join("key.pem"), key_pem)?;
        write_private(&dir.join("cert.pem"), cert_pem)?;
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(app.to_string(), (Arc::new(certified), info.clone()));
        Ok(info)
    }

    /// Stops serving the app's certificate and deletes its files; whether it had one.
    pub fn remove(&self, app: &str) -> bool {
        let _ = std::fs::remove_dir_all(self.dir.join(app));
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app)
            .is_some()
    }

    /// Moves a renamed app's certificate along.
    pub fn rename(&self, old: &str, new: &str) {
        let _ = std::fs::rename(self.dir.join(old), self.dir.join(new));
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = keys.remove(old) {
            keys.insert(new.to_string(), entry);
        }
    }

    pub fn info(&self, app: &str) -> Option<CertInfo> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .map(|(_, info)| info.clone())
    }

    /// The app's certificate, when it covers `name`.
    pub fn key_for(&self, app: &str, name: &str) -> Option<Arc<CertifiedKey>> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let (key, info) = keys.get(app)?;
        covers(info, name).then(|| key.clone())
    }
}

/// How the router finds a certificate for a server name (SNI, lower-case, no trailing dot).
pub type Lookup = Box<dyn Fn(&str) -> Option<Arc<CertifiedKey>> + Send + Sync>;

/// Picks the certificate by the name the client asked for (SNI).
struct BySni(Lookup);

impl std::fmt::Debug for BySni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BySni")
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        (self.0)(&name)
    }
}

/// The router's TLS settings: certificates by SNI (found by `lookup`), HTTP/2 and HTTP/1.1 by
/// ALPN.
pub fn server_config(lookup: Lookup) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(lookup)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_split_into_certificates_and_key() {
        let bundle = b"-----BEGIN PRIVATE KEY-----\nAAA\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nCCC\n-----END CERTIFICATE-----\n";
        let (certs, key) = split_bundle(bundle);
        let certs = String::from_utf8(certs).unwrap();
        assert!(certs.contains("BBB") && certs.contains("CCC") && !certs.contains("AAA"));
        assert!(String::from_utf8(key).unwrap().contains("AAA"));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let error = parse(b"nothing here", b"").map(|_| ()).unwrap_err();
        assert!(error.contains("no certificate"), "{error}");
    }

    #[test]
    fn wildcards_cover_one_label() {
        let info = CertInfo {
            names: vec!["*.example.com".into(), "shop.test".into()],
            issuer: String::new(),
            not_after: 0,
            serial: String::new(),
        };
        assert!(covers(&info, "a.example.com"));
        assert!(covers(&info, "shop.test"));
        assert!(!covers(&info, "a.b.example.com"));
        assert!(!covers(&info, "example.com"));
        assert!(!covers(&info, "other.test"));
    }

    #[test]
    fn renewal_is_due_inside_the_window() {
        let info = CertInfo {
            names: vec![],
            issuer: String::new(),
            not_after: 100 * 86_400,
            serial: String::new(),
        };
        assert!(!due(&info, 0, 30));
        assert!(due(&info, 71 * 86_400, 30));
    }
}
