//! Certificates over ACME (Let's Encrypt, or any RFC 8555 server such as pebble): the HTTP-01
//! challenge is answered by the router at `/.well-known/acme-challenge/TOKEN` on every host.
//! `letsencrypt:enable` issues at once; a timer renews certificates that end within
//! `acme_renew_days`.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use crate::output::Output;
use crate::server::Berth;

pub mod challenges;
pub use challenges::Challenges;

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

fn acme_error(what: &str) -> impl Fn(instant_acme::Error) -> String + '_ {
    move |e| format!("ACME {what} failed: {e}")
}

/// berth's account at the configured directory: the stored one, else a new one (stored 0600).
async fn account(berth: &Berth) -> Result<Account, String> {
    let config = &berth.config;
    let directory = config.acme_directory.clone();
    let builder = || match &config.acme_ca_cert {
        Some(root) => Account::builder_with_root(root)
            .map_err(|e| format!("cannot use acme_ca_cert {}: {e}", root.display())),
        None => Account::builder().map_err(acme_error("client setup")),
    };
    let path = config.data_dir.join("acme").join("account.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(stored) = serde_json::from_str::<StoredAccount>(&text)
        && stored.directory == directory
    {
        return builder()?
            .from_credentials(stored.credentials)
            .await
            .map_err(acme_error("account"));
    }
    let contact = config.acme_email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("cannot register with the ACME server at {directory}: {e}"))?;
    let text = serde_json::to_string(&StoredAccount {
        directory,
        credentials,
    })
    .map_err(|e| format!("internal error: {e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(account)
}

/// Gets a certificate for `names` over HTTP-01 and returns (certificate chain PEM, key PEM).
pub async fn issue(
    berth: &Berth,
    names: &[String],
    out: &Output,
) -> Result<(String, String), String> {
    if berth.config.http_listen().is_none() {
        return Err(
            "ACME's HTTP-01 challenge needs the HTTP router: set http_listen (port 80 for a public CA)"
                .into(),
        );
    }
    let account = account(berth).await?;
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(acme_error("new order"))?;
    let mut tokens = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(acme_error("authorization"))?;
            if authorization.status == AuthorizationStatus::Valid {
                continue;
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or("the ACME server offers no HTTP-01 challenge")?;
            let answer = challenge.key_authorization().as_str().to_string();
            out.detail(&format!(
                "answering the HTTP-01 challenge for {}",
                challenge.identifier()
            ));
            berth.plane.challenge(&challenge.token, Some(answer)).await?;
            tokens.push(challenge.token.clone());
            challenge
                .set_ready()
                .await
                .map_err(acme_error("challenge"))?;
        }
        let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retry).await.map_err(acme_error("validation"))?;
        if status != OrderStatus::Ready {
            return Err(format!(
                "the ACME server did not validate {}: order is {status:?} (is port 80 of each name reaching this router?)",
                names.join(", ")
            ));
        }
        let key = order.finalize().await.map_err(acme_error("finalize"))?;
        let chain = order
            .poll_certificate(&retry)
            .await
            .map_err(acme_error("certificate download"))?;
        Ok((chain, key))
    }
    .await;
    for token in &tokens {
        if let Err(error) = berth.plane.challenge(token, None).await {
            tracing::warn!(%error, "challenge answer left in the data plane");
        }
    }
    result
}

/// The names an app's certificate covers: `APP.<base_domain>` and its custom domains.
pub fn names_of(berth: &Berth, app: &str) -> Vec<String> {
    std::iter::once(format!("{app}.{}", berth.config.base_domain()))
        .chain(berth.domains_of(app))
        .collect()
}

/// Issues and installs the app's certificate; gives what it covers and until when.
pub async fn provision(
    berth: &Berth,
    app: &str,
    out: &Output,
) -> Result<crate::tls::CertInfo, String> {
    let names = names_of(berth, app);
    out.step(&format!(
        "Requesting a certificate for {}",
        names.join(", ")
    ));
    let (chain, key) = issue(berth, &names, out).await?;
    let info = berth.certs.install(app, chain.as_bytes(), key.as_bytes())?;
    berth.plane.reload_certs().await?;
    Ok(info)
}

/// Renews, twice a day, the ACME certificates that end within `acme_renew_days`.
pub async fn renew_loop(berth: Arc<Berth>) {
    loop {
        tokio::time::sleep(Duration::from_secs(12 * 3600)).await;
        renew_due(&berth).await;
    }
}

pub async fn renew_due(berth: &Berth) {
    let apps = match berth.store.acme_apps().await {
        Ok(apps) => apps,
        Err(error) => return tracing::warn!(%error, "cannot list ACME apps"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for (app_id, app) in apps {
        let due = berth
            .certs
            .info(&app)
            .is_none_or(|info| crate::tls::due(&info, now, berth.config.acme_renew_days));
        if !due {
            continue;
        }
        let _guard = berth.lock_app(app_id).await;
        // Under the lock: renamed or destroyed meanwhile, it is renewed next round.
        if !matches!(berth.store.app_by_id(app_id).await, Ok(Some(now)) if now.name == app) {
            continue;
        }
        let (outcome, detail) = match provision(berth, &app, &Output::discard()).await {
            Ok(info) => (
                "renewed",
                format!("certificate for {}", info.names.join(", ")),
            ),
            Err(message) => ("failed", message),
        };
        tracing::info!(%app, outcome, %detail, "certificate renewal");
        berth
            .store
            .note_event(Some(app_id), "letsencrypt", "renewal", outcome, &detail)
            .await;
    }
}
