//! Security regression, in the style of soft-serve's `auth-bypass-regression.txtar`.
//!
//! The attack: offer the admin's *public* key (the server answers "this key would do"), then
//! send a signature made with the attacker's own key. A server that bound the identity when the
//! key was offered, instead of after checking the signature, would let the attacker in as admin.
//! OpenSSH's client cannot do this, so the test drives russh's client with a signer that lies.

mod common;

use std::sync::Arc;

use common::*;
use russh::client::{self, AuthResult};
use russh::keys::signature::Signer as _;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};

struct AcceptAnyHost;

impl client::Handler for AcceptAnyHost {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Signs whatever it is asked to sign with the attacker's key, whatever key was offered.
struct LyingSigner {
    attacker: PrivateKey,
}

impl russh::Signer for LyingSigner {
    type Error = russh::AgentAuthError;
    async fn auth_sign(
        &mut self,
        _offered: &russh::keys::agent::AgentIdentity,
        _hash_alg: Option<russh::keys::HashAlg>,
        mut to_sign: Vec<u8>,
    ) -> Result<Vec<u8>, Self::Error> {
        let signature: russh::keys::ssh_key::Signature = self
            .attacker
            .try_sign(&to_sign)
            .map_err(russh::keys::Error::from)?;
        let kind = b"ssh-ed25519";
        let raw = signature.as_bytes();
        let blob_len = (4 + kind.len() + 4 + raw.len()) as u32;
        to_sign.extend_from_slice(&blob_len.to_be_bytes());
        to_sign.extend_from_slice(&(kind.len() as u32).to_be_bytes());
        to_sign.extend_from_slice(kind);
        to_sign.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        to_sign.extend_from_slice(raw);
        Ok(to_sign)
    }
}

fn load(path: &std::path::Path) -> PrivateKey {
    russh::keys::load_secret_key(path, None).expect("load key")
}

#[test]
fn offering_the_admin_key_and_signing_with_another_is_refused() {
    require_environment();
    let server = TestServer::start_with("");
    let attacker_path = server.dir.path().join("attacker");
    keygen(&attacker_path);
    let admin = load(&server.key);
    let attacker = load(&attacker_path);
    let admin_public: PublicKey = admin.public_key().clone();
    let attacker_public: PublicKey = attacker.public_key().clone();
    let port = server.port;
    // The attacker is a registered member: a real key of this server, just not the admin's.
    server.add_key("mallory", "member", &attacker_path);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let config = Arc::new(client::Config::default());

        // Control: the admin's own key, signed for real, gets in (so the harness can tell).
        let mut honest = client::connect(config.clone(), ("127.0.0.1", port), AcceptAnyHost)
            .await
            .expect("connect");
        let result = honest
            .authenticate_publickey("berth", PrivateKeyWithHashAlg::new(Arc::new(admin), None))
            .await
            .expect("auth");
        assert!(
            matches!(result, AuthResult::Success),
            "the admin key itself was refused: {result:?}"
        );

        // Control: the lying signer's signatures are well formed (its own key gets in).
        let mut own = client::connect(config.clone(), ("127.0.0.1", port), AcceptAnyHost)
            .await
            .expect("connect");
        let mut own_signer = LyingSigner {
            attacker: attacker.clone(),
        };
        let result = own
            .authenticate_publickey_with("berth", attacker_public, None, &mut own_signer)
            .await;
        assert!(
            matches!(result, Ok(AuthResult::Success)),
            "the signer is broken: {result:?}"
        );

        // The attack: the admin's public key with the attacker's signature.
        let mut session = client::connect(config.clone(), ("127.0.0.1", port), AcceptAnyHost)
            .await
            .expect("connect");
        let mut signer = LyingSigner { attacker };
        let result = session
            .authenticate_publickey_with("berth", admin_public, None, &mut signer)
            .await;
        assert!(
            matches!(result, Ok(AuthResult::Failure { .. }) | Err(_)),
            "a signature by another key was accepted for the admin key: {result:?}"
        );
        // And the session has no identity: a command cannot run.
        let opened = session.channel_open_session().await;
        assert!(opened.is_err(), "a channel opened without authentication");
    });
}
