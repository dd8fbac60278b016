//! OpenSSH public keys as `keys:add` takes them (russh's key types, so the SSH layer stays the
//! only code that knows russh; no `Berth`, so the commands can use it without a cycle).

use russh::keys::{HashAlg, PublicKey};

/// The SHA256 fingerprint of an OpenSSH public key line (`ssh-ed25519 AAAA… comment`).
pub fn fingerprint_of(openssh_line: &str) -> Result<String, String> {
    let key = PublicKey::from_openssh(openssh_line.trim())
        .map_err(|e| format!("not an OpenSSH public key: {e}"))?;
    Ok(key.fingerprint(HashAlg::Sha256).to_string())
}
