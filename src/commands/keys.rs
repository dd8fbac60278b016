//! `keys:*` (admins only) and `berth keys add` on the host.

use super::common::{Args, admin_only, internal, to_json};
use crate::server::{Berth, Identity};

pub async fn add(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    stdin: &[u8],
) -> Result<String, String> {
    admin_only(who)?;
    let role = args.value("--role").unwrap_or("member");
    let line = String::from_utf8_lossy(stdin);
    if line.trim().is_empty() {
        return Err("no public key on stdin: ssh berth@HOST keys:add NAME < key.pub".to_string());
    }
    add_key(berth, &args.positional[0], role, &line, &who.key_name)
        .await
        .map(|s| s + "\n")
}

pub async fn list(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    admin_only(who)?;
    let keys = berth.store.keys().await.map_err(internal)?;
    if args.json() {
        return to_json(&keys);
    }
    let mut text = format!(
        "{:<20} {:<8} {:<52} {}\n",
        "NAME", "ROLE", "FINGERPRINT", "ADDED"
    );
    for key in keys {
        text += &format!(
            "{:<20} {:<8} {:<52} {}\n",
            key.name, key.role, key.fingerprint, key.created_at
        );
    }
    Ok(text)
}

pub async fn remove(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    admin_only(who)?;
    let name = &args.positional[0];
    if *name == who.key_name {
        return Err("refusing to remove the key you are connected with".to_string());
    }
    let fingerprint = berth
        .store
        .key_by_name(name)
        .await
        .map_err(internal)?
        .map(|key| key.fingerprint);
    if !berth.store.remove_key(name).await.map_err(internal)? {
        return Err(format!("no key named {name}; see keys:list"));
    }
    // Its open connections (a ControlMaster's too) are closed now, not when they idle out.
    if let Some(fingerprint) = fingerprint {
        let _ = berth.revoked.send(fingerprint);
    }
    berth
        .store
        .note_event(None, "key.removed", &who.key_name, "ok", name)
        .await;
    Ok(format!("removed key {name}\n"))
}

/// Registers a key; registering the same key under the same name and role again changes nothing.
pub async fn add_key(
    berth: &Berth,
    name: &str,
    role: &str,
    openssh_line: &str,
    actor: &str,
) -> Result<String, String> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if !name_ok {
        return Err(format!(
            "invalid key name {name:?}: use letters, digits, '.', '_', '@' and '-'"
        ));
    }
    // The host CLI acts as "host" (and owns the apps it creates): no key may take that name.
    if name == "host" {
        return Err("the key name \"host\" is reserved for the host's own CLI".to_string());
    }
    let role = crate::domain::Role::parse(role)?;
    let line = openssh_line
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let fingerprint = crate::ssh::keys::fingerprint_of(line)?;
    if let Some(existing) = berth
        .store
        .key_by_fingerprint(&fingerprint)
        .await
        .map_err(internal)?
    {
        if existing.name == name && existing.role == role {
            return Ok(format!(
                "key {name} ({fingerprint}) is already registered as {role}"
            ));
        }
        return Err(format!(
            "this key is already registered as {} ({})",
            existing.name, existing.role
        ));
    }
    if berth
        .store
        .key_by_name(name)
        .await
        .map_err(internal)?
        .is_some()
    {
        return Err(format!("a different key is already named {name}"));
    }
    // Ownership and what a key set up (webhooks, sync sources, links) are recorded by name: a
    // new key given a removed key's name would inherit them (finding 26). Such a name stays
    // taken while anything is left in it.
    let left = berth.store.left_by_key_name(name).await.map_err(internal)?;
    if !left.is_empty() {
        return Err(format!(
            "the name {name} belonged to a removed key that still has {}: choose another name",
            left.join(", ")
        ));
    }
    berth
        .store
        .add_key(name, &fingerprint, line, role)
        .await
        .map_err(internal)?;
    berth
        .store
        .note_event(
            None,
            "key.added",
            actor,
            "ok",
            &format!("{name} ({role}) {fingerprint}"),
        )
        .await;
    Ok(format!("added key {name} ({fingerprint}) as {role}"))
}
