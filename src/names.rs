//! `AppName`: the one place app names are validated.
//!
//! **Security boundary:** every app name that reaches a path, a container name,
//! an image tag or the DB has passed `AppName::parse`. Names are rejected, never
//! sanitized (piku's `..` bug is what sanitizing gets you).

use std::fmt;

/// A lowercase RFC 1123 label: `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

impl AppName {
    pub fn parse(raw: &str) -> Result<AppName, String> {
        let shown: String = raw.chars().take(80).collect();
        let bytes = raw.as_bytes();
        let valid_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        if raw.is_empty() {
            return Err("app name is empty: use lowercase letters, digits and '-'".into());
        }
        if raw.len() > 63 {
            return Err(format!("app name {shown:?} is longer than 63 characters"));
        }
        if !bytes.iter().all(valid_char) || bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
            return Err(format!(
                "invalid app name {shown:?}: use lowercase letters, digits and '-' (not at either end), at most 63 characters"
            ));
        }
        Ok(AppName(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `name` is a DNS host name: dot-separated RFC 1123 labels (lowercase letters, digits,
/// `-` inside), at most 253 characters.
pub fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Read where a `&str` is wanted (paths, labels, log fields): a checked name is still text.
impl std::ops::Deref for AppName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for AppName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for AppName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for AppName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for AppName {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

/// Rows read from the DB are checked again: a name that is not one fails the read.
impl TryFrom<String> for AppName {
    type Error = String;

    fn try_from(raw: String) -> Result<AppName, String> {
        AppName::parse(&raw)
    }
}

impl serde::Serialize for AppName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::AppName;

    #[test]
    fn accepts_rfc1123_labels() {
        for good in ["a", "myapp", "my-app-2", "0app", &"a".repeat(63)] {
            assert!(AppName::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "../x",
            "..",
            ".",
            "a;b",
            "'a'",
            "\"a\"",
            "MyApp",
            "a/b",
            "-a",
            "a-",
            "a.b",
            "a b",
            "a\0b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(AppName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
