//! `certs:add`, `certs:remove`, `certs:info`, `letsencrypt:enable`, `letsencrypt:renew`: the
//! certificate the router serves an app's hosts with over HTTPS (chosen by SNI).

use serde::Serialize;

use super::common::{Access, Args, app_for, internal, to_json};
use crate::acme;
use crate::ops;
use crate::output::Output;
use crate::server::{Berth, Identity};
use crate::tls::{self, CertInfo};

/// The most bytes `certs:add` reads (a chain and a key are a few kB).
const MAX_BUNDLE: usize = 256 * 1024;

fn date(seconds: i64) -> String {
    crate::metrics::rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64),
    )[..10]
        .to_string()
}

fn summary(info: &CertInfo) -> String {
    format!("{} (until {})", info.names.join(", "), date(info.not_after))
}

fn https_note(berth: &Berth) -> &'static str {
    if berth.config.https_listen().is_none() {
        " (https_listen is off: it is stored, not served)"
    } else {
        ""
    }
}

pub async fn add(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    stdin: &[u8],
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    if stdin.is_empty() {
        return Err(format!(
            "give the certificate chain and its key as PEM on stdin: cat cert.pem key.pem | ssh berth@HOST certs:add {}",
            app.name
        ));
    }
    if stdin.len() > MAX_BUNDLE {
        return Err(format!(
            "the input is {} bytes; a certificate bundle is at most {MAX_BUNDLE}",
            stdin.len()
        ));
    }
    let app = ops::lock(berth, &app).await?;
    let (certs, key) = tls::split_bundle(stdin);
    let info = berth.certs.install(&app.name, &certs, &key)?;
    berth.plane.reload_certs().await?;
    berth
        .store
        .set_certificate_source(app.id, "manual")
        .await
        .map_err(internal)?;
    berth
        .store
        .note_event(
            Some(app.id),
            "certs:add",
            &who.key_name,
            "ok",
            &summary(&info),
        )
        .await;
    Ok(format!(
        "-----> {} now serves HTTPS for {}{}\n",
        app.name,
        summary(&info),
        https_note(berth)
    ))
}

pub async fn remove(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let app = ops::lock(berth, &app).await?;
    if !berth.certs.remove(&app.name) {
        return Err(format!("{} has no certificate", app.name));
    }
    berth.plane.reload_certs().await?;
    berth
        .store
        .remove_certificate(app.id)
        .await
        .map_err(internal)?;
    berth
        .store
        .note_event(Some(app.id), "certs:remove", &who.key_name, "ok", "")
        .await;
    Ok(format!(
        "-----> {}'s certificate removed: its hosts are served over plain HTTP only\n",
        app.name
    ))
}

pub async fn info(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let source = berth
        .store
        .certificate_source(app.id)
        .await
        .map_err(internal)?;
    #[derive(Serialize)]
    struct View {
        app: String,
        source: Option<String>,
        certificate: Option<CertInfo>,
        expires: Option<String>,
    }
    let certificate = berth.certs.info(&app.name);
    let view = View {
        app: app.name.to_string(),
        source,
        expires: certificate.as_ref().map(|c| date(c.not_after)),
        certificate,
    };
    if args.json() {
        return to_json(&view);
    }
    Ok(match (&view.certificate, &view.source) {
        (Some(cert), source) => format!(
            "=== {}\nnames:    {}\nissuer:   {}\nexpires:  {}\nserial:   {}\nsource:   {}\n",
            app.name,
            cert.names.join(", "),
            cert.issuer,
            date(cert.not_after),
            cert.serial,
            match source.as_deref() {
                Some("acme") => "ACME (renewed by berth)",
                _ => "certs:add",
            }
        ),
        (None, _) => format!("{} has no certificate\n", app.name),
    })
}

/// `letsencrypt:enable` and `letsencrypt:renew`: a certificate over ACME for the app's hosts,
/// now; berth renews it before it ends.
pub async fn letsencrypt(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
    renew: bool,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let app = ops::lock(berth, &app).await?;
    let source = berth
        .store
        .certificate_source(app.id)
        .await
        .map_err(internal)?;
    if renew && source.as_deref() != Some("acme") {
        return Err(format!(
            "{} does not get its certificate over ACME (letsencrypt:enable {})",
            app.name, app.name
        ));
    }
    let result = acme::provision(berth, &app.name, out).await;
    berth
        .store
        .note_event(
            Some(app.id),
            if renew {
                "letsencrypt:renew"
            } else {
                "letsencrypt:enable"
            },
            &who.key_name,
            if result.is_ok() { "ok" } else { "failed" },
            &match &result {
                Ok(info) => summary(info),
                Err(message) => message.clone(),
            },
        )
        .await;
    let info = result?;
    berth
        .store
        .set_certificate_source(app.id, "acme")
        .await
        .map_err(internal)?;
    Ok(format!(
        "-----> {} now serves HTTPS for {}; renewed {} days before it ends{}\n",
        app.name,
        summary(&info),
        berth.config.acme_renew_days,
        https_note(berth)
    ))
}
